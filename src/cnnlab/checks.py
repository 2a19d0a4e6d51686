"""Argument checks for the public API and CLI boundary, each failure one CnnlabError line.

Every message reads ``"{name} must be {expected}, got {value!r}"``, so one wording per kind of check holds
across the library (tests match on it). A bool is never an int or a number here: ``batch_size=True`` is a
mistake, not a batch of 1. The checks return the value, so a caller can check and assign in one line.

The ops keep their own, cheaper checks (``cnnlab.ops._checks``), which run on every forward pass and word their
messages ``"op: expected X, got Y"``.
"""

from __future__ import annotations

import math
from typing import NoReturn

from cnnlab.errors import CnnlabError

# The largest float32: a learning rate above it cannot be held by the optimizers' float32 tensors (torch raises
# "value cannot be converted to type float without overflow" at the first step). torch.finfo(torch.float32).max,
# written out so that checking arguments does not import torch.
FLOAT32_MAX = 3.4028234663852886e38
LR_EXPECTED = "a number > 0 (and finite) that float32 holds (at most 3.4e+38)"

__all__ = ["fail", "int_at_least", "int_in_range", "is_int", "is_number", "number", "positive_int"]


def fail(name: str, expected: str, value: object) -> NoReturn:
    """Raise the one-line ``"{name} must be {expected}, got {value!r}"`` error."""
    raise CnnlabError(f"{name} must be {expected}, got {value!r}")


def is_int(value: object) -> bool:
    """Whether ``value`` is a Python int and not a bool (bool subclasses int)."""
    return isinstance(value, int) and not isinstance(value, bool)


def is_number(value: object) -> bool:
    """Whether ``value`` is a Python int or float and not a bool (NaN and inf are numbers here)."""
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def positive_int(value: object, name: str, *, expected: str | None = None) -> int:
    """``value`` if it is an int >= 1, else raise "{name} must be a positive integer, got {value!r}".

    ``expected`` rewords the message where a unit says more ("a positive number of epochs").

    Example:
        >>> positive_int(64, "batch-size")
        64
    """
    if not is_int(value) or value < 1:
        fail(name, expected or "a positive integer", value)
    return value


def int_at_least(value: object, name: str, low: int, *, expected: str | None = None) -> int:
    """``value`` if it is an int >= ``low``, else raise "{name} must be an integer >= {low}, got {value!r}".

    ``expected`` rewords the message, as for :func:`positive_int`.

    Example:
        >>> int_at_least(0, "checkpoint-every", 0)
        0
    """
    if not is_int(value) or value < low:
        fail(name, expected or f"an integer >= {low}", value)
    return value


def int_in_range(value: object, name: str, low: int, high: int, *, expected: str | None = None) -> int:
    """``value`` if it is an int with ``low <= value < high``, else raise one line.

    Args:
        value: what was given.
        name: the argument's name as the user wrote it (``"seed"``, ``"--seed"``).
        low: the smallest value allowed.
        high: one past the largest value allowed.
        expected: the message's wording of the range (default ``"an integer in [{low}, {high})"``), for a bound
            better shown as a formula (``"[0, 2**32)"``) or an inclusive one (``"from 1 to 8"``).
    """
    if not is_int(value) or not low <= value < high:
        fail(name, expected or f"an integer in [{low}, {high})", value)
    return value


def number(value: object, name: str, *, low: float | None = None, high: float | None = None,
           low_open: bool = False, high_open: bool = False, expected: str | None = None) -> float:
    """``value`` if it is a finite int or float within the bounds given, else raise one line.

    NaN and infinities are always refused (a bound compares false with NaN; ``inf`` would train on NaN).

    Args:
        value: what was given.
        name: the argument's name as the user wrote it.
        low, high: the bounds (``None``: unbounded on that side).
        low_open, high_open: exclude the bound itself (``low=0, low_open=True`` is "> 0").
        expected: the message's wording (default: from the bounds, e.g. ``"a number > 0 (and finite)"`` or
            ``"a number in (0, 1]"``).

    Example:
        >>> number(0.1, "lr", low=0, low_open=True)
        0.1
    """
    ok = is_number(value) and math.isfinite(value)
    if ok and low is not None:
        ok = value > low if low_open else value >= low
    if ok and high is not None:
        ok = value < high if high_open else value <= high
    if not ok:
        fail(name, expected or _number_range(low, high, low_open, high_open), value)
    return value


def _number_range(low: float | None, high: float | None, low_open: bool, high_open: bool) -> str:
    if low is not None and high is not None:
        return f"a number in {'(' if low_open else '['}{low}, {high}{')' if high_open else ']'}"
    if low is not None:
        return f"a number {'>' if low_open else '>='} {low} (and finite)"
    if high is not None:
        return f"a number {'<' if high_open else '<='} {high} (and finite)"
    return "a finite number"
