#include "predictor.h"

#include <algorithm>
#include <cmath>
#include <numeric>

#include "registry.h"

namespace rd {
namespace {

// Why variant `name` cannot run here (nothing when it can): predictor._reason for device "cpu".
std::optional<std::string> reason(const fs::path& bundle, const Manifest& m, const std::string& name) {
  const Variant& v = variant(name);
  const FileEntry* entry = find_entry(m, name);
  if (entry == nullptr) {
    std::string flags = v.flags.empty() ? "" : " " + join(v.flags, " ");
    return "the bundle has no " + name + " model (export it with `resnet-deploy export ..." + flags + "`)";
  }
  bool exists = false;
  try {
    std::error_code ec;
    exists = fs::is_regular_file(bundle_path(bundle, entry->path), ec);
  } catch (const Error& e) {
    return std::string(e.what());
  }
  if (!exists) return entry->path + " is listed in the manifest but missing from " + bundle.string();
  if (std::find(v.devices.begin(), v.devices.end(), "cpu") == v.devices.end()) {
    std::vector<std::string> instead;
    for (const auto& o : variants())
      if (o.precision == v.precision && std::find(o.devices.begin(), o.devices.end(), "cpu") != o.devices.end())
        instead.push_back(o.name);
    return "the " + name + " model runs on " + join(v.devices, " or ") + " only" +
           (instead.empty() ? "" : "; on cpu use " + join(instead, " or "));
  }
  return loader(v.loader).refuse(*entry, v.options);
}

}  // namespace

std::pair<std::vector<std::string>, std::string> auto_candidates(const fs::path& bundle) {
  std::vector<std::string> order = ranked_cpu();
  if (auto measured = measured_order(bundle)) {
    std::vector<std::string> out;
    for (const auto& n : measured->first)
      if (std::find(order.begin(), order.end(), n) != order.end() && std::find(out.begin(), out.end(), n) == out.end())
        out.push_back(n);
    for (const auto& n : order)
      if (std::find(out.begin(), out.end(), n) == out.end()) out.push_back(n);
    return {out, "fastest measured on this machine by bench (auto.json, " + measured->second + ")"};
  }
  auto [fast, why] = cpu_int8_is_fast(cpu_facts().flags);
  if (!fast) {  // int8 of a runtime that needs int8 dot products for its speed: tried after the first fp32
    std::size_t first_fp32 = order.size() - 1;
    for (std::size_t i = 0; i < order.size(); ++i)
      if (variant(order[i]).precision == "fp32") {
        first_fp32 = i;
        break;
      }
    std::vector<std::string> slow, rest;
    for (std::size_t i = 0; i < order.size(); ++i)
      (i < first_fp32 && variant(order[i]).precision == "int8" && int8_needs_dot_product(variant(order[i]).loader)
           ? slow
           : rest)
          .push_back(order[i]);
    std::size_t at = first_fp32 - slow.size() + 1;
    rest.insert(rest.begin() + static_cast<std::ptrdiff_t>(std::min(at, rest.size())), slow.begin(), slow.end());
    order = rest;
  }
  // Python's autotune.UNMEASURED: the order is what the CPU's instructions lead one to expect, not a measurement.
  return {order, "expected, not measured (run `resnet-deploy bench` on the bundle to measure): " + why};
}

std::pair<std::string, std::string> choose_variant(const fs::path& bundle, const Manifest& m,
                                                   const std::string& request) {
  std::vector<std::string> candidates;
  std::string why;
  if (request == "trt") {
    fail(Status::backend, "backend 'trt' cannot run on device=cpu: the C++ SDK has no TensorRT backend yet");
  } else if (request == "auto") {
    std::tie(candidates, why) = auto_candidates(bundle);
  } else {
    candidates = {variant(request).name};
    why = "asked for";
  }
  std::vector<std::pair<std::string, std::string>> refused;
  for (const auto& name : candidates) {
    auto r = reason(bundle, m, name);
    if (!r) {
      std::string skipped;
      for (const auto& [n, text] : refused)
        if (find_entry(m, n)) skipped += "; skipped " + n + ": " + text;
      return {name, why + skipped};
    }
    refused.emplace_back(name, *r);
  }
  if (candidates.size() == 1)
    fail(Status::backend, "backend '" + request + "' cannot run on device=cpu: " + refused[0].second);
  std::string detail;
  for (const auto& [n, text] : refused) detail += (detail.empty() ? "" : "; ") + n + ": " + text;
  fail(Status::backend, "no backend for '" + request + "' can run on device=cpu (" + detail + ")");
}

std::unique_ptr<Predictor> Predictor::open(const fs::path& bundle, const std::string& request,
                                           std::optional<int> threads, std::optional<fs::path> cache) {
  if (threads && *threads < 1)
    fail(Status::argument, "threads must be a positive integer or none, found " + std::to_string(*threads));
  auto p = std::unique_ptr<Predictor>(new Predictor());
  p->manifest_ = read_manifest(bundle);
  std::tie(p->variant_, p->why_) = choose_variant(bundle, p->manifest_, request);
  const Variant& v = rd::variant(p->variant_);
  const FileEntry& entry = *find_entry(p->manifest_, p->variant_);
  LoadOptions opts;
  opts.threads = threads;
  opts.input_name = p->manifest_.input_name;
  opts.output_name = p->manifest_.output_name;
  opts.options = v.options;
  fs::path root = cache ? *cache : cache_root();
  if (!root.empty()) opts.cache_root = root;
  // The loader gets the file only through the check of its size and sha256 against the manifest.
  p->backend_ = loader(v.loader).load(VerifiedFile{bundle, entry}, opts);
  return p;
}

void Predictor::run(const float* input, std::size_t n, float* logits) const {
  const Preprocess& pre = manifest_.preprocess;
  const std::size_t chw = pre.tensor_size(), k = num_classes();
  std::vector<std::size_t> bad;
  for (std::size_t i = 0; i < n; ++i)
    if (!std::all_of(input + i * chw, input + (i + 1) * chw, [](float v) { return std::isfinite(v); }))
      bad.push_back(i);
  if (!bad.empty()) {
    std::string list;
    for (std::size_t i = 0; i < bad.size() && i < 10; ++i) list += (i ? ", " : "") + std::to_string(bad[i]);
    fail(Status::argument,
         "input image(s) " + list + (bad.size() > 10 ? " ..." : "") + " of " + std::to_string(n) + " hold NaN or Inf");
  }
  const std::array<int, 3> shape{pre.channels(), pre.height(), pre.width()};
  const auto low = static_cast<std::size_t>(manifest_.batch[0]);
  std::vector<float> padded, padded_out;
  for (std::size_t start = 0; start < n; start += max_batch()) {
    std::size_t m = std::min(max_batch(), n - start);
    if (m < low) {  // the profile's smallest batch: pad with zeros, keep the first m rows
      padded.assign(low * chw, 0.0f);
      std::copy_n(input + start * chw, m * chw, padded.begin());
      padded_out.resize(low * k);
      backend_->run(padded.data(), low, shape, padded_out.data(), k);
      std::copy_n(padded_out.begin(), m * k, logits + start * k);
    } else {
      backend_->run(input + start * chw, m, shape, logits + start * k, k);
    }
  }
}

std::vector<ClassScore> Predictor::top(const float* logits, std::size_t k) const {
  const std::size_t n = num_classes();
  std::vector<double> p(n);
  double peak = *std::max_element(logits, logits + n), total = 0.0;
  for (std::size_t i = 0; i < n; ++i) total += p[i] = std::exp(static_cast<double>(logits[i]) - peak);
  for (auto& x : p) x /= total;
  std::vector<int> ids(n);
  std::iota(ids.begin(), ids.end(), 0);
  std::stable_sort(ids.begin(), ids.end(),
                   [&](int a, int b) { return p[static_cast<std::size_t>(a)] > p[static_cast<std::size_t>(b)]; });
  std::vector<ClassScore> out;
  for (std::size_t i = 0; i < std::min(k, n); ++i)
    out.push_back({ids[i], static_cast<float>(p[static_cast<std::size_t>(ids[i])])});
  return out;
}

}  // namespace rd
