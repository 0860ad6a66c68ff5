"""Training data: small sets held whole as uint8 tensors on the training device (crops and flips batch-wise there),
large ones through DataLoader workers with pinned memory. Both give `batches(start_iteration)` of normalised
float32 (N, C, H, W) tensors and labels for this rank, and `eval_batches()` preprocessed by the one `Preprocess`.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch

from resnet_deploy.config import DataConfig
from resnet_deploy.data import augment
from resnet_deploy.data.evaluation import iter_eval_batches, one_line, select_indices
from resnet_deploy.data.sources import IN_MEMORY, SHAPES, check_training_classes, image_folder, load_arrays, locate
from resnet_deploy.data.spec import DataSpec, parse_spec
from resnet_deploy.data.stats import cached_stats, chunks, folder_geometry, make_preprocess, mean_std
from resnet_deploy.runtime.errors import ResnetDeployError
from resnet_deploy.runtime.preprocess import IMAGENET_MEAN, IMAGENET_STD, Preprocess

Batch = tuple[torch.Tensor, torch.Tensor]


class InMemoryData:
    """A small data set held whole (uint8 on `device`); iteration i's batch is a pure function of (seed, i), so a
    resumed run sees exactly the batches the uninterrupted run would have seen.

    Args:
        images: uint8 (N, C, H, W) training images; labels: int64 (N,).
        eval_images / eval_labels: the evaluation split (uint8), normalised once with `Preprocess.normalize`.
        batch_size: images per rank per iteration; rank/world: this process's shard of every epoch's permutation.
    """

    def __init__(self, images: np.ndarray, labels: np.ndarray, classes: list[str], preprocess: Preprocess, *,
                 eval_images: np.ndarray, eval_labels: np.ndarray, batch_size: int, pad: int = 4, seed: int = 0,
                 device: torch.device | str = "cpu", rank: int = 0, world: int = 1) -> None:
        self.classes, self.preprocess, self.in_channels = list(classes), preprocess, images.shape[1]
        self.device, self.batch_size, self.pad, self.seed = torch.device(device), batch_size, pad, seed
        self.rank, self.world = rank, world
        self.images = torch.from_numpy(np.ascontiguousarray(images)).to(self.device)  # (N, C, H, W) uint8
        self.labels = torch.from_numpy(np.asarray(labels, np.int64)).to(self.device)
        self.per_rank = len(labels) // world
        self.iterations_per_epoch = self.per_rank // batch_size
        if self.iterations_per_epoch < 1:
            raise ResnetDeployError(f"{len(labels)} training images are fewer than one batch of {batch_size} x "
                                    f"{world} process(es); lower optim.batch_size")
        self.normalize = augment.Normalizer(preprocess, self.device)
        self.eval_x = torch.from_numpy(preprocess.normalize(eval_images)).to(self.device)  # the one definition
        self.eval_y = torch.from_numpy(np.asarray(eval_labels, np.int64)).to(self.device)
        self._epoch, self._perm = -1, None
        self._gen = torch.Generator(self.device)

    def _epoch_indices(self, epoch: int) -> torch.Tensor:
        if epoch != self._epoch:  # every rank draws the same permutation and takes its own slice of it
            g = torch.Generator().manual_seed(self.seed * 100003 + epoch)
            perm = torch.randperm(len(self.labels), generator=g)[: self.per_rank * self.world]
            self._perm, self._epoch = perm[self.rank::self.world].to(self.device), epoch
        return self._perm

    def batch(self, iteration: int) -> Batch:
        """The augmented, normalised batch of global iteration `iteration` on this rank."""
        epoch, j = divmod(iteration, self.iterations_per_epoch)
        idx = self._epoch_indices(epoch)[j * self.batch_size:(j + 1) * self.batch_size]
        self._gen.manual_seed(self.seed * 1000003 + iteration * 7919 + self.rank)
        x = augment.random_crop_flip(self.normalize(self.images[idx]), self.pad, self._gen)
        return x, self.labels[idx]

    def batches(self, start: int = 0) -> Iterator[Batch]:
        i = start
        while True:
            yield self.batch(i)
            i += 1

    def eval_batches(self, batch_size: int, limit: int | None = None) -> Iterator[Batch]:
        n = len(self.eval_y) if limit is None else min(limit, len(self.eval_y))
        idx = torch.arange(self.rank, n, self.world, device=self.device)
        for i in range(0, len(idx), batch_size):
            yield self.eval_x[idx[i:i + batch_size]], self.eval_y[idx[i:i + batch_size]]


class _ResumableSampler(torch.utils.data.DistributedSampler):
    """DistributedSampler that can start part-way into an epoch (resuming without loading the skipped images)."""

    skip = 0

    def __iter__(self):
        return iter(list(super().__iter__())[self.skip:])


class FolderData:
    """A folder data set (ImageNet, any ImageFolder) read by DataLoader workers; uint8 crops are normalised (and PCA
    lit) batch-wise on the device."""

    def __init__(self, spec: DataSpec, cfg: DataConfig, preprocess: Preprocess, *, batch_size: int, seed: int,
                 device: torch.device | str, rank: int, world: int) -> None:
        self.spec, self.cfg, self.preprocess, self.in_channels = spec, cfg, preprocess, preprocess.channels
        self.device, self.batch_size, self.seed = torch.device(device), batch_size, seed
        self.rank, self.world = rank, world
        size = preprocess.input_size[0]
        if cfg.augment == "scale_pca":
            tf = augment.scale_transform(size, cfg.scale or augment.default_scale(size))
        else:
            from torchvision.transforms import v2
            crop = v2.RandomCrop(size) if cfg.augment == "crop_flip" else v2.CenterCrop(size)
            # a grey model's images: PIL's luma, as the evaluation preprocessing and the runtime convert them
            grey = [v2.Grayscale(1)] if preprocess.channels == 1 else []
            tf = v2.Compose([v2.Resize(preprocess.resize), crop, v2.RandomHorizontalFlip(0.5 if cfg.augment != "none"
                                                                                          else 0.0), *grey,
                             v2.PILToTensor()])
        self.dataset = image_folder(spec, "train", transform=tf, unreadable=cfg.unreadable)
        evaluation = image_folder(spec, "test", unreadable=cfg.unreadable)
        check_training_classes(self.dataset, evaluation)
        self.classes = list(self.dataset.classes)
        self.skipped = {"train": self.dataset.skipped, "evaluation": evaluation.skipped}
        # the same folder for both splits when there are no train/ and val/: its entries counted once
        same = Path(self.dataset.root) == Path(evaluation.root)
        self.ignored = {"train": self.dataset.ignored, **({} if same else {"evaluation": evaluation.ignored})}
        self.sampler = _ResumableSampler(self.dataset, num_replicas=world, rank=rank, shuffle=True, seed=seed,
                                         drop_last=True)
        self.iterations_per_epoch = len(self.sampler) // batch_size
        if self.iterations_per_epoch < 1:
            fits = max(1, len(self.sampler))
            raise ResnetDeployError(f"{len(self.dataset)} training images are fewer than one batch of {batch_size} "
                                    f"x {world} process(es); lower optim.batch_size (--set optim.batch_size={fits} "
                                    "or less)")
        self.normalize = augment.Normalizer(preprocess, self.device)
        # The augmentation RNG; public because a checkpoint saves and restores its state.
        self.generator = torch.Generator(self.device).manual_seed(seed * 7 + rank)

    def batches(self, start: int = 0) -> Iterator[Batch]:
        from torch.utils.data import DataLoader

        epoch, j = divmod(start, self.iterations_per_epoch)
        cuda = self.device.type == "cuda"
        while True:
            self.sampler.set_epoch(epoch)
            self.sampler.skip = j * self.batch_size
            loader = DataLoader(self.dataset, batch_size=self.batch_size, sampler=self.sampler, drop_last=True,
                                num_workers=self.cfg.workers, pin_memory=cuda,
                                persistent_workers=False, prefetch_factor=4 if self.cfg.workers else None)
            try:
                for x, y in loader:
                    yield self._finish(x.to(self.device, non_blocking=cuda)), y.to(self.device, non_blocking=cuda)
            except ResnetDeployError as e:
                raise ResnetDeployError(one_line(e)) from None
            epoch, j = epoch + 1, 0

    def _finish(self, x: torch.Tensor) -> torch.Tensor:
        light = None
        if self.cfg.augment == "scale_pca" and self.cfg.pca_std > 0:
            light = augment.pca_lighting(len(x), self.cfg.pca_std, self.generator, self.device)
        return self.normalize(x, light)

    def eval_batches(self, batch_size: int, limit: int | None = None) -> Iterator[Batch]:
        # A limited evaluation takes a seeded random subset: ImageNet's val/ is sorted by class.
        _, _, it = iter_eval_batches(self.spec, self.preprocess, batch_size=batch_size, limit=limit, seed=0,
                                     workers=self.cfg.workers, rank=self.rank, world=self.world,
                                     unreadable=self.cfg.unreadable)
        for x, y in it:
            yield torch.from_numpy(x).to(self.device), torch.from_numpy(y).to(self.device)


def prepare(cfg: DataConfig, *, default_size: int, batch_size: int, seed: int, device: torch.device | str = "cpu",
            rank: int = 0, world: int = 1) -> InMemoryData | FolderData:
    """The training data of a recipe, with its `Preprocess` (per-pixel mean image + per-channel std, cached).

    Args:
        default_size: input side when the recipe does not set data.input_size and the data set has none (folders).
        batch_size: images per rank per iteration.
    """
    ds = parse_spec(cfg.spec)
    if ds.name not in IN_MEMORY:
        if cfg.val_split:
            raise ResnetDeployError("data.val_split applies to Fashion-MNIST and CIFAR-10; give a folder data set "
                                    "its own val/ folder")
        return _prepare_folder(ds, cfg, default_size, batch_size, seed, device, rank, world)
    if cfg.augment == "scale_pca":
        raise ResnetDeployError(f"data.augment 'scale_pca' is §3.4's ImageNet augmentation; {ds.name} uses 'crop_flip'")
    if cfg.normalize != "per_pixel_mean":
        raise ResnetDeployError(f"data.normalize {cfg.normalize!r} applies to folder data sets (RGB images); "
                                f"{ds.name} uses 'per_pixel_mean'")
    own = SHAPES[ds.name][0]
    if cfg.channels not in (None, own):
        raise ResnetDeployError(f"data.channels applies to folder data sets; {ds.name} images have {own} "
                                f"channel(s): leave it unset")
    train = load_arrays(ds, "train", cfg.download)
    h = train.images.shape[2]
    if cfg.input_size not in (None, h):
        raise ResnetDeployError(f"{ds.name} images are {h}x{h}; data.input_size {cfg.input_size} is not supported "
                                f"(the networks are fully convolutional: leave it unset or set it to {h})")
    images, labels, test = train.images, train.labels, None
    if cfg.val_split:  # §4.2's 45k/5k split: a fixed random hold-out, independent of the run's seed
        perm = np.random.default_rng(0).permutation(len(labels))
        tr, va = perm[:-cfg.val_split], perm[-cfg.val_split:]
        test, images, labels = (images[va], labels[va]), images[tr], labels[tr]
    if test is None:
        t = load_arrays(ds, "test")
        test = (t.images, t.labels)
    root = locate(ds, cfg.download).resolve()
    key = {"name": ds.name, "root": str(root), "mtime": root.stat().st_mtime, "n": len(labels),
           "val_split": cfg.val_split}
    mean, std = cached_stats(key, lambda: mean_std(chunks(images)))
    pp = make_preprocess(mean, std, h)
    return InMemoryData(images, labels, list(train.classes), pp, eval_images=test[0], eval_labels=test[1],
                        batch_size=batch_size, pad=cfg.pad if cfg.augment == "crop_flip" else 0, seed=seed,
                        device=device, rank=rank, world=world)


def _prepare_folder(ds: DataSpec, cfg, default_size, batch_size, seed, device, rank, world) -> FolderData:
    size = cfg.input_size or default_size
    resize, crop = folder_geometry(size)
    c = cfg.channels or 3
    if c == 1 and (cfg.normalize == "imagenet" or cfg.augment == "scale_pca"):
        what = "data.normalize 'imagenet'" if cfg.normalize == "imagenet" else "data.augment 'scale_pca'"
        raise ResnetDeployError(f"{what} is defined for RGB images; with data.channels 1 use 'per_pixel_mean' and "
                                "'crop_flip', or set data.channels 3")
    plain = Preprocess(input_size=(size, size), channels=c, resize=resize, crop=crop, mean=(0.0,) * c, std=(1.0,) * c)
    if cfg.normalize == "imagenet":  # what torchvision's weights were trained with
        pp = Preprocess(input_size=(size, size), channels=3, resize=resize, crop=crop, mean=IMAGENET_MEAN,
                        std=IMAGENET_STD)
        return FolderData(ds, cfg, pp, batch_size=batch_size, seed=seed, device=device, rank=rank, world=world)
    folder = image_folder(ds, "train", unreadable=cfg.unreadable)
    idx = select_indices(len(folder), cfg.stats_images, seed=0)
    key = {"name": ds.name, "root": str(locate(ds).resolve()), "n": len(folder), "size": size, "resize": resize,
           "stats_images": len(idx), **({"channels": c} if c != 3 else {})}

    def compute():  # the mean image of the evaluation view (resize + centre crop) of up to stats_images images
        _, _, it = iter_eval_batches(ds, plain, batch_size=64, limit=cfg.stats_images, split="train", seed=0,
                                     workers=cfg.workers, unreadable=cfg.unreadable)
        return mean_std(x for x, _ in it)

    mean, std = cached_stats(key, compute)
    pp = make_preprocess(mean, std, size, resize, crop)
    return FolderData(ds, cfg, pp, batch_size=batch_size, seed=seed, device=device, rank=rank, world=world)
