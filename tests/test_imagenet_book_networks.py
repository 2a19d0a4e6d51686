"""The book's chapter-8 networks (AlexNet, VGG, GoogLeNet, DenseNet, ResNeXt) and the larger ResNets and ConvNeXts
as ImageNet backbones (cnnlab.models.imagenet, cnnlab.models.pretrained_quirks).

As in test_imagenet.py, no test downloads anything: each writes its own weights file (torchvision's architecture,
seeded random weights) under the exact file name of torchvision's URL in a temporary TORCH_HOME. Torchvision's own
pretrained builder, reading that file from the cache, is the oracle of what the network computes. VGG-16 and the
large ConvNeXts are checked by their table entry and on the meta device only (half a gigabyte of weights each)."""

import warnings
from pathlib import Path

import onnxruntime as ort
import pytest
import torch
import torchvision

from cnnlab.export import export_checkpoint
from cnnlab.inference import load_trained
from cnnlab.models import create_model, imagenet, list_models
from cnnlab.models.summary import stages
from cnnlab.models.transformers_keys import torchvision_keys
from cnnlab.runs.checkpoint import save_checkpoint
from cnnlab.train import build_run, make_config
from cnnlab.train.finetune import init_from, last_layer
from cnnlab.train.schedule import BODY_LR_FACTOR
from cnnlab.train.trainer import Trainer
from data_support import noise_dataset
from test_imagenet import fit_with_snapshots
from test_models_transformers_keys import _convnext_key, _resnet_key
from test_models_transformers_keys import _randomised as randomised

GOOGLENET = "imagenet-googlenet"
ADDED = ("imagenet-alexnet", "imagenet-vgg11", "imagenet-vgg11_bn", "imagenet-vgg16", GOOGLENET,
         "imagenet-densenet121", "imagenet-resnext50_32x4d", "imagenet-resnet101", "imagenet-resnet152",
         "imagenet-convnext_small", "imagenet-convnext_base", "imagenet-convnext_large")


@pytest.fixture(autouse=True)
def torch_home(tmp_path, monkeypatch) -> Path:
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setenv("CNNLAB_CACHE", str(tmp_path / "cache"))
    return tmp_path / "torch"


