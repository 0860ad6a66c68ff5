"""Iteration-based learning-rate schedules of the paper.

Written here rather than with `torch.optim.lr_scheduler` because two of the paper's rules are not functions of the
step count: ResNet-110's warm-up (§4.2: lr 0.01 "until the training error is below 80%", then 0.1) and ImageNet's
"divide by 10 when the error plateaus" (§3.4) composed with it. One small object with `state_dict` for --resume.
Beside them, for fine-tuning: a linear warm-up then a cosine decay to `min_lr` (Loshchilov & Hutter 2017, SGDR).
"""

from __future__ import annotations

import bisect
import math
from typing import Any

from resnet_deploy.config import ScheduleConfig


class LRSchedule:
    """lr(iteration) = base x gamma^k, where k counts passed milestones (multistep) or plateaus (plateau), or a cosine
    from base to min_lr over the iterations after the ramp (cosine); before that, an optional linear ramp over
    `warmup_iterations` and the error-conditioned warm-up lr."""

    def __init__(self, cfg: ScheduleConfig, base_lr: float) -> None:
        self.cfg, self.base_lr = cfg, base_lr
        self.warming = cfg.warmup_lr is not None
        self.reductions = 0  # plateau: times the lr was divided
        self.best_error = float("inf")
        self.bad_evals = 0

    def lr(self, iteration: int) -> float:
        """The learning rate for `iteration` (0-based)."""
        c = self.cfg
        if self.warming:
            return c.warmup_lr
        if c.policy == "cosine":
            if iteration < c.warmup_iterations:
                return self.base_lr * (iteration + 1) / c.warmup_iterations
            t = min(1.0, (iteration - c.warmup_iterations) / max(1, c.iterations - c.warmup_iterations))
            return c.min_lr + (self.base_lr - c.min_lr) * 0.5 * (1 + math.cos(math.pi * t))
        k = bisect.bisect_right(c.milestones, iteration) if c.policy == "multistep" else self.reductions
        lr = self.base_lr * c.gamma ** k
        if c.policy == "plateau":
            lr = max(lr, c.min_lr)
        if iteration < c.warmup_iterations:
            lr *= (iteration + 1) / c.warmup_iterations
        return lr

    def observe_train_error(self, error: float) -> bool:
        """Feed the recent training error; returns True when the warm-up ends now (§4.2: error below 80%)."""
        if self.warming and error < self.cfg.warmup_until_error:
            self.warming = False
            return True
        return False

    def observe_val_error(self, error: float) -> bool:
        """Feed a validation error (plateau policy); returns True when the lr is divided now (§3.4)."""
        if self.cfg.policy != "plateau":
            return False
        if error < self.best_error - self.cfg.plateau_threshold:
            self.best_error, self.bad_evals = error, 0
            return False
        self.bad_evals += 1
        if self.bad_evals >= self.cfg.plateau_patience:
            self.reductions, self.bad_evals = self.reductions + 1, 0
            return True
        return False

    def state_dict(self) -> dict[str, Any]:
        return {"warming": self.warming, "reductions": self.reductions, "best_error": self.best_error,
                "bad_evals": self.bad_evals}

    def load_state_dict(self, d: dict[str, Any]) -> None:
        self.warming, self.reductions = bool(d["warming"]), int(d["reductions"])
        self.best_error, self.bad_evals = float(d["best_error"]), int(d["bad_evals"])
