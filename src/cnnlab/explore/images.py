"""Pictures in and out of the explorer: PNG data URLs of tensors, and uploads decoded with size guards.

Everything the page shows is a PNG made here with Pillow (small and fast: no matplotlib figure per request), so
the page needs no plotting library and works offline.
"""

from __future__ import annotations

import base64
import io

import numpy as np
import torch
from matplotlib import colormaps
from PIL import Image, ImageDraw

from cnnlab.errors import CnnlabError
from cnnlab.picture import MAX_PIXELS, PAD, Fit, read_picture

# An upload (or a file of --images) is a photo as a camera saves it: 24 megapixels from a phone, up to 61 from a
# camera, whose JPEG fits in 64 MiB. Its pixels are bounded as `cnnlab predict` bounds a file's (checked from the
# header, before decoding), and a large JPEG is decoded at a reduced scale for the model's smaller input
# (cnnlab.picture).
MAX_UPLOAD_BYTES = 64 * 2**20
MAX_UPLOAD_PIXELS = MAX_PIXELS
# The longest side of a picture the pages list to pick from: they show it 56 px wide, so twice that is sharp on a
# high-density screen. At the model's own 224 px, 200 of them were 20 MB of the model page's answer (and of a saved
# page's 8 MiB); 28-px pictures are sent as they are.
THUMBNAIL_SIDE = 112
_LUTS: dict[str, np.ndarray] = {}


def _lut(name: str) -> np.ndarray:
    """256 x 3 uint8 colour table of a matplotlib colormap."""
    if name not in _LUTS:
        _LUTS[name] = (colormaps[name](np.linspace(0, 1, 256))[:, :3] * 255).round().astype(np.uint8)
    return _LUTS[name]


def png_url(array: np.ndarray) -> str:
    """A uint8 ``H x W`` (grey) or ``H x W x 3`` (RGB) array as a ``data:image/png;base64`` URL."""
    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(array)).save(buf, format="PNG", compress_level=1)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def thumbnail_url(image: torch.Tensor) -> str:
    """A picture to pick from, as :func:`png_url`: a ``C x H x W`` image shrunk (antialiased) to at most
    :data:`THUMBNAIL_SIDE` pixels along its longer side, kept as it is if smaller."""
    array = image_array(image)
    picture = Image.fromarray(array)
    if max(picture.size) > THUMBNAIL_SIDE:
        picture.thumbnail((THUMBNAIL_SIDE, THUMBNAIL_SIDE), Image.Resampling.LANCZOS)
        array = np.asarray(picture)
    return png_url(array)


def to_unit(x: torch.Tensor, symmetric: bool = False) -> torch.Tensor:
    """Scale to [0, 1] by the tensor's own range (``symmetric``: zero at 0.5, the largest magnitude at 0 or 1)."""
    x = x.detach().float().cpu()
    if symmetric:
        limit = float(x.abs().max()) or 1.0
        return (x / limit + 1) / 2
    lo, hi = float(x.min()), float(x.max())
    return (x - lo) / (hi - lo) if hi > lo else torch.zeros_like(x)


def colour(x: torch.Tensor, cmap: str) -> np.ndarray:
    """``H x W`` values in [0, 1] through a colormap: uint8 ``H x W x 3``."""
    index = (x.clamp(0, 1) * 255).round().to(torch.uint8).numpy()
    return _lut(cmap)[index]


def image_array(image: torch.Tensor) -> np.ndarray:
    """A ``C x H x W`` image (uint8, or float in [0, 1]) as the uint8 ``H x W`` or ``H x W x 3`` array PNG takes."""
    x = image.detach().cpu()
    if x.dtype != torch.uint8:
        x = (x.float().clamp(0, 1) * 255).round().to(torch.uint8)
    return x[0].numpy() if x.shape[0] == 1 else x[:3].permute(1, 2, 0).contiguous().numpy()


def overlay(image: torch.Tensor, heat: torch.Tensor, cmap: str = "jet", alpha: float = 0.5) -> np.ndarray:
    """``heat`` (``H x W`` in [0, 1], the image's size) blended over the image shown in grey: uint8 ``H x W x 3``."""
    base = image_array(image).astype(np.float32)
    grey = base if base.ndim == 2 else base.mean(2)
    blended = (1 - alpha) * grey[..., None] + alpha * colour(heat, cmap).astype(np.float32)
    return blended.clip(0, 255).round().astype(np.uint8)


def boxes_overlay(image: torch.Tensor, boxes: list[tuple[float, float, float, float] | list[tuple[float, float]]],
                  colours: list[str], masks: torch.Tensor | None = None,
                  points: list[list[tuple[float, float]]] | None = None) -> np.ndarray:
    """``boxes`` (``x1, y1, x2, y2`` in the image's pixels, or a turned box's corners in turn, each ``x, y``) drawn
    over the image in colour, each in its ``colours`` entry (``#rrggbb``), two pixels wide (one on a picture under 64
    pixels), with each box's mask (``masks``, booleans ``boxes x H x W``) tinted half in its colour under it and its
    keypoints (``points``, ``x, y`` in the image's pixels) as dots of its colour: uint8 ``H x W x 3``."""
    base = image_array(image)
    picture = (base if base.ndim == 3 else np.stack([base] * 3, 2)).astype(np.float32)
    for mask, colour_ in zip(masks if masks is not None else [], colours, strict=False):
        shade, inside = np.frombuffer(bytes.fromhex(colour_[1:]), np.uint8).astype(np.float32), mask.numpy()
        picture[inside] = 0.5 * picture[inside] + 0.5 * shade
    drawn = Image.fromarray(picture.round().astype(np.uint8))
    draw = ImageDraw.Draw(drawn)
    width = 2 if min(drawn.size) >= 64 else 1
    for box, colour_ in zip(boxes, colours, strict=True):
        if isinstance(box, list):
            draw.polygon(box, outline=colour_, width=width)
        else:
            draw.rectangle(box, outline=colour_, width=width)
    for dots, colour_ in zip(points or [], colours, strict=False):
        for x, y in dots:
            draw.ellipse((x - width, y - width, x + width, y + width), fill=colour_)
    return np.asarray(drawn)


def decode_upload(data: bytes, channels: int, size: int | tuple[int, int], invert: bool = False,
                  crop: bool = False, fit: Fit = PAD) -> torch.Tensor:
    """An uploaded image file as the uint8 ``channels x size x size`` image a model of that dataset takes
    (``channels x height x width`` for a ``size`` of ``(height, width)``).

    Decoded as ``cnnlab predict`` decodes a file (:func:`cnnlab.picture.read_picture`, ``crop`` and ``fit`` its
    own), within the upload limits.

    Raises:
        CnnlabError: a model of other than 1 or 3 channels; an upload empty, too large, not an image, or truncated
            (one line).
    """
    if channels not in (1, 3):
        raise CnnlabError(f"uploads can feed models of 1 or 3 input channels, this model takes {channels}")
    return read_picture(data, name="the upload", channels=channels, size=size, invert=invert,
                        max_bytes=MAX_UPLOAD_BYTES, max_pixels=MAX_UPLOAD_PIXELS, crop=crop, fit=fit)
