"""`resnet-deploy triton`: model repositories and their config.pbtxt, checked against Triton's own ModelConfig schema;
the command-line errors of `triton` and `loadtest` (the server's preflight: tests/test_serve_environment.py).

The bundles here are stand-ins (manifest + files of random bytes): writing a repository only copies files and reads the
manifest, so no export is needed. Serving a repository for real is tests/test_serve_server.py.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from resnet_deploy.cli import main
from resnet_deploy.runtime import ResnetDeployError
from resnet_deploy.runtime.checksum import sha256_file
from resnet_deploy.runtime.manifest import FileEntry, Manifest, read_manifest, write_manifest
from resnet_deploy.runtime.preprocess import Preprocess
from resnet_deploy.serve.loadtest import parse_url
from resnet_deploy.serve.repository import write_repository

CLASSES = ["ankle boot", "bag", "coat", "dress", "pullover", "sandal", "shirt"]
PRE = Preprocess(input_size=(28, 28), channels=1, mean=(0.286,), std=(0.353,))
FILES = {"model.onnx": ("fp32", "onnx", "any"), "model.int8.onnx": ("int8", "onnx", "cpu"),
         "model.fp16.onnx": ("fp16", "onnx", "any"), "model.fp32.engine": ("fp32", "engine", "trt"),
         "model.fp16.engine": ("fp16", "engine", "trt")}


def _bundle(root: Path, files: tuple[str, ...] = tuple(FILES), batch: tuple[int, int, int] = (1, 8, 32)) -> Path:
    """A bundle whose model files are random bytes, with a manifest that matches them."""
    root.mkdir(parents=True)
    rng = np.random.default_rng(len(files))
    entries = []
    for name in files:
        (root / name).write_bytes(rng.integers(0, 256, 1000 + 10 * len(name), dtype=np.uint8).tobytes())
        precision, fmt, target = FILES[name]
        engine = {"tensorrt_version": "10.13.0", "gpu": "NVIDIA H200", "compute_capability": "9.0"}
        info = engine if fmt == "engine" else {}
        entries.append(FileEntry.for_file(root, name, precision, fmt, target, info))
    write_manifest(root, Manifest("cifar_resnet20", CLASSES, PRE, entries, batch=batch))
    return root


def _config(path: Path):  # -> model_config_pb2.ModelConfig
    """Parse a config.pbtxt with Triton's own ModelConfig protobuf (what tritonserver does at load)."""
    model_config_pb2 = pytest.importorskip("tritonclient.grpc.model_config_pb2",
                                           reason="tritonclient (the serve extra) carries Triton's ModelConfig schema")
    from google.protobuf import text_format

    return text_format.Parse(path.read_text(), model_config_pb2.ModelConfig())


def test_python_repository_layout_and_config(tmp_path: Path) -> None:
    bundle = _bundle(tmp_path / "b")
    repo = write_repository(bundle, tmp_path / "repo", name="fmnist", max_queue_delay_us=500, instances=2, topk=3,
                            threads=1, sys_path=["/opt/env/site-packages"])
    model = repo / "fmnist"
    assert sorted(p.name for p in repo.iterdir()) == ["fmnist", "resnet-deploy.json"]
    assert (model / "1" / "model.py").read_text().startswith('"""Triton Python-backend model for a resnet-deploy')
    # every model file a CPU variant runs, byte for byte ("auto" chooses at load), and a manifest listing just those:
    # no engine (the python model runs on the CPU), never the bundle's other files
    cpu_files = ["model.fp16.onnx", "model.int8.onnx", "model.onnx"]
    assert sorted(p.name for p in (model / "1" / "bundle").iterdir()) == ["manifest.json", *cpu_files]
    for name in cpu_files:
        assert sha256_file(model / "1" / "bundle" / name) == sha256_file(bundle / name)
    assert sorted(f.path for f in read_manifest(model / "1" / "bundle").files) == cpu_files
    assert (model / "labels.txt").read_text().splitlines() == CLASSES
    assert (model / "sys_path.txt").read_text() == "/opt/env/site-packages\n"
    c = _config(model / "config.pbtxt")
    assert (c.name, c.backend, c.max_batch_size) == ("fmnist", "python", 32)
    assert [(i.name, i.data_type, list(i.dims), i.optional) for i in c.input] == [
        ("image", 13, [1], True), ("input", 11, [1, 28, 28], True)]  # TYPE_STRING, TYPE_FP32
    assert [(o.name, list(o.dims), o.label_filename) for o in c.output] == [
        ("logits", [7], "labels.txt"), ("labels", [3], ""), ("scores", [3], ""), ("class_ids", [3], "")]
    assert c.dynamic_batching.max_queue_delay_microseconds == 500
    assert [(g.count, g.kind) for g in c.instance_group] == [(2, c.instance_group[0].KIND_CPU)]
    params = {k: v.string_value for k, v in c.parameters.items()}
    assert params == {"role": "classify", "runtime_backend": "auto", "threads": "1", "max_image_bytes": "33554432"}
    facts = json.loads((repo / "resnet-deploy.json").read_text())
    assert facts["target"] == "python" and facts["backend"] == "auto" and facts["max_batch_size"] == 32


