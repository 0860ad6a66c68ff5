"""The variant registry: one row per model variant a bundle can hold, with every fact the pipeline needs about it.

A variant is a model file of the bundle run by one runtime: its name (the `--backend` value), the file export writes,
the file's format, precision and target (how the manifest's `FileEntry` is matched), the loader that runs it, the
export step and flags that produce it, the devices it runs on, its place in `auto`'s order, and the parity gate
`validate` holds it to. Export, `Predictor.from_bundle`, backend choice, validate's tolerances and report rows,
`rebuild_command` and the CLI's choices are all derived from this table; adding a variant is one `register` call plus
its loader (`runtime/backend.py`) or export step (see docs/architecture.md, "Adding a variant").

Torch-free: it is part of the runtime that edge apps install.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields, replace

from resnet_deploy.runtime.errors import ResnetDeployError

DEVICES = ("cpu", "cuda")


@dataclass(frozen=True)
class Gate:
    """PASS thresholds of one precision against the PyTorch reference (None: not checked).

    Attributes:
        agreement: minimum top-1 agreement with the reference, percent.
        max_abs: maximum absolute logit difference.
        top1_drop: maximum top-1 accuracy drop against the reference, percentage points.
    """

    agreement: float | None = None
    max_abs: float | None = None
    top1_drop: float | None = None


# Parity gates per precision: fp32 must be the same model to rounding, fp16 must agree on almost every image, and
# quantized models may lose at most a point of top-1 (the thresholds `validate --tolerance` overrides).
GATES: dict[str, Gate] = {
    "fp32": Gate(agreement=99.9, max_abs=1e-3),
    "fp16": Gate(agreement=99.5),
    "int8": Gate(top1_drop=1.0),
}


@dataclass(frozen=True)
class Variant:
    """One row of the registry.

    Attributes:
        name: the backend name users pass (`--backend`, `--backends`).
        file: the bundle file export writes for it.
        format: "onnx" or "engine" (a TensorRT plan).
        precision: "fp32", "fp16", "int8", ...; selects the parity gate.
        target: "any", "cpu" (a file made for CPU runtimes) or "trt" (for TensorRT).
        loader: the runtime that runs the file (a key of `backend.LOADERS`).
        step: the export step that writes the file ("onnx", "fp16", "int8", "engine", ...).
        flags: the `resnet-deploy export` flags that produce it.
        devices: where it can run.
        rank: order within `auto` on each device, lowest first; a device absent here is never chosen by `auto`.
        built_from: for engines, the variant whose ONNX file it is built from on strongly typed TensorRT (11.x).
        trt_flags: for engines, the builder flags that set the precision on TensorRT 10.x (weakly typed).
        runs: for a variant that runs another variant's file (another runtime, or a runtime option such as a lower
            inference precision), that variant's name; export writes nothing for it.
        options: loader options that make this variant differ from another on the same file.
    """

    name: str
    file: str
    format: str
    precision: str
    target: str
    loader: str
    step: str
    flags: tuple[str, ...] = ()
    devices: tuple[str, ...] = ("cpu", "cuda")
    rank: dict[str, int] = field(default_factory=dict)
    built_from: str | None = None
    trt_flags: tuple[str, ...] = ()
    runs: str | None = None
    options: dict[str, str] = field(default_factory=dict)

    @property
    def key(self) -> tuple[str, str, str]:
        """(format, precision, target) of the manifest's file entry this variant runs."""
        if self.runs is not None:
            return get(self.runs).key
        return (self.format, self.precision, self.target)

    @property
    def gate(self) -> Gate:
        """The parity gate of this variant's precision."""
        return GATES.get(self.precision, Gate())


_REGISTRY: dict[str, Variant] = {}


def register(variant: Variant, gate: Gate | None = None) -> Variant:
    """Add a variant (and, for a new precision, its parity gate); a name already taken is an error."""
    if variant.name in _REGISTRY or variant.name in ("auto", "trt"):
        raise ResnetDeployError(f"variant {variant.name!r} is already registered")
    if gate is not None:
        GATES.setdefault(variant.precision, gate)
    _REGISTRY[variant.name] = variant
    return variant


def unregister(name: str) -> None:
    """Remove a variant (tests that register a dummy one clean up with this)."""
    _REGISTRY.pop(name, None)


def variants() -> tuple[Variant, ...]:
    """Every registered variant, in registration order."""
    return tuple(_REGISTRY.values())


def names() -> tuple[str, ...]:
    """Every variant name (the values `--backend` takes besides "auto" and "trt")."""
    return tuple(_REGISTRY)


def get(name: str) -> Variant:
    """The variant called `name`; an unknown name is an error listing the choices."""
    if name not in _REGISTRY:
        raise ResnetDeployError(f"unknown backend {name!r}; choose one of: {', '.join(('auto', 'trt', *_REGISTRY))}")
    return _REGISTRY[name]


def precisions() -> tuple[str, ...]:
    """Every precision a variant with its own file has, in registration order (export's precision choices; a variant
    that runs another's file, such as OpenVINO's bf16 inference of model.onnx, has nothing to export)."""
    return tuple(dict.fromkeys(v.precision for v in _REGISTRY.values() if v.runs is None))


def engines() -> tuple[Variant, ...]:
    """The TensorRT engine variants, fastest first ("trt" picks the first present)."""
    return tuple(sorted((v for v in _REGISTRY.values() if v.format == "engine"), key=lambda v: v.rank.get("cuda", 99)))


