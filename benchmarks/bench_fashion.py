"""Fashion-MNIST ResNet-20 (1x28x28), batch 1: PyTorch eager fp32 vs ONNX Runtime fp32, side by side.

Target: ONNX fp32 p50 <= 0.25x eager. Give the trained demo model's bundle; without one, an untrained
ResNet-20 is exported (latency does not depend on the weights' values).

    .venv/bin/python benchmarks/bench_fashion.py [BUNDLE] [--duration-s 3] [--threads 2] [--rounds 5]
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from bench_resnet50 import parse_args, run  # noqa: E402  (benchmarks/ is a folder of scripts, not a package)

from resnet_deploy import models  # noqa: E402
from resnet_deploy.checkpoint import save_model  # noqa: E402
from resnet_deploy.runtime.preprocess import Preprocess  # noqa: E402

TARGETS = {"onnx": 0.25}
CLASSES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"]


def make_bundle(out: Path) -> Path:
    """Export an untrained 1-channel ResNet-20 at 28x28 (fp32 ONNX only)."""
    from resnet_deploy.export import export_bundle

    torch.manual_seed(0)
    model = models.build("cifar_resnet20", num_classes=10, in_channels=1)
    pp = Preprocess(input_size=(28, 28), channels=1, mean=(0.286,), std=(0.353,))
    ckpt = save_model(out.parent / "untrained.pt", model, "cifar_resnet20", CLASSES, pp, shortcut="A")
    return Path(export_bundle(out, checkpoint=ckpt, force=True))


def main() -> None:
    args = parse_args(__doc__, "onnx", "the Fashion-MNIST ResNet-20 bundle", positional=True)
    run(args, args.bundle or make_bundle(Path(tempfile.mkdtemp(prefix="bench_fmnist_")) / "bundle"), TARGETS)


if __name__ == "__main__":
    main()
