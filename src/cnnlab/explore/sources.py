"""What the user named on the command line, opened as an explorer model: a cnnlab checkpoint (``.pt``), an ONNX
file, a ``torch.export`` program (``.pt2``), ``package.module:function``, or an ImageNet backbone of the zoo by name.

Each kind is a class of its own module (:class:`cnnlab.explore.model.RunModel`,
:class:`cnnlab.explore.onnx_model.OnnxModel`, :class:`cnnlab.explore.pt2_model.ExportedModel`,
:class:`cnnlab.explore.module_model.ModuleModel`); this module only tells them apart
and reads the user's images at the input of the model it opened, for the page or for ``cnnlab predict``
(:func:`predict_any`, :func:`predict_any_chunks`), and prints its layer table for ``cnnlab summary``
(:func:`summarize_any`).
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch

from cnnlab.errors import CnnlabError
from cnnlab.explore.imagefolder import ImageSet, list_images, read_image_folder
from cnnlab.explore.model import ExploreModel, Options, RunModel, its_own_failure, total_macs
from cnnlab.explore.module_model import ModuleModel
from cnnlab.explore.onnx_model import OnnxModel
from cnnlab.explore.pt2_model import ExportedModel
from cnnlab.inference import images_per_pass
from cnnlab.models.imagenet import BACKBONES
from cnnlab.models.state_dict import KERAS, refusal, zip_kind
from cnnlab.models.summary import layer_text, macs_text, shape_text
from cnnlab.models.torchvision_zoo import is_zoo_name
from cnnlab.predict import classify_chunks, joined, listed_images, predict_chunks
from cnnlab.runs.checkpoint import CHECKPOINT_SUFFIXES, checkpoint_in, names_a_checkpoint

MODULE_SPEC = re.compile(r"^[A-Za-z_][\w.]*:[A-Za-z_]\w*$")


def model_file_in(folder: str | Path) -> Path | None:
    """The model file to suggest for a folder named as a model: a run's best.pt or last.pt
    (:func:`cnnlab.runs.checkpoint.checkpoint_in`), else the model.onnx of a Hugging Face export folder
    (``optimum-cli export onnx``'s, which a user names by its folder), else None."""
    exported = Path(folder) / "model.onnx"
    return checkpoint_in(folder) or (exported if exported.is_file() else None)


def read_as_checkpoint(source: str | Path) -> bool:
    """Whether predict and eval read ``source`` with cnnlab's checkpoint reader: a checkpoint's name, or a folder (a
    run's), but for one whose model file is an export's model.onnx, which :func:`open_model` refuses naming it (the
    checkpoint reader, which every command of a run shares, names only a run's checkpoints)."""
    path = Path(source)
    return names_a_checkpoint(path) or path.is_dir() and getattr(model_file_in(path), "suffix", None) != ".onnx"


def open_model(source: str | Path, options: Options | None = None,
               folder_classes: tuple[str, ...] = ()) -> ExploreModel:
    """The model the user named: a cnnlab checkpoint, an ``.onnx`` file, a ``.pt2`` program, ``module:function``, or
    the name of an ImageNet backbone of the zoo (``imagenet-resnet18``: its weights from torch.hub's cache and its
    1,000 class names).

    Opening a file never runs code from it (checkpoints and ``.pt2`` weights-only, ONNX parsed by ``onnx`` and run
    by onnxruntime); ``module:function`` imports and calls the code the user named, and the page says so.

    A network that is no classifier (:class:`cnnlab.explore.outputs.NotAClassifier`) is refused, unless
    ``options.any_network`` opens it for its layers (``explore`` and ``summary`` do).

    Raises:
        CnnlabError: the file is missing or not a model of the kind its name says, or the model is not an image
            classifier (or network) this page can feed (one line).
    """
    options = options or Options()
    text = str(source)
    path = Path(text)
    if not path.exists() and is_zoo_name(text):
        return ModuleModel.torchvision(text, options, folder_classes)
    if not path.exists() and (MODULE_SPEC.match(text) or text in BACKBONES):
        if text in BACKBONES:
            return ModuleModel.imagenet(text, options, folder_classes)
        return ModuleModel.from_spec(text, options, folder_classes)
    if options.weights is not None and text.startswith("imagenet-") and not path.exists():
        raise CnnlabError(f"{text} is not an ImageNet backbone cnnlab builds by name ({', '.join(BACKBONES)}); for "
                          f"another network, name a module:function that builds it (torchvision.models."
                          f"{text.removeprefix('imagenet-')}(weights=None), say) with --weights FILE")
    if options.weights is not None:
        raise CnnlabError(f"--weights puts a state dict into a network built by name (imagenet-resnet18, ...) or by "
                          f"module:function; {text} is no such name, and a file holds its own weights; expected no "
                          "--weights for it")
    if path.is_dir():  # a run's folder, or a Hugging Face export's: the file in it named
        inside = model_file_in(path)
        raise CnnlabError(f"{path} is a folder{f'; pass {inside}' if inside else ''}; a model is a .onnx, .pt2 or "
                          "cnnlab .pt file, or module:function")
    if not path.is_file():
        backbone = f", or an ImageNet backbone: {', '.join(BACKBONES)}" if text.startswith("imagenet-") else ""
        raise CnnlabError(f"{path} does not exist (expected a .onnx, .pt2 or cnnlab .pt file, or "
                          f"module:function{backbone})")
    suffix = path.suffix.lower()
    if suffix == ".onnx":
        return OnnxModel(path, options, folder_classes)
    if names_a_checkpoint(path):
        return RunModel.open(path, options)
    if suffix == ".pt2" or suffix in CHECKPOINT_SUFFIXES:  # a torch.export program, or one saved under another name
        return ExportedModel(path, options, folder_classes)
    kind = zip_kind(path)
    if kind in KERAS:
        raise CnnlabError(f"{refusal(path, kind, 'a model this explorer opens')}; expected .onnx, .pt2 (torch.export) "
                          "or a cnnlab checkpoint (.pt), or module:function")
    raise CnnlabError(f"{path} is not a model this explorer opens: expected .onnx, .pt2 (torch.export) or a cnnlab "
                      f"checkpoint (.pt), or module:function; got a {suffix or 'file without extension'}")


def open_with_images(source: str | Path, images: str | Path | None = None, options: Options | None = None,
                     skip_bad: bool = False) -> tuple[ExploreModel, ImageSet | None]:
    """The model ``source`` names, a classifier or any other network (:attr:`Options.any_network`: the explorer
    shows what any network's layers compute), and the images of the folder ``images`` read at its input (or None).

    The folder's class subfolders are listed first, so that they can name the model's classes when nothing else
    does; the pictures are then read at the model's channels, height and width.

    Returns:
        ``(model, ImageSet | None)``.
    """
    options = replace(options or Options(), any_network=True)
    if images is None:
        return open_model(source, options), None
    listing = list_images(images)
    model = open_model(source, options, listing.classes)
    return model, read_image_folder(images, model.spec.channels, model.spec.read_hw, skip_bad=skip_bad,
                                    listing=listing, crop=model.spec.crop, fit=model.spec.fit)


def scores_of(model: ExploreModel, images: torch.Tensor, source: str | Path, what: str,
              batch_size: int = 64) -> torch.Tensor:
    """``model.logits(images)``, ``batch_size`` images a pass (fewer of large pictures, as a checkpoint's passes:
    :func:`cnnlab.inference.images_per_pass`; 64 images of a 512-px input are 50 million values before the first
    layer's maps), with the model's own failure on them in one line: its
    code (``module:function`` asserting a batch size, say) or its runtime's error on this input, which would end as
    cnnlab's internal error. ``what`` names the images in that line."""
    spec = model.spec
    batch_size = images_per_pass(batch_size, spec.channels * spec.height * spec.width)
    with its_own_failure(source, what, f"a classifier that answers any batch of up to {batch_size} of them"):
        return model.logits(images, batch_size)


def cpu_only(device: str, source: str | Path) -> None:
    """Refuse a ``--device`` other than the CPU for a model from elsewhere, which runs on the CPU."""
    if device not in ("auto", "cpu"):
        raise CnnlabError(f"--device {device} applies to a cnnlab checkpoint; {source} is a model from elsewhere, run "
                          "on the CPU; expected no --device for it")


def predict_any(source: str | Path, images: Sequence[str | Path], options: Options | None = None,
                invert: bool = False, topk: int = 3, device: str = "auto",
                skip_bad: bool = False, progress: bool = False) -> list[dict[str, Any]]:
    """``cnnlab predict`` with any model this explorer opens: the top classes of each image file (and of each image
    file in a folder), as :func:`cnnlab.predict.predict_files` gives them for a checkpoint.

    A cnnlab checkpoint (or a run folder, told its ``best.pt``) is :func:`cnnlab.predict.predict_files`'s, on
    ``device``, with ``--classes`` as the only option it takes; any other model is opened by :func:`open_model` with
    ``options`` and run on the CPU, each picture decoded at its input as the page decodes it, with the probabilities
    the page shows. ``progress``: a bar of the pictures done on stderr, where that is a terminal.
    :func:`predict_any_chunks` gives the same results a chunk at a time, as they are known.

    Raises:
        CnnlabError: a bad model, option or argument (``device`` other than the CPU for a model from elsewhere), or
            (unless ``skip_bad``) a bad image, in one line.
    """
    return joined(predict_any_chunks(source, images, options, invert, topk, device, skip_bad, progress))


def predict_any_chunks(source: str | Path, images: Sequence[str | Path], options: Options | None = None,
                       invert: bool = False, topk: int = 3, device: str = "auto", skip_bad: bool = False,
                       progress: bool = False) -> Iterator[list[dict[str, Any]]]:
    """:func:`predict_any`'s results a chunk of pictures at a time, each as soon as it is classified
    (:func:`cnnlab.predict.classify_chunks`): what ``cnnlab predict`` prints as it goes. The model is opened and the
    arguments are checked here, before the first chunk is asked for."""
    options = options or Options()
    if read_as_checkpoint(source):
        options.check_records_its_own()
        return predict_chunks(source, images, invert, topk, device, skip_bad, classes=options.classes,
                              progress=progress)
    files = listed_images(images, topk)
    cpu_only(device, source)
    model = open_model(source, options)

    def probabilities(batch: torch.Tensor) -> torch.Tensor:
        return model.scoring.probabilities(scores_of(model, batch, source, f"{len(batch)} picture(s)"))

    spec = model.spec
    if spec.channels not in (1, 3):  # said once, of the model, rather than as each picture's error
        raise CnnlabError(f"pictures can feed models of 1 or 3 input channels (grey or RGB); {source} takes "
                          f"{spec.channels}")
    return classify_chunks(files, probabilities, model.classes, invert=invert, topk=topk, skip_bad=skip_bad,
                           channels=spec.channels, size=spec.read_hw, crop=spec.crop, fit=spec.fit,
                           progress=progress)


def summarize_any(source: str | Path, options: Options | None = None) -> str:
    """``cnnlab summary`` of any model this explorer opens (an ONNX file, a ``.pt2`` program, a cnnlab checkpoint,
    ``module:function``): the layer table the page shows, as text. Its header says what the model is fed (as
    :meth:`cnnlab.explore.model.InputSpec.describe` does) and how many classes it answers (or that it is no
    classifier: any network is summarised); its rows the output shape
    of one image (a dimension the graph leaves free by its name), the parameters of each layer and its MACs for one
    image ("-" where a shape they need is unknown); the last line the totals, MACs per image as ``cnnlab summary``
    of cnnlab's own models says them.

    Raises:
        CnnlabError: the model cannot be opened (one line, as for ``explore``).
    """
    model = open_model(source, replace(options or Options(), any_network=True))
    rows = model.layers()
    body = [[r["name"], r["op"], shape_text(r["shape"]) or "-", f"{int(r['params'] or 0):,}",
             "-" if r["macs"] is None else f"{r['macs']:,}"] for r in rows]
    total = sum(int(r["params"] or 0) for r in rows)
    macs = total_macs(rows)
    per_image = "unknown MACs (a layer's shapes are not known)" if macs is None else macs_text(macs)
    classes = len(model.classes)
    answers = f"{classes} class{'es' if classes != 1 else ''}" if model.scoring is not None else "not a classifier"
    return "\n".join([f"{model.name}: {model.kind}, {answers}, fed {model.spec.describe()}",
                      layer_text(body),
                      f"total: {total:,} parameters in {len(rows)} layer{'s' if len(rows) != 1 else ''}, {per_image} "
                      "per image"])
