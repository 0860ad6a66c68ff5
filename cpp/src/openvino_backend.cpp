// OpenVINO backend: one compiled model per predictor, with the settings runtime/openvino_backend.py uses (latency
// hint, one stream, an explicit inference precision, the thread count, a model cache per file content). An
// InferRequest must not be used by two threads at once, so each call borrows an idle request from a pool and
// returns it; the pool grows to the number of concurrent callers.
#include <unistd.h>

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
  OvBackend(const fs::path& path, const LoadOptions& opts)
      : input_name_(opts.input_name), output_name_(opts.output_name) {
    auto it = opts.options.find("inference_precision");
    precision_ = it == opts.options.end() ? "fp32" : it->second;
    if (!kPrecisions.count(precision_))
      fail(Status::backend, "unknown OpenVINO inference precision '" + precision_ + "'; choose one of: fp32, bf16");
    cache_ = usable_cache(opts.cache);
    ov::AnyMap config{{"PERFORMANCE_HINT", "LATENCY"},
                      {"NUM_STREAMS", "1"},
                      {"INFERENCE_PRECISION_HINT", kPrecisions.at(precision_)}};
    if (opts.threads) config["INFERENCE_NUM_THREADS"] = std::to_string(*opts.threads);
    if (cache_) config["CACHE_DIR"] = cache_->string();
    try {
      // From the path (not a read model): with the cache, OpenVINO can skip reading the ONNX file.
      compiled_ = core_.compile_model(path.string(), "CPU", config);
    } catch (const std::exception& e) {
      fail(Status::bundle, "OpenVINO could not compile " + path.filename().string() + ": " + first_line(e.what()));
    }
    std::set<std::string> names;
    for (const auto& port : compiled_.inputs())
      for (const auto& n : port.get_names()) names.insert(n);
    if (!names.count(input_name_)) {
      std::string list;
      for (const auto& n : names) list += (list.empty() ? "'" : ", '") + n + "'";
      fail(Status::bundle,
           path.filename().string() + " has inputs [" + list + "]; the manifest expects '" + input_name_ + "'");
    }
    version_ = ov::get_openvino_version().buildNumber;
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
  std::unique_ptr<Backend> load(const fs::path& verified, const LoadOptions& options) const override {
    return std::make_unique<OvBackend>(verified, options);
  }
};

}  // namespace

std::unique_ptr<Loader> make_openvino_loader() { return std::make_unique<OvLoader>(); }

}  // namespace rd
