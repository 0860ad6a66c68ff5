"""The one preprocessing definition: training evaluation, the bundle's manifest and the runtime all use this.

Torch-free on purpose (numpy + PIL): edge apps install only `resnet_deploy.runtime`. The steps and their rounding
follow torchvision's evaluation transform (`Resize(int)` on the shorter side with PIL bilinear, `CenterCrop`,
`ToTensor`, `Normalize`) so that a model trained with torchvision's transform sees the same pixels here.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Union

import numpy as np
from PIL import Image, UnidentifiedImageError

from resnet_deploy.runtime.errors import ResnetDeployError

ImageInput = Union[str, Path, Image.Image, np.ndarray]

# torchvision's ImageNet evaluation transform: the default for weights not trained here.
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class Preprocess:
    """How an image becomes the network's input tensor.

    Attributes:
        input_size: (H, W) of the network input.
        channels: 1 (grey, PIL mode "L") or 3 (RGB).
        resize: shorter side is resized to this before cropping; None means no resize step.
        crop: centre crop to a square of this size; None means no crop step.
        mean: per-channel means (C values) or a per-pixel mean image (C x H x W nested lists), in [0, 1] units.
            The paper subtracts the per-pixel mean (§3.4, §4.2); a mean image is stored whole.
        std: per-channel standard deviations (C values), in [0, 1] units.
    """

    input_size: tuple[int, int]
    channels: int
    resize: int | None = None
    crop: int | None = None
    mean: Any = (0.0,)
    std: tuple[float, ...] = (1.0,)

    def __post_init__(self) -> None:
        if self.channels not in (1, 3):
            raise ResnetDeployError(f"preprocess channels must be 1 or 3, found {self.channels}")
        mean = np.asarray(self.mean, dtype=np.float32)
        if mean.ndim == 1 and mean.shape[0] != self.channels or mean.ndim == 3 and mean.shape[0] != self.channels:
            raise ResnetDeployError(f"preprocess mean has shape {mean.shape}; expected ({self.channels},) or "
                                    f"({self.channels}, H, W)")
        if len(self.std) != self.channels:
            raise ResnetDeployError(f"preprocess std has {len(self.std)} values; expected {self.channels}")

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
    def from_dict(cls, d: dict[str, Any]) -> Preprocess:
        """Inverse of `to_dict`; unknown or missing keys are an error."""
        try:
            return cls(input_size=(int(d["input_size"][0]), int(d["input_size"][1])), channels=int(d["channels"]),
                       resize=d.get("resize"), crop=d.get("crop"), mean=_freeze(d["mean"]),
                       std=tuple(float(s) for s in d["std"]))
        except (KeyError, TypeError, IndexError) as e:
            raise ResnetDeployError(f"preprocessing spec is incomplete or malformed ({e!r}): {d!r:.200}") from None

    def load(self, image: ImageInput) -> Image.Image:
        """Open a path, or wrap an array, as a PIL image in this model's mode (grey <-> RGB converted)."""
        if isinstance(image, (str, Path)):
            try:
                with Image.open(image) as im:
                    im.load()
                    pil = im
            except FileNotFoundError:
                raise ResnetDeployError(f"image not found: {image}") from None
            except (UnidentifiedImageError, OSError, ValueError) as e:
                raise ResnetDeployError(f"not a readable image: {image} ({e})") from None
        elif isinstance(image, Image.Image):
            pil = image
        elif isinstance(image, np.ndarray):
            pil = _array_to_pil(image)
        else:
            raise ResnetDeployError("expected an image path, PIL image or uint8 HxW[xC] array, "
                                    f"found {type(image).__name__}")
        return pil if pil.mode == self.mode else pil.convert(self.mode)

    def __call__(self, image: ImageInput) -> np.ndarray:
        """Preprocess one image to a float32 (C, H, W) array."""
        pil = self.load(image)
        if self.resize is not None:
            pil = _resize_shorter(pil, self.resize)
        if self.crop is not None:
            pil = _center_crop(pil, self.crop)
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


def _freeze(v: Any) -> Any:
    return tuple(_freeze(x) for x in v) if isinstance(v, (list, tuple)) else float(v)


def _array_to_pil(a: np.ndarray) -> Image.Image:
    if a.dtype != np.uint8:
        raise ResnetDeployError(f"image arrays must be uint8, found {a.dtype}")
    if a.ndim == 3 and a.shape[2] == 1:
        a = a[:, :, 0]
    if a.ndim == 2:
        return Image.fromarray(a, mode="L")
    if a.ndim == 3 and a.shape[2] in (3, 4):
        return Image.fromarray(a, mode="RGB" if a.shape[2] == 3 else "RGBA")
    raise ResnetDeployError(f"image array has shape {a.shape}; expected HxW, HxWx1, HxWx3 or HxWx4 (uint8)")


def _resize_shorter(pil: Image.Image, size: int) -> Image.Image:
    # torchvision.transforms.functional.resize with an int: shorter side -> size, longer side truncated like int().
    w, h = pil.size
    short, long = (w, h) if w <= h else (h, w)
    if short == size:
        return pil
    new_long = int(size * long / short)
    new_w, new_h = (size, new_long) if w <= h else (new_long, size)
    return pil.resize((new_w, new_h), Image.BILINEAR)


def _center_crop(pil: Image.Image, size: int) -> Image.Image:
    # torchvision's center_crop rounding: top = int(round((h - size) / 2)).
    w, h = pil.size
    if w < size or h < size:
        raise ResnetDeployError(f"image of {w}x{h} is smaller than the {size}x{size} centre crop")
    top = int(round((h - size) / 2.0))
    left = int(round((w - size) / 2.0))
    return pil.crop((left, top, left + size, top + size))
