"""One model abstraction behind the explorer's page: a cnnlab run, an ONNX graph or a PyTorch model.

Every kind answers the same few questions (:class:`ExploreModel`), so the routes (:mod:`cnnlab.explore.server`),
the page (``static/model.js``) and the static export (:mod:`cnnlab.explore.page`) never ask which kind it is:

* ``classes``, ``spec`` (:class:`InputSpec`: layout, height and width, channels, scaling), ``scoring``
  (:class:`cnnlab.explore.outputs.Scoring`: softmax over the classes, a binary classifier's one output, or a
  probability per class) and
  ``notes`` (what the page must say about where things came from, e.g. that a ``module:function`` was imported);
* ``logits(images)``: uint8 ``N x C x H x W`` images -> float ``N x K`` class scores;
* ``stages(image, keep)``: the named feature maps of one image (``1 x C x h x w`` each, the last row the logits),
  each stage's row holding what ``keep`` takes of its output as the pass makes it, where given (what the page
  pictures, :func:`cnnlab.explore.probe.stage_maps`; its shape alone, :func:`shape_only`), the outputs whole;
* ``kernels()``: the first convolution's weights (``out x in x kh x kw``) or None; ``layers()``: the layer table,
  a row per layer: ``name``, ``op``, one image's output ``shape``, ``params`` and ``macs`` (the multiply-accumulates
  of one image since the row before, counted with torch's formulas; None where a shape it needs is unknown);
* ``attribution(image, target)``: Grad-CAM and saliency where gradients exist, occlusion sensitivity otherwise.

A network that is no classifier (a detector, a segmentation model, a backbone's features: its outputs are no
``N x K`` scores, :class:`cnnlab.explore.outputs.NotAClassifier`) is opened where :attr:`Options.any_network` says
(``explore`` and ``summary``: what its layers compute needs no classes) with ``scoring`` None and no ``classes``
(but the names ``--classes`` gives the channels of its scores per pixel: :func:`blank_reading`);
its ``stages`` end in a row per tensor it returns, named by where it sits (``output['out']``), and it has no
``logits`` and no ``attribution``. ``predict`` and ``eval`` refuse it.

The kinds: a cnnlab checkpoint (:class:`RunModel`, read through :func:`cnnlab.inference.load_trained`), an ONNX
file (:mod:`cnnlab.explore.onnx_model`), a ``torch.export`` program (``.pt2``, :mod:`cnnlab.explore.pt2_model`) or
``package.module:function`` (:mod:`cnnlab.explore.module_model`); :func:`cnnlab.explore.sources.open_model` picks
one from what the user named. How each kind's outputs are read is :mod:`cnnlab.explore.outputs`.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from functools import partial
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
import torch.nn.functional as F

from cnnlab.checks import fail, int_in_range, number
from cnnlab.errors import CnnlabError, ForeignCheckpointError, summary
from cnnlab.explore.boxes import box_lists, scores_anchors
from cnnlab.explore.gradcam import Explanation, NoSpatialStage, explain, is_spatial
from cnnlab.explore.images import colour, image_array, overlay, png_url, to_unit
from cnnlab.explore.outputs import (
    RETURNED,
    NotAClassifier,
    Scoring,
    distribution_total,
    read_classes,
    resolve_classes,
)
from cnnlab.explore.probe import (
    MAPS_PER_ROW,
    among,
    explanation_pngs,
    map_rows,
    output_entries,
    segment_kinds,
    stage_maps,
    top_classes,
)
from cnnlab.explore.trained import load_trained
from cnnlab.models.summary import layer_summary
from cnnlab.picture import (
    CENTRE_CROP,
    LETTERBOX,
    PAD,
    SHORTER_SIDE,
    SQUARE_KEY,
    STRETCH,
    Fit,
    Letterbox,
    ShorterSide,
    as_hw,
)
from cnnlab.report.features import Row, first_conv, run_rows
from cnnlab.runs.checkpoint import ELSEWHERE

LAYOUTS = ("NCHW", "NHWC")
PIXEL_RANGES = {"0-1": 1, "0-255": 255}  # --pixel-range: the largest value a pixel takes in the model's input
SIDES = (8, 2048)  # the input's height and width, from --input-size or the model: images are read and run at it
OCCLUSION_GRID = 7  # 7 x 7 patches: 49 extra forward passes in one batch, a second for ResNet-18 at 224 px on a CPU
# The pixels occlusion runs a model on at once: its 50 images at 224 x 224 in one batch, fewer above (2 at 1024 px, 1
# at 2048). All 50 at 1024 px took a 124-parameter ONNX graph to 10.5 GB (onnxruntime's im2col buffers and maps are
# per pixel), and at 2048 px the kernel killed it.
OCCLUSION_PIXELS = (OCCLUSION_GRID ** 2 + 1) * 224 * 224
# How the page and `cnnlab summary` say pictures were given the input's shape other than by cnnlab's own padding
FITTED = {LETTERBOX: "letterboxed with grey 114 as Ultralytics' predict does",
          STRETCH: "stretched to it, not letterboxed, as Ultralytics' predict does for RT-DETR and depth models",
          SHORTER_SIDE: "resized by the shorter side and centre-cropped as Ultralytics' classify predict does"}


def fitted_words(fit: Fit, hw: tuple[int, int]) -> str | None:
    """How the page says pictures are given an input of ``hw`` by ``fit`` (:data:`FITTED`, Ultralytics' letterbox to a
    multiple of its stride, or the :class:`cnnlab.picture.ShorterSide` of a Hugging Face processor, of timm's
    pretrained_cfg or of torchvision's weights' transforms), or None for cnnlab's own padding."""
    if isinstance(fit, Letterbox):
        return f"letterboxed with grey 114 padded only to a multiple of its stride, {fit.stride} (each picture's " \
            "minimum rectangle), as Ultralytics' predict does"
    if not isinstance(fit, ShorterSide) or fit.length is None:
        return FITTED.get(fit)
    crop = hw[0] if hw[0] == hw[1] else f"{hw[0]} x {hw[1]}"
    resized = f"resized to {fit.length} x {fit.length} ({fit.resample}), its shape not kept," if fit.squash else \
        f"resized by the shorter side to {fit.length} ({fit.resample})"
    return f"{resized} and centre-cropped to {crop} as {fit.said}"


