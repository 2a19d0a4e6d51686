"""An ``nn.Module`` in the explorer: :class:`ModuleModel`, for ``module:function``, the ImageNet backbones and
torchvision's pretrained networks by name.

``module:function``: ``importlib`` imports the module the user named and calls the function with no arguments; it must
return an ``nn.Module``. This is the one path that runs the user's code, because the user asked for it, and the page
says so. ``imagenet-NAME``: torchvision's network with its weights (or a state dict of it from ``--weights``, fed as a
cnnlab safetensors export's metadata says where it is one). ``torchvision-NAME``: any of torchvision's classifiers,
segmentation models and detectors with its DEFAULT weights (:mod:`cnnlab.models.torchvision_zoo`). The feature maps come
from forward hooks on the leaf modules of the stage kinds (:data:`STAGE_MODULES`; in-place activations are switched off
first, so a ReLU does not overwrite the batch norm output recorded before it), and torch function modes follow the
layouts of the values and the spatial values Grad-CAM may weigh (:class:`_Watch`).
"""

from __future__ import annotations

import functools
import importlib
import json
import os
import shlex
import sys
import threading
from collections import Counter, deque
from collections.abc import Callable
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any
from weakref import ref

import torch
from torch import nn
from torch.nn.parameter import is_lazy
from torch.overrides import TorchFunctionMode

from cnnlab.errors import CnnlabError, summary
from cnnlab.explore.gradcam import is_spatial
from cnnlab.explore.hugging_face import hugging_face_carried, timm_carried
from cnnlab.explore.layouts import (
    NCHW,
    Layouts,
    as_nchw,
    first_tensor,
    passed_on,
    tensors_in,
)
from cnnlab.explore.model import (
    Carried,
    Options,
    blank_reading,
    framed_as_carried,
    read_outputs,
    square_as_exported,
    ultralytics_fit,
)
from cnnlab.explore.outputs import (
    BatchAxisDropped,
    NotAClassifier,
    id2label_names,
    names_by_index,
    per_image,
    stored_classes,
)
from cnnlab.explore.torch_models import TAIL, TorchModel, first_line, input_spec
from cnnlab.export import INPUT_SIZE_KEY, STORED_SIDE_KEY
from cnnlab.io import json_beside
from cnnlab.models import create_model
from cnnlab.models.imagenet import (
    BACKBONES,
    backbone_for,
    crop_size,
    network_state,
    pretrained_normalize,
    weights_enum,
    weights_file,
    weights_framing,
)
from cnnlab.models.normalisation_beside import read_by_library
from cnnlab.models.state_dict import (
    SAVED,
    load_keyed,
    load_state_dict_into,
    loaded_note,
    read_weights,
    safetensors_metadata,
)
from cnnlab.models.summary import MacCounter
from cnnlab.models.torchvision_zoo import build_pretrained, feeding, zoo_model
from cnnlab.report.features import Row

# A module whose output is one of these torch functions' (F.softmax, torch.sigmoid, x.softmax(1), the functions
# nn.Softmax and nn.Sigmoid call, ...) gives probabilities (Scoring reads them back as logits); reshapes, copies,
# casts to another float type and an evaluation's dropout after it change nothing.
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
    :meth:`final_op` can tell what the output last went through, whether in a module or in ``forward``'s own code.
    Only the tensors of the functions that walk reads through or stops at are recorded (and kept): any other ends it
    as a tensor never recorded does, and a big network's whole pass is not held."""

    def __init__(self):
        super().__init__()
        self.made: dict[int, tuple[str, torch.Tensor | None, torch.Tensor]] = {}  # id -> (name, source, the tensor)

    def __torch_function__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        if isinstance(out, torch.Tensor):
            name = getattr(func, "__name__", "")
            source = first_tensor(args)
            if source is not out:  # (an evaluation's dropout returns its input itself)
                if name in FINAL_FUNCTIONS or name in PASS_THROUGH_FUNCTIONS:
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
            out = source  # a function it reads through (only those and the final ones are recorded)
        return None


