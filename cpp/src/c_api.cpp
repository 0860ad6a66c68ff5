// The C API: every function catches everything and turns it into a status and a thread-local message.
#include <map>
#include <new>
#include <string>
#include <vector>

#include "predictor.h"
#include "registry.h"
#include "resnet_deploy/resnet_deploy.h"

struct rd_preprocessor {
  rd::Preprocess pre;
};

struct rd_predictor {
  std::unique_ptr<rd::Predictor> predictor;
  rd_preprocessor pre;
  std::map<std::string, std::string> facts;  // describe(), fixed once loaded
  std::string facts_json;
};

namespace {

thread_local std::string last_error;

void set_error(const char* message) noexcept {
  try {
    last_error = message;
  } catch (...) {  // no memory for the message: keep the old one rather than fail here
  }
}

template <class F>
rd_status guarded(F&& body) noexcept {
  try {
    body();
    return RD_OK;
  } catch (const rd::Error& e) {
    set_error(e.what());
    return static_cast<rd_status>(e.status());
  } catch (const std::bad_alloc&) {
    set_error("out of memory");
    return RD_ERROR_MEMORY;
  } catch (const std::exception& e) {
    set_error(rd::first_line(e.what()).c_str());
    return RD_ERROR_INTERNAL;
  } catch (...) {
    set_error("unknown error");
    return RD_ERROR_INTERNAL;
  }
}

void need(bool ok, const char* what) {
  if (!ok) rd::fail(rd::Status::argument, what);
}

void check_out(const rd::Preprocess& pre, const float* out, std::size_t out_len) {
  need(out != nullptr, "out is NULL");
  if (out_len != pre.tensor_size())
    rd::fail(rd::Status::argument, "out holds " + std::to_string(out_len) + " floats; the input tensor has " +
                                       std::to_string(pre.tensor_size()) + " (C x H x W)");
}

// Preprocessed input of one image, reused by the thread's next call.
std::vector<float>& scratch(std::size_t n) {
  thread_local std::vector<float> buffer;
  buffer.resize(n);
  return buffer;
}

void classify(rd_predictor* p, const std::vector<float>& x, rd_class_score* top, std::size_t k, std::size_t* written,
              float* logits, std::size_t logits_len) {
  const std::size_t classes = p->predictor->num_classes();
  need(top != nullptr && k >= 1, "top must hold at least one rd_class_score (k >= 1)");
  if (logits != nullptr && logits_len != classes)
    rd::fail(rd::Status::argument, "logits holds " + std::to_string(logits_len) + " floats; the model has " +
                                       std::to_string(classes) + " classes");
  thread_local std::vector<float> out;
  out.resize(classes);
  p->predictor->run(x.data(), 1, out.data());
  auto best = p->predictor->top(out.data(), k);
  for (std::size_t i = 0; i < best.size(); ++i) top[i] = {best[i].class_id, best[i].score};
  if (written) *written = best.size();
  if (logits) std::copy(out.begin(), out.end(), logits);
}

}  // namespace