def framed_as_carried(spec: InputSpec, carried: Carried) -> InputSpec:
    """``spec`` giving pictures the input's shape as ``carried`` says, where it says (the page names where; and where
    it says a framing not made here, that pictures are padded). A framing of its own lengths (a Hugging Face
    processor's: resized to 256, cropped to 224) holds at the input size it was said for only: at another
    (``--input-size``), pictures are padded as any model's."""
    fit = carried.fit
    if fit == PAD and carried.fit_from and spec.hw == carried.size:  # a framing it says, not made here: padded
        return replace(spec, origin={**spec.origin, "padding": carried.fit_from})
    if fit == PAD or (isinstance(fit, ShorterSide) and fit.length is not None and spec.hw != carried.size):
        return spec
    return replace(spec, fit=fit, origin={**spec.origin, str(fit): carried.fit_from})


def ultralytics_fit(task: str | None, kind: str, stride: int | None = None) -> Fit:
    """How Ultralytics' predict feeds a network of its ``task`` whose head or model class is named ``kind``
    (engine/predictor.py and its task's predictor): a classifier the shorter side resized and the centre cropped,
    RT-DETR (which ``YOLO(file)`` picks by its head's name) and a depth model stretched (``scale_fill``), anything
    else letterboxed: to the input's whole shape, or, where the network takes pictures of any shape (``stride``
    given: a PyTorch network, an export of dynamic sides), only up to a multiple of its stride (its ``auto``)."""
    if task == "classify":
        return SHORTER_SIDE
    if "RTDETR" in kind or task == "depth":
        return STRETCH
    return LETTERBOX if stride is None else Letterbox(stride)


@dataclass(frozen=True)
class InputSpec:
    """How an image becomes the model's input.

    Attributes:
        channels: 1 (grey) or 3 (RGB) or what the first convolution takes.
        height, width: the model's input (images are read resized to fit it and padded to its shape, a square as a
            rule).
        crop: centre-crop pictures instead of padding them (:func:`cnnlab.picture.read_picture`): a cnnlab run on a
            folder of images, whose training images were cropped so.
        fit: how pictures not cropped are given the input's shape (:func:`cnnlab.picture.read_picture`): cnnlab's
            padding, or as Ultralytics' predict feeds the networks it exports (letterboxed on grey 114 to the whole
            input or, a :class:`cnnlab.picture.Letterbox`, to each picture's minimum rectangle, stretched, or resized
            by the shorter side and centre-cropped), or as a Hugging Face image processor or torchvision's weights'
            ``transforms()`` frame them (a :class:`cnnlab.picture.ShorterSide` of its own), as :func:`fitted_words`
            says.
        layout: ``"NCHW"`` or ``"NHWC"``.
        pixel_max: 1 (pixels / 255, as torchvision's models take them) or 255 (the pixel values themselves, as
            Caffe-converted models and Keras's ``caffe`` preprocessing take them).
        bgr: the model takes its three channels in blue, green, red order (OpenCV's and Caffe's).
        mean, std: per-channel normalisation on the ``pixel_max`` scale and in the model's channel order
            (``(x - mean) / std``), or None.
        origin: where each of these was read from, for the page (``"graph"``, ``"flags"``, ``"checkpoint"``).
        dtype: the element type the model takes (an ONNX graph's input may be float16, double, or uint8: the pixel
            values themselves, rounded); :meth:`to_input` gives float32 either way, and the kind casts it.
        read_at: the side pictures are read at where it is not the input's, or None: a cnnlab run's stored side
            (``--image-size``), which its preprocessing resized to its input (``--resize``) as :meth:`to_input`
            does, kept by its safetensors export (``cnnlab.image_size``); read at the input's side instead, the
            pictures would be other images than the run's (one resize, not two).
    """

    channels: int
    height: int
    width: int
    layout: str = "NCHW"
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None
    origin: dict[str, str] = field(default_factory=dict)
    crop: bool = False
    fit: Fit = PAD
    pixel_max: int = 1
    bgr: bool = False
    dtype: str = "float32"
    read_at: int | None = None

    def to_input(self, images: torch.Tensor) -> torch.Tensor:
        """uint8 RGB ``N x C x H x W`` images -> the float32 model input (scaled, in the model's channel order,
        normalised, in ``layout``)."""
        x = images.float() if self.pixel_max == 255 else images.float() / 255
        # (a picture letterboxed to its minimum rectangle is fed at that shape of its own, as Ultralytics feeds it)
        if tuple(x.shape[-2:]) != self.hw and not isinstance(self.fit, Letterbox):
            x = F.interpolate(x, size=self.hw, mode="bilinear", align_corners=False)
        if self.bgr:
            x = x.flip(1)
        if self.mean is not None:
            x = x - torch.tensor(self.mean).view(1, -1, 1, 1)
        if self.std is not None:
            x = x / torch.tensor(self.std).view(1, -1, 1, 1)
        return x.permute(0, 2, 3, 1).contiguous() if self.layout == "NHWC" else x

    @property
    def hw(self) -> tuple[int, int]:
        return self.height, self.width

    def fed_hw(self, image: torch.Tensor) -> tuple[int, int]:
        """The height and width of the input the network is fed for ``image``, read for it: the image's own where each
        picture has a shape of its own (a :class:`cnnlab.picture.Letterbox` fit), else the input's."""
        return tuple(image.shape[-2:]) if isinstance(self.fit, Letterbox) else self.hw

    @property
    def read_hw(self) -> tuple[int, int]:
        """The height and width pictures are read at (:attr:`read_at`, else the input's): :meth:`to_input` resizes
        them to the input."""
        return (self.read_at, self.read_at) if self.read_at is not None else self.hw

    def zeros(self, n: int) -> torch.Tensor:
        """``n`` black uint8 images of this input, to try the model on."""
        return torch.zeros(n, self.channels, self.height, self.width, dtype=torch.uint8)

    def probe(self, n: int = 3) -> torch.Tensor:
        """``n`` uint8 images of random pixels (the same every time), to see what the model's outputs are."""
        generator = torch.Generator().manual_seed(0)
        return torch.randint(0, 256, (n, self.channels, self.height, self.width), dtype=torch.uint8,
                             generator=generator)

    def shape_text(self, n: int) -> str:
        """``n x C x H x W`` (or ``n x H x W x C``): the shape the model is fed, for an error line."""
        dims = (n, self.channels, self.height, self.width) if self.layout == "NCHW" else \
            (n, self.height, self.width, self.channels)
        return " x ".join(map(str, dims))

    def describe(self) -> str:
        """One line for the page: what the model is fed and where each part of that was read."""
        axes = "N x C x H x W" if self.layout == "NCHW" else "N x H x W x C"
        scaling = "pixels 0-255" if self.pixel_max == 255 else "pixels / 255"
        if self.bgr:
            scaling += " in B, G, R order"
        if self.mean is not None or self.std is not None:
            scaling += f", minus mean {_short(self.mean or (0.0,))}, divided by std {_short(self.std or (1.0,))}"
        where = "; ".join(f"{k} from the {v}" for k, v in self.origin.items())
        read = f" (pictures read at {self.read_at} px, then resized)" if self.read_at is not None else ""
        words = fitted_words(self.fit, self.hw)
        fitted = f", pictures {words}" if words and not self.crop else ""
        return (f"{self.dtype} {axes}, {self.channels} channel{'s' if self.channels != 1 else ''} at {self.height} x "
                f"{self.width}{read}{fitted}, {scaling}" + (f" ({where})" if where else ""))


