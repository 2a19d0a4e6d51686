"""A tiny dataset registry in the model registry's shape: ``load_dataset(name)`` and the `cnnlab datasets` table.

cnnlab's sources register themselves when this module is imported (at its end): the IDX family
(``fashion-mnist``, ``mnist``, ``kmnist``), CIFAR (``cifar10``, ``cifar100``) and ``folder:PATH``, a folder of the
user's own images.
"""

from __future__ import annotations

import difflib
import fnmatch
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from cnnlab.data import DEFAULT_DATASET, FOLDER_PREFIX
from cnnlab.data.dataset import ImageDataset, conform
from cnnlab.errors import CnnlabError
from cnnlab.picture import Fit
from cnnlab.table import text_table

__all__ = ["DatasetInfo", "register_dataset", "list_datasets", "dataset_info", "load_dataset", "datasets_table"]


@dataclass(frozen=True)
class DatasetInfo:
    """What the registry knows about a dataset before loading it (``None``: depends on the files).

    Attributes:
        name: the name ``load_dataset`` takes; ``"folder:PATH"`` stands for any folder.
        loader: ``loader(root, *, image_size, channels, download, skip_bad) -> ImageDataset``; the folder loader
            takes ``test_split`` too.
        classes: number of classes.
        channels: 1 (grey) or 3 (RGB).
        image_size: side of the stored images.
        train: number of training images.
        test: number of test images.
        source: where the files come from (the first download mirror, or the folder).
        flip: whether a horizontal mirror keeps the class (augmentation flips only then).
        section: the paper or book section describing the data.
    """

    name: str
    loader: Callable[..., ImageDataset]
    classes: int | None
    channels: int | None
    image_size: int | None
    train: int | None
    test: int | None
    source: str
    flip: bool
    section: str = ""


_DATASETS: dict[str, DatasetInfo] = {}
# cnnlab's own sources, in the order `cnnlab datasets` lists them (then any a user registers, as registered): each
# registers its datasets when first imported, which may be before this module finishes (when it imports this one).
_SOURCES = ("cnnlab.data.idx_family", "cnnlab.data.cifar", "cnnlab.data.folder")


def register_dataset(name: str, loader: Callable[..., ImageDataset], **info) -> DatasetInfo:
    """Register ``loader`` under ``name`` with the :class:`DatasetInfo` fields in ``info``; returns the entry."""
    if name in _DATASETS:
        raise RuntimeError(f"dataset {name!r} is registered twice")
    _DATASETS[name] = entry = DatasetInfo(name, loader, **info)
    return entry


def list_datasets(pattern: str = "*") -> list[str]:
    """Registered dataset names matching a shell-style ``pattern``: cnnlab's own, then others in registration
    order."""
    return [entry.name for entry in _listed() if fnmatch.fnmatch(entry.name, pattern)]


def _listed() -> list[DatasetInfo]:
    rank = {module: i for i, module in enumerate(_SOURCES)}
    return sorted(_DATASETS.values(), key=lambda entry: rank.get(entry.loader.__module__, len(rank)))


def _key(name: str) -> str:
    return FOLDER_PREFIX + "PATH" if name.startswith(FOLDER_PREFIX) else name


def dataset_info(name: str) -> DatasetInfo:
    """The registry entry for ``name`` (any ``folder:...`` gets the folder entry, its path as the source).

    Raises:
        CnnlabError: an unknown name; the message lists the known ones and the closest match.
    """
    if not isinstance(name, str) or _key(name) not in _DATASETS:
        raise CnnlabError(_unknown(name))
    info = _DATASETS[_key(name)]
    if name.startswith(FOLDER_PREFIX):
        path = name[len(FOLDER_PREFIX):]
        if not path:
            raise CnnlabError("folder: needs a path, e.g. folder:~/pets (PATH/<class>/*.jpg)")
        info = DatasetInfo(name, info.loader, None, None, None, None, None, path, info.flip, info.section)
    return info


