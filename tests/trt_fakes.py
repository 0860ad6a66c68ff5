"""Stand-ins for `tensorrt` and `cuda.bindings.runtime`, for the tests that run where the real bindings cannot be had.

Where the real bindings can be fetched, tests/trt_conformance_cases.py runs the same code against mocks autospec'd
from the real classes and checks that every name these stand-ins define exists in the real modules (`SURFACE`).
Device memory is host memory here: an address is a numpy buffer's.
"""

from __future__ import annotations

import ctypes
import time
import types
from types import SimpleNamespace

import numpy as np

HERE = {"runtime": "tensorrt", "tensorrt_version": "10.13.0.35", "gpu": "NVIDIA Fake GPU", "compute_capability": "8.7"}
SHAPE, K = (3, 8, 8), 5
W = np.random.default_rng(1234).standard_normal((K, int(np.prod(SHAPE)))).astype(np.float32)  # the fake engine
KERNEL_MS = 0.25  # what the fake CUDA events say the kernels took


# ---- the builder side (export/tensorrt.py) ----

class FakeTRT:
    """Just enough of the tensorrt module's build API to record what the builder is told."""

    def __init__(self, version: str, parse_ok: bool = True) -> None:
        self.__version__ = version
        self._calls: dict = {"flags_set": [], "flags_cleared": []}
        names = ["TF32", "VERSION_COMPATIBLE"] + (["FP16", "INT8"] if version.startswith("10.") else [])
        self.BuilderFlag = SimpleNamespace(**{n: n for n in names})
        self.NetworkDefinitionCreationFlag = SimpleNamespace(STRONGLY_TYPED=5)
        self.MemoryPoolType = SimpleNamespace(WORKSPACE="workspace")
        self.HardwareCompatibilityLevel = SimpleNamespace(NONE="NONE", AMPERE_PLUS="AMPERE_PLUS")
        self.Logger = type("Logger", (), {"WARNING": 2, "__init__": lambda s, level: None})
        self._parse_ok = parse_ok
        trt = self

        class OnnxParser:
            num_errors = 0 if parse_ok else 1

            def __init__(self, network, logger):
                pass

            def parse_from_file(self, path):
                trt._calls.setdefault("parsed", []).append(path)
                return trt._parse_ok

            def get_error(self, i):
                return SimpleNamespace(desc=lambda: "Unsupported ONNX op: Foo", node=lambda: 7)

        self.OnnxParser = OnnxParser
        self.Builder = lambda logger: FakeBuilder(trt)


class FakeConfig:
    def __init__(self, calls: dict) -> None:
        self._calls = calls
        self.builder_optimization_level = 3
        self.hardware_compatibility_level = "NONE"

    def set_memory_pool_limit(self, pool, size):
        self._calls["workspace"] = (pool, size)

    def set_flag(self, f):
        self._calls["flags_set"].append(f)

    def clear_flag(self, f):
        self._calls["flags_cleared"].append(f)

    def add_optimization_profile(self, p):
        self._calls["profile"] = p._shapes

    def create_timing_cache(self, data):
        self._calls["cache_in"] = data
        return SimpleNamespace(serialize=lambda: data + b"+new")

    def set_timing_cache(self, cache, ignore_mismatch):  # positional, as TensorRT takes it
        self._calls["cache_set"] = ignore_mismatch


class FakeProfile:
    def __init__(self) -> None:
        self._shapes: dict = {}

    def set_shape(self, name, lo, opt, hi):
        self._shapes[name] = (lo, opt, hi)


class FakeBuilder:
    def __init__(self, trt: FakeTRT) -> None:
        self._trt = trt

    def create_network(self, flags):
        self._trt._calls["network_flags"] = flags
        return object()

    def create_builder_config(self):
        return FakeConfig(self._trt._calls)

    def create_optimization_profile(self):
        return FakeProfile()

    def build_serialized_network(self, network, config):
        self._trt._calls["opt_level"] = config.builder_optimization_level
        self._trt._calls["hardware_level"] = config.hardware_compatibility_level
        return b"ENGINE-BYTES"


