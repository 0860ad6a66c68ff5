"""Stages 3 and 4: the FP16 ONNX model and the INT8 (QDQ) ONNX models, with ONNX Runtime's own tools.

FP16: `onnxruntime.transformers.float16.convert_float_to_float16` with `keep_io_types=True`, so callers still feed
and read float32 (this is the file a TensorRT 11 FP16 engine is built from: strongly typed networks take their
precision from the graph).

INT8: `onnxruntime.quantization` static quantization in QDQ format, per-channel weights, after `quant_pre_process`
(ORT's quantization guide: shape inference and graph optimisation first). Two flavours:
- "cpu" (`model.int8.onnx`): unsigned 8-bit activations, signed 8-bit weights (U8S8), what ORT's x86 kernels run
  fastest (benchmarks/RESULTS.md: U8S8 about 2.7x faster than S8S8 for ResNet-50 on an AVX-512 VNNI CPU).
- "trt" (`model.int8-trt.onnx`): symmetric signed INT8 activations and weights, float weights kept with a Q/DQ pair
  and the bias left in float, which is what TensorRT's explicit quantization consumes (TensorRT developer guide,
  "Explicit Quantization": symmetric INT8, zero point 0).
"""

from __future__ import annotations

import contextlib
import io
from pathlib import Path
from typing import Any

import numpy as np
import onnx

from resnet_deploy.runtime.errors import ResnetDeployError
from resnet_deploy.runtime.manifest import INPUT_NAME
from resnet_deploy.runtime.onnx_backend import OrtBackend

CALIB_METHODS = ("minmax", "entropy", "percentile")
INT8_TARGETS = ("cpu", "trt")
CALIB_BATCH = 8  # images per calibration run; ranges are merged batch by batch to bound memory


def convert_fp16(src: str | Path, dst: str | Path) -> Path:
    """Write an fp16-weights copy of `src` to `dst`, keeping float32 inputs and outputs."""
    from onnxruntime.transformers.float16 import convert_float_to_float16
    from onnxruntime.transformers.onnx_model import OnnxModel

    model = OnnxModel(convert_float_to_float16(onnx.load(str(src)), keep_io_types=True))
    model.topological_sort()  # the converter appends its input Casts at the end; the ONNX checker wants order
    onnx.save(model.model, str(dst))
    onnx.checker.check_model(str(dst), full_check=True)
    return Path(dst)


class ArrayReader:
    """`onnxruntime.quantization.CalibrationDataReader` over a float32 (N, C, H, W) array, CALIB_BATCH at a time.

    Implements `set_range` and `__len__` so that `quantize_static(extra_options={"CalibStridedMinMax": 1})` collects
    ranges one batch at a time instead of keeping every intermediate tensor of every image (GBs for ResNet-50).
    """

    def __init__(self, arrays: np.ndarray, batch: int = CALIB_BATCH) -> None:
        self.batches = [np.ascontiguousarray(arrays[i:i + batch], dtype=np.float32)
                        for i in range(0, len(arrays), batch)]
        self.set_range(0, len(self.batches))

    def __len__(self) -> int:
        return len(self.batches)

    def set_range(self, start_index: int, end_index: int) -> None:
        self._it = iter(self.batches[start_index:end_index])

    def get_next(self) -> dict[str, np.ndarray] | None:
        x = next(self._it, None)
        return None if x is None else {INPUT_NAME: x}

    def rewind(self) -> None:
        self.set_range(0, len(self.batches))


def preprocess_for_quantization(src: str | Path, dst: str | Path) -> Path:
    """ORT's `quant_pre_process`: symbolic shape inference, ONNX Runtime graph optimisation, shape inference."""
    from onnxruntime.quantization.shape_inference import quant_pre_process

    quant_pre_process(str(src), str(dst), skip_symbolic_shape=False)
    return Path(dst)


def _int8_options(target: str) -> dict[str, Any]:
    from onnxruntime.quantization import QuantType

    if target == "cpu":
        return {"activation_type": QuantType.QUInt8, "weight_type": QuantType.QInt8, "extra_options": {}}
    # ORT's quantize_static only takes these as its `extra_options` strings; they stay in this one place.
    return {"activation_type": QuantType.QInt8, "weight_type": QuantType.QInt8,
            "extra_options": {"ActivationSymmetric": True, "WeightSymmetric": True, "AddQDQPairToWeight": True,
                              "QuantizeBias": False}}


def quantize_int8(src: str | Path, dst: str | Path, calib: np.ndarray, target: str = "cpu",
                  method: str = "minmax") -> Path:
    """Static INT8 quantization of `src` (already through `preprocess_for_quantization`) in QDQ format.

    Args:
        src: fp32 ONNX model.
        dst: where the QDQ model is written.
        calib: float32 (N, C, H, W) calibration images, preprocessed as the model expects.
        target: "cpu" (U8S8 for ONNX Runtime) or "trt" (symmetric S8S8 for TensorRT).
        method: calibration method: "minmax", "entropy" or "percentile".
    """
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, quantize_static

    if target not in INT8_TARGETS:
        raise ResnetDeployError(f"unknown int8 target {target!r}; choose one of: {', '.join(INT8_TARGETS)}")
    if method not in CALIB_METHODS:
        raise ResnetDeployError(f"unknown calibration method {method!r}; choose one of: {', '.join(CALIB_METHODS)}")
    if calib.ndim != 4 or len(calib) == 0:
        raise ResnetDeployError(f"calibration images must be a non-empty (N, C, H, W) array, found {calib.shape}")
    opts = _int8_options(target)
    opts["extra_options"]["CalibStridedMinMax"] = 1  # see ArrayReader
    calibrate = {"minmax": CalibrationMethod.MinMax, "entropy": CalibrationMethod.Entropy,
                 "percentile": CalibrationMethod.Percentile}[method]
    with contextlib.redirect_stdout(io.StringIO()):  # ORT's histogram collector prints progress to stdout
        quantize_static(str(src), str(dst), ArrayReader(calib), quant_format=QuantFormat.QDQ, per_channel=True,
                        calibrate_method=calibrate, calibration_providers=["CPUExecutionProvider"], **opts)
    onnx.checker.check_model(str(dst), full_check=True)
    return Path(dst)


def compare_onnx(ref: str | Path, other: str | Path, x: np.ndarray, batch: int = 32) -> dict[str, float]:
    """How far `other`'s logits are from `ref`'s on `x`: max abs, relative (max abs / max |ref|), top-1 agreement."""
    a_run, b_run = OrtBackend(Path(ref)).run, OrtBackend(Path(other)).run
    a = np.concatenate([a_run(x[i:i + batch]) for i in range(0, len(x), batch)])
    b = np.concatenate([b_run(x[i:i + batch]) for i in range(0, len(x), batch)])
    max_abs = float(np.abs(a - b).max())
    return {"max_abs": max_abs, "rel": max_abs / max(float(np.abs(a).max()), 1e-12),
            "top1_agree": float((a.argmax(1) == b.argmax(1)).mean()), "n": len(x)}
