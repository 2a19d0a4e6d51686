"""What `--init-from` says of a file it cannot read: it takes a cnnlab checkpoint or a state dict from elsewhere, so
its refusal must not ask for a checkpoint written by cnnlab train alone."""

from __future__ import annotations

import pytest
import torch

from cli_support import run_with_output
from cnnlab.errors import CnnlabError
from cnnlab.models import create_model
from cnnlab.train.finetune import init_from

WANTED = r"; expected a cnnlab checkpoint \(a run's best.pt\) or a state dict of this model's network"


@pytest.mark.parametrize("name, content", [("weights.pth", b"not weights\n"),
                                           ("model.safetensors", b"\x08\x00\x00\x00\x00\x00\x00\x00{}")])
def test_an_unreadable_init_from_file_names_both_kinds_it_takes(tmp_path, name, content):
    # A state dict saved by another script (or a Hub .safetensors file) that arrived damaged was refused with
    # "expected a .pt file written by cnnlab train", sending the user away from a kind of file --init-from takes.
    (tmp_path / name).write_bytes(content)
    with pytest.raises(CnnlabError, match=WANTED) as info:
        init_from(create_model("lenet", num_classes=10, in_channels=1), tmp_path / name)
    assert "written by cnnlab train" not in str(info.value) and "\n" not in str(info.value)


@pytest.mark.filterwarnings("ignore:`torch.jit.s[a-z]*` is deprecated:FutureWarning")
def test_a_torchscript_init_from_file_names_both_kinds_it_takes(tmp_path):
    scripted = torch.jit.script(torch.nn.Linear(2, 2))
    torch.jit.save(scripted, tmp_path / "scripted.pt")
    with pytest.raises(CnnlabError, match=WANTED):
        init_from(create_model("lenet", num_classes=10, in_channels=1), tmp_path / "scripted.pt")


def test_an_init_from_file_of_another_kind_is_refused_before_the_data_is_read(tmp_path, capsys):
    # A folder of photos takes minutes to decode the first time; a weights file that is no torch.save file (a text
    # file, an HTML page saved in place of a download) was refused only after that wait. The data folder here does
    # not exist: a line about it would mean the data was read first.
    (tmp_path / "weights.pth").write_text("<html>404 Not Found</html>\n")
    code, _, err = run_with_output(["train", "lenet", "--data-dir", str(tmp_path / "no-data-here"), "--out",
                                    str(tmp_path / "run"), "--init-from", str(tmp_path / "weights.pth")], capsys)
    assert code == 2 and len(err) == 1, err
    assert "weights.pth is not a PyTorch checkpoint" in err[0] and "no-data-here" not in err[0]
    assert not (tmp_path / "run").exists()