class _Watch(TorchFunctionMode):
    """During a module's forward pass (inside :class:`Layouts`, which tags each tensor's layout first): which values
    are the network's own, made from its parameters and buffers alone and not from the image (a learnt gate, a
    ``sigmoid`` of a ``1 x C x 1 x 1`` parameter: no stage, whatever its shape), and the last :data:`TAIL` spatial
    values made, each named by the module whose forward made it (``where``, the module stack the hooks keep), for
    Grad-CAM (:func:`cnnlab.explore.gradcam.explain_with`).

    A value made by a function of no tensor (``torch.zeros``, ``torch.arange``) is not counted the network's own:
    the image may be written into it later, and only what is known to come from the weights alone is left out."""

    def __init__(self, model: nn.Module, layouts: Layouts | None, batch: int, where: list[str], tail: int = TAIL):
        super().__init__()
        self.own: dict[int, ref] = {id(t): ref(t) for t in (*model.parameters(), *model.buffers())}
        self.layouts, self.batch, self.where = layouts, batch, where
        self.tail: deque[tuple[str, str, torch.Tensor]] = deque(maxlen=tail)  # (module, function, value)
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
    last spatial values (:class:`_Watch`) with, for each stage recorded, the copy the rest of the network read.

    Each entry of ``seen`` is ``(name, module, value, whole)``: ``whole``, the output as the module gave it, else what
    the pass's ``keep`` took of it as it was made (the network's own values are kept whole: a later write from the
    image makes one no longer its own)."""

    seen: list[tuple[str, nn.Module, Any, bool]]
    out: Any
    watch: _Watch | None = None
    # id(copy) -> (a weak reference to the copy, which the network frees when done with it, the index of its stage
    # in seen, the copy's version then)
    copies: dict[int, tuple[ref, int, int]] = field(default_factory=dict)
    containers: set[int] = field(default_factory=set)  # ids of the modules in seen that are not leaves
    # under a MacCounter, the multiply-accumulates counted when each value in seen was made, one for each
    macs: list[int] = field(default_factory=list)
    total_macs: int = 0  # the whole pass's, products after the last value in seen included


def _output_of(value: Any) -> Any:
    """A module's output, the first of a tuple of tensors (nn.MultiheadAttention's (output, weights))."""
    return value[0] if isinstance(value, (tuple, list)) and value and isinstance(value[0], torch.Tensor) else value


def _table_shape(value: Any, watch: _Watch | None = None) -> list[int]:
    """One image's shape of what a module returned (:func:`_output_of`), as the layer table shows it: without the
    batch axis, unless the value is the network's own (a learnt gate, by ``watch``); none for no tensor."""
    value = _output_of(value)
    own = watch is not None and watch.is_own(value)
    return list(value.shape[1:] if per_image(value, 1) and not own else value.shape) \
        if isinstance(value, torch.Tensor) else []


def _in_channels(module: nn.Module) -> int | None:
    """The input channels of a 2-d convolution (its 4-d weight holds in_channels / groups of them), else None."""
    weight = getattr(module, "weight", None)
    if not isinstance(weight, torch.Tensor) or weight.dim() != 4:
        return None
    return int(weight.shape[1]) * int(getattr(module, "groups", 1))


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
        size = int(metadata[INPUT_SIZE_KEY])
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


def _takes_rgb_pixels(given: Options, name: str) -> None:
    """Refuse --pixel-range and --bgr for torchvision's network ``name``, which takes RGB pixels / 255."""
    if given.pixel_range or given.bgr:
        flags = " and ".join(f for f in given.scaling_flags() if f in ("--pixel-range", "--bgr"))
        raise CnnlabError(f"{flags} describe{'s' * (' and ' not in flags)} a model from elsewhere; {name} takes "
                          "RGB pixels / 255, as its weights were trained (--mean and --std may change their "
                          f"normalisation); expected no {flags.replace(' and ', '/')} for it")


def _framed_as_its_weights(carried: Carried, weights, side: int) -> Carried:
    """``carried`` framing pictures as the ``transforms()`` of ``weights`` (a torchvision classifier's) do, the
    shorter side resized and the centre cropped to ``side`` (:func:`cnnlab.models.imagenet.weights_framing`): the
    picture torchvision's published accuracies are of, where cnnlab's own padding showed the network the whole
    picture with borders it was not trained on. At another input size (``--input-size``) pictures are padded."""
    return replace(carried, size=(side, side), fit=weights_framing(weights), fit_from="weights' transforms")


