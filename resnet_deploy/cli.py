"""`resnet-deploy`: the command line. Every command is thin: parse, call the library, turn errors into one line.

User errors (`ResnetDeployError`: bad names, bad files, missing pieces) become `Error: <one line>` and exit code 2;
a check that ran and failed (a validation FAIL) exits 1.
"""

from __future__ import annotations

import json
from typing import Any

import click

from resnet_deploy import __version__
from resnet_deploy.runtime.errors import ResnetDeployError


class UserError(click.ClickException):
    """A one-line error for bad input, exit code 2."""

    exit_code = 2


class Group(click.Group):
    """Turns the library's ResnetDeployError, and bad option values, into one line (no traceback) for every command."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except ResnetDeployError as e:
            raise UserError(str(e)) from None
        except click.UsageError as e:
            # A bad option value of a subcommand: one line naming the choices, not click's usage block.
            raise UserError(e.format_message()) from None


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
    from rich.console import Console
    from rich.table import Table

    from resnet_deploy import models

    if name is None:
        table = Table(title="resnet-deploy model zoo (He et al. 2015)")
        for col in ("name", "family", "depth", "shortcuts", "default shortcut", "input"):
            table.add_column(col)
        rows = []
        for arch, (fam, depth, residual) in models.ARCHITECTURES.items():
            default = models.DEFAULTS[fam]["shortcut"] if residual else "-"
            size = models.natural_input_size(arch)
            rows.append({"name": arch, "family": fam, "depth": depth, "residual": residual, "default_shortcut": default,
                         "input_size": size})
            table.add_row(arch, fam, str(depth), "yes" if residual else "none (plain)", default, f"{size}x{size}")
        if as_json:
            click.echo(json.dumps(rows, indent=2))
        else:
            Console().print(table)
        return
    d = models.describe(name, shortcut=shortcut)
    if as_json:
        click.echo(json.dumps(d, indent=2))
        return
    table = Table(title=f"{name} (shortcut {d['shortcut']}, {d['input_size']}x{d['input_size']} input)")
    table.add_column("figure")
    table.add_column("this model", justify="right")
    table.add_column("paper", justify="right")
    p = d["paper"]
    if d["family"] == "imagenet":
        table.add_row("parameters", f"{d['params']:,}", "")
        table.add_row("multiply-adds (G)", f"{d['macs'] / 1e9:.3f}", f"{p['gflops']} (Table 1)")
        table.add_row("top-1 / top-5 error % (10-crop)", "", f"{p['top1_error_pct']} / {p['top5_error_pct']}")
    else:
        table.add_row("parameters (M)", f"{d['params'] / 1e6:.3f}", f"{p['params_M']} (Table 6)")
        table.add_row("multiply-adds (M)", f"{d['macs'] / 1e6:.1f}", "")
        table.add_row("CIFAR-10 test error %", "", f"{p['test_error_pct']} (Table 6)")
    Console().print(table)


@main.command()
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
def doctor(as_json: bool) -> None:
    """What this machine can run: Python, torch/CUDA, GPUs, ONNX Runtime, TensorRT, cuda-python, OpenVINO."""
    from dataclasses import asdict

    from resnet_deploy.doctor import print_report, run_checks

    rows = run_checks()
    if as_json:
        click.echo(json.dumps([asdict(r) for r in rows], indent=2))
    else:
        print_report(rows)


def _csv(value: str | None) -> list[str] | None:
    return [v.strip() for v in value.split(",") if v.strip()] if value else None


def _numbers(value: str, what: str, cast: type = int) -> list[Any]:
    try:
        return [cast(v) for v in _csv(value) or []]
    except ValueError:
        raise UserError(f"{what} must be comma-separated numbers, found {value!r}") from None


@main.command()
@click.argument("bundle", type=click.Path(path_type=str))
@click.option("--data", "data_spec", required=True, help="Data SPEC: fashion-mnist, cifar10:/path, folder:/path, ...")
@click.option("--limit", type=click.IntRange(min=1), help="Validate on this many images (a seeded subset).")
@click.option("--backends", help="Comma-separated backends (default: every model file of the bundle).")
@click.option("--tolerance", "tolerances", multiple=True, metavar="KEY=VALUE",
              help="Override a threshold: fp32_agreement, fp32_max_abs, fp16_agreement, int8_top1_drop.")
@click.option("--checkpoint", type=click.Path(path_type=str), help="Source checkpoint if not where the manifest says.")
@click.option("--device", type=click.Choice(["cpu", "cuda"]), default="cpu", show_default=True)
@click.option("--threads", type=click.IntRange(min=1), help="Intra-op threads.")
@click.option("--json", "json_file", type=click.Path(path_type=str), help="Also write the JSON report here.")
def validate(bundle: str, data_spec: str, limit: int | None, backends: str | None, tolerances: tuple[str, ...],
             checkpoint: str | None, device: str, threads: int | None, json_file: str | None) -> None:
    """Check every backend of BUNDLE against the PyTorch reference on real images; exit 1 if any fails."""

    from resnet_deploy.validate import report
    from resnet_deploy.validate.parity import check_parity, parse_tolerances

    result = check_parity(bundle, data_spec, limit, _csv(backends), parse_tolerances(tolerances), device=device,
                          threads=threads, checkpoint=checkpoint).to_dict()
    report.save(result, bundle, json_file)
    click.echo("\n".join(report.validate_summary(result)))
    if not result["passed"]:
        raise SystemExit(1)


@main.command()
@click.argument("bundle", type=click.Path(path_type=str))
@click.option("--backends", help="Comma-separated backends (default: every model file of the bundle).")
@click.option("--batch", "batches", default="1,8,32", show_default=True, help="Comma-separated batch sizes.")
@click.option("--warmup-s", type=click.FloatRange(min=0), default=2.0, show_default=True, help="Warm-up seconds.")
@click.option("--duration-s", type=click.FloatRange(min=0), default=10.0, show_default=True,
              help="Timed seconds per backend and batch size.")
@click.option("--rounds", type=click.IntRange(min=1), default=1, show_default=True,
              help="Split each run into round-robin slices across backends (fairer on a shared machine).")
@click.option("--threads", type=click.IntRange(min=1), help="Intra-op threads (PyTorch and ONNX Runtime).")
@click.option("--device", type=click.Choice(["cpu", "cuda"]), default="cpu", show_default=True)
@click.option("--checkpoint", type=click.Path(path_type=str), help="Source checkpoint if not where the manifest says.")
@click.option("--no-pytorch", is_flag=True, help="Do not time the PyTorch eager model (no ratios then).")
@click.option("--json", "json_file", type=click.Path(path_type=str), help="Also write the JSON report here.")
def bench(bundle: str, backends: str | None, batches: str, warmup_s: float, duration_s: float, rounds: int,
          threads: int | None, device: str, checkpoint: str | None, no_pytorch: bool, json_file: str | None) -> None:
    """Latency and throughput of every backend of BUNDLE, beside PyTorch eager timed in the same run."""

    from resnet_deploy.validate import report
    from resnet_deploy.validate.bench import bench_bundle

    result = bench_bundle(bundle, backends=_csv(backends), batches=_numbers(batches, "--batch"), warmup_s=warmup_s,
                          duration_s=duration_s, threads=threads, device=device, checkpoint=checkpoint,
                          pytorch=not no_pytorch, rounds=rounds).to_dict()
    written = report.save(result, bundle, json_file)
    click.echo("\n".join(report.bench_summary(result)))
    click.echo(f"reports: {', '.join(str(p) for p in written)}")


@main.command()
@click.argument("bundle", type=click.Path(path_type=str))
def report(bundle: str) -> None:
    """Summary table of BUNDLE's last `validate` and `bench` runs, and the paths of its reports."""
    from pathlib import Path

    from rich.console import Console
    from rich.table import Table

    from resnet_deploy.validate import report as rep

    if not Path(bundle).is_dir():
        raise UserError(f"bundle directory not found: {bundle}")
    d = Path(bundle) / "reports"
    v, b = rep.read_report(d / rep.VALIDATE_JSON), rep.read_report(d / rep.BENCH_JSON)
    if v is None and b is None:
        raise UserError(f"{d} holds no validate.json or bench.json; run `resnet-deploy validate` and `bench` first")
    written = rep.write_reports(d)
    data = f" on {v['num_samples']} images of {v['data']}" if v else ""
    table = Table(title=f"{(v or b)['arch']}: accuracy{data}, latency on this machine")
    for col in rep.SUMMARY_COLUMNS:
        table.add_column(col, justify="left" if col in ("backend", "precision", "status") else "right")
    for row in rep.summary_rows(v, b):
        table.add_row(*row)
    Console(width=max(Console().width, 140)).print(table)
    click.echo(f"report: {', '.join(str(p) for p in written)}")


