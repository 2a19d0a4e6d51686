"""Training configuration as data: one dataclass, named recipes, and the merge rule between them.

Precedence, lowest to highest: dataclass defaults < the model's registry defaults (book lr, input size) <
the recipe < flags the user gave explicitly.
"""

from __future__ import annotations

import dataclasses
import os
import typing
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from cnnlab.checks import (
    FLOAT32_MAX,
    LR_EXPECTED,
    fail,
    int_at_least,
    int_in_range,
    is_int,
    is_number,
    number,
    positive_int,
)
from cnnlab.data import FOLDER_PREFIX, holds_out_nothing
from cnnlab.errors import CnnlabError

CHOICES: dict[str, tuple[str, ...]] = {
    "recipe": ("book", "fast", "cpu10", "speedrun", "best", "finetune"),
    "optimizer": ("sgd", "nesterov", "adamw", "adam", "rmsprop"),
    "schedule": ("constant", "cosine", "onecycle", "step", "multistep"),
    "init": ("xavier", "default"),
    "ops": ("torch", "scratch"),
    "balance": ("none", "sampler", "loss"),
    "best_by": ("accuracy", "balanced-accuracy"),
}
# The --augment presets, as cnnlab.data.transforms.AUGMENTS names them (kept here torch-free for the CLI's flags).
AUGMENTS = ("none", "crop-flip", "trivial", "randaugment", "autoaugment")


def augment_name(value: Any) -> Any:
    """An ``augment`` setting as a preset's name: the old switch (a config file's, an older run's config.json)
    true is crop-flip and false none; anything else as given (validation judges it)."""
    return (AUGMENTS[1] if value else AUGMENTS[0]) if isinstance(value, bool) else value
# Strings a config file may hold where it meant the old augment switch (true/false): refused as such.
_SWITCH_WORDS = ("true", "false", "yes", "no", "on", "off", "1", "0")
# How a field's type is named in the line refusing a value of another type.
_EXPECTED = {int: "an integer", float: "a number", bool: "true or false", str: "a string"}
# Switches whose None means "not set: the device's or the dataset's own default".
_UNSET_SWITCHES = ("channels_last", "flip")


# What a run recorded before a setting existed did, where today's default differs: every run judged its best epoch
# by accuracy before --best-by made the balanced accuracy --balance's default. Resume and compare read them so.
BEFORE_THE_SETTING = {"best_by": "accuracy"}


# The epoch history's key of each figure --best-by can judge, and how lines name it (a run's, a sweep's, a study's).
JUDGED = {"accuracy": ("val_acc", "accuracy"), "balanced-accuracy": ("val_bal_acc", "balanced accuracy")}


def check_ranked_on_held_out(settings: Mapping[str, Any], what: str) -> None:
    """Refuse, in one line, a sweep or study (``what`` ranks its runs by a validation figure) whose runs' ``settings``
    hold out nothing (:func:`cnnlab.data.holds_out_nothing`): there is no such figure to rank them by."""
    if holds_out_nothing(settings):
        raise CnnlabError(f"{what} ranks its runs by a validation figure, and --test-split 0 without --val-split holds "
                          "out no image to measure one: expected --val-split too (e.g. 0.1 or 5000)")


def default_best_by(balance: Any) -> str:
    """What picks the best epoch when ``best_by`` is not given: the balanced accuracy where the run was asked to
    weigh the classes alike (``--balance sampler|loss``), which plain accuracy would undo by picking the epoch that
    favours the largest class; the accuracy otherwise."""
    return CHOICES["best_by"][0] if balance == "none" else CHOICES["best_by"][1]


def _f(default: Any, help: str) -> Any:
    return field(default=default, metadata={"help": help})


