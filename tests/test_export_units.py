"""Export stages one by one: BN folding, the fp32 ONNX model, fp16 conversion and INT8 quantization."""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
import torch
from helpers import randomize_bn
from torch import nn

from resnet_deploy import models
from resnet_deploy.export import quantize
from resnet_deploy.export.calibration import ArrayReader
from resnet_deploy.export.fold import check_fold, count_batchnorms, fold_batchnorm
from resnet_deploy.export.onnx import check_onnx, check_onnx_parity, export_onnx
from resnet_deploy.runtime.errors import ResnetDeployError
from resnet_deploy.runtime.onnx_backend import OrtBackend
from resnet_deploy.system import torch_threads

SHAPE = (1, 28, 28)  # (C, H, W): Fashion-MNIST-sized grey input




@pytest.fixture(scope="module")
def model() -> nn.Module:
    # Trained for a few steps on the generated classes: a random network's logits are nearly tied, and top-1
    # agreement after quantization would then measure noise instead of the quantizer.
    torch.manual_seed(0)
    net = models.build("cifar_resnet20", num_classes=4, in_channels=1)
    opt = torch.optim.SGD(net.parameters(), lr=0.02, momentum=0.9)
    x, y = generated_images(1280, seed=5)
    with torch_threads(1):  # small batches: one thread is as fast, and does not stall on a busy shared machine
        for i in range(0, 1280, 32):
            opt.zero_grad()
            nn.functional.cross_entropy(net(torch.from_numpy(x[i:i + 32])), torch.from_numpy(y[i:i + 32])).backward()
            opt.step()
    return net.eval()


@pytest.fixture(scope="module")
def onnx_path(model, tmp_path_factory):
    path = tmp_path_factory.mktemp("onnx") / "model.onnx"
    export_onnx(fold_batchnorm(model), path, SHAPE, metadata={"arch": "cifar_resnet20", "classes": json.dumps(["a"])})
    return path


@pytest.mark.parametrize("shortcut", ["A", "B", "C"])
def test_fold_matches_and_leaves_no_batchnorm(shortcut):
    model = randomize_bn(models.build("cifar_resnet20", num_classes=7, in_channels=3, shortcut=shortcut), seed=2)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    n_bn = count_batchnorms(model)
    folded = fold_batchnorm(model)
    assert n_bn == 19 + {"A": 0, "B": 2, "C": 9}[shortcut]  # projection shortcuts carry their own BN (§3.3)
    assert count_batchnorms(folded) == 0
    n_conv = sum(isinstance(m, nn.Conv2d) for m in folded.modules())
    assert n_conv == 19 + {"A": 0, "B": 2, "C": 9}[shortcut]  # the shortcut convs are still there, now with bias
    diff, bound = check_fold(model, folded, (3, 32, 32), batch=3)
    assert diff <= 1e-4 <= bound  # the fp32 bound holds
    # The original is untouched: same BN count, same tensors.
    assert count_batchnorms(model) == n_bn
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_check_fold_leaves_the_global_torch_seed_alone(model):
    torch.manual_seed(7)
    expected = torch.rand(3)
    torch.manual_seed(7)
    check_fold(model, fold_batchnorm(model), SHAPE)  # draws its inputs from a local generator
    assert torch.equal(torch.rand(3), expected)


def test_check_fold_catches_a_wrong_fold(model):
    broken = fold_batchnorm(model)
    with torch.no_grad():
        next(m for m in broken.modules() if isinstance(m, nn.Conv2d)).bias.add_(0.5)
    with pytest.raises(ResnetDeployError, match=r"differ from the original by .* expected <= 0.0001"):
        check_fold(model, broken, SHAPE)


def test_onnx_graph_contract(onnx_path):
    proto = check_onnx(onnx_path)
    ops = {n.op_type for n in proto.graph.node}
    assert "BatchNormalization" not in ops and "Conv" in ops
    assert proto.opset_import[0].version == 18
    assert [i.name for i in proto.graph.input] == ["input"] and [o.name for o in proto.graph.output] == ["logits"]
    dims = proto.graph.input[0].type.tensor_type.shape.dim
    assert dims[0].dim_param and [d.dim_value for d in dims[1:]] == [1, 28, 28]
    props = {p.key: p.value for p in proto.metadata_props}
    assert props["arch"] == "cifar_resnet20" and json.loads(props["classes"]) == ["a"]


