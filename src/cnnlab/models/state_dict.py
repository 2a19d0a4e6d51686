"""A network's weights from a file: a state dict read weights-only, and put into a network exactly.

The file is read by ``torch.load(weights_only=True)``, so a file that wants to build Python objects is refused and its
code never runs; a ``.safetensors`` file (Hugging Face's format, which timm's and the Hub's weights come in) by the
safetensors library, whose format holds tensors and nothing else. What other tools save around a state dict is read
through: a dict holding one under ``state_dict`` or ``model`` (a training script's or PyTorch Lightning's checkpoint,
fastai's ``learn.save``), Python objects beside it that the weights-only read refuses (Lightning's hyper-parameters,
fastai's optimizer state: read as nothing, :func:`load_weights_only`), and keys that all carry a prefix of whole names
the network lacks (``module.`` from ``DataParallel``/``DistributedDataParallel``, ``_orig_mod.`` from torch.compile, a
Lightning module's attribute name, or several of them), which is dropped only when the keys then fit the network
exactly (or the keys under one prefix alone do: :func:`without_prefix`). A Hugging Face Transformers ResNet's or
ConvNeXt's ``save_pretrained`` weights are read under torchvision's names (:mod:`cnnlab.models.transformers_keys`),
and so are timm's ConvNeXt's, EfficientNet's, RegNet's and VGG's (:mod:`cnnlab.models.timm_keys`). A backbone saved
without its classifier is told as such (:func:`headless`): its body starts a fine-tuning run, and it is refused as a
classifier, since it names no classes.
Keras's files are told by their contents and refused with the way in (their ONNX export)."""

from __future__ import annotations

import pickle
import re
import warnings
import zipfile
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file
from torch import nn

# torch.export.pt2_archive.constants re-exports these names from torch._C; importing it runs its package's __init__,
# which imports torch._dynamo, the compiler's front end: a large import that no command needs to read a file.
from torch._C._export import pt2_archive_constants as pt2

from cnnlab.errors import CnnlabError, summary, weights_only_refusal
from cnnlab.io import json_beside
from cnnlab.models import timm_keys, transformers_keys
from cnnlab.models.pretrained_quirks import densenet_new_keys

WRAPPER_KEYS = ("state_dict", "model", "model_state_dict")  # where training scripts and Lightning keep the weights
SAVED = "saved by torch.save or as .safetensors"  # the two ways a state dict comes, for "expected ..." lines
ARCHIVES = {"pt2": "a torch.export program (.pt2)", "torchscript": "a TorchScript archive (torch.jit.save)",
            "keras": "a Keras model (model.save's .keras)", "hdf5": "an HDF5 file (Keras's .h5 or .weights.h5)"}
KERAS = ("keras", "hdf5")  # the kinds :data:`KERAS_WAY` is said for
KERAS_WAY = "cnnlab does not build Keras networks (export the model to ONNX, model.export('model.onnx', " \
            "format='onnx'), and open the .onnx)"
HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"
# Ultralytics saves its networks pickled whole (a .pt of ultralytics.nn.tasks.ClassificationModel, ...): the class
# that weights_only refuses names the tool, and its export is the way in
ULTRALYTICS = re.compile(r"GLOBAL ultralytics\.")


def is_state_dict(value: Any) -> bool:
    """Whether ``value`` is a state dict: a non-empty dict of tensors."""
    return isinstance(value, dict) and bool(value) and all(isinstance(v, torch.Tensor) for v in value.values())


def held(value: Any) -> str:
    """What a weights-only read gave, in a few words for an error line: a state dict (weights without their
    network) is the usual stranger, alone or in a training script's, Lightning's or fastai's checkpoint."""
    if is_state_dict(value):
        return f"a state dict of {len(value)} tensors (the first {next(iter(value))!r}), weights without a network"
    inner = wrapper_key(value)
    if inner is not None:
        state = value[inner]
        return (f"a state dict of {len(state)} tensors under {inner!r} (the first {next(iter(state))!r}) beside "
                f"{_names([k for k in value if k != inner])}, weights without a network")
    if isinstance(value, dict):
        return f"a dict of {_names(list(value))}" if value else "an empty dict"
    return f"a {type(value).__name__}"


def _names(keys: list) -> str:
    """A dict's first four keys, for an error line."""
    return ", ".join(repr(k) for k in keys[:4]) + (", ..." if len(keys) > 4 else "")


