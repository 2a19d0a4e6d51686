"""Conv weights held channels-last while the book's training loops run (``Trainer.fit`` and ``train_ch6``).

oneDNN (CPU) and cuDNN (CUDA) run convolutions fastest on channels-last tensors; the book's models are built in
the default layout. Both loops convert a model's 4-D weights at its first step (a lazy model's at its second, once
it has shapes) and hand them back in the default layout when they return, so code that inspects the weights
afterwards sees what d2l would give it. A forward that cannot take channels-last maps (``x.view(n, -1)`` on them, a
common way to flatten in the user's own models) is found by one forward of that first batch's first two examples
before the step, and the model then trains in the default layout, as under d2l, with a warning. On the CPU the
BatchNorm layers with few channels (BN-LeNet's first, of 6) train on contiguous inputs meanwhile
(:func:`cnnlab.device.train_small_batch_norms_contiguous`); those hooks go when the weights go back.
"""

from __future__ import annotations

import warnings
import weakref
from collections.abc import Sequence

import torch
from torch import nn
from torch.nn.parameter import is_lazy
from torch.utils.hooks import RemovableHandle

from cnnlab.device import channels_last_pays, train_small_batch_norms_contiguous
from cnnlab.errors import summary

__all__ = ["to_channels_last", "to_contiguous", "channels_last_checked"]

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


def channels_last_checked(model: nn.Module, device: torch.device, inputs: Sequence[torch.Tensor]) -> bool | None:
    """:func:`to_channels_last`, then a forward of the first two examples of ``inputs`` (the model's arguments) in
    evaluation mode without gradients; a forward that fails there puts the weights back and warns once. True when
    the weights stay channels-last, False when they do not, None while the model is lazy (ask at the next step)."""
    if any(is_lazy(p) for p in model.parameters()):
        return None
    if not to_channels_last(model, device):
        return False
    was_training = model.training
    try:
        model.eval()
        with torch.no_grad():
            model(*(x[:2] if isinstance(x, torch.Tensor) else x for x in inputs))
    except RuntimeError as e:
        to_contiguous(model)
        warnings.warn(f"{type(model).__name__} trains in the default memory layout, not channels-last: its forward "
                      f"fails on channels-last feature maps ({summary(e, 160)}); flattening with .reshape or "
                      f".flatten rather than .view lets it train channels-last, faster", stacklevel=3)
        return False
    finally:
        model.train(was_training)
    return True
