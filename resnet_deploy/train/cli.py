"""The `curves` command, registered on the main group by `register`: several runs' training and test error on one
figure (the paper's Figure 6), and the table of what each run reached.

Thin, like every command: parse, call `resnet_deploy.train.curves`, print. Library errors (`ResnetDeployError`)
become the group's one-line `Error: ...` with exit code 2.
"""

from __future__ import annotations

import json
from pathlib import Path

import click


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
    """Add the `curves` command to the `resnet-deploy` group."""
    group.add_command(curves)
