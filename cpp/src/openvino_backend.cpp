// OpenVINO backend: one compiled model per predictor, with the settings runtime/openvino_backend.py uses (latency
// hint, one stream, an explicit inference precision, the thread count). An InferRequest must not be used by two
// threads at once, so each call borrows an idle request from a pool and returns it; the pool grows to the number of
// concurrent callers.
//
// OpenVINO parses the file that matched the manifest: opened once, checked through that descriptor and given to the
// ONNX front end as /proc/self/fd/N (VerifiedFile::opened), never by the bundle's path, which could name another file
// by the time OpenVINO opened it (from a path OpenVINO parses a ResNet-50 about 3x as fast as from bytes in memory).
// Compiled models are cached as Python's backend caches them: an entry the SDK writes itself (`export_model`) in the
// private folder (cache.h) CACHE/openvino/<content id>, named and bound by the content the load verified, the compile
// settings, OpenVINO's build and the CPU. A start with an entry reads, checks and imports it in a second thread while
// this one checks the file, and keeps it only if the file matches; an entry that is missing, damaged or not this user's
// own is compiled again and replaced.
#include <csignal>
#include <functional>
#include <future>
#include <mutex>
#include <openvino/frontend/manager.hpp>
#include <openvino/openvino.hpp>
#include <optional>
#include <set>
#include <vector>

#include "backend.h"
#include "cache.h"
#include "checksum.h"
#include "error.h"
#include "registry.h"

namespace rd {
namespace {

const std::map<std::string, std::string> kPrecisions{{"fp32", "f32"}, {"bf16", "bf16"}};

// A cache entry's folder, name and binding (what the compiled model was made from), or no folder and why (`refused`
// too when the folder is there but not this user's own, or a link: worth a warning).
struct CacheEntry {
  std::unique_ptr<PrivateDir> folder;
  std::string name, binding, why, refused;
};

CacheEntry cache_entry(const VerifiedFile& file, const LoadOptions& opts,
                       const std::map<std::string, std::string>& config, const std::string& version) {
  CacheEntry entry;
  if (!opts.cache_root) {
    entry.why = "no cache folder";
    return entry;
  }
  bool warn = false;
  entry.folder = PrivateDir::open(*opts.cache_root, {"openvino", file.content_id()}, entry.why, warn);
  if (!entry.folder) {
    if (warn) entry.refused = "OpenVINO model cache off: " + entry.why;
    return entry;
  }
  entry.binding = Json{{"content", file.content_id()},
                       {"openvino", version},
                       {"device", "CPU"},
                       {"config", config},
                       {"cpu", cpu_facts().model},
                       {"cpu_flags", sha256_hex(join(cpu_facts().flags, " "))},
                       {"isa_caps", isa_caps_text()}}
                      .dump();
  entry.name = sha256_hex(entry.binding).substr(0, 32) + ".blob";
  return entry;
}

// The ONNX file at `path` (a checked descriptor's /proc/self/fd/N) read by the ONNX front end itself: Core::read_model
// guesses the format from the name's extension, and a name without `.onnx` costs a try of other front ends first.
std::shared_ptr<ov::Model> read_onnx(const std::string& path) {
  ov::frontend::FrontEndManager manager;
  auto onnx = manager.load_by_framework("onnx");
  return onnx->convert(onnx->load(path));
}

// OpenVINO's CPU plugin (2026.4) installs a signal stack of its own on the thread that compiles or imports a model,
// and puts back the one it found when that model is destroyed: models destroyed in another order than they were made
// (or on another thread) leave the thread on a freed stack, and its next signal with a handler is a SIGSEGV. Every
// call that may do either keeps the calling thread's own stack.
class KeepSignalStack {
 public:
  KeepSignalStack() noexcept : known_(::sigaltstack(nullptr, &saved_) == 0) {}
  ~KeepSignalStack() {
    if (!known_) return;
    saved_.ss_flags &= ~SS_ONSTACK;  // a state sigaltstack reports, not a flag it takes
    ::sigaltstack(&saved_, nullptr);
  }
  KeepSignalStack(const KeepSignalStack&) = delete;
  KeepSignalStack& operator=(const KeepSignalStack&) = delete;

