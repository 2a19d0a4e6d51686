"""Exporting a checkpoint for deployment (``cnnlab export CHECKPOINT --output FILE``).

The exported graph is ``nn.Sequential(preprocess, model)``: its input is float ``N x C x S x S`` in [0, 1] (an
image of the run's dataset, C channels at its stored side S, divided by 255) and the model's resize and
normalisation run inside it, so a consumer needs nothing but the file. The batch dimension is dynamic. Every
export is checked against PyTorch before it is moved into place; a mismatch leaves no file behind.

Formats:

* ``onnx``: through ``torch.onnx.export(dynamo=True)``, the ``torch.export``-based exporter that is the default
  since PyTorch 2.9; the TorchScript-based one (``dynamo=False``) emits a DeprecationWarning in torch 2.14 and is
  being removed. Verified with onnxruntime. Class names and the model name go into the ONNX metadata.
  ``opset`` picks the ONNX operator set (from MIN_OPSET, the lowest this exporter writes, to the newest the installed
  onnx knows; default the exporter's own) for a runtime that knows only older ones, and the file's IR version is the
  lowest that holds its operator set (the exporter writes its onnx's newest, which older runtimes refuse even where
  they run the operators), and a ``Shape`` of a range of sides is a Shape and a Slice (OpenCV's DNN module
  reads no range).
* ``onnx-int8``: the ONNX graph above, quantized by onnxruntime's static quantization (QDQ format, int8 weights
  per output channel, uint8 activations) with activation ranges calibrated on ``calibration`` training images of
  the checkpoint's dataset (a seeded sample). Rounding changes logits by more than any float tolerance, so the
  check is top-1 agreement with PyTorch on INT8_CHECK_IMAGES test images (a seeded sample: a folder's test split is
  sorted by class, and its first images would be its first classes): below INT8_MIN_AGREEMENT nothing is written.
* ``pt2``: a ``torch.export`` ExportedProgram (``torch.export.save``), loadable with ``torch.export.load`` and no
  cnnlab. This replaces TorchScript, which torch 2.14 deprecates (``torch.jit.trace`` and ``torch.jit.load`` raise
  FutureWarnings), so cnnlab does not offer it.
* ``safetensors``: the network's weights alone, its own ``state_dict`` without the preprocessing, in the format the
  Hugging Face Hub and timm publish weights in (tensors and a JSON header, nothing that runs). The metadata adds what
  a program that builds the network needs to feed it: ``cnnlab.mean`` and ``cnnlab.std`` (or ``none``), the input
  side, the stored side it was resized from (``cnnlab.image_size``: a picture read at it, then resized bilinearly,
  is the run's image), the classes. An ImageNet backbone's weights load into torchvision's architecture of that name
  (a grey run's first convolution takes one channel), a book model's into ``cnnlab.models.create_model``; ``cnnlab
  explore`` (``predict``, ``eval``) ``imagenet-NAME --weights FILE`` opens the former, fed and named as this metadata
  says.
  Checked by loading the file into a network built afresh.

:func:`verify_export` measures any exported file against its checkpoint on test images (top-1 agreement and the
largest logit difference); ``cnnlab export --verify N`` prints it. The speed of each format on a CPU is measured
by benchmarks/export_speed.py, not here.

The flip-TTA that training may use for its own evaluation is not part of the graph: it is the plain model. The
metadata says whether the run's figures used it (``cnnlab.flip_tta``: ``none``, or how to do the same outside).

The metadata says how a picture that is not square became a training image (``cnnlab.to_square``: ``centre-crop``
for a folder of images, whose pictures were cropped so, else ``pad``); ``cnnlab explore`` follows it. ``cnnlab.picture``
says the whole of it in Pillow's words (:func:`cnnlab.picture.decoding`: whether the EXIF orientation is applied,
what becomes of alpha, the resize filter), so that a deployment decoding its files so gets the checkpoint's answers.
"""

from __future__ import annotations

import copy
import json
import logging
import tempfile
import warnings
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import save_file
from torch import nn

from cnnlab.checks import is_int
from cnnlab.data import holds_out_nothing
from cnnlab.data.split import sample_indices
from cnnlab.errors import CnnlabError, summary
from cnnlab.inference import Trained, check_same_classes, load_trained
from cnnlab.io import atomic_write, check_output_file
from cnnlab.models import create_model
from cnnlab.models.state_dict import load_state_dict_into, read_safetensors
from cnnlab.picture import CENTRE_CROP, PICTURE_KEY, SQUARE_KEY, decoding
from cnnlab.pt2_check import checked_pt2, load_pt2

