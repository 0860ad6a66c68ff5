"""Training curves of several runs side by side, the paper's Figure 6: training error (thin, dashed) and test error
(bold) against iterations, one colour per run, plain and residual nets in two panels; a table of what each run
reached (terminal, JSON, and a Markdown file beside the PNG).

Read from each run folder's metrics.jsonl (its records: `resnet_deploy.train.logger`). The training error is the
logger's: the error of the augmented minibatches since the previous record, averaged (the running training error;
the paper's curves are the same kind of average, not a pass over the training set). Runs still going, or stopped and
resumed, are drawn as far as they got: records of iterations after a `resume` point are work the resumed process did
again, so they are dropped. A last line without its newline (a process killed mid-write, or one writing now) and lines
that are not records are skipped and counted, never fatal.
"""

from __future__ import annotations

import json
import math
import statistics
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from resnet_deploy import models
from resnet_deploy.checkpoint import load_checkpoint, model_from_checkpoint
from resnet_deploy.config import load_train_config
from resnet_deploy.runtime.errors import ResnetDeployError, quote
from resnet_deploy.runtime.files import atomic_write, atomic_write_text

METRICS = "metrics.jsonl"
MAX_METRICS_BYTES = 256 << 20  # 64k iterations logged every 10 are ~1.2 MB; anything near this is not a metrics file


@dataclass
class RunCurves:
    """One run's curves and what it reached. Errors are fractions (0.08 = 8%)."""

    folder: str
    label: str
    arch: str | None = None
    parameters: int | None = None
    planned: int | None = None  # schedule.iterations
    train: list[tuple[int, float]] = field(default_factory=list)  # (iteration, running training error)
    test: list[tuple[int, float]] = field(default_factory=list)  # (iteration, test error)
    lr: list[tuple[int, float]] = field(default_factory=list)  # (iteration, lr) of each train record
    img_per_s: float | None = None  # median over log intervals, the first of each process left out (warm-up)
    wall_s: float = 0.0  # summed over the processes that wrote the file (resumed runs: several)
    processes: int = 0
    skipped: list[int] = field(default_factory=list)  # line numbers that were not records
    partial_last_line: bool = False

    @property
    def reached(self) -> int:
        return max([i for i, _ in self.train] + [i for i, _ in self.test], default=0)

    @property
    def finished(self) -> bool:
        return self.planned is not None and self.reached >= self.planned and bool(self.test) and \
            self.test[-1][0] >= self.planned

    def summary(self) -> dict[str, Any]:
        """The table row: final and best test error, final training error, parameters, img/s, wall time."""
        best = min(self.test, key=lambda p: p[1]) if self.test else None
        def r6(v: float | None) -> float | None:  # 1 - top1 leaves float noise (0.0854000...03) in the JSON
            return None if v is None else round(v, 6)

        return {"run": self.label, "folder": self.folder, "arch": self.arch, "parameters": self.parameters,
                "iteration": self.reached, "planned": self.planned, "finished": self.finished,
                "final_test_error": r6(self.test[-1][1] if self.test else None),
                "final_test_iteration": self.test[-1][0] if self.test else None,
                "best_test_error": r6(best[1] if best else None), "best_test_iteration": best[0] if best else None,
                "final_train_error": r6(self.train[-1][1] if self.train else None),
                "img_per_s": self.img_per_s, "wall_s": round(self.wall_s, 1), "processes": self.processes,
                "skipped_lines": len(self.skipped), "partial_last_line": self.partial_last_line}


# ------------------------------------------------------------------------------------------------------------ reading
def _number(rec: dict[str, Any], key: str, lo: float = -math.inf, hi: float = math.inf) -> float:
    v = rec[key]
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not (math.isfinite(v) and lo <= v <= hi):
        raise ValueError(key)
    return float(v)


def _iteration(rec: dict[str, Any]) -> int:
    v = rec["iteration"]
    if isinstance(v, bool) or not isinstance(v, int) or v < 0:
        raise ValueError("iteration")
    return v


