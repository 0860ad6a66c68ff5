"""The probes of `bad_inputs.py` for the serving, cache, loader, folder and command-line surfaces (classes 11-20).

Each probe takes a source tree and returns one table cell. Everything runs in processes of its own with that tree
first on PYTHONPATH; servers listen on 127.0.0.1 (or ::1) on free ports, with their own TMPDIR, and whatever a probe
starts it stops (by pid, found through that TMPDIR). Planted caches are rebuilt for every tree, since a tree may
change them.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tarfile
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np

OTHER_UID = 54321
# What a malicious bundle's tensor name held: it closes its string in config.pbtxt and adds a parameter that makes
# Triton's Python backend activate an environment tarball the bundle carries.
INJECTION = ('input"\n    data_type: TYPE_FP32\n    dims: [ 1 ]\n  }\n]\nparameters {\n  key: "EXECUTION_ENV_PATH"\n'
             '  value: { string_value: "$$TRITON_MODEL_DIRECTORY/1/bundle/env.tar.gz" }\n}\ninput [\n  {\n'
             '    name: "x')

RENAMER = """
import os, signal, sys, time
import numpy as np
bundle, good, bad, pause = sys.argv[1], sys.argv[2], sys.argv[3], float(sys.argv[4])
swaps, rng = 0, np.random.default_rng()
signal.signal(signal.SIGTERM, lambda *a: (print(swaps, flush=True), os._exit(0)))
while True:  # bursts of renames a millisecond apart, then a pause on either file
    for _ in range(int(rng.integers(2, 12))):
        os.link(bad if swaps % 2 == 0 else good, bundle + "/.next")
        os.replace(bundle + "/.next", bundle + "/model.onnx")
        swaps += 1
        time.sleep(0.001)
    time.sleep(float(rng.uniform(0, pause)))
"""

RACE = """
import os, sys, shutil, subprocess, warnings
import numpy as np
from pathlib import Path
warnings.simplefilter("ignore")
from resnet_deploy.runtime import Predictor
bundle, backend, loads, good, bad, pause, renamer = Path(sys.argv[1]), sys.argv[2], int(sys.argv[3]), sys.argv[4], \
    sys.argv[5], sys.argv[6], sys.argv[7]
x = np.random.default_rng(0).standard_normal((4, 3, 32, 32), dtype=np.float32)
with Predictor.from_bundle(bundle, backend="onnx", threads=1) as p:
    want = p.run(x)
right = lambda got: np.abs(got - want).max() <= 1e-4 * np.abs(want).max()
# the renamer is a process of its own: in a thread it would wait on this one's GIL
proc = subprocess.Popen([sys.executable, "-c", renamer, str(bundle), good, bad, pause], stdout=subprocess.PIPE,
                        text=True)
n = {"right": 0, "refused": 0, "WRONG": 0}
for _ in range(loads):
    try:
        with Predictor.from_bundle(bundle, backend=backend, threads=1) as p:
            n["right" if right(p.run(x)) else "WRONG"] += 1
    except Exception:
        n["refused"] += 1
proc.terminate()
swaps = proc.communicate()[0].strip()
shutil.copyfile(good, bundle / ".fresh")
os.replace(bundle / ".fresh", bundle / "model.onnx")
after = 0
for _ in range(5):
    with Predictor.from_bundle(bundle, backend=backend, threads=1) as p:
        after += not right(p.run(x))
print(f"{loads} loads raced ({swaps} renames): {n['right']} right, {n['refused']} refused, {n['WRONG']} WRONG; "
      f"then 5 loads of the restored file: {after} WRONG")
"""

OV_LOAD = """
import sys, warnings
import numpy as np
warnings.simplefilter("ignore")
from resnet_deploy.runtime import Predictor
x = np.random.default_rng(0).standard_normal((4, 3, 32, 32), dtype=np.float32)
with Predictor.from_bundle(sys.argv[1], backend="onnx", threads=1) as p:
    want = p.run(x)
with Predictor.from_bundle(sys.argv[1], backend="ov-fp32", threads=1) as p:
    ok = np.abs(p.run(x) - want).max() <= 1e-4 * np.abs(want).max()
    print(("right" if ok else "WRONG: the planted model ran") + f"; cache {p.describe().get('cache')}")
