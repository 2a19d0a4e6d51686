"""cnnlab.predict: real test images written as files, odd formats, and files that must be refused in one line."""

from __future__ import annotations

import base64
import csv
import functools
import io
import json
import os
import re
import shlex
import struct
import subprocess
import sys
import warnings
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image, ImageFile

import report_fixtures
from cli_support import strict_json
from cnnlab import predict
from cnnlab.cli import main
from cnnlab.data import CLASSES, load_dataset, load_fashion_mnist
from cnnlab.data.folder import read_csv_labels
from cnnlab.errors import CnnlabError
from cnnlab.explore import sources
from cnnlab.explore.imagefolder import list_images
from cnnlab.explore.images import decode_upload
from cnnlab.explore.model import Options
from cnnlab.explore.sources import open_with_images, predict_any, predict_any_chunks
from cnnlab.export import export_checkpoint
from cnnlab.inference import Trained, load_trained, predict_logits
from cnnlab.io import BYTE_ESCAPES
from cnnlab.models import create_model
from cnnlab.predict import format_predictions, image_files, load_image, predict_files
from cnnlab.runs.checkpoint import save_checkpoint

trained_run, run_copy = report_fixtures.trained_run, report_fixtures.run_copy  # shared fixtures

N = 24


@pytest.fixture(scope="module")
def test_pngs(tmp_path_factory):
    """The first N test images as 28 x 28 grey PNG files, with their labels."""
    data = load_fashion_mnist()
    folder = tmp_path_factory.mktemp("pngs")
    paths = []
    for i in range(N):
        paths.append(folder / f"test{i}.png")
        Image.fromarray(data.test_images[i].numpy()).save(paths[-1])
    return paths, data.test_images[:N], data.test_labels[:N]


def test_predictions_of_test_pngs_equal_the_models_on_the_dataset(trained_run, test_pngs):
    paths, images, labels = test_pngs
    results = predict_files(trained_run / "last.pt", paths, topk=3, device="cpu")
    _t = load_trained(trained_run / "last.pt")
    model, pre, _ = _t.model, _t.preprocess, _t.checkpoint
    probs = predict_logits(model, pre, images).softmax(1)  # oracle: the evaluation path on the uint8 tensor
    assert [r["file"] for r in results] == [str(p) for p in paths]
    for r, p in zip(results, probs, strict=True):
        assert [t["index"] for t in r["top"]] == p.topk(3).indices.tolist()
        assert [t["probability"] for t in r["top"]] == pytest.approx(p.topk(3).values.tolist(), abs=1e-6)
        assert [t["class"] for t in r["top"]] == [CLASSES[t["index"]] for t in r["top"]]
    top1 = torch.tensor([r["top"][0]["index"] for r in results])
    assert (top1 == labels).float().mean() >= 0.5, "the trained fixture gets most test images right"


def test_large_inverted_colour_photo_needs_invert(trained_run, test_pngs, tmp_path):
    """A dark garment on white, 10x larger, RGB JPEG: --invert turns it back into what the model knows."""
    paths, images, _ = test_pngs
    _t = load_trained(trained_run / "last.pt")
    model, pre, _ = _t.model, _t.preprocess, _t.checkpoint
    pred = predict_logits(model, pre, images).argmax(1)
    photo = tmp_path / "photo.jpg"
    Image.fromarray(255 - images[2].numpy()).resize((280, 280), Image.Resampling.BICUBIC).convert("RGB").save(
        photo, quality=95)
    x = load_image(photo, invert=True)[0]
    assert x.shape == (28, 28) and 0 <= x.min() and x.max() <= 1
    assert (x - images[2].float() / 255).abs().mean() < 0.03  # the round trip nearly restores the test image
    [result] = predict_files(trained_run / "last.pt", [photo], invert=True, device="cpu")
    assert result["top"][0]["index"] == int(pred[2])


def test_non_square_transparent_and_16_bit_images(tmp_path):
    # 28 x 56 garment on black: padded to 56 x 56 with the black background, so the garment keeps its shape.
    tall = np.zeros((56, 28), np.uint8)
    tall[:, 10:18] = 255
    Image.fromarray(tall).save(tmp_path / "tall.png")
    x = load_image(tmp_path / "tall.png")[0]
    assert x[:, :7].max() < 0.05 and x[:, 21:].max() < 0.05 and x[:, 12:16].min() > 0.9
    # Transparent background: black for white-on-black input, white before inverting for --invert.
    rgba = np.zeros((28, 28, 4), np.uint8)
    rgba[8:20, 8:20] = (200, 200, 200, 255)
    Image.fromarray(rgba, "RGBA").save(tmp_path / "alpha.png")
    plain, inverted = load_image(tmp_path / "alpha.png")[0], load_image(tmp_path / "alpha.png", invert=True)[0]
    assert plain[0, 0] == 0 and inverted[0, 0] == 0  # background black either way after the inversion
    assert plain[14, 14] == pytest.approx(200 / 255, abs=0.01)
    assert inverted[14, 14] == pytest.approx(55 / 255, abs=0.01)
    # 16-bit grey PNG: scaled by 65535, same picture as its 8-bit twin.
    grey = (np.arange(28 * 28).reshape(28, 28) % 256).astype(np.uint8)
    Image.fromarray(grey.astype(np.uint16) * 257).save(tmp_path / "deep.png")
    torch.testing.assert_close(load_image(tmp_path / "deep.png")[0], torch.from_numpy(grey / 255.0).float(),
                               atol=1 / 255, rtol=0)


def test_32_bit_grey_pictures_are_read_in_the_range_their_values_fit(tmp_path):
    # A [0, 1] float TIFF was black; one at 0..255 as floats, or as 32-bit integers, is the 8-bit picture.
    grey = (np.arange(28 * 28).reshape(28, 28) % 256).astype(np.uint8)
    for name, values, mode in [("unit.tiff", grey / 255, "F"), ("bytes.tiff", grey, "F"), ("int.tiff", grey, "I"),
                               ("deep.tiff", grey.astype(np.int32) * 257, "I")]:
        Image.fromarray(values.astype(np.float32 if mode == "F" else np.int32), mode).save(tmp_path / name)
        torch.testing.assert_close(load_image(tmp_path / name)[0], torch.from_numpy(grey / 255.0).float(),
                                   atol=1 / 255, rtol=0)
    Image.fromarray(np.full((8, 8), -2.0, np.float32), "F").save(tmp_path / "negative.tiff")
    with pytest.raises(CnnlabError, match=r"^image \S*negative.tiff is a 32-bit float grey image with values in "
                                          r"\[-2, -2\]: expected values in \[0, 1\] \(float\)"):
        load_image(tmp_path / "negative.tiff")


def test_a_strip_shaped_picture_is_resized_before_it_is_padded(tmp_path, monkeypatch):
    # A 1 x 60000 PNG (a few hundred bytes, within the pixel limit) was padded to 60000 x 60000 before the resize:
    # gigabytes for one upload (MemoryError, an internal error from the explorer's server).
    strip = np.zeros((1, 60000), np.uint8)
    strip[0, 20000:40000] = 255
    Image.fromarray(strip).save(tmp_path / "strip.png")
    made = []

    def new(mode, size, *args, **kwargs):
        made.append(tuple(size))
        if size[0] * size[1] > 10**6:  # the old canvas: refused here rather than allocated
            raise MemoryError(f"a {size[0]} x {size[1]} canvas")
        return real_new(mode, size, *args, **kwargs)

    real_new = Image.new
    monkeypatch.setattr(Image, "new", new)
    x = decode_upload((tmp_path / "strip.png").read_bytes(), 1, 28)
    assert made and max(w * h for w, h in made) <= 28 * 28
    # The strip fills one row in the middle (Lanczos: the bright middle third), the rest is its corners' colour.
    assert x.shape == (1, 28, 28) and int(x[0, :13].max()) == 0 and int(x[0, 14:].max()) == 0
    assert x[0, 13, 10:18].min() > 200 and x[0, 13, :7].max() < 30


def test_a_cielab_tiff_is_read_for_grey_and_rgb_models(tmp_path):
    # Pillow converts LAB to RGB only: for a grey model it was refused as "truncated or corrupt".
    from PIL import ImageCms

    rgb = Image.fromarray(np.random.default_rng(0).integers(0, 256, (12, 12, 3), dtype=np.uint8))
    to_lab = ImageCms.buildTransform(ImageCms.createProfile("sRGB"), ImageCms.createProfile("LAB"), "RGB", "LAB")
    ImageCms.applyTransform(rgb, to_lab).save(tmp_path / "lab.tiff")
    with Image.open(tmp_path / "lab.tiff") as im:
        assert im.mode == "LAB"
        as_rgb = im.convert("RGB")
    colour = load_image(tmp_path / "lab.tiff", channels=3, size=12)
    assert torch.equal(colour, torch.from_numpy(np.array(as_rgb)).permute(2, 0, 1).float() / 255)
    grey = load_image(tmp_path / "lab.tiff", channels=1, size=12)
    assert torch.equal(grey[0], torch.from_numpy(np.array(as_rgb.convert("L"))).float() / 255)