extern "C" {

const char* rd_last_error(void) { return last_error.c_str(); }

const char* rd_version(void) { return "0.1.0"; }

const char* rd_registry_json(void) {
  static std::string json;
  static rd_status status = guarded([] { json = rd::registry_json(); });
  return status == RD_OK ? json.c_str() : "{}";
}

rd_status rd_preprocessor_create(const char* preprocess_json, rd_preprocessor** out) {
  return guarded([&] {
    need(preprocess_json != nullptr && out != nullptr, "preprocess_json and out must not be NULL");
    *out = nullptr;
    rd::Json d = rd::parse_manifest_text(preprocess_json, "preprocess");
    *out = new rd_preprocessor{rd::Preprocess::from_json(d)};
  });
}

void rd_preprocessor_destroy(rd_preprocessor* pre) { delete pre; }

rd_status rd_preprocessor_shape(const rd_preprocessor* pre, int32_t* channels, int32_t* height, int32_t* width) {
  return guarded([&] {
    need(pre != nullptr, "preprocessor is NULL");
    if (channels) *channels = pre->pre.channels();
    if (height) *height = pre->pre.height();
    if (width) *width = pre->pre.width();
  });
}

rd_status rd_preprocess_encoded(const rd_preprocessor* pre, const uint8_t* data, size_t size, float* out,
                                size_t out_len) {
  return guarded([&] {
    need(pre != nullptr, "preprocessor is NULL");
    check_out(pre->pre, out, out_len);
    need(data != nullptr || size == 0, "data is NULL");
    pre->pre.encoded(data, size, out);
  });
}

rd_status rd_preprocess_pixels(const rd_preprocessor* pre, const uint8_t* pixels, int32_t height, int32_t width,
                               int32_t channels, size_t stride, float* out, size_t out_len) {
  return guarded([&] {
    need(pre != nullptr, "preprocessor is NULL");
    check_out(pre->pre, out, out_len);
    pre->pre.pixels(pixels, height, width, channels, stride, out);
  });
}

rd_status rd_predictor_create(const char* bundle_dir, const rd_options* options, rd_predictor** out) {
  return guarded([&] {
    need(bundle_dir != nullptr && out != nullptr, "bundle_dir and out must not be NULL");
    *out = nullptr;
    std::string variant = options && options->variant ? options->variant : "auto";
    std::optional<int> threads;
    if (options && options->threads != 0) {
      if (options->threads < 0)
        rd::fail(rd::Status::argument,
                 "threads must be 0 (one per core) or a positive integer, found " + std::to_string(options->threads));
      threads = options->threads;
    }
    std::optional<rd::fs::path> cache;
    if (options && options->cache_dir) cache = rd::fs::path(options->cache_dir);
    auto predictor = rd::Predictor::open(bundle_dir, variant, threads, cache);
    rd::Preprocess pre = predictor->manifest().preprocess;
    auto facts = predictor->describe();
    std::string json = rd::Json(facts).dump();
    *out = new rd_predictor{std::move(predictor), rd_preprocessor{std::move(pre)}, std::move(facts), std::move(json)};
  });
}

void rd_predictor_destroy(rd_predictor* predictor) { delete predictor; }

rd_status rd_predictor_info(const rd_predictor* p, rd_info* out) {
  return guarded([&] {
    need(p != nullptr && out != nullptr, "predictor and out must not be NULL");
    const auto& m = p->predictor->manifest();
    out->variant = p->predictor->variant().c_str();
    out->why = p->predictor->why().c_str();
    out->arch = m.arch.c_str();
    out->num_classes = static_cast<int32_t>(m.classes.size());
    out->channels = m.preprocess.channels();
    out->height = m.preprocess.height();
    out->width = m.preprocess.width();
    out->max_batch = static_cast<int32_t>(m.batch[2]);
  });
}

const char* rd_predictor_label(const rd_predictor* p, int32_t class_id) {
  if (p == nullptr || class_id < 0 || static_cast<std::size_t>(class_id) >= p->predictor->num_classes()) return nullptr;
  return p->predictor->manifest().classes[static_cast<std::size_t>(class_id)].c_str();
}

const char* rd_predictor_describe(const rd_predictor* p, const char* key) {
  if (p == nullptr) return nullptr;
  if (key == nullptr) return p->facts_json.c_str();
  try {
    auto it = p->facts.find(key);
    return it == p->facts.end() ? nullptr : it->second.c_str();
  } catch (...) {  // no memory for the key's string
    return nullptr;
  }
}

const rd_preprocessor* rd_predictor_preprocessor(const rd_predictor* p) { return p ? &p->pre : nullptr; }

rd_status rd_predictor_run(rd_predictor* p, const float* input, size_t input_len, size_t batch, float* logits,
                           size_t logits_len) {
  return guarded([&] {
    need(p != nullptr, "predictor is NULL");
    const std::size_t chw = p->pre.pre.tensor_size(), k = p->predictor->num_classes();
    need(batch == 0 || (input != nullptr && logits != nullptr), "input and logits must not be NULL");
    if (input_len != batch * chw || logits_len != batch * k)
      rd::fail(rd::Status::argument, "a batch of " + std::to_string(batch) + " needs input of " +
                                         std::to_string(batch * chw) + " floats and logits of " +
                                         std::to_string(batch * k) + "; found " + std::to_string(input_len) + " and " +
                                         std::to_string(logits_len));
    p->predictor->run(input, batch, logits);
  });
}

rd_status rd_classify_encoded(rd_predictor* p, const uint8_t* data, size_t size, rd_class_score* top, size_t k,
                              size_t* written, float* logits, size_t logits_len) {
  return guarded([&] {
    need(p != nullptr, "predictor is NULL");
    need(data != nullptr || size == 0, "data is NULL");
    auto& x = scratch(p->pre.pre.tensor_size());
    p->pre.pre.encoded(data, size, x.data());
    classify(p, x, top, k, written, logits, logits_len);
  });
}

rd_status rd_classify_pixels(rd_predictor* p, const uint8_t* pixels, int32_t height, int32_t width, int32_t channels,
                             size_t stride, rd_class_score* top, size_t k, size_t* written, float* logits,
                             size_t logits_len) {
  return guarded([&] {
    need(p != nullptr, "predictor is NULL");
    auto& x = scratch(p->pre.pre.tensor_size());
    p->pre.pre.pixels(pixels, height, width, channels, stride, x.data());
    classify(p, x, top, k, written, logits, logits_len);
  });
}

rd_status rd_manifest_check(const char* bundle_dir) {
  return guarded([&] {
    need(bundle_dir != nullptr, "bundle_dir is NULL");
    rd::read_manifest(bundle_dir);
  });
}

rd_status rd_manifest_check_json(const char* manifest_json, size_t size) {
  return guarded([&] {
    need(manifest_json != nullptr, "manifest_json is NULL");
    rd::Manifest::from_json(rd::parse_manifest_text(std::string(manifest_json, size), rd::kManifestName));
  });
}

}  // extern "C"
