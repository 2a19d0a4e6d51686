"""What a bit-exact resume needs, and how a run is asked to stop.

:class:`TrainState` is where a run is (epoch, step, history, best accuracy, time spent), saved with every random
stream. ``rng_state`` captures every random stream a run draws from (torch, CUDA, numpy, Python) as tensors and plain
containers, so it loads with ``torch.load(weights_only=True)``. ``install_stop_handlers`` turns SIGINT and
SIGTERM into a request the training loop answers at the end of the current step (checkpoint, then exit).
"""

from __future__ import annotations

import random
import signal
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch


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


@dataclass
class TrainState:
    """Where a run is: the counters and history a resume puts back (with the RNG, saved by :meth:`state_dict`).

    The Trainer holds one and advances it; the other resumable parts (weights, optimizer, schedule, loader
    position, partial epoch sums) belong to the run's parts (:class:`cnnlab.train.build.RunParts`).
    """

    epoch: int = 0
    step: int = 0
    history: list[dict[str, float]] = field(default_factory=list)
    # The best validation figure so far of those config.best_by judges (named when it was always the accuracy,
    # and so named in every checkpoint)
    best_val_acc: float = -1.0
    elapsed: float = 0.0  # wall seconds of fitting before this process (a resumed run carries them over)
    target_reached: dict[str, float] | None = None  # {"epoch", "seconds"} once that figure >= target_acc
    budget_steps: int | None = None  # with --time-budget: the step count planned (cnnlab.train.budget)
    # A checkpoint taken mid-epoch: the images this process trained in that epoch and its seconds so far, so that
    # the resumed epoch's row counts the whole epoch (it counted the part after the resume against all its time)
    epoch_images: int = 0
    epoch_seconds: float = 0.0

    def state_dict(self) -> dict[str, Any]:
        """The counters, history and every random stream, as plain containers and tensors (top-level checkpoint
        entries since checkpoint version 1)."""
        return {"epoch": self.epoch, "step": self.step, "history": self.history, "best_val_acc": self.best_val_acc,
                "elapsed": self.elapsed, "target_reached": self.target_reached, "budget_steps": self.budget_steps,
                "epoch_images": self.epoch_images, "epoch_seconds": self.epoch_seconds, "rng": rng_state()}

    @classmethod
    def from_checkpoint(cls, state: dict[str, Any]) -> TrainState:
        """The counters of a checkpoint (its RNG is restored separately, last: see ``build_run``)."""
        return cls(epoch=state["epoch"], step=state["step"], history=list(state["history"]),
                   best_val_acc=state["best_val_acc"], elapsed=state.get("elapsed", 0.0),
                   target_reached=state.get("target_reached"), budget_steps=state.get("budget_steps"),
                   epoch_images=state.get("epoch_images", 0), epoch_seconds=state.get("epoch_seconds", 0.0))
