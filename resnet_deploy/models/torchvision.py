"""Loading torchvision ResNet state dicts (the ImageNet weights users bring) into the models built here."""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import nn

from resnet_deploy.runtime.errors import ResnetDeployError


def _strip_prefixes(state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    # DDP ("module.") and torch.compile ("_orig_mod.") wrap the names of the same weights.
    out = {}
    for k, v in state_dict.items():
        for prefix in ("module.", "_orig_mod."):
            if k.startswith(prefix):
                k = k[len(prefix):]
        out[k] = v
    return out


def load_torchvision(model: nn.Module, state_dict: Mapping[str, torch.Tensor]) -> nn.Module:
    """Load a torchvision ResNet state dict into `model`, strictly.

    Raises:
        ResnetDeployError: naming every missing, unexpected or mis-shaped key (the usual cause: another depth, another
            shortcut option, or another number of classes).
    """
    if not isinstance(state_dict, Mapping):
        raise ResnetDeployError("expected a state dict (a mapping of names to tensors), "
                                f"found {type(state_dict).__name__}")
    sd = _strip_prefixes(state_dict)
    own = model.state_dict()
    missing = sorted(set(own) - set(sd))
    unexpected = sorted(set(sd) - set(own))
    shapes = sorted(f"{k} {tuple(sd[k].shape)} vs model {tuple(own[k].shape)}" for k in set(own) & set(sd)
                    if tuple(sd[k].shape) != tuple(own[k].shape))
    problems = [f"{label} ({len(keys)}): {', '.join(keys[:8])}{' ...' if len(keys) > 8 else ''}"
                for label, keys in (("missing", missing), ("unexpected", unexpected), ("mis-shaped", shapes)) if keys]
    if problems:
        raise ResnetDeployError("state dict does not fit the model: " + "; ".join(problems))
    model.load_state_dict(sd, strict=True)
    return model
