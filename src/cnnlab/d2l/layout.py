"""Conv weights held channels-last while the book's training loops run (``Trainer.fit`` and ``train_ch6``).

oneDNN (CPU) and cuDNN (CUDA) run convolutions fastest on channels-last tensors; the book's models are built in
the default layout. Both loops convert a model's 4-D weights before training and hand them back in the default
layout when they return, so code that inspects the weights afterwards sees what d2l would give it. On the CPU the
BatchNorm layers with few channels (BN-LeNet's first, of 6) train on contiguous inputs meanwhile
(:func:`cnnlab.device.train_small_batch_norms_contiguous`); those hooks go when the weights go back.
"""

from __future__ import annotations

import contextlib
import weakref
from collections.abc import Iterator

import torch
from torch import nn
from torch.nn.parameter import is_lazy
from torch.utils.hooks import RemovableHandle

from cnnlab.device import channels_last_pays, train_small_batch_norms_contiguous

__all__ = ["to_channels_last", "to_contiguous", "channels_last_while"]

# The BatchNorm hooks each converted model carries until it is handed back (a weak key: a model dropped mid-fit
# takes its entry with it).
_HOOKS: weakref.WeakKeyDictionary[nn.Module, list[RemovableHandle]] = weakref.WeakKeyDictionary()


def to_channels_last(model: nn.Module, device: torch.device) -> bool:
    """Put ``model``'s 4-D (conv) weights in channels-last order; True when it converted them.

    False where it does not apply: a device other than CPU or CUDA, no conv weights, a 5-D weight (channels-last
    is 4-D only), weights already channels-last (the user's own choice, left as it is), or weights still lazy (the
    caller asks again once a first step has given them shapes).
    """
    params = list(model.parameters())
    if not channels_last_pays(device) or any(is_lazy(p) for p in params):
        return False
    if any(p.dim() == 5 for p in params):
        return False
    if all(p.is_contiguous(memory_format=torch.channels_last) for p in params if p.dim() == 4):
        return False
    model.to(memory_format=torch.channels_last)
    if device.type == "cpu":
        _HOOKS[model] = train_small_batch_norms_contiguous(model)
    return True


def to_contiguous(model: nn.Module) -> None:
    """Undo :func:`to_channels_last`: the weights back in the default layout, the BatchNorm hooks removed."""
    model.to(memory_format=torch.contiguous_format)
    for handle in _HOOKS.pop(model, []):
        handle.remove()


@contextlib.contextmanager
def channels_last_while(model: nn.Module, device: torch.device) -> Iterator[None]:
    """Hold ``model``'s conv weights channels-last inside the block; back to the default layout on leaving it,
    also when the block raises (an interrupted ``train_ch6`` leaves the model as the user built it)."""
    converted = to_channels_last(model, device)
    try:
        yield
    finally:
        if converted:
            to_contiguous(model)
