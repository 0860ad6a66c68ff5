"""Evaluation images as arrays, preprocessed by the one `Preprocess` (a checkpoint's or a bundle's): what `eval`,
export's INT8 calibration and validate read. Centre crop by `Preprocess.__call__`; 10-crop (§3.4) by the same resize,
torchvision's `ten_crop`, and `Preprocess.normalize`.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np

from resnet_deploy.data.sources import IN_MEMORY, image_folder, load_arrays
from resnet_deploy.data.spec import DataSpec, parse_spec
from resnet_deploy.runtime.errors import ResnetDeployError
from resnet_deploy.runtime.preprocess import Preprocess, resize_shorter


def select_indices(n: int, limit: int | None, seed: int | None) -> np.ndarray:
    """All of 0..n-1; or `limit` of them: a seeded random subset (sorted), or the first `limit` when seed is None."""
    if limit is None or limit >= n:
        return np.arange(n)
    if seed is None:
        return np.arange(limit)
    return np.sort(np.random.default_rng(seed).choice(n, size=limit, replace=False))


def ten_crop(preprocess: Preprocess, image: Any) -> np.ndarray:
    """§3.4's 10-crop: four corners and centre of the resized image, and their mirror images -> (10, C, H, W)."""
    from torchvision.transforms.functional import ten_crop as tv_ten_crop

    if preprocess.crop is None:
        h, w = preprocess.input_size
        raise ResnetDeployError("10-crop needs a model whose preprocessing has a crop step (ImageNet-style resize + "
                                f"crop); this one takes {h}x{w} images as is")
    pil = preprocess.load(image)
    if preprocess.resize is not None:
        pil = resize_shorter(pil, preprocess.resize)
    crops = tv_ten_crop(pil, [preprocess.crop, preprocess.crop])
    arr = np.stack([np.asarray(c, np.uint8).reshape(c.size[1], c.size[0], -1).transpose(2, 0, 1) for c in crops])
    return preprocess.normalize(arr)


class _Apply:
    """Picklable per-image transform for DataLoader workers: Preprocess (centre crop) or 10-crop."""

    def __init__(self, preprocess: Preprocess, crops10: bool) -> None:
        self.preprocess, self.crops10 = preprocess, crops10

    def __call__(self, image: Any) -> np.ndarray:
        return ten_crop(self.preprocess, image) if self.crops10 else self.preprocess(image)


def _native(preprocess: Preprocess, images: np.ndarray) -> bool:
    c, h, w = images.shape[1:]
    return (preprocess.resize is None and preprocess.crop is None and tuple(preprocess.input_size) == (h, w)
            and preprocess.channels == c)


def _array_batches(images: np.ndarray, labels: np.ndarray, idx: np.ndarray, preprocess: Preprocess, batch: int,
                   crops10: bool) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    fast = _native(preprocess, images) and not crops10
    apply = _Apply(preprocess, crops10)
    for i in range(0, len(idx), batch):
        j = idx[i:i + batch]
        if fast:  # already the model's size: the same normalize(), without a PIL round trip per image
            x = preprocess.normalize(images[j])
        else:
            x = np.stack([apply(np.ascontiguousarray(images[k].transpose(1, 2, 0))) for k in j])
        yield x, labels[j]


def iter_eval_batches(spec: str | DataSpec, preprocess: Preprocess, *, batch_size: int = 256, limit: int | None = None,
                      split: str = "test", seed: int | None = None, crops10: bool = False, workers: int = 0,
                      rank: int = 0, world: int = 1, unreadable: str = "error",
                      ) -> tuple[list[str], int, Iterator[tuple[np.ndarray, np.ndarray]]]:
    """Batches of preprocessed evaluation images: (class names, number of images, iterator of (x, labels)).

    x is float32 (B, C, H, W), or (B, 10, C, H, W) with `crops10`. `rank`/`world` take every world-th image (for
    evaluating a shard on each process). `unreadable` ("error" or "skip") is `sources.image_folder`'s, for folders.
    """
    if split not in ("train", "test"):
        raise ResnetDeployError(f"split must be 'train' or 'test', found {split!r}")
    ds = parse_spec(spec)
    if ds.name in IN_MEMORY:
        arrays = load_arrays(ds, split)
        idx = select_indices(len(arrays.labels), limit, seed)[rank::world]
        return (list(arrays.classes), len(idx),
                _array_batches(arrays.images, arrays.labels, idx, preprocess, batch_size, crops10))
    return _folder_batches(ds, preprocess, batch_size, limit, split, seed, crops10, workers, rank, world, unreadable)


def _folder_batches(ds, preprocess, batch_size, limit, split, seed, crops10, workers, rank, world, unreadable):
    import torch
    from torch.utils.data import DataLoader, Subset

    folder = image_folder(ds, split, transform=_Apply(preprocess, crops10), unreadable=unreadable)
    idx = select_indices(len(folder), limit, seed)[rank::world]
    loader = DataLoader(Subset(folder, idx.tolist()), batch_size=batch_size, num_workers=workers, shuffle=False)

    def gen() -> Iterator[tuple[np.ndarray, np.ndarray]]:
        it = iter(loader)
        while True:
            try:
                x, y = next(it)
            except StopIteration:
                return
            except ResnetDeployError as e:  # raised in a worker: keep only the message, not the worker's traceback
                raise ResnetDeployError(one_line(e)) from None
            yield torch.as_tensor(x).numpy(), torch.as_tensor(y).numpy().astype(np.int64)

    return list(folder.classes), len(idx), gen()


def one_line(e: BaseException) -> str:
    """The user's message of an error re-raised from a DataLoader worker (whose text carries the worker traceback)."""
    lines = [ln for ln in str(e).splitlines() if ln.strip()]
    for ln in reversed(lines):
        if "ResnetDeployError: " in ln:
            return ln.split("ResnetDeployError: ", 1)[1]
    return lines[-1] if lines else type(e).__name__


def load_eval_arrays(spec: str | DataSpec, preprocess: Preprocess, limit: int | None = None, split: str = "test",
                     seed: int | None = 0) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Real images of a data SPEC preprocessed with `preprocess` (the checkpoint's or bundle's).

    Args:
        spec: "fashion-mnist", "cifar10:/path", "imagenet:/path", "folder:/path".
        preprocess: the model's preprocessing.
        limit: at most this many images: a seeded random subset (e.g. INT8 calibration), or the first N if seed=None.
        split: "test" (ImageNet: val/) or "train".
        seed: seed of the random subset; None takes the first `limit` images.

    Returns:
        x float32 (N, C, H, W), labels int64 (N,), class names.

    Raises:
        ResnetDeployError: the data is not found (the message lists where it looked) or an image is unreadable.
    """
    spec = parse_spec(spec)
    classes, n, batches = iter_eval_batches(spec, preprocess, limit=limit, split=split, seed=seed)
    xs, ys = zip(*batches, strict=True) if n else ((), ())
    if not xs:
        raise ResnetDeployError(f"no images found for data spec {str(spec)!r} ({split} split)")
    return np.concatenate(xs).astype(np.float32), np.concatenate(ys).astype(np.int64), classes
