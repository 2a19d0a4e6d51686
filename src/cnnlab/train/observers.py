"""Plain functions as Trainer observers."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any


class EpochCallback:
    """Adapts a plain ``on_epoch(row)`` function (e.g. a sweep's pruning check) to the observer interface."""

    def __init__(self, fn: Callable[[dict[str, Any]], None]):
        self.fn = fn

    def on_epoch(self, trainer, row: dict[str, Any], is_best: bool) -> None:
        self.fn(dict(row))
