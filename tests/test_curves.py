"""`resnet-deploy curves`: runs read back from metrics.jsonl (finished, resumed, cut mid-line, malformed), the PNG, the
table in the terminal, JSON and Markdown; and the depth-study recipes against the paper's parameter counts."""

from __future__ import annotations

import json
import random
from pathlib import Path

import matplotlib.image
import pytest
from click.testing import CliRunner
from test_train import cfg_with, tiny_data

from resnet_deploy import models, paper
from resnet_deploy.cli import main
from resnet_deploy.config import load_train_config, to_dict
from resnet_deploy.train import train
from resnet_deploy.train.curves import read_run

RECIPES = Path(__file__).parent.parent / "recipes"


def cli(*args: str):
    return CliRunner().invoke(main, list(args))


def write_run(folder: Path, arch: str, planned: int, processes: list[list[dict]], tail: str = "",
              parameters: int | None = None) -> None:
    """A run folder as `train` leaves it: config.yaml and metrics.jsonl, one list of records per process (time_s
    counted from each process's start), then `tail` (e.g. half a line)."""
    folder.mkdir(parents=True)
    (folder / "config.yaml").write_text(f"model:\n  arch: {arch}\nschedule:\n  iterations: {planned}\n")
    lines = []
    for records in processes:
        for t, rec in enumerate(records):
            if rec["kind"] == "start" and parameters is not None:
                rec = {**rec, "arch": arch, "parameters": parameters, "iterations": planned}
            lines.append(json.dumps({**rec, "time_s": rec.get("time_s", 10.0 * t)}))
    (folder / "metrics.jsonl").write_text("\n".join(lines) + "\n" + tail)


def train_rec(it: int, err: float, ips: float = 1000.0, lr: float = 0.1) -> dict:
    return {"kind": "train", "iteration": it, "epoch": it / 100, "loss": 1.0, "train_error": err, "lr": lr,
            "img_per_s": ips}


def eval_rec(it: int, err: float) -> dict:
    return {"kind": "eval", "iteration": it, "epoch": it / 100, "top1": 1 - err, "top5": 1.0, "eval_loss": 1.0,
            "eval_images": 100}


@pytest.fixture
def two_runs(tmp_path):
    """plain20: finished in one process. resnet20: killed after iteration 300 (last.pt at 200), resumed from 200 to
    400, and cut mid-line at the end. Errors drawn at random so that no value is a coincidence."""
    rnd = random.Random()
    e = {k: round(rnd.uniform(0.05, 0.5), 4) for k in ("p1", "p2", "pt", "pe1", "pe2", "lost", "r1", "r2", "rt",
                                                        "re1", "re2")}
    plain = tmp_path / "plain20"
    write_run(plain, "cifar_plain20", 200, [[
        {"kind": "start", "iteration": 0}, train_rec(100, e["p1"], 500.0), eval_rec(100, e["pe1"]),
        train_rec(150, e["p2"], 900.0, lr=0.01), train_rec(200, e["pt"], 1100.0, lr=0.01), eval_rec(200, e["pe2"]),
        {"kind": "note", "message": "done", "time_s": 61.5}]], parameters=269_722)
    resumed = tmp_path / "resnet20"
    write_run(resumed, "cifar_resnet20", 400, [
        [{"kind": "start", "iteration": 0}, train_rec(100, e["r1"], 300.0), train_rec(200, e["r1"], 700.0),
         eval_rec(200, e["re1"]), train_rec(300, e["lost"], 800.0), eval_rec(300, e["lost"]),
         {"kind": "note", "message": "last record before the kill", "time_s": 55.5}],
        [{"kind": "resume", "iteration": 200}, {"kind": "start", "iteration": 200}, train_rec(300, e["r2"], 50.0),
         train_rec(400, e["rt"], 600.0), eval_rec(400, e["re2"]), {"kind": "note", "message": "x", "time_s": 40.0}],
    ], tail='{"kind": "train", "iteration": 45', parameters=269_722)
    return plain, resumed, e


