"""The one checkpoint format, writer and loader: train/ writes with it, export/ and validate/ read with it.

A checkpoint is a plain dict that `torch.load(..., weights_only=True)` can read (tensors, numbers, strings, lists,
dicts): no pickled classes, so loading a file from elsewhere cannot run code.

Keys: format, arch, model_options ({shortcut, stride_in_1x1, zero_init_residual}), num_classes, in_channels, model
(state dict), classes (list of names), preprocess (`Preprocess.to_dict()`), config (resolved recipe as a dict),
iteration, and for resuming: optimizer, scheduler, scaler, rng, metrics; precision (what `run.amp` trained in here and
why, `train.precision.AmpChoice.to_dict()`).
"""

from __future__ import annotations

import os
import pickle
from pathlib import Path
from typing import Any

import torch
from torch import nn

from resnet_deploy import models
from resnet_deploy.runtime.errors import ResnetDeployError
from resnet_deploy.runtime.files import TEMP_NAME, atomic_write
from resnet_deploy.runtime.preprocess import Preprocess

CHECKPOINT_FORMAT = 1
REQUIRED = ("arch", "model", "num_classes", "in_channels", "classes", "preprocess")


def atomic_save(obj: Any, path: str | Path) -> Path:
    """`torch.save` through `atomic_write` with fsync: a crash leaves the old file whole, and the temporary file's
    name carries the writer's pid for `remove_stale_temps`."""
    return atomic_write(path, lambda f: torch.save(obj, f), fsync=True)


def remove_stale_temps(folder: str | Path) -> list[str]:
    """Delete the temporary files of `atomic_save` calls whose process is gone (killed mid-write); their names."""
    removed = []
    for p in sorted(Path(folder).glob(".*.tmp")):
        m = TEMP_NAME.match(p.name)
        if m and not _alive(int(m.group(1))):
            p.unlink(missing_ok=True)
            removed.append(p.name)
    return removed


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


def save_checkpoint(ckpt: dict[str, Any], path: str | Path) -> Path:
    """Write a checkpoint dict atomically (see the module docstring for its keys)."""
    missing = [k for k in REQUIRED if k not in ckpt]
    assert not missing, f"checkpoint lacks {missing}"
    return atomic_save({"format": CHECKPOINT_FORMAT, **ckpt}, path)


def save_model(path: str | Path, model: nn.Module, arch: str, classes: list[str], preprocess: Preprocess,
               **model_options: Any) -> Path:
    """Write a checkpoint holding only a model (no training state): what export and validate need of one."""
    return save_checkpoint({"arch": arch, "model_options": model_options, "num_classes": len(classes),
                            "in_channels": preprocess.channels, "model": model.state_dict(), "classes": list(classes),
                            "preprocess": preprocess.to_dict(), "config": {}, "iteration": 0}, path)


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """Read a checkpoint with `weights_only=True`; a missing, corrupt or foreign file is a one-line error."""
    path = Path(path)
    if not path.is_file():
        raise ResnetDeployError(f"checkpoint not found: {path}")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises many types for a damaged file (RuntimeError, UnpicklingError, EOFError...)
        raise _load_error("checkpoint", path, e) from None
    if not isinstance(ckpt, dict) or any(k not in ckpt for k in REQUIRED):
        raise ResnetDeployError(f"{path} is not a resnet-deploy checkpoint (expected keys {', '.join(REQUIRED)}); "
                                "for a torchvision state dict use `--arch NAME --weights FILE`")
    return ckpt


def load_state_dict_file(path: str | Path) -> Any:
    """Read a bare state dict (e.g. torchvision's `resnet50-*.pth`) with `weights_only=True`; one-line errors."""
    path = Path(path)
    if not path.is_file():
        raise ResnetDeployError(f"weights file not found: {path}")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # as in load_checkpoint: many exception types for a damaged or foreign file
        raise _load_error("weights", path, e) from None


def _load_error(what: str, path: Path, e: Exception) -> ResnetDeployError:
    """The one-line error for a file torch.load could not read: refused by safe loading, or damaged."""
    lines = [ln.strip() for ln in str(e).splitlines() if ln.strip()]
    first = lines[0] if lines else ""
    if isinstance(e, pickle.UnpicklingError) and first.startswith("Weights only load failed"):
        # torch's first line advises weights_only=False (never taken here); the line naming the object is the news.
        refused = next((ln for ln in lines if "GLOBAL" in ln), None)
        if refused:
            return ResnetDeployError(f"refused {what} {path}: safe loading (weights_only) does not allow the objects "
                                     f"it contains ({refused[:160]}); resnet-deploy never runs pickled code: if you "
                                     "trust the file, re-save its weights with torch.save(model.state_dict(), ...)")
        first = next((ln for ln in lines[1:] if not ln.startswith(("Please file", "Check the documentation"))), "")
    return ResnetDeployError(f"cannot read {what} {path}: not a complete torch.save file "
                             f"({type(e).__name__}: {first[:160]})")


def model_from_checkpoint(ckpt: dict[str, Any]) -> nn.Module:
    """Build the checkpoint's architecture and load its weights; returned in eval mode on the CPU."""
    model = models.build(ckpt["arch"], num_classes=ckpt["num_classes"], in_channels=ckpt["in_channels"],
                         **ckpt.get("model_options", {}))
    models.load_torchvision(model, ckpt["model"])
    return model.eval()


def preprocess_from_checkpoint(ckpt: dict[str, Any]) -> Preprocess:
    """The evaluation preprocessing the checkpoint's model was trained with."""
    return Preprocess.from_dict(ckpt["preprocess"])
