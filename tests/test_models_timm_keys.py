"""timm's ConvNeXt, EfficientNet, MobileNetV2, RegNetY and VGG weights (the Hub's timm/convnext_tiny.fb_in1k, ...),
read as torchvision's networks (cnnlab.models.timm_keys) by ``explore --weights`` and ``train --init-from``, and
timm's config.json beside a file read for the network it names and how it is fed.

timm is not installed here: the files are written in the layout timm's models save, the key names spelled out
below as timm 1.0.31's convnext_tiny, efficientnet_b0, mobilenetv2_100, regnety_004 and vgg11 hold them (the counts
and the names in ``*_WRITTEN``, each with the torchvision parameter it is), and the rest renamed from a torchvision
network's by the rules written in this file. config.json is written as timm's ``push_to_hub`` writes it (its
``architecture`` and ``pretrained_cfg``). The oracle is the torchvision network the tensors came from: each must
come back to the parameter it left, and the network must answer as it did; torchvision's Resize and CenterCrop frame
a picture as timm's evaluation transform does."""

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
from torchvision import transforms

from cnnlab.cli import main
from cnnlab.errors import CnnlabError
from cnnlab.explore.hugging_face import hugging_face_carried, timm_carried
from cnnlab.explore.images import decode_upload
from cnnlab.explore.model import Options
from cnnlab.explore.sources import open_model
from cnnlab.models import create_model, imagenet
from cnnlab.models.state_dict import load_state_dict_into
from cnnlab.train import build_run, make_config
from cnnlab.train.finetune import init_from, last_layer
from data_support import noise_dataset
from test_models_transformers_keys import _randomised, torch_home  # noqa: F401  torch_home: an autouse fixture

# As timm's models hold them (tensor count, and names with the torchvision parameter each is)
CONVNEXT_TINY_WRITTEN = (182, {
    "stem.0.weight": "features.0.0.weight",
    "stem.1.bias": "features.0.1.bias",
    "stages.0.blocks.0.conv_dw.weight": "features.1.0.block.0.weight",
    "stages.0.blocks.1.norm.bias": "features.1.1.block.2.bias",
    "stages.0.blocks.2.mlp.fc1.weight": "features.1.2.block.3.weight",
    "stages.0.blocks.0.mlp.fc2.bias": "features.1.0.block.5.bias",
    "stages.1.downsample.0.weight": "features.2.0.weight",
    "stages.1.downsample.1.bias": "features.2.1.bias",
    "stages.1.blocks.0.norm.weight": "features.3.0.block.2.weight",
    "head.norm.weight": "classifier.0.weight",
    "head.fc.bias": "classifier.2.bias",
})
EFFICIENTNET_B0_WRITTEN = (360, {
    "conv_stem.weight": "features.0.0.weight",
    "bn1.weight": "features.0.1.weight",
    "blocks.0.0.conv_dw.weight": "features.1.0.block.0.0.weight",  # a depthwise-separable block: no expansion
    "blocks.0.0.se.conv_reduce.weight": "features.1.0.block.1.fc1.weight",
    "blocks.0.0.conv_pw.weight": "features.1.0.block.2.0.weight",
    "blocks.0.0.bn2.weight": "features.1.0.block.2.1.weight",
    "blocks.1.0.conv_pw.weight": "features.2.0.block.0.0.weight",  # an inverted residual
    "blocks.1.0.bn2.weight": "features.2.0.block.1.1.weight",
    "blocks.1.0.se.conv_expand.weight": "features.2.0.block.2.fc2.weight",
    "blocks.1.0.conv_pwl.weight": "features.2.0.block.3.0.weight",
    "blocks.1.0.bn3.weight": "features.2.0.block.3.1.weight",
    "blocks.3.2.conv_dw.weight": "features.4.2.block.1.0.weight",
    "blocks.6.0.bn3.running_var": "features.7.0.block.3.1.running_var",
    "conv_head.weight": "features.8.0.weight",
    "bn2.running_var": "features.8.1.running_var",
    "classifier.weight": "classifier.1.weight",
})
MOBILENET_V2_WRITTEN = (314, {  # timm's mobilenetv2_100
    "conv_stem.weight": "features.0.0.weight",
    "bn1.weight": "features.0.1.weight",
    "blocks.0.0.conv_dw.weight": "features.1.conv.0.0.weight",  # a depthwise-separable block
    "blocks.0.0.bn1.running_var": "features.1.conv.0.1.running_var",
    "blocks.0.0.conv_pw.weight": "features.1.conv.1.weight",
    "blocks.0.0.bn2.bias": "features.1.conv.2.bias",
    "blocks.1.0.conv_pw.weight": "features.2.conv.0.0.weight",  # an inverted residual
    "blocks.1.1.bn1.weight": "features.3.conv.0.1.weight",
    "blocks.2.2.conv_dw.weight": "features.6.conv.1.0.weight",
    "blocks.3.3.bn2.running_mean": "features.10.conv.1.1.running_mean",
    "blocks.5.2.conv_pwl.weight": "features.16.conv.2.weight",
    "blocks.6.0.bn3.running_var": "features.17.conv.3.running_var",
    "conv_head.weight": "features.18.0.weight",
    "bn2.weight": "features.18.1.weight",
    "classifier.bias": "classifier.1.bias",
})
REGNET_Y_400MF_WRITTEN = (384, {
    "stem.conv.weight": "stem.0.weight",
    "stem.bn.weight": "stem.1.weight",
    "s1.b1.conv1.conv.weight": "trunk_output.block1.block1-0.f.a.0.weight",
    "s1.b1.downsample.conv.weight": "trunk_output.block1.block1-0.proj.0.weight",
    "s1.b1.downsample.bn.weight": "trunk_output.block1.block1-0.proj.1.weight",
    "s2.b2.conv2.conv.weight": "trunk_output.block2.block2-1.f.b.0.weight",
    "s2.b2.se.fc1.weight": "trunk_output.block2.block2-1.f.se.fc1.weight",
    "s2.b2.conv3.bn.weight": "trunk_output.block2.block2-1.f.c.1.weight",
    "s4.b6.se.fc2.bias": "trunk_output.block4.block4-5.f.se.fc2.bias",
    "s4.b6.conv3.bn.running_var": "trunk_output.block4.block4-5.f.c.1.running_var",
    "head.fc.weight": "fc.weight",
})
VGG11_WRITTEN = (22, {
    "features.0.weight": "features.0.weight",
    "features.18.bias": "features.18.bias",
    "pre_logits.fc1.bias": "classifier.0.bias",
    "pre_logits.fc2.bias": "classifier.3.bias",
    "head.fc.weight": "classifier.6.weight",
})
# timm's tensors of another shape than torchvision's: (timm's name, torchvision's), compared flattened
RESHAPED = {"convnext_tiny": ("stages.0.blocks.0.gamma", "features.1.0.layer_scale"),  # C against C x 1 x 1
            "vgg11": ("pre_logits.fc1.weight", "classifier.0.weight")}  # 4096 x 512 x 7 x 7 against 4096 x 25088
CONV_BN = ("conv", "bn")
MOBILENETV2_STAGES = (1, 2, 3, 4, 3, 3, 1)  # the blocks of its seven stages


