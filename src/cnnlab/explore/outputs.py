"""How the explorer reads what a model from elsewhere returns: the class scores among its outputs
(:func:`first_output`, :func:`class_rows`), refused where they are no classifier's (:func:`logits_count`,
:class:`NotAClassifier`, with a hint at what they are; a network opened for its layers has its outputs named one by
one instead, :func:`output_tensors`), whether they are logits or probabilities already and how they become the
page's probabilities (:class:`Scoring`), and the classes' names (:func:`read_classes` for ``--classes``,
:func:`stored_classes` for a model's metadata, :func:`resolve_classes` to choose among them).
"""

from __future__ import annotations

import ast
import codecs
import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from cnnlab.errors import CnnlabError, summary

# The kinds of the rows of what a network returns (:class:`cnnlab.report.features.Row`): a tensor of the images' batch
# cut to one image's, and one of an image's own list (a detector's boxes, masks or keypoints), whose first axis counts
# what was found in the image, not channels: no map
OUTPUT, LISTED = "output", "output list"
RETURNED = (OUTPUT, LISTED)
# The largest class number a network's integers may hold to be read as classes (a class per pixel, a detector's labels:
# ADE20K's 150, COCO-Stuff's 182 and more, far below): a map of pixel values or counts is no such map
MAX_LABEL = 1023


class NotAClassifier(CnnlabError):
    """A model whose outputs are no class scores (a detector's boxes, a segmentation model's maps, a backbone's
    features): refused by ``predict`` and ``eval``, which answer with classes, and opened by ``explore`` and
    ``summary`` for what its layers compute (:attr:`cnnlab.explore.model.Options.any_network`), the ``reason`` said
    on the page: what it returns (``found``, with a ``hint`` of what that is), and the class scores ``expected``."""

    def __init__(self, where: str, found: str, expected: str, hint: str = ""):
        self.where, self.found = where, found + hint
        self.reason = f"{found}, expected {expected}{hint}"
        super().__init__(f"{where} is not a classifier: {self.reason}; cnnlab explore and cnnlab summary open any "
                         "network for its layers")


class BatchAxisDropped(CnnlabError):
    """A classifier that answers 2 images with class scores and 1 image without its batch axis (a final
    ``squeeze()``): refused by every command, since every analysis runs one image, and not opened as a network,
    which would lose its classes."""


