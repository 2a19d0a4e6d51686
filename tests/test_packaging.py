"""cnnlab as ``pip install`` gives it: the wheel (built from this tree, or from its sdist) holds every module and
every file the package reads beside its code (pyproject.toml's package-data: the explorer's page, the report's
template, the built-in studies), and nothing else; an installed cnnlab is no checkout, and what it tells its user
points nowhere into one (docs/ is not installed); the sdist carries what a packager runs the tests with.

Every other test runs cnnlab from the source tree, where a file left out of package-data is still found."""

from __future__ import annotations

import ast
import os
import re
import shutil
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import pytest

import cnnlab
import cnnlab.runs.folder as rundir

if sys.version_info >= (3, 11):
    import tomllib
else:
    import tomli as tomllib

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "src" / "cnnlab"
PIP_WHEEL = [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index",
             "--no-cache-dir", "-v"]  # setuptools as installed here; nothing fetched, nothing cached outside tmp;
# -v: with setuptools' own output, where it warns of configuration it will stop building on a given date


def package_files() -> set[str]:
    """The package's files in the source tree, named as a wheel names them (``cnnlab/...``)."""
    return {f"cnnlab/{path.relative_to(PACKAGE).as_posix()}" for path in PACKAGE.rglob("*")
            if path.is_file() and "__pycache__" not in path.parts}


SHIPPED_FOLDERS = ("src", "tests", "docs", "benchmarks", ".ci")  # what the sdist carries besides the files below
SHIPPED_FILES = ("pyproject.toml", "MANIFEST.in", "README.md", "LICENSE", "Makefile")
NOT_SHIPPED = shutil.ignore_patterns("__pycache__", "*.py[cod]", "*.egg-info", "*.onnx")  # a checkout's own makings


def project_copy(tmp_path: Path) -> Path:
    """The project as its commit holds it (its folders and files above, less what a checkout makes as it works),
    copied: setuptools writes build/ and *.egg-info into the tree it builds, and an old build/ there would ship files
    deleted since."""
    tree = tmp_path / "project"
    for name in SHIPPED_FOLDERS:
        shutil.copytree(ROOT / name, tree / name, ignore=NOT_SHIPPED)
    for name in SHIPPED_FILES:
        shutil.copy2(ROOT / name, tree / name)
    return tree


def tree_files(tree: Path) -> set[str]:
    return {path.relative_to(tree).as_posix() for path in tree.rglob("*") if path.is_file()}


def assert_no_deprecation(output: str) -> None:
    """Setuptools builds it without a deprecation warning: each one names the date its builds stop working."""
    warned = [line.strip() for line in output.splitlines() if "DeprecationWarning" in line]
    assert not warned, warned


def built_wheel(source: Path, out: Path) -> Path:
    """The wheel pip builds from ``source`` (a project folder or an sdist), in ``out``."""
    build = subprocess.run([*PIP_WHEEL, "-w", str(out), str(source)], check=True, capture_output=True, text=True,
                           timeout=120)
    assert_no_deprecation(build.stdout + build.stderr)
    (wheel,) = out.glob("cnnlab-*.whl")
    return wheel


def assert_ships_the_package(wheel: Path) -> None:
    names = set(zipfile.ZipFile(wheel).namelist())
    in_package = {name for name in names if name.startswith("cnnlab/")}
    missing, extra = sorted(package_files() - in_package), sorted(in_package - package_files())
    assert not missing, f"{wheel.name} lacks {missing} (a module outside a package, or a package-data pattern?)"
    assert not extra, f"{wheel.name} ships files the tree does not have: {extra}"
    metadata = {name for name in names - in_package if name.split("/")[0].endswith(".dist-info")}
    assert names == in_package | metadata, sorted(names - in_package - metadata)  # no tests/, no benchmarks/
    assert any(name.endswith(".dist-info/licenses/LICENSE") for name in metadata)  # MIT's terms go with it
    (entry_points,) = [name for name in metadata if name.endswith("/entry_points.txt")]
    assert "cnnlab = cnnlab.cli:main" in zipfile.ZipFile(wheel).read(entry_points).decode()
    assert wheel.name.startswith(f"cnnlab-{cnnlab.__version__}-")  # what pip installs is what --version says


