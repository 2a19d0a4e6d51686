"""RUN_DIR/report.html: one self-contained page of what a training run learnt.

Every image is an inline base64 PNG and the styling is one inline ``<style>`` block, so the file opens offline, can
be mailed or attached to an issue, and needs nothing beside it. The page is a derived file: writing it again
replaces it (atomically, so a reader never sees half a page).

This module gathers the numbers (formatted) and the pictures into a context; the jinja2 template
``templates/report.html.j2`` lays them out, with autoescape on.
"""

from __future__ import annotations

import base64
import math
import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import jinja2
import torch

from cnnlab.data import holds_out_nothing
from cnnlab.data.duplicates import split_seen_in_training
from cnnlab.data.split import run_split
from cnnlab.errors import CnnlabError
from cnnlab.evaluate import EvalResult
from cnnlab.inference import load_trained
from cnnlab.io import atomic_write, check_output_file, train_loss_label, writable_text
from cnnlab.models import model_info
from cnnlab.models.summary import model_macs
from cnnlab.report import plots
from cnnlab.report.curves import curves_figure
from cnnlab.report.features import first_conv, receptive_fields, run_rows
from cnnlab.runs import CHECKPOINTS, ENDED, Run, read_json, restart_command, resume_command

RUN_FILES = ("config.json", "metrics.csv", "result.json")  # what cnnlab train writes beside its checkpoints
N_WRONG, N_MAPS = 16, 4


@dataclass
class RunFiles:
    """The parsed files of a run folder, as the report uses them: an ended run's, or an unfinished one's with a
    checkpoint (interrupted, or still training), whose report is its last checkpoint's.

    Attributes:
        path: the run folder.
        config: config.json as a whole (:attr:`cnnlab.runs.Run.record`).
        result: result.json.
        metrics: metrics.csv's epoch rows.
        checkpoint: last.pt, or best.pt where there is no last.pt (:meth:`cnnlab.runs.Run.checkpoint`).
        status: the run's status word (:func:`cnnlab.runs.decide_status`): ``finished``, ``interrupted``, ...
    """

    path: Path
    config: dict[str, Any]
    result: dict[str, Any]
    metrics: list[dict[str, float]]
    checkpoint: Path
    status: str = "finished"

    def unfinished(self) -> str | None:
        """What the page and the command say of a run that has not ended (None for one that has)."""
        if self.status in ENDED:
            return None
        planned = (self.config.get("config") or {}).get("epochs")
        epochs = len(self.metrics)
        if epochs:
            done = f"after {epochs} epoch{'s' * (epochs != 1)}" + (f" of {planned}" if planned else "")
        else:
            done = f"before the first of its {planned} epochs ended" if (planned or 0) > 1 else \
                "before its first epoch ended"
        state = "is still training" if self.status == "training" else "was stopped"
        return (f"this run has not finished: it {state} {done}, so what follows is its last checkpoint, "
                f"{self.checkpoint.name}, and it has no final figures yet; `{resume_command(self.path)}` "
                f"{'finishes it' if self.status != 'training' else 'continues it once stopped'}")


