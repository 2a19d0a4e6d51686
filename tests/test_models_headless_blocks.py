"""A backbone saved without its whole classifier block (``model.classifier = nn.Identity()`` of torchvision's ConvNeXt,
VGG or MobileNetV3, whose head is an ``nn.Sequential``: ConvNeXt's LayerNorm2d goes with its Linear, VGG's three
Linears together): ``train --init-from`` keeps its body and starts the whole block fresh; explore, summary and
predict refuse it in one line, as they refuse a body without its one output layer (test_models_headless_files.py). A
file lacking only part of the block is still refused. The files are written here with torchvision, random weights;
the network they came from is the oracle. timm's ConvNeXt with ``num_classes=0`` (it keeps ``head.norm``) and
Transformers' bare ``ConvNextModel`` (its final ``layernorm``) lack the output layer alone, and are tested in
test_models_timm_keys.py and test_models_transformers_keys.py."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torchvision
from PIL import Image
from torch import nn

from cnnlab.cli import main
from cnnlab.errors import CnnlabError
from cnnlab.models import create_model
from cnnlab.train import build_run, make_config
from cnnlab.train.finetune import init_from
from data_support import noise_dataset

# each network's head block, the top-level module holding its output layer: every key of it
BLOCKS = {"convnext_tiny": ("classifier.0.weight", "classifier.0.bias", "classifier.2.weight", "classifier.2.bias"),
          "vgg11": ("classifier.0.weight", "classifier.0.bias", "classifier.3.weight", "classifier.3.bias",
                    "classifier.6.weight", "classifier.6.bias"),
          "mobilenet_v3_small": ("classifier.0.weight", "classifier.0.bias", "classifier.3.weight",
                                 "classifier.3.bias")}


@pytest.fixture(autouse=True)
def torch_home(tmp_path, monkeypatch) -> None:
    """An empty TORCH_HOME: nothing is read from a cache, and the ImageNet weights are never needed."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setenv("CNNLAB_CACHE", str(tmp_path / "cache"))


def _saved_without(builder: str, path, *parts: int, prefix: str = "") -> dict[str, torch.Tensor]:
    """torchvision's ``builder`` (weights=None), randomised, saved to ``path`` as a user saves it after
    ``model.classifier = nn.Identity()``, or with only the classifier's ``parts`` replaced by ``nn.Identity()``, its
    keys under ``prefix`` (``module.``: DistributedDataParallel's); returns the state dict, without the prefix."""
    torch.manual_seed(0)
    network = getattr(torchvision.models, builder)(weights=None)
    if parts:
        for part in parts:
            network.classifier[part] = nn.Identity()
    else:
        network.classifier = nn.Identity()
    state = {k: torch.randn_like(v) if v.is_floating_point() else v for k, v in network.state_dict().items()}
    torch.save({prefix + k: v for k, v in state.items()}, path)
    return state


@pytest.mark.parametrize("builder", list(BLOCKS))
def test_init_from_a_body_without_its_classifier_block_keeps_it_and_starts_the_block_fresh(tmp_path, builder):
    """`train imagenet-NAME --init-from body.pth` of a network saved after `model.classifier = nn.Identity()`:
    every tensor of the body comes back bit for bit, the whole head block keeps the run's own initialisation
    (torchvision's: ConvNeXt's LayerNorm2d ones and zeros) and the line names every new key. It was refused ("2
    tensors besides the output layer differ, first classifier.0.weight"): only the output layer could be absent."""
    body = _saved_without(builder, tmp_path / "body.pth")
    model = create_model(f"imagenet-{builder}", num_classes=3, in_channels=3)
    fresh = {k: model.state_dict()[k].clone() for k in BLOCKS[builder]}
    done = init_from(model, tmp_path / "body.pth", classes=["a", "b", "c"], channels=3, network=builder)
    assert done.line.endswith(f"new: {', '.join(BLOCKS[builder])}"), done.line
    own = model.state_dict()
    assert set(own) == set(body) | set(BLOCKS[builder])
    assert all(torch.equal(own[k], v) for k, v in body.items())
    assert all(torch.equal(own[k], v) for k, v in fresh.items())
    if builder == "convnext_tiny":
        assert torch.equal(own["classifier.0.weight"], torch.ones(768)) and not own["classifier.0.bias"].any()