def ranked(device: str) -> tuple[Variant, ...]:
    """The variants `auto` tries on `device`, in order."""
    found = [v for v in _REGISTRY.values() if device in v.rank]
    return tuple(sorted(found, key=lambda v: v.rank[device]))


def _thresholds() -> dict[str, tuple[str, str]]:
    # "<precision>_<threshold>" -> (precision, threshold) for each threshold a gate sets.
    return {f"{p}_{f.name}": (p, f.name) for p, g in GATES.items() for f in fields(g) if getattr(g, f.name) is not None}


def gate_names() -> tuple[str, ...]:
    """Every tolerance name `validate --tolerance` takes, e.g. fp32_max_abs, int8_top1_drop."""
    return tuple(_thresholds())


def override_gates(values: dict[str, float]) -> dict[str, Gate]:
    """The gates with some thresholds changed (`fp32_max_abs=1e-4`); unknown names are an error naming the valid."""
    valid = _thresholds()
    unknown = sorted(set(values) - set(valid))
    if unknown:
        raise ResnetDeployError(f"unknown tolerance {', '.join(unknown)}; choose from: {', '.join(valid)}")
    gates = dict(GATES)
    for key, value in values.items():
        precision, threshold = valid[key]
        gates[precision] = replace(gates[precision], **{threshold: float(value)})
    return gates


# The built-in variants. ONNX files run on ONNX Runtime; engines on TensorRT. `auto` on a CPU prefers int8 where the
# CPU has int8 dot-product instructions (the predictor swaps int8 behind fp32 elsewhere); fp16 ONNX is slower than
# fp32 on CPUs (benchmarks/RESULTS.md), so it comes last there.
for _v in (
    Variant("onnx", "model.onnx", "onnx", "fp32", "any", "onnxruntime", "onnx", (), rank={"cpu": 2, "cuda": 4}),
    Variant("fp16", "model.fp16.onnx", "onnx", "fp16", "any", "onnxruntime", "fp16", ("--fp16",),
            rank={"cpu": 5, "cuda": 3}),
    Variant("int8", "model.int8.onnx", "onnx", "int8", "cpu", "onnxruntime", "int8", ("--int8",), ("cpu",),
            rank={"cpu": 0}),
    Variant("int8-trt", "model.int8-trt.onnx", "onnx", "int8", "trt", "onnxruntime", "int8", ("--int8", "--trt"),
            rank={"cpu": 6, "cuda": 5}),
    Variant("trt-fp32", "model.fp32.engine", "engine", "fp32", "trt", "tensorrt", "engine", ("--trt",), ("cuda",),
            rank={"cuda": 2}, built_from="onnx"),
    Variant("trt-fp16", "model.fp16.engine", "engine", "fp16", "trt", "tensorrt", "engine", ("--fp16", "--trt"),
            ("cuda",), rank={"cuda": 1}, built_from="fp16", trt_flags=("FP16",)),
    Variant("trt-int8", "model.int8.engine", "engine", "int8", "trt", "tensorrt", "engine", ("--int8", "--trt"),
            ("cuda",), rank={"cuda": 0}, built_from="int8-trt", trt_flags=("INT8",)),
):
    register(_v)

# FP8 (E4M3): the Q/DQ model is made and its accuracy measured on the CPU (ONNX Runtime runs the Q/DQ graph in float,
# no faster than fp32, so `auto` never picks it there); the engine is built by TensorRT 11 on compute capability >= 8.9.
register(Variant("fp8", "model.fp8.onnx", "onnx", "fp8", "trt", "onnxruntime", "fp8", ("--fp8",), ("cpu",),
                 options={"graph_optimization": "basic"}), Gate(top1_drop=1.0))  # see onnx_backend.GRAPH_OPTIMIZATION
register(Variant("trt-fp8", "model.fp8.engine", "engine", "fp8", "trt", "tensorrt", "engine", ("--fp8", "--trt"),
                 ("cuda",), rank={"cuda": 0}, built_from="fp8"))

# OpenVINO runs the same ONNX files on the CPU (the `openvino` extra). bf16 is an inference precision of model.onnx
# (OpenVINO converts the weights when it compiles) on CPUs with native bf16. Its gate was measured on the demo model
# against the full Fashion-MNIST test set (benchmarks/RESULTS.md, "OpenVINO"): 99.89% agreement with the PyTorch
# reference, top-1 +0.02 points, logits off by up to 0.14; so the gate is fp16's 99.5% agreement plus a 0.3-point
# top-1 bound, not max_abs. The static order puts OpenVINO after ONNX Runtime at equal precision, and bf16 after
# exact fp32: `auto` prefers them where `bench` measured them faster on this machine (`runtime/autotune.py`).
for _v, _gate in (
    (Variant("ov-int8", "model.int8.onnx", "onnx", "int8", "cpu", "openvino", "int8", ("--int8",), ("cpu",),
             rank={"cpu": 1}, runs="int8"), None),
    (Variant("ov-bf16", "model.onnx", "onnx", "bf16", "any", "openvino", "onnx", (), ("cpu",), rank={"cpu": 3},
             runs="onnx", options={"inference_precision": "bf16"}), Gate(agreement=99.5, top1_drop=0.3)),
    (Variant("ov-fp32", "model.onnx", "onnx", "fp32", "any", "openvino", "onnx", (), ("cpu",), rank={"cpu": 4},
             runs="onnx"), None),
):
    register(_v, _gate)
