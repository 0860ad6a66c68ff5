"""Run NVIDIA's `tritonserver` binary on a model repository: find it, start it, wait until ready, stop it cleanly.

The binary, its Python backend and the backend's stubs per Python version come from PyPI's `nvidia-pytriton` wheel
(server 2.51), installed in the server environment (`environment.py`: its own numpy<2, because that stub, built for
numpy 1.x, reads tensors as zeros under numpy 2). PyTriton's own Python API is not used: the binary is driven directly.
What it takes (see README, "Serving"): a backend directory holding `python/libtriton_python.so`,
`python/triton_python_backend_utils.py` and the stub for the server environment's Python; the wheel's bundled
libraries and that Python's libpython on LD_LIBRARY_PATH; and the server environment's paths first on the stub's
sys.path (RESNET_DEPLOY_SYS_PATH, read by model.py).
"""

from __future__ import annotations

import ctypes
import functools
import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from resnet_deploy.runtime.errors import ResnetDeployError, printable
from resnet_deploy.serve.addresses import check_port, listen_address
from resnet_deploy.serve.environment import MAKE_HINT, check, probe
from resnet_deploy.serve.repository import MARKER, SYS_PATH_ENV, write_repository
from resnet_deploy.serve.workdirs import SHM_DIR, WORKDIR_PREFIXES, claim_workdir, remove_leftovers

# Triton's APIs that no client of a classifier needs and that reach past it: registering shared-memory regions (a
# client could name the Python backend's own region and have an answer written into it, which kills the server),
# loading models (with files sent in the request), tracing and logging settings (the log file's path). They are put
# behind a header whose value is random and never shown: off, in effect.
RESTRICTED_APIS = ("shared-memory", "model-repository", "trace", "logging")
RESTRICTED_HEADER = "resnet-deploy-admin-key"
PR_SET_PDEATHSIG = 1  # <linux/prctl.h>


@dataclass(frozen=True)
class TritonInstall:
    """Where the tritonserver binary and its Python backend are, and the environment its Python backend runs."""

    binary: Path
    python_backend: Path  # libtriton_python.so and triton_python_backend_utils.py
    stub: Path  # triton_python_backend_stub for the server environment's Python version
    libraries: tuple[Path, ...]  # for LD_LIBRARY_PATH
    sys_path: tuple[str, ...] = ()  # the server environment's paths, first on the stub's sys.path


def find_triton(server_env: str | Path | None = None) -> TritonInstall:
    """The tritonserver that nvidia-pytriton's wheel installed in the server environment (`environment.py`).

    Raises:
        ResnetDeployError: no server environment (the message names the command that makes it), or one without
            nvidia-pytriton, with numpy 2, with another resnet-deploy, or lacking a stub for its Python.
    """
    env = check(probe(server_env))
    root = env.pytriton / "tritonserver"
    install = TritonInstall(root / "bin" / "tritonserver", root / "backends" / "python",
                            root / "python_backend_stubs" / env.python / "triton_python_backend_stub",
                            tuple(p for p in (env.libdir, root.parents[1] / "nvidia_pytriton.libs") if p),
                            env.paths)
    for path in (install.binary, install.python_backend / "libtriton_python.so", install.stub):
        if not path.is_file():
            raise ResnetDeployError(f"{path} is missing: nvidia-pytriton is incomplete or has no Python backend "
                                    f"stub for Python {env.python}; make the server environment again with "
                                    f"`{MAKE_HINT} --force`")
    return install


# The largest HTTP request body tritonserver is told to take, where it has the option (--http-max-input-size, in
# releases after the wheel's 2.51, which buffers any size): two of the largest images a request may carry.
MAX_REQUEST_BYTES = 64 << 20


@functools.lru_cache(maxsize=4)
def _options(binary: str, libraries: tuple[str, ...]) -> frozenset[str]:
    env = {**os.environ, "LD_LIBRARY_PATH": os.pathsep.join([*libraries, os.environ.get("LD_LIBRARY_PATH", "")])}
    try:
        run = subprocess.run([binary, "--help"], capture_output=True, text=True, timeout=30, env=env)
        text = run.stdout + run.stderr  # 2.51 prints its usage on stderr
    except (OSError, subprocess.SubprocessError):
        return frozenset()
    return frozenset(word for line in text.splitlines() for word in line.split()[:1] if word.startswith("--"))


