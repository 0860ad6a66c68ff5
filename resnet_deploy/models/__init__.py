"""The paper's model zoo, built by name: `build("resnet50")`, `build("cifar_resnet56")`, `build("plain34")`."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from resnet_deploy import paper
from resnet_deploy.models.cifar import CIFAR_DEPTHS, CifarResNet
from resnet_deploy.models.resnet import IMAGENET_DEPTHS, SHORTCUTS, BasicBlock, Bottleneck, ResNet
from resnet_deploy.models.torchvision import load_torchvision
from resnet_deploy.runtime.errors import ResnetDeployError

__all__ = ["ARCHITECTURES", "BasicBlock", "Bottleneck", "build", "count_parameters", "count_macs", "describe",
           "family", "load_torchvision", "natural_input_size"]

# name -> (family, depth, residual)
ARCHITECTURES: dict[str, tuple[str, int, bool]] = {
    **{f"resnet{d}": ("imagenet", d, True) for d in IMAGENET_DEPTHS},
    **{f"plain{d}": ("imagenet", d, False) for d in IMAGENET_DEPTHS},
    **{f"cifar_resnet{d}": ("cifar", d, True) for d in CIFAR_DEPTHS},
    **{f"cifar_plain{d}": ("cifar", d, False) for d in CIFAR_DEPTHS if d != 1202},
}
OPTIONS = ("shortcut", "stride_in_1x1", "zero_init_residual")
# Family defaults: ImageNet = option B, stride on the 3x3 (torchvision's structure, so its weights load; the paper
# uses A for ResNet-18/34 in Table 2 and puts the bottleneck stride on the 1x1); CIFAR = option A, as §4.2.
DEFAULTS = {"imagenet": {"shortcut": "B", "num_classes": 1000}, "cifar": {"shortcut": "A", "num_classes": 10}}


def _spec(name: str) -> tuple[str, int, bool]:
    try:
        return ARCHITECTURES[name]
    except KeyError:
        raise ResnetDeployError(f"unknown architecture {name!r}; choose one of: {', '.join(ARCHITECTURES)}") from None


def family(name: str) -> str:
    """"imagenet" or "cifar"."""
    return _spec(name)[0]


def natural_input_size(name: str) -> int:
    """The input side the network was designed for: 224 (ImageNet family) or 32 (CIFAR family)."""
    return 224 if family(name) == "imagenet" else 32


def build(name: str, *, num_classes: int | None = None, in_channels: int = 3, **options: Any) -> nn.Module:
    """Build a network of the paper by name.

    Args:
        name: one of `ARCHITECTURES`, e.g. "resnet50", "plain34", "cifar_resnet110".
        num_classes: classifier outputs; default 1000 (ImageNet family) or 10 (CIFAR family).
        in_channels: 3 for RGB, 1 for grey images.
        **options: shortcut ("A" | "B" | "C"), stride_in_1x1 (bool), zero_init_residual (bool).

    Raises:
        ResnetDeployError: unknown name or option, naming the valid choices.
    """
    fam, depth, residual = _spec(name)
    unknown = sorted(set(options) - set(OPTIONS))
    if unknown:
        raise ResnetDeployError(f"unknown model option(s) {', '.join(unknown)}; choose from: {', '.join(OPTIONS)}")
    opts = {k: v for k, v in options.items() if v is not None}
    shortcut = str(opts.pop("shortcut", DEFAULTS[fam]["shortcut"])).upper()
    if shortcut not in SHORTCUTS:
        raise ResnetDeployError(f"unknown shortcut option {shortcut!r}; choose one of: A, B, C")
    if in_channels not in (1, 3):
        raise ResnetDeployError(f"in_channels must be 1 (grey) or 3 (RGB), found {in_channels}")
    n = DEFAULTS[fam]["num_classes"] if num_classes is None else int(num_classes)
    if n < 1:
        raise ResnetDeployError(f"num_classes must be at least 1, found {n}")
    cls = ResNet if fam == "imagenet" else CifarResNet
    return cls(depth, num_classes=n, in_channels=in_channels, shortcut=shortcut, residual=residual,
               stride_in_1x1=bool(opts.get("stride_in_1x1", False)),
               zero_init_residual=bool(opts.get("zero_init_residual", False)))


def count_parameters(model: nn.Module) -> int:
    """Number of learnable parameters."""
    return sum(p.numel() for p in model.parameters())


def count_macs(model: nn.Module, input_size: int, in_channels: int = 3) -> int:
    """Multiply-adds of one forward pass at batch 1, counted by `torch.utils.flop_counter` (FLOPs / 2)."""
    was_training = model.training
    model.eval()
    x = torch.randn(1, in_channels, input_size, input_size)
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        model(x)
    model.train(was_training)
    return counter.get_total_flops() // 2


def paper_numbers(name: str, shortcut: str | None = None) -> dict[str, Any]:
    """The paper's published figures for this architecture (empty values where the paper gives none)."""
    fam, depth, residual = _spec(name)
    if fam == "cifar":
        # Table 6's nets use option A (§4.2): its figures say nothing of a B or C network
        same = residual and (shortcut or "A").upper() == "A"
        return {"params_M": paper.CIFAR_PARAMS_M.get(depth) if same else None,
                "test_error_pct": paper.CIFAR_ERRORS.get(depth) if same else None,
                "source": "Table 6" if same or not residual else "Table 6 (option A only)"}
    key = f"{name}-{(shortcut or 'B').upper()}" if name == "resnet34" else name
    top1, top5 = paper.IMAGENET_ERRORS.get(key, (None, None))
    return {"gflops": paper.IMAGENET_GFLOPS[depth], "top1_error_pct": top1, "top5_error_pct": top5,
            "source": "Tables 1-3"}


def describe(name: str, **options: Any) -> dict[str, Any]:
    """Parameters and multiply-adds at the natural input size, beside the paper's numbers (for `info`)."""
    model = build(name, **options)
    size = natural_input_size(name)
    return {"name": name, "family": family(name), "input_size": size, "params": count_parameters(model),
            "macs": count_macs(model, size), "shortcut": options.get("shortcut") or DEFAULTS[family(name)]["shortcut"],
            "paper": paper_numbers(name, options.get("shortcut"))}
