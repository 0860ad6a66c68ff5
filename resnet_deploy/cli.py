"""`resnet-deploy`: the command line. Every command is thin: parse, call the library, turn errors into one line.

User errors (`ResnetDeployError`: bad names, bad files, missing pieces) become `Error: <one line>` and exit code 2;
a check that ran and failed (a validation FAIL) exits 1. Choices that the variant registry owns (backends,
precisions) are read from it when a command runs, so a registered variant is a valid choice everywhere.
"""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path
from typing import Any

import click

from resnet_deploy import __version__
from resnet_deploy.cli_options import (
    CHECKPOINT,
    DATA_HELP,
    DEVICE,
    JSON_FILE,
    LAYER_TOL_HELP,
    LAYERWISE_HELP,
    THREADS,
    Backends,
    Group,
    bounded,
    echo,
    echo_json,
    export_options,
    parse_numbers,
    prediction_lines,
)
from resnet_deploy.serve.cli import register as register_serve_commands
from resnet_deploy.train.cli import register as register_train_commands


@click.group(cls=Group)
@click.version_option(__version__, prog_name="resnet-deploy")
def main() -> None:
    """Train the ResNets of He et al. (2015), export them for deployment, validate them, and run them."""


@main.command()
@click.argument("name", required=False)
@click.option("--shortcut", type=click.Choice(["A", "B", "C"]), help="Shortcut option (§3.3).")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
def info(name: str | None, shortcut: str | None, as_json: bool) -> None:
    """List every architecture, or describe NAME: parameters, multiply-adds, and the paper's numbers."""
    from resnet_deploy import models
    from resnet_deploy.models import info as zoo

    d = zoo.zoo_rows() if name is None else models.describe(name, shortcut=shortcut)
    if as_json:
        echo_json(d)
    elif name is None:
        zoo.print_zoo(d)
    else:
        zoo.print_description(name, d)


@main.command()
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
def doctor(as_json: bool) -> None:
    """What this machine can run: Python, torch/CUDA, GPUs, ONNX Runtime, TensorRT, cuda-python, OpenVINO."""

    from resnet_deploy.doctor import print_report, run_checks

    rows = run_checks()
    if as_json:
        echo_json([asdict(r) for r in rows])
    else:
        print_report(rows)


@main.command()
@click.argument("bundle", type=click.Path(path_type=str))
@click.option("--data", "data_spec", required=True, help=DATA_HELP)
@click.option("--limit", type=bounded("images"), help="Validate on this many images (a seeded subset).")
@click.option("--backends", type=Backends(many=True), help="Comma-separated (default: every model file).")
@click.option("--tolerance", "tolerances", multiple=True, metavar="KEY=VALUE",
              help="Override a parity threshold, e.g. fp32_max_abs=1e-4 (names: the registry's gates).")
@click.option("--layerwise", metavar="VARIANT", help=LAYERWISE_HELP)
@click.option("--layer-tol", type=bounded("tolerance"), help=LAYER_TOL_HELP)
@CHECKPOINT
@DEVICE
@THREADS
@JSON_FILE
def validate(bundle: str, data_spec: str, limit: int | None, backends: list[str] | None, tolerances: tuple[str, ...],
             layerwise: str | None, layer_tol: float | None, checkpoint: str | None, device: str, threads: int | None,
             json_file: str | None) -> None:
    """Check every backend of BUNDLE against the PyTorch reference on real images; exit 1 if any fails."""
    from resnet_deploy.validate import report
    from resnet_deploy.validate.parity import check_parity, parse_tolerances

    if layerwise is not None:
        from resnet_deploy.validate.layerwise import compare_bundle, save_layerwise

        report.check_outputs(bundle, json_file, (f"layerwise-{layerwise}.json", f"layerwise-{layerwise}.md"))
        r = compare_bundle(bundle, layerwise, data_spec, limit, layer_tol, threads)
        echo(r.summary(), f"reports: {', '.join(map(str, save_layerwise(r, bundle, json_file)))}")
        raise SystemExit(1 if r.first_exceeding else 0)

    report.check_outputs(bundle, json_file)  # before the run: a read-only bundle is found now, not after it
    result = check_parity(bundle, data_spec, limit, backends, parse_tolerances(tolerances), device=device,
                          threads=threads, checkpoint=checkpoint).to_dict()
    report.save(result, bundle, json_file)
    echo(*report.validate_summary(result))
    if not result["passed"]:
        raise SystemExit(1)


