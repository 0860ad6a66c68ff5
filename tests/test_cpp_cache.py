"""The C++ SDK's compiled-model cache and its checked model file, against another user and a racing renamer:

- an entry planted where someone else could have put it (a cache folder open to others, another user's, a link) is not
  used, and the answer is right; a link at an entry's name is replaced, its target untouched;
- a flipped byte in an entry is refused, compiled again and replaced;
- a renamer swapping the model file during 100 loads never gets the swapped model's logits run: each load refuses
  (the digest error, or a file renamed over while OpenVINO read it) or gives the right logits.

The planted entry is a real attack: the compiled model of the same network with two classifier rows swapped, under
a header whose digest matches (runtime/cache.py's format). Imported from this user's own cache, it gives the swapped
logits (what remains: this user, and root, can write their own cache), which shows the refusals below mean something.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import stat
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest
import xxhash

from resnet_deploy.runtime.cache import MAGIC
from resnet_deploy.runtime.machine import caps_text, isa_caps

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "cpp" / "python"))
from resnet_deploy_c import CError, CLib, library_path  # noqa: E402

LIB = library_path()
pytestmark = pytest.mark.skipif(not LIB.exists(), reason=f"the C++ SDK is not built: {LIB} is missing (`make cpp`)")
# a load refuses a file that does not match, or that was renamed over or written while OpenVINO read it
REFUSALS = ("bundle file model.onnx does not match the manifest's sha256/size",
            "bundle file model.onnx was changed while it was loaded; refused")


@pytest.fixture(scope="module")
def lib() -> CLib:
    c = CLib()
    if not c.registry()["openvino"]:
        pytest.skip("this build of the C++ SDK has no OpenVINO backend (OpenVINO_DIR was not set at configure)")
    return c


@pytest.fixture(scope="module")
def bundles(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    return swapped_pair(tmp_path_factory.mktemp("cpp-cache"))


def swapped_pair(tmp: Path) -> tuple[Path, Path]:
    """The tiny bundle, and a copy whose model.onnx has the classifier's first two rows swapped (its manifest lists
    the new file, so it loads: the content an attacker would compile and plant)."""
    from test_runtime import _build_bundle

    good = _build_bundle(tmp / "bundle")
    bad = Path(shutil.copytree(good, tmp / "swapped"))
    _swap_rows(bad / "model.onnx")
    doc = json.loads((bad / "manifest.json").read_text())
    for f in doc["files"]:
        if f["path"] == "model.onnx":
            data = (bad / "model.onnx").read_bytes()
            f["size"], f["sha256"] = len(data), hashlib.sha256(data).hexdigest()
            f.pop("blake3", None)  # the SDK checks sha256
    (bad / "manifest.json").write_text(json.dumps(doc))
    return good, bad


def _swap_rows(path: Path) -> None:
    import onnx
    from onnx import numpy_helper

    model = onnx.load(str(path))
    gemm = [n for n in model.graph.node if n.op_type == "Gemm"][-1]  # the classifier
    inits = {i.name: i for i in model.graph.initializer}
    for name in gemm.input[1:3]:  # its weight (K, F) and bias (K,)
        a = numpy_helper.to_array(inits[name]).copy()
        a[[0, 1]] = a[[1, 0]]
        inits[name].CopyFrom(numpy_helper.from_array(a, name))
    onnx.save(model, str(path))


@pytest.fixture(scope="module")
def batch() -> np.ndarray:
    return np.random.default_rng().standard_normal((4, 3, 32, 32)).astype(np.float32)


@pytest.fixture(scope="module")
def right(lib: CLib, bundles: tuple[Path, Path], batch: np.ndarray) -> np.ndarray:
    """The bundle's logits, compiled without a cache; the swapped bundle's differ in the first two columns."""
    with lib.predictor(bundles[0], "ov-fp32", 1, cache_dir="") as p:
        want = p.run(batch)
    with lib.predictor(bundles[1], "ov-fp32", 1, cache_dir="") as p:
        swapped = p.run(batch)
    np.testing.assert_allclose(swapped[:, [1, 0, 2, 3]], want, atol=1e-5)
    assert not np.allclose(swapped, want, atol=1e-3)
    return want


def _load(lib: CLib, bundle: Path, cache: Path | str, batch: np.ndarray) -> tuple[np.ndarray, dict[str, str]]:
    with lib.predictor(bundle, "ov-fp32", 1, cache_dir=cache) as p:
        return p.run(batch), p.describe()


def content_id(bundle: Path) -> str:
    entry = next(f for f in json.loads((bundle / "manifest.json").read_text())["files"] if f["path"] == "model.onnx")
    return f"sha256-{entry['sha256']}"


def sdk_binding(reg: dict, content: str, version: str) -> bytes:
    """What the SDK binds an entry of this content to (fp32, one thread), from the facts its registry `reg` reports."""
    config = {"INFERENCE_NUM_THREADS": "1", "INFERENCE_PRECISION_HINT": "f32", "NUM_STREAMS": "1",
              "PERFORMANCE_HINT": "LATENCY"}
    doc = {"config": config, "content": content, "cpu": reg["machine_key"]["cpu"],
           "cpu_flags": hashlib.sha256(" ".join(reg["cpu_flags"]).encode()).hexdigest(), "device": "CPU",
           "isa_caps": caps_text(isa_caps()), "openvino": version}
    return json.dumps(doc, sort_keys=True, separators=(",", ":")).encode()


def sdk_entry_name(binding: bytes) -> str:
    """The file name the SDK gives the entry of this binding (cpp/src/openvino_backend.cpp)."""
    return hashlib.sha256(binding).hexdigest()[:32] + ".blob"


def sdk_entry(binding: bytes, data: bytes) -> bytes:
    """An entry in the SDK's format (cpp/src/cache.h): the header with the XXH3-128 of binding and bytes, then them."""
    digest = xxhash.xxh3_128(len(binding).to_bytes(8, "little") + binding + data).hexdigest()
    return b"%s xxh3-128 %s\n" % (MAGIC, digest.encode()) + data


