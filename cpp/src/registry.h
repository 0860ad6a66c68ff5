// The variant registry as runtime/variants.py defines it (every row, so that `auto` orders candidates exactly as
// Python does and the manifest accepts the same formats, precisions and targets), and the CPU facts `auto` reads.
// tests/test_cpp_sdk.py compares this table, the flag lists and the machine key with Python's.
#pragma once

#include <map>
#include <optional>
#include <string>
#include <vector>

namespace rd {

struct Variant {
  std::string name, file, format, precision, target, loader;
  std::vector<std::string> flags;    // the `resnet-deploy export` flags that produce its file
  std::vector<std::string> devices;  // where it runs
  std::optional<int> cpu_rank;       // its place in `auto`'s order on a CPU (none: never chosen by auto there)
  std::optional<std::string> runs;   // the variant whose file it runs
  std::map<std::string, std::string> options;  // loader options (an inference precision)

  // (format, precision, target) of the manifest entry it runs.
  std::vector<std::string> key() const;
};

const std::vector<Variant>& variants();
// The variant called `name`; an unknown name is Status::argument naming the choices.
const Variant& variant(const std::string& name);
// Formats, precisions or targets a file entry may have: the registry's (variants with their own file) and `text`.
std::vector<std::string> allowed(const std::string& attribute, const std::string& text);
// The variants `auto` tries on a CPU, in the registry's static order.
std::vector<std::string> ranked_cpu();

// CPU facts from /proc/cpuinfo (empty / uname's machine elsewhere), as runtime/machine.py reads them.
struct CpuFacts {
  std::vector<std::string> flags;  // sorted
  std::string model;
};
const CpuFacts& cpu_facts();
extern const std::vector<std::string> kInt8DotFlags;  // machine.INT8_DOT_FLAGS
extern const std::vector<std::string> kBf16Flags;     // machine.BF16_FLAGS
std::pair<bool, std::string> cpu_int8_is_fast(const std::vector<std::string>& flags);
// backend.LOADERS[loader].int8_needs_dot_product: whether that runtime's int8 is tried after fp32 on a CPU without
// int8 dot-product instructions (ONNX Runtime's; OpenVINO's int8 measured faster than its fp32 without them).
bool int8_needs_dot_product(const std::string& loader);
std::pair<bool, std::string> cpu_has_bf16(const std::vector<std::string>& flags);
// The items with `sep` between them.
std::string join(const std::vector<std::string>& items, const std::string& sep);
// machine.caps_text(machine.isa_caps()): "ONEDNN_MAX_CPU_ISA=AVX2, ..." for the caps set here, or "".
std::string isa_caps_text();
// autotune.machine_key: {"cpu": model, "flags": first 16 hex digits of sha256(" ".join(sorted(flags)))}.
std::map<std::string, std::string> machine_key(const CpuFacts& facts);

// The registry, flag lists and this machine's key as JSON (rd_registry_json).
std::string registry_json();

}  // namespace rd
