"""Starting from trained weights: load a torchvision state dict or a resnet-deploy checkpoint into the recipe's
network, give it a new classifier head when the classes differ, freeze the first layers (their BN statistics too),
and split the parameters into a backbone and a head learning-rate group.

The head is `fc` in both families (torchvision's name). Everything else must fit strictly unless
`model.weights_strict` is false: a silently half-loaded backbone trains, but to a worse model nobody asked for.
"""

from __future__ import annotations

import json
import typing
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from resnet_deploy.checkpoint import REQUIRED, load_state_dict_file
from resnet_deploy.config import ModelConfig
from resnet_deploy.models.torchvision import describe_misfit, fit_state_dict, strip_prefixes
from resnet_deploy.runtime.errors import ResnetDeployError

HEAD = "fc."  # the classifier head's parameter prefix in both families
STEM = "conv1.weight"  # the first convolution's weight in both families: the only tensor that sees the image


@dataclass(frozen=True)
class WeightsReport:
    """Which tensors came from the weights file, which were replaced (the head) and which were not there."""

    path: str
    source: str  # "torchvision state dict" or "resnet-deploy checkpoint (ARCH, N classes)"
    loaded: tuple[str, ...]
    replaced: tuple[str, ...]  # the head, freshly initialised
    head_reason: str  # why the head was replaced ("" when it was loaded)
    missing: tuple[str, ...]  # in the model, not in the file: left at their initialisation (weights_strict=false)
    skipped: tuple[str, ...]  # in the file but unused: not in the model, or of another shape (weights_strict=false)
    adapted: str = ""  # how the first convolution was fitted to another number of input channels ("" when not)

    def summary(self) -> str:
        """One line for the console and metrics.jsonl."""
        head = f"head {', '.join(self.replaced)} replaced ({self.head_reason})" if self.replaced else "head loaded"
        extra = "".join(f"; {label} {len(keys)}: {', '.join(keys[:4])}{' ...' if len(keys) > 4 else ''}"
                        for label, keys in (("missing", self.missing), ("skipped", self.skipped)) if keys)
        adapted = f"; {self.adapted}" if self.adapted else ""
        return f"weights: {len(self.loaded)} tensors loaded from {self.path} ({self.source}){adapted}; {head}{extra}"

    def save(self, path: Path) -> None:
        """Write the whole report as JSON (every tensor name)."""
        path.write_text(json.dumps(asdict(self), indent=2) + "\n")


def _unpack(obj: Any, path: Path, arch: str) -> tuple[Mapping[str, Any], list[str] | None, str]:
    """(state dict, class names when known, description) of a weights file's contents."""
    if isinstance(obj, Mapping) and all(k in obj for k in REQUIRED):
        if obj["arch"] != arch:
            raise ResnetDeployError(f"weights {path} are a {obj['arch']} checkpoint; the recipe's model.arch is "
                                    f"{arch}: set model.arch={obj['arch']} or use weights of {arch}")
        classes = [str(c) for c in obj["classes"]]
        return obj["model"], classes, f"resnet-deploy checkpoint ({obj['arch']}, {len(classes)} classes)"
    if isinstance(obj, Mapping) and obj and all(isinstance(k, str) and isinstance(v, torch.Tensor)
                                                for k, v in obj.items()):
        return obj, None, "torchvision state dict"
    keys = f" with keys {', '.join(map(str, list(obj)[:5]))}" if isinstance(obj, Mapping) and obj else ""
    raise ResnetDeployError(f"weights {path} are neither a state dict (names to tensors) nor a resnet-deploy "
                            f"checkpoint (found a {type(obj).__name__}{keys})")


def _head_reason(model: nn.Module, sd: Mapping[str, Any], classes: Sequence[str], file_classes: list[str] | None,
                 ) -> str:
    """Why the file's head cannot be kept ("" when it can)."""
    own = {k: v for k, v in model.state_dict().items() if k.startswith(HEAD)}
    theirs = {k: sd[k] for k in own if k in sd}
    if len(theirs) < len(own):
        return "the file has no classifier head"
    if any(tuple(theirs[k].shape) != tuple(v.shape) for k, v in own.items()):
        return f"{int(theirs[HEAD + 'weight'].shape[0])} classes in the file, {len(classes)} in the data"
    if file_classes is not None and list(file_classes) != list(classes):
        return "the file's class names differ from the data's"
    return ""