def test_a_run_starts_from_a_convnext_body_without_its_classifier_block(tmp_path, capsys):
    """The run itself (`train imagenet-convnext_tiny --init-from body.pth`, the finetune recipe) takes the body under
    DistributedDataParallel's ``module.`` and prints its one line: what was kept, and the four tensors of the head
    block that are new."""
    body = _saved_without("convnext_tiny", tmp_path / "body.pth", prefix="module.")
    config = make_config("imagenet-convnext_tiny", "finetune", init_from=str(tmp_path / "body.pth"), epochs=1,
                         batch_size=4, resize=32, limit_train_batches=1)
    parts = build_run(config, dataset=noise_dataset(torch.arange(12) % 3, "abc", 3, 32, test=3))
    lines = [line for line in capsys.readouterr().out.splitlines() if line.startswith("initialised")]
    assert len(lines) == 1 and f"{len(body)} of {len(body) + 4} tensors" in lines[0] and \
        "its keys without their 'module.' prefix" in lines[0] and \
        lines[0].endswith(f"new: {', '.join(BLOCKS['convnext_tiny'])}"), lines
    own = parts.model.state_dict()
    assert all(torch.equal(own[k].cpu(), v) for k, v in body.items())


@pytest.mark.parametrize("builder, command", [("convnext_tiny", "explore"), ("convnext_tiny", "summary"),
                                              ("convnext_tiny", "predict"), ("vgg11", "explore")])
def test_a_body_without_its_classifier_block_is_refused_in_one_line_naming_the_block(tmp_path, capsys, builder,
                                                                                    command):
    """explore, summary and predict of `imagenet-NAME --weights` a body saved without its classifier block: one
    line, exit code 2, saying it holds the network without its classifier block, naming every missing key and the
    way in (train --init-from); it said only "does not fit ... Missing key(s) in state_dict", as for a damaged
    file."""
    _saved_without(builder, tmp_path / "body.pth")
    Image.fromarray(np.zeros((40, 40, 3), dtype=np.uint8)).save(tmp_path / "photo.png")
    images = [str(tmp_path / "photo.png")] if command == "predict" else []
    assert main([command, f"imagenet-{builder}", "--weights", str(tmp_path / "body.pth"), *images]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1, err
    assert f"holds torchvision's {builder} without its classifier block 'classifier' (no " \
        f"{', '.join(BLOCKS[builder])}): a body names no classes and predicts none; expected a state dict of " \
        f"torchvision's {builder}" in err and \
        f"cnnlab train imagenet-{builder} --dataset folder:PHOTOS --init-from {tmp_path / 'body.pth'}" in err, err


@pytest.mark.parametrize("builder, parts", [("convnext_tiny", (0,)), ("vgg11", (0, 6))])
def test_a_body_missing_part_of_its_classifier_block_is_refused_as_not_fitting(tmp_path, capsys, builder, parts):
    """A file lacking some of the head block but not all (ConvNeXt's LayerNorm2d gone and its Linear kept; VGG's
    first and last Linears gone and its middle one kept) is no body saved without its classifier: init_from refuses
    it as not fitting, naming the first tensor that differs, and explore as not fitting, naming the missing keys."""
    _saved_without(builder, tmp_path / "part.pth", *parts)
    with pytest.raises(CnnlabError, match=r"2 tensors besides the output layer differ, first classifier\.0\.weight"):
        init_from(create_model(f"imagenet-{builder}", num_classes=3, in_channels=3), tmp_path / "part.pth",
                  classes=["a", "b", "c"], channels=3, network=builder)
    assert main(["explore", f"imagenet-{builder}", "--weights", str(tmp_path / "part.pth")]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and f"does not fit torchvision's {builder}: Missing key(s) in " \
        'state_dict: "classifier.0.weight", "classifier.0.bias"' in err and "without its classifier" not in err, err


def test_a_body_without_its_classifier_block_of_other_channels_is_refused_with_the_channels_hint(tmp_path):
    """An RGB MobileNetV3 body saved after `model.classifier = nn.Identity()` for a grey run: only its stem differs,
    and the line says to pass --channels 3, as it does for a ResNet body without its fc. It counted the fresh head
    block's tensors as differing ("3 tensors besides the output layer differ") and gave no hint."""
    _saved_without("mobilenet_v3_small", tmp_path / "body.pth")
    with pytest.raises(CnnlabError, match=r"1 tensors besides the output layer differ, first features\.0\.0\.weight "
                                          r".*; pass --channels 3 to read this dataset as the checkpoint's input$"):
        init_from(create_model("imagenet-mobilenet_v3_small", num_classes=3, in_channels=1), tmp_path / "body.pth",
                  classes=["a", "b", "c"], channels=1, network="mobilenet_v3_small")