@dataclass(frozen=True)
class TrainConfig:
    """Everything that decides a training run. ``None`` means "the model's or recipe's default".

    A config is checked where it is made (``__post_init__``, so ``dataclasses.replace`` checks too): a TrainConfig
    that exists is a valid one.
    """

    model: str = _f("lenet", "registered model name (see `cnnlab models`, and `cnnlab models --pretrained` for the "
                             "ImageNet backbones)")
    dataset: str = _f("fashion-mnist", "dataset name (see `cnnlab datasets`) or folder:PATH for your own images "
                                       "(PATH/<class>/*, or PATH/train/<class> and PATH/test/<class>; or "
                                       "labelled by PATH/labels.csv or PATH/metadata.csv, or by the CSV "
                                       "folder:PATH/NAME.csv names)")
    recipe: str = _f("book", "named set of defaults: book (the book exactly), fast, cpu10 (the compact model: "
                                   "best accuracy in 10 CPU minutes), speedrun (GPU), best, finetune (from "
                                   "trained weights: the body frozen for --freeze-epochs, then all layers with a "
                                   "lower lr for the body)")
    epochs: int = _f(10, "passes over the training set")
    time_budget: float | None = _f(None, "the run's length in wall seconds of fitting instead of --epochs: the "
                                         "schedule is planned by the measured speed to end, final evaluation "
                                         "included, within it (the fast and cpu10 recipes' default: 60 and 600)")
    batch_size: int = _f(128, "samples per step, per process (the global batch is batch_size x world_size)")
    lr: float | None = _f(None, "peak learning rate (default: the model's book lr for the book recipe)")
    optimizer: str = _f("sgd", "sgd | nesterov | adamw | adam | rmsprop")
    momentum: float = _f(0.0, "SGD's and RMSprop's momentum")
    weight_decay: float = _f(0.0, "L2 (SGD) or decoupled (AdamW) weight decay")
    schedule: str = _f("constant", "constant | cosine | onecycle | step | multistep")
    warmup: float = _f(0.0, "linear warm-up length in epochs (constant, cosine, step and multistep schedules; "
                                  "onecycle: where it peaks)")
    step_size: int | None = _f(None, "step schedule: epochs between learning-rate decays")
    gamma: float = _f(0.1, "step/multistep schedules: the factor of each learning-rate decay")
    milestones: str | None = _f(None, "multistep schedule: comma-separated epochs at which the lr decays, e.g. 30,60")
    label_smoothing: float = _f(0.0, "label smoothing of the cross-entropy loss")
    grad_clip: float = _f(0.0, "clip the gradient norm to this value (0: off)")
    resize: int | None = _f(None, "input side in pixels (default: the model's input size)")
    image_size: int | None = _f(None, "folder datasets: the side the images are decoded to once (then cached); "
                                      "default: their median shorter side, up to 224 (the input side, --resize "
                                      "or the model's, if larger)")
    channels: int | None = _f(None, "folder datasets: 1 (grey) or 3 (RGB); default: as the images are")
    skip_bad_images: bool = _f(False, "folder datasets: skip unreadable image files (counted) instead of refusing")
    val_split: float | None = _f(None, "hold out this fraction (< 1) or number (>= 1) of training images, "
                                       "stratified and seeded, for validation; default: validate on the test set "
                                       "as the book does")
    test_split: float | None = _f(None, "folder datasets without a test/ folder or test rows: hold out this fraction "
                                        "(< 1) or number (>= 1) of the images as the test split, stratified and "
                                        "seeded (default: 1/6); 0: none, every image trains or validates (with "
                                        "--val-split), as for a contest that scores on its own unlabelled test/; "
                                        "without --val-split nothing is held out (a final refit on every image: "
                                        "nothing is evaluated, best.pt is the last epoch's)")
    normalize: bool = _f(False, "normalise inputs with the training set's mean and std")
    # bool | str: the old switch (true: crop-flip, false: none; config.json and checkpoints of older runs hold it) is
    # converted where the config is made, so the value is always a preset name; bool first keeps field_types() and
    # the tools typed by it (sweep's choice:true,false) as they were.
    augment: bool | str = _f("none", "per-image augmentation on the device: none | crop-flip (random crop with "
                                     "padding 2 and horizontal flip) | trivial | randaugment | autoaugment "
                                     "(torchvision's policy after crop-flip); --augment alone: crop-flip")
    mixup: float = _f(0.0, "MixUp's Beta(alpha, alpha) parameter in [0, 1] (0: off): soft targets; the train "
                           "accuracy then counts the larger of each image's two labels")
    cutmix: float = _f(0.0, "CutMix's Beta(alpha, alpha) parameter in [0, 1] (0: off); with --mixup, each batch "
                            "uses one of the two")
    balance: str = _f("none", "unbalanced classes: none | sampler (class-balanced sampling with replacement) | "
                              "loss (cross-entropy weighted by n / (classes x class count))")
    ema: float = _f(0.0, "decay of an exponential moving average of the weights used for evaluation (0: off)")
    tta: bool = _f(False, "test-time augmentation: average the logits of the image and its mirror")
    flip: bool | None = _f(None, "override the dataset's flip policy: --no-flip never mirrors in augmentation or "
                                 "TTA (digits, text in a folder dataset), --flip always may; default: the dataset's "
                                 "own (`cnnlab datasets`; folders: flip)")
    amp: bool = _f(False, "bf16 autocast (CUDA and CPU)")
    channels_last: bool | None = _f(None, "channels-last memory format (default: on for torch ops on CPU/CUDA)")
    compile: bool = _f(False, "torch.compile the model")
    best_by: str | None = _f(None, "the validation figure that picks the best epoch (best.pt) and that --early-stop "
                                   "and --target-acc judge: accuracy | balanced-accuracy (the mean of the classes' "
                                   "recalls, scikit-learn's balanced_accuracy_score); default: balanced-accuracy "
                                   "with --balance sampler or loss, accuracy otherwise")
    target_acc: float | None = _f(None, "stop once the validation figure --best-by names (accuracy or balanced "
                                        "accuracy; the test set's without --val-split) reaches this; result.json "
                                        "records when (time-to-accuracy)")
    early_stop: int = _f(0, "stop when the validation figure --best-by names has not improved for this many epochs "
                            "(0: off)")
    accumulate: int = _f(1, "batches whose gradients are summed before each optimizer step")
    init_from: str | None = _f(None, "start from the weights of another run's checkpoint (a new classifier head "
                                     "when the classes differ: fine-tuning, d2l 14.2), or of a state dict of the "
                                     "model's network saved elsewhere (torch.save(model.state_dict(), FILE), or "
                                     "a .safetensors file)")
    freeze: bool = _f(False, "with --init-from or --pretrained: train only the classifier's last layer (its "
                             "whole head block where --init-from starts that fresh)")
    pretrained: bool = _f(False, "start from the model's ImageNet weights (see `cnnlab models --pretrained`; read "
                                 "from $TORCH_HOME/hub/checkpoints), with a new head and their own normalisation")
    freeze_epochs: int = _f(0, "train only the classifier's last layer (as --freeze says) for the first N epochs, "
                               "then all layers (the body at 1/10 of the lr); the finetune recipe's default is 1")
    init: str = _f("xavier", "xavier (the book's init_cnn) | default (torch's)")
    ops: str = _f("torch", "torch | scratch: build the model on cnnlab's own ops")
    sync_bn: bool = _f(False, "SyncBatchNorm across processes under torchrun")
    seed: int = _f(0, "seed of the weights, the data order and the augmentation")
    deterministic: bool = _f(False, "deterministic algorithms (bitwise-reproducible on CPU; on CUDA, torch warns of "
                                    "each op that has no deterministic kernel there)")
    device: str = _f("auto", "auto | cpu | cuda | cuda:N | mps")
    limit_train_batches: int | None = _f(None, "train on at most this many batches per epoch")
    limit_val_batches: int | None = _f(None, "validate, and test at the end, on at most this many batches (a quick "
                                                   "check; result.json's test_samples says how many)")
    checkpoint_every: int = _f(0, "also write last.pt every N steps (0: only at the end of each epoch)")
    log_every: int = _f(50, "steps between host syncs for the progress bar")
    data_dir: str | None = _f(None, "the dataset's folder (default for fashion-mnist: $CNNLAB_DATA, then "
                                    "~/.cache/cnnlab/fashion-mnist; other datasets: ~/.cache/cnnlab/<name>)")
    out: str | None = _f(None, "run folder (default: runs/<time>-<model>)")

    def __post_init__(self) -> None:
        object.__setattr__(self, "augment", augment_name(self.augment))
        if self.best_by is None:  # resolved once, here: config.json records it, so a resume judges as the run began
            object.__setattr__(self, "best_by", default_best_by(self.balance))
        self.validate()
        # Absolute: eval, report and resume read the run's data from any working folder, and its config.json, given
        # to --config from another folder, trains on the same images (a relative folder: read those of that folder)
        if self.data_dir:
            object.__setattr__(self, "data_dir", os.path.abspath(os.path.expanduser(self.data_dir)))
        folder = self.dataset[len(FOLDER_PREFIX):] if self.dataset.startswith(FOLDER_PREFIX) else ""
        if folder:
            object.__setattr__(self, "dataset", FOLDER_PREFIX + os.path.abspath(os.path.expanduser(folder)))

    @property
    def holds_out_nothing(self) -> bool:
        """``--test-split 0`` without ``--val-split``: every labelled image trains (a final refit on all of them, as
        a contest's last run is), and no figure of images the model never saw is measured
        (:func:`cnnlab.data.holds_out_nothing`)."""
        return holds_out_nothing(vars(self))

    def _check_nothing_held_out(self) -> None:
        """Refuse what judges a held-out figure in a run that holds out nothing (:attr:`holds_out_nothing`)."""
        judges = [f"--early-stop {self.early_stop}" if self.early_stop else "",
                  f"--target-acc {self.target_acc}" if self.target_acc is not None else "",
                  f"--best-by {self.best_by}" if self.best_by != default_best_by(self.balance) else ""]
        given = [flag for flag in judges if flag]
        if given:
            raise CnnlabError(f"--test-split 0 without --val-split holds out no image, so there is no validation "
                              f"figure for {' and '.join(given)} to judge (best.pt is the last epoch's): expected "
                              f"--val-split too (e.g. --val-split 0.1), or none of them")

    def validate(self) -> TrainConfig:
        """Check types, ranges and combinations; raise a one-line CnnlabError on the first problem."""
        for name, choices in CHOICES.items():
            if getattr(self, name) not in choices:
                raise CnnlabError(f"{name} must be one of {', '.join(choices)}; got {getattr(self, name)!r}")
        for name in ("epochs", "batch_size", "log_every", "accumulate"):
            positive_int(getattr(self, name), name.replace("_", "-"))
        for name in ("limit_train_batches", "limit_val_batches", "resize", "image_size"):
            if getattr(self, name) is not None:
                positive_int(getattr(self, name), name.replace("_", "-"))
        if self.time_budget is not None:
            number(self.time_budget, "time-budget", low=0, low_open=True, expected="a positive number of seconds")
        for name in ("checkpoint_every", "early_stop", "freeze_epochs"):
            int_at_least(getattr(self, name), name.replace("_", "-"), 0)
        if self.channels is not None and (not is_int(self.channels) or self.channels not in (1, 3)):  # True == 1
            raise CnnlabError(f"channels must be 1 (grey) or 3 (RGB), got {self.channels!r}")
        _check_share("val-split", self.val_split)
        _check_share("test-split", self.test_split, zero=True)
        if self.augment not in AUGMENTS:
            if isinstance(self.augment, str) and self.augment.lower() in _SWITCH_WORDS:  # "false" in a JSON file
                raise CnnlabError(f"augment must be true or false, got {self.augment!r} (a string), or one of the "
                                  f"presets {', '.join(AUGMENTS)}")
            fail("augment", f"one of {', '.join(AUGMENTS)} (or true or false)", self.augment)
        # A switch is a bool and a name a string: a config file's "augment": "false" is a string, and truthy.
        for name, kind in field_types().items():
            if name == "augment":  # a preset name by now (checked above)
                continue
            value = getattr(self, name)
            if kind is bool and not isinstance(value, bool) and not (value is None and name in _UNSET_SWITCHES):
                fail(name.replace("_", "-"), "true or false", value)
            if kind is str and value is not None and not isinstance(value, str):
                fail(name.replace("_", "-"), "a string", value)
        from cnnlab.device import check_device_name  # torch: the CLI builds its flags from this module torch-free

        check_device_name(self.device)  # auto, cpu, mps, cuda or cuda:N (a pattern, not a list of choices)
        check_schedule(self)
        if self.freeze and not (self.init_from or self.pretrained):
            raise CnnlabError("--freeze needs --init-from CHECKPOINT or --pretrained (there is nothing to freeze in a "
                              "fresh model)")
        if self.freeze_epochs > self.epochs:
            raise CnnlabError(f"--freeze-epochs must be at most --epochs ({self.epochs}): the body is frozen for the "
                              f"first epochs of the run, got {self.freeze_epochs}")
        if self.freeze and self.freeze_epochs:
            raise CnnlabError(f"--freeze keeps the body frozen for the whole run, --freeze-epochs for its first "
                              f"epochs: expected one of them, got both (--freeze-epochs {self.freeze_epochs})")
        if self.freeze_epochs and not (self.init_from or self.pretrained):  # the finetune recipe sets 1
            given = f"the {self.recipe} recipe's --freeze-epochs {self.freeze_epochs}" if \
                RECIPES.get(self.recipe, {}).get("freeze_epochs") == self.freeze_epochs else \
                f"--freeze-epochs {self.freeze_epochs}"
            raise CnnlabError(f"{given} keeps the body frozen, which needs trained weights: expected --pretrained or "
                              "--init-from CHECKPOINT (a fresh model's body is random), or --freeze-epochs 0")
        if self.pretrained and self.init_from:
            raise CnnlabError(f"--pretrained and --init-from both give the starting weights: expected one of them, got "
                              f"both (--init-from {self.init_from}; a run that started from ImageNet weights passes "
                              "them on, with their input normalisation)")
        if self.amp and self.ops == "scratch":  # autocast reaches inside them: bf16 activations meet fp32 weights
            raise CnnlabError("--amp runs torch's layers in bfloat16; the from-scratch layers compute in float32: "
                              "expected --ops torch with --amp, or --no-amp with --ops scratch")
        if self.pretrained and self.ops != "torch":
            raise CnnlabError(f"--pretrained builds torchvision's networks, on torch ops: expected --ops torch, got "
                              f"{self.ops!r}")
        # isfinite too: an inf weight decay or warm-up (`--weight-decay inf` parses as a float) trains on NaN
        for name in ("momentum", "weight_decay", "warmup", "label_smoothing", "grad_clip", "ema"):
            number(getattr(self, name), name.replace("_", "-"), low=0)
        if self.lr is not None:
            number(self.lr, "lr", low=0, high=FLOAT32_MAX, low_open=True, expected=LR_EXPECTED)
        if self.target_acc is not None:
            number(self.target_acc, "target-acc", low=0, high=1, low_open=True, expected="an accuracy in (0, 1]")
        for name in ("mixup", "cutmix"):  # torchvision's MixUp/CutMix alpha; 0 is off
            number(getattr(self, name), name, low=0, high=1, expected="a Beta(alpha, alpha) parameter in [0, 1] "
                   "(0: off)")
        if self.label_smoothing >= 1:
            raise CnnlabError(f"label-smoothing must be below 1, got {self.label_smoothing}")
        if self.ema >= 1:
            raise CnnlabError(f"ema must be below 1 (a decay such as 0.999), got {self.ema}")
        if self.momentum >= 1:
            raise CnnlabError(f"momentum must be below 1, got {self.momentum}")
        if self.optimizer == "nesterov" and self.momentum == 0:
            raise CnnlabError("optimizer nesterov needs momentum > 0 (e.g. --momentum 0.9), got 0")
        int_in_range(self.seed, "seed", 0, 2**32, expected="an integer in [0, 2**32)")  # np.random.seed: 32 bits
        if self.holds_out_nothing:  # after the fields' own checks: a --target-acc of the wrong kind is named so
            self._check_nothing_held_out()
        # Last, after every field's own check: a field without one of its own still refuses a value of another
        # type (a config file's "3" for a number, [3] or null), so a new field is never silently accepted.
        nullable = nullable_fields()
        for name, kind in field_types().items():
            value = getattr(self, name)
            if value is None and name in nullable:
                continue
            if value is None or (kind is int and not is_int(value)) or (kind is float and not is_number(value)):
                fail(name.replace("_", "-"), _EXPECTED.get(kind, f"a {kind.__name__}"), value)
        return self


