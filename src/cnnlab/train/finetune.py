"""Fine-tuning (d2l 14.2): start from another run's weights, with a fresh head when the classes differ.

No pretrained weights can be downloaded here, so the source is a checkpoint of the user's own (of any dataset):
every tensor whose name and shape fit is copied, the rest keeps its fresh initialisation.
"""

from __future__ import annotations

from pathlib import Path

from torch import nn

from cnnlab.errors import CnnlabError
from cnnlab.runs.checkpoint import load_checkpoint


def init_from(model: nn.Module, path: str | Path) -> str:
    """Copy the fitting weights of checkpoint ``path`` into ``model``; returns one line saying what was kept.

    Raises:
        CnnlabError: the checkpoint is unreadable, or nothing but the head would be copied (another model).
    """
    ckpt = load_checkpoint(path)
    source = ckpt.get("ema") or ckpt.get("model")
    if not isinstance(source, dict):
        raise CnnlabError(f"--init-from {path}: the checkpoint holds no model weights")
    own = model.state_dict()
    fitting = {k: v for k, v in source.items() if k in own and tuple(own[k].shape) == tuple(v.shape)}
    fresh = [k for k in own if k not in fitting]
    head = {name for name, m in model.named_modules() if m is last_layer(model)}
    body = [k for k in fresh if k.rsplit(".", 1)[0] not in head]
    if body:  # only the output layer may start afresh: anything else means another model or other input channels
        raise CnnlabError(f"--init-from {path}: its weights (model {ckpt.get('model_name')!r}, "
                          f"{ckpt.get('in_channels')} input channel(s)) do not fit this model: {len(body)} tensors "
                          f"besides the output layer differ, first {body[0]} (expected the same model and channels; "
                          "only the number of classes may change)")
    model.load_state_dict(fitting, strict=False)
    kept = f"{len(fitting)} of {len(own)} tensors from {path}"
    return f"initialised {kept}" + (f"; new: {', '.join(fresh)}" if fresh else "")


def last_layer(model: nn.Module) -> nn.Module:
    """The last module (in definition order) that owns parameters: the classifier's output layer."""
    owners = [m for m in model.modules() if any(True for _ in m.parameters(recurse=False))]
    if not owners:
        raise CnnlabError("the model has no parameters to train")
    return owners[-1]


def freeze_body(model: nn.Module) -> int:
    """Train only the classifier's last layer (``--freeze``); returns the number of parameters left trainable.

    Batch-norm statistics of the frozen body still follow the new data in training mode, as in d2l 14.2.
    """
    keep = {id(p) for p in last_layer(model).parameters()}
    for p in model.parameters():
        p.requires_grad_(id(p) in keep)
    return sum(p.numel() for p in model.parameters() if p.requires_grad)