FORMATS = ("onnx", "pt2", "onnx-int8", "safetensors")
SUFFIXES = {"onnx": ".onnx", "onnx-int8": ".onnx", "pt2": ".pt2", "safetensors": ".safetensors"}
# Largest difference of logits, export vs PyTorch: TOLERANCE plus RELATIVE_TOLERANCE of the largest logit. float32
# rounds in another order in each runtime, and a model with logits in the hundreds or thousands (a ResNet-34 or a
# RegNet trained briefly) differs by more than 1e-4 absolutely, as eager PyTorch does with itself between batch sizes.
TOLERANCE = 1e-4
RELATIVE_TOLERANCE = 1e-5
CHECK_BATCHES = (1, 5)
# torch.onnx.export(dynamo=True) writes operator set 18 and above: asked for a lower one, it tries onnx's version
# converter, which fails on a ResNet's graph, and then writes 18 all the same (measured with torch 2.14), so a
# lower --opset would name a file it is not.
MIN_OPSET = 18
CONVERTER_LOGGER = "onnxscript.version_converter"  # where torch's exporter converts to the --opset asked
# torch 2.10's and 2.11's exporter (not 2.14's) calls a pytree check those torches deprecate: a FutureWarning on
# stderr at every ONNX export, about torch's own code, nothing a user can act on
TORCHS_OWN_DEPRECATION = r"`isinstance\(treespec, LeafSpec\)` is deprecated"
NEEDS_EXPORT_EXTRA = "ONNX export needs onnx, onnxscript and onnxruntime: pip install 'cnnlab[export]'"
# An int8 model that disagrees with its float original on more than one test image in ten is not that model any
# more; a LeNet trained for 100 steps agrees on about 98% (docs/benchmarks.md).
INT8_MIN_AGREEMENT = 0.9
INT8_CHECK_IMAGES = 500
SAMPLE_SEED = 0  # of the calibration images and of the test images an export is checked on
# The run's test figures may average each image with its mirror; the graph does not, so whoever matches the figures
# with the file needs to know.
TTA_KEY = "cnnlab.flip_tta"
# The side the run fed its model (--resize, else the model's own): eval of the export reads the run's folder from the
# cache entry the run decoded it into for that side
INPUT_SIZE_KEY = "cnnlab.input_size"
# The side of the run's stored images (--image-size), which its preprocessing resized to cnnlab.input_size (--resize):
# an ONNX or .pt2 export takes it as its input (the resize inside), a safetensors export's network the input side, so
# a picture is read at this side and resized, as the run read it (cnnlab.explore's InputSpec.read_at)
STORED_SIDE_KEY = "cnnlab.image_size"
# The run's records of its folder's files (a count and a hash each), kept in an export's metadata as cnnlab.<key>
SPLIT_KEYS = ("held_out", "training_files")
# "true" where the run left its folder's unreadable files out (--skip-bad-images): eval of the export does too, as
# eval of its checkpoint does
SKIP_BAD_KEY = "cnnlab.skip_bad_images"
# The run's --test-split (a share, a number of images or 0, as JSON) where it gave one: eval of the export draws its
# folder's test split as the run did
TEST_SPLIT_KEY = "cnnlab.test_split"
TTA_NOTE = ("the run's figures average the logits of each image and of its left-right mirror; this graph is the "
            "plain model: run it on both and average to match them")
# How a file that onnxruntime cannot open is refused while it is being written.
WRITES_NOTHING = "; nothing was written (a lower --opset may do)"
UNSUPPORTED = {
    "torchscript": "TorchScript is deprecated in torch 2.14 (torch.jit.trace raises FutureWarning); use pt2 "
                   "(torch.export, its successor) or onnx",
}


def _batch_dim() -> dict:
    # torch.export specialises sizes 0 and 1, so the example batch below has 2 images and the dimension starts at 1.
    return {0: torch.export.Dim("batch", min=1)}


def _inputs(n: int, shape: tuple[int, int]) -> torch.Tensor:
    channels, side = shape
    return torch.rand(n, channels, side, side, generator=torch.Generator().manual_seed(n))


def _check(run, reference: nn.Module, shape: tuple[int, int], what: str) -> None:
    """Compare ``run(x)`` (numpy logits) with ``reference(x)`` at every size in CHECK_BATCHES."""
    for n in CHECK_BATCHES:
        x = _inputs(n, shape)
        with torch.no_grad():
            expected = reference(x).numpy()
        got = run(x)
        if got.shape != expected.shape:
            raise CnnlabError(f"{what} gives logits of shape {got.shape} at batch {n}, expected {expected.shape}")
        if not np.isfinite(expected).all():  # the exporter is not to blame for this
            raise CnnlabError(f"the model's own logits are not finite (NaN or infinity) at batch {n}: its weights "
                              "diverged in training; nothing was written")
        diff, largest = float(np.abs(got - expected).max()), float(np.abs(expected).max())
        bound = TOLERANCE + RELATIVE_TOLERANCE * largest
        if not diff <= bound:
            raise CnnlabError(f"{what} does not match PyTorch: max abs difference {diff:.2e} > {bound:.2g} "
                              f"({TOLERANCE:g} + {RELATIVE_TOLERANCE:g} x the largest logit, {largest:.3g}) at batch "
                              f"{n}; nothing was written")


