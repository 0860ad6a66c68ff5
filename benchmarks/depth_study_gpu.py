"""The depth study at the paper's full schedule (§4.2: 64k iterations, lr / 10 at 32k and 48k) on a CUDA GPU,
time-bounded and resumable: plain and residual nets trained from the cifar10_* recipes on Fashion-MNIST, all at once
on one GPU, stopped at a deadline, continued by the next call; then the figure and table of `resnet-deploy curves`.

    python benchmarks/depth_study_gpu.py --data fashion-mnist:DIR --out runs/depth-study-gpu [--time-limit-s 480]
        [--nets plain20,plain56,resnet20,resnet56] [--set run.amp=bf16 ...]

Each net is one `resnet-deploy train` process on the GPU: small nets in eager mode leave a large GPU mostly idle (their
speed is bound by kernel launches on the host), so side by side each should keep most of its speed (not measured). Every
2,000 iterations a run writes last.pt and evaluates on the 10,000 test images. At the deadline, or when this script
gets SIGTERM or Ctrl-C, the runs are stopped (SIGTERM) and lose at most the work since their last checkpoint; the
figure is drawn all the same. Started again with the same --out, a run with a last.pt resumes from it and a finished
run is left alone. What a resume needs of a run folder: config.yaml, metrics.jsonl and last.pt (the periodic
ckpt_*.pt files are deleted at the end unless --keep-checkpoints).

The recipes are the paper's (fp32, pad 4); `--set run.amp=bf16` or `--set run.compile=true` trade that for speed.
Prints each run's iteration, errors and img/s; exits 1 if a run failed (not merely stopped), 2 without a CUDA GPU or
without the data.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import torch

from resnet_deploy.data import locate, parse_spec
from resnet_deploy.runtime.errors import ResnetDeployError
from resnet_deploy.train.curves import read_run, table_rows, warnings, write_curves

RECIPES = Path(__file__).resolve().parent.parent / "recipes"
GPU_SETS = ("run.device=cuda", "run.checkpoint_every=2000")  # the recipes evaluate every 2,000 already


def _finished(run: Path) -> bool:
    try:
        return read_run(run).finished
    except ResnetDeployError:
        return False


def _start(net: str, run: Path, data: str, sets: list[str]) -> subprocess.Popen:
    partial = (run / "last.pt").is_file()
    cmd = [sys.executable, "-m", "resnet_deploy.cli", "train", "--recipe", str(RECIPES / f"cifar10_{net}.yaml"),
           "--data", data, "--out", str(run), "--no-progress", *(["--resume"] if partial else []),
           *(a for s in (*GPU_SETS, *sets) for a in ("--set", s))]
    print(f"== {net}: {'resume' if partial else 'start'} -> {run}", flush=True)
    log = open(run.parent / f"{net}.log", "a")
    return subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", default="fashion-mnist", help="data SPEC, e.g. fashion-mnist:/data/fashion-mnist")
    ap.add_argument("--out", type=Path, default=Path("runs/depth-study-gpu"), help="folder of the run folders")
    ap.add_argument("--nets", default="plain20,plain56,resnet20,resnet56", help="cifar10_<net>.yaml recipes")
    ap.add_argument("--time-limit-s", type=float, default=480.0, help="stop every run after this long")
    ap.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY=VALUE",
                    help="passed to every run (run.amp=bf16, run.compile=true)")
    ap.add_argument("--keep-checkpoints", action="store_true", help="keep the periodic ckpt_*.pt files")
    args = ap.parse_args()
    if not torch.cuda.is_available():
        print("no CUDA GPU here: this script is for a GPU machine (the CPU study is `make depth-study`)")
        return 2
    nets = [n.strip() for n in args.nets.split(",") if n.strip()]
    missing = [n for n in nets if not (RECIPES / f"cifar10_{n}.yaml").is_file()]
    try:
        locate(parse_spec(args.data))
        if missing:
            raise ResnetDeployError(f"no recipe cifar10_{missing[0]}.yaml in {RECIPES}")
    except ResnetDeployError as e:
        print(f"Error: {e}")
        return 2
    args.out.mkdir(parents=True, exist_ok=True)
    deadline = time.monotonic() + args.time_limit_s
    procs = {}
    for n in nets:
        if _finished(args.out / n):
            print(f"== {n}: finished, left alone")
        else:
            procs[n] = _start(n, args.out / n, args.data, args.sets)
    interrupted = []  # SIGTERM/SIGINT to this script (e.g. an outer `timeout`): stop the runs as at the deadline
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda signum, _: interrupted.append(signum))
    while procs and time.monotonic() < deadline and not interrupted and any(p.poll() is None for p in procs.values()):
        time.sleep(1)
    stopped = [n for n, p in procs.items() if p.poll() is None]
    for n in stopped:
        os.killpg(procs[n].pid, signal.SIGTERM)  # its own session: the process and any workers it started
    for p in procs.values():
        p.wait()
    failed = [n for n, p in procs.items() if n not in stopped and p.returncode != 0]
    if not args.keep_checkpoints:
        for n in nets:
            for f in (args.out / n).glob("ckpt_*.pt"):
                f.unlink()
    runs = [read_run(args.out / n) for n in nets if (args.out / n / "metrics.jsonl").is_file()]
    if runs:
        png, md = write_curves(runs, args.out / "depth_study_gpu.png", "Fashion-MNIST, plain vs residual nets, "
                               f"the paper's schedule on {torch.cuda.get_device_name()}")
        for row in table_rows(runs):
            print("  ".join(row))
        for line in warnings(runs):
            print(f"warning: {line}")
        print(f"figure: {png}, table: {md}")
    how = "on a signal" if interrupted else "at the deadline"
    print(f"stopped {how}: {', '.join(stopped) or 'none'}; failed: {', '.join(failed) or 'none'} "
          f"(logs: {args.out}/<net>.log)")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