@main.command()
@click.argument("bundle")
@click.argument("images", nargs=-1, required=True)
@click.option("--topk", default=5, show_default=True, help="How many classes to show per image.")
@click.option("--backend", default="auto", show_default=True,
              help="auto, trt, onnx, fp16, int8, int8-trt, trt-fp32, trt-fp16 or trt-int8.")
@click.option("--device", type=click.Choice(["cpu", "cuda"]), default="cpu", show_default=True)
@click.option("--threads", type=int, default=None, help="ONNX Runtime threads (default: one per core).")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of text.")
def predict(bundle: str, images: tuple[str, ...], topk: int, backend: str, device: str, threads: int | None,
            as_json: bool) -> None:
    """Classify IMAGES with the model in BUNDLE (a directory written by `resnet-deploy export`)."""
    from resnet_deploy.runtime import Predictor

    with Predictor.from_bundle(bundle, backend=backend, device=device, threads=threads) as p:
        results = p.predict(list(images), topk=topk)
        if as_json:
            click.echo(json.dumps([{"image": im, **r.to_dict()} for im, r in zip(images, results, strict=True)],
                                  indent=2))
            return
        click.echo(f"{p.manifest.arch}, backend {p.backend} on {device} ({p.why})", err=True)
        for im, r in zip(images, results, strict=True):
            click.echo(f"{im}: {r.label} ({r.score:.4f})")
            for class_id, label, score in r.topk[1:]:
                click.echo(f"    {label} ({score:.4f}) [class {class_id}]")


