"""iPhone photos (HEIC/HEIF), read through pillow-heif (the ``heic`` extra) by the one decoder, cnnlab.picture, and
named with how to read them where it is missing; raw camera files named wherever a picture is refused or passed over.

The HEIC files are made here by pillow-heif's own encoder (libheif with x265), losslessly where pixels are compared;
the pixels a picture is held to are those pillow-heif decodes, put in a PNG, so that a HEIC photo is shown to a model
as the PNG of its pixels would be.
"""

from __future__ import annotations

import io
import os
import subprocess
import sys
import tracemalloc
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image, TiffImagePlugin, TiffTags

import data_support
from cnnlab import picture
from cnnlab.cli import main
from cnnlab.data import load_dataset
from cnnlab.errors import CnnlabError
from cnnlab.explore.imagefolder import list_images
from cnnlab.explore.images import decode_upload
from cnnlab.picture import LETTERBOX, ShorterSide, read_picture
from cnnlab.predict import image_files, load_image
from data_support import rng_image, write_classes
from test_predict import _checkpoint

home = data_support.home  # a fixture

IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")
try:
    import pillow_heif
except ImportError:
    pillow_heif = None
needs_heif = pytest.mark.skipif(
    pillow_heif is None and not IN_CI,
    reason='pillow-heif is not installed (pip install "cnnlab[heic]"); under CI=true this test runs and fails instead')
SRC = str(Path(picture.__file__).parents[1])
LOSSLESS = {"quality": -1, "chroma": 444}  # x265's lossless mode, no chroma subsampling


def _read(source, channels=3, size=16, **how) -> torch.Tensor:
    return read_picture(source, name="the photo", channels=channels, size=size, invert=False, max_bytes=2**26,
                        max_pixels=2**26, **how)


def _required():
    """pillow-heif, which a test marked ``needs_heif`` runs without only under CI=true, to fail."""
    assert pillow_heif is not None, 'CI=true but pillow-heif is missing: pip install "cnnlab[heic]"'
    return pillow_heif


def _heic(path: Path, im: Image.Image, **options) -> Path:
    """``im`` saved as a HEIC file by pillow-heif's encoder."""
    _required().register_heif_opener()  # its encoder, for Image.save (cnnlab registers only the opener, itself)
    im.save(path, format="HEIF", **LOSSLESS, **options)
    return path


def _twin(path: Path, pixels: np.ndarray | Image.Image) -> Path:
    """A PNG of ``pixels``: what a HEIC photo of them is to be read as."""
    (pixels if isinstance(pixels, Image.Image) else Image.fromarray(pixels)).save(path)
    return path


def _decoded(path: Path) -> np.ndarray:
    """The pixels pillow-heif decodes of a HEIC file's primary image, 8-bit."""
    heif = pillow_heif.open_heif(path)
    return np.asarray(heif[heif.primary_index])


FITS = [{}, {"crop": True}, {"fit": LETTERBOX}, {"fit": ShorterSide(16, "bicubic", floor=True)}]


@needs_heif
@pytest.mark.parametrize("how", FITS, ids=["pad", "crop", "letterbox", "shorter-side"])
@pytest.mark.parametrize("channels", [1, 3])
def test_a_heic_photo_is_read_as_the_png_of_its_pixels(tmp_path, how, channels):
    photo = _heic(tmp_path / "IMG_0001.HEIC", rng_image(1, (46, 30), "RGB"))
    png = _twin(tmp_path / "twin.png", _decoded(photo))
    assert torch.equal(_read(photo, channels, **how), _read(png, channels, **how))
    # an upload (no name: by its header), and cnnlab predict's file
    assert torch.equal(decode_upload(photo.read_bytes(), channels, 16, **how),
                       decode_upload(png.read_bytes(), channels, 16, **how))
    assert torch.equal(load_image(photo, channels=channels, size=16), load_image(png, channels=channels, size=16))
    assert image_files([tmp_path]) == [photo, png]  # listed in a folder, as the pictures beside it are


