"""Serving as a trust boundary: a hostile bundle must not reach Triton's config or its Python backend's environment, a
client must not kill the server, `serve` killed with SIGKILL must not leave a server behind, and every number and
name given to `triton`/`serve`/`loadtest` is bounded and refused in one line.

Classes: code from a bundle (names into config.pbtxt, files into the repository); the shared-memory attack on the real
tritonserver; `kill -9` of `serve`; request options and names; loadtest's outcome and outputs; malformed URLs and
image folders; the messages of a dead, failed or misaddressed server. Tests that run tritonserver skip with the
reason where the `serve` extra is not installed; every server listens on 127.0.0.1 (or ::1) on ports chosen free,
and every wait is bounded.
"""

from __future__ import annotations

import io
import json
import os
import queue
import signal
import socket
import subprocess
import sys
import tarfile
import tempfile
import threading
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from click.testing import CliRunner
from test_serve_server import PP, REASON, _blocky, _client, _export, _ours, _processes_mentioning, _request

from resnet_deploy.cli import main
from resnet_deploy.runtime import BundleError, Predictor, ResnetDeployError, read_manifest
from resnet_deploy.runtime.errors import printable
from resnet_deploy.runtime.manifest import FileEntry, write_manifest
from resnet_deploy.serve import server as server_mod
from resnet_deploy.serve import workdirs
from resnet_deploy.serve.addresses import check_port, free_ports
from resnet_deploy.serve.loadtest import read_images
from resnet_deploy.serve.repository import pbtxt_string, write_repository
from resnet_deploy.serve.server import TritonServer
from resnet_deploy.serve.workdirs import remove_leftovers

needs_triton = pytest.mark.skipif(REASON is not None, reason=REASON or "")
TIMEOUT_S = 60.0
# What the red team sent: a tensor name that closes its string and adds a parameter making the Python backend
# activate an environment tarball the bundle carries.
INJECTION = ('input"\n  data_type: TYPE_FP32\n  dims: [ 1 ]\n}\n]\nparameters {\n  key: "EXECUTION_ENV_PATH"\n  value: '
             '{ string_value: "$$TRITON_MODEL_DIRECTORY/1/bundle/env.tar.gz" }\n}\ninput [\n{\n  name: "x')


def cli(*args: str):
    return CliRunner().invoke(main, list(args))


def one_line(r) -> str:
    lines = r.output.strip().splitlines()
    assert r.exit_code == 2 and len(lines) == 1, (r.exit_code, r.output, r.exception)
    return lines[0]


def _hostile_strings(rng: np.random.Generator, n: int) -> list[str]:
    """Random strings of what ends or escapes a text-format string, breaks a line or turns text around."""
    alphabet = list('"\\\n\r\t{}[]:#\'$ \x00\x1b\u202e\u2028') + list("abcXYZ_09.-") + ["日", "é", "😀"]
    return [INJECTION, "abc\n", "input\n", "", "x" * 65, "1st"] + [
        "".join(rng.choice(alphabet, int(rng.integers(1, 40)))) for _ in range(n)]


@pytest.fixture(scope="module")
def made(tmp_path_factory: pytest.TempPathFactory) -> SimpleNamespace:
    root = tmp_path_factory.mktemp("sec-serve")
    bundle = _export(root)
    return SimpleNamespace(root=root, bundle=bundle, predictor=Predictor.from_bundle(bundle, backend="onnx"))


def _with_files(bundle: Path, where: Path, marker: Path) -> Path:
    """A copy of `bundle` whose manifest also lists export.log and an environment tarball (as text files), the
    tarball's activation script creating `marker`."""
    import shutil

    out = Path(shutil.copytree(bundle, where))
    script = f"touch {marker}\n".encode()
    with tarfile.open(out / "env.tar.gz", "w:gz") as tar:
        info = tarfile.TarInfo("bin/activate")
        info.size, info.mode = len(script), 0o755
        tar.addfile(info, io.BytesIO(script))
    m = read_manifest(out)
    listed = {f.path for f in m.files}
    extra = [FileEntry.for_file(out, name, "none", "text") for name in ("env.tar.gz", "export.log")
             if name not in listed]
    write_manifest(out, m.__class__(**{**m.__dict__, "files": [*m.files, *extra]}))
    return out


