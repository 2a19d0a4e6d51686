"""Conv weights held channels-last while the book's training loops run (``Trainer.fit`` and ``train_ch6``).

oneDNN (CPU) and cuDNN (CUDA) run convolutions fastest on channels-last tensors; the book's models are built in
the default layout. Both loops convert a model's 4-D weights at its first step (a lazy model's at its second, once
it has shapes) and hand them back in the default layout when they return, into the tensors the weights had before
(a ``state_dict()`` or ``conv.weight.data`` taken before training then holds the trained values, as under d2l), so
code that inspects the weights afterwards sees what d2l would give it. A forward that cannot take channels-last maps
(``x.view(n, -1)`` on them, a common way to flatten in the user's own models) is found by one forward of that first
batch before the step (its prints hidden), and the model then trains in the default layout, as under d2l, with a
warning; a forward that fails in the default layout too trains there, to fail at the step as under d2l. On the CPU the
BatchNorm layers with few channels (BN-LeNet's first, of 6) train on contiguous inputs meanwhile
(:func:`cnnlab.device.train_small_batch_norms_contiguous`); those hooks go when the weights go back.
"""

from __future__ import annotations

import contextlib
import io
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
# The weight tensors each converted model had: model.to gives the weights new storage, and the trained values go
# back into these, which whatever the user took from the weights before still shares.
_ORIGINALS: weakref.WeakKeyDictionary[nn.Module, list[tuple[nn.Parameter, torch.Tensor]]] = \
    weakref.WeakKeyDictionary()


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
    _ORIGINALS[model] = [(p, p.data) for p in params if p.dim() == 4]
    model.to(memory_format=torch.channels_last)
    if device.type == "cpu":
        _HOOKS[model] = train_small_batch_norms_contiguous(model)
    return True


def to_contiguous(model: nn.Module) -> None:
    """Undo :func:`to_channels_last`: the weights back in the default layout and in their own tensors, the
    BatchNorm hooks removed."""
    with torch.no_grad():
        for param, original in _ORIGINALS.pop(model, []):
            original.copy_(param.data)
            param.data = original
    model.to(memory_format=torch.contiguous_format)
    for handle in _HOOKS.pop(model, []):
        handle.remove()


def channels_last_checked(model: nn.Module, device: torch.device, inputs: Sequence[torch.Tensor]) -> bool | None:
    """:func:`to_channels_last`, then a forward of ``inputs`` (the first batch's model arguments, whole: a forward
    may check its batch size) in evaluation mode without gradients, its prints hidden. A forward that fails there
    puts the weights back; it warns when the default layout runs it, the failure being channels-last's. True when
    the weights stay channels-last, False when they do not, None while the model is lazy (ask at the next step)."""
    if any(is_lazy(p) for p in model.parameters()):
        return None
    if not to_channels_last(model, device):
        return False
    try:
        _trial_forward(model, inputs)
    except Exception as e:  # the user's forward: any error of theirs (an assert on the shape) can come from it
        to_contiguous(model)
        try:
            _trial_forward(model, inputs)
        except Exception:  # fails either way: not the layout's doing, and the first step says what it is
            return False
        warnings.warn(f"{type(model).__name__} trains in the default memory layout, not channels-last: its forward "
                      f"fails on channels-last feature maps ({summary(e, 160)}); flattening with .reshape or "
                      f".flatten rather than .view lets it train channels-last, faster", stacklevel=3)
        return False
    except BaseException:  # an interruption: the model goes back as the user gave it
        to_contiguous(model)
        raise
    return True


def _trial_forward(model: nn.Module, inputs: Sequence[torch.Tensor]) -> None:
    was_training = model.training
    try:
        model.eval()
        with torch.no_grad(), contextlib.redirect_stdout(io.StringIO()):
            model(*inputs)
    finally:
        model.train(was_training)
