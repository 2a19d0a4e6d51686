"""The IDX family (fashion-mnist, mnist, kmnist) through load_dataset: layouts, checks, downloads from 127.0.0.1.

Small IDX files in the official format stand in for MNIST and KMNIST (whose md5 table is swapped for theirs); the
real Fashion-MNIST copy is used read-only.
"""

from __future__ import annotations

import dataclasses
import gzip
import os
from pathlib import Path

import numpy as np
import pytest
import torch

import data_support
from cnnlab.data import MEAN, STD, idx_family, load_dataset, load_fashion_mnist
from cnnlab.data.fetch import MARKER
from cnnlab.errors import DataError
from data_support import idx_arrays, listing, md5, serve, write_idx_files

home = data_support.home  # a fixture

REAL = os.environ.get("CNNLAB_DATA", "")
needs_real_data = pytest.mark.skipif(not REAL or not (Path(REAL) / "train-images-idx3-ubyte.gz").is_file(),
                                     reason="set CNNLAB_DATA to the Fashion-MNIST folder (the Makefile and CI do)")
N_TRAIN, N_TEST = 30, 20


@pytest.fixture
def tiny(monkeypatch):
    """Make ``name``'s table describe small files: ``tiny(name, md5s, mirrors=())``."""

    def use(name: str, sums: dict[str, str], mirrors: tuple[str, ...] = ()) -> None:
        spec = idx_family.SPECS[name]
        monkeypatch.setitem(idx_family.SPECS, name, dataclasses.replace(
            spec, files=sums, counts=(N_TRAIN, N_TEST), mirrors=mirrors or spec.mirrors))

    return use


def test_tables_match_torchvision():
    from torchvision.datasets import KMNIST, MNIST

    for name, theirs in (("mnist", MNIST), ("kmnist", KMNIST)):
        spec = idx_family.SPECS[name]
        assert list(spec.files.items()) == [tuple(r) for r in theirs.resources]
        assert spec.mirrors == tuple(theirs.mirrors)
        assert not spec.flip and spec.env_var is None
    assert idx_family.SPECS["kmnist"].classes == tuple(KMNIST.classes)


@pytest.mark.parametrize("name", ["mnist", "kmnist"])
@pytest.mark.parametrize("layout", ["gz", "uncompressed", "torchvision gz", "torchvision uncompressed"])
def test_layouts_are_read_as_found(tmp_path, tiny, name, layout):
    arrays = idx_arrays(N_TRAIN, N_TEST, seed=3)
    folder = tmp_path / "data"
    where = folder / idx_family.SPECS[name].torchvision_dir / "raw" if "torchvision" in layout else folder
    tiny(name, write_idx_files(where, arrays, compressed="uncompressed" not in layout))
    before = listing(folder)
    data = load_dataset(name, folder)
    assert listing(folder) == before  # nothing extracted, marked or cached beside the files
    assert data.train_images.shape == (N_TRAIN, 1, 28, 28) and data.test_images.shape == (N_TEST, 1, 28, 28)
    assert torch.equal(data.train_images[:, 0], torch.from_numpy(arrays["train-images-idx3-ubyte.gz"]))
    assert torch.equal(data.test_labels, torch.from_numpy(arrays["t10k-labels-idx1-ubyte.gz"]).long())
    assert data.flip is False and data.channels == 1 and data.image_size == 28 and data.num_classes == 10
    pixels = torch.from_numpy(arrays["train-images-idx3-ubyte.gz"]).double() / 255
    assert data.mean == pytest.approx((pixels.mean().item(),), abs=1e-12)
    assert data.std == pytest.approx((pixels.std().item(),), abs=1e-12)


def test_uncompressed_file_with_the_wrong_shape_is_named(tmp_path, tiny):
    arrays = idx_arrays(N_TRAIN, N_TEST)
    arrays["t10k-images-idx3-ubyte.gz"] = arrays["t10k-images-idx3-ubyte.gz"][:-1]
    tiny("mnist", write_idx_files(tmp_path, arrays, compressed=False))
    with pytest.raises(DataError) as error:
        load_dataset("mnist", tmp_path)
    assert str(tmp_path / "t10k-images-idx3-ubyte") in str(error.value)
    assert f"({N_TEST - 1}, 28, 28), expected ({N_TEST}, 28, 28)" in str(error.value)


def test_cnnlab_data_means_fashion_mnist_only(home, tmp_path, monkeypatch, tiny):
    """MNIST's files have Fashion-MNIST's names, so $CNNLAB_DATA (a Fashion-MNIST folder) is never read for it."""
    tiny("mnist", write_idx_files(tmp_path / "shared", idx_arrays(N_TRAIN, N_TEST)))
    monkeypatch.setenv("CNNLAB_DATA", str(tmp_path / "shared"))
    with pytest.raises(DataError) as error:
        load_dataset("mnist", download=False)
    assert str(home / ".cache" / "cnnlab" / "mnist") in str(error.value) and "downloads are off" in str(error.value)
    assert str(tmp_path / "shared") not in str(error.value)


