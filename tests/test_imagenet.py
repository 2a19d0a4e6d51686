"""ImageNet backbones with their official weights (cnnlab.models.imagenet) and the finetune recipe.

No test downloads anything: each writes its own weights file (torchvision's builder with seeded random weights,
saved under the exact file name of torchvision's weights URL) into a temporary TORCH_HOME, or serves one from
127.0.0.1. The small backbones at 32 px keep every test to seconds.
"""

import hashlib
import json
import os
import socket
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision
from PIL import Image
from safetensors.torch import save_file

import cnnlab.train
from cnnlab.cli import main
from cnnlab.data import ImageDataset
from cnnlab.errors import CnnlabError
from cnnlab.inference import load_trained
from cnnlab.models import create_model, imagenet, list_models, model_info
from cnnlab.models.summary import stages
from cnnlab.train import build_run, make_config
from cnnlab.train.schedule import BODY_LR_FACTOR, LRFactor
from cnnlab.train.trainer import Trainer
from data_support import noise_dataset, serve

SMALL = "imagenet-mobilenet_v3_small"


@pytest.fixture
def torch_home(tmp_path, monkeypatch) -> Path:
    """An empty TORCH_HOME under tmp_path (torch.hub.get_dir() reads it at each call)."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setenv("CNNLAB_CACHE", str(tmp_path / "cache"))
    return tmp_path / "torch"


def _file(name: str = SMALL) -> Path:
    """Where the weights of ImageNet backbone ``name`` are cached."""
    return imagenet.weights_file(imagenet.weights_enum(name))


def _url(name: str = SMALL) -> str:
    return imagenet.weights_url(imagenet.weights_enum(name))


def _write_weights(name: str, seed: int = 0) -> dict[str, torch.Tensor]:
    """Seeded random ImageNet-shaped weights of ``name`` at the path torchvision's URL names; returns them.

    The batch-norm running statistics are randomised too, so that loading them is checked as well."""
    torch.manual_seed(seed)
    model = torchvision.models.get_model(imagenet.BACKBONES[name].builder, weights=None)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.running_mean.normal_()
                module.running_var.uniform_(0.5, 2)
    state = model.state_dict()
    path = _file(name)
    assert path.name == Path(_url(name)).name  # the exact file name of torchvision's URL
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(state, path)
    return state


def _head_and_stem(model: torch.nn.Module) -> tuple[str, str]:
    linears = [n for n, m in model.named_modules() if isinstance(m, torch.nn.Linear)]
    convs = [n for n, m in model.named_modules() if isinstance(m, torch.nn.Conv2d)]
    return linears[-1], convs[0]


# ------------------------------------------------------------------------------------------------ the family
def test_family_table_agrees_with_torchvision_metadata():
    assert list_models(pretrained=True) == list(imagenet.BACKBONES)
    assert not set(list_models(pretrained=True)) & set(list_models(exercises=True))  # beside the book's zoo
    assert model_info("resnet18").weights is None and model_info("resnet18").section == "8.6"  # the book's kept
    for name, backbone in imagenet.BACKBONES.items():
        weights = imagenet.weights_enum(name)
        assert str(weights) == backbone.weights
        assert weights.transforms().crop_size == [model_info(name).input_size]
        assert imagenet.weights_file(weights).name == weights.url.rsplit("/", 1)[1]
        with torch.device("meta"):  # every architecture takes the new head and the grey stem, without compute
            model = create_model(name, num_classes=7, in_channels=1)
            assert model(torch.zeros(2, 1, 80, 80)).shape == (2, 7)
            x = torch.zeros(2, 1, 80, 80)  # Inception v3 takes no less than 75 px
            maps = 0
            for stage in stages(model):  # the report's and explorer's view: the stages compute the forward pass
                x = stage(x)
                maps += x.dim() == 4
            assert x.shape == (2, 7)
            assert maps >= 5, name  # the body's stages one by one: MobileNet's features were once a single row


def test_the_stages_of_a_body_kept_in_one_sequential_compute_the_forward_pass():
    """And MobileNetV2's, whose forward pools its features as a function: a stage of the walk pools them."""
    torch.manual_seed(0)
    x = torch.rand(2, 3, 64, 64)
    for name in ("imagenet-mobilenet_v3_small", "imagenet-efficientnet_b0", "imagenet-regnet_y_400mf",
                 "imagenet-mobilenet_v2"):
        model = create_model(name, num_classes=5, in_channels=3).eval()
        y = x
        with torch.no_grad():
            for stage in stages(model):
                y = stage(y)
            torch.testing.assert_close(y, model(x), rtol=0, atol=0)


