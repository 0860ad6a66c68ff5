"""Triton serving beside the in-process runtime: start-to-ready, latency at concurrency 1, throughput at 16.

One process, one run, side by side on the same machine: `Predictor.run` in process at batch 1 and 16 (the one timing
routine, `validate.latency`), then the same bundle served by tritonserver's Python backend (`resnet-deploy serve`'s
repository and server) loaded by `resnet-deploy loadtest`'s client at concurrency 1 and 16, single-image float32
requests over HTTP on 127.0.0.1. The server runs the same runtime backend as the in-process Predictor. The client
threads run on the same cores as the server, as a sidecar or a co-located service would.

Without --bundle, a ResNet-20 for Fashion-MNIST (cifar_resnet20, 1x28x28, 10 classes) with random weights is exported
(fp32 + int8): speed does not depend on the weights' values.

    .venv/bin/python benchmarks/serve_throughput.py [--bundle DIR] [--duration-s 10] [--precision auto]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np

from resnet_deploy.runtime import Predictor
from resnet_deploy.runtime.preprocess import Preprocess
from resnet_deploy.serve import precisions
from resnet_deploy.serve.loadtest import run_loadtest
from resnet_deploy.serve.repository import MARKER, write_repository
from resnet_deploy.serve.server import TritonServer, free_ports
from resnet_deploy.validate.latency import measure_latency, summarize


def export_demo(out: Path) -> Path:
    """Random-weight ResNet-20 for 1x28x28 Fashion-MNIST images, fp32 + int8, through the project's export path."""
    import torch

    from resnet_deploy import models
    from resnet_deploy.checkpoint import save_model
    from resnet_deploy.export import ExportOptions, export_bundle

    pre = Preprocess(input_size=(28, 28), channels=1, mean=(0.2860,), std=(0.3530,))
    torch.manual_seed(0)
    model = models.build("cifar_resnet20", num_classes=10, in_channels=1)
    ckpt = save_model(out.parent / "demo.pt", model, "cifar_resnet20", [f"class {i}" for i in range(10)], pre,
                      shortcut="A")
    calib = np.random.default_rng(0).standard_normal((64, 1, 28, 28)).astype(np.float32)
    return export_bundle(out, ExportOptions(precisions=("fp32", "int8")), checkpoint=ckpt, calib_arrays=calib)


def side_by_side(predictor: Predictor, url: str, duration_s: float, rounds: int) -> tuple[dict, dict]:
    """In-process batch b and served concurrency b, for b in 1 and 16, in `rounds` interleaved slices whose samples
    are pooled: load from other jobs on the machine falls on both alike."""
    local: dict[int, list[float]] = {1: [], 16: []}
    served: dict[int, dict] = {b: {"samples": [], "wall": 0.0, "errors": 0} for b in (1, 16)}
    for r in range(rounds):
        for b in (1, 16):
            x = np.random.default_rng(b).standard_normal((b, *predictor.manifest.input_shape), dtype=np.float32)
            local[b] += measure_latency(lambda x=x: predictor.run(x), warmup_s=1.0 if r == 0 else 0.2,
                                        duration_s=duration_s / rounds).host_s
            # logits only, as Predictor.run returns (the top-k outputs are a few more small tensors per answer)
            level = run_loadtest(url, "demo", concurrency=[b], duration_s=duration_s / rounds, warmup_s=0.5,
                                 outputs=["logits"], keep_samples=True)["results"][0]
            served[b]["samples"] += level["samples_s"]
            served[b]["wall"] += level["wall_s"]
            served[b]["errors"] += level["errors"]
    mine = {b: summarize(v, b) for b, v in local.items()}
    theirs = {b: (summarize(v["samples"]), len(v["samples"]) / v["wall"], v["errors"]) for b, v in served.items()}
    return mine, theirs


def group_cpu_s(pgid: int) -> float:
    """CPU seconds (user + system) used so far by the live processes of a process group: the server and its stubs."""
    ticks = 0
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()  # after the command name: state, ppid, pgrp, ...
        except OSError:  # the process ended while we looked
            continue
        if int(fields[2]) == pgid:
            ticks += int(fields[11]) + int(fields[12])  # utime, stime
    return ticks / os.sysconf("SC_CLK_TCK")