# ---- the runtime side (runtime/tensorrt_backend.py) ----

class Memory(dict):
    """Fake device memory: address -> host buffer."""


def fake_cudart(memory: Memory) -> types.ModuleType:
    """cuda.bindings.runtime's calls that TrtBackend makes; stream 7, events numbered 1, 2, ... as created."""
    rt = types.ModuleType("cuda.bindings.runtime")
    rt.cudaError_t = SimpleNamespace(cudaSuccess=0)
    rt.cudaMemcpyKind = SimpleNamespace(cudaMemcpyHostToDevice=1, cudaMemcpyDeviceToHost=2)
    recorded: list[int] = []

    def cudaMalloc(n: int) -> tuple[int, int]:  # noqa: N802 (CUDA's names)
        buf = np.zeros(n, np.uint8)
        memory[buf.ctypes.data] = buf
        return 0, buf.ctypes.data

    def cudaMemcpyAsync(dst: int, src: int, n: int, kind: int, stream: int) -> tuple[int]:  # noqa: N802
        assert stream == 7 and kind in (1, 2)
        dev = dst if kind == 1 else src
        assert dev in memory and n <= memory[dev].nbytes, "copy outside a device buffer"
        ctypes.memmove(dst, src, n)
        return (0,)

    def cudaEventCreate() -> tuple[int, int]:  # noqa: N802
        recorded.append(len(recorded) + 1)
        return 0, recorded[-1]

    def cudaEventElapsedTime(start: int, end: int) -> tuple[int, float]:  # noqa: N802
        assert end == start + 1, "start and end events of one backend"
        return 0, KERNEL_MS

    rt.cudaMalloc, rt.cudaMemcpyAsync = cudaMalloc, cudaMemcpyAsync
    rt.cudaEventCreate, rt.cudaEventElapsedTime = cudaEventCreate, cudaEventElapsedTime
    rt.cudaEventRecord = lambda event, stream: (0,)
    rt.cudaEventDestroy = lambda event: (0,)
    rt.cudaFree = lambda p: (memory.pop(p) is not None and 0,)
    rt.cudaStreamCreate = lambda: (0, 7)
    rt.cudaStreamDestroy = lambda s: (0,)
    rt.cudaStreamSynchronize = lambda s: (0,)
    rt.cudaGetDeviceCount = lambda: (0, 1)
    rt.cudaGetDeviceProperties = lambda d: (0, SimpleNamespace(name=b"NVIDIA Fake GPU\x00\x00", major=8, minor=7))
    rt.cudaGetErrorName = lambda e: (0, b"cudaErrorFake")
    return rt


class FakeContext:
    """An execution context computing x @ W.T, that fails if two threads use it at once."""

    def __init__(self, memory: Memory) -> None:
        self._memory, self._addr, self._n, self._busy, self._calls = memory, {}, None, False, []

    def set_input_shape(self, name: str, shape: tuple[int, ...]) -> bool:
        assert name == "input"
        self._n = shape[0]
        return 1 <= shape[0] <= 16 and tuple(shape[1:]) == SHAPE

    def get_tensor_shape(self, name: str) -> tuple[int, ...]:
        return (self._n, K)

    def set_tensor_address(self, name: str, ptr: int) -> None:
        self._addr[name] = ptr

    def execute_async_v3(self, stream: int) -> bool:
        assert not self._busy, "execution context used by two threads at once"
        self._busy = True
        n = self._n
        x = self._memory[self._addr["input"]].view(np.float32)[: n * W.shape[1]].reshape(n, -1)
        self._memory[self._addr["logits"]].view(np.float32)[: n * K] = (x @ W.T).ravel()
        self._calls.append(n)
        time.sleep(0.0002)  # give another thread the chance to break in, were there no lock
        self._busy = False
        return True


