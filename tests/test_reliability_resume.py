"""A run stopped at any moment resumes to the very same weights (docs/reliability.md, "Exact resume").

Two layers of evidence:

* real processes, as a user would see it: ``cnnlab train`` killed with SIGKILL after an epoch or in the middle of
  one, or stopped with SIGINT, then ``cnnlab train --resume`` in a fresh process; every tensor of the final model
  must be ``torch.equal`` to an uninterrupted run's;
* in-process, a real SIGINT at each delicate point of the loop (inside a log interval, on a log-interval boundary,
  on an epoch's last step, during evaluate(), during a checkpoint write, on the first step after a resume), and a
  resume under another thread count.

Bitwise equality on a CPU holds for one thread count (kernels split their reductions by thread), so every process
here runs with OMP_NUM_THREADS=1 — which is also ~10x faster than two threads on two loaded cores.
"""

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from cnnlab.device import torch_switches_restored
from cnnlab.errors import Interrupted
from cnnlab.runs.checkpoint import load_checkpoint
from cnnlab.runs.record import decide_status
from cnnlab.train import build_trainer, make_config, resume
from cnnlab.train import trainer as trainer_module

ROOT = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "OMP_NUM_THREADS": "1"}
STEPS = 40  # per epoch; two epochs
RUN = ["lenet-relu", "--epochs", "2", "--limit-train-batches", str(STEPS), "--limit-val-batches", "4",
       "--deterministic", "--no-report", "--quiet"]


# ------------------------------------------------------------------------------------------------ helpers
def _start(out: Path, *extra: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "cnnlab", "train", *RUN, "--out", str(out), *extra], cwd=ROOT,
                            env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _wait_until(proc: subprocess.Popen, condition, timeout: float = 240) -> None:
    """Poll ``condition`` every 10 ms while ``proc`` runs; fail if it ends (or times out) first."""
    deadline = time.monotonic() + timeout
    while not condition():
        if proc.poll() is not None:
            out, err = proc.communicate()
            pytest.fail(f"the run ended (code {proc.returncode}) before it could be interrupted: {err[-2000:]}")
        if time.monotonic() > deadline:
            proc.kill()
            pytest.fail("timed out waiting for the run to reach the interruption point")
        time.sleep(0.01)


def _epochs_done(run: Path) -> int:
    try:
        with open(run / "metrics.csv", newline="") as f:
            return len(list(csv.DictReader(f)))
    except FileNotFoundError:
        return 0