def parse_milestones(text: str | None) -> tuple[int, ...]:
    """``"30,60"`` -> ``(30, 60)``: strictly increasing positive epochs; raises a one-line CnnlabError otherwise."""
    try:
        values = tuple(int(v) for v in (text or "").split(","))
    except ValueError:
        raise CnnlabError(f"milestones must be comma-separated epochs such as 30,60; got {text!r}") from None
    if not values or min(values) < 1 or list(values) != sorted(set(values)):
        raise CnnlabError(f"milestones must be strictly increasing positive epochs such as 30,60; got {text!r}")
    return values


def _check_share(name: str, value: Any, zero: bool = False) -> None:
    """``--val-split``/``--test-split``: None, a fraction in (0, 1) or a whole number of images >= 1 (the CLI reads an
    integer's text as an int, any other as a float); ``zero``: 0 too, for none."""
    if value is None or zero and is_number(value) and value == 0:  # not False, which equals 0
        return
    fraction = "a fraction in (0, 1) or a whole number of images >= 1" + (", or 0 for none" if zero else "")
    number(value, name, low=0, low_open=True, expected=fraction)
    if value >= 1 and value != int(value):
        fail(name, fraction, value)
    if isinstance(value, float) and value == 1:  # reads as "all", yet would hold out one image
        raise CnnlabError(f"{name} must be a fraction in (0, 1) or a whole number of images, got 1.0: a fraction must "
                          f"be below 1; for a number of images give an integer (--{name} 1 holds out one image)")


