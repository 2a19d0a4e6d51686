"""Weights files as other tools write them, opened as a state dict (cnnlab.models.state_dict): the files are written
here with plain torch in the layout each tool writes (its keys and the objects beside the weights), and the network
with the weights loaded by torch directly is the oracle."""

from __future__ import annotations

import json
import pickle
import re
import sys
import warnings
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from cnnlab.errors import CnnlabError
from cnnlab.explore.model import Options
from cnnlab.explore.sources import open_model
from cnnlab.train.finetune import init_from

HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"  # the first bytes of every HDF5 file (h5py's, so Keras's .h5)
NET = ("from torch import nn\n"
       "def build():\n"
       "    return nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.AdaptiveAvgPool2d(1), "
       "nn.Flatten(), nn.Linear(4, 3))\n")


def _net() -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                         nn.Linear(4, 3))


class Backbone(nn.Module):
    """A module passed to a LightningModule's __init__ and saved among its hyper-parameters."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 2, 1)


class FastcoreL:
    """Stands for fastcore's ``L``, the list fastai's optimizer keeps its state in: a class of another library."""

    def __init__(self, items: list) -> None:
        self.items = items


class Runs:
    """An object whose unpickling would run a command: what a weights file must never do when opened."""

    def __init__(self, marker: Path, call: str = "subprocess") -> None:
        self.marker, self.call = marker, call

    def __reduce__(self):
        if self.call == "os":
            import os
            return os.system, (f"touch {self.marker}",)
        import subprocess
        return subprocess.call, (["touch", str(self.marker)],)


@pytest.fixture
def mynet(tmp_path, monkeypatch):
    """``mynet:build`` importable, and the trained network whose weights the files hold."""
    (tmp_path / "mynet.py").write_text(NET)
    monkeypatch.syspath_prepend(str(tmp_path))
    # imported afresh from this file and forgotten after: another test's mynet.py (test_explore_module writes one)
    # is another network, which a cached module would give in its place
    sys.modules.pop("mynet", None)
    torch.manual_seed(3)
    net = _net()
    with torch.no_grad():
        net[1].running_mean.normal_()
        net[1].running_var.uniform_(0.5, 1.5)
    yield net.eval()
    sys.modules.pop("mynet", None)


def _check_opens(net: nn.Module, path: Path) -> None:
    explored = open_model("mynet:build", Options(input_size=8, weights=path))
    images = torch.randint(0, 256, (2, 3, 8, 8), dtype=torch.uint8)
    with torch.no_grad():
        assert torch.allclose(explored.logits(images), net(images.float() / 255), atol=1e-5)


def _lightning(state: dict, hyper_parameters: dict) -> dict:
    """A checkpoint laid out as PyTorch Lightning's ``trainer.save_checkpoint`` (and ``ModelCheckpoint``) writes it."""
    return {"epoch": 0, "global_step": 1, "pytorch-lightning_version": "2.6.6", "state_dict": state,
            "loops": {"fit_loop": {"state_dict": {}}}, "callbacks": {}, "optimizer_states": [{"state": {},
            "param_groups": [{"lr": 0.01, "params": [0]}]}], "lr_schedulers": [], "hparams_name": "kwargs",
            "hyper_parameters": hyper_parameters}


@pytest.mark.parametrize("prefix", ["module._orig_mod.", "_orig_mod.module.", "model._orig_mod."])
def test_keys_under_several_wrappers_names_are_read_without_them(mynet, tmp_path, prefix):
    """A torch.compile'd model in DataParallel (``module._orig_mod.``), DataParallel compiled (``_orig_mod.module.``),
    a Lightning module's compiled ``self.model``: the keys fit the network without all of their leading names.
    Only one name was dropped, and the file did not fit."""
    torch.save({f"{prefix}{k}": v for k, v in mynet.state_dict().items()}, tmp_path / "w.pth")
    _check_opens(mynet, tmp_path / "w.pth")
    explored = open_model("mynet:build", Options(input_size=8, weights=tmp_path / "w.pth"))
    assert f"without their {prefix!r} prefix" in explored.notes[0]


