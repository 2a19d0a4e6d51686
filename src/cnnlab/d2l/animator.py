"""``Animator``: the function-style API's live training curves (d2l 4.4.4, used by ``train_ch3``/``train_ch6``).

d2l redraws a pyplot figure on every ``add`` and calls ``display`` + ``clear_output``: in a plain script that shows
nothing and prints ``Figure(350x250)`` lines instead
(https://github.com/d2l-ai/d2l-en/issues/1961). Here, in Jupyter the figure is redrawn in one
display slot; outside a notebook the figure is drawn only when read (``animator.fig``) and each epoch prints one
line instead, ``epoch 3: train loss 0.412, train acc 0.851, test acc 0.838``. An epoch's line is printed once every
series has a value at that integral x (``train_ch6`` adds the train values first and the test accuracy after), or
when a later x arrives.
"""

from __future__ import annotations

import numbers
from collections.abc import Sequence
from typing import Any

from cnnlab.d2l.board import in_notebook, show_in_place
from cnnlab.d2l.plotting import set_axes, use_svg_display

__all__ = ["Animator"]


def _integral(x: Any) -> bool:
    return isinstance(x, numbers.Real) and float(x).is_integer()


class Animator:
    """Lines drawn point by point: ``add(x, (y1, y2, ...))`` appends one point to each series (``None`` skips one).

    Args:
        xlabel, ylabel, xlim, ylim, xscale, yscale: axis settings, as matplotlib names them.
        legend: series names (also the names in the printed epoch lines).
        fmts: matplotlib format strings of the series, in order.
        nrows, ncols: subplot grid (the curves go to the first axes, as in d2l).
        figsize: figure size in inches.

    Attributes:
        X, Y: per series, the x and y values added so far (what the book's code reads, e.g. ``animator.Y[0][-1]``).
    """

    def __init__(self, xlabel: str | None = None, ylabel: str | None = None, legend: Sequence[str] | None = None,
                 xlim: Sequence[float] | None = None, ylim: Sequence[float] | None = None, xscale: str = "linear",
                 yscale: str = "linear", fmts: Sequence[str] = ("-", "m--", "g-.", "r:"), nrows: int = 1,
                 ncols: int = 1, figsize: tuple[float, float] = (3.5, 2.5)):
        use_svg_display()
        # A bare Figure, not pyplot's: pyplot would also show it at the end of a Jupyter cell (a second copy).
        from matplotlib.figure import Figure

        self._fig = Figure(figsize=figsize)
        axes = self._fig.subplots(nrows, ncols)
        self.axes = [axes] if nrows * ncols == 1 else axes
        self.legend = list(legend or [])
        self.xlabel, self.ylabel = xlabel, ylabel
        self.config_axes = lambda: set_axes(self.axes[0], xlabel, ylabel, xlim, ylim, xscale, yscale, self.legend)
        self.X: list[list] | None = None
        self.Y: list[list] | None = None
        self.fmts = fmts
        self._drawn = 0  # points drawn into the figure so far (redraw only when new ones came)
        self._handle = None
        self._pending: dict[float, dict[int, float]] = {}  # integral x -> series index -> value, not yet printed

    def add(self, x: Any, y: Any) -> None:
        """Append ``y[i]`` at ``x`` (or ``x[i]``) to series ``i``; in Jupyter redraw, in a script maybe print."""
        if not hasattr(y, "__len__"):
            y = [y]
        n = len(y)
        if not hasattr(x, "__len__"):
            x = [x] * n
        if not self.X:
            self.X = [[] for _ in range(n)]
        if not self.Y:
            self.Y = [[] for _ in range(n)]
        for i, (a, b) in enumerate(zip(x, y, strict=False)):
            if a is not None and b is not None:
                b = float(b)
                self.X[i].append(a)
                self.Y[i].append(b)
                if _integral(a):
                    self._pending.setdefault(float(a), {})[i] = b
        if in_notebook():
            self._handle = show_in_place(self.fig, self._handle)
        else:
            self._print_lines(max((a for a in x if a is not None), default=None), len(self.Y))

    @property
    def fig(self) -> Any:
        """The matplotlib figure with every point added so far."""
        total = sum(len(s) for s in self.Y or [])
        if total != self._drawn:
            self._drawn = total
            self.axes[0].cla()
            for xs, ys, fmt in zip(self.X, self.Y, self.fmts, strict=False):
                self.axes[0].plot(xs, ys, fmt)
            self.config_axes()
        return self._fig

    def _name(self, i: int) -> str:
        if i < len(self.legend):
            return self.legend[i]
        return self.ylabel if self.ylabel and len(self.Y) == 1 else f"y{i}"

    def _print_lines(self, latest: Any, n: int) -> None:
        """Print the lines of integral x values that are complete, or that a later x has left behind."""
        for at in sorted(self._pending):
            values = self._pending[at]
            if len(values) < n and (latest is None or latest <= at):
                continue
            del self._pending[at]
            parts = ", ".join(f"{self._name(i)} {values[i]:.4g}" for i in sorted(values))
            print(f"{self.xlabel or 'x'} {at:g}: {parts}", flush=True)