def zip_kind(path: str | Path) -> str | None:
    """What file of another kind than torch.save's ``path`` is, a key of :data:`ARCHIVES`: ``"pt2"`` (torch.export
    names its format in an ``archive_format`` entry), ``"torchscript"`` (torch.jit.save's holds a ``constants.pkl``,
    as torch.load tells it), ``"keras"`` (Keras 3's zip of ``metadata.json``, ``config.json`` and the weights),
    ``"hdf5"`` (Keras's ``.h5`` files, by HDF5's signature), or None (a torch.save archive, or another file)."""
    try:
        with open(path, "rb") as f:
            if f.read(len(HDF5_SIGNATURE)) == HDF5_SIGNATURE:
                return "hdf5"
        with zipfile.ZipFile(path) as archive:
            records = {name.split("/", 1)[-1] for name in archive.namelist()}
    except Exception:  # a damaged archive fails in many ways (a flipped bit in a name: UnicodeDecodeError); the
        return None  # read that follows names the damage
    if pt2.ARCHIVE_FORMAT_PATH in records:
        return "pt2"
    if "constants.pkl" in records:
        return "torchscript"
    return "keras" if {"metadata.json", "config.json"} <= records else None


def refusal(path: str | Path, kind: str, instead: str) -> str:
    """The line refusing ``path``, a file of ``kind`` (:func:`zip_kind`), as not ``instead`` ("a state dict"), with
    what to do for a Keras model."""
    return f"{path} is {ARCHIVES[kind]}, not {instead}" + (f": {KERAS_WAY}" if kind in KERAS else "")


def pickled_way(path: str | Path, error: BaseException) -> str:
    """What to do with ``path``, a file of Python objects that a weights-only read refused with ``error``, where the
    tool that wrote it is known (Ultralytics), as a clause for the refusal's line; '' for any other."""
    if ULTRALYTICS.search(weights_only_refusal(error)):
        return (f"; it is an Ultralytics checkpoint: explore, predict and eval open its ONNX export (yolo export "
                f"model={path} format=onnx)")
    return ""


def is_safetensors(path: str | Path) -> bool:
    """Whether ``path`` is a safetensors file: named ``.safetensors`` (read as one even when damaged, so that the
    damage is what its error line names), or laid out as one under any name: the length of its JSON header (8 bytes,
    little-endian) within the file, then the header's ``{``."""
    if Path(path).suffix.lower() == ".safetensors":
        return True
    try:
        with open(path, "rb") as f:
            head = f.read(9)
            size = f.seek(0, 2)
    except OSError:
        return False
    return len(head) == 9 and head[8:] == b"{" and int.from_bytes(head[:8], "little") <= size - 8


def read_safetensors(path: str | Path, expected: str) -> dict[str, torch.Tensor]:
    """The tensors of the safetensors file ``path``, on the CPU.

    Raises:
        CnnlabError: one line: the file is damaged (its header or its data).
    """
    try:
        return load_file(path, device="cpu")
    except (SafetensorError, OSError, ValueError, TypeError) as e:  # a header the library cannot parse, or a dtype
        # this torch lacks
        raise CnnlabError(f"{path} is not a readable safetensors file (truncated or damaged: {summary(e)}); expected "
                          f"{expected}") from None


def safetensors_metadata(path: str | Path) -> dict[str, str]:
    """The text metadata in the header of the safetensors file ``path`` (``cnnlab export --format safetensors``
    writes its run's input side, normalisation and classes there); ``{}`` for a file of another kind, or one whose
    header cannot be read (reading its tensors names the damage)."""
    if not is_safetensors(path):
        return {}
    try:
        with safe_open(str(path), "pt") as f:
            return dict(f.metadata() or {})
    except Exception:  # noqa: BLE001  a damaged header fails in the library's own ways
        return {}


def read_state_dict(path: str | Path, expected: str, *, unreadable_hint: str = "") -> dict[str, torch.Tensor]:
    """The tensors of the state dict in ``path`` (:func:`read_weights` without what it left unread)."""
    return read_weights(path, expected, unreadable_hint=unreadable_hint)[0]


