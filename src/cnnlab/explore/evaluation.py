"""``cnnlab eval`` of a model from elsewhere: any classifier :func:`cnnlab.explore.sources.open_model` opens (an
ONNX file, a ``.pt2`` program, ``module:function``, an ImageNet backbone by name), scored on a labelled dataset with
the figures a checkpoint's evaluation gives (:class:`cnnlab.evaluate.EvalResult`).

A model from elsewhere has no dataset of its own: it is named, as a registered dataset (``--dataset``, its folder
``--data-dir``) or a folder of class subfolders (``--data-dir`` alone, read as ``folder:PATH`` is for training). Its
images are decoded at the model's input (a folder's resized to cover its height and width, then the centre cropped to
them; a registered dataset at its own size) in the model's channels, and scored as :func:`cnnlab.inference.
scored_images` picks them for a model that did not train on them: the test split where the dataset has one, else a
folder whole.

A cnnlab export names the dataset its run trained on, and the records of its folder's files: it is scored as its
checkpoint would be, on that dataset where none is named (``--data-dir``: its folder, where it is now), on the test
split its run held out where that is the dataset (or its folder, moved), and refused where a folder draws another
split than the run did (:func:`cnnlab.inference.check_same_test_split`); scored whole, the run's own folder without
``test/`` would count the images the model trained on.

Which output is which class goes by name: the dataset's classes must be among the model's (from ``--classes``, the
file's own metadata, ...), in any order; a model of more classes is scored over the dataset's alone (the likeliest of
those), and the result says so. A model that names no classes is read in the dataset's class order where the counts
agree, which the result says too; otherwise ``--classes`` must name them.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from cnnlab.checks import is_number
from cnnlab.data import FOLDER_PREFIX
from cnnlab.data.folder import moved_folder
from cnnlab.data.registry import load_dataset
from cnnlab.data.store import mapped_reads
from cnnlab.errors import CnnlabError, ForeignCheckpointError, summary
from cnnlab.evaluate import EvalResult, evaluate_checkpoint, folder_named_as_data_dir, skipped_notices
from cnnlab.explore.model import Options, fitted_words
from cnnlab.explore.outputs import numbered_classes
from cnnlab.explore.sources import cpu_only, open_model, read_as_checkpoint, scores_of
from cnnlab.export import INPUT_SIZE_KEY, SKIP_BAD_KEY, SPLIT_KEYS, TEST_SPLIT_KEY, TTA_KEY
from cnnlab.inference import (
    check_same_test_split,
    check_several_classes,
    class_columns,
    model_input_side,
    moved_data,
    names_folder,
    scored_images,
)
from cnnlab.picture import ShorterSide
from cnnlab.runs.checkpoint import ELSEWHERE


def evaluate_any(source: str | Path, data_dir: str | Path | None = None, dataset: str | None = None,
                 options: Options | None = None, device: str = "auto", batch_size: int = 64,
                 skip_bad: bool = False) -> EvalResult:
    """Accuracy, per-class figures and confusion matrix of any model this explorer opens (see the module docstring).

    A cnnlab checkpoint (or a run folder) is :func:`cnnlab.evaluate.evaluate_checkpoint`'s, with ``--classes`` and
    the other model flags refused (it records its own); any other model is opened with ``options`` and run on the
    CPU. ``skip_bad``: a folder's unreadable image files are left out (counted) instead of refused.

    Raises:
        CnnlabError: a bad model, option or dataset, no dataset named for a model from elsewhere, or classes that
            the dataset and the model do not share (one line).
    """
    options = options or Options()
    if read_as_checkpoint(source):
        options.check_records_its_own()
        if options.classes is not None:
            raise CnnlabError("--classes names a model from elsewhere's classes; a cnnlab checkpoint records its own, "
                              "and eval holds them to the dataset's; expected no --classes for it")
        try:
            return evaluate_checkpoint(source, data_dir=data_dir, device=device, dataset=dataset, skip_bad=skip_bad)
        except ForeignCheckpointError as e:  # another tool's weights: said how they open, as predict says it
            raise CnnlabError(f"{e}; {ELSEWHERE}") from None
    cpu_only(device, source)
    if options.multi_label:
        raise CnnlabError("--multi-label reads each output as its own class's probability, and eval scores one class "
                          "per image; expected no --multi-label for eval")
    model = open_model(source, options)  # first: a file that is no model (a run's config.json) is said to be none
    stored = getattr(model, "metadata", {})  # a cnnlab export's (ONNX, .pt2); none for module:function
    own = stored.get("cnnlab.dataset")  # a cnnlab export names its run's dataset: the default, as a checkpoint's
    skip_bad = skip_bad or stored.get(SKIP_BAD_KEY) == "true"  # its run's --skip-bad-images holds, as a checkpoint's
    test_split = _stored_test_split(stored, str(source))  # and its --test-split
    named = dataset is not None  # as another dataset than the run's, where it is not that one (as for a checkpoint)
    dataset, data_dir = _dataset_to_score(dataset, data_dir, own, str(source))
    spec = model.spec
    if spec.channels not in (1, 3):
        raise CnnlabError(f"a dataset's images can feed models of 1 or 3 input channels (grey or RGB); {source} "
                          f"takes {spec.channels}")
    # a folder (--data-dir, or --dataset folder:PATH) decoded at the model's input, cropped to its height and width
    # (not a square the model's input resize would squash to them); a registered dataset at its own size
    folder = dataset.startswith(FOLDER_PREFIX)
    size = spec.read_hw if folder else None
    # A classifier whose library resizes the shorter side and crops the centre (Ultralytics' classify predict, a
    # Hugging Face image processor, torchvision's weights' transforms) has each picture framed so, so that each
    # image's answer is the one its users get from that library
    fit = spec.fit if folder and isinstance(spec.fit, ShorterSide) and not spec.crop else None
    with mapped_reads(), folder_named_as_data_dir(data_dir, None if named else dataset):  # only the scored read
        data = load_dataset(dataset, data_dir, image_size=size, channels=spec.channels, download=False,
                            skip_bad=skip_bad, training=False, fit=fit,
                            # a cnnlab export's run's folder, decoded for its input, is read from the run's entry
                            input_side=_run_input_side(stored),
                            test_split=None if named and not names_folder(dataset, own or "") else test_split)
    columns, said = _class_columns(model.classes, data.classes, str(source), data.name, model.scoring.describe())
    recorded = _run_record(stored, str(source))
    other = named and data.name != own
    if not other:
        check_same_test_split(recorded, data)
    images, labels, scored = scored_images(recorded, data, other)
    if stored.get(TTA_KEY, "none") != "none":
        said.append("its run scored with flip-TTA, which the export does not do: the figures can differ from the "
                    "run's")
    if fit is not None:
        said.append(f"its pictures {fitted_words(fit, spec.hw)}")
    said += skipped_notices(data)
    logits = scores_of(model, images, source, f"the {len(images)} images of {data.name}", batch_size)[:, columns]
    return EvalResult.from_logits(logits, labels, data.classes, model=model.name, checkpoint=str(source),
                                  device="cpu", tta=False, scored="; ".join([scored, *said]))


def _run_input_side(stored: dict[str, str]) -> int | None:
    """The side a cnnlab export's run fed its model (``stored``: the export's metadata), its folder decoded for it:
    the run's ``--resize`` where it gave one (a 224 model fed 300 px decoded its photos under a cap of 300, not 224),
    else its model's; None for a model from elsewhere."""
    side = str(stored.get(INPUT_SIZE_KEY, ""))
    return int(side) if side.isdigit() else model_input_side(stored.get("cnnlab.model"))


