"""Plain-text tables for the terminal: `cnnlab models`, `cnnlab datasets`, `cnnlab summary` and `cnnlab eval`.

One printer for all of them, so the columns line up the same way everywhere: two spaces between columns, each
column as wide as its widest cell, names left-aligned and numbers right-aligned, no trailing spaces. (The
markdown, CSV and JSON tables of `cnnlab compare` are :func:`cnnlab.compare.format_table`.)
"""

from __future__ import annotations

from collections.abc import Sequence

__all__ = ["text_table"]

RULES = ("", "columns", "full")


def text_table(header: Sequence[object], rows: Sequence[Sequence[object]], align: str, rule: str = "") -> str:
    """The rows under the header, aligned in columns (cells are shown with ``str``).

    Args:
        header: the column names.
        rows: one sequence of cells per row, as many as the header has.
        align: one letter per column, ``l`` (left-aligned: names) or ``r`` (right-aligned: numbers).
        rule: the line under the header: ``""`` none, ``"columns"`` a run of dashes under each column, ``"full"``
            one run of dashes as long as the longest line.

    Example:
        >>> print(text_table(["model", "params"], [["lenet", "61,706"], ["nin", "1,992,166"]], "lr", rule="columns"))
        model     params
        -----  ---------
        lenet     61,706
        nin    1,992,166
    """
    if len(align) != len(header) or set(align) - {"l", "r"} or rule not in RULES:
        raise ValueError(f"align needs one l or r per column ({len(header)}) and rule one of {RULES}, "
                         f"got {align!r} and {rule!r}")  # a programming error, not bad user input
    table = [[str(cell) for cell in row] for row in [header, *rows]]
    widths = [max(len(row[i]) for row in table) for i in range(len(header))]
    lines = ["  ".join(cell.rjust(w) if a == "r" else cell.ljust(w) for cell, w, a in zip(row, widths, align,
                                                                                       strict=True)).rstrip()
             for row in table]
    if rule == "columns":
        lines.insert(1, "  ".join("-" * w for w in widths))
    elif rule == "full":
        lines.insert(1, "-" * max(map(len, lines)))
    return "\n".join(lines)
