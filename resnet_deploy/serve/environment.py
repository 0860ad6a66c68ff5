"""The server environment: the small virtual environment whose Python tritonserver's Python backend runs.

The only tritonserver on PyPI comes in nvidia-pytriton's wheel (server 2.51), whose Python-backend stub was built for
numpy 1.x and reads request tensors as zeros under numpy 2; PyTriton declares numpy<2 (its 0.7.0 is the latest
release). So that constraint lives here, not in the package's extras: a virtual environment apart from the user's,
holding nvidia-pytriton, numpy<2, what `resnet_deploy.runtime` needs (the `runtime` extra, `cryptography` for signed
bundles, OpenVINO where this environment has it) and resnet_deploy itself installed without dependencies. The
user's environment keeps its numpy (2.x); `pip install 'resnet-deploy[serve]'` brings only Triton's client.

`resnet-deploy server-env` makes it (or reuses it); `serve` finds it at `--server-env`, else $RESNET_DEPLOY_SERVER_ENV,
else `resnet-deploy-server` inside this environment's prefix (so removing a virtual environment removes its server
environment too).
"""

from __future__ import annotations

import functools
import importlib.metadata
import importlib.util
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from resnet_deploy import __version__
from resnet_deploy.runtime.errors import ResnetDeployError, first_line

ENV_VAR = "RESNET_DEPLOY_SERVER_ENV"
DEFAULT_NAME = "resnet-deploy-server"
MARKER = "resnet-deploy-server.json"  # written last: what the environment was made with, and that we made it
MAKE_HINT = "resnet-deploy server-env"
# The server's own pins: the wheel that carries tritonserver, and the numpy its stub reads tensors correctly with.
SERVER_PINS = ("nvidia-pytriton==0.7.0", "numpy>=1.24,<2")
# Run by the environment's Python: where it finds things, as the stub (which embeds that Python) must find them.
PROBE = """
import importlib.util, json, sys, sysconfig
from pathlib import Path
shared = sysconfig.get_config_var("Py_ENABLE_SHARED")
out = {"python": "%d.%d" % sys.version_info[:2], "numpy": None, "pytriton": None, "resnet_deploy": None,
       "paths": [], "libdir": sysconfig.get_config_var("LIBDIR") if shared else None}
try:
    import numpy
    out["numpy"] = numpy.__version__
except Exception:
    pass
spec = importlib.util.find_spec("pytriton")
if spec is not None and spec.submodule_search_locations:
    out["pytriton"] = str(next(iter(spec.submodule_search_locations)))
root = None
try:
    import resnet_deploy
    root = str(Path(resnet_deploy.__file__).resolve().parents[1])
    out["resnet_deploy"] = resnet_deploy.__version__
except Exception:
    pass
out["paths"] = list(dict.fromkeys(p for p in (root, sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"])
                                  if p))
print(json.dumps(out))
"""


@dataclass(frozen=True)
class ServerEnv:
    """A server environment, as its own Python sees itself."""

    path: Path
    python: str  # "3.11": the stub of this version runs it
    numpy: str | None
    pytriton: Path | None  # the pytriton package directory (tritonserver/ inside)
    resnet_deploy: str | None  # its version
    paths: tuple[str, ...]  # what model.py puts first on sys.path: resnet_deploy's root, then site-packages
    libdir: Path | None  # its libpython's directory, for the stub


def server_env_path(path: str | Path | None = None) -> Path:
    """Where the server environment is: `path`, else $RESNET_DEPLOY_SERVER_ENV, else inside this prefix."""
    chosen = path or os.environ.get(ENV_VAR) or Path(sys.prefix) / DEFAULT_NAME
    return Path(chosen).expanduser().absolute()


def requirements() -> list[str]:
    """What the server environment installs: SERVER_PINS, then the package's `runtime` extra (less its numpy),
    `cryptography` from the `signing` extra, and the `openvino` extra when this environment has OpenVINO (so that
    `auto` chooses alike in process and in the server). Read from the installed package's metadata: pyproject.toml
    stays their one home."""
    try:
        declared = importlib.metadata.requires("resnet-deploy") or []
    except importlib.metadata.PackageNotFoundError:
        raise ResnetDeployError("resnet-deploy's package metadata is missing (run from a source tree that was never "
                                "installed); install it with pip install -e . first") from None
    wanted = [("runtime", None), ("signing", "cryptography")]
    if importlib.util.find_spec("openvino") is not None:
        wanted.append(("openvino", None))
    found = []
    for line in declared:
        spec, _, marker = (s.strip() for s in line.partition(";"))
        for extra, only in wanted:
            if marker.replace("'", '"') == f'extra == "{extra}"' and (only is None or spec.startswith(only)):
                if not spec.startswith("numpy"):
                    found.append(spec)
    return [*SERVER_PINS, *dict.fromkeys(found)]


