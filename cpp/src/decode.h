// PNG and JPEG decoding as PIL decodes them (PngImagePlugin, JpegImagePlugin with libjpeg's defaults), converted to
// "L" or "RGB" as PIL's convert() does, and raw pixels taken as Preprocess takes a numpy array.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>

#include "image.h"

namespace rd {

// Decoded pixels (width x height) of one image and either side (runtime/preprocess.py's limits).
constexpr std::int64_t kMaxImagePixels = 24000000;
constexpr std::int64_t kMaxImageSide = 65535;

// Refuse (Status::image) an image of w x h before anything is decoded; `what` starts the message ("image ... is ").
void check_pixels(std::int64_t w, std::int64_t h, const std::string& what);
// "24,000,000": Python's f"{n:,}".
std::string with_commas(std::int64_t n);

// An encoded PNG or JPEG image -> 8-bit pixels with `channels` (1 or 3). Status::image with one line otherwise.
Image decode_image(const std::uint8_t* data, std::size_t size, int channels);
// Raw pixels (1, 3 or 4 channels, rows `stride` bytes apart) -> `channels` (1 or 3); 4 is RGBA, whose alpha is dropped.
Image from_pixels(const std::uint8_t* pixels, int height, int width, int channels, std::size_t stride, int target);

}  // namespace rd
