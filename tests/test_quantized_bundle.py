"""A bundle with every quantized variant (int8 for CPUs and for TensorRT, fp8): calibration provenance in the manifest,
the calibration cache (reused only for the same checkpoint and images), and `validate --layerwise`."""

from __future__ import annotations

import json
from types import SimpleNamespace

import numpy as np
import pytest
from click.testing import CliRunner
from helpers import randomize_bn
from PIL import Image

from resnet_deploy import models
from resnet_deploy.checkpoint import save_model
from resnet_deploy.cli import main
from resnet_deploy.export import ExportOptions, export_bundle
from resnet_deploy.export.calibration import CalibrationCache, Provenance, batch_sha256
from resnet_deploy.runtime import Predictor, variants
from resnet_deploy.runtime.errors import ResnetDeployError
from resnet_deploy.runtime.manifest import read_manifest
from resnet_deploy.runtime.preprocess import Preprocess

PRE = Preprocess(input_size=(16, 16), channels=1, mean=(0.5,), std=(0.25,))


@pytest.fixture(scope="module")
def src(tmp_path_factory) -> SimpleNamespace:
    root = tmp_path_factory.mktemp("quantized")
    model = randomize_bn(models.build("cifar_resnet20", num_classes=4, in_channels=1), seed=1)
    ckpt = save_model(root / "model.pt", model, "cifar_resnet20", ["a", "b", "c", "d"], PRE)
    rng = np.random.default_rng(7)
    images = root / "images"
    for k in range(2):
        (images / f"class{k}").mkdir(parents=True)
        for i in range(6):
            Image.fromarray(rng.integers(0, 256, (16, 16), dtype=np.uint8), mode="L").save(images / f"class{k}/{i}.png")
    calib = rng.standard_normal((16, 1, 16, 16), dtype=np.float32)
    return SimpleNamespace(root=root, ckpt=ckpt, images=images, calib=calib, cache=root / "calib.json")


@pytest.fixture(scope="module")
def bundle(src) -> SimpleNamespace:
    lines: list[str] = []
    out = export_bundle(src.root / "b", ExportOptions(("fp16", "int8", "fp8"), int8_target="both",
                                                      calib_cache=src.cache),
                        checkpoint=src.ckpt, calib_arrays=src.calib, echo=lines.append)
    return SimpleNamespace(path=out, log=lines, manifest=read_manifest(out))


def test_every_quantized_file_records_where_its_scales_came_from(src, bundle):
    m = bundle.manifest
    files = {f.path: f for f in m.files}
    assert {"model.int8.onnx", "model.int8-trt.onnx", "model.fp8.onnx"} <= set(files)
    for name, method in (("model.int8.onnx", "minmax"), ("model.int8-trt.onnx", "minmax"), ("model.fp8.onnx",
                                                                                            "minmax")):
        c = files[name].info["calibration"]
        assert c["checkpoint_sha256"] == m.source["sha256"] and c["sha256"] == batch_sha256(src.calib)
        assert (c["spec"], c["images"], c["method"]) == (None, 16, method)
    assert files["model.int8-trt.onnx"].info["calibration"]["cache"] == {"path": str(src.cache), "use": "written"}
    assert files["model.int8.onnx"].info["calibration"]["cache"]["use"] == "not used"  # ORT calibrates itself
    assert json.loads(src.cache.read_text())["provenance"]["sha256"] == batch_sha256(src.calib)
    assert any("model.fp8.onnx (QDQ FP8 E4M3 by TensorRT's rules" in line for line in bundle.log)


def test_fp8_variant_runs_on_the_cpu(bundle):
    x = np.random.default_rng().standard_normal((5, 1, 16, 16), dtype=np.float32)
    with Predictor.from_bundle(bundle.path, backend="fp8") as p, \
            Predictor.from_bundle(bundle.path, backend="onnx") as ref:
        got, want = p.run(x), ref.run(x)
    assert got.shape == (5, 4) and 0 < np.abs(got - want).max() < np.abs(want).max()
    assert variants.get("trt-fp8").built_from == "fp8" and variants.GATES["fp8"].top1_drop == 1.0


def test_cache_reused_for_the_same_images_and_ignored_for_others(src, bundle):
    lines: list[str] = []
    opts = ExportOptions(("fp8",), calib_cache=src.cache)
    out = export_bundle(src.root / "again", opts, checkpoint=src.ckpt, calib_arrays=src.calib, echo=lines.append)
    assert any("calibration cache" in line and "minmax ranges of" in line and "reused" in line for line in lines)
    info = {f.path: f.info for f in read_manifest(out).files}["model.fp8.onnx"]
    assert info["calibration"]["cache"]["use"] == "reused"
    assert (out / "model.fp8.onnx").read_bytes() == (bundle.path / "model.fp8.onnx").read_bytes()
    lines.clear()
    other = src.calib[::-1].copy()
    export_bundle(src.root / "other", opts, checkpoint=src.ckpt, calib_arrays=other, echo=lines.append)
    ignored = [line for line in lines if "ignored" in line]
    assert len(ignored) == 1 and ignored[0].endswith(
        f"calibration cache {src.cache} ignored: its calibration batch sha256 is {batch_sha256(src.calib)[:12]}..., "
        f"this export's is {batch_sha256(other)[:12]}...; recalibrating")
    assert json.loads(src.cache.read_text())["provenance"]["sha256"] == batch_sha256(other)  # rewritten


