// classify BUNDLE IMAGE... [--variant NAME] [--threads N] [--topk K] [--json]
// Classifies each image, one at a time as a camera app would, with a bundle written by `resnet-deploy export`: the
// top classes and latency of each (read + decode + preprocess + inference), then the cold start (main to the first
// prediction) and the p50/p99 of the images after the first. --json: one object per image and line on stdout
// (image, class_id, label, score, topk, logits, latency_ms), the summary as one object on stderr.
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <resnet_deploy/resnet_deploy.hpp>
#include <string>
#include <vector>

using Clock = std::chrono::steady_clock;

static double ms_since(Clock::time_point t) {
  return std::chrono::duration<double, std::milli>(Clock::now() - t).count();
}

static double percentile(std::vector<double> v, double q) {  // nearest rank, as examples/edge_app
  std::sort(v.begin(), v.end());
  return v[std::min(v.size() - 1, static_cast<std::size_t>(q / 100 * static_cast<double>(v.size() - 1) + 0.5))];
}

int main(int argc, char** argv) {
  const auto start = Clock::now();
  resnet_deploy::Options options;
  std::size_t topk = 1;
  bool json = false;
  std::vector<std::string> args;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i], value = i + 1 < argc ? argv[i + 1] : "";
    if (a == "--json")
      json = true;
    else if (a == "--variant" && !value.empty())
      options.variant = argv[++i];
    else if (a == "--threads" && !value.empty())
      options.threads = std::atoi(argv[++i]);
    else if (a == "--topk" && !value.empty())
      topk = static_cast<std::size_t>(std::max(1, std::atoi(argv[++i])));
    else if (a.rfind("--", 0) != 0)
      args.push_back(a);
    else
      return std::fprintf(stderr, "Error: unknown option or missing value: %s\n", a.c_str()), 2;
  }
  if (args.size() < 2)
    return std::fprintf(stderr, "usage: classify BUNDLE IMAGE... [--variant NAME] [--threads N] [--topk K] [--json]\n"),
           2;
  try {
    resnet_deploy::Predictor predictor(args[0], options);
    const double load_ms = ms_since(start);
    // a cache folder or entry someone else could have written is not used: said once, and the model runs all the same
    if (std::string warning = predictor.describe("cache_warning"); !warning.empty())
      std::fprintf(stderr, "warning: %s\n", warning.c_str());
    std::vector<double> latencies;
    int failures = 0;
    for (std::size_t i = 1; i < args.size(); ++i) {
      const auto t = Clock::now();
      resnet_deploy::Result r;
      try {
        r = predictor.classify(resnet_deploy::read_file(args[i]), topk);
      } catch (const resnet_deploy::Error& e) {  // one bad file does not stop the app
        std::fprintf(stderr, "%s: skipped (%s)\n", args[i].c_str(), e.what());
        ++failures;
        continue;
      }
      latencies.push_back(ms_since(t));
      std::string alts;
      char score[16];
      for (std::size_t k = 1; k < r.topk.size(); ++k)
        alts += ", " + r.topk[k].label + (std::snprintf(score, sizeof score, " %.3f", r.topk[k].score), score);
      if (json)  // the result's object with the image and latency first
        std::printf("{\"image\": %s, \"latency_ms\": %.4f, %s\n", resnet_deploy::json_string(args[i]).c_str(),
                    latencies.back(), r.to_json().c_str() + 1);
      else
        std::printf("%s: %s %.3f%s  [%.2f ms]\n", args[i].c_str(), r.label.c_str(), r.score, alts.c_str(),
                    latencies.back());
      std::fflush(stdout);  // each prediction as soon as it is made
    }
    if (latencies.empty()) throw resnet_deploy::Error(RD_ERROR_IMAGE, "none of the images could be read");
    std::vector<double> steady(latencies.begin() + (latencies.size() > 1), latencies.end());
    const double cold = load_ms + latencies[0], p50 = percentile(steady, 50), p99 = percentile(steady, 99);
    const rd_info& info = predictor.info();
    if (json)
      std::fprintf(stderr,
                   "{\"variant\": %s, \"why\": %s, \"cache\": %s, \"images\": %zu, \"failures\": %d, "
                   "\"load_ms\": %.3f, \"cold_start_ms\": %.3f, \"latency_ms_p50\": %.4f, \"latency_ms_p99\": %.4f}\n",
                   resnet_deploy::json_string(info.variant).c_str(), resnet_deploy::json_string(info.why).c_str(),
                   resnet_deploy::json_string(predictor.describe("cache_use")).c_str(), latencies.size(), failures,
                   load_ms, cold, p50, p99);
    else
      std::printf(
          "%zu images, variant %s (%s)\ncold start %.1f ms (load %.1f + first image %.2f); per image p50 %.3f "
          "ms, p99 %.3f ms\n",
          latencies.size(), info.variant, info.why, cold, load_ms, latencies[0], p50, p99);
    return failures ? 1 : 0;
  } catch (const std::exception& e) {  // resnet_deploy::Error, or no memory for an image file
    std::fprintf(stderr, "Error: %s\n", e.what());
    return 2;
  }
}