def _carried(model: nn.Module) -> Carried:
    """The class names of a Hugging Face model's ``config.id2label`` (not its placeholders ``LABEL_0`` ...) and its
    ``config.image_size``; a timm model's ``pretrained_cfg`` input size, mean and std; an Ultralytics network's
    (:func:`_ultralytics`). Anything of another shape is passed over: the flags, or the explorer's defaults, say it
    instead."""
    found: dict[str, Any] = _ultralytics(model)
    config = getattr(model, "config", None)
    names = id2label_names(getattr(config, "id2label", None))
    if names:
        found.update(classes=names, classes_from="the model's config.id2label")
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
    return Carried(**found)


def _ultralytics(model: nn.Module) -> dict[str, Any]:
    """What an Ultralytics network (``YOLO("yolov8n.pt").model``: ultralytics.nn.tasks' DetectionModel and its kin)
    says of itself, told by its class's module and read from its plain attributes, none of its code run: its class
    names (its ``names``, a dict of index to name) and how Ultralytics' predict feeds it (its task,
    :func:`_ultralytics_task`, and class, :func:`cnnlab.explore.model.ultralytics_fit`: a PyTorch network takes
    pictures of any shape, which its predict pads only up to a multiple of the larger of its ``stride`` and 32, as its
    PyTorch backend reads it). Nothing for any other network."""
    if not type(model).__module__.startswith("ultralytics."):
        return {}
    strides = getattr(model, "stride", None)
    stride = max(int(torch.as_tensor(strides).max()), 32) if isinstance(strides, (torch.Tensor, int, float)) else 32
    found: dict[str, Any] = {"fit": ultralytics_fit(_ultralytics_task(model), type(model).__name__, stride),
                             "fit_from": "network's Ultralytics class"}
    names = names_by_index(getattr(model, "names", None))
    if names is not None:
        found.update(classes=names, classes_from="the network's names")
    return found


def _ultralytics_task(model: nn.Module) -> str | None:
    """An Ultralytics network's task: its ``task``, which Ultralytics' loader sets, else as that loader guesses it
    (``guess_model_task``) for a network taken from a checkpoint's ``model`` or ``ema`` or built from its class, which
    has none: the ``task`` of its ``args`` (a dict), else ``classify`` where one of its modules is its ``Classify``
    head (the one task among the heads that Ultralytics' predict frames otherwise than by a letterbox); None where
    nothing says."""
    task = getattr(model, "task", None)
    if isinstance(task, str):
        return task
    args = getattr(model, "args", None)
    if isinstance(args, dict) and isinstance(args.get("task"), str):
        return args["task"]
    heads = (type(m) for m in model.modules())
    return "classify" if any(h.__name__ == "Classify" and h.__module__.startswith("ultralytics.") for h in heads) \
        else None