def test_cache_names_the_first_fact_that_differs(tmp_path):
    calib = np.ones((4, 1, 2, 2), np.float32)
    p = Provenance.of(calib, "fashion-mnist", "a" * 64)
    assert p.difference(p.to_dict()) is None
    assert p.difference({**p.to_dict(), "checkpoint_sha256": "b" * 64}) == (
        "its checkpoint sha256 is bbbbbbbbbbbb..., this export's is aaaaaaaaaaaa...")
    assert p.difference({**p.to_dict(), "spec": "folder:/x"}) == (
        "its calibration data is 'folder:/x', this export's is 'fashion-mnist'")
    assert p.difference({**p.to_dict(), "images": 256}) == "its image count is 256, this export's is 4"
    (tmp_path / "c.json").write_text("{not json")
    said: list[str] = []
    cache = CalibrationCache(tmp_path / "c.json", p, said.append)
    assert cache.ranges == {} and said[0].startswith(f"calibration cache {tmp_path / 'c.json'} ignored: it cannot "
                                                     "be read (")
    assert cache.get("minmax", ["t"], lambda: {"t": 3.0}) == {"t": 3.0}
    assert CalibrationCache(tmp_path / "c.json", p, said.append).get("minmax", ["t"], lambda: {}) == {"t": 3.0}


def test_options_for_travelling_and_fp8_engines():
    assert ExportOptions(trt=True, trt_compat="version,hardware").trt_compat == ("version", "hardware")
    assert ExportOptions(trt=True, trt_compat="none").to_dict()["trt_compat"] == []
    with pytest.raises(ResnetDeployError, match="--trt-compat version needs --trt"):
        ExportOptions(trt_compat="version")
    with pytest.raises(ResnetDeployError, match="--trt-compat hardware .* cannot hold an fp8 engine"):
        ExportOptions(("fp8",), trt=True, trt_compat="hardware")
    names = [v.name for v in ExportOptions(("fp8",), trt=True).selected()]
    assert names == ["onnx", "trt-fp32", "fp8", "trt-fp8"]


def _validate(*args: str) -> SimpleNamespace:
    r = CliRunner().invoke(main, ["validate", *args])
    return SimpleNamespace(code=r.exit_code, out=r.stdout, err=r.stderr)


def test_layerwise_names_the_first_layer_over_the_tolerance(src, bundle):
    r = _validate(str(bundle.path), "--data", f"folder:{src.images}", "--layerwise", "fp8", "--layer-tol", "1e-9")
    assert r.code == 1, r.err
    report = json.loads((bundle.path / "reports" / "layerwise-fp8.json").read_text())
    first = report["layers"][0]
    assert report["first_exceeding"] == first["tensor"] and first["op"] == "Conv" and first["rel"] > 0
    assert r.out.startswith(f"fp8 (model.fp8.onnx) against fp32, {len(report['layers'])} layers on 12 images: first "
                            f"layer over 1e-09: {first['tensor']} (Conv, relative error ")
    assert report["layers"][-1]["tensor"] == "logits" and report["num_samples"] == 12
    md = (bundle.path / "reports" / "layerwise-fp8.md").read_text()
    assert f"First layer over the tolerance: `{first['tensor']}`" in md and "| 0 | `" in md


def test_layerwise_fp16_within_tolerance_and_bad_names(src, bundle):
    r = _validate(str(bundle.path), "--data", f"folder:{src.images}", "--layerwise", "fp16", "--limit", "4")
    assert r.code == 0 and "on 4 images: no layer over 0.01 (largest: " in r.out, r.out + r.err
    r = _validate(str(bundle.path), "--data", f"folder:{src.images}", "--layerwise", "trt-fp16")
    assert r.code == 2 and r.err.strip() == ("Error: --layerwise takes an ONNX variant of the bundle: fp16, int8, "
                                             "int8-trt, fp8; found 'trt-fp16'")


def test_layerwise_needs_the_variant_in_the_bundle(src, tmp_path):
    out = export_bundle(tmp_path / "plain", checkpoint=src.ckpt)
    r = _validate(str(out), "--data", f"folder:{src.images}", "--layerwise", "int8-trt")
    assert r.code == 2 and r.err.strip() == (f"Error: {out} has no model.int8-trt.onnx; export it with "
                                             "`resnet-deploy export ... --int8 --trt`")