@dataclass(frozen=True)
class Scoring:
    """How a model's ``outputs`` scores become the probabilities of its classes.

    By default the scores are logits and the probabilities their softmax. A model that ends in Softmax or Sigmoid
    gives probabilities already: they are taken back to logits first (log p, logit p), so that the page shows the
    model's own figures and not a softmax of them. A model of one output is a binary classifier (trained with a
    sigmoid, as ``BCEWithLogitsLoss`` does): its logit z is shown as two classes, class 1 with probability
    sigmoid(z) and class 0 with the rest; their scores are -z/2 and z/2, whose softmax is exactly that, and whose
    gradients are z's, with its sign, so Grad-CAM explains either class. A multi-label model gives each class a
    probability of its own, the sigmoid of its score; they need not sum to 1.

    A model whose last operation is no Softmax may still give probabilities: arithmetic after one
    (``softmax(x) * 1.0``, a temperature's rescaling done before it but a cast or a scale after), or an ensemble's
    average of several. Its outputs are at least 0 and sum to 1 for every image; read as logits, they would be
    softmaxed a second time and every figure flattened towards 1 / classes. Such outputs are read as a Softmax's,
    and the page says why (``from_values``). So are percentages (``softmax(x) * 100``: at least 0, summing to 100),
    which read as logits were softmaxed into near certainty (37% shown as 99%); read as a Softmax's they give their
    probabilities, as log(100 p) differs from log p by a constant, which the softmax takes away.

    Attributes:
        outputs: the model's own output count.
        multi_label: each output is its own class's sigmoid (``--multi-label``, or a model that ends in Sigmoid).
        ends_in: ``"Softmax"`` or ``"Sigmoid"`` where the model's last operation is one (or where its outputs are
            a distribution, ``from_values``), else None.
        noun: what the page calls the model (``"graph"``, ``"program"``, ``"module"``).
        from_values: read as a Softmax's because its outputs are distributions (:func:`distribution_total`), not
            because its last operation is one.
        percentages: those distributions sum to 100.
        on_map: its outputs come as ``N x K x 1 x 1`` and are read as ``N x K`` (:func:`class_rows`).
    """

    outputs: int
    multi_label: bool = False
    ends_in: str | None = None
    noun: str = "model"
    from_values: bool = False
    on_map: bool = False
    percentages: bool = False

    @classmethod
    def read(cls, outputs: int, multi_label: bool, ends_in: str | None, where: str, noun: str,
             total: float | None = None, on_map: bool = False) -> Scoring:
        """The scoring of a model of ``outputs`` outputs that ``ends_in`` Softmax, Sigmoid or neither (None), with
        ``--multi-label`` or not; ``where`` names the model in the refusal of a Softmax read as multi-label.
        ``total``: its outputs for the images tried are probability distributions (1) or percentages (100)
        (:func:`distribution_total`), read as a Softmax's where its last operation says nothing. ``on_map``: they
        come on a 1 x 1 map."""
        if ends_in is None and total and outputs > 1 and not multi_label:
            return cls(outputs, False, "Softmax", noun, from_values=True, on_map=on_map, percentages=total == 100)
        if multi_label and ends_in == "Softmax":
            raise CnnlabError(f"{where} ends in Softmax, one distribution over its classes, and --multi-label reads "
                              "each output as a class's own probability; expected no --multi-label for it")
        if outputs == 1 and ends_in == "Softmax":
            raise CnnlabError(f"{where} ends in Softmax over one output, which is 1 for every image; expected a "
                              "Softmax over two or more classes, or a Sigmoid for a binary classifier")
        # a Sigmoid over one output is a binary classifier's probability, over several a probability each
        return cls(outputs, multi_label or (ends_in == "Sigmoid" and outputs > 1), ends_in, noun, on_map=on_map)

    @property
    def binary(self) -> bool:
        return self.outputs == 1 and not self.multi_label

    @property
    def classes(self) -> int:
        """The class count the page shows: the outputs, or two for a binary classifier's one."""
        return 2 if self.binary else self.outputs

    def scores(self, out: torch.Tensor) -> torch.Tensor:
        """The model's ``N x outputs`` (or ``N x outputs x 1 x 1``) -> the ``N x classes`` scores
        :meth:`probabilities` reads."""
        out = class_rows(out)
        # float32's smallest normal number as the floor: a confident answer (p = 2e-9 for a logit of -20) keeps its
        # value and its gradient (torch.logit's eps would clamp it, and Grad-CAM would go blank)
        tiny = torch.finfo(torch.float32).tiny
        if self.ends_in == "Softmax":
            out = out.float().clamp_min(tiny).log()  # softmax(log p) = p, and softmax(log 100p) = p too
        elif self.ends_in == "Sigmoid":
            p = out.float()
            out = p.clamp_min(tiny).log() - (1 - p).clamp_min(tiny).log()  # sigmoid(logit p) = p
        return torch.cat([-out / 2, out / 2], 1) if self.binary else out

    def probabilities(self, scores: torch.Tensor) -> torch.Tensor:
        scores = scores.float()
        return scores.sigmoid() if self.multi_label else scores.softmax(1)

    def describe(self) -> str:
        """How the classes of :func:`resolve_classes`'s error are counted."""
        if self.binary:
            return "1 output, read as a binary classifier of 2 classes"
        return f"{self.outputs} output{'s' * (self.outputs != 1)}"

    def notes(self) -> tuple[str, ...]:
        """What the page says about it (nothing for plain logits and a softmax)."""
        shape = (f"The {self.noun} gives its class scores as N x {self.outputs} x 1 x 1, on a 1 x 1 map (a "
                 f"convolutional head's, left unflattened): they are read as N x {self.outputs}.",) \
            if self.on_map else ()
        return shape + self._reading_notes()

    def _reading_notes(self) -> tuple[str, ...]:
        if self.percentages:
            said = (f"The {self.noun}'s outputs are percentages: for every image tried they are at least 0 and sum "
                    "to 100 (a Softmax's times 100). They are shown as the probabilities they are, not softmaxed.",)
        elif self.from_values:
            said = (f"The {self.noun}'s outputs are probabilities already: for every image tried they are at least "
                    "0 and sum to 1, though its last operation is no Softmax (arithmetic after one, or an average of "
                    "several). They are shown as they are, not softmaxed again.",)
        else:
            said = (f"The {self.noun} ends in {self.ends_in}: its outputs are taken as probabilities.",) \
                if self.ends_in else ()
        if self.binary:
            return (*said, "One output: read as a binary classifier's logit z, so that class 1's probability is "
                    "sigmoid(z) and class 0's the rest (the class scores shown are -z/2 and z/2). For a multi-label "
                    "model of one class, pass --multi-label.")
        if self.multi_label:
            source = f"the {self.noun} ends in Sigmoid" if self.ends_in == "Sigmoid" else "--multi-label"
            return (*said, f"Multi-label ({source}): each output is its own class's probability, the sigmoid of its "
                    "score, so they need not sum to 100%.")
        return said


