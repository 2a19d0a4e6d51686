"""torchvision's pretrained networks by name (``torchvision-NAME``, cnnlab.models.torchvision_zoo) in the explorer,
``cnnlab summary`` and ``cnnlab predict``: a segmentation model, a detector and a classifier with their DEFAULT
weights, fed as the weights' transforms say, named by their categories.

No test downloads anything: each writes its own weights file (torchvision's builder with seeded random weights,
``weights=None, weights_backbone=None``, saved under the exact file name of torchvision's weights URL) into a
temporary TORCH_HOME, or points CNNLAB_WEIGHTS_MIRROR at a folder on this machine. The smallest networks at small
inputs keep each test to seconds.
"""

from __future__ import annotations

import json
import os
import re
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision
from PIL import Image

from cnnlab.cli import main
from cnnlab.errors import CnnlabError
from cnnlab.explore.model import Options, analyze_image
from cnnlab.explore.sources import open_model, open_with_images, summarize_any
from cnnlab.models.torchvision_zoo import PREFIX, build_pretrained, feeding, zoo_model

SEGMENTER = "lraspp_mobilenet_v3_large"
DETECTOR = "ssdlite320_mobilenet_v3_large"
CLASSIFIER = "resnet18"  # (a seeded MobileNet answers every picture with one class)
SIDE = 64


@pytest.fixture
def torch_home(tmp_path, monkeypatch) -> Path:
    """An empty TORCH_HOME under tmp_path (torch.hub.get_dir() reads it at each call), and no mirror."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.delenv("CNNLAB_WEIGHTS_MIRROR", raising=False)
    return tmp_path / "torch"


def _reference(builder: str, state: dict[str, torch.Tensor] | None = None) -> torch.nn.Module:
    """torchvision's network ``builder`` shaped as its DEFAULT weights are (their categories' count), built without
    any weights file; with ``state``, that state dict loaded into it by torch."""
    weights = torchvision.models.get_model_weights(builder).DEFAULT
    kwargs = {} if zoo_model(PREFIX + builder).task == "classification" else {"weights_backbone": None}
    model = torchvision.models.get_model(builder, weights=None, num_classes=len(weights.meta["categories"]),
                                         **kwargs)
    if state is not None:
        model.load_state_dict(state)
    return model.eval()


def _write_weights(builder: str, seed: int = 0) -> dict[str, torch.Tensor]:
    """Seeded random weights of ``builder`` (batch-norm statistics too) at the path torchvision's URL names."""
    torch.manual_seed(seed)
    model = _reference(builder)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.running_mean.normal_(0, 0.1)
                module.running_var.uniform_(0.5, 2)
            elif isinstance(module, torch.nn.Linear):  # scores far apart, so that pictures differ in their top class
                module.weight.normal_(0, 1)
    state = model.state_dict()
    path = zoo_model(PREFIX + builder).file
    assert path.name == Path(torchvision.models.get_model_weights(builder).DEFAULT.url).name
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(state, path)
    return state


