"""The labels of a folder's images from a CSV file: Kaggle's ``train.csv``, fastai's ``labels.csv``, Hugging Face's
``metadata.csv``.

Which CSV (:func:`find_csv`): ``folder:PATH/NAME.csv`` names one, whose folder is the images' root; else
``labels.csv`` (fastai's ``ImageDataLoaders.from_csv``) or ``metadata.csv`` (Hugging Face's ``imagefolder``) at
PATH's top level, any case, when PATH has no class subfolders of images (beside them, the subfolders label, and a notice
says the CSV is not read). Both CSVs and no subfolders is refused, saying which to remove or how to name the one
meant: cnnlab never guesses which labels hold.

Columns go by their header names, any case (:data:`FILE_COLUMNS`, :data:`LABEL_COLUMNS`, the first of each list
present), separated by commas (tabs or semicolons where the header holds no comma). A file is named by its path relative
to the root (``/`` between folders, or Windows' ``\\`` where the name as written is no file; ``..`` out of the root and
absolute paths are refused); a name that is not there is the one image of that path's end in a subfolder (Kaggle's
``train.csv`` beside ``train/``), and a name without an image extension (Kaggle's ``id``) the one image of that stem; of
several candidates, the one in a top folder whose name starts with the CSV's (``train.csv``'s in ``train/`` or
``train_images/``, where ``test/`` holds pictures of the same ids), else they are refused by name. A name found none of
these ways is looked for again in any case, as Windows matches names (``IMG_1.JPG`` of ``img_1.jpg``), and found where
one file alone matches. A name that is not UTF-8 is read from a :data:`BYTES_COLUMN` cell, where one is given. A file in
two rows of the same label and split is read once, which :meth:`Labels.notices` says. Names and labels match in their
composed Unicode form (macOS writes decomposed names). A ``split`` column (values as the split folders',
:data:`~cnnlab.data.split.SPLIT_NAMES`, any case) or fastai's ``is_valid`` (true: the validation rows) says each row's
split. One label a cell: commas, semicolons or bars in it, or words that are each a label of other rows (``cat dog``
beside ``cat`` and ``dog``), are several labels, which is multi-label classification, not trained here; a label of
several words that are not (``sea lion`` beside ``lion``) is one class. Class names are the labels, sorted as folder
names are, or by their value where every label is a whole number (``2`` before ``10``), written so or as a float (pandas
writes ``2.0`` of a column of numbers with a gap): each such label is the number (class ``2``, one class with the rows
that write ``2``).
"""

from __future__ import annotations

import base64
import csv
import io
import os
import posixpath
import re
import unicodedata
from dataclasses import dataclass, field
from pathlib import Path

from cnnlab.data.split import SPLIT_NAMES
from cnnlab.errors import DataError
from cnnlab.picture import picture_extensions, unread_photos_note

__all__ = ["BYTES_COLUMN", "CSV_NAMES", "FILE_COLUMNS", "LABEL_COLUMNS", "Labels", "NoLabelColumnError",
           "class_order", "files_named", "find_csv", "read_labels", "split_roles", "unread_note"]

CSV_NAMES = ("labels.csv", "metadata.csv")
FILE_COLUMNS = ("file_name", "filename", "file", "image", "image_id", "id", "name", "path", "fname")
LABEL_COLUMNS = ("label", "class", "category", "target", "labels")
# A file name's exact bytes in base64, where its name is not UTF-8 (Linux allows any bytes), which a UTF-8 CSV cannot
# hold: the file column then has U+FFFD for each such byte (cnnlab predict --csv writes both, as --json does)
BYTES_COLUMN = "file_bytes"
_TRUE, _FALSE = ("true", "1", "yes"), ("false", "0", "no")
_SEVERAL = re.compile(r"[,;|]")
_INTEGER = re.compile(r"[+-]?\d+")
# pandas writes a column of whole numbers with a gap (NaN) as floats: 1.0, 2.0, 10.0
_WHOLE_FLOAT = re.compile(r"([+-]?\d+)\.0+")


class NoLabelColumnError(DataError):
    """A CSV with no file column or no label column: no table of labels at all (a photo tool's ``metadata.csv``
    beside its pictures), which a reader whose labels are optional (the explorer's ``--images``) may pass over where
    the user did not name it; training refuses it."""


