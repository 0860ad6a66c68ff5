"""The `Backend` protocol and one loader per runtime that runs bundle files (ONNX Runtime, OpenVINO, TensorRT).

A variant of the registry (`variants.py`) names its loader; `load_backend` turns the variant's file into a running
`Backend`, and `Loader.refuse` says, before anything is loaded, why that cannot happen on this machine. Heavy runtimes
are imported inside the loaders, so the runtime imports on machines that have only one of them.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from resnet_deploy.runtime import onnx_backend, openvino_backend, tensorrt_backend
from resnet_deploy.runtime.errors import ResnetDeployError
from resnet_deploy.runtime.machine import cpu_has_bf16
from resnet_deploy.runtime.manifest import INPUT_NAME, OUTPUT_NAME, FileEntry
from resnet_deploy.runtime.verified import VerifiedFile


@dataclass(frozen=True)
class LoadOptions:
    """How a backend is loaded: the device, threads, the bundle's tensor names and batch limit, variant options, and
    the manifest's facts about the file (`FileEntry.info`: for engines, how they were built)."""

    device: str = "cpu"
    threads: int | None = None
    input_name: str = INPUT_NAME
    output_name: str = OUTPUT_NAME
    max_batch: int = 32
    options: dict[str, str] = field(default_factory=dict)
    info: dict[str, Any] = field(default_factory=dict)


class Backend(Protocol):
    """A loaded model file: float32 (N, C, H, W) in, float32 logits (N, K) out. Safe to call from several threads."""

    max_batch: int | None  # the largest batch one `run` takes (None: any)

    def run(self, batch: np.ndarray) -> np.ndarray:
        """Logits for a preprocessed batch of at most `max_batch` images."""

    def close(self) -> None:
        """Release what the backend holds (sessions, device memory); later calls are errors."""

    def device_time_s(self) -> float | None:
        """Device time of the calling thread's last `run` (kernels only, no copies), or None if not measured."""

    def describe(self) -> dict[str, str]:
        """What runs the model, for logs and reports: runtime, version, provider or GPU."""


class Loader(Protocol):
    """Loads one runtime's files; `refuse` says why it cannot here, before loading. `title`, `module`, `dists` and
    `install`: the runtime as `doctor` lists it, the module that must import, its distributions (the first installed
    gives the version) and how to get it."""

    title: str
    module: str
    dists: tuple[str, ...]
    install: str
    # whether this runtime's int8 kernels need an int8 dot-product instruction (VNNI, AMX) to beat its fp32 ones:
    # `auto` tries its int8 variants after fp32 on CPUs without one, until `bench` measures otherwise
    int8_needs_dot_product: bool

    def refuse(self, entry: FileEntry, device: str, rebuild: str, options: dict[str, str]) -> str | None:
        """Why `entry` cannot run on `device` on this machine (None: it can); `rebuild` is the command to rebuild,
        `options` the variant's loader options (a precision the CPU may lack)."""

    def load(self, file: VerifiedFile, opts: LoadOptions) -> Backend:
        """The running backend for `file`, got at only through `file.read()` (the checked bytes themselves) or
        `file.opened()` (the checked file's own descriptor); never its path, which could name another file by the
        time the library opened it."""


class OrtLoader:
    """ONNX files on ONNX Runtime: the CPU provider, or CUDA with onnxruntime-gpu."""

    title, module, dists, install = "onnxruntime", "onnxruntime", ("onnxruntime", "onnxruntime-gpu"), \
        "pip install onnxruntime"
    int8_needs_dot_product = True  # MLAS's int8 kernels gain over fp32 with VNNI or AMX only

    def refuse(self, entry: FileEntry, device: str, rebuild: str, options: dict[str, str]) -> str | None:
        if not onnx_backend.ort_installed():
            return f"onnxruntime is not installed ({self.install})"
        if device == "cuda" and not onnx_backend.ort_has_cuda():
            return "onnxruntime has no CUDA provider here (pip install onnxruntime-gpu)"
        return None

    def load(self, file: VerifiedFile, opts: LoadOptions) -> Backend:
        # the checked descriptor: ONNX Runtime builds a session from a path faster than from bytes (ResNet-50, in
        # one run: 1.3x as long from bytes, the same from /proc/self/fd; benchmarks/RESULTS.md)
        with file.opened() as path:
            return onnx_backend.OrtBackend(path, name=file.name, device=opts.device, threads=opts.threads,
                                           input_name=opts.input_name, output_name=opts.output_name,
                                           graph_optimization=opts.options.get("graph_optimization", "all"))


