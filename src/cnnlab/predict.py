"""Classifying image files (``cnnlab predict MODEL IMAGE_OR_FOLDER...``) with a trained checkpoint, or with any
classifier the explorer opens.

Any PNG/JPEG/... that PIL reads, of any size, colour or grey, becomes an image like the checkpoint's dataset
stored: grey for a 1-channel model, RGB for a 3-channel one, centred on a square canvas (centre-cropped instead for a
model of a folder of images, as its training images were), resized with an antialiasing filter to the dataset's image
side, values in [0, 1]; then the checkpoint's own preprocessing (resize
to the model's input, normalisation, flip-TTA) runs exactly as in evaluation (:meth:`cnnlab.inference.Trained.logits`).

A model from elsewhere (a cnnlab export as ONNX or ``.pt2``, anyone's ONNX file or ``torch.export`` program, an
ImageNet backbone by name, ``module:function``) is opened as ``cnnlab explore`` opens it and its pictures are
classified by :func:`classify_files` (:func:`cnnlab.explore.sources.predict_any`, the explorer's layer above this
one): each picture is decoded the same way at the model's input, and the probabilities are the ones the explorer's
page shows. So an export can be checked on the files it will meet in deployment with the command that checked its
checkpoint.
"""

from __future__ import annotations

import base64
import math
import os
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from cnnlab.checks import positive_int
from cnnlab.data.folder import csvs_to_name, find_labels_csv
from cnnlab.data.labels_csv import BYTES_COLUMN, files_named
from cnnlab.errors import CnnlabError, ForeignCheckpointError, listed
from cnnlab.inference import load_trained
from cnnlab.io import check_output_file, writable_json, writable_text, write_csv
from cnnlab.picture import (
    MAX_PIXELS,
    PAD,
    Fit,
    as_hw,
    listed_picture,
    picture_extensions,
    read_picture,
    unread_photos_note,
)
from cnnlab.runs.checkpoint import ELSEWHERE

SIDE = 28  # Fashion-MNIST's side: the default of load_image
# Refused before decoding (cnnlab.picture, MAX_PIXELS there: the explorer's limit too); a folder's files have no byte
# limit, and a file is read from disk, not into memory.
MAX_BYTES = 4 * 2**30
# How many pictures are decoded and classified together, and whose answers cnnlab predict then prints: a multiple of
# the batches a checkpoint (512) and a model from elsewhere (64) run, held in memory however many files are named.
PREDICT_CHUNK = 512


def load_image(path: str | Path, invert: bool = False, *, channels: int = 1, size: int = SIDE,
               crop: bool = False) -> torch.Tensor:
    """Read one image file as a float ``channels x size x size`` tensor in [0, 1], like a dataset's stored image
    (:func:`read_image`'s pixels divided by 255)."""
    return read_image(path, invert, channels=channels, size=size, crop=crop).float() / 255


