"""Starting and resuming a run: :func:`train`, :func:`resume` and :func:`build_trainer`.

:func:`build_run` (train/build.py) turns a config into the run's parts; :func:`build_trainer` adds the run folder
and its observers and hands them to a :class:`~cnnlab.train.trainer.Trainer`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path
from typing import Any

from cnnlab.data import FOLDER_PREFIX
from cnnlab.data.folder import moved_folder, refuse_writing_into
from cnnlab.device import torch_switches_restored
from cnnlab.errors import CheckpointError, CnnlabError
from cnnlab.inference import moved_data
from cnnlab.io import remove_stale_temporaries
from cnnlab.report import RunReport
from cnnlab.runs import (
    RunFolder,
    check_writable,
    default_run_dir,
    folder_status,
    load_checkpoint,
    prepare_run_dir,
    refuse_run_dir,
    restart_command,
)
from cnnlab.train.build import build_run
from cnnlab.train.config import BEFORE_THE_SETTING, TrainConfig, make_config
from cnnlab.train.distributed import broadcast_object, launched_processes
from cnnlab.train.observers import EpochCallback
from cnnlab.train.trainer import Trainer, epochs_text


def build_trainer(config: TrainConfig, *, force: bool = False, quiet: bool = False, report: bool = True,
                  on_epoch: Callable[[dict[str, float]], None] | None = None, run_dir: str | Path | None = None,
                  resume_state: dict[str, Any] | None = None) -> Trainer:
    """The run ``config`` describes (:func:`build_run`), its run folder and observers, joined in a Trainer (not yet
    fitted). A resume passes the run's folder and its last.pt as ``run_dir`` and ``resume_state``.

    Building the run sets torch's process-wide switches it needs (``--deterministic``), and they stay set after its
    fit; :func:`train` and :func:`resume` put them back when they end, as ``with
    cnnlab.device.torch_switches_restored():`` around the build and the fit does.
    """
    if resume_state is None:
        refuse_writing_into(config.dataset, config.out or default_run_dir(config.model),
                            "--out" if config.out else "the default run folder (runs/ here)")
        # under torchrun rank 0 alone decides, once the processes have joined
        if config.out and launched_processes() <= 1:
            refuse_run_dir(Path(config.out), force)  # before the data is read, not after
    source = Path(run_dir or ".") / "last.pt"
    parts = build_run(config, resume_state=resume_state, source=source, quiet=quiet)
    dist = parts.dist
    # Run folder: rank 0 makes it; the others only learn its name (and of a refusal, or they would wait forever).
    path, refused = None, None
    if dist.is_main:
        try:
            path = Path(run_dir) if resume_state else prepare_run_dir(config.out, config.model, force)
        except CnnlabError as e:
            refused = e
    path, message = broadcast_object((path, refused and str(refused)), dist)
    if message:
        raise refused or CnnlabError(message)
    if resume_state and dist.is_main:  # a kill -9 during a checkpoint write leaves its temporary file
        remove_stale_temporaries(path)
    observers: list[Any] = [RunFolder(path),
                            RunReport(path, report=report, data_dir=config.data_dir, quiet=quiet)]
    if on_epoch is not None:
        observers.append(EpochCallback(on_epoch))
    return Trainer(parts, run_dir=path, observers=observers, quiet=quiet, report=report)


def train(model: str, recipe: str = "book", *, force: bool = False, quiet: bool = False, report: bool = True,
          on_epoch: Callable[[dict[str, float]], None] | None = None, **overrides: Any) -> list[dict[str, float]]:
    """Train ``model`` with a recipe and explicit overrides; returns the epoch history (see Trainer.fit).

    ``on_epoch(row)`` is called after every epoch once it is checkpointed and in metrics.csv. Raising
    :class:`cnnlab.errors.StopRun` there ends the run after that epoch as a finished one (result.json: ``stopped``
    and the reason); any other exception it raises ends the run as ``failed`` with the error and comes out of this
    call.
    """
    config = make_config(model, recipe, **overrides)
    with torch_switches_restored():
        return build_trainer(config, force=force, quiet=quiet, report=report, on_epoch=on_epoch).fit()


# Schedules whose shape does not depend on the run's length: only these can be given more epochs on resume.
EXTENSIBLE_SCHEDULES = ("constant", "step", "multistep")


def resume(run_dir: str | Path, *, quiet: bool = False, report: bool = True, epochs: int | None = None,
           data_dir: str | Path | None = None,
           on_epoch: Callable[[dict[str, float]], None] | None = None) -> list[dict[str, float]] | None:
    """Continue an interrupted run from ``run_dir/last.pt`` with the run's own config.

    Args:
        report: write report.html after the fit, unless the run was started without it (its checkpoint says).
        epochs: train to this many epochs instead of the run's own count (more, never fewer); only for schedules
            that do not depend on the run's length (constant, step, multistep): a one-cycle or cosine schedule
            has already been shaped for the original length, and stretching it midway is a different run.
        data_dir: where the run's data is now (its image folder, or a registered dataset's files), when it moved;
            an image folder must hold the training files the run started with (named relative to it), and a
            registered dataset's ``.gz`` files are md5-checked as always.

    Returns:
        The epoch history, or None when the run is already finished (nothing is written then). A run that trained
        to its end but was stopped before its final figures (the final test pass, result.json) gets them.
    """
    if Path(run_dir).is_file():  # the checkpoint, given for its folder
        raise CnnlabError(f"--resume takes a run folder; got the file {run_dir}, expected its folder "
                          f"{Path(run_dir).parent}")
    path = Path(run_dir) / "last.pt"
    if Path(run_dir).is_dir() and not path.exists():  # killed before its first checkpoint: only a restart helps
        raise CnnlabError(f"checkpoint {path} does not exist: the run stopped before it wrote its first checkpoint, "
                          f"so there is nothing to resume; start it again with {restart_command(run_dir)}")
    state = load_checkpoint(path)
    try:
        saved_config = {**BEFORE_THE_SETTING, **state["config"]}  # a run goes on judging as it began
        if saved_config.get("val_split") == 1 and isinstance(saved_config["val_split"], float):
            saved_config["val_split"] = 1  # the CLI once read `--val-split 1` as 1.0: one image, as that run held out
        config = TrainConfig(**saved_config)
    except (KeyError, TypeError) as e:  # another cnnlab version's config, or not a training checkpoint at all
        raise CheckpointError(f"{path} holds no config this cnnlab can resume ({' '.join(str(e).split())})") from None
    saved = (state.get("dataset") or {}).get("name", "")
    if saved.startswith(FOLDER_PREFIX) and saved != config.dataset:  # the absolute path, wherever this runs from
        config = dataclasses.replace(config, dataset=saved)
    folder = config.dataset.startswith(FOLDER_PREFIX)
    if data_dir is not None:  # moved: the same run on its data's new place (build_run checks they are the same)
        config = dataclasses.replace(config, **({"dataset": moved_folder(config.dataset, data_dir)} if folder else
                                                {"data_dir": str(data_dir)}))
    else:
        where = config.dataset[len(FOLDER_PREFIX):] if folder else config.data_dir
        if where and not (Path(where).exists() if folder else Path(where).is_dir()):  # a folder, or its CSV
            raise moved_data(f"the run's {'image' if folder else 'data'} folder {where}")
    if epochs is not None and config.time_budget is not None:
        raise CnnlabError(f"this run's length is its time budget of {config.time_budget:g}s, which --epochs cannot "
                          f"change; expected a resume without --epochs (start a new run with --init-from "
                          f"{Path(run_dir) / 'last.pt'} to train it further)")
    if epochs is not None and epochs != config.epochs:
        if epochs < config.epochs:
            raise CnnlabError(f"--epochs {epochs} is fewer than the run's {config.epochs}; a resume can only add "
                              "epochs")
        if config.schedule not in EXTENSIBLE_SCHEDULES:
            raise CnnlabError(f"the {config.schedule} schedule of this run was shaped for "
                              f"{epochs_text(config.epochs)}, so it cannot be extended to {epochs}; expected a run "
                              f"with a {'/'.join(EXTENSIBLE_SCHEDULES)} schedule (start a new run, e.g. with "
                              f"--init-from {Path(run_dir) / 'last.pt'})")
        config = dataclasses.replace(config, epochs=epochs)
    # before the data is read: a run that ended with its figures writes nothing, any other resume writes there
    if folder_status(run_dir) not in ("finished", "stopped"):
        check_writable(Path(run_dir))
    if dataclasses.asdict(config) != state["config"]:  # moved data or more epochs: the checkpoints record them
        state = {**state, "config": dataclasses.asdict(config)}
    with torch_switches_restored():
        trainer = build_trainer(config, quiet=quiet, report=report and state.get("report", True), on_epoch=on_epoch,
                                run_dir=run_dir, resume_state=state)
        done = trainer.finished()
        if done and not (Path(run_dir) / "result.json").exists():
            # killed after its last checkpoint but before its figures (the final test pass, result.json): a fit
            # with nothing left to train writes them
            if trainer.dist.is_main:
                print(f"{run_dir} has trained ({done}) but was stopped before its final figures; writing them",
                      flush=True)
            return trainer.fit()
        if done:
            if config.time_budget is not None:
                further = ""
            elif trainer.ended_by_its_own_rule():
                further = f" (start a new run with --init-from {Path(run_dir) / 'last.pt'} to train it further)"
            elif config.schedule in EXTENSIBLE_SCHEDULES:
                further = " (pass --epochs N to train it further)"
            else:  # --epochs would only be refused (above): say why, and what does train it further
                further = (f" (its {config.schedule} schedule was shaped for {epochs_text(config.epochs)} and cannot "
                           f"be extended; start a new run with --init-from {Path(run_dir) / 'last.pt'} to train it "
                           "further)")
            if trainer.dist.is_main:  # once, not by each of torchrun's processes
                print(f"{run_dir} is finished: {done}; nothing to do{further}", flush=True)
            return None
        return trainer.fit()