"""

FOLDER = """
import sys
from resnet_deploy.data.sources import image_folder
from resnet_deploy.data.spec import parse_spec
f = image_folder(parse_spec("folder:" + sys.argv[1]), "train", unreadable=sys.argv[2])
print(f"{len(f.samples)} samples, classes {f.classes}")
"""

OLD_OV_CONFIG = {"PERFORMANCE_HINT": "LATENCY", "NUM_STREAMS": "1", "INFERENCE_PRECISION_HINT": "f32",
                 "INFERENCE_NUM_THREADS": "1"}


def _env(tree: Path, **extra: str) -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(tree), **extra}


def _last(text: str, limit: int = 150) -> str:
    lines = [ln for ln in text.strip().splitlines() if ln.strip()]
    if "Traceback" in text:
        return f"traceback: {lines[-1][:limit]}"
    last = lines[-1] if lines else ""
    return last[:limit] + ("..." if len(last) > limit else "")


def _run(tree: Path, args: list[str], timeout: float = 300, **env: str) -> str:
    def limit() -> None:  # a probe that allocates without bound fails here instead of taking the machine
        import resource
        resource.setrlimit(resource.RLIMIT_AS, (6 << 30, 6 << 30))

    try:
        r = subprocess.run([sys.executable, *args], env=_env(tree, **env), capture_output=True, text=True,
                           timeout=timeout, cwd=tree, preexec_fn=limit)
    except subprocess.TimeoutExpired:
        return f"still running after {timeout:.0f} s (killed)"
    return f"exit {r.returncode}: {_last(r.stdout + r.stderr)}"


def _cli(tree: Path, *args: str, timeout: float = 300, **env: str) -> str:
    return _run(tree, ["-m", "resnet_deploy.cli", *args], timeout, **env)


def _free_ports(n: int) -> list[int]:
    socks = [socket.socket() for _ in range(n)]
    for s in socks:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


def _pids_mentioning(text: str) -> list[int]:
    found = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            if text.encode() in cmdline.read_bytes():
                found.append(int(cmdline.parent.name))
        except OSError:
            pass
    return found


def _mapped(name: str) -> bool:
    """Whether a live process maps /dev/shm/NAME (another run's server, say)."""
    for maps in Path("/proc").glob("[0-9]*/maps"):
        try:
            if name in maps.read_text():
                return True
        except OSError:
            pass
    return False


@contextmanager
def served(tree: Path, bundle: Path, root: Path, *args: str) -> Iterator[dict]:
    """`resnet-deploy serve` of `tree` on free ports, its own TMPDIR; {"url", "proc", "ready", "tmp", "ports"}."""
    tmp = Path(tempfile.mkdtemp(dir=root, prefix="serve-"))
    shm_before = set(os.listdir("/dev/shm"))
    ports = _free_ports(3)
    cmd = [sys.executable, "-m", "resnet_deploy.cli", "serve", str(bundle), "--port", str(ports[0]), "--grpc-port",
           str(ports[1]), "--metrics-port", str(ports[2]), "--name", "tiny", *args]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=tree,
                            env=_env(tree, TMPDIR=str(tmp)))
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(proc.stdout), daemon=True)
    reader.start()
    deadline = time.monotonic() + 120
    while not lines and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.1)
    host = "[::1]" if "::1" in args else "127.0.0.1"
    info = {"url": f"{host}:{ports[0]}", "proc": proc, "ready": bool(lines), "tmp": tmp, "ports": ports,
            "stderr": lambda: proc.stderr.read() if proc.poll() is not None else ""}
    try:
        yield info
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        for pid in _pids_mentioning(str(tmp)):  # what this probe started and a killed serve left running
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        time.sleep(1)
        for name in set(os.listdir("/dev/shm")) - shm_before:  # the shared memory its server made, now unused
            if name.startswith("resnet-deploy-") and not _mapped(name):
                Path("/dev/shm", name).unlink(missing_ok=True)


