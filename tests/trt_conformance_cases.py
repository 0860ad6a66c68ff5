"""The engine build and the TensorRT backend against the REAL TensorRT bindings' surface, one version per process.

Started by tests/test_trt_conformance.py in a process whose `import tensorrt` is the real bindings of TensorRT 10.x or
11.x (tests/trt_real.py): every TensorRT object the code touches is a mock autospec'd from the real class with
`spec_set` (a misspelt or removed attribute, method or property is an AttributeError), every method call is checked
against the signatures in the real docstrings (argument count and enum types), enums are the real members, and the
CUDA runtime functions are autospec'd from the real `cuda.bindings.runtime`. Only what needs TensorRT's libraries or
a GPU (the engine itself, device memory) is behaviour from tests/trt_fakes.py.
"""

from __future__ import annotations

import os
import re
import sys
import types
from pathlib import Path
from typing import Any
from unittest import mock

import numpy as np
import pytest
import trt_fakes

MAJOR = os.environ.get("RESNET_DEPLOY_TRT_MAJOR")
pytestmark = pytest.mark.skipif(MAJOR is None, reason="run by tests/test_trt_conformance.py, in a process whose "
                                                      "`import tensorrt` is the real bindings")
if MAJOR is not None:
    import tensorrt as trt
    import tensorrt_lean
    from cuda.bindings import runtime as real_cudart

_TYPES = {"int": int, "SupportsInt": int, "str": str, "bool": bool}


# ---- conforming mocks ----

def _params(text: str) -> list[tuple[str, str, bool]]:
    """'self: A, x: B[C, D] = 0' -> [(name, type, has_default)], splitting on top-level commas only."""
    out, depth, part = [], 0, ""
    for ch in text + ",":
        depth += (ch in "[(") - (ch in "])")
        if ch == "," and depth == 0:
            if part.strip():
                name, _, rest = part.strip().partition(":")
                out.append((name.strip(), rest.split("=")[0].strip(), "=" in rest))
            part = ""
        else:
            part += ch
    return out


def signatures(cls: type, name: str) -> list[list[tuple[str, str, bool]]]:
    """Every overload of `cls.name` from its pybind11 docstring, without `self`."""
    doc = getattr(cls, name).__doc__ or ""
    found = re.findall(rf"^(?:\d+\. )?{re.escape(name)}\((.*)\) -> ", doc, flags=re.M)
    return [[p for p in _params(s) if p[0] != "self"] for s in found if s != "*args, **kwargs"]


def _type_ok(value: Any, annotation: str) -> bool:
    short = annotation.split(".")[-1].strip("'\"")
    real = getattr(trt, short, None)
    if isinstance(real, type) and hasattr(real, "__members__"):  # a TensorRT enum: only its real members pass
        return isinstance(value, real)
    want = _TYPES.get(short)
    return want is None or (isinstance(value, want) and not (want is int and isinstance(value, bool)))


def _fits(overload: list[tuple[str, str, bool]], args: tuple, kwargs: dict) -> bool:
    names = [p[0] for p in overload]
    if len(args) > len(overload) or set(kwargs) - set(names[len(args):]):
        return False
    given = dict(zip(names, args, strict=False)) | kwargs
    if any(name not in given and not default for name, _, default in overload):
        return False
    return all(_type_ok(given[name], ann) for name, ann, _ in overload if name in given)


def checked(cls: type, name: str, impl: Any = None) -> Any:
    """A side effect that fails unless the call fits one of the real overloads, then runs `impl` (if any)."""
    overloads = signatures(cls, name)

    def call(*args: Any, **kwargs: Any) -> Any:
        if overloads and not any(_fits(o, args, kwargs) for o in overloads):
            raise TypeError(f"{cls.__name__}.{name}{args} does not fit the real signature(s) {overloads}")
        return impl(*args, **kwargs) if impl is not None else mock.DEFAULT
    return call


