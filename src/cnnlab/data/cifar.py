"""CIFAR-10 and CIFAR-100 from the official *binary* release: fixed-size records, so no pickle is ever loaded.

Krizhevsky (2009), https://www.cs.toronto.edu/~kriz/cifar.html: each record is the label byte(s) then 3072 pixel
bytes, the 1024 red values of the 32 x 32 image row by row, then green, then blue, i.e. ``3 x 32 x 32`` in C, H, W
order. CIFAR-10 has one label byte and five training files; CIFAR-100 has two (coarse, then the fine label cnnlab
uses) and one training file. torchvision reads the *python* release, whose batches are pickles: unpickling a
downloaded file can run code, which cnnlab never does (the same reason checkpoints load with weights_only).

The ``.tar.gz`` (md5-checked against the sums on that page) is read in memory and never extracted; an already
extracted folder is read as found (its record sizes and counts checked, as no sums are published for the members).
"""

from __future__ import annotations

import functools
import io
import os
import tarfile
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from cnnlab.data.dataset import ImageDataset, channel_stats
from cnnlab.data.fetch import check_md5, download, locate
from cnnlab.data.registry import register_dataset
from cnnlab.errors import DataError

__all__ = ["CifarSpec", "SPECS", "load_cifar"]

PIXELS = 3 * 32 * 32


@dataclass(frozen=True)
class CifarSpec:
    """One CIFAR binary release: the archive, its members and the record layout."""

    name: str
    title: str
    archive: str
    md5: str
    folder: str  # the archive's top folder
    train_files: tuple[str, ...]
    test_files: tuple[str, ...]
    names_file: str  # one class name per line
    label_bytes: int
    label_at: int  # which label byte is the class (CIFAR-100: 1, the fine label)
    num_classes: int
    mirrors: tuple[str, ...] = ("https://www.cs.toronto.edu/~kriz/",)
    counts: tuple[int, int] = (50000, 10000)

    @property
    def expected(self) -> str:
        return f"{self.archive} or its extracted {self.folder}/"


SPECS: dict[str, CifarSpec] = {
    "cifar10": CifarSpec("cifar10", "CIFAR-10", "cifar-10-binary.tar.gz", "c32a1d4ab5d03f1284b67883e8d87530",
                         "cifar-10-batches-bin", tuple(f"data_batch_{i}.bin" for i in range(1, 6)),
                         ("test_batch.bin",), "batches.meta.txt", label_bytes=1, label_at=0, num_classes=10),
    "cifar100": CifarSpec("cifar100", "CIFAR-100", "cifar-100-binary.tar.gz", "03b5dce01913d631647c71ecec9e9cb8",
                          "cifar-100-binary", ("train.bin",), ("test.bin",), "fine_label_names.txt",
                          label_bytes=2, label_at=1, num_classes=100),
}


def _members(spec: CifarSpec) -> tuple[str, ...]:
    return (*spec.train_files, *spec.test_files, spec.names_file)


def _source(spec: CifarSpec, root: Path) -> Path | None:
    """The archive, the extracted folder, or ``root`` itself when it is that folder; None when none is there."""
    if (root / spec.archive).is_file():
        return root / spec.archive
    for folder in (root / spec.folder, root):
        if all((folder / m).is_file() for m in _members(spec)):
            return folder
    return None


def load_cifar(name: str, root: str | os.PathLike | None = None, download_missing: bool = True) -> ImageDataset:
    """Load CIFAR-10 or CIFAR-100 (``name``) from its folder, downloading the archive into the cache if missing.

    Returns:
        uint8 images ``N x 3 x 32 x 32``, the class names from the release's names file, per-channel statistics
        of the training images; repeated loads of unchanged files return the same value.
    """
    spec = SPECS[name]
    folder = locate(spec.name, root, spec.expected)
    source = _source(spec, folder.path)
    if source is None:
        hint = f"put {spec.archive} in a folder and pass --data-dir DIR"
        download(folder, spec.name, spec.title, {spec.archive: spec.md5}, spec.mirrors, download_missing, hint)
        source = folder.path / spec.archive
    files = [source] if source.is_file() else [source / m for m in _members(spec)]
    stamp = tuple((st.st_size, st.st_mtime_ns) for st in (p.stat() for p in files))
    return _load(spec.name, source.resolve(), stamp)