@main.command()
@click.option("--recipe", required=True, type=click.Path(dir_okay=False),
              help="A recipe YAML, e.g. recipes/fashion_mnist_quick.yaml.")
@click.option("--data", "data_spec", help="Data SPEC: fashion-mnist, cifar10[:PATH], imagenet:PATH, folder:PATH.")
@click.option("--out", "out_dir", type=click.Path(file_okay=False), help="Run folder (default runs/<recipe name>).")
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE",
              help="Override a recipe field, e.g. optim.lr=0.05.")
@click.option("--resume", is_flag=True, help="Continue the run in --out from its last.pt.")
@click.option("--download", is_flag=True, help="Let torchvision download Fashion-MNIST/CIFAR-10 if not on disk.")
@click.option("--no-progress", is_flag=True, help="No progress bar (logs still go to metrics.jsonl).")
def train(recipe: str, data_spec: str | None, out_dir: str | None, overrides: tuple[str, ...], resume: bool,
          download: bool, no_progress: bool) -> None:
    """Train a recipe (one process, or many under torchrun) into a run folder."""
    from pathlib import Path

    from resnet_deploy.config import load_train_config
    from resnet_deploy.train import train as run_training

    extra = ([f"data.spec={data_spec}"] if data_spec else []) + (["data.download=true"] if download else [])
    cfg = load_train_config(recipe, [*overrides, *extra])
    out = Path(out_dir) if out_dir else Path("runs") / Path(recipe).stem
    result = run_training(cfg, out, resume=resume, progress=not no_progress)
    if result["rank"] == 0:
        click.echo(f"iteration {result['iteration']}: top-1 {result.get('top1', float('nan')):.2%}, top-5 "
                   f"{result.get('top5', float('nan')):.2%}, {result['img_per_s']:.0f} img/s, "
                   f"{result['wall_s']:.0f} s -> {out}/last.pt, {out}/best.pt")


@main.command(name="eval")
@click.argument("checkpoint", type=click.Path(dir_okay=False))
@click.option("--data", "data_spec", required=True,
              help="Data SPEC: fashion-mnist, cifar10[:PATH], imagenet:PATH, folder:PATH.")