@dataclass(frozen=True)
class Carried:
    """What a model from a library carries about how it is fed and what it answers (none of it for a plain module
    or graph): its class names, input size, normalisation and how pictures are given its input's shape, and where
    each was read, for the page."""

    classes: tuple[str, ...] | None = None
    classes_from: str = "the model file"
    size: tuple[int, int] | None = None
    size_from: str = ""
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None
    mean_from: str = ""
    fit: Fit = PAD  # how it says its pictures are given the input's shape (InputSpec.fit)
    fit_from: str = ""  # where it says so, for the page


class Scaling:
    """What a model does to its input before its first convolution, where that is arithmetic with constants:
    ``a * x + b`` (per channel where the constants are), built step by step as a graph's nodes run.

    A Keras model keeps its preprocessing inside (``Rescaling(1/255)``, ``Rescaling(1/127.5, offset=-1)``, a
    ``Normalization`` layer) and takes the pixel values themselves; so does any network whose first convolution reads
    the input through such steps. :meth:`pixel_max` tells which pixel range they are made for.
    """

    def __init__(self):
        self.a, self.b = np.ones(1), np.zeros(1)

    def step(self, op: str, constant: Any, input_first: bool = True) -> Scaling | None:
        """This scaling followed by ``op`` ("mul", "div", "add" or "sub") with ``constant`` (the input the first
        operand, or the second: ``c - x``); None where the result is no ``a * x + b`` (a constant divided by the
        input) or the constants do not broadcast together."""
        c = np.asarray(constant, dtype=np.float64)
        a, b = self.a, self.b
        try:
            if op == "mul":
                a, b = a * c, b * c
            elif op == "div" and input_first:
                a, b = a / c, b / c
            elif op == "add":
                b = b + c
            elif op == "sub":
                a, b = (a, b - c) if input_first else (-a, c - b)
            else:
                return None
        except ValueError:  # numpy's: shapes that do not broadcast
            return None
        out = Scaling()
        out.a, out.b = a, b
        return out

    def permuted(self, perm: list[int]) -> Scaling | None:
        """The same scaling after the input's axes are permuted (NHWC to NCHW): per-channel constants move too;
        None where a constant has more axes than the permutation."""
        if max(self.a.ndim, self.b.ndim) > len(perm):
            return None
        out = Scaling()
        out.a, out.b = (np.transpose(v.reshape((1,) * (len(perm) - v.ndim) + v.shape), perm) for v in (self.a, self.b))
        return out

    def pixel_max(self) -> int | None:
        """The pixel range (a :data:`PIXEL_RANGES` value) this scaling is made for: the one of 0-1 and 0-255 it turns
        into a spread of a normalised input's size (0.5 to 30 wide, reaching into -3..3, in every channel). One over
        255 apart, the two never both fit; None where neither does (a Caffe mean subtracted alone) or there is no
        scaling. Fed the other range, such a model sees a nearly constant picture or values hundreds of times too
        large, and answers with confidence."""
        if np.allclose(self.a, 1) and np.allclose(self.b, 0):  # the input as it is (or times 1): nothing said
            return None
        fits = []
        for pixel_max in PIXEL_RANGES.values():
            low, high = np.minimum(self.b, self.a * pixel_max + self.b), np.maximum(self.b, self.a * pixel_max + self.b)
            if np.all(high - low >= 0.5) and np.all(high - low <= 30) and np.all(high >= -3) and np.all(low <= 3):
                fits.append(pixel_max)
        return fits[0] if len(fits) == 1 else None


