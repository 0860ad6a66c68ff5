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


def write_png(path, width: int, height: int, bit_depth: int = 8, colour_type: int = 2, row: bytes | None = None,
              rows: int | None = None) -> None:
    """A PNG written row by row (memory stays small for any size): `row` repeated (a pattern by default).

    colour_type: 0 grey, 2 RGB, 3 palette, 4 grey + alpha, 6 RGBA. `rows` writes fewer rows than `height` (a
    truncated image). The header is written as given, valid or not, so tests can send any size or depth.
    """
    import struct
    import zlib

    channels = {0: 1, 2: 3, 3: 1, 4: 2, 6: 4}.get(colour_type, 1)
    rows = height if rows is None else rows
    n = (width * channels * bit_depth + 7) // 8 if rows else 0
    if row is None:
        row = bytes((i * 37 + 11) % 256 for i in range(min(n, 4096)))
    line = b"\x00" + (row * (n // max(len(row), 1) + 1))[:n]

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    z = zlib.compressobj(9)
    with open(path, "wb") as f:
        f.write(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, bit_depth,
                                                                   colour_type, 0, 0, 0)))
        if colour_type == 3:
            f.write(chunk(b"PLTE", bytes(range(256)) * 3))
        data = [z.compress(line) for _ in range(rows)]
        f.write(chunk(b"IDAT", b"".join(data) + z.flush()) + chunk(b"IEND", b""))


def tiny_checkpoint(path, classes: list[str], pre, in_channels: int = 3, seed: int = 0):
    """A cifar_resnet20 checkpoint with random BN statistics, written with the project's own writer."""
    from resnet_deploy import models
    from resnet_deploy.checkpoint import save_model

    torch.manual_seed(seed)
    model = randomize_bn(models.build("cifar_resnet20", num_classes=len(classes), in_channels=in_channels), seed)
    return save_model(path, model, "cifar_resnet20", classes, pre, shortcut="A")


def _status_mb(key: str) -> float:
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith(key)) / 1024


def reset_peak_memory() -> float:
    """Reset this process's peak resident memory to its current size; return that size in MB (Linux /proc).

    Peaks are read from /proc (VmHWM), not getrusage: ru_maxrss survives fork + exec, so a child of a big pytest
    process would start with the parent's peak and measure nothing.
    """
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")  # "5": reset the peak RSS (Linux >= 4.0)
    except OSError:
        pass
    return _status_mb("VmRSS:")


def peak_memory_mb() -> float:
    """The peak resident memory of this process in MB since it started or since `reset_peak_memory`."""
    return _status_mb("VmHWM:")
