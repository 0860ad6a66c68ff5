"""`make gpu-check`: the GPU paths no CPU test can reach, in one short run on a CUDA machine.

    .venv/bin/python benchmarks/gpu_check.py [--iters 300] [--out DIR]

1. Training on the GPU with AMP (fp16 + GradScaler, then bf16) and channels_last, through the project's loop:
   img/s, and a check that the loss falls.
2. DDP with the NCCL backend under torchrun (one process per visible GPU, a few dozen iterations).
3. ONNX export of the trained model, and parity of the CUDA model (TF32 off) with the ONNX model on ONNX Runtime's CPU
   provider, on fresh random inputs.
4. GPU inference latency of the trained ResNet-20 and of ResNet-50 at 224x224, fp32 and fp16 autocast, batch 1 and 32,
   with the project's one timing routine (device time from CUDA events, host time with the copies).
5. TensorRT, when `import tensorrt` works: fp32/fp16/int8 (and fp8 on TensorRT 11 with compute capability >= 8.9)
   engines of the trained model, parity with ONNX Runtime on the CPU, device time from CUDA events
   (gpu_check_trt.py). Without TensorRT it says plainly that only the torch CUDA path ran.

Data: Fashion-MNIST when it is on disk (`--data DIR` or $RESNET_DEPLOY_DATA: a folder with its four .gz files), else a
generated, learnable 10-class set (class templates plus noise), so the check needs nothing from outside. Exits 1 when a
check fails, 2 when there is no CUDA GPU.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

from resnet_deploy import models
from resnet_deploy.checkpoint import load_checkpoint, model_from_checkpoint
from resnet_deploy.config import TrainConfig, apply_overrides
from resnet_deploy.data.pipeline import InMemoryData
from resnet_deploy.data.stats import make_preprocess, mean_std
from resnet_deploy.export import ExportOptions, export_bundle
from resnet_deploy.runtime import Predictor
from resnet_deploy.train import train
from resnet_deploy.validate.latency import measure_latency, summarize, torch_cuda_timed

sys.path.insert(0, str(Path(__file__).resolve().parent))  # gpu_check_trt beside this file, however it is started
from gpu_check_trt import tensorrt_check  # noqa: E402


def learnable_data(n: int = 20000, size: int = 28, batch: int = 128) -> InMemoryData:
    """A 10-class grey data set a ResNet learns in a few hundred iterations: a random template per class + noise."""
    rng = np.random.default_rng(0)
    templates = rng.integers(0, 256, (10, 1, size, size)).astype(np.float32)
    y = rng.integers(0, 10, n)
    x = np.clip(templates[y] * 0.6 + rng.normal(0, 60, (n, 1, size, size)), 0, 255).astype(np.uint8)
    mean, std = mean_std([x[:2000]])
    return InMemoryData(x, y, [f"class{i}" for i in range(10)], make_preprocess(mean, std, size),
                        eval_images=x[:1000], eval_labels=y[:1000], batch_size=batch)


def train_check(out: Path, iters: int, amp: str, data: InMemoryData | None, device: str) -> dict:
    cfg = apply_overrides(TrainConfig(), [
        "model.arch=cifar_resnet20", "optim.batch_size=128", f"schedule.iterations={iters}",
        f"schedule.milestones=[{iters * 3 // 4}]", f"run.device={device}", f"run.amp={amp}", "run.channels_last=true",
        "run.log_every=25", "run.eval_every=0", "run.checkpoint_every=0"])
    result = train(cfg, out, data=data if data is not None else "fashion-mnist", progress=False)
    losses = [json.loads(line)["loss"] for line in (out / "metrics.jsonl").read_text().splitlines()
              if json.loads(line).get("kind") == "train"]
    first, last = float(np.mean(losses[:2])), float(np.mean(losses[-2:]))
    return {"amp": amp, "iterations": iters, "img_per_s": result["img_per_s"], "top1": result.get("top1"),
            "loss_first": first, "loss_last": last, "loss_falls": last < 0.7 * first}


def ddp_check(out: Path, data_spec: str | None) -> dict:
    if data_spec is None:
        return {"ran": False, "reason": "needs Fashion-MNIST on disk (torchrun workers load a data SPEC)"}
    n = torch.cuda.device_count()
    cmd = [sys.executable, "-m", "torch.distributed.run", f"--nproc_per_node={n}", "-m", "resnet_deploy.cli", "train",
           "--recipe", "recipes/fashion_mnist_quick.yaml", "--out", str(out), "--no-progress",
           "--set", "schedule.iterations=60", "--set", "schedule.milestones=[]", "--set", "run.device=cuda",
           "--set", "run.eval_every=0", "--set", "run.amp=bf16"]
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    return {"ran": True, "gpus": n, "ok": p.returncode == 0 and (out / "last.pt").exists(),
            "tail": (p.stdout + p.stderr)[-600:]}


def parity_check(checkpoint: Path, bundle: Path, device: str) -> dict:
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False  # TF32 would put ~1e-3 between the GPU and the fp32 ONNX model
    export_bundle(bundle, ExportOptions(("fp16",)), checkpoint=checkpoint, force=True)
    model = model_from_checkpoint(load_checkpoint(checkpoint)).to(device)
    ort = Predictor.from_bundle(bundle, backend="onnx", device="cpu")
    c, h, w = ort.manifest.input_shape
    x = torch.randn(16, c, h, w)
    with torch.no_grad():
        gpu = model(x.to(device)).float().cpu().numpy()
    cpu = ort.run(x.numpy())
    diff = float(np.abs(gpu - cpu).max())
    return {"max_abs_diff": diff, "argmax_agree": float((gpu.argmax(1) == cpu.argmax(1)).mean()), "ok": diff <= 1e-3}


def latency_check(name: str, model: torch.nn.Module, shape: tuple[int, int, int]) -> list[dict]:
    rows = []
    model = model.cuda().eval().to(memory_format=torch.channels_last)
    for precision in ("fp32", "fp16"):
        for batch in (1, 32):
            x = torch.randn(batch, *shape).pin_memory()

            def forward(t: torch.Tensor, p: str = precision) -> torch.Tensor:
                with torch.no_grad(), torch.autocast("cuda", dtype=torch.float16, enabled=p == "fp16"):
                    return model(t.contiguous(memory_format=torch.channels_last))

            s = measure_latency(torch_cuda_timed(forward, x), warmup_s=1.0, duration_s=2.0)
            host, dev = summarize(s.host_s, batch), summarize(s.device_s or s.host_s, batch)
            rows.append({"model": name, "precision": precision, "batch": batch, "host_p50_ms": host.p50_ms,
                         "device_p50_ms": dev.p50_ms, "img_per_s_device": batch / (dev.p50_ms / 1e3)})
    return rows


def dry_run(iters: int) -> int:
    """The CPU rehearsal: the same training and parity code, on the CPU, so the script is known to run."""
    work = Path(tempfile.mkdtemp())
    t = train_check(work / "run", iters, "bf16", learnable_data(4000), "cpu")
    p = parity_check(work / "run" / "last.pt", work / "bundle", "cpu")
    # Without TensorRT this is the plain "only the torch CUDA path ran" record; with it, engines need a GPU.
    trt = {"ran": False, "reason": "dry run on a CPU"} if _has_tensorrt() else tensorrt_check(
        work / "run" / "last.pt", work, None)
    print(json.dumps({"train": t, "parity": p, "tensorrt": trt}, indent=2))
    return 0 if t["loss_falls"] and p["ok"] else 1


def _has_tensorrt() -> bool:
    import importlib.util

    return importlib.util.find_spec("tensorrt") is not None


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--iters", type=int, default=300)
    ap.add_argument("--out", type=Path, default=Path(os.environ.get("OUT", tempfile.mkdtemp())))
    ap.add_argument("--data", type=Path, help="Folder with Fashion-MNIST's .gz files (sets $RESNET_DEPLOY_DATA).")
    ap.add_argument("--cpu-dry-run", action="store_true",
                    help="Exercise this script's own logic on a CPU (bf16 training and parity only; nothing GPU).")
    args = ap.parse_args()
    if args.data is not None:
        os.environ["RESNET_DEPLOY_DATA"] = str(args.data.resolve())
    if args.cpu_dry_run:
        return dry_run(args.iters)
    if not torch.cuda.is_available():
        print("gpu-check: no CUDA GPU here (torch.cuda.is_available() is False); run it on a CUDA machine")
        return 2
    from resnet_deploy.data import locate, parse_spec

    try:
        locate(parse_spec("fashion-mnist"))
        data, spec = None, "fashion-mnist"
    except Exception:  # not on disk: generated data keeps the check self-contained
        data, spec = learnable_data(), None
    print(f"gpu-check on {torch.cuda.get_device_name(0)}, torch {torch.__version__}, data {spec or 'generated'}, "
          + ("TensorRT found" if _has_tensorrt() else "no TensorRT: only the torch CUDA path will run"))
    work = Path(tempfile.mkdtemp())
    report = {"gpu": torch.cuda.get_device_name(0), "torch": torch.__version__, "data": spec or "generated"}
    report["train"] = [train_check(work / f"run_{amp}", args.iters, amp, data, "cuda") for amp in ("fp16", "bf16")]
    report["ddp"] = ddp_check(work / "ddp", spec)
    report["parity"] = parity_check(work / "run_fp16" / "last.pt", work / "bundle", "cuda")
    trained = model_from_checkpoint(load_checkpoint(work / "run_fp16" / "last.pt"))
    report["latency"] = latency_check("cifar_resnet20 (trained)", trained, tuple(trained.conv1.weight.shape[1:2]) +
                                      (28, 28)) + latency_check("resnet50", models.build("resnet50"), (3, 224, 224))
    report["tensorrt"] = tensorrt_check(work / "run_fp16" / "last.pt", work, spec)
    print(json.dumps(report, indent=2))
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "gpu_check.json").write_text(json.dumps(report, indent=2))
    ok = all(t["loss_falls"] for t in report["train"]) and report["parity"]["ok"] and report["ddp"].get("ok", True)
    ok = ok and report["tensorrt"].get("ok", True)
    trt = report["tensorrt"]
    print("gpu-check:", "PASS" if ok else "FAIL", "(torch CUDA path and TensorRT engines)" if trt["ran"] else
          f"- {trt['reason']}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
