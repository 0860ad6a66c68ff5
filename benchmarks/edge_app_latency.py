"""Edge app timings: cold start (bundle load to first prediction) and per-image latency of examples/edge_app/app.py.

Each figure comes from a fresh `python app.py` process (so the cold start is cold, as on a device that just booted
the app), repeated `--repeats` times; the median of the repeats is printed as a Markdown table for RESULTS.md.

Two bundles are exported here unless given: ResNet-20 for Fashion-MNIST (1x28x28, the project's demo model) fed the
first 200 Fashion-MNIST test images as 28x28 PNGs, and ResNet-50 (3x224x224, resize 256 + crop 224) fed the same
images upscaled to 640x480 RGB JPEGs, as a camera would deliver them. Untrained weights: latency does not depend on
the weights' values. INT8 is calibrated on 64 Fashion-MNIST training images.

    .venv/bin/python benchmarks/edge_app_latency.py [--fashion-bundle DIR] [--resnet50-bundle DIR] [--repeats 5]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image

from resnet_deploy.runtime.machine import cpu_model
from resnet_deploy.runtime.preprocess import IMAGENET_MEAN, IMAGENET_STD, Preprocess

ROOT = Path(__file__).resolve().parents[1]
APP = ROOT / "examples" / "edge_app" / "app.py"
FMNIST = Path("/usr/share/datasets/fashion-mnist")
FIELDS = ("import_ms", "load_ms", "first_image_ms", "cold_start_ms", "latency_ms_p50", "latency_ms_p90")


def fashion_images(split: str, n: int) -> np.ndarray:
    """The first n Fashion-MNIST images of a split, uint8 (n, 28, 28)."""
    from resnet_deploy.data import read_idx

    name = "train-images-idx3-ubyte.gz" if split == "train" else "t10k-images-idx3-ubyte.gz"
    return read_idx(FMNIST / name)[:n]


def export(out: Path, arch: str, pre: Preprocess, num_classes: int) -> Path:
    """An untrained `arch` exported to fp32 + int8 (CPU) through the project's one export path."""
    import torch

    from resnet_deploy import models
    from resnet_deploy.checkpoint import save_model
    from resnet_deploy.export import ExportOptions, export_bundle

    torch.manual_seed(0)
    model = models.build(arch, num_classes=num_classes, in_channels=pre.channels)
    ckpt = out.parent / f"{arch}.pt"
    save_model(ckpt, model, arch, [f"class {i}" for i in range(num_classes)], pre)
    calib = np.stack([pre(im) for im in fashion_images("train", 64)])
    return export_bundle(out, ExportOptions(("int8",), calib_size=64), checkpoint=ckpt, calib_arrays=calib, echo=print)


def write_images(folder: Path, n: int, size: tuple[int, int] | None) -> Path:
    """Fashion-MNIST test images as PNG files (native 28x28) or RGB JPEGs resized to `size` (w, h)."""
    folder.mkdir(parents=True, exist_ok=True)
    for i, a in enumerate(fashion_images("test", n)):
        im = Image.fromarray(a, mode="L")
        if size is None:
            im.save(folder / f"{i:04d}.png")
        else:
            im.resize(size, Image.BILINEAR).convert("RGB").save(folder / f"{i:04d}.jpg", quality=90)
    return folder


def run_app(bundle: Path, folder: Path, backend: str, threads: int, repeats: int, tmp: Path) -> dict:
    """Median of each timing field over `repeats` fresh app processes."""
    runs = []
    for r in range(repeats):
        out = tmp / f"summary-{backend}-{r}.json"
        cmd = [sys.executable, str(APP), str(bundle), str(folder), "--backend", backend, "--threads", str(threads),
               "--quiet", "--summary-json", str(out)]
        subprocess.run(cmd, check=True, capture_output=True, text=True)
        runs.append(json.loads(out.read_text()))
    return {"backend": runs[0]["backend"], "images": runs[0]["images"],
            **{f: statistics.median(r[f] for r in runs) for f in FIELDS}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--fashion-bundle", type=Path, help="a ResNet-20 Fashion-MNIST bundle (default: export one)")
    parser.add_argument("--resnet50-bundle", type=Path, help="a ResNet-50 bundle (default: export one)")
    parser.add_argument("--images", type=int, default=200)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="edge-bench-"))
    fashion_pre = Preprocess(input_size=(28, 28), channels=1, mean=(0.2860,), std=(0.3530,))
    imagenet_pre = Preprocess(input_size=(224, 224), channels=3, resize=256, crop=224, mean=IMAGENET_MEAN,
                              std=IMAGENET_STD)
    cases = [
        ("ResNet-20, Fashion-MNIST 28x28 PNG", args.fashion_bundle or export(tmp / "fashion", "cifar_resnet20",
                                                                             fashion_pre, 10),
         write_images(tmp / "png28", args.images, None)),
        ("ResNet-50, 640x480 JPEG", args.resnet50_bundle or export(tmp / "r50", "resnet50", imagenet_pre, 1000),
         write_images(tmp / "jpg640", args.images, (640, 480))),
    ]
    print(f"\n{cpu_model()}, {args.threads} threads, {args.images} images, median of {args.repeats} fresh processes; "
          f"load average before: {os.getloadavg()[0]:.2f} (other jobs on this machine inflate the figures)\n")
    print("| model, images | backend | runtime import ms | bundle load ms | first image ms | cold start ms | "
          "per image p50 ms | p90 ms |")
    print("| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |")
    for title, bundle, folder in cases:
        for backend in ("onnx", "int8", "auto"):
            s = run_app(bundle, folder, backend, args.threads, args.repeats, tmp)
            name = s["backend"] if backend != "auto" else f"auto -> {s['backend']}"
            print(f"| {title} | {name} | " + " | ".join(f"{s[f]:.2f}" for f in FIELDS) + " |", flush=True)
    print(f"\nload average after: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
