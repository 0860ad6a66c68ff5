"""The `info` command's figures: the model zoo as rows, one network beside the paper's numbers, and their tables."""

from __future__ import annotations

from typing import Any

from resnet_deploy import models


def zoo_rows() -> list[dict[str, Any]]:
    """One row per architecture: name, family, depth, whether it is residual, default shortcut, input size."""
    rows = []
    for arch, (fam, depth, residual) in models.ARCHITECTURES.items():
        rows.append({"name": arch, "family": fam, "depth": depth, "residual": residual,
                     "default_shortcut": models.DEFAULTS[fam]["shortcut"] if residual else "-",
                     "input_size": models.natural_input_size(arch)})
    return rows


def print_zoo(rows: list[dict[str, Any]]) -> None:
    """The zoo as a rich table."""
    from rich.console import Console
    from rich.table import Table

    table = Table(title="resnet-deploy model zoo (He et al. 2015)")
    for col in ("name", "family", "depth", "shortcuts", "default shortcut", "input"):
        table.add_column(col)
    for r in rows:
        table.add_row(r["name"], r["family"], str(r["depth"]), "yes" if r["residual"] else "none (plain)",
                      r["default_shortcut"], f"{r['input_size']}x{r['input_size']}")
    Console().print(table)


def print_description(name: str, d: dict[str, Any]) -> None:
    """One network (`models.describe`) beside the paper's figures, as a rich table."""
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"{name} (shortcut {d['shortcut']}, {d['input_size']}x{d['input_size']} input)")
    for col, justify in (("figure", "left"), ("this model", "right"), ("paper", "right")):
        table.add_column(col, justify=justify)
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
