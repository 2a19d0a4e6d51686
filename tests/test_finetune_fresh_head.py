"""The layers ``--init-from`` starts fresh because the file has none of the head block (a VGG body saved after
``model.classifier = nn.Identity()``: ``classifier.0``, ``.3`` and ``.6`` all new) are trained as the head: under
``--freeze`` they learn and the body does not, under ``--freeze-epochs`` they are the optimizer's head groups at the
full lr, and a resume (which reads last.pt, not the file) freezes and groups them as the uninterrupted run did, from
the checkpoint's record. With the whole classifier in the file, or ImageNet weights, the head stays the last layer
(VGG's and MobileNetV3's trained first Linears are body). The networks are torchvision's with random weights, written
here; the data is seeded noise."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import torch
import torchvision
from torch import nn

from cnnlab.errors import StopRun
from cnnlab.models import imagenet
from cnnlab.runs import load_checkpoint
from cnnlab.train import build, build_run, make_config
from cnnlab.train.finetune import init_from
from cnnlab.train.schedule import BODY_LR_FACTOR
from cnnlab.train.trainer import Trainer
from data_support import noise_dataset

VGG_HEAD = ("classifier.0", "classifier.3", "classifier.6")
SMALL = "imagenet-mobilenet_v3_small"


@pytest.fixture(autouse=True)
def torch_home(tmp_path, monkeypatch) -> None:
    """An empty TORCH_HOME: the ImageNet weights are the ones a test writes there, or none."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setenv("CNNLAB_CACHE", str(tmp_path / "cache"))


@pytest.fixture(scope="module")
def vgg_body(tmp_path_factory) -> Path:
    """torchvision's VGG-11 (random weights) saved as a user saves a backbone: ``classifier = nn.Identity()``."""
    torch.manual_seed(0)
    network = torchvision.models.vgg11(weights=None)
    network.classifier = nn.Identity()
    path = tmp_path_factory.mktemp("body") / "vgg11-body.pth"
    torch.save(network.state_dict(), path)
    return path


def _dataset():
    return noise_dataset(torch.arange(12) % 3, "abc", 3, 32, test=3)


def _config(body: Path, **overrides):
    return make_config("imagenet-vgg11", init_from=str(body), **{"batch_size": 4, "resize": 32,
                                                                 "limit_train_batches": 1, "limit_val_batches": 1,
                                                                 **overrides})


def _trained(model: nn.Module) -> set[str]:
    return {name for name, p in model.named_parameters() if p.requires_grad}


def _layers(names) -> set[str]:
    return {name.rsplit(".", 1)[0] for name in names}


def _groups(model: nn.Module, optimizer: torch.optim.Optimizer) -> list[tuple[float, set[str]]]:
    """Each parameter group's initial lr and the names of its parameters."""
    names = {id(p): name for name, p in model.named_parameters()}
    return [(group["initial_lr"], {names[id(p)] for p in group["params"]}) for group in optimizer.param_groups]


def _head_groups(model: nn.Module, optimizer: torch.optim.Optimizer) -> set[str]:
    """The layers in the head's groups (the first two: weights, then biases), checked to be at the full lr."""
    groups = _groups(model, optimizer)
    assert len(groups) == 4 and groups[0][0] == groups[1][0] == pytest.approx(groups[2][0] / BODY_LR_FACTOR)
    return _layers(groups[0][1] | groups[1][1])


def test_freeze_trains_the_whole_fresh_head_block_of_a_vgg_body(vgg_body, capsys):
    """`train imagenet-vgg11 --init-from body.pth --freeze`: classifier.0, .3 and .6 all learn and every tensor of
    the body stays the file's, and the run says what is trained as the head. classifier.0 and .3 stayed frozen at
    their random values: only classifier.6 was the head. config.json records them, for the report."""
    body = torch.load(vgg_body, weights_only=True)
    parts = build_run(_config(vgg_body, freeze=True, epochs=1, limit_train_batches=2, lr=0.05), dataset=_dataset())
    assert _layers(_trained(parts.model)) == set(VGG_HEAD)
    assert "note: trained as the head: classifier.0, classifier.3, classifier.6" in capsys.readouterr().out
    fresh = {k: v.detach().clone() for k, v in parts.model.state_dict().items() if k.startswith("classifier.")}
    trainer = Trainer(parts, quiet=True)
    assert trainer.config_record()["head"] == list(VGG_HEAD)  # config.json: the report names them
    trainer.fit()
    state = parts.model.state_dict()
    assert all(not torch.equal(state[k], v) for k, v in fresh.items()), "a layer of the fresh head did not learn"
    weights = {name for name, _ in parts.model.named_parameters()}
    assert all(torch.equal(state[k], v) for k, v in body.items() if k in weights)


def test_freeze_epochs_puts_the_whole_fresh_head_block_in_the_head_groups(vgg_body):
    """The finetune recipe from a VGG body: classifier.0, .3 and .6 are the optimizer's head groups, at the full lr,
    and the only layers training in the frozen first epoch; everything else is body, at a tenth of it."""
    parts = build_run(_config(vgg_body, recipe="finetune", epochs=2), dataset=_dataset(), quiet=True)
    assert parts.config.freeze_epochs == 1
    assert _head_groups(parts.model, parts.optimizer) == set(VGG_HEAD)
    assert _layers(_trained(parts.model)) == set(VGG_HEAD)


