"""Hugging Face Transformers' ResNet and ConvNeXt classifiers' ``save_pretrained`` weights, read as torchvision's
networks (cnnlab.models.transformers_keys) by ``explore --weights`` and ``train --init-from``.

Transformers is not installed here: the files are written in the layout its ``save_pretrained`` writes, the key
names spelled out below as Transformers 5.25 wrote them for resnet-18, resnet-50 and convnext-tiny built from their
configs (the counts and the names in ``*_WRITTEN``), and the rest renamed from a torchvision network's by the rules
written in this file. The oracle is the torchvision network the tensors came from: each must come back to the
parameter it left, and the network must answer as it did."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision
from PIL import Image
from safetensors.torch import load_file, save_file

from cnnlab.cli import main
from cnnlab.errors import CnnlabError
from cnnlab.explore.images import decode_upload
from cnnlab.explore.model import Options
from cnnlab.explore.sources import open_model
from cnnlab.models import create_model, imagenet
from cnnlab.models.state_dict import load_state_dict_into
from cnnlab.train.finetune import init_from
from explore_support import processor_framed

# As Transformers' save_pretrained wrote them (tensor count, and names with the torchvision parameter each is)
RESNET18_WRITTEN = (122, {
    "resnet.embedder.embedder.convolution.weight": "conv1.weight",
    "resnet.embedder.embedder.normalization.running_var": "bn1.running_var",
    "resnet.embedder.embedder.normalization.num_batches_tracked": "bn1.num_batches_tracked",
    "resnet.encoder.stages.0.layers.0.layer.0.convolution.weight": "layer1.0.conv1.weight",
    "resnet.encoder.stages.0.layers.0.layer.1.normalization.weight": "layer1.0.bn2.weight",
    "resnet.encoder.stages.1.layers.0.shortcut.convolution.weight": "layer2.0.downsample.0.weight",
    "resnet.encoder.stages.1.layers.0.shortcut.normalization.running_mean": "layer2.0.downsample.1.running_mean",
    "resnet.encoder.stages.1.layers.1.layer.1.normalization.running_var": "layer2.1.bn2.running_var",
    "resnet.encoder.stages.3.layers.1.layer.1.normalization.running_var": "layer4.1.bn2.running_var",
    "classifier.1.weight": "fc.weight",
    "classifier.1.bias": "fc.bias",
})
RESNET50_WRITTEN = (320, {
    "resnet.encoder.stages.0.layers.0.shortcut.convolution.weight": "layer1.0.downsample.0.weight",
    "resnet.encoder.stages.1.layers.0.layer.2.normalization.num_batches_tracked": "layer2.0.bn3.num_batches_tracked",
    "resnet.encoder.stages.1.layers.3.layer.0.normalization.num_batches_tracked": "layer2.3.bn1.num_batches_tracked",
    "resnet.encoder.stages.3.layers.2.layer.2.normalization.running_var": "layer4.2.bn3.running_var",
    "classifier.1.weight": "fc.weight",
})
CONVNEXT_TINY_WRITTEN = (182, {
    "convnext.embeddings.patch_embeddings.weight": "features.0.0.weight",
    "convnext.embeddings.layernorm.bias": "features.0.1.bias",
    "convnext.encoder.stages.0.layers.0.dwconv.weight": "features.1.0.block.0.weight",
    "convnext.encoder.stages.1.downsampling_layer.0.weight": "features.2.0.weight",
    "convnext.encoder.stages.1.downsampling_layer.1.bias": "features.2.1.bias",
    "convnext.encoder.stages.1.layers.0.layernorm.weight": "features.3.0.block.2.weight",
    "convnext.encoder.stages.1.layers.0.pwconv1.weight": "features.3.0.block.3.weight",
    "convnext.encoder.stages.1.layers.0.pwconv2.bias": "features.3.0.block.5.bias",
    "convnext.encoder.stages.2.layers.8.dwconv.bias": "features.5.8.block.0.bias",
    "convnext.layernorm.weight": "classifier.0.weight",
    "classifier.weight": "classifier.2.weight",
})
SCALE = ("convnext.encoder.stages.0.layers.0.layer_scale_parameter", "features.1.0.layer_scale")


def _resnet_key(name: str) -> str:
    """A torchvision ResNet key as Transformers names it: the stem's conv1/bn1 in the embedder, layerL.b in stage
    L-1's layer b, whose convK/bnK are its layer K-1 and whose downsample is its shortcut, fc in the classifier
    after its flatten."""
    parts = name.split(".")
    if parts[0] in ("conv1", "bn1"):
        part = "convolution" if parts[0] == "conv1" else "normalization"
        return f"resnet.embedder.embedder.{part}.{parts[1]}"
    if parts[0] == "fc":
        return f"classifier.1.{parts[1]}"
    stage, block = int(parts[0][len("layer"):]) - 1, parts[1]
    where = f"resnet.encoder.stages.{stage}.layers.{block}"
    if parts[2] == "downsample":
        return f"{where}.shortcut.{['convolution', 'normalization'][int(parts[3])]}.{parts[4]}"
    part = "convolution" if parts[2].startswith("conv") else "normalization"
    return f"{where}.layer.{int(parts[2][-1]) - 1}.{part}.{parts[3]}"


def _convnext_key(name: str) -> str:
    """A torchvision ConvNeXt key as Transformers names it: features 0 is the stem, odd features 2s+1 stage s,
    even ones 2s stage s's downsampling layer; a block's items 0, 2, 3, 5 its dwconv, layernorm, pwconv1, pwconv2."""
    parts = name.split(".")
    if parts[0] == "classifier":
        return f"convnext.layernorm.{parts[2]}" if parts[1] == "0" else f"classifier.{parts[2]}"
    index = int(parts[1])
    if index == 0:
        return f"convnext.embeddings.{['patch_embeddings', 'layernorm'][int(parts[2])]}.{parts[3]}"
    if index % 2 == 0:
        return f"convnext.encoder.stages.{index // 2}.downsampling_layer.{parts[2]}.{parts[3]}"
    where = f"convnext.encoder.stages.{index // 2}.layers.{parts[2]}"
    if parts[3] == "layer_scale":
        return f"{where}.layer_scale_parameter"
    block = {"0": "dwconv", "2": "layernorm", "3": "pwconv1", "5": "pwconv2"}[parts[4]]
    return f"{where}.{block}.{parts[5]}"


def _randomised(network: torch.nn.Module) -> dict[str, torch.Tensor]:
    """``network``'s state dict, every tensor filled anew (batch-norm scales, biases and statistics too, and each
    ``num_batches_tracked`` its own count), so that no two of one shape agree and a swap shows."""
    torch.manual_seed(0)
    state = {}
    for k, (name, v) in enumerate(network.state_dict().items()):
        state[name] = torch.full_like(v, k) if not v.is_floating_point() else \
            torch.rand_like(v) + 0.5 if name.endswith("running_var") else torch.randn_like(v) * 0.1
    network.load_state_dict(state)
    return state


def _transformers_file(folder: Path, network: torch.nn.Module, key, config: dict | None = None) -> Path:
    """``network``'s randomised weights saved in ``folder`` as save_pretrained does: model.safetensors under
    Transformers' names (a ConvNeXt's layer scale as a vector), and config.json beside it where given."""
    folder.mkdir(parents=True, exist_ok=True)
    state = {key(name): v.flatten() if name.endswith("layer_scale") else v
             for name, v in _randomised(network).items()}
    save_file(state, folder / "model.safetensors", metadata={"format": "pt"})
    if config is not None:
        (folder / "config.json").write_text(json.dumps(config))
    return folder / "model.safetensors"


@pytest.fixture(autouse=True)
def torch_home(tmp_path, monkeypatch) -> Path:
    """An empty TORCH_HOME: nothing is read from a cache, and the ImageNet weights are never needed."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setenv("CNNLAB_CACHE", str(tmp_path / "cache"))
    return tmp_path / "torch"


