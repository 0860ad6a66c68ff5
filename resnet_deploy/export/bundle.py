"""`export_bundle`: checkpoint -> bundle directory (fold BN, ONNX, FP16, INT8, TensorRT, manifest).

The bundle is built in a temporary directory beside the target and renamed into place only when complete
(ARCHITECTURE.md, "The bundle is the contract"), so a failed export never leaves something that looks complete and
`force=True` keeps the old bundle until the new one is whole.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from resnet_deploy import __version__
from resnet_deploy.export import quantize
from resnet_deploy.export.fold import check_fold, fold_batchnorm
from resnet_deploy.export.onnx import DEFAULT_OPSET, check_onnx, check_onnx_parity, export_onnx
from resnet_deploy.export.source import Source, load_calibration, load_source
from resnet_deploy.export.tensorrt import (
    build_engine,
    load_tensorrt,
    parse_batch,
    plan_build,
    trt_major,
)
from resnet_deploy.runtime.errors import ResnetDeployError
from resnet_deploy.runtime.manifest import MANIFEST_NAME, FileEntry, Manifest, write_manifest

FP16_RTOL = 1e-2  # fp16 logits within 1% (max abs / max |logit|) of fp32: the bound
LOG_NAME, CONFIG_NAME = "export.log", "config.yaml"
CHECK_IMAGES = 64  # calibration images the int8 models are compared with fp32 on (figures in export.log)


@dataclass(frozen=True)
class ExportOptions:
    """The resolved export arguments (written to config.yaml and the manifest's export_args)."""

    fp16: bool = False
    int8: bool = False
    trt: bool = False
    int8_targets: tuple[str, ...] = ()
    calib_data: str | None = None
    calib_size: int = 256
    calib_method: str = "minmax"
    opset: int = DEFAULT_OPSET
    batch: tuple[int, int, int] = (1, 8, 32)
    input_size: int | None = None
    workspace_gib: float = 4.0
    timing_cache: str | None = None
    opt_level: int | None = None
    simplify: bool = False
    tf32: bool = False


class ExportLog:
    """export.log: one line per stage and figure, echoed as it goes."""

    def __init__(self, echo: Callable[[str], None] | None = None) -> None:
        self.lines: list[str] = []
        self.echo = echo
        self.t0 = time.perf_counter()

    def __call__(self, stage: str, message: str) -> None:
        line = f"[{time.perf_counter() - self.t0:7.1f}s] {stage:<8} {message}"
        self.lines.append(line)
        if self.echo:
            self.echo(line)


def resolve_options(fp16: bool = False, int8: bool = False, trt: bool = False, int8_target: str | None = None,
                    calib_data: str | None = None, calib_size: int = 256, calib_method: str = "minmax",
                    opset: int = DEFAULT_OPSET, batch: str | tuple[int, int, int] = (1, 8, 32),
                    input_size: int | None = None, workspace: float = 4.0, timing_cache: str | Path | None = None,
                    opt_level: int | None = None, simplify: bool = False, tf32: bool = False,
                    calib_arrays: np.ndarray | None = None) -> ExportOptions:
    """Check the arguments before any work starts; ResnetDeployError names the first bad one."""
    if int8_target is not None and not int8:
        raise ResnetDeployError(f"--int8-target {int8_target} needs --int8")
    targets = {"cpu": ("cpu",), "trt": ("trt",), "both": ("cpu", "trt"), None: ("cpu", "trt") if trt else ("cpu",)}
    if int8_target not in targets:
        raise ResnetDeployError(f"unknown --int8-target {int8_target!r}; choose one of: cpu, trt, both")
    if int8 and calib_data is None and calib_arrays is None:
        raise ResnetDeployError("--int8 needs calibration images: add --calib-data SPEC (e.g. fashion-mnist, "
                                "imagenet:/path, folder:/path)")
    if calib_method not in quantize.CALIB_METHODS:
        raise ResnetDeployError(f"unknown --calib-method {calib_method!r}; choose one of: "
                                f"{', '.join(quantize.CALIB_METHODS)}")
    for ok, name, want, found in ((calib_size >= 1, "--calib-size", "at least 1", calib_size),
                                  (workspace > 0, "--workspace", "above 0 GiB", workspace),
                                  (7 <= opset <= 25, "--opset", "between 7 and 25", opset),
                                  (opt_level in (None, 0, 1, 2, 3, 4, 5), "--opt-level", "0..5", opt_level)):
        if not ok:
            raise ResnetDeployError(f"{name} must be {want}, found {found}")
    if simplify:
        try:
            import onnxsim  # noqa: F401
        except ImportError:
            raise ResnetDeployError("--simplify needs onnxsim (pip install onnxsim), which is not installed; "
                                    "the exported graph is already BN-folded and constant-folded without it") from None
    return ExportOptions(fp16, int8, trt, targets[int8_target] if int8 else (), calib_data, int(calib_size),
                         calib_method, int(opset), parse_batch(batch), input_size, float(workspace),
                         None if timing_cache is None else str(timing_cache), opt_level, simplify, tf32)


def check_destination(out: Path, force: bool) -> None:
    """Refuse an existing DIR unless `force`, and never replace something that is not a bundle."""
    if out.exists() or out.is_symlink():
        if not out.is_dir():
            raise ResnetDeployError(f"{out} exists and is not a directory; choose another --out")
        if not force:
            raise ResnetDeployError(f"{out} already exists; add --force to replace it, or choose another --out")
        if any(out.iterdir()) and not (out / MANIFEST_NAME).is_file():
            raise ResnetDeployError(f"{out} is a non-empty directory that is not a bundle (no {MANIFEST_NAME}); "
                                    "--force only replaces bundles")
    parent = out.parent
    while not parent.exists():
        parent = parent.parent
    if not parent.is_dir() or not os.access(parent, os.W_OK | os.X_OK):
        raise ResnetDeployError(f"cannot write {out}: {parent} is not a writable directory")


def export_bundle(out: Path, *, checkpoint: Path | None = None, arch: str | None = None, weights: Path | None = None,
                  classes: Path | list[str] | None = None, fp16: bool = False, int8: bool = False, trt: bool = False,
                  int8_target: str | None = None, calib_data: str | None = None, calib_size: int = 256,
                  calib_method: str = "minmax", calib_arrays: np.ndarray | None = None, opset: int = DEFAULT_OPSET,
                  batch: str | tuple[int, int, int] = (1, 8, 32), input_size: int | None = None,
                  workspace: float = 4.0, timing_cache: Path | None = None, opt_level: int | None = None,
                  simplify: bool = False, tf32: bool = False, force: bool = False,
                  echo: Callable[[str], None] | None = None) -> Path:
    """Export a model to a deployment bundle at `out`, written atomically.

    Args:
        out: the bundle directory to create.
        checkpoint: a resnet-deploy checkpoint; or `arch` + `weights` (a torchvision state dict), `classes` optional
            (a file with one name per line, or a list).
        fp16, int8, trt: also write model.fp16.onnx / the INT8 QDQ models / TensorRT engines.
        int8_target: "cpu" (model.int8.onnx), "trt" (model.int8-trt.onnx) or "both"; default cpu, both with `trt`.
        calib_data: data SPEC of the INT8 calibration images ("fashion-mnist", "imagenet:/path", ...), or
            `calib_arrays`: float32 (N, C, H, W) images already preprocessed (API only).
        calib_size, calib_method: number of calibration images; "minmax", "entropy" or "percentile".
        opset, batch, input_size: ONNX opset; "MIN:OPT:MAX" batch range; square input side (default: the model's).
        workspace, timing_cache, opt_level, tf32: TensorRT builder settings (GiB, file, 0..5, allow TF32).
        simplify: run onnxsim on model.onnx.
        force: replace an existing bundle at `out` (only once the new one is complete).
        echo: called with each export.log line as it is written.

    Returns:
        `out`.

    Raises:
        ResnetDeployError: bad input (nothing is written); TensorRTUnavailable: --trt without TensorRT or a GPU (the
            ONNX bundle is written first).
    """
    out = Path(out)
    opts = resolve_options(fp16, int8, trt, int8_target, calib_data, calib_size, calib_method, opset, batch,
                           input_size, workspace, timing_cache, opt_level, simplify, tf32, calib_arrays)
    check_destination(out, force)
    src = load_source(checkpoint, arch, weights, classes, input_size)
    calib = None
    if opts.int8:
        calib = calib_arrays if calib_arrays is not None else load_calibration(calib_data, src.preprocess, calib_size)
        if calib.ndim != 4 or tuple(calib.shape[1:]) != src.input_shape:
            raise ResnetDeployError(f"calibration images have shape {calib.shape}; expected (N, "
                                    f"{', '.join(map(str, src.input_shape))}) like the model's input")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp-{uuid.uuid4().hex[:8]}")
    tmp.mkdir()  # beside the target (same file system, so the final rename is atomic), with the umask's mode
    try:
        trt_error = _write_bundle(tmp, src, opts, calib, ExportLog(echo))
        _commit(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if trt_error is not None:  # same type: TensorRTUnavailable (nothing to build with) or a failed build
        raise type(trt_error)(f"wrote {out} with its ONNX models only; {trt_error}")
    return out


def _write_bundle(tmp: Path, src: Source, opts: ExportOptions, calib: np.ndarray | None,
                  log: ExportLog) -> ResnetDeployError | None:
    log("source", f"{src.kind} {src.path} (sha256 {src.sha256[:16]}...), {src.arch}, {len(src.classes)} classes, "
                  f"input {'x'.join(map(str, src.input_shape))}")
    files = _onnx_stages(tmp, src, opts, calib, log)
    trt_error = None
    if opts.trt:
        try:
            files += _trt_stage(tmp, src, opts, log)
        except ResnetDeployError as e:  # TensorRT missing, no GPU, or a failed build: the ONNX bundle stands
            trt_error = e
            log("trt", f"FAILED: {e}")
    (tmp / CONFIG_NAME).write_text(yaml.safe_dump(_args(opts), sort_keys=False))
    log("bundle", f"{len(files)} model file(s): {', '.join(f.path for f in files)}")
    (tmp / LOG_NAME).write_text("\n".join(log.lines) + "\n")
    # The manifest lists every file of the bundle, the text ones too, so that verify_files covers them all.
    texts = [FileEntry.for_file(tmp, name, "none", fmt="text") for name in (CONFIG_NAME, LOG_NAME)]
    manifest = Manifest(arch=src.arch, classes=src.classes, preprocess=src.preprocess, files=files + texts,
                        batch=opts.batch, versions=_versions(), export_args=_args(opts),
                        source={"kind": src.kind, "path": str(src.path), "sha256": src.sha256})
    write_manifest(tmp, manifest)
    return trt_error


def _onnx_stages(tmp: Path, src: Source, opts: ExportOptions, calib: np.ndarray | None,
                 log: ExportLog) -> list[FileEntry]:
    folded = fold_batchnorm(src.model)
    diff, bound = check_fold(src.model, folded, src.input_shape)
    log("fold", f"BatchNorm folded into convolutions (0 BN left); max abs logit difference {diff:.2e} "
                f"(<= {bound:.0e})")
    export_onnx(folded, tmp / "model.onnx", src.input_shape, opts.opset, _onnx_metadata(src, opts))
    if opts.simplify:
        _simplify(tmp / "model.onnx")
    parity = check_onnx_parity(src.model, tmp / "model.onnx", src.input_shape, batches=(1, 3))
    log("onnx", f"model.onnx opset {opts.opset}, checker (full) and shape inference pass, no BatchNormalization; "
                f"vs PyTorch max abs: " + ", ".join(f"batch {n}: {d:.2e}" for n, d in parity.items()))
    files = [FileEntry.for_file(tmp, "model.onnx", "fp32", info={"opset": opts.opset, "parity_max_abs": parity})]
    probe = calib[:16] if calib is not None else np.random.default_rng().standard_normal(
        (16, *src.input_shape), dtype=np.float32)
    if opts.fp16:
        files.append(_fp16_stage(tmp, probe, log))
    if opts.int8:
        files += _int8_stage(tmp, calib, opts, log)
    return files


def _fp16_stage(tmp: Path, probe: np.ndarray, log: ExportLog) -> FileEntry:
    quantize.convert_fp16(tmp / "model.onnx", tmp / "model.fp16.onnx")
    cmp = quantize.compare_onnx(tmp / "model.onnx", tmp / "model.fp16.onnx", probe)
    if not cmp["rel"] <= FP16_RTOL:
        raise ResnetDeployError(f"fp16 model differs from fp32 by {cmp['rel']:.2%} of the largest logit (limit "
                                f"{FP16_RTOL:.0%}); this network does not fit fp16: export without --fp16")
    log("fp16", f"model.fp16.onnx (fp32 I/O) vs fp32 on {cmp['n']} images: max abs {cmp['max_abs']:.2e}, relative "
                f"{cmp['rel']:.2e}, top-1 agreement {cmp['top1_agree']:.1%}")
    return FileEntry.for_file(tmp, "model.fp16.onnx", "fp16", info={k: cmp[k] for k in ("max_abs", "rel")})


def _int8_stage(tmp: Path, calib: np.ndarray, opts: ExportOptions, log: ExportLog) -> list[FileEntry]:
    files = []
    with tempfile.TemporaryDirectory(prefix="resnet-deploy-quant-") as work:
        pre = quantize.preprocess_for_quantization(tmp / "model.onnx", Path(work) / "model.pre.onnx")
        for target in opts.int8_targets:
            name = "model.int8.onnx" if target == "cpu" else "model.int8-trt.onnx"
            quantize.quantize_int8(pre, tmp / name, calib, target, opts.calib_method)
            cmp = quantize.compare_onnx(tmp / "model.onnx", tmp / name, calib[:CHECK_IMAGES])
            kind = "U8S8 for ONNX Runtime on CPUs" if target == "cpu" else "symmetric S8S8 for TensorRT"
            log("int8", f"{name} (QDQ {kind}, per-channel, {opts.calib_method} on {len(calib)} images): on those "
                        f"images top-1 agreement with fp32 {cmp['top1_agree']:.1%}, relative max abs {cmp['rel']:.2e}")
            files.append(FileEntry.for_file(tmp, name, "int8", target=target, info={
                "calib_method": opts.calib_method, "calib_images": len(calib), "calib_data": opts.calib_data,
                "top1_agree_calib": cmp["top1_agree"]}))
    return files


def _trt_stage(tmp: Path, src: Source, opts: ExportOptions, log: ExportLog) -> list[FileEntry]:
    trt = load_tensorrt()
    precisions = ["fp32"] + ["fp16"] * opts.fp16 + ["int8"] * ("trt" in opts.int8_targets)
    cache = Path(opts.timing_cache) if opts.timing_cache else None
    files = []
    for precision in precisions:
        plan = plan_build(trt_major(trt), precision, opts.tf32)
        info = build_engine(tmp, plan, src.input_shape, opts.batch, int(opts.workspace_gib * (1 << 30)), cache,
                            opts.opt_level, trt)
        log("trt", f"{plan.engine} from {plan.onnx}: TensorRT {info['tensorrt_version']}, {info['gpu']} "
                   f"(sm {info['compute_capability']}), batch {':'.join(map(str, opts.batch))}")
        files.append(FileEntry.for_file(tmp, plan.engine, precision, fmt="engine", target="trt", info=info))
    return files


def _simplify(path: Path) -> None:
    import onnx
    import onnxsim

    model, ok = onnxsim.simplify(onnx.load(str(path)))
    if not ok:
        raise ResnetDeployError("onnxsim could not validate the simplified model; export without --simplify")
    onnx.save(model, str(path))
    check_onnx(path)


def _onnx_metadata(src: Source, opts: ExportOptions) -> dict[str, str]:
    pre = src.preprocess.to_dict()
    return {"arch": src.arch, "classes": json.dumps(src.classes), "num_classes": str(len(src.classes)),
            "input_size": json.dumps(list(src.input_shape)), "mean": json.dumps(pre["mean"]),
            "std": json.dumps(pre["std"]), "preprocess": json.dumps(pre), "source_sha256": src.sha256,
            "tool_version": f"resnet-deploy {__version__}", "opset": str(opts.opset)}


def _versions() -> dict[str, str | None]:
    out: dict[str, str | None] = {"resnet_deploy": __version__}
    for dist in ("torch", "torchvision", "onnx", "onnxruntime", "tensorrt"):
        try:
            out[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            out[dist] = None
    # JetPack installs TensorRT from a .deb without pip metadata: trust the imported module when engines were built.
    out["tensorrt"] = getattr(sys.modules.get("tensorrt"), "__version__", None) or out["tensorrt"]
    return out


def _args(opts: ExportOptions) -> dict[str, Any]:
    d = asdict(opts)
    d["batch"], d["int8_targets"] = list(opts.batch), list(opts.int8_targets)
    return d


def _commit(tmp: Path, out: Path) -> None:
    # Rename the old bundle aside first (not delete), so a failure in between leaves it whole.
    old = out.with_name(f".{out.name}.old-{uuid.uuid4().hex[:8]}") if out.exists() else None
    if old is not None:
        os.replace(out, old)
    try:
        os.replace(tmp, out)
    except BaseException:
        if old is not None:
            os.replace(old, out)
        raise
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
