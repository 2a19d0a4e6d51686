"""`train --init-from` of a weights file from elsewhere whose folder says how its network is fed: timm's config.json
(its pretrained_cfg's mean and std) or a Transformers preprocessor_config.json (image_mean, image_std). The run
normalises its input so, records it (what eval, export, predict and explore of the run read), and says so.

timm and Transformers are not installed: the files are written in their layouts by the helpers of the tests of their
keys; the pretrained_cfg is timm's efficientnet_b0.ra4_e3600_r224_in1k's (timm's Inception mean and std, 0.5 and
0.5), the processor's another than ImageNet's."""

from __future__ import annotations

import json

import pytest
import torch
import torchvision

from cnnlab.models.normalisation_beside import normalisation_beside
from cnnlab.train import build_run, make_config
from data_support import noise_dataset
from test_models_timm_keys import _efficientnet_key, _pretrained_cfg, _timm_file
from test_models_transformers_keys import _resnet_key, _transformers_file, torch_home  # noqa: F401  an autouse fixture

INCEPTION = {"mean": [0.5, 0.5, 0.5], "std": [0.5, 0.5, 0.5]}


def _run(path, channels: int):
    config = make_config("imagenet-efficientnet_b0" if "timm" in str(path) else "imagenet-resnet18", "finetune",
                         init_from=str(path), epochs=1, batch_size=4, resize=32, limit_train_batches=1)
    return build_run(config, dataset=noise_dataset(torch.arange(12) % 3, "abc", channels, 32, test=3))


@pytest.mark.parametrize("channels, expected, said", [
    (3, [[0.5] * 3, [0.5] * 3], "mean 0.5, 0.5, 0.5, std 0.5, 0.5, 0.5"),
    (1, [[0.5], [0.5]], "mean 0.5, std 0.5"),
])
def test_init_from_a_timm_file_normalises_as_its_pretrained_cfg_says(tmp_path, capsys, channels, expected, said):
    """`train imagenet-efficientnet_b0 --init-from model.safetensors` of timm's efficientnet_b0.ra4_e3600_r224_in1k
    (trained on (pixel - 0.5) / 0.5, as its pretrained_cfg says): the run normalises its input so, for grey images
    too (a network of a grey stem, timm's in_chans=1, whose pretrained_cfg keeps three: averaged, as the ImageNet
    weights' are), records it in what every checkpoint says of the run,
    and says where it was read; it normalised with ImageNet's mean and std, another input than the weights'."""
    cfg = {"pretrained_cfg": _pretrained_cfg(tag="ra4_e3600_r224_in1k", **INCEPTION)}
    network = torchvision.models.efficientnet_b0()
    network.features[0][0] = torch.nn.Conv2d(channels, 32, 3, 2, 1, bias=False)
    path = _timm_file(tmp_path / "timm", network, _efficientnet_key, "efficientnet_b0", cfg)
    parts = _run(path, channels)
    assert parts.normalize == expected and parts.record()["normalize"] == expected
    out = capsys.readouterr().out
    assert "its normalisation read from the config.json beside it (timm's pretrained_cfg)" in out, out
    assert f"note: inputs normalised with the {said} that the config.json beside it (timm's pretrained_cfg) says " \
        "(its weights were trained on that input)" in out, out


def test_init_from_a_transformers_file_normalises_as_its_preprocessor_config_says(tmp_path, capsys):
    """A Transformers ResNet's save_pretrained folder keeps its processor's preprocessor_config.json: `--init-from`
    its model.safetensors normalises as that file says; with do_normalize false it says nothing, and the run
    normalises as the ImageNet weights do, as before."""
    path = _transformers_file(tmp_path / "hf", torchvision.models.resnet18(), _resnet_key,
                              {"model_type": "resnet", "layer_type": "basic"})
    processor = {"do_normalize": True, "image_mean": [0.4, 0.5, 0.6], "image_std": [0.2, 0.3, 0.4]}
    (path.parent / "preprocessor_config.json").write_text(json.dumps(processor))
    assert _run(path, 3).normalize == [[0.4, 0.5, 0.6], [0.2, 0.3, 0.4]]
    assert "its normalisation read from the preprocessor_config.json beside it" in capsys.readouterr().out
    (path.parent / "preprocessor_config.json").write_text(json.dumps({**processor, "do_normalize": False}))
    imagenet = [[0.485, 0.456, 0.406], [0.229, 0.224, 0.225]]
    assert torch.allclose(torch.tensor(_run(path, 3).normalize), torch.tensor(imagenet))


def test_a_timm_config_is_read_for_a_timm_file_a_processors_for_a_transformers_file(tmp_path):
    """What is read follows the keys, as the explorer's reading does: a preprocessor_config.json beside a timm file
    is not its processor's, nor is a pretrained_cfg without mean and std a word."""
    path = _timm_file(tmp_path / "timm", torchvision.models.efficientnet_b0(), _efficientnet_key, "efficientnet_b0",
                      {"pretrained_cfg": _pretrained_cfg(**INCEPTION)})
    (path.parent / "preprocessor_config.json").write_text(json.dumps({"image_mean": [0.1] * 3, "image_std": [1] * 3}))
    state = {"conv_stem.weight": torch.zeros(1)}
    assert normalisation_beside(path, state).mean == (0.5, 0.5, 0.5)
    (path.parent / "config.json").write_text(json.dumps({"architecture": "efficientnet_b0", "pretrained_cfg": {}}))
    assert normalisation_beside(path, state) is None