def cpu_per_image(predictor: Predictor, server: TritonServer, duration_s: float) -> tuple[float, float, float]:
    """CPU seconds per image at batch / concurrency 16: this process in process; the client (this process) and the
    server (tritonserver and its Python stub) apart when served.

    Less disturbed by other jobs than wall-clock figures: on a machine where both saturate the same cores, the
    throughput ratio is the inverse ratio of these, so they bound what serving can reach here.
    """
    x = np.random.default_rng(16).standard_normal((16, *predictor.manifest.input_shape), dtype=np.float32)
    c0, n, end = time.process_time(), 0, time.perf_counter() + duration_s
    while time.perf_counter() < end:
        predictor.run(x)
        n += 1
    local = (time.process_time() - c0) / (16 * n)
    c0, s0 = time.process_time(), group_cpu_s(server.process.pid)
    level = run_loadtest(server.url, "demo", concurrency=[16], duration_s=duration_s, warmup_s=0,
                         outputs=["logits"])["results"][0]
    requests = level["requests"]
    return local, (time.process_time() - c0) / requests, (group_cpu_s(server.process.pid) - s0) / requests


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bundle", type=Path, help="a bundle (default: export the random-weight ResNet-20)")
    parser.add_argument("--precision", default="auto", choices=precisions())
    parser.add_argument("--duration-s", type=float, default=10.0, help="timed seconds per measurement")
    parser.add_argument("--instances", type=int, default=1)
    parser.add_argument("--max-queue-delay-us", type=int, default=0)
    parser.add_argument("--threads", type=int, help="ONNX Runtime threads per served instance (default: per core)")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved slices per figure")
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="serve-bench-"))
    try:
        run(args, tmp)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def run(args: argparse.Namespace, tmp: Path) -> None:
    """Export (unless --bundle), serve, measure both sides, print the Markdown table."""
    bundle = args.bundle or export_demo(tmp / "bundle")
    t0 = time.perf_counter()
    repo = write_repository(bundle, tmp / "repo", name="demo", precision=args.precision, instances=args.instances,
                            max_queue_delay_us=args.max_queue_delay_us, threads=args.threads)
    asked = json.loads((repo / MARKER).read_text())["backend"]
    http, grpc, metrics = free_ports(3)
    server = TritonServer(repo, http_port=http, grpc_port=grpc, metrics_port=metrics)
    server.start()
    ready_s = time.perf_counter() - t0
    try:
        # the server's model chooses the same way (same machine, same bundle): one runtime backend on both sides
        with Predictor.from_bundle(bundle, backend=asked) as predictor:
            print(f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f}; runtime backend "
                  f"{predictor.backend} ({predictor.why}); served: {args.instances} instance(s), "
                  f"{args.threads or 'default'} thread(s) each, queue delay {args.max_queue_delay_us} us; in process: "
                  "default threads")
            local, served = side_by_side(predictor, server.url, args.duration_s, args.rounds)
            cpu = cpu_per_image(predictor, server, args.duration_s / args.rounds)
    finally:
        server.stop()
    print(f"load average after: {os.getloadavg()[0]:.2f}; {args.rounds} interleaved rounds, "
          f"{args.duration_s:g} s per figure in all\n")
    print_table(local, served, cpu, ready_s)


def print_table(local: dict, served: dict, cpu: tuple[float, float, float], ready_s: float) -> None:
    """The Markdown table for RESULTS.md: each figure beside its target."""
    cpu_local, cpu_client, cpu_server = cpu
    cpu_served = cpu_client + cpu_server
    print("| figure | in process (`Predictor.run`) | served (tritonserver, HTTP) | target | met |")
    print("| --- | ---: | ---: | --- | --- |")
    thr_local, (lat16, thr_served, errors16) = local[16].throughput_ips, served[16]
    ratio = thr_served / thr_local
    print(f"| throughput: batch 16 in process, concurrency 16 served | {thr_local:.0f} img/s | {thr_served:.0f} img/s "
          f"({ratio:.2f}x) | >= 0.8x | {'yes' if ratio >= 0.8 else 'no'} |")
    lat1, thr1, errors1 = served[1]
    extra = lat1.p99_ms - local[1].p99_ms
    print(f"| p99 latency: batch 1 in process, concurrency 1 served | {local[1].p99_ms:.3f} ms | {lat1.p99_ms:.3f} ms "
          f"({extra:+.3f} ms) | <= +2 ms | {'yes' if extra <= 2 else 'no'} |")
    print(f"| p50 latency, batch 1 / concurrency 1 | {local[1].p50_ms:.3f} ms | {lat1.p50_ms:.3f} ms | | |")
    print(f"| p50 / p99 latency, batch 16 / concurrency 16 | {local[16].p50_ms:.2f} / {local[16].p99_ms:.2f} ms | "
          f"{lat16.p50_ms:.2f} / {lat16.p99_ms:.2f} ms | | |")
    print(f"| start to ready (write repository, start tritonserver, load the model) | | {ready_s:.2f} s | <= 15 s | "
          f"{'yes' if ready_s <= 15 else 'no'} |")
    cpu_ratio = cpu_local / cpu_served
    print(f"| CPU time per image, batch / concurrency 16 (in process: this process; served: client + server) | "
          f"{cpu_local * 1e6:.0f} us | {cpu_served * 1e6:.0f} us = client {cpu_client * 1e6:.0f} + server "
          f"{cpu_server * 1e6:.0f} ({cpu_ratio:.2f}x as many images per CPU second) | | |")
    cores = os.cpu_count() or 1
    print(f"| most images per second the CPU time allows ({cores} cores / CPU time per image; served: client and "
          f"server on these cores, or the server alone with its clients elsewhere) | {cores / cpu_local:.0f} img/s | "
          f"{cores / cpu_served:.0f} img/s ({cpu_local / cpu_served:.2f}x); server alone {cores / cpu_server:.0f} "
          f"img/s ({cpu_local / cpu_server:.2f}x) | | |")
    print(f"\nserved requests: {lat1.iterations} at concurrency 1, {lat16.iterations} at 16; "
          f"errors: {errors1 + errors16}")


if __name__ == "__main__":
    main()
