"""The chapter 7-8 model zoo. Importing this package registers every model family."""

from cnnlab.models.registry import (
    ModelInfo,
    check_input_size,
    create_model,
    list_models,
    min_input_size,
    model_info,
    register_model,
)

# Each import registers its family's builders (the order is the order `cnnlab models` lists them in).
from cnnlab.models import lenet  # noqa: E402,F401  isort: skip

__all__ = [
    "ModelInfo",
    "check_input_size",
    "create_model",
    "list_models",
    "min_input_size",
    "model_info",
    "register_model",
]
