"""Writing files so that a crash never leaves half of one: the atomic write and the JSON, text and figure
helpers built on it, plus the metrics table every run folder holds.

Every file cnnlab writes goes through :func:`atomic_write`: a reader (or a resumed run) sees the old file or the
new one, never a mix.
"""

from __future__ import annotations

import codecs
import contextlib
import csv
import io
import json
import math
import os
import shutil
import sys
import tempfile
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

from cnnlab.errors import CnnlabError


def atomic_write(path: str | Path, write: Callable[[str], Any], overwrite: bool = True) -> None:
    """Call ``write(tmp_path)`` then move the file into place, so a crash leaves the previous ``path`` intact.

    The temporary file lives in the destination folder (``os.replace`` is atomic only within one file system)
    and is fsync'ed before the rename.

    ``overwrite=False`` never replaces a file: :func:`check_output_file` looked before the work, and a file that
    another program (a second export or plot to the same name) put at ``path`` while ``write`` ran is kept, with a
    CnnlabError and nothing written.
    """
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    umask = os.umask(0)  # mkstemp makes 0600 files; give the result the mode a plain open() would
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)
    try:
        write(tmp)
        # again: a writer may replace the file rather than write into it (the safetensors library writes 0600 files)
        os.chmod(tmp, 0o666 & ~umask)
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        if overwrite:
            os.replace(tmp, path)
        else:
            _move_unless_taken(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_link(source: str | Path, path: str | Path) -> None:
    """Make ``path`` the file ``source`` is, atomically (:func:`atomic_write`): a hard link, which writes no byte,
    where the file system allows one, else a copy. A later atomic write of either name replaces that name alone (a
    new file is moved into place), so the other keeps what both held."""

    def link(tmp: str) -> None:
        os.unlink(tmp)  # mkstemp's empty file: the link takes its unique name
        try:
            os.link(source, tmp)
        except OSError:  # no hard links there (some network and FUSE file systems)
            shutil.copyfile(source, tmp)

    atomic_write(path, link)


def _move_unless_taken(tmp: str, path: Path) -> None:
    """Move ``tmp`` to ``path`` unless a file has that name; a hard link is made only where none has, so the look
    and the move are one step."""
    taken = CnnlabError(f"{path} appeared while it was being written (another program writing the same name?); "
                        "it is left as it is and nothing was written: pass --force (force=True in Python) to replace "
                        "it")
    try:
        os.link(tmp, path)
    except FileExistsError:
        raise taken from None
    except OSError:  # a file system without hard links (FAT, some network shares): look, then move
        if os.path.lexists(path):
            raise taken from None
        os.replace(tmp, path)
        return
    os.unlink(tmp)


def check_output_file(path: str | Path, force: bool = False, what: str = "", make_folder: bool = False) -> Path:
    """Refuse, in one line, an output file that :func:`atomic_write` could not write; call it before the work.

    The commands that write one named file (export, lr-find's and compare's plots, kernel's figure) check here
    first, so a bad path costs nothing: ``path`` must not be a folder, must not exist unless ``force``, and its
    folder must exist (or be made, with ``make_folder``) and take a new file. Writability is probed by creating and
    removing a temporary file there, as :func:`atomic_write` will: permission bits say nothing for root, nor for
    a read-only file system or /proc. Suffix rules stay with each command.

    Args:
        path: the file to be written.
        force: an existing file may be replaced.
        what: how messages name the file, e.g. ``"output "`` or ``"plot file "`` (with its trailing space).
        make_folder: create a missing folder (and its parents) instead of refusing it.

    Returns:
        ``path`` as a Path.

    Raises:
        CnnlabError: one of the above, naming the path and what was expected.
    """
    path = Path(path)
    if path.is_dir():
        raise CnnlabError(f"{what}{path} is a folder, expected a file name")
    if path.exists() and not force:
        raise CnnlabError(f"{what}{path} already exists; pass --force (force=True in Python) to overwrite it")
    folder = path.parent
    if make_folder and not folder.exists():
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise CnnlabError(f"cannot write {path}: cannot make folder {folder} ({e.strerror or e})") from None
    if not folder.is_dir():
        problem = "is a file, not a folder" if folder.exists() else "does not exist"
        raise CnnlabError(f"cannot write {path}: folder {folder} {problem}")
    try:
        fd, probe = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=folder)
    except OSError as e:
        raise CnnlabError(f"cannot write {path}: folder {folder} is not writable ({e.strerror or e})") from None
    os.close(fd)
    os.unlink(probe)
    return path


def remove_stale_temporaries(folder: str | Path) -> list[Path]:
    """Delete the temporary files :func:`atomic_write` left in ``folder`` when its process died mid-write.

    Only names of its own pattern (``.NAME.RANDOM.tmp``) go; call it only while no other process writes there
    (a resumed run owns its folder). Returns what was removed.
    """
    stale = [p for p in Path(folder).glob(".*.*.tmp") if p.is_file()]
    for p in stale:
        p.unlink(missing_ok=True)
    return stale


