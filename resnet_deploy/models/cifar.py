"""The CIFAR-10 networks of §4.2: 6n+2 layers, a 3x3 stem, three stages of n BasicBlocks with 16/32/64 filters.

Option A (zero-padding) shortcuts everywhere, as the paper; option B/C are available for comparisons.
"""

from __future__ import annotations

import torch
from torch import nn

from resnet_deploy.models.resnet import BasicBlock, conv3x3, init_weights, make_stage

# depth = 6n + 2 (§4.2); the depths of Table 6.
CIFAR_DEPTHS = (20, 32, 44, 56, 110, 1202)


class CifarResNet(nn.Module):
    """6n+2-layer network for 32x32 inputs (§4.2): feature maps 32/16/8, global average pool, fc."""

    def __init__(self, depth: int, num_classes: int = 10, in_channels: int = 3, shortcut: str = "A",
                 residual: bool = True, zero_init_residual: bool = False, stride_in_1x1: bool = False) -> None:
        super().__init__()
        del stride_in_1x1  # BasicBlocks only
        assert (depth - 2) % 6 == 0, f"CIFAR depth must be 6n+2, found {depth}"
        n = (depth - 2) // 6
        self.conv1 = conv3x3(in_channels, 16)
        self.bn1 = nn.BatchNorm2d(16)
        self.relu = nn.ReLU(inplace=True)
        kw = dict(shortcut=shortcut, residual=residual)
        self.layer1, planes = make_stage(BasicBlock, 16, 16, n, 1, **kw)
        self.layer2, planes = make_stage(BasicBlock, planes, 32, n, 2, **kw)
        self.layer3, planes = make_stage(BasicBlock, planes, 64, n, 2, **kw)
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.fc = nn.Linear(planes, num_classes)
        init_weights(self, zero_init_residual)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu(self.bn1(self.conv1(x)))  # (N, 16, H, W)
        x = self.layer3(self.layer2(self.layer1(x)))  # (N, 64, H/4, W/4)
        return self.fc(torch.flatten(self.avgpool(x), 1))  # (N, num_classes)
