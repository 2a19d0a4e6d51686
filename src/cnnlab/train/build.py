"""Building a run from a config, once: :func:`build_run` turns a TrainConfig into the run's parts.

Training, resuming, the learning-rate range test, sweep trials and study variants all start here, so they agree
on the device, the dataset, the input size and preprocessing, the model and its wrappers, the loaders, the
optimizer and the schedule. A resume builds the same parts and puts the checkpoint back into them.
"""

from __future__ import annotations

import dataclasses
import math
import os
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.optim.swa_utils import AveragedModel

from cnnlab import inference
from cnnlab.data import (
    FOLDER_PREFIX,
    DeviceLoader,
    ImageDataset,
    Preprocess,
    balanced_class_weights,
    channel_stats,
    stratified_split,
)
from cnnlab.data.dataset import training_files_change
from cnnlab.data.duplicates import split_seen_in_training
from cnnlab.device import channels_last_pays, resolve_device, train_small_batch_norms_contiguous
from cnnlab.errors import CheckpointError, CnnlabError
from cnnlab.models import check_input_size, check_pretrained, create_model, min_input_size, model_info
from cnnlab.models.imagenet import BACKBONES, ensure_weights, pretrained_normalize, weights_enum
from cnnlab.models.init import init_cnn
from cnnlab.runs.checkpoint import refuse_another_kind
from cnnlab.train.config import TrainConfig
from cnnlab.train.distributed import DistEnv, broadcast_object, init_distributed, reduce_int
from cnnlab.train.finetune import TAKEN, Initialised, body_frozen, freeze_body, init_from, unfreeze
from cnnlab.train.metrics import EpochMetrics
from cnnlab.train.schedule import build_optimizer, build_scheduler
from cnnlab.train.state import TrainState, seed_all, set_rng_state


def default_input_size(model: str, dataset: ImageDataset) -> int:
    """The model's input side when ``--resize`` is not given.

    Models the book trains at Fashion-MNIST's own 28 px (LeNet, the compact nets) take any dataset at its stored
    size; models the book enlarges the images for (AlexNet and VGG at 224, the ch. 8 nets at 96) keep the book's
    size, which is what their strides are designed around.
    """
    book = model_info(model).input_size
    return book if book > 28 else dataset.image_size


