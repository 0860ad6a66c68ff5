"""Layer-by-layer comparison: where does an FP16 / INT8 / FP8 model part from the fp32 one?

What users ask Polygraphy for (`polygraphy run --onnxrt --mark all`) when a lower precision loses accuracy: the fp32
model and the chosen ONNX variant both run on ONNX Runtime with every intermediate tensor marked as a graph output,
on the same preprocessed images. Each tensor both graphs compute is compared (same name and same producing operator:
ONNX Runtime's CPU quantizer folds a Relu into the QuantizeLinear after it and gives the Conv output the Relu's name),
in the fp32 graph's order, and the first whose error exceeds the tolerance is named. Errors are relative to the
layer's range, max|a - b| / max|a|, so that layers of different scales compare alike. Marking every tensor as an
output stops ONNX Runtime from fusing across them (a Q/DQ pair then runs as quantize-dequantize in float), and graphs
run with basic optimizations only: the comparison is of the models' arithmetic, not of one runtime's kernels.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from resnet_deploy.data import load_eval_arrays
from resnet_deploy.runtime import variants
from resnet_deploy.runtime.errors import ResnetDeployError
from resnet_deploy.runtime.manifest import reports_path
from resnet_deploy.runtime.onnx_backend import ort_session
from resnet_deploy.runtime.predictor import find_entry
from resnet_deploy.runtime.signature import open_manifest
from resnet_deploy.runtime.verified import VerifiedFile
from resnet_deploy.validate.report import SCHEMA_VERSION, now_utc, write_json

LAYERWISE_SCHEMA = "resnet-deploy/layerwise"
DEFAULT_LIMIT = 64  # images: every intermediate tensor of every image is held per batch
BATCH = 8
_SKIP_OPS = ("QuantizeLinear", "DequantizeLinear", "Cast")  # the variant's own bookkeeping, not a layer


@dataclass(frozen=True)
class LayerError:
    """One tensor both graphs compute: its producer, shape and how far the variant's values are from fp32's."""

    tensor: str
    op: str
    shape: list[int]
    max_abs: float
    mean_abs: float
    rel: float  # max_abs / max|fp32|
    exceeds: bool


@dataclass(frozen=True)
class LayerwiseReport:
    """`validate --layerwise`: the per-layer error table and the first layer over the tolerance (None: none is)."""

    bundle: str
    variant: str
    file: str
    data: str
    num_samples: int
    tolerance: float
    first_exceeding: str | None
    layers: list[LayerError]
    created: str = field(default_factory=now_utc)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (reports/layerwise-<variant>.json)."""
        return {"schema": LAYERWISE_SCHEMA, "schema_version": SCHEMA_VERSION, **asdict(self)}

    def summary(self) -> str:
        """One line: the variant, how many layers on how many images, and the first layer over the tolerance."""
        head = f"{self.variant} ({self.file}) against fp32, {len(self.layers)} layers on {self.num_samples} images: "
        first = next((e for e in self.layers if e.exceeds), None)
        if first is not None:
            return head + f"first layer over {self.tolerance:g}: {first.tensor} ({first.op}, relative error " \
                          f"{first.rel:.3g})"
        worst = max(self.layers, key=lambda e: e.rel)
        return head + f"no layer over {self.tolerance:g} (largest: {worst.tensor}, {worst.rel:.3g})"

    def markdown(self, top: int | None = None) -> str:
        """The report as Markdown: a sentence naming the first layer over the tolerance, then the table."""
        first = self.first_exceeding
        head = (f"First layer over the tolerance: `{first}`" if first else
                "No layer exceeds the tolerance")
        lines = [f"## Layer by layer: {self.variant} ({self.file}) against fp32", "",
                 f"{head} (range-relative error > {self.tolerance:g}) on {self.num_samples} images of {self.data}.",
                 "", "| # | tensor | op | shape | max abs | mean abs | relative | over |",
                 "| ---: | --- | --- | --- | ---: | ---: | ---: | --- |"]
        for i, e in enumerate(self.layers[:top]):
            lines.append(f"| {i} | `{e.tensor}` | {e.op} | {'x'.join(map(str, e.shape))} | {e.max_abs:.3g} | "
                         f"{e.mean_abs:.3g} | {e.rel:.3g} | {'**yes**' if e.exceeds else ''} |")
        return "\n".join(lines) + "\n"


def _all_outputs(data: bytes) -> tuple[bytes, list[str], dict[str, str]]:
    """The model with every node output marked as a graph output; (bytes, tensors in order, producer op)."""
    import onnx

    model = onnx.load_model_from_string(data)
    tensors = [out for node in model.graph.node for out in node.output if out]
    ops = {out: node.op_type for node in model.graph.node for out in node.output}
    known = {o.name for o in model.graph.output}
    model.graph.output.extend(onnx.ValueInfoProto(name=t) for t in tensors if t not in known)
    return model.SerializeToString(), tensors, ops