def read_run(run_dir: str | Path) -> RunFiles:
    """Read a run folder written by ``cnnlab train`` (through :class:`cnnlab.runs.Run`): an ended run, or one
    stopped or still training with a checkpoint to report on (:meth:`RunFiles.unfinished`); a missing one, or one
    without a model, raises a one-line CnnlabError."""
    path = Path(run_dir)
    if path.is_file():  # a checkpoint (RUN_DIR/best.pt) most likely: point at its folder when that is a run
        hint = f"; pass its folder {path.parent}" if (path.parent / "config.json").is_file() else ""
        raise CnnlabError(f"run folder {path} is a file{hint} (expected a folder written by cnnlab train)")
    if not path.is_dir():
        raise CnnlabError(f"run folder {path} does not exist (expected a folder written by cnnlab train)")
    missing = [name for name in RUN_FILES if not (path / name).is_file()]
    checkpointed = any((path / name).is_file() for name in CHECKPOINTS)
    if len(missing) == len(RUN_FILES) and not checkpointed:  # not a run at all: no advice to train into it
        raise CnnlabError(f"{path} is not a run folder: it has none of {', '.join(RUN_FILES)} or a checkpoint "
                          "(expected a folder written by cnnlab train)")
    if not checkpointed:
        missing.append(" or ".join(CHECKPOINTS))
        ended = read_json(path / "result.json") if (path / "result.json").is_file() else {}
        if ended.get("status") == "failed":  # ended before a checkpoint: there is no model, and the same run fails
            why = f": {' '.join(str(ended['error']).split())}" if ended.get("error") else ""
            raise CnnlabError(f"run folder {path} failed before its first checkpoint{why}; there is no model to "
                              "report on (expected a run that trained at least one epoch)")
        # Without a checkpoint --resume has nothing to continue from: advising it would only lead to a second refusal.
        raise CnnlabError(f"run folder {path} is incomplete: missing {', '.join(missing)} (a run still in its first "
                          "epoch, or stopped before its first checkpoint, which cannot be resumed: start it again "
                          f"with {restart_command(path)})")
    # A checkpoint without result.json is an unfinished run, whose report is the checkpoint's; it may have no
    # metrics.csv yet (stopped in its first epoch). A run that has ended has both.
    needed = [n for n in missing if n == "config.json" or (n == "metrics.csv" and "result.json" not in missing)]
    if needed:
        raise CnnlabError(f"run folder {path} is incomplete: missing {', '.join(needed)} (expected config.json, "
                          "which cnnlab train writes first, and metrics.csv beside the result.json of a run that "
                          "has ended)")
    run = Run.open(path, now=time.time())  # the time tells a run still training from one that was stopped
    return RunFiles(run.path, run.record, run.result or {}, run.metrics, run.checkpoint(), run.status)


# The page's layout lives in templates/report.html.j2 (shipped as package data); this module only gathers what it
# shows. StrictUndefined: a name missing from the context is an error here, not a silently empty part of the page.
_TEMPLATES = jinja2.Environment(loader=jinja2.PackageLoader("cnnlab.report"), autoescape=True,
                                undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True,
                                keep_trailing_newline=True)


def render_page(context: dict[str, Any]) -> str:
    """The whole document from its context (see :func:`build_report`): inline style, no scripts, no external
    resources."""
    return _TEMPLATES.get_template("report.html.j2").render(context)


def _fmt(value: Any, spec: str = "", unit: str = "") -> str:
    if value is None or (isinstance(value, float) and value != value):  # missing or NaN
        return "—"
    if spec and (isinstance(value, bool) or not isinstance(value, (int, float))):  # a hand-edited result.json
        return f"{value}{unit}"
    return f"{value:{spec}}{unit}" if spec else f"{value}{unit}"


def _stats(run: RunFiles, result, scored: str) -> list[tuple[str, str]]:
    """The headline numbers, as (value, what it is); ``scored``: the split ``result`` is of ("validation" where the
    run held out no test split)."""
    res = run.result
    # The figure that picked best.pt (result.json's best_by; a run from before it was there judged accuracy)
    balanced = res.get("best_by") == "balanced-accuracy"
    split = "validation" if res.get("val_acc") is not None else "test"
    epoch = f" (epoch {res['best_epoch']:g}, best.pt)" if isinstance(res.get("best_epoch"), (int, float)) else ""
    final = "test" if scored == "test" else "val"  # no test split: the last epoch's validation figures
    stats = [
        (_fmt(res.get(f"{final}_acc"), ".2%"), f"final {scored} accuracy: the last epoch's model (result.json)"),
        (_fmt(result.accuracy, ".2%"), f"{result.n:,} {scored} images, {run.checkpoint.name}"
         + (", flip-TTA" if result.tta else "")),
        (_fmt(res.get("best_val_bal_acc" if balanced else "best_val_acc"), ".2%"),
         f"best epoch's {split} {'balanced accuracy' if balanced else 'accuracy'}{epoch}"),
        (_fmt(res.get("images_per_s"), ",.0f"), "training images / s"),
    ]
    if balanced:  # beside the final test accuracy: the figure the run was asked to weigh the classes by
        stats.insert(1, (_fmt(res.get(f"{final}_bal_acc"), ".2%"),
                         f"final {scored} balanced accuracy: the last epoch's model (result.json)"))
    return stats