def _records(path: Path) -> tuple[list[tuple[int, dict[str, Any]]], list[int], bool]:
    """(line number, record) of every well-formed line; the numbers of the others; whether the last line was cut."""
    try:
        size = path.stat().st_size
        if size > MAX_METRICS_BYTES:
            raise ResnetDeployError(f"{path} is {size:,} bytes, over the limit of {MAX_METRICS_BYTES:,} for a "
                                    "metrics file")
        data = path.read_bytes()
    except OSError as e:
        raise ResnetDeployError(f"cannot read {path}: {e.strerror or e}") from None
    lines = data.split(b"\n")
    partial = lines[-1] != b""  # written without its newline: killed mid-write, or being written now
    records, bad = [], []
    for n, raw in enumerate(lines[:-1], start=1):
        if not raw.strip():
            continue
        try:
            rec = json.loads(raw)
            if not isinstance(rec, dict) or not isinstance(rec.get("kind"), str):
                raise ValueError("kind")
            _number(rec, "time_s", 0)
            if rec["kind"] in ("train", "eval", "resume", "start"):
                _iteration(rec)
            if rec["kind"] == "train":
                _number(rec, "train_error", 0, 1)
                _number(rec, "lr", 0)
            if rec["kind"] == "eval":
                _number(rec, "top1", 0, 1)
        except (ValueError, KeyError, TypeError, RecursionError):  # UnicodeDecodeError is a ValueError
            bad.append(n)
            continue
        records.append((n, rec))
    return records, bad, partial


def _config_facts(folder: Path) -> dict[str, Any]:
    """arch and schedule.iterations from the run's config.yaml (written by `train`), for logs without a start record;
    read as a recipe is (size limit, no YAML aliases), since run folders are shared like recipes."""

    try:
        cfg = load_train_config(folder / "config.yaml")
    except ResnetDeployError:  # missing, or from another version of the recipe format: the log alone then
        return {}
    return {"arch": cfg.model.arch, "planned": cfg.schedule.iterations}


def read_run(path: str | Path, label: str | None = None) -> RunCurves:
    """A run's curves from its folder (or its metrics.jsonl).

    Raises:
        ResnetDeployError: no metrics.jsonl there, or not one training or evaluation record in it.
    """
    p = Path(path)
    folder, file = (p.parent, p) if p.name == METRICS and not p.is_dir() else (p, p / METRICS)
    if not file.is_file():
        raise ResnetDeployError(f"no {METRICS} in {folder}: not a run folder (`resnet-deploy train` writes one)"
                                if folder.is_dir() else f"run folder not found: {folder}")
    name = folder.resolve().name
    run = RunCurves(folder=str(folder), label=label or (name if name.isprintable() else quote(name)),
                    **_config_facts(folder))
    records, run.skipped, run.partial_last_line = _records(file)
    train: dict[int, tuple[float, float, float]] = {}  # iteration -> (error, lr, img/s)
    test: dict[int, float] = {}
    last_time, first_interval, steady = -1.0, True, []
    for _, rec in records:
        kind, t = rec["kind"], float(rec["time_s"])
        if t < last_time or run.processes == 0:  # time_s starts from 0 in every process
            run.processes += 1
            first_interval = True
            run.wall_s += max(last_time, 0.0)
        last_time = t
        if kind in ("resume", "start"):  # what was logged past this point was lost and is done again
            it = _iteration(rec)
            train = {i: v for i, v in train.items() if i <= it}
            test = {i: v for i, v in test.items() if i <= it}
        if kind == "start":
            run.arch = rec["arch"] if isinstance(rec.get("arch"), str) else run.arch
            if isinstance(rec.get("parameters"), int):
                run.parameters = rec["parameters"]
            if isinstance(rec.get("iterations"), int):
                run.planned = rec["iterations"]
        elif kind == "train":
            ips = rec.get("img_per_s")
            train[_iteration(rec)] = (float(rec["train_error"]), float(rec["lr"]), ips)
            if not first_interval and isinstance(ips, (int, float)) and math.isfinite(ips) and ips > 0:
                steady.append(float(ips))
            first_interval = False
        elif kind == "eval":
            test[_iteration(rec)] = 1.0 - float(rec["top1"])
    run.wall_s += max(last_time, 0.0)
    if not train and not test:
        raise ResnetDeployError(f"{file} holds no training or evaluation record yet"
                                + (f" ({len(run.skipped)} malformed line(s) skipped, first line {run.skipped[0]})"
                                   if run.skipped else ""))
    run.train = [(i, v[0]) for i, v in sorted(train.items())]
    run.lr = [(i, v[1]) for i, v in sorted(train.items())]
    run.test = sorted(test.items())
    run.img_per_s = round(statistics.median(steady), 1) if steady else None
    if run.parameters is None:
        run.parameters = _parameters_from_checkpoint(folder)
    return run


