"""The C++ SDK's example app against the Python edge app, on the same bundle, images and OpenVINO variant.

    .venv/bin/python benchmarks/cpp_vs_python.py [--bundle DIR ...] [--images 200] [--runs 5] [--threads 2]

For each bundle and variant (ov-fp32, ov-int8), both apps run `--runs` times as fresh processes, alternating:
`build/cpp/classify BUNDLE IMAGES... --variant V --json` and `examples/edge_app/app.py BUNDLE FOLDER --backend V`.
Cold start is measured from outside: process start (Popen) to its first prediction on stdout, with a warm file cache
and a warm OpenVINO model cache (the first run of each app fills the cache and is left out). Per-image latency is
each app's own figure for one image at batch 1 (read + decode + preprocess + inference + top-k), the images after the
first of every run pooled: p50 and p99.

Without --bundle, two are exported into a temporary folder: a demo-shaped ResNet-20 (Fashion-MNIST: 1 x 28 x 28,
per-pixel mean, untrained weights from the tests' helpers; bundles/demo is used instead where it exists) and a
torchvision-layout ResNet-50 (random weights, ImageNet preprocessing). Images: Fashion-MNIST test images as PNG for
ResNet-20 (generated 28 x 28 grey pictures without the data set), 500 x 375 JPEG pictures for ResNet-50.
Targets (README, "C++ and other languages"): cold start <= 0.3x Python's, p50 <= 0.95x Python's.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
CLASSIFY = ROOT / "build" / "cpp" / "classify"
EDGE_APP = ROOT / "examples" / "edge_app" / "app.py"
VARIANTS = ("ov-fp32", "ov-int8")


def fashion_images(n: int) -> list[np.ndarray]:
    """The first n Fashion-MNIST test images (28 x 28 grey), or generated pictures of that kind without the data."""
    try:
        from resnet_deploy.data.sources import load_arrays
        from resnet_deploy.data.spec import parse_spec

        return list(load_arrays(parse_spec("fashion-mnist"), "test").images[:n, 0])
    except Exception as e:  # no data set on this machine
        print(f"Fashion-MNIST not available ({e}); using generated 28 x 28 pictures")
        from cpp_corpus import pattern

        rng = np.random.default_rng(0)
        return [pattern(rng, 28, 28, 1) for _ in range(n)]


def photo_images(n: int) -> list[np.ndarray]:
    from cpp_corpus import pattern

    rng = np.random.default_rng(0)
    return [pattern(rng, 375, 500, 3) for _ in range(n)]


def make_resnet20(root: Path, images: list[np.ndarray]) -> Path:
    from helpers import tiny_checkpoint

    from resnet_deploy.data.sources import FMNIST_CLASSES
    from resnet_deploy.export import ExportOptions, export_bundle
    from resnet_deploy.runtime.preprocess import Preprocess

    rng = np.random.default_rng(0)
    pre = Preprocess((28, 28), 1, None, None, (0.2 + 0.2 * rng.random((1, 28, 28))).tolist(), (0.35,))
    ckpt = tiny_checkpoint(root / "resnet20.pt", list(FMNIST_CLASSES), pre, in_channels=1)
    calib = np.stack([pre(a) for a in images[:64]])
    return export_bundle(root / "resnet20", ExportOptions(("int8",), batch=(1, 8, 32)), checkpoint=ckpt,
                         calib_arrays=calib)


def make_resnet50(root: Path, images: list[np.ndarray]) -> Path:
    import torch

    from resnet_deploy import models
    from resnet_deploy.export import ExportOptions, export_bundle
    from resnet_deploy.runtime.preprocess import IMAGENET_MEAN, IMAGENET_STD, Preprocess

    torch.manual_seed(0)
    weights = root / "resnet50.pth"
    torch.save(models.build("resnet50").state_dict(), weights)
    pre = Preprocess((224, 224), 3, 256, 224, IMAGENET_MEAN, IMAGENET_STD)
    calib = np.stack([pre(a) for a in images[:32]])
    return export_bundle(root / "resnet50", ExportOptions(("int8",)), arch="resnet50", weights=weights,
                         calib_arrays=calib)


def write_images(folder: Path, images: list[np.ndarray], fmt: str) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i, a in enumerate(images):
        p = folder / f"{i:05d}.{'png' if fmt == 'PNG' else 'jpg'}"
        Image.fromarray(a).save(p, fmt, **({"quality": 90} if fmt == "JPEG" else {}))
        paths.append(p)
    return paths


def run_app(cmd: list[str], env: dict[str, str]) -> tuple[float, str, str]:
    """(seconds from process start to its first line on stdout, stdout, stderr)."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    first = proc.stdout.readline()
    cold = time.perf_counter() - t0
    rest, err = proc.communicate(timeout=600)
    if proc.returncode != 0:
        raise SystemExit(f"{cmd[0]} failed ({proc.returncode}): {err.strip()[-500:]}")
    return cold, first + rest, err


def cpp_run(app: Path, bundle: Path, paths: list[Path], variant: str, threads: int, env: dict[str, str]) -> dict:
    cold, out, err = run_app([str(app), str(bundle), *map(str, paths), "--variant", variant, "--threads",
                              str(threads), "--json"], env)
    lines = [json.loads(x) for x in out.splitlines()]
    summary = json.loads(err.strip().splitlines()[-1])
    return {"cold_ms": cold * 1e3, "own_cold_ms": summary["cold_start_ms"],
            "latencies": [r["latency_ms"] for r in lines[1:]], "variant": summary["variant"]}


