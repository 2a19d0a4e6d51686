"""One picture, a file or an upload in any size, mode and format Pillow reads, as the image a dataset would store.

``cnnlab predict`` and the explorer's uploads both come through here, so a picture gives a model the same input
whichever way it arrives. The size limits are checked before any pixel is decoded: a crafted PNG can claim
2^31 x 2^31 pixels in a few hundred bytes (a "decompression bomb").

Two ways to give it the model's shape (square, or for a model from elsewhere any height x width). A model of a folder
of images learnt from pictures decoded by :func:`centre_crop` (the folder loader's own decode), so its pictures are
decoded by that function too: a picture it is shown is the image it would have stored. The other datasets store
images already square, so a picture is padded instead (:func:`read_picture` without ``crop``): a garment
photographed wider than tall keeps its sleeves. A network Ultralytics exported is fed as its own predict feeds it
(``fit``: letterboxed on grey 114 after OpenCV's bilinear resize, stretched, or its classifiers' resize and crop), so
that its boxes and scores are those its users get from Ultralytics; a Hugging Face model as its image processor frames
a picture (a :class:`ShorterSide`: the same resize and crop, at the processor's length, filter and rounding).

Beside the formats Pillow reads itself, an iPhone's HEIC photos are read through pillow-heif where it is installed
(10-bit ones rounded to 8 bits as a 16-bit PNG is), and a camera's raw files are refused by name: here, and where a
folder's files are listed or passed over (:func:`listed_picture`, :func:`unread_photos_note`), each such photo is
said with how to read it.
"""

from __future__ import annotations

import functools
import importlib.util
import io
import math
import warnings
from collections.abc import Iterable
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError

from cnnlab.errors import CnnlabError, summary

__all__ = ["CENTRE_CROP", "HEIF_SUFFIXES", "LETTERBOX", "MAX_PIXELS", "PAD", "PICTURE_KEY", "RAW_FORMATS", "RESAMPLING",
           "SHORTER_SIDE", "SQUARE_KEY", "STRETCH", "Fit", "Letterbox", "PixelRangeError", "ShorterSide", "as_hw",
           "as_its_library_feeds", "centre_crop", "decoding", "heif_in_8_bits", "heif_read", "heif_unopened",
           "letterbox_fit", "listed_picture", "minimum_rectangle", "picture_formats", "read_picture",
           "refuse_raw_tiff", "unread_photos_note"]

# The most pixels a picture is read with (refused before decoding above it), for `cnnlab predict` and the explorer
# alike: the pictures a folder of images is read up to, so that a model trained on a camera's 61-megapixel photos or
# large scans can be asked about more of them. Pillow refuses larger ones itself (twice its MAX_IMAGE_PIXELS).
MAX_PIXELS = 178_956_970
# Above this many pixels a JPEG that is padded to the model's input is decoded at a reduced scale (1/2, 1/4 or 1/8,
# by the JPEG decoder itself: Image.draft) where the input is far smaller: decoded whole, a camera's photo is held in
# several copies of three bytes a pixel to become a 224 px input. Below it the whole picture is at most 12 MiB of RGB,
# and is decoded as it is.
REDUCED_DECODE_PIXELS = 2**22
# How many times the fitted size along each side a reduced decode keeps at least, so that the Lanczos resize still
# antialiases from more pixels than it keeps.
REDUCED_DECODE_MARGIN = 2

# An export's metadata entry saying which of the two ways its model's pictures take, so that whoever feeds it can
# follow: CENTRE_CROP or "pad".
SQUARE_KEY, CENTRE_CROP = "cnnlab.to_square", "centre-crop"
# How read_picture gives a picture that is not cropped the model's shape: cnnlab's own way (PAD: resized with Lanczos
# to fit, on a canvas of its corners' colour), or as Ultralytics' predict feeds the networks it exports (its
# LetterBox: resized bilinearly as OpenCV's INTER_LINEAR does, without antialiasing, to fit, on grey 114; its RT-DETR's
# and depth models' STRETCH, resized to the input's shape whatever the picture's; its classifiers' SHORTER_SIDE,
# torchvision's Resize of the shorter side then CenterCrop). Fed otherwise, a detector trained on letterboxed pictures
# finds other boxes, with other scores, than its users get from Ultralytics.
PAD, LETTERBOX, STRETCH = "pad", "letterbox", "stretch"
LETTERBOX_GREY = 114
# Pillow's filters by the numbers an image processor's preprocessor_config.json names them (its "resample")
RESAMPLING = {int(f): f.name.lower() for f in Image.Resampling}
# An export's metadata entry saying, in Pillow's words (:func:`decoding`), how a picture file becomes its uint8 input
PICTURE_KEY = "cnnlab.picture"


