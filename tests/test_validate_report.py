"""Reports from made-up results: the documented JSON keys, the Markdown tables, the PNG plots."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest

from resnet_deploy.validate import latency, report
from resnet_deploy.validate.bench import BenchReport, BenchRow, _row, _with_ratios
from resnet_deploy.validate.env import environment
from resnet_deploy.validate.parity import BackendParity, ParityReport

VALIDATE_KEYS = {"schema", "schema_version", "created", "bundle", "arch", "data", "num_samples", "num_classes",
                 "reference", "tolerances", "backends", "passed", "environment", "unlisted_files"}
BACKEND_KEYS = {"backend", "precision", "status", "reason", "top1", "top5", "agreement", "max_abs_diff",
                "mean_abs_diff", "first_disagreements", "failures"}
BENCH_KEYS = {"schema", "schema_version", "created", "bundle", "arch", "input_shape", "macs_per_image", "settings",
              "ceiling", "results", "skipped", "notes", "environment"}
RESULT_KEYS = {"backend", "precision", "batch", "iterations", "total_s", "throughput_ips", "latency_ms",
               "device_latency_ms", "latency_ratio", "speedup", "achieved_gflops", "roofline_ratio", "roof_precision"}
CEILING = {"gflops": 190.0, "n": 2048, "dtype": "float32", "threads": 2, "device": "cpu", "call_ms": 90.4,
           "precisions": {"fp32": {"gflops": 190.0, "n": 2048, "library": "onnxruntime"},
                          "int8": {"gflops": 2000.0, "n": 1024, "library": "onnxruntime"}}, "method": "best of"}


def _samples(ms: float, n: int, seed: int) -> latency.LatencySamples:
    rng = np.random.default_rng(seed)
    return latency.LatencySamples(host_s=list(ms / 1e3 * (1 + 0.1 * rng.random(n))))


def _bench() -> dict:
    rows = []
    for batch in (1, 8):
        for name, ms in (("pytorch", 50.0), ("onnx", 35.0), ("int8", 12.0)):
            rows.append(_row(name, batch, _samples(ms * batch ** 0.8, 20, batch), 4_089_000_000, CEILING))
    return BenchReport("b", "resnet50", [3, 224, 224], 4_089_000_000,
                       {"backends": ["pytorch", "onnx", "int8"], "batches": [1, 8], "warmup_s": 1, "duration_s": 2,
                        "rounds": 3, "threads": 2, "device": "cpu"},
                       CEILING,
                       _with_ratios(rows), [{"backend": "trt-fp16", "reason": "TensorRT engines need device='cuda'"}],
                       [], environment(2)).to_dict()


def _validate() -> dict:
    entry = {"backend": "int8", "precision": "int8", "status": "FAIL", "reason": None, "top1": 71.5, "top5": 90.0,
             "agreement": 93.25, "max_abs_diff": 1.5, "mean_abs_diff": 0.2, "first_disagreements": [3, 9],
             "failures": ["top-1 drop 4.50 points > 1.0", "first disagreeing samples: 3, 9"]}
    skipped = {**{k: None for k in BACKEND_KEYS}, "backend": "trt-int8", "precision": "int8", "status": "SKIPPED",
               "reason": "TensorRT engines need device='cuda'", "first_disagreements": [], "failures": []}
    return {"schema": "resnet-deploy/validate", "schema_version": 1, "created": report.now_utc(), "bundle": "b",
            "arch": "resnet50", "data": "imagenet:/d", "num_samples": 400, "num_classes": 1000,
            "reference": {"kind": "checkpoint", "path": "m.pt", "note": None, "top1": 76.0, "top5": 93.0},
            "tolerances": {"fp32_agreement": 99.9, "fp32_max_abs": 1e-3, "fp16_agreement": 99.5, "int8_top1_drop": 1.0},
            "backends": [entry, skipped], "passed": False, "environment": environment(None), "unlisted_files": []}


def test_bench_rows_have_the_documented_keys_and_ratios():
    b = _bench()
    assert set(b) == BENCH_KEYS
    for r in b["results"]:
        assert set(r) == RESULT_KEYS
        assert set(r["latency_ms"]) == set(latency.STAT_KEYS)
    int8 = next(r for r in b["results"] if r["backend"] == "int8" and r["batch"] == 1)
    torch_row = next(r for r in b["results"] if r["backend"] == "pytorch" and r["batch"] == 1)
    assert int8["latency_ratio"] == pytest.approx(int8["latency_ms"]["p50"] / torch_row["latency_ms"]["p50"])
    assert int8["speedup"] == pytest.approx(1 / int8["latency_ratio"])
    assert int8["roofline_ratio"] == pytest.approx(int8["achieved_gflops"] / 2000.0)  # against the int8 roof
    assert int8["roof_precision"] == "int8" and torch_row["roof_precision"] == "fp32"
    assert torch_row["roofline_ratio"] == pytest.approx(torch_row["achieved_gflops"] / 190.0)


def test_report_schemas_are_the_dataclasses():
    fields = {f.name for f in dataclasses.fields(ParityReport)} | {"schema", "schema_version"}
    assert fields == VALIDATE_KEYS and {f.name for f in dataclasses.fields(BackendParity)} == BACKEND_KEYS
    assert {f.name for f in dataclasses.fields(BenchReport)} | {"schema", "schema_version"} == BENCH_KEYS
    assert {f.name for f in dataclasses.fields(BenchRow)} == RESULT_KEYS


def test_reports_render_markdown_and_png(tmp_path):
    v, b = _validate(), _bench()
    assert set(v) == VALIDATE_KEYS and set(v["backends"][0]) == BACKEND_KEYS
    report.write_json(v, tmp_path / report.VALIDATE_JSON)
    only_validate = report.write_reports(tmp_path)
    assert only_validate == [tmp_path / report.REPORT_MD]
    report.write_json(b, tmp_path / report.BENCH_JSON)
    written = report.write_reports(tmp_path)
    assert [p.name for p in written] == [report.REPORT_MD, report.LATENCY_PNG, report.ACCURACY_PNG]
    md = (tmp_path / report.REPORT_MD).read_text()
    assert "## Accuracy parity (FAIL)" in md
    assert "| int8 | int8 | FAIL | 71.50 | 90.00 | 93.250 |" in md
    assert "top-1 drop 4.50 points > 1.0; first disagreeing samples: 3, 9" in md
    assert "| trt-int8 | int8 | SKIPPED | - |" in md
    assert "- skipped trt-fp16: TensorRT engines need device='cuda'" in md
    assert "fp32 ceiling 190.0 GFLOP/s (2048^3 matmul, same run); int8 ceiling 2000.0 GOP/s (1024^3, onnxruntime)" in md
    assert "run 2 s per point in 3 round-robin round(s)" in md
    for png in (report.LATENCY_PNG, report.ACCURACY_PNG):
        assert (tmp_path / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert json.loads((tmp_path / report.BENCH_JSON).read_text())["results"][0]["backend"] == "pytorch"


def test_summaries_name_failures_and_skips():
    lines = report.validate_summary(_validate())
    assert lines[-1] == "FAIL: int8 outside tolerance (1 checked, 1 skipped)"
    assert "SKIPPED trt-int8: TensorRT engines need device='cuda'" in lines
    bench_lines = report.bench_summary(_bench())
    assert bench_lines[0].startswith("fp32 ceiling 190.0 GFLOP/s")
    assert any(line.startswith("int8      batch   1") and "x pytorch's speed" in line for line in bench_lines)
    assert any(line.startswith("int8      batch   1") and "% int8)" in line for line in bench_lines)


def test_summary_rows_join_accuracy_and_latency():
    v, b = _validate(), _bench()
    rows = {r[0]: r for r in report.summary_rows(v, b)}
    assert list(rows) == ["pytorch", "int8", "trt-int8", "onnx"]
    pt, int8, trt, onnx = rows["pytorch"], rows["int8"], rows["trt-int8"], rows["onnx"]
    assert pt[2] == "reference (checkpoint)" and pt[3] == "76.00" and pt[7] == "1.00x"
    p50_1 = next(r["latency_ms"]["p50"] for r in b["results"] if r["backend"] == "int8" and r["batch"] == 1)
    ips_8 = next(r["throughput_ips"] for r in b["results"] if r["backend"] == "int8" and r["batch"] == 8)
    assert int8[1:6] == ("int8", "FAIL", "71.50", "93.250", "1.5e+00")
    assert int8[6] == f"{p50_1:.3f}" and int8[8] == f"{ips_8:.0f} (b8)"
    assert trt[2] == "SKIPPED" and trt[6] == "-"
    assert onnx[2] == "not validated" and onnx[3] == "-"  # benched but not validated
    assert report.summary_rows(None, None) == []


def test_report_command_prints_the_table_or_says_what_is_missing(tmp_path):
    from click.testing import CliRunner

    from resnet_deploy.cli import main

    r = CliRunner().invoke(main, ["report", str(tmp_path / "nowhere")])
    assert r.exit_code == 2 and r.output.strip() == f"Error: bundle directory not found: {tmp_path / 'nowhere'}"
    r = CliRunner().invoke(main, ["report", str(tmp_path)])
    assert r.exit_code == 2
    assert r.output.strip() == (f"Error: {tmp_path / 'reports'} holds no validate.json or bench.json; run "
                                "`resnet-deploy validate` and `bench` first")
    report.write_json(_validate(), tmp_path / "reports" / report.VALIDATE_JSON)
    report.write_json(_bench(), tmp_path / "reports" / report.BENCH_JSON)
    r = CliRunner().invoke(main, ["report", str(tmp_path)])
    assert r.exit_code == 0, r.output
    assert "resnet50: accuracy on 400 images of imagenet:/d" in r.output
    assert "FAIL" in r.output and "71.50" in r.output
    assert f"report: {tmp_path / 'reports' / report.REPORT_MD}" in r.output
    r = CliRunner().invoke(main, ["report", str(tmp_path), "--json"])
    assert r.exit_code == 0, r.output
    d = json.loads(r.output)
    assert d["columns"] == list(report.SUMMARY_COLUMNS) and d["files"][0] == str(tmp_path / "reports" / "report.md")
    rows = {row["backend"]: row for row in d["rows"]}
    assert rows["int8"]["status"] == "FAIL" and rows["int8"]["top-1 %"] == "71.50"
    assert rows["pytorch"]["speed-up vs pytorch"] == "1.00x"
    table = [ln for ln in CliRunner().invoke(main, ["report", str(tmp_path)]).output.splitlines()
             if ln.startswith("int8 ")]
    assert len(table) == 1 and "FAIL" in table[0] and "71.50" in table[0]  # one whole line per backend off a terminal
