"""`cnnlab study NAME`: run every variant of a study as a normal run folder, then compare and summarise.

The study folder holds ``study.json`` (the settings of every variant's run), one run folder per variant (one per
variant and seed, ``NAME-seedS``, with several ``seeds``), ``table.md``, ``curves.png`` and ``summary.md``. Running the
same command again resumes: finished (and failed) runs are kept, an interrupted one continues from its ``last.pt``,
the rest start.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cnnlab.compare import compare_runs, curves_overlay, format_table
from cnnlab.errors import CnnlabError
from cnnlab.io import missing_folders, remove_made_folders, save_figure, write_json, write_text
from cnnlab.runs import ENDED, Run, folder_status
from cnnlab.study.spec import Study, check_settings, load_study
from cnnlab.study.summary import study_summary
from cnnlab.train import resume, train
from cnnlab.train.config import TrainConfig, check_given_flags_apply, check_ranked_on_held_out, make_config


@dataclass(frozen=True)
class StudyResult:
    """Where a study's outputs are, and its summary's text."""

    folder: Path
    summary: str
    ran: tuple[str, ...]
    kept: tuple[str, ...]
    failed: tuple[str, ...]
    refused: tuple[str, ...] = ()  # stopped by a check before their run folder was made (bad settings)


def variant_state(run_dir: Path) -> str:
    """The status of a variant's run folder (:func:`cnnlab.runs.folder_status`): ``new``, ``partial`` (files but no
    checkpoint, or a result.json that does not parse), ``interrupted`` (a checkpoint, no result) or the status
    result.json records (``finished``, ``failed``, ``stopped``).

    Liveness is not judged: the study is the only writer of its folders, so a run without result.json was stopped.
    """
    return folder_status(run_dir)


def _config(settings: dict[str, Any]) -> TrainConfig:
    return make_config(settings["model"], settings.get("recipe", "book"),
                       **{k: s for k, s in settings.items() if k not in ("model", "recipe")})


def _check_not_varied(study: Study, overrides: dict[str, Any]) -> None:
    """Refuse an override of a setting some variant sets itself: it beats the variant's own value, so every variant
    would train alike while the summary still reported that factor's effect (a tie that says nothing)."""
    varied = sorted(set(overrides) & {k for v in study.variants for k in v.config})
    if not varied:
        return
    key, flag = varied[0], "--" + varied[0].replace("_", "-")
    # The variants' own values first, then what the others train with (the budget's or the model's default)
    values = dict.fromkeys([*(v.config[key] for v in study.variants if key in v.config),
                            *(getattr(_config(study.settings(v)), key) for v in study.variants if key not in v.config)])
    shown = ", ".join("default" if value is None else str(value) for value in values)
    raise CnnlabError(f"{flag} is what study {study.name} varies ({shown} by variant), and would train every variant "
                      f"at {overrides[key]}; expected no {flag}")


def _plan(study: Study, overrides: dict[str, Any], seeds: Sequence[int] = ()) -> dict[str, dict[str, Any]]:
    """Every run's settings, by run name (:meth:`Study.run_names`), checked by TrainConfig before anything trains;
    ``overrides`` are the caller's own settings (the flags typed), so one that cancels a factor of the study or that
    a variant would not use (as ``cnnlab train`` refuses it) is refused too."""
    _check_not_varied(study, {**overrides, **({"seed": seeds[0]} if seeds else {})})
    plan: dict[str, dict[str, Any]] = {}
    names = study.run_names(seeds)
    unused: dict[str, list[str]] = {}  # the refusal's line -> the variants it is for
    for v in study.variants:
        settings = study.settings(v, overrides)
        config = _config(settings)  # a value TrainConfig refuses is refused as it is, not as one that does nothing
        try:
            check_given_flags_apply(overrides, config)
        except CnnlabError as e:  # a flag may apply to one variant and not another: say for which
            unused.setdefault(str(e), []).append(v.name)
        for name, seed in zip(names[v.name], seeds if len(seeds) > 1 else [None], strict=True):
            plan[name] = settings if seed is None else {**settings, "seed": seed}
    if unused:
        line, names = next(iter(unused.items()))
        which = "every variant" if len(names) == len(study.variants) else \
            f"variant{'s' * (len(names) > 1)} {', '.join(names)}"
        raise CnnlabError(f"study {study.name}, {which}: {line}")
    return plan


def _claim_folder(folder: Path, record: dict[str, Any]) -> None:
    """Write study.json into a new folder, or check that an existing study folder was made with the same plan."""
    path = folder / "study.json"
    if path.is_file():
        try:
            before = json.loads(path.read_text())
        except (OSError, ValueError) as e:
            raise CnnlabError(f"{path} is not readable JSON ({e}); expected the study folder's own record") from None
        if before.get("runs") != record["runs"]:
            changed = sorted(k for k in set(before.get("runs", {})) | set(record["runs"])
                             if before.get("runs", {}).get(k) != record["runs"].get(k))
            raise CnnlabError(f"study folder {folder} was started with other settings (for {', '.join(changed)}); "
                              "expected the same study and budget to resume it, or another --out")
        return
    if folder.exists() and not folder.is_dir():
        raise CnnlabError(f"--out {folder} is a file; expected a new or a study folder (choose another --out)")
    if folder.is_dir() and any(folder.iterdir()):
        raise CnnlabError(f"{folder} already holds files but no study.json; expected a new or a study folder "
                          "(choose another --out)")
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as e:  # a path under a file, a read-only file system
        raise CnnlabError(f"cannot make the study folder {folder}: {e.strerror or e}") from None
    write_json(path, record)


