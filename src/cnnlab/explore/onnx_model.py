"""Any ONNX image classifier in the explorer: read with ``onnx``, run with onnxruntime, looked inside.

The file is parsed by ``onnx.load`` (a protobuf: nothing in it is executed) and never changed on disk; external
data is read for dense tensors only, from the model's folder (a sparse tensor's is refused). A copy of
the graph gets the outputs of its convolution, pooling, normalisation and activation nodes as extra graph
outputs, so one onnxruntime run gives the logits and every stage's feature map. What the page shows is read from
the graph where it says it:

* the image input: the one graph input that is not an initializer, rank 4, float32; its layout is NCHW or NHWC by
  where the channels sit (the first convolution's weight says how many there are; where no axis holds
  that many, the axis of 1 or 3), else ``--layout``;
* its height and width: the static ones, square or not, else ``--input-size`` (a dynamic side without it is
  refused);
* scaling: cnnlab's own exports say in their metadata that they take pixels / 255 with the normalisation inside;
  a graph that scales its input itself before its first Conv (a Keras model's ``Rescaling`` and ``Normalization``
  layers, a Core ML conversion's ImageScaler) takes the pixel range that scaling is made for
  (:meth:`OnnxModel._scaling`); any other graph takes RGB pixels / 255 unless ``--pixel-range``, ``--bgr``,
  ``--mean`` and ``--std`` say more (the page states which);
* class names: ``--classes``, else the ``cnnlab.classes`` metadata (or Ultralytics' ``names``), else the image
  folder's class subfolders; an Ultralytics export's ``imgsz`` sizes its dynamic input and its ``task`` classify
  crops pictures as Ultralytics does;
* the layer table: output shapes from ONNX shape inference (the input fixed to batch 1 at the chosen size), and
  from one run where it leaves a dimension unknown (:meth:`OnnxModel._run_shapes`); parameters from the
  initializers each node reads; first-layer kernels: the first Conv's weight initializer;
* each layer's name: the path of the module it ran in, where torch's exporter wrote it into the node's metadata
  (``layer1.0.conv2``; ``torch.onnx.export(dynamo=True)`` names the nodes themselves by their op, ``node_Conv_292``),
  else the node's name (the older exporter's ``/layer1/layer1.0/conv2/Conv``), numbered ``#2``, ``#3`` where several
  share one.

There are no gradients, so the attribution is occlusion sensitivity (:func:`cnnlab.explore.model.occlusion`).
"""

from __future__ import annotations

import ast
import functools
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from cnnlab.errors import CnnlabError, summary
from cnnlab.explore.hugging_face import hugging_face_carried, input_sides
from cnnlab.explore.layouts import after, as_nchw, permutation
from cnnlab.explore.model import (
    Carried,
    InputSpec,
    Options,
    Scaling,
    blank_reading,
    expected_model,
    framed_as_carried,
    occlusion_pngs,
    opened_as_network,
    read_as_network,
    read_outputs,
    scaled_as_made,
    square_as_exported,
    ultralytics_fit,
)
from cnnlab.explore.onnx_macs import node_macs
from cnnlab.explore.outputs import (
    LISTED,
    OUTPUT,
    NotAClassifier,
    indexed_names,
    literal,
    logits_count,
    map_hint,
    on_a_map,
    outputs_note,
    per_image,
    scales_hint,
    squeezed_note,
    stored_classes,
)
from cnnlab.picture import PAD
from cnnlab.report.features import Row

# The nodes whose outputs are feature maps (the ops the page's rows show); the rest (Reshape, Add, Concat, ...)
# appear in the layer table only.
STAGE_OPS = frozenset({
    "Conv", "ConvTranspose", "ConvInteger", "QLinearConv",
    "MaxPool", "AveragePool", "GlobalAveragePool", "GlobalMaxPool", "LpPool",
    "BatchNormalization", "InstanceNormalization", "LayerNormalization", "GroupNormalization", "LRN",
    "Relu", "LeakyRelu", "PRelu", "Elu", "Selu", "Celu", "Sigmoid", "HardSigmoid", "HardSwish", "Tanh", "Clip",
    "Gelu", "Softplus", "Mish",
})
# onnxruntime's optimizer (``SessionOptions.optimized_model_filepath``) writes a Conv and the activation after it as
# one com.microsoft FusedConv (a Conv's inputs and weight, the activation's output) and SiLU as QuickGelu: stages too.
MICROSOFT_STAGES = frozenset({"FusedConv", "QuickGelu", "Gelu"})
# At its highest level on an x86 CPU it also writes convolutions and poolings of this domain: they work on the
# channels in blocks of the CPU's vector width (8 or 16), their weights reordered and padded to those blocks and their
# outputs in that blocked layout, which read as N x C x H x W is a scramble of the maps. A ReorderOutput turns a value
# back to the network's own.
NCHWC = "com.microsoft.nchwc"
FLOAT = 1  # onnx.TensorProto.FLOAT
OLDEST_OPSET = 7  # the oldest ONNX operator set onnxruntime promises to run
# The head Ultralytics' metadata names for RT-DETR (``head``), by which its YOLO(file) picks its RT-DETR predictor
RTDETR_HEAD = "RTDETRDecoder"
# An initializer of more values than this is a weight, whose values shape inference never reads (shapes, axes and
# scales, which it may, are a few values each)
WEIGHT_SIZE = 4096
# The ops of a convolution: ONNX's float and quantized ones, com.microsoft's fused and channels-last ones
CONVOLUTIONS = frozenset({"Conv", "FusedConv", "QLinearConv", "ConvInteger", "NhwcConv"})
# onnx.TensorProto's FLOAT, FLOAT16, DOUBLE, BFLOAT16: the types a trained weight has, and the stage outputs shown as
# feature maps (a quantized graph's int8 maps, QLinearConv's, are left to the layer table)
FLOAT_TYPES = frozenset({1, 10, 11, 16})
# The image inputs a graph may take (onnx.TensorProto's FLOAT, FLOAT16, DOUBLE, UINT8), as numpy names them: a
# graph converted to float16 whole, or one that takes the pixel values themselves and scales them inside
INPUT_TYPES = {1: "float32", 10: "float16", 11: "float64", 2: "uint8"}
# The inputs of quantized ops that are weights and biases; the others are scales and zero points. com.microsoft's
# QGemm is a Linear quantized by onnxruntime (QOperator format); its QLinearAdd and QLinearMul take either operand
# from an initializer (a bias added after its own op, as CNTK's graphs add each Conv's), or both from the image.
QUANTIZED_WEIGHTS = {"QLinearConv": (3, 8), "ConvInteger": (1,), "QLinearMatMul": (3,), "MatMulInteger": (1,),
                     "QGemm": (3, 6), "QLinearAdd": (0, 3), "QLinearMul": (0, 3)}
# The ops of a quantized graph (QDQ, as onnxruntime's static quantization and cnnlab's onnx-int8 export write it; the
# QOperator format; dynamic quantization): onnxruntime fuses a DequantizeLinear -> Conv -> QuantizeLinear into one
# integer QLinearConv, which rounds otherwise than the float Conv it runs where that Conv's output is a graph output.
QUANTIZED_OPS = frozenset({"QuantizeLinear", "DequantizeLinear", "DynamicQuantizeLinear", *QUANTIZED_WEIGHTS})
# Ops that pass a weight on with its values kept, rearranged or cast: CNTK's graphs (the ONNX Model Zoo's mnist-8,
# emotion-ferplus) reshape a Dense layer's weight, 16 x 4 x 4 x 10, to the 256 x 10 their MatMul reads, and a graph
# converted to float16 but for some ops casts those ops' weights back to float32. The weight is that layer's
# parameter; the Reshape or Cast is no layer.
REARRANGING = frozenset({"Reshape", "Flatten", "Squeeze", "Unsqueeze", "Transpose", "Cast"})
# Ops whose float constants are no parameters: the normalisation constants an input is shifted and divided by, and
# an Upsample's or Resize's scales (and region of interest).
NOT_PARAMETERS = frozenset({"Sub", "Div", "Upsample", "Resize"})
# A gate multiplied by its own input is one activation: x * sigmoid(x) is SiLU (Swish), x * hardsigmoid(x) HardSwish.
GATES = {"Sigmoid": "silu", "HardSigmoid": "hardswish"}
# Ops that pass their input's values on unchanged (a quantized graph's QuantizeLinear and DequantizeLinear, up to
# their rounding): a Softmax before them still makes the output probabilities.
PASS_THROUGH = frozenset({"Identity", "Reshape", "Flatten", "Squeeze", "Unsqueeze", "Cast", "Dropout",
                          "QuantizeLinear", "DequantizeLinear"})