def fixtures(f: dict[str, Path], root: Path) -> dict[str, Path]:
    """Bundles and folders for these probes, beside `bad_inputs.fixtures`' (its tiny bundle, `f["bundle"]`)."""
    import onnx
    from onnx import numpy_helper

    from resnet_deploy.runtime.manifest import FileEntry, read_manifest, write_manifest

    g: dict[str, Path] = {}
    model = onnx.load(str(f["bundle"] / "model.onnx"))
    gemm = next(n for n in model.graph.node if n.op_type == "Gemm")
    for name in gemm.input[1:3]:  # classes 0 and 1 trade places: same size, another answer
        t = next(t for t in model.graph.initializer if t.name == name)
        a = numpy_helper.to_array(t).copy()
        a[[0, 1]] = a[[1, 0]]
        t.CopyFrom(numpy_helper.from_array(a, name))
    g["swapped"] = root / "swapped.onnx"
    onnx.save(model, str(g["swapped"]))
    g["good"] = root / "good.onnx"
    shutil.copyfile(f["bundle"] / "model.onnx", g["good"])
    # a bundle carrying an environment tarball whose activation script leaves a marker, listed as a text file
    evil = Path(shutil.copytree(f["bundle"], root / "with-env"))
    g["marker"] = root / "the-bundles-code-ran"
    script = f"touch {g['marker']}\n".encode()
    with tarfile.open(evil / "env.tar.gz", "w:gz") as tar:
        info = tarfile.TarInfo("bin/activate")
        info.size, info.mode = len(script), 0o755
        tar.addfile(info, io.BytesIO(script))
    m = read_manifest(evil)
    listed = [*m.files, FileEntry.for_file(evil, "env.tar.gz", "none", "text")]
    write_manifest(evil, m.__class__(**{**m.__dict__, "files": listed}))
    g["with-env"] = evil
    d = json.loads((evil / "manifest.json").read_text())
    d["input"]["name"] = INJECTION
    g["injected"] = Path(shutil.copytree(evil, root / "injected"))
    (g["injected"] / "manifest.json").write_text(json.dumps(d))
    d = json.loads((f["bundle"] / "manifest.json").read_text())
    d["classes"] = ["ant\nEpoch 3: loss 0.00 (fake)", "bee\u202egnp.exe", "cat\x1b[2J\x1b[31m"]
    g["names"] = Path(shutil.copytree(f["bundle"], root / "hostile-names"))
    (g["names"] / "manifest.json").write_text(json.dumps(d))
    d = json.loads((f["bundle"] / "manifest.json").read_text())
    d["input"]["name"] = "pixels"
    g["renamed-input"] = Path(shutil.copytree(f["bundle"], root / "renamed-input"))
    (g["renamed-input"] / "manifest.json").write_text(json.dumps(d))
    g["folder"] = _hostile_folder(root / "folder", f["data"] / "train")
    g["junk"] = root / "junk-images"
    g["junk"].mkdir()
    (g["junk"] / "0.png").write_bytes(os.urandom(400))
    g["odd"] = root / "odd-images"
    g["odd"].mkdir()
    (g["odd"] / "x.png").mkdir()
    (g["odd"] / "loop.png").symlink_to(g["odd"] / "loop.png")
    os.mkfifo(g["odd"] / "y.png")
    return g


def _hostile_folder(root: Path, images: Path) -> Path:
    from helpers import write_png

    for c in ("ant", "bee"):
        (root / c).mkdir(parents=True)
        for i, src in enumerate(sorted((images / "a").iterdir())[:4]):
            shutil.copyfile(src, root / c / f"{i}.png")
    (root / "ant" / "up").symlink_to("..")
    for hidden in (".git", ".ipynb_checkpoints"):
        (root / hidden).mkdir()
        shutil.copyfile(root / "ant" / "0.png", root / hidden / "0.png")
    write_png(root / "bee" / "bomb.png", 100_000, 100_000, rows=0)
    return root


# ----------------------------------------------------------------------------------------- the OpenVINO cache
def _content_folder(bundle: Path, cache: Path) -> Path:
    from resnet_deploy.runtime.manifest import read_manifest

    return cache / "openvino" / "-".join(read_manifest(bundle).file("model.onnx").checksum)