def _write_onnx(wrapped: nn.Module, tmp: str, shape: tuple[int, int], metadata: dict[str, str],
                opset: int | None = None) -> None:
    try:  # torch.onnx.export(dynamo=True) needs onnx and onnxscript; the check needs onnxruntime
        import onnx
        import onnxruntime  # noqa: F401
        import onnxscript  # noqa: F401
    except ImportError:
        raise CnnlabError(NEEDS_EXPORT_EXTRA) from None

    converter = logging.getLogger(CONVERTER_LOGGER)
    converter.addFilter(_not_the_fallback_notice)
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=TORCHS_OWN_DEPRECATION, category=FutureWarning)
            program = torch.onnx.export(_with_global_pools_as_reductions(wrapped), (_inputs(2, shape),), None,
                                        dynamo=True, verbose=False, opset_version=opset, input_names=["images"],
                                        output_names=["logits"], dynamic_shapes=(_batch_dim(),))
    except torch.onnx.OnnxExporterError as e:  # an operator this torch's exporter has no ONNX function for
        raise CnnlabError(f"torch {torch.__version__}'s ONNX exporter cannot convert this network "
                          f"({summary(_first_cause(e), 200)}); nothing was written (--format pt2 takes any torch "
                          "operator)") from None
    finally:
        converter.removeFilter(_not_the_fallback_notice)
    program.model.metadata_props.update(metadata)
    # one self-contained file (the models here are far below protobuf's 2 GB), written once
    onnx.save(_for_older_runtimes(_shape_ranges_as_slices(program.model_proto), opset), tmp)
    _check(_onnx_runner(tmp, "the ONNX export", WRITES_NOTHING), wrapped, shape, "the ONNX export")


def _not_the_fallback_notice(record: logging.LogRecord) -> bool:
    """False for onnxscript's notice that it hands an operator set above its own converter's to onnx's: printed on
    stderr at every ``--opset`` 26 to 28, and nothing to act on, since the file's operator set is checked
    (:func:`_for_older_runtimes`) and its logits by onnxruntime (:func:`_check`). Its other lines (a conversion
    that failed) still come through."""
    return not (record.levelno == logging.WARNING and "fallback is enabled" in str(record.msg))


