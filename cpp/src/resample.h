// PIL's Image.resize(size, BILINEAR, box) and Image.crop for 8-bit "L" and "RGB" images: the antialiased separable
// filter of Pillow's Resample.c with its 22-bit fixed-point coefficients and rounding, so that the pixels equal PIL's.
#pragma once

#include <array>

#include "image.h"

namespace rd {

// Image.resize((w, h), Image.BILINEAR, box): `box` (left, top, right, bottom) in source pixels, as PIL takes it
// (single-precision floats); the whole image when absent.
Image resize_bilinear(const Image& in, int w, int h, const std::array<float, 4>* box = nullptr);
// Image.crop((left, top, left + w, top + h)) of a box inside the image.
Image crop(const Image& in, int left, int top, int w, int h);

}  // namespace rd
