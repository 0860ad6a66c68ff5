"""Triton serving beside the in-process runtime: start-to-ready, throughput and latency per level, CPU per image.

One process, one run, side by side on the same machine, per precision: `Predictor.run` in process at batch b (the one
timing routine, `validate.latency`) and the same bundle served by tritonserver's Python backend (`resnet-deploy
serve`'s repository and server, in the server environment) loaded by `resnet-deploy loadtest`'s client at concurrency
b, single-image float32 requests over HTTP (or gRPC) on 127.0.0.1, for each b of --levels, in interleaved rounds. The
server runs the same runtime backend as the in-process Predictor. The client threads run on the same cores as the
server, as a sidecar or a co-located service would. Then CPU time per image at the highest level, the client's (from
`loadtest`'s own count) and the server's (tritonserver and its stubs) apart.

Without --bundle, a model with random weights is exported (speed does not depend on the weights' values): the demo's
ResNet-20 for Fashion-MNIST (cifar_resnet20, 1x28x28, 10 classes), or with --resnet50 a torchvision-layout ResNet-50
(3x224x224, 1000 classes), fp32 + int8, int8 calibrated on random tensors.

    .venv/bin/python benchmarks/serve_throughput.py [--bundle DIR | --resnet50] [--precision int8,fp32]
        [--levels 1,4,8] [--duration-s 10] [--rounds 3] [--grpc]
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
from resnet_deploy.serve.addresses import free_ports
from resnet_deploy.serve.loadtest import run_loadtest
from resnet_deploy.serve.repository import MARKER, write_repository
from resnet_deploy.serve.server import TritonServer
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


def export_resnet50(out: Path) -> Path:
    """Random torchvision-layout ResNet-50, fp32 + int8 (calibrated on random tensors), batches 1 to 8."""
    import torch

    from resnet_deploy import models
    from resnet_deploy.export import ExportOptions, export_bundle

    torch.manual_seed(0)
    weights = out.parent / "resnet50_random.pth"
    torch.save(models.build("resnet50").state_dict(), weights)
    calib = np.random.default_rng(0).standard_normal((16, 3, 224, 224)).astype(np.float32)
    return export_bundle(out, ExportOptions(precisions=("fp32", "int8"), batch=(1, 8, 8)), arch="resnet50",
                         weights=weights, calib_arrays=calib)


def side_by_side(predictor: Predictor, url: str, levels: list[int], duration_s: float,
                 rounds: int) -> tuple[dict, dict]:
    """In-process batch b and served concurrency b, for each b of `levels`, in `rounds` interleaved slices whose
    samples are pooled: load from other jobs on the machine falls on both alike."""
    local: dict[int, list[float]] = {b: [] for b in levels}
    served: dict[int, dict] = {b: {"samples": [], "wall": 0.0, "errors": 0} for b in levels}
    for r in range(rounds):
        for b in levels:
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


def cpu_per_image(predictor: Predictor, server: TritonServer, url: str, level: int,
                  duration_s: float) -> tuple[float, float, float]:
    """CPU seconds per image at batch / concurrency `level`: this process in process; the client (`loadtest`'s own
    count of this process) and the server (tritonserver and its Python stub) apart when served.

    Less disturbed by other jobs than wall-clock figures: on a machine where both saturate the same cores, the
    throughput ratio is the inverse ratio of these, so they bound what serving can reach here.
    """
    x = np.random.default_rng(level).standard_normal((level, *predictor.manifest.input_shape), dtype=np.float32)
    c0, n, end = time.process_time(), 0, time.perf_counter() + duration_s
    while time.perf_counter() < end:
        predictor.run(x)
        n += 1
    local = (time.process_time() - c0) / (level * n)
    s0 = group_cpu_s(server.process.pid)
    row = run_loadtest(url, "demo", concurrency=[level], duration_s=duration_s, warmup_s=0,
                       outputs=["logits"])["results"][0]
    return local, row["client_cpu_s"] / row["requests"], (group_cpu_s(server.process.pid) - s0) / row["requests"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bundle", type=Path, help="a bundle (default: export a random-weight model)")
    parser.add_argument("--resnet50", action="store_true", help="without --bundle: ResNet-50 instead of ResNet-20")
    parser.add_argument("--precision", default="auto", help=f"comma-separated, each one of {', '.join(precisions())}")
    parser.add_argument("--levels", default="1,4,8", help="batch sizes in process = concurrency levels served")
    parser.add_argument("--duration-s", type=float, default=10.0, help="timed seconds per measurement")
    parser.add_argument("--instances", type=int, default=1)
    parser.add_argument("--max-queue-delay-us", type=int, default=0)
    parser.add_argument("--threads", type=int, help="ONNX Runtime threads per served instance (default: per core)")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved slices per figure")
    parser.add_argument("--grpc", action="store_true", help="load the server over gRPC instead of HTTP")
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="serve-bench-"))
    try:
        bundle = args.bundle or (export_resnet50 if args.resnet50 else export_demo)(tmp / "bundle")
        for precision in args.precision.split(","):
            run(args, bundle, precision, tmp / f"repo-{precision}")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def run(args: argparse.Namespace, bundle: Path, precision: str, repo: Path) -> None:
    """Serve one precision, measure both sides, print the Markdown table."""
    levels = sorted({int(b) for b in args.levels.split(",")})
    t0 = time.perf_counter()
    repo = write_repository(bundle, repo, name="demo", precision=precision, instances=args.instances,
                            max_queue_delay_us=args.max_queue_delay_us, threads=args.threads,
                            max_batch=max(8, *levels))
    asked = json.loads((repo / MARKER).read_text())["backend"]
    http, grpc, metrics = free_ports(3)
    server = TritonServer(repo, http_port=http, grpc_port=grpc, metrics_port=metrics)
    server.start()
    ready_s = time.perf_counter() - t0
    url = f"grpc://{server.grpc_address}" if args.grpc else server.url
    try:
        # the server's model chooses the same way (same machine, same bundle): one runtime backend on both sides
        with Predictor.from_bundle(bundle, backend=asked) as predictor:
            print(f"\n{predictor.manifest.arch} --precision {precision}: {os.cpu_count()} CPUs, load average "
                  f"{os.getloadavg()[0]:.2f}; runtime backend {predictor.backend} ({predictor.why}); served: "
                  f"{args.instances} instance(s), {args.threads or 'default'} thread(s) each, queue delay "
                  f"{args.max_queue_delay_us} us, {url.split(':')[0]}; in process: default threads")
            local, served = side_by_side(predictor, url, levels, args.duration_s, args.rounds)
            cpu = cpu_per_image(predictor, server, url, levels[-1], args.duration_s / args.rounds)
    finally:
        server.stop()
    print(f"load average after: {os.getloadavg()[0]:.2f}; {args.rounds} interleaved rounds, "
          f"{args.duration_s:g} s per figure in all\n")
    print_table(local, served, cpu, ready_s, url.split(":")[0].upper())


def print_table(local: dict, served: dict, cpu: tuple[float, float, float], ready_s: float, protocol: str) -> None:
    """The Markdown table for RESULTS.md: each figure beside its target (throughput at the highest level >= 0.85x,
    p99 at concurrency 1 <= in-process p99 + 2 ms)."""
    levels = sorted(local)
    top = levels[-1]
    print(f"| figure | in process (`Predictor.run`) | served (tritonserver, {protocol}) | target | met |")
    print("| --- | ---: | ---: | --- | --- |")
    for b in levels:
        lat, thr, errors = served[b]
        ratio = thr / local[b].throughput_ips
        target = ">= 0.85x" if b == top else ""
        met = ("yes" if ratio >= 0.85 else "no") if b == top else ""
        print(f"| throughput: batch {b} in process, concurrency {b} served | {local[b].throughput_ips:.1f} img/s | "
              f"{thr:.1f} img/s ({ratio:.2f}x) | {target} | {met} |")
    for b in levels:
        lat = served[b][0]
        extra = lat.p99_ms - local[b].p99_ms
        target, met = ("<= +2 ms", "yes" if extra <= 2 else "no") if b == 1 else ("", "")
        print(f"| p50 / p99 latency, batch {b} / concurrency {b} | {local[b].p50_ms:.2f} / {local[b].p99_ms:.2f} ms | "
              f"{lat.p50_ms:.2f} / {lat.p99_ms:.2f} ms (p99 {extra:+.2f} ms) | {target} | {met} |")
    print(f"| start to ready (write repository, start tritonserver, load the model) | | {ready_s:.2f} s | <= 15 s | "
          f"{'yes' if ready_s <= 15 else 'no'} |")
    cpu_local, cpu_client, cpu_server = cpu
    cpu_served = cpu_client + cpu_server
    print(f"| CPU time per image, batch / concurrency {top} (in process: this process; served: client + server) | "
          f"{cpu_local * 1e6:.0f} us | {cpu_served * 1e6:.0f} us = client {cpu_client * 1e6:.0f} + server "
          f"{cpu_server * 1e6:.0f} ({cpu_local / cpu_served:.2f}x as many images per CPU second) | | |")
    cores = os.cpu_count() or 1
    print(f"| most images per second the CPU time allows ({cores} cores / CPU time per image; served: client and "
          f"server on these cores, or the server alone with its clients elsewhere) | {cores / cpu_local:.1f} img/s | "
          f"{cores / cpu_served:.1f} img/s ({cpu_local / cpu_served:.2f}x); server alone {cores / cpu_server:.1f} "
          f"img/s ({cpu_local / cpu_server:.2f}x) | | |")
    print(f"\nserved requests: {', '.join(f'{served[b][0].iterations} at concurrency {b}' for b in levels)}; "
          f"errors: {sum(served[b][2] for b in levels)}")


if __name__ == "__main__":
    main()