class _GlobalMax(nn.Module):
    """``AdaptiveMaxPool2d(1)`` as the maximum over height and width: the same values, and a plain ONNX ReduceMax in
    every torch's exporter (torch 2.11's has no ONNX function for ``aten.adaptive_max_pool2d``: compact, cpu10's
    network, did not export there)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.amax((-2, -1), keepdim=True)


class _GlobalMean(nn.Module):
    """``AdaptiveAvgPool2d(1)`` as the mean over height and width: the same values, and one ONNX ReduceMean. Of a
    channels-last feature map (ConvNeXt's) torch writes the pool as a mean and an ``as_strided``, which the exporter
    makes index arithmetic on the batch size (Shape, Squeeze, Range, Gather) that OpenCV's DNN module (4.x) refuses."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.mean((-2, -1), keepdim=True)


def _with_global_pools_as_reductions(module: nn.Module) -> nn.Module:
    """``module``, or a copy of it whose adaptive max and average pools to 1 x 1 are :class:`_GlobalMax` and
    :class:`_GlobalMean` under the same names."""
    pools = {name: _GlobalMax if isinstance(m, nn.AdaptiveMaxPool2d) else _GlobalMean
             for name, m in module.named_modules()
             if (isinstance(m, nn.AdaptiveMaxPool2d) and not m.return_indices or isinstance(m, nn.AdaptiveAvgPool2d))
             and m.output_size in (1, (1, 1))}
    if not pools:
        return module
    module = copy.deepcopy(module)
    for name, reduction in pools.items():
        parent, _, child = name.rpartition(".")
        setattr(module.get_submodule(parent), child, reduction())
    return module


def _first_cause(error: BaseException) -> BaseException:
    """The exception at the bottom of ``error``'s chain: torch's exporter wraps the operator it could not convert
    in two layers of advice."""
    while error.__cause__ is not None:
        error = error.__cause__
    return error


def _shape_ranges_as_slices(model):
    """The ONNX ``model`` (a ModelProto) with each ``Shape(x, start, end)`` written as ``Slice(Shape(x), start,
    end)``: the same value (both count a negative bound from the end and clamp it to the rank), in every runtime.

    The exporter takes the sizes of a resize inside the graph (a run whose ``--resize`` is not its stored side:
    every ImageNet backbone's) from ``Shape(images, start=0, end=2)``, the dynamic batch and the channels. OpenCV's
    DNN module (4.x, ``cv2.dnn.readNetFromONNX``) ignores ``start`` and ``end`` (operator set 15's), takes all four
    sides and refuses the file ("HCHW layout is expected").
    """
    from onnx import helper, numpy_helper

    if not any(node.op_type == "Shape" and node.attribute for node in model.graph.node):
        return model
    changed = copy.deepcopy(model)
    nodes = []
    for node in changed.graph.node:
        if node.op_type != "Shape" or not node.attribute:
            nodes.append(node)
            continue
        bounds = {a.name: a.i for a in node.attribute}
        whole, out = f"{node.output[0]}_whole", node.output[0]
        changed.graph.initializer.extend(
            numpy_helper.from_array(np.array([value], np.int64), f"{whole}_{name}")
            for name, value in (("start", bounds.get("start", 0)), ("end", bounds.get("end", np.iinfo(np.int64).max))))
        nodes += [helper.make_node("Shape", [node.input[0]], [whole], name=f"{node.name}_whole"),
                  helper.make_node("Slice", [whole, f"{whole}_start", f"{whole}_end"], [out], name=node.name)]
    del changed.graph.node[:]
    changed.graph.node.extend(nodes)
    return changed


def _for_older_runtimes(model, opset: int | None = None):
    """The ONNX ``model`` (a ModelProto) loadable by the oldest runtimes that run its operators: without the operator
    sets of domains no node uses, and at the lowest IR version that holds the rest, where ONNX's checker passes it
    so (else ``model`` as it is). With ``opset`` given, check that it has that operator set.

    The exporter writes the IR version of the newest onnx it runs with (10 with onnx 1.23), which a runtime older
    than that refuses ("Unsupported model IR version: 10, max supported IR version: 9", onnxruntime 1.17) although
    it runs operator set 20; and onnxruntime's quantizer imports eight domains it does not use, among them
    ``ai.onnx.ml`` at a version that onnxruntime 1.17 refuses to load.
    """
    import onnx

    written = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), None)
    if opset is not None and written != opset:
        raise CnnlabError(f"the exporter wrote operator set {written} where --opset {opset} asked; nothing was written")
    used = {node.domain or "" for node in model.graph.node}
    kept = [o for o in model.opset_import if (o.domain or "") in used | {"", "ai.onnx"}]
    lowest = onnx.helper.find_min_ir_version_for(kept, ignore_unknown=True)
    if len(kept) == len(model.opset_import) and lowest >= model.ir_version:
        return model
    changed = onnx.ModelProto()
    changed.CopyFrom(model)
    del changed.opset_import[:]
    changed.opset_import.extend(kept)
    changed.ir_version = min(lowest, model.ir_version)
    try:
        onnx.checker.check_model(changed, full_check=True)
    except onnx.checker.ValidationError:  # the graph holds something of a newer IR (a 4-bit type, say): keep it
        return model
    return changed


@dataclass(frozen=True)
class Agreement:
    """How an export's predictions compare with PyTorch's on the same test images.

    Attributes:
        images: test images compared (a seeded sample of the test split, :func:`_sample`).
        agree: images whose top-1 class is the same.
        max_abs_diff: the largest absolute difference of a logit.
        asked: images asked for, when more than the test split has (0 otherwise).
        split: the split they are of: "test", "validation" where the run held out no test split, or "training"
            where it held out nothing.
    """

    images: int
    agree: int
    max_abs_diff: float
    asked: int = 0
    split: str = "test"

    @property
    def rate(self) -> float:
        return self.agree / self.images

    def __str__(self) -> str:
        every = f"; all the {self.split} split has, {self.asked} asked" if self.asked > self.images else ""
        return (f"top-1 agrees with PyTorch on {self.agree}/{self.images} {self.split} images ({self.rate:.2%}"
                f"{every}); largest logit difference {self.max_abs_diff:.2e}")


