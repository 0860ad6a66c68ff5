"""Reports of the validation harness: JSON with stable keys, a Markdown report, and PNG plots, in `BUNDLE/reports/`.

Files (names fixed):
    validate.json  written by `resnet-deploy validate`   (schema below)
    bench.json     written by `resnet-deploy bench`      (schema below)
    report.md      both JSON files, rendered; rewritten after either command
    latency_vs_batch.png      p50 latency and throughput against batch size, one line per backend (needs bench)
    accuracy_vs_latency.png   top-1 against p50 latency at the smallest batch, per backend (needs both)

validate.json and bench.json are the `to_dict()` of `parity.ParityReport` and `bench.BenchReport` (their fields,
with `schema` and `schema_version` first): the schema lives in those dataclasses. Accuracies and agreement are
percentages, latencies milliseconds, throughput images per second.
"""

from __future__ import annotations

import json
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from resnet_deploy.console import print_table
from resnet_deploy.runtime.errors import ResnetDeployError
from resnet_deploy.runtime.files import atomic_write_text
from resnet_deploy.runtime.manifest import check_writable, reports_path
from resnet_deploy.validate.plots import plot_accuracy_vs_latency, plot_latency_vs_batch

VALIDATE_JSON, BENCH_JSON, REPORT_MD = "validate.json", "bench.json", "report.md"
LATENCY_PNG, ACCURACY_PNG = "latency_vs_batch.png", "accuracy_vs_latency.png"
REPORT_FILES = (VALIDATE_JSON, BENCH_JSON, REPORT_MD, LATENCY_PNG, ACCURACY_PNG)
SCHEMA_VERSION = 1


def now_utc() -> str:
    """ISO-8601 UTC timestamp for the `created` key."""
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def write_json(obj: dict[str, Any], path: str | Path) -> Path:
    """Write a report dict as indented JSON (parent directories made), atomically."""
    return atomic_write_text(path, json.dumps(obj, indent=2) + "\n")


def save(result: dict[str, Any], bundle: str | Path, also: str | Path | None = None) -> list[Path]:
    """Store a validate or bench result as BUNDLE/reports/<validate|bench>.json (and at `also`), then re-render
    report.md and the plots from whatever the reports folder now holds.

    Returns:
        The rendered files (JSON excluded).
    """
    name = {"resnet-deploy/validate": VALIDATE_JSON, "resnet-deploy/bench": BENCH_JSON}[result["schema"]]
    reports = reports_path(bundle)
    stay_inside(reports)
    write_json(result, reports / name)
    if also:
        write_json(result, also)
    return write_reports(reports)


def check_outputs(bundle: str | Path, also: str | Path | None = None, names: tuple[str, ...] = REPORT_FILES) -> None:
    """Refuse, before a run, outputs it could not write at its end: the bundle's reports folder (a link out of the
    bundle, or a read-only bundle) and `also` (a --json file)."""
    for name in names:
        check_writable(reports_path(bundle, name), "report")
    if also:
        check_writable(also, "--json file")


def stay_inside(reports: Path) -> None:
    """Refuse (BundleError) a reports folder, or a report file in it, that is a link out of the bundle.

    A downloaded bundle may carry `reports` as a link to another folder: writing through it would overwrite files
    there, reading through it would read them.
    """
    for name in ("", *REPORT_FILES):
        reports_path(reports.parent, name)


def read_report(path: Path) -> dict[str, Any] | None:
    """A report JSON from the reports folder, or None when it is missing or unreadable."""
    stay_inside(path.parent)
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return None


def _fmt(v: Any, spec: str = ".2f") -> str:
    return "-" if v is None else format(v, spec)


def roofline_text(r: dict[str, Any]) -> str:
    """A row's share of its roof; above 100% the roof was measured too low, and the figure is not a share."""
    ratio, roof = r["roofline_ratio"], r.get("roof_precision", "fp32")
    return f"{ratio:.1%} {roof}" if ratio <= 1 else f"over the {roof} roof: {ratio:.0%}, roof too low"


