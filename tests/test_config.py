"""Recipes: YAML into frozen dataclasses, errors by key name, --set overrides, the resolved config, every recipe."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from resnet_deploy import models
from resnet_deploy.config import TrainConfig, apply_overrides, dump_yaml, from_dict, load_train_config
from resnet_deploy.data import parse_spec
from resnet_deploy.runtime.errors import ResnetDeployError

RECIPES = sorted((Path(__file__).parent.parent / "recipes").glob("*.yaml"))


def test_every_recipe_the_issue_lists_exists():
    names = {p.stem for p in RECIPES}
    wanted = {*(f"cifar10_resnet{d}" for d in (20, 32, 44, 56, 110)), *(f"cifar10_plain{d}" for d in (20, 32, 44, 56)),
              *(f"imagenet_resnet{d}" for d in (18, 34, 50, 101, 152)), "imagenet_plain18", "imagenet_plain34",
              "imagenet_resnet34_a", "imagenet_resnet34_b", "imagenet_resnet34_c", "fashion_mnist_resnet20",
              "fashion_mnist_quick"}
    assert wanted <= names, f"missing recipes: {sorted(wanted - names)}"


@pytest.mark.parametrize("path", RECIPES, ids=[p.stem for p in RECIPES])
def test_recipe_loads_and_is_consistent(path):
    cfg = load_train_config(path)
    assert cfg.model.arch in models.ARCHITECTURES
    parse_spec(cfg.data.spec)
    assert all(m < cfg.schedule.iterations for m in cfg.schedule.milestones)
    assert (cfg.optim.momentum, cfg.optim.weight_decay) == (0.9, 1e-4)  # §3.4, §4.2
    assert cfg.name == path.stem
    if path.stem.startswith("cifar10_"):  # §4.2
        assert (cfg.optim.batch_size, cfg.optim.lr, cfg.schedule.iterations) == (128, 0.1, 64000)
        assert cfg.schedule.milestones == (32000, 48000) and cfg.data.pad == 4
        assert models.family(cfg.model.arch) == "cifar" and cfg.model.shortcut is None  # option A, family default
        assert cfg.schedule.warmup_lr == (0.01 if path.stem == "cifar10_resnet110" else None)
    if path.stem.startswith("imagenet_"):  # §3.4
        assert (cfg.optim.batch_size, cfg.optim.lr, cfg.schedule.iterations) == (256, 0.1, 600000)
        assert cfg.schedule.policy == "plateau" and cfg.data.augment == "scale_pca" and cfg.data.scale == (256, 480)
    if path.stem.startswith("imagenet_resnet34_"):
        assert cfg.model.shortcut == path.stem[-1].upper()


def test_unknown_key_is_named_with_suggestion(tmp_path):
    p = tmp_path / "r.yaml"
    p.write_text("optim:\n  lrr: 0.1\n")
    with pytest.raises(ResnetDeployError) as e:
        load_train_config(p)
    msg = str(e.value)
    assert msg.startswith(f"unknown key 'optim.lrr' in recipe {p}; did you mean 'optim.lr'?")
    assert "valid keys: optim.batch_size, optim.lr, optim.momentum" in msg
    p.write_text("modle: {arch: cifar_resnet20}\n")
    with pytest.raises(ResnetDeployError, match=r"unknown key 'modle' .*did you mean 'model'"):
        load_train_config(p)


def test_mistyped_values_are_named(tmp_path):
    p = tmp_path / "r.yaml"
    for text, match in [("optim: {lr: fast}", r"'optim.lr' in recipe .* must be float, found 'fast'"),
                        ("run: {amp: fp8}", r"'run.amp' .* must be one of 'auto', 'none', 'bf16', 'fp16', found 'fp8'"),
                        ("schedule: {milestones: [1, x]}", r"'schedule.milestones' .* must be int"),
                        ("optim: {batch_size: 12.5}", r"'optim.batch_size' .* must be int, found 12.5"),
                        ("run: {deterministic: 1}", r"'run.deterministic' .* must be bool, found 1"),
                        ("data: fashion-mnist", r"'data' in recipe .* must be a mapping"),
                        ("- a list", r"must be a YAML mapping")]:
        p.write_text(text)
        with pytest.raises(ResnetDeployError, match=match):
            load_train_config(p)


def test_overrides_parse_yaml_scalars_and_check_types():
    cfg = apply_overrides(TrainConfig(), ["optim.lr=0.05", "optim.weight_decay=5e-4", "schedule.milestones=[10, 20]",
                                          "run.amp=bf16", "model.shortcut=null", "data.spec=cifar10:/tmp/c",
                                          "run.eval_limit=100"])
    assert cfg.optim.lr == 0.05 and cfg.optim.weight_decay == 5e-4  # "5e-4" is a YAML 1.1 string: still a float
    assert cfg.schedule.milestones == (10, 20) and cfg.run.amp == "bf16"
    assert cfg.data.spec == "cifar10:/tmp/c" and cfg.run.eval_limit == 100 and cfg.optim.momentum == 0.9
    assert isinstance(apply_overrides(cfg, ["optim.lr=1"]).optim.lr, float)
    with pytest.raises(ResnetDeployError, match=r"unknown key 'optim.lrr' in --set; did you mean 'optim.lr'"):
        apply_overrides(cfg, ["optim.lrr=1"])
    with pytest.raises(ResnetDeployError, match=r"--set expects key=value"):
        apply_overrides(cfg, ["optim.lr"])
    with pytest.raises(ResnetDeployError, match=r"'optim.momentum' in --set must be float, found 'high'"):
        apply_overrides(cfg, ["optim.momentum=high"])
    with pytest.raises(ResnetDeployError, match=r"name a single field, e.g. optim.batch_size"):
        apply_overrides(cfg, ["optim=1"])


def test_config_is_frozen_and_dump_round_trips(tmp_path):
    cfg = apply_overrides(TrainConfig(), ["schedule.milestones=[5]", "data.scale=[10, 20]", "run.amp=fp16"])
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.optim.lr = 1.0  # type: ignore[misc]
    text = dump_yaml(cfg, tmp_path / "config.yaml")
    assert (tmp_path / "config.yaml").read_text() == text and "amp: fp16" in text
    assert load_train_config(tmp_path / "config.yaml") == cfg
    assert from_dict(TrainConfig, {}) == TrainConfig()


def test_missing_or_invalid_recipe_file(tmp_path):
    with pytest.raises(ResnetDeployError, match=r"recipe not found: .*nope.yaml"):
        load_train_config(tmp_path / "nope.yaml")
    (tmp_path / "bad.yaml").write_text("optim: {lr: [unclosed\n")
    with pytest.raises(ResnetDeployError, match=r"is not valid YAML"):
        load_train_config(tmp_path / "bad.yaml")
