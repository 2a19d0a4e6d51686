"""What the explorer's two PyTorch kinds share: :class:`TorchModel`, a network run by torch whose stages are
recorded inside one differentiable forward pass, so that Grad-CAM and saliency come from one backward pass through it,
as for cnnlab runs (:func:`cnnlab.explore.gradcam.explain_with`).

The kinds: a ``torch.export`` program (``.pt2``, :mod:`cnnlab.explore.pt2_model`), its stages recorded by an FX
interpreter, and an ``nn.Module`` (``module:function`` or an ImageNet backbone, :mod:`cnnlab.explore.module_model`),
its stages recorded by forward hooks. The input is NCHW unless ``--layout`` says otherwise; the side is the program's
static one, else ``--input-size``; channels from the input or the first convolution (:func:`input_spec`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from cnnlab.errors import CnnlabError, summary
from cnnlab.explore.gradcam import explain_with
from cnnlab.explore.model import (
    InputSpec,
    Options,
    expected_model,
    gradient_pngs,
    opened_as_network,
    read_as_network,
)
from cnnlab.explore.outputs import (
    RETURNED,
    BatchAxisDropped,
    NotAClassifier,
    Scoring,
    class_rows,
    first_output,
    logits_count,
    on_a_map,
    output_tensors,
    outputs_note,
    per_image_shape,
)
from cnnlab.report.features import Row

TAIL = 8  # the spatial values a stage pass keeps for Grad-CAM, the last ones made (explain_with takes the last read)


def input_spec(options: Options, shape: tuple | None, conv_in: int | None, where: str) -> InputSpec:
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


class TorchModel:
    """What the two PyTorch kinds share: a differentiable stage pass, Grad-CAM/saliency, logits, kernels."""

    spec: InputSpec
    classes: tuple[str, ...]
    scoring: Scoring | None  # None: a network that is no classifier, opened for its layers
    tta = False
    _not_a_classifier: tuple[str, ...] = ()  # what the page says of such a network (why it is none)
    _outputs: tuple[str, ...] = ()  # a model of several outputs: each one's shape (N x classes first), for the note
    _on_map = False  # its class scores come as N x K x 1 x 1 (:func:`cnnlab.explore.outputs.class_rows`)
    _wrapped_in: str | None = None  # the type of output object (or "a dict") the logits come in, if any

    def _network(self) -> nn.Module:
        """The module that runs: the user's, or the program's."""
        raise NotImplementedError

    def _scores_of(self, out: Any) -> Any:
        """The class scores among what the model returned: a tensor; the ``logits`` tensor of an output object (as
        Hugging Face's image classifiers return, ``ImageClassifierOutput``) or of a dict (as such a model exported
        with torch.export returns it, or a forward written so); or the first of a tuple of outputs
        (:func:`cnnlab.explore.outputs.first_output`), as the ONNX kind reads a graph's first output, the others
        named on the page. A network that is no classifier keeps all it returned (a detector's ``logits`` come with
        its ``pred_boxes``), each output a row of its own; ``logits`` that are no rows of scores (a segmentation
        model's per pixel, SegFormer's; a detector's per query, DETR's) leave the output whole already when the
        classifier check reads it, refused, or shown, for what it is."""
        if self._not_a_classifier:
            return out
        logits = out.get("logits") if isinstance(out, dict) else getattr(out, "logits", None)
        if not isinstance(out, torch.Tensor) and isinstance(logits, torch.Tensor) and class_rows(logits).dim() == 2:
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

    def _stage_pass(self, x: torch.Tensor, keep: Callable[[torch.Tensor], Any] | None = None) -> \
            tuple[list[Row], list[Row]]:
        """The stages of one pass over ``x`` (the last row the model's output) and the last spatial values it made
        (for Grad-CAM: :func:`cnnlab.explore.gradcam.explain_with`). With ``keep``, each stage's row holds what it
        takes of the stage's output, taken as the output is made (so that a big network's are not all held at
        once), and there are no spatial values."""
        raise NotImplementedError

    def _forward(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def _batch_run(self, n: int) -> int:
        """The images a stage pass over ``n`` runs at once (a program of a fixed batch is given copies)."""
        return n

    def _check_classifier(self, where: str, options: Options) -> int | None:
        """The class count, from passes of 2 images and of 1 (a final ``squeeze()`` drops the batch of one, which
        every analysis of one image runs); refuses what is not float logits ``N x classes``, but where
        ``options.any_network`` opens such a network for its layers: then None, and what the page says of it in
        ``_not_a_classifier`` (:func:`cnnlab.explore.model.opened_as_network`)."""
        spec = self.spec
        # (a module tries its input's channels in turn: each afresh)
        classes, self._not_a_classifier = None, read_as_network(options)
        for n in (2, 1):
            try:
                with torch.no_grad():
                    out = self._forward(spec.to_input(spec.zeros(n)))
                if not self._not_a_classifier:
                    classes = logits_count(out, n, where, classes, outputs=len(self._outputs) or 1)
                    self._on_map = on_a_map(out)
            except NotAClassifier as e:  # (raised by a kind's forward too, for a batch it cannot cut into rows)
                if classes is not None:  # a classifier for 2 images: opened as no classifier, it would lose its classes
                    raise BatchAxisDropped(f"{e.where} answers 2 images with 2 x {classes} class scores, but "
                                           f"{e.reason}: its forward drops the batch axis of one image, which every "
                                           "analysis runs (a final squeeze(); flatten(1) keeps the axis)") from None
                self._not_a_classifier = opened_as_network(e, options, self.name)
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
                raise CnnlabError(f"{where} failed on a {shape} {spec.layout} input ({first_line(e)}){hint}; "
                                  f"expected {expected_model(options)}") from e
        return None if self._not_a_classifier else classes

    def _final_op(self) -> str | None:
        """``"Softmax"`` or ``"Sigmoid"`` where the model's output is one's (probabilities already), else None."""
        raise NotImplementedError

    def _sample(self) -> torch.Tensor | None:
        """The model's outputs for :meth:`InputSpec.probe`'s images (None where it fails on them): whether they are
        probabilities or percentages already (:func:`cnnlab.explore.outputs.distribution_total`)."""
        try:
            with torch.no_grad():
                out = self._forward(self.spec.to_input(self.spec.probe()))
        except Exception:  # it ran on blank images: read its outputs as its last operation says
            return None
        return out if isinstance(out, torch.Tensor) else None

    def _scored_pass(self, x: torch.Tensor, keep: Callable[[torch.Tensor], Any] | None = None) -> \
            tuple[list[Row], list[Row]]:
        """:meth:`_stage_pass` with its last row, the model's output, as the class scores (:class:`Scoring`); a
        network's as a row per tensor it returns (:func:`cnnlab.explore.outputs.output_tensors`)."""
        rows, tail = self._stage_pass(x, keep)
        last = rows[-1]
        if self.scoring is None:
            returned = output_tensors(last.output, self._batch_run(x.shape[0]))
            return [*rows[:-1], *(Row(name, kind, value) for name, kind, value in returned)], tail
        return [*rows[:-1], Row(last.name, last.kind, self.scoring.scores(last.output))], tail

    def logits(self, images: torch.Tensor, batch_size: int = 64) -> torch.Tensor:
        with torch.no_grad():
            return torch.cat([self.scoring.scores(self._forward(self.spec.to_input(images[i:i + batch_size])).float())
                              for i in range(0, images.shape[0], batch_size)])

    def stages(self, image: torch.Tensor, keep: Callable[[torch.Tensor], Any] | None = None) -> list[Row]:
        # image 0's values (a program of a fixed batch ran copies of it), kept as they are made where keep says
        kept = None if keep is None else lambda value: keep(value[:1].detach())
        with torch.no_grad():
            rows, _ = self._scored_pass(self.spec.to_input(image[None]), kept)
        return [r if kept is not None and r.kind not in RETURNED else Row(r.name, r.kind, r.output[:1].detach())
                for r in rows]

    def attribution(self, image: torch.Tensor, target: int) -> dict[str, Any]:
        nhwc = self.spec.layout == "NHWC"

        def stage_pass(x: torch.Tensor) -> tuple[list[Row], list[Row]]:
            # Grad-CAM wants feature maps C x h x w; the saliency comes out per input position either way.
            return self._scored_pass(x.permute(0, 2, 3, 1) if nhwc else x)

        x = self.spec.to_input(image[None])
        x = x.permute(0, 3, 1, 2) if nhwc else x
        return gradient_pngs(explain_with(stage_pass, x, target), image, self.classes)


def first_line(e: BaseException) -> str:
    """``Type: message``, the message shortened by :func:`cnnlab.errors.summary`: enough to recognise, one line."""
    return f"{type(e).__name__}: {summary(e, 200)}" if str(e).strip() else type(e).__name__
