"""Figures of what a trained network learnt. Every function returns a :class:`matplotlib.figure.Figure`.

Figures are built with ``Figure`` directly rather than through ``pyplot``: no global figure registry to leak
memory in a long training process, no backend to choose (saving to PNG uses Agg), and nothing is ever shown.
"""

from __future__ import annotations

import contextlib
import functools
import io
import math
import re
from collections.abc import Iterator, Sequence

import matplotlib
import torch
from matplotlib import font_manager, ft2font
from matplotlib.figure import Figure

from cnnlab.errors import CnnlabError
from cnnlab.io import writable_text

MAPS_CMAP = "viridis"
FILTER_CMAP = "RdBu_r"  # diverging: red excites, blue inhibits, white is zero
# Class and run names may be Chinese, Japanese or Korean (d2l-zh's readers name their own classes so), and
# matplotlib's DejaVu Sans has none of those glyphs: each drew as a box, with a warning. Text falls back, glyph by
# glyph, to the first of these fonts that matplotlib knows on the machine (Linux, Windows and macOS families).
CJK_FONTS = ("Noto Sans CJK SC", "Noto Sans CJK TC", "Noto Sans CJK JP", "Noto Sans CJK KR", "Source Han Sans SC",
             "Source Han Sans", "WenQuanYi Micro Hei", "WenQuanYi Zen Hei", "Droid Sans Fallback", "Microsoft YaHei",
             "SimHei", "Yu Gothic", "Malgun Gothic", "PingFang SC", "Hiragino Sans GB", "Hiragino Sans",
             "Apple SD Gothic Neo")


@contextlib.contextmanager
def name_text() -> Iterator[None]:
    """Matplotlib's settings for the figures built and saved inside, which show names (classes, runs) as they are
    written: a CJK fallback font (:data:`CJK_FONTS`), and no math text: a name with ``$`` in it ("cost $5 to $10")
    was set as math, in italics without its dollars, or failed the figure ("Unknown symbol" for ``$\\x$``).

    Both when built and when saved: a text takes its settings when it is made, and tick labels are made only when
    the figure is drawn.
    """
    fallback = _cjk_fallback()
    fonts = {"font.family": [*matplotlib.rcParams["font.family"], fallback]} if fallback else {}
    with matplotlib.rc_context({**fonts, "text.parse_math": False}):
        yield


def _cjk_fallback() -> str | None:
    """The first of :data:`CJK_FONTS` that matplotlib knows on the machine, or None."""
    known = {f.name for f in font_manager.fontManager.ttflist}
    return next((name for name in CJK_FONTS if name in known), None)


@functools.lru_cache(maxsize=8)
def _characters(font_files: tuple[str, ...]) -> frozenset[int]:
    """The code points any of ``font_files`` has a glyph for."""
    return frozenset().union(*(ft2font.FT2Font(file).get_charmap() for file in font_files))


def _drawable() -> frozenset[int]:
    """The code points a figure can draw a name with: those of the fonts :func:`name_text` gives it, as matplotlib
    finds each family on the machine (its own DejaVu Sans, then the CJK fallback)."""
    families = dict.fromkeys([*matplotlib.rcParams["font.family"], _cjk_fallback()])
    found = set()
    for family in filter(None, families):
        with contextlib.suppress(ValueError):  # a family not on this machine draws nothing
            found.add(font_manager.findfont(font_manager.FontProperties(family=[family]),
                                            fallback_to_default=False))
    return _characters(tuple(sorted(found)))


def undrawable(name: str) -> str:
    """The characters of ``name`` that no font a figure draws names with has (an emoji, say), once each."""
    drawable = _drawable()
    return "".join(dict.fromkeys(c for c in writable_text(name) if ord(c) not in drawable))


