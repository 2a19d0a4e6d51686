"""Fuzzing the public boundaries: the ops, the `train` command line, and the checkpoint reader.

Hypothesis throws arguments at them that are valid, nearly valid and absurd. The promise at each boundary:

* ``cnnlab.ops`` (conv2d, max_pool2d, avg_pool2d, batch_norm): return what torch.nn.functional returns, or raise
  CnnlabError / ValueError; never another exception type, never a result where torch refuses the arguments.
* ``cnnlab train ...``: either the (patched) training function is called with a TrainConfig that really is sane
  (checked here independently of TrainConfig.validate), or the command ends with exit code 2 and one stderr line.
* ``load_checkpoint`` on a damaged file: a dict or a CheckpointError, nothing else.

tests/test_ops_vectorised.py compares the ops with torch over *valid* geometries (values and gradients); this
file is about the edges. About 1,300 cases run, in about half a minute on one thread.
"""

from __future__ import annotations

import math
from datetime import timedelta

import pytest
import torch
import torch.nn.functional as F
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import cnnlab.train
from cli_support import run_redirected
from cnnlab import ops
from cnnlab.errors import CheckpointError
from cnnlab.models import list_models
from cnnlab.runs.checkpoint import load_checkpoint, save_checkpoint
from cnnlab.train import make_config
from cnnlab.train.config import CHOICES, TrainConfig, config_fields
from torch_support import BATCH_NORM_TAKES_EPS_0


