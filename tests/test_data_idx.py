"""IDX parsing on small files written on the fly: the valid cases, and every way a file can be damaged."""

from __future__ import annotations

import gzip
import struct

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from cnnlab.data import read_idx
from cnnlab.data.idx import parse_idx
from cnnlab.errors import CnnlabError, DataError


def idx_bytes(array: np.ndarray, magic: int | None = None, dims: tuple[int, ...] | None = None) -> bytes:
    """An IDX byte string for a uint8 array; ``magic``/``dims`` override the header to build broken files."""
    dims = array.shape if dims is None else dims
    magic = (0x08 << 8 | len(dims)) if magic is None else magic
    return struct.pack(f">I{len(dims)}I", magic, *dims) + array.astype(np.uint8).tobytes()


def write_gz(path, data: bytes):
    path.write_bytes(gzip.compress(data))
    return path


@pytest.fixture
def images() -> np.ndarray:
    return np.random.default_rng(0).integers(0, 256, size=(5, 4, 3), dtype=np.uint8)


def assert_one_line(error: pytest.ExceptionInfo, *parts: str) -> None:
    message = str(error.value)
    assert "\n" not in message
    for part in parts:
        assert part in message, f"{part!r} not in {message!r}"


def test_reads_gzipped_images(tmp_path, images):
    path = write_gz(tmp_path / "x-idx3-ubyte.gz", idx_bytes(images))
    out = read_idx(path, ndim=3)
    assert out.dtype == torch.uint8 and out.shape == (5, 4, 3)
    np.testing.assert_array_equal(out.numpy(), images)
    out[0, 0, 0] = 7  # writable and owned, not a view of an immutable buffer


def test_reads_labels_and_plain_files(tmp_path):
    labels = np.array([9, 0, 0, 3, 255], dtype=np.uint8)
    (tmp_path / "labels").write_bytes(idx_bytes(labels))
    out = read_idx(str(tmp_path / "labels"))  # uncompressed, str path, any ndim
    assert out.tolist() == [9, 0, 0, 3, 255]


def test_official_magics_are_accepted():
    assert parse_idx(struct.pack(">II", 2049, 2) + b"\x01\x02", ndim=1).tolist() == [1, 2]
    assert parse_idx(struct.pack(">IIII", 2051, 1, 1, 2) + b"\x03\x04", ndim=3).tolist() == [[[3, 4]]]


def test_truncated_gzip(tmp_path, images):
    blob = gzip.compress(idx_bytes(images))
    path = tmp_path / "cut.gz"
    path.write_bytes(blob[: len(blob) - 9])
    with pytest.raises(DataError) as error:
        read_idx(path)
    assert_one_line(error, str(path), "truncated gzip")


def test_corrupt_gzip_crc(tmp_path, images):
    blob = bytearray(gzip.compress(idx_bytes(images)))
    blob[-6] ^= 0xFF  # inside the CRC32 of the trailer
    path = tmp_path / "crc.gz"
    path.write_bytes(bytes(blob))
    with pytest.raises(DataError) as error:
        read_idx(path)
    assert_one_line(error, str(path), "corrupt gzip")


@pytest.mark.parametrize("magic", [0x00000903, 0x01000803, 0x00000800, 0x08030000])
def test_bad_magic(tmp_path, images, magic):
    path = write_gz(tmp_path / "bad.gz", idx_bytes(images, magic=magic, dims=images.shape))
    with pytest.raises(DataError) as error:
        read_idx(path, ndim=3)
    assert_one_line(error, str(path), f"bad IDX magic 0x{magic:08x}, expected 0x00000803")


def test_label_file_where_images_are_expected(tmp_path):
    path = write_gz(tmp_path / "labels.gz", idx_bytes(np.arange(4)))
    with pytest.raises(DataError) as error:
        read_idx(path, ndim=3)
    assert_one_line(error, "bad IDX magic 0x00000801, expected 0x00000803")
    assert read_idx(path, ndim=1).tolist() == [0, 1, 2, 3]


def test_header_shorter_than_its_dims(tmp_path):
    path = write_gz(tmp_path / "dims.gz", struct.pack(">II", 0x0803, 60000))  # 3 dims declared, 1 given
    with pytest.raises(DataError) as error:
        read_idx(path)
    assert_one_line(error, str(path), "header declares 3 dims")


def test_tiny_file(tmp_path):
    path = write_gz(tmp_path / "tiny.gz", b"\x00\x00")
    with pytest.raises(DataError, match="too short for an IDX header"):
        read_idx(path)


@pytest.mark.parametrize("delta", [-2, -1, 1])
def test_payload_length_must_match_dims(tmp_path, images, delta):
    blob = idx_bytes(images)
    blob = blob[:delta] if delta < 0 else blob + b"\x00" * delta
    path = write_gz(tmp_path / "payload.gz", blob)
    with pytest.raises(DataError) as error:
        read_idx(path)
    assert_one_line(error, str(path), f"payload has {60 + delta} bytes, header says 60")


def test_wrong_dims_in_header(tmp_path, images):
    path = write_gz(tmp_path / "dims.gz", idx_bytes(images, dims=(5, 4, 4)))
    with pytest.raises(DataError) as error:
        read_idx(path)
    assert_one_line(error, "payload has 60 bytes, header says 80 (5 x 4 x 4)")


def test_missing_file_is_a_cnnlab_error(tmp_path):
    with pytest.raises(CnnlabError) as error:
        read_idx(tmp_path / "nope.gz")
    assert_one_line(error, "nope.gz", "cannot read")


@settings(max_examples=40, deadline=None)
@given(st.lists(st.integers(0, 5), min_size=1, max_size=4), st.randoms(use_true_random=False))
def test_round_trip_any_shape(dims, rnd):
    array = np.array([rnd.randrange(256) for _ in range(int(np.prod(dims)))], dtype=np.uint8).reshape(dims)
    out = parse_idx(gzip.decompress(gzip.compress(idx_bytes(array))), ndim=len(dims))
    assert tuple(out.shape) == tuple(dims)
    np.testing.assert_array_equal(out.numpy(), array)
