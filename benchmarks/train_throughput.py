"""Training throughput: the project's loop (`resnet_deploy.train.train`, with its batch-wise augmentation, metrics and
checks) beside a minimal hand-written PyTorch loop on the same model and batch, fp32 and bf16 autocast, same run.

    .venv/bin/python benchmarks/train_throughput.py [--iters 40] [--r50-iters 6] [--skip-r50]
    .venv/bin/python benchmarks/train_throughput.py --levers [--iters 60] [--repeats 2]

Prints img/s per case and the ratios that matter: project / hand (goal >= 0.95 in fp32) and bf16 / fp32
(goal >= 1.6). Synthetic uint8 images, so no data set is needed; the first iterations (allocations, kernel
selection, compilation) are left out of every figure.

`--levers`: fp32 only, the quick recipe (recipes/fashion_mnist_quick.yaml: ResNet-20, batch 128, crop + flip) in the
project's loop with each CPU lever off and on (channels_last, torch.compile, threads) beside the minimal hand loop,
the cases taken in turn `--repeats` times so that a drifting machine shifts them all alike. On another CPU class:
`ATEN_CPU_CAPABILITY=avx2 ONEDNN_MAX_CPU_ISA=AVX2 TORCHINDUCTOR_CACHE_DIR=DIR ... --levers` (inductor's kernels for
a capped torch need a cache of their own, see train/loop.compile_choice).
"""

from __future__ import annotations

import argparse
import tempfile
import time

import numpy as np
import torch
import torch.nn.functional as F

from resnet_deploy import models
from resnet_deploy.config import TrainConfig, apply_overrides, load_train_config
from resnet_deploy.data.pipeline import InMemoryData
from resnet_deploy.data.stats import make_preprocess, mean_std
from resnet_deploy.train import train


def synthetic(n: int, c: int, size: int, batch: int) -> InMemoryData:
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (n, c, size, size), dtype=np.uint8)
    y = rng.integers(0, 10, n)
    mean, std = mean_std([x[:64]])
    return InMemoryData(x, y, [str(i) for i in range(10)], make_preprocess(mean, std, size), eval_images=x[:8],
                        eval_labels=y[:8], batch_size=batch)


def project_loop(arch: str, data: InMemoryData, iters: int, warmup: int, amp: str) -> float:
    cfg = apply_overrides(TrainConfig(), [f"model.arch={arch}", f"optim.batch_size={data.batch_size}",
                                          f"schedule.iterations={iters + warmup}", "schedule.milestones=[]",
                                          f"run.log_every={warmup}", "run.eval_every=0", "run.checkpoint_every=0",
                                          f"run.amp={amp}", "run.device=cpu"])
    with tempfile.TemporaryDirectory() as out:
        return train(cfg, out, data=data, progress=False)["img_per_s"]  # excludes the first log interval


def hand_loop(arch: str, data: InMemoryData, iters: int, warmup: int, amp: str) -> float:
    model = models.build(arch, num_classes=10, in_channels=data.in_channels)
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-4)
    b = data.batch_size
    xs = [data.normalize(data.images[i * b:(i + 1) * b]) for i in range(4)]
    ys = [data.labels[i * b:(i + 1) * b] for i in range(4)]
    t0 = 0.0
    for i in range(iters + warmup):
        if i == warmup:
            t0 = time.perf_counter()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=amp == "bf16"):
            loss = F.cross_entropy(model(xs[i % 4]), ys[i % 4])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    float(loss.detach())
    return iters * b / (time.perf_counter() - t0)


def bench(name: str, arch: str, data: InMemoryData, iters: int, warmup: int) -> dict[str, float]:
    r = {}
    for amp in ("none", "bf16"):
        r[f"hand {amp}"] = hand_loop(arch, data, iters, warmup, amp)
        r[f"project {amp}"] = project_loop(arch, data, iters, warmup, amp)
    print(f"\n{name}")
    for k, v in r.items():
        print(f"  {k:14s} {v:8.1f} img/s")
    p, h = (r["project none"], r["project bf16"]), (r["hand none"], r["hand bf16"])
    print(f"  project/hand  fp32 {p[0] / h[0]:.3f}   bf16 {p[1] / h[1]:.3f}")
    print(f"  bf16/fp32  project {p[1] / p[0]:.2f}   hand {h[1] / h[0]:.2f}")
    return r


