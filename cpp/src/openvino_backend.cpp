// OpenVINO backend: one compiled model per predictor, with the settings runtime/openvino_backend.py uses (latency
// hint, one stream, an explicit inference precision, the thread count). An InferRequest must not be used by two
// threads at once, so each call borrows an idle request from a pool and returns it; the pool grows to the number of
// concurrent callers.
//
// Compiled models are cached per file content, as Python's backend caches them, but as blobs the SDK writes itself
// (`export_model`) in a folder named by the digest the file was verified against: CACHE_DIR/openvino/sha256-<hex>.
// A blob is written only after compiling a verified file, so a later start can import it (which reads nothing of the
// bundle's file) while the file is being verified, and keeps it only if the file still matches: the sha256 of a
// ResNet-50 and the import take about the same time, and the start pays for one of them. Without a blob the file is
// verified first, then compiled from its path. A blob OpenVINO cannot import (another version) is replaced.
#include <unistd.h>

#include <cctype>
#include <cstdint>
#include <fstream>
#include <future>
#include <mutex>
#include <openvino/openvino.hpp>
#include <set>
#include <vector>

#include "backend.h"
#include "error.h"
#include "registry.h"

namespace rd {
namespace {

const std::map<std::string, std::string> kPrecisions{{"fp32", "f32"}, {"bf16", "bf16"}};

// The cache folder, made if need be; none (no caching) where it cannot be written, e.g. a read-only home.
std::optional<fs::path> usable_cache(const std::optional<fs::path>& cache) {
  if (!cache) return std::nullopt;
  std::error_code ec;
  fs::create_directories(*cache, ec);
  if (ec || ::access(cache->c_str(), W_OK | X_OK) != 0) return std::nullopt;
  return cache;
}

class OvBackend : public Backend {
 public:
  OvBackend(const VerifiedFile& file, const LoadOptions& opts)
      : input_name_(opts.input_name), output_name_(opts.output_name) {
    auto it = opts.options.find("inference_precision");
    precision_ = it == opts.options.end() ? "fp32" : it->second;
    if (!kPrecisions.count(precision_))
      fail(Status::backend, "unknown OpenVINO inference precision '" + precision_ + "'; choose one of: fp32, bf16");
    version_ = ov::get_openvino_version().buildNumber;
    if (opts.cache_root) cache_ = usable_cache(*opts.cache_root / "openvino" / file.content_id());
    ov::AnyMap config{{"PERFORMANCE_HINT", "LATENCY"},
                      {"NUM_STREAMS", "1"},
                      {"INFERENCE_PRECISION_HINT", kPrecisions.at(precision_)}};
    if (opts.threads) config["INFERENCE_NUM_THREADS"] = std::to_string(*opts.threads);
    const std::string name = file.entry.path;
    std::optional<fs::path> blob;
    if (cache_) blob = *cache_ / (blob_stem() + ".blob");
    std::error_code ec;
    bool imported = false;
    fs::path path;
    if (blob && fs::is_regular_file(*blob, ec)) {
      auto checked = std::async(std::launch::async, [&file] { return file.path(); });
      try {  // mapped, not read through a stream: OpenVINO takes the weights from the mapping
        blob_data_ = ov::read_tensor_data(*blob);
        compiled_ = core_.import_model(blob_data_, "CPU", config);
        imported = true;
      } catch (const std::exception&) {  // a blob of another OpenVINO, or damaged: compiled again below
        blob_data_ = ov::Tensor();
      }
      path = checked.get();  // the file does not match: BundleError, and the imported model goes with this object
    } else {
      path = file.path();
    }
    if (!imported) {
      try {
        compiled_ = core_.compile_model(path.string(), "CPU", config);
      } catch (const std::exception& e) {
        fail(Status::bundle, "OpenVINO could not compile " + name + ": " + first_line(e.what()));
      }
      if (blob) write_blob(*blob);
    }
    std::set<std::string> names;
    for (const auto& port : compiled_.inputs())
      for (const auto& n : port.get_names()) names.insert(n);
    if (!names.count(input_name_)) {
      std::string list;
      for (const auto& n : names) list += (list.empty() ? "'" : ", '") + n + "'";
      fail(Status::bundle, name + " has inputs [" + list + "]; the manifest expects '" + input_name_ + "'");
    }
  }