class ModuleModel(TorchModel):
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
                self.spec = input_spec(options, None, channels, name)  # --bgr refuses a grey one
                count = self._check_classifier(name, options)
                break
            except (NotAClassifier, BatchAxisDropped):  # it ran on this input, refused for what it returned: any
                raise  # other would be wrong, and large (a detector's 2,048-channel convolution fed 2,048 x 800 x 800)
            except CnnlabError as e:
                refusals.append(e)
        else:
            raise refusals[0]
        if count is None:  # a network opened for its layers
            self.scoring, self.classes, self.notes = None, (), (*([note] if note else []), *self._not_a_classifier)
        else:
            self.scoring, self.classes, where = read_outputs(count, options, self._final_op(), stored,
                                                             folder_classes, name, "module", stored_in,
                                                             self._sample(), self._on_map)
            self.notes = (f"{note} Class names: {where}.".lstrip(), *self._outputs_note("module"),
                          *self.scoring.notes())
        notes, self.classes = blank_reading(self, options, "module", stored or (), stored_in)
        self.notes += (*notes, *self._unused())

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
            raise CnnlabError(f"importing {module_name!r} for {spec} failed ({first_line(e)})") from e
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
            raise CnnlabError(f"{spec}() failed ({first_line(e)}); expected a function that takes no arguments and "
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
        explored.spec = framed_as_carried(explored.spec, carried)
        return explored

    @classmethod
    def imagenet(cls, name: str, options: Options | None = None,
                 folder_classes: tuple[str, ...] = ()) -> ModuleModel:
        """An ImageNet backbone of the zoo (``imagenet-resnet18``) with its weights from torch.hub's cache, at the
        input size, normalisation and 1,000 class names of the weights' own metadata (flags override the first
        two); with ``options.weights``, the same architecture shaped as that state dict has it (input channels,
        classes: ImageNet's names only for 1,000 outputs) with its weights, fed as the ImageNet weights are (a
        Transformers folder's as its preprocessor_config.json says, its classes named by its config.json, a timm
        folder's as its config.json's pretrained_cfg says); or,
        where the file is ``cnnlab export --format safetensors``'s of this network, fed as its metadata says its run
        was (input side, normalisation, centre-cropped pictures) and its classes named so (flags come first), and
        the metadata kept as an export's (``metadata``: eval scores the run's test split)."""
        given = options or Options()
        _takes_rgb_pixels(given, name)
        categories = tuple(weights_enum(name).meta["categories"])
        builder = BACKBONES[name].builder
        if given.weights is None:
            model = create_model(name, num_classes=len(categories), in_channels=3, pretrained=True)
            channels, classes = 3, len(categories)
            note = f"torchvision's {builder} with its {BACKBONES[name].weights} weights (read weights-only from " \
                   f"{weights_file(weights_enum(name))})."
        else:  # the architecture, with a state dict of it from elsewhere (fine-tuned on other classes, perhaps)
            expected = f"a state dict of torchvision's {builder} (its model.state_dict(), {SAVED})"
            state, unread = read_weights(given.weights, expected)
            state = network_state(name, state)
            config = json_beside(given.weights, "config.json")  # one read for the keys, the classes and the feeding
            model, channels, classes, keyed, how = backbone_for(name, state, given.weights, config)
            # the way in names a dataset: without one a run trains on Fashion-MNIST's grey digits, which an RGB
            # body's stem refuses
            load_keyed(model, keyed, given.weights, how, f"torchvision's {builder}", expected,
                       way_for_body="fine-tune a classifier on this body with a folder of a subfolder of photos per "
                       f"class: cnnlab train {name} --dataset folder:PHOTOS --init-from "
                       f"{shlex.quote(str(given.weights))}")
            note = f"torchvision's {builder} with the weights of {loaded_note(given.weights, how, unread)}"
        exported = _exported_of(given.weights, name) if given.weights is not None else None
        if exported is not None:  # a cnnlab export of this network: fed as its run was, its classes named
            size, (mean, std), stored = exported.size, exported.normalize, exported.classes
            size_from = normalised_by = "weights file's metadata"  # the page: "size from the weights file's ..."
            stored_in = "the weights file's metadata"
        else:
            size, (mean, std) = crop_size(name), pretrained_normalize(name, channels)
            stored = categories if classes == len(categories) else None
            stored_in = "the weights' metadata" if given.weights is None else "ImageNet's, for 1,000 outputs"
            size_from = "weights' metadata"
            normalised_by = "weights' metadata" if given.weights is None else "ImageNet weights' metadata"
            # a Transformers or timm folder names its classes (fine-tuned too) and says how the network is fed:
            # config.json's class names and preprocessor_config.json's size, normalisation and framing, or timm's
            # config.json's class names and its pretrained_cfg's
            carried = read_by_library(given.weights, state, lambda p: hugging_face_carried(p, config),
                                      lambda p: timm_carried(p, config)) if given.weights is not None else Carried()
            if carried.classes is not None and len(carried.classes) == classes:
                stored, stored_in = carried.classes, carried.classes_from
            if carried.size is not None:
                size, size_from = carried.size, carried.size_from
            if carried.mean is not None and len(carried.mean) in (1, channels) and len(carried.std) in (1, channels):
                mean, std, normalised_by = carried.mean, carried.std, carried.mean_from
            if not carried.fit_from:  # no image processor's word: framed as torchvision's weights' transforms
                carried = _framed_as_its_weights(carried, weights_enum(name), crop_size(name))
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
        else:
            explored.spec = framed_as_carried(explored.spec, carried)
        return explored

    @classmethod
    def torchvision(cls, name: str, options: Options | None = None,
                    folder_classes: tuple[str, ...] = ()) -> ModuleModel:
        """One of torchvision's pretrained networks by name (``torchvision-lraspp_mobilenet_v3_large``; any
        classifier, segmentation model or detector of :mod:`cnnlab.models.torchvision_zoo`) with its DEFAULT weights
        from torch.hub's cache, fed as their transforms say (:func:`~cnnlab.models.torchvision_zoo.feeding`; the
        flags override). The weights' categories name a classifier's classes and a segmentation model's channels
        in the legend, as ``--classes`` would (the flag comes first); a detector's ``labels`` are indices into
        them, which a note says, and they name its boxes."""
        given = options or Options()
        _takes_rgb_pixels(given, name)
        if given.weights is not None:
            raise CnnlabError(f"--weights puts a state dict into a network built by name; {name} reads torchvision's "
                              "own weights; expected no --weights for it (for weights of your own, name a "
                              "module:function that builds the network, with --weights FILE)")
        zoo = zoo_model(name)
        model = build_pretrained(zoo)
        side, mean, std, side_from = feeding(zoo, model)
        categories = zoo.categories
        note = f"torchvision's {zoo.builder} with its DEFAULT weights, {zoo.weights} (read weights-only from " \
               f"{zoo.file})."
        if zoo.task == "segmentation" and given.classes is None:
            note += f" Its {len(categories)} channels are named by the weights' categories."
        if zoo.task == "detection":
            named = ", ".join(f"{k} {c}" for k, c in enumerate(categories[:4]) if k)
            note += f" Its labels are indices into the weights' {len(categories)} categories ({named}, ...; " \
                    "\"N/A\" where its dataset left an index unused), which name its boxes."
        options = replace(given, input_size=given.input_size or side, mean=given.mean or mean,
                          std=given.std or std,
                          classes=given.classes or (categories if zoo.task != "classification" else None))
        explored = cls(model, name, options, folder_classes,
                       stored=categories if zoo.task == "classification" else None,
                       stored_in="the weights' metadata", note=note)
        explored._read_from(side_from if given.input_size is None else None,
                            "weights' transforms" if given.mean is None and given.std is None else None)
        if zoo.task == "classification":
            explored.spec = framed_as_carried(explored.spec, _framed_as_its_weights(Carried(), zoo.weights, side))
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

    def _hooked(self, x: torch.Tensor, stages_only: bool, counter: MacCounter | None = None,
                keep: Callable[[Any], Any] | None = None) -> _Pass:
        """Every leaf module's (or every stage's) output and the model's, from one pass over ``x``; for the layer
        table (not ``stages_only``), also the outputs of the modules that hold parameters of their own. With a
        ``counter``, the pass runs under it, and the MACs counted when each output was made are kept with it. With
        ``keep``, what it takes of each output (not the network's own) is kept in its place, as the output is made,
        and no spatial values for Grad-CAM: a big network's outputs are never all held at once."""
        if self._modes:
            try:
                layouts = Layouts(x, self.spec.layout)
                return self._hooked_under(x, stages_only, layouts, counter, keep)
            except Exception:  # code that cannot run under a function mode (an extension's op): its stages are
                self._modes = False  # taken as they come, channels first, as before layouts were followed
        return self._hooked_under(x, stages_only, None, counter, keep)

    def _hooked_under(self, x: torch.Tensor, stages_only: bool, layouts: Layouts | None,
                      counter: MacCounter | None, keep: Callable[[Any], Any] | None) -> _Pass:
        where: list[str] = []  # the modules running, innermost last
        watch = _Watch(self.model, layouts, x.shape[0], where, tail=TAIL if keep is None else 0) \
            if layouts is not None else None
        done = _Pass([], None, watch)
        if counter is not None:
            counter.flops = 0  # a pass that failed under the function modes counted some already

        def see(name, mod, value):
            whole = keep is None or watch is not None and watch.is_own(_output_of(value))
            done.seen.append((name, mod, value if whole else keep(value), whole))
            done.macs.append(counter.macs if counter is not None else 0)

        def record(mod, args, out, name):
            if watch is not None and watch.is_own(out):  # the network's own value (a learnt gate): no stage
                see(name, mod, out)
                return None
            # A channels-last output (a ConvNeXt block's LayerNorm) is recorded as C x h x w, and the rest of the
            # network reads it through that view, so that Grad-CAM's gradients reach the row recorded.
            layout = layouts.of(out) if layouts is not None else None
            shown = as_nchw(out, layout)
            see(name, mod, shown)
            if not isinstance(out, torch.Tensor):
                return None
            # the rest of the network reads a copy (torchvision's ResNet adds its shortcut to bn2's output with +=)
            with watch.passing_on() if watch is not None else nullcontext():
                copy = passed_on(shown, out)
            done.copies[id(copy)] = (ref(copy), len(done.seen) - 1, copy._version)
            return copy

        def contained(mod, args, out, name):
            done.containers.add(id(mod))
            see(name, mod, out)

        hooked = [(name, m, record) for name, m in self._leaves if not stages_only or isinstance(m, STAGE_MODULES)]
        if not stages_only:
            hooked += [(name, m, contained) for name, m in self._holders]
        with self._passes, layouts if layouts is not None else nullcontext(), watch or nullcontext(), \
                counter or nullcontext():
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
        done.total_macs = counter.macs if counter is not None else 0
        return done

    def _stage_pass(self, x: torch.Tensor, keep: Callable[[torch.Tensor], Any] | None = None) -> \
            tuple[list[Row], list[Row]]:
        """The stages and the output of one pass over ``x``, and the last spatial values it made, for Grad-CAM: a
        stage's under its row's name, another value under the module that made it (an Inception block's
        concatenation, a residual sum). With ``keep``, each stage's row holds what it takes of the stage's output,
        taken as the output is made, and there are no spatial values."""

        def is_stage(value: Any) -> bool:
            return isinstance(value, torch.Tensor) and per_image(value, x.shape[0])

        done = self._hooked(x, stages_only=True,
                            keep=None if keep is None else lambda value: keep(value) if is_stage(value) else None)
        counts = Counter()
        rows, row_of = [], {}
        for name, mod, value, whole in done.seen:
            if whole:  # as the module gave it: a stage's value, unless it is still the network's own
                if not is_stage(value) or done.watch is not None and done.watch.is_own(value):
                    continue
                if keep is not None:  # the network's own when made, written from the image since
                    value = keep(value)
            elif value is None:  # (keep took nothing of it: no stage)
                continue
            counts[name] += 1
            rows.append(Row(name if counts[name] == 1 else f"{name}#{counts[name]}", type(mod).__name__, value))
            row_of[id(value)] = rows[-1]
        tail = []
        for module, function, value in done.watch.tail if done.watch is not None else ():
            copy, index, version = done.copies.get(id(value), (None, None, None))
            # the copy a stage passed on, as it was: its row (one changed in place since, by DenseNet's last
            # F.relu(inplace=True), is not)
            if copy is not None and copy() is value and value._version == version:
                value = done.seen[index][2]
            tail.append(row_of.get(id(value)) or Row(module or function, function, value))
        return [*rows, Row("output", "output", done.out)], tail

    def kernels(self) -> torch.Tensor | None:
        """The weights of the first convolution the input goes through (not the first one registered)."""
        done = self._leaf_pass()
        convs = (mod for _, mod, _, _ in done.seen if id(mod) not in done.containers and _in_channels(mod))
        conv = next(convs, None)
        return None if conv is None else conv.weight.detach()

    def _final_op(self) -> str | None:
        producers = _Producers()
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
        that hold parameters of their own (flagged in ``containers``), with the MACs counted when each was made."""
        x = self.spec.to_input(self.spec.zeros(1))
        with torch.no_grad():  # each output's shape as the table shows it, taken as it is made: not the output
            return self._hooked(x, stages_only=False, counter=MacCounter(), keep=_table_shape)

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
        ran = {id(mod) for _, mod, _, _ in done.seen}
        rows, counted = [], set()
        before = 0  # the MACs counted when the last row's value was made: a row's are those since

        def params(tensors) -> int:  # each parameter once, as the model counts it
            new = [p for p in tensors if id(p) not in counted]
            counted.update(id(p) for p in new)
            return sum(p.numel() for p in new)

        for (name, mod, value, whole), macs in zip(done.seen, done.macs, strict=True):
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
            shape = _table_shape(value, done.watch) if whole else value
            rows.append({"name": name or type(mod).__name__, "op": type(mod).__name__, "shape": shape,
                         "params": count, "macs": macs - before})
            before = macs
        if rows:  # the products the forward pass makes after its last layer (a matrix product of its own)
            rows[-1]["macs"] += done.total_macs - before
        return rows, counted
