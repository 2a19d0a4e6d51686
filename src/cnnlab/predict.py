"""Classifying image files with a trained checkpoint (``cnnlab predict CHECKPOINT IMAGE_OR_FOLDER...``).

Any PNG/JPEG/... that PIL reads, of any size, colour or grey, becomes an image like the checkpoint's dataset
stored: grey for a 1-channel model, RGB for a 3-channel one, centred on a square canvas, resized with an
antialiasing filter to the dataset's image side, values in [0, 1]; then the checkpoint's own preprocessing (resize
to the model's input, normalisation, flip-TTA) runs exactly as in evaluation (:meth:`cnnlab.inference.Trained.logits`).
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError

from cnnlab.errors import CnnlabError
from cnnlab.inference import load_trained

SIDE = 28  # Fashion-MNIST's side: the default of load_image
# Refuse before decoding: a 50-megapixel grey image is 50 MB of pixels, far beyond any photo of one garment, while
# a crafted PNG can claim 2^31 x 2^31 pixels in a few hundred bytes (a "decompression bomb").
MAX_PIXELS = 50_000_000
MAX_BYTES = 100 * 2**20


def load_image(path: str | Path, invert: bool = False, *, channels: int = 1, size: int = SIDE) -> torch.Tensor:
    """Read one image file as a float ``channels x size x size`` tensor in [0, 1], like a dataset's stored image.

    Steps: EXIF orientation applied; transparent pixels laid on the background (black, or white with ``invert``);
    converted to grey (``channels=1``) or RGB (``channels=3``); padded to a square with the colour of its corner
    pixels (so the subject keeps its aspect ratio); resized to ``size`` x ``size`` with a Lanczos filter
    (antialiased: every source pixel contributes when shrinking); scaled to [0, 1]; inverted (``1 - x``) if asked.

    Args:
        path: the image file.
        invert: for dark subjects on a light background (Fashion-MNIST's garments are light on black).
        channels: 1 or 3, as the model was trained.
        size: side of the dataset's stored images (a checkpoint's ``meta.image_size``).

    Raises:
        CnnlabError: the file is missing, empty, not an image, truncated, or above ``MAX_PIXELS`` (checked from the
            header, before any pixel is decoded); or ``channels``/``size`` out of range.
    """
    if channels not in (1, 3):
        raise CnnlabError(f"channels must be 1 (grey) or 3 (RGB), got {channels!r}")
    if isinstance(size, bool) or not isinstance(size, int) or size < 1:
        raise CnnlabError(f"size must be a positive integer, got {size!r}")
    path = Path(path)
    if not path.is_file():
        raise CnnlabError(f"image {path} does not exist or is not a file")
    nbytes = path.stat().st_size
    if nbytes == 0:
        raise CnnlabError(f"image {path} is empty (0 bytes), expected a PNG or JPEG file")
    if nbytes > MAX_BYTES:
        raise CnnlabError(f"image {path} is {nbytes / 2**20:.0f} MiB, expected at most {MAX_BYTES // 2**20} MiB")
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
                im = _to_mode(im, "L" if channels == 1 else "RGB", background=255 if invert else 0)
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
    pixels = np.asarray(_square(im).resize((size, size), Image.Resampling.LANCZOS), dtype=np.float32) / 255.0
    x = torch.from_numpy(pixels.reshape(size, size, channels)).permute(2, 0, 1).contiguous()  # C x size x size
    return 1 - x if invert else x


def _to_mode(im: Image.Image, mode: str, background: int) -> Image.Image:
    """8-bit grey ("L") or RGB, with alpha composited over ``background`` and 16-bit/float images rescaled."""
    if im.mode in ("I", "I;16", "I;16B", "I;16L", "F"):
        a = np.asarray(im, dtype=np.float64)
        top = 65535.0 if a.max() > 255 else 255.0  # 16-bit PNGs open as "I"/"I;16"
        im = Image.fromarray(np.clip(a / top * 255, 0, 255).round().astype(np.uint8), mode="L")
    if im.mode in ("RGBA", "LA", "PA") or (im.mode == "P" and "transparency" in im.info):
        im = im.convert("RGBA")
        canvas = Image.new("RGBA", im.size, (background, background, background, 255))
        im = Image.alpha_composite(canvas, im)
    return im.convert(mode)


def _square(im: Image.Image) -> Image.Image:
    """Pad to a square with the median colour of the four corners (the background, for a product photo)."""
    w, h = im.size
    if w == h:
        return im
    corners = np.array([im.getpixel(p) for p in ((0, 0), (w - 1, 0), (0, h - 1), (w - 1, h - 1))])
    colour = np.median(corners, axis=0).astype(int)  # per channel
    side = max(w, h)
    canvas = Image.new(im.mode, (side, side), int(colour) if colour.ndim == 0 else tuple(colour.tolist()))
    canvas.paste(im, ((side - w) // 2, (side - h) // 2))
    return canvas


def image_files(paths: Sequence[str | Path]) -> list[Path]:
    """``paths`` with every folder replaced by the image files directly inside it, sorted by name.

    An image file is one whose suffix PIL can open (``.png``, ``.jpg``, ...); hidden files are skipped. A folder
    without any is an error (a typo'd folder should not pass as an empty batch); a listed file is kept whatever
    its suffix, so a bad one is reported by :func:`load_image`.
    """
    suffixes = {s.lower() for s in Image.registered_extensions()}
    files: list[Path] = []
    for path in map(Path, paths):
        if not path.is_dir():
            files.append(path)
            continue
        found = sorted(p for p in path.iterdir()
                       if p.is_file() and not p.name.startswith(".") and p.suffix.lower() in suffixes)
        if not found:
            raise CnnlabError(f"folder {path} holds no image files (expected .png, .jpg, ... directly inside it)")
        files += found
    return files


def predict_files(checkpoint: str | Path, images: Sequence[str | Path], invert: bool = False, topk: int = 3,
                  device: str = "auto", skip_bad: bool = False) -> list[dict[str, Any]]:
    """Classify image files (and the image files in folders) with a trained checkpoint.

    Each image is read as the checkpoint's dataset stores images (:func:`load_image` with its channels and image
    size). Fashion-MNIST garments are light on a black background: photos of clothes on a light background (most
    product photos and scans) must be inverted first, ``invert=True`` (``--invert``), or the network sees a dark
    garment on white, which it never met in training, and its answers are meaningless.

    Args:
        checkpoint: a ``.pt`` file written by ``cnnlab train``.
        images: paths of PNG/JPEG/... files of any size, colour or grey, or folders of them (sorted by name).
        invert: invert the pixel values (for dark-on-light pictures).
        topk: how many classes to return per image (at most the number of classes).
        device: ``auto``, ``cpu``, ``cuda``, ``cuda:N`` or ``mps``.
        skip_bad: an unreadable image becomes ``{"file", "error"}`` in the results instead of raising.

    Returns:
        One dict per image, in order: ``{"file", "top": [{"class", "index", "probability"}, ...]}``, or
        ``{"file", "error"}`` for a bad image when ``skip_bad``.

    Raises:
        CnnlabError: a bad checkpoint or argument, or (unless ``skip_bad``) a bad image, in one line naming it.

    Example:
        >>> predict_files("runs/lenet/best.pt", ["shirt.jpg"], invert=True)  # doctest: +SKIP
        [{'file': 'shirt.jpg', 'top': [{'class': 'shirt', 'index': 6, 'probability': 0.61}, ...]}]
    """
    if isinstance(topk, bool) or not isinstance(topk, int) or topk < 1:
        raise CnnlabError(f"topk must be a positive integer, got {topk!r}")
    files = image_files(images)
    if not files:
        raise CnnlabError("expected at least one image file, got none")
    trained = load_trained(checkpoint, device)
    meta = trained.meta
    loaded: dict[int, torch.Tensor] = {}
    results: list[dict[str, Any]] = [{"file": str(path)} for path in files]
    for i, path in enumerate(files):
        try:
            loaded[i] = load_image(path, invert=invert, channels=meta.channels, size=meta.image_size)
        except CnnlabError as e:
            if not skip_bad:
                raise
            results[i]["error"] = str(e)
    if loaded:  # the one call into the inference path (preprocessing, model, TTA as the run evaluated)
        probs = trained.logits(torch.stack(list(loaded.values()))).softmax(1)  # N x classes
        top = probs.topk(min(topk, probs.shape[1]), dim=1)
        for i, values, indices in zip(loaded, top.values.tolist(), top.indices.tolist(), strict=True):
            results[i]["top"] = [{"class": meta.classes[k], "index": k, "probability": p}
                                 for p, k in zip(values, indices, strict=True)]
    return results


def format_predictions(results: list[dict[str, Any]]) -> str:
    """One line per classified image: ``file: class 91.2%, class 5.1%, ...`` (failed images are left out)."""
    lines = []
    for r in results:
        if "top" in r:
            guesses = ", ".join(f"{t['class']} {t['probability']:.1%}" for t in r["top"])
            lines.append(f"{r['file']}: {guesses}")
    return "\n".join(lines)
