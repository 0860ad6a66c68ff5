"""The iteration-based training loop (§3.4, §4.2): SGD, the paper's schedules, AMP, channels_last, torch.compile,
DDP, periodic/last/best checkpoints that hold everything --resume needs, metrics.jsonl, and a rich progress bar.
Fine-tuning (first weights, a new head, frozen layers, a backbone learning rate) is set up by `train.finetune`.
"""

from __future__ import annotations

import dataclasses
import math
import os
import sys
import time
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from resnet_deploy import models
from resnet_deploy.checkpoint import load_checkpoint, remove_stale_temps, save_checkpoint
from resnet_deploy.config import TrainConfig, dump_yaml, to_dict
from resnet_deploy.data.pipeline import FolderData, InMemoryData, prepare
from resnet_deploy.runtime.errors import ResnetDeployError, printable
from resnet_deploy.system import torch_cpp_compiler, torch_threads
from resnet_deploy.train import distributed, finetune
from resnet_deploy.train.distributed import DistEnv
from resnet_deploy.train.logger import MetricsLogger, accuracy_text
from resnet_deploy.train.precision import choose_amp
from resnet_deploy.train.schedule import LRSchedule

# Config sections a resumed run may change: its length and engineering knobs, not the model, data or optimiser.
RESUMABLE_CHANGES = ("schedule.iterations", "run.")


class TrainingDiverged(ResnetDeployError):
    """The loss became NaN or infinite; the run stopped and the last good checkpoint was kept."""