def distribution_total(out: Any) -> float | None:
    """1 where a model's outputs for a few images (``N x K``, a tensor or an array) are probability distributions,
    100 where they are percentages, else None: two or more classes, every value finite and at least 0, each image's
    summing to 1, or each image's to 100 (within float16's rounding). Logits do so for no image but by construction
    (the images tried are random pixels, and every one must)."""
    out = torch.as_tensor(class_rows(out)).detach().double() if out is not None else None
    if out is None or out.dim() != 2 or out.shape[0] < 1 or out.shape[1] < 2 or not bool(out.isfinite().all()) or \
            not bool((out >= 0).all()):
        return None
    return next((total for total in (1.0, 100.0) if bool(((out.sum(1) / total - 1).abs() <= 2e-3).all())), None)


def class_rows(out: Any) -> Any:
    """A model's class scores as rows: ``N x K`` as it is, and ``N x K x 1 x 1`` (the scores of a convolutional
    head left unflattened, as SqueezeNet's and Caffe-converted models give them) as ``N x K``; anything else as it
    is, for :func:`logits_count` to refuse."""
    if isinstance(out, (torch.Tensor, np.ndarray)) and out.ndim == 4 and tuple(out.shape[2:]) == (1, 1):
        return out.reshape(out.shape[0], out.shape[1])
    return out


def on_a_map(out: Any) -> bool:
    """Whether ``out``'s class scores come on a 1 x 1 map (:func:`class_rows`), for the page's note."""
    return getattr(out, "ndim", 0) == 4


def logits_count(out: Any, n: int, where: str, classes: int | None = None, outputs: int = 1) -> int:
    """The class count of ``out``, a model's output for ``n`` images (a tensor, an array, or whatever it returned;
    the first of ``outputs`` where it returned several, :func:`first_output`); refuses anything but float logits
    ``n x classes`` (``classes`` of them where another batch gave that many): an integer output (an ArgMax, a
    comparison) would be read as scores, and one whose first axis is not the images (the logits transposed) would be
    cut into rows of the wrong numbers."""
    rows = class_rows(out)
    shape = tuple(rows.shape) if isinstance(rows, (torch.Tensor, np.ndarray)) else None
    floats = out.is_floating_point() if isinstance(out, torch.Tensor) else \
        isinstance(out, np.ndarray) and np.issubdtype(out.dtype, np.floating)
    if shape is None or len(shape) != 2 or shape[0] != n or shape[1] < 1 or shape[1] != (classes or shape[1]) or \
            not floats:
        shown = _shape_of(out) if shape is not None else _structure(out)
        kind = f" of {dtype_name(out)}" if shape is not None and not floats else ""
        # the shape shown is of one output among several: said so, or it reads as all the model returned
        returns = f"its first of {outputs} outputs, read as the class scores, is" if outputs > 1 else "it returns"
        raise NotAClassifier(where, f"for {n} image{'s' * (n > 1)} {returns} {shown}{kind}",
                             f"{n} x classes of float logits", _what_it_is(out))
    return int(shape[1])


