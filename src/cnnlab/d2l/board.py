"""``ProgressBoard``: the book's animated training curves (d2l 3.2.3), without the per-step cost.

d2l 1.0.3 converts every plotted value to numpy (a device sync per training step), redraws a pyplot figure on
each point and calls ``IPython.display.display(fig)``, which in a plain script prints ``Figure(350x250)`` lines.
This board keeps the values as tensors on their device, averages them there, and reads them back only when it
renders: in a Jupyter kernel at most once per ``refresh_s`` seconds and at the end of each epoch. Outside a
notebook d2l shows nothing at all (the script looks hung: https://github.com/d2l-ai/d2l-en/issues/1961); here the
trainer's end-of-epoch
``refresh()`` prints one line with each series' mean over the points since the previous line, and the figure is
drawn only when asked (``figure()``, ``save(path)``).
"""

from __future__ import annotations

import collections
import io
import math
import os
import sys
import time
from collections.abc import Sequence
from typing import Any

import torch

from cnnlab.d2l.hyperparameters import HyperParameters
from cnnlab.errors import CnnlabError

__all__ = ["ProgressBoard", "in_notebook", "show_in_place"]

Point = collections.namedtuple("Point", ["x", "y"])


def in_notebook() -> bool:
    """True inside a Jupyter (ipykernel) session, where figures can be displayed and updated in place."""
    if "ipykernel" not in sys.modules or "IPython" not in sys.modules:
        return False
    from IPython import get_ipython

    shell = get_ipython()
    return shell is not None and getattr(shell, "kernel", None) is not None


def show_in_place(fig: Any, handle: Any = None) -> Any:
    """Show ``fig`` under the running Jupyter cell as a PNG, replacing what ``handle`` showed; returns the handle.

    One display slot updated in place, instead of d2l's ``display`` + ``clear_output`` per point, which also
    wipes everything else the cell printed.
    """
    from IPython.display import Image, display

    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", bbox_inches="tight")
    image = Image(data=buffer.getvalue(), format="png")
    if handle is None:
        return display(image, display_id=True)
    handle.update(image)
    return handle


def _to_floats(values: list) -> list[float]:
    """Python floats for a list of numbers and 0-d tensors, with one device read per device."""
    out = [v if not isinstance(v, torch.Tensor) else None for v in values]
    by_device: dict[torch.device, list[int]] = {}
    for i, v in enumerate(values):
        if isinstance(v, torch.Tensor):
            by_device.setdefault(v.device, []).append(i)
    for idx in by_device.values():
        for i, f in zip(idx, torch.stack([values[i].float() for i in idx]).tolist(), strict=True):
            out[i] = f
    return [float(v) for v in out]