class ShorterSide(NamedTuple):
    """A fit that resizes the shorter side and crops the centre: Ultralytics' classifiers' (:data:`SHORTER_SIDE`) or,
    of its own length, filter and rounding, a Hugging Face image processor's or timm's evaluation transform's (or,
    ``squash``, timm's of the ``squash`` crop mode, which resizes both sides). Carried as it is (``InputSpec.fit``),
    beside the fits named by a string.

    Attributes:
        length: the shorter side's new length, or None: the input's side (Ultralytics' classifiers).
        resample: Pillow's filter, by its lower-case name (:data:`RESAMPLING`).
        floor: the crop's offsets halved and rounded down (a Hugging Face image processor's ``center_crop``), not
            rounded to the nearest (torchvision's ``CenterCrop``, which Ultralytics' classifiers and timm's
            evaluation transform use).
        said: what says so, and its verb, for the page (a length's: the file it was read from).
        squash: both sides resized to ``length``, the picture's shape not kept, before the centre is cropped
            (torchvision's ``Resize((length, length))``, as timm's evaluation transform does for a ``squash``
            ``crop_mode``: the 384 px ConvNeXts fine-tuned from ImageNet-22k), not the shorter side alone.
    """

    length: int | None = None
    resample: str = "bilinear"
    floor: bool = False
    said: str = "its preprocessor_config.json says"
    squash: bool = False

    def __str__(self) -> str:  # its name where the page says where a fit was read, as a string fit's is the string
        return "squash" if self.squash else "shorter-side"


# Ultralytics' classifiers' fit: torchvision's Resize of the shorter side to the input's, then CenterCrop
SHORTER_SIDE = ShorterSide()


class Letterbox(NamedTuple):
    """Ultralytics' letterbox of a network that takes pictures of any shape (a PyTorch network, or an export of
    dynamic sides): the picture resized as :data:`LETTERBOX` resizes it to fit the input, but padded only up to a
    multiple of ``stride`` (its predictor's ``auto``, "minimum rectangle"), so that each picture's input has a shape of
    its own, at most the input's (:func:`minimum_rectangle`).

    Attributes:
        stride: the network's largest stride (Ultralytics' ``stride``; 32 for its YOLO detectors).
    """

    stride: int

    def __str__(self) -> str:  # its name where the page says where a fit was read, as LETTERBOX's
        return LETTERBOX


# How a picture is given the model's shape: PAD, LETTERBOX, STRETCH, a Letterbox or a ShorterSide
Fit = str | ShorterSide | Letterbox


def as_hw(size: int | tuple[int, int]) -> tuple[int, int]:
    """A side, or a height and a width, as ``(height, width)``."""
    return (size, size) if isinstance(size, int) else tuple(size)


# What read_picture opens: formats whose header Pillow reads without decoding the pixels, so that the pixel limit
# comes first. Pillow decodes an ICO or ICNS file while opening it (its largest frame, whatever the icon's directory
# says: a 650 KB icon holding a 13000 x 13000 PNG took 0.5 GB and 1.5 s before the limit was checked) and renders
# EPS with Ghostscript, another program. (A camera's MPO is opened as the JPEG it starts with.)
PICTURE_FORMATS = ("PNG", "JPEG", "BMP", "DIB", "GIF", "TIFF", "WEBP", "AVIF", "JPEG2000", "PPM", "TGA", "PCX", "QOI",
                   "SGI")


# HEIF, the format an iPhone saves its photos in unless told otherwise, is read only with a Pillow plugin (pillow-heif,
# a libheif binding: the `heic` extra), imported and registered when the first HEIF file is opened, never at import
# nor for other pictures. Without it, where such files are passed over or refused, the line says what they are and how
# to read them, not only which formats are read.
HEIF = "HEIF"
HEIF_SUFFIXES = (".heic", ".heif", ".hif")
HEIF_BRANDS = (b"heic", b"heix", b"heim", b"heis", b"hevc", b"hevx", b"hevm", b"hevs", b"mif1", b"msf1")
HEIF_EXTRA = 'pip install "cnnlab[heic]"'

# A camera's raw files hold the sensor's readings, not a picture: they are made one by a raw converter (demosaicking,
# white balance, a tone curve), which is the camera maker's or the user's choice. Several are TIFF files whose first
# image is a small preview that Pillow would open as the photo, so they are named and refused before any is opened.
RAW_FORMATS = {".dng": "Adobe DNG", ".cr2": "Canon CR2", ".cr3": "Canon CR3", ".nef": "Nikon NEF",
               ".arw": "Sony ARW", ".raf": "Fujifilm RAF", ".orf": "Olympus ORF", ".rw2": "Panasonic RW2",
               ".pef": "Pentax PEF", ".srw": "Samsung SRW"}
RAW_ADVICE = "export a JPEG or TIFF from your camera's software"


@functools.cache
def heif_read() -> bool:
    """Whether HEIF photos are read here: pillow-heif is installed (``pip install "cnnlab[heic]"``). Asked without
    importing it."""
    return importlib.util.find_spec("pillow_heif") is not None


