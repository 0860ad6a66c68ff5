"""The one data SPEC syntax (`fashion-mnist`, `cifar10:/data/cifar`, `imagenet:/data/imagenet`, `folder:/my/images`)
and where each data set is looked for: the SPEC's path, `$RESNET_DEPLOY_DATA`, Debian's Fashion-MNIST package, then a
torchvision download only when asked.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from resnet_deploy.runtime.cache import cache_root
from resnet_deploy.runtime.errors import ResnetDeployError

NAMES = ("fashion-mnist", "cifar10", "imagenet", "folder")
ALIASES = {"fashion_mnist": "fashion-mnist", "fashionmnist": "fashion-mnist", "fmnist": "fashion-mnist",
           "cifar-10": "cifar10", "cifar_10": "cifar10", "imagefolder": "folder"}
DEBIAN_FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")
FMNIST_FILES = ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz", "t10k-images-idx3-ubyte.gz",
                "t10k-labels-idx1-ubyte.gz")
CIFAR_DIR = "cifar-10-batches-py"  # torchvision's CIFAR10 folder format
HOW_TO_GET = {
    "fashion-mnist": "install Debian's dataset-fashion-mnist package, pass --data fashion-mnist:/dir/with/idx.gz "
                     "files, or add --download to fetch it with torchvision",
    "cifar10": f"pass --data cifar10:/dir (holding {CIFAR_DIR}/), or add --download to fetch it with torchvision",
    "imagenet": "pass --data imagenet:/dir holding train/ and val/ class folders",
    "folder": "pass --data folder:/dir holding one sub-folder of images per class",
}


@dataclass(frozen=True)
class DataSpec:
    """A parsed data SPEC: the data set's name and, optionally, a path."""

    name: str
    path: Path | None = None

    def __str__(self) -> str:
        return self.name if self.path is None else f"{self.name}:{self.path}"


def parse_spec(spec: str | DataSpec) -> DataSpec:
    """Parse `NAME` or `NAME:PATH` (a DataSpec is already parsed: returned as it is, so that an entry point parses
    the user's SPEC once and hands the DataSpec down).

    Raises:
        ResnetDeployError: unknown data set name, or a name that needs a path given without one.
    """
    if isinstance(spec, DataSpec):
        return spec
    name, sep, path = spec.strip().partition(":")
    name = ALIASES.get(name.lower(), name.lower())
    if name not in NAMES:
        raise ResnetDeployError(f"unknown data set {name!r} in data spec {spec!r}; choose one of: "
                                f"{', '.join(NAMES)} (optionally NAME:PATH, e.g. cifar10:/data/cifar)")
    return DataSpec(name, Path(path).expanduser() if sep and path else None)


def _holds(name: str, d: Path) -> bool:
    if name == "fashion-mnist":
        return all((d / f).is_file() or (d / f[:-3]).is_file() for f in FMNIST_FILES)
    if name == "cifar10":
        return (d / CIFAR_DIR / "test_batch").is_file() or (d / "test_batch").is_file()
    if name == "imagenet":
        return (d / "train").is_dir() or (d / "val").is_dir()
    return d.is_dir() and any(p.is_dir() for p in d.iterdir())


def _roots_to_try(name: str, d: Path) -> list[Path]:
    # A root may hold the files itself, or a sub-folder named after the data set (torchvision's FashionMNIST/raw too).
    subs = {"fashion-mnist": ("fashion-mnist", "FashionMNIST/raw"), "cifar10": ("cifar10", "cifar-10"),
            "imagenet": ("imagenet",), "folder": ()}[name]
    return [d, *(d / s for s in subs)]


def locate(spec: DataSpec, download: bool = False) -> Path:
    """The directory holding the data set, found in the documented order.

    Raises:
        ResnetDeployError: one message listing every place looked in and how to get the data.
    """
    looked = []
    if spec.path is not None:
        for c in _roots_to_try(spec.name, spec.path):
            if _holds(spec.name, c):
                return _root(spec.name, c)
        raise ResnetDeployError(f"{spec.name} not found at {spec.path} (expected {_expected(spec.name)}); "
                                f"{HOW_TO_GET[spec.name]}")
    looked.append("--data (no path given)")
    env = os.environ.get("RESNET_DEPLOY_DATA")
    if env:
        for c in _roots_to_try(spec.name, Path(env)):
            if _holds(spec.name, c):
                return _root(spec.name, c)
        looked.append(f"$RESNET_DEPLOY_DATA={env} (no {spec.name} there)")
    else:
        looked.append("$RESNET_DEPLOY_DATA (not set)")
    if spec.name == "fashion-mnist":
        if _holds(spec.name, DEBIAN_FASHION_MNIST):
            return DEBIAN_FASHION_MNIST
        looked.append(f"{DEBIAN_FASHION_MNIST} (missing)")
    if spec.name in ("fashion-mnist", "cifar10"):
        # An earlier `--download` put it here: later commands (export's calibration, validate) find it without one.
        root = Path(env) if env else cache_root() / "data"
        fetched = root / "FashionMNIST" / "raw" if spec.name == "fashion-mnist" else root
        if _holds(spec.name, fetched):
            return _root(spec.name, fetched)
        if download:
            return _download(spec.name, root)
    looked.append("torchvision download (not asked; add --download)" if spec.name in ("fashion-mnist", "cifar10")
                  else "no download exists for this data set")
    raise ResnetDeployError(f"{spec.name} not found; looked in: {'; '.join(looked)}. "
                            f"To get it: {HOW_TO_GET[spec.name]}")


def _expected(name: str) -> str:
    return {"fashion-mnist": "the four IDX .gz files", "cifar10": f"{CIFAR_DIR}/ with test_batch",
            "imagenet": "train/ and val/ class folders", "folder": "one sub-folder of images per class"}[name]


def _root(name: str, d: Path) -> Path:
    return d / CIFAR_DIR if name == "cifar10" and (d / CIFAR_DIR).is_dir() else d


def _download(name: str, root: Path) -> Path:
    import torchvision

    root.mkdir(parents=True, exist_ok=True)
    try:
        if name == "fashion-mnist":
            torchvision.datasets.FashionMNIST(root, train=True, download=True)
            torchvision.datasets.FashionMNIST(root, train=False, download=True)
            return root / "FashionMNIST" / "raw"
        torchvision.datasets.CIFAR10(root, train=True, download=True)
        return root / CIFAR_DIR
    except Exception as e:  # network errors come in many types (URLError, HTTPError, RuntimeError, OSError)
        raise ResnetDeployError(f"downloading {name} to {root} failed ({type(e).__name__}: {e}); "
                                f"{HOW_TO_GET[name]}") from None
