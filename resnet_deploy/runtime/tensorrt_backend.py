"""TensorRT backend: run a serialized engine (`model.<precision>.engine`) with TensorRT 10.x or 11.x.

Two runtimes can run engines: the full `tensorrt` package (libraries of over a gigabyte, with the builder), or the
lean runtime `tensorrt_lean` (a ~44 MB wheel), which runs version-compatible engines only (`export --trt-compat
version`). The full one is used when both are installed. Memory, streams and the CUDA events that time the kernels
go through cuda-python (`cuda.bindings.runtime`), as NVIDIA's own Python samples do, not pycuda. TensorRT and
cuda-python are imported inside functions so the runtime imports on machines without them.

Written against the documented API shared by TensorRT 10 and 11 (name-based I/O: `num_io_tensors`, `get_tensor_name`,
`get_tensor_mode`, `set_input_shape`, `set_tensor_address`, `execute_async_v3`); the binding-index API removed in 10.0
is not used. An `IExecutionContext` must not be used by two threads at once (TensorRT developer guide, "Thread
Safety"), so one context, one stream, one pair of device buffers and one pair of events are guarded by a lock.
"""

from __future__ import annotations

import functools
import importlib
import threading
import warnings
from typing import Any

import numpy as np

from resnet_deploy.runtime.errors import BundleError, ResnetDeployError

# trt.DataType member name -> numpy dtype (trt.nptype exists too, but this keeps the mapping testable without TRT).
_NP_DTYPES = {"FLOAT": np.float32, "HALF": np.float16, "INT8": np.int8, "UINT8": np.uint8, "INT32": np.int32,
              "INT64": np.int64, "BOOL": np.bool_}
RUNTIMES = ("tensorrt", "tensorrt_lean")  # tried in this order
INSTALL_HINT = ("TensorRT is not installed: pip install tensorrt cuda-python (the full runtime, over 1 GB with its "
                "libraries), or pip install tensorrt-lean cuda-python (the lean runtime, ~44 MB, for engines exported "
                "with --trt-compat version)")
HARDWARE_COMPAT_MIN_CC = 8.0  # HardwareCompatibilityLevel.AMPERE_PLUS


def import_tensorrt() -> tuple[Any, str]:
    """(module, name) of the TensorRT runtime to run engines with: `tensorrt` if installed, else `tensorrt_lean`."""
    for name in RUNTIMES:
        try:
            return importlib.import_module(name), name
        except ImportError:
            continue
    raise ResnetDeployError(INSTALL_HINT)


class CudaPythonMissing(ResnetDeployError):
    """cuda-python is not installed (callers with another way to reach the GPU fall back to it)."""


def _import_cudart() -> Any:
    try:
        from cuda.bindings import runtime as cudart  # cuda-python >= 12.6
    except ImportError:
        try:
            from cuda import cudart  # older cuda-python layout
        except ImportError:
            raise CudaPythonMissing("cuda-python is not installed (pip install cuda-python)") from None
    return cudart


def _check(cudart: Any, result: Any) -> Any:
    """cuda-python returns (error, *values): raise on an error, else return the value(s)."""
    err, *values = result if isinstance(result, tuple) else (result,)
    if err != cudart.cudaError_t.cudaSuccess:
        _, name = cudart.cudaGetErrorName(err)
        raise ResnetDeployError(f"CUDA call failed: {name.decode() if isinstance(name, bytes) else name}")
    return values[0] if len(values) == 1 else tuple(values) or None


def numpy_dtype(trt_dtype: Any) -> type:
    """numpy dtype of a `trt.DataType` (by member name, e.g. DataType.HALF -> float16)."""
    name = getattr(trt_dtype, "name", str(trt_dtype).rsplit(".", 1)[-1])
    if name not in _NP_DTYPES:
        raise ResnetDeployError(f"engine tensor type {name} is not supported; expected one of {', '.join(_NP_DTYPES)}")
    return _NP_DTYPES[name]