def conforming(cls: type, impl: Any = None, **values: Any) -> Any:
    """An instance mock with exactly the real class's attributes; methods checked against the real signatures and
    served by `impl`'s methods of the same name; properties set from `values` (or `impl`'s attributes)."""
    m = mock.create_autospec(cls, instance=True, spec_set=True)
    for name in dir(cls):
        if name.startswith("_"):
            continue
        if isinstance(getattr(cls, name), property):
            if impl is not None and name in vars(impl) and not callable(vars(impl)[name]):
                setattr(m, name, vars(impl)[name])
            continue
        if callable(getattr(cls, name)):
            target = values.pop(name, None) or getattr(impl, name, None)
            getattr(m, name).side_effect = checked(cls, name, target)
    for name, value in values.items():
        setattr(m, name, value)
    return m


def constructor(cls: type, make: Any) -> Any:
    """A stand-in for `cls(...)` that checks the real __init__ signature, then returns `make()`."""
    return checked(cls, "__init__", lambda *args, **kwargs: make())


# ---- the real surface itself ----

def test_the_real_bindings_are_loaded() -> None:
    assert trt.__version__.split(".")[0] == MAJOR and trt.Builder.__module__.startswith("tensorrt_bindings")
    assert tensorrt_lean.__version__ == trt.__version__
    with pytest.raises(TypeError, match="nullptr"):  # the stub libraries are loaded, not TensorRT's
        trt.Builder(trt.Logger(trt.Logger.WARNING))
    assert ("FP16" in trt.BuilderFlag.__members__) is (MAJOR == "10")  # 11.x removed the precision flags


def test_standins_are_a_subset_of_the_real_api() -> None:
    for where, names in trt_fakes.standin_surfaces(trt.__version__).items():
        real = trt if where == "" else getattr(trt, where)
        missing = sorted(n for n in names if not hasattr(real, n))
        assert not missing, f"tests/trt_fakes.py gives tensorrt{'.' + where if where else ''} {missing}, which " \
                            f"TensorRT {trt.__version__} does not have"
    for where, names in trt_fakes.cudart_surface().items():
        real = real_cudart if where == "" else getattr(real_cudart, where)
        assert not sorted(n for n in names if not hasattr(real, n)), where


# ---- the engine build (export/tensorrt.py) ----

def build_module(record: dict, parse_ok: bool = True) -> types.ModuleType:
    """A `tensorrt` whose Builder and OnnxParser are conforming mocks; everything else is the real module's."""
    proxy = types.ModuleType("tensorrt")
    proxy.__dict__.update({k: v for k, v in vars(trt).items() if not k.startswith("__")}, __version__=trt.__version__)

    def config() -> Any:
        cache = conforming(trt.ITimingCache, serialize=lambda: b"timings")
        record["config"] = conforming(trt.IBuilderConfig, create_timing_cache=lambda data: cache,
                                      set_timing_cache=lambda c, ignore: True)
        return record["config"]

    def builder() -> Any:
        record["profile"] = conforming(trt.IOptimizationProfile)
        record["builder"] = conforming(trt.Builder, create_network=lambda flags=0: conforming(trt.INetworkDefinition),
                                       create_builder_config=config,
                                       create_optimization_profile=lambda: record["profile"],
                                       build_serialized_network=lambda network, cfg: b"PLAN")
        return record["builder"]

    def parser() -> Any:
        error = conforming(trt.ParserError, desc=lambda: "Unsupported ONNX data type: FLOAT8E4M3FN", node=lambda: 4)
        record["parser"] = conforming(trt.OnnxParser, parse_from_file=lambda path: parse_ok,
                                      get_error=lambda i: error, num_errors=0 if parse_ok else 1)
        return record["parser"]

    proxy.Builder = constructor(trt.Builder, builder)
    proxy.OnnxParser = constructor(trt.OnnxParser, parser)
    return proxy


def _cases() -> list[tuple[str, str]]:
    from resnet_deploy.export.tensorrt import COMPAT
    from resnet_deploy.runtime import variants

    compat = ["none", *COMPAT, "version,hardware"]
    precisions = [v.precision for v in variants.engines()]
    return [(p, c) for p in precisions for c in compat if not (p == "fp8" and "hardware" in c)]