def _parameters_from_checkpoint(folder: Path) -> int | None:
    """Logs written before the start record existed: count the parameters of the run's last.pt, when it has one."""
    if not (folder / "last.pt").is_file():
        return None

    try:
        return models.count_parameters(model_from_checkpoint(load_checkpoint(folder / "last.pt")))
    except (ResnetDeployError, KeyError, RuntimeError):
        return None


def warnings(runs: list[RunCurves]) -> list[str]:
    """One line per run whose metrics.jsonl had lines that were skipped."""
    out = []
    for r in runs:
        if r.skipped:
            shown = ", ".join(map(str, r.skipped[:5])) + (" ..." if len(r.skipped) > 5 else "")
            out.append(f"{r.folder}/{METRICS}: skipped {len(r.skipped)} malformed line(s) (line {shown})")
        if r.partial_last_line:
            out.append(f"{r.folder}/{METRICS}: last line incomplete (a run still writing, or one killed "
                       "mid-write), skipped")
    return out


# ---------------------------------------------------------------------------------------------------------- the figure
def _panels(runs: list[RunCurves]) -> list[tuple[str, list[RunCurves]]]:
    """Plain and residual nets in two panels, as Figure 6, when both are there; otherwise one."""

    residual = {id(r): models.ARCHITECTURES[r.arch][2] if r.arch in models.ARCHITECTURES else None for r in runs}
    plain = [r for r in runs if residual[id(r)] is False]
    if not plain or len(plain) == len(runs):
        return [("", runs)]
    return [("plain", plain), ("residual", [r for r in runs if residual[id(r)] is not False])]


def _y_top(runs: list[RunCurves]) -> float:
    """Error axis top (%): the highest error after the first 10% of the iterations, with headroom, as Figure 6 cuts
    its axis at 20%; the first iterations' errors near 90% would otherwise squash every difference that matters."""
    last = max(r.reached for r in runs) or 1
    late = [e for r in runs for i, e in r.train + r.test if i >= 0.1 * last]
    top = 100 * max(late or [e for r in runs for _, e in r.train + r.test])
    return min(100.0, max(5.0, math.ceil(top * 1.15 / 5) * 5))


def _lr_drops(runs: list[RunCurves]) -> list[int]:
    drops: set[int] = set()
    for r in runs:
        drops.update(i for (i, a), (_, b) in zip(r.lr, r.lr[1:], strict=False) if b < a * 0.5)
    return sorted(drops)


def _tex_safe(text: str) -> str:
    return text.replace("$", r"\$")  # matplotlib reads $...$ as mathtext


