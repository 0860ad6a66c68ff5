"""TensorRT backend on a CPU machine: the engine-compatibility rule, dtypes, and the whole call sequence against fake
`tensorrt` and `cuda.bindings.runtime` modules (device memory faked by host buffers). The real thing runs in
tests/test_runtime.py::test_tensorrt_engine_matches_onnx (@pytest.mark.gpu)."""

from __future__ import annotations

import ctypes
import sys
import threading
import time
import types
from pathlib import Path

import numpy as np
import pytest

from resnet_deploy.runtime import Predictor, ResnetDeployError, available_backends
from resnet_deploy.runtime import tensorrt_backend as trtb
from resnet_deploy.runtime.manifest import FileEntry, Manifest, write_manifest
from resnet_deploy.runtime.preprocess import Preprocess

HERE = {"tensorrt_version": "10.13.0.35", "gpu": "NVIDIA Fake GPU", "compute_capability": "8.7"}
SHAPE, K = (3, 8, 8), 5
W = np.random.default_rng(1234).standard_normal((K, int(np.prod(SHAPE)))).astype(np.float32)  # the fake engine


def test_engine_mismatch_rule() -> None:
    assert trtb.engine_mismatch("model.fp16.engine", dict(HERE), HERE) is None
    assert trtb.engine_mismatch("e", {**HERE, "tensorrt_version": "10.13.0.99", "compute_capability": [8, 7]}, HERE) \
        is None  # build number and list form of the compute capability do not matter
    msg = trtb.engine_mismatch("model.fp16.engine", {**HERE, "tensorrt_version": "10.3.0.26"}, HERE)
    assert msg.startswith("model.fp16.engine cannot run here: TensorRT 10.3.0 expected, found 10.13.0.35.")
    assert "rebuild them on this machine with `resnet-deploy export ... --trt`, or use backend='onnx'" in msg
    msg = trtb.engine_mismatch("e", {**HERE, "gpu": "NVIDIA H100", "compute_capability": "9.0"}, HERE)
    assert "GPU NVIDIA H100 (compute capability 9.0) expected, found NVIDIA Fake GPU (8.7)" in msg
    with pytest.warns(RuntimeWarning, match="built on NVIDIA Other, running on NVIDIA Fake GPU"):
        assert trtb.engine_mismatch("e", {**HERE, "gpu": "NVIDIA Other"}, HERE) is None
    portable = {"tensorrt_version": "10.1.0", "gpu": "X", "compute_capability": "9.0", "version_compatible": True,
                "hardware_compatible": True}
    assert trtb.engine_mismatch("e", portable, HERE) is None
    msg = trtb.engine_mismatch("e", portable, {**HERE, "compute_capability": "7.5"})
    assert "hardware-compatible engine needs compute capability >= 8.0, found 7.5" in msg


def test_numpy_dtype_by_trt_name() -> None:
    assert trtb.numpy_dtype(types.SimpleNamespace(name="HALF")) is np.float16
    assert trtb.numpy_dtype("DataType.FLOAT") is np.float32
    with pytest.raises(ResnetDeployError, match="engine tensor type BF16 is not supported"):
        trtb.numpy_dtype(types.SimpleNamespace(name="BF16"))


# ---- fakes: just enough of tensorrt and cuda.bindings.runtime for TrtBackend's call sequence ----

class _Memory(dict):
    """Fake device memory: address -> host buffer."""


