"""OpenVINO backend: the bundle's ONNX files (fp32, int8 QDQ) compiled by OpenVINO for the CPU, optionally in bf16.

`openvino` is imported inside functions, so the runtime imports without it (it is the `openvino` extra). One
`CompiledModel` is shared; an `InferRequest` must not be used by two threads at once (OpenVINO docs, "Inference
Request"), so each calling thread gets its own request, created on its first call.

Precision: OpenVINO's CPU plugin picks bf16 by itself on some CPUs (those with AMX), so fp32 is asked for explicitly
and bf16 only where asked (`inference_precision="bf16"`) and where the CPU computes it natively (AVX512_BF16 or AMX
tiles); elsewhere OpenVINO would emulate it, slower than fp32. Int8 QDQ models run their quantized ops in int8
whatever the hint; the hint applies to the ops left in float.

Compiled models are cached (`open_cache`): a second cold start of the same file imports the compiled model instead of
compiling the graph again. OpenVINO's own model cache is not used: it keys a blob by the model's path, modification
second and size, not by its content, and writes and reads it wherever its folder's links lead. Here each content gets
a folder of its own, named by the checksum the manifest holds and the load verified, in the package's private cache
(`runtime/cache.py`: folders of this user only, no links followed, each entry checked against the digest written
with it); the entry's name binds it to the compile settings, OpenVINO's version and the CPU. The loader writes an
entry only after the file it compiled from was found unchanged through the read.
"""

from __future__ import annotations

import contextlib
import ctypes
import hashlib
import json
import sys
import threading
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from resnet_deploy.runtime.cache import PrivateDir, cache_root, private_dir
from resnet_deploy.runtime.errors import BundleError, ResnetDeployError, first_line
from resnet_deploy.runtime.machine import cpu_model, isa_key
from resnet_deploy.runtime.verified import FD_DIR

# Our precision names -> OpenVINO's INFERENCE_PRECISION_HINT values.
PRECISIONS = {"fp32": "f32", "bf16": "bf16"}
# A compiled model imported from the cache points into the entry's mapping, and OpenVINO holds no reference to it (an
# infer request may outlive the backend, and then reads it after the backend is gone: a crash, seen). So each
# entry's mapping stays for the life of the process, one per content (by digest), however often it is loaded. Its
# pages are the cache file's, clean and shared with the page cache, which the kernel reclaims under memory pressure.
_IMPORTED: dict[str, memoryview] = {}
# Mappings that two loads of one content made at the same time (both found no earlier one): the second is what its
# compiled model points into, so it too stays for the life of the process.
_ALSO_IMPORTED: list[memoryview] = []


class _SignalStack(ctypes.Structure):
    _fields_ = [("ss_sp", ctypes.c_void_p), ("ss_flags", ctypes.c_int), ("ss_size", ctypes.c_size_t)]


_LIBC = ctypes.CDLL(None, use_errno=True) if sys.platform.startswith("linux") else None


@contextlib.contextmanager
def _keeping_signal_stack() -> Any:
    """Give the calling thread back its alternate signal stack after OpenVINO has run.

    OpenVINO's CPU plugin (2026.4) installs a signal stack of its own on the thread that compiles a model and puts
    back the one it found when that model is destroyed. Two models destroyed in another order than they were made
    (or on another thread) leave the thread on a freed stack, and the next signal with a handler (every Python
    handler runs on the alternate stack: Ctrl-C, SIGTERM, a child's exit) kills the process with SIGSEGV. Python has
    no call for sigaltstack, hence ctypes."""
    if _LIBC is None:
        yield
        return
    saved = _SignalStack()
    known = _LIBC.sigaltstack(None, ctypes.byref(saved)) == 0
    try:
        yield
    finally:
        if known:
            saved.ss_flags &= ~1  # SS_ONSTACK is a state, not a flag sigaltstack takes
            _LIBC.sigaltstack(ctypes.byref(saved), None)


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
    """Where the compiled models of one model file's content go: the package's cache folder (`cache.cache_root`),
    openvino/<content_id> (the checksum the load verified, `VerifiedFile.content_id`)."""
    return cache_root() / "openvino" / content_id


