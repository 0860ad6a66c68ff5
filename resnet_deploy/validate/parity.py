"""Accuracy parity: is every model file in the bundle the model that was trained?

The reference is the PyTorch model the bundle was exported from (the checkpoint or weights file its manifest names,
verified by sha256). Every backend runs through the lean runtime (`Predictor.run`) on the SAME preprocessed arrays, so
what is validated is what edge apps run. Per backend: top-1/top-5, top-1 agreement with the reference, max/mean
absolute logit difference, and PASS/FAIL against per-precision tolerances (comparisons with explicit tolerances, as
Polygraphy's comparator does). The report dict follows the schema in `report.py`.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path
from typing import Any

import numpy as np

from resnet_deploy.runtime.errors import BundleError, ResnetDeployError
from resnet_deploy.runtime.manifest import Manifest, read_manifest, sha256_file, verify_files
from resnet_deploy.validate.report import SCHEMA_VERSION, now_utc

PRECISION = {"onnx": "fp32", "fp16": "fp16", "int8": "int8", "int8-trt": "int8",
             "trt-fp32": "fp32", "trt-fp16": "fp16", "trt-int8": "int8"}
SHOW_DISAGREEMENTS = 10


@dataclass(frozen=True)
class Tolerances:
    """PASS thresholds per precision. Agreement is top-1 agreement with the reference in percent; the int8 limit is
    the top-1 accuracy drop against the reference in percentage points."""

    fp32_agreement: float = 99.9
    fp32_max_abs: float = 1e-3
    fp16_agreement: float = 99.5
    int8_top1_drop: float = 1.0

    def override(self, values: dict[str, float]) -> Tolerances:
        """A copy with some thresholds changed; unknown names are a ResnetDeployError naming the valid ones."""
        names = [f.name for f in fields(self)]
        unknown = sorted(set(values) - set(names))
        if unknown:
            raise ResnetDeployError(f"unknown tolerance {', '.join(unknown)}; choose from: {', '.join(names)}")
        return replace(self, **{k: float(v) for k, v in values.items()})


def open_bundle(bundle: str | Path) -> Manifest:
    """Read the manifest and check every file's sha256 and size; a changed bundle is refused (BundleError)."""
    manifest = read_manifest(bundle)
    verify_files(bundle, manifest)
    return manifest


def select_backends(bundle: str | Path, requested: list[str] | None, device: str = "cpu"
                    ) -> tuple[list[str], dict[str, str]]:
    """Split the backends to run from those skipped here (with the reason).

    Args:
        requested: backend names, or None for every backend whose model file the bundle has.

    Raises:
        ResnetDeployError: a requested name is not a backend name.
    """
    from resnet_deploy.runtime import BACKENDS, available_backends, read_manifest
    from resnet_deploy.runtime.predictor import find_entry

    if requested:
        unknown = [n for n in requested if n not in BACKENDS]
        if unknown:
            raise ResnetDeployError(f"unknown backend {', '.join(map(repr, unknown))}; choose from: "
                                    f"{', '.join(BACKENDS)}")
        names = list(dict.fromkeys(requested))
    else:
        manifest = read_manifest(bundle)
        names = [n for n in BACKENDS if find_entry(manifest, n) is not None]
    available = available_backends(bundle, device=device)
    skipped = {n: str(available[n]) for n in names if available[n] is not None}
    return [n for n in names if n not in skipped], skipped


def reference_model(bundle: str | Path, manifest: Manifest, checkpoint: str | Path | None = None
                    ) -> tuple[Any, dict[str, Any]]:
    """The PyTorch model the bundle was exported from, and {kind, path, note}.

    The path is `checkpoint` when given, else the manifest's `source`. A file whose sha256 differs from the
    manifest's is refused (the bundle was not made from it). When no file is at hand the model is None and the
    caller falls back to the fp32 ONNX model as the reference.
    """
    src = manifest.source  # as export writes it: {"kind": "checkpoint" | "torchvision", "path", "sha256"}
    kind = "weights" if src.get("kind") == "torchvision" else "checkpoint"
    named = src.get("path")
    path = Path(checkpoint) if checkpoint else (Path(named) if named else None)
    if path is not None and not path.is_absolute() and not path.is_file():
        path = Path(bundle) / path  # a path relative to the bundle
    if path is None or not path.is_file():
        return None, {"kind": "onnx", "path": None,
                      "note": f"reference is the fp32 ONNX model: the source {kind} {path or '(none named)'} is not "
                              "at hand (pass --checkpoint PATH)"}
    expected = src.get("sha256")
    if expected and sha256_file(path) != expected:
        raise BundleError(f"{path} is not the file this bundle was exported from (its sha256 differs from the "
                          f"manifest's source sha256 {expected[:12]}...); pass the original with --checkpoint")
    return _load_reference(path, kind, manifest), {"kind": kind, "path": str(path), "note": None}


