"""Shared test set-up: find the read-only Fashion-MNIST copy beside the checkout when CNNLAB_DATA is unset, and put
torch's process-wide kernel switches back after each test."""

import os
from pathlib import Path

import pytest

from cnnlab.device import torch_switches_restored

_SHARED = Path(__file__).resolve().parents[2] / "shared" / "data" / "fashion-mnist"
if not os.environ.get("CNNLAB_DATA") and _SHARED.is_dir():
    os.environ["CNNLAB_DATA"] = str(_SHARED)


@pytest.fixture(scope="session")
def data_dir() -> Path:
    """The real Fashion-MNIST folder (CI always has it; elsewhere the tests that need it are skipped)."""
    path = os.environ.get("CNNLAB_DATA")
    if not path or not Path(path, "train-images-idx3-ubyte.gz").exists():
        pytest.skip("Fashion-MNIST not found: set CNNLAB_DATA to a folder with the four .gz files")
    return Path(path)


@pytest.fixture(autouse=True)
def _torch_global_flags():
    """Put back the process-wide kernel switches a test changed (a test that builds a run without train() or
    resume(), or sets them itself), which would otherwise carry over into every later test of the same worker."""
    with torch_switches_restored():
        yield


@pytest.fixture
def heif_absent(monkeypatch):
    """cnnlab as it reads pictures without pillow-heif (the ``heic`` extra), whether or not it is installed: HEIC
    photos are named and refused. (tests/test_picture_heic.py checks the same in a process that cannot import it.)"""
    from cnnlab import picture

    monkeypatch.setattr(picture, "heif_read", lambda: False)
    picture.picture_extensions.cache_clear()  # its endings were listed with HEIF's where pillow-heif is installed
    yield
    picture.picture_extensions.cache_clear()