def options(install: TritonInstall) -> frozenset[str]:
    """The command-line options this tritonserver offers (from its --help, read once)."""
    return _options(str(install.binary), tuple(map(str, install.libraries)))


def _die_with_parent() -> Callable[[], None]:
    """A `preexec_fn` that has the kernel kill the child with SIGKILL when the thread that started it ends, however
    it ends (`kill -9` included): a server left running would keep serving on its ports."""
    parent = os.getpid()
    libc = ctypes.CDLL(None, use_errno=True) if sys.platform.startswith("linux") else None

    def set_death_signal() -> None:
        if libc is not None:
            libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
            if os.getppid() != parent:  # the parent died before the signal was set
                os._exit(1)

    return set_death_signal


class TritonServer:
    """A tritonserver process serving a model repository; a context manager that always stops it.

    The process runs in a session of its own, so a terminal's Ctrl-C reaches only this program, which then stops the
    server with SIGTERM (Triton answers what it holds and what arrives on connections already open, refuses new
    connections, and exits when they close or after `exit_timeout_s`) and then kills its whole process group (the
    server and its Python stubs). The kernel kills the server when the thread that started it ends (`kill -9` of this
    program included), and a later start removes what such a run left behind (`remove_leftovers`). Its log goes to
    `log_file`, or a temporary file removed on stop. Triton's shared-memory, repository, trace and logging APIs are
    off (`RESTRICTED_APIS`).
    """

    def __init__(self, repository: str | Path, *, host: str = "127.0.0.1", http_port: int = 8000,
                 grpc_port: int = 8001, metrics_port: int = 8002, log_file: str | Path | None = None,
                 exit_timeout_s: int = 10, models: list[str] | None = None,
                 server_env: str | Path | None = None) -> None:
        self.repository = Path(repository).resolve()
        self.models = models
        self.server_env = server_env
        # The Python backend's shared-memory regions in /dev/shm outlive a server that exits by its timeout: a prefix
        # of our own lets `stop` remove them.
        self.shm_prefix = f"resnet-deploy-{secrets.token_hex(6)}"
        self.host, self.http_port, self.grpc_port, self.metrics_port = host, http_port, grpc_port, metrics_port
        self.address = listen_address(host)
        self._ready_at = 0  # the log's size once the server was ready: later errors are read from there
        self.exit_timeout_s = exit_timeout_s
        self.requested_log = Path(log_file) if log_file else None
        self.workdir: Path | None = None
        self.log_file: Path | None = None
        self.process: subprocess.Popen[bytes] | None = None

    def _http(self, port: int) -> str:
        host = {"0.0.0.0": "127.0.0.1", "::": "::1"}.get(self.address, self.address)
        return f"http://{f'[{host}]' if ':' in host else host}:{port}"

    @property
    def grpc_address(self) -> str:
        """host:port of the gRPC endpoint (IPv6 in brackets)."""
        return f"[{self.address}]:{self.grpc_port}" if ":" in self.address else f"{self.address}:{self.grpc_port}"

    @property
    def url(self) -> str:
        """The HTTP endpoint (KServe v2)."""
        return self._http(self.http_port)

    @property
    def metrics_url(self) -> str:
        """Prometheus metrics."""
        return f"{self._http(self.metrics_port)}/metrics"

    def command(self, install: TritonInstall, backends: Path) -> list[str]:
        """The tritonserver command line: loopback unless `host` says otherwise, strict configs, Prometheus metrics,
        the APIs of RESTRICTED_APIS behind a key nobody is given; every model of the repository, or only `models`."""
        # Triton's HTTP front end reads IPv6 addresses as "ipv6:ADDR", its gRPC one as "[ADDR]"
        v6 = ":" in self.address
        http = f"ipv6:{self.address}" if v6 else self.address
        grpc = f"[{self.address}]" if v6 else self.address
        key = f"{','.join(RESTRICTED_APIS)}:{RESTRICTED_HEADER}={secrets.token_hex(16)}"
        return [str(install.binary), f"--model-repository={self.repository}",
                f"--backend-directory={backends}", "--disable-auto-complete-config",
                f"--backend-config=python,shm-region-prefix-name={self.shm_prefix}",
                *(["--model-control-mode=explicit", *(f"--load-model={m}" for m in self.models)] if self.models
                  else ["--model-control-mode=none"]),
                "--exit-on-error=true", f"--exit-timeout-secs={self.exit_timeout_s}",
                f"--http-address={http}", f"--http-port={self.http_port}",
                f"--grpc-address={grpc}", f"--grpc-port={self.grpc_port}",
                f"--http-restricted-api={key}", f"--grpc-restricted-protocol={key}",
                "--allow-metrics=true", "--allow-gpu-metrics=false", f"--metrics-address={http}",
                f"--metrics-port={self.metrics_port}", "--pinned-memory-pool-byte-size=0", "--log-verbose=0",
                *([f"--http-max-input-size={MAX_REQUEST_BYTES}"] if "--http-max-input-size" in options(install)
                  else [])]

    def start(self, timeout_s: float = 60.0) -> None:
        """Start the server and wait until every model is ready.

        Raises:
            ResnetDeployError: not installed, a port in use, or the server exited or was not ready in time (the
                message holds the log's error lines).
        """
        if self.process is not None:
            raise ResnetDeployError("this tritonserver is already running")
        install = find_triton(self.server_env)
        for port in (self.http_port, self.grpc_port, self.metrics_port):
            check_port(self.address, port)
        remove_leftovers()
        self.workdir = Path(tempfile.mkdtemp(prefix=WORKDIR_PREFIXES[1]))
        self.log_file = self.requested_log or self.workdir / "tritonserver.log"
        try:
            claim_workdir(self.workdir, self.shm_prefix)
            backend = self.workdir / "backends" / "python"
            backend.mkdir(parents=True)
            for src in (install.python_backend / "libtriton_python.so",
                        install.python_backend / "triton_python_backend_utils.py", install.stub):
                shutil.copy2(src, backend / src.name)
            env = dict(os.environ)
            env["LD_LIBRARY_PATH"] = os.pathsep.join([*map(str, install.libraries), env.get("LD_LIBRARY_PATH", "")])
            # the stub inherits this: model.py puts the server environment first, whatever sys_path.txt says
            env[SYS_PATH_ENV] = os.pathsep.join(install.sys_path)
            with open(self.log_file, "wb") as log:
                self.process = subprocess.Popen(self.command(install, backend.parent), stdin=subprocess.DEVNULL,
                                                stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True,
                                                preexec_fn=_die_with_parent())
            self._wait_ready(timeout_s)
        except BaseException:
            self.stop()
            raise

    def _wait_ready(self, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process is None or self.exited():
                raise ResnetDeployError(f"tritonserver exited before it was ready ({self.exit_status()}): "
                                        f"{self.log_errors()}")
            if self.is_ready():
                self._ready_at = self._log_size()
                return
            time.sleep(0.1)
        raise ResnetDeployError(f"tritonserver was not ready after {timeout_s:.0f} s: {self.log_errors()}")

    def _log_size(self) -> int:
        try:
            return self.log_file.stat().st_size if self.log_file else 0
        except OSError:
            return 0

    def exit_status(self) -> str:
        """How the server process ended ("exit code 1", "killed by SIGKILL"), or "running"."""
        info = os.waitid(os.P_PID, self.process.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) if self.process else None
        if info is None:
            return "running" if self.process else "not started"
        if info.si_code == os.CLD_EXITED:
            return f"exit code {info.si_status}"
        return f"killed by {signal.Signals(info.si_status).name}"

    def exited(self) -> bool:
        """True once the server process has ended. It is not reaped here: while it is a zombie its process group
        cannot be reused, so `stop` can still kill the group safely."""
        return self.process is None or _exited(self.process.pid)

    def is_ready(self) -> bool:
        """True when the server answers /v2/health/ready with 200 (all models loaded)."""
        try:
            with urllib.request.urlopen(f"{self.url}/v2/health/ready", timeout=1.0) as r:
                return r.status == 200
        except (urllib.error.URLError, OSError):
            return False

    def log_errors(self, lines: int = 6, since: int = 0) -> str:
        """The log's last error lines (E..., failed, UNAVAILABLE) from byte `since` on, joined into one line; without
        any, its last lines. The text itself, not a pointer to the file: a temporary log is removed on stop."""
        try:
            with open(self.log_file, "rb") as f:  # type: ignore[arg-type]
                f.seek(since)
                text = f.read().decode(errors="replace").splitlines()
        except (OSError, TypeError):
            return "no log"
        text = [printable(t.strip()) for t in text if any(c.isalnum() for c in t)]
        keep = [t for t in text if t[:1] == "E" or "failed" in t or "UNAVAILABLE" in t or "rror:" in t]
        found = " | ".join((keep or text[-3:])[-lines:]) or "nothing in its log"
        return found + (f" (log: {self.log_file})" if self.requested_log else "")

    def errors_since_ready(self) -> str:
        """`log_errors` of what the server logged after it was ready (what it said before it does not explain why it
        stopped)."""
        return self.log_errors(since=self._ready_at)

    def stop(self) -> int | None:
        """SIGTERM, wait up to exit_timeout_s + 5 s, then SIGKILL the process group (the server and its Python stubs,
        whether or not they outlived it); remove the work directory.

        Returns:
            The server's exit code: 0 after a clean shutdown, -9 when it had to be killed; None if never started.
        """
        proc, self.process = self.process, None
        code = None
        if proc is not None:
            if not _exited(proc.pid):
                proc.send_signal(signal.SIGTERM)
            deadline = time.monotonic() + self.exit_timeout_s + 5
            while not _exited(proc.pid) and time.monotonic() < deadline:
                time.sleep(0.05)
            try:
                os.killpg(proc.pid, signal.SIGKILL)  # the group id is the server's pid: it leads its own session
            except ProcessLookupError:
                pass
            code = proc.wait()
        if self.workdir is not None:
            shutil.rmtree(self.workdir, ignore_errors=True)
            self.workdir = None
        for region in Path(SHM_DIR).glob(f"{self.shm_prefix}*"):
            region.unlink(missing_ok=True)
        return code

    def __enter__(self) -> TritonServer:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _exited(pid: int) -> bool:
    # WNOWAIT: look without reaping, so the pid (and its process group) stays reserved until Popen.wait reaps it.
    return os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is not None


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt  # SIGINT and SIGTERM stop `serve` alike


def serve_bundle(bundle: str | Path, *, host: str = "127.0.0.1", http_port: int = 8000, grpc_port: int = 8001,
                 metrics_port: int = 8002, log_file: str | Path | None = None,
                 on_ready: Callable[[TritonServer, str], None] | None = None, server_env: str | Path | None = None,
                 **repository: Any) -> int | None:
    """Serve `bundle` with tritonserver until Ctrl-C or SIGTERM, from a Python-backend repository in a temporary
    directory; the server, its stubs and every temporary file are gone when this returns.

    Args:
        bundle: the bundle directory.
        host, http_port, grpc_port, metrics_port: where to listen (loopback by default).
        log_file: keep tritonserver's log here (default: a temporary file, removed).
        on_ready: called with the server and the model's name once every model is ready.
        server_env: the server environment (default: `environment.server_env_path()`).
        **repository: options of `write_repository` (name, precision, max_batch, instances, max_queue_delay_us, ...).

    Returns:
        tritonserver's exit code once stopped.

    Raises:
        ResnetDeployError: a bad bundle or option, the server failing to start, or the server ending by itself.
    """

    install = find_triton(server_env)  # before anything is written: a missing environment is one line
    main_thread = threading.current_thread() is threading.main_thread()
    # Both, explicitly: a shell that starts a program in the background has it ignore SIGINT, and Python then keeps
    # ignoring it; `kill -INT` or Ctrl-C must stop the server all the same.
    previous = {sig: signal.signal(sig, _interrupt) for sig in (signal.SIGINT, signal.SIGTERM)} if main_thread else {}
    workdir = Path(tempfile.mkdtemp(prefix=WORKDIR_PREFIXES[0]))
    server = None
    try:
        claim_workdir(workdir)
        repo = write_repository(bundle, workdir / "repository", target="python", sys_path=list(install.sys_path),
                                **repository)
        name = json.loads((repo / MARKER).read_text())["model"]
        server = TritonServer(repo, host=host, http_port=http_port, grpc_port=grpc_port,
                              metrics_port=metrics_port, log_file=log_file, server_env=server_env)
        server.start()
        if on_ready is not None:
            on_ready(server, name)
        while not server.exited():
            time.sleep(0.2)
        raise ResnetDeployError(f"tritonserver stopped by itself ({server.exit_status()}); its log since it was "
                                f"ready: {server.errors_since_ready()}")
    except KeyboardInterrupt:
        pass
    finally:
        for sig in previous:  # a second Ctrl-C must not cut the clean-up short
            signal.signal(sig, signal.SIG_IGN)
        code = server.stop() if server is not None else None
        shutil.rmtree(workdir, ignore_errors=True)
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return code
