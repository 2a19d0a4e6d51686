"""A weights file from elsewhere is opened with one read of each JSON file beside it and one renaming of its keys.

`cnnlab predict/summary imagenet-NAME --weights FILE` read the config.json beside a timm or Transformers file twice
(for its keys, then for its classes and feeding), `train --init-from FILE` twice for a timm file (for its
normalisation, then for its keys), and the explorer renamed the keys twice (to shape the network by them, then to
load them). The files are written here as timm and Transformers save them (the helpers of their key tests), with
random weights."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision
from PIL import Image
from safetensors.torch import load_file, save_file

from cnnlab.cli import main
from cnnlab.explore.model import Options
from cnnlab.explore.sources import open_model
from cnnlab.models import create_model, timm_keys, transformers_keys
from cnnlab.train.finetune import init_from
from test_models_timm_keys import _mobilenetv2_key, _pretrained_cfg, _timm_file
from test_models_transformers_keys import _resnet_key, _transformers_file, torch_home  # noqa: F401  an autouse fixture

TIMM_CONFIG = {"label_names": ["cat", "dog", "fox"], "num_classes": 3,
               "pretrained_cfg": _pretrained_cfg(48, mean=[0.5, 0.4, 0.3], std=[0.2, 0.25, 0.3], num_classes=3)}
TRANSFORMERS_CONFIG = {"model_type": "resnet", "layer_type": "basic", "id2label": {"0": "cat", "1": "dog", "2": "fox"}}
PROCESSOR = {"crop_pct": 0.875, "do_normalize": True, "do_resize": True, "resample": 3,
             "image_mean": [0.5, 0.4, 0.3], "image_std": [0.2, 0.25, 0.3], "size": {"shortest_edge": 48}}


@pytest.fixture
def reads(monkeypatch) -> Counter:
    """How often each JSON file beside a weights file is read (by its name), as the reads happen."""
    counted, real = Counter(), Path.read_text

    def read_text(self: Path, *args, **kwargs) -> str:
        if self.name.endswith("config.json"):
            counted[self.name] += 1
        return real(self, *args, **kwargs)

    monkeypatch.setattr(Path, "read_text", read_text)
    return counted


def _weights(tmp_path: Path, library: str) -> Path:
    """A torchvision resnet18 of 3 classes with random weights, saved as ``library`` ("timm" or "transformers")
    saves it, with its config.json (and a Transformers image processor's preprocessor_config.json) beside it."""
    network = torchvision.models.resnet18(num_classes=3).eval()
    if library == "timm":  # timm's resnet18 keeps torchvision's key names
        return _timm_file(tmp_path / "timm", network, lambda name, names: name, "resnet18", TIMM_CONFIG)
    path = _transformers_file(tmp_path / "hf", network, _resnet_key, TRANSFORMERS_CONFIG)
    (path.parent / "preprocessor_config.json").write_text(json.dumps(PROCESSOR))
    return path


@pytest.mark.parametrize("command", ["predict", "summary"])
@pytest.mark.parametrize("library, beside", [("timm", {"config.json": 1}),
                                             ("transformers", {"config.json": 1, "preprocessor_config.json": 1})])
def test_a_weights_file_opened_by_name_reads_each_file_beside_it_once(tmp_path, reads, capsys, command, library,
                                                                      beside):
    path = _weights(tmp_path, library)
    Image.fromarray(np.zeros((40, 50, 3), dtype=np.uint8)).save(tmp_path / "photo.png")
    argv = [command, "imagenet-resnet18", "--weights", str(path)]
    assert main(argv + [str(tmp_path / "photo.png")] if command == "predict" else argv) == 0
    assert dict(reads) == beside
    if command == "predict":  # what the files say is still read: the classes of config.json
        assert capsys.readouterr().out.split(": ", 1)[1].split()[0] in ("cat", "dog", "fox")


@pytest.mark.parametrize("library, beside, said_by", [
    ("timm", {"config.json": 1}, "config.json beside it (timm's pretrained_cfg)"),
    ("transformers", {"config.json": 1, "preprocessor_config.json": 1}, "preprocessor_config.json beside it"),
])
def test_init_from_a_weights_file_reads_each_file_beside_it_once(tmp_path, reads, library, beside, said_by):
    path = _weights(tmp_path, library)
    model = create_model("imagenet-resnet18", num_classes=4, in_channels=3)
    done = init_from(model, path, classes=["a", "b", "c", "d"], channels=3, network="resnet18")
    assert dict(reads) == beside
    assert done.said_by == said_by and done.normalize == [[0.5, 0.4, 0.3], [0.2, 0.25, 0.3]]


@pytest.fixture
def renames(monkeypatch) -> list[str]:
    """The first key of each state dict put under torchvision's names, as it is renamed."""
    done = []
    for module in (timm_keys, transformers_keys):
        def counted(state, *args, real=module.renamed):
            done.append(next(iter(state)))
            return real(state, *args)
        monkeypatch.setattr(module, "renamed", counted)
    return done


def test_explore_renames_a_transformers_files_keys_under_a_wrappers_prefix_once(tmp_path, renames):
    theirs = torchvision.models.resnet18(num_classes=3).eval()
    saved = load_file(_transformers_file(tmp_path / "hf", theirs, _resnet_key, TRANSFORMERS_CONFIG))
    save_file({f"module.{k}": v for k, v in saved.items()}, tmp_path / "hf" / "wrapped.safetensors")
    explored = open_model("imagenet-resnet18", Options(input_size=32, weights=tmp_path / "hf" / "wrapped.safetensors"))
    assert len(renames) == 1
    assert "Hugging Face Transformers' ResNetForImageClassification keys read under torchvision's ResNet names, its " \
        "keys without their 'module.' prefix" in explored.notes[0] and explored.classes == ("cat", "dog", "fox")
    images = torch.randint(0, 256, (2, 3, 32, 32), dtype=torch.uint8)
    with torch.no_grad():  # the weights where they left: the network answers as it did
        expected = theirs((images.float() / 255 - torch.tensor([0.485, 0.456, 0.406]).view(3, 1, 1))
                          / torch.tensor([0.229, 0.224, 0.225]).view(3, 1, 1))
        assert torch.allclose(explored.logits(images), expected, atol=1e-4)


def test_explore_renames_a_timm_files_keys_once(tmp_path, renames):
    theirs = torchvision.models.mobilenet_v2(num_classes=3).eval()
    path = _timm_file(tmp_path / "timm", theirs, _mobilenetv2_key, "mobilenetv2_100")
    explored = open_model("imagenet-mobilenet_v2", Options(weights=path, input_size=40))
    assert len(renames) == 1
    assert "timm's mobilenetv2_100 (MobileNetV2) keys read under torchvision's MobileNetV2 names" in explored.notes[0]