def check_schedule(cfg: TrainConfig) -> None:
    """The step-decay fields a schedule needs, in range (part of :meth:`TrainConfig.validate`)."""
    number(cfg.gamma, "gamma", low=0, high=1, low_open=True, expected="a decay factor in (0, 1]")
    if cfg.schedule == "step" and cfg.step_size is None:
        raise CnnlabError("schedule step needs --step-size EPOCHS (epochs between decays), got none")
    if cfg.step_size is not None:
        positive_int(cfg.step_size, "step-size", expected="a positive number of epochs")
    milestones = cfg.milestones
    if cfg.schedule == "multistep" and not milestones:
        raise CnnlabError("schedule multistep needs --milestones EPOCHS such as 30,60, got none")
    if milestones:
        parse_milestones(milestones)


# Recipes: overrides applied on top of the dataclass defaults (a callable gets the model name).
RECIPES: dict[str, dict[str, Any]] = {
    # d2l exactly: plain SGD at the model's book lr, batch 128, 10 epochs, Xavier init, raw [0,1] pixels.
    "book": {},
    # Accuracy per second on a CPU for the small models (tuned on lenet-bn-relu and lenet-relu, see
    # docs/benchmarks.md, "How the fast recipe and the channels-last default were chosen"): Nesterov SGD on a
    # triangular one-cycle, the book's Xavier init, label smoothing. Augmentation costs more accuracy than it gives
    # in 10 epochs of a 45k-parameter model, so it is off. The gradient-norm clip keeps short schedules alive: their
    # one-cycle reaches lr 0.2 within a few dozen steps, which left lenet-relu (no batch norm) dead at chance after
    # one epoch of 40 or of all 235 batches; clipped, it learns (docs/benchmarks.md, "Short schedules").
    "fast": dict(optimizer="nesterov", momentum=0.9, lr=0.2, weight_decay=5e-4, schedule="onecycle",
                 batch_size=256, label_smoothing=0.1, normalize=True, augment="none", epochs=10, init="xavier",
                 grad_clip=1.0, channels_last=False,  # BN-LeNet is faster contiguous on a CPU (docs/benchmarks.md)
                 time_budget=60.0),  # a minute on any host; the 10 epochs are the schedule until the speed is known
    # The most test accuracy two CPU cores buy in 10 minutes, for the compact model (docs/benchmarks.md, "Ten
    # minutes on two cores"; chosen on a validation split): the fast recipe's optimizer and one-cycle, with the
    # random-crop and flip augmentation and flip-TTA that beat no augmentation there (without it the net fits the
    # training set almost exactly by the last epoch). Ten minutes as a time budget: 9 epochs fit them on the slower
    # host measured and use under half of them on the faster one (docs/benchmarks.md, "A time budget").
    "cpu10": dict(optimizer="nesterov", momentum=0.9, lr=0.2, weight_decay=5e-4, schedule="onecycle",
                  batch_size=256, label_smoothing=0.1, normalize=True, augment="crop-flip", tta=True, epochs=9,
                  init="default", channels_last=True, time_budget=600.0),
    # GPU: large-batch one-cycle with bf16, channels-last, torch.compile, flips and TTA (time to 94% test accuracy).
    "speedrun": dict(optimizer="nesterov", momentum=0.9, lr=0.2, weight_decay=5e-4, schedule="onecycle",
                     batch_size=512, label_smoothing=0.1, normalize=True, augment="crop-flip", tta=True, amp=True,
                     channels_last=True, compile=True, epochs=8, init="default"),
    # Best accuracy with no time limit.
    "best": dict(optimizer="nesterov", momentum=0.9, lr=0.1, weight_decay=5e-4, schedule="onecycle",
                 batch_size=256, label_smoothing=0.1, normalize=True, augment="crop-flip", tta=True, ema=0.999,
                 epochs=40, init="default"),
    # Fine-tuning trained weights (--pretrained or --init-from) in fastai's way (Learner.fine_tune): the new head
    # trains alone for freeze_epochs, then every layer, the body at a tenth of the head's lr (d2l 14.2's ratio),
    # each phase on its own one-cycle, the second at half the peak (train/schedule.py). fastai's defaults: Adam(W)
    # at 2e-3, weight decay 0.01, batch 64.
    "finetune": dict(optimizer="adamw", lr=2e-3, weight_decay=0.01, schedule="onecycle", batch_size=64,
                     freeze_epochs=1, epochs=5),
}


