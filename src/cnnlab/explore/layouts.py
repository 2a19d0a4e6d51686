"""Which of a network's values are channels-last, so that every 4-d stage is shown and explained as C x h x w.

Convolutions and poolings work on N x C x H x W, but some networks move the channels to the end between them:
ConvNeXt's blocks permute to N x H x W x C for their LayerNorm and MLP and back, Swin works channels-last
throughout, and a Keras graph converted to ONNX transposes around each Conv. Read as N x C x H x W, such a value
is W x C "maps" of H channels, and Grad-CAM on it is a map of the wrong axes. The layout of each value follows from
what made it: NCHW after a convolution, pooling or batch norm (of a value of 3 axes or more: a batch norm of
tokens flattened to 2-d keeps their layout); after a permute or transpose, wherever it moved the channel axis (to the
end: channels-last; to axis 1: NCHW; of a value of any rank, so a Swin patch merge's 6-d rearrangement keeps the
channels last); after an op that changes only the last axis of a channels-last value (an MLP's Linear, a split or
concatenation of channels), channels-last; after one that rearranges the other axes too, channels-last where the last
axis holds a whole number of the channels it had (tokens N x L x C, a merge of 2 x 2 patches into 4C); else its
first input's. The three kinds of model walk their own graphs with :func:`after` (a module's forward pass under
:class:`Layouts`, a ``torch.export`` program's FX nodes, an ONNX graph's nodes), and :func:`as_nchw` turns a
channels-last stage around.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any
from weakref import ref

import torch
from torch.overrides import TorchFunctionMode

NCHW, NHWC = "NCHW", "NHWC"
# Operators that take and give N x C x H x W: torch's functions and ATen operators, and ONNX's node types.
SPATIAL_OPS = frozenset({
    "conv2d", "convolution", "_convolution", "conv_transpose2d", "max_pool2d", "max_pool2d_with_indices",
    "avg_pool2d", "adaptive_avg_pool2d", "_adaptive_avg_pool2d", "adaptive_max_pool2d", "batch_norm",
    "_native_batch_norm_legit_no_training", "_native_batch_norm_legit", "native_batch_norm", "instance_norm",
    "group_norm",
    "Conv", "ConvTranspose", "QLinearConv", "MaxPool", "AveragePool", "GlobalAveragePool", "GlobalMaxPool",
    "BatchNormalization", "InstanceNormalization",
})
PERMUTES = frozenset({"permute", "Transpose"})  # every axis placed anew (ONNX's Transpose without perm reverses)
SWAPS = frozenset({"transpose", "swapaxes", "swapdims"})  # two axes swapped
TO_END, TO_FRONT = (0, 2, 3, 1), (0, 3, 1, 2)


def permutation(op: str, dims: Sequence[int] | None, rank: int | None) -> tuple[int, ...] | None:
    """Where a permute (``dims``: its order) or a swap (``dims``: the two axes) of a value of ``rank`` axes puts
    each axis, as a permute's order; None when it cannot be told."""
    if not rank:  # not known (an ONNX value shape inference gave no shape), or a 0-d value, which has no axes
        return tuple(dims) if op in PERMUTES and dims is not None else None
    if op in PERMUTES:
        order = tuple(range(rank))[::-1] if dims is None else tuple(int(d) % rank for d in dims)
        return order if sorted(order) == list(range(rank)) else None
    if op in SWAPS and dims is not None and len(dims) == 2:
        order = list(range(rank))
        a, b = (int(d) % rank for d in dims)
        order[a], order[b] = order[b], order[a]
        return tuple(order)
    return None


