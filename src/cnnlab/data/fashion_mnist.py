"""Fashion-MNIST: where the four files live, their checksums, the download, and the load into uint8 tensors.

The dataset (Xiao, Rasul & Vollgraf 2017, arXiv:1708.07747) is what d2l 4.2 loads through torchvision and what
every CNN of chapters 7-8 trains on. The files are found in the first of: the ``data_dir`` argument (the CLI's
``--data-dir``), ``$CNNLAB_DATA``, ``~/.cache/cnnlab/fashion-mnist``. Shared copies are often read-only, so
nothing is ever extracted or written beside them: files are read in memory, and downloads only go into the
cache folder or into a folder cnnlab created for the purpose (it holds none of the files, or our marker file).
"""

from __future__ import annotations

import functools
import os
from dataclasses import dataclass
from pathlib import Path

import torch

from cnnlab.data.idx import read_idx
from cnnlab.errors import DataError

__all__ = [
    "FILES", "CLASSES", "MEAN", "STD", "MIRRORS", "FashionMNIST", "resolve_data_dir", "load_fashion_mnist",
]

# The official gz files and their md5 sums (the ones torchvision.datasets.FashionMNIST.resources checks).
FILES: dict[str, str] = {
    "train-images-idx3-ubyte.gz": "8d4fb7e6c68d591d4c3dfef9ec88bf0d",
    "train-labels-idx1-ubyte.gz": "25c81989df183df01b3e8a0aad5dffbe",
    "t10k-images-idx3-ubyte.gz": "bef4ecab320f06d8554ea6380940ec79",
    "t10k-labels-idx1-ubyte.gz": "bb300cfdad3c16e7a12a480ee83cd310",
}
# torchvision.datasets.FashionMNIST.mirrors (kept here so a load does not import torchvision.datasets' classes).
MIRRORS: tuple[str, ...] = ("http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",)
CLASSES: tuple[str, ...] = (
    "t-shirt", "trouser", "pullover", "dress", "coat", "sandal", "shirt", "sneaker", "bag", "ankle boot",
)
# Pixel mean and standard deviation of the 60,000 training images scaled to [0, 1] (recomputed by a test).
MEAN: float = 0.2860
STD: float = 0.3530

ENV_VAR = "CNNLAB_DATA"
MARKER = ".cnnlab-download"  # left in folders cnnlab downloads into, so it may finish an interrupted download
_SHAPES = {"train": (60000, 28, 28), "t10k": (10000, 28, 28)}


@dataclass(frozen=True, eq=False)  # eq=False: comparing tensors elementwise is not what == should mean here
class FashionMNIST:
    """The whole dataset in memory: uint8 images ``N x 28 x 28`` and int64 labels in ``0..9``.

    Loads are cached per process, so instances may share storage: treat the tensors as read-only.
    """

    train_images: torch.Tensor
    train_labels: torch.Tensor
    test_images: torch.Tensor
    test_labels: torch.Tensor
    classes: tuple[str, ...] = CLASSES


def default_cache_dir() -> Path:
    """``~/.cache/cnnlab/fashion-mnist``, the one folder cnnlab always owns and may download into."""
    return Path.home() / ".cache" / "cnnlab" / "fashion-mnist"


def _locate(data_dir: str | os.PathLike | None) -> tuple[Path, str]:
    """The data folder and where that choice came from (for error messages)."""
    if data_dir is not None and str(data_dir) != "":
        return Path(data_dir).expanduser(), "--data-dir"
    env = os.environ.get(ENV_VAR, "")
    if env:  # an empty variable counts as unset, so `CNNLAB_DATA= cnnlab ...` falls back to the cache
        return Path(env).expanduser(), f"${ENV_VAR}"
    return default_cache_dir(), "default cache"


def resolve_data_dir(data_dir: str | os.PathLike | None = None) -> Path:
    """The Fashion-MNIST folder: ``data_dir`` if given, else ``$CNNLAB_DATA`` if non-empty, else the cache."""
    return _locate(data_dir)[0]


