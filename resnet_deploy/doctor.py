"""`resnet-deploy doctor`: what this machine can run, and for each missing piece what it enables and how to get it;
the precisions its CPU computes natively, and what `train` (run.amp=auto) and `predict --backend auto` will use.

Every probe is guarded: doctor reports, it never fails (a broken install is a row saying so, not a traceback).
"""

from __future__ import annotations

import importlib
import platform
import sys
from dataclasses import dataclass

from resnet_deploy.console import print_table
from resnet_deploy.runtime import backend, machine, variants
from resnet_deploy.runtime.errors import ResnetDeployError, first_line
from resnet_deploy.runtime.predictor import auto_order
from resnet_deploy.serve.server import find_triton
from resnet_deploy.system import installed_version, torch_cuda_devices


@dataclass(frozen=True)
class Check:
    """One row of the doctor table."""

    component: str
    status: str  # "ok", "missing" or "unusable"
    detail: str
    enables: str
    install: str = ""


def _torch_checks() -> list[Check]:
    try:
        import torch
    except Exception as e:  # a broken torch is reported, not raised
        return [Check("torch", "missing", str(e)[:80], "training, export", "make install")]
    rows = [Check("torch", "ok", torch.__version__, "training, export, the PyTorch reference")]
    cuda = torch.version.cuda
    devices = torch_cuda_devices()
    if devices:
        gpus = ", ".join(f"{d['gpu']} (sm_{d['compute_capability'].replace('.', '')})" for d in devices)
        rows.append(Check("CUDA GPUs", "ok", f"CUDA {cuda}: {gpus}", "GPU training (AMP, DDP/NCCL), TensorRT engines"))
    else:
        why = f"torch built with CUDA {cuda}, but no GPU/driver found" if cuda else "CPU-only torch build"
        rows.append(Check("CUDA GPUs", "missing", why, "GPU training, TensorRT engines",
                          "an NVIDIA GPU with its driver (nvidia-smi must work)"))
    rows.append(_train_precision_check(len(devices)))
    return rows


NAMES = {"int8": "int8 dot product"}  # precision names as doctor lists them


def _cpu_check() -> Check:
    native = machine.native_precisions()
    emulated = [p for p in machine.PRECISIONS if p not in native]
    caps = machine.isa_caps()
    detail = (f"{machine.cpu_model()}; native: " + ", ".join(f"{NAMES.get(p, p)} ({', '.join(f)})" if f else p
                                                             for p, f in native.items())
              + (f"; emulated or slow: {', '.join(emulated)}" if emulated else "")
              + (f"; instruction set capped ({machine.caps_text(caps)}): the libraries run as on an older CPU, and "
                 "these are that CPU's" if caps else ""))
    return Check("CPU", "ok", detail, "the precisions train and auto pick on the CPU")


def _train_precision_check(gpus: int) -> Check:
    try:
        from resnet_deploy.train.precision import LABELS, choose_amp

        parts = []
        for device in ["cpu", *(f"cuda:{i}" for i in range(gpus))]:
            c = choose_amp("auto", device)
            parts.append(f"on {device}: {LABELS[c.amp]} ({c.reason})")
    except Exception as e:  # a broken torch is reported, not raised
        return Check("training precision", "unusable", f"{type(e).__name__}: {str(e)[:60]}", "train")
    return Check("training precision", "ok", "run.amp=auto " + "; ".join(parts),
                 "`resnet-deploy train` (run.amp=auto, the default)")


def _inference_auto_check() -> Check:
    order, why = auto_order("cpu")
    return Check("inference auto", "ok", f"cpu: {', '.join(order)}, the first the bundle has and this machine runs "
                 f"({why}); a bundle's own `bench` record (reports/auto.json) on this machine comes first",
                 "`predict --backend auto`, Predictor.from_bundle(backend='auto')")