def after(op: str, source: str | None, perm: Sequence[int] | None = None,
          shapes: tuple[Sequence[int], Sequence[int]] | None = None) -> str | None:
    """The layout of what ``op`` makes from a value of layout ``source`` (None: not known); ``perm``: a permute's
    or swap's order (:func:`permutation`); ``shapes``: the value's shape and the result's, where known."""
    if op in SPATIAL_OPS:
        # of fewer than 3 axes (a BatchNorm1d over tokens flattened to (N * L) x C, as LeViT's after each of its
        # linear layers) no map: its channels are its last axis as much as its second, and it keeps its input's
        # layout, lest the tokens reshaped from it be read as channels-first maps
        return source if shapes is not None and len(shapes[1]) < 3 else NCHW
    if op in PERMUTES or op in SWAPS:
        if source is None or perm is None:
            return None
        channels = 1 if source == NCHW else len(perm) - 1
        moved = list(perm).index(channels)
        return NCHW if moved == 1 and len(perm) > 2 else NHWC if moved == len(perm) - 1 else None
    if source == NHWC and shapes is not None:
        before, now = (tuple(shape) for shape in shapes)
        # Only the channels changed (an MLP's Linear, a split or concatenation of channels): still channels-last.
        # The rest rearranged too: channels-last where the last axis holds whole channels (a patch merge's 4C).
        if before[:-1] != now[:-1] and before and now and isinstance(before[-1], int) and isinstance(now[-1], int):
            return NHWC if before[-1] and now[-1] % before[-1] == 0 else None
    return source


def tensors_in(args: Sequence[Any]) -> list[torch.Tensor]:
    """The tensors among a torch function's arguments, inside a list or tuple too (``torch.cat([x, y], -1)``), in
    order."""
    return [b for a in args for b in (a if isinstance(a, (list, tuple)) else (a,)) if isinstance(b, torch.Tensor)]


def first_tensor(args: Sequence[Any]) -> torch.Tensor | None:
    """The first tensor among a torch function's arguments (:func:`tensors_in`)."""
    return next(iter(tensors_in(args)), None)


def passed_on(shown: torch.Tensor, value: torch.Tensor) -> torch.Tensor:
    """What the rest of the network reads in place of a stage's ``value`` recorded as ``shown``: a copy, so that an
    in-place op after the stage (a residual's ``+=``) cannot change the row recorded, made from ``shown`` (turned
    back) where :func:`as_nchw` turned it round, so that Grad-CAM's gradients reach the row."""
    return shown.permute(*TO_END).clone() if shown is not value else value.clone()


def as_nchw(value: Any, layout: str | None) -> Any:
    """A 4-d channels-last ``value`` as N x C x H x W (a view: gradients flow through it); anything else as it is."""
    if layout == NHWC and isinstance(value, torch.Tensor) and value.dim() == 4:
        return value.permute(*TO_FRONT)
    return value


class Layouts(TorchFunctionMode):
    """A module's forward pass under this mode tags each tensor made with its layout (:func:`after`), starting from
    the input ``x``'s ``layout``; :meth:`of` reads a tag. Tensors are held weakly: a tag is read only for the
    very tensor it was written for."""

    def __init__(self, x: torch.Tensor, layout: str):
        super().__init__()
        self.tags: dict[int, tuple[str | None, ref]] = {id(x): (layout, ref(x))}

    def of(self, value: Any) -> str | None:
        tag, alive = self.tags.get(id(value), (None, None))
        return tag if alive is not None and alive() is value else None

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        if isinstance(out, torch.Tensor):
            name = getattr(func, "__name__", "")
            # the first input of a known layout: a ConvNeXt block's layer scale, a parameter, comes before its map
            source = next((t for t in tensors_in(args) if self.of(t) is not None), None) if name not in PERMUTES \
                and name not in SWAPS else None
            source = source if source is not None else first_tensor(args)
            perm = None
            if name in PERMUTES or name in SWAPS:  # x.permute(0, 2, 3, 1), torch.permute(x, (0, 2, 3, 1)),
                rest = list(args[1:])  # x.transpose(1, 2), or their dims as keywords
                dims = kwargs.get("dims") or (rest[0] if len(rest) == 1 and isinstance(rest[0], Sequence) else
                                              rest or [kwargs.get(k) for k in ("dim0", "dim1") if k in kwargs])
                perm = permutation(name, dims, source.dim() if source is not None else None)
            shapes = (source.shape, out.shape) if source is not None else None
            tag = after(name, self.of(source), perm, shapes)
            if source is not out or tag != self.of(out):  # an in-place op keeps its tensor, and the layout
                self.tags[id(out)] = (tag, ref(out))
        return out
