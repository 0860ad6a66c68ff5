"""The paper's training augmentations, done on whole batches in torch (on the GPU when training there).

§4.2 (CIFAR): 4 pixels padded on each side, a random 32x32 crop, a random horizontal flip. §3.4 (ImageNet): shorter
side random in [256, 480], random 224 crop, flip (torchvision transforms in DataLoader workers), then AlexNet's PCA
lighting and the per-pixel mean (here, batch-wise on the device).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from resnet_deploy.runtime.preprocess import Preprocess

# AlexNet's PCA lighting (Krizhevsky et al. 2012, §4.1): ImageNet RGB eigenvalues/eigenvectors, as used by
# fb.resnet.torch, the reference code of the paper's authors' follow-up work.
PCA_EIGVAL = (0.2175, 0.0188, 0.0045)
PCA_EIGVEC = ((-0.5675, 0.7192, 0.4009), (-0.5808, -0.0045, -0.8140), (-0.5836, -0.6948, 0.4203))


class Normalizer:
    """`Preprocess.normalize` in torch, for training batches on the device: (x / 255 - mean) / std in float32.

    The mean image and std come from the Preprocess itself, so training and evaluation share one definition; a test
    checks this against `Preprocess.normalize`.
    """

    def __init__(self, preprocess: Preprocess, device: torch.device | str = "cpu") -> None:
        mean = torch.tensor(preprocess.mean, dtype=torch.float32)
        self.mean = (mean[:, None, None] if mean.ndim == 1 else mean).to(device)  # (C, 1, 1) or (C, H, W)
        self.std = torch.tensor(preprocess.std, dtype=torch.float32)[:, None, None].to(device)

    def __call__(self, x_uint8: torch.Tensor, lighting: torch.Tensor | None = None) -> torch.Tensor:
        x = x_uint8.float() / 255.0  # (N, C, H, W)
        if lighting is not None:
            x = x + lighting[:, :, None, None]
        return (x - self.mean) / self.std


def random_crop_flip(x: torch.Tensor, pad: int, generator: torch.Generator) -> torch.Tensor:
    """Zero-pad `pad` pixels each side, take a random crop of the original size, flip half the images (§4.2).

    Padding is applied to the normalised batch, so pad pixels are the mean image (zero), as in fb.resnet.torch.
    One gather for the whole batch: the flip is folded into the column indices.
    """
    if pad == 0:
        return x
    n, c, h, w = x.shape
    dev = x.device
    xp = F.pad(x, (pad, pad, pad, pad))  # (N, C, H + 2p, W + 2p)
    oy = torch.randint(0, 2 * pad + 1, (n,), generator=generator, device=dev)
    ox = torch.randint(0, 2 * pad + 1, (n,), generator=generator, device=dev)
    flip = torch.rand(n, generator=generator, device=dev) < 0.5
    rows = oy[:, None] + torch.arange(h, device=dev)  # (N, H)
    cols = ox[:, None] + torch.arange(w, device=dev)  # (N, W)
    cols = torch.where(flip[:, None], cols.flip(1), cols)
    out = xp.permute(0, 2, 3, 1)[torch.arange(n, device=dev)[:, None, None], rows[:, :, None], cols[:, None, :]]
    return out.permute(0, 3, 1, 2).contiguous()  # (N, C, H, W)


def pca_lighting(n: int, std: float, generator: torch.Generator, device: torch.device | str) -> torch.Tensor:
    """Per-image RGB offsets (N, 3) of AlexNet's PCA colour augmentation, alpha ~ N(0, std)."""
    alpha = torch.randn(n, 3, generator=generator, device=device) * std
    eigval = torch.tensor(PCA_EIGVAL, device=device)
    eigvec = torch.tensor(PCA_EIGVEC, device=device)
    return (alpha * eigval) @ eigvec.T  # (N, 3): sum_j eigvec[c, j] * alpha_j * eigval_j


def scale_transform(input_size: int, scale: tuple[int, int]):
    """§3.4 on PIL images in DataLoader workers: shorter side random in [lo, hi], random crop, flip -> uint8 CHW."""
    from torchvision.transforms import v2

    lo, hi = scale
    return v2.Compose([v2.RandomShortestSize(min_size=list(range(lo, hi + 1))), v2.RandomCrop(input_size),
                       v2.RandomHorizontalFlip(), v2.PILToTensor()])


def default_scale(input_size: int) -> tuple[int, int]:
    """§3.4's [256, 480] for a 224 crop, scaled to other crop sizes."""
    return round(256 * input_size / 224), round(480 * input_size / 224)
