"""torchvision's pretrained networks by name, ``torchvision-<builder>``: its classifiers, segmentation models and
detectors with their DEFAULT weights, for the explorer (``cnnlab explore torchvision-lraspp_mobilenet_v3_large``).

Any builder of ``torchvision.models.list_models()`` in the classification, segmentation and detection modules is
one; its weights are its weights enum's DEFAULT member (``get_model_weights(builder).DEFAULT``), the file fetched as
the ImageNet backbones' is (:func:`cnnlab.models.imagenet.ensure_weights`: torch.hub's cache, or one hash-checked
download). Unlike the ``imagenet-`` family (:mod:`cnnlab.models.imagenet`), which training adapts to other classes
and channels and pins each member, these are shown as torchvision made them: its own classes, its own input. Importing
torchvision is slow, so it happens only when a name is looked up.
"""

from __future__ import annotations

import difflib
import os
import threading
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from torch import nn

from cnnlab.errors import CnnlabError, summary
from cnnlab.models.imagenet import ensure_weights, weights_file
from cnnlab.models.state_dict import read_state_dict

PREFIX = "torchvision-"
# The tasks whose networks take a picture, by the torchvision.models module that holds their builders ("" for the
# classifiers, which sit in torchvision.models itself). Video, optical flow and the quantized builders are left out.
TASKS = {"classification": "", "segmentation": "segmentation", "detection": "detection"}
LIST_NAMES = 'python -c "import torchvision.models as m; print(*(m.list_models(k) for k in (m, m.segmentation, ' \
             'm.detection)))"'


@dataclass(frozen=True)
class ZooModel:
    """One of torchvision's pretrained networks: cnnlab's ``name`` (``torchvision-resnet18``), torchvision's
    ``builder``, its ``task`` (a key of :data:`TASKS`) and ``weights`` (its weights enum's DEFAULT member)."""

    name: str
    builder: str
    task: str
    weights: Any

    @property
    def categories(self) -> tuple[str, ...]:
        """The names the weights' metadata gives: a classifier's classes, a segmentation model's channels, the
        categories a detector's ``labels`` index (COCO's 91, with "N/A" where COCO left an id unused)."""
        return tuple(self.weights.meta["categories"])

    @property
    def file(self) -> Path:
        """Where its weights file is cached."""
        return weights_file(self.weights)


def is_zoo_name(text: str) -> bool:
    """Whether ``text`` has the form of one of these names (:func:`zoo_model` says whether it is one)."""
    return text.startswith(PREFIX)


def zoo_model(name: str) -> ZooModel:
    """``torchvision-NAME`` looked up among torchvision's builders of :data:`TASKS`.

    Raises:
        CnnlabError: one line: NAME is no such builder (and how to list the names), or it has no weights.
    """
    import torchvision.models  # deferred: importing torchvision is slow

    builder = name.removeprefix(PREFIX)
    tasks = {b: task for task, sub in TASKS.items()
             for b in torchvision.models.list_models(getattr(torchvision.models, sub) if sub else torchvision.models)}
    if builder not in tasks:
        module = torchvision.models.get_model_builder(builder).__module__.rsplit(".", 1)[0] \
            if builder in torchvision.models.list_models() else None
        other = f" ({builder} is a builder of {module}, which the explorer does not open)" if module else ""
        close = difflib.get_close_matches(builder, tasks, n=3)
        hint = f"; did you mean {', '.join(PREFIX + c for c in close)}?" if close else ""
        raise CnnlabError(f"{name} names no classifier, segmentation model or detector of torchvision's{other}: "
                          f"expected {PREFIX}NAME for a NAME that {LIST_NAMES} lists{hint}")
    try:
        weights = torchvision.models.get_model_weights(builder).DEFAULT
    except (ValueError, AttributeError, KeyError) as e:  # no weights enum, or one without a DEFAULT
        raise CnnlabError(f"torchvision's {builder} has no pretrained weights to open ({summary(e, 80)}); expected "
                          f"a builder with a weights enum, or its module:function with --weights FILE") from None
    return ZooModel(name, builder, tasks[builder], weights)