def first_output(out: Any) -> tuple[Any, tuple[Any, ...]]:
    """A model's class scores among what it returned, and its other outputs: ``out`` itself and none, or, for a tuple
    or list whose first item is a float 2-d tensor (logits with an auxiliary head's, or with the features before
    them), that item and the rest. A detector's list of dicts or a segmentation model's maps come back whole, for
    :func:`logits_count` to refuse by what they are."""
    if isinstance(out, (tuple, list)) and out and isinstance(out[0], torch.Tensor) and \
            class_rows(out[0]).dim() == 2 and out[0].is_floating_point():
        return out[0], tuple(out[1:])
    return out, ()


def class_numbers(out: torch.Tensor) -> bool:
    """Whether ``out`` (not empty) holds integers (or booleans) none below 0 or above :data:`MAX_LABEL`."""
    return not out.is_floating_point() and not out.is_complex() and 0 <= int(out.min()) and \
        int(out.max()) <= MAX_LABEL


def per_image(value: Any, batch: int) -> bool:
    """Whether ``value``, computed for a batch of ``batch`` images, holds one entry per image along its first axis:
    a stage to show. A value of the network's own, computed once for the batch (a learnt scalar gate through a
    sigmoid, the padding a TensorFlow-style "SAME" convolution works out), is not one."""
    return getattr(value, "ndim", 0) >= 1 and value.shape[0] == batch


def output_tensors(out: Any, batch: int, name: str = "output", one_image: bool = False) -> list[tuple[str, str, Any]]:
    """Every tensor (or array) of what a network returned for ``batch`` images, one image's (``1 x ...``), named by
    where it sits: ``output``, ``output[1]``, ``output['out']``, ``output[0]['boxes']``, with its row's kind. A tensor
    of one entry per image is cut to the first image's (:data:`OUTPUT`); a list or tuple of one dict (or list) per
    image, as torchvision's detectors return, to its first item, whose tensors are that image's (``one_image``: given
    a batch axis of 1, :data:`LISTED`: their first axis counts the image's boxes, not channels), as is any other
    tensor of a pass of one image; in a larger batch, a value of the network's own, computed once for the batch, is
    left out. An output object (Hugging Face's) is a dict."""
    if isinstance(out, (torch.Tensor, np.ndarray)):
        if per_image(out, batch) and not one_image:
            return [(name, OUTPUT, out[:1])]
        # a pass of one image: what has no axis of it (a squeezed output, a detection list) is still that image's
        return [(name, LISTED if one_image else OUTPUT, out[None])] if one_image or batch == 1 else []
    if isinstance(out, dict):
        return [item for key, value in out.items()
                for item in output_tensors(value, batch, f"{name}[{key!r}]", one_image)]
    if fields := _fields_of(out):  # a dataclass's fields, named as the code that returned it reads them
        return [item for key, value in fields.items()
                for item in output_tensors(value, batch, f"{name}.{key}", one_image)]
    if isinstance(out, (list, tuple)):
        if not one_image and len(out) == batch and out and \
                all(isinstance(o, (dict, list, tuple)) for o in out):
            return output_tensors(out[0], batch, f"{name}[0]", one_image=True)
        return [item for k, value in enumerate(out) for item in output_tensors(value, batch, f"{name}[{k}]", one_image)]
    return []


def outputs_note(noun: str, first: str, others: list[str]) -> tuple[str, ...]:
    """What the page says of a model of several outputs (none for one): how many, and that its first, named
    ``first``, is read as the class scores and not the ``others``. Every kind says it in these words."""
    if not others:
        return ()
    return (f"The {noun} has {len(others) + 1} outputs: its first, {first}, is read as the class scores (not "
            f"{', '.join(others)}).",)


