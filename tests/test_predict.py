"""cnnlab.predict: real test images written as files, odd formats, and files that must be refused in one line."""

from __future__ import annotations

import json
import struct
import zlib

import numpy as np
import pytest
import torch
from PIL import Image, ImageFile

import report_fixtures
from cnnlab.cli import main
from cnnlab.data import CLASSES, load_fashion_mnist
from cnnlab.errors import CnnlabError
from cnnlab.predict import format_predictions, load_image, predict_files
from cnnlab.train.checkpoint import load_model
from cnnlab.train.evaluate import predict_logits

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
    model, pre, _ = load_model(trained_run / "last.pt")
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
    model, pre, _ = load_model(trained_run / "last.pt")
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
    ("huge.png", _png_header(10_000, 6_000), "60 megapixels, expected at most 50 .refused before decoding"),
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
