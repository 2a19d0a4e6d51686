"""A run from --init-from feeds its model the input the source's weights were trained on (cnnlab.train.finetune):
the source run's normalisation, or none, whatever --normalize says, and a resume keeps it without the source."""

from __future__ import annotations

from pathlib import Path

import pytest

from cnnlab.runs.checkpoint import load_checkpoint
from cnnlab.train import build_run, build_trainer, make_config, resume

QUICK = dict(epochs=1, limit_train_batches=2, limit_val_batches=1, batch_size=64)


def _source(out: Path, normalize: bool) -> Path:
    build_trainer(make_config("lenet-relu", normalize=normalize, out=str(out), **QUICK), quiet=True,
                  report=False).fit()
    return out / "last.pt"


@pytest.fixture(scope="module")
def sources(tmp_path_factory, data_dir):
    folder = tmp_path_factory.mktemp("sources")
    return {"normalised": _source(folder / "normalised", True), "raw": _source(folder / "raw", False)}


def test_the_source_runs_normalisation_is_kept(sources, capsys):
    recorded = load_checkpoint(sources["normalised"])["normalize"]
    assert recorded is not None
    run = build_run(make_config("lenet-relu", normalize=False, init_from=str(sources["normalised"]), **QUICK))
    assert run.normalize == recorded
    assert "note: inputs normalised with the --init-from run's mean 0.286, std 0.353 (its weights were trained " \
           "on that input), not raw [0, 1] pixels" in capsys.readouterr().out


def test_raw_pixels_stay_raw(sources, capsys):
    run = build_run(make_config("lenet-relu", normalize=True, init_from=str(sources["raw"]), **QUICK))
    assert run.normalize is None
    out = capsys.readouterr().out
    assert "note: inputs left as [0, 1] pixels, as the --init-from run had them (its weights were trained on that " \
           "input), not this dataset's mean 0.286, std 0.353 that --normalize asks for" in out


def test_no_note_when_the_flags_agree_with_the_source(sources, capsys):
    run = build_run(make_config("lenet-relu", normalize=True, init_from=str(sources["normalised"]), **QUICK))
    assert run.normalize == load_checkpoint(sources["normalised"])["normalize"]
    assert "note: inputs" not in capsys.readouterr().out


def test_a_resume_keeps_it_when_the_source_is_gone(sources, tmp_path, data_dir):
    source = tmp_path / "source.pt"
    source.write_bytes(sources["normalised"].read_bytes())
    out = tmp_path / "run"
    build_trainer(make_config("lenet-relu", normalize=False, init_from=str(source), out=str(out), **QUICK),
                  quiet=True, report=False).fit()
    source.unlink()
    resume(out, quiet=True, report=False, epochs=2)
    assert load_checkpoint(out / "last.pt")["epoch"] == 2
    assert load_checkpoint(out / "last.pt")["normalize"] == load_checkpoint(sources["normalised"])["normalize"]