@functools.cache
def _heif_not_opened() -> str:
    """Register pillow-heif's opener with Pillow (the first HEIF file opened does): ``""``, or where it is installed
    but cannot be imported (a wheel for another Pillow, a library missing), its import's error."""
    try:
        import pillow_heif  # a libheif binding, optional and loaded only here
    except ImportError as e:
        return summary(e)
    pillow_heif.register_heif_opener()
    return ""


def picture_formats(source: bytes | Path) -> tuple[str, ...]:
    """The formats :func:`read_picture` and a folder of images open ``source`` (a file's bytes or its path) with:
    :data:`PICTURE_FORMATS`, and HEIF for a HEIF file where :func:`heif_read`."""
    return (*PICTURE_FORMATS, HEIF) if heif_read() and _is_heif(source) and not _heif_not_opened() else \
        PICTURE_FORMATS


def heif_unopened(source: bytes | Path, name: str) -> str | None:
    """Why the HEIF file ``source`` (told by its header) did not open, as the line refusing it names it, or None for
    a file of another format: truncated or corrupt, pillow-heif installed but not importable (installing the extra
    again is no answer), or not installed."""
    if not _is_heif(source):
        return None
    if not heif_read():
        return (f"{name} is a HEIC photo (an iPhone's format), which is not read here; expected "
                f"{', '.join(PICTURE_FORMATS)}: {_heif_advice('it')}")
    broken = _heif_not_opened()
    if broken:
        return (f"{name} is a HEIC photo (an iPhone's format), and pillow-heif, which reads them, is installed but "
                f"cannot be imported ({broken}): reinstall it for this Pillow ({HEIF_EXTRA} --force-reinstall)")
    return f"cannot decode {name}: a HEIC photo, truncated or corrupt"


def _refused_suffixes() -> tuple[str, ...]:
    """The name endings of files that are photos but not read here: raw camera files, and HEIC without pillow-heif."""
    return (*RAW_FORMATS, *(() if heif_read() else HEIF_SUFFIXES))


def _heif_advice(them: str) -> str:
    return (f"{HEIF_EXTRA} to read {them}, or save {them} as JPEG (on the iPhone: Settings > Camera > Formats > Most "
            "Compatible)")


def _raw_line(kinds: Iterable[str]) -> str:
    return f"({', '.join(sorted(set(kinds)))}), not read here: {RAW_ADVICE}"


def _raw_refusal(name: str, kind: str) -> CnnlabError:
    return CnnlabError(f"{name} is a raw camera file {_raw_line([kind])}")


def unread_photos_note(files: Iterable[Path]) -> str:
    """``"; 3 of them are HEIC photos, ..."``: what the photos not read here among ``files`` (files passed over as no
    picture read here) are, by their names, and how to read them: HEIC photos without pillow-heif, raw camera
    files; ``""`` where there are none."""
    files = list(files)
    refused = [f for f in files if Path(f).suffix.lower() in _refused_suffixes()]
    heif = [f for f in refused if Path(f).suffix.lower() in HEIF_SUFFIXES]
    raw = [RAW_FORMATS[Path(f).suffix.lower()] for f in refused if Path(f).suffix.lower() in RAW_FORMATS]
    note = ""
    for found, a_kind, kinds in ((heif, "a HEIC photo", "HEIC photos"), (raw, "a raw camera file", "raw camera files")):
        if not found:
            continue
        one = len(found) == 1
        some = ("it is" if one else "they are") if len(found) == len(files) else \
            f"{len(found)} of them {'is' if one else 'are'}"
        what = f"(an iPhone's format), not read here: {_heif_advice('it' if one else 'them')}" if found is heif else \
            _raw_line(found)
        note += f"; {some} {a_kind if one else kinds} {what}"
    return note


def _head(source: bytes | Path, n: int) -> bytes:
    """The first ``n`` bytes of a file or upload (none where the file cannot be read)."""
    if isinstance(source, bytes):
        return source[:n]
    try:
        with source.open("rb") as f:
            return f.read(n)
    except OSError:
        return b""


def _is_heif(source: bytes | Path) -> bool:
    """Whether a file or upload is a HEIF picture, by its header (an ISO file whose ``ftyp`` box names a HEIF
    brand: AVIF, read here, names its own)."""
    head = _head(source, 12)
    return head[4:8] == b"ftyp" and head[8:12] in HEIF_BRANDS


def _raw_format(source: bytes | Path) -> str | None:
    """The raw camera format of a file (by its name ending) or upload (by its header, where it has one of its own:
    Canon's, Fujifilm's, Olympus's and Panasonic's), or None. A DNG under another name is told by its TIFF tags once
    opened (:func:`refuse_raw_tiff`)."""
    if isinstance(source, Path) and source.suffix.lower() in RAW_FORMATS:
        return RAW_FORMATS[source.suffix.lower()]
    head = _head(source, 16)
    if head[:4] == b"II*\x00" and head[8:10] == b"CR":
        return RAW_FORMATS[".cr2"]
    if head[4:12] == b"ftypcrx ":
        return RAW_FORMATS[".cr3"]
    if head.startswith(b"FUJIFILMCCD-RAW"):
        return RAW_FORMATS[".raf"]
    if head[:4] in (b"IIRO", b"IIRS", b"MMOR"):
        return RAW_FORMATS[".orf"]
    if head[:4] == b"IIU\x00":
        return RAW_FORMATS[".rw2"]
    return None


