"""Our CPU backends beside the peer's own best path: OpenVINO with NNCF int8, all timed in one interleaved run.

The peer: the same fp32 ONNX model quantized by OpenVINO's own post-training quantization (NNCF `nncf.quantize`,
default preset, on the SAME calibration images the bundle's int8 model was calibrated on, read back from its manifest),
once as OpenVINO IR (run by OpenVINO) and once as NNCF's QDQ ONNX (run by ONNX Runtime and OpenVINO). OpenVINO fp32
and bf16 on model.onnx are the peer's other figures (our ov-fp32/ov-bf16 backends compile exactly that).

Per model (ResNet-50 with random torchvision-layout weights for latency; the trained demo ResNet-20 for accuracy on
the full Fashion-MNIST test set and latency): every backend x batch {1, 32}, p50 ms and img/s, ratio to PyTorch
eager and to the best peer figure at the same batch, top-1 and its drop from fp32. Needs `nncf` (benchmark only).

    .venv/bin/python benchmarks/bench_openvino.py --r50 R50_BUNDLE --demo DEMO_BUNDLE [--threads 2] [--rounds 4]

Another CPU class on this one: `ONEDNN_MAX_CPU_ISA=AVX2 ... --runtimes openvino` caps OpenVINO's oneDNN kernels at
AVX2 (no VNNI, no AVX-512, no bf16: ov-bf16 is then refused and left out). ONNX Runtime has no such cap (its MLAS
kernels pick the CPU's own instructions), so its rows are left out of such a run: they would be this CPU's, not the
capped class's. `--profile` shows the kernels OpenVINO ran, which says whether the cap took.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import tempfile
from collections.abc import Callable
from pathlib import Path

import numpy as np

from resnet_deploy.runtime import Predictor, available_backends, read_manifest, variants
from resnet_deploy.runtime.onnx_backend import OrtBackend
from resnet_deploy.runtime.openvino_backend import OvBackend
from resnet_deploy.validate import latency
from resnet_deploy.validate.bench import _eager_model, _torch_fn

OURS = ("onnx", "int8", "ov-fp32", "ov-bf16", "ov-int8")
# NNCF's int8 files: name -> (runtime, file made by nncf_models)
NNCF = {"nncf-ov int8 (IR)": ("openvino", "nncf.xml"), "nncf-onnx int8 on ov": ("openvino", "nncf.onnx"),
        "nncf-onnx int8 on ort": ("onnxruntime", "nncf.onnx")}
# The peer's figures: NNCF's int8, and OpenVINO fp32/bf16 and ONNX Runtime fp32 on model.onnx (what our ov-fp32,
# ov-bf16 and onnx backends compile: the same runtime calls on the same file).
PEER = (*NNCF, "ov-fp32", "ov-bf16", "onnx")
PRECISION = {n: variants.get(n).precision for n in OURS}
# A control row, neither ours nor the peer's: the NNCF IR compiled a second time. Two compilations of one file differ
# in memory layout only, so the gap between it and the first is the resolution of every other comparison here.
CONTROL = "nncf-ov int8 (IR), compiled again"


def calibration(bundle: Path, spec: str | None = None) -> np.ndarray:
    """The images the bundle's int8 model was calibrated on (same spec, count and seeded subset as export), or those
    of `spec` where the bundle's data is not at hand."""
    from resnet_deploy.export.source import load_calibration

    m = read_manifest(bundle)
    args = m.export_args
    return load_calibration(spec or args["calib_data"], m.preprocess, int(args["calib_size"]))