def make_config(model: str, recipe: str = "book", **overrides: Any) -> TrainConfig:
    """Merge the model's defaults, a recipe and explicit overrides into a validated TrainConfig.

    Example:
        >>> make_config("lenet").lr
        0.1
    """
    from cnnlab.models import model_info  # torch: the CLI builds its flags from this module torch-free

    if not isinstance(model, str):  # a config file's "model": ["lenet"] would reach the registry's dict unhashable
        fail("model", "a model name (a string; see `cnnlab models`)", model)
    info = model_info(model)
    if not isinstance(recipe, str) or recipe not in RECIPES:
        raise CnnlabError(f"recipe must be one of {', '.join(RECIPES)}; got {recipe!r}")
    check_known_fields(overrides, "the overrides")
    values: dict[str, Any] = {"lr": info.lr}
    values.update(RECIPES[recipe])
    if overrides.get("freeze") and overrides.get("freeze_epochs") is None:  # --freeze: frozen all along instead
        values.pop("freeze_epochs", None)
    given = {k: v for k, v in overrides.items() if v is not None}
    if "epochs" in given and "time_budget" in given:
        raise CnnlabError(f"--epochs and --time-budget both set the run's length; expected one of them, got "
                          f"{given['epochs']} epochs and {given['time_budget']} seconds")
    if "epochs" in given:  # an epoch count replaces a budget recipe's time budget
        values.pop("time_budget", None)
    values.update(given)
    values.update(model=model, recipe=recipe)
    return TrainConfig(**values)


