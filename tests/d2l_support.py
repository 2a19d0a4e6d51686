"""Shared by the tests of cnnlab.d2l: the real-data skip marker, a check for the book's layer summaries, a runner
for notebook cells in one namespace, and a fixture that undoes the cells' ``add_to_class`` on the library."""

from __future__ import annotations

import os
import re
import textwrap
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


def run_cells(cells: list[str], ns: dict | None = None) -> dict:
    """Run notebook cells one after another in one namespace, as a Jupyter kernel does.

    Each cell's value (its last line, when that is an expression) is appended to ``ns["Out"]``, as IPython keeps
    it; ``ns["_"]`` is the last one. Returns the namespace.
    """
    import ast

    ns = {"__name__": "__main__"} if ns is None else ns
    ns.setdefault("Out", [])
    for source in cells:
        tree = ast.parse(textwrap.dedent(source))
        last = tree.body.pop() if tree.body and isinstance(tree.body[-1], ast.Expr) else None
        exec(compile(tree, "<cell>", "exec"), ns)  # noqa: S102  the cells are this test suite's own code
        value = eval(compile(ast.Expression(last.value), "<cell>", "eval"), ns) if last is not None else None
        ns["Out"].append(value)
        ns["_"] = value
    return ns


@pytest.fixture
def restore_d2l_classes():
    """Undo what the cells' ``@d2l.add_to_class(d2l.Trainer)`` and the like set on cnnlab.d2l's classes."""
    from cnnlab import d2l

    classes = [obj for obj in vars(d2l).values() if isinstance(obj, type) and obj.__module__.startswith("cnnlab.")]
    saved = {cls: dict(vars(cls)) for cls in classes}
    yield
    for cls, attrs in saved.items():
        for name in set(vars(cls)) - set(attrs):
            delattr(cls, name)
        for name, value in attrs.items():
            if vars(cls).get(name, object()) is not value and name not in ("__dict__", "__weakref__"):
                setattr(cls, name, value)


def assert_epoch_lines(out: str, epochs: int) -> None:
    """What a Trainer.fit prints in a script: one ``epoch N: train_loss ..., val_loss ..., val_acc ...`` per epoch
    (d2l 1.0.3 prints a ``Figure(...)`` repr per point there instead)."""
    lines = out.splitlines()
    assert len(lines) == epochs, lines
    for epoch, line in enumerate(lines, start=1):
        assert re.fullmatch(rf"epoch {epoch}: train_loss \S+, val_loss \S+, val_acc \S+", line), line