def fake_engine(memory: Memory) -> SimpleNamespace:
    """An ICudaEngine with input "input" (N, *SHAPE), output "logits" (N, K), profile batch 1..16."""
    float32 = SimpleNamespace(name="FLOAT")
    return SimpleNamespace(
        num_io_tensors=2, get_tensor_name=["input", "logits"].__getitem__,
        get_tensor_mode=lambda n: "in" if n == "input" else "out",
        get_tensor_shape=lambda n: (-1, *SHAPE) if n == "input" else (-1, K),
        get_tensor_dtype=lambda n: float32,
        get_tensor_profile_shape=lambda n, p: [(1, *SHAPE), (8, *SHAPE), (16, *SHAPE)],
        create_execution_context=lambda: FakeContext(memory))


def fake_trt(memory: Memory, name: str = "tensorrt", version: str = HERE["tensorrt_version"]) -> types.ModuleType:
    """A `tensorrt` (or `tensorrt_lean`) module whose Runtime deserializes plans that start with b"FAKEPLAN"."""
    trt = types.ModuleType(name)
    trt.__version__ = version
    trt.TensorIOMode = SimpleNamespace(INPUT="in", OUTPUT="out")
    trt.Logger = type("Logger", (), {"WARNING": 2, "__init__": lambda self, level: None})
    engine = fake_engine(memory)
    runtimes: list = []

    class Runtime:
        def __init__(self, logger: object) -> None:
            self.engine_host_code_allowed = False
            runtimes.append(self)

        def deserialize_cuda_engine(self, data: bytes) -> object:
            return engine if data.startswith(b"FAKEPLAN") else None

    trt.Runtime = Runtime
    trt._runtimes = runtimes  # what the tests read back
    return trt


def public_names(obj: object) -> set[str]:
    """The names a stand-in defines for the code under test: its public attributes (dunder and _private excluded)."""
    if isinstance(obj, type):
        names = set(dir(obj)) - set(dir(object))
    else:
        names = set(vars(obj)) | (set(dir(type(obj))) - set(dir(object)) if not isinstance(obj, (
            SimpleNamespace, types.ModuleType)) else set())
    return {n for n in names if not n.startswith("_")}


def standin_surfaces(version: str) -> dict[str, set[str]]:
    """Real `tensorrt` attribute ("" for the module itself) -> the names the stand-ins give it, for TensorRT `version`.

    The conformance cases check each set against the real bindings of that version.
    """
    build, memory = FakeTRT(version), Memory()
    run = fake_trt(memory)
    config = FakeConfig({})
    engine = fake_engine(memory)
    out = {"": public_names(build) | public_names(run) | {"__version__"}}
    for name in ("BuilderFlag", "NetworkDefinitionCreationFlag", "MemoryPoolType", "HardwareCompatibilityLevel",
                 "Logger", "OnnxParser"):
        out[name] = public_names(getattr(build, name))
    out["ParserError"] = public_names(build.OnnxParser(None, None).get_error(0))
    out["TensorIOMode"] = public_names(run.TensorIOMode)
    out["Runtime"] = public_names(run.Runtime(None))
    out["IBuilderConfig"] = public_names(config)
    out["ITimingCache"] = public_names(config.create_timing_cache(b""))
    out["IOptimizationProfile"] = public_names(FakeProfile())
    out["Builder"] = public_names(FakeBuilder)
    out["ICudaEngine"] = public_names(engine)
    out["IExecutionContext"] = public_names(FakeContext(memory))
    out["DataType"] = {engine.get_tensor_dtype("input").name}
    return out


def cudart_surface() -> dict[str, set[str]]:
    """Real `cuda.bindings.runtime` attribute ("" for the module) -> the names the cudart stand-in gives it."""
    rt = fake_cudart(Memory())
    return {"": public_names(rt), "cudaError_t": public_names(rt.cudaError_t),
            "cudaMemcpyKind": public_names(rt.cudaMemcpyKind)}
