"""Small facts about this machine and its software, each found one way: installed versions, CUDA devices and what
they compute natively, torch's CPU kernels, threads.

Above `runtime/` (whose torch-free CPU facts are in `runtime/machine.py`) and below everything that measures or
records.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from importlib import metadata


def installed_version(dist: str) -> str | None:
    """The installed version of a distribution (from its metadata, so nothing is imported), or None."""
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


def installed_versions(dists: tuple[str, ...]) -> dict[str, str | None]:
    """`installed_version` of each distribution, in order (the one version list a bundle's manifest and a
    measurement's environment both record)."""
    return {dist: installed_version(dist) for dist in dists}


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


# bf16 tensor cores came with Ampere (compute capability 8.0); older GPUs (T4 7.5, V100 7.0, Jetson Xavier 7.2) run
# bf16 by emulation, where fp16 with a GradScaler is the fast path (NVIDIA's mixed-precision guide).
CUDA_BF16_CAPABILITY = (8, 0)


def cuda_bf16_native(device: int | None = None) -> tuple[bool, str]:
    """Whether CUDA device `device` (None: the current one) computes bf16 natively, and why: compute capability >= 8.0
    (what `torch.cuda.is_bf16_supported(including_emulation=False)` tests, for any device index); ROCm GPUs do."""
    import torch

    if torch.version.hip:
        return True, "ROCm GPU (bf16 native)"
    index = torch.cuda.current_device() if device is None else device
    name, cap = torch.cuda.get_device_name(index), torch.cuda.get_device_capability(index)
    where = f"{name}, compute capability {cap[0]}.{cap[1]}"
    if tuple(cap) >= CUDA_BF16_CAPABILITY:
        return True, f"{where} (bf16 native from 8.0)"
    return False, f"{where}: bf16 is emulated below 8.0"


def torch_cpu_capability() -> str:
    """The vector ISA torch's own CPU kernels run ("AVX512", "AVX2", "DEFAULT", ...): the CPU's best unless capped with
    ATEN_CPU_CAPABILITY, as an emulation of an older CPU does."""
    import torch

    return torch.backends.cpu.get_cpu_capability()


def torch_cpp_compiler() -> str | None:
    """The C++ compiler torch.compile's CPU backend (inductor) builds its kernels with, or None where it finds none."""
    try:
        from torch._inductor.cpp_builder import get_cpp_compiler
    except ImportError:  # another torch layout: the compiler inductor looks for first

        return shutil.which(os.environ.get("CXX") or "g++")
    try:
        return get_cpp_compiler()
    except Exception:  # inductor's InvalidCxxCompiler and the like: no usable compiler
        return None
