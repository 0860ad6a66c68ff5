// The bundle's preprocessing, the same function as runtime/preprocess.py's `Preprocess`: decode, convert to the
// model's channels as PIL converts, resize the shorter side with PIL's bilinear filter, centre-crop with torchvision's
// rounding, resize to the input size when still needed, then (x / 255 - mean) / std in float32.
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <vector>

#include "image.h"
#include "json_fields.h"

namespace rd {

constexpr int kMaxSide = 4096;  // the largest input size, resize or crop a spec may ask for

class Preprocess {
 public:
  // Preprocess.from_dict + __post_init__: every field checked, FieldError naming `preprocess.<field>`.
  static Preprocess from_json(const Json& d);

  int channels() const { return channels_; }
  int height() const { return height_; }
  int width() const { return width_; }
  std::size_t tensor_size() const {
    return static_cast<std::size_t>(channels_) * static_cast<std::size_t>(height_) * static_cast<std::size_t>(width_);
  }

  // Encoded PNG/JPEG bytes -> float32 (C, H, W) into out[tensor_size()].
  void encoded(const std::uint8_t* data, std::size_t size, float* out) const;
  // Raw uint8 pixels (1, 3 or 4 channels) -> float32 (C, H, W).
  void pixels(const std::uint8_t* px, int height, int width, int channels, std::size_t stride, float* out) const;
  // An image already in the model's channels -> float32 (C, H, W) (resize, crop, normalise).
  void image(const Image& im, float* out) const;

 private:
  int channels_ = 3, height_ = 0, width_ = 0;
  std::optional<int> resize_, crop_;
  std::vector<float> mean_;  // C values, or C x H x W
  std::vector<float> std_;
  bool per_pixel_mean_ = false;
};

}  // namespace rd
