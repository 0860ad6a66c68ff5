"""Loading torchvision ResNet state dicts (the ImageNet weights users bring) into the models built here."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import torch
from torch import nn

from resnet_deploy.runtime.errors import ResnetDeployError

# BN's step counter: absent from state dicts saved before torch 0.4.1 (torchvision's first ResNet files), unused by
# the eval-mode and momentum-based BN of these networks.
COUNTER = "num_batches_tracked"


def strip_prefixes(state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The same state dict without the "module." (DDP) and "_orig_mod." (torch.compile) prefixes of its names."""
    out = {}
    for k, v in state_dict.items():
        for prefix in ("module.", "_orig_mod."):
            if k.startswith(prefix):
                k = k[len(prefix):]
        out[k] = v
    return out


@dataclass(frozen=True)
class StateDictFit:
    """How a state dict fits a model, every list in the model's own order (unexpected: in the file's order)."""

    matched: tuple[str, ...]
    missing: tuple[str, ...]
    unexpected: tuple[str, ...]
    misshaped: tuple[str, ...]  # "name (file shape) vs model (model shape)"
    first: str  # the first tensor, in the model's order, that does not fit; "" when all fit

    @property
    def ok(self) -> bool:
        return not (self.missing or self.unexpected or self.misshaped)


def fit_state_dict(own: Mapping[str, torch.Tensor], state_dict: Mapping[str, torch.Tensor]) -> StateDictFit:
    """Compare the names and shapes of `state_dict` (prefixes stripped) with a model's own state dict `own`."""
    if not isinstance(state_dict, Mapping):
        raise ResnetDeployError("expected a state dict (a mapping of names to tensors), "
                                f"found {type(state_dict).__name__}")
    sd = strip_prefixes(state_dict)
    matched, missing, misshaped, first = [], [], [], ""
    for k, v in own.items():
        if k not in sd:
            if not k.endswith(COUNTER):
                missing.append(k)
                first = first or f"'{k}' is missing from the file (model {tuple(v.shape)})"
        elif not isinstance(sd[k], torch.Tensor) or tuple(sd[k].shape) != tuple(v.shape):
            found = tuple(sd[k].shape) if isinstance(sd[k], torch.Tensor) else type(sd[k]).__name__
            misshaped.append(f"{k} {found} vs model {tuple(v.shape)}")
            first = first or f"'{k}' is {found} in the file, {tuple(v.shape)} in the model"
        else:
            matched.append(k)
    unexpected = [k for k in sd if k not in own]
    if unexpected and not first:
        first = f"'{unexpected[0]}' in the file is not in the model"
    return StateDictFit(tuple(matched), tuple(missing), tuple(unexpected), tuple(misshaped), first)


def describe_misfit(fit: StateDictFit) -> str:
    """One line: the first mismatching tensor, then every missing, unexpected or mis-shaped one (8 of each)."""
    parts = [f"{label} ({len(keys)}): {', '.join(keys[:8])}{' ...' if len(keys) > 8 else ''}"
             for label, keys in (("missing", fit.missing), ("unexpected", fit.unexpected),
                                 ("mis-shaped", fit.misshaped)) if keys]
    return f"first mismatch: {fit.first}; " + "; ".join(parts)


def load_torchvision(model: nn.Module, state_dict: Mapping[str, torch.Tensor]) -> nn.Module:
    """Load a torchvision ResNet state dict into `model`, strictly.

    Raises:
        ResnetDeployError: naming the first mismatching tensor, then every missing, unexpected or mis-shaped key (the
            usual cause: another depth, another shortcut option, or another number of classes).
    """
    fit = fit_state_dict(model.state_dict(), state_dict)
    if not fit.ok:
        raise ResnetDeployError("state dict does not fit the model: " + describe_misfit(fit))
    model.load_state_dict(strip_prefixes(state_dict), strict=False)  # strict by `fit`; an absent BN counter is fine
    return model