class TrtLoader:
    """TensorRT engines (full or lean runtime), refused unless built for this machine's TensorRT and GPU (or compatible
    with them)."""

    title, module, dists, install = "TensorRT", "tensorrt", ("tensorrt", "tensorrt-cu13", "tensorrt-cu12"), \
        "pip install 'resnet-deploy[trt]' (needs an NVIDIA GPU)"
    int8_needs_dot_product = False  # GPUs only

    def refuse(self, entry: FileEntry, device: str, rebuild: str, options: dict[str, str]) -> str | None:
        if device != "cuda":
            return "TensorRT engines need device='cuda'"
        try:
            here = tensorrt_backend.running_info()
        except ResnetDeployError as e:
            return str(e)
        return tensorrt_backend.engine_mismatch(entry.path, entry.info, here, rebuild)

    def load(self, file: VerifiedFile, opts: LoadOptions) -> Backend:
        # bytes: the plan may carry host code (version-compatible engines), so what TensorRT runs must be the very
        # bytes that matched the manifest, with no window in which the file could be swapped
        return tensorrt_backend.TrtBackend(file.read(), name=file.name, max_batch=opts.max_batch,
                                           input_name=opts.input_name, output_name=opts.output_name,
                                           version_compatible=bool(opts.info.get("version_compatible")))


class OvLoader:
    """ONNX files on OpenVINO's CPU plugin; option `inference_precision` ("fp32" default, or "bf16")."""

    title, module, dists, install = "OpenVINO", "openvino", ("openvino",), "pip install 'resnet-deploy[openvino]'"
    # ResNet-50 batch 1 under ONEDNN_MAX_CPU_ISA=AVX2: OpenVINO's int8 1.95x as fast as its fp32 (benchmarks/RESULTS.md,
    # "The machine the user has"); an emulated AVX2 class, not verified on a real AVX2-only CPU
    int8_needs_dot_product = False

    def refuse(self, entry: FileEntry, device: str, rebuild: str, options: dict[str, str]) -> str | None:
        if device != "cpu":
            return "the OpenVINO backend runs on the CPU only"
        if not openvino_backend.ov_installed():
            return f"openvino is not installed ({self.install})"
        if options.get("inference_precision") == "bf16":
            native, why = cpu_has_bf16()
            return None if native else why
        return None

    def load(self, file: VerifiedFile, opts: LoadOptions) -> Backend:
        precision = opts.options.get("inference_precision", "fp32")
        entry = openvino_backend.cache_entry(file.content_id, opts.threads, precision)
        # the cached compiled model's digest is checked in a second thread while this one checks the file
        cached = _Background(entry.read) if entry is not None else None
        writing = False
        try:
            with file.opened() as path:
                backend = openvino_backend.OvBackend(path, name=file.name, threads=opts.threads,
                                                     precision=precision, input_name=opts.input_name,
                                                     output_name=opts.output_name, cache=entry,
                                                     cached=cached.result() if cached is not None else None)
            # kept only now that the file is known unchanged through the read: a compiled model is cached under the
            # checksum of what it was compiled from, and every later load of that content runs it
            writing = backend.save_to_cache()
            return backend
        finally:
            if cached is not None:
                cached.wait()  # before the folder's descriptor is closed under it
            if entry is not None and not writing:  # else the writing thread closes it
                entry.folder.close()


class _Background:
    """`fn()` run in a thread of its own from now on; `result()` waits for its value (or raises its error)."""

    def __init__(self, fn: Any) -> None:
        self._value: Any = None
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, args=(fn,), daemon=True)
        self._thread.start()

    def _run(self, fn: Any) -> None:
        try:
            self._value = fn()
        except BaseException as e:  # handed to the caller
            self._error = e

    def wait(self) -> None:
        self._thread.join()

    def result(self) -> Any:
        self._thread.join()
        if self._error is not None:
            raise self._error
        return self._value


LOADERS: dict[str, Loader] = {"onnxruntime": OrtLoader(), "openvino": OvLoader(), "tensorrt": TrtLoader()}


def loader(name: str) -> Loader:
    """The loader registered as `name` (a variant's `loader`)."""
    if name not in LOADERS:
        raise ResnetDeployError(f"no loader {name!r}; registered: {', '.join(LOADERS)}")
    return LOADERS[name]

