"""A ``torch.export`` program (``.pt2``) in the explorer: :class:`ExportedModel`.

The file is read by ``torch.export.load`` once :mod:`cnnlab.pt2_check` has refused what would make it run code from
the file (pickles, native code, shape expressions and guards that are not plain), and a program exported in training
mode is refused (:func:`_check_evaluation_mode`). Its feature maps are the outputs of the graph's convolution,
pooling, normalisation and activation nodes, recorded by an FX interpreter that runs the program node by node (an
exported program has no submodules to hook: every layer is an ATen call in one graph). Cnnlab's own ``.pt2`` exports
carry their class names in ``cnnlab.json``. A program returning a library's output object (Hugging Face's
``ImageClassifierOutput``) is read as the dict of its fields (:func:`_library_outputs_as_dicts`): torch rebuilds that
type only where its library is imported.
"""

from __future__ import annotations

import io
import json
import logging
import zipfile
from collections import Counter, deque
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch._C._export import pt2_archive_constants as pt2

from cnnlab.errors import CnnlabError, listed
from cnnlab.explore.gradcam import is_spatial
from cnnlab.explore.layouts import (
    NCHW,
    SWAPS,
    after,
    as_nchw,
    passed_on,
    permutation,
)
from cnnlab.explore.model import (
    Options,
    Scaling,
    blank_reading,
    read_outputs,
    scaled_as_made,
    square_as_exported,
)
from cnnlab.explore.outputs import logits_count, per_image, squeezed_note, stored_classes
from cnnlab.explore.torch_models import TAIL, TorchModel, first_line, input_spec
from cnnlab.models.summary import MacCounter
from cnnlab.pt2_check import checked_pt2, load_pt2
from cnnlab.report.features import Row

aten = torch.ops.aten
# The arithmetic a network's own scaling of its input is written in (:meth:`ExportedModel._scaling`)
ARITHMETIC = {aten.mul: "mul", aten.div: "div", aten.add: "add", aten.sub: "sub", aten.rsub: "sub"}

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


def _returned(graph: torch.fx.Graph) -> list:
    """The example values (``meta["val"]``: a tensor, or None) of the nodes a program returns, in order."""
    returned: list[torch.fx.Node] = []
    for node in graph.nodes:
        if node.op == "output":
            torch.fx.node.map_arg(node.args, returned.append)
    return [node.meta.get("val") for node in returned]


def _sizes_fixed(graph: torch.fx.Graph) -> bool:
    """Whether every tensor a program returns has sizes fixed at export (none a size the program works out from
    what the picture holds, as a detector's count of boxes after NMS)."""
    return all(isinstance(v, torch.Tensor) and all(isinstance(d, int) for d in v.shape) for v in _returned(graph))


def _batch_size(value):
    """The batch size of a program's input ``value`` (the placeholder's example tensor): a ``torch.SymInt`` where
    the batch is free, an int where export fixed it; None where there is no tensor of an axis."""
    return value.shape[0] if isinstance(value, torch.Tensor) and value.dim() else None


def _run_together(graph: torch.fx.Graph, value) -> bool:
    """Whether a program of free batch, its input ``value`` (the placeholder's example tensor), returns one tensor
    alone, of no axis but K values an image run together (K > 1: its size K times the batch's, as export worked it
    out, a final ``reshape(-1)`` or ``flatten()``), so that one image's K values are that image's alone."""
    size = _batch_size(value)
    returned = _returned(graph)
    out = returned[0] if len(returned) == 1 else None
    if not isinstance(size, torch.SymInt) or not isinstance(out, torch.Tensor) or out.dim() != 1 or \
            not isinstance(out.shape[0], torch.SymInt):
        return False
    ratio = out.shape[0].node.expr / size.node.expr  # sympy's: an integer only where the batch's size is a factor
    return bool(ratio.is_Integer) and int(ratio) > 1


def _where(node: torch.fx.Node) -> str:
    """The module an FX node ran in (its path), or the node's own name (``relu_1``) for an op that the root
    module's forward calls itself, whose path is empty."""
    stack = node.meta.get("nn_module_stack") or {}
    return (list(stack.values())[-1][0] if stack else "") or node.name


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
    size = _batch_size(value)
    bound = program.range_constraints.get(size.node.expr) if isinstance(size, torch.SymInt) else None

    def whole(limit) -> int | None:  # sympy's integers, or torch's unbounded int_oo (no int() of it)
        try:
            return int(limit)
        except (TypeError, ValueError, AttributeError, OverflowError):
            return None

    lower, upper = (whole(bound.lower), whole(bound.upper)) if bound is not None else (None, None)
    return max(1, lower or 1), upper if upper is not None and upper >= max(1, lower or 1) else None


