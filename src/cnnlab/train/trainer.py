"""The Trainer: one explicit loop, ``fit -> train_epoch -> evaluate``, configured by one TrainConfig.

It is handed the run's parts, built by :func:`cnnlab.train.build.build_run` (dataset, model and its wrappers,
loaders, optimizer, schedule, state), and fits the model to the data; what the run leaves on disk besides its
checkpoints (config.json, metrics.csv, result.json, curves, TensorBoard, the report) is written by observers
(:class:`cnnlab.runs.RunFolder`, :class:`cnnlab.report.RunReport`), not by the loop.

The hot path keeps the dataset on the device (:class:`cnnlab.data.DeviceLoader`), accumulates metrics on the
device and syncs the host once per ``log_every`` steps. Everything a resume needs (weights, optimizer, schedule,
RNG, data position, partial epoch sums, history) goes into a weights-only checkpoint, so a run killed at any
point continues bit for bit from its last checkpoint (see docs/reliability.md).
"""

from __future__ import annotations

import math
import signal
import sys
import time
from collections.abc import Sequence
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from cnnlab.data import DeviceLoader
from cnnlab.device import oversubscription_hint
from cnnlab.errors import CnnlabError, Interrupted, StopRun
from cnnlab.evaluate import balanced_accuracy, class_scores, confusion_matrix
from cnnlab.io import atomic_link
from cnnlab.runs import environment, resume_command, save_checkpoint
from cnnlab.train.budget import TimeBudget
from cnnlab.train.build import RunParts
from cnnlab.train.config import JUDGED
from cnnlab.train.distributed import (
    barrier,
    broadcast_buffers,
    gather_in_shard_order,
    reduce_int,
    shutdown,
    sum_over_ranks,
)
from cnnlab.train.finetune import body_frozen
from cnnlab.train.health import batch_norm_updates, chance_warning, learned_but_at_chance
from cnnlab.train.metrics import EpochMetrics
from cnnlab.train.state import install_stop_handlers, restore_handlers

# After this many training steps in all a learning network is above chance, and the mean loss of the last epoch
# tells a slow start from a divergence; before it, chance is normal and that loss is mostly the starting weights',
# above a uniform guess's whatever the lr: healthy runs of 20 steps read 2.35 (the book's LeNet) and 2.6-2.9 (the
# compact net), the figures of a divergence (docs/benchmarks.md, "Short schedules"). So the check is made once, at
# the first epoch end that reaches it: epoch 1 of a full dataset, a later one of a small dataset, none in a run cut
# shorter (a training accuracy that says the network has learned is checked at every epoch, however short).
CHANCE_CHECK_STEPS = 40


def best_row(history: Sequence[dict[str, float]], key: str) -> dict[str, float] | None:
    """The row of ``history`` that best.pt holds when ``key`` is judged: the first with the highest figure (None
    before any epoch). A row from before that figure was recorded (a resumed older run, which judges accuracy) has
    none."""
    figures = [r.get(key, math.nan) for r in history]
    ranked = [i for i, figure in enumerate(figures) if figure == figure]  # NaN is never best (nor is best.pt)
    return history[max(ranked, key=figures.__getitem__)] if ranked else None


def epochs_text(n: int) -> str:
    """``1 epoch``, ``3 epochs``: the count as the run's messages print it."""
    return f"{n} epoch{'' if n == 1 else 's'}"


class NonFiniteLoss(CnnlabError):
    """The training loss became NaN or infinite."""


