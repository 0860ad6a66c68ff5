"""What an export starts from: a resnet-deploy checkpoint, or torchvision weights plus an architecture name.

Also the calibration images for INT8 (real data through the bundle's own preprocessing).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch
from torch import nn

from resnet_deploy import models
from resnet_deploy.checkpoint import (
    load_checkpoint,
    load_state_dict_file,
    model_from_checkpoint,
    preprocess_from_checkpoint,
)
from resnet_deploy.data import load_eval_arrays
from resnet_deploy.runtime.checksum import sha256_file
from resnet_deploy.runtime.errors import ResnetDeployError
from resnet_deploy.runtime.preprocess import IMAGENET_MEAN, IMAGENET_STD, MAX_SIDE, Preprocess


@dataclass(frozen=True)
class Source:
    """A model ready to export, with everything the bundle records about where it came from."""

    model: nn.Module
    arch: str
    classes: list[str]
    preprocess: Preprocess
    path: Path
    sha256: str
    kind: str  # "checkpoint" or "torchvision"

    @property
    def input_shape(self) -> tuple[int, int, int]:
        """(C, H, W) of one input."""
        return (self.preprocess.channels, *self.preprocess.input_size)


def load_source(checkpoint: Path | None = None, arch: str | None = None, weights: Path | None = None,
                classes: Path | list[str] | None = None, input_size: int | None = None) -> Source:
    """Build the model to export from a checkpoint, or from `arch` + a torchvision state dict.

    Raises:
        ResnetDeployError: both or neither given, an unreadable file, a checkpoint of another arch, weights that do
            not fit, or a class list of the wrong length.
    """
    if (checkpoint is None) == (weights is None):
        raise ResnetDeployError("give either a CHECKPOINT or --arch NAME --weights FILE (exactly one of them)")
    if checkpoint is not None:
        src = _from_checkpoint(Path(checkpoint), arch)
    else:
        if arch is None:
            raise ResnetDeployError("--weights needs --arch NAME (e.g. --arch resnet50) to build the network")
        src = _from_weights(Path(weights), arch)
    if classes is not None:
        src = replace(src, classes=_read_classes(classes, len(src.classes)))
    if input_size is not None:
        src = replace(src, preprocess=resize_preprocess(src.preprocess, input_size))
    return src


def _from_checkpoint(path: Path, arch: str | None) -> Source:
    ckpt = load_checkpoint(path)
    if arch is not None and arch != ckpt["arch"]:
        raise ResnetDeployError(f"{path} holds a {ckpt['arch']} checkpoint, not {arch}; drop --arch or pick the "
                                "checkpoint of that architecture")
    model = model_from_checkpoint(ckpt)
    return Source(model, ckpt["arch"], [str(c) for c in ckpt["classes"]], preprocess_from_checkpoint(ckpt), path,
                  sha256_file(path), "checkpoint")


def _from_weights(path: Path, arch: str) -> Source:
    sd = load_state_dict_file(path)
    if isinstance(sd, Mapping) and "arch" in sd and "model" in sd:
        raise ResnetDeployError(f"{path} is a resnet-deploy checkpoint; pass it as CHECKPOINT, without --weights")
    fc, conv = (_find(sd, name) for name in ("fc.weight", "conv1.weight"))
    if not isinstance(fc, torch.Tensor):
        raise ResnetDeployError(f"{path} is not a torchvision ResNet state dict (no 'fc.weight' tensor found)")
    in_channels = int(conv.shape[1]) if isinstance(conv, torch.Tensor) else 3
    model = models.load_torchvision(models.build(arch, num_classes=int(fc.shape[0]), in_channels=in_channels), sd)
    return Source(model.eval(), arch, _default_classes(int(fc.shape[0])), torchvision_preprocess(in_channels), path,
                  sha256_file(path), "torchvision")


def _find(sd: object, name: str) -> object:
    # DDP ("module.") and torch.compile ("_orig_mod.") prefixes, as models.load_torchvision strips them.
    if not isinstance(sd, Mapping):
        return None
    return next((sd[k] for k in (name, f"module.{name}", f"_orig_mod.{name}") if k in sd), None)


def torchvision_preprocess(channels: int = 3) -> Preprocess:
    """torchvision's ImageNet evaluation transform: resize 256, centre crop 224, ImageNet mean and std."""
    if channels != 3:
        raise ResnetDeployError(f"torchvision weights take RGB input; these have {channels} input channel(s)")
    return Preprocess(input_size=(224, 224), channels=3, resize=256, crop=224, mean=IMAGENET_MEAN, std=IMAGENET_STD)


def _default_classes(n: int) -> list[str]:
    if n == 1000:  # ImageNet-1k: torchvision ships the names with its weight metadata (no download)
        from torchvision.models import ResNet50_Weights

        return list(ResNet50_Weights.IMAGENET1K_V1.meta["categories"])
    return [f"class_{i}" for i in range(n)]


def _read_classes(classes: Path | list[str], expected: int) -> list[str]:
    if isinstance(classes, (str, Path)):
        try:
            names = [line.strip() for line in Path(classes).read_text().splitlines() if line.strip()]
        except (OSError, UnicodeDecodeError) as e:
            raise ResnetDeployError(f"cannot read the class list {classes}: {e}") from None
    else:
        names = [str(c) for c in classes]
    if len(names) != expected:
        raise ResnetDeployError(f"class list has {len(names)} names but the model has {expected} outputs")
    return names


def resize_preprocess(pre: Preprocess, size: int) -> Preprocess:
    """The same preprocessing for a square input of `size`: crop becomes `size`, resize scales with it."""
    if not 8 <= size <= MAX_SIDE:
        raise ResnetDeployError(f"--input-size must be from 8 to {MAX_SIDE} pixels, found {size}")
    if size == pre.input_size[0] == pre.input_size[1]:
        return pre
    if np.asarray(pre.mean).ndim == 3:
        raise ResnetDeployError("this model subtracts a per-pixel mean image, which fixes its input size "
                                f"{pre.input_size[0]}x{pre.input_size[1]}; drop --input-size")
    resize = None if pre.resize is None else round(pre.resize * size / (pre.crop or pre.input_size[0]))
    crop = None if pre.crop is None else size
    return replace(pre, input_size=(size, size), resize=resize, crop=crop)


def load_calibration(spec: str, preprocess: Preprocess, size: int) -> np.ndarray:
    """`size` training images of a data SPEC, preprocessed as the bundle's, as float32 (N, C, H, W).

    Raises:
        ResnetDeployError: the data is not found, or its images do not have the model's input shape.
    """

    x, _, _ = load_eval_arrays(spec, preprocess, limit=size, split="train")
    expected = (preprocess.channels, *preprocess.input_size)
    if x.ndim != 4 or tuple(x.shape[1:]) != expected or len(x) == 0:
        raise ResnetDeployError(f"calibration data {spec!r} gives arrays of shape {x.shape}; expected (N, "
                                f"{', '.join(map(str, expected))})")
    return x
