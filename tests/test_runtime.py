"""The lean runtime: Predictor on every CPU backend, manifest checks, bad input, threads, preprocessing parity, CLI."""

from __future__ import annotations

import dataclasses
import json
import multiprocessing
import shutil
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from resnet_deploy.runtime import BundleError, Predictor, ResnetDeployError, available_backends, read_manifest
from resnet_deploy.runtime import predictor as predictor_mod
from resnet_deploy.runtime.checksum import file_digests
from resnet_deploy.runtime.machine import cpu_int8_is_fast
from resnet_deploy.runtime.openvino_backend import ov_installed
from resnet_deploy.runtime.preprocess import Preprocess
from resnet_deploy.runtime.verified import verify_files

CLASSES = ["ant", "bee", "cat", "dog"]
PRE = Preprocess(input_size=(32, 32), channels=3, resize=36, crop=32, mean=(0.49, 0.48, 0.45), std=(0.25, 0.24, 0.26))
CPU_BACKENDS = ("onnx", "fp16", "int8", "int8-trt")


def _images(rng: np.random.Generator, n: int) -> list[np.ndarray]:
    """Random uint8 RGB images of random sizes (never all zeros)."""
    return [rng.integers(0, 256, (int(rng.integers(20, 70)), int(rng.integers(20, 70)), 3), dtype=np.uint8)
            for _ in range(n)]


def _build_bundle(out: Path, trt: bool = False) -> Path:
    """A tiny bundle (cifar_resnet20, 4 classes, 32x32) with fp32, fp16 and both int8 files, via export_bundle."""
    import torch

    from resnet_deploy import models
    from resnet_deploy.checkpoint import save_model
    from resnet_deploy.export import ExportOptions, export_bundle

    torch.manual_seed(0)
    model = models.build("cifar_resnet20", num_classes=len(CLASSES)).eval()
    # A random network maps random images to nearly the same features, so every image would get one class. Centre
    # the classifier on the mean feature and scale it, so that predictions differ from image to image.
    x = torch.from_numpy(np.stack([PRE(im) for im in _images(np.random.default_rng(0), 64)]))
    seen = {}
    hook = model.fc.register_forward_pre_hook(lambda _, args: seen.update(features=args[0]))
    with torch.no_grad():
        model(x)
        hook.remove()
        model.fc.bias.copy_(-(model.fc.weight @ seen["features"].mean(0)))
        scale = 2.0 / float(model(x).std())
        model.fc.weight.mul_(scale)
        model.fc.bias.mul_(scale)
    ckpt = out.parent / "tiny.pt"
    save_model(ckpt, model, "cifar_resnet20", CLASSES, PRE, shortcut="A")
    calib = np.stack([PRE(im) for im in _images(np.random.default_rng(1), 16)])
    return export_bundle(out, ExportOptions(("fp16", "int8"), trt=trt, int8_target="both", batch=(1, 8, 16)),
                         checkpoint=ckpt, calib_arrays=calib)


@pytest.fixture(scope="module")
def bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _build_bundle(tmp_path_factory.mktemp("rt") / "bundle")


@pytest.fixture(scope="module")
def predictor(bundle: Path) -> Predictor:
    return Predictor.from_bundle(bundle, backend="onnx", threads=1)


def _ort_logits(path: Path, x: np.ndarray) -> np.ndarray:
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    sess = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    return sess.run(["logits"], {"input": x})[0]


def test_manifest_has_every_cpu_backend(bundle: Path) -> None:
    found = available_backends(bundle, device="cpu")
    assert {n: found[n] for n in CPU_BACKENDS} == {n: None for n in CPU_BACKENDS}
    assert found["trt-fp32"] == "the bundle has no trt-fp32 model (export it with `resnet-deploy export ... --trt`)"
    m = read_manifest(bundle)
    assert m.classes == CLASSES and m.input_shape == (3, 32, 32) and m.preprocess == PRE