def _unknown(name: object) -> str:
    names = list_datasets()
    message = f"unknown dataset {name!r}; expected one of: {', '.join(names)}"
    if isinstance(name, str):
        close = difflib.get_close_matches(name.lower(), names, n=1, cutoff=0.6)
        if close:
            message += f"; did you mean {close[0]!r}?"
        elif os.path.isdir(os.path.expanduser(name)) or \
                name.lower().endswith(".csv") and os.path.isfile(os.path.expanduser(name)):  # the user's own images
            message += f"; did you mean '{FOLDER_PREFIX}{name}'?"
    return message


def load_dataset(name: str = DEFAULT_DATASET, root: str | os.PathLike | None = None, *,
                 image_size: int | tuple[int, int] | None = None, channels: int | None = None, download: bool = True,
                 skip_bad: bool = False, training: bool = True, test_split: float | None = None,
                 fit: Fit | None = None, input_side: int | None = None) -> ImageDataset:
    """Load a registered dataset as an :class:`ImageDataset`.

    Args:
        name: a name from :func:`list_datasets`, or ``"folder:PATH"`` for ``PATH/<class>/*`` images.
        root: the dataset's folder (the CLI's ``--data-dir``); default: ``$CNNLAB_DATA`` for Fashion-MNIST,
            else ``<cache>/<name>`` (``$CNNLAB_CACHE``, else ``~/.cache/cnnlab``). A folder given here is read
            as found and never written to. Not used with ``folder:``.
        image_size: side of the stored square images (default: the dataset's own; folders: see
            :mod:`cnnlab.data.folder`, which also take a ``(height, width)``); other sizes are resized once at load.
        channels: 1 or 3 to convert (default: as the data is).
        download: fetch missing files into the cache folder.
        skip_bad: folders only: skip undecodable image files (counted in the description) instead of refusing.
        test_split: folders without a test split of their own only (elsewhere it has no say): the share (< 1) or
            number (>= 1) of the images drawn as the test split, or 0 for none (default: 1/6; see
            :mod:`cnnlab.data.folder`).
        fit: folders only: each picture framed as a library's predict frames it
            (:func:`cnnlab.picture.as_its_library_feeds`) instead of centre-cropped (None).
        input_side: folders only: the side of the input of the model the images are for; one above 224 px caps the
            side a folder is decoded at without ``image_size`` instead of 224 (:func:`cnnlab.data.folder.default_cap`).
        training: False where only the test (and validation) images are read: a registered dataset converted to
            another ``image_size`` or ``channels`` then leaves its training images out (see
            :func:`~cnnlab.data.dataset.conform`). A folder is read whole either way.

    Raises:
        CnnlabError: an unknown name or a bad option; DataError for missing, corrupt or unexpected files.

    Example:
        >>> data = load_dataset("mnist")  # doctest: +SKIP
        >>> data.train_images.shape, data.classes[:3], data.flip  # doctest: +SKIP
        (torch.Size([60000, 1, 28, 28]), ('0', '1', '2'), False)
    """
    info = dataset_info(name)
    if name.startswith(FOLDER_PREFIX):
        if root is not None and str(root) != "":
            raise CnnlabError(f"{name} names its folder itself; expected no --data-dir, got {str(root)!r}")
        path = Path(name[len(FOLDER_PREFIX):]).expanduser()
        return info.loader(path, image_size=image_size, channels=channels, download=download, skip_bad=skip_bad,
                           test_split=test_split, fit=fit, input_side=input_side)
    data = info.loader(root, image_size=image_size, channels=channels, download=download, skip_bad=skip_bad)
    return conform(data, image_size, channels, training)


def datasets_table() -> str:
    """The `cnnlab datasets` listing: name, classes, channels, image size, train/test counts, source."""
    header = ("name", "classes", "channels", "size", "train", "test", "flip", "source")
    rows = []
    for entry in _listed():
        def show(value: int | None) -> str:
            return "-" if value is None else str(value)

        source = entry.source + (f" ({entry.section})" if entry.section else "")
        rows.append((entry.name, show(entry.classes), show(entry.channels), show(entry.image_size),
                     show(entry.train), show(entry.test), "yes" if entry.flip else "no", source))
    return text_table(header, rows, "lrrrrrrl")


# After the names the sources use from here: a source imported first reaches this line while it is half-imported
# itself, and registers its datasets when it goes on.
from cnnlab.data import cifar, folder, idx_family  # noqa: E402, F401