@click.option("--ten-crop", is_flag=True, help="Average softmax over 10 crops (§3.4); ImageNet-style models.")
@click.option("--limit", type=click.IntRange(min=1), help="Evaluate the first N images only.")
@click.option("--device", default="cpu", show_default=True, help="cpu, cuda or cuda:N.")
@click.option("--workers", type=click.IntRange(min=0), default=0, show_default=True,
              help="DataLoader workers decoding folder images (ImageNet).")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def eval_cmd(checkpoint: str, data_spec: str, ten_crop: bool, limit: int | None, device: str, workers: int,
             as_json: bool) -> None:
    """Top-1/top-5 accuracy of a training checkpoint, centre crop or 10-crop."""
    from resnet_deploy.train import evaluate

    r = evaluate(checkpoint, data_spec, ten_crop=ten_crop, limit=limit, device=device, workers=workers)
    if as_json:
        click.echo(json.dumps(r, indent=2))
    else:
        click.echo(f"{r['arch']} on {data_spec}: top-1 {r['top1']:.2%} (error {1 - r['top1']:.2%}), top-5 "
                   f"{r['top5']:.2%}, {r['images']} images, {r['crops']} crop(s)")


@main.command()
@click.argument("checkpoint", required=False, type=click.Path(dir_okay=False))
@click.option("--out", "out_dir", required=True, type=click.Path(), help="Bundle directory to write.")
@click.option("--arch", help="Architecture of --weights (or a check of CHECKPOINT's), e.g. resnet50.")
@click.option("--weights", type=click.Path(dir_okay=False), help="torchvision state dict (.pth) instead of CHECKPOINT.")
@click.option("--classes", "classes_file", type=click.Path(dir_okay=False), help="Class names, one per line.")
@click.option("--fp16", is_flag=True, help="Also write model.fp16.onnx (and an fp16 engine with --trt).")
@click.option("--int8", is_flag=True, help="Also write INT8 QDQ models calibrated on --calib-data.")
@click.option("--trt", is_flag=True, help="Also build TensorRT engines (needs TensorRT and an NVIDIA GPU).")
@click.option("--int8-target", type=click.Choice(["cpu", "trt", "both"]),
              help="INT8 flavour: cpu (model.int8.onnx), trt (model.int8-trt.onnx) or both "
                   "[default: cpu; both with --trt].")
@click.option("--calib-data", help="Data SPEC of calibration images: fashion-mnist, cifar10:/path, folder:/path, ...")
@click.option("--calib-size", type=int, default=256, show_default=True, help="Calibration images.")
@click.option("--calib-method", type=click.Choice(["minmax", "entropy", "percentile"]), default="minmax",
              show_default=True)
@click.option("--opset", type=int, default=18, show_default=True,
              help="ONNX opset (17 needs torch's deprecated TorchScript exporter).")
@click.option("--batch", default="1:8:32", show_default=True, help="Dynamic batch range MIN:OPT:MAX.")
@click.option("--input-size", type=int, help="Square input side (default: the model's preprocessing).")
@click.option("--workspace", type=float, default=4.0, show_default=True, help="TensorRT workspace, GiB.")
@click.option("--timing-cache", type=click.Path(dir_okay=False), help="TensorRT timing cache file (read, then saved).")
@click.option("--opt-level", type=int, help="TensorRT builder optimization level 0..5 (TensorRT's default 3).")
@click.option("--tf32", is_flag=True, help="Allow TF32 in fp32 TensorRT engines.")
@click.option("--simplify", is_flag=True, help="Run onnxsim on model.onnx (needs onnxsim).")
@click.option("--force", is_flag=True, help="Replace an existing bundle at --out (once the new one is complete).")
@click.option("--quiet", is_flag=True, help="Do not print the export log as it goes.")
def export(checkpoint: str | None, out_dir: str, arch: str | None, weights: str | None, classes_file: str | None,
           quiet: bool, **options: Any) -> None:
    """Export CHECKPOINT (or --arch/--weights) to a bundle: fold BN, ONNX, FP16, INT8, TensorRT, manifest."""
    from pathlib import Path

    from resnet_deploy.export import export_bundle

    out = export_bundle(Path(out_dir), checkpoint=checkpoint and Path(checkpoint), arch=arch,
                        weights=weights and Path(weights), classes=classes_file and Path(classes_file),
                        echo=None if quiet else (lambda line: click.echo(line, err=True)), **options)
    click.echo(f"bundle written to {out}")


if __name__ == "__main__":
    main()