@pytest.fixture(scope="module")
def forged(lib: CLib, bundles: tuple[Path, Path], batch: np.ndarray,
           tmp_path_factory: pytest.TempPathFactory) -> tuple[str, bytes]:
    """(the entry's file name for the good bundle's content, a well-formed entry holding the swapped model)."""
    good, bad = bundles
    cache = tmp_path_factory.mktemp("forge")
    _, described = _load(lib, good, cache, batch)
    binding = sdk_binding(lib.registry(), content_id(good), described["version"])
    name = sdk_entry_name(binding)
    assert [p.name for p in (cache / "openvino" / content_id(good)).iterdir()] == [name]  # the SDK's own name
    _load(lib, bad, cache, batch)
    blob = (cache / "openvino" / content_id(bad)).glob("*.blob").__next__().read_bytes()
    data = blob[blob.index(b"\n") + 1:]
    return name, sdk_entry(binding, data)


def _plant(folder: Path, forged: tuple[str, bytes]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / forged[0]).write_bytes(forged[1])
    return folder / forged[0]


def test_a_forged_entry_in_this_users_own_cache_is_imported_which_is_what_remains(lib, bundles, batch, right, forged,
                                                                                  tmp_path):
    cache = tmp_path / "cache"
    _plant(cache / "openvino" / content_id(bundles[0]), forged)
    for folder in (cache, cache / "openvino", cache / "openvino" / content_id(bundles[0])):
        folder.chmod(0o700)
    logits, described = _load(lib, bundles[0], cache, batch)
    assert described["cache_use"] == "imported"
    np.testing.assert_allclose(logits[:, [1, 0, 2, 3]], right, atol=1e-5)  # the swapped model ran


@pytest.mark.parametrize("how", ["folder 0777", "root 0777", "another user's root", "another user's folder",
                                 "root a link"])
