"""The book's device helpers (d2l 6.7): ``cpu``, ``gpu``, ``num_gpus``, ``try_gpu``, ``try_all_gpus``.

d2l counts CUDA devices only; here Apple's MPS counts as one GPU (via ``cnnlab.device.mps_available``), so the
book's ``num_gpus=1`` trains on a Mac's GPU too. Without any GPU everything falls back to the CPU, as in d2l.
"""

from __future__ import annotations

import torch

from cnnlab.device import mps_available

__all__ = ["cpu", "gpu", "num_gpus", "try_gpu", "try_all_gpus"]


def cpu() -> torch.device:
    """The CPU device."""
    return torch.device("cpu")


def gpu(i: int = 0) -> torch.device:
    """GPU number ``i``: ``cuda:i``, or ``mps`` on a machine whose only GPU is Apple's."""
    if torch.cuda.device_count() == 0 and mps_available():
        return torch.device("mps")
    return torch.device(f"cuda:{i}")


def num_gpus() -> int:
    """How many GPUs torch can use: the CUDA devices, or 1 for MPS."""
    count = torch.cuda.device_count()
    if count == 0 and mps_available():
        return 1
    return count


def try_gpu(i: int = 0) -> torch.device:
    """``gpu(i)`` if that GPU exists, else ``cpu()``."""
    if num_gpus() >= i + 1:
        return gpu(i)
    return cpu()


def try_all_gpus() -> list[torch.device]:
    """All GPUs, or ``[cpu()]`` when there is none.

    That is what the book's docstring promises; d2l 1.0.3's code returns ``[]`` there, which breaks the book's
    ``devices[0]`` on a CPU-only machine.
    """
    devices = [gpu(i) for i in range(num_gpus())]
    return devices or [cpu()]