class _Watch:
    """Per epoch: the parameters that trained and the optimizer's groups; stops the run after ``stop_after``."""

    def __init__(self, stop_after: int | None = None):
        self.stop_after, self.epochs = stop_after, []

    def on_epoch(self, trainer, row, is_best):
        self.epochs.append((_trained(trainer.model), _groups(trainer.model, trainer.optimizer)))
        if row["epoch"] == self.stop_after:
            raise StopRun("stopped after epoch 1")


@pytest.mark.parametrize("flags", [{"freeze": True}, {"freeze_epochs": 1}])
def test_a_resumed_run_trains_and_groups_the_fresh_head_as_the_uninterrupted_one(vgg_body, tmp_path, flags):
    """A run from a VGG body stopped after epoch 1 and resumed from its last.pt (which does not read --init-from
    again) freezes (--freeze) and groups (--freeze-epochs, unfrozen in epoch 2) the same parameters as the run that
    went on, from the layers its checkpoint records, and ends with the same weights bit for bit. Both had the last
    layer alone as their head."""
    config = _config(vgg_body, epochs=2, deterministic=True, optimizer="sgd", momentum=0.0, **flags)
    for folder in ("whole", "run"):
        (tmp_path / folder).mkdir()
    whole = _Watch()
    Trainer(build_run(config, dataset=_dataset(), quiet=True), run_dir=tmp_path / "whole", observers=[whole],
            quiet=True, report=False).fit()
    stopped = _Watch(stop_after=1)
    Trainer(build_run(config, dataset=_dataset(), quiet=True), run_dir=tmp_path / "run", observers=[stopped],
            quiet=True, report=False).fit()
    state = load_checkpoint(tmp_path / "run" / "last.pt")
    assert state["epoch"] == 1 and state["head"] == list(VGG_HEAD)
    resumed = _Watch()
    parts = build_run(config, dataset=_dataset(), resume_state=state, quiet=True)
    Trainer(parts, run_dir=tmp_path / "run", observers=[resumed], quiet=True, report=False).fit()
    assert stopped.epochs == whole.epochs[:1] and resumed.epochs == whole.epochs[1:]
    trained, groups = resumed.epochs[0]
    if "freeze" in flags:  # frozen all along
        assert _layers(trained) == set(VGG_HEAD)
    else:  # unfrozen in epoch 2, the fresh head block at the full lr
        assert trained == {name for name, _ in parts.model.named_parameters()}
        assert _head_groups(parts.model, parts.optimizer) == set(VGG_HEAD)
    ends = load_checkpoint(tmp_path / "whole" / "last.pt")["model"], load_checkpoint(tmp_path / "run" / "last.pt")
    assert all(torch.equal(v, ends[1]["model"][k]) for k, v in ends[0].items())


def test_a_run_recorded_before_the_head_was_resumes_with_the_last_layer_alone(vgg_body, tmp_path, monkeypatch):
    """A run from a VGG body that cnnlab trained before checkpoints recorded the head (classifier.6 alone its head,
    no "head" entry) resumes as it trained: its optimizer's groups fit, the head's holding classifier.6 alone."""
    config = _config(vgg_body, recipe="finetune", epochs=2, optimizer="sgd", momentum=0.0)
    record = build.RunParts.record
    monkeypatch.setattr(build, "init_from", lambda *a: dataclasses.replace(init_from(*a), head=()))
    monkeypatch.setattr(build.RunParts, "record", lambda self: {k: v for k, v in record(self).items() if k != "head"})
    (tmp_path / "run").mkdir()
    Trainer(build_run(config, dataset=_dataset(), quiet=True), run_dir=tmp_path / "run", observers=[_Watch(1)],
            quiet=True, report=False).fit()
    monkeypatch.undo()
    state = load_checkpoint(tmp_path / "run" / "last.pt")
    assert "head" not in state and state["epoch"] == 1
    parts = build_run(config, dataset=_dataset(), resume_state=state, quiet=True)
    assert _head_groups(parts.model, parts.optimizer) == {"classifier.6"}


@pytest.mark.parametrize("start", ["whole file", "pretrained"])
def test_a_whole_classifier_keeps_the_last_layer_alone_as_the_head(tmp_path, start):
    """With the whole classifier in the --init-from file, or ImageNet weights, MobileNetV3's trained first Linear
    (classifier.0) is body: the head groups and the frozen first epoch hold classifier.3 alone, as before."""
    torch.manual_seed(0)
    weights = torchvision.models.mobilenet_v3_small(weights=None).state_dict()
    if start == "pretrained":
        path = imagenet.weights_file(imagenet.weights_enum(SMALL))
        path.parent.mkdir(parents=True)
        overrides = {"pretrained": True}
    else:
        path = tmp_path / "whole.pth"
        overrides = {"init_from": str(path)}
    torch.save(weights, path)
    config = make_config(SMALL, "finetune", epochs=2, batch_size=4, resize=32, **overrides)
    parts = build_run(config, dataset=_dataset(), quiet=True)
    assert parts.head == () and _head_groups(parts.model, parts.optimizer) == {"classifier.3"}
    assert _layers(_trained(parts.model)) == {"classifier.3"}
