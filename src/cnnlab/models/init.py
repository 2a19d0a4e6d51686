"""Weight initialisation the book's recipes use."""

from torch import nn


def init_cnn(module: nn.Module) -> None:
    """Xavier-uniform init of conv and linear weights, as d2l's ``init_cnn`` (d2l 7.6).

    Matches cnnlab's scratch Conv2d too (it is not a subclass of nn.Conv2d), by the ``weight`` of any module
    whose class is named Conv2d or Linear.
    """
    if isinstance(module, (nn.Conv2d, nn.Linear)) or type(module).__name__ in ("Conv2d", "Linear"):
        nn.init.xavier_uniform_(module.weight)
