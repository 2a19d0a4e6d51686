"""Shared by the tests of cnnlab.d2l: the real-data skip marker and a check for the book's layer summaries."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REAL = os.environ.get("CNNLAB_DATA", "")
needs_real_data = pytest.mark.skipif(
    not REAL or not (Path(REAL) / "train-images-idx3-ubyte.gz").is_file(),
    reason="set CNNLAB_DATA to a folder with the four Fashion-MNIST .gz files (the Makefile and CI do)",
)


def summary_lines(rows: list[tuple[str, list[int]]]) -> list[str]:
    """The lines ``layer_summary`` prints for ``(layer class name, output shape)`` rows (d2l 7.6)."""
    return [f"{name} output shape:\t torch.Size({shape})" for name, shape in rows]