def read_image(path: str | Path, invert: bool = False, *, channels: int = 1, size: int | tuple[int, int] = SIDE,
               crop: bool = False, fit: Fit = PAD) -> torch.Tensor:
    """Read one image file as a uint8 ``channels x size x size`` tensor (``channels x height x width`` for a
    ``size`` of ``(height, width)``), like a dataset's stored image.

    The decoding (EXIF orientation, transparency, grey or RGB, padding to a square, Lanczos resize, ``invert``) is
    :func:`cnnlab.picture.read_picture`'s, the explorer's too, so both feed a model the same input.

    Args:
        path: the image file.
        invert: for dark subjects on a light background (Fashion-MNIST's garments are light on black).
        channels: 1 or 3, as the model was trained.
        size: side of the dataset's stored images (a checkpoint's ``meta.image_size``), or a model's input height
            and width.
        crop: decode as a folder of images decodes its files (a checkpoint's ``meta.crops_pictures``).
        fit: else how the picture is given ``size`` (:func:`cnnlab.picture.read_picture`'s: as Ultralytics' predict
            feeds the network it exported, for one).

    Raises:
        CnnlabError: the file is missing, empty, not an image (a CSV file: saying what to name instead), truncated,
            or above ``MAX_PIXELS`` (checked from the header, before any pixel is decoded); or ``channels``/``size``
            out of range.
    """
    if channels not in (1, 3):
        raise CnnlabError(f"channels must be 1 (grey) or 3 (RGB), got {channels!r}")
    for side in as_hw(size):
        positive_int(side, "size")
    path = Path(path)
    if not path.is_file():
        raise CnnlabError(f"image {path} does not exist or is not a file")
    if path.suffix.lower() == ".csv":  # a folder's labels named where pictures are: said as that, not as a bad picture
        # a contest's train.csv labels train/<id>.jpg: its folder holds folders of pictures, which are to be named
        beside = not any(p.suffix.lower() in picture_extensions() for p in path.parent.iterdir())
        folders = f"the folders beside it ({path.parent / '*'}/)" if beside else f"its folder ({path.parent})"
        raise CnnlabError(f"{path} is a CSV file, not a picture; expected image files or folders of them: name "
                          f"{folders} to classify the pictures in {'them' if beside else 'it'}, or score them by the "
                          f"CSV's labels with cnnlab eval MODEL --dataset folder:{path}")
    return read_picture(path, name=f"image {path}", channels=channels, size=size, invert=invert,
                        max_bytes=MAX_BYTES, max_pixels=MAX_PIXELS, crop=crop, fit=fit)


def image_files(paths: Sequence[str | Path]) -> list[Path]:
    """``paths`` with every folder replaced by the image files directly inside it, sorted by name.

    An image file ends in one of :func:`cnnlab.picture.picture_extensions` (``.png``, ``.jpg``, ...), or is named
    as a photo that is not read here (a raw camera file, an iPhone's HEIC photo without pillow-heif:
    :func:`cnnlab.picture.listed_picture`); hidden files are skipped. A folder without any of the former is an error
    (a typo'd folder should not pass as an empty batch); a listed file is kept whatever its suffix, so a bad one is
    reported by :func:`load_image`.
    """
    files: list[Path] = []
    for path in map(Path, paths):
        if not path.is_dir():
            files.append(path)
            continue
        # a link to a missing file is kept, so that it is reported like any bad file rather than silently left out
        entries = [p for p in path.iterdir() if p.is_file() or p.is_symlink()]
        found = [p for p in entries if listed_picture(p)]
        if not found:
            subfolders = sorted(p.name for p in path.iterdir() if p.is_dir() and not p.name.startswith("."))
            if subfolders:  # a folder of class subfolders, as a run trains on: say where its pictures are
                shown, several = listed((f"{n}/" for n in subfolders), most=6), len(subfolders) > 1
                them, their = ("them", "their") if several else ("it", "its")
                # --dataset folder:PATH, not --data-dir PATH: for a checkpoint or export of a registered dataset
                # --data-dir names where that dataset's files are, and the folder would be refused as no copy of them
                raise CnnlabError(f"folder {path} holds no image files directly inside it, only the "
                                  f"folder{'s' * several} {shown}: name {them} ({path / '*'}/) to classify "
                                  f"{their} images, or {_how_to_score(path)}")
            raise CnnlabError(f"folder {path} holds no image files (expected .png, .jpg, ... directly inside it)"
                              f"{unread_photos_note(path.iterdir())}")
        # photos not read here among the pictures are listed too, so that each is reported (with how to read it) and
        # the exit code says so: passed over, an iPhone's or a camera's photos went unanswered without a word
        files += sorted(p for p in entries if listed_picture(p, refused=True))
    return files