def nncf_models(bundle: Path, work: Path, spec: str | None = None) -> dict[str, Path]:
    """NNCF int8 of the bundle's model.onnx: OpenVINO IR (nncf.xml) and QDQ ONNX (nncf.onnx), same calibration."""
    import nncf
    import onnx
    import openvino as ov

    calib = calibration(bundle, spec)
    items = [calib[i:i + 1] for i in range(len(calib))]
    name = read_manifest(bundle).input_name
    with contextlib.redirect_stdout(io.StringIO()):
        q = nncf.quantize(ov.Core().read_model(str(bundle / "model.onnx")), nncf.Dataset(items),
                          subset_size=len(items))
        ov.save_model(q, str(work / "nncf.xml"))
        q_onnx = nncf.quantize(onnx.load(str(bundle / "model.onnx")), nncf.Dataset([{name: x} for x in items]),
                               subset_size=len(items))
        onnx.save(q_onnx, str(work / "nncf.onnx"))
    return {"nncf.xml": work / "nncf.xml", "nncf.onnx": work / "nncf.onnx"}


def runners(bundle: Path, files: dict[str, Path], threads: int,
            runtimes: tuple[str, ...]) -> dict[str, Callable[[np.ndarray], np.ndarray]]:
    """name -> run(batch) for our backends (through Predictor) and the peer's files, on `runtimes` only; a variant
    this machine refuses (ov-bf16 where bf16 would be emulated) is left out, with a line saying why."""
    out: dict[str, Callable[[np.ndarray], np.ndarray]] = {}
    refused = available_backends(bundle)
    for name in OURS:
        if variants.get(name).loader not in runtimes:
            continue
        if refused[name] is not None:
            print(f"left out {name}: {refused[name]}", flush=True)
            continue
        out[name] = Predictor.from_bundle(bundle, backend=name, threads=threads).run
    for name, (runtime, file) in NNCF.items():
        if runtime not in runtimes:
            continue
        # no model cache here: timing is warm anyway
        out[name] = (OvBackend(files[file], threads=threads) if runtime == "openvino"
                     else OrtBackend(files[file], threads=threads)).run
    out[CONTROL] = OvBackend(files["nncf.xml"], threads=threads).run
    return out


