"""Property-based fuzzing (hypothesis) of the two things a device receives: bundles and images.

- Random mutations of a valid manifest (types, values, paths) and of the bundle's files (links in and out of it):
  loading and predicting either works or raises ResnetDeployError, and no file outside the bundle is ever opened.
- Random image headers (sizes, modes, bit depths, formats, flipped bytes): preprocessing either works or raises
  ResnetDeployError, and across all examples peak memory stays under 256 MB above the baseline (measured in a fresh
  process, where the high-water mark means something).

Example counts are bounded so that both tests take a few seconds on two cores.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pytest
from helpers import peak_memory_mb, reset_peak_memory, tiny_checkpoint, write_png
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from resnet_deploy.runtime import Predictor, ResnetDeployError, read_manifest, verify_files
from resnet_deploy.runtime.manifest import unlisted_files
from resnet_deploy.runtime.preprocess import Preprocess

ROOT = Path(__file__).resolve().parent.parent
CLASSES = ["ant", "bee", "cat", "dog"]
PRE = Preprocess(input_size=(32, 32), channels=3, resize=36, crop=32, mean=(0.49, 0.48, 0.45), std=(0.25, 0.24, 0.26))
PATHS = ["/etc/passwd", "../secret.onnx", "..", ".", "sub/../model.onnx", "link_out", "link_in", "dir_out/x",
         "model.onnx", "config.yaml", "a\\b", "~", "nul\x00", "x" * 300, "manifest.json", "reports/validate.json"]
_OPENED: list[str] = []


def _audit(event: str, args: tuple) -> None:
    if event == "open" and isinstance(args[0], (str, bytes, os.PathLike)):
        _OPENED.append(os.fsdecode(args[0]))


sys.addaudithook(_audit)  # records every open() from Python code (hashing, json, PIL) in this process

JSON = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**63) | st.floats() | st.text(max_size=12)
    | st.sampled_from(PATHS),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner, max_size=3),
    max_leaves=10)


@pytest.fixture(scope="module")
def made(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from resnet_deploy.export import ExportOptions, export_bundle

    root = tmp_path_factory.mktemp("fuzz")
    return export_bundle(root / "bundle", ExportOptions(batch=(1, 2, 4)),
                         checkpoint=tiny_checkpoint(root / "tiny.pt", CLASSES, PRE))


def _mutate(data: st.DataObject, doc: dict) -> None:
    """Replace or delete one value somewhere in `doc`, chosen by walking down from the top at random."""
    node, key = doc, None
    while True:
        keys = list(node) if isinstance(node, dict) else list(range(len(node)))
        if not keys:
            break
        key = data.draw(st.sampled_from(keys))
        child = node[key]
        if not isinstance(child, (dict, list)) or not child or data.draw(st.booleans()):
            break
        node = child
    if key is None:
        return
    if isinstance(node, dict) and data.draw(st.integers(0, 5)) == 0:
        del node[key]
    else:
        node[key] = data.draw(JSON)


@settings(max_examples=40, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_mutated_bundles_never_traceback_or_read_outside(made: Path, data: st.DataObject) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        secret = Path(tmp) / "secret.onnx"
        secret.write_bytes((made / "model.onnx").read_bytes())  # a valid model: only the path check can stop it
        (Path(tmp) / "outside").mkdir()
        bundle = Path(shutil.copytree(made, Path(tmp) / "bundle"))
        (bundle / "link_out").symlink_to(secret)
        (bundle / "link_in").symlink_to("model.onnx")
        (bundle / "dir_out").symlink_to(Path(tmp) / "outside")
        if data.draw(st.booleans()):
            (bundle / "model.onnx").unlink()
            (bundle / "model.onnx").symlink_to(data.draw(st.sampled_from([str(secret), "../secret.onnx", "link_out"])))
        doc = json.loads((bundle / "manifest.json").read_text())
        for _ in range(data.draw(st.integers(1, 3))):
            _mutate(data, doc)
        (bundle / "manifest.json").write_text(json.dumps(doc))
        _OPENED.clear()
        try:
            manifest = read_manifest(bundle)
            verify_files(bundle, manifest)
            unlisted_files(bundle, manifest)
            with Predictor.from_bundle(bundle, backend="onnx", threads=1) as p:
                p.predict(np.random.default_rng().integers(0, 256, (40, 36, 3), dtype=np.uint8))
        except ResnetDeployError:
            pass
        outside = [p for p in _OPENED if Path(p).resolve().is_relative_to(Path(tmp).resolve())
                   and not Path(p).resolve().is_relative_to(bundle.resolve())]
        assert outside == []


# ------------------------------------------------------------------------------------------------- image headers
MODES = ["1", "L", "P", "RGB", "RGBA", "CMYK", "LA", "PA", "I", "I;16", "F", "YCbCr", "LAB", "HSV"]
FORMATS = ["PNG", "JPEG", "BMP", "GIF", "TIFF", "WEBP", "PPM", "EPS", "ICO", "TGA"]
SIZES = st.one_of(st.integers(1, 64), st.integers(0, 70_000),
                  st.sampled_from([0, 1, 6000, 65_535, 65_536, 2**31 - 1, 2**32 - 1]))
# PNG's valid (colour type, bit depth) pairs, and some invalid ones
DEPTHS = [(0, 1), (0, 2), (0, 4), (0, 8), (0, 16), (2, 8), (2, 16), (3, 1), (3, 4), (3, 8), (4, 8), (4, 16), (6, 8),
          (6, 16), (2, 4), (3, 16), (5, 8), (0, 3)]


def _png(draw: st.DrawFn) -> bytes:
    w, h = draw(SIZES), draw(SIZES)
    colour, depth = draw(st.sampled_from(DEPTHS))
    row_bytes = (w * 4 * depth + 7) // 8
    # whole images when small; otherwise truncated after a few rows (the header still claims the full size)
    rows = h if h <= 64 and row_bytes <= 4096 else (draw(st.integers(0, min(h, 4))) if row_bytes <= 1 << 16 else 0)
    buf = io.BytesIO()
    with tempfile.NamedTemporaryFile(suffix=".png") as f:
        write_png(f.name, w, h, depth, colour, row=draw(st.binary(min_size=1, max_size=64)), rows=rows)
        buf.write(Path(f.name).read_bytes())
    return buf.getvalue()


def _pil_saved(draw: st.DrawFn) -> bytes:
    mode, fmt = draw(st.sampled_from(MODES)), draw(st.sampled_from(FORMATS))
    size = (draw(st.integers(1, 48)), draw(st.integers(1, 48)))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    im = Image.frombytes(mode, size, rng.bytes(len(Image.new(mode, size).tobytes())))
    buf = io.BytesIO()
    try:
        im.save(buf, format=fmt)
    except (OSError, ValueError, KeyError, TypeError):
        return _png(draw)  # PIL cannot write this mode in this format: fall back to a raw PNG header
    return buf.getvalue()


@st.composite
def image_files(draw: st.DrawFn) -> bytes:
    raw = bytearray(_png(draw) if draw(st.booleans()) else _pil_saved(draw))
    flip = st.tuples(st.integers(0, 63), st.integers(0, 255))
    flips = draw(st.lists(flip, max_size=3)) if draw(st.booleans()) else []
    for pos, value in flips:
        if pos < len(raw):
            raw[pos] = value  # flip header bytes: sizes, depths, chunk lengths, CRCs
    return bytes(raw)


SPECS = [Preprocess(input_size=(224, 224), channels=3, resize=256, crop=224, mean=(0.5,) * 3, std=(0.25,) * 3),
         Preprocess(input_size=(28, 28), channels=1, mean=(0.3,), std=(0.35,)),
         Preprocess(input_size=(32, 32), channels=3, resize=36, mean=(0.5,) * 3, std=(0.25,) * 3)]


@settings(max_examples=300, deadline=None, database=None, suppress_health_check=list(HealthCheck))
@given(raw=image_files(), spec=st.sampled_from(SPECS))
def fuzz_image_headers(raw: bytes, spec: Preprocess) -> None:
    """Run in a fresh process by the test below (not collected by pytest: no test_ prefix)."""
    with tempfile.NamedTemporaryFile(suffix=".img") as f:
        f.write(raw)
        f.flush()
        try:
            x = spec(f.name)
        except ResnetDeployError:
            return
        assert x.shape == (spec.channels, *spec.input_size) and x.dtype == np.float32


def measure_image_fuzz() -> float:
    """Warm up, then fuzz; the peak resident memory above the warmed-up baseline in MB."""
    for spec in SPECS:
        spec(np.full((300, 300, 3), 7, np.uint8))
    base = reset_peak_memory()
    fuzz_image_headers()
    return peak_memory_mb() - base


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="reads peak memory from Linux /proc")
def test_image_headers_never_traceback_or_exceed_the_memory_bound() -> None:
    code = "import test_fuzz; print(test_fuzz.measure_image_fuzz())"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "tests"), str(ROOT)])}
    r = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert float(r.stdout.strip().splitlines()[-1]) < 256