def _how_to_score(folder: Path) -> str:
    """How :func:`image_files`' advice says to score a folder of subfolders that ``folder:`` reads: labelled by its
    class subfolders, or by the CSV beside them (an ``images/`` subfolder is no class), or, where CSVs lie there that
    label only where named (a contest's ``train.csv`` beside ``train/`` and ``test/``), by one of them."""
    try:
        csv_file = find_labels_csv(folder)[0]
    except CnnlabError:  # two CSVs: the loader says which to name, in its own words
        csv_file = None
    if csv_file is not None:
        return f"score its images by their labels in {csv_file.name} with cnnlab eval MODEL --dataset folder:{folder}"
    named = csvs_to_name(folder)
    return (f"score a folder of class subfolders with cnnlab eval MODEL --dataset folder:{folder}"
            + (f", or its images by a CSV's labels with --dataset {named}" if named else ""))


def predict_files(checkpoint: str | Path, images: Sequence[str | Path], invert: bool = False, topk: int = 3,
                  device: str = "auto", skip_bad: bool = False,
                  classes: Sequence[str] | None = None, progress: bool = False) -> list[dict[str, Any]]:
    """Classify image files (and the image files in folders) with a trained checkpoint.

    Each image is read as the checkpoint's dataset stores images (:func:`load_image` with its channels and image
    size). Fashion-MNIST garments are light on a black background: photos of clothes on a light background (most
    product photos and scans) must be inverted first, ``invert=True`` (``--invert``), or the network sees a dark
    garment on white, which it never met in training, and its answers are meaningless. A model from elsewhere (an
    ONNX or ``.pt2`` export, ``module:function``, ...) is classified by :func:`cnnlab.explore.sources.predict_any`.
    :func:`predict_chunks` gives the same results a chunk at a time, as they are known.

    Args:
        checkpoint: a ``.pt`` file written by ``cnnlab train``.
        images: paths of PNG/JPEG/... files of any size, colour or grey, or folders of them (sorted by name).
        invert: invert the pixel values (for dark-on-light pictures).
        topk: how many classes to return per image (at most the number of classes).
        device: ``auto``, ``cpu``, ``cuda``, ``cuda:N`` or ``mps``.
        skip_bad: an unreadable image becomes ``{"file", "error"}`` in the results instead of raising.
        classes: names for the checkpoint's classes instead of its own (``--classes``), as many as it has.
        progress: a bar of the pictures classified on stderr, where that is a terminal (:func:`classify_chunks`).

    Returns:
        One dict per image, in order: ``{"file", "top": [{"class", "index", "probability"}, ...]}``, or
        ``{"file", "error"}`` for a bad image when ``skip_bad``.

    Raises:
        CnnlabError: a bad checkpoint or argument, or (unless ``skip_bad``) a bad image, in one line naming it.

    Example:
        >>> predict_files("runs/lenet/best.pt", ["shirt.jpg"], invert=True)  # doctest: +SKIP
        [{'file': 'shirt.jpg', 'top': [{'class': 'shirt', 'index': 6, 'probability': 0.61}, ...]}]
    """
    return joined(predict_chunks(checkpoint, images, invert, topk, device, skip_bad, classes, progress))


def predict_chunks(checkpoint: str | Path, images: Sequence[str | Path], invert: bool = False, topk: int = 3,
                   device: str = "auto", skip_bad: bool = False, classes: Sequence[str] | None = None,
                   progress: bool = False) -> Iterator[list[dict[str, Any]]]:
    """:func:`predict_files`'s results a chunk at a time, each as soon as it is classified (:func:`classify_chunks`):
    a folder of thousands of photos takes minutes, and a reader can be shown the first answers at once.

    The checkpoint is opened and the arguments are checked here, before the first chunk is asked for; the pictures
    are read as the chunks are. Arguments, results and errors are :func:`predict_files`'s.

    Example:
        >>> for chunk in predict_chunks("runs/lenet/best.pt", ["photos/"]):  # doctest: +SKIP
        ...     print(format_predictions(chunk))
    """
    files = listed_images(images, topk)
    try:
        trained = load_trained(checkpoint, device)
    except ForeignCheckpointError as e:  # another tool's weights: said how they open, as explore says it
        raise CnnlabError(f"{e}; {ELSEWHERE}") from None
    meta = trained.meta
    if classes and len(classes) != meta.num_classes:
        raise CnnlabError(f"--classes names {len(classes)} classes, but {checkpoint} has {meta.num_classes}")

    def probabilities(batch: torch.Tensor) -> torch.Tensor:
        # the one call into the inference path (preprocessing, model, TTA as the run evaluated)
        return trained.logits(batch).softmax(1)

    return classify_chunks(files, probabilities, tuple(classes or meta.classes), invert=invert, topk=topk,
                           skip_bad=skip_bad, channels=meta.channels, size=meta.image_size,
                           crop=meta.crops_pictures, progress=progress)