def test_an_entry_planted_where_others_could_write_is_not_used(lib, bundles, batch, right, forged, tmp_path, how):
    good = bundles[0]
    cache = tmp_path / "cache"
    folder = cache / "openvino" / content_id(good)
    planted = _plant(folder, forged)
    if how == "folder 0777":
        folder.chmod(0o777)
        why = f"{folder} is writable by group or others (mode 0777)"
    elif how == "root 0777":
        cache.chmod(0o777)
        why = f"{cache} is writable by group or others (mode 0777)"
    elif how.startswith("another user's"):
        if os.geteuid() != 0:
            pytest.skip("giving a folder to another user needs root (os.chown)")
        owned = cache if how.endswith("root") else folder
        os.chown(owned, 4242, 4242)
        why = f"{owned} is owned by uid 4242, not by this user (uid 0)"
    else:
        cache = tmp_path / "linked"
        cache.symlink_to(tmp_path / "cache")
        why = f"cannot use {cache} (a symbolic link)"
    before = planted.read_bytes()
    logits, described = _load(lib, good, cache, batch)
    np.testing.assert_allclose(logits, right, atol=1e-5)
    assert described["cache"] == "off"
    assert described["cache_use"] == f"off: {why}"
    assert described["cache_warning"] == f"OpenVINO model cache off: {why}"
    assert planted.read_bytes() == before and sorted(os.listdir(folder)) == [forged[0]]  # nothing written there


def test_a_link_at_the_entrys_name_is_replaced_never_followed(lib, bundles, batch, right, forged, tmp_path):
    good = bundles[0]
    cache = tmp_path / "cache"
    _load(lib, good, cache, batch)  # the private folders, made by the SDK
    folder = cache / "openvino" / content_id(good)
    target = _plant(tmp_path / "elsewhere", forged)  # a well-formed entry: a followed link would run it
    (folder / forged[0]).unlink()
    (folder / forged[0]).symlink_to(target)
    logits, described = _load(lib, good, cache, batch)
    np.testing.assert_allclose(logits, right, atol=1e-5)
    assert described["cache_use"] == f"compiled: cache entry {folder / forged[0]} not used (a symbolic link); written"
    assert described["cache_warning"] == f"cache entry {folder / forged[0]} not used (a symbolic link)"
    assert target.read_bytes() == forged[1]
    st = (folder / forged[0]).lstat()
    assert stat.S_ISREG(st.st_mode) and stat.S_IMODE(st.st_mode) == 0o600
    logits, described = _load(lib, good, cache, batch)
    assert described["cache_use"] == "imported"
    np.testing.assert_allclose(logits, right, atol=1e-5)


def test_the_cache_is_private_and_a_flipped_byte_is_compiled_again(lib, bundles, batch, right, tmp_path):
    good = bundles[0]
    cache = tmp_path / "cache"
    logits, described = _load(lib, good, cache, batch)
    folder = cache / "openvino" / content_id(good)
    assert described["cache"] == str(folder) and described["cache_use"] == "compiled: no entry yet; written"
    assert described["cache_warning"] == ""
    for f in (cache, cache / "openvino", folder):
        assert stat.S_IMODE(f.stat().st_mode) == 0o700
    (entry,) = folder.iterdir()
    assert stat.S_IMODE(entry.stat().st_mode) == 0o600
    written = entry.read_bytes()  # the header's digest is the XXH3-128 that xxhash computes of binding and bytes
    binding = sdk_binding(lib.registry(), content_id(good), described["version"])
    assert written == sdk_entry(binding, written[written.index(b"\n") + 1:])
    logits, described = _load(lib, good, cache, batch)
    assert described["cache_use"] == "imported"
    np.testing.assert_allclose(logits, right, atol=1e-5)
    data = bytearray(entry.read_bytes())
    at = int(np.random.default_rng().integers(200, len(data)))
    data[at] ^= 1
    entry.write_bytes(bytes(data))
    logits, described = _load(lib, good, cache, batch)
    np.testing.assert_allclose(logits, right, atol=1e-5)
    why = f"cache entry {entry} not used (its digest does not match its bytes or what it was made from)"
    assert described["cache_use"] == f"compiled: {why}; written", at
    assert described["cache_warning"] == why
    assert entry.read_bytes() != bytes(data)  # replaced
    assert _load(lib, good, cache, batch)[1]["cache_use"] == "imported"