def ceilings_text(c: dict[str, Any]) -> str:
    """'fp32 ceiling 190.0 GFLOP/s (2048^3 matmul, same run); int8 ... GOP/s (...)' from a bench ceiling."""
    text = f"fp32 ceiling {c['gflops']:.1f} GFLOP/s ({c['n']}^3 matmul, same run)"
    for p, e in (c.get("precisions") or {}).items():
        if p != "fp32":
            text += f"; {p} ceiling {e['gflops']:.1f} GOP/s ({e['n']}^3, {e['library']})"
    return text


def validate_markdown(v: dict[str, Any]) -> str:
    """The validate report as a Markdown section."""
    ref = v["reference"]
    lines = [f"## Accuracy parity ({'PASS' if v['passed'] else 'FAIL'})", "",
             f"Data `{v['data']}`, {v['num_samples']} images, {v['num_classes']} classes. Reference: "
             f"{ref['kind']} `{ref.get('path')}` top-1 {_fmt(ref['top1'])}%, top-5 {_fmt(ref['top5'])}%."
             + (f" {ref['note']}" if ref.get("note") else ""), "",
             "Tolerances: " + ", ".join(f"{k} {val}" for k, val in v["tolerances"].items()), "",
             "| backend | precision | status | top-1 % | top-5 % | agreement % | max abs diff | mean abs diff "
             "| notes |",
             "| --- | --- | --- | ---: | ---: | ---: | ---: | ---: | --- |"]
    for b in v["backends"]:
        notes = b.get("reason") or "; ".join(b.get("failures") or [])
        lines.append(f"| {b['backend']} | {b['precision']} | {b['status']} | {_fmt(b['top1'])} | {_fmt(b['top5'])} | "
                     f"{_fmt(b['agreement'], '.3f')} | {_fmt(b['max_abs_diff'], '.2e')} | "
                     f"{_fmt(b['mean_abs_diff'], '.2e')} | {notes} |")
    return "\n".join(lines) + "\n"


