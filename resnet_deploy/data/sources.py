"""Readers for the data sets on disk: Fashion-MNIST IDX `.gz`, CIFAR-10 (torchvision's pickled batches), and image
folders (ImageNet's train/val, any ImageFolder). Small sets come back as uint8 arrays; folders as torchvision
`ImageFolder`s whose loader turns an unreadable image into a one-line error naming the file, or, asked to skip them,
that decode every image once when opened and leave the unreadable ones out (counted).

Folders come from anywhere, so they are walked by this module, not by torchvision (which follows every link): class
folders are the split's sub-folders that are neither hidden nor links; inside one, hidden entries (`.git/`,
`.ipynb_checkpoints/`, `._x.jpg`), links to folders, links that lead out of the class folder or nowhere, and anything
that is not a regular file (a FIFO would block the reader) are left out, and listed with the reason in the result's
`ignored`. So no image is read twice or under another class's label, and the walk ends.
"""

from __future__ import annotations

import gzip
import os
import pickle
import stat
import struct
from collections.abc import Iterator
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from resnet_deploy.data.spec import DataSpec, locate
from resnet_deploy.runtime.errors import ResnetDeployError, first_line

FMNIST_CLASSES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag",
                  "Ankle boot")
IN_MEMORY = ("fashion-mnist", "cifar10")
SHAPES = {"fashion-mnist": (1, 28, 28), "cifar10": (3, 32, 32)}  # (C, H, W) of the in-memory sets' images


@dataclass(frozen=True)
class ArraySet:
    """A small data set held whole: images uint8 (N, C, H, W), labels int64 (N,), class names."""

    images: np.ndarray
    labels: np.ndarray
    classes: tuple[str, ...]


def read_idx(path: Path) -> np.ndarray:
    """Read an IDX file (LeCun's MNIST format), gzipped or not, as a uint8 array of its stored shape."""
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as f:
            data = f.read()
        zero, dtype, ndim = struct.unpack(">HBB", data[:4])
        if zero != 0 or dtype != 0x08:
            raise ValueError(f"magic {data[:4].hex()} is not an unsigned-byte IDX file")
        shape = struct.unpack(f">{ndim}I", data[4:4 + 4 * ndim])
        arr = np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim)
        return arr.reshape(shape)
    except (OSError, EOFError, ValueError, struct.error) as e:
        raise ResnetDeployError(f"cannot read IDX file {path}: {e}") from None


def _idx(root: Path, name: str) -> Path:
    p = root / name
    return p if p.is_file() else root / name[:-3]


def load_fashion_mnist(root: Path, split: str) -> ArraySet:
    """Fashion-MNIST from its four IDX files: 60,000 train / 10,000 test, 28x28 grey (N, 1, 28, 28)."""
    prefix = "train" if split == "train" else "t10k"
    images = read_idx(_idx(root, f"{prefix}-images-idx3-ubyte.gz"))
    labels = read_idx(_idx(root, f"{prefix}-labels-idx1-ubyte.gz")).astype(np.int64)
    if images.ndim != 3 or len(images) != len(labels):
        raise ResnetDeployError(f"Fashion-MNIST files in {root} disagree: images {images.shape}, labels {labels.shape}")
    return ArraySet(images[:, None].copy(), labels, FMNIST_CLASSES)


def _unpickle(path: Path) -> dict:
    # torchvision's CIFAR10 reads these batches the same way; they are the data set's published format.
    try:
        with open(path, "rb") as f:
            return pickle.load(f, encoding="latin1")
    except (OSError, EOFError, pickle.UnpicklingError, ValueError) as e:
        raise ResnetDeployError(f"cannot read CIFAR-10 batch {path}: {e}") from None


def load_cifar10(root: Path, split: str) -> ArraySet:
    """CIFAR-10 from torchvision's `cifar-10-batches-py` folder: 50,000 train / 10,000 test, 32x32 RGB."""
    names = [f"data_batch_{i}" for i in range(1, 6)] if split == "train" else ["test_batch"]
    missing = [n for n in names if not (root / n).is_file()]
    if missing:
        raise ResnetDeployError(f"CIFAR-10 folder {root} lacks {', '.join(missing)}")
    batches = [_unpickle(root / n) for n in names]
    images = np.concatenate([np.asarray(b["data"], dtype=np.uint8).reshape(-1, 3, 32, 32) for b in batches])
    labels = np.concatenate([np.asarray(b["labels"], dtype=np.int64) for b in batches])
    meta = root / "batches.meta"
    classes = tuple(_unpickle(meta)["label_names"]) if meta.is_file() else tuple(str(i) for i in range(10))
    return ArraySet(images, labels, classes)