  void run(const float* input, std::size_t batch, const std::array<int, 3>& shape, float* logits,
           std::size_t classes) override {
    ov::Shape got;
    try {
      Lease lease(*this);  // a new request may be created here, which can fail too
      ov::Tensor x(ov::element::f32,
                   ov::Shape{batch, static_cast<std::size_t>(shape[0]), static_cast<std::size_t>(shape[1]),
                             static_cast<std::size_t>(shape[2])},
                   const_cast<float*>(input));  // read only: OpenVINO does not write its inputs
      lease.request.set_tensor(input_name_, x);
      lease.request.infer();
      ov::Tensor y = lease.request.get_tensor(output_name_);
      got = y.get_shape();
      if (y.get_element_type() == ov::element::f32 && got == ov::Shape{batch, classes}) {
        std::copy_n(y.data<const float>(), batch * classes, logits);  // the request's buffer is reused next call
        return;
      }
    } catch (const std::exception& e) {
      fail(Status::backend, "OpenVINO failed on a batch of " + std::to_string(batch) + ": " + first_line(e.what()));
    }
    fail(Status::bundle, "model returned logits of shape " + got.to_string() + "; the manifest lists " +
                             std::to_string(classes) + " classes (the bundle is inconsistent, export it again)");
  }

  std::map<std::string, std::string> describe() const override {
    return {{"runtime", "openvino"},
            {"version", version_},
            {"inference_precision", precision_},
            {"cache", cache_ ? cache_->string() : "off"}};
  }

 private:
  // The blob's name: the inference precision and the OpenVINO build (a blob is imported only by the one that wrote it).
  std::string blob_stem() const {
    std::string stem = precision_ + "-";
    for (char c : version_) stem += std::isalnum(static_cast<unsigned char>(c)) || c == '.' ? c : '_';
    return stem;
  }

  // Written beside, then renamed: a reader never sees half a blob, and two writers never share a file.
  void write_blob(const fs::path& blob) noexcept {
    std::error_code ec;
    fs::path tmp = blob;
    try {
      tmp += ".tmp." + std::to_string(::getpid()) + "." + std::to_string(reinterpret_cast<std::uintptr_t>(this));
      {
        std::ofstream out(tmp, std::ios::binary);
        compiled_.export_model(out);
        if (!out) throw std::runtime_error("write failed");
      }
      fs::rename(tmp, blob);
    } catch (...) {  // no cache then (a full disk, a read-only folder): the model runs all the same
      fs::remove(tmp, ec);
    }
  }

  // An idle request for one call, returned to the pool when the call ends (however it ends).
  struct Lease {
    explicit Lease(OvBackend& b) : backend(b), request(b.borrow()) {}
    ~Lease() { backend.give_back(std::move(request)); }
    Lease(const Lease&) = delete;
    Lease& operator=(const Lease&) = delete;
    OvBackend& backend;
    ov::InferRequest request;
  };

  ov::InferRequest borrow() {
    {
      std::lock_guard<std::mutex> lock(mu_);
      if (!idle_.empty()) {
        ov::InferRequest r = std::move(idle_.back());
        idle_.pop_back();
        return r;
      }
    }
    return compiled_.create_infer_request();  // thread-safe on a compiled model
  }
  void give_back(ov::InferRequest&& r) noexcept {
    try {
      std::lock_guard<std::mutex> lock(mu_);
      idle_.push_back(std::move(r));
    } catch (...) {  // out of memory for the pool: the request is simply dropped
    }
  }

  ov::Core core_;
  ov::Tensor blob_data_;  // an imported blob's mapping, which the compiled model may point into: outlives it
  ov::CompiledModel compiled_;
  std::string input_name_, output_name_, precision_, version_;
  std::optional<fs::path> cache_;
  std::mutex mu_;
  std::vector<ov::InferRequest> idle_;
};

class OvLoader : public Loader {
 public:
  std::optional<std::string> refuse(const FileEntry&,
                                    const std::map<std::string, std::string>& options) const override {
    auto it = options.find("inference_precision");
    if (it != options.end() && it->second == "bf16") {
      auto [native, why] = cpu_has_bf16(cpu_facts().flags);
      if (!native) return why;
    }
    return std::nullopt;
  }
  std::unique_ptr<Backend> load(const VerifiedFile& file, const LoadOptions& options) const override {
    return std::make_unique<OvBackend>(file, options);
  }
};

}  // namespace

std::unique_ptr<Loader> make_openvino_loader() { return std::make_unique<OvLoader>(); }

}  // namespace rd