@dataclass
class RunParts:
    """What a run is made of, built by :func:`build_run` and handed to the Trainer.

    Attributes:
        config: the run's TrainConfig.
        dataset: the data (training split, and the validation split when ``config.val_split`` is set or the data
            brings its own, :attr:`~cnnlab.data.ImageDataset.val_images`).
        device, dist: where it runs, and the torchrun environment.
        input_size: side of the model's input; ``normalize``: the [mean, std] per-channel lists, or None.
        preprocess: [0, 1] images -> the model's input (resize, normalisation), on the device.
        model: the plain model on the device; ``step_model`` what the steps call (DDP and/or compiled);
            ``ema``: the averaged copy evaluation uses, or None.
        memory_format: channels-last or contiguous, for the model and each batch.
        train_loader, val_loader, test_loader: the splits (``test_loader`` only with a validation split, and a test
            split: ``--test-split 0`` leaves none; ``val_loader`` None where nothing is held out, ``--test-split 0``
            without ``--val-split``);
            ``val_rest``/``test_rest``: on rank 0, the samples equal shards leave to no rank.
        optimizer, scheduler: per optimizer step; ``steps_per_epoch`` optimizer steps an epoch.
        autocast: ``torch.autocast`` arguments; ``tta``: flip-TTA at evaluation.
        epoch_metrics: the current epoch's running sums; ``state``: counters and history.
        class_weights: with ``--balance loss``, the training loss's per-class weights (on the device), else None.
        head: the layers trained as the head where that is more than the classifier's last layer (a head block
            ``--init-from`` started fresh: :func:`~cnnlab.train.finetune.head_parameters`), else (); every
            checkpoint records it, and a resume trains them so again.
    """

    config: TrainConfig
    dataset: ImageDataset
    device: torch.device
    dist: DistEnv
    input_size: int
    normalize: list[list[float]] | None
    preprocess: Preprocess
    model: nn.Module
    step_model: nn.Module
    ema: AveragedModel | None
    memory_format: torch.memory_format
    train_loader: DeviceLoader
    val_loader: DeviceLoader | None
    val_rest: DeviceLoader | None
    test_loader: DeviceLoader | None
    test_rest: DeviceLoader | None
    optimizer: torch.optim.Optimizer
    scheduler: Any
    steps_per_epoch: int
    autocast: dict[str, Any]
    tta: bool
    epoch_metrics: EpochMetrics
    state: TrainState = field(default_factory=TrainState)
    class_weights: torch.Tensor | None = None
    head: tuple[str, ...] = ()

    def record(self) -> dict[str, Any]:
        """What every checkpoint says of the run besides its weights (what inference needs to rebuild it)."""
        cfg, d = self.config, self.dataset
        dataset = {"name": d.name, "classes": list(d.classes), "channels": d.channels, "image_size": d.image_size,
                   "mean": list(d.mean), "std": list(d.std), "flip": d.flip}
        if d.held_out is not None:  # which test split the loader drew: eval, report and resume refuse another
            dataset["held_out"] = list(d.held_out)
        if d.training_files is not None:  # which files it trained on: resume refuses others
            dataset["training_files"] = list(d.training_files)
        if d.training_bytes is not None:  # and what they held: resume refuses other pictures of the same names
            dataset["training_bytes"] = d.training_bytes
        return {"model_name": cfg.model, "num_classes": d.num_classes, "in_channels": d.channels, "dataset": dataset,
                "input_size": self.input_size, "normalize": self.normalize, "ops": cfg.ops, "head": list(self.head),
                "config": asdict(cfg)}

    def enter_epoch(self, epoch: int) -> None:
        """Freeze or unfreeze the body for ``epoch`` (0-based) under ``--freeze-epochs``: the Trainer calls this as
        each epoch (or a resumed part of one) begins, so the unfreeze happens at an epoch boundary and depends on
        the epoch alone (a resume freezes exactly what the uninterrupted run froze; see
        :mod:`cnnlab.train.finetune` for the batch-norm policy)."""
        if not self.config.freeze_epochs:
            return
        frozen = body_frozen(False, self.config.freeze_epochs, epoch)
        if frozen == (not all(p.requires_grad for p in self.model.parameters())):
            return
        if frozen:
            freeze_body(self.model, self.head)
        else:
            unfreeze(self.model)
        if self.dist.enabled:  # DDP registers the parameters that require gradients when it wraps the model
            self.step_model = _wrap(self.model, self.config, self.device, self.dist)


def _check_init_from(path: Path) -> None:
    if path.is_dir():
        best = path / "best.pt"
        raise CnnlabError(f"--init-from {path} is a folder; expected a checkpoint or weights file"
                          + (f", such as {best}" if best.is_file() else ""))
    if not path.exists():
        raise CnnlabError(f"--init-from {path} does not exist; expected a checkpoint or weights file (a cnnlab run's "
                          "best.pt, a state dict's .pt or a .safetensors file)")
    refuse_another_kind(path, TAKEN)  # before the data: a folder of photos takes minutes to decode the first time


