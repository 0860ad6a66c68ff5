"""This machine's CPU: its model name, feature flags, and the precisions it computes natively.

One home for these facts: the runtime's backend choice (`auto`, OpenVINO's bf16 refusal), `bench`'s machine key,
OpenVINO's compile cache key, training's `run.amp=auto` and `doctor` all read them here. Torch-free (the runtime's
ground floor); CUDA facts live torch-side in `resnet_deploy/system.py`.

The flags that decide are the ones the libraries may use: the CPU's, less those above an instruction-set cap set in
the environment (`ONEDNN_MAX_CPU_ISA=AVX2` and the like, as an emulation of an older CPU sets them), since oneDNN,
OpenVINO and torch then run the capped class's kernels and emulate what lies above it (`usable_flags`). Such a
process is another machine class: `isa_key` is what a stored measurement or compiled model is keyed by.

Every function takes the cpuinfo file or the flag set it decides on, so that a test (or a question about another
machine) can give a CPU without the flags this one has; the default file is read from CPUINFO when called, the caps
from the environment.
"""

from __future__ import annotations

import functools
import hashlib
import os
import platform
from collections.abc import Mapping
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

# Variables that cap the instruction set libraries use, as an emulation of an older CPU does: torch's own kernels
# (ATEN_CPU_CAPABILITY), oneDNN's (ONEDNN_/DNNL_MAX_CPU_ISA; torch's convolutions and OpenVINO's CPU plugin run on
# it), OpenVINO's and MKL's. A figure taken under them is that emulation's, and reports say so.
ISA_CAPS = ("ATEN_CPU_CAPABILITY", "ONEDNN_MAX_CPU_ISA", "DNNL_MAX_CPU_ISA", "OV_CPU_MAX_ISA",
            "MKL_ENABLE_INSTRUCTIONS")
_AVX2 = frozenset({"avx", "avx2", "fma", "f16c"})
_AVX512 = _AVX2 | {"avx512f", "avx512dq", "avx512cd", "avx512bw", "avx512vl", "avx512ifma", "avx512vbmi",
                   "avx512_vbmi2", "avx512_bitalg", "avx512_vpopcntdq"}
_AMX = frozenset({"amx_tile", "amx_int8", "amx_bf16"})
# What each cap's level lets a library use of the flags any level gates (oneDNN's cpu_isa names, which OpenVINO's
# plugin shares, and MKL's). A flag gated by no level (sse4_2, sha_ni) is kept.
ISA_LEVELS: dict[str, frozenset[str]] = {
    "DEFAULT": frozenset(), "SSE41": frozenset(), "SSE4_2": frozenset(), "AVX": frozenset({"avx"}), "AVX2": _AVX2,
    "AVX2_VNNI": _AVX2 | {"avx_vnni"}, "AVX2_VNNI_2": _AVX2 | {"avx_vnni", "avx_vnni_int8", "avx_ne_convert"},
    "AVX512_CORE": _AVX512, "AVX512": _AVX512, "AVX512_CORE_VNNI": _AVX512 | {"avx512_vnni"},
    "AVX512_E1": _AVX512 | {"avx512_vnni"},
    "AVX512_CORE_BF16": _AVX512 | {"avx512_vnni", "avx512_bf16"},
    "AVX512_CORE_FP16": _AVX512 | {"avx512_vnni", "avx512_bf16", "avx512_fp16", "avx_vnni"},
    "AVX512_CORE_AMX": _AVX512 | {"avx512_vnni", "avx512_bf16", "avx512_fp16", "avx_vnni"} | _AMX,
}
# torch's ATEN_CPU_CAPABILITY names its own kernels' level; its highest ("avx512") caps nothing.
ATEN_LEVELS: dict[str, frozenset[str]] = {"DEFAULT": frozenset(), "AVX2": _AVX2}
_GATED = frozenset().union(*ISA_LEVELS.values(), {"amx_fp16", "avx10_1"})


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


def isa_caps(env: Mapping[str, str] | None = None) -> dict[str, str]:
    """The instruction-set caps set in `env` (default: this process's environment), variable -> value."""
    env = os.environ if env is None else env
    return {k: env[k] for k in ISA_CAPS if env.get(k)}


def caps_text(caps: Mapping[str, str]) -> str:
    """`ONEDNN_MAX_CPU_ISA=AVX2, ...`: caps as a reader sets them."""
    return ", ".join(f"{k}={v}" for k, v in caps.items())