@dataclass(frozen=True)
class Labels:
    """What a CSV says of a folder's images.

    Attributes:
        rows: ``(image file, label, split)`` of each file the CSV names, once, in its order; split is ``"train"``,
            ``"test"``, ``"val"``, or None without a split column.
        unlisted: the image files under the root that the CSV does not name (sorted).
        repeated: ``(row, name as written, the row that named the file first)`` of each row that names a file again
            with the same label and split, read once.
    """

    rows: list[tuple[Path, str, str | None]]
    unlisted: list[Path]
    repeated: list[tuple[int, str, int]] = field(default_factory=list)

    def notices(self, csv_file: Path) -> tuple[str, ...]:
        """What a reader of these labels is told of the rows and images left out: the images ``csv_file`` does not
        name, those of a folder beside its own it names none of apart (a contest's unlabelled ``test/``, beside the
        ``train/`` its ``train.csv`` labels: its pictures are not to be counted with a stray file, which the count
        hid), and its rows of a file named already (counted, the first named)."""
        root = csv_file.parent
        named_in = {_top_folder(path, root) for path, _, _ in self.rows}
        apart: dict[str, int] = {}
        others = []
        for path in self.unlisted:
            top = _top_folder(path, root)
            if top is not None and top not in named_in:
                apart[top] = apart.get(top, 0) + 1
            else:
                others.append(path)
        said = []
        if apart:
            folders = ", ".join(f"{top}/ ({count})" for top, count in sorted(apart.items()))
            said.append(f"ignored the image files of {folders}, of which {csv_file.name} names none")
        if others:
            said.append(f"ignored {len(others)} image file(s) not named in {csv_file.name} (first: {others[0]})")
        if self.repeated:
            line, name, first = self.repeated[0]
            said.append(f"read once {len(self.repeated)} row(s) of {csv_file.name} that name a file again with the "
                        f"same label and split (first: row {line}, {name!r}, as row {first})")
        return tuple(said)


def _top_folder(path: Path, root: Path) -> str | None:
    """The folder right under ``root`` that holds ``path``, None for a file in ``root`` itself."""
    parts = path.relative_to(root).parts
    return parts[0] if len(parts) > 1 else None


def find_csv(path: Path, has_class_folders) -> tuple[Path | None, list[Path]]:
    """The CSV that labels ``folder:path``'s images (None for class subfolders), and the CSVs of :data:`CSV_NAMES`
    left unread beside class subfolders.

    Class subfolders label their images where they are, as they did before CSVs were read and as Hugging Face's
    ``imagefolder`` reads a ``metadata.csv`` beside them (its labels are the folders'); the loader says in a notice
    that the CSV is not read, and how to name it to label by it.

    Args:
        path: what ``folder:`` names (resolved): a ``.csv`` file, or a folder.
        has_class_folders: called with no argument, whether ``path`` holds class subfolders of images (asked only
            where a CSV of :data:`CSV_NAMES` lies in ``path``).

    Raises:
        DataError: ``labels.csv`` and ``metadata.csv`` both, and no class subfolders (one line).
    """
    if path.is_file():
        return path, []
    try:
        found = sorted(p for p in path.iterdir() if p.name.lower() in CSV_NAMES and p.is_file())
    except OSError as e:
        raise DataError(f"{path}: cannot list the folder ({e.strerror or e})") from e
    if not found:
        return None, []
    if has_class_folders():
        return None, found
    if len(found) > 1:
        raise DataError(f"{path} holds {' and '.join(p.name for p in found)}, each of which could label its images; "
                        f"expected one: remove or rename the other, or name the one meant (folder:{found[0]})")
    return found[0], []


def unread_note(unread: list[Path]) -> str:
    """The notice of :func:`find_csv`'s CSVs left unread beside class subfolders, or ''."""
    if not unread:
        return ""
    names = " and ".join(p.name for p in unread)
    return (f"labelled by its class subfolders: {names} beside them {'is' if len(unread) == 1 else 'are'} not read "
            f"(folder:{unread[0]} labels the images by it instead)")