@pytest.mark.parametrize("builder, key, written", [
    ("resnet18", _resnet_key, RESNET18_WRITTEN),  # basic blocks
    ("resnet50", _resnet_key, RESNET50_WRITTEN),  # bottlenecks, a shortcut in the first stage
    ("convnext_tiny", _convnext_key, CONVNEXT_TINY_WRITTEN),
])
def test_every_tensor_of_a_transformers_file_lands_where_it_left(tmp_path, builder, key, written):
    """A Transformers ResNetForImageClassification's or ConvNextForImageClassification's model.safetensors goes into
    torchvision's network tensor by tensor: each named one into the parameter it must (a shortcut into the
    downsample, the head into fc / classifier.2), every other one back where it came from, so the network answers
    as the one it was saved from; it was refused ("Missing key(s) in state_dict: conv1.weight ...")."""
    count, names = written
    theirs = getattr(torchvision.models, builder)().eval()
    path = _transformers_file(tmp_path / builder, theirs, key)
    saved = load_file(path)
    assert len(saved) == count and set(names) <= set(saved)  # the layout Transformers writes
    ours = getattr(torchvision.models, builder)().eval()
    how = load_state_dict_into(ours, dict(saved), path, f"torchvision's {builder}", "its weights")
    cls, family = ("ConvNext", "ConvNeXt") if builder.startswith("convnext") else ("ResNet", "ResNet")
    assert how == f"Hugging Face Transformers' {cls}ForImageClassification keys read under torchvision's {family} " \
        "names"
    state = ours.state_dict()
    for hf, tv in names.items():
        assert torch.equal(state[tv], saved[hf]), (hf, tv)
    if builder.startswith("convnext"):
        assert state[SCALE[1]].shape[1:] == (1, 1) and torch.equal(state[SCALE[1]].flatten(), saved[SCALE[0]])
    assert all(torch.equal(state[name], v) for name, v in theirs.state_dict().items())
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        assert torch.equal(ours(x), theirs(x))


