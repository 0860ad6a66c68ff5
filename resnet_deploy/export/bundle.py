"""`export_bundle`: checkpoint -> bundle directory (fold BN, ONNX, FP16, INT8, FP8, TensorRT, manifest).

The bundle is built in a work directory beside the target and put in place only when complete (`staging.Workdir`;
docs/architecture.md, "The bundle"), so a failed or killed export never leaves something that looks complete,
`force=True` keeps the old bundle until the new one is whole, and the next export cleans up after a killed one.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import numpy as np
import yaml

from resnet_deploy import __version__
from resnet_deploy.export import qdq, quantize
from resnet_deploy.export.calibration import CalibrationCache, Provenance
from resnet_deploy.export.fold import check_fold, fold_batchnorm
from resnet_deploy.export.onnx import check_onnx, check_onnx_parity, export_onnx
from resnet_deploy.export.options import ExportOptions
from resnet_deploy.export.signing import check_can_sign, sign_bundle
from resnet_deploy.export.source import Source, load_calibration, load_source
from resnet_deploy.export.staging import Workdir, check_destination
from resnet_deploy.export.tensorrt import build_engine, load_tensorrt, plan_build, trt_major
from resnet_deploy.runtime import variants
from resnet_deploy.runtime.errors import ResnetDeployError
from resnet_deploy.runtime.manifest import FileEntry, Manifest, read_manifest, write_manifest
from resnet_deploy.runtime.variants import Variant
from resnet_deploy.system import installed_versions

FP16_RTOL = 1e-2  # fp16 logits within 1% (max abs / max |logit|) of fp32, else the network does not fit fp16
LOG_NAME, CONFIG_NAME = "export.log", "config.yaml"
# The libraries whose versions a manifest records ("versions"; docs/manifest.schema.json), besides resnet_deploy.
MANIFEST_LIBRARIES = ("torch", "torchvision", "onnx", "onnxruntime", "tensorrt")
CHECK_IMAGES = 64  # calibration images the int8 models are compared with fp32 on (figures in export.log)


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


def export_bundle(out: Path, options: ExportOptions | None = None, *, checkpoint: Path | None = None,
                  arch: str | None = None, weights: Path | None = None, classes: Path | list[str] | None = None,
                  calib_arrays: np.ndarray | None = None, force: bool = False,
                  echo: Callable[[str], None] | None = None, sign_key: Path | None = None) -> Path:
    """Export a model to a deployment bundle at `out`, written atomically.

    Args:
        out: the bundle directory to create.
        options: what to write and how (default: model.onnx only); see `ExportOptions`.
        checkpoint: a resnet-deploy checkpoint; or `arch` + `weights` (a torchvision state dict), `classes` optional
            (a file with one name per line, or a list).
        calib_arrays: float32 (N, C, H, W) calibration images already preprocessed, instead of `options.calib_data`.
        force: replace an existing bundle at `out` (only once the new one is complete).
        echo: called with each export.log line as it is written.
        sign_key: sign the bundle with this private key (`export/signing.py`) before it is put in place; neither the
            key nor its path is written into the bundle.

    Returns:
        `out`.

    Raises:
        ResnetDeployError: bad input (nothing is written); TensorRTUnavailable: --trt without TensorRT or a GPU (the
            ONNX bundle is written first).
    """
    out, opts = Path(out), options or ExportOptions()
    if opts.calibrated and opts.calib_data is None and calib_arrays is None:
        flags = "/".join(f"--{p}" for p in opts.precisions if variants.PRECISIONS[p].quantized)
        raise ResnetDeployError(f"{flags} needs calibration images: add --calib-data SPEC (e.g. fashion-mnist, "
                                "imagenet:/path, folder:/path)")
    check_destination(out, force)
    if sign_key is not None:  # a bad key is found before the export, not after it
        check_can_sign(sign_key)
    src = load_source(checkpoint, arch, weights, classes, opts.input_size)
    calib = None
    if opts.calibrated:
        calib = calib_arrays if calib_arrays is not None else load_calibration(opts.calib_data, src.preprocess,
                                                                                opts.calib_size)
        if calib.ndim != 4 or tuple(calib.shape[1:]) != src.input_shape:
            raise ResnetDeployError(f"calibration images have shape {calib.shape}; expected (N, "
                                    f"{', '.join(map(str, src.input_shape))}) like the model's input")
    out.parent.mkdir(parents=True, exist_ok=True)
    log = ExportLog(echo)
    # All temporary data in one work directory beside the target (same file system, so the commit is atomic).
    with Workdir(out, lambda line: log("cleanup", line)) as work:
        check_destination(out, force)  # again: recovering an interrupted --force may have put a bundle back
        trt_error = _write_bundle(_Work(work.new, work.tmp, src, opts, calib, log))
        if sign_key is not None:
            sign_bundle(work.new, sign_key)
        work.commit()
    if trt_error is not None:  # same type: TensorRTUnavailable (nothing to build with) or a failed build
        # what is usable now and what is not, before why: the bundle runs on CPUs as it is
        written = ", ".join(f.path for f in read_manifest(out).files if f.format in ("onnx", "engine"))
        raise type(trt_error)(f"wrote {out} with its ONNX models only ({written}: usable now, validate and predict "
                              f"run them); not built: the TensorRT engines; {trt_error}")
    return out


@dataclass
class _Work:
    """One export in progress: where it writes, what from, with which options."""

    tmp: Path  # the bundle being written
    scratch: Path  # intermediate files that do not go into the bundle
    src: Source
    opts: ExportOptions
    calib: np.ndarray | None
    log: ExportLog

    @cached_property
    def probe(self) -> np.ndarray:
        """Images the converted models are compared with fp32 on: calibration images, else random ones."""
        if self.calib is not None:
            return self.calib[:16]
        return np.random.default_rng().standard_normal((16, *self.src.input_shape), dtype=np.float32)

    @cached_property
    def quant_ready(self) -> Path:
        """model.onnx prepared for quantization once (shape inference, optimisation), shared by every target."""
        return quantize.preprocess_for_quantization(self.tmp / "model.onnx", self.scratch / "model.pre.onnx")

    @cached_property
    def fp32_check_logits(self) -> np.ndarray:
        """model.onnx's logits on the first calibration images, which every quantized model is compared with."""
        assert self.calib is not None
        return quantize.onnx_logits(self.tmp / "model.onnx", self.calib[:CHECK_IMAGES])

    @cached_property
    def calibration(self) -> CalibrationCache:
        """Provenance of the calibrated scales, and the ranges of the TensorRT-rule Q/DQ models (cached in a file)."""
        assert self.calib is not None
        provenance = Provenance.of(self.calib, self.opts.calib_data, self.src.sha256)
        return CalibrationCache(self.opts.calib_cache, provenance, lambda message: self.log("calib", message))

    def trt_ranges(self, method: str) -> dict[str, float]:
        """Activation ranges for TensorRT-rule Q/DQ by `method`: from the calibration cache, or calibrated now."""
        tensors = qdq.activation_tensors(self.quant_ready)
        return self.calibration.get(method, tensors, lambda: qdq.calibrate(self.quant_ready, tensors, self.calib,
                                                                            method))