def test_the_readme_states_the_oldest_torch_that_pyproject_asks_for():
    """The install section names the oldest torch and torchvision cnnlab works with, which pip enforces through
    pyproject.toml: a bound raised (or lowered) in one place alone would tell a user a version that fails."""
    dependencies = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    lowest = dict(re.fullmatch(r"(torch|torchvision)>=([\d.]+)", d).groups() for d in dependencies
                  if re.match(r"torch(vision)?\b", d))
    stated = re.search(r"cnnlab needs torch >= ([\d.]+) and torchvision >= ([\d.]+)", (ROOT / "README.md").read_text())
    assert stated, "README.md no longer says which torch cnnlab needs"
    assert stated.groups() == (lowest["torch"], lowest["torchvision"]), (stated.group(0), dependencies)


@pytest.mark.slow
def test_the_wheel_holds_every_module_and_data_file_and_nothing_else(tmp_path):
    assert {"cnnlab/explore/static/index.html", "cnnlab/report/templates/report.html.j2",
            "cnnlab/study/data/lenet-batch-norm.toml", "cnnlab/py.typed"} <= package_files()  # the kinds of data
    assert_ships_the_package(built_wheel(project_copy(tmp_path), tmp_path / "dist"))


def docs_pointers(wheel: Path) -> list[str]:
    """The strings of the wheel's modules (not their docstrings, read by a developer) that name a file of docs/."""
    found = []
    with zipfile.ZipFile(wheel) as archive:
        for name in (n for n in archive.namelist() if n.endswith(".py")):
            tree = ast.parse(archive.read(name))
            docstrings = {id(node.body[0].value) for node in ast.walk(tree)
                          if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef))
                          and node.body and isinstance(node.body[0], ast.Expr)}
            found += [f"{name}:{node.lineno}: {node.value}" for node in ast.walk(tree)
                      if isinstance(node, ast.Constant) and isinstance(node.value, str)
                      and id(node) not in docstrings and re.search(r"docs/\w", node.value)]
    return found


@pytest.mark.slow
def test_the_installed_help_says_what_it_means_without_pointing_into_docs(tmp_path):
    """`cnnlab --help` sent explore's user to docs/explore.md, which ``pip install cnnlab-X.whl`` does not install:
    the help of every command, and every message of the wheel's code, stands on its own; explore's help says what
    the page shows and how to start it, offline."""
    wheel = built_wheel(project_copy(tmp_path), tmp_path / "dist")
    assert not docs_pointers(wheel)
    installed = tmp_path / "site"
    zipfile.ZipFile(wheel).extractall(installed)
    script = ("import cnnlab, sys\n"
              "from cnnlab import cli\n"
              "parser = cli.build_parser()\n"
              "commands = parser._subparsers._group_actions[0].choices\n"
              "print(cnnlab.__file__, len(commands))\n"
              "print('\\f'.join([parser.format_help(), *(command.format_help() for command in commands.values())]))\n")
    shown = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, capture_output=True, text=True, timeout=60,
                           env={**os.environ, "PYTHONPATH": str(installed), "COLUMNS": "120"})
    assert shown.returncode == 0, shown.stderr
    first, helps = shown.stdout.split("\n", 1)
    where, commands = first.rsplit(" ", 1)
    assert Path(where).is_relative_to(installed)  # the wheel's cnnlab, not the tree's
    helps = helps.split("\f")
    assert len(helps) == 1 + int(commands) and not [h for h in helps if re.search(r"docs/\w|\.md\b", h)]
    (explore,) = [h for h in helps if h.startswith("usage: cnnlab explore ")]
    said = " ".join(explore.split())
    assert "no network" in said and "Grad-CAM" in said and "Examples: cnnlab explore runs/" in said