def _convnext_key(name: str, names: set[str]) -> str:
    """A torchvision ConvNeXt key as timm names it: features 0 is the stem, odd features 2s+1 stage s's blocks,
    even ones 2s stage s's downsample; a block's items 0, 2, 3, 5 its conv_dw, norm, mlp.fc1, mlp.fc2, its layer
    scale its gamma; the classifier's LayerNorm and linear layer the head's norm and fc."""
    parts = name.split(".")
    if parts[0] == "classifier":
        return f"head.{'norm' if parts[1] == '0' else 'fc'}.{parts[2]}"
    index = int(parts[1])
    if index == 0:
        return f"stem.{parts[2]}.{parts[3]}"
    if index % 2 == 0:
        return f"stages.{index // 2}.downsample.{parts[2]}.{parts[3]}"
    where = f"stages.{index // 2}.blocks.{parts[2]}"
    if parts[3] == "layer_scale":
        return f"{where}.gamma"
    return f"{where}.{ {'0': 'conv_dw', '2': 'norm', '3': 'mlp.fc1', '5': 'mlp.fc2'}[parts[4]]}.{parts[5]}"


def _efficientnet_key(name: str, names: set[str]) -> str:
    """A torchvision EfficientNet key as timm names it: features 0 and the last are the stem's and the head's
    convolution and batch norm, features k's block b is stage k-1's block b, whose items are, with an expanding
    convolution (four items), conv_pw/bn1, conv_dw/bn2, se, conv_pwl/bn3, and without it conv_dw/bn1, se,
    conv_pw/bn2; the SE's fc1/fc2 its conv_reduce/conv_expand; classifier 1 (after the dropout) the classifier."""
    parts = name.split(".")
    if parts[0] == "classifier":
        return f"classifier.{parts[2]}"
    index = int(parts[1])
    if len(parts) == 4:
        stem = ("conv_stem", "bn1") if index == 0 else ("conv_head", "bn2")
        return f"{stem[int(parts[2])]}.{parts[3]}"
    expands = f"features.{index}.{parts[2]}.block.3.0.weight" in names
    items = (("conv_pw", "bn1"), ("conv_dw", "bn2"), "se", ("conv_pwl", "bn3")) if expands else \
        (("conv_dw", "bn1"), "se", ("conv_pw", "bn2"))
    item, where = items[int(parts[4])], f"blocks.{index - 1}.{parts[2]}"
    if item == "se":
        return f"{where}.se.{ {'fc1': 'conv_reduce', 'fc2': 'conv_expand'}[parts[5]]}.{parts[6]}"
    return f"{where}.{item[int(parts[5])]}.{parts[6]}"


def _mobilenetv2_key(name: str, names: set[str]) -> str:
    """A torchvision MobileNetV2 key as timm names it: features 0 and 18 are the stem's and the head's convolution
    and batch norm (conv_stem/bn1, conv_head/bn2), features 1 to 17 the blocks of its seven stages in turn
    (MOBILENETV2_STAGES), whose conv items are, in the first (depthwise-separable), conv_dw/bn1 then conv_pw, bn2,
    and in the others (inverted residuals) conv_pw/bn1, conv_dw/bn2, then conv_pwl, bn3; classifier 1 the
    classifier."""
    parts = name.split(".")
    if parts[0] == "classifier":
        return f"classifier.{parts[2]}"
    index = int(parts[1])
    if index in (0, 18):
        return f"{(('conv_stem', 'bn1') if index == 0 else ('conv_head', 'bn2'))[int(parts[2])]}.{parts[3]}"
    stage = next(s for s in range(len(MOBILENETV2_STAGES)) if index <= sum(MOBILENETV2_STAGES[:s + 1]))
    where = f"blocks.{stage}.{index - 1 - sum(MOBILENETV2_STAGES[:stage])}"
    items = ((("conv_dw", "bn1"), "conv_pw", "bn2") if index == 1 else
             (("conv_pw", "bn1"), ("conv_dw", "bn2"), "conv_pwl", "bn3"))
    item = items[int(parts[3])]
    return f"{where}.{item if isinstance(item, str) else item[int(parts[4])]}.{parts[-1]}"


def _regnet_key(name: str, names: set[str]) -> str:
    """A torchvision RegNet key as timm names it: the stem's 0/1 its conv/bn; trunk_output.block{s}.block{s}-{b}
    is s{s}.b{b+1}, its f.a, f.b, f.c conv1, conv2, conv3 (each .0/.1 as .conv/.bn), f.se se, proj downsample; fc
    the head's fc."""
    parts = name.split(".")
    if parts[0] == "stem":
        return f"stem.{CONV_BN[int(parts[1])]}.{parts[2]}"
    if parts[0] == "fc":
        return f"head.fc.{parts[1]}"
    where = f"s{parts[1][len('block'):]}.b{int(parts[2].split('-')[1]) + 1}"
    if parts[3] == "proj":
        return f"{where}.downsample.{CONV_BN[int(parts[4])]}.{parts[5]}"
    if parts[4] == "se":
        return f"{where}.se.{parts[5]}.{parts[6]}"
    return f"{where}.conv{'abc'.index(parts[4]) + 1}.{CONV_BN[int(parts[5])]}.{parts[6]}"


def _vgg_key(name: str, names: set[str]) -> str:
    """A torchvision VGG key as timm names it: the features as they are, the classifier's linear layers 0, 3, 6
    the pre_logits' fc1, fc2 and the head's fc."""
    parts = name.split(".")
    if parts[0] == "features":
        return name
    return f"{ {'0': 'pre_logits.fc1', '3': 'pre_logits.fc2', '6': 'head.fc'}[parts[1]]}.{parts[2]}"


def _as_timm_holds(name: str, value: torch.Tensor) -> torch.Tensor:
    """A tensor of timm's ``name`` in the shape timm holds it: a ConvNeXt layer scale as a vector, VGG's first two
    classifier layers as convolutions over the 7 x 7 map of 512 channels and over a 1 x 1 map."""
    if name.endswith(".gamma"):
        return value.flatten()
    if name == "pre_logits.fc1.weight":
        return value.reshape(value.shape[0], 512, 7, 7)
    return value.reshape(*value.shape, 1, 1) if name == "pre_logits.fc2.weight" else value


def _pretrained_cfg(side: int = 224, **changes) -> dict:
    """A pretrained_cfg as timm writes it into config.json (convnext_tiny.fb_in1k's, at ``side``)."""
    return {"tag": "fb_in1k", "custom_load": False, "input_size": [3, side, side], "fixed_input_size": False,
            "interpolation": "bicubic", "crop_pct": 0.875, "crop_mode": "center", "mean": [0.485, 0.456, 0.406],
            "std": [0.229, 0.224, 0.225], "num_classes": 1000, "pool_size": [7, 7], **changes}


def _timm_file(folder: Path, network: torch.nn.Module, key, architecture: str | None = None,
               config: dict | None = None) -> Path:
    """``network``'s randomised weights saved in ``folder`` as timm's Hub folders hold them: model.safetensors
    under timm's names and shapes, and, with ``architecture``, timm's config.json beside it (``config``'s entries
    added)."""
    folder.mkdir(parents=True, exist_ok=True)
    state = _randomised(network)
    save_file({(new := key(name, set(state))): _as_timm_holds(new, v).contiguous() for name, v in state.items()},
              folder / "model.safetensors", metadata={"format": "pt"})
    if architecture is not None:
        written = {"architecture": architecture, "num_classes": 1000, "pretrained_cfg": _pretrained_cfg()}
        (folder / "config.json").write_text(json.dumps({**written, **(config or {})}))
    return folder / "model.safetensors"


