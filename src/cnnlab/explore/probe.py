"""One input through one trained network: top classes, every stage's feature maps, Grad-CAM and saliency.

The page's "one run, one input" panel is the JSON of :func:`analyze`. Predictions come from the inference path
every other command uses (``Trained.logits``, with the run's own preprocessing and flip-TTA); the feature maps are
the outputs of the model's stages (:func:`cnnlab.report.features.run_rows`) for the same preprocessed input.
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

    Returns:
        ``{"input": PNG URL, "top": [{"class", "index", "probability"}], "rows": [{"name", "kind", "shape",
        "maps": [{"channel", "png"}]}], "explanation": {...} | None}``. Each row shows its ``maps`` channels
        of largest spatial variance for this input (the most selective responses), each on its own range.
    """
    meta = trained.meta
    probs = trained.logits(image[None]).softmax(1)[0]
    top = probs.topk(min(TOP, probs.numel()))
    x = trained.preprocess(image[None].float() / 255)
    with torch.no_grad():
        rows = run_rows(trained.model, x)
    shown = []
    for row in rows:
        out = row.output[0]
        entry: dict[str, Any] = {"name": row.name, "kind": row.kind, "shape": list(out.shape), "maps": []}
        if out.dim() == 3:
            order = out.flatten(1).var(1, correction=0).argsort(descending=True)[:maps]
            entry["maps"] = [{"channel": int(c), "png": png_url(colour(to_unit(out[c]), "viridis"))}
                             for c in order.tolist()]
        shown.append(entry)
    result: dict[str, Any] = {
        "input": png_url(image_array(image)),
        "top": [{"class": meta.classes[i], "index": i, "probability": p}
                for p, i in zip(top.values.tolist(), top.indices.tolist(), strict=True)],
        "rows": shown, "explanation": None,
    }
    if with_explanation:
        result["explanation"] = explanation_pngs(trained, image, x, int(top.indices[0]))
    return result


def explanation_pngs(trained, image: torch.Tensor, x: torch.Tensor, target: int) -> dict[str, Any] | None:
    """Grad-CAM over the image and the saliency map as PNG URLs (``None`` for a model without spatial stages)."""
    try:
        e = explain(trained.model, x, target)
    except ValueError:
        return None
    side = image.shape[-1]
    saliency = torch.nn.functional.interpolate(e.saliency[None, None], size=(side, side), mode="bilinear",
                                               align_corners=False)[0, 0]
    return {"target": trained.meta.classes[e.target], "row": e.row,
            "gradcam": png_url(overlay(image, e.cam_at(side))),
            "saliency": png_url(colour(to_unit(saliency), "magma"))}