def load_arrays(spec: DataSpec, split: str, download: bool = False) -> ArraySet:
    """A small data set (Fashion-MNIST, CIFAR-10) as uint8 arrays; split is "train" or "test"."""
    root = locate(spec, download)
    return load_fashion_mnist(root, split) if spec.name == "fashion-mnist" else load_cifar10(root, split)


def pil_loader(path: str) -> Image.Image:
    """Open an image file as RGB; an unreadable file is a ResnetDeployError naming it."""
    try:
        with Image.open(path) as im:
            return im.convert("RGB")
    except (UnidentifiedImageError, Image.DecompressionBombError, OSError, ValueError, SyntaxError, EOFError,
            struct.error) as e:  # PIL's decoders raise all of these on malformed files (SyntaxError: broken PNGs);
        # DecompressionBombError: a header claiming more than PIL's limit of pixels (a 177-byte PNG of 100000x100000)
        raise ResnetDeployError(f"not a readable image: {path} ({first_line(e)[:300]})") from None


@cache
def _readable(path: str, mtime_ns: int, size: int) -> bool:
    # Keyed by mtime and size so that the train split, its statistics and each evaluation decode a file only once.
    try:
        pil_loader(path)
        return True
    except ResnetDeployError:
        return False


def split_dir(spec: DataSpec, split: str) -> Path:
    """The class-folder root of a split: ImageNet's train/ or val/; a folder's train/ and val/ (or test/) when it has
    them, else the whole folder for both splits."""
    root = locate(spec)
    if spec.name == "imagenet" or (root / "train").is_dir():
        names = ("train",) if split == "train" else ("val", "test")
        for n in names:
            if (root / n).is_dir():
                return root / n
        raise ResnetDeployError(f"{root} has no {' or '.join(n + '/' for n in names)} folder for the {split} split")
    return root


def _hidden(name: str) -> bool:
    return name.startswith(".")


def class_folders(root: Path, ignored: list[tuple[str, str]] | None = None) -> list[str]:
    """The class folders of a split, sorted: its sub-folders that are not hidden and not links (a link may alias
    another class's folder); what is left out goes to `ignored` as (path, reason)."""
    ignored = [] if ignored is None else ignored
    names = []
    for entry in sorted(os.scandir(root), key=lambda e: e.name):
        if _hidden(entry.name):
            if entry.is_dir(follow_symlinks=False):
                ignored.append((entry.path, "hidden"))
        elif entry.is_symlink():
            ignored.append((entry.path, "a link (class folders must be folders of their own)"))
        elif entry.is_dir(follow_symlinks=False):
            names.append(entry.name)
    return names


def class_files(folder: Path, ignored: list[tuple[str, str]]) -> Iterator[Path]:
    """The files under one class folder, in name order, without leaving it: hidden entries, links to folders, links
    leading out of the folder or nowhere, and what is not a regular file are passed over (into `ignored`)."""
    real = folder.resolve()
    for top, dirs, files in os.walk(folder, followlinks=False):
        kept = []
        for d in sorted(dirs):
            p = Path(top) / d
            if _hidden(d) or p.is_symlink():
                ignored.append((str(p), "hidden" if _hidden(d) else "a link to a folder"))
            else:
                kept.append(d)
        dirs[:] = kept
        for name in sorted(files):
            p = Path(top) / name
            why = "hidden" if _hidden(name) else None
            try:
                if why is None and p.is_symlink():
                    target = p.resolve(strict=True)
                    why = None if real in target.parents else "a link out of its class folder"
                    st = target.stat()
                else:
                    st = p.lstat()
                if why is None and not stat.S_ISREG(st.st_mode):
                    why = "not a regular file"
            except (OSError, RuntimeError):  # RuntimeError: a link loop on Python < 3.13
                why = "a link that leads nowhere"
            if why is None:
                yield p
            else:
                ignored.append((str(p), why))


