"""The ImageNet ResNets and plain baselines of He et al. (2015), Table 1, with shortcut options A/B/C (§3.3).

Module names follow torchvision's `resnet.py` (conv1, bn1, layer1..4, downsample, fc) so its state dicts load as they
are. A block is "plain" when `residual=False`: the same stack of layers without the shortcut (§4.1, plain networks).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

SHORTCUTS = ("A", "B", "C")


def conv3x3(in_planes: int, out_planes: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(in_planes, out_planes, kernel_size=3, stride=stride, padding=1, bias=False)


def conv1x1(in_planes: int, out_planes: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(in_planes, out_planes, kernel_size=1, stride=stride, bias=False)


class PadShortcut(nn.Module):
    """Option A (§3.3): identity with extra zero channels, subsampled by the stride; parameter-free."""

    def __init__(self, in_planes: int, out_planes: int, stride: int) -> None:
        super().__init__()
        self.extra = out_planes - in_planes
        self.stride = stride
        assert self.extra >= 0, f"option A cannot shrink channels ({in_planes} -> {out_planes})"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.stride > 1:
            x = x[:, :, :: self.stride, :: self.stride]  # (N, C, H/s, W/s)
        return F.pad(x, (0, 0, 0, 0, 0, self.extra)) if self.extra else x


def make_shortcut(shortcut: str, in_planes: int, out_planes: int, stride: int) -> nn.Module | None:
    """The shortcut of one block: None means identity (option A/B with equal shapes)."""
    changes = stride != 1 or in_planes != out_planes
    if shortcut == "C" or (shortcut == "B" and changes):
        return nn.Sequential(conv1x1(in_planes, out_planes, stride), nn.BatchNorm2d(out_planes))
    if shortcut == "A" and changes:
        return PadShortcut(in_planes, out_planes, stride)
    return None


class BasicBlock(nn.Module):
    """Two 3x3 convolutions (Fig. 5 left); BN after every convolution, before the ReLU (§3.4)."""

    expansion = 1

    def __init__(self, in_planes: int, planes: int, stride: int = 1, shortcut: str = "B", residual: bool = True,
                 stride_in_1x1: bool = False) -> None:
        super().__init__()
        del stride_in_1x1  # only the bottleneck has a 1x1 to put the stride on
        out = planes * self.expansion
        self.conv1 = conv3x3(in_planes, planes, stride)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = conv3x3(planes, out)
        self.bn2 = nn.BatchNorm2d(out)
        self.relu = nn.ReLU(inplace=True)
        self.residual = residual
        self.downsample = make_shortcut(shortcut, in_planes, out, stride) if residual else None

    def last_bn(self) -> nn.BatchNorm2d:
        return self.bn2

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        if self.residual:
            out = out + (x if self.downsample is None else self.downsample(x))
        return self.relu(out)


class Bottleneck(nn.Module):
    """1x1 reduce, 3x3, 1x1 restore (Fig. 5 right).

    The paper puts the stride on the first 1x1 (`stride_in_1x1=True`); torchvision's "ResNet v1.5" puts it on the 3x3
    (the default here, so torchvision's weights load), which is about 0.5 points more accurate and slightly slower.
    """

    expansion = 4

    def __init__(self, in_planes: int, planes: int, stride: int = 1, shortcut: str = "B", residual: bool = True,
                 stride_in_1x1: bool = False) -> None:
        super().__init__()
        out = planes * self.expansion
        s1, s3 = (stride, 1) if stride_in_1x1 else (1, stride)
        self.conv1 = conv1x1(in_planes, planes, s1)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = conv3x3(planes, planes, s3)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = conv1x1(planes, out)
        self.bn3 = nn.BatchNorm2d(out)
        self.relu = nn.ReLU(inplace=True)
        self.residual = residual
        self.downsample = make_shortcut(shortcut, in_planes, out, stride) if residual else None

    def last_bn(self) -> nn.BatchNorm2d:
        return self.bn3

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        if self.residual:
            out = out + (x if self.downsample is None else self.downsample(x))
        return self.relu(out)


Block = type[BasicBlock] | type[Bottleneck]

# Table 1: block type and the number of blocks in conv2_x..conv5_x.
IMAGENET_DEPTHS: dict[int, tuple[Block, tuple[int, int, int, int]]] = {
    18: (BasicBlock, (2, 2, 2, 2)),
    34: (BasicBlock, (3, 4, 6, 3)),
    50: (Bottleneck, (3, 4, 6, 3)),
    101: (Bottleneck, (3, 4, 23, 3)),
    152: (Bottleneck, (3, 8, 36, 3)),
}


def init_weights(model: nn.Module, zero_init_residual: bool) -> None:
    """He initialisation (§3.4, [13]) for convolutions; BN starts as identity.

    `zero_init_residual` (not in the paper; Goyal et al. 2017) zeroes the last BN of each block.
    """
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
    if zero_init_residual:
        for m in model.modules():
            if isinstance(m, (BasicBlock, Bottleneck)):
                nn.init.zeros_(m.last_bn().weight)


def make_stage(block: Block, in_planes: int, planes: int, blocks: int, stride: int, **kw) -> tuple[nn.Sequential, int]:
    """One stage (conv2_x ... conv5_x): the first block changes stride/width, the rest keep it."""
    layers = []
    for i in range(blocks):
        layers.append(block(in_planes, planes, stride if i == 0 else 1, **kw))
        in_planes = planes * block.expansion
    return nn.Sequential(*layers), in_planes


class ResNet(nn.Module):
    """ImageNet ResNet (Table 1): 7x7/2 stem, 3x3/2 max pool, four stages, global average pool, fc."""

    def __init__(self, depth: int, num_classes: int = 1000, in_channels: int = 3, shortcut: str = "B",
                 residual: bool = True, stride_in_1x1: bool = False, zero_init_residual: bool = False) -> None:
        super().__init__()
        block, counts = IMAGENET_DEPTHS[depth]
        self.conv1 = nn.Conv2d(in_channels, 64, kernel_size=7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        kw = dict(shortcut=shortcut, residual=residual, stride_in_1x1=stride_in_1x1)
        planes = 64
        self.layer1, planes = make_stage(block, planes, 64, counts[0], 1, **kw)
        self.layer2, planes = make_stage(block, planes, 128, counts[1], 2, **kw)
        self.layer3, planes = make_stage(block, planes, 256, counts[2], 2, **kw)
        self.layer4, planes = make_stage(block, planes, 512, counts[3], 2, **kw)
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.fc = nn.Linear(planes, num_classes)
        init_weights(self, zero_init_residual)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))  # (N, 64, H/4, W/4)
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))  # (N, 512*expansion, H/32, W/32)
        return self.fc(torch.flatten(self.avgpool(x), 1))  # (N, num_classes)