def joined(chunks: Iterable[list[dict[str, Any]]]) -> list[dict[str, Any]]:
    """The results of every chunk (:func:`predict_chunks`, :func:`classify_chunks`) in one list, in order."""
    return [result for chunk in chunks for result in chunk]


def listed_images(images: Sequence[str | Path], topk: int = 3) -> list[Path]:
    """The image files ``images`` names (:func:`image_files`), checked to be some, and ``topk`` checked: what a
    prediction refuses before any model is opened."""
    positive_int(topk, "topk")
    files = image_files(images)
    if not files:
        raise CnnlabError("expected at least one image file, got none")
    return files


def classify_files(files: Sequence[Path], probabilities: Callable[[torch.Tensor], torch.Tensor],
                   classes: Sequence[str], *, invert: bool = False, topk: int = 3, skip_bad: bool = False,
                   channels: int, size: int | tuple[int, int], crop: bool = False, fit: Fit = PAD,
                   progress: bool = False) -> list[dict[str, Any]]:
    """The ``topk`` classes of each file by ``probabilities`` (uint8 ``N x C x H x W`` pictures -> ``N x classes``),
    each file read by :func:`read_image` at ``channels``, ``size``, ``crop`` and ``fit``: :func:`classify_chunks`'s
    results in one list, the results of :func:`predict_files`."""
    return joined(classify_chunks(files, probabilities, classes, invert=invert, topk=topk, skip_bad=skip_bad,
                                  channels=channels, size=size, crop=crop, fit=fit, progress=progress))


def classify_chunks(files: Sequence[Path], probabilities: Callable[[torch.Tensor], torch.Tensor],
                    classes: Sequence[str], *, invert: bool = False, topk: int = 3, skip_bad: bool = False,
                    channels: int, size: int | tuple[int, int], crop: bool = False, fit: Fit = PAD,
                    progress: bool = False) -> Iterator[list[dict[str, Any]]]:
    """:func:`classify_files`'s results, ``PREDICT_CHUNK`` files at a time, each chunk yielded as soon as it is
    classified, in the files' order.

    ``progress``: a bar of the pictures done on stderr where that is a terminal (a folder of thousands of photos
    takes minutes), cleared when done. It is cleared while the caller holds a chunk, so that the lines it prints for
    it start on a line of their own, and drawn again when the next chunk is asked for.
    """
    # A chunk at a time: a folder of 20,000 photos at 224 px is 3 GB of decoded pictures, held twice (the pictures
    # and their stack) when read whole. miniters=1: with a fixed minimum tqdm's monitor thread never redraws the bar
    # by itself, as it might while the caller prints (tqdm/_monitor.py); one update a chunk costs nothing.
    with tqdm(total=len(files), unit="picture", leave=False, miniters=1,
              disable=None if progress else True) as bar:
        for start in range(0, len(files), PREDICT_CHUNK):
            results: list[dict[str, Any]] = [{"file": str(path)} for path in files[start:start + PREDICT_CHUNK]]
            loaded: dict[int, torch.Tensor] = {}
            for i, result in enumerate(results):
                try:
                    loaded[i] = read_image(files[start + i], invert, channels=channels, size=size, crop=crop,
                                           fit=fit)
                except CnnlabError as e:
                    if not skip_bad:
                        raise
                    result["error"] = str(e)
            if loaded:
                _rank(results, loaded, probabilities, classes, topk)
            bar.update(len(results))
            bar.clear()
            yield results
            bar.refresh()