class Trainer:
    """Fit a run's model to its data as its config says.

    Args:
        parts: the run, built by :func:`~cnnlab.train.build.build_run` (a resumed one carries its state).
        run_dir: where last.pt and best.pt go (None: no checkpoints, e.g. a quick experiment in memory).
        observers: objects told of the run's progress (``on_start``, ``on_epoch``, ``on_end``, ``on_failure``,
            ``after_fit``; each optional), on the main process only: :class:`cnnlab.runs.RunFolder` writes the
            run folder's files.
        quiet: no progress bar or per-epoch lines.
        report: whether the observers write report.html after the fit; kept in the checkpoint, so that a resume
            does as the run was asked to (``--no-report``).

    Example:
        >>> from cnnlab.train import build_trainer, make_config
        >>> history = build_trainer(make_config("lenet", epochs=1, out="runs/demo")).fit()  # doctest: +SKIP
    """

    def __init__(self, parts: RunParts, *, run_dir: str | Path | None = None, observers: Sequence[Any] = (),
                 quiet: bool = False, report: bool = True):
        self.parts, self.config, self.dataset, self.state = parts, parts.config, parts.dataset, parts.state
        self.device, self.dist, self.model, self.ema = parts.device, parts.dist, parts.model, parts.ema
        self.train_loader, self.val_loader, self.test_loader = parts.train_loader, parts.val_loader, parts.test_loader
        self.optimizer, self.scheduler, self.epoch_metrics = parts.optimizer, parts.scheduler, parts.epoch_metrics
        self.run_dir = Path(run_dir) if run_dir is not None else None
        self.observers, self.quiet, self.report = list(observers), quiet, report
        # --test-split 0: the data holds no test split, and the validation split is apart from none
        self.tested = len(self.dataset.test_labels) > 0
        self.val_name = "validation" if self.test_loader is not None or not self.tested else "test"
        # --test-split 0 without --val-split: nothing held out (a final refit on every labelled image), so nothing is
        # evaluated, and best.pt is the last epoch's (TrainConfig refuses what would judge a held-out figure)
        self.holds_out = self.val_loader is not None
        # The figure that picks best.pt and that --early-stop and --target-acc judge: a history key, and its name
        self.judged_key, self.judged_name = JUDGED[self.config.best_by]
        self.stop_reason: str | None = None  # why an observer ended the run (StopRun); not kept across a resume
        self.result: dict[str, Any] | None = None
        self.test_logits: torch.Tensor | None = None  # the final test-set logits, in test-set order (one process)
        self._val_logits: list[torch.Tensor] = []
        self._val_labels: list[torch.Tensor] = []
        self._stop_signal: int | None = None
        self._told_eval_gap = False  # learned but at chance in evaluation: said once a run, not at every epoch
        self._fit_start: float | None = None  # perf_counter() at the start of the fit, less a resumed run's elapsed
        self._loss_window = torch.zeros(self.config.log_every, device=self.device)
        self.budget = self._time_budget() if self.config.time_budget is not None else None
        # The training accuracy of a network naming one class for every image: the largest class's share of the
        # training images as drawn (every class's alike under --balance sampler), not 1/classes on unbalanced data.
        loader = self.train_loader
        drawn = loader.labels if loader.indices is None else loader.labels[loader.indices.to(loader.labels.device)]
        counts = torch.bincount(drawn, minlength=self.dataset.num_classes)
        self._train_share = 1 / int((counts > 0).sum()) if loader.balance else int(counts.max()) / len(drawn)

    # ------------------------------------------------------------------------------------------ the loop
    def finished(self) -> str | None:
        """Why this run has nothing left to train (None while it has)."""
        cfg = self.config
        if self.state.target_reached is not None:
            return (f"it reached its target {self.judged_name} {cfg.target_acc} at epoch "
                    f"{self.state.target_reached['epoch']}")
        if self.stop_reason is not None:
            return f"it was stopped after epoch {self.state.epoch}: {self.stop_reason}"
        if self._early_stop_due():
            return (f"it stopped early after {epochs_text(cfg.early_stop)} without a better {self.val_name} "
                    f"{self.judged_name}")
        if self.budget is not None:
            if self.budget.spent():
                return (f"it used its time budget of {cfg.time_budget:g}s ({self.state.step} steps, "
                        f"{self.state.step / len(self.train_loader):.2f} epochs)")
        elif self.state.epoch >= cfg.epochs:
            return f"it trained all {cfg.epochs} epochs" if cfg.epochs > 1 else "it trained its 1 epoch"
        return None

    def ended_by_its_own_rule(self) -> bool:
        """Whether the run ended on its target accuracy, a stop (a divergence) or early stopping: more epochs would
        not train it, as it would end again at once."""
        return self.state.target_reached is not None or self.stop_reason is not None or self._early_stop_due()

    def _early_stop_due(self) -> bool:
        return bool(self.config.early_stop) and self._epochs_since_best() >= self.config.early_stop

    def _stopped_early(self) -> bool:
        """Early stopping ended the run, before its last epoch (or, with a time budget, before the budget's end)."""
        return (self.state.target_reached is None and self.stop_reason is None and self._early_stop_due()
                and (self.budget is not None or self.state.epoch < self.config.epochs))

    def _epochs_since_best(self) -> int:
        best = self.best_row()
        return int(self.state.history[-1]["epoch"] - best["epoch"]) if best is not None else 0

    def best_row(self) -> dict[str, float] | None:
        """The history row of the epoch best.pt holds: :func:`best_row` of the figure ``config.best_by`` judges, or
        the last where nothing is held out."""
        if not self.holds_out:
            return self.state.history[-1] if self.state.history else None
        return best_row(self.state.history, self.judged_key)

    @property
    def picked_by(self) -> str | None:
        """What picked best.pt, as result.json records it: ``config.best_by``, or None where nothing is held out (the
        last epoch's, picked by no figure, whatever ``--balance`` resolved ``best_by`` to)."""
        return self.config.best_by if self.holds_out else None

    def fit(self) -> list[dict[str, float]]:
        """Train until ``config.epochs`` or the time budget is used (from where a resumed run left off), the target
        accuracy or early stop.

        Returns:
            The epoch history (``self.result`` holds the run's result).
        """
        cfg = self.config
        start = self._fit_start = time.perf_counter() - self.state.elapsed
        previous = install_stop_handlers(self._on_signal)
        try:
            self._notify("on_start", self)
            self._thread_hint()
            if self.budget is not None:
                self.budget.begin(start)
            while self.finished() is None:
                train = self.train_epoch()
                row = {"epoch": self.state.epoch + 1, "train_loss": train["loss"], "train_acc": train["acc"]}
                recalls, unbalanced = None, False
                if self.holds_out:  # the same on every rank
                    val = self.evaluate(keep_logits=True)
                    recalls, unbalanced = self._val_recalls()  # a collective under torchrun: every rank, every epoch
                    row |= {"val_loss": val["loss"], "val_acc": val["acc"], "val_bal_acc": balanced_accuracy(recalls)}
                seconds = time.perf_counter() - self._epoch_t0
                row |= {"lr": self.optimizer.param_groups[0]["lr"], "seconds": seconds,
                        "images_per_s": train["images"] / seconds}
                self.state.history.append(row)
                self.state.epoch += 1
                self.state.epoch_images, self.state.epoch_seconds = 0, 0.0
                self.epoch_metrics = EpochMetrics(self.device)
                self.state.elapsed = time.perf_counter() - start
                is_best = True  # nothing held out: best.pt is the last epoch's
                if self.holds_out:
                    figure = row[self.judged_key]  # global, as both figures are: every rank decides alike
                    is_best = figure > self.state.best_val_acc
                    if cfg.target_acc is not None and figure >= cfg.target_acc:
                        self.state.target_reached = {"epoch": self.state.epoch, "seconds": self.state.elapsed}
                    self.state.best_val_acc = max(self.state.best_val_acc, figure)
                self._end_of_epoch(row, is_best, recalls if unbalanced else None)
                if self.state.target_reached is not None:
                    self._log(f"{self.val_name} {self.judged_name} {row[self.judged_key]:.4f} reached the target "
                              f"{cfg.target_acc} after {self.state.elapsed:.1f}s (epoch {self.state.epoch}): stopping")
                elif self.stop_reason is not None:
                    self._log(f"stopping after epoch {self.state.epoch}: {self.stop_reason}")
                elif self._stopped_early():
                    self._log(f"no better {self.val_name} {self.judged_name} for {epochs_text(cfg.early_stop)}: "
                              "stopping early")
                if self.budget is not None:
                    self.budget.epoch_ended()
            self.result = self._result(time.perf_counter() - start)
            self._notify("on_end", self, self.result)
        except Interrupted as stop:
            self._checkpoint("last.pt")
            self._notify("on_interrupt", self, stop)
            barrier(self.dist)  # no rank exits before rank 0 has written it: a launcher may tear down the rest then
            if self.dist.is_main:  # even with --quiet: without this line nobody knows the run can be resumed
                print(str(stop), file=sys.stderr, flush=True)
            raise
        except BaseException as error:
            self._notify("on_failure", self, error)
            raise
        finally:
            restore_handlers(previous)
            shutdown(self.dist)
        # Outside the stop handlers: what comes now (the report) is derived from files already on disk, and
        # Ctrl-C simply ends it.
        self._notify("after_fit", self, self.result)
        # A budgeted run's length is an outcome, not a setting: say what the budget bought (a short one, little)
        bought = (f", {self.result['steps']} steps ({self.result['epochs_trained']:.2f} epochs) in its "
                  f"{cfg.time_budget:g}s budget" if self.budget is not None else "")
        last = self.state.history[-1]["epoch"] if self.state.history else 0
        final = f"test_acc {self.result['test_acc']:.4f}" if self.tested else \
            f"no test split, validation accuracy {self.result['val_acc']:.4f}" if self.holds_out else \
            f"held out none of its {self.result['train_images']} images, train accuracy {self.result['train_acc']:.4f}"
        # a training accuracy is measured as the epoch trains, not of the model it ends with
        of = "the last epoch's model" if self.holds_out else "measured as the last epoch trained"
        scored, split = self.result.get("test_samples"), self.test_loader or self.val_loader
        if self.tested and scored is not None and scored < split.num_items:  # --limit-val-batches: a quick check
            final += f" on {scored:,} of the {split.num_items:,} held-out images"
        self._log(f"done: {cfg.model} {final} ({of}, epoch {last:g}); {self._best_words()}; in "
                  f"{self.result['wall_s']:.1f}s, {self.result['images_per_s']:,.0f} img/s{bought} -> "
                  f"{self.run_dir or 'memory'}")
        return self.state.history

    def _best_words(self) -> str:
        """The end-of-training line's words on best.pt, apart from the last epoch's model that result.json's test_acc
        is of (eval, export and the README's path take best.pt): its epoch and the figure that picked it, and its test
        accuracy where the validation set is the test set (no --val-split), so no pass of its own is needed for it."""
        held = "best.pt" if self.run_dir is not None else "the best epoch"
        if not self.holds_out:  # said with the run's figure ("held out none of its N images"); a time budget or
            # --limit-train-batches may have trained on fewer of them than all
            return f"{'best.pt' if self.run_dir is not None else 'the model'} is the last epoch's"
        best = self.best_row()
        if best is None:
            return f"no best {self.val_name} {self.judged_name}"
        words = f"{held}: epoch {best['epoch']:g}, {self.val_name} {self.judged_name} {best[self.judged_key]:.4f}"
        if self.val_name == "test" and self.judged_key != "val_acc":  # its accuracy, beside test_acc's
            words += f", test accuracy {best['val_acc']:.4f}"
        return words

    def train_epoch(self) -> dict[str, float]:
        """One pass over this rank's shard of the epoch's permutation; returns the exact global metrics and the
        number of images this process stepped through (``images``: all ranks, this process's time only)."""
        self.parts.enter_epoch(self.state.epoch)  # --freeze-epochs: the unfreeze falls on an epoch boundary
        cfg, model = self.config, self.parts.step_model
        model.train()
        self.train_loader.set_epoch(self.state.epoch)  # keeps a mid-epoch resume position if one was loaded
        first = self.train_loader.state_dict()["batch"]
        # The bar advances every step (tqdm redraws at most 4 times a second, and advancing it reads nothing
        # from the device); the loss and img/s beside it are read only at the log interval's sync point.
        bar = tqdm(total=len(self.train_loader), initial=first, leave=False, mininterval=0.25,
                   desc=f"epoch {self.state.epoch + 1}{self._of_epochs()}", unit="batch", dynamic_ncols=True,
                   disable=self.quiet or not self.dist.is_main or not sys.stderr.isatty())
        # A resumed epoch goes on counting from what its checkpoint kept
        self._epoch_t0 = time.perf_counter() - self.state.epoch_seconds
        since, t_log, images, last = 0, time.perf_counter(), self.state.epoch_images, len(self.train_loader) - 1
        pending_checkpoint = False
        for b, (x, y) in enumerate(self.train_loader, start=first):
            x = x.contiguous(memory_format=self.parts.memory_format)
            # Gradient accumulation: the optimizer steps after every `accumulate` batches and at the epoch's end.
            opens, closes = b % cfg.accumulate == 0, (b + 1) % cfg.accumulate == 0 or b == last
            with torch.autocast(**self.parts.autocast):
                logits = model(x)
                # Soft targets under --mixup/--cutmix; class weights under --balance loss.
                loss = F.cross_entropy(logits, y, weight=self.parts.class_weights,
                                       label_smoothing=cfg.label_smoothing)
            if opens:
                self.optimizer.zero_grad(set_to_none=True)
            if cfg.accumulate == 1:
                loss.backward()
            else:
                syncs = closes or not self.dist.enabled
                with (model.no_sync() if not syncs and hasattr(model, "no_sync") else nullcontext()):
                    (loss / cfg.accumulate).backward()
            if closes:
                if cfg.grad_clip:
                    nn.utils.clip_grad_norm_(self.model.parameters(), cfg.grad_clip)
                self.optimizer.step()
                self.scheduler.step()
                if self.ema is not None:
                    self.ema.update_parameters(self.model)
            # Mixed batches: a prediction counts as right when it names the image's larger share (the argmax of its
            # soft target), so the train accuracy is of the dominant label, not of a clean image.
            self.epoch_metrics.update(loss, logits, y if y.dim() == 1 else y.argmax(1))
            self._loss_window[self.state.step % cfg.log_every] = loss.detach()
            self.state.step += 1
            since += 1
            images += x.shape[0]
            bar.update(1)
            at_sync = self.state.step % cfg.log_every == 0
            stop = closes and self._stop_requested(at_sync_point=at_sync)
            if at_sync or stop:
                self._check_finite(since)  # the one host sync of the interval
                now = time.perf_counter()
                if not bar.disable:  # reading the loss is a second sync: only when someone watches the bar
                    bar.set_postfix(loss=f"{self._interval_loss(since):.3f}",
                                    img_s=f"{since * x.shape[0] * self.dist.world_size / (now - t_log):,.0f}")
                since, t_log = 0, now
            pending_checkpoint |= bool(cfg.checkpoint_every and self.state.step % cfg.checkpoint_every == 0)
            if (pending_checkpoint and closes) or stop:  # what the epoch did so far, for the checkpoint to keep
                self.state.epoch_images, self.state.epoch_seconds = images, time.perf_counter() - self._epoch_t0
            if pending_checkpoint and closes:  # only between optimizer steps: gradients are not checkpointed
                self._check_finite(since)
                self._checkpoint("last.pt")
                pending_checkpoint = False
            if stop:
                raise Interrupted(self._stop_signal, self._resume_hint())
            if self.budget is not None and self.budget.step_done(at_sync, closes):
                break  # the time budget's last step: the epoch ends here, with its evaluation
        self._check_finite(since)
        if self.dist.enabled and self._stop_requested(at_sync_point=True):  # came after the epoch's last sync point
            self.state.epoch_images, self.state.epoch_seconds = images, time.perf_counter() - self._epoch_t0
            raise Interrupted(self._stop_signal, self._resume_hint())
        bar.close()
        metrics = self.epoch_metrics.compute()
        metrics["images"] = images * self.dist.world_size
        return metrics

    @torch.no_grad()
    def evaluate(self, loader: DeviceLoader | None = None, keep_logits: bool = False) -> dict[str, float]:
        """Loss and accuracy on the validation split (the test set without ``val_split``, as in the book), or on
        ``loader``, with EMA weights and flip-TTA if set. ``keep_logits`` keeps this process's logits in
        ``self._val_logits`` (split order)."""
        if self.ema is not None:  # each rank averaged its own BN statistics (DDP syncs the model's, not the EMA's)
            broadcast_buffers(self.ema.module, self.dist)
        plain = self.ema.module if self.ema is not None else self.model
        main, rest = (self.val_loader, self.parts.val_rest) if loader is None else \
            (loader, self.parts.test_rest if loader is self.test_loader else None)
        passes = [(main, self.ema.module if self.ema is not None else self.parts.step_model)]
        if rest is not None:  # rank 0 only, so on the unwrapped model: no collectives
            passes.append((rest, plain))
        metrics = EpochMetrics(self.device)
        kept, labels = [], []
        for part, net in passes:
            net.eval()
            part.set_epoch(0)
            for x, y in part:
                x = x.contiguous(memory_format=self.parts.memory_format)
                with torch.autocast(**self.parts.autocast):
                    logits = net(x)
                    if self.parts.tta:  # helps only after flip augmentation: shoes all face left (docs/benchmarks.md)
                        logits = (logits + net(x.flip(-1))) / 2
                metrics.update(F.cross_entropy(logits.float(), y), logits, y)
                if keep_logits:
                    kept.append(logits.detach().float())
                    labels.append(y)
        if keep_logits:
            self._val_logits, self._val_labels = kept, labels
        return metrics.compute()

    # ------------------------------------------------------------------------------------------ helpers
    def _stop_requested(self, at_sync_point: bool) -> bool:
        """Whether a signal asks to stop after this step.

        Alone, at once. Under torchrun the signal reaches each rank at a different step, and a rank that stops
        while the others go on leaves them blocked in DDP's all-reduce; so ranks decide together, at the log
        interval's sync point (a collective: ``at_sync_point`` is the same on every rank at every step).
        """
        if not self.dist.enabled:
            return self._stop_signal is not None
        if not at_sync_point:
            return False
        self._stop_signal = reduce_int(self._stop_signal or 0, self.dist, self.device) or None
        return self._stop_signal is not None

    def _interval_loss(self, since: int) -> float:
        """Mean training loss of the last ``since`` steps. Not the whole window's: after a resume its other slots
        hold zeros, not losses (a host sync: call it at a sync point)."""
        steps = torch.arange(self.state.step - since, self.state.step, device=self.device) % self.config.log_every
        return self._loss_window[steps].mean().item()

    def _check_finite(self, since: int) -> None:
        """Raise NonFiniteLoss naming the first bad step among the last ``since`` (the window's older entries
        were checked before, so checking the whole window is enough). Under torchrun every rank raises at the
        same step, naming the first bad step of any rank (a collective, like :meth:`_stop_requested`)."""
        first = self.state.step  # "none": every bad step is below self.state.step
        if since and not bool(torch.isfinite(self._loss_window).all()):
            losses, size = self._loss_window.tolist(), self.config.log_every
            first = next(s for s in range(self.state.step - since, self.state.step)
                         if not math.isfinite(losses[s % size]))
        first = reduce_int(first, self.dist, self.device, op="min")
        if first != self.state.step:
            self._blow_up("loss", first + 1)

    def _blow_up(self, what: str, step: int) -> None:
        last = self.run_dir / "last.pt" if self.run_dir else None
        kept = f"; the last good checkpoint is {last}" if last and last.exists() else ""
        raise NonFiniteLoss(f"{what} became non-finite at step {step} (epoch {self.state.epoch + 1}): the learning "
                            f"rate {self.config.lr} is probably too high, lower --lr or set --grad-clip{kept}")

    def _end_of_epoch(self, row: dict[str, float], is_best: bool, recalls: list[float | None] | None) -> None:
        # best.pt, then last.pt, then the observers' metrics.csv: a kill between the two checkpoints resumes from
        # the epoch before, which trains this one again and finds it best again (last.pt first, it would hold this
        # epoch's best_val_acc, and best.pt would stay an older epoch's for good); once metrics.csv shows an epoch,
        # a kill at any later moment resumes after it. At a best epoch (every epoch of a run that holds out nothing)
        # the two are one checkpoint: written once and linked, not written twice; the next write of last.pt (a
        # later epoch's, a mid-epoch one) replaces that name alone, and best.pt keeps this epoch's.
        if is_best:  # the same on every rank: the judged figure is a global one
            self._checkpoint("best.pt", linked="last.pt")  # on every rank: a collective under torchrun
        else:
            self._checkpoint("last.pt")
        held_out = ""  # nothing held out: the training figures alone
        if self.holds_out:
            judged = f"  val_bal_acc {row['val_bal_acc']:.4f}" if self.judged_key == "val_bal_acc" else ""
            held_out = f"  val_loss {row['val_loss']:.4f}  val_acc {row['val_acc']:.4f}{judged}"
        self._log(f"epoch {row['epoch']}{self._of_epochs()}  train_loss {row['train_loss']:.4f}  "
                  f"train_acc {row['train_acc']:.4f}{held_out}  {row['images_per_s']:,.0f} img/s  "
                  f"{row['seconds']:.1f}s")
        # The chance check judges the held-out figure: the end-of-epoch model's. A run that holds out nothing gets no
        # twin judging its training accuracy: that is the mean over the epoch's batches as the weights moved (from
        # chance at the first step), augmented or mixed, so it lags the model the margin was set for; and on
        # unbalanced classes the check judges the mean recall, which the loop does not count of training batches
        # (EpochMetrics keeps the loss and accuracy only), where a network naming one class scores its share.
        if self.holds_out:
            gap = not self._told_eval_gap and learned_but_at_chance(row, self.dataset.num_classes, recalls,
                                                                    self._train_share)
            before = (len(self.state.history) - 1) * len(self.train_loader)  # steps before this epoch (all whole)
            if gap or before < CHANCE_CHECK_STEPS <= self.state.step:
                self._told_eval_gap |= gap
                self._chance_warning(row, recalls)
        try:
            self._notify("on_epoch", self, row, is_best)
        except StopRun as stop:
            self.stop_reason = str(stop) or "an observer asked to stop"
        # Observers run on rank 0 only: every rank learns of a stop here, so all leave the loop at this epoch.
        if reduce_int(int(self.stop_reason is not None), self.dist, self.device) and self.stop_reason is None:
            self.stop_reason = "rank 0's observer asked to stop"

    def _result(self, wall: float) -> dict[str, Any]:
        """The run's figures (result.json); with a validation split, the final model is evaluated on the test set
        here, once. Without a test split (``--test-split 0``) the test figures are None, and the per-class ones are
        the validation split's; holding out nothing (no ``--val-split`` either) every held-out figure is None, and
        the last epoch's training figures are the run's own."""
        last = self.state.history[-1] if self.state.history else {}
        if self.test_loader is not None and self.state.history:
            test = self.evaluate(self.test_loader, keep_logits=True)
            test_samples = self._samples(self.test_loader, self.parts.test_rest)
            final = self._final_logits(self.test_loader)
        elif not self.holds_out:  # nothing to score: the training figures are the run's only ones
            test, test_samples, final = {"acc": None, "loss": None}, None, None
        else:
            if not self._val_logits and self.state.history:  # a resume that had nothing left to train: its last
                self.evaluate(keep_logits=True)  # evaluation again, for the per-class figures
            test = {"acc": last.get("val_acc"), "loss": last.get("val_loss")} if self.tested else \
                {"acc": None, "loss": None}
            test_samples = self._samples(self.val_loader, self.parts.val_rest) if self.tested else None
            final = self._final_logits(self.val_loader)
        per_class = macro_f1 = balanced = None
        if final is not None:
            # Per-class figures of the images the test figure is of; the report reuses the logits, so it does not
            # score the test set again (under torchrun rank 0 alone would, at world_size times the run's cost).
            self.test_logits, labels = final
            scores = class_scores(confusion_matrix(self.test_logits.argmax(1), labels, self.dataset.num_classes))
            macro_f1 = scores.pop("macro_f1")
            balanced = balanced_accuracy(scores["recall"])
            per_class = {name: {k: v[i] for k, v in scores.items()} for i, name in enumerate(self.dataset.classes)}
        images = sum(r["images_per_s"] * r["seconds"] for r in self.state.history)
        best = self.best_row() or {}
        return {
            "model": self.config.model, "recipe": self.config.recipe, "dataset": self.dataset.name,
            "status": "finished" if self.stop_reason is None else "stopped", "stop_reason": self.stop_reason,
            "epochs": len(self.state.history),
            "test_acc": test["acc"], "test_bal_acc": balanced if self.tested else None, "test_loss": test["loss"],
            "test_samples": test_samples, "val_split": self.config.val_split,
            # the training figures of the last epoch (measured as it trained), and the images the run trained from
            # (every labelled image where nothing_held_out)
            "train_acc": last.get("train_acc"), "train_loss": last.get("train_loss"),
            "train_images": self.train_loader.num_items, "nothing_held_out": not self.holds_out,
            "val_acc": last.get("val_acc") if self.val_name == "validation" else None,
            "val_bal_acc": last.get("val_bal_acc") if self.val_name == "validation" else None,
            # best.pt's epoch, the figure that picked it, and its two figures
            "best_by": self.picked_by, "best_epoch": best.get("epoch"), "best_val_acc": best.get("val_acc"),
            "best_val_bal_acc": best.get("val_bal_acc"),
            "images_per_s": images / wall if wall else None, "wall_s": wall,
            "world_size": self.dist.world_size, "global_batch_size": self.config.batch_size * self.dist.world_size,
            "device": str(self.device), "params": self.params, "input_size": self.parts.input_size,
            "seed": self.config.seed, "target_acc": self.config.target_acc,
            "time_to_target_s": self.state.target_reached and self.state.target_reached["seconds"],
            "target_epoch": self.state.target_reached and self.state.target_reached["epoch"],
            "stopped_early_epoch": self.state.epoch if self._stopped_early() else None,
            "macro_f1": macro_f1, "per_class": per_class, "steps": self.state.step,
            "epochs_trained": self.state.step / len(self.train_loader),
            **(self.budget.record() if self.budget is not None else
               {"time_budget_s": None, "budget_steps": None, "budget_cut": None,
                "budget_planned_before_cut": None}),
        }

    def _of_epochs(self) -> str:
        """What the epoch number is out of: the epoch count, or the budget's seconds used so far."""
        if self.budget is None:
            return f"/{self.config.epochs}"
        return f" ({self.budget.used():.0f}/{self.config.time_budget:g}s)"

    def _time_budget(self) -> TimeBudget:
        # nothing held out: no evaluation at an epoch's end or after the last step, and none is reserved
        val = self._samples(self.val_loader, self.parts.val_rest) if self.val_loader is not None else 0
        test = self._samples(self.test_loader, self.parts.test_rest) if self.test_loader is not None else 0
        return TimeBudget(self.config.time_budget, self.state, self.scheduler.lr_lambdas[0],
                          batches_per_epoch=len(self.train_loader), batch_size=self.config.batch_size,
                          accumulate=self.config.accumulate, eval_images=val,
                          final_images=val + test, tta=self.parts.tta, dist=self.dist, device=self.device,
                          log_every=self.config.log_every)

    def _final_logits(self, loader: DeviceLoader) -> tuple[torch.Tensor, torch.Tensor] | None:
        """The last evaluation's logits and labels (of ``loader``'s split) on the CPU in the split's order, on rank 0;
        None on the other ranks and where none were kept. Under torchrun each rank kept its own shard: the shards are
        gathered (a collective: every rank calls this), then rank 0's pass over the samples equal shards leave over,
        which are the split's last."""
        if not self._val_logits:
            return None
        logits, labels, n = torch.cat(self._val_logits), torch.cat(self._val_labels), loader.num_samples
        logits = torch.cat([gather_in_shard_order(logits[:n], self.dist), logits[n:]])
        labels = torch.cat([gather_in_shard_order(labels[:n], self.dist), labels[n:]])
        return (logits.cpu(), labels.cpu()) if self.dist.is_main else None

    def _samples(self, loader: DeviceLoader, rest: DeviceLoader | None) -> int:
        return loader.num_samples * self.dist.world_size + (rest.num_samples if rest else 0)

    def _notify(self, event: str, *args: Any) -> None:
        if not self.dist.is_main:
            return
        for observer in self.observers:
            hook = getattr(observer, event, None)
            if hook is not None:
                hook(*args)

    def _log(self, line: str) -> None:
        if not self.quiet and self.dist.is_main:
            print(line, flush=True)

    def _warn(self, line: str) -> None:
        if self.dist.is_main:
            print(f"cnnlab: note: {line}", file=sys.stderr, flush=True)

    def _thread_hint(self) -> None:
        hint = oversubscription_hint() if self.device.type == "cpu" and not self.quiet else None
        if hint:
            self._warn(hint)

    def _val_recalls(self) -> tuple[list[float | None], bool]:
        """Each class's recall in the last evaluation (None for a class without images there), whose mean is the
        balanced accuracy (:func:`~cnnlab.evaluate.balanced_accuracy`), and whether the split's classes are
        unbalanced: there a network naming one class for every image scores that class's share in accuracy (up to
        the largest one's), and the chance check judges the mean recall instead (health.judged). A collective under
        torchrun: the counts are summed over the ranks."""
        k = self.dataset.num_classes
        counts = torch.zeros(2, k, dtype=torch.int64, device=self.device)
        for logits, labels in zip(self._val_logits, self._val_labels, strict=True):
            counts[0] += torch.bincount(labels, minlength=k)
            counts[1] += torch.bincount(labels[logits.argmax(1) == labels], minlength=k)
        sum_over_ranks(counts)
        images, right = counts.tolist()
        # balanced: the accuracy is the mean recall
        return [r / n if n else None for r, n in zip(right, images, strict=True)], len(set(images)) > 1

    def _chance_warning(self, row: dict[str, float], recalls: list[float | None] | None) -> None:
        cfg = self.config
        frozen = body_frozen(cfg.freeze, cfg.freeze_epochs, int(row["epoch"]) - 1)  # the epoch just ended
        warning = chance_warning(row, self.dataset.num_classes, bn_updates=batch_norm_updates(self.model),
                                 frozen=frozen, recalls=recalls, train_share=self._train_share,
                                 split=self.val_name)
        if warning:
            self._warn(warning)

    # ------------------------------------------------------------------------------------------ the record
    def config_record(self) -> dict[str, Any]:
        """config.json: the config, the dataset, what was derived from both, and the environment."""
        record = self.parts.record()
        return {"config": record["config"], "dataset": record["dataset"], "input_size": self.parts.input_size,
                "normalize": self.parts.normalize, "head": record["head"], "params": self.params,
                "world_size": self.dist.world_size, "environment": environment(self.device)}

    @property
    def params(self) -> int:
        return sum(p.numel() for p in self.model.parameters())

    def state_dict(self) -> dict[str, Any]:
        """Everything a bit-exact resume needs, tensors and plain containers only: the run's record, the parts'
        states and :class:`~cnnlab.train.state.TrainState` (with the random streams)."""
        state = {**self.parts.record(), "model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
                 "scheduler": self.scheduler.state_dict(), "loader": self.train_loader.state_dict(),
                 "epoch_metrics": self.epoch_metrics.state_dict(), **self.state.state_dict(),
                 "world_size": self.dist.world_size, "torch_threads": torch.get_num_threads(), "report": self.report}
        if self.ema is not None:
            state["ema"] = self.ema.module.state_dict()
            state["ema_n"] = int(self.ema.n_averaged.item())
        return state

    def _checkpoint(self, name: str, linked: str | None = None) -> None:
        """Rank 0 writes RUN_DIR/``name``, and makes RUN_DIR/``linked`` that same file where given
        (:func:`cnnlab.io.atomic_link`); every rank must call it, since the partial epoch sums it keeps are summed
        over the ranks first (rank 0's own would lose the others' samples on a mid-epoch resume)."""
        # The loss check cannot see an update that overflowed the weights while its own loss was finite; a
        # checkpoint with inf/NaN weights would replace the last good one, so look at the weights themselves.
        if not bool(torch.stack([torch.isfinite(p).all() for p in self.model.parameters()]).all()):
            self._blow_up("weights", self.state.step)  # identical on every rank under DDP: all raise together
        summed = self.epoch_metrics.global_state_dict()
        if self._fit_start is not None:  # a mid-epoch checkpoint's steps are kept, so is their time (a budget's)
            self.state.elapsed = time.perf_counter() - self._fit_start
        if self.dist.is_main and self.run_dir is not None:
            save_checkpoint({**self.state_dict(), "epoch_metrics": summed}, self.run_dir / name)
            if linked is not None:
                atomic_link(self.run_dir / name, self.run_dir / linked)

    def _on_signal(self, signum: int) -> None:  # finish the current step, then checkpoint and stop (train_epoch)
        self._stop_signal = signum

    def _resume_hint(self) -> str:
        name = signal.Signals(self._stop_signal).name
        where = f"Resume with: {resume_command(self.run_dir, self.dist.world_size)}" if self.run_dir else \
            "no run folder to resume"
        return f"{name}: stopped at epoch {self.state.epoch + 1}, step {self.state.step}; checkpoint written. {where}"
