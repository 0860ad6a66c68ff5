"""Accuracy parity: is every model file in the bundle the model that was trained?

The reference is the PyTorch model the bundle was exported from (the checkpoint or weights file its manifest names,
verified by sha256). Every backend runs through the lean runtime (`Predictor.run`) on the SAME preprocessed arrays, so
what is validated is what edge apps run. Per backend: top-1/top-5, top-1 agreement with the reference, max/mean
absolute logit difference, and PASS/FAIL against per-precision tolerances (comparisons with explicit tolerances, as
Polygraphy's comparator does). The gates are the variant registry's, per precision.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from resnet_deploy.data import load_eval_arrays
from resnet_deploy.runtime import Predictor, available_backends, variants
from resnet_deploy.runtime.errors import ResnetDeployError
from resnet_deploy.runtime.manifest import Manifest, read_manifest, unlisted_files
from resnet_deploy.runtime.predictor import present
from resnet_deploy.runtime.signature import open_manifest
from resnet_deploy.runtime.variants import Gate
from resnet_deploy.runtime.verified import verify_files
from resnet_deploy.validate.env import environment
from resnet_deploy.validate.reference import reference_model, torch_logits
from resnet_deploy.validate.report import SCHEMA_VERSION, now_utc

SHOW_DISAGREEMENTS = 10
VALIDATE_SCHEMA = "resnet-deploy/validate"


@dataclass(frozen=True)
class BackendParity:
    """One backend's entry of a validate report (figures None when SKIPPED). Percentages for accuracy/agreement."""

    backend: str
    precision: str
    status: str  # "PASS", "FAIL" or "SKIPPED"
    reason: str | None = None
    top1: float | None = None
    top5: float | None = None
    agreement: float | None = None
    max_abs_diff: float | None = None
    mean_abs_diff: float | None = None
    first_disagreements: list[int] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class ParityReport:
    """The result of `check_parity`: what was compared, against which reference, and PASS/FAIL per backend."""

    bundle: str
    arch: str
    data: str
    num_samples: int
    num_classes: int
    reference: dict[str, Any]  # {kind: "checkpoint" | "weights" | "onnx", path, note, top1, top5}
    tolerances: dict[str, float]  # {<precision>_<threshold>: value}, e.g. fp32_max_abs
    backends: list[BackendParity]
    passed: bool  # every backend that ran passed, and at least one ran
    environment: dict[str, Any]
    created: str = field(default_factory=now_utc)
    unlisted_files: list[str] = field(default_factory=list)  # in the bundle, not in its manifest: never loaded

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (validate.json, schema in `report.py`)."""
        return {"schema": VALIDATE_SCHEMA, "schema_version": SCHEMA_VERSION, **asdict(self)}  # rows included


def parse_tolerances(pairs: list[str] | tuple[str, ...]) -> dict[str, Gate]:
    """`["fp32_max_abs=1e-4", ...]` -> the parity gates with those thresholds changed; bad input is one error."""
    values = {}
    for text in pairs:
        key, sep, value = text.partition("=")
        try:
            values[key.strip()] = float(value if sep else "")
        except ValueError:
            raise ResnetDeployError(f"--tolerance takes KEY=NUMBER, found {text!r}") from None
    return variants.override_gates(values)


def tolerance_values(gates: dict[str, Gate]) -> dict[str, float]:
    """The gates as the flat {<precision>_<threshold>: value} dict reports show."""
    return {f"{p}_{k}": v for p, g in gates.items() for k, v in asdict(g).items() if v is not None}


def open_bundle(bundle: str | Path, trusted_keys: Sequence[str | Path] | None = None) -> Manifest:
    """Read the manifest and check every file's size and checksums; a changed bundle is refused (BundleError). With
    `trusted_keys`, the bundle's signature is checked first (`runtime/signature.py`)."""
    manifest = open_manifest(bundle, trusted_keys)
    verify_files(bundle, manifest)
    return manifest


def select_backends(bundle: str | Path, requested: list[str] | None, device: str = "cpu"
                    ) -> tuple[list[str], dict[str, str]]:
    """Split the backends to run from those skipped here (with the reason).

    Args:
        requested: variant names, or None for every variant whose model file the bundle has.

    Raises:
        ResnetDeployError: a requested name is not a variant name.
    """

    if requested:
        unknown = [n for n in requested if n not in variants.names()]
        if unknown:
            raise ResnetDeployError(f"unknown backend {', '.join(map(repr, unknown))}; choose from: "
                                    f"{', '.join(variants.names())}")
        names = list(dict.fromkeys(requested))
    else:
        names = list(present(read_manifest(bundle)))
    available = available_backends(bundle, device=device)
    skipped = {n: str(available[n]) for n in names if available[n] is not None}
    return [n for n in names if n not in skipped], skipped


def topk_accuracy(logits: np.ndarray, labels: np.ndarray, k: int) -> float:
    """Percentage of samples whose label is among the k largest logits (k capped at the number of classes)."""
    k = min(k, logits.shape[1])
    top = np.argpartition(-logits, k - 1, axis=1)[:, :k]
    return float((top == labels[:, None]).any(axis=1).mean() * 100)