@needs_heif
@pytest.mark.parametrize("mode", ["RGB;16", "L;16"])
def test_a_10_bit_heic_photo_is_rounded_to_8_bits_as_a_16_bit_png_is(tmp_path, mode):
    """An iPhone's HDR photo is 10-bit: pillow-heif's opener gives it as 8-bit RGB by dropping the low bits (v >> 2),
    a level darker than the 16-bit PNG's rule (each value scaled from its range to 255 and rounded) in 170 of the 1024
    values, and grey as 16-bit ``I;16`` of the value shifted up (v << 6), 126 of them off by a level. Here it is the
    second, primary image of two: the one read."""
    v10 = np.arange(1024, dtype=np.uint16).reshape(32, 32)
    ramp = np.repeat(v10[..., None], 3, axis=2) if mode == "RGB;16" else v10
    heif = _required().from_bytes(mode="RGB;16", size=(20, 10), data=np.full((10, 20, 3), 4096, np.uint16).tobytes())
    heif.add_frombytes(mode=mode, size=(32, 32), data=(ramp << 6).tobytes())  # 16-bit in, 10-bit kept
    heif.save(tmp_path / "hdr.heic", primary_index=1, **LOSSLESS)
    pillow_heif.register_heif_opener()  # to ask its opener what it makes of the file
    opened = Image.open(tmp_path / "hdr.heic")
    assert opened.info["bit_depth"] == 10 and opened.mode == ("RGB" if mode == "RGB;16" else "I;16")
    assert opened.size == (32, 32)  # the primary image
    expected = np.rint(v10 * (255 / 1023)).astype(np.uint8)
    assert (expected != v10 >> 2).sum() == 170 and (expected != np.rint((v10 << 6) * (255 / 65535))).sum() == 126
    png = _twin(tmp_path / "twin.png", expected)
    for how in FITS:
        assert torch.equal(_read(tmp_path / "hdr.heic", 1, 32, **how), _read(png, 1, 32, **how)), how
    exif = Image.Exif()
    exif[0x0112] = 6  # and turned upright as an 8-bit photo is
    turned = pillow_heif.from_bytes(mode=mode, size=(32, 32), data=(ramp << 6).tobytes())
    turned.save(tmp_path / "turned.heic", exif=exif.tobytes(), **LOSSLESS)
    png = _twin(tmp_path / "upright.png", np.rot90(expected, -1).copy())
    for how in FITS:
        assert torch.equal(_read(tmp_path / "turned.heic", 1, 32, **how), _read(png, 1, 32, **how)), how



@needs_heif
def test_a_10_bit_heic_photo_is_brought_to_8_bits_holding_no_copy_of_its_16_bit_pixels(tmp_path):
    """A 48-megapixel HDR photo decodes to 275 MiB of 16-bit pixels: rounding them to 8 bits through a 32-bit copy
    held twice that again, beside the 8-bit picture; looked up in a table, the 8-bit picture is all that is made."""
    ramp = np.linspace(0, 1023, 600 * 800 * 3).astype(np.uint16).reshape(600, 800, 3)  # smooth: a small file
    heif = _required().from_bytes(mode="RGB;16", size=(800, 600), data=(ramp << 6).tobytes())
    heif.save(tmp_path / "hdr.heic")
    picture.picture_formats(tmp_path / "hdr.heic")  # pillow-heif's opener registered, as read_picture does
    opened = Image.open(tmp_path / "hdr.heic", formats=("HEIF",))
    assert opened.info["bit_depth"] == 10
    tracemalloc.start()
    try:
        eight = picture.heif_in_8_bits(opened)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert eight.mode == "RGB" and eight.size == (800, 600)
    assert peak < ramp.nbytes, f"{peak / ramp.nbytes:.2f} times the 16-bit pixels held while rounding them"

