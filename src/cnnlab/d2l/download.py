"""The book's file downloads (d2l 5.7.1): ``DATA_HUB``, ``DATA_URL``, ``download``, ``extract``, ``download_extract``.

As in d2l, a file whose SHA-1 matches is used from the folder without a network call, so a copy put there by hand
works offline. Unlike d2l, a download that cannot finish (no network, an HTTP error, a wrong checksum) raises one
``CnnlabError`` line after a bounded wait instead of hanging or leaving a half-written file, and the file is
written atomically.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tarfile
import urllib.error
import urllib.request
import zipfile
from pathlib import Path

from cnnlab.errors import CnnlabError
from cnnlab.io import atomic_write

__all__ = ["DATA_HUB", "DATA_URL", "download", "extract", "download_extract"]

DATA_HUB: dict[str, tuple[str, str]] = {}
DATA_URL = "http://d2l-data.s3-accelerate.amazonaws.com/"
TIMEOUT_S = 30.0  # per connection attempt and per read: a dead network fails in seconds, not never


def _sha1(path: Path) -> str:
    sha1 = hashlib.sha1()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            sha1.update(block)
    return sha1.hexdigest()


def download(url: str, folder: str | os.PathLike = "../data", sha1_hash: str | None = None) -> str:
    """Download ``url`` into ``folder`` and return the local path; ``url`` may also be a ``DATA_HUB`` name.

    A file already there is returned without downloading when ``sha1_hash`` matches or is not given (d2l
    downloads again without a hash); one with the wrong hash is replaced.
    """
    if not url.startswith("http"):
        if url not in DATA_HUB:
            raise CnnlabError(f"expected a URL or a DATA_HUB name, got {url!r} (known: {sorted(DATA_HUB)})")
        url, sha1_hash = DATA_HUB[url]
    path = Path(folder) / url.split("/")[-1]
    if path.exists():
        if not sha1_hash:  # nothing to check it against: keep it (d2l would fetch it again over it)
            return str(path)
        if _sha1(path) == sha1_hash:
            return str(path)
        print(f"{path} has the wrong SHA-1: replacing it")
    path.parent.mkdir(parents=True, exist_ok=True)
    print(f"Downloading {path} from {url}...")

    def fetch(tmp: str) -> None:
        try:
            with urllib.request.urlopen(url, timeout=TIMEOUT_S) as response, open(tmp, "wb") as out:
                shutil.copyfileobj(response, out)
        except (urllib.error.URLError, OSError) as e:  # no network, DNS, HTTP status, timeout
            reason = f"HTTP {e.code} {e.reason}" if isinstance(e, urllib.error.HTTPError) else getattr(e, "reason", e)
            raise CnnlabError(f"could not download {url} to {path}: {reason}; this needs the internet, or put "
                              f"the file there yourself") from e
        if sha1_hash and _sha1(Path(tmp)) != sha1_hash:
            raise CnnlabError(f"{url} downloaded with SHA-1 {_sha1(Path(tmp))}, expected {sha1_hash}")

    atomic_write(path, fetch)
    return str(path)


def extract(filename: str | os.PathLike, folder: str | os.PathLike | None = None) -> None:
    """Unpack a .zip, .tar or .tar.gz archive into ``folder`` (default: the archive's own folder)."""
    filename = Path(filename)
    folder = Path(folder) if folder is not None else filename.parent
    if filename.suffix == ".zip":
        with zipfile.ZipFile(filename) as archive:
            archive.extractall(folder)
    elif filename.suffix in (".tar", ".gz"):
        with tarfile.open(filename) as archive:
            # The "data" filter refuses absolute paths and links out of the folder (PEP 706), where Python has it.
            kwargs = {"filter": "data"} if hasattr(tarfile, "data_filter") else {}
            archive.extractall(folder, **kwargs)
    else:
        raise CnnlabError(f"expected a .zip, .tar or .gz archive, got {filename.name!r}")


def download_extract(name: str, folder: str | None = None) -> str:
    """Download the ``DATA_HUB`` archive ``name``, unpack it beside itself, and return the unpacked folder."""
    path = Path(download(name))
    extract(path)
    # d2l's own rule, os.path.splitext once: glove.6B.50d.zip -> glove.6B.50d, and x.tar.gz -> x.tar
    return str(path.parent / folder) if folder else str(path.with_suffix(""))
