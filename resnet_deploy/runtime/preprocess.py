"""The one preprocessing definition: training evaluation, the bundle's manifest and the runtime all use this.

Torch-free on purpose (numpy + PIL): edge apps install only `resnet_deploy.runtime`. The steps and their rounding
follow torchvision's evaluation transform (`Resize(int)` on the shorter side with PIL bilinear, `CenterCrop`,
`ToTensor`, `Normalize`) so that a model trained with torchvision's transform sees the same pixels here.

Images come from cameras and users, so the work per image is bounded (README, "Untrusted input"):
- only the raster formats in IMAGE_FORMATS are decoded (never EPS, which PIL hands to Ghostscript);
- an image over MAX_IMAGE_PIXELS or MAX_IMAGE_SIDE is refused from its header, before it is decoded (PIL's own,
  larger limit stays);
- a resize whose target exceeds MAX_IMAGE_PIXELS (a tiny file that is 1 pixel tall and 100,000 wide, resized to a
  shorter side of 256) is done only where the centre crop keeps the image (PIL's `resize(box=...)`), so it costs no
  more than the crop; without a crop step it is refused;
- 16-bit images are scaled to 8 bits (the high byte, as PIL does for 16-bit RGB PNGs), not clipped to white.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Union

import numpy as np
from PIL import Image, UnidentifiedImageError

from resnet_deploy.runtime import fields
from resnet_deploy.runtime.errors import ResnetDeployError, first_line

ImageInput = Union[str, Path, bytes, Image.Image, np.ndarray]  # bytes: an encoded file, as a server gets it

# torchvision's ImageNet evaluation transform: the default for weights not trained here.
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

MAX_SIDE = 4096  # the largest input size, resize or crop a preprocessing spec may ask for
# Decoded pixels (width x height) of one image, and of any resize on the way. Peak memory is about 8 bytes per
# pixel (RGBA decoded, then converted), so the worst case stays under 256 MB (benchmarks/RESULTS.md).
MAX_IMAGE_PIXELS = 24_000_000
# Either side: decoders hold a few rows at a time, which for a 24,000,000 x 1 strip would be hundreds of MB.
MAX_IMAGE_SIDE = 65_535  # also the largest side a JPEG can have
IMAGE_FORMATS = ("PNG", "JPEG", "BMP", "GIF", "TIFF", "WEBP", "PPM")  # JPEG includes MPO (camera JPEGs)
_SIXTEEN_BIT = ("I;16", "I;16L", "I;16B", "I;16N")


@dataclass(frozen=True)
class Preprocess:
    """How an image becomes the network's input tensor.

    Attributes:
        input_size: (H, W) of the network input, 1..MAX_SIDE each.
        channels: 1 (grey, PIL mode "L") or 3 (RGB).
        resize: shorter side is resized to this before cropping; None means no resize step.
        crop: centre crop to a square of this size (at most `resize`); None means no crop step.
        mean: per-channel means (C values) or a per-pixel mean image (C x H x W nested lists), in [0, 1] units.
            The paper subtracts the per-pixel mean (§3.4, §4.2); a mean image is stored whole.
        std: per-channel standard deviations (C values above 0), in [0, 1] units.

    Raises:
        FieldError (a ResnetDeployError): a value of the wrong type or out of range, named as `preprocess.<field>`.
    """

    input_size: tuple[int, int]
    channels: int
    resize: int | None = None
    crop: int | None = None
    mean: Any = (0.0,)
    std: tuple[float, ...] = (1.0,)

    def __post_init__(self) -> None:
        fields.need(self.channels in (1, 3) and not isinstance(self.channels, bool), "preprocess.channels", "1 or 3",
                    self.channels)
        fields.need(isinstance(self.input_size, (tuple, list)) and len(self.input_size) == 2,
                    "preprocess.input_size", "[H, W]", self.input_size)
        for i, side in enumerate(self.input_size):
            fields.integer(side, f"preprocess.input_size[{i}]", 1, MAX_SIDE)
        for name in ("resize", "crop"):
            if getattr(self, name) is not None:
                fields.integer(getattr(self, name), f"preprocess.{name}", 1, MAX_SIDE)
        if self.resize is not None and self.crop is not None:
            fields.need(self.crop <= self.resize, "preprocess.crop", f"at most resize ({self.resize})", self.crop)
        fields.need(isinstance(self.std, (tuple, list)) and len(self.std) == self.channels, "preprocess.std",
                    f"{self.channels} number(s)", self.std)
        for i, s in enumerate(self.std):
            fields.number(s, f"preprocess.std[{i}]", above=0)
        _check_mean(self.mean, self.channels, tuple(self.input_size))

    @property
    def mode(self) -> str:
        """PIL mode the image is converted to first: grey images become RGB for 3-channel models and vice versa."""
        return "L" if self.channels == 1 else "RGB"

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form, as stored in checkpoints and manifests."""
        mean = np.asarray(self.mean, dtype=np.float64)
        return {
            "input_size": list(self.input_size),
            "channels": self.channels,
            "channel_order": self.mode,
            "resize": self.resize,
            "crop": self.crop,
            "interpolation": "bilinear",
            "mean": mean.tolist(),
            "std": [float(s) for s in self.std],
            "scale": 1 / 255,
        }

    @classmethod
    def from_dict(cls, d: Any) -> Preprocess:
        """Inverse of `to_dict`; a missing key, a wrong type or a value out of range is a FieldError naming it."""
        d = fields.mapping(d, "preprocess")
        size = fields.items(fields.get(d, "input_size", "preprocess.input_size"), "preprocess.input_size",
                            lambda v, _: v, 2, 2)
        channels = fields.get(d, "channels", "preprocess.channels")
        if "channel_order" in d:
            fields.string(d["channel_order"], "preprocess.channel_order", ("L" if channels == 1 else "RGB",))
        if "interpolation" in d:
            fields.string(d["interpolation"], "preprocess.interpolation", ("bilinear",))
        if "scale" in d:
            fields.number(d["scale"], "preprocess.scale", 1 / 255 - 1e-9, 1 / 255 + 1e-9)
        std = fields.items(fields.get(d, "std", "preprocess.std"), "preprocess.std", lambda v, _: v, 1, 3)
        return cls(input_size=(size[0], size[1]), channels=channels, resize=d.get("resize"), crop=d.get("crop"),
                   mean=_freeze(fields.get(d, "mean", "preprocess.mean"), "preprocess.mean"), std=tuple(std))

    def load(self, image: ImageInput) -> Image.Image:
        """Open a path or encoded bytes, or wrap an array, as an 8-bit PIL image in this model's mode (grey <-> RGB
        converted).

        Raises:
            ResnetDeployError: not an image of IMAGE_FORMATS, unreadable, empty, or over MAX_IMAGE_PIXELS.
        """
        if isinstance(image, (str, Path, bytes)):
            name = image if not isinstance(image, bytes) else f"image of {len(image)} bytes"
            if isinstance(image, bytes) and not image:
                raise ResnetDeployError("empty image: 0 bytes")
            try:
                with Image.open(io.BytesIO(image) if isinstance(image, bytes) else image, formats=IMAGE_FORMATS) as im:
                    _check_pixels(im.size, f"{name} is ")
                    im.load()
                    return self._convert(im)
            except ResnetDeployError:
                raise
            except FileNotFoundError:
                raise ResnetDeployError(f"image not found: {image}") from None
            except Exception as e:  # PIL's decoders raise many types on malformed bytes (OSError, SyntaxError,
                # struct.error, EOFError, DecompressionBombError...): all of them mean "not an image we can read"
                detail = first_line(e)[:300]
                if isinstance(image, bytes) and isinstance(e, UnidentifiedImageError):  # PIL names a BytesIO object
                    detail = f"none of {', '.join(IMAGE_FORMATS)}; it starts {image[:8]!r}"
                raise ResnetDeployError(f"not a readable image: {name} ({detail})") from None
        if isinstance(image, Image.Image):
            _check_pixels(image.size, "image is ")
            return self._convert(image)
        if isinstance(image, np.ndarray):
            return self._convert(_array_to_pil(image))
        raise ResnetDeployError("expected an image path, PIL image or uint8/uint16 HxW[xC] array, "
                                f"found {type(image).__name__}")

    def _convert(self, pil: Image.Image) -> Image.Image:
        pil = _to_8bit(pil)
        if pil.mode == self.mode:
            return pil
        try:
            return pil.convert(self.mode)
        except ValueError as e:  # e.g. LAB or HSV images, which PIL does not convert to RGB
            raise ResnetDeployError(f"cannot convert a {pil.mode} image to {self.mode} ({first_line(e)})") from None

    def __call__(self, image: ImageInput) -> np.ndarray:
        """Preprocess one image to a float32 (C, H, W) array."""
        pil = _resize_and_crop(self.load(image), self.resize, self.crop)
        h, w = self.input_size
        if pil.size != (w, h):
            # Images of another size than the model's input (and no resize/crop steps to get there): resize exactly.
            pil = pil.resize((w, h), Image.BILINEAR)
        arr = np.asarray(pil, dtype=np.uint8)
        if arr.ndim == 2:
            arr = arr[:, :, None]
        return self.normalize(arr.transpose(2, 0, 1))

    def normalize(self, chw_uint8: np.ndarray) -> np.ndarray:
        """uint8 (..., C, H, W) -> float32 `(x / 255 - mean) / std`, the arithmetic of ToTensor + Normalize."""
        x = chw_uint8.astype(np.float32) / 255.0
        mean = np.asarray(self.mean, dtype=np.float32)
        if mean.ndim == 1:
            mean = mean[:, None, None]
        std = np.asarray(self.std, dtype=np.float32)[:, None, None]
        return ((x - mean) / std).astype(np.float32)