def bench_markdown(b: dict[str, Any]) -> str:
    """The bench report as a Markdown section."""
    s, c = b["settings"], b["ceiling"]
    lines = ["## Latency and throughput", "",
             f"{s['device']}, {s['threads'] or 'default'} threads, warm-up {s['warmup_s']} s, run {s['duration_s']} s "
             f"per point in {s.get('rounds', 1)} round-robin round(s); "
             f"{b['macs_per_image'] / 1e6:.1f} M multiply-adds per image; {ceilings_text(c)}.", "",
             "| backend | batch | p50 ms | mean ms | p90 ms | p99 ms | min ms | max ms | images/s "
             "| speed-up vs pytorch | GFLOP/s | roofline |",
             "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for r in b["results"]:
        lat = r["latency_ms"]
        lines.append(f"| {r['backend']} | {r['batch']} | {lat['p50']:.3f} | {lat['mean']:.3f} | {lat['p90']:.3f} | "
                     f"{lat['p99']:.3f} | {lat['min']:.3f} | {lat['max']:.3f} | {r['throughput_ips']:.1f} | "
                     f"{_speedup_text(r)} | {r['achieved_gflops']:.1f} | {roofline_text(r)} |")
    device_rows = [r for r in b["results"] if r.get("device_latency_ms")]
    if device_rows:
        lines += ["", "Device time (CUDA events / engine timing), apart from host time including copies:", "",
                  "| backend | batch | device p50 ms | host p50 ms |", "| --- | ---: | ---: | ---: |"]
        lines += [f"| {r['backend']} | {r['batch']} | {r['device_latency_ms']['p50']:.3f} | "
                  f"{r['latency_ms']['p50']:.3f} |" for r in device_rows]
    lines += [""] + [f"- skipped {k['backend']}: {k['reason']}" for k in b["skipped"]]
    lines += [f"- note: {n}" for n in b.get("notes", [])]
    return "\n".join(lines).rstrip() + "\n"


def environment_markdown(e: dict[str, Any]) -> str:
    """One paragraph naming the machine and the library versions."""
    versions = ", ".join(f"{k} {v}" for k, v in e["versions"].items() if v)
    native = ", ".join(f"{p} ({', '.join(f)})" if f else p for p, f in e.get("cpu_native", {}).items())
    caps = ", ".join(f"{k}={v}" for k, v in e.get("isa_caps", {}).items())
    return (f"## Environment\n\nCPU {e['cpu']} ({e['cpu_count']} logical"
            + (f"; native {native}" if native else "") + ")"
            + (f", **instruction set capped ({caps}): an emulation of an older CPU**" if caps else "")
            + f", GPU {e['gpu'] or 'none'}, {e['platform']}, Python {e['python']}, resnet-deploy {e['resnet_deploy']}; "
            f"{versions}.\n")


def write_reports(reports_dir: str | Path) -> list[Path]:
    """Render report.md and the PNGs from whichever of validate.json / bench.json are in `reports_dir`.

    Returns:
        The files written (JSON files excluded).
    """
    d = Path(reports_dir)
    stay_inside(d)
    v, b = read_report(d / VALIDATE_JSON), read_report(d / BENCH_JSON)
    title = (v or b or {}).get("arch", "model")
    parts = [f"# {title}: validation report\n", f"Bundle `{(v or b or {}).get('bundle')}`.\n"]
    written: list[Path] = []
    if v:
        parts.append(validate_markdown(v))
    if b:
        parts.append(bench_markdown(b))
        written.append(plot_latency_vs_batch(b, d / LATENCY_PNG))
        parts.append(f"![latency against batch size]({LATENCY_PNG})\n")
    if v and b:
        written.append(plot_accuracy_vs_latency(v, b, d / ACCURACY_PNG))
        parts.append(f"![accuracy against latency]({ACCURACY_PNG})\n")
    elif b:
        parts.append("Run `resnet-deploy validate` for the accuracy figures and the accuracy/latency plot.\n")
    env = (b or v or {}).get("environment")
    if env:
        parts.append(environment_markdown(env))
    (d / REPORT_MD).write_text("\n".join(parts))
    return [d / REPORT_MD, *written]


SUMMARY_COLUMNS = ("backend", "precision", "status", "top-1 %", "agreement %", "max |d|", "p50 ms (batch 1)",
                   "speed-up vs pytorch", "img/s (largest batch)")


def _speedup(r: dict[str, Any]) -> float | None:
    """PyTorch eager's p50 over this row's at the same batch (2.00: twice as fast); None without PyTorch timed."""
    if r.get("speedup") is not None:
        return r["speedup"]
    return 1 / r["latency_ratio"] if r.get("latency_ratio") else None  # reports written before the field


def _speedup_text(r: dict[str, Any]) -> str:
    sp = _speedup(r)
    return "-" if sp is None else f"{sp:.2f}x"


def summary_rows(v: dict[str, Any] | None, b: dict[str, Any] | None) -> list[tuple[str, ...]]:
    """One row per backend joining validate.json and bench.json (either may be None): the demo's closing table."""
    acc = {r["backend"]: r for r in (v or {}).get("backends", [])}
    if v:
        ref = v["reference"]
        acc.setdefault("pytorch", {"precision": "fp32", "status": f"reference ({ref['kind']})", "top1": ref["top1"],
                                   "agreement": 100.0, "max_abs_diff": 0.0})
    small: dict[str, dict[str, Any]] = {}
    large: dict[str, dict[str, Any]] = {}
    for r in (b or {}).get("results", []):
        name = r["backend"]
        if name not in small or r["batch"] < small[name]["batch"]:
            small[name] = r
        if name not in large or r["batch"] > large[name]["batch"]:
            large[name] = r
    order = ["pytorch"] + [n for n in [*acc, *small] if n != "pytorch"]
    rows = []
    for name in dict.fromkeys(order):
        a, s, g = acc.get(name, {}), small.get(name), large.get(name)
        if not a and not s:
            continue
        rows.append((name, a.get("precision") or (s or {}).get("precision", ""), a.get("status", "not validated"),
                     _fmt(a.get("top1")), _fmt(a.get("agreement"), ".3f"), _fmt(a.get("max_abs_diff"), ".1e"),
                     _fmt(s["latency_ms"]["p50"], ".3f") if s else "-",
                     _speedup_text(s) if s else "-",
                     f"{_fmt(g['throughput_ips'], '.0f')} (b{g['batch']})" if g else "-"))
    return rows


def summary_data(bundle: str | Path) -> tuple[list[tuple[str, ...]], list[Path]]:
    """The summary rows of a bundle's last validate and bench runs (`summary_rows`) and its report files, re-rendered.

    Raises:
        ResnetDeployError: no bundle there, or no report to summarise yet.
    """

    if not Path(bundle).is_dir():
        raise ResnetDeployError(f"bundle directory not found: {bundle}")
    d = reports_path(bundle)
    v, b = read_report(d / VALIDATE_JSON), read_report(d / BENCH_JSON)
    if v is None and b is None:
        raise ResnetDeployError(f"{d} holds no validate.json or bench.json; run `resnet-deploy validate` and `bench` "
                                "first")
    return summary_rows(v, b), write_reports(d)


def print_summary(bundle: str | Path) -> list[Path]:
    """Print the summary table of a bundle's last validate and bench runs; re-render and return its report files.

    Raises:
        ResnetDeployError: no bundle there, or no report to summarise yet.
    """
    rows, written = summary_data(bundle)
    d = reports_path(bundle)
    v, b = read_report(d / VALIDATE_JSON), read_report(d / BENCH_JSON)
    data = f" on {v['num_samples']} images of {v['data']}" if v else ""
    # the reports are files of the bundle, which may come from anywhere: print_table shows their text as text
    # (escaped, and never read as rich's markup)
    print_table(f"{(v or b or {})['arch']}: accuracy{data}, latency on this machine", SUMMARY_COLUMNS, rows,
                right=tuple(c for c in SUMMARY_COLUMNS if c not in ("backend", "precision", "status")))
    return written


def validate_summary(v: dict[str, Any]) -> list[str]:
    """Terminal lines for a validate report: one per backend, then the verdict."""
    ref = v["reference"]
    lines = [f"reference ({ref['kind']}): top-1 {ref['top1']:.2f}%  top-5 {ref['top5']:.2f}%  "
             f"on {v['num_samples']} images of {v['data']}" + (f"  [{ref['note']}]" if ref.get("note") else "")]
    for b in v["backends"]:
        if b["status"] == "SKIPPED":
            lines.append(f"SKIPPED {b['backend']}: {b['reason']}")
            continue
        why = "  -- " + "; ".join(b["failures"]) if b["failures"] else ""
        lines.append(f"{b['status']:<7} {b['backend']:<9} {b['precision']}  top-1 {b['top1']:.2f}%  "
                     f"top-5 {b['top5']:.2f}%  agreement {b['agreement']:.3f}%  max|d| {b['max_abs_diff']:.2e}  "
                     f"mean|d| {b['mean_abs_diff']:.2e}{why}")
    failed = [b["backend"] for b in v["backends"] if b["status"] == "FAIL"]
    ran = [b for b in v["backends"] if b["status"] != "SKIPPED"]
    verdict = ("PASS: every backend is within tolerance" if v["passed"] else
               f"FAIL: {', '.join(failed)} outside tolerance" if failed else "FAIL: no backend could run here")
    extra = v.get("unlisted_files") or []
    if extra:
        shown = ", ".join(extra[:10]) + (f" and {len(extra) - 10} more" if len(extra) > 10 else "")
        lines.append(f"WARNING: {len(extra)} file(s) in the bundle are not in its manifest (never verified, never "
                     f"loaded): {shown}")
    return lines + [f"{verdict} ({len(ran)} checked, {len(v['backends']) - len(ran)} skipped)"]


def bench_summary(b: dict[str, Any]) -> list[str]:
    """Terminal lines for a bench report: one per backend and batch size."""
    lines = [f"{ceilings_text(b['ceiling'])}; {b['macs_per_image'] / 1e6:.1f} M multiply-adds per image"]
    for r in b["results"]:
        lat = r["latency_ms"]
        ratio = f"  {_speedup_text(r)} pytorch's speed" if _speedup(r) is not None else ""
        dev = f"  device p50 {r['device_latency_ms']['p50']:.3f} ms" if r["device_latency_ms"] else ""
        lines.append(f"{r['backend']:<9} batch {r['batch']:>3}  p50 {lat['p50']:.3f} ms  p99 {lat['p99']:.3f} ms  "
                     f"{r['throughput_ips']:.1f} img/s{ratio}  {r['achieved_gflops']:.1f} GFLOP/s "
                     f"({roofline_text(r)}){dev}")
    lines += [f"SKIPPED {s['backend']}: {s['reason']}" for s in b["skipped"]]
    return lines
