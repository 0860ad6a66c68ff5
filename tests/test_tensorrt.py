"""TensorRT engine building: the logic that needs no GPU, against a fake `tensorrt` module; the real build is
`@pytest.mark.gpu`."""

from __future__ import annotations

import importlib.util
import sys
from types import SimpleNamespace

import pytest

from resnet_deploy.export import tensorrt as rt
from resnet_deploy.runtime.errors import ResnetDeployError


@pytest.mark.parametrize("spec, expected", [("1:8:32", (1, 8, 32)), ("4:4:4", (4, 4, 4)), ((2, 3, 9), (2, 3, 9))])
def test_parse_batch(spec, expected):
    assert rt.parse_batch(spec) == expected


@pytest.mark.parametrize("spec, message", [
    ("8:1:4", "needs 1 <= MIN <= OPT <= MAX; found 8:1:4"),
    ("0:1:4", "needs 1 <= MIN <= OPT <= MAX; found 0:1:4"),
    ("1:8", "must be MIN:OPT:MAX with three integers"),
    ("a:b:c", "must be MIN:OPT:MAX with three integers"),
])
def test_parse_batch_rejects(spec, message):
    with pytest.raises(ResnetDeployError, match=message.replace("(", r"\(")):
        rt.parse_batch(spec)


@pytest.mark.parametrize("version, major", [("10.3.0.26", 10), ("10.13.2", 10), ("11.0.0.1", 11)])
def test_version_detection(version, major):
    assert rt.trt_major(SimpleNamespace(__version__=version)) == major


@pytest.mark.parametrize("version", ["8.6.1", "9.3.0", "unknown"])
def test_old_or_unreadable_versions_refused(version):
    with pytest.raises(ResnetDeployError, match="too old|cannot read the TensorRT version"):
        rt.trt_major(SimpleNamespace(__version__=version))


@pytest.mark.parametrize("major, precision, onnx, typed, flags, clear", [
    (11, "fp32", "model.onnx", True, (), ("TF32",)),
    (11, "fp16", "model.fp16.onnx", True, (), ()),
    (11, "int8", "model.int8-trt.onnx", True, (), ()),
    (10, "fp32", "model.onnx", False, (), ("TF32",)),
    (10, "fp16", "model.onnx", False, ("FP16",), ()),
    (10, "int8", "model.int8-trt.onnx", False, ("INT8",), ()),
])
def test_build_plan_per_version(major, precision, onnx, typed, flags, clear):
    plan = rt.plan_build(major, precision)
    assert (plan.onnx, plan.strongly_typed, plan.set_flags, plan.clear_flags) == (onnx, typed, flags, clear)
    assert plan.engine == f"model.{precision}.engine"


def test_tf32_kept_when_asked():
    assert rt.plan_build(11, "fp32", tf32=True).clear_flags == ()
    with pytest.raises(ResnetDeployError, match="unknown engine precision 'bf16'"):
        rt.plan_build(11, "bf16")


class FakeTRT:
    """Just enough of the tensorrt module's API (the documented build sequence, docs/reference.md) to record what the
    builder is told."""

    def __init__(self, version: str, parse_ok: bool = True) -> None:
        self.__version__ = version
        self.calls: dict = {"flags_set": [], "flags_cleared": []}
        has_fp16 = version.startswith("10.")
        names = ["TF32"] + (["FP16", "INT8"] if has_fp16 else [])
        self.BuilderFlag = SimpleNamespace(**{n: n for n in names})
        self.NetworkDefinitionCreationFlag = SimpleNamespace(STRONGLY_TYPED=5)
        self.MemoryPoolType = SimpleNamespace(WORKSPACE="workspace")
        self.Logger = type("Logger", (), {"WARNING": 2, "__init__": lambda s, level: None})
        self.parse_ok = parse_ok
        trt = self

        class Parser:
            num_errors = 0 if parse_ok else 1

            def __init__(self, network, logger):
                pass

            def parse_from_file(self, path):
                trt.calls["parsed"] = path
                return trt.parse_ok

            def get_error(self, i):
                return SimpleNamespace(desc=lambda: "Unsupported ONNX op: Foo", node=lambda: 7)

        self.OnnxParser = Parser
        self.Builder = lambda logger: FakeBuilder(trt)


