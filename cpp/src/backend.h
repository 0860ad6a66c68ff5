// The backend interface, as runtime/backend.py's: a Loader says why a variant's file cannot run here (before anything
// is loaded) or loads a verified file into a Backend; a Backend runs float32 (N, C, H, W) -> logits (N, K)
// and is safe to call from several threads. OpenVINO is the one loader built here; a TensorRT loader plugs in the
// same way (a class implementing Loader and Backend, registered under "tensorrt" in backend.cpp).
#pragma once

#include <cstddef>
#include <filesystem>
#include <map>
#include <memory>
#include <optional>
#include <string>

#include "manifest.h"

namespace rd {

struct LoadOptions {
  std::optional<int> threads;  // none: the runtime's default (one per core)
  std::string input_name = "input", output_name = "logits";
  std::map<std::string, std::string> options;  // the variant's loader options (an inference precision)
  std::optional<fs::path> cache_root;          // where compiled models are cached (cache_root()), or none
};

class Backend {
 public:
  virtual ~Backend() = default;
  // logits[batch * classes] for input[batch * chw]; `shape` is (C, H, W).
  virtual void run(const float* input, std::size_t batch, const std::array<int, 3>& shape, float* logits,
                   std::size_t classes) = 0;
  // What runs the model: runtime, version, inference precision, cache.
  virtual std::map<std::string, std::string> describe() const = 0;
};

class Loader {
 public:
  virtual ~Loader() = default;
  // Why `entry` cannot run on this machine's CPU with the variant's `options` (nothing: it can).
  virtual std::optional<std::string> refuse(const FileEntry& entry,
                                            const std::map<std::string, std::string>& options) const = 0;
  // The running backend for `file`, got at only through `file.opened()` (the checked file's own descriptor) or
  // `file.read()` (the checked bytes), never through its path, which could name another file by the time a library
  // opened it.
  virtual std::unique_ptr<Backend> load(const VerifiedFile& file, const LoadOptions& options) const = 0;
};

// The loader registered as `name` (a variant's loader: "openvino", "onnxruntime", "tensorrt").
const Loader& loader(const std::string& name);
// Where compiled models are cached: $RESNET_DEPLOY_CACHE, else $XDG_CACHE_HOME/resnet-deploy, else
// ~/.cache/resnet-deploy (runtime/backend.cache_root).
fs::path cache_root();

#ifdef RD_HAVE_OPENVINO
std::unique_ptr<Loader> make_openvino_loader();
#endif

}  // namespace rd