class ExportedModel(TorchModel):
    """A ``torch.export`` program saved with ``torch.export.save`` (see the module docstring)."""

    kind = "torch.export"
    # what _scores_of records of the program's output, as the base class records _outputs and _wrapped_in there:
    # whether its class scores lost the batch axis of its one image (given back there, and said on the page)
    _squeezed = False

    def __init__(self, path: str | Path, options: Options | None = None, folder_classes: tuple[str, ...] = ()):
        options = options or Options()
        path = Path(path)
        self.path, self.name = path, path.name
        extra = {"cnnlab.json": ""}
        data = checked_pt2(path)  # refuses what would make torch.export.load run code from the file
        data, as_dicts, unreadable = _library_outputs_as_dicts(data)
        try:
            with _quiet_export_logs():
                program = load_pt2(data, extra_files=extra)
        except Exception as e:  # not a program, a version it cannot read: one line
            if unreadable:  # torch's own words point at warnings it logged, which are not shown
                raise CnnlabError(f"{path} returns {unreadable[0]}, a type of the library that exported it, which "
                                  "torch.export.load rebuilds only where that library is imported (cnnlab runs no "
                                  "code a file names); expected a program returning tensors, or a tuple, list or "
                                  "dict of them") from None
            raise CnnlabError(f"{path} is not a torch.export program that torch.export.load can read "
                              f"({first_line(e)})") from None
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
        # a program of one image whose outputs have sizes fixed at export (none counts what the picture holds, as
        # a detector's boxes after NMS do): class scores of K values there are its one image's (_scores_of)
        self._one_image = self.batches == (1, 1) and _sizes_fixed(self.graph)
        # a free batch that takes one image, whose scores run together (N x K values for N images, an order the
        # program does not say): run one image at a time, its K values that image's, as a program of one image's
        if self.batches[0] == 1 and self.batches[1] != 1 and _run_together(self.graph, val):
            self.batches, self._one_image = (1, 1), True
        metadata, stored = _cnnlab_metadata(extra["cnnlab.json"], str(path), options.classes is not None)
        self.metadata = metadata  # a cnnlab export's: its run's classes, input, dataset and split records
        options.check_no_scaling_for(metadata, str(path))
        self.spec = square_as_exported(input_spec(options, shape, self._conv_in(), str(path)), metadata)
        self.spec = scaled_as_made(self.spec, options, self._scaling(placeholders[0]), "program")
        # a program exported in half precision (or double) takes images of that type: fed float32, its first
        # layer fails, and a .pt2 has no .float() to mend it
        self.dtype = val.dtype if isinstance(val, torch.Tensor) and val.is_floating_point() else torch.float32
        if self.dtype != torch.float32:
            self.spec = replace(self.spec, dtype=str(self.dtype).removeprefix("torch."))
        count = self._check_classifier(str(path), options)
        read_as = tuple(f"Its output, {kind} (a type of the library that exported it, not imported here), is read as "
                        f"the dict of its fields, {listed(map(repr, fields))}." for kind, fields in as_dicts.items())
        read = "Read with torch.export.load once checked to hold only tensors, operators and size arithmetic (no " \
            "pickles or code)."
        if count is None:  # a network opened for its layers
            self.scoring, self.classes, self.notes = None, (), (read, *read_as, *self._not_a_classifier)
        else:
            self.scoring, self.classes, where = read_outputs(count, options, self._final_op(), stored, folder_classes,
                                                             str(path), "program", sample=self._sample(),
                                                             on_map=self._on_map)
            self.notes = (f"{read} Class names: {where}.", *read_as, *self._outputs_note("program"),
                          *(squeezed_note("program", "output", count) if self._squeezed else ()),
                          *self.scoring.notes())
        notes, self.classes = blank_reading(self, options, "program")
        self.notes += notes

    def _scores_of(self, out: Any) -> Any:
        """The class scores among what the program returned (:meth:`TorchModel._scores_of`); those of a program of
        one image that dropped its batch axis (a final ``squeeze(0)``, ``[0]`` or ``flatten()``: K values, K > 1)
        given it back, ``1 x K``, which ``_squeezed`` records for the page."""
        scores = super()._scores_of(out)
        if self._one_image and not self._not_a_classifier and isinstance(scores, torch.Tensor) and \
                scores.dim() == 1 and scores.shape[0] > 1:
            self._squeezed = True
            return scores[None]
        return scores

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

    def _scaling(self, image: torch.fx.Node) -> Scaling | None:
        """What the program does to its input ``image`` on the way to its first convolution, where that is
        arithmetic with numbers or constant tensors (through casts, copies and permutes), as ``(x - 127.5) / 127.5``
        in a model's own forward; None where the convolution reads it otherwise. As the ONNX kind's
        (:meth:`cnnlab.explore.onnx_model.OnnxModel._scaling`)."""
        scale = {image: Scaling()}
        for node in self.graph.nodes:
            tracked = [n for n in node.all_input_nodes if n in scale]
            if node.op != "call_function" or not tracked:
                continue
            op = getattr(node.target, "overloadpacket", None)
            if op in (aten.conv2d, aten.convolution, aten._convolution):
                return scale.get(node.args[0]) if node.args else None
            done, first = scale[tracked[0]], bool(node.args) and node.args[0] is tracked[0]
            if op in (aten.to, aten._to_copy, aten.clone, aten.contiguous, aten.alias) and first:
                scale[node] = done
            elif op is aten.permute and first and len(node.args) > 1:
                if (permuted := done.permuted(list(node.args[1]))) is not None:
                    scale[node] = permuted
            elif op in ARITHMETIC and len(node.args) == 2 and node.kwargs.get("alpha", 1) == 1:
                other = node.args[1] if first else node.args[0]
                constant = other if isinstance(other, int | float) else self._value(other)
                if isinstance(constant, torch.Tensor):
                    constant = constant.detach().double().numpy()
                # rsub(x, c) is c - x: the input comes first, yet is what is subtracted
                step = None if constant is None else done.step(ARITHMETIC[op], constant, first and op is not aten.rsub)
                if step is not None:
                    scale[node] = step
        return None

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

    def _batch_run(self, n: int) -> int:
        return max(n, self.batches[0])

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
                if chunk.shape[0] != x.shape[0]:  # for the images it ran (a fixed batch), not those it was given
                    logits_count(out, chunk.shape[0], str(self.path), outputs=len(self._outputs) or 1)
                return out
            if out.dim() == 0 or out.shape[0] != chunk.shape[0]:
                # no row per image (a program of one image that drops its batch axis, squeeze(0)): refused for what
                # it returns for the images it was given, not cut into rows
                logits_count(out, chunk.shape[0], str(self.path), outputs=len(self._outputs) or 1)
            outs.append(out[:real])
        return torch.cat(outs)

    def _stage_pass(self, x: torch.Tensor, keep: Callable[[torch.Tensor], Any] | None = None) -> \
            tuple[list[Row], list[Row]]:
        x, _ = self._padded(x.to(self.dtype))
        rows: list[Row] = []
        # the last spatial values made, for Grad-CAM (none where keep takes less than the values)
        tail: deque[Row] = deque(maxlen=TAIL if keep is None else 0)
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
                    rows.append(Row(label, kind, shown if keep is None else keep(shown)))
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

    def _node_macs(self) -> dict[torch.fx.Node, int]:
        """Each node's MACs for one image, counted by :class:`MacCounter` (torch's own formulas) as the graph runs
        node by node on a blank image (a program that takes no fewer than N runs N copies: the count is divided)."""
        x, _ = self._padded(self.spec.to_input(self.spec.zeros(1)).to(self.dtype))
        macs: dict[torch.fx.Node, int] = {}
        from_image, batch = self.from_image, x.shape[0]

        class Counting(torch.fx.Interpreter):
            def run_node(self, node):
                with MacCounter() as counter:
                    out = super().run_node(node)
                macs[node] = counter.macs // batch if node in from_image else counter.macs
                return out

        with torch.no_grad():
            Counting(self.module).run(x)
        return macs

    def layers(self) -> list[dict[str, Any]]:
        rows, counted = [], set()
        macs, pending = self._node_macs(), 0  # the MACs of the nodes since the last row that are no row
        for node in self.graph.nodes:
            if node.op != "call_function":
                continue
            pending += macs.get(node, 0)
            # Parameters only, each once: batch norm's running statistics are buffers, as a module counts them.
            # (an einsum's or a cat's operands are a list argument)
            weights = [v for v in (self._value(a) for a in node.all_input_nodes)
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
            rows.append({"name": _where(node), "op": getattr(packet, "__name__", str(node.target)), "shape": shape,
                         "params": params, "macs": pending})
            pending = 0
        if rows:  # the nodes after the last row (a matrix product with a buffer): theirs are the last row's
            rows[-1]["macs"] += pending
        return rows
