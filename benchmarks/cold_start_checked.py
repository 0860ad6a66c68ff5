"""Cold start of the ONNX Runtime and OpenVINO backends: the checked-descriptor loaders against the path loaders they
replaced, interleaved in one run.

"before" is the previous loader, kept callable here: hash the file by its path, then hand the library that path
(ONNX Runtime `InferenceSession(path)`; OpenVINO `compile_model(path)` with its own model cache in CACHE_DIR).
"after" is `Predictor.from_bundle` as it is now: the file opened once, hashed through that descriptor, the library
given `/proc/self/fd/N`; OpenVINO's compiled model imported from the private cache after its digest check.

Each figure is the median of fresh processes (a cold start is one per process): `from_bundle` (or the old steps) and
the first batch-1 run, after the imports, which are timed apart. OpenVINO is measured without a cache, with an empty
one (the start compiles and writes it; the new loader writes it in a thread the process waits for at exit, so the
last column, the whole process from start to exit, imports included, shows what that costs) and with a warm one
(filled by an untimed process first).

    .venv/bin/python benchmarks/cold_start_checked.py --bundle R50_BUNDLE [--repeats 7] [--threads 2]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

CHILD = """
import json, sys, time
t0 = time.perf_counter()
import numpy as np, onnxruntime, openvino
from resnet_deploy.runtime import Predictor, read_manifest
from resnet_deploy.runtime.checksum import hash_stream, hasher
from resnet_deploy.runtime.manifest import bundle_path
from resnet_deploy.runtime.predictor import choose_backend
t1 = time.perf_counter()
bundle, name, how, threads, cache = sys.argv[1:6]
threads = int(threads)
if how == "after":
    p = Predictor.from_bundle(bundle, backend=name, threads=threads)
    shape = p.manifest.input_shape
    run = p.run
elif how in ("bytes", "memfd"):  # the other ways tried to give ONNX Runtime the checked content
    import fcntl, mmap, os
    manifest = read_manifest(bundle)
    name, entry, _ = choose_backend(bundle, manifest, name)
    algorithm, digest = entry.checksum
    h = hasher(algorithm)
    fd = os.open(bundle_path(bundle, entry.path), os.O_RDONLY)
    if how == "bytes":  # read once, hash those bytes, build the session from them
        with open(fd, "rb") as f:
            model = f.read()
        h.update(model)
    else:  # copy into a sealed memfd (nobody can change it), hash it, build the session from /proc/self/fd
        size, mfd = os.fstat(fd).st_size, os.memfd_create("model", os.MFD_CLOEXEC | os.MFD_ALLOW_SEALING)
        done = 0
        while done < size:
            done += os.sendfile(mfd, fd, None, size - done)
        fcntl.fcntl(mfd, fcntl.F_ADD_SEALS, fcntl.F_SEAL_WRITE | fcntl.F_SEAL_GROW | fcntl.F_SEAL_SHRINK)
        with mmap.mmap(mfd, size, prot=mmap.PROT_READ) as m:
            h.update(m)
        model = f"/proc/self/fd/{mfd}"
    assert h.hexdigest() == digest
    opts = onnxruntime.SessionOptions()
    opts.intra_op_num_threads, opts.inter_op_num_threads = threads, 1
    session = onnxruntime.InferenceSession(model, opts, providers=["CPUExecutionProvider"])
    shape = manifest.input_shape
    run = lambda x: session.run(None, {manifest.input_name: x})
else:  # the loaders as they were: check the path, then give the library the path
    manifest = read_manifest(bundle)
    name, entry, _ = choose_backend(bundle, manifest, name)
    path = bundle_path(bundle, entry.path)
    algorithm, digest = entry.checksum
    h = hasher(algorithm)
    with open(path, "rb") as f:
        hash_stream(f, [h])
    assert h.hexdigest() == digest
    shape = manifest.input_shape
    if name.startswith("ov-"):
        config = {"PERFORMANCE_HINT": "LATENCY", "NUM_STREAMS": "1", "INFERENCE_PRECISION_HINT": "f32",
                  "INFERENCE_NUM_THREADS": str(threads)}
        if cache != "off":
            config["CACHE_DIR"] = cache
        compiled = openvino.Core().compile_model(str(path), "CPU", config)
        request = compiled.create_infer_request()
        run = lambda x: request.infer({0: x})
    else:
        opts = onnxruntime.SessionOptions()
        opts.intra_op_num_threads, opts.inter_op_num_threads = threads, 1
        session = onnxruntime.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
        run = lambda x: session.run(None, {manifest.input_name: x})
