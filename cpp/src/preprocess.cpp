#include "preprocess.h"

#include <cmath>
#include <string>

#include "decode.h"
#include "resample.h"

namespace rd {
namespace {

// _freeze: numbers, or lists of them nested at most 3 deep; each a finite number.
void check_mean_values(const Json& v, const std::string& field, int depth) {
  if (v.is_array()) {
    fields::need(depth < 3, field, "numbers or lists of numbers nested at most 3 deep", v);
    for (std::size_t i = 0; i < v.size(); ++i)
      check_mean_values(v[i], field + "[" + std::to_string(i) + "]", depth + 1);
    return;
  }
  fields::number(v, field);
}

// numpy's shape of a nested list, or nothing when it is ragged (np.asarray refuses it).
std::optional<std::vector<std::size_t>> shape_of(const Json& v) {
  if (!v.is_array()) return std::vector<std::size_t>{};
  std::optional<std::vector<std::size_t>> inner;
  for (const auto& x : v) {
    auto s = shape_of(x);
    if (!s || (inner && *inner != *s)) return std::nullopt;
    inner = s;
  }
  std::vector<std::size_t> out{v.size()};
  if (inner) out.insert(out.end(), inner->begin(), inner->end());
  return out;
}

std::string shape_text(const std::vector<std::size_t>& s) {  // Python's repr of a shape tuple
  std::string out = "(";
  for (std::size_t i = 0; i < s.size(); ++i) out += (i ? ", " : "") + std::to_string(s[i]);
  return out + (s.size() == 1 ? ",)" : ")");
}

void flatten(const Json& v, std::vector<float>& out) {
  if (v.is_array()) {
    for (const auto& x : v) flatten(x, out);
  } else {
    out.push_back(static_cast<float>(v.get<double>()));  // np.asarray(mean, dtype=np.float32)
  }
}

// torchvision's resize with an int: the shorter side becomes `target`, the longer one int(target * long / short).
std::pair<std::int64_t, std::int64_t> shorter_to(std::int64_t w, std::int64_t h, std::int64_t target) {
  bool wide = w > h;
  std::int64_t s = wide ? h : w, l = wide ? w : h;
  auto new_long = static_cast<std::int64_t>(static_cast<double>(target * l) / static_cast<double>(s));
  return wide ? std::make_pair(new_long, target) : std::make_pair(target, new_long);
}

// Python's int(round(x)) for the halves of centre crops: round half to even.
int round_half_even(double x) { return static_cast<int>(std::nearbyint(x)); }

Image center_crop(const Image& im, int size) {
  if (im.width < size || im.height < size)
    fail(Status::image, "image of " + std::to_string(im.width) + "x" + std::to_string(im.height) +
                            " is smaller than the " + std::to_string(size) + "x" + std::to_string(size) +
                            " centre crop");
  int top = round_half_even((im.height - size) / 2.0), left = round_half_even((im.width - size) / 2.0);
  return crop(im, left, top, size, size);
}

Image resize_and_crop(const Image& im, std::optional<int> resize, std::optional<int> crop_size) {
  if (!resize || std::min(im.width, im.height) == *resize) return crop_size ? center_crop(im, *crop_size) : im;
  auto [new_w, new_h] = shorter_to(im.width, im.height, *resize);
  if (!crop_size || new_w * new_h <= kMaxImagePixels) {
    if (new_w * new_h > kMaxImagePixels)
      fail(Status::image, "image of " + std::to_string(im.width) + "x" + std::to_string(im.height) +
                              " would be resized to " + std::to_string(new_w) + "x" + std::to_string(new_h) +
                              ", over the limit of " + with_commas(kMaxImagePixels) +
                              " pixels; crop it to a less elongated shape first");
    Image resized = resize_bilinear(im, static_cast<int>(new_w), static_cast<int>(new_h));
    return crop_size ? center_crop(resized, *crop_size) : resized;
  }
  // A very elongated image: resample only the part the crop keeps, as Python does with PIL's resize(box=...).
  int c = *crop_size;
  int top = round_half_even(static_cast<double>(new_h - c) / 2.0);
  int left = round_half_even(static_cast<double>(new_w - c) / 2.0);
  double sx = static_cast<double>(im.width) / static_cast<double>(new_w);
  double sy = static_cast<double>(im.height) / static_cast<double>(new_h);
  std::array<float, 4> box{static_cast<float>(left * sx), static_cast<float>(top * sy),
                           static_cast<float>((left + c) * sx), static_cast<float>((top + c) * sy)};
  return resize_bilinear(im, c, c, &box);
}

}  // namespace

Preprocess Preprocess::from_json(const Json& d) {
  using namespace fields;
  mapping(d, "preprocess");
  const Json& size = items(get(d, "input_size", "preprocess.input_size"), "preprocess.input_size", 2, 2);
  const Json& channels = get(d, "channels", "preprocess.channels");
  bool one = py_equal(channels, Json(1));
  if (d.contains("channel_order")) {
    std::vector<std::string> order{one ? "L" : "RGB"};
    string(d["channel_order"], "preprocess.channel_order", &order);
  }
  if (d.contains("interpolation")) {
    std::vector<std::string> bilinear{"bilinear"};
    string(d["interpolation"], "preprocess.interpolation", &bilinear);
  }
  if (d.contains("scale")) number(d["scale"], "preprocess.scale", 1 / 255.0 - 1e-9, 1 / 255.0 + 1e-9);
  const Json& stds = items(get(d, "std", "preprocess.std"), "preprocess.std", 1, 3);
  const Json& mean = get(d, "mean", "preprocess.mean");
  check_mean_values(mean, "preprocess.mean", 0);
  // __post_init__
  Preprocess p;
  need(
      (channels.is_number() || channels.is_boolean()) && !channels.is_boolean() && (one || py_equal(channels, Json(3))),
      "preprocess.channels", "1 or 3", channels);
  p.channels_ = one ? 1 : 3;
  p.height_ = static_cast<int>(integer(size[0], "preprocess.input_size[0]", 1, kMaxSide));
  p.width_ = static_cast<int>(integer(size[1], "preprocess.input_size[1]", 1, kMaxSide));
  for (const char* name : {"resize", "crop"}) {
    auto it = d.find(name);
    if (it != d.end() && !it->is_null()) {
      int v = static_cast<int>(integer(*it, std::string("preprocess.") + name, 1, kMaxSide));
      (std::string(name) == "resize" ? p.resize_ : p.crop_) = v;
    }
  }
  if (p.resize_ && p.crop_)
    need(*p.crop_ <= *p.resize_, "preprocess.crop", "at most resize (" + std::to_string(*p.resize_) + ")",
         *d.find("crop"));
  if (stds.size() != static_cast<std::size_t>(p.channels_))  // Python holds std as a tuple by then
    throw FieldError("preprocess.std must be " + std::to_string(p.channels_) + " number(s), found " +
                     quote_tuple(stds));
  for (std::size_t i = 0; i < stds.size(); ++i)
    p.std_.push_back(static_cast<float>(number(stds[i], "preprocess.std[" + std::to_string(i) + "]", {}, {}, 0.0)));
  auto shape = shape_of(mean);
  std::vector<std::size_t> per_channel{static_cast<std::size_t>(p.channels_)};
  std::vector<std::size_t> per_pixel{static_cast<std::size_t>(p.channels_), static_cast<std::size_t>(p.height_),
                                     static_cast<std::size_t>(p.width_)};
  std::string want = std::to_string(p.channels_) + " number(s) or a " + std::to_string(p.channels_) + " x " +
                     std::to_string(p.height_) + " x " + std::to_string(p.width_) + " mean image";
  if (!shape) throw FieldError("preprocess.mean must be " + want + ", found " + quote_tuple(mean));
  need(*shape == per_channel || *shape == per_pixel, "preprocess.mean", want, Json("shape " + shape_text(*shape)));
  p.per_pixel_mean_ = *shape == per_pixel;
  flatten(mean, p.mean_);
  return p;
}

void Preprocess::image(const Image& im, float* out) const {
  Image x = resize_and_crop(im, resize_, crop_);
  if (x.width != width_ || x.height != height_) x = resize_bilinear(x, width_, height_);
  const std::size_t plane = static_cast<std::size_t>(height_) * static_cast<std::size_t>(width_);
  for (int c = 0; c < channels_; ++c) {
    const float s = std_[static_cast<std::size_t>(c)];
    float* dst = out + static_cast<std::size_t>(c) * plane;
    const float* m = per_pixel_mean_ ? mean_.data() + static_cast<std::size_t>(c) * plane : nullptr;
    const float m0 = per_pixel_mean_ ? 0.0f : mean_[static_cast<std::size_t>(c)];
    for (std::size_t i = 0; i < plane; ++i) {
      // float32 arithmetic in numpy's order: x / 255, minus the mean, divided by std (no reciprocal, no fusing)
      float v =
          static_cast<float>(x.data[i * static_cast<std::size_t>(channels_) + static_cast<std::size_t>(c)]) / 255.0f;
      dst[i] = (v - (m ? m[i] : m0)) / s;
    }
  }
}

void Preprocess::encoded(const std::uint8_t* data, std::size_t size, float* out) const {
  image(decode_image(data, size, channels_), out);
}

void Preprocess::pixels(const std::uint8_t* px, int height, int width, int channels, std::size_t stride,
                        float* out) const {
  image(from_pixels(px, height, width, channels, stride, channels_), out);
}

}  // namespace rd
