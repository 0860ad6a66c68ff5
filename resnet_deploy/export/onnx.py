"""Stage 2: the fp32 ONNX model (`model.onnx`): BN-folded network, input "input" (N, C, H, W), output "logits".

torch's dynamo exporter (`torch.onnx.export(dynamo=True)`, the default since torch 2.9) writes opset 18 or newer;
opset 17 fails inside ONNX's version converter and only the deprecated TorchScript exporter (`dynamo=False`) can
write it, so opsets below 18 are exported with that one (docs/reference.md, "ONNX export with torch 2.14").
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import onnx
import torch
from torch import nn

from resnet_deploy.export.options import DEFAULT_OPSET
from resnet_deploy.runtime.errors import ResnetDeployError, first_line
from resnet_deploy.runtime.manifest import INPUT_NAME, OUTPUT_NAME
from resnet_deploy.runtime.onnx_backend import OrtBackend

# DEFAULT_OPSET (export/options.py) is 18: opset 17 is the common ask, but torch's current exporter cannot write 17
# (see the module docstring); TensorRT 10 and 11 and ONNX Runtime all read 18, the oldest the exporter writes.
_DYNAMO_MIN_OPSET = 18


def export_onnx(model: nn.Module, path: str | Path, input_shape: tuple[int, int, int], opset: int = DEFAULT_OPSET,
                metadata: Mapping[str, str] | None = None) -> onnx.ModelProto:
    """Export `model` (eval mode, BN already folded) to `path` with a dynamic batch axis, then check it.

    Args:
        model: the network; its forward takes one (N, C, H, W) float32 tensor.
        path: where the .onnx file is written.
        input_shape: (C, H, W) of one image.
        opset: ONNX opset; >= 18 uses the dynamo exporter, older ones the TorchScript exporter.
        metadata: written into the model's metadata_props (arch, classes, preprocessing, source sha256, ...).

    Returns:
        The checked model (with inferred shapes), as saved.

    Raises:
        ResnetDeployError: the exporter failed or the graph is not what the bundle contract promises.
    """
    path = Path(path)
    x = torch.randn(2, *input_shape)  # (N, C, H, W); batch 2, since the exporter specialises a batch of 1
    try:
        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore")  # the exporters' deprecation chatter; failures still raise
            if opset >= _DYNAMO_MIN_OPSET:
                batch = torch.export.Dim("batch", min=1, max=65536)
                torch.onnx.export(model.eval(), (x,), str(path), dynamo=True, opset_version=opset, verbose=False,
                                  input_names=[INPUT_NAME], output_names=[OUTPUT_NAME],
                                  dynamic_shapes=({0: batch},), external_data=False)
            else:
                torch.onnx.export(model.eval(), (x,), str(path), dynamo=False, opset_version=opset,
                                  input_names=[INPUT_NAME], output_names=[OUTPUT_NAME],
                                  dynamic_axes={INPUT_NAME: {0: "batch"}, OUTPUT_NAME: {0: "batch"}})
    except Exception as e:  # the exporters raise many types; the first line says what went wrong
        raise ResnetDeployError(f"ONNX export at opset {opset} failed: {first_line(e)[:300]}") from None
    proto = onnx.load(str(path))
    found = proto.opset_import[0].version if proto.opset_import else None
    if found != opset:
        raise ResnetDeployError(f"asked the exporter for opset {opset} but it wrote opset {found}; "
                                f"use --opset {found} or another torch version")
    if metadata:
        onnx.helper.set_model_props(proto, {str(k): str(v) for k, v in metadata.items()})
    onnx.save(proto, str(path))
    return check_onnx(path)


def check_onnx(path: str | Path) -> onnx.ModelProto:
    """ONNX checker (full check), strict shape inference, and the bundle contract's promises about the graph.

    Raises:
        ResnetDeployError: naming the first problem found.
    """
    try:
        onnx.checker.check_model(str(path), full_check=True)
        proto = onnx.shape_inference.infer_shapes(onnx.load(str(path)), check_type=True, strict_mode=True)
    except (onnx.checker.ValidationError, onnx.shape_inference.InferenceError) as e:
        raise ResnetDeployError(f"{Path(path).name} fails the ONNX checker: {first_line(e)[:300]}") from None
    g = proto.graph
    bn = [n.name for n in g.node if n.op_type == "BatchNormalization"]
    if bn:
        raise ResnetDeployError(f"{Path(path).name} still has {len(bn)} BatchNormalization node(s); expected BN folded")
    names = ([i.name for i in g.input], [o.name for o in g.output])
    if names != ([INPUT_NAME], [OUTPUT_NAME]):
        raise ResnetDeployError(f"{Path(path).name} has inputs/outputs {names}; "
                                f"expected {[INPUT_NAME]}/{[OUTPUT_NAME]}")
    dim0 = g.input[0].type.tensor_type.shape.dim[0]
    if not dim0.dim_param:
        raise ResnetDeployError(f"{Path(path).name} has a fixed batch size {dim0.dim_value}; expected a dynamic axis")
    return proto


@torch.no_grad()
def check_onnx_parity(model: nn.Module, path: str | Path, input_shape: tuple[int, int, int],
                      batches: tuple[int, ...] = (1, 3), atol: float = 1e-4, rtol: float = 1e-4,
                      seed: int | None = None) -> dict[int, float]:
    """Max abs difference of PyTorch and ONNX Runtime logits on fresh random inputs, per batch size.

    The tolerance is `atol + rtol * max|logit|`, since deep networks with random weights have large logits.

    Raises:
        ResnetDeployError: a batch size differs by more than the tolerance, or fails to run (no dynamic batch).
    """
    rng = np.random.default_rng(seed)
    sess = OrtBackend(Path(path))  # the runtime's own ONNX Runtime backend: what edge apps will run
    model.eval()
    out = {}
    for n in batches:
        x = rng.standard_normal((n, *input_shape), dtype=np.float32)  # (N, C, H, W)
        ref = model(torch.from_numpy(x)).numpy()
        try:
            got = sess.run(x)
        except Exception as e:  # onnxruntime raises its own Fail / InvalidArgument types
            raise ResnetDeployError(f"{Path(path).name} does not run at batch {n}: {first_line(e)[:300]}") from None
        diff = float(np.abs(ref - got).max())
        if not diff <= atol + rtol * float(np.abs(ref).max()):
            raise ResnetDeployError(f"{Path(path).name} differs from PyTorch by {diff:.3g} (max abs) at batch {n}")
        out[n] = diff
    return out
