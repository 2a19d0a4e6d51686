"""One input through one trained network: top classes, every stage's feature maps, Grad-CAM and saliency.

The page's "one run, one input" panel is the JSON of :func:`analyze`. The input goes through the run's own
preprocessing (``Trained.preprocess``) and then the model's stages one by one
(:func:`cnnlab.report.features.run_rows`): their outputs are the feature maps and the last one the logits, which
equal ``Trained.logits`` (the tests check it); a run evaluated with flip-TTA takes ``Trained.logits`` itself.
"""

from __future__ import annotations

from typing import Any

import torch

from cnnlab.explore.gradcam import explain
from cnnlab.explore.images import colour, image_array, overlay, png_url, to_unit
from cnnlab.report.features import run_rows

MAPS_PER_ROW = 8
TOP = 5


def analyze(trained, image: torch.Tensor, maps: int = MAPS_PER_ROW, with_explanation: bool = True) -> dict[str, Any]:
    """Predictions, feature maps and (optionally) Grad-CAM/saliency of one uint8 ``C x H x W`` image.

    One forward pass through the model's stages gives the feature maps and the logits (and, with the explanation,
    one backward pass its gradients); under flip-TTA the probabilities come from ``Trained.logits`` instead, so
    they are always the ones ``cnnlab predict`` prints.

    Returns:
        ``{"input": PNG URL, "top": [{"class", "index", "probability"}], "rows": [{"name", "kind", "shape",
        "maps": [{"channel", "png"}]}], "explanation": {...} | None}``. Each row shows its ``maps`` channels
        of largest spatial variance for this input (the most selective responses), each on its own range.
    """
    meta = trained.meta
    x = trained.preprocess(image[None].float() / 255)
    explanation = None
    if with_explanation:
        try:
            explanation = explain(trained.model, x)
        except ValueError:  # no spatial stage to explain
            explanation = None
    if explanation is not None:
        rows = explanation.rows
    else:
        with torch.no_grad():
            rows = run_rows(trained.model, x)
    logits = trained.logits(image[None]) if meta.tta else rows[-1].output
    probs = logits.float().softmax(1)[0]
    return {
        "input": png_url(image_array(image)),
        "top": top_classes(probs, meta.classes),
        "rows": map_rows(rows, maps),
        "explanation": None if explanation is None else explanation_pngs(explanation, image, meta.classes),
    }


def top_classes(probs: torch.Tensor, classes) -> list[dict[str, Any]]:
    """The ``TOP`` most probable classes of a probability vector, most probable first."""
    top = probs.topk(min(TOP, probs.numel()))
    return [{"class": classes[i], "index": i, "probability": p}
            for p, i in zip(top.values.tolist(), top.indices.tolist(), strict=True)]


def map_rows(rows, maps: int = MAPS_PER_ROW) -> list[dict[str, Any]]:
    """The page's feature-map rows: each row's ``maps`` channels of largest spatial variance as PNG URLs."""
    shown = []
    for row in rows:
        out = row.output[0]
        entry: dict[str, Any] = {"name": row.name, "kind": row.kind, "shape": list(out.shape), "maps": []}
        if out.dim() == 3:
            order = out.flatten(1).var(1, correction=0).argsort(descending=True)[:maps]
            entry["maps"] = [{"channel": int(c), "png": png_url(colour(to_unit(out[c]), "viridis"))}
                             for c in order.tolist()]
        shown.append(entry)
    return shown


def explanation_pngs(e, image: torch.Tensor, classes) -> dict[str, Any]:
    """Grad-CAM over the image and the saliency map, at the image's size, as PNG URLs.

    ``empty`` says that Grad-CAM is zero everywhere (no channel of the stage speaks for the class, e.g. when its
    ReLUs are dead for this input): the overlay then shows no heat, and the page says why.
    """
    side = image.shape[-1]
    saliency = torch.nn.functional.interpolate(e.saliency[None, None], size=(side, side), mode="bilinear",
                                               align_corners=False)[0, 0]
    return {"target": classes[e.target], "row": e.row, "gradcam": png_url(overlay(image, e.cam_at(side))),
            "saliency": png_url(colour(to_unit(saliency), "magma")), "empty": not float(e.cam.max()) > 0}