def scaled_as_made(spec: InputSpec, options: Options, scaling: Scaling | None, noun: str) -> InputSpec:
    """``spec`` fed the pixel range ``scaling`` (the model's own, before its first convolution) is made for, where no
    flag says how to scale (``--pixel-range``, ``--mean``, ``--std``) and the scaling tells; the page says it came
    from the ``noun``'s own scaling."""
    if options.pixel_range is not None or options.mean is not None or options.std is not None or scaling is None:
        return spec
    pixel_max = scaling.pixel_max()
    if pixel_max is None:
        return spec
    return replace(spec, pixel_max=pixel_max, origin={**spec.origin, "pixel range": f"{noun}'s own scaling"})


def square_as_exported(spec: InputSpec, metadata: dict[str, Any]) -> InputSpec:
    """``spec`` cropping pictures where a cnnlab export's metadata says its training pictures were cropped (a folder
    of images): padded, the model would see another image than in training, and answer otherwise."""
    if metadata.get(SQUARE_KEY) != CENTRE_CROP:
        return spec
    return replace(spec, crop=True, origin={**spec.origin, "centre-crop": "metadata"})


def blank_reading(model: ExploreModel, options: Options, noun: str, stored: tuple[str, ...] = (),
                  stored_in: str = "the model file") -> tuple[tuple[str, ...], tuple[str, ...]]:
    """What one blank image's pass tells of a model just opened (the ``noun`` the page calls it), run once for both:
    the page's notes on stages that work on tokens (:func:`_token_notes`), and its classes: a classifier's own, a
    network's those ``--classes`` gives what its page pictures (:func:`_network_classes`), else those its file
    names (``stored``, read from ``stored_in``: an Ultralytics detector's metadata, a Hugging Face model's
    ``id2label``) where they name what the page pictures, which a note says (a classifier's ``stored`` names are
    its own already, :func:`read_outputs`: not read here)."""
    try:
        rows = model.stages(model.spec.zeros(1)[0], keep=shape_only)
    except Exception:  # it answered for blank images already; a note is not worth a refusal, a name to check is
        if model.scoring is None and options.classes is not None:
            raise
        return (), model.classes
    classes = model.classes if model.scoring is not None else \
        _network_classes(model, options, [r for r in rows if r.kind in RETURNED], stored)
    notes = _token_notes(model, noun, [r for r in rows if r.kind not in RETURNED])
    if model.scoring is None and classes and options.classes is None:
        notes += (f"The names of the {len(classes)} classes of what it finds are read from {stored_in}.",)
    return notes, classes


def shape_only(value: torch.Tensor) -> torch.Tensor:
    """A stage's output as a tensor of its shape and element type that holds no values (on the meta device): all
    that :func:`blank_reading` reads of a stage."""
    return torch.empty(value.shape, dtype=value.dtype, device="meta")


def _token_notes(model: ExploreModel, noun: str, rows: list[Row]) -> tuple[str, ...]:
    """What the page says of a network whose stages (``rows``, a blank image's, not its outputs) work on tokens
    (``N x L x C``, a vision transformer's) rather than feature maps: those stages have no maps to show, and Grad-CAM,
    where there is one, is taken at the last map before them (a ViT's patch embedding), which is not where the
    network decides; nothing for a convolutional network."""
    maps = [k for k, r in enumerate(rows) if is_spatial(r.output)]
    after = rows[maps[-1] + 1:] if maps else rows
    # a pooling of the tokens (Hugging Face's Swin averages them as N x C x L with nn.AdaptiveAvgPool1d) gives their
    # features, N x C x 1: no tokens
    # nor are a YOLO head's scores per anchor (N x 84 x 8400), flattened from its maps
    tokens = [r for r in after if r.output.dim() == 3 and "pool" not in r.kind.lower() and
              not scores_anchors(r.output.shape[1:], model.spec.hw)]
    if not tokens:
        return ()
    length, width = tokens[-1].output.shape[1:]
    said = f"{len(tokens)} of its stages work on tokens (N x {length} x {width}, as a vision transformer's do), " \
           "not on feature maps: they have no maps to show"
    if not maps:
        return (f"Not a convolutional network: {said}, and no stage has one.",)
    attribution = ", and Grad-CAM is taken at the last map, before the layers that mix the tokens and decide" \
        if model.kind != "ONNX" and model.scoring is not None else ""
    return (f"Not a convolutional network throughout: after {rows[maps[-1]].name} the {noun} turns its map into "
            f"tokens; {said}{attribution}.",)


def _short(values) -> str:
    return "[" + ", ".join(f"{v:.4g}" for v in values) + "]"


class ExploreModel(Protocol):
    """What the page needs from a model, whatever its kind (see the module docstring)."""

    kind: str
    name: str
    classes: tuple[str, ...]
    spec: InputSpec
    scoring: Scoring | None  # None: a network that is no classifier, opened for its layers
    notes: tuple[str, ...]
    tta: bool  # its probabilities average the image and its mirror (a cnnlab run trained so); others: False

    def logits(self, images: torch.Tensor) -> torch.Tensor: ...

    def stages(self, image: torch.Tensor, keep: Callable[[torch.Tensor], Any] | None = None) -> list[Row]: ...

    def kernels(self) -> torch.Tensor | None: ...

    def layers(self) -> list[dict[str, Any]]: ...

    def attribution(self, image: torch.Tensor, target: int) -> dict[str, Any]: ...


