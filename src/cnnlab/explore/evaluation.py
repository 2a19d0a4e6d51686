"""``cnnlab eval`` of a model from elsewhere: any classifier :func:`cnnlab.explore.sources.open_model` opens (an
ONNX file, a ``.pt2`` program, ``module:function``, an ImageNet backbone by name), scored on a labelled dataset with
the figures a checkpoint's evaluation gives (:class:`cnnlab.evaluate.EvalResult`).

A model from elsewhere has no dataset of its own: it is named, as a registered dataset (``--dataset``, its folder
``--data-dir``) or a folder of class subfolders (``--data-dir`` alone, read as ``folder:PATH`` is for training). Its
images are decoded at the model's input (a folder's shorter side to the larger of its height and width, then the
centre; a registered dataset at its own size) in the model's channels, and scored as :func:`cnnlab.inference.
scored_images` picks them for a model that did not train on them: the test split where the dataset has one, else a
folder whole.

Which output is which class goes by name: the dataset's classes must be among the model's (from ``--classes``, the
file's own metadata, ...), in any order; a model of more classes is scored over the dataset's alone (the likeliest of
those), and the result says so. A model that names no classes is read in the dataset's class order where the counts
agree, which the result says too; otherwise ``--classes`` must name them.
"""

from __future__ import annotations

from pathlib import Path

from cnnlab.data import FOLDER_PREFIX
from cnnlab.data.registry import load_dataset
from cnnlab.errors import CnnlabError
from cnnlab.evaluate import EvalResult, evaluate_checkpoint
from cnnlab.explore.model import Options, numbered_classes
from cnnlab.explore.sources import cpu_only, open_model
from cnnlab.inference import scored_images
from cnnlab.runs.checkpoint import names_a_checkpoint


def evaluate_any(source: str | Path, data_dir: str | Path | None = None, dataset: str | None = None,
                 options: Options | None = None, device: str = "auto", batch_size: int = 64) -> EvalResult:
    """Accuracy, per-class figures and confusion matrix of any model this explorer opens (see the module docstring).

    A cnnlab checkpoint (or a run folder) is :func:`cnnlab.evaluate.evaluate_checkpoint`'s, with ``--classes`` and
    the other model flags refused (it records its own); any other model is opened with ``options`` and run on the
    CPU.

    Raises:
        CnnlabError: a bad model, option or dataset, no dataset named for a model from elsewhere, or classes that
            the dataset and the model do not share (one line).
    """
    options = options or Options()
    if names_a_checkpoint(source) or Path(source).is_dir():
        options.check_records_its_own()
        if options.classes is not None:
            raise CnnlabError("--classes names a model from elsewhere's classes; a cnnlab checkpoint records its own, "
                              "and eval holds them to the dataset's; expected no --classes for it")
        return evaluate_checkpoint(source, data_dir=data_dir, device=device, dataset=dataset)
    cpu_only(device, source)
    if dataset is None and data_dir is None:
        raise CnnlabError(f"{source} is a model from elsewhere, with no dataset of its own; expected --data-dir "
                          "FOLDER (class subfolders of images) or --dataset NAME to score it on")
    if options.multi_label:
        raise CnnlabError("--multi-label reads each output as its own class's probability, and eval scores one class "
                          "per image; expected no --multi-label for eval")
    model = open_model(source, options)
    spec = model.spec
    if spec.channels not in (1, 3):
        raise CnnlabError(f"a dataset's images can feed models of 1 or 3 input channels (grey or RGB); {source} "
                          f"takes {spec.channels}")
    if dataset is None:  # a folder of the user's images, decoded at the model's input
        data = load_dataset(FOLDER_PREFIX + str(data_dir), image_size=max(spec.hw), channels=spec.channels)
    else:
        data = load_dataset(dataset, data_dir, channels=spec.channels, download=False)
    columns, said = _class_columns(model.classes, data.classes, str(source), data.name)
    images, labels, scored = scored_images({}, data)
    logits = model.logits(images, batch_size)[:, columns]
    return EvalResult.from_logits(logits, labels, data.classes, model=model.name, checkpoint=str(source),
                                  device="cpu", tta=False, scored="; ".join([scored, *said]))


def _class_columns(model: tuple[str, ...], data: tuple[str, ...], source: str,
                   name: str) -> tuple[list[int], list[str]]:
    """The model's output for each of the dataset's classes, in the dataset's order, and what the result says of
    how they were matched (nothing where the model has exactly the dataset's classes)."""
    if model == numbered_classes(len(model)):  # no names: only the order can tell
        if len(model) != len(data):
            raise CnnlabError(f"{source} names no classes and has {len(model)} outputs, {name} has {len(data)} "
                              f"classes; expected --classes FILE naming the model's classes")
        return list(range(len(data))), [f"the model names no classes: its {len(model)} outputs are read in the "
                                        "dataset's class order (pass --classes to match them by name)"]
    missing = [c for c in data if c not in model]
    if missing:
        shown = ", ".join(map(repr, missing[:3])) + (f" and {len(missing) - 3} more" if len(missing) > 3 else "")
        raise CnnlabError(f"{name} has classes the model does not name ({shown}; the model's: "
                          f"{', '.join(map(repr, model[:5]))}{', ...' * (len(model) > 5)}); expected a dataset of "
                          f"the model's classes, or --classes naming the model's")
    columns = [model.index(c) for c in data]
    if len(model) > len(data):
        return columns, [f"scored over the dataset's {len(data)} classes among the model's {len(model)}: each "
                         f"answer is the likeliest of those {len(data)}"]
    return columns, []