@pytest.mark.parametrize("precision, backend", [("fp32", "onnx"), ("fp16", "fp16"), ("int8", "int8")])
def test_python_precision_fixes_the_runtime_backend(tmp_path: Path, precision: str, backend: str) -> None:
    repo = write_repository(_bundle(tmp_path / "b"), tmp_path / "repo", precision=precision, max_batch=64, topk=50)
    c = _config(repo / "cifar_resnet20" / "config.pbtxt")
    assert c.parameters["runtime_backend"].string_value == backend
    file = {"onnx": "model.onnx", "fp16": "model.fp16.onnx", "int8": "model.int8.onnx"}[backend]
    assert sorted(p.name for p in (repo / "cifar_resnet20" / "1" / "bundle").iterdir()) == ["manifest.json", file]
    assert c.max_batch_size == 64  # the python model splits larger batches itself
    assert list(c.output[1].dims) == [len(CLASSES)]  # topk capped at the class count


def test_onnxruntime_repository_has_model_preprocess_and_ensemble(tmp_path: Path) -> None:
    bundle = _bundle(tmp_path / "b", batch=(1, 8, 16))
    repo = write_repository(bundle, tmp_path / "repo", target="onnxruntime", precision="fp16", instances=3)
    assert sorted(p.name for p in repo.iterdir() if p.is_dir()) == [
        "cifar_resnet20", "cifar_resnet20_image", "cifar_resnet20_preprocess"]
    assert sha256_file(repo / "cifar_resnet20" / "1" / "model.onnx") == sha256_file(bundle / "model.fp16.onnx")
    m = _config(repo / "cifar_resnet20" / "config.pbtxt")
    assert (m.platform, m.max_batch_size) == ("onnxruntime_onnx", 16)
    assert [(i.name, list(i.dims)) for i in m.input] == [("input", [1, 28, 28])]
    assert [(o.name, list(o.dims), o.label_filename) for o in m.output] == [("logits", [7], "labels.txt")]
    assert [(g.count, g.kind) for g in m.instance_group] == [(3, m.instance_group[0].KIND_GPU)]
    assert m.HasField("dynamic_batching")
    p = _config(repo / "cifar_resnet20_preprocess" / "config.pbtxt")
    assert p.backend == "python" and p.parameters["role"].string_value == "preprocess"
    assert [(o.name, list(o.dims)) for o in p.output] == [("input", [1, 28, 28])]
    assert sorted(f.name for f in (repo / "cifar_resnet20_preprocess" / "1" / "bundle").iterdir()) == ["manifest.json"]
    e = _config(repo / "cifar_resnet20_image" / "config.pbtxt")
    assert (e.platform, e.max_batch_size, e.input[0].name) == ("ensemble", 16, "image")
    steps = [(s.model_name, dict(s.input_map), dict(s.output_map)) for s in e.ensemble_scheduling.step]
    assert steps == [("cifar_resnet20_preprocess", {"image": "image"}, {"input": "preprocessed"}),
                     ("cifar_resnet20", {"input": "preprocessed"}, {"logits": "logits"})]


