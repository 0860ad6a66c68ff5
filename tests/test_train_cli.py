"""`resnet-deploy train` and `resnet-deploy eval` through click: a real recipe on tiny data, and every bad input as
one line with exit code 2."""

from __future__ import annotations

import json
import re
from pathlib import Path

from click.testing import CliRunner
from test_data import _isolated, write_fmnist, write_folder  # noqa: F401  (the fixture isolates the data/cache lookup)

from resnet_deploy.cli import main

QUICK = str(Path(__file__).parent.parent / "recipes" / "fashion_mnist_quick.yaml")
SMALL = ["--set", "schedule.iterations=6", "--set", "schedule.milestones=[4]", "--set", "optim.batch_size=8",
         "--set", "run.eval_every=0", "--set", "run.checkpoint_every=0", "--set", "run.log_every=3",
         "--set", "run.amp=none", "--set", "run.threads=1", "--set", "run.compile=false"]


def run(*args: str):
    return CliRunner().invoke(main, list(args))


def test_train_then_eval(tmp_path):
    root = write_fmnist(tmp_path / "fm", n_train=48, n_test=24)
    out = tmp_path / "run"
    r = run("train", "--recipe", QUICK, "--data", f"fashion-mnist:{root}", "--out", str(out), "--no-progress", *SMALL)
    assert r.exit_code == 0, r.output
    lines = r.output.splitlines()  # the run's notes as it starts, progress lines (not a terminal), the summary
    assert lines[0] == "precision: fp32 (run.amp=none)"
    assert [ln for ln in lines if ln.startswith("iteration 6: top-1 ")] == [lines[-1]]  # the last evaluation, once
    assert ", top-5 " in lines[-1] and f"{out}/last.pt" in lines[-1]  # 10 classes: top-5 means something
    note = [json.loads(ln) for ln in (out / "metrics.jsonl").read_text().splitlines() if '"note"' in ln]
    assert note[-1]["message"].startswith("iteration 6: top-1 ")  # recorded all the same
    assert "name: fashion_mnist_quick" in (out / "config.yaml").read_text()
    assert f"spec: fashion-mnist:{root}" in (out / "config.yaml").read_text()
    assert sum('"train"' in ln for ln in (out / "metrics.jsonl").read_text().splitlines()) == 2
    r = run("eval", str(out / "best.pt"), "--data", f"fashion-mnist:{root}", "--json")
    assert r.exit_code == 0, r.output
    d = json.loads(r.output)
    assert d["images"] == 24 and d["crops"] == 1 and 0 <= d["top1"] <= d["top5"] <= 1
    r = run("train", "--recipe", QUICK, "--data", f"fashion-mnist:{root}", "--out", str(out), "--resume",
            *SMALL, "--set", "schedule.iterations=9")  # with progress, not on a terminal: a line per log interval
    assert r.exit_code == 0 and r.output.splitlines()[-1].startswith("iteration 9:"), r.output
    assert [ln.split("  ")[0] for ln in r.output.splitlines() if ln.startswith("train ")] == ["train 9/9"]
    assert re.search(r"^train 9/9  loss [\d.]+  err [\d.]+%  lr [\d.e-]+  \d+ img/s  about 0.0 min left$", r.output,
                     re.M), r.output


def test_unknown_recipe_key(tmp_path):
    r = run("train", "--recipe", QUICK, "--set", "optim.lrr=0.1")
    assert r.exit_code == 2
    assert r.output.startswith("Error: unknown key 'optim.lrr' in --set; did you mean 'optim.lr'?")
    bad = tmp_path / "bad.yaml"
    bad.write_text("schedule:\n  iteratons: 10\n")
    r = run("train", "--recipe", str(bad))
    assert r.exit_code == 2 and f"Error: unknown key 'schedule.iteratons' in recipe {bad}" in r.output
    assert len(r.output.strip().splitlines()) == 1


def test_missing_data(tmp_path):
    r = run("train", "--recipe", QUICK, "--data", f"fashion-mnist:{tmp_path / 'nowhere'}", "--out", str(tmp_path))
    assert r.exit_code == 2 and len(r.output.strip().splitlines()) == 1
    assert r.output.startswith(f"Error: fashion-mnist not found at {tmp_path / 'nowhere'}")
    r = run("train", "--recipe", QUICK, "--out", str(tmp_path))
    assert r.exit_code == 2 and "Error: fashion-mnist not found; looked in: --data (no path given)" in r.output


def test_corrupt_image(tmp_path):
    root = write_folder(tmp_path / "imgs", per_class=3, size=(20, 20))
    (root / "train" / "dog" / "broken.jpg").write_bytes(b"\xff\xd8\xff not really a jpeg")
    r = run("train", "--recipe", QUICK, "--data", f"folder:{root}", "--out", str(tmp_path / "run"), "--no-progress",
            *SMALL, "--set", "data.workers=1", "--set", "data.input_size=16")
    assert r.exit_code == 2, r.output
    assert len(r.output.strip().splitlines()) == 1
    assert r.output.startswith(f"Error: not a readable image: {root / 'train' / 'dog' / 'broken.jpg'}")


def test_corrupt_or_missing_checkpoint(tmp_path):
    bad = tmp_path / "last.pt"
    bad.write_bytes(b"PK\x03\x04 truncated zip")
    r = run("eval", str(bad), "--data", "fashion-mnist")
    assert r.exit_code == 2 and r.output.startswith(f"Error: cannot read checkpoint {bad}: ")
    assert len(r.output.strip().splitlines()) == 1
    r = run("eval", str(tmp_path / "none.pt"), "--data", "fashion-mnist")
    assert r.exit_code == 2 and r.output.startswith(f"Error: checkpoint not found: {tmp_path / 'none.pt'}")