def read_labels(csv_file: Path, root: Path, images: list[Path]) -> Labels:
    """The files, labels and splits ``csv_file`` gives the ``images`` under ``root`` (see the module docstring).

    Raises:
        DataError: in one line: not UTF-8 text or not a CSV, no file or label column, a row without a file name or
            label, several labels in a cell, an unknown split value, files not found (how many and the first),
            a name of several files, a file in two rows of other labels or splits.
    """
    header, rows, columns = _table(csv_file)
    file_at, label_at = (_column(columns, names) for names in (FILE_COLUMNS, LABEL_COLUMNS))
    if file_at is None or label_at is None:
        raise NoLabelColumnError(_no_column(csv_file, header, "file", FILE_COLUMNS) if file_at is None else
                                 _no_column(csv_file, header, "label", LABEL_COLUMNS))
    split_of = _split_column(csv_file, columns)
    bytes_at = columns.get(BYTES_COLUMN)
    finder = _Finder(root, images)
    as_whole = _whole_numbers([cells[label_at] for _, cells in rows if label_at < len(cells)])
    named: dict[Path, tuple[str, str | None, int]] = {}
    missing_rows: list[tuple[int, str]] = []
    repeated: list[tuple[int, str, int]] = []
    for line, cells in rows:
        if len(cells) < len(header):
            raise DataError(f"{csv_file}, row {line}: {len(cells)} field(s) where the header has {len(header)}; "
                            f"expected one for each of its columns ({', '.join(header)}) in every row")
        name, label = cells[file_at].strip(), as_whole(unicodedata.normalize("NFC", cells[label_at].strip()))
        if not name:
            raise DataError(f"{csv_file}, row {line}: no file name in column {header[file_at]!r}")
        if not label:
            raise DataError(f"{csv_file}, row {line}: no label for {name} in column {header[label_at]!r}; expected "
                            f"one label a row (remove the rows of unlabelled images)")
        if _SEVERAL.search(label):
            raise DataError(_several(csv_file, line, label))
        if bytes_at is not None and cells[bytes_at].strip():  # every row has every column (checked above)
            name = _exact_name(csv_file, line, cells[bytes_at].strip())
        path = finder.find(csv_file, line, name)
        if path is None:
            missing_rows.append((line, name))
            continue
        split = split_of(line, cells)
        if path in named and named[path][:2] != (label, split):
            first = named[path]
            what = f"labels {first[0]!r} and {label!r}" if first[0] != label else f"splits {first[1]} and {split}"
            raise DataError(f"{csv_file}: {name} has rows {first[2]} and {line} of {what}; expected one label and "
                            f"split a file")
        if path in named:  # the same row twice (a merge of two exports): one image, said in a notice
            repeated.append((line, name, named[path][2]))
            continue
        named[path] = (label, split, line)
    if missing_rows:
        raise _not_found(csv_file, root, missing_rows)
    if not named:
        raise DataError(f"{csv_file} has a header and no rows; expected a row of file name and label an image")
    labels = {label for label, _, _ in named.values()}
    for label, _, line in named.values():
        words = label.split()
        if len(words) > 1 and all(w in labels for w in words):  # "sea lion" beside "lion" is a class
            raise DataError(_several(csv_file, line, label))
    return Labels([(path, label, split) for path, (label, split, _) in named.items()], finder.unlisted(named),
                  repeated)


def files_named(csv_file: Path, root: Path, images: list[Path]) -> tuple[list[str], int, list[tuple[list[str], Path]]]:
    """The header of ``csv_file``, its file column's index, and each row's cells with the file of ``images`` (under
    ``root``) that it names, found as :func:`read_labels` finds a row's file (Kaggle's ``id`` by its stem): a
    contest's ``sample_submission.csv``, whose other columns are to be filled in (``cnnlab predict --like``).

    Raises:
        DataError: in one line: what :func:`read_labels` refuses of the table, no file column, a row without a file
            name, rows that name no file of ``images`` (how many and the first), a name of several.
    """
    header, rows, columns = _table(csv_file)
    file_at = _column(columns, FILE_COLUMNS)
    if file_at is None:
        raise DataError(_no_column(csv_file, header, "file", FILE_COLUMNS))
    finder = _Finder(root, images)
    found: list[tuple[list[str], Path]] = []
    missing_rows: list[tuple[int, str]] = []
    for line, cells in rows:
        name = cells[file_at].strip() if file_at < len(cells) else ""
        if not name:
            raise DataError(f"{csv_file}, row {line}: no file name in column {header[file_at]!r}")
        path = finder.find(csv_file, line, name)
        if path is None:
            missing_rows.append((line, name))
        else:
            found.append((cells, path))
    if missing_rows:
        raise _not_found(csv_file, root, missing_rows)
    return header, file_at, found


def split_roles(csv_file: Path) -> set[str]:
    """The splits (``"train"``, ``"test"``, ``"val"``) that ``csv_file``'s split column gives rows, or an empty set
    without one; refuses what :func:`read_labels` refuses of the table and the split column."""
    _, rows, columns = _table(csv_file)
    split_of = _split_column(csv_file, columns)
    return {role for role in (split_of(line, cells) for line, cells in rows) if role is not None}


def class_order(labels: set[str]) -> list[str]:
    """The class names in label order: sorted as folder names are, or by value where all are whole numbers."""
    if all(_INTEGER.fullmatch(label) for label in labels):
        return sorted(labels, key=lambda label: (int(label), label))
    return sorted(labels)


