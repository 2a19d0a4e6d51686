"""The tests the docs name exist: docs/reliability.md keeps each promise by naming its test, and a test renamed or
removed would leave the promise pointing at nothing."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
# `tests/test_x.py::test_a`, then `::test_b` of the same file, on one line (a table row)
_REFERENCE = re.compile(r"(tests/[\w/]+\.py)(?:::(\w+))?|(?<![\w/])::(\w+)")


def documented_test_references() -> list[tuple[str, str, str | None]]:
    """(doc, test file, test function or None) of every test reference in the docs."""
    found = []
    for doc in DOCS:
        for line in doc.read_text(encoding="utf-8").splitlines():
            current = None
            for m in _REFERENCE.finditer(line):
                current = m.group(1) or current
                found.append((doc.name, current, m.group(2) or m.group(3)))
    return found


def test_every_test_the_docs_name_exists():
    references = documented_test_references()
    assert len(references) >= 200, len(references)
    missing = []
    for doc, file, name in references:
        if file is None:
            missing.append(f"{doc}: ::{name} follows no tests/ file on its line")
        elif not (ROOT / file).is_file():
            missing.append(f"{doc}: {file} does not exist")
        elif name and not re.search(rf"^\s*(async )?def {name}\(", (ROOT / file).read_text(encoding="utf-8"), re.M):
            missing.append(f"{doc}: {file} has no {name}")
    assert not missing, "\n".join(missing)


def test_bare_test_names_in_the_docs_exist():
    """A test named alone (docs/studies.md's fault table names tests of tests/test_sweep.py so)."""
    sources = "\n".join(p.read_text(encoding="utf-8") for p in (ROOT / "tests").glob("*.py"))
    names = {name for doc in DOCS for name in re.findall(r"`(test_\w+)`", doc.read_text(encoding="utf-8"))}
    fields = {"test_acc", "test_samples", "test_images", "test_labels"}  # result.json and dataset fields
    assert len(names - fields) >= 5
    assert not [n for n in names - fields if f"def {n}(" not in sources]