def squeezed_note(noun: str, output: str, count: int) -> tuple[str, ...]:
    """What the page says of a model of one image at a time whose class scores lost their batch axis (a final
    squeeze, reshape or flatten of everything): ``count`` values for its one image, given that image's axis back.
    Every kind says it in these words."""
    return (f"The {noun}'s {output} has no batch axis ({count} values for one image, as after a final squeeze or "
            f"flatten): it is run one image at a time, each image's {count} values read as its class scores.",)


def per_image_shape(value: Any) -> str:
    """One output of a model as the page names it, whatever the batch: ``N x 1000``, or its type if no tensor."""
    shape = getattr(value, "shape", None)
    return " x ".join(["N", *map(str, shape[1:])]) if shape is not None and len(shape) else type(value).__name__


def _shape_of(value: Any) -> str:
    """A tensor's shape as ``2 x 5``; one of no axes (a mean over everything) as a single number, not as no text."""
    shape = getattr(value, "shape", None)
    if shape is None:
        return type(value).__name__
    return " x ".join(map(str, shape)) or "a single number"


def _fields_of(out: Any) -> dict[str, Any]:
    """The fields of a dataclass instance a model returned (its own output type), by name; empty for anything else."""
    if not dataclasses.is_dataclass(out) or isinstance(out, type):
        return {}
    return {f.name: getattr(out, f.name) for f in dataclasses.fields(out)}


def _structure(out: Any) -> str:
    """What a model returned that is not one tensor, in a few words: ``a tuple of 2 (2 x 5, 2 x 16)``, ``a dict of
    'out' (2 x 4 x 64 x 64)``, ``a list of 2 dicts of 'boxes', 'labels', 'scores'``."""
    if isinstance(out, dict) or _fields_of(out):
        fields = out if isinstance(out, dict) else _fields_of(out)
        shown = ", ".join(f"{k!r} ({_shape_of(v)})" for k, v in list(fields.items())[:4])
        return f"{_a(type(out).__name__)} of {shown}{', ...' * (len(fields) > 4)}"
    if isinstance(out, (list, tuple)):
        if out and all(isinstance(o, dict) for o in out):
            keys = ", ".join(map(repr, list(out[0])[:4]))
            return f"{_a(type(out).__name__)} of {len(out)} dicts of {keys}"
        shown = ", ".join(_shape_of(o) for o in out[:4])
        return f"{_a(type(out).__name__)} of {len(out)} ({shown}{', ...' * (len(out) > 4)})"
    return type(out).__name__


def _a(noun: str) -> str:
    return f"{'an' if noun[:1].lower() in 'aeiou' else 'a'} {noun}"


def _what_it_is(out: Any) -> str:
    """A hint after the refusal: a detector's boxes, a backbone's feature maps at several scales or a segmentation
    model's per-pixel scores (alone, in a dict, or first of several outputs) are no class scores."""
    values = list(out.values()) if isinstance(out, dict) else list(out) if isinstance(out, (list, tuple)) else [out]
    if values and all(isinstance(v, dict) for v in values) and any("boxes" in v for v in values):
        return " (these are a detector's boxes)"
    if scales := scales_hint([v.shape for v in values if getattr(v, "ndim", 0) == 4]):
        return scales
    if isinstance(out, (torch.Tensor, np.ndarray)) and out.ndim == 4:
        return map_hint(out.shape, dtype_name(out))
    if isinstance(out, dict) and any(getattr(v, "ndim", 0) == 4 for v in values):
        first = next(v for v in values if getattr(v, "ndim", 0) == 4)
        return map_hint(first.shape, dtype_name(first))
    if isinstance(out, (list, tuple)) and values and getattr(values[0], "ndim", 0) == 4:
        return map_hint(values[0].shape, dtype_name(values[0]))
    return ""


def dtype_name(value: Any) -> str:
    """The element type of a tensor or an array as numpy names it (``float32``, ``int64``, ``bool``)."""
    return str(value.dtype).removeprefix("torch.")


def scales_hint(shapes) -> str:
    """A hint after the refusal of a model whose outputs include maps of ``shapes`` (``N x C x h x w`` each): maps of
    several sizes are a backbone's features at each scale (a segmentation model's scores are of one size), else
    nothing."""
    if len({tuple(shape[2:]) for shape in shapes if len(shape) == 4}) < 2:
        return ""
    return " (maps at several scales are a backbone's features, as timm's features_only=True returns them)"