def compare_layers(ref: VerifiedFile, other: VerifiedFile, x: np.ndarray, tolerance: float,
                   threads: int | None = None) -> list[LayerError]:
    """Per-tensor errors of the model `other` against `ref` on images `x`, in `ref`'s order (both read as checked
    bytes)."""
    ref_model, ref_tensors, ops = _all_outputs(ref.read())
    model, _, their_ops = _all_outputs(other.read())
    common = [t for t in ref_tensors if their_ops.get(t) == ops[t] and ops[t] not in _SKIP_OPS]
    if not common:
        raise ResnetDeployError(f"{other.name} and {ref.name} share no tensor names to compare")
    basic = {"threads": threads, "graph_optimization": "basic"}  # see the module docstring
    ref_sess, sess = ort_session(ref_model, name=ref.name, **basic), ort_session(model, name=other.name, **basic)
    stats = {t: [0.0, 0.0, 0.0, 0] for t in common}  # max abs diff, sum abs diff, max |ref|, count
    shapes: dict[str, list[int]] = {}
    for start in range(0, len(x), BATCH):
        feed = {ref_sess.get_inputs()[0].name: x[start:start + BATCH]}
        a = dict(zip((o.name for o in ref_sess.get_outputs()), ref_sess.run(None, feed), strict=True))
        b = dict(zip((o.name for o in sess.get_outputs()), sess.run(None, feed), strict=True))
        for t in common:
            ra, rb = np.asarray(a[t], np.float64), np.asarray(b[t], np.float64)
            if ra.shape != rb.shape:
                continue
            d = np.abs(ra - rb)
            s = stats[t]
            s[0], s[1], s[2], s[3] = max(s[0], float(d.max(initial=0))), s[1] + float(d.sum()), \
                max(s[2], float(np.abs(ra).max(initial=0))), s[3] + d.size
            shapes[t] = [-1, *ra.shape[1:]] if ra.ndim else []
    out = []
    for t in common:
        max_abs, total, top, n = stats[t]
        if n == 0:
            continue
        rel = max_abs / top if top > 0 else (0.0 if max_abs == 0 else float("inf"))
        out.append(LayerError(t, ops[t], shapes[t], max_abs, total / n, rel, rel > tolerance))
    return out


def compare_bundle(bundle: str | Path, variant: str, data_spec: str, limit: int | None = None,
                   tolerance: float | None = None, threads: int | None = None,
                   trusted_keys: Sequence[str | Path] | None = None) -> LayerwiseReport:
    """Compare the bundle's fp32 ONNX model with its `variant` ONNX model layer by layer on real images.

    Args:
        bundle: the bundle directory.
        variant: an ONNX variant of the bundle other than fp32: "fp16", "int8", "int8-trt", "fp8".
        data_spec: images to run, preprocessed with the bundle's preprocessing.
        limit: this many images (a seeded subset; default DEFAULT_LIMIT): every intermediate tensor of a batch is
            held at once.
        tolerance: range-relative error a layer may reach (default: the precision's `layer_tolerance` in the
            registry).
        threads: ONNX Runtime intra-op threads.
        trusted_keys: publishers' public keys (PEM files): the bundle must be signed by one of them.

    Raises:
        ResnetDeployError: an unknown variant, or one whose ONNX file the bundle lacks.
    """

    onnx_variants = [v.name for v in variants.onnx_files()[1:]]
    if variant not in onnx_variants:
        raise ResnetDeployError(f"--layerwise takes an ONNX variant of the bundle: {', '.join(onnx_variants)}; "
                                f"found {variant!r}")
    bundle = Path(bundle)
    manifest = open_manifest(bundle, trusted_keys)
    ref, entry = find_entry(manifest, variants.reference().name), find_entry(manifest, variant)
    if ref is None or entry is None:
        flags = " ".join(variants.get(variant).flags)
        raise ResnetDeployError(f"{bundle} has no {variants.get(variant).file}; export it with `resnet-deploy export "
                                f"... {flags}`")
    x, _, _ = load_eval_arrays(data_spec, manifest.preprocess, limit or DEFAULT_LIMIT)
    tol = (variants.PRECISIONS[entry.precision].layer_tolerance or 0.1) if tolerance is None else float(tolerance)
    layers = compare_layers(VerifiedFile(bundle, ref), VerifiedFile(bundle, entry), x, tol, threads)
    first = next((e.tensor for e in layers if e.exceeds), None)
    return LayerwiseReport(str(bundle), variant, entry.path, data_spec, int(len(x)), tol, first, layers)


def save_layerwise(report: LayerwiseReport, bundle: str | Path, also: str | Path | None = None) -> list[Path]:
    """Write reports/layerwise-<variant>.json and .md in the bundle (and the JSON at `also`); returns the paths."""
    js = write_json(report.to_dict(), reports_path(bundle, f"layerwise-{report.variant}.json"))
    md = reports_path(bundle, f"layerwise-{report.variant}.md")
    md.write_text(report.markdown())
    return [js, md] + ([write_json(report.to_dict(), also)] if also else [])