def _agreement(run: Callable[[torch.Tensor], np.ndarray], reference: nn.Module, images: torch.Tensor,
               batch_size: int = 256) -> Agreement:
    """Top-1 agreement and largest logit difference of ``run`` against ``reference`` on uint8 ``images``."""
    agree, diff = 0, 0.0
    for start in range(0, len(images), batch_size):
        x = images[start:start + batch_size].float() / 255
        with torch.no_grad():
            expected = reference(x).numpy()
        got = run(x)
        agree += int((got.argmax(1) == expected.argmax(1)).sum())
        diff = max(diff, float(np.abs(got - expected).max()))
    return Agreement(len(images), agree, diff)


def _onnx_runner(path: str | Path, what: str, after: str = "") -> Callable[[torch.Tensor], np.ndarray]:
    """``x -> logits`` of the ONNX file ``path`` in onnxruntime; one line naming ``what`` (then ``after``) where
    onnxruntime cannot open it."""
    import onnxruntime as ort

    try:
        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    except Exception as e:  # an operator set newer than this onnxruntime runs: QuantizeLinear 28 in onnxruntime 1.32
        raise CnnlabError(f"onnxruntime {ort.__version__} cannot run {what} ({summary(e)}){after}") from None
    return lambda x: session.run(None, {"images": x.numpy()})[0]


def _check_int8_arguments(format: str, calibration: int | None) -> None:
    if format != "onnx-int8":
        if calibration is not None:
            raise CnnlabError(f"--calibration is for --format onnx-int8 (its activation ranges); got it with "
                              f"--format {format}")
        return
    if calibration is None:
        raise CnnlabError("an int8 export needs calibration images: pass --calibration N (e.g. 256) to calibrate "
                          "on N training images of the checkpoint's dataset")
    if not is_int(calibration) or calibration < 1:
        raise CnnlabError(f"--calibration must be a positive number of images, got {calibration!r}")


def _sample(images: torch.Tensor, n: int) -> torch.Tensor:
    """``n`` of ``images`` drawn with SAMPLE_SEED, in their order (:func:`cnnlab.data.split.sample_indices`)."""
    return images[sample_indices(len(images), n, SAMPLE_SEED)]


def _calibration_images(train_images: torch.Tensor, n: int, dataset: str) -> torch.Tensor:
    if n > len(train_images):
        raise CnnlabError(f"--calibration must be at most the {len(train_images)} training images of {dataset}, "
                          f"got {n}")
    return _sample(train_images, n)


def _write_onnx_int8(wrapped: nn.Module, tmp: str, shape: tuple[int, int], metadata: dict[str, str],
                     calibration: torch.Tensor, test_images: torch.Tensor, opset: int | None = None) -> None:
    try:
        import onnx
        from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
        from onnxruntime.quantization.shape_inference import quant_pre_process
    except ImportError:
        raise CnnlabError(NEEDS_EXPORT_EXTRA) from None

    class Batches(CalibrationDataReader):
        def __init__(self) -> None:
            self.batches = iter(calibration.split(64))

        def get_next(self) -> dict[str, np.ndarray] | None:
            batch = next(self.batches, None)
            return None if batch is None else {"images": (batch.float() / 255).numpy()}

    with tempfile.TemporaryDirectory(prefix="cnnlab-int8-") as work:
        fp32, prepared = f"{work}/fp32.onnx", f"{work}/prepared.onnx"
        _write_onnx(wrapped, fp32, shape, metadata, opset)  # checked against PyTorch as a float export is
        # onnxruntime's recommended step before quantizing: shape inference and graph fusions (Conv + BN). Its
        # symbolic shape inference fails on some graphs the exporter writes (compact's adaptive max pool: a
        # ReduceMax with its axes as an input, then a Reshape, gave "'NoneType' object is not iterable"); ONNX's
        # own shape inference is enough for quantizing then.
        try:
            quant_pre_process(fp32, prepared)
        except Exception:
            quant_pre_process(fp32, prepared, skip_symbolic_shape=True)
        quantize_static(prepared, tmp, Batches(), quant_format=QuantFormat.QDQ, per_channel=True,
                        activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8)
    quantized = onnx.load(tmp)
    if (stamped := _for_older_runtimes(quantized, opset)) is not quantized:
        onnx.save(stamped, tmp)
    agreement = _agreement(_onnx_runner(tmp, "the int8 ONNX export", WRITES_NOTHING), wrapped, test_images)
    if agreement.rate < INT8_MIN_AGREEMENT:
        raise CnnlabError(f"the int8 export's {agreement}, below the {INT8_MIN_AGREEMENT:.0%} required; nothing was "
                          "written (more --calibration images may help)")