def refuse_raw_tiff(im: Image.Image, name: str) -> None:
    """Refuse a DNG opened as the TIFF it is (its DNGVersion tag, 50706), under any name: what Pillow reads of it is
    a preview. :func:`read_picture` asks it of every picture, a folder of images of every file it opens."""
    if im.format == "TIFF" and 50706 in getattr(im, "tag_v2", {}):
        raise _raw_refusal(name, RAW_FORMATS[".dng"])


@functools.cache
def picture_extensions() -> tuple[str, ...]:
    """The file name endings of :func:`picture_formats` as Pillow registers them (``.jfif``, ``.jpe`` and ``.avif``
    among them; :data:`HEIF_SUFFIXES` with pillow-heif), lower case: the files a folder of images, ``predict`` and
    the explorer's ``--images`` read. Asked for, not computed at import: Pillow imports all its format plugins to list
    them."""
    known = (ext for ext, fmt in Image.registered_extensions().items() if fmt in PICTURE_FORMATS)
    return tuple(sorted((*known, *(HEIF_SUFFIXES if heif_read() else ()))))


def listed_picture(path: Path, refused: bool = False) -> bool:
    """Whether a folder named to ``predict`` or the explorer's ``--images`` lists ``path`` among its pictures: not
    hidden, and ending in one of :func:`picture_extensions`, or with ``refused`` in the name of a photo not read here
    too (a raw camera file, HEIC without pillow-heif), so that each such photo is refused by name rather than passed
    over without a word."""
    kinds = (*picture_extensions(), *_refused_suffixes()) if refused else picture_extensions()
    return not path.name.startswith(".") and path.suffix.lower() in kinds


class PixelRangeError(ValueError):
    """A 32-bit grey image whose values fit no range it could be read in (the message names the picture's values)."""


def read_picture(source: bytes | Path, *, name: str, channels: int, size: int | tuple[int, int], invert: bool,
                 max_bytes: int, max_pixels: int, crop: bool = False, fit: Fit = PAD) -> torch.Tensor:
    """Decode ``source`` (the file's bytes or its path) as a uint8 ``channels x size x size`` image (``channels x
    height x width`` for a ``size`` of ``(height, width)``; of the picture's own :func:`minimum_rectangle` within it
    for a :class:`Letterbox` fit).

    Steps: size checks (bytes, then the header's pixel count); EXIF orientation applied; transparent pixels laid
    on the background (black, or white with ``invert``); 16-bit and float images rescaled to 8 bits; grey
    (``channels=1``) or RGB (``channels=3``); resized with a Lanczos filter (antialiased: every source pixel counts
    when shrinking) to fit the output (a square, as a rule) and centred on it, the rest filled with the median colour
    of its corners (the background, for a product photo), so the subject keeps its aspect ratio; inverted
    (``255 - x``) if asked, for dark subjects on a light background (Fashion-MNIST's garments are light on black).
    Resizing before padding keeps a strip-shaped picture (1 x 16M pixels passes the pixel limit) from asking for a
    canvas of its long side squared.

    Args:
        name: how the one-line errors name the picture (``"image shirt.png"``, ``"the upload"``).
        crop: after the size checks, decode as a folder of images decodes its files (:func:`centre_crop`), for a
            model trained on one, instead of the steps above (``invert`` still applies).
        fit: where not ``crop``, how the picture is given the output's shape: :data:`PAD` (the steps above), or as
            Ultralytics' predict feeds its networks, :data:`LETTERBOX`, a :class:`Letterbox`, :data:`STRETCH` or
            :data:`SHORTER_SIDE` (:func:`as_its_library_feeds`: decoded whole, alpha dropped, resized bilinearly
            and, letterboxed, on grey 114), or as a Hugging Face image processor does (a :class:`ShorterSide` of its
            own).

    Raises:
        CnnlabError: empty, above ``max_bytes`` or ``max_pixels``, not an image, truncated or corrupt, or 32-bit
            grey with values of no known range.
    """
    height, width = as_hw(size)
    nbytes = len(source) if isinstance(source, bytes) else source.stat().st_size
    if nbytes == 0:
        raise CnnlabError(f"{name} is empty (0 bytes), expected a PNG or JPEG file")
    if nbytes > max_bytes:
        raise CnnlabError(f"{name} is {nbytes / 2**20:.1f} MiB, expected at most {max_bytes // 2**20} MiB")
    raw = _raw_format(source)
    if raw:
        raise _raw_refusal(name, raw)
    formats = picture_formats(source)
    try:
        with warnings.catch_warnings():
            # Pillow warns (not raises) between its own MAX_IMAGE_PIXELS and twice that; our limit below is lower.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(source) if isinstance(source, bytes) else source,  # the header only
                            formats=formats) as im:
                refuse_raw_tiff(im, name)
                w, h = im.size
                if w * h > max_pixels:
                    raise CnnlabError(f"{name} is {w} x {h} = {w * h / 1e6:.0f} megapixels, expected at most "
                                      f"{max_pixels / 1e6:.0f} (refused before decoding)")
                if crop:
                    pixels = centre_crop(im, (height, width), channels)
                elif fit != PAD:
                    pixels = as_its_library_feeds(im, height, width, channels, fit)
                else:
                    _reduce_decode(im, height, width)
                    im = ImageOps.exif_transpose(heif_in_8_bits(im))  # decodes the pixels
                    im = _flatten(im, background=255 if invert else 0, rgb=channels == 3)
                    pixels = np.asarray(_fit_and_pad(im, height, width), dtype=np.uint8)
    except Image.DecompressionBombError:
        raise CnnlabError(f"{name} claims too many pixels (a decompression bomb?); expected at most "
                          f"{max_pixels / 1e6:.0f} megapixels") from None
    except PixelRangeError as e:
        raise CnnlabError(f"{name} is {e}") from None
    except UnidentifiedImageError:
        raise CnnlabError(heif_unopened(source, name) or
                          f"{name} is not an image of a format read here (expected {', '.join(formats)})") from None
    except (OSError, SyntaxError, ValueError) as e:
        if isinstance(e, CnnlabError):
            raise
        raise CnnlabError(f"cannot decode {name}: truncated or corrupt ({summary(e, 120)})") from None
    x = torch.from_numpy(pixels.copy())
    x = x.unsqueeze(0) if x.dim() == 2 else x.permute(2, 0, 1).contiguous()
    return 255 - x if invert else x


