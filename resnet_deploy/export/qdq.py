"""Q/DQ models for TensorRT: INT8 and FP8 (E4M3) explicit quantization, placed by TensorRT's rules.

Placement follows the TensorRT developer guide ("Explicit Quantization", Q/DQ layer-placement recommendations), which
is also what NVIDIA Model Optimizer's ONNX PTQ documents for CNNs (it quantizes Conv, Gemm, MatMul and
"Residual-Add"); see docs/reference.md, "Q/DQ for TensorRT":

1. Every input of a weighted operation (Conv, ConvTranspose, Gemm, MatMul) is quantized: the activation with one
   scale per tensor, the weights with one scale per output channel (stored quantized, followed by a DequantizeLinear).
2. Outputs of weighted operations are not quantized: TensorRT fuses Conv+ReLU and takes the output precision from the
   next Q/DQ pair.
3. The residual input of a skip-connection Add (the branch with fewer weighted layers behind it) is quantized, so that
   TensorRT fuses the other branch's last Conv with the Add.
4. Nothing else: no Q/DQ on pooling, on the bias (kept float) or on the network output (the logits stay float).

Symmetric scales, zero point 0 (TensorRT's only scheme): scale = amax / 127 for INT8, amax / 448 for FP8 E4M3.

Why not `onnxruntime.quantization.quantize_static`: its QDQ format quantizes the inputs and outputs of every node it
knows (Q/DQ after each Conv, on both Add inputs and on the logits), and in onnxruntime 1.32 its FP8 path takes only
the Distribution calibrator. The calibration here is still ONNX Runtime's (`create_calibrator`).
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import ml_dtypes
import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from resnet_deploy.export.calibration import ArrayReader, calibration_method
from resnet_deploy.runtime import variants
from resnet_deploy.runtime.errors import ResnetDeployError

WEIGHTED = ("Conv", "ConvTranspose", "Gemm", "MatMul")
_ONNX_TYPE = {"int8": TensorProto.INT8, "fp8": TensorProto.FLOAT8E4M3FN}
_MIN_OPSET = {"int8": 13, "fp8": 19}  # per-axis DequantizeLinear (13); float8 Q/DQ (19)
_TINY = 1e-12


@dataclass
class Placement:
    """Where Q/DQ pairs go.

    Attributes:
        activations: tensor name -> the (node index, input index) uses that read its dequantized copy.
        weights: initializer name -> channel axis of its per-channel scales.
    """

    activations: dict[str, list[tuple[int, int]]] = field(default_factory=dict)
    weights: dict[str, int] = field(default_factory=dict)


def _weight_axis(node: onnx.NodeProto, shape: tuple[int, ...]) -> int:
    # The output-channel axis of a weighted op's weight tensor (ONNX operator specs).
    if node.op_type == "ConvTranspose":
        return 1
    if node.op_type == "Gemm":
        trans_b = next((a.i for a in node.attribute if a.name == "transB"), 0)
        return 0 if trans_b else 1
    if node.op_type == "MatMul":
        return len(shape) - 1
    return 0


def _depths(model: onnx.ModelProto) -> dict[str, int]:
    """Tensor -> number of weighted ops on the longest path from the graph inputs (nodes are topologically sorted)."""
    depth: dict[str, int] = {}
    for node in model.graph.node:
        d = max((depth.get(t, 0) for t in node.input if t), default=0) + (node.op_type in WEIGHTED)
        for out in node.output:
            depth[out] = d
    return depth


def place_qdq(model: onnx.ModelProto) -> Placement:
    """Where TensorRT's rules put Q/DQ pairs in `model` (see the module docstring)."""
    inits = {t.name: t for t in model.graph.initializer}
    producer = {out: n for n in model.graph.node for out in n.output}
    depth = _depths(model)
    place = Placement()
    for i, node in enumerate(model.graph.node):
        if node.op_type in WEIGHTED and len(node.input) >= 2:
            if node.input[0] not in inits:
                place.activations.setdefault(node.input[0], []).append((i, 0))
            if node.input[1] in inits:
                place.weights[node.input[1]] = _weight_axis(node, tuple(inits[node.input[1]].dims))
            else:
                place.activations.setdefault(node.input[1], []).append((i, 1))
        elif node.op_type == "Add" and len(node.input) == 2 and not set(node.input) & set(inits):
            a, b = node.input
            if depth.get(a, 0) == depth.get(b, 0):
                continue  # not a skip connection: both branches equally deep
            skip, main = (0, b) if depth.get(a, 0) < depth.get(b, 0) else (1, a)
            if main in producer and producer[main].op_type in WEIGHTED:  # Conv + Add can fuse
                place.activations.setdefault(node.input[skip], []).append((i, skip))
    return place


