"""The variant registry: every built-in fact in one row, and a new row reaching Predictor, validate and the CLI."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from resnet_deploy import models
from resnet_deploy.checkpoint import save_model
from resnet_deploy.cli import main
from resnet_deploy.export import ExportOptions, export_bundle
from resnet_deploy.runtime import Predictor, ResnetDeployError, manifest, variants
from resnet_deploy.runtime.preprocess import Preprocess
from resnet_deploy.runtime.variants import Gate, Variant
from resnet_deploy.validate.parity import check_parity

CLASSES = ["a", "b", "c"]
PRE = Preprocess(input_size=(16, 16), channels=1, mean=(0.5,), std=(0.25,))
DUMMY = Variant(name="onnx-copy", file="model.onnx", format="onnx", precision="fp32", target="any",
                loader="onnxruntime", step="onnx", runs="onnx", rank={"cpu": 9})


@pytest.fixture(scope="module")
def bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("variants")
    ckpt = save_model(root / "m.pt", models.build("cifar_resnet20", num_classes=3, in_channels=1).eval(),
                      "cifar_resnet20", CLASSES, PRE, shortcut="A")
    rng = np.random.default_rng(5)
    for i in range(9):
        folder = root / "data" / CLASSES[i % 3]
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 256, (16, 16), dtype=np.uint8)).save(folder / f"{i}.png")
    return export_bundle(root / "bundle", ExportOptions(), checkpoint=ckpt)


@pytest.fixture
def dummy() -> Variant:
    variants.register(DUMMY)
    yield DUMMY
    variants.unregister(DUMMY.name)


def test_builtin_rows_hold_every_fact():
    assert variants.names() == ("onnx", "fp16", "int8", "int8-trt", "trt-fp32", "trt-fp16", "trt-int8", "fp8",
                                "trt-fp8", "ov-int8", "ov-bf16", "ov-fp32")
    assert [v.name for v in variants.ranked("cpu")] == ["int8", "ov-int8", "onnx", "ov-bf16", "ov-fp32", "fp16",
                                                        "int8-trt"]  # never fp8 (slow there)
    assert [v.name for v in variants.ranked("cuda")] == ["trt-int8", "trt-fp8", "trt-fp16", "trt-fp32", "fp16", "onnx",
                                                         "int8-trt"]
    assert variants.get("trt-int8").built_from == "int8-trt" and variants.get("trt-fp16").trt_flags == ("FP16",)
    assert variants.get("trt-fp8").built_from == "fp8"
    assert variants.get("fp8").options == {"graph_optimization": "basic"}
    assert variants.gate_names() == ("fp32_agreement", "fp32_max_abs", "fp16_agreement", "int8_top1_drop",
                                     "fp8_top1_drop", "bf16_agreement", "bf16_top1_drop")
    assert set(manifest.allowed("precision", "none")) == {"fp32", "fp16", "int8", "fp8", "none"}
    assert set(manifest.allowed("format", "text")) == {"onnx", "engine", "text"}
    assert set(manifest.allowed("target", "any")) == {"any", "cpu", "trt"}
    assert variants.override_gates({"int8_top1_drop": 0.5})["int8"] == Gate(top1_drop=0.5)
    with pytest.raises(ResnetDeployError, match="unknown tolerance fp8_drop; choose from: fp32_agreement"):
        variants.override_gates({"fp8_drop": 1})
    with pytest.raises(ResnetDeployError, match="variant 'onnx' is already registered"):
        variants.register(variants.get("onnx"))


def test_export_writes_what_the_options_select():
    names = lambda o: [v.name for v in o.selected()]  # noqa: E731
    assert names(ExportOptions()) == ["onnx"]
    assert names(ExportOptions.from_flags(fp16=True, int8=True, calib_data="x")) == ["onnx", "fp16", "int8"]
    assert names(ExportOptions(("int8",), trt=True)) == ["onnx", "int8", "int8-trt", "trt-fp32", "trt-int8"]
    assert names(ExportOptions(("fp16", "int8"), int8_target="trt")) == ["onnx", "fp16", "int8-trt"]
    with pytest.raises(ResnetDeployError, match="unknown precision 'fp4'; choose from: fp32, fp16, int8"):
        ExportOptions(("fp4",))


def test_a_registered_variant_reaches_predictor_validate_and_cli(bundle: Path, dummy: Variant):
    x = np.random.default_rng(0).standard_normal((5, 1, 16, 16), dtype=np.float32)
    with Predictor.from_bundle(bundle, backend="onnx-copy") as p, Predictor.from_bundle(bundle, backend="onnx") as q:
        assert p.backend == "onnx-copy" and p.variant is dummy
        np.testing.assert_array_equal(p.run(x), q.run(x))
    report = check_parity(bundle, f"folder:{bundle.parent / 'data'}", backends=["onnx-copy"])
    row = report.backends[0]
    assert (row.backend, row.precision, row.status, row.agreement) == ("onnx-copy", "fp32", "PASS", 100.0)
    image = next((bundle.parent / "data" / "a").iterdir())
    res = CliRunner().invoke(main, ["predict", str(bundle), str(image), "--backend", "onnx-copy", "--json"])
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout)[0]["label"] in CLASSES
    assert "onnx-copy" in CliRunner().invoke(main, ["predict", "--help"]).output
    res = CliRunner().invoke(main, ["bench", str(bundle), "--backends", "onnx-copy", "--batch", "1",
                                    "--warmup-s", "0", "--duration-s", "0", "--no-pytorch"])
    assert res.exit_code == 0, res.output


def test_an_unregistered_name_is_refused_everywhere(bundle: Path):
    with pytest.raises(ResnetDeployError, match="unknown backend 'onnx-copy'; choose one of: auto, trt, onnx"):
        Predictor.from_bundle(bundle, backend="onnx-copy")
    res = CliRunner().invoke(main, ["validate", str(bundle), "--data", "x", "--backends", "onnx-copy"])
    assert res.exit_code == 2 and "unknown backend 'onnx-copy'; choose from: onnx, fp16" in res.output


def test_a_registered_precision_reaches_the_export_flags_help_and_tolerances() -> None:
    # A new precision is one Precision row (and its variant's row): the export flag, its help, the layerwise
    # tolerance and choices, and the gate come from them. In a child process: click builds its options at import.
    code = (
        "from resnet_deploy.runtime import variants\n"
        "from resnet_deploy.runtime.variants import Gate, Precision, Variant\n"
        "variants.register_precision(Precision(name='fp4', gate=Gate(top1_drop=2.0), qmax=6.0, layer_tolerance=0.3,"
        " export_help='Also write model.fp4.onnx.'))\n"
        "variants.register(Variant(name='fp4', file='model.fp4.onnx', format='onnx', precision='fp4', target='trt',"
        " loader='onnxruntime', step='fp8', flags=('--fp4',), devices=('cpu',)))\n"
        "from click.testing import CliRunner\n"
        "from resnet_deploy.cli import main\n"
        "from resnet_deploy.export import ExportOptions\n"
        "print(CliRunner().invoke(main, ['export', '--help'], terminal_width=200).output)\n"
        "print(CliRunner().invoke(main, ['validate', '--help'], terminal_width=200).output)\n"
        "o = ExportOptions.from_flags(fp4=True, calib_data='x')\n"
        "print('precisions', o.precisions, o.calibrated, [v.name for v in o.selected()], variants.gate_names()[-1])\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True).stdout
    assert "--fp4" in out and "Also write model.fp4.onnx." in out
    assert "(fp16, int8, int8-trt, fp8, fp4)" in out and "fp8 0.2, fp4 0.3]" in out
    assert "precisions ('fp32', 'fp4') True ['onnx', 'fp4'] fp4_top1_drop" in out


def test_the_reference_and_the_precision_facts_live_in_the_registry() -> None:
    assert variants.reference().name == "onnx" and variants.reference().file == "model.onnx"
    assert [v.name for v in variants.onnx_files()] == ["onnx", "fp16", "int8", "int8-trt", "fp8"]
    assert {p.name: p.qmax for p in variants.PRECISIONS.values() if p.quantized} == {"int8": 127.0, "fp8": 448.0}
    assert [p.flag for p in variants.PRECISIONS.values()] == [None, "--fp16", "--int8", "--fp8", None]
    assert variants.GATES == {p.name: p.gate for p in variants.PRECISIONS.values()}
    with pytest.raises(ResnetDeployError, match="precision 'fp5', which is not registered; choose one of: fp32"):
        variants.register(Variant(name="x", file="x.onnx", format="onnx", precision="fp5", target="any",
                                  loader="onnxruntime", step="onnx"))