@pytest.mark.parametrize("backend", CPU_BACKENDS)
def test_each_cpu_backend_equals_onnxruntime_on_its_file(bundle: Path, backend: str) -> None:
    rng = np.random.default_rng()
    p = Predictor.from_bundle(bundle, backend=backend, threads=1)
    assert p.backend == backend
    images = _images(rng, 20)  # more than the profile's max batch of the bundle? checked in test_batch_splitting
    x = np.stack([PRE(im) for im in images])
    ref = _ort_logits(bundle / predictor_mod.find_entry(p.manifest, backend).path, x)
    np.testing.assert_allclose(p.run(x), ref, rtol=1e-5, atol=1e-5)
    preds = p.predict(images, topk=3)
    assert [q.class_id for q in preds] == ref.argmax(1).tolist()
    z = np.exp(ref - ref.max(1, keepdims=True))
    np.testing.assert_allclose([q.score for q in preds], (z / z.sum(1, keepdims=True)).max(1), rtol=1e-5)


def test_fp16_stays_close_to_fp32(bundle: Path) -> None:
    rng = np.random.default_rng()
    x = np.stack([PRE(im) for im in _images(rng, 32)])
    ref = Predictor.from_bundle(bundle, backend="onnx").run(x)
    fp16 = Predictor.from_bundle(bundle, backend="fp16").run(x)
    assert np.abs(fp16 - ref).max() <= 1e-2 * np.abs(ref).max()  # int8 accuracy is the validate stage's business


def test_predictions_are_softmax_topk(predictor: Predictor) -> None:
    rng = np.random.default_rng()
    images = _images(rng, 3)
    logits = predictor.run(np.stack([PRE(im) for im in images]))
    for pred, row in zip(predictor.predict(images, topk=10), logits, strict=True):
        z = np.exp(row.astype(np.float64) - row.max())
        probs = z / z.sum()
        assert len(pred.topk) == len(CLASSES)  # topk capped at K
        assert [c for c, _, _ in pred.topk] == np.argsort(-probs).tolist()
        assert [lab for _, lab, _ in pred.topk] == [CLASSES[c] for c in np.argsort(-probs)]
        np.testing.assert_allclose([s for _, _, s in pred.topk], np.sort(probs)[::-1], rtol=1e-5, atol=1e-9)
        assert (pred.class_id, pred.label, pred.score) == pred.topk[0]
    assert len(predictor.predict(images[0], topk=2)[0].topk) == 2  # one image, not a list
    with pytest.raises(ResnetDeployError, match="topk must be a positive integer, found 0"):
        predictor.predict(images, topk=0)


def test_images_as_paths_pil_and_arrays_agree(predictor: Predictor, tmp_path: Path) -> None:
    rng = np.random.default_rng()
    arr = _images(rng, 1)[0]
    Image.fromarray(arr).save(tmp_path / "a.png")
    encoded = (tmp_path / "a.png").read_bytes()  # as a server receives it
    got = [predictor.predict(x)[0] for x in (arr, Image.fromarray(arr), tmp_path / "a.png", str(tmp_path / "a.png"),
                                              encoded, [encoded])]
    assert all(g == got[0] for g in got)
    with pytest.raises(ResnetDeployError, match=r"^empty image: 0 bytes$"):
        predictor.predict(b"")
    with pytest.raises(ResnetDeployError, match=r"^not a readable image: image of 5 bytes \(none of PNG, JPEG, "):
        predictor.predict(b"hello")
    batch = np.stack([arr, arr])  # N x H x W x C uint8 is a batch of images
    assert predictor.predict(batch) == [got[0], got[0]]


