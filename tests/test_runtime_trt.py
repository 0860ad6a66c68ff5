"""TensorRT backend on a CPU machine: the engine-compatibility rules, dtypes, and the whole call sequence against the
`tensorrt` / `tensorrt_lean` / `cuda.bindings.runtime` stand-ins of tests/trt_fakes.py (device memory faked by host
buffers; the same sequence runs against the real bindings' surface in tests/trt_conformance_cases.py). The real thing
runs in tests/test_runtime.py::test_tensorrt_engine_matches_onnx (@pytest.mark.gpu)."""

from __future__ import annotations

import sys
import threading
import types
from pathlib import Path

import numpy as np
import pytest
from trt_fakes import HERE, KERNEL_MS, SHAPE, K, Memory, W, fake_cudart, fake_trt

from resnet_deploy.runtime import BundleError, Predictor, ResnetDeployError, available_backends
from resnet_deploy.runtime import tensorrt_backend as trtb
from resnet_deploy.runtime.manifest import FileEntry, Manifest, write_manifest
from resnet_deploy.runtime.preprocess import Preprocess
from resnet_deploy.runtime.verified import VerifiedFile

REBUILD = "resnet-deploy export c.pt --out b-trt --trt"


def test_engine_mismatch_rule() -> None:
    assert trtb.engine_mismatch("model.fp16.engine", dict(HERE), HERE) is None
    assert trtb.engine_mismatch("e", {**HERE, "tensorrt_version": "10.13.0.99", "compute_capability": [8, 7]}, HERE) \
        is None  # build number and list form of the compute capability do not matter
    msg = trtb.engine_mismatch("model.fp16.engine", {**HERE, "tensorrt_version": "10.3.0.26"}, HERE, REBUILD)
    assert msg == ("model.fp16.engine cannot run here: TensorRT 10.3.0 expected, found 10.13.0.35. To run it: install "
                   "TensorRT 10.3.0 (pip install 'tensorrt==10.3.0.*'), or rebuild it on this machine with "
                   f"`{REBUILD}`, or export it with --trt-compat version so that later TensorRT versions run it; or "
                   "use backend='onnx'")
    msg = trtb.engine_mismatch("e", {**HERE, "gpu": "NVIDIA H100", "compute_capability": "9.0"}, HERE, REBUILD)
    assert msg == ("e cannot run here: GPU NVIDIA H100 (compute capability 9.0) expected, found NVIDIA Fake GPU "
                   f"(8.7). To run it: rebuild it on this GPU with `{REBUILD}`, or export it with --trt-compat "
                   "hardware so that every Ampere or later GPU runs it; or use backend='onnx'")
    with pytest.warns(RuntimeWarning, match="built on NVIDIA Other, running on NVIDIA Fake GPU"):
        assert trtb.engine_mismatch("e", {**HERE, "gpu": "NVIDIA Other"}, HERE) is None


PORTABLE = {"tensorrt_version": "10.8.0.43", "gpu": "X", "compute_capability": "9.0", "version_compatible": True,
            "hardware_compatible": True}
LEAN = {**HERE, "runtime": "tensorrt_lean"}


@pytest.mark.parametrize("built, here, expected", [
    (PORTABLE, HERE, None),  # a later 10.x and another Ampere-or-later GPU run it
    (PORTABLE, {**HERE, "compute_capability": "7.5"},
     "a hardware-compatible engine needs compute capability >= 8.0 (Ampere or later), found 7.5. To run it: rebuild "
     f"it on this GPU with `{REBUILD}`"),
    ({**PORTABLE, "tensorrt_version": "10.14.1.4"}, HERE,
     "a version-compatible engine runs on TensorRT 10.14.1 or later, found 10.13.0.35. To run it: upgrade TensorRT "
     f"(pip install 'tensorrt>=10.14.1'), or rebuild it on this machine with `{REBUILD}`"),
    ({**HERE, "version_compatible": True}, LEAN, None),  # the lean runtime of the builder's version
    (HERE, LEAN, "it was built without version compatibility and this machine has only the TensorRT lean runtime "
                 "10.13.0.35, which runs version-compatible engines only. To run it: install the full runtime (pip "
                 f"install 'tensorrt==10.13.0.*'), or rebuild it with `{REBUILD} --trt-compat version`"),
    (PORTABLE, LEAN, "the lean runtime runs version-compatible engines of its own version: TensorRT 10.8.0 expected, "
                     "found tensorrt_lean 10.13.0.35. To run it: install the lean runtime 10.8.0 (pip install "
                     f"'tensorrt-lean==10.8.0.*'), or rebuild it on this machine with `{REBUILD}`"),
])
def test_travelling_engines(built: dict, here: dict, expected: str | None) -> None:
    msg = trtb.engine_mismatch("model.int8.engine", built, here, REBUILD)
    assert msg == (None if expected is None else f"model.int8.engine cannot run here: {expected}; or use "
                                                 "backend='onnx'")


