"""Recipes as frozen dataclasses: YAML fills them, `--set a.b=value` overrides them, unknown keys are errors by name.

The machinery (`from_dict`, `load_config`, `apply_overrides`, `to_dict`, `dump_yaml`) works for any nested frozen
dataclass whose fields are typed with bool, int, float, str, `X | None`, `Literal[...]`, `tuple[T, ...]` or another
dataclass, so export and validate can describe their own stage the same way. `TrainConfig` is the training recipe.

Values are range-checked once, where the dataclass is made (`Checked`: a `LIMITS` table per class), so a recipe, a
`--set` and a config built in code meet the same rules. Recipes come from colleagues: YAML aliases (`*name`, the
"billion laughs" expansion) are refused, and messages quote at most a short piece of any value.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import re
import types
import typing
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Literal, TypeVar

import yaml

from resnet_deploy.runtime.errors import ResnetDeployError, quote
from resnet_deploy.runtime.preprocess import MAX_SIDE

T = TypeVar("T")


# ---------------------------------------------------------------------------------------------------------- machinery
def _keys(cls: type, prefix: str = "") -> list[str]:
    hints = typing.get_type_hints(cls)
    out = []
    for f in dataclasses.fields(cls):
        tp = hints[f.name]
        out.extend(_keys(tp, f"{prefix}{f.name}.") if dataclasses.is_dataclass(tp) else [prefix + f.name])
    return out


def _unknown(key: str, cls: type, prefix: str, source: str) -> ResnetDeployError:
    valid = _keys(cls, prefix)
    sections = [prefix + f.name for f in dataclasses.fields(cls)]
    close = difflib.get_close_matches(key, sections + valid, n=1)
    parts = [f"unknown key {quote(key)} in {source}", *([f"did you mean '{close[0]}'?"] if close else []),
             f"valid keys: {', '.join(valid)}"]
    return ResnetDeployError("; ".join(parts))


def _type_name(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in typing.get_args(tp))
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_type_name(a) for a in typing.get_args(tp))
    if origin is tuple:
        return "a list of " + _type_name(typing.get_args(tp)[0])
    return "null" if tp is type(None) else getattr(tp, "__name__", str(tp))


def _yaml11_float(value: str) -> float:
    """A number PyYAML left as a string: it follows YAML 1.1, which reads "1e-4" (no dot) as one. Only text that
    starts as a number does (float() would also take "nan", "inf", "infinity")."""
    if value.strip()[:1] not in tuple("0123456789+-."):
        raise ValueError(value)
    return float(value)


def _coerce(value: Any, tp: Any, key: str, source: str) -> Any:
    """Check `value` against the field type `tp`; return it in the dataclass's form (lists become tuples)."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise ResnetDeployError(f"'{key}' in {source} must be a mapping of keys, found {quote(value)}")
        return from_dict(tp, value, source, prefix=key + ".")
    if origin in (typing.Union, types.UnionType):
        for a in args:
            try:
                return _coerce(value, a, key, source)
            except ResnetDeployError:
                continue
    elif origin is Literal:
        if value in args:
            return value
    elif origin is tuple:
        if isinstance(value, (list, tuple)):
            item = args[0]
            if (len(args) == 2 and args[1] is Ellipsis) or len(args) == len(value):
                items = args if args[-1] is not Ellipsis else (item,) * len(value)
                return tuple(_coerce(v, a, key, source) for v, a in zip(value, items, strict=True))
    elif tp is type(None):
        if value is None:
            return None
    elif tp is bool:
        if isinstance(value, bool):
            return value
    elif tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        try:
            if isinstance(value, str):
                return _yaml11_float(value)
        except ValueError:
            pass
    elif tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif tp is str:
        if isinstance(value, str):
            return value
    else:  # pragma: no cover - a field type this machinery does not know is a programming error
        raise TypeError(f"unsupported config field type {tp!r} for {key}")
    raise ResnetDeployError(f"'{key}' in {source} must be {_type_name(tp)}, found {quote(value)}")


def from_dict(cls: type[T], data: dict[str, Any], source: str = "config", prefix: str = "") -> T:
    """Build the frozen dataclass `cls` from a (nested) dict; unknown keys and wrong types are errors by name."""
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ResnetDeployError(f"{source} must be a YAML mapping of keys, found {type(data).__name__}")
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    kwargs = {}
    for k, v in data.items():
        if k not in names:
            raise _unknown(f"{prefix}{k}", cls, prefix, source)
        kwargs[k] = _coerce(v, hints[k], f"{prefix}{k}", source)
    try:
        return cls(**kwargs)
    except OutOfRange as e:
        raise ResnetDeployError(f"'{prefix}{e.key}' in {source} must be {e.allowed}, found {quote(e.value)}") from None
    except TypeError as e:  # a field without a default that the recipe did not set
        raise ResnetDeployError(f"{source}: {e}") from None


