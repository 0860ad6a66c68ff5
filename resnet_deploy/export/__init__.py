"""Export: fold BN, ONNX, FP16, INT8 and FP8 (QDQ), TensorRT engines, written as one bundle (docs/architecture.md).

The names below are imported when first used (PEP 562), so that importing a light part of the package (the options,
the staging directory) does not import torch and onnx: the command line builds its help from `ExportOptions`.
"""

from __future__ import annotations

import importlib
from typing import Any

_WHERE = {
    "export_bundle": "bundle", "check_fold": "fold", "fold_batchnorm": "fold", "check_onnx": "onnx",
    "check_onnx_parity": "onnx", "export_onnx": "onnx", "DEFAULT_OPSET": "options", "ExportOptions": "options",
    "convert_fp16": "quantize", "quantize_fp8": "quantize", "quantize_int8": "quantize",
    "TensorRTUnavailable": "tensorrt", "build_engine": "tensorrt", "parse_batch": "tensorrt", "plan_build": "tensorrt",
}
__all__ = sorted(_WHERE)


def __getattr__(name: str) -> Any:
    if name not in _WHERE:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{_WHERE[name]}"), name)