def plot_curves(runs: list[RunCurves], path: str | Path, title: str | None = None, y_max: float | None = None) -> Path:
    """Draw the figure to `path` (PNG), written through a temporary file so a reader never sees half of one."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.lines import Line2D
    from matplotlib.ticker import FuncFormatter

    panels = _panels(runs)
    top = y_max or _y_top(runs)
    fig, axes = plt.subplots(1, len(panels), figsize=(6.2 * len(panels), 4.6), sharey=True, squeeze=False)
    colours = plt.get_cmap("tab10").colors
    last = max(r.reached for r in runs)
    for ax, (name, members) in zip(axes[0], panels, strict=True):
        for k, r in enumerate(members):
            c = colours[k % len(colours)]
            ax.plot([i for i, _ in r.train], [100 * e for _, e in r.train], color=c, lw=0.9, ls="--", alpha=0.85)
            text = r.label + (f", test {100 * r.test[-1][1]:.2f}%" if r.test else "")
            if not r.finished:
                text += (f" at {r.test[-1][0]:,}" if r.test else "") + \
                    f" (not finished: {r.reached:,}" + (f" / {r.planned:,})" if r.planned else ")")
            ax.plot([i for i, _ in r.test], [100 * e for _, e in r.test], color=c, lw=2.4, marker="o", ms=3.5,
                    label=_tex_safe(text))
        for i in _lr_drops(members):
            ax.axvline(i, color="0.6", lw=0.8, ls=":", zorder=0)
        ax.set_xlim(0, last * 1.02)
        ax.set_ylim(0, top)
        if last >= 2000:
            ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v / 1000:g}k" if v else "0"))
        ax.set_xlabel("iterations" + ("  (dotted: lr / 10)" if _lr_drops(members) else ""))
        ax.grid(True, alpha=0.25)
        if name:
            ax.set_title(f"{name} nets")
        style = [Line2D([], [], color="0.2", lw=2.4, label="test error (bold)"),
                 Line2D([], [], color="0.2", lw=0.9, ls="--", label="training error (dashed)")]
        ax.legend(handles=[*ax.get_legend_handles_labels()[0], *style], loc="upper right", fontsize=8.5,
                  framealpha=0.9)
    axes[0][0].set_ylabel("error (%)" + (f", axis cut at {top:g}%" if top < 100 else ""))
    fig.suptitle(_tex_safe(title or "Training error (dashed) and test error (bold) against iterations"))
    fig.tight_layout()
    try:
        return atomic_write(path, lambda f: fig.savefig(f, format="png", dpi=110))
    finally:
        plt.close(fig)


# ---------------------------------------------------------------------------------------------------------- the table
COLUMNS = ("run", "arch", "parameters", "iterations", "final test err", "best test err", "final train err", "img/s",
           "wall time", "notes")


def _pct(v: float | None) -> str:
    return "-" if v is None else f"{100 * v:.2f}%"


def table_rows(runs: list[RunCurves]) -> list[tuple[str, ...]]:
    """The table's cells, as text: the same rows in the terminal and in the Markdown file."""
    rows = []
    for r in runs:
        s = r.summary()
        best = f"{_pct(s['best_test_error'])} @ {s['best_test_iteration']:,}" if s["best_test_error"] is not None \
            else "-"
        its = f"{s['iteration']:,}" + (f" / {s['planned']:,}" if s["planned"] else "")
        notes = ([] if s["finished"] else ["not finished"]) + \
            ([f"resumed {s['processes'] - 1}x"] if s["processes"] > 1 else [])
        rows.append((r.label, s["arch"] or "-", f"{s['parameters']:,}" if s["parameters"] else "-", its,
                     _pct(s["final_test_error"]), best, _pct(s["final_train_error"]),
                     f"{s['img_per_s']:,.0f}" if s["img_per_s"] else "-", f"{s['wall_s'] / 60:.1f} min",
                     ", ".join(notes)))
    return rows


def _md(cell: str) -> str:
    return "".join(ch if ch.isprintable() else "?" for ch in cell).replace("|", r"\|").replace("`", "'")


def markdown(runs: list[RunCurves], png: Path, title: str | None = None) -> str:
    """The Markdown file written beside the PNG: the table, the figure, and how the figures were measured."""
    lines = [f"# {_md(title or 'Training curves')}", "", "| " + " | ".join(COLUMNS) + " |",
             "| --- | --- | " + " | ".join(["---:"] * (len(COLUMNS) - 3)) + " | --- |"]
    lines += ["| " + " | ".join(_md(c) for c in row) + " |" for row in table_rows(runs)]
    lines += ["", f"![training curves]({png.name})", "",
              "Test error: the run's evaluations (bold in the figure). Training error: the error of the augmented "
              "minibatches since the previous log record, averaged (dashed), as the weights moved, not a pass over "
              "the training set. img/s: the median over log intervals, the first interval of each process left out. "
              "Wall time: summed over the processes that wrote the run (a resumed run has several), including "
              "evaluations and any work redone after a resume."]
    lines += [f"- {_md(w)}" for w in warnings(runs)]
    return "\n".join(lines) + "\n"


def write_curves(runs: list[RunCurves], png: str | Path, title: str | None = None,
                 y_max: float | None = None) -> tuple[Path, Path]:
    """The PNG and, beside it, the Markdown table (same name, .md).

    Raises:
        ResnetDeployError: `png` does not end in .png, or no runs.
    """
    png = Path(png)
    if png.suffix.lower() != ".png":
        raise ResnetDeployError(f"--out must name a .png file, found {quote(str(png))}")
    if not runs:
        raise ResnetDeployError("no runs to draw")
    plot_curves(runs, png, title, y_max)
    md = atomic_write_text(png.with_suffix(".md"), markdown(runs, png, title))
    return png, md


def to_json(runs: list[RunCurves]) -> list[dict[str, Any]]:
    """Each run's summary with its curves (iteration, error) for `--json`."""
    return [{**r.summary(), "train_curve": r.train, "test_curve": r.test} for r in runs]

