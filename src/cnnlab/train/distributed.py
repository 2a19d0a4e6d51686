"""torch.distributed from torchrun's environment: one process per device, rank 0 writes.

`torchrun --standalone --nproc_per_node=N -m cnnlab train MODEL ...` sets RANK, LOCAL_RANK and WORLD_SIZE; we
take the process group from there (nccl on CUDA, gloo on the CPU) and wrap the model in DistributedDataParallel.
See docs/distributed.md.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


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


def broadcast_object(obj, env: DistEnv):
    """Rank 0's ``obj`` on every rank."""
    if not env.enabled:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def reduce_int(value: int, env: DistEnv, device: torch.device, op: str = "max") -> int:
    """The max (or min) of ``value`` over all ranks.

    A collective: every rank must call it at the same point of the loop, which is how the trainer turns rank-local
    events (a signal, a non-finite loss) into one decision, so no rank is left waiting in DDP's all-reduce.
    """
    if not env.enabled:
        return value
    box = torch.tensor([value], dtype=torch.int64, device=device)  # nccl reduces device tensors, gloo CPU ones
    dist.all_reduce(box, op=dist.ReduceOp.MAX if op == "max" else dist.ReduceOp.MIN)
    return int(box.item())


def broadcast_buffers(module: torch.nn.Module, env: DistEnv) -> None:
    """Copy rank 0's buffers (e.g. BatchNorm running statistics) into ``module`` on every rank, in place."""
    if env.enabled:
        for buffer in module.buffers():
            dist.broadcast(buffer, src=0)


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
    parts = [torch.empty_like(tensor) for _ in range(env.world_size)]
    dist.all_gather(parts, tensor.contiguous())
    return torch.stack(parts, dim=1).flatten(0, 1)
