"""A picture fed as Ultralytics' predict feeds the networks it exports (cnnlab.picture's letterbox): OpenCV's bilinear
resize in its own integers, and LetterBox's arithmetic of the resized size and of the padding."""

from __future__ import annotations

import io
import warnings

import numpy as np
import pytest
import torch
from PIL import Image

from cnnlab.picture import (
    LETTERBOX,
    SHORTER_SIDE,
    STRETCH,
    Letterbox,
    _bilinear,
    letterbox_fit,
    minimum_rectangle,
    read_picture,
)

# A 5 x 7 grey picture (numpy's default_rng(7) integers) and what OpenCV 5.1.0's cv2.resize(picture, (width, height),
# interpolation=cv2.INTER_LINEAR) made of it: shrunk to 4 x 3, and enlarged to 11 x 8, where 12 of its pixels are a
# level off the exact bilinear value rounded half up (OpenCV weighs in 11-bit integers and rounds in its own steps)
PICTURE = [[139, 74, 229, 241, 169, 65, 6], [160, 149, 106, 38, 175, 188, 205], [175, 229, 98, 249, 10, 148, 95],
           [86, 147, 198, 66, 39, 106, 213], [171, 45, 167, 57, 69, 81, 55]]
OPENCV = {(3, 4): [[128, 186, 171, 85], [195, 117, 40, 115], [119, 163, 59, 101]],
          (8, 11): [[139, 109, 88, 187, 233, 241, 195, 140, 74, 33, 6],
                    [148, 129, 113, 157, 167, 152, 165, 157, 123, 105, 93],
                    [161, 158, 150, 119, 86, 51, 123, 170, 183, 192, 198],
                    [170, 185, 195, 129, 130, 183, 106, 89, 151, 143, 129],
                    [147, 173, 197, 149, 152, 192, 82, 51, 124, 133, 132],
                    [91, 119, 156, 181, 150, 77, 52, 56, 102, 161, 205],
                    [134, 114, 98, 156, 137, 61, 58, 66, 88, 109, 124],
                    [171, 114, 56, 134, 127, 57, 65, 72, 80, 67, 55]]}


@pytest.mark.parametrize("hw", list(OPENCV))
def test_the_resize_gives_opencvs_bilinear_to_the_level(hw):
    """Ultralytics resizes with cv2.INTER_LINEAR, whose integer arithmetic a float bilinear rounded half up misses by a
    level at about a pixel in ten: the resize gives OpenCV's own values, grey and per channel alike."""
    picture = np.array(PICTURE, np.uint8)
    assert _bilinear(picture, *hw).tolist() == OPENCV[hw]
    channels = [picture, 255 - picture, picture[::-1].copy()]
    resized = _bilinear(np.stack(channels, 2), *hw)
    assert all((resized[..., k] == _bilinear(channel, *hw)).all() for k, channel in enumerate(channels))


@pytest.mark.parametrize("hw, out", [((360, 640), (180, 320)), ((500, 300), (320, 192)), ((77, 100), (246, 320)),
                                     ((31, 1000), (10, 320))])
