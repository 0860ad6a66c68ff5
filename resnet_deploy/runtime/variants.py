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


@dataclass(frozen=True, kw_only=True)
class Precision:
    """What the pipeline knows about one numeric precision, whatever file or runtime uses it.

    Attributes:
        name: "fp32", "fp16", "int8", ...
        gate: the parity gate `validate` holds its variants to (`validate --tolerance` overrides it by name).
        export_help: the help of the `resnet-deploy export --<name>` flag that writes its files; None where export
            has no flag for it (fp32 is always written; bf16 is an inference precision of the fp32 file).
        qmax: for a quantized precision, the largest magnitude of its type (the Q/DQ scale is amax / qmax); such a
            precision is calibrated on images. None: not quantized.
        layer_tolerance: `validate --layerwise`'s default range-relative error a layer may reach against fp32.
    """

    name: str
    gate: Gate
    export_help: str | None = None
    qmax: float | None = None
    layer_tolerance: float | None = None

    @property
    def flag(self) -> str | None:
        """The export flag that writes this precision's files (`--fp16`), or None."""
        return None if self.export_help is None else f"--{self.name}"

    @property
    def quantized(self) -> bool:
        """Whether this precision is quantized (calibrated on images)."""
        return self.qmax is not None


# The reference precision: every other is compared with it, and its ONNX file is what the others are made from.
REFERENCE = "fp32"
PRECISIONS: dict[str, Precision] = {}
# Each precision's parity gate (PRECISIONS[p].gate; kept as a mapping for `override_gates` and `validate`).
GATES: dict[str, Gate] = {}


def register_precision(precision: Precision) -> Precision:
    """Add a precision; a name already taken is an error."""
    if precision.name in PRECISIONS:
        raise ResnetDeployError(f"precision {precision.name!r} is already registered")
    PRECISIONS[precision.name] = precision
    GATES[precision.name] = precision.gate
    return precision


# Parity gates: fp32 must be the same model to rounding, fp16 must agree on almost every image, and quantized models
# may lose at most a point of top-1. Layerwise tolerances: where an fp16/int8/fp8 model may part from fp32 per layer.
# bf16 (OpenVINO's inference precision of model.onnx; no file of its own): its gate was measured on the demo model
# against the full Fashion-MNIST test set (benchmarks/RESULTS.md, "OpenVINO"): 99.89% agreement with the PyTorch
# reference, top-1 +0.02 points, logits off by up to 0.14; so fp16's 99.5% agreement plus a 0.3-point top-1 bound.
for _p in (
    Precision(name="fp32", gate=Gate(agreement=99.9, max_abs=1e-3)),
    Precision(name="fp16", gate=Gate(agreement=99.5), layer_tolerance=0.01,
              export_help="Also write model.fp16.onnx (and an fp16 engine with --trt)."),
    Precision(name="int8", gate=Gate(top1_drop=1.0), qmax=127.0, layer_tolerance=0.1,
              export_help="Also write INT8 QDQ models calibrated on --calib-data."),
    Precision(name="fp8", gate=Gate(top1_drop=1.0), qmax=448.0, layer_tolerance=0.2,  # E4M3FN's largest: 448
              export_help="Also write model.fp8.onnx (FP8 E4M3 QDQ, calibrated; an fp8 engine with --trt on "
                          "TensorRT 11 and compute capability >= 8.9)."),
    Precision(name="bf16", gate=Gate(agreement=99.5, top1_drop=0.3)),
):
    register_precision(_p)


@dataclass(frozen=True, kw_only=True)
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


def register(variant: Variant) -> Variant:
    """Add a variant of a registered precision (`register_precision`); a name already taken is an error."""
    if variant.name in _REGISTRY or variant.name in ("auto", "trt"):
        raise ResnetDeployError(f"variant {variant.name!r} is already registered")
    if variant.precision not in PRECISIONS:
        raise ResnetDeployError(f"variant {variant.name!r} has precision {variant.precision!r}, which is not "
                                f"registered; choose one of: {', '.join(PRECISIONS)} (or register_precision it)")
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


def reference() -> Variant:
    """The fp32 ONNX variant: the file every bundle holds, the one other files are made from and compared with."""
    return next(v for v in _REGISTRY.values() if v.precision == REFERENCE and v.format == "onnx" and v.runs is None)


