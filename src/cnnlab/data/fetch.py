"""Where a dataset's files are read from, and md5-checked downloads into the one place cnnlab may write.

The rule every source follows: a folder the user names (``--data-dir``, ``$CNNLAB_DATA``) is read as found, in
the common layouts, or refused with what was expected; it is never created and never downloaded into, because it
may be a typo, a read-only shared copy, or a folder of the user's own images. Downloads go only into the cache
(``<cache>/<dataset>``) or a folder cnnlab itself downloaded into before (it holds our marker file), which lets
an interrupted download finish.
"""

from __future__ import annotations

import hashlib
import http.client
import os
import sys
import urllib.error
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from cnnlab.data.store import cache_root
from cnnlab.errors import DataError

__all__ = ["MARKER", "DataFolder", "locate", "check_md5", "download", "is_downloadable"]

MARKER = ".cnnlab-download"  # left in folders cnnlab downloads into, so it may finish an interrupted download
TIMEOUT_S = 60  # per network read: a stalled mirror fails over instead of hanging the run
_CHUNK = 1 << 20


@dataclass(frozen=True)
class DataFolder:
    """A dataset's folder and where the choice came from (named in every error message)."""

    path: Path
    source: str  # "--data-dir", "$CNNLAB_DATA" or "default cache"

    @property
    def where(self) -> str:
        return f"{self.path} (from {self.source})"


def is_downloadable(path: Path, name: str) -> bool:
    """True for the cache folder of dataset ``name`` and for folders holding cnnlab's marker."""
    return path.expanduser().absolute() == (cache_root() / name).absolute() or (path / MARKER).is_file()


def locate(name: str, root: str | os.PathLike | None, expected: str, env_var: str | None = None) -> DataFolder:
    """The folder to read dataset ``name`` from: ``root``, else ``$env_var`` (if given and set), else the cache.

    A folder named by the user must exist and be a folder; the cache folder need not exist yet.

    Raises:
        DataError: ``root`` (or the variable) names a file, or nothing; the message says what was expected.
    """
    if root is not None and str(root) != "":
        folder = DataFolder(Path(root).expanduser(), "--data-dir")
    elif env_var and os.environ.get(env_var, ""):  # an empty variable counts as unset
        folder = DataFolder(Path(os.environ[env_var]).expanduser(), f"${env_var}")
    else:
        return DataFolder(cache_root() / name, "default cache")
    default = f"without {folder.source}, cnnlab reads and downloads {cache_root() / name}"
    if folder.path.exists() and not folder.path.is_dir():
        raise DataError(f"{folder.where} is a file; expected a folder with {expected} ({default})")
    if not folder.path.exists():
        raise DataError(f"{folder.where} does not exist; expected a folder with {expected} ({default})")
    return folder


def check_md5(path: Path, data: bytes, md5: str) -> None:
    """Raise a DataError naming ``path`` when ``data`` (its contents) does not have the md5 sum ``md5``."""
    actual = hashlib.md5(data).hexdigest()
    if actual != md5:
        raise DataError(f"{path}: md5 mismatch, expected {md5}, got {actual} (a corrupt or different file)")


class _Md5Mismatch(Exception):
    pass


def _fetch(url: str, dest: Path, md5: str) -> None:
    """Stream ``url`` to ``dest`` via ``dest.part``, checking the md5 sum before the rename."""
    from tqdm import tqdm

    part = dest.with_name(dest.name + ".part")  # a killed download leaves a .part, never a bad file under the name
    digest = hashlib.md5()
    try:
        request = urllib.request.Request(url, headers={"User-Agent": "cnnlab"})
        with urllib.request.urlopen(request, timeout=TIMEOUT_S) as response, open(part, "wb") as out, \
                tqdm(total=int(response.headers.get("Content-Length") or 0) or None, unit="B", unit_scale=True,
                     desc=dest.name, disable=not sys.stderr.isatty(), leave=False) as bar:
            while chunk := response.read(_CHUNK):
                digest.update(chunk)
                out.write(chunk)
                bar.update(len(chunk))
        if digest.hexdigest() != md5:
            raise _Md5Mismatch(f"md5 mismatch, got {digest.hexdigest()}, expected {md5} (a corrupt or different file)")
        os.replace(part, dest)
    finally:
        part.unlink(missing_ok=True)


def download(folder: DataFolder, name: str, title: str, files: dict[str, str], mirrors: Sequence[str],
             download: bool, hint: str) -> None:
    """Fetch ``files`` (file name -> md5) into ``folder`` from the first mirror that serves each correctly.

    Args:
        folder: where the files go; must be the cache or a folder cnnlab downloaded into.
        name: the dataset's registry name (its cache folder's name).
        title: the dataset's name in messages, e.g. ``"MNIST"``.
        files: what to fetch, with the md5 sums the official releases publish.
        mirrors: URL prefixes tried in order.
        download: False refuses instead of fetching (``download=False``).
        hint: what the user can do instead, ending every refusal.

    Raises:
        DataError: downloads are off, the folder is not ours to write, or every mirror failed (each one named).
    """
    missing = ", ".join(files)
    if not download:
        raise DataError(f"{title} missing {missing} in {folder.where}; downloads are off; {hint}")
    if not is_downloadable(folder.path, name):
        raise DataError(f"{title} folder {folder.where} lacks {missing}; not writing into someone else's data "
                        f"folder (cnnlab downloads only into {cache_root() / name}); {hint}")
    try:
        folder.path.mkdir(parents=True, exist_ok=True)
        (folder.path / MARKER).touch()
    except OSError as e:
        raise DataError(f"{title} missing in {folder.where} and the folder is not writable ({e.strerror}); "
                        f"{hint}") from e
    for file, md5 in files.items():
        errors = []
        for mirror in mirrors:
            url = mirror + file
            print(f"cnnlab: downloading {url} into {folder.path}", file=sys.stderr)
            try:
                _fetch(url, folder.path / file, md5)
                break
            except (OSError, http.client.HTTPException, _Md5Mismatch) as e:  # URLError and timeouts are OSErrors
                reason = e if isinstance(e, _Md5Mismatch) else \
                    f"{type(e).__name__}: {e.reason if isinstance(e, urllib.error.URLError) else e}"
                errors.append(f"{url}: {reason}".replace("\n", " "))
        else:
            raise DataError(f"{title} missing {file} in {folder.where} and the download failed "
                            f"({'; '.join(errors)}); {hint}")