def _write_bundle(w: _Work) -> ResnetDeployError | None:
    src, opts, log = w.src, w.opts, w.log
    log("source", f"{src.kind} {src.path} (sha256 {src.sha256[:16]}...), {src.arch}, {len(src.classes)} classes, "
                  f"input {'x'.join(map(str, src.input_shape))}")
    files, trt_error = [], None
    for variant in opts.selected():
        try:
            files.append(STEPS[variant.step](w, variant))
        except ResnetDeployError as e:
            if variant.format != "engine":
                raise
            # TensorRT missing, no GPU, or a failed build: the ONNX bundle stands, the remaining engines are skipped
            trt_error = e
            log("trt", f"FAILED: {e}")
            break
    (w.tmp / CONFIG_NAME).write_text(yaml.safe_dump(opts.to_dict(), sort_keys=False))
    log("bundle", f"{len(files)} model file(s): {', '.join(f.path for f in files)}")
    (w.tmp / LOG_NAME).write_text("\n".join(log.lines) + "\n")
    # The manifest lists every file of the bundle, the text ones too, so that verify_files covers them all.
    texts = [FileEntry.for_file(w.tmp, name, "none", fmt="text") for name in (CONFIG_NAME, LOG_NAME)]
    manifest = Manifest(arch=src.arch, classes=src.classes, preprocess=src.preprocess, files=files + texts,
                        batch=opts.batch, versions=_versions(), export_args=opts.to_dict(),
                        source={"kind": src.kind, "path": str(src.path), "sha256": src.sha256})
    write_manifest(w.tmp, manifest)
    return trt_error


def _entry(w: _Work, variant: Variant, info: dict) -> FileEntry:
    return FileEntry.for_file(w.tmp, variant.file, variant.precision, variant.format, variant.target, info)


def _onnx_step(w: _Work, variant: Variant) -> FileEntry:
    src, opts, log = w.src, w.opts, w.log
    folded = fold_batchnorm(src.model)
    diff, bound = check_fold(src.model, folded, src.input_shape)
    log("fold", f"BatchNorm folded into convolutions (0 BN left); max abs logit difference {diff:.2e} "
                f"(<= {bound:.0e})")
    path = w.tmp / variant.file
    export_onnx(folded, path, src.input_shape, opts.opset, _onnx_metadata(src, opts))
    if opts.simplify:
        _simplify(path)
    parity = check_onnx_parity(src.model, path, src.input_shape, batches=(1, 3))
    log("onnx", f"{variant.file} opset {opts.opset}, checker (full) and shape inference pass, no BatchNormalization; "
                f"vs PyTorch max abs: " + ", ".join(f"batch {n}: {d:.2e}" for n, d in parity.items()))
    return _entry(w, variant, {"opset": opts.opset, "parity_max_abs": parity})


