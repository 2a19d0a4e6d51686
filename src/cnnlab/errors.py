"""The one exception type for bad input.

Every check at the public API and CLI boundary raises :class:`CnnlabError` with a single line that says what was
expected and what was given. It subclasses ``ValueError`` so library users can catch the usual type; the CLI turns
it into that one line on stderr and exit code 2 (tracebacks only with ``--debug``). :func:`summary` and
:func:`weights_only_refusal` shorten other libraries' messages for that one line; :func:`listed` names a few things
in it.
"""

from __future__ import annotations

import re

# A C++ source location and the signature of the function it names, as onnxruntime puts them before its reason
# ("... : FAIL : /onnxruntime_src/.../model.cc:256 onnxruntime::Model::Model(onnx::ModelProto&&, ...) Unsupported
# model IR version: 14, max supported IR version: 13").
_SOURCE_LOCATION = re.compile(r"\S+\.(?:cc|cpp|cxx|h|hpp):\d+ [\w:<>~]+\(")


def _without_source_location(text: str) -> str:
    """``text`` without a C++ file, line and function signature: the signature alone filled a message's 200
    characters before onnxruntime said why it refused a file."""
    found = _SOURCE_LOCATION.search(text)
    if not found:
        return text
    depth, end = 1, found.end()
    while end < len(text) and depth:  # to the parenthesis that closes the signature's (nested ones included)
        depth += {"(": 1, ")": -1}.get(text[end], 0)
        end += 1
    return text if depth else f"{text[:found.start()]}{text[end:].lstrip()}".strip()


def summary(error: BaseException | str, limit: int = 160) -> str:
    """Another library's error message shortened for one of cnnlab's one-line messages.

    Its lines joined and spaces collapsed, a C++ source location dropped, then cut at the last sentence that fits in
    ``limit`` characters, else at the last word (``...`` marks that cut), so that a message never ends mid-word; an
    exception without a message gives its type's name.
    """
    text = _without_source_location(" ".join(str(error).split()))
    if not text:
        return type(error).__name__
    if len(text) <= limit:
        return text
    cut = text[:limit]
    sentence = cut.rfind(". ")
    if sentence >= limit // 2:
        return cut[:sentence + 1]
    word = cut.rfind(" ")
    return (cut[:word] if word > 0 else cut).rstrip(",;:(") + "..."


def listed(items, most: int | None = None) -> str:
    """Names in a one-line message: ``a``, ``a and b``, ``a, b and c``; past ``most`` of them, the first ``most`` and
    how many more (``a, b, c and 4 more``)."""
    items = [str(item) for item in items]
    if most is not None and len(items) > most:
        return f"{', '.join(items[:most])} and {len(items) - most} more"
    return " and ".join(items) if len(items) < 3 else f"{', '.join(items[:-1])} and {items[-1]}"


def weights_only_refusal(error: BaseException) -> str:
    """The line of torch's weights_only refusal that names the offending global or opcode.

    torch's message is several lines of advice (including re-running with ``weights_only=False``, which is
    exactly what must not be done with a stranger's file) around one line of fact, sometimes with ANSI colours.
    """
    lines = [re.sub(r"\x1b\[[0-9;]*m", "", line).strip() for line in str(error).splitlines()]
    facts = [line for line in lines if re.search(r"GLOBAL|[Uu]nsupported", line) and "weights_only" not in line]
    if not facts:
        return "unsupported object"
    fact = facts[0].removeprefix("WeightsUnpickler error:").strip()
    return fact.split(". ")[0].rstrip(".")[:160]  # the first sentence; the rest is allow-listing advice


class CnnlabError(ValueError):
    """Bad input: the message is one line, 'expected X, got Y'."""


class DataError(CnnlabError):
    """A data file is missing, truncated, corrupt or of the wrong format."""


class CheckpointError(CnnlabError):
    """A checkpoint is missing, corrupt, not a plain tensor container, or from another model."""


class ForeignCheckpointError(CheckpointError):
    """A file that is not cnnlab's record of a run: another tool's weights (a state dict), a pickled module, a
    TorchScript archive. ``held`` is what a weights-only read gave (a state dict, perhaps), or None where the file
    was not read."""

    def __init__(self, message: str, held: object = None):
        super().__init__(message)
        self.held = held


class StopRun(Exception):
    """Raised by an observer's ``on_epoch`` (or ``train``'s ``on_epoch`` callback) to end the run after this epoch.

    Not a failure: the run ends as a finished one would (test evaluation, result.json, the report), with
    ``status: stopped`` and the exception's message as ``stop_reason``. A sweep's pruner stops trials this way.
    """


class Interrupted(Exception):
    """SIGINT/SIGTERM stopped training after a resumable checkpoint was written (CLI exit 128 + signal)."""

    def __init__(self, signum: int, message: str):
        super().__init__(message)
        self.signum = signum