@pytest.mark.parametrize("hparam", [Path("/data/photos"), np.float64(0.5), np.arange(3), "module"])
def test_a_lightning_checkpoint_is_read_past_its_hyper_parameters(mynet, tmp_path, hparam):
    """save_hyperparameters() keeps a Path, a numpy value or a module passed in beside the weights; a weights-only
    read refuses them, and refused the whole file. Now they read as nothing and the weights under ``model.`` load."""
    value = Backbone() if isinstance(hparam, str) else hparam
    torch.save(_lightning({f"model.{k}": v for k, v in mynet.state_dict().items()}, {"lr": 0.01, "x": value}),
               tmp_path / "lit.ckpt")
    _check_opens(mynet, tmp_path / "lit.ckpt")


def test_the_page_says_the_objects_beside_the_weights_were_left_unread(mynet, tmp_path):
    """The objects read as nothing (Lightning's hyper-parameters, fastai's optimizer state) went unsaid: the note
    read "(read weights-only)." as for a plain state dict, and a reader took the file as read whole."""
    torch.save(_lightning({f"model.{k}": v for k, v in mynet.state_dict().items()},
                          {"lr": 0.01, "data": Path("/data/photos"), "opt": FastcoreL([])}), tmp_path / "lit.ckpt")
    explored = open_model("mynet:build", Options(input_size=8, weights=tmp_path / "lit.ckpt"))
    assert f"Its weights: {tmp_path / 'lit.ckpt'} (read weights-only, its keys without their 'model.' prefix; " \
           "2 kinds of Python object beside the weights left unread, never run: pathlib.PosixPath, " \
           "test_models_state_dict.FastcoreL)." in explored.notes[0]
    torch.save(mynet.state_dict(), tmp_path / "plain.pth")  # nothing beside the weights: nothing said
    explored = open_model("mynet:build", Options(input_size=8, weights=tmp_path / "plain.pth"))
    assert f"Its weights: {tmp_path / 'plain.pth'} (read weights-only)." in explored.notes[0]


def test_fastais_learn_save_starts_a_run_past_its_optimizer_state(mynet, tmp_path):
    """fastai's ``learn.save(name)`` writes {'model': state dict, 'opt': its optimizer's state}, the state in
    fastcore's classes: `--weights` and `train --init-from` read the model's weights and leave the rest."""
    torch.save({"model": mynet.state_dict(), "opt": {"state": FastcoreL([{}]), "hypers": FastcoreL([{"lr": 0.1}])}},
               tmp_path / "learn.pth")
    _check_opens(mynet, tmp_path / "learn.pth")
    fresh = _net()
    done = init_from(fresh, tmp_path / "learn.pth")
    assert f"initialised 9 of 9 tensors from {tmp_path / 'learn.pth'}" in done.line
    assert all(torch.equal(v, mynet.state_dict()[k]) for k, v in fresh.state_dict().items())


def test_objects_beside_the_weights_never_run(mynet, tmp_path):
    """What an object would run when unpickled stays unrun: its callable reads as nothing (``subprocess.call``),
    or, in a module torch never allows (``os``), the file is refused in one line."""
    marker = tmp_path / "ran"
    torch.save({"state_dict": mynet.state_dict(), "extra": Runs(marker)}, tmp_path / "call.pth")
    _check_opens(mynet, tmp_path / "call.pth")
    torch.save({"state_dict": mynet.state_dict(), "extra": Runs(marker, "os")}, tmp_path / "os.pth")
    with pytest.raises(CnnlabError, match=r"^refusing .*os.pth: it is not a plain state dict \(.*(os|posix).*\), "
                                          r"and cnnlab never unpickles code; expected a state dict of the network"):
        open_model("mynet:build", Options(input_size=8, weights=tmp_path / "os.pth"))
    assert not marker.exists()


