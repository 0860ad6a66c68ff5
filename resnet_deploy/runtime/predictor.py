"""`Predictor`: load a bundle, pick the backend this machine runs best, classify images.

Edge apps use only this module (numpy, PIL, and onnxruntime or TensorRT + cuda-python): no torch, no click.

Backends, by name (the bundle contract): "onnx" (model.onnx), "fp16", "int8" (U8S8 QDQ for CPUs), "int8-trt"
(symmetric QDQ run on ONNX Runtime), "trt-fp32", "trt-fp16", "trt-int8" (TensorRT engines); "trt" is the best engine
present, "auto" the best backend this machine can run.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Union

import numpy as np
from PIL import Image

from resnet_deploy.runtime.errors import ResnetDeployError
from resnet_deploy.runtime.manifest import FileEntry, Manifest, read_manifest, verify_files
from resnet_deploy.runtime.onnx_backend import OrtBackend, cpu_int8_is_fast, ort_has_cuda, ort_installed
from resnet_deploy.runtime.preprocess import ImageInput

# backend name -> (format, precision, target) of the manifest's FileEntry it runs.
BACKENDS: dict[str, tuple[str, str, str]] = {
    "onnx": ("onnx", "fp32", "any"),
    "fp16": ("onnx", "fp16", "any"),
    "int8": ("onnx", "int8", "cpu"),
    "int8-trt": ("onnx", "int8", "trt"),
    "trt-fp32": ("engine", "fp32", "trt"),
    "trt-fp16": ("engine", "fp16", "trt"),
    "trt-int8": ("engine", "int8", "trt"),
}
ENGINES = ("trt-int8", "trt-fp16", "trt-fp32")  # fastest first
DEVICES = ("cpu", "cuda")
_EXPORT_FLAGS = {"onnx": "", "fp16": " --fp16", "int8": " --int8", "int8-trt": " --int8 --trt", "trt-fp32": " --trt",
                 "trt-fp16": " --fp16 --trt", "trt-int8": " --int8 --trt"}

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


def find_entry(manifest: Manifest, name: str) -> FileEntry | None:
    """The manifest's file that backend `name` runs, or None when the bundle has none."""
    fmt, precision, target = BACKENDS[name]
    return next((f for f in manifest.files if (f.format, f.precision, f.target) == (fmt, precision, target)), None)


@dataclass(frozen=True)
class _Machine:
    """What this machine offers, probed once per call: ORT, its CUDA provider, TensorRT's facts or why it is absent."""

    ort: bool
    ort_cuda: bool
    trt: dict[str, str] | str

    @classmethod
    def probe(cls, device: str) -> _Machine:
        trt: dict[str, str] | str = "TensorRT engines need device='cuda'"
        if device == "cuda":
            from resnet_deploy.runtime.tensorrt_backend import running_info

            try:
                trt = running_info()
            except ResnetDeployError as e:
                trt = str(e)
        return cls(ort_installed(), device == "cuda" and ort_has_cuda(), trt)


def _reason(bundle: Path, manifest: Manifest, name: str, device: str, machine: _Machine) -> str | None:
    """Why backend `name` cannot run here, or None when it can."""
    entry = find_entry(manifest, name)
    if entry is None:
        return f"the bundle has no {name} model (export it with `resnet-deploy export ...{_EXPORT_FLAGS[name]}`)"
    if not (bundle / entry.path).is_file():
        return f"{entry.path} is listed in the manifest but missing from {bundle}"
    if entry.format == "engine":
        if isinstance(machine.trt, str):
            return machine.trt
        from resnet_deploy.runtime.tensorrt_backend import engine_mismatch

        return engine_mismatch(entry.path, entry.info, machine.trt, rebuild_command(bundle, manifest))
    if not machine.ort:
        return "onnxruntime is not installed (pip install onnxruntime)"
    if device == "cuda" and name == "int8":
        return "the U8S8 int8 model is for CPUs; on a GPU use trt-int8 or int8-trt"
    if device == "cuda" and not machine.ort_cuda:
        return "onnxruntime has no CUDA provider here (pip install onnxruntime-gpu)"
    return None


