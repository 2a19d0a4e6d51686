"""The Trainer: one explicit loop, ``fit -> train_epoch -> evaluate``, configured by one TrainConfig.

It is handed a dataset (:class:`cnnlab.data.ImageDataset`) and a model as values and fits one to the other; what
the run leaves on disk besides its checkpoints (config.json, metrics.csv, result.json, curves, TensorBoard, the
report) is written by observers (:class:`cnnlab.train.rundir.RunFolder`), not by the loop.

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
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from cnnlab.data import DeviceLoader, ImageDataset, Preprocess, stratified_split
from cnnlab.device import channels_last_pays, resolve_device
from cnnlab.errors import CnnlabError, Interrupted, StopRun
from cnnlab.io import remove_stale_temporaries
from cnnlab.models import check_input_size, model_info
from cnnlab.train.config import TrainConfig
from cnnlab.train.distributed import (
    DistEnv,
    barrier,
    broadcast_buffers,
    init_distributed,
    reduce_int,
    shutdown,
)
from cnnlab.train.metrics import EpochMetrics
from cnnlab.train.schedule import build_optimizer, build_scheduler
from cnnlab.train.state import ResumableState, install_stop_handlers, restore_handlers

# A first epoch this long must leave a learning network above chance; after a handful of steps chance is normal.
CHANCE_CHECK_STEPS = 20


class NonFiniteLoss(CnnlabError):
    """The training loss became NaN or infinite."""


def default_input_size(model: str, dataset: ImageDataset) -> int:
    """The model's input side when ``--resize`` is not given.

    Models the book trains at Fashion-MNIST's own 28 px (LeNet, the compact nets) take any dataset at its stored
    size; models the book enlarges the images for (AlexNet and VGG at 224, the ch. 8 nets at 96) keep the book's
    size, which is what their strides are designed around.
    """
    book = model_info(model).input_size
    return book if book > 28 else dataset.image_size


class Trainer(ResumableState):
    """Train ``model`` on ``dataset`` as ``config`` says.

    Args:
        config: the validated run configuration (``config.model`` names the registry builder of ``model``, so a
            checkpoint can rebuild it).
        dataset: the data; the training split, and the validation split when ``config.val_split`` is set.
        model: a freshly built (and seeded) model for ``dataset``'s channels and classes.
        run_dir: where last.pt and best.pt go (None: no checkpoints, e.g. a quick experiment in memory).
        observers: objects told of the run's progress (``on_start``, ``on_epoch``, ``on_end``, ``on_failure``,
            ``after_fit``; each optional), on the main process only. :class:`~cnnlab.train.rundir.RunFolder`
            writes the run folder's files.
        quiet: no progress bar or per-epoch lines.
        resume_state: a checkpoint dict to continue from.
        dist: the torchrun environment (default: read from the environment).

    Example:
        >>> from cnnlab.train import build_trainer, make_config
        >>> history = build_trainer(make_config("lenet", epochs=1, out="runs/demo")).fit()  # doctest: +SKIP
    """

    def __init__(self, config: TrainConfig, dataset: ImageDataset, model: nn.Module, *,
                 run_dir: str | Path | None = None, observers: Sequence[Any] = (), quiet: bool = False,
                 resume_state: dict[str, Any] | None = None, dist: DistEnv | None = None):
        self.config = cfg = config.validate()
        self.dataset, self.quiet, self.observers = dataset, quiet, list(observers)
        self.device = resolve_device(cfg.device)
        self.dist: DistEnv = dist or init_distributed(self.device)
        self._set_determinism()

        self.input_size = cfg.resize or default_input_size(cfg.model, dataset)
        check_input_size(cfg.model, self.input_size, dataset.channels)
        # Data: uint8 on the device once; resize/normalise/augment per batch (docs/design.md, "Data").
        self.normalize = [list(dataset.mean), list(dataset.std)] if cfg.normalize else None
        self.preprocess = Preprocess(self.input_size, *(self.normalize or (None, None))).to(self.device)
        train_idx = None
        if cfg.val_split is not None:  # held out of the training set: tuning never looks at the test set
            train_idx, val_idx = stratified_split(dataset.train_labels, cfg.val_split, cfg.seed)
            val = (dataset.train_images, dataset.train_labels, val_idx)  # index views: no copy of the images
        else:  # the book validates on the test set (d2l 7.6)
            val = (dataset.test_images, dataset.test_labels, None)
        self.val_name = "validation" if cfg.val_split is not None else "test"
        shard = dict(device=self.device, rank=self.dist.rank, world_size=self.dist.world_size)
        self.train_loader = DeviceLoader(dataset.train_images, dataset.train_labels, cfg.batch_size, shuffle=True,
                                         preprocess=self.preprocess, augment=cfg.augment, flip=dataset.flip,
                                         seed=cfg.seed, limit_batches=cfg.limit_train_batches, indices=train_idx,
                                         **shard)
        self.val_loader, self.val_rest = self._eval_loaders(*val, shard)
        self.test_loader, self.test_rest = (self._eval_loaders(dataset.test_images, dataset.test_labels, None, shard)
                                            if cfg.val_split is not None else (None, None))

        # Model: device/layout/DDP/compile/EMA wrappers around the value we were given.
        self.model = model
        self.params = sum(p.numel() for p in self.model.parameters())
        if cfg.sync_bn and self.dist.enabled:  # before DDP wraps the model, as the SyncBatchNorm docs require
            if self.device.type != "cuda" or cfg.ops != "torch":
                raise CnnlabError(f"--sync-bn needs CUDA devices and --ops torch (SyncBatchNorm has no CPU kernel, "
                                  f"cnnlab's BatchNorm no synced twin), got device {self.device.type}, --ops {cfg.ops}")
            self.model = nn.SyncBatchNorm.convert_sync_batchnorm(self.model)
        # Channels-last by default where torch's conv kernels are fastest with it (channels_last_pays); cnnlab's
        # own ops are written for contiguous tensors.
        channels_last = cfg.channels_last
        if channels_last is None:
            channels_last = cfg.ops == "torch" and channels_last_pays(self.device)
        self.memory_format = torch.channels_last if channels_last else torch.contiguous_format
        self.model.to(self.device, memory_format=self.memory_format)
        self.step_model: nn.Module = self.model
        if self.dist.enabled:
            ids = [self.device.index] if self.device.type == "cuda" else None
            self.step_model = nn.parallel.DistributedDataParallel(self.model, device_ids=ids)
        if cfg.compile:
            self.step_model = torch.compile(self.step_model)
        self.ema = None
        if cfg.ema:
            from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

            self.ema = AveragedModel(self.model, multi_avg_fn=get_ema_multi_avg_fn(cfg.ema), use_buffers=True)

        self.steps_per_epoch = math.ceil(len(self.train_loader) / cfg.accumulate)  # optimizer steps
        self.optimizer = build_optimizer(self.model, cfg)
        self.scheduler = build_scheduler(self.optimizer, cfg, self.steps_per_epoch)
        self.autocast = dict(device_type=self.device.type, dtype=torch.bfloat16, enabled=cfg.amp)
        # Flip-TTA only where a mirror keeps the class (never for digits), as the training flips
        self.tta = cfg.tta and dataset.flip

        # Counters and history; a resume overwrites them.
        self.epoch, self.step, self.history, self.best_val_acc = 0, 0, [], -1.0
        self.target_reached: dict[str, float] | None = None  # {"epoch", "seconds"} once val_acc >= target_acc
        self.stop_reason: str | None = None  # why an observer ended the run (StopRun); not kept across a resume
        self.epoch_metrics = EpochMetrics(self.device)
        self.elapsed = 0.0  # wall seconds of fitting before this process (a resumed run carries them over)
        self.result: dict[str, Any] | None = None
        self.test_logits: torch.Tensor | None = None  # the final test-set logits, in test-set order (one process)
        self._val_logits: list[torch.Tensor] = []
        self._stop_signal: int | None = None
        self._loss_window = torch.zeros(cfg.log_every, device=self.device)

        self.run_dir = Path(run_dir) if run_dir is not None else None
        if resume_state:
            self._load_state(resume_state)
            if self.dist.is_main and self.run_dir:  # a kill -9 during a checkpoint write leaves its temporary file
                remove_stale_temporaries(self.run_dir)

    # ----------------------------------------------------------------------------------------------- setup
    def _set_determinism(self) -> None:
        """Kernel choices; the seeding itself happens before the model is built (:func:`cnnlab.train.build_trainer`)."""
        if self.config.deterministic:
            torch.use_deterministic_algorithms(True)
            torch.backends.cudnn.benchmark = False
            if self.device.type == "cuda":  # cuBLAS needs a fixed workspace to be deterministic
                import os

                os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        elif self.device.type == "cuda":
            torch.backends.cudnn.benchmark = True
            torch.backends.cuda.matmul.allow_tf32 = True
            torch.backends.cudnn.allow_tf32 = True

    def _eval_loaders(self, images: torch.Tensor, labels: torch.Tensor, indices: torch.Tensor | None, shard: dict):
        """A sharded evaluation loader over ``images[indices]``, and on rank 0 one for the samples that equal shards
        leave to no rank.

        Equal shards leave the last len % world_size samples to no rank; rank 0 adds them in evaluate so the split
        is covered exactly (DistributedSampler pads with repeats instead).
        """
        loader = DeviceLoader(images, labels, self.config.batch_size, shuffle=False, preprocess=self.preprocess,
                              limit_batches=self.config.limit_val_batches, indices=indices, **shard)
        covered, rest = loader.shard_size * self.dist.world_size, None
        if self.dist.is_main and covered < loader.num_items and self.config.limit_val_batches is None:
            left = (indices if indices is not None else torch.arange(len(labels)))[covered:]
            rest = DeviceLoader(images, labels, self.config.batch_size, preprocess=self.preprocess,
                                device=self.device, indices=left)
        return loader, rest

    def dataset_record(self) -> dict[str, Any]:
        """What inference needs to know of the data (checkpoints and config.json carry it)."""
        d = self.dataset
        return {"name": d.name, "classes": list(d.classes), "channels": d.channels, "image_size": d.image_size,
                "mean": list(d.mean), "std": list(d.std), "flip": d.flip}

    # ------------------------------------------------------------------------------------------ the loop
    def finished(self) -> str | None:
        """Why this run has nothing left to train (None while it has)."""
        cfg = self.config
        if self.target_reached is not None:
            return f"it reached its target accuracy {cfg.target_acc} at epoch {self.target_reached['epoch']}"
        if self.stop_reason is not None:
            return f"it was stopped after epoch {self.epoch}: {self.stop_reason}"
        if cfg.early_stop and self._epochs_since_best() >= cfg.early_stop:
            return f"it stopped early after {cfg.early_stop} epochs without a better {self.val_name} accuracy"
        if self.epoch >= cfg.epochs:
            return f"it trained all {cfg.epochs} epochs"
        return None

    def _epochs_since_best(self) -> int:
        accs = [r["val_acc"] for r in self.history]
        return len(accs) - 1 - max(range(len(accs)), key=accs.__getitem__) if accs else 0

    def fit(self) -> list[dict[str, float]]:
        """Train until ``config.epochs`` (from where a resumed run left off), the target accuracy or early stop.

        Returns:
            The epoch history (``self.result`` holds the run's result).
        """
        cfg, start = self.config, time.perf_counter() - self.elapsed
        previous = install_stop_handlers(self._on_signal)
        try:
            self._notify("on_start", self)
            self._thread_hint()
            while self.finished() is None:
                t0 = time.perf_counter()
                train = self.train_epoch()
                val = self.evaluate(keep_logits=True)
                seconds = time.perf_counter() - t0
                row = {"epoch": self.epoch + 1, "train_loss": train["loss"], "train_acc": train["acc"],
                       "val_loss": val["loss"], "val_acc": val["acc"], "lr": self.optimizer.param_groups[0]["lr"],
                       "seconds": seconds, "images_per_s": train["images"] / seconds}
                self.history.append(row)
                self.epoch += 1
                self.epoch_metrics = EpochMetrics(self.device)
                self.elapsed = time.perf_counter() - start
                is_best = val["acc"] > self.best_val_acc
                if cfg.target_acc is not None and val["acc"] >= cfg.target_acc:  # global: every rank stops here
                    self.target_reached = {"epoch": self.epoch, "seconds": self.elapsed}
                self.best_val_acc = max(self.best_val_acc, val["acc"])
                self._end_of_epoch(row, is_best)
                if self.target_reached is not None:
                    self._log(f"{self.val_name} accuracy {val['acc']:.4f} reached the target {cfg.target_acc} after "
                              f"{self.elapsed:.1f}s (epoch {self.epoch}): stopping")
                elif self.stop_reason is not None:
                    self._log(f"stopping after epoch {self.epoch}: {self.stop_reason}")
                elif self.finished() and self.epoch < cfg.epochs:
                    self._log(f"no better {self.val_name} accuracy for {cfg.early_stop} epochs: stopping early")
            self.result = self._result(time.perf_counter() - start)
            self._notify("on_end", self, self.result)
        except Interrupted as stop:
            self._checkpoint("last.pt")
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
        self._log(f"done: {cfg.model} test_acc {self.result['test_acc']:.4f} (best {self.val_name} "
                  f"{self.best_val_acc:.4f}) in {self.result['wall_s']:.1f}s, "
                  f"{self.result['images_per_s']:,.0f} img/s -> {self.run_dir or 'memory'}")
        return self.history

    def train_epoch(self) -> dict[str, float]:
        """One pass over this rank's shard of the epoch's permutation; returns the exact global metrics and the
        number of images this process stepped through (``images``: all ranks, this process's time only)."""
        cfg, model = self.config, self.step_model
        model.train()
        self.train_loader.set_epoch(self.epoch)  # keeps a mid-epoch resume position if one was loaded
        first = self.train_loader.state_dict()["batch"]
        # The bar advances every step (tqdm redraws at most 4 times a second, and advancing it reads nothing
        # from the device); the loss and img/s beside it are read only at the log interval's sync point.
        bar = tqdm(total=len(self.train_loader), initial=first, leave=False, mininterval=0.25,
                   desc=f"epoch {self.epoch + 1}/{cfg.epochs}", unit="batch", dynamic_ncols=True,
                   disable=self.quiet or not self.dist.is_main or not sys.stderr.isatty())
        since, t_log, images, last = 0, time.perf_counter(), 0, len(self.train_loader) - 1
        pending_checkpoint = False
        for b, (x, y) in enumerate(self.train_loader, start=first):
            x = x.contiguous(memory_format=self.memory_format)
            # Gradient accumulation: the optimizer steps after every `accumulate` batches and at the epoch's end.
            opens, closes = b % cfg.accumulate == 0, (b + 1) % cfg.accumulate == 0 or b == last
            with torch.autocast(**self.autocast):
                logits = model(x)
                loss = F.cross_entropy(logits, y, label_smoothing=cfg.label_smoothing)
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
            self.epoch_metrics.update(loss, logits, y)
            self._loss_window[self.step % cfg.log_every] = loss.detach()
            self.step += 1
            since += 1
            images += x.shape[0]
            bar.update(1)
            at_sync = self.step % cfg.log_every == 0
            stop = closes and self._stop_requested(at_sync_point=at_sync)
            if at_sync or stop:
                self._check_finite(since)  # the one host sync of the interval
                now = time.perf_counter()
                if not bar.disable:  # reading the loss is a second sync: only when someone watches the bar
                    bar.set_postfix(loss=f"{self._interval_loss(since):.3f}",
                                    img_s=f"{since * x.shape[0] * self.dist.world_size / (now - t_log):,.0f}")
                since, t_log = 0, now
            pending_checkpoint |= bool(cfg.checkpoint_every and self.step % cfg.checkpoint_every == 0)
            if pending_checkpoint and closes:  # only between optimizer steps: gradients are not checkpointed
                self._check_finite(since)
                self._checkpoint("last.pt")
                pending_checkpoint = False
            if stop:
                raise Interrupted(self._stop_signal, self._resume_hint())
        self._check_finite(since)
        if self.dist.enabled and self._stop_requested(at_sync_point=True):  # came after the epoch's last sync point
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
        main, rest = (self.val_loader, self.val_rest) if loader is None else \
            (loader, self.test_rest if loader is self.test_loader else None)
        parts = [(main, self.ema.module if self.ema is not None else self.step_model)]
        if rest is not None:  # rank 0 only, so on the unwrapped model: no collectives
            parts.append((rest, plain))
        metrics = EpochMetrics(self.device)
        kept = []
        for part, net in parts:
            net.eval()
            part.set_epoch(0)
            for x, y in part:
                x = x.contiguous(memory_format=self.memory_format)
                with torch.autocast(**self.autocast):
                    logits = net(x)
                    if self.tta:  # helps only after flip augmentation: shoes all face left (docs/benchmarks.md)
                        logits = (logits + net(x.flip(-1))) / 2
                metrics.update(F.cross_entropy(logits.float(), y), logits, y)
                if keep_logits:
                    kept.append(logits.detach().float())
        if keep_logits:
            self._val_logits = kept
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
        steps = torch.arange(self.step - since, self.step, device=self.device) % self.config.log_every
        return self._loss_window[steps].mean().item()

    def _check_finite(self, since: int) -> None:
        """Raise NonFiniteLoss naming the first bad step among the last ``since`` (the window's older entries
        were checked before, so checking the whole window is enough). Under torchrun every rank raises at the
        same step, naming the first bad step of any rank (a collective, like :meth:`_stop_requested`)."""
        first = self.step  # "none": every bad step is below self.step
        if since and not bool(torch.isfinite(self._loss_window).all()):
            losses, size = self._loss_window.tolist(), self.config.log_every
            first = next(s for s in range(self.step - since, self.step) if not math.isfinite(losses[s % size]))
        first = reduce_int(first, self.dist, self.device, op="min")
        if first != self.step:
            self._blow_up("loss", first + 1)

    def _blow_up(self, what: str, step: int) -> None:
        last = self.run_dir / "last.pt" if self.run_dir else None
        kept = f"; the last good checkpoint is {last}" if last and last.exists() else ""
        raise NonFiniteLoss(f"{what} became non-finite at step {step} (epoch {self.epoch + 1}): the learning rate "
                            f"{self.config.lr} is probably too high, lower --lr or set --grad-clip{kept}")

    def _end_of_epoch(self, row: dict[str, float], is_best: bool) -> None:
        # last.pt before the observers write metrics.csv: once metrics.csv shows an epoch, a kill at any later
        # moment resumes after it
        self._checkpoint("last.pt")  # on every rank: a collective under torchrun
        if is_best:  # the same on every rank: val_acc is the global figure
            self._checkpoint("best.pt")
        self._log(f"epoch {row['epoch']}/{self.config.epochs}  train_loss {row['train_loss']:.4f}  "
                  f"train_acc {row['train_acc']:.4f}  val_loss {row['val_loss']:.4f}  val_acc {row['val_acc']:.4f}  "
                  f"{row['images_per_s']:,.0f} img/s  {row['seconds']:.1f}s")
        if len(self.history) == 1 and self.steps_per_epoch >= CHANCE_CHECK_STEPS:
            self._chance_warning(row)
        try:
            self._notify("on_epoch", self, row, is_best)
        except StopRun as stop:
            self.stop_reason = str(stop) or "an observer asked to stop"
        # Observers run on rank 0 only: every rank learns of a stop here, so all leave the loop at this epoch.
        if reduce_int(int(self.stop_reason is not None), self.dist, self.device) and self.stop_reason is None:
            self.stop_reason = "rank 0's observer asked to stop"

    def _result(self, wall: float) -> dict[str, Any]:
        """The run's figures (result.json); with a validation split, the final model is evaluated on the test set
        here, once."""
        last = self.history[-1] if self.history else {}
        if self.test_loader is not None and self.history:
            test = self.evaluate(self.test_loader, keep_logits=True)
            test_samples = self._samples(self.test_loader, self.test_rest)
        else:
            test = {"acc": last.get("val_acc"), "loss": last.get("val_loss")}
            test_samples = self._samples(self.val_loader, self.val_rest)
        if self.dist.world_size == 1 and self._val_logits:
            self.test_logits = torch.cat(self._val_logits).cpu()
        images = sum(r["images_per_s"] * r["seconds"] for r in self.history)
        stopped_early = (self.target_reached is None and self.stop_reason is None and bool(self.history)
                         and self.epoch < self.config.epochs)
        return {
            "model": self.config.model, "recipe": self.config.recipe, "dataset": self.dataset.name,
            "status": "finished" if self.stop_reason is None else "stopped", "stop_reason": self.stop_reason,
            "epochs": len(self.history),
            "test_acc": test["acc"], "test_loss": test["loss"], "test_samples": test_samples,
            "val_split": self.config.val_split,
            "val_acc": last.get("val_acc") if self.config.val_split is not None else None,
            "best_val_acc": self.best_val_acc, "images_per_s": images / wall if wall else None, "wall_s": wall,
            "world_size": self.dist.world_size, "global_batch_size": self.config.batch_size * self.dist.world_size,
            "device": str(self.device), "params": self.params, "input_size": self.input_size,
            "seed": self.config.seed, "target_acc": self.config.target_acc,
            "time_to_target_s": self.target_reached and self.target_reached["seconds"],
            "target_epoch": self.target_reached and self.target_reached["epoch"],
            "stopped_early_epoch": self.epoch if stopped_early else None,
        }

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
        from cnnlab.device import oversubscription_hint

        hint = oversubscription_hint() if self.device.type == "cpu" and not self.quiet else None
        if hint:
            self._warn(hint)

    def _chance_warning(self, row: dict[str, float]) -> None:
        from cnnlab.train.health import chance_warning

        warning = chance_warning(row, self.dataset.num_classes)
        if warning:
            self._warn(warning)

    def config_record(self) -> dict[str, Any]:
        """config.json: the config, the dataset, what was derived from both, and the environment."""
        from cnnlab.train.rundir import environment

        return {"config": asdict(self.config), "dataset": self.dataset_record(), "input_size": self.input_size,
                "normalize": self.normalize, "params": self.params, "world_size": self.dist.world_size,
                "environment": environment(self.device)}

    def _on_signal(self, signum: int) -> None:  # finish the current step, then checkpoint and stop (train_epoch)
        self._stop_signal = signum

    def _resume_hint(self) -> str:
        name = signal.Signals(self._stop_signal).name
        where = f"Resume with: cnnlab train --resume {self.run_dir}" if self.run_dir else "no run folder to resume"
        return f"{name}: stopped at epoch {self.epoch + 1}, step {self.step}; checkpoint written. {where}"
