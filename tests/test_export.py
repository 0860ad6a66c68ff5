"""`resnet-deploy export` end to end: the bundle, its manifest and log, torchvision weights, bad input, --force."""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import onnx
import pytest
import torch
import torchvision
from click.testing import CliRunner
from helpers import randomize_bn
from PIL import Image

from resnet_deploy import models
from resnet_deploy.checkpoint import save_model
from resnet_deploy.cli import main
from resnet_deploy.runtime.errors import ResnetDeployError
from resnet_deploy.runtime.manifest import read_manifest
from resnet_deploy.runtime.onnx_backend import OrtBackend
from resnet_deploy.runtime.preprocess import IMAGENET_MEAN, IMAGENET_STD, Preprocess
from resnet_deploy.runtime.verified import verify_files

PRE = Preprocess(input_size=(28, 28), channels=1, mean=(0.29,), std=(0.35,))
CLASSES = [f"c{i}" for i in range(10)]




def _write_images(root: Path, n_per_class: int = 8) -> Path:
    rng = np.random.default_rng()
    for k in range(3):
        (root / f"class{k}").mkdir(parents=True)
        for i in range(n_per_class):
            img = np.clip(rng.normal(60 + 60 * k, 40, (28, 28)), 0, 255).astype(np.uint8)
            Image.fromarray(img, mode="L").save(root / f"class{k}" / f"{i}.png")
    return root


def _export(*args: str) -> SimpleNamespace:
    r = CliRunner().invoke(main, ["export", *args])
    return SimpleNamespace(code=r.exit_code, out=r.stdout, err=r.stderr, exc=r.exception)


def _leftovers(parent: Path) -> list[str]:
    return sorted(p.name for p in parent.iterdir() if p.name.startswith("."))


@pytest.fixture(scope="module")
def src(tmp_path_factory) -> SimpleNamespace:
    root = tmp_path_factory.mktemp("export")
    model = randomize_bn(models.build("cifar_resnet20", num_classes=10, in_channels=1), seed=0)
    ckpt = save_model(root / "model.pt", model, "cifar_resnet20", CLASSES, PRE, shortcut="A")
    return SimpleNamespace(root=root, model=model, ckpt=ckpt, images=_write_images(root / "images"))


@pytest.fixture(scope="module")
def bundle(src) -> SimpleNamespace:
    """fp16 + int8 + --trt on a machine without TensorRT: exit 2, the ONNX bundle complete."""
    out = src.root / "bundle"
    with pytest.MonkeyPatch.context() as mp:
        mp.setitem(sys.modules, "tensorrt", None)  # TensorRT absent, whatever this machine has
        r = _export(str(src.ckpt), "--out", str(out), "--fp16", "--int8", "--trt", "--calib-data",
                    f"folder:{src.images}", "--calib-size", "20")
    return SimpleNamespace(path=out, result=r)


def test_trt_without_tensorrt_writes_onnx_and_says_what_is_needed(bundle):
    r = bundle.result
    assert r.code == 2, r.exc
    err = r.err.strip().splitlines()[-1]
    assert err.startswith(f"Error: wrote {bundle.path} with its ONNX models only (model.onnx, model.fp16.onnx, "
                          "model.int8.onnx, model.int8-trt.onnx: usable now, validate and predict run them); not "
                          "built: the TensorRT engines; --trt needs TensorRT (pip install 'resnet-deploy[trt]') and an "
                          "NVIDIA GPU")
    assert "Traceback" not in r.err
    names = {p.name for p in bundle.path.iterdir()}
    assert names == {"manifest.json", "export.log", "config.yaml", "model.onnx", "model.fp16.onnx",
                     "model.int8.onnx", "model.int8-trt.onnx"}
    assert _leftovers(bundle.path.parent) == []