def layer_profile(bundle: Path, files: dict[str, Path], threads: int) -> str:
    """OpenVINO's own per-layer timing (PERF_COUNT) of our int8 file and NNCF's IR at batch 1, summed by layer type
    and kernel: where the two graphs differ, if they do."""
    import openvino as ov

    x = np.random.default_rng(0).standard_normal((1, *read_manifest(bundle).input_shape), dtype=np.float32)
    rows: dict[tuple[str, str], dict[str, tuple[float, int]]] = {}
    for label, path in (("ov-int8", bundle / "model.int8.onnx"), ("nncf-ov int8 (IR)", files["nncf.xml"])):
        # the runners' settings (f32 for the float parts: OpenVINO's own default is bf16 on CPUs with AMX, decided
        # by its own CPU test, which an ONEDNN_MAX_CPU_ISA cap does not reach)
        request = ov.Core().compile_model(str(path), "CPU", {"PERFORMANCE_HINT": "LATENCY", "NUM_STREAMS": "1",
                                                             "INFERENCE_NUM_THREADS": str(threads),
                                                             "INFERENCE_PRECISION_HINT": "f32",
                                                             "PERF_COUNT": "YES"}).create_infer_request()
        for _ in range(20):
            request.infer({0: x})
        total: dict[tuple[str, str], list[float]] = {}
        n = 100
        for _ in range(n):
            request.infer({0: x})
            for layer in request.profiling_info:
                if layer.status == layer.Status.EXECUTED:
                    total.setdefault((layer.node_type, layer.exec_type), []).append(layer.real_time.total_seconds())
        for key, times in total.items():
            rows.setdefault(key, {})[label] = (sum(times) / n * 1e6, len(times) // n)
    lines = ["| layer type | kernel | ov-int8 us (layers) | nncf-ov int8 (IR) us (layers) |",
             "| --- | --- | ---: | ---: |"]
    for (node, kernel), got in sorted(rows.items(), key=lambda kv: -max(t for t, _ in kv[1].values())):
        cells = [f"{got[k][0]:.0f} ({got[k][1]})" if k in got else "-" for k in ("ov-int8", "nncf-ov int8 (IR)")]
        lines.append(f"| {node} | {kernel} | {cells[0]} | {cells[1]} |")
    return "OpenVINO's per-layer profile at batch 1 (mean of 100 runs):\n\n" + "\n".join(lines) + "\n"


def accuracy(bundle: Path, run: dict[str, Callable[[np.ndarray], np.ndarray]]) -> dict[str, float]:
    """Top-1 % of every runner on the full Fashion-MNIST test set, preprocessed by the bundle."""
    from resnet_deploy.data import load_eval_arrays

    x, labels, _ = load_eval_arrays("fashion-mnist", read_manifest(bundle).preprocess)
    return {name: float((np.concatenate([fn(x[i:i + 256]) for i in range(0, len(x), 256)]).argmax(1) == labels)
                        .mean() * 100) for name, fn in run.items()}


# pooled statistics per (runner, batch); per batch, (ours / best peer, control / its twin, our QDQ file on OpenVINO /
# NNCF's IR) for each round
Timed = tuple[dict[tuple[str, int], latency.LatencyStats], dict[int, list[tuple[float, float, float]]]]


def timing(bundle: Path, run: dict[str, Callable[[np.ndarray], np.ndarray]], batches: list[int],
           args: argparse.Namespace) -> Timed:
    """p50 etc. of every runner and PyTorch eager, per batch, interleaved in `args.rounds` rounds (samples pooled);
    and per batch and round, (our fastest p50 / the best peer p50, the control's p50 / its twin's) from that same
    round: whether a difference in the pooled figures is larger than what one file compiled twice gives."""
    manifest = read_manifest(bundle)
    model, _ = _eager_model(bundle, manifest, None)
    out, per_round = {}, {}
    rng = np.random.default_rng(0)
    import torch

    torch.set_num_threads(args.threads)
    for b in batches:
        x = rng.standard_normal((b, *manifest.input_shape), dtype=np.float32)
        fns = {"pytorch": _torch_fn(model, x, "cpu")} | {n: (lambda f=fn, x=x: f(x)) for n, fn in run.items()}
        pooled: dict[str, list[float]] = {n: [] for n in fns}
        per_round[b] = []
        for r in range(args.rounds):
            samples = latency.measure_interleaved(fns, warmup_s=args.warmup_s if r == 0 else 0.0,
                                                  duration_s=args.duration_s / args.rounds,
                                                  min_iters=-(-args.min_iters // args.rounds))
            p50 = {n: float(np.median(s.host_s)) for n, s in samples.items()}
            per_round[b].append((min(p50[n] for n in OURS if n in p50) / min(p50[n] for n in PEER if n in p50),
                                 p50[CONTROL] / p50["nncf-ov int8 (IR)"],
                                 p50["ov-int8"] / p50["nncf-ov int8 (IR)"]))
            for n, s in samples.items():
                pooled[n] += s.host_s
        out |= {(n, b): latency.summarize(s, b) for n, s in pooled.items()}
    return out, per_round


def table(title: str, timed: Timed, top1: dict[str, float] | None) -> str:
    """The Markdown table: backend x batch, ms, img/s, x eager, x best peer, top-1 and drop from fp32."""
    stats, per_round = timed
    lines = [f"### {title}", "", "| backend | precision | batch | p50 ms | img/s at p50 | x eager | x best peer "
             "| top-1 % | drop (points) |", "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    ref = (top1 or {}).get("onnx")
    for b in sorted({b for _, b in stats}):
        eager = stats[("pytorch", b)].p50_ms
        peer = min(s.p50_ms for (n, bb), s in stats.items() if bb == b and n in PEER)
        ours = min(s.p50_ms for (n, bb), s in stats.items() if bb == b and n in OURS)
        for (name, _), s in sorted(((k, v) for k, v in stats.items() if k[1] == b), key=lambda kv: kv[1].p50_ms):
            acc = (top1 or {}).get(name)
            lines.append(f"| {name} | {PRECISION.get(name, 'int8' if 'int8' in name else 'fp32')} | {b} | "
                         f"{s.p50_ms:.3f} | {b * 1e3 / s.p50_ms:,.0f} | {s.p50_ms / eager:.3f} | "
                         f"{s.p50_ms / peer:.3f} | "
                         f"{'-' if acc is None else f'{acc:.2f}'} | "
                         f"{'-' if acc is None or ref is None else f'{ref - acc:+.2f}'} |")
        lines.append(f"| **our fastest / best peer, batch {b}** | | | | | | **{ours / peer:.3f}** | | |")
        for what, r in (("our fastest / best peer", sorted(o for o, _, _ in per_round[b])),
                        ("control: NNCF's IR compiled again / first", sorted(c for _, c, _ in per_round[b])),
                        ("ov-int8 (our QDQ) / nncf-ov int8 (IR)", sorted(q for _, _, q in per_round[b]))):
            lines.append(f"| {what}, per round (paired in time), batch {b}: median {np.median(r):.3f}, range "
                         f"{r[0]:.3f}-{r[-1]:.3f} over {len(r)} rounds | | | | | | | | |")
    return "\n".join(lines) + "\n"


COLD = """
import json, sys, time
t0 = time.perf_counter()
import openvino
from resnet_deploy.runtime import Predictor
import numpy as np
t1 = time.perf_counter()
p = Predictor.from_bundle(sys.argv[1], backend=sys.argv[2], threads=int(sys.argv[3]))
p.run(np.zeros((1, *p.manifest.input_shape), np.float32))
t2 = time.perf_counter()
print(json.dumps({"import_ms": (t1 - t0) * 1e3, "cold_ms": (t2 - t1) * 1e3}))
"""


def cold_start(bundle: Path, names: tuple[str, ...], threads: int, repeats: int) -> str:
    """Median cold start of OpenVINO variants in fresh processes (from_bundle + the first batch-1 run, after the
    imports, which are timed apart), without the model cache (its folder unwritable, so the backend runs without one)
    and with it warm (filled by an earlier process)."""
    import json
    import subprocess
    import sys

    got: dict[tuple[str, str], list[float]] = {}
    imports: list[float] = []
    with tempfile.TemporaryDirectory(prefix="ov-cache-") as tmp:
        (Path(tmp) / "file").write_text("")
        for _ in range(repeats):
            for name in names:
                for mode in ("no cache", "warm cache"):
                    cache = Path(tmp) / ("file/off" if mode == "no cache" else "warm")
                    if mode == "warm cache" and not cache.exists():  # fill it once, untimed
                        subprocess.run([sys.executable, "-c", COLD, str(bundle), name, str(threads)], check=True,
                                       capture_output=True, env={**os.environ, "RESNET_DEPLOY_CACHE": str(cache)})
                    out = subprocess.run([sys.executable, "-c", COLD, str(bundle), name, str(threads)], check=True,
                                         capture_output=True, text=True,
                                         env={**os.environ, "RESNET_DEPLOY_CACHE": str(cache)}).stdout
                    times = json.loads(out.strip().splitlines()[-1])
                    got.setdefault((name, mode), []).append(times["cold_ms"])
                    imports.append(times["import_ms"])
    lines = ["| backend | cold start, no cache (ms) | with a warm model cache (ms) | ratio |",
             "| --- | ---: | ---: | ---: |"]
    for name in names:
        a, b = (float(np.median(got[(name, m)])) for m in ("no cache", "warm cache"))
        lines.append(f"| {name} | {a:.0f} | {b:.0f} | {b / a:.2f} |")
    return (f"Cold start (median of {repeats} fresh processes each): `Predictor.from_bundle` + the first batch-1 run; "
            f"the imports before it (openvino, the runtime) took {np.median(imports):.0f} ms more, cache or not.\n\n"
            + "\n".join(lines) + "\n")


def auto_check(bundle: Path, args: argparse.Namespace) -> str:
    """`bench` every CPU variant (which records auto's order), then time `auto`'s choice against each of them in a
    second interleaved run: auto's p50 over the fastest one's."""
    from resnet_deploy.runtime.predictor import present
    from resnet_deploy.validate.bench import bench_bundle, record_fastest

    names = [n for n in present(read_manifest(bundle)) if n in OURS]
    timing_args = {"warmup_s": args.warmup_s, "duration_s": args.duration_s, "rounds": args.rounds}
    first = bench_bundle(bundle, backends=names, batches=[1], threads=args.threads, pytorch=False, **timing_args)
    _, order = record_fastest(bundle, first.to_dict())
    auto = Predictor.from_bundle(bundle, threads=args.threads)
    x = np.random.default_rng(1).standard_normal((1, *auto.manifest.input_shape), dtype=np.float32)
    fns = {"auto": lambda: auto.run(x)}
    for n in names:
        fns[n] = (lambda r=Predictor.from_bundle(bundle, backend=n, threads=args.threads).run: r(x))
    p50 = {k: latency.summarize(v.host_s).p50_ms for k, v in latency.measure_interleaved(
        fns, rounds=args.rounds, warmup_s=args.warmup_s, duration_s=args.duration_s, min_iters=args.min_iters).items()}
    fastest = min((n for n in names), key=p50.get)
    return (f"auto: bench's order {', '.join(order)}; auto chose {auto.backend} ({auto.why}); second run p50: "
            + ", ".join(f"{k} {v:.3f} ms" for k, v in sorted(p50.items(), key=lambda kv: kv[1]))
            + f"; auto / fastest ({fastest}) = {p50['auto'] / p50[fastest]:.3f}\n")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--r50", type=Path, help="a ResNet-50 bundle with model.onnx and model.int8.onnx")
    ap.add_argument("--demo", type=Path, help="the trained Fashion-MNIST ResNet-20 bundle (fp32 + int8)")
    ap.add_argument("--batches", default="1,32")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--warmup-s", type=float, default=1.0)
    ap.add_argument("--duration-s", type=float, default=3.0)
    ap.add_argument("--min-iters", type=int, default=10)
    ap.add_argument("--rounds", type=int, default=4)
    ap.add_argument("--calib-data", help="calibrate NNCF on this data SPEC instead of the bundle's own")
    ap.add_argument("--no-accuracy", action="store_true", help="skip the test-set accuracy (timing only)")
    ap.add_argument("--cold-repeats", type=int, default=5, help="fresh processes per cold-start figure (0: skip)")
    ap.add_argument("--profile", action="store_true", help="also OpenVINO's per-layer profile, ours against NNCF's")
    ap.add_argument("--runtimes", default="onnxruntime,openvino",
                    help="runtimes to time (openvino alone under ONEDNN_MAX_CPU_ISA, which ONNX Runtime ignores)")
    args = ap.parse_args()
    batches = [int(b) for b in args.batches.split(",")]
    from resnet_deploy.runtime import machine

    print(f"CPU {machine.cpu_model()}; native {machine.native_precisions()}; instruction-set caps "
          f"{machine.caps_text(machine.isa_caps()) or 'none'}; load average {os.getloadavg()[0]:.2f}", flush=True)
    with tempfile.TemporaryDirectory(prefix="bench-ov-") as tmp:
        for label, bundle, with_acc in (("demo ResNet-20, Fashion-MNIST 1x28x28", args.demo, True),
                                        ("ResNet-50 224x224, random weights", args.r50, False)):
            if bundle is None:
                continue
            work = Path(tmp) / bundle.name
            work.mkdir()
            files = nncf_models(bundle, work, args.calib_data)
            run = runners(bundle, files, args.threads, tuple(args.runtimes.split(",")))
            top1 = accuracy(bundle, run) if with_acc and not args.no_accuracy else None
            print(table(label, timing(bundle, run, batches, args), top1), flush=True)
            print(f"load average after timing: {os.getloadavg()[0]:.2f}", flush=True)
            if args.profile:
                print(layer_profile(bundle, files, args.threads), flush=True)
            if args.cold_repeats and "openvino" in args.runtimes:
                print(cold_start(bundle, ("ov-fp32", "ov-int8"), args.threads, args.cold_repeats), flush=True)
            if with_acc:
                print(auto_check(bundle, args), flush=True)


if __name__ == "__main__":
    main()
