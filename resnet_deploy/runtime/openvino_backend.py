"""OpenVINO backend: the bundle's ONNX files (fp32, int8 QDQ) compiled by OpenVINO for the CPU, optionally in bf16.

`openvino` is imported inside functions, so the runtime imports without it (it is the `openvino` extra). One
`CompiledModel` is shared; an `InferRequest` must not be used by two threads at once (OpenVINO docs, "Inference
Request"), so each calling thread gets its own request, created on its first call.

Precision: OpenVINO's CPU plugin picks bf16 by itself on some CPUs (those with AMX), so fp32 is asked for explicitly
and bf16 only where asked (`inference_precision="bf16"`) and where the CPU computes it natively (AVX512_BF16 or AMX
tiles); elsewhere OpenVINO would emulate it, slower than fp32. Int8 QDQ models run their quantized ops in int8
whatever the hint; the hint applies to the ops left in float.

Compiled models are cached in `cache_dir()` (OpenVINO's model cache): a second cold start of the same file loads the
compiled blob instead of compiling the graph again. OpenVINO keys a blob by the model's path and the settings, not by
the file's content, so a model replaced at the same path (a bundle exported again with `--force`) would load the old
model's blob: each content gets a folder of its own, named by the checksum the manifest holds and the load verified.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path
from typing import Any

import numpy as np

from resnet_deploy.runtime.backend import CACHE_ENV, cache_root  # noqa: F401 - CACHE_ENV: where tests point it
from resnet_deploy.runtime.errors import BundleError, ResnetDeployError, first_line

# Our precision names -> OpenVINO's INFERENCE_PRECISION_HINT values.
PRECISIONS = {"fp32": "f32", "bf16": "bf16"}


def _import_ov() -> Any:
    try:
        import openvino
    except ImportError:
        raise ResnetDeployError("openvino is not installed (pip install 'resnet-deploy[openvino]')") from None
    return openvino


def ov_installed() -> bool:
    """True when openvino can be imported."""
    try:
        _import_ov()
    except ResnetDeployError:
        return False
    return True


def cache_dir(content_id: str) -> Path:
    """Where the compiled models of one model file's content go: the package's cache folder (`backend.cache_root`),
    openvino/<content_id> (the checksum the load verified, `VerifiedFile.content_id`)."""
    return cache_root() / "openvino" / content_id


def _config(threads: int | None, precision: str, cache: Path | None) -> dict[str, str]:
    if precision not in PRECISIONS:
        raise ResnetDeployError(f"unknown OpenVINO inference precision {precision!r}; choose one of: "
                                f"{', '.join(PRECISIONS)}")
    # One stream and the latency hint: a request uses every thread it is given, as the other backends do.
    config = {"PERFORMANCE_HINT": "LATENCY", "NUM_STREAMS": "1", "INFERENCE_PRECISION_HINT": PRECISIONS[precision]}
    if threads is not None:
        config["INFERENCE_NUM_THREADS"] = str(int(threads))
    if cache is not None:
        config["CACHE_DIR"] = str(cache)
    return config


def _usable_cache(cache: Path | None) -> Path | None:
    """The cache folder, made if need be; None (no caching) where it cannot be written, e.g. a read-only home."""
    if cache is None:
        return None
    try:
        cache.mkdir(parents=True, exist_ok=True)
    except OSError:
        return None
    return cache if os.access(cache, os.W_OK | os.X_OK) else None


class OvBackend:
    """Runs one ONNX file with OpenVINO on the CPU (a `Backend`)."""

    max_batch: int | None = None  # the graph's batch axis is dynamic

    def __init__(self, path: Path, *, threads: int | None = None, precision: str = "fp32",
                 input_name: str = "input", output_name: str = "logits", cache: Path | None = None) -> None:
        """`cache`: a folder for this file's content only (`cache_dir(content_id)`), or None to compile every time."""
        ov = _import_ov()
        self.cache = _usable_cache(cache)
        config = _config(threads, precision, self.cache)
        try:
            # Given the path (not a read Model), OpenVINO can skip reading the ONNX file when the cache holds it.
            self.compiled = ov.Core().compile_model(str(path), "CPU", config)
        except Exception as e:  # OpenVINO raises RuntimeError subclasses with pages of text
            raise BundleError(f"OpenVINO could not compile {path.name}: {first_line(e)}") from None
        names = {n for port in self.compiled.inputs for n in port.get_names()}
        if input_name not in names:
            raise BundleError(f"{path.name} has inputs {sorted(names)}; the manifest expects {input_name!r}")
        self.input_name, self.output_name = input_name, output_name
        self.precision = precision
        self._version = ov.get_version()
        self._local = threading.local()

    def _request(self) -> Any:
        request = getattr(self._local, "request", None)
        if request is None:
            if self.compiled is None:
                raise ResnetDeployError("this OpenVINO backend is closed")
            request = self._local.request = self.compiled.create_infer_request()
        return request

    def run(self, batch: np.ndarray) -> np.ndarray:
        """float32 (N, C, H, W) -> float32 logits (N, K)."""
        request = self._request()
        try:
            request.infer({self.input_name: batch})
            out = request.get_tensor(self.output_name).data
        except Exception as e:
            raise ResnetDeployError(f"OpenVINO failed on a batch of shape {batch.shape}: {first_line(e)}") from None
        return np.array(out, dtype=np.float32)  # a copy: the request's buffer is reused by its next call

    def device_time_s(self) -> float | None:
        """OpenVINO's CPU plugin runs on the host: no separate device time."""
        return None

    def describe(self) -> dict[str, str]:
        """The runtime, its version, the inference precision and the model cache in use."""
        return {"runtime": "openvino", "version": self._version, "inference_precision": self.precision,
                "cache": str(self.cache) if self.cache else "off"}

    def close(self) -> None:
        """Drop the compiled model; requests other threads hold keep it alive until they go."""
        self.compiled = None
        self._local = threading.local()