def cuda_device(device: int = 0) -> dict[str, str]:
    """Name and compute capability of CUDA GPU `device`, via cuda-python; ResnetDeployError when there is none."""
    cudart = _import_cudart()
    try:
        count = _check(cudart, cudart.cudaGetDeviceCount())
    except ResnetDeployError as e:
        raise ResnetDeployError(f"no usable CUDA GPU: {e}") from None
    if count <= device:
        raise ResnetDeployError(f"no CUDA GPU {device}: this machine has {count}")
    prop = _check(cudart, cudart.cudaGetDeviceProperties(device))
    name = prop.name.decode(errors="replace") if isinstance(prop.name, bytes) else str(prop.name)
    return {"gpu": name.rstrip("\x00").strip(), "compute_capability": f"{prop.major}.{prop.minor}"}


@functools.lru_cache(maxsize=4)
def running_info(device: int = 0) -> dict[str, str]:
    """The TensorRT runtime (module name and version), GPU name and compute capability of this machine."""
    trt, runtime = import_tensorrt()
    return {"runtime": runtime, "tensorrt_version": str(trt.__version__), **cuda_device(device)}


def _version3(v: Any) -> str:
    return ".".join(str(v).split(".")[:3])


def _older(have: str, want: str) -> bool:
    return tuple(int(p) for p in have.split(".")) < tuple(int(p) for p in want.split("."))


def _cc(v: Any) -> str:
    return f"{v[0]}.{v[1]}" if isinstance(v, (list, tuple)) else str(v)


def _with_version_compat(rebuild: str) -> str:
    if "--trt-compat hardware" in rebuild:
        return rebuild.replace("--trt-compat hardware", "--trt-compat version,hardware")
    return f"{rebuild} --trt-compat version"


def _version_problem(built: dict[str, Any], here: dict[str, str], rebuild: str) -> tuple[str, list[str]] | None:
    """(what differs, how to fix it) between the TensorRT an engine was built with and the runtime here."""
    want, have, found = _version3(built.get("tensorrt_version")), _version3(here["tensorrt_version"]), \
        here["tensorrt_version"]
    rebuild_here = f"rebuild it on this machine with `{rebuild}`"
    if here.get("runtime") == "tensorrt_lean":
        if not built.get("version_compatible"):
            return (f"it was built without version compatibility and this machine has only the TensorRT lean runtime "
                    f"{found}, which runs version-compatible engines only",
                    [f"install the full runtime (pip install 'tensorrt=={want}.*')",
                     f"rebuild it with `{_with_version_compat(rebuild)}`"])
        if want != have:  # the lean library runs the plans of its own version (the dispatch runtime is not used)
            return (f"the lean runtime runs version-compatible engines of its own version: TensorRT {want} expected, "
                    f"found tensorrt_lean {found}",
                    [f"install the lean runtime {want} (pip install 'tensorrt-lean=={want}.*')", rebuild_here])
        return None
    if not built.get("version_compatible") and want != have:
        return (f"TensorRT {want} expected, found {found}",
                [f"install TensorRT {want} (pip install 'tensorrt=={want}.*')", rebuild_here,
                 "export it with --trt-compat version so that later TensorRT versions run it"])
    if built.get("version_compatible") and _older(have, want):
        return (f"a version-compatible engine runs on TensorRT {want} or later, found {found}",
                [f"upgrade TensorRT (pip install 'tensorrt>={want}')", rebuild_here])
    return None


def _gpu_problem(built: dict[str, Any], here: dict[str, str], rebuild: str) -> tuple[str, list[str]] | None:
    """(what differs, how to fix it) between the GPU an engine was built for and the GPU here."""
    cc_built, cc_here = _cc(built.get("compute_capability")), here["compute_capability"]
    rebuild_here = f"rebuild it on this GPU with `{rebuild}`"
    if built.get("hardware_compatible"):
        if float(cc_here) < HARDWARE_COMPAT_MIN_CC:
            return (f"a hardware-compatible engine needs compute capability >= 8.0 (Ampere or later), found {cc_here}",
                    [rebuild_here])
        return None
    if cc_built == cc_here:
        return None
    fixes = [rebuild_here]
    if min(float(cc_built), float(cc_here)) >= HARDWARE_COMPAT_MIN_CC:
        fixes.append("export it with --trt-compat hardware so that every Ampere or later GPU runs it")
    return f"GPU {built.get('gpu')} (compute capability {cc_built}) expected, found {here['gpu']} ({cc_here})", fixes


