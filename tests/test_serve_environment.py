"""The server environment (serve/environment.py): numpy<2 only where tritonserver's Python backend runs, found by
`serve` or refused in one line that names the command that makes it; a folder that is not one is never replaced.

The environment itself, where `make install` made it, is checked here too (its numpy, its tritonserver); serving
through it is tests/test_serve_server.py.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import tomllib
from click.testing import CliRunner

from resnet_deploy import __version__
from resnet_deploy.cli import main
from resnet_deploy.runtime import ResnetDeployError
from resnet_deploy.serve import environment, server
from resnet_deploy.serve.environment import ServerEnv, check, make_server_env, probe, requirements, server_env_path

ROOT = Path(__file__).resolve().parents[1]


def _env(tmp_path: Path, **changes: object) -> ServerEnv:
    facts = {"path": tmp_path, "python": "3.11", "numpy": "1.26.4", "pytriton": tmp_path / "pytriton",
             "resnet_deploy": __version__, "paths": (str(tmp_path),), "libdir": None}
    return ServerEnv(**(facts | changes))


def test_numpy_2_is_pinned_nowhere_in_the_package_but_in_the_server_environment() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    declared = [*project["dependencies"], *(r for extra in project["optional-dependencies"].values() for r in extra)]
    assert [r for r in declared if r.replace(" ", "").startswith("numpy") and "<2" in r] == []
    assert not any(r.startswith("nvidia-pytriton") for r in declared)  # its metadata pins numpy<2
    assert project["optional-dependencies"]["serve"] == ["tritonclient[http,grpc]>=2.50,<3"]
    assert environment.SERVER_PINS == ("nvidia-pytriton==0.7.0", "numpy>=1.24,<2")


def test_requirements_are_the_pins_then_the_runtime_extra_without_its_numpy() -> None:
    wanted = requirements()
    assert wanted[:2] == list(environment.SERVER_PINS)
    assert [r for r in wanted if r.startswith("numpy")] == ["numpy>=1.24,<2"]
    names = [r.split(">")[0].split("=")[0].split("<")[0] for r in wanted]
    assert {"onnxruntime", "pillow", "blake3", "cryptography"} <= set(names)
    assert not {"torch", "tritonclient", "model-signing", "onnx"} & set(names)  # what the runtime never imports


def test_the_path_is_the_option_then_the_variable_then_inside_this_prefix(tmp_path: Path,
                                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(environment.ENV_VAR, raising=False)
    assert server_env_path() == Path(sys.prefix).absolute() / "resnet-deploy-server"
    monkeypatch.setenv(environment.ENV_VAR, str(tmp_path / "from-env"))
    assert server_env_path() == tmp_path / "from-env"
    assert server_env_path(tmp_path / "given") == tmp_path / "given"


def test_a_missing_environment_is_one_line_naming_the_command(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(environment.ENV_VAR, raising=False)
    where = tmp_path / "none"
    with pytest.raises(ResnetDeployError) as e:
        server.find_triton(where)
    assert str(e.value) == (f"no server environment for tritonserver at {where}; make it with "
                            f"`resnet-deploy server-env --path {where}`")
    # `serve` says it before it writes or starts anything
    (tmp_path / "b").mkdir()
    r = CliRunner().invoke(main, ["serve", str(tmp_path / "b"), "--server-env", str(where)])
    assert r.exit_code == 2 and r.output.strip() == f"Error: {e.value}"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["b"]


@pytest.mark.parametrize("change, why", [
    ({"numpy": "2.1.0"}, "has numpy 2.1.0, but the Python backend of nvidia-pytriton's tritonserver reads tensors as "
                         "zeros with numpy 2"),
    ({"numpy": None}, "has numpy (none), but the Python backend"),
    ({"pytriton": None}, "has no nvidia-pytriton"),
    ({"resnet_deploy": "0.0.1"}, f"holds resnet-deploy 0.0.1, this is {__version__}"),
])
def test_an_environment_that_cannot_serve_is_refused_with_the_fix(tmp_path: Path, change: dict, why: str) -> None:
    with pytest.raises(ResnetDeployError) as e:
        check(_env(tmp_path, **change))
    assert str(e.value).startswith(f"the server environment at {tmp_path} {why}")
    assert str(e.value).endswith(f"make it again with `resnet-deploy server-env --force --path {tmp_path}`")
    assert check(_env(tmp_path)) == _env(tmp_path)


def test_a_folder_that_is_not_a_server_environment_is_never_replaced(tmp_path: Path) -> None:
    other = tmp_path / "photos"
    other.mkdir()
    (other / "cat.jpg").write_bytes(b"\xff\xd8")
    r = CliRunner().invoke(main, ["server-env", "--path", str(other)])
    assert r.exit_code == 2
    assert r.output.strip() == (f"Error: {other} exists and is not a server environment made by `resnet-deploy "
                                "server-env`; choose another --path (it is left as it is)")
    assert [p.name for p in other.iterdir()] == ["cat.jpg"]
    with pytest.raises(ResnetDeployError):
        make_server_env(other / "cat.jpg")
    assert (other / "cat.jpg").read_bytes() == b"\xff\xd8"


def _made() -> ServerEnv | None:
    try:
        return probe()
    except ResnetDeployError:
        return None


MADE = _made()


@pytest.mark.skipif(MADE is None, reason=f"no server environment at {server_env_path()} (`make install` makes it; "
                                         "`resnet-deploy server-env` too)")
def test_the_made_environment_has_numpy_1_tritonserver_and_this_resnet_deploy() -> None:
    assert MADE is not None
    assert int(MADE.numpy.split(".")[0]) == 1
    assert MADE.python == f"{sys.version_info.major}.{sys.version_info.minor}"  # the same base Python as this one
    assert MADE.resnet_deploy == __version__
    install = server.find_triton()
    assert install.binary.is_file() and install.stub.is_file()
    assert install.sys_path == MADE.paths
    import resnet_deploy

    # the stub imports this very source (an editable install): a served test runs the code under test
    assert MADE.paths[0] == str(Path(resnet_deploy.__file__).resolve().parents[1])
    assert make_server_env() == MADE  # up to date: reused, not made again
