"""The paper's published numbers: He, Zhang, Ren, Sun, "Deep Residual Learning for Image Recognition", arXiv 1512.03385.

One module of constants, each cited to its table, so tests, `info` and the README quote the same figures.
"""

from __future__ import annotations

# Table 1: FLOPs (multiply-adds, x10^9) at 224x224.
IMAGENET_GFLOPS = {18: 1.8, 34: 3.6, 50: 3.8, 101: 7.6, 152: 11.3}

# Tables 2 and 3: top-1 / top-5 error (%), 10-crop testing on ImageNet val. None where the paper gives none.
IMAGENET_ERRORS: dict[str, tuple[float, float | None]] = {
    "plain18": (27.94, None),          # Table 2
    "plain34": (28.54, 10.02),         # Table 2 (top-1), Table 3 (top-5)
    "resnet18": (27.88, None),         # Table 2, option A
    "resnet34-A": (25.03, 7.76),       # Table 3
    "resnet34-B": (24.52, 7.46),       # Table 3
    "resnet34-C": (24.19, 7.40),       # Table 3
    "resnet50": (22.85, 6.71),         # Table 3, option B
    "resnet101": (21.75, 6.05),        # Table 3
    "resnet152": (21.43, 5.71),        # Table 3
}

# Table 6: CIFAR-10 parameters (millions) and test error (%).
CIFAR_PARAMS_M = {20: 0.27, 32: 0.46, 44: 0.66, 56: 0.85, 110: 1.7, 1202: 19.4}
CIFAR_ERRORS = {20: 8.75, 32: 7.51, 44: 7.17, 56: 6.97, 110: 6.43, 1202: 7.93}  # 110: best of 5 (mean 6.61 ± 0.16)

# torchvision's V1 weights (the weights users bring): parameters, GFLOPs (multiply-adds) and single-crop top-1 (%).
TORCHVISION = {
    18: (11_689_512, 1.814, 69.758),
    34: (21_797_672, 3.664, 73.314),
    50: (25_557_032, 4.089, 76.130),
    101: (44_549_160, 7.801, 77.374),
    152: (60_192_808, 11.514, 78.312),
}

# Fashion-MNIST's own benchmark table: test accuracy (%) of ResNet-18.
FASHION_MNIST_RESNET18_ACC = 94.9
