"""`resnet-deploy validate` and `bench` end to end on a tiny bundle (CIFAR ResNet-20, 1x16x16, 4 classes).

The data set is a folder of generated PNGs whose labels are the reference model's own predictions, so the reference
scores 100% top-1 and any backend that is not the same model visibly loses accuracy.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from PIL import Image

from resnet_deploy import models
from resnet_deploy.checkpoint import save_model
from resnet_deploy.cli import main
from resnet_deploy.runtime.errors import ResnetDeployError
from resnet_deploy.runtime.manifest import FileEntry, read_manifest, write_manifest
from resnet_deploy.runtime.preprocess import Preprocess
from resnet_deploy.validate import report
from resnet_deploy.validate.parity import check_parity, compare, parse_tolerances

export = pytest.importorskip("resnet_deploy.export")
CLASSES = ["ankle", "bag", "coat", "dress"]
PP = Preprocess(input_size=(16, 16), channels=1, mean=(0.5,), std=(0.25,))


def _images(n: int, seed: int) -> np.ndarray:
    # Blocky 4x4 patterns upsampled to 16x16: unlike white noise they survive the global average pool, so a random
    # network tells them apart.
    low = np.random.default_rng(seed).integers(0, 256, (n, 4, 4)).astype(np.uint8)
    return np.kron(low, np.ones((4, 4), np.uint8))


def _balanced_model(x: np.ndarray) -> torch.nn.Module:
    """A random ResNet-20 whose classifier is rescaled and re-centred so its predictions on `x` cover every class
    with wide margins."""
    torch.manual_seed(0)
    model = models.build("cifar_resnet20", num_classes=len(CLASSES), in_channels=1).eval()
    fc = model.fc
    with torch.no_grad():
        logits = model(torch.from_numpy(x))
        fc.weight *= 10 / logits.std(0).mean()
        fc.bias -= model(torch.from_numpy(x)).mean(0)
    return model


def _checkpoint(model: torch.nn.Module, path: Path) -> Path:
    return save_model(path, model, "cifar_resnet20", CLASSES, PP, shortcut="A")


def _write_folder(root: Path, images: np.ndarray, labels: np.ndarray, classes: list[str]) -> Path:
    for c in classes:
        (root / c).mkdir(parents=True, exist_ok=True)
    for i, (img, y) in enumerate(zip(images, labels, strict=True)):
        Image.fromarray(img, mode="L").save(root / classes[y] / f"{i:03d}.png")
    return root


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> SimpleNamespace:
    root = tmp_path_factory.mktemp("tiny")
    images = _images(60, seed=1)
    x = np.stack([PP(i) for i in images])
    model = _balanced_model(x)
    with torch.no_grad():
        labels = model(torch.from_numpy(x)).argmax(1).numpy()
    assert set(labels.tolist()) == set(range(len(CLASSES))), "every class needs an image"
    data = _write_folder(root / "data", images, labels, CLASSES)
    ckpt = _checkpoint(model, root / "model.pt")
    calib = export.ExportOptions(("fp16", "int8"), calib_data=f"folder:{data}", calib_size=32)
    bundle = export.export_bundle(root / "bundle", calib, checkpoint=ckpt)
    # The same network with two classifier rows swapped: a different model that quantizes just as well.
    bad = _balanced_model(x)
    with torch.no_grad():
        bad.fc.weight[[0, 1]] = bad.fc.weight[[1, 0]].clone()
        bad.fc.bias[[0, 1]] = bad.fc.bias[[1, 0]].clone()
    bad_bundle = export.export_bundle(root / "bad_bundle", dataclasses.replace(calib, precisions=("int8",)),
                                      checkpoint=_checkpoint(bad, root / "bad.pt"))
    return SimpleNamespace(root=root, data=data, ckpt=ckpt, bundle=Path(bundle), bad_bundle=Path(bad_bundle),
                           spec=f"folder:{data}", n=len(labels))


def _copy(tiny: SimpleNamespace, name: str) -> Path:
    dst = tiny.root / name
    if dst.exists():
        shutil.rmtree(dst)
    shutil.copytree(tiny.bundle, dst)
    return dst


def test_parity_of_a_faithful_bundle(tiny):
    r = check_parity(tiny.bundle, tiny.spec, backends=["onnx", "fp16"]).to_dict()
    assert r["passed"] is True
    assert r["reference"]["kind"] == "checkpoint" and r["reference"]["top1"] == 100.0
    assert r["num_samples"] == tiny.n and r["num_classes"] == 4
    onnx = next(b for b in r["backends"] if b["backend"] == "onnx")
    assert onnx["status"] == "PASS" and onnx["agreement"] == 100.0
    assert onnx["max_abs_diff"] < 1e-3 and onnx["top1"] == 100.0
    fp16 = next(b for b in r["backends"] if b["backend"] == "fp16")
    assert fp16["precision"] == "fp16" and fp16["agreement"] >= 99.5 and fp16["status"] == "PASS"


def test_validate_fails_on_int8_from_perturbed_weights(tiny):
    bundle = _copy(tiny, "tampered_int8")
    manifest = read_manifest(bundle)
    entry = manifest.file("model.int8.onnx")
    shutil.copy(tiny.bad_bundle / "model.int8.onnx", bundle / "model.int8.onnx")
    files = [FileEntry.for_file(bundle, f.path, f.precision, f.format, f.target, f.info) if f is entry else f
             for f in manifest.files]
    write_manifest(bundle, dataclasses.replace(manifest, files=files))
    res = CliRunner().invoke(main, ["validate", str(bundle), "--data", tiny.spec, "--backends", "onnx,int8"])
    assert res.exit_code == 1, res.output
    assert "FAIL: int8 outside tolerance" in res.output
    assert "PASS    onnx" in res.output
    saved = json.loads((bundle / "reports" / "validate.json").read_text())
    int8 = next(b for b in saved["backends"] if b["backend"] == "int8")
    assert int8["status"] == "FAIL" and int8["top1"] < 90
    assert any(f.startswith("first disagreeing samples: ") for f in int8["failures"])
    assert int8["first_disagreements"] and all(0 <= i < tiny.n for i in int8["first_disagreements"])


def test_validate_reports_missing_backends_as_skipped(tiny):
    bundle = _copy(tiny, "skips")
    res = CliRunner().invoke(main, ["validate", str(bundle), "--data", tiny.spec, "--backends", "onnx,trt-fp16",
                                    "--limit", "20"])
    assert res.exit_code == 0, res.output
    assert "SKIPPED trt-fp16: the bundle has no trt-fp16 model" in res.output
    assert "(1 checked, 1 skipped)" in res.output


@pytest.mark.parametrize("args, message", [
    (["--backends", "onnx,tensorrt"],
     "Error: Invalid value for '--backends': unknown backend 'tensorrt'; choose from: onnx, fp16, int8"),
    (["--tolerance", "int8_drop=2"], "Error: unknown tolerance int8_drop; choose from: fp32_agreement"),
    (["--tolerance", "fp16_agreement"], "Error: --tolerance takes KEY=NUMBER, found 'fp16_agreement'"),
    (["--tolerance", "fp16_agreement=high"], "Error: --tolerance takes KEY=NUMBER, found 'fp16_agreement=high'"),
])
def test_validate_bad_arguments(tiny, args, message):
    res = CliRunner().invoke(main, ["validate", str(tiny.bundle), "--data", tiny.spec, *args])
    assert res.exit_code == 2 and message in res.output, res.output


def test_validate_refuses_a_changed_bundle(tiny):
    bundle = _copy(tiny, "changed")
    raw = bytearray((bundle / "model.onnx").read_bytes())
    raw[-1] ^= 0xFF
    (bundle / "model.onnx").write_bytes(bytes(raw))
    res = CliRunner().invoke(main, ["validate", str(bundle), "--data", tiny.spec])
    assert res.exit_code == 2
    assert "Error: bundle file model.onnx does not match the manifest's blake3/size" in res.output


def test_validate_refuses_data_with_other_classes(tiny):
    other = _write_folder(tiny.root / "three", _images(6, seed=2), np.arange(6) % 3, CLASSES[:3])
    res = CliRunner().invoke(main, ["validate", str(tiny.bundle), "--data", f"folder:{other}"])
    assert res.exit_code == 2
    assert "Error: the data has 3 classes but the bundle's model has 4" in res.output


def test_reference_checkpoint_must_be_the_exported_one(tiny):
    other = tiny.root / "other.pt"
    _checkpoint(models.build("cifar_resnet20", num_classes=4, in_channels=1), other)
    res = CliRunner().invoke(main, ["validate", str(tiny.bundle), "--data", tiny.spec, "--checkpoint", str(other)])
    assert res.exit_code == 2
    assert "is not the file this bundle was exported from" in res.output


def test_reference_falls_back_to_onnx_only_when_the_manifest_source_is_absent(tiny, tmp_path):
    bundle = Path(shutil.copytree(tiny.bundle, tmp_path / "b"))
    d = json.loads((bundle / "manifest.json").read_text())
    d["source"]["path"] = str(tmp_path / "moved.pt")  # the bundle was copied to a machine without its checkpoint
    (bundle / "manifest.json").write_text(json.dumps(d))
    r = check_parity(bundle, tiny.spec, limit=10, backends=["fp16"]).to_dict()
    assert r["reference"]["kind"] == "onnx" and "not at hand" in r["reference"]["note"]
    assert r["backends"][0]["status"] == "PASS"
    # A --checkpoint that is not there is an error: comparing the ONNX model with itself would always pass.
    with pytest.raises(ResnetDeployError) as e:
        check_parity(tiny.bundle, tiny.spec, limit=10, backends=["fp16"], checkpoint=tiny.root / "nowhere.pt")
    assert str(e.value) == (f"reference checkpoint not found: {tiny.root / 'nowhere.pt'} (--checkpoint names the "
                            "file the bundle was exported from)")


def test_compare_thresholds_on_known_logits():
    rng = np.random.default_rng(3)
    ref = rng.standard_normal((1000, 10)) * 5
    labels = ref.argmax(1)
    flipped = ref.copy()
    idx = np.array([7, 70, 700])  # swap the two best classes of three samples: agreement 99.7%
    best2 = np.argsort(-ref[idx], axis=1)[:, :2]
    for row, (a, b) in zip(idx, best2, strict=True):
        flipped[row, [a, b]] = flipped[row, [b, a]]
    fp16 = compare("fp16", flipped.astype(np.float32), ref, labels, 100.0)
    assert fp16.agreement == pytest.approx(99.7) and fp16.status == "PASS"  # >= 99.5
    fp32 = compare("onnx", flipped.astype(np.float32), ref, labels, 100.0)
    assert fp32.status == "FAIL" and fp32.first_disagreements == [7, 70, 700]
    assert "agreement 99.700% < 99.9%" in fp32.failures[0]
    int8 = compare("int8", flipped.astype(np.float32), ref, labels, 100.0, parse_tolerances(["int8_top1_drop=0.2"]))
    assert int8.top1 == pytest.approx(99.7) and int8.status == "FAIL"
    assert "top-1 drop 0.30 points > 0.2" in int8.failures[0]


def test_bench_writes_all_three_report_kinds(tiny):
    bundle = _copy(tiny, "bench")
    runner = CliRunner()
    assert runner.invoke(main, ["validate", str(bundle), "--data", tiny.spec, "--limit", "20",
                                "--backends", "onnx"]).exit_code == 0
    out_json = tiny.root / "bench_copy.json"
    res = runner.invoke(main, ["bench", str(bundle), "--backends", "onnx,int8,trt-int8", "--batch", "1,4",
                               "--warmup-s", "0", "--duration-s", "0.02", "--rounds", "2", "--threads", "1",
                               "--json", str(out_json)])
    assert res.exit_code == 0, res.output
    assert "SKIPPED trt-int8: the bundle has no trt-int8 model" in res.output
    b = json.loads((bundle / "reports" / "bench.json").read_text())
    assert b == json.loads(out_json.read_text())
    assert b["schema"] == "resnet-deploy/bench" and b["schema_version"] == 1
    assert [(r["backend"], r["batch"]) for r in b["results"]] == [
        ("pytorch", 1), ("onnx", 1), ("int8", 1), ("pytorch", 4), ("onnx", 4), ("int8", 4)]
    macs = models.count_macs(models.build("cifar_resnet20", num_classes=4, in_channels=1), 16, 1)
    assert b["macs_per_image"] == macs
    for r in b["results"]:
        lat = r["latency_ms"]
        assert lat["min"] <= lat["p50"] <= lat["p90"] <= lat["p99"] <= lat["max"]
        assert r["throughput_ips"] == pytest.approx(r["batch"] * r["iterations"] / r["total_s"])
        assert r["achieved_gflops"] == pytest.approx(2 * macs * r["throughput_ips"] / 1e9)
        base = next(p for p in b["results"] if p["backend"] == "pytorch" and p["batch"] == r["batch"])
        assert r["latency_ratio"] == pytest.approx(lat["p50"] / base["latency_ms"]["p50"])
    assert [s["backend"] for s in b["skipped"]] == ["trt-int8"]
    assert b["environment"]["threads"] == 1 and b["ceiling"]["n"] in (512, 1024, 2048)  # the best GEMM size
    assert {"fp32", "int8"} <= set(b["ceiling"]["precisions"]) and {r["roof_precision"] for r in b["results"]} == {
        "fp32", "int8"}
    auto = json.loads((bundle / "reports" / "auto.json").read_text())["machines"][0]
    assert sorted(auto["order"]) == ["int8", "onnx"] and auto["batch"] == 1 and auto["threads"] == 1
    assert f"auto on this machine: {', '.join(auto['order'])} (fastest first;" in res.output
    assert b["settings"]["rounds"] == 2 and all(r["iterations"] >= 10 for r in b["results"])  # min_iters kept
    md = (bundle / "reports" / "report.md").read_text()
    assert "## Accuracy parity (PASS)" in md and "## Latency and throughput" in md
    for png in (report.LATENCY_PNG, report.ACCURACY_PNG):
        assert (bundle / "reports" / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize("batch, message", [
    ("1,x", "Error: --batch must be comma-separated numbers, found '1,x'"),
    ("0,4", "Error: --batch must be an integer from 1 to 4096, found 0"),
    ("1,99999999", "Error: --batch must be an integer from 1 to 4096, found 99999999"),
])
def test_bench_bad_batch_sizes(tiny, batch, message):
    res = CliRunner().invoke(main, ["bench", str(tiny.bundle), "--batch", batch, "--duration-s", "0"])
    assert res.exit_code == 2 and message in res.output, res.output