def _facts(run: RunFiles, name: str, params: int, macs: int | None, input_size: int) -> list[tuple[str, str]]:
    """The run's facts, as (name, value) for a two-column definition list."""
    res, cfg = run.result, run.config.get("config") or {}
    wall = res.get("wall_s")
    momentum = f", momentum {cfg.get('momentum', 0)}" if cfg.get("optimizer", "sgd") in MOMENTUM_OPTIMIZERS else ""
    items = [
        ("model", name), ("recipe", res.get("recipe", cfg.get("recipe"))),
        ("parameters", _fmt(params, ",")),
        ("MACs / image", _fmt(macs, ",") + (f" ({macs / 1e6:,.1f} M)" if macs else "")),
        ("input", f"{input_size} × {input_size}"), ("epochs", res.get("epochs", len(run.metrics) or None)),
        ("device", res.get("device")), ("processes", res.get("world_size")),
        ("wall time", _fmt(wall, ".1f", " s") + (f" ({wall / 60:.1f} min)" if wall and wall >= 120 else "")),
        ("images / s", _fmt(res.get("images_per_s"), ",.0f")),
        ("optimizer", f"{cfg.get('optimizer', '—')}, lr {cfg.get('lr', '—')}{momentum}"),
        ("batch size", cfg.get("batch_size")), ("schedule", cfg.get("schedule")),
        ("seed", res.get("seed", cfg.get("seed"))),
        # how the run began and what it was fed: a fine-tune from ImageNet weights, augmented and balanced, read as
        # a run from scratch without them
        ("weights", _start(cfg, run.config.get("head") or [])), ("augmentation", _augmentation(cfg)),
        ("class balance", cfg.get("balance") or "none"),
    ]
    return [(k, str(_fmt(v))) for k, v in items]


MOMENTUM_OPTIMIZERS = ("sgd", "nesterov", "rmsprop")  # the others' momentum setting is unused


def _start(cfg: dict[str, Any], head: list[str]) -> str:
    """Where the run's weights began (``--pretrained``, ``--init-from`` or an initialisation) and what was frozen:
    the last layer, or the ``head`` layers where the run trained more as its head (a head block started fresh)."""
    if cfg.get("pretrained"):
        start = "ImageNet (torchvision's) with a new head"
    elif cfg.get("init_from"):
        start = f"from {cfg['init_from']}"
    else:
        return f"random ({cfg.get('init') or 'xavier'} init)"
    trained = f"the head block ({', '.join(head)})" if head else "the last layer"
    if cfg.get("freeze"):
        return f"{start}; only {trained} trained"
    frozen = cfg.get("freeze_epochs") or 0
    if not frozen:
        return start
    return f"{start}; only {trained} for {frozen} epoch{'s' * (frozen != 1)}, then every layer"


def _augmentation(cfg: dict[str, Any]) -> str:
    """The run's ``--augment`` preset, with MixUp and CutMix where set."""
    mixed = [f"{name} {cfg[key]}" for name, key in (("MixUp", "mixup"), ("CutMix", "cutmix")) if cfg.get(key)]
    return ", ".join([str(cfg.get("augment") or "none"), *mixed])


def _picture(fig, alt: str, dpi: int = 100) -> dict[str, str]:
    """A figure as an inline PNG (a data URI) and its alt text."""
    data = base64.b64encode(plots.figure_png(fig, dpi)).decode("ascii")
    return {"alt": alt, "src": f"data:image/png;base64,{data}"}


METRIC_HEADERS = {"epoch": "epoch", "train_loss": "train loss", "train_acc": "train acc", "val_loss": "val loss",
                  "val_acc": "val acc", "val_bal_acc": "val bal acc", "lr": "lr", "seconds": "s",
                  "images_per_s": "img/s"}


def _resized(fig, width: float = 5.2, height: float = 3.3):
    fig.set_size_inches(width, height)
    return fig


