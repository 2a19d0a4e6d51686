"""Batch normalization (d2l 8.5) with ``torch.nn.functional.batch_norm``'s signature and running-stat updates."""

from __future__ import annotations

import torch

from cnnlab.errors import CnnlabError
from cnnlab.ops._checks import check_tensor, check_vector, empty_result


def batch_norm(input: torch.Tensor, running_mean: torch.Tensor | None, running_var: torch.Tensor | None,
               weight: torch.Tensor | None = None, bias: torch.Tensor | None = None, training: bool = False,
               momentum: float = 0.1, eps: float = 1e-5) -> torch.Tensor:
    """Normalize each channel (dimension 1) of ``input``, then scale by ``weight`` and shift by ``bias``.

    In training mode the statistics are the batch's, over every dimension but the channel one (d2l eq. 8.5.1):
    the biased variance normalizes, and the running statistics (when given) are updated in place as
    ``running = (1 - momentum) * running + momentum * batch`` with the *unbiased* variance, as PyTorch does.
    In evaluation mode the running statistics normalize and nothing is updated.

    Args:
        input: (N, C) or (N, C, ...) such as (N, C, H, W).
        running_mean, running_var: (C,) buffers, required in evaluation mode, optional in training.
        weight, bias: optional (C,) affine parameters (gamma and beta in d2l 8.5).
        training: use and record batch statistics.
        momentum: weight of the new batch in the running average.
        eps: added to the variance for numerical stability; positive in training, non-negative otherwise.

    Returns:
        Tensor of the input's shape; gradients flow to input, weight and bias (through the batch statistics
        in training mode).
    """
    op = "batch_norm"
    check_tensor(input, "input", op)
    if input.dim() < 2:
        raise CnnlabError(f"{op}: expected input of shape (N, C) or (N, C, ...), got shape {tuple(input.shape)}")
    c = input.shape[1]
    given = [(name, t) for name, t in (("running_mean", running_mean), ("running_var", running_var),
                                       ("weight", weight), ("bias", bias)) if t is not None]
    for name, t in given:
        check_vector(t, c, name, op)
        if t.device != input.device:
            raise CnnlabError(f"{op}: expected {name} on {input.device} like the input, got {t.device}")
    # PyTorch's rule: everything in the input's dtype, or, for a float16 or bfloat16 input, every parameter and
    # statistic in float32 (mixed precision). Half-precision input is normalised in float32, as PyTorch's kernels
    # accumulate: its batch statistics in its own precision are off by more than its rounding.
    reduced = input.dtype in (torch.float16, torch.bfloat16)
    if not (reduced and given and all(t.dtype == torch.float32 for _, t in given)):
        for name, t in given:
            if t.dtype != input.dtype:
                also = " (or all float32 for a float16 or bfloat16 input)" if reduced else ""
                raise CnnlabError(f"{op}: expected {name} of dtype {input.dtype} like the input{also}, got {t.dtype}")
    if (running_mean is None) != (running_var is None):
        given = "running_mean" if running_var is None else "running_var"
        raise CnnlabError(f"{op}: expected running_mean and running_var both given or both None, got only {given}")
    # PyTorch's rule: a zero eps is fine for fixed statistics, but a batch's variance may be 0. NaN passes, as there.
    if eps < 0 or (training and eps == 0):
        raise CnnlabError(f"{op}: expected eps > 0 in training (>= 0 in evaluation), got {eps!r}")
    if input.numel() == 0:
        # Nothing to normalize: ATen's batch_norm returns the empty input and leaves the running statistics alone,
        # in training too. With no channels it fails there (IndexError) when weight or bias is given; refuse cleanly.
        if c == 0 and (weight is not None or bias is not None):
            raise CnnlabError(f"{op}: expected at least one channel when weight or bias is given, "
                              f"got input shape {tuple(input.shape)}")
        return empty_result(input.shape, input, weight, bias)
    shape = (1, c) + (1,) * (input.dim() - 2)  # broadcasts a per-channel vector over the input
    x = input.float() if reduced else input
    if training:
        count = input.numel() // c
        if count < 2:
            raise CnnlabError(f"{op}: expected more than 1 value per channel when training, "
                              f"got input shape {tuple(input.shape)}")
        dims = [0] + list(range(2, input.dim()))
        var, mean = torch.var_mean(x, dim=dims, correction=0)
        if running_mean is not None or running_var is not None:
            with torch.no_grad():
                if running_mean is not None:
                    running_mean.mul_(1 - momentum).add_(mean.to(running_mean.dtype), alpha=momentum)
                if running_var is not None:
                    unbiased = var * (count / (count - 1))
                    running_var.mul_(1 - momentum).add_(unbiased.to(running_var.dtype), alpha=momentum)
    else:
        if running_mean is None:  # both None: the check above refused one without the other
            raise CnnlabError(f"{op}: expected running_mean and running_var in evaluation mode, got None")
        mean, var = running_mean.to(x.dtype), running_var.to(x.dtype)
    # y = (x - mean) * rstd * weight + bias, folded into one per-channel scale and shift so the big tensor is
    # read once (addcmul) instead of four times.
    scale = torch.rsqrt(var + eps)
    if weight is not None:
        scale = scale * weight.to(x.dtype)
    shift = -mean * scale
    if bias is not None:
        shift = shift + bias.to(x.dtype)
    out = torch.addcmul(shift.view(shape), x, scale.view(shape))
    return out.to(input.dtype) if reduced else out
