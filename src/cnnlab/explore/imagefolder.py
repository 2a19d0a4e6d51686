"""Your own images for the explorer: a flat folder of pictures, class subfolders that give their labels, or pictures
labelled by a CSV file as ``folder:PATH`` reads it (``PATH/labels.csv`` or ``PATH/metadata.csv`` beside no class
subfolders, or the CSV named: ``--images PATH/train.csv``; :mod:`cnnlab.data.labels_csv`). A split layout
(``PATH/train/<class>/`` beside ``PATH/test/<class>/``, or any other spelling ``folder:PATH`` takes:
:func:`cnnlab.data.folder.split_folders`, the one reading of it) shows its held-out split, ``test/`` (else ``val/``):
the images a model trained on the folder did not see, labelled by their class subfolders (a flat ``test/``, as
Kaggle's unlabelled one, unlabelled); a notice names the training folder, which ``--images`` shows when named.

Each file is decoded as an upload is (:func:`cnnlab.picture.read_picture` with the upload limits of
:mod:`cnnlab.explore.images`: 64 MiB and ``cnnlab predict``'s pixel bound, checked from the header before decoding, so
a decompression bomb is refused cheaply), to the model's channels, height and width (a picture letterboxed to a
shape of its own, Ultralytics' minimum rectangle, is kept on the grey of the whole input, and fed as it was read:
:meth:`ImageSet.fed`). At most ``MAX_IMAGES`` files
are read (sorted by path), so a folder of a whole dataset opens in seconds; the page says how many there were.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import torch

from cnnlab.data.folder import SKIP_HINT, find_labels_csv, read_csv_labels, split_folders
from cnnlab.data.labels_csv import NoLabelColumnError, class_order, unread_note
from cnnlab.errors import CnnlabError
from cnnlab.explore.images import MAX_UPLOAD_BYTES, MAX_UPLOAD_PIXELS
from cnnlab.picture import (
    LETTERBOX_GREY,
    PAD,
    Fit,
    as_hw,
    listed_picture,
    read_picture,
    unread_photos_note,
)

MAX_IMAGES = 200


@dataclass(frozen=True)
class ImageSet:
    """The images of a folder at one model's input.

    Attributes:
        images: uint8 ``N x C x S x S`` (a picture read at a shape of its own in the middle of grey 114, the
            thumbnail's; :meth:`fed` gives it as the model is fed it).
        names: each file's path relative to the folder (a CSV's own folder).
        labels: each file's class subfolder or CSV label, or None in a flat folder.
        classes: the class subfolders or the CSV's labels (sorted as ``folder:PATH`` sorts them), empty for a flat
            folder.
        found: how many image files the folder holds (``len(names)`` is at most ``MAX_IMAGES``).
        skipped: ``"name: reason"`` of each file left out as unreadable (``skip_bad``).
        notices: what the listing passed over: a CSV's images it does not name and its repeated rows, a CSV not read
            beside class subfolders (:meth:`cnnlab.data.labels_csv.Labels.notices`).
        shapes: each image's ``(top, left, height, width)`` within ``S x S`` where it was read at a shape of its own
            (Ultralytics' minimum rectangle, :class:`cnnlab.picture.Letterbox`), None where it is the whole; empty
            where none was.
    """

    images: torch.Tensor
    names: tuple[str, ...]
    labels: tuple[str | None, ...]
    classes: tuple[str, ...]
    found: int
    skipped: tuple[str, ...] = ()
    notices: tuple[str, ...] = ()
    shapes: tuple[tuple[int, int, int, int] | None, ...] = ()

    def fed(self, index: int) -> torch.Tensor:
        """Image ``index`` as the model is fed it: as read, at a shape of its own where it has one (:attr:`shapes`)."""
        place = self.shapes[index] if self.shapes else None
        if place is None:
            return self.images[index]
        top, left, height, width = place
        return self.images[index][:, top:top + height, left:left + width]


class Listing(NamedTuple):
    """The image files of ``--images`` before any is read (:func:`list_images`).

    Attributes:
        files: ``(file, class or None)`` of each picture, sorted by path.
        classes: the classes, empty for a flat folder.
        root: the folder the files' names are relative to (a CSV's own folder).
        notices: what the listing passed over (:attr:`ImageSet.notices`).
    """

    files: list[tuple[Path, str | None]]
    classes: tuple[str, ...]
    root: Path
    notices: tuple[str, ...] = ()


def list_images(folder: str | Path) -> Listing:
    """The pictures of a flat folder, of its class subfolders (one level), or labelled by a CSV, and the classes; of a
    split layout (``train/<class>/`` beside ``test/<class>/``, as ``folder:PATH`` reads it), the held-out split's.

    A ``labels.csv`` or ``metadata.csv`` found beside the pictures (not named) that has no file or label column is
    no table of labels (a photo tool's): it is passed over, which a notice says, and the pictures shown unlabelled.

    Raises:
        CnnlabError: not a folder or a CSV file, no images, images both at the top and in class subfolders, or a CSV
            that ``folder:PATH`` refuses (one line).
    """
    folder = Path(folder)
    named_csv = folder.suffix.lower() == ".csv" and folder.is_file()
    if not folder.is_dir() and not named_csv:
        raise CnnlabError(f"--images {folder} is not a folder (expected a folder of images, or of class "
                          "subfolders of images, or a CSV file that labels them)")
    csv_file, unread = find_labels_csv(folder.resolve())
    notices = [unread_note(unread)]
    if csv_file is not None:  # read as training reads it, so that the page shows the labels a run trained on
        try:
            labels = read_csv_labels(csv_file)
        except NoLabelColumnError as e:
            if named_csv:
                raise
            # labels are optional here, as they are not to training: the pictures were shown before CSVs were read
            notices.append(f"{csv_file.name} is not read as labels: {e}; the pictures are shown without labels")
        else:
            rows = sorted((path, label) for path, label, _ in labels.rows)
            return Listing(rows, tuple(class_order({label for _, label in rows})), csv_file.parent,
                           labels.notices(csv_file))
    train, held, _ = split_folders(folder)
    shown = held or train
    if held is not None:  # the images a model of this folder did not train on
        notices.append(f"showing the {held.name}/ split, the held-out images (--images {train} shows the training "
                       f"ones)")
    files, classes = _pictures_of(shown)
    if held is not None and classes:  # the training classes, as folder:PATH has them: they name the model's outputs
        classes = tuple(sorted(_class_names(train) | set(classes)))
    return Listing(files, classes, folder, tuple(filter(None, notices)))


def _pictures_of(folder: Path) -> tuple[list[tuple[Path, str | None]], tuple[str, ...]]:
    """``(file, class or None)`` of each picture of a flat folder or of its class subfolders, and the classes."""
    flat = _pictures(folder)
    subfolders = _subfolders(folder)
    nested = [(p, d.name) for d in subfolders for p in _pictures(d)]
    if nested and flat:
        # Either layout alone is unambiguous; mixed, one of the two sets would be dropped without a word (the loose
        # images have no class), so the user says which one is meant.
        n_classes = len({c for _, c in nested})
        raise CnnlabError(f"--images {folder} mixes {len(flat)} image{'s' if len(flat) != 1 else ''} at the top with "
                          f"{n_classes} class subfolder{'s' if n_classes != 1 else ''} of images; expected either a "
                          "flat folder of images or class subfolders only (move the loose images into a subfolder, "
                          "or point --images at one of the two)")
    if nested:
        classes = tuple(sorted({c for _, c in nested}))
        return [(p, d.name) for d in subfolders if d.name in classes for p in _pictures(d, refused=True)], classes
    if not flat:
        files = [*folder.iterdir(), *(p for d in subfolders for p in d.iterdir())]
        raise CnnlabError(f"--images {folder} holds no images (expected .png, .jpg, .jpeg, ... files, "
                          f"or class subfolders of them){unread_photos_note(files)}")
    return [(p, None) for p in _pictures(folder, refused=True)], ()


def _class_names(folder: Path) -> set[str]:
    """The class subfolders of ``folder``: those with pictures directly inside."""
    return {d.name for d in _subfolders(folder) if _pictures(d)}


def _subfolders(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))


def _pictures(d: Path, refused: bool = False) -> list[Path]:
    """The pictures directly inside ``d``, sorted; with ``refused``, the photos not read here beside them too
    (:func:`cnnlab.picture.listed_picture`), so that each is said (with how to read it) rather than passed over."""
    return sorted(p for p in d.iterdir() if p.is_file() and listed_picture(p, refused))


def read_image_folder(folder: str | Path, channels: int, size: int | tuple[int, int], limit: int = MAX_IMAGES,
                      skip_bad: bool = False, listing=None, crop: bool = False, fit: Fit = PAD) -> ImageSet:
    """The first ``limit`` images of ``folder`` as uint8 ``channels x size x size``, or ``channels x height x width``
    for a ``size`` of ``(height, width)`` (see the module docstring).

    With ``skip_bad`` (``--skip-bad-images``, as for ``cnnlab train``), a file that cannot be read is left out and
    named in ``skipped``, and the rest are shown. ``listing``: what :func:`list_images` gave for ``folder`` already.
    ``crop``: centre-crop each picture as a folder of training images was (:func:`cnnlab.picture.read_picture`);
    ``fit``: else how each is given the model's shape (the same function's).

    Raises:
        CnnlabError: not a folder, no images, images both at the top and in class subfolders, or a file that is too
            large, a decompression bomb or not an image (named, one line; with ``skip_bad``, only when no file of
            the chosen ones can be read).
    """
    if channels not in (1, 3):
        raise CnnlabError(f"images can feed models of 1 or 3 input channels, this model takes {channels}")
    files, classes, root, notices = listing if listing is not None else list_images(folder)
    chosen = files[:limit] if not classes else _balanced(files, classes, limit)
    kept, images, shapes, skipped = [], [], [], []
    for p, label in chosen:
        name = p.relative_to(root).as_posix()
        try:
            image, place = _in_input(read_picture(p, name=f"image {name}", channels=channels, size=size, invert=False,
                                                  max_bytes=MAX_UPLOAD_BYTES, max_pixels=MAX_UPLOAD_PIXELS,
                                                  crop=crop, fit=fit), as_hw(size))
        except CnnlabError as e:
            if not skip_bad:  # said as train says it of a folder: the whole page waits on this one file
                raise CnnlabError(f"{e} ({SKIP_HINT})") from None
            skipped.append(str(e))
            continue
        kept.append((name, label))
        images.append(image)
        shapes.append(place)
    if not images:
        raise CnnlabError(f"--images {folder}: none of its {len(chosen)} images could be read (first: "
                          f"{skipped[0]})")
    return ImageSet(torch.stack(images), tuple(n for n, _ in kept), tuple(c for _, c in kept), classes, len(files),
                    tuple(skipped), notices, tuple(shapes) if any(shapes) else ())


def _in_input(image: torch.Tensor, hw: tuple[int, int]) -> tuple[torch.Tensor, tuple[int, int, int, int] | None]:
    """A picture read at a shape of its own within the input's ``hw`` (Ultralytics' minimum rectangle), centred on
    grey 114 of the input's shape, so that the folder's images stack (the whole input's letterbox: the rectangle
    lacks a multiple of the stride, half of it each side), and its place there; the picture and None otherwise."""
    height, width = image.shape[-2:]
    if (height, width) == hw:
        return image, None
    top, left = (hw[0] - height) // 2, (hw[1] - width) // 2
    canvas = torch.full((image.shape[0], *hw), LETTERBOX_GREY, dtype=image.dtype)
    canvas[:, top:top + height, left:left + width] = image
    return canvas, (top, left, height, width)


def _balanced(files: list[tuple[Path, str | None]], classes: tuple[str, ...], limit: int):
    """Up to ``limit`` files taking from each class in turn, so every class is represented; in the folder's order."""
    by_class: dict[str | None, list[tuple[Path, str | None]]] = {c: [] for c in classes}
    for f in files:  # one pass: a list per class, each over every file, took 1,000 classes x 20,000 files
        by_class[f[1]].append(f)
    chosen: list[tuple[Path, str | None]] = []
    depth = 0
    while len(chosen) < limit and any(len(v) > depth for v in by_class.values()):
        for c in classes:
            if depth < len(by_class[c]) and len(chosen) < limit:
                chosen.append(by_class[c][depth])
        depth += 1
    order = {f: i for i, f in enumerate(files)}
    return sorted(chosen, key=lambda f: order[f])