# ------------------------------------------------------------------------------------- 1. code from a bundle
@pytest.mark.parametrize("field", ["input.name", "output.name", "arch"])
def test_hostile_names_are_refused_when_the_manifest_is_read(made: SimpleNamespace, tmp_path: Path,
                                                             field: str) -> None:
    rule = ("an identifier of 1 to 64 characters ([A-Za-z_][A-Za-z0-9_]{0,63})" if field != "arch" else
            "letters, digits, '_', '.' or '-' of 1 to 64 characters ([A-Za-z0-9][A-Za-z0-9_.-]{0,63})")
    bundle = _with_files(made.bundle, tmp_path / "b", tmp_path / "ran")
    from resnet_deploy.runtime.manifest import ARCH_NAME, TENSOR_NAME

    for name in _hostile_strings(np.random.default_rng(), 12):
        if (ARCH_NAME if field == "arch" else TENSOR_NAME).fullmatch(name):
            continue  # a random draw that is a fine name ("1st" is one for a model)
        d = json.loads((bundle / "manifest.json").read_text())
        section, _, key = field.rpartition(".")
        (d[section] if section else d)[key] = name
        (bundle / "manifest.json").write_text(json.dumps(d))
        with pytest.raises(BundleError) as e:
            read_manifest(bundle)
        assert str(e.value).startswith(f"manifest field {field} must be {rule}, found "), name
        line = one_line(cli("serve", str(bundle), "--port", "1"))  # refused before a port or server is touched
        assert line == printable(f"Error: {e.value}") and "\n" not in line
        assert not (tmp_path / "ran").exists()


def test_every_string_of_a_config_is_one_escaped_string() -> None:
    model_config_pb2 = pytest.importorskip("tritonclient.grpc.model_config_pb2", reason="tritonclient (serve extra)")
    from google.protobuf import text_format

    rng = np.random.default_rng()
    strings = _hostile_strings(rng, 200) + ["".join(chr(int(c)) for c in rng.integers(1, 0xD7FF, 30))]
    for key, value in zip(strings, reversed(strings), strict=True):
        text = (f"name: {pbtxt_string(key)}\nparameters {{\n  key: {pbtxt_string(key)}\n  value: {{ string_value: "
                f"{pbtxt_string(value)} }}\n}}\n")
        config = text_format.Parse(text, model_config_pb2.ModelConfig())
        assert config.name == key and {k: v.string_value for k, v in config.parameters.items()} == {key: value}


def test_a_repository_holds_only_the_served_model_files_and_escaped_labels(made: SimpleNamespace,
                                                                           tmp_path: Path) -> None:
    model_config_pb2 = pytest.importorskip("tritonclient.grpc.model_config_pb2", reason="tritonclient (serve extra)")
    from google.protobuf import text_format

    bundle = _with_files(made.bundle, tmp_path / "b", tmp_path / "ran")
    classes = ["ankle\nboot", 'bag" }', "coat\u202ekcap", "dress\x1b[2J"]
    m = read_manifest(bundle)
    write_manifest(bundle, m.__class__(**{**m.__dict__, "classes": classes}))
    for target, model in (("python", "tiny"), ("onnxruntime", "tiny_preprocess")):
        repo = write_repository(bundle, tmp_path / target, name="tiny", target=target)
        held = sorted(p.name for p in (repo / model / "1" / "bundle").iterdir())
        assert held == (["manifest.json", "model.onnx"] if target == "python" else ["manifest.json"])
        assert [f.path for f in read_manifest(repo / model / "1" / "bundle").files] == ["model.onnx"]
        assert not list(repo.rglob("env.tar.gz")) and not list(repo.rglob("export.log"))
        labels = (repo / "tiny" / "labels.txt").read_text().splitlines()
        assert labels == ["ankle\\nboot", 'bag" }', "coat\\u202ekcap", "dress\\x1b[2J"]
        for config in repo.rglob("config.pbtxt"):
            parsed = text_format.Parse(config.read_text(), model_config_pb2.ModelConfig())
            assert "EXECUTION_ENV_PATH" not in parsed.parameters


