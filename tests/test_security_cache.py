"""Loaders and the OpenVINO model cache as a trust boundary: what runs is what the manifest lists, whatever is renamed
over a bundle file while it loads, written into it in place, or planted in the cache beforehand.

Classes: a racing renamer and an in-place writer against the ONNX Runtime and OpenVINO loaders (every load runs the
checked model or is refused); planted cache entries (a folder of another user or open to everyone, an entry with
swapped classifier rows, a link at the entry's name or in place of the folder), refused without following a link or
writing outside the cache. OpenVINO tests skip with the reason where the `openvino` extra is not installed; the
tests that hand a folder to another user need root.
"""

from __future__ import annotations

import os
import shutil
import threading
import warnings
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import numpy_helper
from test_runtime import PRE, _build_bundle, _images

from resnet_deploy.runtime import BundleError, Predictor, read_manifest
from resnet_deploy.runtime import openvino_backend as ovb
from resnet_deploy.runtime.cache import CACHE_ENV, MAGIC

needs_ov = pytest.mark.skipif(not ovb.ov_installed(), reason="openvino is not installed (the `openvino` extra)")
needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="handing a folder to another user (chown) needs root")
OTHER_UID = 54321  # a user that owns nothing here


@pytest.fixture(scope="module")
def made(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A tiny bundle, and beside it model.onnx with two classifier rows swapped: same size, another answer."""
    root = tmp_path_factory.mktemp("trust")
    bundle = _build_bundle(root / "bundle")
    model = onnx.load(str(bundle / "model.onnx"))
    gemm = next(n for n in model.graph.node if n.op_type == "Gemm")
    for name in gemm.input[1:3]:  # the classifier's weight and bias: classes 0 and 1 trade places
        t = next(t for t in model.graph.initializer if t.name == name)
        a = numpy_helper.to_array(t).copy()
        a[[0, 1]] = a[[1, 0]]
        t.CopyFrom(numpy_helper.from_array(a, name))
    onnx.save(model, str(root / "swapped.onnx"))
    assert (root / "swapped.onnx").stat().st_size == (bundle / "model.onnx").stat().st_size
    return {"bundle": bundle, "swapped": root / "swapped.onnx"}


@pytest.fixture
def bundle(made: dict[str, Path], tmp_path: Path) -> Path:
    return Path(shutil.copytree(made["bundle"], tmp_path / "bundle"))


@pytest.fixture(autouse=True)
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv(CACHE_ENV, str(tmp_path / "cache"))  # never the user's cache
    return tmp_path / "cache"


@pytest.fixture(scope="module")
def x() -> np.ndarray:
    return np.stack([PRE(im) for im in _images(np.random.default_rng(), 12)])


def _good(bundle: Path, x: np.ndarray) -> np.ndarray:
    with Predictor.from_bundle(bundle, backend="onnx", threads=1) as p:
        return p.run(x)


def _same(got: np.ndarray, want: np.ndarray) -> bool:
    return bool(np.abs(got - want).max() <= 1e-4 * np.abs(want).max())


# --------------------------------------------------------------------------------------- 4. swap after the check
@pytest.mark.parametrize("backend, loads, pause_s", [("onnx", 60, 0.06),
                                                    pytest.param("ov-fp32", 16, 0.5, marks=needs_ov)])
def test_a_racing_renamer_never_gets_its_model_run(made: dict[str, Path], bundle: Path, tmp_path: Path,
                                                   x: np.ndarray, backend: str, loads: int, pause_s: float) -> None:
    good = _good(bundle, x)
    sources = {"good": tmp_path / "good.onnx", "swapped": tmp_path / "swapped.onnx"}
    shutil.copyfile(bundle / "model.onnx", sources["good"])
    shutil.copyfile(made["swapped"], sources["swapped"])
    stop, swaps = threading.Event(), [0]
    rng = np.random.default_rng()

    def renamer() -> None:
        # bursts of renames of the good and the swapped file over model.onnx, a millisecond apart, then a pause on
        # either (up to about a load's time): loads meet every moment of the race, and some find the good file left
        # alone
        while not stop.is_set():
            for _ in range(int(rng.integers(2, 12))):
                which = "swapped" if swaps[0] % 2 == 0 else "good"
                os.link(sources[which], bundle / ".next")
                os.replace(bundle / ".next", bundle / "model.onnx")
                swaps[0] += 1
                stop.wait(0.001)
            stop.wait(float(rng.uniform(0, pause_s)))

    outcomes = []
    thread = threading.Thread(target=renamer, daemon=True)
    thread.start()
    try:
        for _ in range(loads):
            try:
                with Predictor.from_bundle(bundle, backend=backend, threads=1) as p:
                    outcomes.append("good" if _same(p.run(x), good) else "WRONG MODEL")
            except BundleError as e:
                assert any(why in str(e) for why in ("does not match the manifest", "was changed while it was loaded",
                                                     "is missing from")), e
                outcomes.append("refused: " + str(e)[:60])
    finally:
        stop.set()
        thread.join(timeout=10)
    # every load ran the checked model or was refused; how many of each depends on the timing (a load during which
    # the file was renamed over is refused too: its link count, and so its change time, moved)
    assert "WRONG MODEL" not in outcomes and len(outcomes) == loads and swaps[0] > 0, (swaps, outcomes)
    # and nothing that ran the swapped file was kept: with the good file back, every load (from the cache, for
    # OpenVINO) gives the good answer
    shutil.copyfile(sources["good"], bundle / ".fresh")
    os.replace(bundle / ".fresh", bundle / "model.onnx")
    for _ in range(2):
        with Predictor.from_bundle(bundle, backend=backend, threads=1) as p:
            assert _same(p.run(x), good)


@pytest.mark.parametrize("backend", ["onnx", pytest.param("ov-fp32", marks=needs_ov)])
def test_the_library_reads_the_checked_file_not_the_one_renamed_over_it(made: dict[str, Path], bundle: Path,
                                                                         x: np.ndarray, backend: str) -> None:
    from resnet_deploy.runtime.onnx_backend import OrtBackend
    from resnet_deploy.runtime.verified import VerifiedFile

    good = _good(bundle, x)
    file = VerifiedFile(bundle, read_manifest(bundle).file("model.onnx"))
    with pytest.raises(BundleError) as e:
        with file.opened() as path:
            shutil.copyfile(made["swapped"], bundle / ".swap")
            os.replace(bundle / ".swap", bundle / "model.onnx")  # after the check, before the library opens it
            runner = OrtBackend(path, threads=1) if backend == "onnx" else ovb.OvBackend(path, threads=1)
            assert _same(runner.run(x), good)  # the checked file, not the one now at its path
    assert str(e.value) == "bundle file model.onnx was changed while it was loaded; refused"  # and still refused


@pytest.mark.parametrize("backend, reader", [("onnx", "OrtBackend"),
                                             pytest.param("ov-fp32", "_read_onnx", marks=needs_ov)])
def test_a_file_written_in_place_while_it_loads_is_refused_and_not_cached(bundle: Path, cache: Path,
                                                                          monkeypatch: pytest.MonkeyPatch,
                                                                          backend: str, reader: str) -> None:
    from resnet_deploy.runtime import onnx_backend

    module = onnx_backend if reader == "OrtBackend" else ovb
    real = getattr(module, reader)
    data = (bundle / "model.onnx").read_bytes()

    def write_then_read(*args, **kwargs):  # a writer with write permission, between the check and the library
        with open(bundle / "model.onnx", "r+b") as f:
            f.write(data[:4096])
        return real(*args, **kwargs)

    monkeypatch.setattr(module, reader, write_then_read)
    with pytest.raises(BundleError) as e:
        Predictor.from_bundle(bundle, backend=backend, threads=1)
    assert str(e.value) == "bundle file model.onnx was changed while it was loaded; refused"
    assert list(cache.rglob("*.blob")) == []  # nothing compiled from it was kept


# -------------------------------------------------------------------------------------- 2. the OpenVINO cache
def _plant(bundle: Path, swapped: Path, raw: bool = False) -> Path:
    """Write, where the next ov-fp32 load of `bundle` looks, the compiled model of `swapped`: a well-formed entry
    (its digest right, as anyone who read this code could make it), or with `raw` OpenVINO's bare blob. Returns it."""
    import openvino as ov

    entry = ovb.cache_entry("-".join(read_manifest(bundle).file("model.onnx").checksum), 1, "fp32")
    try:
        compiled = ov.Core().compile_model(ovb._read_onnx(swapped), "CPU", ovb._config(1, "fp32"))
        blob = compiled.export_model()
        blob = blob.getvalue() if hasattr(blob, "getvalue") else blob
        if raw:
            (entry.folder.path / entry.name).write_bytes(blob)
        else:
            entry.write(blob)
        return entry.folder.path / entry.name
    finally:
        entry.folder.close()


def _load(bundle: Path, x: np.ndarray) -> tuple[np.ndarray, str, list[str]]:
    """ov-fp32's answer, the cache it used and the warnings it gave."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with Predictor.from_bundle(bundle, backend="ov-fp32", threads=1) as p:
            return p.run(x), p.describe()["cache"], [str(w.message) for w in caught]


@needs_ov
@needs_root
@pytest.mark.parametrize("where", ["content folder", "cache root"])
def test_a_cache_folder_of_another_user_is_not_used(made: dict[str, Path], bundle: Path, cache: Path, x: np.ndarray,
                                                     where: str) -> None:
    planted = _plant(bundle, made["swapped"])
    folder = planted.parent if where == "content folder" else cache
    for p in (folder, *folder.rglob("*")):
        os.chown(p, OTHER_UID, OTHER_UID, follow_symlinks=False)
    folder.chmod(0o777)  # made beforehand by another user, open to all: as found by the red team
    before = planted.read_bytes()
    got, used, said = _load(bundle, x)
    assert _same(got, _good(bundle, x)) and used == "off"
    assert said == [f"OpenVINO model cache off: {folder} is owned by uid {OTHER_UID}, not by this user (uid 0)"]
    assert planted.read_bytes() == before and sorted(cache.rglob("*.blob")) == [planted]  # left as it was


@needs_ov
def test_a_cache_folder_open_to_others_is_not_used(made: dict[str, Path], bundle: Path, x: np.ndarray) -> None:
    planted = _plant(bundle, made["swapped"])
    planted.parent.chmod(0o777)
    got, used, said = _load(bundle, x)
    assert _same(got, _good(bundle, x)) and used == "off"
    assert said == [f"OpenVINO model cache off: {planted.parent} is writable by group or others (mode 0777)"]


@needs_ov
def test_an_entry_without_our_digest_is_compiled_again_and_replaced(made: dict[str, Path], bundle: Path,
                                                                    x: np.ndarray) -> None:
    planted = _plant(bundle, made["swapped"], raw=True)  # OpenVINO's own blob of the swapped model, no header
    got, used, said = _load(bundle, x)
    assert _same(got, _good(bundle, x)) and used == str(planted.parent)
    assert said == [f"cache entry {planted} not used (its digest does not match its bytes or what it was made "
                    "from); it will be replaced"]
    assert planted.read_bytes().startswith(MAGIC)  # replaced by the good model's entry, which the next load uses
    got, _, said = _load(bundle, x)
    assert _same(got, _good(bundle, x)) and said == []
    # a well-formed entry of the swapped model moved under another content's folder is refused by its binding
    other = planted.parent.parent / "blake3-moved"
    other.mkdir(mode=0o700)
    shutil.copyfile(planted, other / planted.name)
    with pytest.warns(RuntimeWarning, match="its digest does not match its bytes or what it was made from"):
        assert ovb.CacheEntry(ovb.private_dir("openvino", "blake3-moved"), planted.name, b"{}").read() is None


@needs_ov
def test_a_link_at_the_entrys_name_is_replaced_never_followed(made: dict[str, Path], bundle: Path, tmp_path: Path,
                                                              x: np.ndarray) -> None:
    planted = _plant(bundle, made["swapped"])
    outside = tmp_path / "outside" / "written-through-the-link.blob"
    outside.parent.mkdir()
    planted.unlink()
    planted.symlink_to(outside)  # dangling: following it would create a file outside the cache
    got, _, said = _load(bundle, x)
    assert _same(got, _good(bundle, x))
    assert said == [f"cache entry {planted} not used (Too many levels of symbolic links); it will be replaced"]
    assert not outside.exists() and list(outside.parent.iterdir()) == []
    assert not planted.is_symlink() and planted.read_bytes().startswith(MAGIC)


@needs_ov
def test_a_link_in_place_of_the_content_folder_is_not_followed(made: dict[str, Path], bundle: Path, tmp_path: Path,
                                                               x: np.ndarray) -> None:
    planted = _plant(bundle, made["swapped"])
    elsewhere = tmp_path / "elsewhere"
    planted.parent.rename(elsewhere)
    planted.parent.symlink_to(elsewhere, target_is_directory=True)
    before = sorted((p.name, p.stat().st_mtime_ns) for p in elsewhere.iterdir())
    got, used, said = _load(bundle, x)
    assert _same(got, _good(bundle, x)) and used == "off"
    assert said == [f"OpenVINO model cache off: cannot use {planted.parent} (a symbolic link)"]
    assert sorted((p.name, p.stat().st_mtime_ns) for p in elsewhere.iterdir()) == before


@needs_ov
def test_folders_the_cache_makes_are_private(bundle: Path, cache: Path, x: np.ndarray) -> None:
    os.umask(old := os.umask(0))  # whatever the umask, nothing is made open to others
    try:
        _, used, _ = _load(bundle, x)
    finally:
        os.umask(old)
    entry = next(Path(used).glob("*.blob"))
    for p in (cache, cache / "openvino", Path(used)):
        assert p.stat().st_mode & 0o777 == 0o700, p
    assert entry.stat().st_mode & 0o777 == 0o600


@needs_ov
def test_the_compiled_model_is_kept_after_the_first_answer(bundle: Path, cache: Path, x: np.ndarray) -> None:
    p = Predictor.from_bundle(bundle, backend="ov-fp32", threads=1)
    assert list(cache.rglob("*.blob")) == []  # nothing written before the first answer: it does not wait for it
    first = p.run(x)
    p.close()  # waits for the entry being written
    (entry,) = cache.rglob("*.blob")
    assert entry.read_bytes().startswith(MAGIC)
    with Predictor.from_bundle(bundle, backend="ov-fp32", threads=1) as p:  # imported from it, the same answer
        np.testing.assert_array_equal(p.run(x), first)
    assert list(cache.rglob("*.blob")) == [entry]


OUTLIVE = """
import gc, sys
import numpy as np
from resnet_deploy.runtime import Predictor
x = np.random.default_rng().standard_normal((2, 3, 32, 32), dtype=np.float32)
with Predictor.from_bundle(sys.argv[1], backend="ov-fp32", threads=1) as p:  # compiled, then kept in the cache
    want = p.run(x)
for _ in range(5):  # imported from the cache, then the backend dropped while a request of its model lives on
    p = Predictor.from_bundle(sys.argv[1], backend="ov-fp32", threads=1)
    request = p._backend().compiled.create_infer_request()
    del p
    gc.collect()
    request.infer({0: x})
    assert np.abs(request.get_output_tensor(0).data - want).max() <= 1e-5
print("right")
"""


def _in_a_process_of_its_own(script: str, bundle: Path, cache: Path) -> None:
    """Run `script` on the bundle in a fresh interpreter: the failures these guard against are segmentation faults."""
    import subprocess
    import sys

    root = Path(__file__).resolve().parents[1]
    r = subprocess.run([sys.executable, "-c", script, str(bundle)], capture_output=True, text=True, timeout=300,
                       env={**os.environ, "PYTHONPATH": str(root), CACHE_ENV: str(cache)})
    assert (r.returncode, r.stdout.strip()) == (0, "right"), r.stderr[-2000:]


@needs_ov
def test_a_request_outliving_its_backend_still_reads_the_imported_model(bundle: Path, cache: Path) -> None:
    _in_a_process_of_its_own(OUTLIVE, bundle, cache)


TWO_AT_ONCE = """
import gc, sys
import numpy as np
from resnet_deploy.runtime import Predictor
from resnet_deploy.runtime import openvino_backend as ovb

class Racing(dict):
    def get(self, key, default=None):  # each load looks before the other has stored its mapping
        return default

ovb._IMPORTED = Racing()
x = np.random.default_rng().standard_normal((2, 3, 32, 32), dtype=np.float32)
with Predictor.from_bundle(sys.argv[1], backend="ov-fp32", threads=1) as p:  # compiled, then kept in the cache
    want = p.run(x)
first = Predictor.from_bundle(sys.argv[1], backend="ov-fp32", threads=1)  # its mapping is the one stored
second = Predictor.from_bundle(sys.argv[1], backend="ov-fp32", threads=1)  # finds the first's stored: its own lives on
request = second._backend().compiled.create_infer_request()
del second
gc.collect()
for _ in range(3):
    request.infer({0: x})
    assert np.abs(request.get_output_tensor(0).data - want).max() <= 1e-5
print("right")
"""


@needs_ov
def test_two_loads_of_one_content_at_once_each_keep_the_mapping_their_model_reads(bundle: Path, cache: Path) -> None:
    _in_a_process_of_its_own(TWO_AT_ONCE, bundle, cache)