class Trainer:
    """One training run in `out_dir`; use `train()` for the whole thing."""

    def __init__(self, cfg: TrainConfig, out_dir: Path, env: DistEnv, data: InMemoryData | FolderData | None,
                 progress: bool, resume: bool = False) -> None:
        self.cfg, self.out, self.env = cfg, out_dir, env
        r = cfg.run
        torch.manual_seed(r.seed)
        if r.deterministic:
            torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.benchmark = not r.deterministic
        self.precision = choose_amp(r.amp, env.device)
        if cfg.optim.batch_size % env.world:
            raise ResnetDeployError(f"optim.batch_size {cfg.optim.batch_size} (global) is not divisible by the "
                                    f"{env.world} processes")
        self.data = data or prepare(cfg.data, default_size=models.natural_input_size(cfg.model.arch),
                                    batch_size=cfg.optim.batch_size // env.world, seed=r.seed, device=env.device,
                                    rank=env.rank, world=env.world)
        self._build_model(self.data.classes, self.data.in_channels, load_weights=not resume)
        self.amp = self.precision.dtype
        self.schedule = LRSchedule(cfg.schedule, cfg.optim.lr)
        self.scaler = torch.amp.GradScaler(env.device.type, enabled=self.precision.grad_scaler)
        self.iteration, self.best_top1, self.last_eval = 0, -1.0, {}
        self.log = MetricsLogger(out_dir, cfg.schedule.iterations, enabled=env.main, progress=progress)
        self.intervals: list[tuple[int, float]] = []  # (images, seconds) of each log interval, for img/s
        self.notes = self._setup_notes()
        self.log.precision(self.precision.to_dict())
        shown = self.compiled or r.compile == "auto"
        compiled = [f"torch.compile: {'on' if self.compiled else 'off'} ({self.compile_why})"] * shown
        for line in [self.precision.summary(), *self.precision.warnings(), *compiled, *self.notes]:
            self.log.note(line)
        if self.weights_report is not None and env.main:
            self.weights_report.save(out_dir / "weights.json")

    def _build_model(self, classes: list[str], in_channels: int, load_weights: bool) -> None:
        m, dev = self.cfg.model, self.env.device
        fam = models.family(m.arch)
        self.model_options = {"shortcut": m.shortcut or models.DEFAULTS[fam]["shortcut"],
                              "stride_in_1x1": m.stride_in_1x1, "zero_init_residual": m.zero_init_residual}
        self.model = models.build(m.arch, num_classes=len(classes), in_channels=in_channels, **self.model_options)
        self.weights_report = None  # a resumed run takes every weight from its last.pt instead
        if m.weights is not None and load_weights:
            self.weights_report = finetune.load_weights(self.model, m.weights, m.arch, classes, m.weights_strict)
        self.frozen = finetune.frozen_modules(self.model, m.freeze, m.arch)
        self.frozen_params = finetune.freeze(self.model, self.frozen)
        self.channels_last = self.cfg.run.channels_last
        self.model.to(dev, memory_format=torch.channels_last if self.channels_last else torch.preserve_format)
        o = self.cfg.optim
        self.optimizer = torch.optim.SGD(finetune.param_groups(self.model, o.backbone_lr_mult), lr=o.lr,
                                         momentum=o.momentum, weight_decay=o.weight_decay, nesterov=o.nesterov)
        self.net = self.model
        if self.env.world > 1:
            self.net = torch.nn.parallel.DistributedDataParallel(
                self.model, device_ids=[dev.index] if dev.type == "cuda" else None)
        self.compiled, self.compile_why = compile_choice(self.cfg.run.compile, dev, self.env.world)
        if self.compiled:
            self.net = torch.compile(self.net)

    def _setup_notes(self) -> list[str]:
        """What the run starts from beyond the recipe: weights loaded, layers frozen, images skipped."""
        notes = [self.weights_report.summary()] if self.weights_report is not None else []
        if self.frozen:
            notes.append(f"frozen: {', '.join(self.frozen)} ({self.frozen_params:,} parameters; BN statistics fixed)")
        for split, paths in getattr(self.data, "skipped", {}).items():
            if paths:
                notes.append(f"data: skipped {len(paths)} unreadable {split} image(s) (data.unreadable=skip): "
                             f"{', '.join(paths[:3])}{' ...' if len(paths) > 3 else ''}")
        for split, entries in getattr(self.data, "ignored", {}).items():
            if entries:
                shown = ", ".join(f"{p} ({why})" for p, why in entries[:3])
                notes.append(f"data: left out {len(entries)} entr{'y' if len(entries) == 1 else 'ies'} of the {split} "
                             f"folders (hidden, links, not regular files): {shown}{' ...' if len(entries) > 3 else ''}")
        # names from the folders: printed escaped (a class or file name may hold control characters)
        return [printable(n) for n in notes]

    # ------------------------------------------------------------------------------------------------ checkpoints
    def _checkpoint_dict(self) -> dict[str, Any]:
        rng = {"torch": torch.get_rng_state(),
               "cuda": torch.cuda.get_rng_state_all() if self.env.device.type == "cuda" else []}
        if isinstance(self.data, FolderData):
            rng["data"] = self.data.generator.get_state()
        return {"arch": self.cfg.model.arch, "model_options": self.model_options,
                "num_classes": len(self.data.classes), "in_channels": self.data.in_channels,
                "model": self.model.state_dict(), "classes": list(self.data.classes),
                "preprocess": self.data.preprocess.to_dict(), "config": to_dict(self.cfg),
                "iteration": self.iteration, "optimizer": self.optimizer.state_dict(),
                "scheduler": self.schedule.state_dict(), "scaler": self.scaler.state_dict(), "rng": rng,
                "precision": self.precision.to_dict(),
                "metrics": {"best_top1": self.best_top1, **self.last_eval}}

    def save(self, *names: str) -> None:
        """Write the checkpoint under each name (rank 0 only), each atomically."""
        if self.env.main:
            ckpt = self._checkpoint_dict()
            for n in names:
                save_checkpoint(ckpt, self.out / n)
        distributed.barrier(self.env)

    def resume(self) -> None:
        """Restore everything from out_dir/last.pt."""
        path = self.out / "last.pt"
        if not path.is_file():
            raise ResnetDeployError(f"nothing to resume in {self.out}: no last.pt; run without --resume")
        ckpt = load_checkpoint(path)
        _check_same_recipe(ckpt.get("config", {}), to_dict(self.cfg), path)
        models.load_torchvision(self.model, ckpt["model"])
        self.optimizer.load_state_dict(ckpt["optimizer"])
        self.schedule.load_state_dict(ckpt["scheduler"])
        if ckpt["scaler"]:  # empty when the run began without a GradScaler (run.amp=auto on another device)
            self.scaler.load_state_dict(ckpt["scaler"])
        torch.set_rng_state(ckpt["rng"]["torch"])
        if ckpt["rng"]["cuda"] and self.env.device.type == "cuda":
            torch.cuda.set_rng_state_all(ckpt["rng"]["cuda"])
        if "data" in ckpt["rng"] and isinstance(self.data, FolderData):
            self.data.generator.set_state(ckpt["rng"]["data"])
        self.iteration = int(ckpt["iteration"])
        self.best_top1 = float(ckpt["metrics"].get("best_top1", -1.0))
        self.log.resumed(self.iteration)

    # ------------------------------------------------------------------------------------------------------- loop
    def _step(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with torch.autocast(self.env.device.type, dtype=self.amp or torch.float32, enabled=self.amp is not None):
            out = self.net(x)  # (N, K)
            loss = F.cross_entropy(out, y)
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        self.scaler.step(self.optimizer)
        self.scaler.update()
        return loss.detach(), (out.argmax(1) == y).sum()

    def run(self) -> dict[str, Any]:
        """Train from self.iteration to schedule.iterations; returns the final metrics and checkpoint paths."""
        try:
            self.log.start(self.iteration, {
                "arch": self.cfg.model.arch, "parameters": models.count_parameters(self.model),
                "iterations": self.cfg.schedule.iterations, "batch_size": self.cfg.optim.batch_size,
                "amp": self.cfg.run.amp, "device": str(self.env.device), "world_size": self.env.world})
            return self._loop()
        finally:
            self.log.close()  # also on a NaN stop or Ctrl-C: the progress bar must give the terminal back

    def _loop(self) -> dict[str, Any]:
        r, total = self.cfg.run, self.cfg.schedule.iterations
        batches = self.data.batches(self.iteration)
        stats = torch.zeros(2, device=self.env.device)  # loss sum, correct since the last log (kept on the device)
        lr, t0, start_it, wall0 = None, time.perf_counter(), self.iteration, time.perf_counter()
        finetune.train_mode(self.model, self.frozen)
        while self.iteration < total:
            it = self.iteration
            if (new := self.schedule.lr(it)) != lr:
                lr = new
                for g in self.optimizer.param_groups:
                    g["lr"] = lr * g.get("lr_mult", 1.0)
            x, y = next(batches)
            loss, correct = self._step(x, y)
            stats[0] += loss * len(y)
            stats[1] += correct
            self.iteration = it = it + 1
            do_eval = it == total or (r.eval_every and it % r.eval_every == 0)
            do_ckpt = it == total or (r.checkpoint_every and it % r.checkpoint_every == 0)
            if it % r.log_every == 0 or do_eval or do_ckpt:
                self.intervals.append(((it - start_it) * self.cfg.optim.batch_size, time.perf_counter() - t0))
                self._log(stats, lr, (it - start_it) * len(y))
                stats.zero_()
                if do_eval:
                    self._evaluate()
                if do_ckpt:
                    names = ["last.pt"] + ([f"ckpt_{it:07d}.pt"] if r.checkpoint_every and it % r.checkpoint_every
                                           == 0 else [])
                    self.save(*names)
                t0, start_it = time.perf_counter(), it
        return self._result(time.perf_counter() - wall0)

    def _log(self, stats: torch.Tensor, lr: float, images: int) -> None:
        n = torch.tensor([float(images)], device=stats.device)
        s = distributed.all_reduce_sum(torch.cat([stats.float(), n]), self.env).tolist()
        loss, err = s[0] / max(s[2], 1), 1 - s[1] / max(s[2], 1)
        if not math.isfinite(loss):
            last = self.out / "last.pt"
            raise TrainingDiverged(
                f"loss became {loss} by iteration {self.iteration}; training stopped. Last good checkpoint: "
                f"{last if last.is_file() else 'none written yet'}. Lower optim.lr or try run.amp=none")
        if self.schedule.observe_train_error(err):
            self.log.note(f"warm-up over at iteration {self.iteration}: training error {err:.1%} < "
                          f"{self.cfg.schedule.warmup_until_error:.0%}, lr back to {self.cfg.optim.lr}")
        images, secs = self.intervals[-1]
        self.log.train(self.iteration, self.iteration / self.data.iterations_per_epoch, loss, err, lr,
                       images / max(secs, 1e-9))

    @torch.no_grad()
    def _evaluate(self) -> None:
        """Top-1/top-5 on the evaluation split, in fp32; every rank takes a shard and the counts are summed."""
        self.model.eval()
        dev, s = self.env.device, torch.zeros(4, dtype=torch.float64, device=self.env.device)
        for x, y in self.data.eval_batches(self.cfg.run.eval_batch_size, self.cfg.run.eval_limit):
            if self.channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            out = self.model(x).float()
            top5 = out.topk(min(5, out.shape[1]), 1).indices
            s += torch.stack([F.cross_entropy(out, y, reduction="sum").double(),
                              (top5[:, 0] == y).sum().double(), (top5 == y[:, None]).any(1).sum().double(),
                              torch.tensor(float(len(y)), dtype=torch.float64, device=dev)])
        finetune.train_mode(self.model, self.frozen)
        s = distributed.all_reduce_sum(s, self.env).tolist()
        n = max(s[3], 1)
        self.last_eval = {"top1": s[1] / n, "top5": s[2] / n, "eval_loss": s[0] / n, "eval_images": int(s[3])}
        if self.schedule.observe_val_error(1 - self.last_eval["top1"]):
            self.log.note(f"validation error plateaued: lr divided by {1 / self.cfg.schedule.gamma:g}")
        self.log.eval(self.iteration, self.iteration / self.data.iterations_per_epoch, self.last_eval,
                      classes=len(self.data.classes), show=self.iteration < self.cfg.schedule.iterations)
        if self.last_eval["top1"] > self.best_top1:
            self.best_top1 = self.last_eval["top1"]
            self.save("best.pt")

    def _result(self, wall: float) -> dict[str, Any]:
        steady = self.intervals[1:] or self.intervals  # the first interval holds warm-up (allocations, compile)
        images, secs = sum(i for i, _ in steady), sum(s for _, s in steady)
        return {"iteration": self.iteration, **self.last_eval, "best_top1": self.best_top1,
                "img_per_s": images / secs if secs else 0.0, "wall_s": wall, "world_size": self.env.world,
                "precision": self.precision.to_dict(), "num_classes": len(self.data.classes),
                "rank": self.env.rank, "notes": self.notes,
                "out_dir": str(self.out), "last": str(self.out / "last.pt"), "best": str(self.out / "best.pt")}


def compile_choice(requested: bool | str, device: torch.device, world: int) -> tuple[bool, str]:
    """Whether the run compiles its model (`run.compile`: true, false or auto), and why."""
    if requested != "auto":
        return bool(requested), f"run.compile={str(requested).lower()}"
    if device.type != "cpu":
        return False, "run.compile=auto: eager on GPUs, where compiling measured slower (the step is launch-bound)"
    if world > 1:
        return False, "run.compile=auto: eager under DDP"
    if os.environ.get("ATEN_CPU_CAPABILITY") and not os.environ.get("TORCHINDUCTOR_CACHE_DIR"):
        # torch 2.14's inductor cache does not key kernels by the capped ISA: kernels built under an AVX2 cap
        # corrupted the heap of a later uncapped process that loaded them (benchmarks/RESULTS.md)
        return False, ("run.compile=auto: eager while ATEN_CPU_CAPABILITY caps torch without a TORCHINDUCTOR_CACHE_DIR "
                       "of its own")
    if (cxx := torch_cpp_compiler()) is None:
        return False, "run.compile=auto: no C++ compiler for inductor's CPU kernels; install g++ to compile"
    return True, f"run.compile=auto: a CPU, and a C++ compiler ({cxx}) for inductor's kernels"


def _check_same_recipe(saved: dict[str, Any], now: dict[str, Any], path: Path) -> None:
    def flat(d: dict, p: str = "") -> dict[str, Any]:
        out = {}
        for k, v in d.items():
            out.update(flat(v, f"{p}{k}.") if isinstance(v, dict) else {f"{p}{k}": v})
        return out

    a, b = flat(saved), flat(now)
    diff = sorted(k for k in set(a) | set(b) if a.get(k) != b.get(k) and not k.startswith(RESUMABLE_CHANGES))
    if diff:
        raise ResnetDeployError(f"cannot resume {path}: the recipe differs in {', '.join(diff)} (only "
                                "schedule.iterations and run.* may change on --resume)")


def train(config: TrainConfig, out_dir: str | Path, data: str | InMemoryData | FolderData | None = None,
          resume: bool = False, progress: bool = True) -> dict[str, Any]:
    """Train a recipe into a run folder (config.yaml, metrics.jsonl, last.pt, best.pt, ckpt_*.pt).

    Args:
        config: the resolved recipe.
        out_dir: the run folder; it must not hold a run already unless `resume`.
        data: a data SPEC (overrides config.data.spec), or prepared training data (benchmarks, tests).
        resume: continue the run in out_dir from its last.pt.
        progress: show a rich progress bar (rank 0).

    Returns:
        iteration, top1, top5, best_top1, img_per_s (steady-state), wall_s, world_size, precision (what run.amp
        trained in here and why, `AmpChoice.to_dict()`), rank, notes (lines on the weights loaded, layers frozen and
        images skipped; printed, with the precision, as the run starts), out_dir, last, best.

    Raises:
        ResnetDeployError: bad recipe or data; TrainingDiverged when the loss becomes NaN.
    """
    out = Path(out_dir)
    if isinstance(data, str):
        config = dataclasses.replace(config, data=dataclasses.replace(config.data, spec=data))
        data = None
    if (out / "last.pt").exists() and not resume:
        raise ResnetDeployError(f"{out} already holds a run (last.pt); pass --resume to continue it or choose "
                                "another --out")
    env = distributed.setup(config.run.device)
    if env.main and out.is_dir() and (removed := remove_stale_temps(out)):
        print(f"removed {len(removed)} temporary file(s) left in {out} by an interrupted run: {', '.join(removed)}",
              file=sys.stderr)
    try:
        with torch_threads(config.run.threads):  # run.threads is for this run, not for the rest of the process
            trainer = Trainer(config, out, env, data, progress, resume=resume)
            if env.main:
                out.mkdir(parents=True, exist_ok=True)
                dump_yaml(config, out / "config.yaml")
            if resume:
                trainer.resume()
            return trainer.run()
    finally:
        distributed.cleanup(env)


def summary_line(result: dict[str, Any], out: Path) -> str:
    """The one-line summary `resnet-deploy train` prints when a run ends."""
    acc = accuracy_text(result.get("top1", float("nan")), result.get("top5", float("nan")),
                        result.get("num_classes", 1000))
    return (f"iteration {result['iteration']}: {acc}, {result['img_per_s']:.0f} img/s, {result['wall_s']:.0f} s -> "
            f"{out}/last.pt, {out}/best.pt")
