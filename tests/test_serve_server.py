"""The real tritonserver (nvidia-pytriton's wheel) on 127.0.0.1, serving a tiny bundle through the Python backend.

Every answer is compared with the in-process `Predictor`; dynamic batching, malformed requests, SIGTERM under load,
`resnet-deploy serve` and `loadtest` are exercised against the running server. Skipped with the reason where the
`serve` extra is not installed. Ports are chosen free at run time; every client loop is bounded in count and time.
"""

from __future__ import annotations

import io
import json
import os
import queue
import signal
import struct
import subprocess
import sys
import threading
import zlib
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from PIL import Image

from resnet_deploy import models
from resnet_deploy.checkpoint import save_model
from resnet_deploy.cli import main
from resnet_deploy.runtime import Predictor, ResnetDeployError
from resnet_deploy.runtime.manifest import read_manifest
from resnet_deploy.runtime.predictor import choose_backend, softmax
from resnet_deploy.runtime.preprocess import Preprocess
from resnet_deploy.serve.addresses import check_port, free_ports
from resnet_deploy.serve.loadtest import run_loadtest
from resnet_deploy.serve.repository import write_repository
from resnet_deploy.serve.server import TritonServer, find_triton


def _skip_reason() -> str | None:
    try:
        import tritonclient.http  # noqa: F401

        find_triton()
    except ImportError:
        return "tritonclient is not installed (pip install 'resnet-deploy[serve]')"
    except ResnetDeployError as e:
        return str(e)
    return None


REASON = _skip_reason()
pytestmark = pytest.mark.skipif(REASON is not None, reason=REASON or "")
CLASSES = ["ankle", "bag", "coat", "dress"]
PP = Preprocess(input_size=(16, 16), channels=1, mean=(0.5,), std=(0.25,))
TIMEOUT_S = 60.0  # per request: far above any answer here, so a hang shows as a timeout error, never a stuck test