def _write_pt2(wrapped: nn.Module, tmp: str, shape: tuple[int, int], metadata: dict[str, str]) -> None:
    program = torch.export.export(wrapped, (_inputs(2, shape),), dynamic_shapes=(_batch_dim(),))
    with open(tmp, "wb") as f:
        torch.export.save(program, f, extra_files={"cnnlab.json": json.dumps(metadata)})
    loaded = load_pt2(Path(tmp).read_bytes()).module()  # as a path, torch.export.load wants a name ending in .pt2
    _check(lambda x: loaded(x).detach().numpy(), wrapped, shape, "the torch.export program")


def _network(meta) -> nn.Module:
    """A new network of the checkpoint's build in torch's layers, the same ``state_dict`` keys as either ops'."""
    return create_model(meta.model_name, num_classes=meta.num_classes, in_channels=meta.channels, ops="torch")


def _network_from(path: str | Path, trained: Trained) -> nn.Module:
    """The network of ``trained``'s build with the weights of the safetensors file ``path``, in eval mode."""
    expected = f"a .safetensors file that cnnlab export wrote of a {trained.meta.model_name}"
    network = _network(trained.meta)
    load_state_dict_into(network, read_safetensors(path, expected), path, f"a {trained.meta.model_name}", expected)
    return network.eval()


def _write_safetensors(trained: Trained, wrapped: nn.Sequential, tmp: str, shape: tuple[int, int],
                       metadata: dict[str, str]) -> None:
    meta = trained.meta
    normalised = meta.mean is not None
    metadata = {**metadata, "format": "pt",  # what Hugging Face's loaders look for: PyTorch tensors
                "cnnlab.input": f"float32 N x {meta.channels} x {meta.input_size} x {meta.input_size}: the image in "
                                f"[0, 1] resized (bilinear) to {meta.input_size} px"
                                + (", minus cnnlab.mean, divided by cnnlab.std, per channel" if normalised else ""),
                "cnnlab.mean": json.dumps(list(meta.mean)) if normalised else "none",
                "cnnlab.std": json.dumps(list(meta.std)) if normalised else "none"}
    network = wrapped[1]  # the network alone, without the preprocessing
    try:  # contiguous copies: a view (a transposed weight) is refused, as are two names for one tensor
        save_file({k: v.detach().contiguous() for k, v in network.state_dict().items()}, tmp, metadata=metadata)
    except (SafetensorError, ValueError, RuntimeError) as e:
        raise CnnlabError(f"safetensors cannot hold this network's weights ({summary(e, 200)}); use onnx or pt2") \
            from None
    loaded = nn.Sequential(trained.preprocess, _network_from(tmp, trained))
    _check(lambda x: loaded(x).detach().numpy(), wrapped, shape, "the safetensors weights in a new network")


def _check_opset(format: str, opset: int | None) -> None:
    if opset is None:
        return
    if format not in ("onnx", "onnx-int8"):
        raise CnnlabError(f"--opset is the operator set of an ONNX file (--format onnx or onnx-int8); got it with "
                          f"--format {format}")
    try:
        import onnx
    except ImportError:
        raise CnnlabError(NEEDS_EXPORT_EXTRA) from None
    newest = onnx.defs.onnx_opset_version()
    if not is_int(opset) or not MIN_OPSET <= opset <= newest:
        raise CnnlabError(f"--opset must be an operator set from {MIN_OPSET} (the lowest torch's exporter writes) to "
                          f"{newest} (the newest onnx {onnx.__version__} knows), got {opset!r}")


def check_export_arguments(output: str | Path, format: str = "onnx", force: bool = False,
                           calibration: int | None = None, opset: int | None = None) -> Path:
    """The checks of :func:`export_checkpoint` that need neither the checkpoint nor its dataset; returns ``output``.

    ``cnnlab export`` makes them before ``--verify`` reads the test images, so that a missing ``--calibration``, a
    suffix that is not the format's or an existing output is said at once, not after (or instead of) the dataset.

    Raises:
        CnnlabError: as :func:`export_checkpoint` for these arguments.
    """
    if format in UNSUPPORTED:
        raise CnnlabError(f"format {format!r} is not offered: {UNSUPPORTED[format]}")
    if format not in FORMATS:
        raise CnnlabError(f"format must be one of {', '.join(FORMATS)}; got {format!r}")
    _check_int8_arguments(format, calibration)
    _check_opset(format, opset)
    output, suffix = Path(output), SUFFIXES[format]
    if output.is_dir():
        raise CnnlabError(f"output {output} is a folder, expected a file name such as model{suffix}")
    if output.suffix.lower() != suffix:
        raise CnnlabError(f"--format {format} writes a {suffix} file; got --output {output} (name it "
                          f"{output.stem}{suffix}, or choose the format its suffix names)")
    check_output_file(output, force, what="output ")
    return output