def read_weights(path: str | Path, expected: str, *,
                 unreadable_hint: str = "") -> tuple[dict[str, torch.Tensor], tuple[str, ...]]:
    """The tensors of the state dict in ``path`` (:func:`state_dict_in` what a weights-only read gives), and the
    names of the Python objects beside them read as nothing (:func:`load_weights_and_unread`; none for most files).

    Args:
        expected: what the file should have been, ending each error line ("expected {expected}").
        unreadable_hint: what to do about a file torch cannot read, for that one line.

    Raises:
        CnnlabError: one line: no such file, not readable, a pickle of Python objects (refused unread), or no
            state dict in it.
    """
    path = Path(path)
    if not path.is_file():
        raise CnnlabError(f"{path} {'is a folder' if path.is_dir() else 'does not exist'}; expected {expected}")
    if is_safetensors(path):
        return state_dict_in(read_safetensors(path, expected), path, expected), ()
    kind = zip_kind(path)  # torch.load would warn, then fail on these
    if kind is not None:
        raise CnnlabError(f"{refusal(path, kind, 'a state dict')}; expected {expected}")
    try:
        loaded, unread = load_weights_and_unread(path)
    except pickle.UnpicklingError as e:  # a file of Python objects, no state dict (torch.save(model), a fastai
        # Learner's export): ``expected`` says what to save instead
        raise CnnlabError(f"refusing {path}: it is not a plain state dict ({weights_only_refusal(e)})"
                          f"{pickled_way(path, e)}, and cnnlab never unpickles code; expected {expected}") from None
    except Exception as e:  # noqa: BLE001  torch.load raises many kinds, and every one means "not this file":
        # a truncated zip raises RuntimeError or EOFError, a file of another kind anything else
        raise CnnlabError(f"{path} is not a readable weights-only state dict (truncated, or another kind of file: "
                          f"{type(e).__name__}: {summary(e)}){unreadable_hint}; expected {expected}") from None
    return state_dict_in(loaded, path, expected), unread


class Unbuilt(list):
    """What a Python object that a weights-only read refuses is read as, beside a state dict: nothing. Its class is
    never looked up and its arguments and state are dropped, so no code of the file's runs. (A list, because
    torch's weights-only unpickler appends items only to lists: a pickled list subclass's items are then dropped
    here too.)"""

    def __new__(cls, *args: Any, **kwargs: Any) -> Unbuilt:
        return super().__new__(cls)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__()

    def __setstate__(self, state: Any) -> None:
        pass

    __hash__ = object.__hash__  # a dict key, perhaps


def load_weights_only(path: str | Path, map_location: Any = "cpu") -> Any:
    """What ``torch.load(path, weights_only=True)`` gives, objects beside a state dict read as nothing
    (:func:`load_weights_and_unread` without their names)."""
    return load_weights_and_unread(path, map_location)[0]


def load_weights_and_unread(path: str | Path, map_location: Any = "cpu") -> tuple[Any, tuple[str, ...]]:
    """What ``torch.load(path, weights_only=True)`` gives, and none; where it refuses a Python object and the file
    keeps a state dict beside such objects, that value with each of them read as an :class:`Unbuilt` (nothing), and
    the names (sorted) of the classes and functions they were to be built by, for the page to say what was left.

    Other tools save weights beside objects that a weights-only read refuses: PyTorch Lightning's checkpoint keeps
    the module's hyper-parameters (a ``pathlib.Path``, a numpy number, a module passed in), fastai's ``learn.save``
    its optimizer's state (fastcore's ``L``). torch's own weights-only unpickler still reads the file, allowed
    these names only as :class:`Unbuilt`; the objects are lost, the tensors kept.

    Raises:
        pickle.UnpicklingError: torch's refusal, where no state dict is kept beside the objects it refuses (the
            file is a pickled module or Learner), or this torch cannot list a file's objects (before 2.5).
        Exception: whatever torch.load raises for a damaged file or one of another kind.
    """
    with warnings.catch_warnings():  # a bare pickle stream warns about its protocol before being refused
        warnings.filterwarnings("ignore", message="Detected pickle protocol", category=UserWarning)
        try:
            return torch.load(path, map_location=map_location, weights_only=True), ()
        except pickle.UnpicklingError:
            listed = getattr(torch.serialization, "get_unsafe_globals_in_checkpoint", None)
            try:
                names = listed(path) if listed is not None else []
            except Exception:  # noqa: BLE001  a file it cannot list (an old pickle stream): the refusal stands
                names = []
            if not names:
                raise
            with torch.serialization.safe_globals([(Unbuilt, name) for name in names]):
                try:
                    loaded = torch.load(path, map_location=map_location, weights_only=True)
                except Exception:  # noqa: BLE001  an object in a form the unpickler refuses anyway (a dict
                    loaded = None  # subclass's items), or nothing a tensor can be rebuilt from: the refusal stands
            if not is_state_dict(loaded) and wrapper_key(loaded) is None:
                raise
            return loaded, tuple(sorted(names))


