"""The house's direction, enforced: cnnlab's packages import only downwards, and never in a cycle.

Every import counts, function-local ones included (they hide cycles as well as any other); only imports under
``if TYPE_CHECKING:`` are left out, since they never run. The layers are those of docs/design.md.
"""

from __future__ import annotations

import ast
import sys
from collections import defaultdict
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src" / "cnnlab"

# Top to bottom: a unit may import units of its own layer's or any lower layer, never a higher one. Units of one
# layer may import each other, as long as no cycle forms.
LAYERS: list[tuple[str, ...]] = [
    ("__main__", "cli"),
    ("study", "sweep", "explore", "compare", "lr_find", "config_file", "d2l", "kernel_demo"),
    ("train",),
    ("report", "evaluate", "predict", "export"),
    ("runs", "inference", "pt2_check"),
    ("models", "data"),
    ("layers",),
    ("ops",),
    ("errors", "io", "device", "picture", "checks", "table", "cnnlab"),  # the base every layer may use
]
LAYER_OF = {unit: depth for depth, units in enumerate(LAYERS) for unit in units}


def _unit(module: str) -> str:
    """``cnnlab.train.trainer`` -> ``train``; ``cnnlab`` itself and its attributes (``__version__``) -> ``cnnlab``."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 and parts[1] in LAYER_OF else "cnnlab"


def _type_checking_only(tree: ast.AST) -> set[ast.AST]:
    """The import nodes that sit under ``if TYPE_CHECKING:``."""
    hidden = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            for child in node.body:
                hidden.update(ast.walk(child))
    return hidden


def import_edges() -> dict[tuple[str, str], list[str]]:
    """(importing unit, imported unit) -> the places (``file:line``) where it happens, across all of src/cnnlab."""
    edges: dict[tuple[str, str], list[str]] = defaultdict(list)
    for path in sorted(SRC.rglob("*.py")):
        rel = path.relative_to(SRC.parent).with_suffix("")
        module = ".".join(rel.parts[:-1] if rel.name == "__init__" else rel.parts)
        package = module if rel.name == "__init__" else module.rpartition(".")[0]
        tree = ast.parse(path.read_text(encoding="utf-8"))
        hidden = _type_checking_only(tree)
        for node in ast.walk(tree):
            if node in hidden:
                continue
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    anchor = package.split(".")[:len(package.split(".")) - node.level + 1]
                    base = ".".join(anchor + ([node.module] if node.module else []))
                targets = [base] + [f"{base}.{alias.name}" for alias in node.names]
            else:
                continue
            for target in targets:
                if target == "cnnlab" or target.startswith("cnnlab."):
                    a, b = _unit(module), _unit(target)
                    if a != b:
                        edges[(a, b)].append(f"{path.relative_to(SRC)}:{node.lineno}")
    return edges


def test_every_unit_has_a_layer():
    units = {p.relative_to(SRC).parts[0].removesuffix(".py") for p in SRC.rglob("*.py")}
    units -= {"__init__"}
    assert units - set(LAYER_OF) == set(), "a new package or module needs its place in LAYERS (and docs/design.md)"


def test_no_import_goes_up_a_layer():
    upward = {f"{a} -> {b}": places for (a, b), places in import_edges().items()
              if a in LAYER_OF and b in LAYER_OF and LAYER_OF[b] < LAYER_OF[a]}
    assert upward == {}


def test_no_cycle_between_packages():
    graph: dict[str, set[str]] = defaultdict(set)
    edges = import_edges()
    for a, b in edges:
        graph[a].add(b)
    cycles = []
    state: dict[str, int] = {}

    def visit(unit: str, trail: list[str]) -> None:
        state[unit] = 1
        for nxt in sorted(graph[unit]):
            if state.get(nxt) == 1:
                cycles.append(" -> ".join(trail[trail.index(nxt):] + [nxt]))
            elif nxt not in state:
                visit(nxt, trail + [nxt])
        state[unit] = 2

    for unit in sorted(graph):
        if unit not in state:
            visit(unit, [unit])
    assert cycles == []


@pytest.mark.parametrize("source, expected", [
    ("from cnnlab.train import build_run\n", {("cnnlab", "train")}),
    ("def f():\n    from cnnlab.report import RunReport\n", {("cnnlab", "report")}),
    ("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from cnnlab.train import Trainer\n", set()),
])
def test_the_graph_counts_function_local_imports_and_skips_type_checking_ones(source, expected, tmp_path,
                                                                              monkeypatch):
    (tmp_path / "cnnlab").mkdir()
    (tmp_path / "cnnlab" / "x.py").write_text(source)
    monkeypatch.setattr(sys.modules[__name__], "SRC", tmp_path / "cnnlab")
    assert set(import_edges()) == expected