@pytest.mark.parametrize("precision, compat", _cases() if MAJOR else [])
def test_engine_build_conforms(precision: str, compat: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from resnet_deploy.export import tensorrt as rt
    from resnet_deploy.runtime import variants
    from resnet_deploy.runtime.errors import ResnetDeployError

    if precision == "fp8" and MAJOR == "10":
        with pytest.raises(ResnetDeployError, match="fp8 engines are built by TensorRT 11"):
            rt.plan_build(int(MAJOR), variants.get(f"trt-{precision}"), compat=compat)
        return
    monkeypatch.setattr(rt, "cuda_device_info", lambda device=0: {"gpu": "NVIDIA H200", "compute_capability": "9.0"})
    plan = rt.plan_build(rt.trt_major(trt), variants.get(f"trt-{precision}"), compat=compat)
    record: dict = {}
    info = rt.build_engine(tmp_path, plan, (3, 8, 8), (1, 4, 8), 1 << 28, tmp_path / "timing.cache", 4,
                           build_module(record))
    config = record["config"]
    assert [c.args[0] for c in config.set_flag.call_args_list] == [getattr(trt.BuilderFlag, f) for f in plan.set_flags]
    assert all(isinstance(c.args[0], trt.BuilderFlag) for c in config.clear_flag.call_args_list)
    assert config.set_memory_pool_limit.call_args.args == (trt.MemoryPoolType.WORKSPACE, 1 << 28)
    assert config.builder_optimization_level == 4
    if "hardware" in compat:
        assert config.hardware_compatibility_level == trt.HardwareCompatibilityLevel.AMPERE_PLUS
    typed = 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED)
    assert record["builder"].create_network.call_args.args == (typed if MAJOR == "11" else 0,)
    assert record["profile"].set_shape.call_args.args == ("input", (1, 3, 8, 8), (4, 3, 8, 8), (8, 3, 8, 8))
    assert (tmp_path / plan.engine).read_bytes() == b"PLAN" and (tmp_path / "timing.cache").read_bytes() == b"timings"
    assert info["version_compatible"] is ("version" in compat) and info["tensorrt_version"] == trt.__version__


