"""Images and preprocessing specs that the C++ SDK's pixels are compared on against Python's `Preprocess`
(tests/test_cpp_sdk.py, and the fixtures cpp/tests/make_fixtures.py writes for the C++ tests).

PNGs are written by a small encoder here (every colour type and bit depth the format has, palettes shorter than
their indices, transparency, Adam7 interlacing), since PIL writes only some of them; JPEGs by PIL (libjpeg-turbo):
baseline, progressive, grey, chroma subsampling 4:4:4 / 4:2:2 / 4:2:0.
"""

from __future__ import annotations

import io
import struct
import zlib
from collections.abc import Iterator

import numpy as np
from PIL import Image

from resnet_deploy.runtime.preprocess import Preprocess

# PNG colour type -> samples per pixel
_SAMPLES = {0: 1, 2: 3, 3: 1, 4: 2, 6: 4}
# Adam7 passes: (x start, y start, x step, y step)
_ADAM7 = ((0, 0, 8, 8), (4, 0, 8, 8), (0, 4, 4, 8), (2, 0, 4, 4), (0, 2, 2, 4), (1, 0, 2, 2), (0, 1, 1, 2))


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def _rows(samples: np.ndarray, depth: int) -> bytes:
    """Filter-0 scanlines of an (H, W, S) array of samples at `depth` bits."""
    out = []
    for row in samples:
        flat = row.reshape(-1)
        if depth == 16:
            data = flat.astype(">u2").tobytes()
        elif depth == 8:
            data = flat.astype(np.uint8).tobytes()
        else:  # pack 1, 2 or 4-bit samples, most significant first
            per = 8 // depth
            padded = np.zeros(-(-len(flat) // per) * per, np.uint8)
            padded[:len(flat)] = flat
            groups = padded.reshape(-1, per).astype(np.uint16)
            shifts = np.arange(per - 1, -1, -1) * depth
            data = (groups << shifts).sum(axis=1).astype(np.uint8).tobytes()
        out.append(b"\x00" + data)
    return b"".join(out)


def png_bytes(samples: np.ndarray, colour: int, depth: int, palette: bytes | None = None, trns: bytes | None = None,
              interlace: bool = False) -> bytes:
    """A PNG of `samples` (H, W[, S]) with the given colour type and bit depth (values already in range)."""
    if samples.ndim == 2:
        samples = samples[:, :, None]
    h, w, _ = samples.shape
    if interlace:
        raw = b"".join(_rows(samples[y0::dy, x0::dx], depth) for x0, y0, dx, dy in _ADAM7
                       if samples[y0::dy, x0::dx].size)
    else:
        raw = _rows(samples, depth)
    out = b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, depth, colour, 0, 0, int(interlace)))
    if palette is not None:
        out += _chunk(b"PLTE", palette)
    if trns is not None:
        out += _chunk(b"tRNS", trns)
    return out + _chunk(b"IDAT", zlib.compress(raw, 6)) + _chunk(b"IEND", b"")


def encode(im: Image.Image, fmt: str, **options) -> bytes:
    """PIL's encoding of `im` (JPEG options: quality, subsampling, progressive)."""
    buf = io.BytesIO()
    im.save(buf, fmt, **options)
    return buf.getvalue()


def pattern(rng: np.random.Generator, h: int, w: int, channels: int, maximum: int = 255) -> np.ndarray:
    """A smooth picture with noise (what cameras give; pure noise would hide filter-order mistakes in JPEG
    artefacts), channels shifted against each other, values 0..maximum."""
    y = np.linspace(0, 1, h)[:, None]
    x = np.linspace(0, 1, w)[None, :]
    planes = []
    for c in range(channels):
        base = np.sin(5 * x + 3 * y + c) * 0.4 + 0.5 + rng.normal(0, 0.08, (h, w))
        planes.append(np.clip(base, 0, 1) * maximum)
    a = np.rint(np.stack(planes, -1))
    return (a[:, :, 0] if channels == 1 else a).astype(np.uint16 if maximum > 255 else np.uint8)