@needs_heif
def test_a_10_bit_heic_photo_with_alpha_is_judged_grey_by_the_pixels_it_is_decoded_to(tmp_path, home):
    """A folder is read as grey where most of its pictures are, an RGBA picture judged by its pixels: a 10-bit one's
    are the rounded ones it is decoded to, not the opener's (v >> 2), which drops a level 4k and a green 4k + 3 of
    1023 to the same 8-bit value where they round to k and k + 1."""
    root = tmp_path / "night"
    for k in range(8):
        v10 = np.full((12, 12, 4), 4 * k, np.uint16)
        v10[..., 1] += 3
        v10[..., 3] = 1023
        (root / "ab"[k % 2]).mkdir(parents=True, exist_ok=True)
        # RGB kept as it is (no YCbCr), so that the file holds these 10-bit values exactly
        _required().from_bytes(mode="RGBA;16", size=(12, 12), data=(v10 << 6).tobytes()).save(
            root / "ab"[k % 2] / f"{k}.heic", matrix_coefficients=0, **LOSSLESS)
    data = load_dataset(f"folder:{root}", image_size=12)
    images = torch.cat([data.train_images, data.test_images]).int()
    assert data.channels == 3 and len(images) == 8
    assert (images[:, 1] == images[:, 0] + 1).all() and torch.equal(images[:, 0], images[:, 2])


@needs_heif
def test_a_heic_photo_is_read_upright_and_its_alpha_laid_on_black(tmp_path):
    """The container's rotation (pillow-heif writes an EXIF orientation as one) is applied by libheif for every fit,
    the centre crop of a folder's model too: a folder of HEIC photos is decoded the same way for training
    (torchvision's pil_loader with pillow-heif's opener reads them so too). Transparent pixels are laid on black,
    as a PNG's are."""
    im = rng_image(2, (36, 20), "RGB")
    exif = Image.Exif()
    exif[0x0112] = 6  # the camera held upright: turn 90 degrees clockwise to show
    plain = _decoded(_heic(tmp_path / "plain.heic", im))
    turned = _heic(tmp_path / "turned.heic", im, exif=exif.tobytes())
    png = _twin(tmp_path / "upright.png", Image.fromarray(plain).transpose(Image.Transpose.ROTATE_270))
    for how in FITS:
        assert torch.equal(_read(turned, **how), _read(png, **how)), how
    rgba = np.concatenate([np.asarray(im), np.tile(np.arange(0, 252, 7, dtype=np.uint8), (20, 1))[..., None]], 2)
    photo = _heic(tmp_path / "alpha.heic", Image.fromarray(rgba, "RGBA"))
    decoded = _decoded(photo)
    assert decoded.shape[2] == 4 and (decoded[..., 3] < 255).any()
    png = _twin(tmp_path / "alpha.png", decoded)
    assert torch.equal(_read(photo), _read(png))
    assert _read(photo).sum() < _read(_twin(tmp_path / "opaque.png", decoded[..., :3])).sum()  # on black


@needs_heif
def test_a_large_heic_photo_is_decoded_whole_not_from_its_thumbnail(tmp_path, monkeypatch):
    """A JPEG above REDUCED_DECODE_PIXELS is decoded at a reduced scale (Image.draft); pillow-heif's draft decodes an
    embedded thumbnail instead, another picture, which the model was shown in place of the photo."""
    monkeypatch.setattr(picture, "REDUCED_DECODE_PIXELS", 0)  # every picture is "large"
    photo = _heic(tmp_path / "big.heic", rng_image(3, (96, 64), "RGB"), thumbnails=[32])
    assert Image.open(photo).info["thumbnails"] == [32]
    png = _twin(tmp_path / "twin.png", _decoded(photo))
    assert torch.equal(_read(photo, size=8), _read(png, size=8))


