"""cnnlab.checks: one wording per kind of check, bools refused, the value handed back; cnnlab.table's text tables."""

import math

import pytest

from cnnlab.checks import int_at_least, int_in_range, number, positive_int
from cnnlab.errors import CnnlabError
from cnnlab.table import text_table


@pytest.mark.parametrize("call, message", [
    (lambda: positive_int(0, "batch-size"), "batch-size must be a positive integer, got 0"),
    (lambda: positive_int(True, "batch-size"), "batch-size must be a positive integer, got True"),
    (lambda: positive_int(2.0, "batch-size"), "batch-size must be a positive integer, got 2.0"),
    (lambda: positive_int(0, "step-size", expected="a positive number of epochs"),
     "step-size must be a positive number of epochs, got 0"),
    (lambda: int_at_least(1, "steps", 2), "steps must be an integer >= 2, got 1"),
    (lambda: int_at_least(False, "epoch", 0), "epoch must be an integer >= 0, got False"),
    (lambda: int_in_range(4, "rank", 0, 4), "rank must be an integer in [0, 4), got 4"),
    (lambda: int_in_range(2**32, "seed", 0, 2**32, expected="an integer in [0, 2**32)"),
     "seed must be an integer in [0, 2**32), got 4294967296"),
    (lambda: number(0, "lr", low=0, low_open=True), "lr must be a number > 0 (and finite), got 0"),
    (lambda: number(math.inf, "weight-decay", low=0), "weight-decay must be a number >= 0 (and finite), got inf"),
    (lambda: number(math.nan, "lr", low=0, low_open=True), "lr must be a number > 0 (and finite), got nan"),
    (lambda: number(1.5, "gamma", low=0, high=1, low_open=True), "gamma must be a number in (0, 1], got 1.5"),
    (lambda: number(True, "x"), "x must be a finite number, got True"),
    (lambda: number("1", "x", high=1), "x must be a number <= 1 (and finite), got '1'"),
])
def test_a_bad_value_is_one_line_in_the_shared_wording(call, message):
    with pytest.raises(CnnlabError) as info:
        call()
    assert str(info.value) == message


def test_a_good_value_comes_back():
    assert positive_int(3, "n") == 3
    assert int_at_least(0, "n", 0) == 0
    assert int_in_range(3, "n", 0, 4) == 3
    assert number(1, "x", low=0, high=1) == 1
    assert number(0.5, "x", low=0, high=1, low_open=True, high_open=True) == 0.5


def test_text_table_aligns_rules_and_strips():
    rows = [["a", 1, "x"], ["bbb", 22, ""]]
    assert text_table(["n", "v", "note"], rows, "lrl").split("\n") == ["n     v  note", "a     1  x", "bbb  22"]
    assert text_table(["n", "v"], [["a", 1]], "lr", rule="columns").split("\n")[1] == "-  -"
    assert text_table(["name", "v"], [["a", 123456]], "lr", rule="full").split("\n")[1] == "-" * 12
    with pytest.raises(ValueError):
        text_table(["n", "v"], rows, "l")