@needs_triton
def test_a_bundle_carrying_an_environment_runs_none_of_it(made: SimpleNamespace, tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    bundle = _with_files(made.bundle, tmp_path / "b", marker)
    d = json.loads((bundle / "manifest.json").read_text())
    d["input"]["name"] = INJECTION
    (tmp_path / "evil").mkdir()
    (tmp_path / "evil" / "manifest.json").write_text(json.dumps(d))
    for f in bundle.iterdir():
        if f.name != "manifest.json":
            (tmp_path / "evil" / f.name).write_bytes(f.read_bytes())
    assert one_line(cli("serve", str(tmp_path / "evil"))).startswith("Error: manifest field input.name must be")
    server = _start(write_repository(bundle, tmp_path / "repo", name="tiny"))  # the tarball listed, names fine
    try:
        x = PP(_blocky(np.random.default_rng(1), 16, 16))[None]
        client = _client(server.url.removeprefix("http://"))
        assert np.abs(client.infer("tiny", _request("tensor", x)).as_numpy("logits")
                      - made.predictor.run(x)).max() <= 1e-5
        client.close()
    finally:
        server.stop()
    assert not marker.exists()


# ---------------------------------------------------------------------- 3. two requests that killed the server
def _start(repo: Path, **kwargs: object) -> TritonServer:
    http, grpc, metrics = free_ports(3)
    server = TritonServer(repo, http_port=http, grpc_port=grpc, metrics_port=metrics, exit_timeout_s=3, **kwargs)
    server.start(timeout_s=TIMEOUT_S)
    return server


def _shared_memory_attack(server: TritonServer, predictor: Predictor) -> str:
    """Register the Python backend's own /dev/shm region as a client region and ask for an answer in it; then
    whether the server still answers correctly."""
    import tritonclient.http as th

    client = _client(server.url.removeprefix("http://"))
    regions = sorted(p.name for p in Path(workdirs.SHM_DIR).iterdir() if p.name.startswith(server.shm_prefix))
    assert regions, "the Python backend made no shared-memory region"
    try:
        client.register_system_shared_memory("victim", f"/{regions[0]}", 1 << 20)
        said = "registered"
    except th.InferenceServerException as e:
        said = str(e)
    x = PP(_blocky(np.random.default_rng(2), 16, 16))[None]
    out = th.InferRequestedOutput("logits")
    out.set_shared_memory("victim", x.size * 4)
    try:
        client.infer("tiny", _request("tensor", x), outputs=[out])
    except (th.InferenceServerException, OSError):
        pass
    deadline = time.monotonic() + 5
    while not server.exited() and time.monotonic() < deadline:
        time.sleep(0.1)
    if server.exited():
        return f"{said}; server {server.exit_status()}"
    logits = client.infer("tiny", _request("tensor", x)).as_numpy("logits")
    client.close()
    return f"{said}; still answers {'right' if np.abs(logits - predictor.run(x)).max() <= 1e-5 else 'WRONG'}"


@needs_triton
def test_the_shared_memory_attack_kills_an_open_server_and_is_refused_by_serve(made: SimpleNamespace,
                                                                            tmp_path: Path,
                                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    repo = write_repository(made.bundle, tmp_path / "repo", name="tiny", precision="fp32")
    real = TritonServer.command
    # the control: tritonserver as it was started before, every API open
    monkeypatch.setattr(TritonServer, "command", lambda self, *a: [c for c in real(self, *a) if "restricted" not in c])
    server = _start(repo)
    try:
        # the server dies of its own memory corruption: SIGABRT or SIGSEGV, depending on what it overwrote
        assert _shared_memory_attack(server, made.predictor).startswith("registered; server killed by SIG")
    finally:
        server.stop()
    monkeypatch.setattr(TritonServer, "command", real)
    server = _start(repo)
    try:
        assert _shared_memory_attack(server, made.predictor) == (
            "[403] This API is restricted, expecting header 'resnet-deploy-admin-key'; still answers right")
        import tritonclient.http as th

        client = _client(server.url.removeprefix("http://"))
        for call in (lambda: client.load_model("tiny", files={"file:1/model.py": b"import os"}),
                     lambda: client.update_log_settings({"log_file": str(tmp_path / "elsewhere.log")}),
                     lambda: client.update_trace_settings(settings={"trace_file": str(tmp_path / "t.json")})):
            with pytest.raises(th.InferenceServerException, match="This API is restricted"):
                call()
        client.close()
    finally:
        server.stop()
    assert not (tmp_path / "elsewhere.log").exists() and not (tmp_path / "t.json").exists()


# ------------------------------------------------------------------------------------------ 5. kill -9 of serve
def _serve(bundle: Path, tmp: Path, *args: str) -> tuple[subprocess.Popen, queue.Queue, list[int]]:
    ports = free_ports(3)
    cmd = [sys.executable, "-m", "resnet_deploy.cli", "serve", str(bundle), "--port", str(ports[0]), "--grpc-port",
           str(ports[1]), "--metrics-port", str(ports[2]), "--name", "tiny", *args]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "TMPDIR": str(tmp)})
    lines: queue.Queue[str] = queue.Queue()
    threading.Thread(target=lambda: [lines.put(line) for line in proc.stdout], daemon=True).start()
    return proc, lines, ports