def check_given_flags_apply(given: Mapping[str, Any], config: TrainConfig) -> None:
    """Refuse a flag the user typed that ``config`` would not use, in one line: a no-op flag is a mistake to name,
    not to ignore. Recipes and config files set such fields freely (a run's config.json holds every field)."""
    for key, schedules in (("step_size", ("step",)), ("milestones", ("multistep",)), ("gamma", ("step", "multistep"))):
        if key in given and config.schedule not in schedules:
            flag = "--" + key.replace("_", "-")
            raise CnnlabError(f"{flag} applies to the {' and '.join(schedules)} schedule{'s' * (len(schedules) > 1)}, "
                              f"and this run's is {config.schedule}; expected --schedule {schedules[0]} with it, or "
                              f"no {flag}")
    if "momentum" in given and config.optimizer in ("adam", "adamw"):
        raise CnnlabError(f"--momentum is SGD's and RMSprop's, and {config.optimizer} keeps its own running moments; "
                          f"expected no --momentum with --optimizer {config.optimizer}")
    if "limit_val_batches" in given and config.holds_out_nothing:
        raise CnnlabError("--limit-val-batches limits the evaluation, and --test-split 0 without --val-split holds out "
                          "no image to evaluate; expected --val-split with it, or no --limit-val-batches")
    if given.get("tta") and given.get("flip") is False:
        raise CnnlabError("--tta averages each test image with its mirror, and --no-flip says a mirror is not of the "
                          "same class; expected one of them")


def config_fields() -> list[dataclasses.Field]:
    """The TrainConfig fields, for the CLI to build its flags from."""
    return list(dataclasses.fields(TrainConfig))


def field_types() -> dict[str, type]:
    """TrainConfig field name -> the type of its value (``float`` for ``float | None``)."""
    types = {}
    for name, hint in typing.get_type_hints(TrainConfig).items():
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        types[name] = args[0] if args else hint
    return types


def nullable_fields() -> frozenset[str]:
    """The TrainConfig fields that may be None ("not set": ``lr``, ``resize``, ...); the others always hold a value."""
    return frozenset(name for name, hint in typing.get_type_hints(TrainConfig).items()
                     if type(None) in typing.get_args(hint))


def check_known_fields(keys: Iterable[str], where: str) -> None:
    """Refuse keys that are not TrainConfig fields (a config file's, a study's or a sweep's), in one line."""
    unknown = sorted(set(keys) - {f.name for f in dataclasses.fields(TrainConfig)})
    if unknown:
        raise CnnlabError(f"{where} has unknown key(s) {', '.join(unknown)}; expected TrainConfig fields "
                          "(the flags of `cnnlab train --help`, e.g. batch_size)")