 private:
  stack_t saved_{};
  bool known_;
};

// A cache entry's checked bytes imported, or why not.
struct Imported {
  std::unique_ptr<Mapping> blob;
  ov::Tensor data;  // a view of `blob`, which the compiled model may point into
  ov::CompiledModel compiled;
  std::string why;
};

Imported import_entry(ov::Core& core, const CacheEntry& entry, const ov::AnyMap& config) {
  Imported got;
  got.blob = entry.folder->read(entry.name, entry.binding, got.why);
  if (!got.blob) return got;
  try {
    got.data = ov::Tensor(ov::element::u8, ov::Shape{got.blob->size()}, got.blob->data());
    KeepSignalStack keep;
    got.compiled = core.import_model(got.data, "CPU", config);
  } catch (const std::exception& e) {  // a blob OpenVINO refuses: compiled again and replaced
    got = Imported{};
    got.why = "cache entry " + (entry.folder->path() / entry.name).string() + " not used (OpenVINO could not import " +
              "it: " + first_line(e.what()) + ")";
  }
  return got;
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
    std::map<std::string, std::string> settings{{"PERFORMANCE_HINT", "LATENCY"},
                                                {"NUM_STREAMS", "1"},
                                                {"INFERENCE_PRECISION_HINT", kPrecisions.at(precision_)}};
    if (opts.threads) settings["INFERENCE_NUM_THREADS"] = std::to_string(*opts.threads);
    CacheEntry entry = cache_entry(file, opts, settings, version_);
    load(file, entry, ov::AnyMap(settings.begin(), settings.end()));
    check_input(file.entry.path);
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
            {"cache", cache_ ? cache_->string() : "off"},
            {"cache_use", cache_use_},
            {"cache_warning", cache_warning_}};
  }

  ~OvBackend() override {
    KeepSignalStack keep;  // the model goes here, before the bytes it may point into (blob_)
    idle_.clear();
    compiled_ = ov::CompiledModel();
  }
  OvBackend(const OvBackend&) = delete;
  OvBackend& operator=(const OvBackend&) = delete;

 private:
  // The compiled model: the cache entry's, imported while this thread checks the file (and kept only if it matches),
  // else compiled from the checked file and written to the cache.
  void load(const VerifiedFile& file, const CacheEntry& entry, const ov::AnyMap& config) {
    if (entry.folder) cache_ = entry.folder->path();
    std::future<Imported> cached;
    if (entry.folder) cached = std::async(std::launch::async, import_entry, std::ref(core_), std::cref(entry), config);
    std::optional<CheckedFile> checked;
    std::string bytes;
    if (fs::is_directory(kFdDir))
      checked.emplace(file.opened());  // BundleError: `cached` is waited for as it goes, the import with it
    else
      bytes = file.read();  // no /proc: OpenVINO parses the checked bytes (about 3x as long for a ResNet-50)
    Imported imported = cached.valid() ? cached.get() : Imported{};
    if (imported.blob) {
      blob_ = std::move(imported.blob);
      blob_data_ = std::move(imported.data);
      compiled_ = std::move(imported.compiled);
      cache_use_ = "imported";
      return;
    }
    compile([&] { return checked ? read_onnx(checked->path()) : core_.read_model(bytes, ov::Tensor()); },
            file.entry.path, config);
    if (checked) checked->unchanged();  // else OpenVINO may have read something else than what was checked
    // a folder or an entry refused is worth a warning; no entry yet, or no cache asked for or possible, is not
    cache_warning_ = imported.why.empty() ? entry.refused : imported.why;
    if (!entry.folder) {
      cache_use_ = "off: " + entry.why;
      return;
    }
    std::string why;
    bool written = entry.folder->write(
        entry.name, entry.binding, [this](std::ostream& out) { compiled_.export_model(out); }, why);
    cache_use_ = "compiled: " + (imported.why.empty() ? std::string("no entry yet") : imported.why) +
                 (written ? "; written" : "; not written (" + why + ")");
  }

  void compile(const std::function<std::shared_ptr<ov::Model>()>& read, const std::string& name,
               const ov::AnyMap& config) {
    try {
      KeepSignalStack keep;
      compiled_ = core_.compile_model(read(), "CPU", config);
    } catch (const std::exception& e) {
      fail(Status::bundle, "OpenVINO could not compile " + name + ": " + first_line(e.what()));
    }
  }

  void check_input(const std::string& name) const {
    std::set<std::string> names;
    for (const auto& port : compiled_.inputs())
      for (const auto& n : port.get_names()) names.insert(n);
    if (!names.count(input_name_)) {
      std::string list;
      for (const auto& n : names) list += (list.empty() ? "'" : ", '") + n + "'";
      fail(Status::bundle, name + " has inputs [" + list + "]; the manifest expects '" + input_name_ + "'");
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
  std::unique_ptr<Mapping> blob_;  // an imported entry's checked bytes, which the compiled model may point into
  ov::Tensor blob_data_;
  ov::CompiledModel compiled_;
  std::string input_name_, output_name_, precision_, version_, cache_use_, cache_warning_;
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