def _gone(tmp: Path, ports: list[int], within_s: float) -> bool:
    deadline = time.monotonic() + within_s
    while _processes_mentioning(str(tmp)) and time.monotonic() < deadline:
        time.sleep(0.2)
    return not _processes_mentioning(str(tmp))


@needs_triton
def test_serve_killed_with_sigkill_takes_its_server_down_and_the_next_start_cleans_up(made: SimpleNamespace,
                                                                                       tmp_path: Path) -> None:
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    proc, lines, ports = _serve(made.bundle, tmp)
    try:
        assert lines.get(timeout=TIMEOUT_S).startswith("ready: ")
        left = _ours(tmp)
        prefix = json.loads((tmp / next(n for n in left if "triton" in n) / "owner.json").read_text())["shm_prefix"]
        proc.kill()  # SIGKILL: no handler runs, nothing is cleaned up by serve itself
        proc.wait(timeout=TIMEOUT_S)
        # the server gets SIGKILL from the kernel at once; its Python stubs see their parent gone and exit
        assert _gone(tmp, ports, within_s=30), _processes_mentioning(str(tmp))
        for port in ports:
            check_port("127.0.0.1", port)
        assert _ours(tmp) == left  # its folders are left behind...
        assert sorted(remove_leftovers(tmp)) == left  # ...and a later start removes them, and its shared memory
        assert _ours(tmp) == [] and not list(Path(workdirs.SHM_DIR).glob(f"{prefix}*"))
    finally:
        if proc.poll() is None:
            proc.kill()


def test_leftovers_are_removed_only_when_their_run_is_dead(tmp_path: Path) -> None:
    child = subprocess.Popen(["sleep", "0"])
    child.wait()
    runs = {"dead": (child.pid, "1"), "alive": (os.getpid(), workdirs._process_start(os.getpid())),
            "reused pid": (os.getpid(), "1")}  # this process's pid, another start time: an earlier owner of the pid
    shm = []
    for name, (pid, start) in runs.items():
        d = tmp_path / f"resnet-deploy-triton-{name.replace(' ', '-')}"
        d.mkdir()
        prefix = f"resnet-deploy-test{os.urandom(4).hex()}"
        (d / "owner.json").write_text(json.dumps({"pid": pid, "start": start, "shm_prefix": prefix}))
        region = Path(workdirs.SHM_DIR) / f"{prefix}-region"
        region.write_bytes(b"\0" * 64)
        shm.append(region)
    (tmp_path / "resnet-deploy-serve-being-made").mkdir()  # no owner.json yet: left alone
    (tmp_path / "resnet-deploy-serve-link").symlink_to(tmp_path / "resnet-deploy-triton-alive")
    try:
        assert sorted(remove_leftovers(tmp_path)) == ["resnet-deploy-triton-dead", "resnet-deploy-triton-reused-pid"]
        assert sorted(p.name for p in tmp_path.iterdir()) == [
            "resnet-deploy-serve-being-made", "resnet-deploy-serve-link", "resnet-deploy-triton-alive"]
        assert [r.exists() for r in shm] == [False, True, False]
    finally:
        for r in shm:
            r.unlink(missing_ok=True)