def build_run(config: TrainConfig, *, dataset: ImageDataset | None = None, model: nn.Module | None = None,
              resume_state: dict[str, Any] | None = None, source: str | Path = "the checkpoint",
              quiet: bool = False) -> RunParts:
    """The parts of the run ``config`` describes, ready for :class:`cnnlab.train.trainer.Trainer`.

    Every random stream is seeded with ``config.seed`` first, so the initial weights depend on it alone.

    Args:
        config: the run's settings.
        dataset: use this dataset instead of loading ``config.dataset``.
        model: use this freshly built model (for ``dataset``'s channels and classes) instead of building
            ``config.model``; it is neither initialised nor loaded from ``--init-from`` here.
        resume_state: a checkpoint of this run to continue from: its weights, optimizer, schedule, loader
            position, partial epoch sums, counters and random streams are put back (``source`` names it in
            errors).
        quiet: no notes on stdout.
    """
    model_info(config.model)  # an unknown model name is an instant error, before any data is read
    if config.pretrained:  # and so is --pretrained on a model without weights, or without its weights file
        check_pretrained(config.model)
        if resume_state is None and model is None:
            ensure_weights(weights_enum(config.model), config.model)
    if config.resize:  # so is an input size the model cannot take
        check_input_size(config.model, config.resize, config.channels or 1)
    if config.init_from and resume_state is None and model is None:  # and a weights file that is not there
        _check_init_from(Path(config.init_from))
    device = resolve_device(config.device)
    dist = init_distributed(device)
    _check_recipe_device(config, device, warn=dist.is_main)
    _set_determinism(config, device)
    seed_all(config.seed)
    if dataset is None:  # one process per machine fills the download (or decode) cache before the others read it
        dataset = _load_once_per_machine(config, dist, device, _decoded(resume_state))
    if config.test_split is not None and dataset.held_out is None:  # a split of its own: its makers' or a folder's
        own = "a test split of its own (test/, or a CSV's test rows)" if dataset.name.startswith(FOLDER_PREFIX) else \
            "its own test split"
        raise CnnlabError(f"{dataset.name} brings {own}; --test-split draws one out of a folder of images that has "
                          f"none: expected no --test-split, got {config.test_split}")
    if config.val_split is not None and dataset.val_images is not None:
        raise CnnlabError(f"{dataset.name} brings its own validation split (val/ beside train/ and test/, or "
                          f"a CSV's val rows beside its test rows); expected "
                          f"no --val-split, got {config.val_split}")
    if dataset.num_classes < 2:  # one class: every prediction is right and nothing is learnt
        raise CnnlabError(f"{dataset.name} has {dataset.num_classes} class ({', '.join(dataset.classes)}); a "
                          "classifier needs at least 2 (a folder dataset: one subfolder, or one label of its CSV, per "
                          "class)")
    if config.flip is not None and config.flip != dataset.flip:  # the run's own flip policy over the dataset's
        dataset = dataclasses.replace(dataset, flip=config.flip)
    split = None
    if config.val_split is not None:  # held out of the training set: tuning never looks at the test set
        split = stratified_split(dataset.train_labels, config.val_split, config.seed)
        dataset = _held_out_of_training(dataset, *split, resume_state)
    if dist.is_main and not quiet:
        for line in dataset.notices:
            print(f"note: {line}", flush=True)
        if config.tta and not dataset.flip:
            print(f"note: no flip-TTA in this run: {dataset.name} is not mirrored (a mirror is not of the same "
                  "class), and flip-TTA averages each test image with its mirror", flush=True)
    input_size = config.resize or default_input_size(config.model, dataset)
    if not config.resize or dataset.channels != (config.channels or 1):  # not checked above for these channels
        _check_dataset_size(config, dataset, input_size)
    note = dist.is_main and not quiet
    initialised, head = None, _recorded_head(resume_state, str(source))
    if model is None:
        start = int(resume_state.get("epoch", 0)) if resume_state is not None else 0
        model, initialised = _build_model(config, dataset, fine_tune=resume_state is None, note=note)
        head = initialised.head if initialised is not None else head
        if body_frozen(config.freeze, config.freeze_epochs, start):  # --freeze, or the first --freeze-epochs
            freeze_body(model, head)
    normalize = _normalize(config, dataset, resume_state, initialised, note)
    preprocess = Preprocess(input_size, *(normalize or (None, None))).to(device)
    loaders = _loaders(config, dataset, preprocess, device, dist, split)
    memory_format, step_model, ema = _place(model, config, device, dist)
    steps_per_epoch = math.ceil(len(loaders["train_loader"]) / config.accumulate)  # optimizer steps
    optimizer = build_optimizer(model, config, head)
    parts = RunParts(
        config=config, dataset=dataset, device=device, dist=dist, input_size=input_size, normalize=normalize,
        preprocess=preprocess, model=model, step_model=step_model, ema=ema, memory_format=memory_format, **loaders,
        optimizer=optimizer, scheduler=build_scheduler(optimizer, config, steps_per_epoch),
        steps_per_epoch=steps_per_epoch, autocast=dict(device_type=device.type, dtype=torch.bfloat16,
                                                       enabled=config.amp),
        tta=config.tta and dataset.flip,  # flip-TTA only where a mirror keeps the class (never digits)
        epoch_metrics=EpochMetrics(device), head=head)
    if resume_state is not None:
        _restore(parts, resume_state, str(source), quiet)
    return parts


