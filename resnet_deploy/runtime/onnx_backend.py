"""ONNX Runtime backend: one `InferenceSession` per model file, shared by every thread.

`onnxruntime` is imported inside functions so that an edge app with only TensorRT installed can still import the
runtime. `InferenceSession.run` may be called from several threads at once (ONNX Runtime docs, "Thread safety"), so
this backend needs no lock.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from resnet_deploy.runtime.errors import BundleError, ResnetDeployError, first_line

CPU_EP = "CPUExecutionProvider"
CUDA_EP = "CUDAExecutionProvider"

# `graph_optimization` values -> ONNX Runtime's GraphOptimizationLevel member names. "basic" is for FP8 Q/DQ models:
# one of ORT's extended-level rewrites drops the Relu in front of an FP8 QuantizeLinear, as if the Q clamped negative
# values like an unsigned int8 Q with zero point 0 (seen with onnxruntime 1.32: relative logit error 1.9 instead of
# 0.08 on a ResNet-20); INT8 models are not affected.
GRAPH_OPTIMIZATION = {"basic": "ORT_ENABLE_BASIC", "extended": "ORT_ENABLE_EXTENDED", "all": "ORT_ENABLE_ALL"}


def _import_ort() -> Any:
    try:
        import onnxruntime
    except ImportError:
        raise ResnetDeployError("onnxruntime is not installed; install it with `pip install onnxruntime` "
                                "(or onnxruntime-gpu for CUDA)") from None
    return onnxruntime


def ort_installed() -> bool:
    """True when onnxruntime can be imported."""
    try:
        _import_ort()
    except ResnetDeployError:
        return False
    return True


def ort_has_cuda() -> bool:
    """True when the installed onnxruntime build offers the CUDA execution provider (onnxruntime-gpu)."""
    return ort_installed() and CUDA_EP in _import_ort().get_available_providers()


def ort_session(model: str | Path | bytes, *, name: str = "the model", device: str = "cpu",
                threads: int | None = None, graph_optimization: str = "all") -> Any:
    """An `onnxruntime.InferenceSession` of `model` (a path or bytes), the one way the package builds one.

    Args:
        name: names the model in messages.
        device: "cpu", or "cuda" with onnxruntime-gpu (an error where the CUDA provider is absent or fails).
        threads: intra-op threads (None: ONNX Runtime's default, one per core).
        graph_optimization: a key of GRAPH_OPTIMIZATION.
    """
    ort = _import_ort()
    if graph_optimization not in GRAPH_OPTIMIZATION:
        raise ResnetDeployError(f"unknown graph_optimization {graph_optimization!r}; choose one of: "
                                f"{', '.join(GRAPH_OPTIMIZATION)}")
    opts = ort.SessionOptions()
    opts.graph_optimization_level = getattr(ort.GraphOptimizationLevel, GRAPH_OPTIMIZATION[graph_optimization])
    if threads is not None:
        opts.intra_op_num_threads = int(threads)
        opts.inter_op_num_threads = 1  # a ResNet graph is a chain: parallelism lives inside each op
    providers = [CUDA_EP, CPU_EP] if device == "cuda" else [CPU_EP]
    if device == "cuda" and CUDA_EP not in ort.get_available_providers():
        raise ResnetDeployError("device='cuda' needs onnxruntime-gpu (this onnxruntime offers "
                                f"{', '.join(ort.get_available_providers())}); install it or use device='cpu'")
    try:
        session = ort.InferenceSession(model if isinstance(model, bytes) else str(model), sess_options=opts,
                                       providers=providers)
    except Exception as e:  # ORT raises its own pybind exception types (InvalidProtobuf, Fail, ...)
        raise BundleError(f"ONNX Runtime could not load {name}: {first_line(e)}") from None
    if device == "cuda" and CUDA_EP not in session.get_providers():
        # ORT falls back to the CPU silently when the CUDA libraries are missing; say so instead.
        raise ResnetDeployError("ONNX Runtime could not start its CUDA provider (CUDA/cuDNN libraries missing?); "
                                "see onnxruntime's log above, or use device='cpu'")
    return session


class OrtBackend:
    """Runs one ONNX file with ONNX Runtime on the CPU or, with onnxruntime-gpu, on a CUDA GPU (a `Backend`)."""

    max_batch: int | None = None  # ONNX Runtime takes any batch the graph's dynamic axis allows

    def __init__(self, model: str | Path | bytes, *, name: str | None = None, device: str = "cpu",
                 threads: int | None = None, input_name: str = "input", output_name: str = "logits",
                 graph_optimization: str = "all") -> None:
        """`model`: an ONNX file's path (from a loader, `/proc/self/fd/N` of the checked file) or bytes; `name`
        names it in messages (default: the path's file name)."""
        ort = _import_ort()
        name = name or (Path(model).name if not isinstance(model, bytes) else "the model")
        self.session = ort_session(model, name=name, device=device, threads=threads,
                                   graph_optimization=graph_optimization)
        names = {i.name for i in self.session.get_inputs()}
        if input_name not in names:
            raise BundleError(f"{name} has inputs {sorted(names)}; the manifest expects {input_name!r}")
        self.input_name, self.output_name = input_name, output_name
        self._version = ort.__version__

    def run(self, batch: np.ndarray) -> np.ndarray:
        """float32 (N, C, H, W) -> float32 logits (N, K)."""
        try:
            (out,) = self.session.run([self.output_name], {self.input_name: batch})
        except Exception as e:
            raise ResnetDeployError(f"ONNX Runtime failed on a batch of shape {batch.shape}: "
                                    f"{first_line(e)}") from None
        return np.asarray(out, dtype=np.float32)

    def device_time_s(self) -> float | None:
        """ONNX Runtime does not report device time per run."""
        return None

    def describe(self) -> dict[str, str]:
        """The runtime, its version and the execution providers in use."""
        providers = ", ".join(self.session.get_providers())
        return {"runtime": "onnxruntime", "version": self._version, "providers": providers}

    def close(self) -> None:
        """Drop the session (ORT frees its memory when the last reference goes)."""
        self.session = None
