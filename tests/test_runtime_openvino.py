"""The OpenVINO backend against ONNX Runtime on the same bundle files: parity per precision, threads, thread safety,
the model cache, and what is refused where (skipped with the reason when the `openvino` extra is not installed)."""

from __future__ import annotations

import dataclasses
import shutil
import threading
from pathlib import Path

import numpy as np
import pytest
from test_runtime import PRE, _build_bundle, _images  # the tiny bundle every runtime test uses

from resnet_deploy.runtime import Predictor, ResnetDeployError, available_backends, machine, variants
from resnet_deploy.runtime import openvino_backend as ovb
from resnet_deploy.runtime.cache import CACHE_ENV
from resnet_deploy.runtime.manifest import FileEntry, read_manifest, write_manifest

needs_ov = pytest.mark.skipif(not ovb.ov_installed(), reason="openvino is not installed (the `openvino` extra)")
needs_bf16 = pytest.mark.skipif(not machine.cpu_has_bf16()[0], reason="this CPU has no native bf16 (avx512_bf16/amx)")

# Largest logit difference from ONNX Runtime, relative to the largest |logit|, per variant (measured on this tiny
# random net: ov-fp32 ~1e-6, ov-bf16 ~7e-3, ov-int8 against ORT's int8 on the same QDQ file: median 2.2e-2, largest
# 3.7e-2 over 40 fresh draws, since the two runtimes requantize between layers with different rounding; its bound is
# twice that largest draw so that fresh inputs do not make the test flaky).
REL_TOL = {"ov-fp32": ("onnx", 1e-5), "ov-bf16": ("onnx", 3e-2), "ov-int8": ("int8", 8e-2)}


@pytest.fixture(scope="module")
def bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _build_bundle(tmp_path_factory.mktemp("ov") / "bundle")


@pytest.fixture(autouse=True)
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv(CACHE_ENV, str(tmp_path / "cache"))  # never the user's cache folder
    return tmp_path / "cache" / "openvino"


@pytest.fixture(scope="module")
def x() -> np.ndarray:
    return np.stack([PRE(im) for im in _images(np.random.default_rng(), 24)])


@needs_ov
@pytest.mark.parametrize("name", ["ov-fp32", pytest.param("ov-bf16", marks=needs_bf16), "ov-int8"])
def test_parity_with_onnxruntime_per_precision(bundle: Path, x: np.ndarray, name: str) -> None:
    ref_name, rel = REL_TOL[name]
    with Predictor.from_bundle(bundle, backend=ref_name, threads=1) as p:
        ref = p.run(x)
    with Predictor.from_bundle(bundle, backend=name, threads=1) as p:
        got = p.run(x)
        assert p.describe()["runtime"] == "openvino"
        assert p.describe()["inference_precision"] == ("bf16" if name == "ov-bf16" else "fp32")
    assert got.shape == ref.shape == (24, 4) and got.dtype == np.float32
    assert np.abs(got - ref).max() <= rel * np.abs(ref).max()
    if name == "ov-fp32":
        np.testing.assert_array_equal(got.argmax(1), ref.argmax(1))


@needs_ov
def test_threads_are_honoured_and_one_run_of_any_batch(bundle: Path, x: np.ndarray) -> None:
    with Predictor.from_bundle(bundle, backend="ov-fp32", threads=1) as p:
        compiled = p._backend().compiled
        assert compiled.get_property("INFERENCE_NUM_THREADS") == 1
        assert str(compiled.get_property("INFERENCE_PRECISION_HINT")) in ("f32", "<Type: 'float32'>")
        one = p.run(x[:1])
        np.testing.assert_allclose(p.run(x[:5])[:1], one, rtol=0, atol=1e-5)  # dynamic batch axis