def _recorded_head(resume_state: dict[str, Any] | None, source: str) -> tuple[str, ...]:
    """The layers a resumed run trains as its head, as its checkpoint records them (:meth:`RunParts.record`): resume
    does not read ``--init-from`` again. () for a new run, and for a run recorded before the checkpoint said (its
    classifier's last layer, as it trained then)."""
    head = (resume_state or {}).get("head") or []
    if not isinstance(head, list) or not all(isinstance(name, str) for name in head):
        raise CheckpointError(f"{source} records the layers trained as the head as {head!r}, expected a list of "
                              "layer names")
    return tuple(head)


def _decoded(resume_state: dict[str, Any] | None) -> tuple[int, int] | None:
    """The (image size, channels) a resumed run's images were decoded at, as its checkpoint records them (None for a
    new run): a folder is read at them (:func:`cnnlab.inference.dataset_args`), so that a run begun before a model's
    side raised the cap goes on with the images it began with."""
    recorded = (resume_state or {}).get("dataset") or {}
    return (recorded["image_size"], recorded["channels"]) if "image_size" in recorded and "channels" in recorded \
        else None


def _load_once_per_machine(config: TrainConfig, dist: DistEnv, device: torch.device,
                           decoded: tuple[int, int] | None = None) -> ImageDataset:
    """The run's dataset (a folder read at ``decoded``, a resumed run's sides), loaded by each machine's first
    process before the others read it from the cache; a refusal there (no data, a bad folder) ends every process with
    its line, not with a lost peer's error."""
    error = None
    if dist.local_rank == 0:
        try:
            dataset = inference.dataset_of(vars(config), decoded=decoded)
        except CnnlabError as e:
            error = e
    if reduce_int(int(error is not None), dist, device):  # every process waits here, as at a barrier
        message = broadcast_object(str(error) if error else None, dist)  # rank 0's line, when it was rank 0's
        raise error or CnnlabError(message or "another machine's first process could not load the dataset (its "
                                              "console says why)")
    return dataset if dist.local_rank == 0 else inference.dataset_of(vars(config), decoded=decoded)


def _check_dataset_size(config: TrainConfig, dataset: ImageDataset, input_size: int) -> None:
    """check_input_size for the size the dataset gives, naming the flag that changes it when it is the images'."""
    try:
        check_input_size(config.model, input_size, dataset.channels)
    except CnnlabError as e:
        if config.resize:
            raise
        fits = max(min_input_size(config.model, dataset.channels), model_info(config.model).input_size)
        folder = f", or --image-size {fits} to decode the folder at that size" \
            if dataset.name.startswith(FOLDER_PREFIX) else ""
        raise CnnlabError(f"{e} (the images of {dataset.name} are {dataset.image_size} px); pass --resize {fits} to "
                          f"enlarge them on the device{folder}") from None


def _check_recipe_device(config: TrainConfig, device: torch.device, warn: bool) -> None:
    """The speedrun recipe (bf16 autocast, torch.compile, batch 512) is made for a CUDA GPU; on a CPU it crawls
    where the fast and cpu10 recipes are made for it. So where ``--device auto`` found no CUDA device it is
    refused, naming those; an explicit other device runs it after one warning (on rank 0 when ``warn``)."""
    if config.recipe != "speedrun" or device.type == "cuda":
        return
    if config.device == "auto":
        raise CnnlabError(f"the speedrun recipe is made for a CUDA GPU (bf16 autocast, torch.compile, batch 512) and "
                          f"torch sees none here, so it would run on the {device.type}: expected --recipe fast or "
                          f"cpu10 there (or --device {device.type} to run speedrun on it anyway)")
    if warn:
        print(f"cnnlab: warning: the speedrun recipe is made for a CUDA GPU (bf16 autocast, torch.compile); on the "
              f"{device.type} it is far slower than --recipe fast or cpu10, which are made for a CPU",
              file=sys.stderr, flush=True)


def _set_determinism(config: TrainConfig, device: torch.device) -> None:
    """Kernel choices (the seeding comes after, before the model is built)."""
    if config.deterministic:
        # torch has no deterministic CUDA kernel for a few ops, among them adaptive average pooling's backward, which
        # most of chapter 8's models use: strict mode stopped their training at the first step. On CUDA each such op
        # runs after torch's one warning naming it; on a CPU the ops of cnnlab's models all have one: strict stays.
        torch.use_deterministic_algorithms(True, warn_only=device.type == "cuda")
        torch.backends.cudnn.benchmark = False
        if device.type == "cuda":  # cuBLAS needs a fixed workspace to be deterministic
            os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    elif device.type == "cuda":
        torch.backends.cudnn.benchmark = True
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True


