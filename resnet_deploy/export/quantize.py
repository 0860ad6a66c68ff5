"""Stages 3 and 4: the FP16 ONNX model and the quantized (QDQ) ONNX models: INT8 for CPUs and TensorRT, FP8.

FP16: `onnxruntime.transformers.float16.convert_float_to_float16` with `keep_io_types=True`, so callers still feed
and read float32 (this is the file a TensorRT 11 FP16 engine is built from: strongly typed networks take their
precision from the graph).

INT8 and FP8, after `quant_pre_process` (ORT's quantization guide: shape inference and graph optimisation first):
- "cpu" (`model.int8.onnx`): `onnxruntime.quantization.quantize_static` in QDQ format, unsigned 8-bit activations,
  signed 8-bit per-channel weights (U8S8), what ORT's x86 kernels run fastest (benchmarks/RESULTS.md: U8S8 about 2.7x
  faster than S8S8 for ResNet-50 on an AVX-512 VNNI CPU), and what OpenVINO runs as fast as NNCF's own int8 of the
  same network; the logits stay float.
- "trt" (`model.int8-trt.onnx`) and FP8 (`model.fp8.onnx`, E4M3): symmetric Q/DQ placed by TensorRT's rules
  (`qdq.py`), what TensorRT's explicit quantization consumes; ONNX Runtime runs them too, so their accuracy is
  measured on the CPU before any engine is built.
"""

from __future__ import annotations

import contextlib
import io
from pathlib import Path

import numpy as np
import onnx

from resnet_deploy.export import qdq
from resnet_deploy.export.calibration import ArrayReader, calibration_method
from resnet_deploy.export.options import CALIB_METHODS
from resnet_deploy.runtime.errors import ResnetDeployError
from resnet_deploy.runtime.onnx_backend import OrtBackend

INT8_FILE_TARGETS = ("cpu", "trt")  # the manifest targets of the int8 files this module writes (one recipe each)
FP8_METHOD = "minmax"  # see quantize_fp8


def convert_fp16(src: str | Path, dst: str | Path) -> Path:
    """Write an fp16-weights copy of `src` to `dst`, keeping float32 inputs and outputs."""
    from onnxruntime.transformers.float16 import convert_float_to_float16
    from onnxruntime.transformers.onnx_model import OnnxModel

    model = OnnxModel(convert_float_to_float16(onnx.load(str(src)), keep_io_types=True))
    model.topological_sort()  # the converter appends its input Casts at the end; the ONNX checker wants order
    onnx.save(model.model, str(dst))
    onnx.checker.check_model(str(dst), full_check=True)
    return Path(dst)


def preprocess_for_quantization(src: str | Path, dst: str | Path) -> Path:
    """ORT's `quant_pre_process`: symbolic shape inference, ONNX Runtime graph optimisation, shape inference."""
    from onnxruntime.quantization.shape_inference import quant_pre_process

    quant_pre_process(str(src), str(dst), skip_symbolic_shape=False)
    return Path(dst)


def quantize_int8(src: str | Path, dst: str | Path, calib: np.ndarray, target: str = "cpu",
                  method: str = "minmax", amax: dict[str, float] | None = None) -> Path:
    """Static INT8 quantization of `src` (already through `preprocess_for_quantization`) in QDQ format.

    Args:
        src: fp32 ONNX model.
        dst: where the QDQ model is written.
        calib: float32 (N, C, H, W) calibration images, preprocessed as the model expects.
        target: "cpu" (U8S8 for ONNX Runtime) or "trt" (symmetric S8S8 placed by TensorRT's rules).
        method: calibration method: "minmax", "entropy" or "percentile".
        amax: for "trt", activation ranges already calibrated (`qdq.activation_tensors` names them).
    """
    from onnxruntime.quantization import QuantFormat, QuantType, quantize_static

    if target not in INT8_FILE_TARGETS:
        raise ResnetDeployError(f"unknown int8 target {target!r}; choose one of: {', '.join(INT8_FILE_TARGETS)}")
    _check_calibration(calib, method)
    if target == "trt":
        with contextlib.redirect_stdout(io.StringIO()):  # ORT's histogram collector prints progress to stdout
            return qdq.quantize_qdq(src, dst, calib, "int8", method, amax)
    with contextlib.redirect_stdout(io.StringIO()):
        quantize_static(str(src), str(dst), ArrayReader(calib), quant_format=QuantFormat.QDQ, per_channel=True,
                        calibrate_method=calibration_method(method), calibration_providers=["CPUExecutionProvider"],
                        activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                        # CalibStridedMinMax: see ArrayReader. The classifier's output stays float, as NNCF leaves
                        # it (benchmarks/RESULTS.md, "OpenVINO"): 8-bit logits only add ties between near classes.
                        extra_options={"CalibStridedMinMax": 1,
                                       "OpTypesToExcludeOutputQuantization": ["Gemm", "MatMul"]})
    onnx.checker.check_model(str(dst), full_check=True)
    return Path(dst)


def quantize_fp8(src: str | Path, dst: str | Path, calib: np.ndarray, amax: dict[str, float] | None = None) -> Path:
    """FP8 (E4M3) Q/DQ model of `src` for TensorRT 11 on compute capability >= 8.9, placed by TensorRT's rules.

    Ranges are max-calibrated: FP8's exponent covers the distribution's tail, and Model Optimizer converts only
    max-calibrated INT8 placements to FP8 (its `int8_to_fp8`). ONNX Runtime's CPU provider runs the result (Q/DQ in
    float), so its accuracy is measured without a GPU.
    """
    _check_calibration(calib, FP8_METHOD)
    return qdq.quantize_qdq(src, dst, calib, "fp8", FP8_METHOD, amax)


def _check_calibration(calib: np.ndarray, method: str) -> None:
    if method not in CALIB_METHODS:
        raise ResnetDeployError(f"unknown calibration method {method!r}; choose one of: {', '.join(CALIB_METHODS)}")
    if calib.ndim != 4 or len(calib) == 0:
        raise ResnetDeployError(f"calibration images must be a non-empty (N, C, H, W) array, found {calib.shape}")


def onnx_logits(path: str | Path, x: np.ndarray, batch: int = 32, graph_optimization: str = "all") -> np.ndarray:
    """The logits of the ONNX model at `path` on `x`, on ONNX Runtime (CPU), `batch` images at a time."""
    run = OrtBackend(Path(path), graph_optimization=graph_optimization).run
    return np.concatenate([run(x[i:i + batch]) for i in range(0, len(x), batch)])


def compare_logits(a: np.ndarray, b: np.ndarray) -> dict[str, float]:
    """How far logits `b` are from reference logits `a`: max abs, relative (max abs / max |a|), top-1 agreement."""
    max_abs = float(np.abs(a - b).max())
    return {"max_abs": max_abs, "rel": max_abs / max(float(np.abs(a).max()), 1e-12),
            "top1_agree": float((a.argmax(1) == b.argmax(1)).mean()), "n": len(a)}


def compare_onnx(ref: str | Path, other: str | Path, x: np.ndarray, batch: int = 32,
                 graph_optimization: str = "all") -> dict[str, float]:
    """`compare_logits` of `other`'s logits on `x` against `ref`'s.

    `graph_optimization` is ONNX Runtime's for `other` ("basic" for FP8 Q/DQ, see `onnx_backend.GRAPH_OPTIMIZATION`).
    """
    return compare_logits(onnx_logits(ref, x, batch), onnx_logits(other, x, batch, graph_optimization))