@dataclass(frozen=True)
class CacheEntry:
    """Where one compiled model goes: its private folder (`cache.private_dir`), the entry's name and its binding
    (what it is made from: the content, the compile settings, OpenVINO's version and the CPU), which the entry's
    digest covers."""

    folder: PrivateDir
    name: str
    binding: bytes

    def read(self) -> tuple[memoryview, str] | None:
        """The compiled model's bytes and their digest, checked against the digest written with them; None when
        absent or bad."""
        return self.folder.read(self.name, self.binding)

    def write(self, data: bytes | memoryview) -> None:
        """Keep a compiled model (atomically; a failure only costs the next start its compile)."""
        self.folder.write(self.name, self.binding, data)


def cache_entry(content_id: str, threads: int | None, precision: str) -> CacheEntry | None:
    """The cache entry of one content compiled with these settings, in its folder (`cache_dir`, made private where
    missing), or None where the cache cannot be used: missing rights quietly, a folder that is a link, another
    user's or open to others with a one-line warning. The caller closes `entry.folder`."""
    folder = private_dir("openvino", content_id, purpose="OpenVINO model cache")
    if folder is None:
        return None
    # the CPU class as the libraries see it (`machine.isa_key`): a model compiled under ONEDNN_MAX_CPU_ISA=AVX2 is
    # laid out for AVX2 kernels, and one compiled without the cap for the CPU's own
    binding = json.dumps({"content": content_id, "openvino": _import_ov().get_version(), "device": "CPU",
                          "config": _config(threads, precision), "cpu": cpu_model(), **isa_key()},
                         sort_keys=True).encode()
    return CacheEntry(folder, f"{hashlib.sha256(binding).hexdigest()[:32]}.blob", binding)


def _config(threads: int | None, precision: str) -> dict[str, str]:
    if precision not in PRECISIONS:
        raise ResnetDeployError(f"unknown OpenVINO inference precision {precision!r}; choose one of: "
                                f"{', '.join(PRECISIONS)}")
    # One stream and the latency hint: a request uses every thread it is given, as the other backends do.
    config = {"PERFORMANCE_HINT": "LATENCY", "NUM_STREAMS": "1", "INFERENCE_PRECISION_HINT": PRECISIONS[precision]}
    if threads is not None:
        config["INFERENCE_NUM_THREADS"] = str(int(threads))
    return config


def _read_onnx(path: str | Path) -> Any:
    """The ONNX file at `path` as an OpenVINO model, read by the ONNX front end itself: `Core.read_model` guesses the
    format from the file name, and a name without `.onnx` (/proc/self/fd/N) costs a try of every other front end
    first (45 ms on ResNet-50 here)."""
    from openvino.frontend import FrontEndManager

    frontend = FrontEndManager().load_by_framework("onnx")
    return frontend.convert(frontend.load(str(path)))


def _read_model(core: Any, path: str | Path) -> Any:
    """A loader's checked descriptor (`/proc/self/fd/N`, always a bundle's ONNX file) through the ONNX front end;
    any other file (an OpenVINO IR a benchmark compares against, say) by its name, as OpenVINO reads it."""
    return _read_onnx(path) if str(path).startswith(FD_DIR) else core.read_model(str(path))


