// A bundle's model on one variant, as runtime/predictor.py's Predictor: the manifest read and checked, the variant
// chosen by name or as `auto` orders them on a CPU, the file verified and loaded, images preprocessed by the
// manifest's Preprocess. Thread-safe: one Predictor is shared by every thread.
#pragma once

#include <filesystem>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "backend.h"
#include "manifest.h"

namespace rd {

struct ClassScore {
  int class_id;
  float score;
};

// (variant name, why) chosen for `request` ("auto" or a variant name) among those this SDK can run here;
// Status::backend naming every refusal otherwise (predictor.choose_backend).
std::pair<std::string, std::string> choose_variant(const fs::path& bundle, const Manifest& m,
                                                   const std::string& request);
// The order `auto` tries on this CPU, and why (predictor._candidates for device "cpu").
std::pair<std::vector<std::string>, std::string> auto_candidates(const fs::path& bundle);

class Predictor {
 public:
  // `cache`: nothing for the default cache root, an empty path for no cache, else the root to use.
  static std::unique_ptr<Predictor> open(const fs::path& bundle, const std::string& variant = "auto",
                                         std::optional<int> threads = std::nullopt,
                                         std::optional<fs::path> cache = std::nullopt);

  const Manifest& manifest() const { return manifest_; }
  const std::string& variant() const { return variant_; }
  const std::string& why() const { return why_; }
  std::size_t num_classes() const { return manifest_.classes.size(); }
  std::size_t max_batch() const { return static_cast<std::size_t>(manifest_.batch[2]); }
  std::map<std::string, std::string> describe() const { return backend_->describe(); }

  // float32 (n, C, H, W) -> logits (n, K), split into the manifest's batch range; NaN or Inf input is refused.
  void run(const float* input, std::size_t n, float* logits) const;
  // The k best classes by softmax (float64, ties to the lower id), best first.
  std::vector<ClassScore> top(const float* logits, std::size_t k) const;

 private:
  Manifest manifest_;
  std::string variant_, why_;
  std::unique_ptr<Backend> backend_;
};

}  // namespace rd