def test_explore_names_a_transformers_files_classes_from_its_config(tmp_path):
    """`cnnlab explore imagenet-resnet18 --weights FOLDER/model.safetensors` of a Transformers ResNet fine-tuned to
    3 classes: the head shaped as the file has it, the class names of config.json's id2label beside it, and the
    answers of the network the weights came from, fed as the ImageNet weights are; the page says how the keys
    were read."""
    theirs = torchvision.models.resnet18(num_classes=3).eval()
    config = {"model_type": "resnet", "layer_type": "basic", "id2label": {"0": "cat", "1": "dog", "2": "fox"}}
    path = _transformers_file(tmp_path / "hf", theirs, _resnet_key, config)
    explored = open_model("imagenet-resnet18", Options(input_size=32, weights=path))
    assert explored.classes == ("cat", "dog", "fox")
    assert "Hugging Face Transformers' ResNetForImageClassification keys read under torchvision's ResNet names" \
        in explored.notes[0] and "config.json beside it (id2label)" in explored.notes[0]
    mean, std = (torch.tensor(v).view(3, 1, 1) for v in imagenet.pretrained_normalize("imagenet-resnet18", 3))
    images = torch.randint(0, 256, (2, 3, 32, 32), dtype=torch.uint8)
    with torch.no_grad():
        assert torch.allclose(explored.logits(images), theirs((images.float() / 255 - mean) / std), atol=1e-4)


def test_explore_feeds_a_transformers_file_as_its_preprocessor_config_says(tmp_path):
    """`cnnlab explore imagenet-resnet18 --weights FOLDER/model.safetensors` of a save_pretrained folder that keeps
    its processor's preprocessor_config.json (microsoft/resnet-50's form: a ConvNeXt processor, here at 32 px): the
    input size, normalisation and framing of that file (the shorter side resized to int(32 / 0.875) = 36 with
    Pillow's bicubic, the centre 32 x 32 cropped, offsets rounded down); the explorer fed it 224 px ImageNet
    normalisation on a padded picture, as it feeds torchvision's weights. Pillow's resize and crop and the torchvision
    network the weights came from are the oracle; the flags come first."""
    theirs = torchvision.models.resnet18(num_classes=3).eval()
    config = {"model_type": "resnet", "layer_type": "basic", "id2label": {"0": "cat", "1": "dog", "2": "fox"}}
    path = _transformers_file(tmp_path / "hf", theirs, _resnet_key, config)
    processor = {"crop_pct": 0.875, "do_normalize": True, "do_resize": True, "resample": 3,
                 "image_mean": [0.5, 0.4, 0.3], "image_std": [0.2, 0.25, 0.3], "size": {"shortest_edge": 32}}
    (path.parent / "preprocessor_config.json").write_text(json.dumps(processor))
    explored = open_model("imagenet-resnet18", Options(weights=path))
    said = explored.spec.describe()
    assert explored.spec.hw == (32, 32) and "size from the preprocessor_config.json beside it" in said
    assert "pictures resized by the shorter side to 36 (bicubic) and centre-cropped to 32 as its " \
        "preprocessor_config.json says" in said and "normalisation from the preprocessor_config.json beside it" in said
    picture = Image.fromarray(np.random.default_rng(1).integers(0, 256, (45, 71, 3), dtype=np.uint8))
    picture.save(tmp_path / "photo.jpg")
    spec = explored.spec
    fed = decode_upload((tmp_path / "photo.jpg").read_bytes(), spec.channels, spec.read_hw, crop=spec.crop,
                        fit=spec.fit)
    expected = processor_framed(Image.open(tmp_path / "photo.jpg").convert("RGB"), 36, 32, Image.Resampling.BICUBIC)
    assert np.array_equal(fed.permute(1, 2, 0).numpy(), expected)
    mean, std = (torch.tensor(processor[k]).view(3, 1, 1) for k in ("image_mean", "image_std"))
    with torch.no_grad():
        assert torch.allclose(explored.logits(fed[None]), theirs((fed[None].float() / 255 - mean) / std), atol=1e-4)
    flagged = open_model("imagenet-resnet18", Options(weights=path, input_size=40, mean=(0.1,), std=(0.2,))).spec
    assert flagged.hw == (40, 40) and flagged.mean == (0.1, 0.1, 0.1) and flagged.fit == "pad"
    assert "beside it" not in flagged.describe()


