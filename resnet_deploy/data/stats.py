"""The training set's per-pixel mean image (§3.4, §4.2: "the per-pixel mean is subtracted") and per-channel std,
computed once, cached, and handed on as the one `Preprocess` that evaluation, export and the runtime use.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

from resnet_deploy.runtime.cache import cache_root
from resnet_deploy.runtime.errors import ResnetDeployError
from resnet_deploy.runtime.files import atomic_write
from resnet_deploy.runtime.preprocess import Preprocess


def mean_std(batches: Iterable[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Per-pixel mean (C, H, W) and per-channel std (C,) in [0, 1] units (float64) of image batches (N, C, H, W),
    uint8 (0..255) or float (already in [0, 1])."""
    s = sq = None
    n = 0
    for b in batches:
        x = b.astype(np.float64) / 255.0 if b.dtype == np.uint8 else b.astype(np.float64)
        s = x.sum(0) if s is None else s + x.sum(0)
        sq = (x ** 2).sum((0, 2, 3)) if sq is None else sq + (x ** 2).sum((0, 2, 3))
        n += len(x)
    if not n:
        raise ResnetDeployError("no training images to compute the mean image from")
    mean = s / n
    var = sq / (n * mean.shape[1] * mean.shape[2]) - mean.mean((1, 2)) ** 2  # std about the channel mean
    return mean, np.sqrt(np.maximum(var, 1e-12))


def chunks(images: np.ndarray, size: int = 4096) -> Iterator[np.ndarray]:
    """Consecutive slices of an array, so statistics of 60,000 images never need a float copy of them all."""
    for i in range(0, len(images), size):
        yield images[i:i + size]


def _cache_path(key: dict[str, Any]) -> Path:
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]
    return cache_root() / "stats" / f"{key['name']}-{digest}.npz"


def cached_stats(key: dict[str, Any], compute) -> tuple[np.ndarray, np.ndarray]:
    """`compute()` -> (mean, std) once per `key`; later calls read the cache (an unwritable cache is only skipped)."""
    path = _cache_path(key)
    if path.is_file():
        try:
            with np.load(path) as z:
                return z["mean"], z["std"]
        except (OSError, ValueError, KeyError):
            pass  # a damaged cache file is recomputed and replaced
    mean, std = compute()
    try:
        atomic_write(path, lambda f: np.savez(f, mean=mean, std=std))
    except OSError:
        pass
    return mean, std


def make_preprocess(mean: np.ndarray, std: np.ndarray, input_size: int, resize: int | None = None,
                    crop: int | None = None) -> Preprocess:
    """The evaluation `Preprocess` with a per-pixel mean image and per-channel std."""
    c = mean.shape[0]
    mean_t = tuple(tuple(tuple(float(v) for v in row) for row in ch) for ch in mean)
    return Preprocess(input_size=(input_size, input_size), channels=c, resize=resize, crop=crop, mean=mean_t,
                      std=tuple(float(s) for s in std))


def folder_geometry(input_size: int) -> tuple[int, int]:
    """Evaluation resize and crop for folder data sets: shorter side to 256/224 of the crop, centre crop (§3.4)."""
    return int(round(input_size * 256 / 224)), input_size