def engine_mismatch(file: str, built: dict[str, Any], here: dict[str, str],
                    rebuild: str = "resnet-deploy export ... --trt") -> str | None:
    """Why an engine built with `built` info cannot run `here` (`running_info()`), or None when it can.

    Rules (TensorRT developer guide, "Engine Compatibility"): a plan runs only with the TensorRT version it was built
    with (major.minor.patch) and on a GPU of the same compute capability, unless it was built version-compatible
    (`info["version_compatible"]`: later TensorRT versions run it, and the lean runtime of its own version) or
    hardware-compatible (`info["hardware_compatible"]`, AMPERE_PLUS: any GPU of compute capability >= 8.0). The lean
    runtime runs version-compatible plans only. Another GPU model of the same compute capability only warns, as
    TensorRT itself does. The message names what differs and what to install or rebuild.
    """
    problems = [p for p in (_version_problem(built, here, rebuild), _gpu_problem(built, here, rebuild)) if p]
    if problems:
        fixes = list(dict.fromkeys(f for _, fs in problems for f in fs))
        return (f"{file} cannot run here: {'; '.join(d for d, _ in problems)}. To run it: {', or '.join(fixes)}; "
                "or use backend='onnx'")
    if built.get("gpu") and built.get("gpu") != here["gpu"] and not built.get("hardware_compatible"):
        warnings.warn(f"{file} was built on {built.get('gpu')}, running on {here['gpu']} (same compute capability); "
                      "TensorRT advises rebuilding for best speed", RuntimeWarning, stacklevel=2)
    return None