@pytest.mark.parametrize("builder, key, written, family", [
    ("convnext_tiny", _convnext_key, CONVNEXT_TINY_WRITTEN, "ConvNeXt"),
    ("efficientnet_b0", _efficientnet_key, EFFICIENTNET_B0_WRITTEN, "EfficientNet"),
    ("mobilenet_v2", _mobilenetv2_key, MOBILENET_V2_WRITTEN, "MobileNetV2"),
    ("regnet_y_400mf", _regnet_key, REGNET_Y_400MF_WRITTEN, "RegNet"),
    ("vgg11", _vgg_key, VGG11_WRITTEN, "VGG"),
])
def test_every_tensor_of_a_timm_file_lands_where_it_left(tmp_path, builder, key, written, family):
    """timm's convnext_tiny, efficientnet_b0, regnety_004 or vgg11 model.safetensors goes into torchvision's network
    tensor by tensor: each named one into the parameter it must (a block's parts by their kind, a layer scale or
    a convolution head reshaped), every other one back where it came from, so the network answers as the one it
    was saved from; it was refused ("Missing key(s) in state_dict: features.0.0.weight ...")."""
    count, names = written
    theirs = getattr(torchvision.models, builder)().eval()
    path = _timm_file(tmp_path / builder, theirs, key)
    saved = load_file(path)
    assert len(saved) == count and set(names) <= set(saved)  # the layout timm's models hold
    ours = getattr(torchvision.models, builder)().eval()
    how = load_state_dict_into(ours, dict(saved), path, f"torchvision's {builder}", "its weights", builder)
    assert how == f"timm's {family} keys read under torchvision's {family} names"
    state = ours.state_dict()
    for timm, tv in names.items():
        assert torch.equal(state[tv], saved[timm]), (timm, tv)
    if builder in RESHAPED:
        timm, tv = RESHAPED[builder]
        assert state[tv].shape == theirs.state_dict()[tv].shape and torch.equal(state[tv].flatten(),
                                                                                 saved[timm].flatten())
    assert all(torch.equal(state[name], v) for name, v in theirs.state_dict().items())
    x = torch.randn(2, 3, 224, 224) if builder == "vgg11" else torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        assert torch.equal(ours(x), theirs(x))


def test_explore_feeds_a_timm_file_as_its_config_says(tmp_path):
    """`cnnlab explore imagenet-efficientnet_b0 --weights FOLDER/model.safetensors` of timm's efficientnet_b0
    fine-tuned to 3 classes (config.json's label_names) at 32 px: the head shaped as the file has it, the class
    names of its label_names, the input size, normalisation and framing of its pretrained_cfg (the shorter side
    resized to floor(32 / 0.875) = 36 with its bicubic filter, the centre 32 x 32 cropped, as timm's evaluation
    transform does with torchvision's Resize and CenterCrop), and the answers of the network the weights came
    from; the page says how the keys were read. The explorer fed it 224 px ImageNet normalisation on a padded
    picture, as it feeds torchvision's weights (once its keys were read at all). The flags come first."""
    theirs = torchvision.models.efficientnet_b0(num_classes=3).eval()
    config = {"num_classes": 3, "label_names": ["cat", "dog", "fox"],
              "pretrained_cfg": _pretrained_cfg(32, mean=[0.5, 0.4, 0.3], std=[0.2, 0.25, 0.3], num_classes=3)}
    path = _timm_file(tmp_path / "timm", theirs, _efficientnet_key, "efficientnet_b0", config)
    explored = open_model("imagenet-efficientnet_b0", Options(weights=path))
    assert explored.classes == ("cat", "dog", "fox")
    assert "timm's efficientnet_b0 (EfficientNet) keys read under torchvision's EfficientNet names" \
        in explored.notes[0] and "Class names: config.json beside it (timm's label_names)" in explored.notes[0]
    said = explored.spec.describe()
    assert explored.spec.hw == (32, 32) and "size from the config.json beside it (timm's pretrained_cfg)" in said
    assert "resized by the shorter side to 36 (bicubic) and centre-cropped to 32 as timm's pretrained_cfg says" \
        in said and "normalisation from the config.json beside it (timm's pretrained_cfg)" in said, said
    picture = Image.fromarray(np.random.default_rng(1).integers(0, 256, (45, 71, 3), dtype=np.uint8))
    picture.save(tmp_path / "photo.png")
    spec = explored.spec
    fed = decode_upload((tmp_path / "photo.png").read_bytes(), spec.channels, spec.read_hw, crop=spec.crop,
                        fit=spec.fit)
    timm_eval = transforms.Compose([transforms.Resize(36, transforms.InterpolationMode.BICUBIC),
                                    transforms.CenterCrop(32)])
    assert np.array_equal(fed.permute(1, 2, 0).numpy(), np.asarray(timm_eval(Image.open(tmp_path / "photo.png"))))
    mean, std = (torch.tensor(config["pretrained_cfg"][k]).view(3, 1, 1) for k in ("mean", "std"))
    with torch.no_grad():
        assert torch.allclose(explored.logits(fed[None]), theirs((fed[None].float() / 255 - mean) / std), atol=1e-4)
    flagged = open_model("imagenet-efficientnet_b0", Options(weights=path, input_size=40, mean=(0.1,), std=(0.2,)))
    assert flagged.spec.hw == (40, 40) and flagged.spec.mean == (0.1, 0.1, 0.1) and flagged.spec.fit == "pad"


def test_a_crop_pct_near_zero_is_a_framing_not_understood_not_a_crash(tmp_path, capsys):
    """A timm pretrained_cfg (or a ConvNeXt preprocessor_config.json) whose crop_pct is a slip near 0 (1e-9) asked
    for the shorter side resized to 64e9 px, and `predict` ended in an internal error (Pillow's OverflowError): such
    a framing is not understood here: none is read from the file, whose other words (the input size) still are."""
    config = {"pretrained_cfg": _pretrained_cfg(64, crop_pct=1e-9)}
    path = _timm_file(tmp_path / "timm", torchvision.models.resnet18().eval(), lambda name, names: name, "resnet18",
                      config)
    Image.fromarray(np.zeros((40, 50, 3), dtype=np.uint8)).save(tmp_path / "photo.png")
    assert main(["predict", "imagenet-resnet18", "--weights", str(path), str(tmp_path / "photo.png")]) == 0
    assert "photo.png: " in capsys.readouterr().out
    carried = timm_carried(path)  # no framing read, said so; the size read
    assert carried.fit == "pad" and carried.fit_from.endswith("whose crop_pct 1e-09 is not framed here") and \
        carried.size == (64, 64)
    (tmp_path / "timm" / "preprocessor_config.json").write_text(json.dumps(
        {"size": {"shortest_edge": 224}, "crop_pct": 1e-9, "resample": 3, "image_mean": [0.5] * 3,
         "image_std": [0.5] * 3}))
    assert not hugging_face_carried(path).fit_from and hugging_face_carried(path).size == (224, 224)


