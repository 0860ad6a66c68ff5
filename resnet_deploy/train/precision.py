"""Training precision: what `run.amp` means on the device a run trains on.

`auto` takes the fastest precision the device computes natively: bf16 autocast where it has bf16 arithmetic (CPUs
with AVX-512 BF16 or AMX, GPUs of compute capability >= 8.0), fp16 autocast with a GradScaler on older GPUs, fp32
elsewhere. Emulated bf16 is far slower than fp32 (9-12x for the quick recipe on AVX2 CPUs, benchmarks/RESULTS.md),
so an explicit `bf16` on such a device trains as asked but says what it costs. The CPU facts come from
`runtime/machine.py`, the CUDA facts from `system.py`.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import torch

from resnet_deploy.runtime import machine
from resnet_deploy.runtime.errors import ResnetDeployError
from resnet_deploy.system import cuda_bf16_native, torch_cpu_capability

AMP_VALUES = ("auto", "none", "bf16", "fp16")
LABELS = {"none": "fp32", "bf16": "bf16 autocast", "fp16": "fp16 autocast + GradScaler"}
DTYPES = {"none": None, "bf16": torch.bfloat16, "fp16": torch.float16}
# What emulated bf16 costs, measured on the quick recipe (benchmarks/RESULTS.md, "Training on the machine the user
# has"): 12x slower than fp32 on an AVX2-only EPYC (Zen 2), 9x with AVX2 emulated on an AVX-512 Xeon.
CPU_BF16_EMULATED = "expect about 10x slower training than fp32 (9-12x measured on AVX2 CPUs)"
# Not measured here (no pre-Ampere GPU): NVIDIA's mixed-precision guide names fp16 + loss scaling as the fast path.
CUDA_BF16_EMULATED = "expect it slower than fp16 + GradScaler (not measured here)"
# torch's CPU kernel levels with bf16 arithmetic; anything lower (AVX2, DEFAULT) converts bf16 to fp32 and back.
TORCH_BF16_CAPABILITIES = ("AVX512",)


@dataclass(frozen=True)
class AmpChoice:
    """The precision a run trains in.

    Attributes:
        requested: the recipe's `run.amp` ("auto", "none", "bf16", "fp16").
        amp: what runs: "none" (fp32), "bf16" or "fp16" (autocast; fp16 with a GradScaler).
        reason: why, in words (the device facts it was decided on).
        warning: set when an explicit precision is emulated on this device (what it costs).
    """

    requested: str
    amp: str
    reason: str
    warning: str | None = None

    @property
    def dtype(self) -> torch.dtype | None:
        """The autocast dtype (None: fp32, no autocast)."""
        return DTYPES[self.amp]

    @property
    def grad_scaler(self) -> bool:
        """Whether the loss is scaled (fp16 only: its range is too narrow for small gradients)."""
        return self.amp == "fp16"

    def summary(self) -> str:
        """The line a run prints as it starts."""
        why = f": {self.reason}" if self.requested == "auto" else ""
        return f"precision: {LABELS[self.amp]} (run.amp={self.requested}{why})"

    def warnings(self) -> list[str]:
        """The warning line, printed once as the run starts (none when the precision is native here)."""
        return [f"warning: {self.warning}"] if self.warning else []

    def to_dict(self) -> dict[str, Any]:
        """JSON- and checkpoint-ready form, with the precision's name."""
        return {**asdict(self), "label": LABELS[self.amp], "grad_scaler": self.grad_scaler}


def cpu_bf16_native(flags: set[str] | None = None) -> tuple[bool, str]:
    """Whether training in bf16 runs natively on this CPU: bf16 instructions (`machine.cpu_has_bf16`) and torch's
    AVX-512 kernels (a capped ATEN_CPU_CAPABILITY emulates an older CPU, and bf16 with it)."""
    native, why = machine.cpu_has_bf16(flags)
    if native and (level := torch_cpu_capability()) not in TORCH_BF16_CAPABILITIES:
        return False, f"{why}, but torch runs its {level} kernels (ATEN_CPU_CAPABILITY), which emulate bf16"
    return native, why


def choose_amp(requested: str, device: torch.device | str, flags: set[str] | None = None) -> AmpChoice:
    """The precision `run.amp=requested` trains in on `device` (CPU facts from `flags`, default this CPU's).

    Raises:
        ResnetDeployError: an unknown value, or fp16 on a CPU (torch has no GradScaler path there worth taking).
    """
    device = torch.device(device)
    if requested not in AMP_VALUES:
        raise ResnetDeployError(f"unknown run.amp {requested!r}; choose one of: {', '.join(AMP_VALUES)}")
    if device.type == "cuda":
        native, why = cuda_bf16_native(device.index)
        fallback, cost = "fp16", CUDA_BF16_EMULATED
    else:  # run.device allows cpu and cuda only
        if requested == "fp16":
            raise ResnetDeployError("run.amp=fp16 needs a CUDA GPU (a GradScaler on fp16); use run.amp=auto or bf16 "
                                    "on a CPU")
        native, why = cpu_bf16_native(flags)
        fallback, cost = "none", CPU_BF16_EMULATED
    if requested == "auto":
        return AmpChoice("auto", "bf16" if native else fallback, why)
    warning = None
    if requested == "bf16" and not native:
        warning = (f"run.amp=bf16 on a device without native bf16 ({why}): it is emulated, {cost}; run.amp=auto "
                   f"trains in {LABELS[fallback]} here")
    return AmpChoice(requested, requested, "asked for", warning)
