"""The one timing routine of the project and its statistics (the roof they are set against: `ceiling.py`).

`measure_latency` times a callable the way `trtexec` does: warm up for a fixed *time* (so caches, allocators and
JIT/kernel selection settle whatever the model's speed), then run for a fixed time with a floor on the number of
iterations, recording every iteration. Host time (`time.perf_counter`, including any copies the callable does) is
always recorded; when the callable returns a number, that is taken as the *device* time of the call in seconds (CUDA
events, TensorRT's own timing) and reported apart, as trtexec reports "GPU Compute Time" beside "Latency".
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

STAT_KEYS = ("min", "mean", "p50", "p90", "p95", "p99", "max")  # the latency statistics reports store

PERCENTILES = (50, 90, 95, 99)


@dataclass(frozen=True)
class LatencySamples:
    """Per-iteration times of one measurement, in seconds; `device_s` only when the callable reported it."""

    host_s: list[float]
    device_s: list[float] | None = None


@dataclass(frozen=True)
class LatencyStats:
    """Statistics of one measurement; latencies in milliseconds, throughput in images per second."""

    batch: int
    iterations: int
    total_s: float
    min_ms: float
    mean_ms: float
    p50_ms: float
    p90_ms: float
    p95_ms: float
    p99_ms: float
    max_ms: float
    throughput_ips: float

    def stats_ms(self) -> dict[str, float]:
        """{min, mean, p50, p90, p95, p99, max} in milliseconds, as reports store them."""
        return {k: getattr(self, f"{k}_ms") for k in STAT_KEYS}


def summarize(samples_s: Sequence[float], batch: int = 1) -> LatencyStats:
    """Statistics of per-iteration times.

    Percentiles use numpy's linear interpolation between order statistics. Throughput is
    `batch * iterations / total time`, the total being the sum of the samples (time spent inside the callable).

    Args:
        samples_s: per-iteration times in seconds (at least one).
        batch: images per iteration.

    Raises:
        ValueError: no samples, or a negative one.
    """
    a = np.asarray(samples_s, dtype=np.float64)
    if a.size == 0:
        raise ValueError("no timing samples to summarize")
    if (a < 0).any():
        raise ValueError(f"timing samples must be >= 0, found {a.min()}")
    ms = a * 1e3
    p50, p90, p95, p99 = (float(v) for v in np.percentile(ms, PERCENTILES))
    total = float(a.sum())
    return LatencyStats(batch=batch, iterations=int(a.size), total_s=total, min_ms=float(ms.min()),
                        mean_ms=float(ms.mean()), p50_ms=p50, p90_ms=p90, p95_ms=p95, p99_ms=p99,
                        max_ms=float(ms.max()), throughput_ips=batch * a.size / total if total > 0 else float("inf"))


def measure_latency(fn: Callable[[], Any], *, warmup_s: float = 2.0, duration_s: float = 10.0, min_iters: int = 10,
                    max_iters: int | None = None, clock: Callable[[], float] = time.perf_counter) -> LatencySamples:
    """Time `fn()` trtexec-style: warm up for `warmup_s`, then run for `duration_s` (at least `min_iters` times).

    Args:
        fn: the work of one iteration, synchronous (it must wait for the device itself). If it returns a float or
            int, that is recorded as the device time of the call in seconds.
        warmup_s: seconds of untimed calls first (at least one call is made).
        duration_s: seconds of timed calls.
        min_iters: timed calls made even when `duration_s` has passed.
        max_iters: stop after this many timed calls (None: no cap).
        clock: seconds as a float; injectable for tests.

    Returns:
        The host time of every timed call, and the device times when `fn` reported them.
    """
    start = clock()
    fn()
    while clock() - start < warmup_s:
        fn()
    host: list[float] = []
    device: list[float] = []
    run_start = clock()
    while len(host) < min_iters or clock() - run_start < duration_s:
        if max_iters is not None and len(host) >= max_iters:
            break
        t0 = clock()
        out = fn()
        host.append(clock() - t0)
        if isinstance(out, (float, int)) and not isinstance(out, bool):
            device.append(float(out))
    return LatencySamples(host_s=host, device_s=device if len(device) == len(host) else None)


def measure_interleaved(fns: dict[str, Callable[[], Any]], *, rounds: int = 1, warmup_s: float = 2.0,
                        duration_s: float = 10.0, min_iters: int = 10,
                        clock: Callable[[], float] = time.perf_counter) -> dict[str, LatencySamples]:
    """`measure_latency` for several callables compared side by side, in `rounds` round-robin slices.

    With rounds > 1 each callable runs `duration_s / rounds` seconds per round, in turn, and its samples are pooled:
    a burst of load from another process then falls on every candidate alike instead of on whichever was running,
    which keeps the ratios honest on a shared machine. Warm-up happens in the first round only. rounds=1 is plain
    trtexec-style timing, one callable after the other.
    """
    rounds = max(1, int(rounds))
    host: dict[str, list[float]] = {k: [] for k in fns}
    device: dict[str, list[float] | None] = {k: [] for k in fns}
    for r in range(rounds):
        for name, fn in fns.items():
            s = measure_latency(fn, warmup_s=warmup_s if r == 0 else 0.0, duration_s=duration_s / rounds,
                                min_iters=max(1, -(-min_iters // rounds)), clock=clock)
            host[name] += s.host_s
            prev = device[name]
            device[name] = None if prev is None or s.device_s is None else prev + s.device_s
    return {k: LatencySamples(host[k], device[k] or None) for k in fns}


def torch_cuda_timed(forward: Callable[[Any], Any], x_host: Any, device: str = "cuda") -> Callable[[], float]:
    """A callable for `measure_latency` that runs a PyTorch forward on the GPU: host time includes both copies,
    the returned device time (CUDA events around the forward only) does not."""
    import torch  # lazy: the timing routine itself needs no torch

    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)

    def timed() -> float:
        x = x_host.to(device)
        start.record()
        y = forward(x)
        end.record()
        y.cpu()  # the copy back synchronises the stream
        end.synchronize()
        return start.elapsed_time(end) / 1e3  # elapsed_time is in milliseconds

    return timed