def test_an_iphones_heic_photo_is_named_with_how_to_read_it(tmp_path, heif_absent):
    # The first bytes of a HEIC photo: an ISO file whose ftyp box names the HEIF brand "heic" (AVIF names "avif").
    head = b"\x00\x00\x00\x18ftypheic\x00\x00\x00\x00mif1heic"
    (tmp_path / "photos").mkdir()
    photo = tmp_path / "photos" / "IMG_0001.HEIC"
    photo.write_bytes(head + bytes(64))
    advice = 'pip install "cnnlab[heic]" to read it, or save it as JPEG (on the iPhone: Settings > Camera > ' \
        'Formats > Most Compatible)'
    with pytest.raises(CnnlabError, match=re.escape(f"image {photo} is a HEIC photo (an iPhone's format), which is "
                                                    "not read here; expected PNG, JPEG,")) as refused:
        load_image(photo)
    assert str(refused.value).endswith(f": {advice}")
    with pytest.raises(CnnlabError, match=re.escape("the upload is a HEIC photo")):  # by its header: no name
        decode_upload(photo.read_bytes(), 3, 32)
    with pytest.raises(CnnlabError, match=re.escape(f"holds no image files (expected .png, .jpg, ... directly inside "
                                                    f"it); it is a HEIC photo (an iPhone's format), not read here: "
                                                    f"{advice}")):
        image_files([photo.parent])
    with pytest.raises(CnnlabError, match=re.escape("or class subfolders of them); it is a HEIC photo")):
        list_images(photo.parent)  # the explorer's --images
    other = tmp_path / "photos" / "x.png"  # another format of the same box structure is not called HEIC
    other.write_bytes(head.replace(b"heic", b"qt  ") + bytes(64))  # a QuickTime film's (Canon's CR3 is a raw file)
    with pytest.raises(CnnlabError, match="is not an image of a format read here"):
        load_image(other)


