"""The model zoo against torchvision and the paper ."""

import pytest
import torch
import torchvision
from helpers import randomize_bn

from resnet_deploy import models, paper
from resnet_deploy.models.resnet import PadShortcut
from resnet_deploy.runtime.errors import ResnetDeployError

DEPTHS = (18, 34, 50, 101, 152)


@pytest.mark.parametrize("depth", DEPTHS)
def test_parameter_counts_equal_torchvision(depth):
    expected = paper.TORCHVISION[depth][0]
    assert models.count_parameters(models.build(f"resnet{depth}")) == expected
    assert models.count_parameters(getattr(torchvision.models, f"resnet{depth}")()) == expected


@pytest.mark.parametrize("depth", [20, 32, 44, 56, 110, 1202])
def test_cifar_parameter_counts_match_table6(depth):
    n = models.count_parameters(models.build(f"cifar_resnet{depth}"))
    assert abs(n / 1e6 - paper.CIFAR_PARAMS_M[depth]) / paper.CIFAR_PARAMS_M[depth] <= 0.02, n


@pytest.mark.parametrize("residual,plain", [("resnet34", "plain34"), ("resnet50", "plain50"),
                                            ("cifar_resnet56", "cifar_plain56")])
def test_option_a_adds_no_parameters(residual, plain):
    assert models.count_parameters(models.build(residual, shortcut="A")) == models.count_parameters(models.build(plain))


@pytest.mark.parametrize("name", ["resnet34", "resnet50", "cifar_resnet20"])
def test_counts_grow_a_b_c(name):
    a, b, c = (models.count_parameters(models.build(name, shortcut=s)) for s in "ABC")
    assert a < b < c


@pytest.mark.parametrize("depth", DEPTHS)
def test_torchvision_weights_reproduce_torchvision_logits(depth):
    torch.manual_seed(depth)
    ref = randomize_bn(getattr(torchvision.models, f"resnet{depth}")(), seed=depth)  # BN stats must load too
    ours = models.load_torchvision(models.build(f"resnet{depth}"), ref.state_dict()).eval()
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        diff = (ours(x) - ref(x)).abs().max().item()
    assert diff <= 1e-5


def test_load_torchvision_names_bad_keys():
    sd = torchvision.models.resnet18(num_classes=10).state_dict()
    sd["extra.weight"] = torch.zeros(1)
    del sd["layer1.0.conv1.weight"]
    with pytest.raises(ResnetDeployError) as e:
        models.load_torchvision(models.build("resnet18"), sd)
    msg = str(e.value)
    assert "missing (1): layer1.0.conv1.weight" in msg
    assert "unexpected (1): extra.weight" in msg
    assert "fc.weight (10, 512) vs model (1000, 512)" in msg


def test_resnet50_multiply_adds():
    macs = models.count_macs(models.build("resnet50"), 224)
    assert abs(macs / 1e9 - 4.09) / 4.09 <= 0.03, macs


@pytest.mark.parametrize("name,size,channels,classes", [
    ("resnet18", 224, 3, 1000), ("resnet50", 224, 1, 7), ("plain18", 32, 3, 10),
    ("cifar_resnet20", 32, 3, 10), ("cifar_resnet20", 28, 1, 10), ("cifar_plain20", 224, 1, 3)])
def test_output_shapes(name, size, channels, classes):
    model = models.build(name, num_classes=classes, in_channels=channels).eval()
    with torch.no_grad():
        assert model(torch.randn(3, channels, size, size)).shape == (3, classes)


@pytest.mark.parametrize("name,shortcut", [("resnet18", "A"), ("resnet50", "B"), ("resnet18", "C"),
                                           ("plain18", None), ("cifar_resnet20", "A"), ("cifar_resnet20", "C")])
def test_every_parameter_gets_a_gradient(name, shortcut):
    model = models.build(name, num_classes=5, shortcut=shortcut)
    model(torch.randn(2, 3, 64, 64)).logsumexp(1).sum().backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert not missing


def test_stride_placement():
    v15 = models.build("resnet50")
    paper_style = models.build("resnet50", stride_in_1x1=True)
    assert v15.layer2[0].conv1.stride == (1, 1) and v15.layer2[0].conv2.stride == (2, 2)
    assert paper_style.layer2[0].conv1.stride == (2, 2) and paper_style.layer2[0].conv2.stride == (1, 1)


def test_option_a_shortcut_is_zero_padded_identity():
    x = torch.randn(2, 16, 8, 8)
    y = PadShortcut(16, 32, 2)(x)
    assert y.shape == (2, 32, 4, 4)
    assert torch.equal(y[:, :16], x[:, :, ::2, ::2])
    assert torch.count_nonzero(y[:, 16:]) == 0


def test_plain_nets_have_no_shortcuts():
    model = models.build("cifar_plain20")
    assert all(not getattr(m, "residual", False) for m in model.modules() if hasattr(m, "residual"))
    assert not any(isinstance(m, PadShortcut) for m in model.modules())


def test_zero_init_residual_zeroes_last_bn():
    model = models.build("resnet50", zero_init_residual=True)
    assert torch.count_nonzero(model.layer1[0].bn3.weight) == 0
    assert torch.count_nonzero(models.build("resnet50").layer1[0].bn3.weight) > 0


@pytest.mark.parametrize("kwargs,fragment", [
    ({"name": "resnet51"}, "unknown architecture 'resnet51'; choose one of: resnet18, resnet34"),
    ({"name": "resnet18", "shortcut": "D"}, "unknown shortcut option 'D'; choose one of: A, B, C"),
    ({"name": "resnet18", "dropout": 0.5}, "unknown model option(s) dropout; choose from: shortcut"),
    ({"name": "resnet18", "in_channels": 4}, "in_channels must be 1 (grey) or 3 (RGB), found 4"),
])
def test_build_errors_name_the_choices(kwargs, fragment):
    name = kwargs.pop("name")
    with pytest.raises(ResnetDeployError, match=None) as e:
        models.build(name, **kwargs)
    assert fragment in str(e.value)