def test_curves_of_a_finished_and_a_resumed_run(two_runs, tmp_path):
    plain, resumed, e = two_runs
    out = tmp_path / "fig" / "study.png"
    r = cli("curves", str(plain), str(resumed), "--out", str(out), "--title", "two runs")
    assert r.exit_code == 0, r.output
    # the PNG: two panels (plain, residual) of 6.2 x 4.6 inches at 110 dpi
    h, w = matplotlib.image.imread(out).shape[:2]
    assert (w, h) == (1364, 506)
    assert "resnet20" in r.output and "1 malformed" not in r.output
    assert "last line incomplete" in r.output  # on stderr, mixed into CliRunner's output
    rows = {row["run"]: row for row in json.loads(cli("curves", str(plain), str(resumed), "--out", str(out),
                                                      "--json").stdout)["runs"]}
    p, s = rows["plain20"], rows["resnet20"]
    assert (p["parameters"], p["iteration"], p["planned"], p["finished"]) == (269_722, 200, 200, True)
    assert (p["final_test_error"], p["final_train_error"]) == (pytest.approx(e["pe2"]), e["pt"])
    best = min((e["pe1"], 100), (e["pe2"], 200))
    assert (p["best_test_error"], p["best_test_iteration"]) == (pytest.approx(best[0]), best[1])
    assert p["img_per_s"] == 1000.0  # median of 900 and 1100: the first interval (500, warm-up) left out
    assert p["wall_s"] == 61.5 and p["processes"] == 1
    # the resumed run: iteration 300 before the kill was redone; the lost records are gone
    assert [pt[0] for pt in s["train_curve"]] == [100, 200, 300, 400]
    assert s["train_curve"][2][1] == e["r2"] and e["lost"] not in [v for _, v in s["train_curve"]]
    assert [pt[0] for pt in s["test_curve"]] == [200, 400]
    assert s["final_test_error"] == pytest.approx(e["re2"]) and s["final_train_error"] == e["rt"]
    assert (s["processes"], s["wall_s"]) == (2, 55.5 + 40.0)
    assert s["img_per_s"] == 700.0  # median of 700, 800 and 600: each process's first interval left out
    assert s["partial_last_line"] and s["finished"]
    md = out.with_suffix(".md").read_text()
    assert f"| plain20 | cifar_plain20 | 269,722 | 200 / 200 | {100 * e['pe2']:.2f}% |" in md
    assert f"| resnet20 | cifar_resnet20 | 269,722 | 400 / 400 | {100 * e['re2']:.2f}% |" in md
    assert md.count("| resumed 1x |") == 1 and "not finished" not in md
    assert "![training curves](study.png)" in md and "last line incomplete" in md


def test_a_run_still_going_is_drawn_as_far_as_it_got(tmp_path):
    going = tmp_path / "going"
    write_run(going, "cifar_resnet56", 5000, [[{"kind": "start", "iteration": 0}, train_rec(50, 0.7),
                                                train_rec(100, 0.6), eval_rec(100, 0.65)]], parameters=853_018)
    r = cli("curves", str(going), "--json")
    row = json.loads(r.stdout)["runs"][0]
    assert (row["iteration"], row["planned"], row["finished"]) == (100, 5000, False)
    assert (tmp_path / "curves.png").is_file()  # default --out: beside the run, not in the working directory
    table = cli("curves", str(going)).output
    assert "100 / 5,000" in table and "not finished" in table and "65.00% @ 100" in table and "60.00%" in table


def test_malformed_lines_are_skipped_and_counted(tmp_path, two_runs):
    plain, _, _ = two_runs
    text = (plain / "metrics.jsonl").read_text().splitlines()
    bad = ["not json", "[1, 2]", '{"kind": "train", "iteration": 120, "train_error": "x", "lr": 0.1, "time_s": 1}',
           '{"kind": "eval", "iteration": -5, "top1": 0.5, "time_s": 1}', '{"kind": "train", "time_s": 1}',
           '{"kind": "eval", "iteration": 7, "top1": NaN, "time_s": 1}', "\udcff".encode("utf-8", "surrogateescape")
           .decode("latin-1")]
    (plain / "metrics.jsonl").write_text("\n".join(text[:3] + bad + text[3:]) + "\n")
    r = cli("curves", str(plain), "--out", str(tmp_path / "c.png"))
    assert r.exit_code == 0, r.output
    assert "skipped 7 malformed line(s) (line 4, 5, 6, 7, 8 ...)" in r.output
    run = read_run(plain)
    assert len(run.skipped) == 7 and [i for i, _ in run.test] == [100, 200]