def _png_header(width: int, height: int) -> bytes:
    """A PNG whose header claims width x height grey pixels but that holds almost no data."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")


@pytest.mark.parametrize("name, content, match", [
    ("empty.png", b"", "is empty"),
    ("notes.png", b"these are not pixels", "not an image"),
    ("truncated.png", None, "truncated or corrupt"),
    ("huge.png", _png_header(15_000, 12_000), "claims too many pixels .a decompression bomb..; expected at most 179 "
                                              "megapixels"),
    ("bomb.png", _png_header(100_000, 100_000), "decompression bomb"),
    ("missing.png", "absent", "does not exist"),
])
def test_bad_files_are_refused_in_one_line_naming_the_file(trained_run, test_pngs, tmp_path, monkeypatch, name,
                                                           content, match):
    path = tmp_path / name
    if content is None:
        path.write_bytes(test_pngs[0][0].read_bytes()[:80])
    elif content != "absent":
        path.write_bytes(content)
    # No pixel of a refused image may be decoded: fail loudly if PIL starts to.
    if name in ("huge.png", "bomb.png"):
        monkeypatch.setattr(ImageFile.ImageFile, "load", lambda self: pytest.fail("decoded a refused image"))
    with pytest.raises(CnnlabError, match=match) as e:
        predict_files(trained_run / "last.pt", [path, test_pngs[0][0]], device="cpu")
    assert "\n" not in str(e.value) and str(path) in str(e.value)


def test_a_camera_sized_picture_is_read_as_a_folder_of_them_would_be(trained_run, tmp_path):
    """A model trained on a folder of 61-megapixel photos (which the folder loader reads) could not be asked about
    one: predict refused pictures over 50 megapixels."""
    Image.new("L", (9_000, 7_000), 40).save(tmp_path / "camera.png")
    [result] = predict_files(trained_run / "last.pt", [tmp_path / "camera.png"], device="cpu")
    assert result["file"] == str(tmp_path / "camera.png") and len(result["top"]) == 3


def test_a_file_name_that_is_not_utf8_is_printed_as_its_bytes(trained_run, test_pngs, tmp_path):
    """Under a strict UTF-8 stdout (en_US.UTF-8's; PYTHONIOENCODING=utf-8 here) a Latin-1 file name was an internal
    UnicodeEncodeError, as was every note naming one (train --skip-bad-images); it is printed as the bytes it is."""
    name = os.fsdecode(b"caf\xe9.png")
    (tmp_path / name).write_bytes(test_pngs[0][0].read_bytes())
    done = subprocess.run([sys.executable, "-m", "cnnlab", "predict", str(trained_run / "last.pt"), str(tmp_path)],
                          capture_output=True, timeout=300, env={**os.environ, "PYTHONIOENCODING": "utf-8",
                                                                 "OMP_NUM_THREADS": "1"})
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith(os.fsencode(str(tmp_path)) + b"/caf\xe9.png: ")


def test_json_names_a_file_whose_name_is_not_utf8_in_text_any_reader_takes_and_keeps_its_bytes(tmp_path):
    """--json and --jsonl wrote a file name that is not UTF-8 (Linux allows any bytes) as "\\udcff", a lone surrogate
    that strict JSON readers refuse: the name has U+FFFD for each such byte, and ``file_bytes`` its exact bytes
    (base64), which open the file; a bad file's error and a class name that is not UTF-8 are written alike, and a name
    that is UTF-8 (accents too) is written as it is, with no ``file_bytes``."""
    odd_class = os.fsdecode(b"chat\xe9")
    ckpt = _checkpoint(tmp_path / "model.pt", 1, 28, classes=("cat", odd_class))
    folder = tmp_path / "pictures"
    folder.mkdir()
    names = [b"caf\xe9.png", "café.png".encode(), b"plain.png"]
    for name in names:
        Image.new("L", (28, 28), 100).save(os.path.join(os.fsencode(folder), name))
    (folder / os.fsdecode(b"bad\xff.png")).write_bytes(b"not a picture")
    outputs = []
    for given_as in ("--json", "--jsonl"):  # under a strict UTF-8 stdout (en_US.UTF-8's), as a user's shell has it
        done = subprocess.run([sys.executable, "-m", "cnnlab", "predict", str(ckpt), str(folder), given_as, "--top",
                               "2"], capture_output=True, timeout=300,
                              env={**os.environ, "PYTHONIOENCODING": "utf-8", "OMP_NUM_THREADS": "1"})
        assert done.returncode == 2 and done.stderr.count(b"\n") == 1, done.stderr  # the bad file
        outputs.append(done.stdout.decode("utf-8"))  # strict: raises on any byte that is not UTF-8
    document = strict_json(outputs[0])
    assert [strict_json(line) for line in outputs[1].splitlines()] == document
    by_name = {os.path.basename(base64.b64decode(r["file_bytes"]) if "file_bytes" in r else r["file"].encode()): r
               for r in document}
    assert sorted(by_name) == sorted([*names, b"bad\xff.png"])
    bad, latin, accented, plain = (by_name[n] for n in (b"bad\xff.png", *names))
    assert latin["file"] == f"{folder}/caf\ufffd.png" and bad["file"] == f"{folder}/bad\ufffd.png"
    assert open(base64.b64decode(latin["file_bytes"]), "rb").read(8) == b"\x89PNG\r\n\x1a\n"  # opens the very file
    assert "image " + bad["file"] in bad["error"] and "top" not in bad
    assert accented["file"] == f"{folder}/café.png" and plain["file"] == f"{folder}/plain.png"
    assert "file_bytes" not in accented and "file_bytes" not in plain
    assert sorted(t["class"] for t in plain["top"]) == ["cat", "chat\ufffd"]


def test_stderr_shows_the_bytes_of_a_file_name_that_is_not_utf8(tmp_path):
    """An error line on stderr showed a file name that is not UTF-8 with Python's escape of the lone surrogate that
    holds its byte ("bad\\udcff.png"), which names no byte: it shows the byte ("bad\\xff.png"), a UTF-8 name (accents
    too) as it is, and the line is UTF-8; stdout still writes such a name's own bytes, a program's input."""
    ckpt = _checkpoint(tmp_path / "model.pt", 1, 28, classes=("cat", "dog"))
    folder = tmp_path / "pictures"
    folder.mkdir()
    Image.new("L", (28, 28), 100).save(os.path.join(os.fsencode(folder), b"caf\xe9.png"))
    (folder / os.fsdecode(b"bad\xff.png")).write_bytes(b"not a picture")
    missing = os.fsencode(tmp_path) + b"/gon\xe9 " + "café.png".encode()  # a Latin-1 byte, then UTF-8
    shown = {}
    for name, given in (("folder", os.fsencode(folder)), ("missing", missing)):
        done = subprocess.run([sys.executable, "-m", "cnnlab", "predict", str(ckpt), given, "--top", "2"],
                              capture_output=True, timeout=300,
                              env={**os.environ, "PYTHONIOENCODING": "utf-8", "OMP_NUM_THREADS": "1"})
        assert done.returncode == 2 and done.stderr.count(b"\n") == 1, done.stderr
        shown[name] = done.stderr.decode("utf-8")  # strict: raises on any byte that is not UTF-8
        if name == "folder":
            assert done.stdout.startswith(os.fsencode(folder) + b"/caf\xe9.png: "), done.stdout
    assert shown["folder"].startswith(f"cnnlab predict: error: image {folder}/bad\\xff.png is not an image "), shown
    assert shown["missing"] == (f"cnnlab predict: error: image {tmp_path}/gon\\xe9 café.png does not exist or is "
                                "not a file\n")


def test_the_escapes_name_each_byte_and_leave_the_rest_to_backslashreplace():
    """What :func:`cnnlab.io.byte_escapes` writes, on a UTF-8 stream and on an ASCII one (LANG=C without UTF-8)."""
    text = os.fsdecode(b"caf\xe9 \x80\xff") + " é \ud800."
    for encoding, written in (("utf-8", "caf\\xe9 \\x80\\xff é \\ud800.".encode()),
                              ("ascii", b"caf\\xe9 \\x80\\xff \\xe9 \\ud800.")):
        stream = io.TextIOWrapper(io.BytesIO(), encoding=encoding, errors=BYTE_ESCAPES, write_through=True)
        stream.write(text)
        assert stream.buffer.getvalue() == written, encoding


def test_topk_and_formatting(trained_run, test_pngs):
    paths = test_pngs[0][:2]
    results = predict_files(trained_run / "last.pt", paths, topk=50, device="cpu")
    assert all(len(r["top"]) == 10 for r in results)  # clipped to the number of classes
    probs = [t["probability"] for t in results[0]["top"]]
    assert probs == sorted(probs, reverse=True) and sum(probs) == pytest.approx(1, abs=1e-5)
    text = format_predictions(predict_files(trained_run / "last.pt", paths, topk=2, device="cpu"))
    lines = text.splitlines()
    assert len(lines) == 2 and lines[0].startswith(f"{paths[0]}: ") and lines[0].count("%") == 2
    for bad in (0, -1, True, 2.5):
        with pytest.raises(CnnlabError, match="topk"):
            predict_files(trained_run / "last.pt", paths, topk=bad)
    with pytest.raises(CnnlabError, match="at least one image"):
        predict_files(trained_run / "last.pt", [])


def test_cli_predict_json(trained_run, test_pngs, capsys):
    assert main(["predict", str(trained_run / "last.pt"), str(test_pngs[0][1]), "--top", "2", "--json",
                 "--device", "cpu"]) == 0
    [result] = json.loads(capsys.readouterr().out)
    assert result["file"] == str(test_pngs[0][1]) and len(result["top"]) == 2
    assert main(["predict", str(trained_run / "last.pt"), "nowhere.png", "--device", "cpu"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "nowhere.png" in err
    # --top above the class count showed every class without a word
    assert main(["predict", str(trained_run / "last.pt"), str(test_pngs[0][1]), "--top", "25", "--json",
                 "--device", "cpu"]) == 0
    out, err = capsys.readouterr()
    assert len(json.loads(out)[0]["top"]) == 10
    assert err == "cnnlab predict: note: --top 25 asks for more classes than the model's 10; all 10 are shown\n"


# ----------------------------------------------------------------------------- any dataset's checkpoint
def _checkpoint(path, channels: int, image_size: int, classes=("cat", "dog", "ship", "frog"),
                dataset: str = "folder:somewhere"):
    """An untrained ReLU LeNet checkpoint for ``channels`` x ``image_size`` images of ``classes`` (inputs 28 px)."""
    torch.manual_seed(channels * 100 + image_size)
    model = create_model("lenet-relu", num_classes=len(classes), in_channels=channels)
    save_checkpoint({"model_name": "lenet-relu", "num_classes": len(classes), "in_channels": channels,
                     "input_size": 28, "normalize": None, "ops": "torch", "config": {"tta": False},
                     "model": model.state_dict(),
                     "dataset": {"name": dataset, "classes": list(classes), "channels": channels,
                                 "image_size": image_size, "mean": [0.4] * channels, "std": [0.3] * channels,
                                 "flip": True}}, path)
    return path


@pytest.mark.parametrize("channels, image_size", [(3, 32), (1, 20)])
def test_predictions_follow_the_checkpoints_channels_size_and_classes(tmp_path, channels, image_size):
    ckpt = _checkpoint(tmp_path / "model.pt", channels, image_size)
    g = torch.Generator().manual_seed(1)
    images = torch.randint(0, 256, (5, channels, image_size, image_size), dtype=torch.uint8, generator=g)
    paths = []
    for i, image in enumerate(images):
        paths.append(tmp_path / f"img{i}.png")
        array = image.permute(1, 2, 0).numpy()
        Image.fromarray(array if channels == 3 else array[:, :, 0]).save(paths[-1])
    results = predict_files(ckpt, paths, topk=4, device="cpu")
    probs = load_trained(ckpt).logits(images).softmax(1)  # oracle: the inference path on the stored tensor
    for r, p in zip(results, probs, strict=True):
        assert [t["index"] for t in r["top"]] == p.topk(4).indices.tolist()
        assert [t["probability"] for t in r["top"]] == pytest.approx(p.topk(4).values.tolist(), abs=1e-6)
        assert {t["class"] for t in r["top"]} == {"cat", "dog", "ship", "frog"}
    assert load_image(paths[0], channels=channels, size=image_size).shape == (channels, image_size, image_size)


def test_a_folder_models_pictures_are_decoded_as_its_training_images_were(tmp_path, monkeypatch):
    # A picture of its own training set must be the image the model trained on, in predict and in the explorer
    # (its --images folder and its uploads): cropped to the centre (not padded), alpha dropped, EXIF orientation not
    # applied, as the folder loader decoded it. Padding gave a wide picture's sides to a model that had only seen
    # its centre.
    monkeypatch.setenv("CNNLAB_CACHE", str(tmp_path / "cache"))
    data, g = tmp_path / "data", np.random.default_rng(0)
    files = {"a/wide.png": ("RGB", (48, 24)), "a/tall.png": ("RGBA", (20, 40)), "a/turned.jpg": ("RGB", (40, 30)),
             "a/palette.png": ("P", (30, 18)), "b/square.png": ("RGB", (16, 16))}
    for split in ("train", "test"):
        for name, (mode, size) in files.items():
            path = data / split / name
            path.parent.mkdir(parents=True, exist_ok=True)
            array = g.integers(0, 256, (size[1], size[0], 4), dtype=np.uint8)
            image = Image.fromarray(array, "RGBA").convert(mode) if mode != "P" else \
                Image.fromarray(array[..., :3], "RGB").quantize(16)
            if name.endswith(".jpg"):
                exif = Image.Exif()
                exif[0x0112] = 6  # orientation: rotated; the folder loader does not turn it
                image.save(path, exif=exif)
            else:
                image.save(path, **({"transparency": 0} if mode == "P" else {}))
    dataset = load_dataset(f"folder:{data}", image_size=16)
    stored = dict(zip(sorted(files), dataset.train_images, strict=True))  # the train/ files, in scan order
    ckpt = _checkpoint(tmp_path / "model.pt", 3, 16, classes=("a", "b"), dataset=f"folder:{data}")
    assert load_trained(ckpt).meta.crops_pictures
    paths = [data / "train" / name for name in sorted(files)]
    for name, path in zip(sorted(files), paths, strict=True):
        assert torch.equal(load_image(path, channels=3, size=16, crop=True), stored[name].float() / 255), name
    padded = load_image(data / "train" / "a/wide.png", channels=3, size=16)  # as for the other datasets' models
    assert not torch.equal(padded, stored["a/wide.png"].float() / 255)
    results = predict_files(ckpt, paths, topk=2, device="cpu")
    probs = load_trained(ckpt).logits(torch.stack([stored[n] for n in sorted(files)])).softmax(1)
    for r, p in zip(results, probs, strict=True):
        assert [t["probability"] for t in r["top"]] == pytest.approx(p.topk(2).values.tolist(), abs=1e-6)
    model, shown = open_with_images(ckpt, data / "train")
    assert shown.names == tuple(sorted(files)) and torch.equal(shown.images, torch.stack(list(stored.values())))
    upload = decode_upload((data / "train" / "a/wide.png").read_bytes(), 3, 16, crop=model.spec.crop)
    assert torch.equal(upload, stored["a/wide.png"])
    # Its exports say so in their metadata, and the explorer follows it: an ONNX or torch.export file of this model
    # was shown padded pictures, and answered otherwise than the checkpoint on the same files.
    for fmt in ("onnx", "pt2"):
        exported = export_checkpoint(ckpt, tmp_path / f"model.{fmt}", format=fmt)
        model, shown = open_with_images(exported, data / "train")
        assert model.spec.crop and "centre-crop from the metadata" in model.spec.describe()
        assert torch.equal(shown.images, torch.stack(list(stored.values()))), fmt
    fashion = _checkpoint(tmp_path / "fashion.pt", 1, 28, classes=tuple(CLASSES), dataset="fashion-mnist")
    padded_model, _ = open_with_images(export_checkpoint(fashion, tmp_path / "fashion.onnx"), data / "train")
    assert not padded_model.spec.crop


def test_an_export_says_how_a_picture_file_becomes_its_input_so_a_deployment_gets_its_checkpoints_answers(tmp_path):
    # A deployment that has only the file: its metadata said "centre-crop", not that the crop is Pillow's bilinear
    # ImageOps.fit nor that the EXIF orientation is not applied; a phone photo turned upright, as every photo app
    # shows it, was another image than the one cnnlab predicts on, and got other answers
    import onnx
    import onnxruntime
    from PIL import ImageOps

    ckpt = _checkpoint(tmp_path / "model.pt", 3, 16, classes=("a", "b"), dataset="folder:somewhere")
    g = np.random.default_rng(3)
    exif = Image.Exif()
    exif[0x0112] = 6  # rotated: a phone's portrait photo
    Image.fromarray(g.integers(0, 256, (30, 40, 3), dtype=np.uint8)).save(tmp_path / "turned.jpg", exif=exif)
    Image.fromarray(g.integers(0, 256, (50, 30, 4), dtype=np.uint8), "RGBA").save(tmp_path / "clear.png")
    pictures = [tmp_path / "clear.png", tmp_path / "turned.jpg"]
    exported = export_checkpoint(ckpt, tmp_path / "model.onnx")
    meta = {p.key: p.value for p in onnx.load(str(exported)).metadata_props}
    assert meta["cnnlab.picture"] == (
        "Image.open(file), its EXIF orientation not applied (as torchvision's pil_loader reads a file); 16-bit grey "
        "(mode I;16) to 8 bits as round(v / 257); .convert('RGB') (alpha dropped); ImageOps.fit(image, (16, 16), "
        "Image.BILINEAR): resized to cover 16 x 16, the centre cropped")
    assert meta["cnnlab.input"] == "float32 N x 3 x 16 x 16 in [0, 1] (uint8 image / 255)"

    def pixels(path, upright=False):  # what the metadata says, in Pillow alone
        with Image.open(path) as im:
            im = (ImageOps.exif_transpose(im) if upright else im).convert("RGB")
            return np.asarray(ImageOps.fit(im, (16, 16), Image.BILINEAR))

    session = onnxruntime.InferenceSession(str(exported))
    for path, result in zip(pictures, predict_files(ckpt, pictures, topk=2, device="cpu"), strict=True):
        x = pixels(path).astype(np.float32).transpose(2, 0, 1)[None] / 255
        logits = session.run(None, {"images": x})[0][0]
        probabilities = {t["index"]: t["probability"] for t in result["top"]}
        assert (np.exp(logits) / np.exp(logits).sum()).tolist() == pytest.approx([probabilities[0], probabilities[1]],
                                                                                  abs=1e-6)
    assert not np.array_equal(pixels(pictures[1], upright=True), pixels(pictures[1]))  # the orientation matters
    extra = {"cnnlab.json": ""}
    torch.export.load(export_checkpoint(ckpt, tmp_path / "model.pt2", format="pt2"), extra_files=extra)
    assert json.loads(extra["cnnlab.json"])["cnnlab.picture"] == meta["cnnlab.picture"]
    # the other datasets' models take pictures padded to a square, EXIF orientation applied
    fashion = _checkpoint(tmp_path / "fashion.pt", 1, 28, classes=tuple(CLASSES), dataset="fashion-mnist")
    padded = {p.key: p.value for p in onnx.load(str(export_checkpoint(fashion, tmp_path / "f.onnx"))).metadata_props}
    assert padded["cnnlab.picture"] == (
        "Image.open(file) (a JPEG above 4.2 megapixels decoded at 1/2, 1/4 or 1/8 scale, Image.draft, keeping at "
        "least 2 times the fitted size); ImageOps.exif_transpose; alpha laid on black; 16-bit grey (mode I;16) to 8 "
        "bits as round(v / 257); .convert('L'); resized (Image.LANCZOS) to fit inside 28 x 28, its aspect ratio kept, "
        "and centred on a canvas of the median colour of its four corners")


def test_colour_images_for_rgb_models(tmp_path):
    # A red square on a transparent background: the background turns black (white, then inverted, with --invert).
    rgba = np.zeros((30, 30, 4), np.uint8)
    rgba[10:20, 10:20] = (255, 0, 0, 255)
    Image.fromarray(rgba, "RGBA").save(tmp_path / "red.png")
    x = load_image(tmp_path / "red.png", channels=3, size=30)
    assert x.shape == (3, 30, 30) and x[:, 0, 0].tolist() == [0, 0, 0]
    assert x[:, 15, 15].tolist() == pytest.approx([1, 0, 0], abs=0.01)  # channel order kept: R, G, B
    assert load_image(tmp_path / "red.png", invert=True, channels=3, size=30)[:, 0, 0].tolist() == [0, 0, 0]
    # A wide photo on a blue background is padded with blue, not black, so it keeps its shape.
    wide = np.zeros((10, 40, 3), np.uint8)
    wide[:] = (0, 0, 200)
    wide[:, 15:25] = (0, 255, 0)
    Image.fromarray(wide).save(tmp_path / "wide.png")
    x = load_image(tmp_path / "wide.png", channels=3, size=40)
    assert x[:, 2, 2].tolist() == pytest.approx([0, 0, 200 / 255], abs=0.01)
    assert x[:, 20, 20].tolist() == pytest.approx([0, 1, 0], abs=0.01)
    # For a model of another shape (the explorer's non-square inputs) it is padded to that shape's aspect ratio:
    # 10 x 40 into 20 x 40 gets 5 blue rows above and below; into 10 x 40 it is only resized; cropped, the green
    # middle fills a 20 x 10 input and no blue is left.
    for hw, blue, green in (((20, 40), (2, 20), (10, 20)), ((10, 40), None, (5, 20))):
        x = decode_upload((tmp_path / "wide.png").read_bytes(), 3, hw)
        assert tuple(x.shape) == (3, *hw) and x[:, green[0], green[1]].tolist() == [0, 255, 0]
        if blue:
            assert x[:, blue[0], blue[1]].tolist() == [0, 0, 200]
    cropped = decode_upload((tmp_path / "wide.png").read_bytes(), 3, (20, 10), crop=True)
    assert tuple(cropped.shape) == (3, 20, 10) and cropped[2].max() < 40 and cropped[1].min() > 200
    # A grey (16-bit) file for an RGB model: three equal channels.
    grey = (np.arange(32 * 32).reshape(32, 32) % 256).astype(np.uint16) * 257
    Image.fromarray(grey).save(tmp_path / "deep.png")
    x = load_image(tmp_path / "deep.png", channels=3, size=32)
    torch.testing.assert_close(x[0], torch.from_numpy(grey / 65535.0).float(), atol=1 / 255, rtol=0)
    assert torch.equal(x[0], x[1]) and torch.equal(x[1], x[2])
    with pytest.raises(CnnlabError, match="channels must be 1 .grey. or 3 .RGB., got 2"):
        load_image(tmp_path / "deep.png", channels=2)


@pytest.mark.parametrize("channels, invert", [(1, False), (1, True), (3, False), (3, True)])
def test_a_file_and_the_same_picture_uploaded_to_the_explorer_give_the_model_the_same_input(tmp_path, channels,
                                                                                            invert):
    from cnnlab.explore.images import decode_upload

    rng = np.random.default_rng(channels + 2 * invert)
    rgba = rng.integers(0, 256, (45, 30, 4), dtype=np.uint8)  # not square, partly transparent: every step runs
    Image.fromarray(rgba, "RGBA").save(tmp_path / "pic.png")
    from_file = load_image(tmp_path / "pic.png", invert=invert, channels=channels, size=28)
    uploaded = decode_upload((tmp_path / "pic.png").read_bytes(), channels, 28, invert=invert)
    assert uploaded.dtype == torch.uint8 and torch.equal(from_file, uploaded.float() / 255)


@pytest.fixture
def folder(tmp_path, test_pngs):
    """Three test PNGs under unsorted names, a corrupt PNG, a text file and a hidden image."""
    pics = tmp_path / "pics"
    pics.mkdir()
    for name, source in zip(("c.png", "a.png", "B.PNG"), test_pngs[0], strict=False):
        (pics / name).write_bytes(source.read_bytes())
    (pics / "broken.png").write_bytes(test_pngs[0][0].read_bytes()[:60])
    (pics / "notes.txt").write_text("not an image")
    (pics / ".hidden.png").write_bytes(test_pngs[0][0].read_bytes())
    return pics


def test_a_folder_means_its_image_files_sorted(folder):
    assert [p.name for p in image_files([folder])] == ["B.PNG", "a.png", "broken.png", "c.png"]
    (folder / "sub").mkdir()
    with pytest.raises(CnnlabError, match=f"folder {folder / 'sub'} holds no image files"):
        image_files([folder / "sub"])
    # the folder of class subfolders a run trained on: the answer says where the pictures are, and what scores them
    (folder / "photos" / "cat").mkdir(parents=True)
    (folder / "photos" / "dog").mkdir()
    with pytest.raises(CnnlabError, match=rf"^folder {re.escape(str(folder / 'photos'))} holds no image files directly "
                                          r"inside it, only the folders cat/ and dog/: name them \(.*photos/\*/\) to "
                                          r"classify their images, or score a folder of class subfolders with cnnlab "
                                          r"eval MODEL --dataset folder:.*photos$"):
        image_files([folder / "photos"])
    (folder / "gone.png").symlink_to(folder / "moved-away.png")  # a link to a missing file: reported, not skipped
    assert "gone.png" in [p.name for p in image_files([folder])]
    with pytest.raises(CnnlabError, match=r"image .*gone.png does not exist"):
        load_image(folder / "gone.png")


def test_the_eval_command_predict_advises_for_class_subfolders_scores_them(tmp_path, capsys):
    # The advice given for a folder of class subfolders, followed as printed, scores the folder: for a checkpoint of
    # a registered dataset, `--data-dir FOLDER` named where MNIST's files are, and eval refused the folder for lacking
    # them.
    digits = tuple(str(d) for d in range(10))
    ckpt = str(_checkpoint(tmp_path / "digits.pt", 1, 28, classes=digits, dataset="mnist"))
    photos = tmp_path / "photos"
    g = torch.Generator().manual_seed(0)
    for digit in ("3", "7"):
        (photos / digit).mkdir(parents=True)
        for i in range(2):
            image = torch.randint(0, 256, (28, 28), dtype=torch.uint8, generator=g)
            Image.fromarray(image.numpy()).save(photos / digit / f"{i}.png")
    assert main(["predict", ckpt, str(photos), "--device", "cpu"]) == 2
    advice = re.search(r"cnnlab eval MODEL (.*)$", capsys.readouterr().err.strip()).group(1)
    assert main(["eval", ckpt, *shlex.split(advice), "--device", "cpu", "--json"]) == 0, capsys.readouterr().err
    result = json.loads(capsys.readouterr().out)
    assert sum(sum(row) for row in result["confusion"]) == 4


def test_predict_of_a_folder_labelled_by_a_csv_advises_eval_by_its_labels(tmp_path, capsys):
    # Hugging Face's layout (images/ and metadata.csv): the advice called images/ a class subfolder; followed as
    # printed, it scores the pictures by the CSV's labels
    ckpt = str(_checkpoint(tmp_path / "grey.pt", 1, 28, classes=("cat", "dog"), dataset="folder:elsewhere"))
    root = tmp_path / "set"
    paths = _pictures(root / "images", 1, n=8)
    (root / "metadata.csv").write_text("file_name,label\n" + "".join(f"images/{p.name},{('cat', 'dog')[i % 2]}\n"
                                                                      for i, p in enumerate(paths)))
    assert main(["predict", ckpt, str(root), "--device", "cpu"]) == 2
    err = capsys.readouterr().err.strip()
    assert f"name it ({root / '*'}/) to classify its images, or score its images by their labels in metadata.csv " \
        f"with cnnlab eval MODEL --dataset folder:{root}" in err
    assert main(["eval", ckpt, *shlex.split(re.search(r"cnnlab eval MODEL (.*)$", err).group(1)), "--device", "cpu",
                 "--json"]) == 0, capsys.readouterr().err
    assert sum(map(sum, json.loads(capsys.readouterr().out)["confusion"])) == 8


def test_a_csv_of_labels_given_where_pictures_are_expected_says_what_to_name(tmp_path, capsys):
    # predict MODEL labels.csv was "not an image": say what to name, the folder to classify or eval to score
    ckpt = str(_checkpoint(tmp_path / "grey.pt", 1, 28, classes=("cat", "dog"), dataset="folder:elsewhere"))
    root = tmp_path / "set"
    paths = _pictures(root, 1, n=4)
    labels = root / "Labels.CSV"
    labels.write_text("file_name,label\n" + "".join(f"{p.name},{('cat', 'dog')[i % 2]}\n"
                                                     for i, p in enumerate(paths)))
    line = (f"cnnlab predict: error: {labels} is a CSV file, not a picture; expected image files or folders of them: "
            f"name its folder ({root}) to classify the pictures in it, or score them by the CSV's labels with cnnlab "
            f"eval MODEL --dataset folder:{labels}\n")
    assert main(["predict", ckpt, str(labels), "--device", "cpu", "--top", "2"]) == 2
    out, err = capsys.readouterr()
    assert not out and err == line
    # among pictures (photos/* takes the folder's CSV too): the pictures answered, the CSV's line in its place
    assert main(["predict", ckpt, str(paths[0]), str(labels), "--device", "cpu", "--top", "2"]) == 2
    out, err = capsys.readouterr()
    assert out.startswith(f"{paths[0]}: ") and out.count("\n") == 1 and err == line
    with pytest.raises(CnnlabError, match="is a CSV file, not a picture"):
        predict_files(ckpt, [labels], device="cpu")
    # followed as printed, each works
    assert main(["predict", ckpt, str(root), "--device", "cpu"]) == 0
    assert len(capsys.readouterr().out.splitlines()) == 4
    # a contest's train.csv beside train/ and test/: the folders beside it are named, its own holding no picture
    contest = tmp_path / "contest"
    for split in ("train", "test"):
        _pictures(contest / split, 1, n=2)
    (contest / "train.csv").write_text("id,label\np0,cat\np1,dog\n")
    train_csv = contest / "train.csv"
    assert main(["predict", ckpt, str(train_csv), "--device", "cpu"]) == 2
    assert capsys.readouterr().err == (f"cnnlab predict: error: {train_csv} is a CSV file, not a picture; expected "
                                       f"image files or folders of them: name the folders beside it ({contest / '*'}/) "
                                       f"to classify the pictures in them, or score them by the CSV's labels with "
                                       f"cnnlab eval MODEL --dataset folder:{train_csv}\n")
    assert main(["predict", ckpt, *map(str, sorted(contest.glob("*/"))), "--device", "cpu"]) == 0
    assert len(capsys.readouterr().out.splitlines()) == 4
    # the contest's folder named: its CSV (read only where named) is said as what labels it, beside class subfolders
    assert main(["predict", ckpt, str(contest), "--device", "cpu"]) == 2
    assert capsys.readouterr().err.endswith(f"or score a folder of class subfolders with cnnlab eval MODEL --dataset "
                                            f"folder:{contest}, or its images by a CSV's labels with --dataset "
                                            f"folder:{contest}/NAME.csv (here: train.csv)\n")
    assert main(["eval", ckpt, *shlex.split(re.search(r"cnnlab eval MODEL (.*)$", line).group(1)), "--device",
                 "cpu", "--json"]) == 0, capsys.readouterr().err
    assert sum(map(sum, json.loads(capsys.readouterr().out)["confusion"])) == 4


def test_one_bad_file_does_not_stop_the_batch(folder, tmp_path):
    ckpt = _checkpoint(tmp_path / "grey.pt", 1, 28)
    with pytest.raises(CnnlabError, match="broken.png"):
        predict_files(ckpt, [folder], device="cpu")
    results = predict_files(ckpt, [folder], topk=4, device="cpu", skip_bad=True)
    assert [Path(r["file"]).name for r in results] == ["B.PNG", "a.png", "broken.png", "c.png"]
    assert "truncated or corrupt" in results[2]["error"] and "top" not in results[2]
    [alone] = predict_files(ckpt, [folder / "a.png"], topk=4, device="cpu")
    probabilities = lambda r: {t["class"]: t["probability"] for t in r["top"]}  # noqa: E731
    assert probabilities(results[1]) == pytest.approx(probabilities(alone), abs=1e-6)  # the batch changes nothing


def test_a_folder_is_decoded_and_classified_a_chunk_at_a_time(folder, tmp_path, monkeypatch):
    # every picture of a folder was decoded before any was classified, and stacked: 20,000 photos at 224 px held
    # 6 GB; now no more than PREDICT_CHUNK pictures are held, and the answers are the same
    ckpt = _checkpoint(tmp_path / "grey.pt", 1, 28)
    for i in range(4):
        (folder / f"more{i}.png").write_bytes((folder / "a.png").read_bytes())
    whole = predict_files(ckpt, [folder], topk=4, device="cpu", skip_bad=True)
    batches = []
    logits = Trained.logits

    def counted(self, images, *args, **kwargs):
        batches.append(len(images))
        return logits(self, images, *args, **kwargs)

    monkeypatch.setattr(Trained, "logits", counted)
    monkeypatch.setattr(predict, "PREDICT_CHUNK", 3, raising=False)
    chunked = predict_files(ckpt, [folder], topk=4, device="cpu", skip_bad=True)
    assert batches and max(batches) <= 3 and sum(batches) == 7  # 8 files, the broken one skipped
    assert [r["file"] for r in chunked] == [r["file"] for r in whole]
    for a, b in zip(chunked, whole, strict=True):
        assert a.keys() == b.keys()
        if "top" in a:
            assert [t["index"] for t in a["top"]] == [t["index"] for t in b["top"]]
            assert [t["probability"] for t in a["top"]] == pytest.approx([t["probability"] for t in b["top"]],
                                                                         abs=1e-6)


def test_cli_predicts_a_folder_reports_the_bad_file_and_exits_2(folder, tmp_path, capsys):
    ckpt = str(_checkpoint(tmp_path / "grey.pt", 1, 28))
    assert main(["predict", ckpt, str(folder), "--device", "cpu"]) == 2
    out, err = capsys.readouterr()
    assert [line.split(":")[0] for line in out.splitlines()] == [str(folder / n) for n in ("B.PNG", "a.png", "c.png")]
    assert err.count("\n") == 1 and err.startswith("cnnlab predict: error: ") and "broken.png" in err
    (folder / "broken.png").unlink()
    assert main(["predict", ckpt, str(folder), "--device", "cpu", "--json"]) == 0
    assert len(json.loads(capsys.readouterr().out)) == 3


def test_an_iphones_heic_photo_in_a_folder_is_reported_not_passed_over(folder, tmp_path, capsys, heif_absent):
    # A folder of photos with an iPhone's among them: the HEIC photo was left out of the listing, so predict answered
    # the others and exited 0 without a word about it
    (folder / "broken.png").unlink()
    (folder / "IMG_0001.HEIC").write_bytes(b"\x00\x00\x00\x18ftypheic\x00\x00\x00\x00mif1heic" + bytes(64))
    assert [p.name for p in image_files([folder])] == ["B.PNG", "IMG_0001.HEIC", "a.png", "c.png"]
    ckpt = str(_checkpoint(tmp_path / "grey.pt", 1, 28))
    assert main(["predict", ckpt, str(folder), "--device", "cpu"]) == 2
    out, err = capsys.readouterr()
    assert [line.split(":")[0] for line in out.splitlines()] == [str(folder / n) for n in ("B.PNG", "a.png", "c.png")]
    assert err == (f"cnnlab predict: error: image {folder / 'IMG_0001.HEIC'} is a HEIC photo (an iPhone's format), "
                   "which is not read here; expected PNG, JPEG, BMP, DIB, GIF, TIFF, WEBP, AVIF, JPEG2000, PPM, TGA, "
                   "PCX, QOI, SGI: pip install \"cnnlab[heic]\" to read it, or save it as JPEG (on the iPhone: "
                   "Settings > Camera > Formats > Most Compatible)\n")
    # a photo saved as JPEG under a .heic name is read as the picture it is
    (folder / "IMG_0001.HEIC").write_bytes((folder / "a.png").read_bytes())
    assert main(["predict", ckpt, str(folder), "--device", "cpu"]) == 0
    assert len(capsys.readouterr().out.splitlines()) == 4


class _Terminal(io.StringIO):
    """A stderr that says it is a terminal, as a shell's is (tqdm draws its bar only there)."""

    def isatty(self) -> bool:
        return True


def test_predict_shows_a_bar_of_the_pictures_done_on_a_terminal_and_nothing_elsewhere(folder, tmp_path, capsys,
                                                                                      monkeypatch):
    """A folder of thousands of photos takes minutes: a bar on stderr says how far it is, where stderr is a
    terminal; piped or in a log, nothing is added."""
    (folder / "broken.png").unlink()
    ckpt = str(_checkpoint(tmp_path / "grey.pt", 1, 28))
    terminal = _Terminal()
    monkeypatch.setattr(sys, "stderr", terminal)
    assert main(["predict", ckpt, str(folder), "--device", "cpu"]) == 0
    assert "/3 [" in terminal.getvalue() and "picture/s" in terminal.getvalue()  # a bar of the 3, cleared at the end
    assert len(capsys.readouterr().out.splitlines()) == 3  # stdout holds the predictions alone
    monkeypatch.undo()
    assert main(["predict", ckpt, str(folder), "--device", "cpu"]) == 0
    assert capsys.readouterr().err == ""  # not a terminal: no bar
    quiet = _Terminal()  # the library draws none unless asked
    monkeypatch.setattr(sys, "stderr", quiet)
    assert len(predict_files(ckpt, [folder], device="cpu")) == 3 and quiet.getvalue() == ""


def test_a_reader_that_leaves_early_does_not_hide_a_bad_file(folder, tmp_path):
    # `cnnlab predict ... | head -1` with more lines than head reads: the failure still reaches stderr and the exit code
    ckpt = str(_checkpoint(tmp_path / "grey.pt", 1, 28))
    read_end, write_end = os.pipe()
    os.close(read_end)  # the reader has gone before the first line: every write to stdout is a broken pipe
    try:
        done = subprocess.run([sys.executable, "-m", "cnnlab", "predict", ckpt, str(folder), "--device", "cpu"],
                              stdout=write_end, stderr=subprocess.PIPE, text=True, timeout=120)
    finally:
        os.close(write_end)
    assert done.returncode == 2 and "broken.png" in done.stderr
    assert done.stderr.count("\n") == 1, done.stderr


def _counting_chunks(monkeypatch, fail_at: int | None = None) -> list[int]:
    """Chunks of 2 pictures, and the list of the chunks classified so far (a checkpoint's one call a chunk); the
    chunk numbered ``fail_at`` (from 1) is stopped by Ctrl-C instead."""
    calls: list[int] = []
    logits = Trained.logits

    def counted(self, images, *args, **kwargs):
        if len(calls) + 1 == fail_at:
            raise KeyboardInterrupt
        calls.append(len(images))
        return logits(self, images, *args, **kwargs)

    monkeypatch.setattr(Trained, "logits", counted)
    monkeypatch.setattr(predict, "PREDICT_CHUNK", 2)
    return calls


class _Timed(io.StringIO):
    """A stream that keeps each line written to it with the number of chunks classified when it was written."""

    def __init__(self, name: str, calls: list[int], lines: list[tuple[str, int, str]]):
        super().__init__()
        self.name, self.calls, self.lines, self.partial = name, calls, lines, ""

    def write(self, text: str) -> int:
        self.partial += text
        while "\n" in self.partial:
            line, self.partial = self.partial.split("\n", 1)
            self.lines.append((self.name, len(self.calls), line))
        return super().write(text)


def test_cli_prints_each_chunks_answers_before_the_next_chunk_is_classified(folder, tmp_path, monkeypatch):
    # Every line came at the end: a folder of 10,000 photos showed nothing for minutes, `| head` and `| grep` got
    # nothing until all were done. Each line (a bad file's on stderr, in its place) now comes as its chunk is done.
    ckpt = str(_checkpoint(tmp_path / "grey.pt", 1, 28))
    for name in ("d.png", "e.png"):
        (folder / name).write_bytes((folder / "a.png").read_bytes())
    want = format_predictions(predict_files(ckpt, [folder], device="cpu", skip_bad=True)).splitlines()
    calls = _counting_chunks(monkeypatch)
    lines: list[tuple[str, int, str]] = []
    monkeypatch.setattr(sys, "stdout", _Timed("out", calls, lines))
    monkeypatch.setattr(sys, "stderr", _Timed("err", calls, lines))
    assert main(["predict", ckpt, str(folder), "--device", "cpu"]) == 2
    assert calls == [2, 1, 2]  # [B.PNG, a.png], [broken.png, c.png] with broken.png not read, [d.png, e.png]
    assert [text for name, _, text in lines if name == "out"] == want  # the text the list API formats
    names = [(name, done, text.split(":")[0].split("/")[-1]) for name, done, text in lines]
    assert names == [("out", 1, "B.PNG"), ("out", 1, "a.png"), ("err", 2, "cnnlab predict"), ("out", 2, "c.png"),
                     ("out", 3, "d.png"), ("out", 3, "e.png")]
    assert "broken.png" in lines[2][2]
    monkeypatch.setattr(sys, "stdout", io.StringIO())
    assert main(["predict", ckpt, str(folder), "--device", "cpu", "--json"]) == 2  # still one document, at the end
    assert [r["file"] for r in json.loads(sys.stdout.getvalue())] == [str(p) for p in image_files([folder])]


def test_jsonl_prints_each_pictures_object_as_its_chunk_is_done(folder, tmp_path, monkeypatch):
    # --json holds every answer until the last picture is done: a folder of a million photos held them all in memory
    # and a pipeline read nothing for hours. --jsonl prints one object per picture (a bad file's too, in its place)
    # as its chunk is done, and holds none.
    ckpt = str(_checkpoint(tmp_path / "grey.pt", 1, 28))
    for name in ("d.png", "e.png"):
        (folder / name).write_bytes((folder / "a.png").read_bytes())
    monkeypatch.setattr(sys, "stdout", io.StringIO())
    assert main(["predict", ckpt, str(folder), "--device", "cpu", "--json"]) == 2
    document = json.loads(sys.stdout.getvalue())
    calls = _counting_chunks(monkeypatch)
    lines: list[tuple[str, int, str]] = []
    monkeypatch.setattr(sys, "stdout", _Timed("out", calls, lines))
    monkeypatch.setattr(sys, "stderr", _Timed("err", calls, lines))
    assert main(["predict", ckpt, str(folder), "--device", "cpu", "--jsonl"]) == 2
    out = [(done, json.loads(text)) for name, done, text in lines if name == "out"]
    assert [r for _, r in out] == document  # the same objects, in the same order
    assert [(done, Path(r["file"]).name) for done, r in out] == [
        (1, "B.PNG"), (1, "a.png"), (2, "broken.png"), (2, "c.png"), (3, "d.png"), (3, "e.png")]
    assert "error" in out[2][1] and sum("broken.png" in text for name, _, text in lines if name == "err") == 1


def test_ctrl_c_keeps_the_answers_already_printed(folder, tmp_path, monkeypatch, capsys):
    # Stopped after 9,000 of 10,000 photos, predict printed nothing at all
    (folder / "broken.png").unlink()
    ckpt = str(_checkpoint(tmp_path / "grey.pt", 1, 28))
    want = format_predictions(predict_files(ckpt, [folder], device="cpu"))
    _counting_chunks(monkeypatch, fail_at=2)
    assert main(["predict", ckpt, str(folder), "--device", "cpu"]) == 130
    out, err = capsys.readouterr()
    assert out == "\n".join(want.splitlines()[:2]) + "\n"  # the first chunk's two answers
    assert err == "cnnlab predict: interrupted\n"


class _TimedTerminal(_Timed):
    """A :class:`_Timed` stream that says it is a terminal, as :class:`_Terminal` does."""

    def isatty(self) -> bool:
        return True


def _screen(text: str) -> list[str]:
    """The rows a terminal shows for ``text``: a carriage return goes back to the row's start, and what follows
    overwrites it."""
    rows, row, column = [], [], 0
    for char in text:
        if char == "\n":
            rows.append("".join(row).rstrip())
            row, column = [], 0
        elif char == "\r":
            column = 0
        else:
            row[column:column + 1] = [char]
            column += 1
    return [*rows, "".join(row).rstrip()]


def test_the_bar_is_cleared_before_each_chunks_lines_on_a_terminal(folder, tmp_path, monkeypatch):
    # stdout and stderr on one terminal, as in a shell: the bar on stderr must not run into the lines printed
    # between chunks
    (folder / "broken.png").unlink()
    ckpt = str(_checkpoint(tmp_path / "grey.pt", 1, 28))
    for name in ("d.png", "e.png"):
        (folder / name).write_bytes((folder / "a.png").read_bytes())
    want = format_predictions(predict_files(ckpt, [folder], device="cpu")).splitlines()
    calls = _counting_chunks(monkeypatch)
    lines: list[tuple[str, int, str]] = []
    terminal = _TimedTerminal("terminal", calls, lines)
    monkeypatch.setattr(sys, "stdout", terminal)
    monkeypatch.setattr(sys, "stderr", terminal)
    # drawn at every update, however fast the chunks are (by default at most every 0.1 s)
    monkeypatch.setattr(predict, "tqdm", functools.partial(predict.tqdm, mininterval=0))
    assert main(["predict", ckpt, str(folder), "--device", "cpu"]) == 0
    assert len(calls) == 3 and "/5 [" in terminal.getvalue()  # the bar was drawn
    assert _screen(terminal.getvalue()) == [*want, ""]  # each line whole, the bar gone at the end
    assert [done for _, done, text in lines if want[0] in text] == [1]  # printed before the next chunk ran


def test_a_reader_that_has_left_stops_the_run_after_its_chunk(folder, tmp_path):
    # `predict ... | head -1` of 10,000 photos: nobody reads the answers after the reader has gone, and the shell
    # waits for predict; it goes on to no more chunks (a bad file found before still gets its line and exit 2: the
    # test above)
    (folder / "broken.png").unlink()
    ckpt = str(_checkpoint(tmp_path / "grey.pt", 1, 28))
    code = ("import sys; from cnnlab import predict; from cnnlab.cli import main; "
            "from cnnlab.inference import Trained; predict.PREDICT_CHUNK = 1; calls = []; logits = Trained.logits; "
            "Trained.logits = lambda self, images: calls.append(1) or logits(self, images); "
            "code = main(['predict', sys.argv[1], sys.argv[2], '--device', 'cpu']); "
            "print(len(calls), 'chunk(s)', file=sys.stderr); sys.exit(code)")
    read_end, write_end = os.pipe()
    os.close(read_end)
    try:
        done = subprocess.run([sys.executable, "-c", code, ckpt, str(folder)], stdout=write_end,
                              stderr=subprocess.PIPE, text=True, timeout=120,
                              env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path), "OMP_NUM_THREADS": "1"})
    finally:
        os.close(write_end)
    assert done.returncode == 0 and done.stderr == "1 chunk(s)\n"  # of 3, quietly


