"""Whether a ``.pt2`` file from elsewhere may be handed to ``torch.export.load``: the checks that keep it from
running code.

``torch.export.load`` is not safe on a file one did not write (torch's own documentation says so). Read in torch
2.14's sources, these are the places where the content of a ``.pt2`` becomes code, and what this module does
about each before torch sees the file:

* weights or constants stored as pickles (``use_pickle`` in their config), the legacy ``data/weights/<model>.pt``
  and ``data/constants/<model>.pt`` files, and sample inputs that the safe unpickler refuses: torch reads them
  with ``torch.load(weights_only=False)``. Refused; sample inputs are read here with ``weights_only=True``, and
  torch's own first try is that same read of the same bytes, so its unsafe fallback is never reached.
* custom-class and opaque-object constants: TorchScript's unpickler and ``pickle.loads``. Refused.
* AOTInductor, ExecuTorch and MTIA payloads: compiled native code that torch loads. Refused, as is any file of
  the archive that is not one of the kinds above, a model's JSON or an ``extra/`` file.
* the symbolic shape expressions (``expr_str``), which torch parses with ``sympy.sympify``, which calls
  ``eval``: each must be calls of sympy's and torch's shape functions on quoted symbol names, numbers and
  keyword flags, nothing else.
* ``guards_code``, which ``ExportedProgram.module()`` passes to ``exec``: each guard must compare sizes and
  strides of the inputs (``L['x'].size()[2] == L['x'].size()[3]``) with numbers, with no function but torch's
  size arithmetic (``torch.sym_max``, as torch writes for a channels-last input pooled at a dynamic size).
* node targets, which torch resolves by ``getattr`` from ``torch``, ``math`` or ``operator`` and then calls: each
  must be an operator (``torch.ops.<namespace>.<op>[.<overload>]``), an ``operator``/``math`` function or a
  ``torch.sym_*`` function, without dunder names.
* names (nodes, parameters, buffers, tensors), which end up in the Python source FX generates and executes: every
  other string of the graph must be identifier characters, dots and dashes (a few metadata fields may also hold
  ``,;@<>+``, and an op's string argument any printable text without quotes or backslashes;
  a stack trace, which FX reduces to a one-line comment, must not hold a carriage return or other control
  characters). The keys of ``range_constraints`` are sizes' expressions (``4*s14``), which torch only looks up:
  names, numbers and arithmetic, without quotes.
* pytree specs, whose enum contexts make torch import a module by name: refused when they hold one.
* a node's provenance (``from_node``, which torch writes for a program after ``run_decompositions()``): JSON that
  torch reads back as records of names, operator names and pass names, data it never runs; each must be such a
  record, its strings of the characters above and ``()`` (``ExportedProgram.module()``).
* a node's or graph's ``custom`` metadata (torch marks the nodes of ``nn.Softplus`` and ``nn.Mish``, among others,
  ``{"_torchdynamo_disable": true, ...}``): JSON that torch reads back with ``json.loads`` as flags for its
  compiler, never code; each must be an object of names mapped to numbers, booleans, null, strings of the
  characters above, or lists and objects of those.

Files that pass are ordinary ``torch.export.save`` output of a CNN; anything else gets one line naming what was
found. The check reads the bytes once; the caller loads those same bytes, so the file cannot change in between.
"""

from __future__ import annotations

import io
import json
import re
import tokenize
import warnings
import zipfile
from pathlib import Path
from typing import Any

import torch

# torch._C's constants, not torch.export.pt2_archive's copy of them, for the reason cnnlab.models.state_dict gives
from torch._C._export import pt2_archive_constants as pt2

from cnnlab.errors import CnnlabError

# Names, FQNs (a module may be named "block1-0", as in torchvision's RegNet) and words; the floats JSON has no number
# for. No quote, bracket or space: nothing that could end a string or start a call in the source FX generates.
_PLAIN = re.compile(r"[\w.\-]*|-?Infinity|NaN")
# Metadata that torch writes with a few more characters; none of these is parsed as code.
_METADATA = {"nn_module_stack": re.compile(r"[\w.,;@<>\-]*"), "torch_fn": re.compile(r"[\w.,;@<>\-]*"),
             "source_fn_stack": re.compile(r"[\w.,;@<>\-]*"), "torch_version": re.compile(r"[\w.+]*"),
             # string arguments of ops (an einsum's equation): FX writes them with repr, and an input's value goes
             # between quotes into the guard code, so no quote or backslash may end that string early
             "as_string": re.compile(r"[^'\"\\\x00-\x1f\x7f]*"), "as_strings": re.compile(r"[^'\"\\\x00-\x1f\x7f]*")}