def _freeze(v: Any, field: str, depth: int = 0) -> Any:
    # Nested lists of numbers -> nested tuples of floats; a mean is C values or C x H x W (three levels at most).
    if isinstance(v, (list, tuple)):
        fields.need(depth < 3, field, "numbers or lists of numbers nested at most 3 deep", v)
        return tuple(_freeze(x, f"{field}[{i}]", depth + 1) for i, x in enumerate(v))
    return fields.number(v, field)


def _check_mean(mean: Any, channels: int, size: tuple[int, int]) -> None:
    try:
        m = np.asarray(mean, dtype=np.float64)
    except (TypeError, ValueError):
        m = None
    ok = m is not None and (m.shape == (channels,) or m.shape == (channels, *size))
    fields.need(ok, "preprocess.mean", f"{channels} number(s) or a {channels} x {size[0]} x {size[1]} mean image",
                mean if m is None else f"shape {m.shape}")
    fields.need(bool(np.isfinite(m).all()), "preprocess.mean", "finite numbers", "NaN or Inf")


def _check_pixels(size: tuple[int, int], what: str) -> None:
    w, h = size
    if w < 1 or h < 1:
        raise ResnetDeployError(f"{what}{w}x{h} pixels: an image needs at least 1x1")
    if w * h > MAX_IMAGE_PIXELS or max(w, h) > MAX_IMAGE_SIDE:
        raise ResnetDeployError(f"{what}{w}x{h} = {w * h:,} pixels, over the limit of {MAX_IMAGE_PIXELS:,} pixels "
                                f"and {MAX_IMAGE_SIDE:,} per side; scale it down first")