# com.microsoft's integer Softmax and Sigmoid, which onnxruntime's QOperator quantization writes for ONNX's (the ONNX
# Model Zoo's -int8 AlexNet, CaffeNet, GoogLeNet end in a QLinearSoftmax): probabilities as theirs are.
QUANTIZED_FINAL = {"QLinearSoftmax": "Softmax", "QLinearSigmoid": "Sigmoid"}
# Where torch.onnx.export(dynamo=True) writes the modules a node ran in, outermost first, then the FX node's own
# name: name_scopes as a list's repr, "['', 'layer1', 'layer1.0', 'layer1.0.relu', 'relu_1']", and namespace as
# "path: class" parts, ": torchvision.models.resnet.ResNet/layer1: ...Sequential/.../relu_1: aten.relu.default".
NAME_SCOPES, NAMESPACE = "pkg.torch.onnx.name_scopes", "namespace"


def _weightless(model):
    """A copy of ``model``'s graph for ONNX shape inference, without the values of its weights (initializers of more
    than :data:`WEIGHT_SIZE` values keep their name, type and dims), nor the shapes it states beside its inputs and
    outputs (``value_info``). Shape inference reads no more; a copy of the whole file, which the inference
    serialises and parses twice more, held a large graph's weights (the ONNX Model Zoo's AlexNet and VGG files are
    hundreds of MB) several times over at once."""
    import onnx

    copy = onnx.ModelProto(ir_version=model.ir_version)
    copy.opset_import.extend(model.opset_import)
    copy.functions.extend(model.functions)
    graph, source = copy.graph, model.graph
    graph.name = source.name
    for field in ("node", "input", "output", "sparse_initializer"):
        getattr(graph, field).extend(getattr(source, field))
    for tensor in source.initializer:
        if int(np.prod(tensor.dims)) > WEIGHT_SIZE:
            graph.initializer.add(name=tensor.name, data_type=tensor.data_type, dims=tensor.dims)
        else:  # a shape, axes, scales: values data propagation may read
            graph.initializer.append(tensor)
    return copy


def _dims(value_info) -> list[int | str | None]:
    """A value's shape: ints for static dims, the dim_param name (or None) for dynamic ones. A negative dim_value is
    a dynamic one (paddle2onnx and older converters write -1 for "any"; onnxruntime reads it so)."""
    shape = value_info.type.tensor_type.shape
    if not value_info.type.tensor_type.HasField("shape"):
        return []
    return [d.dim_value if d.HasField("dim_value") and d.dim_value >= 0 else (d.dim_param or None) for d in shape.dim]


def _zipmap_labels(graph, scores: str) -> list[str] | None:
    """The class labels of a ZipMap that turns the class scores ``scores`` into maps (a scikit-learn classifier as
    skl2onnx converts it: its ``classes_``, strings or integers, in the scores' order), else None."""
    for node in graph.node:
        if node.op_type == "ZipMap" and node.input[:1] == [scores]:
            for attribute in node.attribute:
                if attribute.name == "classlabels_strings" and attribute.strings:
                    return [label.decode("utf-8", "replace") for label in attribute.strings]
                if attribute.name == "classlabels_int64s" and attribute.ints:
                    return [str(label) for label in attribute.ints]
    return None


def _scores_output(graph, producers: dict) -> tuple[str, str]:
    """The graph's output read as the class scores, and what the page says of it where that is not its first.

    A scikit-learn classifier as skl2onnx converts it returns each image's class first (``label``: N integers, or
    strings), then its probabilities: an N x K tensor (``probabilities``, with ``zipmap=False``), or a ZipMap's
    sequence of maps from class to probability (``output_probability``), whose input is that tensor. Those are the
    class scores; the first output is anything else's (the graph's only output, or a detector's boxes) as before."""
    first, *rest = graph.output
    label = first.type.tensor_type
    if not first.type.HasField("tensor_type") or label.elem_type in FLOAT_TYPES or len(_dims(first)) != 1:
        return first.name, ""
    found = [(o.name, f"its {o.name!r} (N x classes)") for o in rest
             if o.type.HasField("tensor_type") and o.type.tensor_type.elem_type in FLOAT_TYPES and len(_dims(o)) == 2]
    found += [(node.input[0], f"the N x classes tensor {node.input[0]!r} that its {o.name!r} turns into a sequence "
               "of maps (a ZipMap's)") for o in rest if (node := producers.get(o.name)) is not None
              and node.op_type == "ZipMap"]
    if len(found) != 1:
        return first.name, ""
    name, what = found[0]
    return name, (f"The graph has {len(graph.output)} outputs: its first, {first.name!r}, is each image's class "
                  f"(a scikit-learn classifier's, as skl2onnx converts it); {what} is read as the class scores.")


def _listed_beside(count: int, others: list[list]) -> bool:
    """Whether ``count`` values of one image come beside outputs of ``others`` shapes that hold a row for each of
    them (a detector's ``count x 4`` boxes beside its ``count`` scores, the batch axis dropped): a list of what the
    image holds, not its class scores."""
    return any(len(dims) >= 2 and dims[0] == count for dims in others)


def _type_name(elem: int) -> str:
    """An ``onnx.TensorProto`` element type as the user reads it: ``"double"``, ``"int64"``."""
    from onnx import TensorProto

    return TensorProto.DataType.Name(elem).lower() if elem in TensorProto.DataType.values() else f"ONNX type {elem}"


def _shape(dims) -> str:
    return " x ".join(map(str, dims))


def _load(path: Path):
    import onnx

    try:
        model = onnx.load(str(path))
    except Exception as e:  # a protobuf DecodeError, a truncated file, missing external data: all one line
        raise CnnlabError(f"{path} is not an ONNX model that onnx can read ({summary(e)})") from None
    # onnx.load reads the external data of dense tensors (initializers, attribute tensors) from the model's folder,
    # checking each path; it leaves a sparse tensor's where it is. onnxruntime, handed the model as bytes, would read
    # what is left relative to the working directory: a file of the user's (a key, a token) shown on the page.
    for tensor, sparse in _tensors(model):
        if tensor.data_location == onnx.TensorProto.EXTERNAL:
            location = next((e.value for e in tensor.external_data if e.key == "location"), "")
            raise CnnlabError(f"{path}: {'sparse ' * sparse}tensor {tensor.name!r} keeps its data in another file "
                              f"({location!r}), which cnnlab does not read; it reads external data only for dense "
                              "tensors, from the model's folder: expected that tensor's data inside the model file")
    return model


def _tensors(message) -> Iterator[tuple[Any, bool]]:
    """Every ``TensorProto`` an ONNX protobuf message holds, however deep, and whether a sparse tensor holds it:
    initializers and sparse initializers (values and indices), node attributes (``t``, ``tensors``,
    ``sparse_tensor``, ``sparse_tensors``), the subgraphs of If, Loop and Scan, functions. Walked by the message's
    own fields, so that none is missed."""
    from google.protobuf.message import Message
    from onnx import SparseTensorProto, TensorProto

    for field, value in message.ListFields():
        if field.message_type is None:  # numbers, strings, bytes
            continue
        for item in (value,) if isinstance(value, Message) else value:
            if isinstance(item, TensorProto):
                yield item, isinstance(message, SparseTensorProto)
            else:
                yield from _tensors(item)