def test_tensorrt_repository_takes_the_best_engine(tmp_path: Path) -> None:
    bundle = _bundle(tmp_path / "b")
    repo = write_repository(bundle, tmp_path / "repo", target="tensorrt")
    assert sha256_file(repo / "cifar_resnet20" / "1" / "model.plan") == sha256_file(bundle / "model.fp16.engine")
    c = _config(repo / "cifar_resnet20" / "config.pbtxt")
    assert (c.platform, c.max_batch_size) == ("tensorrt_plan", 32)
    assert json.loads((repo / "resnet-deploy.json").read_text())["backend"] == "trt-fp16"


@pytest.mark.parametrize("target, models", [
    ("python", 1), ("onnxruntime", 3), ("tensorrt", 3)])
def test_every_generated_config_parses_with_tritons_schema(tmp_path: Path, target: str, models: int) -> None:
    repo = write_repository(_bundle(tmp_path / "b"), tmp_path / "repo", target=target, precision="fp16")
    configs = sorted(repo.glob("*/config.pbtxt"))
    assert len(configs) == models
    assert [_config(c).name for c in configs] == [c.parent.name for c in configs]


@pytest.mark.parametrize("files, batch, options, message", [
    (("model.onnx",), (1, 8, 32), {"target": "tensorrt"},
     "the bundle has no trt-int8 or trt-fp8 or trt-fp16 or trt-fp32 model for --backend tensorrt --precision auto; "
     "export it "
     "with `resnet-deploy export ... --trt`"),
    (("model.onnx",), (1, 8, 32), {"target": "onnxruntime", "precision": "int8"},
     "the bundle has no int8-trt model for --backend onnxruntime --precision int8; export it with "
     "`resnet-deploy export ... --int8 --trt`"),
    (("model.onnx", "model.fp32.engine"), (4, 8, 32), {"target": "tensorrt"},
     "the bundle's engines take batches of 4 to 32, but Triton sends batches from 1; export again with "
     "--batch 1:OPT:MAX"),
    (("model.onnx",), (1, 8, 32), {"target": "onnxruntime", "max_batch": 33},
     "max batch 33 is larger than the bundle's largest batch 32 (export again with --batch 1:OPT:MAX to raise it)"),
    (("model.onnx",), (1, 8, 32), {"name": "my model"},
     "model name must be letters, digits, '_', '.' or '-' of 1 to 64 characters ([A-Za-z0-9][A-Za-z0-9_.-]{0,63}), "
     "found 'my model' (it becomes a directory and a URL path)"),
    (("model.onnx",), (1, 8, 32), {"instances": 0}, "instances must be an integer from 1 to 64, found 0"),
])
def test_bad_requests_are_one_line_and_write_nothing(tmp_path: Path, files: tuple[str, ...],
                                                      batch: tuple[int, int, int], options: dict,
                                                      message: str) -> None:
    bundle = _bundle(tmp_path / "b", files, batch)
    with pytest.raises(ResnetDeployError) as e:
        write_repository(bundle, tmp_path / "repo", **options)
    assert str(e.value) == message
    assert sorted(p.name for p in tmp_path.iterdir()) == ["b"]  # no repository, no staging directory left


def test_changed_bundle_is_refused(tmp_path: Path) -> None:
    bundle = _bundle(tmp_path / "b", ("model.onnx", "model.int8.onnx"))
    (bundle / "model.int8.onnx").write_bytes(b"changed")
    with pytest.raises(ResnetDeployError, match=r"^bundle file model.int8.onnx does not match the manifest"):
        write_repository(bundle, tmp_path / "repo")