def names_drawn_otherwise(names: Sequence[str], of: str = "class names", figures: str = "the figures draw",
                          text: str = "the page's text") -> str | None:
    """One line for whoever reads figures of ``names`` (a run's classes; the runs `cnnlab compare` plots) where some
    have characters no font on the machine has, which :func:`drawn_name` draws as U+FFFD (matplotlib drew a box for
    each, with a warning each time a figure was drawn); None where every name is drawn as written. Every command
    that draws names says it in these words: ``of`` what the names are, ``figures`` what draws them (with its verb),
    ``text`` what shows them as written."""
    lacking = {name: missing for name in map(writable_text, names) if (missing := undrawable(name))}
    if not lacking:
        return None
    shown = ", ".join(lacking) if len(lacking) <= 3 else ", ".join(list(lacking)[:3]) + f" and {len(lacking) - 3} more"
    chars = "".join(dict.fromkeys("".join(lacking.values())))
    return (f"{figures} {chars} in the {of} {shown} as \N{REPLACEMENT CHARACTER}: no font on this machine has them "
            f"({text} shows every name as written)")


def _with_name_text(build):
    @functools.wraps(build)
    def wrapper(*args, **kwargs):
        with name_text():
            return build(*args, **kwargs)
    return wrapper


@_with_name_text
def figure_png(fig: Figure, dpi: int = 100) -> bytes:
    """The figure as PNG bytes, cropped to its content."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi, bbox_inches="tight", facecolor="white")
    return buf.getvalue()


def show_image(ax, image: torch.Tensor) -> None:
    """Draw one dataset image: ``H x W`` or ``1 x H x W`` grey, ``3 x H x W`` RGB (uint8 or float in [0, 1])."""
    x = image.detach().cpu()
    if x.dim() == 3 and x.shape[0] == 1:
        x = x[0]
    top = 255 if x.dtype == torch.uint8 else 1
    if x.dim() == 3:  # C x H x W colour -> H x W x C, as imshow wants it
        ax.imshow((x.float() / top).clamp(0, 1).permute(1, 2, 0).numpy())
    else:
        ax.imshow(x.float().numpy(), cmap="gray", vmin=0, vmax=top)


def _bare(ax) -> None:
    ax.set_xticks([])
    ax.set_yticks([])
    for spine in ax.spines.values():
        spine.set_linewidth(0.4)
        spine.set_color("#999999")


# A confusion matrix of many classes (CIFAR-100; a folder of 150) drew every cell's number and every class name in
# the 6.6 x 5.6 in of ten classes: a black smear. The grid grows with the classes up to a cap (a page shows the
# image scaled to its width), a cell's number is drawn while it fits (the colour says the rest), and the class
# names shrink to the cell, then every n-th is named.
CONFUSION_NUMBERS_UP_TO = 25  # classes whose cells still hold "100" at a readable size
CONFUSION_GRID_IN = (4.0, 14.0)  # the grid's side in inches: ten classes or fewer, and the most
LABEL_PT = (5.0, 8.5)  # the class names' font sizes: the smallest readable, and the size of ten classes
# The most characters of a class name beside the grid: a folder's class names of 180 characters left the grid of
# 1,000 classes a third of the picture's width, beside a wall of names (the per-class table names them whole).
CONFUSION_NAME_CHARS = 24


def confusion_layout(k: int) -> dict[str, float]:
    """How a confusion matrix of ``k`` classes is drawn: the figure's ``width`` and ``height`` (inches), the cell
    numbers' font size (``numbers``, 0: none), the class names' (``labels``), and every ``step``-th class named."""
    side = min(CONFUSION_GRID_IN[0] + 0.1 * max(k - 10, 0), CONFUSION_GRID_IN[1])
    cell = side * 72 / k  # points
    labels = min(max(cell * 0.8, LABEL_PT[0]), LABEL_PT[1])
    return {"width": side + 2.6, "height": side + 1.6,
            "numbers": min(8.0, cell * 0.45) if k <= CONFUSION_NUMBERS_UP_TO else 0.0,
            "labels": labels, "step": max(1, math.ceil(labels * 1.15 / cell))}


@_with_name_text
def confusion_figure(confusion: torch.Tensor, classes: Sequence[str]) -> Figure:
    """Row-normalised confusion matrix: cell ``(i, j)`` is the share of class ``i`` predicted as ``j`` (in %).

    The diagonal is each class's accuracy (recall); a row sums to 100%. Its size, and whether the cells hold their
    numbers, follow the number of classes (:func:`confusion_layout`).
    """
    k = len(classes)
    if tuple(confusion.shape) != (k, k):
        raise CnnlabError(f"expected a {k} x {k} confusion matrix for {k} classes, got {tuple(confusion.shape)}")
    share = (confusion.double() / confusion.sum(1, keepdim=True).clamp_min(1) * 100).numpy()
    layout = confusion_layout(k)
    fig = Figure(figsize=(layout["width"], layout["height"]))
    ax = fig.add_subplot()
    im = ax.imshow(share, cmap="Blues", vmin=0, vmax=100)
    for i in range(k if layout["numbers"] else 0):
        for j in range(k):
            value = share[i, j]
            if value >= 0.5 or i == j:
                # in matplotlib's own font: digits need no CJK fallback, and a fallback without a bold face
                # (WenQuanYi Micro Hei) made every report print a findfont warning for the diagonal's bold
                ax.text(j, i, f"{value:.0f}", ha="center", va="center", fontsize=layout["numbers"],
                        color="white" if value > 55 else "#222222", fontweight="bold" if i == j else "normal",
                        family="DejaVu Sans")
    named = range(0, k, int(layout["step"]))
    # Slanted names are easier to read, but lean over one another in narrow cells; upright ones stand a cell apart.
    slant = {"rotation": 40, "ha": "right"} if k <= CONFUSION_NUMBERS_UP_TO else {"rotation": 90, "ha": "center"}
    names = [drawn_name(classes[i], CONFUSION_NAME_CHARS) for i in named]
    ax.set_xticks(named, names, fontsize=layout["labels"], **slant)
    ax.set_yticks(named, names, fontsize=layout["labels"])
    ax.set_xlabel("predicted class")
    ax.set_ylabel("true class")
    ax.set_title("test images per true class (%)", fontsize=10)
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.03).ax.tick_params(labelsize=8)
    fig.tight_layout()
    return fig


CAPTION_CHAR_IN = 0.07  # a character of a 7.5 pt caption, in inches (with room: DejaVu Sans averages 0.6 em)
MISCLASSIFIED_CHARS = 32  # a caption's characters at the widest an image gets (2.4 in)


def drawn_name(name: str, chars: int | None = None) -> str:
    """``name`` (a class's, a run folder's) as a figure draws it: a name that is not UTF-8 (Linux allows any bytes)
    with U+FFFD for each such byte (:func:`cnnlab.io.writable_text`; matplotlib's text refuses the lone surrogates
    Python holds it with, and the figure failed), and for each run of characters no font on the machine has
    (:func:`undrawable`), and, given ``chars``, in at most that many characters: cut in the
    middle, where an ellipsis stands."""
    name = writable_text(name)
    if lacking := undrawable(name):  # one mark for each run of them (an emoji sequence): not a box each, warned of
        missing = re.escape(lacking)  # ... with the joiners and variation selectors inside an emoji sequence
        name = re.sub(f"[{missing}][{missing}\u200d\ufe0e\ufe0f]*", "\N{REPLACEMENT CHARACTER}", name)
    if chars is None or len(name) <= chars:
        return name
    return f"{name[:(chars - 1) // 2]}…{name[len(name) - chars // 2:]}"


@_with_name_text
def misclassified_figure(images: torch.Tensor, true: Sequence[int], pred: Sequence[int], confidence: Sequence[float],
                         classes: Sequence[str], cols: int = 8) -> Figure:
    """A grid of test images with the predicted class (and its probability) above the true one.

    Args:
        images: ``N x H x W`` or ``N x C x H x W`` (uint8 or float in [0, 1]), shown as the dataset stores them.
        true: true class of each image.
        pred: predicted class of each image.
        confidence: the softmax probability of the predicted class.
        classes: class names.
        cols: images per row.
    """
    n = images.shape[0]
    rows = max(1, -(-n // cols))
    # Each image is as wide as its longest caption (CIFAR-100's "aquarium_fish 99.9%" ran into its neighbour's) up
    # to a cap; names longer than the cap holds are shortened in the middle, keeping the ends that tell them apart.
    chars = min(max([len(classes[c]) for c in (*pred[:n], *true[:n])] + [0]) + 6, MISCLASSIFIED_CHARS)
    name = functools.partial(drawn_name, chars=chars - 6)
    fig = Figure(figsize=(cols * max(1.2, chars * CAPTION_CHAR_IN + 0.25), rows * 1.55))
    for i in range(rows * cols):
        ax = fig.add_subplot(rows, cols, i + 1)
        _bare(ax)
        if i >= n:
            ax.set_visible(False)
            continue
        show_image(ax, images[i])
        p = confidence[i]
        ax.set_title(f"{name(classes[pred[i]])} {'≥99.9%' if p >= 0.9995 else f'{p:.1%}'}", fontsize=7.5,
                     color="#b2182b", pad=2)
        ax.set_xlabel(f"true: {name(classes[true[i]])}", fontsize=7.5, labelpad=2)
    fig.subplots_adjust(wspace=0.08, hspace=0.55)
    return fig


def filters_figure(weight: torch.Tensor, cols: int = 16) -> Figure:
    """First-layer kernels ``out x in x kh x kw`` as small images (averaged over input channels if several).

    Each kernel has its own symmetric colour scale (its largest absolute weight is full red or blue), so the
    pattern of every kernel shows even when their magnitudes differ.
    """
    if weight.dim() != 4:
        raise CnnlabError(f"expected conv weights out x in x kh x kw, got shape {tuple(weight.shape)}")
    kernels = weight.detach().float().cpu().mean(1)  # out x kh x kw
    n = kernels.shape[0]
    cols = min(cols, n)
    rows = -(-n // cols)
    side = (0.9 if n <= 16 else 0.62) if kernels.shape[-1] > 1 else 0.4
    fig = Figure(figsize=(cols * side, rows * side + 0.2))
    for i in range(n):
        ax = fig.add_subplot(rows, cols, i + 1)
        _bare(ax)
        limit = float(kernels[i].abs().max()) or 1.0
        ax.imshow(kernels[i].numpy(), cmap=FILTER_CMAP, vmin=-limit, vmax=limit, interpolation="nearest")
    fig.subplots_adjust(wspace=0.06, hspace=0.06, left=0, right=1, bottom=0, top=1)
    return fig


@_with_name_text
def feature_maps_figure(image: torch.Tensor, rows: Sequence[tuple[str, torch.Tensor]], title: str = "",
                        channels: int = 8) -> Figure:
    """One test image and its feature maps at every row of the network.

    Args:
        image: the input, ``H x W`` or ``C x H x W`` (uint8 or float in [0, 1]).
        rows: ``(label, maps)`` pairs, maps ``C x H x W`` for one image.
        title: shown beside the input image.
        channels: maps per row: the ``channels`` with the largest spatial variance for this image, i.e. the
            ones that respond most selectively to it (a constant map says little). Each map is min-max scaled,
            so a dead channel (all zero after a ReLU) shows as one flat colour.
    """
    cell = 0.56
    fig = Figure(figsize=(cell * (channels + 1.9), cell * (len(rows) + 1) + 0.05))
    grid = fig.add_gridspec(len(rows) + 1, channels + 1, width_ratios=[1.9] + [1] * channels,
                            wspace=0.06, hspace=0.1, left=0, right=1, bottom=0, top=1)

    def label(r: int, text: str) -> None:
        ax = fig.add_subplot(grid[r, 0])
        ax.axis("off")
        ax.text(0.96, 0.5, text, ha="right", va="center", fontsize=6, transform=ax.transAxes)

    label(0, "input")
    ax = fig.add_subplot(grid[0, 1])
    _bare(ax)
    show_image(ax, image)
    if title:
        ax.text(1.15, 0.5, title, ha="left", va="center", fontsize=7.5, transform=ax.transAxes)
    for r, (name, maps) in enumerate(rows, start=1):
        maps = maps.detach().float().cpu()
        c, h, w = maps.shape
        label(r, f"{name}\n{c}×{h}×{w}")
        order = maps.flatten(1).var(1, correction=0).argsort(descending=True)[:channels]
        for col, channel in enumerate(order.tolist(), start=1):
            ax = fig.add_subplot(grid[r, col])
            _bare(ax)
            ax.imshow(maps[channel].numpy(), cmap=MAPS_CMAP, interpolation="nearest")
    return fig