class OnnxModel:
    """An ONNX image classifier (see the module docstring)."""

    kind = "ONNX"
    tta = False

    def __init__(self, path: str | Path, options: Options | None = None, folder_classes: tuple[str, ...] = ()):
        try:
            import onnxruntime as ort
            from onnx import TypeProto, helper
        except ImportError:
            raise CnnlabError("opening an ONNX model needs onnx and onnxruntime: pip install 'cnnlab[export]'") \
                from None
        options = options or Options()
        path = Path(path)
        self.path, self.name = path, path.name
        model = _load(path)
        graph = model.graph
        if not len(graph.node):
            raise CnnlabError(f"{path} holds no ONNX graph (no nodes): expected an image classifier")
        self.initializers = {t.name: t for t in graph.initializer}
        self.nodes = list(graph.node)  # the graph as read (the session's copy gets extra outputs)
        self.producers = {name: node for node in self.nodes for name in node.output}  # each value's node
        self.metadata = {p.key: p.value for p in model.metadata_props}
        self.carried = _carried(self.metadata, path, graph)
        self.input_name, self.spec = self._input_spec(graph, options)
        dims = _dims(next(i for i in graph.input if i.name == self.input_name))
        if dims[0] == 0:  # onnxruntime takes no image at all
            raise CnnlabError(f"{path} fixes the batch of input {self.input_name!r} "
                              f"({_shape(dims)}) to 0 images; expected 1 or more, or a free batch")
        self.batch = dims[0] if isinstance(dims[0], int) and dims[0] > 0 else None  # a fixed batch size, or None
        options.check_no_scaling_for(self.metadata, str(path))
        self.spec = square_as_exported(self.spec, self.metadata)
        self.spec = framed_as_carried(self.spec, self.carried)
        network = read_as_network(options) or None  # what the page says of a network that is no classifier
        self.output_name, scored_note = (graph.output[0].name, "") if network else \
            _scores_output(graph, self.producers)
        others = [o.name for o in graph.output if o.name != self.output_name]  # before the stages' are added below
        shapes, types = self._infer_shapes(model)
        self.returned = [o.name for o in graph.output]  # the graph's own outputs, a network's rows
        # an output whose first axis is named free where the input's batch is fixed (a detector's K boxes after NMS)
        # lists what the image holds, one row or more: it is no batch axis, not even where one was found
        self._listed = {o.name for o in graph.output
                        if self.batch is not None and (first := _dims(o)[:1]) and isinstance(first[0], str)}
        # An output that is no tensor (a ZipMap's sequence of maps) is none of the page's rows, and is left out of
        # the copy the session runs (numpy's tensors were expected of every one: an internal error); a ZipMap's input
        # is returned in its place where it is the class scores.
        tensors = [o for o in graph.output if o.type.HasField("tensor_type")]
        untensored = [o.name for o in graph.output if not o.type.HasField("tensor_type")]
        if untensored or self.output_name not in self.returned:
            del graph.output[:]
            graph.output.extend(tensors)
            if self.output_name not in self.returned:
                graph.output.append(helper.make_tensor_value_info(self.output_name, types[self.output_name], None)
                                    if self.output_name in types else
                                    helper.make_value_info(self.output_name, TypeProto()))
            self.returned = [o.name for o in graph.output]
        # each output's shape, inferred or declared (the graph's own, before the stages' are added below)
        returned_dims = {o.name: shapes.get(o.name) or _dims(o) for o in graph.output}
        out = returned_dims[self.output_name]
        # its element type, for the refusal of what is no class scores
        element = types.get(self.output_name) or \
            next(o for o in graph.output if o.name == self.output_name).type.tensor_type.elem_type
        # Class scores of one image at a time that dropped the batch axis (a final Squeeze, a Reshape to [-1]: K
        # values for the one image) get it back. Fixed to one image, a static K says so here; of a free batch, the
        # run of one image below tells K (more than one value) from one value an image. K values beside outputs of
        # K rows are a detector's K detections (scores beside boxes), opened as the network they are.
        self.squeezed = network is None and self.batch == 1 and len(out) == 1 and isinstance(out[0], int) and \
            out[0] > 1 and not _listed_beside(out[0], [dims for name, dims in returned_dims.items()
                                                         if name != self.output_name])
        deferred = network is None and self.batch is None and len(out) == 1
        # class scores on a 1 x 1 map (a convolutional head's, unflattened) are read as N x K (class_rows)
        if network is None and out and not self.squeezed and not deferred and \
                (len(out) not in (2, 4) or len(out) == 4 and list(out[2:]) != [1, 1] or
                 (isinstance(out[1], int) and out[1] < 1)):
            network = self._no_class_scores(out, element, list(returned_dims.values()), options)
        top_k = _last_op(self.producers, self.output_name, PASS_THROUGH | {"Softmax", "LogSoftmax", "Sigmoid"})
        # each image's own order: no column is one class. Beside boxes (N x k x 4), they are a detector's k best
        # detections (an end-to-end export's top-k of any anchor and class), which the page draws by their names
        boxes = [o.name for o in graph.output[1:] if len(dims := shapes.get(o.name) or _dims(o)) == 3 and dims[2] == 4]
        if network is None and top_k is not None and top_k.op_type == "TopK" and boxes:
            found = (f"its output {self.output_name!r} is a TopK's, each image's k largest scores in order, beside "
                     f"boxes ({', '.join(boxes)}): a detector's k best detections")
            network = opened_as_network(NotAClassifier(str(path), found, "N x classes"), options, self.name)
        if network is None and top_k is not None and top_k.op_type == "TopK":
            indices = f" (its output {top_k.output[1]!r})" if len(top_k.output) > 1 and top_k.output[1] else ""
            raise CnnlabError(f"{path}: its output {self.output_name!r} is a TopK's, each image's k largest scores "
                              f"in order, whose classes are the TopK's indices{indices}; expected N x classes of "
                              "scores in the classes' order (the graph before its TopK)")
        self.shapes = shapes
        if self.batch in (None, 1):
            self.shapes.update(self._run_shapes(model))
        self.layouts = self._read_layouts()  # each value's, read once: the graph does not change
        self.from_image = self._from_image()
        blocked = self._blocked()
        self.stage_nodes = [n for n in self.nodes if _stage_op(n) and n.output and n.output[0]
                            and types.get(n.output[0], FLOAT) in FLOAT_TYPES and n.output[0] in self.from_image
                            and n.output[0] not in blocked]
        self.shown = self._shown_values(graph)
        self.stage_nodes = [n for n in self.stage_nodes if id(n) in self.shown]
        # A quantized graph's class scores come from a session of the graph as it is: the stages' outputs added
        # below keep onnxruntime from fusing its quantized ops, and the scores would be another computation's
        # (a logit 1.1 away for mobilenet_v3_small quantized by onnxruntime), not what the file gives deployed.
        quantized = any(node.op_type in QUANTIZED_OPS or node.op_type.startswith("QLinear") for node in self.nodes)
        as_is = model.SerializeToString() if quantized else None
        # Every stage's first output becomes a graph output of a copy of the model (the file is not touched), of
        # the type shape inference gave it; untyped where it gave none (after an op of com.microsoft's, which it does
        # not know), so that onnxruntime takes the node's own: declared float32, a float16 value was refused.
        known = {o.name for o in graph.output}
        for node in self.stage_nodes:
            name, _ = self.shown[id(node)]
            if name not in known:
                graph.output.append(helper.make_tensor_value_info(name, types[name], None) if name in types else
                                    helper.make_value_info(name, TypeProto()))
                known.add(name)
        options_ = ort.SessionOptions()
        options_.log_severity_level = 4  # its errors are raised, and said in one line; its log would repeat them
        try:
            self.session = ort.InferenceSession(model.SerializeToString(), options_,
                                                providers=["CPUExecutionProvider"])
            # the graph as it is, for the class scores (the same session where the outputs added change nothing)
            self.scorer = self.session if as_is is None else \
                ort.InferenceSession(as_is, options_, providers=["CPUExecutionProvider"])
        except Exception as e:  # onnxruntime's own errors (unsupported op, invalid graph)
            raise CnnlabError(f"onnxruntime {ort.__version__} cannot run {path} ({summary(e, 200)})"
                              f"{_too_old(model)}") from None
        self.output_names = [o.name for o in self.session.get_outputs()]
        try:
            probe = self._run(self.spec.zeros(1))
        except Exception as e:  # onnxruntime's own error classes: a graph that takes only some sizes (a Gemm of a
            # fixed width after a Flatten) given another by --input-size, or one that fails on any input
            hint = "; pass an --input-size the graph allows" if self.spec.origin.get("size") == "flags" else ""
            raise CnnlabError(f"{path} failed on a {self.spec.shape_text(1)} input in onnxruntime "
                              f"({summary(e, 200)}){hint}; expected {expected_model(options)}") from None
        if deferred and probe[self.output_name].ndim == 1 and probe[self.output_name].shape[0] > 1 and \
                not _listed_beside(probe[self.output_name].shape[0], [list(value.shape) for name, value in probe.items()
                                                                      if name in others]):
            self.squeezed, self.batch = True, 1  # no batch axis: one image at a time, each one's given back
            probe[self.output_name] = probe[self.output_name][None]
        elif deferred:  # one value for one image (the batch's own axis), or a detector's K beside their boxes
            network = self._no_class_scores(out, element, list(returned_dims.values()), options)
        if network is None:
            try:
                count = logits_count(probe[self.output_name], 1, f"{path} (output {self.output_name!r})")
            except NotAClassifier as e:
                network = opened_as_network(e, options, self.name)
        for name, value in probe.items():  # where shape inference gave none (com.microsoft's ops have none): the run's
            self.shapes[name] = self.shapes.get(name) or list(value.shape)
        one_at_a_time = self._batch_trouble() if self.batch is None else None
        if one_at_a_time:  # a batch axis declared free can still be fixed inside (a Reshape to [1, -1])
            self.batch = 1
        read = "Read with onnx and run with onnxruntime; nothing in the file is executed as code."
        if network is None:
            stored, stored_in = self.carried.classes, self.carried.classes_from  # --classes comes first
            if options.classes is None and "cnnlab.classes" in self.metadata:
                stored = stored_classes(self.metadata["cnnlab.classes"], f"{path}'s metadata cnnlab.classes")
                stored_in = "the model file"
            elif stored is None and (labels := _zipmap_labels(graph, self.output_name)) and len(labels) == count:
                stored, stored_in = labels, "the graph's ZipMap (its class labels)"
            self.scoring, self.classes, where = read_outputs(count, options,
                                                             _final_op(self.producers, self.output_name), stored,
                                                             folder_classes, str(path), "graph", stored_in,
                                                             sample=self._sample(),
                                                             on_map=on_a_map(probe[self.output_name]))
            self.notes = (f"{read} Class names: {where}.",
                          "No gradients here: the attribution is occlusion sensitivity (a patch hidden at a time).",
                          *self.scoring.notes())
        else:
            self.scoring, self.classes, self.notes = None, (), (read, *network)
            if untensored:
                self.notes += (f"Its output{'s' if len(untensored) > 1 else ''} {', '.join(map(repr, untensored))}, no "
                               "tensor (a sequence or a map), is not shown.",)
        if one_at_a_time:
            self.notes += (f"The graph's batch axis is free, but {one_at_a_time}: images are run one at a time.",)
        if self.squeezed and network is None:
            self.notes += squeezed_note("graph", f"output {self.output_name!r}", count)
        if self.scorer is not self.session:
            self.notes += (f"A quantized graph: its {'outputs' if network else 'class scores'} are onnxruntime's for "
                           "the file as it is; its feature maps come from a run that returns them, in which "
                           "onnxruntime does not fuse the quantized ops, so they are the unfused ops' values.",)
        if blocked:
            self.notes += ("onnxruntime's graph optimized for one kind of CPU (com.microsoft.nchwc ops): their "
                           "convolutions work on the channels in blocks, their outputs in that blocked layout and "
                           "their weights reordered and padded to whole blocks (counted as the file holds them). The "
                           "rows show the values where the graph turns them back (ReorderOutput)"
                           f"{'; there are no first-layer kernels' if self._first_conv_weight() is None else ''}. The "
                           "graph before optimization shows every stage.",)
        if network is None:  # a network's outputs are shown, every one
            self.notes += (scored_note,) if scored_note else \
                outputs_note("graph", repr(self.output_name), list(map(repr, others)))
        notes, self.classes = blank_reading(self, options, "graph", self.carried.classes or (),
                                            self.carried.classes_from)
        self.notes += notes

    def _no_class_scores(self, out: list, element: int, outputs: list[list], options: Options) -> tuple[str, ...]:
        """Refuses the graph's scored output, of shape ``out`` and ``onnx.TensorProto`` element type ``element``
        among the graph's outputs of ``outputs`` shapes, as no class scores (one line naming its shape), or, where
        ``options`` open any network, returns what the page says of it
        (:func:`cnnlab.explore.model.opened_as_network`)."""
        from onnx import helper

        # (a float type as float32: numpy has no bfloat16, which onnx stores as uint16)
        dtype = helper.tensor_dtype_to_np_dtype(element).name if element not in (0, *FLOAT_TYPES) else "float32"
        pixels = scales_hint([d for d in outputs if d]) or (map_hint(out, dtype) if len(out) == 4 else "")
        of = f" of {dtype}" if dtype != "float32" else ""
        # a 1-D output's one axis is the batch's: "shape 1" would read as one class; but not where it holds another
        # count than the images it takes (10 values for 2 images: the images' scores run together, their order
        # unknown; 10 for one, beside 10 x 4 boxes: a detector's)
        images = f"the {self.batch} images it takes at once (no axis of them)" if self.batch and self.batch > 1 else \
            "one image (no batch axis)"
        shape = f"{out[0]}{of} for {images}" if len(out) == 1 and \
            isinstance(out[0], int) and out[0] != (self.batch or 1) else \
            f"N (one value an image, no class axis){of}" if len(out) == 1 else f"{' x '.join(str(d) for d in out)}{of}"
        return opened_as_network(NotAClassifier(str(self.path), f"its output {self.output_name!r} has shape {shape}",
                                                "N x classes", pixels), options, self.name)

    # ------------------------------------------------------------------------------------------------- reading
    def _input_spec(self, graph, options: Options) -> tuple[str, InputSpec]:
        inputs = [i for i in graph.input if i.name not in self.initializers]
        if len(inputs) != 1:
            raise CnnlabError(f"{self.path} has {len(inputs)} inputs ({', '.join(i.name for i in inputs)}), "
                              "expected one image input")
        value = inputs[0]
        dims = _dims(value)
        elem = value.type.tensor_type.elem_type
        if len(dims) != 4 or elem not in INPUT_TYPES:
            shown = " x ".join(str(d) for d in dims) or "no shape"
            raise CnnlabError(f"{self.path} has no image input: {value.name!r} is {shown} of {_type_name(elem)}, "
                              f"expected N x C x H x W or N x H x W x C of {', '.join(INPUT_TYPES.values())}")
        dtype = INPUT_TYPES[elem]
        # normalised or scaled pixels are no bytes (--bgr and --pixel-range 0-255 say nothing against them)
        given = [flag for flag in options.scaling_flags() if flag != "--bgr" and
                 (flag, options.pixel_range) != ("--pixel-range", "0-255")]
        if dtype == "uint8" and given:
            raise CnnlabError(f"{self.path} takes uint8 pixels (input {value.name!r}), the values themselves, and "
                              f"scales them inside; expected no {'/'.join(given)} for it")
        conv_in = self._first_conv_channels()
        axes = {"NCHW": dims[1], "NHWC": dims[3]}  # where each layout keeps the channels
        layout, origin = options.layout, {}
        if layout is None:
            fits = [name for name, c in axes.items() if isinstance(c, int) and c == conv_in]
            if not fits:
                # No axis holds the channels of the first convolution (or there is none): it reads what the graph
                # made of the image (a grey picture repeated to an RGB backbone's three channels), so the axis of
                # a grey or RGB picture's channels tells
                fits = [name for name, c in axes.items() if isinstance(c, int) and c in (1, 3)]
            if not fits and self._convolved(value.name):  # no axis static (Hugging Face's exports: num_channels)
                fits = ["NCHW"]
            if len(fits) != 1:
                raise CnnlabError(f"{self.path}: cannot tell the layout of input {value.name!r} "
                                  f"({' x '.join(str(d) for d in dims)}); pass --layout NCHW or NHWC")
            layout, origin["layout"] = fits[0], "graph"
        else:
            origin["layout"] = "flags"
        c_dim, h_dim, w_dim = (dims[1], dims[2], dims[3]) if layout == "NCHW" else (dims[3], dims[1], dims[2])
        other = "NHWC" if layout == "NCHW" else "NCHW"
        # refused where the other layout's axis holds the first convolution's channels: the graph says otherwise
        if origin["layout"] == "flags" and conv_in and isinstance(c_dim, int) and c_dim != conv_in and \
                axes[other] == conv_in:
            raise CnnlabError(f"--layout {layout} reads input {value.name!r} ({' x '.join(str(d) for d in dims)}) as "
                              f"{c_dim} channels, but its first convolution takes {conv_in}; expected --layout "
                              f"{other}, or no --layout (the graph tells)")
        channels = c_dim if isinstance(c_dim, int) else conv_in
        if not channels:
            raise CnnlabError(f"{self.path}: the channels of input {value.name!r} are dynamic and no convolution "
                              "says how many it takes")
        # What the file or its folder says of how it is fed (self.carried) comes after the flags: its size where the
        # graph's is dynamic and no flag gives one, its normalisation where no flag says how pixels become its input
        carried = self.carried
        sized = carried.size is not None and options.input_size is None and \
            not all(isinstance(d, int) for d in (h_dim, w_dim))
        normalised = carried.mean is not None and not options.scaling_flags() and dtype != "uint8" and \
            {len(carried.mean), len(carried.std)} <= {1, channels}  # (a graph of bytes scales them itself)
        given = replace(options, **({"input_size": carried.size} if sized else {}),
                        **({"mean": carried.mean, "std": carried.std} if normalised else {}))
        spec = given.spec(channels, h_dim, w_dim, layout, origin, str(self.path), "graph")
        spec = replace(spec, origin={**spec.origin, **({"size": carried.size_from} if sized else {}),
                                     **({"normalisation": carried.mean_from} if normalised else {})})
        if dtype == "uint8":  # the pixel values themselves, rounded after a resize
            spec = replace(spec, pixel_max=255, origin={**spec.origin, "pixel range": "graph's uint8 input"})
        else:
            spec = scaled_as_made(spec, given, self._scaling(value.name), "graph")
        return value.name, replace(spec, dtype=dtype)

    def _scaling(self, name: str) -> Scaling | None:
        """What the graph does to its input ``name`` on the way to its first Conv, where that is Mul, Div, Add or
        Sub by constants, or an ImageScaler (through casts, transposes, resizes and pads), or None where the Conv
        reads it otherwise or nothing does. :meth:`Scaling.pixel_max` then tells the pixel range it is made for."""
        from onnx import helper

        scale = {name: Scaling()}  # each value computed from the input, and how
        for node in self.nodes:  # in the order they run
            tracked = [i for i in node.input if i in scale]
            if not tracked or not node.output:
                continue
            if node.op_type == "Conv":
                return scale.get(node.input[0])
            done = scale[tracked[0]]
            # a resize of a * x + b is a * resized x + b; a Pad only adds a border (Keras's "same" padding is one)
            if node.op_type in ("Cast", "Identity", "Resize", "Pad") and node.input[0] == tracked[0]:
                scale[node.output[0]] = done
            elif node.op_type == "Transpose":
                perm = next((list(attr.ints) for attr in node.attribute if attr.name == "perm"), [3, 2, 1, 0])
                if (permuted := done.permuted(perm)) is not None:
                    scale[node.output[0]] = permuted
            elif node.op_type == "ImageScaler":  # ONNX's experimental op of operator sets 1-9, as Core ML's
                # converters (onnxmltools) write an image input's scale and per-channel bias: scale * x + bias
                attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
                step = done.step("mul", attrs.get("scale", 1.0))
                if step is not None and attrs.get("bias"):
                    step = step.step("add", np.reshape(attrs["bias"], (-1, 1, 1)))  # N x C x H x W: C x 1 x 1
                if step is not None:
                    scale[node.output[0]] = step
            elif node.op_type in ("Mul", "Div", "Add", "Sub") and len(node.input) == 2:
                other = node.input[1] if node.input[0] == tracked[0] else node.input[0]
                constant = self._fixed(other)
                step = None if constant is None else done.step(node.op_type.lower(), constant,
                                                               node.input[0] == tracked[0])
                if step is not None:
                    scale[node.output[0]] = step
            # anything else reads the input otherwise (its Shape, say): a Conv may still read the input itself
        return None

    def _fixed(self, name: str) -> np.ndarray | None:
        """The value of ``name`` where the graph fixes it: an initializer (:meth:`_constant`) or a Constant node's
        tensor."""
        from onnx import numpy_helper

        node = self.producers.get(name)
        if node is not None and node.op_type == "Constant":
            value = next((attr.t for attr in node.attribute if attr.name == "value"), None)
            return None if value is None else numpy_helper.to_array(value)
        return self._constant(name)

    def _convolved(self, name: str) -> bool:
        """Whether the value ``name`` is a Conv's image input as it is, or scaled or cast on the way (Sub, Div, Mul,
        Add, Cast): ONNX's Conv takes N x C x H x W, so such a value is one."""
        values = {name}
        for node in self.nodes:  # in the order they run
            if node.op_type == "Conv" and node.domain in ("", "ai.onnx") and node.input and node.input[0] in values:
                return True
            if node.op_type in ("Sub", "Div", "Mul", "Add", "Cast", "Identity") and values.intersection(node.input):
                values.update(node.output)
        return False

    def _shown_values(self, graph) -> dict[int, tuple[str, str]]:
        """The value each stage's row shows and its kind, by ``id`` of the stage node: the node's own output, or,
        where torch's exporter wrote one operation as several nodes (SiLU as x * sigmoid(x): a Sigmoid, then a
        Mul; a tanh GELU as arithmetic around a Tanh), the operation's output, under torch's name for it (``silu``);
        without that record, a Sigmoid or HardSigmoid whose one reader multiplies it by its own input shows that
        product (``silu``, ``hardswish``: :data:`GATES`). A stage whose operation another stage node already shows
        gets no row of its own."""
        readers: dict[str, dict[int, Any]] = {}
        for node in self.nodes:
            for name in node.input:
                readers.setdefault(name, {})[id(node)] = node
        ends = {o.name for o in graph.output}
        shown: dict[int, tuple[str, str]] = {}
        taken: set[str] = set()
        for node in self.stage_nodes:
            op, last = _torch_op(node), node
            # along the operation's own nodes, as long as each value goes on to one node of it alone
            while op is not None and last.output[0] not in ends:
                after = list(readers.get(last.output[0], {}).values())
                if len(after) != 1 or _torch_op(after[0]) != op or not after[0].output or not after[0].output[0]:
                    break
                last = after[0]
            gated = GATES.get(node.op_type) if op is None and node.output[0] not in ends else None
            after = list(readers.get(node.output[0], {}).values()) if gated else []
            # Without the exporter's record (torch's older exporter, Ultralytics' and Keras's graphs), x * sigmoid(x)
            # is known by its shape: the gate's one reader a Mul of it and the gate's own input
            if len(after) == 1 and after[0].op_type == "Mul" and sorted(after[0].input) == sorted(
                    [node.input[0], node.output[0]]) and after[0].output and after[0].output[0]:
                last, op = after[0], ("", gated)
            value = last.output[0]
            if value not in taken:
                taken.add(value)
                shown[id(node)] = (value, node.op_type if last is node else op[1])
        return shown

    def _first_conv(self) -> tuple[Any, np.ndarray] | tuple[None, None]:
        """The first convolution, a Conv node (or com.microsoft FusedConv), and its constant 4-d weight; none where
        the first convolution's weight is no such kernel (computed in the graph, as a weight-standardised
        convolution's in torch's older exporter; com.microsoft.nchwc's reordered one; a quantized op's integers),
        lest a later layer's kernels be shown as the first layer's."""
        node = self._first_convolution()
        weight = self._constant(node.input[1]) if node is not None and node.op_type in ("Conv", "FusedConv") and \
            _stage_op(node) and node.domain != NCHWC and len(node.input) > 1 else None
        return (node, weight) if weight is not None and weight.ndim == 4 else (None, None)

    def _first_convolution(self) -> Any:
        """The graph's first convolution node, of whatever kind (:data:`CONVOLUTIONS`), or None."""
        return next((node for node in self.nodes if node.op_type in CONVOLUTIONS), None)

    def _first_conv_weight(self) -> np.ndarray | None:
        return self._first_conv()[1]

    def _first_conv_channels(self) -> int | None:
        """The input channels of the first convolution: its weight holds in_channels / group of them; a quantized
        one's integer weight (QLinearConv's, ConvInteger's: :data:`QUANTIZED_WEIGHTS`) says so as well as a float
        kernel does."""
        from onnx import helper

        node, weight = self._first_conv()
        if weight is not None:
            per_group = weight.shape[1]
        else:
            node = self._first_convolution()
            inputs = QUANTIZED_WEIGHTS.get(node.op_type) if node is not None else None
            stored = self.initializers.get(node.input[inputs[0]]) if inputs and inputs[0] < len(node.input) else None
            if stored is None or len(stored.dims) != 4:
                return None
            per_group = stored.dims[1]
        group = next((helper.get_attribute_value(a) for a in node.attribute if a.name == "group"), 1)
        return int(per_group) * int(group)

    def _constant(self, name: str) -> np.ndarray | None:
        """An initializer's value, or the float value of a quantized one a DequantizeLinear node reads (a QDQ graph,
        as cnnlab's onnx-int8 export: ``(q - zero_point) * scale``, per tensor or per channel of ``axis``)."""
        from onnx import helper

        if name in self.initializers or name in self._copies:
            return self._array(self._copies.get(name, name))
        node = self.producers.get(name)
        if node is None or node.op_type != "DequantizeLinear" or not all(i in self.initializers for i in node.input):
            return None
        q, scale, *zero = (self._array(i).astype(np.float32) for i in node.input)
        zero = zero[0] if zero else np.zeros_like(scale)
        scales = scale.shape
        try:
            if scale.ndim == 1 and q.ndim > 1:  # per channel of the axis
                axis = next((helper.get_attribute_value(a) for a in node.attribute if a.name == "axis"), 1)
                shape = [1] * q.ndim
                shape[axis] = -1
                scale, zero = scale.reshape(shape), zero.reshape(shape)
            return (q - zero) * scale
        except (ValueError, IndexError) as e:  # numpy's: shapes that do not broadcast, an axis q does not have
            raise CnnlabError(f"{self.path}: the DequantizeLinear of {node.input[0]!r} ({_shape(q.shape)}) cannot "
                              f"apply its scale ({_shape(scales)}) and zero point ({summary(e)}); expected one "
                              "per tensor or one per channel of its axis") from None

    def _array(self, name: str) -> np.ndarray:
        """An initializer's value; one whose data does not fill the dims it declares is refused in one line."""
        from onnx import numpy_helper

        tensor = self.initializers[name]
        try:
            return numpy_helper.to_array(tensor)
        except Exception as e:  # numpy's "buffer size must be a multiple of element size", "cannot reshape array"
            raise CnnlabError(f"{self.path}: initializer {name!r} does not hold the {_shape(tensor.dims)} "
                              f"{_type_name(tensor.data_type)} values it declares ({summary(e)}); expected its data "
                              "to fill its dims") from None

    def _infer_shapes(self, model) -> tuple[dict[str, list], dict[str, int]]:
        """Every value's shape with the input fixed to one image at the chosen side (ONNX shape inference), and its
        element type (``onnx.TensorProto`` numbering) where inference gave one."""
        import onnx

        fixed = _weightless(model)
        value = next(i for i in fixed.graph.input if i.name == self.input_name)
        (h, w), c = self.spec.hw, self.spec.channels
        wanted = [1, c, h, w] if self.spec.layout == "NCHW" else [1, h, w, c]
        for dim, v in zip(value.type.tensor_type.shape.dim, wanted, strict=True):
            dim.Clear()
            dim.dim_value = v
        try:
            inferred = onnx.shape_inference.infer_shapes(fixed, data_prop=True)
        except Exception:  # shape inference is best effort: the table then shows shapes from a run
            return {}, {}
        values = [*inferred.graph.value_info, *inferred.graph.output]
        return ({v.name: _dims(v) for v in values},
                {v.name: v.type.tensor_type.elem_type for v in values if v.type.tensor_type.elem_type})

    # ----------------------------------------------------------------------------------------------- running
    def _fed(self, images: torch.Tensor) -> np.ndarray:
        """uint8 ``N x C x H x W`` images as the graph takes them (:meth:`InputSpec.to_input`), in its own input
        type: uint8 pixels are rounded back from a resize's blend of them."""
        x = self.spec.to_input(images).numpy()
        return x.round().clip(0, 255).astype(np.uint8) if self.spec.dtype == "uint8" else \
            x.astype(self.spec.dtype, copy=False)

    def _run_shapes(self, model) -> dict[str, list[int]]:
        """The shapes shape inference left unknown of the layer table's values, from one run of a copy of the graph
        on a black picture with those values as outputs; none where that run fails (shape inference's then stand).

        Padding computed from the input's shape at run time (Keras's "same" padding: Shape, Gather, Concat, Pad)
        leaves every shape after it symbolic (``unk__4``), as in most of a Keras MobileNetV3's layer table."""
        import onnxruntime as ort
        from onnx import ModelProto, TypeProto, helper

        names = [node.output[0] for node, _ in self._table if node.output and node.output[0] and
                 not all(isinstance(d, int) for d in self.shapes.get(node.output[0]) or [None])]
        if not names:
            return {}
        copy = ModelProto()
        copy.CopyFrom(model)
        known = {o.name for o in copy.graph.output}
        copy.graph.output.extend(helper.make_value_info(name, TypeProto()) for name in names if name not in known)
        options = ort.SessionOptions()
        options.log_severity_level = 4
        try:
            session = ort.InferenceSession(copy.SerializeToString(), options, providers=["CPUExecutionProvider"])
            outs = session.run(names, {self.input_name: self._fed(self.spec.zeros(1))})
        except Exception:  # onnxruntime's own errors: the session built below names them in one line
            return {}
        return {name: list(out.shape) for name, out in zip(names, outs, strict=True)}

    def _run(self, images: torch.Tensor, names: list[str] | None = None) -> dict[str, np.ndarray]:
        names = names or self.output_names
        step = self.batch or images.shape[0]
        parts: list[list[np.ndarray]] = []
        for start in range(0, images.shape[0], step):
            chunk = images[start:start + step]
            real = chunk.shape[0]
            if real < step:  # a graph fixed to a batch of N takes exactly N: pad with copies, keep the real rows
                chunk = torch.cat([chunk, chunk[:1].expand(step - real, *chunk.shape[1:])])
            session = self.scorer if set(names) <= set(self.returned) else self.session
            outs = session.run(names, {self.input_name: self._fed(chunk)})
            if self.squeezed:  # the class scores of the one image, given its batch axis back
                outs = [out[None] if name == self.output_name else out for name, out in zip(names, outs, strict=True)]
            # A value of the graph's own (not one per image) is no stage, and is left out; the graph's outputs are
            # kept as they are, for the classifier check to name and a network's rows to show.
            parts.append([out[:real] if per_image(out, step) else out if name in self.returned else None
                          for name, out in zip(names, outs, strict=True)])
        return {name: parts[0][k] if len(parts) == 1 else np.concatenate([p[k] for p in parts])
                for k, name in enumerate(names) if parts[0][k] is not None}

    def _sample(self) -> np.ndarray | None:
        """The graph's outputs for :meth:`InputSpec.probe`'s images (None where it fails on them): whether they are
        probabilities or percentages already (:func:`cnnlab.explore.outputs.distribution_total`)."""
        try:
            return self._run(self.spec.probe(), [self.output_name])[self.output_name]
        except Exception:  # onnxruntime's own error classes: it ran on blank images; its last node says
            return None

    def _batch_trouble(self) -> str | None:
        """Why the images must be run one at a time (for the page's note), or None: two images at once do not give
        two rows of output, or do not give each image's own (dynamic quantization takes one scale for the whole
        batch's values: an image's answer would depend on the others beside it, and ``predict`` on a folder would
        answer otherwise than the page and than the deployed file for that image alone)."""
        pictures = self.spec.probe(2)
        pictures[1] //= 8  # a dark picture beside a bright one: a scale of the batch's is neither's own
        try:
            pair = self._run(pictures, [self.output_name])[self.output_name]
            alone = [self._run(pictures[k:k + 1], [self.output_name])[self.output_name] for k in range(2)]
        except Exception:  # onnxruntime's own error classes: the graph cannot take a batch of two
            return "it fails on two images at once"
        if pair.shape[:1] != (2,):  # it ran, but not a row an image (a Flatten of axis 0: 1 x 10 for 2 images)
            return f"it returns {' x '.join(map(str, pair.shape)) or 'a single number'} for two images, not a row each"
        alone = np.concatenate(alone).astype(np.float64)
        # rounding of another summation order stays far below a thousandth of the outputs' scale
        if np.abs(pair - alone).max() > 1e-3 * float(np.abs(alone).max()):
            return ("each image's output depends on the others run with it (as under dynamic quantization, whose "
                    "scale is the whole batch's)")
        return None

    def _logits_of(self, out: np.ndarray) -> torch.Tensor:
        return self.scoring.scores(torch.from_numpy(np.asarray(out, dtype=np.float32)))

    def logits(self, images: torch.Tensor, batch_size: int = 64) -> torch.Tensor:
        chunks = [self._logits_of(self._run(images[i:i + batch_size], [self.output_name])[self.output_name])
                  for i in range(0, images.shape[0], batch_size)]
        return torch.cat(chunks)

    def _read_layouts(self) -> dict[str, str | None]:
        """Each value's layout (:mod:`cnnlab.explore.layouts`), from the input's through the graph's nodes."""
        tags = {self.input_name: self.spec.layout}
        for node in self.nodes:  # in the order they run: an ONNX graph is sorted so
            # the first input of a known layout: a Linear's bias Add reads its initializer first (Add(bias, x))
            source = next((name for name in node.input if tags.get(name) is not None), None)
            before, now = self.shapes.get(source), self.shapes.get(node.output[0]) if node.output else None
            known = before is not None and now is not None and all(isinstance(d, int) for d in (*before, *now))
            dims = next((list(a.ints) for a in node.attribute if a.name == "perm"), None)
            perm = permutation(node.op_type, dims, len(before) if before else None)  # [] : no shape inferred
            tag = after(node.op_type, tags.get(source), perm, (before, now) if known else None)
            if node.domain == NCHWC and node.op_type == "ReorderOutput":  # it turns the blocks back to one or the other
                last = next((a.i for a in node.attribute if a.name == "channels_last"), 0)
                tag = "NHWC" if last else "NCHW"
            tags.update(dict.fromkeys(node.output, tag))
        return tags

    def _blocked(self) -> set[str]:
        """The values in com.microsoft.nchwc's blocked layout (:data:`NCHWC`): its ops' outputs, and those of the ops
        that read them (an activation, a residual's Add), up to the ReorderOutput that turns them back."""
        values: set[str] = set()
        for node in self.nodes:
            if node.op_type != "ReorderOutput" and (node.domain == NCHWC or any(i in values for i in node.input)):
                values.update(node.output)
        return values

    def _from_image(self) -> set[str]:
        """The values computed from the image; the others are the network's own (a learnt gate computed from its
        initializers alone), no stages whatever their shape. A node with a subgraph (If, Loop, Scan) may read the
        image inside it: its outputs are counted as the image's."""
        values = {self.input_name}
        for node in self.nodes:
            if any(name in values for name in node.input) or any(a.type in (5, 10) for a in node.attribute):
                values.update(node.output)  # (onnx.AttributeProto's GRAPH and GRAPHS)
        return values

    def stages(self, image: torch.Tensor, keep: Callable[[torch.Tensor], Any] | None = None) -> list[Row]:
        out = self._run(image[None])
        if self.scorer is not self.session:  # the outputs the graph gives as it is (see __init__)
            out.update(self._run(image[None], self.returned))
        read_after = {self.output_name} if self.scoring is not None else set(self.returned)
        rows = []
        for node in self.stage_nodes:
            value, kind = self.shown[id(node)]
            if value in out:  # each stage's own value let go once taken (copied as float32, or kept as keep says)
                taken = np.array(out[value] if value in read_after else out.pop(value), dtype=np.float32)
                shown = as_nchw(torch.from_numpy(taken), self.layouts.get(value))
                rows.append(Row(self._names[id(node)], kind, shown if keep is None else keep(shown)))
        if self.scoring is not None:
            return [*rows, Row(self.output_name, OUTPUT, self._logits_of(out[self.output_name]))]
        # a network's every output as it is (one image's: a detection list of its own length gets a batch axis)
        return [*rows, *(Row(name, OUTPUT, as_nchw(torch.from_numpy(value[:1]), self.layouts.get(name)))
                         if per_image(value, 1) and name not in self._listed else
                         Row(name, LISTED, torch.from_numpy(value[None]))
                         for name in self.returned if isinstance(value := out.get(name), np.ndarray))]

    def kernels(self) -> torch.Tensor | None:
        weight = self._first_conv_weight()
        return None if weight is None else torch.from_numpy(weight.astype(np.float32))

    @functools.cached_property
    def _copies(self) -> dict[str, str]:
        """The values an Identity node copies from an initializer (perhaps through another copy), each to that
        initializer. torch's legacy exporter (``dynamo=False``) stores parameters of equal values once (two
        GroupNorms' weights of ones) and gives each other one an Identity of it: a parameter of its own."""
        copies: dict[str, str] = {}
        for node in self.nodes:  # in the order they run: a copy of a copy comes after the copy
            if node.op_type == "Identity" and node.input and node.output:
                source = copies.get(node.input[0], node.input[0])
                if source in self.initializers:
                    copies[node.output[0]] = source
        return copies

    @functools.cached_property
    def _table(self) -> list[tuple[Any, int]]:
        """The nodes of the layer table, in the order they run (the stages among them), and the parameters of each.

        A QDQ graph's weight reaches its layer through a DequantizeLinear of initializers (or a QuantizeLinear and
        DequantizeLinear of a weight the graph computes): that row is left out and the quantized weight counted with
        its layer; scales and zero points are not parameters. So is a reshape or cast of a weight
        (:data:`REARRANGING`), and the Identity that copies an initializer (:attr:`_copies`): the copy is counted
        with the layer that reads it, as the parameter it stands for."""
        # each value made of initializers alone by a rearranging op, a DequantizeLinear, or a QuantizeLinear (where
        # the quantizer quantizes a weight the graph computes, as CNTK's reshaped one): the initializer it holds
        made: dict[str, str] = {}
        dequantized: set[str] = set()  # those made through a DequantizeLinear, integers counted as weights
        # the Identity copies of a dequantized weight: the legacy exporter's copy of a parameter (:attr:`_copies`)
        # reads the DequantizeLinear once onnxruntime's quantizer has quantized the initializer it copied
        copied: set[str] = set()
        for n in self.nodes:  # in the order they run: a reshape of a dequantized weight comes after its dequantizing
            if n.output and n.input and (n.op_type in ("DequantizeLinear", "QuantizeLinear", "Identity") or
                                         n.op_type in REARRANGING) and \
                    all(i in self.initializers or i in made for i in n.input):
                made[n.output[0]] = made.get(n.input[0], n.input[0])
                if n.op_type == "DequantizeLinear" or n.input[0] in dequantized:
                    dequantized.add(n.output[0])
                if n.op_type == "Identity" and n.input[0] in dequantized:
                    copied.add(n.output[0])
        counted: set[str] = set()

        def params_of(node) -> int:
            """The parameters a node reads, each initializer once, as a module counts them: not the integer
            constants of shapes and axes, scalars, batch norm's running statistics, or the normalisation constants
            an input is shifted and divided by (buffers in PyTorch)."""
            if node.op_type in QUANTIZED_WEIGHTS:
                inputs = [node.input[k] for k in QUANTIZED_WEIGHTS[node.op_type] if k < len(node.input)]
            elif node.op_type in NOT_PARAMETERS:
                return 0
            else:
                inputs = node.input[:3] if node.op_type == "BatchNormalization" else node.input
            total = 0
            for name in inputs:
                source = name if name in self.initializers else self._copies.get(name) or made.get(name)
                # a copy is a parameter of its own, counted once
                key = name if name in self._copies or name in copied else source
                if source is None or key in counted:
                    continue
                tensor = self.initializers[source]
                quantized = name in dequantized or node.op_type in QUANTIZED_WEIGHTS  # integer weights
                if not tensor.dims or (tensor.data_type not in FLOAT_TYPES and not quantized):
                    continue  # a scalar, or integers: shapes, axes, indices
                counted.add(key)
                total += int(np.prod(tensor.dims))
            return total

        table = []
        for node in self.nodes:
            if node.op_type in ("QuantizeLinear", "DequantizeLinear") or node.output and (
                    node.output[0] in self._copies or node.output[0] in made):
                continue
            params = params_of(node)
            if _stage_op(node) or params:
                table.append((node, params))
        return table

    @functools.cached_property
    def _names(self) -> dict[int, str]:
        """Each layer's name on the page (:func:`_layer_name`), by ``id`` of its node: one per row of the layer
        table and of the stages (which are among them), none the output row's."""
        nodes = [node for node, _ in self._table]
        names = _unique((_layer_name(node) for node in nodes), taken={self.output_name})
        return {id(node): name for node, name in zip(nodes, names, strict=True)}

    def _dims_of(self, name: str) -> list | None:
        """A value's dims: shape inference's or a run's, else an initializer's (a weight's), else None."""
        if name in self.shapes:
            return self.shapes[name]
        tensor = self.initializers.get(self._copies.get(name, name))
        return list(tensor.dims) if tensor is not None else None

    def _macs(self, node) -> int | None:
        """One image's MACs of a node (:func:`node_macs`): a value made from the image holds one image where the
        graph's batch is free or one (the shapes are worked out at one), and the batch its first axis says where the
        graph fixes a larger one (its own reshapes keep it); the network's own values are computed once whatever the
        batch. The first axis is not read at one image: a transformer's sequence-first values put the tokens there."""
        macs = node_macs(node, self._dims_of)
        if macs is None or not node.output or node.output[0] not in self.from_image or self.batch in (None, 1):
            return macs
        batch = (self.shapes.get(node.output[0]) or [None])[0]
        return macs // batch if isinstance(batch, int) and batch > 0 else None

    def layers(self) -> list[dict[str, Any]]:
        shown = {id(node): params for node, params in self._table}
        rows, pending = [], 0  # the MACs of the nodes since the last row that have none of their own
        for node in self.nodes:
            macs = self._macs(node)
            pending = None if macs is None or pending is None else pending + macs
            if id(node) not in shown:
                continue
            shape = self.shapes.get(node.output[0]) if node.output else None
            # one image's: without the batch axis, unless the value is the network's own (a learnt gate)
            mine = node.output and node.output[0] not in self.from_image
            rows.append({"name": self._names[id(node)], "op": node.op_type,
                         "shape": list(shape or []) if mine else [d for d in (shape or [])[1:]],
                         "params": shown[id(node)], "macs": pending})
            pending = 0
        if rows and pending != 0:  # the nodes after the last row (a MatMul with a Constant's): theirs are its
            last = rows[-1]["macs"]
            rows[-1]["macs"] = None if last is None or pending is None else last + pending
        return rows

    def attribution(self, image: torch.Tensor, target: int) -> dict[str, Any]:
        return occlusion_pngs(self, image, target)


