"""Checkpoints: plain tensor containers, written atomically, read with ``weights_only=True``.

A checkpoint from somebody else must never run code here: ``torch.load`` without ``weights_only=True``
unpickles arbitrary objects (see the PyTorch docs on ``torch.load`` and the 2.6 change of its default). So every
checkpoint cnnlab writes holds only tensors, numbers, strings, lists and dicts, and every read refuses anything else.
"""

from __future__ import annotations

import os
import pickle
import re
import tempfile
import warnings
from pathlib import Path
from typing import Any

import torch
from torch import nn

from cnnlab.errors import CheckpointError

FORMAT = "cnnlab-checkpoint"
VERSION = 1


def atomic_write(path: str | Path, write) -> None:
    """Call ``write(tmp_path)`` then move the file into place, so a crash leaves the previous ``path`` intact.

    The temporary file lives in the destination folder (``os.replace`` is atomic only within one file system)
    and is fsync'ed before the rename.
    """
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    umask = os.umask(0)  # mkstemp makes 0600 files; give the result the mode a plain open() would
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)
    try:
        write(tmp)
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def remove_stale_temporaries(folder: str | Path) -> list[Path]:
    """Delete the temporary files :func:`atomic_write` left in ``folder`` when its process died mid-write.

    Only names of its own pattern (``.NAME.RANDOM.tmp``) go; call it only while no other process writes there
    (a resumed run owns its folder). Returns what was removed.
    """
    stale = [p for p in Path(folder).glob(".*.*.tmp") if p.is_file()]
    for p in stale:
        p.unlink(missing_ok=True)
    return stale


def save_checkpoint(state: dict[str, Any], path: str | Path) -> None:
    """Write ``state`` (tensors and plain containers only) atomically to ``path``."""
    state = {"format": FORMAT, "version": VERSION, **state}
    atomic_write(path, lambda tmp: torch.save(state, tmp))


def _refusal_reason(error: Exception) -> str:
    """The line of torch's weights_only refusal that names the offending global or opcode.

    torch's message is several lines of advice (including re-running with ``weights_only=False``, which is
    exactly what must not be done with a stranger's file) around one line of fact, sometimes with ANSI colours.
    """
    lines = [re.sub(r"\x1b\[[0-9;]*m", "", line).strip() for line in str(error).splitlines()]
    facts = [line for line in lines if re.search(r"GLOBAL|[Uu]nsupported", line) and "weights_only" not in line]
    if not facts:
        return "unsupported object"
    fact = facts[0].removeprefix("WeightsUnpickler error:").strip()
    return fact.split(". ")[0].rstrip(".")[:160]  # the first sentence; the rest is allow-listing advice


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Read a cnnlab checkpoint safely; anything but a plain tensor container raises a one-line CheckpointError."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist (expected a .pt file written by cnnlab train)")
    try:
        with warnings.catch_warnings():  # a bare pickle stream warns about its protocol before being refused
            warnings.filterwarnings("ignore", message="Detected pickle protocol", category=UserWarning)
            state = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as e:
        # weights_only refused a global: the file wants to build arbitrary Python objects (it may carry code).
        raise CheckpointError(f"refusing {path}: it is not a plain tensor container ({_refusal_reason(e)}); "
                              "cnnlab never unpickles code") from None
    except Exception as e:  # a damaged pickle can fail in any way (IndexError, KeyError, struct.error, ...)
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise CheckpointError(f"cannot read checkpoint {path}: corrupt or truncated ({first[:160]})") from None
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise CheckpointError(f"{path} is not a cnnlab checkpoint (expected format {FORMAT!r})")
    if state.get("version") != VERSION:
        raise CheckpointError(f"{path} has checkpoint version {state.get('version')!r}, expected {VERSION}")
    return state


def load_model(path: str | Path, device: str | torch.device = "cpu") -> tuple[nn.Module, nn.Module, dict[str, Any]]:
    """Rebuild the trained model of a checkpoint.

    Returns:
        ``(model, preprocess, checkpoint)``: the model in eval mode with the checkpoint's weights (the EMA weights
        when the run kept them), the :class:`cnnlab.data.Preprocess` that turns N x 1 x 28 x 28 images in [0, 1]
        into its input, and the raw checkpoint dict.
    """
    from cnnlab.data import Preprocess
    from cnnlab.models import create_model

    ckpt = load_checkpoint(path)
    try:
        model = create_model(ckpt["model_name"], num_classes=ckpt["num_classes"], in_channels=ckpt["in_channels"],
                             ops=ckpt.get("ops", "torch"))
        model.load_state_dict(ckpt.get("ema") or ckpt["model"])
    except KeyError as e:
        raise CheckpointError(f"{path} lacks the entry {e.args[0]!r} every cnnlab checkpoint has") from None
    except RuntimeError as e:
        first = str(e).splitlines()[0]
        raise CheckpointError(f"{path}: weights do not fit model {ckpt['model_name']!r} ({first})") from None
    norm = ckpt.get("normalize")
    preprocess = Preprocess(ckpt["input_size"], *(norm if norm else (None, None)))
    return model.to(device).eval(), preprocess.to(device), ckpt
