// resnet_deploy C++ API: a header-only wrapper over the C API (resnet_deploy.h), with RAII handles and exceptions.
//
//   resnet_deploy::Predictor p("bundles/demo");                 // auto variant; or {"ov-int8", 2 threads}
//   auto r = p.classify(resnet_deploy::read_file("shoe.png"), 3);  // encoded PNG/JPEG bytes, or p.classify_pixels
//   std::cout << r.label << " " << r.score << "\n";
//
// Every failure is a resnet_deploy::Error whose what() is the one-line message and status() the rd_status.
#pragma once

#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <memory>
#include <optional>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

#include "resnet_deploy.h"

namespace resnet_deploy {

class Error : public std::runtime_error {
 public:
  Error(rd_status status, const std::string& message) : std::runtime_error(message), status_(status) {}
  rd_status status() const noexcept { return status_; }

 private:
  rd_status status_;
};

inline void check(rd_status status) {
  if (status != RD_OK) throw Error(status, rd_last_error());
}

// The bytes of a file (an image to classify), read in one piece.
inline std::vector<std::uint8_t> read_file(const std::string& path) {
  std::error_code ec;
  if (!std::filesystem::is_regular_file(path, ec)) throw Error(RD_ERROR_ARGUMENT, "image not found: " + path);
  std::ifstream in(path, std::ios::binary | std::ios::ate);
  const std::streamoff size = in ? static_cast<std::streamoff>(in.tellg()) : -1;
  std::vector<std::uint8_t> data(size > 0 ? static_cast<std::size_t>(size) : 0);
  in.seekg(0);
  if (size < 0 || !in.read(reinterpret_cast<char*>(data.data()), static_cast<std::streamsize>(data.size())))
    throw Error(RD_ERROR_ARGUMENT, "image could not be read: " + path);
  return data;
}

struct ClassScore {
  int class_id;
  std::string label;
  float score;
};

// A JSON string literal of `s` (control characters, quotes and backslashes escaped).
inline std::string json_string(const std::string& s) {
  std::string out = "\"";
  char esc[8];
  for (unsigned char c : s) {
    if (c >= 0x20 && c != '"' && c != '\\') {
      out += static_cast<char>(c);
    } else {
      std::snprintf(esc, sizeof esc, "\\u%04x", c);
      out += esc;
    }
  }
  return out + "\"";
}

struct Result {
  int class_id = -1;
  std::string label;
  float score = 0;
  std::vector<ClassScore> topk;  // best first
  std::vector<float> logits;     // every class

  // {"class_id": .., "label": .., "score": .., "topk": [{"class_id", "label", "score"}, ...], "logits": [...]}, with
  // floats written so that they read back exactly.
  std::string to_json() const {
    char num[32];
    auto number = [&](double v) {
      return std::string(num, static_cast<std::size_t>(std::snprintf(num, sizeof num, "%.9g", v)));
    };
    std::string top, all;
    for (const auto& c : topk)
      top += std::string(top.empty() ? "" : ", ") + "{\"class_id\": " + std::to_string(c.class_id) +
             ", \"label\": " + json_string(c.label) + ", \"score\": " + number(c.score) + "}";
    for (float v : logits) all += (all.empty() ? "" : ", ") + number(v);
    return "{\"class_id\": " + std::to_string(class_id) + ", \"label\": " + json_string(label) +
           ", \"score\": " + number(score) + ", \"topk\": [" + top + "], \"logits\": [" + all + "]}";
  }
};

struct Options {
  Options(std::string variant_ = "auto", int threads_ = 0, std::optional<std::string> cache_dir_ = std::nullopt)
      : variant(std::move(variant_)), threads(threads_), cache_dir(std::move(cache_dir_)) {}
  std::string variant;                   // "auto" or a variant name (ov-fp32, ov-int8, ov-bf16)
  int threads;                           // 0: one per core
  std::optional<std::string> cache_dir;  // compiled-model cache root; none: the default, "": off
};

// The bundle's preprocessing alone: images -> the model's float32 (C, H, W) input.
class Preprocessor {
 public:
  explicit Preprocessor(const std::string& preprocess_json) {
    rd_preprocessor* p = nullptr;
    check(rd_preprocessor_create(preprocess_json.c_str(), &p));
    owned_.reset(p);
    handle_ = p;
  }
  std::vector<float> encoded(const std::vector<std::uint8_t>& data) const {
    std::vector<float> out(size());
    check(rd_preprocess_encoded(handle_, data.data(), data.size(), out.data(), out.size()));
    return out;
  }
  std::vector<float> pixels(const std::uint8_t* px, int height, int width, int channels, std::size_t stride = 0) const {
    std::vector<float> out(size());
    check(rd_preprocess_pixels(handle_, px, height, width, channels, stride, out.data(), out.size()));
    return out;
  }
  std::size_t size() const {
    int32_t c = 0, h = 0, w = 0;
    check(rd_preprocessor_shape(handle_, &c, &h, &w));
    return static_cast<std::size_t>(c) * static_cast<std::size_t>(h) * static_cast<std::size_t>(w);
  }