def _randomised(network: torch.nn.Module, seed: int = 0, side: int = 64) -> dict[str, torch.Tensor]:
    """``network``'s state dict after torchvision's seeded initialisation, every batch norm's statistics those of a
    batch of noise at ``side`` px (so that its answers follow the picture, and a wrong renormalisation shows): left
    at 0 and 1, the activations faded through the layers and the logits were the same for every picture."""
    torch.manual_seed(seed)
    norms = [m for m in network.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    for norm in norms:
        norm.momentum = None  # a cumulative average: one batch sets the statistics
    with torch.no_grad():
        network.train()(torch.randn(4, next(network.parameters()).shape[1], side, side))
    for norm in norms:
        norm.momentum = 0.1
    return network.eval().state_dict()


def _cached(name: str, state: dict[str, torch.Tensor]) -> Path:
    """``state`` saved where torchvision's URL of ``name``'s weights names the file in torch.hub's cache."""
    path = imagenet.weights_file(imagenet.weights_enum(name))
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(state, path)
    return path


def _googlenet_file() -> dict[str, torch.Tensor]:
    # torchvision's googlenet() without weights, as a user saves it: with its auxiliary heads, as the hosted file
    state = _randomised(torchvision.models.googlenet(init_weights=True))
    assert any(k.startswith("aux1.") for k in state)
    _cached(GOOGLENET, state)
    return state


def test_the_books_chapter_8_networks_and_larger_resnets_and_convnexts_are_backbones():
    """`cnnlab train imagenet-googlenet --pretrained` (and the rest of ADDED): each pins its enum's recommended
    member (torchvision's DEFAULT, the V2 recipe where there is one), with an ImageNet top-1 in its metadata."""
    assert set(ADDED) <= set(list_models(pretrained=True))
    for name in ADDED:
        weights = imagenet.weights_enum(name)
        assert weights is type(weights).DEFAULT, name
        assert weights.meta["_metrics"]["ImageNet-1K"]["acc@1"] > 50, name
    assert imagenet.BACKBONES["imagenet-resnet101"].weights.endswith("IMAGENET1K_V2")
    with torch.device("meta"):  # the large ones without their tensors: the grey stem, the new head, the stages
        for name in ("imagenet-vgg16", "imagenet-convnext_large", "imagenet-resnet152"):
            model = create_model(name, num_classes=3, in_channels=1)
            x = torch.zeros(1, 1, 64, 64)
            for stage in stages(model):
                x = stage(x)
            assert x.shape == (1, 3)


def test_googlenet_computes_what_torchvisions_pretrained_googlenet_computes(tmp_path):
    """GoogLeNet's pretrained builder drops the auxiliary heads after the load and renormalises its input
    (transform_input): built unweighted and loaded strictly, the file's aux tensors were unexpected, and without the
    renormalisation the network was fed other input than it was trained on. The logits, the stages' and training
    mode's are torchvision's own `googlenet(weights=...)`'s, and the explorer's of a googlenet() state dict saved
    with its aux heads (`explore imagenet-googlenet --weights`)."""
    state = _googlenet_file()
    with warnings.catch_warnings():  # torchvision's own warning about aux heads is not raised without them
        reference = torchvision.models.googlenet(weights=imagenet.weights_enum(GOOGLENET)).eval()
    computes_as_torchvisions(GOOGLENET, reference, state, ("aux1.", "aux2."), tmp_path / "mine.pth", 64)


def computes_as_torchvisions(name: str, reference: torch.nn.Module, state: dict[str, torch.Tensor],
                             aux: tuple[str, ...], saved: Path, side: int) -> None:
    """Backbone ``name`` with its weights (``state``, in the cache) answers as torchvision's pretrained builder's
    ``reference`` on ``side``-px input: without the ``aux`` heads' tensors, by its forward and by its stages (the
    explorer's and the report's walk, renormalising too), one set of logits in training, and explored with
    ``state`` saved at ``saved`` (``explore NAME --weights``, aux tensors and all) from uint8 pictures."""
    from cnnlab.explore.model import Options
    from cnnlab.explore.sources import open_model

    ours = create_model(name, pretrained=True, num_classes=1000, in_channels=3).eval()
    assert not any(k.startswith(aux) for k in ours.state_dict()) and any(k.startswith(aux) for k in state)
    assert all(torch.equal(v, state[k]) for k, v in ours.state_dict().items())
    x = torch.randn(2, 3, side, side)
    with torch.no_grad():
        expected = reference(x)
        assert (expected[0] - expected[1]).abs().max() > 0.1  # answers that follow the picture
        assert torch.equal(ours(x), expected)
        y = x
        for stage in stages(ours):
            y = stage(y)
        assert torch.equal(y, expected)
        assert isinstance(ours.train()(x), torch.Tensor)  # no aux logits in training either
    torch.save(state, saved)
    explored = open_model(name, Options(input_size=side, weights=saved))
    images = torch.randint(0, 256, (2, 3, side, side), dtype=torch.uint8)
    mean, std = (torch.tensor(v).view(3, 1, 1) for v in imagenet.pretrained_normalize(name, 3))
    with torch.no_grad():
        torch.testing.assert_close(explored.logits(images), reference((images.float() / 255 - mean) / std),
                                   rtol=1e-4, atol=1e-4)


def test_a_grey_googlenet_answers_as_torchvisions_on_the_picture_repeated_in_rgb():
    """The grey stem sums the RGB kernels; GoogLeNet's renormalisation, written for three channels (it indexed
    channels 1 and 2), takes the averaged normalisation cnnlab feeds one channel and gives the same
    (pixel - 0.5) / 0.5 as torchvision's network sees in each channel of the repeated picture."""
    _googlenet_file()
    with warnings.catch_warnings():
        reference = torchvision.models.googlenet(weights=imagenet.weights_enum(GOOGLENET)).eval()
    grey = create_model(GOOGLENET, pretrained=True, num_classes=1000, in_channels=1).eval()
    pixels = torch.rand(2, 1, 64, 64)
    (mean,), (std,) = imagenet.pretrained_normalize(GOOGLENET, 1)
    rgb_mean, rgb_std = (torch.tensor(v).view(1, 3, 1, 1) for v in imagenet.pretrained_normalize(GOOGLENET, 3))
    with torch.no_grad():
        expected = reference((pixels.expand(-1, 3, -1, -1) - rgb_mean) / rgb_std)
        got = grey((pixels - mean) / std)
    assert (expected[0] - expected[1]).abs().max() > 0.1  # answers that follow the picture
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-4)