def map_hint(shape, dtype: str = "float32") -> str:
    """A hint after the refusal of an ``N x K x h x w`` output of element type ``dtype`` (numpy's name): a segmentation
    model's scores per pixel, or, of 1 or 3 channels, as likely an image (an autoencoder's, a denoiser's); of booleans,
    a mask; of integers in 1 channel, a class per pixel (a segmentation model's own ArgMax), or an image of uint8 (none
    for a 1 x 1 map: class scores, read as such, :func:`class_rows`; refused for another reason, which the line says;
    none for integers of other counts, which are neither)."""
    if tuple(shape[2:]) == (1, 1):
        return ""
    if dtype == "bool":
        masks = "a mask per channel" if shape[1] > 1 else "a mask"
        return f" (a map of booleans is {masks}, as a segmentation model that thresholds its scores returns)"
    if dtype.startswith(("int", "uint")):
        if shape[1] == 1:
            grey = ", or a grey image" if dtype == "uint8" else ""
            return (f" (a map of integers of 1 channel is a class per pixel, as a segmentation model that ends in its "
                    f"own ArgMax returns{grey})")
        return " (a map of 3 channels of uint8 is an image)" if shape[1] == 3 and dtype == "uint8" else ""
    if shape[1] in (1, 3):
        return (f" (a map of {shape[1]} channel{'s' * (shape[1] > 1)} is an image, as an autoencoder returns, or a "
                "segmentation model's scores per pixel)")
    return " (a map of scores per pixel is a segmentation model's)"


def read_classes(path: str | Path) -> tuple[str, ...]:
    """Class names from a file: one per line (blank lines only after the last), or a JSON list of strings; each
    name once."""
    path = Path(path)
    if not path.is_file():
        # names typed in place (--classes '["cat", "dog"]') are no path either: said to be expected in a file
        raise CnnlabError(f"--classes {path} is not a file; expected the path of a file of class names (one per line, "
                          "or a JSON list of strings)")
    # utf-8-sig: the byte-order mark Windows editors write would otherwise stay in the first name, and hide the "["
    # of a JSON list, which would then be read as lines. UTF-16 (Notepad's "Unicode") starts with its own mark: read
    # as UTF-8, each of its names held NULs.
    data = path.read_bytes()
    utf16 = data.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE))
    text = data.decode("utf-16" if utf16 else "utf-8-sig", errors="replace")
    if not text.lstrip().startswith(("[", "{")):
        names = [line.strip() for line in text.splitlines()]
        while names and not names[-1]:  # a final newline, or a few empty lines after the last name, name nothing
            names.pop()
        if "" in names:  # skipped, it moved every later name onto the class before its own
            raise CnnlabError(f"--classes {path} line {names.index('') + 1} is blank; expected one class name per "
                              "line (blank lines only after the last name)")
        return class_names(names, f"--classes {path}")
    try:
        names = json.loads(text)
    except ValueError as e:
        raise CnnlabError(f"--classes {path} is not valid JSON ({e}); expected a JSON list of strings, or one "
                          "class name per line") from None
    return class_names(names, f"--classes {path}", ", or one class name per line")


def stored_classes(text: Any, source: str) -> tuple[str, ...]:
    """Class names stored with a model (a cnnlab export's ``cnnlab.classes``: a JSON list as text), checked as a
    ``--classes`` file's are; ``source`` names the file and the key, for the refusal, which says how to name them
    instead."""
    instead = "or pass --classes FILE to name the classes instead"
    try:
        return class_names(json.loads(text), source)
    except CnnlabError as e:  # a ValueError too: first
        raise CnnlabError(f"{e}; {instead}") from None
    except (ValueError, TypeError) as e:
        raise CnnlabError(f"{source} is not valid JSON ({summary(e)}); expected a JSON list of strings; {instead}") \
            from None


def literal(text: str) -> Any:
    """The value of a Python literal a model's metadata holds as text (:func:`ast.literal_eval`: nothing in it runs),
    or None for text that is not one."""
    try:
        return ast.literal_eval(text)
    except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
        return None