def rebuild_command(bundle: Path, manifest: Manifest) -> str:
    """The `resnet-deploy export` command that rebuilds this bundle's engines, from the manifest's source and args."""
    args, src = manifest.export_args, manifest.source
    flags = "".join(f" --{k}" for k in ("fp16", "int8") if args.get(k))
    if args.get("int8") and args.get("calib_data"):
        flags += f" --calib-data {args['calib_data']}"
    where = src["path"] if src.get("kind", "checkpoint") == "checkpoint" and src.get("path") else "CHECKPOINT"
    return f"resnet-deploy export {where} --out {bundle.name}-trt --trt{flags}"


def _check_device(device: str) -> None:
    if device not in DEVICES:
        raise ResnetDeployError(f"unknown device {device!r}; choose one of: {', '.join(DEVICES)}")


def available_backends(bundle_path: str | Path, device: str = "cpu") -> dict[str, str | None]:
    """Every backend name -> None if this bundle can run it here on `device`, else the reason it cannot."""
    _check_device(device)
    bundle = Path(bundle_path)
    manifest = read_manifest(bundle)
    machine = _Machine.probe(device)
    return {name: _reason(bundle, manifest, name, device, machine) for name in BACKENDS}


def _candidates(backend: str, device: str) -> tuple[tuple[str, ...], str]:
    """Backends to try in order for `backend`, and why that order."""
    if backend == "trt":
        return ENGINES, "best TensorRT engine present"
    if backend in BACKENDS:
        return (backend,), "asked for"
    if backend != "auto":
        raise ResnetDeployError(f"unknown backend {backend!r}; choose one of: auto, trt, {', '.join(BACKENDS)}")
    if device == "cuda":  # engines first; then ORT's CUDA provider, where fp16 uses the tensor cores
        return ENGINES + ("fp16", "onnx", "int8-trt"), "fastest usable on the GPU"
    fast, why = cpu_int8_is_fast()
    # fp16 ONNX runs slower than fp32 on CPUs (REFERENCE.md: 51 vs 40 ms), so it is only a last resort.
    return (("int8", "onnx") if fast else ("onnx", "int8")) + ("fp16", "int8-trt"), why


def choose_backend(bundle: str | Path, manifest: Manifest, backend: str = "auto",
                   device: str = "cpu") -> tuple[str, FileEntry, str]:
    """(backend name, its file, why it was chosen) for a backend request; the reasons of all refusals otherwise."""
    _check_device(device)
    candidates, why = _candidates(backend, device)
    machine = _Machine.probe(device)
    refused = {}
    for name in candidates:
        reason = _reason(Path(bundle), manifest, name, device, machine)
        if reason is None:
            skipped = "".join(f"; skipped {n}: {r}" for n, r in refused.items() if find_entry(manifest, n))
            return name, find_entry(manifest, name), why + skipped  # type: ignore[return-value]
        refused[name] = reason
    if len(candidates) == 1:
        raise ResnetDeployError(f"backend {backend!r} cannot run on device={device}: {refused[backend]}")
    detail = "; ".join(f"{n}: {r}" for n, r in refused.items())
    raise ResnetDeployError(f"no backend for {backend!r} can run on device={device} ({detail})")


