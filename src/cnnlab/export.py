"""Exporting a checkpoint for deployment (``cnnlab export CHECKPOINT --output FILE``).

The exported graph is ``nn.Sequential(preprocess, model)``: its input is float ``N x C x S x S`` in [0, 1] (an
image of the run's dataset, C channels at its stored side S, divided by 255) and the model's resize and
normalisation run inside it, so a consumer needs nothing but the file. The batch dimension is dynamic. Every
export is checked against PyTorch before it is moved into place; a mismatch leaves no file behind.

Formats:

* ``onnx``: through ``torch.onnx.export(dynamo=True)``, the ``torch.export``-based exporter that is the default
  since PyTorch 2.9; the TorchScript-based one (``dynamo=False``) emits a DeprecationWarning in torch 2.14 and is
  being removed. Verified with onnxruntime. Class names and the model name go into the ONNX metadata.
* ``pt2``: a ``torch.export`` ExportedProgram (``torch.export.save``), loadable with ``torch.export.load`` and no
  cnnlab. This replaces TorchScript, which torch 2.14 deprecates (``torch.jit.trace`` and ``torch.jit.load`` raise
  FutureWarnings), so cnnlab does not offer it. ``safetensors`` is not offered either: it is not a dependency.

The flip-TTA that training may use for its own evaluation is not part of the graph: it is the plain model.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
from torch import nn

from cnnlab.errors import CnnlabError
from cnnlab.inference import load_trained
from cnnlab.io import atomic_write

FORMATS = ("onnx", "pt2")
TOLERANCE = 1e-4  # max abs difference of logits, export vs PyTorch
CHECK_BATCHES = (1, 5)
UNSUPPORTED = {
    "torchscript": "TorchScript is deprecated in torch 2.14 (torch.jit.trace raises FutureWarning); use pt2 "
                   "(torch.export, its successor) or onnx",
    "safetensors": "the safetensors package is not a cnnlab dependency; use pt2 or onnx (or save "
                   "checkpoint['model'] with safetensors.torch.save_file yourself)",
}


def _batch_dim() -> dict:
    # torch.export specialises sizes 0 and 1, so the example batch below has 2 images and the dimension starts at 1.
    return {0: torch.export.Dim("batch", min=1)}


def _inputs(n: int, shape: tuple[int, int]) -> torch.Tensor:
    channels, side = shape
    return torch.rand(n, channels, side, side, generator=torch.Generator().manual_seed(n))


def _check(run, reference: nn.Module, shape: tuple[int, int], what: str) -> None:
    """Compare ``run(x)`` (numpy logits) with ``reference(x)`` at every size in CHECK_BATCHES."""
    for n in CHECK_BATCHES:
        x = _inputs(n, shape)
        with torch.no_grad():
            expected = reference(x).numpy()
        got = run(x)
        if got.shape != expected.shape:
            raise CnnlabError(f"{what} gives logits of shape {got.shape} at batch {n}, expected {expected.shape}")
        diff = float(np.abs(got - expected).max())
        if not diff <= TOLERANCE:
            raise CnnlabError(f"{what} does not match PyTorch: max abs difference {diff:.2e} > {TOLERANCE:g} at "
                              f"batch {n}; nothing was written")


def _write_onnx(wrapped: nn.Module, tmp: str, shape: tuple[int, int], metadata: dict[str, str]) -> None:
    try:  # torch.onnx.export(dynamo=True) needs onnx and onnxscript; the check needs onnxruntime
        import onnx  # noqa: F401
        import onnxruntime as ort
        import onnxscript  # noqa: F401
    except ImportError:
        raise CnnlabError("ONNX export needs onnx, onnxscript and onnxruntime: pip install 'cnnlab[export]'") from None

    program = torch.onnx.export(wrapped, (_inputs(2, shape),), None, dynamo=True, verbose=False,
                                input_names=["images"], output_names=["logits"], dynamic_shapes=(_batch_dim(),))
    program.model.metadata_props.update(metadata)
    program.save(tmp, external_data=False)  # one self-contained file (the models here are far below 2 GB)
    session = ort.InferenceSession(tmp, providers=["CPUExecutionProvider"])
    _check(lambda x: session.run(None, {"images": x.numpy()})[0], wrapped, shape, "the ONNX export")


def _write_pt2(wrapped: nn.Module, tmp: str, shape: tuple[int, int], metadata: dict[str, str]) -> None:
    program = torch.export.export(wrapped, (_inputs(2, shape),), dynamic_shapes=(_batch_dim(),))
    with open(tmp, "wb") as f:
        torch.export.save(program, f, extra_files={"cnnlab.json": json.dumps(metadata)})
    with open(tmp, "rb") as f:  # a file object: torch.export.load wants a path ending in .pt2, tmp has none
        loaded = torch.export.load(f).module()
    _check(lambda x: loaded(x).detach().numpy(), wrapped, shape, "the torch.export program")


def export_checkpoint(checkpoint: str | Path, output: str | Path, format: str = "onnx", force: bool = False) -> Path:
    """Export a checkpoint's model, with its preprocessing inside, to one file, verified against PyTorch.

    Args:
        checkpoint: a ``.pt`` file written by ``cnnlab train`` (its EMA weights when the run kept them).
        output: the file to write.
        format: ``"onnx"`` or ``"pt2"`` (see the module docstring for why not TorchScript or safetensors).
        force: overwrite ``output`` if it exists.

    Returns:
        The path written.

    Raises:
        CnnlabError: unknown format, ``output`` exists without ``force``, its folder is missing, a bad checkpoint, or
            the exported graph differs from PyTorch by more than 1e-4 at batch 1 or 5 (then nothing is written).

    Example:
        >>> export_checkpoint("runs/lenet/best.pt", "lenet.onnx")  # doctest: +SKIP
        >>> import onnxruntime, numpy as np  # doctest: +SKIP
        >>> s = onnxruntime.InferenceSession("lenet.onnx")  # doctest: +SKIP
        >>> s.run(None, {"images": np.zeros((3, 1, 28, 28), np.float32)})[0].shape  # doctest: +SKIP
        (3, 10)
    """
    if format in UNSUPPORTED:
        raise CnnlabError(f"format {format!r} is not offered: {UNSUPPORTED[format]}")
    if format not in FORMATS:
        raise CnnlabError(f"format must be one of {', '.join(FORMATS)}; got {format!r}")
    output = Path(output)
    if output.is_dir():
        raise CnnlabError(f"output {output} is a folder, expected a file name such as model.{format}")
    if output.exists() and not force:
        raise CnnlabError(f"output {output} already exists; pass --force (force=True) to overwrite it")
    if not output.parent.is_dir():
        raise CnnlabError(f"the folder of output {output} does not exist")
    trained = load_trained(checkpoint, "cpu")
    meta = trained.meta
    wrapped = nn.Sequential(trained.preprocess, trained.model).eval()
    shape = (meta.channels, meta.image_size)
    metadata = {"cnnlab.model": meta.model_name, "cnnlab.dataset": meta.dataset,
                "cnnlab.classes": json.dumps(list(meta.classes)),
                "cnnlab.input": f"float32 N x {meta.channels} x {meta.image_size} x {meta.image_size} in [0, 1] "
                                "(uint8 image / 255)",
                "cnnlab.input_size": str(meta.input_size)}
    write = _write_onnx if format == "onnx" else _write_pt2
    atomic_write(output, lambda tmp: write(wrapped, tmp, shape, metadata))
    return output
