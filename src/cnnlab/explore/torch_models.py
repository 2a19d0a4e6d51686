"""Any PyTorch image classifier in the explorer: a ``torch.export`` program (``.pt2``) or ``module:function``.

* ``.pt2``: read by ``torch.export.load`` once :mod:`cnnlab.pt2_check` has refused what would make it run
  code from the file (pickles, native code, shape expressions and guards that are not plain). Its feature maps
  are the outputs of the graph's convolution, pooling, normalisation and activation nodes, recorded by an FX
  interpreter that runs the program node by node (an exported program has no submodules to hook: every layer is
  an ATen call in one graph). Cnnlab's own ``.pt2`` exports carry their class names in ``cnnlab.json``. A
  program returning a library's output object (Hugging Face's ``ImageClassifierOutput``) is read as the dict of
  its fields (:func:`_library_outputs_as_dicts`): torch rebuilds that type only where its library is imported.
* ``module:function``: ``importlib`` imports the module the user named and calls the function with no arguments;
  it must return an ``nn.Module``. This is the one path that runs the user's code, because the user asked for it,
  and the page says so. Its feature maps come from forward hooks on the leaf modules of those kinds (in-place
  activations are switched off first, so a ReLU does not overwrite the batch norm output recorded before it).

Both record the stages inside one differentiable forward pass, so Grad-CAM and saliency come from one backward
pass through it, as for cnnlab runs (:func:`cnnlab.explore.gradcam.explain_with`). The input is NCHW unless
``--layout`` says otherwise; the side is the program's static one, else ``--input-size``; channels from the input
or the first convolution.
"""

from __future__ import annotations

import functools
import importlib
import io
import json
import logging
import os
import sys
import threading
import zipfile
from collections import Counter, deque
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any
from weakref import ref

import torch
from torch import nn
from torch._C._export import pt2_archive_constants as pt2
from torch.nn.parameter import is_lazy
from torch.overrides import TorchFunctionMode

from cnnlab.errors import CnnlabError, listed, summary
from cnnlab.explore.gradcam import explain_with, is_spatial
from cnnlab.explore.layouts import (
    NCHW,
    SWAPS,
    Layouts,
    after,
    as_nchw,
    first_tensor,
    passed_on,
    permutation,
    tensors_in,
)
from cnnlab.explore.model import (
    InputSpec,
    Options,
    Scoring,
    first_output,
    gradient_pngs,
    logits_count,
    on_a_map,
    outputs_note,
    per_image,
    per_image_shape,
    read_outputs,
    square_as_exported,
    stored_classes,
    token_notes,
)
from cnnlab.export import STORED_SIDE_KEY
from cnnlab.models import create_model
from cnnlab.models.imagenet import (
    BACKBONES,
    INPUT_SIZE,
    backbone_for,
    pretrained_normalize,
    weights_enum,
    weights_file,
)
from cnnlab.models.state_dict import SAVED, load_state_dict_into, loaded_note, read_weights, safetensors_metadata
from cnnlab.pt2_check import checked_pt2
from cnnlab.report.features import Row

aten = torch.ops.aten
STAGE_PACKETS = frozenset({
    aten.conv2d, aten.convolution, aten._convolution, aten.conv_transpose2d,
    aten.max_pool2d, aten.max_pool2d_with_indices, aten.avg_pool2d, aten.adaptive_avg_pool2d,
    aten._adaptive_avg_pool2d, aten.adaptive_max_pool2d,
    aten.batch_norm, aten._native_batch_norm_legit_no_training, aten._native_batch_norm_legit,
    aten.native_batch_norm, aten.group_norm, aten.layer_norm, aten.instance_norm,
    aten.relu, aten.relu_, aten.relu6, aten.hardtanh, aten.hardtanh_, aten.sigmoid, aten.sigmoid_, aten.tanh,
    aten.hardswish, aten.hardswish_, aten.hardsigmoid, aten.hardsigmoid_, aten.silu, aten.silu_, aten.gelu,
    aten.leaky_relu, aten.leaky_relu_, aten.elu, aten.mish,
})
# A program whose output is one of these gives probabilities (Scoring reads them back as logits); reshapes, copies,
# casts to another float type and an evaluation's dropout after it change nothing.
FINAL_OPS = {aten.softmax: "Softmax", aten._softmax: "Softmax", aten.sigmoid: "Sigmoid"}
PASS_THROUGH = frozenset({aten.flatten, aten.view, aten.reshape, aten.squeeze, aten.unsqueeze, aten.clone,
                          aten.contiguous, aten.alias, aten.detach, aten.to, aten._to_copy, aten.dropout})
# The operators of a training pass: dropout (a random mask at each call) and batch norm by the batch's own statistics
# (each image's answer depends on the others run with it), where their "train" or "training" argument is not False;
# batch norm "with update" always is. torch.export keeps the mode the module was in (a torchvision model is built in
# training mode), where torch.onnx.export exports in evaluation mode whatever it is.
DROPOUTS = frozenset({aten.dropout, aten.native_dropout, aten.feature_dropout, aten.alpha_dropout,
                      aten.feature_alpha_dropout})
BATCH_NORMS = frozenset({aten.batch_norm, aten._native_batch_norm_legit, aten._native_batch_norm_legit_functional,
                         aten.native_batch_norm, aten.cudnn_batch_norm})
UPDATING_BATCH_NORMS = frozenset({aten._batch_norm_with_update, aten._batch_norm_with_update_functional})
# The same, by the name of the torch function a module's forward calls (F.softmax, torch.sigmoid, x.softmax(1), the
# functions nn.Softmax and nn.Sigmoid call, ...).
FINAL_FUNCTIONS = {"softmax": "Softmax", "sigmoid": "Sigmoid", "expit": "Sigmoid"}
PASS_THROUGH_FUNCTIONS = frozenset({"view", "reshape", "flatten", "squeeze", "unsqueeze", "to", "float", "half",
                                    "double", "bfloat16", "type", "contiguous", "clone", "detach", "dropout"})
STAGE_MODULES = (nn.modules.conv._ConvNd, nn.modules.pooling._MaxPoolNd, nn.modules.pooling._AvgPoolNd,
                 nn.modules.pooling._AdaptiveAvgPoolNd, nn.modules.pooling._AdaptiveMaxPoolNd,
                 nn.modules.batchnorm._NormBase, nn.GroupNorm, nn.LayerNorm, nn.LocalResponseNorm,
                 nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.PReLU, nn.ELU, nn.SELU, nn.CELU, nn.GELU, nn.SiLU, nn.Mish,
                 nn.Sigmoid, nn.Tanh, nn.Hardswish, nn.Hardsigmoid, nn.Hardtanh, nn.Softplus)


class _Producers(TorchFunctionMode):
    """Records, during a forward pass, which torch function made each tensor and from which input, so that
    :meth:`final_op` can tell what the output last went through, whether in a module or in ``forward``'s own code."""

    def __init__(self):
        super().__init__()
        self.made: dict[int, tuple[str, torch.Tensor | None, torch.Tensor]] = {}  # id -> (name, source, the tensor)

    def __torch_function__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        if isinstance(out, torch.Tensor):
            name = getattr(func, "__name__", "")
            source = first_tensor(args)
            if source is not out:  # (an evaluation's dropout returns its input itself)
                self.made[id(out)] = (name, source, out)  # the tensor kept: its id stays its own
            elif name.endswith("_") and name[:-1] in FINAL_FUNCTIONS:  # x.sigmoid_(): now probabilities
                self.made[id(out)] = (name[:-1], None, out)
        return out

    def final_op(self, out: Any) -> str | None:
        """``"Softmax"`` or ``"Sigmoid"`` where ``out`` came from one, perhaps reshaped, cast or copied after it."""
        while isinstance(out, torch.Tensor) and id(out) in self.made:
            name, source, _ = self.made[id(out)]
            if name in FINAL_FUNCTIONS:
                return FINAL_FUNCTIONS[name]
            if name not in PASS_THROUGH_FUNCTIONS:
                return None
            out = source
        return None