def _as_list(images: Images) -> list[ImageInput]:
    # One image (path, PIL image, HxW or HxWxC array) or many (a sequence, or an N x H x W x C uint8 array).
    if isinstance(images, (str, Path, Image.Image)):
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

    def __init__(self, manifest: Manifest, backend: str, runner: Any, *, device: str = "cpu",
                 bundle: Path | None = None, why: str = "") -> None:
        self.manifest = manifest
        self.backend = backend
        self.device = device
        self.bundle = bundle
        self.why = why
        self.preprocess = manifest.preprocess
        self.max_batch = min(manifest.batch[2], getattr(runner, "max_batch", manifest.batch[2]))
        self._runner = runner

    @classmethod
    def from_bundle(cls, path: str | Path, backend: str = "auto", device: str = "cpu",
                    threads: int | None = None) -> Predictor:
        """Load a bundle directory written by `resnet-deploy export`.

        Args:
            path: the bundle directory (with manifest.json).
            backend: "auto", "trt", or a backend name ("onnx", "fp16", "int8", "int8-trt", "trt-fp32", ...).
            device: "cpu" or "cuda".
            threads: ONNX Runtime intra-op threads; None lets ONNX Runtime use one per physical core.

        Raises:
            BundleError: missing/truncated/foreign manifest, or the model file differs from its sha256.
            ResnetDeployError: the backend cannot run here (says why: missing file, engine built for another
                TensorRT or GPU, provider not installed).
        """
        _check_device(device)
        if threads is not None and int(threads) < 1:
            raise ResnetDeployError(f"threads must be a positive number or None, found {threads}")
        bundle = Path(path)
        manifest = read_manifest(bundle)
        name, entry, why = choose_backend(bundle, manifest, backend, device)
        verify_files(bundle, manifest, [entry.path])  # refuse a tampered file before any library parses it
        file = bundle / entry.path
        if entry.format == "engine":
            from resnet_deploy.runtime.tensorrt_backend import TrtBackend

            runner: Any = TrtBackend(file, max_batch=manifest.batch[2], input_name=manifest.input_name,
                                     output_name=manifest.output_name)
        else:
            runner = OrtBackend(file, device=device, threads=threads, input_name=manifest.input_name,
                                output_name=manifest.output_name)
        return cls(manifest, name, runner, device=device, bundle=bundle, why=why)

    @property
    def classes(self) -> list[str]:
        """Class labels, index = class id."""
        return self.manifest.classes

    def run(self, batch: np.ndarray) -> np.ndarray:
        """Logits for preprocessed images: float32 (N, C, H, W) -> float32 (N, K), any N (split to the profile)."""
        x = self._check_batch(batch)
        low = self.manifest.batch[0]
        parts = []
        for start in range(0, len(x), self.max_batch):
            chunk = x[start:start + self.max_batch]
            n = len(chunk)
            if n < low:  # the engine profile's smallest batch: pad with zeros, keep the first n rows
                chunk = np.concatenate([chunk, np.zeros((low - n, *chunk.shape[1:]), np.float32)])
            parts.append(self._runner.run(chunk)[:n])
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
                where = f"image {i} of {len(items)}: " if len(items) > 1 else ""
                raise ResnetDeployError(f"{where}{e}") from None
        c, h, w = self.manifest.input_shape
        return np.stack(arrays) if arrays else np.empty((0, c, h, w), np.float32)

    def predict(self, images: Images, topk: int = 5) -> list[Prediction]:
        """Classify images: paths, PIL images or uint8 HxW / HxWxC arrays (one, a list, or an NxHxWxC array).

        Returns:
            One Prediction per image, in order, with softmax scores of the `topk` best classes (capped at K).
        """
        if int(topk) < 1:
            raise ResnetDeployError(f"topk must be at least 1, found {topk}")
        probs = softmax(self.run(self.preprocess_images(images)))
        k = min(int(topk), len(self.classes))
        results = []
        for p in probs:
            best = np.argsort(-p, kind="stable")[:k]
            top = [(int(c), self.classes[c], float(p[c])) for c in best]
            results.append(Prediction(top[0][0], top[0][1], top[0][2], top))
        return results

    def close(self) -> None:
        """Release the backend (device memory for TensorRT)."""
        self._runner.close()

    def __enter__(self) -> Predictor:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return (f"Predictor({self.manifest.arch}, backend={self.backend!r}, device={self.device!r}, "
                f"classes={len(self.classes)}, input={self.manifest.input_shape})")
