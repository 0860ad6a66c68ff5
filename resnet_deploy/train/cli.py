"""The training commands, registered on the main group by `register`: `train` (a recipe into a run folder), `eval`
(a checkpoint's accuracy) and `curves` (several runs' training and test error on one figure, the paper's Figure 6,
and the table of what each run reached).

Thin, like every command: parse, call `resnet_deploy.train`, print. Library errors (`ResnetDeployError`)
become the group's one-line `Error: ...` with exit code 2.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click

from resnet_deploy.cli_options import DATA_HELP, bounded, echo, echo_json


@click.command()
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


@click.command(name="eval")
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


@click.command()
@click.argument("runs", nargs=-1, required=True, type=click.Path(path_type=str))
@click.option("--out", type=click.Path(dir_okay=False, path_type=str),
              help="PNG to write; the table goes beside it as .md [default: curves.png in the first run's parent].")
@click.option("--title", help="Figure and table title.")
@click.option("--y-max", type=click.FloatRange(min=0.1, max=100), help="Top of the error axis in % [default: from "
              "the data, as Figure 6 cuts its axis].")
@click.option("--json", "as_json", is_flag=True, help="Print JSON (the table and each curve) instead of the table.")
def curves(runs: tuple[str, ...], out: str | None, title: str | None, y_max: float | None, as_json: bool) -> None:
    """Training error (dashed) and test error (bold) of RUNS (run folders) against iterations, one colour per run,
    plain and residual nets in two panels, as the paper's Figure 6; a table of final and best test error, final
    training error, parameters, img/s and wall time. Runs still going or resumed are drawn as far as they got."""
    from resnet_deploy.train import curves as lib

    read = [lib.read_run(r) for r in runs]
    png = Path(out) if out else Path(runs[0]).resolve().parent / "curves.png"
    written = lib.write_curves(read, png, title, y_max)
    for line in lib.warnings(read):
        click.echo(f"warning: {line}", err=True)
    if as_json:
        click.echo(json.dumps({"runs": lib.to_json(read), "files": [str(p) for p in written]}, indent=2))
        return
    from resnet_deploy.console import print_table

    print_table(title or "Training curves", lib.COLUMNS, lib.table_rows(read),
                right=tuple(c for c in lib.COLUMNS if c not in ("run", "arch", "notes")))
    click.echo(f"figure: {written[0]}, table: {written[1]}")


def register(group: click.Group) -> None:
    """Add `train`, `eval` and `curves` to the `resnet-deploy` group."""
    for command in (train, eval_cmd, curves):
        group.add_command(command)