def onnx_files() -> tuple[Variant, ...]:
    """The variants with an ONNX file of their own, the reference first (what `validate --layerwise` compares)."""
    ref = reference()
    return (ref, *(v for v in _REGISTRY.values() if v.format == "onnx" and v.runs is None and v is not ref))


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
# fp32 on CPUs (benchmarks/RESULTS.md), so it comes last there. FP8 (E4M3): the Q/DQ model is made and its accuracy
# measured on the CPU (ONNX Runtime runs the Q/DQ graph in float, no faster than fp32, so `auto` never picks it
# there; its loader option: see onnx_backend.GRAPH_OPTIMIZATION); the engine is built by TensorRT 11 on compute
# capability >= 8.9.
ORT, TRT, OV = "onnxruntime", "tensorrt", "openvino"
for _v in (
    Variant(name="onnx", file="model.onnx", format="onnx", precision="fp32", target="any", loader=ORT, step="onnx",
            rank={"cpu": 2, "cuda": 4}),
    Variant(name="fp16", file="model.fp16.onnx", format="onnx", precision="fp16", target="any", loader=ORT,
            step="fp16", flags=("--fp16",), rank={"cpu": 5, "cuda": 3}),
    Variant(name="int8", file="model.int8.onnx", format="onnx", precision="int8", target="cpu", loader=ORT,
            step="int8", flags=("--int8",), devices=("cpu",), rank={"cpu": 0}),
    Variant(name="int8-trt", file="model.int8-trt.onnx", format="onnx", precision="int8", target="trt", loader=ORT,
            step="int8", flags=("--int8", "--trt"), rank={"cpu": 6, "cuda": 5}),
    Variant(name="trt-fp32", file="model.fp32.engine", format="engine", precision="fp32", target="trt", loader=TRT,
            step="engine", flags=("--trt",), devices=("cuda",), rank={"cuda": 2}, built_from="onnx"),
    Variant(name="trt-fp16", file="model.fp16.engine", format="engine", precision="fp16", target="trt", loader=TRT,
            step="engine", flags=("--fp16", "--trt"), devices=("cuda",), rank={"cuda": 1}, built_from="fp16",
            trt_flags=("FP16",)),
    Variant(name="trt-int8", file="model.int8.engine", format="engine", precision="int8", target="trt", loader=TRT,
            step="engine", flags=("--int8", "--trt"), devices=("cuda",), rank={"cuda": 0}, built_from="int8-trt",
            trt_flags=("INT8",)),
    Variant(name="fp8", file="model.fp8.onnx", format="onnx", precision="fp8", target="trt", loader=ORT, step="fp8",
            flags=("--fp8",), devices=("cpu",), options={"graph_optimization": "basic"}),
    Variant(name="trt-fp8", file="model.fp8.engine", format="engine", precision="fp8", target="trt", loader=TRT,
            step="engine", flags=("--fp8", "--trt"), devices=("cuda",), rank={"cuda": 0}, built_from="fp8"),
    # OpenVINO runs the same ONNX files on the CPU (the `openvino` extra). bf16 is an inference precision of
    # model.onnx (OpenVINO converts the weights when it compiles) on CPUs with native bf16. The static order puts
    # OpenVINO after ONNX Runtime at equal precision, and bf16 after exact fp32: `auto` prefers them where `bench`
    # measured them faster on this machine (`runtime/autotune.py`).
    Variant(name="ov-int8", file="model.int8.onnx", format="onnx", precision="int8", target="cpu", loader=OV,
            step="int8", flags=("--int8",), devices=("cpu",), rank={"cpu": 1}, runs="int8"),
    Variant(name="ov-bf16", file="model.onnx", format="onnx", precision="bf16", target="any", loader=OV, step="onnx",
            devices=("cpu",), rank={"cpu": 3}, runs="onnx", options={"inference_precision": "bf16"}),
    Variant(name="ov-fp32", file="model.onnx", format="onnx", precision="fp32", target="any", loader=OV, step="onnx",
            devices=("cpu",), rank={"cpu": 4}, runs="onnx"),
):
    register(_v)