def adapt_input_channels(sd: Mapping[str, Any], model: nn.Module) -> tuple[dict[str, Any], str]:
    """Fit the file's first convolution to the model's number of input channels, as the field does; (state dict,
    what was done, "" when nothing).

    Grey -> RGB: the weights are repeated over the channels and divided by their number, so that a grey image given
    as three equal channels yields the same activations as before. RGB -> grey: the weights are summed over the
    channels, so that an image whose three channels are equal (what a grey image was) yields the same activations.
    Any other pair of channel counts is left to the shape check.
    """
    out = dict(sd)
    theirs, own = out.get(STEM), model.state_dict().get(STEM)
    if not isinstance(theirs, torch.Tensor) or own is None or theirs.ndim != 4 or theirs.shape == own.shape:
        return out, ""
    c_file, c_model = int(theirs.shape[1]), int(own.shape[1])
    if (theirs.shape[0], *theirs.shape[2:]) != (own.shape[0], *own.shape[2:]) or {c_file, c_model} != {1, 3}:
        return out, ""
    if c_file == 1:
        out[STEM] = theirs.repeat(1, c_model, 1, 1) / c_model
        how = f"repeated over the {c_model} channels and divided by {c_model}: a grey image gives the same activations"
    else:
        out[STEM] = theirs.sum(dim=1, keepdim=True)
        how = "summed over the channels: an image of equal channels gives the same activations"
    return out, f"{STEM} adapted from {c_file} to {c_model} input channel(s) ({how})"


def load_weights(model: nn.Module, path: str | Path, arch: str, classes: Sequence[str], strict: bool = True,
                 ) -> WeightsReport:
    """Load a weights file into `model` (built for `classes`), replacing its head when the classes differ.

    Args:
        model: the recipe's freshly initialised network.
        path: a torchvision state dict (`resnet50-*.pth`) or a resnet-deploy checkpoint, read with weights_only.
        arch: the recipe's architecture; a checkpoint of another one is refused by name.
        classes: the data's class names (their number is the model's output count).
        strict: every tensor but the head must be in the file with the model's shape.

    Returns:
        The report of loaded, replaced, missing and skipped tensors.

    Raises:
        ResnetDeployError: an unreadable file, a checkpoint of another architecture, or (strict) tensors that do not
            fit, naming the first one.
    """
    path = Path(path)
    sd, file_classes, source = _unpack(load_state_dict_file(path), path, arch)
    sd, adapted = adapt_input_channels(strip_prefixes(sd), model)
    reason = _head_reason(model, sd, classes, file_classes)
    head = [k for k in model.state_dict() if k.startswith(HEAD)]
    body = {k: v for k, v in sd.items() if not k.startswith(HEAD)}
    fit = fit_state_dict({k: v for k, v in model.state_dict().items() if k not in head}, body)
    if strict and not fit.ok:
        raise ResnetDeployError(f"weights {path} do not fit {arch} ({source}); {describe_misfit(fit)}. Other "
                                "architecture or options? Set model.weights_strict=false to load only what fits")
    keep = list(fit.matched) + ([] if reason else head)
    model.load_state_dict({k: sd[k] for k in keep}, strict=False)
    skipped = [k.split(" ", 1)[0] for k in fit.misshaped] + list(fit.unexpected)
    return WeightsReport(str(path), source, tuple(keep), tuple(head if reason else ()), reason, fit.missing,
                         tuple(skipped), adapted if STEM in keep else "")


# ------------------------------------------------------------------------------------------------------------ freezing
def frozen_modules(model: nn.Module, freeze: str, arch: str) -> list[str]:
    """Names of the top-level modules `model.freeze` fixes, from the input on (conv1, bn1, [maxpool], layer1, ...)."""
    choices = typing.get_args(typing.get_type_hints(ModelConfig)["freeze"])
    if freeze not in choices:
        raise ResnetDeployError(f"model.freeze must be one of {', '.join(choices)}, found {freeze!r}")
    names = [n for n, _ in model.named_children()]
    if freeze == "none":
        return []
    if freeze == "backbone":
        return [n for n in names if n != HEAD[:-1]]
    last = "bn1" if freeze == "stem" else freeze
    if last not in names:
        stages = [n for n in names if n.startswith("layer")]
        raise ResnetDeployError(f"model.freeze {freeze!r}: {arch} has {', '.join(stages)}; choose one of those, "
                                "stem or backbone")
    return names[:names.index(last) + 1]


def freeze(model: nn.Module, names: list[str]) -> int:
    """Stop gradients to the named modules' parameters; returns how many parameters (elements) are frozen."""
    n = 0
    for name in names:
        for p in getattr(model, name).parameters():
            p.requires_grad_(False)
            n += p.numel()
    return n


def train_mode(model: nn.Module, frozen: list[str]) -> nn.Module:
    """`model.train()`, except the frozen modules, whose BN layers keep their running statistics (eval mode)."""
    model.train()
    for name in frozen:
        getattr(model, name).eval()
    return model


def param_groups(model: nn.Module, backbone_lr_mult: float) -> list[dict[str, Any]]:
    """The trainable parameters as optimizer groups, each with the `lr_mult` the loop scales the schedule's lr by.

    One group when the backbone learns at the full rate (the layout of checkpoints written before groups existed).
    """
    trainable = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    if backbone_lr_mult == 1.0:
        return [{"params": [p for _, p in trainable], "lr_mult": 1.0, "name": "all"}]
    groups = [{"params": [p for n, p in trainable if not n.startswith(HEAD)], "lr_mult": backbone_lr_mult,
               "name": "backbone"},
              {"params": [p for n, p in trainable if n.startswith(HEAD)], "lr_mult": 1.0, "name": "head"}]
    return [g for g in groups if g["params"]]