def png_cases(rng: np.random.Generator, h: int, w: int) -> Iterator[tuple[str, bytes]]:
    """Every PNG colour type and depth at h x w: (name, bytes)."""
    for depth in (1, 2, 4, 8, 16):
        yield f"grey{depth}", png_bytes(pattern(rng, h, w, 1, (1 << depth) - 1), 0, depth)
    for depth in (8, 16):
        yield f"rgb{depth}", png_bytes(pattern(rng, h, w, 3, (1 << depth) - 1), 2, depth)
        yield f"grey_alpha{depth}", png_bytes(pattern(rng, h, w, 2, (1 << depth) - 1), 4, depth)
        yield f"rgba{depth}", png_bytes(pattern(rng, h, w, 4, (1 << depth) - 1), 6, depth)
    for depth in (1, 2, 4, 8):
        entries = min(1 << depth, 200)
        palette = rng.integers(0, 256, 3 * entries, dtype=np.uint8).tobytes()
        # indices up to the depth's maximum: with 200 entries at 8 bits some point past the palette (black in PIL)
        idx = pattern(rng, h, w, 1, (1 << depth) - 1)
        yield f"palette{depth}", png_bytes(idx, 3, depth, palette, trns=bytes([0, 128]))
    yield "rgb8_interlaced", png_bytes(pattern(rng, h, w, 3), 2, 8, interlace=True)
    yield "grey16_interlaced", png_bytes(pattern(rng, h, w, 1, 65535), 0, 16, interlace=True)
    yield "rgb8_trns", png_bytes(pattern(rng, h, w, 3), 2, 8, trns=b"\x00\x10\x00\x20\x00\x30")


def jpeg_cases(rng: np.random.Generator, h: int, w: int) -> Iterator[tuple[str, bytes]]:
    """Baseline, progressive and grey JPEGs at h x w with PIL's encoder: (name, bytes)."""
    rgb = Image.fromarray(pattern(rng, h, w, 3), "RGB")
    grey = Image.fromarray(pattern(rng, h, w, 1), "L")
    yield "jpeg_420", encode(rgb, "JPEG", quality=85)
    yield "jpeg_444", encode(rgb, "JPEG", quality=95, subsampling=0)
    yield "jpeg_422", encode(rgb, "JPEG", quality=70, subsampling=1)
    yield "jpeg_progressive", encode(rgb, "JPEG", quality=80, progressive=True)
    yield "jpeg_grey", encode(grey, "JPEG", quality=90)
    yield "jpeg_grey_progressive", encode(grey, "JPEG", quality=75, progressive=True)


# (H, W) sizes: one pixel, thin strips, odd and even sides (odd and even centre-crop margins), and a camera frame.
SIZES = [(1, 1), (1, 7), (9, 1), (28, 28), (29, 40), (40, 29), (36, 36), (37, 50), (64, 48), (3, 500), (500, 2),
         (375, 500), (3000, 4000)]
# Strips whose full resize would exceed MAX_IMAGE_PIXELS: Python resizes only what the crop keeps (box path).
STRIPS = [(1, 100000), (100000, 1), (3, 30000), (20000, 5)]


def specs(rng: np.random.Generator) -> dict[str, Preprocess]:
    """Preprocessing specs: the demo's (grey, per-pixel mean, no resize), CIFAR-like, ImageNet's, crops with odd and
    even margins, a final resize to a non-square input, and per-pixel means in RGB."""
    return {
        "fashion_per_pixel": Preprocess((28, 28), 1, None, None, rng.random((1, 28, 28)).tolist(), (0.353,)),
        "cifar_like": Preprocess((32, 32), 3, 36, 32, (0.49, 0.48, 0.45), (0.25, 0.24, 0.26)),
        "imagenet": Preprocess((224, 224), 3, 256, 224, (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),
        "odd_margin": Preprocess((27, 27), 1, 30, 27, (0.5,), (0.25,)),
        "crop_only": Preprocess((20, 20), 3, None, 20, (0.1, 0.2, 0.3), (0.5, 0.6, 0.7)),
        "resize_only": Preprocess((33, 33), 3, 33, None, (0.0, 0.0, 0.0), (1.0, 1.0, 1.0)),
        "final_resize": Preprocess((20, 24), 3, None, None, rng.random((3, 20, 24)).tolist(), (0.3, 0.3, 0.3)),
    }
