"""`Predictor`: load a bundle, pick the backend this machine runs best, classify images.

Edge apps use only this module (numpy, PIL, and onnxruntime or TensorRT + cuda-python): no torch, no click.

Backends are the variants of the registry (`variants.py`) by name ("onnx", "fp16", "int8", "int8-trt", "trt-fp32",
...); "trt" is the best engine present, "auto" the best variant this machine can run.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Union

import numpy as np
from PIL import Image

from resnet_deploy.runtime import autotune, limits, variants
from resnet_deploy.runtime.backend import LOADERS, Backend, LoadOptions, loader
from resnet_deploy.runtime.errors import BundleError, ResnetDeployError
from resnet_deploy.runtime.machine import cpu_int8_is_fast
from resnet_deploy.runtime.manifest import FileEntry, Manifest, bundle_path, read_manifest
from resnet_deploy.runtime.preprocess import ImageInput
from resnet_deploy.runtime.signature import open_manifest
from resnet_deploy.runtime.verified import VerifiedFile

Images = Union[ImageInput, Iterable[ImageInput]]


@dataclass(frozen=True)
class Prediction:
    """One image's result: the top class and the `topk` best as (class_id, label, softmax score), best first."""

    class_id: int
    label: str
    score: float
    topk: list[tuple[int, str, float]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {"class_id": self.class_id, "label": self.label, "score": self.score,
                "topk": [{"class_id": c, "label": lab, "score": s} for c, lab, s in self.topk]}


def softmax(logits: np.ndarray) -> np.ndarray:
    """Row-wise softmax in float64, shifted by the row maximum so large logits do not overflow."""
    z = logits.astype(np.float64)
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def top_predictions(logits: np.ndarray, classes: list[str], topk: int) -> list[Prediction]:
    """One Prediction per row of logits (N, K): softmax scores of the `topk` best classes (capped at K), best first."""
    probs = softmax(logits)
    k = min(int(topk), len(classes))
    results = []
    for p in probs:
        best = np.argsort(-p, kind="stable")[:k]
        top = [(int(c), classes[c], float(p[c])) for c in best]
        results.append(Prediction(top[0][0], top[0][1], top[0][2], top))
    return results


def find_entry(manifest: Manifest, name: str) -> FileEntry | None:
    """The manifest's file that variant `name` runs, or None when the bundle has none."""
    key = variants.get(name).key
    return next((f for f in manifest.files if (f.format, f.precision, f.target) == key), None)


def present(manifest: Manifest) -> tuple[str, ...]:
    """The variants whose file the bundle has, in registry order."""
    return tuple(v.name for v in variants.variants() if find_entry(manifest, v.name) is not None)


def _reason(bundle: Path, manifest: Manifest, name: str, device: str) -> str | None:
    """Why variant `name` cannot run here, or None when it can."""
    variant = variants.get(name)
    entry = find_entry(manifest, name)
    if entry is None:
        return f"the bundle has no {name} model (export it with `resnet-deploy export ... {' '.join(variant.flags)}`)"
    try:
        exists = bundle_path(bundle, entry.path).is_file()  # never follows a link out of the bundle
    except BundleError as e:
        return str(e)
    if not exists:
        return f"{entry.path} is listed in the manifest but missing from {bundle}"
    if device not in variant.devices:
        instead = [v.name for v in variants.variants() if v.precision == variant.precision and device in v.devices]
        return (f"the {name} model runs on {' or '.join(variant.devices)} only"
                + (f"; on {device} use {' or '.join(instead)}" if instead else ""))
    return loader(variant.loader).refuse(entry, device, rebuild_command(bundle, manifest), variant.options)


def rebuild_command(bundle: Path, manifest: Manifest) -> str:
    """The `resnet-deploy export` command that rebuilds this bundle with engines, from its manifest."""
    flags = {"--trt": None} | dict.fromkeys(f for name in present(manifest) for f in variants.get(name).flags)
    calib, compat = manifest.export_args.get("calib_data"), manifest.export_args.get("trt_compat")
    if ("--int8" in flags or "--fp8" in flags) and calib:
        flags[f"--calib-data {calib}"] = None
    if compat:  # the engines were built to travel: rebuild them so
        flags[f"--trt-compat {','.join(compat)}"] = None
    src = manifest.source
    where = src["path"] if src.get("kind", "checkpoint") == "checkpoint" and src.get("path") else "CHECKPOINT"
    return f"resnet-deploy export {where} --out {bundle.name}-trt {' '.join(flags)}"


def _check_device(device: str) -> None:
    if device not in variants.DEVICES:
        raise ResnetDeployError(f"unknown device {device!r}; choose one of: {', '.join(variants.DEVICES)}")


def available_backends(bundle_path: str | Path, device: str = "cpu") -> dict[str, str | None]:
    """Every variant name -> None if this bundle can run it here on `device`, else the reason it cannot."""
    _check_device(device)
    bundle = Path(bundle_path)
    manifest = read_manifest(bundle)
    return {name: _reason(bundle, manifest, name, device) for name in variants.names()}


def _backend_order(backend: str, device: str, bundle: Path | None = None) -> tuple[tuple[str, ...], str]:
    """Variants to try in order for `backend`, and why that order: for "auto", the order `bench` measured on this
    machine when the bundle records one (`autotune.py`), else the registry's static order."""
    if backend == "trt":
        return tuple(v.name for v in variants.engines()), "best TensorRT engine present"
    if backend != "auto":
        return (variants.get(backend).name,), "asked for"
    order, expected = _expected_order(device)
    if bundle is not None and (measured := autotune.measured_order(bundle, device)) is not None:
        names, entry = measured
        first = [n for n in names if n in order]
        # variants bench did not time follow in the expected order: an emulated precision stays behind fp32
        return (*first, *(n for n in order if n not in first)), (
            f"fastest measured on this machine by bench ({autotune.AUTO_JSON}, {entry.get('created', '?')})")
    return tuple(order), f"{autotune.UNMEASURED}: {expected}"


def _expected_order(device: str) -> tuple[list[str], str]:
    """The registry's order for `device`, with int8 behind fp32 on a CPU whose usable flags have no int8 dot product
    (bf16 is refused outright there, `backend.OvLoader`); and why."""
    order = [v.name for v in variants.ranked(device)]
    if device == "cuda":
        return order, "the registry's order for GPUs"
    fast, why = cpu_int8_is_fast()
    if not fast:  # int8 of a runtime that needs int8 dot products for its speed is tried after fp32
        first_fp32 = next((i for i, n in enumerate(order) if variants.get(n).precision == "fp32"), len(order) - 1)
        slow = [n for n in order[:first_fp32] if variants.get(n).precision == "int8"
                and loader(variants.get(n).loader).int8_needs_dot_product]
        order = [n for n in order if n not in slow]
        order[first_fp32 - len(slow) + 1:first_fp32 - len(slow) + 1] = slow
        runtimes = [ld.title for ld in LOADERS.values() if ld.int8_needs_dot_product]
        why += f" on {', '.join(runtimes)}"
    return order, why


def auto_order(device: str = "cpu", bundle: str | Path | None = None) -> tuple[tuple[str, ...], str]:
    """The variants `auto` tries on `device`, in order, and why that order: the order `bench` measured on this machine
    when `bundle` records one, else the registry's, with int8 behind fp32 on CPUs without int8 dot products."""
    _check_device(device)
    return _backend_order("auto", device, None if bundle is None else Path(bundle))


def choose_backend(bundle: str | Path, manifest: Manifest, backend: str = "auto",
                   device: str = "cpu") -> tuple[str, FileEntry, str]:
    """(variant name, its file, why it was chosen) for a backend request; the reasons of all refusals otherwise."""
    _check_device(device)
    candidates, why = _backend_order(backend, device, Path(bundle))
    refused = {}
    for name in candidates:
        reason = _reason(Path(bundle), manifest, name, device)
        if reason is None:
            skipped = "".join(f"; skipped {n}: {r}" for n, r in refused.items() if find_entry(manifest, n))
            return name, find_entry(manifest, name), why + skipped  # type: ignore[return-value]
        refused[name] = reason
    # the first thing to know when nothing runs on a GPU: whether this machine has one
    gpu = ("no NVIDIA GPU found on this machine (no /dev/nvidia* device); " if device == "cuda" and not gpu_found()
           else "")
    if len(candidates) == 1:
        raise ResnetDeployError(f"{gpu}backend {backend!r} cannot run on device={device}: {refused[candidates[0]]}")
    detail = "; ".join(f"{n}: {r}" for n, r in refused.items())
    raise ResnetDeployError(f"{gpu}no backend for {backend!r} can run on device={device} ({detail})")


def gpu_found(dev: str | Path = "/dev") -> bool:
    """Whether an NVIDIA GPU's device node exists (a desktop or server GPU, or a Jetson's integrated one), without
    loading any CUDA library."""
    root = Path(dev)
    return any(root.glob("nvidia[0-9]*")) or (root / "nvhost-ctrl-gpu").exists()


def _check_threads(threads: Any) -> int | None:
    if threads is None:
        return None
    if isinstance(threads, bool) or not isinstance(threads, (int, np.integer)) or threads < 1:
        raise ResnetDeployError(f"threads must be a positive integer or None, found {threads!r}")
    return limits.check("threads", int(threads), "threads")


def _as_list(images: Images) -> list[ImageInput]:
    # One image (path, encoded bytes, PIL image, HxW or HxWxC array) or many (a sequence, or an N x H x W x C array).
    if isinstance(images, (str, Path, bytes, Image.Image)):
        return [images]
    if isinstance(images, np.ndarray):
        return list(images) if images.ndim == 4 else [images]
    try:
        return list(images)
    except TypeError:
        raise ResnetDeployError(f"expected images as paths, PIL images or uint8 arrays, found "
                                f"{type(images).__name__}") from None


class Predictor:
    """A bundle's model on one backend. Thread-safe: share one Predictor between threads.

    ONNX Runtime sessions allow concurrent `run` calls; the TensorRT backend serialises its execution context with a
    lock. Preprocessing is the manifest's `Preprocess` (the one definition used in training evaluation); a grey image
    given to a 3-channel model is converted to RGB by repeating its channel (PIL `convert("RGB")`), an RGB image given
    to a 1-channel model is converted to luma (PIL `convert("L")`, ITU-R 601-2), and RGBA loses its alpha channel.
    """

    def __init__(self, manifest: Manifest, backend: str, runner: Backend, *, device: str = "cpu",
                 why: str = "") -> None:
        self.manifest = manifest
        self.backend = backend
        self.device = device
        self.why = why
        self.preprocess = manifest.preprocess
        self.max_batch = min(manifest.batch[2], runner.max_batch or manifest.batch[2])
        self._runner: Backend | None = runner

    @classmethod
    def from_bundle(cls, path: str | Path, backend: str = "auto", device: str = "cpu",
                    threads: int | None = None, trusted_keys: Sequence[str | Path] | None = None) -> Predictor:
        """Load a bundle directory written by `resnet-deploy export`.

        Args:
            path: the bundle directory (with manifest.json).
            backend: "auto", "trt", or a variant name ("onnx", "fp16", "int8", "int8-trt", "trt-fp32", ...).
            device: "cpu" or "cuda".
            threads: intra-op threads; None lets the runtime use one per physical core.
            trusted_keys: publishers' public keys (PEM files of ECDSA keys): the bundle must be signed by one of
                them (`resnet-deploy sign`), checked before anything in it is parsed; None loads without checking
                signatures. Needs `cryptography` (the `signing` extra).

        Raises:
            BundleError: missing/truncated/foreign manifest, or the model file differs from its checksum.
            SignatureError: with `trusted_keys`, a bundle unsigned, signed by another key, or changed since.
            ResnetDeployError: the backend cannot run here (says why: missing file, engine built for another
                TensorRT or GPU, provider not installed).
        """
        if not isinstance(path, (str, Path)):
            raise ResnetDeployError(f"expected a bundle directory path, found {type(path).__name__}")
        _check_device(device)
        threads = _check_threads(threads)
        bundle = Path(path)
        manifest = open_manifest(bundle, trusted_keys)
        name, entry, why = choose_backend(bundle, manifest, backend, device)
        variant = variants.get(name)
        opts = LoadOptions(device=device, threads=threads, input_name=manifest.input_name,
                           output_name=manifest.output_name, max_batch=manifest.batch[2], options=variant.options,
                           info=entry.info)
        # the loader reads the file only through the manifest's check: a tampered file is refused before any library
        # parses it (with trusted keys, the check is against the digest of the signed manifest)
        runner = loader(variant.loader).load(VerifiedFile(bundle, entry), opts)
        return cls(manifest, name, runner, device=device, why=why)

    @property
    def variant(self) -> variants.Variant:
        """The registry row of the variant this predictor runs."""
        return variants.get(self.backend)

    def device_time_s(self) -> float | None:
        """Device time of this thread's last backend call (engines time their kernels), None where not measured."""
        return self._backend().device_time_s()

    def describe(self) -> dict[str, str]:
        """What runs the model: the variant, then the backend's runtime, version and device facts."""
        return {"variant": self.backend, "device": self.device, **self._backend().describe()}

    def _backend(self) -> Backend:
        if self._runner is None:
            raise ResnetDeployError("this Predictor is closed; load the bundle again with Predictor.from_bundle")
        return self._runner

    @property
    def classes(self) -> list[str]:
        """Class labels, index = class id."""
        return self.manifest.classes

    def run(self, batch: np.ndarray, *, allow_nonfinite: bool = False) -> np.ndarray:
        """Logits for preprocessed images: float32 (N, C, H, W) -> float32 (N, K), any N (split to the profile).

        Input holding NaN or Inf is refused unless `allow_nonfinite`: the model would return NaN scores, or confident
        ones, that look like answers. (`predict` never makes such input: it preprocesses 8-bit images.)
        """
        runner = self._backend()
        x = self._check_batch(batch)
        if not allow_nonfinite and not np.isfinite(x).all():
            bad = np.flatnonzero(~np.isfinite(x.reshape(len(x), -1)).all(axis=1))
            raise ResnetDeployError(f"input image(s) {', '.join(map(str, bad[:10]))}{' ...' if len(bad) > 10 else ''} "
                                    f"of {len(x)} hold NaN or Inf; pass allow_nonfinite=True to run them anyway")
        low = self.manifest.batch[0]
        parts = []
        for start in range(0, len(x), self.max_batch):
            chunk = x[start:start + self.max_batch]
            n = len(chunk)
            if n < low:  # the engine profile's smallest batch: pad with zeros, keep the first n rows
                chunk = np.concatenate([chunk, np.zeros((low - n, *chunk.shape[1:]), np.float32)])
            parts.append(runner.run(chunk)[:n])
        k = len(self.manifest.classes)
        out = np.concatenate(parts) if parts else np.empty((0, k), np.float32)
        if out.shape[1:] != (k,):
            raise ResnetDeployError(f"model returned logits of shape {out.shape}; the manifest lists {k} classes "
                                    "(the bundle is inconsistent, export it again)")
        return out

    def _check_batch(self, batch: Any) -> np.ndarray:
        c, h, w = self.manifest.input_shape
        if not isinstance(batch, np.ndarray):
            raise ResnetDeployError(f"expected a numpy array of shape (N, {c}, {h}, {w}), found {type(batch).__name__}")
        if batch.ndim != 4 or batch.shape[1:] != (c, h, w):
            raise ResnetDeployError(f"expected an array of shape (N, {c}, {h}, {w}), found {batch.shape} "
                                    "(use predict() for images of any size)")
        if not np.issubdtype(batch.dtype, np.floating):
            raise ResnetDeployError(f"expected float32 preprocessed input, found {batch.dtype} "
                                    "(use predict() for uint8 images)")
        return np.ascontiguousarray(batch, dtype=np.float32)

    def preprocess_images(self, images: Images) -> np.ndarray:
        """Images -> float32 (N, C, H, W) by the manifest's preprocessing; errors name the image that failed."""
        items = _as_list(images)
        arrays = []
        for i, image in enumerate(items):
            try:
                arrays.append(self.preprocess(image))
            except (ResnetDeployError, OSError, ValueError, Image.DecompressionBombError) as e:
                where = f"image {i + 1} of {len(items)}: " if len(items) > 1 else ""  # counted as people count
                raise ResnetDeployError(f"{where}{e}") from None
        c, h, w = self.manifest.input_shape
        return np.stack(arrays) if arrays else np.empty((0, c, h, w), np.float32)

    def predict(self, images: Images, topk: int = 5) -> list[Prediction]:
        """Classify images: paths, PIL images or uint8 HxW / HxWxC arrays (one, a list, or an NxHxWxC array).

        Returns:
            One Prediction per image, in order, with softmax scores of the `topk` best classes (capped at K).
        """
        if isinstance(topk, bool) or not isinstance(topk, (int, np.integer)) or topk < 1:
            raise ResnetDeployError(f"topk must be a positive integer, found {topk!r}")
        return top_predictions(self.run(self.preprocess_images(images)), self.classes, topk)

    def close(self) -> None:
        """Release the backend (device memory for TensorRT); closing twice is harmless."""
        runner, self._runner = self._runner, None
        if runner is not None:
            runner.close()

    def __enter__(self) -> Predictor:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return (f"Predictor({self.manifest.arch}, backend={self.backend!r}, device={self.device!r}, "
                f"classes={len(self.classes)}, input={self.manifest.input_shape})")
