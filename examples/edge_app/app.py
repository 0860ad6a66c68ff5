"""Edge app: classify every image in a folder with a resnet-deploy bundle, using only `resnet_deploy.runtime`.

Needs numpy, pillow and onnxruntime (or TensorRT + cuda-python on a GPU); never torch. See README.md.

    python app.py BUNDLE FOLDER [--backend auto] [--device cpu] [--threads 2] [--topk 1] [--summary-json out.json]
                  [--trusted-key publisher.pub.pem ...]

With --trusted-key, the bundle is loaded only if its publisher signed it with one of these keys and it is unchanged
since (needs `cryptography`).

Prints one line per image (file, label, score, latency) and a summary: the cold start (bundle load to the first
prediction) and the per-image latency (read + preprocess + inference) of the images after the first.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

T_START = time.perf_counter()  # before the runtime import: its import time is part of an app's start-up

from resnet_deploy.runtime import Predictor, ResnetDeployError  # noqa: E402
from resnet_deploy.runtime.errors import printable  # noqa: E402 - names from the bundle and files, printed escaped

EXTENSIONS = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm"}


def list_images(folder: Path) -> list[Path]:
    """Image files in `folder` (not recursive), sorted by name."""
    if not folder.is_dir():
        raise ResnetDeployError(f"image folder not found: {folder}")
    return sorted(p for p in folder.iterdir() if p.suffix.lower() in EXTENSIONS)


def percentile(values: list[float], q: float) -> float:
    """The q-th percentile (nearest rank) of a non-empty list."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q / 100 * (len(ordered) - 1))))]


def classify_folder(bundle: Path, folder: Path, backend: str = "auto", device: str = "cpu",
                    threads: int | None = None, topk: int = 1, quiet: bool = False,
                    trusted_keys: list[Path] | None = None) -> dict:
    """Classify each image one at a time, as a camera app would; return the timing summary."""
    images = list_images(folder)
    if not images:
        raise ResnetDeployError(f"no images ({', '.join(sorted(EXTENSIONS))}) in {folder}")
    t_import = time.perf_counter() - T_START
    t0 = time.perf_counter()
    predictor = Predictor.from_bundle(bundle, backend=backend, device=device, threads=threads,
                                      trusted_keys=trusted_keys)
    t_loaded = time.perf_counter()
    latencies, failures = [], 0
    for path in images:
        t = time.perf_counter()
        try:
            (pred,) = predictor.predict(path, topk=topk)
        except ResnetDeployError as e:  # one bad file does not stop the app
            failures += 1
            print(printable(f"{path.name}: skipped ({e})"), file=sys.stderr)
            continue
        latencies.append((time.perf_counter() - t) * 1e3)
        if not quiet:
            alts = "".join(f", {label} {score:.3f}" for _, label, score in pred.topk[1:])
            print(printable(f"{path.name}: {pred.label} {pred.score:.3f}{alts}  [{latencies[-1]:.2f} ms]"))
    if not latencies:
        raise ResnetDeployError(f"none of the {len(images)} images could be read")
    steady = latencies[1:] or latencies
    return {"backend": predictor.backend, "device": device, "why": predictor.why, "images": len(images),
            "failures": failures, "import_ms": t_import * 1e3, "load_ms": (t_loaded - t0) * 1e3,
            "cold_start_ms": (t_loaded - t0) * 1e3 + latencies[0], "first_image_ms": latencies[0],
            "latency_ms_p50": statistics.median(steady), "latency_ms_p90": percentile(steady, 90),
            "latency_ms_mean": statistics.fmean(steady)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("bundle", type=Path, help="bundle directory written by `resnet-deploy export`")
    parser.add_argument("folder", type=Path, help="folder of images to classify")
    parser.add_argument("--backend", default="auto", help="auto, trt, onnx, fp16, int8, int8-trt, trt-fp32, ...")
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--threads", type=int, default=None, help="ONNX Runtime threads (default: one per core)")
    parser.add_argument("--topk", type=int, default=1, help="also print the next best classes")
    parser.add_argument("--quiet", action="store_true", help="print only the summary")
    parser.add_argument("--summary-json", type=Path, help="also write the summary here as JSON")
    parser.add_argument("--trusted-key", type=Path, action="append", dest="trusted_keys", metavar="PUBLIC.pem",
                        help="run the bundle only if signed by this publisher's key (repeat to trust several)")
    args = parser.parse_args(argv)
    try:
        s = classify_folder(args.bundle, args.folder, args.backend, args.device, args.threads, args.topk, args.quiet,
                            args.trusted_keys)
    except ResnetDeployError as e:
        print(printable(f"Error: {e}"), file=sys.stderr)
        return 2
    print(f"{s['images'] - s['failures']} images, backend {s['backend']} on {s['device']} ({s['why']})")
    print(f"cold start {s['cold_start_ms']:.1f} ms (load {s['load_ms']:.1f} + first image {s['first_image_ms']:.1f}; "
          f"runtime import {s['import_ms']:.0f} ms); per image p50 {s['latency_ms_p50']:.2f} ms, "
          f"p90 {s['latency_ms_p90']:.2f} ms")
    if args.summary_json:
        args.summary_json.write_text(json.dumps(s, indent=2) + "\n")
    return 1 if s["failures"] else 0


if __name__ == "__main__":
    sys.exit(main())
