"""The report's plots (`report.md` embeds them): latency and throughput against batch size, accuracy against latency.

Both read the JSON of validate and bench (`validate/report.py` says its schema) and write a PNG; matplotlib is
imported where a plot is drawn, so the commands that only print never load it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from resnet_deploy.runtime import variants


def _smallest_batch_p50(bench: dict[str, Any]) -> dict[str, float]:
    out: dict[str, tuple[int, float]] = {}
    for r in bench["results"]:
        if r["backend"] not in out or r["batch"] < out[r["backend"]][0]:
            out[r["backend"]] = (r["batch"], r["latency_ms"]["p50"])
    return {k: v[1] for k, v in out.items()}


def backend_colour(name: str) -> str:
    """One colour per backend in every plot: its place in the registry (pytorch first) picks it from a fixed
    palette, whatever else a report holds."""
    order = ["pytorch", *variants.names()]
    base = name.split(" (")[0]  # "pytorch (checkpoint)"
    palette = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22",
               "#17becf", "#393b79", "#637939", "#8c6d31", "#843c39", "#7b4173", "#3182bd", "#e6550d", "#31a354")
    i = order.index(base) if base in order else len(order) + sum(map(ord, base))
    return palette[i % len(palette)]


def _plain_log_axis(axis: Any, fmt: str) -> None:
    """A log axis labelled with plain numbers (0.2, 1, 2, 5; 2,000) at 1-2-5 steps, no `2x10^2` and no crowded
    minor labels."""
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    axis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
    axis.set_major_formatter(FuncFormatter(lambda v, _: format(v, fmt)))
    axis.set_minor_formatter(NullFormatter())


def plot_latency_vs_batch(bench: dict[str, Any], path: Path) -> Path:
    """Two panels against batch size: p50 latency (ms) and throughput (images/s), one line per backend."""
    import matplotlib

    matplotlib.use("Agg")  # files only; no display on servers
    import matplotlib.pyplot as plt

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4.6))
    for name in dict.fromkeys(r["backend"] for r in bench["results"]):
        rows = sorted((r for r in bench["results"] if r["backend"] == name), key=lambda r: r["batch"])
        xs = [r["batch"] for r in rows]
        colour = backend_colour(name)
        ax1.plot(xs, [r["latency_ms"]["p50"] for r in rows], marker="o", label=name, color=colour)
        ax2.plot(xs, [r["throughput_ips"] for r in rows], marker="o", label=name, color=colour)
    batches = sorted({r["batch"] for r in bench["results"]})
    for ax, label, fmt in ((ax1, "p50 latency (ms)", "g"), (ax2, "throughput (images/s)", ",.0f")):
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")  # eager and int8 differ by orders of magnitude on small models
        _plain_log_axis(ax.yaxis, fmt)
        ax.set_xticks(batches, [str(b) for b in batches])
        ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
        ax.set_xlabel("batch size")
        ax.set_ylabel(label)
        ax.grid(True, which="major", alpha=0.3)
    handles, labels = ax1.get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=min(len(labels), 5), frameon=False)
    fig.suptitle(f"{bench['arch']}: latency and throughput against batch size ({bench['settings']['device']})")
    fig.tight_layout(rect=(0, 0.06 * (1 + (len(labels) - 1) // 5), 1, 1))
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def _gate_drop(validate: dict[str, Any]) -> tuple[float, str] | None:
    """The largest top-1 drop a gate allows (points) and the precisions it applies to; None without such a gate."""
    drops: dict[float, list[str]] = {}
    for key, value in validate.get("tolerances", {}).items():
        if key.endswith("_top1_drop") and value is not None:
            drops.setdefault(float(value), []).append(key[:-len("_top1_drop")])
    if not drops:
        return None
    top = max(drops)
    return top, ", ".join(drops[top])


def plot_accuracy_vs_latency(validate: dict[str, Any], bench: dict[str, Any], path: Path) -> Path:
    """Top-1 accuracy against p50 latency at the smallest batch benchmarked, one point per backend, on a range that
    shows the accuracy gate (the reference's top-1 and the lowest top-1 a gate passes), not the noise between
    backends."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    p50 = _smallest_batch_p50(bench)
    points = [(b["backend"], p50[b["backend"]], b["top1"]) for b in validate["backends"]
              if b["top1"] is not None and b["backend"] in p50]
    ref = validate["reference"]["top1"]
    if "pytorch" in p50 and ref is not None:
        points.insert(0, (f"pytorch ({validate['reference']['kind']})", p50["pytorch"], ref))
    fig, ax = plt.subplots(figsize=(7.5, 5))
    markers = "osD^vP*Xhp<>"
    for i, (name, x, y) in enumerate(points):  # a legend, not labels beside the points: those collide
        ax.scatter([x], [y], color=backend_colour(name), marker=markers[i % len(markers)], s=60, label=name,
                   edgecolors="black", linewidths=0.5, zorder=3)
    ys = [y for _, _, y in points]
    gate = _gate_drop(validate)
    low, high = (min(ys), max(ys)) if ys else (0.0, 100.0)
    if ref is not None:
        ax.axhline(ref, color="#444444", linestyle="-", linewidth=0.8, zorder=1)
        ax.annotate("reference top-1", (0.01, ref), xycoords=("axes fraction", "data"), textcoords="offset points",
                    xytext=(0, 3), fontsize=8, color="#444444")
        if gate is not None:
            floor = ref - gate[0]
            ax.axhline(floor, color="#d62728", linestyle="--", linewidth=1, zorder=1)
            ax.annotate(f"gate: top-1 drop <= {gate[0]:g} point(s) ({gate[1]})", (0.01, floor),
                        xycoords=("axes fraction", "data"), textcoords="offset points", xytext=(0, 3), fontsize=8,
                        color="#d62728")
            low, high = min(low, floor), max(high, ref)
    span = max(high - low, 1.0)  # at least a point: closer differences are noise on a test set of this size
    ax.set_ylim(low - 0.5 * span, high + 0.3 * span)
    ax.set_xscale("log")
    _plain_log_axis(ax.xaxis, "g")
    lo_x, hi_x = min(x for _, x, _ in points), max(x for _, x, _ in points)
    ax.set_xlim(lo_x / 1.5, hi_x * 1.5)
    ax.set_xlabel(f"p50 latency (ms), batch {min(r['batch'] for r in bench['results'])}")
    ax.set_ylabel("top-1 accuracy (%)")
    ax.set_title(f"{bench['arch']}: accuracy against latency ({validate['num_samples']} images)")
    ax.grid(True, which="major", alpha=0.3)
    ax.legend(loc="lower right", fontsize=8, ncol=2)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