def _metrics_table(rows: list[dict[str, float]], balance: Any = None) -> dict[str, Any]:
    """metrics.csv as a table (the last 12 epochs when there are more: the curves show the rest); the training
    loss's header says what it is under the run's ``balance``, as the curves' legend does."""
    # A validation figure is left out where no row has it: the balanced accuracy of a run from before it was
    # recorded, every one of a run that held out nothing
    keys = [k for k in METRIC_HEADERS if k in rows[0] and (not k.startswith("val_") or any(
        math.isfinite(r.get(k, math.nan)) for r in rows))]
    spec = {"epoch": ".0f", "lr": ".3g", "seconds": ".1f", "images_per_s": ",.0f"}
    headers = {**METRIC_HEADERS, "train_loss": train_loss_label(balance).replace("_", " ")}
    return {"head": [headers[k] for k in keys], "total": len(rows),
            "rows": [[_fmt(r.get(k), spec.get(k, ".4f")) for k in keys] for r in rows[-12:]]}


def _per_class(result) -> list[dict[str, Any]]:
    """Each class's accuracy (its recall) on the test set, with its bar's width and the count behind it, and its
    precision and F1 (:func:`cnnlab.evaluate.class_scores`)."""
    counts = result.confusion.sum(1).tolist()
    return [{"index": i, "name": name, "accuracy": "–" if acc is None else f"{acc:.1%}",
             "bar": f"{(acc or 0) * 100:.1f}%", "correct": int(result.confusion[i, i]), "total": counts[i],
             "precision": f"{p:.1%}", "f1": "–" if f is None else f"{f:.3f}"}
            for i, (name, acc, p, f) in enumerate(zip(result.classes, result.per_class, result.precision, result.f1,
                                                      strict=True))]


def _fields(name: str, input_size: int, in_channels: int, image_size: int) -> dict[str, Any]:
    """The receptive field of every row of the network; the dense head is one row (it sees the whole image)."""
    rows, head = [], []
    for f in receptive_fields(name, input_size, in_channels):
        if len(f.shape) != 3:  # the dense head: every unit sees the whole image
            head.append(f)
            continue
        rows.append({"name": f.name, "kind": f.kind, "shape": " × ".join(map(str, f.shape)), "r": f.r,
                     "jump": f.jump, "whole": f.r >= input_size,
                     "scaled": f"{f.r * image_size / input_size:.1f}" if input_size != image_size else None})
    return {"input_size": input_size, "image_size": image_size, "rows": rows,
            "head": f"{head[0].name} … {head[-1].name.split('-')[-1]}" if head else None}


def _mistakes(logits: torch.Tensor, images: torch.Tensor, labels: torch.Tensor, classes,
              split: str) -> dict[str, Any] | None:
    """The ``split``'s images misclassified with the highest predicted-class probability (None: there are none)."""
    confidence, pred = logits.softmax(1).max(1)
    wrong = (pred != labels).nonzero().flatten()
    worst = wrong[confidence[wrong].argsort(descending=True)[:N_WRONG]]
    if len(worst) == 0:
        return None
    fig = plots.misclassified_figure(images[worst], labels[worst].tolist(), pred[worst].tolist(),
                                     confidence[worst].tolist(), classes)
    # what the picture says above and below each image, for a reader who cannot see it
    said = "; ".join(f"{classes[p]} {c:.1%}, truly {classes[t]}" for p, c, t in zip(
        pred[worst].tolist(), confidence[worst].tolist(), labels[worst].tolist(), strict=True))
    return {**_picture(fig, f"misclassified {split} images, each predicted (probability) and truly: {said}"),
            "count": len(worst)}


def _filters(weight: torch.Tensor) -> dict[str, Any]:
    return {**_picture(plots.filters_figure(weight), "first-layer filters", dpi=110), "kernels": weight.shape[0],
            "channels": weight.shape[1], "height": weight.shape[2], "width": weight.shape[3]}


def _feature_maps(model, preprocess, images, labels, classes, device, split: str) -> list[dict[str, str]]:
    """Feature maps of the first ``split`` images of N_MAPS different classes, one figure per image."""
    picks: list[int] = []
    for i, label in enumerate(labels.tolist()):
        if label not in {int(labels[j]) for j in picks}:
            picks.append(i)
        if len(picks) == N_MAPS:
            break
    with torch.no_grad():
        batch = preprocess(images[picks].to(device).float() / 255)
        rows = [r for r in run_rows(model, batch) if r.output.dim() == 4]
    return [_picture(plots.feature_maps_figure(images[idx], [(f"{r.name}\n{r.kind}", r.output[k]) for r in rows],
                                               title=f"{split} #{idx}: {plots.drawn_name(classes[int(labels[idx])])}"),
                     f"feature maps of {split} image {idx} ({classes[int(labels[idx])]}) at every stage")
            for k, idx in enumerate(picks)]