def _blocky(rng: np.random.Generator, h: int, w: int, channels: int = 1) -> np.ndarray:
    # 4x4 random blocks upsampled: unlike white noise they survive the average pool, so a random net tells them apart
    low = rng.integers(0, 256, (4, 4, channels), dtype=np.uint8)
    img = np.kron(low, np.ones((-(-h // 4), -(-w // 4), 1), np.uint8))[:h, :w]
    return img[:, :, 0] if channels == 1 else img


def _encode(img: np.ndarray, fmt: str) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, fmt)
    return buf.getvalue()


def _export(root: Path) -> Path:
    """ResNet-20, 1x16x16, 4 classes, its classifier re-centred so that blocky images get every class."""
    from resnet_deploy.export import ExportOptions, export_bundle

    x = torch.from_numpy(np.stack([PP(_blocky(np.random.default_rng(i), 16, 16)) for i in range(64)]))
    torch.manual_seed(0)
    model = models.build("cifar_resnet20", num_classes=len(CLASSES), in_channels=1).eval()
    with torch.no_grad():
        model.fc.weight *= 10 / model(x).std(0).mean()
        model.fc.bias -= model(x).mean(0)
    ckpt = save_model(root / "tiny.pt", model, "cifar_resnet20", CLASSES, PP, shortcut="A")
    return export_bundle(root / "bundle", ExportOptions(batch=(1, 8, 16)), checkpoint=ckpt)


def _start(repo: Path, **kwargs: object) -> TritonServer:
    http, grpc, metrics = free_ports(3)
    server = TritonServer(repo, http_port=http, grpc_port=grpc, metrics_port=metrics, exit_timeout_s=3, **kwargs)
    server.start(timeout_s=60)
    return server


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> SimpleNamespace:
    root = tmp_path_factory.mktemp("serve")
    bundle = _export(root)
    repo = write_repository(bundle, root / "repo", name="tiny", precision="fp32")
    server = _start(repo)
    predictor = Predictor.from_bundle(bundle, backend="onnx")
    try:
        yield SimpleNamespace(root=root, bundle=bundle, repo=repo, server=server, predictor=predictor,
                              address=server.url.removeprefix("http://"))
    finally:
        server.stop()
        predictor.close()


def _client(address: str):  # -> tritonclient.http.InferenceServerClient
    import tritonclient.http as th

    return th.InferenceServerClient(address, network_timeout=TIMEOUT_S, connection_timeout=TIMEOUT_S)


def _request(kind: str, data: object) -> list:
    import tritonclient.http as th

    if kind == "tensor":
        inp = th.InferInput("input", list(data.shape), "FP32" if data.dtype == np.float32 else "FP64")
    else:
        data = np.array([[d] for d in data], dtype=np.object_)
        inp = th.InferInput("image", list(data.shape), "BYTES")
    inp.set_data_from_numpy(data)
    return [inp]


def _payloads(n: int, predictor: Predictor) -> list[tuple[str, object, np.ndarray]]:
    """n requests, tensors (1-3 images) and PNG/JPEG files of random sizes, with the in-process logits for each."""
    rng = np.random.default_rng(7)
    out = []
    for i in range(n):
        if i % 3 == 0:
            x = np.stack([PP(_blocky(rng, 16, 16)) for _ in range(1 + i % 4 // 2 * 2)])
            out.append(("tensor", x, predictor.run(x)))
        else:
            img = _blocky(rng, int(rng.integers(12, 40)), int(rng.integers(12, 40)), 1 + 2 * (i % 2))
            data = _encode(img, "PNG" if i % 3 == 1 else "JPEG")
            out.append(("image", [data], predictor.run(predictor.preprocess_images([Image.open(io.BytesIO(data))]))))
    return out


def _run_clients(address: str, payloads: list, clients: int) -> list[tuple[int, object]]:
    """Each client thread sends its share of the payloads; (index, result or exception) for every request."""
    results: list[tuple[int, object]] = []

    def loop(k: int) -> None:
        client = _client(address)
        for i in range(k, len(payloads), clients):
            kind, data, _ = payloads[i]
            try:
                results.append((i, client.infer("tiny", _request(kind, data))))
            except Exception as e:  # tritonclient's InferenceServerException, or a socket error
                results.append((i, e))
        client.close()

    threads = [threading.Thread(target=loop, args=(k,), daemon=True) for k in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=len(payloads) * TIMEOUT_S)
    return results


def test_answers_match_the_in_process_predictor(served: SimpleNamespace) -> None:
    payloads = _payloads(504, served.predictor)
    results = _run_clients(served.address, payloads, clients=8)
    assert len(results) == 504
    errors = [r for _, r in results if isinstance(r, Exception)]
    assert not errors, errors[:3]
    for i, r in results:
        expected = payloads[i][2]
        logits, ids = r.as_numpy("logits"), r.as_numpy("class_ids")
        assert logits.shape == expected.shape and np.abs(logits - expected).max() <= 1e-5, i
        assert (ids[:, 0] == expected.argmax(1)).all() and (logits.argmax(1) == expected.argmax(1)).all()
        assert [[CLASSES[c] for c in row] for row in ids] == [[b.decode() for b in row] for row in r.as_numpy("labels")]
        probs = softmax(expected)
        assert np.allclose(r.as_numpy("scores"), np.take_along_axis(probs, ids, 1), atol=1e-6)
    top1 = np.concatenate([p[2].argmax(1) for p in payloads])
    assert len(set(top1.tolist())) == len(CLASSES)  # every class answered at least once: top-1 equality means something


def test_a_requests_pixels_arrive_intact_not_zeros(served: SimpleNamespace) -> None:
    """The stub of nvidia-pytriton's tritonserver reads request tensors as zeros under numpy 2: the served logits of
    random pixels must be the in-process logits of those pixels, which are far from those of zeros."""
    x = np.random.default_rng(11).standard_normal((3, *served.predictor.manifest.input_shape), dtype=np.float32)
    logits = _client(served.address).infer("tiny", _request("tensor", x)).as_numpy("logits")
    expected, of_zeros = served.predictor.run(x), served.predictor.run(np.zeros_like(x))
    assert np.abs(logits - expected).max() <= 1e-5
    assert np.abs(logits - of_zeros).max() > 0.5  # zeros read in the server could not pass the line above
    assert len({tuple(np.round(row, 3)) for row in logits}) == 3


ECHO = """
import os, sys
for p in reversed(os.environ["RESNET_DEPLOY_SYS_PATH"].split(os.pathsep)):
    sys.path.insert(0, p)
import numpy as np
import triton_python_backend_utils as pb_utils

class TritonPythonModel:
    def execute(self, requests):
        out = []
        for r in requests:
            x = pb_utils.get_input_tensor_by_name(r, "input").as_numpy()
            version = np.full((len(x), 1), np.__version__.encode(), np.object_)
            out.append(pb_utils.InferenceResponse([pb_utils.Tensor("echo", x), pb_utils.Tensor("numpy", version)]))
        return out
"""


def test_the_server_sees_the_very_bytes_sent_with_the_server_environments_numpy(tmp_path: Path) -> None:
    """What the Python backend hands a model is the request's float32 array, bit for bit (a model that echoes it),
    read with the server environment's numpy 1.x while this process may run numpy 2."""
    import tritonclient.http as th

    from resnet_deploy.serve.environment import probe

    model = tmp_path / "repo" / "echo"
    (model / "1").mkdir(parents=True)
    (model / "1" / "model.py").write_text(ECHO)
    (model / "config.pbtxt").write_text(
        'name: "echo"\nbackend: "python"\nmax_batch_size: 8\n'
        'input [ { name: "input" data_type: TYPE_FP32 dims: [ 1, 16, 16 ] } ]\n'
        'output [ { name: "echo" data_type: TYPE_FP32 dims: [ 1, 16, 16 ] }, '
        '{ name: "numpy" data_type: TYPE_STRING dims: [ 1 ] } ]\n')
    x = np.random.default_rng(5).standard_normal((4, 1, 16, 16), dtype=np.float32) * 100
    server = _start(tmp_path / "repo")
    try:
        client = th.InferenceServerClient(server.url.removeprefix("http://"), network_timeout=TIMEOUT_S)
        inp = th.InferInput("input", list(x.shape), "FP32")
        inp.set_data_from_numpy(x)
        r = client.infer("echo", [inp])
    finally:
        server.stop()
    assert r.as_numpy("echo").tobytes() == x.tobytes()
    assert {v.decode() for v in r.as_numpy("numpy").reshape(-1)} == {probe().numpy}
    assert probe().numpy.startswith("1.")


def test_dynamic_batching_forms_batches_under_concurrency(served: SimpleNamespace) -> None:
    client = _client(served.address)

    def counts() -> tuple[int, int, dict[int, int]]:
        s = client.get_inference_statistics("tiny")["model_stats"][0]
        return s["inference_count"], s["execution_count"], {b["batch_size"]: b["compute_infer"]["count"]
                                                              for b in s["batch_stats"]}

    before = counts()
    rng = np.random.default_rng(3)
    payloads = [("tensor", PP(_blocky(rng, 16, 16))[None], None) for _ in range(240)]
    assert not [r for _, r in _run_clients(served.address, payloads, clients=8) if isinstance(r, Exception)]
    after = counts()
    client.close()
    assert after[0] - before[0] == 240
    assert after[1] - before[1] < 240  # fewer executions than requests: requests were batched
    assert max(after[2]) > 1 and sum(n for b, n in after[2].items() if b > 1) > 0


def _png_header(width: int, height: int) -> bytes:
    """A PNG that declares width x height grey pixels (and holds almost none): the decompression-bomb shape."""
    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")


@pytest.mark.parametrize("kind, data, message", [
    ("tensor", np.zeros((1, 1, 15, 16), np.float32),
     "unexpected shape for input 'input' for model 'tiny'. Expected [-1,1,16,16], got [1,1,15,16]"),
    ("tensor", np.zeros((1, 1, 16, 16), np.float64),
     "inference input 'input' data-type is 'FP64', but model 'tiny' expects 'FP32'"),
    ("image", [b"GIF89a not really"], "[400] not a readable image: image of 17 bytes (none of PNG, JPEG, BMP, GIF, "
                                      "TIFF, WEBP, PPM; it starts b'GIF89a n')"),
    ("image", [b""], "[400] empty image: 0 bytes"),
    ("image", [_png_header(10_000, 10_000)],
     "[400] image of 69 bytes is 10000x10000 = 100,000,000 pixels, over the limit of 24,000,000 pixels and 65,535 per "
     "side; scale it down first"),
    ("image", [_encode(np.full((20, 20), 9, np.uint8), "PNG")[:-30]],
     "[400] not a readable image: image of 47 bytes (image file is truncated)"),
    ("image", [_encode(np.full((20, 20), 9, np.uint8), "PNG"), b"\xff\xd8\xff"],
     "[400] image 2 of 2: not a readable image: image of 3 bytes (none of PNG, JPEG, BMP, GIF, TIFF, WEBP, PPM; it "
     "starts b'\\xff\\xd8\\xff')"),
    ("none", None, "request has 0 inputs"),
])
def test_malformed_requests_get_an_error_and_the_server_goes_on(served: SimpleNamespace, kind: str, data: object,
                                                                message: str) -> None:
    import tritonclient.http as th

    client = _client(served.address)
    with pytest.raises(th.InferenceServerException) as e:
        client.infer("tiny", [] if kind == "none" else _request(kind, data))
    assert message in str(e.value)
    x = PP(_blocky(np.random.default_rng(11), 16, 16))[None]
    good = client.infer("tiny", _request("tensor", x)).as_numpy("logits")
    assert np.abs(good - served.predictor.run(x)).max() <= 1e-5
    client.close()


def test_bad_requests_in_a_batch_do_not_spoil_the_good_ones(served: SimpleNamespace) -> None:
    good = _payloads(80, served.predictor)
    bad = [("image", [b"not an image"], None)] * 80
    mixed = [p for pair in zip(good, bad, strict=True) for p in pair]
    results = dict(_run_clients(served.address, mixed, clients=8))
    for i, (_, _, expected) in enumerate(mixed):
        if expected is None:
            assert isinstance(results[i], Exception) and "not a readable image: image of 12 bytes" in str(results[i])
        else:
            assert np.abs(results[i].as_numpy("logits") - expected).max() <= 1e-5


def test_preprocessing_model_of_the_gpu_repository_serves_here(served: SimpleNamespace) -> None:
    """The onnxruntime/tensorrt repositories' Python preprocessing model runs here (the rest needs a GPU)."""
    repo = write_repository(served.bundle, served.root / "ort-repo", name="tiny", target="onnxruntime")
    server = _start(repo, models=["tiny_preprocess"])
    try:
        client = _client(server.url.removeprefix("http://"))
        data = _encode(_blocky(np.random.default_rng(5), 30, 22, 3), "JPEG")
        r = client.infer("tiny_preprocess", _request("image", [data]))
        client.close()
    finally:
        server.stop()
    expected = served.predictor.preprocess_images([Image.open(io.BytesIO(data))])
    assert np.array_equal(r.as_numpy("input"), expected)


def test_a_bundle_changed_in_the_repository_is_refused_at_load(served: SimpleNamespace) -> None:
    repo = write_repository(served.bundle, served.root / "changed-repo", name="tiny")
    onnx = repo / "tiny" / "1" / "bundle" / "model.onnx"
    onnx.write_bytes(onnx.read_bytes()[:-1] + b"\0")
    with pytest.raises(ResnetDeployError) as e:
        _start(repo)
    assert str(e.value).startswith("tritonserver exited before it was ready (exit code 1): ")
    assert "bundle file model.onnx does not match the manifest's blake3/size" in str(e.value)


def test_loadtest_against_the_server(served: SimpleNamespace, tmp_path: Path) -> None:
    result = run_loadtest(served.server.url, "tiny", concurrency=[1, 4], duration_s=5, warmup_s=0.1,
                          max_requests=40)
    assert [(r["concurrency"], r["requests"], r["errors"]) for r in result["results"]] == [(1, 40, 0), (4, 40, 0)]
    lat = result["results"][1]["latency_ms"]
    assert 0 < lat["min"] <= lat["p50"] <= lat["p90"] <= lat["p95"] <= lat["p99"] <= lat["max"]
    images = tmp_path / "images"
    images.mkdir()
    for i in range(3):
        (images / f"{i}.png").write_bytes(_encode(_blocky(np.random.default_rng(i), 20, 20), "PNG"))
    out = tmp_path / "load.json"
    r = CliRunner().invoke(main, ["loadtest", served.server.url, "--model", "tiny", "--concurrency", "2",
                                  "--duration-s", "5", "--warmup-s", "0", "--max-requests", "12", "--output", "labels",
                                  "--images", str(images), "--json", str(out)])
    assert r.exit_code == 0, r.output
    assert "concurrency   2  min " in r.output and "12 requests" in r.output
    assert '"payload": "images"' in out.read_text()


def test_loadtest_over_grpc_closed_and_open_loop_with_the_clients_cpu(served: SimpleNamespace, tmp_path: Path) -> None:
    url = f"grpc://{served.server.grpc_address}"
    result = run_loadtest(url, "tiny", concurrency=[2], duration_s=30, warmup_s=0, max_requests=30)
    row = result["results"][0]
    assert (result["protocol"], result["mode"], row["concurrency"], row["requests"], row["errors"]) == (
        "grpc", "concurrency", 2, 30, 0)
    assert row["client_cpu_s"] > 0 and row["client_cpu_ms_per_request"] == row["client_cpu_s"] * 1e3 / 30
    out = tmp_path / "rate.json"
    r = CliRunner().invoke(main, ["loadtest", url, "--model", "tiny", "--rate", "20/s,40", "--duration-s", "1",
                                  "--warmup-s", "0", "--max-threads", "4", "--json", str(out)])
    assert r.exit_code == 0, r.output
    result = json.loads(out.read_text())
    assert result["mode"] == "rate"
    assert [(x["rate"], x["max_threads"], x["requests"], x["errors"]) for x in result["results"]] == [
        (20.0, 4, 20, 0), (40.0, 4, 40, 0)]
    for x, line in zip(result["results"], r.output.splitlines()[1:], strict=True):
        n = x["requests"]
        # n requests, the last due (n - 1) / rate after the first: the achieved rate cannot be above n / that
        assert 0 < x["achieved_rate_rps"] <= x["rate"] * n / (n - 1)
        assert x["achieved_rate_rps"] == x["throughput_ips"]
        assert x["client_cpu_ms_per_request"] > 0 and x["client_cpu_cores"] > 0
        assert 0 <= x["send_lag_ms"]["p50"] <= x["send_lag_ms"]["p99"] <= x["send_lag_ms"]["max"]
        assert line.startswith(f"rate {x['rate']:>7g}/s  min ") and "achieved" in line and "client CPU" in line


def test_sigterm_under_load_answers_or_refuses_every_request(served: SimpleNamespace) -> None:
    server = _start(served.repo)
    address = server.url.removeprefix("http://")
    x = PP(_blocky(np.random.default_rng(2), 16, 16))[None]
    expected = served.predictor.run(x)
    outcomes: list[str] = []
    answered = threading.Event()

    def loop() -> None:
        client, failures = _client(address), 0
        for _ in range(20_000):  # bounded: the server stops within exit_timeout_s (3 s) of SIGTERM
            try:
                logits = client.infer("tiny", _request("tensor", x)).as_numpy("logits")
                outcomes.append("answer" if np.abs(logits - expected).max() <= 1e-5 else "wrong answer")
                answered.set()
            except Exception as e:
                outcomes.append(f"error: {e}")
                failures += 1
                if failures >= 3:
                    break
        client.close()

    threads = [threading.Thread(target=loop, daemon=True) for _ in range(8)]
    for t in threads:
        t.start()
    assert answered.wait(timeout=TIMEOUT_S)
    server.process.send_signal(signal.SIGTERM)
    for t in threads:
        t.join(timeout=TIMEOUT_S)
    server.stop()
    assert not any(t.is_alive() for t in threads)  # no request left hanging
    assert "wrong answer" not in outcomes and outcomes.count("answer") > 0
    errors = {o for o in outcomes if o != "answer"}
    # An error is a refused connection or one closed by the exiting server, never a timeout.
    assert errors and all("Connection refused" in o or "connection closed" in o.lower() for o in errors), errors
    check_port("127.0.0.1", server.http_port)  # nothing listens any more


@pytest.mark.parametrize("stop", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_serve_command_stops_on_a_signal_and_leaves_nothing(served: SimpleNamespace, tmp_path: Path,
                                                            stop: signal.Signals) -> None:
    http, grpc, metrics = free_ports(3)
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    # Started as a shell starts a background job, with SIGINT ignored (exec keeps that): `serve` must override it.
    cmd = ["sh", "-c", 'trap "" INT; exec "$0" "$@"', sys.executable, "-m", "resnet_deploy.cli", "serve",
           str(served.bundle), "--port", str(http), "--grpc-port", str(grpc), "--metrics-port", str(metrics),
           "--name", "tiny"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "TMPDIR": str(tmp)})
    lines: queue.Queue[str] = queue.Queue()
    threading.Thread(target=lambda: [lines.put(line) for line in proc.stdout], daemon=True).start()
    try:
        ready = lines.get(timeout=TIMEOUT_S)
        name, _, why = choose_backend(served.bundle, read_manifest(served.bundle), "auto")  # what predict loads
        assert ready.startswith(f"ready: http://127.0.0.1:{http} (model 'tiny', backend {name} ({why}); gRPC "
                                f"127.0.0.1:{grpc}; metrics http://127.0.0.1:{metrics}/metrics)"), ready
        assert len(_ours(tmp)) == 2  # the repository and the backend directory live there while serving
        client = _client(f"127.0.0.1:{http}")
        x = PP(_blocky(np.random.default_rng(4), 16, 16))[None]
        assert np.abs(client.infer("tiny", _request("tensor", x)).as_numpy("logits")
                      - served.predictor.run(x)).max() <= 1e-5
        client.close()
        proc.send_signal(stop)
        assert proc.wait(timeout=TIMEOUT_S) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert "stopped (tritonserver exit code 0)" in proc.stderr.read()
    assert _ours(tmp) == []
    for port in (http, grpc, metrics):
        check_port("127.0.0.1", port)
    assert _processes_mentioning(str(tmp)) == []  # tritonserver and its Python stubs are gone
    leftover = [p.name for p in Path("/dev/shm").glob("resnet-deploy-*")]
    assert all(name.startswith(served.server.shm_prefix) for name in leftover), leftover  # only the fixture's


def _ours(tmp: Path) -> list[str]:
    # Only what serve makes: onnxruntime writes a `.ses` file into TMPDIR on import, whoever imports it.
    return sorted(p.name for p in tmp.iterdir() if p.name.startswith("resnet-deploy-"))


def _processes_mentioning(text: str) -> list[int]:
    found = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            if text.encode() in cmdline.read_bytes():
                found.append(int(cmdline.parent.name))
        except OSError:  # the process ended while we looked
            pass
    return found
