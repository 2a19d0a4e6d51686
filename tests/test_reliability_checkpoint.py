"""Checkpoints survive crashes mid-write, and a hostile checkpoint never runs code.

The promises (docs/reliability.md): ``last.pt`` is replaced atomically, so a crash at any point of a write leaves
the previous file loadable; every read is ``torch.load(weights_only=True)``, so a pickle payload is refused with
one line and its code never runs; a non-finite loss stops training before a bad checkpoint is written.
"""

import builtins
import json
import os
import pickle
import subprocess
import sys
import textwrap
import warnings
from pathlib import Path

import pytest
import torch
from PIL import Image
from safetensors.torch import save_file

import cnnlab.io
from cnnlab import cli
from cnnlab.errors import CheckpointError
from cnnlab.inference import load_trained
from cnnlab.models.state_dict import is_safetensors
from cnnlab.runs import checkpoint
from cnnlab.runs.checkpoint import load_checkpoint, save_checkpoint
from cnnlab.train import build_trainer, make_config
from cnnlab.train.trainer import NonFiniteLoss

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def _one_thread():
    """The small training runs here are faster on one thread on a loaded machine (conftest.py puts back the
    deterministic mode a run turns on)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _state(value: float) -> dict:
    return {"model_name": "lenet", "model": {"w": torch.full((3, 4), value)}, "step": int(value)}


def _stray_files(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name != "last.pt")


# ------------------------------------------------------------------------------------------- atomic writes
def test_failed_rename_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    path = tmp_path / "last.pt"
    save_checkpoint(_state(1.0), path)

    def crash(src, dst):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(cnnlab.io.os, "replace", crash)
    with pytest.raises(OSError, match="No space left"):
        save_checkpoint(_state(2.0), path)
    assert load_checkpoint(path)["step"] == 1
    assert _stray_files(tmp_path) == []  # the temporary file was removed


@pytest.mark.parametrize("links", [True, False])
def test_last_pt_linked_to_best_pt_is_that_checkpoint_and_a_later_write_replaces_it_alone(tmp_path, monkeypatch,
                                                                                          links):
    # A best epoch's last.pt is best.pt's file, not a second write (a copy where the file system has no hard links);
    # writing last.pt again, atomically, must leave best.pt as it was
    best, last = tmp_path / "best.pt", tmp_path / "last.pt"
    save_checkpoint(_state(0.0), last)
    save_checkpoint(_state(1.0), best)
    if not links:
        def no_links(source, path):
            raise OSError(1, "Operation not permitted")

        monkeypatch.setattr(cnnlab.io.os, "link", no_links)
    cnnlab.io.atomic_link(best, last)
    assert last.read_bytes() == best.read_bytes() and os.path.samefile(best, last) == links
    assert sorted(p.name for p in tmp_path.iterdir()) == ["best.pt", "last.pt"]  # no temporary file left
    save_checkpoint(_state(2.0), last)
    assert load_checkpoint(best)["step"] == 1 and load_checkpoint(last)["step"] == 2


@pytest.mark.parametrize("crash", [KeyboardInterrupt, OSError])
def test_crash_half_way_through_torch_save_keeps_the_previous_checkpoint(tmp_path, monkeypatch, crash):
    path = tmp_path / "last.pt"
    save_checkpoint(_state(1.0), path)
    real_save = torch.save

    def half_save(obj, f):  # write half a valid checkpoint, then die as a signal or a full disk would
        real_save(obj, f)
        data = Path(f).read_bytes()
        Path(f).write_bytes(data[: len(data) // 2])
        raise crash("interrupted mid-write")

    monkeypatch.setattr(checkpoint.torch, "save", half_save)
    with pytest.raises(crash):
        save_checkpoint(_state(2.0), path)
    assert load_checkpoint(path)["step"] == 1
    assert _stray_files(tmp_path) == []


def test_killed_writer_leaves_the_previous_checkpoint_and_only_a_hidden_temp_file(tmp_path):
    """SIGKILL runs no cleanup: the half-written temp file stays, but under a name no reader ever opens."""
    path = tmp_path / "last.pt"
    save_checkpoint(_state(1.0), path)
    script = textwrap.dedent(f"""
        import os, signal, torch
        from pathlib import Path
        from cnnlab.runs import checkpoint
        real_save = torch.save
        def half_save(obj, f):
            real_save(obj, f)
            data = Path(f).read_bytes()
            Path(f).write_bytes(data[: len(data) // 2])
            os.kill(os.getpid(), signal.SIGKILL)
        checkpoint.torch.save = half_save
        checkpoint.save_checkpoint({{"model_name": "x", "model": {{"w": torch.zeros(3)}}, "step": 2}}, {str(path)!r})
    """)
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, timeout=120)
    assert proc.returncode == -9, proc.stderr.decode()
    assert load_checkpoint(path)["step"] == 1
    leftovers = _stray_files(tmp_path)
    assert len(leftovers) == 1 and leftovers[0].startswith(".last.pt.") and leftovers[0].endswith(".tmp")
    (tmp_path / "notes.tmp").write_text("a user's file")  # not atomic_write's pattern: stays
    (tmp_path / ".hidden").write_text("also stays")
    assert [p.name for p in cnnlab.io.remove_stale_temporaries(tmp_path)] == leftovers
    assert sorted(p.name for p in tmp_path.iterdir()) == [".hidden", "last.pt", "notes.tmp"]


def test_resume_clears_the_temp_file_a_killed_writer_left(tmp_path, data_dir):
    from cnnlab.train import resume

    run = tmp_path / "run"
    build_trainer(make_config("lenet-relu", epochs=1, limit_train_batches=2, limit_val_batches=1, out=str(run)),
            quiet=True, report=False).fit()
    stale = run / ".last.pt.k1ll3d.tmp"
    stale.write_bytes(b"half a checkpoint")
    assert resume(run, quiet=True, report=False) is None  # the run is finished, but its folder is tidied
    assert not stale.exists() and (run / "last.pt").exists()


def test_checkpoint_has_the_mode_of_a_plain_file(tmp_path):
    save_checkpoint(_state(1.0), tmp_path / "last.pt")
    (tmp_path / "plain").write_bytes(b"")
    assert (tmp_path / "last.pt").stat().st_mode == (tmp_path / "plain").stat().st_mode


# -------------------------------------------------------------------------------------- damaged checkpoints
@pytest.mark.parametrize("damage", ["truncated", "empty", "garbage", "not-a-dict", "foreign-dict", "version"])
def test_damaged_checkpoint_is_one_line_checkpoint_error(tmp_path, damage):
    path = tmp_path / "last.pt"
    save_checkpoint(_state(1.0), path)
    if damage == "truncated":
        path.write_bytes(path.read_bytes()[:300])
    elif damage == "empty":
        path.write_bytes(b"")
    elif damage == "garbage":
        path.write_bytes(os.urandom(4096))
    elif damage == "not-a-dict":
        torch.save([torch.zeros(2)], path)
    elif damage == "foreign-dict":
        torch.save({"state_dict": {"w": torch.zeros(2)}}, path)
    else:
        save_checkpoint({"version": 99, **_state(1.0)}, path)
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(path)
    message = str(info.value)
    assert "\n" not in message and str(path) in message


def test_missing_checkpoint_says_so(tmp_path):
    with pytest.raises(CheckpointError, match="does not exist"):
        load_checkpoint(tmp_path / "nope.pt")


def test_a_run_folder_given_for_a_checkpoint_names_the_checkpoint_in_it(tmp_path, capsys):
    run = tmp_path / "run"
    run.mkdir()
    with pytest.raises(CheckpointError, match=f"checkpoint {run} is a folder holding no best.pt or last.pt"):
        load_checkpoint(run)
    save_checkpoint(_state(1.0), run / "last.pt")
    with pytest.raises(CheckpointError, match=f"checkpoint {run} is a folder; pass {run / 'last.pt'} "):
        load_checkpoint(run)
    save_checkpoint(_state(2.0), run / "best.pt")  # best.pt first, as eval, predict and export are documented with
    for argv in (["eval", str(run)], ["predict", str(run), "a.png"], ["export", str(run), "--output", "x.onnx"]):
        assert cli.main(argv) == 2
        err = capsys.readouterr().err.strip()
        assert err == (f"cnnlab {argv[0]}: error: checkpoint {run} is a folder; pass {run / 'best.pt'} (expected a "
                       ".pt file written by cnnlab train)")


@pytest.mark.parametrize("other", ["config.json", "model.onnx"])
def test_another_kind_of_file_is_named_as_not_a_checkpoint(tmp_path, other, capsys):
    """A run's config.json or an ONNX export passed where a checkpoint goes: one line saying what was expected,
    not the unpickler's "Unsupported operand 123"."""
    path = tmp_path / other
    if other == "config.json":
        path.write_text(json.dumps({"model": "lenet", "epochs": 10}))
    else:
        path.write_bytes(b"\x08\x08\x12\x07pytorch")  # an ONNX ModelProto's first fields
    with pytest.raises(CheckpointError, match=f"{other} is not a PyTorch checkpoint .*expected a .pt file") as info:
        load_checkpoint(path)
    assert "\n" not in str(info.value)
    # export takes a checkpoint alone (eval opens a model from elsewhere too, and says what it expected of one)
    code, err = _cli_in_process(["export", str(path), "--output", str(tmp_path / "x.onnx")], capsys)
    assert code == 2 and len(err) == 1 and "is not a PyTorch checkpoint" in err[0], err


def test_a_torch_export_program_is_named_as_one(tmp_path, capsys):
    # A zip archive like a checkpoint: torch's failure on it read "corrupt or truncated (... miniz error ...)"
    program = torch.export.export(torch.nn.Linear(3, 2), (torch.zeros(1, 3),))
    torch.export.save(program, tmp_path / "model.pt2")
    with pytest.raises(CheckpointError, match=r"model.pt2 is a torch.export program \(.pt2\), not a cnnlab "
                                              r"checkpoint: cnnlab explore opens it"):
        load_checkpoint(tmp_path / "model.pt2")
    code, err = _cli_in_process(["export", str(tmp_path / "model.pt2"), "--output", str(tmp_path / "x.onnx")], capsys)
    assert code == 2 and len(err) == 1 and "torch.export program" in err[0], err


def test_a_torchscript_archive_is_named_as_one_and_never_loaded(tmp_path, capsys, monkeypatch):
    # It read "corrupt or truncated (Cannot use weights_only=True with TorchScript archives ...)" after a warning
    # from torch.load on stderr; its forward is code from the file, so it is named and not handed to torch.jit.load.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.jit.script is deprecated
        torch.jit.script(torch.nn.Linear(3, 2)).save(str(tmp_path / "scripted.pt"))
    monkeypatch.setattr(torch.jit, "load", lambda *a, **k: pytest.fail("torch.jit.load was called"))
    with pytest.raises(CheckpointError, match=r"scripted.pt is a TorchScript archive \(torch.jit.save\), not a "
                                              r"cnnlab checkpoint, and its code is not run from a file; expected"):
        load_checkpoint(tmp_path / "scripted.pt")
    code, err = _cli_in_process(["eval", str(tmp_path / "scripted.pt")], capsys)
    assert code == 2 and len(err) == 1 and "TorchScript archive" in err[0], err


@pytest.mark.parametrize("content, holds", [
    ({"conv1.weight": torch.zeros(2, 1, 3, 3), "conv1.bias": torch.zeros(2)},
     "a state dict of 2 tensors \\(the first 'conv1.weight'\\), weights without a network"),
    ({"model": {"w": torch.zeros(1)}, "epoch": 3, "optimizer": {}, "lr": 0.1, "seed": 0}, "a state dict of 1 tensors "
     "under 'model' \\(the first 'w'\\) beside 'epoch', 'optimizer', 'lr', 'seed', weights without a network"),
    ({"model": {"w": torch.zeros(1), "step": 3}, "epoch": 3}, "a dict of 'model', 'epoch'"),
    ([torch.zeros(1)], "a list"),
])
def test_a_file_from_elsewhere_says_what_it_holds(tmp_path, capsys, content, holds):
    # It read only "is not a cnnlab checkpoint (expected format 'cnnlab-checkpoint')": torchvision's weights file
    # and a training script's checkpoint told nothing of what they were.
    torch.save(content, tmp_path / "other.pth")
    with pytest.raises(CheckpointError, match=f"other.pth is not a cnnlab checkpoint: it holds {holds}; expected "
                                              "format 'cnnlab-checkpoint', as cnnlab train writes$"):
        load_checkpoint(tmp_path / "other.pth")


def test_a_safetensors_file_says_what_it_holds_and_a_damaged_one_is_one_line(tmp_path, capsys):
    # Weights from the Hugging Face Hub or timm come as .safetensors; it read "not a PyTorch checkpoint".
    weights = {"conv1.weight": torch.ones(2, 1, 3, 3), "conv1.bias": torch.zeros(2)}
    save_file(weights, tmp_path / "model.safetensors", metadata={"format": "pt"})
    with pytest.raises(CheckpointError, match=r"model.safetensors is not a cnnlab checkpoint: it holds a state dict "
                                              r"of 2 tensors \(the first 'conv1.bias'\), weights without a network "
                                              r"\(safetensors\); expected a .pt file") as info:
        load_checkpoint(tmp_path / "model.safetensors")
    assert torch.equal(info.value.held["conv1.weight"], weights["conv1.weight"])  # what --init-from takes up
    whole = (tmp_path / "model.safetensors").read_bytes()
    (tmp_path / "cut.safetensors").write_bytes(whole[:-8])
    with pytest.raises(CheckpointError, match=r"cut.safetensors is not a readable safetensors file \(truncated or "
                                              r"damaged: .*\); expected a .pt file written by cnnlab train, "
                                              r"e.g. RUN_DIR/best.pt$"):
        load_checkpoint(tmp_path / "cut.safetensors")
    for argv in (["eval", str(tmp_path / "cut.safetensors")], ["predict", str(tmp_path / "model.safetensors"), "x"]):
        code, err = _cli_in_process(argv, capsys)
        assert code == 2 and len(err) == 1 and "safetensors" in err[0], err


@pytest.mark.parametrize("head", [b"", b"\x07\x00\x00\x00\x00\x00\x00\x00{", b"\x02\x00\x00\x00\x00\x00\x00\x00{}"])
def test_only_a_file_laid_out_as_safetensors_is_read_as_one(tmp_path, head):
    # the header's length must lie within the file: a stray '{' at byte 8 of a short file is no safetensors file
    (tmp_path / "f").write_bytes(head)
    assert is_safetensors(tmp_path / "f") == (head.endswith(b"{}"))
    torch.save({"w": torch.zeros(1)}, tmp_path / "w.pt")
    assert not is_safetensors(tmp_path / "w.pt") and not is_safetensors(tmp_path / "missing")
    assert is_safetensors(tmp_path / "cut.SafeTensors")  # by its name: a damaged one is read to say the damage


# ------------------------------------------------------------------------------------------ pickle payloads
class _System:
    """Unpickling this calls os.system: what a malicious 'checkpoint' from the internet would carry."""

    def __init__(self, marker: Path):
        self.command = f"touch {marker}"

    def __reduce__(self):
        return (os.system, (self.command,))


class _Exec:
    def __init__(self, marker: Path):
        self.code = f"open({str(marker)!r}, 'w').close()"

    def __reduce__(self):
        return (builtins.exec, (self.code,))


def _write_payload(path: Path, kind: str, marker: Path) -> None:
    """A checkpoint-looking file whose unpickling would create ``marker``."""
    evil = _Exec(marker) if kind == "exec" else _System(marker)
    fake = {"format": "cnnlab-checkpoint", "version": 1, "model_name": "lenet", "model": evil}
    if kind == "legacy":  # the pre-1.6 non-zip format
        torch.save(fake, path, _use_new_zipfile_serialization=False)
    elif kind == "raw":  # a bare pickle stream, no torch container at all
        path.write_bytes(pickle.dumps(fake))
    else:
        torch.save(fake, path)


PAYLOADS = ["zip", "legacy", "raw", "exec"]


@pytest.mark.parametrize("kind", PAYLOADS)
def test_pickle_payload_is_refused_by_load_checkpoint_and_load_trained(tmp_path, kind):
    path, marker = tmp_path / "evil.pt", tmp_path / "PWNED"
    _write_payload(path, kind, marker)
    for load in (load_checkpoint, load_trained):
        with pytest.raises(CheckpointError, match="refusing .*evil.pt: it is not a plain tensor container") as info:
            load(path)
        message = str(info.value)
        assert "\n" not in message and "\x1b" not in message, repr(message)
        assert "weights_only` set to `False`" not in message  # never advise the unsafe load
    assert not marker.exists()


def _cli_in_process(argv, capsys) -> tuple[int, list[str]]:
    code = cli.main(argv)
    return code, capsys.readouterr().err.splitlines()


@pytest.mark.parametrize("kind", PAYLOADS)
def test_pickle_payload_is_refused_by_every_cli_command(tmp_path, kind, capsys, data_dir):
    evil, marker = tmp_path / "evil.pt", tmp_path / "PWNED"
    _write_payload(evil, kind, marker)
    run = tmp_path / "run"
    run.mkdir()
    _write_payload(run / "last.pt", kind, marker)
    image = tmp_path / "shirt.png"
    Image.new("L", (28, 28), 128).save(image)  # a valid image: only the checkpoint is wrong
    commands = [["train", "--resume", str(run)], ["eval", str(evil)], ["predict", str(evil), str(image)],
                ["export", str(evil), "--output", str(tmp_path / "m.onnx")]]
    for argv in commands:
        code, err = _cli_in_process(argv, capsys)
        assert code == 2 and len(err) == 1 and "not a plain tensor container" in err[0], (argv, err)
    assert not marker.exists()


def test_a_pickled_module_is_refused_by_every_command_saying_what_to_save_instead(tmp_path, capsys, data_dir):
    # torch.save(model) was refused with "cnnlab never unpickles code" and no word of what to save instead
    whole = tmp_path / "whole.pt"
    torch.save(torch.nn.Linear(2, 2), whole)
    run = tmp_path / "run"
    run.mkdir()
    torch.save(torch.nn.Linear(2, 2), run / "last.pt")
    image = tmp_path / "shirt.png"
    Image.new("L", (28, 28), 128).save(image)
    commands = [["train", "lenet", "--init-from", str(whole), "--data-dir", str(data_dir), "--epochs", "1",
                 "--out", str(tmp_path / "new")], ["train", "--resume", str(run)], ["eval", str(whole)],
                ["predict", str(whole), str(image)], ["export", str(whole), "--output", str(tmp_path / "m.onnx")]]
    for argv in commands:
        code, err = _cli_in_process(argv, capsys)
        said = ("cnnlab never unpickles code; expected a .pt file written by cnnlab train (a network of your own: save "
                "its weights alone, torch.save(model.state_dict(), FILE), for --init-from or --weights)")
        assert code == 2 and len(err) == 1 and said in err[0], (argv, err)
    assert not (tmp_path / "new" / "metrics.csv").exists()


def test_pickle_payload_resume_in_a_fresh_process_prints_exactly_one_line(tmp_path):
    """The whole stderr of a real `cnnlab train --resume` (warnings included) is the one refusal line."""
    run, marker = tmp_path / "run", tmp_path / "PWNED"
    run.mkdir()
    _write_payload(run / "last.pt", "raw", marker)
    proc = subprocess.run([sys.executable, "-m", "cnnlab", "train", "--resume", str(run)], capture_output=True,
                          text=True, timeout=120, cwd=ROOT)
    assert proc.returncode == 2 and not marker.exists()
    assert proc.stderr.splitlines() == [proc.stderr.strip()], proc.stderr
    assert proc.stderr.startswith("cnnlab train: error: refusing ") and "Traceback" not in proc.stderr


@pytest.mark.parametrize("edit", ["unknown-config-field", "config-not-a-dict", "no-model-weights", "wrong-shapes"])
def test_resume_of_a_structurally_wrong_checkpoint_is_one_line(tmp_path, edit, capsys, data_dir):
    """A checkpoint that loads but is not one this trainer wrote (another version, another model) is refused."""
    run = tmp_path / "run"
    cfg = make_config("lenet-relu", epochs=1, limit_train_batches=2, limit_val_batches=1, out=str(run))
    build_trainer(cfg, quiet=True, report=False).fit()
    state = load_checkpoint(run / "last.pt")
    if edit == "unknown-config-field":
        state["config"]["turbo"] = True
    elif edit == "config-not-a-dict":
        state["config"] = [1, 2]
    elif edit == "no-model-weights":
        del state["model"]
    else:
        state["model"]["features.0.weight"] = torch.zeros(2, 2)
    save_checkpoint(state, run / "last.pt")
    code, err = _cli_in_process(["train", "--resume", str(run)], capsys)
    assert code == 2 and len(err) == 1 and str(run / "last.pt") in err[0], err


# ---------------------------------------------------------------------------------------------- NaN stop
def _all_finite(state_dict: dict) -> bool:
    return all(bool(torch.isfinite(v).all()) for v in state_dict.values() if v.is_floating_point())


def test_nan_loss_stops_with_step_and_lr_and_keeps_the_last_good_checkpoint(tmp_path, data_dir):
    """The model's output turns NaN at step 5; a checkpoint was written at step 3 (every 3 steps)."""
    out = tmp_path / "run"
    cfg = make_config("lenet-relu", epochs=1, limit_train_batches=9, limit_val_batches=1, checkpoint_every=3,
                      log_every=50, out=str(out))
    trainer = build_trainer(cfg, quiet=True, report=False)
    forward = trainer.model.forward

    def poisoned(x):
        y = forward(x)
        return y * float("nan") if trainer.state.step + 1 >= 5 else y

    trainer.model.forward = poisoned
    with pytest.raises(NonFiniteLoss) as info:
        trainer.fit()
    message = str(info.value)
    assert "\n" not in message
    assert "at step 5 " in message and "learning rate 0.1 " in message and str(out / "last.pt") in message
    state = load_checkpoint(out / "last.pt")
    assert state["step"] == 3 and _all_finite(state["model"])


def test_non_finite_weights_are_never_checkpointed(tmp_path, data_dir):
    """An update that overflows the weights while the loss of its step was still finite (a huge lr on saturated
    units) must not reach last.pt: the step-6 checkpoint is refused and the step-3 one stays."""
    out = tmp_path / "run"
    cfg = make_config("lenet-relu", epochs=1, limit_train_batches=9, limit_val_batches=1, checkpoint_every=3,
                      out=str(out))
    trainer = build_trainer(cfg, quiet=True, report=False)

    def overflow(optimizer, args, kwargs):
        if trainer.state.step + 1 == 6:  # the loss of step 6 was finite; only its update overflowed
            with torch.no_grad():
                trainer.model.classifier[-1].weight.fill_(float("inf"))

    trainer.optimizer.register_step_post_hook(overflow)
    with pytest.raises(NonFiniteLoss, match=r"weights became non-finite at step 6 .*learning rate 0.1 "):
        trainer.fit()
    state = load_checkpoint(out / "last.pt")
    assert state["step"] == 3 and _all_finite(state["model"])


@pytest.mark.slow
def test_huge_learning_rate_exits_2_with_one_line(tmp_path, data_dir):
    out = tmp_path / "run"
    proc = subprocess.run(
        [sys.executable, "-m", "cnnlab", "train", "lenet-relu", "--lr", "1e6", "--epochs", "1",
         "--limit-train-batches", "20", "--limit-val-batches", "1", "--checkpoint-every", "1", "--out", str(out),
         "--no-report", "--quiet"],
        capture_output=True, text=True, timeout=300, cwd=ROOT, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.splitlines()
    assert len(lines) == 1 and "loss became non-finite at step" in lines[0] and "1000000.0" in lines[0], lines
    if (out / "last.pt").exists():  # a checkpoint from before the blow-up, if any, is sound
        assert _all_finite(load_checkpoint(out / "last.pt")["model"])