QUICK = "recipes/fashion_mnist_quick.yaml"
# The project's loop with each lever: (label, --set overrides). "recipe" is what `make demo` runs in fp32 on a CPU
# with a C++ compiler (channels_last and run.compile=auto, which compiles there, torch's default threads).
LEVERS = (("project: NCHW, eager (no lever)", ["run.channels_last=false", "run.compile=false"]),
          ("project: channels_last, eager", ["run.channels_last=true", "run.compile=false"]),
          ("project: NCHW, compiled", ["run.channels_last=false", "run.compile=true"]),
          ("project: channels_last, compiled (the recipe)", ["run.channels_last=true", "run.compile=true"]),
          ("project: the recipe on 1 thread", ["run.channels_last=true", "run.compile=true", "run.threads=1"]))


def quick_loop(data: InMemoryData, iters: int, warmup: int, overrides: list[str]) -> float:
    """img/s of the quick recipe in fp32 in the project's loop, the first `warmup` iterations left out."""
    cfg = load_train_config(QUICK, [f"schedule.iterations={iters + warmup}", "schedule.milestones=[]",
                                    f"run.log_every={warmup}", "run.eval_every=0", "run.checkpoint_every=0",
                                    "run.amp=none", "run.device=cpu", *overrides])
    with tempfile.TemporaryDirectory() as out:
        return train(cfg, out, data=data, progress=False)["img_per_s"]


def levers(iters: int, repeats: int) -> None:
    """The quick recipe's loop with each lever, beside the hand loop, in turn; medians and ratios to the hand loop
    and to the lever-free project loop."""
    import os

    from resnet_deploy.runtime import machine
    from resnet_deploy.system import torch_cpu_capability

    data = synthetic(1024, 1, 28, 128)
    warmup = 10
    print(f"CPU {machine.cpu_model()}; usable native {machine.native_precisions()}; caps "
          f"{machine.caps_text(machine.isa_caps()) or 'none'}; torch kernels {torch_cpu_capability()}; "
          f"{torch.get_num_threads()} threads; load average {os.getloadavg()[0]:.2f}", flush=True)
    got: dict[str, list[float]] = {}
    for r in range(repeats):
        got.setdefault("hand: minimal loop (NCHW, eager)", []).append(
            hand_loop("cifar_resnet20", data, iters, warmup, "none"))
        for label, overrides in LEVERS:
            got.setdefault(label, []).append(quick_loop(data, iters, warmup, overrides))
        print(f"round {r + 1} of {repeats}: " + ", ".join(f"{k.split(': ')[1]} {v[-1]:.0f}" for k, v in got.items())
              + f"; load average {os.getloadavg()[0]:.2f}", flush=True)
    med = {k: float(np.median(v)) for k, v in got.items()}
    hand, base = med["hand: minimal loop (NCHW, eager)"], med[LEVERS[0][0]]
    print(f"\n| loop (fp32, ResNet-20, batch 128, 1x28x28) | img/s, median of {repeats} | each | x hand loop | "
          "x project without levers |\n| --- | ---: | --- | ---: | ---: |")
    for k, v in med.items():
        print(f"| {k} | {v:.0f} | {' / '.join(f'{x:.0f}' for x in got[k])} | {v / hand:.3f} | {v / base:.3f} |")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--iters", type=int, default=40, help="timed iterations, ResNet-20")
    ap.add_argument("--r50-iters", type=int, default=4, help="timed iterations, ResNet-50")
    ap.add_argument("--skip-r50", action="store_true")
    ap.add_argument("--levers", action="store_true", help="fp32 only: the quick recipe's CPU levers off and on")
    ap.add_argument("--repeats", type=int, default=2, help="--levers: rounds over the cases")
    a = ap.parse_args()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    if a.levers:
        levers(a.iters, a.repeats)
        return
    bench("CIFAR ResNet-20, batch 128, 1x28x28", "cifar_resnet20", synthetic(1024, 1, 28, 128), a.iters, 10)
    if not a.skip_r50:
        bench("ResNet-50, batch 32, 3x224x224", "resnet50", synthetic(96, 3, 224, 32), a.r50_iters, 2)


if __name__ == "__main__":
    main()