def _too_old(model) -> str:
    """What to do about a graph of an ONNX operator set older than onnxruntime runs (from 7 on: its compatibility
    promise, ONNX 1.2's), said after onnxruntime's reason: the ONNX Model Zoo's oldest files (bvlcalexnet-3 and -6)
    fail on the first op of theirs it has no implementation of ("Relu(1)", "Gemm(6)"). Empty where the operator set
    is 7 or later."""
    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), None)
    if opset is None or opset >= OLDEST_OPSET:
        return ""
    return (f": its ONNX operator set is {opset}, and onnxruntime runs {OLDEST_OPSET} and later; expected a file of "
            f"operator set {OLDEST_OPSET} or later (the ONNX Model Zoo keeps each model at later ones too; "
            f"onnx.version_converter.convert_version(model, {OLDEST_OPSET}) converts some graphs)")


def _carried(metadata: dict[str, str], path: Path, graph) -> Carried:
    """What a graph from a library carries about how it is fed and what it answers: Ultralytics' metadata (its
    ``names``, and its ``imgsz`` for a dynamic export), else the files a Hugging Face export keeps beside
    ``model.onnx`` (:func:`~cnnlab.explore.hugging_face.hugging_face_carried`). Anything of another form says
    nothing, and so does anything beside a cnnlab export, which normalises inside its graph and names its classes in
    its metadata.

    An Ultralytics RT-DETR exported before its metadata named the head (``head``) is told by its ``graph``:
    its decoder's deformable attention samples the maps where its queries point (a ``GridSample``), which no YOLO head
    does (a detector's: an export of another task is fed as that task's predictor feeds it). ``YOLO(file)``
    letterboxes such a file and reads its queries as a YOLO head's scores (boxes of a pixel, or none);
    ``RTDETR(file)``, the one way Ultralytics reads its answer, stretches it, and so is it fed here."""
    if "cnnlab.input" in metadata:
        return Carried()
    names = indexed_names(metadata["names"]) if "names" in metadata else None  # an Ultralytics classifier's
    if names is not None or metadata.get("author") == "Ultralytics":
        size = input_sides(literal(metadata.get("imgsz", "")))
        # RT-DETR is a detector: YOLO(file) picks another task's predictor by the task, whatever its graph samples
        sampling = metadata.get("task", "detect") == "detect" and "head" not in metadata and \
            any(node.op_type == "GridSample" for node in graph.node)
        head = RTDETR_HEAD if sampling else metadata.get("head", "")
        stride = _free_to_stride(metadata, graph)
        fit = ultralytics_fit(metadata.get("task"), head, stride) if metadata.get("author") == "Ultralytics" else PAD
        told = "Ultralytics' metadata" + (" and RT-DETR's GridSample in its graph" if sampling else "")
        return Carried(classes=names, size=size, size_from="Ultralytics' metadata", fit=fit, fit_from=told)
    return hugging_face_carried(path)


