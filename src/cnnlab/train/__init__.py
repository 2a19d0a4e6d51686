"""Training: TrainConfig and recipes, the Trainer, checkpoints and run folders.

Anything the CLI does is one call here: ``train("lenet", recipe="book", epochs=1)`` or ``resume("runs/x")``
(train/launch.py). :func:`build_run` (train/build.py) turns a config into the run's parts; :func:`build_trainer`
adds the run folder and its observers and hands them to a :class:`~cnnlab.train.trainer.Trainer`.

The names below are imported on first use: the CLI builds its flags from :mod:`cnnlab.train.config`, and loading
this package must not load torch for that, or ``cnnlab --help`` and every argument error would wait for it.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # what type checkers and editors see (the package is typed): the same names, eagerly
    from cnnlab.train.build import RunParts, build_run
    from cnnlab.train.config import RECIPES, TrainConfig, make_config
    from cnnlab.train.launch import build_trainer, resume, train
    from cnnlab.train.trainer import Trainer

_WHERE = {"RECIPES": "config", "TrainConfig": "config", "make_config": "config", "RunParts": "build",
          "build_run": "build", "Trainer": "trainer", "build_trainer": "launch", "resume": "launch",
          "train": "launch"}

__all__ = ["RECIPES", "RunParts", "TrainConfig", "Trainer", "build_run", "build_trainer", "make_config", "resume",
           "train"]


def __getattr__(name: str) -> Any:
    if name not in _WHERE:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{_WHERE[name]}"), name)