TAIL = 8  # the spatial values a stage pass keeps for Grad-CAM, the last ones made (explain_with takes the last read)


class _Watch(TorchFunctionMode):
    """During a module's forward pass (inside :class:`Layouts`, which tags each tensor's layout first): which values
    are the network's own, made from its parameters and buffers alone and not from the image (a learnt gate, a
    ``sigmoid`` of a ``1 x C x 1 x 1`` parameter: no stage, whatever its shape), and the last :data:`TAIL` spatial
    values made, each named by the module whose forward made it (``where``, the module stack the hooks keep), for
    Grad-CAM (:func:`cnnlab.explore.gradcam.explain_with`).

    A value made by a function of no tensor (``torch.zeros``, ``torch.arange``) is not counted the network's own:
    the image may be written into it later, and only what is known to come from the weights alone is left out."""

    def __init__(self, model: nn.Module, layouts: Layouts | None, batch: int, where: list[str]):
        super().__init__()
        self.own: dict[int, ref] = {id(t): ref(t) for t in (*model.parameters(), *model.buffers())}
        self.layouts, self.batch, self.where = layouts, batch, where
        self.tail: deque[tuple[str, str, torch.Tensor]] = deque(maxlen=TAIL)  # (module, function, value)
        self.quiet = False  # (passing_on)

    def is_own(self, value: Any) -> bool:
        alive = self.own.get(id(value))
        return alive is not None and alive() is value

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        inputs = tensors_in((*args, *kwargs.values()))
        own = bool(inputs) and all(self.is_own(t) for t in inputs)
        outs = tensors_in((out,))
        if out is None and args and isinstance(args[0], torch.Tensor):  # x[i] = v, in place: x is written
            outs = [args[0]]
        name = getattr(func, "__name__", "")
        for value in outs:
            if own:
                self.own[id(value)] = ref(value)
            else:
                self.own.pop(id(value), None)  # made, or written in place, from the image's values
                if not self.quiet:
                    self._spatial(value, name)
        return out

    @contextmanager
    def passing_on(self):
        """While a stage's hook makes the copy the rest of the network reads in place of its value: the copy is not
        added to the tail, which holds the value already (one map, not two, and the tail's places go to other
        maps). Changed in place later (a residual's ``+=``), the copy is made anew there and is added then."""
        self.quiet = True
        try:
            yield
        finally:
            self.quiet = False

    def _spatial(self, value: torch.Tensor, function: str) -> None:
        # only C x h x w maps: not a channels-last value, nor one of no known layout (a transformer's attention
        # weights, heads x tokens x tokens)
        if not is_spatial(value) or not per_image(value, self.batch) or self.layouts is None or \
                self.layouts.of(value) != NCHW:
            return
        for k, (_, _, seen) in enumerate(self.tail):  # changed in place (a residual's +=): made anew, here
            if seen is value:
                del self.tail[k]
                break
        self.tail.append((self.where[-1] if self.where else "", function.strip("_"), value))


def _pop(where: list[str]) -> None:
    """Leave the module that ran last (a forward hook: returns None, so the module's output stays its own)."""
    if where:
        where.pop()


@dataclass
class _Pass:
    """What a hooked forward pass saw: each hooked module's output in the order they ran (leaf modules; with
    ``containers``, also the modules around them, flagged), the model's output, and, under the function modes, the
    last spatial values (:class:`_Watch`) with, for each stage recorded, the copy the rest of the network read."""

    seen: list[tuple[str, nn.Module, Any]]
    out: Any
    watch: _Watch | None = None
    # id(copy) -> (copy, the row's value, the copy's version then)
    copies: dict[int, tuple[torch.Tensor, torch.Tensor, int]] = field(default_factory=dict)
    containers: set[int] = field(default_factory=set)  # ids of the modules in seen that are not leaves


def _packet(node) -> Any:
    """The ATen operator (overload packet) an FX node calls, else None."""
    return getattr(node.target, "overloadpacket", None) if isinstance(node, torch.fx.Node) and \
        node.op == "call_function" else None


def _origin(node: torch.fx.Node) -> tuple[str, int, str] | None:
    """The operation of the traced program that an FX node was made for, where torch recorded it (its ``from_node``
    provenance, followed to the first graph): that node's name and graph, and its operator's name (``silu``).
    ``run_decompositions()`` writes one operation as several nodes (SiLU as ``sigmoid``, then ``mul``), all of one
    origin; None where nothing was recorded."""
    sources = node.meta.get("from_node")
    source = sources[0] if sources else None
    while source is not None and getattr(source, "from_node", None):
        source = source.from_node[0]
    if source is None:
        return None
    target = str(getattr(source, "target", "")).split(".")
    return source.name, source.graph_id, target[1] if len(target) > 2 and target[0] == "aten" else ""


def _rows_at(graph: torch.fx.Graph) -> dict[torch.fx.Node, tuple[torch.fx.Node, str]]:
    """Where each stage's row is recorded: the node whose value it shows, mapped to the stage node (which names the
    row) and the row's kind. That is the stage node itself, or, where it is one of several nodes an operation was
    written as (the ``sigmoid`` of a SiLU), the operation's output (the ``mul``: x * sigmoid(x)), under the
    operation's name. A stage whose operation another stage node already shows gets no row of its own."""
    rows_at: dict[torch.fx.Node, tuple[torch.fx.Node, str]] = {}
    for node in graph.nodes:
        if _packet(node) not in STAGE_PACKETS:
            continue
        origin, last = _origin(node), node
        # along the operation's own nodes, as long as each value goes on to one node of it alone
        while origin is not None and len(last.users) == 1:
            [after] = last.users
            if after.op != "call_function" or _origin(after) != origin:
                break
            last = after
        if last not in rows_at:  # (an in-place silu_ is shown as silu, as an in-place relu_ is as relu)
            rows_at[last] = (node, (last is node or not origin[2]) and _packet(node).__name__.rstrip("_") or
                             origin[2].rstrip("_"))
    return rows_at


def _where(node: torch.fx.Node) -> str:
    """The module an FX node ran in (its path), or the node's own name (``relu_1``) for an op that the root
    module's forward calls itself, whose path is empty."""
    stack = node.meta.get("nn_module_stack") or {}
    return (list(stack.values())[-1][0] if stack else "") or node.name


def _spec(options: Options, shape: tuple | None, conv_in: int | None, where: str) -> InputSpec:
    """The input spec from the program's example shape (ints static, None dynamic) and the flags."""
    layout = options.layout or "NCHW"
    origin = {"layout": "flags" if options.layout else "default (NCHW; --layout to change)"}
    if shape is not None and len(shape) != 4:
        raise CnnlabError(f"{where} has no image input: its input is {' x '.join(map(str, shape))}, expected "
                          "N x C x H x W or N x H x W x C")
    c, h, w = (None, None, None) if shape is None else ((shape[1], shape[2], shape[3]) if layout == "NCHW"
                                                         else (shape[3], shape[1], shape[2]))
    if options.layout is None and c is not None and shape[3] is not None and shape[3] != c and \
            (shape[3] == conv_in if conv_in else shape[3] in (1, 3) and c not in (1, 3)):
        # N x H x W x C read as N x C x H x W: C channels of H x W pixels would not be what it takes
        shown = " x ".join("N" if k == 0 and d is None else "?" if d is None else str(d) for k, d in enumerate(shape))
        raise CnnlabError(f"{where}: its input {shown} looks like N x H x W x C (C = "
                          f"{shape[3]}), not N x C x H x W; pass --layout NHWC")
    channels = c or conv_in
    if not channels:
        raise CnnlabError(f"{where}: cannot tell how many channels the input has (no convolution says it)")
    return options.spec(channels, h, w, layout, origin, where, "program")