def _dataset_to_score(dataset: str | None, data_dir: str | Path | None, own: str | None,
                      source: str) -> tuple[str, str | Path | None]:
    """The dataset to score on and its folder (for ``load_dataset``): the one named; else a cnnlab export's own
    (``own``: a registered one, ``data_dir`` its folder; or its run's image folder, ``data_dir`` where it is now);
    else the folder ``data_dir``, as ``folder:PATH``."""
    if dataset is not None:
        return dataset, data_dir
    if own and own.startswith(FOLDER_PREFIX):
        if data_dir is not None:
            return moved_folder(own, data_dir), None
        if not Path(own.removeprefix(FOLDER_PREFIX)).exists():  # the folder, or the CSV that labels it
            raise moved_data(f"the image folder {source}'s run trained on, {own.removeprefix(FOLDER_PREFIX)},")
        return own, None
    if own:
        return own, data_dir
    if data_dir is None:
        raise CnnlabError(f"{source} is a model from elsewhere, with no dataset of its own; expected --data-dir "
                          "FOLDER (class subfolders of images) or --dataset NAME to score it on")
    return FOLDER_PREFIX + str(data_dir), None


def _stored_test_split(stored: dict[str, str], source: str) -> float | None:
    """The run's ``--test-split`` a cnnlab export keeps in its metadata, None where it keeps none."""
    if TEST_SPLIT_KEY not in stored:
        return None
    try:
        value = json.loads(stored[TEST_SPLIT_KEY])
    except ValueError:
        value = None
    if not is_number(value) or not 0 <= value < math.inf:
        raise CnnlabError(f"{source}: its metadata's {TEST_SPLIT_KEY} is {stored[TEST_SPLIT_KEY]!r}; expected the "
                          f"run's --test-split, a number >= 0")
    return value


def _run_record(stored: dict[str, str], source: str) -> dict[str, Any]:
    """The dataset record of the run a cnnlab export comes from, as its checkpoint keeps it (for
    :func:`cnnlab.inference.check_same_test_split` and :func:`cnnlab.inference.scored_images`, which hold any
    dataset to it as they hold it to the checkpoint's); none for a model that is no cnnlab export."""
    record: dict[str, Any] = {"name": stored.get("cnnlab.dataset")}
    for key in SPLIT_KEYS:
        if f"cnnlab.{key}" in stored:
            try:
                value = json.loads(stored[f"cnnlab.{key}"])
                if not isinstance(value, list) or len(value) != 2 or not isinstance(value[1], str):
                    raise ValueError(value)
                record[key] = [int(value[0]), value[1]]
            except (ValueError, TypeError):
                raise CnnlabError(f"{source}'s metadata cnnlab.{key} is {summary(stored[f'cnnlab.{key}'], 60)}; "
                                  "expected a [count, hash] pair, as cnnlab's exports write it") from None
    return record if record["name"] is not None else {}


def _class_columns(model: tuple[str, ...], data: tuple[str, ...], source: str, name: str,
                   outputs: str) -> tuple[list[int], list[str]]:
    """The model's output for each of the dataset's classes, in the dataset's order, and what the result says of
    how they were matched (:func:`cnnlab.inference.class_columns`, by name, as a checkpoint's are); ``outputs`` says
    how many the model has (:meth:`cnnlab.explore.outputs.Scoring.describe`: one output is two classes)."""
    if model == numbered_classes(len(model)):  # no names: only the order can tell
        check_several_classes(data, name)  # (class_columns checks it for the names)
        if len(model) != len(data):
            raise CnnlabError(f"{source} names no classes and has {outputs}, {name} has {len(data)} classes; "
                              f"expected --classes FILE naming the model's classes")
        return list(range(len(data))), [f"the model names no classes ({outputs}): they are read in the dataset's "
                                        "class order (pass --classes to match them by name)"]
    return class_columns(model, data, name, remedy=", or --classes naming the model's")
