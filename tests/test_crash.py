"""Crashes: export and train killed with SIGKILL at random points, and the work directory's recovery rules.

After every kill the destination holds a complete bundle (or complete checkpoints); the next export, and `--resume`,
work; and once they have run nothing temporary is left: no work directory beside the bundle, nothing in the system
temporary directory, no `*.tmp` in the run folder. The default run kills each twice; the long form (20 kills each,
several minutes on two cores) is marked slow, which `make test` deselects: run it with `make test-slow`.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pytest
from helpers import tiny_checkpoint
from PIL import Image
from test_data import write_fmnist

from resnet_deploy.checkpoint import load_checkpoint
from resnet_deploy.export import staging
from resnet_deploy.runtime import ResnetDeployError, read_manifest, verify_files
from resnet_deploy.runtime.preprocess import Preprocess

ROOT = Path(__file__).resolve().parent.parent
QUICK = str(ROOT / "recipes" / "fashion_mnist_quick.yaml")


def _env(tmp: Path) -> dict[str, str]:
    (tmp / "systmp").mkdir(exist_ok=True)
    return {**os.environ, "PYTHONPATH": str(ROOT), "TMPDIR": str(tmp / "systmp"),
            "RESNET_DEPLOY_CACHE": str(tmp / "cache"), "OMP_NUM_THREADS": "1"}


def _start(args: list[str], env: dict[str, str]) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "resnet_deploy.cli", *args], env=env, cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _kill_after(proc: subprocess.Popen, delay: float) -> bool:
    """SIGKILL `proc` after `delay` seconds; False when it had already finished by then."""
    try:
        proc.wait(timeout=delay)
        proc.communicate()
        return False
    except subprocess.TimeoutExpired:
        proc.send_signal(signal.SIGKILL)
        proc.communicate()
        return True


def _complete(bundle: Path) -> None:
    verify_files(bundle, read_manifest(bundle))


# -------------------------------------------------------------------------------------------------------- export
@pytest.fixture(scope="module")
def export_src(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("crash-export")
    pre = Preprocess(input_size=(28, 28), channels=1, mean=(0.29,), std=(0.35,))
    tiny_checkpoint(root / "tiny.pt", [f"c{i}" for i in range(3)], pre, in_channels=1)
    rng = np.random.default_rng()
    for k in range(3):
        (root / "images" / f"c{k}").mkdir(parents=True)
        for i in range(4):
            img = rng.integers(0, 256, (28, 28), dtype=np.uint8)
            Image.fromarray(img).save(root / "images" / f"c{k}" / f"{i}.png")
    return root


def _export_kills(src: Path, tmp: Path, kills: int) -> None:
    env, out = _env(tmp), tmp / "bundle"
    args = ["export", str(src / "tiny.pt"), "--out", str(out), "--int8", "--calib-data", f"folder:{src / 'images'}",
            "--calib-size", "8", "--force", "--quiet"]
    t0 = time.perf_counter()
    proc = _start(args, env)
    assert proc.wait(timeout=300) == 0, proc.communicate()
    full = time.perf_counter() - t0
    caches = sorted((tmp / "systmp").iterdir())  # what any run leaves there (torch's inductor cache, ORT's .ses)
    rng, done, attempts = random.Random(), 0, 0
    while done < kills and attempts < 3 * kills:
        attempts += 1
        done += _kill_after(_start(args, env), rng.uniform(0.1, 1.1) * full)
        _complete(out)  # the old bundle or the new one, always whole
        assert sorted(p.name for p in tmp.iterdir() if p.name.startswith(".")) in ([], [".bundle.export"])
    assert done == kills, f"only {done} of {attempts} exports were still running when killed"
    left = staging.workdir_of(out).exists()
    proc = _start(args, env)
    assert proc.wait(timeout=300) == 0, proc.communicate()
    _complete(out)
    log = (out / "export.log").read_text()
    assert ("removed what an interrupted export left in" in log) == left
    assert [p.name for p in tmp.iterdir() if p.name.startswith(".")] == []
    assert sorted((tmp / "systmp").iterdir()) == caches  # nothing more in the system temporary directory


def test_export_killed_twice_always_leaves_a_complete_bundle(export_src: Path, tmp_path: Path) -> None:
    _export_kills(export_src, tmp_path, kills=2)


@pytest.mark.slow
def test_export_killed_20_times_always_leaves_a_complete_bundle(export_src: Path, tmp_path: Path) -> None:
    _export_kills(export_src, tmp_path, kills=20)


# --------------------------------------------------------------------------------------------------------- train
def _checkpoints_whole(run: Path) -> int:
    """Load every checkpoint of the run folder; the iteration of last.pt (0 when there is none yet)."""
    for p in run.glob("*.pt"):
        load_checkpoint(p)
    return int(load_checkpoint(run / "last.pt")["iteration"]) if (run / "last.pt").exists() else 0


def _train_kills(tmp: Path, kills: int) -> None:
    env, run = _env(tmp), tmp / "run"
    data = write_fmnist(tmp / "fm", n_train=48, n_test=16)
    base = ["train", "--recipe", QUICK, "--data", f"fashion-mnist:{data}", "--out", str(run), "--no-progress",
            "--set", "optim.batch_size=8", "--set", "run.eval_every=10", "--set", "run.checkpoint_every=3",
            "--set", "run.log_every=3", "--set", "run.threads=1", "--set", "run.amp=none",
            "--set", "run.compile=false", "--set", "schedule.milestones=[5000]"]
    rng, done, attempts, startup = random.Random(), 0, 0, None
    while done < kills and attempts < 3 * kills:
        attempts += 1
        resume = ["--resume"] if (run / "last.pt").exists() else []
        before = (run / "last.pt").stat().st_mtime_ns if resume else 0
        t0, proc = time.perf_counter(), _start([*base, *resume, "--set", "schedule.iterations=100000"], env)
        if startup is None or rng.random() < 0.7:  # mostly while checkpoints are being written
            while proc.poll() is None and time.perf_counter() - t0 < 120 and (
                    not (run / "last.pt").exists() or (run / "last.pt").stat().st_mtime_ns == before):
                time.sleep(0.02)
            startup = startup or time.perf_counter() - t0
            delay = rng.uniform(0, 1.0)
        else:  # or at any point of the start-up
            delay = rng.uniform(0, startup)
        done += _kill_after(proc, delay)
        _checkpoints_whole(run)
    assert done == kills
    stale = sorted(p.name for p in run.glob(".*.tmp"))
    it = _checkpoints_whole(run)
    assert it > 0
    proc = _start([*base, "--resume", "--set", f"schedule.iterations={it + 6}"], env)
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err
    lines = out.splitlines()  # the precision line as the run starts, then the final evaluation
    assert lines[0] == "precision: fp32 (run.amp=none)" and lines[1].startswith(f"iteration {it + 6}: top-1 "), out
    if stale:
        assert f"removed {len(stale)} temporary file(s) left in {run} by an interrupted run: {', '.join(stale)}" in err
    assert sorted(p.name for p in run.iterdir() if p.name.startswith(".")) == []
    assert _checkpoints_whole(run) == it + 6
    for line in (run / "metrics.jsonl").read_text().splitlines():
        json.loads(line)  # a line cut by a kill was dropped when the run resumed


def test_train_killed_twice_resumes_from_whole_checkpoints(tmp_path: Path) -> None:
    _train_kills(tmp_path, kills=2)


@pytest.mark.slow
def test_train_killed_20_times_resumes_from_whole_checkpoints(tmp_path: Path) -> None:
    _train_kills(tmp_path, kills=20)


# ---------------------------------------------------------------------------------------- the work directory's rules
def _bundle(path: Path, tag: str) -> Path:
    """A minimal complete bundle (a text file and its manifest), told apart by `tag`."""
    from resnet_deploy.runtime.manifest import FileEntry, Manifest, write_manifest

    path.mkdir(parents=True)
    (path / "note.txt").write_text(tag)
    pre = Preprocess(input_size=(8, 8), channels=1, mean=(0.5,), std=(0.25,))
    write_manifest(path, Manifest("x", ["a"], pre, [FileEntry.for_file(path, "note.txt", "none", fmt="text")]))
    return path


def test_force_cut_between_its_two_renames_is_recovered(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    out = _bundle(tmp_path / "b", "old")
    monkeypatch.setattr(staging, "_exchange", lambda a, b: False)  # a system without RENAME_EXCHANGE
    real_replace = os.replace

    def first_rename_then_killed(src: Path, dst: Path) -> None:
        real_replace(src, dst)
        raise KeyboardInterrupt  # stands for the kill: nothing after the first rename runs

    work = staging.Workdir(out).__enter__()
    tempfile.tempdir = work._tempdir  # what the killed process's __exit__ would have put back
    work.new.rmdir()
    _bundle(work.new, "new")
    monkeypatch.setattr(os, "replace", first_rename_then_killed)
    with pytest.raises(KeyboardInterrupt):
        work.commit()
    monkeypatch.setattr(os, "replace", real_replace)
    os.close(work._lock)  # the process is gone, and its lock with it
    assert not out.exists() and (work.old / "note.txt").read_text() == "old"
    notes: list[str] = []
    with staging.Workdir(out, notes.append):
        assert (out / "note.txt").read_text() == "new"
    assert notes == [f"an interrupted --force left {out} missing: put back the new bundle",
                     f"removed what an interrupted export left in {tmp_path / '.b.export'}: old, tmp"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["b"]


def test_a_second_export_to_the_same_destination_waits_for_none(tmp_path: Path) -> None:
    out = tmp_path / "b"
    with staging.Workdir(out):
        with pytest.raises(ResnetDeployError) as e:
            staging.Workdir(out).__enter__()
        assert str(e.value) == (f"another export to {out} is running (it holds {tmp_path / '.b.export' / 'lock'}); "
                                "wait for it to finish or choose another --out")
    assert list(tmp_path.iterdir()) == []