def test_a_pickled_module_is_refused_with_what_to_save_instead(mynet, tmp_path):
    """torch.save(model), a fastai ``learn.export()``: nothing but Python objects, refused unread in one line that
    says what to save instead (its state_dict()); the protocol warning of a bare pickle stream is not shown."""
    torch.save(Backbone(), tmp_path / "whole.pth")
    with pytest.raises(CnnlabError, match=r"^refusing .*whole.pth: it is not a plain state dict \(Unsupported global: "
                                          r"GLOBAL test_models_state_dict.Backbone was not an allowed global by "
                                          r"default\), and cnnlab never unpickles code; expected a state dict of the "
                                          r"network mynet:build\(\) builds \(its state_dict\(\), saved by torch.save"
                                          ) as e:
        open_model("mynet:build", Options(input_size=8, weights=tmp_path / "whole.pth"))
    assert "\n" not in str(e.value)
    with open(tmp_path / "raw.pkl", "wb") as f:  # a plain pickle stream of an object
        pickle.dump({"learner": Backbone()}, f, protocol=4)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(CnnlabError, match=r"^refusing .*raw.pkl: it is not a plain state dict"):
            open_model("mynet:build", Options(input_size=8, weights=tmp_path / "raw.pkl"))


def _keras_files(folder: Path) -> list[Path]:
    """A Keras 3 ``model.save("m.keras")`` zip (its three entries) and a ``model.save_weights("m.weights.h5")`` file
    (HDF5: its signature, then the rest of a file)."""
    with zipfile.ZipFile(folder / "m.keras", "w") as z:
        z.writestr("metadata.json", json.dumps({"keras_version": "3.15.1"}))
        z.writestr("config.json", json.dumps({"class_name": "Sequential"}))
        z.writestr("model.weights.h5", HDF5_SIGNATURE + bytes(64))
    (folder / "m.weights.h5").write_bytes(HDF5_SIGNATURE + bytes(64))
    return [folder / "m.keras", folder / "m.weights.h5"]


def test_a_keras_file_is_refused_saying_to_export_it_to_onnx(mynet, tmp_path):
    """Keras's files, as --weights, as the model, or to start a run from: one line naming Keras and the way in
    (its ONNX export). --weights read a .keras zip as a damaged torch archive ("file in archive is not in a
    subdirectory") and an .h5 as a pickle ("Unsupported operand 72")."""
    for path, what in zip(_keras_files(tmp_path), ("a Keras model", "an HDF5 file"), strict=True):
        way = (r"cnnlab does not build Keras networks \(export the model to ONNX, model.export\('model.onnx', "
               r"format='onnx'\), and open the .onnx\)")
        with pytest.raises(CnnlabError, match=rf"^{re.escape(str(path))} is {what} .*, not a state dict: {way}; "
                                              r"expected a state dict of the network mynet:build\(\) builds"):
            open_model("mynet:build", Options(input_size=8, weights=path))
        with pytest.raises(CnnlabError, match=rf"^{re.escape(str(path))} is {what} .*, not a model this explorer "
                                              rf"opens: {way}; expected .onnx"):
            open_model(path)
        with pytest.raises(CnnlabError, match=rf"^{re.escape(str(path))} is {what} .*, not a cnnlab checkpoint: "
                                              rf"{way}; expected a cnnlab checkpoint \(a run.s best.pt\) or a "
                                              r"state dict"):
            init_from(_net(), path)


def _ultralytics_pt(path: Path, monkeypatch) -> Path:
    """A .pt as Ultralytics saves one, its network pickled whole (``ultralytics.nn.tasks.ClassificationModel``),
    made without Ultralytics: the class lives in stand-in modules while it is saved."""
    import types

    for name in ("ultralytics", "ultralytics.nn", "ultralytics.nn.tasks"):
        monkeypatch.setitem(sys.modules, name, types.ModuleType(name))
    network = type("ClassificationModel", (nn.Module,), {"__module__": "ultralytics.nn.tasks"})
    sys.modules["ultralytics.nn.tasks"].ClassificationModel = network
    torch.save({"model": network(), "train_args": {}, "version": "8.4.190"}, path)
    for name in ("ultralytics", "ultralytics.nn", "ultralytics.nn.tasks"):
        monkeypatch.delitem(sys.modules, name)
    return path