class FakeBuilder:
    def __init__(self, trt: FakeTRT) -> None:
        self.trt = trt

    def create_network(self, flags):
        self.trt.calls["network_flags"] = flags
        return object()

    def create_builder_config(self):
        calls = self.trt.calls

        class Config:
            builder_optimization_level = 3

            def set_memory_pool_limit(self, pool, size):
                calls["workspace"] = (pool, size)

            def set_flag(self, f):
                calls["flags_set"].append(f)

            def clear_flag(self, f):
                calls["flags_cleared"].append(f)

            def add_optimization_profile(self, p):
                calls["profile"] = p.shapes

            def create_timing_cache(self, data):
                calls["cache_in"] = data
                return SimpleNamespace(serialize=lambda: data + b"+new")

            def set_timing_cache(self, cache, ignore_mismatch):  # positional, as TensorRT takes it
                calls["cache_set"] = ignore_mismatch

        self.config = Config()
        return self.config

    def create_optimization_profile(self):
        profile = SimpleNamespace(shapes={})
        profile.set_shape = lambda name, lo, opt, hi: profile.shapes.update({name: (lo, opt, hi)})
        return profile

    def build_serialized_network(self, network, config):
        self.trt.calls["opt_level"] = config.builder_optimization_level
        return b"ENGINE-BYTES"


@pytest.fixture
def gpu(monkeypatch):
    monkeypatch.setattr(rt, "cuda_device_info", lambda device=0: {"gpu": "Fake GPU", "compute_capability": "8.7"})


@pytest.mark.parametrize("version, precision", [("10.3.0", "int8"), ("11.0.0", "fp16"), ("11.0.0", "fp32")])
def test_build_engine_with_fake_tensorrt(tmp_path, gpu, version, precision):
    trt = FakeTRT(version)
    plan = rt.plan_build(rt.trt_major(trt), precision)
    cache = tmp_path / "timing.cache"
    cache.write_bytes(b"old")
    info = rt.build_engine(tmp_path, plan, (3, 32, 32), (1, 8, 32), workspace=2 << 30, timing_cache=cache,
                           opt_level=5, trt=trt)
    c = trt.calls
    assert c["parsed"] == str(tmp_path / plan.onnx)
    assert c["network_flags"] == (1 << 5 if version.startswith("11") else 0)  # strongly typed only on 11.x
    assert c["flags_set"] == list(plan.set_flags)
    assert c["flags_cleared"] == (["TF32"] if precision == "fp32" else [])
    assert c["workspace"] == ("workspace", 2 << 30)
    assert c["profile"] == {"input": ((1, 3, 32, 32), (8, 3, 32, 32), (32, 3, 32, 32))}
    assert c["opt_level"] == 5 and c["cache_in"] == b"old" and cache.read_bytes() == b"old+new"
    assert (tmp_path / f"model.{precision}.engine").read_bytes() == b"ENGINE-BYTES"
    assert info["tensorrt_version"] == version and info["gpu"] == "Fake GPU" and info["compute_capability"] == "8.7"
    assert info["built_from"] == plan.onnx and info["batch"] == {"min": 1, "opt": 8, "max": 32}


def test_parser_errors_are_reported(tmp_path, gpu):
    trt = FakeTRT("11.0.0", parse_ok=False)
    with pytest.raises(ResnetDeployError, match=r"cannot parse model.onnx: Unsupported ONNX op: Foo \(node 7\)"):
        rt.build_engine(tmp_path, rt.plan_build(11, "fp32"), (3, 32, 32), (1, 1, 1), trt=trt)


def test_missing_tensorrt_says_what_trt_needs(monkeypatch):
    monkeypatch.setitem(sys.modules, "tensorrt", None)  # makes `import tensorrt` fail as if not installed
    with pytest.raises(rt.TensorRTUnavailable, match=r"--trt needs TensorRT \(pip install 'resnet-deploy\[trt\]'\) "
                                                     "and an NVIDIA GPU; TensorRT is not installed"):
        rt.load_tensorrt()


def test_missing_gpu_says_what_trt_needs(monkeypatch):
    fake = SimpleNamespace(cudaGetDeviceCount=lambda: (100, 0), cudaGetErrorName=lambda e: (0, b"cudaErrorNoDevice"),
                           cudaError_t=SimpleNamespace(cudaSuccess=0))
    monkeypatch.setattr("resnet_deploy.runtime.tensorrt_backend._import_cudart", lambda: fake)
    with pytest.raises(rt.TensorRTUnavailable, match="and an NVIDIA GPU; no usable CUDA GPU: CUDA call failed: "
                                                     "cudaErrorNoDevice"):
        rt.cuda_device_info()


def _gpu_reason() -> str | None:
    if importlib.util.find_spec("tensorrt") is None:
        return "TensorRT is not installed (pip install 'resnet-deploy[trt]')"
    try:
        rt.cuda_device_info()
    except rt.TensorRTUnavailable as e:
        return str(e)
    return None