@main.command()
@click.argument("bundle", type=click.Path(path_type=str))
@click.option("--backends", type=Backends(many=True), help="Comma-separated (default: every model file).")
@click.option("--batch", "batches", default="1,8,32", show_default=True, help="Comma-separated batch sizes.")
@click.option("--warmup-s", type=bounded("seconds"), default=2.0, show_default=True, help="Warm-up seconds.")
@click.option("--duration-s", type=bounded("seconds"), default=10.0, show_default=True,
              help="Timed seconds per backend and batch size.")
@click.option("--rounds", type=bounded("rounds"), default=1, show_default=True,
              help="Split each run into round-robin slices across backends (fairer on a shared machine).")
@THREADS
@DEVICE
@CHECKPOINT
@click.option("--no-pytorch", is_flag=True, help="Do not time the PyTorch eager model (no ratios then).")
@JSON_FILE
def bench(bundle: str, batches: str, json_file: str | None, no_pytorch: bool, **options: Any) -> None:
    """Latency and throughput of every backend of BUNDLE, beside PyTorch eager timed in the same run."""
    from resnet_deploy.validate import report
    from resnet_deploy.validate.bench import bench_bundle, record_fastest

    batch_sizes = parse_numbers(batches, "--batch", "batch")
    report.check_outputs(bundle, json_file, (*report.REPORT_FILES, "auto.json"))  # before the run, not after it
    result = bench_bundle(bundle, batches=batch_sizes, pytorch=not no_pytorch, **options).to_dict()
    written = report.save(result, bundle, json_file)
    echo(*report.bench_summary(result))
    recorded = record_fastest(bundle, result)
    if recorded:
        echo(f"auto on this machine: {', '.join(recorded[1])} (fastest first; {recorded[0]})")
    echo(f"reports: {', '.join(str(p) for p in written)}")


@main.command()
@click.argument("bundle", type=click.Path(path_type=str))
def report(bundle: str) -> None:
    """Summary table of BUNDLE's last `validate` and `bench` runs, and the paths of its reports."""
    from resnet_deploy.validate.report import print_summary

    echo(f"report: {', '.join(str(p) for p in print_summary(bundle))}")


@main.command()
@click.argument("bundle")
@click.argument("images", nargs=-1, required=True)
@click.option("--topk", type=bounded("topk"), default=5, show_default=True, help="Classes shown per image.")
@click.option("--backend", type=Backends(special=("auto", "trt")), default="auto", show_default=True)
@DEVICE
@THREADS
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of text.")
def predict(bundle: str, images: tuple[str, ...], topk: int, backend: str, device: str, threads: int | None,
            as_json: bool) -> None:
    """Classify IMAGES with the model in BUNDLE (a directory written by `resnet-deploy export`)."""
    from resnet_deploy.runtime import Predictor

    with Predictor.from_bundle(bundle, backend=backend, device=device, threads=threads) as p:
        results = p.predict(list(images), topk=topk)
        if as_json:
            echo_json([{"image": im, **r.to_dict()} for im, r in zip(images, results, strict=True)])
            return
        echo(f"{p.manifest.arch}, backend {p.backend} on {device} ({p.why})", err=True)
        echo(*prediction_lines(images, results))


@main.command()
@click.option("--recipe", required=True, type=click.Path(dir_okay=False), help="A recipe YAML, e.g. recipes/x.yaml.")
@click.option("--data", "data_spec", help=DATA_HELP)
@click.option("--out", "out_dir", type=click.Path(file_okay=False), help="Run folder (default runs/<recipe name>).")
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE", help="Override a recipe field (optim.lr=0.05).")
@click.option("--resume", is_flag=True, help="Continue the run in --out from its last.pt.")
@click.option("--download", is_flag=True, help="Let torchvision download Fashion-MNIST/CIFAR-10 if not on disk.")
@click.option("--no-progress", is_flag=True, help="No progress bar (logs still go to metrics.jsonl).")
@click.option("--estimate", is_flag=True, help="Print the precision and the expected training time here (a few "
              "steps timed on synthetic images), then exit without training.")