def test_auto_picks_int8_only_on_cpus_with_int8_dot_products(bundle: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert cpu_int8_is_fast({"avx2", "avx512_vnni"})[0] and cpu_int8_is_fast({"fp", "asimddp"})[0]
    fast, why = cpu_int8_is_fast({"avx2", "fma"})
    assert not fast and "lacks" in why
    monkeypatch.setattr(predictor_mod, "cpu_int8_is_fast", lambda: (True, "has vnni"))
    p = Predictor.from_bundle(bundle)
    assert (p.backend, p.why) == ("int8", "expected, not measured (run `resnet-deploy bench` on the bundle to "
                                          "measure): has vnni")
    monkeypatch.setattr(predictor_mod, "cpu_int8_is_fast", lambda: (False, "no vnni"))
    # ONNX Runtime's int8 goes behind fp32; OpenVINO's int8 (faster than its fp32 without VNNI) stays ahead
    assert Predictor.from_bundle(bundle).backend == ("ov-int8" if ov_installed() else "onnx")
    assert Predictor.from_bundle(bundle, backend="auto").why == ("expected, not measured (run `resnet-deploy bench` "
                                                                  "on the bundle to measure): no vnni on onnxruntime")


def test_unusable_backends_say_why(bundle: Path, tmp_path: Path) -> None:
    with pytest.raises(ResnetDeployError, match="unknown backend 'tflite'; choose one of: auto, trt, onnx"):
        Predictor.from_bundle(bundle, backend="tflite")
    with pytest.raises(ResnetDeployError, match="unknown device 'tpu'"):
        Predictor.from_bundle(bundle, device="tpu")
    with pytest.raises(ResnetDeployError, match="no backend for 'trt' can run on device=cpu .trt-int8: the bundle"):
        Predictor.from_bundle(bundle, backend="trt")
    reasons = available_backends(bundle, device="cuda")
    if reasons["onnx"] is not None:  # CPU-only onnxruntime (this project's machines)
        assert "onnxruntime-gpu" in reasons["onnx"]
    assert reasons["int8"] == "the int8 model runs on cpu only; on cuda use int8-trt or trt-int8"
    small = tmp_path / "small"
    shutil.copytree(bundle, small)
    m = json.loads((small / "manifest.json").read_text())
    m["files"] = [f for f in m["files"] if f["precision"] == "fp32"]
    (small / "manifest.json").write_text(json.dumps(m))
    assert "--fp16" in available_backends(small)["fp16"]
    with pytest.raises(ResnetDeployError, match="backend 'int8' cannot run on device=cpu: the bundle has no int8"):
        Predictor.from_bundle(small, backend="int8")
    assert Predictor.from_bundle(small).backend == "onnx"  # auto falls back


def _verify_in_child(bundle: str) -> bool:
    verify_files(bundle, read_manifest(bundle))
    return True


@pytest.mark.skipif(sys.platform != "linux", reason="the fork start method")
def test_a_process_forked_after_a_load_can_check_bundles(bundle: Path) -> None:
    # Pre-forking servers and multiprocessing's fork load models in children of a process that already hashed:
    # a hash with a thread pool (blake3's multi-threaded mode) would hang there.
    verify_files(bundle, read_manifest(bundle))
    with multiprocessing.get_context("fork").Pool(1) as pool:
        assert pool.apply_async(_verify_in_child, (str(bundle),)).get(timeout=60)


def test_tampered_model_file_is_refused_by_name(bundle: Path, predictor: Predictor, tmp_path: Path) -> None:
    bad = tmp_path / "bad"
    shutil.copytree(bundle, bad)
    data = bytearray((bad / "model.onnx").read_bytes())
    data[len(data) // 2] ^= 0xFF
    (bad / "model.onnx").write_bytes(bytes(data))
    with pytest.raises(BundleError, match=r"bundle file model.onnx does not match the manifest's blake3"):
        Predictor.from_bundle(bad, backend="onnx")
    assert Predictor.from_bundle(bad, backend="int8").backend == "int8"  # the untouched file still loads
    (bad / "model.fp16.onnx").unlink()
    with pytest.raises(ResnetDeployError, match="model.fp16.onnx is listed in the manifest but missing"):
        Predictor.from_bundle(bad, backend="fp16")
    (bad / "model.onnx").write_bytes(bytes(data[:1000]))  # a flipped byte may still parse; a truncated file not
    m = json.loads((bad / "manifest.json").read_text())  # a manifest re-signed over a broken file: ORT refuses it
    sha, b3 = file_digests(bad / "model.onnx")
    m["files"] = [{**f, "sha256": sha, "blake3": b3, "size": (bad / f["path"]).stat().st_size}
                  if f["path"] == "model.onnx" else f for f in m["files"]]
    (bad / "manifest.json").write_text(json.dumps(m))
    with pytest.raises(BundleError, match="ONNX Runtime could not load model.onnx"):
        Predictor.from_bundle(bad, backend="onnx")
    assert len(predictor.predict(_images(np.random.default_rng(), 2))) == 2  # the loaded Predictor is unaffected


def test_truncated_or_foreign_manifest_is_refused(bundle: Path, tmp_path: Path) -> None:
    bad = tmp_path / "bad"
    shutil.copytree(bundle, bad)
    text = (bundle / "manifest.json").read_text()
    (bad / "manifest.json").write_text(text[: len(text) // 2])
    with pytest.raises(BundleError, match="manifest.json is not valid JSON"):
        Predictor.from_bundle(bad)
    (bad / "manifest.json").write_text(json.dumps({**json.loads(text), "format_version": 99}))
    with pytest.raises(BundleError, match="format_version 99 is not supported; expected 1"):
        Predictor.from_bundle(bad)
    (bad / "manifest.json").unlink()
    with pytest.raises(BundleError, match="has no manifest.json"):
        Predictor.from_bundle(bad)
    with pytest.raises(BundleError, match="bundle directory not found"):
        Predictor.from_bundle(tmp_path / "nowhere")


def test_file_that_is_not_an_image(predictor: Predictor, tmp_path: Path) -> None:
    (tmp_path / "notes.jpg").write_text("this is not a JPEG")
    good = _images(np.random.default_rng(), 1)[0]
    with pytest.raises(ResnetDeployError, match=r"image 2 of 2: not a readable image: .*notes.jpg"):
        predictor.predict([good, tmp_path / "notes.jpg"])
    with pytest.raises(ResnetDeployError, match="image not found: .*missing.png"):
        predictor.predict(tmp_path / "missing.png")
    with pytest.raises(ResnetDeployError, match="expected an image path, PIL image or uint8"):
        predictor.predict([3.5])
    assert predictor.predict(good)[0].label in CLASSES  # still works


def test_grey_image_for_rgb_model_is_converted(predictor: Predictor) -> None:
    grey = np.random.default_rng().integers(0, 256, (40, 50), dtype=np.uint8)
    rgb = np.repeat(grey[:, :, None], 3, axis=2)  # documented: the grey channel is repeated into R, G and B
    want = predictor.predict(rgb)[0]
    assert predictor.predict(grey)[0] == want
    assert predictor.predict(Image.fromarray(grey, mode="L"))[0] == want
    assert predictor.predict(grey[:, :, None])[0] == want  # H x W x 1


def test_wrong_arrays_are_clear_errors_and_predictor_keeps_working(predictor: Predictor) -> None:
    rng = np.random.default_rng()
    x = rng.standard_normal((2, 3, 32, 32), dtype=np.float32)
    ok = predictor.run(x)
    cases = [
        (rng.standard_normal((2, 3, 30, 30), dtype=np.float32),
         r"expected an array of shape \(N, 3, 32, 32\), found \(2, 3, 30, 30\)"),
        (x[0], r"found \(3, 32, 32\)"),
        ((x * 50).astype(np.uint8), "expected float32 preprocessed input, found uint8"),
        (x.tolist(), "expected a numpy array of shape"),
    ]
    for bad, msg in cases:
        with pytest.raises(ResnetDeployError, match=msg):
            predictor.run(bad)
    for bad, msg in [(rng.integers(0, 256, (20, 20, 5), dtype=np.uint8), r"has shape \(20, 20, 5\); expected HxW"),
                     (rng.random((20, 20, 3)), "image arrays must be uint8 or uint16, found float64"),
                     (rng.integers(0, 256, (7,), dtype=np.uint8), r"has shape \(7,\)")]:
        with pytest.raises(ResnetDeployError, match=msg):
            predictor.predict(bad)
    np.testing.assert_array_equal(predictor.run(x), ok)
    assert predictor.run(x[:0]).shape == (0, len(CLASSES))


class _CountingRunner:
    """Wraps a backend and records the batch sizes it was given."""

    max_batch = None

    def __init__(self, inner: object) -> None:
        self.inner, self.sizes = inner, []

    def run(self, x: np.ndarray) -> np.ndarray:
        self.sizes.append(len(x))
        return self.inner.run(x)


def test_batches_are_split_to_the_profile_and_padded_to_its_minimum(bundle: Path) -> None:
    p = Predictor.from_bundle(bundle, backend="onnx")
    lo, _, hi = p.manifest.batch
    x = np.random.default_rng().standard_normal((2 * hi + 3, 3, 32, 32), dtype=np.float32)
    whole = p.run(x)
    p._runner = counting = _CountingRunner(p._runner)
    np.testing.assert_allclose(p.run(x), whole, rtol=1e-5, atol=1e-5)
    assert counting.sizes == [hi, hi, max(3, lo)]
    manifest = dataclasses.replace(read_manifest(bundle), batch=(4, 4, 8))  # an engine profile with min batch 4
    padded = Predictor(manifest, "onnx", counting)
    np.testing.assert_allclose(padded.run(x[:11]), whole[:11], rtol=1e-5, atol=1e-5)
    assert counting.sizes[3:] == [8, 4]


def test_one_predictor_shared_by_8_threads_matches_sequential(predictor: Predictor) -> None:
    rng = np.random.default_rng()
    images = _images(rng, 16)
    want = [predictor.predict(im)[0] for im in images]
    got: dict[tuple[int, int], object] = {}
    errors: list[BaseException] = []

    def work(t: int) -> None:
        try:
            for i in range(100):
                got[t, i] = predictor.predict(images[(t * 7 + i) % len(images)])[0]
        except BaseException as e:  # surfaced below: a thread's exception would otherwise vanish
            errors.append(e)

    threads = [threading.Thread(target=work, args=(t,)) for t in range(8)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert not errors
    assert len(got) == 800
    assert all(got[t, i] == want[(t * 7 + i) % len(images)] for t, i in got)


def test_runtime_never_imports_torch(bundle: Path, predictor: Predictor, tmp_path: Path) -> None:
    img = _images(np.random.default_rng(), 1)[0]
    Image.fromarray(img).save(tmp_path / "x.png")
    code = (
        "import json, sys\n"
        "from resnet_deploy.runtime import Predictor\n"
        f"p = Predictor.from_bundle({str(bundle)!r}, backend='onnx')\n"
        f"r = p.predict({str(tmp_path / 'x.png')!r})[0]\n"
        "heavy = ('torch', 'torchvision', 'click', 'onnx', 'resnet_deploy.models', 'resnet_deploy.export')\n"
        "heavy = sorted(m for m in heavy if m in sys.modules)\n"
        "print(json.dumps({'heavy': heavy, 'class_id': r.class_id, 'score': r.score}))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    result = json.loads(out.stdout.strip().splitlines()[-1])
    want = predictor.predict(tmp_path / "x.png")[0]
    assert result == {"heavy": [], "class_id": want.class_id, "score": pytest.approx(want.score, rel=1e-6)}


def test_preprocess_equals_torchvision_eval_transform() -> None:
    tv = pytest.importorskip("torchvision.transforms")
    from resnet_deploy.runtime.preprocess import IMAGENET_MEAN, IMAGENET_STD

    pre = Preprocess(input_size=(224, 224), channels=3, resize=256, crop=224, mean=IMAGENET_MEAN, std=IMAGENET_STD)
    ref = tv.Compose([tv.Resize(256), tv.CenterCrop(224), tv.ToTensor(), tv.Normalize(IMAGENET_MEAN, IMAGENET_STD)])
    rng = np.random.default_rng()
    for _ in range(6):
        h, w = (int(v) for v in rng.integers(180, 520, 2))
        img = Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8))
        np.testing.assert_allclose(pre(img), ref(img).numpy(), rtol=0, atol=1e-5, err_msg=f"{w}x{h}")
    grey = Preprocess(input_size=(28, 28), channels=1, resize=32, crop=28, mean=(0.286,), std=(0.353,))
    ref = tv.Compose([tv.Resize(32), tv.CenterCrop(28), tv.ToTensor(), tv.Normalize((0.286,), (0.353,))])
    img = Image.fromarray(rng.integers(0, 256, (45, 37), dtype=np.uint8), mode="L")
    np.testing.assert_allclose(grey(img), ref(img).numpy(), rtol=0, atol=1e-5)


def test_cli_predict(bundle: Path, predictor: Predictor, tmp_path: Path) -> None:
    from click.testing import CliRunner

    from resnet_deploy.cli import main

    rng = np.random.default_rng()
    for i, im in enumerate(_images(rng, 2)):
        Image.fromarray(im).save(tmp_path / f"{i}.png")
    paths = [str(tmp_path / "0.png"), str(tmp_path / "1.png")]
    r = CliRunner().invoke(main, ["predict", str(bundle), *paths, "--json", "--topk", "2", "--backend", "onnx"])
    assert r.exit_code == 0, r.output
    rows = json.loads(r.stdout)
    want = predictor.predict(paths, topk=2)
    assert [row["image"] for row in rows] == paths
    assert [row["label"] for row in rows] == [w.label for w in want]
    assert [len(row["topk"]) for row in rows] == [2, 2]
    r = CliRunner().invoke(main, ["predict", str(bundle), paths[0], "--backend", "onnx"])
    assert r.exit_code == 0 and want[0].label in r.output and "backend onnx" in r.output
    (tmp_path / "bad.jpg").write_text("nope")
    (tmp_path / "empty.png").write_bytes(b"")
    bad = [str(tmp_path / "bad.jpg"), str(tmp_path / "empty.png")]
    # every readable image classified, each unreadable one named on its own line (counted from 1), exit 1
    r = CliRunner().invoke(main, ["predict", str(bundle), bad[0], paths[1], bad[1], paths[0], "--backend", "onnx"])
    assert r.exit_code == 1, r.output
    tops = [ln for ln in r.stdout.splitlines() if not ln.startswith(" ")]
    assert tops == [f"{paths[1]}: {want[1].label} ({want[1].score:.4f})",
                    f"{paths[0]}: {want[0].label} ({want[0].score:.4f})"]
    errors = [ln for ln in r.stderr.splitlines() if ln.startswith("Error:")]
    assert [e.split(": ")[1] for e in errors] == ["image 1 of 4", "image 3 of 4"]
    assert errors[0].startswith(f"Error: image 1 of 4: not a readable image: {bad[0]} (")
    assert r.stderr.splitlines()[-1] == "2 of 4 image(s) could not be read"
    r = CliRunner().invoke(main, ["predict", str(bundle), bad[0], paths[0], "--json", "--backend", "onnx"])
    rows = json.loads(r.stdout)
    assert r.exit_code == 1 and rows[0]["image"] == bad[0] and rows[0]["error"].startswith("not a readable image")
    assert rows[1]["label"] == want[0].label and "error" not in rows[1]
    r = CliRunner().invoke(main, ["predict", str(bundle), bad[0]])
    assert r.exit_code == 1 and r.stdout == "" and "Error: image 1 of 1: not a readable image:" in r.stderr
    r = CliRunner().invoke(main, ["predict", str(tmp_path / "nobundle"), paths[0]])
    assert r.exit_code == 2 and "bundle directory not found" in r.output
    r = CliRunner().invoke(main, ["predict", str(bundle), paths[0], "--backend", "trt", "--device", "cuda"])
    gpu = "" if predictor_mod.gpu_found() else "no NVIDIA GPU found on this machine (no /dev/nvidia* device); "
    assert r.exit_code == 2 and r.output.startswith(f"Error: {gpu}no backend for 'trt' can run on device=cuda "
                                                    "(trt-int8: ")
    assert not predictor_mod.gpu_found(tmp_path) and (tmp_path / "nvidia0").touch() is None
    assert predictor_mod.gpu_found(tmp_path)


@pytest.mark.gpu
def test_tensorrt_engine_matches_onnx(tmp_path: Path) -> None:
    pytest.importorskip("tensorrt", reason="needs TensorRT")
    cudart = pytest.importorskip("cuda.bindings.runtime", reason="needs cuda-python")
    err, count = cudart.cudaGetDeviceCount()
    if err != cudart.cudaError_t.cudaSuccess or count < 1:
        pytest.skip("needs a CUDA GPU")
    bundle = _build_bundle(tmp_path / "bundle", trt=True)
    x = np.stack([PRE(im) for im in _images(np.random.default_rng(), 40)])
    ref = Predictor.from_bundle(bundle, backend="onnx").run(x)
    with Predictor.from_bundle(bundle, backend="trt-fp32", device="cuda") as p:
        np.testing.assert_allclose(p.run(x), ref, rtol=1e-3, atol=1e-3 * np.abs(ref).max())
        seq = [p.run(x[i:i + 3]) for i in range(8)]
        got: dict[int, np.ndarray] = {}
        threads = [threading.Thread(target=lambda i=i: got.__setitem__(i, p.run(x[i:i + 3]))) for i in range(8)]
        for th in threads:
            th.start()
        for th in threads:
            th.join()
        assert all(np.array_equal(got[i], seq[i]) for i in range(8))
    assert Predictor.from_bundle(bundle, device="cuda").backend.startswith("trt-")


def test_edge_app_classifies_a_folder(bundle: Path, predictor: Predictor, tmp_path: Path) -> None:
    app = Path(__file__).parents[1] / "examples" / "edge_app" / "app.py"
    rng = np.random.default_rng()
    folder = tmp_path / "imgs"
    folder.mkdir()
    for i, im in enumerate(_images(rng, 5)):
        Image.fromarray(im).save(folder / f"{i}.png")
    Image.fromarray(rng.integers(0, 256, (30, 40), dtype=np.uint8), mode="L").save(folder / "5.jpg")  # grey
    cmd = [sys.executable, str(app), str(bundle), str(folder), "--backend", "onnx", "--topk", "2",
           "--summary-json", str(tmp_path / "s.json")]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    want = predictor.predict(sorted(folder.iterdir()), topk=2)
    for line, w in zip(lines[:6], want, strict=True):
        assert line.startswith(f"{w.label} {w.score:.3f}, {w.topk[1][1]} ", len(line.split(":")[0]) + 2)
    summary = json.loads((tmp_path / "s.json").read_text())
    assert (summary["images"], summary["failures"], summary["backend"]) == (6, 0, "onnx")
    assert summary["cold_start_ms"] >= summary["load_ms"] > 0 and summary["latency_ms_p90"] >= summary["latency_ms_p50"]
    assert lines[6].startswith("6 images, backend onnx on cpu") and lines[7].startswith("cold start ")
    (folder / "7.png").write_text("not a png")
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    assert out.returncode == 1 and "7.png: skipped (not a readable image" in out.stderr