@dataclass(frozen=True)
class Options:
    """What the user said about a model from elsewhere (the CLI's flags); None where the graph should say it."""

    classes: tuple[str, ...] | None = None
    input_size: int | tuple[int, int] | None = None  # a side, or (height, width); kept as (height, width)
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None
    layout: str | None = None
    multi_label: bool = False
    pixel_range: str | None = None  # a key of PIXEL_RANGES; None: 0-1
    bgr: bool = False
    weights: str | Path | None = None  # a state dict for a network built by name or by module:function
    # open a network whose outputs are no class scores for its layers (explore, summary), rather than refuse it
    any_network: bool = False
    no_classes: bool = False  # --no-classes: read any model's outputs as they are, as a network's (explore, summary)

    def __post_init__(self):
        if self.input_size is not None:
            hw = as_hw(self.input_size)
            if len(hw) != 2:
                fail("--input-size", "a side, or a height and a width", self.input_size)
            for side in hw:
                int_in_range(side, "--input-size", SIDES[0], SIDES[1] + 1,
                             expected=f"a side (or a height and a width) from {SIDES[0]} to {SIDES[1]}")
            object.__setattr__(self, "input_size", hw)
        if self.layout is not None and self.layout not in LAYOUTS:
            fail("--layout", "NCHW or NHWC", self.layout)
        if self.pixel_range is not None and self.pixel_range not in PIXEL_RANGES:
            fail("--pixel-range", " or ".join(PIXEL_RANGES), self.pixel_range)
        for name, values, low in (("--mean", self.mean, None), ("--std", self.std, 0)):
            if values is not None:
                if not 1 <= len(values) <= 4:
                    fail(name, "1 to 4 numbers (one per channel, or one for all)", list(values))
                for v in values:
                    number(v, name, low=low, low_open=low is not None)

    @classmethod
    def from_flags(cls, classes: str | Path | None = None, input_size: int | tuple[int, int] | None = None,
                   mean: Any = None, std: Any = None, pixel_range: str | None = None, bgr: bool = False,
                   layout: str | None = None, multi_label: bool = False,
                   weights: str | Path | None = None, no_classes: bool = False) -> Options:
        """The options of the CLI's model flags as given (``classes``: the ``--classes`` file, read here)."""
        return cls(classes=read_classes(classes) if classes is not None else None, input_size=input_size,
                   mean=None if mean is None else tuple(mean), std=None if std is None else tuple(std),
                   pixel_range=pixel_range, bgr=bgr, layout=layout, multi_label=multi_label, weights=weights,
                   no_classes=no_classes)

    def check_records_its_own(self) -> None:
        """Refuse the flags that say how to feed a model from elsewhere for a cnnlab checkpoint, which records its
        input size, normalisation, scoring and weights itself (``--classes`` may still rename its classes)."""
        if self.input_size or self.scaling_flags() or self.layout or self.multi_label or self.weights is not None:
            raise CnnlabError("--input-size, --mean, --std, --pixel-range, --bgr, --layout, --multi-label and "
                              "--weights are for models from elsewhere; a cnnlab checkpoint records its own")
        if self.no_classes:
            raise CnnlabError("--no-classes reads a model from elsewhere as a network whatever its outputs; a cnnlab "
                              "checkpoint is a classifier, read as one; expected no --no-classes for it")

    def scaling_flags(self) -> list[str]:
        """The flags given that say how pixels become the model's input."""
        return [flag for flag, v in (("--mean", self.mean), ("--std", self.std), ("--pixel-range", self.pixel_range),
                                     ("--bgr", self.bgr or None)) if v is not None]

    def check_no_scaling_for(self, metadata: dict[str, Any], where: str) -> None:
        """A cnnlab export normalises inside its graph (its ``cnnlab.input`` metadata says it takes RGB pixels /
        255): ``--mean``/``--std``/``--pixel-range``/``--bgr`` would change its input a second time, silently
        shifting every answer, so they are refused; as is ``--multi-label``: cnnlab trains softmax classifiers."""
        given = self.scaling_flags()
        if given and "cnnlab.input" in metadata:
            raise CnnlabError(f"{' and '.join(given)} would change the input of {where}: it is a cnnlab export, with "
                              f"its normalisation inside the graph (it takes {metadata['cnnlab.input']}); expected "
                              f"no {'/'.join(given)} for it")
        if self.multi_label and "cnnlab.classes" in metadata:
            raise CnnlabError(f"--multi-label would read {where} as a probability per class: it is a cnnlab export, "
                              "of a softmax classifier (trained with cross-entropy); expected no --multi-label for it")

    def spec(self, channels: int, height: int | str | None, width: int | str | None, layout: str,
             origin: dict[str, str], where: str, fixed_by: str) -> InputSpec:
        """The input spec: the flags' mean/std, checked against the number of channels, and the model's height and
        width (``fixed_by`` the graph where both are static, else ``--input-size``, which must agree with a static
        one; None or a name is a dynamic side)."""
        mean, std = (self._per_channel(v, n, channels) for v, n in ((self.mean, "--mean"), (self.std, "--std")))
        if self.bgr and channels != 3:
            raise CnnlabError(f"--bgr turns an RGB picture's three channels round, but {where} takes {channels} "
                              f"channel{'s' * (channels != 1)}; expected no --bgr for it")
        origin = dict(origin)
        static = (height, width)
        given = self.input_size
        # bounded as --input-size is: a graph fixed to 100000 x 100000 asked for 30 GB for its first black image
        if not all(SIDES[0] <= side <= SIDES[1] for side in static if isinstance(side, int)):
            shown = " x ".join(str(d) if isinstance(d, int) else "?" for d in static)
            raise CnnlabError(f"{where} fixes its input's height x width to {shown}; expected sides from {SIDES[0]} "
                              f"to {SIDES[1]} pixels, as --input-size takes")
        if all(isinstance(d, int) for d in static):
            if given is not None and given != static:
                raise CnnlabError(f"--input-size {_size_text(given)} differs from the {height} x {width} input "
                                  f"{where} is fixed to; expected --input-size {_size_text(static)} or none")
            hw, origin["size"] = static, fixed_by
        elif given is not None:
            for name, side, fixed in zip(("height", "width"), given, static, strict=True):
                if isinstance(fixed, int) and fixed != side:
                    raise CnnlabError(f"--input-size {_size_text(given)} gives a {name} of {side}, but {where} fixes "
                                      f"its {name} to {fixed}; expected a {name} of {fixed}")
            hw, origin["size"] = given, "flags"
        elif all(d is None for d in static):
            raise CnnlabError(f"{where} has no fixed input size; pass --input-size SIDE or HEIGHTxWIDTH")
        else:
            # a free side by its name, quoted: Hugging Face's exports name them "height" and "width", which read
            # "(height x width height x width)" unquoted
            shown = " x ".join(str(d) if isinstance(d, int) else repr(d) if d else "?" for d in static)
            raise CnnlabError(f"{where} has a dynamic input size (height x width {shown}); pass --input-size SIDE or "
                              "HEIGHTxWIDTH")
        if self.scaling_flags():
            origin["normalisation"] = "flags"
        return InputSpec(channels, *hw, layout, mean, std, origin, pixel_max=PIXEL_RANGES[self.pixel_range or "0-1"],
                         bgr=self.bgr)

    @staticmethod
    def _per_channel(values, name: str, channels: int) -> tuple[float, ...] | None:
        if values is None:
            return None
        if len(values) == 1:
            return tuple(float(values[0]) for _ in range(channels))
        if len(values) != channels:
            wanted = "1 number (the model takes 1 channel)" if channels == 1 else \
                f"1 or {channels} numbers (the model takes {channels} channels)"
            raise CnnlabError(f"{name} must give {wanted}, got {len(values)}")
        return tuple(float(v) for v in values)