def wrapper_key(value: Any) -> str | None:
    """The key of :data:`WRAPPER_KEYS` under which the dict ``value`` keeps a state dict, or None."""
    if not isinstance(value, dict):
        return None
    return next((k for k in WRAPPER_KEYS if is_state_dict(value.get(k))), None)


def state_dict_in(value: Any, path: str | Path, expected: str) -> dict[str, torch.Tensor]:
    """The state dict that ``value`` (what a weights-only read of ``path`` gave) is, or keeps under
    ``state_dict``, ``model`` or ``model_state_dict``.

    Raises:
        CnnlabError: one line saying what it holds instead.
    """
    if not is_state_dict(value) and wrapper_key(value) is not None:
        value = value[wrapper_key(value)]
    if not is_state_dict(value):
        raise CnnlabError(f"{path} holds {held(value)}, not a state dict; expected {expected}")
    return value


@dataclass(frozen=True)
class Head:
    """What of a network a backbone saved without its classifier lacks: some of ``layer``, its output layer's
    state-dict keys (:func:`output_keys`: ``model.fc = nn.Identity()``, timm's ``num_classes=0``, Transformers'
    ``ResNetModel``), or all of ``block``, its head block's (:func:`head_block_keys`: ``model.classifier =
    nn.Identity()`` of a VGG or ConvNeXt)."""

    layer: frozenset[str] = frozenset()
    block: frozenset[str] = frozenset()

    @classmethod
    def of(cls, model: nn.Module) -> Head:
        """``model``'s output layer and head block."""
        return cls(output_keys(model), head_block_keys(model))

    def left_out(self, missing: set[str], state: dict[str, torch.Tensor]) -> bool:
        """Whether a network's ``missing`` keys are its classifier left out of ``state``: some of the output layer's,
        or the whole head block, none of whose keys ``state`` has. Part of a block's layers gone and part kept is
        another network, no body."""
        return bool(missing) and (missing <= self.layer or (missing <= self.block and not self.block & state.keys()))


def without_prefix(state: dict[str, torch.Tensor], keys: set[str],
                   optional: frozenset[str] = frozenset()) -> tuple[dict[str, torch.Tensor], str]:
    """``state`` with its keys read without the leading names the network's ``keys`` lack, where the keys then are
    exactly those, or those but some of the ``optional`` ones (its head block's: a body saved without its
    classifier); else as it is. Returns it and what was done, in words for the page (``""``: nothing).

    The prefix is whole dotted names, the fewest that make the keys fit: ``module.`` (``DataParallel``),
    ``_orig_mod.`` (a ``torch.compile``d model), ``model.`` (a Lightning module's attribute), or several of them
    (``module._orig_mod.``: a compiled model wrapped in ``DataParallel``). Where the keys do not all carry it, those
    under one prefix are taken if they alone fit: the network among other modules that keep tensors (a Lightning
    module's class-weighted loss, ``loss.weight``), the rest left out and said so. Two prefixes that fit (a student
    and its teacher of one architecture) are ambiguous and none is taken, unless one alone fits whole (the network
    beside a copy of its body without the head); keys that fit without a prefix but for the optional ones are such a
    body too, read as they are unless the whole network lies under one prefix. Exact fit is the test, so no key is
    ever matched to a tensor of another name.
    """
    needed = keys - optional
    if not state or keys <= set(state):
        return state, ""
    # the prefixes that as many keys carry as the network has (or lacking only optional ones), the only ones that can
    # fit (a network of thousands of tensors is not searched once per prefix)
    under = Counter(".".join(k.split(".")[:depth]) + "." for k in state for depth in range(1, k.count(".") + 1))
    fits = [head for head, count in under.items() if len(needed) <= count <= len(keys)
            and needed <= {k[len(head):] for k in state if k.startswith(head)} <= keys]
    whole = [head for head in fits if under[head] == len(keys)]  # the network with its head before one without
    if len(whole) != 1 and needed <= set(state):  # a body unprefixed, and no whole network under a prefix
        return state, ""
    fits = whole if len(whole) == 1 else fits
    if len(fits) != 1:  # none, or ambiguous
        return state, ""
    head = fits[0]
    rest = [k for k in state if not k.startswith(head)]
    how = f"its keys without their {head!r} prefix" if not rest else \
        f"its keys under {head!r} without that prefix, leaving out {len(rest)} other tensor(s) (the first {rest[0]!r})"
    return {k[len(head):]: v for k, v in state.items() if k.startswith(head)}, how


