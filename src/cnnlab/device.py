"""Choosing the device: the same command runs on CUDA, MPS or the CPU."""

from __future__ import annotations

import torch

from cnnlab.errors import CnnlabError


def mps_available() -> bool:
    return bool(getattr(torch.backends, "mps", None)) and torch.backends.mps.is_available()


def channels_last_pays(device: torch.device) -> bool:
    """Whether torch's conv kernels on ``device`` are fastest with channels-last tensors: oneDNN on the CPU and
    cuDNN on CUDA (with AMP). Measured on 2 CPU cores: 1.3-2.6x faster training for LeNet, DenseNet and GoogLeNet,
    equal for ResNet-18, and 1.19x for the book's own LeNet through cnnlab.d2l (docs/benchmarks.md)."""
    return device.type in ("cpu", "cuda")


def resolve_device(name: str | torch.device = "auto") -> torch.device:
    """``"auto"`` picks CUDA, then MPS, then the CPU; an explicit device that is absent is an error.

    Under torchrun, CUDA means ``cuda:<LOCAL_RANK>``.
    """
    if isinstance(name, torch.device):
        return name
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "mps" if mps_available() else "cpu"
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise CnnlabError("device cuda was asked for but torch sees no CUDA device (use --device cpu or auto)")
        if name == "cuda":
            import os

            return torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
        return torch.device(name)
    if name == "mps":
        if not mps_available():
            raise CnnlabError("device mps was asked for but MPS is not available here (use --device cpu or auto)")
        return torch.device("mps")
    if name == "cpu":
        return torch.device("cpu")
    raise CnnlabError(f"device must be auto, cpu, cuda, cuda:N or mps; got {name!r}")