def test_init_from_a_transformers_file_keeps_its_body_and_starts_a_fresh_head(tmp_path):
    """`train imagenet-convnext_tiny --init-from model.safetensors` of facebook/convnext-tiny-224's layout: the
    body comes along under torchvision's names, the 1,000-class head gives way to the run's classes."""
    theirs = torchvision.models.convnext_tiny().eval()
    path = _transformers_file(tmp_path / "hf", theirs, _convnext_key)
    model = create_model("imagenet-convnext_tiny", num_classes=4, in_channels=3)
    done = init_from(model, path, classes=["a", "b", "c", "d"], channels=3)
    assert "Hugging Face Transformers' ConvNextForImageClassification keys read under torchvision's ConvNeXt " \
           "names" in done.line and done.line.endswith("new: classifier.2.weight, classifier.2.bias")
    state, saved = model.state_dict(), theirs.state_dict()
    assert all(torch.equal(state[k], v) for k, v in saved.items() if not k.startswith("classifier.2."))


@pytest.mark.parametrize("change, says, first", [
    ("a key missing", r"\(Hugging Face Transformers' ResNetForImageClassification keys read under torchvision's "
                      r"ResNet names\) does not fit torchvision's resnet50: Missing key\(s\) in state_dict: "
                      r"\"layer3\.5\.conv2\.weight\"", "layer3.5.conv2.weight"),
    ("a shape wrong", r"does not fit torchvision's resnet50: size mismatch for layer2\.0\.downsample\.0\.weight",
     "layer2.0.downsample.0.weight"),
    ("ResNet v1", r"holds Hugging Face Transformers' ResNetForImageClassification weights of another network than "
                  r"torchvision's ResNet: its bottlenecks stride on their first 1x1 convolution "
                  r"\(downsample_in_bottleneck\), torchvision's on the 3x3 \(ResNet v1\.5\), as config\.json beside "
                  r"it says; expected", None),
    ("a downsampling first stage", r"its first stage downsamples \(downsample_in_first_stage\)", None),
])
def test_a_transformers_file_that_is_not_torchvisions_network_is_refused_in_one_line(tmp_path, capsys, change,
                                                                                       says, first):
    """What does not fit is named in one line, exit code 2, the keys as torchvision names them (by explore, and by
    --init-from); a config.json that makes another network of the same shapes (the stride on a bottleneck's 1x1, a
    first stage that downsamples) is refused rather than loaded into torchvision's."""
    config = {"ResNet v1": {"downsample_in_bottleneck": True},
              "a downsampling first stage": {"downsample_in_first_stage": True}}.get(change)
    path = _transformers_file(tmp_path / "hf", torchvision.models.resnet50(), _resnet_key, config)
    state = load_file(path)
    if change == "a key missing":
        del state["resnet.encoder.stages.2.layers.5.layer.1.convolution.weight"]
    if change == "a shape wrong":
        state["resnet.encoder.stages.1.layers.0.shortcut.convolution.weight"] = torch.zeros(512, 256, 3, 3)
    save_file(state, path)
    assert main(["explore", "imagenet-resnet50", "--weights", str(path)]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and re.search(says, err), err
    if first is not None:
        says = r"ResNet names\) do not fit this model: 1 tensors besides the output layer differ, first " + \
            re.escape(first)
    with pytest.raises(CnnlabError, match=says):
        init_from(create_model("imagenet-resnet50", num_classes=4, in_channels=3), path, channels=3)


def test_a_transformers_model_saved_inside_a_wrapper_is_read_under_its_prefix(tmp_path):
    """A Transformers ResNet fine-tuned inside a Lightning module (``self.model = ResNetForImageClassification...``)
    is saved under ``model.``, beside the module's other tensors: `explore --weights` of its safetensors and
    `--init-from` of its checkpoint read it as a prefixed torchvision file is read; it was refused ("Missing key(s)
    in state_dict: conv1.weight ...")."""
    theirs = torchvision.models.resnet18(num_classes=3).eval()
    saved = load_file(_transformers_file(tmp_path / "hf", theirs, _resnet_key))
    wrapped = {**{f"model.{k}": v for k, v in saved.items()}, "loss.weight": torch.ones(3)}
    save_file(wrapped, tmp_path / "wrapped.safetensors")
    explored = open_model("imagenet-resnet18", Options(input_size=32, weights=tmp_path / "wrapped.safetensors"))
    assert "keys read under torchvision's ResNet names, its keys under 'model.' without that prefix, leaving out 1 " \
        "other tensor(s)" in explored.notes[0]
    images = torch.randint(0, 256, (2, 3, 32, 32), dtype=torch.uint8)
    mean, std = (torch.tensor(v).view(3, 1, 1) for v in imagenet.pretrained_normalize("imagenet-resnet18", 3))
    with torch.no_grad():
        assert torch.allclose(explored.logits(images), theirs((images.float() / 255 - mean) / std), atol=1e-4)
    torch.save({"state_dict": wrapped, "epoch": 3}, tmp_path / "lightning.ckpt")
    model = create_model("imagenet-resnet18", num_classes=3, in_channels=3)
    done = init_from(model, tmp_path / "lightning.ckpt", classes=["a", "b", "c"], channels=3)
    assert "keys read under torchvision's ResNet names" in done.line and "new:" not in done.line, done.line
    assert all(torch.equal(model.state_dict()[k], v) for k, v in theirs.state_dict().items())


def _bare_file(folder: Path, network: torch.nn.Module, key, config: dict | None = None) -> Path:
    """``network``'s randomised weights saved in ``folder`` as a bare Transformers body's save_pretrained saves them
    (``ResNetModel``, ``ConvNextModel``: ``AutoModel.from_pretrained``'s): the body's keys without the body's name
    (``resnet.``, ``convnext.``), and no classifier."""
    path = _transformers_file(folder, network, key, config)
    state = {k.split(".", 1)[1]: v for k, v in load_file(path).items() if k.startswith(("resnet.", "convnext."))}
    save_file(state, path, metadata={"format": "pt"})
    return path


# As Transformers' save_pretrained of ResNetModel / ConvNextModel names them (no resnet. / convnext., no classifier)
BARE_WRITTEN = {"resnet18": ("embedder.embedder.convolution.weight", "encoder.stages.3.layers.1.layer.1.normalization"
                             ".running_var"),
                "resnet50": ("encoder.stages.0.layers.0.shortcut.convolution.weight",),
                "convnext_tiny": ("embeddings.patch_embeddings.weight", "layernorm.weight",
                                  "encoder.stages.0.layers.0.layer_scale_parameter")}


@pytest.mark.parametrize("builder, key, head", [
    ("resnet18", _resnet_key, ("fc.weight", "fc.bias")),
    ("resnet50", _resnet_key, ("fc.weight", "fc.bias")),
    ("convnext_tiny", _convnext_key, ("classifier.2.weight", "classifier.2.bias")),
])
def test_init_from_a_bare_transformers_body_keeps_it_and_starts_a_fresh_head(tmp_path, builder, key, head):
    """`train imagenet-NAME --init-from model.safetensors` of a bare ResNetModel's or ConvNextModel's save (the body
    AutoModel.from_pretrained gives, no classifier): every tensor of the body comes back bit for bit, the head
    keeps its fresh initialisation and the line says so; it was refused ("... tensors besides the output layer
    differ")."""
    theirs = getattr(torchvision.models, builder)().eval()
    cls = "ConvNextModel" if builder.startswith("convnext") else "ResNetModel"
    config = {"architectures": [cls], "model_type": "convnext" if cls == "ConvNextModel" else "resnet"}
    path = _bare_file(tmp_path / "hf", theirs, key, config)
    assert set(BARE_WRITTEN[builder]) <= set(load_file(path)) and not any("classifier" in k for k in load_file(path))
    model = create_model(f"imagenet-{builder}", num_classes=4, in_channels=3)
    fresh = {k: v.clone() for k, v in model.state_dict().items() if k in head}
    done = init_from(model, path, classes=["a", "b", "c", "d"], channels=3, network=builder)
    family = "ConvNeXt" if cls == "ConvNextModel" else "ResNet"
    assert f"Hugging Face Transformers' {cls} keys read under torchvision's {family} names" in done.line
    assert done.line.endswith(f"new: {', '.join(head)}"), done.line
    state = model.state_dict()
    assert all(torch.equal(state[k], v) for k, v in theirs.state_dict().items() if k not in head)
    assert all(torch.equal(state[k], v) for k, v in fresh.items())


@pytest.mark.parametrize("command", ["explore", "summary", "predict"])
def test_a_bare_transformers_body_is_refused_by_explore_in_one_line_naming_the_missing_head(tmp_path, capsys,
                                                                                             command):
    """explore, summary and predict of `imagenet-resnet50 --weights` a bare ResNetModel's file: there is no
    classifier, so no classes: one line, exit code 2, naming the head's keys and the way in (train --init-from);
    it was a long line of every missing key under torchvision's names, the file's own keys unread."""
    path = _bare_file(tmp_path / "hf", torchvision.models.resnet50(), _resnet_key, {"architectures": ["ResNetModel"]})
    Image.fromarray(np.zeros((40, 40, 3), dtype=np.uint8)).save(tmp_path / "photo.png")
    images = [str(tmp_path / "photo.png")] if command == "predict" else []
    assert main([command, "imagenet-resnet50", "--weights", str(path), *images]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1, err
    assert f"{path} (Hugging Face Transformers' ResNetModel keys read under torchvision's ResNet names) holds " \
        "torchvision's resnet50 without its classifier (no fc.weight, fc.bias): a body names no classes and " \
        "predicts none" in err and \
        f"cnnlab train imagenet-resnet50 --dataset folder:PHOTOS --init-from {path}" in err, err


def test_a_bare_transformers_body_of_another_network_is_refused_as_the_classifiers_are(tmp_path):
    """A bare ResNetModel whose config.json makes it ResNet v1 (downsample_in_bottleneck) is refused by name, as
    ResNetForImageClassification's file is, rather than loaded into torchvision's v1.5 body."""
    config = {"architectures": ["ResNetModel"], "downsample_in_bottleneck": True}
    path = _bare_file(tmp_path / "hf", torchvision.models.resnet50(), _resnet_key, config)
    with pytest.raises(CnnlabError, match=r"holds Hugging Face Transformers' ResNetModel weights of another network "
                                          r"than torchvision's ResNet: its bottlenecks stride on their first 1x1"):
        init_from(create_model("imagenet-resnet50", num_classes=4, in_channels=3), path, channels=3)


def test_a_bare_transformers_body_inside_a_wrapper_is_read_under_its_prefix(tmp_path):
    """A Lightning module holding AutoModel's bare ResNetModel as ``backbone`` and its own ``head`` saves
    ``backbone.embedder...`` beside ``head.weight``: --init-from takes the body under that prefix, leaving out the
    rest, and starts torchvision's fc fresh."""
    theirs = torchvision.models.resnet18().eval()
    saved = load_file(_bare_file(tmp_path / "hf", theirs, _resnet_key))
    wrapped = {**{f"backbone.{k}": v for k, v in saved.items()}, "head.weight": torch.ones(3, 512),
               "head.bias": torch.zeros(3)}
    torch.save({"state_dict": wrapped, "epoch": 3}, tmp_path / "lightning.ckpt")
    model = create_model("imagenet-resnet18", num_classes=3, in_channels=3)
    done = init_from(model, tmp_path / "lightning.ckpt", classes=["a", "b", "c"], channels=3)
    assert "ResNetModel keys read under torchvision's ResNet names, its keys under 'backbone.' without that prefix, " \
        "leaving out 2 other tensor(s)" in done.line and done.line.endswith("new: fc.weight, fc.bias"), done.line
    assert all(torch.equal(model.state_dict()[k], v) for k, v in theirs.state_dict().items() if not k.startswith("fc."))