def python_run(bundle: Path, folder: Path, variant: str, threads: int, env: dict[str, str], tmp: Path) -> dict:
    summary_path = tmp / "summary.json"
    cold, out, _ = run_app([sys.executable, str(EDGE_APP), str(bundle), str(folder), "--backend", variant,
                            "--threads", str(threads), "--summary-json", str(summary_path)],
                           {**env, "PYTHONUNBUFFERED": "1"})
    summary = json.loads(summary_path.read_text())
    lats = [float(m) for m in re.findall(r"\[(\d+\.\d+) ms\]", out)]
    return {"cold_ms": cold * 1e3, "own_cold_ms": summary["cold_start_ms"] + summary["import_ms"],
            "latencies": lats[1:], "p50_exact": summary["latency_ms_p50"], "variant": summary["backend"]}


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q / 100 * (len(ordered) - 1))))]


def machine() -> dict:
    from resnet_deploy.runtime.machine import cpu_flags, cpu_model

    wanted = ("avx512f", "avx512_vnni", "avx512_bf16", "amx_bf16", "amx_int8", "sha_ni")
    return {"cpu": cpu_model(), "cores": os.cpu_count(), "flags": [f for f in wanted if f in cpu_flags()],
            "python": platform.python_version()}


def bench(name: str, bundle: Path, paths: list[Path], args: argparse.Namespace, tmp: Path) -> list[dict]:
    env = {**os.environ, "RESNET_DEPLOY_CACHE": str(tmp / "cache")}
    rows = []
    for variant in args.variants.split(","):
        load_before = os.getloadavg()[0]
        runs: dict[str, list[dict]] = {"cpp": [], "python": []}
        for _ in range(args.runs):
            runs["cpp"].append(cpp_run(args.classify, bundle, paths, variant, args.threads, env))
            runs["python"].append(python_run(bundle, paths[0].parent, variant, args.threads, env, tmp))
        row = {"bundle": name, "variant": variant, "images": len(paths), "runs": args.runs,
               "load": [round(load_before, 2), round(os.getloadavg()[0], 2)]}
        for app, rs in runs.items():
            warm = rs[1:] or rs  # the first run compiled the model into the cache
            pooled = [x for r in warm for x in r["latencies"]]
            row[app] = {"cold_ms": statistics.median(r["cold_ms"] for r in warm),
                        "own_cold_ms": statistics.median(r["own_cold_ms"] for r in warm),
                        "first_cold_ms": rs[0]["cold_ms"], "p50_ms": percentile(pooled, 50),
                        "p99_ms": percentile(pooled, 99), "variant": rs[0]["variant"]}
        row["cold_ratio"] = row["cpp"]["cold_ms"] / row["python"]["cold_ms"]
        row["p50_ratio"] = row["cpp"]["p50_ms"] / row["python"]["p50_ms"]
        rows.append(row)
        c, p = row["cpp"], row["python"]
        print(f"{name} {variant}: cold start C++ {c['cold_ms']:.0f} ms vs Python {p['cold_ms']:.0f} ms "
              f"({row['cold_ratio']:.2f}x); p50 {c['p50_ms']:.3f} vs {p['p50_ms']:.3f} ms ({row['p50_ratio']:.2f}x); "
              f"p99 {c['p99_ms']:.3f} vs {p['p99_ms']:.3f} ms; load {row['load']}", flush=True)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bundle", action="append", default=[], help="NAME=DIR (default: the two described above)")
    parser.add_argument("--images", type=int, default=200, help="images per run (ResNet-50: a quarter of them)")
    parser.add_argument("--runs", type=int, default=5, help="process starts per app, variant and bundle")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--variants", default=",".join(VARIANTS))
    parser.add_argument("--json", type=Path, help="also write the rows here")
    parser.add_argument("--classify", type=Path, default=CLASSIFY, help="the example app (default: make cpp's)")
    args = parser.parse_args()
    if not args.classify.exists():
        raise SystemExit(f"{args.classify} is missing: build the C++ SDK first (make cpp)")
    with tempfile.TemporaryDirectory(prefix="cpp-bench-") as t:
        tmp = Path(t)
        small, photos = fashion_images(args.images), photo_images(max(args.images // 4, 8))
        if args.bundle:
            bundles = [(b.split("=", 1)[0], Path(b.split("=", 1)[1])) for b in args.bundle]
        else:
            demo = ROOT / "bundles" / "demo"
            r20 = demo if (demo / "manifest.json").exists() else make_resnet20(tmp, small)
            bundles = [("ResNet-20 (demo" + (")" if r20 == demo else ", untrained)"), r20),
                       ("ResNet-50 (untrained)", make_resnet50(tmp, photos))]
        rows = []
        for name, bundle in bundles:
            shape = json.loads((bundle / "manifest.json").read_text())["input"]["shape"]
            big = shape[-1] >= 100
            paths = write_images(tmp / name.split()[0], photos if big else small, "JPEG" if big else "PNG")
            rows += bench(name, bundle, paths, args, tmp)
    result = {"machine": machine(), "threads": args.threads, "rows": rows}
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    print(f"\n{result['machine']}, {args.threads} threads\n")
    print("| bundle | variant | cold start C++ / Python (ms) | ratio | p50 C++ / Python (ms) | ratio | "
          "p99 C++ / Python (ms) |\n| --- | --- | ---: | ---: | ---: | ---: | ---: |")
    for r in rows:
        c, p = r["cpp"], r["python"]
        print(f"| {r['bundle']} | {r['variant']} | {c['cold_ms']:.0f} / {p['cold_ms']:.0f} | {r['cold_ratio']:.2f} | "
              f"{c['p50_ms']:.3f} / {p['p50_ms']:.3f} | {r['p50_ratio']:.2f} | {c['p99_ms']:.3f} / {p['p99_ms']:.3f} |")


if __name__ == "__main__":
    main()
