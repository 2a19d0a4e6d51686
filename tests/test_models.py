"""The model zoo: the book's parameter counts, shapes, gradients, state_dict round trips, scratch vs torch layers."""

from __future__ import annotations

import functools

import pytest
import torch
from torch import nn
from torch.nn import functional as F

from cnnlab.models import (
    AnyNet,
    DenseBlock,
    Inception,
    Residual,
    ResNeXtBlock,
    create_model,
    list_models,
    min_input_size,
    nin_block,
    transition_block,
    vgg_block,
)
from cnnlab.models.summary import stages

# What the book's own code gives for one input channel and ten classes (d2l 7.6-8.8). resnet34 (the 8.6 exercise)
# and resnext18 are not in the book: their counts were computed from the builders and are pinned here.
PARAMS = {
    "lenet": 61_706,
    "lenet-relu": 61_706,
    "lenet-bn": 44_878,
    "lenet-bn-relu": 44_878,  # BN-LeNet with ReLU and max pooling: the same layers, parameter-free swaps
    "alexnet": 46_764_746,
    "vgg11": 128_806_154,
    "vgg-small": 43_093_322,
    "nin": 1_992_166,
    "googlenet": 5_977_530,
    "resnet18": 11_178_378,
    "resnet34": 21_290_250,
    "resnext18": 1_697_546,
    "densenet": 758_226,
    "regnetx32": 179_290,
    "compact": 164_162,  # not in the book: the cpu10 recipe's net, pinned from its builder
}

# VGG-11 only takes 224x224 (its dense head is sized for 7x7 maps): 7.5 GMACs per image and 128M parameters.
SLOW = {"vgg11"}


def _models() -> list:
    return [pytest.param(n, marks=pytest.mark.slow) if n in SLOW else n for n in list_models()]


@functools.cache
def _size(name: str) -> int:
    """A small input the model takes: its minimum, or 16 for the nets that would take a single pixel."""
    smallest = min_input_size(name)
    return smallest if smallest > 1 else 16


