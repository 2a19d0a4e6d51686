"""Pictures in and out of the explorer: PNG data URLs of tensors, and uploads decoded with size guards.

Everything the page shows is a PNG made here with Pillow (small and fast: no matplotlib figure per request), so
the page needs no plotting library and works offline.
"""

from __future__ import annotations

import base64
import io
import warnings

import numpy as np
import torch
from matplotlib import colormaps
from PIL import Image, ImageOps, UnidentifiedImageError

from cnnlab.errors import CnnlabError

# An upload is one picture of one object: 8 MiB and 16 megapixels are far beyond any photo of it, and the pixel
# limit is checked from the header before decoding, so a crafted file claiming 2^31 x 2^31 pixels in a few
# hundred bytes (a "decompression bomb") is refused without allocating its pixels.
MAX_UPLOAD_BYTES = 8 * 2**20
MAX_UPLOAD_PIXELS = 16_000_000
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


def decode_upload(data: bytes, channels: int, size: int, invert: bool = False) -> torch.Tensor:
    """An uploaded image file as the uint8 ``channels x size x size`` image a model of that dataset takes.

    Steps: size checks (bytes, then the header's pixel count, before decoding); EXIF orientation; transparency laid
    on black (white with ``invert``); grey or RGB; padded to a square with the median colour of the corners (so
    the object keeps its aspect ratio); resized with a Lanczos filter; inverted if asked (for dark-on-light
    pictures, since Fashion-MNIST's garments are light on black).

    Raises:
        CnnlabError: empty, too large, not an image, or truncated (one line).
    """
    if not data:
        raise CnnlabError("the upload is empty (0 bytes), expected a PNG or JPEG file")
    if len(data) > MAX_UPLOAD_BYTES:
        raise CnnlabError(f"the upload is {len(data) / 2**20:.1f} MiB, expected at most "
                          f"{MAX_UPLOAD_BYTES // 2**20} MiB")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as im:  # reads the header only
                w, h = im.size
                if w * h > MAX_UPLOAD_PIXELS:
                    raise CnnlabError(f"the upload is {w} x {h} = {w * h / 1e6:.0f} megapixels, expected at most "
                                      f"{MAX_UPLOAD_PIXELS / 1e6:.0f} (refused before decoding)")
                im = ImageOps.exif_transpose(im)
                im = _flatten(im, background=255 if invert else 0, rgb=channels == 3)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise CnnlabError("the upload claims too many pixels (a decompression bomb?); expected at most "
                          f"{MAX_UPLOAD_PIXELS / 1e6:.0f} megapixels") from None
    except UnidentifiedImageError:
        raise CnnlabError("the upload is not an image Pillow can read (expected PNG, JPEG, BMP, GIF or WebP)") from None
    except (OSError, SyntaxError, ValueError) as e:
        if isinstance(e, CnnlabError):
            raise
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise CnnlabError(f"cannot decode the upload: truncated or corrupt ({first[:120]})") from None
    if channels not in (1, 3):
        raise CnnlabError(f"uploads can feed models of 1 or 3 input channels, this model takes {channels}")
    pixels = np.asarray(_square(im).resize((size, size), Image.Resampling.LANCZOS), dtype=np.uint8)
    x = torch.from_numpy(pixels.copy())
    x = x.unsqueeze(0) if x.dim() == 2 else x.permute(2, 0, 1).contiguous()
    return 255 - x if invert else x


def _flatten(im: Image.Image, background: int, rgb: bool) -> Image.Image:
    """8-bit "L" or "RGB": alpha composited over ``background``, 16-bit and float images rescaled."""
    if im.mode in ("I", "I;16", "I;16B", "I;16L", "F"):
        a = np.asarray(im, dtype=np.float64)
        top = 65535.0 if a.max() > 255 else 255.0
        im = Image.fromarray(np.clip(a / top * 255, 0, 255).round().astype(np.uint8), mode="L")
    if im.mode in ("RGBA", "LA", "PA") or (im.mode == "P" and "transparency" in im.info):
        im = im.convert("RGBA")
        im = Image.alpha_composite(Image.new("RGBA", im.size, (background, background, background, 255)), im)
    return im.convert("RGB" if rgb else "L")


def _square(im: Image.Image) -> Image.Image:
    w, h = im.size
    if w == h:
        return im
    corners = np.array([im.getpixel(p) for p in ((0, 0), (w - 1, 0), (0, h - 1), (w - 1, h - 1))])
    fill = tuple(int(v) for v in np.median(corners.reshape(4, -1), axis=0))
    side = max(w, h)
    canvas = Image.new(im.mode, (side, side), fill if len(fill) > 1 else fill[0])
    canvas.paste(im, ((side - w) // 2, (side - h) // 2))
    return canvas