def _free_to_stride(metadata: dict[str, str], graph) -> int | None:
    """The stride Ultralytics' predict pads an export's pictures up to a multiple of (its ``auto`` letterbox), where
    it does: where it takes the export for one of dynamic shapes and the input's height and width are free; None
    where it pads them to the input's whole shape.

    Its ONNX backend (8.4) takes an export as dynamic by the ``dynamic`` of the ``args`` it was exported with (its
    metadata), else by its first output's batch being named (free); its predictor then letterboxes each picture to its
    minimum rectangle, padded up to a multiple of the ``stride`` its metadata keeps (32 where it keeps none). A graph
    of fixed sides it would feed that rectangle fails on; it is fed the input's shape here."""
    args = literal(metadata.get("args", ""))
    if isinstance(args, dict) and "dynamic" in args:
        dynamic = bool(args["dynamic"])
    else:
        outputs = _dims(graph.output[0]) if len(graph.output) else []
        dynamic = bool(outputs) and isinstance(outputs[0], str)
    sides = _dims(graph.input[0])[2:] if len(graph.input) else []
    if not dynamic or len(sides) != 2 or any(isinstance(side, int) for side in sides):
        return None
    stride = literal(metadata.get("stride", "32"))
    return stride if isinstance(stride, int) and not isinstance(stride, bool) and stride > 0 else 32


