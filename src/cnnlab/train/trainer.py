"""The Trainer: one explicit loop, ``fit -> train_epoch -> evaluate``, configured by one TrainConfig.

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
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from cnnlab.data import MEAN, STD, DeviceLoader, Preprocess, load_fashion_mnist
from cnnlab.device import channels_last_pays, resolve_device
from cnnlab.errors import CnnlabError, Interrupted
from cnnlab.models import check_input_size, create_model, model_info
from cnnlab.models.init import init_cnn
from cnnlab.train import rundir
from cnnlab.train.checkpoint import remove_stale_temporaries
from cnnlab.train.config import TrainConfig
from cnnlab.train.distributed import (
    DistEnv,
    barrier,
    broadcast_buffers,
    broadcast_object,
    init_distributed,
    reduce_int,
    shutdown,
)
from cnnlab.train.metrics import EpochMetrics
from cnnlab.train.schedule import build_optimizer, build_scheduler
from cnnlab.train.state import ResumableState, install_stop_handlers, restore_handlers, seed_all


class NonFiniteLoss(CnnlabError):
    """The training loss became NaN or infinite."""


class Trainer(ResumableState):
    """Train one model on Fashion-MNIST as ``config`` says and keep everything in a run folder.

    Example:
        >>> from cnnlab.train import make_config
        >>> history = Trainer(make_config("lenet", epochs=1, out="runs/demo")).fit()  # doctest: +SKIP
    """

    def __init__(self, config: TrainConfig, *, quiet: bool = False, force: bool = False, report: bool = True,
                 run_dir: str | Path | None = None, resume_state: dict[str, Any] | None = None):
        self.config = config.validate()
        self.quiet, self.report = quiet, report
        self.device = resolve_device(config.device)
        self.dist: DistEnv = init_distributed(self.device)
        self._seed_everything()
        cfg = config

        # The input size first: a bad --resize is an instant error, not one after loading (or downloading) the data.
        info = model_info(cfg.model)
        self.input_size = cfg.resize or info.input_size
        check_input_size(cfg.model, self.input_size)
        # Data: uint8 on the device once; resize/normalise/augment per batch (docs/design.md, "Data").
        data = load_fashion_mnist(cfg.data_dir) if self.dist.local_rank == 0 else None
        barrier(self.dist)  # one process per machine fills the download cache before the others read it
        data = data or load_fashion_mnist(cfg.data_dir)
        self.normalize = [MEAN, STD] if cfg.normalize else None
        self.preprocess = Preprocess(self.input_size, *(self.normalize or (None, None))).to(self.device)
        shard = dict(device=self.device, rank=self.dist.rank, world_size=self.dist.world_size)
        self.train_loader = DeviceLoader(data.train_images, data.train_labels, cfg.batch_size, shuffle=True,
                                         preprocess=self.preprocess, augment=cfg.augment, seed=cfg.seed,
                                         limit_batches=cfg.limit_train_batches, **shard)
        self.val_loader = DeviceLoader(data.test_images, data.test_labels, cfg.batch_size, shuffle=False,
                                       preprocess=self.preprocess, limit_batches=cfg.limit_val_batches, **shard)
        # Equal shards leave the last len % world_size test images to no rank; rank 0 adds them in evaluate so
        # validation covers the whole test set exactly (DistributedSampler pads with repeats instead).
        covered, self.val_rest = self.val_loader.shard_size * self.dist.world_size, None
        if self.dist.is_main and covered < len(data.test_labels) and cfg.limit_val_batches is None:
            self.val_rest = DeviceLoader(data.test_images[covered:], data.test_labels[covered:], cfg.batch_size,
                                         preprocess=self.preprocess, device=self.device)

        # Model: seeded, the book's Xavier init when asked, then device/layout/DDP/compile wrappers.
        self.model = create_model(cfg.model, ops=cfg.ops)
        if cfg.init == "xavier":
            self.model.apply(init_cnn)
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

        self.steps_per_epoch = len(self.train_loader)
        self.optimizer = build_optimizer(self.model, cfg)
        self.scheduler = build_scheduler(self.optimizer, cfg, self.steps_per_epoch)
        self.autocast = dict(device_type=self.device.type, dtype=torch.bfloat16, enabled=cfg.amp)

        # Counters and history; a resume overwrites them.
        self.epoch, self.step, self.history, self.best_val_acc = 0, 0, [], -1.0
        self.target_reached: dict[str, float] | None = None  # {"epoch", "seconds"} once val_acc >= target_acc
        self.epoch_metrics = EpochMetrics(self.device)
        self.elapsed = 0.0  # wall seconds of fitting before this process (a resumed run carries them over)
        self._stop_signal: int | None = None
        self._loss_window = torch.zeros(cfg.log_every, device=self.device)

        # Run folder (rank 0 writes; other ranks only learn its name).
        self.run_dir: Path | None = None
        refused: CnnlabError | None = None
        if self.dist.is_main:
            try:
                self.run_dir = Path(run_dir) if resume_state else rundir.prepare_run_dir(cfg.out, cfg.model, force)
            except CnnlabError as e:  # tell the other ranks too, or they would wait in the broadcast below
                refused = e
        self.run_dir, message = broadcast_object((self.run_dir, refused and str(refused)), self.dist)
        if message:
            raise refused or CnnlabError(message)
        if resume_state:
            self._load_state(resume_state)
            if self.dist.is_main:  # a kill -9 during a checkpoint write leaves its temporary file behind
                remove_stale_temporaries(self.run_dir)

    # ----------------------------------------------------------------------------------------------- setup
    def _seed_everything(self) -> None:
        seed = self.config.seed
        seed_all(seed)
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

    # ------------------------------------------------------------------------------------------ the loop
    def fit(self) -> list[dict[str, float]]:
        """Train for ``config.epochs`` epochs (from where a resumed run left off); returns the epoch history."""
        cfg, start = self.config, time.perf_counter() - self.elapsed
        tb = self._tensorboard()
        previous = install_stop_handlers(self._on_signal)
        try:
            if self.dist.is_main:
                rundir.write_json(self.run_dir / "config.json", self._config_record())
            while self.epoch < cfg.epochs and self.target_reached is None:
                t0 = time.perf_counter()
                train = self.train_epoch()
                val = self.evaluate()
                seconds = time.perf_counter() - t0
                row = {"epoch": self.epoch + 1, "train_loss": train["loss"], "train_acc": train["acc"],
                       "val_loss": val["loss"], "val_acc": val["acc"], "lr": self.optimizer.param_groups[0]["lr"],
                       "seconds": seconds, "images_per_s": train["count"] / seconds}
                self.history.append(row)
                self.epoch += 1
                self.epoch_metrics = EpochMetrics(self.device)
                self.elapsed = time.perf_counter() - start
                is_best = val["acc"] > self.best_val_acc
                if cfg.target_acc is not None and val["acc"] >= cfg.target_acc:  # global: every rank stops here
                    self.target_reached = {"epoch": self.epoch, "seconds": self.elapsed}
                self.best_val_acc = max(self.best_val_acc, val["acc"])
                self._end_of_epoch(row, is_best, tb)
                if self.target_reached is not None:
                    self._log(f"test accuracy {val['acc']:.4f} reached the target {cfg.target_acc} after "
                              f"{self.elapsed:.1f}s (epoch {self.epoch}): stopping")
            wall = time.perf_counter() - start
            return self._finish(wall, tb)
        except Interrupted as stop:
            self._checkpoint("last.pt")
            barrier(self.dist)  # no rank exits before rank 0 has written it: a launcher may tear down the rest then
            if self.dist.is_main:  # even with --quiet: without this line nobody knows the run can be resumed
                print(str(stop), flush=True)
            raise
        finally:
            restore_handlers(previous)
            if tb is not None:
                tb.close()
            shutdown(self.dist)

    def train_epoch(self) -> dict[str, float]:
        """One pass over this rank's shard of the epoch's permutation; returns the exact global metrics."""
        cfg, model = self.config, self.step_model
        model.train()
        self.train_loader.set_epoch(self.epoch)  # keeps a mid-epoch resume position if one was loaded
        bar = tqdm(total=len(self.train_loader), initial=self.train_loader.state_dict()["batch"], leave=False,
                   desc=f"epoch {self.epoch + 1}/{cfg.epochs}", unit="batch", dynamic_ncols=True,
                   disable=self.quiet or not self.dist.is_main or not sys.stderr.isatty())
        since, t_log = 0, time.perf_counter()
        for x, y in self.train_loader:
            x = x.contiguous(memory_format=self.memory_format)
            with torch.autocast(**self.autocast):
                logits = model(x)
                loss = F.cross_entropy(logits, y, label_smoothing=cfg.label_smoothing)
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
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
            stop = self._stop_requested(at_sync_point=self.step % cfg.log_every == 0)
            if self.step % cfg.log_every == 0 or stop:
                self._check_finite(since)  # the one host sync of the interval
                now = time.perf_counter()
                if not bar.disable:  # reading the loss is a second sync: only when someone watches the bar
                    bar.set_postfix(loss=f"{self._interval_loss(since):.3f}",
                                    img_s=f"{since * x.shape[0] * self.dist.world_size / (now - t_log):,.0f}")
                bar.update(since)
                since, t_log = 0, now
            if cfg.checkpoint_every and self.step % cfg.checkpoint_every == 0:
                self._check_finite(since)
                self._checkpoint("last.pt")
            if stop:
                raise Interrupted(self._stop_signal, self._resume_hint())
        self._check_finite(since)
        if self.dist.enabled and self._stop_requested(at_sync_point=True):  # came after the epoch's last sync point
            raise Interrupted(self._stop_signal, self._resume_hint())
        bar.update(since)
        bar.close()
        return self.epoch_metrics.compute()

    @torch.no_grad()
    def evaluate(self, loader: DeviceLoader | None = None) -> dict[str, float]:
        """Loss and accuracy on the test set (the book validates on it), with EMA weights and flip-TTA if set."""
        if self.ema is not None:  # each rank averaged its own BN statistics (DDP syncs the model's, not the EMA's)
            broadcast_buffers(self.ema.module, self.dist)
        plain = self.ema.module if self.ema is not None else self.model
        parts = [(loader or self.val_loader, self.ema.module if self.ema is not None else self.step_model)]
        if loader is None and self.val_rest is not None:  # rank 0 only, so on the unwrapped model: no collectives
            parts.append((self.val_rest, plain))
        metrics = EpochMetrics(self.device)
        for part, net in parts:
            net.eval()
            part.set_epoch(0)
            for x, y in part:
                x = x.contiguous(memory_format=self.memory_format)
                with torch.autocast(**self.autocast):
                    logits = net(x)
                    if self.config.tta:  # helps only after flip augmentation: shoes all face left (docs/benchmarks.md)
                        logits = (logits + net(x.flip(-1))) / 2
                metrics.update(F.cross_entropy(logits.float(), y), logits, y)
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

    def _end_of_epoch(self, row: dict[str, float], is_best: bool, tb) -> None:
        if tb is not None:
            for key in ("train_loss", "train_acc", "val_loss", "val_acc", "lr", "images_per_s"):
                tb.add_scalar(key, row[key], row["epoch"])
        # last.pt before metrics.csv: once metrics.csv shows an epoch, a kill at any later moment resumes after it
        self._checkpoint("last.pt")  # on every rank: a collective under torchrun
        if self.dist.is_main:
            rundir.write_metrics_csv(self.run_dir / "metrics.csv", self.history)
        if is_best:  # the same on every rank: val_acc is the global figure
            self._checkpoint("best.pt")
        self._log(f"epoch {row['epoch']}/{self.config.epochs}  train_loss {row['train_loss']:.4f}  "
                  f"train_acc {row['train_acc']:.4f}  val_loss {row['val_loss']:.4f}  val_acc {row['val_acc']:.4f}  "
                  f"{row['images_per_s']:,.0f} img/s  {row['seconds']:.1f}s")

    def _finish(self, wall: float, tb) -> list[dict[str, float]]:
        last = self.history[-1] if self.history else {}
        images = sum(r["images_per_s"] * r["seconds"] for r in self.history)
        result = {
            "model": self.config.model, "recipe": self.config.recipe, "epochs": len(self.history),
            "test_acc": last.get("val_acc"), "test_loss": last.get("val_loss"),
            "test_samples": self.val_loader.num_samples * self.dist.world_size
                            + (self.val_rest.num_samples if self.val_rest else 0),
            "best_val_acc": self.best_val_acc, "images_per_s": images / wall if wall else None, "wall_s": wall,
            "world_size": self.dist.world_size, "global_batch_size": self.config.batch_size * self.dist.world_size,
            "device": str(self.device), "params": self.params, "input_size": self.input_size,
            "seed": self.config.seed, "target_acc": self.config.target_acc,
            "time_to_target_s": self.target_reached and self.target_reached["seconds"],
            "target_epoch": self.target_reached and self.target_reached["epoch"],
        }
        if self.dist.is_main:
            rundir.write_json(self.run_dir / "result.json", result)
            if self.history:
                from cnnlab.report.curves import curves_figure

                rundir.save_figure(curves_figure(self.history, title=self.config.model), self.run_dir / "curves.png")
            if self.report:
                self._write_report()
        self._log(f"done: {self.config.model} test_acc {result['test_acc']:.4f} (best {self.best_val_acc:.4f}) in "
                  f"{wall:.1f}s, {result['images_per_s']:,.0f} img/s -> {self.run_dir}")
        return self.history

    def _write_report(self) -> None:
        try:
            from cnnlab.report import write_report

            write_report(self.run_dir, data_dir=self.config.data_dir, device=str(self.device))
        except Exception as e:  # the run's results are already safe on disk; say what failed and go on
            print(f"cnnlab: warning: report.html not written: {e}", file=sys.stderr)

    def _log(self, line: str) -> None:
        if not self.quiet and self.dist.is_main:
            print(line, flush=True)

    def _tensorboard(self):
        if not self.dist.is_main:
            return None
        from torch.utils.tensorboard import SummaryWriter

        return SummaryWriter(log_dir=str(self.run_dir / "tb"))

    def _config_record(self) -> dict[str, Any]:
        return {"config": asdict(self.config), "input_size": self.input_size, "normalize": self.normalize,
                "params": self.params, "world_size": self.dist.world_size,
                "environment": rundir.environment(self.device)}

    def _on_signal(self, signum: int) -> None:  # finish the current step, then checkpoint and stop (train_epoch)
        self._stop_signal = signum

    def _resume_hint(self) -> str:
        name = signal.Signals(self._stop_signal).name
        return (f"{name}: stopped at epoch {self.epoch + 1}, step {self.step}; checkpoint written. "
                f"Resume with: cnnlab train --resume {self.run_dir}")