def _load_reference(path: Path, kind: str, manifest: Manifest) -> Any:
    from resnet_deploy import models
    from resnet_deploy.checkpoint import load_checkpoint, load_state_dict_file, model_from_checkpoint

    if kind == "checkpoint":
        return model_from_checkpoint(load_checkpoint(path))
    return models.load_torchvision(architecture(manifest), load_state_dict_file(path)).eval()


def architecture(manifest: Manifest) -> Any:
    """The bundle's network, freshly initialised: torchvision-weights bundles use the family's default structure."""
    from resnet_deploy import models

    return models.build(manifest.arch, num_classes=len(manifest.classes), in_channels=manifest.preprocess.channels)


def torch_logits(model: Any, x: np.ndarray, batch_size: int = 64, threads: int | None = None) -> np.ndarray:
    """Logits of a PyTorch model on float32 NCHW arrays, in batches, without gradients."""
    import torch

    old = torch.get_num_threads()
    if threads:
        torch.set_num_threads(threads)
    try:
        with torch.inference_mode():
            return np.concatenate([model(torch.from_numpy(np.ascontiguousarray(x[i:i + batch_size]))).numpy()
                                   for i in range(0, len(x), batch_size)]).astype(np.float32)
    finally:
        torch.set_num_threads(old)


def topk_accuracy(logits: np.ndarray, labels: np.ndarray, k: int) -> float:
    """Percentage of samples whose label is among the k largest logits (k capped at the number of classes)."""
    k = min(k, logits.shape[1])
    top = np.argpartition(-logits, k - 1, axis=1)[:, :k]
    return float((top == labels[:, None]).any(axis=1).mean() * 100)


def compare(backend: str, logits: np.ndarray, ref: np.ndarray, labels: np.ndarray, ref_top1: float,
            tol: Tolerances) -> dict[str, Any]:
    """One backend's entry of the report: accuracy, agreement, logit differences, PASS/FAIL and why."""
    precision = PRECISION.get(backend, "fp32")
    differs = np.flatnonzero(logits.argmax(1) != ref.argmax(1))
    agreement = float(100 - 100 * len(differs) / len(labels))
    diff = np.abs(logits.astype(np.float64) - ref)
    top1 = topk_accuracy(logits, labels, 1)
    failures = []
    if precision == "fp32" and agreement < tol.fp32_agreement:
        failures.append(f"agreement {agreement:.3f}% < {tol.fp32_agreement}%")
    if precision == "fp32" and diff.max() > tol.fp32_max_abs:
        failures.append(f"max abs logit diff {diff.max():.3g} > {tol.fp32_max_abs:g}")
    if precision == "fp16" and agreement < tol.fp16_agreement:
        failures.append(f"agreement {agreement:.3f}% < {tol.fp16_agreement}%")
    if precision == "int8" and ref_top1 - top1 > tol.int8_top1_drop:
        failures.append(f"top-1 drop {ref_top1 - top1:.2f} points > {tol.int8_top1_drop}")
    if failures and len(differs):
        failures.append("first disagreeing samples: " + ", ".join(map(str, differs[:SHOW_DISAGREEMENTS])))
    return {"backend": backend, "precision": precision, "status": "FAIL" if failures else "PASS", "reason": None,
            "top1": top1, "top5": topk_accuracy(logits, labels, 5), "agreement": agreement,
            "max_abs_diff": float(diff.max()), "mean_abs_diff": float(diff.mean()),
            "first_disagreements": differs[:SHOW_DISAGREEMENTS].tolist(), "failures": failures}


def _skipped(backend: str, reason: str) -> dict[str, Any]:
    return {"backend": backend, "precision": PRECISION.get(backend, "fp32"), "status": "SKIPPED", "reason": reason,
            "top1": None, "top5": None, "agreement": None, "max_abs_diff": None, "mean_abs_diff": None,
            "first_disagreements": [], "failures": []}


