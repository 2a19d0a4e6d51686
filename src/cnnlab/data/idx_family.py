"""The IDX family: Fashion-MNIST, MNIST and Kuzushiji-MNIST, four files each, one reader for all three.

Each is 60,000 training and 10,000 test grey 28 x 28 images in ten classes, published as four gzip'd IDX files
whose md5 sums torchvision checks (``torchvision.datasets.MNIST/KMNIST/FashionMNIST.resources``). The files are
found in the dataset's folder in any of the layouts people have on disk: the ``.gz`` files, the uncompressed files
(``train-images-idx3-ubyte``), or torchvision's ``<root>/MNIST/raw/`` (``FashionMNIST/raw``, ``KMNIST/raw``). A
``.gz`` file is md5-checked; an uncompressed one cannot be (the published sums are of the archives), so its IDX
header and shapes are what is checked.
"""

from __future__ import annotations

import functools
import os
from dataclasses import dataclass
from pathlib import Path

import torch

from cnnlab.data.dataset import ImageDataset, channel_stats
from cnnlab.data.fetch import DataFolder, check_md5, download, locate
from cnnlab.data.idx import idx_from_bytes
from cnnlab.data.registry import register_dataset
from cnnlab.errors import DataError

__all__ = ["IdxSpec", "SPECS", "load_idx_dataset", "find_files"]

_SPLITS = ("train", "t10k")  # the official prefixes: train and test (t10k = "test, 10 thousand")


def _names(split: str) -> tuple[str, str]:
    return f"{split}-images-idx3-ubyte.gz", f"{split}-labels-idx1-ubyte.gz"


@dataclass(frozen=True)
class IdxSpec:
    """One IDX-family dataset.

    Attributes:
        name: the registry name, also the cache folder's name.
        title: the name in messages.
        files: the four ``.gz`` names and their md5 sums, training images first.
        mirrors: URL prefixes to download from, in order (torchvision's ``mirrors``).
        classes: the ten class names.
        torchvision_dir: the folder under a torchvision root that holds ``raw/`` (``"MNIST"``).
        counts: training and test images.
        env_var: a variable naming the folder, between ``--data-dir`` and the cache in the lookup.
        stats: fixed ``(mean, std)`` instead of computing them from the training images.
        flip: whether a mirrored image keeps its class.
        section: where the data is described.
    """

    name: str
    title: str
    files: dict[str, str]
    mirrors: tuple[str, ...]
    classes: tuple[str, ...]
    torchvision_dir: str
    flip: bool
    section: str
    counts: tuple[int, int] = (60000, 10000)
    env_var: str | None = None
    stats: tuple[tuple[float, ...], tuple[float, ...]] | None = None

    @property
    def expected(self) -> str:
        return f"the four {self.title} IDX files ({', '.join(self.files)}, or uncompressed)"


# The tables are torchvision's (tests/test_data_idx_family.py compares them with torchvision.datasets).
FASHION_FILES: dict[str, str] = {
    "train-images-idx3-ubyte.gz": "8d4fb7e6c68d591d4c3dfef9ec88bf0d",
    "train-labels-idx1-ubyte.gz": "25c81989df183df01b3e8a0aad5dffbe",
    "t10k-images-idx3-ubyte.gz": "bef4ecab320f06d8554ea6380940ec79",
    "t10k-labels-idx1-ubyte.gz": "bb300cfdad3c16e7a12a480ee83cd310",
}
SPECS: dict[str, IdxSpec] = {
    "fashion-mnist": IdxSpec(
        "fashion-mnist", "Fashion-MNIST", FASHION_FILES,
        ("http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",),
        ("t-shirt", "trouser", "pullover", "dress", "coat", "sandal", "shirt", "sneaker", "bag", "ankle boot"),
        "FashionMNIST", flip=True, section="Xiao et al. 2017 (arXiv:1708.07747); d2l 4.2", env_var="CNNLAB_DATA",
        # The 60,000 training images' pixel mean and std in [0, 1] (recomputed by a test), as cnnlab always had.
        stats=((0.2860,), (0.3530,))),
    "mnist": IdxSpec(
        "mnist", "MNIST", {
            "train-images-idx3-ubyte.gz": "f68b3c2dcbeaaa9fbdd348bbdeb94873",
            "train-labels-idx1-ubyte.gz": "d53e105ee54ea40749a09fcbcd1e9432",
            "t10k-images-idx3-ubyte.gz": "9fb629c4189551a2d022fa330f9573f3",
            "t10k-labels-idx1-ubyte.gz": "ec29112dd5afa0611ce80d1b7f02629c",
        }, ("https://ossci-datasets.s3.amazonaws.com/mnist/", "http://yann.lecun.com/exdb/mnist/"),
        tuple(str(d) for d in range(10)), "MNIST", flip=False, section="LeCun et al. 1998"),
    "kmnist": IdxSpec(
        "kmnist", "Kuzushiji-MNIST", {
            "train-images-idx3-ubyte.gz": "bdb82020997e1d708af4cf47b453dcf7",
            "train-labels-idx1-ubyte.gz": "e144d726b3acfaa3e44228e80efcd344",
            "t10k-images-idx3-ubyte.gz": "5c965bf0a639b31b8f53240b1b52f4d7",
            "t10k-labels-idx1-ubyte.gz": "7320c461ea6c1c855c0b718fb2a4b134",
        }, ("http://codh.rois.ac.jp/kmnist/dataset/kmnist/",),
        ("o", "ki", "su", "tsu", "na", "ha", "ma", "ya", "re", "wo"), "KMNIST", flip=False,
        section="Clanuwat et al. 2018 (arXiv:1812.01718)"),
}