def _count(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def test_every_registered_model_has_a_pinned_count():
    # the zoo's own families (list_models leaves out the exercise variants of cnnlab.models.variants)
    from cnnlab.models import model_info

    zoo = {name for name in list_models() if model_info(name).builder.__module__.startswith("cnnlab.models.")}
    assert zoo == set(PARAMS)


@pytest.mark.parametrize("name", list_models())
def test_parameter_count_matches_the_book(name):
    with torch.device("meta"):
        model = create_model(name)
    assert _count(model) == PARAMS[name]
    # Explicit channels: the count exists before any forward pass because nothing is lazy.
    assert not any(isinstance(m, nn.modules.lazy.LazyModuleMixin) for m in model.modules())


@pytest.mark.parametrize("name", _models())
def test_forward_backward(name):
    torch.manual_seed(0)
    model = create_model(name).train()
    size = _size(name)
    out = model(torch.randn(2, 1, size, size))
    assert out.shape == (2, 10)
    F.cross_entropy(out, torch.tensor([3, 7])).backward()
    for pname, p in model.named_parameters():
        assert p.grad is not None, f"{pname} gets no gradient"
        assert torch.isfinite(p.grad).all(), pname


@pytest.mark.parametrize("name", _models())
def test_in_channels_and_num_classes(name):
    torch.manual_seed(0)
    model = create_model(name, num_classes=7, in_channels=3).eval()
    size = _size(name)
    with torch.no_grad():
        assert model(torch.randn(2, 3, size, size)).shape == (2, 7)
    with pytest.raises(RuntimeError):  # the stem really expects three channels
        model(torch.randn(2, 1, size, size))


@pytest.mark.parametrize("name", _models())
def test_state_dict_round_trip(name):
    torch.manual_seed(0)
    trained = create_model(name)
    size = _size(name)
    with torch.no_grad():
        trained(torch.randn(4, 1, size, size))  # moves BN running statistics off their defaults
    trained.eval()
    torch.manual_seed(1)
    fresh = create_model(name).eval()
    x = torch.randn(2, 1, size, size)
    with torch.no_grad():
        assert not torch.equal(fresh(x), trained(x))
        fresh.load_state_dict(trained.state_dict())
        assert torch.equal(fresh(x), trained(x))


@pytest.mark.parametrize("name", _models())
def test_stages_compose_to_forward(name):
    """The summary's rows (the book's ``self.net`` children) are the whole model, in order."""
    torch.manual_seed(0)
    model = create_model(name).eval()
    size = _size(name)
    x = torch.randn(2, 1, size, size)
    with torch.no_grad():
        y = x
        for stage in stages(model):
            y = stage(y)
        torch.testing.assert_close(y, model(x), rtol=0, atol=0)
    assert sum(_count(stage) for stage in stages(model)) == _count(model)


@pytest.mark.parametrize("name", ["lenet", "lenet-bn", "resnet18"])
def test_scratch_layers_match_torch_layers(name):
    torch.manual_seed(0)
    reference = create_model(name, ops="torch")
    scratch = create_model(name, ops="scratch")
    assert scratch.state_dict().keys() == reference.state_dict().keys()
    scratch.load_state_dict(reference.state_dict())
    size = _size(name)
    x = torch.randn(4, 1, size, size)
    with torch.no_grad():  # update the running statistics identically, then compare inference in float32
        reference(x), scratch(x)
    reference.eval(), scratch.eval()
    torch.testing.assert_close(scratch(x), reference(x), rtol=1e-5, atol=1e-5)
    # Train mode in float64: batch norm over ResNet-18's 1x1 final maps (4 values a channel) amplifies float32
    # rounding to ~5e-5, which says nothing about the layers, so forward and gradients are compared where it doesn't.
    reference.double().train(), scratch.double().train()
    x = x.double()
    for model in (reference, scratch):
        F.cross_entropy(model(x), torch.tensor([0, 1, 2, 3])).backward()
    torch.testing.assert_close(scratch(x), reference(x), rtol=1e-10, atol=1e-10)
    for (pname, p), q in zip(reference.named_parameters(), scratch.parameters(), strict=True):
        torch.testing.assert_close(q.grad, p.grad, rtol=1e-9, atol=1e-10, msg=pname)


@pytest.mark.slow
@pytest.mark.parametrize("name", [n for n in list_models() if n != "vgg11"])  # vgg-small runs VGG's code
def test_every_model_builds_from_scratch_layers(name):
    """Grouped convs (ResNeXt), padded max pools (GoogLeNet), average pools (DenseNet) all match, in float64."""
    torch.manual_seed(0)
    reference = create_model(name, ops="torch").double()
    scratch = create_model(name, ops="scratch").double()
    scratch.load_state_dict(reference.state_dict())
    size = _size(name)
    has_bn = any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in reference.modules())
    # Eight samples keep batch norm over 1x1 maps well conditioned; two suffice without it (AlexNet, VGG, NiN).
    x = torch.randn(8 if has_bn else 2, 1, size, size, dtype=torch.float64)
    with torch.no_grad():
        for train in (True, False):
            outputs = []
            for model in (reference, scratch):
                torch.manual_seed(1)  # the same dropout masks
                outputs.append(model.train(train)(x))
            torch.testing.assert_close(outputs[1], outputs[0], rtol=1e-9, atol=1e-10)


# The building blocks, with the book's own shape examples.


def test_residual_shapes_d2l_8_6_2():
    x = torch.randn(4, 3, 6, 6)
    assert Residual(3, 3)(x).shape == (4, 3, 6, 6)
    assert Residual(3, 6, use_1x1conv=True, strides=2)(x).shape == (4, 6, 3, 3)