# ------------------------------------------------------------------------------ 7. request options and names
@pytest.mark.parametrize("option, value, line", [
    ("--max-batch", "99999999", "Error: Invalid value for '--max-batch': 99999999 is not in the range 1<=x<=4096."),
    ("--instances", "1000000", "Error: Invalid value for '--instances': 1000000 is not in the range 1<=x<=64."),
    ("--max-queue-delay-us", "99999999999999", "Error: Invalid value for '--max-queue-delay-us': 99999999999999 is "
                                               "not in the range 0<=x<=10000000."),
    ("--threads", "99999999999", "Error: Invalid value for '--threads': 99999999999 is not in the range 1<=x<=1024."),
    ("--topk", "10000000", "Error: Invalid value for '--topk': 10000000 is not in the range 1<=x<=100000."),
    ("--name", "abc\n", "Error: model name must be letters, digits, '_', '.' or '-' of 1 to 64 characters "
                        "([A-Za-z0-9][A-Za-z0-9_.-]{0,63}), found 'abc\\n' (it becomes a directory and a URL path)"),
    ("--name", "a/../b", "Error: model name must be letters, digits, '_', '.' or '-' of 1 to 64 characters "
                         "([A-Za-z0-9][A-Za-z0-9_.-]{0,63}), found 'a/../b' (it becomes a directory and a URL path)"),
])
def test_out_of_range_model_options_are_one_line_and_write_nothing(made: SimpleNamespace, tmp_path: Path,
                                                                   option: str, value: str, line: str) -> None:
    assert one_line(cli("triton", str(made.bundle), "--out", str(tmp_path / "repo"), option, value)) == line
    assert sorted(p.name for p in tmp_path.iterdir()) == []


def test_the_largest_allowed_options_make_a_config_triton_parses(made: SimpleNamespace, tmp_path: Path) -> None:
    model_config_pb2 = pytest.importorskip("tritonclient.grpc.model_config_pb2", reason="tritonclient (serve extra)")
    from google.protobuf import text_format

    r = cli("triton", str(made.bundle), "--out", str(tmp_path / "repo"), "--max-batch", "4096", "--instances", "64",
            "--max-queue-delay-us", "10000000", "--threads", "1024", "--topk", "100000")
    assert r.exit_code == 0, r.output
    c = text_format.Parse((tmp_path / "repo" / "cifar_resnet20" / "config.pbtxt").read_text(),
                          model_config_pb2.ModelConfig())
    assert (c.max_batch_size, c.instance_group[0].count, c.dynamic_batching.max_queue_delay_microseconds,
            c.parameters["threads"].string_value) == (4096, 64, 10_000_000, "1024")