# A node's provenance records (torch.fx.traceback.NodeSource as torch.export.save writes them), nested by from_node.
_PROVENANCE_KEYS = frozenset({"name", "target", "graph_id", "pass_name", "action", "from_node"})
_PROVENANCE_TEXT = re.compile(r"[\w.,;@<>()+\- ]*")
_MODEL_NAME = re.compile(r"\w+")
_RANGE_KEY = re.compile(r"[\w*+\-/%(). ]+")
_TARGET = re.compile(r"torch\.ops(\.\w+){2,3}|_operator\.\w+|math\.\w+|torch\.sym_\w+")
# Quoted symbol names, and the decimal text of a sympy Float (srepr writes Float('0.5', precision=53), as for an
# interpolation's scale factor on a dynamic size): neither is parsed as code.
_SYMBOL = re.compile(r"'[A-Za-z]+\d*'|'-?\d+(\.\d*)?([eE][-+]?\d+)?'")
# What srepr writes for the shape expressions of a CNN, and the shape functions torch itself offers sympify.
_SYMPY_NAMES = frozenset("""Symbol Integer Rational Float Add Mul Pow Mod Max Min Abs Eq Ne Lt Le Gt Ge
    StrictLessThan LessThan StrictGreaterThan GreaterThan Equality Unequality And Or Not true false oo zoo nan
    Infinity NegativeInfinity One Zero NegativeOne Half BooleanTrue BooleanFalse floor ceiling
    integer positive negative nonnegative nonpositive real finite precision True False
    FloorDiv ModularIndexing Where PythonMod CleanDiv CeilToInt FloorToInt CeilDiv LShift RShift
    IsNonOverlappingAndDenseIndicator TruncToFloat TruncToInt RoundToInt RoundDecimal ToFloat FloatPow
    PowByNatural IntTrueDiv FloatTrueDiv Identity""".split())
_GUARD_NAMES = frozenset({"L", "size", "stride", "storage_offset", "math", "isnan", "inf", "and", "or", "not"})
# Names a guard may reach only through their module: torch.sym_max(...), never torch.<anything else>.
_GUARD_QUALIFIED = {"torch": frozenset({"sym_max", "sym_min", "sym_not", "sym_int", "sym_float"})}
_OPS = frozenset("( ) [ ] , = == != >= <= > < + - * / // % **".split())
# torch 2.9 and 2.10 build each tensor of a program with torch.frombuffer on the bytes object that their own archive
# reader returns, read-only as every bytes object, and warn about it ("The given buffer is not writable ...", twice on
# stderr): memory torch itself allocated, so no buffer a caller hands torch.export.load (a bytearray included) takes
# the warning away. Later torch reads each record into a storage of its own and has no such warning.
_TORCHS_READ_ONLY_BUFFER = "The given buffer is not writable"


def load_pt2(data: bytes, extra_files: dict[str, Any] | None = None) -> torch.export.ExportedProgram:
    """``torch.export.load`` of ``data``: bytes that :func:`checked_pt2` passed, or a file cnnlab itself just wrote,
    without torch 2.9's and 2.10's warning about its own read-only buffer (see ``_TORCHS_READ_ONLY_BUFFER``); any
    other warning comes through.

    Args:
        data: the ``.pt2`` file's bytes.
        extra_files: names of ``extra/`` files to read, as ``torch.export.load`` takes them (filled in place).
    """
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=_TORCHS_READ_ONLY_BUFFER, category=UserWarning)
        return torch.export.load(io.BytesIO(data), extra_files=extra_files)


