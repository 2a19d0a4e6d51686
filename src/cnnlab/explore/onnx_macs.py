"""Multiply-accumulates of an ONNX node, from the shapes of its inputs and output.

The same formulas as torch's (:data:`torch.utils.flop_counter.flop_registry`, which
:class:`cnnlab.models.summary.MacCounter` counts with), so that a cnnlab model exported to ONNX has the MACs
``cnnlab summary`` gives the model itself: a convolution's output elements times the weights each one reads
(in channels / groups x kernel), a transposed convolution's input positions times its whole weight, a matrix product's
output elements times the length of the sum. Biases, pooling, normalisation and activations count zero, as in torch.
A quantized op counts as its float twin.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from math import prod
from typing import Any

# op -> (index of the data input, index of the weight input): convolutions, float and quantized; com.microsoft's
# FusedConv is a Conv with its activation
CONVS = {"Conv": (0, 1), "FusedConv": (0, 1), "ConvInteger": (0, 1), "QLinearConv": (0, 3)}
# Matrix products, float and quantized, whose first input is the first matrix (the second's shape is not needed: the
# output's says the rest); those with a transA attribute read that matrix transposed.
MATMULS = frozenset({"MatMul", "MatMulInteger", "QLinearMatMul", "FusedMatMul", "Gemm", "FusedGemm", "QGemm"})
# Ops that compute products torch counts but whose count is not worked out here: their MACs are unknown, not zero.
UNCOUNTED = frozenset({"Einsum", "LSTM", "GRU", "RNN", "Attention", "MultiHeadAttention", "GroupQueryAttention",
                       "DeformConv", "FusedMatMulActivation", "QAttention", "DynamicQuantizeMatMul", "MatMulNBits"})
DOMAINS = ("", "ai.onnx", "com.microsoft")


def _attribute(node, name: str, default: int) -> int:
    return next((int(a.i) for a in node.attribute if a.name == name), default)


def _known(dims: Sequence[Any] | None) -> bool:
    return dims is not None and len(dims) > 0 and all(isinstance(d, int) and d >= 0 for d in dims)


def node_macs(node, dims_of: Callable[[str], Sequence[Any] | None]) -> int | None:
    """The MACs of one run of ``node`` at the shapes ``dims_of`` gives its values (a graph value's name -> its dims,
    None where unknown), for the batch those shapes hold; None where a shape it needs is unknown (a symbolic dim) or
    its op's products are not counted here (:data:`UNCOUNTED`, and ops of other domains)."""
    op = node.op_type
    if node.domain not in DOMAINS or op in UNCOUNTED:
        return None
    if op not in CONVS and op not in MATMULS and op != "ConvTranspose":
        return 0
    inputs = list(node.input)
    out = dims_of(node.output[0]) if node.output else None
    if op == "ConvTranspose":
        x, w = dims_of(inputs[0]), dims_of(inputs[1])
        return x[0] * prod(x[2:]) * prod(w) if _known(x) and _known(w) else None
    if op in CONVS:
        w = dims_of(inputs[CONVS[op][1]])
        return prod(out) * prod(w[1:]) if _known(out) and _known(w) else None
    first = dims_of(inputs[0])
    if not (_known(out) and _known(first)):
        return None
    return prod(out) * (first[-2] if _attribute(node, "transA", 0) else first[-1])