def _plant(bundle: Path, swapped: Path, cache: Path, link_to: Path | None = None, ours: str = "entry") -> None:
    """Plant, where both the path-keyed OpenVINO cache and the digest-checked one look for `bundle`'s ov-fp32 load,
    the compiled model of `swapped` (or, with `link_to`, a dangling link at those names). `ours`: at the
    digest-checked cache's name, a well-formed "entry" (what only this user could write there), OpenVINO's "bare"
    blob, or "none"."""
    import openvino as ov

    from resnet_deploy.runtime import openvino_backend as ovb
    from resnet_deploy.runtime.cache import CACHE_ENV

    folder = _content_folder(bundle, cache)
    folder.mkdir(parents=True, exist_ok=True)
    path = bundle / "model.onnx"
    st = path.stat()
    kept = path.with_suffix(".kept")
    shutil.copyfile(path, kept)
    shutil.copyfile(swapped, path)  # same size; given the same mtime, the path-keyed cache cannot tell
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
    before = set(folder.iterdir())
    ov.Core().compile_model(str(path), "CPU", {**OLD_OV_CONFIG, "CACHE_DIR": str(folder)})
    os.replace(kept, path)
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
    theirs = [p for p in set(folder.iterdir()) - before if p.suffix == ".blob"]
    old_env = os.environ.get(CACHE_ENV)
    os.environ[CACHE_ENV] = str(cache)
    try:
        entry = ovb.cache_entry(folder.name, 1, "fp32")
        compiled = ov.Core().compile_model(ovb._read_onnx(swapped), "CPU", ovb._config(1, "fp32"))
        blob = compiled.export_model()
        blob = blob.getvalue() if hasattr(blob, "getvalue") else blob
        if ours == "entry":
            entry.write(blob)
        elif ours == "bare":
            (folder / entry.name).write_bytes(blob)
        entry.folder.close()
        mine = folder / entry.name
    finally:
        os.environ.pop(CACHE_ENV) if old_env is None else os.environ.__setitem__(CACHE_ENV, old_env)
    if link_to is not None:
        for i, blob in enumerate([*theirs, mine]):
            blob.unlink(missing_ok=True)
            blob.symlink_to(link_to / f"written-through-link-{i}.blob")


def cache_probe(tree: Path, f: dict[str, Path], g: dict[str, Path], root: Path, case: str) -> str:
    work = Path(tempfile.mkdtemp(dir=root, prefix="cache-"))
    bundle = Path(shutil.copytree(f["bundle"], work / "bundle"))
    cache, outside = work / "cache", work / "outside"
    outside.mkdir()
    _plant(bundle, g["swapped"], cache, outside if case == "link" else None,
           {"other user": "entry", "left behind": "none", "bare": "bare"}.get(case, "entry"))
    if case == "other user":
        if os.geteuid() != 0:
            return "skipped: handing the folder to another user needs root"
        for p in (cache, *cache.rglob("*")):
            os.chown(p, OTHER_UID, OTHER_UID, follow_symlinks=False)
            if p.is_dir():
                p.chmod(0o777)
    out = _run(tree, ["-c", OV_LOAD, str(bundle)], RESNET_DEPLOY_CACHE=str(cache))
    if case == "link":
        written = sorted(p.name for p in outside.iterdir())
        out += f"; written outside the cache: {', '.join(written) if written else 'nothing'}"
    return out


# ----------------------------------------------------------------------------------------------- the server
def shm_attack(tree: Path, f: dict[str, Path], root: Path) -> str:
    import tritonclient.http as th

    before = set(os.listdir("/dev/shm"))
    with served(tree, f["bundle"], root) as s:
        if not s["ready"]:
            return f"did not start: {_last(s['stderr']())}"
        time.sleep(1)
        regions = sorted(n for n in set(os.listdir("/dev/shm")) - before if n.startswith("resnet-deploy-"))
        client = th.InferenceServerClient(s["url"], network_timeout=30)
        try:
            client.register_system_shared_memory("victim", f"/{regions[0]}", 1 << 20)
            said = "region registered"
        except th.InferenceServerException as e:
            said = f"refused ({str(e)[:70]})"
        x = np.random.default_rng(0).standard_normal((1, 3, 32, 32), dtype=np.float32)
        inp = th.InferInput("input", list(x.shape), "FP32")
        inp.set_data_from_numpy(x)
        out = th.InferRequestedOutput("logits")
        out.set_shared_memory("victim", 12)
        try:
            client.infer("tiny", [inp], outputs=[out])
        except Exception:
            pass
        time.sleep(3)
        try:
            client.infer("tiny", [inp])
            alive = "the server still answers"
        except Exception as e:
            alive = f"the server is DOWN ({str(e)[:40]})"
        return f"2 requests ({said}); {alive}"


