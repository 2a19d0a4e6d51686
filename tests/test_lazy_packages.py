"""The packages that import their members on first use (so that the CLI's flags load without torch, and the
explorer without its web stack): each name is found where the package says, by the interpreter and by a type
checker alike."""

from __future__ import annotations

import ast
import importlib
import inspect

import pytest

LAZY = ["cnnlab.data", "cnnlab.train", "cnnlab.explore"]


def _read(package) -> tuple[dict[str, str], set[str]]:
    """Name -> module of the imports under the package's ``if TYPE_CHECKING:``, and the public names it assigns or
    defines itself."""
    tree = ast.parse(inspect.getsource(package))
    block = next(node for node in tree.body if isinstance(node, ast.If) and ast.unparse(node.test) == "TYPE_CHECKING")
    imports = {alias.name: node.module for node in block.body if isinstance(node, ast.ImportFrom)
               for alias in node.names}
    own = {target.id for node in tree.body if isinstance(node, ast.Assign) for target in node.targets
           if isinstance(target, ast.Name) and not target.id.startswith("_")}
    own |= {node.name for node in tree.body if isinstance(node, ast.FunctionDef) and not node.name.startswith("_")}
    return imports, own


@pytest.mark.parametrize("name", LAZY)
def test_a_lazy_package_names_each_member_alike_for_the_interpreter_and_a_type_checker(name):
    package = importlib.import_module(name)
    where = {member: f"{name}.{module}" for member, module in package._WHERE.items()}
    imports, own = _read(package)
    assert imports == where
    assert sorted(package.__all__) == sorted(set(where) | own)
    for member, module in where.items():
        assert getattr(package, member) is getattr(importlib.import_module(module), member)


@pytest.mark.parametrize("name", LAZY)
def test_an_unknown_name_is_an_attribute_error(name):
    with pytest.raises(AttributeError, match=f"module '{name}' has no attribute 'nothing_here'"):
        importlib.import_module(name).nothing_here  # noqa: B018  the lookup is what is tested
