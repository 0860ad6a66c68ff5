"""The C++ SDK against a planted compiled model and a racing renamer, two builds side by side: BEFORE (e.g. main's,
built in a folder of its own) and AFTER (this checkout's build/cpp).

    .venv/bin/python benchmarks/cpp_cache_attacks.py --before build/cpp-before/libresnet_deploy.so [--loads 100]

On the tests' tiny bundle and a copy with the classifier's first two rows swapped (tests/test_cpp_cache.py), each
build in fresh predictors, through the C API alone (what both builds have):

- planted: a cache folder made beforehand by someone else, mode 0777 (owned by uid 4242 when run as root), holding
  the swapped model compiled, at the name the build reads (BEFORE: its bare blob; AFTER: a well-formed entry whose
  digest matches): which logits a load of the right bundle gives;
- link: a link at that name to a file outside the cache, in the build's own cache: is the file written through it;
- race: --loads loads (cache off) while a thread renames the swapped file and the right one over model.onnx in turn:
  how many give the right logits, refuse, or give the swapped model's (WRONG).
"""

from __future__ import annotations

import argparse
import ctypes
import json
import os
import shutil
import sys
import tempfile
import threading
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
from test_cpp_cache import content_id, sdk_binding, sdk_entry, sdk_entry_name, swapped_pair  # noqa: E402

from resnet_deploy.runtime.cache import MAGIC  # noqa: E402


class _Options(ctypes.Structure):
    _fields_ = [("variant", ctypes.c_char_p), ("threads", ctypes.c_int32), ("cache_dir", ctypes.c_char_p)]


class Lib:
    """The few C calls both builds have."""

    def __init__(self, path: Path) -> None:
        self.lib = ctypes.CDLL(str(path))
        self.lib.rd_last_error.restype = ctypes.c_char_p
        self.lib.rd_registry_json.restype = ctypes.c_char_p
        self.lib.rd_predictor_create.argtypes = [ctypes.c_char_p, ctypes.POINTER(_Options),
                                                 ctypes.POINTER(ctypes.c_void_p)]
        self.lib.rd_predictor_run.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_size_t, ctypes.c_size_t,
                                              ctypes.c_void_p, ctypes.c_size_t]
        self.lib.rd_predictor_destroy.argtypes = [ctypes.c_void_p]

    def logits(self, bundle: Path, cache: Path | str, x: np.ndarray) -> np.ndarray | str:
        """The logits of `x`, or the refusal's message."""
        p = ctypes.c_void_p()
        opts = _Options(b"ov-fp32", 1, str(cache).encode())
        if self.lib.rd_predictor_create(str(bundle).encode(), ctypes.byref(opts), ctypes.byref(p)) != 0:
            return self.lib.rd_last_error().decode()
        out = np.empty((len(x), 4), np.float32)
        try:
            if self.lib.rd_predictor_run(p, x.ctypes.data, x.size, len(x), out.ctypes.data, out.size) != 0:
                return self.lib.rd_last_error().decode()
        finally:
            self.lib.rd_predictor_destroy(p)
        return out


def verdict(got: np.ndarray | str, right: np.ndarray) -> str:
    if isinstance(got, str):
        return f"refused ({got[:90]})"
    return "right" if np.allclose(got, right, atol=1e-5) else "WRONG: the swapped model ran"


def planted_entry(lib: Lib, good: Path, bad: Path, x: np.ndarray, tmp: Path) -> tuple[str, bytes]:
    """(the name a build reads for `good`'s content, the swapped model compiled, in the form that build reads)."""
    own = Path(tempfile.mkdtemp(dir=tmp))
    lib.logits(good, own, x)
    lib.logits(bad, own, x)
    (name,) = [p.name for p in (own / "openvino" / content_id(good)).iterdir()]
    blob = next((own / "openvino" / content_id(bad)).iterdir()).read_bytes()
    if not blob.startswith(MAGIC):  # BEFORE: a bare blob, named by the settings alone
        return name, blob
    data = blob[blob.index(b"\n") + 1:]
    import openvino

    binding = sdk_binding(json.loads(lib.lib.rd_registry_json().decode()), content_id(good), openvino.get_version())
    assert sdk_entry_name(binding) == name, "the binding is not the SDK's"
    return name, sdk_entry(binding, data)


