"""Fine-tuning (d2l 14.2): start from trained weights, with a fresh head when the classes differ.

The source is a checkpoint of the user's own (``--init-from``, of any dataset: every tensor whose name and shape fit
is copied, the rest keeps its fresh initialisation) or an ImageNet backbone's official weights (``--pretrained``,
:mod:`cnnlab.models.imagenet`). Then either the body stays frozen for the whole run (``--freeze``: only the
classifier's last layer trains, with the rest of its head block where that started fresh: :func:`head_parameters`)
or for its first ``--freeze-epochs`` (the finetune recipe, after fastai's
``fine_tune``): the Trainer unfreezes it at that epoch boundary (:meth:`cnnlab.train.build.RunParts.enter_epoch`),
and from then on the body learns at a lower rate (:func:`cnnlab.train.schedule.build_optimizer`).

Batch-norm policy, the same for both: a frozen body's affine parameters (weight, bias) do not change, but its
running statistics keep following the new data, because the whole model is in training mode during training steps
(as in d2l 14.2, where the pretrained ResNet's batch norm keeps updating; fastai also keeps them updating, and
trains the affine parameters too, which cnnlab does not). Whether a layer is frozen depends only on the epoch, so a
run resumed at any step freezes exactly what the uninterrupted run froze.

The weights expect the input they were trained on: a run from ``--pretrained`` normalises with the ImageNet weights'
mean and std, and one from ``--init-from`` as the source run did (its recorded normalisation, or none; for a state
dict from elsewhere, what timm's config.json or a Transformers preprocessor_config.json beside it says), whatever
``--normalize`` says; fastai's ``fine_tune`` normalises with the pretrained statistics for the same reason.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from torch import nn

from cnnlab.errors import CnnlabError, ForeignCheckpointError
from cnnlab.inference import stored_normalize
from cnnlab.io import json_beside
from cnnlab.models.imagenet import per_channel
from cnnlab.models.normalisation_beside import Said, normalisation_beside
from cnnlab.models.state_dict import Head, network_keys, output_layer, state_dict_in
from cnnlab.runs.checkpoint import load_checkpoint

# What --init-from takes, for the line refusing a file it cannot read
TAKEN = ("a cnnlab checkpoint (a run's best.pt) or a state dict of this model's network "
         "(torch.save(model.state_dict(), FILE), or a .safetensors file)")


@dataclass(frozen=True)
class Initialised:
    """What :func:`init_from` did: ``line`` says what was kept; ``normalize`` is the source's [mean, std] per
    channel (None: it fed [0, 1] pixels, or says nothing), the input its weights were trained on; ``said_by``: where
    a state dict from elsewhere says so (timm's config.json or a preprocessor_config.json beside it,
    :mod:`cnnlab.models.normalisation_beside`), "" for a cnnlab run, which records it, None for a state dict that
    says nothing (:attr:`recorded`); ``head``: the layers trained as the head where that is more than the
    classifier's last layer (its whole head block, which started fresh because the file has none of it:
    :func:`head_parameters`), else ()."""

    line: str
    normalize: list[list[float]] | None
    said_by: str | None = ""
    head: tuple[str, ...] = ()

    @property
    def recorded(self) -> bool:
        """Whether the source said what input its weights were trained on; where it did not (a state dict from
        elsewhere with nothing beside it), an ImageNet backbone's input is normalised as the ImageNet weights', a
        book model's as the run's ``--normalize`` says (``_normalize`` in :mod:`cnnlab.train.build`)."""
        return self.said_by is not None


def init_from(model: nn.Module, path: str | Path, classes: Sequence[str] | None = None,
              channels: int | None = None, network: str | None = None) -> Initialised:
    """Copy the fitting weights of checkpoint ``path`` into ``model``; returns what was kept and the source's
    normalisation.

    The output layer is copied only when it means the same classes: with ``classes`` (the new run's) differing from
    the checkpoint's, it starts fresh even where the counts match (a 10-class digits head is no Fashion-MNIST head).

    ``path`` may also hold a state dict of the model's network from elsewhere (``torch.save(model.state_dict())``,
    perhaps inside a training script's or Lightning's checkpoint, or a ``.safetensors`` file; keys perhaps under
    DataParallel's ``module.``, or a Hugging Face Transformers ResNet's or ConvNeXt's or a timm ConvNeXt's,
    EfficientNet's, MobileNetV2's, RegNet's or VGG's, read under torchvision's names:
    :func:`~cnnlab.models.state_dict.network_keys`, ``network`` the model's torchvision builder where it is one, whose
    architecture timm's config.json beside the file must name; a body saved without its classifier too, whose
    output layer, or whole head block (:func:`~cnnlab.models.state_dict.head_block_keys`), then starts fresh as the
    model was built): it names no classes, so its output layer is kept only where its shape fits,
    and no normalisation, which timm's config.json (its pretrained_cfg) or a Transformers preprocessor_config.json
    beside it may say (:func:`~cnnlab.models.normalisation_beside.normalisation_beside`): the input is normalised
    as :class:`Initialised` says.

    Raises:
        CnnlabError: the checkpoint is unreadable, or nothing but the head would be copied (another model).
    """
    # the output layer, which starts fresh for other classes, and the head block, all of which a body saved without
    # its classifier block lacks (model.classifier = nn.Identity() of a VGG or ConvNeXt)
    own, head = model.state_dict(), Head.of(model)
    # whether it is a state dict from elsewhere, not a cnnlab checkpoint; what was done to its keys; the
    # normalisation the files beside it say
    foreign, read, said = False, "", None
    try:
        ckpt = load_checkpoint(path, expected=TAKEN)
    except ForeignCheckpointError as e:
        if e.held is None:  # not read at all (a pickle of objects, a TorchScript archive): its line says why
            raise
        held = state_dict_in(e.held, path, TAKEN)
        config = json_beside(path, "config.json")  # timm's or Transformers': one read for both readers
        said = normalisation_beside(path, held, config)
        state, how = network_keys(held, set(own), path, network, head, config)
        ckpt, foreign = {"model": state}, True
        read = f", {how}" if how else ""
    source = ckpt.get("ema") or ckpt.get("model")
    if not isinstance(source, dict):
        raise CnnlabError(f"--init-from {path}: the checkpoint holds no model weights")
    fitting = {k: v for k, v in source.items() if k in own and tuple(own[k].shape) == tuple(v.shape)}
    saved = (ckpt.get("dataset") or {}).get("classes")
    if classes is not None and saved is not None and list(saved) != list(classes):
        fitting = {k: v for k, v in fitting.items() if k not in head.layer}
    # A batch norm's count of batches seen is no weight, and files saved before torch 0.4.1 (torchvision's hosted
    # DenseNet files among them) have none: such a layer keeps its own count, as its load does
    fresh = [k for k in own if k not in fitting and not (k.endswith(".num_batches_tracked") and k not in source)]
    # only the output layer may start afresh, or the whole head block where the source has none of it (a body saved
    # without its classifier block): anything else means another model or other input channels
    block_left_out = not head.block & source.keys()
    body = [k for k in fresh if k not in (head.block if block_left_out else head.layer)]
    if body:
        # Other channels alone change only the first layer's weight; more than that is another model
        first = body == [next(iter(own))]
        stem = source.get(body[0])  # a state dict records no channels: its first weight's second axis tells
        theirs = ckpt.get("in_channels", stem.shape[1] if first and stem is not None and stem.dim() == 4 else None)
        hint = f"; pass --channels {theirs} to read this dataset as the checkpoint's input" \
            if first and channels is not None and theirs in (1, 3) and theirs != channels else ""
        whose = f"a state dict from elsewhere{read}" if foreign else \
            f"model {ckpt.get('model_name')!r}, {theirs} input channel(s)"
        raise CnnlabError(f"--init-from {path}: its weights ({whose}) do not fit this model: {len(body)} tensors "
                          f"besides the output layer differ, first {body[0]} (expected the same model and channels; "
                          f"only the number of classes may change){hint}")
    model.load_state_dict(fitting, strict=False)
    kept = f"{len(fitting)} of {len(own)} tensors from {path}"
    # a head block the file has none of is as new as its output layer: all of it trains as the head (under --freeze,
    # the first --freeze-epochs, and at the head's lr), not as random body; layers merely reshaped for other classes
    # or channels are not new in this sense
    started = () if not block_left_out else \
        tuple(dict.fromkeys(name.rsplit(".", 1)[0] for name, _ in model.named_parameters() if name in head.block))
    started = started if len(started) > 1 else ()
    if foreign:
        normalize = _fed_as_said(said, channels)
        said_by = said.where if normalize else None
        told = f"no classes recorded, its normalisation read from the {said_by}" if said_by else \
            "no classes or normalisation recorded"
        return Initialised(f"initialised {kept} (a state dict{read}: {told})"
                           + (f"; new: {', '.join(fresh)}" if fresh else ""), normalize, said_by, started)
    try:
        mean, std = stored_normalize(ckpt)
    except (TypeError, ValueError):
        raise CnnlabError(f"--init-from {path}: its normalisation entry is malformed, expected [mean, std] per "
                          f"channel, got {ckpt.get('normalize')!r}") from None
    return Initialised(f"initialised {kept}" + (f"; new: {', '.join(fresh)}" if fresh else ""),
                       None if mean is None else [list(mean), list(std)], head=started)


def _fed_as_said(said: Said | None, channels: int | None) -> list[list[float]] | None:
    """``said``'s [mean, std] for an input of ``channels`` (the RGB values averaged for grey images, as the
    ImageNet weights' are); None where it says none, or of another count of channels than 1, 3 or the input's."""
    if said is None:
        return None
    if channels is None or len(said.mean) == len(said.std) == channels:
        return [list(said.mean), list(said.std)]
    if {len(said.mean), len(said.std)} <= {1, 3}:
        return per_channel(said.mean, said.std, channels)
    return None


def last_layer(model: nn.Module) -> nn.Module:
    """The last module (in definition order) that owns parameters: the classifier's output layer."""
    name = output_layer(model)
    if name is None:
        raise CnnlabError("the model has no parameters to train")
    return model.get_submodule(name)