run(np.zeros((1, *shape), np.float32))
t2 = time.perf_counter()
print(json.dumps({"import_ms": (t1 - t0) * 1e3, "cold_ms": (t2 - t1) * 1e3}))
"""


def child(bundle: Path, name: str, how: str, threads: int, cache: str, nowhere: str) -> dict[str, float]:
    """One fresh process; `cache`: a cache folder, or "off" (the new loaders then get `nowhere`, which cannot be
    made a folder, so they run without one)."""
    env = {**os.environ, "RESNET_DEPLOY_CACHE": nowhere if cache == "off" else cache}
    t0 = time.perf_counter()
    out = subprocess.run([sys.executable, "-c", CHILD, str(bundle), name, how, str(threads), cache], check=True,
                         capture_output=True, text=True, env=env).stdout
    # the whole process too: a start that fills the cache finishes writing it before the process ends
    return {**json.loads(out.strip().splitlines()[-1]), "process_ms": (time.perf_counter() - t0) * 1e3}


CACHES = {"off": "none", "fill": "empty (this start fills it)", "warm": "warm"}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--bundle", type=Path, required=True, help="a bundle with model.onnx and model.int8.onnx")
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    # (backend, cache, the loader beside "before"): "after" is this tree's; "bytes" and "memfd" are the other ways
    # tried to give ONNX Runtime the checked content, kept here to show why they were not taken
    cases = [("onnx", "off", "after"), ("onnx", "off", "bytes"), ("onnx", "off", "memfd"), ("int8", "off", "after"),
             ("ov-fp32", "off", "after"), ("ov-fp32", "fill", "after"), ("ov-fp32", "warm", "after"),
             ("ov-int8", "off", "after"), ("ov-int8", "fill", "after"), ("ov-int8", "warm", "after")]
    got: dict[tuple[str, str, str], list[float]] = {}
    whole: dict[tuple[str, str, str], list[float]] = {}
    imports: list[float] = []
    with tempfile.TemporaryDirectory(prefix="cold-") as tmp:
        (Path(tmp) / "file").write_text("")
        nowhere = str(Path(tmp) / "file" / "cache")
        caches = {how: str(Path(tmp) / how) for how in ("before", "after")}
        for how in caches:  # fill each warm cache once, untimed
            for name in ("ov-fp32", "ov-int8"):
                child(args.bundle, name, how, args.threads, caches[how], nowhere)
        for i in range(args.repeats):
            for name, cache, other in cases:
                for how in ("before", other):  # interleaved: the same load on the machine for both
                    # "fill": an empty cache, which this start fills
                    where = "before" if how == "before" else "after"
                    folder = {"warm": caches[where], "off": "off",
                              "fill": str(Path(tmp) / f"fill-{how}-{name}-{i}")}
                    times = child(args.bundle, name, how, args.threads, folder[cache], nowhere)
                    key = (name, cache, other, "before" if how == "before" else "after")
                    got.setdefault(key, []).append(times["cold_ms"])
                    whole.setdefault(key, []).append(times["process_ms"])
                    imports.append(times["import_ms"])
    print(f"Cold start, median of {args.repeats} fresh processes each, {args.threads} threads "
          f"(imports before it: {np.median(imports):.0f} ms, not counted)\n")
    # Three ratios, since other jobs share the machine: of the medians; the median of the ratios of the pairs run
    # back to back (load that drifts between rounds cancels); of the fastest starts (the least disturbed).
    print("| backend | model cache | before: path loaders, median (range) ms | after: checked descriptor | after / "
          "before: medians, paired, fastest | whole process before / after (ms) |")
    print("| --- | --- | ---: | ---: | ---: | ---: |")
    for name, cache, other in cases:
        before, after = (got[(name, cache, other, how)] for how in ("before", "after"))
        b, a = float(np.median(before)), float(np.median(after))
        paired = float(np.median([y / x for x, y in zip(before, after, strict=True)]))
        wb, wa = (float(np.median(whole[(name, cache, other, how)])) for how in ("before", "after"))
        label = name if other == "after" else f"{name}, from {other} (not taken)"
        print(f"| {label} | {CACHES[cache]} | {b:.0f} ({min(before):.0f}-{max(before):.0f}) | "
              f"{a:.0f} ({min(after):.0f}-{max(after):.0f}) | {a / b:.2f}, {paired:.2f}, "
              f"{min(after) / min(before):.2f} | {wb:.0f} / {wa:.0f} |", flush=True)


if __name__ == "__main__":
    main()