def _normalize(config: TrainConfig, dataset: ImageDataset, resume_state: dict[str, Any] | None,
               initialised: Initialised | None, note: bool) -> list[list[float]] | None:
    """The [mean, std] per channel the model's input gets, or None for [0, 1] pixels: the input the starting
    weights were trained on (:mod:`cnnlab.train.finetune`), else the dataset's statistics under ``--normalize``."""
    own = [list(dataset.mean), list(dataset.std)] if config.normalize else None
    if resume_state is not None and "normalize" in resume_state:
        return resume_state["normalize"]  # the run's own record: what it started with (the data may have changed)
    if config.pretrained:  # the ImageNet weights' own mean and std (torchvision's metadata)
        return pretrained_normalize(config.model, dataset.channels)
    if not config.init_from:
        return own
    if initialised is None:  # a model handed in is not loaded from --init-from
        return own
    if not initialised.recorded:  # a state dict from elsewhere: a torchvision backbone's weights expect ImageNet's
        if config.model not in BACKBONES:
            return own
        theirs = pretrained_normalize(config.model, dataset.channels)
        source = f"normalised with the ImageNet weights' {_describe(theirs)} (a state dict records no input, and " \
                 f"{config.model}'s weights are trained on that one)"
    else:
        theirs = initialised.normalize
        source = f"normalised with the {_describe(theirs)} that the {initialised.said_by} says" \
            if initialised.said_by else f"normalised with the --init-from run's {_describe(theirs)}" if theirs else \
            "left as [0, 1] pixels, as the --init-from run had them"
        source += " (its weights were trained on that input)"
    if note and theirs != own:
        instead = f"this dataset's {_describe(own)} that --normalize asks for" if own else "raw [0, 1] pixels"
        print(f"note: inputs {source}, not {instead}", flush=True)
    return theirs


def _describe(normalize: list[list[float]]) -> str:
    mean, std = (", ".join(f"{v:.3g}" for v in values) for values in normalize)
    return f"mean {mean}, std {std}"


def _build_model(config: TrainConfig, dataset: ImageDataset, *, fine_tune: bool,
                 note: bool) -> tuple[nn.Module, Initialised | None]:
    """``config.model`` for the dataset's channels and classes, initialised; with ``--pretrained`` its ImageNet
    weights or with ``--init-from`` another run's (neither on a resume: last.pt holds the fine-tuned weights
    already). Also what ``--init-from`` did, when it did."""
    pretrained = config.pretrained and fine_tune
    model = create_model(config.model, num_classes=dataset.num_classes, in_channels=dataset.channels, ops=config.ops,
                         pretrained=pretrained)
    if config.init == "xavier" and not pretrained:  # pretrained: only the new head is fresh (torch's init)
        model.apply(init_cnn)
    initialised = None
    if config.init_from and fine_tune:
        backbone = BACKBONES.get(config.model)  # an ImageNet backbone: timm's config.json must name its network
        initialised = init_from(model, config.init_from, dataset.classes, dataset.channels,
                                backbone.builder if backbone else None)
        if note:
            print(initialised.line, flush=True)
        if note and initialised.head and (config.freeze or config.freeze_epochs):
            print(f"note: trained as the head: {', '.join(initialised.head)} (the head block, new as the file has "
                  f"none of it), not only the last layer", flush=True)
    return model, initialised


def _held_out_of_training(dataset: ImageDataset, train_idx: torch.Tensor, val_idx: torch.Tensor,
                          resume_state: dict[str, Any] | None) -> ImageDataset:
    """``dataset`` as a ``--val-split`` run sees it: with the statistics of the training part alone (what the model
    is fit on; ``--normalize`` and the run's record take them), and a notice of the validation images that are
    pixel for pixel training images, as a folder's test split has.

    A resume keeps the statistics its checkpoint records: a run started before they left the validation images out
    recorded those of all the training images, and its inputs are normalised with them to the end.
    """
    recorded = (resume_state or {}).get("dataset") or {}
    if resume_state is not None and all(len(recorded.get(k) or ()) == dataset.channels for k in ("mean", "std")):
        mean, std = tuple(recorded["mean"]), tuple(recorded["std"])
    else:
        mean, std = channel_stats(dataset.train_images, train_idx)
    seen = split_seen_in_training(dataset.train_images, train_idx, val_idx, "validation", dataset.train_digests,
                                  dataset.files_of("train"))
    return dataclasses.replace(dataset, mean=mean, std=std, notices=dataset.notices + ((seen,) if seen else ()))


