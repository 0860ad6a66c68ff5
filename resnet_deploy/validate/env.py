"""What a measurement ran on: CPU model and threads, GPU, and the versions of the libraries that did the work.

Versions are read from the installed distributions' metadata (`importlib.metadata`), so recording them imports
neither TensorRT nor CUDA bindings.
"""

from __future__ import annotations

import os
import platform
from typing import Any

from resnet_deploy import __version__
from resnet_deploy.runtime.machine import cpu_model, isa_caps, native_precisions
from resnet_deploy.system import installed_versions, torch_cuda_devices

LIBRARIES = ("numpy", "torch", "torchvision", "onnx", "onnxruntime", "onnxruntime-gpu", "openvino", "tensorrt",
             "cuda-python")


def gpu_name() -> str | None:
    """Name of CUDA device 0 when PyTorch sees one, else None."""
    try:
        devices = torch_cuda_devices()
    except Exception:  # a broken CUDA install must not stop a CPU benchmark
        return None
    return devices[0]["gpu"] if devices else None


def environment(threads: int | None = None) -> dict[str, Any]:
    """JSON-ready description of this machine and its software.

    Args:
        threads: the intra-op thread count the measurement used (None: the libraries' default).
    """

    return {
        "cpu": cpu_model(),
        "cpu_native": {p: list(f) for p, f in native_precisions().items()},
        "isa_caps": isa_caps(),
        "cpu_count": os.cpu_count(),
        "threads": threads,
        "gpu": gpu_name(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "resnet_deploy": __version__,
        "versions": installed_versions(LIBRARIES),
    }
