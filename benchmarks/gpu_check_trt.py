"""The TensorRT part of `make gpu-check`: engines from a trained checkpoint, parity with ONNX Runtime on the CPU, and
device time from CUDA events. Imported by gpu_check.py; where TensorRT is not importable it says so plainly and the
check reports that only the torch CUDA path ran.

Engines: fp32, fp16 and int8 (Q/DQ by TensorRT's rules), plus fp8 on TensorRT 11 with compute capability >= 8.9,
exported with `--trt` from the same checkpoint. Parity: each engine's logits against the fp32 ONNX model on ONNX
Runtime's CPU provider, same inputs (real test images when Fashion-MNIST is on disk, with their top-1). Latency:
`validate.latency.measure_latency` around `Predictor.run`, the device time being the engine's kernels between two
CUDA events (`TrtBackend.device_time_s`), the host time including the copies.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from resnet_deploy.checkpoint import load_checkpoint
from resnet_deploy.export import ExportOptions, export_bundle
from resnet_deploy.runtime import Predictor, ResnetDeployError, variants
from resnet_deploy.runtime.manifest import read_manifest
from resnet_deploy.runtime.predictor import present
from resnet_deploy.runtime.preprocess import Preprocess
from resnet_deploy.validate.latency import measure_latency, summarize

ABSENT = ("TensorRT is not installed here: only the torch CUDA path ran (no engines were built; TensorRT parity and "
          "engine device time were not measured)")
# Parity gates against fp32 ONNX Runtime: the same model to rounding (TF32 off), or top-1 agreement on the images.
GATES = {"fp32": ("max_abs", 1e-3), "fp16": ("agreement", 99.0), "int8": ("agreement", 97.0),
         "fp8": ("agreement", 95.0)}


def engine_precisions(trt: Any, compute_capability: str) -> tuple[str, ...]:
    """The precisions this TensorRT and GPU build: fp8 needs TensorRT 11 and compute capability >= 8.9."""
    major = int(str(trt.__version__).split(".")[0])
    cc = tuple(int(v) for v in compute_capability.split("."))
    return ("fp16", "int8") + (("fp8",) if major >= 11 and cc >= (8, 9) else ())


def _images(spec: str | None, preprocess: Any, n: int, split: str) -> tuple[np.ndarray, np.ndarray | None]:
    if spec is not None:
        from resnet_deploy.data import load_eval_arrays

        x, labels, _ = load_eval_arrays(spec, preprocess, n, split=split)
        return x, labels
    c, (h, w) = preprocess.channels, preprocess.input_size
    seed = 0 if split == "train" else 1
    return np.random.default_rng(seed).standard_normal((n, c, h, w), dtype=np.float32), None


def _engine_row(bundle: Path, name: str, x: np.ndarray, labels: np.ndarray | None, ref: np.ndarray) -> dict:
    with Predictor.from_bundle(bundle, backend=name, device="cuda") as p:
        logits = p.run(x)
        row: dict[str, Any] = {"engine": name, "describe": p.describe(),
                               "max_abs_vs_onnx_cpu": float(np.abs(logits - ref).max()),
                               "agreement": float((logits.argmax(1) == ref.argmax(1)).mean() * 100)}
        if labels is not None:
            row["top1"] = float((logits.argmax(1) == labels).mean() * 100)
        for batch in (1, 32):
            xb = x[:batch]
            s = measure_latency(lambda xb=xb: (p.run(xb), p.device_time_s())[1], warmup_s=1.0, duration_s=2.0)
            host = summarize(s.host_s, batch)
            row[f"batch{batch}"] = {"host_p50_ms": host.p50_ms, "device_p50_ms": summarize(
                s.device_s, batch).p50_ms if s.device_s else None, "img_per_s_host": host.throughput_ips}
    key, bound = GATES[variants.get(name).precision]
    value = row["max_abs_vs_onnx_cpu"] if key == "max_abs" else row["agreement"]
    row["ok"] = value <= bound if key == "max_abs" else value >= bound
    return row


def tensorrt_check(checkpoint: Path, work: Path, spec: str | None) -> dict:
    """Build engines from `checkpoint`, compare them with fp32 ONNX Runtime on the CPU, time them on the GPU."""
    try:
        import tensorrt as trt
    except ImportError:
        return {"ran": False, "reason": ABSENT}
    from resnet_deploy.export.tensorrt import cuda_device_info

    device = cuda_device_info()
    precisions = engine_precisions(trt, device["compute_capability"])
    bundle = work / "trt_bundle"
    pre = Preprocess.from_dict(load_checkpoint(checkpoint)["preprocess"])
    calib, _ = _images(spec, pre, 256, "train")
    error = None
    try:
        export_bundle(bundle, ExportOptions(precisions, trt=True, int8_target="trt", batch="1:8:32"),
                      checkpoint=checkpoint, calib_arrays=calib, force=True)
    except ResnetDeployError as e:  # a failed engine build: the bundle holds the engines built before it
        error = str(e)
        print(f"gpu-check: TensorRT export failed: {error}")
    if not (bundle / "manifest.json").is_file():  # the export failed before any engine
        return {"ran": True, "tensorrt": str(trt.__version__), **device, "export_error": error, "engines": [],
                "ok": False}
    x, labels = _images(spec, pre, 512, "test")
    with Predictor.from_bundle(bundle, backend="onnx", device="cpu") as ort:
        ref = ort.run(x)
    engines = [n for n in present(read_manifest(bundle)) if n.startswith("trt-")]
    rows = [_engine_row(bundle, name, x, labels, ref) for name in engines]
    result = {"ran": True, "tensorrt": str(trt.__version__), **device, "precisions": ["fp32", *precisions],
              "export_error": error,
              "onnx_cpu_top1": float((ref.argmax(1) == labels).mean() * 100) if labels is not None else None,
              "engines": rows}
    result["ok"] = len(rows) == 1 + len(precisions) and all(r["ok"] for r in rows)
    return result