def _loaders(config: TrainConfig, dataset: ImageDataset, preprocess: Preprocess, device: torch.device,
             dist: DistEnv, split: tuple[torch.Tensor, torch.Tensor] | None) -> dict[str, Any]:
    """The training loader and the evaluation ones, uint8 on the device once, resized, normalised and augmented per
    batch (docs/design.md, "Data"); and the training loss's class weights under ``--balance loss`` (else None).
    ``split``: the (training, validation) indices of a ``--val-split`` into the training images, else None."""
    shard = dict(device=device, rank=dist.rank, world_size=dist.world_size)
    train_idx = None
    apart = split is not None or dataset.val_images is not None  # validation apart from the test set
    if split is not None:
        train_idx, val_idx = split
        val = (dataset.train_images, dataset.train_labels, val_idx)  # index views: no copy of the images
    elif dataset.val_images is not None:  # the data's own validation split (a folder's val/)
        val = (dataset.val_images, dataset.val_labels, None)
    else:  # the book validates on the test set (d2l 7.6)
        val = (dataset.test_images, dataset.test_labels, None)
    class_weights = None
    if config.balance != "none":  # a class without training images has no weight: refused by name, up front
        labels = dataset.train_labels if train_idx is None else dataset.train_labels[train_idx]
        class_weights = balanced_class_weights(labels, dataset.num_classes, dataset.classes)
    # A last batch of one image would fail every BatchNorm1d in training mode (the variance of one value), so it is
    # left out of its epoch: another image each epoch, as the order is shuffled.
    per_rank = len(dataset.train_labels if train_idx is None else train_idx) // dist.world_size
    if config.batch_size == 1 or per_rank == 1:  # then every batch is one image: nothing left to leave out
        _check_batches_of_one(config, dataset, preprocess.input_size, dist.world_size)
    train = DeviceLoader(dataset.train_images, dataset.train_labels, config.batch_size, shuffle=True,
                         preprocess=preprocess, augment=config.augment, flip=dataset.flip, seed=config.seed,
                         limit_batches=config.limit_train_batches, indices=train_idx, mixup=config.mixup,
                         cutmix=config.cutmix, num_classes=dataset.num_classes,
                         balance=config.balance == "sampler",
                         drop_last=per_rank > config.batch_size and per_rank % config.batch_size == 1, **shard)
    # --test-split 0 without --val-split: every labelled image trains, none is left to evaluate on
    val_loader, val_rest = (None, None) if config.holds_out_nothing else \
        _eval_loaders(config, preprocess, dist, *val, shard)
    test_loader, test_rest = (_eval_loaders(config, preprocess, dist, dataset.test_images, dataset.test_labels,
                                            None, shard) if apart and len(dataset.test_labels) else (None, None))
    # --balance loss: scikit-learn's "balanced" weights of the training split weigh the training loss (the
    # validation loss stays unweighted, comparable between runs).
    loss_weights = class_weights.float().to(device) if config.balance == "loss" else None
    return dict(train_loader=train, val_loader=val_loader, val_rest=val_rest, test_loader=test_loader,
                test_rest=test_rest, class_weights=loss_weights)


def _check_batches_of_one(config: TrainConfig, dataset: ImageDataset, input_size: int, world_size: int) -> None:
    """Refuse training batches of one image for a model whose batch norm sees one value per channel then (a
    BatchNorm1d, or a BatchNorm2d on a 1 x 1 map), which torch fails at the first step. The model is tried on the
    meta device, so nothing is computed."""
    with torch.device("meta"):
        probe = create_model(config.model, num_classes=dataset.num_classes, in_channels=dataset.channels,
                             ops=config.ops)
    try:
        probe.train()(torch.empty(1, dataset.channels, input_size, input_size, device="meta"))
    except ValueError:  # torch's "Expected more than 1 value per channel when training"
        given = "--batch-size 1" if config.batch_size == 1 else \
            f"a training split of one image{f' per process ({world_size} processes)' if world_size > 1 else ''}"
        raise CnnlabError(f"{config.model} normalises over each training batch (batch norm) and cannot train on "
                          f"batches of one image: expected at least 2 images per batch, got {given}") from None


