"""The roof of the roofline ratio: the fastest dense GEMM this CPU does per precision, measured in a clean subprocess.

A convolutional network cannot run faster than the best matrix multiply on the same cores, so the roof is the best
of several GEMM sizes and libraries (numpy's BLAS, torch, ONNX Runtime's MLAS), not one library at one size: on the
project's machines one 2048^3 numpy matmul ran below what ONNX Runtime's convolutions reach, and ratios read over
100%. The measuring process runs without `OPENBLAS_CORETYPE` and `OPENBLAS_L2_SIZE` (set on these machines, they
make OpenBLAS use the kernels of an older core) and with the benchmark's thread count; the variables stay as they are
in the benchmark's own process.

Per precision: fp32 (numpy, torch, ONNX Runtime MatMul, OpenVINO MatMul), int8 (ONNX Runtime MatMulInteger,
u8 x s8, the VNNI path of its quantized convolutions) and bf16 (torch's bf16 matmul and OpenVINO's MatMul in bf16,
oneDNN's AVX512_BF16/AMX path; torch's alone stayed below what OpenVINO's bf16 convolutions reach). Rows are
compared with the roof of their own precision; int8 and bf16 rows count multiply-adds as fp32 rows do (GOP/s,
"FLOP-equivalent").

    python -m resnet_deploy.validate.ceiling '{"sizes": [512, 1024, 2048], "threads": 2, "duration_s": 0.3}'
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from resnet_deploy.runtime.errors import ResnetDeployError, first_line
from resnet_deploy.runtime.machine import cpu_has_bf16
from resnet_deploy.runtime.onnx_backend import ort_session
from resnet_deploy.runtime.openvino_backend import ov_installed
from resnet_deploy.system import torch_threads
from resnet_deploy.validate.latency import measure_latency, summarize, torch_cuda_timed

# Variables that slow numpy's GEMM on these machines; removed in the measuring process only.
UNSET_ENV = ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")
SIZES = (512, 1024, 2048)


def _ort_matmul(n: int, int8: bool, threads: int | None) -> Callable[[], Any]:
    from onnx import TensorProto, helper

    a_type, b_type, c_type, op = ((TensorProto.UINT8, TensorProto.INT8, TensorProto.INT32, "MatMulInteger") if int8
                                  else (TensorProto.FLOAT, TensorProto.FLOAT, TensorProto.FLOAT, "MatMul"))
    graph = helper.make_graph([helper.make_node(op, ["a", "b"], ["c"])], "gemm",
                              [helper.make_tensor_value_info("a", a_type, [n, n]),
                               helper.make_tensor_value_info("b", b_type, [n, n])],
                              [helper.make_tensor_value_info("c", c_type, [n, n])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    session = ort_session(model.SerializeToString(), name="the GEMM", threads=threads or None)
    rng = np.random.default_rng(0)
    if int8:
        feed = {"a": rng.integers(0, 256, (n, n), dtype=np.uint8), "b": rng.integers(-128, 128, (n, n), dtype=np.int8)}
    else:
        feed = {k: rng.standard_normal((n, n), dtype=np.float32) for k in "ab"}
    return lambda: session.run(None, feed)


def _ov_matmul(n: int, precision: str, threads: int | None) -> Callable[[], Any]:
    """OpenVINO's n x n x n MatMul against a constant (pre-packed, as a layer's weights are) in `precision`."""
    import openvino as ov
    import openvino.opset13 as ops

    rng = np.random.default_rng(0)
    a = ops.parameter([n, n], np.float32, name="a")
    model = ov.Model([ops.matmul(a, ops.constant(rng.standard_normal((n, n), dtype=np.float32)), False, False)], [a])
    config = {"INFERENCE_PRECISION_HINT": precision, "NUM_STREAMS": "1", "PERFORMANCE_HINT": "LATENCY"}
    if threads:
        config["INFERENCE_NUM_THREADS"] = str(threads)
    request = ov.Core().compile_model(model, "CPU", config).create_infer_request()
    x = rng.standard_normal((n, n), dtype=np.float32)
    return lambda: request.infer([x])


def _gemms(n: int, threads: int | None) -> dict[str, dict[str, Callable[[], Any]]]:
    """{precision: {library: one n x n x n multiply}} for this machine."""
    import torch

    rng = np.random.default_rng(0)
    a, b = rng.standard_normal((n, n), dtype=np.float32), rng.standard_normal((n, n), dtype=np.float32)
    ta, tb = torch.from_numpy(a), torch.from_numpy(b)
    out = {"fp32": {"numpy": lambda: a @ b, "torch": lambda: torch.mm(ta, tb),
                    "onnxruntime": _ort_matmul(n, False, threads)},
           "int8": {"onnxruntime": _ort_matmul(n, True, threads)}}
    if cpu_has_bf16()[0]:  # without native bf16, torch emulates it far below the fp32 roof
        ha, hb = ta.bfloat16(), tb.bfloat16()
        out["bf16"] = {"torch": lambda: torch.mm(ha, hb)}
    if ov_installed():  # OpenVINO's oneDNN GEMM: on the project's CPU the fastest bf16 one by far
        out["fp32"]["openvino"] = _ov_matmul(n, "f32", threads)
        if "bf16" in out:
            out["bf16"]["openvino"] = _ov_matmul(n, "bf16", threads)
    return out


def measure_here(sizes: tuple[int, ...] = SIZES, threads: int | None = None, duration_s: float = 0.3
                 ) -> dict[str, dict[str, Any]]:
    """The best GOP/s per precision over `sizes` and libraries, measured in this process.

    Returns:
        {precision: {"gflops", "n", "library", "min_ms", "tried": {"library@n": gflops}}}, from the fastest call.
    """
    import torch

    if threads:
        torch.set_num_threads(threads)
    best: dict[str, dict[str, Any]] = {}
    for n in sizes:
        for precision, libs in _gemms(n, threads).items():
            for lib, fn in libs.items():
                samples = measure_latency(fn, warmup_s=min(0.2, duration_s), duration_s=duration_s, min_iters=2)
                # The fastest call, not the median: a roof is what the cores do undisturbed, and on a shared
                # machine the median of a short run measures the neighbours as much as the GEMM.
                seconds = summarize(samples.host_s).min_ms / 1e3
                gflops = 2 * n**3 / seconds / 1e9
                entry = best.setdefault(precision, {"gflops": 0.0, "tried": {}})
                entry["tried"][f"{lib}@{n}"] = round(gflops, 1)
                if gflops > entry["gflops"]:
                    entry.update(gflops=gflops, n=n, library=lib, min_ms=seconds * 1e3)
    return best


def measure_clean(sizes: tuple[int, ...] = SIZES, threads: int | None = None, duration_s: float = 0.3,
                  timeout_s: float = 300.0) -> dict[str, dict[str, Any]]:
    """`measure_here` in a subprocess without UNSET_ENV and with BLAS threads set to `threads`."""
    env = {k: v for k, v in os.environ.items() if k not in UNSET_ENV}
    if threads:
        env["OPENBLAS_NUM_THREADS"] = env["OMP_NUM_THREADS"] = str(threads)
    root = str(Path(__file__).resolve().parents[2])  # this package's folder, whatever sys.path the caller had
    env["PYTHONPATH"] = os.pathsep.join(filter(None, (root, env.get("PYTHONPATH"))))
    args = json.dumps({"sizes": list(sizes), "threads": threads, "duration_s": duration_s})
    try:
        done = subprocess.run([sys.executable, "-m", "resnet_deploy.validate.ceiling", args], env=env, text=True,
                              capture_output=True, timeout=timeout_s, check=False)
    except subprocess.TimeoutExpired:
        raise ResnetDeployError(f"the GEMM ceiling measurement took over {timeout_s:.0f} s; is the machine "
                                "overloaded?") from None
    lines = done.stdout.strip().splitlines()
    try:
        if done.returncode != 0 or not lines:
            raise ValueError(done.stderr.strip().splitlines()[-1] if done.stderr.strip() else "no output")
        return json.loads(lines[-1])
    except ValueError as e:  # json.JSONDecodeError is a ValueError
        raise ResnetDeployError(f"the GEMM ceiling measurement failed: {first_line(e)[:200]}") from None


def matmul_ceiling(n: int = 2048, *, duration_s: float = 1.0, threads: int | None = None,
                   device: str = "cpu") -> dict[str, Any]:
    """The machine's attainable rate per precision, the roof of the roofline ratio (2 n^3 operations per n^3 GEMM).

    On the CPU: the best of several GEMM sizes up to `n` and of several libraries, per precision (fp32, int8, bf16
    where the CPU has it), measured in a clean subprocess (`measure_clean`). On CUDA: torch.mm at
    n x n x n, timed with CUDA events.

    Returns:
        The fp32 roof as {"gflops", "n", "dtype", "threads", "device", "call_ms", "library"} ("call_ms": the
        fastest call on the CPU, the median one on CUDA), plus "precisions"
        ({precision: {"gflops", "n", "library", ...}}, fp32 included) and "method" (how it was measured).
    """
    import torch

    if device == "cpu":
        sizes = tuple(s for s in SIZES if s < n) + (n,)
        per = measure_clean(sizes, threads, duration_s=max(0.05, duration_s / (2 * len(sizes))))
        fp32 = per["fp32"]
        return {"gflops": fp32["gflops"], "n": fp32["n"], "dtype": "float32", "threads": threads, "device": device,
                "call_ms": fp32["min_ms"], "library": fp32["library"], "precisions": per,
                "method": f"fastest call of GEMM sizes {', '.join(map(str, sizes))} and libraries per precision, in "
                          f"a subprocess without {' and '.join(UNSET_ENV)}"}
    with torch_threads(threads):
        gen = torch.Generator().manual_seed(0)
        a = torch.randn(n, n, generator=gen).to(device)
        b = torch.randn(n, n, generator=gen).to(device)
        samples = measure_latency(torch_cuda_timed(lambda x: torch.mm(x, b), a, device), warmup_s=min(0.5, duration_s),
                                  duration_s=duration_s, min_iters=3)
        seconds = summarize(samples.device_s or samples.host_s).p50_ms / 1e3
        gflops = 2 * n**3 / seconds / 1e9
        return {"gflops": gflops, "n": n, "dtype": "float32", "threads": torch.get_num_threads(), "device": device,
                "call_ms": seconds * 1e3, "library": "torch",
                "precisions": {"fp32": {"gflops": gflops, "n": n, "library": "torch"}},
                "method": f"torch.mm {n}^3 on {device}, CUDA events"}


def roof_for(ceiling: dict[str, Any], precision: str) -> tuple[str, float]:
    """(the roof's precision, its GOP/s) for a row of `precision`: its own roof where measured, else fp32's."""
    per = ceiling.get("precisions") or {}
    if precision in per:
        return precision, float(per[precision]["gflops"])
    return "fp32", float(ceiling["gflops"])


def achieved_gflops(macs_per_image: int, images_per_s: float) -> float:
    """FLOP rate of a model run: two FLOPs per multiply-add, times images per second, in GFLOP/s."""
    return 2 * macs_per_image * images_per_s / 1e9

def main() -> None:
    """Entry of the measuring subprocess: JSON arguments in argv[1], the result as one JSON line on stdout."""
    args = json.loads(sys.argv[1]) if len(sys.argv) > 1 else {}
    print(json.dumps(measure_here(tuple(args.get("sizes", SIZES)), args.get("threads"), args.get("duration_s", 0.3))))


if __name__ == "__main__":
    main()
