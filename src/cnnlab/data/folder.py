"""``folder:PATH``: a folder of the user's own images, one subfolder per class or labelled by a CSV file, decoded once
into the cache.

Layouts (as torchvision's ``ImageFolder``, class names sorted): ``PATH/<class>/**/<image>``, or the split
``PATH/train/<class>/...`` with ``PATH/test/<class>/...`` (or ``PATH/val/``, the other usual held-out name; with both,
``test/`` is the test split and ``val/`` the validation split, :attr:`ImageDataset.val_images`). Split folders go
by any case and by their other usual names (:data:`SPLIT_NAMES`: ``training/``, ``testing/``, ``valid/``, ...).
Without a held-out folder a seeded, stratified 1/6 of the images becomes the test split (the share MNIST and
Fashion-MNIST hold out: 10,000 of 60,000 + 10,000), and the dataset's description says so; ``test_split`` draws another
share or number of images, or none (0: a contest's folder, whose test images are its own unlabelled ones). A folder
without class subfolders may be labelled by a CSV file instead (:mod:`cnnlab.data.labels_csv`: ``PATH/labels.csv`` or
``PATH/metadata.csv``, or ``folder:PATH/NAME.csv`` naming one): its rows give the same lists of files, labels and splits
(a split column's test and val rows as ``test/`` and ``val/``, else the same draw), decoded, cached and recorded
as the subfolders' are, the images it does not name counted in a notice; its class names are its labels.
Which files were drawn is recorded as :attr:`ImageDataset.held_out` (their count and a hash of their paths), so that a
run can refuse a folder whose draw has changed since it trained; the training files are recorded the same way
(:attr:`ImageDataset.training_files`; with a CSV's labels, which its paths do not hold), so that a resume refuses a
folder whose training images have changed, and so is what they hold (:attr:`ImageDataset.training_bytes`, a hash of
their bytes, kept in the cache entry).

Decoding (Pillow), once: every file with an image extension (:func:`cnnlab.picture.picture_extensions`, those of the
formats read without decoding to open; other files are ignored, counted and named in a notice) is converted to grey or
RGB, the shorter side resized to ``image_size`` and the centre cropped to a square (``ImageOps.fit``; the usual Resize +
CenterCrop of ImageNet-style evaluation). Channels follow the majority of the files, ``channels=`` forces them: a file
is grey when its mode is (``L``, ``LA``, ``1``, ``I;16``, grey palettes, ...) or when it is ``RGBA`` with equal red,
green and blue everywhere (grey saved with an alpha channel); every other mode (``RGB``, ``CMYK``, ...) is colour. More
than half grey: 1 channel, and any colour files are converted to grey, which :attr:`ImageDataset.notices` says with
their count and an example (so one stray colour or CMYK file no longer turns a grey set into 3 channels); otherwise 3.
16-bit grey is scaled to 8 bits (Pillow's convert would clip it), and 32-bit grey (``I``, ``F``) is read as [0, 1]
floats, 8-bit or 16-bit by its values (:func:`cnnlab.picture.centre_crop`); alpha is dropped, as torchvision's
``pil_loader`` does. ``image_size`` defaults to the median shorter side of the images, capped at 224 (the largest input
the book's models take, d2l 8.1), or at the side of the model's input where that is larger (``input_side``: 384 for
EfficientNetV2-S, whose weights were trained on 384-px crops; :func:`default_cap`): digits at 28 px stay 28 px, photos
are stored no larger than the model will look at, and no smaller (a model enlarging 224-px images to its 384 would see
none of the detail its weights were trained on). An
``image_size`` above the median shorter side whose decoded set would exceed :data:`MAX_ENLARGED_BYTES` is refused before
anything is decoded. Unreadable files are refused by name, or skipped with ``skip_bad=True`` (counted, the first one
named, in the notices). A held-out image whose decoded pixels are a training image's (a copy in both splits) is counted
in the notices too. Mirrored images are assumed to keep their class (``flip=True``; a run's ``flip`` setting overrides
it). An ``image_size`` of ``(height, width)`` (``cnnlab eval`` of a model from elsewhere whose input is not square)
resizes each image to cover that shape and crops its centre to it. A ``fit`` decodes each file as that library's
predict frames a picture instead (:func:`cnnlab.picture.as_its_library_feeds`, its EXIF orientation applied):
``cnnlab eval`` of a classifier whose library resizes the shorter side before it crops the centre (Ultralytics' classify
predict, a Hugging Face image processor, torchvision's weights' transforms), whose users' answers come from pictures so
framed, not cropped before they are resized; such a set is cached apart.

The decoded uint8 array and its labels are cached under ``<cache>/folders/`` (:mod:`cnnlab.data.store`), keyed by
every file's path, size and modification time and the decode options, and written atomically: the second load of
an unchanged folder reads the cache, not the images (an entry cached before the training files' bytes were hashed has
them read and hashed once, not decoded, and the hash kept in it). Beside the array, the
:func:`~cnnlab.data.duplicates.image_digest` of every decoded image (16 bytes each, in the array's order), computed
while decoding: the loaded set carries them (:attr:`ImageDataset.train_digests`, ...), so that holding another set
against its training images hashes none of them again; and each image's file relative to ``PATH``, in the same order,
which :attr:`ImageDataset.file_names` reads when a notice names the images that are training images. Nothing is ever
written into ``PATH``.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import io
import json
import math
import os
import statistics
import unicodedata
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from cnnlab.checks import positive_int
from cnnlab.data import FOLDER_PREFIX, labels_csv
from cnnlab.data.dataset import ImageDataset, channel_stats
from cnnlab.data.duplicates import image_digest, seen_in_training
from cnnlab.data.registry import register_dataset
from cnnlab.data.split import SPLIT_NAMES, shown_share, stratified_split
from cnnlab.data.store import cache_root, format_bytes, in_memory_limit, is_memory_mapped, open_raw, write_raw
from cnnlab.errors import CnnlabError, DataError
from cnnlab.io import atomic_write, write_json
from cnnlab.picture import (
    Fit,
    PixelRangeError,
    ShorterSide,
    as_hw,
    as_its_library_feeds,
    centre_crop,
    heif_in_8_bits,
    heif_unopened,
    picture_extensions,
    picture_formats,
    refuse_raw_tiff,
    unread_photos_note,
)

__all__ = ["MAX_DEFAULT_SIZE", "MAX_ENLARGED_BYTES", "HOLDOUT", "csvs_to_name", "default_cap", "find_labels_csv",
           "has_validation_folder", "held_out_source", "load_folder", "moved_folder", "read_csv_labels",
           "refuse_writing_into", "split_folders"]

MAX_DEFAULT_SIZE = 224
HOLDOUT = 1 / 6
HOLDOUT_SEED = 0
HELD_OUT_NAMES = ("test", "val")
FORMAT = 7  # bump when the cached layout or the decoding changes, so old cache entries are not reused
_GREY_MODES = {"1", "L", "LA", "I", "I;16", "I;16L", "I;16B", "I;16N", "F"}
# The largest decoded set an image_size above the images' own size may make. Enlarging on the way into the cache
# gains nothing the device-side --resize does not give per batch, so past this a typo (--image-size 4000 on 8-px
# digits: 28.7 GB) is far likelier than intent; a set at or below the images' own size is limited only by the disk.
MAX_ENLARGED_BYTES = 16 * 10**9


@dataclass(frozen=True)
class _File:
    path: Path
    size: int
    mtime_ns: int
    label: int
    # The inode's change time too: `cp -p`, `rsync -a`, `tar x` and `touch -r` put back a rewritten file's mtime,
    # and a file of the same size then read as unchanged; no one can set the change time
    ctime_ns: int


# How to get past an undecodable file, in the one line that names it.
SKIP_HINT = "pass --skip-bad-images (skip_bad=True in Python) to skip such files"

def load_folder(path: Path, *, image_size: int | tuple[int, int] | None = None, channels: int | None = None,
                skip_bad: bool = False, test_split: float | None = None, fit: Fit | None = None,
                input_side: int | None = None, **_options) -> ImageDataset:
    """Load ``folder:PATH`` (see the module docstring for layouts, decoding and the cache); ``image_size``: a side, or
    a ``(height, width)``; ``test_split``: where the folder brings no test split (elsewhere it has no say: a run that
    drew one is scored on another folder's own), the share (< 1) or number (>= 1) of its images drawn as one, or 0 for
    none (default: :data:`HOLDOUT`); ``fit``: each file framed as :func:`cnnlab.picture.as_its_library_feeds` frames
    it for that fit, not centre-cropped (None); ``input_side``: the side of the input of the model the images are for,
    whose cap on the side chosen without ``image_size`` is :func:`default_cap`'s (None: a model of at most 224 px)."""
    if isinstance(image_size, (tuple, list)) and len(image_size) == 2:
        height, width = (positive_int(side, "image_size") for side in image_size)
        image_size = height if height == width else (height, width)  # a square as its side: one cache entry
    elif image_size is not None:
        positive_int(image_size, "image_size")
    if channels not in (None, 1, 3):
        raise CnnlabError(f"channels must be 1 (grey) or 3 (RGB), got {channels!r}")
    cap = default_cap(input_side)
    path = Path(path).expanduser()
    named_csv = path.suffix.lower() == ".csv"
    if not path.exists():
        expected = "a CSV file of image names and labels" if named_csv else \
            "a folder of class subfolders (PATH/<class>/<image>)"
        raise DataError(f"{path} does not exist; expected {expected}")
    if not path.is_dir() and not named_csv:
        raise DataError(f"{path} is a file; expected a folder of class subfolders (PATH/<class>/<image>), or a CSV "
                        f"file of image names and labels (PATH/labels.csv)")
    path = path.resolve()
    cache = cache_root().expanduser().resolve() / "folders"
    listing = _list(path)
    root = listing.root
    if cache.is_relative_to(root):
        raise DataError(f"the cache folder {cache} lies inside the data folder {root}; set CNNLAB_CACHE elsewhere "
                        f"(cnnlab never writes into a data folder)")
    share = HOLDOUT if test_split is None else test_split
    options = {"format": FORMAT, "image_size": image_size or _chosen_size(cap), "channels": channels,
               "skip_bad": skip_bad, "holdout": None if listing.held else [share, HOLDOUT_SEED],
               "val": listing.val_name is not None}
    if listing.csv is not None:  # a CSV that renames a class keeps every file's path and label number
        options["classes"] = list(listing.classes)
    if fit is not None:  # other pixels, another entry; the centre crop's entries keep the key they had
        options["fit"] = _fit_word(fit)
    train_files, held_files = listing.train, listing.test
    every_file = train_files + held_files + listing.val
    key = _cache_key(root, every_file, options)
    name = FOLDER_PREFIX + str(path)
    held_out = None
    if listing.held is None:  # drawn on every load (a cached set too), so that its identity always comes with it
        train_files, held_files, split_note = _hold_out(listing, share)
        held_out = _identity(root, held_files)
    else:
        split_note = f"test split: {listing.held}" + (f"; validation split: {listing.val_name}" if listing.val_name
                                                      else "")
    # A CSV's label is not in its file's path, as a class folder's is: a relabelled training image is another set
    identity = (held_out, _identity(root, train_files, listing.classes if listing.csv else None))
    stored = _Stored(train_files, train_files + held_files + listing.val)  # in the order an entry stores them
    data = _read_cache(cache, key, name, root, identity, stored) or \
        _read_as_chosen(cache, root, every_file, options, cap, name, identity, stored)
    if data is None:
        # images whose side is chosen below 224 are chosen alike under every cap: stored under the 224 cap's key, which
        # a reader under any cap looks for (_read_as_chosen), they are decoded once whichever model decodes them first
        # (under the 224 cap that key is this one: not worked out again)
        below = _cache_key(root, every_file, {**options, "image_size": _chosen_size(MAX_DEFAULT_SIZE)}) \
            if image_size is None and cap != MAX_DEFAULT_SIZE else None
        data = _decode_all(cache, key, name, root, listing.classes,
                           {"train": train_files, "test": held_files, "val": listing.val}, image_size, channels,
                           skip_bad, [split_note, *listing.notes], identity, fit, cap, below)
    if listing.passed_over:  # said at every start, of the folder as it is (the cache's key holds only the images)
        data = replace(data, notices=(*listing.passed_over, *data.notices))
    untested = _untested(data, listing) if listing.held or share else ""  # not of a test split asked to be none
    return replace(data, notices=(*data.notices, untested)) if untested else data


@dataclass(frozen=True)
class _Listing:
    """What a folder holds before decoding: its classes and each split's image files, where its held-out splits come
    from, and the files passed over.

    Attributes:
        root: the folder the files' paths are relative to (a CSV's own folder).
        held, val_name: how the description names the test and validation splits the folder brings (``test/``, the
            test rows of a CSV), None where it brings none (a test split is drawn).
        csv: the CSV that labels the images, None for class subfolders.
        notes: the description's words on the listing; passed_over: notices of the files left out.
    """

    root: Path
    classes: tuple[str, ...]
    train: list[_File]
    test: list[_File]
    val: list[_File]
    held: str | None
    val_name: str | None
    csv: Path | None
    notes: list[str]
    passed_over: tuple[str, ...]


def _list(path: Path) -> _Listing:
    """The images of ``folder:path``: its class subfolders', or those the CSV of :func:`labels_csv.find_csv`
    labels."""
    csv_file, unread = find_labels_csv(path)
    if csv_file is not None:
        return _list_csv(csv_file)
    train_dir, held_dir, val_dir = split_folders(path)
    classes, train_files, ignored = _scan(train_dir, None, lambda: _csv_hint(path, train_dir))
    held_files: list[_File] = []
    val_files: list[_File] = []
    if held_dir is not None:
        _, held_files, more = _scan(held_dir, classes)
        ignored += more
    if val_dir is not None:
        _, val_files, more = _scan(val_dir, classes)
        ignored += more
    # a class folder of pictures in a format not read here lost them without a word
    passed_over = (f"ignored {len(ignored)} file(s) not of an image format read here (first: {ignored[0]}; the "
                   f"formats: {' '.join(picture_extensions())}){unread_photos_note(ignored)}") if ignored else ""
    return _Listing(path, classes, train_files, held_files, val_files, held_dir and f"{held_dir.name}/",
                    val_dir and f"{val_dir.name}/", None,
                    [f"ignored {len(ignored)} non-image file(s)"] if ignored else [],
                    tuple(filter(None, (labels_csv.unread_note(unread), passed_over))))


def find_labels_csv(path: Path) -> tuple[Path | None, list[Path]]:
    """The CSV that labels the images of ``folder:path`` (None for class subfolders), and the CSVs left unread beside
    class subfolders: :func:`labels_csv.find_csv` with this loader's view of class subfolders, so that the explorer's
    ``--images`` reads a folder as training does."""
    return labels_csv.find_csv(path, lambda: _has_class_folders(path))


def read_csv_labels(csv_file: Path) -> labels_csv.Labels:
    """What ``csv_file`` says of the image files under its folder (:func:`labels_csv.read_labels`; links followed,
    hidden files and ``__MACOSX/`` passed over, as for class subfolders)."""
    return labels_csv.read_labels(csv_file, csv_file.parent, _walk(csv_file.parent)[0])


def _list_csv(csv_file: Path) -> _Listing:
    """The images ``csv_file`` labels, under its folder: split as its split column says (as split folders are:
    test rows the test split, validation rows the validation split beside them, else the test split)."""
    root = csv_file.parent
    labels = read_csv_labels(csv_file)
    roles = {split for _, _, split in labels.rows} - {None}
    if roles and "train" not in roles:
        raise DataError(f"{csv_file}: no row of the train split (its splits: {', '.join(sorted(roles))}); expected "
                        f"training rows beside the held-out ones")
    classes = tuple(labels_csv.class_order({label for _, label, split in labels.rows if split in (None, "train")}))
    numbers = {c: i for i, c in enumerate(classes)}
    held = [role for role in HELD_OUT_NAMES if role in roles]
    into = {None: "train", "train": "train", **dict(zip(held, ("test", "val"), strict=False))}
    splits: dict[str, list[_File]] = {"train": [], "test": [], "val": []}
    for path, label, split in labels.rows:
        if label not in numbers:
            raise DataError(f"{csv_file}: label {label!r} ({path}, of the {split} split) has no training rows; "
                            f"expected labels among the training rows' ({', '.join(classes)})")
        splits[into[split]].append(_file(path, numbers[label]))
    for files in splits.values():  # in a class folder's order: by class, then path (the held-out draw follows it)
        files.sort(key=lambda f: (f.label, f.path))
    return _Listing(root, classes, splits["train"], splits["test"], splits["val"],
                    f"the {held[0]} rows of {csv_file.name}" if held else None,
                    f"the val rows of {csv_file.name}" if len(held) == 2 else None, csv_file,
                    [f"labelled by {csv_file.name}"], labels.notices(csv_file))


def _has_class_folders(path: Path) -> bool:
    """Whether ``path`` (or its ``train/``) holds two subfolders or more with images: classes, not where a CSV's
    images are kept (``images/``, or Kaggle's ``train/`` and ``test/``)."""
    endings = picture_extensions()
    with_images = 0
    for d in _subfolders(split_folders(path)[0]):
        with_images += any(f.lower().endswith(endings) for _, _, names in os.walk(d, followlinks=True)
                           for f in names if not f.startswith("."))
        if with_images >= 2:
            return True
    return False


def _untested(data: ImageDataset, listing: _Listing) -> str:
    """A notice naming the classes with training images and no test image, or ''.

    A class of a few pictures beside classes of dozens may have none in the drawn test split (each class keeps at least
    one training image, and its share of the hold-out rounds to none), and a ``test/`` folder (or a CSV's test rows)
    may lack a class: its recall cannot be measured, which eval and the report show as "–" once the run is done; this
    says so when it starts, and where its test images go.
    """
    k = len(data.classes)
    tested = torch.bincount(data.test_labels, minlength=k).tolist()
    trained = torch.bincount(data.train_labels, minlength=k).tolist()
    untested = [(c, n) for c, t, n in zip(data.classes, tested, trained, strict=True) if t == 0 and n > 0]
    if not untested:
        return ""
    names = [f"{c}, {n} training image{'s' if n != 1 else ''}" for c, n in untested]
    first = untested[0][0]
    one = len(names) == 1
    its, it = ("its", "it") if one else ("their", "them")
    if listing.csv is not None:
        where = f"add test rows of {it} to {listing.csv.name}" if listing.held else \
            f"add rows of {it} to {listing.csv.name}, or a split column that gives {it} test rows"
    elif listing.held:
        where = f"add {its} test images to {listing.held} (as {listing.held}{first}/)"
    else:
        where = f"add images to {it}, or a test/ folder that holds {it}"
    return (f"{len(names)} class{'' if one else 'es'} {'has' if one else 'have'} no test image "
            f"({'; '.join(names[:5])}{'; ...' if len(names) > 5 else ''}): "
            f"{its} recall cannot be measured (– in eval and the report); {where}")


def split_folders(path: Path) -> tuple[Path, Path | None, Path | None]:
    """(the training folder, the held-out folder or None, the validation folder or None) of ``path``: its split
    folders (any of :data:`SPLIT_NAMES`' spellings, any case), or ``(path, None, None)`` where it holds classes.

    The one reading of a split layout: training's, and the explorer's ``--images`` (which shows the held-out one).
    """
    splits: dict[str, Path] = {}
    subfolders = _subfolders(path)
    for d in subfolders:
        role = next((r for r, names in SPLIT_NAMES.items() if d.name.lower() in names), None)
        if role is not None and role not in splits:
            splits[role] = d
    if "train" in splits:
        present = [splits[r] for r in HELD_OUT_NAMES if r in splits]
        others = [d for d in subfolders if d not in splits.values()]
        if present or not others:  # train/ + test/, or train/ alone: a split layout, not a class
            # test/ and val/ both: the one tests, the other validates (Ultralytics' and many Kaggle sets' layout)
            return splits["train"], present[0] if present else None, present[1] if len(present) == 2 else None
    return path, None, None


def has_validation_folder(dataset: str) -> bool:
    """Whether the dataset named ``dataset`` brings its own validation split: a ``folder:PATH`` holding ``train/``,
    ``val/`` and ``test/``, or labelled by a CSV with train, val and test rows (any other name: False)."""
    if not dataset.startswith(FOLDER_PREFIX):
        return False
    path = Path(dataset[len(FOLDER_PREFIX):]).expanduser()
    try:
        csv_file = _labelling_csv(path)
        if csv_file is not None:
            return {"test", "val"} <= labels_csv.split_roles(csv_file)
    except DataError:  # the loader refuses it, in its own words
        return False
    return path.is_dir() and split_folders(path)[2] is not None


def held_out_source(dataset: str) -> str:
    """What a ``folder:`` dataset would hold its own test split in, for the words of eval: ``test/ folder``, or
    ``test rows in NAME.csv`` for a folder labelled by a CSV (whose images are in no test/ folder)."""
    try:
        csv_file = _labelling_csv(Path(dataset.removeprefix(FOLDER_PREFIX)).expanduser())
    except DataError:  # the loader refused it already, or will
        csv_file = None
    return "test/ folder" if csv_file is None else f"test rows in {csv_file.name}"


def _labelling_csv(path: Path) -> Path | None:
    """The CSV that labels the images of ``folder:path`` (:func:`find_labels_csv`), None for class subfolders or
    a path that is neither a folder nor a CSV file."""
    is_csv = path.suffix.lower() == ".csv" and path.is_file()
    return find_labels_csv(path)[0] if path.is_dir() or is_csv else None


def moved_folder(dataset: str, data_dir: str | Path) -> str:
    """The ``folder:`` name of a run's images (``dataset``) now at ``data_dir``: that folder, or, for a run labelled
    by a CSV it named (``folder:PATH/train.csv``), the CSV of the same name in it (``data_dir`` may name the CSV)."""
    own, where = Path(dataset[len(FOLDER_PREFIX):]), Path(data_dir).expanduser()
    if own.suffix.lower() == ".csv" and where.is_dir():
        where = where / own.name
    return FOLDER_PREFIX + str(where)


def refuse_writing_into(dataset: str, path: str | Path, what: str) -> None:
    """Refuse ``path`` (a run or sweep folder, a plot) inside a ``folder:`` dataset's images, before anything is
    written: the folder itself or any folder a class reaches through a link. Its next load would take the files
    for images of a class (a run folder for a class of its own), and cnnlab never writes into a data folder.

    Args:
        what: how the line names ``path``, e.g. ``"--out"``.
    """
    if not dataset.startswith(FOLDER_PREFIX):
        return
    root = Path(dataset[len(FOLDER_PREFIX):]).expanduser().resolve()
    if root.is_file():  # a CSV named: its images are under its folder
        root = root.parent
    target = Path(path).expanduser().resolve()
    inside = target.is_relative_to(root)
    if not inside and root.is_dir():  # class folders linked from elsewhere hold images too
        seen = set()
        for dirpath, dirnames, _ in os.walk(root, followlinks=True):
            real = os.path.realpath(dirpath)
            if real in seen:  # a link loop: the loader refuses it in its own words
                dirnames[:] = []
                continue
            seen.add(real)
            if target.is_relative_to(real):
                inside = True
                break
    if inside:
        raise CnnlabError(f"{what} {target} lies inside the data folder {root}, where its files would become images "
                          f"of a class; expected a path outside it (cnnlab never writes into a data folder)")


def _passed_over(name: str) -> bool:
    """Whether a folder named ``name`` holds no pictures of a class: a hidden one, or the ``__MACOSX`` a Mac's zip
    adds, whose AppleDouble ``._NAME`` files keep each file's Finder metadata (it was refused as a class without
    images)."""
    return name.startswith(".") or name == "__MACOSX"


def _subfolders(folder: Path) -> list[Path]:
    try:
        return sorted(p for p in folder.iterdir() if p.is_dir() and not _passed_over(p.name))
    except OSError as e:
        raise DataError(f"{folder}: cannot list the folder ({e.strerror or e})") from e


def _csv_hint(path: Path, train_dir: Path) -> str:
    """The end of the line refusing ``folder:path`` without class subfolders, where CSVs lie that could label it."""
    named = csvs_to_name(path, train_dir)
    return named and f", or images labelled by a CSV named as the dataset: {named}"


def csvs_to_name(path: Path, *inside: Path) -> str:
    """How to name a CSV that labels the images of ``folder:path`` where CSVs lie at its top level (or in the folders
    ``inside`` it), which are read only where named (a contest's ``train.csv`` beside ``train/``; only ``labels.csv``
    and ``metadata.csv`` are read unnamed): ``folder:PATH/NAME.csv (here: train.csv, ...)``, or '' without any."""
    try:
        found = sorted({p for folder in (path, *inside) for p in folder.iterdir()
                        if p.suffix.lower() == ".csv" and p.is_file()})
    except OSError:  # a refusal that gives this hint says what it can without it
        return ""
    if not found:
        return ""
    shown = ", ".join(str(p.relative_to(path)) for p in found[:3]) + (", ..." if len(found) > 3 else "")
    return f"folder:{path}/NAME.csv (here: {shown})"


def _scan(split_dir: Path, known: tuple[str, ...] | None,
          hint: Callable[[], str] = str) -> tuple[tuple[str, ...], list[_File], list[Path]]:
    """The classes of ``split_dir``, its image files (sorted by class, then path) and the other files; ``hint()``
    ends the line that refuses a folder without class subfolders (asked only then: it lists folders)."""
    class_dirs = _subfolders(split_dir)
    if not class_dirs:
        loose = sum(1 for p in split_dir.iterdir() if p.suffix.lower() in picture_extensions())
        found = f"found {loose} image(s) directly in it" if loose else "found none"
        raise DataError(f"{split_dir}: no class subfolders, {found}; expected {split_dir}/<class>/<image>{hint()}")
    classes = tuple(d.name for d in class_dirs) if known is None else known
    # Names match in their composed Unicode form: macOS writes "é" decomposed (NFD), most other systems composed, so
    # a test/ copied from elsewhere names the same classes with other code points.
    labels: dict[str, int] = {}
    for i, c in enumerate(classes):
        first = labels.setdefault(unicodedata.normalize("NFC", c), i)
        if first != i:
            raise DataError(f"{split_dir}: class folders {classes[first]!r} and {c!r} are one name written in two "
                            f"Unicode forms (composed and decomposed); expected one folder per class")
    files, ignored = [], []
    for d in class_dirs:
        label = labels.get(unicodedata.normalize("NFC", d.name))
        if label is None:
            raise DataError(f"{d}: class {d.name!r} is not among the training classes ({', '.join(classes)})")
        images, other = _walk(d)
        if not images:
            raise DataError(f"{d}: class {d.name!r} has no images (expected files ending in "
                            f"{', '.join(picture_extensions())}){unread_photos_note(other)}")
        ignored += other
        files += [_file(p, label) for p in images]
    return classes, files, ignored


def _file(path: Path, label: int) -> _File:
    try:
        st = path.stat()
    except OSError as e:  # a dangling link, or one that points at itself (ELOOP)
        raise DataError(f"{path}: cannot read ({e.strerror or e}); remove it or fix the link") from e
    return _File(path, st.st_size, st.st_mtime_ns, label, st.st_ctime_ns)


def _walk(class_dir: Path) -> tuple[list[Path], list[Path]]:
    """Image files under ``class_dir`` (links followed, sorted) and the other files; refuses link loops."""
    seen, images, other = set(), [], []

    def onerror(e: OSError) -> None:
        raise DataError(f"{e.filename}: cannot list the folder ({e.strerror or e})")

    for dirpath, dirnames, filenames in os.walk(class_dir, followlinks=True, onerror=onerror):
        real = os.path.realpath(dirpath)
        if real in seen:
            raise DataError(f"{dirpath}: symlink loop (leads back to {real}); remove the link")
        seen.add(real)
        dirnames[:] = sorted(d for d in dirnames if not _passed_over(d))
        for f in sorted(filenames):
            if f.startswith("."):
                continue
            if f.lower().endswith(picture_extensions()):
                images.append(Path(dirpath, f))
            else:
                other.append(Path(dirpath, f))
    return images, other


def _cache_key(root: Path, files: list[_File], options: dict) -> str:
    prefix = str(root) + os.sep  # string slicing: Path.relative_to is slow over 100,000 files
    listing = [[str(f.path).removeprefix(prefix), f.size, f.mtime_ns, f.ctime_ns, f.label] for f in files]
    text = json.dumps({"root": str(root), "options": options, "files": listing}, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:32]


def _hold_out(listing: _Listing, share: float) -> tuple[list[_File], list[_File], str]:
    """The listing's training files parted into (training, test) by the seeded, stratified draw of ``share`` (a
    fraction, a number of images, or 0 for no test split), and a note."""
    files, root, csv_file = listing.train, listing.root, listing.csv
    absent = f"no test or val rows in {csv_file.name}" if csv_file else \
        f"no {'/ or '.join(HELD_OUT_NAMES)}/ folder"
    if share == 0:
        return files, [], f"no test split ({absent}; --test-split 0: every image trains or validates)"
    labels = torch.tensor([f.label for f in files])
    try:
        train_idx, test_idx = stratified_split(labels, share, seed=HOLDOUT_SEED, name="test-split")
    except CnnlabError as e:
        remedy = f"a split column of test rows in {csv_file.name}" if csv_file else f"a {root}/test/<class>/ folder"
        # the share asked for may be the fault (--test-split 0.001 draws none), not the folder's size
        cannot = "are too few to hold out a test split" if share == HOLDOUT else \
            f"cannot hold out --test-split {shown_share(share)}"
        raise DataError(f"{root}: {absent} and {len(files)} images {cannot} ({e}); add images or {remedy}, or pass "
                        f"another --test-split") from e
    drawn = "1/6 of the images" if share == HOLDOUT else \
        f"{shown_share(share)} of the images" if share < 1 else f"{len(test_idx)} images"
    note = f"test split: a seeded stratified {drawn} held out ({absent})"
    return [files[i] for i in train_idx.tolist()], [files[i] for i in test_idx.tolist()], note


def _identity(root: Path, files: list[_File], classes: tuple[str, ...] | None = None) -> tuple[int, str]:
    """(count, a hash of the sorted paths relative to ``root``): which files a split holds; with ``classes``, each
    path followed by its class name (a CSV's labels, which the paths do not hold)."""
    prefix = str(root) + os.sep
    text = "\n".join(sorted(str(f.path).removeprefix(prefix) + ("" if classes is None else f"\t{classes[f.label]}")
                            for f in files))
    # surrogateescape: a name that is not UTF-8 (Latin-1 from an old archive) is held by Python as lone surrogates
    return len(files), hashlib.sha256(text.encode("utf-8", "surrogateescape")).hexdigest()[:16]


# -- decoding --------------------------------------------------------------------------------------------------
class _BadImage(Exception):
    pass


def _open(path: Path, data: bytes | None = None):
    """``path`` opened as an image (its header read), or ``data``, its bytes read already."""
    try:  # a .png that is an icon is not decoded to be opened
        source = path if data is None else data
        img = Image.open(path if data is None else io.BytesIO(data), formats=picture_formats(source))
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as e:
        # no opener took it: a HEIF file's line says why (corrupt, or pillow-heif not importable)
        heif = heif_unopened(source, str(path)) if isinstance(e, UnidentifiedImageError) else None
        raise _BadImage(heif or f"{path}: not a readable image ({type(e).__name__}: {e})") from e
    try:  # a DNG named .tif: its preview would be trained on as the photo
        refuse_raw_tiff(img, str(path))
    except CnnlabError as e:
        img.close()
        raise _BadImage(str(e)) from None
    return img


def _is_grey(img, path: Path) -> bool:
    """Whether ``img`` holds grey pixels: a grey mode or palette, or RGBA with R == G == B everywhere.

    Only RGBA files are decoded here (grey saved with an alpha channel is common, and its mode says RGB), to the
    pixels the folder decodes (a 10-bit HEIF photo's rounded, :func:`cnnlab.picture.heif_in_8_bits`); RGB, CMYK and
    the other colour modes are judged by their mode, so a set of photos is not decoded twice.
    """
    if img.mode in _GREY_MODES:
        return True
    if img.mode in ("P", "PA"):
        palette = img.getpalette() or []
        return all(palette[i] == palette[i + 1] == palette[i + 2] for i in range(0, len(palette) - 2, 3))
    if img.mode == "RGBA":
        try:
            pixels = np.asarray(heif_in_8_bits(img))
        except (OSError, ValueError, SyntaxError) as e:
            raise _BadImage(f"{path}: cannot decode ({type(e).__name__}: {e})") from e
        return bool((pixels[..., 0] == pixels[..., 1]).all() and (pixels[..., 1] == pixels[..., 2]).all())
    return False


def _decode(path: Path, size: tuple[int, int], channels: int, fit: Fit | None = None) -> tuple[np.ndarray, bytes]:
    """One image as uint8 ``channels x height x width`` (centre-cropped, or framed as ``fit`` says where one is
    given), and a digest of the file's bytes (read once for both)."""
    try:
        data = path.read_bytes()
    except OSError as e:
        raise _BadImage(f"{path}: not readable ({type(e).__name__}: {e})") from e
    with _open(path, data) as img:
        try:
            array = centre_crop(img, size, channels) if fit is None else \
                as_its_library_feeds(img, *size, channels, fit)
        except PixelRangeError as e:
            raise _BadImage(f"{path}: {e}") from e
        except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as e:
            raise _BadImage(f"{path}: cannot decode ({type(e).__name__}: {e})") from e
    return array[None] if channels == 1 else array.transpose(2, 0, 1), _content_digest(data)


def _content_digest(data: bytes) -> bytes:
    """A file's bytes (``data``) as :attr:`ImageDataset.training_bytes` hashes each training file."""
    return hashlib.blake2b(data, digest_size=16).digest()


def _training_bytes(files: list[_File]) -> str:
    """:attr:`ImageDataset.training_bytes` of the training ``files``, every one decoded, in the split's order."""
    contents = hashlib.sha256()
    for f in files:
        contents.update(_content_digest(f.path.read_bytes()))
    return contents.hexdigest()[:16]


def _survey(files: list[_File], skip_bad: bool, bad: list[str]) -> tuple[list[_File], list[int], list[_File]]:
    """Read every header: (the files that opened, their shorter sides, the colour ones); why each file that did not
    open was skipped is appended to ``bad``."""
    kept, sides, colour = [], [], []
    for f in files:
        try:
            with _open(f.path) as img:
                side, grey = min(img.size), _is_grey(img, f.path)
        except _BadImage as e:
            if not skip_bad:
                raise DataError(f"{e} ({SKIP_HINT})") from None
            bad.append(str(e))
            continue
        kept.append(f)
        sides.append(side)
        if not grey:
            colour.append(f)
    return kept, sides, colour


def _channels(colour: list[_File], n: int, notices: list[str]) -> int:
    """1 when more than half of the ``n`` files are grey (the colour ones converted, which a notice says), else 3."""
    if 2 * len(colour) >= n:
        return 3
    if colour:
        notices.append(f"read as grey (1 channel): {len(colour)} of {n} images are in colour (e.g. {colour[0].path}) "
                       "and are converted to grey, as the other images are grey; pass --channels 3 to keep colour")
    return 1


def _check_enlarged(root: Path, n: int, chans: int, hw: tuple[int, int], own: int) -> None:
    """Refuse an ``image_size`` (``hw``) above the images' own (median) size whose decoded set exceeds the cap."""
    (height, width), size = hw, max(hw)
    nbytes = n * chans * height * width
    if size <= own or nbytes <= MAX_ENLARGED_BYTES:
        return
    fits = math.isqrt(MAX_ENLARGED_BYTES // (n * chans))
    raise DataError(f"--image-size {size} enlarges the {n} images of {root} (median shorter side {own} px) to a "
                    f"decoded cache of {format_bytes(nbytes)} ({n} x {chans} x {height} x {width} bytes), over the "
                    f"limit of {format_bytes(MAX_ENLARGED_BYTES)} for enlarged images; pass a smaller --image-size "
                    f"(at most {fits}), or --resize {size} to enlarge each batch on the device instead")


def _decode_all(cache: Path, key: str, name: str, root: Path, classes: tuple[str, ...],
                splits: dict[str, list[_File]], image_size: int | tuple[int, int] | None, channels: int | None,
                skip_bad: bool, notes: list[str], identity: tuple, fit: Fit | None = None,
                cap: int = MAX_DEFAULT_SIZE, below: str | None = None) -> ImageDataset:
    """Decode the ``splits`` ("train", "test", "val": stored in that order, "val" possibly empty) into the cache, at
    ``image_size``, else at the images' median shorter side up to ``cap``: under ``key``, or, where that side is
    below 224, under ``below`` (the key of the side chosen up to 224)."""
    total, bad, notices = sum(map(len, splits.values())), [], []
    sides, colour = [], []
    for split, files in splits.items():
        splits[split], more_sides, more_colour = _survey(files, skip_bad, bad)
        sides += more_sides
        colour += more_colour
    none_drawn = identity[0] is not None and identity[0][0] == 0  # test_split=0: a test split asked to be none
    for split, what in (("train", "training"), ("test", "test")):
        if not splits[split] and not (split == "test" and none_drawn):
            raise DataError(f"{root}: no readable images in the {what} split")
    count = sum(map(len, splits.values()))
    own = int(statistics.median_low(sides))
    hw = as_hw(image_size or min(own, cap))
    if below is not None and own < MAX_DEFAULT_SIZE:
        key = below
    chans = channels or _channels(colour, count, notices)
    _check_enlarged(root, count, chans, hw, own)
    item = chans * hw[0] * hw[1]
    labels: dict[str, list[int]] = {split: [] for split in splits}
    digests: dict[str, list[tuple[bytes, Path]]] = {split: [] for split in splits}
    contents = hashlib.sha256()  # the training files' bytes, as decoded: what a resume holds the folder to

    def fill(array: np.ndarray) -> int:
        at = 0
        for split, files in splits.items():
            for f in files:
                try:
                    pixels, content = _decode(f.path, hw, chans, fit)
                except _BadImage as e:
                    if not skip_bad:
                        raise DataError(f"{e} ({SKIP_HINT})") from None
                    bad.append(str(e))
                    continue
                array[at:at + item] = pixels.reshape(-1)
                digests[split].append((image_digest(pixels), f.path))
                if split == "train":
                    contents.update(content)
                labels[split].append(f.label)
                at += item
        return at

    data_file = cache / f"{key}.u8"
    write_raw(data_file, item * count, fill)
    for split, what in (("train", "training"), ("test", "test"), ("val", "validation")):
        if splits[split] and not labels[split]:
            data_file.unlink(missing_ok=True)
            raise DataError(f"{root}: no decodable images in the {what} split")
    stored = b"".join(digest for pairs in digests.values() for digest, _ in pairs)  # train, test, val, as the array
    atomic_write(cache / f"{key}.digests", lambda tmp: Path(tmp).write_bytes(stored))
    _write_names(cache / f"{key}.names", root, [path for pairs in digests.values() for _, path in pairs])
    n_train, decoded = len(labels["train"]), sum(map(len, labels.values()))
    images = open_raw(data_file, (decoded, chans, *hw))
    mean, std = channel_stats(images[:n_train])
    if bad:
        notes.append(f"skipped {len(bad)} unreadable file(s)")
        notices.append(f"skipped {len(bad)} unreadable image(s) of {total} (first: {bad[0]})")
    notices += _seen_in_training(root, digests)
    meta = {"format": FORMAT, "shape": [decoded, chans, *hw], "n_train": n_train,
            "classes": list(classes), "train_labels": labels["train"], "test_labels": labels["test"],
            "val_labels": labels["val"] if splits["val"] else None,
            "mean": list(mean), "std": list(std), "notes": notes, "notices": notices,
            "training_bytes": contents.hexdigest()[:16]}
    write_json(cache / f"{key}.json", meta)  # written last: its presence marks a complete entry
    return _dataset(name, root, images, meta, data_file, identity, _digest_rows(stored, decoded),
                    cache / f"{key}.names")


def _seen_in_training(root: Path, digests: dict[str, list[tuple[bytes, Path]]]) -> list[str]:
    """A notice for each held-out split with images whose decoded pixels are a training image's (a test/ linked to
    train/, say), the files named relative to ``root``."""
    named = {split: [(digest, _relative(root, path)) for digest, path in pairs] for split, pairs in digests.items()}
    notices = [seen_in_training(named["train"], named[split], what)
               for split, what in (("test", "test"), ("val", "validation"))]
    return [line for line in notices if line]


@dataclass(frozen=True)
class _Stored:
    """The files a cache entry was decoded from, as listed now: its ``training`` split, and ``every`` file in the
    order the entry stores them (training, test, validation), each as its key names it."""

    training: list[_File]
    every: list[_File]


def _read_cache(cache: Path, key: str, name: str, root: Path, identity: tuple,
                files: _Stored) -> ImageDataset | None:
    """The cache entry ``key`` as a dataset, None where there is none (or a damaged one). ``files``: those it was
    decoded from, whose training files' bytes are hashed once into an entry cached before they were kept, and whose
    names are written once beside an entry cached before they were."""
    meta_file, data_file = cache / f"{key}.json", cache / f"{key}.u8"
    try:
        meta = json.loads(meta_file.read_text())
        if meta.get("format") != FORMAT:
            return None
        images = open_raw(data_file, tuple(meta["shape"]))
        digests = _digest_rows((cache / f"{key}.digests").read_bytes(), meta["shape"][0])
        # An entry cached before the training files' bytes were hashed (every folder decoded before) would give a
        # run started on it no hash to hold its resume to. Its key holds each file's size and times, so the files
        # hold what was decoded: hashed now, where none was skipped as unreadable (which ones were is not kept).
        if "training_bytes" not in meta and meta["n_train"] == len(files.training):
            meta["training_bytes"] = _training_bytes(files.training)
            with contextlib.suppress(OSError):  # a cache that is not ours to write: hashed at each load
                write_json(meta_file, meta)
    except (OSError, ValueError, KeyError, TypeError, DataError):  # absent, or a damaged entry: decode again
        return None
    names_file = cache / f"{key}.names"
    # An entry cached before its files' names were kept is not decoded again for them: where none of its files was
    # skipped as unreadable, the files listed now are its images, in its order (its key holds each one's size and
    # times); else which were skipped is not kept, and its images are named by index.
    named = names_file.exists()
    if not named and meta["shape"][0] == len(files.every):
        with contextlib.suppress(OSError):  # a cache that is not ours to write: named by index
            _write_names(names_file, root, [f.path for f in files.every])
            named = True
    return _dataset(name, root, images, meta, data_file, identity, digests, names_file if named else None)


def _write_names(names_file: Path, root: Path, paths: list[Path]) -> None:
    """Keep the files an entry's images were decoded from, relative to ``root``, in the images' order: NUL apart (a
    character no path holds), written before the entry's JSON marks it complete."""
    text = "\0".join(_relative(root, path) for path in paths)
    atomic_write(names_file, lambda tmp: Path(tmp).write_bytes(text.encode("utf-8", "surrogateescape")))


def _relative(root: Path, path: Path) -> str:
    """``path`` relative to ``root``, which holds it."""
    return str(path).removeprefix(str(root) + os.sep)  # string slicing: os.path.relpath is slow over 100,000 files


def _file_names(names_file: Path, folder: str, counts: tuple[int, int], *splits: str) -> list[str]:
    """:attr:`ImageDataset.file_names` of an entry: the files of ``splits``, one after another, as ``names_file``
    keeps them (read once for them all), after the ``folder``'s name; none where the file has gone since (a cache
    cleared), and the images are named by index."""
    try:
        listed = names_file.read_bytes().decode("utf-8", "surrogateescape").split("\0")
    except OSError:
        return []
    n_train, n_test = counts
    where = {"train": (0, n_train), "test": (n_train, n_train + n_test), "val": (n_train + n_test, None)}
    return [f"{folder}/{name}" for split in splits for name in listed[slice(*where[split])]]


def _fit_word(fit: Fit) -> str:
    """The cache key's word for ``fit``: what decides the pixels. A :class:`~cnnlab.picture.ShorterSide`'s ``said``
    (the page's words for who says so: a preprocessor_config.json, timm's pretrained_cfg, torchvision's transforms())
    does not, so it is left out: the same framing read from another file decodes the same pixels, and the entries
    written before a fit had those words keep their key."""
    if isinstance(fit, ShorterSide):
        squash = ", squash=True" if fit.squash else ""  # the key of every other framing as it was
        return f"ShorterSide(length={fit.length!r}, resample={fit.resample!r}, floor={fit.floor!r}{squash})"
    return repr(fit)


def default_cap(input_side: int | None) -> int:
    """The largest side a folder is decoded at without ``image_size``, for a model whose input is ``input_side`` px
    (None: not known): :data:`MAX_DEFAULT_SIZE`, or that side where it is larger.

    Photos stored at 224 px and enlarged to a 384-px input (EfficientNetV2-S) give the network none of the detail its
    weights were trained on; a model of at most 224 px (the book's, most backbones) keeps 224, and so every image and
    cache entry it had.
    """
    return max(MAX_DEFAULT_SIZE, input_side or 0)


def _chosen_size(cap: int) -> str:
    """The cache key's word for a side left to the loader: the images' median shorter side, up to ``cap``
    (:func:`default_cap`; the word of :data:`MAX_DEFAULT_SIZE` is the one every entry had before caps differed)."""
    return f"median, at most {cap}"


def _read_as_chosen(cache: Path, root: Path, files: list[_File], options: dict, cap: int, name: str,
                    identity: tuple, stored: _Stored) -> ImageDataset | None:
    """The cache entry of the same files whose side or channel count the loader chose, where it chose what
    ``options`` now ask for (the same pixels: each file is decoded by the side and the channel count alone); None
    where there is none. ``cap``: :func:`default_cap` of the model the images are for.

    A run leaves them to the loader; eval of its export asks for both, as its input takes them, and decoded the
    whole folder again into a second entry of the same pixels (gigabytes, and minutes, for a folder of photos).
    """
    size, channels = options["image_size"], options["channels"]
    caps = [cap]
    if isinstance(size, int):  # a side asked: a run under another cap may have chosen it, and an export of a run of a
        # 384-px model, read as a model from elsewhere (no model named), asks for the 384 its photos were chosen at
        caps += [c for c in (MAX_DEFAULT_SIZE, size) if c >= MAX_DEFAULT_SIZE and c not in caps]
    elif cap != MAX_DEFAULT_SIZE:  # images chosen below 224 are chosen so under any cap: a 224 model's run's entry
        caps.append(MAX_DEFAULT_SIZE)
    alike = [{**options, "channels": None}]
    for chosen_size in map(_chosen_size, caps):
        alike += [{**options, "image_size": chosen_size}, {**options, "image_size": chosen_size, "channels": None}]
    for other, chosen in {_cache_key(root, files, o): o for o in alike if o != options}.items():
        data = _read_cache(cache, other, name, root, identity, stored)
        if data is None:
            continue
        shape = tuple(data.train_images.shape[1:])
        if isinstance(size, str):  # a side left to the loader: the one it chose, under this cap or below any
            same = chosen["image_size"] == size or max(shape[1:]) < MAX_DEFAULT_SIZE
        else:
            same = shape[1:] == as_hw(size)
        if (channels is None or shape[0] == channels) and same:
            return data
    return None


def _digest_rows(stored: bytes, count: int) -> torch.Tensor:
    """The ``count`` x 16 digests of an entry's images from their stored bytes."""
    if len(stored) != 16 * count:  # a file cut short, or of another entry: names would pair the wrong images
        raise ValueError(f"{len(stored)} bytes of digests for {count} images")
    return torch.frombuffer(bytearray(stored), dtype=torch.uint8).view(count, 16)


def _dataset(name: str, root: Path, images: torch.Tensor, meta: dict, data_file: Path,
             identity: tuple, digests: torch.Tensor, names_file: Path | None) -> ImageDataset:
    """``identity``: (:attr:`ImageDataset.held_out`, :attr:`ImageDataset.training_files`); ``digests``: one row per
    image of ``images``; ``names_file``: the entry's file names (:func:`_write_names`), or None where not known."""
    n_train, n_test, val = meta["n_train"], len(meta["test_labels"]), meta.get("val_labels")
    notes = list(meta["notes"])
    mapped = is_memory_mapped(images)  # open_raw's choice: over in_memory_limit(), or a reader's (mapped_reads)
    if mapped and images.nbytes > in_memory_limit():
        notes.append(f"memory-mapped from {data_file} ({format_bytes(images.nbytes)} decoded, over the in-memory "
                     f"limit of {format_bytes(in_memory_limit())})")
    counts = f"{n_train} training, {len(val)} validation and {n_test} test" if val is not None else \
        f"{n_train} training and {n_test} test"
    description = f"{counts} images from {root}; " + "; ".join(notes)
    return ImageDataset(name, images[:n_train], torch.tensor(meta["train_labels"], dtype=torch.int64),
                        images[n_train:n_train + n_test], torch.tensor(meta["test_labels"], dtype=torch.int64),
                        tuple(meta["classes"]), tuple(meta["mean"]), tuple(meta["std"]), flip=True,
                        description=description, memory_mapped=mapped, held_out=identity[0],
                        training_files=identity[1],
                        val_images=None if val is None else images[n_train + n_test:],
                        val_labels=None if val is None else torch.tensor(val, dtype=torch.int64),
                        notices=tuple(meta.get("notices", ())), train_digests=digests[:n_train],
                        test_digests=digests[n_train:n_train + n_test],
                        val_digests=None if val is None else digests[n_train + n_test:],
                        training_bytes=meta.get("training_bytes"),  # None where _read_cache could not hash it
                        file_names=None if names_file is None else
                        functools.partial(_file_names, names_file, root.name or str(root), (n_train, n_test)))


register_dataset(FOLDER_PREFIX + "PATH", load_folder, classes=None, channels=None, image_size=None, train=None,
                 test=None, source="PATH/<class>/* or PATH/train|test|val/<class>/*, or images labelled by "
                                   "PATH/labels.csv, PATH/metadata.csv or folder:PATH/NAME.csv (any common image "
                                   "format, decoded once at the images' median shorter side, at most 224 px or "
                                   "the input side where larger (--resize, else the model's), or at --image-size; "
                                   "without test/ or val/, a seeded stratified 1/6, or --test-split's share, is held "
                                   "out)", flip=True)
