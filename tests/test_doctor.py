"""`resnet-deploy doctor`: one table, install hints for what is missing, exit code 0 always."""

import json
import sys

from click.testing import CliRunner

from resnet_deploy import doctor
from resnet_deploy.cli import main


def test_doctor_json_lists_every_component_and_exits_0():
    r = CliRunner().invoke(main, ["doctor", "--json"])
    assert r.exit_code == 0, r.output
    rows = {row["component"]: row for row in json.loads(r.output)}
    assert list(rows) == ["Python", "CPU", "torch", "CUDA GPUs", "training precision", "torchvision", "onnx",
                          "onnxruntime", "OpenVINO", "TensorRT", "onnxruntime-gpu", "TensorRT lean runtime",
                          "cuda-python", "inference auto", "serve (tritonserver)"]
    assert rows["onnxruntime"]["status"] == "ok" and "CPU" in rows["onnxruntime"]["detail"]
    for row in rows.values():
        assert row["status"] in ("ok", "missing", "unusable")
        if row["status"] != "ok":
            assert row["install"], row  # every missing piece says how to get it


def test_every_variant_of_the_registry_has_its_runtime_row(monkeypatch):
    # a backend added to the registry (a variant and its loader) appears in doctor without an edit of doctor.py
    from resnet_deploy.runtime import backend, variants

    class FakeLoader:
        title, module, dists, install = "FakeRT", "no_such_module_here", ("fakert",), "pip install fakert"

    monkeypatch.setitem(backend.LOADERS, "fakert", FakeLoader())
    variants.register(variants.Variant(name="fake-fp32", file="model.onnx", format="onnx", precision="fp32",
                                       target="any", loader="fakert", step="onnx", runs="onnx"))
    try:
        rows = {row.component: row for row in doctor._backend_checks()}
    finally:
        variants.unregister("fake-fp32")
    assert (rows["FakeRT"].status, rows["FakeRT"].enables, rows["FakeRT"].install) == (
        "missing", "backends fake-fp32", "pip install fakert")
    listed = {n for row in rows.values() for n in row.enables.removeprefix("backends ").split(", ")}
    assert listed == {*variants.names(), "fake-fp32"}


def test_missing_and_broken_modules_are_reported_not_raised(monkeypatch):
    monkeypatch.setitem(sys.modules, "tensorrt", None)  # import raises ImportError
    row = doctor._module_check("TensorRT", "tensorrt", "tensorrt", "engines", "pip install 'resnet-deploy[trt]'")
    assert (row.status, row.install) == ("missing", "pip install 'resnet-deploy[trt]'")

    monkeypatch.setattr(doctor.importlib, "import_module", lambda name: (_ for _ in ()).throw(OSError("libnvinfer.so")))
    row = doctor._module_check("TensorRT", "tensorrt", "tensorrt", "engines", "x")
    assert row.status == "unusable" and "OSError: libnvinfer.so" in row.detail


def test_doctor_table_shows_install_commands_verbatim():
    r = CliRunner().invoke(main, ["doctor"], env={"COLUMNS": "220"})
    assert r.exit_code == 0
    assert "pip install 'resnet-deploy[gpu]'" in r.output  # rich markup must not eat "[gpu]"


def test_doctor_off_a_terminal_is_one_line_per_component_with_whole_cells():
    rows = doctor.run_checks()
    r = CliRunner().invoke(main, ["doctor"])  # not a terminal: plain lines, never folded or cut at 80 columns
    assert r.exit_code == 0, r.output
    lines = r.output.splitlines()
    assert lines[0] == "resnet-deploy doctor" and lines[1].split() == ["component", "status", "detail", "enables",
                                                                        "to", "install"]
    assert len(lines) == 3 + len(rows) and "…" not in r.output
    starts = [lines[1].index(h) for h in ("status", "detail", "enables", "to install")]
    for line, row in zip(lines[3:], rows, strict=True):
        assert line.startswith(row.component) and line[starts[0]:].startswith(row.status)
        assert line[starts[1]:].startswith(row.detail) and row.install in line  # each cell whole, in its column
