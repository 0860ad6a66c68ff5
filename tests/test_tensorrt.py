"""TensorRT engine building: the logic that needs no GPU, against the `tensorrt` stand-in of tests/trt_fakes.py (the
same code runs against the real bindings' surface in tests/trt_conformance_cases.py); the real build is
`@pytest.mark.gpu`."""

from __future__ import annotations

import importlib.util
import sys
from types import SimpleNamespace

import pytest
from trt_fakes import FakeTRT

from resnet_deploy.export import tensorrt as rt
from resnet_deploy.runtime import variants
from resnet_deploy.runtime.errors import ResnetDeployError


@pytest.mark.parametrize("spec, expected", [("1:8:32", (1, 8, 32)), ("4:4:4", (4, 4, 4)), ((2, 3, 9), (2, 3, 9))])
def test_parse_batch(spec, expected):
    assert rt.parse_batch(spec) == expected


@pytest.mark.parametrize("spec, message", [
    ("8:1:4", "needs 1 <= MIN <= OPT <= MAX <= 4096; found 8:1:4"),
    ("0:1:4", "needs 1 <= MIN <= OPT <= MAX <= 4096; found 0:1:4"),
    ("1:1:99999999", "needs 1 <= MIN <= OPT <= MAX <= 4096; found 1:1:99999999"),
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
    plan = rt.plan_build(major, variants.get(f"trt-{precision}"))
    assert (plan.onnx, plan.strongly_typed, plan.set_flags, plan.clear_flags) == (onnx, typed, flags, clear)
    assert plan.engine == f"model.{precision}.engine"


def test_tf32_kept_when_asked():
    assert rt.plan_build(11, variants.get("trt-fp32"), tf32=True).clear_flags == ()
    with pytest.raises(ResnetDeployError, match="ov-bf16 is not an engine variant; choose one of: trt-int8, trt-fp8"):
        rt.plan_build(11, variants.get("ov-bf16"))


@pytest.mark.parametrize("value, expected", [("none", ()), ("version", ("version",)), ("hardware", ("hardware",)),
                                             ("hardware,version", ("version", "hardware")), (None, ())])
def test_parse_compat(value, expected):
    assert rt.parse_compat(value) == expected


def test_parse_compat_rejects_unknown():
    with pytest.raises(ResnetDeployError, match="unknown --trt-compat ampere; choose none, version, hardware or "
                                                "version,hardware"):
        rt.parse_compat("version,ampere")


@pytest.mark.parametrize("major, flags", [(10, ("INT8", "VERSION_COMPATIBLE")), (11, ("VERSION_COMPATIBLE",))])
def test_compat_plans(major, flags):
    plan = rt.plan_build(major, variants.get("trt-int8"), compat="version,hardware")
    assert plan.set_flags == flags and plan.hardware_level == "AMPERE_PLUS" and plan.version_compatible
    assert plan.compat_info() == {"version_compatible": True, "lean_runtime_embedded": True,
                                  "hardware_compatible": True, "hardware_compatibility_level": "AMPERE_PLUS"}
    assert rt.plan_build(major, variants.get("trt-fp32")).compat_info()["hardware_compatibility_level"] == "NONE"


def test_fp8_plans():
    plan = rt.plan_build(11, variants.get("trt-fp8"), compat="version")
    assert (plan.onnx, plan.strongly_typed, plan.set_flags, plan.engine) == (
        "model.fp8.onnx", True, ("VERSION_COMPATIBLE",), "model.fp8.engine")
    with pytest.raises(ResnetDeployError, match=r"fp8 engines are built by TensorRT 11 .*found TensorRT 10.x"):
        rt.plan_build(10, variants.get("trt-fp8"))
    with pytest.raises(ResnetDeployError, match="--trt-compat hardware .* cannot hold an fp8 engine"):
        rt.plan_build(11, variants.get("trt-fp8"), compat="hardware")


@pytest.mark.parametrize("precision, compat, cc, message", [
    ("fp8", (), "8.7", r"fp8 engines need a GPU of compute capability >= 8.9 .*this one is G \(compute capability "
                       r"8.7\)"),
    ("int8", ("hardware",), "7.5", r"--trt-compat hardware builds on Ampere or later .* this GPU is G \(compute "
                                  r"capability 7.5\)"),
])
def test_builds_this_gpu_cannot_make_are_refused(precision, compat, cc, message):
    plan = rt.plan_build(11, variants.get(f"trt-{precision}"), compat=compat)
    with pytest.raises(ResnetDeployError, match=message):
        rt.check_device(plan, {"gpu": "G", "compute_capability": cc})
    rt.check_device(plan, {"gpu": "G", "compute_capability": "9.0"})  # Hopper makes both


@pytest.fixture
def gpu(monkeypatch):
    monkeypatch.setattr(rt, "cuda_device_info", lambda device=0: {"gpu": "Fake GPU", "compute_capability": "8.7"})


@pytest.mark.parametrize("version, precision", [("10.3.0", "int8"), ("11.0.0", "fp16"), ("11.0.0", "fp32")])
def test_build_engine_with_fake_tensorrt(tmp_path, gpu, version, precision):
    trt = FakeTRT(version)
    plan = rt.plan_build(rt.trt_major(trt), variants.get(f"trt-{precision}"))
    cache = tmp_path / "timing.cache"
    cache.write_bytes(b"old")
    info = rt.build_engine(tmp_path, plan, (3, 32, 32), (1, 8, 32), workspace=2 << 30, timing_cache=cache,
                           opt_level=5, trt=trt)
    c = trt._calls
    assert c["parsed"] == [str(tmp_path / plan.onnx)]
    assert c["network_flags"] == (1 << 5 if version.startswith("11") else 0)  # strongly typed only on 11.x
    assert c["flags_set"] == list(plan.set_flags)
    assert c["flags_cleared"] == (["TF32"] if precision == "fp32" else [])
    assert c["workspace"] == ("workspace", 2 << 30)
    assert c["profile"] == {"input": ((1, 3, 32, 32), (8, 3, 32, 32), (32, 3, 32, 32))}
    assert c["opt_level"] == 5 and c["cache_in"] == b"old" and cache.read_bytes() == b"old+new"
    assert (tmp_path / f"model.{precision}.engine").read_bytes() == b"ENGINE-BYTES"
    assert info["tensorrt_version"] == version and info["gpu"] == "Fake GPU" and info["compute_capability"] == "8.7"
    assert info["built_from"] == plan.onnx and info["batch"] == {"min": 1, "opt": 8, "max": 32}
    assert info["version_compatible"] is False and c["hardware_level"] == "NONE"


def test_travelling_engine_is_built_and_recorded(tmp_path, gpu):
    trt = FakeTRT("11.0.0")
    plan = rt.plan_build(11, variants.get("trt-fp16"), compat="version,hardware")
    info = rt.build_engine(tmp_path, plan, (3, 32, 32), (1, 8, 32), trt=trt)
    assert trt._calls["flags_set"] == ["VERSION_COMPATIBLE"] and trt._calls["hardware_level"] == "AMPERE_PLUS"
    assert info["version_compatible"] and info["lean_runtime_embedded"] and info["hardware_compatible"]
    assert info["hardware_compatibility_level"] == "AMPERE_PLUS" and info["flags"] == ["VERSION_COMPATIBLE"]




def test_parser_errors_are_reported(tmp_path, gpu):
    trt = FakeTRT("11.0.0", parse_ok=False)
    with pytest.raises(ResnetDeployError, match=r"cannot parse model.onnx: Unsupported ONNX op: Foo \(node 7\)"):
        rt.build_engine(tmp_path, rt.plan_build(11, variants.get("trt-fp32")), (3, 32, 32), (1, 1, 1), trt=trt)


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
    from resnet_deploy.runtime.manifest import read_manifest
    from resnet_deploy.runtime.preprocess import Preprocess
    from resnet_deploy.runtime.verified import verify_files

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
    from resnet_deploy.runtime.manifest import read_manifest
    from resnet_deploy.runtime.preprocess import Preprocess
    from resnet_deploy.runtime.verified import verify_files

    fake = FakeTRT(version)
    monkeypatch.setattr("resnet_deploy.export.bundle.load_tensorrt", lambda: fake)
    net = models.build("cifar_resnet20", num_classes=3, in_channels=1)
    pre = Preprocess(input_size=(16, 16), channels=1, mean=(0.5,), std=(0.25,))
    save_model(tmp_path / "c.pt", net, "cifar_resnet20", ["a", "b", "c"], pre)
    calib = np.random.default_rng().standard_normal((8, 1, 16, 16), dtype=np.float32)
    out = export_bundle(tmp_path / "b", ExportOptions(("fp16", "int8"), trt=True, batch="2:4:8", workspace_gib=0.5),
                        checkpoint=tmp_path / "c.pt", calib_arrays=calib)
    m = read_manifest(out)
    verify_files(out, m)
    v11 = version.startswith("11")
    parsed = [p.rsplit("/", 1)[-1] for p in fake._calls["parsed"]]
    assert parsed == ["model.onnx", "model.fp16.onnx" if v11 else "model.onnx", "model.int8-trt.onnx"]
    engines = [f for f in m.files if f.format == "engine"]
    assert [f.path for f in engines] == ["model.fp32.engine", "model.fp16.engine", "model.int8.engine"]
    for f in engines:
        assert f.target == "trt" and f.info["tensorrt_version"] == version and f.info["gpu"] == "Fake GPU"
        assert f.info["compute_capability"] == "8.7" and f.info["batch"] == {"min": 2, "opt": 4, "max": 8}
        assert f.info["strongly_typed"] is v11
    assert engines[0].info["tf32"] is False and m.batch == (2, 4, 8)
    assert fake._calls["profile"]["input"] == ((2, 1, 16, 16), (4, 1, 16, 16), (8, 1, 16, 16))
    assert fake._calls["workspace"] == ("workspace", 1 << 29)
    assert "model.int8.onnx" in {f.path for f in m.files}  # --trt makes both INT8 flavours
    log = (out / "export.log").read_text()
    assert f"model.fp16.engine from {'model.fp16.onnx' if v11 else 'model.onnx'}: TensorRT {version}" in log