def _column(columns: dict[str, int], names: tuple[str, ...]) -> int | None:
    """The index of the first of ``names`` among a table's lowercased ``columns``, or None."""
    return next((columns[n] for n in names if n in columns), None)


def _no_column(csv_file: Path, header: list[str], what: str, names: tuple[str, ...]) -> str:
    """The line refusing ``csv_file`` without a ``what`` (file, label) column, any of ``names``."""
    return (f"{csv_file} has no {what} column (its columns: {', '.join(header) or 'none'}); expected a header naming "
            f"one of {', '.join(names)} (any case)")


def _not_found(csv_file: Path, root: Path, missing_rows: list[tuple[int, str]]) -> DataError:
    line, name = missing_rows[0]
    return DataError(f"{csv_file}: {len(missing_rows)} row(s) name no image file under {root} (first: row {line}, "
                     f"{name!r}); expected paths relative to {root} of image files (ending in "
                     f"{', '.join(picture_extensions())})")


def _whole_numbers(cells: list[str]):
    """How a label column's cells are read: where every label is a whole number, written as one (``2``) or as a
    float (``2.0``, as pandas writes a column of numbers with a gap), each as the number it writes (``2``), so that
    ``2`` and ``2.0`` are one class; as written otherwise (``2.5`` beside ``2.0`` is no whole number)."""
    labels = [c.strip() for c in cells if c.strip()]
    if not labels or not all(_INTEGER.fullmatch(c) or _WHOLE_FLOAT.fullmatch(c) for c in labels):
        return lambda label: label
    return lambda label: m.group(1) if (m := _WHOLE_FLOAT.fullmatch(label)) else label


def _exact_name(csv_file: Path, line: int, cell: str) -> str:
    """The file name whose bytes a :data:`BYTES_COLUMN` cell gives in base64, as Python holds it (each byte that is
    not UTF-8 a lone surrogate, as ``os.listdir`` gives it)."""
    try:
        return os.fsdecode(base64.b64decode(cell, validate=True))
    except ValueError:
        raise DataError(f"{csv_file}, row {line}: {BYTES_COLUMN} {cell!r} is not base64; expected a file name's "
                        f"bytes in base64, as cnnlab predict --csv writes them, or an empty cell") from None


def _several(csv_file: Path, line: int, label: str) -> str:
    return (f"{csv_file}, row {line}: several labels in one cell ({label!r}); multi-label classification is not "
            f"trained here: expected one label a row (a class name of several words is one label unless each of its "
            f"words is the label of other rows)")


def _table(csv_file: Path) -> tuple[list[str], list[tuple[int, list[str]]], dict[str, int]]:
    """(the header as written, the other non-empty rows with their line numbers, each lowercased column's first
    index)."""
    try:
        raw = csv_file.read_bytes()
    except OSError as e:
        raise DataError(f"{csv_file}: cannot read ({e.strerror or e})") from e
    if b"\0" in raw:
        raise DataError(f"{csv_file} is not a CSV file (it holds NUL bytes, as binary files do); expected text "
                        f"rows of file name and label")
    try:
        text = raw.decode("utf-8-sig")  # Excel's "CSV UTF-8" starts with a byte-order mark
    except UnicodeDecodeError as e:
        raise DataError(f"{csv_file} is not UTF-8 text (byte 0x{raw[e.start]:02x} at offset {e.start}); expected a "
                        f"CSV saved as UTF-8 (Excel: CSV UTF-8)") from None
    first = text.split("\n", 1)[0]
    delimiter = "," if "," in first or not ("\t" in first or ";" in first) else "\t" if "\t" in first else ";"
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter, strict=True)
    try:
        table = [(reader.line_num, cells) for cells in reader if any(c.strip() for c in cells)]
    except csv.Error as e:
        raise DataError(f"{csv_file} is not a CSV file (line {reader.line_num}: {e})") from None
    if not table:
        raise DataError(f"{csv_file} is empty; expected a header (e.g. file_name,label) and a row an image")
    header = [c.strip() for c in table[0][1]]
    columns: dict[str, int] = {}
    for i, c in enumerate(header):
        columns.setdefault(c.lower(), i)
    return header, table[1:], columns


