#include "registry.h"

#include <sys/utsname.h>

#include <algorithm>
#include <cstdlib>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "checksum.h"
#include "error.h"

namespace rd {

const std::vector<std::string> kInt8NeedsDotProduct{"onnxruntime"};
// machine.ISA_CAPS: environment variables that cap the instruction set the libraries use (OpenVINO's oneDNN here).
const std::vector<std::string> kIsaCaps{"ATEN_CPU_CAPABILITY", "ONEDNN_MAX_CPU_ISA", "DNNL_MAX_CPU_ISA",
                                        "OV_CPU_MAX_ISA", "MKL_ENABLE_INSTRUCTIONS"};
const std::vector<std::string> kInt8DotFlags{"avx512_vnni", "avx_vnni", "amx_int8", "asimddp", "i8mm"};
const std::vector<std::string> kBf16Flags{"avx512_bf16", "amx_bf16"};

const std::vector<Variant>& variants() {
  // runtime/variants.py's rows in registration order (cuda ranks are left out: the SDK runs on CPUs only).
  static const std::vector<Variant> table{
      {"onnx", "model.onnx", "onnx", "fp32", "any", "onnxruntime", {}, {"cpu", "cuda"}, 2, {}, {}},
      {"fp16", "model.fp16.onnx", "onnx", "fp16", "any", "onnxruntime", {"--fp16"}, {"cpu", "cuda"}, 5, {}, {}},
      {"int8", "model.int8.onnx", "onnx", "int8", "cpu", "onnxruntime", {"--int8"}, {"cpu"}, 0, {}, {}},
      {"int8-trt",
       "model.int8-trt.onnx",
       "onnx",
       "int8",
       "trt",
       "onnxruntime",
       {"--int8", "--trt"},
       {"cpu", "cuda"},
       6,
       {},
       {}},
      {"trt-fp32", "model.fp32.engine", "engine", "fp32", "trt", "tensorrt", {"--trt"}, {"cuda"}, {}, {}, {}},
      {"trt-fp16", "model.fp16.engine", "engine", "fp16", "trt", "tensorrt", {"--fp16", "--trt"}, {"cuda"}, {}, {}, {}},
      {"trt-int8", "model.int8.engine", "engine", "int8", "trt", "tensorrt", {"--int8", "--trt"}, {"cuda"}, {}, {}, {}},
      {"fp8",
       "model.fp8.onnx",
       "onnx",
       "fp8",
       "trt",
       "onnxruntime",
       {"--fp8"},
       {"cpu"},
       {},
       {},
       {{"graph_optimization", "basic"}}},
      {"trt-fp8", "model.fp8.engine", "engine", "fp8", "trt", "tensorrt", {"--fp8", "--trt"}, {"cuda"}, {}, {}, {}},
      {"ov-int8", "model.int8.onnx", "onnx", "int8", "cpu", "openvino", {"--int8"}, {"cpu"}, 1, "int8", {}},
      {"ov-bf16",
       "model.onnx",
       "onnx",
       "bf16",
       "any",
       "openvino",
       {},
       {"cpu"},
       3,
       "onnx",
       {{"inference_precision", "bf16"}}},
      {"ov-fp32", "model.onnx", "onnx", "fp32", "any", "openvino", {}, {"cpu"}, 4, "onnx", {}},
  };
  return table;
}

std::vector<std::string> Variant::key() const {
  if (runs) return variant(*runs).key();
  return {format, precision, target};
}

const Variant& variant(const std::string& name) {
  for (const auto& v : variants())
    if (v.name == name) return v;
  std::string names = "auto, trt";
  for (const auto& v : variants()) names += ", " + v.name;
  fail(Status::argument, "unknown backend '" + name + "'; choose one of: " + names);
}

std::vector<std::string> allowed(const std::string& attribute, const std::string& text) {
  std::vector<std::string> out;
  for (const auto& v : variants()) {
    if (v.runs) continue;
    const std::string& x = attribute == "format" ? v.format : attribute == "precision" ? v.precision : v.target;
    if (std::find(out.begin(), out.end(), x) == out.end()) out.push_back(x);
  }
  out.push_back(text);  // even when the registry has it too, as Python lists it
  return out;
}

std::vector<std::string> ranked_cpu() {
  std::vector<const Variant*> found;
  for (const auto& v : variants())
    if (v.cpu_rank) found.push_back(&v);
  std::stable_sort(found.begin(), found.end(),
                   [](const Variant* a, const Variant* b) { return *a->cpu_rank < *b->cpu_rank; });
  std::vector<std::string> out;
  for (const auto* v : found) out.push_back(v->name);
  return out;
}

const CpuFacts& cpu_facts() {
  static const CpuFacts facts = [] {
    CpuFacts f;
    std::ifstream in("/proc/cpuinfo");
    std::string line;
    bool have_flags = false, have_model = false;
    while (std::getline(in, line) && !(have_flags && have_model)) {
      auto colon = line.find(':');
      if (colon == std::string::npos) continue;
      std::string key = line.substr(0, colon);
      key.erase(key.find_last_not_of(" \t") + 1);
      key.erase(0, key.find_first_not_of(" \t"));
      std::string value = line.substr(colon + 1);
      if (!have_flags && (key == "flags" || key == "Features")) {
        std::istringstream words(value);
        for (std::string w; words >> w;) f.flags.push_back(w);
        have_flags = true;
      }
      std::string lower = key;
      std::transform(lower.begin(), lower.end(), lower.begin(), [](unsigned char c) { return std::tolower(c); });
      if (!have_model && lower.rfind("model name", 0) == 0) {
        value.erase(0, value.find_first_not_of(" \t"));
        value.erase(value.find_last_not_of(" \t\r\n") + 1);
        f.model = value;
        have_model = true;
      }
    }
    std::sort(f.flags.begin(), f.flags.end());
    f.flags.erase(std::unique(f.flags.begin(), f.flags.end()), f.flags.end());
    if (!have_model) {
      utsname u{};
      if (uname(&u) == 0) f.model = u.machine;
    }
    return f;
  }();
  return facts;
}

namespace {
std::vector<std::string> present(const std::vector<std::string>& flags, const std::vector<std::string>& wanted) {
  std::vector<std::string> out;
  for (const auto& w : wanted)
    if (std::binary_search(flags.begin(), flags.end(), w)) out.push_back(w);
  return out;
}
}  // namespace

std::string join(const std::vector<std::string>& items, const std::string& sep) {
  std::string out;
  for (const auto& x : items) out += (out.empty() ? "" : sep) + x;
  return out;
}

std::pair<bool, std::string> cpu_int8_is_fast(const std::vector<std::string>& flags) {
  auto found = present(flags, kInt8DotFlags);
  if (!found.empty()) return {true, "CPU has int8 dot-product instructions (" + join(found, ", ") + ")"};
  return {false, "CPU lacks int8 dot-product instructions (" + join(kInt8DotFlags, ", ") +
                     "); int8 is expected slower than fp32"};
}

bool int8_needs_dot_product(const std::string& loader) {
  return std::find(kInt8NeedsDotProduct.begin(), kInt8NeedsDotProduct.end(), loader) != kInt8NeedsDotProduct.end();
}

std::pair<bool, std::string> cpu_has_bf16(const std::vector<std::string>& flags) {
  auto found = present(flags, kBf16Flags);
  if (!found.empty()) return {true, "CPU has bf16 instructions (" + join(found, ", ") + ")"};
  return {false,
          "CPU lacks bf16 instructions (" + join(kBf16Flags, ", ") + "); OpenVINO would emulate it, slower than fp32"};
}

std::string isa_caps_text() {
  std::string text;
  for (const auto& k : kIsaCaps)
    if (const char* v = std::getenv(k.c_str()); v && *v) text += (text.empty() ? "" : ", ") + k + "=" + v;
  return text;
}

std::map<std::string, std::string> machine_key(const CpuFacts& facts) {
  std::map<std::string, std::string> key{{"cpu", facts.model},
                                         {"flags", sha256_hex(join(facts.flags, " ")).substr(0, 16)}};
  // under a cap, a key no record matches: Python keys capped records by the flags the cap leaves usable, which the
  // SDK does not work out, so it takes the expected order there rather than another class's measurement
  if (auto caps = isa_caps_text(); !caps.empty()) key["isa_caps"] = caps;
  return key;
}

std::string registry_json() {
  nlohmann::json rows = nlohmann::json::array();
  for (const auto& v : variants()) {
    nlohmann::json row{{"name", v.name},           {"file", v.file},       {"format", v.format},
                       {"precision", v.precision}, {"target", v.target},   {"loader", v.loader},
                       {"flags", v.flags},         {"devices", v.devices}, {"options", v.options}};
    row["cpu_rank"] = v.cpu_rank ? nlohmann::json(*v.cpu_rank) : nlohmann::json();
    row["runs"] = v.runs ? nlohmann::json(*v.runs) : nlohmann::json();
    rows.push_back(row);
  }
  const auto& facts = cpu_facts();
#ifdef RD_HAVE_OPENVINO
  const bool openvino = true;
#else
  const bool openvino = false;
#endif
  nlohmann::json out{{"variants", rows},
                     {"openvino", openvino},
                     {"ranked_cpu", ranked_cpu()},
                     {"int8_dot_flags", kInt8DotFlags},
                     {"int8_needs_dot_product", kInt8NeedsDotProduct},
                     {"isa_caps", kIsaCaps},
                     {"bf16_flags", kBf16Flags},
                     {"machine_key", machine_key(facts)},
                     {"cpu_flags", facts.flags},
                     {"allowed",
                      {{"format", allowed("format", "text")},
                       {"precision", allowed("precision", "none")},
                       {"target", allowed("target", "any")}}}};
  return out.dump();
}

}  // namespace rd