def _resume_in_a_fresh_process(run: Path) -> None:
    proc = subprocess.run([sys.executable, "-m", "cnnlab", "train", "--resume", str(run), "--no-report", "--quiet"],
                          cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == ""


def _assert_same_weights(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    different = [k for k in a if not torch.equal(a[k], b[k])]
    assert not different, f"tensors differ after resume: {different}"


@pytest.fixture(scope="module")
def reference(tmp_path_factory, data_dir):
    """The uninterrupted run, started at once so it overlaps the first interrupted one; call for its last.pt."""
    out = tmp_path_factory.mktemp("reference") / "A"
    proc = _start(out)

    def last() -> dict:
        if proc.returncode is None:
            _, err = proc.communicate(timeout=600)
            assert proc.returncode == 0, err
        state = load_checkpoint(out / "last.pt")
        assert state["step"] == 2 * STEPS and len(state["history"]) == 2
        return state

    yield last
    if proc.poll() is None:
        proc.kill()
        proc.wait()


# ----------------------------------------------------------------------------------- real processes, real kills
@pytest.mark.slow
def test_kill_9_after_the_first_epoch_then_resume_is_bitwise_exact(tmp_path, reference):
    run = tmp_path / "B"
    proc = _start(run)
    _wait_until(proc, lambda: _epochs_done(run) >= 1)
    proc.send_signal(signal.SIGKILL)  # no handler, no cleanup: possibly in the middle of epoch 2 or of a write
    proc.wait()
    assert proc.returncode == -signal.SIGKILL
    assert not (run / "result.json").exists()
    assert load_checkpoint(run / "last.pt")["epoch"] >= 1  # metrics.csv never runs ahead of last.pt
    _resume_in_a_fresh_process(run)
    final = load_checkpoint(run / "last.pt")
    assert final["step"] == 2 * STEPS and [r["epoch"] for r in final["history"]] == [1, 2]
    _assert_same_weights(reference()["model"], final["model"])


@pytest.mark.slow
def test_kill_9_in_the_middle_of_an_epoch_then_resume_is_bitwise_exact(tmp_path, reference):
    run = tmp_path / "C"
    proc = _start(run, "--checkpoint-every", "7")
    _wait_until(proc, lambda: (run / "last.pt").exists())
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    stopped = load_checkpoint(run / "last.pt")
    assert 0 < stopped["loader"]["batch"] < STEPS and stopped["epoch"] == 0, stopped["loader"]  # mid-epoch
    assert stopped["epoch_metrics"]["count"] == stopped["step"] * 128  # the partial epoch's sums came along
    _resume_in_a_fresh_process(run)
    final = load_checkpoint(run / "last.pt")
    _assert_same_weights(reference()["model"], final["model"])
    # the interrupted epoch's figures are exact too: its partial sums were checkpointed and carried on
    assert [r["train_loss"] for r in final["history"]] == [r["train_loss"] for r in reference()["history"]]


@pytest.mark.slow
def test_sigint_writes_a_resumable_checkpoint_and_says_how_to_resume(tmp_path, reference):
    run = tmp_path / "D"
    proc = _start(run, "--checkpoint-every", "5")
    _wait_until(proc, lambda: (run / "last.pt").exists())  # training has started
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 130, err
    assert out == "", out
    stopped = load_checkpoint(run / "last.pt")
    hint = (f"SIGINT: stopped at epoch {stopped['epoch'] + 1}, step {stopped['step']}; checkpoint written. "
            f"Resume with: cnnlab train --resume {run}")
    assert err.strip().splitlines() == [hint]  # on stderr, even with --quiet; no traceback, no KeyboardInterrupt
    # a reader (the explorer, `cnnlab runs`) sees it stopped at once, not as training for ten quiet minutes
    marker = json.loads((run / "interrupted.json").read_text())
    assert marker["signal"] == "SIGINT" and marker["step"] == stopped["step"]
    assert (marker["epoch"], marker["epochs_done"]) == (stopped["epoch"] + 1, stopped["epoch"])  # as the line says
    assert decide_status(run, None, {}, now=time.time()) == "interrupted"
    _resume_in_a_fresh_process(run)
    _assert_same_weights(reference()["model"], load_checkpoint(run / "last.pt")["model"])
    assert not (run / "interrupted.json").exists()
    assert decide_status(run, json.loads((run / "result.json").read_text()), {}, now=time.time()) == "finished"


# ------------------------------------------------------------------------ in-process: every delicate moment
@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """One thread for every in-process run, the references included (a reference computed on two threads differs
    from a run on one: the very effect test_resume_under_another_thread_count_uses_the_runs_own is about).
    conftest.py puts back, after each test, the deterministic mode and the thread count a test changed."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _config(out: Path):
    # 6 steps an epoch with a log interval of 3: epoch ends, interval boundaries and plain steps all occur.
    return make_config("lenet-relu", epochs=2, limit_train_batches=6, limit_val_batches=2, log_every=3,
                       deterministic=True, out=str(out))


@pytest.fixture(scope="module")
def in_process_reference(tmp_path_factory, data_dir):
    out = tmp_path_factory.mktemp("ref") / "run"
    with torch_switches_restored():  # a module fixture's run is outside conftest.py's restore after each test
        build_trainer(_config(out), quiet=True, report=False).fit()
    return load_checkpoint(out / "last.pt")["model"]


def _sigint() -> None:
    os.kill(os.getpid(), signal.SIGINT)  # a real signal: the Trainer's handler, not a simulation of it


def _interrupt(trainer, where: str, at: int, monkeypatch) -> None:
    """Arrange a SIGINT ``where`` (after step ``at`` / in epoch ``at``'s evaluate or checkpoint)."""
    if where == "after step":
        trainer.optimizer.register_step_post_hook(lambda *_: _sigint() if trainer.state.step + 1 == at else None)
    elif where == "in evaluate":
        evaluate = trainer.evaluate

        def interrupted_evaluate(*args, **kwargs):
            if trainer.state.epoch + 1 == at:
                _sigint()
            return evaluate(*args, **kwargs)

        monkeypatch.setattr(trainer, "evaluate", interrupted_evaluate)
    elif where == "in checkpoint write":
        save = trainer_module.save_checkpoint

        def interrupted_save(state, path):
            if state["epoch"] == at:  # the end-of-epoch checkpoint of epoch ``at``
                _sigint()
            save(state, path)

        monkeypatch.setattr(trainer_module, "save_checkpoint", interrupted_save)


@pytest.mark.parametrize("where, at", [
    ("after step", 1),  # the very first step
    ("after step", 2),  # inside a log interval: the loss window is half filled
    ("after step", 3),  # on a log-interval boundary (the host sync)
    ("after step", 6),  # the last step of epoch 1: the loader is exhausted but the epoch not evaluated
    ("after step", 7),  # the first step of epoch 2
    ("in evaluate", 1),  # the signal waits for evaluate and the epoch's checkpoint, then one more step
    ("in checkpoint write", 1),  # during save_checkpoint at the end of epoch 1
])
def test_sigint_anywhere_then_resume_is_bitwise_exact(tmp_path, in_process_reference, where, at, monkeypatch):
    out = tmp_path / "run"
    trainer = build_trainer(_config(out), quiet=True, report=False)
    _interrupt(trainer, where, at, monkeypatch)
    with pytest.raises(Interrupted) as info:
        trainer.fit()
    assert info.value.signum == signal.SIGINT
    monkeypatch.undo()  # the resumed run is a plain one
    stopped = load_checkpoint(out / "last.pt")
    assert stopped["step"] == trainer.state.step and stopped["step"] < 12
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # handlers restored after the stop
    resume(out, quiet=True, report=False)
    final = load_checkpoint(out / "last.pt")
    assert final["step"] == 12 and len(final["history"]) == 2
    _assert_same_weights(in_process_reference, final["model"])


def test_a_resumed_epochs_row_counts_the_whole_epoch(tmp_path, monkeypatch):
    # Its images/s counted only the batches after the resume, against all of its time: a third of a normal epoch's
    out = tmp_path / "run"
    trainer = build_trainer(_config(out), quiet=True, report=False)
    _interrupt(trainer, "after step", 4, monkeypatch)
    with pytest.raises(Interrupted):
        trainer.fit()
    monkeypatch.undo()
    stopped = load_checkpoint(out / "last.pt")
    assert stopped["epoch_images"] == 4 * 128 and stopped["epoch_seconds"] > 0  # 4 of epoch 1's 6 batches
    resume(out, quiet=True, report=False)
    rows = load_checkpoint(out / "last.pt")["history"]
    assert [round(r["images_per_s"] * r["seconds"]) for r in rows] == [6 * 128, 6 * 128]
    assert rows[0]["seconds"] > stopped["epoch_seconds"]  # the time before the stop, and after it


def test_interrupted_twice_still_bitwise_exact(tmp_path, in_process_reference):
    out = tmp_path / "run"
    trainer = build_trainer(_config(out), quiet=True, report=False)
    trainer.optimizer.register_step_post_hook(lambda *_: _sigint() if trainer.state.step + 1 == 4 else None)
    with pytest.raises(Interrupted):
        trainer.fit()
    again = build_trainer(_config(out), quiet=True, report=False, run_dir=out,
                          resume_state=load_checkpoint(out / "last.pt"))
    again.optimizer.register_step_post_hook(lambda *_: _sigint() if again.state.step + 1 == 9 else None)
    with pytest.raises(Interrupted):
        again.fit()
    assert load_checkpoint(out / "last.pt")["step"] == 9
    resume(out, quiet=True, report=False)
    _assert_same_weights(in_process_reference, load_checkpoint(out / "last.pt")["model"])


def test_second_sigint_while_the_stop_checkpoint_is_written_is_ignored(tmp_path, in_process_reference, monkeypatch):
    out = tmp_path / "run"
    trainer = build_trainer(_config(out), quiet=True, report=False)
    trainer.optimizer.register_step_post_hook(lambda *_: _sigint() if trainer.state.step + 1 == 2 else None)
    save, writes = trainer_module.save_checkpoint, []

    def impatient_save(state, path):  # the user presses Ctrl-C again while the checkpoint is being written
        writes.append(state["step"])
        _sigint()
        save(state, path)

    monkeypatch.setattr(trainer_module, "save_checkpoint", impatient_save)
    with pytest.raises(Interrupted):
        trainer.fit()
    monkeypatch.undo()
    assert writes == [2] and load_checkpoint(out / "last.pt")["step"] == 2
    resume(out, quiet=True, report=False)
    _assert_same_weights(in_process_reference, load_checkpoint(out / "last.pt")["model"])


class _Killed(BaseException):
    """A kill -9 where it is raised: the test catches it where the process would have ended."""


def _killed_after_a_checkpoint(trainer, epoch: int, name: str | None, monkeypatch) -> None:
    """End the fit as a kill -9 would, right after the end-of-epoch checkpoint ``name`` of ``epoch`` is written
    (``None``: after the first of them, whichever it is); a killed process writes nothing more, so no observer
    hears of a failure either. At a best epoch last.pt is best.pt's file, linked rather than written."""
    save, link = trainer_module.save_checkpoint, trainer_module.atomic_link

    def killed(state, path):
        save(state, path)
        if state["epoch"] == epoch and (name is None or Path(path).name == name):
            raise _Killed

    def killed_linking(source, path):
        link(source, path)
        if load_checkpoint(path)["epoch"] == epoch and Path(path).name == name:
            raise _Killed

    monkeypatch.setattr(trainer_module, "save_checkpoint", killed)
    monkeypatch.setattr(trainer_module, "atomic_link", killed_linking)
    notify = trainer._notify
    monkeypatch.setattr(trainer, "_notify", lambda event, *a: None if event == "on_failure" else notify(event, *a))


def test_a_kill_between_an_epochs_two_checkpoints_keeps_best_pt_the_best_epochs(tmp_path, monkeypatch):
    """last.pt was written before best.pt: a kill between the two left last.pt holding the epoch's best accuracy,
    so the resumed run never found that epoch best again and best.pt stayed an older epoch's for good."""
    ref = tmp_path / "ref"
    build_trainer(_config(ref), quiet=True, report=False).fit()
    best = load_checkpoint(ref / "best.pt")
    assert best["epoch"] == 2, "the scenario needs a run whose last epoch is its best"
    out = tmp_path / "run"
    trainer = build_trainer(_config(out), quiet=True, report=False)
    _killed_after_a_checkpoint(trainer, 2, None, monkeypatch)
    with pytest.raises(_Killed):
        trainer.fit()
    monkeypatch.undo()
    resume(out, quiet=True, report=False)
    assert load_checkpoint(out / "best.pt")["epoch"] == 2
    _assert_same_weights(best["model"], load_checkpoint(out / "best.pt")["model"])


def test_a_run_killed_after_its_last_checkpoint_gets_its_final_figures_on_resume(tmp_path, monkeypatch, capsys):
    """Killed after the last epoch's last.pt but before metrics.csv and result.json: the resume said "finished;
    nothing to do", and the run stayed without its test figures for good (its report: "still training")."""
    ref = tmp_path / "ref"
    build_trainer(_config(ref), quiet=True, report=False).fit()
    out = tmp_path / "run"
    trainer = build_trainer(_config(out), quiet=True, report=False)
    _killed_after_a_checkpoint(trainer, 2, "last.pt", monkeypatch)
    with pytest.raises(_Killed):
        trainer.fit()
    monkeypatch.undo()
    assert not (out / "result.json").exists() and _epochs_done(out) == 1
    capsys.readouterr()
    resume(out, quiet=True, report=False)
    assert "was stopped before its final figures; writing them" in capsys.readouterr().out
    assert _epochs_done(out) == 2
    result, expected = (json.loads((run / "result.json").read_text()) for run in (out, ref))
    assert result["status"] == "finished" and result["test_acc"] == expected["test_acc"]
    assert result["epochs"] == 2 and result["per_class"] == expected["per_class"]


def test_resume_under_another_thread_count_uses_the_runs_own(tmp_path, data_dir, capsys):
    """A shell with another OMP_NUM_THREADS must not change a deterministic run's result: the resume pins the
    thread count the run started with (CPU kernels split their sums by thread, so it changes the rounding)."""
    torch.set_num_threads(1)
    ref = tmp_path / "ref"
    build_trainer(_config(ref), quiet=True, report=False).fit()
    out = tmp_path / "run"
    trainer = build_trainer(_config(out), quiet=True, report=False)
    trainer.optimizer.register_step_post_hook(lambda *_: _sigint() if trainer.state.step + 1 == 2 else None)
    with pytest.raises(Interrupted):
        trainer.fit()
    torch.set_num_threads(2)
    during = []
    resume(out, report=False, on_epoch=lambda row: during.append(torch.get_num_threads()))
    assert "using 1 intra-op threads" in capsys.readouterr().out
    assert during == [1, 1] and torch.get_num_threads() == 2  # the run's own count while it ran, the caller's after
    _assert_same_weights(load_checkpoint(ref / "last.pt")["model"], load_checkpoint(out / "last.pt")["model"])


# ------------------------------------------------------------------ fine-tuning: across the unfreeze boundary
@pytest.fixture(scope="module")
def finetune_source(tmp_path_factory, data_dir) -> Path:
    """A checkpoint to fine-tune from (--init-from): the unfreeze logic is the same for --pretrained."""
    out = tmp_path_factory.mktemp("source") / "run"
    build_trainer(make_config("lenet-relu", epochs=1, limit_train_batches=2, limit_val_batches=1, out=str(out)),
                  quiet=True, report=False).fit()
    return out / "last.pt"


def _finetune_config(out: Path, source: Path):
    # the finetune recipe: the body frozen in epoch 1 (6 steps), everything in epoch 2, body at a lower lr, AdamW
    return make_config("lenet-relu", "finetune", epochs=2, freeze_epochs=1, init_from=str(source),
                       limit_train_batches=6, limit_val_batches=2, log_every=3, deterministic=True, out=str(out))


@pytest.mark.parametrize("where, at", [
    ("after step", 5),  # inside the frozen epoch
    ("after step", 6),  # right before the unfreeze: the frozen epoch's last step, not yet evaluated
    ("in checkpoint write", 1),  # at the boundary: the frozen epoch's end-of-epoch checkpoint
    ("after step", 7),  # right after the unfreeze: the first step that moves the body
])
def test_sigint_around_the_unfreeze_then_resume_is_bitwise_exact(tmp_path, finetune_source, where, at, monkeypatch):
    ref = tmp_path / "ref"
    reference = build_trainer(_finetune_config(ref, finetune_source), quiet=True, report=False)
    reference.fit()
    assert all(p.requires_grad for p in reference.model.parameters())  # unfrozen for epoch 2
    out = tmp_path / "run"
    trainer = build_trainer(_finetune_config(out, finetune_source), quiet=True, report=False)
    _interrupt(trainer, where, at, monkeypatch)
    with pytest.raises(Interrupted):
        trainer.fit()
    monkeypatch.undo()
    stopped = load_checkpoint(out / "last.pt")
    assert stopped["step"] < 12
    resume(out, quiet=True, report=False)
    final = load_checkpoint(out / "last.pt")
    assert final["step"] == 12 and len(final["history"]) == 2
    _assert_same_weights(load_checkpoint(ref / "last.pt")["model"], final["model"])
    # the optimizer's moments too: the body's appear only after the unfreeze, in the resumed run as in the reference
    ref_opt, opt = load_checkpoint(ref / "last.pt")["optimizer"], final["optimizer"]
    assert ref_opt["state"].keys() == opt["state"].keys()
    assert all(torch.equal(ref_opt["state"][k][n], opt["state"][k][n]) for k in opt["state"] for n in opt["state"][k])
