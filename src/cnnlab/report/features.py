"""What a trained network computes inside: stage outputs, first-layer filters and receptive fields.

A *row* is one of the model's stages (:func:`cnnlab.models.summary.stages`, the rows of the book's ``self.net``)
with the shape-preserving stages that carry no convolution or dense weights (activations, batch norm, dropout)
folded into the row before them, so LeNet's ``Conv2d``, ``Sigmoid`` become one row ``Conv2d+Sigmoid`` and the
feature maps shown are the activated ones.

Receptive fields come from the layer geometry alone (d2l 7.3 and 7.5, "receptive field"; Araujo et al. 2019,
"Computing receptive fields of convolutional neural networks", Distill). Walking the operations in forward order
with ``r = 1`` (pixels of the model input one output unit sees) and ``jump = 1`` (input pixels between two
neighbouring units), every convolution or pooling of kernel ``k``, stride ``s`` and dilation ``d`` does
``r += (k - 1) * d * jump; jump *= s``. Padding does not change ``r`` (it only shifts the window). Rules beyond a
chain:

* branches that meet again (Inception's concatenation, a residual addition, DenseNet's concatenation, a
  squeeze-excitation gate multiplying its map) take the largest receptive field among their inputs: the union of
  the branches' windows is the widest one; the jump is that of the input laid out as the output is;
* a permutation (ConvNeXt's channels-last layer norm and linear layers), and a view that turns positions into rows
  for a linear layer, keep the units and their fields;
* adaptive pooling to ``o`` cells over ``H`` acts as kernel ``ceil(H / o)`` and stride ``floor(H / o)``; a mean
  over the spatial axes, and flattening a map for a dense layer, act as a kernel the size of the whole map.

The walk runs on the meta device (shapes only, no arithmetic) under a ``TorchDispatchMode`` that sees every aten
operation, so it follows the real forward pass (including ``F.relu`` calls and ``torch.cat`` inside blocks) rather
than guessing the order from the module tree. It is done on the ``ops="torch"`` twin of the model: cnnlab's own
scratch layers compute the same geometry through unfold and matmul, which this walk does not read.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves

from cnnlab.models import create_model
from cnnlab.models.summary import stages

aten = torch.ops.aten


@dataclass
class Row:
    """One row of the model's forward pass.

    Attributes:
        name: qualified module name(s), e.g. ``"features.0-1"`` for two folded stages.
        kind: the class names, joined by ``+``.
        output: the row's output for the batch it was run on (or what a caller keeps of it, :func:`run_rows`).
    """

    name: str
    kind: str
    output: torch.Tensor


def _foldable(stage: nn.Module, before: torch.Tensor, after: torch.Tensor) -> bool:
    """Shape-preserving and free of conv/dense weights (which are the only parameters of dimension >= 2)."""
    return before.shape == after.shape and not any(p.dim() >= 2 for p in stage.parameters())


def run_rows(model: nn.Module, x: torch.Tensor, grad: bool = False,
             keep: Callable[[torch.Tensor], Any] | None = None) -> list[Row]:
    """Apply the model's stages to ``x`` one after another (eval mode), returning each row's output.

    The last row's output is the model's output. Outputs are the tensors the model produced; clone them if a
    later in-place operation could change them (models here do not modify a stage's output in place).
    ``grad=True`` records the autograd graph (the tests measure receptive fields with it). ``keep``: what each row
    but the last holds of its output, taken when the next row starts (the output itself where None), so that the
    outputs are not all held at once.
    """
    names = {id(m): name for name, m in model.named_modules()}
    rows: list[Row] = []
    was_training = model.training
    model.eval()
    try:
        with torch.set_grad_enabled(grad):
            for i, stage in enumerate(stages(model)):
                y = stage(x)
                name, kind = names.get(id(stage), str(i)), type(stage).__name__
                if rows and _foldable(stage, x, y):  # (rows[-1] read in place: no name left holding its output)
                    first = rows[-1].name.split("-")[0]
                    prefix, _, last = name.rpartition(".")
                    # "features.0" + "features.1" -> "features.0-1"; different parents keep both names.
                    joined = f"{first}-{last}" if first.rpartition(".")[0] == prefix else f"{first}-{name}"
                    rows[-1] = Row(joined, f"{rows[-1].kind}+{kind}", y)
                else:
                    if rows and keep is not None:
                        rows[-1] = Row(rows[-1].name, rows[-1].kind, keep(rows[-1].output))
                    rows.append(Row(name, kind, y))
                x = y
    finally:
        model.train(was_training)
    return rows


def first_conv(model: nn.Module) -> nn.Module | None:
    """The first module with a 4-d ``weight`` (out x in x kh x kw) in registration order: the first conv layer."""
    for module in model.modules():
        weight = getattr(module, "weight", None)
        if isinstance(weight, torch.Tensor) and weight.dim() == 4:
            return module
    return None


class _ReceptiveFieldMode(TorchDispatchMode):
    """Tags every tensor the forward pass creates with ``(r, jump)`` by the rules in the module docstring."""

    def __init__(self):
        super().__init__()
        self.fields: dict[int, tuple[int, int]] = {}
        self._alive: list[torch.Tensor] = []  # keeps tagged tensors alive so their ids are not reused

    def tag(self, t: torch.Tensor, field: tuple[int, int]) -> None:
        self.fields[id(t)] = field
        self._alive.append(t)

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        tagged = [t for t in tree_leaves((args, kwargs)) if isinstance(t, torch.Tensor) and id(t) in self.fields]
        if not tagged:  # weights, constants
            return out
        outputs = [t for t in tree_leaves(out) if isinstance(t, torch.Tensor)]
        # Branches meeting: the widest field; the jump of the map the output is laid on (a squeeze-excitation gate
        # of one cell per channel, broadcast over the map, brings its whole-map field but not its jump).
        same = [t for t in tagged if outputs and t.shape == outputs[0].shape]
        source = max(same or tagged, key=lambda t: self.fields[id(t)])
        r, jump = max(self.fields[id(t)][0] for t in tagged), self.fields[id(source)][1]
        spatial = source.shape[-2:] if source.dim() == 4 else None
        packet = func.overloadpacket
        if packet is aten.permute or (packet in _VIEWS and outputs and outputs[0].shape[0] != source.shape[0]):
            pass  # the same units in another layout: channels last (ConvNeXt), or one row per position for a Linear
        elif packet is aten.convolution:
            kernel, stride, dilation = args[1].shape[2:], args[3], args[5]
            r, jump = _apply(r, jump, kernel, stride, dilation)
        elif packet in (aten.max_pool2d_with_indices, aten.max_pool2d, aten.avg_pool2d):
            kernel = _pair(args[1])
            stride = _pair(args[2]) if len(args) > 2 and args[2] else kernel  # an empty stride means the kernel
            dilation = _pair(args[4]) if packet is not aten.avg_pool2d and len(args) > 4 else (1, 1)
            r, jump = _apply(r, jump, kernel, stride, dilation)
        elif packet in (aten._adaptive_avg_pool2d, aten.adaptive_max_pool2d) and spatial is not None:
            cells = _pair(args[1])
            kernel = [math.ceil(h / o) for h, o in zip(spatial, cells, strict=True)]
            stride = [max(h // o, 1) for h, o in zip(spatial, cells, strict=True)]
            r, jump = _apply(r, jump, kernel, stride, (1, 1))
        elif spatial is not None and outputs and not (outputs[0].dim() == 4 and outputs[0].shape[-2:] == spatial):
            # A mean over H and W, or a flatten for a dense layer: every output sees the whole map.
            r, jump = _apply(r, jump, spatial, spatial, (1, 1))
        for t in outputs:
            self.tag(t, (r, jump))
        return out


_VIEWS = (aten.view, aten.reshape, aten._unsafe_view)


def _pair(v) -> tuple[int, int]:
    v = list(v) if isinstance(v, (list, tuple)) else [v]
    return (int(v[0]), int(v[-1]))


def _apply(r: int, jump: int, kernel, stride, dilation) -> tuple[int, int]:
    """One layer of the walk, per axis; the larger axis is kept (the models here are square)."""
    k, s, d = _pair(kernel), _pair(stride), _pair(dilation)
    return r + max((k[i] - 1) * d[i] for i in range(2)) * jump, jump * max(s)


@dataclass
class FieldRow:
    """Receptive field at the output of one row.

    Attributes:
        name: the row's module name(s).
        kind: the row's class names.
        shape: output shape without the batch dimension.
        r: receptive field side in pixels of the model input (may exceed the input: then it sees all of it).
        jump: distance in input pixels between neighbouring output units (the row's total stride).
    """

    name: str
    kind: str
    shape: tuple[int, ...]
    r: int
    jump: int


def receptive_fields(name: str, input_size: int, in_channels: int = 1, **cfg) -> list[FieldRow]:
    """Receptive field of every row of a registered model at ``input_size`` (rules in the module docstring).

    Example:
        >>> [(f.name, f.r, f.jump) for f in receptive_fields("lenet", 28)][:4]
        [('features.0-1', 5, 1), ('features.2', 6, 2), ('features.3-4', 14, 2), ('features.5', 16, 4)]
    """
    with torch.device("meta"):
        model = create_model(name, in_channels=in_channels, ops="torch", **cfg)
    return receptive_fields_of(model, (1, in_channels, input_size, input_size))


def receptive_fields_of(model: nn.Module, input_shape: tuple[int, ...]) -> list[FieldRow]:
    """Receptive fields of ``model``'s rows, run on its own device (use the meta device: nothing is computed)."""
    param = next(model.parameters(), None)
    x = torch.zeros(input_shape, device=param.device if param is not None else "meta")
    with _ReceptiveFieldMode() as mode:
        mode.tag(x, (1, 1))
        rows = run_rows(model, x)
        return [FieldRow(row.name, row.kind, tuple(row.output.shape[1:]), *mode.fields[id(row.output)])
                for row in rows]