def test_a_fine_tuned_grey_googlenet_is_rebuilt_from_its_checkpoint_and_exported(tmp_path):
    """eval and export of a fine-tuned googlenet: load_trained rebuilds the same network (renormalisation for one
    channel, no aux heads) from the checkpoint alone, and the ONNX file answers as it does (onnxruntime)."""
    torch.manual_seed(1)
    model = create_model(GOOGLENET, num_classes=3, in_channels=1).eval()
    _randomised(model, seed=1)
    ckpt = tmp_path / "googlenet.pt"
    save_checkpoint({"model_name": GOOGLENET, "num_classes": 3, "in_channels": 1, "input_size": 64,
                     "normalize": imagenet.pretrained_normalize(GOOGLENET, 1), "ops": "torch", "config": {},
                     "model": model.state_dict(), "epoch": 0, "step": 0, "history": [], "best_val_acc": 0.0,
                     "dataset": {"name": "mine", "classes": ["a", "b", "c"], "channels": 1, "image_size": 64}}, ckpt)
    trained = load_trained(ckpt, "cpu")
    x = (torch.rand(2, 1, 64, 64) * 255).round() / 255  # pixels / 255, as the ONNX file takes them
    with torch.no_grad():
        assert torch.equal(trained.model(x), model(x))
    out = export_checkpoint(trained, tmp_path / "googlenet.onnx")  # checked against PyTorch there too
    session = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    # the rebuilt network on a pixel is GoogLeNet's trunk on (pixel - 0.5) / 0.5, what its weights were trained on
    trunk = torchvision.models.googlenet(num_classes=3, aux_logits=False, transform_input=False, init_weights=True)
    trunk.conv1.conv = torch.nn.Conv2d(1, 64, 7, 2, 3, bias=False)
    trunk.load_state_dict(model.state_dict())
    with torch.no_grad():
        expected = trained.model(trained.preprocess(x))
        torch.testing.assert_close(expected, trunk.eval()((x - 0.5) / 0.5), rtol=1e-4, atol=1e-4)
    got = session.run(None, {"images": x.numpy()})[0]
    torch.testing.assert_close(torch.from_numpy(got), expected, rtol=1e-4, atol=1e-4)


def _old_densenet_names(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The hosted DenseNet files' keys (this test's own rule): a dense layer's norm1/conv2 named norm.1/conv.2, and
    no batch-norm counts (the files predate them)."""
    renamed = {}
    for key, value in state.items():
        parts = key.split(".")
        if parts[-1] == "num_batches_tracked":
            continue
        if "denseblock" in key and parts[-2][:-1] in ("norm", "conv") and parts[-2][-1] in "12":
            parts[-2:-1] = [parts[-2][:-1], parts[-2][-1]]
        renamed[".".join(parts)] = value
    return renamed


@pytest.mark.parametrize("names", ["hosted (norm.1)", "today's (norm1)"])
def test_densenet_loads_the_hosted_files_old_key_names_and_todays(tmp_path, names):
    """torchvision's hosted densenet121 file names a dense layer's parts norm.1, conv.2 (an older torchvision's
    names, which its builder renames before loading); strictly loaded as they were, none fitted. A file saved from
    today's densenet121().state_dict() loads as well, by name and in the explorer's --weights."""
    from cnnlab.explore.model import Options
    from cnnlab.explore.sources import open_model

    state = _randomised(torchvision.models.densenet121())
    written = _old_densenet_names(state) if names.startswith("hosted") else state
    assert ("features.denseblock1.denselayer1.norm.1.weight" in written) == names.startswith("hosted")
    _cached("imagenet-densenet121", written)
    model = create_model("imagenet-densenet121", pretrained=True, num_classes=1000, in_channels=3)
    assert all(torch.equal(v, state[k]) for k, v in model.state_dict().items() if not k.endswith("_tracked"))
    torch.save(written, tmp_path / "mine.pth")
    explored = open_model("imagenet-densenet121", Options(input_size=32, weights=tmp_path / "mine.pth"))
    images = torch.randint(0, 256, (1, 3, 32, 32), dtype=torch.uint8)
    mean, std = (torch.tensor(v).view(3, 1, 1) for v in imagenet.pretrained_normalize("imagenet-densenet121", 3))
    with torch.no_grad():
        expected = model.eval()((images.float() / 255 - mean) / std)
        assert torch.allclose(explored.logits(images), expected, atol=1e-4)
        x = y = torch.randn(1, 3, 32, 32)
        for stage in stages(model):  # the ReLU and pool its forward applies as functions are stages
            y = stage(y)
        assert torch.equal(y, model(x))


def test_a_densenet_file_of_the_older_key_names_and_no_batch_counts_starts_a_run(tmp_path):
    """A DenseNet saved with torchvision's older key names and without batch norm's batch counts (its hosted file, or
    a fine-tuned one of those days) starts a fine-tuning run: --init-from refused it as "tensors differ", first
    for the names, then for the counts, which its strict load fills in itself."""
    state = _randomised(torchvision.models.densenet121())
    torch.save(_old_densenet_names(state), tmp_path / "old.pth")
    model = create_model("imagenet-densenet121", num_classes=3, in_channels=3)
    done = init_from(model, tmp_path / "old.pth", classes=["a", "b", "c"], channels=3)
    assert "DenseNet's older key names (norm.1) read as today's (norm1)" in done.line
    assert done.line.endswith("new: classifier.weight, classifier.bias")
    got = model.state_dict()
    assert all(torch.equal(got[k], v) for k, v in state.items()
               if not k.startswith("classifier.") and not k.endswith("_tracked"))


def test_a_transformers_resnet_101_file_starts_an_imagenet_resnet101_run(tmp_path):
    """microsoft/resnet-101's layout (save_pretrained's keys, written by test_models_transformers_keys' rule) lands
    in imagenet-resnet101 tensor by tensor; there was no such name to read it into. ConvNeXt base's keys map onto
    torchvision's by structure (on the meta device: 88 million parameters)."""
    theirs = torchvision.models.resnet101()
    saved = randomised(theirs)
    path = tmp_path / "model.pth"
    torch.save({_resnet_key(k): v for k, v in saved.items()}, path)
    model = create_model("imagenet-resnet101", num_classes=4, in_channels=3)
    done = init_from(model, path, classes=["a", "b", "c", "d"], channels=3)
    assert "Hugging Face Transformers' ResNetForImageClassification keys" in done.line
    state = model.state_dict()
    assert all(torch.equal(state[k], v) for k, v in saved.items() if not k.startswith("fc."))
    with torch.device("meta"):
        keys = torchvision.models.convnext_base().state_dict()
        model = create_model("imagenet-convnext_base", num_classes=1000, in_channels=3)
    renamed, _ = torchvision_keys({_convnext_key(k): v for k, v in keys.items()}, path, {})
    assert set(renamed) == set(model.state_dict())