def kill9(tree: Path, f: dict[str, Path], root: Path) -> str:
    with served(tree, f["bundle"], root) as s:
        if not s["ready"]:
            return f"did not start: {_last(s['stderr']())}"
        s["proc"].kill()
        s["proc"].wait()
        time.sleep(3)
        try:
            with socket.create_connection(("127.0.0.1", s["ports"][0]), timeout=2):
                listening = f"tritonserver STILL SERVING on :{s['ports'][0]} 3 s later"
        except OSError:
            listening = "tritonserver gone, port free 3 s later"
        deadline = time.monotonic() + 30
        while _pids_mentioning(str(s["tmp"])) and time.monotonic() < deadline and "gone" in listening:
            time.sleep(0.5)
        left = sorted(p.name for p in s["tmp"].iterdir() if p.name.startswith("resnet-deploy-"))
        stubs = len(_pids_mentioning(str(s["tmp"])))
        # what the next start does with them (a tree without the clean-up leaves them)
        removed = _run(tree, ["-c", "import sys\ntry:\n    from resnet_deploy.serve.server import remove_leftovers\n"
                                    "except ImportError:\n    print('none')\nelse:\n"
                                    "    print(len(remove_leftovers(sys.argv[1])))", str(s["tmp"])])
        return (f"{listening}; {stubs} of its processes left after 30 s; {len(left)} work folders left, removed by "
                f"the next start: {removed.rsplit(': ', 1)[-1]}")


def big_request(tree: Path, f: dict[str, Path], root: Path, mib: int = 100) -> str:
    import tritonclient.http as th

    with served(tree, f["bundle"], root) as s:
        if not s["ready"]:
            return f"did not start: {_last(s['stderr']())}"
        server = next(p for p in _pids_mentioning(str(s["tmp"])) if Path(f"/proc/{p}/comm").read_text().strip()
                      == "tritonserver")

        def rss() -> float:
            text = Path(f"/proc/{server}/status").read_text()
            return next(int(ln.split()[1]) for ln in text.splitlines() if ln.startswith("VmHWM")) / 1024

        start = rss()
        client = th.InferenceServerClient(s["url"], network_timeout=120, connection_timeout=120)
        inp = th.InferInput("image", [1, 1], "BYTES")
        inp.set_data_from_numpy(np.array([[b"\x89PNG" + bytes(mib << 20)]], dtype=np.object_))
        try:
            client.infer("tiny", [inp])
            said = "answered"
        except th.InferenceServerException as e:
            said = str(e)[:80]
        return f"{said}; the server's peak memory grew by {rss() - start:.0f} MB"


def served_cli(tree: Path, f: dict[str, Path], root: Path, *args: str, timeout: float = 60) -> str:
    """`resnet-deploy loadtest URL ARGS...` against a served tiny model."""
    with served(tree, f["bundle"], root) as s:
        if not s["ready"]:
            return f"did not start: {_last(s['stderr']())}"
        return _cli(tree, "loadtest", f"http://{s['url']}", "--model", "tiny", "--duration-s", "2", "--warmup-s", "0",
                    "--max-requests", "20", *args, timeout=timeout)


def dead_server(tree: Path, f: dict[str, Path], root: Path) -> str:
    with served(tree, f["bundle"], root) as s:
        if not s["ready"]:
            return f"did not start: {_last(s['stderr']())}"
        server = next(p for p in _pids_mentioning(str(s["tmp"])) if Path(f"/proc/{p}/comm").read_text().strip()
                      == "tritonserver")
        os.kill(server, signal.SIGKILL)
        try:
            s["proc"].wait(timeout=30)
        except subprocess.TimeoutExpired:
            return "serve still running 30 s after its server was killed"
        return f"exit {s['proc'].returncode}: {_last(s['stderr']())}"


def ipv6(tree: Path, f: dict[str, Path], root: Path) -> str:
    import tritonclient.grpc as tg

    with served(tree, f["bundle"], root, "--host", "::1") as s:
        if not s["ready"]:
            return f"did not start: {_last(s['stderr']())}"
        x = np.random.default_rng(0).standard_normal((1, 3, 32, 32), dtype=np.float32)
        inp = tg.InferInput("input", list(x.shape), "FP32")
        inp.set_data_from_numpy(x)
        got = tg.InferenceServerClient(f"[::1]:{s['ports'][1]}").infer("tiny", [inp]).as_numpy("logits")
        return f"ready; gRPC on [::1] answers {got.shape}"