def _as_split_by(data, config: dict[str, Any], trained_on: str):
    """``data`` with the notice of the validation images that are training images, which its ``--val-split`` run
    printed and its report at the end of training showed, and a later ``cnnlab report RUN`` left out: the same split
    drawn again (:func:`~cnnlab.data.split.run_split`), on the run's own data only."""
    split = run_split(config, data.train_labels) if data.name == trained_on else None
    if split is None:
        return data
    train_idx, val_idx = split
    seen = split_seen_in_training(data.train_images, train_idx, val_idx, "validation", data.train_digests,
                                  data.files_of("train"))
    return replace(data, notices=(*data.notices, seen)) if seen else data


def _held_out(run: RunFiles, trained, data, split: str, test_logits: torch.Tensor | None) -> dict[str, Any]:
    """The page's figures of the ``split`` images the run held out of ``data``: headline numbers, confusion matrix,
    per-class table, mistakes and feature maps, from the training run's own final logits where it hands them over."""
    meta = trained.meta
    (images, labels, scored), classes = trained.held_out_images(data), data.classes
    # another set than the run's, or no test split: which images the page's figures are of
    elsewhere = [f"the figures below score {scored}."] if data.name != meta.dataset or split != "test" else []
    if test_logits is not None and 0 < len(test_logits) <= len(labels):
        # the training run's own final evaluation (limited to its first images by --limit-val-batches)
        images, labels, logits = images[:len(test_logits)], labels[:len(test_logits)], test_logits
    else:
        logits = trained.logits(images)
    result = EvalResult.from_logits(logits, labels, classes, model=meta.model_name, checkpoint=str(run.checkpoint),
                                    device=str(trained.device), tta=meta.tta)
    return {
        "stats": _stats(run, result, split), "notices": elsewhere, "nothing_held_out": None,
        "confusion": _picture(plots.confusion_figure(result.confusion, classes), "confusion matrix"),
        "per_class": _per_class(result), "macro_f1": f"{result.macro_f1:.4f}",
        "mistakes": _mistakes(logits, images, labels, classes, split),
        "feature_maps": _feature_maps(trained.model, trained.preprocess, images, labels, classes, trained.device,
                                      split),
    }


def _training_stats(run: RunFiles) -> list[tuple[str, str]]:
    """The headline numbers of a run that held out nothing: its training figures, named so; of a run that has not
    finished (stopped, still training, failed), its last finished epoch's, from metrics.csv, and said so."""
    res = run.result
    # train_acc is the mean over the last epoch's batches as they trained (augmented, in training mode, the weights
    # moving; under --ema not even best.pt's weights): no evaluation of the final model, which has no image to score
    if res.get("status") in ("finished", "stopped"):
        return [(_fmt(res.get("train_acc"), ".2%"), "final training accuracy: over the last epoch's batches, "
                 "measured as it trained on them (nothing held out; best.pt is the last epoch's)"),
                (_fmt(res.get("train_images"), ","), "training images: every labelled image"),
                (_fmt(res.get("images_per_s"), ",.0f"), "training images / s")]
    # no final figures (a failed run's result.json has none either): the last epoch metrics.csv holds
    last = run.metrics[-1] if run.metrics else {}
    epoch = f"epoch {last['epoch']:g}" if last else "no epoch finished yet"
    why = "it failed" if res.get("status") == "failed" else "it has not finished"
    return [(_fmt(last.get("train_acc"), ".2%"), f"training accuracy of {epoch}"
             f"{', the last the run finished' if last else ''}: over its batches, measured as it trained on them "
             f"(nothing held out; {why}, so it has no final figure)"),
            (_fmt(last.get("images_per_s"), ",.0f"), f"training images / s ({epoch})")]


