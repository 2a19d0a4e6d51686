"""Fashion-MNIST: location rules, md5 checks, the download policy (a mirror on 127.0.0.1), and the real files."""

from __future__ import annotations

import dataclasses
import gzip
import hashlib
import os
import struct
from pathlib import Path

import pytest
import torch

import cnnlab.data.fashion_mnist as fm
import data_support
from cnnlab.data import CLASSES, MEAN, STD, fetch, idx_family, load_fashion_mnist, resolve_data_dir
from cnnlab.errors import DataError
from data_support import listing, serve

home = data_support.home  # a fixture

REAL = os.environ.get("CNNLAB_DATA", "")
needs_real_data = pytest.mark.skipif(
    not REAL or not (Path(REAL) / "train-images-idx3-ubyte.gz").is_file(),
    reason="set CNNLAB_DATA to a folder with the four Fashion-MNIST .gz files (the Makefile and CI do)",
)


@pytest.fixture
def no_network(monkeypatch) -> list:
    """Every mirror is unreachable (a closed port on 127.0.0.1); the list records the URLs tried."""
    calls = []
    real = fetch._fetch

    def offline(url, dest, md5):
        calls.append(url)
        real("http://127.0.0.1:9/" + url.rsplit("/", 1)[1], dest, md5)  # port 9 (discard): connection refused

    monkeypatch.setattr(fetch, "_fetch", offline)
    return calls


def tiny_idx_gz(path: Path) -> str:
    """A valid but wrong (tiny) IDX file under a real name; returns its md5."""
    path.write_bytes(gzip.compress(struct.pack(">IIII", 0x0803, 1, 2, 2) + bytes(4)))
    return hashlib.md5(path.read_bytes()).hexdigest()


# -- location -----------------------------------------------------------------------------------------------------
def test_resolve_order(home, monkeypatch, tmp_path):
    assert resolve_data_dir() == home / ".cache" / "cnnlab" / "fashion-mnist"
    monkeypatch.setenv("CNNLAB_DATA", "")  # empty means unset
    assert resolve_data_dir() == home / ".cache" / "cnnlab" / "fashion-mnist"
    for folder in (tmp_path / "env", tmp_path / "arg", home / "x"):
        folder.mkdir(parents=True)
    monkeypatch.setenv("CNNLAB_DATA", str(tmp_path / "env"))
    assert resolve_data_dir() == tmp_path / "env"
    assert resolve_data_dir(tmp_path / "arg") == tmp_path / "arg"
    assert resolve_data_dir("~/x") == home / "x"
    monkeypatch.delenv("CNNLAB_DATA")
    monkeypatch.setenv("CNNLAB_CACHE", str(tmp_path / "cache"))
    assert resolve_data_dir() == tmp_path / "cache" / "fashion-mnist"


def test_a_named_folder_must_exist(home, monkeypatch, tmp_path):
    for given, source in ((tmp_path / "typo", "--data-dir"), (None, "$CNNLAB_DATA")):
        monkeypatch.setenv("CNNLAB_DATA", str(tmp_path / "typo"))
        with pytest.raises(DataError, match=f"typo \\(from \\{source}\\) does not exist; expected a folder"):
            load_fashion_mnist(given)
    assert not (tmp_path / "typo").exists() and not (home / ".cache").exists()


def test_tables_match_torchvision():
    from torchvision.datasets import FashionMNIST

    assert list(fm.FILES.items()) == [tuple(r) for r in FashionMNIST.resources]
    assert fm.MIRRORS == tuple(FashionMNIST.mirrors)
    assert len(CLASSES) == 10 and CLASSES[0] == "t-shirt" and CLASSES[9] == "ankle boot"


# -- checksums ------------------------------------------------------------------------------------------------------
def test_md5_mismatch_names_file_expected_and_actual(tmp_path, no_network):
    actual = {name: tiny_idx_gz(tmp_path / name) for name in fm.FILES}
    with pytest.raises(DataError) as error:
        load_fashion_mnist(tmp_path)
    message = str(error.value)
    first = next(iter(fm.FILES))
    assert "\n" not in message and str(tmp_path / first) in message
    assert f"expected {fm.FILES[first]}, got {actual[first]}" in message
    assert no_network == []  # all files present: nothing to download


