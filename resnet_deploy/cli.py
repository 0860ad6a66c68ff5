"""`resnet-deploy`: the command line. Every command is thin: parse, call the library, turn errors into one line.

User errors (`ResnetDeployError`: bad names, bad files, missing pieces) become `Error: <one line>` and exit code 2;
a check that ran and failed (a validation FAIL) exits 1. Choices that the variant registry owns (backends,
precisions) are read from it when a command runs, so a registered variant is a valid choice everywhere.
"""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

import click
import numpy as np

from resnet_deploy import __version__
from resnet_deploy.cli_options import (
    CHECKPOINT,
    DATA_HELP,
    DEVICE,
    JSON_FILE,
    LAYER_TOL_HELP,
    LAYERWISE_HELP,
    THREADS,
    TRUSTED_KEY,
    Backends,
    Group,
    bounded,
    echo,
    echo_json,
    parse_numbers,
    prediction_lines,
)
from resnet_deploy.export.cli import register as register_export_commands
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
@TRUSTED_KEY
def validate(bundle: str, data_spec: str, limit: int | None, backends: list[str] | None, tolerances: tuple[str, ...],
             layerwise: str | None, layer_tol: float | None, checkpoint: str | None, device: str, threads: int | None,
             json_file: str | None, trusted_keys: list[str] | None) -> None:
    """Check every backend of BUNDLE against the PyTorch reference on real images; exit 1 if any fails."""
    from resnet_deploy.validate import report
    from resnet_deploy.validate.parity import check_parity, parse_tolerances

    if layerwise is not None:
        from resnet_deploy.validate.layerwise import compare_bundle, save_layerwise

        report.check_outputs(bundle, json_file, (f"layerwise-{layerwise}.json", f"layerwise-{layerwise}.md"))
        r = compare_bundle(bundle, layerwise, data_spec, limit, layer_tol, threads, trusted_keys)
        echo(r.summary(), f"reports: {', '.join(map(str, save_layerwise(r, bundle, json_file)))}")
        raise SystemExit(1 if r.first_exceeding else 0)

    report.check_outputs(bundle, json_file)  # before the run: a read-only bundle is found now, not after it
    result = check_parity(bundle, data_spec, limit, backends, parse_tolerances(tolerances), device=device,
                          threads=threads, checkpoint=checkpoint, trusted_keys=trusted_keys).to_dict()
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
@TRUSTED_KEY
def bench(bundle: str, batches: str, json_file: str | None, no_pytorch: bool, **options: Any) -> None:
    """Latency and throughput of every backend of BUNDLE, beside PyTorch eager timed in the same run."""
    from resnet_deploy.validate import report
    from resnet_deploy.validate.bench import bench_bundle, record_fastest

    batch_sizes = parse_numbers(batches, "--batch", "batch")
    report.check_outputs(bundle, json_file, (*report.REPORT_FILES, "auto.json"))  # before the run, not after it
    result = bench_bundle(bundle, batches=batch_sizes, pytorch=not no_pytorch,
                          progress=lambda line: echo(line, err=True), **options).to_dict()
    written = report.save(result, bundle, json_file)
    echo(*report.bench_summary(result))
    recorded = record_fastest(bundle, result)
    if recorded:
        echo(f"auto on this machine: {', '.join(recorded[1])} (fastest first; {recorded[0]})")
    echo(f"reports: {', '.join(str(p) for p in written)}")


@main.command()
@click.argument("bundle", type=click.Path(path_type=str))
@click.option("--json", "as_json", is_flag=True, help="Print the summary rows as JSON instead of a table.")
def report(bundle: str, as_json: bool) -> None:
    """Summary table of BUNDLE's last `validate` and `bench` runs, and the paths of its reports."""
    from resnet_deploy.validate.report import SUMMARY_COLUMNS, print_summary, summary_data

    if as_json:
        rows, written = summary_data(bundle)
        echo_json({"columns": list(SUMMARY_COLUMNS), "rows": [dict(zip(SUMMARY_COLUMNS, r, strict=True)) for r in rows],
                   "files": [str(p) for p in written]})
        return
    echo(f"report: {', '.join(str(p) for p in print_summary(bundle))}")


@main.command()
@click.argument("bundle")
@click.argument("images", nargs=-1, required=True)
@click.option("--topk", type=bounded("topk"), default=5, show_default=True, help="Classes shown per image.")
@click.option("--backend", type=Backends(special=("auto", "trt")), default="auto", show_default=True)
@DEVICE
@THREADS
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of text.")
@TRUSTED_KEY
def predict(bundle: str, images: tuple[str, ...], topk: int, backend: str, device: str, threads: int | None,
            as_json: bool, trusted_keys: list[str] | None) -> None:
    """Classify IMAGES with the model in BUNDLE (a directory written by `resnet-deploy export`).

    Every readable image is classified; each one that cannot be read is named on a line of its own (stderr) and the
    command then exits 1, as the edge app does.
    """
    from resnet_deploy.runtime import Predictor
    from resnet_deploy.runtime.errors import ResnetDeployError
    from resnet_deploy.runtime.predictor import top_predictions

    with Predictor.from_bundle(bundle, backend=backend, device=device, threads=threads,
                               trusted_keys=trusted_keys) as p:
        echo(f"{p.manifest.arch}, backend {p.backend} on {device} ({p.why})", err=True)
        arrays, failed = {}, {}
        for i, image in enumerate(images):  # read one at a time: a bad file costs only its own answer
            try:
                arrays[i] = p.preprocess_images(image)
            except ResnetDeployError as e:
                failed[i] = str(e)
                echo(f"Error: image {i + 1} of {len(images)}: {e}", err=True)
        results = {}
        if arrays:  # the readable ones classified as one batch
            logits = p.run(np.concatenate(list(arrays.values())))
            results = dict(zip(arrays, top_predictions(logits, p.classes, topk), strict=True))
        if as_json:
            echo_json([{"image": im, **(results[i].to_dict() if i in results else {"error": failed[i]})}
                       for i, im in enumerate(images)])
        elif results:  # nothing on stdout when no image could be read
            echo(*prediction_lines([images[i] for i in results], results.values()))
    if failed:
        echo(f"{len(failed)} of {len(images)} image(s) could not be read", err=True)
        raise SystemExit(1)


register_serve_commands(main)  # triton, serve, loadtest (resnet_deploy/serve/cli.py)
register_train_commands(main)  # train, eval, curves (resnet_deploy/train/cli.py)
register_export_commands(main)  # export, sign, verify (resnet_deploy/export/cli.py)


if __name__ == "__main__":
    main()
