"""Training: TrainConfig and recipes, the Trainer, checkpoints and run folders.

Anything the CLI does is one call here: ``train("lenet", recipe="book", epochs=1)`` or ``resume("runs/x")``.
:func:`build_trainer` is where the pieces meet: it loads the dataset, builds the model for it, prepares the run
folder and hands all three to a :class:`~cnnlab.train.trainer.Trainer` as values.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from cnnlab.train.config import RECIPES, TrainConfig, make_config


def build_trainer(config: TrainConfig, *, force: bool = False, quiet: bool = False, report: bool = True,
                  on_epoch: Callable[[dict[str, float]], None] | None = None, run_dir: str | Path | None = None,
                  resume_state: dict[str, Any] | None = None):
    """Dataset, model, run folder and observers for ``config``, joined in a Trainer (not yet fitted).

    The seed is set before the model is built, so a run's initial weights depend on ``config.seed`` alone.
    """
    from cnnlab.device import resolve_device
    from cnnlab.errors import CnnlabError
    from cnnlab.inference import dataset_of
    from cnnlab.models import check_input_size, create_model, model_info
    from cnnlab.models.init import init_cnn
    from cnnlab.train import rundir
    from cnnlab.train.distributed import barrier, broadcast_object, init_distributed
    from cnnlab.train.finetune import freeze_body, init_from
    from cnnlab.train.state import seed_all
    from cnnlab.train.trainer import Trainer

    config = config.validate()
    model_info(config.model)  # an unknown model name is an instant error, before any data is read
    if config.resize:  # so is an input size the model cannot take
        check_input_size(config.model, config.resize, config.channels or 1)
    device = resolve_device(config.device)
    dist = init_distributed(device)
    seed_all(config.seed)
    # One process per machine fills the download (or decode) cache before the others read it.
    dataset = dataset_of(vars(config)) if dist.local_rank == 0 else None
    barrier(dist)
    dataset = dataset or dataset_of(vars(config))
    model = create_model(config.model, num_classes=dataset.num_classes, in_channels=dataset.channels, ops=config.ops)
    if config.init == "xavier":
        model.apply(init_cnn)
    if config.init_from and resume_state is None:  # a resume has the fine-tuned weights in last.pt already
        note = init_from(model, config.init_from)
        if note and dist.is_main and not quiet:
            print(note, flush=True)
    if config.freeze:
        freeze_body(model)

    # Run folder: rank 0 makes it; the others only learn its name (and of a refusal, or they would wait forever).
    path, refused = None, None
    if dist.is_main:
        try:
            path = Path(run_dir) if resume_state else rundir.prepare_run_dir(config.out, config.model, force)
        except CnnlabError as e:
            refused = e
    path, message = broadcast_object((path, refused and str(refused)), dist)
    if message:
        raise refused or CnnlabError(message)
    observers: list[Any] = [rundir.RunFolder(path, report=report, data_dir=config.data_dir, quiet=quiet)]
    if on_epoch is not None:
        observers.append(rundir.EpochCallback(on_epoch))
    return Trainer(config, dataset, model, run_dir=path, observers=observers, quiet=quiet,
                   resume_state=resume_state, dist=dist)


def train(model: str, recipe: str = "book", *, force: bool = False, quiet: bool = False, report: bool = True,
          on_epoch: Callable[[dict[str, float]], None] | None = None, **overrides: Any) -> list[dict[str, float]]:
    """Train ``model`` with a recipe and explicit overrides; returns the epoch history (see Trainer.fit).

    ``on_epoch(row)`` is called after every epoch once it is checkpointed and in metrics.csv. Raising
    :class:`cnnlab.errors.StopRun` there ends the run after that epoch as a finished one (result.json: ``stopped``
    and the reason); any other exception it raises ends the run as ``failed`` with the error and comes out of this
    call.
    """
    config = make_config(model, recipe, **overrides)
    return build_trainer(config, force=force, quiet=quiet, report=report, on_epoch=on_epoch).fit()


# Schedules whose shape does not depend on the run's length: only these can be given more epochs on resume.
EXTENSIBLE_SCHEDULES = ("constant", "step", "multistep")


def resume(run_dir: str | Path, *, quiet: bool = False, report: bool = True, epochs: int | None = None,
           on_epoch: Callable[[dict[str, float]], None] | None = None) -> list[dict[str, float]] | None:
    """Continue an interrupted run from ``run_dir/last.pt`` with the run's own config.

    Args:
        epochs: train to this many epochs instead of the run's own count (more, never fewer); only for schedules
            that do not depend on the run's length (constant, step, multistep): a one-cycle or cosine schedule
            has already been shaped for the original length, and stretching it midway is a different run.

    Returns:
        The epoch history, or None when the run is already finished (nothing is written then).
    """
    import dataclasses

    from cnnlab.errors import CheckpointError, CnnlabError
    from cnnlab.train.checkpoint import load_checkpoint

    path = Path(run_dir) / "last.pt"
    state = load_checkpoint(path)
    try:
        config = TrainConfig(**state["config"])
    except (KeyError, TypeError) as e:  # another cnnlab version's config, or not a training checkpoint at all
        raise CheckpointError(f"{path} holds no config this cnnlab can resume ({' '.join(str(e).split())})") from None
    saved = (state.get("dataset") or {}).get("name", "")
    if saved.startswith("folder:") and saved != config.dataset:  # the absolute path, wherever this runs from
        config = dataclasses.replace(config, dataset=saved)
    if epochs is not None and epochs != config.epochs:
        if epochs < config.epochs:
            raise CnnlabError(f"--epochs {epochs} is fewer than the run's {config.epochs}; a resume can only add "
                              "epochs")
        if config.schedule not in EXTENSIBLE_SCHEDULES:
            raise CnnlabError(f"the {config.schedule} schedule of this run was shaped for {config.epochs} epochs, so "
                              f"it cannot be extended to {epochs}; expected a run with a "
                              f"{'/'.join(EXTENSIBLE_SCHEDULES)} schedule (start a new run, e.g. with --init-from "
                              f"{Path(run_dir) / 'last.pt'})")
        config = dataclasses.replace(config, epochs=epochs)
        state = {**state, "config": dataclasses.asdict(config)}
    trainer = build_trainer(config, quiet=quiet, report=report, on_epoch=on_epoch, run_dir=run_dir,
                            resume_state=state)
    done = trainer.finished()
    if done:
        print(f"{run_dir} is finished: {done}; nothing to do (pass --epochs N to train it further"
              + (")" if config.schedule in EXTENSIBLE_SCHEDULES else "; not possible with its schedule)"), flush=True)
        return None
    return trainer.fit()


__all__ = ["RECIPES", "TrainConfig", "build_trainer", "make_config", "resume", "train"]