def _size_text(hw: tuple[int, int]) -> str:
    """``--input-size`` as the user writes it: ``224``, or ``256x128`` for another height and width."""
    return str(hw[0]) if hw[0] == hw[1] else f"{hw[0]}x{hw[1]}"


def opened_as_network(refusal: NotAClassifier, options: Options, name: str) -> tuple[str, ...]:
    """What the page says of a model that is no classifier (``refusal`` says why), opened for its layers where
    ``options.any_network`` lets it (``explore``, ``summary``); the refusal raised otherwise (``predict``, ``eval``),
    and ``--multi-label``, which reads outputs as class probabilities, refused, naming the model by ``name`` as the
    refusal of ``--classes`` does. (``--classes`` may name the channels of its scores per pixel:
    :func:`blank_reading`.)"""
    if not options.any_network:
        raise refusal
    if options.multi_label:
        raise CnnlabError(f"--multi-label reads a classifier's outputs, but {name} is not a classifier: "
                          f"{refusal.found}; expected no --multi-label for it") from None
    return (f"Not a classifier: {refusal.reason}. Shown is what each layer computes and what the network returns; "
            "there are no classes to rank and no attribution.",)


def read_as_network(options: Options) -> tuple[str, ...]:
    """What the page says of a model read as a network whatever its outputs (``--no-classes``: an embedding's N x 512,
    a detector's N x 4 boxes, which would read as class scores), before any check of them; nothing without the flag.
    Refused where classes are needed (``predict``, ``eval``: without ``options.any_network``)."""
    if not options.no_classes:
        return ()
    if not options.any_network:
        raise CnnlabError("--no-classes reads a model's outputs as they are, with no classes, which explore and "
                          "summary show; predict and eval answer with classes; expected no --no-classes for them")
    return ("Read as a network, not a classifier (--no-classes): what it returns is shown as it is, with no classes "
            "to rank and no attribution.",)


def expected_model(options: Options) -> str:
    """What a model that fails on the input it is fed was expected to be, as the refusal ends: any network where
    ``options.any_network`` opens one (``explore``, ``summary``), else a classifier (``predict``, ``eval``)."""
    return "a network that takes a batch of images" if options.any_network else "a classifier of one image batch"


def _network_classes(model: ExploreModel, options: Options, outputs: list[Row],
                     stored: tuple[str, ...] = ()) -> tuple[str, ...]:
    """The class names ``--classes`` gives a network that is no classifier: those of the channels of its scores per
    pixel, or of the numbers of its class per pixel, named in the legend of the picture the page draws of them
    (:func:`cnnlab.explore.probe.segment_kinds`), or of the labels of the boxes it draws (a detector's,
    :func:`cnnlab.explore.boxes.box_lists`). Without the flag, the names its file carries (``stored``) where they
    name those, else none. Refused where no output so pictured is a map of as many channels, nor classes
    (``outputs``: a blank image's)."""
    names = options.classes if options.classes is not None else stored
    if not names:
        return ()
    # only the maps the page pictures (not a backbone's maps at several scales), or the labels of boxes it draws
    found = box_lists(outputs, names, model.spec.hw)
    if not any(kind == "channel" and r.output.shape[1] == len(names) or kind == "class"
               for r, kind in zip(outputs, segment_kinds(outputs, found), strict=True)) and \
            not any(b.labels is not None for b in found):
        if options.classes is None:
            return ()
        shown = ", ".join(f"{r.name} {' x '.join(map(str, r.output.shape[1:]))}" for r in outputs) or "none"
        raise CnnlabError(f"--classes gives {len(options.classes)} names, but {model.name} is not a classifier, and "
                          f"none of its outputs is a map of {len(options.classes)} channels of scores per pixel, nor "
                          f"of a class per pixel or per thing found, for them to name (its outputs: {shown}); "
                          "expected as many names as a map's channels, or no --classes")
    return names


def read_outputs(outputs: int, options: Options, ends_in: str | None, stored: tuple[str, ...] | None,
                 folder_classes: tuple[str, ...], where: str, noun: str,
                 stored_in: str = "the model file", sample: Any = None,
                 on_map: bool = False) -> tuple[Scoring, tuple[str, ...], str]:
    """How a model from elsewhere of ``outputs`` outputs is read (:meth:`Scoring.read`), its class names and where
    they came from (:func:`resolve_classes`): what every kind does once it knows its output count. ``sample``: its
    outputs for :meth:`InputSpec.probe`'s images, which say whether they are probabilities already; ``on_map``:
    they come as ``N x K x 1 x 1``."""
    scoring = Scoring.read(outputs, options.multi_label, ends_in, where, noun, distribution_total(sample),
                           on_map)
    classes, named_by = resolve_classes(options.classes, stored, scoring, folder_classes, stored_in)
    return scoring, classes, named_by