def test_a_model_from_elsewhere_answers_a_chunk_at_a_time(tmp_path, monkeypatch):
    paths = _pictures(tmp_path / "pictures", 3, n=5)
    options = Options.from_flags(input_size=20)
    whole = predict_any("test_predict:tiny_net", paths, options)
    monkeypatch.setattr(predict, "PREDICT_CHUNK", 2)
    calls = []
    scores = sources.scores_of

    def counted(model, images, *args):
        calls.append(len(images))
        return scores(model, images, *args)

    monkeypatch.setattr(sources, "scores_of", counted)
    chunks = predict_any_chunks("test_predict:tiny_net", paths, options)
    assert calls == []  # the model is open, no picture is read yet
    first = next(chunks)
    assert calls == [2] and [r["file"] for r in first] == list(map(str, paths[:2]))
    chunked = first + [r for chunk in chunks for r in chunk]
    assert calls == [2, 2, 1] and len(chunked) == len(whole) == 5
    for a, b in zip(chunked, whole, strict=True):
        assert a["file"] == b["file"] and [t["index"] for t in a["top"]] == [t["index"] for t in b["top"]]
        assert [t["probability"] for t in a["top"]] == pytest.approx([t["probability"] for t in b["top"]], abs=1e-6)


# ----------------------------------------------------------------------------- a model from elsewhere
def _pictures(folder: Path, channels: int, n: int = 4) -> list[Path]:
    """``n`` random pictures of different sizes (not the model's), as PNG files."""
    g = np.random.default_rng(7)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(n):
        shape = (17 + 9 * i, 41 - 5 * i) + ((3,) if channels == 3 else ())
        paths.append(folder / f"p{i}.png")
        Image.fromarray(g.integers(0, 256, shape, dtype=np.uint8)).save(paths[-1])
    return paths


