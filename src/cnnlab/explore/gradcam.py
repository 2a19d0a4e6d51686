"""What a prediction looks at: Grad-CAM on the last spatial stage, and the input-gradient saliency map.

Grad-CAM (Selvaraju et al. 2017, "Grad-CAM: Visual explanations from deep networks via gradient-based
localization", eq. 1-2): with ``A`` the ``C x h x w`` output of a convolutional stage and ``y`` the score (logit)
of the class, weight each channel by its spatially averaged gradient ``alpha_c = mean_ij dy/dA_cij`` and keep the
positive part of ``sum_c alpha_c A_c``. Saliency (Simonyan et al. 2014, "Deep inside convolutional networks",
sec. 3) is ``max_c |dy/dx_c|`` over the model input. Both come from one backward pass through the model's stages
(:func:`cnnlab.report.features.run_rows`), so no hooks are registered on the model. The tests compare the map with
Captum's ``LayerGradCam`` on the same stage.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from cnnlab.report.features import Row, run_rows


class NoSpatialStage(ValueError):
    """The model keeps no spatial feature map to explain (no convolution): its own class, so that a ValueError the
    model itself raises while being explained is not taken for it."""


@dataclass
class Explanation:
    """Grad-CAM and saliency of one image for one class.

    Attributes:
        target: the class explained.
        row: the stage whose output Grad-CAM weighs (the last one with a spatial map larger than 1 x 1).
        cam: Grad-CAM at that stage's resolution, ``h x w``, not normalised.
        saliency: ``max_c |d score / d input|``, ``H x W`` at the model input's resolution.
        rows: every stage's output for the input (detached), the last one the logits: the forward pass the maps
            were computed from, for callers that also show the feature maps and predictions.
    """

    target: int
    row: str
    cam: torch.Tensor
    saliency: torch.Tensor
    rows: list[Row]

    def cam_at(self, hw: tuple[int, int]) -> torch.Tensor:
        """Grad-CAM bilinearly resized to ``height x width`` and scaled to [0, 1] (all zero if nothing is
        positive)."""
        up = F.interpolate(self.cam[None, None], size=hw, mode="bilinear", align_corners=False)[0, 0]
        top = float(up.max())
        return up / top if top > 0 else torch.zeros_like(up)


def explain(model: nn.Module, x: torch.Tensor, target: int | None = None) -> Explanation:
    """Grad-CAM and saliency of the model input ``x`` (``1 x C x H x W``, preprocessed) for class ``target``.

    ``target`` defaults to the predicted class. Raises :class:`NoSpatialStage` if no stage keeps a spatial map (a
    model without convolutions).
    """
    return explain_with(lambda inp: run_rows(model, inp, grad=True), x, target)


def explain_with(stage_pass, x: torch.Tensor, target: int | None = None) -> Explanation:
    """:func:`explain` for any stage pass: ``stage_pass(x)`` returns the rows of one differentiable forward pass
    (feature maps ``1 x C x h x w``, the last row the logits), e.g. forward hooks or an FX interpreter over a
    ``torch.export`` program (:mod:`cnnlab.explore.pt2_model`).

    It may return ``(rows, tail)`` instead: ``tail`` the last spatial values the pass made, in the order it made
    them, whether a stage's or not (the concatenation that ends an Inception block, a residual sum, a ConvNeXt block's
    output). Grad-CAM then weighs the last of them that the class score reads: the whole map the network's head
    pools, not the last branch that happened to run before the concatenation (Inception's pooling branch, 192 of
    its 2,048 channels) or the hidden layer of a block's MLP. Without a tail, or where the score reads none of it,
    the last spatial stage is taken."""
    x = x.detach().clone().requires_grad_(True)
    with torch.enable_grad():
        rows = stage_pass(x)
    rows, tail = rows if isinstance(rows, tuple) else (rows, None)
    spatial = [r for r in rows[:-1] if is_spatial(r.output)]
    # the last spatial stage first: taken where the score reads nothing of the tail
    candidates = [*spatial[-1:], *(r for r in tail or () if is_spatial(r.output))]
    if not candidates:
        raise NoSpatialStage("the model has no stage with a spatial feature map to explain")
    logits = rows[-1].output
    if target is None:
        target = int(logits[0].argmax())
    # A value made without gradients (the model's own x.detach() for a check of its input, a mask under no_grad)
    # is one the score cannot be read through: autograd refuses to differentiate by it, so it gets no gradient.
    live = [c for c in candidates if c.output.requires_grad]
    *found, grad_x = torch.autograd.grad(logits[0, target], [*(c.output for c in live), x], allow_unused=True)
    by_value = {id(c): g for c, g in zip(live, found, strict=True)}
    grads = [by_value.get(id(c)) for c in candidates]
    # the last candidate the score depends on (an auxiliary head's map, run after the main one, is not read)
    read = [i for i, g in enumerate(grads) if g is not None]
    k = read[-1] if read else 0
    feature, grad_a = candidates[k], grads[k]
    if grad_a is None or grad_x is None:  # the score does not depend on that stage (or on the input)
        grad_a = torch.zeros_like(feature.output) if grad_a is None else grad_a
        grad_x = torch.zeros_like(x) if grad_x is None else grad_x
    weights = grad_a[0].mean((1, 2), keepdim=True)  # alpha_c
    cam = F.relu((weights * feature.output[0]).sum(0)).detach()
    detached = [Row(r.name, r.kind, r.output.detach()) for r in rows]
    return Explanation(target, feature.name, cam, grad_x[0].abs().amax(0).detach(), detached)


def is_spatial(value: torch.Tensor) -> bool:
    """A ``N x C x h x w`` map of more than one position (a 1 x 1 map is a number per channel)."""
    return value.dim() == 4 and value.shape[-1] * value.shape[-2] > 1