def test_manifest_lists_every_file_with_its_checksum(bundle, src):
    m = read_manifest(bundle.path)
    verify_files(bundle.path, m)
    for f in m.files:
        data = (bundle.path / f.path).read_bytes()
        assert f.sha256 == hashlib.sha256(data).hexdigest() and f.size == len(data)
    assert {(f.path, f.precision, f.target) for f in m.files} == {
        ("model.onnx", "fp32", "any"), ("model.fp16.onnx", "fp16", "any"),
        ("model.int8.onnx", "int8", "cpu"), ("model.int8-trt.onnx", "int8", "trt"),
        ("config.yaml", "none", "any"), ("export.log", "none", "any")}
    on_disk = {p.name for p in bundle.path.iterdir()} - {"manifest.json"}
    assert on_disk == {f.path for f in m.files}  # every file of the bundle is listed
    assert m.arch == "cifar_resnet20" and m.classes == CLASSES and m.preprocess == PRE and m.batch == (1, 8, 32)
    assert m.source["sha256"] == hashlib.sha256(src.ckpt.read_bytes()).hexdigest()
    assert {"torch", "onnx", "onnxruntime", "tensorrt"} <= set(m.versions) and m.versions["onnx"] == onnx.__version__
    assert m.export_args["calib_size"] == 20 and m.export_args["int8_targets"] == ["cpu", "trt"]
    assert m.file("model.int8.onnx").info["calib_images"] == 20  # 3 classes x 8 images, 20 drawn
    raw = json.loads((bundle.path / "manifest.json").read_text())
    assert raw["input"] == {"name": "input", "shape": [1, 28, 28], "dtype": "float32",
                            "batch": {"min": 1, "opt": 8, "max": 32}}


def test_export_log_records_each_stage_and_figure(bundle):
    log = (bundle.path / "export.log").read_text()
    for needle in ("fold     BatchNorm folded", "onnx     model.onnx opset 18", "batch 1:", "batch 3:",
                   "fp16     model.fp16.onnx", "int8     model.int8.onnx", "int8     model.int8-trt.onnx",
                   "trt      FAILED: --trt needs TensorRT"):
        assert needle in log, needle


def test_onnx_metadata_and_parity_with_the_checkpoint(bundle, src):
    proto = onnx.load(str(bundle.path / "model.onnx"))
    props = {p.key: p.value for p in proto.metadata_props}
    assert props["arch"] == "cifar_resnet20" and json.loads(props["classes"]) == CLASSES
    assert json.loads(props["input_size"]) == [1, 28, 28]
    assert json.loads(props["mean"]) == [0.29] and json.loads(props["std"]) == [0.35]
    assert props["source_sha256"] == hashlib.sha256(src.ckpt.read_bytes()).hexdigest()
    assert props["tool_version"].startswith("resnet-deploy ")
    assert "BatchNormalization" not in {n.op_type for n in proto.graph.node}
    sess = OrtBackend(bundle.path / "model.onnx")
    for n in (1, 3):
        x = np.random.default_rng().standard_normal((n, 1, 28, 28), dtype=np.float32)
        with torch.no_grad():
            ref = src.model(torch.from_numpy(x)).numpy()
        np.testing.assert_allclose(sess.run(x), ref, atol=1e-4, rtol=1e-4)