def names_printed(tree: Path, g: dict[str, Path], image: Path) -> str:
    r = subprocess.run([sys.executable, "-m", "resnet_deploy.cli", "predict", str(g["names"]), str(image), "--topk",
                        "3"], env=_env(tree), capture_output=True, text=True, cwd=tree, timeout=120)
    raw = [c for c in r.stdout if (c < " " and c != "\n") or c in "\u202e\x1b"]
    return (f"exit {r.returncode}: {len(r.stdout.splitlines())} lines for 1 image and 3 classes; raw control/bidi "
            f"characters printed: {len(raw)}")


def repository_probe(tree: Path, g: dict[str, Path], root: Path, bundle_key: str, *args: str) -> str:
    out = Path(tempfile.mkdtemp(dir=root, prefix="repo-")) / "repo"
    said = _cli(tree, "triton", str(g[bundle_key]), "--out", str(out), *args)
    if not out.exists():
        return said
    from google.protobuf import text_format
    from tritonclient.grpc import model_config_pb2

    notes = []
    for config in sorted(out.rglob("config.pbtxt")):
        try:
            c = text_format.Parse(config.read_text(), model_config_pb2.ModelConfig())
            notes.append("EXECUTION_ENV_PATH set" if "EXECUTION_ENV_PATH" in c.parameters else "config parses")
        except text_format.ParseError as e:
            notes.append(f"config Triton cannot parse ({str(e)[:50]})")
    copied = sorted({p.name for p in out.rglob("*") if p.suffix in (".gz", ".log", ".yaml")})
    return f"{said[:60]}; {', '.join(notes)}; non-model files copied: {', '.join(copied) or 'none'}"


def serve_env(tree: Path, g: dict[str, Path], root: Path, key: str) -> str:
    g["marker"].unlink(missing_ok=True)
    with served(tree, g[key], root) as s:
        state = "ready" if s["ready"] else f"refused: {_last(s['stderr'](), 90)}"
    return f"{state}; the bundle's shell code ran: {'YES' if g['marker'].exists() else 'no'}"


