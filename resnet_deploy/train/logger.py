"""Rank 0's view of a run: a rich progress bar (loss, lr, img/s), metrics.jsonl, and TensorBoard when installed.

metrics.jsonl holds one JSON object per line, appended as the run goes; every record has `kind` and `time_s` (seconds
since this process opened the file, so it starts again from 0 in a resumed process). The kinds:
    start   iteration (where this process starts), arch, parameters, iterations (planned), batch_size, amp, device,
            world_size; written by every process, after its `resume` record when there is one
    resume  iteration: the run continues from last.pt there; records of later iterations before it were lost work
    train   iteration, epoch, loss, train_error, lr, img_per_s: averages over the minibatches since the previous
            train record (augmented images, the weights as they were at each step), i.e. the running training error
    eval    iteration, epoch, top1, top5, eval_loss, eval_images: the evaluation split at that iteration
    note    message
`resnet_deploy.train.curves` reads it back.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from resnet_deploy.console import is_terminal
from resnet_deploy.runtime.errors import printable


class MetricsLogger:
    """Writes one JSON object per log interval and per evaluation to out_dir/metrics.jsonl."""

    def __init__(self, out_dir: Path, total: int, enabled: bool = True, progress: bool = True) -> None:
        self.enabled, self.total, self.out = enabled, total, out_dir
        self.tb = self.bar = self.task = None
        self.t0 = time.time()
        if not enabled:
            return
        out_dir.mkdir(parents=True, exist_ok=True)
        _drop_partial_line(out_dir / "metrics.jsonl")
        self.file = open(out_dir / "metrics.jsonl", "a")
        try:  # optional: torch's SummaryWriter needs the tensorboard package
            from torch.utils.tensorboard import SummaryWriter

            self.tb = SummaryWriter(str(out_dir / "tensorboard"))
        except ImportError:
            pass
        self.lines = progress and not is_terminal()  # off a terminal a bar shows nothing until the end: lines
        self.t_start, self.it_start = time.time(), 0
        if progress and not self.lines:
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

            self.bar = Progress(TextColumn("train"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                                TextColumn("{task.fields[info]}"))
            self.task = self.bar.add_task("train", total=total, info="")
            self.bar.start()

    def _write(self, rec: dict[str, Any]) -> None:
        rec["time_s"] = round(time.time() - self.t0, 3)
        self.file.write(json.dumps(rec) + "\n")
        self.file.flush()

    def resumed(self, iteration: int) -> None:
        self.it_start = iteration
        if self.enabled:
            self._write({"kind": "resume", "iteration": iteration})
            if self.bar:
                self.bar.update(self.task, completed=iteration)

    def start(self, iteration: int, facts: dict[str, Any]) -> None:
        """What this process trains from `iteration` on (see the module docstring for the keys)."""
        self.t_start, self.it_start = time.time(), iteration
        if self.enabled:
            self._write({"kind": "start", "iteration": iteration, **facts})

    def train(self, iteration: int, epoch: float, loss: float, error: float, lr: float, img_per_s: float) -> None:
        if not self.enabled:
            return
        self._write({"kind": "train", "iteration": iteration, "epoch": round(epoch, 4), "loss": loss,
                     "train_error": error, "lr": lr, "img_per_s": round(img_per_s, 1)})
        if self.tb:
            for k, v in (("loss", loss), ("error", error), ("lr", lr), ("img_per_s", img_per_s)):
                self.tb.add_scalar(f"train/{k}", v, iteration)
        info = f"loss {loss:.3f}  err {error:.1%}  lr {lr:.3g}  {img_per_s:.0f} img/s"
        if self.bar:
            self.bar.update(self.task, completed=iteration, info=info)
        elif self.lines:
            done, spent = iteration - self.it_start, time.time() - self.t_start
            left = spent / done * (self.total - iteration) if done > 0 else 0.0
            print(f"train {iteration}/{self.total}  {info}  about {left / 60:.1f} min left", flush=True)

    def eval(self, iteration: int, epoch: float, metrics: dict[str, Any], classes: int = 1000,
             show: bool = True) -> None:
        """Record an evaluation; print its line unless `show` is false (the run's last: its summary line follows).
        Top-5 is shown only with more than 5 classes (with 5 or fewer it is 100% by definition)."""
        if not self.enabled:
            return
        self._write({"kind": "eval", "iteration": iteration, "epoch": round(epoch, 4), **metrics})
        if self.tb:
            self.tb.add_scalar("eval/top1", metrics["top1"], iteration)
            self.tb.add_scalar("eval/top5", metrics["top5"], iteration)
        msg = f"iteration {iteration}: {accuracy_text(metrics['top1'], metrics['top5'], classes)}"
        if show:
            self.note(msg)
        else:
            self._write({"kind": "note", "message": msg})

    def precision(self, choice: dict[str, Any]) -> None:
        """Record the precision the run trains in (`train.precision.AmpChoice.to_dict()`), as it starts."""
        if self.enabled:
            self._write({"kind": "precision", **choice})

    def note(self, message: str) -> None:
        """Record a line and print it now: above the progress bar, or on stdout without one."""
        if not self.enabled:
            return
        self._write({"kind": "note", "message": message})
        if self.bar:
            # names in it are not markup; one line, however narrow the window (the terminal wraps it, rich does not)
            self.bar.console.print(printable(message), markup=False, highlight=False, soft_wrap=True)
        else:
            print(printable(message), flush=True)

    def close(self) -> None:
        if not self.enabled or self.file.closed:
            return
        if self.bar:
            self.bar.stop()
        if self.tb:
            self.tb.close()
        self.file.close()


def accuracy_text(top1: float, top5: float, classes: int) -> str:
    """`top-1 91.43%, top-5 99.80%`; top-5 left out with 5 classes or fewer, where it is 100% by definition."""
    return f"top-1 {top1:.2%}" + (f", top-5 {top5:.2%}" if classes > 5 else "")


def _drop_partial_line(path: Path) -> None:
    """Cut a last line without its newline (the process was killed mid-write), so that every line stays JSON."""
    try:
        with open(path, "rb+") as f:
            size = f.seek(0, 2)
            if size == 0 or (f.seek(size - 1), f.read(1))[1] == b"\n":
                return
            keep = size - 1
            while keep > 0:  # scan back in blocks for the last newline
                start = max(0, keep - 65536)
                f.seek(start)
                block = f.read(keep - start)
                nl = block.rfind(b"\n")
                if nl >= 0:
                    f.truncate(start + nl + 1)
                    return
                keep = start
            f.truncate(0)
    except FileNotFoundError:
        pass
