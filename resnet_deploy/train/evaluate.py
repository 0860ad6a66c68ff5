"""`resnet-deploy eval`: top-1/top-5 of a checkpoint on real images, by centre crop or §3.4's 10-crop (softmax scores
averaged over the crops), with the checkpoint's own `Preprocess`."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from resnet_deploy.checkpoint import load_checkpoint, model_from_checkpoint, preprocess_from_checkpoint
from resnet_deploy.data.evaluation import iter_eval_batches
from resnet_deploy.runtime.errors import ResnetDeployError


@torch.no_grad()
def evaluate(checkpoint: str | Path, data_spec: str, ten_crop: bool = False, limit: int | None = None,
             batch_size: int = 250, device: str = "cpu", workers: int = 0, split: str = "test") -> dict[str, Any]:
    """Top-1 and top-5 accuracy of a checkpoint.

    Args:
        checkpoint: a training checkpoint (last.pt, best.pt, ...).
        data_spec: e.g. "fashion-mnist", "cifar10:/data/cifar", "imagenet:/data/imagenet".
        ten_crop: average softmax over 10 crops (needs an ImageNet-style resize + crop preprocessing).
        limit: evaluate the first N images only.

    Returns:
        top1, top5 (fractions), images, crops, classes.
    """
    ckpt = load_checkpoint(checkpoint)
    model = model_from_checkpoint(ckpt).to(device)
    pp = preprocess_from_checkpoint(ckpt)
    classes, n, batches = iter_eval_batches(data_spec, pp, batch_size=batch_size, limit=limit, split=split,
                                            seed=None, crops10=ten_crop, workers=workers)
    if len(classes) != ckpt["num_classes"]:
        raise ResnetDeployError(f"data {data_spec!r} has {len(classes)} classes; the checkpoint's model has "
                                f"{ckpt['num_classes']}")
    top1 = top5 = seen = 0
    for x, y in batches:
        xt = torch.from_numpy(x).to(device)
        if ten_crop:  # (B, 10, C, H, W): score every crop, average the softmax (§3.4)
            b = xt.shape[0]
            probs = model(xt.flatten(0, 1)).softmax(1).view(b, 10, -1).mean(1)
        else:
            probs = model(xt)  # logits: the same ranking as softmax, without its float32 ties
        yt = torch.from_numpy(y).to(device)
        k5 = probs.topk(min(5, probs.shape[1]), 1).indices
        top1 += int((k5[:, 0] == yt).sum())
        top5 += int((k5 == yt[:, None]).any(1).sum())
        seen += len(y)
    if not seen:
        raise ResnetDeployError(f"no images to evaluate in {data_spec!r}")
    return {"top1": top1 / seen, "top5": top5 / seen, "images": seen, "crops": 10 if ten_crop else 1,
            "arch": ckpt["arch"], "checkpoint": str(checkpoint)}


def evaluation_line(r: dict[str, Any], data_spec: str) -> str:
    """The one-line summary `resnet-deploy eval` prints for an `evaluate` result."""
    return (f"{r['arch']} on {data_spec}: top-1 {r['top1']:.2%} (error {1 - r['top1']:.2%}), top-5 {r['top5']:.2%}, "
            f"{r['images']} images, {r['crops']} crop(s)")