def head_parameters(model: nn.Module, head: Sequence[str] = ()) -> list[nn.Parameter]:
    """The parameters trained as the head, the one rule for ``--freeze``, ``--freeze-epochs`` and the head's lr: the
    classifier's last layer's, or those of the layers ``head`` names (:attr:`Initialised.head`: a head block that
    started fresh, which the run records and its resume reads: :meth:`cnnlab.train.build.RunParts.record`).

    Raises:
        CnnlabError: ``head`` names a layer the model lacks (a checkpoint of another model).
    """
    if not head:
        return list(last_layer(model).parameters())
    try:
        return [p for name in head for p in model.get_submodule(name).parameters()]
    except AttributeError:
        raise CnnlabError(f"the layers recorded as the head, {', '.join(head)}, are not all layers of this model: "
                          "expected layers of its head block") from None


def freeze_body(model: nn.Module, head: Sequence[str] = ()) -> int:
    """Train only the head (:func:`head_parameters`: the classifier's last layer, or the layers ``head`` names) under
    ``--freeze`` and for the first ``--freeze-epochs``; returns the number of parameters left trainable.

    Batch-norm statistics of the frozen body still follow the new data in training mode, as in d2l 14.2.
    """
    keep = {id(p) for p in head_parameters(model, head)}
    for p in model.parameters():
        p.requires_grad_(id(p) in keep)
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def unfreeze(model: nn.Module) -> None:
    """Train every layer again (the end of ``--freeze-epochs``)."""
    for p in model.parameters():
        p.requires_grad_(True)


def body_frozen(freeze: bool, freeze_epochs: int, epoch: int) -> bool:
    """Whether the body is frozen during ``epoch`` (0-based): throughout with ``--freeze``, for the first
    ``freeze_epochs`` otherwise."""
    return freeze or epoch < freeze_epochs