def usable_flags(cpuinfo: str | Path | None = None, env: Mapping[str, str] | None = None) -> set[str]:
    """The CPU's flags (`cpu_flags`) that the libraries may use under the caps in `env` (`isa_caps`): those above
    the lowest capped level dropped. A level this table does not know (ALL, AVX10_1_512, a later one) caps nothing
    that decides a precision."""
    flags = cpu_flags() if cpuinfo is None else cpu_flags(cpuinfo)
    for var, value in isa_caps(env).items():
        allowed = (ATEN_LEVELS if var == "ATEN_CPU_CAPABILITY" else ISA_LEVELS).get(value.upper())
        if allowed is not None:
            flags = {f for f in flags if f not in _GATED or f in allowed}
    return flags


def isa_key(flags: set[str] | None = None, env: Mapping[str, str] | None = None) -> dict[str, str]:
    """The instruction-set part of a machine's key: {"flags": sha256 of the usable flags (`usable_flags`), 16 hex
    digits}, and {"isa_caps": ...} when the environment caps the instruction set. A measurement or a compiled model
    stored under one key is never used under another: the same model name with other flags (a VM hiding AVX-512)
    or the same CPU capped to AVX2 is another class of machine."""
    caps = isa_caps(env)
    flags = usable_flags(env=env) if flags is None else flags
    key = {"flags": hashlib.sha256(" ".join(sorted(flags)).encode()).hexdigest()[:16]}
    return key | ({"isa_caps": caps_text(caps)} if caps else {})


def _lacks(kind: str, wanted: tuple[str, ...], flags: set[str] | None) -> str:
    """`CPU lacks <kind> (<wanted>)`, or `ONEDNN_MAX_CPU_ISA=AVX2 hides the CPU's <kind> (<hidden>)` where the default
    flags (`flags` None) lost some of `wanted` to a cap."""
    hidden = [] if flags is not None else [f for f in wanted if f in cpu_flags() and f not in usable_flags()]
    if hidden:
        return f"{caps_text(isa_caps())} hides the CPU's {kind} ({', '.join(hidden)})"
    return f"CPU lacks {kind} ({', '.join(wanted)})"


def cpu_int8_is_fast(flags: set[str] | None = None) -> tuple[bool, str]:
    """Whether int8 kernels beat fp32 on this CPU (an int8 dot-product instruction, see INT8_DOT_FLAGS), and why;
    default: the flags usable under this process's caps (`usable_flags`)."""
    given, flags = flags, usable_flags() if flags is None else flags
    found = [f for f in INT8_DOT_FLAGS if f in flags]
    if found:
        return True, f"CPU has int8 dot-product instructions ({', '.join(found)})"
    if not flags and platform.system() == "Darwin" and platform.machine() == "arm64":
        return True, "Apple silicon has int8 dot-product instructions (asimddp)"
    return False, f"{_lacks('int8 dot-product instructions', INT8_DOT_FLAGS, given)}; int8 is expected slower than fp32"


def cpu_has_bf16(flags: set[str] | None = None) -> tuple[bool, str]:
    """Whether this CPU computes bf16 natively (see BF16_FLAGS), and why; default: the flags usable under this
    process's caps (`usable_flags`)."""
    given, flags = flags, usable_flags() if flags is None else flags
    found = [f for f in BF16_FLAGS if f in flags]
    if found:
        return True, f"CPU has bf16 instructions ({', '.join(found)})"
    return False, f"{_lacks('bf16 instructions', BF16_FLAGS, given)}; bf16 would be emulated, slower than fp32"


def native_precisions(flags: set[str] | None = None) -> dict[str, tuple[str, ...]]:
    """Every precision this CPU computes natively -> the flags that say so (none for fp32, which every CPU has);
    default: the flags usable under this process's caps (`usable_flags`)."""
    flags = usable_flags() if flags is None else flags
    out: dict[str, tuple[str, ...]] = {"fp32": ()}
    if cpu_has_bf16(flags)[0]:
        out["bf16"] = tuple(f for f in BF16_FLAGS if f in flags)
    if cpu_int8_is_fast(flags)[0]:
        out["int8"] = tuple(f for f in INT8_DOT_FLAGS if f in flags) or ("asimddp",)  # Apple silicon: no cpuinfo
    return out