def _eval_loaders(config: TrainConfig, preprocess: Preprocess, dist: DistEnv, images: torch.Tensor,
                  labels: torch.Tensor, indices: torch.Tensor | None, shard: dict[str, Any]):
    """A sharded evaluation loader over ``images[indices]``, and on rank 0 one for the samples equal shards leave
    to no rank: the last len % world_size (DistributedSampler pads with repeats instead), so the split is covered
    exactly."""
    loader = DeviceLoader(images, labels, config.batch_size, shuffle=False, preprocess=preprocess,
                          limit_batches=config.limit_val_batches, indices=indices, **shard)
    covered, rest = loader.shard_size * dist.world_size, None
    if dist.is_main and covered < loader.num_items and config.limit_val_batches is None:
        left = (indices if indices is not None else torch.arange(len(labels)))[covered:]
        rest = DeviceLoader(images, labels, config.batch_size, preprocess=preprocess, device=shard["device"],
                            indices=left)
    return loader, rest


def _place(model: nn.Module, config: TrainConfig, device: torch.device, dist: DistEnv):
    """Move ``model`` to the device in its memory format and wrap it: SyncBN, DDP, compile, EMA.

    Returns:
        (memory_format, the module the steps call, the EMA copy or None)
    """
    if config.sync_bn and dist.enabled:  # before DDP wraps the model, as the SyncBatchNorm docs require
        if device.type != "cuda" or config.ops != "torch":
            raise CnnlabError(f"--sync-bn needs CUDA devices and --ops torch (SyncBatchNorm has no CPU kernel, "
                              f"cnnlab's BatchNorm no synced twin), got device {device.type}, --ops {config.ops}")
        model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
    # Channels-last by default where torch's conv kernels are fastest with it (channels_last_pays); cnnlab's own
    # ops are written for contiguous tensors.
    channels_last = config.channels_last
    if channels_last is None:
        channels_last = config.ops == "torch" and channels_last_pays(device)
    memory_format = torch.channels_last if channels_last else torch.contiguous_format
    model.to(device, memory_format=memory_format)
    if channels_last and device.type == "cpu":
        train_small_batch_norms_contiguous(model)  # for the run's lifetime: the model is the run's own
    step_model = _wrap(model, config, device, dist)
    ema = averaged_model(model, config.ema) if config.ema else None
    return memory_format, step_model, ema


def averaged_model(model: nn.Module, decay: float) -> AveragedModel:
    """An exponential moving average of ``model``'s weights and buffers whose decay warms up as TensorFlow's
    ExponentialMovingAverage(num_updates) does: ``min(decay, (1 + n) / (10 + n))`` for the update after ``n``.

    A fixed 0.999 keeps 0.999^n of the random initial weights: 79% after a 235-step epoch. The best recipe's
    averaged ResNet-18 evaluated at chance (0.10) for its first three epochs on a GPU while the trained weights were
    at 0.81-0.91 on the training images; early stopping and --target-acc judge that averaged model. With the
    warm-up the average spans the last few dozen steps at first and reaches ``decay`` after ``9 / (1 - decay)``
    updates (9,000 for 0.999).

    Each update is one fused lerp, as torch's own EMA is. Its decay is a host number made from the update count that
    AveragedModel keeps on the CPU; the copy of it that the update is handed lives on the parameters' device, where
    reading it would wait for the GPU.
    """
    ema = AveragedModel(model, use_buffers=True)

    @torch.no_grad()
    def update(averaged: list[torch.Tensor], current: list[torch.Tensor], _: torch.Tensor) -> None:
        n = int(ema.n_averaged)
        if averaged[0].is_floating_point():
            torch._foreach_lerp_(averaged, current, 1 - min(decay, (1 + n) / (10 + n)))
        else:  # a batch norm's step count: the trained model's own
            for a, c in zip(averaged, current, strict=True):
                a.copy_(c)

    ema.multi_avg_fn = update
    return ema