def test_alexnet_fine_tunes_its_last_linear_alone_then_its_body_at_a_lower_lr():
    """`cnnlab train imagenet-alexnet --pretrained --recipe finetune`: the head is classifier.6 (after Dropout and
    two Linears of the classifier, which are body), trained alone while the body is frozen, then the body at the
    lower learning rate; the explorer walks its stages and explains a picture by Grad-CAM."""
    from cnnlab.explore.model import Options, analyze_image
    from cnnlab.explore.sources import open_model

    name = "imagenet-alexnet"
    saved = _randomised(torchvision.models.alexnet())
    _cached(name, saved)
    cfg = make_config(name, "finetune", pretrained=True, epochs=2, batch_size=4, resize=64, limit_train_batches=1)
    trainer = Trainer(build_run(cfg, dataset=noise_dataset(torch.arange(12) % 3, "abc", 3, 64, test=3), quiet=True),
                      quiet=True)
    assert last_layer(trainer.model) is trainer.model.classifier[6]
    frozen, unfrozen = fit_with_snapshots(trainer)
    body = [k for k in saved if not k.startswith("classifier.6.")]
    assert all(torch.equal(frozen[k], saved[k]) for k in body)  # "classifier.1" and "classifier.4" too
    assert not torch.equal(frozen["classifier.6.weight"], unfrozen["classifier.6.weight"])
    assert not torch.equal(unfrozen["features.0.weight"], saved["features.0.weight"])
    groups = trainer.optimizer.param_groups
    assert {id(p) for p in trainer.model.classifier[6].parameters()} == {id(p) for g in groups[:2] for p in g["params"]}
    assert groups[2]["initial_lr"] == pytest.approx(groups[0]["initial_lr"] * BODY_LR_FACTOR)
    explored = open_model(name, Options(input_size=64))
    result = analyze_image(explored, torch.randint(0, 256, (3, 64, 64), dtype=torch.uint8))
    assert result["explanation"]["method"] == "grad-cam" and result["explanation"].get("gradcam")
    assert sum(row["kind"] == "Conv2d" for row in result["rows"]) == 5  # the features' items, one row each
