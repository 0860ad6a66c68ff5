#include "backend.h"

#include <pwd.h>
#include <unistd.h>

#include <cstdlib>
#include <vector>

#include "error.h"

namespace rd {
namespace {

// A runtime this build does not have: every file it would run is refused with the reason.
class Unavailable : public Loader {
 public:
  explicit Unavailable(std::string why) : why_(std::move(why)) {}
  std::optional<std::string> refuse(const FileEntry&, const std::map<std::string, std::string>&) const override {
    return why_;
  }
  std::unique_ptr<Backend> load(const VerifiedFile&, const LoadOptions&) const override { fail(Status::backend, why_); }

 private:
  std::string why_;
};

const std::map<std::string, std::unique_ptr<Loader>>& loaders() {
  static const auto table = [] {
    std::map<std::string, std::unique_ptr<Loader>> t;
#ifdef RD_HAVE_OPENVINO
    t["openvino"] = make_openvino_loader();
#else
    t["openvino"] = std::make_unique<Unavailable>(
        "this build of the C++ SDK has no OpenVINO backend (configure it with OpenVINO_DIR set)");
#endif
    t["onnxruntime"] = std::make_unique<Unavailable>(
        "the C++ SDK has no ONNX Runtime backend (it runs the ONNX files on OpenVINO: the ov-* variants)");
    t["tensorrt"] =
        std::make_unique<Unavailable>("the C++ SDK has no TensorRT backend yet (TensorRT engines need device='cuda')");
    return t;
  }();
  return table;
}

}  // namespace

const Loader& loader(const std::string& name) {
  auto it = loaders().find(name);
  if (it == loaders().end()) fail(Status::internal, "no loader '" + name + "'");
  return *it->second;
}

fs::path cache_root() {
  if (const char* env = std::getenv("RESNET_DEPLOY_CACHE"); env && *env) return env;
  if (const char* xdg = std::getenv("XDG_CACHE_HOME"); xdg && *xdg) return fs::path(xdg) / "resnet-deploy";
  if (const char* home = std::getenv("HOME"); home && *home) return fs::path(home) / ".cache" / "resnet-deploy";
  passwd pw{}, *found = nullptr;
  std::vector<char> buf(16384);
  std::string home = getpwuid_r(getuid(), &pw, buf.data(), buf.size(), &found) == 0 && found ? pw.pw_dir : "/";
  return fs::path(home) / ".cache" / "resnet-deploy";
}

}  // namespace rd