def checked_pt2(path: Path) -> bytes:
    """The bytes of ``path``, after the checks of the module docstring.

    Raises:
        CnnlabError: the file is not a ``torch.export.save`` archive, or holds something that would make
            ``torch.export.load`` run code (one line naming it).
    """
    try:
        data = Path(path).read_bytes()
    except OSError as e:
        raise CnnlabError(f"cannot read {path}: {e.strerror or e} (expected a .pt2 file written by "
                          "torch.export.save)") from None
    try:
        archive = zipfile.ZipFile(io.BytesIO(data))
        names = archive.namelist()
    except (zipfile.BadZipFile, OSError, ValueError):
        raise CnnlabError(f"{path} is not a torch.export program: not a zip archive (expected a .pt2 file written "
                          "by torch.export.save)") from None
    # torch.export.save stores every part as is. A compressed part could inflate far beyond the file (a zip bomb
    # in a JSON part would stall the check), so none is read.
    packed = next((i.filename for i in archive.infolist() if i.compress_type != zipfile.ZIP_STORED), None)
    if packed is not None:
        raise CnnlabError(f"{path} is not a torch.export program as torch.export.save writes it: {packed} is "
                          "compressed, and torch stores every part uncompressed (save it again with torch.export.save)")
    root = names[0].split("/", 1)[0] + "/" if names else ""
    if not names or any(not n.startswith(root) for n in names):
        raise CnnlabError(f"{path} is not a torch.export program: expected the one top folder that "
                          "torch.export.save writes")
    files = {n[len(root):]: n for n in names}
    if files.get(pt2.ARCHIVE_FORMAT_PATH) is None or \
            archive.read(root + pt2.ARCHIVE_FORMAT_PATH).decode(errors="replace").strip() != pt2.ARCHIVE_FORMAT_VALUE:
        raise CnnlabError(f"{path} is not a torch.export program of the current archive format (no "
                          f"{pt2.ARCHIVE_FORMAT_PATH} saying {pt2.ARCHIVE_FORMAT_VALUE}); save it again with "
                          "torch.export.save")
    refuse = _refuser(path)
    known = {pt2.ARCHIVE_FORMAT_PATH, pt2.ARCHIVE_VERSION_PATH, "byteorder", ".data/version",
             ".data/serialization_id"}
    models = [f for f in files if f.startswith(pt2.MODELS_DIR)]
    for model_file in models:
        model = model_file[len(pt2.MODELS_DIR):].removesuffix(".json")
        if model_file != pt2.MODELS_FILENAME_FORMAT.format(model) or not _MODEL_NAME.fullmatch(model):
            refuse(f"a model file named {model_file!r}")
        known.add(model_file)
        for config_file, folder, prefix in (
                (pt2.WEIGHTS_CONFIG_FILENAME_FORMAT.format(model), pt2.WEIGHTS_DIR, pt2.WEIGHT_FILENAME_PREFIX),
                (pt2.CONSTANTS_CONFIG_FILENAME_FORMAT.format(model), pt2.CONSTANTS_DIR,
                 pt2.TENSOR_CONSTANT_FILENAME_PREFIX)):
            if config_file in files:
                known.add(config_file)
                known.update(folder + name for name in _payloads(_json(archive, root + config_file, refuse),
                                                                 prefix, config_file, refuse))
        sample = pt2.SAMPLE_INPUTS_FILENAME_FORMAT.format(model)
        if sample in files:
            known.add(sample)
            try:
                torch.load(io.BytesIO(archive.read(root + sample)), weights_only=True)
            except Exception:  # noqa: BLE001 - whatever the safe unpickler refuses, torch would unpickle unsafely
                refuse(f"sample inputs ({sample}) that only an unsafe unpickler reads")
        _check_program(_json(archive, root + model_file, refuse), refuse)
    if not models:
        raise CnnlabError(f"{path} is not a torch.export program: it holds no {pt2.MODELS_DIR}*.json")
    native = (pt2.AOTINDUCTOR_DIR, pt2.EXECUTORCH_DIR, pt2.MTIA_DIR)
    for name in files:
        if name not in known and not name.startswith(pt2.EXTRA_DIR):
            what = "compiled native code" if name.startswith(native) else "not a part of a saved program"
            refuse(f"{name} ({what})")
    return data


def _refuser(path: Path):
    def refuse(what: str):
        raise CnnlabError(f"{path} holds {what}; cnnlab opens a .pt2 only when nothing in it could make "
                          "torch.export.load run code, so not this one (ONNX is the format to share a model in; "
                          "cnnlab explore opens your own code as module:function)")
    return refuse


def _json(archive: zipfile.ZipFile, name: str, refuse) -> Any:
    try:
        return json.loads(archive.read(name))
    except (ValueError, UnicodeDecodeError):
        refuse(f"{name.split('/', 1)[1]}, which is not JSON")


def _payloads(config: Any, prefix: str, config_file: str, refuse) -> list[str]:
    """The tensor files a weights or constants config names: raw bytes, no pickles or objects."""
    entries = config.get("config") if isinstance(config, dict) else None
    if not isinstance(entries, dict):
        refuse(f"{config_file} without its config table")
    files = []
    for fqn, meta in entries.items():
        name = meta.get("path_name") if isinstance(meta, dict) else None
        if not isinstance(name, str) or meta.get("use_pickle") is not False:
            refuse(f"{fqn!r} stored as a pickle ({config_file})")
        if not re.fullmatch(re.escape(prefix) + r"\d+", name):
            refuse(f"{fqn!r} stored as {name!r}, not a plain tensor ({config_file})")
        if not _PLAIN.fullmatch(fqn):
            refuse(f"a tensor named {fqn!r} ({config_file})")
        files.append(name)
    return files


def _check_program(program: Any, refuse, key: str = "") -> None:
    """Walk a model's JSON: each string by the rule of the field that holds it (module docstring)."""
    if isinstance(program, dict):
        for k, v in program.items():
            # range_constraints is keyed by each size's str(): a derived one is an expression ("4*s14"), which
            # torch only looks up, never parses
            if not (_RANGE_KEY if key == "range_constraints" else _PLAIN).fullmatch(k):
                refuse(f"a graph field named {k[:60]!r}")
            _check_program(v, refuse, k)
    elif isinstance(program, list):
        for v in program:
            _check_program(v, refuse, key)
    elif isinstance(program, str):
        _check_string(key, program, refuse)


