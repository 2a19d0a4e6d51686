"""What a bit-exact resume needs beyond the modules' state_dicts, and how a run is asked to stop.

``rng_state`` captures every random stream a run draws from (torch, CUDA, numpy, Python) as tensors and plain
containers, so it loads with ``torch.load(weights_only=True)``. ``install_stop_handlers`` turns SIGINT and
SIGTERM into a request the training loop answers at the end of the current step (checkpoint, then exit).
"""

from __future__ import annotations

import random
import signal
import threading
from collections.abc import Callable
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
