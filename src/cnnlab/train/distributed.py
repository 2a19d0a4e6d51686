"""torch.distributed from torchrun's environment: one process per device, rank 0 writes.

`torchrun --standalone --nproc_per_node=N -m cnnlab train MODEL ...` sets RANK, LOCAL_RANK and WORLD_SIZE; we
take the process group from there (nccl on CUDA, gloo on the CPU) and wrap the model in DistributedDataParallel.
See docs/distributed.md.
"""

from __future__ import annotations

import os
import pickle
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial

import torch
import torch.distributed as dist

# A bound, not a typical wait: gloo lets go of a collective's tensors microseconds after it wakes the caller.
RELEASE_WAIT_S = 5.0
# Set once a wait has run out: the holder was then not gloo's worker, and later collectives do not wait.
_waits_ran_out = False


@dataclass(frozen=True)
class DistEnv:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1


def launched_processes() -> int:
    """How many processes a launcher (torchrun) started this one among, as its WORLD_SIZE says; 1 outside one."""
    try:
        return int(os.environ.get("WORLD_SIZE", "1"))
    except ValueError:
        return 1


def init_distributed(device: torch.device) -> DistEnv:
    """Join the process group torchrun describes in the environment; a plain run gets a one-process DistEnv."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size <= 1:
        return DistEnv()
    env = DistEnv(int(os.environ["RANK"]), world_size, int(os.environ.get("LOCAL_RANK", "0")))
    if not dist.is_initialized():
        backend = "nccl" if device.type == "cuda" else "gloo"
        if device.type == "cuda":
            torch.cuda.set_device(device)
        dist.init_process_group(backend=backend)
    return env


def _collective(call: Callable[[], object], tensors: Sequence[torch.Tensor]) -> None:
    """Run ``call`` (a blocking collective on ``tensors``); under gloo, return only once gloo holds none of them.

    Why wait: a gloo worker thread lets go of a collective's tensors just after it wakes the caller, and letting go
    of a tensor that Python also knows takes the GIL. If the process is exiting by then, the worker asks for the GIL
    during interpreter finalization (torch does not check for it) and the process aborts ("terminate called without
    an active exception", SIGABRT after a run that finished; docs/distributed.md says how often). A sleep hands the
    GIL over; the use count tells when the worker has let go. Only gloo is waited for: the abort was seen there,
    while nccl's watchdog may hold a work until its kernels have run (untested on a GPU).
    """
    global _waits_ran_out
    use_count = getattr(torch.Tensor, "_use_count", None)
    before = [use_count(t) for t in tensors] if use_count else []
    call()
    if not before or _waits_ran_out or dist.get_backend() != "gloo":
        return
    deadline = time.monotonic() + RELEASE_WAIT_S
    while any(use_count(t) > n for t, n in zip(tensors, before, strict=True)):
        if time.monotonic() > deadline:  # another torch may keep works longer: cost one bound, not one per call
            _waits_ran_out = True
            return
        time.sleep(1e-4)


def _box_device() -> torch.device:
    """Where a collective's scratch tensors live: nccl reduces device tensors, gloo CPU ones."""
    return torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else torch.device("cpu")


def broadcast_object(obj, env: DistEnv):
    """Rank 0's ``obj`` (picklable: it is this run's own data) on every rank.

    Not torch's broadcast_object_list: its tensors are made inside it, out of :func:`_collective`'s sight, and a
    refused run folder ends every rank right after this call.
    """
    if not env.enabled:
        return obj
    device = _box_device()
    data = pickle.dumps(obj) if env.is_main else b""
    size = torch.tensor([len(data)], dtype=torch.int64, device=device)
    _collective(lambda: dist.broadcast(size, src=0), [size])
    payload = (torch.frombuffer(bytearray(data), dtype=torch.uint8).to(device) if env.is_main
               else torch.empty(int(size.item()), dtype=torch.uint8, device=device))
    _collective(lambda: dist.broadcast(payload, src=0), [payload])
    return obj if env.is_main else pickle.loads(payload.cpu().numpy().tobytes())


def reduce_int(value: int, env: DistEnv, device: torch.device, op: str = "max") -> int:
    """The max (or min) of ``value`` over all ranks.

    A collective: every rank must call it at the same point of the loop, which is how the trainer turns rank-local
    events (a signal, a non-finite loss) into one decision, so no rank is left waiting in DDP's all-reduce.
    """
    if not env.enabled:
        return value
    box = torch.tensor([value], dtype=torch.int64, device=device)  # nccl reduces device tensors, gloo CPU ones
    _collective(lambda: dist.all_reduce(box, op=dist.ReduceOp.MAX if op == "max" else dist.ReduceOp.MIN), [box])
    return int(box.item())


def sum_over_ranks(tensor: torch.Tensor) -> None:
    """Sum ``tensor`` over all ranks, in place, where a process group is up (a collective: every rank calls it)."""
    if dist.is_available() and dist.is_initialized():
        _collective(lambda: dist.all_reduce(tensor), [tensor])


def broadcast_buffers(module: torch.nn.Module, env: DistEnv) -> None:
    """Copy rank 0's buffers (e.g. BatchNorm running statistics) into ``module`` on every rank, in place."""
    if env.enabled:
        for buffer in module.buffers():
            _collective(partial(dist.broadcast, buffer, src=0), [buffer])


def barrier(env: DistEnv) -> None:
    if env.enabled:
        dist.barrier()


def shutdown(env: DistEnv) -> None:
    if env.enabled and dist.is_initialized():
        dist.destroy_process_group()


def gather_in_shard_order(tensor: torch.Tensor, env: DistEnv) -> torch.Tensor:
    """Every rank's ``tensor`` back in the order of the split the ranks shared, on every rank (a collective).

    Without shuffling, rank ``r`` holds items ``r, r + world_size, r + 2 * world_size, ...`` of the split, as many
    on every rank (:class:`cnnlab.data.DeviceLoader`): interleaving the ranks' rows restores the split's order.
    """
    if not env.enabled:
        return tensor
    parts, tensor = [torch.empty_like(tensor) for _ in range(env.world_size)], tensor.contiguous()
    _collective(lambda: dist.all_gather(parts, tensor), [tensor, *parts])
    return torch.stack(parts, dim=1).flatten(0, 1)