def _stage_op(node) -> bool:
    """Whether a node's op makes feature maps (a stage, where its value is the image's and not in a blocked layout):
    one of ONNX's :data:`STAGE_OPS`, of com.microsoft's :data:`MICROSOFT_STAGES`, or of :data:`NCHWC`'s (there, a
    ReorderOutput too)."""
    if node.domain in ("", "ai.onnx"):
        return node.op_type in STAGE_OPS
    if node.domain == "com.microsoft":
        return node.op_type in MICROSOFT_STAGES
    return node.domain == NCHWC and (node.op_type in STAGE_OPS or node.op_type == "ReorderOutput")


def _layer_name(node) -> str:
    """A node's name on the page: the path of the module it ran in, where torch's exporter recorded one in its
    metadata (:data:`NAME_SCOPES`, else :data:`NAMESPACE`), else its own name, else its first output's."""
    props = {p.key: p.value for p in node.metadata_props}
    try:  # a list's repr; literal_eval builds literals and runs nothing
        scopes = ast.literal_eval(props[NAME_SCOPES]) if NAME_SCOPES in props else None
    except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
        scopes = None
    if not isinstance(scopes, list) or not all(isinstance(scope, str) for scope in scopes):
        scopes = [part.partition(": ")[0] for part in props.get(NAMESPACE, "").split("/")]
    # the innermost module's path, before the FX node's own name; '' for an op of the root module's own forward,
    # which is then named as its torch.export program names it (max_pool2d, where the node is node_max_pool2d)
    path, own = (scopes[-2], scopes[-1]) if len(scopes) > 1 else ("", "")
    return path or own or node.name or (node.output[0] if node.output else node.op_type)


