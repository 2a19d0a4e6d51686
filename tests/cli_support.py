"""The command line run in-process, for the tests of its exit codes and what it prints; a script run by a fresh
interpreter, for what a new process imports (this one has imported everything already); another program's file
put where a command is writing its figure; JSON parsed as a strict reader parses it."""

from __future__ import annotations

import contextlib
import io
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

from matplotlib.figure import Figure

from cnnlab import cli


def run_with_output(argv: list[str], capsys) -> tuple[int, list[str], list[str]]:
    """Exit code, stdout lines and stderr lines of ``cnnlab argv`` run in-process."""
    try:
        code = cli.main(argv)
    except SystemExit as e:  # argparse's errors exit from inside parse_args
        code = e.code
    captured = capsys.readouterr()
    return code, captured.out.splitlines(), captured.err.splitlines()


def run_redirected(argv: list[str]) -> tuple[int, list[str], list[str]]:
    """Exit code, stdout and stderr lines of ``cnnlab argv``, captured without pytest's capsys: hypothesis runs many
    examples in one test, and a function-scoped fixture would be shared between them."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = cli.main(argv)
        except SystemExit as e:
            code = e.code
    return code, out.getvalue().splitlines(), err.getvalue().splitlines()


def strict_json(text: str) -> Any:
    """``text`` parsed as JSON as a strict reader (Rust's serde_json) parses it: no string in it, key or value, may
    hold a lone surrogate (an escape such as ``\\udcff``, which such a reader refuses)."""
    def check(value: Any) -> Any:
        if isinstance(value, str):
            value.encode("utf-8")  # a lone surrogate raises UnicodeEncodeError
        elif isinstance(value, dict):
            for key, item in value.items():
                check(key), check(item)
        elif isinstance(value, list):
            for item in value:
                check(item)
        return value
    return check(json.loads(text))


def run(argv: list[str], capsys) -> tuple[int, list[str]]:
    """Exit code and stderr lines of ``cnnlab argv`` run in-process."""
    code, _, err = run_with_output(argv, capsys)
    return code, err


def assert_one_line(code: int, err: list[str], *needles: str, command: str = "train") -> None:
    """Exit code 2 and exactly one ``cnnlab CMD: error: ...`` line holding every needle."""
    assert code == 2, (code, err)
    assert len(err) == 1, err
    assert err[0].startswith(f"cnnlab {command}: error: ") or err[0].startswith("cnnlab: error: "), err[0]
    for needle in needles:
        assert needle in err[0], (needle, err[0])


def fresh_python(script: str) -> subprocess.CompletedProcess:
    """``python -c script`` in a new process, which must succeed; its stdout and stderr as text."""
    run = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    return run


def file_appears_while_saving(monkeypatch, path: Path, text: str = "another program's") -> None:
    """Make every figure saved from now on find ``path`` written with ``text`` by someone else meanwhile (after the
    command's look before the work, before its file is moved into place)."""
    savefig = Figure.savefig

    def save_while_another_writes(self, *args, **kwargs):
        path.write_text(text)
        return savefig(self, *args, **kwargs)

    monkeypatch.setattr(Figure, "savefig", save_while_another_writes)