MAX_RECIPE_BYTES = 1 << 20


class _NoAliasLoader(yaml.SafeLoader):
    """yaml.SafeLoader that refuses aliases: `*name` repeats a node, and nested repeats grow exponentially."""

    def compose_node(self, parent: Any, index: Any) -> Any:
        if self.check_event(yaml.AliasEvent):
            mark = self.peek_event().start_mark
            raise yaml.composer.ComposerError(None, None, f"line {mark.line + 1}: YAML aliases (*name) are not "
                                              "allowed; write the value out", None)
        return super().compose_node(parent, index)


def _load_yaml(text: str) -> Any:
    return yaml.load(text, Loader=_NoAliasLoader)  # noqa: S506 - a SafeLoader subclass


@dataclass(frozen=True)
class Allowed:
    """What one config value may be: `test(value)` must hold; `text` says it in the error."""

    test: Callable[[Any], bool]
    text: str


def between(lo: float, hi: float | None = None) -> Allowed:
    """A finite number from `lo` to `hi` (inclusive; no upper bound when None)."""
    return Allowed(lambda v: math.isfinite(v) and lo <= v and (hi is None or v <= hi),
                   f"from {lo:g} to {hi:g}" if hi is not None else f">= {lo:g}")


def above(lo: float, hi: float | None = None) -> Allowed:
    """A finite number above `lo` (exclusive), at most `hi`."""
    return Allowed(lambda v: math.isfinite(v) and lo < v and (hi is None or v <= hi),
                   f"> {lo:g}" + (f" and <= {hi:g}" if hi is not None else ""))


class OutOfRange(ResnetDeployError):
    """A config value outside its `Allowed` range; `from_dict` names it by its full key and source."""

    def __init__(self, key: str, value: Any, allowed: str) -> None:
        super().__init__(f"'{key}' must be {allowed}, found {quote(value)}")
        self.key, self.value, self.allowed = key, value, allowed


class Checked:
    """Base of config dataclasses: checks each field named in the class's LIMITS table when an instance is made."""

    LIMITS: ClassVar[dict[str, Allowed]] = {}

    def __post_init__(self) -> None:
        for name, rule in self.LIMITS.items():
            value = getattr(self, name)
            if value is None:
                continue  # None is allowed exactly when the field's type says `X | None`
            try:
                ok = bool(rule.test(value))
            except (TypeError, ValueError):  # a value of the wrong type, from code that skipped from_dict
                ok = False
            if not ok:
                raise OutOfRange(name, value, rule.text)


def to_dict(cfg: Any) -> dict[str, Any]:
    """The config as plain dicts and lists (YAML/JSON/`torch.load(weights_only=True)` ready)."""

    def plain(v: Any) -> Any:
        if dataclasses.is_dataclass(v):
            return {f.name: plain(getattr(v, f.name)) for f in dataclasses.fields(v)}
        return [plain(x) for x in v] if isinstance(v, (list, tuple)) else v

    return plain(cfg)


def apply_overrides(cfg: T, overrides: list[str] | tuple[str, ...], source: str = "--set") -> T:
    """Apply `a.b=value` overrides; values are parsed as YAML scalars (`1e-3`, `true`, `null`, `[1, 2]`)."""
    data = to_dict(cfg)
    for item in overrides:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise ResnetDeployError(f"{source} expects key=value (e.g. optim.lr=0.05), found {quote(item)}")
        parts = key.strip().split(".")
        node = data
        for i, p in enumerate(parts):
            if not isinstance(node, dict) or p not in node:
                raise _unknown(key.strip(), type(cfg), "", source)
            if i < len(parts) - 1:
                node = node[p]
        if isinstance(node[parts[-1]], dict):
            raise ResnetDeployError(f"{source} {key}: name a single field, e.g. {key}.{next(iter(node[parts[-1]]))}")
        try:
            node[parts[-1]] = _load_yaml(raw) if raw.strip() else ""
        except (yaml.YAMLError, RecursionError):  # not YAML (or refused YAML): the text itself
            node[parts[-1]] = raw
    return from_dict(type(cfg), data, source)


