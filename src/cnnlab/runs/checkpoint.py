"""Checkpoints: plain tensor containers, written atomically, read with ``weights_only=True``.

A checkpoint from somebody else must never run code here: ``torch.load`` without ``weights_only=True``
unpickles arbitrary objects (see the PyTorch docs on ``torch.load`` and the 2.6 change of its default). So every
checkpoint cnnlab writes holds only tensors, numbers, strings, lists and dicts, and every read refuses anything else.
"""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any

import torch

from cnnlab.data import CLASSES, MEAN, STD
from cnnlab.errors import CheckpointError, CnnlabError, ForeignCheckpointError, summary, weights_only_refusal
from cnnlab.io import atomic_write
from cnnlab.models.state_dict import (
    ARCHIVES,
    KERAS,
    held,
    is_safetensors,
    load_weights_only,
    pickled_way,
    read_safetensors,
    refusal,
    zip_kind,
)

FORMAT = "cnnlab-checkpoint"
# The names the checkpoint reader is given a file by; weights alone (a state dict, a .safetensors file) are told how to
# name their network, and a torch.export program saved under one of them is told apart by its archive
CHECKPOINT_SUFFIXES = (".pt", ".pth", ".ckpt", ".safetensors")
# Version 2 adds the "dataset" entry (name, classes, channels, stored image side, mean/std, flip policy) that
# inference needs for datasets other than Fashion-MNIST; version-1 files (Fashion-MNIST only) are read as
# version 2 by filling that entry in (:func:`upgrade`).
VERSION = 2
READABLE = (1, 2)
# What the one-line refusals of another kind of file ask for (a reader that takes more, --init-from, says so)
WRITTEN = "a .pt file written by cnnlab train, e.g. RUN_DIR/best.pt"
# How the one-line refusals of a file from elsewhere (a state dict, a pickled module) go on: what opens its network
ELSEWHERE = ("a network from elsewhere is explored as .onnx, as .pt2 (torch.export.save), or built by name "
             "(imagenet-resnet18) or by module:function with a state dict as --weights FILE")


def names_a_checkpoint(path: str | Path) -> bool:
    """Whether ``path`` is for the checkpoint reader (:func:`load_checkpoint`) by its name, rather than a model file
    of another kind: a :data:`CHECKPOINT_SUFFIXES` name that holds no ``torch.export`` program."""
    path = Path(path)
    return path.suffix.lower() in CHECKPOINT_SUFFIXES and not (path.is_file() and zip_kind(path) == "pt2")


def save_checkpoint(state: dict[str, Any], path: str | Path) -> None:
    """Write ``state`` (tensors and plain containers only) atomically to ``path``."""
    state = {"format": FORMAT, "version": VERSION, **state}
    atomic_write(path, lambda tmp: torch.save(state, tmp))


