// Pillow's bilinear resampling (Resample.c), written from its description: per output pixel, the source pixels under
// a triangle filter stretched by the scale (antialiasing when shrinking), weights normalised to sum 1, turned into
// integers of 22 fractional bits (rounded half away from zero), applied to the 8-bit values with a half added before
// the shift, and clamped to 0..255. Horizontal pass first (only over the rows the vertical pass reads), then vertical.
#include "resample.h"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <vector>

#include "error.h"

namespace rd {
namespace {

constexpr int kPrecisionBits = 32 - 8 - 2;

struct Coefficients {
  int ksize = 0;
  std::vector<int> bounds;            // per output pixel: first source index, count
  std::vector<std::int32_t> weights;  // per output pixel: ksize weights
};

double triangle(double x) {
  if (x < 0.0) x = -x;
  return x < 1.0 ? 1.0 - x : 0.0;
}

// precompute_coeffs + normalize_coeffs_8bpc for one axis: `in_size` source pixels, the box [in0, in1) of them (floats,
// as PIL passes the box), `out_size` output pixels.
Coefficients coefficients(int in_size, float in0, float in1, int out_size) {
  Coefficients c;
  double scale = static_cast<double>(in1 - in0) / out_size;  // the float difference, as in PIL
  double filterscale = scale < 1.0 ? 1.0 : scale;
  double support = 1.0 * filterscale;
  c.ksize = static_cast<int>(std::ceil(support)) * 2 + 1;
  c.bounds.resize(static_cast<std::size_t>(out_size) * 2);
  c.weights.assign(static_cast<std::size_t>(out_size) * static_cast<std::size_t>(c.ksize), 0);
  std::vector<double> k(static_cast<std::size_t>(c.ksize));
  for (int xx = 0; xx < out_size; ++xx) {
    double center = in0 + (xx + 0.5) * scale;
    double ww = 0.0, ss = 1.0 / filterscale;
    int xmin = static_cast<int>(center - support + 0.5);
    if (xmin < 0) xmin = 0;
    int xmax = static_cast<int>(center + support + 0.5);
    if (xmax > in_size) xmax = in_size;
    xmax -= xmin;
    std::fill(k.begin(), k.end(), 0.0);
    for (int x = 0; x < xmax; ++x) {
      double w = triangle((x + xmin - center + 0.5) * ss);
      k[static_cast<std::size_t>(x)] = w;
      ww += w;
    }
    std::int32_t* out = c.weights.data() + static_cast<std::size_t>(xx) * static_cast<std::size_t>(c.ksize);
    for (int x = 0; x < c.ksize; ++x) {
      double v = k[static_cast<std::size_t>(x)];
      if (x < xmax && ww != 0.0) v /= ww;
      v *= (1 << kPrecisionBits);
      out[x] = static_cast<std::int32_t>(v < 0 ? -0.5 + v : 0.5 + v);
    }
    c.bounds[static_cast<std::size_t>(xx) * 2] = xmin;
    c.bounds[static_cast<std::size_t>(xx) * 2 + 1] = xmax;
  }
  return c;
}

inline std::uint8_t clip8(std::int32_t v) {
  v >>= kPrecisionBits;  // arithmetic shift, as PIL's lookup index
  return static_cast<std::uint8_t>(v < 0 ? 0 : v > 255 ? 255 : v);
}

// Rows [first, first + out.height) of `in` resampled horizontally into `out`: the channels of a pixel summed in one
// loop, as PIL does (the integer sums are the same in any order).
template <int Ch>
void horizontal_n(const Image& in, int first, const Coefficients& c, Image& out) {
  for (int yy = 0; yy < out.height; ++yy) {
    const std::uint8_t* src = in.row(yy + first);
    std::uint8_t* dst = out.row(yy);
    for (int xx = 0; xx < out.width; ++xx) {
      const int xmin = c.bounds[static_cast<std::size_t>(xx) * 2];
      const int xmax = c.bounds[static_cast<std::size_t>(xx) * 2 + 1];
      const std::int32_t* k = c.weights.data() + static_cast<std::size_t>(xx) * static_cast<std::size_t>(c.ksize);
      const std::uint8_t* p = src + static_cast<std::size_t>(xmin) * Ch;
      std::int32_t ss[Ch];
      for (int b = 0; b < Ch; ++b) ss[b] = 1 << (kPrecisionBits - 1);
      for (int x = 0; x < xmax; ++x, p += Ch)
        for (int b = 0; b < Ch; ++b) ss[b] += p[b] * k[x];
      for (int b = 0; b < Ch; ++b) dst[static_cast<std::size_t>(xx) * Ch + static_cast<std::size_t>(b)] = clip8(ss[b]);
    }
  }
}

void horizontal(const Image& in, int first, const Coefficients& c, Image& out) {
  if (in.channels == 1) return horizontal_n<1>(in, first, c, out);
  if (in.channels == 3) return horizontal_n<3>(in, first, c, out);
  fail(Status::internal, "resampling supports 1 or 3 channels");
}

void vertical(const Image& in, const Coefficients& c, Image& out) {
  const std::size_t rb = in.row_bytes();
  std::vector<std::int32_t> acc(rb);
  for (int yy = 0; yy < out.height; ++yy) {
    int ymin = c.bounds[static_cast<std::size_t>(yy) * 2], ymax = c.bounds[static_cast<std::size_t>(yy) * 2 + 1];
    const std::int32_t* k = c.weights.data() + static_cast<std::size_t>(yy) * static_cast<std::size_t>(c.ksize);
    std::fill(acc.begin(), acc.end(), 1 << (kPrecisionBits - 1));
    for (int y = 0; y < ymax; ++y) {  // the same sums as PIL's, in the same order, one source row at a time
      const std::uint8_t* src = in.row(y + ymin);
      const std::int32_t w = k[y];
      for (std::size_t i = 0; i < rb; ++i) acc[i] += src[i] * w;
    }
    std::uint8_t* dst = out.row(yy);
    for (std::size_t i = 0; i < rb; ++i) dst[i] = clip8(acc[i]);
  }
}

}  // namespace

Image crop(const Image& in, int left, int top, int w, int h) {
  if (left < 0 || top < 0 || w < 0 || h < 0 || left + w > in.width || top + h > in.height)
    fail(Status::internal, "crop box outside the image");
  Image out(w, h, in.channels);
  for (int y = 0; y < h; ++y)
    std::memcpy(out.row(y), in.row(top + y) + static_cast<std::size_t>(left) * static_cast<std::size_t>(in.channels),
                out.row_bytes());
  return out;
}

Image resize_bilinear(const Image& in, int w, int h, const std::array<float, 4>* box_in) {
  std::array<float, 4> box =
      box_in ? *box_in : std::array<float, 4>{0.f, 0.f, static_cast<float>(in.width), static_cast<float>(in.height)};
  // Image.resize: the same size and the whole image is a copy.
  if (!box_in && w == in.width && h == in.height) return in;
  // _imaging.c's resize: a box at whole pixels of exactly the output size is a crop.
  if (box[0] - static_cast<float>(static_cast<int>(box[0])) == 0 && box[2] - box[0] == static_cast<float>(w) &&
      box[1] - static_cast<float>(static_cast<int>(box[1])) == 0 && box[3] - box[1] == static_cast<float>(h))
    return crop(in, static_cast<int>(box[0]), static_cast<int>(box[1]), w, h);
  // ImagingResampleInner
  bool need_horizontal = w != in.width || box[0] != 0 || box[2] != static_cast<float>(w);
  bool need_vertical = h != in.height || box[1] != 0 || box[3] != static_cast<float>(h);
  Coefficients vert = coefficients(in.height, box[1], box[3], h);
  // Pillow 13 runs the vertical pass first when the height shrinks by more than twice as many pixels as the width
  // (found by comparing both orders with PIL's output; the two orders round differently).
  bool vertical_first =
      need_horizontal && need_vertical &&
      h<in.height&& static_cast<std::int64_t>(in.height) - h> 2 * (static_cast<std::int64_t>(in.width) - w);
  if (vertical_first) {
    Image temp(in.width, h, in.channels);
    vertical(in, vert, temp);
    Image out(w, h, in.channels);
    horizontal(temp, 0, coefficients(in.width, box[0], box[2], w), out);
    return out;
  }
  int first = vert.bounds[0];
  int last = vert.bounds[static_cast<std::size_t>(h) * 2 - 2] + vert.bounds[static_cast<std::size_t>(h) * 2 - 1];
  Image temp;
  const Image* src = &in;
  if (need_horizontal) {
    Coefficients horiz = coefficients(in.width, box[0], box[2], w);
    for (int i = 0; i < h; ++i) vert.bounds[static_cast<std::size_t>(i) * 2] -= first;
    temp = Image(w, last - first, in.channels);
    horizontal(in, first, horiz, temp);
    src = &temp;
  }
  if (need_vertical) {
    Image out(src->width, h, in.channels);
    vertical(*src, vert, out);
    return out;
  }
  return src == &temp ? std::move(temp) : in;
}

}  // namespace rd