def planted(lib: Lib, good: Path, bad: Path, x: np.ndarray, right: np.ndarray, tmp: Path) -> str:
    name, entry = planted_entry(lib, good, bad, x, tmp)
    cache = Path(tempfile.mkdtemp(dir=tmp))
    folder = cache / "openvino" / content_id(good)
    folder.mkdir(parents=True)
    (folder / name).write_bytes(entry)
    for f in (cache, cache / "openvino", folder):
        f.chmod(0o777)
        if os.geteuid() == 0:
            os.chown(f, 4242, 4242)
    return verdict(lib.logits(good, cache, x), right)


def link(lib: Lib, good: Path, x: np.ndarray, tmp: Path) -> str:
    cache = Path(tempfile.mkdtemp(dir=tmp))
    lib.logits(good, cache, x)
    (entry,) = (cache / "openvino" / content_id(good)).iterdir()
    target = tmp / f"outside-{cache.name}.blob"
    entry.unlink()
    entry.symlink_to(target)
    lib.logits(good, cache, x)
    return f"written through the link ({target.stat().st_size} bytes)" if target.exists() else "nothing written"


def race(lib: Lib, good: Path, bad: Path, x: np.ndarray, right: np.ndarray, tmp: Path, loads: int) -> str:
    b = Path(shutil.copytree(good, Path(tempfile.mkdtemp(dir=tmp)) / "b"))
    os.link(b / "model.onnx", b.parent / "good.onnx")
    shutil.copyfile(bad / "model.onnx", b.parent / "bad.onnx")
    stop, renames = threading.Event(), [0]

    def rename() -> None:
        while not stop.is_set():
            for source in ("good.onnx", "bad.onnx"):
                os.link(b.parent / source, b.parent / "next.onnx")
                os.rename(b.parent / "next.onnx", b / "model.onnx")
                (b.parent / "next.onnx").unlink(missing_ok=True)
                renames[0] += 1

    counts = {"right": 0, "refused": 0, "WRONG": 0}
    renamer = threading.Thread(target=rename, daemon=True)
    renamer.start()
    try:
        for _ in range(loads):
            v = verdict(lib.logits(b, "", x), right)
            counts["right" if v == "right" else "refused" if v.startswith("refused") else "WRONG"] += 1
    finally:
        stop.set()
        renamer.join()
    return f"{loads} loads, {renames[0]} renames: {counts['right']} right, {counts['refused']} refused, " \
           f"{counts['WRONG']} WRONG"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--before", type=Path, required=True, help="the library of the build to compare with")
    parser.add_argument("--after", type=Path, default=ROOT / "build" / "cpp" / "libresnet_deploy.so")
    parser.add_argument("--loads", type=int, default=100)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="cpp-attacks-") as t:
        tmp = Path(t)
        good, bad = swapped_pair(tmp)
        x = np.random.default_rng(0).standard_normal((4, 3, 32, 32)).astype(np.float32)
        print("| case | BEFORE | AFTER |\n| --- | --- | --- |")
        libs = {"before": Lib(args.before), "after": Lib(args.after)}
        right = libs["after"].logits(good, "", x)
        rows = {
            "0777 cache folder of another user holding the swapped model": lambda lib: planted(lib, good, bad, x,
                                                                                               right, tmp),
            "a link at the entry's name to a file outside the cache": lambda lib: link(lib, good, x, tmp),
            "a renamer swapping model.onnx during the loads": lambda lib: race(lib, good, bad, x, right, tmp,
                                                                               args.loads),
        }
        for case, run in rows.items():
            print(f"| {case} | {run(libs['before'])} | {run(libs['after'])} |", flush=True)


if __name__ == "__main__":
    main()