def _torch_op(node) -> tuple[str, str] | None:
    """The torch operation an ONNX node was written for, where torch's exporter recorded it in the node's metadata
    (every node of one operation shares its :data:`NAME_SCOPES` line, which ends in the FX node's name, and its
    :data:`NAMESPACE` line, which ends in the ATen operator, ``silu: aten.silu.default``): that line and the
    operator's name (``silu``); None for a node of another tool's graph."""
    props = {p.key: p.value for p in node.metadata_props}
    line = props.get(NAME_SCOPES) or props.get(NAMESPACE)
    if not line:
        return None
    operator = props.get(NAMESPACE, "").rpartition(": ")[2].split(".")
    return line, operator[1] if len(operator) > 2 and operator[0] == "aten" else node.op_type


def _unique(names: Iterable[str], taken: set[str]) -> list[str]:
    """``names`` made unique, as the PyTorch kinds number theirs: the second ``relu`` is ``relu#2`` (a module called
    twice, or an op that the exporter wrote as several nodes); none is one of ``taken``."""
    counts: Counter[str] = Counter()
    seen, unique = set(taken), []
    for name in names:
        counts[name] += 1
        label = name if counts[name] == 1 else f"{name}#{counts[name]}"
        while label in seen:
            counts[name] += 1
            label = f"{name}#{counts[name]}"
        seen.add(label)
        unique.append(label)
    return unique


def _last_op(producers: dict, output: str, through: frozenset[str] = PASS_THROUGH) -> Any:
    """The node that computes ``output``, looking back past the ops of ``through`` (reshapes, renames), or None;
    ``producers`` maps each value to the node that computes it."""
    node = producers.get(output)
    while node is not None and node.op_type in through and node.input:
        node = producers.get(node.input[0])
    return node


def _final_op(producers: dict, output: str) -> str | None:
    """``"Softmax"`` or ``"Sigmoid"`` where ``output`` is one's (or its quantized twin's, :data:`QUANTIZED_FINAL`),
    perhaps reshaped, renamed or quantized after it (:data:`PASS_THROUGH`), else None."""
    node = _last_op(producers, output)
    if node is None:
        return None
    op = QUANTIZED_FINAL.get(node.op_type) if node.domain == "com.microsoft" else node.op_type
    return op if op in ("Softmax", "Sigmoid") else None