class OvBackend:
    """Runs one ONNX file with OpenVINO on the CPU (a `Backend`)."""

    max_batch: int | None = None  # the graph's batch axis is dynamic

    def __init__(self, path: str | Path, *, name: str | None = None, threads: int | None = None,
                 precision: str = "fp32", input_name: str = "input", output_name: str = "logits",
                 cache: CacheEntry | None = None, cached: tuple[memoryview, str] | None = None) -> None:
        """`path`: the ONNX file (from a loader, `/proc/self/fd/N` of the checked file), read only when there is no
        compiled model; `name` names it in messages; `cache`: where the compiled model of this content and these
        settings is kept (`cache_entry`), or None to compile every time; `cached`: that entry's checked bytes
        (`CacheEntry.read`, which the loader runs beside the file's own check), imported instead of compiling."""
        ov = _import_ov()
        name = name or Path(path).name
        config = _config(threads, precision)
        core = ov.Core()
        self.cache, self._blob, self.compiled, self._writing = cache, None, None, None
        self._pending, self._lock = False, threading.Lock()
        if cached is not None:
            view, digest = cached
            kept = _IMPORTED.get(digest, view)  # the same bytes, checked and mapped by an earlier load
            try:
                # the checked bytes, shared (not copied) with OpenVINO, which keeps pointing into them (_IMPORTED)
                with _keeping_signal_stack():
                    self.compiled = core.import_model(ov.Tensor(np.frombuffer(kept, np.uint8),
                                                                shared_memory=True), "CPU", config)
                if _IMPORTED.setdefault(digest, kept) is not kept:
                    _ALSO_IMPORTED.append(kept)
                self._blob = kept
                if kept is not view:
                    view.release()
            except Exception as e:  # a blob OpenVINO refuses is compiled again and replaced
                warnings.warn(f"OpenVINO model cache entry not used ({first_line(e)[:200]}); compiling again",
                              RuntimeWarning, stacklevel=2)
        self._fresh = self.compiled is None
        if self.compiled is None:
            try:
                with _keeping_signal_stack():
                    self.compiled = core.compile_model(_read_model(core, path), "CPU", config)
            except Exception as e:  # OpenVINO raises RuntimeError subclasses with pages of text
                raise BundleError(f"OpenVINO could not compile {name}: {first_line(e)}") from None
        names = {n for port in self.compiled.inputs for n in port.get_names()}
        if input_name not in names:
            raise BundleError(f"{name} has inputs {sorted(names)}; the manifest expects {input_name!r}")
        self.input_name, self.output_name = input_name, output_name
        self.precision = precision
        self._version = ov.get_version()
        self._local = threading.local()

    def save_to_cache(self) -> bool:
        """Have the model compiled here written to the cache it was given (nothing when it came from the cache, or
        without one); True when a write is due, which then closes the cache folder when done. The caller says when:
        once the file it was compiled from is known to be the checked one.

        The write starts after the first `run` returns (or at `close`), in a thread of its own: exporting and
        writing a ResNet-50 (97 MiB) costs more than compiling it, and the first answer need not wait for it nor
        share the CPU with it. The thread is not a daemon, so the process finishes the entry before it exits
        (OpenVINO releases the GIL while it exports)."""
        self._pending = self._fresh and self.cache is not None
        self._fresh = False
        return self._pending

    def _start_write(self) -> None:
        with self._lock:
            if not self._pending:
                return
            self._pending = False
            compiled, cache = self.compiled, self.cache

            def write() -> None:
                try:
                    stream = compiled.export_model()
                    cache.write(stream.getbuffer() if hasattr(stream, "getbuffer") else stream)  # BytesIO since 2025
                finally:
                    cache.folder.close()

            self._writing = threading.Thread(target=write, name="openvino-cache-write")
            self._writing.start()

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
        result = np.array(out, dtype=np.float32)  # a copy: the request's buffer is reused by its next call
        if self._pending:
            self._start_write()
        return result

    def device_time_s(self) -> float | None:
        """OpenVINO's CPU plugin runs on the host: no separate device time."""
        return None

    def describe(self) -> dict[str, str]:
        """The runtime, its version, the inference precision and the model cache in use."""
        return {"runtime": "openvino", "version": self._version, "inference_precision": self.precision,
                "cache": str(self.cache.folder.path) if self.cache else "off"}

    def close(self) -> None:
        """Drop the compiled model; requests other threads hold keep it alive until they go (and with it the cached
        blob it may point into, which is released with the last reference); a cache entry being written is finished
        first."""
        self._start_write()
        if self._writing is not None:
            self._writing.join()
        with _keeping_signal_stack():
            self.compiled = None
            self._local = threading.local()
