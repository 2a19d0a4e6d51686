"""The chapter 7 primitives, twice: the book's loops and fast vectorised ops judged against PyTorch.

``reference`` holds d2l's corr2d / corr2d_multi_in / corr2d_multi_in_out / corr2d_multi_in_out_1x1 / pool2d,
written as the book writes them. ``conv2d``, ``max_pool2d``, ``avg_pool2d`` and ``batch_norm`` take
torch.nn.functional's arguments and return its results (forward and gradients), without a Python loop over
pixels. Bad arguments raise :class:`cnnlab.errors.CnnlabError` with one 'expected ..., got ...' line.
"""

from cnnlab.ops.conv import conv2d
from cnnlab.ops.norm import batch_norm
from cnnlab.ops.pool import avg_pool2d, max_pool2d
from cnnlab.ops.reference import corr2d, corr2d_multi_in, corr2d_multi_in_out, corr2d_multi_in_out_1x1, pool2d
from cnnlab.ops.shapes import conv_output_shape

__all__ = [
    "avg_pool2d",
    "batch_norm",
    "conv2d",
    "conv_output_shape",
    "corr2d",
    "corr2d_multi_in",
    "corr2d_multi_in_out",
    "corr2d_multi_in_out_1x1",
    "max_pool2d",
    "pool2d",
]
