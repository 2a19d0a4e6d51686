"""Choosing the device: the same command runs on CUDA, MPS or the CPU."""

from __future__ import annotations

import contextlib
import math
import os
import re
import time
from collections.abc import Iterator

import torch
from torch import nn
from torch.utils.hooks import RemovableHandle

from cnnlab.errors import CnnlabError


def mps_available() -> bool:
    return bool(getattr(torch.backends, "mps", None)) and torch.backends.mps.is_available()


def channels_last_pays(device: torch.device) -> bool:
    """Whether torch's conv kernels on ``device`` are fastest with channels-last tensors: oneDNN on the CPU and
    cuDNN on CUDA (with AMP). On the CPU it trains LeNet, DenseNet and GoogLeNet faster and ResNet-18 no slower
    (docs/benchmarks.md)."""
    return device.type in ("cpu", "cuda")


# ATen's channels-last BatchNorm backward on the CPU is several times slower than the contiguous one for layers of
# 6 or 8 channels (and slower for 24, where the layout change would cost more than it saves); from 16 channels up it
# is as fast or faster (docs/benchmarks.md, "Channels-last BatchNorm with few channels on the CPU").
SMALL_BATCH_NORM = 16


def _contiguous_training_input(module: nn.Module, args: tuple) -> tuple | None:
    x = args[0]
    if module.training and torch.is_grad_enabled() and x.device.type == "cpu" and not x.is_contiguous():
        return (x.contiguous(), *args[1:])
    return None  # evaluation, or an input already contiguous: as it is


def train_small_batch_norms_contiguous(model: nn.Module) -> list[RemovableHandle]:
    """Give each 2-D BatchNorm of fewer than ``SMALL_BATCH_NORM`` channels in ``model`` its training input in the
    contiguous layout (a forward pre-hook); returns the hooks' handles.

    For a model held channels-last on the CPU: the layer then normalises, and its backward runs, on the contiguous
    tensor, and the next convolution takes its input back to channels-last itself. Evaluation is left alone (the
    channels-last forward is fast). It speeds up the compact net's and BN-LeNet's training (docs/benchmarks.md).
    """
    return [m.register_forward_pre_hook(_contiguous_training_input) for m in model.modules()
            if isinstance(m, nn.BatchNorm2d) and 0 < m.num_features < SMALL_BATCH_NORM]


@contextlib.contextmanager
def torch_switches_restored() -> Iterator[None]:
    """Put torch's process-wide kernel switches back as they were when the block ends, however it ends.

    A run sets them for itself (``--deterministic``: deterministic algorithms, and on resume the thread count the
    run started with; on CUDA otherwise: TF32 and cuDNN's autotuner). Without this they would stay set for
    whatever the process does next: the user's own code in a notebook, a study's next variant, a sweep's next
    trial in the same worker.
    """
    saved = (torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled(),
             torch.backends.cudnn.benchmark, torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32)
    threads = torch.get_num_threads()
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(saved[0], warn_only=saved[1])
        (torch.backends.cudnn.benchmark, torch.backends.cudnn.allow_tf32,
         torch.backends.cuda.matmul.allow_tf32) = saved[2:]
        if torch.get_num_threads() != threads:
            torch.set_num_threads(threads)


# What --device takes: a name, or a CUDA device by index as torch spells it (torch.device("cuda:1")).
DEVICE_NAME = re.compile(r"auto|cpu|mps|cuda(:\d+)?")


def check_device_name(name: object) -> str:
    """Return ``name`` if it is ``auto``, ``cpu``, ``mps``, ``cuda`` or ``cuda:N``; else raise a one-line CnnlabError.

    Only the spelling is checked: whether the device exists is :func:`resolve_device`'s question.
    """
    if not isinstance(name, str) or not DEVICE_NAME.fullmatch(name):
        raise CnnlabError(f"device must be auto, cpu, cuda, cuda:N or mps; got {name!r}")
    return name