@pytest.mark.slow
def test_the_sdist_builds_the_same_wheel_and_carries_what_its_tests_need(tmp_path):
    """``pip install cnnlab-X.tar.gz`` builds its wheel from the sdist, which must carry the data files too. A
    distribution's packager runs the tests from the sdist: it carried tests/test_*.py alone (setuptools' default),
    without conftest.py, the tests' helpers, docs/ and benchmarks/, so not one test module imported. It now carries
    the whole project as committed, and nothing a checkout makes as it works (caches, exported graphs)."""
    tree = project_copy(tmp_path)
    committed = tree_files(tree)
    assert {"tests/conftest.py", "tests/cli_support.py", "docs/explore.md", "docs/explore-screenshot.png",
            "benchmarks/bench.py", "Makefile"} <= committed  # the kinds of file a packager's test run reads
    for junk in ("tests/__pycache__/conftest.cpython-310.pyc", "benchmarks/lenet.onnx"):
        (tree / junk).parent.mkdir(exist_ok=True)
        (tree / junk).write_bytes(b"made by a checkout")
    build = "import sys, setuptools.build_meta as b; print(b.build_sdist(sys.argv[1]))"
    made = subprocess.run([sys.executable, "-c", build, str(tmp_path / "sdist")], cwd=tree, check=True,
                          capture_output=True, text=True, timeout=120)
    assert_no_deprecation(made.stdout + made.stderr)
    sdist = tmp_path / "sdist" / made.stdout.split()[-1]
    with tarfile.open(sdist) as archive:
        # the "data" filter (no links out, no device files) where this Python has it: 3.10.12, 3.11.4 and later
        archive.extractall(tmp_path / "unpacked", **({"filter": "data"} if hasattr(tarfile, "data_filter") else {}))
    (unpacked,) = (tmp_path / "unpacked").iterdir()
    generated = {name for name in tree_files(unpacked) if name in ("PKG-INFO", "setup.cfg") or ".egg-info/" in name}
    assert tree_files(unpacked) - generated == committed
    collected = subprocess.run([sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "--collect-only", "-q"],
                               cwd=unpacked, capture_output=True, text=True, timeout=300,
                               env={**os.environ, "PYTHONPATH": str(unpacked / "src"), "OMP_NUM_THREADS": "1"})
    assert collected.returncode == 0, collected.stdout[-3000:] + collected.stderr[-3000:]  # every module imports
    assert_ships_the_package(built_wheel(sdist, tmp_path / "dist"))


def _git(folder: Path, *args: str) -> str:
    return subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@example.org", *args], cwd=folder,
                          check=True, capture_output=True, text=True, timeout=30).stdout.strip()


@pytest.mark.skipif(shutil.which("git") is None, reason="needs git")
def test_an_installed_cnnlab_inside_another_projects_checkout_records_no_commit(tmp_path, monkeypatch):
    """A run's config.json records the commit of cnnlab's checkout. Installed into a project's .venv/, cnnlab lies
    inside that project's checkout, whose commit is not cnnlab's: it recorded it as its own."""
    for name in ("GIT_DIR", "GIT_WORK_TREE", "GIT_INDEX_FILE"):  # a git hook running the tests sets these
        monkeypatch.delenv(name, raising=False)
    project = tmp_path / "project"
    installed = project / ".venv" / "lib" / "site-packages" / "cnnlab" / "runs" / "folder.py"
    installed.parent.mkdir(parents=True)
    shutil.copy2(rundir.__file__, installed)
    (project / ".gitignore").write_text(".venv/\n")
    _git(project, "init", "-q")
    _git(project, "add", ".gitignore")
    _git(project, "commit", "-q", "-m", "the user's project")
    monkeypatch.setattr(rundir, "__file__", str(installed))  # git_commit() looks where its module lies
    assert rundir.git_commit() is None
    _git(project, "add", "--force", str(installed))  # a project that vendors cnnlab's source: its commit is cnnlab's
    _git(project, "commit", "-q", "-m", "cnnlab vendored")
    assert rundir.git_commit() == _git(project, "rev-parse", "HEAD")