def test_onnx_parity_and_dynamic_batch(model, onnx_path):
    diffs = check_onnx_parity(model, onnx_path, SHAPE, batches=(1, 3))
    assert set(diffs) == {1, 3} and max(diffs.values()) < 1e-4
    x = np.random.default_rng().standard_normal((5, *SHAPE), dtype=np.float32)
    with torch.no_grad():
        ref = model(torch.from_numpy(x)).numpy()
    got = OrtBackend(onnx_path).run(x)
    assert got.shape == (5, 4)
    np.testing.assert_allclose(got, ref, atol=1e-4, rtol=1e-4)


def test_parity_check_catches_another_model(onnx_path):
    other = randomize_bn(models.build("cifar_resnet20", num_classes=4, in_channels=1), seed=3)
    with pytest.raises(ResnetDeployError, match="differs from PyTorch"):
        check_onnx_parity(other, onnx_path, SHAPE)


def test_check_onnx_refuses_batchnorm_and_fixed_batch(tmp_path):
    def graph(batch, with_bn):
        x = onnx.helper.make_tensor_value_info("input", onnx.TensorProto.FLOAT, [batch, 2, 4, 4])
        y = onnx.helper.make_tensor_value_info("logits", onnx.TensorProto.FLOAT, [batch, 2, 4, 4])
        inits = [onnx.numpy_helper.from_array(np.ones(2, np.float32), n) for n in ("s", "b", "m", "v")]
        node = (onnx.helper.make_node("BatchNormalization", ["input", "s", "b", "m", "v"], ["logits"]) if with_bn
                else onnx.helper.make_node("Relu", ["input"], ["logits"]))
        model = onnx.helper.make_model(onnx.helper.make_graph([node], "g", [x], [y], inits if with_bn else []),
                                       opset_imports=[onnx.helper.make_opsetid("", 18)])
        path = tmp_path / f"{batch}{with_bn}.onnx"
        onnx.save(model, str(path))
        return path

    with pytest.raises(ResnetDeployError, match="still has 1 BatchNormalization"):
        check_onnx(graph("N", True))
    with pytest.raises(ResnetDeployError, match="fixed batch size 4"):
        check_onnx(graph(4, False))
    assert check_onnx(graph("N", False)).graph.node[0].op_type == "Relu"


def test_opset_17_uses_the_torchscript_exporter(model, tmp_path):
    proto = export_onnx(fold_batchnorm(model), tmp_path / "m17.onnx", SHAPE, opset=17)
    assert proto.opset_import[0].version == 17
    assert max(check_onnx_parity(model, tmp_path / "m17.onnx", SHAPE).values()) < 1e-4


def test_fp16_within_one_percent(onnx_path, tmp_path):
    quantize.convert_fp16(onnx_path, tmp_path / "model.fp16.onnx")
    proto = onnx.load(str(tmp_path / "model.fp16.onnx"))
    assert proto.graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT  # fp32 I/O kept
    assert any(t.data_type == onnx.TensorProto.FLOAT16 for t in proto.graph.initializer)
    x = np.random.default_rng().standard_normal((16, *SHAPE), dtype=np.float32)
    cmp = quantize.compare_onnx(onnx_path, tmp_path / "model.fp16.onnx", x)
    assert 0 < cmp["rel"] <= 1e-2  # fp16 changes the numbers, but by < 1% of the largest logit