def _fp16_step(w: _Work, variant: Variant) -> FileEntry:
    fp32, path = w.tmp / "model.onnx", w.tmp / variant.file
    quantize.convert_fp16(fp32, path)
    cmp = quantize.compare_onnx(fp32, path, w.probe)
    if not cmp["rel"] <= FP16_RTOL:
        raise ResnetDeployError(f"fp16 model differs from fp32 by {cmp['rel']:.2%} of the largest logit (limit "
                                f"{FP16_RTOL:.0%}); this network does not fit fp16: export without --fp16")
    w.log("fp16", f"{variant.file} (fp32 I/O) vs fp32 on {cmp['n']} images: max abs {cmp['max_abs']:.2e}, relative "
                  f"{cmp['rel']:.2e}, top-1 agreement {cmp['top1_agree']:.1%}")
    return _entry(w, variant, {k: cmp[k] for k in ("max_abs", "rel")})


def _int8_step(w: _Work, variant: Variant) -> FileEntry:
    opts, calib, path = w.opts, w.calib, w.tmp / variant.file
    assert calib is not None  # export_bundle loads calibration images whenever an int8 variant is selected
    amax = w.trt_ranges(opts.calib_method) if variant.target == "trt" else None
    quantize.quantize_int8(w.quant_ready, path, calib, variant.target, opts.calib_method, amax)
    kind = "U8S8 for ONNX Runtime on CPUs" if variant.target == "cpu" else "symmetric S8S8 by TensorRT's rules"
    return _quantized_entry(w, variant, kind, opts.calib_method)


def _fp8_step(w: _Work, variant: Variant) -> FileEntry:
    assert w.calib is not None
    quantize.quantize_fp8(w.quant_ready, w.tmp / variant.file, w.calib, w.trt_ranges(quantize.FP8_METHOD))
    return _quantized_entry(w, variant, "FP8 E4M3 by TensorRT's rules", quantize.FP8_METHOD)


def _quantized_entry(w: _Work, variant: Variant, kind: str, method: str) -> FileEntry:
    """Compare a quantized model with fp32 on calibration images, log it, and record where its scales came from."""
    calib = w.calib
    assert calib is not None
    logits = quantize.onnx_logits(w.tmp / variant.file, calib[:CHECK_IMAGES],
                                  graph_optimization=variant.options.get("graph_optimization", "all"))
    cmp = quantize.compare_logits(w.fp32_check_logits, logits)
    w.log(variant.precision, f"{variant.file} (QDQ {kind}, per-channel weights, {method} on {len(calib)} images): on "
                             f"those images top-1 agreement with fp32 {cmp['top1_agree']:.1%}, relative max abs "
                             f"{cmp['rel']:.2e}")
    return _entry(w, variant, {"calib_method": method, "calib_images": len(calib), "calib_data": w.opts.calib_data,
                               "top1_agree_calib": cmp["top1_agree"], "calibration": w.calibration.record(method)})


def _engine_step(w: _Work, variant: Variant) -> FileEntry:
    opts, trt = w.opts, load_tensorrt()
    plan = plan_build(trt_major(trt), variant, opts.tf32, opts.trt_compat)
    cache = Path(opts.timing_cache) if opts.timing_cache else None
    info = build_engine(w.tmp, plan, w.src.input_shape, opts.batch, int(opts.workspace_gib * (1 << 30)), cache,
                        opts.opt_level, trt)
    travels = ", ".join(c for c, on in (("version-compatible (lean runtime embedded)", plan.version_compatible),
                                        ("hardware-compatible (Ampere+)", plan.hardware_level != "NONE")) if on)
    w.log("trt", f"{plan.engine} from {plan.onnx}: TensorRT {info['tensorrt_version']}, {info['gpu']} "
                 f"(sm {info['compute_capability']}), batch {':'.join(map(str, opts.batch))}"
                 + (f", {travels}" if travels else ""))
    return _entry(w, variant, info)


# Export step of each variant (the registry's `step`): a new variant with a new kind of file adds its step here.
STEPS: dict[str, Callable[[_Work, Variant], FileEntry]] = {
    "onnx": _onnx_step, "fp16": _fp16_step, "int8": _int8_step, "fp8": _fp8_step, "engine": _engine_step,
}


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
    out |= installed_versions(MANIFEST_LIBRARIES)
    # JetPack installs TensorRT from a .deb without pip metadata: trust the imported module when engines were built.
    out["tensorrt"] = getattr(sys.modules.get("tensorrt"), "__version__", None) or out["tensorrt"]
    return out