 private:
  friend class Predictor;
  explicit Preprocessor(const rd_preprocessor* borrowed) : handle_(borrowed) {}
  struct Destroy {
    void operator()(rd_preprocessor* p) const noexcept { rd_preprocessor_destroy(p); }
  };
  std::unique_ptr<rd_preprocessor, Destroy> owned_;
  const rd_preprocessor* handle_ = nullptr;
};

class Predictor {
 public:
  explicit Predictor(const std::string& bundle, const Options& options = {}) {
    rd_options o{options.variant.c_str(), options.threads, options.cache_dir ? options.cache_dir->c_str() : nullptr};
    rd_predictor* p = nullptr;
    check(rd_predictor_create(bundle.c_str(), &o, &p));
    handle_.reset(p);
    check(rd_predictor_info(p, &info_));
  }

  const rd_info& info() const noexcept { return info_; }
  std::string label(int class_id) const {
    const char* l = rd_predictor_label(handle_.get(), class_id);
    return l ? l : "";
  }
  Preprocessor preprocessor() const { return Preprocessor(rd_predictor_preprocessor(handle_.get())); }
  // One fact about what runs the model (rd_predictor_describe: "cache_use", "cache_warning", ...; "" when unknown).
  std::string describe(const std::string& key) const {
    const char* v = rd_predictor_describe(handle_.get(), key.c_str());
    return v ? v : "";
  }
  // All of them as one JSON object.
  std::string describe() const { return rd_predictor_describe(handle_.get(), nullptr); }

  // An encoded PNG or JPEG image: the k best classes and the logits.
  Result classify(const std::vector<std::uint8_t>& data, std::size_t k = 5) const {
    return finish(k, [&](rd_class_score* top, std::size_t* n, float* logits, std::size_t len) {
      return rd_classify_encoded(handle_.get(), data.data(), data.size(), top, k, n, logits, len);
    });
  }
  // Raw uint8 pixels: 1 (grey), 3 (RGB) or 4 (RGBA) channels interleaved, rows `stride` bytes apart (0: packed).
  Result classify_pixels(const std::uint8_t* px, int height, int width, int channels, std::size_t k = 5,
                         std::size_t stride = 0) const {
    return finish(k, [&](rd_class_score* top, std::size_t* n, float* logits, std::size_t len) {
      return rd_classify_pixels(handle_.get(), px, height, width, channels, stride, top, k, n, logits, len);
    });
  }
  // Logits (batch x classes) of a preprocessed batch (batch x C x H x W).
  std::vector<float> run(const std::vector<float>& input, std::size_t batch) const {
    std::vector<float> logits(batch * static_cast<std::size_t>(info_.num_classes));
    check(rd_predictor_run(handle_.get(), input.data(), input.size(), batch, logits.data(), logits.size()));
    return logits;
  }

 private:
  template <class Call>
  Result finish(std::size_t k, Call call) const {
    std::vector<rd_class_score> top(k == 0 ? 1 : k);
    Result r;
    r.logits.resize(static_cast<std::size_t>(info_.num_classes));
    std::size_t n = 0;
    check(call(top.data(), &n, r.logits.data(), r.logits.size()));
    for (std::size_t i = 0; i < n; ++i) r.topk.push_back({top[i].class_id, label(top[i].class_id), top[i].score});
    r.class_id = r.topk.front().class_id;
    r.label = r.topk.front().label;
    r.score = r.topk.front().score;
    return r;
  }
  struct Destroy {
    void operator()(rd_predictor* p) const noexcept { rd_predictor_destroy(p); }
  };
  std::unique_ptr<rd_predictor, Destroy> handle_;
  rd_info info_{};
};

}  // namespace resnet_deploy