def _backend_checks() -> list[Check]:
    """One row per runtime of the variant registry (`backend.LOADERS`), naming the variants it runs."""
    rows = []
    for name, loader in backend.LOADERS.items():
        runs = [v.name for v in variants.variants() if v.loader == name]
        row = _module_check(loader.title, loader.module, "|".join(loader.dists), "backends " + ", ".join(runs),
                            loader.install)
        if name == variants.ORT and row.status == "ok":  # which providers: CUDA needs onnxruntime-gpu
            import onnxruntime as ort

            providers = ", ".join(p.replace("ExecutionProvider", "") for p in ort.get_available_providers())
            row = Check(row.component, row.status, f"{row.detail} ({providers})", row.enables)
        rows.append(row)
    return rows


def _module_check(component: str, module: str, dist: str, enables: str, install: str) -> Check:
    # dist: distribution names separated by "|", the first one installed gives the version
    try:
        importlib.import_module(module)
    except ImportError:
        return Check(component, "missing", "not installed", enables, install)
    except Exception as e:  # installed but broken (e.g. TensorRT without its libraries)
        return Check(component, "unusable", f"{type(e).__name__}: {str(e)[:60]}", enables, install)
    return Check(component, "ok", next(filter(None, map(installed_version, dist.split("|"))), "installed"), enables)


def run_checks() -> list[Check]:
    """Probe the machine; never raises."""
    rows = [Check("Python", "ok", f"{platform.python_version()} ({sys.executable})", "everything"), _cpu_check()]
    rows += _torch_checks()
    rows.append(_module_check("torchvision", "torchvision", "torchvision", "torchvision weights and transforms",
                              "make install"))
    rows.append(_module_check("onnx", "onnx", "onnx", "ONNX export", "pip install onnx"))
    rows += _backend_checks()
    ort_gpu = installed_version("onnxruntime-gpu")
    rows.append(Check("onnxruntime-gpu", "ok" if ort_gpu else "missing", ort_gpu or "not installed",
                      "ONNX Runtime's CUDA provider", "" if ort_gpu else "pip install 'resnet-deploy[gpu]'"))
    rows.append(_module_check("TensorRT lean runtime", "tensorrt_lean", "tensorrt-lean|tensorrt-lean-cu13|"
                              "tensorrt-lean-cu12", "running engines exported with --trt-compat version (no builder)",
                              "pip install 'resnet-deploy[trt-lean]' (~44 MB; needs an NVIDIA GPU)"))
    rows.append(_module_check("cuda-python", "cuda.bindings.runtime", "cuda-python|cuda-bindings",
                              "device buffers for the TensorRT backend", "pip install 'resnet-deploy[trt]'"))
    rows.append(_inference_auto_check())
    rows.append(_serve_check())
    return rows


def _serve_check() -> Check:
    """The server environment (tritonserver from nvidia-pytriton's wheel, with the numpy<2 its Python backend needs)
    and the `serve` extra (tritonclient); find_triton's own reason when the server cannot run."""
    enables = "resnet-deploy serve, loadtest"
    install = "pip install 'resnet-deploy[serve]' && resnet-deploy server-env"
    try:
        binary = find_triton().binary
    except ResnetDeployError as e:
        return Check("serve (tritonserver)", "missing", first_line(e)[:200], enables, install)
    client = installed_version("tritonclient")
    if client is None:
        return Check("serve (tritonserver)", "missing", f"{binary} found; tritonclient is not installed", enables,
                     install)
    return Check("serve (tritonserver)", "ok", f"{binary}; tritonclient {client}", enables)


def print_report(rows: list[Check]) -> None:
    """Render the rows as one table (`console.print_table`: plain lines when not on a terminal)."""
    print_table("resnet-deploy doctor", ("component", "status", "detail", "enables", "to install"),
                [[r.component, r.status, r.detail, r.enables, r.install] for r in rows],
                styles={"status": {"ok": "green", "missing": "yellow", "unusable": "red"}})
