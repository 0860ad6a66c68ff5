"""Small facts about this machine and its software, each found one way: installed versions, CUDA devices, threads.

Above `runtime/` (which keeps its own torch-free probes) and below everything that measures or records.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from importlib import metadata


def installed_version(dist: str) -> str | None:
    """The installed version of a distribution (from its metadata, so nothing is imported), or None."""
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


@contextmanager
def torch_threads(threads: int | None) -> Iterator[None]:
    """Run a block with torch's intra-op thread count set to `threads` (None: unchanged), then restore it."""
    import torch

    old = torch.get_num_threads()
    if threads:
        torch.set_num_threads(int(threads))
    try:
        yield
    finally:
        torch.set_num_threads(old)


def torch_cuda_devices() -> list[dict[str, str]]:
    """Name and compute capability of every CUDA device torch sees (empty without CUDA or torch's CUDA build)."""
    import torch

    if not torch.cuda.is_available():
        return []
    out = []
    for i in range(torch.cuda.device_count()):
        major, minor = torch.cuda.get_device_capability(i)
        out.append({"gpu": torch.cuda.get_device_name(i), "compute_capability": f"{major}.{minor}"})
    return out
