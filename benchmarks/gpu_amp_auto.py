"""`run.amp=auto` on a CUDA GPU: what it chooses, how fast the quick recipe trains with it, and the fp16 + GradScaler
path forced once (the choice on a pre-Ampere GPU), through the project's own loop. A minute or two on an H100/H200.

    PYTHONPATH=. .venv/bin/python benchmarks/gpu_amp_auto.py [--iters 300] [--data DIR] [--out DIR]

1. `auto` on this GPU: bf16 on compute capability >= 8.0 (fp16 + GradScaler below); prints the choice, its reason,
   img/s and the loss.
2. `auto` with the GPU reported as a Tesla T4 (compute capability 7.5; only the precision rule is told so, the GPU
   runs as it is): it must choose fp16 + GradScaler, train with a falling loss, and keep a GradScaler state in its
   checkpoint.
3. An explicit `run.amp=bf16` on that "T4": trains in bf16 as asked and warns once.
4. The run of 1 resumed on that "T4" for 100 more iterations: fp16 + GradScaler from the empty GradScaler state of a
   bf16 run.

Data: Fashion-MNIST when it is on disk (`--data DIR` with its four .gz files, or $RESNET_DEPLOY_DATA), else the
generated learnable set of `gpu_check.py`. Exits 1 when a check fails, 2 without a CUDA GPU.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

import torch

from resnet_deploy.checkpoint import load_checkpoint
from resnet_deploy.config import load_train_config
from resnet_deploy.runtime.errors import ResnetDeployError
from resnet_deploy.train import precision, train

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "benchmarks"))
from gpu_check import learnable_data  # noqa: E402

T4 = (False, "Tesla T4 (reported for this check), compute capability 7.5: bf16 is emulated below 8.0")


def run(out: Path, iters: int, amp: str, data: object, resume: bool = False) -> dict:
    cfg = load_train_config(ROOT / "recipes" / "fashion_mnist_quick.yaml", [
        f"schedule.iterations={iters}", "schedule.milestones=[]", "run.log_every=50", "run.eval_every=0",
        "run.checkpoint_every=0", f"run.amp={amp}", "run.device=cuda", "run.eval_limit=2000"])
    r = train(cfg, out, data=data, resume=resume, progress=False)
    losses = [json.loads(ln)["loss"] for ln in (out / "metrics.jsonl").read_text().splitlines() if '"train"' in ln]
    return {"precision": r["precision"], "img_per_s": r["img_per_s"], "top1": r.get("top1"), "losses": losses,
            "scaler": load_checkpoint(out / "last.pt")["scaler"]}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--iters", type=int, default=300)
    ap.add_argument("--data", type=Path, help="folder with Fashion-MNIST's .gz files (sets $RESNET_DEPLOY_DATA)")
    ap.add_argument("--out", type=Path, default=Path(os.environ.get("OUT") or tempfile.mkdtemp()))
    a = ap.parse_args()
    if not torch.cuda.is_available():
        print("no CUDA GPU here: this check runs on a GPU machine")
        return 2
    if a.data:
        os.environ["RESNET_DEPLOY_DATA"] = str(a.data)
    try:  # the real data set when it is on disk; the data spec lookup says where it looked
        from resnet_deploy.config import DataConfig
        from resnet_deploy.data.pipeline import prepare

        data = prepare(DataConfig(pad=2), default_size=28, batch_size=128, seed=0, device="cuda")
        what = "Fashion-MNIST"
    except ResnetDeployError as e:
        data, what = learnable_data(), f"a generated learnable set ({str(e)[:80]})"
    print(f"{torch.cuda.get_device_name(0)}, torch {torch.__version__}; data: {what}", flush=True)
    results, failures = {}, []
    results["auto"] = run(a.out / "auto", a.iters, "auto", data)
    real = precision.cuda_bf16_native
    precision.cuda_bf16_native = lambda device=None: T4  # only the rule sees a T4; the kernels are this GPU's
    try:
        results["auto as T4"] = run(a.out / "t4", a.iters, "auto", data)
        results["bf16 as T4"] = run(a.out / "t4-bf16", a.iters, "bf16", data)
        results["auto resumed as T4"] = run(a.out / "auto", a.iters + 100, "auto", data, resume=True)
    finally:
        precision.cuda_bf16_native = real
    print("\n| run | chose | reason | img/s | loss first -> last | warning |\n| --- | --- | --- | ---: | --- | --- |")
    for name, r in results.items():
        p, loss = r["precision"], r["losses"]
        print(f"| {name} | {p['label']} | {p['reason']} | {r['img_per_s']:,.0f} | {loss[0]:.3f} -> {loss[-1]:.3f} | "
              f"{p['warning'] or '-'} |")
    native = real(0)[0]
    expect = {"auto": ("bf16" if native else "fp16"), "auto as T4": "fp16", "bf16 as T4": "bf16",
              "auto resumed as T4": "fp16"}
    for name, amp in expect.items():
        r = results[name]
        if r["precision"]["amp"] != amp:
            failures.append(f"{name}: chose {r['precision']['amp']}, expected {amp}")
        if not r["losses"][-1] < r["losses"][0]:
            failures.append(f"{name}: the loss did not fall ({r['losses'][0]:.3f} -> {r['losses'][-1]:.3f})")
        if (amp == "fp16") != bool(r["scaler"]):
            failures.append(f"{name}: GradScaler state {'missing' if amp == 'fp16' else 'present'} in last.pt")
    if not results["bf16 as T4"]["precision"]["warning"]:
        failures.append("bf16 as T4: no warning")
    print("\n" + ("PASS" if not failures else "FAIL: " + "; ".join(failures)))
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
