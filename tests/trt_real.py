"""The real Python bindings of TensorRT 10.x and 11.x (and the CUDA runtime bindings) on a machine without TensorRT.

The bindings are small wheels on PyPI; TensorRT's libraries are not. `prepare(major)` downloads the wheels once into
a cache (`$RESNET_DEPLOY_TRT_CACHE`, default `~/.cache/resnet-deploy/trt-bindings`), unpacks them, adds the two
one-line `tensorrt` / `tensorrt_lean` packages that NVIDIA's meta-packages install, and compiles stub libraries
(`libnvinfer.so.N`, `libnvinfer_plugin.so.N`, `libnvonnxparser.so.N`, `libnvinfer_lean.so.N`) with `cc`, each defining
the nine C entry points the bindings import, all returning 0. With those on LD_LIBRARY_PATH `import tensorrt` works:
every class, enum and method is real, and constructors that need the library raise TypeError.

Two TensorRT versions cannot live in one process, so each runs in its own (`environment(major)` gives its env).
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Bindings:
    """The wheels of one TensorRT major version: its bindings, lean bindings and a matching CUDA runtime binding."""

    version: str
    cuda: str  # the CUDA flavour of the wheels' names: cu12, cu13
    cuda_bindings: str  # pip requirement of cuda-python's runtime bindings for that CUDA

    @property
    def requirements(self) -> list[str]:
        return [f"tensorrt-{self.cuda}-bindings=={self.version}", f"tensorrt-lean-{self.cuda}-bindings=={self.version}",
                self.cuda_bindings]


VERSIONS = {
    "10": Bindings("10.13.0.35", "cu12", "cuda-bindings==12.9.*"),  # JetPack 6 / CUDA 12 generation
    "11": Bindings("11.4.0.106", "cu13", "cuda-bindings==13.0.*"),
}
# The C entry points the bindings import from libnvinfer, libnvinfer_plugin, libnvonnxparser and libnvinfer_lean.
STUB_C = """
void *createInferBuilder_INTERNAL(void *a, int b) { return 0; }
void *createInferRuntime_INTERNAL(void *a, int b) { return 0; }
void *createInferRefitter_INTERNAL(void *a, void *b, int c) { return 0; }
void *createNvOnnxParser_INTERNAL(void *a, void *b, int c) { return 0; }
void *createNvOnnxParserRefitter_INTERNAL(void *a, void *b, int c) { return 0; }
void *getBuilderPluginRegistry(int a) { return 0; }
void *getPluginRegistry(void) { return 0; }
int getNvOnnxParserVersion(void) { return 0; }
int initLibNvInferPlugins(void *a, const char *b) { return 0; }
"""
LIBS = ("nvinfer", "nvinfer_plugin", "nvonnxparser", "nvinfer_lean")
# What `pip install tensorrt-cuXX` / `tensorrt-lean-cuXX` put beside the bindings (their meta-packages' __init__).
SHIMS = {"tensorrt": "tensorrt_bindings", "tensorrt_lean": "tensorrt_lean_bindings"}


class Unavailable(Exception):
    """The real bindings cannot be had here; the message says why (a test skips with it)."""


def cache_root() -> Path:
    default = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "resnet-deploy" / "trt-bindings"
    return Path(os.environ.get("RESNET_DEPLOY_TRT_CACHE", default))


def prepare(major: str) -> Path:
    """The prepared directory of TensorRT `major` (site/ and lib/), made once; Unavailable when it cannot be."""
    b = VERSIONS[major]
    if sys.platform != "linux" or platform.machine() != "x86_64":
        raise Unavailable(f"the TensorRT binding wheels used here are for Linux x86-64, not {sys.platform} "
                          f"{platform.machine()}")
    tag = f"py{sys.version_info.major}{sys.version_info.minor}"
    root = cache_root() / f"trt-{b.version}-{tag}"
    if (root / "READY").is_file():
        return root
    cc = shutil.which("cc")
    if cc is None:
        raise Unavailable("no C compiler (cc) to build the stub libraries the bindings load")
    root.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".{root.name}.", dir=root.parent))
    try:
        _download(b.requirements, work / "wheels")
        _unpack(work / "wheels", work / "site")
        _compile(cc, major, work / "lib")
        (work / "READY").write_text(json.dumps({"requirements": b.requirements}) + "\n")
        try:
            os.replace(work, root)
        except OSError:  # another process prepared it first
            pass
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return root


def _download(requirements: list[str], dest: Path) -> None:
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "--disable-pip-version-check",
           "--timeout", "30", "--retries", "1", "-q", "-d", str(dest), *requirements]
    try:
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    except (OSError, subprocess.TimeoutExpired) as e:
        raise Unavailable(f"pip download of {', '.join(requirements)} failed: {e}") from None
    if p.returncode != 0:
        last = (p.stderr.strip() or p.stdout.strip() or "no output").splitlines()[-1]
        raise Unavailable(f"pip download of {', '.join(requirements)} failed (offline?): {last}")


def _unpack(wheels: Path, site: Path) -> None:
    for wheel in sorted(wheels.glob("*.whl")):
        with zipfile.ZipFile(wheel) as z:
            z.extractall(site)
    for package, bindings in SHIMS.items():
        (site / package).mkdir()
        (site / package / "__init__.py").write_text(f"from {bindings} import *  # noqa\n"
                                                    f"from {bindings} import __version__  # noqa\n")


def _compile(cc: str, major: str, lib: Path) -> None:
    lib.mkdir(parents=True)
    source = lib / "stub.c"
    source.write_text(STUB_C)
    for name in LIBS:
        out = lib / f"lib{name}.so.{major}"
        p = subprocess.run([cc, "-shared", "-fPIC", "-o", str(out), str(source)], capture_output=True, text=True)
        if p.returncode != 0:
            raise Unavailable(f"cc could not build {out.name}: {p.stderr.strip()[-300:]}")


def environment(major: str, repo: Path) -> dict[str, str]:
    """The environment of a process that imports the real bindings of TensorRT `major` (and this checkout)."""
    root = prepare(major)
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(root / "site"), str(repo), env.get("PYTHONPATH")) if p)
    env["LD_LIBRARY_PATH"] = os.pathsep.join(p for p in (str(root / "lib"), env.get("LD_LIBRARY_PATH")) if p)
    env["RESNET_DEPLOY_TRT_MAJOR"] = major
    return env
