"""Cheap argument checks shared by the ops: each failure is one CnnlabError line, 'op: expected X, got Y'.

These run on every forward pass, so they only look at Python ints and tensor metadata (shape, dtype, device),
never at tensor values, and build their message only when they fail. ``empty_result`` is the other half of the
zero-size edge: what an op returns when torch accepts an input with nothing in it.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from cnnlab.errors import CnnlabError


def _is_int(value: object) -> bool:
    # bool is an int subclass, but `stride=True` is a mistake, not a stride of 1.
    return isinstance(value, int) and not isinstance(value, bool)


def pair(value: int | Sequence[int], name: str, op: str, minimum: int = 1) -> tuple[int, int]:
    """``value`` as a (height, width) pair of ints, each at least ``minimum``.

    Accepts an int (used for both sides) or a sequence of one or two ints, as torch.nn.functional does.
    """
    if _is_int(value):
        result = (value, value)
    elif isinstance(value, Sequence) and len(value) in (1, 2) and all(_is_int(v) for v in value):
        result = (value[0], value[-1])
    else:
        raise CnnlabError(f"{op}: expected {name} to be an int or a pair of ints, got {value!r}")
    if result[0] < minimum or result[1] < minimum:
        bound = "positive" if minimum == 1 else "non-negative"
        raise CnnlabError(f"{op}: expected {name} to be {bound}, got {value!r}")
    return result


def check_tensor(x: object, name: str, op: str) -> None:
    """Raise unless ``x`` is a floating-point tensor (the ops pad with -inf and divide)."""
    if not isinstance(x, torch.Tensor):
        raise CnnlabError(f"{op}: expected {name} to be a torch.Tensor, got {type(x).__name__}")
    if not x.is_floating_point():
        raise CnnlabError(f"{op}: expected {name} to be a floating-point tensor, got dtype {x.dtype}")


def check_image_batch(x: object, op: str) -> bool:
    """Check an (N, C, H, W) or unbatched (C, H, W) input; returns whether it was unbatched."""
    check_tensor(x, "input", op)
    if x.dim() not in (3, 4):
        raise CnnlabError(f"{op}: expected input of shape (N, C, H, W) or (C, H, W), got shape {tuple(x.shape)}")
    return x.dim() == 3


def check_like(x: torch.Tensor, other: torch.Tensor | None, name: str, op: str) -> None:
    """Raise unless ``other`` (when given) has the dtype and device of ``x``."""
    if other is None:
        return
    if not isinstance(other, torch.Tensor):
        raise CnnlabError(f"{op}: expected {name} to be a torch.Tensor, got {type(other).__name__}")
    if other.dtype != x.dtype or other.device != x.device:
        raise CnnlabError(f"{op}: expected {name} of dtype {x.dtype} on {x.device} like the input, "
                          f"got dtype {other.dtype} on {other.device}")


def check_vector(v: torch.Tensor | None, length: int, name: str, op: str) -> None:
    """Raise unless ``v`` (when given) is a 1-D tensor of ``length`` elements, one per channel."""
    if v is None:
        return
    if not isinstance(v, torch.Tensor):
        raise CnnlabError(f"{op}: expected {name} to be a torch.Tensor, got {type(v).__name__}")
    if tuple(v.shape) != (length,):
        raise CnnlabError(f"{op}: expected {name} of shape ({length},), one per channel, got shape {tuple(v.shape)}")


def empty_result(shape: tuple[int, ...], *sources: torch.Tensor | None) -> torch.Tensor:
    """A tensor of ``shape`` (which holds no elements) that depends on every tensor of ``sources``.

    Adding each source's (0-d) sum keeps the autograd graph, so backward hands every source a zero gradient, as
    torch.nn.functional does for an empty batch; on an empty tensor the addition costs nothing.
    """
    out = sources[0].new_zeros(shape)
    for t in sources:
        if t is not None:
            out = out + t.sum()
    return out