def _fake_cudart(memory: _Memory) -> types.ModuleType:
    rt = types.ModuleType("cuda.bindings.runtime")
    rt.cudaError_t = types.SimpleNamespace(cudaSuccess=0)
    rt.cudaMemcpyKind = types.SimpleNamespace(cudaMemcpyHostToDevice=1, cudaMemcpyDeviceToHost=2)

    def malloc(n: int) -> tuple[int, int]:
        buf = np.zeros(n, np.uint8)
        memory[buf.ctypes.data] = buf
        return 0, buf.ctypes.data

    def memcpy(dst: int, src: int, n: int, kind: int, stream: int) -> tuple[int]:
        assert stream == 7 and kind in (1, 2)
        dev = dst if kind == 1 else src
        assert dev in memory and n <= memory[dev].nbytes, "copy outside a device buffer"
        ctypes.memmove(dst, src, n)
        return (0,)

    rt.cudaMalloc = malloc
    rt.cudaMemcpyAsync = memcpy
    rt.cudaFree = lambda p: (memory.pop(p) is not None and 0,)
    rt.cudaStreamCreate = lambda: (0, 7)
    rt.cudaStreamDestroy = lambda s: (0,)
    rt.cudaStreamSynchronize = lambda s: (0,)
    rt.cudaGetDeviceCount = lambda: (0, 1)
    rt.cudaGetDeviceProperties = lambda d: (0, types.SimpleNamespace(name=b"NVIDIA Fake GPU\x00\x00", major=8, minor=7))
    rt.cudaGetErrorName = lambda e: (0, b"cudaErrorFake")
    return rt


class _Context:
    def __init__(self, memory: _Memory) -> None:
        self.memory, self.addr, self.n, self.busy, self.calls = memory, {}, None, False, []

    def set_input_shape(self, name: str, shape: tuple[int, ...]) -> bool:
        assert name == "input"
        self.n = shape[0]
        return 1 <= shape[0] <= 16 and tuple(shape[1:]) == SHAPE

    def get_tensor_shape(self, name: str) -> tuple[int, ...]:
        return (self.n, K)

    def set_tensor_address(self, name: str, ptr: int) -> None:
        self.addr[name] = ptr

    def execute_async_v3(self, stream: int) -> bool:
        assert not self.busy, "execution context used by two threads at once"
        self.busy = True
        x = self.memory[self.addr["input"]].view(np.float32)[: self.n * W.shape[1]].reshape(self.n, -1)
        self.memory[self.addr["logits"]].view(np.float32)[: self.n * K] = (x @ W.T).ravel()
        self.calls.append(self.n)
        time.sleep(0.0002)  # give another thread the chance to break in, were there no lock
        self.busy = False
        return True


def _fake_trt(memory: _Memory) -> types.ModuleType:
    trt = types.ModuleType("tensorrt")
    trt.__version__ = HERE["tensorrt_version"]
    trt.TensorIOMode = types.SimpleNamespace(INPUT="in", OUTPUT="out")
    trt.Logger = type("Logger", (), {"WARNING": 2, "__init__": lambda self, level: None})
    float32 = types.SimpleNamespace(name="FLOAT")
    engine = types.SimpleNamespace(
        num_io_tensors=2, get_tensor_name=["input", "logits"].__getitem__,
        get_tensor_mode=lambda n: "in" if n == "input" else "out",
        get_tensor_shape=lambda n: (-1, *SHAPE) if n == "input" else (-1, K),
        get_tensor_dtype=lambda n: float32,
        get_tensor_profile_shape=lambda n, p: [(1, *SHAPE), (8, *SHAPE), (16, *SHAPE)],
        create_execution_context=lambda: _Context(memory))

    class Runtime:
        def __init__(self, logger: object) -> None:
            pass

        def deserialize_cuda_engine(self, data: bytes) -> object:
            return engine if data.startswith(b"FAKEPLAN") else None

    trt.Runtime = Runtime
    return trt


@pytest.fixture
def fake_gpu(monkeypatch: pytest.MonkeyPatch) -> types.SimpleNamespace:
    memory = _Memory()
    trt, rt = _fake_trt(memory), _fake_cudart(memory)
    bindings = types.ModuleType("cuda.bindings")
    bindings.runtime = rt
    cuda = types.ModuleType("cuda")
    cuda.bindings = bindings
    for name, mod in {"tensorrt": trt, "cuda": cuda, "cuda.bindings": bindings, "cuda.bindings.runtime": rt}.items():
        monkeypatch.setitem(sys.modules, name, mod)
    trtb.running_info.cache_clear()
    yield types.SimpleNamespace(memory=memory, trt=trt)
    trtb.running_info.cache_clear()


