"""`auto` by measurement (a bundle's reports/auto.json, per machine), bench's record of it, and the roofline's
per-precision ceilings measured without the OpenBLAS variables."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest
from test_runtime import _build_bundle  # the tiny bundle every runtime test uses

from resnet_deploy.runtime import Predictor, autotune
from resnet_deploy.runtime import predictor as predictor_mod
from resnet_deploy.validate import ceiling, report
from resnet_deploy.validate.bench import record_fastest

FOREIGN = {"cpu": "Some Other CPU", "flags": "0123456789abcdef"}


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _build_bundle(tmp_path_factory.mktemp("auto") / "bundle")


@pytest.fixture
def bundle(built: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setattr(predictor_mod, "cpu_int8_is_fast", lambda: (True, "has vnni"))  # static order: int8 first
    return Path(shutil.copytree(built, tmp_path / "bundle"))


def test_machine_key_is_cpu_model_and_a_digest_of_the_flags() -> None:
    a = autotune.machine_key({"avx2", "avx512f"}, "EPYC")
    assert a == {"cpu": "EPYC", "flags": autotune.machine_key({"avx512f", "avx2"}, "EPYC")["flags"]}
    assert len(a["flags"]) == 16 and a != autotune.machine_key({"avx2"}, "EPYC")  # a VM hiding AVX-512 differs
    assert autotune.machine_key()["cpu"]


def test_auto_uses_a_record_of_this_machine(bundle: Path) -> None:
    assert Predictor.from_bundle(bundle).backend == "int8"  # no record: the static order
    autotune.record_order(bundle, ["fp16", "onnx"], p50_ms={"fp16": 1.0, "onnx": 2.0})
    p = Predictor.from_bundle(bundle)
    assert p.backend == "fp16"
    assert p.why.startswith("fastest measured on this machine by bench (auto.json, 20")
    entry = json.loads((bundle / "reports" / "auto.json").read_text())["machines"][0]
    assert entry["machine"] == autotune.machine_key() and entry["order"] == ["fp16", "onnx"]


def test_auto_ignores_a_foreign_record_and_keeps_both(bundle: Path) -> None:
    autotune.record_order(bundle, ["fp16"], key=FOREIGN)
    assert Predictor.from_bundle(bundle).backend == "int8"
    autotune.record_order(bundle, ["onnx"])  # this machine's entry is added beside the foreign one
    assert Predictor.from_bundle(bundle).backend == "onnx"
    autotune.record_order(bundle, ["int8-trt"])  # and replaced by the next bench here
    machines = json.loads((bundle / "reports" / "auto.json").read_text())["machines"]
    assert [m["order"] for m in machines] == [["fp16"], ["int8-trt"]]
    assert Predictor.from_bundle(bundle).backend == "int8-trt"


def test_a_recorded_variant_that_cannot_run_falls_through(bundle: Path) -> None:
    autotune.record_order(bundle, ["tflite", "trt-int8", "fp16"])  # unknown, then GPU-only: skipped
    p = Predictor.from_bundle(bundle)
    assert p.backend == "fp16" and "skipped trt-int8" not in p.why  # the bundle has no engine: not worth a word
    (bundle / "reports" / "auto.json").write_text("{not json")
    assert Predictor.from_bundle(bundle).backend == "int8"


def _bench(rows: dict[str, tuple[float, float]], device: str = "cpu") -> dict:
    """A bench report dict with p50 at batch 1 and 32 per backend."""
    results = [{"backend": n, "batch": b, "latency_ms": {"p50": ms}} for n, ms1_32 in rows.items()
               for b, ms in zip((1, 32), ms1_32, strict=True)]
    return {"settings": {"device": device, "threads": 2}, "results": results,
            "skipped": [{"backend": "ov-bf16", "reason": "CPU lacks bf16"}]}


def test_bench_records_the_fastest_within_the_gates(bundle: Path) -> None:
    bench = _bench({"pytorch": (9.0, 90.0), "onnx": (3.0, 30.0), "int8": (1.0, 20.0), "fp16": (2.0, 10.0)})
    path, order = record_fastest(bundle, bench)
    assert order == ["int8", "fp16", "onnx"]  # batch 1 decides; pytorch is not a backend
    report.write_json({"backends": [{"backend": "int8", "status": "FAIL", "failures": ["top-1 drop 2.00 points"]},
                                    {"backend": "fp16", "status": "PASS"}]}, bundle / "reports" / "validate.json")
    path, order = record_fastest(bundle, bench)
    assert order == ["fp16", "onnx"]
    entry = autotune.measured_order(bundle)[1]
    assert entry["excluded"] == {"ov-bf16": "CPU lacks bf16", "int8": "failed validate: top-1 drop 2.00 points"}
    assert entry["p50_ms"] == {"onnx": 3.0, "int8": 1.0, "fp16": 2.0} and entry["batch"] == 1
    assert Predictor.from_bundle(bundle).backend == "fp16"
    assert record_fastest(bundle, _bench({"onnx": (1.0, 2.0)}, device="cuda")) is None


def test_ceiling_subprocess_runs_without_the_openblas_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    seen = {}

    def fake_run(cmd: list[str], env: dict, **kw: object) -> subprocess.CompletedProcess:
        seen.update(env=env, cmd=cmd)
        return subprocess.CompletedProcess(cmd, 0, stdout='{"fp32": {"gflops": 1.0}}\n', stderr="")

    monkeypatch.setenv("OPENBLAS_CORETYPE", "Haswell")
    monkeypatch.setenv("OPENBLAS_L2_SIZE", "512")
    monkeypatch.setattr(ceiling.subprocess, "run", fake_run)
    assert ceiling.measure_clean((64,), threads=2) == {"fp32": {"gflops": 1.0}}
    env = seen["env"]
    assert "OPENBLAS_CORETYPE" not in env and "OPENBLAS_L2_SIZE" not in env
    assert env["OPENBLAS_NUM_THREADS"] == "2" and json.loads(seen["cmd"][-1])["sizes"] == [64]


def test_ceilings_per_precision_and_rows_against_their_own_roof() -> None:
    from resnet_deploy.validate import ceiling

    c = ceiling.matmul_ceiling(128, duration_s=0.05, threads=1)
    per = c["precisions"]
    assert {"fp32", "int8"} <= set(per) and c["gflops"] == per["fp32"]["gflops"] > 0
    assert per["int8"]["library"] == "onnxruntime" and set(per["fp32"]["tried"]) >= {"numpy@128", "torch@128"}
    assert "without OPENBLAS_CORETYPE and OPENBLAS_L2_SIZE" in c["method"]
    assert ceiling.roof_for(c, "int8") == ("int8", per["int8"]["gflops"])
    assert ceiling.roof_for(c, "fp16") == ("fp32", c["gflops"])
    assert report.roofline_text({"roofline_ratio": 0.5, "roof_precision": "int8"}) == "50.0% int8"
    assert report.roofline_text({"roofline_ratio": 1.21}) == "over the fp32 roof: 121%, roof too low"


def test_a_record_behind_a_link_out_of_the_bundle_is_neither_read_nor_written(bundle: Path, tmp_path: Path) -> None:
    from resnet_deploy.runtime import BundleError

    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (bundle / "reports").symlink_to(elsewhere)
    (elsewhere / "auto.json").write_text(json.dumps({"schema": autotune.AUTO_SCHEMA, "machines": [
        {"machine": autotune.machine_key(), "device": "cpu", "order": ["fp16"]}]}))
    assert Predictor.from_bundle(bundle).backend == "int8"  # the planted record is ignored
    with pytest.raises(BundleError, match="bundle file 'reports' resolves outside the bundle"):
        autotune.record_order(bundle, ["onnx"])
    assert json.loads((elsewhere / "auto.json").read_text())["machines"][0]["order"] == ["fp16"]  # untouched