def export_checkpoint(checkpoint: str | Path | Trained, output: str | Path, format: str = "onnx", force: bool = False,
                      calibration: int | None = None, data_dir: str | Path | None = None,
                      opset: int | None = None) -> Path:
    """Export a checkpoint's model, with its preprocessing inside, to one file, verified against PyTorch.

    Args:
        checkpoint: a ``.pt`` file written by ``cnnlab train`` (its EMA weights when the run kept them), or one
            loaded already by :func:`cnnlab.inference.load_trained` (on the CPU).
        output: the file to write, ending in ``.onnx`` (onnx, onnx-int8), ``.pt2`` or ``.safetensors``.
        format: ``"onnx"``, ``"onnx-int8"``, ``"pt2"`` or ``"safetensors"`` (see the module docstring for why not
            TorchScript).
        force: overwrite ``output`` if it exists.
        calibration: onnx-int8 only, and required there: how many training images calibrate the activations.
        data_dir: onnx-int8: the dataset's folder (default: where the run found it).
        opset: onnx and onnx-int8: the ONNX operator set (MIN_OPSET and above; default: the exporter's).

    Returns:
        The path written.

    Raises:
        CnnlabError: unknown format, a suffix that is not the format's, ``output`` exists without ``force`` (or
            appears while the export runs: it is kept), its folder is missing or not writable, a bad checkpoint, an
            int8 export without ``calibration``, onnxruntime cannot run the ONNX file, or the
            exported graph's logits differ from PyTorch's by more than TOLERANCE + RELATIVE_TOLERANCE x the largest
            logit at batch 1 or 5 (int8: agrees on fewer than
            INT8_MIN_AGREEMENT of INT8_CHECK_IMAGES test images, :func:`_sample`); then nothing is written.

    Example:
        >>> export_checkpoint("runs/lenet/best.pt", "lenet.onnx")  # doctest: +SKIP
        >>> import onnxruntime, numpy as np  # doctest: +SKIP
        >>> s = onnxruntime.InferenceSession("lenet.onnx")  # doctest: +SKIP
        >>> s.run(None, {"images": np.zeros((3, 1, 28, 28), np.float32)})[0].shape  # doctest: +SKIP
        (3, 10)
    """
    output = check_export_arguments(output, format, force, calibration, opset)
    trained = checkpoint if isinstance(checkpoint, Trained) else load_trained(checkpoint, "cpu")
    meta = trained.meta
    model = trained.model
    if meta.ops == "scratch":
        # The from-scratch layers loop over the batch in Python, which tracing would fix to the example's size; the
        # same weights in torch's layers (the same state_dict keys) compute the same function for any batch.
        model = _network(meta)
        model.load_state_dict(trained.model.state_dict())
    wrapped = nn.Sequential(trained.preprocess, model).eval()
    shape = (meta.channels, meta.image_size)
    metadata = {"cnnlab.model": meta.model_name, "cnnlab.dataset": meta.dataset,
                "cnnlab.classes": json.dumps(list(meta.classes)),
                "cnnlab.input": f"float32 N x {meta.channels} x {meta.image_size} x {meta.image_size} in [0, 1] "
                                "(uint8 image / 255)",
                INPUT_SIZE_KEY: str(meta.input_size), STORED_SIDE_KEY: str(meta.image_size),
                # a wider picture becomes the square input as the training images did: cropped or padded
                SQUARE_KEY: CENTRE_CROP if meta.crops_pictures else "pad",
                PICTURE_KEY: decoding(meta.crops_pictures, meta.channels, meta.image_size),
                TTA_KEY: TTA_NOTE if meta.tta else "none"}
    recorded = trained.checkpoint.get("dataset") or {}
    for key in SPLIT_KEYS:  # which test split the run drew: `cnnlab eval EXPORT` of its own folder scores that one
        if recorded.get(key) is not None:
            metadata[f"cnnlab.{key}"] = json.dumps(list(recorded[key]))
    if trained.config.get("skip_bad_images"):
        metadata[SKIP_BAD_KEY] = "true"
    if trained.config.get("test_split") is not None:
        metadata[TEST_SPLIT_KEY] = json.dumps(trained.config["test_split"])
    if format == "onnx-int8":
        data = _dataset(trained, data_dir, training=True)
        calibration_images = _calibration_images(data.train_images, calibration, data.name)
        metadata["cnnlab.int8_calibration"] = f"{len(calibration_images)} training images of {data.name}"
        atomic_write(output, lambda tmp: _write_onnx_int8(wrapped, tmp, shape, metadata, calibration_images,
                                                          _sample(_held_out(trained, data)[0], INT8_CHECK_IMAGES),
                                                          opset),
                     overwrite=force)
        return output
    if format == "safetensors":
        atomic_write(output, lambda tmp: _write_safetensors(trained, wrapped, tmp, shape, metadata), overwrite=force)
        return output
    if format == "onnx":
        atomic_write(output, lambda tmp: _write_onnx(wrapped, tmp, shape, metadata, opset), overwrite=force)
    else:
        atomic_write(output, lambda tmp: _write_pt2(wrapped, tmp, shape, metadata), overwrite=force)
    return output