def test_torchvision_weights(tmp_path):
    tv = randomize_bn(torchvision.models.resnet18(num_classes=5), seed=3)
    torch.save(tv.state_dict(), tmp_path / "r18.pth")
    (tmp_path / "classes.txt").write_text("ant\nbee\n\ncat\ndog\nemu\n")
    out = tmp_path / "tv"
    r = _export("--arch", "resnet18", "--weights", str(tmp_path / "r18.pth"), "--classes",
                str(tmp_path / "classes.txt"), "--input-size", "64", "--out", str(out), "--quiet")
    assert r.code == 0, r.err
    assert r.out.strip() == f"bundle written to {out}"
    m = read_manifest(out)
    assert m.arch == "resnet18" and m.classes == ["ant", "bee", "cat", "dog", "emu"]
    # torchvision's evaluation transform, scaled to the 64-pixel input: resize 256 * 64 / 224 = 73, crop 64.
    assert m.preprocess == Preprocess((64, 64), 3, resize=73, crop=64, mean=IMAGENET_MEAN, std=IMAGENET_STD)
    assert m.source["kind"] == "torchvision"
    x = np.random.default_rng().standard_normal((2, 3, 64, 64), dtype=np.float32)
    with torch.no_grad():
        ref = tv(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(OrtBackend(out / "model.onnx").run(x), ref, atol=1e-4, rtol=1e-4)


@pytest.fixture
def bad(src, tmp_path) -> SimpleNamespace:
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(src.ckpt.read_bytes()[:5000])
    (tmp_path / "notes.txt").write_text("not a checkpoint\n")
    torch.save({"epoch": 3}, tmp_path / "other.pt")
    torch.save(torchvision.models.resnet18(num_classes=5).state_dict(), tmp_path / "r18.pth")
    (tmp_path / "afile").write_text("x")
    (tmp_path / "exists").mkdir()
    return SimpleNamespace(ckpt=str(src.ckpt), dir=tmp_path, out=str(tmp_path / "new"))


@pytest.mark.parametrize("args, message", [
    (["{ckpt}", "--arch", "resnet18"], "holds a cifar_resnet20 checkpoint, not resnet18"),
    (["--arch", "resnet34", "--weights", "{dir}/r18.pth"], "state dict does not fit the model"),
    (["{dir}/truncated.pt"], "cannot read checkpoint {dir}/truncated.pt"),
    (["{dir}/notes.txt"], "cannot read checkpoint {dir}/notes.txt"),
    (["{dir}/other.pt"], "is not a resnet-deploy checkpoint"),
    (["--weights", "{dir}/r18.pth"], "--weights needs --arch NAME"),
    (["--arch", "resnet18", "--weights", "{dir}/notes.txt"], "cannot read weights {dir}/notes.txt: not a complete"),
    (["--arch", "resnet18", "--weights", "{dir}/none.pth"], "weights file not found: {dir}/none.pth"),
    ([], "give either a CHECKPOINT or --arch NAME --weights FILE"),
    (["{ckpt}", "--int8"], "--int8 needs calibration images: add --calib-data SPEC"),
    (["{ckpt}", "--int8", "--calib-data", "folder:{dir}/no-such-dir"], "no-such-dir"),
    (["{ckpt}", "--batch", "8:1:4"], "--batch MIN:OPT:MAX needs 1 <= MIN <= OPT <= MAX <= 4096; found 8:1:4"),
    (["{ckpt}", "--int8-target", "trt"], "--int8-target trt needs --int8"),
    (["{ckpt}", "--input-size", "4"], "--input-size must be from 8 to 4096 pixels, found 4"),
    (["{ckpt}", "--input-size", "100000"], "--input-size must be from 8 to 4096 pixels, found 100000"),
])
def test_bad_input_is_one_line_and_writes_nothing(bad, args, message):
    r = _export(*[a.format(**vars(bad)) for a in args], "--out", bad.out, "--quiet")
    assert r.code == 2, (r.exc, r.err)
    lines = r.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: ") and message.format(**vars(bad)) in lines[0], lines
    assert not Path(bad.out).exists() and _leftovers(bad.dir) == []


@pytest.mark.parametrize("out, message", [
    ("exists", "already exists; add --force to replace it"),
    ("afile", "exists and is not a directory"),
    ("afile/bundle", "afile is not a writable directory"),
])
def test_bad_destination(bad, out, message):
    r = _export(bad.ckpt, "--out", str(bad.dir / out), "--quiet")
    assert r.code == 2 and message in r.err and len(r.err.strip().splitlines()) == 1, r.err


def test_simplify_without_onnxsim_is_a_clear_error(bad, monkeypatch):
    monkeypatch.setitem(sys.modules, "onnxsim", None)
    r = _export(bad.ckpt, "--out", bad.out, "--simplify", "--quiet")
    assert r.code == 2 and "--simplify needs onnxsim (pip install onnxsim), which is not installed" in r.err


def test_force_keeps_the_old_bundle_until_the_new_one_is_complete(src, tmp_path, monkeypatch):
    out = tmp_path / "b"
    out.mkdir()
    (out / "manifest.json").write_text("{}")
    (out / "old-marker").write_text("old")

    def broken_export(*args, **kwargs):
        raise ResnetDeployError("ONNX export at opset 18 failed: simulated")

    with monkeypatch.context() as mp:
        mp.setattr("resnet_deploy.export.bundle.export_onnx", broken_export)
        r = _export(str(src.ckpt), "--out", str(out), "--force", "--quiet")
    assert r.code == 2 and "simulated" in r.err
    assert (out / "old-marker").read_text() == "old" and _leftovers(tmp_path) == []
    r = _export(str(src.ckpt), "--out", str(out), "--force", "--quiet")
    assert r.code == 0, r.err
    assert not (out / "old-marker").exists() and read_manifest(out).arch == "cifar_resnet20"
    assert _leftovers(tmp_path) == []


def test_force_refuses_a_directory_that_is_not_a_bundle(src, tmp_path):
    (tmp_path / "home").mkdir()
    (tmp_path / "home" / "thesis.tex").write_text("precious")
    r = _export(str(src.ckpt), "--out", str(tmp_path / "home"), "--force", "--quiet")
    assert r.code == 2 and "is a non-empty directory that is not a bundle" in r.err
    assert (tmp_path / "home" / "thesis.tex").read_text() == "precious"
