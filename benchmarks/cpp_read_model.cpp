// How long OpenVINO takes from an ONNX file to a compiled model, by the way the model reaches it (one way per
// process): `path` (compile_model(path)), `fd-core` / `fd-fe` (an open descriptor's /proc/self/fd/N through
// Core::read_model / the ONNX front end), `mem-core` / `mem-fe` (the file's bytes in memory through
// Core::read_model(string, Tensor) / the ONNX front end's istream). Prints the time and the peak RSS.
//
//   OV=.venv/lib/python3.11/site-packages/openvino
//   g++ -std=c++17 -O1 benchmarks/cpp_read_model.cpp -I$OV/include $OV/libs/libopenvino.so.2641 \
//     -Wl,-rpath,$OV/libs -o build/read_model
//   for m in path fd-core fd-fe mem-core mem-fe; do build/read_model $m MODEL.onnx; done
#include <fcntl.h>
#include <sys/resource.h>
#include <unistd.h>
#include <chrono>
#include <cstdio>
#include <fstream>
#include <iostream>
#include <sstream>
#include <openvino/openvino.hpp>
#include <openvino/frontend/manager.hpp>
int main(int argc, char** argv) {
  std::string mode = argv[1], path = argv[2];
  auto t0 = std::chrono::steady_clock::now();
  ov::Core core;
  ov::AnyMap cfg{{"PERFORMANCE_HINT", "LATENCY"}, {"NUM_STREAMS", "1"}, {"INFERENCE_PRECISION_HINT", "f32"}};
  std::shared_ptr<ov::Model> m;
  ov::CompiledModel c;
  if (mode == "path") c = core.compile_model(path, "CPU", cfg);
  else if (mode == "fd-core" || mode == "fd-fe") {
    int fd = ::open(path.c_str(), O_RDONLY);
    std::string p = "/proc/self/fd/" + std::to_string(fd);
    if (mode == "fd-core") m = core.read_model(p);
    else { ov::frontend::FrontEndManager fem; auto fe = fem.load_by_framework("onnx"); m = fe->convert(fe->load(p)); }
    c = core.compile_model(m, "CPU", cfg);
    ::close(fd);
  } else if (mode == "mem-core" || mode == "mem-fe") {
    std::ifstream in(path, std::ios::binary);
    std::string bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    if (mode == "mem-core") m = core.read_model(bytes, ov::Tensor());
    else { std::istringstream s(bytes); ov::frontend::FrontEndManager fem; auto fe = fem.load_by_framework("onnx"); m = fe->convert(fe->load(static_cast<std::istream*>(&s))); }
    c = core.compile_model(m, "CPU", cfg);
  }
  auto t1 = std::chrono::steady_clock::now();
  rusage ru{}; getrusage(RUSAGE_SELF, &ru);
  std::printf("%s %.1f ms maxrss %ld MiB\n", mode.c_str(), std::chrono::duration<double, std::milli>(t1 - t0).count(), ru.ru_maxrss / 1024);
}