def test_the_resize_is_torchs_bilinear_without_antialiasing_within_a_level(hw, out):
    """Judged by torch's bilinear (half-pixel centres, no antialiasing, as OpenCV's): within one level everywhere,
    shrinking and enlarging, on noise, where an antialiased or Lanczos resize is tens of levels away."""
    picture = torch.randint(0, 256, (*hw, 3), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    exact = torch.nn.functional.interpolate(picture.permute(2, 0, 1)[None].double(), size=out, mode="bilinear",
                                            align_corners=False, antialias=False)[0].permute(1, 2, 0)
    assert (torch.from_numpy(_bilinear(picture.numpy(), *out)).double() - exact).abs().max() <= 0.5 + 1


@pytest.mark.parametrize("hw, input_hw, expected", [
    ((74, 128), (64, 64), (0, 13, 64, 37)),  # an odd padding: its extra row below (round(13.5 - 0.1) above)
    ((360, 640), (320, 320), (0, 70, 320, 180)),
    ((500, 300), (320, 320), (64, 0, 192, 320)),
    ((517, 333), (320, 320), (57, 0, 206, 320)),  # 206.09...: the width rounded, the padding 114 halved
    ((3, 3000), (320, 320), (0, 159, 320, 1)),  # at least a pixel, its padding of 319 split 159 above, 160 below
    ((90, 160), (64, 64), (0, 14, 64, 36)),  # 35.99... rounds to 36
])
def test_the_letterbox_places_the_picture_as_ultralytics_letterbox_does(hw, input_hw, expected):
    """Each side scaled by the smaller ratio and rounded, the padding halved and its left and top rounded down from
    the half (Ultralytics' round(pad / 2 - 0.1)): where its scale_boxes puts boxes back on the picture. (The expected
    places are those Ultralytics 8.4.190's LetterBox(input_hw, auto=False).get_params gave.)"""
    assert letterbox_fit(hw, input_hw) == expected
    assert letterbox_fit(hw, input_hw, stretch=True) == (0, 0, input_hw[1], input_hw[0])


@pytest.mark.parametrize("hw, input_hw, place, rectangle", [
    ((360, 640), (640, 640), (0, 12, 640, 360), (384, 640)),  # its predictor fed yolov8n (dynamic=True) 384 x 640
    ((500, 300), (640, 640), (0, 0, 384, 640), (640, 384)),
    ((360, 640), (320, 320), (0, 6, 320, 180), (192, 320)),  # and 192 x 320 at imgsz=320
    ((3, 3000), (320, 320), (0, 15, 320, 1), (32, 320)),  # a padding of 31: 15 above, 16 below
    ((90, 160), (64, 64), (0, 14, 64, 36), (64, 64)),  # 28 rows of padding, less than a stride: all kept
    ((517, 333), (320, 320), (9, 0, 206, 320), (320, 224)),
    ((333, 517), (320, 480), (0, 5, 480, 309), (320, 480)),
])
def test_the_minimum_rectangle_is_ultralytics_letterbox_to_a_multiple_of_the_stride(hw, input_hw, place, rectangle):
    """For a network of any input shape (a PyTorch one, an export of dynamic sides) Ultralytics' predict letterboxes
    a picture only up to a multiple of the stride (LetterBox's auto): each side's padding modulo 32, halved as before.
    The places and shapes are those Ultralytics 8.4.190's LetterBox(input_hw, auto=True, stride=32) gave (get_params,
    and the shape of the image it returned); read_picture makes that input, its picture where letterbox_fit puts it."""
    assert letterbox_fit(hw, input_hw, stride=32) == place
    assert minimum_rectangle(hw, input_hw, 32) == rectangle
    picture = io.BytesIO()
    Image.fromarray(np.full((*hw, 3), 200, np.uint8)).save(picture, "PNG")
    fed = read_picture(picture.getvalue(), name="the upload", channels=3, size=input_hw, invert=False,
                       max_bytes=2**20, max_pixels=10**7, fit=Letterbox(32))
    left, top, width, height = place
    assert fed.shape == (3, *rectangle) and (fed[:, top:top + height, left:left + width] == 200).all()
    assert int((fed == 114).all(0).sum()) == rectangle[0] * rectangle[1] - width * height


@pytest.mark.parametrize("fit", [LETTERBOX, STRETCH, SHORTER_SIDE])
@pytest.mark.parametrize("channels", [1, 3])
def test_a_palette_picture_with_transparency_is_read_whole_without_pillows_warning(fit, channels):
    """A GIF's or an indexed PNG's palette with a transparent entry is read as OpenCV's imread reads it, its alpha
    dropped, and without the UserWarning Pillow gives where such a palette is converted straight to RGB or grey (as
    the folder's decode already goes through RGBA): the same pixels as the picture without its transparency."""
    picture = Image.fromarray(np.arange(48, dtype=np.uint8).reshape(6, 8) * 5, "L").convert("P")
    opaque, transparent = io.BytesIO(), io.BytesIO()
    picture.save(opaque, "PNG")
    picture.save(transparent, "PNG", transparency=bytes([0, 128] + [255] * 254))

    def read(data: bytes) -> torch.Tensor:
        return read_picture(data, name="the upload", channels=channels, size=(6, 6), invert=False,
                            max_bytes=2**20, max_pixels=10**6, fit=fit)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert torch.equal(read(transparent.getvalue()), read(opaque.getvalue()))