@needs_heif
def test_a_folder_of_heic_photos_is_read_and_cached_apart_from_the_folder_read_without_them(tmp_path, home,
                                                                                         monkeypatch):
    """Read without pillow-heif, the HEIC photos are passed over (and said); read with it, they are decoded: the
    cache's key holds every file read, so neither load is answered from the other's entry."""
    root = tmp_path / "pets"
    write_classes(root, {"cat": 5, "dog": 5}, size=(14, 12), mode="RGB")
    photos = [_heic(root / c / "IMG_0001.HEIC", rng_image(10 + k, (16, 14), "RGB"))
              for k, c in enumerate(("cat", "dog"))]
    expected = [picture.centre_crop(Image.open(_twin(tmp_path / f"{p.parent.name}.png", _decoded(p))), 12, 3)
                for p in photos]

    def every_image(data):
        return torch.cat([data.train_images, data.test_images])

    monkeypatch.setattr(picture, "heif_read", lambda: False)
    picture.picture_extensions.cache_clear()
    without = load_dataset(f"folder:{root}", image_size=12)
    assert len(every_image(without)) == 10
    assert 'they are HEIC photos (an iPhone\'s format), not read here: pip install "cnnlab[heic]"' in without.notices[0]
    monkeypatch.undo()
    picture.picture_extensions.cache_clear()
    with_them = load_dataset(f"folder:{root}", image_size=12)
    images = every_image(with_them)
    assert len(images) == 12 and not any("HEIC" in n for n in with_them.notices)
    for pixels in expected:
        assert any(torch.equal(im, torch.from_numpy(pixels.copy()).permute(2, 0, 1)) for im in images)
    monkeypatch.setattr(picture, "heif_read", lambda: False)  # and without it again: its own entry, not the other's
    picture.picture_extensions.cache_clear()
    assert torch.equal(every_image(load_dataset(f"folder:{root}", image_size=12)), every_image(without))
    picture.picture_extensions.cache_clear()


@needs_heif
def test_pillow_heif_is_loaded_at_the_first_heic_photo_not_at_import(tmp_path):
    photo = _heic(tmp_path / "IMG_0001.HEIC", rng_image(4, (20, 16), "RGB"))
    png = _twin(tmp_path / "a.png", _decoded(photo))
    code = ("import sys\nfrom pathlib import Path\n"
            "import cnnlab, cnnlab.cli, cnnlab.picture, cnnlab.predict, cnnlab.data\n"
            f"cnnlab.predict.load_image(Path({str(png)!r}))\n"
            "assert 'pillow_heif' not in sys.modules, 'loaded before a HEIC photo'\n"
            f"cnnlab.predict.load_image(Path({str(photo)!r}))\n"
            "assert 'pillow_heif' in sys.modules\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": os.pathsep.join([SRC, *sys.path])})
    assert done.returncode == 0, done.stderr


def test_without_pillow_heif_a_heic_photo_is_refused_in_one_line_that_says_how_to_read_it(tmp_path):
    """In a process where pillow-heif cannot be imported (whether or not it is installed here)."""
    photo = tmp_path / "IMG_0001.HEIC"
    photo.write_bytes(b"\x00\x00\x00\x18ftypheic\x00\x00\x00\x00mif1heic" + bytes(64))
    ckpt = _checkpoint(tmp_path / "grey.pt", 1, 28)
    code = ("import sys\nsys.modules['pillow_heif'] = None  # import pillow_heif raises ImportError\n"
            "from cnnlab.cli import main\n"
            f"sys.exit(main(['predict', {str(ckpt)!r}, {str(photo)!r}, '--device', 'cpu']))\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": os.pathsep.join([SRC, *sys.path])})
    assert done.returncode == 2, done.stderr
    assert done.stderr.count("\n") == 1
    assert done.stderr.startswith(f"cnnlab predict: error: image {photo} is a HEIC photo (an iPhone's format), which "
                                  "is not read here")
    assert done.stderr.endswith(': pip install "cnnlab[heic]" to read it, or save it as JPEG (on the iPhone: Settings '
                                "> Camera > Formats > Most Compatible)\n")