def _in_channels(module: nn.Module) -> int | None:
    """The input channels of a 2-d convolution (its 4-d weight holds in_channels / groups of them), else None."""
    weight = getattr(module, "weight", None)
    if not isinstance(weight, torch.Tensor) or weight.dim() != 4:
        return None
    return int(weight.shape[1]) * int(getattr(module, "groups", 1))


class _TorchModel:
    """What the two PyTorch kinds share: a differentiable stage pass, Grad-CAM/saliency, logits, kernels."""

    spec: InputSpec
    classes: tuple[str, ...]
    scoring: Scoring
    tta = False
    _outputs: tuple[str, ...] = ()  # a model of several outputs: each one's shape (N x classes first), for the note
    _on_map = False  # its class scores come as N x K x 1 x 1 (:func:`cnnlab.explore.model.class_rows`)
    _wrapped_in: str | None = None  # the type of output object (or "a dict") the logits come in, if any

    def _network(self) -> nn.Module:
        """The module that runs: the user's, or the program's."""
        raise NotImplementedError

    def _scores_of(self, out: Any) -> Any:
        """The class scores among what the model returned: a tensor; the ``logits`` tensor of an output object (as
        Hugging Face's image classifiers return, ``ImageClassifierOutput``) or of a dict (as such a model exported
        with torch.export returns it, or a forward written so); or the first of a tuple of outputs
        (:func:`cnnlab.explore.model.first_output`), as the ONNX kind reads a graph's first output, the others
        named on the page."""
        logits = out.get("logits") if isinstance(out, dict) else getattr(out, "logits", None)
        if not isinstance(out, torch.Tensor) and isinstance(logits, torch.Tensor):
            self._wrapped_in = "a dict" if type(out) is dict else type(out).__name__
            return logits
        scores, others = first_output(out)
        if others:
            self._outputs = tuple(per_image_shape(o) for o in (scores, *others))
        return scores

    def _outputs_note(self, noun: str) -> tuple[str, ...]:
        """What the page says of a model whose class scores come among other things: in an output object or a
        dict, or first of several outputs (nothing for one tensor)."""
        if self._wrapped_in:
            forward = "forward" if noun == "module" else noun
            return (f"Its {forward} returns {self._wrapped_in}: its logits are read as the class scores.",)
        return outputs_note(noun, self._outputs[0], list(self._outputs[1:])) if self._outputs else ()

    def _stage_pass(self, x: torch.Tensor) -> tuple[list[Row], list[Row]]:
        """The stages of one pass over ``x`` (the last row the model's output) and the last spatial values it made
        (for Grad-CAM: :func:`cnnlab.explore.gradcam.explain_with`)."""
        raise NotImplementedError

    def _forward(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def _check_classifier(self, where: str) -> int:
        """The class count, from passes of 2 images and of 1 (a final ``squeeze()`` drops the batch of one, which
        every analysis of one image runs); refuses what is not float logits ``N x classes``."""
        spec = self.spec
        classes = None
        for n in (2, 1):
            try:
                with torch.no_grad():
                    out = self._forward(spec.to_input(spec.zeros(n)))
            except CnnlabError:  # refused already for what it returns
                raise
            except Exception as e:  # the model's own error on the input the flags describe: say which input
                shape = spec.shape_text(n)
                other = sorted({str(p.dtype).removeprefix("torch.") for p in self._network().parameters()
                                if p.is_floating_point() and p.dtype != torch.float32})
                if other:  # fed float32, as every kind is: a half or double model fails on its first layer
                    hint = f"; it holds {', '.join(other)} weights and is fed float32: convert it with .float()"
                elif "Guard failed" in str(e):  # a torch.export program's own check of its dynamic sizes
                    hint = "; pass an --input-size the program allows"
                elif spec.layout == "NCHW" and "channels" in str(e):  # a conv given H or W as its channels
                    hint = "; if it takes N x H x W x C images, pass --layout NHWC"
                elif spec.origin.get("size") == "flags":  # a ViT's "Wrong image height! Expected 224"
                    hint = "; if it takes another size, pass that --input-size"
                else:
                    hint = ""
                raise CnnlabError(f"{where} failed on a {shape} {spec.layout} input ({_first_line(e)}){hint}; "
                                  "expected a classifier of one image batch") from e
            classes = logits_count(out, n, where, classes, outputs=len(self._outputs) or 1)
            self._on_map = on_a_map(out)
        return classes

    def _final_op(self) -> str | None:
        """``"Softmax"`` or ``"Sigmoid"`` where the model's output is one's (probabilities already), else None."""
        raise NotImplementedError

    def _sample(self) -> torch.Tensor | None:
        """The model's outputs for :meth:`InputSpec.probe`'s images (None where it fails on them): whether they are
        probabilities already (:func:`cnnlab.explore.model.sums_to_one`)."""
        try:
            with torch.no_grad():
                out = self._forward(self.spec.to_input(self.spec.probe()))
        except Exception:  # it ran on blank images: read its outputs as its last operation says
            return None
        return out if isinstance(out, torch.Tensor) else None

    def _scored_pass(self, x: torch.Tensor) -> tuple[list[Row], list[Row]]:
        """:meth:`_stage_pass` with its last row, the model's output, as the class scores (:class:`Scoring`)."""
        rows, tail = self._stage_pass(x)
        last = rows[-1]
        return [*rows[:-1], Row(last.name, last.kind, self.scoring.scores(last.output))], tail

    def logits(self, images: torch.Tensor, batch_size: int = 64) -> torch.Tensor:
        with torch.no_grad():
            return torch.cat([self.scoring.scores(self._forward(self.spec.to_input(images[i:i + batch_size])).float())
                              for i in range(0, images.shape[0], batch_size)])

    def stages(self, image: torch.Tensor) -> list[Row]:
        with torch.no_grad():
            rows, _ = self._scored_pass(self.spec.to_input(image[None]))
        return [Row(r.name, r.kind, r.output[:1].detach()) for r in rows]

    def attribution(self, image: torch.Tensor, target: int) -> dict[str, Any]:
        nhwc = self.spec.layout == "NHWC"

        def stage_pass(x: torch.Tensor) -> tuple[list[Row], list[Row]]:
            # Grad-CAM wants feature maps C x h x w; the saliency comes out per input position either way.
            return self._scored_pass(x.permute(0, 2, 3, 1) if nhwc else x)

        x = self.spec.to_input(image[None])
        x = x.permute(0, 3, 1, 2) if nhwc else x
        return gradient_pngs(explain_with(stage_pass, x, target), image, self.classes)


@dataclass(frozen=True)
class _Exported:
    """How ``cnnlab export --format safetensors`` says its network is fed (:func:`_exported_of`)."""

    metadata: dict[str, str]
    size: int
    normalize: tuple[tuple[float, ...] | None, tuple[float, ...] | None]  # (None, None): raw pixels / 255
    classes: tuple[str, ...] | None
    stored: int | None  # the run's stored side, which its input was resized from (None: the input's own)


def _exported_of(path: str | Path, name: str) -> _Exported | None:
    """The input side, stored side, normalisation and classes that the metadata of ``cnnlab export --format
    safetensors`` gives for network ``name`` (its ``cnnlab.model``), or None for another file: weights from elsewhere,
    fed as the ImageNet weights are. The export checked its network against its checkpoint on exactly that input."""
    metadata = safetensors_metadata(path)
    if metadata.get("cnnlab.model") != name:
        return None
    try:
        size = int(metadata["cnnlab.input_size"])
        # an export from before the stored side was written: read at the input's side, as it was then
        stored = int(metadata.get(STORED_SIDE_KEY, size))
        if min(size, stored) < 1:
            raise ValueError(min(size, stored))
        mean, std = (None if metadata.get(f"cnnlab.{k}", "none") == "none" else
                     tuple(float(v) for v in json.loads(metadata[f"cnnlab.{k}"])) for k in ("mean", "std"))
    except (KeyError, ValueError, TypeError) as e:
        raise CnnlabError(f"{path}'s metadata says it is cnnlab's export of {name} but does not say how to feed it "
                          f"(cnnlab.input_size, cnnlab.image_size, cnnlab.mean, cnnlab.std: {summary(e, 60)}); "
                          "expected the metadata cnnlab export writes, or pass --input-size, --mean and --std") \
            from None
    classes = stored_classes(metadata["cnnlab.classes"], f"{path}'s metadata cnnlab.classes") \
        if "cnnlab.classes" in metadata else None
    return _Exported(metadata, size, (mean, std), classes, stored if stored != size else None)


def _cnnlab_metadata(text: str, where: str, classes_given: bool) -> tuple[dict[str, Any], tuple[str, ...] | None]:
    """The ``cnnlab.json`` a cnnlab export stores beside its program (of the program at ``where``), and the class
    names in it, checked as a ``--classes`` file's are (not read when ``--classes`` names them instead); ``{}`` and
    None for a program from elsewhere (or a ``cnnlab.json`` that does not parse: it only ever adds names)."""
    try:
        metadata = json.loads(text) if text else {}
    except ValueError:
        return {}, None
    if not isinstance(metadata, dict):
        return {}, None
    if "cnnlab.classes" not in metadata or classes_given:
        return metadata, None
    return metadata, stored_classes(metadata["cnnlab.classes"], f"{where}'s cnnlab.json cnnlab.classes")


def _trains(node: torch.fx.Node) -> bool:
    """Whether an FX node is dropout or batch norm as a training pass runs it (:data:`DROPOUTS`)."""
    packet = _packet(node)
    if packet in UPDATING_BATCH_NORMS:
        return True
    if packet not in DROPOUTS and packet not in BATCH_NORMS:
        return False
    for i, arg in enumerate(node.target._schema.arguments):
        if arg.name in ("train", "training"):
            return (node.args[i] if i < len(node.args) else node.kwargs.get(arg.name)) is not False
    return False


def _check_evaluation_mode(graph: torch.fx.Graph, where: str) -> None:
    """Refuse a program exported in training mode: its answers would be random (dropout) or depend on the images
    run with it (batch norm), on the page, in ``predict`` and in ``eval``; one line names the layers."""
    training = [node for node in graph.nodes if _trains(node)]
    if not training:
        return
    dropouts = listed(dict.fromkeys(repr(_where(n)) for n in training if _packet(n) in DROPOUTS), most=3)
    norms = listed(dict.fromkeys(repr(_where(n)) for n in training if _packet(n) not in DROPOUTS), most=3)
    does = ([f"its dropout ({dropouts}) zeroes random values at each call, so its answer for a picture changes "
             "from one run to the next"] if dropouts else []) + \
        ([f"its batch norm ({norms}) normalises by the statistics of the images run together, not its running "
          "ones, so its answer for a picture depends on the pictures run beside it"] if norms else [])
    raise CnnlabError(f"{where} was exported in training mode: {'; and '.join(does)}; expected a program exported in "
                      "evaluation mode (torch.export.export(model.eval(), ...))")


def _first_line(e: BaseException) -> str:
    """``Type: message``, the message shortened by :func:`cnnlab.errors.summary`: enough to recognise, one line."""
    return f"{type(e).__name__}: {summary(e, 200)}" if str(e).strip() else type(e).__name__


@contextmanager
def _quiet_export_logs():
    """torch.export logs a traceback of warnings before it raises on a file it cannot read; the user gets one line."""
    loggers = [logging.getLogger(name) for name in ("torch.export", "torch._export")]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        for lg, level in zip(loggers, levels, strict=True):
            lg.setLevel(level)


def _library_outputs_as_dicts(data: bytes) -> tuple[bytes, dict[str, list[str]], list[str]]:
    """``data``, a checked ``.pt2``, with each output type that torch's pytree does not know read as the dict it
    flattens to; the types so read (with their fields), and those that cannot be.

    A library's output object (Hugging Face's ``ImageClassifierOutput``) is registered with the pytree by that
    library, so torch.export.load rebuilds it only where the library is imported, and importing it would run its
    code. Its spec's context names its fields, one per value, as a dict's does: read as a dict, the program opens
    and returns ``{"logits": ...}``. A type whose context is not such a list is left as it is (and named).
    """
    known = torch.utils._pytree.SERIALIZED_TYPE_TO_PYTHON_TYPE
    as_dicts: dict[str, list[str]] = {}
    unreadable: list[str] = []

    def read(spec: Any) -> bool:  # whether it changed
        if not isinstance(spec, dict):
            return False
        changed = False
        for child in spec.get("children_spec") or ():
            changed = read(child) or changed
        kind = spec.get("type")
        if kind is None or kind in known:
            return changed
        try:
            fields = json.loads(spec.get("context") or "null")
        except (TypeError, ValueError):
            fields = None
        if isinstance(fields, list) and all(isinstance(f, str) for f in fields) and \
                len(fields) == len(spec.get("children_spec") or ()):
            as_dicts[kind] = fields
            spec["type"] = "builtins.dict"  # a dict's context is its keys, as JSON: the same text
            return True
        unreadable.append(kind)
        return changed

    archive = zipfile.ZipFile(io.BytesIO(data))
    models = {}
    for info in archive.infolist():
        if info.filename.split("/", 1)[-1].startswith(pt2.MODELS_DIR):
            program = json.loads(archive.read(info))
            changed = False
            for entry in program.get("graph_module", {}).get("module_call_graph") or ():
                signature = entry.get("signature") or {}
                if isinstance(signature.get("out_spec"), str):
                    protocol, spec = json.loads(signature["out_spec"])
                    if read(spec):
                        signature["out_spec"] = json.dumps([protocol, spec])
                        changed = True
            if changed:
                models[info.filename] = json.dumps(program).encode()
    if not models:
        return data, as_dicts, unreadable
    rewritten = io.BytesIO()
    with zipfile.ZipFile(rewritten, "w", zipfile.ZIP_STORED) as out:  # stored, as torch.export.save writes
        for info in archive.infolist():
            out.writestr(info, models.get(info.filename) or archive.read(info))
    return rewritten.getvalue(), as_dicts, unreadable


def _batch_bounds(program, value) -> tuple[int, int | None]:
    """The fewest (at least 1) and the most (None: no bound) images a program of free batch takes at once, read
    from its range constraints on the batch size of its input ``value`` (the placeholder's example tensor)."""
    size = value.shape[0] if isinstance(value, torch.Tensor) and value.dim() else None
    bound = program.range_constraints.get(size.node.expr) if isinstance(size, torch.SymInt) else None

    def whole(limit) -> int | None:  # sympy's integers, or torch's unbounded int_oo (no int() of it)
        try:
            return int(limit)
        except (TypeError, ValueError, AttributeError, OverflowError):
            return None

    lower, upper = (whole(bound.lower), whole(bound.upper)) if bound is not None else (None, None)
    return max(1, lower or 1), upper if upper is not None and upper >= max(1, lower or 1) else None


class ExportedModel(_TorchModel):
    """A ``torch.export`` program saved with ``torch.export.save`` (see the module docstring)."""

    kind = "torch.export"

    def __init__(self, path: str | Path, options: Options | None = None, folder_classes: tuple[str, ...] = ()):
        options = options or Options()
        path = Path(path)
        self.path, self.name = path, path.name
        extra = {"cnnlab.json": ""}
        data = checked_pt2(path)  # refuses what would make torch.export.load run code from the file
        data, as_dicts, unreadable = _library_outputs_as_dicts(data)
        try:
            with _quiet_export_logs():
                program = torch.export.load(io.BytesIO(data), extra_files=extra)
        except Exception as e:  # not a program, a version it cannot read: one line
            if unreadable:  # torch's own words point at warnings it logged, which are not shown
                raise CnnlabError(f"{path} returns {unreadable[0]}, a type of the library that exported it, which "
                                  "torch.export.load rebuilds only where that library is imported (cnnlab runs no "
                                  "code a file names); expected a program returning tensors, or a tuple, list or "
                                  "dict of them") from None
            raise CnnlabError(f"{path} is not a torch.export program that torch.export.load can read "
                              f"({_first_line(e)})") from None
        self.module = program.module()
        self.graph = self.module.graph
        _check_evaluation_mode(self.graph, str(path))
        self.rows_at = _rows_at(self.graph)
        placeholders = [n for n in self.graph.nodes if n.op == "placeholder"]
        if len(placeholders) != 1:
            raise CnnlabError(f"{path} takes {len(placeholders)} inputs, expected one image input")
        # the nodes whose values come from the image; the others compute the network's own values (a learnt gate
        # from its parameters alone), no stages whatever their shape
        self.from_image: set[torch.fx.Node] = set()
        for node in self.graph.nodes:
            if node.op == "placeholder" or any(n in self.from_image for n in node.all_input_nodes):
                self.from_image.add(node)
        val = placeholders[0].meta.get("val")
        shape = None if val is None else tuple(d if isinstance(d, int) else None for d in val.shape)
        if shape is not None and len(shape) != 4:
            raise CnnlabError(f"{path} has no image input: its input is {len(shape)}-d, expected N x C x H x W")
        self.batch = shape[0] if shape is not None and shape[0] else None  # torch.export may fix the batch
        # the fewest and the most images the program takes at once: its fixed batch, or a free batch's bounds
        # (torch.export.Dim("batch", min=2, max=16)), outside which its guard fails
        self.batches = (self.batch, self.batch) if self.batch else _batch_bounds(program, val)
        metadata, stored = _cnnlab_metadata(extra["cnnlab.json"], str(path), options.classes is not None)
        self.metadata = metadata  # a cnnlab export's: its run's classes, input, dataset and split records
        options.check_no_scaling_for(metadata, str(path))
        self.spec = square_as_exported(_spec(options, shape, self._conv_in(), str(path)), metadata)
        # a program exported in half precision (or double) takes images of that type: fed float32, its first
        # layer fails, and a .pt2 has no .float() to mend it
        self.dtype = val.dtype if isinstance(val, torch.Tensor) and val.is_floating_point() else torch.float32
        if self.dtype != torch.float32:
            self.spec = replace(self.spec, dtype=str(self.dtype).removeprefix("torch."))
        self.scoring, self.classes, where = read_outputs(self._check_classifier(str(path)), options,
                                                         self._final_op(), stored, folder_classes, str(path),
                                                         "program", sample=self._sample(), on_map=self._on_map)
        read_as = tuple(f"Its output, {kind} (a type of the library that exported it, not imported here), is read as "
                        f"the dict of its fields, {listed(map(repr, fields))}." for kind, fields in as_dicts.items())
        self.notes = (f"Read with torch.export.load once checked to hold only tensors, operators and size arithmetic "
                      f"(no pickles or code). Class names: {where}.", *read_as, *self._outputs_note("program"),
                      *self.scoring.notes())
        self.notes += token_notes(self, "program")

    def _conv_in(self) -> int | None:
        """The input channels of the first convolution: its weight holds in_channels / groups of them."""
        node, weight = self._first_conv()
        if node is None:
            return None
        # groups is conv2d's 7th argument, convolution's and _convolution's 9th
        at = 6 if node.target.overloadpacket is aten.conv2d else 8
        groups = node.args[at] if len(node.args) > at else node.kwargs.get("groups", 1)
        return int(weight.shape[1]) * int(groups)

    def _first_conv(self) -> tuple[torch.fx.Node, torch.Tensor] | tuple[None, None]:
        for node in self.graph.nodes:
            if node.op == "call_function" and getattr(node.target, "overloadpacket", None) in (
                    aten.conv2d, aten.convolution, aten._convolution) and len(node.args) > 1:
                weight = self._value(node.args[1])
                if isinstance(weight, torch.Tensor) and weight.dim() == 4:
                    return node, weight.detach()
        return None, None

    def _first_conv_weight(self) -> torch.Tensor | None:
        return self._first_conv()[1]

    def _value(self, arg):
        if isinstance(arg, torch.fx.Node) and arg.op == "get_attr":
            value = self.module
            for part in arg.target.split("."):
                value = getattr(value, part)
            return value
        return None

    def _network(self) -> nn.Module:
        return self.module

    def _padded(self, x: torch.Tensor) -> tuple[torch.Tensor, int]:
        """``x`` padded with copies of its first image to the fewest images the program takes at once (its fixed
        batch, or a free batch's lower bound), and its real size."""
        real = x.shape[0]
        fewest, most = self.batches
        if most is not None and real > most:
            raise ValueError("callers pass at most the program's largest batch at a time")
        if real >= fewest:
            return x, real
        return torch.cat([x, x[:1].expand(fewest - real, *x.shape[1:])]), real

    def _forward(self, x: torch.Tensor) -> torch.Tensor:
        fewest, most = self.batches
        x = x.to(self.dtype)
        if fewest == 1 and most is None:
            return self._scores_of(self.module(x))
        outs = []
        step = most or x.shape[0]
        for start in range(0, x.shape[0], step):
            chunk, real = self._padded(x[start:start + step])
            out = self._scores_of(self.module(chunk))
            if not isinstance(out, torch.Tensor):  # not one tensor of logits: the classifier check says what it is
                return out
            if out.dim() == 0 or out.shape[0] != chunk.shape[0]:
                # no row per image (a program of one image that drops its batch axis, squeeze(0)): refused for what
                # it returns for the images it was given, not cut into rows
                logits_count(out, chunk.shape[0], str(self.path), outputs=len(self._outputs) or 1)
            outs.append(out[:real])
        return torch.cat(outs)

    def _stage_pass(self, x: torch.Tensor) -> tuple[list[Row], list[Row]]:
        x, _ = self._padded(x.to(self.dtype))
        rows: list[Row] = []
        tail: deque[Row] = deque(maxlen=TAIL)  # the last spatial values made, for Grad-CAM
        from_image, rows_at = self.from_image, self.rows_at
        names = Counter()
        layouts: dict[torch.fx.Node, str | None] = {}  # each node's layout (cnnlab.explore.layouts)
        input_layout = self.spec.layout

        class Recorder(torch.fx.Interpreter):
            def call_function(self, target, args, kwargs):
                # An in-place activation (relu_) would overwrite the stage recorded before it (the batch norm's
                # output): run its out-of-place twin, whose result the graph's later nodes read all the same.
                name = getattr(getattr(target, "overloadpacket", None), "__name__", "")
                if name.endswith("_") and target.overloadpacket in STAGE_PACKETS and hasattr(aten, name[:-1]):
                    target = getattr(aten, name[:-1]).default
                return super().call_function(target, args, kwargs)

            def run_node(self, node):
                out = super().run_node(node)
                op = getattr(_packet(node), "__name__", "")
                # the first tensor input of a known layout: a layer scale's parameter may come before the map it
                # scales, a concatenation's are in a list, and a view's sizes (a dynamic batch's sym_size) are no
                # tensors whose layout it takes
                inputs = [a for a in node.all_input_nodes if isinstance(self.env.get(a), torch.Tensor)]
                first = next((a for a in inputs if layouts.get(a) is not None), inputs[0] if inputs else None)
                source = self.env.get(first) if first is not None else None
                source = source if isinstance(source, torch.Tensor) else None
                dims = node.args[1] if op == "permute" and len(node.args) > 1 else node.args[1:3] \
                    if op in SWAPS and len(node.args) > 2 else None
                shapes = (source.shape, out.shape) if source is not None and isinstance(out, torch.Tensor) else None
                layouts[node] = input_layout if node.op == "placeholder" else \
                    after(op, layouts.get(first), permutation(op, dims, source.dim() if source is not None else None),
                          shapes)
                if node.op != "call_function" or node not in from_image:
                    return out
                value = out[0] if isinstance(out, (tuple, list)) else out
                if not isinstance(value, torch.Tensor) or not per_image(value, x.shape[0]):
                    return out
                if node in rows_at:
                    stage, kind = rows_at[node]
                    where = _where(stage)
                    names[where] += 1
                    label = where if names[where] == 1 else f"{where}#{names[where]}"
                    shown = as_nchw(value, layouts[node])  # a channels-last stage as C x h x w
                    rows.append(Row(label, kind, shown))
                    if is_spatial(shown):
                        tail.append(rows[-1])
                    copy = passed_on(shown, value)
                    out = (type(out)([copy, *out[1:]]) if isinstance(out, (tuple, list)) else copy)
                elif layouts[node] == NCHW and is_spatial(value):  # a concatenation, a residual sum: no stage,
                    tail.append(Row(_where(node), op, value))  # but perhaps the map Grad-CAM is to weigh
                return out

        logits = self._scores_of(Recorder(self.module).run(x))
        # Rows keep the padded batch: sliced, a row would be a new tensor the logits do not depend on (no gradient
        # for Grad-CAM); every reader takes image 0.
        return [*rows, Row("output", "output", logits)], list(tail)

    def kernels(self) -> torch.Tensor | None:
        return self._first_conv_weight()

    def _final_op(self) -> str | None:
        output = next(n for n in self.graph.nodes if n.op == "output")
        node = output.args[0]
        node = node[0] if isinstance(node, (tuple, list)) and node else node.get("logits") \
            if isinstance(node, dict) else node
        while isinstance(node, torch.fx.Node) and _packet(node) in PASS_THROUGH and node.args:
            node = node.args[0]
        return FINAL_OPS.get(_packet(node))

    def layers(self) -> list[dict[str, Any]]:
        rows, counted = [], set()
        for node in self.graph.nodes:
            if node.op != "call_function":
                continue
            # Parameters only, each once: batch norm's running statistics are buffers, as a module counts them.
            weights = [v for v in (self._value(a) for a in node.args)
                       if isinstance(v, nn.Parameter) and id(v) not in counted]
            counted.update(id(v) for v in weights)
            params = sum(v.numel() for v in weights)
            packet = getattr(node.target, "overloadpacket", None)
            if packet not in STAGE_PACKETS and not params:
                continue
            val = node.meta.get("val")
            val = val[0] if isinstance(val, (tuple, list)) else val
            # one image's: without the batch axis, unless the value is the network's own (a learnt gate)
            shape = [int(d) if isinstance(d, int) else str(d)
                     for d in (val.shape[1:] if node in self.from_image else val.shape)] \
                if isinstance(val, torch.Tensor) else []
            rows.append({"name": _where(node),
                         "op": getattr(packet, "__name__", str(node.target)), "shape": shape, "params": params})
        return rows


@dataclass(frozen=True)
class _Carried:
    """What a network from a library carries about how it is fed and what it answers (none of it for a plain
    module): its class names, input size and normalisation, and where each was read, for the page."""

    classes: tuple[str, ...] | None = None
    classes_from: str = "the model file"
    size: tuple[int, int] | None = None
    size_from: str = ""
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None
    mean_from: str = ""


def _carried(model: nn.Module) -> _Carried:
    """The class names of a Hugging Face model's ``config.id2label`` (not its placeholders ``LABEL_0`` ...) and its
    ``config.image_size``; a timm model's ``pretrained_cfg`` input size, mean and std. Anything of another shape is
    passed over: the flags, or the explorer's defaults, say it instead."""
    found: dict[str, Any] = {}
    config = getattr(model, "config", None)
    labels = getattr(config, "id2label", None)
    if isinstance(labels, dict) and labels:
        try:
            by_index = {int(k): v for k, v in labels.items()}
        except (TypeError, ValueError):
            by_index = {}
        names = [by_index.get(i) for i in range(len(by_index))]
        if all(isinstance(n, str) for n in names) and not all(n == f"LABEL_{i}" for i, n in enumerate(names)):
            found.update(classes=tuple(names), classes_from="the model's config.id2label")
    side = getattr(config, "image_size", None)
    sides = (side, side) if isinstance(side, int) else tuple(side) if isinstance(side, (list, tuple)) else ()
    if len(sides) == 2 and all(isinstance(d, int) and not isinstance(d, bool) for d in sides):
        found.update(size=sides, size_from="model's config.image_size")
    pretrained = getattr(model, "pretrained_cfg", None)
    if isinstance(pretrained, dict):
        size = pretrained.get("input_size")
        if isinstance(size, (list, tuple)) and len(size) == 3 and all(isinstance(d, int) for d in size):
            found.update(size=(size[1], size[2]), size_from="model's pretrained_cfg")
        mean, std = pretrained.get("mean"), pretrained.get("std")
        if all(isinstance(v, (list, tuple)) and v and all(isinstance(x, (int, float)) for x in v)
               for v in (mean, std)):
            found.update(mean=tuple(map(float, mean)), std=tuple(map(float, std)),
                         mean_from="model's pretrained_cfg")
    return _Carried(**found)


class ModuleModel(_TorchModel):
    """An ``nn.Module`` seen through forward hooks: ``module:function`` (:meth:`from_spec`) or an ImageNet backbone
    of the zoo with its weights and class names (:meth:`imagenet`); see the module docstring."""

    kind = "PyTorch module"

    def __init__(self, model: nn.Module, name: str, options: Options, folder_classes: tuple[str, ...] = (), *,
                 stored: tuple[str, ...] | None = None, stored_in: str = "the model file", note: str = ""):
        self.name = name
        self.model = model.eval()
        # The server analyses in a thread pool; a forward hook sees every pass through its module, so a pass of
        # one request while another's hooks are on would add its outputs to the other's stages.
        self._passes = threading.Lock()
        for m in self.model.modules():  # an in-place activation would overwrite the output recorded before it
            if getattr(m, "inplace", False) is True:
                m.inplace = False
        names = {id(m): n for n, m in self.model.named_modules()}
        self._modules = [(names[id(m)], m) for m in self.model.modules()]
        self._leaves = [(n, m) for n, m in self._modules if not list(m.children())]
        # the modules around others that read parameters themselves, or may (a leaf inside them that never runs)
        self._holders = [(n, m) for n, m in self._modules if list(m.children()) and (
            list(m.parameters(recurse=False)) or any(not list(c.children()) and list(c.parameters())
                                                     for c in m.children()))]
        # The input's channels are those of the convolution that reads it, which need not be the first one
        # registered (a head assigned before the stem): each conv's in_channels is tried in turn, then grey and
        # RGB for a network without one, and the first the model runs on is taken.
        self._modes = True  # whether its forward runs under a TorchFunctionMode (the probes of layouts and output)
        tried = dict.fromkeys([*(_in_channels(m) for m in self.model.modules() if _in_channels(m)), 3, 1])
        refusals = []
        for channels in tried:
            try:
                self.spec = _spec(options, None, channels, name)  # --bgr refuses a grey one
                count = self._check_classifier(name)
                break
            except CnnlabError as e:
                refusals.append(e)
        else:
            raise refusals[0]
        self.scoring, self.classes, where = read_outputs(count, options, self._final_op(), stored, folder_classes,
                                                         name, "module", stored_in, self._sample(), self._on_map)
        self.notes = (f"{note} Class names: {where}.".lstrip(), *self._outputs_note("module"),
                      *self.scoring.notes())
        self.notes += (*token_notes(self, "module"), *self._unused())

    @classmethod
    def from_spec(cls, spec: str, options: Options | None = None,
                  folder_classes: tuple[str, ...] = ()) -> ModuleModel:
        """``package.module:function``: import the module, call the function, explore the module it returns."""
        module_name, _, function = spec.partition(":")
        if os.getcwd() not in sys.path:  # as `python -m` does: a module beside the user's working folder
            sys.path.insert(0, os.getcwd())
        try:
            module = importlib.import_module(module_name)
        except ImportError as e:
            raise CnnlabError(f"cannot import {module_name!r} for {spec} ({e})") from None
        except SystemExit as e:  # a script's own exit when imported: it would end cnnlab with its code, silently
            raise CnnlabError(f"importing {module_name!r} for {spec} called sys.exit({e.code!r}); expected a module "
                              "that defines the function (guard a script's own run with if __name__ == "
                              "'__main__':)") from None
        except Exception as e:  # the user's module failed as it ran (a SyntaxError is an Exception too)
            raise CnnlabError(f"importing {module_name!r} for {spec} failed ({_first_line(e)})") from e
        build = getattr(module, function, None)
        if not callable(build):
            raise CnnlabError(f"{module_name} has no function {function!r} (expected module:function returning an "
                              "nn.Module)")
        try:
            model = build()
        except SystemExit as e:
            raise CnnlabError(f"{spec}() called sys.exit({e.code!r}); expected a function that returns an "
                              "nn.Module") from None
        except Exception as e:
            raise CnnlabError(f"{spec}() failed ({_first_line(e)}); expected a function that takes no arguments and "
                              "returns an nn.Module") from e
        if not isinstance(model, nn.Module):
            raise CnnlabError(f"{spec}() returned a {type(model).__name__}, expected an nn.Module")
        if isinstance(model, torch.jit.ScriptModule):  # its compiled graph runs no forward hooks of its layers
            raise CnnlabError(f"{spec}() returned a TorchScript module, whose layers the explorer cannot watch; "
                              "expected a plain nn.Module (or its torch.export .pt2 or ONNX export)")
        options = options or Options()
        note = f"Imported {module_name} and called {function}() because you named it: this is the one way the " \
               "explorer runs code of yours."
        if options.weights is not None:
            expected = f"a state dict of the network {spec}() builds (its state_dict(), {SAVED})"
            state, unread = read_weights(options.weights, expected)
            how = load_state_dict_into(model, state, options.weights, f"the network {spec}() builds", expected)
            note += f" Its weights: {loaded_note(options.weights, how, unread)}"
        # The book's nets (nn.LazyConv2d, nn.LazyLinear) make their weights at the first forward pass, of the shape
        # its input has: none exist yet to explore, and the first image tried would fix the input channels
        lazy = [f"{name} ({type(m).__name__})" for name, m in model.named_modules()
                if any(map(is_lazy, (*m.parameters(recurse=False), *m.buffers(recurse=False))))]
        if lazy:
            raise CnnlabError(f"{spec}() returned a network whose lazy layers have no weights yet "
                              f"({', '.join(lazy[:3])}{', ...' if len(lazy) > 3 else ''}: nn.LazyConv2d, nn.LazyLinear "
                              "and the like make theirs at the first forward pass); expected its weights: pass "
                              "--weights FILE (a state dict of the trained network), or run it once on an input of "
                              "its shape before returning it (net(torch.zeros(1, 1, 28, 28)))")
        carried = _carried(model)
        # What the network carries comes after the flags: its size where none is given, its normalisation where no
        # flag says how pixels become its input (timm's mean and std are of pixels / 255, one per input channel).
        sized = carried.size is not None and options.input_size is None
        channels = next((_in_channels(m) for m in model.modules() if _in_channels(m)), None)
        normalised = carried.mean is not None and not options.scaling_flags() and \
            (channels is None or {len(carried.mean), len(carried.std)} <= {1, channels})
        if sized:
            options = replace(options, input_size=carried.size)
        if normalised:
            options = replace(options, mean=carried.mean, std=carried.std)
        explored = cls(model, spec, options, folder_classes, stored=carried.classes, stored_in=carried.classes_from,
                       note=note)
        explored._read_from(carried.size_from if sized else None, carried.mean_from if normalised else None)
        return explored

    @classmethod
    def imagenet(cls, name: str, options: Options | None = None,
                 folder_classes: tuple[str, ...] = ()) -> ModuleModel:
        """An ImageNet backbone of the zoo (``imagenet-resnet18``) with its weights from torch.hub's cache, at the
        input size, normalisation and 1,000 class names of the weights' own metadata (flags override the first
        two); with ``options.weights``, the same architecture shaped as that state dict has it (input channels,
        classes: ImageNet's names only for 1,000 outputs) with its weights, fed as the ImageNet weights are; or,
        where the file is ``cnnlab export --format safetensors``'s of this network, fed as its metadata says its run
        was (input side, normalisation, centre-cropped pictures) and its classes named so (flags come first), and
        the metadata kept as an export's (``metadata``: eval scores the run's test split)."""
        given = options or Options()
        if given.pixel_range or given.bgr:
            flags = " and ".join(f for f in given.scaling_flags() if f in ("--pixel-range", "--bgr"))
            raise CnnlabError(f"{flags} describe{'s' * (' and ' not in flags)} a model from elsewhere; {name} takes "
                              "RGB pixels / 255, as its weights were trained (--mean and --std may change their "
                              f"normalisation); expected no {flags.replace(' and ', '/')} for it")
        categories = tuple(weights_enum(name).meta["categories"])
        builder = BACKBONES[name].builder
        if given.weights is None:
            model = create_model(name, num_classes=len(categories), in_channels=3, pretrained=True)
            channels, classes = 3, len(categories)
            note = f"torchvision's {builder} with its {BACKBONES[name].weights} weights (read weights-only from " \
                   f"{weights_file(name)})."
        else:  # the architecture, with a state dict of it from elsewhere (fine-tuned on other classes, perhaps)
            expected = f"a state dict of torchvision's {builder} (its model.state_dict(), {SAVED})"
            state, unread = read_weights(given.weights, expected)
            model, channels, classes = backbone_for(name, state)
            how = load_state_dict_into(model, state, given.weights, f"torchvision's {builder}", expected)
            note = f"torchvision's {builder} with the weights of {loaded_note(given.weights, how, unread)}"
        exported = _exported_of(given.weights, name) if given.weights is not None else None
        if exported is not None:  # a cnnlab export of this network: fed as its run was, its classes named
            size, (mean, std), stored = exported.size, exported.normalize, exported.classes
            size_from = normalised_by = "weights file's metadata"  # the page: "size from the weights file's ..."
            stored_in = "the weights file's metadata"
        else:
            size, (mean, std) = INPUT_SIZE, pretrained_normalize(name, channels)
            stored = categories if classes == len(categories) else None
            stored_in = "the weights' metadata" if given.weights is None else "ImageNet's, for 1,000 outputs"
            size_from = "weights' metadata"
            normalised_by = "weights' metadata" if given.weights is None else "ImageNet weights' metadata"
        options = replace(given, input_size=given.input_size or size,
                          mean=given.mean or (tuple(mean) if mean is not None else None),
                          std=given.std or (tuple(std) if std is not None else None))
        explored = cls(model, name, options, folder_classes, stored=stored, stored_in=stored_in, note=note)
        # the page reads "size from the weights' metadata"
        explored._read_from(size_from if given.input_size is None else None,
                            normalised_by if given.mean is None and given.std is None else None)
        if exported is not None:
            explored.spec = square_as_exported(explored.spec, exported.metadata)
            if given.input_size is None and exported.stored is not None:  # read at the run's stored side, resized
                explored.spec = replace(explored.spec, read_at=exported.stored,
                                        origin={**explored.spec.origin, "stored side": "metadata"})
            explored.metadata = exported.metadata  # as an ONNX export's: eval's default dataset and test split
        return explored

    def _read_from(self, size: str | None, normalisation: str | None) -> None:
        """Say on the page where the input size and normalisation were read where not from the flags (None: as
        the flags or the defaults gave them)."""
        said = {key: value for key, value in (("size", size), ("normalisation", normalisation)) if value}
        self.spec = replace(self.spec, origin={**self.spec.origin, **said})

    def _run(self, x: torch.Tensor) -> Any:
        """The model on ``x`` (under ``_passes``), its output as class scores (:meth:`_scores_of`)."""
        return self._scores_of(self.model(x))

    def _network(self) -> nn.Module:
        return self.model

    def _forward(self, x: torch.Tensor) -> torch.Tensor:
        with self._passes:
            return self._run(x)

    def _hooked(self, x: torch.Tensor, stages_only: bool) -> _Pass:
        """Every leaf module's (or every stage's) output and the model's, from one pass over ``x``; for the layer
        table (not ``stages_only``), also the outputs of the modules that hold parameters of their own."""
        if self._modes:
            try:
                layouts = Layouts(x, self.spec.layout)
                return self._hooked_under(x, stages_only, layouts)
            except Exception:  # code that cannot run under a function mode (an extension's op): its stages are
                self._modes = False  # taken as they come, channels first, as before layouts were followed
        return self._hooked_under(x, stages_only, None)

    def _hooked_under(self, x: torch.Tensor, stages_only: bool, layouts: Layouts | None) -> _Pass:
        where: list[str] = []  # the modules running, innermost last
        watch = _Watch(self.model, layouts, x.shape[0], where) if layouts is not None else None
        done = _Pass([], None, watch)

        def record(mod, args, out, name):
            if watch is not None and watch.is_own(out):  # the network's own value (a learnt gate): no stage
                done.seen.append((name, mod, out))
                return None
            # A channels-last output (a ConvNeXt block's LayerNorm) is recorded as C x h x w, and the rest of the
            # network reads it through that view, so that Grad-CAM's gradients reach the row recorded.
            layout = layouts.of(out) if layouts is not None else None
            shown = as_nchw(out, layout)
            done.seen.append((name, mod, shown))
            if not isinstance(out, torch.Tensor):
                return None
            # the rest of the network reads a copy (torchvision's ResNet adds its shortcut to bn2's output with +=)
            with watch.passing_on() if watch is not None else nullcontext():
                copy = passed_on(shown, out)
            done.copies[id(copy)] = (copy, shown, copy._version)
            return copy

        def contained(mod, args, out, name):
            done.containers.add(id(mod))
            done.seen.append((name, mod, out))

        hooked = [(name, m, record) for name, m in self._leaves if not stages_only or isinstance(m, STAGE_MODULES)]
        if not stages_only:
            hooked += [(name, m, contained) for name, m in self._holders]
        with self._passes, layouts if layouts is not None else nullcontext(), watch or nullcontext():
            handles = []
            if watch is not None:  # the module stack, for naming the values Grad-CAM may weigh
                for name, m in self._modules:
                    handles.append(m.register_forward_pre_hook(lambda mod, args, name=name: where.append(name)))
                    handles.append(m.register_forward_hook(lambda mod, args, out: _pop(where)))
            handles += [m.register_forward_hook(lambda mod, args, out, name=name, hook=hook: hook(mod, args, out, name))
                        for name, m, hook in hooked]
            try:
                done.out = self._run(x)
            finally:
                for h in handles:
                    h.remove()
        return done

    def _stage_pass(self, x: torch.Tensor) -> tuple[list[Row], list[Row]]:
        """The stages and the output of one pass over ``x``, and the last spatial values it made, for Grad-CAM: a
        stage's under its row's name, another value under the module that made it (an Inception block's
        concatenation, a residual sum)."""
        done = self._hooked(x, stages_only=True)
        counts = Counter()
        rows, row_of = [], {}
        for name, mod, value in done.seen:
            if isinstance(value, torch.Tensor) and per_image(value, x.shape[0]) and \
                    not (done.watch is not None and done.watch.is_own(value)):
                counts[name] += 1
                rows.append(Row(name if counts[name] == 1 else f"{name}#{counts[name]}", type(mod).__name__, value))
                row_of[id(value)] = rows[-1]
        tail = []
        for module, function, value in done.watch.tail if done.watch is not None else ():
            copy, shown, version = done.copies.get(id(value), (None, None, None))
            if copy is not None and copy._version == version:  # the copy a stage passed on, as it was: its row
                value = shown  # (one changed in place since, by DenseNet's last F.relu(inplace=True), is not)
            tail.append(row_of.get(id(value)) or Row(module or function, function, value))
        return [*rows, Row("output", "output", done.out)], tail

    def kernels(self) -> torch.Tensor | None:
        """The weights of the first convolution the input goes through (not the first one registered)."""
        done = self._leaf_pass()
        convs = (mod for _, mod, _ in done.seen if id(mod) not in done.containers and _in_channels(mod))
        conv = next(convs, None)
        return None if conv is None else conv.weight.detach()

    def _final_op(self) -> str | None:
        producers = _Producers()  # holds every tensor of one image's pass, as a stage pass does
        x = self.spec.to_input(self.spec.zeros(1))
        try:
            with self._passes, torch.no_grad(), producers:
                out = self._run(x)
        except Exception:  # code that cannot run under a function mode (an extension's op): it ran without one,
            self._modes = False  # and its outputs are read as logits, as before this probe
            return None
        return producers.final_op(out)

    def _leaf_pass(self) -> _Pass:
        """Every leaf module's output for one blank image, in the order they ran, and the outputs of the modules
        that hold parameters of their own (flagged in ``containers``)."""
        x = self.spec.to_input(self.spec.zeros(1))
        with torch.no_grad():
            return self._hooked(x, stages_only=False)

    def layers(self) -> list[dict[str, Any]]:
        return self._layer_table[0]

    def _unused(self) -> tuple[str, ...]:
        """A note naming the modules whose parameters the forward pass never reads (GoogLeNet's and Inception
        v3's auxiliary heads, which run in training only): the layer table and its total leave them out."""
        try:
            counted = self._layer_table[1]
        except Exception:  # it answered for blank images already; a note is not worth a refusal
            return ()
        idle = {id(p) for p in self.model.parameters()} - counted
        if not idle:
            return ()
        chosen: list[tuple[str, int]] = []
        for name, mod in self._modules:  # the outermost modules all of whose parameters are idle
            params = list(mod.parameters())
            if name and params and all(id(p) in idle for p in params) and \
                    not any(name.startswith(f"{c}.") for c, _ in chosen):
                chosen.append((name, sum(p.numel() for p in params)))
        total = sum(p.numel() for p in self.model.parameters() if id(p) in idle)
        shown = ", ".join(name for name, _ in chosen[:6]) + (", ..." if len(chosen) > 6 else "")
        return (f"{total:,} of its parameters are not read by its forward pass in evaluation"
                f"{f' ({shown})' if shown else ''}: they are left out of the layer table and its total.",)

    @functools.cached_property
    def _layer_table(self) -> tuple[list[dict[str, Any]], set[int]]:
        """The layer table, and the ids of the parameters it counts: one pass over a blank image, made once (the
        note on unused parameters reads it when the model opens, the page's card when it is shown)."""
        done = self._leaf_pass()
        ran = {id(mod) for _, mod, _ in done.seen}
        rows, counted = [], set()

        def params(tensors) -> int:  # each parameter once, as the model counts it
            new = [p for p in tensors if id(p) not in counted]
            counted.update(id(p) for p in new)
            return sum(p.numel() for p in new)

        for name, mod, value in done.seen:
            if id(mod) in done.containers:
                # what a module reads itself: its own parameters (a ViT's class token and position embedding, a
                # ConvNeXt block's layer scale) and those of its leaf modules that never ran (nn.MultiheadAttention
                # reads its out_proj's weight without calling it)
                idle = [p for child in mod.children() if not list(child.children()) and id(child) not in ran
                        for p in child.parameters()]
                count = params([*mod.parameters(recurse=False), *idle])
                if not count:
                    continue
            else:
                count = params(mod.parameters())
            if isinstance(value, (tuple, list)) and value and isinstance(value[0], torch.Tensor):
                value = value[0]  # nn.MultiheadAttention's (output, weights)
            # one image's: without the batch axis, unless the value is the network's own (a learnt gate)
            own = done.watch is not None and done.watch.is_own(value)
            shape = list(value.shape[1:] if per_image(value, 1) and not own else value.shape) \
                if isinstance(value, torch.Tensor) else []
            rows.append({"name": name or type(mod).__name__, "op": type(mod).__name__, "shape": shape,
                         "params": count})
        return rows, counted