def _pictures(folder: Path, n: int = 2, side: int = SIDE) -> Path:
    """``n`` random RGB pictures of ``side`` pixels (the input's own size: read without a resize or padding), each
    brighter than the one before."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for k in range(n):
        low = 160 * k // max(n - 1, 1)
        Image.fromarray(rng.integers(low, low + 96, (side, side, 3), dtype=np.uint8)).save(folder / f"p{k}.png")
    return folder


def _normalised(images: torch.Tensor, transform) -> torch.Tensor:
    mean, std = (torch.tensor(getattr(transform, k)).view(1, 3, 1, 1) for k in ("mean", "std"))
    return (images.float() / 255 - mean) / std


def test_a_segmentation_model_opens_with_its_weights_categories_naming_the_legend(torch_home, tmp_path):
    state = _write_weights(SEGMENTER)
    weights = torchvision.models.get_model_weights(SEGMENTER).DEFAULT
    categories = tuple(weights.meta["categories"])
    explored, images = open_with_images(PREFIX + SEGMENTER, _pictures(tmp_path / "pics"), Options(input_size=SIDE))
    assert explored.scoring is None and explored.classes == categories and categories[0] == "__background__"
    assert str(weights) in explored.notes[0] and str(zoo_model(PREFIX + SEGMENTER).file) in explored.notes[0]
    assert "21 channels are named by the weights' categories" in explored.notes[0]
    assert explored.spec.mean == pytest.approx(tuple(weights.transforms().mean))
    assert "normalisation from the weights' transforms" in explored.spec.describe()
    # its scores per pixel are the builder's own network's, with the same state dict, run by torch
    with torch.no_grad():
        expected = _reference(SEGMENTER, state)(_normalised(images.images, weights.transforms()))["out"]
    for k, image in enumerate(images.images):
        rows = explored.stages(image)
        out = next(r.output for r in rows if r.kind == "output" and r.name == "output['out']")
        assert torch.allclose(out[0], expected[k], atol=1e-4)
        legend = next(o for o in analyze_image(explored, image)["outputs"] if o["name"] == "output['out']")["legend"]
        winners = expected[k].argmax(0).flatten().bincount(minlength=21)
        assert [(e["channel"], e["name"]) for e in legend] == \
            [(c, categories[c]) for c in sorted(range(21), key=lambda c: -int(winners[c])) if winners[c]]
    # --classes comes first, as for any segmentation model
    names = tuple(f"part {k}" for k in range(21))
    flagged = open_model(PREFIX + SEGMENTER, Options(input_size=SIDE, classes=names, any_network=True))
    assert flagged.classes == names and "named by the weights' categories" not in flagged.notes[0]


def test_the_side_each_task_is_fed_at_is_its_weights_transforms_or_its_detectors_own(torch_home):
    """A classifier's centre crop, a segmentation model's resize, a detector's inner resize (its min_size), read
    without building the network where the transforms say it (no weights file needed)."""
    for builder, side in ((CLASSIFIER, 224), ("inception_v3", 299), (SEGMENTER, 520)):
        assert feeding(zoo_model(PREFIX + builder), None)[0] == side
    detector = _reference(DETECTOR)
    assert feeding(zoo_model(PREFIX + DETECTOR), detector)[:3] == (320, None, None)  # it normalises inside
    with torch.device("meta"):  # (only its transform is read) Keypoint R-CNN trains at 640 to 800 px, tests at 800
        keypoints = torchvision.models.get_model("keypointrcnn_resnet50_fpn", weights=None, weights_backbone=None)
    assert feeding(zoo_model(PREFIX + "keypointrcnn_resnet50_fpn"), keypoints)[0] == 800


def test_a_detector_opens_and_lists_what_it_returns(torch_home, tmp_path, capsys):
    state = _write_weights(DETECTOR)
    explored, images = open_with_images(PREFIX + DETECTOR, _pictures(tmp_path / "pics", 1, 320))
    assert explored.scoring is None and explored.spec.hw == (320, 320)
    assert explored.classes == tuple(torchvision.models.get_model_weights(DETECTOR).DEFAULT.meta["categories"])
    assert explored.spec.mean is None and explored.spec.std is None  # the detector normalises inside
    assert "size from the detector's own transform (its min_size)" in explored.spec.describe()
    assert "labels are indices into the weights' 91 categories (1 person, 2 bicycle, 3 car, ...; \"N/A\"" in \
        explored.notes[0]
    assert explored.notes[1].startswith("Not a classifier: for 2 images it returns a list of 2 dicts of 'boxes', "
                                        "'scores', 'labels'")
    assert all(torch.equal(explored.model.state_dict()[k], v) for k, v in state.items())
    outputs = analyze_image(explored, images.images[0])["outputs"]
    assert [o["name"] for o in outputs] == ["output[0]['boxes']", "output[0]['scores']", "output[0]['labels']"]
    with torch.no_grad():
        expected = _reference(DETECTOR, state)(images.images.float() / 255)[0]
    assert outputs[0]["shape"] == list(expected["boxes"].shape)
    assert main(["summary", PREFIX + DETECTOR]) == 0
    assert "PyTorch module, not a classifier, fed float32" in capsys.readouterr().out.splitlines()[0]
    assert main(["predict", PREFIX + DETECTOR, str(tmp_path / "pics")]) == 2  # it answers with no classes
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "cnnlab explore and cnnlab summary open any network" in err


def test_a_classifier_opens_with_its_categories_and_predict_answers_with_them(torch_home, tmp_path, capsys):
    state = _write_weights(CLASSIFIER, seed=1)
    weights = torchvision.models.get_model_weights(CLASSIFIER).DEFAULT
    categories = tuple(weights.meta["categories"])
    explored, images = open_with_images(PREFIX + CLASSIFIER, _pictures(tmp_path / "pics"), Options(input_size=SIDE))
    assert explored.classes == categories and explored.notes[0].endswith("Class names: the weights' metadata.")
    with torch.no_grad():
        expected = _reference(CLASSIFIER, state)(_normalised(images.images, weights.transforms()))
    assert torch.allclose(explored.logits(images.images), expected, atol=1e-4)
    assert main(["predict", PREFIX + CLASSIFIER, str(tmp_path / "pics"), "--input-size", str(SIDE), "--json",
                 "--top", "1"]) == 0
    answers = json.loads(capsys.readouterr().out)
    assert [a["top"][0]["class"] for a in answers] == [categories[int(k)] for k in expected.argmax(1)]
    assert len({a["top"][0]["class"] for a in answers}) == 2  # (not one answer for every picture)
    assert "224 x 224" in summarize_any(PREFIX + CLASSIFIER).splitlines()[0]  # the weights' centre crop


def test_an_absent_file_offline_is_one_line_naming_it_and_where_to_put_it(torch_home, tmp_path, monkeypatch,
                                                                          capsys):
    empty = tmp_path / "mirror"
    empty.mkdir()
    monkeypatch.setenv("CNNLAB_WEIGHTS_MIRROR", str(empty))  # nothing there, and no network is asked
    path = zoo_model(PREFIX + SEGMENTER).file
    start = time.monotonic()
    assert main(["summary", PREFIX + SEGMENTER]) == 2
    assert time.monotonic() - start < 10
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    assert f"{PREFIX + SEGMENTER}'s weights {path.name} are not in {path.parent} and could not be downloaded from " \
           f"{(empty / path.name).as_uri()}" in err and f"put it at {path}" in err
    assert not path.exists()


def test_the_file_is_fetched_as_the_imagenet_backbones_are_hash_checked(torch_home, tmp_path, monkeypatch):
    """The one download path: from the mirror folder under torchvision's file name, checked against the hash prefix
    in that name (a file of other bytes is refused, and nothing is left in the cache)."""
    folder = tmp_path / "mirror"
    folder.mkdir()
    zoo = zoo_model(PREFIX + SEGMENTER)
    torch.save(_reference(SEGMENTER).state_dict(), folder / zoo.file.name)
    monkeypatch.setenv("CNNLAB_WEIGHTS_MIRROR", str(folder))
    digest = zoo.file.name.rsplit("-", 1)[1].split(".")[0]
    with pytest.raises(CnnlabError, match=f"does not start with {digest}"):
        open_model(PREFIX + SEGMENTER, Options(input_size=SIDE, any_network=True))
    assert not zoo.file.exists()


def test_a_bad_weights_file_is_one_line_and_never_unpickled(torch_home):
    zoo = zoo_model(PREFIX + CLASSIFIER)
    zoo.file.parent.mkdir(parents=True)
    payload = _Unpickled()
    payload.state = 1  # (an object without state is unpickled without a call to __setstate__)
    torch.save({"features.0.0.weight": payload}, zoo.file)
    with pytest.raises(CnnlabError, match="cnnlab never unpickles code") as info:
        build_pretrained(zoo)
    assert "\n" not in str(info.value) and str(zoo.file) in str(info.value) and not _Unpickled.built
    torch.save(torchvision.models.mobilenet_v3_small().state_dict(), zoo.file)  # another network's
    with pytest.raises(CnnlabError, match=rf"^{zoo.file} does not fit torchvision's {CLASSIFIER} with "
                                          rf"{type(zoo.weights).__name__}\.IMAGENET1K_V1: .*Missing key"):
        build_pretrained(zoo)
    assert "TORCH_FORCE_WEIGHTS_ONLY_LOAD" not in os.environ  # put back as it was


class _Unpickled:
    """A pickled object: unpickling it would run its __setstate__."""

    built = False

    def __setstate__(self, state):
        _Unpickled.built = True


@pytest.mark.parametrize("name, match", [
    ("torchvision-resnet19", r"^torchvision-resnet19 names no classifier, segmentation model or detector of "
                             r"torchvision's: expected torchvision-NAME for a NAME that python -c .* lists; did you "
                             r"mean torchvision-resnet18"),
    ("torchvision-raft_large", r"\(raft_large is a builder of torchvision.models.optical_flow, which the explorer "
                               r"does not open\)"),
])
def test_an_unknown_name_is_one_line_saying_how_to_list_the_names(torch_home, tmp_path, capsys, name, match):
    pictures = _pictures(tmp_path / "pics", 1)
    assert main(["explore", name, "--images", str(pictures), "--export", str(tmp_path / "x.html")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and re.search(match, err.removeprefix("cnnlab explore: error: ")), err


def test_a_builder_without_weights_is_one_line(monkeypatch):
    def no_weights(name):
        raise ValueError(f"The model {name} has no weights enum")

    monkeypatch.setattr(torchvision.models, "get_model_weights", no_weights)
    with pytest.raises(CnnlabError, match=r"^torchvision's resnet18 has no pretrained weights to open \(The model "
                                          r"resnet18 has no weights enum\)"):
        zoo_model("torchvision-resnet18")


class _WideDetector(torch.nn.Module):
    """A detector's shape (a dict of boxes per image) whose second convolution takes 64 channels, recording the
    channels of each input it is given."""

    def __init__(self):
        super().__init__()
        self.stem, self.body = torch.nn.Conv2d(3, 64, 3, padding=1), torch.nn.Conv2d(64, 4, 1)
        self.fed: set[int] = set()

    def forward(self, x):
        self.fed.add(x.shape[1])
        f = self.body(torch.relu(self.stem(x)))
        return [{"boxes": f[i].amax((1, 2)).view(1, 4)} for i in range(x.shape[0])]


def test_predict_refuses_a_detector_after_one_pass_at_its_input_channels():
    """`cnnlab predict torchvision-fasterrcnn_resnet50_fpn` went on, after the detector answered its 3-channel input
    with boxes, to feed it inputs of every other convolution's channel count (2,048 channels at 800 x 800 px, 10 GB
    for two blank images) before refusing it: a network that runs on an input is no classifier whatever it is fed."""
    from cnnlab.explore.module_model import ModuleModel
    from cnnlab.explore.outputs import NotAClassifier

    detector = _WideDetector()
    with pytest.raises(NotAClassifier, match="is not a classifier"):
        ModuleModel(detector, "wide", Options(input_size=16))
    assert detector.fed == {3}


@pytest.mark.parametrize("options, match", [
    (Options(weights="mine.pth"), r"^--weights puts a state dict into a network built by name; torchvision-resnet18 "
                                  r"reads torchvision's own weights; expected no --weights for it"),
    (Options(bgr=True), r"^--bgr describes a model from elsewhere; torchvision-resnet18 takes RGB pixels / 255"),
])
def test_flags_for_weights_or_pixels_of_another_kind_are_refused_in_one_line(torch_home, options, match):
    with pytest.raises(CnnlabError, match=match) as info:
        open_model(PREFIX + CLASSIFIER, options)
    assert "\n" not in str(info.value)


def test_a_classifier_by_name_frames_each_picture_as_its_weights_transforms_do(torch_home, tmp_path, capsys):
    """torchvision's classifiers are fed as their weights' transforms() make a picture (the shorter side resized to
    their resize_size, antialiased, then their centre crop), the picture behind the accuracies torchvision publishes,
    by name as torchvision-NAME and as the ImageNet backbone imagenet-NAME alike, in predict and in eval of a
    labelled folder: cnnlab padded the whole picture into the crop instead, and answered otherwise than torchvision's
    own pipeline. (resnet18's DEFAULT weights are the backbone's too: one file serves both names.)"""
    state = _write_weights(CLASSIFIER, seed=1)
    weights = torchvision.models.get_model_weights(CLASSIFIER).DEFAULT
    categories = weights.meta["categories"]
    rng = np.random.default_rng(3)
    pics = tmp_path / "pics"
    pics.mkdir()
    for k, (h, w) in enumerate([(300, 500), (517, 333), (240, 260), (400, 240)]):
        # smooth pictures (a coarse grid enlarged), on which a resize and a crop answer otherwise than a padding
        coarse = Image.fromarray(rng.integers(0, 256, (6, 8, 3), dtype=np.uint8))
        coarse.resize((w, h), Image.Resampling.BICUBIC).save(pics / f"p{k}.{'jpg' if k % 2 else 'png'}")
    files = sorted(pics.iterdir())
    net = _reference(CLASSIFIER, state)
    with torch.no_grad():
        expected = torch.softmax(net(torch.stack([weights.transforms()(Image.open(f)) for f in files])), 1)
    for name in (PREFIX + CLASSIFIER, "imagenet-resnet18"):
        assert main(["predict", name, *map(str, files), "--json", "--top", "1"]) == 0
        answers = json.loads(capsys.readouterr().out)
        assert [a["top"][0]["class"] for a in answers] == [categories[int(k)] for k in expected.argmax(1)]
        assert np.allclose([a["top"][0]["probability"] for a in answers], expected.max(1).values, atol=1e-5)
        said = open_model(name, Options()).spec.describe()
        assert "resized by the shorter side to 256 (bilinear) and centre-cropped to 224 as its weights' " \
            "transforms() do" in said
    # eval of a labelled folder: each picture under the class torchvision's pipeline answers for it scores 100%
    labelled = tmp_path / "labelled"
    for f, k in zip(files, expected.argmax(1).tolist(), strict=True):
        (labelled / categories[k]).mkdir(parents=True, exist_ok=True)
        (labelled / categories[k] / f.name).write_bytes(f.read_bytes())
    assert main(["eval", PREFIX + CLASSIFIER, "--dataset", f"folder:{labelled}", "--json"]) == 0
    scored = json.loads(capsys.readouterr().out)
    assert scored["accuracy"] == 1.0 and scored["n"] == len(files)