def build_report(run: RunFiles, data_dir: str | Path | None = None, device: str = "auto", dataset=None,
                 test_logits: torch.Tensor | None = None) -> str:
    """Evaluate the run's checkpoint on the test set and render the page (see :func:`write_report`)."""
    trained = load_trained(run.checkpoint, device)
    meta = trained.meta
    name, size, in_ch = meta.model_name, meta.input_size, meta.channels
    config = run.config.get("config") or {}
    data = dataset
    if data is None and data_dir is None and holds_out_nothing(config):
        # the page shows no image of the run's own data, which is not read: its folder may have moved or grown since
        data_name, notices, split = meta.dataset, (), None
    else:
        if data is None:  # read afresh, without the split a --val-split run drew (training hands its own over)
            # the page shows test images: training images are read only to draw that split again (_as_split_by)
            data = _as_split_by(trained.dataset(data_dir, training=config.get("val_split") is not None), config,
                                meta.dataset)
        trained.check_dataset(data)
        data_name, notices = data.name, data.notices
        split = trained.held_out_split(data)  # the split the figures below are of
    held = _held_out(run, trained, data, split, test_logits) if split is not None else \
        {"stats": _training_stats(run), "notices": [], "nothing_held_out": trained.why_nothing_held_out()}
    # class names the figures above drew otherwise (an emoji no font here has): said once, not a warning a figure
    if split is not None and (drawn := plots.names_drawn_otherwise(data.classes)):
        print(f"cnnlab: note: {drawn}", file=sys.stderr, flush=True)
        held["notices"] = [*held["notices"], f"{drawn}."]
    conv = first_conv(trained.model)
    env = run.config.get("environment") or {}
    balance = config.get("balance")  # what the training loss was (curves, table)
    return render_page({
        "name": name, "section_id": model_info(name).section, "run_path": str(run.path), "dataset": data_name,
        "unfinished": run.unfinished(), "split": split, **held, "notices": [*notices, *held["notices"]],
        "facts": _facts(run, name, trained.num_params(), model_macs(name, size, in_ch, meta.num_classes), size),
        "curves": _picture(_resized(curves_figure(run.metrics, balance=balance)), "training curves")
        if run.metrics else None,
        "metrics": _metrics_table(run.metrics, balance) if run.metrics else None,
        "filters": _filters(conv.weight.detach().cpu()) if conv is not None else None,
        "fields": _fields(name, size, in_ch, meta.image_size),
        "footer": [(k, str(env[k])) for k in ("cnnlab", "torch", "torchvision", "python", "platform", "git_commit",
                                              "date") if env.get(k)],
    })


def write_report(run_dir: str | Path | RunFiles, data_dir: str | Path | None = None, device: str = "auto",
                 dataset=None, test_logits: torch.Tensor | None = None) -> Path:
    """Write ``RUN_DIR/report.html``: summary, curves, confusion matrix, mistakes, filters, feature maps, fields.

    Evaluates the run's ``last.pt`` (``best.pt`` if there is no ``last.pt``) on its dataset's test images with
    the run's own preprocessing and flip-TTA setting, unless the training run hands over the logits of its own
    final test evaluation. A run that held out nothing (``--test-split 0`` without ``--val-split``) is shown by its
    training figures, and its folder is not read unless ``data_dir`` names one. An existing report is replaced: it is
    derived from the run.

    Args:
        run_dir: a run folder written by ``cnnlab train``, or what :func:`read_run` read of one.
        data_dir: the dataset's folder (default: where the run found it).
        device: where to evaluate: ``auto``, ``cpu``, ``cuda``, ``cuda:N`` or ``mps``.
        dataset: the run's dataset, when the caller has it in memory already (the Trainer does).
        test_logits: the final model's logits on the first ``len(test_logits)`` test images, in order.

    Returns:
        The path of the report.

    Raises:
        CnnlabError: the run folder is missing, incomplete, unreadable or not writable (one line naming what is
            wrong; checked before the test set is scored).
    """
    run = run_dir if isinstance(run_dir, RunFiles) else read_run(run_dir)
    out = check_output_file(run.path / "report.html", force=True)  # an unwritable folder: say so before the work
    text = build_report(run, data_dir=data_dir, device=device, dataset=dataset, test_logits=test_logits)
    # a notice may name a file whose name is not UTF-8 (a stray file left out of a folder of images)
    atomic_write(out, lambda tmp: Path(tmp).write_text(writable_text(text), encoding="utf-8"))
    return out