@pytest.mark.parametrize("fmt", ["onnx", "pt2"])
def test_an_export_predicts_what_its_checkpoint_does(tmp_path, fmt, capsys):
    # The file a deployment loads, asked about the same pictures by the same command as its checkpoint: predict
    # refused it as "not a PyTorch checkpoint", so an export could only be checked on the test set (--verify).
    ckpt = _checkpoint(tmp_path / "model.pt", 3, 32)
    exported = export_checkpoint(ckpt, tmp_path / f"model.{fmt}", format=fmt)
    paths = _pictures(tmp_path / "pictures", 3)
    want = predict_files(ckpt, paths, topk=4, device="cpu")
    got = predict_any(exported, paths, topk=4)
    for w, g in zip(want, got, strict=True):
        assert [t["class"] for t in g["top"]] == [t["class"] for t in w["top"]]
        assert [t["probability"] for t in g["top"]] == pytest.approx([t["probability"] for t in w["top"]], abs=1e-5)
    assert main(["predict", str(exported), str(tmp_path / "pictures"), "--json"]) == 0
    assert [r["top"][0]["class"] for r in json.loads(capsys.readouterr().out)] == \
        [r["top"][0]["class"] for r in want]


def _tiny_net():
    torch.manual_seed(3)
    return torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.ReLU(), torch.nn.AdaptiveAvgPool2d(1),
                               torch.nn.Flatten(), torch.nn.Linear(4, 3)).eval()


