"""The command line's shared pieces: its presentation (every line printed goes through `echo`/`echo_json`, every
error becomes one line in `Group`), option types and decorators (backend names from the variant registry, the export
options with ExportOptions' own defaults, the options several commands take alike)."""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from typing import Any

import click

from resnet_deploy.runtime import limits, variants
from resnet_deploy.runtime.errors import ResnetDeployError, printable, quote


def echo(*lines: str, err: bool = False) -> None:
    """Print `lines`, each made safe for a terminal (`printable`: a line break or escape sequence inside one is shown
    as `\\n`, `\\x1b`, so one line stays one line). Every line the command line prints goes through here: class
    names, file names, a server's answers and log lines in them come from outside."""
    click.echo("\n".join(printable(line) for line in lines), err=err)


def echo_json(obj: Any) -> None:
    """Print `obj` as indented JSON (JSON strings hold no raw line breaks, so each line is one `echo` line)."""
    echo(*json.dumps(obj, indent=2).splitlines())


def prediction_lines(images: Sequence[str], results: Iterable[Any]) -> list[str]:
    """`predict`'s text: each image's top class and score, then its other top-k classes indented."""
    lines = []
    for im, r in zip(images, results, strict=True):
        lines += [f"{im}: {r.label} ({r.score:.4f})",
                  *(f"    {label} ({score:.4f}) [class {c}]" for c, label, score in r.topk[1:])]
    return lines


class UserError(click.ClickException):
    """A one-line error for bad input, exit code 2."""

    exit_code = 2


