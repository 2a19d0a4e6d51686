"""cnnlab.train.spawn: data parallel over local processes that split the batch (docs/distributed.md).

The slow test starts two real worker processes through PyTorch's launcher and compares the run with the
one-process run of the same global batch.
"""

import re

import pytest
import torch

from cnnlab.errors import CnnlabError
from cnnlab.train.spawn import cores, split_batch, train_in_processes


def test_the_global_batch_is_split_evenly():
    assert split_batch(128, 2) == 64
    assert split_batch(256, 1) == 256
    with pytest.raises(CnnlabError, match="^procs must divide the batch size so that the global batch stays 128, "
                                          "got 3 processes$"):
        split_batch(128, 3)
    for bad in (0, -1, True, 2.0):
        with pytest.raises(CnnlabError, match="^procs must be a positive integer, got "):
            split_batch(128, bad)


def test_bad_requests_fail_before_any_process_starts(monkeypatch):
    assert cores() >= 1
    with pytest.raises(CnnlabError, match="^on_epoch cannot cross into worker processes"):
        train_in_processes(2, "lenet", on_epoch=print)
    with pytest.raises(CnnlabError, match="^procs must divide the batch size so that the global batch stays 128"):
        train_in_processes(3, "lenet")
    with pytest.raises(CnnlabError, match="^procs splits the CPU's cores among processes; expected --device cpu, "
                                          "got cuda$"):
        train_in_processes(2, "lenet", device="cuda")
    with pytest.raises(CnnlabError, match="unknown key.s. .*expected TrainConfig fields"):
        train_in_processes(2, "lenet", no_such_field=1)
    monkeypatch.setenv("WORLD_SIZE", "2")
    with pytest.raises(CnnlabError, match="^already one of 2 processes of a launcher"):
        train_in_processes(2, "lenet")


@pytest.mark.slow
def test_two_processes_train_the_one_process_run(data_dir, tmp_path):
    from cnnlab.runs.checkpoint import load_checkpoint
    from cnnlab.train import train

    # lenet-relu has no batch norm, whose statistics would be per process; 4 steps of a global batch of 32.
    common = dict(epochs=1, batch_size=32, limit_train_batches=4, limit_val_batches=2, deterministic=True,
                  device="cpu", data_dir=str(data_dir), quiet=True, report=False)
    one = train("lenet-relu", out=str(tmp_path / "one"), **common)
    two = train_in_processes(2, "lenet-relu", out=str(tmp_path / "two"), **common)
    a = load_checkpoint(tmp_path / "one" / "last.pt")["model"]
    b = load_checkpoint(tmp_path / "two" / "last.pt")["model"]
    assert a.keys() == b.keys()
    for name in a:
        torch.testing.assert_close(b[name], a[name], rtol=0, atol=1e-5, msg=name)
    assert two[-1]["val_acc"] == pytest.approx(one[-1]["val_acc"], abs=1e-3)
    assert two[-1]["train_loss"] == pytest.approx(one[-1]["train_loss"], rel=1e-4)
    config = load_checkpoint(tmp_path / "two" / "last.pt")["config"]
    assert config["batch_size"] == 16  # per process: the global batch stays 32


@pytest.mark.slow
def test_a_worker_error_comes_back_as_one_line(data_dir, tmp_path):
    (tmp_path / "taken").mkdir()
    (tmp_path / "taken" / "notes.txt").write_text("not a run")  # rank 0 refuses a folder that holds files
    with pytest.raises(CnnlabError) as info:
        train_in_processes(2, "lenet-relu", epochs=1, limit_train_batches=1, device="cpu", data_dir=str(data_dir),
                           out=str(tmp_path / "taken"), quiet=True, report=False)
    message = str(info.value)
    # both ranks refuse the folder; whichever the launcher reports first is named
    assert re.match(r"training process [01] of 2 failed: ", message) and "\n" not in message
    assert str(tmp_path / "taken") in message