@pytest.fixture
def engine_bundle(tmp_path: Path) -> Path:
    """A bundle with two fake engines: fp32 built here, fp16 built with another TensorRT version."""
    (tmp_path / "model.fp32.engine").write_bytes(b"FAKEPLAN fp32")
    (tmp_path / "model.fp16.engine").write_bytes(b"FAKEPLAN fp16")
    files = [FileEntry.for_file(tmp_path, "model.fp32.engine", "fp32", "engine", "trt", dict(HERE)),
             FileEntry.for_file(tmp_path, "model.fp16.engine", "fp16", "engine", "trt",
                                {**HERE, "tensorrt_version": "10.3.0.26"})]
    pre = Preprocess(input_size=SHAPE[1:], channels=3, mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25))
    write_manifest(tmp_path, Manifest("cifar_resnet20", [f"c{i}" for i in range(K)], pre, files, batch=(1, 8, 16)))
    return tmp_path


def test_engines_need_cuda_and_tensorrt(engine_bundle: Path) -> None:
    reasons = available_backends(engine_bundle, device="cpu")
    assert reasons["trt-fp32"] == "the trt-fp32 model runs on cuda only; on cpu use onnx"
    assert "--int8 --trt" in reasons["trt-int8"]
    try:
        import tensorrt  # noqa: F401
    except ImportError:
        trtb.running_info.cache_clear()
        assert "tensorrt is not installed" in available_backends(engine_bundle, device="cuda")["trt-fp32"]


def test_trt_backend_runs_splits_and_locks(fake_gpu: types.SimpleNamespace, engine_bundle: Path) -> None:
    reasons = available_backends(engine_bundle, device="cuda")
    assert reasons["trt-fp32"] is None and "TensorRT 10.3.0 expected, found 10.13.0.35" in reasons["trt-fp16"]
    with pytest.raises(ResnetDeployError, match="model.fp16.engine cannot run here: TensorRT 10.3.0 expected"):
        Predictor.from_bundle(engine_bundle, backend="trt-fp16", device="cuda")
    p = Predictor.from_bundle(engine_bundle, backend="trt", device="cuda")
    assert p.backend == "trt-fp32" and "skipped trt-fp16: model.fp16.engine cannot run here" in p.why
    assert f"`resnet-deploy export CHECKPOINT --out {engine_bundle.name}-trt --trt --fp16`" in p.why
    assert Predictor.from_bundle(engine_bundle, device="cuda").backend == "trt-fp32"  # auto
    x = np.random.default_rng().standard_normal((37, *SHAPE), dtype=np.float32)
    want = x.reshape(37, -1) @ W.T
    np.testing.assert_allclose(p.run(x), want, rtol=1e-5, atol=1e-4)
    assert p._runner.context.calls == [16, 16, 5]
    results: dict[tuple[int, int], np.ndarray] = {}

    def work(t: int) -> None:
        for i in range(25):
            results[t, i] = p.run(x[(t + i) % 37:][:3])

    threads = [threading.Thread(target=work, args=(t,)) for t in range(8)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert len(results) == 200
    for (t, i), got in results.items():
        np.testing.assert_allclose(got, want[(t + i) % 37:][:3], rtol=1e-5, atol=1e-4)
    preds = p.predict(np.random.default_rng().integers(0, 256, (2, 8, 8, 3), dtype=np.uint8), topk=2)
    assert [len(q.topk) for q in preds] == [2, 2]
    p.close()
    assert len(fake_gpu.memory) == 0  # both device buffers freed


def test_undeserializable_engine_is_a_bundle_error(fake_gpu: types.SimpleNamespace, engine_bundle: Path) -> None:
    (engine_bundle / "model.fp32.engine").write_bytes(b"garbage")
    files = [FileEntry.for_file(engine_bundle, "model.fp32.engine", "fp32", "engine", "trt", dict(HERE))]
    pre = Preprocess(input_size=SHAPE[1:], channels=3, mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25))
    write_manifest(engine_bundle, Manifest("x", [f"c{i}" for i in range(K)], pre, files))
    with pytest.raises(ResnetDeployError, match="TensorRT could not deserialize model.fp32.engine"):
        Predictor.from_bundle(engine_bundle, backend="trt-fp32", device="cuda")