def decoding(crop: bool, channels: int, side: int) -> str:
    """How :func:`read_picture` makes a picture file the uint8 ``side x side`` image a model of ``channels`` takes
    (``crop``: as a folder of images decodes its files), in Pillow's words, for an export's metadata
    (:data:`PICTURE_KEY`).

    "centre-crop" alone did not say enough: a deployment that turns a phone photo upright by its EXIF orientation,
    as photo apps show it, feeds a folder model another image than the one it trained on and cnnlab predicts on.
    """
    mode = "RGB" if channels == 3 else "L"
    # the scale said: Pillow's own .convert clips 16-bit values to 255, which is another image (:func:`_to_8bit`)
    deep = "16-bit grey (mode I;16) to 8 bits as round(v / 257)"
    if crop:  # centre_crop's steps
        return (f"Image.open(file), its EXIF orientation not applied (as torchvision's pil_loader reads a file); "
                f"{deep}; .convert('{mode}') (alpha dropped); ImageOps.fit(image, ({side}, "
                f"{side}), Image.BILINEAR): resized to cover {side} x {side}, the centre cropped")
    return (f"Image.open(file) (a JPEG above {REDUCED_DECODE_PIXELS / 1e6:.1f} megapixels decoded at 1/2, 1/4 or 1/8 "
            f"scale, Image.draft, keeping at least {REDUCED_DECODE_MARGIN} times the fitted size); "
            f"ImageOps.exif_transpose; alpha laid on black; {deep}; .convert('{mode}'); "
            f"resized (Image.LANCZOS) to fit inside {side} x {side}, its aspect ratio kept, and centred on a canvas "
            "of the median colour of its four corners")


def letterbox_fit(hw: tuple[int, int], input_hw: tuple[int, int], stretch: bool = False,
                  stride: int | None = None) -> tuple[int, int, int, int]:
    """Where Ultralytics' ``LetterBox`` puts a picture of ``hw`` (height, width) in an input of ``input_hw``:
    ``(left, top, width, height)`` of the resized picture, the rest of the input grey.

    Its own arithmetic (ultralytics/data/augment.py, 8.4): each side scaled by the smaller of the two ratios and rounded
    by Python's ``round`` (half to even), at least 1 pixel; the padding halved, the left and top ``round(pad / 2 -
    0.1)``, so that an odd padding puts its extra pixel right or below. ``stretch`` (its ``scale_fill``): the whole
    input, no padding. ``stride`` (its ``auto``): each side's padding only what its length lacks of a multiple of the
    stride (the padding modulo the stride), the place then in the :func:`minimum_rectangle`. Its ``scale_boxes`` undoes
    the same arithmetic to put the boxes back on the picture.
    """
    (h, w), (height, width) = hw, input_hw
    if stretch:
        return 0, 0, width, height
    r = min(height / h, width / w)
    new_w, new_h = max(round(w * r), 1), max(round(h * r), 1)
    pad_w, pad_h = width - new_w, height - new_h
    if stride:
        pad_w, pad_h = pad_w % stride, pad_h % stride
    return round(pad_w / 2 - 0.1), round(pad_h / 2 - 0.1), new_w, new_h


