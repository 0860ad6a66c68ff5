"""Stage 5: TensorRT engines (`model.<precision>.engine`), built from the bundle's ONNX files.

TensorRT and the CUDA bindings are imported lazily (docs/architecture.md), so everything else exports on a machine
without them. TensorRT 10.x and 11.x are both supported; their one difference that matters here lives in
`plan_build` (docs/reference.md, "TensorRT 10.x and 11.x"): 11.x removed `BuilderFlag.FP16` / `INT8` and builds
every network strongly typed, so precision comes from the ONNX file (fp16 weights, or Q/DQ nodes); on 10.x the
FP16 / INT8 builder flags still exist and are used with a weakly typed network. Which file and which flag belong to
which engine is the variant registry's (`runtime/variants.py`: `built_from`, `trt_flags`). FP8 engines are built by
TensorRT 11 only, strongly typed from the FP8 Q/DQ model, on GPUs of compute capability 8.9 or later.

Engines that travel (TensorRT developer guide, "Engine Compatibility"): `compat=("version",)` sets
`BuilderFlag.VERSION_COMPATIBLE`, so the plan embeds the lean runtime and later TensorRT versions (and the lean
runtime of its own version) run it; `compat=("hardware",)` sets the hardware compatibility level AMPERE_PLUS, so any
GPU of compute capability >= 8.0 runs it. Both are recorded in the manifest's engine `info`.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

from resnet_deploy.runtime import variants
from resnet_deploy.runtime.errors import ResnetDeployError
from resnet_deploy.runtime.limits import MAX_BATCH
from resnet_deploy.runtime.manifest import INPUT_NAME
from resnet_deploy.runtime.tensorrt_backend import HARDWARE_COMPAT_MIN_CC, CudaPythonMissing, cuda_device
from resnet_deploy.runtime.variants import Variant
from resnet_deploy.system import torch_cuda_devices

TRT_HINT = "--trt needs TensorRT (pip install 'resnet-deploy[trt]') and an NVIDIA GPU"
COMPAT = ("version", "hardware")  # `--trt-compat`: "none", one of these, or both ("version,hardware")
FP8_MIN_CC = (8, 9)  # FP8 tensor cores: Ada (8.9), Hopper (9.0) and later


class TensorRTUnavailable(ResnetDeployError):
    """TensorRT or a CUDA GPU is missing: the ONNX part of the bundle is still written."""


@dataclass(frozen=True)
class BuildPlan:
    """How one engine is built: from which ONNX file, with which network and builder flags."""

    precision: str
    onnx: str
    strongly_typed: bool
    set_flags: tuple[str, ...] = ()
    clear_flags: tuple[str, ...] = ()
    engine: str = ""  # the engine's file name in the bundle
    hardware_level: str = "NONE"  # a trt.HardwareCompatibilityLevel member name

    @property
    def version_compatible(self) -> bool:
        """Built with the lean runtime embedded, for later TensorRT versions (`--trt-compat version`)."""
        return "VERSION_COMPATIBLE" in self.set_flags

    def compat_info(self) -> dict[str, Any]:
        """The manifest's record of how far this engine travels (read by the runtime's `engine_mismatch`)."""
        return {"version_compatible": self.version_compatible, "lean_runtime_embedded": self.version_compatible,
                "hardware_compatible": self.hardware_level != "NONE",
                "hardware_compatibility_level": self.hardware_level}


def parse_batch(spec: str | tuple[int, int, int]) -> tuple[int, int, int]:
    """`"MIN:OPT:MAX"` (or a tuple) -> (min, opt, max) with 1 <= min <= opt <= max.

    Raises:
        ResnetDeployError: malformed or out of order, e.g. "8:1:4".
    """
    if isinstance(spec, str):
        parts = spec.split(":")
        try:
            values = tuple(int(p) for p in parts)
        except ValueError:
            values = ()
        if len(values) != 3:
            raise ResnetDeployError(f"--batch must be MIN:OPT:MAX with three integers, e.g. 1:8:32; found {spec!r}")
    else:
        values = tuple(int(v) for v in spec)
    if len(values) != 3 or not 1 <= values[0] <= values[1] <= values[2] <= MAX_BATCH:
        # MAX_BATCH: what every runtime's manifest reader accepts; a larger bundle would be written, then refused
        raise ResnetDeployError(f"--batch MIN:OPT:MAX needs 1 <= MIN <= OPT <= MAX <= {MAX_BATCH}; found "
                                f"{':'.join(map(str, values))}")
    return values  # type: ignore[return-value]


def trt_major(trt: ModuleType) -> int:
    """Major version of an imported `tensorrt` module; TensorRT older than 10 is refused."""
    version = str(getattr(trt, "__version__", ""))
    try:
        major = int(version.split(".")[0])
    except ValueError:
        raise ResnetDeployError(f"cannot read the TensorRT version from {version!r}") from None
    if major < 10:
        raise ResnetDeployError(f"TensorRT {version} is too old; resnet-deploy needs TensorRT 10 or 11")
    return major


def parse_compat(value: str | Iterable[str] | None) -> tuple[str, ...]:
    """`--trt-compat`: "none", "version", "hardware" or "version,hardware" (or a sequence) -> a sorted tuple.

    Raises:
        ResnetDeployError: an unknown value, e.g. "ampere".
    """
    parts = [p.strip() for p in (value.split(",") if isinstance(value, str) else value or ())]
    parts = [p for p in parts if p and p != "none"]
    unknown = [p for p in parts if p not in COMPAT]
    if unknown:
        raise ResnetDeployError(f"unknown --trt-compat {', '.join(unknown)}; choose none, version, hardware or "
                                "version,hardware")
    return tuple(c for c in COMPAT if c in parts)


def _check_plan(major: int, precision: str, compat: tuple[str, ...]) -> None:
    if precision == "fp8" and major < 11:
        raise ResnetDeployError(f"fp8 engines are built by TensorRT 11 (strongly typed FP8 Q/DQ); found TensorRT "
                                f"{major}.x: build int8 or fp16 engines there, or use TensorRT 11")
    check_fp8_compat((precision,), compat)


def check_fp8_compat(precisions: Iterable[str], compat: Iterable[str]) -> None:
    """Refuse fp8 engines made hardware-compatible: that target includes Ampere GPUs, which have no FP8."""
    if "fp8" in precisions and "hardware" in compat:
        raise ResnetDeployError("--trt-compat hardware (Ampere and later) cannot hold an fp8 engine: Ampere GPUs "
                                "have no FP8; export fp8 engines without hardware compatibility")


def plan_build(major: int, variant: Variant, tf32: bool = False, compat: str | Iterable[str] = ()) -> BuildPlan:
    """The one place where TensorRT 10.x and 11.x differ: source ONNX file, strong typing and builder flags.

    On 11.x (strongly typed) an engine is built from its variant's `built_from` file, whose types carry the
    precision. On 10.x the variant's `trt_flags` set the precision of a weakly typed network built from the fp32 ONNX,
    except where the source carries Q/DQ scales (int8), which is then the source. TF32 is on by default in TensorRT;
    it is cleared for fp32 engines unless asked for, so that an fp32 engine matches the ONNX model to fp32 precision.
    `compat` ("version", "hardware") makes the engine travel (see the module docstring).
    """
    if variant.format != "engine":
        raise ResnetDeployError(f"{variant.name} is not an engine variant; choose one of: "
                                f"{', '.join(v.name for v in variants.engines())}")
    precision = variant.precision
    compat = parse_compat(compat)
    _check_plan(major, precision, compat)
    source = variants.get(variant.built_from) if variant.built_from else variants.reference()
    clear = () if tf32 or precision != "fp32" else ("TF32",)
    travel = ("VERSION_COMPATIBLE",) if "version" in compat else ()
    level = "AMPERE_PLUS" if "hardware" in compat else "NONE"
    if major >= 11:  # FP16/INT8 flags removed; strongly typed: the graph carries the precision
        return BuildPlan(precision, source.file, True, travel, clear, variant.file, level)
    if source.step != "int8":  # QDQ graphs carry their scales; anything else is typed by the flag
        source = variants.reference()
    return BuildPlan(precision, source.file, False, variant.trt_flags + travel, clear, variant.file, level)


def load_tensorrt() -> ModuleType:
    """Import TensorRT, or raise TensorRTUnavailable with what --trt needs."""
    try:
        import tensorrt as trt
    except ImportError as e:
        raise TensorRTUnavailable(f"{TRT_HINT}; TensorRT is not installed here ({e})") from None
    trt_major(trt)
    return trt


def cuda_device_info(device: int = 0) -> dict[str, str]:
    """Name and compute capability of a CUDA GPU, via cuda-python (as the runtime asks), else torch."""

    try:
        return cuda_device(device)
    except CudaPythonMissing:
        pass  # torch below
    except ResnetDeployError as e:
        raise TensorRTUnavailable(f"{TRT_HINT}; {e}") from None
    found = torch_cuda_devices()
    if len(found) <= device:
        raise TensorRTUnavailable(f"{TRT_HINT}; no CUDA GPU was found")
    return found[device]


def check_device(plan: BuildPlan, device: dict[str, str]) -> None:
    """Refuse a build this GPU cannot make: fp8 needs compute capability >= 8.9, hardware compatibility >= 8.0."""
    cc = tuple(int(v) for v in device["compute_capability"].split("."))
    name = f"{device['gpu']} (compute capability {device['compute_capability']})"
    if plan.precision == "fp8" and cc < FP8_MIN_CC:
        raise ResnetDeployError(f"fp8 engines need a GPU of compute capability >= 8.9 (Ada, Hopper or later); "
                                f"this one is {name}: export fp8 without --trt, or build int8/fp16 engines")
    if plan.hardware_level != "NONE" and float(device["compute_capability"]) < HARDWARE_COMPAT_MIN_CC:
        raise ResnetDeployError(f"--trt-compat hardware builds on Ampere or later (compute capability >= 8.0); this "
                                f"GPU is {name}: export with --trt-compat none or version")


def _network(trt: ModuleType, builder: Any, plan: BuildPlan) -> Any:
    # 0 is an explicit-batch network on 10.x (EXPLICIT_BATCH is deprecated there and gone in 11.x).
    flags = 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED) if plan.strongly_typed else 0
    return builder.create_network(flags)


def _parse(trt: ModuleType, network: Any, logger: Any, onnx_path: Path) -> Any:
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_path)):
        errors = "; ".join(_describe(parser.get_error(i)) for i in range(parser.num_errors))
        raise ResnetDeployError(f"TensorRT cannot parse {onnx_path.name}: {errors or 'unknown error'}")
    return parser


def _describe(error: Any) -> str:
    # TensorRT's ParserError describes itself with desc() (plus the node it failed on); str() is only a repr.
    node = error.node()
    return f"{error.desc()}" + (f" (node {node})" if isinstance(node, int) and node >= 0 else "")


def _config(trt: ModuleType, builder: Any, plan: BuildPlan, workspace: int, opt_level: int | None) -> Any:
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(workspace))
    for name in plan.set_flags:
        config.set_flag(getattr(trt.BuilderFlag, name))
    for name in plan.clear_flags:
        config.clear_flag(getattr(trt.BuilderFlag, name))
    if plan.hardware_level != "NONE":
        config.hardware_compatibility_level = getattr(trt.HardwareCompatibilityLevel, plan.hardware_level)
    if opt_level is not None:
        config.builder_optimization_level = int(opt_level)
    return config


def _profile(builder: Any, config: Any, input_shape: tuple[int, int, int], batch: tuple[int, int, int]) -> None:
    profile = builder.create_optimization_profile()
    lo, opt, hi = ((n, *input_shape) for n in batch)  # (N, C, H, W) at min / opt / max batch
    profile.set_shape(INPUT_NAME, lo, opt, hi)
    config.add_optimization_profile(profile)


def _load_timing_cache(config: Any, path: Path | None) -> Any:
    data = path.read_bytes() if path is not None and path.is_file() else b""
    cache = config.create_timing_cache(data)
    config.set_timing_cache(cache, True)  # ignore_mismatch: a cache from another GPU/version is ignored, not fatal
    return cache


def build_engine(bundle: Path, plan: BuildPlan, input_shape: tuple[int, int, int], batch: tuple[int, int, int],
                 workspace: int = 4 << 30, timing_cache: Path | None = None, opt_level: int | None = None,
                 trt: ModuleType | None = None) -> dict[str, Any]:
    """Build `bundle/plan.engine` from `bundle/plan.onnx`; returns the engine's info for the manifest.

    Args:
        bundle: directory holding the ONNX files; the engine is written there.
        plan: from `plan_build`.
        input_shape: (C, H, W).
        batch: (min, opt, max) of the optimization profile.
        workspace: builder workspace limit in bytes.
        timing_cache: file read before and written after the build (kernel timings are reused across builds).
        opt_level: builder optimization level 0..5 (TensorRT's default is 3).
        trt: the tensorrt module (imported here when None).
    """
    trt = trt or load_tensorrt()
    info = {"tensorrt_version": str(trt.__version__), **cuda_device_info()}
    check_device(plan, info)
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    network = _network(trt, builder, plan)
    parser = _parse(trt, network, logger, bundle / plan.onnx)  # owns the weights: keep it alive until built
    config = _config(trt, builder, plan, workspace, opt_level)
    _profile(builder, config, input_shape, batch)
    cache = _load_timing_cache(config, timing_cache)
    serialized = builder.build_serialized_network(network, config)
    del parser
    if serialized is None:
        raise ResnetDeployError(f"TensorRT failed to build the {plan.precision} engine (see its log above)")
    (bundle / plan.engine).write_bytes(bytes(serialized))
    if timing_cache is not None:
        timing_cache.write_bytes(bytes(cache.serialize()))
    return {**info, "built_from": plan.onnx, "strongly_typed": plan.strongly_typed,
            "flags": list(plan.set_flags), "tf32": "TF32" not in plan.clear_flags, **plan.compat_info(),
            "batch": {"min": batch[0], "opt": batch[1], "max": batch[2]}}