def _python(path: Path) -> Path:
    return path / "bin" / "python"


@functools.lru_cache(maxsize=8)
def _probe(python: str, stamp: float) -> dict:
    # stamp: the marker's mtime, so a remade environment is probed again
    del stamp
    run = subprocess.run([python, "-I", "-c", PROBE], capture_output=True, text=True, timeout=120)
    if run.returncode != 0:
        raise ResnetDeployError(f"the server environment's Python failed: {first_line(run.stderr or run.stdout)}")
    return json.loads(run.stdout)


def probe(path: str | Path | None = None) -> ServerEnv:
    """The server environment at `path` (see `server_env_path`), as its Python reports it.

    Raises:
        ResnetDeployError: there is none (the message names the command that makes it), or it is broken.
    """
    path = server_env_path(path)
    python, marker = _python(path), path / MARKER
    if not python.is_file() or not marker.is_file():
        raise ResnetDeployError(f"no server environment for tritonserver at {path}; make it with `{MAKE_HINT}"
                                f"{'' if path == server_env_path() else f' --path {path}'}`")
    facts = _probe(str(python), marker.stat().st_mtime)
    return ServerEnv(path, facts["python"], facts["numpy"], Path(facts["pytriton"]) if facts["pytriton"] else None,
                     facts["resnet_deploy"], tuple(facts["paths"]), Path(facts["libdir"]) if facts["libdir"] else None)


def check(env: ServerEnv) -> ServerEnv:
    """`env` if tritonserver's Python backend can run resnet_deploy's model in it; ResnetDeployError otherwise."""
    remake = f"make it again with `{MAKE_HINT} --force --path {env.path}`"
    if env.pytriton is None:
        raise ResnetDeployError(f"the server environment at {env.path} has no nvidia-pytriton; {remake}")
    if env.numpy is None or int(env.numpy.split(".")[0]) >= 2:
        raise ResnetDeployError(f"the server environment at {env.path} has numpy {env.numpy or '(none)'}, but the "
                                "Python backend of nvidia-pytriton's tritonserver reads tensors as zeros with numpy 2; "
                                f"{remake}")
    if env.resnet_deploy != __version__:
        raise ResnetDeployError(f"the server environment at {env.path} holds resnet-deploy {env.resnet_deploy}, this "
                                f"is {__version__}; {remake}")
    return env


def _source_root() -> Path | None:
    """The source tree this resnet_deploy runs from, when it is one (a checkout: pyproject.toml beside it)."""
    root = Path(__file__).resolve().parents[2]
    return root if (root / "pyproject.toml").is_file() and (root / "resnet_deploy").is_dir() else None


def make_server_env(path: str | Path | None = None, *, force: bool = False,
                    log: Callable[[str], None] = lambda line: None) -> ServerEnv:
    """Make the server environment at `path`, or reuse it when it was made with today's `requirements()` and holds
    this resnet-deploy; `force` makes it again. Only a folder that is empty or that this function made is replaced.

    Raises:
        ResnetDeployError: the folder holds something else, or pip failed (its last line in the message).
    """
    path, wanted = server_env_path(path), requirements()
    marker = path / MARKER
    if marker.is_file() and not force:
        try:
            made = json.loads(marker.read_text())
            if made.get("requirements") == wanted and made.get("source") == str(_source_root()):
                return check(probe(path))
        except (ResnetDeployError, ValueError, OSError):
            pass  # stale or broken: made again below
    if path.exists() and not marker.is_file() and (not path.is_dir() or any(path.iterdir())):
        raise ResnetDeployError(f"{path} exists and is not a server environment made by `{MAKE_HINT}`; choose "
                                "another --path (it is left as it is)")
    if path.is_dir():
        shutil.rmtree(path)
    log(f"making the server environment at {path}: {', '.join(wanted)}")
    root = _source_root()
    own = ["--no-deps", "-e", str(root)] if root else ["--no-deps", f"resnet-deploy=={__version__}"]
    for command in ([sys.executable, "-m", "venv", str(path)],
                    [str(_python(path)), "-m", "pip", "install", "-q", *wanted],
                    [str(_python(path)), "-m", "pip", "install", "-q", *own]):
        run = subprocess.run(command, capture_output=True, text=True)
        if run.returncode != 0:
            lines = [t for t in (run.stderr or run.stdout).splitlines() if t.strip()]
            raise ResnetDeployError(f"making the server environment failed at `{' '.join(command[-3:])}`: "
                                    f"{lines[-1] if lines else f'exit code {run.returncode}'}")
    marker.write_text(json.dumps({"requirements": wanted, "source": str(root), "made_by": __version__}) + "\n")
    return check(probe(path))