def _dataset(trained, data_dir: str | Path | None, training: bool):
    """The checkpoint's own dataset (its classes checked against the model's); ``training``: with its training images
    (the int8 calibration's), else perhaps without (:meth:`cnnlab.inference.Trained.dataset`)."""
    data = trained.dataset(data_dir, training=training)
    check_same_classes(trained.meta, data.classes, f"dataset {data.name}")
    return data


def verify_export(checkpoint: str | Path, exported: str | Path, images: int = 1000,
                  data_dir: str | Path | None = None) -> Agreement:
    """Compare an exported file (``.onnx``, ``.pt2`` or ``.safetensors``) with its checkpoint's PyTorch model on
    test images.

    Both get ``images`` test images of the checkpoint's dataset (a seeded sample of its test split, :func:`_sample`;
    of its validation split where the run held out no test split, of its training images where it held out nothing)
    as the export takes them (uint8 / 255); the PyTorch side is the plain model without flip-TTA, as exported.

    Raises:
        CnnlabError: ``images`` is not a positive integer, the file is not ``.onnx``, ``.pt2`` or ``.safetensors``, or
            the checkpoint or its dataset cannot be read.

    Example:
        >>> print(verify_export("runs/lenet/best.pt", "lenet.onnx", images=500))  # doctest: +SKIP
        top-1 agrees with PyTorch on 500/500 test images (100.00%); largest logit difference 2.38e-06
    """
    exported = Path(exported)
    if exported.suffix.lower() not in (".onnx", ".pt2", ".safetensors"):
        raise CnnlabError(f"expected an exported .onnx, .pt2 or .safetensors file, got {str(exported)!r}")
    trained = load_trained(checkpoint, "cpu")
    test_images, split = _test_images(trained, images, data_dir)
    wrapped = nn.Sequential(trained.preprocess, trained.model).eval()
    if exported.suffix.lower() == ".onnx":
        run = _onnx_runner(exported, str(exported))
    elif exported.suffix.lower() == ".safetensors":
        loaded = nn.Sequential(trained.preprocess, _network_from(exported, trained))
        run = lambda x: loaded(x).detach().numpy()  # noqa: E731
    else:
        program = load_pt2(checked_pt2(exported)).module()  # any file: checked first
        run = lambda x: program(x).detach().numpy()  # noqa: E731
    agreement = replace(_agreement(run, wrapped, test_images), split=split)
    return replace(agreement, asked=images) if images > agreement.images else agreement


def verification_images(checkpoint: str | Path, images: int, data_dir: str | Path | None = None) -> torch.Tensor:
    """``images`` test images of the checkpoint's dataset (all of them when the split has fewer; :func:`_sample`),
    uint8.

    ``cnnlab export --verify`` calls it before writing, so that a dataset it cannot read is one line with nothing
    written; loads are cached per process, so :func:`verify_export` reads them again for free.

    Raises:
        CnnlabError: ``images`` is not a positive integer, or the checkpoint or its dataset cannot be read.
    """
    return _test_images(load_trained(checkpoint, "cpu"), images, data_dir)[0]


def _test_images(trained, images: int, data_dir: str | Path | None) -> tuple[torch.Tensor, str]:
    """A sample of ``images`` of :func:`_held_out`'s, and the split they are of."""
    if not is_int(images) or images < 1:
        raise CnnlabError(f"--verify must be a positive number of test images, got {images!r}")
    # a run that held out nothing is compared on its training images, which it reads then
    held, split = _held_out(trained, _dataset(trained, data_dir, training=holds_out_nothing(trained.config)))
    return _sample(held, images), split


def _held_out(trained: Trained, data) -> tuple[torch.Tensor, str]:
    """The images of ``data`` the model did not train on, and the split they are of: its test split, or the run's
    validation split where ``data`` is drawn as the run drew it with no test split (``--test-split 0``; the split a
    folder of its own brings, named by ``--data-dir``, is its test split). A run that held out nothing (no
    ``--val-split`` either) has none: its training images, named so (the check compares two forms of one model, which
    any image tells apart)."""
    split = trained.held_out_split(data)
    if split is None:
        return data.train_images, "training"
    return (data.test_images if split == "test" else trained.held_out_images(data)[0]), split
