"""Cold start of the C++ SDK's example app, two builds interleaved in one run: BEFORE (e.g. main, built in a folder of
its own) and AFTER (this checkout's build/cpp/classify).

    .venv/bin/python benchmarks/cpp_cold_start.py --before build/cpp-before/classify [--bundle NAME=DIR ...]
        [--runs 9] [--threads 2] [--variant ov-fp32]

Each figure is from fresh processes, measured from outside as benchmarks/cpp_vs_python.py measures it: process start
to its first prediction on stdout (one image). Two cases per bundle, the builds alternating run by run (BEFORE, AFTER,
AFTER, BEFORE, ...), each build with a cache folder of its own:

- cached: the model cache holds this content's entry (filled by an untimed first run): the start verifies the file and
  imports the compiled model (AFTER also checks the entry's digest);
- empty cache: a fresh cache folder each run: the start verifies, compiles and writes the entry.

The table gives each build's median and the median of the per-pair ratios AFTER / BEFORE. Without --bundle, a
demo-shaped ResNet-20 is exported into a temporary folder (benchmarks/cpp_vs_python.make_resnet20).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
from cpp_vs_python import CLASSIFY, fashion_images, machine, make_resnet20, photo_images, run_app, write_images  # noqa: E402


def sdk_library(app: Path) -> str:
    """The libresnet_deploy the dynamic loader gives `app`: a copied build folder still loads the original's."""
    out = subprocess.run(["ldd", str(app)], capture_output=True, text=True, check=True).stdout
    found = re.search(r"libresnet_deploy\S*\s+=>\s+(\S+)", out)
    return os.path.realpath(found.group(1)) if found else str(app)


def start(app: Path, bundle: Path, image: Path, args: argparse.Namespace, cache: Path) -> tuple[float, dict]:
    """(ms from process start to the first prediction, the app's summary line)."""
    env = {**os.environ, "RESNET_DEPLOY_CACHE": str(cache)}
    cold, _, err = run_app([str(app), str(bundle), str(image), "--variant", args.variant, "--threads",
                            str(args.threads), "--json"], env)
    return cold * 1e3, json.loads(err.strip().splitlines()[-1])


def bench(name: str, bundle: Path, image: Path, args: argparse.Namespace, tmp: Path) -> list[dict]:
    apps = {"before": args.before, "after": args.after}
    rows = []
    for case in ("cached", "empty cache"):
        load = os.getloadavg()[0]
        times: dict[str, list[float]] = {"before": [], "after": []}
        uses = set()
        for app, path in apps.items():  # untimed: fills the cache, and the file and libraries are read once
            start(path, bundle, image, args, tmp / f"cache-{app}")
        for i in range(args.runs):
            for app in ("before", "after") if i % 2 == 0 else ("after", "before"):
                cache = tmp / f"cache-{app}" if case == "cached" else Path(tempfile.mkdtemp(dir=tmp))
                ms, summary = start(apps[app], bundle, image, args, cache)
                times[app].append(ms)
                if app == "after":
                    uses.add(summary.get("cache", "?").split(";")[0])
        ratios = [a / b for a, b in zip(times["after"], times["before"], strict=True)]
        row = {"bundle": name, "case": case, "runs": args.runs, "before_ms": statistics.median(times["before"]),
               "after_ms": statistics.median(times["after"]), "ratio": statistics.median(ratios),
               "after_cache": sorted(uses), "load": [round(load, 2), round(os.getloadavg()[0], 2)],
               "before_all": [round(t, 1) for t in times["before"]], "after_all": [round(t, 1) for t in times["after"]]}
        rows.append(row)
        print(f"{name}, {case}: BEFORE {row['before_ms']:.0f} ms, AFTER {row['after_ms']:.0f} ms, AFTER/BEFORE "
              f"{row['ratio']:.2f} (median of {args.runs} pairs); AFTER's cache: {', '.join(row['after_cache'])}; "
              f"load {row['load']}", flush=True)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--before", type=Path, required=True, help="the example app of the build to compare with")
    parser.add_argument("--after", type=Path, default=CLASSIFY, help="the example app (default: make cpp's)")
    parser.add_argument("--bundle", action="append", default=[], help="NAME=DIR (default: a demo-shaped ResNet-20)")
    parser.add_argument("--runs", type=int, default=9, help="pairs of process starts per bundle and case")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--variant", default="ov-fp32")
    parser.add_argument("--json", type=Path, help="also write the rows here")
    args = parser.parse_args()
    for app in (args.before, args.after):
        if not app.exists():
            raise SystemExit(f"{app} is missing: build the C++ SDK first (make cpp)")
    if (library := sdk_library(args.after)) == sdk_library(args.before):
        raise SystemExit(f"both apps load {library}: build BEFORE in a build folder of its own "
                         "(a copied folder keeps the original's RUNPATH)")
    with tempfile.TemporaryDirectory(prefix="cpp-cold-") as t:
        tmp = Path(t)
        if args.bundle:
            bundles = [(b.split("=", 1)[0], Path(b.split("=", 1)[1])) for b in args.bundle]
        else:
            bundles = [("ResNet-20 (demo-shaped, untrained)", make_resnet20(tmp, fashion_images(64)))]
        rows = []
        for name, bundle in bundles:
            shape = json.loads((bundle / "manifest.json").read_text())["input"]["shape"]
            big = shape[-1] >= 100
            images = photo_images(1) if big else fashion_images(1)
            (image,) = write_images(tmp / f"images-{len(rows)}", images, "JPEG" if big else "PNG")
            rows += bench(name, bundle, image, args, tmp)
    result = {"machine": machine(), "threads": args.threads, "variant": args.variant, "rows": rows}
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    print(f"\n{result['machine']}, {args.variant}, {args.threads} threads\n")
    print("| bundle | cache | BEFORE (ms) | AFTER (ms) | AFTER / BEFORE | load |\n"
          "| --- | --- | ---: | ---: | ---: | --- |")
    for r in rows:
        print(f"| {r['bundle']} | {r['case']} | {r['before_ms']:.0f} | {r['after_ms']:.0f} | {r['ratio']:.2f} | "
              f"{r['load'][0]}-{r['load'][1]} |")


if __name__ == "__main__":
    main()