def test_numpy_dtype_by_trt_name() -> None:
    assert trtb.numpy_dtype(types.SimpleNamespace(name="HALF")) is np.float16
    assert trtb.numpy_dtype("DataType.FLOAT") is np.float32
    with pytest.raises(ResnetDeployError, match="engine tensor type BF16 is not supported"):
        trtb.numpy_dtype(types.SimpleNamespace(name="BF16"))


@pytest.fixture
def fake_gpu(monkeypatch: pytest.MonkeyPatch) -> types.SimpleNamespace:
    memory = Memory()
    trt, rt = fake_trt(memory), fake_cudart(memory)
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
    assert reasons["trt-fp32"] == "the trt-fp32 model runs on cuda only; on cpu use onnx or ov-fp32"
    assert "--int8 --trt" in reasons["trt-int8"]
    try:
        import tensorrt  # noqa: F401
    except ImportError:
        trtb.running_info.cache_clear()
        assert available_backends(engine_bundle, device="cuda")["trt-fp32"] == (
            "TensorRT is not installed: pip install tensorrt cuda-python (the full runtime, over 1 GB with its "
            "libraries), or pip install tensorrt-lean cuda-python (the lean runtime, ~44 MB, for engines exported "
            "with --trt-compat version)")


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
    assert p.device_time_s() is None  # nothing ran yet
    np.testing.assert_allclose(p.run(x), want, rtol=1e-5, atol=1e-4)
    assert p._runner.context._calls == [16, 16, 5]
    assert p.device_time_s() == KERNEL_MS / 1e3  # the CUDA events around the last execute_async_v3
    assert fake_gpu.trt._runtimes[-1].engine_host_code_allowed is False  # not a version-compatible plan
    results: dict[tuple[int, int], np.ndarray] = {}
    times: dict[int, float | None] = {}

    def work(t: int) -> None:
        times[t] = p.device_time_s()  # per thread: this one has not run yet
        for i in range(25):
            results[t, i] = p.run(x[(t + i) % 37:][:3])

    threads = [threading.Thread(target=work, args=(t,)) for t in range(8)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert len(results) == 200 and set(times.values()) == {None}
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


def test_tensorrt_deserializes_the_bytes_that_were_checked(fake_gpu: types.SimpleNamespace, engine_bundle: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    # An engine may carry host code: swapping the file after its check must not reach TensorRT.
    checked = VerifiedFile.read

    def read_then_swap(self: VerifiedFile) -> bytes:
        data = checked(self)
        (engine_bundle / self.name).write_bytes(b"garbage")
        return data

    monkeypatch.setattr(VerifiedFile, "read", read_then_swap)
    with Predictor.from_bundle(engine_bundle, backend="trt-fp32", device="cuda") as p:
        assert p.backend == "trt-fp32"
    with pytest.raises(BundleError, match="^bundle file model.fp32.engine does not match the manifest's blake3/size"):
        Predictor.from_bundle(engine_bundle, backend="trt-fp32", device="cuda")


def test_lean_runtime_runs_version_compatible_engines(fake_gpu: types.SimpleNamespace, engine_bundle: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """Without the full `tensorrt`, `tensorrt_lean` runs the engines built with --trt-compat version, and only those."""
    lean = fake_trt(fake_gpu.memory, name="tensorrt_lean")
    monkeypatch.setitem(sys.modules, "tensorrt", None)  # `import tensorrt` fails as if not installed
    monkeypatch.setitem(sys.modules, "tensorrt_lean", lean)
    trtb.running_info.cache_clear()
    (engine_bundle / "model.int8.engine").write_bytes(b"FAKEPLAN int8")
    files = [FileEntry.for_file(engine_bundle, "model.fp32.engine", "fp32", "engine", "trt", dict(HERE)),
             FileEntry.for_file(engine_bundle, "model.int8.engine", "int8", "engine", "trt",
                                {**HERE, "version_compatible": True, "lean_runtime_embedded": True})]
    pre = Preprocess(input_size=SHAPE[1:], channels=3, mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25))
    write_manifest(engine_bundle, Manifest("x", [f"c{i}" for i in range(K)], pre, files, batch=(1, 8, 16)))
    reasons = available_backends(engine_bundle, device="cuda")
    assert reasons["trt-int8"] is None
    assert reasons["trt-fp32"].startswith("model.fp32.engine cannot run here: it was built without version "
                                          "compatibility and this machine has only the TensorRT lean runtime")
    with Predictor.from_bundle(engine_bundle, backend="trt", device="cuda") as p:
        assert p.backend == "trt-int8" and p.describe()["runtime"] == "tensorrt_lean"
        assert lean._runtimes[-1].engine_host_code_allowed is True  # the plan embeds the lean runtime (host code)
        x = np.random.default_rng().standard_normal((3, *SHAPE), dtype=np.float32)
        np.testing.assert_allclose(p.run(x), x.reshape(3, -1) @ W.T, rtol=1e-5, atol=1e-4)