@pytest.mark.gpu
@pytest.mark.skipif(_gpu_reason() is not None, reason=str(_gpu_reason()))
def test_real_engines_build_and_record_the_gpu(tmp_path):
    import numpy as np

    from resnet_deploy import models
    from resnet_deploy.checkpoint import save_model
    from resnet_deploy.export import ExportOptions, export_bundle
    from resnet_deploy.runtime.manifest import read_manifest, verify_files
    from resnet_deploy.runtime.preprocess import Preprocess

    net = models.build("cifar_resnet20", num_classes=10, in_channels=3)
    pre = Preprocess(input_size=(32, 32), channels=3, mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25))
    save_model(tmp_path / "c.pt", net, "cifar_resnet20", [str(i) for i in range(10)], pre)
    calib = np.random.default_rng().standard_normal((32, 3, 32, 32), dtype=np.float32)
    out = export_bundle(tmp_path / "b", ExportOptions(("fp16", "int8"), trt=True, batch="1:4:8",
                                                timing_cache=tmp_path / "tc.bin"),
                        checkpoint=tmp_path / "c.pt", calib_arrays=calib)
    m = read_manifest(out)
    verify_files(out, m)
    engines = {f.path: f for f in m.files if f.format == "engine"}
    assert set(engines) == {"model.fp32.engine", "model.fp16.engine", "model.int8.engine"}
    for f in engines.values():
        assert f.target == "trt" and f.info["gpu"] and f.info["compute_capability"].count(".") == 1
    assert (tmp_path / "tc.bin").stat().st_size > 0


@pytest.mark.parametrize("version", ["10.8.0", "11.0.0"])
def test_bundle_with_fake_tensorrt_records_engines(tmp_path, monkeypatch, gpu, version):
    """The export path with --trt, on CPU: which engines are built from which file, and what the manifest says."""
    import numpy as np

    from resnet_deploy import models
    from resnet_deploy.checkpoint import save_model
    from resnet_deploy.export import ExportOptions, export_bundle
    from resnet_deploy.runtime.manifest import read_manifest, verify_files
    from resnet_deploy.runtime.preprocess import Preprocess

    fake = FakeTRT(version)
    parsed = []
    monkeypatch.setattr("resnet_deploy.export.bundle.load_tensorrt", lambda: fake)
    monkeypatch.setattr(fake, "OnnxParser", type("P", (fake.OnnxParser,), {
        "parse_from_file": lambda self, path: parsed.append(path.rsplit("/", 1)[-1]) or True}))
    net = models.build("cifar_resnet20", num_classes=3, in_channels=1)
    pre = Preprocess(input_size=(16, 16), channels=1, mean=(0.5,), std=(0.25,))
    save_model(tmp_path / "c.pt", net, "cifar_resnet20", ["a", "b", "c"], pre)
    calib = np.random.default_rng().standard_normal((8, 1, 16, 16), dtype=np.float32)
    out = export_bundle(tmp_path / "b", ExportOptions(("fp16", "int8"), trt=True, batch="2:4:8", workspace_gib=0.5),
                        checkpoint=tmp_path / "c.pt", calib_arrays=calib)
    m = read_manifest(out)
    verify_files(out, m)
    v11 = version.startswith("11")
    assert parsed == ["model.onnx", "model.fp16.onnx" if v11 else "model.onnx", "model.int8-trt.onnx"]
    engines = [f for f in m.files if f.format == "engine"]
    assert [f.path for f in engines] == ["model.fp32.engine", "model.fp16.engine", "model.int8.engine"]
    for f in engines:
        assert f.target == "trt" and f.info["tensorrt_version"] == version and f.info["gpu"] == "Fake GPU"
        assert f.info["compute_capability"] == "8.7" and f.info["batch"] == {"min": 2, "opt": 4, "max": 8}
        assert f.info["strongly_typed"] is v11
    assert engines[0].info["tf32"] is False and m.batch == (2, 4, 8)
    assert fake.calls["profile"]["input"] == ((2, 1, 16, 16), (4, 1, 16, 16), (8, 1, 16, 16))
    assert fake.calls["workspace"] == ("workspace", 1 << 29)
    assert "model.int8.onnx" in {f.path for f in m.files}  # --trt makes both INT8 flavours
    log = (out / "export.log").read_text()
    assert f"model.fp16.engine from {'model.fp16.onnx' if v11 else 'model.onnx'}: TensorRT {version}" in log