def test_download_fails_over_from_a_corrupt_mirror(home, tmp_path, tiny):
    arrays = idx_arrays(N_TRAIN, N_TEST, seed=1)
    good, bad = tmp_path / "good", tmp_path / "bad"
    sums = write_idx_files(good, arrays)
    bad.mkdir()
    for name in sums:  # the right names, the wrong bytes: a mirror serving an error page or another release
        (bad / name).write_bytes(gzip.compress(b"<html>not the file</html>"))
    with serve(bad) as (bad_url, bad_requests), serve(good) as (good_url, good_requests):
        tiny("kmnist", sums, mirrors=(bad_url, good_url))
        data = load_dataset("kmnist")
    cache = home / ".cache" / "cnnlab" / "kmnist"
    assert bad_requests == good_requests == ["/" + name for name in sums]
    assert sorted(p.name for p in cache.iterdir()) == sorted([*sums, MARKER])  # no .part left behind
    assert torch.equal(data.train_images[:, 0], torch.from_numpy(arrays["train-images-idx3-ubyte.gz"]))


def test_every_mirror_failing_is_one_line_naming_each(home, tmp_path, tiny):
    served = tmp_path / "served"
    sums = write_idx_files(tmp_path / "good", idx_arrays(N_TRAIN, N_TEST))
    served.mkdir()
    (served / "train-images-idx3-ubyte.gz").write_bytes(b"truncated")
    with serve(served) as (url, _):
        tiny("mnist", sums, mirrors=(url, url + "missing/"))
        with pytest.raises(DataError) as error:
            load_dataset("mnist")
    message = str(error.value)
    assert "\n" not in message and "the download failed" in message
    assert f"{url}train-images-idx3-ubyte.gz: md5 mismatch, got {md5(b'truncated')}, expected " in message
    assert f"{url}missing/train-images-idx3-ubyte.gz: HTTPError: File not found" in message
    assert sorted(p.name for p in (home / ".cache" / "cnnlab" / "mnist").iterdir()) == [MARKER]


def test_a_folder_of_own_images_never_gets_a_download(tmp_path, tiny):
    (tmp_path / "cats").mkdir()
    (tmp_path / "cats" / "tom.png").write_bytes(b"\x89PNG")
    before = listing(tmp_path)
    with serve(tmp_path) as (url, requested):
        tiny("mnist", write_idx_files(tmp_path / "elsewhere", idx_arrays(N_TRAIN, N_TEST)), mirrors=(url,))
        before = listing(tmp_path)
        with pytest.raises(DataError, match="not writing into someone else's data folder"):
            load_dataset("mnist", tmp_path / "cats")
    assert requested == [] and listing(tmp_path) == before


@needs_real_data
def test_fashion_mnist_value_is_the_classic_load():
    data = load_dataset("fashion-mnist")
    classic = load_fashion_mnist()
    assert data.train_images.shape == (60000, 1, 28, 28) and data.test_images.shape == (10000, 1, 28, 28)
    assert data.train_images.data_ptr() == classic.train_images.data_ptr()  # one copy in memory, two views
    assert data.mean == (MEAN,) and data.std == (STD,) and data.flip is True
    assert data.classes == classic.classes and load_dataset() is data  # fashion-mnist is the default, cached


@needs_real_data
@pytest.mark.slow
def test_conform_resizes_and_converts_with_torchvision(monkeypatch):
    from torchvision.transforms.v2 import functional as TF

    data = load_dataset("fashion-mnist", image_size=32, channels=3)
    first = load_dataset("fashion-mnist").train_images[:5]
    expected = TF.resize(first.expand(-1, 3, -1, -1), [32, 32], antialias=True)
    assert data.train_images.shape == (60000, 3, 32, 32) and torch.equal(data.train_images[:5], expected)
    assert len(data.mean) == 3 and data.mean[0] == data.mean[2] != MEAN
    pixels = data.train_images[:, 0].double() / 255
    assert data.std[0] == pytest.approx(pixels.std().item(), rel=1e-9)


def test_statistics_match_numpy(tmp_path, tiny):
    """The statistics come from float64 sums: the same as numpy's on the same pixels."""
    arrays = idx_arrays(N_TRAIN, N_TEST, seed=9)
    tiny("mnist", write_idx_files(tmp_path, arrays))
    data = load_dataset("mnist", tmp_path)
    pixels = arrays["train-images-idx3-ubyte.gz"].astype(np.float64) / 255
    assert data.mean[0] == pytest.approx(pixels.mean(), rel=1e-12)
    assert data.std[0] == pytest.approx(pixels.std(ddof=1), rel=1e-12)