def generated_images(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """n grey 28x28 images in 4 classes (stripes of 4 orientations/frequencies plus noise), normalised."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:28, 0:28] / 28.0
    labels = rng.integers(0, 4, n)
    patterns = [np.sin(2 * np.pi * 3 * xx), np.sin(2 * np.pi * 3 * yy), np.sin(2 * np.pi * 5 * (xx + yy)),
                np.cos(2 * np.pi * 2 * np.hypot(xx - 0.5, yy - 0.5) * 3)]
    x = np.stack([patterns[k] + 0.3 * rng.standard_normal((28, 28)) for k in labels])[:, None]
    return x.astype(np.float32), labels


def test_int8_agrees_with_fp32_on_generated_images(onnx_path, tmp_path):
    calib, _ = generated_images(64, seed=0)
    held_out, _ = generated_images(96, seed=1)
    pre = quantize.preprocess_for_quantization(onnx_path, tmp_path / "pre.onnx")
    for target, zero_point_type in (("cpu", onnx.TensorProto.UINT8), ("trt", onnx.TensorProto.INT8)):
        out = quantize.quantize_int8(pre, tmp_path / f"{target}.onnx", calib, target, "minmax")
        proto = onnx.load(str(out))
        q = [n for n in proto.graph.node if n.op_type == "QuantizeLinear"]
        assert len(q) > 20 and "BatchNormalization" not in {n.op_type for n in proto.graph.node}
        zps = {i.name: i for i in proto.graph.initializer}
        assert zps[q[0].input[2]].data_type == zero_point_type  # U8 activations for ORT, S8 for TensorRT
        if target == "trt":
            assert all(not onnx.numpy_helper.to_array(zps[n.input[2]]).any() for n in q)  # symmetric: zero point 0
        producer = {o: n.op_type for n in proto.graph.node for o in n.output}
        assert producer[proto.graph.output[0].name] == "Gemm"  # float logits, as NNCF and TensorRT's rules leave them
        cmp = quantize.compare_onnx(onnx_path, out, held_out)
        assert cmp["top1_agree"] >= 0.95, cmp
        assert 0 < cmp["rel"] < 0.2, cmp


def test_calibration_reader_goes_batch_by_batch():
    x = np.random.default_rng().standard_normal((20, *SHAPE), dtype=np.float32)
    reader = ArrayReader(x, batch=8)
    assert len(reader) == 3
    reader.set_range(1, 2)
    got = reader.get_next()["input"]
    np.testing.assert_array_equal(got, x[8:16])
    assert reader.get_next() is None
    reader.rewind()
    assert sum(len(b["input"]) for b in iter(reader.get_next, None)) == 20


def test_quantize_rejects_bad_arguments(onnx_path, tmp_path):
    x = np.zeros((4, *SHAPE), np.float32)
    with pytest.raises(ResnetDeployError, match="unknown calibration method 'kl'"):
        quantize.quantize_int8(onnx_path, tmp_path / "q.onnx", x, "cpu", "kl")
    with pytest.raises(ResnetDeployError, match="unknown int8 target 'gpu'"):
        quantize.quantize_int8(onnx_path, tmp_path / "q.onnx", x, "gpu")


def test_fixture_model_learned_the_generated_classes(model):
    x, y = generated_images(128, seed=7)
    with torch.no_grad():
        acc = (model(torch.from_numpy(x)).argmax(1).numpy() == y).mean()
    assert acc > 0.8  # well above the 25% of chance: its top-1 decisions mean something


@pytest.mark.parametrize("method", ["entropy", "percentile"])
def test_histogram_calibration_methods(onnx_path, tmp_path, method):
    calib, _ = generated_images(32, seed=2)
    held_out, _ = generated_images(64, seed=3)
    pre = quantize.preprocess_for_quantization(onnx_path, tmp_path / "pre.onnx")
    out = quantize.quantize_int8(pre, tmp_path / f"{method}.onnx", calib, "cpu", method)
    cmp = quantize.compare_onnx(onnx_path, out, held_out)
    assert cmp["top1_agree"] >= 0.9 and 0 < cmp["rel"] < 0.2, cmp


def test_fp8_agrees_with_fp32_on_generated_images(onnx_path, tmp_path):
    calib, _ = generated_images(64, seed=0)
    held_out, _ = generated_images(96, seed=1)
    pre = quantize.preprocess_for_quantization(onnx_path, tmp_path / "pre.onnx")
    out = quantize.quantize_fp8(pre, tmp_path / "fp8.onnx", calib)
    weights = [i for i in onnx.load(str(out)).graph.initializer if i.name.endswith("weight_quantized")]
    assert len(weights) == 20 and {w.data_type for w in weights} == {onnx.TensorProto.FLOAT8E4M3FN}
    cmp = quantize.compare_onnx(onnx_path, out, held_out, graph_optimization="basic")
    assert cmp["top1_agree"] >= 0.95 and 0 < cmp["rel"] < 0.2, cmp