def fuzz(examples: int) -> settings:
    # Generous: a case takes milliseconds; the deadline turns a hang into a failure, it times nothing.
    return settings(max_examples=examples, deadline=timedelta(seconds=20),
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """Tiny tensors: a second OpenMP thread only adds spin-waiting on a busy machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


# ------------------------------------------------------------------------------------------------ the ops
def _outcome(fn, *args, **kwargs):
    """``("ok", result)`` or ``("raised", exception)``."""
    try:
        return "ok", fn(*args, **kwargs)
    except Exception as e:  # every kind: telling them apart is the point
        return "raised", e


def _check(ours, theirs) -> None:
    """The fuzz property: refuse with a ValueError (CnnlabError is one), or agree with torch."""
    kind, value = ours
    if kind == "raised":
        assert isinstance(value, ValueError), f"{type(value).__name__}: {value}"
        assert "\n" not in str(value), repr(str(value))
        return
    torch_kind, expected = theirs
    assert torch_kind == "ok", f"cnnlab returned a result where torch refuses: {expected}"
    if isinstance(expected, tuple):  # max_pool2d(return_indices=True)
        assert isinstance(value, tuple) and len(value) == len(expected)
        for a, b in zip(value, expected, strict=True):
            torch.testing.assert_close(a, b, equal_nan=True)  # the dtype's own tolerance (float32 or float64)
    else:
        torch.testing.assert_close(value, expected, equal_nan=True)


# Arguments from "fine" through "odd" to "wrong": torch decides which is which.
small_int = st.integers(-1, 4)
int_or_pair = st.one_of(small_int, st.tuples(small_int, small_int), st.tuples(small_int),
                        st.tuples(small_int, small_int, small_int), st.just(True), st.just(1.5), st.just("2"))
dtypes = st.sampled_from([torch.float64] * 6 + [torch.float32, torch.int64])


@st.composite
def tensors(draw, min_dims: int = 2):
    n = draw(st.integers(min_dims, 5))
    shape = draw(st.lists(st.integers(1, 6), min_size=n, max_size=n))
    if draw(st.integers(0, 9)) == 0:  # one case in ten has an empty dimension (batch, channels or image)
        shape[draw(st.integers(0, n - 1))] = 0
    dtype = draw(dtypes)
    gen = torch.Generator().manual_seed(draw(st.integers(0, 2**16)))
    t = torch.randn(shape, generator=gen, dtype=torch.float64) * 3
    return t.to(dtype) if dtype != torch.float64 else t


@st.composite
def conv_args(draw):
    x = draw(tensors())
    c = x.shape[1] if x.dim() == 4 else (x.shape[0] if x.dim() == 3 else 2)
    groups = draw(st.sampled_from([1, 1, 1, 2, 3, 0, -1]))
    cin = c // groups if groups > 0 and c % groups == 0 and draw(st.integers(0, 5)) else draw(st.integers(1, 4))
    cout = draw(st.integers(1, 3)) * (groups if groups > 0 else 1)
    wdims = draw(st.sampled_from([4, 4, 4, 4, 3, 2]))
    wshape = [cout, cin, draw(st.integers(1, 4)), draw(st.integers(1, 4)), 2][:wdims]
    weight = torch.randn(wshape, dtype=torch.float64).to(draw(st.sampled_from([x.dtype] * 4 + [torch.float32])))
    bias = draw(st.sampled_from([None, "right", "wrong"]))
    bias = None if bias is None else torch.randn(cout if bias == "right" else cout + 1).to(weight.dtype)
    padding = draw(st.one_of(int_or_pair, st.sampled_from(["same", "valid", "full"])))
    return (x, weight, bias), dict(stride=draw(int_or_pair), padding=padding, dilation=draw(int_or_pair),
                                   groups=groups)


@pytest.mark.filterwarnings("ignore:Using padding='same' with even kernel lengths")
@fuzz(350)
@given(conv_args())
def test_conv2d_fuzz(case):
    args, kwargs = case
    _check(_outcome(ops.conv2d, *args, **kwargs), _outcome(F.conv2d, *args, **kwargs))


@fuzz(250)
@given(tensors(), int_or_pair, st.one_of(st.none(), int_or_pair), int_or_pair, int_or_pair, st.booleans(),
       st.booleans())
def test_max_pool2d_fuzz(x, kernel, stride, padding, dilation, ceil_mode, return_indices):
    kwargs = dict(stride=stride, padding=padding, dilation=dilation, ceil_mode=ceil_mode,
                  return_indices=return_indices)
    _check(_outcome(ops.max_pool2d, x, kernel, **kwargs), _outcome(F.max_pool2d, x, kernel, **kwargs))


@fuzz(250)
@given(tensors(), int_or_pair, st.one_of(st.none(), int_or_pair), int_or_pair, st.booleans(), st.booleans(),
       st.sampled_from([None, None, 1, 3, 0, -2]))
def test_avg_pool2d_fuzz(x, kernel, stride, padding, ceil_mode, count_include_pad, divisor_override):
    kwargs = dict(stride=stride, padding=padding, ceil_mode=ceil_mode, count_include_pad=count_include_pad,
                  divisor_override=divisor_override)
    _check(_outcome(ops.avg_pool2d, x, kernel, **kwargs), _outcome(F.avg_pool2d, x, kernel, **kwargs))


@fuzz(200)
@given(tensors(min_dims=1), st.data())
def test_batch_norm_fuzz(x, data):
    c = x.shape[1] if x.dim() >= 2 else 1
    if x.is_floating_point() and data.draw(st.integers(0, 3), label="half precision") == 0:
        x = x.to(data.draw(st.sampled_from([torch.float16, torch.bfloat16]), label="input dtype"))
    own = x.dtype if x.is_floating_point() else torch.float64
    gen = torch.Generator().manual_seed(data.draw(st.integers(0, 2**31), label="seed"))  # a replay draws the same

    def vector(name, choices=("right", "right", "none", "short", "matrix")):
        choice = data.draw(st.sampled_from(choices), label=name)
        if choice == "none":
            return None
        shape = {"right": (c,), "short": (c + 1,), "matrix": (c, 1)}[choice]
        # mostly the input's dtype; float32 beside a half-precision input is mixed precision, which torch takes
        dtype = data.draw(st.sampled_from([own] * 3 + [torch.float32, torch.float64]), label=f"{name} dtype")
        return torch.rand(shape, dtype=torch.float64, generator=gen).to(dtype) + 0.5

    mean, weight, bias = vector("mean"), vector("weight"), vector("bias")
    var = None if mean is None else vector("var", ("right", "right", "short", "none"))  # "none": torch refuses
    training = data.draw(st.booleans(), label="training")
    momentum = data.draw(st.sampled_from([0.1, 0.0, 1.0, 0.5]), label="momentum")
    eps = data.draw(st.sampled_from([1e-5, 1e-3, 1.0, -1e-3] + [0.0] * BATCH_NORM_TAKES_EPS_0),
                    label="eps")  # torch refuses some

    def call(fn, cast=lambda t: t):  # each implementation updates its own copy of the running statistics
        m, v = (None if t is None else cast(t.clone()) for t in (mean, var))
        w, b = (None if t is None else cast(t) for t in (weight, bias))
        kind, out = _outcome(fn, cast(x), m, v, w, b, training=training, momentum=momentum, eps=eps)
        return kind, ((out, m, v) if kind == "ok" else out)

    ours, theirs = call(ops.batch_norm), call(F.batch_norm)
    if ours[0] == "ok" and theirs[0] == "ok":
        half = x.dtype in (torch.float16, torch.bfloat16)
        if half:
            # torch's own half-precision kernel rounds on the way, off the exact result by many times the
            # dtype's rounding (measured: bfloat16 relative errors of 50x); the oracle is torch in float64 on the
            # same values, which ours must meet within a few roundings of each result's own dtype
            theirs = call(F.batch_norm, lambda t: t.double())
        for a, b in zip(ours[1], theirs[1], strict=True):
            assert (a is None) == (b is None)
            if a is not None and half:
                ulp = torch.finfo(a.dtype).eps
                largest = float(b.nan_to_num(posinf=0, neginf=0).abs().amax()) if b.numel() else 0.0
                torch.testing.assert_close(a.double(), b, equal_nan=True, rtol=4 * ulp, atol=4 * ulp * max(1, largest))
            elif a is not None:
                torch.testing.assert_close(a, b, equal_nan=True)
    else:
        _check(ours if ours[0] == "raised" else (ours[0], ours[1][0]), theirs)


def _t(*shape: int) -> torch.Tensor:
    return torch.ones(shape, dtype=torch.float64)


# Tensors with a zero-sized dimension that this fuzz once found mishandled (IndexError, wrong output shapes, or a
# result where torch refuses): torch accepts an empty batch, and no channels in conv2d, and refuses empty
# images. Kept as fixed cases so they run whatever hypothesis draws.
@pytest.mark.parametrize("op, args, kwargs", [
    ("conv2d", lambda: (_t(0, 2, 3, 1), _t(2, 1, 2, 1)), dict(stride=3, padding=3, dilation=3, groups=2)),
    ("conv2d", lambda: (_t(0, 0, 1, 1), _t(1, 0, 1, 1)), {}),
    ("conv2d", lambda: (_t(2, 0, 2, 3), _t(2, 0, 1, 3)), {}),
    ("conv2d", lambda: (_t(4, 5, 0, 1), _t(1, 5, 1, 1)), dict(stride=2, padding=4, dilation=2)),
    ("avg_pool2d", lambda: (_t(2, 1, 4, 0), (3, 2)), dict(padding=1, count_include_pad=False)),
], ids=["conv-empty-batch-groups", "conv-no-channels", "conv-no-channels-shape", "conv-empty-image",
        "avg-pool-empty-image"])
def test_empty_tensors(op, args, kwargs):
    _check(_outcome(getattr(ops, op), *args(), **kwargs), _outcome(getattr(F, op), *args(), **kwargs))


# Arguments batch_norm once accepted where torch refuses.
@pytest.mark.parametrize("kwargs", [
    dict(eps=-1e-3),  # torch: eps must be non-negative
    dict(eps=0.0, training=True),  # torch: eps must be positive during training
    dict(running_var=None, training=True),  # torch: running_mean and running_var both None or neither
], ids=["negative-eps", "zero-eps-training", "mean-without-var"])
def test_batch_norm_refusals(kwargs):
    x = torch.randn(4, 3, 2, 2, dtype=torch.float64)
    args = dict(running_mean=torch.zeros(3, dtype=torch.float64), running_var=torch.ones(3, dtype=torch.float64))
    args.update(kwargs)
    _check(_outcome(ops.batch_norm, x, **args), _outcome(F.batch_norm, x, **args))


# ------------------------------------------------------------------------------------- the train command
def _flag_vocabulary() -> list[str]:
    flags = ["--resume", "--force", "--quiet", "--no-report"]
    for f in config_fields():
        if f.name != "model":
            name = "--" + f.name.replace("_", "-")
            flags += [name, "--no-" + name[2:]] if f.type in ("bool", bool) else [name]
    return flags


FLAGS = _flag_vocabulary()
VALUES = ["0", "1", "-3", "2", "128", "0.5", "1e6", "1e-9", "nan", "inf", "-inf", "x", "", " ", "1.5", "4294967296",
          "99999999999999999999", "lenet", "runs/x", *[c for cs in CHOICES.values() for c in cs]]
MODELS = [*list_models(), "lenet5", "", "LeNet", "-x", "resnet18 ", "a\nb"]
tokens = st.one_of(st.sampled_from(FLAGS), st.sampled_from(VALUES), st.sampled_from(MODELS),
                   st.text(max_size=8), st.sampled_from(FLAGS).map(lambda f: f + "=" + "3"))
# Mostly command lines a person might type (a model, then flags with values), some pure noise.
flag_pairs = st.lists(st.tuples(st.sampled_from(FLAGS), st.sampled_from(VALUES)), max_size=4).map(
    lambda pairs: [t for pair in pairs for t in pair])
command_lines = st.one_of(
    st.tuples(st.sampled_from(MODELS), flag_pairs, st.lists(tokens, max_size=2)).map(lambda t: [t[0], *t[1], *t[2]]),
    st.lists(tokens, max_size=7))


def _is_sane(cfg: TrainConfig) -> list[str]:
    """What would make this config a bad training run, judged without TrainConfig.validate."""
    problems = []
    for f in config_fields():
        value = getattr(cfg, f.name)
        if f.name in CHOICES and value not in CHOICES[f.name]:
            problems.append(f"{f.name}={value!r} is not a choice")
        if isinstance(value, float) and not math.isfinite(value):
            problems.append(f"{f.name}={value!r} is not finite")
    for name in ("epochs", "batch_size", "log_every", "limit_train_batches", "limit_val_batches", "resize"):
        value = getattr(cfg, name)
        if value is not None and not (isinstance(value, int) and value >= 1):
            problems.append(f"{name}={value!r}")
    if not (cfg.lr is not None and cfg.lr > 0):
        problems.append(f"lr={cfg.lr!r}")
    for name in ("momentum", "weight_decay", "warmup", "label_smoothing", "grad_clip", "ema", "checkpoint_every"):
        if not getattr(cfg, name) >= 0:
            problems.append(f"{name}={getattr(cfg, name)!r}")
    if not (0 <= cfg.momentum < 1 and cfg.label_smoothing < 1 and cfg.ema < 1 and 0 <= cfg.seed < 2**32):
        problems.append("momentum, label smoothing, ema or seed out of range")
    if cfg.model not in list_models():
        problems.append(f"model {cfg.model!r}")
    return problems


@fuzz(400)
@given(command_lines)
def test_train_command_line_fuzz(argv):
    calls = []

    def fake_train(model, recipe="book", *, force=False, quiet=False, report=True, **overrides):
        cfg = make_config(model, recipe, **overrides)  # the real train's first step; may refuse (exit 2)
        calls.append(("train", cfg))
        return []

    def fake_resume(run_dir, *, quiet=False, report=True, epochs=None, data_dir=None):
        calls.append(("resume", run_dir))
        return []

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(cnnlab.train, "train", fake_train)
        mp.setattr(cnnlab.train, "resume", fake_resume)
        code, out, lines = run_redirected(["train", *argv])
    if code == 0 and any("usage:" in line for line in out):  # -h/--help (or an abbreviation of it) among the tokens
        return
    if code == 0:
        assert len(calls) == 1 and lines == [], (calls, lines)
        kind, what = calls[0]
        if kind == "train":
            assert _is_sane(what) == [], (argv, _is_sane(what))
        return
    assert code == 2, (argv, code, lines)
    assert len(lines) == 1 and lines[0].startswith("cnnlab"), (argv, lines)
    assert calls == [] or calls[0][0] == "train"  # a refused config never trains


# -------------------------------------------------------------------------------------- damaged checkpoints
@pytest.fixture(scope="module")
def checkpoint_bytes(tmp_path_factory) -> bytes:
    path = tmp_path_factory.mktemp("ckpt") / "last.pt"
    save_checkpoint({"model_name": "lenet", "model": {"w": torch.arange(6.0).reshape(2, 3)}, "history": [{"a": 1.0}],
                     "config": {"lr": 0.1}, "step": 3}, path)
    return path.read_bytes()


def test_a_name_that_is_not_utf8_in_the_archive_is_a_checkpoint_error(checkpoint_bytes, tmp_path):
    # Found by the fuzzing below: torch marks its entry names UTF-8, so one bad byte in the central directory's copy
    # of a name made zipfile raise UnicodeDecodeError, an internal error, while checking for a torch.export archive.
    at = bytes(checkpoint_bytes).rindex(b"data.pkl")
    path = tmp_path / "bad-name.pt"
    path.write_bytes(checkpoint_bytes[:at] + b"\x96" + checkpoint_bytes[at + 1:])
    with pytest.raises(CheckpointError, match="bad-name.pt"):
        load_checkpoint(path)


@fuzz(120)
@given(st.data())
def test_damaged_checkpoint_fuzz(checkpoint_bytes, tmp_path, data):
    blob = bytearray(checkpoint_bytes)
    for _ in range(data.draw(st.integers(1, 4), label="edits")):
        at = data.draw(st.integers(0, len(blob) - 1), label="at")
        edit = data.draw(st.sampled_from(["flip", "cut", "insert"]), label="edit")
        if edit == "flip":
            blob[at] ^= data.draw(st.integers(1, 255), label="mask")
        elif edit == "cut":
            del blob[at:]
            if not blob:
                break
        else:
            blob[at:at] = data.draw(st.binary(min_size=1, max_size=16), label="bytes")
    path = tmp_path / "fuzzed.pt"
    path.write_bytes(bytes(blob))
    try:
        state = load_checkpoint(path)
    except CheckpointError as e:
        assert "\n" not in str(e) and str(path) in str(e)
    else:
        assert isinstance(state, dict)