def _check_string(key: str, text: str, refuse) -> None:
    if key == "stack_trace":
        ok = all(c == "\n" or c.isprintable() for c in text)
    elif key in ("expr_str", "guards_code") and ("\n" in text or "\r" in text):
        ok = False  # one expression, not statements
    elif key == "expr_str":
        ok = _only_tokens(text, _SYMPY_NAMES, strings=_SYMBOL)
    elif key == "guards_code":
        ok = _only_tokens(text, _GUARD_NAMES, strings=re.compile(r"'\w+'"), attributes=True,
                          qualified=_GUARD_QUALIFIED)
    elif key == "target":
        ok = bool(_TARGET.fullmatch(text)) and "__" not in text
    elif key in ("in_spec", "out_spec"):
        ok = "__enum__" not in text
    elif key == "from_node":
        ok = _plain_provenance(text)
    elif key == "custom":
        ok = _plain_custom(text)
    else:
        ok = bool(_METADATA.get(key, _PLAIN).fullmatch(text))
    if not ok:
        refuse(f"a {key or 'graph'} field that is not what torch.export.save writes: {text[:80]!r}")


def _plain_provenance(text: str) -> bool:
    """Whether ``text`` is a JSON list of provenance records (:data:`_PROVENANCE_KEYS`): strings of
    :data:`_PROVENANCE_TEXT`, an integer ``graph_id``, and the records they came from, nested."""
    try:
        records = json.loads(text)
    except (ValueError, RecursionError):
        return False
    pending = [records]
    while pending:  # a list of records each, walked without recursion: a crafted file may nest them deeply
        level = pending.pop()
        if level is None:
            continue
        if not isinstance(level, list):
            return False
        for record in level:
            if not isinstance(record, dict) or not set(record) <= _PROVENANCE_KEYS:
                return False
            for k, v in record.items():
                if k == "from_node":
                    pending.append(v)
                elif k == "graph_id":
                    if not isinstance(v, int) or isinstance(v, bool):
                        return False
                elif not isinstance(v, str) or not _PROVENANCE_TEXT.fullmatch(v):
                    return False
    return True


def _plain_custom(text: str) -> bool:
    """Whether ``text`` is a JSON object of names (:data:`_PLAIN`) mapped to numbers, booleans, null, strings of
    :data:`_PROVENANCE_TEXT`, or lists and objects of those: the ``custom`` metadata torch writes."""
    try:
        data = json.loads(text)
    except (ValueError, RecursionError):
        return False
    if not isinstance(data, dict):
        return False
    pending = [data]
    while pending:  # walked without recursion: a crafted file may nest its values deeply
        value = pending.pop()
        if isinstance(value, dict):
            if not all(isinstance(k, str) and _PLAIN.fullmatch(k) for k in value):
                return False
            pending.extend(value.values())
        elif isinstance(value, list):
            pending.extend(value)
        elif isinstance(value, str):
            if not _PROVENANCE_TEXT.fullmatch(value):
                return False
        elif value is not None and not isinstance(value, (bool, int, float)):
            return False
    return True


def _only_tokens(text: str, names: frozenset[str], strings: re.Pattern, attributes: bool = False,
                 qualified: dict[str, frozenset[str]] | None = None) -> bool:
    """Whether ``text`` is one line of Python made of ``names``, numbers, ``strings`` and a few operators (and
    ``.`` before a name only when ``attributes``): no other name, no dunder, so no way to reach a builtin.
    ``qualified`` maps a module name to the names that may follow it, and only it, after a ``.``."""
    try:
        tokens = list(tokenize.generate_tokens(io.StringIO(text).readline))
    except (tokenize.TokenError, SyntaxError):
        return False
    qualified = qualified or {}
    for i, t in enumerate(tokens):
        if t.type in (tokenize.NEWLINE, tokenize.NL, tokenize.ENDMARKER):
            continue
        if t.type == tokenize.NAME and t.string in qualified:
            following = [u.string for u in tokens[i + 1:i + 3]]
            ok = len(following) == 2 and following[0] == "." and following[1] in qualified[t.string]
        elif t.type == tokenize.NAME and i >= 2 and tokens[i - 1].string == "." and tokens[i - 2].string in qualified:
            ok = t.string in qualified[tokens[i - 2].string]
        elif t.type == tokenize.NAME:
            ok = t.string in names
        elif t.type == tokenize.NUMBER:
            ok = True
        elif t.type == tokenize.STRING:
            ok = bool(strings.fullmatch(t.string))
        elif t.type == tokenize.OP:
            ok = t.string in _OPS or (attributes and t.string == ".")
        else:
            ok = False
        if not ok:
            return False
    return True
