"""The book's matplotlib helpers (d2l 2.4.2): ``use_svg_display``, ``set_figsize``, ``set_axes`` and ``plot``.

They draw on pyplot's current figure, as the book's cells expect (``d2l.plt.scatter`` after ``d2l.set_figsize()``).
In Jupyter the inline backend shows that figure under the cell; in a script nothing is shown (matplotlib's
non-interactive backends), and the figure stays reachable through ``d2l.plt.gcf()``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from cnnlab.d2l.board import in_notebook

__all__ = ["use_svg_display", "set_figsize", "set_axes", "plot"]


def use_svg_display() -> None:
    """Show Jupyter's inline figures as SVG; outside a notebook (or without matplotlib-inline) it does nothing."""
    if not in_notebook():
        return
    try:
        from matplotlib_inline import backend_inline
    except ImportError:  # an IPython kernel without matplotlib-inline keeps its PNG figures
        return
    backend_inline.set_matplotlib_formats("svg")


def set_figsize(figsize: tuple[float, float] = (3.5, 2.5)) -> None:
    """Set the size in inches of the figures pyplot makes from now on."""
    from matplotlib import pyplot as plt

    use_svg_display()
    plt.rcParams["figure.figsize"] = figsize


def set_axes(axes: Any, xlabel: str | None, ylabel: str | None, xlim: Sequence[float] | None,
             ylim: Sequence[float] | None, xscale: str, yscale: str, legend: Sequence[str] | None) -> None:
    """Label, scale and bound ``axes``, add the legend when given, and draw the grid (d2l's order of calls)."""
    axes.set_xlabel(xlabel)
    axes.set_ylabel(ylabel)
    axes.set_xscale(xscale)
    axes.set_yscale(yscale)
    axes.set_xlim(xlim)
    axes.set_ylim(ylim)
    if legend:
        axes.legend(legend)
    axes.grid()


def _has_one_axis(X: Any) -> bool:
    """A single series: a 1-D array or tensor, or a list of numbers (not a list of series)."""
    return (hasattr(X, "ndim") and X.ndim == 1) or (isinstance(X, list) and not hasattr(X[0], "__len__"))


def plot(X: Any, Y: Any = None, xlabel: str | None = None, ylabel: str | None = None,
         legend: Sequence[str] | None = None, xlim: Sequence[float] | None = None,
         ylim: Sequence[float] | None = None, xscale: str = "linear", yscale: str = "linear",
         fmts: Sequence[str] = ("-", "m--", "g-.", "r:"), figsize: tuple[float, float] = (3.5, 2.5),
         axes: Any = None) -> None:
    """Plot one or several series: ``plot(x, y)``, ``plot(x, [y1, y2])``, or ``plot(y)`` against the index.

    CPU tensors, numpy arrays and lists are all accepted (matplotlib converts them).
    """
    from matplotlib import pyplot as plt

    if _has_one_axis(X):
        X = [X]
    if Y is None:
        X, Y = [[]] * len(X), X
    elif _has_one_axis(Y):
        Y = [Y]
    if len(X) != len(Y):
        X = X * len(Y)
    set_figsize(figsize)
    if axes is None:
        axes = plt.gca()
    axes.cla()
    for x, y, fmt in zip(X, Y, fmts, strict=False):
        if len(x):
            axes.plot(x, y, fmt)
        else:
            axes.plot(y, fmt)
    set_axes(axes, xlabel, ylabel, xlim, ylim, xscale, yscale, legend or [])