def test_summary_of_a_backbone_with_weights_from_elsewhere_is_of_the_network_they_shape(torch_home, tmp_path, capsys):
    """`cnnlab summary imagenet-resnet18 --weights mine.pth`, as the flag's help offers it: the network shaped as the
    file has it (a grey stem, 5 classes), fed as explore and predict feed it; it was refused ("--weights is for a model
    from elsewhere"). Without --weights the name is the zoo's, summarised at --input as before."""
    model = create_model(SMALL, num_classes=5, in_channels=1)
    torch.save(model.state_dict(), tmp_path / "mine.pth")
    assert main(["summary", SMALL, "--weights", str(tmp_path / "mine.pth")]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith(f"{SMALL}: PyTorch module, 5 classes, fed float32 N x C x H x W, 1 channel at 224 x 224")
    assert lines[-1].startswith(f"total: {sum(p.numel() for p in model.parameters()):,} parameters")
    assert main(["summary", SMALL, "--input", "1,3,64,64"]) == 0
    assert capsys.readouterr().out.startswith(f"{SMALL} (d2l 14.2) at input 1 x 3 x 64 x 64")


def test_models_pretrained_lists_one_name_first_on_each_line(torch_home, capsys):
    _write_weights(SMALL)
    assert main(["models", "--pretrained"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line.split()[0] for line in lines] == list_models(pretrained=True)
    small = next(line for line in lines if line.startswith(SMALL + " "))
    assert f"cached: {_file()}" in small and "not cached" not in small
    assert "not cached" in lines[0]


@pytest.mark.parametrize("name", [SMALL, "imagenet-resnet18", "imagenet-regnet_y_400mf", "imagenet-vgg11"])
def test_pretrained_loads_exactly_the_files_tensors(torch_home, name):
    saved = _write_weights(name)
    model = create_model(name, pretrained=True, num_classes=5, in_channels=3)
    head, _ = _head_and_stem(model)
    state = model.state_dict()
    body = [k for k in saved if not k.startswith(head + ".")]
    assert body and all(torch.equal(state[k], saved[k]) for k in body), [k for k in body if not
                                                                           torch.equal(state[k], saved[k])][:3]
    assert state[head + ".weight"].shape[0] == 5 and set(state) == set(saved)
    assert model(torch.rand(2, 3, 32, 32)).shape == (2, 5)


def test_grey_images_get_the_summed_rgb_kernels(torch_home):
    saved = _write_weights(SMALL)
    model = create_model(SMALL, pretrained=True, num_classes=3, in_channels=1)
    head, stem = _head_and_stem(model)
    state = model.state_dict()
    assert torch.equal(state[stem + ".weight"], saved[stem + ".weight"].sum(1, keepdim=True))
    # a grey image through the summed kernel is the RGB model on that image repeated in R, G and B
    rgb = create_model(SMALL, pretrained=True, num_classes=3, in_channels=3).eval()
    rgb.get_submodule(head).load_state_dict(model.get_submodule(head).state_dict())
    x = torch.rand(2, 1, 32, 32)
    torch.testing.assert_close(model.eval()(x), rgb(x.expand(-1, 3, -1, -1)), rtol=1e-4, atol=1e-5)
    assert all(torch.equal(state[k], saved[k]) for k in saved if not k.startswith((head + ".", stem + ".")))


def test_pretrained_on_a_book_model_or_an_unknown_name_is_refused():
    with pytest.raises(CnnlabError, match="model 'resnet18' has no pretrained weights; expected one of: "
                                          "imagenet-resnet18, "):
        create_model("resnet18", pretrained=True)
    with pytest.raises(CnnlabError, match=r"unknown model 'imagenet-resnet19'.*ImageNet weights: imagenet-resnet18.*"
                                          r"did you mean 'imagenet-resnet18'\?"):
        create_model("imagenet-resnet19")


# ------------------------------------------------------------------------------------- missing and bad files
def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_offline_without_the_file_fails_in_one_line_within_seconds(torch_home, monkeypatch, capsys):
    url = f"http://127.0.0.1:{_closed_port()}/{Path(_url()).name}"
    monkeypatch.setattr(imagenet, "weights_url", lambda name: url)
    start = time.monotonic()
    code = main(["train", SMALL, "--pretrained", "--epochs", "1"])  # refused before any data is read
    assert time.monotonic() - start < 10
    err = capsys.readouterr().err
    assert code == 2 and len(err.strip().splitlines()) == 1, err
    path = _file()
    assert f"{SMALL}'s weights {path.name} are not in {path.parent} and could not be downloaded from {url}" in err
    assert f"put it at {path}" in err
    assert not path.parent.exists() or list(path.parent.iterdir()) == []  # nothing half-written


def test_download_from_a_server_is_hash_checked_and_written_into_the_cache(torch_home, tmp_path, monkeypatch):
    torch.manual_seed(3)
    served = tmp_path / "served"
    served.mkdir()
    data_file = served / "x.pth"
    torch.save(torchvision.models.mobilenet_v3_small().state_dict(), data_file)
    digest = hashlib.sha256(data_file.read_bytes()).hexdigest()
    good = served / f"mobilenet_v3_small-{digest[:8]}.pth"
    bad = served / "mobilenet_v3_small-00000000.pth"
    os.link(data_file, good)
    os.link(data_file, bad)
    with serve(served) as (prefix, requested):
        monkeypatch.setattr(imagenet, "weights_url", lambda name: prefix + bad.name)
        with pytest.raises(CnnlabError, match=r"sha256 [0-9a-f]{12}\.\.\. does not start with 00000000"):
            create_model(SMALL, pretrained=True)
        assert list(_file().parent.iterdir()) == []  # the temporary file went too
        monkeypatch.setattr(imagenet, "weights_url", lambda name: prefix + good.name)
        model = create_model(SMALL, pretrained=True, num_classes=10, in_channels=3)
        assert requested == ["/" + bad.name, "/" + good.name]
    assert (torch_home / "hub" / "checkpoints" / good.name).read_bytes() == data_file.read_bytes()
    saved = torch.load(data_file, weights_only=True)
    assert torch.equal(model.state_dict()["features.0.0.weight"], saved["features.0.0.weight"])


def test_a_mirror_or_a_folder_of_weights_files_stands_in_for_torchvisions_server(torch_home, tmp_path, monkeypatch):
    torch.manual_seed(4)
    name = Path(_url()).name
    folder = tmp_path / "weights"
    folder.mkdir()
    raw = folder / "raw.pth"
    torch.save(torchvision.models.mobilenet_v3_small().state_dict(), raw)
    digest = name.rsplit("-", 1)[1].split(".")[0]  # torchvision's hash prefix: a file of other bytes is refused
    monkeypatch.setenv("CNNLAB_WEIGHTS_MIRROR", str(folder))  # a plain path: the file with torchvision's name there
    os.link(raw, folder / name)
    assert imagenet.download_url(imagenet.weights_enum(SMALL)) == (folder / name).as_uri()
    with pytest.raises(CnnlabError, match=f"does not start with {digest}"):
        create_model(SMALL, pretrained=True)
    served = tmp_path / "served"  # an http mirror: the same file name under its address
    served.mkdir()
    with serve(served) as (prefix, requested):
        monkeypatch.setenv("CNNLAB_WEIGHTS_MIRROR", prefix)
        with pytest.raises(CnnlabError, match=f"could not be downloaded from {prefix}{name}.*or set "
                                              "CNNLAB_WEIGHTS_MIRROR to a mirror URL or a folder that has it"):
            create_model(SMALL, pretrained=True)
        assert requested == ["/" + name]
    # weights whose hash prefix matches (a name made for them, as torch.hub names its files) load from the folder
    ours = f"mobilenet_v3_small-{hashlib.sha256(raw.read_bytes()).hexdigest()[:8]}.pth"
    os.link(raw, folder / ours)
    monkeypatch.setattr(imagenet, "weights_url", lambda name: f"https://download.pytorch.org/models/{ours}")
    monkeypatch.setenv("CNNLAB_WEIGHTS_MIRROR", folder.as_uri())
    model = create_model(SMALL, pretrained=True, num_classes=10, in_channels=3)
    assert (torch_home / "hub" / "checkpoints" / ours).read_bytes() == raw.read_bytes()
    saved = torch.load(raw, weights_only=True)
    assert torch.equal(model.state_dict()["features.0.0.weight"], saved["features.0.0.weight"])
    monkeypatch.delenv("CNNLAB_WEIGHTS_MIRROR")
    assert imagenet.download_url(imagenet.weights_enum(SMALL)) == _url()


class NotWeights:  # a pickled object: torch's weights-only load refuses it (it would run code to build it)
    pass


@pytest.mark.parametrize("damage, match", [
    ("truncated", "is not a readable weights-only state dict"),
    ("pickled object", r"it is not a plain state dict \(Unsupported global: GLOBAL test_imagenet.NotWeights was "
                       r"not an allowed global by default\), and cnnlab never unpickles code"),
    ("another architecture", r"does not fit imagenet-mobilenet_v3_small \(torchvision mobilenet_v3_small\)"),
    ("a tensor", "holds a Tensor, not a state dict"),
])
def test_a_bad_weights_file_is_refused_in_one_line(torch_home, damage, match):
    path = _file()
    path.parent.mkdir(parents=True)
    if damage == "truncated":
        _write_weights(SMALL)
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    elif damage == "pickled object":
        torch.save({"features.0.0.weight": NotWeights()}, path)
    elif damage == "another architecture":
        torch.save(torchvision.models.resnet18().state_dict(), path)
    else:
        torch.save(torch.zeros(3), path)
    with pytest.raises(CnnlabError, match=match) as info:
        create_model(SMALL, pretrained=True)
    assert "\n" not in str(info.value) and str(path) in str(info.value)
    assert "\x1b" not in str(info.value) and "weights_only=False" not in str(info.value)  # none of torch's advice


# ------------------------------------------------------------------------------------ training and inference
def _dataset(channels: int = 3, side: int = 24, n: int = 24) -> ImageDataset:
    return noise_dataset(torch.arange(n) % 3, "abc", channels, side, test=9, flip=True)


def _body(state: dict[str, torch.Tensor], head: str) -> dict[str, torch.Tensor]:
    return {k: v for k, v in state.items() if not k.startswith(head + ".") and v.is_floating_point()}


@pytest.mark.parametrize("name", [SMALL, "imagenet-resnet18"])
def test_freeze_leaves_every_body_parameter_unchanged(torch_home, name):
    saved = _write_weights(name)
    cfg = make_config(name, pretrained=True, freeze=True, epochs=1, batch_size=8, resize=32, limit_train_batches=2,
                      lr=0.1)
    trainer = Trainer(build_run(cfg, dataset=_dataset(3), quiet=True), quiet=True)
    assert trainer.parts.normalize == [[0.485, 0.456, 0.406], [0.229, 0.224, 0.225]]  # the weights' own metadata
    head, _ = _head_and_stem(trainer.model)
    fresh_head = trainer.model.get_submodule(head).weight.detach().clone()
    trainer.fit()
    state = trainer.model.state_dict()
    params = {n for n, _ in trainer.model.named_parameters()}
    assert all(torch.equal(state[k].cpu(), saved[k]) for k in _body(saved, head) if k in params)
    assert not torch.equal(state[head + ".weight"], fresh_head) and trainer.state.step == 2
    # the batch-norm policy: statistics of the frozen body follow the new data (finetune.py's docstring)
    buffers = [k for k in _body(saved, head) if k.endswith("running_mean")]
    assert buffers and not all(torch.equal(state[k].cpu(), saved[k]) for k in buffers)


def test_init_from_a_backbones_state_dict_feeds_it_imagenets_input(torch_home, tmp_path, capsys):
    """`--init-from finetuned.pth` of an ImageNet backbone: the body's weights come along (a fresh head for other
    classes) and, as the state dict records no input, it is normalised as the ImageNet weights' metadata says, with
    a note, whatever --normalize says; no ImageNet weights file is needed."""
    torch.manual_seed(4)
    theirs = create_model(SMALL, num_classes=1000, in_channels=3).state_dict()
    torch.save(theirs, tmp_path / "finetuned.pth")
    cfg = make_config(SMALL, init_from=str(tmp_path / "finetuned.pth"), epochs=1, batch_size=8, resize=32)
    parts = build_run(cfg, dataset=_dataset(3))
    assert parts.normalize == imagenet.pretrained_normalize(SMALL, 3)
    out = capsys.readouterr().out
    assert "note: inputs normalised with the ImageNet weights' mean 0.485, 0.456, 0.406" in out
    assert "(a state dict: no classes or normalisation recorded)" in out
    body = "features.0.0.weight"
    assert torch.equal(parts.model.state_dict()[body].cpu(), theirs[body])
    assert not _file().exists()


def fit_with_snapshots(trainer: Trainer) -> list[dict[str, torch.Tensor]]:
    """Run ``trainer``; returns its model's state dict (on the CPU) at the end of each epoch."""
    snapshots = []

    class Snapshot:
        def on_epoch(self, trainer, row, is_best):
            snapshots.append({k: v.cpu().clone() for k, v in trainer.model.state_dict().items()})

    trainer.observers.append(Snapshot())
    trainer.fit()
    return snapshots


def test_freeze_epochs_trains_the_head_alone_then_everything_at_a_lower_lr(torch_home):
    saved = _write_weights(SMALL)
    cfg = make_config(SMALL, "finetune", pretrained=True, epochs=2, batch_size=8, resize=32, limit_train_batches=2)
    assert (cfg.freeze_epochs, cfg.optimizer, cfg.schedule) == (1, "adamw", "onecycle")
    trainer = Trainer(build_run(cfg, dataset=_dataset(1), quiet=True), quiet=True)
    head, stem = _head_and_stem(trainer.model)
    params = {n for n, _ in trainer.model.named_parameters()} - {stem + ".weight"}  # the stem is the summed one
    frozen, unfrozen = fit_with_snapshots(trainer)
    body = [k for k in _body(saved, head) if k in params]
    assert all(torch.equal(frozen[k], saved[k]) for k in body)  # epoch 1: the body is exactly the file's
    assert not torch.equal(frozen[head + ".weight"], unfrozen[head + ".weight"])
    assert sum(not torch.equal(unfrozen[k], saved[k]) for k in body) > len(body) // 2  # epoch 2: it learns
    head_lr, body_lr = trainer.optimizer.param_groups[0]["initial_lr"], trainer.optimizer.param_groups[2]["initial_lr"]
    assert (head_lr, body_lr) == (cfg.lr, pytest.approx(cfg.lr * BODY_LR_FACTOR))
    assert all(p.requires_grad for p in trainer.model.parameters())


def test_finetune_schedule_is_two_one_cycles():
    factor = LRFactor("onecycle", 40, 0, steps_per_epoch=10, restart=10)
    values = [factor(s) for s in range(40)]
    assert values[0] == pytest.approx(0.04) and max(values[:10]) == 1.0
    assert values[10] == pytest.approx(0.5 * 0.04) and max(values[10:]) == pytest.approx(0.5)
    assert values[9] > values[10] and values[-1] < 0.05
    assert LRFactor("onecycle", 40, 0)(10) == LRFactor("onecycle", 40, 0, restart=0)(10)  # no restart: as before


def test_freeze_epochs_beyond_epochs_and_freeze_with_freeze_epochs_are_refused(capsys):
    assert main(["train", "lenet", "--epochs", "2", "--freeze-epochs", "3"]) == 2
    assert capsys.readouterr().err.strip() == ("cnnlab train: error: --freeze-epochs must be at most --epochs (2): "
                                               "the body is frozen for the first epochs of the run, got 3")
    with pytest.raises(CnnlabError, match="expected one of them, got both"):
        make_config(SMALL, pretrained=True, freeze=True, freeze_epochs=1)
    assert make_config(SMALL, "finetune", pretrained=True, freeze=True).freeze_epochs == 0  # --freeze: all along
    assert main(["train", "lenet", "--pretrained"]) == 2
    assert "model 'lenet' has no pretrained weights; expected one of: imagenet-resnet18" in capsys.readouterr().err


def test_a_frozen_phase_without_trained_weights_and_two_sources_of_weights_are_refused(capsys):
    # the finetune recipe froze a random body for its first epoch when --pretrained was forgotten
    assert main(["train", "lenet", "--recipe", "finetune"]) == 2
    assert capsys.readouterr().err.strip() == (
        "cnnlab train: error: the finetune recipe's --freeze-epochs 1 keeps the body frozen, which needs trained "
        "weights: expected --pretrained or --init-from CHECKPOINT (a fresh model's body is random), or "
        "--freeze-epochs 0")
    with pytest.raises(CnnlabError, match="^--freeze-epochs 2 keeps the body frozen"):
        make_config("lenet", epochs=3, freeze_epochs=2)
    assert make_config("lenet", "finetune", freeze_epochs=0).freeze_epochs == 0  # the recipe from scratch
    # --init-from's weights replaced every ImageNet tensor while the input was normalised for ImageNet's
    with pytest.raises(CnnlabError, match="^--pretrained and --init-from both give the starting weights"):
        make_config(SMALL, pretrained=True, init_from="run/last.pt")


def _photo_folder(root: Path) -> Path:
    rng = np.random.default_rng(0)
    for c in ("cat", "dog", "owl"):
        (root / c).mkdir(parents=True)
        for i in range(6):
            Image.fromarray(rng.integers(0, 256, (20, 20), dtype=np.uint8), "L").save(root / c / f"{i}.png")
    return root


def test_cli_train_pretrained_then_inference_needs_no_weights_file(torch_home, tmp_path, capsys):
    """The practitioner's path on grey photos: train with --pretrained, then eval, predict, report and export from
    the checkpoint alone (the weights file deleted): its preprocessing came from the weights' metadata into it."""
    from cnnlab.explore.model import Options
    from cnnlab.explore.sources import open_model

    _write_weights(SMALL)
    photos, run = _photo_folder(tmp_path / "photos"), tmp_path / "run"
    assert main(["train", SMALL, "--pretrained", "--recipe", "finetune", "--epochs", "2", "--dataset",
                 f"folder:{photos}", "--resize", "32", "--batch-size", "4", "--limit-train-batches", "2",
                 "--out", str(run), "--no-report", "--quiet"]) == 0, capsys.readouterr().err
    _file().unlink()
    trained = load_trained(run / "last.pt")
    assert trained.meta.input_size == 32 and trained.meta.channels == 1
    assert trained.meta.mean == pytest.approx((0.449,), abs=1e-3) and trained.meta.std == pytest.approx((0.226,),
                                                                                                      abs=1e-3)
    ckpt = torch.load(run / "last.pt", weights_only=True, map_location="cpu")
    assert all(torch.equal(v.cpu(), ckpt["model"][k]) for k, v in trained.model.state_dict().items())
    capsys.readouterr()
    assert main(["eval", str(run / "last.pt"), "--json"]) == 0
    assert main(["predict", str(run / "last.pt"), str(photos / "cat" / "0.png")]) == 0
    assert main(["report", str(run)]) == 0  # feature maps walk the model's stages (torchvision's flatten included)
    assert main(["export", str(run / "last.pt"), "--output", str(tmp_path / "photos.onnx")]) == 0
    # the network's weights alone, for a program that builds torchvision's architecture: the explorer is one
    assert main(["export", str(run / "last.pt"), "--format", "safetensors", "--output",
                 str(tmp_path / "photos.safetensors")]) == 0
    explored = open_model(SMALL, Options(input_size=32, weights=tmp_path / "photos.safetensors"))
    assert explored.spec.channels == 1 and len(explored.classes) == 3
    images = torch.randint(0, 256, (2, 1, 32, 32), dtype=torch.uint8)
    with torch.no_grad():
        expected = trained.model(trained.preprocess(images.float() / 255))
    assert torch.allclose(explored.logits(images), expected, atol=1e-4)


def test_lr_find_sweeps_the_run_fine_tuning_would_start(torch_home, tmp_path, capsys, monkeypatch):
    """`cnnlab lr-find MODEL --pretrained --recipe finetune`: the weights and their normalisation, the body frozen
    as the run's first epoch has it (fastai's lr_find on a fresh pretrained learner)."""
    saved = _write_weights(SMALL)
    photos = _photo_folder(tmp_path / "photos")
    built = []
    monkeypatch.setattr(cnnlab.train, "build_run", lambda *a, **k: built.append(build_run(*a, **k)) or built[-1])
    assert main(["lr-find", SMALL, "--pretrained", "--recipe", "finetune", "--dataset", f"folder:{photos}",
                 "--resize", "32", "--batch-size", "4", "--steps", "6", "--out", str(tmp_path / "lr.png")]) == 0, \
        capsys.readouterr().err
    assert "suggested lr" in capsys.readouterr().out and (tmp_path / "lr.png").is_file()
    run = built[0]
    assert run.normalize == [[pytest.approx(0.449, abs=1e-3)], [pytest.approx(0.226, abs=1e-3)]]  # the weights'
    head, stem = _head_and_stem(run.model)
    body = [n for n, p in run.model.named_parameters() if not n.startswith(head + ".")]
    assert body and not any(p.requires_grad for n, p in run.model.named_parameters() if n in body)
    state = run.model.state_dict()
    assert all(torch.equal(state[k].cpu(), saved[k]) for k in body if k != stem + ".weight")  # swept, not moved


def test_explore_opens_a_backbone_fine_tuned_elsewhere_from_its_state_dict(torch_home, tmp_path):
    """`cnnlab explore imagenet-mobilenet_v3_small --weights mine.ckpt`: the architecture shaped as the state dict
    has it (grey input, 4 classes), its weights read through a training script's wrapper and DataParallel's
    ``module.`` prefix, the ImageNet normalisation for one channel; no ImageNet weights file is needed."""
    from cnnlab.explore.model import Options
    from cnnlab.explore.sources import open_model

    torch.manual_seed(0)
    mine = create_model(SMALL, num_classes=4, in_channels=1).eval()
    torch.save({"epoch": 9, "state_dict": {f"module.{k}": v for k, v in mine.state_dict().items()}},
               tmp_path / "mine.ckpt")
    explored = open_model(SMALL, Options(weights=tmp_path / "mine.ckpt"))
    assert explored.spec.channels == 1 and len(explored.classes) == 4 and explored.classes[0] != "tench"
    assert "with the weights of" in explored.notes[0] and "without their 'module.' prefix" in explored.notes[0]
    assert explored.spec.origin["normalisation"] == "ImageNet weights' metadata"
    mean, std = imagenet.pretrained_normalize(SMALL, 1)
    images = torch.randint(0, 256, (2, 1, 224, 224), dtype=torch.uint8)
    with torch.no_grad():
        expected = mine((images.float() / 255 - mean[0]) / std[0])
    assert torch.allclose(explored.logits(images), expected, atol=1e-4)
    assert not _file().exists()  # the ImageNet file was neither needed nor fetched
    torch.save(torchvision.models.resnet18(num_classes=4).state_dict(), tmp_path / "other.pth")
    with pytest.raises(CnnlabError, match=r"^.*other.pth does not fit torchvision's mobilenet_v3_small: Missing "
                                          r"key\(s\) in state_dict: .*; expected a state dict of torchvision's "
                                          r"mobilenet_v3_small") as e:
        open_model(SMALL, Options(weights=tmp_path / "other.pth"))
    assert "\n" not in str(e.value)


def test_a_backbones_safetensors_file_is_explored_and_starts_a_run(torch_home, tmp_path):
    """Weights from the Hugging Face Hub or timm come as ``model.safetensors`` (timm's ResNets keep torchvision's
    key names): `explore imagenet-resnet18 --weights model.safetensors` and `train --init-from` read them as the
    tensors they are; they were refused ("not a PyTorch checkpoint", "not a readable weights-only state dict")."""
    from cnnlab.explore.model import Options
    from cnnlab.explore.sources import open_model

    torch.manual_seed(2)
    theirs = torchvision.models.resnet18(num_classes=5).eval()
    save_file(theirs.state_dict(), tmp_path / "model.safetensors", metadata={"format": "pt"})
    explored = open_model("imagenet-resnet18", Options(input_size=32, weights=tmp_path / "model.safetensors"))
    assert len(explored.classes) == 5 and "model.safetensors (read weights-only)" in explored.notes[0]
    mean, std = (torch.tensor(v).view(3, 1, 1) for v in imagenet.pretrained_normalize("imagenet-resnet18", 3))
    images = torch.randint(0, 256, (2, 3, 32, 32), dtype=torch.uint8)
    with torch.no_grad():
        assert torch.allclose(explored.logits(images), theirs((images.float() / 255 - mean) / std), atol=1e-4)
    cfg = make_config("imagenet-resnet18", init_from=str(tmp_path / "model.safetensors"), epochs=1, batch_size=8,
                      resize=32)
    body = build_run(cfg, dataset=_dataset(3)).model.state_dict()
    assert torch.equal(body["layer4.1.conv2.weight"].cpu(), theirs.state_dict()["layer4.1.conv2.weight"])
    (tmp_path / "cut.safetensors").write_bytes((tmp_path / "model.safetensors").read_bytes()[:4096])
    with pytest.raises(CnnlabError, match=r"^.*cut.safetensors is not a readable safetensors file \(truncated or "
                                          r"damaged: .*\); expected a state dict of torchvision's resnet18"):
        open_model("imagenet-resnet18", Options(weights=tmp_path / "cut.safetensors"))


def test_explore_opens_a_backbone_by_name_with_its_weights_classes_and_preprocessing(torch_home):
    """`cnnlab explore imagenet-mobilenet_v3_small`: the cached weights, the 1,000 class names and the input the
    weights' metadata gives; the logits are torchvision's model's on the normalised input."""
    from cnnlab.explore.model import Options
    from cnnlab.explore.sources import open_model

    state = _write_weights(SMALL)
    explored = open_model(SMALL)
    weights = imagenet.weights_enum(SMALL)
    transform = weights.transforms()
    assert explored.classes == tuple(weights.meta["categories"]) and explored.classes[0] == "tench"
    assert explored.spec.hw == (224, 224) and explored.spec.channels == 3
    assert explored.spec.mean == pytest.approx(tuple(transform.mean))
    assert explored.spec.origin["normalisation"] == explored.spec.origin["size"] == "weights' metadata"
    assert "size from the weights' metadata" in explored.spec.describe()  # once "from the the weights'"
    assert explored.notes[0].endswith("Class names: the weights' metadata.")  # not "the model file"
    reference = torchvision.models.get_model("mobilenet_v3_small", weights=None)
    reference.load_state_dict(state)
    images = torch.randint(0, 256, (2, 3, 224, 224), dtype=torch.uint8)
    mean, std = torch.tensor(transform.mean).view(1, 3, 1, 1), torch.tensor(transform.std).view(1, 3, 1, 1)
    with torch.no_grad():
        expected = reference.eval()((images.float() / 255 - mean) / std)
    assert torch.allclose(explored.logits(images), expected, atol=1e-4)
    assert any(row.kind == "Conv2d" for row in explored.stages(images[0]))
    with pytest.raises(CnnlabError, match=r"^--pixel-range and --bgr describe a model from elsewhere; "
                                          r"imagenet-mobilenet_v3_small takes RGB pixels / 255"):
        open_model(SMALL, Options(pixel_range="0-255", bgr=True))


# a network whose answers follow the picture at 40 px (the seeded MobileNet answers every picture alike there)
@pytest.mark.parametrize("name, image_size, resize", [(SMALL, 32, 32), ("imagenet-resnet18", 24, 40)])
def test_cnnlabs_own_safetensors_export_answers_as_its_checkpoint_in_predict_and_eval(torch_home, tmp_path, capsys,
                                                                                     name, image_size, resize):
    """`cnnlab predict imagenet-NAME --weights photos.safetensors` (the way in that export's module docstring gives
    for its safetensors) on a run's photos: the file's metadata says the input side, the normalisation, the classes
    and that the pictures were centre-cropped, and the answers are the checkpoint's. Without reading it, the network
    trained at 32 px was fed 224-px padded pictures and named its classes "class 0", ...: on a fine-tuned photo run
    it agreed with its checkpoint on 0 of 30 photos. `cnnlab eval` of it scores the run's own test split, as of an
    ONNX export. A run whose stored side (--image-size) is not its input's (--resize) read its pictures at that side
    and resized them; read at the input's side, they were other images (87 of 89 photos agreed): the metadata keeps
    the stored side (cnnlab.image_size), and the pictures are read so."""
    _write_weights(name)
    rng = np.random.default_rng(3)
    photos, run = tmp_path / "photos", tmp_path / "run"
    for i, c in enumerate(("cat", "dog", "owl")):
        (photos / c).mkdir(parents=True)
        for j in range(6):  # colour, and not square: crop and pad give other pictures
            pixels = rng.integers(0, 256, (30 + 7 * j, 50, 3), dtype=np.uint8)
            pixels[..., i] = 255
            Image.fromarray(pixels, "RGB").save(photos / c / f"{j}.png")
    assert main(["train", name, "--pretrained", "--epochs", "1", "--dataset", f"folder:{photos}", "--image-size",
                 str(image_size), "--resize", str(resize), "--batch-size", "4", "--out", str(run), "--no-report",
                 "--quiet"]) == 0, capsys.readouterr().err
    weights = tmp_path / "photos.safetensors"
    assert main(["export", str(run / "last.pt"), "--format", "safetensors", "--output", str(weights)]) == 0
    files = [str(photos / c / f"{j}.png") for c in ("cat", "dog", "owl") for j in range(6)]
    capsys.readouterr()
    assert main(["predict", str(run / "last.pt"), *files, "--json", "--top", "3"]) == 0
    expected = json.loads(capsys.readouterr().out)
    assert main(["predict", name, "--weights", str(weights), *files, "--json", "--top", "3"]) == 0
    got = json.loads(capsys.readouterr().out)
    for mine, theirs in zip(expected, got, strict=True):
        assert [t["class"] for t in theirs["top"]] == [t["class"] for t in mine["top"]]
        assert [t["probability"] for t in theirs["top"]] == pytest.approx([t["probability"] for t in mine["top"]],
                                                                          abs=1e-4)
    assert main(["eval", str(run / "last.pt"), "--json"]) == 0
    scored = json.loads(capsys.readouterr().out)
    assert main(["eval", name, "--weights", str(weights), "--json"]) == 0  # no --data-dir: the run's test split
    again = json.loads(capsys.readouterr().out)
    assert again["accuracy"] == scored["accuracy"] and again["confusion"] == scored["confusion"]
    # flags still come first: another input side is taken as asked
    from cnnlab.explore.model import Options
    from cnnlab.explore.sources import open_model

    opened = open_model(name, Options(weights=weights)).spec
    assert opened.hw == (resize, resize) and opened.read_hw == (image_size, image_size)
    explored = open_model(name, Options(input_size=40, weights=weights))
    assert explored.spec.hw == (40, 40) and explored.classes == ("cat", "dog", "owl") and explored.spec.crop
