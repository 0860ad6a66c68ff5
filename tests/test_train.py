"""The training loop on tiny data: schedules, resume determinism, checkpoints (contents, atomicity), NaN handling,
and evaluation agreeing with the loop's own."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from test_data import _isolated, write_fmnist  # noqa: F401  (the fixture isolates the data/cache lookup)

from resnet_deploy import checkpoint as ckpt_mod
from resnet_deploy.checkpoint import load_checkpoint, model_from_checkpoint, preprocess_from_checkpoint
from resnet_deploy.config import ScheduleConfig, TrainConfig, apply_overrides
from resnet_deploy.data.pipeline import InMemoryData
from resnet_deploy.data.stats import make_preprocess, mean_std
from resnet_deploy.runtime.errors import ResnetDeployError
from resnet_deploy.system import torch_cpp_compiler
from resnet_deploy.train import LRSchedule, TrainingDiverged, evaluate, precision, train
from resnet_deploy.train.estimate import duration, estimate
from resnet_deploy.train.loop import compile_choice
from resnet_deploy.train.precision import choose_amp

TINY = ["model.arch=cifar_resnet20", "optim.batch_size=8", "run.log_every=5", "run.eval_every=0",
        "run.checkpoint_every=0", "run.device=cpu", "run.threads=1"]


def tiny_data(seed: int = 0, n: int = 48, size: int = 10, device: str = "cpu") -> InMemoryData:
    rng = np.random.default_rng(seed)
    x = rng.integers(0, 256, (n, 1, size, size), dtype=np.uint8)
    y = rng.integers(0, 10, n)
    mean, std = mean_std([x])
    return InMemoryData(x, y, [str(i) for i in range(10)], make_preprocess(mean, std, size), eval_images=x[:16],
                        eval_labels=y[:16], batch_size=8, pad=2, seed=1, device=device)


def cfg_with(*overrides: str) -> TrainConfig:
    return apply_overrides(TrainConfig(), [*TINY, *overrides])


# ---------------------------------------------------------------------------------------------------------- schedules
def test_multistep_and_linear_ramp():
    s = LRSchedule(ScheduleConfig(milestones=(10, 20), gamma=0.1, warmup_iterations=4), 0.1)
    assert [round(s.lr(i), 6) for i in (0, 3, 4, 9, 10, 19, 20, 99)] == [0.025, 0.1, 0.1, 0.1, 0.01, 0.01, 0.001,
                                                                           0.001]


def test_resnet110_warmup_until_train_error_below_80_percent():
    s = LRSchedule(ScheduleConfig(milestones=(100,), warmup_lr=0.01, warmup_until_error=0.8), 0.1)
    assert s.lr(0) == 0.01 and not s.observe_train_error(0.85) and s.lr(50) == 0.01
    assert s.observe_train_error(0.79) and s.lr(51) == 0.1 and round(s.lr(150), 6) == 0.01
    assert not s.observe_train_error(0.5)


def test_plateau_divides_after_patience_and_round_trips():
    s = LRSchedule(ScheduleConfig(policy="plateau", plateau_patience=2, plateau_threshold=0.01, min_lr=0.0005), 0.1)
    assert [s.observe_val_error(e) for e in (0.5, 0.4, 0.395, 0.399)] == [False, False, False, True]
    assert round(s.lr(10**6), 6) == 0.01
    t = LRSchedule(s.cfg, 0.1)
    t.load_state_dict(s.state_dict())
    assert t.lr(5) == s.lr(5) and t.state_dict() == s.state_dict()
    for _ in range(10):
        s.observe_val_error(0.9)
    assert s.lr(0) == 0.0005  # floored at min_lr


# ------------------------------------------------------------------------------------------------------------ resume
def test_twenty_iterations_equal_ten_resume_ten(tmp_path):
    cfg = cfg_with("schedule.iterations=20", "schedule.milestones=[15]")
    straight = train(cfg, tmp_path / "a", data=tiny_data(), progress=False)
    first = train(cfg_with("schedule.iterations=10", "schedule.milestones=[15]"), tmp_path / "b", data=tiny_data(),
                  progress=False)
    assert first["iteration"] == 10
    resumed = train(cfg, tmp_path / "b", data=tiny_data(), resume=True, progress=False)
    assert straight["iteration"] == resumed["iteration"] == 20
    a, b = load_checkpoint(tmp_path / "a" / "last.pt"), load_checkpoint(tmp_path / "b" / "last.pt")
    for k, v in a["model"].items():
        assert torch.equal(v, b["model"][k]), f"{k} differs after resume"
    mom_a = [s["momentum_buffer"] for s in a["optimizer"]["state"].values()]
    mom_b = [s["momentum_buffer"] for s in b["optimizer"]["state"].values()]
    assert all(torch.equal(x, y) for x, y in zip(mom_a, mom_b, strict=True))
    kinds = [ln for ln in (tmp_path / "b" / "metrics.jsonl").read_text().splitlines() if '"resume"' in ln]
    assert len(kinds) == 1 and '"iteration": 10' in kinds[0]


def test_resume_refuses_another_recipe_and_a_run_folder_is_not_overwritten(tmp_path):
    train(cfg_with("schedule.iterations=5"), tmp_path / "r", data=tiny_data(), progress=False)
    with pytest.raises(ResnetDeployError, match=r"already holds a run \(last.pt\); pass --resume"):
        train(cfg_with("schedule.iterations=5"), tmp_path / "r", data=tiny_data(), progress=False)
    with pytest.raises(ResnetDeployError, match=r"recipe differs in optim.lr \(only schedule.iterations and run"):
        train(cfg_with("schedule.iterations=9", "optim.lr=0.2"), tmp_path / "r", data=tiny_data(), resume=True,
              progress=False)
    with pytest.raises(ResnetDeployError, match=r"nothing to resume in .*: no last.pt"):
        train(cfg_with(), tmp_path / "empty", data=tiny_data(), resume=True, progress=False)


# ------------------------------------------------------------------------------------------------------- checkpoints
def test_checkpoint_holds_everything_and_loads_weights_only(tmp_path):
    data = tiny_data()
    r = train(cfg_with("schedule.iterations=10", "run.checkpoint_every=5", "run.eval_every=5", "name=tiny"),
              tmp_path, data=data, progress=False)
    assert {p.name for p in tmp_path.iterdir()} >= {"config.yaml", "metrics.jsonl", "last.pt", "best.pt",
                                                     "ckpt_0000005.pt", "ckpt_0000010.pt"}
    ck = torch.load(tmp_path / "last.pt", weights_only=True)  # nothing but weights-only types inside
    for k in ("arch", "model_options", "num_classes", "in_channels", "model", "classes", "preprocess", "config",
              "iteration", "optimizer", "scheduler", "scaler", "rng", "metrics"):
        assert k in ck, k
    assert ck["iteration"] == 10 and ck["config"]["name"] == "tiny" and ck["model_options"]["shortcut"] == "A"
    assert ck["rng"]["torch"].dtype == torch.uint8 and ck["classes"] == [str(i) for i in range(10)]
    assert preprocess_from_checkpoint(ck) == data.preprocess
    model = model_from_checkpoint(ck)
    x = torch.from_numpy(data.preprocess.normalize(np.random.default_rng(3).integers(0, 256, (4, 1, 10, 10),
                                                                                     dtype=np.uint8)))
    assert model(x).shape == (4, 10)
    assert 0 <= r["top1"] <= 1 and r["best_top1"] >= r["top1"] and r["img_per_s"] > 0
    assert load_checkpoint(tmp_path / "ckpt_0000005.pt")["iteration"] == 5


def test_interrupted_save_leaves_the_previous_checkpoint(tmp_path, monkeypatch):
    train(cfg_with("schedule.iterations=5"), tmp_path, data=tiny_data(), progress=False)
    before = load_checkpoint(tmp_path / "last.pt")

    def broken_save(obj, f):
        f.write(b"half a checkpoint")
        raise OSError("disk full")

    monkeypatch.setattr(ckpt_mod.torch, "save", broken_save)
    with pytest.raises(OSError, match="disk full"):
        ckpt_mod.save_checkpoint(dict(before, iteration=99), tmp_path / "last.pt")
    monkeypatch.undo()
    after = load_checkpoint(tmp_path / "last.pt")
    assert after["iteration"] == 5 and not list(tmp_path.glob(".last.pt.*"))


def test_nan_loss_stops_and_keeps_last_good_checkpoint(tmp_path):
    cfg = cfg_with("schedule.iterations=40", "schedule.milestones=[10]", "schedule.gamma=1e30",
                   "run.checkpoint_every=10", "optim.lr=0.01")
    with pytest.raises(TrainingDiverged) as e:
        train(cfg, tmp_path, data=tiny_data(), progress=False)
    msg = str(e.value)
    assert "loss became nan" in msg.lower() or "loss became inf" in msg.lower()
    assert f"Last good checkpoint: {tmp_path / 'last.pt'}" in msg and "\n" not in msg
    good = load_checkpoint(tmp_path / "last.pt")
    assert good["iteration"] == 10
    assert all(torch.isfinite(v).all() for v in good["model"].values() if v.is_floating_point())


def test_fp16_needs_a_gpu(tmp_path):
    with pytest.raises(ResnetDeployError, match=r"run.amp=fp16 needs a CUDA GPU"):
        train(cfg_with("run.amp=fp16"), tmp_path, data=tiny_data(), progress=False)


def test_bf16_autocast_trains_and_loss_falls(tmp_path):
    r = train(cfg_with("schedule.iterations=30", "run.amp=bf16", "run.log_every=10"), tmp_path, data=tiny_data(),
              progress=False)
    lines = [ln for ln in (tmp_path / "metrics.jsonl").read_text().splitlines() if '"train"' in ln]
    losses = [json.loads(ln)["loss"] for ln in lines]
    assert len(losses) == 3 and losses[-1] < losses[0] and r["iteration"] == 30


# ------------------------------------------------------------------------------------------------------- evaluation
def test_evaluate_agrees_with_the_loops_evaluation(tmp_path):
    root = write_fmnist(tmp_path / "fm", n_train=64, n_test=40)
    r = train(cfg_with("schedule.iterations=16", f"data.spec=fashion-mnist:{root}"), tmp_path / "run",
              progress=False)
    e = evaluate(tmp_path / "run" / "last.pt", f"fashion-mnist:{root}")
    assert e["images"] == 40 == r["eval_images"]
    assert e["top1"] == pytest.approx(r["top1"]) and e["top5"] == pytest.approx(r["top5"])
    assert evaluate(tmp_path / "run" / "last.pt", f"fashion-mnist:{root}", limit=7)["images"] == 7
    with pytest.raises(ResnetDeployError, match=r"10-crop needs a model whose preprocessing has a crop step"):
        evaluate(tmp_path / "run" / "last.pt", f"fashion-mnist:{root}", ten_crop=True)


def test_checkpoint_from_elsewhere_is_refused(tmp_path):
    torch.save({"weight": torch.zeros(2)}, tmp_path / "foreign.pt")
    with pytest.raises(ResnetDeployError, match=r"is not a resnet-deploy checkpoint"):
        evaluate(tmp_path / "foreign.pt", "fashion-mnist")
    assert Path(tmp_path / "foreign.pt").is_file()


def test_folder_training_and_ten_crop_evaluation(tmp_path):
    from test_data import write_folder

    root = write_folder(tmp_path / "imgs", per_class=4, size=(30, 24))
    r = train(cfg_with("schedule.iterations=4", "optim.batch_size=4", f"data.spec=imagenet:{root}",
                       "data.augment=scale_pca", "data.input_size=16", "data.workers=0"), tmp_path / "run",
              progress=False)
    assert r["eval_images"] == 12
    ck = load_checkpoint(tmp_path / "run" / "last.pt")
    assert ck["classes"] == ["cat", "dog", "eel"] and ck["in_channels"] == 3
    assert ck["preprocess"]["resize"] == 18 and ck["preprocess"]["crop"] == 16
    center = evaluate(tmp_path / "run" / "last.pt", f"imagenet:{root}")
    assert center["top1"] == pytest.approx(r["top1"])
    tc = evaluate(tmp_path / "run" / "last.pt", f"imagenet:{root}", ten_crop=True, limit=5)
    assert tc["crops"] == 10 and tc["images"] == 5


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_cuda_fp16_channels_last_trains(tmp_path):
    r = train(cfg_with("schedule.iterations=30", "run.device=cuda", "run.amp=fp16", "run.log_every=10"),
              tmp_path, data=tiny_data(device="cuda"), progress=False)
    losses = [json.loads(ln)["loss"] for ln in (tmp_path / "metrics.jsonl").read_text().splitlines()
              if '"train"' in ln]
    assert r["iteration"] == 30 and losses[-1] < losses[0]


# ------------------------------------------------------------------------------------------ precision and compile
def test_the_run_prints_and_records_its_precision(tmp_path, capsys):
    r = train(cfg_with("schedule.iterations=5", "run.amp=auto"), tmp_path, data=tiny_data(), progress=False)
    chosen = choose_amp("auto", "cpu")
    assert r["precision"] == chosen.to_dict() and capsys.readouterr().out.startswith(chosen.summary() + "\n")
    records = [json.loads(ln) for ln in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert records[0] == {**chosen.to_dict(), "kind": "precision", "time_s": records[0]["time_s"]}
    assert load_checkpoint(tmp_path / "last.pt")["precision"] == chosen.to_dict()


def test_a_run_resumes_in_the_precision_chosen_where_it_resumes(tmp_path, monkeypatch):
    # began where auto chose fp32 (no GradScaler state), resumed where it chooses bf16, and the other way round
    cpus = {"fp32": (False, "no bf16 here"), "bf16": (True, "bf16 here")}
    for first, then in (("fp32", "bf16"), ("bf16", "fp32")):
        out = tmp_path / first
        monkeypatch.setattr(precision, "cpu_bf16_native", lambda flags=None, c=cpus[first]: c)
        train(cfg_with("schedule.iterations=5", "run.amp=auto"), out, data=tiny_data(), progress=False)
        monkeypatch.setattr(precision, "cpu_bf16_native", lambda flags=None, c=cpus[then]: c)
        r = train(cfg_with("schedule.iterations=10", "run.amp=auto"), out, data=tiny_data(), resume=True,
                  progress=False)
        assert r["iteration"] == 10 and r["precision"]["label"] == ("fp32" if then == "fp32" else "bf16 autocast")
        kinds = [json.loads(ln)["amp"] for ln in (out / "metrics.jsonl").read_text().splitlines()
                 if '"precision"' in ln]
        assert kinds == ["none" if first == "fp32" else "bf16", "none" if then == "fp32" else "bf16"]


def test_compile_auto_is_eager_on_gpus_under_ddp_and_without_a_compiler(monkeypatch):
    from resnet_deploy.train import loop

    assert compile_choice(True, torch.device("cpu"), 1) == (True, "run.compile=true")
    assert compile_choice(False, torch.device("cpu"), 1) == (False, "run.compile=false")
    assert compile_choice("auto", torch.device("cuda", 0), 1)[0] is False
    assert compile_choice("auto", torch.device("cpu"), 2) == (False, "run.compile=auto: eager under DDP")
    monkeypatch.setattr(loop, "torch_cpp_compiler", lambda: None)
    assert compile_choice("auto", torch.device("cpu"), 1) == (
        False, "run.compile=auto: no C++ compiler for inductor's CPU kernels; install g++ to compile")
    monkeypatch.setattr(loop, "torch_cpp_compiler", lambda: "/usr/bin/g++")
    monkeypatch.delenv("ATEN_CPU_CAPABILITY", raising=False)
    assert compile_choice("auto", torch.device("cpu"), 1) == (
        True, "run.compile=auto: a CPU, and a C++ compiler (/usr/bin/g++) for inductor's kernels")
    monkeypatch.setenv("ATEN_CPU_CAPABILITY", "avx2")  # an emulation: its kernels must not enter the shared cache
    monkeypatch.delenv("TORCHINDUCTOR_CACHE_DIR", raising=False)
    assert compile_choice("auto", torch.device("cpu"), 1)[0] is False
    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", "/tmp/inductor-avx2")
    assert compile_choice("auto", torch.device("cpu"), 1)[0] is True


@pytest.mark.skipif(torch_cpp_compiler() is None, reason="no C++ compiler for torch.compile's CPU backend")
def test_compiled_channels_last_run_resumes_exactly(tmp_path):
    overrides = ("schedule.milestones=[15]", "run.compile=true", "run.channels_last=true", "run.amp=none")
    straight = train(cfg_with("schedule.iterations=12", *overrides), tmp_path / "a", data=tiny_data(), progress=False)
    train(cfg_with("schedule.iterations=6", *overrides), tmp_path / "b", data=tiny_data(), progress=False)
    resumed = train(cfg_with("schedule.iterations=12", *overrides), tmp_path / "b", data=tiny_data(), resume=True,
                    progress=False)
    assert straight["iteration"] == resumed["iteration"] == 12
    a, b = load_checkpoint(tmp_path / "a" / "last.pt"), load_checkpoint(tmp_path / "b" / "last.pt")
    for k, v in a["model"].items():
        assert torch.equal(v, b["model"][k]), f"{k} differs after resume"


def test_estimate_times_the_runs_own_step_on_the_recipes_shape(capsys):
    e = estimate(cfg_with("schedule.iterations=1000", "run.amp=none"), seconds=0.2, warmup=1, min_steps=2)
    assert e.precision == "precision: fp32 (run.amp=none)" and capsys.readouterr().out == e.precision + "\n"
    assert e.steps >= 2 and e.img_per_s > 0 and e.iterations == 1000 and e.batch_size == 8
    assert e.train_s == pytest.approx(1000 * 8 / e.img_per_s)
    assert e.summary().startswith(f"expected: about {duration(e.train_s)} of training here (1,000 iterations of 8 "
                                  f"images at {e.img_per_s:,.0f} img/s, timed now over {e.steps} steps;")
    assert [duration(s) for s in (44.6, 600, 5399, 12 * 3600)] == ["45 s", "10 min", "90 min", "12.0 h"]
