"""``cnnlab kernel``: detect a vertical edge with a hand-made kernel, then learn that kernel (d2l 7.2.3-7.2.4).

The book builds a 6x8 image, black in the middle, and shows that the kernel [1, -1] marks its two vertical edges
with +1 and -1 while seeing nothing in the transposed image. It then recovers the kernel from (X, Y) alone with ten
steps of gradient descent on a bias-free 1x2 convolution. Here that convolution is cnnlab's own
:class:`cnnlab.layers.Conv2d`, initialised from a fixed seed, so the run is repeatable (the book's was not seeded:
its losses 12.122 ... 0.087 and kernel [1.0132, -0.9551] came from one random start).
"""

from __future__ import annotations

from pathlib import Path

import torch
from matplotlib.figure import Figure

from cnnlab.checks import is_int
from cnnlab.errors import CnnlabError
from cnnlab.io import check_figure_file, save_figure
from cnnlab.layers import Conv2d
from cnnlab.ops import corr2d


def edge_image() -> torch.Tensor:
    """The book's 6x8 image: ones with a black (zero) band in columns 2-5."""
    X = torch.ones((6, 8))
    X[:, 2:6] = 0
    return X


def kernel_figure(X: torch.Tensor, Y: torch.Tensor, kernel: torch.Tensor) -> Figure:
    """Three panels: the image X, the edge map Y = corr2d(X, K), and the learned 1x2 kernel with its values."""
    fig = Figure(figsize=(9, 2.8), layout="constrained")
    axes = fig.subplots(1, 3, width_ratios=[8, 7, 2])
    panels = [(X, "X (6x8 image)", "gray", (0, 1)), (Y, "Y = corr2d(X, [[1, -1]])", "RdBu_r", (-1, 1)),
              (kernel, "learned kernel", "RdBu_r", (-1.2, 1.2))]
    for ax, (image, title, cmap, (lo, hi)) in zip(axes, panels, strict=True):
        ax.imshow(image.detach().cpu().numpy(), cmap=cmap, vmin=lo, vmax=hi)
        ax.set_title(title, fontsize=10)
        ax.set_xticks(range(image.shape[1]))
        ax.set_yticks(range(image.shape[0]))
        ax.tick_params(labelsize=7)
    for j, value in enumerate(kernel.flatten().tolist()):
        axes[2].text(j, 0, f"{value:.3f}", ha="center", va="center", fontsize=9, color="white")
    return fig


def run_kernel_demo(out: str | Path | None = None, steps: int = 10, lr: float = 3e-2, seed: int = 0,
                    force: bool = False) -> dict:
    """Run d2l 7.2.3-7.2.4 and print what the book prints.

    Args:
        out: where to save a figure of X, Y and the learned kernel (format from the suffix, PNG by default);
            written atomically. None saves nothing. A missing folder is made; an existing file is refused.
        steps: gradient-descent steps (the book: 10).
        lr: learning rate (the book: 3e-2).
        seed: seeds the kernel's initialisation without touching the global RNG.
        force: replace an existing ``out``.

    Returns:
        ``{"losses": [loss of each step], "kernel": [[k0, k1]], "transpose_is_zero": bool, "figure": path or
        None}``; the losses are the summed squared errors before each step's update, as the book prints them.
    """
    if not is_int(steps) or steps < 1:  # worded as the ops word theirs (this demo sits beside them)
        raise CnnlabError(f"expected steps to be a positive int, got {steps!r}")
    path = check_figure_file(out, force, what="--out ", make_folder=True) if out is not None else None
    X = edge_image()
    K = torch.tensor([[1.0, -1.0]])
    Y = corr2d(X, K)
    print(f"Y = corr2d(X, K) marks the edges:\n{Y}")
    transpose_is_zero = bool((corr2d(X.t(), K) == 0).all())
    print(f"corr2d(X.t(), K) is all zeros: {transpose_is_zero} (this kernel only sees vertical edges)")

    with torch.random.fork_rng(devices=[]):  # seed the layer's init without disturbing the caller's RNG
        torch.manual_seed(seed)
        conv2d = Conv2d(1, 1, kernel_size=(1, 2), bias=False)
    X4, Y4 = X.reshape((1, 1, 6, 8)), Y.reshape((1, 1, 6, 7))
    losses = []
    for i in range(steps):
        Y_hat = conv2d(X4)
        l = (Y_hat - Y4) ** 2
        conv2d.zero_grad()
        l.sum().backward()
        with torch.no_grad():  # the book writes `conv2d.weight.data[:] -= ...`; same update, without .data
            conv2d.weight -= lr * conv2d.weight.grad
        losses.append(l.sum().item())
        if (i + 1) % 2 == 0:
            print(f"epoch {i + 1}, loss {losses[-1]:.3f}")
    kernel = conv2d.weight.detach().reshape((1, 2))
    print(f"learned kernel: {kernel} (the edge detector is [[1, -1]])")

    if path is not None:
        save_figure(kernel_figure(X, Y, kernel), path, overwrite=force)
        print(f"saved {path}")
    return {"losses": losses, "kernel": kernel.tolist(), "transpose_is_zero": transpose_is_zero,
            "figure": str(path) if path is not None else None}
