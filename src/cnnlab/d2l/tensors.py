"""The framework-neutral tensor names the book's code uses (``d2l.tensor``, ``d2l.reduce_sum``, ...).

d2l defines them once per framework so one text serves PyTorch, MXNet, JAX and TensorFlow; for PyTorch they are
the torch functions themselves, or thin functions calling the tensor method of the same meaning.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import nn

__all__ = [
    "nn_Module", "ones_like", "ones", "zeros_like", "zeros", "tensor", "arange", "meshgrid", "sin", "sinh", "cos",
    "cosh", "tanh", "linspace", "exp", "log", "normal", "rand", "randn", "matmul", "int32", "int64", "float32",
    "concat", "stack", "abs", "eye", "sigmoid", "batch_matmul", "numpy", "size", "numel", "reshape", "to",
    "reduce_sum", "reduce_mean", "argmax", "astype", "transpose", "expand_dims", "swapaxes", "repeat",
]

nn_Module = nn.Module

ones_like = torch.ones_like
ones = torch.ones
zeros_like = torch.zeros_like
zeros = torch.zeros
tensor = torch.tensor
arange = torch.arange
meshgrid = torch.meshgrid
sin = torch.sin
sinh = torch.sinh
cos = torch.cos
cosh = torch.cosh
tanh = torch.tanh
linspace = torch.linspace
exp = torch.exp
log = torch.log
normal = torch.normal
rand = torch.rand
randn = torch.randn
matmul = torch.matmul
int32 = torch.int32
int64 = torch.int64
float32 = torch.float32
concat = torch.cat
stack = torch.stack
abs = torch.abs  # noqa: A001  the book's name shadows the builtin inside this namespace only
eye = torch.eye
sigmoid = torch.sigmoid
batch_matmul = torch.bmm


def numpy(x: torch.Tensor, *args: Any, **kwargs: Any) -> np.ndarray:
    """``x`` as a numpy array (detached; a tensor on a GPU must be moved to the CPU first, as in d2l)."""
    return x.detach().numpy(*args, **kwargs)


def size(x: torch.Tensor, *args: Any, **kwargs: Any) -> int:
    """Number of elements of ``x`` (d2l's name for ``numel``)."""
    return x.numel(*args, **kwargs)


numel = size


def reshape(x: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
    return x.reshape(*args, **kwargs)


def to(x: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
    return x.to(*args, **kwargs)


def reduce_sum(x: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
    return x.sum(*args, **kwargs)


def reduce_mean(x: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
    return x.mean(*args, **kwargs)


def argmax(x: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
    return x.argmax(*args, **kwargs)


def astype(x: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
    return x.type(*args, **kwargs)


def transpose(x: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
    """The matrix transpose ``x.t()`` (d2l's meaning of the name, not ``torch.transpose``)."""
    return x.t(*args, **kwargs)


def expand_dims(x: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
    return x.unsqueeze(*args, **kwargs)


def swapaxes(x: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
    return x.swapaxes(*args, **kwargs)


def repeat(x: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
    return x.repeat(*args, **kwargs)