@cache
def _folder_class() -> type:
    from torchvision.datasets import ImageFolder

    class ClassFolders(ImageFolder):
        """torchvision's ImageFolder, walked by `class_folders` and `class_files`; `ignored` lists what was left out
        and why."""

        def __init__(self, root: str, **kwargs) -> None:
            self.ignored: list[tuple[str, str]] = []
            super().__init__(root, **kwargs)

        def find_classes(self, directory: str) -> tuple[list[str], dict[str, int]]:
            classes = class_folders(Path(directory), self.ignored)
            if not classes:
                raise FileNotFoundError(f"Couldn't find any class folder in {directory}.")
            return classes, {c: i for i, c in enumerate(classes)}

        def make_dataset(self, directory: str, class_to_idx: dict[str, int], extensions=None, is_valid_file=None,
                         allow_empty: bool = False) -> list[tuple[str, int]]:
            return [(str(p), i) for c, i in sorted(class_to_idx.items(), key=lambda kv: kv[1])
                    for p in class_files(Path(directory) / c, self.ignored) if is_valid_file(str(p))]

    return ClassFolders


def image_folder(spec: DataSpec, split: str, transform=None, unreadable: str = "error"):
    """A torchvision `ImageFolder` over the split's class folders, with the one-line-error loader.

    Args:
        unreadable: "error" opens nothing up front (the first unreadable image met stops the caller, naming it);
            "skip" decodes every image now and leaves out those that fail, listed in the result's `skipped`.

    Raises:
        ResnetDeployError: no class folders, or a class folder without (readable) images, named.
    """
    from torchvision.datasets.folder import IMG_EXTENSIONS, has_file_allowed_extension

    d = split_dir(spec, split)
    skipped: list[str] = []

    def valid(path: str) -> bool:
        if not has_file_allowed_extension(path, IMG_EXTENSIONS):
            return False
        if unreadable == "skip":
            st = Path(path).stat()
            if not _readable(path, st.st_mtime_ns, st.st_size):
                skipped.append(path)
                return False
        return True

    try:
        folder = _folder_class()(str(d), transform=transform, loader=pil_loader, is_valid_file=valid, allow_empty=True)
    except (OSError, RuntimeError) as e:  # FileNotFoundError: "Couldn't find any class folder in ..."
        raise ResnetDeployError(f"no class folders under {d}: {first_line(e)[:200]}") from None
    counts = np.bincount(np.asarray(folder.targets, dtype=np.int64), minlength=len(folder.classes))
    empty = [c for c, n in zip(folder.classes, counts, strict=True) if n == 0]
    if empty:
        what = "readable images" if skipped else f"images ({', '.join(IMG_EXTENSIONS[:4])}, ...)"
        more = f" (nor do {', '.join(empty[1:4])}{' ...' if len(empty) > 4 else ''})" if len(empty) > 1 else ""
        raise ResnetDeployError(f"class folder {d / empty[0]} holds no {what}{more}; add images or remove it")
    folder.skipped = sorted(skipped)
    return folder


def check_training_classes(train, evaluation) -> None:
    """Refuse training folders a classifier cannot learn from: one class, or other classes in the evaluation split.

    Args:
        train / evaluation: the splits' `image_folder`s (the same folder when there are no train/ and val/).
    """
    root = Path(train.root)
    if len(train.classes) < 2:
        raise ResnetDeployError(f"{root} has one class folder ({', '.join(train.classes)}); a classifier needs at "
                                "least two: add a folder of images for every class")
    if list(train.classes) != list(evaluation.classes):
        only_t = sorted(set(train.classes) - set(evaluation.classes)) or ["none"]
        only_e = sorted(set(evaluation.classes) - set(train.classes)) or ["none"]
        ev = Path(evaluation.root)
        raise ResnetDeployError(f"class folders differ between {root} and {ev}: only in {root.name}/: "
                                f"{', '.join(only_t[:5])}; only in {ev.name}/: {', '.join(only_e[:5])}; every class "
                                "needs a folder in both")
