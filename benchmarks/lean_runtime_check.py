"""The TensorRT lean runtime on a real GPU, without TensorRT installed: what can be checked without building an engine.

    PYTHONPATH=. python3 benchmarks/lean_runtime_check.py --wheels .whl

`--wheels` holds `tensorrt_lean_cu13_libs-*.whl` (~44 MB, the real lean library) and
`tensorrt_lean_cu13_bindings-*-cpXY-*.whl` for the Python that runs this (fetch them with `pip download --no-deps
--only-binary=:all: --python-version 3.12 -d .whl tensorrt-lean-cu13-libs==11.4.0.106
tensorrt-lean-cu13-bindings==11.4.0.106`, 45 MB); they are unpacked into a temporary
folder with the one-line `tensorrt_lean` package NVIDIA's meta-package installs. No engine can be built without the full
TensorRT (over 1 GB), so this checks the runtime's side up to deserialization, on the real library and GPU:

1. `import tensorrt_lean` loads the real libnvinfer_lean and the runtime picks it when `tensorrt` is absent;
   `running_info()` reads the GPU through the real cuda-python.
2. `tensorrt_lean.Runtime(logger)` is created, `engine_host_code_allowed` is set, and a bundle whose engine file is
   not a plan is refused through `Predictor.from_bundle` with the BundleError that says to rebuild it.
3. The CUDA event calls `TrtBackend.device_time_s` makes (create, record on a stream, synchronize, elapsed time,
   destroy) return a time around a 64 MiB device copy.

Prints one JSON object; exits 0 when all three hold, 1 otherwise, 2 when the wheels or the GPU are missing.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import zipfile
from pathlib import Path


def unpack(wheels: Path, site: Path) -> None:
    tag = f"cp{sys.version_info.major}{sys.version_info.minor}"  # the bindings are built per Python version
    found = sorted(wheels.glob("tensorrt_lean_cu*_libs-*.whl"))[-1:] + sorted(
        wheels.glob(f"tensorrt_lean_cu*_bindings-*-{tag}-*.whl"))[-1:]
    if len(found) < 2:
        print(f"lean-runtime-check: {wheels} needs the lean libs wheel and the {tag} bindings wheel; it has "
              f"{sorted(p.name for p in wheels.glob('*.whl'))}")
        raise SystemExit(2)
    for wheel in found:
        with zipfile.ZipFile(wheel) as z:
            z.extractall(site)
    (site / "tensorrt_lean").mkdir()
    (site / "tensorrt_lean" / "__init__.py").write_text("from tensorrt_lean_bindings import *  # noqa\n"
                                                        "from tensorrt_lean_bindings import __version__  # noqa\n")


def refusal_check(work: Path) -> dict:
    from resnet_deploy.runtime import Predictor, ResnetDeployError
    from resnet_deploy.runtime.manifest import FileEntry, Manifest, write_manifest
    from resnet_deploy.runtime.preprocess import Preprocess
    from resnet_deploy.runtime.tensorrt_backend import running_info

    here = running_info()
    (work / "model.fp16.engine").write_bytes(b"not a TensorRT plan")
    info = {k: here[k] for k in ("tensorrt_version", "gpu", "compute_capability")} | {"version_compatible": True}
    files = [FileEntry.for_file(work, "model.fp16.engine", "fp16", "engine", "trt", info)]
    pre = Preprocess(input_size=(8, 8), channels=3, mean=(0.5,) * 3, std=(0.25,) * 3)
    write_manifest(work, Manifest("x", ["a", "b"], pre, files))
    try:
        Predictor.from_bundle(work, backend="trt-fp16", device="cuda")
        message = "loaded (unexpected)"
    except ResnetDeployError as e:
        message = str(e)
    ok = here["runtime"] == "tensorrt_lean" and "could not deserialize model.fp16.engine" in message
    return {"running_info": here, "refusal": message, "ok": ok}


def _check(rt: object, result: tuple) -> object:
    err, *values = result
    if err != rt.cudaError_t.cudaSuccess:
        raise RuntimeError(f"CUDA call failed: {rt.cudaGetErrorName(err)[1]}")
    return values[0] if values else None


def events_check() -> dict:
    """The CUDA event calls TrtBackend makes, with the same arguments, around a device-to-device copy."""
    from cuda.bindings import runtime as rt

    stream = _check(rt, rt.cudaStreamCreate())
    start, end = _check(rt, rt.cudaEventCreate()), _check(rt, rt.cudaEventCreate())
    n = 64 << 20
    a, b = _check(rt, rt.cudaMalloc(n)), _check(rt, rt.cudaMalloc(n))
    _check(rt, rt.cudaEventRecord(start, stream))
    _check(rt, rt.cudaMemcpyAsync(b, a, n, rt.cudaMemcpyKind.cudaMemcpyDeviceToDevice, stream))
    _check(rt, rt.cudaEventRecord(end, stream))
    _check(rt, rt.cudaStreamSynchronize(stream))
    ms = float(_check(rt, rt.cudaEventElapsedTime(start, end)))
    for p in (a, b):
        rt.cudaFree(p)
    for e in (start, end):
        rt.cudaEventDestroy(e)
    rt.cudaStreamDestroy(stream)
    return {"copy_64MiB_ms": ms, "ok": 0 < ms < 1000}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--wheels", type=Path, required=True, help="Folder with the two tensorrt-lean wheels.")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        site = Path(tmp) / "site"
        unpack(args.wheels, site)
        sys.path.insert(0, str(site))
        sys.modules["tensorrt"] = None  # type: ignore[assignment]  # the full runtime is absent, whatever is here
        import tensorrt_lean

        report = {"tensorrt_lean": tensorrt_lean.__version__}
        try:
            report["refusal"] = refusal_check(Path(tmp))
            report["events"] = events_check()
        except Exception as e:  # no GPU or no driver: say so in one line
            print(json.dumps({**report, "error": f"{type(e).__name__}: {e}"}, indent=2))
            return 2
    ok = report["refusal"]["ok"] and report["events"]["ok"]
    print(json.dumps(report, indent=2))
    print("lean-runtime-check:", "PASS" if ok else "FAIL")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
