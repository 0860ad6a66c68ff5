"""Many GPUs through torchrun and DistributedDataParallel: torch.distributed is the engine, nothing home-made.

`torchrun --nproc_per_node 8 -m resnet_deploy.cli train --recipe ...` sets RANK, WORLD_SIZE and LOCAL_RANK; one
process per GPU (NCCL), or per CPU process group for tests (gloo). The recipe's batch size and lr are global: each
rank takes batch_size / world_size images, and DDP averages gradients over ranks, so the update equals one
single-process step on the whole batch (BN statistics aside, which stay per rank as in the paper's multi-GPU setup).
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

from resnet_deploy.runtime.errors import ResnetDeployError


@dataclass(frozen=True)
class DistEnv:
    """This process's place in the job."""

    rank: int
    world: int
    local_rank: int
    device: torch.device
    owns_group: bool  # True when setup() created the process group (and cleanup() should destroy it)

    @property
    def main(self) -> bool:
        return self.rank == 0


def resolve_device(pref: str, local_rank: int) -> torch.device:
    """The torch device of `run.device` ("auto", "cpu", "cuda", "cuda:N") for the process of local rank `local_rank`."""
    if pref == "auto":
        return torch.device(f"cuda:{local_rank}") if torch.cuda.is_available() else torch.device("cpu")
    dev = torch.device(pref)
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise ResnetDeployError(f"run.device is {pref!r} but this machine has no CUDA GPU; use run.device=cpu")
        if dev.index is None:
            dev = torch.device(f"cuda:{local_rank}")
    return dev


def setup(device: str = "auto") -> DistEnv:
    """Join the torchrun job described by the environment, or run as a single process."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank, local = int(os.environ.get("RANK", "0")), int(os.environ.get("LOCAL_RANK", "0"))
    dev = resolve_device(device, local)
    if dev.type == "cuda":
        torch.cuda.set_device(dev)
    owns = False
    if world > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if dev.type == "cuda" else "gloo")
        owns = True
    return DistEnv(rank, world, local, dev, owns)


def all_reduce_sum(t: torch.Tensor, env: DistEnv) -> torch.Tensor:
    """Sum a tensor over ranks (in place; a no-op for one process)."""
    if env.world > 1:
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t


def barrier(env: DistEnv) -> None:
    if env.world > 1:
        dist.barrier()


def cleanup(env: DistEnv) -> None:
    if env.owns_group and dist.is_initialized():
        dist.destroy_process_group()