# -- downloads ------------------------------------------------------------------------------------------------------
def test_missing_and_offline_says_where_it_looked(home, no_network):
    cache = home / ".cache" / "cnnlab" / "fashion-mnist"
    with pytest.raises(DataError) as error:
        load_fashion_mnist()
    message = str(error.value)
    assert "\n" not in message
    for part in (str(cache), "default cache", fm.MIRRORS[0] + "train-images-idx3-ubyte.gz", "refused", "--data-dir",
                 "CNNLAB_DATA"):
        assert part in message, part
    assert no_network == [fm.MIRRORS[0] + "train-images-idx3-ubyte.gz"]
    assert sorted(p.name for p in cache.iterdir()) == [fm.MARKER]  # no .gz and no .part left behind


def test_download_off(home, no_network):
    with pytest.raises(DataError, match="downloads are off"):
        load_fashion_mnist(download=False)
    assert no_network == [] and not (home / ".cache").exists()


@pytest.mark.parametrize("some_files", [False, True])
def test_never_downloads_into_a_named_folder(tmp_path, no_network, some_files):
    """A folder the user names is read as found: with none or only some of the files, it is refused untouched."""
    if some_files:
        tiny_idx_gz(tmp_path / "train-images-idx3-ubyte.gz")
    before = listing(tmp_path)
    with pytest.raises(DataError) as error:
        load_fashion_mnist(tmp_path)
    assert "not writing" in str(error.value) and "t10k-labels-idx1-ubyte.gz" in str(error.value)
    assert no_network == [] and listing(tmp_path) == before and not (tmp_path / fm.MARKER).exists()


def test_unwritable_cache(home, no_network, monkeypatch):
    # chmod does not stop root (CI containers), so the refusal is simulated where the write would happen.
    def refuse(self, *args, **kwargs):
        raise PermissionError(13, "Permission denied", str(self))

    monkeypatch.setattr(Path, "touch", refuse)
    with pytest.raises(DataError, match="the folder is not writable \\(Permission denied\\)"):
        load_fashion_mnist()
    assert no_network == []


@needs_real_data
@pytest.mark.slow
def test_download_into_the_cache(home, monkeypatch):
    """A mirror on 127.0.0.1 serving the real files: they land under their names, md5-checked, no .part left."""
    with serve(Path(REAL)) as (url, requested):
        spec = dataclasses.replace(idx_family.SPECS["fashion-mnist"], mirrors=(url,))
        monkeypatch.setitem(idx_family.SPECS, "fashion-mnist", spec)
        data = load_fashion_mnist()
        target = home / ".cache" / "cnnlab" / "fashion-mnist"
        assert data.train_images.shape == (60000, 28, 28)
        assert requested == ["/" + name for name in fm.FILES]
        assert sorted(p.name for p in target.iterdir()) == sorted([*fm.FILES, fm.MARKER])
        # Our marker lets an interrupted download finish later, though the folder now holds some files.
        (target / "t10k-labels-idx1-ubyte.gz").unlink()
        load_fashion_mnist()
        assert requested[-1] == "/t10k-labels-idx1-ubyte.gz" and len(requested) == 5


# -- the real data --------------------------------------------------------------------------------------------------
@needs_real_data
def test_real_data_shapes_and_first_labels():
    data = load_fashion_mnist()
    assert data.train_images.shape == (60000, 28, 28) and data.train_images.dtype == torch.uint8
    assert data.test_images.shape == (10000, 28, 28) and data.test_images.dtype == torch.uint8
    assert data.train_labels.dtype == torch.int64 and data.test_labels.dtype == torch.int64
    assert data.train_labels[:10].tolist() == [9, 0, 0, 3, 0, 2, 7, 2, 5, 5]
    assert data.test_labels[:10].tolist() == [9, 2, 1, 1, 6, 1, 4, 6, 5, 7]
    assert torch.bincount(data.train_labels).tolist() == [6000] * 10
    assert torch.bincount(data.test_labels).tolist() == [1000] * 10
    assert data.classes == CLASSES


@needs_real_data
def test_mean_and_std_are_the_training_set_statistics():
    pixels = load_fashion_mnist().train_images.float() / 255
    assert round(pixels.mean().item(), 4) == MEAN
    assert round(pixels.std().item(), 4) == STD


@needs_real_data
def test_repeated_loads_are_cached():
    first = load_fashion_mnist(REAL)
    assert load_fashion_mnist(REAL) is first
    assert load_fashion_mnist(Path(REAL) / ".." / Path(REAL).name) is first  # same folder, other spelling
