"""Small helpers shared by the tests (importable as `helpers`: pytest puts tests/ on sys.path)."""

import torch
from torch import nn


def randomize_bn(model: nn.Module, seed: int) -> nn.Module:
    """Give every BatchNorm non-trivial statistics and affine terms, and return the model in eval mode.

    Fresh BN layers are the identity (mean 0, var 1, weight 1, bias 0): folding or loading them would prove nothing.
    """
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.copy_(torch.randn(m.num_features, generator=g) * 0.2)
                m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
                m.weight.copy_(torch.rand(m.num_features, generator=g) + 0.5)
                m.bias.copy_(torch.randn(m.num_features, generator=g) * 0.2)
    return model.eval()
