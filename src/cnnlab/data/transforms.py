"""Batch transforms on the device: the model-input preprocessing and the training augmentation.

The book resizes every PIL image on the CPU inside the DataLoader (d2l 4.2.1, ``transforms.Resize``) before
``ToTensor``; here the dataset stays uint8 28 x 28 on the device and a whole float batch is resized at once with
``F.interpolate``. Bilinear, ``align_corners=False`` uses the same half-pixel sample positions as PIL's bilinear
upscaling, so values differ from the book's only by PIL's 8-bit fixed-point arithmetic and rounding (measured:
at most 1/255 on the first 50 training images at 96 and 224 px).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from cnnlab.checks import int_at_least, is_number, number, positive_int
from cnnlab.data.autoaugment import auto_augment
from cnnlab.errors import CnnlabError

__all__ = ["AUGMENTS", "BatchMix", "Preprocess", "augment_batch", "augment_images", "augment_preset"]

# The --augment presets. crop-flip is augment_batch (the old `--augment`); the other three add torchvision's policy
# of that name on top of it, per image (cnnlab.data.autoaugment), as torchvision's reference recipes put a policy
# after the random crop and flip. train/config.py keeps the same tuple torch-free (tests/test_augment.py).
AUGMENTS = ("none", "crop-flip", "trivial", "randaugment", "autoaugment")


class Preprocess(nn.Module):
    """Float images ``N x C x H x W`` in [0, 1] to the model's input: bilinear resize, then optional normalisation.

    One module serves training, evaluation, prediction and the ONNX export, so they cannot drift apart. It
    is traceable, ONNX-exportable and scriptable: the statistics are non-persistent ``1 x C x 1 x 1`` buffers
    (they follow ``.to(device)`` but stay out of the ``state_dict``, whose keys checkpoints pin), and the only
    control flow is a static shape test.

    Args:
        input_size: side of the square model input; the resize is skipped when the input already has it.
        mean: subtracted after resizing: one float for every channel or one per channel (``None``: no
            normalisation); give ``std`` with it.
        std: divided by after subtracting ``mean``, in the same form.
        antialias: shrink with an antialiasing filter, as torchvision's ``Resize`` does (the book's loaders, whose
            ``resize`` may go below 28 px). Off for cnnlab's runs: their checkpoints and exports were trained on
            the plain bilinear shrink, and enlarging, the usual case, is the same either way.

    Example:
        >>> Preprocess(96, mean=0.2860, std=0.3530)(torch.rand(2, 1, 28, 28)).shape
        torch.Size([2, 1, 96, 96])
        >>> Preprocess(32, mean=(0.49, 0.48, 0.45), std=(0.25, 0.24, 0.26))(torch.rand(2, 3, 32, 32)).shape
        torch.Size([2, 3, 32, 32])
    """

    def __init__(self, input_size: int = 28, mean: float | Sequence[float] | None = None,
                 std: float | Sequence[float] | None = None, antialias: bool = False):
        super().__init__()
        positive_int(input_size, "input_size")
        self.antialias = antialias
        if (mean is None) != (std is None):
            raise CnnlabError(f"mean and std must be given together, got mean={mean!r}, std={std!r}")
        self.input_size = input_size
        self.normalize = mean is not None
        means, stds = (_per_channel("mean", mean), _per_channel("std", std)) if self.normalize else ((0.0,), (1.0,))
        if len(means) != len(stds) and 1 not in (len(means), len(stds)):
            raise CnnlabError(f"mean and std must have one value each or one per channel, got {len(means)} "
                              f"and {len(stds)} values")
        if not all(math.isfinite(m) for m in means) or not all(math.isfinite(s) and s > 0 for s in stds):
            raise CnnlabError(f"mean must be finite and std positive, got mean={mean!r}, std={std!r}")
        # Identity values when normalisation is off keep forward free of Optional (TorchScript, ONNX).
        self.register_buffer("mean", torch.tensor(means).view(1, -1, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(stds).view(1, -1, 1, 1), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[-2] != self.input_size or x.shape[-1] != self.input_size:
            # antialias only matters when shrinking (where it is slower, enlarging too, so it is asked only then)
            shrink = self.antialias and self.input_size < min(x.shape[-2], x.shape[-1])
            x = F.interpolate(x, size=[self.input_size, self.input_size], mode="bilinear",
                              align_corners=False, antialias=shrink)  # N x C x input_size x input_size
        if self.normalize:
            x = (x - self.mean) / self.std  # not in place: x may be the caller's tensor
        return x

    def extra_repr(self) -> str:
        def show(t: torch.Tensor) -> str:
            values = [round(v, 4) for v in t.flatten().tolist()]
            return str(values[0]) if len(values) == 1 else str(tuple(values))

        norm = f", mean={show(self.mean)}, std={show(self.std)}" if self.normalize else ""
        return f"input_size={self.input_size}{norm}"


def _per_channel(name: str, value: float | Sequence[float]) -> tuple[float, ...]:
    if isinstance(value, torch.Tensor):
        value = value.flatten().tolist()
    if isinstance(value, Sequence) and not isinstance(value, str):
        if len(value) == 0:
            raise CnnlabError(f"{name} must be a number or a non-empty sequence of numbers, got {value!r}")
        values = value
    else:
        values = [value]
    if not all(is_number(v) for v in values):
        raise CnnlabError(f"{name} must be a number or a sequence of numbers, got {value!r}")
    return tuple(float(v) for v in values)


def augment_batch(x: torch.Tensor, generator: torch.Generator, pad: int = 2, flip: bool = True) -> torch.Tensor:
    """Random crop with zero padding and random horizontal flip, per sample, in one gather on ``x``'s device.

    Each sample is shifted by independent integers ``dy, dx`` in ``[-pad, pad]`` (the vacated border is zero,
    i.e. pad by ``pad`` and crop back to ``H x W``) and, with ``flip``, mirrored left-right with probability 1/2:
    ``out[n, c, i, j] = x[n, c, i + dy, j' + dx]`` with ``j' = W - 1 - j`` for flipped samples, else ``j``.
    This is the standard CIFAR/Fashion-MNIST recipe (He et al. 2016, sec. 4.2) as airbench does it on the GPU.

    Args:
        x: float batch ``N x C x H x W``.
        generator: source of all randomness (drawn on its own device, then moved): same state, same output.
        pad: largest shift in pixels; 0 turns cropping off.
        flip: whether to flip half of the samples.

    Returns:
        A new tensor shaped like ``x`` (``x`` itself when both augmentations are off).
    """
    if x.dim() != 4 or not x.is_floating_point():
        raise CnnlabError(f"augment_batch expects a float N x C x H x W batch, got {x.dim()}-d {x.dtype}")
    int_at_least(pad, "pad", 0)
    n, c, h, w = x.shape
    if (pad == 0 and not flip) or n == 0:
        return x
    # One draw of 3 x N integers (dy, dx, flip bit) and one small host-to-device copy per batch.
    shifts = torch.randint(-pad, pad + 1, (2, n), generator=generator, device=generator.device)
    flips = torch.randint(0, 2, (1, n), generator=generator, device=generator.device)
    draws = torch.cat([shifts, flips if flip else torch.zeros_like(flips)]).to(x.device)
    dy, dx, mirrored = draws[0, :, None], draws[1, :, None], draws[2, :, None].bool()
    cols = torch.arange(w, device=x.device)
    cols = torch.where(mirrored, w - 1 - cols, cols)  # N x W source column before the shift
    # Source coordinates in the zero-padded image (offset by +pad), flattened: one gather does crop and flip.
    rows = torch.arange(h, device=x.device) + dy + pad  # N x H
    cols = cols + dx + pad  # N x W
    index = (rows[:, :, None] * (w + 2 * pad) + cols[:, None, :]).view(n, 1, h * w).expand(n, c, h * w)
    padded = F.pad(x, (pad, pad, pad, pad)) if pad else x  # N x C x (H + 2 pad) x (W + 2 pad)
    return padded.reshape(n, c, -1).gather(2, index).view(n, c, h, w)


def augment_preset(value: bool | str) -> str:
    """The preset name of an ``augment`` setting: ``True`` (the old switch) is crop-flip, ``False`` none."""
    if value is True or value is False:
        return "crop-flip" if value else "none"
    if value not in AUGMENTS:
        raise CnnlabError(f"augment must be one of {', '.join(AUGMENTS)} (or true or false), got {value!r}")
    return value


def augment_images(x: torch.Tensor, preset: str, generator: torch.Generator, flip: bool = True) -> torch.Tensor:
    """A float ``N x C x H x W`` batch augmented by ``preset`` (:data:`AUGMENTS`), every image with its own draw.

    ``none`` returns ``x``; ``crop-flip`` is :func:`augment_batch` (its draws come first, so a crop-flip batch is
    what it always was); ``trivial``, ``randaugment`` and ``autoaugment`` then apply torchvision's policy of that
    name per image (:func:`cnnlab.data.autoaugment.auto_augment`). ``flip=False`` never mirrors (the policies have
    no mirror of their own).
    """
    if preset == "none":
        return x
    x = augment_batch(x, generator, flip=flip)
    return x if preset == "crop-flip" else auto_augment(x, augment_preset(preset), generator)


class BatchMix:
    """MixUp (Zhang et al. 2018) and/or CutMix (Yun et al. 2019) of a batch: torchvision.transforms.v2's, with
    one mixing weight per batch as theirs, drawn from a given generator so that a batch's mix is a function of the
    loader's seed, epoch, rank and batch (exact resume). With both, each batch uses one of them, chosen evenly.

    The targets become soft, ``N x num_classes`` (``lambda * onehot(y) + (1 - lambda) * onehot(y rolled by one)``),
    for a cross-entropy with probability targets.

    Args:
        num_classes: the dataset's class count.
        mixup: MixUp's Beta(alpha, alpha) parameter in [0, 1] (0: off).
        cutmix: CutMix's, likewise.
    """

    def __init__(self, num_classes: int, mixup: float = 0.0, cutmix: float = 0.0):
        positive_int(num_classes, "num_classes")
        for name, alpha in (("mixup", mixup), ("cutmix", cutmix)):
            number(alpha, name, low=0, high=1, expected="a Beta(alpha, alpha) parameter in [0, 1] (0: off)")
        from torchvision.transforms import v2  # only when mixing: loading v2 costs a fraction of a second

        mixes = ([v2.CutMix(alpha=cutmix, num_classes=num_classes)] if cutmix else []) + \
            ([v2.MixUp(alpha=mixup, num_classes=num_classes)] if mixup else [])
        if not mixes:
            raise CnnlabError("BatchMix needs mixup or cutmix above 0, got both 0")
        self.num_classes, self.mixup, self.cutmix = num_classes, float(mixup), float(cutmix)
        self.transform = mixes[0] if len(mixes) == 1 else v2.RandomChoice(mixes)

    def __call__(self, x: torch.Tensor, y: torch.Tensor, generator: torch.Generator) -> tuple[torch.Tensor,
                                                                                          torch.Tensor]:
        seed = int(torch.randint(2**62, (1,), generator=generator, device=generator.device))
        # torchvision draws lambda, the box and the choice from torch's global CPU stream: borrow it, seeded from
        # the batch's generator, and give it back untouched (the run's own stream, e.g. dropout's, goes on as if
        # nothing had drawn).
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            return self.transform(x, y)

    def __repr__(self) -> str:
        return f"BatchMix(num_classes={self.num_classes}, mixup={self.mixup}, cutmix={self.cutmix})"
