"""The PyTorch reference of a bundle: the model it was exported from, found, verified and run.

`validate` compares every backend with it and `bench` times it beside them. The reference is the checkpoint or
weights file the manifest names (or one the user passes), verified by the manifest's sha256.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from resnet_deploy.runtime.checksum import sha256_file
from resnet_deploy.runtime.errors import BundleError, ResnetDeployError
from resnet_deploy.runtime.manifest import Manifest
from resnet_deploy.system import torch_threads


def reference_model(bundle: str | Path, manifest: Manifest, checkpoint: str | Path | None = None
                    ) -> tuple[Any, dict[str, Any]]:
    """The PyTorch model the bundle was exported from, and {kind, path, note}.

    The path is `checkpoint` when given, else the manifest's `source`. A file whose sha256 differs from the
    manifest's is refused (the bundle was not made from it), and so is a `checkpoint` that is not there: comparing
    the bundle with itself would pass whatever it holds. When the manifest's source is not at hand the model is None
    and the caller falls back to the fp32 ONNX model as the reference (said in the report's note).
    """
    src = manifest.source  # as export writes it: {"kind": "checkpoint" | "torchvision", "path", "sha256"}
    kind = "weights" if src.get("kind") == "torchvision" else "checkpoint"
    named = src.get("path")
    path = Path(checkpoint) if checkpoint else (Path(named) if named else None)
    if path is not None and not path.is_absolute() and not path.is_file():
        path = Path(bundle) / path  # a path relative to the bundle
    if checkpoint and not path.is_file():
        raise ResnetDeployError(f"reference {kind} not found: {checkpoint} (--checkpoint names the file the bundle "
                                "was exported from)")
    if path is None or not path.is_file():
        return None, {"kind": "onnx", "path": None,
                      "note": f"reference is the fp32 ONNX model: the source {kind} {path or '(none named)'} is not "
                              "at hand (pass --checkpoint PATH)"}
    expected = src.get("sha256")
    if expected and sha256_file(path) != expected:
        raise BundleError(f"{path} is not the file this bundle was exported from (its sha256 differs from the "
                          f"manifest's source sha256 {expected[:12]}...); pass the original with --checkpoint")
    return _load_reference(path, kind, manifest), {"kind": kind, "path": str(path), "note": None}


def _load_reference(path: Path, kind: str, manifest: Manifest) -> Any:
    from resnet_deploy import models
    from resnet_deploy.checkpoint import load_checkpoint, load_state_dict_file, model_from_checkpoint

    if kind == "checkpoint":
        return model_from_checkpoint(load_checkpoint(path))
    return models.load_torchvision(architecture(manifest), load_state_dict_file(path)).eval()


def architecture(manifest: Manifest) -> Any:
    """The bundle's network, freshly initialised: torchvision-weights bundles use the family's default structure."""
    from resnet_deploy import models

    return models.build(manifest.arch, num_classes=len(manifest.classes), in_channels=manifest.preprocess.channels)


def torch_logits(model: Any, x: np.ndarray, batch_size: int = 64, threads: int | None = None) -> np.ndarray:
    """Logits of a PyTorch model on float32 NCHW arrays, in batches, without gradients."""
    import torch

    with torch_threads(threads), torch.inference_mode():
        return np.concatenate([model(torch.from_numpy(np.ascontiguousarray(x[i:i + batch_size]))).numpy()
                               for i in range(0, len(x), batch_size)]).astype(np.float32)