def indexed_names(text: str) -> tuple[str, ...] | None:
    """Class names stored as a Python dict of output index to name, as Ultralytics writes its models' ``names``
    metadata (``{0: 'cat', 1: 'dog'}``), read as a literal (:func:`ast.literal_eval`: nothing in it runs); None where
    the text is no such dict of the indices 0 to K-1 (another tool's ``names`` means something else)."""
    return names_by_index(literal(text))


def names_by_index(names: Any) -> tuple[str, ...] | None:
    """The names of a dict of the indices 0 to K-1 to names, in index order (an Ultralytics network's ``names``);
    None for anything else."""
    if not isinstance(names, dict) or not all(type(k) is int and isinstance(v, str) for k, v in names.items()) or \
            sorted(names) != list(range(len(names))):
        return None
    return tuple(names[i] for i in range(len(names)))


def id2label_names(labels: Any) -> tuple[str, ...] | None:
    """The class names of a Hugging Face ``id2label`` (``{"0": "tench", ...}`` in a config.json, or int keys on a
    loaded config), in index order; None where it is of another shape or holds only the placeholders a config gets
    when nobody named the classes (``LABEL_0``, ``LABEL_1``, ...)."""
    if not isinstance(labels, dict) or not labels:
        return None
    try:
        by_index = {int(k): v for k, v in labels.items()}
    except (TypeError, ValueError):
        return None
    names = [by_index.get(i) for i in range(len(by_index))]
    if not all(isinstance(n, str) for n in names) or all(n == f"LABEL_{i}" for i, n in enumerate(names)):
        return None
    return tuple(names)


def class_names(names: Any, source: str, otherwise: str = "") -> tuple[str, ...]:
    """``names`` (parsed JSON, or a file's lines) as class names: a list of at least 2 strings, each once. Refusals
    name ``source`` (``--classes FILE``, or a model's metadata key) and end with ``otherwise``, another form it
    takes."""
    if isinstance(names, dict):  # e.g. imagenet_class_index.json: {"0": ["n01440764", "tench"], ...}
        raise CnnlabError(f"{source} is a JSON object of {len(names)} entries; expected a JSON list of strings in "
                          f'output order (["tench", "goldfish", ...]){otherwise}')
    if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
        raise CnnlabError(f"{source} must be a JSON list of strings{otherwise}, got {summary(json.dumps(names), 60)}")
    if len(names) < 2:
        raise CnnlabError(f"{source} holds {len(names)} class name{'' if len(names) == 1 else 's'}, expected at "
                          "least 2")
    first: dict[str, int] = {}
    for i, name in enumerate(names):
        if name in first:  # two outputs with one name would make the page's predictions ambiguous
            raise CnnlabError(f"{source} names {name!r} twice (class {first[name]} and class {i}); expected each "
                              "class name once")
        first[name] = i
    return tuple(names)


def resolve_classes(given: tuple[str, ...] | None, stored: tuple[str, ...] | None, scoring: Scoring,
                    folder_classes: tuple[str, ...] = (),
                    stored_in: str = "the model file") -> tuple[tuple[str, ...], str]:
    """The class names of a model scored so (``scoring.classes`` of them), and where they came from (for the page).

    In order: the ``--classes`` file, names stored with the model (``stored_in`` says where), the image folder's
    class subfolders (when there are exactly as many), else ``class 0`` ... ``class K-1``.
    """
    count = scoring.classes
    for names, where in ((given, "--classes"), (stored, stored_in), (folder_classes, "the image folders")):
        if names and len(names) == count:
            return tuple(names), where
        if names and where != "the image folders":
            raise CnnlabError(f"{where} names {len(names)} classes, but the model has {scoring.describe()}")
    return numbered_classes(count), "numbered (no names given: pass --classes FILE)"


def numbered_classes(count: int) -> tuple[str, ...]:
    """The names of a model's classes where nothing names them: ``class 0`` ... ``class K-1``."""
    return tuple(f"class {i}" for i in range(count))