def engine_io(engine: Any, trt: Any) -> tuple[list[str], list[str]]:
    """(input names, output names) of an engine, by the name-based I/O API of TensorRT >= 10."""
    names = [engine.get_tensor_name(i) for i in range(engine.num_io_tensors)]
    inputs = [n for n in names if engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
    return inputs, [n for n in names if n not in inputs]


class TrtBackend:
    """Runs one TensorRT engine: device buffers for the largest batch, allocated once, reused by every call."""

    def __init__(self, engine: bytes, *, name: str, max_batch: int, input_name: str = "input",
                 output_name: str = "logits", version_compatible: bool = False) -> None:
        """`engine`: a plan's bytes (from `VerifiedFile.read()`); `name` names it in messages."""
        trt, _ = import_tensorrt()
        self._cudart = cudart = _import_cudart()
        self._local = threading.local()  # each calling thread's last device time
        self._runtime = trt.Runtime(trt.Logger(trt.Logger.WARNING))
        if version_compatible:
            # The plan embeds the lean runtime, i.e. host code: TensorRT runs it only when told the plan is trusted.
            # Loaded through the runtime, the bytes here are the ones whose checksum matched the bundle's manifest.
            self._runtime.engine_host_code_allowed = True
        self.engine = self._runtime.deserialize_cuda_engine(engine)
        if self.engine is None:
            raise BundleError(f"TensorRT could not deserialize {name} (see its log above); rebuild it "
                              "with `resnet-deploy export ... --trt`")
        inputs, outputs = engine_io(self.engine, trt)
        if inputs != [input_name] or outputs != [output_name]:
            raise BundleError(f"{name} has inputs {inputs} and outputs {outputs}; the manifest expects "
                              f"[{input_name!r}] and [{output_name!r}]")
        self.input_name, self.output_name = input_name, output_name
        profile_max = self.engine.get_tensor_profile_shape(input_name, 0)[2][0]
        self.max_batch = min(int(max_batch), int(profile_max))
        self.in_dtype = numpy_dtype(self.engine.get_tensor_dtype(input_name))
        self.out_dtype = numpy_dtype(self.engine.get_tensor_dtype(output_name))
        self.context = self.engine.create_execution_context()
        self._stream = _check(cudart, cudart.cudaStreamCreate())
        self._events = (_check(cudart, cudart.cudaEventCreate()), _check(cudart, cudart.cudaEventCreate()))
        self._allocate()
        self._lock = threading.Lock()

    def _allocate(self) -> None:
        cudart = self._cudart
        sample = tuple(self.engine.get_tensor_shape(self.input_name))[1:]  # (C, H, W); axis 0 is the dynamic batch
        classes = tuple(self.engine.get_tensor_shape(self.output_name))[1:]  # (K,)
        item_in, item_out = np.dtype(self.in_dtype).itemsize, np.dtype(self.out_dtype).itemsize
        self._d_in = _check(cudart, cudart.cudaMalloc(self.max_batch * int(np.prod(sample)) * item_in))
        self._d_out = _check(cudart, cudart.cudaMalloc(self.max_batch * int(np.prod(classes)) * item_out))
        self.context.set_tensor_address(self.input_name, int(self._d_in))
        self.context.set_tensor_address(self.output_name, int(self._d_out))

    def run(self, batch: np.ndarray) -> np.ndarray:
        """float32 (N, C, H, W) with N <= max_batch -> float32 logits (N, K); the kernels are timed by CUDA events."""
        if batch.shape[0] > self.max_batch:
            raise ResnetDeployError(f"batch of {batch.shape[0]} exceeds the engine's profile maximum {self.max_batch}")
        cudart = self._cudart
        x = np.ascontiguousarray(batch, dtype=self.in_dtype)
        start, end = self._events
        with self._lock:
            if not self.context.set_input_shape(self.input_name, tuple(x.shape)):
                raise ResnetDeployError(f"engine rejected input shape {tuple(x.shape)}")
            out = np.empty(tuple(self.context.get_tensor_shape(self.output_name)), dtype=self.out_dtype)
            h2d, d2h = cudart.cudaMemcpyKind.cudaMemcpyHostToDevice, cudart.cudaMemcpyKind.cudaMemcpyDeviceToHost
            _check(cudart, cudart.cudaMemcpyAsync(self._d_in, x.ctypes.data, x.nbytes, h2d, self._stream))
            _check(cudart, cudart.cudaEventRecord(start, self._stream))
            if not self.context.execute_async_v3(int(self._stream)):
                raise ResnetDeployError("TensorRT execute_async_v3 failed (see its log above)")
            _check(cudart, cudart.cudaEventRecord(end, self._stream))
            _check(cudart, cudart.cudaMemcpyAsync(out.ctypes.data, self._d_out, out.nbytes, d2h, self._stream))
            _check(cudart, cudart.cudaStreamSynchronize(self._stream))
            self._local.device_s = float(_check(cudart, cudart.cudaEventElapsedTime(start, end))) / 1e3
        return out.astype(np.float32, copy=False)

    def device_time_s(self) -> float | None:
        """Device time of the calling thread's last `run`: the engine's kernels, between two CUDA events (no copies)."""
        return getattr(self._local, "device_s", None)

    def describe(self) -> dict[str, str]:
        """The TensorRT runtime (full or lean), its version and the GPU the engine runs on."""
        info = running_info()
        return {"runtime": info["runtime"], "version": info["tensorrt_version"],
                "gpu": info["gpu"], "compute_capability": info["compute_capability"]}

    def close(self) -> None:
        """Free the device buffers, events and stream; the context goes before the engine (TensorRT's order)."""
        cudart = getattr(self, "_cudart", None)
        if cudart is None or getattr(self, "_stream", None) is None:
            return
        for ptr in (getattr(self, "_d_in", None), getattr(self, "_d_out", None)):
            if ptr is not None:
                cudart.cudaFree(ptr)
        for event in getattr(self, "_events", ()):
            cudart.cudaEventDestroy(event)
        cudart.cudaStreamDestroy(self._stream)
        self._stream = None
        self.context = None
        self.engine = None

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:  # interpreter shutdown: the CUDA bindings may already be gone
            pass