def feeding(zoo: ZooModel,
            model: nn.Module | None) -> tuple[int, tuple[float, ...] | None, tuple[float, ...] | None, str]:
    """How pictures become ``zoo``'s input, as its weights' ``transforms()`` say: the side, mean and std, and where
    the side was read (``model``, the built network, is read for a detector's only). A classifier's side is the
    transform's centre crop (224 for most), a segmentation model's the side it resizes pictures to (520). A
    detector's transform only scales pixels to 0-1: the model normalises and resizes inside (``model.transform``),
    so its side is the one that resize gives (``transform.min_size``, the last: 800 for Faster R-CNN on ResNet-50,
    320 for the ``320`` models); fed at that side, the inner resize changes nothing."""
    transform = zoo.weights.transforms()
    mean, std = (tuple(float(v) for v in getattr(transform, k)) if hasattr(transform, k) else None
                 for k in ("mean", "std"))
    if zoo.task == "classification":
        return int(transform.crop_size[0]), mean, std, "weights' transforms (their centre crop)"
    if zoo.task == "segmentation":
        return int(transform.resize_size[0]), mean, std, "weights' transforms (their resize)"
    # in evaluation its resize takes the last of min_size (Keypoint R-CNN trains at 640 to 800 px: 800)
    return int(model.transform.min_size[-1]), mean, std, "detector's own transform (its min_size)"


# torch.hub reads a cached file with torch.load(weights_only=False), which unpickles whatever the file holds; torch's
# own switch TORCH_FORCE_WEIGHTS_ONLY_LOAD makes every load weights-only. The environment is the process's: one build
# at a time sets it, and puts back what was there.
_FORCING = threading.Lock()
_FORCE, _NO_FORCE = "TORCH_FORCE_WEIGHTS_ONLY_LOAD", "TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD"


@contextmanager
def _weights_only_loads():
    with _FORCING:
        saved = {k: os.environ.get(k) for k in (_FORCE, _NO_FORCE)}
        os.environ[_FORCE] = "1"
        os.environ.pop(_NO_FORCE, None)  # both set, torch.load refuses to load at all
        try:
            yield
        finally:
            for key, value in saved.items():
                if value is None:
                    os.environ.pop(key, None)
                else:
                    os.environ[key] = value


def build_pretrained(zoo: ZooModel) -> nn.Module:
    """``zoo``'s network with its weights, the file from the cache or downloaded once (:func:`ensure_weights`).

    Raises:
        CnnlabError: one line: the file is absent and cannot be downloaded (naming it and where to put it), it is
            not a weights-only state dict, or it does not fit the network.
    """
    import torchvision.models  # deferred: importing torchvision is slow

    path = ensure_weights(zoo.weights, zoo.name)
    # torchvision's builder given the member, not weights=None and a load of ours: given weights, a builder builds
    # the network they were trained in, which is not always its default one (GoogLeNet and Inception v3 then
    # normalise their input again, transform_input; a ViT's image size is the weights'; DeepLabV3 and FCN have
    # their auxiliary head; the detectors' batch norms are frozen), and it knows that for every builder, present and
    # future. It reads the file through torch.hub, from the cache where ensure_weights left it (nothing is
    # downloaded there), loaded weights-only (_weights_only_loads) and strictly (its load_state_dict).
    try:
        with _weights_only_loads():
            return torchvision.models.get_model(zoo.builder, weights=zoo.weights, progress=False)
    except Exception as e:  # say why in cnnlab's words: the file cannot be read as weights, or does not fit
        expected = f"the file from {zoo.weights.url}"
        read_state_dict(path, expected, unreadable_hint="; delete it to download it again")
        detail = summary(" ".join(str(e).split()).split(": ", 1)[-1], 200)
        raise CnnlabError(f"{path} does not fit torchvision's {zoo.builder} with {zoo.weights}: {detail}; expected "
                          f"{expected}") from None