CAPPED_LOAD = """
import json, sys
import numpy as np
sys.path.insert(0, sys.argv[1])
from resnet_deploy_c import CLib

with CLib(sys.argv[2]).predictor(sys.argv[3], "ov-fp32", 1, cache_dir=sys.argv[4]) as p:
    print(json.dumps({"logits": p.run(np.load(sys.argv[5])).tolist(), "cache_use": p.describe()["cache_use"]}))
"""


def test_a_model_compiled_under_an_isa_cap_has_an_entry_of_its_own(lib, bundles, batch, right, tmp_path):
    """The same CPU capped to AVX2 is another class of machine: its compiled model is not the uncapped one's."""
    good, cache = bundles[0], tmp_path / "cache"
    assert _load(lib, good, cache, batch)[1]["cache_use"] == "compiled: no entry yet; written"
    np.save(tmp_path / "batch.npy", batch)
    argv = [sys.executable, "-c", CAPPED_LOAD, str(ROOT / "cpp" / "python"), str(LIB), str(good), str(cache),
            str(tmp_path / "batch.npy")]
    for use in ("compiled: no entry yet; written", "imported"):
        r = subprocess.run(argv, env=os.environ | {"ONEDNN_MAX_CPU_ISA": "AVX2"}, capture_output=True, text=True,
                           timeout=120)
        assert r.returncode == 0, r.stderr[-2000:]
        got = json.loads(r.stdout)
        assert got["cache_use"] == use
        np.testing.assert_allclose(np.array(got["logits"], np.float32), right, atol=1e-4)
    assert len(list((cache / "openvino" / content_id(good)).iterdir())) == 2


def test_a_racing_renamer_never_gets_the_swapped_model_run(lib, bundles, batch, right, tmp_path):
    """100 loads, every other one with a cache of this content, while a thread renames the swapped file and the right
    one over model.onnx in turn: a load refuses (the digest, or the file renamed over during the load) or gives the
    right logits."""
    b = Path(shutil.copytree(bundles[0], tmp_path / "b"))
    os.link(b / "model.onnx", tmp_path / "good.onnx")
    shutil.copyfile(bundles[1] / "model.onnx", tmp_path / "bad.onnx")
    cache = tmp_path / "cache"
    _load(lib, b, cache, batch)  # an entry of the right content
    stop, renames = threading.Event(), [0]

    def rename() -> None:
        while not stop.is_set():
            for source in ("good.onnx", "bad.onnx"):
                os.link(tmp_path / source, tmp_path / "next.onnx")
                os.rename(tmp_path / "next.onnx", b / "model.onnx")
                (tmp_path / "next.onnx").unlink(missing_ok=True)  # left when model.onnx was that file already
                renames[0] += 1

    renamer = threading.Thread(target=rename, daemon=True)
    renamer.start()
    outcomes = {"right": 0, "refused": 0}
    try:
        for i in range(100):
            try:
                logits, _ = _load(lib, b, cache if i % 2 else "", batch)  # ctypes lets the renamer run meanwhile
            except CError as e:
                assert e.status == "bundle" and str(e).startswith(REFUSALS), str(e)
                outcomes["refused"] += 1
                continue
            np.testing.assert_allclose(logits, right, atol=1e-5, err_msg=f"load {i}")
            outcomes["right"] += 1
    finally:
        stop.set()
        renamer.join()
    print(f"{renames[0]} renames: {outcomes}")
    assert outcomes["refused"] > 0, outcomes  # the renamer did swap files under the loads
    assert renamer.ident is not None and renames[0] > 1000, renames
