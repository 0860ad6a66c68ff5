"""Q/DQ for TensorRT: placement by TensorRT's rules (checked node by node), INT8 and FP8 encodings, ORT runs both."""

from __future__ import annotations

from collections import Counter

import ml_dtypes
import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, numpy_helper
from torch import nn

from resnet_deploy.export import qdq, quantize
from resnet_deploy.export.onnx import export_onnx
from resnet_deploy.runtime.errors import ResnetDeployError
from resnet_deploy.runtime.onnx_backend import OrtBackend

SHAPE = (2, 12, 12)


class TwoBlocks(nn.Module):
    """Stem, an identity residual block, a projection (1x1 conv) residual block, global pool, classifier."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(2, 8, 3, padding=1)
        self.a1, self.a2 = nn.Conv2d(8, 8, 3, padding=1), nn.Conv2d(8, 8, 3, padding=1)
        self.b1, self.b2 = nn.Conv2d(8, 16, 3, stride=2, padding=1), nn.Conv2d(16, 16, 3, padding=1)
        self.proj = nn.Conv2d(8, 16, 1, stride=2)
        self.fc = nn.Linear(16, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.stem(x))
        x = torch.relu(self.a2(torch.relu(self.a1(x))) + x)  # identity shortcut
        x = torch.relu(self.b2(torch.relu(self.b1(x))) + self.proj(x))  # projection shortcut
        return self.fc(x.mean((2, 3)))


@pytest.fixture(scope="module")
def pre_onnx(tmp_path_factory) -> str:
    torch.manual_seed(3)
    work = tmp_path_factory.mktemp("qdq")
    export_onnx(TwoBlocks().eval(), work / "m.onnx", SHAPE)
    return str(quantize.preprocess_for_quantization(work / "m.onnx", work / "pre.onnx"))


@pytest.fixture(scope="module")
def calib() -> np.ndarray:
    return np.random.default_rng(11).standard_normal((16, *SHAPE), dtype=np.float32)


def _producers(model: onnx.ModelProto) -> dict[str, onnx.NodeProto]:
    return {out: n for n in model.graph.node for out in n.output}


@pytest.mark.parametrize("precision, qtype", [("int8", TensorProto.INT8), ("fp8", TensorProto.FLOAT8E4M3FN)])
def test_placement_follows_tensorrt_rules(pre_onnx, calib, tmp_path, precision, qtype):
    out = qdq.quantize_qdq(pre_onnx, tmp_path / "q.onnx", calib, precision)
    m = onnx.load(str(out))
    prod, inits = _producers(m), {t.name: t for t in m.graph.initializer}
    ops = Counter(n.op_type for n in m.graph.node)
    # 6 convs + 1 Gemm: 7 weights (DQ only) and 7 data inputs, of which the stem's and block a's input share
    # nothing; the two residual Adds: the identity input reuses a1's Q/DQ, the projection branch gets its own.
    assert (ops["Conv"], ops["Gemm"], ops["Add"]) == (6, 1, 2)
    assert ops["DequantizeLinear"] == 7 + ops["QuantizeLinear"]
    for node in (n for n in m.graph.node if n.op_type in ("Conv", "Gemm")):
        data, weight = prod[node.input[0]], prod[node.input[1]]
        assert data.op_type == "DequantizeLinear" and prod[data.input[0]].op_type == "QuantizeLinear"  # rule 1
        assert weight.op_type == "DequantizeLinear" and weight.input[0] in inits  # stored quantized
        w = inits[weight.input[0]]
        assert w.data_type == qtype and {a.name: a.i for a in weight.attribute}["axis"] == 0
        assert len(numpy_helper.to_array(inits[weight.input[1]])) == w.dims[0]  # one scale per output channel
    consumers = Counter(i for n in m.graph.node for i in n.input)
    for q in (n for n in m.graph.node if n.op_type == "QuantizeLinear"):
        if q.input[0] != "input" and prod[q.input[0]].op_type == "Conv":  # rule 2: no Q/DQ on Conv outputs, but
            users = [n.op_type for n in m.graph.node if f"{q.input[0]}_dq" in n.input]
            assert users == ["Add"] and consumers[q.input[0]] == 1  # a projection shortcut feeding an Add (rule 3)
        zero = inits[q.input[2]]
        assert zero.data_type == qtype and not numpy_helper.to_array(zero).astype(np.float32).any()
    for add in (n for n in m.graph.node if n.op_type == "Add"):  # rule 3: one branch quantized, one Conv to fuse
        kinds = sorted(prod[i].op_type for i in add.input)
        assert kinds == ["Conv", "DequantizeLinear"], kinds
    assert prod["logits"].op_type == "Gemm"  # rule 4: the logits stay float
    assert max(o.version for o in m.opset_import if o.domain == "") == (19 if precision == "fp8" else 18)


def test_projection_add_quantizes_the_shortcut_branch(pre_onnx):
    m = onnx.load(pre_onnx)
    place = qdq.place_qdq(m)
    adds = [i for i, n in enumerate(m.graph.node) if n.op_type == "Add"]
    prod = _producers(m)
    quantized_inputs = {(i, j) for uses in place.activations.values() for i, j in uses if i in adds}
    assert len(quantized_inputs) == 2
    for i, j in quantized_inputs:
        source = prod.get(m.graph.node[i].input[j])
        other = prod[m.graph.node[i].input[1 - j]]
        # identity block: the shortcut is the block input (a Relu); projection block: the 1x1 conv on the shortcut
        assert other.op_type == "Conv" and source.op_type in ("Relu", "Conv")
        if source.op_type == "Conv":
            assert [a.ints for a in source.attribute if a.name == "kernel_shape"][0] == [1, 1]


# Random weights: logits are small sums of large terms, so these bounds are loose; FP8 E4M3 keeps 3 mantissa bits
# (about 3% rounding per value) where a well-scaled INT8 keeps ~0.4% of the range. Accuracy on a trained model:
# tests/test_export_units.py.
@pytest.mark.parametrize("precision, bound", [("int8", 0.05), ("fp8", 0.2)])
def test_onnx_runtime_runs_both_on_the_cpu(pre_onnx, calib, tmp_path, precision, bound):
    out = qdq.quantize_qdq(pre_onnx, tmp_path / "q.onnx", calib, precision)
    x = np.random.default_rng(5).standard_normal((8, *SHAPE), dtype=np.float32)
    ref, got = OrtBackend(pre_onnx).run(x), OrtBackend(out, graph_optimization="basic").run(x)
    rel = np.abs(got - ref).max() / np.abs(ref).max()
    assert 0 < rel < bound, rel  # quantized (not exact), and close


def test_fp8_encoding_saturates_instead_of_nan():
    q = qdq._encode(np.array([500.0, -1000.0, 1.3, 0.0], np.float32), "fp8")
    assert q.dtype == ml_dtypes.float8_e4m3fn
    np.testing.assert_array_equal(q.astype(np.float32), [448.0, -448.0, 1.25, 0.0])
    np.testing.assert_array_equal(qdq._encode(np.array([127.6, -300.0, 2.5]), "int8"), [127, -127, 2])


def test_given_ranges_skip_calibration(pre_onnx, tmp_path):
    tensors = qdq.activation_tensors(pre_onnx)
    amax = {t: 2.0 + i for i, t in enumerate(tensors)}
    out = qdq.quantize_qdq(pre_onnx, tmp_path / "q.onnx", np.empty((0, *SHAPE), np.float32), "int8", amax=amax)
    inits = {t.name: numpy_helper.to_array(t) for t in onnx.load(str(out)).graph.initializer}
    for t, a in amax.items():
        assert inits[f"{t}_scale"] == pytest.approx(a / 127)
    with pytest.raises(ResnetDeployError, match=f"no calibrated range for {tensors[0]}"):
        qdq.quantize_qdq(pre_onnx, tmp_path / "r.onnx", np.empty((0, *SHAPE), np.float32), "int8",
                         amax={t: 1.0 for t in tensors[1:]})
    with pytest.raises(ResnetDeployError, match="unknown Q/DQ precision 'int4'; choose one of: int8, fp8"):
        qdq.quantize_qdq(pre_onnx, tmp_path / "r.onnx", np.empty((0, *SHAPE), np.float32), "int4", amax=amax)