def test_anyones_onnx_file_is_read_as_the_flags_say(tmp_path):
    # An ONNX file of a network nobody here trained, with its preprocessing outside (ImageNet-style mean/std): the
    # probabilities are the softmax of the network run by torch on the picture decoded at its input and normalised.
    net = _tiny_net()
    with warnings.catch_warnings():  # the TorchScript-based exporter's deprecation: a file as older tools wrote it
        warnings.simplefilter("ignore")
        torch.onnx.export(net, (torch.zeros(1, 3, 24, 24),), str(tmp_path / "net.onnx"), dynamo=False,
                          input_names=["x"], dynamic_axes={"x": {0: "n"}})
    (tmp_path / "classes.txt").write_text("ant\nbee\nwasp\n")
    paths = _pictures(tmp_path / "pictures", 3)
    options = Options.from_flags(classes=tmp_path / "classes.txt", mean=[0.5, 0.4, 0.3], std=[0.2])
    results = predict_any(tmp_path / "net.onnx", paths, options, topk=3)
    x = torch.stack([load_image(p, channels=3, size=24) for p in paths])
    x = (x - torch.tensor([0.5, 0.4, 0.3]).view(1, 3, 1, 1)) / 0.2
    with torch.no_grad():
        probs = net(x).softmax(1)
    for r, p in zip(results, probs, strict=True):
        assert [t["class"] for t in r["top"]] == [("ant", "bee", "wasp")[i] for i in p.topk(3).indices.tolist()]
        assert [t["probability"] for t in r["top"]] == pytest.approx(p.topk(3).values.tolist(), abs=1e-5)