def test_an_ultralytics_checkpoint_is_refused_saying_to_open_its_onnx_export(mynet, tmp_path, monkeypatch, capsys):
    """An Ultralytics .pt (its network pickled whole) given to predict, explore, --weights or --init-from: one line
    that names it and the way in, its ONNX export, and nothing of it unpickled. It read as any pickled network."""
    from cnnlab.cli import main

    path = _ultralytics_pt(tmp_path / "yolo-cls.pt", monkeypatch)
    way = (rf"; it is an Ultralytics checkpoint: explore, predict and eval open its ONNX export \(yolo export "
           rf"model={re.escape(str(path))} format=onnx\)")
    Image.new("RGB", (8, 8)).save(tmp_path / "a.png")
    assert main(["predict", str(path), str(tmp_path / "a.png")]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and re.search(rf"not a plain tensor container \(.*ClassificationModel.*\){way}; cnnlab "
                                         r"never unpickles code", err), err
    with pytest.raises(CnnlabError, match=rf"not a plain state dict \(.*\){way}, and cnnlab never unpickles code"):
        open_model("mynet:build", Options(input_size=8, weights=path))
    with pytest.raises(CnnlabError, match=way):
        init_from(_net(), path)
    assert "ultralytics" not in sys.modules  # nothing of the file was built
    torch.save({"model": nn.Linear(2, 2)}, tmp_path / "other.pt")  # another pickled network: no such clause
    with pytest.raises(CnnlabError, match=r"not a plain tensor container \([^)]*\); cnnlab never unpickles"):
        open_model(tmp_path / "other.pt")


def test_a_lightning_checkpoint_named_as_the_model_says_what_it_holds_and_how_it_opens(mynet, tmp_path, capsys):
    """`cnnlab predict lit.ckpt IMAGE` (a checkpoint's name, so read as cnnlab's): the line names the state dict
    inside and the way in (--weights FILE), as explore says it. It read "a dict of 'epoch', 'global_step', ..."
    and, from predict, nothing of how to open it."""
    from cnnlab.cli import main

    torch.save(_lightning({f"model.{k}": v for k, v in mynet.state_dict().items()}, {"lr": 0.01}),
               tmp_path / "lit.ckpt")
    Image.new("RGB", (8, 8)).save(tmp_path / "a.png")
    assert main(["predict", str(tmp_path / "lit.ckpt"), str(tmp_path / "a.png")]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and re.search(r"lit.ckpt is not a cnnlab checkpoint: it holds a state dict of 9 tensors "
                                         r"under 'state_dict' \(the first 'model.0.weight'\) beside 'epoch', "
                                         r"'global_step', 'pytorch-lightning_version', 'loops', ..., weights without "
                                         r"a network; expected .*; a network from elsewhere is explored as .onnx, .* "
                                         r"by module:function with a state dict as --weights FILE$", err), err


def test_the_network_among_other_modules_of_a_lightning_module_is_taken_by_its_prefix(mynet, tmp_path):
    """A LightningModule keeps its loss's class weights (``loss.weight``) beside ``self.model``: the keys under
    ``model.`` alone fit, and are taken, the page saying what was left out. A student and a teacher of one
    architecture both fit: neither is chosen, and the file does not fit."""
    state = {f"model.{k}": v for k, v in mynet.state_dict().items()}
    torch.save(_lightning({**state, "loss.weight": torch.ones(3)}, {}), tmp_path / "lit.ckpt")
    _check_opens(mynet, tmp_path / "lit.ckpt")
    explored = open_model("mynet:build", Options(input_size=8, weights=tmp_path / "lit.ckpt"))
    assert "its keys under 'model.' without that prefix, leaving out 1 other tensor(s) (the first 'loss.weight')" \
        in explored.notes[0]
    both = {**{f"student.{k}": v for k, v in mynet.state_dict().items()},
            **{f"teacher.{k}": v for k, v in mynet.state_dict().items()}}
    torch.save(_lightning(both, {}), tmp_path / "two.ckpt")
    with pytest.raises(CnnlabError, match=r"two.ckpt does not fit the network mynet:build\(\) builds: Missing"):
        open_model("mynet:build", Options(input_size=8, weights=tmp_path / "two.ckpt"))
