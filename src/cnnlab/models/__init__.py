"""The chapter 7-8 model zoo. Importing this package registers every model family."""

from cnnlab.models.registry import (
    ModelInfo,
    check_input_size,
    check_pretrained,
    create_model,
    list_models,
    min_input_size,
    model_info,
    register_model,
)

# Each import registers its family's builders (the order is the order `cnnlab models` lists them in).
from cnnlab.models import lenet  # noqa: E402,F401  isort: skip
from cnnlab.models import alexnet, vgg, nin, googlenet, resnet, densenet, regnet  # noqa: E402,F401  isort: skip
from cnnlab.models import compact  # noqa: E402,F401  isort: skip
from cnnlab.models import variants  # noqa: E402,F401  isort: skip  the exercise variants, after the zoo they reshape
from cnnlab.models import imagenet  # noqa: E402,F401  isort: skip  torchvision's ImageNet backbones (not the zoo)
from cnnlab.models.compact import CompactNet  # noqa: E402
from cnnlab.models.densenet import DenseBlock, conv_block, transition_block  # noqa: E402
from cnnlab.models.googlenet import Inception  # noqa: E402
from cnnlab.models.nin import nin_block  # noqa: E402
from cnnlab.models.regnet import AnyNet  # noqa: E402
from cnnlab.models.resnet import Residual, ResNeXtBlock  # noqa: E402
from cnnlab.models.vgg import vgg_block  # noqa: E402

__all__ = [
    "AnyNet",
    "CompactNet",
    "DenseBlock",
    "Inception",
    "ResNeXtBlock",
    "Residual",
    "conv_block",
    "nin_block",
    "transition_block",
    "vgg_block",
    "ModelInfo",
    "check_input_size",
    "check_pretrained",
    "create_model",
    "list_models",
    "min_input_size",
    "model_info",
    "register_model",
]