def test_parser_errors_conform(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from resnet_deploy.export import tensorrt as rt
    from resnet_deploy.runtime import variants
    from resnet_deploy.runtime.errors import ResnetDeployError

    monkeypatch.setattr(rt, "cuda_device_info", lambda device=0: {"gpu": "NVIDIA H200", "compute_capability": "9.0"})
    with pytest.raises(ResnetDeployError, match=r"cannot parse model.onnx: Unsupported ONNX data type: FLOAT8E4M3FN "
                                                r"\(node 4\)"):
        rt.build_engine(tmp_path, rt.plan_build(int(MAJOR), variants.get("trt-fp32")), (3, 8, 8), (1, 1, 1),
                        trt=build_module({}, False))


# ---- the TensorRT backend (runtime/tensorrt_backend.py) ----

def run_module(real: types.ModuleType, memory: trt_fakes.Memory, record: dict) -> types.ModuleType:
    """A `tensorrt` (or `tensorrt_lean`) whose Runtime, engine and context conform to `real`'s classes."""
    proxy = types.ModuleType(real.__name__)
    proxy.__dict__.update({k: v for k, v in vars(real).items() if not k.startswith("__")}, __version__=real.__version__)
    fake = trt_fakes.fake_engine(memory)
    impl = types.SimpleNamespace(**{**vars(fake), "get_tensor_dtype": lambda name: real.DataType.FLOAT,
                                    "get_tensor_mode": lambda name: real.TensorIOMode.INPUT if name == "input"
                                    else real.TensorIOMode.OUTPUT,
                                    "create_execution_context": lambda: record.setdefault(
                                        "context", conforming(real.IExecutionContext, trt_fakes.FakeContext(memory)))})

    def runtime() -> Any:
        engine = conforming(real.ICudaEngine, impl)
        record["runtime"] = conforming(real.Runtime, deserialize_cuda_engine=lambda data: engine)
        return record["runtime"]

    proxy.Runtime = constructor(real.Runtime, runtime)
    return proxy


def cudart_module(memory: trt_fakes.Memory) -> types.ModuleType:
    """`cuda.bindings.runtime` with the real functions' signatures and enums, device memory from trt_fakes."""
    fake, proxy = trt_fakes.fake_cudart(memory), types.ModuleType("cuda.bindings.runtime")
    success = real_cudart.cudaError_t.cudaSuccess

    def wrap(fn: Any) -> Any:
        def call(*args: Any) -> Any:
            err, *rest = fn(*args)
            return (success if err == 0 else err, *rest)
        return call

    for name in trt_fakes.cudart_surface()[""]:
        real = getattr(real_cudart, name)
        if isinstance(real, type):
            setattr(proxy, name, real)  # the real enums
        else:
            setattr(proxy, name, mock.create_autospec(real, side_effect=wrap(getattr(fake, name))))
    prop = mock.create_autospec(real_cudart.cudaDeviceProp, instance=True, spec_set=True)
    prop.name, prop.major, prop.minor = b"NVIDIA H200\x00", 9, 0
    proxy.cudaGetDeviceProperties = mock.create_autospec(real_cudart.cudaGetDeviceProperties,
                                                         side_effect=lambda d: (success, prop))
    return proxy


@pytest.fixture
def gpu(monkeypatch: pytest.MonkeyPatch) -> types.SimpleNamespace:
    import cuda.bindings

    from resnet_deploy.runtime import tensorrt_backend as trtb

    memory, record = trt_fakes.Memory(), {}
    cudart = cudart_module(memory)
    monkeypatch.setitem(sys.modules, "cuda.bindings.runtime", cudart)
    monkeypatch.setattr(cuda.bindings, "runtime", cudart)
    monkeypatch.setitem(sys.modules, "tensorrt", run_module(trt, memory, record))
    monkeypatch.setitem(sys.modules, "tensorrt_lean", run_module(tensorrt_lean, memory, record))
    trtb.running_info.cache_clear()
    yield types.SimpleNamespace(memory=memory, record=record, cudart=cudart)
    trtb.running_info.cache_clear()


def engine_bundle(path: Path, **info: Any) -> Path:
    from resnet_deploy.runtime.manifest import FileEntry, Manifest, write_manifest
    from resnet_deploy.runtime.preprocess import Preprocess

    (path / "model.fp16.engine").write_bytes(b"FAKEPLAN")
    here = {"tensorrt_version": trt.__version__, "gpu": "NVIDIA H200", "compute_capability": "9.0", **info}
    pre = Preprocess(input_size=trt_fakes.SHAPE[1:], channels=3, mean=(0.5,) * 3, std=(0.25,) * 3)
    files = [FileEntry.for_file(path, "model.fp16.engine", "fp16", "engine", "trt", here)]
    write_manifest(path, Manifest("x", [f"c{i}" for i in range(trt_fakes.K)], pre, files, batch=(1, 8, 16)))
    return path


@pytest.mark.parametrize("runtime", ["tensorrt", "tensorrt_lean"])
def test_backend_conforms(runtime: str, gpu: types.SimpleNamespace, tmp_path: Path,
                          monkeypatch: pytest.MonkeyPatch) -> None:
    from resnet_deploy.runtime import Predictor

    if runtime == "tensorrt_lean":
        monkeypatch.setitem(sys.modules, "tensorrt", None)  # only the lean runtime is installed
    bundle = engine_bundle(tmp_path, version_compatible=True)
    x = np.random.default_rng().standard_normal((19, *trt_fakes.SHAPE), dtype=np.float32)
    with Predictor.from_bundle(bundle, backend="trt-fp16", device="cuda") as p:
        np.testing.assert_allclose(p.run(x), x.reshape(19, -1) @ trt_fakes.W.T, rtol=1e-5, atol=1e-4)
        assert p.device_time_s() == trt_fakes.KERNEL_MS / 1e3
        assert p.describe()["runtime"] == runtime and p.describe()["gpu"] == "NVIDIA H200"
    assert gpu.record["runtime"].engine_host_code_allowed is True  # a version-compatible plan
    assert gpu.record["context"].execute_async_v3.call_count == 2 and not gpu.memory  # 16 + 3; all freed
    assert gpu.cudart.cudaEventRecord.call_count == 4 and gpu.cudart.cudaEventDestroy.call_count == 2


def test_lean_runtime_refuses_plain_engines(gpu: types.SimpleNamespace, tmp_path: Path,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    from resnet_deploy.runtime import Predictor, ResnetDeployError

    monkeypatch.setitem(sys.modules, "tensorrt", None)
    with pytest.raises(ResnetDeployError, match="only the TensorRT lean runtime"):
        Predictor.from_bundle(engine_bundle(tmp_path), backend="trt-fp16", device="cuda")
