"""Latency and throughput of every backend of a bundle, with the PyTorch eager model timed in the same run.

Every point is measured by the one timing routine (`latency.measure_latency`); speed-ups are ratios of numbers taken
side by side on the same machine, and the achieved FLOP rate is set beside the machine's fp32 ceiling measured in the
same run, per precision (a roofline ratio, `ceiling.py`). On the CPU, `record_fastest` stores which variant was
fastest within the accuracy gates for `auto` (`runtime/autotune.py`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from resnet_deploy.runtime import Predictor, autotune, limits, variants
from resnet_deploy.runtime.errors import ResnetDeployError
from resnet_deploy.runtime.manifest import reports_path
from resnet_deploy.system import torch_threads
from resnet_deploy.validate import latency
from resnet_deploy.validate.ceiling import achieved_gflops, matmul_ceiling, roof_for
from resnet_deploy.validate.env import environment
from resnet_deploy.validate.parity import open_bundle, select_backends
from resnet_deploy.validate.reference import architecture, reference_model
from resnet_deploy.validate.report import SCHEMA_VERSION, VALIDATE_JSON, now_utc, read_report

BENCH_SCHEMA = "resnet-deploy/bench"


@dataclass(frozen=True)
class BenchRow:
    """One backend at one batch size. Latencies in ms, throughput in images/s; ratios against PyTorch eager."""

    backend: str  # "pytorch" is the eager reference
    precision: str
    batch: int
    iterations: int
    total_s: float
    throughput_ips: float
    latency_ms: dict[str, float]  # min, mean, p50, p90, p95, p99, max
    device_latency_ms: dict[str, float] | None  # the same keys, from the backend's own device timing
    achieved_gflops: float
    roofline_ratio: float  # achieved / the ceiling of `roof_precision`; above 1 means that roof is too low
    latency_ratio: float | None = None  # p50 / pytorch's p50 at the same batch
    speedup: float | None = None  # its inverse
    roof_precision: str = "fp32"  # which of the measured ceilings the ratio is against


@dataclass(frozen=True)
class BenchReport:
    """The result of `bench_bundle` (`to_dict()`: bench.json, schema in `report.py`)."""

    bundle: str
    arch: str
    input_shape: list[int]
    macs_per_image: int
    settings: dict[str, Any]
    ceiling: dict[str, Any]
    results: list[BenchRow]
    skipped: list[dict[str, str]]
    notes: list[str]
    environment: dict[str, Any]
    created: str = field(default_factory=now_utc)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {"schema": BENCH_SCHEMA, "schema_version": SCHEMA_VERSION, **asdict(self)}  # rows included


def _eager_model(bundle: str | Path, manifest: Any, checkpoint: str | Path | None) -> tuple[Any, str | None]:
    """The PyTorch model to time; when its weights are not at hand, the architecture with random weights (the same
    arithmetic, so the same speed)."""
    model, info = reference_model(bundle, manifest, checkpoint)
    if model is not None:
        return model, None
    return architecture(manifest).eval(), "pytorch timed with random weights: " + info["note"].split(": ", 1)[-1]


def _torch_fn(model: Any, x: np.ndarray, device: str) -> Callable[[], Any]:
    import torch

    xt = torch.from_numpy(x)
    if device == "cpu":
        def run() -> None:
            with torch.inference_mode():
                model(xt)
        return run
    model = model.to(device)

    def forward(t: Any) -> Any:
        with torch.inference_mode():
            return model(t)
    return latency.torch_cuda_timed(forward, xt, device)


def _predictor_fn(predictor: Any, x: np.ndarray) -> Callable[[], Any]:
    # A backend that times its own device work (CUDA events around an engine) reports it after each run; then host
    # time (with copies) and device time are reported apart.
    def run() -> float | None:
        predictor.run(x)
        return predictor.device_time_s()
    return run


def _workloads(model: Any, predictors: dict[str, Any], batches: Sequence[int], shape: tuple[int, int, int],
               device: str) -> Iterator[tuple[int, dict[str, Callable[[], Any]]]]:
    """(batch, {backend: callable}) for every batch size, the eager model first."""
    rng = np.random.default_rng(0)
    for b in sorted(set(batches)):
        x = rng.standard_normal((b, *shape), dtype=np.float32)  # latency does not depend on the pixel values
        fns = {"pytorch": _torch_fn(model, x, device)} if model is not None else {}
        yield b, fns | {name: _predictor_fn(predictor, x) for name, predictor in predictors.items()}


def _row(backend: str, batch: int, samples: latency.LatencySamples, macs: int, ceiling: dict[str, Any]) -> BenchRow:
    s = latency.summarize(samples.host_s, batch)
    dev = latency.summarize(samples.device_s, batch) if samples.device_s else None
    gflops = achieved_gflops(macs, s.throughput_ips)
    precision = "fp32" if backend == "pytorch" else variants.get(backend).precision
    roof_precision, roof = roof_for(ceiling, precision)
    return BenchRow(backend, precision, batch, s.iterations, s.total_s, s.throughput_ips, s.stats_ms(),
                    dev.stats_ms() if dev else None, gflops, gflops / roof, roof_precision=roof_precision)


def _with_ratios(rows: list[BenchRow]) -> list[BenchRow]:
    base = {r.batch: r.latency_ms["p50"] for r in rows if r.backend == "pytorch"}
    return [replace(r, latency_ratio=r.latency_ms["p50"] / base[r.batch], speedup=base[r.batch] / r.latency_ms["p50"])
            if r.batch in base else r for r in rows]


def bench_bundle(bundle: str | Path, *, backends: list[str] | None = None, batches: Sequence[int] = (1, 8, 32),
                 warmup_s: float = 2.0, duration_s: float = 10.0, min_iters: int = 10, threads: int | None = None,
                 device: str = "cpu", checkpoint: str | Path | None = None, pytorch: bool = True,
                 ceiling_n: int = 2048, rounds: int = 1, progress: Callable[[str], None] | None = None,
                 trusted_keys: Sequence[str | Path] | None = None) -> BenchReport:
    """Time every backend of a bundle at each batch size, and the PyTorch eager model beside them.

    Args:
        bundle: the bundle directory (its files must match the manifest's checksums).
        backends: backend names (None: every one the bundle has; those that cannot run here are skipped).
        batches: batch sizes to time.
        warmup_s, duration_s, min_iters: per point, as `latency.measure_latency`.
        threads: intra-op threads for PyTorch, ONNX Runtime and the ceiling matmul (None: library defaults).
        device: "cpu" or "cuda".
        checkpoint: the source checkpoint/weights when not where the manifest says.
        pytorch: also time the eager model (the denominator of every ratio).
        ceiling_n: side of the matmul that measures the fp32 ceiling.
        rounds: split each point's run into this many round-robin slices across the backends
            (`latency.measure_interleaved`); more than 1 keeps ratios fair on a shared machine.
        progress: called with a line before the run (what will be timed, about how long) and after each batch size.
        trusted_keys: publishers' public keys (PEM files): the bundle must be signed by one of them.

    Returns:
        The report (`to_dict()`: bench.json, schema in `report.py`).

    Raises:
        ResnetDeployError: a changed bundle, unknown backend names, or a batch size out of 1..MAX_BATCH.
    """
    from resnet_deploy import models

    if not batches:
        raise ResnetDeployError("give at least one batch size")
    for b in batches:
        limits.check("batch", b, "batch sizes")
    manifest = open_bundle(bundle, trusted_keys)
    run, skipped = select_backends(bundle, backends, device)
    model, note = _eager_model(bundle, manifest, checkpoint)
    c, h, w = manifest.input_shape
    # count_macs takes a square side; a conv net's multiply-adds scale with H*W, so a non-square input is scaled.
    side = max(h, w)
    macs = models.count_macs(model, side, c) * h * w // side**2
    predictors = {}
    say = progress or (lambda line: None)
    names, sizes = ["pytorch"] * pytorch + run, sorted(set(batches))
    per_batch = len(names) * (warmup_s + max(duration_s, 0.0))
    say(f"bench: {len(names)} backends ({', '.join(names)}) x {len(sizes)} batch size(s) "
        f"({', '.join(map(str, sizes))}), {warmup_s:g} s warm-up + {duration_s:g} s each: about "
        f"{_minutes(per_batch * len(sizes) + 2)} (--duration-s, --warmup-s, --batch and --backends shorten it)")
    with torch_threads(threads):
        try:
            ceiling = matmul_ceiling(ceiling_n, duration_s=min(2.0, max(duration_s, 0.2)), threads=threads,
                                             device=device)
            for name in run:
                predictors[name] = Predictor.from_bundle(bundle, backend=name, device=device, threads=threads,
                                                         trusted_keys=trusted_keys)
            timing = {"rounds": rounds, "warmup_s": warmup_s, "duration_s": duration_s, "min_iters": min_iters}
            rows = []
            workloads = _workloads(model if pytorch else None, predictors, batches, (c, h, w), device)
            for i, (b, fns) in enumerate(workloads):
                rows += [_row(name, b, samples, macs, ceiling)
                         for name, samples in latency.measure_interleaved(fns, **timing).items()]
                left = per_batch * (len(sizes) - i - 1)
                say(f"bench: batch {b} timed ({i + 1} of {len(sizes)})"
                    + (f", about {_minutes(left)} left" if left else ""))
        finally:
            for predictor in predictors.values():
                predictor.close()
    notes = [note] if note else []
    notes.append("int8 and bf16 rows count the same multiply-adds as fp32 (GOP/s); their roofline ratio is against the "
                 "GEMM ceiling of their own precision where one was measured (fp32's otherwise); " + ceiling["method"])
    return BenchReport(str(bundle), manifest.arch, [c, h, w], macs,
                       {"backends": ["pytorch"] * pytorch + run, "batches": sorted(set(batches)), "warmup_s": warmup_s,
                        "duration_s": duration_s, "rounds": rounds, "threads": threads, "device": device},
                       ceiling, _with_ratios(rows), [{"backend": k, "reason": v} for k, v in skipped.items()], notes,
                       environment(threads))


def _minutes(seconds: float) -> str:
    return f"{seconds:.0f} s" if seconds < 90 else f"{seconds / 60:.1f} min"


def record_fastest(bundle: str | Path, bench: dict[str, Any]) -> tuple[Path, list[str]] | None:
    """Store this machine's measured order for `auto`: variants by p50 at the smallest batch, fastest first, leaving
    out those that failed `validate`'s gates (the bundle's reports/validate.json, when present).

    Args:
        bundle: the bundle directory.
        bench: a bench report dict (`BenchReport.to_dict()`) measured on this machine.

    Returns:
        (the file written, the order), or None when nothing was recorded (a GPU run, no backend row).
    """

    if bench["settings"]["device"] != "cpu":
        return None
    rows = [r for r in bench["results"] if r["backend"] != "pytorch"]
    if not rows:
        return None
    batch = min(r["batch"] for r in rows)
    p50 = {r["backend"]: r["latency_ms"]["p50"] for r in rows if r["batch"] == batch}
    validated = read_report(reports_path(bundle, VALIDATE_JSON)) or {}
    failed = {b["backend"]: "failed validate: " + "; ".join(b.get("failures") or [])
              for b in validated.get("backends", []) if b.get("status") == "FAIL"}
    excluded = {s["backend"]: s["reason"] for s in bench["skipped"]} | failed
    order = sorted((n for n in p50 if n not in failed), key=p50.get)
    path = autotune.record_order(bundle, order, device="cpu", batch=batch, threads=bench["settings"]["threads"],
                                 p50_ms=p50, excluded=excluded)
    return path, order
