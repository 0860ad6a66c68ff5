"""This machine's CPU: its model name, feature flags, and the precisions it computes natively.

One home for these facts: the runtime's backend choice (`auto`, OpenVINO's bf16 refusal), `bench`'s machine key,
training's `run.amp=auto` and `doctor` all read them here. Torch-free (the runtime's ground floor); CUDA facts live
torch-side in `resnet_deploy/system.py`.

Every function takes the cpuinfo file or the flag set it decides on, so that a test (or a question about another
machine) can give a CPU without the flags this one has; the default file is read from CPUINFO when called.
"""

from __future__ import annotations

import functools
import platform
from pathlib import Path

CPUINFO = "/proc/cpuinfo"

# CPU features with int8 dot-product instructions. ONNX Runtime's U8S8 QLinearConv / MatMulInteger kernels (MLAS) and
# oneDNN's int8 convolutions use them: VPDPBUSD (AVX-512 VNNI, AVX-VNNI), AMX tiles, and SDOT/UDOT/SMMLA on Arm
# (asimddp, i8mm). Without them the int8 kernels fall back to 16-bit multiply-add sequences whose speed-up over fp32
# is small or negative, so fp32 is the safe choice there (benchmarks/RESULTS.md: int8 about 3x faster than fp32 on an
# AVX-512 VNNI CPU).
INT8_DOT_FLAGS = ("avx512_vnni", "avx_vnni", "amx_int8", "asimddp", "i8mm")
# CPU flags with native bf16 arithmetic: AVX-512 BF16's VDPBF16PS and AMX BF16 tiles (x86; oneDNN's and OpenVINO's own
# test). Elsewhere bf16 is emulated by converting to fp32 and back: 9-12x slower than fp32 for training on an AVX2
# CPU (benchmarks/RESULTS.md, "Training on the machine the user has").
BF16_FLAGS = ("avx512_bf16", "amx_bf16")
# The precisions `native_precisions` reports, in the order doctor lists them.
PRECISIONS = ("fp32", "bf16", "int8")


@functools.lru_cache(maxsize=4)
def _read_cpuinfo(path: str) -> str:
    # Read once per process: a machine's CPU does not change while it runs, and on large hosts the file is slow.
    try:
        return Path(path).read_text()
    except OSError:
        return ""


def cpu_flags(cpuinfo: str | Path | None = None) -> set[str]:
    """The CPU feature flags of the first core (x86 `flags`, Arm `Features`) in `cpuinfo` (default: CPUINFO, this
    machine's); empty when unknown (not Linux)."""
    for line in _read_cpuinfo(str(cpuinfo or CPUINFO)).splitlines():
        key, _, value = line.partition(":")
        if key.strip() in ("flags", "Features"):
            return set(value.split())
    return set()


def cpu_model(cpuinfo: str | Path | None = None) -> str:
    """The CPU's model name from `cpuinfo` (default: CPUINFO, this machine's; Linux), else what `platform` knows."""
    for line in _read_cpuinfo(str(cpuinfo or CPUINFO)).splitlines():
        if line.lower().startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def cpu_int8_is_fast(flags: set[str] | None = None) -> tuple[bool, str]:
    """Whether int8 kernels beat fp32 on this CPU (an int8 dot-product instruction, see INT8_DOT_FLAGS), and why."""
    flags = cpu_flags() if flags is None else flags
    found = [f for f in INT8_DOT_FLAGS if f in flags]
    if found:
        return True, f"CPU has int8 dot-product instructions ({', '.join(found)})"
    if not flags and platform.system() == "Darwin" and platform.machine() == "arm64":
        return True, "Apple silicon has int8 dot-product instructions (asimddp)"
    return False, (f"CPU lacks int8 dot-product instructions ({', '.join(INT8_DOT_FLAGS)}); int8 is expected slower "
                   "than fp32")


def cpu_has_bf16(flags: set[str] | None = None) -> tuple[bool, str]:
    """Whether this CPU computes bf16 natively (see BF16_FLAGS), and why."""
    flags = cpu_flags() if flags is None else flags
    found = [f for f in BF16_FLAGS if f in flags]
    if found:
        return True, f"CPU has bf16 instructions ({', '.join(found)})"
    return False, f"CPU lacks bf16 instructions ({', '.join(BF16_FLAGS)}); bf16 would be emulated, slower than fp32"


def native_precisions(flags: set[str] | None = None) -> dict[str, tuple[str, ...]]:
    """Every precision this CPU computes natively -> the flags that say so (none for fp32, which every CPU has)."""
    flags = cpu_flags() if flags is None else flags
    out: dict[str, tuple[str, ...]] = {"fp32": ()}
    if cpu_has_bf16(flags)[0]:
        out["bf16"] = tuple(f for f in BF16_FLAGS if f in flags)
    if cpu_int8_is_fast(flags)[0]:
        out["int8"] = tuple(f for f in INT8_DOT_FLAGS if f in flags) or ("asimddp",)  # Apple silicon: no cpuinfo
    return out