def train(recipe: str, data_spec: str | None, out_dir: str | None, overrides: tuple[str, ...], resume: bool,
          download: bool, no_progress: bool, estimate: bool) -> None:
    """Train a recipe (one process, or many under torchrun) into a run folder."""
    from resnet_deploy.config import load_train_config
    from resnet_deploy.train import summary_line
    from resnet_deploy.train import train as run_training

    extra = ([f"data.spec={data_spec}"] if data_spec else []) + (["data.download=true"] if download else [])
    cfg = load_train_config(recipe, [*overrides, *extra])
    if estimate:
        from resnet_deploy.train.estimate import estimate as estimate_training

        click.echo(estimate_training(cfg).summary())  # after the precision line the run would print
        return
    out = Path(out_dir) if out_dir else Path("runs") / Path(recipe).stem
    result = run_training(cfg, out, resume=resume, progress=not no_progress)
    if result["rank"] == 0:  # the run's notes (precision, weights, ...) were printed as it began
        echo(summary_line(result, out))


@main.command(name="eval")
@click.argument("checkpoint", type=click.Path(dir_okay=False))
@click.option("--data", "data_spec", required=True, help=DATA_HELP)
@click.option("--ten-crop", is_flag=True, help="Average softmax over 10 crops (§3.4); ImageNet-style models.")
@click.option("--limit", type=bounded("images"), help="Evaluate the first N images only.")
@click.option("--device", default="cpu", show_default=True, help="cpu, cuda or cuda:N.")
@click.option("--workers", type=bounded("workers"), default=0, show_default=True,
              help="DataLoader workers decoding folder images (ImageNet).")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def eval_cmd(checkpoint: str, data_spec: str, as_json: bool, **options: Any) -> None:
    """Top-1/top-5 accuracy of a training checkpoint, centre crop or 10-crop."""
    from resnet_deploy.train import evaluate, evaluation_line

    r = evaluate(checkpoint, data_spec, **options)
    echo_json(r) if as_json else echo(evaluation_line(r, data_spec))


@main.command()
@click.argument("checkpoint", required=False, type=click.Path(dir_okay=False))
@click.option("--out", "out_dir", required=True, type=click.Path(), help="Bundle directory to write.")
@click.option("--arch", help="Architecture of --weights (or a check of CHECKPOINT's), e.g. resnet50.")
@click.option("--weights", type=click.Path(dir_okay=False), help="torchvision state dict (.pth) instead of CHECKPOINT.")
@click.option("--classes", "classes_file", type=click.Path(dir_okay=False), help="Class names, one per line.")
@export_options
@click.option("--force", is_flag=True, help="Replace an existing bundle at --out (once the new one is complete).")
@click.option("--quiet", is_flag=True, help="Do not print the export log as it goes.")
def export(checkpoint: str | None, out_dir: str, arch: str | None, weights: str | None, classes_file: str | None,
           force: bool, quiet: bool, **options: Any) -> None:
    """Export CHECKPOINT (or --arch/--weights) to a bundle: fold BN, ONNX, FP16, INT8, TensorRT, manifest."""
    from resnet_deploy.export import ExportOptions, export_bundle

    opts = ExportOptions.from_flags(**{k: v for k, v in options.items() if v is not None})
    out = export_bundle(Path(out_dir), opts, checkpoint=checkpoint and Path(checkpoint), arch=arch,
                        weights=weights and Path(weights), classes=classes_file and Path(classes_file), force=force,
                        echo=None if quiet else (lambda line: echo(line, err=True)))
    echo(f"bundle written to {out}")


register_serve_commands(main)  # triton, serve, loadtest (resnet_deploy/serve/cli.py)
register_train_commands(main)  # curves (resnet_deploy/train/cli.py)


if __name__ == "__main__":
    main()