def missing_folders(path: str | Path) -> list[Path]:
    """The folders ``Path(path).mkdir(parents=True)`` would create, outermost first ([] when ``path`` exists).

    Taken before a command makes its output folder, so that a refusal after it can undo exactly that
    (:func:`remove_made_folders`).
    """
    missing: list[Path] = []
    for folder in (Path(path), *Path(path).parents):
        if folder.exists() or folder.is_symlink():
            break
        missing.append(folder)
    return missing[::-1]


def remove_made_folders(made: list[Path], own: tuple[str, ...] = ()) -> None:
    """Undo the folders a refused command made (``made``: :func:`missing_folders` before it made them).

    The files named in ``own`` (what the command itself wrote into the innermost folder before it was refused) go
    first; then each folder, innermost first, as long as it is empty: a file anything else put there stays, and
    so do the folders holding it.
    """
    if not made:
        return
    for name in own:
        (made[-1] / name).unlink(missing_ok=True)
    for folder in reversed(made):
        try:
            folder.rmdir()
        except OSError:  # not empty (or already gone): leave it and what holds it
            return


def writable_text(text: str) -> str:
    """``text`` with each lone surrogate as U+FFFD. Python holds a file name that is not UTF-8 (Latin-1 from an old
    archive) with lone surrogates in it, which no UTF-8 page, response or file can carry."""
    return text.encode("utf-16", "surrogatepass").decode("utf-16", "replace")


BYTE_ESCAPES = "cnnlab.byte-escapes"  # the codec error handler below, registered under this name


def byte_escapes(error: UnicodeError) -> tuple[str, int]:
    """A codec error handler (:func:`codecs.register_error`) for text a person reads: each byte of a file name that
    is not UTF-8, which Python holds as a lone surrogate (U+DC00 + the byte), as the escape of that byte (``\\xff``;
    Python's own ``backslashreplace`` writes ``\\udcff``, which names no byte), and any other character the stream
    cannot encode as ``backslashreplace`` writes it."""
    if not isinstance(error, UnicodeEncodeError):
        raise error
    unwritable = error.object[error.start:error.end]
    return "".join(f"\\x{ord(c) - 0xDC00:02x}" if 0xDC80 <= ord(c) <= 0xDCFF
                   else c.encode("ascii", "backslashreplace").decode("ascii") for c in unwritable), error.end


codecs.register_error(BYTE_ESCAPES, byte_escapes)


@contextlib.contextmanager
def file_names_written() -> Iterator[None]:
    """Within it, ``print`` writes any file name. Python holds one that is not UTF-8 (Latin-1 from an old archive)
    with lone surrogates, which a strict stdout (en_US.UTF-8's) cannot print: every line naming one was an internal
    error. On stdout, a program's input, they are written back as the bytes they were, as ls writes them; on stderr,
    a person's, each as the escape of its byte (``\\xff``, :func:`byte_escapes`), where Python wrote ``\\udcff``.
    The CLI runs every command in it, and a sweep's worker process its trials."""
    streams = {stream: stream.errors for stream in (sys.stdout, sys.stderr) if isinstance(stream, io.TextIOWrapper)}
    if streams.get(sys.stdout) == "strict":
        sys.stdout.reconfigure(errors="surrogateescape")
    if sys.stderr in streams:
        sys.stderr.reconfigure(errors=BYTE_ESCAPES)
    try:
        yield
    finally:
        for stream, errors in streams.items():
            stream.reconfigure(errors=errors)