def network_keys(state: dict[str, torch.Tensor], keys: set[str], path: str | Path, network: str | None = None,
                 head: Head = Head(),
                 config: dict[str, Any] | None = None) -> tuple[dict[str, torch.Tensor], str]:
    """``state``, read from ``path``, with its keys as the network's ``keys`` name them where they are another
    tool's for the same tensors: without a prefix the network lacks (:func:`without_prefix`), DenseNet's older names
    as today's (:func:`~cnnlab.models.pretrained_quirks.densenet_new_keys`), or, where they are a
    Hugging Face Transformers ResNet's or ConvNeXt's or a timm ConvNeXt's, EfficientNet's, RegNet's or VGG's, under
    torchvision's names (:func:`~cnnlab.models.transformers_keys.torchvision_keys`,
    :func:`~cnnlab.models.timm_keys.torchvision_keys`), then without a wrapper's prefix. Returns it and what was
    done, in words for the page (``""``: nothing).

    Args:
        network: torchvision's builder of the network (``"convnext_tiny"``), where it is one: timm's config.json
            beside ``path`` must then name timm's architecture of it.
        head: the network's output layer and head block, which ``state`` may lack and still fit under a prefix (a
            body saved without its classifier).
        config: the ``config.json`` beside ``path`` (:func:`~cnnlab.io.json_beside`'s object) where the load has
            read it already for another reader, so that one read serves them all; read here otherwise.

    Raises:
        CnnlabError: one line: the ``config.json`` beside a Transformers file makes it another network than
            torchvision's, or timm's names another architecture than ``network``'s, or the keys are timm's
            MobileNetV3's for torchvision's, or another network of timm's than the family they look like (a ConvNeXt
            V2, an EfficientNet-Lite: :func:`~cnnlab.models.timm_keys.torchvision_keys`).
    """
    if config is None:  # timm's or Transformers', read once for both
        config = json_beside(path, "config.json")
    timm_keys.check_architecture(path, network, config)  # before any fit: timm's tf_efficientnet_b0 has b0's keys
    state, how = without_prefix(state, keys, head.block)
    missing = keys - set(state)
    # a network whose own names are Transformers' reads them as they are; a body without its head block holds no key
    # of another name (timm's VGG has torchvision's features, its classifier under other names: it is renamed)
    if how or missing <= head.layer or (missing <= head.block and set(state) <= keys):
        return state, how
    current = densenet_new_keys(state)
    if current.keys() != state.keys():  # torchvision's hosted DenseNet files, and files saved by its older versions
        state, how = without_prefix(current, keys, head.block)
        return state, ", ".join(filter(None, ("DenseNet's older key names (norm.1) read as today's (norm1)", how)))
    state, renamed = transformers_keys.torchvision_keys(state, path, config)
    if not renamed:
        state, renamed = timm_keys.torchvision_keys(state, path, network, config)
    if not renamed:
        return state, ""
    state, how = without_prefix(state, keys, head.block)  # a wrapper's names before them (a Lightning module's model.)
    return state, ", ".join(filter(None, (renamed, how)))


def loaded_note(path: str | Path, how: str, unread: tuple[str, ...] = ()) -> str:
    """The page's words for weights :func:`load_state_dict_into` put in from ``path``, ``how`` its return, and the
    objects beside them left unread (:func:`read_weights`), so the file is not taken as read whole."""
    left = f"; {len(unread)} kind{'s' * (len(unread) > 1)} of Python object beside the weights left unread, never " \
        f"run: {', '.join(unread[:3])}{', ...' * (len(unread) > 3)}" if unread else ""
    return f"{path} (read weights-only" + (f", {how}" if how else "") + f"{left})."


def output_layer(model: nn.Module) -> str | None:
    """The name of ``model``'s last module (in definition order) that owns parameters, its classifier's output
    layer; None for a model without parameters."""
    owners = [name for name, m in model.named_modules() if any(True for _ in m.parameters(recurse=False))]
    return owners[-1] if owners else None