def _to_8bit(pil: Image.Image) -> Image.Image:
    """16-bit grey (and 32-bit integer images within 16 bits) -> "L" by the high byte; other modes unchanged."""
    if pil.mode not in _SIXTEEN_BIT + ("I", "F"):
        return pil
    if pil.mode == "F":
        raise ResnetDeployError("32-bit float images are not supported; save the image with 8 or 16 bits per channel")
    a = np.asarray(pil)
    if pil.mode == "I" and a.size and (int(a.min()) < 0 or int(a.max()) > 65535):
        raise ResnetDeployError(f"32-bit integer image with values from {int(a.min())} to {int(a.max())}; only 8- "
                                "and 16-bit images are supported")
    return Image.fromarray((a.astype(np.uint16, copy=False) >> 8).astype(np.uint8), mode="L")


def _array_to_pil(a: np.ndarray) -> Image.Image:
    if a.dtype not in (np.uint8, np.uint16):
        raise ResnetDeployError(f"image arrays must be uint8 or uint16, found {a.dtype}")
    if a.ndim == 3 and a.shape[2] == 1:
        a = a[:, :, 0]
    if a.ndim not in (2, 3) or a.ndim == 3 and a.shape[2] not in (3, 4):
        raise ResnetDeployError(f"image array has shape {a.shape}; expected HxW, HxWx1, HxWx3 or HxWx4 (uint8)")
    _check_pixels((a.shape[1], a.shape[0]), "image array is ")
    if a.dtype == np.uint16:
        a = (a >> 8).astype(np.uint8)
    if a.ndim == 2:
        return Image.fromarray(a, mode="L")
    return Image.fromarray(np.ascontiguousarray(a), mode="RGB" if a.shape[2] == 3 else "RGBA")