def _split_column(csv_file: Path, columns: dict[str, int]):
    """A function of (line, cells) to that row's split, from the ``split`` or ``is_valid`` column (None without)."""
    if "split" in columns and "is_valid" in columns:
        raise DataError(f"{csv_file} has both a split and an is_valid column; expected one of them")
    roles = {n: role for role, names in SPLIT_NAMES.items() for n in names}
    at = columns.get("split", columns.get("is_valid"))
    valid = "is_valid" in columns

    def split_of(line: int, cells: list[str]) -> str | None:
        if at is None:
            return None
        value = cells[at].strip().lower() if at < len(cells) else ""
        if valid and value in _TRUE + _FALSE:
            return "val" if value in _TRUE else "train"
        if not valid and value in roles:
            return roles[value]
        known = " or ".join(_TRUE + _FALSE) if valid else ", ".join(roles)
        given = cells[at].strip() if at < len(cells) else ""
        raise DataError(f"{csv_file}, row {line}: {'is_valid' if valid else 'split'} {given!r} is not a known value; "
                        f"expected {known} (any case)")

    return split_of


class _Names:
    """The image files under a root by a key of their relative paths: the whole path, its ends on a folder boundary,
    and those ends without the image's extension, each key with the files it names."""

    def __init__(self, root: Path, images: list[Path], key):
        self.whole: dict[str, list[Path]] = {}
        self.ends: dict[str, list[Path]] = {}
        self.stems: dict[str, list[Path]] = {}
        prefix = str(root) + "/"
        for p in images:
            rel = key(unicodedata.normalize("NFC", str(p).removeprefix(prefix)))
            self.whole.setdefault(rel, []).append(p)
            parts = rel.split("/")
            for k in range(len(parts)):
                end = "/".join(parts[k:])
                self.ends.setdefault(end, []).append(p)
                self.stems.setdefault(posixpath.splitext(end)[0], []).append(p)


class _Finder:
    """The image file a CSV's name means, among the ``images`` under ``root``."""

    def __init__(self, root: Path, images: list[Path]):
        self.root, self.images = root, images
        self.as_named = _Names(root, images, str)
        self._folded: _Names | None = None  # made at the first name found in no other case: most CSVs need none

    def find(self, csv_file: Path, line: int, name: str) -> Path | None:
        """The file ``name`` (row ``line``) means, or None where there is none; refuses a name out of the root, of a
        file that is not an image, or of several images.

        A name not found as written is read again with each ``\\`` as a folder separator: a CSV written on Windows
        (pandas' ``to_csv`` of ``pathlib`` paths) names ``images\\cat.jpg``. As written first, since a Linux file's
        name may hold a backslash. A name found neither way is matched in any case (Windows' names are, and a CSV
        written there may say ``IMG_1.JPG`` of ``img_1.jpg``): found so only where exactly one file matches.
        """
        readings = [name] + ([name.replace("\\", "/")] if "\\" in name else [])
        for folded in (False, True):
            if folded and self._folded is None:
                self._folded = _Names(self.root, self.images, str.casefold)
            for reading in readings:
                found = self._find(csv_file, line, reading.casefold() if folded else reading, name,
                                   self._folded if folded else self.as_named)
                if found is not None:
                    return found
        return None

    def _find(self, csv_file: Path, line: int, name: str, given: str, names: _Names) -> Path | None:
        """:meth:`find` of ``name`` among ``names``, its errors naming the row's name as ``given``."""
        rel = posixpath.normpath(unicodedata.normalize("NFC", name))
        if rel.startswith("/") or rel == ".." or rel.startswith("../"):
            raise DataError(f"{csv_file}, row {line}: {given!r} lies outside {self.root}; expected a path relative to "
                            f"{self.root}, inside it")
        candidates = names.whole.get(rel, [])
        if not candidates and (self.root / rel).is_file():
            raise DataError(f"{csv_file}, row {line}: {given} is not of an image format read here (expected a file "
                            f"ending in {', '.join(picture_extensions())}){unread_photos_note([Path(rel)])}")
        if not candidates:
            image_suffix = rel.lower().endswith(picture_extensions())
            candidates = names.ends.get(rel, []) if image_suffix else names.stems.get(rel, [])
        if len(candidates) > 1:  # a contest's train.csv names train/<id>.jpg by the ids that test/ uses too
            beside = [c for c in candidates
                      if (_top_folder(c, self.root) or "").casefold().startswith(csv_file.stem.casefold())]
            candidates = beside if len(beside) == 1 else candidates
        if len(candidates) > 1:
            shown = ", ".join(str(p) for p in candidates[:3]) + (", ..." if len(candidates) > 3 else "")
            raise DataError(f"{csv_file}, row {line}: {given!r} could be {len(candidates)} files ({shown}); expected "
                            f"a name of one image: give its path relative to {self.root}")
        return candidates[0] if candidates else None

    def unlisted(self, named: dict[Path, object]) -> list[Path]:
        return [p for p in self.images if p not in named]