def writable_json(value: Any) -> Any:
    """``value`` (what ``json.dumps`` takes) with every string in it, keys too, made :func:`writable_text`: a lone
    surrogate would be written as an escape (``"\\udcff"``) that strict JSON readers (Rust's serde_json) refuse and
    others (jq, Go) turn into U+FFFD without a word."""
    if isinstance(value, str):
        return writable_text(value)
    if isinstance(value, dict):
        return {writable_json(k): writable_json(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [writable_json(v) for v in value]
    return value


def json_beside(path: str | Path, name: str) -> dict[str, Any]:
    """The JSON object in the file ``name`` beside ``path`` (at most 1 MB), or {} where there is none: what a
    Hugging Face folder keeps beside its weights or its ONNX export (``config.json``, ``preprocessor_config.json``)."""
    beside = Path(path).parent / name
    try:
        if beside.is_file() and beside.stat().st_size <= 2**20:
            value = json.loads(beside.read_text(encoding="utf-8"))
            return value if isinstance(value, dict) else {}
    except (OSError, ValueError):  # unreadable, not UTF-8, not JSON: it says nothing
        pass
    return {}


def write_text(path: str | Path, text: str) -> None:
    atomic_write(path, lambda tmp: Path(tmp).write_text(text))


def write_json(path: str | Path, obj: Any) -> None:
    write_text(path, json.dumps(obj, indent=2, sort_keys=False) + "\n")


def check_figure_file(path: str | Path, force: bool = False, what: str = "", make_folder: bool = False) -> Path:
    """:func:`check_output_file` for a figure, which must also end in a suffix matplotlib writes on this machine
    (none: PNG)."""
    import matplotlib
    from matplotlib.figure import Figure

    supported = set(Figure().canvas.get_supported_filetypes())
    # Matplotlib lists PGF, but writes it by running LaTeX (to measure the text): without that program a .pgf passed
    # this check and failed after the work with "'xelatex' not found", an internal error. Every other format it
    # writes by itself.
    latex = matplotlib.rcParams["pgf.texsystem"]
    needs = {"pgf": latex} if shutil.which(latex) is None else {}
    suffix = Path(path).suffix.lstrip(".").lower()
    if suffix not in ("", *supported) or suffix in needs:
        missing = f" (.{suffix} needs {needs[suffix]}, which is not installed)" if suffix in needs else ""
        raise CnnlabError(f"{what}expected an image file ending in one of "
                          f"{', '.join('.' + f for f in sorted(supported - set(needs)))}, got {str(path)!r}{missing}")
    return check_output_file(path, force, what=what, make_folder=make_folder)


def save_figure(fig, path: str | Path, overwrite: bool = True) -> None:
    """Save a matplotlib figure atomically (the format from the suffix) and free it; ``overwrite``: as
    :func:`atomic_write` takes it."""
    import matplotlib.pyplot as plt

    path = Path(path)
    try:
        atomic_write(path, lambda tmp: fig.savefig(tmp, format=path.suffix.lstrip(".") or "png", dpi=110,
                                                   bbox_inches="tight"), overwrite)
    finally:
        plt.close(fig)


# val_bal_acc: the validation balanced accuracy (the mean of the classes' recalls); empty in the rows of a run from
# before it was recorded, which read as NaN like any other unmeasured cell
METRIC_COLUMNS = ("epoch", "train_loss", "train_acc", "val_loss", "val_acc", "val_bal_acc", "lr", "seconds",
                  "images_per_s")

# What the train_loss column is under --balance, beside val_loss (unweighted, on the data as it falls): another
# measure, so a plot or table that shows the two together says so.
TRAIN_LOSS_UNDER = {"loss": "class-weighted", "sampler": "on class-balanced batches"}


def train_loss_under(balance: Any) -> str | None:
    """What the training loss is under ``balance`` (a run's --balance): ``class-weighted``, ..., or None for plain
    (also for anything else a hand-edited config may hold, a list among them)."""
    return TRAIN_LOSS_UNDER.get(balance) if isinstance(balance, str) else None


def train_loss_label(balance: Any) -> str:
    """``train_loss``, with what it is under ``balance`` (:func:`train_loss_under`): ``train_loss (class-weighted)``."""
    note = train_loss_under(balance)
    return f"train_loss ({note})" if note else "train_loss"


def write_csv(path: str | Path, rows: Iterable[Sequence[Any]], overwrite: bool = True) -> None:
    """Write ``rows`` (the header first, each a sequence of cells; None is an empty cell) as a UTF-8 CSV file, one
    ``\n`` a row, atomically; ``overwrite``: as :func:`atomic_write` takes it."""
    text = io.StringIO(newline="")
    csv.writer(text, lineterminator="\n").writerows(rows)
    atomic_write(path, lambda tmp: Path(tmp).write_text(text.getvalue(), encoding="utf-8"), overwrite)


def write_metrics_csv(path: str | Path, rows: list[dict[str, Any]]) -> None:
    """One row per epoch, the columns of METRIC_COLUMNS (other keys of a row are left out)."""
    write_csv(path, [METRIC_COLUMNS, *([_metric_cell(row.get(c, "")) for c in METRIC_COLUMNS] for row in rows)])


def _metric_cell(value: Any) -> Any:
    return f"{value:.6g}" if isinstance(value, float) else value


def read_metrics_csv(path: str | Path) -> list[dict[str, float]]:
    """The complete rows of a metrics table as numbers (an empty cell is NaN: a figure that was not measured, and so
    is a column of :data:`METRIC_COLUMNS` the file lacks, a hand-edited or another tool's file: every reader of a
    run can take each of them).

    A last line without its newline is a row still being written (a live run watched from outside) and is left
    out. :class:`cnnlab.runs.Run` is how the rest of cnnlab reads a run's metrics.

    Raises:
        OSError, UnicodeDecodeError: the file cannot be read.
        ValueError: a complete row that has the wrong number of fields or is not numeric (the message names its
            line).
    """
    text = Path(path).read_text(encoding="utf-8")
    lines = text.split("\n")[:-1]  # what follows the last newline: nothing, or a row still being written
    if not lines:
        return []
    header, rows = next(csv.reader(lines[:1])), []
    for number, cells in enumerate(csv.reader(lines[1:]), start=2):
        if not cells:  # a blank line, as csv.DictReader skips
            continue
        if len(cells) != len(header):
            raise ValueError(f"line {number} has {len(cells)} fields, expected {len(header)}")
        try:
            rows.append(dict.fromkeys(METRIC_COLUMNS, math.nan) |
                        {k: float(v) if v else math.nan for k, v in zip(header, cells, strict=True)})
        except ValueError:
            raise ValueError(f"line {number} is not numeric: {','.join(cells)[:80]!r}") from None
    return rows