def test_a_timm_resnet_with_torchvisions_names_still_loads_fed_as_its_config_says(tmp_path):
    """timm's resnet18 keeps torchvision's key names: its file loads as before (no renaming said), and the
    pretrained_cfg of the config.json beside it now sets the input size, normalisation and framing (timm's
    resnet18.a1_in1k: crop_pct 0.95, bicubic), where the explorer had fed it 224 px and ImageNet's normalisation on
    a padded picture."""
    theirs = torchvision.models.resnet18().eval()
    config = {"pretrained_cfg": _pretrained_cfg(48, crop_pct=0.95, mean=[0.5, 0.5, 0.5], std=[0.5, 0.5, 0.5])}
    path = _timm_file(tmp_path / "timm", theirs, lambda name, names: name, "resnet18", config)
    explored = open_model("imagenet-resnet18", Options(weights=path))
    assert "keys read" not in explored.notes[0] and "with the weights of" in explored.notes[0]
    assert explored.spec.hw == (48, 48) and explored.spec.mean == (0.5, 0.5, 0.5)
    assert "resized by the shorter side to 50 (bicubic)" in explored.spec.describe()  # floor(48 / 0.95)
    images = torch.randint(0, 256, (2, 3, 48, 48), dtype=torch.uint8)
    with torch.no_grad():
        assert torch.allclose(explored.logits(images), theirs((images.float() / 255 - 0.5) / 0.5), atol=1e-4)


def test_init_from_a_timm_file_keeps_its_body_and_starts_a_fresh_head(tmp_path):
    """`train imagenet-convnext_tiny --init-from model.safetensors` of timm's convnext_tiny.fb_in1k layout: the body
    comes along under torchvision's names, the 1,000-class head gives way to the run's classes."""
    theirs = torchvision.models.convnext_tiny().eval()
    path = _timm_file(tmp_path / "timm", theirs, _convnext_key, "convnext_tiny")
    model = create_model("imagenet-convnext_tiny", num_classes=4, in_channels=3)
    done = init_from(model, path, classes=["a", "b", "c", "d"], channels=3, network="convnext_tiny")
    assert "timm's convnext_tiny (ConvNeXt) keys read under torchvision's ConvNeXt names" in done.line
    assert done.line.endswith("new: classifier.2.weight, classifier.2.bias")
    state, saved = model.state_dict(), theirs.state_dict()
    assert all(torch.equal(state[k], v) for k, v in saved.items() if not k.startswith("classifier.2."))


@pytest.mark.parametrize("name, builder, key, architecture, instead", [
    # the keys of efficientnet_b0, but TensorFlow's padding and epsilon: it loaded silently
    ("imagenet-efficientnet_b0", "efficientnet_b0", _efficientnet_key, "tf_efficientnet_b0",
     "timm's efficientnet_b0"),
    # an anti-aliased ResNet of torchvision's key names: it loaded silently
    ("imagenet-resnet50", "resnet50", lambda name, names: name, "resnetaa50", "timm's resnet50"),
    ("imagenet-convnext_small", "convnext_tiny", _convnext_key, "convnext_tiny", "timm's convnext_small"),
    # the architecture asked for, built otherwise: a dilated ResNet-50, and one that max-pools
    ("imagenet-resnet50", "resnet50", lambda name, names: name, "resnet50",
     "timm's resnet50 as timm builds it by default"),
    ("imagenet-resnet18", "resnet18", lambda name, names: name, "resnet18",
     "timm's resnet18 as timm builds it by default"),
    ("imagenet-mobilenet_v3_large", "mobilenet_v3_large", lambda name, names: name, "mobilenetv3_large_100",
     "torchvision's own weights (timm's MobileNetV3s normalise with a batch-norm epsilon of 1e-5, torchvision's "
     "with 1e-3"),
    # a MobileNetV2 of another width: the keys of mobilenetv2_100, other shapes
    ("imagenet-mobilenet_v2", "mobilenet_v2", _mobilenetv2_key, "mobilenetv2_140", "timm's mobilenetv2_100"),
    # refused before any fit, whatever the keys: it was refused saying timm had no such network
    ("imagenet-efficientnet_v2_s", "mobilenet_v2", _mobilenetv2_key, "tf_efficientnetv2_s",
     "torchvision's own weights (timm's tf_efficientnetv2_s pads as TensorFlow does, its efficientnetv2_s normalises "
     "with a batch-norm epsilon of 1e-5 (torchvision's 1e-3) and its efficientnetv2_rw_s has other stages"),
])
def test_a_timm_file_of_another_architecture_is_refused_in_one_line(tmp_path, capsys, name, builder, key,
                                                                     architecture, instead):
    """A file whose timm config.json names another architecture than the network asked for, or that one built with
    arguments that make another network (a ResNet dilated by output_stride, max-pooled), is refused in one line,
    exit code 2, by predict (explore's reading of a model) and by --init-from, whatever its keys: timm's
    tf_efficientnet_b0 and resnetaa50 have efficientnet_b0's and resnet50's (torchvision's) keys, and so do the
    ResNets built otherwise, and they were loaded into the wrong network."""
    built = {"imagenet-resnet50": {"model_args": {"num_classes": 1000, "output_stride": 16, "drop_rate": 0.1}},
             "imagenet-resnet18": {"global_pool": "max"}}.get(name) if architecture == builder else None
    path = _timm_file(tmp_path / "timm", getattr(torchvision.models, builder)(), key, architecture, built)
    Image.fromarray(np.zeros((40, 40, 3), dtype=np.uint8)).save(tmp_path / "photo.png")
    assert main(["predict", name, "--weights", str(path), str(tmp_path / "photo.png")]) == 2
    err = capsys.readouterr().err
    network = imagenet.BACKBONES[name].builder
    otherwise = {"imagenet-resnet50": " built with model_args output_stride=16",
                 "imagenet-resnet18": " built with global_pool 'max' (torchvision's networks average)"}.get(name, "") \
        if built else ""
    says = f"holds timm's {architecture} weights{otherwise}, as config.json beside it says, another network than " \
        f"torchvision's {network}; expected {instead}"
    assert len(err.strip().splitlines()) == 1 and says in err, err
    with pytest.raises(CnnlabError, match=re.escape(says)):
        init_from(create_model(name, num_classes=4, in_channels=3), path, channels=3, network=network)


def test_a_timm_model_saved_inside_a_wrapper_is_read_under_its_prefix(tmp_path):
    """timm's efficientnet_b0 fine-tuned inside a Lightning module (``self.model = timm.create_model(...)``) is saved
    under ``model.`` beside the module's other tensors: `explore --weights` reads it as a prefixed torchvision file
    is read, its keys under torchvision's names."""
    theirs = torchvision.models.efficientnet_b0(num_classes=3).eval()
    saved = load_file(_timm_file(tmp_path / "timm", theirs, _efficientnet_key))
    save_file({**{f"model.{k}": v for k, v in saved.items()}, "loss.weight": torch.ones(3)},
              tmp_path / "wrapped.safetensors")
    explored = open_model("imagenet-efficientnet_b0", Options(input_size=32, weights=tmp_path / "wrapped.safetensors"))
    assert "keys read under torchvision's EfficientNet names, its keys under 'model.' without that prefix, leaving " \
        "out 1 other tensor(s)" in explored.notes[0]
    images = torch.randint(0, 256, (2, 3, 32, 32), dtype=torch.uint8)
    mean, std = (torch.tensor(v).view(3, 1, 1) for v in imagenet.pretrained_normalize("imagenet-efficientnet_b0", 3))
    with torch.no_grad():
        assert torch.allclose(explored.logits(images), theirs((images.float() / 255 - mean) / std), atol=1e-4)


