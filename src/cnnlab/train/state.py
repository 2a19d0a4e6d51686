"""What a bit-exact resume needs, and how a run is asked to stop.

``rng_state`` captures every random stream a run draws from (torch, CUDA, numpy, Python) as tensors and plain
containers, so it loads with ``torch.load(weights_only=True)``. ``install_stop_handlers`` turns SIGINT and
SIGTERM into a request the training loop answers at the end of the current step (checkpoint, then exit).
"""

from __future__ import annotations

import random
import signal
import threading
from collections.abc import Callable
from dataclasses import asdict
from typing import Any

import numpy as np
import torch

from cnnlab.errors import CheckpointError, CnnlabError
from cnnlab.train.checkpoint import save_checkpoint


def seed_all(seed: int) -> None:
    """Seed every stream :func:`rng_state` captures."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)  # CUDA's generators too


def rng_state() -> dict[str, Any]:
    np_state = np.random.get_state()
    py_version, py_state, py_gauss = random.getstate()
    state = {
        "torch": torch.get_rng_state(),
        "numpy": {"keys": torch.from_numpy(np_state[1].astype(np.int64)), "pos": int(np_state[2]),
                  "has_gauss": int(np_state[3]), "gauss": float(np_state[4])},
        "python": {"version": py_version, "state": list(py_state), "gauss": py_gauss},
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    n = state["numpy"]
    np.random.set_state(("MT19937", n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["gauss"]))
    p = state["python"]
    random.setstate((p["version"], tuple(p["state"]), p["gauss"]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def install_stop_handlers(on_signal: Callable[[int], None]) -> dict[int, Any] | None:
    """Route SIGINT and SIGTERM to ``on_signal(signum)``; returns the previous handlers (None off the main
    thread, where Python cannot install handlers)."""
    if threading.current_thread() is not threading.main_thread():
        return None
    return {s: signal.signal(s, lambda signum, frame: on_signal(signum)) for s in (signal.SIGINT, signal.SIGTERM)}


def restore_handlers(previous: dict[int, Any] | None) -> None:
    for s, handler in (previous or {}).items():
        signal.signal(s, handler)


class ResumableState:
    """The Trainer's checkpoint half: what it saves, and how a resume puts it back (mixed into ``Trainer``, whose
    attributes it reads; kept apart so that trainer.py holds the loop and this file everything a resume needs)."""

    def state_dict(self) -> dict[str, Any]:
        """Everything a bit-exact resume needs: tensors and plain containers only."""
        cfg = self.config
        state = {
            "model_name": cfg.model, "num_classes": self.dataset.num_classes, "in_channels": self.dataset.channels,
            "dataset": self.dataset_record(), "input_size": self.input_size,
            "normalize": self.normalize, "ops": cfg.ops, "config": asdict(cfg),
            "model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(), "rng": rng_state(), "loader": self.train_loader.state_dict(),
            "epoch_metrics": self.epoch_metrics.state_dict(), "epoch": self.epoch, "step": self.step,
            "history": self.history, "best_val_acc": self.best_val_acc, "elapsed": self.elapsed,
            "target_reached": self.target_reached,
            "world_size": self.dist.world_size, "torch_threads": torch.get_num_threads(),
        }
        if self.ema is not None:
            state["ema"] = self.ema.module.state_dict()
            state["ema_n"] = int(self.ema.n_averaged.item())
        return state

    def _checkpoint(self, name: str) -> None:
        """Rank 0 writes RUN_DIR/``name``; every rank must call it, since the partial epoch sums it keeps are
        summed over the ranks first (rank 0's own would lose the others' samples on a mid-epoch resume)."""
        # The loss check cannot see an update that overflowed the weights while its own loss was finite; a
        # checkpoint with inf/NaN weights would replace the last good one, so look at the weights themselves.
        if not bool(torch.stack([torch.isfinite(p).all() for p in self.model.parameters()]).all()):
            self._blow_up("weights", self.step)  # identical on every rank under DDP: all raise together
        summed = self.epoch_metrics.global_state_dict()
        if self.dist.is_main and self.run_dir is not None:
            save_checkpoint({**self.state_dict(), "epoch_metrics": summed}, self.run_dir / name)

    def _load_state(self, state: dict[str, Any]) -> None:
        saved = state.get("world_size", 1)
        if saved != self.dist.world_size:  # the data shards, the global batch and the lr all depend on it
            raise CnnlabError(f"this run was trained by {saved} process(es) and must resume with as many (torchrun "
                              f"--nnodes x --nproc-per-node), got {self.dist.world_size}")
        try:
            self._restore(state)
        except (KeyError, TypeError, ValueError, RuntimeError) as e:  # not a checkpoint this trainer wrote
            if isinstance(e, CnnlabError):
                raise
            what = f"lacks the entry {e.args[0]!r}" if isinstance(e, KeyError) else " ".join(str(e).split())
            raise CheckpointError(f"{self.run_dir / 'last.pt'} does not fit this run: {what[:200]}") from None
        threads = state.get("torch_threads")
        if self.config.deterministic and threads and threads != torch.get_num_threads():
            # CPU kernels split their reductions by thread, so another thread count rounds differently and the
            # resumed run drifts from the uninterrupted one; use the count the run started with.
            self._log(f"note: using {threads} intra-op threads as the run did before (not "
                      f"{torch.get_num_threads()}), so the deterministic resume is exact")
            torch.set_num_threads(threads)

    def _restore(self, state: dict[str, Any]) -> None:
        saved = (state.get("dataset") or {}).get("classes")
        if saved is not None and list(saved) != list(self.dataset.classes):
            raise CnnlabError(f"{self.run_dir / 'last.pt'} was trained on {len(saved)} classes of "
                              f"{state['dataset']['name']}, not the {self.dataset.num_classes} of "
                              f"{self.dataset.name}: resume it with its own dataset")
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        if self.ema is not None and "ema" in state:
            self.ema.module.load_state_dict(state["ema"])
            self.ema.n_averaged.fill_(state["ema_n"])
        self.train_loader.load_state_dict(state["loader"])
        if self.dist.is_main:  # the saved sums are global: one rank carries them, compute() adds the others' new ones
            self.epoch_metrics.load_state_dict(state["epoch_metrics"])
        self.epoch, self.step = state["epoch"], state["step"]
        self.history, self.best_val_acc = list(state["history"]), state["best_val_acc"]
        self.elapsed = state.get("elapsed", 0.0)
        self.target_reached = state.get("target_reached")
        set_rng_state(state["rng"])

