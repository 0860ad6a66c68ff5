"""How long `resnet-deploy export` takes for ResNet-50 with --fp16 --int8 on this machine (target: under 2 min), and
which INT8 flavour ONNX Runtime runs faster here (U8S8 for CPUs vs the symmetric S8S8 one made for TensorRT).

Weights are random in torchvision's layout (export time does not depend on their values); INT8 is calibrated on
`--calib-size` Fashion-MNIST training images through the bundle's ImageNet preprocessing (grey -> RGB, resize 256,
crop 224), as `--calib-data fashion-mnist` does.

    .venv/bin/python benchmarks/export_resnet50.py [--calib-size 256] [--calib-method minmax] [--no-latency]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from resnet_deploy import models
from resnet_deploy.export import ExportOptions, export_bundle, quantize
from resnet_deploy.export.options import CALIB_METHODS
from resnet_deploy.runtime.manifest import read_manifest
from resnet_deploy.runtime.onnx_backend import OrtBackend
from resnet_deploy.validate.latency import measure_latency, summarize


def time_export(root: Path, calib_size: int, calib_method: str) -> tuple[Path, float]:
    torch.manual_seed(0)
    weights = root / "resnet50_random.pth"
    torch.save(models.build("resnet50").state_dict(), weights)
    t0, cpu0 = time.perf_counter(), time.process_time()
    out = export_bundle(root / "bundle", ExportOptions(("fp16", "int8"), calib_data="fashion-mnist",
                                                     calib_size=calib_size, calib_method=calib_method),
                        arch="resnet50", weights=weights, echo=print)
    wall, cpu = time.perf_counter() - t0, time.process_time() - cpu0
    print(f"CPU time of the export process (all threads): {cpu:.1f} s; load average now {os.getloadavg()[0]:.1f}")
    return out, wall


def int8_latency(bundle: Path, threads: int, duration_s: float) -> None:
    """p50 at batch 1 of fp32, U8S8 and S8S8 QDQ models on ORT's CPU provider, with the one timing routine."""
    from resnet_deploy.data import load_eval_arrays

    pre = read_manifest(bundle).preprocess
    calib, _, _ = load_eval_arrays("fashion-mnist", pre, limit=64, split="train")
    t0 = time.perf_counter()
    pre_path = quantize.preprocess_for_quantization(bundle / "model.onnx", bundle.parent / "pre.onnx")
    trt_path = quantize.quantize_int8(pre_path, bundle.parent / "model.int8-trt.onnx", calib, "trt")
    print(f"S8S8 (TensorRT flavour) quantization on {len(calib)} images: {time.perf_counter() - t0:.1f} s")
    x = np.random.default_rng(0).standard_normal((1, 3, 224, 224), dtype=np.float32)
    print("\n| model (ORT CPU, batch 1) | p50 ms |\n| --- | ---: |")
    for name, path in (("fp32 model.onnx", bundle / "model.onnx"), ("fp16 model.fp16.onnx", bundle / "model.fp16.onnx"),
                       ("int8 U8S8 model.int8.onnx", bundle / "model.int8.onnx"),
                       ("int8 S8S8 model.int8-trt.onnx", trt_path)):
        run = OrtBackend(Path(path), threads=threads).run
        stats = summarize(measure_latency(lambda r=run: r(x), warmup_s=1.0, duration_s=duration_s).host_s)
        print(f"| {name} | {stats.p50_ms:.1f} |")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--calib-size", type=int, default=256)
    ap.add_argument("--calib-method", default="minmax", choices=CALIB_METHODS)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--duration-s", type=float, default=3.0)
    ap.add_argument("--no-latency", action="store_true")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="export-r50-") as tmp:
        out, wall = time_export(Path(tmp), args.calib_size, args.calib_method)
        sizes = {f.path: f.size / 2**20 for f in read_manifest(out).files}
        print(f"\nexport ResNet-50 --fp16 --int8 ({args.calib_method}, {args.calib_size} images): {wall:.1f} s wall; "
              + ", ".join(f"{k} {v:.1f} MiB" for k, v in sizes.items()))
        if not args.no_latency:
            int8_latency(out, args.threads, args.duration_s)


if __name__ == "__main__":
    main()