@pytest.mark.parametrize("setup, message", [
    (lambda d: None, "run folder not found: {d}"),
    (lambda d: d.mkdir(), "no metrics.jsonl in {d}: not a run folder"),
    (lambda d: (d.mkdir(), (d / "metrics.jsonl").write_text("garbage\n{}\n")), "holds no training or evaluation "
     "record yet (2 malformed line(s) skipped, first line 1)"),
    (lambda d: (d.mkdir(), (d / "metrics.jsonl").mkdir()), "no metrics.jsonl in {d}"),
])
def test_bad_runs_are_one_line_errors(tmp_path, setup, message):
    d = tmp_path / "run"
    setup(d)
    r = cli("curves", str(d), "--out", str(tmp_path / "c.png"))
    assert r.exit_code == 2 and r.output.startswith("Error: ") and r.output.count("\n") == 1, r.output
    assert message.format(d=d) in r.output
    assert not (tmp_path / "c.png").exists() and not (tmp_path / "c.md").exists()


def test_out_must_be_a_png_and_names_are_escaped(tmp_path, two_runs):
    plain, _, _ = two_runs
    r = cli("curves", str(plain), "--out", str(tmp_path / "c.jpg"))
    assert r.exit_code == 2 and "--out must name a .png file" in r.output
    odd = tmp_path / "a|$b$[red]x"  # Markdown table pipe, matplotlib mathtext, rich markup
    plain.rename(odd)
    r = cli("curves", str(odd), "--out", str(tmp_path / "c.png"))
    assert r.exit_code == 0, r.output
    assert "a|$b$[red]x" in r.output
    assert "| a\\|$b$[red]x | cifar_plain20 |" in (tmp_path / "c.md").read_text()


def test_a_real_run_logs_what_curves_needs(tmp_path):
    """The loop's own metrics.jsonl, killed and resumed: parameters from the start record, the curve continuous."""
    cfg = cfg_with("schedule.iterations=20", "schedule.milestones=[15]", "run.eval_every=10")
    train(cfg_with("schedule.iterations=10", "schedule.milestones=[15]", "run.eval_every=10"), tmp_path / "r",
          data=tiny_data(), progress=False)
    train(cfg, tmp_path / "r", data=tiny_data(), resume=True, progress=False)
    run = read_run(tmp_path / "r")
    assert run.parameters == models.count_parameters(models.build("cifar_resnet20", in_channels=1))
    assert (run.arch, run.planned, run.processes, run.finished) == ("cifar_resnet20", 20, 2, True)
    assert [i for i, _ in run.train] == [5, 10, 15, 20] and [i for i, _ in run.test] == [10, 20]
    assert [lr for _, lr in run.lr] == pytest.approx([0.1, 0.1, 0.1, 0.01])  # lr / 10 at the milestone, 15


# ----------------------------------------------------------------------------------------------- depth-study recipes
STUDY = sorted(RECIPES.glob("fashion_mnist_depth_*.yaml"))


def test_the_study_has_plain_and_residual_nets_of_depths_20_and_56():
    names = {p.stem for p in STUDY}
    assert {f"fashion_mnist_depth_{k}{d}" for k in ("plain", "resnet") for d in (20, 56)} <= names


@pytest.mark.parametrize("path", STUDY, ids=[p.stem for p in STUDY])
def test_study_recipes_are_the_family_recipe_but_for_the_net(path):
    cfg = load_train_config(path)
    d = to_dict(cfg)
    ref = to_dict(load_train_config(RECIPES / "fashion_mnist_depth_resnet20.yaml"))
    for c in (d, ref):
        del c["name"], c["description"], c["model"]["arch"]
        c["schedule"].pop("warmup_lr"), c["schedule"].pop("warmup_until_error")
    assert d == ref  # one schedule for every depth; ResNet-110 adds only the §4.2 warm-up
    s = cfg.schedule
    assert (s.milestones[0] * 2, s.milestones[1] * 4) == (s.iterations, s.iterations * 3)  # the 1/2 and 3/4 points
    assert (cfg.optim.lr, cfg.optim.batch_size, cfg.data.spec, cfg.model.shortcut) == (0.1, 128, "fashion-mnist", None)
    assert cfg.run.checkpoint_every and s.iterations % cfg.run.checkpoint_every == 0  # resumable, ends on a checkpoint