def test_a_run_of_an_imagenet_backbone_refuses_a_timm_file_of_another_architecture(tmp_path):
    """`train imagenet-resnet50 --init-from model.safetensors` of timm's resnetaa50 (an anti-aliased ResNet-50 with
    torchvision's key names, as its config.json says): the run names the backbone's network to the read, which
    refuses it before any training; it started from the wrong network's weights."""
    path = _timm_file(tmp_path / "timm", torchvision.models.resnet50(), lambda name, names: name, "resnetaa50")
    config = make_config("imagenet-resnet50", "finetune", init_from=str(path), epochs=1, batch_size=4, resize=32,
                         limit_train_batches=1)
    with pytest.raises(CnnlabError, match="holds timm's resnetaa50 weights, as config.json beside it says, another "
                                          "network than torchvision's resnet50; expected timm's resnet50"):
        build_run(config, dataset=noise_dataset(torch.arange(12) % 3, "abc", 3, 32, test=3), quiet=True)


def test_a_timm_mobilenetv3_file_without_config_is_refused_naming_why(tmp_path, capsys):
    """timm's mobilenetv3_large_100 keys (a few written out as timm holds them, with their shapes) without a
    config.json: its keys tell it, and the line says why it is not read into torchvision's mobilenet_v3_large (the
    batch-norm epsilon) where it said only "Missing key(s) in state_dict: features.0.0.weight ...". Into another
    network (Inception v3) it does not fit, said so, without the MobileNetV3s' reason or Inception v3's own against
    timm's inception_v3 file, which it is not."""
    shapes = {"conv_stem.weight": (16, 3, 3, 3), "bn1.weight": (16,), "blocks.0.0.conv_dw.weight": (16, 1, 3, 3),
              "blocks.6.0.conv.weight": (960, 160, 1, 1), "conv_head.weight": (1280, 960, 1, 1),
              "conv_head.bias": (1280,), "classifier.weight": (1000, 1280), "classifier.bias": (1000,)}
    save_file({k: torch.zeros(v) for k, v in shapes.items()}, tmp_path / "model.safetensors")
    Image.fromarray(np.zeros((40, 40, 3), dtype=np.uint8)).save(tmp_path / "photo.png")
    args = ["predict", "imagenet-mobilenet_v3_large", "--weights", str(tmp_path / "model.safetensors"),
            str(tmp_path / "photo.png")]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "holds timm's MobileNetV3 weights (its keys conv_stem, blocks, " \
        "conv_head with a bias), another network than torchvision's mobilenet_v3_large (timm's MobileNetV3s " \
        "normalise with a batch-norm epsilon of 1e-5, torchvision's with 1e-3" in err, err
    # into Inception v3 it is a file that does not fit, not timm's inception_v3: it was refused for that one's reason
    Image.fromarray(np.zeros((80, 80, 3), dtype=np.uint8)).save(tmp_path / "photo.png")
    assert main(["predict", "imagenet-inception_v3", *args[2:]]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "does not fit torchvision's inception_v3: Missing key(s)" in err \
        and "MobileNetV3" not in err and "pixel - 0.5" not in err, err


@pytest.mark.parametrize("builder, key", [("efficientnet_b1", _efficientnet_key),
                                          ("wide_resnet50_2", lambda name, names: name)])
def test_a_timm_file_of_a_backbone_of_timms_own_architecture_starts_a_run(tmp_path, builder, key):
    """timm's efficientnet_b1 and wide_resnet50_2 are torchvision's networks (logits equal for the same tensors: a
    scratch check against timm 1.0.31, by timm's keys for the first, torchvision's for the second), so a file of
    either whose config.json names it starts a run of imagenet-NAME: it was refused as another network."""
    theirs = getattr(torchvision.models, builder)().eval()
    path = _timm_file(tmp_path / builder, theirs, key, builder)
    model = create_model(f"imagenet-{builder}", num_classes=4, in_channels=3)
    init_from(model, path, classes=["a", "b", "c", "d"], channels=3, network=builder)
    state = model.state_dict()
    head = next(name for name, m in model.named_modules() if m is last_layer(model)) + "."
    assert all(torch.equal(state[k], v) for k, v in theirs.state_dict().items() if not k.startswith(head))


def test_a_timm_mobilenetv2_100_file_is_torchvisions_mobilenet_v2(tmp_path):
    """timm's mobilenetv2_100 is torchvision's mobilenet_v2 (ReLU6, a batch-norm epsilon of 1e-5, symmetric padding,
    the 1280-channel head: logits equal for the same tensors, a scratch check against timm 1.0.31), under its
    EfficientNet's names without a squeeze-and-excitation: a file whose config.json names it is explored with the
    answers of the network it came from and starts a run of imagenet-mobilenet_v2, where it was refused as another
    network (and, without a config.json, read under EfficientNet's names, which do not fit)."""
    theirs = torchvision.models.mobilenet_v2(num_classes=3).eval()
    path = _timm_file(tmp_path / "timm", theirs, _mobilenetv2_key, "mobilenetv2_100")
    explored = open_model("imagenet-mobilenet_v2", Options(weights=path, input_size=40))
    assert "timm's mobilenetv2_100 (MobileNetV2) keys read under torchvision's MobileNetV2 names" in explored.notes[0]
    images = torch.randint(0, 256, (2, 3, 40, 40), dtype=torch.uint8)
    mean, std = (torch.tensor(v).view(3, 1, 1) for v in imagenet.pretrained_normalize("imagenet-mobilenet_v2", 3))
    with torch.no_grad():
        assert torch.allclose(explored.logits(images), theirs((images.float() / 255 - mean) / std), atol=1e-4)
    model = create_model("imagenet-mobilenet_v2", num_classes=4, in_channels=3)
    done = init_from(model, path, classes=["a", "b", "c", "d"], channels=3, network="mobilenet_v2")
    assert done.line.endswith("new: classifier.1.weight, classifier.1.bias")
    state = model.state_dict()
    assert all(torch.equal(state[k], v) for k, v in theirs.state_dict().items() if not k.startswith("classifier.1."))


def test_a_timm_inception_v3_file_is_refused_saying_why(tmp_path, capsys):
    """timm's inception_v3 has torchvision's keys and logits, but its pretrained_cfg feeds it (pixel - 0.5) / 0.5,
    which cnnlab's Inception v3 makes itself from an ImageNet-normalised input: the refusal says so, where it said
    timm had no network of that architecture."""
    network = torchvision.models.inception_v3(aux_logits=False, init_weights=False)
    path = _timm_file(tmp_path / "timm", network, lambda name, names: name, "inception_v3")
    Image.fromarray(np.zeros((80, 80, 3), dtype=np.uint8)).save(tmp_path / "photo.png")
    assert main(["predict", "imagenet-inception_v3", "--weights", str(path), str(tmp_path / "photo.png")]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "timm's inception_v3 is fed (pixel - 0.5) / 0.5 as its " \
        "pretrained_cfg says, which cnnlab's Inception v3 makes itself from ImageNet's normalisation" in err, err


@pytest.mark.parametrize("builder, key, timms_head, head", [
    ("convnext_tiny", _convnext_key, "head.fc.", ("classifier.2.weight", "classifier.2.bias")),
    ("efficientnet_b0", _efficientnet_key, "classifier.", ("classifier.1.weight", "classifier.1.bias")),
])
def test_a_timm_body_saved_without_its_classifier_starts_a_run_and_is_refused_by_explore(tmp_path, capsys, builder,
                                                                                         key, timms_head, head):
    """timm's network saved with num_classes=0 (or after reset_classifier(0): no head.fc / classifier): `train
    imagenet-NAME --init-from` keeps its body bit for bit and starts the head fresh, saying so; `explore --weights`
    refuses it in one line naming the missing head and the way in. Both took it for no timm file and said "tensors
    besides the output layer differ" or listed every missing key."""
    theirs = getattr(torchvision.models, builder)().eval()
    path = _timm_file(tmp_path / "timm", theirs, key, builder, {"num_classes": 0})
    save_file({k: v for k, v in load_file(path).items() if not k.startswith(timms_head)}, path)
    model = create_model(f"imagenet-{builder}", num_classes=4, in_channels=3)
    fresh = {k: v.clone() for k, v in model.state_dict().items() if k in head}
    done = init_from(model, path, classes=["a", "b", "c", "d"], channels=3, network=builder)
    family = "ConvNeXt" if builder.startswith("convnext") else "EfficientNet"
    assert f"timm's {builder} ({family}) keys, no classifier among them, read under torchvision's {family} names" \
        in done.line and done.line.endswith(f"new: {', '.join(head)}"), done.line
    state = model.state_dict()
    assert all(torch.equal(state[k], v) for k, v in theirs.state_dict().items() if k not in head)
    assert all(torch.equal(state[k], v) for k, v in fresh.items())
    assert main(["explore", f"imagenet-{builder}", "--weights", str(path)]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and f"holds torchvision's {builder} without its classifier (no " \
        f"{', '.join(head)})" in err and \
        f"cnnlab train imagenet-{builder} --dataset folder:PHOTOS --init-from {path}" in err, err


def test_a_timm_mobilenetv3_body_saved_without_its_classifier_is_refused_naming_why(tmp_path):
    """timm's MobileNetV3 saved with num_classes=0 (no classifier keys) is still told by its keys, and refused for
    torchvision's MobileNetV3 with the batch-norm epsilon's reason; it was read as no timm file at all."""
    shapes = {"conv_stem.weight": (16, 3, 3, 3), "bn1.weight": (16,), "blocks.0.0.conv_dw.weight": (16, 1, 3, 3),
              "conv_head.weight": (1280, 960, 1, 1), "conv_head.bias": (1280,)}
    save_file({k: torch.zeros(v) for k, v in shapes.items()}, tmp_path / "model.safetensors")
    with pytest.raises(CnnlabError, match=r"holds timm's MobileNetV3 weights \(its keys conv_stem, blocks, conv_head "
                                          r"with a bias\), another network than torchvision's mobilenet_v3_large"):
        init_from(create_model("imagenet-mobilenet_v3_large", num_classes=3, in_channels=3),
                  tmp_path / "model.safetensors", channels=3, network="mobilenet_v3_large")


def test_a_timm_efficientnet_file_missing_a_blocks_tensor_is_refused_in_one_line(tmp_path, capsys):
    """timm's efficientnet_b0 with one block's expanding convolution missing (blocks.1.0.conv_pw: a file cut short, or
    another kind of block beside its batch norm): explore refuses it in one line saying what does not fit; naming the
    block's bn1, of no place among the parts it has, raised StopIteration ("internal error", exit code 1)."""
    path = _timm_file(tmp_path / "timm", torchvision.models.efficientnet_b0(), _efficientnet_key)
    save_file({k: v for k, v in load_file(path).items() if k != "blocks.1.0.conv_pw.weight"}, path)
    assert main(["explore", "imagenet-efficientnet_b0", "--weights", str(path)]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "(timm's EfficientNet keys read under torchvision's EfficientNet " \
        "names) does not fit torchvision's efficientnet_b0: Missing key(s) in state_dict" in err, err


# The keys of timm's EfficientNetV2-S (efficientnetv2_s, tf_efficientnetv2_s; timm/models/efficientnet.py): a first
# stage of plain convolutions (ConvBnAct: conv, bn1), edge residuals (conv_exp, bn1, conv_pwl, bn2), then inverted
# residuals with a squeeze-and-excitation; the shapes are its first ones, those further on of the same form
EFFICIENTNETV2_S_KEYS = {"conv_stem.weight": (24, 3, 3, 3), "bn1.weight": (24,), "bn1.bias": (24,),
                         "blocks.0.0.conv.weight": (24, 24, 3, 3), "blocks.0.0.bn1.weight": (24,),
                         "blocks.1.0.conv_exp.weight": (96, 24, 3, 3), "blocks.1.0.bn1.weight": (96,),
                         "blocks.1.0.conv_pwl.weight": (48, 96, 1, 1), "blocks.1.0.bn2.weight": (48,),
                         "blocks.3.0.conv_pw.weight": (256, 64, 1, 1),
                         "blocks.3.0.se.conv_reduce.weight": (16, 256, 1, 1),
                         "conv_head.weight": (1280, 256, 1, 1), "bn2.weight": (1280,), "bn2.bias": (1280,),
                         "classifier.weight": (1000, 1280), "classifier.bias": (1000,)}


def test_a_timm_efficientnetv2_file_without_its_config_is_told_by_its_keys(tmp_path, capsys):
    """timm's EfficientNetV2-S model.safetensors alone (no config.json beside it) is told by its keys: explore of
    imagenet-efficientnet_v2_s refuses it in one line with the reason timm has no such torchvision network, and into
    MobileNetV2 it is not read as timm's MobileNetV2. Its first block has no squeeze-and-excitation, so it was read
    under MobileNetV2's names ("timm's MobileNetV2 keys read under torchvision's MobileNetV2 names") and refused as a
    file missing torchvision's keys."""
    path = tmp_path / "model.safetensors"
    save_file({k: torch.zeros(v) for k, v in EFFICIENTNETV2_S_KEYS.items()}, path)
    assert main(["explore", "imagenet-efficientnet_v2_s", "--weights", str(path)]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and f"{path} holds timm's EfficientNetV2 weights (its keys conv_stem, " \
        "a first block of plain convolutions, conv_head), another network than torchvision's efficientnet_v2_s " \
        "(timm's tf_efficientnetv2_s pads as TensorFlow does" in err, err
    with pytest.raises(CnnlabError) as refused:
        init_from(create_model("imagenet-mobilenet_v2", num_classes=3, in_channels=3), path, channels=3,
                  network="mobilenet_v2")
    assert "MobileNetV2 keys" not in str(refused.value), refused.value


@pytest.mark.parametrize("wrapper", ["module.", "model."])
def test_a_timm_file_told_by_its_keys_is_told_so_under_a_wrappers_names(wrapper, tmp_path, capsys):
    """timm's EfficientNetV2-S and MobileNetV3 files saved under a wrapper's names (DataParallel's ``module.``, a
    Lightning module's ``model.``) are told by their keys as the bare files are, and refused with the reason timm has
    no such torchvision network; they were refused as not fitting the network, the reason unsaid."""
    path = tmp_path / "v2.safetensors"
    save_file({wrapper + k: torch.zeros(v) for k, v in EFFICIENTNETV2_S_KEYS.items()}, path)
    assert main(["explore", "imagenet-efficientnet_v2_s", "--weights", str(path)]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and f"{path} holds timm's EfficientNetV2 weights (its keys conv_stem, " \
        "a first block of plain convolutions, conv_head), another network than torchvision's efficientnet_v2_s" \
        in err, err
    shapes = {"conv_stem.weight": (16, 3, 3, 3), "bn1.weight": (16,), "blocks.0.0.conv_dw.weight": (16, 1, 3, 3),
              "conv_head.weight": (1280, 960, 1, 1), "conv_head.bias": (1280,)}
    save_file({wrapper + k: torch.zeros(v) for k, v in shapes.items()}, tmp_path / "v3.safetensors")
    with pytest.raises(CnnlabError, match=r"holds timm's MobileNetV3 weights \(its keys conv_stem, blocks, conv_head "
                                          r"with a bias\), another network than torchvision's mobilenet_v3_large"):
        init_from(create_model("imagenet-mobilenet_v3_large", num_classes=3, in_channels=3),
                  tmp_path / "v3.safetensors", channels=3, network="mobilenet_v3_large")


def test_a_squash_crop_mode_is_framed_as_timm_frames_it(tmp_path):
    """timm's 384 px ConvNeXts fine-tuned from ImageNet-22k (convnext_tiny.fb_in22k_ft_in1k_384) say crop_mode
    `squash`: timm's evaluation transform resizes both sides to floor(side / crop_pct) (torchvision's Resize of a
    height and width) and crops the centre. The explorer frames pictures so, pixel for pixel with torchvision's
    Resize and CenterCrop, and says so; at 224 px it framed them as torchvision's weights' transforms do (the
    shorter side to 256), saying that, and at any other size padded them without a word."""
    config = {"pretrained_cfg": _pretrained_cfg(32, crop_pct=0.9, crop_mode="squash")}
    path = _timm_file(tmp_path / "timm", torchvision.models.resnet18().eval(), lambda name, names: name, "resnet18",
                      config)
    spec = open_model("imagenet-resnet18", Options(weights=path)).spec
    said = spec.describe()
    assert spec.hw == (32, 32) and "pictures resized to 35 x 35 (bicubic), its shape not kept, and centre-cropped " \
        "to 32 as timm's pretrained_cfg says" in said and "squash from the config.json beside it" in said, said
    Image.fromarray(np.random.default_rng(2).integers(0, 256, (45, 71, 3), dtype=np.uint8)).save(tmp_path / "a.png")
    fed = decode_upload((tmp_path / "a.png").read_bytes(), spec.channels, spec.read_hw, crop=spec.crop, fit=spec.fit)
    timm_eval = transforms.Compose([transforms.Resize((35, 35), transforms.InterpolationMode.BICUBIC),
                                    transforms.CenterCrop(32)])
    assert np.array_equal(fed.permute(1, 2, 0).numpy(), np.asarray(timm_eval(Image.open(tmp_path / "a.png"))))


@pytest.mark.parametrize("changes, unread", [
    ({"crop_mode": "border"}, "crop_mode 'border'"),
    ({"interpolation": "random"}, "interpolation 'random'"),
])
def test_a_timm_framing_not_made_here_pads_at_its_input_size_and_says_so(tmp_path, changes, unread):
    """A pretrained_cfg whose framing is not made here (timm's `border` crop mode, the longer side resized to fit
    and padded with the mean's colour; an interpolation Pillow has not) keeps its input size, and pictures are padded
    as any model's, the page saying why: at 224 px they were framed as torchvision's weights' transforms() frame
    theirs (the shorter side to 256, bilinear), which the file does not say, and the page said that instead."""
    config = {"pretrained_cfg": _pretrained_cfg(224, crop_pct=1.0, **changes)}
    path = _timm_file(tmp_path / "timm", torchvision.models.resnet18().eval(), lambda name, names: name, "resnet18",
                      config)
    spec = open_model("imagenet-resnet18", Options(weights=path)).spec
    said = spec.describe()
    assert spec.hw == (224, 224) and spec.fit == "pad" and "weights' transforms" not in said, said
    assert f"padding from the config.json beside it (timm's pretrained_cfg), whose {unread} is not framed here" \
        in said, said


# Networks of timm's EfficientNet/MobileNet family that cnnlab reads into none (timm/models/efficientnet.py's
# _gen_efficientnet_lite, _gen_mnasnet_b1, _gen_mnasnet_a1): each stage's block kind, repeats, depthwise kernel,
# expansion, output channels and squeeze-and-excitation. Each has a depthwise-separable first block without a
# squeeze-and-excitation, as timm's MobileNetV2 has, and some 5 x 5 depthwise kernels, which it has not
OTHER_EFFICIENTNET_FAMILY = {
    "efficientnet_lite0": (("ds", 1, 3, 1, 16, False), ("ir", 2, 3, 6, 24, False), ("ir", 2, 5, 6, 40, False),
                           ("ir", 3, 3, 6, 80, False), ("ir", 3, 5, 6, 112, False), ("ir", 4, 5, 6, 192, False),
                           ("ir", 1, 3, 6, 320, False)),
    "mnasnet_100": (("ds", 1, 3, 1, 16, False), ("ir", 3, 3, 3, 24, False), ("ir", 3, 5, 3, 40, False),
                    ("ir", 3, 5, 6, 80, False), ("ir", 2, 3, 6, 96, False), ("ir", 4, 5, 6, 192, False),
                    ("ir", 1, 3, 6, 320, False)),
    "semnasnet_100": (("ds", 1, 3, 1, 16, False), ("ir", 2, 3, 6, 24, False), ("ir", 3, 5, 3, 40, True),
                      ("ir", 4, 3, 6, 80, False), ("ir", 2, 3, 6, 112, True), ("ir", 3, 5, 6, 160, True),
                      ("ir", 1, 3, 6, 320, False)),
}


def _efficientnet_family_keys(stages: tuple) -> dict[str, tuple[int, ...]]:
    """The tensor shapes of timm's EfficientNet-family network of ``stages`` (a 32-channel stem, a 1280-channel
    head), named as timm's EfficientNet builder names them: a depthwise-separable block's conv_dw/bn1, se,
    conv_pw/bn2, an inverted residual's conv_pw/bn1, conv_dw/bn2, se, conv_pwl/bn3, a squeeze-and-excitation's
    conv_reduce and conv_expand (to a quarter of the block's input channels)."""
    def bn(name: str, channels: int) -> dict[str, tuple[int, ...]]:
        return {f"{name}.{t}": (channels,) for t in ("weight", "bias", "running_mean", "running_var")}

    def se(where: str, channels: int, reduced: int) -> dict[str, tuple[int, ...]]:
        return {f"{where}.se.conv_reduce.weight": (reduced, channels, 1, 1),
                f"{where}.se.conv_reduce.bias": (reduced,),
                f"{where}.se.conv_expand.weight": (channels, reduced, 1, 1),
                f"{where}.se.conv_expand.bias": (channels,)}

    shapes, channels = {"conv_stem.weight": (32, 3, 3, 3), **bn("bn1", 32)}, 32
    for s, (kind, repeats, kernel, expansion, out, excites) in enumerate(stages):
        for b in range(repeats):
            where, mid = f"blocks.{s}.{b}", channels * expansion
            squeeze = se(where, mid, max(1, channels // 4)) if excites else {}
            if kind == "ds":
                shapes |= {f"{where}.conv_dw.weight": (channels, 1, kernel, kernel), **bn(f"{where}.bn1", channels),
                           **squeeze, f"{where}.conv_pw.weight": (out, channels, 1, 1), **bn(f"{where}.bn2", out)}
            else:
                shapes |= {f"{where}.conv_pw.weight": (mid, channels, 1, 1), **bn(f"{where}.bn1", mid),
                           f"{where}.conv_dw.weight": (mid, 1, kernel, kernel), **bn(f"{where}.bn2", mid), **squeeze,
                           f"{where}.conv_pwl.weight": (out, mid, 1, 1), **bn(f"{where}.bn3", out)}
            channels = out
    return shapes | {"conv_head.weight": (1280, channels, 1, 1), **bn("bn2", 1280), "classifier.weight": (1000, 1280),
                     "classifier.bias": (1000,)}


@pytest.mark.parametrize("architecture, network, unlike", [
    ("efficientnet_lite0", "mobilenet_v2", "a 5 x 5 depthwise convolution in blocks.2.0"),
    ("mnasnet_100", "efficientnet_b0", "a 5 x 5 depthwise convolution in blocks.2.0"),
    ("semnasnet_100", "mobilenet_v2", "a squeeze-and-excitation in blocks.2.0 and a 5 x 5 depthwise convolution in "
                                      "blocks.2.0"),
    ("efficientnet_lite0", "resnet18", "a 5 x 5 depthwise convolution in blocks.2.0"),
])
def test_a_timm_file_of_the_efficientnet_family_that_is_no_mobilenetv2_says_what_it_is_not(tmp_path, capsys,
                                                                                           architecture, network,
                                                                                           unlike):
    """timm's efficientnet_lite0, mnasnet_100 and semnasnet_100 alone (no config.json) have its MobileNetV2's keys
    (a first block without a squeeze-and-excitation) and are none of the networks cnnlab reads: explore refuses each,
    into any network, in one line saying what in its keys is unlike timm's MobileNetV2 and EfficientNets. They were
    read under MobileNetV2's names and refused naming the wrong family ("(timm's MobileNetV2 keys read under
    torchvision's MobileNetV2 names) does not fit ...: Missing key(s)")."""
    path = tmp_path / "model.safetensors"
    shapes = _efficientnet_family_keys(OTHER_EFFICIENTNET_FAMILY[architecture])
    save_file({k: torch.zeros(v) for k, v in shapes.items()}, path)
    assert main(["explore", f"imagenet-{network}", "--weights", str(path)]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and f"{path} holds keys of timm's EfficientNet/MobileNet family that " \
        f"are neither its MobileNetV2's ({unlike}, where those have none and 3 x 3 alone) nor its EfficientNets' (no " \
        "squeeze-and-excitation in the first block): no network cnnlab reads; expected timm's " \
        f"{'mobilenetv2_100' if network == 'mobilenet_v2' else network}" in err and "MobileNetV2 keys" not in err, err


def test_a_timm_mobilenetv2_file_under_a_wrappers_names_is_still_read(tmp_path):
    """The keys of timm's mobilenetv2_100 (no squeeze-and-excitation, 3 x 3 depthwise kernels alone) under a
    wrapper's names are still read as its MobileNetV2's: what tells another network is looked for past the
    wrapper's names, and finds nothing."""
    theirs = torchvision.models.mobilenet_v2(num_classes=3).eval()
    path = _timm_file(tmp_path / "timm", theirs, lambda name, names: "module." + _mobilenetv2_key(name, names))
    model = torchvision.models.mobilenet_v2(num_classes=3).eval()
    how = load_state_dict_into(model, load_file(path), path, "torchvision's mobilenet_v2", "its weights",
                               "mobilenet_v2")
    assert how.startswith("timm's MobileNetV2 keys read under torchvision's MobileNetV2 names"), how
    assert all(torch.equal(model.state_dict()[k], v) for k, v in theirs.state_dict().items())


# The keys of timm's convnextv2_atto (timm/models/convnext.py: ConvNeXt with use_grn=True and no layer scale): each
# block's mlp has a global response normalisation (mlp.grn.weight, mlp.grn.bias) between fc1 and fc2, and no gamma
CONVNEXT_V2_ATTO = ((2, 40), (2, 80), (6, 160), (2, 320))


def _convnext_v2_keys(stages: tuple) -> dict[str, tuple[int, ...]]:
    """The tensor shapes of timm's ConvNeXt V2 of ``stages`` (each its blocks and channels), named as timm names
    them."""
    first = stages[0][1]
    shapes = {"stem.0.weight": (first, 3, 4, 4), "stem.0.bias": (first,), "stem.1.weight": (first,),
              "stem.1.bias": (first,)}
    for s, (blocks, channels) in enumerate(stages):
        if s:
            before = stages[s - 1][1]
            shapes |= {f"stages.{s}.downsample.0.weight": (before,), f"stages.{s}.downsample.0.bias": (before,),
                       f"stages.{s}.downsample.1.weight": (channels, before, 2, 2),
                       f"stages.{s}.downsample.1.bias": (channels,)}
        for b in range(blocks):
            where = f"stages.{s}.blocks.{b}"
            shapes |= {f"{where}.conv_dw.weight": (channels, 1, 7, 7), f"{where}.conv_dw.bias": (channels,),
                       f"{where}.norm.weight": (channels,), f"{where}.norm.bias": (channels,),
                       f"{where}.mlp.fc1.weight": (4 * channels, channels), f"{where}.mlp.fc1.bias": (4 * channels,),
                       f"{where}.mlp.grn.weight": (4 * channels,), f"{where}.mlp.grn.bias": (4 * channels,),
                       f"{where}.mlp.fc2.weight": (channels, 4 * channels), f"{where}.mlp.fc2.bias": (channels,)}
    last = stages[-1][1]
    return shapes | {"head.norm.weight": (last,), "head.norm.bias": (last,), "head.fc.weight": (1000, last),
                     "head.fc.bias": (1000,)}


@pytest.mark.parametrize("wrapper", ["", "model."])
def test_a_timm_convnext_v2_file_is_named_by_its_global_response_normalisation(tmp_path, capsys, wrapper):
    """timm's convnextv2_atto alone (no config.json), bare or under a wrapper's names, has its ConvNeXt's stem and
    blocks and a global response normalisation in each block (mlp.grn), which torchvision's ConvNeXt has not: explore
    of imagenet-convnext_tiny refuses it in one line naming it ConvNeXt V2 and why. It was read under ConvNeXt's
    names and refused as "(timm's ConvNeXt keys read under torchvision's ConvNeXt names) does not fit"."""
    path = tmp_path / "model.safetensors"
    save_file({wrapper + k: torch.zeros(v) for k, v in _convnext_v2_keys(CONVNEXT_V2_ATTO).items()}, path)
    assert main(["explore", "imagenet-convnext_tiny", "--weights", str(path)]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and f"{path} holds timm's ConvNeXt V2 weights (its blocks' mlp.grn: a " \
        "global response normalisation, which torchvision's ConvNeXt has not): no network cnnlab reads; expected " \
        "timm's convnext_tiny or torchvision's own weights" in err and "ConvNeXt keys" not in err, err