def _wrap(model: nn.Module, config: TrainConfig, device: torch.device, dist: DistEnv) -> nn.Module:
    """What the steps call: ``model`` under DDP and/or torch.compile."""
    step_model: nn.Module = model
    if dist.enabled:
        ids = [device.index] if device.type == "cuda" else None
        step_model = nn.parallel.DistributedDataParallel(model, device_ids=ids)
    if config.compile:
        step_model = torch.compile(step_model)
    return step_model


def _check_same_training_files(recorded: dict[str, Any], dataset: ImageDataset) -> None:
    """Refuse to resume on a folder whose training files are not the ones the run started on, or hold other
    pictures: its epochs would continue on other images, under a schedule planned for the old count. The files are
    named relative to the folder, which may have moved (``--resume --data-dir``); a run from before the contents were
    recorded, or a dataset without their hash (a cache entry from before them that skipped unreadable training
    files), is held to the names alone."""
    then, now = recorded.get("training_files"), dataset.training_files
    if not then or now is None:
        return
    change = training_files_change(then, now)
    if not change and None not in (recorded.get("training_bytes"), dataset.training_bytes) and \
            recorded["training_bytes"] != dataset.training_bytes:
        change = f"the same {now[0]} files, but the contents of some are not what they were"
    if not change:
        return
    raise CnnlabError(f"the training images of {dataset.name} changed since the run started ({change}); put the "
                      f"folder back as it was to resume, or train a new run on the folder as it is")


def _restore(parts: RunParts, state: dict[str, Any], source: str, quiet: bool) -> None:
    """Put a checkpoint of this run back into its freshly built parts; the random streams last, so that nothing
    built after them draws from them."""
    saved = state.get("world_size", 1)
    if saved != parts.dist.world_size:  # the data shards, the global batch and the lr all depend on it
        raise CnnlabError(f"this run was trained by {saved} process(es) and must resume with as many (torchrun "
                          f"--nnodes x --nproc-per-node), got {parts.dist.world_size}")
    classes = (state.get("dataset") or {}).get("classes")
    if classes is not None and list(classes) != list(parts.dataset.classes):
        raise CnnlabError(f"{source} was trained on {len(classes)} classes of {state['dataset']['name']}, not the "
                          f"{parts.dataset.num_classes} of {parts.dataset.name}: resume it with its own dataset")
    # a run that held out nothing is held to its training files below, with words for them, not a validation split's
    inference.check_same_test_split(state.get("dataset") or {}, parts.dataset,
                                    validated=not parts.config.holds_out_nothing)
    _check_same_training_files(state.get("dataset") or {}, parts.dataset)
    try:
        parts.model.load_state_dict(state["model"])
        parts.optimizer.load_state_dict(state["optimizer"])
        parts.scheduler.load_state_dict(state["scheduler"])
        if parts.ema is not None and "ema" in state:
            parts.ema.module.load_state_dict(state["ema"])
            parts.ema.n_averaged.fill_(state["ema_n"])
        parts.train_loader.load_state_dict(state["loader"])
        if parts.dist.is_main:  # the saved sums are global: one rank carries them, compute() adds the others' new ones
            parts.epoch_metrics.load_state_dict(state["epoch_metrics"])
        parts.state = TrainState.from_checkpoint(state)
        set_rng_state(state["rng"])
    except CnnlabError:
        raise
    except (KeyError, TypeError, ValueError, RuntimeError) as e:  # not a checkpoint this trainer wrote
        what = f"lacks the entry {e.args[0]!r}" if isinstance(e, KeyError) else " ".join(str(e).split())
        raise CheckpointError(f"{source} does not fit this run: {what[:200]}") from None
    threads = state.get("torch_threads")
    if parts.config.deterministic and threads and threads != torch.get_num_threads():
        # CPU kernels split their reductions by thread, so another thread count rounds differently and the resumed
        # run drifts from the uninterrupted one; use the count the run started with.
        if parts.dist.is_main and not quiet:
            print(f"note: using {threads} intra-op threads as the run did before (not {torch.get_num_threads()}), "
                  "so the deterministic resume is exact", flush=True)
        torch.set_num_threads(threads)