def calibrate(model_path: Path, tensors: list[str], calib: np.ndarray, method: str, batch: int = 8) -> dict[str, float]:
    """amax (largest |value| seen, or the method's symmetric threshold) of each named tensor over `calib`.

    Uses ONNX Runtime's calibrators ("minmax", "entropy", "percentile"), one batch per `collect_data` call so that
    intermediate tensors of only one batch are held at a time.
    """
    from onnxruntime.quantization.calibrate import create_calibrator

    reader = ArrayReader(calib, batch)
    with tempfile.TemporaryDirectory(prefix="resnet-deploy-calib-") as work:
        # The tensors placed are inputs of weighted ops and of Adds: only those ops' tensors are collected.
        calibrator = create_calibrator(model_path, [*WEIGHTED, "Add"], str(Path(work) / "augmented.onnx"),
                                       calibrate_method=calibration_method(method), extra_options={"symmetric": True})
        for i in range(len(reader)):
            reader.set_range(i, i + 1)
            calibrator.collect_data(reader)
        ranges = calibrator.compute_data().data
    missing = [t for t in tensors if t not in ranges]
    if missing:
        raise ResnetDeployError(f"calibration saw no values for {', '.join(missing[:3])}")
    return {t: float(max(abs(np.max(ranges[t].range_value[0])), abs(np.max(ranges[t].range_value[1]))))
            for t in tensors}


def _qmax(precision: str) -> float:
    # the largest magnitude of the quantized type, a fact of the precision (the registry's `Precision.qmax`)
    return float(variants.PRECISIONS[precision].qmax)


def _encode(values: np.ndarray, precision: str) -> np.ndarray:
    """Round float32 values (already divided by their scale) to the quantized type, saturating at its range."""
    q = np.clip(values, -_qmax(precision), _qmax(precision))
    if precision == "int8":
        return np.round(q).astype(np.int8)
    return q.astype(ml_dtypes.float8_e4m3fn)  # round-to-nearest-even after the clip (ml_dtypes gives NaN past 448)


def _zero_point(name: str, precision: str, length: int | None = None) -> TensorProto:
    shape = () if length is None else (length,)
    zeros = np.zeros(shape, np.int8) if precision == "int8" else np.zeros(shape, ml_dtypes.float8_e4m3fn)
    return numpy_helper.from_array(zeros, name)


def _quantize_weight(graph: onnx.GraphProto, name: str, axis: int, precision: str) -> onnx.NodeProto:
    """Replace initializer `name` by its per-channel quantized copy; the returned DequantizeLinear outputs `name`."""
    init = next(t for t in graph.initializer if t.name == name)
    w = numpy_helper.to_array(init).astype(np.float32)
    reduce = tuple(a for a in range(w.ndim) if a != axis)
    amax = np.abs(w).max(axis=reduce) if reduce else np.abs(w)
    scale = (np.maximum(amax, _TINY) / _qmax(precision)).astype(np.float32)  # (C,) one per output channel
    shape = [1] * w.ndim
    shape[axis] = -1
    q = _encode(w / scale.reshape(shape), precision)
    graph.initializer.remove(init)
    graph.initializer.extend([numpy_helper.from_array(q, f"{name}_quantized"),
                              numpy_helper.from_array(scale, f"{name}_scale"),
                              _zero_point(f"{name}_zero_point", precision, len(scale))])
    return helper.make_node("DequantizeLinear", [f"{name}_quantized", f"{name}_scale", f"{name}_zero_point"], [name],
                            name=f"{name}_DequantizeLinear", axis=axis)