def test_a_pillow_heif_that_cannot_be_imported_is_named_with_its_error_not_as_missing(tmp_path):
    """pillow-heif installed but failing at import (a wheel built for another Pillow, a library missing): predict
    told the user to install the extra they had installed, and a folder named its HEIC photos "not a readable image
    (UnidentifiedImageError ...)". Both say it is installed, why its import failed and to reinstall it."""
    broken = tmp_path / "site" / "pillow_heif"
    broken.mkdir(parents=True)
    (broken / "__init__.py").write_text('raise ImportError("libheif.so.1: cannot open shared object file")\n')
    photo = tmp_path / "IMG_0001.HEIC"
    photo.write_bytes(b"\x00\x00\x00\x18ftypheic\x00\x00\x00\x00mif1heic" + bytes(64))
    root = tmp_path / "birds"
    write_classes(root, {"heron": 4, "owl": 4})
    (root / "owl" / photo.name).write_bytes(photo.read_bytes())
    ckpt = _checkpoint(tmp_path / "grey.pt", 1, 28)
    why = ("is a HEIC photo (an iPhone's format), and pillow-heif, which reads them, is installed but cannot be "
           'imported (libheif.so.1: cannot open shared object file): reinstall it for this Pillow (pip '
           'install "cnnlab[heic]" --force-reinstall)')
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path / "site"), SRC, *sys.path]),
           "CNNLAB_CACHE": str(tmp_path / "cache")}
    in_folder = f"{root / 'owl' / photo.name} {why} (pass --skip-bad-images"
    for args, line in ((["predict", str(ckpt), str(photo), "--device", "cpu"], f"image {photo} {why}"),
                       (["train", "lenet", "--dataset", f"folder:{root}", "--epochs", "1", "--device", "cpu",
                         "--out", str(tmp_path / "run")], in_folder)):
        done = subprocess.run([sys.executable, "-m", "cnnlab", *args], capture_output=True, text=True, env=env)
        assert done.returncode == 2 and done.stderr.count("\n") == 1, done.stderr
        assert line in done.stderr, done.stderr

def _dng() -> bytes:
    """A TIFF with the DNGVersion tag (50706): how Pillow sees a DNG, its first image a preview."""
    tags = TiffImagePlugin.ImageFileDirectory_v2()
    tags[50706] = b"\x01\x04\x00\x00"
    tags.tagtype[50706] = TiffTags.BYTE
    out = io.BytesIO()
    Image.new("RGB", (16, 12), (90, 120, 30)).save(out, format="TIFF", tiffinfo=tags)
    return out.getvalue()


RAW_LINE = "not read here: export a JPEG or TIFF from your camera's software"


def test_a_raw_camera_file_is_named_wherever_a_picture_is_refused(tmp_path, capsys):
    """Nikon's NEF, Sony's ARW, Pentax's PEF and a DNG are TIFF files whose first image is a small preview: predict
    answered on that thumbnail as if it were the photo. Those of another container were "not an image of a format
    read here", and a folder's were passed over as no image."""
    nef = tmp_path / "DSC_0001.NEF"
    Image.new("RGB", (16, 12), (200, 30, 30)).save(nef, format="TIFF")  # the preview Pillow would read
    with pytest.raises(CnnlabError, match=f"^image {nef} is a raw camera file \\(Nikon NEF\\), {RAW_LINE}$"):
        load_image(nef)
    dng = _dng()
    with pytest.raises(CnnlabError, match=f"^the upload is a raw camera file \\(Adobe DNG\\), {RAW_LINE}$"):
        decode_upload(dng, 3, 16)
    for head, kind in ((b"II*\x00\x10\x00\x00\x00CR\x02\x00", "Canon CR2"),
                       (b"\x00\x00\x00\x18ftypcrx \x00\x00\x00\x01", "Canon CR3"),
                       (b"FUJIFILMCCD-RAW 0201", "Fujifilm RAF"), (b"IIRO\x08\x00\x00\x00", "Olympus ORF"),
                       (b"IIU\x00\x18\x00\x00\x00", "Panasonic RW2")):
        with pytest.raises(CnnlabError, match=f"^the upload is a raw camera file \\({kind}\\), {RAW_LINE}$"):
            decode_upload(head + bytes(64), 3, 16)
    # predict on a folder: the raw file is listed beside the pictures, so that it is reported and the exit code says so
    photos = tmp_path / "photos"
    photos.mkdir()
    Image.new("L", (28, 28), 80).save(photos / "a.png")
    (photos / "IMG_0002.CR3").write_bytes(b"\x00\x00\x00\x18ftypcrx \x00\x00\x00\x01" + bytes(64))
    assert image_files([photos]) == [photos / "IMG_0002.CR3", photos / "a.png"]
    ckpt = str(_checkpoint(tmp_path / "grey.pt", 1, 28))
    assert main(["predict", ckpt, str(photos), "--device", "cpu"]) == 2
    out, err = capsys.readouterr()
    assert out.startswith(str(photos / "a.png")) and err == (f"cnnlab predict: error: image {photos / 'IMG_0002.CR3'} "
                                                             f"is a raw camera file (Canon CR3), {RAW_LINE}\n")
    (photos / "a.png").unlink()
    with pytest.raises(CnnlabError, match=f"holds no image files .*; it is a raw camera file \\(Canon CR3\\), "
                                          f"{RAW_LINE}$"):
        image_files([photos])
    # the explorer's --images: listed, then refused by name
    Image.new("L", (28, 28), 80).save(photos / "a.png")
    assert [p for p, _ in list_images(photos)[0]] == [photos / "IMG_0002.CR3", photos / "a.png"]


