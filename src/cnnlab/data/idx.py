"""Reading IDX files (the MNIST / Fashion-MNIST container), gzip'd or not, straight into a tensor.

IDX layout (LeCun's MNIST page, http://yann.lecun.com/exdb/mnist/): a 4-byte big-endian magic ``0x0000TTDD``
with element type ``TT`` (0x08 = unsigned byte) and number of dimensions ``DD``, then ``DD`` big-endian uint32
sizes, then the elements in row-major order. Fashion-MNIST images use magic 2051 (``0x00000803``: uint8, 3 dims)
and labels 2049 (``0x00000801``: uint8, 1 dim).

The file is decompressed in memory rather than extracted beside itself, so read-only data folders work, and
every way a file can be damaged ends in a one-line :class:`~cnnlab.errors.DataError` naming the file.
"""

from __future__ import annotations

import gzip
import math
import os
import struct
import zlib
from pathlib import Path

import numpy as np
import torch

from cnnlab.errors import DataError

__all__ = ["read_idx", "idx_from_bytes", "parse_idx"]

GZIP_MAGIC = b"\x1f\x8b"
UBYTE = 0x08  # the only element type Fashion-MNIST uses; the others (int8, int16, ...) are not needed here


def read_idx(path: str | os.PathLike, ndim: int | None = None) -> torch.Tensor:
    """Read an IDX file of unsigned bytes, gzip-compressed (detected by its magic bytes) or plain.

    Args:
        path: the ``.gz`` (or uncompressed) IDX file.
        ndim: the number of dimensions the file must have (3 for images, 1 for labels); ``None`` accepts any.

    Returns:
        A writable ``torch.uint8`` tensor with the shape the header declares, e.g. ``(60000, 28, 28)``.

    Raises:
        DataError: the file is missing, not valid gzip, truncated, or its header disagrees with its payload.

    Example:
        >>> read_idx("train-labels-idx1-ubyte.gz", ndim=1)[:3]  # doctest: +SKIP
        tensor([9, 0, 0], dtype=torch.uint8)
    """
    path = Path(path)
    try:
        raw = path.read_bytes()
    except OSError as e:
        raise DataError(f"{path}: cannot read IDX file ({e.strerror or e})") from e
    return idx_from_bytes(raw, str(path), ndim)


def idx_from_bytes(raw: bytes, name: str = "<bytes>", ndim: int | None = None) -> torch.Tensor:
    """:func:`read_idx` on a file's contents already in memory (gzip'd or not); ``name`` is used in errors."""
    if raw[:2] == GZIP_MAGIC:
        try:
            raw = gzip.decompress(raw)
        except EOFError as e:
            raise DataError(f"{name}: truncated gzip (the compressed stream ends early)") from e
        except (OSError, zlib.error) as e:  # gzip.BadGzipFile is an OSError: bad header or CRC
            raise DataError(f"{name}: corrupt gzip ({e})") from e
    return parse_idx(raw, name=name, ndim=ndim)


def parse_idx(data: bytes, name: str = "<bytes>", ndim: int | None = None) -> torch.Tensor:
    """Parse an uncompressed IDX byte string of unsigned bytes; ``name`` is used in error messages."""
    if len(data) < 4:
        raise DataError(f"{name}: file has {len(data)} bytes, too short for an IDX header")
    (magic,) = struct.unpack(">I", data[:4])
    dtype_byte, dims_in_header = (magic >> 8) & 0xFF, magic & 0xFF
    wanted = f"0x000008{ndim:02x}" if ndim is not None else "0x000008nn (unsigned-byte IDX)"
    if magic >> 16 != 0 or dtype_byte != UBYTE or dims_in_header == 0 or ndim not in (None, dims_in_header):
        raise DataError(f"{name}: bad IDX magic 0x{magic:08x}, expected {wanted}")
    header = 4 + 4 * dims_in_header
    if len(data) < header:
        raise DataError(f"{name}: header declares {dims_in_header} dims but the file ends after {len(data)} bytes")
    dims = struct.unpack(f">{dims_in_header}I", data[4:header])
    expected = math.prod(dims)
    payload = len(data) - header
    if payload != expected:
        shape = " x ".join(map(str, dims))
        raise DataError(f"{name}: payload has {payload} bytes, header says {expected} ({shape})")
    # frombuffer is a zero-copy view of immutable bytes; the one copy makes the tensor writable and owned
    # (torch.from_numpy warns on read-only arrays); it is one memcpy, small next to reading the file.
    array = np.frombuffer(data, dtype=np.uint8, count=expected, offset=header).reshape(dims).copy()
    return torch.from_numpy(array)