@needs_ov
def test_concurrent_runs_from_threads_give_the_serial_results(bundle: Path, x: np.ndarray) -> None:
    with Predictor.from_bundle(bundle, backend="ov-int8", threads=1) as p:
        want = [p.run(x[i::4]) for i in range(4)]
        got: dict[int, np.ndarray] = {}

        def work(i: int) -> None:
            for _ in range(5):
                got[i] = p.run(x[i::4])

        threads = [threading.Thread(target=work, args=(i,)) for i in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    for i in range(4):
        np.testing.assert_array_equal(got[i], want[i])


@needs_ov
def test_model_cache_is_written_then_reused(bundle: Path, x: np.ndarray, cache: Path) -> None:
    fp32 = read_manifest(bundle).file("model.onnx")
    with Predictor.from_bundle(bundle, backend="ov-fp32", threads=1) as p:
        first = p.run(x)
        assert p.describe()["cache"] == str(cache / f"blake3-{fp32.blake3}")  # a folder per file content
    blobs = sorted(cache.rglob("*.blob"))
    assert len(blobs) == 1 and blobs[0].stat().st_size > 1000
    stamp = blobs[0].stat().st_mtime_ns
    with Predictor.from_bundle(bundle, backend="ov-fp32", threads=1) as p:  # loaded from the blob
        np.testing.assert_array_equal(p.run(x), first)
    assert sorted(cache.rglob("*.blob")) == blobs and blobs[0].stat().st_mtime_ns == stamp
    with Predictor.from_bundle(bundle, backend="ov-int8", threads=1):
        pass
    assert len(list(cache.rglob("*.blob"))) == 2  # another file is another entry
    if machine.cpu_has_bf16()[0]:  # the same file in bf16 shares the fp32 entry, and still runs in bf16
        with Predictor.from_bundle(bundle, backend="ov-bf16", threads=1) as p:
            cached = p.run(x)
        uncached = ovb.OvBackend(bundle / "model.onnx", threads=1, precision="bf16", cache=None).run(x)
        np.testing.assert_array_equal(cached, uncached)
        assert np.abs(cached - first).max() > 0


@needs_ov
def test_a_model_replaced_at_the_same_path_is_not_served_from_the_old_blob(bundle: Path, x: np.ndarray,
                                                                          tmp_path: Path) -> None:
    # OpenVINO's own cache key is the path and the settings: a bundle exported again into the same folder (same
    # architecture, so the same file size) must still run the new weights.
    import onnx
    from onnx import numpy_helper

    copy = tmp_path / "bundle"
    shutil.copytree(bundle, copy)
    with Predictor.from_bundle(copy, backend="ov-fp32", threads=1) as p:
        old = p.run(x)
    model = onnx.load(str(copy / "model.onnx"))
    gemm = next(n for n in model.graph.node if n.op_type == "Gemm")  # the classifier
    fc = next(t for t in model.graph.initializer if t.name == gemm.input[1])
    fc.CopyFrom(numpy_helper.from_array(-numpy_helper.to_array(fc), fc.name))
    onnx.save(model, str(copy / "model.onnx"))
    manifest = read_manifest(copy)
    entry = FileEntry.for_file(copy, "model.onnx", "fp32", info=manifest.file("model.onnx").info)
    assert entry.size == manifest.file("model.onnx").size  # same size: only the content tells them apart
    write_manifest(copy, dataclasses.replace(manifest, files=[entry if f.path == "model.onnx" else f
                                                              for f in manifest.files]))
    with Predictor.from_bundle(copy, backend="ov-fp32", threads=1) as p:
        new = p.run(x)
    with Predictor.from_bundle(copy, backend="onnx", threads=1) as p:
        want = p.run(x)
    np.testing.assert_allclose(new, want, rtol=0, atol=1e-4 * np.abs(want).max())
    assert np.abs(new - old).max() > 0.1 * np.abs(old).max()


@needs_ov
def test_unwritable_cache_runs_without_it(bundle: Path, x: np.ndarray, tmp_path: Path,
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "file").write_text("not a folder")
    monkeypatch.setenv(CACHE_ENV, str(tmp_path / "file"))
    with Predictor.from_bundle(bundle, backend="ov-fp32", threads=1) as p:
        assert p.describe()["cache"] == "off"
        assert p.run(x[:2]).shape == (2, 4)


@needs_ov
def test_closed_backend_is_an_error(bundle: Path, x: np.ndarray) -> None:
    p = Predictor.from_bundle(bundle, backend="ov-fp32", threads=1)
    p.close()
    with pytest.raises(ResnetDeployError, match="this Predictor is closed"):
        p.run(x)
    backend = ovb.OvBackend(bundle / "model.onnx", threads=1)
    backend.close()
    with pytest.raises(ResnetDeployError, match="this OpenVINO backend is closed"):
        backend.run(x)


@needs_ov
def test_a_broken_file_and_a_bad_precision_are_one_line_errors(bundle: Path, tmp_path: Path) -> None:
    (tmp_path / "bad.onnx").write_bytes(b"\x08\x01garbage")
    with pytest.raises(ResnetDeployError, match=r"^OpenVINO could not compile bad.onnx: "):
        ovb.OvBackend(tmp_path / "bad.onnx")
    with pytest.raises(ResnetDeployError, match="unknown OpenVINO inference precision 'fp8'; choose one of: fp32"):
        ovb.OvBackend(bundle / "model.onnx", precision="fp8")


def test_refusals_say_why(bundle: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    reasons = available_backends(bundle, device="cuda")
    assert reasons["ov-fp32"] == "the ov-fp32 model runs on cpu only; on cuda use onnx or trt-fp32"
    monkeypatch.setattr(machine, "cpu_flags", lambda: {"avx2", "avx512f"})
    if ovb.ov_installed():
        assert available_backends(bundle)["ov-bf16"].startswith("CPU lacks bf16 instructions (avx512_bf16, amx_bf16)")
        assert available_backends(bundle)["ov-fp32"] is None

    def missing() -> None:
        raise ResnetDeployError("openvino is not installed")

    monkeypatch.setattr(ovb, "_import_ov", missing)
    assert available_backends(bundle)["ov-int8"] == "openvino is not installed (pip install 'resnet-deploy[openvino]')"
    with pytest.raises(ResnetDeployError, match="backend 'ov-fp32' cannot run on device=cpu: openvino is not inst"):
        Predictor.from_bundle(bundle, backend="ov-fp32")


def test_registry_rows_run_the_bundles_onnx_files() -> None:
    assert variants.get("ov-fp32").key == variants.get("onnx").key
    assert variants.get("ov-bf16").key == variants.get("onnx").key
    assert variants.get("ov-int8").key == variants.get("int8").key
    assert variants.get("ov-bf16").gate == variants.GATES["bf16"]
    assert "bf16" not in variants.precisions()  # nothing to export: OpenVINO converts model.onnx when it compiles
    assert [v.name for v in variants.ranked("cpu")][:4] == ["int8", "ov-int8", "onnx", "ov-bf16"]
    assert not any(v.loader == "openvino" for v in variants.ranked("cuda"))


SIGNAL_AFTER_TWO = """
import gc, os, signal, sys
import numpy as np
from resnet_deploy.runtime import Predictor

x = np.zeros((1, 3, 32, 32), np.float32)
first = Predictor.from_bundle(sys.argv[1], backend="ov-fp32", threads=1)
second = Predictor.from_bundle(sys.argv[1], backend="ov-int8", threads=1)
for p in (first, second):  # closed in the order they were made, not the reverse
    p.run(x)
    p.close()
del first, second, p
gc.collect()
got = []
signal.signal(signal.SIGUSR1, lambda *_: got.append(1))  # Python's handlers run on the alternate signal stack
os.kill(os.getpid(), signal.SIGUSR1)
print("handled" if got else "not handled")
"""


@needs_ov
def test_a_signal_after_two_models_closed_out_of_order_is_handled(bundle: Path, tmp_path: Path) -> None:
    # in a process of its own: the failure this guards against is a segmentation fault (a freed signal stack)
    import os
    import subprocess
    import sys

    root = Path(__file__).resolve().parents[1]
    r = subprocess.run([sys.executable, "-X", "faulthandler", "-c", SIGNAL_AFTER_TWO, str(bundle)],
                       capture_output=True, text=True, timeout=300,
                       env={**os.environ, "PYTHONPATH": str(root), CACHE_ENV: str(tmp_path / "cache")})
    assert (r.returncode, r.stdout.strip()) == (0, "handled"), r.stderr[-2000:]