def load_config(cls: type[T], path: str | Path, overrides: list[str] | tuple[str, ...] = ()) -> T:
    """Read a YAML recipe into `cls`, then apply `--set` overrides."""
    path = Path(path)
    if not path.is_file():
        raise ResnetDeployError(f"recipe not found: {path}")
    if path.stat().st_size > MAX_RECIPE_BYTES:
        raise ResnetDeployError(f"recipe {path} is {path.stat().st_size:,} bytes, over the limit of "
                                f"{MAX_RECIPE_BYTES:,}; a recipe is a page of YAML")
    try:
        data = _load_yaml(path.read_text())
    except yaml.YAMLError as e:
        raise ResnetDeployError(f"recipe {path} is not valid YAML: {str(e).splitlines()[0][:200]}") from None
    except RecursionError:
        raise ResnetDeployError(f"recipe {path} is not valid YAML: nested too deeply") from None
    except UnicodeDecodeError:
        raise ResnetDeployError(f"recipe {path} is not a UTF-8 text file") from None
    return apply_overrides(from_dict(cls, data, f"recipe {path}"), overrides)


def dump_yaml(cfg: Any, path: str | Path | None = None) -> str:
    """The resolved config as YAML text; also written to `path` when given."""
    text = yaml.safe_dump(to_dict(cfg), sort_keys=False, default_flow_style=False, width=1000)
    if path is not None:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        Path(path).write_text(text)
    return text


# ------------------------------------------------------------------------------------------------------ training recipe
@dataclass(frozen=True)
class ModelConfig(Checked):
    """Which network of the paper (see `resnet_deploy.models.build`), and where its first weights come from."""

    # a URL is not fetched (a training run downloads nothing unasked); said so, rather than "file not found"
    LIMITS = {"weights": Allowed(lambda v: bool(v.strip()) and "://" not in v,
                                 "a local file path or null (download a URL yourself first, then give the file)")}

    arch: str = "cifar_resnet20"
    shortcut: Literal["A", "B", "C"] | None = None  # None: the family default (CIFAR A, ImageNet B)
    stride_in_1x1: bool = False
    zero_init_residual: bool = False
    weights: str | None = None  # start from a torchvision state dict or a resnet-deploy checkpoint (None: He init)
    weights_strict: bool = True  # every tensor but the classifier head must fit; false loads those that fit
    # Fixed weights and BN statistics, from the input on: "layerN" is the stem and layer1..layerN; "backbone" all
    # but the head.
    freeze: Literal["none", "stem", "layer1", "layer2", "layer3", "layer4", "backbone"] = "none"


@dataclass(frozen=True)
class DataConfig(Checked):
    """Where the images come from and how they are augmented."""

    LIMITS = {"input_size": between(8, MAX_SIDE), "pad": between(0, 64), "pca_std": between(0),
              "scale": Allowed(lambda v: 1 <= v[0] <= v[1] <= MAX_SIDE, f"[lo, hi] with 1 <= lo <= hi <= {MAX_SIDE}"),
              "val_split": between(0), "stats_images": between(1), "workers": between(0, 256)}

    spec: str = "fashion-mnist"  # a data SPEC: fashion-mnist, cifar10[:PATH], imagenet:PATH, folder:PATH
    download: bool = False  # let torchvision download Fashion-MNIST / CIFAR-10 when they are nowhere on disk
    input_size: int | None = None  # None: the data set's own size (28 Fashion-MNIST, 32 CIFAR, 224 folders)
    augment: Literal["crop_flip", "scale_pca", "none"] = "crop_flip"
    pad: int = 4  # crop_flip: pixels padded on each side before the random crop (§4.2)
    scale: tuple[int, int] | None = None  # scale_pca: shorter side random in [lo, hi]; None = (256, 480) at 224 (§3.4)
    pca_std: float = 0.1  # scale_pca: AlexNet's PCA lighting noise (Krizhevsky et al. 2012, §4.1)
    val_split: int = 0  # hold out this many training images as validation (§4.2's 45k/5k); 0 evaluates on the test set
    stats_images: int = 10000  # folder data sets: training images used for the per-pixel mean (all for small sets)
    workers: int = 8  # DataLoader workers for folder data sets
    unreadable: Literal["error", "skip"] = "error"  # folders: stop at an unreadable image, or decode all first and skip
    normalize: Literal["per_pixel_mean", "imagenet"] = "per_pixel_mean"  # imagenet: torchvision's mean/std (RGB)
    # Folder data sets: 3 reads every image as RGB (the default), 1 as grey (PIL's luma, ITU-R 601-2: a grey image
    # stays as it is). Fashion-MNIST and CIFAR-10 have their own (1 and 3).
    channels: Literal[1, 3] | None = None