def _rank(results: list[dict[str, Any]], loaded: dict[int, torch.Tensor],
          probabilities: Callable[[torch.Tensor], torch.Tensor], classes: Sequence[str], topk: int) -> None:
    """Put the ``topk`` classes of the pictures ``loaded`` (result index -> picture) into their ``results``, the
    pictures of each shape in one batch: a network fed each picture's minimum rectangle (Ultralytics' letterbox,
    :class:`cnnlab.picture.Letterbox`) gets pictures of several."""
    by_shape: dict[tuple[int, ...], list[int]] = {}
    for i, picture in loaded.items():
        by_shape.setdefault(tuple(picture.shape), []).append(i)
    for kept in by_shape.values():
        probs = probabilities(torch.stack([loaded[i] for i in kept]))
        top = probs.topk(min(topk, probs.shape[1]), dim=1)
        for i, values, indices in zip(kept, top.values.tolist(), top.indices.tolist(), strict=True):
            # a diverged model's NaN is None, as the explorer's pages give it: JSON has no NaN, and a reader of
            # --json (jq, JSON.parse) would refuse the whole output
            results[i]["top"] = [{"class": classes[k], "index": k, "probability": p if math.isfinite(p) else None}
                                 for p, k in zip(values, indices, strict=True)]


def as_json(result: dict[str, Any]) -> dict[str, Any]:
    """A picture's result (:func:`classify_chunks`) as ``--json`` and ``--jsonl`` print it, in text every JSON reader
    takes (:func:`cnnlab.io.writable_json`): a file name that is not UTF-8 (Linux allows any bytes) has each such byte
    as U+FFFD in ``file``, and ``file_bytes`` beside it, the name's exact bytes in base64, to open the file by (as
    ripgrep's JSON gives a path that is no text)."""
    shown = writable_json(result)
    if shown["file"] != result["file"]:
        shown = {"file": shown["file"], "file_bytes": base64.b64encode(os.fsencode(result["file"])).decode("ascii"),
                 **shown}
    return shown


def format_predictions(results: list[dict[str, Any]]) -> str:
    """One line per classified image (:func:`format_prediction`; failed images are left out)."""
    return "\n".join(format_prediction(r) for r in results if "top" in r)


def format_prediction(result: dict[str, Any]) -> str:
    """A classified image's line: ``file: class 91.2%, class 5.1%, ...`` (a probability that is not a number, a
    diverged model's, is ``-``). It depends on no other image, so that a chunk's lines can be printed as soon as it
    is classified."""
    guesses = ", ".join(f"{t['class']} " + ("-" if t["probability"] is None else f"{t['probability']:.1%}")
                        for t in result["top"])
    return f"{result['file']}: {guesses}"