def _quantize_activation(graph: onnx.GraphProto, name: str, amax: float, precision: str) -> list[onnx.NodeProto]:
    """A Q/DQ pair on tensor `name`: its dequantized copy is `<name>_dq`."""
    scale = np.float32(max(amax, _TINY) / _qmax(precision))
    graph.initializer.extend([numpy_helper.from_array(np.array(scale, np.float32), f"{name}_scale"),
                              _zero_point(f"{name}_zero_point", precision)])
    args = [f"{name}_scale", f"{name}_zero_point"]
    return [helper.make_node("QuantizeLinear", [name, *args], [f"{name}_q"], name=f"{name}_QuantizeLinear"),
            helper.make_node("DequantizeLinear", [f"{name}_q", *args], [f"{name}_dq"],
                             name=f"{name}_DequantizeLinear")]


def insert_qdq(model: onnx.ModelProto, place: Placement, amax: dict[str, float], precision: str) -> onnx.ModelProto:
    """A copy of `model` with the Q/DQ pairs of `place` (activation scales from `amax`), topologically sorted."""
    out = onnx.ModelProto()
    out.CopyFrom(model)
    graph = out.graph
    for tensor, uses in place.activations.items():
        for node_index, input_index in uses:
            graph.node[node_index].input[input_index] = f"{tensor}_dq"
    nodes = list(graph.node)
    ordered = [_quantize_weight(graph, w, axis, precision) for w, axis in place.weights.items()]
    pairs = {t: _quantize_activation(graph, t, amax[t], precision) for t in place.activations}
    produced = {name for n in nodes for name in n.output}
    ordered += [n for t, pair in pairs.items() if t not in produced for n in pair]  # on graph inputs
    for node in nodes:  # each pair right after the node that produces its tensor
        ordered += [node, *(n for name in node.output for n in pairs.get(name, ()))]
    graph.ClearField("node")
    graph.node.extend(ordered)
    _raise_opset(out, _MIN_OPSET[precision])
    return out


def _raise_opset(model: onnx.ModelProto, minimum: int) -> None:
    for opset in model.opset_import:
        if opset.domain in ("", "ai.onnx") and opset.version < minimum:
            opset.version = minimum


def activation_tensors(src: str | Path) -> list[str]:
    """The tensors of the model at `src` that get a per-tensor Q/DQ pair, i.e. whose ranges calibration finds."""
    return list(place_qdq(onnx.load(str(src))).activations)


def quantize_qdq(src: str | Path, dst: str | Path, calib: np.ndarray, precision: str = "int8",
                 method: str = "minmax", amax: dict[str, float] | None = None) -> Path:
    """Write `src` (after `quantize.preprocess_for_quantization`) with TensorRT-rule Q/DQ pairs to `dst`.

    Args:
        src: fp32 ONNX model.
        dst: where the Q/DQ model is written (checked with the ONNX checker).
        calib: float32 (N, C, H, W) calibration images, preprocessed as the model expects.
        precision: "int8" or "fp8" (E4M3).
        method: ONNX Runtime calibration method for the activation ranges.
        amax: activation ranges already calibrated (a calibration cache); `calib` is not run then.
    """
    if precision not in _MIN_OPSET:
        raise ResnetDeployError(f"unknown Q/DQ precision {precision!r}; choose one of: {', '.join(_MIN_OPSET)}")
    model = onnx.load(str(src))
    place = place_qdq(model)
    if amax is None:
        amax = calibrate(Path(src), list(place.activations), calib, method)
    missing = [t for t in place.activations if t not in amax]
    if missing:
        raise ResnetDeployError(f"no calibrated range for {', '.join(missing[:3])}; recalibrate")
    onnx.save(insert_qdq(model, place, amax, precision), str(dst))
    onnx.checker.check_model(str(dst), full_check=True)
    return Path(dst)