def load_fashion_mnist(data_dir: str | os.PathLike | None = None, download: bool = True) -> FashionMNIST:
    """Load the four Fashion-MNIST files into memory, verifying md5 sums and IDX headers.

    Args:
        data_dir: folder with the four ``.gz`` files (default: ``$CNNLAB_DATA``, then the cache folder).
        download: fetch missing files from the official mirror, only into the cache folder or a folder that
            holds none of the files (a folder with some of them is someone's data: it is never written to).

    Returns:
        The dataset; repeated calls for the same unchanged folder return the cached tensors at no cost.

    Raises:
        DataError: a file is missing and cannot be downloaded, fails its md5 check, or is malformed.

    Example:
        >>> data = load_fashion_mnist()  # doctest: +SKIP
        >>> data.train_images.shape, data.classes[data.train_labels[0]]  # doctest: +SKIP
        (torch.Size([60000, 28, 28]), 'ankle boot')
    """
    root, source = _locate(data_dir)
    missing = [name for name in FILES if not (root / name).is_file()]
    if missing:
        _download(root, source, missing, download)
    stamp = tuple((st.st_size, st.st_mtime_ns) for st in ((root / name).stat() for name in FILES))
    return _load(root.resolve(), stamp)


@functools.lru_cache(maxsize=2)
def _load(root: Path, stamp: tuple) -> FashionMNIST:
    """Verify and parse the files in ``root``; ``stamp`` (sizes and mtimes) makes a changed file miss the cache."""
    from torchvision.datasets.utils import calculate_md5  # deferred: importing torchvision takes ~1 s

    tensors = {}
    for name, md5 in FILES.items():
        path = root / name
        actual = calculate_md5(path)
        if actual != md5:
            raise DataError(f"{path}: md5 mismatch, expected {md5}, got {actual} (a corrupt or different file)")
        tensors[name] = read_idx(path, ndim=3 if "images" in name else 1)
    parts = {}
    for split, shape in _SHAPES.items():
        images, labels = tensors[f"{split}-images-idx3-ubyte.gz"], tensors[f"{split}-labels-idx1-ubyte.gz"]
        # The md5 sums already pin the content; these checks only guard against an edited FILES table.
        if tuple(images.shape) != shape or tuple(labels.shape) != shape[:1]:
            raise DataError(f"{root}: {split} images/labels have shapes {tuple(images.shape)}/"
                            f"{tuple(labels.shape)}, expected {shape}/{shape[:1]}")
        parts[split] = (images, labels.long())
    return FashionMNIST(*parts["train"], *parts["t10k"])


def _may_download_into(root: Path) -> bool:
    """True for the cache folder, a folder cnnlab downloaded into before, or one holding none of the files."""
    if root.expanduser().absolute() == default_cache_dir().absolute() or (root / MARKER).exists():
        return True
    return not any((root / name).exists() for name in FILES)


def _download(root: Path, source: str, missing: list[str], download: bool) -> None:
    """Fetch ``missing`` into ``root`` or raise a one-line DataError saying where we looked and what to do."""
    where = f"{root} (from {source}; lookup order: --data-dir, ${ENV_VAR}, {default_cache_dir()})"
    hint = f"put the four .gz files in a folder and pass --data-dir DIR or set {ENV_VAR}=DIR"
    if not download:
        raise DataError(f"Fashion-MNIST missing {', '.join(missing)} in {where}; downloads are off; {hint}")
    if not _may_download_into(root):
        raise DataError(f"Fashion-MNIST folder {where} lacks {', '.join(missing)} but holds the other files; "
                        f"not writing into someone else's data folder; {hint}")
    from torchvision.datasets.utils import download_url  # deferred: importing torchvision takes ~1 s

    try:
        root.mkdir(parents=True, exist_ok=True)
        (root / MARKER).touch()
    except OSError as e:
        raise DataError(f"Fashion-MNIST missing in {where} and the folder is not writable ({e.strerror}); "
                        f"{hint}") from e
    for name in missing:
        errors = []
        for mirror in MIRRORS:
            part = root / (name + ".part")  # download beside, then rename: a killed download leaves no bad file
            try:
                download_url(mirror + name, str(root), filename=part.name, md5=FILES[name])
                os.replace(part, root / name)
                break
            except (OSError, RuntimeError) as e:  # URLError is an OSError; md5 failure is a RuntimeError
                errors.append(f"{mirror}{name}: {e}".replace("\n", " "))
                part.unlink(missing_ok=True)
        else:
            raise DataError(f"Fashion-MNIST missing {name} in {where} and the download failed "
                            f"({'; '.join(errors)}); {hint}")