def write_predictions_csv(path: str | Path, results: Iterable[dict[str, Any]], force: bool = False) -> Path:
    """Write each classified picture of ``results`` (:func:`predict_files`'s or
    :func:`cnnlab.explore.sources.predict_any`'s) as a row of the CSV file ``path``, atomically, and return the folder
    its names are relative to (``cnnlab predict --csv``).

    The header is ``file_name,label,probability``: the picture's path relative to the folder that holds every picture
    predicted (a folder named: that folder), ``/`` between folders, its top class, and that class's probability
    (empty where the model's output is not a number). :mod:`cnnlab.data.labels_csv` reads it as it is (a contest's
    submission is :func:`write_submission`'s): written into the folder predicted, it labels that folder again
    (``folder:FOLDER/OUT.csv``). A picture that could not be read (``{"file", "error"}``) has no
    row, as its line is left out of the printed answers: its error is said where it happened, and the rows of the
    others label their files. A file name that is not UTF-8 (Linux allows any bytes), which a UTF-8 CSV cannot hold,
    has U+FFFD for each such byte, and a ``file_bytes`` column (added only then; empty for the other rows) gives the
    name's exact bytes in base64, as ``--json`` does, which the CSV reader reads the name by.

    Args:
        path: the CSV file to write.
        results: one dict a picture, in order (``top`` classes, or ``error``).
        force: replace an existing ``path`` (``--force``); otherwise it is refused.

    Raises:
        CnnlabError: ``path`` is a folder, exists (without ``force``) or cannot be written there (one line).
    """
    check_output_file(path, force, "--csv ")
    results = list(results)
    root = _common_folder(results)
    rows = []  # file_name, label, probability, file_bytes (the name's bytes where file_name cannot hold them)
    for r in results:
        if "top" not in r:
            continue
        name = Path(os.path.relpath(os.path.abspath(r["file"]), root)).as_posix()
        shown, top = writable_text(name), r["top"][0]
        rows.append([shown, writable_text(top["class"]), "" if top["probability"] is None else str(top["probability"]),
                     "" if shown == name else base64.b64encode(os.fsencode(name)).decode("ascii")])
    exact = any(row[3] for row in rows)
    write_csv(path, [["file_name", "label", "probability", BYTES_COLUMN], *rows] if exact else
              [["file_name", "label", "probability"], *(row[:3] for row in rows)], overwrite=force)
    return root


def write_submission(path: str | Path, results: Iterable[dict[str, Any]], sample: str | Path,
                     force: bool = False) -> int:
    """Write each picture's top class of ``results`` into the CSV file ``path`` as a contest's ``sample`` CSV is
    written (its ``sample_submission.csv``), atomically, and return how many pictures predicted it does not name
    (``cnnlab predict --csv OUT.csv --like SAMPLE.csv``).

    The file is the sample with its label column filled in: its header, its rows in its order, each picture named
    as the sample names it (Kaggle's ``id`` without the extension: found as a labels CSV's names are,
    :func:`cnnlab.data.labels_csv.files_named`). The sample has two columns, the file's and the label's (a column a
    class, of probabilities, is another format).

    Args:
        path: the CSV file to write.
        results: one dict a picture (``top`` classes, or ``error``), as :func:`write_predictions_csv` takes them.
        sample: the contest's sample submission.
        force: replace an existing ``path`` (``--force``); otherwise it is refused.

    Raises:
        CnnlabError: ``path`` is a folder, exists (without ``force``) or cannot be written there; ``sample`` is not
            a CSV of two columns, one of them a file column; a row of it names no picture predicted, or one that
            could not be read (one line).
    """
    check_output_file(path, force, "--csv ")
    sample = Path(sample)
    results = list(results)
    answers = {Path(os.path.abspath(r["file"])): r for r in results}
    header, file_at, rows = files_named(sample, _common_folder(results), list(answers))
    if len(header) != 2:
        raise CnnlabError(f"{sample} has {len(header)} columns ({', '.join(header)}); expected two, the file's "
                          f"({header[file_at]}) and the label's, as a contest's id,label (a column a class is not "
                          f"written here)")
    written = [header]
    for cells, picture in rows:
        answer = answers[picture]
        if "top" not in answer:
            raise CnnlabError(f"{sample} names {cells[file_at]}, whose picture could not be read ({picture}); "
                              f"expected an answer for every row of the sample")
        row = ["", ""]
        row[file_at], row[1 - file_at] = cells[file_at], writable_text(answer["top"][0]["class"])
        written.append(row)
    write_csv(path, written, overwrite=force)
    return len(answers) - len({picture for _, picture in rows})


def _common_folder(results: list[dict[str, Any]]) -> Path:
    """The folder that holds every picture of ``results`` (the working folder of none): what the names of a CSV of
    them are relative to."""
    if not results:
        return Path.cwd()
    return Path(os.path.commonpath([os.path.dirname(os.path.abspath(r["file"])) for r in results]))
