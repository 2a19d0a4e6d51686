"""ImageNet backbones whose weights were trained at another side than 224 (EfficientNet-B1..B3 and V2-S, Inception
v3), and the others added beside them (MobileNetV2, Wide ResNet-50-2): cnnlab.models.imagenet.

As in test_imagenet.py, no test downloads anything: each writes its own weights file (torchvision's architecture,
seeded random weights) under the exact file name of torchvision's URL in a temporary TORCH_HOME, and torchvision's
own pretrained builder and weights' transforms(), reading that file from the cache, are the oracle."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision
from PIL import Image

from cnnlab.cli import main
from cnnlab.explore.model import Options
from cnnlab.explore.sources import open_model
from cnnlab.models import create_model, imagenet, list_models, model_info
from cnnlab.models.summary import stages
from cnnlab.train import build_run, make_config
from data_support import noise_dataset
from test_imagenet_book_networks import _cached, _randomised, computes_as_torchvisions

ADDED = ("imagenet-efficientnet_b1", "imagenet-efficientnet_b2", "imagenet-efficientnet_b3",
         "imagenet-efficientnet_v2_s", "imagenet-inception_v3", "imagenet-mobilenet_v2", "imagenet-wide_resnet50_2")
INCEPTION = "imagenet-inception_v3"


@pytest.fixture(autouse=True)
def torch_home(tmp_path, monkeypatch) -> Path:
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setenv("CNNLAB_CACHE", str(tmp_path / "cache"))
    return tmp_path / "torch"


def test_each_backbone_takes_the_side_its_weights_were_trained_at(capsys):
    """`cnnlab train imagenet-efficientnet_v2_s` trains at 384 px, the side its weights were trained and published
    at (its transforms()' crop), and so does everything that asks the registry for a backbone's input size
    (`cnnlab models --pretrained` says it): every backbone was taken at 224 px."""
    assert set(ADDED) <= set(list_models(pretrained=True))
    sides = {}
    for name in imagenet.BACKBONES:
        weights = imagenet.weights_enum(name)
        assert weights is type(weights).DEFAULT, name  # the recommended member: V2 where there is one
        sides[name] = model_info(name).input_size
        assert [sides[name]] == weights.transforms().crop_size, name
    assert sides["imagenet-efficientnet_v2_s"] == 384 and sides[INCEPTION] == 299
    assert sides["imagenet-efficientnet_b1"] == 240 and sides["imagenet-resnet18"] == 224
    assert main(["models", "--pretrained"]) == 0
    rows = {line.split()[0]: line for line in capsys.readouterr().out.splitlines()}
    assert all(f" {side}x{side} " in rows[name] for name, side in sides.items())


def test_the_added_backbones_take_a_grey_stem_a_new_head_and_compute_by_stages():
    """The stages (report, explorer) of each added network, at its own side, end in its new head's classes (that they
    compute the forward pass: test_imagenet.py's test of the stages, and Inception v3's test below)."""
    with torch.device("meta"):  # the large ones at their own side without their tensors
        for name in ADDED:
            side = model_info(name).input_size
            model = create_model(name, num_classes=3, in_channels=1)
            y = torch.zeros(1, 1, side, side)
            for stage in stages(model):
                y = stage(y)
            assert y.shape == (1, 3), name


def test_a_run_of_a_384_backbone_resizes_its_images_to_384():
    """`cnnlab train imagenet-efficientnet_v2_s` on 28-px images: each batch reaches the network at 384 px (the
    side its checkpoint records, which eval, export and load_trained rebuild at); --resize still sets another."""
    dataset = noise_dataset(torch.arange(6) % 2, "ab", 1, 28, test=2)
    for resize, side in ((None, 384), (64, 64)):
        cfg = make_config("imagenet-efficientnet_v2_s", epochs=1, batch_size=2, resize=resize, device="cpu")
        parts = build_run(cfg, dataset=dataset, quiet=True)
        assert parts.input_size == side and parts.record()["input_size"] == side
        images, _ = next(iter(parts.train_loader))
        assert parts.preprocess(images).shape == (2, 1, side, side)


def test_inception_v3_computes_what_torchvisions_pretrained_inception_v3_computes(tmp_path):
    """Inception v3's pretrained builder drops its auxiliary head (AuxLogits) after the load and renormalises its
    input (transform_input), as GoogLeNet's does: the logits, the stages' and training mode's are torchvision's own
    `inception_v3(weights=...)`'s on the same file (saved with the aux head, as the hosted one), and the explorer's
    of an inception_v3() state dict (`explore imagenet-inception_v3 --weights`)."""
    network = torchvision.models.inception_v3(init_weights=True)  # with its aux head, as the hosted file
    aux, network.AuxLogits = network.AuxLogits, None  # which takes no less than 299 px: its statistics stay 0 and 1
    _randomised(network, side=96)
    network.AuxLogits = aux
    state = network.state_dict()
    _cached(INCEPTION, state)
    reference = torchvision.models.inception_v3(weights=imagenet.weights_enum(INCEPTION)).eval()
    computes_as_torchvisions(INCEPTION, reference, state, ("AuxLogits.",), tmp_path / "mine.pth", 96)


def test_a_240_backbone_frames_each_picture_as_its_weights_transforms_do(tmp_path, capsys):
    """`cnnlab predict imagenet-efficientnet_b1 pictures...` and the explorer feed EfficientNet-B1 as its weights'
    transforms() do: the shorter side resized to 255, the centre cropped to 240, the side its weights were trained
    at, where every backbone was framed at 224."""
    name = "imagenet-efficientnet_b1"
    weights = imagenet.weights_enum(name)
    state = _randomised(torchvision.models.efficientnet_b1(), seed=2)
    _cached(name, state)
    rng = np.random.default_rng(3)
    pics = tmp_path / "pics"
    pics.mkdir()
    for k, (h, w) in enumerate([(300, 500), (517, 333), (250, 260)]):
        coarse = Image.fromarray(rng.integers(0, 256, (6, 8, 3), dtype=np.uint8))  # smooth: framing shows
        coarse.resize((w, h), Image.Resampling.BICUBIC).save(pics / f"p{k}.png")
    files = sorted(pics.iterdir())
    reference = torchvision.models.efficientnet_b1(weights=weights).eval()
    framed = torch.stack([weights.transforms()(Image.open(f).convert("RGB")) for f in files])
    assert framed.shape[-2:] == (240, 240)
    with torch.no_grad():
        expected = torch.softmax(reference(framed), 1)
    assert main(["predict", name, *map(str, files), "--json", "--top", "1"]) == 0
    answers = json.loads(capsys.readouterr().out)
    categories = weights.meta["categories"]
    assert [a["top"][0]["class"] for a in answers] == [categories[int(k)] for k in expected.argmax(1)]
    assert np.allclose([a["top"][0]["probability"] for a in answers], expected.max(1).values, atol=1e-5)
    explored = open_model(name, Options())
    assert explored.spec.hw == (240, 240)
    assert "resized by the shorter side to 255 (bilinear) and centre-cropped to 240 as its weights' transforms() " \
        "do" in explored.spec.describe()