def resolve_device(name: str | torch.device = "auto") -> torch.device:
    """``"auto"`` picks CUDA, then MPS, then the CPU; an explicit device that is absent is an error.

    Under torchrun, CUDA means ``cuda:<LOCAL_RANK>``.
    """
    if isinstance(name, torch.device):
        return name
    check_device_name(name)
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "mps" if mps_available() else "cpu"
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise CnnlabError(f"device {name} was asked for but torch sees no CUDA device (use --device cpu or auto)")
        if name == "cuda":
            return torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
        device, count = torch.device(name), torch.cuda.device_count()
        if device.index >= count:
            raise CnnlabError(f"device {name} was asked for but torch sees {count} CUDA device(s): cuda:0 to "
                              f"cuda:{count - 1}")
        return device
    if name == "mps":
        if not mps_available():
            raise CnnlabError("device mps was asked for but MPS is not available here (use --device cpu or auto)")
        return torch.device("mps")
    return torch.device("cpu")


def advised_threads() -> int | None:
    """The intra-op thread count a run should use now, when torch's own is more than the cores other processes
    leave free (see :func:`oversubscription_hint`); None where torch's count is fine or the load is unknown.

    ``make train`` passes it on as ``OMP_NUM_THREADS`` (the Makefile); the library never changes the count itself:
    a Python user's process and a deterministic run's thread count are theirs to set.
    """
    busy = _busy_cpu()
    return busy[2] if busy else None


# How long the CPU's busy time is sampled for: long enough to see a process that keeps a core busy.
BUSY_SAMPLE_S = 0.1


def cores_in_use(interval: float = BUSY_SAMPLE_S) -> float | None:
    """How many cores the machine's processes keep busy now: /proc/stat's busy share of CPU time over ``interval``
    seconds, times the cores (Linux; None elsewhere). This process sleeps meanwhile, so it counts the others."""
    def sample() -> tuple[int, int]:
        with open("/proc/stat") as f:
            fields = [int(v) for v in f.readline().split()[1:9]]  # user nice system idle iowait irq softirq steal
        return sum(fields), fields[3] + fields[4]

    try:
        total0, idle0 = sample()
        time.sleep(interval)
        total1, idle1 = sample()
    except (OSError, ValueError, IndexError):
        return None
    total = total1 - total0
    return (total - (idle1 - idle0)) / total * (os.cpu_count() or 1) if total > 0 else None


def _busy_cpu() -> tuple[float, int, int] | None:
    """(load, cores, free cores) when torch's threads outnumber the cores other processes leave free, else None.

    The load is the smaller of the 1-minute load average and the cores in use now. The average alone still counts
    a run that ended a minute ago, and advised one thread on an idle CPU, where two are much faster
    (docs/benchmarks.md, "Threads on an idle CPU"); the instant alone would count a passing spike.
    """
    threads = torch.get_num_threads()
    cores = os.cpu_count() or 1
    try:
        load = os.getloadavg()[0]
    except (AttributeError, OSError):  # no load average on this platform
        return None

    def free(load: float) -> int:  # cores the rest of the machine leaves idle; at least the one this process uses
        return max(1, math.floor(cores - load + 0.5))

    if threads <= free(load):
        return None
    now = cores_in_use()  # sampled only when the average says busy: it costs BUSY_SAMPLE_S
    if now is not None:
        load = min(load, now)
    return (load, cores, free(load)) if threads > free(load) else None


def oversubscription_hint() -> str | None:
    """One line of advice when torch's CPU threads outnumber the cores other processes leave free, else ``None``.

    torch's OpenMP threads spin while they wait for each other, so on a CPU that other processes keep busy a
    multi-threaded step can run many times slower than a single-threaded one (README, "one thread on a shared
    CPU"; docs/benchmarks.md). The test is cheap: the load (the 1-minute average, and when that says busy, the
    cores in use now: :func:`_busy_cpu`) against ``os.cpu_count()`` and ``torch.get_num_threads()``. It never
    changes the thread count; the caller prints the line. ``None`` where the load average is unknown (Windows) or
    a single thread is in use.

    Example:
        >>> hint = oversubscription_hint()  # e.g. on a busy 2-core machine with torch's default 2 threads:
        >>> print(hint)  # doctest: +SKIP
        the CPU is busy (load 1.9 on 2 cores) and torch runs 2 threads: set OMP_NUM_THREADS=1 ...
    """
    busy = _busy_cpu()
    if busy is None:
        return None
    load, cores, free = busy
    return (f"the CPU is busy (load {load:.1f} on {cores} cores) and torch runs {torch.get_num_threads()} threads: "
            f"spinning OpenMP threads slow each other down, so set OMP_NUM_THREADS={free} (or "
            f"torch.set_num_threads({free})) for a faster run")
