"""Data: SPEC parsing and lookup, every data set format on tiny generated files, the per-pixel mean, augmentations,
and evaluation arrays through the one Preprocess."""

from __future__ import annotations

import gzip
import pickle
import struct
from pathlib import Path

import numpy as np
import pytest
import torch

from resnet_deploy.config import DataConfig
from resnet_deploy.data import augment, load_eval_arrays, parse_spec, read_idx, ten_crop
from resnet_deploy.data import spec as spec_mod
from resnet_deploy.data.evaluation import select_indices
from resnet_deploy.data.pipeline import FolderData, prepare
from resnet_deploy.data.sources import load_arrays
from resnet_deploy.runtime.errors import ResnetDeployError
from resnet_deploy.runtime.preprocess import Preprocess


# ------------------------------------------------------------------------------------------------- fixture writers
def write_idx(path: Path, arr: np.ndarray) -> None:
    header = struct.pack(">HBB", 0, 0x08, arr.ndim) + struct.pack(f">{arr.ndim}I", *arr.shape)
    with gzip.open(path, "wb") as f:
        f.write(header + arr.astype(np.uint8).tobytes())


def write_fmnist(root: Path, n_train: int = 64, n_test: int = 32, size: int = 12, seed: int = 0) -> Path:
    """Fashion-MNIST's four IDX .gz files with random images; the label sets the image's brightness (learnable)."""
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        y = rng.integers(0, 10, n).astype(np.uint8)
        x = (rng.integers(0, 60, (n, size, size)) + y[:, None, None] * 19).astype(np.uint8)
        write_idx(root / f"{prefix}-images-idx3-ubyte.gz", x)
        write_idx(root / f"{prefix}-labels-idx1-ubyte.gz", y)
    return root