def _run_variant(name: str, settings: dict[str, Any], run_dir: Path, quiet: bool,
                 report: bool) -> tuple[str, str]:
    """Train (or resume) one variant; returns what happened (ran, kept, failed, or refused: before its run folder
    was made) and the error's line ("" when none). A variant that fails is recorded, not raised."""
    state = variant_state(run_dir)
    if state in ENDED:
        return "kept", ""
    settings = dict(settings)
    model, recipe = settings.pop("model"), settings.pop("recipe", "book")
    try:
        if state == "interrupted":
            resume(run_dir, quiet=quiet, report=report)
        else:
            train(model, recipe, force=state == "partial", quiet=quiet, report=report, out=str(run_dir), **settings)
    except CnnlabError as e:  # a non-finite loss or another refusal: the run folder says "failed"; go on
        line = " ".join(str(e).split())
        outcome = "failed" if run_dir.is_dir() else "refused"
        print(f"cnnlab study: variant {name} {outcome}: {line}", flush=True)
        return outcome, line
    return "ran", ""


def _checked_seeds(seeds: Sequence[int] | None, overrides: dict[str, Any]) -> list[int]:
    """``--seeds`` as given, checked: distinct whole numbers from 0, and not beside ``--seed``."""
    seeds = list(seeds or ())
    if seeds and "seed" in overrides:
        raise CnnlabError(f"--seed {overrides['seed']} and --seeds {' '.join(map(str, seeds))} both say which seed to "
                          "run; expected one of them")
    bad = [s for s in seeds if not isinstance(s, int) or isinstance(s, bool) or s < 0]
    if bad or len(set(seeds)) != len(seeds):
        raise CnnlabError(f"--seeds takes distinct whole numbers from 0, got {' '.join(map(str, seeds))}")
    return seeds


def run_study(name_or_path: str | Path, out: str | Path | None = None, overrides: dict[str, Any] | None = None,
              quiet: bool = False, report: bool = True, seeds: Sequence[int] | None = None) -> StudyResult:
    """Run (or resume) a study and write its table, plot and summary.

    Args:
        name_or_path: a shipped study's name (:func:`cnnlab.study.list_studies`) or a study TOML file.
        out: the study folder (default ``studies/NAME``).
        overrides: TrainConfig fields over every variant's budget (e.g. ``epochs=1, limit_train_batches=2``).
        quiet: no per-epoch lines.
        report: write report.html in every variant's run folder.
        seeds: train every variant once per seed (run folders ``NAME-seedS``); the summary ranks the variants by
            the mean of their runs and says whether the seeds' spread settles the order. One seed is ``--seed``.

    Raises:
        CnnlabError: a bad study file or override, or a study folder made with other settings.
        Interrupted: a signal stopped a variant (it checkpointed; the same call resumes the study).
    """
    study = load_study(name_or_path)
    overrides = check_settings({k: v for k, v in (overrides or {}).items() if v is not None}, "the study's overrides")
    seeds = _checked_seeds(seeds, overrides)
    check_ranked_on_held_out({**study.budget, **overrides}, "a study")
    if len(seeds) == 1:  # one seed is the --seed of every variant
        overrides, seeds = {**overrides, "seed": seeds[0]}, []
    folder = Path(out) if out else Path("studies") / study.name
    plan = _plan(study, overrides, seeds)
    made = missing_folders(folder)
    _claim_folder(folder, {"study": study.name, "title": study.title, "runs": plan})
    done: dict[str, list[str]] = {"ran": [], "kept": [], "failed": []}
    refused: dict[str, str] = {}
    for i, name in enumerate(plan):
        if not quiet:
            print(f"[{i + 1}/{len(plan)}] {name} ({plan[name]['model']})", flush=True)
        outcome, line = _run_variant(name, plan[name], folder / name, quiet, report)
        if outcome == "refused":
            refused[name] = line
        else:
            done[outcome].append(name)
    if len(refused) == len(plan):
        # Checks that need the data (a --val-split larger than the training set, ...) refused every variant:
        # a bad input, not a study with results; the study folder this call made goes again.
        remove_made_folders(made, own=("study.json",))
        name, line = next(iter(refused.items()))
        raise CnnlabError(f"every variant was refused before training, so the study has no results; "
                          f"variant {name}: {line}")

    runs = [Run.open(folder / name) for name in plan if (folder / name / "config.json").is_file()]
    columns, rows = compare_runs(runs)
    for row, run in zip(rows, runs, strict=True):
        row["run"] = run.path.name  # the run's name (the variant's, or NAME-seedS), as the summary refers to it
    table = format_table(columns, rows, "md")
    write_text(folder / "table.md", table + "\n")
    variant_of = {run: variant for variant, names in study.run_names(seeds).items() for run in names}
    save_figure(curves_overlay(runs, [r["run"] for r in rows], [variant_of[r["run"]] for r in rows]),
                folder / "curves.png")
    budget = {**study.budget, **overrides, **({"seed": ", ".join(map(str, seeds))} if seeds else {})}
    summary = study_summary(study, budget, rows, table, "curves.png", refused, seeds)
    write_text(folder / "summary.md", summary)
    failed = tuple(r["run"] for r in rows if r["status"] == "failed")
    return StudyResult(folder, summary, tuple(done["ran"]), tuple(done["kept"]), failed, tuple(refused))