@needs_triton
def test_the_request_size_is_capped_where_tritonserver_can(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    install = server_mod.find_triton()
    server = TritonServer(tmp_path, http_port=1, grpc_port=2, metrics_port=3)
    offered = server_mod.options(install)
    assert "--http-restricted-api" in offered and "--grpc-restricted-protocol" in offered
    command = server.command(install, tmp_path)
    key = next(c for c in command if c.startswith("--http-restricted-api="))
    assert key.startswith("--http-restricted-api=shared-memory,model-repository,trace,logging:resnet-deploy-admin-key=")
    assert f"--grpc-restricted-protocol={key.split('=', 1)[1]}" in command
    # the wheel's 2.51 has no request size option (README says what that leaves open); later releases get a cap
    capped = "--http-max-input-size" in offered
    assert ("--http-max-input-size=67108864" in command) == capped
    monkeypatch.setattr(server_mod, "options", lambda install: offered | {"--http-max-input-size"})
    assert "--http-max-input-size=67108864" in server.command(install, tmp_path)


# --------------------------------------------------------------------------- 8. loadtest's outcome and outputs
@needs_triton
def test_loadtest_fails_when_a_level_gets_no_answers(made: SimpleNamespace, tmp_path: Path) -> None:
    server = _start(write_repository(made.bundle, tmp_path / "repo", name="tiny"))
    images = tmp_path / "images"
    images.mkdir()
    (images / "0.png").write_bytes(os.urandom(300))  # named like an image, and not one: every request is refused
    try:
        r = CliRunner().invoke(main, [
            "loadtest", server.url, "--model", "tiny", "--images", str(images), "--concurrency", "1,2",
            "--duration-s", "2", "--warmup-s", "0", "--max-requests", "5", "--json", str(tmp_path / "r.json")])
    finally:
        server.stop()
    assert r.exit_code == 1
    assert r.stderr.strip() == "FAIL: no answers at concurrency 1, 2 (see the errors above)"
    assert [x["errors"] for x in json.loads((tmp_path / "r.json").read_text())["results"]] == [5, 5]


def test_loadtest_checks_its_json_first_and_keeps_results_it_cannot_write(tmp_path: Path,
                                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    from resnet_deploy.runtime import files
    from resnet_deploy.serve import loadtest

    (tmp_path / "file").write_text("")
    calls = []
    monkeypatch.setattr(loadtest, "run_loadtest", lambda *a, **k: calls.append(a) or {
        "url": a[0], "model": a[1], "protocol": "http", "payload": "tensors", "duration_s": 1.0, "results": [
            {"concurrency": 1, "requests": 3, "errors": 0, "error_samples": [], "wall_s": 1.0,
             "throughput_ips": 3.0, "latency_ms": dict.fromkeys(("min", "mean", "p50", "p90", "p95", "p99", "max"),
                                                                1.0)}]})
    line = one_line(cli("loadtest", "http://127.0.0.1:9", "--model", "m", "--json", str(tmp_path / "file" / "r.json")))
    assert line == (f"Error: cannot write --json file {tmp_path / 'file' / 'r.json'}: {tmp_path / 'file'} is not a "
                    "folder; choose a path you can write") and calls == []

    def fail(*a: object) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(files, "atomic_write_text", fail)
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    r = CliRunner().invoke(main, ["loadtest", "http://127.0.0.1:9", "--model", "m", "--json",
                                                  str(tmp_path / "r.json")])
    kept = next(tmp_path.glob("resnet-deploy-loadtest-*.json"))
    assert r.exit_code == 2 and r.stderr.strip() == (
        f"Error: cannot write --json {tmp_path / 'r.json'} (No space left on device); the results are in {kept}")
    assert r.stdout.splitlines()[1].startswith("concurrency   1  min 1.000") and len(calls) == 1
    assert json.loads(kept.read_text())["results"][0]["requests"] == 3


@pytest.mark.parametrize("args, line", [
    (["--rate", "fast"], "Error: --rate must be comma-separated requests per second like 100/s or 50,100/s, found "
                         "'fast'"),
    (["--rate", "0/s"], "Error: --rate must be a number from 0.01 to 100000, found 0.0"),
    (["--rate", "1e9"], "Error: --rate must be a number from 0.01 to 100000, found 1000000000.0"),
    (["--rate", "nan"], "Error: --rate must be a number from 0.01 to 100000, found nan"),
    (["--rate", "10", "--concurrency", "4"], "Error: give --concurrency (closed loop) or --rate (open loop), not both"),
    (["--rate", "10", "--max-threads", "0"], "Error: Invalid value for '--max-threads': 0 is not in the range "
                                             "1<=x<=1024."),
])
def test_bad_rates_are_one_line_before_anything_is_sent(args: list[str], line: str) -> None:
    assert one_line(cli("loadtest", "http://127.0.0.1:9", "--model", "m", *args)) == line


def test_an_open_loop_counts_latency_from_when_a_request_was_due() -> None:
    """One sending thread and answers slower than the rate: requests wait for it, and their latency says so (a closed
    loop would report each answer's 20 ms and hide the queue: coordinated omission)."""
    from resnet_deploy.serve.loadtest import _run_rate

    class Client:
        def close(self) -> None:
            pass

    latencies, errors, wall, lags = _run_rate(lambda: (Client(), lambda i: time.sleep(0.02)), rate=100,
                                              max_threads=1, duration_s=0.2, max_requests=1000)
    assert len(latencies) == 20 and errors == []
    # request k is due at k * 10 ms and answered no earlier than (k + 1) * 20 ms: at least 10 k + 20 ms late
    assert all(lat >= 0.010 * k + 0.020 for k, lat in enumerate(latencies))
    assert all(lag >= 0.010 * k for k, lag in enumerate(lags))


# ------------------------------------------------------------------- 9. malformed URLs and image folders
@pytest.mark.parametrize("url, why", [("http://[::1", "Invalid IPv6 URL"), ("http://127.0.0.1:99999",
                                                                            "Port out of range 0-65535"),
                                      ("http://127.0.0.1:0", None),
                                      ("http://127.0.0.1:port", "Port could not be cast to integer value as 'port'")])
def test_malformed_urls_are_one_line(url: str, why: str | None) -> None:
    line = one_line(cli("loadtest", url, "--model", "m"))
    assert line == (f"Error: expected a URL like http://127.0.0.1:8000 or grpc://127.0.0.1:8001, found {url!r}"
                    + (f" ({why})" if why else ""))


def test_huge_numbers_are_refused_before_anything_is_allocated() -> None:
    t0 = time.perf_counter()
    line = one_line(cli("loadtest", "http://127.0.0.1:9", "--model", "m", "--concurrency", "99999999999999999999"))
    assert line == "Error: --concurrency must be an integer from 1 to 1024, found 99999999999999999999"
    assert time.perf_counter() - t0 < 30  # bounded, not a measurement: a list of 10^20 clients would never end


def test_image_folders_give_only_regular_files_and_never_block(tmp_path: Path) -> None:
    folder = tmp_path / "images"
    folder.mkdir()
    (folder / "a-dir.png").mkdir()
    (folder / "loop.png").symlink_to(folder / "loop.png")
    (folder / "nowhere.jpg").symlink_to(tmp_path / "missing.jpg")
    os.mkfifo(folder / "pipe.png")  # opened plainly, a reader would wait for a writer forever
    (folder / "big.png").write_bytes(b"\0" * ((32 << 20) + 1))
    found: queue.Queue = queue.Queue()

    def read() -> None:
        try:
            found.put(read_images(folder))
        except ResnetDeployError as e:
            found.put(str(e))

    threading.Thread(target=read, daemon=True).start()
    assert found.get(timeout=TIMEOUT_S) == (
        f"no .jpg, .jpeg, .png files to send in {folder} (a-dir.png: not a regular file; big.png: 33,554,433 bytes, "
        "over 33,554,432; loop.png: Too many levels of symbolic links ...)")
    rng = np.random.default_rng()
    (folder / "real.png").write_bytes(data := rng.integers(0, 256, 500, dtype=np.uint8).tobytes())
    threading.Thread(target=read, daemon=True).start()
    assert found.get(timeout=TIMEOUT_S) == [data]


# ------------------------------------------------------------------------- 10. messages that said the wrong thing
@needs_triton
def test_a_server_that_dies_is_reported_with_how_it_ended(made: SimpleNamespace, tmp_path: Path) -> None:
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    proc, lines, ports = _serve(made.bundle, tmp)
    try:
        assert lines.get(timeout=TIMEOUT_S).startswith("ready: ")
        triton = next(p for p in _processes_mentioning(str(tmp)) if Path(f"/proc/{p}/comm").read_text().strip()
                      == "tritonserver")
        os.kill(triton, signal.SIGKILL)
        assert proc.wait(timeout=TIMEOUT_S) == 2
    finally:
        if proc.poll() is None:
            proc.kill()
    err = proc.stderr.read().strip().splitlines()
    assert err[0].startswith("Error: tritonserver stopped by itself (killed by SIGKILL); its log since it was ready: ")
    assert len(err) == 1, err
    assert _ours(tmp) == [] and _gone(tmp, ports, within_s=30)


@needs_triton
def test_a_failed_start_says_why_without_pointing_at_a_removed_log(made: SimpleNamespace, tmp_path: Path) -> None:
    repo = write_repository(made.bundle, tmp_path / "repo", name="tiny")
    onnx = repo / "tiny" / "1" / "bundle" / "model.onnx"
    onnx.write_bytes(onnx.read_bytes()[:-1] + b"\1")
    with pytest.raises(ResnetDeployError) as e:
        _start(repo)
    assert str(e.value).startswith("tritonserver exited before it was ready (exit code 1): ")
    assert "does not match the manifest's blake3/size" in str(e.value) and "(log: " not in str(e.value)
    with pytest.raises(ResnetDeployError) as e:
        _start(repo, log_file=tmp_path / "kept.log")
    assert str(e.value).endswith(f"(log: {tmp_path / 'kept.log'})") and (tmp_path / "kept.log").stat().st_size > 0


def test_an_unresolvable_host_is_named_not_its_port(made: SimpleNamespace) -> None:
    assert one_line(cli("serve", str(made.bundle), "--host", "no-such-host.invalid")).startswith(
        "Error: cannot resolve --host 'no-such-host.invalid' (")
    r = cli("serve", str(made.bundle), "--host", "192.0.2.1")  # TEST-NET-1: no machine's own
    assert r.exit_code == 2 and r.output.strip().splitlines()[-1] == (
        "Error: cannot listen on 192.0.2.1:8000 (Cannot assign requested address): that address is not one of this "
        "machine's; choose another --host")


def _ipv6_loopback() -> bool:
    try:
        with socket.socket(socket.AF_INET6) as s:
            s.bind(("::1", 0))
        return True
    except OSError:
        return False


@needs_triton
@pytest.mark.skipif(not _ipv6_loopback(), reason="this machine has no IPv6 loopback (::1)")
def test_serve_on_ipv6_loopback_answers_http_and_grpc(made: SimpleNamespace, tmp_path: Path) -> None:
    import tritonclient.grpc as tg

    tmp = tmp_path / "tmp"
    tmp.mkdir()
    proc, lines, ports = _serve(made.bundle, tmp, "--host", "::1")
    try:
        ready = lines.get(timeout=TIMEOUT_S)
        assert ready.startswith(f"ready: http://[::1]:{ports[0]} (model 'tiny', backend "), ready
        assert ready.rstrip().endswith(f"; gRPC [::1]:{ports[1]}; metrics http://[::1]:{ports[2]}/metrics); Ctrl-C "
                                       "stops it"), ready
        x = PP(_blocky(np.random.default_rng(3), 16, 16))[None]
        want = made.predictor.run(x)
        http = _client(f"[::1]:{ports[0]}")
        assert np.abs(http.infer("tiny", _request("tensor", x)).as_numpy("logits") - want).max() <= 1e-5
        http.close()
        grpc = tg.InferenceServerClient(f"[::1]:{ports[1]}")
        inp = tg.InferInput("input", list(x.shape), "FP32")
        inp.set_data_from_numpy(x)
        assert np.abs(grpc.infer("tiny", [inp]).as_numpy("logits") - want).max() <= 1e-5
        grpc.close()
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=TIMEOUT_S) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
    assert _ours(tmp) == []
