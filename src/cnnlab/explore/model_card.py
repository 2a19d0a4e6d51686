"""What the page shows about a run's model, whatever the input: its layer table and first-layer kernels."""

from __future__ import annotations

from typing import Any

import torch

from cnnlab.errors import CnnlabError
from cnnlab.explore.images import colour, png_url, to_unit
from cnnlab.models.summary import layer_summary
from cnnlab.report.features import first_conv


def learned_kernels(loaded) -> list[torch.Tensor]:
    """The first convolution's kernels, averaged over input channels (``kh x kw`` each), for the ops view."""
    conv = first_conv(loaded.trained.model)
    if conv is None:
        raise CnnlabError("this model has no convolution, so it has no first-layer kernels")
    return list(conv.weight.detach().float().mean(1))


def model_info(loaded) -> dict[str, Any]:
    """Layer table (shapes, parameters, MACs) and first-layer kernels of a loaded model, computed once."""
    if "info" in loaded.extras:
        return loaded.extras["info"]
    trained = loaded.trained
    meta = trained.meta
    rows = layer_summary(trained.model, (1, meta.channels, meta.input_size, meta.input_size))
    try:
        kernels = learned_kernels(loaded)
    except CnnlabError:
        kernels = []
    info = {
        "model_name": meta.model_name, "dataset": meta.dataset, "classes": list(meta.classes),
        "channels": meta.channels, "image_size": meta.image_size, "input_size": meta.input_size,
        "params": sum(p.numel() for p in trained.model.parameters()), "checkpoint": loaded.checkpoint.name,
        "layers": [{"name": r.name, "type": r.type, "shape": list(r.output_shape[1:]), "params": r.params,
                    "macs": r.macs} for r in rows],
        "kernels": [{"png": png_url(colour(to_unit(k, symmetric=True), "RdBu_r")), "shape": list(k.shape)}
                    for k in kernels],
    }
    loaded.extras["info"] = info
    return info
