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
import os
import socket
import tempfile
import time
from pathlib import Path

import numpy as np

from resnet_deploy.runtime import Predictor, read_manifest
from resnet_deploy.runtime.predictor import choose_backend
from resnet_deploy.runtime.preprocess import Preprocess
from resnet_deploy.serve.loadtest import loadtest_summary, run_loadtest
from resnet_deploy.serve.repository import PYTHON_BACKENDS, write_repository
from resnet_deploy.serve.server import TritonServer
from resnet_deploy.validate.latency import measure_latency, summarize


def export_demo(out: Path) -> Path:
    """Random-weight ResNet-20 for 1x28x28 Fashion-MNIST images, fp32 + int8, through the project's export path."""
    import torch

    from resnet_deploy import models
    from resnet_deploy.checkpoint import save_checkpoint
    from resnet_deploy.export import export_bundle

    pre = Preprocess(input_size=(28, 28), channels=1, mean=(0.2860,), std=(0.3530,))
    torch.manual_seed(0)
    model = models.build("cifar_resnet20", num_classes=10, in_channels=1)
    ckpt = save_checkpoint({"arch": "cifar_resnet20", "model_options": {"shortcut": "A"}, "num_classes": 10,
                            "in_channels": 1, "model": model.state_dict(), "classes": [f"class {i}" for i in range(10)],
                            "preprocess": pre.to_dict(), "config": {}, "iteration": 0}, out.parent / "demo.pt")
    calib = np.random.default_rng(0).standard_normal((64, 1, 28, 28)).astype(np.float32)
    return export_bundle(out, checkpoint=ckpt, int8=True, calib_arrays=calib)


def in_process(predictor: Predictor, batch: int, duration_s: float) -> dict:
    x = np.random.default_rng(batch).standard_normal((batch, *predictor.manifest.input_shape), dtype=np.float32)
    s = summarize(measure_latency(lambda: predictor.run(x), warmup_s=1.0, duration_s=duration_s).host_s, batch)
    return {"p50_ms": s.p50_ms, "p99_ms": s.p99_ms, "throughput_ips": s.throughput_ips}


def free_ports(n: int) -> list[int]:
    socks = [socket.socket() for _ in range(n)]
    for s in socks:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bundle", type=Path, help="a bundle (default: export the random-weight ResNet-20)")
    parser.add_argument("--precision", default="auto", choices=sorted(PYTHON_BACKENDS))
    parser.add_argument("--duration-s", type=float, default=10.0, help="timed seconds per measurement")
    parser.add_argument("--instances", type=int, default=1)
    parser.add_argument("--max-queue-delay-us", type=int, default=0)
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="serve-bench-"))
    bundle = args.bundle or export_demo(tmp / "bundle")
    backend, _, why = choose_backend(bundle, read_manifest(bundle), PYTHON_BACKENDS[args.precision])
    print(f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f}; runtime backend {backend} ({why})")

    t0 = time.perf_counter()
    repo = write_repository(bundle, tmp / "repo", name="demo", precision=args.precision, instances=args.instances,
                            max_queue_delay_us=args.max_queue_delay_us)
    http, grpc, metrics = free_ports(3)
    server = TritonServer(repo, http_port=http, grpc_port=grpc, metrics_port=metrics)
    server.start()
    ready_s = time.perf_counter() - t0
    try:
        with Predictor.from_bundle(bundle, backend=backend) as predictor:
            local = {b: in_process(predictor, b, args.duration_s) for b in (1, 16)}
        # logits only, as Predictor.run returns (the top-k outputs are a few more small tensors per answer)
        load = run_loadtest(server.url, "demo", concurrency=[1, 16], duration_s=args.duration_s, warmup_s=1.0,
                            outputs=["logits"])
    finally:
        server.stop()
    served = {r["concurrency"]: r for r in load["results"]}
    print("\n".join(loadtest_summary(load)))
    print(f"\nload average after: {os.getloadavg()[0]:.2f}\n")
    print("| figure | in process (`Predictor.run`) | served (tritonserver, HTTP) | target | met |")
    print("| --- | ---: | ---: | --- | --- |")
    ratio = served[16]["throughput_ips"] / local[16]["throughput_ips"]
    print(f"| throughput, batch 16 in process / concurrency 16 served | {local[16]['throughput_ips']:.0f} img/s | "
          f"{served[16]['throughput_ips']:.0f} img/s ({ratio:.2f}x) | >= 0.8x | {'yes' if ratio >= 0.8 else 'no'} |")
    extra = served[1]["latency_ms"]["p99"] - local[1]["p99_ms"]
    print(f"| p99 latency, batch 1 in process / concurrency 1 served | {local[1]['p99_ms']:.3f} ms | "
          f"{served[1]['latency_ms']['p99']:.3f} ms (+{extra:.3f} ms) | <= +2 ms | {'yes' if extra <= 2 else 'no'} |")
    print(f"| p50 latency, batch 1 / concurrency 1 | {local[1]['p50_ms']:.3f} ms | "
          f"{served[1]['latency_ms']['p50']:.3f} ms | | |")
    print(f"| start to ready (write repository, start tritonserver, load the model) | | {ready_s:.2f} s | <= 15 s | "
          f"{'yes' if ready_s <= 15 else 'no'} |")


if __name__ == "__main__":
    main()