@pytest.mark.parametrize("depth", [20, 32, 44, 56])
def test_plain_and_residual_nets_differ_only_by_parameter_free_shortcuts(depth):
    nets = {k: load_train_config(RECIPES / f"fashion_mnist_depth_{k}{depth}.yaml").model.arch
            for k in ("plain", "resnet")}
    built = {k: models.build(a, num_classes=10, in_channels=1) for k, a in nets.items()}
    counts = {k: models.count_parameters(m) for k, m in built.items()}
    assert counts["plain"] == counts["resnet"]  # option A: zero-padding shortcuts, no weights
    shapes = {k: [(n, tuple(p.shape)) for n, p in m.named_parameters()] for k, m in built.items()}
    assert shapes["plain"] == shapes["resnet"]
    # Table 6 counts 3-channel 32x32 CIFAR-10; the grey input has 2 x 16 x 9 = 288 fewer stem weights
    assert counts["resnet"] == pytest.approx(paper.CIFAR_PARAMS_M[depth] * 1e6, rel=0.02)
    three = models.count_parameters(models.build(nets["resnet"], num_classes=10, in_channels=3))
    assert three - counts["resnet"] == 288


# ------------------------------------------------------------------------------------------------ make depth-study
FAKE_RD = """#!/bin/bash
# Stands in for resnet-deploy: records each call; `train` makes its --out with last.pt, then fails for $FAIL_NET
# (a run killed after a checkpoint) or finishes with best.pt.
echo "$*" >> "$LOG"
if [ "$1" = train ]; then
  prev=; for a in "$@"; do [ "$prev" = --out ] && out=$a; prev=$a; done
  mkdir -p "$out" && touch "$out/last.pt"
  case "$*" in *"fashion_mnist_depth_$FAIL_NET.yaml"*) exit 1;; esac
  touch "$out/best.pt"
fi
"""


def test_make_depth_study_reuses_finished_runs_and_resumes_killed_ones(tmp_path):
    import os
    import shutil
    import subprocess

    if shutil.which("make") is None:
        pytest.skip("make is not installed")
    fake = tmp_path / "rd"
    fake.write_text(FAKE_RD)
    fake.chmod(0o755)
    study, log = tmp_path / "study", tmp_path / "calls.log"
    env = {k: v for k, v in os.environ.items() if k not in ("MAKEFLAGS", "MFLAGS", "MAKELEVEL")}

    def make(fail: str = "", *extra: str) -> tuple[int, list[str]]:
        log.write_text("")
        r = subprocess.run(["make", "-s", "-o", "install", "-o", "data", "depth-study", f"RD={fake}",
                            f"STUDY={study}", *extra], cwd=RECIPES.parent, env={**env, "LOG": str(log),
                            "FAIL_NET": fail or "none"}, capture_output=True, text=True, timeout=120)
        return r.returncode, log.read_text().splitlines()

    rc, calls = make("plain20")  # plain20 is killed after its first checkpoint
    assert rc != 0 and not any(c.startswith("curves") for c in calls)
    assert (study / "plain56" / "best.pt").is_file() and (study / "plain20.partial" / "last.pt").is_file()
    assert not (study / "plain20").exists()
    rc, calls = make()
    trained = {c.split("fashion_mnist_depth_")[1].split(".yaml")[0]: c for c in calls if c.startswith("train")}
    assert rc == 0 and "plain20" in trained and trained["plain20"].endswith("--resume")
    assert {"plain56", "resnet56"}.isdisjoint(trained)  # finished: reused
    assert calls[-1].startswith(f"curves {study}/plain20 {study}/plain56 {study}/resnet20 {study}/resnet56 --out "
                                f"{study}/depth_study.png")
    assert (study / "plain20" / "best.pt").is_file() and not (study / "plain20.partial").exists()
    rc, calls = make("", "FORCE=1")
    assert rc == 0 and sum(c.startswith("train") for c in calls) == 4 and "--resume" not in " ".join(calls)
