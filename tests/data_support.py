"""Helpers for the data tests: small files in exactly the official formats, and a mirror on 127.0.0.1.

Nothing here touches the network: downloads are served by :func:`serve` from a temporary folder, over HTTP, in a
thread of the test process.
"""

from __future__ import annotations

import contextlib
import functools
import gzip
import hashlib
import http.server
import io
import struct
import tarfile
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from cnnlab.data import ImageDataset

IDX_NAMES = ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz", "t10k-images-idx3-ubyte.gz",
             "t10k-labels-idx1-ubyte.gz")


@pytest.fixture
def home(tmp_path, monkeypatch) -> Path:
    """An empty HOME (so every cache is under tmp_path), and no CNNLAB_DATA or CNNLAB_CACHE."""
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.delenv("CNNLAB_DATA", raising=False)
    monkeypatch.delenv("CNNLAB_CACHE", raising=False)
    return tmp_path / "home"


def noise_dataset(labels: torch.Tensor, classes: Sequence[str], channels: int = 1, side: int = 28, test: int = 12,
                  flip: bool = False) -> ImageDataset:
    """Seeded uniform-noise uint8 images with these labels, the first ``test`` of them also the test split: for tests
    of the loop's mechanics (budget, balance, fine-tuning), where what the images show does not matter."""
    images = torch.randint(0, 256, (len(labels), channels, side, side), dtype=torch.uint8,
                           generator=torch.Generator().manual_seed(0))
    return ImageDataset("tiny", images, labels, images[:test], labels[:test], tuple(classes), (0.5,) * channels,
                        (0.25,) * channels, flip=flip)


def md5(data: bytes) -> str:
    return hashlib.md5(data).hexdigest()


def idx_bytes(array: np.ndarray) -> bytes:
    """The IDX encoding of a uint8 array (LeCun's format: magic 0x0000_08_<ndim>, big-endian sizes, the bytes)."""
    return struct.pack(f">I{array.ndim}I", 0x0800 | array.ndim, *array.shape) + array.astype(np.uint8).tobytes()


def idx_arrays(n_train: int, n_test: int, seed: int = 0) -> dict[str, np.ndarray]:
    """Random 28 x 28 images and labels in 0..9 under the four official names (every class in both splits)."""
    rng = np.random.default_rng(seed)
    out = {}
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        out[f"{prefix}-images-idx3-ubyte.gz"] = rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)
        out[f"{prefix}-labels-idx1-ubyte.gz"] = (np.arange(n) % 10).astype(np.uint8)
    return out


def write_idx_files(folder: Path, arrays: dict[str, np.ndarray], compressed: bool = True) -> dict[str, str]:
    """Write the arrays as IDX files (``.gz``, or uncompressed without the suffix); returns the gz names' md5s."""
    folder.mkdir(parents=True, exist_ok=True)
    sums = {}
    for name, array in arrays.items():
        raw = idx_bytes(array)
        packed = gzip.compress(raw, mtime=0)
        sums[name] = md5(packed)
        if compressed:
            (folder / name).write_bytes(packed)
        else:
            (folder / name.removesuffix(".gz")).write_bytes(raw)
    return sums


def cifar_records(images: np.ndarray, labels: np.ndarray, label_bytes: int) -> bytes:
    """Binary CIFAR records: label byte(s) (CIFAR-100: coarse, then fine) then 3072 pixel bytes, C x H x W."""
    n = len(images)
    heads = np.zeros((n, label_bytes), dtype=np.uint8)
    heads[:, -1] = labels  # the class label is the last label byte in both releases
    if label_bytes == 2:
        heads[:, 0] = labels // 5  # a coarse label (unused by cnnlab)
    return np.concatenate([heads, images.reshape(n, -1)], axis=1).tobytes()


def cifar_archive(path: Path, spec, n_per_file: tuple[int, int], seed: int = 0) -> tuple[str, dict[str, np.ndarray]]:
    """Write a tar.gz laid out as the official binary release of ``spec`` (small record counts).

    Returns its md5 and the arrays (``train_images``, ``train_labels``, ``test_images``, ``test_labels``).
    """
    rng = np.random.default_rng(seed)
    members, arrays = {}, {}
    for split, files, n in (("train", spec.train_files, n_per_file[0]), ("test", spec.test_files, n_per_file[1])):
        parts_x, parts_y = [], []
        for f in files:
            x = rng.integers(0, 256, (n, 3, 32, 32), dtype=np.uint8)
            y = rng.integers(0, spec.num_classes, n).astype(np.uint8)
            members[f] = cifar_records(x, y, spec.label_bytes)
            parts_x.append(x)
            parts_y.append(y)
        arrays[f"{split}_images"], arrays[f"{split}_labels"] = np.concatenate(parts_x), np.concatenate(parts_y)
    members[spec.names_file] = "".join(f"class_{i}\n" for i in range(spec.num_classes)).encode() + b"\n"
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(f"{spec.folder}/{name}")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(buffer.getvalue())
    return md5(buffer.getvalue()), arrays


class _Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args) -> None:  # keep the test output clean
        pass


@contextlib.contextmanager
def serve(folder: Path) -> Iterator[tuple[str, list[str]]]:
    """Serve ``folder`` over HTTP on 127.0.0.1; yields (the URL prefix ending in ``/``, the paths requested)."""
    requested: list[str] = []

    class Handler(_Quiet):
        def do_GET(self):
            requested.append(self.path)
            super().do_GET()

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Handler, directory=str(folder)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/", requested
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def rng_image(seed: int, size: tuple[int, int], mode: str) -> Image.Image:
    """A random image of ``size`` (width, height) in mode L, RGB or RGBA."""
    rng = np.random.default_rng(seed)
    channels = {"L": 1, "RGB": 3, "RGBA": 4}[mode]
    array = rng.integers(0, 256, (size[1], size[0], channels), dtype=np.uint8)
    return Image.fromarray(array[..., 0] if channels == 1 else array, mode)


def write_classes(root: Path, counts: dict[str, int], size=(12, 12), mode="L", ext="png", seed=0) -> None:
    """A folder dataset: ``root/<class>/NNN.<ext>``, ``counts[class]`` random images each."""
    for c, (name, n) in enumerate(counts.items()):
        (root / name).mkdir(parents=True, exist_ok=True)
        for i in range(n):
            rng_image(seed + 100 * c + i, size, mode).save(root / name / f"{i:03d}.{ext}")


def listing(folder: Path) -> list[tuple[str, int, int]]:
    """Every file under ``folder`` with its size and mtime: equal before and after means nothing was written."""
    return sorted((str(p.relative_to(folder)), p.stat().st_size, p.stat().st_mtime_ns)
                  for p in folder.rglob("*") if p.is_file())
