"""Layer summaries: the book's ``layer_summary`` (d2l 7.6) with parameters and MACs, and the model table.

MACs are counted with torch's own FLOP formulas (:data:`torch.utils.flop_counter.flop_registry`, multiply-accumulates
= FLOPs / 2) by :class:`MacCounter`, so they cover exactly the convolutions and matrix products torch runs; pooling,
batch norm and activations count zero.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils.flop_counter import flop_registry

from cnnlab.errors import CnnlabError
from cnnlab.models.registry import check_input_size, create_model, list_models, model_info
from cnnlab.table import text_table


@dataclass(frozen=True)
class SummaryRow:
    """One row of a layer summary.

    Attributes:
        name: the module's qualified name in the model (its state_dict prefix), e.g. ``"b2"`` or ``"features.0"``.
        type: the module's class name, which is what the book prints.
        output_shape: the row's output shape, batch dimension included.
        params: parameters of the module.
        macs: multiply-accumulates of the module's forward pass at this input.
    """

    name: str
    type: str
    output_shape: tuple[int, ...]
    params: int
    macs: int


class MacCounter(TorchDispatchMode):
    """Counts the multiply-accumulates of the operations run inside it, in this thread alone (``macs``).

    Torch's ``FlopCounterMode`` counts the same operations with the same formulas, but also follows which module runs
    through global module hooks (``register_module_forward_pre_hook``), which every thread's forward passes go
    through: the explorer's Grad-CAM in another request then had autograd hooks put on its tensors, and its backward
    pass failed ("A leaf node was passed to _will_engine_execute_node"). A dispatch mode is seen by its own thread
    only. An operation without a formula is counted through its decomposition where it has one, as torch does.
    """

    def __init__(self):
        super().__init__()
        self.flops = 0

    @property
    def macs(self) -> int:
        return self.flops // 2

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        formula = flop_registry.get(func.overloadpacket)
        if formula is None:
            with self:
                out = func.decompose(*args, **kwargs)
            if out is not NotImplemented:
                return out
        out = func(*args, **kwargs)
        if formula is not None:
            self.flops += formula(*args, **kwargs, out_val=out)
        return out


def stages(model: nn.Module) -> list[nn.Module]:
    """The modules the book's ``self.net`` iterates over, in order.

    A model whose top-level children are not those rows (LeNet and AlexNet split the book's flat Sequential into
    ``features`` and ``classifier``) says so with a ``stages()`` method; otherwise the rows are its children.
    Applied one after another, the stages compute the model's forward pass.
    """
    return list(model.stages()) if hasattr(model, "stages") else list(model.children())


def layer_summary(model: nn.Module, input_shape: Sequence[int]) -> list[SummaryRow]:
    """Push a random batch of ``input_shape`` through the model's stages, recording each output (d2l 7.6.1).

    Runs in eval mode without gradients (and restores the mode): the book's train-mode pass would fail on batch norm
    with one value per channel, and the shapes and MACs are the same. Runs on the model's device, so a model built
    under ``torch.device("meta")`` is summarised without computing anything.

    Example:
        >>> [row.output_shape for row in layer_summary(create_model("resnet18"), (1, 1, 96, 96))][:2]
        [(1, 64, 24, 24), (1, 64, 24, 24)]
    """
    param = next(model.parameters(), None)
    x = torch.randn(*input_shape, device=param.device if param is not None else "cpu")
    names = {id(module): name for name, module in model.named_modules()}
    rows = []
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            for module in stages(model):
                with MacCounter() as counter:
                    x = module(x)
                params = sum(p.numel() for p in module.parameters())
                rows.append(SummaryRow(names[id(module)], type(module).__name__, tuple(x.shape), params,
                                       counter.macs))
    finally:
        model.train(was_training)
    return rows


def shape_text(shape: Sequence[object]) -> str:
    """``1 x 6 x 28 x 28``: a shape as the layer tables print it (a dimension a graph leaves free by its name)."""
    return " x ".join(map(str, shape))


def layer_text(body: Sequence[Sequence[str]]) -> str:
    """The printed layer table of ``cnnlab summary``, for cnnlab's models and any other: one row of name, type,
    output shape, params and MACs each."""
    return text_table(["name", "type", "output shape", "params", "MACs"], body, "llrrr", rule="full")


def macs_text(macs: int) -> str:
    """``416,520 MACs (0.000 GMACs)``, as a layer table's total says them."""
    return f"{macs:,} MACs ({macs / 1e9:.3f} GMACs)"


def summarize(name: str, input_size: int | None = None, in_channels: int = 1, ops: str = "torch",
              batch: int = 1) -> str:
    """A printable layer table of a registered model: name, type, output shape, params, MACs.

    Args:
        name: a registered model name.
        input_size: side of the square input; the model's default (the book's) if None.
        in_channels: channels of the input image.
        ops: ``"torch"`` or ``"scratch"`` layers.
        batch: images in the batch; the shapes and the MACs column are the batch's, the total is also per image.

    Raises:
        CnnlabError: unknown model, or an input the model cannot take (the message names the accepted size).

    The model is built on the meta device, so even VGG-11 at 224 is summarised in milliseconds.
    """
    info = model_info(name)
    size = info.input_size if input_size is None else input_size
    if not (isinstance(size, int) and size >= 1):
        raise CnnlabError(f"input_size must be a positive integer, got {size!r}")
    if not (isinstance(batch, int) and batch >= 1):
        raise CnnlabError(f"batch must be a positive integer, got {batch!r}")
    check_input_size(name, size, in_channels)
    with torch.device("meta"):
        model = create_model(name, in_channels=in_channels, ops=ops)
    shape = (batch, in_channels, size, size)
    rows = layer_summary(model, shape)
    total_params = sum(p.numel() for p in model.parameters())
    total_macs = sum(r.macs for r in rows)
    body = [[r.name, r.type, shape_text(r.output_shape), f"{r.params:,}", f"{r.macs:,}"] for r in rows]
    title = f"{name} (d2l {info.section}) at input {shape_text(shape)}, ops={ops}"
    table = layer_text(body)
    per_image = total_macs // batch
    totals = f"total: {total_params:,} parameters, {macs_text(per_image)} per image"
    if batch > 1:
        totals += f", {total_macs:,} for the batch of {batch}"
    return f"{title}\n{table}\n{totals}"


def count_params(name: str, in_channels: int = 1, num_classes: int = 10) -> int:
    """Parameters of a registered model, counted on the meta device (nothing is allocated)."""
    with torch.device("meta"):
        model = create_model(name, num_classes=num_classes, in_channels=in_channels)
    return sum(p.numel() for p in model.parameters())


def model_macs(name: str, input_size: int, in_channels: int = 1, num_classes: int = 10) -> int | None:
    """Multiply-accumulates of one image's forward pass (counted on the meta device); None for a model this cnnlab
    does not register or cannot run at that size (another version's run)."""
    try:
        with torch.device("meta"):
            model = create_model(name, num_classes=num_classes, in_channels=in_channels)
        return sum(row.macs for row in layer_summary(model, (1, in_channels, input_size, input_size)))
    except (CnnlabError, RuntimeError, TypeError):
        return None


def models_table() -> str:
    """The registered models with their parameters, default input size, book learning rate and d2l section."""
    body = []
    for name in list_models():
        info = model_info(name)
        body.append([name, f"{count_params(name):,}", f"{info.input_size}x{info.input_size}", f"{info.lr:g}",
                     info.section])
    return text_table(["model", "params", "input", "book lr", "d2l section"], body, "lrrrl", rule="full")