def write_cifar(root: Path, n_train: int = 50, n_test: int = 20, seed: int = 0) -> Path:
    """torchvision's cifar-10-batches-py folder with random 32x32 images."""
    rng = np.random.default_rng(seed)
    d = root / "cifar-10-batches-py"
    d.mkdir(parents=True, exist_ok=True)
    per = n_train // 5
    for name, n in [*((f"data_batch_{i}", per) for i in range(1, 6)), ("test_batch", n_test)]:
        batch = {"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8), "labels": rng.integers(0, 10, n).tolist()}
        (d / name).write_bytes(pickle.dumps(batch))
    (d / "batches.meta").write_bytes(pickle.dumps({"label_names": [f"class{i}" for i in range(10)]}))
    return root


def write_folder(root: Path, classes=("cat", "dog", "eel"), per_class: int = 4, size=(40, 30), splits=True,
                 seed: int = 0) -> Path:
    """Class folders of random RGB PNGs, with train/ and val/ when `splits`."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    for split in ("train", "val") if splits else ("",):
        for c in classes:
            d = root / split / c
            d.mkdir(parents=True, exist_ok=True)
            for i in range(per_class):
                Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)).save(d / f"{i}.png")
    return root


@pytest.fixture(autouse=True)
def _isolated(tmp_path, monkeypatch):
    """No test sees the real data sets or writes to the home cache."""
    monkeypatch.setenv("RESNET_DEPLOY_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("RESNET_DEPLOY_DATA", raising=False)
    monkeypatch.setattr(spec_mod, "DEBIAN_FASHION_MNIST", tmp_path / "no-debian-package")


# ---------------------------------------------------------------------------------------------------- spec, lookup
def test_parse_spec_names_aliases_and_unknown():
    assert parse_spec("fashion-mnist").name == "fashion-mnist" and parse_spec("fashion-mnist").path is None
    assert parse_spec("FMNIST").name == "fashion-mnist"
    s = parse_spec("cifar10:/data/cifar")
    assert (s.name, s.path, str(s)) == ("cifar10", Path("/data/cifar"), "cifar10:/data/cifar")
    with pytest.raises(ResnetDeployError, match=r"unknown data set 'mnist' .*choose one of: fashion-mnist, cifar10"):
        parse_spec("mnist:/x")


def test_not_found_lists_every_place_looked(tmp_path, monkeypatch):
    monkeypatch.setenv("RESNET_DEPLOY_DATA", str(tmp_path / "empty"))
    with pytest.raises(ResnetDeployError) as e:
        load_arrays(parse_spec("fashion-mnist"), "train")
    msg = str(e.value)
    assert "\n" not in msg
    for place in ("--data (no path given)", f"$RESNET_DEPLOY_DATA={tmp_path / 'empty'}", "no-debian-package (missing)",
                  "torchvision download (not asked; add --download)", "dataset-fashion-mnist"):
        assert place in msg
    with pytest.raises(ResnetDeployError, match=r"cifar10 not found at .*nowhere .*cifar-10-batches-py"):
        load_arrays(parse_spec(f"cifar10:{tmp_path / 'nowhere'}"), "train")


def test_lookup_order_spec_path_then_env_then_debian(tmp_path, monkeypatch):
    a = write_fmnist(tmp_path / "a", n_train=20, seed=1)
    b = write_fmnist(tmp_path / "env" / "fashion-mnist", n_train=30, seed=2)
    c = write_fmnist(tmp_path / "debian", n_train=40, seed=3)
    monkeypatch.setattr(spec_mod, "DEBIAN_FASHION_MNIST", c)
    assert len(load_arrays(parse_spec("fashion-mnist"), "train").labels) == 40
    monkeypatch.setenv("RESNET_DEPLOY_DATA", str(tmp_path / "env"))
    assert len(load_arrays(parse_spec("fashion-mnist"), "train").labels) == 30
    assert len(load_arrays(parse_spec(f"fashion-mnist:{a}"), "train").labels) == 20
    assert spec_mod.locate(parse_spec("fashion-mnist")) == b


def test_an_earlier_download_is_found_without_download(tmp_path):
    # `train --download` fetches into the cache; export's calibration and validate then run without --download.
    fetched = write_fmnist(tmp_path / "cache" / "data" / "FashionMNIST" / "raw", n_train=24, seed=4)
    assert spec_mod.locate(parse_spec("fashion-mnist")) == fetched
    assert len(load_arrays(parse_spec("fashion-mnist"), "train").labels) == 24


# ---------------------------------------------------------------------------------------------------------- formats
def test_idx_round_trip_and_corrupt_file(tmp_path):
    x = np.random.default_rng(5).integers(0, 256, (7, 5, 3), dtype=np.uint8)
    write_idx(tmp_path / "x.gz", x)
    np.testing.assert_array_equal(read_idx(tmp_path / "x.gz"), x)
    (tmp_path / "bad.gz").write_bytes(b"not gzip at all")
    with pytest.raises(ResnetDeployError, match=r"cannot read IDX file .*bad.gz"):
        read_idx(tmp_path / "bad.gz")


def test_fashion_mnist_and_cifar_arrays(tmp_path):
    fm = load_arrays(parse_spec(f"fashion-mnist:{write_fmnist(tmp_path / 'fm')}"), "test")
    assert fm.images.shape == (32, 1, 12, 12) and fm.images.dtype == np.uint8 and fm.classes[9] == "Ankle boot"
    cf = load_arrays(parse_spec(f"cifar10:{write_cifar(tmp_path / 'cf')}"), "train")
    assert cf.images.shape == (50, 3, 32, 32) and cf.labels.dtype == np.int64 and cf.classes[3] == "class3"


def test_per_pixel_mean_std_cached_and_in_preprocess(tmp_path):
    root = write_fmnist(tmp_path / "fm", n_train=64)
    cfg = DataConfig(spec=f"fashion-mnist:{root}")
    data = prepare(cfg, default_size=32, batch_size=16, seed=0)
    x = load_arrays(parse_spec(cfg.spec), "train").images.astype(np.float64) / 255
    np.testing.assert_allclose(np.asarray(data.preprocess.mean), x.mean(0), atol=1e-9)
    np.testing.assert_allclose(data.preprocess.std, [x.std()], rtol=1e-6)
    cached = list((tmp_path / "cache" / "stats").glob("fashion-mnist-*.npz"))
    assert len(cached) == 1
    with np.load(cached[0]) as z:  # a second run reads the cache: make it recognisable
        np.savez(cached[0], mean=z["mean"] * 0 + 0.25, std=z["std"])
    again = prepare(cfg, default_size=32, batch_size=16, seed=0)
    assert np.asarray(again.preprocess.mean)[0, 3, 4] == 0.25
    assert data.preprocess.to_dict()["input_size"] == [12, 12]


def test_val_split_holds_out_training_images(tmp_path):
    cfg = DataConfig(spec=f"cifar10:{write_cifar(tmp_path)}", val_split=10)
    data = prepare(cfg, default_size=32, batch_size=8, seed=0)
    assert len(data.labels) == 40 and len(data.eval_y) == 10 and data.iterations_per_epoch == 5


def test_folder_eval_arrays_and_ten_crop(tmp_path):
    root = write_folder(tmp_path / "imgs")
    pp = Preprocess(input_size=(24, 24), channels=3, resize=28, crop=24, mean=(0.5, 0.4, 0.3), std=(0.2, 0.2, 0.2))
    x, y, classes = load_eval_arrays(f"imagenet:{root}", pp)
    assert x.shape == (12, 3, 24, 24) and x.dtype == np.float32 and classes == ["cat", "dog", "eel"]
    assert y.tolist() == [0] * 4 + [1] * 4 + [2] * 4
    first = sorted((root / "val" / "cat").glob("*.png"))[0]
    np.testing.assert_array_equal(x[0], pp(first))  # exactly the one Preprocess
    crops = ten_crop(pp, first)
    assert crops.shape == (10, 3, 24, 24)
    np.testing.assert_array_equal(crops[4], pp(first))  # torchvision's ten_crop order: 4 corners, centre, flips
    from PIL import Image, ImageOps

    np.testing.assert_array_equal(crops[9], pp(ImageOps.mirror(Image.open(first))))  # centre of the mirror image


def test_folder_without_splits_and_corrupt_image(tmp_path):
    root = write_folder(tmp_path / "imgs", splits=False, per_class=2)
    pp = Preprocess(input_size=(16, 16), channels=3, resize=18, crop=16, mean=(0.5,) * 3, std=(0.25,) * 3)
    assert load_eval_arrays(f"folder:{root}", pp)[0].shape == (6, 3, 16, 16)
    (root / "dog" / "bad.png").write_bytes(b"\x89PNG but truncated")
    with pytest.raises(ResnetDeployError, match=r"^not a readable image: .*dog/bad.png"):
        load_eval_arrays(f"folder:{root}", pp)


def test_limit_first_n_or_seeded_subset():
    assert select_indices(10, 3, None).tolist() == [0, 1, 2]
    a, b = select_indices(100, 5, 0), select_indices(100, 5, 0)
    assert a.tolist() == b.tolist() and a.tolist() != [0, 1, 2, 3, 4] and a.tolist() == sorted(a.tolist())
    assert select_indices(4, 10, 0).tolist() == [0, 1, 2, 3]


def test_eval_arrays_of_small_sets_use_preprocess_normalize(tmp_path):
    root = write_fmnist(tmp_path / "fm")
    mean = np.random.default_rng(1).random((1, 12, 12)).tolist()
    pp = Preprocess(input_size=(12, 12), channels=1, mean=mean, std=(0.3,))
    x, y, _ = load_eval_arrays(f"fashion-mnist:{root}", pp, limit=5, seed=None)
    raw = load_arrays(parse_spec(f"fashion-mnist:{root}"), "test")
    np.testing.assert_array_equal(x, pp.normalize(raw.images[:5]))
    np.testing.assert_array_equal(y, raw.labels[:5])
    # another size and channel count: per image through PIL
    rgb = Preprocess(input_size=(16, 16), channels=3, mean=(0.0,) * 3, std=(1.0,) * 3)
    assert load_eval_arrays(f"fashion-mnist:{root}", rgb, limit=3)[0].shape == (3, 3, 16, 16)


# ----------------------------------------------------------------------------------------------------- augmentation
def test_torch_normalizer_matches_preprocess_normalize():
    rng = np.random.default_rng(2)
    pp = Preprocess(input_size=(8, 8), channels=3, mean=rng.random((3, 8, 8)).tolist(), std=(0.2, 0.3, 0.4))
    u8 = rng.integers(0, 256, (5, 3, 8, 8), dtype=np.uint8)
    got = augment.Normalizer(pp)(torch.from_numpy(u8)).numpy()
    np.testing.assert_allclose(got, pp.normalize(u8), rtol=0, atol=1e-6)


def test_random_crop_flip_takes_windows_of_the_padded_batch():
    x = torch.randn(16, 2, 6, 6)
    g = torch.Generator().manual_seed(3)
    out = augment.random_crop_flip(x, 2, g)
    assert out.shape == x.shape
    xp = torch.nn.functional.pad(x, (2, 2, 2, 2))
    flips = 0
    for n in range(16):
        found = [(oy, ox, f) for oy in range(5) for ox in range(5) for f in (0, 1)
                 if torch.equal(out[n], (lambda w: w.flip(2) if f else w)(xp[n, :, oy:oy + 6, ox:ox + 6]))]
        assert found, f"image {n} is not a (flipped) window of the padded input"
        flips += found[0][2]
    assert 0 < flips < 16
    assert torch.equal(out, augment.random_crop_flip(x, 2, torch.Generator().manual_seed(3)))


def test_pca_lighting_follows_the_eigenbasis():
    g = torch.Generator().manual_seed(0)
    off = augment.pca_lighting(20000, 0.1, g, "cpu")
    ev = torch.tensor(augment.PCA_EIGVEC)
    coeff_std = (off @ ev).std(0)  # back in the eigenbasis: std = 0.1 x eigenvalue
    np.testing.assert_allclose(coeff_std.numpy(), 0.1 * np.array(augment.PCA_EIGVAL), rtol=0.05)


def test_folder_training_batches_scale_pca(tmp_path):
    root = write_folder(tmp_path / "imgs", per_class=4, size=(50, 40))
    cfg = DataConfig(spec=f"folder:{root}", augment="scale_pca", input_size=24, scale=(28, 40), workers=0)
    data = prepare(cfg, default_size=224, batch_size=4, seed=0)
    assert isinstance(data, FolderData) and data.preprocess.resize == 27 and data.preprocess.crop == 24
    assert np.asarray(data.preprocess.mean).shape == (3, 24, 24)
    it = data.batches(0)
    x, y = next(it)
    assert x.shape == (4, 3, 24, 24) and x.dtype == torch.float32 and y.dtype == torch.int64
    assert data.iterations_per_epoch == 3
    assert len(list(zip(range(4), it, strict=False))) == 4  # crosses an epoch boundary