def test_existing_repository_needs_force_and_others_are_never_replaced(tmp_path: Path) -> None:
    bundle = _bundle(tmp_path / "b", ("model.onnx",))
    repo = write_repository(bundle, tmp_path / "repo", name="one")
    with pytest.raises(ResnetDeployError, match="already exists; add --force to replace it"):
        write_repository(bundle, repo, name="two")
    write_repository(bundle, repo, name="two", force=True)
    assert sorted(p.name for p in repo.iterdir()) == ["resnet-deploy.json", "two"]
    other = tmp_path / "photos"
    other.mkdir()
    (other / "cat.jpg").write_bytes(b"\xff\xd8")
    with pytest.raises(ResnetDeployError) as e:
        write_repository(bundle, other, force=True)
    assert str(e.value) == (f"{other} is a non-empty directory that is not a model repository (no resnet-deploy.json);"
                            " --force replaces only a model repository")
    assert (other / "cat.jpg").read_bytes() == b"\xff\xd8"


def test_triton_command(tmp_path: Path) -> None:
    bundle = _bundle(tmp_path / "b", ("model.onnx",))
    r = CliRunner().invoke(main, ["triton", str(bundle), "--out", str(tmp_path / "repo"), "--backend",
                                  "onnxruntime"])
    assert r.exit_code == 0, r.output
    assert r.output.splitlines()[0] == (f"model repository written to {tmp_path / 'repo'}: cifar_resnet20, "
                                        "cifar_resnet20_image, cifar_resnet20_preprocess (onnx, max_batch_size 32)")
    r = CliRunner().invoke(main, ["triton", str(bundle), "--out", str(tmp_path / "r2"), "--backend", "openvino"])
    assert r.exit_code == 2
    assert r.output.strip() == ("Error: Invalid value for '--backend': 'openvino' is not one of 'python', "
                                "'onnxruntime', 'tensorrt'.")
    r = CliRunner().invoke(main, ["triton", str(tmp_path / "nothing"), "--out", str(tmp_path / "r3")])
    assert r.exit_code == 2 and r.output.strip() == f"Error: bundle directory not found: {tmp_path / 'nothing'}"


@pytest.mark.parametrize("url, expected", [
    ("http://127.0.0.1:8000", ("http", "127.0.0.1:8000")), ("127.0.0.1:9000", ("http", "127.0.0.1:9000")),
    ("grpc://localhost:8001", ("grpc", "localhost:8001")), ("http://[::1]:8000", ("http", "[::1]:8000")),
])
def test_loadtest_urls(url: str, expected: tuple[str, str]) -> None:
    assert parse_url(url) == expected


def test_loadtest_bad_input_is_one_line() -> None:
    r = CliRunner().invoke(main, ["loadtest", "ftp://host:21", "--model", "m"])
    assert r.exit_code == 2
    assert r.output.strip() == ("Error: expected a URL like http://127.0.0.1:8000 or grpc://127.0.0.1:8001, "
                                "found 'ftp://host:21'")
    r = CliRunner().invoke(main, ["loadtest", "http://127.0.0.1:8000", "--model", "m", "--concurrency", "1,x"])
    assert r.exit_code == 2 and r.output.strip() == "Error: --concurrency must be comma-separated numbers, found '1,x'"
    r = CliRunner().invoke(main, ["loadtest", "http://127.0.0.1:8000", "--model", "m", "--concurrency", "0"])
    assert r.exit_code == 2 and r.output.strip() == "Error: --concurrency must be an integer from 1 to 1024, found 0"


def test_python_repository_refuses_a_precision_the_bundle_lacks(tmp_path: Path) -> None:
    with pytest.raises(ResnetDeployError) as e:
        write_repository(_bundle(tmp_path / "b", ("model.onnx",)), tmp_path / "repo", precision="fp16")
    assert str(e.value) == ("the bundle has no fp16 model for --backend python --precision fp16; export it with "
                            "`resnet-deploy export ... --fp16`")


