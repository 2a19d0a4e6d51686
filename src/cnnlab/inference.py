"""The one path from a checkpoint to predictions: checkpoint -> model + metadata -> logits.

``cnnlab eval``, ``report``, ``predict``, ``export`` and ``explore`` all go through :func:`load_trained`, so they
agree on the weights (EMA when the run kept them), the preprocessing (resize, per-channel normalisation), the
class names and the flip-TTA policy of the run, for every dataset.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

import cnnlab.data
from cnnlab.checks import positive_int
from cnnlab.data import FOLDER_PREFIX, Preprocess, holds_out_nothing
from cnnlab.data.dataset import training_files_change
from cnnlab.data.duplicates import images_seen_in_training
from cnnlab.data.folder import held_out_source, moved_folder
from cnnlab.data.split import SPLIT_NAMES, run_split
from cnnlab.data.store import joined, mapped_reads
from cnnlab.device import resolve_device
from cnnlab.errors import CheckpointError, CnnlabError, DataError, summary
from cnnlab.models import create_model, model_info
from cnnlab.runs.checkpoint import load_checkpoint


@dataclass(frozen=True)
class Meta:
    """What inference needs to know about a trained model besides its weights.

    Attributes:
        model_name: the registry name.
        dataset: the dataset it was trained on (a registry name or ``folder:PATH``).
        classes: the class names, in label order.
        channels: input channels (1 grey, 3 RGB).
        image_size: side of the dataset's stored images (what :meth:`Trained.logits` expects by default).
        input_size: side of the model's input (the preprocessing resizes to it).
        mean, std: the per-channel normalisation the model's input gets, or None (raw [0, 1] pixels).
        flip: whether a horizontal flip keeps the class (decides flip-TTA).
        tta: whether the run evaluated with flip-TTA.
        ops: ``"torch"`` or ``"scratch"`` layers.
    """

    model_name: str
    dataset: str
    classes: tuple[str, ...]
    channels: int
    image_size: int
    input_size: int
    mean: tuple[float, ...] | None
    std: tuple[float, ...] | None
    flip: bool
    tta: bool
    ops: str = "torch"

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def decoded(self) -> tuple[int, int]:
        """The (image size, channels) the run's images were decoded at: what its readers read a folder at
        (:func:`dataset_args`' ``decoded``)."""
        return self.image_size, self.channels

    @property
    def crops_pictures(self) -> bool:
        """Whether a picture shown to the model is centre-cropped, as its folder of training images was
        (:func:`cnnlab.picture.centre_crop`), rather than padded to a square."""
        return self.dataset.startswith(FOLDER_PREFIX)


def stored_normalize(ckpt: Mapping[str, Any]) -> tuple[tuple[float, ...], tuple[float, ...]] | tuple[None, None]:
    """The per-channel (mean, std) a checkpoint's model input was normalised with, or (None, None) for [0, 1]
    pixels; the first checkpoints stored one float each."""
    norm = ckpt.get("normalize")
    if not norm:
        return None, None
    mean, std = (tuple(v if isinstance(v, (list, tuple)) else [v]) for v in norm)
    return mean, std


def meta_of(ckpt: Mapping[str, Any], path: str | Path = "checkpoint") -> Meta:
    """The :class:`Meta` of a checkpoint dict read by :func:`cnnlab.runs.load_checkpoint`."""
    try:
        data = ckpt["dataset"]
        config = ckpt.get("config") or {}
        mean, std = stored_normalize(ckpt)
        return Meta(model_name=str(ckpt["model_name"]), dataset=str(data["name"]), classes=tuple(data["classes"]),
                    channels=int(data["channels"]), image_size=int(data["image_size"]),
                    input_size=int(ckpt["input_size"]),
                    mean=mean, std=std,
                    flip=bool(data.get("flip", True)),
                    tta=bool(config.get("tta", False)) and bool(data.get("flip", True)),  # as the Trainer does
                    ops=str(ckpt.get("ops", "torch")))
    except KeyError as e:
        raise CheckpointError(f"{path} lacks the entry {e.args[0]!r} every cnnlab checkpoint has") from None
    except (TypeError, ValueError) as e:
        raise CheckpointError(f"{path} has a malformed dataset entry ({e})") from None


# The most input values one forward pass of predict_logits takes (images x channels x height x width, at the larger of
# their stored and input sizes): 512 images of a 224-px RGB input held 5.6 GB of a ResNet-50's activations (11 MB an
# image) and 0.6 GB of float copies of the batch; a 28-px or 96-px grey input still goes 512 images at a time.
BATCH_VALUES = 2**23


def images_per_pass(batch_size: int, values_per_image: int) -> int:
    """At most ``batch_size`` images a forward pass, fewer where they would exceed :data:`BATCH_VALUES` input values,
    at least one."""
    return max(1, min(batch_size, BATCH_VALUES // max(1, values_per_image)))


@torch.no_grad()
def predict_logits(model: nn.Module, preprocess: nn.Module, images: torch.Tensor, batch_size: int = 512,
                   device: str | torch.device | None = None, tta: bool = False) -> torch.Tensor:
    """Logits of ``model`` for a stack of images, batch by batch, without gradients and in eval mode.

    Args:
        images: uint8 ``N x H x W`` or ``N x C x H x W`` (as datasets store them, scaled by 1/255 here), or float
            ``N x C x H x W`` already in [0, 1], at any size. Only one batch at a time is moved to ``device``.
        preprocess: the checkpoint's :class:`cnnlab.data.Preprocess` (resize and normalisation).
        batch_size: the most images a forward pass takes; fewer where they would exceed :data:`BATCH_VALUES` input
            values (large pictures).
        device: where to run (default: the device of the model's parameters).
        tta: average the logits of each image and its left-right mirror, as training's flip-TTA does.

    Returns:
        float32 logits ``N x num_classes`` on the CPU.

    Example:
        >>> from cnnlab.data import Preprocess
        >>> from cnnlab.models import create_model
        >>> images = torch.zeros(3, 28, 28, dtype=torch.uint8)
        >>> predict_logits(create_model("lenet"), Preprocess(28), images).shape
        torch.Size([3, 10])
    """
    if images.dim() == 3:
        images = images.unsqueeze(1)  # N x 1 x H x W
    if images.dim() != 4:
        raise CnnlabError(f"expected images N x H x W or N x C x H x W, got shape {tuple(images.shape)}")
    positive_int(batch_size, "batch_size")
    if device is None:
        device = next(model.parameters()).device
    # the values of one image on its way in: as stored, and at the model's input
    side = getattr(preprocess, "input_size", 1)
    per_image = max(images[0].numel() if len(images) else 1, images.shape[1] * side * side)
    batch_size = images_per_pass(batch_size, per_image)
    was_training = model.training
    model.eval()
    chunks = []
    try:
        for start in range(0, images.shape[0], batch_size):
            x = images[start:start + batch_size].to(device, non_blocking=True)
            x = x.float() / 255 if x.dtype == torch.uint8 else x.float()
            x = preprocess(x)
            logits = model(x)
            if tta:
                logits = (logits + model(x.flip(-1))) / 2
            chunks.append(logits.float().cpu())
    finally:
        model.train(was_training)
    if not chunks:
        raise CnnlabError("expected at least one image, got none")
    return torch.cat(chunks)


@dataclass
class Trained:
    """A trained model ready for inference: weights, preprocessing and metadata of one checkpoint."""

    model: nn.Module
    preprocess: nn.Module
    meta: Meta
    checkpoint: dict[str, Any]
    path: Path
    device: torch.device

    def logits(self, images: torch.Tensor, batch_size: int = 512, tta: bool | None = None) -> torch.Tensor:
        """float32 logits ``N x num_classes`` on the CPU for uint8 or [0, 1] float images ``N x C x H x W``.

        ``tta`` None follows the run's own setting, so the figures match its result.json.
        """
        if images.dim() == 4 and images.shape[1] != self.meta.channels:
            raise CnnlabError(f"{self.meta.model_name} from {self.path} takes {self.meta.channels}-channel images, "
                              f"got {images.shape[1]} channels")
        return predict_logits(self.model, self.preprocess, images, batch_size, self.device,
                              tta=self.meta.tta if tta is None else tta)

    def num_params(self) -> int:
        return sum(p.numel() for p in self.model.parameters())

    @property
    def config(self) -> dict[str, Any]:
        """The run's TrainConfig as a dict, a copy (empty where the checkpoint kept none)."""
        return dict(self.checkpoint.get("config") or {})

    def dataset(self, data_dir: str | Path | None = None, other: str | None = None, download: bool = True,
                skip_bad: bool = False, training: bool = True):
        """The run's own dataset, read as the run read it (its ``--data-dir`` unless ``data_dir`` is given), or
        ``other``, another dataset name to score the model on; either decoded at the model's image size and
        channels (see :func:`dataset_of`). Check the result with :meth:`check_dataset`. ``skip_bad``: a folder's
        unreadable files are left out (counted), as the run's ``--skip-bad-images`` did, which also holds.
        ``training=False``: a caller that reads the test images alone (the model's own statistics normalise them)
        gets no training images of a registered dataset the run converted (:func:`cnnlab.data.conform`).

        Raises:
            DataError: the run's own data folder (no ``data_dir`` given) is not a folder on this machine.
        """
        config = self.config
        if other is not None:
            config.update(data_dir=None)
            if not names_folder(other, self.meta.dataset):  # its own draw: the run's --test-split was of its folder
                config.update(test_split=None)
        if skip_bad:
            config.update(skip_bad_images=True)
        stored = config.get("data_dir")
        name = str(other or self.meta.dataset)
        if data_dir is None and name.startswith(FOLDER_PREFIX) and other is None:
            images = name[len(FOLDER_PREFIX):]  # the run's own image folder (absolute), which may have moved since
            if not Path(images).expanduser().exists():  # the folder, or the CSV that labels it
                raise moved_data(f"the run's image folder {images}")
        elif data_dir is None and stored and not Path(stored).expanduser().is_dir() and \
                not name.startswith(FOLDER_PREFIX):
            # the run's own folder, not one the caller named: a run once kept it as typed (relative to where it
            # trained), and the data may have moved since
            where = "" if Path(stored).is_absolute() else ", relative to the folder the run trained in"
            raise moved_data(f"the run's data folder {stored} (its config's data_dir{where})")
        with mapped_reads():  # a folder's decoded images: only those scored or shown are read
            return dataset_of(config, data_dir, name=other or self.meta.dataset, download=download,
                              decoded=self.meta.decoded, training=training)

    def check_dataset(self, data: Any, other: bool = False, some: bool = False) -> tuple[list[int], list[str]]:
        """Refuse ``data`` (with the ``name``, ``classes`` and ``held_out`` of an ImageDataset) when its classes are
        not the model's, or its drawn test split is not the one the run held out (see :func:`check_same_test_split`),
        unless it is ``other``: a dataset the user named as another than the run's (``eval --dataset folder:PATH``),
        which no draw of the run's concerns, and whose classes need only be among the model's, matched by name
        (:func:`class_columns`), as a cnnlab export's are on any dataset. ``some``: the user named the folder
        (``eval --data-dir FOLDER``), whose classes may be some of the model's too (a test set lacking a class),
        matched alike; its drawn split is still held to the run's.

        Returns:
            the model's output for each of the dataset's classes, in the dataset's order, and what the scored line
            says of how they were matched (nothing where they are the model's classes).
        """
        if other:
            return class_columns(self.meta.classes, data.classes, data.name)
        if some and list(data.classes) != list(self.meta.classes):
            matched = class_columns(self.meta.classes, data.classes, data.name)
        else:
            check_same_classes(self.meta, data.classes, f"dataset {data.name}")
            matched = list(range(len(data.classes))), []
        check_same_test_split(self.checkpoint.get("dataset") or {}, data, validated=not holds_out_nothing(self.config))
        return matched

    def scored_images(self, data: Any, other: bool = False) -> tuple[torch.Tensor, torch.Tensor, str]:
        """The images an evaluation of this model on ``data`` (checked by :meth:`check_dataset`) scores, their
        labels, and which they are in words (:func:`scored_images`; ``other`` as for :meth:`check_dataset`).

        Images of another dataset or folder than the run's are held against the run's own training images, where
        those are still at hand: ``eval --data-dir pets/train`` scored the images the model trained on as if unseen.
        The words then say how many are training images.
        """
        images, labels, scored = scored_images(self.checkpoint.get("dataset") or {}, data, other)
        if data.name != self.meta.dataset and \
                (seen := self._seen_in_training(images, _scored_digests(data, images), _scored_files(data, images))):
            scored = f"{scored}; {seen}"
        return images, labels, scored

    def held_out_split(self, data: Any) -> str | None:
        """Which split of ``data`` (checked by :meth:`check_dataset`) the run's report, page and export check show:
        "test", or "validation" where it is drawn as the run drew its folder with ``--test-split 0`` (no test split;
        :func:`drew_no_test_split`); None there for a run that held out nothing (no ``--val-split`` either,
        :func:`cnnlab.data.holds_out_nothing`: every image of ``data`` trained it)."""
        if not drew_no_test_split(self.checkpoint.get("dataset") or {}, data):
            return "test"
        return None if holds_out_nothing(self.config) else "validation"

    def why_nothing_held_out(self) -> str:
        """What a run that held out nothing (:meth:`held_out_split` None) says where a page would show its held-out
        images: one sentence, naming the data it trained on (not a folder read now, which may be another)."""
        return (f"Nothing held out: the run trained on every labelled image of {self.meta.dataset} (--test-split 0 "
                "without --val-split), so no image it never saw is left to score; cnnlab eval RUN/best.pt --dataset "
                "folder:OTHER scores it on another folder")

    def held_out_images(self, data: Any) -> tuple[torch.Tensor, torch.Tensor, str]:
        """The images the run's report, page and export check show of ``data``, the run's own dataset (checked by
        :meth:`check_dataset`), their labels, and which they are in words: those :meth:`scored_images` scores, but
        where the run held out no test split (:meth:`held_out_split`): its validation split, drawn again from its
        config (:func:`~cnnlab.data.split.run_split`), which ``data`` must hold its training images for."""
        held = self.held_out_split(data)
        if held == "test":
            return self.scored_images(data)
        if held is None:
            raise CnnlabError(self.why_nothing_held_out())
        split = run_split(self.config, data.train_labels)
        if split is None or not len(data.train_labels):  # a --test-split 0 run validates apart (TrainConfig)
            raise CnnlabError(f"the run held out no test split of {data.name} (--test-split 0) and its validation "
                              "split cannot be drawn again here (its config lacks val_split, or the training images "
                              "were not read)")
        val_idx = split[1]
        return data.train_images[val_idx], data.train_labels[val_idx], \
            f"the {len(val_idx)} validation images of {data.name} (the run held out no test split, --test-split 0; " \
            "best.pt was picked on these images, so their figures lean high)"

    def _seen_in_training(self, images: torch.Tensor, digests: torch.Tensor | None,
                          files: Callable[[], list[str]] | None) -> str | None:
        try:
            own = self.dataset(download=False)  # a check is no reason to fetch a training set
        except (CnnlabError, OSError):  # the run's own images moved or gone: nothing to hold these against
            return None
        if own.train_images.shape[1:] != images.shape[1:]:  # decoded otherwise: no image can be the same
            return None
        # the training part alone of a --val-split run: the model did not train on its validation images
        split = run_split(self.config, own.train_labels)
        trained_on = None if split is None else split[0]
        # a folder's cache keeps its images' digests: 100,000 training images are not hashed again on every call
        # and, of two folders, the files the first pair was decoded from (relative paths a user can find)
        return images_seen_in_training(own.train_images, images, "evaluation", own.train_digests, digests,
                                       trained_on, own.files_of("train"), files)


def names_folder(name: str, folder: str) -> bool:
    """Whether the dataset ``name`` (``folder:PATH`` as typed) is ``folder``, a run's ``folder:`` with its path
    resolved (as a folder dataset names itself)."""
    return name.startswith(FOLDER_PREFIX) and folder.startswith(FOLDER_PREFIX) and \
        Path(name.removeprefix(FOLDER_PREFIX)).expanduser().resolve() == Path(folder.removeprefix(FOLDER_PREFIX))


def _scored_digests(data: Any, images: torch.Tensor) -> torch.Tensor | None:
    """The loader's digests of the ``images`` :func:`scored_images` picked from ``data`` (its test split, or its
    training and test images in that order), or None where it keeps none."""
    parts = [data.test_digests] if images is data.test_images else [data.train_digests, data.test_digests]
    if any(part is None for part in parts):
        return None
    digests = parts[0] if len(parts) == 1 else torch.cat(parts)
    return digests if len(digests) == len(images) else None


def _scored_files(data: Any, images: torch.Tensor) -> Callable[[], list[str]] | None:
    """The files of the ``images`` :func:`scored_images` picked from ``data``, as :func:`_scored_digests` their
    digests, read when called; None where the loader knows none."""
    return data.files_of("test") if images is data.test_images else data.files_of("train", "test")


def moved_data(folder: str) -> DataError:
    """The error for a run's data that is not where the run found it, ``folder`` naming the folder it was in."""
    return DataError(f"{folder} is not a folder here; expected --data-dir with the folder its files are in now")


def load_trained(path: str | Path, device: str | torch.device = "cpu") -> Trained:
    """Rebuild the trained model of a checkpoint written by ``cnnlab train`` (weights-only read).

    Returns:
        a :class:`Trained` with the model in eval mode on ``device`` (the EMA weights when the run kept them), the
        :class:`cnnlab.data.Preprocess` that turns [0, 1] images into its input, and the metadata.

    Raises:
        CheckpointError: the file is missing, corrupt, not a cnnlab checkpoint, or its weights do not fit.
    """
    path, dev = Path(path), resolve_device(device)
    ckpt = load_checkpoint(path)
    meta = meta_of(ckpt, path)
    try:
        model = create_model(meta.model_name, num_classes=meta.num_classes, in_channels=meta.channels, ops=meta.ops)
        model.load_state_dict(ckpt.get("ema") or ckpt["model"])
    except KeyError as e:
        raise CheckpointError(f"{path} lacks the entry {e.args[0]!r} every cnnlab checkpoint has") from None
    except (RuntimeError, CnnlabError) as e:
        raise CheckpointError(f"{path}: weights do not fit model {meta.model_name!r} ({summary(e, 200)})") from None
    preprocess = Preprocess(meta.input_size, meta.mean, meta.std)
    return Trained(model.to(dev).eval(), preprocess.to(dev), meta, ckpt, path, dev)


def dataset_args(config: Mapping[str, Any], data_dir: str | Path | None = None,
                 name: str | None = None, decoded: Sequence[int] | None = None) -> dict[str, Any]:
    """The :func:`cnnlab.data.load_dataset` arguments of the dataset a run was configured with (``config`` is a
    TrainConfig as a dict, e.g. a checkpoint's): what decides which images it loads, short of ``download``.

    ``data_dir`` overrides the run's own ``data_dir`` (the data may live elsewhere on the machine that evaluates);
    for a ``folder:`` dataset it is where the folder is now (moved or copied since the run trained). ``name``
    overrides its dataset (a checkpoint's ``Meta.dataset`` holds a folder's absolute path, where the config holds
    what the user typed, perhaps relative to another working folder).

    A folder is decoded for the input the run feeds its model (``input_side``: ``--resize``, else the model's input
    side, which may raise the cap on the side the folder is decoded at: photos resized to 384 are stored at up to
    384, not at 224 and enlarged), so that every reader of the run (train, resume, eval, report, the explorer,
    torchrun's ranks) names the cache entry the run decoded.

    ``decoded``: the (image size, channels) the run's images were decoded at, as its checkpoint records them (the
    readers of an existing run: eval, report, resume, the explorer, ``export --verify``). A folder is asked for them
    where the run left them to the loader, rather than for what the loader would choose today: a run from before a
    model's side raised the cap (``--resize 384``, stored at 224) reads the entry it decoded, not a second one at
    384, and a resume goes on with the very images it began with; a run made since names the side its cap chose,
    found in the entry it decoded (:func:`cnnlab.data.folder.load_folder` looks for a side asked among the chosen
    ones). Another folder scored by the run (``eval --dataset folder:OTHER``) is decoded as the model's images were.
    """
    name = name or config.get("dataset") or "fashion-mnist"
    if name.startswith(FOLDER_PREFIX) and data_dir is not None:
        name, data_dir = moved_folder(name, data_dir), ""  # a folder names itself: no root beside it
    image_size, channels = config.get("image_size"), config.get("channels")
    if decoded is not None and name.startswith(FOLDER_PREFIX):
        image_size, channels = image_size or decoded[0], channels or decoded[1]
    return {"name": name, "root": data_dir if data_dir is not None else config.get("data_dir"),
            "image_size": image_size, "channels": channels,
            "skip_bad": bool(config.get("skip_bad_images", False)), "test_split": config.get("test_split"),
            "input_side": config.get("resize") or model_input_side(config.get("model"))}


def model_input_side(model: str | None) -> int | None:
    """The input side of the registered model ``model`` (a run's, or a cnnlab export's ``cnnlab.model``), for
    :func:`cnnlab.data.load_dataset`'s ``input_side``; None where there is none of that name."""
    try:
        return model_info(model).input_size if model else None
    except CnnlabError:  # unknown here (a run of another version's model): the folder's default cap
        return None


def dataset_of(config: Mapping[str, Any], data_dir: str | Path | None = None, name: str | None = None,
               download: bool = True, decoded: tuple[int, int] | None = None, training: bool = True):
    """The dataset a run was configured with (arguments as :func:`dataset_args`); ``download=False`` only reads
    what is on disk; ``training=False`` leaves out the training images of a converted registered dataset
    (:func:`cnnlab.data.load_dataset`).

    ``decoded``: the (image size, channels) a trained model's images had (:func:`dataset_args`). A folder of images
    that chooses its own (the run gave no ``--image-size``/``--channels``) is read at the model's, so that its test
    images are the model's kind of image even where it would choose others now (larger or colour training images
    added since).
    """
    # cnnlab.data.load_dataset is looked up at call time: tests replace it to prove bad arguments fail before any
    # data is read.
    return cnnlab.data.load_dataset(**dataset_args(config, data_dir, name, decoded), download=download,
                                    training=training)


def check_same_classes(meta: Meta, classes: tuple[str, ...], what: str) -> None:
    """Refuse to evaluate or continue a model on a dataset whose classes differ from the ones it learnt (names
    compared in their composed Unicode form, as a folder's class folders are matched)."""
    if [unicodedata.normalize("NFC", c) for c in classes] != [unicodedata.normalize("NFC", c) for c in meta.classes]:
        shown = lambda c: ", ".join(c[:5]) + (", ..." if len(c) > 5 else "")  # noqa: E731
        raise CnnlabError(f"{what} has {len(classes)} classes ({shown(tuple(classes))}), but the model was trained "
                          f"on {meta.num_classes} ({shown(meta.classes)}) of {meta.dataset}")


def check_several_classes(classes: Sequence[str], name: str) -> None:
    """Refuse a dataset ``name`` of one class: its one output column would be every answer, right whatever the model
    said."""
    if len(classes) >= 2:
        return
    split = name.startswith(FOLDER_PREFIX) and any(classes[0].lower() in n for n in SPLIT_NAMES.values())
    # a test set kept as PATH/test/<class>/ without train/: the folder of its classes is one level down
    hint = f" (its one subfolder {classes[0]}/ is read as a class: for the classes in it, pass --data-dir " \
           f"{Path(name.removeprefix(FOLDER_PREFIX)) / classes[0]})" if split else ""
    raise CnnlabError(f"{name} has one class ({classes[0]!r}): scored over it alone, every answer would be right "
                      f"whatever the model; expected a dataset of 2 classes or more{hint}")


def class_columns(model: Sequence[str], data: Sequence[str], name: str,
                  remedy: str = "") -> tuple[list[int], list[str]]:
    """The model's output for each of dataset ``name``'s classes ``data``, in the dataset's order, matched by name,
    and what the scored line says of how (nothing where the model has exactly the dataset's classes). The dataset's
    classes must be among the model's, 2 or more; a model of more classes is scored over the dataset's alone (the
    likeliest of those). ``remedy`` ends the refusal of a class the model does not name (", or --classes ...").

    Both a checkpoint's eval of another dataset and a model from elsewhere's
    (:func:`cnnlab.explore.evaluation.evaluate_any`) match classes here, so that they score a folder alike.
    """
    check_several_classes(data, name)
    # a name is its characters, however encoded: a folder unzipped from macOS spells 'ü' as 'u' and a combining mark
    # (NFD), a names file typed elsewhere as one character (NFC)
    names, wanted = ([unicodedata.normalize("NFC", c) for c in classes] for classes in (model, data))
    column = {n: i for i, n in reversed(list(enumerate(names)))}  # each name's first output (a dict: 1,000 classes)
    missing = [c for c, n in zip(data, wanted, strict=True) if n not in column]
    if missing:
        # a folder named 'Golden Retriever' for the model's 'golden retriever' is another class: matched by name
        # exactly, but the one line says which name it nearly is
        folded = {n.casefold(): m for m, n in reversed(list(zip(model, names, strict=True)))}
        near = next(((c, folded[n.casefold()]) for c, n in zip(data, wanted, strict=True)
                     if n not in column and n.casefold() in folded), None)
        case = f"; {near[0]!r} differs from the model's {near[1]!r} only in case" if near else ""
        raise CnnlabError(f"{name} has classes the model does not name ({_first_three(missing)}; the model's: "
                          f"{', '.join(map(repr, model[:5]))}{', ...' * (len(model) > 5)}{case}); expected a dataset "
                          f"of the model's classes{remedy}")
    columns = [column[n] for n in wanted]
    if len(model) > len(data):
        present = set(wanted)  # (a set: ImageNet's 1,000 names against a folder's)
        absent = [c for c, n in zip(model, names, strict=True) if n not in present]
        return columns, [f"scored over the dataset's {len(data)} classes among the model's {len(model)} (absent: "
                         f"{_first_three(absent)}): each answer is the likeliest of those {len(data)}"]
    return columns, []


def _first_three(names: Sequence[str]) -> str:
    """Class names in a line, quoted: the first three and how many more (``'a', 'b', 'c' and 4 more``)."""
    return ", ".join(map(repr, names[:3])) + (f" and {len(names) - 3} more" if len(names) > 3 else "")


def scored_images(recorded: Mapping[str, Any], data: Any,
                  other: bool = False) -> tuple[torch.Tensor, torch.Tensor, str]:
    """The images to score a run's model on in ``data``, their labels, and which they are, in words for the user.

    The test split, except where a folder without ``test/`` draws its own: a seeded 1/6 of it (or the run's
    ``--test-split``) is the test split of the run's own folder (the model trained on the rest), but of another folder
    (``--data-dir`` naming a set the run did not train on) it would score a random sixth of images the model never saw
    and leave the rest out, so that folder is scored whole; the run's own folder without a test split
    (``--test-split 0``) is refused. ``recorded`` is the run's "dataset" entry, already held to ``data`` by
    :func:`check_same_test_split` (empty for a model from elsewhere, which no run trained); ``data`` an
    :class:`cnnlab.data.ImageDataset`; ``other``: the user named it as another dataset than the run's (``eval
    --dataset folder:PATH``), so that a folder without ``test/`` is scored whole, whatever the run drew.

    Raises:
        CnnlabError: the run's own folder had a ``test/`` folder when it trained and has none now: its drawn split
            would be images the model trained on.
    """
    n = len(data.test_labels)
    if data.held_out is None:
        return data.test_images, data.test_labels, f"the {n} test images of {data.name}"
    if not other and drew_no_test_split(recorded, data):
        raise CnnlabError(f"the run held out no test split of {data.name} (--test-split 0): every image of it trained "
                          "or validated the model; expected images it never saw: --dataset folder:OTHER names "
                          "another folder")
    lacks = held_out_source(data.name)  # a test/ folder, or a CSV's test rows
    if not other:  # the run's own draw, where this may be its folder (another dataset named is no run's)
        if recorded.get("held_out"):  # the same draw (check_same_test_split refuses another): its folder, moved
            return data.test_images, data.test_labels, \
                f"the {n} test images drawn from {data.name} (no {lacks}): those the run held out"
        if not recorded.get("training_files") and recorded.get("name", "").startswith(FOLDER_PREFIX):
            # a folder run from before the records: it drew its test split as this folder does, or had a test/ folder
            return data.test_images, data.test_labels, \
                f"the {n} test images drawn from {data.name} (no {lacks}): a seeded 1/6, as the run would draw it"
    if data.name == recorded.get("name"):
        had, back = (f"a {lacks}", f"{data.name.removeprefix(FOLDER_PREFIX)}/test/<class>/<image>") \
            if lacks == "test/ folder" else (lacks, f"the {lacks}")
        raise CnnlabError(f"{data.name} had its own test split ({had}) when the run trained and has none now, so a "
                          f"drawn one would hold images the model trained on; expected {back} back")
    whole = len(data.train_labels) + n
    # a model from elsewhere (no record) has no run whose folder this could have been
    not_its = " and is not the folder the run trained on" if recorded else ""
    return joined(data.train_images, data.test_images), torch.cat([data.train_labels, data.test_labels]), \
        f"all {whole} images of {data.name}: it has no {lacks}{not_its}"


def drew_no_test_split(recorded: Mapping[str, Any], data: Any) -> bool:
    """Whether ``data`` is drawn as the run drew its folder with ``--test-split 0`` (no test split): ``recorded`` is
    the run's "dataset" entry, already held to ``data`` by :func:`check_same_test_split`."""
    then = recorded.get("held_out")
    return bool(then) and int(then[0]) == 0 and data.held_out is not None and int(data.held_out[0]) == 0


def _check_same_files_validated(recorded: Mapping[str, Any], data: Any) -> None:
    """Refuse ``data`` when the files of a run that held out no test split are not those it trained and validated on:
    its validation split, drawn again from them, would hold images the model trained on."""
    then, now = recorded.get("training_files"), getattr(data, "training_files", None)
    change = training_files_change(then, now) if then and now is not None else ""
    if not change:
        return
    raise CnnlabError(f"the images of {data.name} are not those the run trained and validated on ({change}), and the "
                      "run held out no test split (--test-split 0): its validation split drawn again would hold images "
                      "the model trained on; put the folder back as it was when the run trained, or name another "
                      "folder as one (cnnlab eval --dataset folder:PATH)")


def check_same_test_split(recorded: Mapping[str, Any], data: Any, validated: bool = True) -> None:
    """Refuse ``data`` when its drawn test split is not the one the run held out when it trained.

    A folder without ``test/`` gets its test split drawn by the loader from the files present; a file deleted or
    added since the run trained draws another split, whose test images the model partly trained on (about 1 in 11
    of them after one deletion), so the accuracy would be silently inflated. ``recorded`` is the run's "dataset"
    entry (checkpoint or config.json); ``data`` has the ``name`` and ``held_out`` of a
    :class:`cnnlab.data.ImageDataset`. Runs from before this record, and other datasets, are not checked.

    A folder at another path (``--data-dir``: the folder moved, or another one) is checked when it draws its test
    split too, since the hash is of paths relative to the folder: a moved folder that lost a file is refused as
    it would be in place. One with its own ``test/`` there is a test set of its own, and accepted.

    A run that held out no test split (``--test-split 0``) is shown on its validation split, drawn again from every
    file: a draw of none is the same of any folder, so the files themselves (``training_files``) are held to the run's.
    ``validated`` False: the run drew no validation split either (it held out nothing,
    :func:`cnnlab.data.holds_out_nothing`), so none is drawn again and its files are held to nothing here.
    """
    then = recorded.get("held_out")
    now, moved = data.held_out, recorded.get("name") != data.name
    if not then or (moved and now is None):
        return
    if drew_no_test_split(recorded, data):
        if validated:
            _check_same_files_validated(recorded, data)
        return
    if now is not None and [int(now[0]), str(now[1])] == [int(then[0]), str(then[1])]:
        return
    # the split a folder of its own keeps fixed: a test/ folder, or a CSV folder's test rows (its images are in none)
    source = held_out_source(data.name)
    in_folders = source == "test/ folder"
    own = "a PATH/test/<class>/ folder" if in_folders else f"a split column of {source}"
    if now is None:
        change = f"{then[0]} files drawn then, {'a test/ or val/ folder' if in_folders else source} now"
    elif now[0] != then[0]:
        change = f"{then[0]} files then, {now[0]} now"
    else:
        change = f"{then[0]} files then and now, but other ones"
    if moved:
        raise CnnlabError(f"the test split drawn from {data.name} is not the one the run drew from "
                          f"{recorded.get('name')} ({change}): if this is the run's folder, moved, its test images "
                          "would include images the model trained on, so put it back as it was when the run trained; "
                          f"if it is another folder, name it as one (cnnlab eval --dataset folder:PATH) or give it "
                          f"{own}{' of its own' * in_folders}")
    raise CnnlabError(f"the held-out test split of {data.name} changed since the run trained ({change}): its test "
                      "images would include images the model trained on; put the folder back as it was when the run "
                      f"trained, or train a new run on the folder as it is ({own} keeps the split fixed)")
