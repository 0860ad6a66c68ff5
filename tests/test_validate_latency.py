"""The timing routine and its statistics, on known samples and a fake clock (no wall-clock assertions)."""

from __future__ import annotations

import numpy as np
import pytest

from resnet_deploy.validate import ceiling, env, latency


def test_summarize_known_samples():
    # 1, 2, ..., 100 ms in shuffled order: the statistics do not depend on the order.
    rng = np.random.default_rng(0)
    samples = list(rng.permutation(np.arange(1, 101) / 1e3))
    s = latency.summarize(samples, batch=8)
    assert (s.min_ms, s.max_ms) == pytest.approx((1.0, 100.0))
    assert s.mean_ms == pytest.approx(50.5)
    # numpy's linear interpolation between order statistics: p = 1 + q * 99 / 100.
    assert s.p50_ms == pytest.approx(50.5)
    assert s.p90_ms == pytest.approx(90.1)
    assert s.p95_ms == pytest.approx(95.05)
    assert s.p99_ms == pytest.approx(99.01)
    assert s.iterations == 100
    assert s.total_s == pytest.approx(5.050)
    assert s.throughput_ips == pytest.approx(8 * 100 / 5.050)


def test_summarize_single_sample_and_bad_input():
    s = latency.summarize([0.004], batch=2)
    assert s.p99_ms == s.min_ms == s.max_ms == pytest.approx(4.0)
    assert s.throughput_ips == pytest.approx(500.0)
    with pytest.raises(ValueError, match="no timing samples"):
        latency.summarize([])
    with pytest.raises(ValueError, match=">= 0"):
        latency.summarize([0.1, -0.2])


class FakeClock:
    """A clock that advances only when the timed function runs: each call takes `step` seconds."""

    def __init__(self, step: float) -> None:
        self.now, self.step, self.calls = 0.0, step, 0

    def __call__(self) -> float:
        return self.now

    def work(self) -> None:
        self.calls += 1
        self.now += self.step


def test_measure_latency_warms_up_then_runs_by_time():
    step = 2.0**-7  # exact in binary, so the fake clock does not drift
    clock = FakeClock(step)
    out = latency.measure_latency(clock.work, warmup_s=10 * step, duration_s=50 * step, min_iters=3, clock=clock)
    # Warm-up: calls until 10 steps have passed; run: until 50 more have passed.
    assert len(out.host_s) == 50
    assert clock.calls == 60
    assert out.device_s is None
    assert np.allclose(out.host_s, step)


def test_measure_latency_min_and_max_iters():
    clock = FakeClock(1.0)
    out = latency.measure_latency(clock.work, warmup_s=0, duration_s=0.5, min_iters=7, clock=clock)
    assert len(out.host_s) == 7  # the floor wins over a short duration
    clock = FakeClock(0.001)
    out = latency.measure_latency(clock.work, warmup_s=0, duration_s=10, min_iters=1, max_iters=4, clock=clock)
    assert len(out.host_s) == 4


def test_measure_latency_records_device_time_apart():
    clock = FakeClock(2.0**-8)
    device = iter(np.linspace(0.001, 0.002, 1000))

    def fn() -> float:
        clock.work()
        return float(next(device))

    out = latency.measure_latency(fn, warmup_s=0, duration_s=10 * 2.0**-8, min_iters=1, clock=clock)
    assert out.device_s is not None and len(out.device_s) == len(out.host_s) == 10
    assert max(out.device_s) < min(out.host_s)  # device time excludes the host's share


def test_measure_interleaved_pools_round_robin_slices():
    step = 2.0**-6
    clock = FakeClock(step)
    order: list[str] = []

    def make(name: str):
        def fn() -> None:
            order.append(name)
            clock.work()
        return fn

    fns = {"a": make("a"), "b": make("b")}
    out = latency.measure_interleaved(fns, rounds=3, warmup_s=2 * step, duration_s=12 * step, min_iters=1,
                                      clock=clock)
    # Each round: one untimed call (plus warm-up in round 1), then duration/rounds = 4 timed calls per callable.
    assert [len(out[k].host_s) for k in "ab"] == [12, 12]
    runs = "".join(order)
    assert runs.startswith("aa" + "a" * 4 + "bb" + "b" * 4 + "a")  # a, then b, then a again: interleaved
    assert out["a"].device_s is None


def test_achieved_gflops_and_ceiling_fields():
    # ResNet-50: 4.089 G multiply-adds (torchvision metadata); 20 images/s is 163.6 GFLOP/s.
    assert ceiling.achieved_gflops(4_089_000_000, 20.0) == pytest.approx(163.56)
    c = ceiling.matmul_ceiling(64, duration_s=0.01)
    assert c["n"] == 64 and c["dtype"] == "float32" and c["gflops"] > 0
    assert c["gflops"] == pytest.approx(2 * 64**3 / (c["call_ms"] / 1e3) / 1e9)


def test_environment_records_versions():
    e = env.environment(threads=2)
    assert e["threads"] == 2 and e["cpu"]
    import onnxruntime
    import torch

    assert e["versions"]["torch"] == torch.__version__.split("+")[0] or e["versions"]["torch"] == torch.__version__
    assert e["versions"]["onnxruntime"] == onnxruntime.__version__
    assert e["versions"]["tensorrt"] is None or isinstance(e["versions"]["tensorrt"], str)


@pytest.mark.gpu
def test_cuda_events_give_device_time_apart_from_host_time():
    import torch

    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA GPU (torch.cuda.is_available() is False)")
    w = torch.randn(1024, 1024, device="cuda")
    x = torch.randn(1024, 1024)
    fn = latency.torch_cuda_timed(lambda t: t @ w, x)
    out = latency.measure_latency(fn, warmup_s=0.1, duration_s=0.2, min_iters=5)
    assert out.device_s is not None and len(out.device_s) == len(out.host_s)
    # Device time is the matmul alone; host time adds two 4 MiB copies and the launch.
    assert np.median(out.device_s) < np.median(out.host_s)
    c = ceiling.matmul_ceiling(2048, duration_s=0.2, device="cuda")
    assert c["device"] == "cuda" and c["gflops"] > 1000