def test_a_folders_raw_camera_files_are_named_where_they_are_passed_over(tmp_path, home):
    root = tmp_path / "birds"
    write_classes(root, {"heron": 4, "owl": 4})
    (root / "heron" / "DSC_0001.nef").write_bytes(b"II*\x00" + bytes(64))
    (root / "owl" / "IMG_0001.CR3").write_bytes(bytes(64))
    (root / "owl" / "notes.txt").write_text("x")
    data = load_dataset(f"folder:{root}", image_size=12)
    assert data.notices[0].endswith(f"; 2 of them are raw camera files (Canon CR3, Nikon NEF), {RAW_LINE}")
    (root / "kite").mkdir()  # a class of raw files alone: its refusal says what they are
    (root / "kite" / "DSC_0001.ARW").write_bytes(bytes(64))
    with pytest.raises(CnnlabError, match=f"class 'kite' has no images \\(expected files ending in .*\\); it is a raw "
                                          f"camera file \\(Sony ARW\\), {RAW_LINE}$"):
        load_dataset(f"folder:{root}", image_size=12)



def test_a_dng_named_as_a_tiff_in_a_folder_is_refused_not_trained_on_as_its_preview(tmp_path, home):
    """predict and the explorer tell a DNG by its tag under any name; a folder of images opened one named .tif as
    the TIFF it is, and trained on its preview as the photo."""
    root = tmp_path / "birds"
    write_classes(root, {"heron": 4, "owl": 4})
    shot = root / "owl" / "shot.tif"
    shot.write_bytes(_dng())
    with pytest.raises(CnnlabError, match=f"^{shot} is a raw camera file \\(Adobe DNG\\), {RAW_LINE} \\(pass "
                                          f"--skip-bad-images"):
        load_dataset(f"folder:{root}", image_size=12)
    data = load_dataset(f"folder:{root}", image_size=12, skip_bad=True)
    assert len(data.train_images) + len(data.test_images) == 8  # the eight pictures, not the preview

def test_a_csv_row_naming_a_raw_camera_file_says_what_it_is(tmp_path, home):
    root = tmp_path / "shots"
    (root / "images").mkdir(parents=True)
    for k in range(6):
        rng_image(k, (12, 12), "L").save(root / "images" / f"{k}.png")
    (root / "images" / "DSC_0001.NEF").write_bytes(b"II*\x00" + bytes(64))
    rows = "".join(f"images/{k}.png,{'ab'[k % 2]}\n" for k in range(6))
    (root / "labels.csv").write_text(f"file,label\n{rows}images/DSC_0001.NEF,a\n")
    line = (f"row 8: images/DSC_0001.NEF is not of an image format read here \\(expected a file ending in .*\\); "
            f"it is a raw camera file \\(Nikon NEF\\), {RAW_LINE}$")
    with pytest.raises(CnnlabError, match=line):
        load_dataset(f"folder:{root}", image_size=12)
