// embed BUNDLE IMAGE: the smallest app on the SDK (the README's example).
#include <iostream>
#include <resnet_deploy/resnet_deploy.hpp>

int main(int argc, char** argv) {
  if (argc != 3) return std::cerr << "usage: embed BUNDLE IMAGE\n", 2;
  try {
    resnet_deploy::Predictor predictor(argv[1], {"auto", 2});  // manifest checked, file verified, model compiled
    auto result = predictor.classify(resnet_deploy::read_file(argv[2]), 3);
    for (const auto& c : result.topk) std::cout << c.label << " " << c.score << "\n";
    std::cout << "variant " << predictor.info().variant << "\n";
  } catch (const resnet_deploy::Error& e) {  // one line: what was wrong and what to do
    return std::cerr << "Error: " << e.what() << "\n", 2;
  }
}
