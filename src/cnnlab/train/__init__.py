"""Training: TrainConfig and recipes, the Trainer, checkpoints and run folders.

Anything the CLI does is one call here: ``train("lenet", recipe="book", epochs=1)`` or ``resume("runs/x")``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from cnnlab.train.config import RECIPES, TrainConfig, make_config


def train(model: str, recipe: str = "book", *, force: bool = False, quiet: bool = False, report: bool = True,
          **overrides: Any) -> list[dict[str, float]]:
    """Train ``model`` with a recipe and explicit overrides; returns the epoch history (see Trainer.fit)."""
    from cnnlab.train.trainer import Trainer

    config = make_config(model, recipe, **overrides)
    return Trainer(config, quiet=quiet, force=force, report=report).fit()


def resume(run_dir: str | Path, *, quiet: bool = False, report: bool = True) -> list[dict[str, float]]:
    """Continue an interrupted run from ``run_dir/last.pt`` with the run's own config."""
    from cnnlab.errors import CheckpointError
    from cnnlab.train.checkpoint import load_checkpoint
    from cnnlab.train.trainer import Trainer

    path = Path(run_dir) / "last.pt"
    state = load_checkpoint(path)
    try:
        config = TrainConfig(**state["config"])
    except (KeyError, TypeError) as e:  # another cnnlab version's config, or not a training checkpoint at all
        raise CheckpointError(f"{path} holds no config this cnnlab can resume ({' '.join(str(e).split())})") from None
    return Trainer(config, quiet=quiet, report=report, run_dir=run_dir, resume_state=state).fit()


__all__ = ["RECIPES", "TrainConfig", "make_config", "resume", "train"]