@dataclass(frozen=True)
class OptimConfig(Checked):
    """SGD as §3.4/§4.2: momentum 0.9, weight decay 1e-4; `batch_size` and `lr` are global (all ranks together)."""

    LIMITS = {"batch_size": between(1, 65536), "lr": between(0), "momentum": between(0, 1),
              "weight_decay": between(0), "backbone_lr_mult": between(0)}

    batch_size: int = 128
    lr: float = 0.1
    momentum: float = 0.9
    weight_decay: float = 1e-4
    nesterov: bool = False
    backbone_lr_mult: float = 1.0  # every layer but the classifier head learns at lr x this (fine-tuning: 0.1)


@dataclass(frozen=True)
class ScheduleConfig(Checked):
    """Iteration-based learning-rate schedule."""

    LIMITS = {"iterations": between(1), "gamma": above(0), "warmup_lr": between(0),
              "milestones": Allowed(lambda v: all(m >= 1 for m in v) and list(v) == sorted(set(v)),
                                    "increasing iteration numbers >= 1"),
              "warmup_until_error": between(0, 1), "warmup_iterations": between(0), "plateau_patience": between(1),
              "plateau_threshold": between(0), "min_lr": between(0)}

    iterations: int = 64000
    policy: Literal["multistep", "plateau", "cosine"] = "multistep"  # cosine: from lr to min_lr after the ramp
    milestones: tuple[int, ...] = (32000, 48000)  # multistep: lr x gamma at each
    gamma: float = 0.1
    warmup_lr: float | None = None  # ResNet-110 (§4.2): this lr until the training error is below warmup_until_error
    warmup_until_error: float = 0.8
    warmup_iterations: int = 0  # linear ramp from 0 (large-batch multi-GPU runs; Goyal et al. 2017)
    plateau_patience: int = 3  # plateau: evaluations without improvement before lr x gamma (§3.4)
    plateau_threshold: float = 0.001  # plateau: error must improve by this much to count
    min_lr: float = 1e-5  # plateau: the floor; cosine: the final lr

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.policy == "cosine" and self.warmup_iterations >= self.iterations:  # no iterations left to decay
            raise OutOfRange("warmup_iterations", self.warmup_iterations,
                             f"below schedule.iterations ({self.iterations}) with the cosine policy")


@dataclass(frozen=True)
class RunConfig(Checked):
    """Engineering knobs that do not change the recipe's mathematics (except amp)."""

    LIMITS = {"seed": between(0, 2**32 - 1), "log_every": between(1), "eval_every": between(0),
              "device": Allowed(lambda v: re.fullmatch(r"auto|cpu|cuda(:\d{1,2})?", v) is not None,
                                "auto, cpu, cuda or cuda:N"),
              "eval_limit": between(1), "eval_batch_size": between(1, 65536), "checkpoint_every": between(0),
              "threads": between(1, 1024)}

    seed: int = 0
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    # auto: bf16 where the device computes it natively, fp16 + GradScaler on GPUs without, fp32 otherwise
    # (train/precision.py); fp16 needs a GPU; an explicit bf16 on a device that emulates it warns what it costs.
    amp: Literal["auto", "none", "bf16", "fp16"] = "auto"
    channels_last: bool = True  # NHWC activations: oneDNN's and cuDNN's fast convolution layout
    # torch.compile the model; auto: on CPUs with a C++ compiler for inductor's kernels, single process (measured
    # faster there, benchmarks/RESULTS.md), eager on GPUs (measured slower on an H200: the step is launch-bound)
    compile: bool | Literal["auto"] = False
    deterministic: bool = False
    log_every: int = 50
    eval_every: int = 2000  # 0: only at the end
    eval_limit: int | None = None  # evaluate on the first N test images (None: all)
    eval_batch_size: int = 500
    checkpoint_every: int = 5000  # 0: only last.pt and best.pt
    threads: int | None = None  # CPU threads (torch.set_num_threads); None: torch's default


@dataclass(frozen=True)
class TrainConfig:
    """A training recipe: model, data, optimiser, schedule and run settings."""

    name: str = "run"
    description: str = ""
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    run: RunConfig = field(default_factory=RunConfig)


def load_train_config(path: str | Path, overrides: list[str] | tuple[str, ...] = ()) -> TrainConfig:
    """Read a training recipe (`recipes/*.yaml`) and apply `--set` overrides."""
    return load_config(TrainConfig, path, overrides)