def output_keys(model: nn.Module) -> frozenset[str]:
    """The state-dict keys of ``model``'s output layer (:func:`output_layer`)."""
    layer = output_layer(model)
    return frozenset(key for key in model.state_dict() if key.rsplit(".", 1)[0] == layer)


def head_block_keys(model: nn.Module) -> frozenset[str]:
    """The state-dict keys of ``model``'s head block: the child of ``model`` itself that holds its output layer
    (:func:`output_layer`), what ``model.<child> = nn.Identity()`` removes. For torchvision's ResNets, RegNet,
    GoogLeNet, Inception v3 and DenseNet that is the output layer itself (``fc``, ``classifier``); for the networks
    whose head is an ``nn.Sequential`` it is the whole ``classifier``: ConvNeXt's LayerNorm2d with its Linear
    (``classifier.0``, ``classifier.2``), VGG's and AlexNet's three Linears, MobileNetV3's two; MobileNetV2's and
    EfficientNet's hold their Linear alone beside a Dropout. Where that child is the whole network (every layer in
    one ``nn.Sequential``), the output layer's keys alone (:func:`output_keys`)."""
    layer, keys = output_layer(model), list(model.state_dict())
    block = frozenset(key for key in keys if layer is not None and key.split(".", 1)[0] == layer.split(".", 1)[0])
    return block if len(block) < len(keys) else output_keys(model)


def headless(keys: list[str], head: Head, state: dict[str, torch.Tensor]) -> list[str]:
    """Those of a network's state-dict ``keys`` that ``state`` lacks where it is the rest of the network, its
    classifier left out (:meth:`Head.left_out`): a backbone saved without its classifier; [] otherwise."""
    missing = [key for key in keys if key not in state]
    return missing if set(state) <= set(keys) and head.left_out(set(missing), state) else []


def load_state_dict_into(model: nn.Module, state: dict[str, torch.Tensor], path: str | Path, what: str,
                         expected: str, network: str | None = None, *, way_for_body: str = "") -> str:
    """Put ``state`` into ``model`` exactly (strict: every key, every shape), reading keys under a prefix the
    model lacks without it when they then fit, and a Transformers or timm network's under torchvision's names
    (:func:`network_keys`; ``network`` its torchvision builder, where it is one).

    A file of the network without its classifier (:func:`headless`) names no classes, and a fresh head's outputs
    are no predictions: it is refused saying so, and ``way_for_body`` (what to do with such a body: fine-tune a head
    on it) where given.

    Returns:
        What was done to the keys, in words for the page (``"its keys without their 'module.' prefix"``), or
        ``""``.

    Raises:
        CnnlabError: one line naming what does not fit (missing or unexpected keys, another shape; the keys under
            torchvision's names where a Transformers or timm file's were read so), or why a Transformers or timm
            file is another network.
    """
    state, how = network_keys(state, set(model.state_dict()), path, network, Head.of(model))
    load_keyed(model, state, path, how, what, expected, way_for_body=way_for_body)
    return how


def load_keyed(model: nn.Module, state: dict[str, torch.Tensor], path: str | Path, how: str, what: str,
               expected: str, *, way_for_body: str = "") -> None:
    """Put ``state``, read from ``path`` with its keys already read as ``model``'s (:func:`network_keys`, which did
    ``how``), into ``model`` exactly: :func:`load_state_dict_into` for a caller that read the keys itself (to shape
    the model by them, :func:`~cnnlab.models.imagenet.backbone_for`), so that they are renamed once.

    Raises:
        CnnlabError: as :func:`load_state_dict_into`'s, for what does not fit.
    """
    keys, head = list(model.state_dict()), Head.of(model)
    read = f" ({how})" if how else ""
    missing = headless(keys, head, state)
    if missing:
        # the whole block, more than its last layer: named, as the keys alone do not say they are all it had
        whole = "" if set(missing) <= head.layer else f" block {missing[0].split('.', 1)[0]!r}"
        raise CnnlabError(f"{path}{read} holds {what} without its classifier{whole} (no {', '.join(missing)}): a body "
                          f"names no classes and predicts none; expected {expected} with its classifier"
                          + (f", or {way_for_body}" if way_for_body else ""))
    try:
        model.load_state_dict(state)
    except RuntimeError as e:  # missing or unexpected keys, or shapes of another architecture
        detail = summary(" ".join(str(e).split()).split(": ", 1)[-1], 200)  # past "Error(s) in loading ...:"
        raise CnnlabError(f"{path}{read} does not fit {what}: {detail}; expected {expected}") from None