class Group(click.Group):
    """Turns the library's ResnetDeployError, and bad option values, into one line (no traceback) for every command."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except ResnetDeployError as e:  # messages may quote names from bundles and folders: printed escaped
            raise UserError(printable(str(e))) from None
        except click.UsageError as e:
            # A bad option value of a subcommand: one line naming the choices, not click's usage block.
            raise UserError(printable(e.format_message())) from None


def bounded(kind: str, *, positive: bool = False) -> click.ParamType:
    """The click type of a number of this kind (`limits.BOUNDS`): an integer range, or for seconds, GiB and
    tolerances a float range (`positive`: 0 itself excluded)."""
    low, high = limits.bound(kind)
    if kind in ("seconds", "gib", "tolerance"):
        return click.FloatRange(low, high, min_open=positive)
    return click.IntRange(int(low), int(high))


class Backends(click.ParamType):
    """Backend names from the variant registry (comma-separated when `many`), checked when the command runs."""

    name = "backend"

    def __init__(self, many: bool = False, special: tuple[str, ...] = ()) -> None:
        self.many, self.special = many, special

    def get_metavar(self, param: click.Parameter, ctx: click.Context | None = None) -> str:
        return "[" + "|".join((*self.special, *variants.names())) + "]" + (",..." if self.many else "")

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        if not isinstance(value, str):
            return value
        names = [v.strip() for v in value.split(",") if v.strip()] if self.many else [value]
        valid = (*self.special, *variants.names())
        unknown = [n for n in names if n not in valid]
        if unknown or not names:
            self.fail(f"unknown backend {', '.join(map(repr, unknown)) or repr(value)}; choose from: "
                      f"{', '.join(valid)}", param, ctx)
        return names if self.many else value


DEVICE = click.option("--device", type=click.Choice(variants.DEVICES), default="cpu", show_default=True)
THREADS = click.option("--threads", type=bounded("threads"), help="Intra-op threads (default: one per core).")
CHECKPOINT = click.option("--checkpoint", type=click.Path(path_type=str),
                          help="Source checkpoint if not where the manifest says.")
JSON_FILE = click.option("--json", "json_file", type=click.Path(path_type=str), help="Also write the JSON report here.")
TRUSTED_KEY = click.option(
    "--trusted-key", "trusted_keys", multiple=True, type=click.Path(path_type=str), metavar="PUBLIC.pem",
    callback=lambda ctx, param, value: list(value) or None,
    help="Load BUNDLE only if signed by this publisher's key (ECDSA public key, PEM; repeat to trust several). "
         "Needs the signing extra.")
DATA_HELP = "Data SPEC: fashion-mnist, cifar10[:PATH], imagenet:PATH, folder:PATH."
# validate --layerwise: the other ONNX files of the registry, each precision's default tolerance from its row
LAYERWISE_HELP = ("Instead: compare fp32 and this ONNX variant (" + ", ".join(v.name for v in variants.onnx_files()[1:])
                  + ") layer by layer and name the first layer over --layer-tol (reports/layerwise-*).")
LAYER_TOL_HELP = "Range-relative error a layer may reach [default: " + ", ".join(
    f"{p.name} {p.layer_tolerance:g}" for p in variants.PRECISIONS.values() if p.layer_tolerance) + "]."


def export_options(command: Any) -> Any:
    """The export command's options; their defaults are ExportOptions' own, shown in the help, never copied."""
    from resnet_deploy.export.options import CALIB_METHODS, INT8_TARGET_CHOICES, ExportOptions

    d = ExportOptions()
    for decorator in reversed((
        # one flag per precision export writes (the registry's `Precision.export_help`): --fp16, --int8, --fp8
        *(click.option(p.flag, p.name, is_flag=True, help=p.export_help)
          for p in variants.PRECISIONS.values() if p.flag),
        click.option("--trt", is_flag=True, default=None, help="Also build TensorRT engines (TensorRT and a GPU)."),
        click.option("--int8-target", type=click.Choice(list(INT8_TARGET_CHOICES)),
                     help="INT8 flavour: cpu (model.int8.onnx), trt (model.int8-trt.onnx) or both "
                          "[default: cpu; both with --trt]."),
        click.option("--calib-data", help="Data SPEC of calibration images: fashion-mnist, folder:/path, ..."),
        click.option("--calib-size", type=bounded("images"), help=f"Calibration images [default: {d.calib_size}]."),
        click.option("--calib-method", type=click.Choice(CALIB_METHODS), help=f"[default: {d.calib_method}]"),
        click.option("--calib-cache", type=click.Path(dir_okay=False),
                     help="Calibrated ranges file: reused when made from the same checkpoint and images, else "
                          "rewritten."),
        click.option("--opset", type=int, help=f"ONNX opset (17 needs torch's TorchScript exporter) "
                                                f"[default: {d.opset}]."),
        click.option("--batch", help=f"Dynamic batch range MIN:OPT:MAX [default: {':'.join(map(str, d.batch))}]."),
        # bounded where it is used (export/source.py: 8 to MAX_SIDE pixels)
        click.option("--input-size", type=int, help="Square input side (default: the model's preprocessing)."),
        click.option("--workspace", "workspace_gib", type=bounded("gib", positive=True),
                     help=f"TensorRT workspace, GiB [default: {d.workspace_gib}]."),
        click.option("--timing-cache", type=click.Path(dir_okay=False), help="TensorRT timing cache (read, saved)."),
        click.option("--opt-level", type=int, help="TensorRT builder optimization level 0..5 (TensorRT's default 3)."),
        click.option("--tf32", is_flag=True, default=None, help="Allow TF32 in fp32 TensorRT engines."),
        click.option("--trt-compat", type=click.Choice(["none", "version", "hardware", "version,hardware"]),
                     help="Engines that travel: version (later TensorRT and the lean runtime run them), hardware "
                          "(every Ampere or later GPU) [default: none]."),
        click.option("--simplify", is_flag=True, default=None, help="Run onnxsim on model.onnx (needs onnxsim)."),
    )):
        command = decorator(command)
    return command


def parse_numbers(text: str, option: str, kind: str) -> list[int]:
    """`"1,8,32"` -> [1, 8, 32] for a comma-separated option (`--batch`, `--concurrency`), each within the bounds of
    its kind (`limits.BOUNDS`); else a one-line error."""
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise ResnetDeployError(f"{option} must be comma-separated numbers, found {quote(text)}") from None
    if not values:
        raise ResnetDeployError(f"{option} needs at least one number, found {quote(text)}")
    return [limits.check(kind, v, option) for v in values]
