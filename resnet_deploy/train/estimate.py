"""How long a recipe will train on this machine, said before it starts: the precision `run.amp` resolves to here,
and a few steps of the run's own model and step (`Trainer._step`: precision, channels_last, torch.compile, frozen
layers) timed on synthetic images of the recipe's shape. `resnet-deploy train --estimate` and `make demo` print it.
"""

from __future__ import annotations

import dataclasses
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from resnet_deploy import models
from resnet_deploy.config import TrainConfig
from resnet_deploy.data.pipeline import InMemoryData
from resnet_deploy.data.sources import SHAPES
from resnet_deploy.data.spec import parse_spec
from resnet_deploy.data.stats import make_preprocess, mean_std
from resnet_deploy.system import torch_threads
from resnet_deploy.train import distributed
from resnet_deploy.train.distributed import DistEnv
from resnet_deploy.train.loop import Trainer


@dataclass(frozen=True)
class Estimate:
    """Steps timed now, and the schedule's training time they imply (start-up and evaluations not included)."""

    precision: str  # the line the run prints as it starts (`AmpChoice.summary()`)
    iterations: int
    batch_size: int
    img_per_s: float
    steps: int  # timed steps, after `warmup_s` of untimed ones (allocation, kernel selection, compilation)
    warmup_s: float

    @property
    def train_s(self) -> float:
        """Seconds of training steps for the whole schedule at the rate timed."""
        return self.iterations * self.batch_size / self.img_per_s

    def summary(self) -> str:
        """The line printed before the run."""
        first = f", after {duration(self.warmup_s)} of first steps (compilation)" if self.warmup_s > 5 else ""
        return (f"expected: about {duration(self.train_s)} of training here ({self.iterations:,} iterations of "
                f"{self.batch_size} images at {self.img_per_s:,.0f} img/s, timed now over {self.steps} steps{first}; "
                f"start-up and evaluations not included)")


def duration(seconds: float) -> str:
    """"45 s", "7 min", "3.2 h"."""
    if seconds < 90:
        return f"{seconds:.0f} s"
    return f"{seconds / 60:.0f} min" if seconds < 5400 else f"{seconds / 3600:.1f} h"


def _synthetic(cfg: TrainConfig, device: object) -> InMemoryData:
    """Random uint8 images of the recipe's data shape (an in-memory set's own, else 3 x data.input_size), two
    batches: a step's time does not depend on the pixels."""
    name = parse_spec(cfg.data.spec).name
    c, h, _ = SHAPES.get(name, (3, *(2 * (cfg.data.input_size or models.natural_input_size(cfg.model.arch),))))
    rng = np.random.default_rng(0)
    n = 2 * cfg.optim.batch_size
    x, y = rng.integers(0, 256, (n, c, h, h), dtype=np.uint8), rng.integers(0, 10, n)
    mean, std = mean_std([x])
    return InMemoryData(x, y, [str(i) for i in range(10)], make_preprocess(mean, std, h), eval_images=x[:1],
                        eval_labels=y[:1], batch_size=cfg.optim.batch_size, pad=cfg.data.pad, device=device)


def estimate(cfg: TrainConfig, seconds: float = 5.0, warmup: int = 3, min_steps: int = 3) -> Estimate:
    """Time the recipe's training step here: `warmup` untimed steps, then steps for `seconds` (at least `min_steps`).

    One process (a torchrun job's ranks each train a share of the batch: its time is not this one). The run's
    precision line is printed as the run would print it.
    """

    # the speed does not depend on the weights, and the file a recipe names may not exist yet
    cfg = dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, weights=None))
    env = DistEnv(0, 1, 0, distributed.resolve_device(cfg.run.device, 0), owns_group=False)
    with tempfile.TemporaryDirectory(prefix="resnet-deploy-estimate-") as tmp, torch_threads(cfg.run.threads):
        trainer = Trainer(cfg, Path(tmp), env, _synthetic(cfg, env.device), progress=False)
        try:
            batches = trainer.data.batches(0)
            t0 = time.perf_counter()
            for _ in range(warmup):
                float(trainer._step(*next(batches))[0])  # float(): waits for a GPU
            t1 = time.perf_counter()
            steps = 0
            while steps < min_steps or time.perf_counter() - t1 < seconds:
                loss, _ = trainer._step(*next(batches))
                steps += 1
            float(loss)
            elapsed = time.perf_counter() - t1
        finally:
            trainer.log.close()
    return Estimate(trainer.precision.summary(), cfg.schedule.iterations, cfg.optim.batch_size,
                    steps * cfg.optim.batch_size / elapsed, steps, t1 - t0)