def check_parity_arrays(bundle: str | Path, x: np.ndarray, labels: np.ndarray, classes: list[str], *,
                        backends: list[str] | None = None, tolerances: Tolerances | None = None,
                        device: str = "cpu", threads: int | None = None, checkpoint: str | Path | None = None,
                        data: str = "arrays") -> dict[str, Any]:
    """`check_parity` on arrays already preprocessed with the bundle's preprocessing (see `check_parity`)."""
    from resnet_deploy.runtime import Predictor
    from resnet_deploy.validate.env import environment

    tol = tolerances or Tolerances()
    manifest = open_bundle(bundle)
    _check_data(manifest, x, labels, classes)
    run, skipped = select_backends(bundle, backends, device)
    model, ref_info = reference_model(bundle, manifest, checkpoint)
    if model is not None:
        ref = torch_logits(model, x, threads=threads)
    elif "onnx" in run or select_backends(bundle, ["onnx"], device)[0]:
        with Predictor.from_bundle(bundle, backend="onnx", device=device, threads=threads) as predictor:
            ref = predictor.run(x)
    else:
        raise ResnetDeployError(f"no reference model: {ref_info['note']}, and the fp32 ONNX model cannot run here")
    ref = ref.astype(np.float64)
    ref_top1 = topk_accuracy(ref, labels, 1)
    entries = []
    for name in run:
        with Predictor.from_bundle(bundle, backend=name, device=device, threads=threads) as predictor:
            logits = predictor.run(x)
        entries.append(compare(name, np.asarray(logits, dtype=np.float32), ref, labels, ref_top1, tol))
    entries += [_skipped(n, r) for n, r in skipped.items()]
    return {"schema": "resnet-deploy/validate", "schema_version": SCHEMA_VERSION, "created": now_utc(),
            "bundle": str(bundle), "arch": manifest.arch, "data": data, "num_samples": int(len(labels)),
            "num_classes": len(manifest.classes),
            "reference": {**ref_info, "top1": ref_top1, "top5": topk_accuracy(ref, labels, 5)},
            "tolerances": asdict(tol), "backends": entries,
            "passed": bool(run) and all(e["status"] == "PASS" for e in entries if e["status"] != "SKIPPED"),
            "environment": environment(threads)}


def _check_data(manifest: Manifest, x: np.ndarray, labels: np.ndarray, classes: list[str]) -> None:
    if len(classes) != len(manifest.classes):
        raise ResnetDeployError(f"the data has {len(classes)} classes but the bundle's model has "
                                f"{len(manifest.classes)}; validate with the data set the model was trained on")
    if tuple(x.shape[1:]) != manifest.input_shape:
        raise ResnetDeployError(f"the data's images have shape {tuple(x.shape[1:])}, the bundle expects "
                                f"{manifest.input_shape}; preprocess them with the bundle's preprocessing")
    if len(labels) == 0:
        raise ResnetDeployError("the data holds no images to validate on")


def check_parity(bundle: str | Path, data_spec: str, limit: int | None = None, backends: list[str] | None = None,
                 tolerances: Tolerances | None = None, *, device: str = "cpu", threads: int | None = None,
                 checkpoint: str | Path | None = None) -> dict[str, Any]:
    """Run the reference and every backend of a bundle on real evaluation images; compare them.

    Args:
        bundle: the bundle directory (its files must match the manifest's checksums).
        data_spec: a data SPEC ("fashion-mnist", "cifar10:/path", "folder:/path", ...), preprocessed with the
            bundle's own preprocessing.
        limit: validate on a seeded random subset of `limit` images (None: all).
        backends: backend names to check (None: every one the bundle has; those that cannot run here are skipped).
        tolerances: PASS thresholds (default `Tolerances()`).
        device: "cpu" or "cuda".
        threads: intra-op threads for the reference and the backends.
        checkpoint: the source checkpoint/weights when not where the manifest says.

    Returns:
        The report dict (schema in `report.py`); `passed` is True only when every backend that ran passed.

    Raises:
        ResnetDeployError: a changed bundle, unknown backend names, missing data, or data whose number of classes
            differs from the bundle's.
    """
    from resnet_deploy.data import load_eval_arrays

    manifest = open_bundle(bundle)
    x, labels, classes = load_eval_arrays(data_spec, manifest.preprocess, limit)
    return check_parity_arrays(bundle, x, labels, classes, backends=backends, tolerances=tolerances, device=device,
                               threads=threads, checkpoint=checkpoint, data=data_spec)
