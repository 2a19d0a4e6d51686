"""The tests and the Python names the docs name exist: docs/reliability.md keeps each promise by naming its test, and
a test renamed or removed would leave the promise pointing at nothing; a module, function or class renamed would leave
a reader's import or look-up failing."""

from __future__ import annotations

import ast
import importlib
import re
from pathlib import Path

import pytest

from cnnlab.export import SPLIT_KEYS

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


# Names the docs spell `cnnlab.x` that are no Python names: the keys cnnlab writes into an export's metadata (ONNX
# metadata_props, a .pt2's extra file), each a string literal of the source, or built from SPLIT_KEYS.
def _metadata_keys() -> set[str]:
    keys = {f"cnnlab.{key}" for key in SPLIT_KEYS}
    for path in (ROOT / "src" / "cnnlab").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Constant) and isinstance(node.value, str) \
                    and re.fullmatch(r"cnnlab\.\w+", node.value):
                keys.add(node.value)
    return keys


# Dotted names that may name nothing today, each with its reason.
_FORMER_NAMES = {
    ("benchmarks.md", "cnnlab.explore.probe.analyze"): "the function a recorded latency timed, named as it was then; "
                                                       "the text names its successor beside it",
}


def _resolves(dotted: str) -> bool:
    """Whether ``cnnlab.a.b.c`` is a module, or an attribute chain from the longest importable module of its prefix."""
    parts = dotted.split(".")
    for end in range(len(parts), 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:end]))
        except ImportError:
            continue
        for name in parts[end:]:
            if not hasattr(obj, name):
                return False
            obj = getattr(obj, name)
        return True
    return False


def documented_python_names() -> list[tuple[str, str]]:
    """(doc, dotted name) of every `cnnlab.x.y` the docs write, and of every name their Python blocks import from
    cnnlab (`from cnnlab.models import create_model` gives cnnlab.models.create_model)."""
    found = set()
    for doc in DOCS:
        text = doc.read_text(encoding="utf-8")
        found |= {(doc.name, name.rstrip(".")) for name in re.findall(r"\bcnnlab(?:\.[A-Za-z_]\w*)+", text)}
        for block in re.findall(r"```python\n(.*?)```", text, re.S):
            for module, names in re.findall(r"^\s*from (cnnlab[\w.]*) import ([^#\n]+)", block, re.M):
                found |= {(doc.name, f"{module}.{name.split(' as ')[0].strip()}") for name in names.split(",")}
    return sorted(found)


def test_the_python_names_the_docs_give_exist():
    names = documented_python_names()
    assert len(names) >= 100, len(names)
    assert ("README.md", "cnnlab.models.create_model") in names  # from a Python block's import
    keys = _metadata_keys()
    assert {"cnnlab.to_square", "cnnlab.held_out", "cnnlab.classes"} <= keys
    missing = [f"{doc}: {name}" for doc, name in names
               if name not in keys and (doc, name) not in _FORMER_NAMES and not _resolves(name)]
    assert not missing, "\n".join(missing)


@pytest.mark.parametrize("name", ["cnnlab.inference.load_trainedd", "cnnlab.explore.sourcess.open_model",
                                  "cnnlab.data.ImageDataset.nope"])
def test_a_name_that_moved_would_fail_this_test(name):
    assert not _resolves(name)
