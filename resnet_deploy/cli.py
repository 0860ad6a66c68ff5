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


if __name__ == "__main__":
    main()