def probes(f: dict[str, Path], g: dict[str, Path], root: Path) -> list[tuple[str, str, Callable[[Path], str]]]:
    b, img = f["bundle"], f["data"] / "train" / "a" / sorted(os.listdir(f["data"] / "train" / "a"))[0]
    ro = Path(shutil.copytree(b, root / "reports-in-the-way"))
    (ro / "reports").write_text("a file where the reports folder goes")
    return [
        ("11 code from a bundle", "triton: input.name closes its string and adds EXECUTION_ENV_PATH",
         lambda t: repository_probe(t, g, root, "injected")),
        ("11 code from a bundle", "serve of that bundle (env tarball listed as a text file)",
         lambda t: serve_env(t, g, root, "injected")),
        ("11 code from a bundle", "triton: a clean bundle listing env.tar.gz and export.log",
         lambda t: repository_probe(t, g, root, "with-env")),
        ("12 OpenVINO cache", "folder of uid 54321, mode 0777, holding the swapped model's blob",
         lambda t: cache_probe(t, f, g, root, "other user")),
        ("12 OpenVINO cache", "the blob a load of the swapped file (same path, size, mtime) left",
         lambda t: cache_probe(t, f, g, root, "left behind")),
        ("12 OpenVINO cache", "and the swapped model's bare blob at the checked cache's entry name",
         lambda t: cache_probe(t, f, g, root, "bare")),
        ("12 OpenVINO cache", "dangling links at the blobs' names", lambda t: cache_probe(t, f, g, root, "link")),
        ("13 server killed by clients", "register the Python backend's /dev/shm region, answer into it",
         lambda t: shm_attack(t, f, root)),
        ("14 swap after check", "onnx: a renamer swapping model.onnx while 150 loads run",
         lambda t: _run(t, ["-c", RACE, *_race_args(t, f, g, root, "onnx", 150, 0.06)])),
        ("14 swap after check", "ov-fp32: the same while 100 loads run (cache on)",
         lambda t: _run(t, ["-c", RACE, *_race_args(t, f, g, root, "ov-fp32", 100, 0.4)],
                        RESNET_DEPLOY_CACHE=str(Path(tempfile.mkdtemp(dir=root)) / "cache"))),
        ("15 kill -9 of serve", "serve killed with SIGKILL", lambda t: kill9(t, f, root)),
        ("16 training folders", "loop ant/up -> .., .git/, .ipynb_checkpoints/, 100000x100000 PNG header; skip",
         lambda t: _run(t, ["-c", FOLDER, str(g["folder"]), "skip"])),
        ("16 training folders", "the same folder, data.unreadable=error", lambda t: _run(
            t, ["-c", FOLDER, str(g["folder"]), "error"])),
        ("16 training folders", "predict with class names holding a newline, U+202E, ESC[2J",
         lambda t: names_printed(t, g, img)),
        ("17 requests", "a 100 MiB image in one request", lambda t: big_request(t, f, root)),
        ("17 requests", "triton --max-batch 99999999999 --instances 99999999999",
         lambda t: repository_probe(t, {**g, "b": b}, root, "b", "--max-batch", "99999999999", "--instances",
                                    "99999999999")),
        ("17 requests", "triton --name $'abc\\n'", lambda t: _cli(t, "triton", str(b), "--out",
                                                                   str(root / "named"), "--name", "abc\n")),
        ("18 lost results", "loadtest where every request fails", lambda t: served_cli(t, f, root, "--images",
                                                                                      str(g["junk"]))),
        ("18 lost results", "bench of a bundle whose reports/ cannot be made",
         lambda t: _cli(t, "bench", str(ro), "--no-pytorch", "--duration-s", "1", "--warmup-s", "0", "--batch",
                        "1,2")),
        ("18 lost results", "loadtest --json into a file that is not a folder",
         lambda t: served_cli(t, f, root, "--json", str(ro / "reports" / "r.json"))),
        ("18 lost results", "export --batch 1:1:99999999",
         lambda t: _cli(t, "export", str(f["ckpt"]), "--out", str(root / "batch-bundle"), "--batch", "1:1:99999999",
                        "--force")),
        ("19 tracebacks, hangs", "loadtest --concurrency 99999999999999999999 (6 GB address-space limit)",
         lambda t: served_cli(t, f, root, "--concurrency", "99999999999999999999", timeout=120)),
        ("19 tracebacks, hangs", "bench --batch 99999999",
         lambda t: _cli(t, "bench", str(b), "--no-pytorch", "--batch", "99999999", "--duration-s", "1", timeout=120)),
        ("19 tracebacks, hangs", "predict --threads 99999999999",
         lambda t: _cli(t, "predict", str(b), str(img), "--threads", "99999999999")),
        ("19 tracebacks, hangs", "loadtest 'http://[::1'", lambda t: _cli(t, "loadtest", "http://[::1", "--model",
                                                                          "m")),
        ("19 tracebacks, hangs", "loadtest http://127.0.0.1:99999", lambda t: _cli(t, "loadtest",
                                                                                   "http://127.0.0.1:99999",
                                                                                   "--model", "m")),
        ("19 tracebacks, hangs", "loadtest --images: a folder named x.png, a link loop, a FIFO",
         lambda t: served_cli(t, f, root, "--images", str(g["odd"]), timeout=40)),
        ("20 messages", "serve whose tritonserver is killed", lambda t: dead_server(t, f, root)),
        ("20 messages", "serve --host no-such-host.invalid",
         lambda t: _cli(t, "serve", str(b), "--host", "no-such-host.invalid")),
        ("20 messages", "serve --host ::1", lambda t: ipv6(t, f, root)),
        ("20 messages", "train --set model.weights=https://...",
         lambda t: _cli(t, "train", "--recipe", str(t / "recipes" / "finetune_folder_small.yaml"), "--data",
                        f"folder:{f['data']}", "--out", str(root / "url-run"), "--set", "optim.batch_size=2", "--set",
                        "model.weights=https://example.org/resnet50.pth")),
        ("20 messages", "serve of a bundle whose input.name the model lacks (fails at load, log removed)",
         lambda t: _cli(t, "serve", str(g["renamed-input"]), "--port", str(_free_ports(1)[0]))),
    ]


def _race_args(tree: Path, f: dict[str, Path], g: dict[str, Path], root: Path, backend: str, loads: int,
               pause: float) -> list[str]:
    work = Path(tempfile.mkdtemp(dir=root, prefix="race-"))
    bundle = Path(shutil.copytree(f["bundle"], work / "bundle"))
    good, bad = work / "good.onnx", work / "swapped.onnx"
    shutil.copyfile(g["good"], good)
    shutil.copyfile(g["swapped"], bad)
    return [str(bundle), backend, str(loads), str(good), str(bad), str(pause), RENAMER]
