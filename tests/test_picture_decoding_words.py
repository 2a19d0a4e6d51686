"""The steps an export's ``cnnlab.picture`` metadata spells out, followed literally by a deployment without cnnlab,
give the image cnnlab decodes, for a 16-bit grey PNG too."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image, ImageOps

from cnnlab.picture import centre_crop, decoding


@pytest.mark.parametrize("crop", [True, False])
def test_the_words_say_how_16_bit_grey_becomes_8_bits(crop):
    # "16-bit grey scaled to 8 bits" left the scale unsaid: a deployment that opened a 16-bit PNG and called
    # .convert('RGB') as the words go on had Pillow clip it (every value above 255 white) and got another answer.
    assert "16-bit grey (mode I;16) to 8 bits as round(v / 257)" in decoding(crop, 3, 32)


def test_following_the_words_for_a_16_bit_png_gives_cnnlabs_image(tmp_path):
    values = np.random.default_rng(0).integers(0, 65536, (40, 48), dtype=np.uint16)
    Image.fromarray(values).save(tmp_path / "deep.png")
    with Image.open(tmp_path / "deep.png") as im:
        ours = centre_crop(im, 32, 3)
    with Image.open(tmp_path / "deep.png") as im:  # as the words say, step by step
        assert im.mode.startswith("I;16")
        eight = Image.fromarray(np.rint(np.asarray(im, dtype=np.float64) / 257).astype(np.uint8), "L")
        theirs = np.asarray(ImageOps.fit(eight.convert("RGB"), (32, 32), Image.BILINEAR))
    assert np.array_equal(ours, theirs)