def compare(backend: str, logits: np.ndarray, ref: np.ndarray, labels: np.ndarray, ref_top1: float,
            gates: dict[str, Gate] | None = None) -> BackendParity:
    """One backend's entry of the report: accuracy, agreement, logit differences, PASS/FAIL against its gate."""
    precision = variants.get(backend).precision
    gate = (gates or variants.GATES).get(precision, Gate())
    differs = np.flatnonzero(logits.argmax(1) != ref.argmax(1))
    agreement = float(100 - 100 * len(differs) / len(labels))
    diff = np.abs(logits.astype(np.float64) - ref)
    top1 = topk_accuracy(logits, labels, 1)
    failures = []
    if gate.agreement is not None and agreement < gate.agreement:
        failures.append(f"agreement {agreement:.3f}% < {gate.agreement}%")
    if gate.max_abs is not None and diff.max() > gate.max_abs:
        failures.append(f"max abs logit diff {diff.max():.3g} > {gate.max_abs:g}")
    if gate.top1_drop is not None and ref_top1 - top1 > gate.top1_drop:
        failures.append(f"top-1 drop {ref_top1 - top1:.2f} points > {gate.top1_drop}")
    if failures and len(differs):
        failures.append("first disagreeing samples: " + ", ".join(map(str, differs[:SHOW_DISAGREEMENTS])))
    return BackendParity(backend, precision, "FAIL" if failures else "PASS", None, top1,
                         topk_accuracy(logits, labels, 5), agreement, float(diff.max()), float(diff.mean()),
                         differs[:SHOW_DISAGREEMENTS].tolist(), failures)


def check_parity_arrays(bundle: str | Path, x: np.ndarray, labels: np.ndarray, classes: list[str], *,
                        backends: list[str] | None = None, tolerances: dict[str, Gate] | None = None,
                        device: str = "cpu", threads: int | None = None, checkpoint: str | Path | None = None,
                        data: str = "arrays", trusted_keys: Sequence[str | Path] | None = None) -> ParityReport:
    """`check_parity` on arrays already preprocessed with the bundle's preprocessing (see `check_parity`)."""
    return _check_parity(bundle, open_bundle(bundle, trusted_keys), x, labels, classes, backends=backends,
                         tolerances=tolerances, device=device, threads=threads, checkpoint=checkpoint, data=data,
                         trusted_keys=trusted_keys)


def _check_parity(bundle: str | Path, manifest: Manifest, x: np.ndarray, labels: np.ndarray, classes: list[str], *,
                  backends: list[str] | None, tolerances: dict[str, Gate] | None, device: str, threads: int | None,
                  checkpoint: str | Path | None, data: str,
                  trusted_keys: Sequence[str | Path] | None = None) -> ParityReport:
    """`check_parity_arrays` on a bundle whose files `open_bundle` has just checked (`manifest`); each backend is
    loaded with the same `trusted_keys`."""

    gates = tolerances or dict(variants.GATES)
    _check_data(manifest, x, labels, classes)
    run, skipped = select_backends(bundle, backends, device)
    model, ref_info = reference_model(bundle, manifest, checkpoint)
    onnx_logits = None  # the fp32 ONNX model's, when it is the reference: its own row reuses them
    if model is not None:
        ref = torch_logits(model, x, threads=threads)
    elif "onnx" in run or select_backends(bundle, ["onnx"], device)[0]:
        with Predictor.from_bundle(bundle, backend="onnx", device=device, threads=threads,
                                   trusted_keys=trusted_keys) as predictor:
            ref = onnx_logits = predictor.run(x)
    else:
        raise ResnetDeployError(f"no reference model: {ref_info['note']}, and the fp32 ONNX model cannot run here")
    ref = ref.astype(np.float64)
    ref_top1 = topk_accuracy(ref, labels, 1)
    entries = []
    for name in run:
        if name == "onnx" and onnx_logits is not None:
            logits = onnx_logits
        else:
            with Predictor.from_bundle(bundle, backend=name, device=device, threads=threads,
                                       trusted_keys=trusted_keys) as predictor:
                logits = predictor.run(x)
        entries.append(compare(name, np.asarray(logits, dtype=np.float32), ref, labels, ref_top1, gates))
    entries += [BackendParity(n, variants.get(n).precision, "SKIPPED", r) for n, r in skipped.items()]
    return ParityReport(str(bundle), manifest.arch, data, int(len(labels)), len(manifest.classes),
                        {**ref_info, "top1": ref_top1, "top5": topk_accuracy(ref, labels, 5)},
                        tolerance_values(gates), entries,
                        bool(run) and all(e.status == "PASS" for e in entries if e.status != "SKIPPED"),
                        environment(threads), unlisted_files=unlisted_files(bundle, manifest))


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
                 tolerances: dict[str, Gate] | None = None, *, device: str = "cpu", threads: int | None = None,
                 checkpoint: str | Path | None = None,
                 trusted_keys: Sequence[str | Path] | None = None) -> ParityReport:
    """Run the reference and every backend of a bundle on real evaluation images; compare them.

    Args:
        bundle: the bundle directory (its files must match the manifest's checksums).
        data_spec: a data SPEC ("fashion-mnist", "cifar10:/path", "folder:/path", ...), preprocessed with the
            bundle's own preprocessing.
        limit: validate on a seeded random subset of `limit` images (None: all).
        backends: backend names to check (None: every one the bundle has; those that cannot run here are skipped).
        tolerances: parity gates per precision (default the registry's `GATES`; see `parse_tolerances`).
        device: "cpu" or "cuda".
        threads: intra-op threads for the reference and the backends.
        checkpoint: the source checkpoint/weights when not where the manifest says.
        trusted_keys: publishers' public keys (PEM files): the bundle must be signed by one of them.

    Returns:
        The report; `passed` is True only when every backend that ran passed (`to_dict()`: schema in `report.py`).

    Raises:
        ResnetDeployError: a changed bundle, unknown backend names, missing data, or data whose number of classes
            differs from the bundle's.
    """

    manifest = open_bundle(bundle, trusted_keys)
    x, labels, classes = load_eval_arrays(data_spec, manifest.preprocess, limit)
    return _check_parity(bundle, manifest, x, labels, classes, backends=backends, tolerances=tolerances,
                         device=device, threads=threads, checkpoint=checkpoint, data=data_spec,
                         trusted_keys=trusted_keys)