def _read_members(spec: CifarSpec, source: Path) -> dict[str, tuple[str, bytes]]:
    """member name -> (the name to put in errors, its bytes), from the archive in memory or the folder."""
    if source.is_dir():
        return {m: (str(source / m), (source / m).read_bytes()) for m in _members(spec)}
    raw = source.read_bytes()
    check_md5(source, raw, spec.md5)
    out = {}
    try:
        with tarfile.open(fileobj=io.BytesIO(raw), mode="r:gz") as tar:
            for m in _members(spec):
                try:
                    member = tar.extractfile(f"{spec.folder}/{m}")
                except KeyError:
                    member = None
                if member is None:
                    raise DataError(f"{source}: archive has no file {spec.folder}/{m}; expected the official "
                                    f"{spec.title} binary release")
                out[m] = (f"{source}:{spec.folder}/{m}", member.read())
    except (tarfile.TarError, EOFError, zlib.error, OSError) as e:
        raise DataError(f"{source}: not a readable tar.gz ({type(e).__name__}: {e})") from e
    return out


def _records(spec: CifarSpec, name: str, data: bytes) -> tuple[np.ndarray, np.ndarray]:
    size = spec.label_bytes + PIXELS
    if len(data) % size:
        raise DataError(f"{name}: {len(data)} bytes is not a whole number of {size}-byte {spec.title} records")
    records = np.frombuffer(data, dtype=np.uint8).reshape(-1, size)
    return records[:, spec.label_bytes:].reshape(-1, 3, 32, 32), records[:, spec.label_at].astype(np.int64)


@functools.lru_cache(maxsize=2)
def _load(name: str, source: Path, stamp: tuple) -> ImageDataset:
    spec = SPECS[name]
    members = _read_members(spec, source)
    splits = []
    for split, files, count in (("train", spec.train_files, spec.counts[0]), ("test", spec.test_files,
                                                                              spec.counts[1])):
        parts = [_records(spec, *members[f]) for f in files]
        images, labels = np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])
        where = members[files[0]][0] if len(files) == 1 else f"{source} ({', '.join(files)})"
        if len(images) != count:
            raise DataError(f"{where}: {len(images)} {split} records, expected {count}")
        if len(labels) and int(labels.max()) >= spec.num_classes:
            raise DataError(f"{where}: label {int(labels.max())} out of range, expected 0..{spec.num_classes - 1}")
        splits.append((torch.from_numpy(images), torch.from_numpy(labels)))  # concatenate made them writable
    names_at, names_raw = members[spec.names_file]
    classes = tuple(line.strip() for line in names_raw.decode("utf-8", "replace").splitlines() if line.strip())
    if len(classes) != spec.num_classes:
        raise DataError(f"{names_at}: {len(classes)} class names, expected {spec.num_classes}")
    (train_images, train_labels), (test_images, test_labels) = splits
    mean, std = channel_stats(train_images)
    return ImageDataset(spec.name, train_images, train_labels, test_images, test_labels, classes, mean, std,
                        flip=True, description=f"{spec.title} (binary release) from {source}")


def _register(spec: CifarSpec) -> None:
    def loader(root, *, download: bool, **_options) -> ImageDataset:
        return load_cifar(spec.name, root, download)

    register_dataset(spec.name, loader, classes=spec.num_classes, channels=3, image_size=32, train=spec.counts[0],
                     test=spec.counts[1], source=spec.mirrors[0] + spec.archive, flip=True,
                     section="Krizhevsky 2009")


for _spec in SPECS.values():
    _register(_spec)