def test_tensorrt_command_names_the_engines_tensorrt(tmp_path: Path) -> None:
    r = CliRunner().invoke(main, ["triton", str(_bundle(tmp_path / "b")), "--out", str(tmp_path / "repo"),
                                  "--backend", "tensorrt", "--precision", "fp32"])
    assert r.exit_code == 0, r.output
    assert ("the engine was built with TensorRT 10.13.0 for NVIDIA H200: serve it with a Triton release that ships "
            "that TensorRT, on that GPU model") in r.output


def test_the_order_bench_measured_travels_into_the_repository(tmp_path: Path) -> None:
    """`auto` in a served Python model chooses what `predict` chooses here: the bundle's measured orders are copied
    beside the model files; the file of an onnxruntime repository follows a measured GPU order too."""
    from resnet_deploy.runtime import autotune
    from resnet_deploy.runtime.predictor import choose_backend

    bundle = _bundle(tmp_path / "b")
    r = CliRunner().invoke(main, ["triton", str(bundle), "--out", str(tmp_path / "plain")])
    static = choose_backend(bundle, read_manifest(bundle), "auto")
    assert r.exit_code == 0 and static[2].startswith(f"{autotune.UNMEASURED}: CPU "), r.output
    assert r.output.splitlines()[1] == f"on this machine: backend {static[0]} ({static[2]})"
    assert not (tmp_path / "plain" / "cifar_resnet20" / "1" / "bundle" / "reports").exists()
    order = ["fp16", "onnx"] if static[0] != "fp16" else ["onnx", "fp16"]
    autotune.record_order(bundle, order, p50_ms={order[0]: 0.5, order[1]: 0.9})
    autotune.record_order(bundle, ["onnx", "fp16"], device="cuda")
    want = choose_backend(bundle, read_manifest(bundle), "auto")
    assert want[0] == order[0] and want[2].startswith("fastest measured on this machine by bench (auto.json, 20")
    r = CliRunner().invoke(main, ["triton", str(bundle), "--out", str(tmp_path / "repo")])
    assert r.exit_code == 0, r.output
    served = tmp_path / "repo" / "cifar_resnet20" / "1" / "bundle"
    assert autotune.read_records(served) == autotune.read_records(bundle) and len(autotune.read_records(served)) == 2
    assert choose_backend(served, read_manifest(served), "auto") == want  # what model.py loads on this machine
    assert r.output.splitlines()[1] == f"on this machine: backend {want[0]} ({want[2]})"
    facts = json.loads((tmp_path / "repo" / "resnet-deploy.json").read_text())
    assert (facts["loads_here"], facts["why"], facts["auto_record"]) == (want[0], want[2], True)
    assert [f.path for f in read_manifest(served).files] == [f.path for f in read_manifest(
        tmp_path / "plain" / "cifar_resnet20" / "1" / "bundle").files]  # the record is a hint, not a model file
    unmeasured = write_repository(_bundle(tmp_path / "b2"), tmp_path / "gpu0", target="onnxruntime")
    assert json.loads((unmeasured / "resnet-deploy.json").read_text())["backend"] == "fp16"  # the static order
    gpu = write_repository(bundle, tmp_path / "gpu", target="onnxruntime")  # the measured one
    assert json.loads((gpu / "resnet-deploy.json").read_text())["backend"] == "onnx"
    assert sha256_file(gpu / "cifar_resnet20" / "1" / "model.onnx") == sha256_file(bundle / "model.onnx")


def test_the_triton_targets_are_the_registrys_runtimes() -> None:
    # a Triton backend is named by the registry's loader whose files it runs, and serves that loader's variants
    from resnet_deploy.runtime import backend, variants
    from resnet_deploy.serve import TARGETS, TRITON_BACKENDS
    from resnet_deploy.serve.repository import candidates

    assert TARGETS == ("python", *TRITON_BACKENDS)
    for name in TRITON_BACKENDS:
        assert name in backend.LOADERS
        assert candidates(name, "auto") and all(variants.get(v).loader == name for v in candidates(name, "auto"))