class ProgressBoard(HyperParameters):
    """Curves of named series against x, drawn point by point (d2l's ``ProgressBoard`` API, a ``HyperParameters``
    as the book's: its arguments are its attributes and ``hparams``).

    Args:
        xlabel, ylabel, xlim, ylim, xscale, yscale: axis settings, as matplotlib names them.
        ls, colors: line styles and colours given to the series in the order they first appear.
        fig, axes: draw into this figure/axes instead of a new figure.
        figsize: size in inches of a new figure.
        display: show the figure live in Jupyter (scripts never show it; see ``save``).
        refresh_s: least number of seconds between live redraws in Jupyter.
    """

    def __init__(self, xlabel: str | None = None, ylabel: str | None = None, xlim: Sequence[float] | None = None,
                 ylim: Sequence[float] | None = None, xscale: str = "linear", yscale: str = "linear",
                 ls: Sequence[str] = ("-", "--", "-.", ":"), colors: Sequence[str] = ("C0", "C1", "C2", "C3"),
                 fig: Any = None, axes: Any = None, figsize: tuple[float, float] = (3.5, 2.5),
                 display: bool = True, *, refresh_s: float = 1.0):
        self.save_hyperparameters()  # as the book's board: the arguments as attributes (fig: the setter) and hparams
        self.raw_points: collections.OrderedDict[str, list] = collections.OrderedDict()
        self._lines: collections.OrderedDict[str, list] = collections.OrderedDict()  # Points; y maybe a tensor
        self._last_render = -math.inf  # the first point is drawn at once
        self._handle = None  # IPython display handle, updated in place
        self._printed = collections.Counter()  # per series: averaged points already summarised in an epoch line
        self._drawn = 0  # averaged points in the figure as last drawn

    def draw(self, x: float, y: torch.Tensor | float, label: str, every_n: int = 1) -> None:
        """Add the point ``(x, y)`` to series ``label``; every ``every_n`` points become one averaged point.

        ``y`` may be a number or a one-element tensor on any device; a tensor is not read back here.
        """
        if every_n < 1:
            raise CnnlabError(f"every_n must be a positive int, got {every_n!r}")
        if isinstance(y, torch.Tensor):
            if y.numel() != 1:
                raise CnnlabError(f"ProgressBoard.draw expects one value per point, got a tensor of shape "
                                  f"{tuple(y.shape)} for {label!r}")
            y = y.detach().reshape(())
        points = self.raw_points.setdefault(label, [])
        line = self._lines.setdefault(label, [])
        points.append((x, y))
        if len(points) < every_n:
            return
        xs, ys = zip(*points, strict=True)
        if all(isinstance(v, torch.Tensor) for v in ys) and len({v.device for v in ys}) == 1:
            y_mean = torch.stack([v.float() for v in ys]).mean()  # stays on the device: no sync
        else:
            y_mean = sum(_to_floats(list(ys))) / len(ys)
        line.append(Point(sum(xs) / len(xs), y_mean))
        points.clear()
        if self.display and in_notebook() and time.monotonic() - self._last_render >= self.refresh_s:
            self.render()

    @property
    def data(self) -> collections.OrderedDict[str, list[Point]]:
        """The averaged points of each series, as floats (reads pending device values back)."""
        self.flush()
        return self._lines

    def flush(self) -> None:
        """Convert the averaged points still held as device tensors into floats (one read per device)."""
        pending = [(line, i) for line in self._lines.values() for i, p in enumerate(line)
                   if isinstance(p.y, torch.Tensor)]
        if pending:
            floats = _to_floats([line[i].y for line, i in pending])
            for (line, i), y in zip(pending, floats, strict=True):
                line[i] = Point(line[i].x, y)

    def refresh(self) -> None:
        """End-of-epoch hook of the trainer: redraw when live in Jupyter; in a script print the epoch's line."""
        if self.display and in_notebook():
            self.render()
            return
        self.flush()
        if self.display:
            line = self.epoch_line()
            if line:
                print(line, flush=True)

    def epoch_line(self) -> str:
        """``"epoch 3: train_loss 0.4213, val_loss 0.441, val_acc 0.8412"``: each series' mean over the averaged
        points added since the previous line, at the largest x among them (empty when nothing is new)."""
        self.flush()
        xs, parts = [], []
        for label, line in self._lines.items():
            new = line[self._printed[label]:]
            self._printed[label] = len(line)
            if new:
                xs.extend(p.x for p in new)
                parts.append(f"{label} {sum(p.y for p in new) / len(new):.4g}")
        if not parts:
            return ""
        return f"{self.xlabel or 'x'} {max(xs):g}: " + ", ".join(parts)

    @property
    def fig(self) -> Any:
        """The matplotlib figure with the curves drawn so far, as d2l's board holds one after training
        (``model.board.fig.savefig(...)`` in a script); redrawn only when points were added since, so that what a
        cell changed on it (a title, limits) stays."""
        points = sum(len(line) for line in self._lines.values())
        if self._fig is None or points != self._drawn:
            self.figure()
        return self._fig

    @fig.setter
    def fig(self, value: Any) -> None:
        self._fig = value

    def figure(self) -> Any:
        """The matplotlib figure with the curves drawn so far (created on first use, never shown)."""
        self.flush()
        if self._fig is None:
            if self.axes is not None:
                self._fig = self.axes.figure
            else:
                # A bare Figure, not pyplot: pyplot would keep it alive and Jupyter's inline backend would show
                # it a second time at the end of the cell.
                from matplotlib.figure import Figure

                self._fig = Figure(figsize=self.figsize)
        axes = self.axes
        if axes is None:
            axes = self._fig.axes[0] if self._fig.axes else self._fig.add_subplot()
        axes.cla()
        handles, labels = [], []
        # Series beyond the styles given are not drawn, as in d2l.
        for (label, line), ls, color in zip(self._lines.items(), self.ls, self.colors, strict=False):
            handles.append(axes.plot([p.x for p in line], [p.y for p in line], linestyle=ls, color=color)[0])
            labels.append(label)
        if self.xlim:
            axes.set_xlim(self.xlim)
        if self.ylim:
            axes.set_ylim(self.ylim)
        axes.set_xlabel(self.xlabel or "")
        axes.set_ylabel(self.ylabel or "")
        axes.set_xscale(self.xscale)
        axes.set_yscale(self.yscale)
        if handles:
            axes.legend(handles, labels)
        self._drawn = sum(len(line) for line in self._lines.values())
        return self._fig

    def render(self) -> None:
        """Redraw the figure and, in Jupyter, show it in place of the previous drawing."""
        fig = self.figure()
        self._last_render = time.monotonic()
        if not (self.display and in_notebook()):
            return
        self._handle = show_in_place(fig, self._handle)

    def save(self, path: str | os.PathLike, **savefig_kwargs: Any) -> None:
        """Draw the curves so far and write them to ``path`` (format from the suffix: .png, .svg, .pdf)."""
        self.figure().savefig(path, **{"bbox_inches": "tight", **savefig_kwargs})