def occlusion(model: ExploreModel, image: torch.Tensor, target: int, grid: int = OCCLUSION_GRID) -> torch.Tensor:
    """Occlusion sensitivity (Zeiler and Fergus 2014, "Visualizing and understanding convolutional networks", 4.2).

    The image is covered by one patch at a time (non-overlapping patches of ``ceil(side / grid)`` pixels along each
    side, squares for a square image, the last row and column cut by the image's edge, filled with the image's own
    mean colour so that the patch carries no edge of its own) and the drop in the target class's probability is
    recorded: ``rows x cols``, the number of patches that reach the image along each side (``grid``, or fewer for a
    side below ``grid**2``), positive where hiding the patch hurts the prediction. Needs no gradients, so it works
    for any model that can only be run forward (an ONNX graph). The model sees the images in batches of at most
    :data:`OCCLUSION_PIXELS` pixels (at least one image). :func:`patch_pixels` lays the map back onto the image's
    pixels.
    """
    (step_h, rows), (step_w, cols) = (_patches(side, grid) for side in image.shape[-2:])
    fill = image.float().mean((1, 2), keepdim=True).round().to(torch.uint8)

    def covered(k: int) -> torch.Tensor:  # the image itself (k = 0), then with patch k - 1 hidden, row by row
        if k == 0:
            return image
        (i, j), hidden = divmod(k - 1, cols), image.clone()
        hidden[:, i * step_h:(i + 1) * step_h, j * step_w:(j + 1) * step_w] = fill
        return hidden

    count, per_run = rows * cols + 1, max(1, OCCLUSION_PIXELS // (image.shape[-2] * image.shape[-1]))
    parts = []
    for start in range(0, count, per_run):  # made batch by batch: 50 copies at 2048 px are 630 MB of pixels alone
        batch = torch.stack([covered(k) for k in range(start, min(start + per_run, count))])
        parts.append(model.scoring.probabilities(model.logits(batch))[:, target])
    probs = torch.cat(parts)
    return (probs[0] - probs[1:]).view(rows, cols)


def _patches(side: int, grid: int) -> tuple[int, int]:
    """The patch length along a side of ``side`` pixels, and how many patches reach it."""
    step = math.ceil(side / grid)
    return step, math.ceil(side / step)


def patch_pixels(drop: torch.Tensor, hw: tuple[int, int], grid: int = OCCLUSION_GRID) -> torch.Tensor:
    """The ``height x width`` picture of an occlusion map made with ``grid``: each pixel takes the value of the patch
    that covered it (patches of ``ceil(side / grid)`` pixels, so a stretch of the map to the side shifted them)."""
    (step_h, _), (step_w, _) = (_patches(side, grid) for side in hw)
    return drop.repeat_interleave(step_h, 0).repeat_interleave(step_w, 1)[:hw[0], :hw[1]]


def occlusion_pngs(model: ExploreModel, image: torch.Tensor, target: int) -> dict[str, Any]:
    """Occlusion sensitivity as the page shows it: an overlay on the image (positive part) and the raw map."""
    drop = occlusion(model, image, target)
    up = patch_pixels(drop, tuple(image.shape[-2:]))
    top = float(up.clamp(min=0).max())
    heat = up.clamp(min=0) / top if top > 0 else torch.zeros_like(up)
    return {"method": "occlusion", "target": model.classes[target], "grid": list(drop.shape),
            "occlusion": png_url(overlay(image, heat)),
            "map": png_url(colour(to_unit(up, symmetric=True), "RdBu_r")), "largest_drop": float(drop.max()),
            "empty": not top > 0}


def gradient_pngs(explanation: Explanation, image: torch.Tensor, classes) -> dict[str, Any]:
    """Grad-CAM and saliency as the page shows them (the run view's pictures, with the method named)."""
    return {"method": "grad-cam", **explanation_pngs(explanation, image, classes)}


class ModelFailure(CnnlabError):
    """The model's own code or runtime failed on an input it was given in the shape it declared (``module:function``
    asserting a batch size or refusing a bright picture, onnxruntime refusing a value): one line naming the model and
    its error, not cnnlab's internal error."""


@contextmanager
def its_own_failure(source: Any, what: str, expected: str) -> Iterator[None]:
    """Run the model inside: what it raises (but cnnlab's own one-line errors) becomes a :class:`ModelFailure`
    ``"{source} failed on {what} (Error: message); expected {expected}"`` (the traceback chained, for ``--debug``)."""
    try:
        yield
    except CnnlabError:
        raise
    except Exception as e:  # the model's code or runtime, whatever it raises
        raise ModelFailure(f"{source} failed on {what} ({type(e).__name__}: {summary(e, 200)}); expected {expected}") \
            from e


def analyze_image(model: ExploreModel, image: torch.Tensor, maps: int = MAPS_PER_ROW,
                  what: str = "the picture") -> dict[str, Any]:
    """Predictions, feature maps of every stage and the attribution of one uint8 ``C x S x S`` image (of a shape of
    its own, at most the input's, for a :class:`cnnlab.picture.Letterbox` fit: :meth:`InputSpec.fed_hw`).

    The same JSON for every kind of model, the runs page's and the one-model page's: ``{"input", "top": [{"class",
    "index", "probability"}], "rows": [{"name", "kind", "shape", "maps": [{"channel", "png"}]}], "explanation",
    "outputs"}``, with ``explanation["method"]`` ``"grad-cam"`` or ``"occlusion"`` (None where no stage is spatial).
    A network that is no classifier (``scoring`` None) has no top classes and no explanation; ``outputs`` is the
    table of what it returns (:func:`cnnlab.explore.probe.output_entries`), empty for a classifier.

    Each stage's output is cut to the channels pictured as the pass makes it (:func:`cnnlab.explore.probe.stage_maps`):
    a big network's whole activations are never all held at once (a detector's at 800 px, gigabytes).

    Raises:
        ModelFailure: the model's own failure on the image (``what`` names it in the line).
    """
    network = model.scoring is None
    with its_own_failure(model.name, what, f"a {'network' if network else 'classifier'} that answers any picture at "
                                           "its input"):
        # (a network's outputs are matched to its stages by value, _new_maps: each stage's digest is taken too)
        rows = model.stages(image, keep=partial(stage_maps, maps=maps, digest=network))
        if network:
            returned = [r for r in rows if r.kind in RETURNED]
            return {"input": png_url(image_array(image)), "top": [], "rows": map_rows(_new_maps(rows), maps),
                    "explanation": None,
                    "outputs": output_entries(returned, image, model.classes, model.spec.fed_hw(image))}
        if model.tta or not rows:
            probs = model.scoring.probabilities(model.logits(image[None]))[0]
        else:
            probs = model.scoring.probabilities(rows[-1].output)[0]
        target = int(probs.argmax())
        try:
            explanation = model.attribution(image, target)
        except NoSpatialStage:  # (only that: a ValueError of the model's own is its failure, said above)
            explanation = None
    return {"input": png_url(image_array(image)), "top": top_classes(probs, model.classes),
            "rows": map_rows(rows, maps), "explanation": explanation, "outputs": []}


def _new_maps(rows: list[Row]) -> list[Row]:
    """A network's rows of feature maps: its stages, then each output that is not a stage's value again (a
    segmentation head's convolution is often what the network returns: its maps would be shown twice)."""
    stages = [r for r in rows if r.kind not in RETURNED]
    return [*stages, *(r for r in rows if r.kind in RETURNED and not among(r.output, [s.output for s in stages]))]


def total_macs(layers: list[dict[str, Any]]) -> int | None:
    """One image's MACs of a layer table, None where any row's are unknown (a part is no total)."""
    macs = [r.get("macs") for r in layers]
    return None if any(m is None for m in macs) else sum(macs)


def model_card(model: ExploreModel) -> dict[str, Any]:
    """What the page shows about a model whatever the input: kind, input spec, classes, kernels, layer table."""
    kernels = model.kernels()
    shown = [] if kernels is None else list(kernels.detach().float().mean(1))[:64]
    layers = model.layers()
    return {"kind": model.kind, "name": model.name, "classifier": model.scoring is not None,
            "classes": list(model.classes), "input": model.spec.describe(),
            "channels": model.spec.channels, "height": model.spec.height, "width": model.spec.width,
            "layout": model.spec.layout,
            "notes": list(model.notes), "params": sum(int(r.get("params") or 0) for r in layers),
            "macs": total_macs(layers), "layers": layers,
            "kernels": [{"png": png_url(colour(to_unit(k, symmetric=True), "RdBu_r")), "shape": list(k.shape)}
                        for k in shown]}


class RunModel:
    """A cnnlab checkpoint (``last.pt``/``best.pt``), read weights-only by :func:`cnnlab.inference.load_trained`.

    Its stages are the run view's (:func:`cnnlab.report.features.run_rows`: activations folded into the layer
    before them); images are read at the dataset's stored side and the run's own preprocessing resizes and
    normalises them, as ``cnnlab predict`` does.
    """

    kind = "cnnlab run"

    def __init__(self, trained, classes: tuple[str, ...] | None = None):
        self.trained = trained
        meta = trained.meta
        self.tta = meta.tta  # the probabilities are the run's own, flip-TTA included, as `cnnlab predict` prints
        self.name = f"{meta.model_name} ({trained.path.name})"
        self.scoring = Scoring(meta.num_classes)  # cnnlab trains with cross-entropy: softmax
        self.classes, _ = resolve_classes(classes, meta.classes, self.scoring)
        self.spec = InputSpec(meta.channels, meta.image_size, meta.image_size, "NCHW", meta.mean, meta.std,
                              {"everything": "checkpoint"}, crop=meta.crops_pictures)
        self.notes = (f"Images are read at the dataset's side ({meta.image_size} px) and the run's preprocessing "
                      f"resizes them to {meta.input_size} px.",) if meta.input_size != meta.image_size else ()

    @classmethod
    def open(cls, path: str | Path, options: Options | None = None) -> RunModel:
        """The checkpoint at ``path`` (the flags for models from elsewhere are refused: it records its own)."""
        options = options or Options()
        options.check_records_its_own()
        try:
            trained = load_trained(path)
        except ForeignCheckpointError as e:
            raise CnnlabError(f"{e}; {ELSEWHERE}") from None
        return cls(trained, options.classes)

    def _x(self, image: torch.Tensor) -> torch.Tensor:
        return self.trained.preprocess(image[None].float() / 255)

    def logits(self, images: torch.Tensor) -> torch.Tensor:
        return self.trained.logits(images)

    def stages(self, image: torch.Tensor, keep: Callable[[torch.Tensor], Any] | None = None) -> list[Row]:
        with torch.no_grad():  # (run_rows keeps the last row, the logits, whole)
            return run_rows(self.trained.model, self._x(image), keep=keep)

    def kernels(self) -> torch.Tensor | None:
        conv = first_conv(self.trained.model)
        return None if conv is None else conv.weight.detach()

    def layers(self) -> list[dict[str, Any]]:
        size = self.trained.meta.input_size
        rows = layer_summary(self.trained.model, (1, self.spec.channels, size, size))
        return [{"name": r.name, "op": r.type, "shape": list(r.output_shape[1:]), "params": r.params,
                 "macs": r.macs}
                for r in rows]

    def attribution(self, image: torch.Tensor, target: int) -> dict[str, Any]:
        return gradient_pngs(explain(self.trained.model, self._x(image), target), image, self.classes)