def find_files(spec: IdxSpec, root: Path) -> list[Path] | None:
    """The four files in ``root`` or ``root/<torchvision_dir>/raw``, each ``.gz`` or uncompressed; None if absent.

    Within a layout a ``.gz`` file is preferred over its uncompressed twin, because only it can be md5-checked.
    """
    for folder in (root, root / spec.torchvision_dir / "raw"):
        found = []
        for name in spec.files:
            path = next((p for p in (folder / name, folder / name.removesuffix(".gz")) if p.is_file()), None)
            if path is None:
                break
            found.append(path)
        else:
            return found
    return None


def load_idx_dataset(name: str, root: str | os.PathLike | None = None, download_missing: bool = True) -> ImageDataset:
    """Load an IDX-family dataset from its folder (downloading into the cache when missing there).

    Returns:
        The dataset with images ``N x 1 x 28 x 28``; repeated loads of an unchanged folder return the same value.
    """
    spec = SPECS[name]
    folder = locate(spec.name, root, spec.expected, spec.env_var)
    paths = find_files(spec, folder.path)
    if paths is None:
        _download_missing(spec, folder, download_missing)
        paths = find_files(spec, folder.path)
        assert paths is not None, folder  # every file was just written and md5-checked
    stamp = tuple((st.st_size, st.st_mtime_ns) for st in (p.stat() for p in paths))
    return _load(spec.name, tuple(p.resolve() for p in paths), stamp)


def _download_missing(spec: IdxSpec, folder: DataFolder, allowed: bool) -> None:
    missing = {name: md5 for name, md5 in spec.files.items() if not (folder.path / name).is_file()}
    hint = ("put the four files in a folder and pass --data-dir DIR"
            + (f" or set {spec.env_var}=DIR" if spec.env_var else ""))
    download(folder, spec.name, spec.title, missing, spec.mirrors, allowed, hint)


def _read(path: Path, md5: str, ndim: int) -> torch.Tensor:
    try:
        raw = path.read_bytes()
    except OSError as e:
        raise DataError(f"{path}: cannot read IDX file ({e.strerror or e})") from e
    if path.suffix == ".gz":
        check_md5(path, raw, md5)
    return idx_from_bytes(raw, str(path), ndim)


@functools.lru_cache(maxsize=4)
def _load(name: str, paths: tuple[Path, ...], stamp: tuple) -> ImageDataset:
    """Verify and parse the four files; ``stamp`` (sizes and mtimes) makes a changed file miss the cache."""
    spec = SPECS[name]
    md5s = list(spec.files.values())
    tensors = [_read(path, md5, 3 if i % 2 == 0 else 1) for i, (path, md5) in enumerate(zip(paths, md5s,
                                                                                          strict=True))]
    parts = []
    for split, count, (images, labels), (image_path, label_path) in zip(
            _SPLITS, spec.counts, (tensors[:2], tensors[2:]), (paths[:2], paths[2:]), strict=True):
        # For a .gz the md5 already pins the content; these checks guard uncompressed files and edited tables.
        if tuple(images.shape) != (count, 28, 28):
            raise DataError(f"{image_path}: {split} images have shape {tuple(images.shape)}, expected "
                            f"({count}, 28, 28)")
        if tuple(labels.shape) != (count,) or (count and int(labels.max()) >= len(spec.classes)):
            raise DataError(f"{label_path}: {split} labels must be {count} values in 0..{len(spec.classes) - 1}, "
                            f"got shape {tuple(labels.shape)}" + (f", max {int(labels.max())}" if count else ""))
        parts.append((images.unsqueeze(1), labels.long()))  # N x 1 x 28 x 28: a view, no copy
    (train_images, train_labels), (test_images, test_labels) = parts
    mean, std = spec.stats or channel_stats(train_images)
    return ImageDataset(spec.name, train_images, train_labels, test_images, test_labels, spec.classes, mean, std,
                        spec.flip, description=f"{spec.title} from {paths[0].parent}")


def _register(spec: IdxSpec) -> None:
    def loader(root, *, download: bool, **_options) -> ImageDataset:
        return load_idx_dataset(spec.name, root, download)

    register_dataset(spec.name, loader, classes=len(spec.classes), channels=1, image_size=28, train=spec.counts[0],
                     test=spec.counts[1], source=spec.mirrors[0], flip=spec.flip, section=spec.section)


for _spec in SPECS.values():
    _register(_spec)
