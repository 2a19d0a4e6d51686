"""CIFAR-10/100 from the binary release: small archives in the official layout, read in memory, never unpickled."""

from __future__ import annotations

import dataclasses
import io
import pickle
import tarfile

import numpy as np
import pytest
import torch

import data_support
from cnnlab.data import cifar, load_dataset
from cnnlab.data.fetch import MARKER
from cnnlab.errors import DataError
from data_support import cifar_archive, cifar_records, listing, serve

home = data_support.home  # a fixture
PER_FILE = (6, 8)  # records per training file and in the test file


@pytest.fixture
def tiny(monkeypatch):
    """Make ``name``'s table describe a small archive: ``tiny(name, md5, mirrors=())``."""

    def use(name: str, md5: str, mirrors: tuple[str, ...] = ()) -> cifar.CifarSpec:
        spec = cifar.SPECS[name]
        spec = dataclasses.replace(spec, md5=md5, counts=(PER_FILE[0] * len(spec.train_files), PER_FILE[1]),
                                   mirrors=mirrors or spec.mirrors)
        monkeypatch.setitem(cifar.SPECS, name, spec)
        return spec

    return use


def check_arrays(data, arrays) -> None:
    assert torch.equal(data.train_images, torch.from_numpy(arrays["train_images"]))
    assert torch.equal(data.train_labels, torch.from_numpy(arrays["train_labels"]).long())
    assert torch.equal(data.test_images, torch.from_numpy(arrays["test_images"]))
    assert torch.equal(data.test_labels, torch.from_numpy(arrays["test_labels"]).long())


def test_records_are_channel_major_rows(tmp_path):
    """The page's layout: label, then 1024 red bytes row by row, then green, then blue."""
    image = np.arange(3 * 32 * 32, dtype=np.int64).reshape(3, 32, 32) % 251
    record = bytes([7]) + bytes(image[0].flatten().tolist()) + bytes(image[1].flatten().tolist()) \
        + bytes(image[2].flatten().tolist())
    assert record == cifar_records(image[None].astype(np.uint8), np.array([7]), 1)
    x, y = cifar._records(cifar.SPECS["cifar10"], "r", record)
    assert y.tolist() == [7] and np.array_equal(x[0], image.astype(np.uint8))


@pytest.mark.parametrize("name", ["cifar10", "cifar100"])
def test_archive_is_read_in_memory(tmp_path, tiny, name):
    spec = cifar.SPECS[name]
    md5, arrays = cifar_archive(tmp_path / spec.archive, spec, PER_FILE)
    tiny(name, md5)
    before = listing(tmp_path)
    data = load_dataset(name, tmp_path)
    assert listing(tmp_path) == before  # not extracted, not marked
    check_arrays(data, arrays)
    assert data.train_images.shape == (PER_FILE[0] * len(spec.train_files), 3, 32, 32)
    assert data.classes == tuple(f"class_{i}" for i in range(spec.num_classes)) and data.flip is True
    pixels = torch.from_numpy(arrays["train_images"]).double().div(255).transpose(0, 1).reshape(3, -1)
    assert data.mean == pytest.approx(tuple(pixels.mean(1).tolist()), rel=1e-12)
    assert data.std == pytest.approx(tuple(pixels.std(1).tolist()), rel=1e-12)


@pytest.mark.parametrize("where", ["beside", "itself"])
def test_extracted_folder_is_read_as_found(tmp_path, tiny, where):
    spec = cifar.SPECS["cifar10"]
    md5, arrays = cifar_archive(tmp_path / "archive" / spec.archive, spec, PER_FILE)
    with tarfile.open(tmp_path / "archive" / spec.archive) as tar:
        tar.extractall(tmp_path / "data", filter="data")
    tiny("cifar10", md5)
    root = tmp_path / "data" if where == "beside" else tmp_path / "data" / spec.folder
    check_arrays(load_dataset("cifar10", root), arrays)


def test_wrong_md5_names_the_archive(tmp_path, tiny):
    spec = cifar.SPECS["cifar10"]
    md5, _ = cifar_archive(tmp_path / spec.archive, spec, PER_FILE)
    tiny("cifar10", "0" * 32)
    with pytest.raises(DataError, match=f"{spec.archive}: md5 mismatch, expected 0{{32}}, got {md5}"):
        load_dataset("cifar10", tmp_path)


@pytest.mark.parametrize("damage, problem", [
    ("truncated", "not a readable tar.gz"),
    ("short record", "is not a whole number of 3073-byte CIFAR-10 records"),
    ("label out of range", "label 10 out of range, expected 0..9"),
    ("missing member", "archive has no file cifar-10-batches-bin/test_batch.bin"),
    ("pickle inside", "is not a whole number of 3073-byte CIFAR-10 records"),
])
def test_damaged_archive_is_one_line(tmp_path, tiny, damage, problem):
    spec = cifar.SPECS["cifar10"]
    path = tmp_path / spec.archive
    cifar_archive(path, spec, PER_FILE)
    if damage == "truncated":
        path.write_bytes(path.read_bytes()[: len(path.read_bytes()) // 2])
    else:
        with tarfile.open(path) as tar:
            members = {m.name: tar.extractfile(m).read() for m in tar.getmembers()}
        test = f"{spec.folder}/test_batch.bin"
        if damage == "short record":
            members[test] = members[test][:-1]
        elif damage == "label out of range":
            members[test] = bytes([10]) + members[test][1:]
        elif damage == "missing member":
            del members[test]
        else:  # the python release's format under the binary name: must be refused, never unpickled
            members[test] = pickle.dumps({"data": [1, 2, 3]})
        buffer = io.BytesIO()
        with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
            for name, data in members.items():
                info = tarfile.TarInfo(name)
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
        path.write_bytes(buffer.getvalue())
    tiny("cifar10", data_support.md5(path.read_bytes()))
    with pytest.raises(DataError) as error:
        load_dataset("cifar10", tmp_path)
    assert "\n" not in str(error.value) and str(path) in str(error.value) and problem in str(error.value)


def test_download_goes_to_the_cache(home, tmp_path, tiny):
    spec = cifar.SPECS["cifar100"]
    md5, arrays = cifar_archive(tmp_path / "mirror" / spec.archive, spec, PER_FILE)
    with serve(tmp_path / "mirror") as (url, requested):
        tiny("cifar100", md5, mirrors=(url,))
        data = load_dataset("cifar100")
    cache = home / ".cache" / "cnnlab" / "cifar100"
    assert requested == [f"/{spec.archive}"] and sorted(p.name for p in cache.iterdir()) == [MARKER, spec.archive]
    check_arrays(data, arrays)


def test_tables_name_the_binary_release():
    for spec in cifar.SPECS.values():
        assert spec.archive.endswith("-binary.tar.gz") and len(spec.md5) == 32
        assert spec.mirrors == ("https://www.cs.toronto.edu/~kriz/",)