def checkpoint_in(folder: str | Path) -> Path | None:
    """The checkpoint to suggest for a run folder given where a checkpoint goes: best.pt, else last.pt, else None."""
    return next((Path(folder) / name for name in ("best.pt", "last.pt") if (Path(folder) / name).is_file()), None)


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu",
                    expected: str = WRITTEN) -> dict[str, Any]:
    """Read a cnnlab checkpoint safely; anything but a plain tensor container raises a one-line CheckpointError.
    The refusals of a file of another kind (:func:`refuse_another_kind`) and of a safetensors file end with
    ``expected``, what the caller takes (a checkpoint, or for ``--init-from`` weights from elsewhere too); those of a
    folder, a missing, damaged or pickled file and another version say what cnnlab train writes."""
    path = Path(path)
    if path.is_dir():  # a run folder, most likely: name the checkpoint in it rather than say nothing is there
        inside = checkpoint_in(path)
        hint = f"; pass {inside}" if inside else " holding no best.pt or last.pt"
        raise CheckpointError(f"checkpoint {path} is a folder{hint} (expected a .pt file written by cnnlab train)")
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist (expected a .pt file written by cnnlab train)")
    refuse_another_kind(path, expected)
    if is_safetensors(path):  # weights from elsewhere (timm's, the Hub's): tensors only, so reading them is safe
        try:
            state = read_safetensors(path, expected)
        except CnnlabError as e:
            raise CheckpointError(str(e)) from None
        raise ForeignCheckpointError(f"{path} is not a cnnlab checkpoint: it holds {held(state)} (safetensors); "
                                     f"expected {expected}", state)
    try:
        state = load_weights_only(path, map_location)
    except pickle.UnpicklingError as e:
        # weights_only refused a global: the file wants to build arbitrary Python objects (it may carry code).
        # torch.save(model) most often: what to save instead, for every command that reads a checkpoint
        raise ForeignCheckpointError(f"refusing {path}: it is not a plain tensor container "
                                     f"({weights_only_refusal(e)}){pickled_way(path, e)}; cnnlab never unpickles code; "
                                     "expected a .pt file "
                                     "written by cnnlab train (a network of your own: save its weights alone, "
                                     "torch.save(model.state_dict(), FILE), for --init-from or --weights)") from None
    except Exception as e:  # a damaged pickle can fail in any way (IndexError, KeyError, struct.error, ...)
        raise CheckpointError(f"cannot read checkpoint {path}: corrupt or truncated ({summary(e)})") from None
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise ForeignCheckpointError(f"{path} is not a cnnlab checkpoint: it holds {held(state)}; expected "
                                     f"format {FORMAT!r}, as cnnlab train writes", state)
    if state.get("version") not in READABLE:
        raise CheckpointError(f"{path} has checkpoint version {state.get('version')!r}, expected one of "
                              f"{', '.join(map(str, READABLE))}")
    return upgrade(state)


def refuse_another_kind(path: Path, expected: str = WRITTEN) -> None:
    """Refuse the existing file ``path`` in one line where its first bytes show it is no file torch.save writes (nor
    a safetensors file, whose tensors are read later): cheap, so that ``--init-from`` says so before the data is read.

    Raises:
        CheckpointError: another kind of file (a Keras model, a torch.export program, text), ending with
            ``expected``; a :class:`ForeignCheckpointError` of nothing read for a TorchScript archive.
    """
    try:
        with open(path, "rb") as f:
            head = f.read(2)
    except OSError as e:
        raise CheckpointError(f"cannot read checkpoint {path}: {e.strerror or e}") from None
    if is_safetensors(path):
        return
    kind = zip_kind(path)  # zip archives too, whose failure torch would call corrupt
    if kind in KERAS:
        raise CheckpointError(f"{refusal(path, kind, 'a cnnlab checkpoint')}; expected {expected}")
    # torch.save writes a zip archive (or, before torch 1.6, a pickle stream, which starts with its protocol byte);
    # anything else is another kind of file (a run's config.json, an .onnx export), which the unpickler would only
    # call an unsupported operand.
    if head and head != b"PK" and head[:1] != b"\x80":
        raise CheckpointError(f"{path} is not a PyTorch checkpoint (neither the zip archive nor the pickle that "
                              f"torch.save writes); expected {expected}")
    if kind == "pt2":
        raise CheckpointError(f"{path} is {ARCHIVES[kind]}, not a cnnlab checkpoint: cnnlab explore opens it; "
                              f"expected {expected}")
    if kind == "torchscript":  # its forward is code from the file, which cnnlab does not run (and torch deprecates)
        raise ForeignCheckpointError(f"{path} is {ARCHIVES[kind]}, not a cnnlab checkpoint, and its code is not run "
                                     f"from a file; expected {expected}")


def upgrade(state: dict[str, Any]) -> dict[str, Any]:
    """A checkpoint without the "dataset" entry (version 1: every one of them trained on Fashion-MNIST) as
    version 2, with that entry filled in."""
    if "dataset" not in state:
        state["dataset"] = {"name": "fashion-mnist", "classes": list(CLASSES), "channels": state.get("in_channels", 1),
                            "image_size": 28, "mean": [MEAN], "std": [STD], "flip": True}
    state["version"] = VERSION
    return state
