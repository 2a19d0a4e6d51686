"""Classifying image files with a trained checkpoint (``cnnlab predict CHECKPOINT IMAGE...``).

Any PNG/JPEG/... that PIL reads, of any size, colour or grey, becomes a Fashion-MNIST-like input: grey, centred on a
square canvas, 28 x 28 with an antialiasing filter, values in [0, 1]; then the checkpoint's own preprocessing
(resize to the model's input, normalisation) runs exactly as in training (:func:`cnnlab.train.evaluate.predict_logits`).
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError

from cnnlab.errors import CnnlabError

SIDE = 28
# Refuse before decoding: a 50-megapixel grey image is 50 MB of pixels, far beyond any photo of one garment, while
# a crafted PNG can claim 2^31 x 2^31 pixels in a few hundred bytes (a "decompression bomb").
MAX_PIXELS = 50_000_000
MAX_BYTES = 100 * 2**20


def load_image(path: str | Path, invert: bool = False) -> torch.Tensor:
    """Read one image file as a float ``1 x 28 x 28`` tensor in [0, 1], white garment on black like the dataset.

    Steps: EXIF orientation applied; transparent pixels laid on the background (black, or white with ``invert``);
    converted to grey; padded to a square with the colour of its corner pixels (so the garment keeps its aspect
    ratio); resized to 28 x 28 with a Lanczos filter (antialiased: every source pixel contributes when shrinking);
    scaled to [0, 1]; inverted (``1 - x``) if asked.

    Raises:
        CnnlabError: the file is missing, empty, not an image, truncated, or above ``MAX_PIXELS`` (checked from the
            header, before any pixel is decoded).
    """
    path = Path(path)
    if not path.is_file():
        raise CnnlabError(f"image {path} does not exist or is not a file")
    size = path.stat().st_size
    if size == 0:
        raise CnnlabError(f"image {path} is empty (0 bytes), expected a PNG or JPEG file")
    if size > MAX_BYTES:
        raise CnnlabError(f"image {path} is {size / 2**20:.0f} MiB, expected at most {MAX_BYTES // 2**20} MiB")
    try:
        with warnings.catch_warnings():
            # PIL warns (not raises) between MAX_IMAGE_PIXELS and twice that; our own limit below is lower anyway.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(path) as im:  # reads the header only
                w, h = im.size
                if w * h > MAX_PIXELS:
                    raise CnnlabError(f"image {path} is {w} x {h} = {w * h / 1e6:.0f} megapixels, expected at most "
                                      f"{MAX_PIXELS / 1e6:.0f} (refused before decoding)")
                im = ImageOps.exif_transpose(im)  # decodes the pixels
                grey = _to_grey(im, background=255 if invert else 0)
    except Image.DecompressionBombError:
        raise CnnlabError(f"image {path} claims too many pixels (a decompression bomb?); expected at most "
                          f"{MAX_PIXELS / 1e6:.0f} megapixels") from None
    except UnidentifiedImageError:
        raise CnnlabError(f"{path} is not an image PIL can read (expected PNG, JPEG, BMP, GIF, TIFF or WebP)") from None
    except (OSError, SyntaxError, ValueError) as e:
        if isinstance(e, CnnlabError):
            raise
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise CnnlabError(f"cannot decode image {path}: truncated or corrupt ({first[:120]})") from None
    x = torch.from_numpy(np.asarray(_square(grey).resize((SIDE, SIDE), Image.Resampling.LANCZOS),
                                    dtype=np.float32) / 255.0)
    return (1 - x if invert else x).unsqueeze(0)  # 1 x 28 x 28


def _to_grey(im: Image.Image, background: int) -> Image.Image:
    """8-bit grey ("L"), with alpha composited over ``background`` and 16-bit/float images rescaled."""
    if im.mode in ("I", "I;16", "I;16B", "I;16L", "F"):
        a = np.asarray(im, dtype=np.float64)
        top = 65535.0 if a.max() > 255 else 255.0  # 16-bit PNGs open as "I"/"I;16"
        return Image.fromarray(np.clip(a / top * 255, 0, 255).round().astype(np.uint8), mode="L")
    if im.mode in ("RGBA", "LA", "PA") or (im.mode == "P" and "transparency" in im.info):
        im = im.convert("RGBA")
        canvas = Image.new("RGBA", im.size, (background, background, background, 255))
        im = Image.alpha_composite(canvas, im)
    return im.convert("L")


def _square(im: Image.Image) -> Image.Image:
    """Pad to a square with the median colour of the four corners (the background, for a product photo)."""
    w, h = im.size
    if w == h:
        return im
    corners = [im.getpixel(p) for p in ((0, 0), (w - 1, 0), (0, h - 1), (w - 1, h - 1))]
    side = max(w, h)
    canvas = Image.new("L", (side, side), int(np.median(corners)))
    canvas.paste(im, ((side - w) // 2, (side - h) // 2))
    return canvas


def predict_files(checkpoint: str | Path, images: list[str | Path], invert: bool = False, topk: int = 3,
                  device: str = "auto") -> list[dict[str, Any]]:
    """Classify image files with a trained checkpoint.

    Fashion-MNIST garments are light on a black background. Photos of clothes on a light background (most product
    photos and scans) must be inverted first: pass ``invert=True`` (``--invert``), or the network sees a dark
    garment on white, which it never met in training, and its answers are meaningless.

    Args:
        checkpoint: a ``.pt`` file written by ``cnnlab train``.
        images: paths of PNG/JPEG/... files of any size, colour or grey.
        invert: invert the grey values (for dark-on-light pictures).
        topk: how many classes to return per image (at most the number of classes).
        device: ``auto``, ``cpu``, ``cuda``, ``cuda:N`` or ``mps``.

    Returns:
        One dict per image, in order: ``{"file", "top": [{"class", "index", "probability"}, ...]}``.

    Raises:
        CnnlabError: a bad checkpoint, or a bad image (one line naming the file); nothing is predicted then.

    Example:
        >>> predict_files("runs/lenet/best.pt", ["shirt.jpg"], invert=True)  # doctest: +SKIP
        [{'file': 'shirt.jpg', 'top': [{'class': 'shirt', 'index': 6, 'probability': 0.61}, ...]}]
    """
    from cnnlab.data import CLASSES
    from cnnlab.device import resolve_device
    from cnnlab.train.checkpoint import load_model
    from cnnlab.train.evaluate import predict_logits

    if isinstance(topk, bool) or not isinstance(topk, int) or topk < 1:
        raise CnnlabError(f"topk must be a positive integer, got {topk!r}")
    if not images:
        raise CnnlabError("expected at least one image file, got none")
    batch = torch.stack([load_image(p, invert=invert) for p in images])  # N x 1 x 28 x 28, all checked first
    dev = resolve_device(device)
    model, preprocess, ckpt = load_model(checkpoint, dev)
    classes = CLASSES if ckpt["num_classes"] == len(CLASSES) else tuple(map(str, range(ckpt["num_classes"])))
    tta = bool((ckpt.get("config") or {}).get("tta", False))
    probs = predict_logits(model, preprocess, batch, device=dev, tta=tta).softmax(1)
    top = probs.topk(min(topk, probs.shape[1]), dim=1)
    return [{"file": str(path),
             "top": [{"class": classes[i], "index": i, "probability": p}
                     for p, i in zip(values.tolist(), indices.tolist(), strict=True)]}
            for path, values, indices in zip(images, top.values, top.indices, strict=True)]


def format_predictions(results: list[dict[str, Any]]) -> str:
    """One line per image: ``file: class 91.2%, class 5.1%, ...``."""
    lines = []
    for r in results:
        guesses = ", ".join(f"{t['class']} {t['probability']:.1%}" for t in r["top"])
        lines.append(f"{r['file']}: {guesses}")
    return "\n".join(lines)