def _shorter_to(size: tuple[int, int], target: int) -> tuple[int, int]:
    # torchvision.transforms.functional.resize with an int: shorter side -> target, longer side truncated like int().
    w, h = size
    short, long = (w, h) if w <= h else (h, w)
    new_long = int(target * long / short)
    return (target, new_long) if w <= h else (new_long, target)


def resize_shorter(pil: Image.Image, size: int) -> Image.Image:
    """The whole image with its shorter side resized to `size`; refused when that exceeds MAX_IMAGE_PIXELS."""
    if min(pil.size) == size:
        return pil
    new_w, new_h = _shorter_to(pil.size, size)
    if new_w * new_h > MAX_IMAGE_PIXELS:
        raise ResnetDeployError(f"image of {pil.size[0]}x{pil.size[1]} would be resized to {new_w}x{new_h}, over the "
                                f"limit of {MAX_IMAGE_PIXELS:,} pixels; crop it to a less elongated shape first")
    return pil.resize((new_w, new_h), Image.BILINEAR)


def _resize_and_crop(pil: Image.Image, resize: int | None, crop: int | None) -> Image.Image:
    """Resize the shorter side to `resize`, then centre-crop `crop`; memory stays bounded for any aspect ratio."""
    if resize is None or min(pil.size) == resize:
        return pil if crop is None else _center_crop(pil, crop)
    new_w, new_h = _shorter_to(pil.size, resize)
    if crop is None or new_w * new_h <= MAX_IMAGE_PIXELS:
        resized = resize_shorter(pil, resize)
        return resized if crop is None else _center_crop(resized, crop)
    # A very elongated image (a 100000x1 strip): resize only the part the crop keeps. PIL's resize(box=...) samples
    # the source where the full resize would (same scale and centres, the filter reading around the box), so the
    # result matches resize-then-crop up to rounding (one grey level in a few pixels), at a cost set by the crop.
    top, left = int(round((new_h - crop) / 2.0)), int(round((new_w - crop) / 2.0))
    sx, sy = pil.size[0] / new_w, pil.size[1] / new_h
    return pil.resize((crop, crop), Image.BILINEAR, box=(left * sx, top * sy, (left + crop) * sx, (top + crop) * sy))


def _center_crop(pil: Image.Image, size: int) -> Image.Image:
    # torchvision's center_crop rounding: top = int(round((h - size) / 2)).
    w, h = pil.size
    if w < size or h < size:
        raise ResnetDeployError(f"image of {w}x{h} is smaller than the {size}x{size} centre crop")
    top = int(round((h - size) / 2.0))
    left = int(round((w - size) / 2.0))
    return pil.crop((left, top, left + size, top + size))
