"""Export: fold BN, ONNX, FP16, INT8 and FP8 (QDQ), TensorRT engines, written as one bundle (docs/architecture.md)."""

from resnet_deploy.export.bundle import export_bundle
from resnet_deploy.export.fold import check_fold, fold_batchnorm
from resnet_deploy.export.onnx import DEFAULT_OPSET, check_onnx, check_onnx_parity, export_onnx
from resnet_deploy.export.options import ExportOptions
from resnet_deploy.export.quantize import convert_fp16, quantize_fp8, quantize_int8
from resnet_deploy.export.tensorrt import TensorRTUnavailable, build_engine, parse_batch, plan_build

__all__ = ["DEFAULT_OPSET", "ExportOptions", "TensorRTUnavailable", "build_engine", "check_fold", "check_onnx",
           "check_onnx_parity", "convert_fp16", "export_bundle", "export_onnx", "fold_batchnorm", "parse_batch",
           "plan_build", "quantize_fp8", "quantize_int8"]
