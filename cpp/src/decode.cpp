// PNG (libpng) and JPEG (libjpeg) decoding with PIL's results.
//
// libpng and libjpeg report errors by longjmp. The functions that call setjmp keep every C++ object they own in
// objects constructed before setjmp (guards and a heap context reached through a pointer), so a longjmp never skips
// a destructor, and the library callbacks hold no C++ objects at all.
#include "decode.h"

#include <jpeglib.h>
#include <png.h>

#include <algorithm>
#include <csetjmp>
#include <cstdio>
#include <cstring>
#include <memory>
#include <vector>

#include "error.h"

namespace rd {

std::string with_commas(std::int64_t n) {
  std::string digits = std::to_string(n < 0 ? -n : n), out;
  for (std::size_t i = 0; i < digits.size(); ++i) {
    if (i && (digits.size() - i) % 3 == 0) out += ',';
    out += digits[i];
  }
  return (n < 0 ? "-" : "") + out;
}

void check_pixels(std::int64_t w, std::int64_t h, const std::string& what) {
  if (w < 1 || h < 1)
    fail(Status::image, what + std::to_string(w) + "x" + std::to_string(h) + " pixels: an image needs at least 1x1");
  if (w * h > kMaxImagePixels || std::max(w, h) > kMaxImageSide)
    fail(Status::image, what + std::to_string(w) + "x" + std::to_string(h) + " = " + with_commas(w * h) +
                            " pixels, over the limit of " + with_commas(kMaxImagePixels) + " pixels and " +
                            with_commas(kMaxImageSide) + " per side; scale it down first");
}

namespace {

// One row of `n` pixels of `in_channels` (1 grey, 2 grey + alpha, 3 RGB, 4 RGBA) -> `out_channels` (1 or 3), as
// PIL's convert("L") / convert("RGB") (Convert.c): grey repeated to RGB, luma from RGB, alpha dropped.
void convert_row(const std::uint8_t* in, int in_channels, std::uint8_t* out, int out_channels, int n) {
  for (int x = 0; x < n; ++x, in += in_channels) {
    if (out_channels == 1) {
      *out++ = in_channels <= 2 ? in[0] : luma(in[0], in[1], in[2]);
    } else if (in_channels <= 2) {
      out[0] = out[1] = out[2] = in[0];
      out += 3;
    } else {
      out[0] = in[0], out[1] = in[1], out[2] = in[2];
      out += 3;
    }
  }
}

// Palette indices -> L or RGB through the PLTE entries; an index past the palette is black, as in PIL.
void palette_row(const std::uint8_t* in, const std::uint8_t (*palette)[3], int entries, std::uint8_t* out,
                 int out_channels, int n) {
  static const std::uint8_t black[3] = {0, 0, 0};
  for (int x = 0; x < n; ++x) {
    const std::uint8_t* rgb = in[x] < entries ? palette[in[x]] : black;
    if (out_channels == 1) {
      *out++ = luma(rgb[0], rgb[1], rgb[2]);
    } else {
      out[0] = rgb[0], out[1] = rgb[1], out[2] = rgb[2];
      out += 3;
    }
  }
}

std::string bytes_repr(const std::uint8_t* data, std::size_t size) {  // Python's repr of data[:8]
  std::string out = "b'";
  char buf[8];
  for (std::size_t i = 0; i < size && i < 8; ++i) {
    unsigned c = data[i];
    if (c == '\\' || c == '\'') {
      out += '\\';
      out += static_cast<char>(c);
    } else if (c == '\t') {
      out += "\\t";
    } else if (c == '\n') {
      out += "\\n";
    } else if (c == '\r') {
      out += "\\r";
    } else if (c < 0x20 || c >= 0x7F) {
      std::snprintf(buf, sizeof buf, "\\x%02x", c);
      out += buf;
    } else {
      out += static_cast<char>(c);
    }
  }
  return out + "'";
}

// ---- PNG ----

// Everything decode_png changes after setjmp lives here, on the heap, reached through a pointer set before it.
struct PngContext {
  const std::uint8_t* data = nullptr;
  std::size_t size = 0;
  std::size_t pos = 0;
  char message[256] = {0};
  std::jmp_buf jump;
  Image out;
  std::vector<std::uint8_t> buffer;
  std::vector<png_bytep> rows;
  std::uint8_t palette[256][3] = {};
  int entries = 0;
  // the image being read: set once its rows are being read
  bool reading_rows = false;
  int passes = 1, colour = 0, in_channels = 0, target = 0;
  png_uint_32 height = 0, next_row = 0;  // rows converted so far
  std::size_t rowbytes = 0;
};

// Rows [ctx.next_row, end) from libpng's buffer into the output image (a non-interlaced image has one row there).
void convert_rows(PngContext& ctx, png_uint_32 end) {
  for (; ctx.next_row < end; ++ctx.next_row) {
    const std::uint8_t* src = ctx.buffer.data() + (ctx.passes > 1 ? ctx.next_row * ctx.rowbytes : 0);
    std::uint8_t* dst = ctx.out.row(static_cast<int>(ctx.next_row));
    if (ctx.colour == PNG_COLOR_TYPE_PALETTE)
      palette_row(src, ctx.palette, ctx.entries, dst, ctx.target, ctx.out.width);
    else
      convert_row(src, ctx.in_channels, dst, ctx.target, ctx.out.width);
  }
}

extern "C" void png_on_error(png_structp png, png_const_charp message) {
  auto* ctx = static_cast<PngContext*>(png_get_error_ptr(png));
  std::snprintf(ctx->message, sizeof ctx->message, "%s", message);
  std::longjmp(ctx->jump, 1);
}

extern "C" void png_on_warning(png_structp, png_const_charp) {}  // PIL ignores what libpng only warns about

extern "C" void png_on_read(png_structp png, png_bytep out, png_size_t n) {
  auto* ctx = static_cast<PngContext*>(png_get_io_ptr(png));
  if (n > ctx->size - ctx->pos) png_error(png, "image file is truncated");
  std::memcpy(out, ctx->data + ctx->pos, n);
  ctx->pos += n;
}

struct PngGuard {
  png_structp png = nullptr;
  png_infop info = nullptr;
  ~PngGuard() { png_destroy_read_struct(&png, info ? &info : nullptr, nullptr); }
};

Image decode_png(const std::uint8_t* data, std::size_t size, int target, const std::string& name) {
  auto ctx = std::make_unique<PngContext>();
  ctx->data = data;
  ctx->size = size;
  PngGuard guard;
  guard.png = png_create_read_struct(PNG_LIBPNG_VER_STRING, ctx.get(), png_on_error, png_on_warning);
  if (guard.png == nullptr) fail(Status::memory, "libpng could not start");
  guard.info = png_create_info_struct(guard.png);
  if (guard.info == nullptr) fail(Status::memory, "libpng could not start");
  if (setjmp(ctx->jump)) {
    // libpng reads on after producing the last row (the rest of the compressed stream, the chunk's checksum), where
    // PIL stops once it has every row: a file cut or damaged after its pixels is read, as PIL reads it.
    bool complete = ctx->reading_rows && (ctx->passes > 1 ? png_get_current_pass_number(guard.png) >= 7
                                                          : png_get_current_row_number(guard.png) >= ctx->height &&
                                                                ctx->next_row + 1 == ctx->height);
    if (!complete) fail(Status::image, "not a readable image: " + name + " (" + ctx->message + ")");
    convert_rows(*ctx, ctx->height);
    return std::move(ctx->out);
  }
  png_set_read_fn(guard.png, ctx.get(), png_on_read);
  // The size limits are ours (checked below with Python's message), not libpng's default of 1,000,000 per side.
  png_set_user_limits(guard.png, 0x7fffffff, 0x7fffffff);
  // PIL refuses a bad checksum in the chunks before the image data; libpng only warns about ancillary ones.
  png_set_crc_action(guard.png, PNG_CRC_DEFAULT, PNG_CRC_ERROR_QUIT);
  png_read_info(guard.png, guard.info);
  png_uint_32 w = 0, h = 0;
  int depth = 0, interlace = 0;
  png_get_IHDR(guard.png, guard.info, &w, &h, &depth, &ctx->colour, &interlace, nullptr, nullptr);
  check_pixels(w, h, name + " is ");
  if (ctx->colour == PNG_COLOR_TYPE_PALETTE) {
    png_colorp plte = nullptr;
    if (png_get_PLTE(guard.png, guard.info, &plte, &ctx->entries) == 0) ctx->entries = 0;
    for (int i = 0; i < ctx->entries && i < 256; ++i)
      ctx->palette[i][0] = plte[i].red, ctx->palette[i][1] = plte[i].green, ctx->palette[i][2] = plte[i].blue;
  }
  // 16-bit samples keep their high byte (PIL's "I;16" >> 8 and "RGB;16B"); grey of 1, 2, 4 bits is scaled to 8 as
  // PIL unpacks it (x255, x85, x17); palette indices are unpacked to one byte; transparency (tRNS) is ignored.
  if (depth == 16) png_set_strip_16(guard.png);
  if (depth < 8) {
    if (ctx->colour == PNG_COLOR_TYPE_GRAY)
      png_set_expand_gray_1_2_4_to_8(guard.png);
    else
      png_set_packing(guard.png);
  }
  ctx->passes = png_set_interlace_handling(guard.png);
  png_read_update_info(guard.png, guard.info);
  ctx->in_channels = png_get_channels(guard.png, guard.info);
  ctx->rowbytes = png_get_rowbytes(guard.png, guard.info);
  if (ctx->rowbytes != static_cast<std::size_t>(w) * static_cast<std::size_t>(ctx->in_channels))
    fail(Status::image, "not a readable image: " + name + " (unexpected PNG row layout)");
  ctx->out = Image(static_cast<int>(w), static_cast<int>(h), target);
  ctx->target = target;
  ctx->height = h;
  // Interlaced images are assembled by libpng over several passes, so they need the whole image at its own channel
  // count; others are converted row by row.
  ctx->buffer.resize(ctx->rowbytes * (ctx->passes > 1 ? h : 1));
  ctx->reading_rows = true;
  if (ctx->passes > 1) {
    ctx->rows.resize(h);
    for (png_uint_32 y = 0; y < h; ++y) ctx->rows[y] = ctx->buffer.data() + y * ctx->rowbytes;
    png_read_image(guard.png, ctx->rows.data());
  } else {
    while (ctx->next_row < h) {
      png_read_row(guard.png, ctx->buffer.data(), nullptr);
      convert_rows(*ctx, ctx->next_row + 1);
    }
  }
  convert_rows(*ctx, h);
  // The chunks after the image data are not read: PIL does not need them either (a missing IEND is accepted).
  return std::move(ctx->out);
}

// ---- JPEG ----

// As PngContext: what decode_jpeg changes after setjmp (the error handler finds it through cinfo.client_data).
struct JpegContext {
  jpeg_error_mgr err;
  jpeg_source_mgr src;
  char message[JMSG_LENGTH_MAX] = {0};
  std::jmp_buf jump;
  jpeg_decompress_struct cinfo;
  bool created = false;
  bool finishing = false, ran_out = false;  // reading what follows the last row; the data ended there
  Image out;
  std::vector<std::uint8_t> row;
};

extern "C" void jpeg_on_error(j_common_ptr cinfo) {
  auto* ctx = static_cast<JpegContext*>(cinfo->client_data);
  (*cinfo->err->format_message)(cinfo, ctx->message);
  std::longjmp(ctx->jump, 1);
}
extern "C" void jpeg_on_message(j_common_ptr) {}  // warnings (corrupt data libjpeg recovers from) are not printed
extern "C" void jpeg_src_init(j_decompress_ptr) {}
extern "C" boolean jpeg_src_fill(j_decompress_ptr cinfo) {
  // All the data was given at once: asking for more means the file ends early. PIL refuses such a file ("image file
  // is truncated"), where libjpeg's own memory source would pad it with an end marker and return grey rows.
  auto* ctx = static_cast<JpegContext*>(cinfo->client_data);
  std::snprintf(ctx->message, sizeof ctx->message, "image file is truncated");
  ctx->ran_out = true;
  std::longjmp(ctx->jump, 1);
}
extern "C" void jpeg_src_skip(j_decompress_ptr cinfo, long n) {
  if (n <= 0) return;
  auto skip = static_cast<std::size_t>(n);
  if (skip > cinfo->src->bytes_in_buffer) {
    jpeg_src_fill(cinfo);
    return;
  }
  cinfo->src->next_input_byte += skip;
  cinfo->src->bytes_in_buffer -= skip;
}
extern "C" void jpeg_src_term(j_decompress_ptr) {}

struct JpegGuard {
  JpegContext* ctx;
  ~JpegGuard() {
    if (ctx->created) jpeg_destroy_decompress(&ctx->cinfo);
  }
};

Image decode_jpeg(const std::uint8_t* data, std::size_t size, int target, const std::string& name) {
  auto ctx = std::make_unique<JpegContext>();
  jpeg_decompress_struct* cinfo = &ctx->cinfo;
  JpegGuard guard{ctx.get()};
  cinfo->err = jpeg_std_error(&ctx->err);
  cinfo->client_data = ctx.get();
  ctx->err.error_exit = jpeg_on_error;
  ctx->err.output_message = jpeg_on_message;
  if (setjmp(ctx->jump)) {
    // After the last row PIL reads on to the end marker as libjpeg does, but a file that simply ends there is read
    // (its decoder waits for data that never comes and keeps the rows it has).
    if (ctx->finishing && ctx->ran_out) return std::move(ctx->out);
    fail(Status::image, "not a readable image: " + name + " (" + ctx->message + ")");
  }
  jpeg_create_decompress(cinfo);
  ctx->created = true;
  ctx->src.init_source = jpeg_src_init;
  ctx->src.fill_input_buffer = jpeg_src_fill;
  ctx->src.skip_input_data = jpeg_src_skip;
  ctx->src.resync_to_restart = jpeg_resync_to_restart;
  ctx->src.term_source = jpeg_src_term;
  ctx->src.next_input_byte = data;
  ctx->src.bytes_in_buffer = size;
  cinfo->src = &ctx->src;
  jpeg_read_header(cinfo, TRUE);
  check_pixels(cinfo->image_width, cinfo->image_height, name + " is ");
  int components = cinfo->num_components;
  if (components != 1 && components != 3)
    fail(Status::image, "not a readable image: " + name + " (a JPEG with " + std::to_string(components) +
                            " components (CMYK/YCCK): the C++ SDK decodes grey and colour JPEGs; convert it to RGB)");
  // PIL's JPEG decoder: libjpeg's defaults (the accurate integer IDCT, fancy upsampling), grey as "L", colour as
  // "RGB" (libjpeg converts YCbCr); then convert() to the model's channels.
  cinfo->out_color_space = components == 1 ? JCS_GRAYSCALE : JCS_RGB;
  jpeg_start_decompress(cinfo);
  int in_channels = cinfo->output_components;
  Image& out = ctx->out;
  out = Image(static_cast<int>(cinfo->output_width), static_cast<int>(cinfo->output_height), target);
  // Rows go straight into the image when it has the decoder's channels, else through a buffer and convert_row; a few
  // at a time (libjpeg produces them by MCU rows).
  const bool direct = in_channels == target;
  const std::size_t row_bytes = static_cast<std::size_t>(out.width) * static_cast<std::size_t>(in_channels);
  constexpr int kBatch = 16;
  ctx->row.resize(direct ? 0 : row_bytes * kBatch);
  while (cinfo->output_scanline < cinfo->output_height) {
    const int y = static_cast<int>(cinfo->output_scanline);
    const int n = std::min(kBatch, out.height - y);
    JSAMPROW rows[kBatch];
    for (int i = 0; i < n; ++i)
      rows[i] = direct ? out.row(y + i) : ctx->row.data() + static_cast<std::size_t>(i) * row_bytes;
    const auto got = static_cast<int>(jpeg_read_scanlines(cinfo, rows, static_cast<JDIMENSION>(n)));
    if (got == 0) fail(Status::image, "not a readable image: " + name);
    if (!direct)
      for (int i = 0; i < got; ++i) convert_row(rows[i], in_channels, out.row(y + i), target, out.width);
  }
  // What follows the image data is read as PIL reads it: up to the end marker, an unexpected marker is an error.
  ctx->finishing = true;
  jpeg_finish_decompress(cinfo);
  return std::move(out);
}

const char* other_format(const std::uint8_t* d, std::size_t n) {
  auto starts = [&](const char* magic, std::size_t len) { return n >= len && std::memcmp(d, magic, len) == 0; };
  if (starts("BM", 2)) return "BMP";
  if (starts("GIF87a", 6) || starts("GIF89a", 6)) return "GIF";
  if (starts("II*\0", 4) || starts("MM\0*", 4)) return "TIFF";
  if (n >= 12 && starts("RIFF", 4) && std::memcmp(d + 8, "WEBP", 4) == 0) return "WEBP";
  if (n >= 2 && d[0] == 'P' && d[1] >= '1' && d[1] <= '7') return "PPM";
  return nullptr;
}

}  // namespace

Image decode_image(const std::uint8_t* data, std::size_t size, int channels) {
  if (data == nullptr || size == 0) fail(Status::image, "empty image: 0 bytes");
  std::string name = "image of " + std::to_string(size) + " bytes";
  static const std::uint8_t png_magic[8] = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1A, '\n'};
  if (size >= 8 && std::memcmp(data, png_magic, 8) == 0) return decode_png(data, size, channels, name);
  if (size >= 3 && data[0] == 0xFF && data[1] == 0xD8 && data[2] == 0xFF)
    return decode_jpeg(data, size, channels, name);
  if (const char* fmt = other_format(data, size))
    fail(Status::image, "not a readable image: " + name + " (a " + fmt +
                            " image: the C++ SDK decodes PNG and JPEG; decode it in the app and pass its pixels)");
  fail(Status::image,
       "not a readable image: " + name + " (none of PNG, JPEG; it starts " + bytes_repr(data, size) + ")");
}

Image from_pixels(const std::uint8_t* pixels, int height, int width, int channels, std::size_t stride, int target) {
  if (channels != 1 && channels != 3 && channels != 4)
    fail(Status::image, "image array has shape (" + std::to_string(height) + ", " + std::to_string(width) + ", " +
                            std::to_string(channels) + "); expected HxW, HxWx1, HxWx3 or HxWx4 (uint8)");
  check_pixels(width, height, "image array is ");
  std::size_t row = static_cast<std::size_t>(width) * static_cast<std::size_t>(channels);
  if (stride == 0) stride = row;
  if (stride < row)
    fail(Status::argument, "pixel rows are " + std::to_string(stride) +
                               " bytes apart, less than "
                               "width x channels (" +
                               std::to_string(row) + ")");
  if (pixels == nullptr) fail(Status::argument, "pixels is NULL");
  Image out(width, height, target);
  for (int y = 0; y < height; ++y)
    convert_row(pixels + static_cast<std::size_t>(y) * stride, channels, out.row(y), target, width);
  return out;
}

}  // namespace rd
