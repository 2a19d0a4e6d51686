"""The book's operations on small inputs, for the page's step-by-step view (d2l 7.2-7.5).

Every number the page shows here is computed by :mod:`cnnlab.ops` (``conv2d``, ``max_pool2d``, ``avg_pool2d``
and ``conv_output_shape``), the same code the models can train on, so the page and the library cannot disagree.
The page only animates the window positions listed in ``steps``.
"""

from __future__ import annotations

import re
from typing import Any

import torch

from cnnlab import ops
from cnnlab.checks import int_in_range
from cnnlab.errors import CnnlabError

MAX_INPUT, MAX_KERNEL, MAX_STEP = 64, 9, 8


def book_input() -> torch.Tensor:
    """d2l 7.2.1's ``X``: 0..8 as 3 x 3."""
    return torch.arange(9.0).reshape(3, 3)


def edge_input() -> torch.Tensor:
    """d2l 7.2.3's image: 6 x 8 ones with a black vertical band in columns 2-5."""
    x = torch.ones(6, 8)
    x[:, 2:6] = 0
    return x


KERNELS = {
    "book": torch.arange(4.0).reshape(2, 2),  # d2l 7.2.1's K
    "edge": torch.tensor([[1.0, -1.0]]),  # d2l 7.2.3: responds where neighbouring columns differ
    "blur": torch.full((3, 3), 1 / 9),
    "sharpen": torch.tensor([[0.0, -1.0, 0.0], [-1.0, 5.0, -1.0], [0.0, -1.0, 0.0]]),
}
INPUTS = {"book": book_input, "edges": edge_input}


def parse_matrix(text: str, what: str, limit: int) -> torch.Tensor:
    """``"0 1 2; 3 4 5"`` (rows split by ``;`` or newlines, numbers by spaces or commas) as a float tensor."""
    rows = [r for r in re.split(r"[;\n]", text.strip()) if r.strip()]
    try:
        values = [[float(v) for v in re.split(r"[,\s]+", r.strip().strip("[]")) if v] for r in rows]
    except ValueError:
        raise CnnlabError(f"{what}: expected numbers in rows split by ';', got {text[:60]!r}") from None
    if not values or any(len(r) != len(values[0]) for r in values) or not values[0]:
        raise CnnlabError(f"{what}: expected a rectangle of numbers (every row as long), got {text[:60]!r}")
    m = torch.tensor(values)
    if max(m.shape) > limit or not torch.isfinite(m).all():
        raise CnnlabError(f"{what}: expected finite numbers, at most {limit} x {limit}, got {tuple(m.shape)}")
    return m


def run_op(op: str, x: torch.Tensor, kernel: torch.Tensor | None = None, pool: int = 2, stride: int = 1,
           padding: int = 0) -> dict[str, Any]:
    """Cross-correlation (``op="corr"``) of ``x`` with ``kernel``, or max/avg pooling (``"max"``/``"avg"``).

    Returns:
        ``{"op", "input", "kernel" (None for pooling), "window": [kh, kw], "padding", "stride", "output",
        "formula", "steps": [[i, j, top, left], ...]}``: ``top``/``left`` index the padded input, in the order
        the book's loop visits the outputs (row by row).

    Raises:
        CnnlabError: an unknown op, out-of-range settings, or a window that does not fit (one line from cnnlab.ops).
    """
    for name, value, low in (("stride", stride, 1), ("padding", padding, 0), ("pool size", pool, 1)):
        int_in_range(value, name, low, MAX_STEP + 1, expected=f"an integer from {low} to {MAX_STEP}")
    if x.dim() != 2 or max(x.shape) > MAX_INPUT:
        raise CnnlabError(f"expected a 2-d input of at most {MAX_INPUT} x {MAX_INPUT}, got {tuple(x.shape)}")
    x = x.double()
    if op == "corr":
        if kernel is None or kernel.dim() != 2 or max(kernel.shape) > MAX_KERNEL:
            raise CnnlabError(f"expected a 2-d kernel of at most {MAX_KERNEL} x {MAX_KERNEL}, got "
                              f"{None if kernel is None else tuple(kernel.shape)}")
        window = tuple(kernel.shape)
        y = ops.conv2d(x[None, None], kernel.double()[None, None], stride=stride, padding=padding)[0, 0]
    elif op in ("max", "avg"):
        window, kernel = (pool, pool), None
        pool_op = ops.max_pool2d if op == "max" else ops.avg_pool2d
        y = pool_op(x[None, None], pool, stride=stride, padding=padding)[0, 0]
    else:
        raise CnnlabError(f"expected op 'corr', 'max' or 'avg', got {op!r}")
    shape = ops.conv_output_shape(tuple(x.shape), window, stride=stride, padding=padding)
    return {
        "op": op, "input": x.tolist(), "kernel": None if kernel is None else kernel.double().tolist(),
        "window": list(window), "padding": padding, "stride": stride, "output": y.tolist(),
        "formula": _formula(tuple(x.shape), window, stride, padding, shape),
        "steps": [[i, j, i * stride, j * stride] for i in range(shape[0]) for j in range(shape[1])],
    }


def _formula(hw: tuple[int, int], window: tuple[int, int], stride: int, padding: int,
             shape: tuple[int, int]) -> list[str]:
    """d2l eq. 7.3.2 per axis with the numbers filled in: ``floor((n + 2p - k) / s) + 1``."""
    return [f"{axis} = ⌊({n} + 2·{padding} − {k}) / {stride}⌋ + 1 = {out}"
            for axis, n, k, out in zip(("out height", "out width"), hw, window, shape, strict=True)]
