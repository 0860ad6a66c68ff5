"""Stage 1: fold batch normalisation into the preceding convolutions (inference only).

At inference BN is an affine map per channel, so it can be merged into the convolution before it: W' = W * g / s,
b' = (b - mu) * g / s + beta (Ioffe & Szegedy 2015, §3.1; the paper puts BN right after every convolution, §3.4).
torch does this with `torch.fx.experimental.optimization.fuse`, which traces the network, finds each Conv -> BN pair
in the graph (so the shortcut projection `downsample = Sequential(conv1x1, BN)` folds as well) and merges them with
`torch.nn.utils.fusion.fuse_conv_bn_eval`. It works on a deep copy: the original model is untouched.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.fx.experimental.optimization import fuse

from resnet_deploy.runtime.errors import ResnetDeployError

_BATCHNORMS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)


def count_batchnorms(model: nn.Module) -> int:
    """Number of BatchNorm modules left in `model`."""
    return sum(isinstance(m, _BATCHNORMS) for m in model.modules())


def fold_batchnorm(model: nn.Module) -> nn.Module:
    """Return a copy of `model` in eval mode with every Conv -> BatchNorm pair folded into one Conv.

    Raises:
        ResnetDeployError: a BatchNorm could not be folded (it does not directly follow a convolution whose output
            only it reads), so the exported graph would not be BN-free.
    """
    was_training = model.training
    model.eval()  # fuse_conv_bn_eval folds the running statistics, which only eval mode uses
    try:
        folded = fuse(model, inplace=False)
    finally:
        model.train(was_training)
    left = count_batchnorms(folded)
    if left:
        raise ResnetDeployError(f"{left} BatchNorm layer(s) could not be folded into a convolution; expected every BN "
                                "to follow a Conv2d directly (is this a ResNet of this package?)")
    return folded.eval()


@torch.no_grad()
def check_fold(model: nn.Module, folded: nn.Module, input_shape: tuple[int, int, int], batch: int = 4,
               atol: float = 1e-4, rtol: float = 1e-5, seed: int | None = None) -> tuple[float, float]:
    """Max abs difference of the logits of `model` and `folded` on fresh random inputs (N, C, H, W).

    The bound is `atol` (1e-4, fp32 rounding over a deep network), raised to `rtol * max|logit|` for networks whose
    logits are in the hundreds (deep nets with random weights), where fp32 rounding alone exceeds 1e-4.

    Returns:
        (difference, bound).

    Raises:
        ResnetDeployError: the difference exceeds the bound (the fold changed what the network computes).
    """
    gen = torch.Generator()  # a local generator: the caller's global torch seed stays untouched
    if seed is None:
        gen.seed()
    else:
        gen.manual_seed(seed)
    x = torch.randn(batch, *input_shape, generator=gen)  # (N, C, H, W)
    was_training = model.training
    model.eval()
    try:
        ref = model(x)
        diff = (ref - folded(x)).abs().max().item()
    finally:
        model.train(was_training)
    bound = max(atol, rtol * ref.abs().max().item())
    if not diff <= bound:
        raise ResnetDeployError(f"folded model's logits differ from the original by {diff:.3g} (max abs); "
                                f"expected <= {bound:.3g}")
    return diff, bound
