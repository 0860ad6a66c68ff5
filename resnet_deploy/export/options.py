"""`ExportOptions`: what an export writes and how, checked once when made.

The variants written follow from the options and the registry (`runtime/variants.py`): every ONNX variant whose
precision was asked for (int8 once per target: ONNX Runtime on CPUs, TensorRT), and with `trt` every engine whose
source ONNX variant is written. `trt_compat` makes the engines travel (version- and/or hardware-compatible plans).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from resnet_deploy.export.tensorrt import check_fp8_compat, parse_batch, parse_compat
from resnet_deploy.runtime import limits, variants
from resnet_deploy.runtime.errors import ResnetDeployError
from resnet_deploy.runtime.variants import Variant

# torch 2.14's exporter writes opset 18 and later; TensorRT 10/11 and ONNX Runtime read 18 (export/onnx.py says why).
DEFAULT_OPSET = 18
CALIB_METHODS = ("minmax", "entropy", "percentile")  # onnxruntime.quantization's calibrators, by our names
# --int8-target: which int8 QDQ files are written (the registry's int8 variants, by target).
INT8_TARGET_CHOICES = {"cpu": ("cpu",), "trt": ("trt",), "both": ("cpu", "trt")}


@dataclass(frozen=True)
class ExportOptions:
    """The export arguments, as `export_bundle` takes them and config.yaml / the manifest's export_args record them.

    Attributes:
        precisions: the precisions to write ("fp32" always; "fp16", "int8", ... as the registry offers).
        trt: also build TensorRT engines from the written ONNX files.
        int8_target: "cpu", "trt" or "both" (None: cpu, both with `trt`).
        calib_data, calib_size, calib_method: calibration images (a data SPEC), how many, how ranges are found.
        calib_cache: a file of calibrated activation ranges, reused when it was made from the same checkpoint,
            calibration images and method, else recalibrated and rewritten.
        opset, batch, input_size: ONNX opset; (min, opt, max) batch range or "MIN:OPT:MAX"; square input side.
        workspace_gib, timing_cache, opt_level, tf32: TensorRT builder settings.
        trt_compat: ("version",) and/or ("hardware",): engines for later TensorRT versions (and the lean runtime),
            and for every Ampere or later GPU; "none" or () for engines tied to this TensorRT and GPU.
        simplify: run onnxsim on model.onnx.
    """

    precisions: tuple[str, ...] = ("fp32",)
    trt: bool = False
    int8_target: str | None = None
    calib_data: str | None = None
    calib_size: int = 256
    calib_method: str = "minmax"
    calib_cache: str | None = None
    opset: int = DEFAULT_OPSET
    batch: tuple[int, int, int] = (1, 8, 32)
    input_size: int | None = None
    workspace_gib: float = 4.0
    timing_cache: str | None = None
    opt_level: int | None = None
    simplify: bool = False
    tf32: bool = False
    trt_compat: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        known = variants.precisions()
        unknown = [p for p in self.precisions if p not in known]
        if unknown:
            raise ResnetDeployError(f"unknown precision {', '.join(map(repr, unknown))}; choose from: "
                                    f"{', '.join(known)}")
        object.__setattr__(self, "precisions", tuple(dict.fromkeys(("fp32", *self.precisions))))
        object.__setattr__(self, "batch", parse_batch(self.batch))
        for name in ("timing_cache", "calib_cache"):
            if getattr(self, name) is not None:
                object.__setattr__(self, name, str(getattr(self, name)))
        object.__setattr__(self, "trt_compat", parse_compat(self.trt_compat))
        self._check_trt_compat()
        if self.int8_target is not None and "int8" not in self.precisions:
            raise ResnetDeployError(f"--int8-target {self.int8_target} needs --int8")
        if self.int8_target not in (None, *INT8_TARGET_CHOICES):
            raise ResnetDeployError(f"unknown --int8-target {self.int8_target!r}; choose one of: "
                                    f"{', '.join(INT8_TARGET_CHOICES)}")
        if self.calib_method not in CALIB_METHODS:
            raise ResnetDeployError(f"unknown --calib-method {self.calib_method!r}; choose one of: "
                                    f"{', '.join(CALIB_METHODS)}")
        images, gib = limits.bound("images")[1], limits.bound("gib")[1]
        for ok, name, want, found in (
                (_is_int(self.calib_size) and 1 <= self.calib_size <= images, "--calib-size", f"1 to {images:,.0f}",
                 self.calib_size),
                (0 < self.workspace_gib <= gib, "--workspace", f"above 0 and at most {gib:g} GiB", self.workspace_gib),
                (_is_int(self.opset) and 7 <= self.opset <= 25, "--opset", "between 7 and 25", self.opset),
                (self.opt_level in (None, 0, 1, 2, 3, 4, 5), "--opt-level", "0..5", self.opt_level)):
            if not ok:
                raise ResnetDeployError(f"{name} must be {want}, found {found}")
        if self.simplify:
            try:
                import onnxsim  # noqa: F401
            except ImportError:
                raise ResnetDeployError("--simplify needs onnxsim (pip install onnxsim), which is not installed; the "
                                        "exported graph is already BN-folded and constant-folded without it") from None

    def _check_trt_compat(self) -> None:
        if self.trt_compat and not self.trt:
            raise ResnetDeployError(f"--trt-compat {','.join(self.trt_compat)} needs --trt (it describes engines)")
        if self.trt:
            check_fp8_compat(self.precisions, self.trt_compat)

    @classmethod
    def from_flags(cls, **options: Any) -> ExportOptions:
        """Options from the CLI's precision flags (`--fp16`, `--int8`, `--fp8`: one per registered precision with an
        `export_help`, passed as `fp16=True`) and the other options given."""
        chosen = tuple(p.name for p in variants.PRECISIONS.values() if p.flag and options.pop(p.name, False))
        return cls(precisions=(variants.REFERENCE, *chosen), **options)

    @property
    def int8_targets(self) -> tuple[str, ...]:
        """Targets of the int8 QDQ files written (empty without int8)."""
        if "int8" not in self.precisions:
            return ()
        return INT8_TARGET_CHOICES[self.int8_target or ("both" if self.trt else "cpu")]

    @property
    def calibrated(self) -> bool:
        """Whether some precision written needs calibration images."""
        return any(variants.PRECISIONS[p].quantized for p in self.precisions)

    def writes(self, variant: Variant) -> bool:
        """Whether this export writes `variant`'s file."""
        if variant.runs is not None or variant.precision not in self.precisions:
            return False
        if variant.format == "engine":
            return self.trt and variant.built_from is not None and self.writes(variants.get(variant.built_from))
        return variant.precision != "int8" or variant.target in self.int8_targets

    def selected(self) -> tuple[Variant, ...]:
        """The registry's variants this export writes, in registry order."""
        return tuple(v for v in variants.variants() if self.writes(v))

    def to_dict(self) -> dict[str, Any]:
        """JSON/YAML-ready form (config.yaml and the manifest's export_args)."""
        d = asdict(self)
        d["precisions"], d["batch"] = list(self.precisions), list(self.batch)
        d["int8_targets"], d["trt_compat"] = list(self.int8_targets), list(self.trt_compat)
        return d


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)