def test_a_model_of_other_than_1_or_3_channels_is_refused_once_not_per_picture(tmp_path, capsys):
    # A 4-channel model (RGB and depth, RGBA) gave every picture the error "channels must be 1 (grey) or 3 (RGB),
    # got 4", as if each file were at fault, one line per file
    net = torch.nn.Sequential(torch.nn.Conv2d(4, 2, 3), torch.nn.Flatten(), torch.nn.Linear(2 * 6 * 6, 3)).eval()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(net, (torch.zeros(1, 4, 8, 8),), str(tmp_path / "rgbd.onnx"), dynamo=False,
                          input_names=["x"], dynamic_axes={"x": {0: "n"}})
    paths = _pictures(tmp_path / "pictures", 3, n=3)
    assert main(["predict", str(tmp_path / "rgbd.onnx"), *map(str, paths)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("cnnlab predict: error: pictures can feed models of 1 or 3 input "
                                                    "channels (grey or RGB); ") and err.endswith("rgbd.onnx takes 4\n")


def tiny_net():
    """``module:function`` for the test below."""
    return _tiny_net()


def test_a_module_function_model_needs_its_input_size_and_is_run_as_torch_runs_it(tmp_path, capsys):
    paths = _pictures(tmp_path / "pictures", 3, n=2)
    spec = "test_predict:tiny_net"
    assert main(["predict", spec, *map(str, paths)]) == 2
    assert "has no fixed input size; pass --input-size" in capsys.readouterr().err
    assert main(["predict", spec, *map(str, paths), "--input-size", "20", "--json", "--top", "1"]) == 0
    results = json.loads(capsys.readouterr().out)
    x = torch.stack([load_image(p, channels=3, size=20) for p in paths])
    with torch.no_grad():
        probs = _tiny_net()(x).softmax(1)
    assert [r["top"][0]["index"] for r in results] == probs.argmax(1).tolist()
    assert [r["top"][0]["class"] for r in results] == [f"class {i}" for i in probs.argmax(1).tolist()]
    assert [r["top"][0]["probability"] for r in results] == pytest.approx(probs.max(1).values.tolist(), abs=1e-5)


class _Diverged(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.net = _tiny_net()

    def forward(self, x):
        return self.net(x) * float("nan")


def diverged_net():
    """``module:function`` for the test below: a model whose training diverged (NaN logits)."""
    return _Diverged()


def test_a_diverged_models_probabilities_are_null_in_json_and_a_dash_in_text(tmp_path, capsys):
    # --json wrote NaN, which is no JSON (jq and JSON.parse refuse the whole output), and the text "nan%"; the
    # explorer's pages show such a probability as a dash (null in their JSON)
    paths = _pictures(tmp_path / "pictures", 3, n=2)
    assert main(["predict", "test_predict:diverged_net", *map(str, paths), "--input-size", "20", "--json"]) == 0
    captured = capsys.readouterr()

    def refuse(constant):
        raise ValueError(f"{constant} is not JSON")

    results = json.loads(captured.out, parse_constant=refuse)
    assert [t["probability"] for r in results for t in r["top"]] == [None] * 6
    assert "outputs for 2 of the images are not numbers" in captured.err
    assert main(["predict", "test_predict:diverged_net", str(paths[0]), "--input-size", "20"]) == 0
    assert capsys.readouterr().out == f"{paths[0]}: class 0 -, class 1 -, class 2 -\n"


class _Chatty(torch.nn.Module):
    def __init__(self):
        super().__init__()
        print("building the network")  # research code says what it does, on stdout
        self.net = _tiny_net()

    def forward(self, x):
        print("forward", tuple(x.shape))
        return self.net(x)


def chatty_net():
    """``module:function`` for the test below: a model whose code prints."""
    return _Chatty()


def test_what_the_models_own_code_prints_goes_to_stderr_and_json_stays_json(tmp_path, capsys):
    # The prints of module:function's code came out on stdout before the JSON: `predict --json | jq` failed
    paths = _pictures(tmp_path / "pictures", 3, n=2)
    assert main(["predict", "test_predict:chatty_net", *map(str, paths), "--input-size", "20", "--json"]) == 0
    captured = capsys.readouterr()
    assert [r["file"] for r in json.loads(captured.out)] == list(map(str, paths))
    assert "building the network" in captured.err and "forward (1, 3, 20, 20)" in captured.err


@pytest.mark.parametrize("flags, needle", [
    (["--input-size", "40"], "--input-size, --mean, --std, --pixel-range, --bgr, --layout, --multi-label and "
                             "--weights are for models from elsewhere; a cnnlab checkpoint records its own"),
    (["--mean", "0.5"], "are for models from elsewhere; a cnnlab checkpoint records its own"),
    (["--weights", "other.pth"], "--multi-label and --weights are for models from elsewhere"),  # was passed over
])
def test_a_checkpoint_refuses_the_flags_of_a_model_from_elsewhere(tmp_path, flags, needle, capsys):
    ckpt = _checkpoint(tmp_path / "model.pt", 3, 32)
    paths = _pictures(tmp_path / "pictures", 3, n=1)
    assert main(["predict", str(ckpt), str(paths[0]), *flags]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and needle in err


def test_a_checkpoint_takes_class_names_and_an_export_no_device(tmp_path, capsys):
    ckpt = _checkpoint(tmp_path / "model.pt", 3, 32)
    paths = _pictures(tmp_path / "pictures", 3, n=1)
    (tmp_path / "names.txt").write_text("a\nb\nc\nd\n")
    assert main(["predict", str(ckpt), str(paths[0]), "--classes", str(tmp_path / "names.txt"), "--json"]) == 0
    assert {t["class"] for t in json.loads(capsys.readouterr().out)[0]["top"]} <= set("abcd")
    (tmp_path / "three.txt").write_text("a\nb\nc\n")
    assert main(["predict", str(ckpt), str(paths[0]), "--classes", str(tmp_path / "three.txt")]) == 2
    assert "--classes names 3 classes, but" in capsys.readouterr().err
    exported = export_checkpoint(ckpt, tmp_path / "model.onnx")
    assert main(["predict", str(exported), str(paths[0]), "--device", "cuda"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--device cuda applies to a cnnlab checkpoint" in err


def test_predicting_with_an_onnx_file_needs_no_web_stack(tmp_path):
    # The explorer's models are opened without its server: Starlette and uvicorn (the explore extra) stay out.
    ckpt = _checkpoint(tmp_path / "model.pt", 1, 20)
    exported = export_checkpoint(ckpt, tmp_path / "model.onnx")
    paths = _pictures(tmp_path / "pictures", 1, n=1)
    code = ("import sys; from cnnlab.cli import main; code = main(['predict', sys.argv[1], sys.argv[2]]); "
            "print(sorted(m for m in ('starlette', 'uvicorn') if m in sys.modules)); sys.exit(code)")
    done = subprocess.run([sys.executable, "-c", code, str(exported), str(paths[0])], capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[-1] == "[]" and done.stdout.startswith(f"{paths[0]}: ")


# ----------------------------------------------------------------------------- --csv
def _read_csv(path: Path) -> list[list[str]]:
    return list(csv.reader(io.StringIO(path.read_bytes().decode("utf-8"), newline="")))  # strict UTF-8


def test_csv_of_a_folders_predictions_names_its_files_as_a_labels_csv_and_labels_it_again(tmp_path, capsys):
    ckpt = str(_checkpoint(tmp_path / "grey.pt", 1, 28))
    photos = tmp_path / "photos"
    paths = _pictures(photos, 1, n=8)
    (photos / "broken.png").write_bytes(paths[0].read_bytes()[:60])
    out = photos / "preds.csv"
    assert main(["predict", ckpt, str(photos), "--device", "cpu", "--json", "--csv", str(out)]) == 2
    captured = capsys.readouterr()
    document = json.loads(captured.out)  # the oracle: the same command's --json
    err = captured.err.splitlines()
    assert len(err) == 2 and "broken.png" in err[0]
    assert err[1] == f"cnnlab predict: wrote {out}: 8 picture(s), names relative to {photos} (1 unreadable left out)"
    rows = _read_csv(out)
    assert rows[0] == ["file_name", "label", "probability"]
    assert rows[1:] == [[Path(r["file"]).name, r["top"][0]["class"], str(r["top"][0]["probability"])]
                        for r in document if "top" in r]  # the unreadable file has no row
    # written into the folder predicted, it labels that folder as a CSV named does (the unreadable file unnamed)
    data = load_dataset(f"folder:{out}")
    counts = {c: sum(row[1] == c for row in rows[1:]) for c in data.classes}
    assert torch.cat([data.train_labels, data.test_labels]).bincount().tolist() == list(counts.values())
    assert data.notices[0] == f"ignored 1 image file(s) not named in preds.csv (first: {photos / 'broken.png'})"
    # several folders and a file: names relative to the folder that holds them all
    (tmp_path / "more").mkdir()
    (tmp_path / "more" / "p0.png").write_bytes(paths[0].read_bytes())
    results = predict_files(ckpt, [photos / "p1.png", tmp_path / "more", photos], device="cpu", skip_bad=True)
    assert predict.write_predictions_csv(tmp_path / "all.csv", results) == tmp_path
    assert [row[0] for row in _read_csv(tmp_path / "all.csv")[1:4]] == ["photos/p1.png", "more/p0.png",
                                                                       "photos/p0.png"]


def test_csv_like_a_contests_sample_submission_names_each_picture_as_the_sample_does(tmp_path, capsys):
    ckpt = str(_checkpoint(tmp_path / "grey.pt", 1, 28))
    test = tmp_path / "test"
    paths = _pictures(test, 1, n=4)
    (test / "extra.png").write_bytes(paths[0].read_bytes())  # predicted, not in the sample: no row
    sample = tmp_path / "sample_submission.csv"  # Kaggle's: ids without the extension, in its own order, a dummy label
    sample.write_text("label,id\ncat,p2\ncat,p0\ncat,p3\ncat,p1\n")
    out = tmp_path / "submission.csv"
    assert main(["predict", ckpt, str(test), "--device", "cpu", "--json", "--csv", str(out), "--like",
                 str(sample)]) == 0
    captured = capsys.readouterr()
    top = {Path(r["file"]).stem: r["top"][0]["class"] for r in json.loads(captured.out)}  # the oracle: its --json
    assert captured.err == f"cnnlab predict: wrote {out}: the rows of {sample}, each picture's top class (1 " \
        "picture(s) predicted that it does not name left out)\n"
    assert _read_csv(out) == [["label", "id"], *([top[i], i] for i in ("p2", "p0", "p3", "p1"))]
    # refused in one line, nothing written: a sample of other columns, an id of no picture predicted, an unreadable
    # picture's id, --like without --csv or of no file
    (test / "p1.png").write_bytes(b"not a png")
    for text, said in (("id,cat,dog\np0,0.5,0.5\n", "has 3 columns (id, cat, dog); expected two, the file's (id)"),
                       ("id,label\np0,cat\np9,cat\n", "1 row(s) name no image file under"),
                       ("id,label\np1,cat\n", f"names p1, whose picture could not be read ({test / 'p1.png'})")):
        sample.write_text(text)
        assert main(["predict", ckpt, str(test), "--device", "cpu", "--csv", str(tmp_path / "no.csv"), "--like",
                     str(sample)]) == 2
        assert said in capsys.readouterr().err.splitlines()[-1] and not (tmp_path / "no.csv").exists()
    assert main(["predict", ckpt, str(test), "--like", str(sample)]) == 2
    assert capsys.readouterr().err == "cnnlab predict: error: --like says how --csv is written; expected it only " \
        "beside --csv\n"
    assert main(["predict", ckpt, str(test), "--csv", str(tmp_path / "no.csv"), "--like", str(tmp_path)]) == 2
    assert capsys.readouterr().err == f"cnnlab predict: error: --like {tmp_path} is not a file; expected the " \
        "contest's sample submission CSV (sample_submission.csv)\n"


def test_csv_refuses_an_existing_file_before_any_picture_is_read_unless_forced(tmp_path, capsys, monkeypatch):
    ckpt = str(_checkpoint(tmp_path / "grey.pt", 1, 28))
    paths = _pictures(tmp_path / "photos", 1, n=2)
    out = tmp_path / "preds.csv"
    out.write_text("kept\n")
    read = []
    monkeypatch.setattr(predict, "read_image",
                        lambda *a, **k: read.append(a) or torch.zeros(1, 28, 28, dtype=torch.uint8))
    assert main(["predict", ckpt, *map(str, paths), "--csv", str(out)]) == 2
    captured = capsys.readouterr()
    assert captured.err == f"cnnlab predict: error: --csv {out} already exists; pass --force (force=True in Python) " \
        "to overwrite it\n" and not captured.out and not read and out.read_text() == "kept\n"
    assert main(["predict", ckpt, *map(str, paths), "--force"]) == 2
    assert "--force lets --csv replace an existing file" in capsys.readouterr().err and not read
    assert main(["predict", ckpt, *map(str, paths), "--csv", str(out), "--force"]) == 0
    assert len(_read_csv(out)) == 3 and len(read) == 2
    assert main(["predict", ckpt, *map(str, paths), "--csv", str(tmp_path)]) == 2  # a folder
    assert f"--csv {tmp_path} is a folder" in capsys.readouterr().err


def test_csv_of_a_name_that_is_not_utf8_and_of_a_diverged_model(tmp_path, capsys):
    # A UTF-8 CSV cannot hold a Latin-1 name's byte: U+FFFD in file_name, as --json writes it, and the exact bytes
    # in a file_bytes column (base64) that opens the file; a probability that is not a number is an empty cell
    folder = tmp_path / "pictures"
    paths = _pictures(folder, 3, n=2)
    latin = os.fsdecode(b"caf\xe9.png")
    paths[1].rename(folder / latin)
    out = folder / "preds.csv"
    assert main(["predict", "test_predict:diverged_net", str(folder), "--input-size", "20", "--csv", str(out),
                 "--json"]) == 0  # (the text lines would write the name's own byte, which capsys cannot take)
    capsys.readouterr()
    rows = _read_csv(out)
    assert rows[0] == ["file_name", "label", "probability", "file_bytes"]
    by_name = {row[0]: row for row in rows[1:]}
    assert by_name["p0.png"][1:] == ["class 0", "", ""]
    assert base64.b64decode(by_name["caf\ufffd.png"][3]) == b"caf\xe9.png"
    assert (folder / os.fsdecode(base64.b64decode(by_name["caf\ufffd.png"][3]))).is_file()
    labels = read_csv_labels(out)  # the loader reads the name by its bytes: the CSV labels the folder again
    assert sorted(p.name for p, _, _ in labels.rows) == sorted(["p0.png", latin]) and not labels.unlisted


def test_csv_gets_every_answer_after_the_reader_of_stdout_has_left(tmp_path):
    # `predict ... --csv out.csv | head -1`: the printed answers stop with the reader, the CSV's do not
    ckpt = str(_checkpoint(tmp_path / "grey.pt", 1, 28))
    paths = _pictures(tmp_path / "photos", 1, n=3)
    out = tmp_path / "preds.csv"
    code = ("import sys; from cnnlab import predict; from cnnlab.cli import main; predict.PREDICT_CHUNK = 1; "
            "sys.exit(main(['predict', sys.argv[1], sys.argv[2], '--device', 'cpu', '--csv', sys.argv[3]]))")
    read_end, write_end = os.pipe()
    os.close(read_end)
    try:
        done = subprocess.run([sys.executable, "-c", code, ckpt, str(paths[0].parent), str(out)], stdout=write_end,
                              stderr=subprocess.PIPE, text=True, timeout=120,
                              env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path), "OMP_NUM_THREADS": "1"})
    finally:
        os.close(write_end)
    assert done.returncode == 0, done.stderr
    assert [row[0] for row in _read_csv(out)[1:]] == ["p0.png", "p1.png", "p2.png"]