def minimum_rectangle(hw: tuple[int, int], input_hw: tuple[int, int], stride: int) -> tuple[int, int]:
    """The height and width of the input Ultralytics' letterbox of ``stride`` (:class:`Letterbox`) gives a picture of
    ``hw`` for an input of ``input_hw``: each side of the picture resized as :func:`letterbox_fit` resizes it, padded
    up to the input's side less as many whole strides as fit in its padding (a 640 x 360 picture for a 640 x 640
    input of stride 32: 640 x 384)."""
    _, _, new_w, new_h = letterbox_fit(hw, input_hw)
    return new_h + (input_hw[0] - new_h) % stride, new_w + (input_hw[1] - new_w) % stride


def as_its_library_feeds(im: Image.Image, height: int, width: int, channels: int, fit: Fit) -> np.ndarray:
    """An opened image as Ultralytics' predict makes it its networks' input, or a Hugging Face image processor its
    model's (a :class:`ShorterSide` of its own): uint8 ``height x width`` (grey) or ``height x width x 3``.

    As OpenCV's ``imread`` reads a file for it: decoded whole (a reduced decode would be another picture), its EXIF
    orientation applied, alpha dropped (not laid on a background), 16-bit scaled to 8 bits. Then, for a detector
    (engine/predictor.py), resized as OpenCV's bilinear does (:func:`_bilinear`) to fit (:func:`letterbox_fit`) on
    grey 114, the whole input or, for a :class:`Letterbox`, the picture's :func:`minimum_rectangle` (then of that
    height and width), or resized to the whole input (:data:`STRETCH`); for a classifier (:data:`SHORTER_SIDE`, its
    classify_transforms), by torchvision's ``Resize(side)`` (the shorter side to the input's, the longer ``int(side *
    longer / shorter)``; Pillow's bilinear, antialiased) and ``CenterCrop`` (the crop's offsets rounded), or
    resized to a non-square input whole. A Hugging Face processor's (transformers' ``get_resize_output_image_size``
    and ``center_crop``, PIL backend): the shorter side to its length, the longer truncated as above, with its
    Pillow filter, then the centre cropped, its offsets ``(side - crop) // 2``, as the processor's ``load_image``
    reads a file (EXIF orientation applied, RGB). timm's ``squash`` (:attr:`ShorterSide.squash`): both sides to its
    length, then the centre cropped as torchvision's ``CenterCrop`` does."""
    im = _alpha_dropped(ImageOps.exif_transpose(heif_in_8_bits(im)), channels == 3)
    if isinstance(fit, ShorterSide):
        w, h = im.size
        short, length = min(w, h), fit.length or width
        size = (width, height) if width != height and fit.length is None else (length, length) if fit.squash else \
            (length, int(length * h / short)) if w == short else (int(length * w / short), length)
        if size != (w, h):
            im = im.resize(size, Image.Resampling[fit.resample.upper()])
        half = (lambda n: n // 2) if fit.floor else (lambda n: round(n / 2))
        left, top = half(size[0] - width), half(size[1] - height)
        return np.asarray(im.crop((left, top, left + width, top + height)))
    picture = np.asarray(im)
    stride = fit.stride if isinstance(fit, Letterbox) else None
    left, top, new_w, new_h = letterbox_fit(picture.shape[:2], (height, width), stretch=fit == STRETCH, stride=stride)
    if stride:
        height, width = minimum_rectangle(picture.shape[:2], (height, width), stride)
    canvas = np.full((height, width, *picture.shape[2:]), LETTERBOX_GREY, dtype=np.uint8)
    canvas[top:top + new_h, left:left + new_w] = _bilinear(picture, new_h, new_w)
    return canvas


def _bilinear(picture: np.ndarray, height: int, width: int) -> np.ndarray:
    """uint8 ``picture`` (``H x W`` or ``H x W x C``) resized to ``height x width`` as OpenCV's ``cv2.resize(...,
    interpolation=cv2.INTER_LINEAR)`` does, to the level: each output pixel from the 2 x 2 input pixels around its
    centre mapped back (half-pixel centres, the edges repeated), weighed by distance, with no antialiasing when
    shrinking.

    In OpenCV's integers (imgproc/src/resize.cpp), which float arithmetic rounded half up misses by a level at about
    one pixel in ten: weights of 11 bits (``(1 - f) * 2048`` rounded, in float32), each row's two columns summed
    first; then the two rows, each sum shifted right by 4, times its weight, shifted right by 16, added, and rounded
    off by 2 bits (its vectorised path, taken on any machine with SIMD). Along the rows a centre before the first or
    after the last pixel takes that pixel whole; down the columns it keeps its weights, on that row repeated.

    Only the rows the output reads are taken: a 100-megapixel photo shrunk to 640 pixels reads 1,280 of its rows."""
    def taps(size: int, out: int, clamp: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        centre = ((np.arange(out) + 0.5) * (1 / (out / size)) - 0.5).astype(np.float32)  # OpenCV's 1 / scale
        first = np.floor(centre).astype(np.intp)
        fraction = centre - first
        if clamp:
            fraction[(first < 0) | (first >= size - 1)] = 0
        weight = np.rint((np.float32(1) - fraction) * 2048).astype(np.int32)  # a weight and 2048 less it
        return np.clip(first, 0, size - 1), np.clip(first + 1, 0, size - 1), weight

    if picture.shape[:2] == (height, width):
        return picture
    top, below, weight_y = taps(picture.shape[0], height, clamp=False)
    left, right, weight_x = taps(picture.shape[1], width, clamp=True)
    weight_x = weight_x.reshape(1, -1, *[1] * (picture.ndim - 2))
    weight_y = weight_y.reshape(-1, *[1] * (picture.ndim - 1))

    def across(rows: np.ndarray) -> np.ndarray:  # each output column from its two, weights in 11 bits
        rows = rows.astype(np.int32)
        return rows[:, left] * weight_x + rows[:, right] * (2048 - weight_x)
    out = ((across(picture[top]) >> 4) * weight_y >> 16) + ((across(picture[below]) >> 4) * (2048 - weight_y) >> 16)
    return ((out + 2) >> 2).clip(0, 255).astype(np.uint8)


def _reduce_decode(im: Image.Image, height: int, width: int) -> None:
    """Have a large JPEG (above :data:`REDUCED_DECODE_PIXELS`) decode at the smallest scale, of 1/2, 1/4 and 1/8,
    that leaves :data:`REDUCED_DECODE_MARGIN` times the size it is fitted to along each side, whichever way its EXIF
    orientation turns it; other formats and smaller pictures decode whole (``Image.draft`` does nothing for them, and
    is not asked of a HEIF photo).

    Only for pictures that are padded: a folder model's pictures are decoded whole, as its training decoded them
    (:func:`centre_crop`)."""
    w, h = im.size
    # JPEG's draft decodes the picture itself at a smaller scale; pillow-heif's decodes an embedded thumbnail instead,
    # another picture, which a model would be shown in place of the photo
    if im.format == HEIF or w * h <= REDUCED_DECODE_PIXELS:
        return
    scale = max(min(width / w, height / h), min(width / h, height / w)) * REDUCED_DECODE_MARGIN
    if scale < 1:
        im.draft(None, (math.ceil(w * scale), math.ceil(h * scale)))


def centre_crop(im: Image.Image, size: int | tuple[int, int], channels: int) -> np.ndarray:
    """An opened image decoded as a folder of images stores it: uint8 ``size x size`` (grey) or ``size x size x 3``
    (``height x width`` for a ``size`` of ``(height, width)``).

    16-bit grey scaled to 8 bits (Pillow's convert would clip it); grey or RGB, alpha dropped and EXIF orientation
    not applied, as torchvision's ``pil_loader`` reads a file; resized to cover ``size`` (bilinear, antialiased when
    shrinking) and the centre cropped to it (``ImageOps.fit``: the usual Resize + CenterCrop of ImageNet-style
    evaluation).

    Raises:
        PixelRangeError: a 32-bit grey image with values of no known range (see :func:`_to_8bit`).
        OSError, ValueError, SyntaxError, Image.DecompressionBombError: Pillow's, for a truncated or corrupt file.
    """
    im = heif_in_8_bits(im)
    im.load()  # the full decode: a truncated file fails here, not at open
    im = _alpha_dropped(im, channels == 3)
    height, width = as_hw(size)
    if im.size != (width, height):
        im = ImageOps.fit(im, (width, height), method=Image.Resampling.BILINEAR)
    return np.asarray(im)


def _to_8bit(im: Image.Image) -> Image.Image:
    """Grey of more than 8 bits as 8-bit ``L``, scaled (Pillow's convert clips); other modes unchanged.

    ``I;16*`` is 16-bit. ``I`` (32-bit integers) and ``F`` (32-bit floats) do not say their range, so the values
    do: a float image whose values are all in [0, 1] is a [0, 1] image (the float convention, as torchvision's
    ``to_dtype(scale=True)`` and scikit-image read one); otherwise values up to 255 are 8-bit and up to 65535 16-bit.
    A negative, NaN or larger value has no range to read it in, and is refused.

    Raises:
        PixelRangeError: an ``I`` or ``F`` image with values outside [0, 65535] or NaN.
    """
    if not (im.mode.startswith("I;16") or im.mode in ("I", "F")):
        return im
    values = np.asarray(im, dtype=np.float64)
    if im.mode in ("I", "F") and values.size:
        low, high = float(values.min()), float(values.max())
        kind = "32-bit float" if im.mode == "F" else "32-bit integer"
        if math.isnan(low) or math.isnan(high) or low < 0 or high > 65535:
            found = "NaN" if math.isnan(low) or math.isnan(high) else f"values in [{low:g}, {high:g}]"
            raise PixelRangeError(f"a {kind} grey image with {found}: expected values in [0, 1] (float), "
                                  f"[0, 255] (8-bit) or [0, 65535] (16-bit); convert it to an 8- or 16-bit image")
        top = 1.0 if im.mode == "F" and high <= 1 else 255.0 if high <= 255 else 65535.0
    else:
        top = 65535.0
    # 8-bit = round(16-bit / 257) maps the two ranges onto each other (65535 -> 255)
    return Image.fromarray(np.clip(np.rint(values * (255 / top)), 0, 255).astype(np.uint8), "L")


def heif_in_8_bits(im: Image.Image) -> Image.Image:
    """An opened HEIF photo of more than 8 bits (an iPhone's HDR photos are 10-bit) decoded in 8 bits as a 16-bit PNG
    is (:func:`_to_8bit`): each value scaled from its range to 255 and rounded, ``round(v * 255 / 1023)`` for 10
    bits, where pillow-heif's opener drops the low bits (``v >> 2``, up to a level darker); other images unchanged,
    not decoded yet.

    Its primary image, as the opener reads it, the container's rotation and mirroring applied (libheif's; the EXIF
    orientation it keeps says 1)."""
    bits = im.info.get("bit_depth", 8) if im.format == HEIF else 8
    if bits <= 8:
        return im
    import pillow_heif  # its opener opened the file, so it imports

    im.fp.seek(0)
    heif = pillow_heif.open_heif(im.fp, convert_hdr_to_8bit=False)
    primary = heif[heif.primary_index]
    top = 2**bits - 1
    # pillow-heif gives 16 bits, the value shifted up: each of the 65,536 looked up in a table of its 8-bit value, so
    # that the 8-bit picture is all that is made (a 48-megapixel photo's 16-bit pixels are 275 MiB, a float or 32-bit
    # copy of them twice or four times that)
    to_8_bits = np.rint((np.arange(2**16) >> (16 - bits)) * (255 / top)).astype(np.uint8)
    values = to_8_bits[np.asarray(primary)]
    out = Image.fromarray(values, "L" if values.ndim == 2 else "RGBA" if values.shape[2] == 4 else "RGB")
    out.info = dict(im.info)
    return out


def _alpha_dropped(im: Image.Image, rgb: bool) -> Image.Image:
    """8-bit "L" or "RGB", alpha dropped (not laid on a background) as torchvision's ``pil_loader`` and OpenCV's
    ``imread`` drop it, 16-bit and float images rescaled (:func:`_to_8bit`)."""
    im = _to_8bit(im)
    if im.mode in ("P", "PA"):
        im = im.convert("RGBA")  # palettes with transparency convert cleanly only via RGBA (else Pillow warns)
    return _grey_or_rgb(im, rgb)


def _flatten(im: Image.Image, background: int, rgb: bool) -> Image.Image:
    """8-bit "L" or "RGB": alpha composited over ``background``, 16-bit and float images rescaled (:func:`_to_8bit`)."""
    im = _to_8bit(im)
    if im.mode in ("RGBA", "LA", "PA") or (im.mode == "P" and "transparency" in im.info):
        im = im.convert("RGBA")
        im = Image.alpha_composite(Image.new("RGBA", im.size, (background, background, background, 255)), im)
    return _grey_or_rgb(im, rgb)


def _grey_or_rgb(im: Image.Image, rgb: bool) -> Image.Image:
    """``im`` as 8-bit RGB or grey ``L``; a CIELAB picture (a LAB TIFF) reaches grey through RGB, the one mode Pillow
    converts it to."""
    if not rgb and im.mode == "LAB":
        im = im.convert("RGB")
    return im.convert("RGB" if rgb else "L")


def _fit_and_pad(im: Image.Image, height: int, width: int) -> Image.Image:
    """``height x width``: ``im`` resized (Lanczos) to fit inside it with its aspect ratio kept, in the middle of a
    canvas of the median colour of its four corners."""
    w, h = im.size
    scale = min(width / w, height / h)
    fitted = (min(width, max(1, round(w * scale))), min(height, max(1, round(h * scale))))
    resized = im.resize(fitted, Image.Resampling.LANCZOS) if fitted != (w, h) else im
    if fitted == (width, height):
        return resized
    corners = np.array([im.getpixel(p) for p in ((0, 0), (w - 1, 0), (0, h - 1), (w - 1, h - 1))])
    colour = np.median(corners, axis=0).astype(int)  # per channel
    canvas = Image.new(im.mode, (width, height), int(colour) if colour.ndim == 0 else tuple(colour.tolist()))
    canvas.paste(resized, ((width - fitted[0]) // 2, (height - fitted[1]) // 2))
    return canvas
