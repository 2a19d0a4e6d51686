"""`cnnlab compare` says where it wrote its plot: the plot lands in the current folder by default, and every other
command that writes a file of the user's (predict --csv, export, explore --export, lr-find) names it."""

from __future__ import annotations

import json

import pytest

from cnnlab.cli import main
from cnnlab.train import train


@pytest.fixture(scope="module")
def run(tmp_path_factory, data_dir):
    out = tmp_path_factory.mktemp("runs") / "a-lenet"
    train("lenet", "book", out=str(out), data_dir=str(data_dir), epochs=1, limit_train_batches=2,
          limit_val_batches=1, batch_size=32, quiet=True, report=False)
    return out


def test_compare_names_the_plot_it_wrote_on_stderr_and_keeps_stdout_the_table(run, tmp_path, capsys, monkeypatch):
    # The plot was written into the current folder without a word: a user saw the table alone and did not know
    # compare.png was there until the next compare refused to overwrite it.
    monkeypatch.chdir(tmp_path)
    assert main(["compare", str(run), "--format", "json"]) == 0
    captured = capsys.readouterr()
    assert json.loads(captured.out)[0]["model"] == "lenet"  # the table alone, for a pipe
    assert captured.err.splitlines() == ["cnnlab compare: wrote compare.png"]
    assert (tmp_path / "compare.png").is_file()
    assert main(["compare", str(run), "--plot", str(tmp_path / "other.png")]) == 0
    assert capsys.readouterr().err.splitlines() == [f"cnnlab compare: wrote {tmp_path / 'other.png'}"]
    assert main(["compare", str(run), "--no-plot"]) == 0
    assert capsys.readouterr().err == ""
