"""A backbone saved without its classifier (a torchvision network's state dict after ``model.fc = nn.Identity()``,
as fine-tuning tutorials and self-supervised checkpoints ship it): ``train --init-from`` starts from its body with a
fresh head, and explore, summary and predict refuse it in one line, since a body names no classes. The files are
written here with torchvision; the network they came from is the oracle. Transformers' bare ``ResNetModel`` and
timm's ``num_classes=0`` files are tested beside their classifiers' (test_models_transformers_keys.py,
test_models_timm_keys.py)."""

from __future__ import annotations

import shlex

import numpy as np
import pytest
import torch
import torchvision
from PIL import Image

from cnnlab.cli import main
from cnnlab.errors import CnnlabError
from cnnlab.models import create_model
from cnnlab.train import build_run, make_config
from cnnlab.train.finetune import init_from
from data_support import noise_dataset

HEAD = ("fc.weight", "fc.bias")


@pytest.fixture(autouse=True)
def torch_home(tmp_path, monkeypatch) -> None:
    """An empty TORCH_HOME: nothing is read from a cache, and the ImageNet weights are never needed."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setenv("CNNLAB_CACHE", str(tmp_path / "cache"))


def _body(builder: str, prefix: str = "") -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """A torchvision network's randomised state dict, and that state dict saved as its body alone (no ``fc``),
    its keys under ``prefix`` (``module.``: DistributedDataParallel's)."""
    torch.manual_seed(0)
    network = getattr(torchvision.models, builder)()
    state = {k: torch.randn_like(v) if v.is_floating_point() else v for k, v in network.state_dict().items()}
    return state, {prefix + k: v for k, v in state.items() if k not in HEAD}


@pytest.mark.parametrize("prefix, says", [("", ""), ("module.", "its keys without their 'module.' prefix")])
def test_init_from_a_torchvision_body_without_fc_keeps_it_and_starts_a_fresh_head(tmp_path, prefix, says):
    """`train imagenet-resnet50 --init-from body.pth` of a ResNet-50 saved after `model.fc = nn.Identity()`: every
    tensor of the body comes back bit for bit, the head keeps the run's own fresh initialisation and the line says
    so (new: fc.weight, fc.bias). Under DistributedDataParallel's ``module.`` it was refused ("... tensors besides
    the output layer differ"): the prefix was dropped only where the keys then fitted the network whole."""
    state, body = _body("resnet50", prefix)
    torch.save(body, tmp_path / "body.pth")
    model = create_model("imagenet-resnet50", num_classes=3, in_channels=3)
    fresh = {k: model.state_dict()[k].clone() for k in HEAD}
    done = init_from(model, tmp_path / "body.pth", classes=["a", "b", "c"], channels=3, network="resnet50")
    assert done.line.endswith("new: fc.weight, fc.bias") and says in done.line, done.line
    own = model.state_dict()
    assert all(torch.equal(own[k], v) for k, v in state.items() if k not in HEAD)
    assert all(torch.equal(own[k], v) for k, v in fresh.items())


def test_a_run_of_an_imagenet_backbone_starts_from_a_body_without_fc(tmp_path, capsys):
    """The run itself (`train imagenet-resnet18 --init-from body.pth`, the finetune recipe) takes the body under
    ``module.`` and prints its one line: what was kept, and the head that is new."""
    state, body = _body("resnet18", "module.")
    torch.save(body, tmp_path / "body.pth")
    config = make_config("imagenet-resnet18", "finetune", init_from=str(tmp_path / "body.pth"), epochs=1,
                         batch_size=4, resize=32, limit_train_batches=1)
    parts = build_run(config, dataset=noise_dataset(torch.arange(12) % 3, "abc", 3, 32, test=3))
    lines = [line for line in capsys.readouterr().out.splitlines() if line.startswith("initialised")]
    assert len(lines) == 1 and f"{len(state) - 2} of {len(state)} tensors" in lines[0] and \
        lines[0].endswith("new: fc.weight, fc.bias"), lines
    own = parts.model.state_dict()
    assert all(torch.equal(own[k].cpu(), v) for k, v in state.items() if k not in HEAD)


@pytest.mark.parametrize("command", ["explore", "summary", "predict"])
def test_a_torchvision_body_without_fc_is_refused_in_one_line_naming_the_missing_head(tmp_path, capsys, command):
    """explore, summary and predict of `imagenet-resnet18 --weights body.pth`: no classifier, so no classes, and a
    fresh head's outputs are no predictions: one line, exit code 2, naming the head's keys that are not there and
    the way in (train --init-from); it said only "Missing key(s) in state_dict", the file taken as damaged."""
    torch.save(_body("resnet18")[1], tmp_path / "body.pth")
    Image.fromarray(np.zeros((40, 40, 3), dtype=np.uint8)).save(tmp_path / "photo.png")
    images = [str(tmp_path / "photo.png")] if command == "predict" else []
    assert main([command, "imagenet-resnet18", "--weights", str(tmp_path / "body.pth"), *images]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1, err
    assert "holds torchvision's resnet18 without its classifier (no fc.weight, fc.bias): a body names no classes " \
        "and predicts none; expected a state dict of torchvision's resnet18" in err and \
        f"cnnlab train imagenet-resnet18 --dataset folder:PHOTOS --init-from {tmp_path / 'body.pth'}" in err, err


def test_a_body_missing_more_than_its_head_is_named_as_not_fitting(tmp_path):
    """A body that lacks a tensor besides the head is another file, not a headless one: it is refused as not fitting,
    naming the first tensor that differs."""
    _, body = _body("resnet18")
    del body["layer4.1.conv2.weight"]
    torch.save(body, tmp_path / "body.pth")
    with pytest.raises(CnnlabError, match=r"1 tensors besides the output layer differ, first layer4\.1\.conv2\.weight"):
        init_from(create_model("imagenet-resnet18", num_classes=3, in_channels=3), tmp_path / "body.pth",
                  classes=["a", "b", "c"], channels=3)


def test_a_whole_network_beside_its_body_alone_is_taken_whole(tmp_path):
    """A checkpoint keeping the whole network under ``model.`` and its body alone under ``backbone.`` (both fit once
    the head may be absent) takes the whole one, as it did before bodies were read."""
    state, body = _body("resnet18")
    torch.save({**{f"model.{k}": v for k, v in state.items()}, **{f"backbone.{k}": v * 0 for k, v in body.items()}},
               tmp_path / "both.pth")
    model = create_model("imagenet-resnet18", num_classes=1000, in_channels=3)
    done = init_from(model, tmp_path / "both.pth", channels=3)
    assert "its keys under 'model.' without that prefix" in done.line and "new:" not in done.line, done.line
    assert all(torch.equal(model.state_dict()[k], v) for k, v in state.items())


def test_a_whole_network_under_a_prefix_is_taken_before_a_body_without_one(tmp_path):
    """A file whose keys without a prefix are a body (a script's feature extractor, fc = nn.Identity()) beside the
    whole network under ``model.``: the whole one is taken, as it is beside a body under another prefix; the body
    without a prefix was read as it was, the whole network's tensors passed over and its head started fresh."""
    state, body = _body("resnet18")
    torch.save({**{k: v * 0 for k, v in body.items()}, **{f"model.{k}": v for k, v in state.items()}},
               tmp_path / "both.pth")
    model = create_model("imagenet-resnet18", num_classes=1000, in_channels=3)
    done = init_from(model, tmp_path / "both.pth", channels=3)
    assert "its keys under 'model.' without that prefix" in done.line and "new:" not in done.line, done.line
    assert all(torch.equal(model.state_dict()[k], v) for k, v in state.items())


def test_the_way_in_a_bodys_refusal_names_trains_from_it_as_given(tmp_path, capsys):
    """The command that explore's refusal of a body names (a folder of photos standing for PHOTOS) trains from the
    body, its head fresh. It named no dataset, and `cnnlab train imagenet-resnet18 --init-from body.pth` read
    Fashion-MNIST's grey digits, which the body's RGB stem refused ("pass --channels 3")."""
    torch.save(_body("resnet18")[1], tmp_path / "body file.pth")  # a space: the path is quoted for a shell
    assert main(["explore", "imagenet-resnet18", "--weights", str(tmp_path / "body file.pth")]) == 2
    err = capsys.readouterr().err.strip()
    assert "photos per class: cnnlab train " in err, err
    command = shlex.split(err.rsplit("photos per class: ", 1)[1])
    rng = np.random.default_rng(0)
    for name in ("a", "b"):
        (tmp_path / "photos" / name).mkdir(parents=True)
        for i in range(6):
            picture = rng.integers(0, 256, (40, 40, 3), dtype=np.uint8)
            Image.fromarray(picture).save(tmp_path / "photos" / name / f"{i}.png")
    args = [f"folder:{tmp_path / 'photos'}" if arg == "folder:PHOTOS" else arg for arg in command[1:]]
    assert command[:2] == ["cnnlab", "train"] and main([*args, "--epochs", "1", "--batch-size", "2", "--resize", "32",
                                                        "--limit-train-batches", "1", "--device", "cpu", "--no-report",
                                                        "--out", str(tmp_path / "run")]) == 0
    out = capsys.readouterr().out
    assert "new: fc.weight, fc.bias" in out, out
