"""ResNet-50 at 224x224, batch 1, on this machine: PyTorch eager fp32 vs the bundle's ONNX Runtime backends.

Targets: int8 p50 <= 0.25x eager fp32 and ONNX fp32 p50 <= 0.8x eager, measured side by side in one run.
The weights are random in torchvision's layout (latency does not depend on their values); INT8 is calibrated on
Fashion-MNIST images through the bundle's ImageNet preprocessing (real images, any will do for timing).

    .venv/bin/python benchmarks/bench_resnet50.py [--bundle DIR] [--duration-s 3] [--threads 2] [--rounds 5]
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import torch

from resnet_deploy import models
from resnet_deploy.validate import report
from resnet_deploy.validate.bench import bench_bundle

TARGETS = {"int8": 0.25, "onnx": 0.8}


def make_bundle(out: Path) -> Path:
    """Export random torchvision-layout ResNet-50 weights with fp16 and int8 with export_bundle."""
    from resnet_deploy.export import ExportOptions, export_bundle

    torch.manual_seed(0)
    weights = out.parent / "resnet50_random.pth"
    torch.save(models.build("resnet50").state_dict(), weights)
    return Path(export_bundle(out, ExportOptions(("fp16", "int8"), calib_data="fashion-mnist", calib_size=32),
                              arch="resnet50", weights=weights, force=True))


def print_targets(result: dict, targets: dict[str, float]) -> bool:
    """Print p50 and the ratio to eager for every batch-1 row; True when every target is met."""
    ok = True
    for line in report.bench_summary(result):
        print(line)
    print("\n| backend | p50 ms | x eager | target | met |\n| --- | ---: | ---: | ---: | --- |")
    for r in result["results"]:
        if r["batch"] != 1:
            continue
        target = targets.get(r["backend"])
        met = target is None or r["latency_ratio"] <= target
        ok &= met
        goal, verdict = (f"<= {target}", "yes" if met else "NO") if target else ("-", "-")
        print(f"| {r['backend']} | {r['latency_ms']['p50']:.2f} | {r['latency_ratio']:.3f} | {goal} | {verdict} |")
    return ok


def parse_args(doc: str, default_backends: str, bundle_help: str, positional: bool) -> argparse.Namespace:
    """The options both bench scripts take."""
    ap = argparse.ArgumentParser(description=doc.splitlines()[0])
    ap.add_argument("bundle" if positional else "--bundle", type=Path, nargs="?" if positional else None,
                    help=bundle_help)
    ap.add_argument("--backends", default=default_backends)
    ap.add_argument("--warmup-s", type=float, default=1.0)
    ap.add_argument("--duration-s", type=float, default=3.0)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=5, help="round-robin slices (fair ratios on a shared machine)")
    return ap.parse_args()


def run(args: argparse.Namespace, bundle: Path, targets: dict[str, float]) -> None:
    """Bench the bundle at batch 1, store the reports in it, and print the figures against the targets."""
    result = bench_bundle(bundle, backends=args.backends.split(","), batches=[1], warmup_s=args.warmup_s,
                          duration_s=args.duration_s, threads=args.threads, rounds=args.rounds).to_dict()
    report.save(result, bundle)
    met = print_targets(result, targets)
    print(f"\nbundle {bundle}; targets {'met' if met else 'NOT met'}")


def main() -> None:
    args = parse_args(__doc__, "onnx,fp16,int8", "an existing ResNet-50 bundle (default: export one to a temp dir)",
                      positional=False)
    run(args, args.bundle or make_bundle(Path(tempfile.mkdtemp(prefix="bench_r50_")) / "bundle"), TARGETS)


if __name__ == "__main__":
    main()
