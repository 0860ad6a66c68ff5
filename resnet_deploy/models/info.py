"""The `info` command's figures: the model zoo as rows, one network beside the paper's numbers, and their tables."""

from __future__ import annotations

from typing import Any

from resnet_deploy import models
from resnet_deploy.console import print_table


def zoo_rows() -> list[dict[str, Any]]:
    """One row per architecture: name, family, depth, whether it is residual, default shortcut, input size."""
    rows = []
    for arch, (fam, depth, residual) in models.ARCHITECTURES.items():
        rows.append({"name": arch, "family": fam, "depth": depth, "residual": residual,
                     "default_shortcut": models.DEFAULTS[fam]["shortcut"] if residual else "-",
                     "input_size": models.natural_input_size(arch)})
    return rows


def print_zoo(rows: list[dict[str, Any]]) -> None:
    """The zoo as a table (`console.print_table`: whole names on a terminal and off it)."""
    print_table("resnet-deploy model zoo (He et al. 2015)",
                ("name", "family", "depth", "shortcuts", "default shortcut", "input"),
                [[r["name"], r["family"], r["depth"], "yes" if r["residual"] else "none (plain)", r["default_shortcut"],
                  f"{r['input_size']}x{r['input_size']}"] for r in rows], right=("depth",))


def print_description(name: str, d: dict[str, Any]) -> None:
    """One network (`models.describe`) beside the paper's figures, as a table."""
    p = d["paper"]
    if d["family"] == "imagenet":
        rows = [["parameters", f"{d['params']:,}", ""],
                ["multiply-adds (G)", f"{d['macs'] / 1e9:.3f}", f"{p['gflops']} (Table 1)"],
                ["top-1 / top-5 error % (10-crop)", "", f"{p['top1_error_pct']} / {p['top5_error_pct']}"]]
    else:
        def cite(value: Any) -> str:
            return f"{value} ({p['source']})" if value is not None else f"- ({p['source']})"

        rows = [["parameters (M)", f"{d['params'] / 1e6:.3f}", cite(p["params_M"])],
                ["multiply-adds (M)", f"{d['macs'] / 1e6:.1f}", ""],
                ["CIFAR-10 test error %", "", cite(p["test_error_pct"])]]
    print_table(f"{name} (shortcut {d['shortcut']}, {d['input_size']}x{d['input_size']} input)",
                ("figure", "this model", "paper"), rows, right=("this model", "paper"))
