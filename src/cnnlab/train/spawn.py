"""Data parallel over this machine's cores without torchrun: ``train_in_processes(2, "lenet")``.

Each of ``procs`` worker processes runs :func:`cnnlab.train.train` with ``batch_size / procs`` of the recipe's
batch and ``cores / procs`` threads; DistributedDataParallel all-reduces the gradients over gloo on loopback
(docs/distributed.md). Rank ``r`` takes ``perm[r::procs]`` of each epoch's permutation, so the ranks' batch ``i``
together are exactly the one-process run's batch ``i``: same global batch, same samples per step, same SGD update
up to float rounding (for models without BatchNorm, whose statistics are per rank). On a small CPU model this
trades one process whose oneDNN kernels split each op over the cores for one single-thread process per core
(docs/benchmarks.md, "Two single-thread processes").

The workers are started with PyTorch's own launcher (``torch.distributed.launcher.api.elastic_launch``, what
``torchrun --standalone`` uses): a private rendezvous on 127.0.0.1 and a free port, no restarts.
"""

from __future__ import annotations

import os
import sys
import uuid
from typing import Any

from cnnlab.checks import positive_int
from cnnlab.errors import CnnlabError
from cnnlab.train import make_config, train


def cores() -> int:
    """CPU cores this process may run on (its affinity mask, not the machine's count)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS and Windows have no sched_getaffinity
        return os.cpu_count() or 1


def split_batch(batch_size: int, procs: int) -> int:
    """The per-process batch that keeps the global batch at ``batch_size``; raise unless ``procs`` divides it."""
    positive_int(procs, "procs")
    if batch_size % procs:
        raise CnnlabError(f"procs must divide the batch size so that the global batch stays {batch_size}, "
                          f"got {procs} processes")
    return batch_size // procs


def train_in_processes(procs: int, model: str, recipe: str = "book", *, threads: int | None = None,
                       **kwargs: Any) -> list[dict[str, float]]:
    """:func:`cnnlab.train.train` in ``procs`` local processes splitting each batch; returns rank 0's history.

    Args:
        procs: worker processes (1 runs in this process, as ``train`` does).
        model, recipe: as for ``train``.
        threads: intra-op threads per worker (default: this process's cores // ``procs``, at least 1).
        **kwargs: ``train``'s keywords (``force``, ``quiet``, ``report``, TrainConfig overrides). ``batch_size``
            is the global batch, as in a one-process run; ``on_epoch`` is not supported (it would run in a worker).

    Raises:
        CnnlabError: bad arguments (before any process starts), or a worker's error, as one line.

    Example:
        >>> history = train_in_processes(2, "lenet", epochs=1, device="cpu")  # doctest: +SKIP
    """
    if kwargs.get("on_epoch") is not None:
        raise CnnlabError("on_epoch cannot cross into worker processes; expected procs=1 with an on_epoch callback")
    if "WORLD_SIZE" in os.environ:
        raise CnnlabError(f"already one of {os.environ['WORLD_SIZE']} processes of a launcher; expected procs "
                          "only outside torchrun")
    flags = {"force", "quiet", "report"}
    overrides = {k: v for k, v in kwargs.items() if k not in flags and k != "on_epoch"}
    config = make_config(model, recipe, **overrides)  # a bad override fails here, before any process starts
    per_process = split_batch(config.batch_size, procs)
    if procs == 1:
        return train(model, recipe, **kwargs)
    if config.device not in ("cpu", "auto"):
        raise CnnlabError(f"procs splits the CPU's cores among processes; expected --device cpu, got {config.device}")
    threads = threads or max(1, cores() // procs)
    options = {k: kwargs[k] for k in flags if k in kwargs}
    args = (model, recipe, {**overrides, "batch_size": per_process, "device": "cpu"}, options, threads)
    return _launch(procs, args)[0]


def _launch(procs: int, args: tuple) -> dict[int, Any]:
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.launcher.api import LaunchConfig, elastic_launch

    config = LaunchConfig(min_nodes=1, max_nodes=1, nproc_per_node=procs, rdzv_backend="c10d",
                          rdzv_endpoint="127.0.0.1:0", run_id=str(uuid.uuid4()), max_restarts=0,
                          start_method="spawn")
    try:
        return elastic_launch(config, _worker)(*args)
    except ChildFailedError as e:
        rank, failure = e.get_first_failure()
        message = failure.message if isinstance(failure.message, str) else failure.message.get("message", "")
        last = next((ln for ln in reversed(str(message).splitlines()) if ln.strip()), f"exit code {failure.exitcode}")
        raise CnnlabError(f"training process {rank} of {procs} failed: {last.strip()}") from None


def _worker(model: str, recipe: str, overrides: dict[str, Any], options: dict[str, Any],
            threads: int) -> list[dict[str, float]]:
    """One rank: the launcher set RANK, WORLD_SIZE, MASTER_ADDR and MASTER_PORT; the Trainer joins from there."""
    import torch

    torch.set_num_threads(threads)
    if sys.platform == "linux":  # gloo would otherwise pick the interface the host name resolves to
        os.environ.setdefault("GLOO_SOCKET_IFNAME", "lo")
    return train(model, recipe, **options, **overrides)
