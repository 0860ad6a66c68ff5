"""Fine-tuning: weights from torchvision or a checkpoint, a new head for other classes, frozen layers and their BN
statistics, per-group learning rates, the cosine schedule, every bad input, and class names through to `predict`."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision
from click.testing import CliRunner
from helpers import randomize_bn
from test_data import _isolated, write_folder  # noqa: F401  (the fixture isolates the data/cache lookup)
from test_train import cfg_with, tiny_data

from resnet_deploy import models
from resnet_deploy.checkpoint import load_checkpoint, save_model
from resnet_deploy.cli import main
from resnet_deploy.config import ScheduleConfig, TrainConfig, apply_overrides
from resnet_deploy.data.pipeline import prepare
from resnet_deploy.runtime.errors import ResnetDeployError
from resnet_deploy.runtime.preprocess import Preprocess
from resnet_deploy.train import LRSchedule, train
from resnet_deploy.train.finetune import load_weights, param_groups

SMALL = str(Path(__file__).parent.parent / "recipes" / "finetune_folder_small.yaml")
TEN = [str(i) for i in range(10)]


def write_checkpoint(path: Path, arch: str = "cifar_resnet20", classes=TEN, in_channels: int = 1,
                     seed: int = 0) -> Path:
    """A resnet-deploy checkpoint of random weights with non-trivial BN statistics."""
    torch.manual_seed(seed)
    model = randomize_bn(models.build(arch, num_classes=len(classes), in_channels=in_channels), seed)
    pp = Preprocess(input_size=(10, 10), channels=in_channels, mean=(0.5,) * in_channels, std=(0.25,) * in_channels)
    return save_model(path, model, arch, classes, pp, shortcut="A")


def changed(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> set[str]:
    """Names of the floating-point tensors that differ between two state dicts."""
    return {k for k, v in a.items() if v.is_floating_point() and not torch.equal(v, b[k])}


# ----------------------------------------------------------------------------------------------------------- schedule
def test_warmup_then_cosine_to_min_lr():
    s = LRSchedule(ScheduleConfig(iterations=24, policy="cosine", warmup_iterations=4, min_lr=0.001), 0.1)
    assert [round(s.lr(i), 6) for i in (0, 1, 3)] == [0.025, 0.05, 0.1]
    assert s.lr(4) == pytest.approx(0.1) and s.lr(14) == pytest.approx(0.001 + 0.099 / 2)  # half way: the mean
    assert s.lr(9) == pytest.approx(0.001 + 0.099 * (1 + math.cos(math.pi / 4)) / 2)
    assert s.lr(24) == pytest.approx(0.001) and s.lr(23) > 0.001
    assert not s.observe_val_error(0.5) and s.state_dict()["reductions"] == 0  # no plateau logic under cosine


def test_new_keys_are_checked():
    cfg = apply_overrides(TrainConfig(), ["model.weights=w.pth", "model.freeze=layer2", "optim.backbone_lr_mult=0.1",
                                          "schedule.policy=cosine", "data.unreadable=skip", "data.normalize=imagenet"])
    assert (cfg.model.weights, cfg.model.freeze, cfg.optim.backbone_lr_mult) == ("w.pth", "layer2", 0.1)
    for item, match in [("optim.backbone_lr_mult=-0.5",
                         r"^'optim.backbone_lr_mult' in --set must be >= 0, found -0.5$"),
                        ("optim.backbone_lr_mult=.nan", r"^'optim.backbone_lr_mult' in --set must be >= 0, found nan$"),
                        ("model.weights=' '", r"^'model.weights' in --set must be a local file path or null "
                                              r"\(download a URL yourself first, then give the file\), found ' '$"),
                        ("model.freeze=layer5", r"'model.freeze' in --set must be one of 'none', 'stem', 'layer1'"),
                        ("data.unreadable=ignore", r"'data.unreadable' in --set must be one of 'error', 'skip'")]:
        with pytest.raises(ResnetDeployError, match=match):
            apply_overrides(cfg, [item])
    with pytest.raises(ResnetDeployError, match=r"^'schedule.warmup_iterations' in --set must be below "
                                                r"schedule.iterations \(50\) with the cosine policy, found 50$"):
        apply_overrides(cfg, ["schedule.iterations=50", "schedule.warmup_iterations=50"])


# ------------------------------------------------------------------------------------------------ loading, the head
def test_torchvision_state_dict_into_another_class_count(tmp_path):
    tv = randomize_bn(torchvision.models.resnet18(), seed=3)
    sd = {f"module.{k}": v for k, v in tv.state_dict().items() if not k.endswith("num_batches_tracked")}
    torch.save(sd, tmp_path / "r18.pth")  # DDP-prefixed and without BN counters, as old files are
    model = models.build("resnet18", num_classes=4)
    fc_before = model.fc.weight.detach().clone()
    r = load_weights(model, tmp_path / "r18.pth", "resnet18", ["a", "b", "c", "d"])
    assert r.source == "torchvision state dict" and r.replaced == ("fc.weight", "fc.bias")
    assert r.head_reason == "1000 classes in the file, 4 in the data" and not r.missing and not r.skipped
    assert len(r.loaded) == len(sd) - 2 == 100
    own = model.state_dict()
    assert all(torch.equal(own[k], v) for k, v in tv.state_dict().items() if not k.startswith("fc."))
    assert torch.equal(model.fc.weight, fc_before) and model.fc.weight.shape == (4, 512)
    model.fc = tv.fc  # the same head on top: the same logits, so every backbone tensor took effect
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        assert (model.eval()(x) - tv(x)).abs().max() < 1e-5
    assert r.summary() == (f"weights: 100 tensors loaded from {tmp_path / 'r18.pth'} (torchvision state dict); head "
                           "fc.weight, fc.bias replaced (1000 classes in the file, 4 in the data)")
    torch.save({k: v for k, v in sd.items() if ".fc." not in k}, tmp_path / "backbone.pth")  # a headless backbone
    r = load_weights(models.build("resnet18", num_classes=4), tmp_path / "backbone.pth", "resnet18", "abcd")
    assert r.head_reason == "the file has no classifier head" and len(r.loaded) == 100


def test_checkpoint_head_kept_only_for_the_same_classes(tmp_path):
    p = write_checkpoint(tmp_path / "ck.pt")
    sd = load_checkpoint(p)["model"]
    same = models.build("cifar_resnet20", num_classes=10, in_channels=1)
    r = load_weights(same, p, "cifar_resnet20", TEN)
    assert r.replaced == () and r.head_reason == "" and "head loaded" in r.summary()
    assert not changed(sd, same.state_dict()) and r.source == "resnet-deploy checkpoint (cifar_resnet20, 10 classes)"
    renamed = models.build("cifar_resnet20", num_classes=10, in_channels=1)
    r = load_weights(renamed, p, "cifar_resnet20", [f"x{i}" for i in range(10)])
    assert r.head_reason == "the file's class names differ from the data's"
    assert changed(sd, renamed.state_dict()) == {"fc.weight", "fc.bias"}
    fewer = models.build("cifar_resnet20", num_classes=3, in_channels=1)
    r = load_weights(fewer, p, "cifar_resnet20", ["a", "b", "c"])
    assert r.head_reason == "10 classes in the file, 3 in the data" and len(r.loaded) == len(sd) - 2


def test_weights_that_do_not_fit_name_the_first_mismatch(tmp_path):
    torch.save(torchvision.models.resnet50().state_dict(), tmp_path / "r50.pth")
    with pytest.raises(ResnetDeployError) as e:
        load_weights(models.build("resnet18", num_classes=3), tmp_path / "r50.pth", "resnet18", ["a", "b", "c"])
    msg = str(e.value)
    assert msg.startswith(f"weights {tmp_path / 'r50.pth'} do not fit resnet18 (torchvision state dict); first "
                          "mismatch: 'layer1.0.conv1.weight' is (64, 64, 1, 1) in the file, (64, 64, 3, 3) in the "
                          "model; unexpected (198): layer1.0.conv3.weight, ")
    assert msg.endswith("Set model.weights_strict=false to load only what fits") and "\n" not in msg
    grey = write_checkpoint(tmp_path / "grey.pt", in_channels=1)
    with pytest.raises(ResnetDeployError, match=r"are a cifar_resnet20 checkpoint; the recipe's model.arch is "
                                                r"cifar_resnet32: set model.arch=cifar_resnet20"):
        load_weights(models.build("cifar_resnet32", num_classes=3), grey, "cifar_resnet32", ["a", "b", "c"])
    sd = load_checkpoint(grey)["model"]
    sd["layer1.0.conv1.weight"] = sd["layer1.0.conv1.weight"][:, :8]
    torch.save(sd, tmp_path / "cut.pth")
    with pytest.raises(ResnetDeployError, match=r"first mismatch: 'layer1.0.conv1.weight' is \(16, 8, 3, 3\) in the "
                                                r"file, \(16, 16, 3, 3\) in the model; mis-shaped \(1\)"):
        load_weights(models.build("cifar_resnet20", num_classes=3), tmp_path / "cut.pth", "cifar_resnet20", TEN[:3])
    loose = models.build("cifar_resnet20", num_classes=3)
    r = load_weights(loose, tmp_path / "cut.pth", "cifar_resnet20", TEN[:3], strict=False)
    assert r.skipped == ("layer1.0.conv1.weight",) and "layer1.0.conv1.weight" not in r.loaded
    assert len(r.loaded) == len(sd) - 3 and "; skipped 1: layer1.0.conv1.weight" in r.summary()


@pytest.mark.parametrize("c_file,c_model", [(1, 3), (3, 1)])
def test_first_convolution_fitted_to_another_channel_count(tmp_path, c_file, c_model):
    """Grey -> RGB repeats the weights over the channels divided by 3, RGB -> grey sums them: an image whose channels
    are equal (a grey image) gives the same logits in both models."""
    src = write_checkpoint(tmp_path / "src.pt", in_channels=c_file, seed=c_file)
    model = models.build("cifar_resnet20", num_classes=10, in_channels=c_model)
    r = load_weights(model, src, "cifar_resnet20", TEN)
    how = ("repeated over the 3 channels and divided by 3: a grey image gives the same activations" if c_file == 1
           else "summed over the channels: an image of equal channels gives the same activations")
    assert r.adapted == f"conv1.weight adapted from {c_file} to {c_model} input channel(s) ({how})"
    assert f"(resnet-deploy checkpoint (cifar_resnet20, 10 classes)); {r.adapted}; head loaded" in r.summary()
    assert "conv1.weight" in r.loaded and not r.skipped and not r.missing
    from resnet_deploy.checkpoint import model_from_checkpoint

    original = model_from_checkpoint(load_checkpoint(src))
    grey = torch.rand(4, 1, 20, 20) * 4 - 2  # fresh random images, one channel
    with torch.no_grad():
        want = original(grey.repeat(1, c_file, 1, 1))
        got = model.eval()(grey.repeat(1, c_model, 1, 1))
    assert want.abs().max() > 0.1 and torch.allclose(got, want, atol=1e-4, rtol=1e-4)
    other = write_checkpoint(tmp_path / "other.pt", in_channels=c_model, seed=5)
    assert load_weights(models.build("cifar_resnet20", num_classes=10, in_channels=c_model), other,
                        "cifar_resnet20", TEN).adapted == ""  # same channels: nothing said


def test_unusable_weights_files(tmp_path):
    m = models.build("cifar_resnet20", num_classes=3)
    with pytest.raises(ResnetDeployError, match=r"^weights file not found: .*nope.pth$"):
        load_weights(m, tmp_path / "nope.pth", "cifar_resnet20", "abc")
    torch.save([torch.zeros(2)], tmp_path / "list.pth")
    with pytest.raises(ResnetDeployError, match=r"are neither a state dict \(names to tensors\) nor a resnet-deploy "
                                                r"checkpoint \(found a list\)$"):
        load_weights(m, tmp_path / "list.pth", "cifar_resnet20", "abc")
    (tmp_path / "cut.pth").write_bytes(b"PK\x03\x04 cut short")
    with pytest.raises(ResnetDeployError, match=r"^cannot read weights .*cut.pth: not a complete torch.save file"):
        load_weights(m, tmp_path / "cut.pth", "cifar_resnet20", "abc")


# ----------------------------------------------------------------------------------- freezing, learning-rate groups
@pytest.mark.parametrize("freeze,fixed", [("layer1", ("conv1.", "bn1.", "layer1.")), ("backbone", ("conv1.", "bn1.",
                                                                                                     "layer"))])
def test_frozen_layers_and_their_bn_statistics_do_not_move(tmp_path, freeze, fixed):
    p = write_checkpoint(tmp_path / "ck.pt")
    start = load_checkpoint(p)["model"]
    r = train(cfg_with("schedule.iterations=6", "run.eval_every=2", f"model.weights={p}", f"model.freeze={freeze}"),
              tmp_path / "run", data=tiny_data(), progress=False)  # evaluations in between: BN back to eval after
    end = load_checkpoint(tmp_path / "run" / "last.pt")
    moved = changed(start, end["model"])
    frozen = {k for k in start if k.startswith(fixed)}
    assert frozen and not moved & frozen, sorted(moved & frozen)[:3]
    assert moved == {k for k in start if start[k].is_floating_point()} - frozen  # everything else learnt
    n_trainable = sum(start[k].numel() for k in start if not k.startswith(fixed) and "running" not in k and
                      not k.endswith("num_batches_tracked"))
    assert sum(s["momentum_buffer"].numel() for s in end["optimizer"]["state"].values()) == n_trainable
    assert r["notes"][0].endswith("(resnet-deploy checkpoint (cifar_resnet20, 10 classes)); head loaded")
    assert r["notes"][1].startswith("frozen: conv1, bn1, relu, layer1") and "BN statistics fixed" in r["notes"][1]


def test_freeze_names_the_stages_the_network_has(tmp_path):
    with pytest.raises(ResnetDeployError, match=r"^model.freeze 'layer4': cifar_resnet20 has layer1, layer2, layer3; "
                                                r"choose one of those, stem or backbone$"):
        train(cfg_with("model.freeze=layer4"), tmp_path, data=tiny_data(), progress=False)


def test_backbone_learns_at_its_multiple_of_the_lr(tmp_path):
    p = write_checkpoint(tmp_path / "ck.pt")
    start = load_checkpoint(p)["model"]
    cfg = cfg_with("schedule.iterations=5", "schedule.policy=cosine", "schedule.warmup_iterations=2",
                   "schedule.min_lr=0.0", "optim.lr=0.05", "optim.backbone_lr_mult=0.1", f"model.weights={p}")
    train(cfg, tmp_path / "a", data=tiny_data(), progress=False)
    groups = load_checkpoint(tmp_path / "a" / "last.pt")["optimizer"]["param_groups"]
    last = LRSchedule(cfg.schedule, 0.05).lr(4)
    assert [g["name"] for g in groups] == ["backbone", "head"] and len(groups[1]["params"]) == 2
    assert [g["lr"] for g in groups] == pytest.approx([last * 0.1, last])
    train(cfg_with("schedule.iterations=5", "optim.backbone_lr_mult=0", f"model.weights={p}"), tmp_path / "b",
          data=tiny_data(), progress=False)
    moved = changed(start, load_checkpoint(tmp_path / "b" / "last.pt")["model"])
    assert {k for k in moved if "running" not in k} == {"fc.weight", "fc.bias"}  # lr 0: only the head learns...
    assert "bn1.running_mean" in moved  # ...but BN, not frozen, still follows the new data
    one = param_groups(models.build("cifar_resnet20"), 1.0)
    assert [g["name"] for g in one] == ["all"] and len(one[0]["params"]) == len(list(models.build(
        "cifar_resnet20").parameters()))


def test_resumed_fine_tune_needs_no_weights_file(tmp_path):
    p = write_checkpoint(tmp_path / "ck.pt")
    cfg = cfg_with("schedule.iterations=6", f"model.weights={p}", "model.freeze=stem")
    straight = train(cfg, tmp_path / "a", data=tiny_data(), progress=False)
    train(cfg_with("schedule.iterations=3", f"model.weights={p}", "model.freeze=stem"), tmp_path / "b",
          data=tiny_data(), progress=False)
    report = json.loads((tmp_path / "b" / "weights.json").read_text())
    assert report["replaced"] == [] and len(report["loaded"]) == 116 and report["path"] == str(p)
    p.unlink()
    resumed = train(cfg, tmp_path / "b", data=tiny_data(), resume=True, progress=False)
    assert straight["iteration"] == resumed["iteration"] == 6 and resumed["notes"][0].startswith("frozen: conv1")
    a, b = load_checkpoint(tmp_path / "a" / "last.pt"), load_checkpoint(tmp_path / "b" / "last.pt")
    assert not changed(a["model"], b["model"])


# ------------------------------------------------------------------------------------------------- folder bad input
def folder_cfg(root: Path, *more: str):
    return apply_overrides(TrainConfig(), [f"data.spec=folder:{root}", "data.input_size=16", "data.workers=0",
                                           *more]).data


def test_folder_with_one_class_or_an_empty_class(tmp_path):
    one = write_folder(tmp_path / "one", classes=("cat",))
    with pytest.raises(ResnetDeployError, match=rf"^{one / 'train'} has one class folder \(cat\); a classifier needs "
                                                r"at least two"):
        prepare(folder_cfg(one), default_size=32, batch_size=2, seed=0)
    root = write_folder(tmp_path / "imgs")
    (root / "train" / "fox").mkdir()
    (root / "train" / "fox" / "notes.txt").write_text("not an image")
    with pytest.raises(ResnetDeployError, match=rf"^class folder {root / 'train' / 'fox'} holds no images \(.jpg, "
                                                r".jpeg, .png, .ppm, ...\); add images or remove it$"):
        prepare(folder_cfg(root), default_size=32, batch_size=2, seed=0)


def test_class_folders_must_match_between_train_and_val(tmp_path):
    root = write_folder(tmp_path / "imgs")
    (root / "val" / "eel").rename(root / "val" / "emu")
    with pytest.raises(ResnetDeployError, match=rf"^class folders differ between {root / 'train'} and {root / 'val'}: "
                                                r"only in train/: eel; only in val/: emu; every class needs a folder "
                                                r"in both$"):
        prepare(folder_cfg(root), default_size=32, batch_size=2, seed=0)


def test_unreadable_images_skipped_with_a_count_or_refused(tmp_path):
    root = write_folder(tmp_path / "imgs", per_class=4)
    (root / "train" / "dog" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n cut short")
    (root / "val" / "cat" / "broken.jpg").write_bytes(b"\xff\xd8\xff not really a jpeg")
    with pytest.raises(ResnetDeployError, match=rf"^not a readable image: {root / 'train' / 'dog' / 'broken.png'}"):
        prepare(folder_cfg(root), default_size=32, batch_size=2, seed=0)  # the mean image reads every train image
    r = train(cfg_with("schedule.iterations=2", "optim.batch_size=4", f"data.spec=folder:{root}", "data.input_size=16",
                       "data.workers=0", "data.unreadable=skip"), tmp_path / "run", progress=False)
    assert r["eval_images"] == 12  # 13 files in val/, one skipped
    assert r["notes"] == [f"data: skipped 1 unreadable train image(s) (data.unreadable=skip): "
                          f"{root / 'train' / 'dog' / 'broken.png'}",
                          f"data: skipped 1 unreadable evaluation image(s) (data.unreadable=skip): "
                          f"{root / 'val' / 'cat' / 'broken.jpg'}"]
    (root / "train" / "eel").mkdir(exist_ok=True)
    for f in (root / "train" / "eel").iterdir():
        f.write_bytes(b"garbage")
    with pytest.raises(ResnetDeployError, match=rf"^class folder {root / 'train' / 'eel'} holds no readable images;"):
        prepare(folder_cfg(root, "data.unreadable=skip"), default_size=32, batch_size=2, seed=0)


# ------------------------------------------------------------------------------------------ end to end, on the CLI
def test_fine_tune_export_predict_with_the_folders_class_names(tmp_path):
    root = write_folder(tmp_path / "imgs", per_class=4, size=(20, 20))
    weights = write_checkpoint(tmp_path / "pre.pt", in_channels=3)
    out, bundle = tmp_path / "run", tmp_path / "bundle"
    r = CliRunner().invoke(main, ["train", "--recipe", SMALL, "--data", f"folder:{root}", "--out", str(out),
                                  "--no-progress", "--set", f"model.weights={weights}", "--set", "model.freeze=stem",
                                  "--set", "schedule.iterations=3", "--set", "schedule.warmup_iterations=1",
                                  "--set", "optim.batch_size=4", "--set", "run.threads=1", "--set", "run.amp=none"])
    assert r.exit_code == 0, r.output
    lines = r.output.splitlines()
    assert lines[0] == "precision: fp32 (run.amp=none)"
    assert lines[1] == (f"weights: 114 tensors loaded from {weights} (resnet-deploy checkpoint (cifar_resnet20, 10 "
                        "classes)); head fc.weight, fc.bias replaced (10 classes in the file, 3 in the data)")
    assert lines[2] == "frozen: conv1, bn1 (464 parameters; BN statistics fixed)" and lines[3].startswith("iteration 3")
    assert "top-5" not in lines[3] and len(lines) == 4  # 3 classes: top-5 is 100% by definition; said once
    r = CliRunner().invoke(main, ["export", str(out / "last.pt"), "--out", str(bundle), "--quiet"])
    assert r.exit_code == 0, r.output
    r = CliRunner().invoke(main, ["predict", str(bundle), str(root / "val" / "eel" / "0.png"), "--json", "--topk",
                                  "3"])
    assert r.exit_code == 0, r.output
    got = json.loads(r.stdout)[0]
    assert sorted(t["label"] for t in got["topk"]) == ["cat", "dog", "eel"] and got["label"] in ("cat", "dog", "eel")


def test_imagenet_normalisation_for_torchvision_weights(tmp_path):
    root = write_folder(tmp_path / "imgs")
    data = prepare(folder_cfg(root, "data.normalize=imagenet"), default_size=32, batch_size=2, seed=0)
    assert data.preprocess.mean == (0.485, 0.456, 0.406) and data.preprocess.std == (0.229, 0.224, 0.225)
    assert (data.preprocess.resize, data.preprocess.crop) == (18, 16)
    with pytest.raises(ResnetDeployError, match=r"^data.normalize 'imagenet' applies to folder data sets"):
        prepare(apply_overrides(TrainConfig(), ["data.normalize=imagenet"]).data, default_size=32, batch_size=2,
                seed=0)


def write_grey_folder(root: Path, classes=("cat", "dog", "eel"), per_class: int = 4, size=(20, 20)) -> Path:
    """Class folders of random grey (mode L) PNGs in train/ and val/."""
    from PIL import Image

    rng = np.random.default_rng(7)
    for split in ("train", "val"):
        for c in classes:
            (root / split / c).mkdir(parents=True)
            for i in range(per_class):
                Image.fromarray(rng.integers(0, 256, size, dtype=np.uint8), "L").save(root / split / c / f"{i}.png")
    return root


def test_grey_folder_stays_grey_when_asked_and_a_grey_checkpoint_fits_either_way(tmp_path):
    root = write_grey_folder(tmp_path / "imgs")
    data = prepare(folder_cfg(root, "data.channels=1"), default_size=16, batch_size=4, seed=0)
    x, _ = next(data.batches())
    assert data.in_channels == data.preprocess.channels == 1 and x.shape == (4, 1, 16, 16)
    assert np.asarray(data.preprocess.mean).shape == (1, 16, 16)
    weights = write_checkpoint(tmp_path / "fm.pt", in_channels=1)  # as the quick recipe's checkpoint: one channel
    base = ["train", "--recipe", SMALL, "--data", f"folder:{root}", "--no-progress", "--set",
            f"model.weights={weights}", "--set", "schedule.iterations=2", "--set", "schedule.warmup_iterations=1",
            "--set", "optim.batch_size=4", "--set", "run.threads=1", "--set", "run.amp=none", "--set",
            "run.compile=false"]
    for channels, adapted in (("1", False), ("3", True)):
        out = tmp_path / f"run{channels}"
        r = CliRunner().invoke(main, [*base, "--out", str(out), "--set", f"data.channels={channels}"])
        assert r.exit_code == 0, r.output
        assert ("conv1.weight adapted from 1 to 3 input channel(s) (repeated over the 3 channels and divided by 3"
                in r.output.splitlines()[1]) is adapted
        assert load_checkpoint(out / "last.pt")["in_channels"] == int(channels)
    r = CliRunner().invoke(main, ["export", str(tmp_path / "run1" / "last.pt"), "--out", str(tmp_path / "b"),
                                  "--quiet"])
    assert r.exit_code == 0, r.output
    r = CliRunner().invoke(main, ["predict", str(tmp_path / "b"), str(root / "val" / "dog" / "1.png"), "--json"])
    assert r.exit_code == 0 and json.loads(r.stdout)[0]["label"] in ("cat", "dog", "eel"), r.output
    for more, match in ((["data.channels=1", "data.normalize=imagenet"], r"^data.normalize 'imagenet' is defined for "
                                                                         r"RGB images; with data.channels 1 use"),
                        (["data.channels=2"], r"^'data.channels' in --set must be one of 1, 3 or null, found 2$")):
        with pytest.raises(ResnetDeployError, match=match):
            prepare(folder_cfg(root, *more), default_size=16, batch_size=4, seed=0)
    with pytest.raises(ResnetDeployError, match=r"^data.channels applies to folder data sets; fashion-mnist images "
                                                r"have 1 channel\(s\): leave it unset$"):
        prepare(apply_overrides(TrainConfig(), ["data.channels=3"]).data, default_size=28, batch_size=2, seed=0)