@pytest.mark.parametrize("block", [Residual(5, 5).eval(), ResNeXtBlock(5, 5, groups=1, bot_mul=1).eval()])
def test_zeroed_last_bn_makes_a_block_the_identity(block):
    """d2l 8.6.1's argument: a residual block can learn f(x) = x, here ReLU(x) for the final ReLU."""
    last_bn = block.bn2 if isinstance(block, Residual) else block.bn3
    nn.init.zeros_(last_bn.weight)
    nn.init.zeros_(last_bn.bias)
    x = torch.randn(2, 5, 7, 7)
    with torch.no_grad():
        torch.testing.assert_close(block(x), F.relu(x), rtol=0, atol=0)


def test_resnext_groups_is_the_group_width_as_in_the_book():
    blk = ResNeXtBlock(32, 32, groups=16, bot_mul=1)  # d2l 8.6.5's example
    assert blk.conv2.groups == 2 and blk.conv2.weight.shape == (32, 16, 3, 3)
    assert blk(torch.randn(4, 32, 12, 12)).shape == (4, 32, 12, 12)
    down = ResNeXtBlock(32, 64, groups=16, bot_mul=0.5, use_1x1conv=True, strides=2)
    assert down.conv2.groups == 2 and down(torch.randn(2, 32, 12, 12)).shape == (2, 64, 6, 6)


def test_dense_and_transition_blocks_d2l_8_7():
    x = torch.randn(4, 3, 8, 8)
    blk = DenseBlock(2, 3, 10)
    y = blk(x)
    assert y.shape == (4, 23, 8, 8) and blk.out_channels == 23
    assert torch.equal(y[:, :3], x)  # dense connectivity: the input is passed through by concatenation
    assert transition_block(23, 10)(y).shape == (4, 10, 4, 4)


def test_inception_concatenates_four_branches():
    blk = Inception(192, 64, (96, 128), (16, 32), 32)  # the first block of GoogLeNet's b3
    x = torch.randn(2, 192, 12, 12)
    y = blk(x)
    assert y.shape == (2, 256, 12, 12)
    torch.testing.assert_close(y[:, :64], F.relu(blk.b1_1(x)))
    torch.testing.assert_close(y[:, -32:], F.relu(blk.b4_2(F.max_pool2d(x, 3, 1, 1))))


def test_vgg_and_nin_blocks():
    vgg = vgg_block(2, 3, 8)
    assert [type(m).__name__ for m in vgg] == ["Conv2d", "ReLU", "Conv2d", "ReLU", "MaxPool2d"]
    assert vgg(torch.randn(1, 3, 16, 16)).shape == (1, 8, 8, 8)
    nin = nin_block(1, 96, kernel_size=11, strides=4, padding=0)
    assert [m.kernel_size for m in nin if isinstance(m, nn.Conv2d)] == [(11, 11), (1, 1), (1, 1)]
    assert nin(torch.randn(1, 1, 224, 224)).shape == (1, 96, 54, 54)


def test_anynet_builds_any_stage_list():
    net = AnyNet(((1, 16, 8, 1), (2, 24, 8, 0.5)), stem_channels=8, num_classes=5)
    assert [name for name, _ in net.named_children()] == ["stem", "stage1", "stage2", "head"]
    assert net.stage2[0].conv4 is not None and net.stage2[1].conv4 is None  # only a stage's first block projects
    assert net(torch.randn(2, 1, 32, 32)).shape == (2, 5)


def test_submodule_names_are_the_state_dict_api():
    keys = {name: list(create_model(name).state_dict())[:2] for name in ("resnet18", "densenet", "regnetx32")}
    assert keys == {
        "resnet18": ["b1.0.weight", "b1.0.bias"],
        "densenet": ["b1.0.weight", "b1.0.bias"],
        "regnetx32": ["stem.0.weight", "stem.0.bias"],
    }
    assert "b3.0.conv3.weight" in create_model("resnet18").state_dict()
    assert "dense_blk1.net.0.2.weight" in create_model("densenet").state_dict()
