"""Weight initialisation the book's recipes use."""

from torch import nn

from cnnlab import layers

# These types exactly, as d2l's init_cnn tests ``type(module) == nn.Linear``: a subclass (a weight-standardised
# conv, say) keeps its own initialisation, and a user's own class named Linear is not a torch layer. cnnlab's
# from-scratch Conv2d (not a subclass of nn.Conv2d) stands in for torch's in the --ops scratch models.
XAVIER_TYPES = (nn.Conv2d, nn.Linear, layers.Conv2d)


def init_cnn(module: nn.Module) -> None:
    """Xavier-uniform init of conv and linear weights, as d2l's ``init_cnn`` (d2l 7.6): modules of exactly the
    :data:`XAVIER_TYPES`."""
    if type(module) in XAVIER_TYPES:
        nn.init.xavier_uniform_(module.weight)
