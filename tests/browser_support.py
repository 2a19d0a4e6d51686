"""What the page tests share in either browser (headless Chromium through Selenium, Firefox through
:mod:`firefox_support`): waiting on the page, the pictures it failed to show, screenshots kept as artifacts.

Each takes a ``driver`` with Selenium's ``execute_script``, ``set_window_size`` and ``save_screenshot``.
"""

from __future__ import annotations

import os
import re
import time
from pathlib import Path

import pytest

from a11y_support import (
    broken_shapes,
    low_contrast,
    sideways_scroll,
    small_targets,
    text_cut_by_its_box,
    unreachable_scrollers,
)


@pytest.fixture()
def artifacts(tmp_path) -> Path:
    folder = Path(os.environ.get("CNNLAB_ARTIFACTS") or tmp_path / "artifacts")
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def wait(driver, script: str, timeout: float = 60, what: str = ""):
    """Poll a JavaScript expression until it is truthy; returns its value."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = driver.execute_script("return " + script)
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what or script}")


def broken_images(driver) -> list[str]:
    return driver.execute_script(
        "return Array.from(document.images).filter(i => i.offsetParent !== null && "
        "!(i.complete && i.naturalWidth > 0)).map(i => i.alt || i.src.slice(0, 60))")


def screenshot(driver, path: Path) -> None:
    height = driver.execute_script("return document.documentElement.scrollHeight")
    driver.set_window_size(1280, min(max(height, 800), 6000))
    assert driver.save_screenshot(str(path))
    driver.set_window_size(1280, 1000)


def saved_page_reads_well(driver, phone: int = 375) -> None:
    """What a reader of the saved explorer page sees once its second input (``/1.png``) is shown, in any browser:
    every picture decoded, the answer said and readable, every control large enough to touch; on a phone (``phone`` px
    wide) no sideways scroll, and a stage's name above its maps; nothing requested from anywhere."""
    assert broken_images(driver) == []
    # A screen reader hears the answer (the status region), and every text can be read (contrast)
    said = driver.execute_script("return document.getElementById('result-status').textContent")
    top = driver.execute_script("return document.querySelector('#top-table tbody td').textContent")
    assert said.startswith("What the network makes of ") and "/1.png: " + top in said, said
    assert low_contrast(driver) == []
    assert not (small := small_targets(driver)), small  # every control a finger can hit (WCAG 2.2's 24 x 24 px)
    # On a phone the page does not scroll sideways, and a stage's name stands above its maps, not in a 190 px column
    driver.set_window_size(phone, 667)
    try:
        wait(driver, f"innerWidth === {phone}", what="the phone's width")
        assert sideways_scroll(driver) == 0 and unreachable_scrollers(driver) == []  # the layers scroll in a tab stop
        assert not (small := small_targets(driver)), small
        assert text_cut_by_its_box(driver) == []
        assert broken_shapes(driver, "#layers-table td.num") == []  # a layer's "6 x 28 x 28" on one line
        widths = driver.execute_script("const row = document.querySelector('#maps .maprow'); "
                                       "return [row.querySelector('.label').offsetWidth, row.clientWidth]")
        assert widths[0] == widths[1], widths
    finally:
        driver.set_window_size(1280, 1000)
    requested = driver.execute_script("return performance.getEntriesByType('resource').map(e => e.name)")
    assert [r for r in requested if not r.startswith("data:")] == []


def yolo_page_reads_well(driver) -> None:
    """What a reader of a YOLO export's saved page sees, in any browser (the page of
    :func:`test_explore_boxes.saved_yolo_page`: a head of three known boxes, its names in the metadata): the boxes kept
    as Ultralytics' predict keeps them drawn over the input, how they were kept said under the picture and to a
    screen reader by its alt text, a legend of the metadata's names and scores; every picture decoded."""
    caption, alt = driver.execute_script("return [document.querySelector('#segments figcaption').textContent, "
                                         "document.querySelector('#segments img').alt]")
    kept = "confidence above 0.25 and no overlap above IoU 0.7 with a better box of its class, as Ultralytics' " \
           "predict keeps them"
    assert caption == f"output0: the 3 highest-scoring of its 3 boxes ({kept}), over the input", caption
    assert alt == "output0: its 3 highest-scoring boxes"
    assert driver.execute_script("const i = document.querySelector('#segments img'); "
                                 "return i.offsetParent !== null && i.naturalWidth > 0")
    legend = driver.execute_script("return Array.from(document.querySelectorAll('#segments .legend li'), "
                                   "li => li.textContent)")
    assert legend == ["dog 0.90", "bird 0.85", "cat 0.50"], legend
    assert broken_images(driver) == []


def segmentation_page_reads_well(driver, phone: int = 375) -> None:
    """What a reader of a segmentation model's saved page sees, in any browser (the page of
    :func:`test_explore_networks.saved_segmentation_page`: one output ``out``, 2 x 16 x 16, its channels named ``red``
    and ``dark``): "not a classifier" in the model line and its reason in the notes, no top classes and no
    attribution, the table of what it returns, the picture of its largest channel at each pixel with a legend of the
    channels' names and shares, and the status line a screen reader hears saying them; every picture decoded,
    readable, every control large enough to touch; on a phone (``phone`` px wide) no sideways scroll, nothing cut, a
    shape on one line."""
    assert ": not a classifier, " in driver.execute_script("return document.getElementById('model-kind').textContent")
    notes = driver.execute_script("return Array.from(document.querySelectorAll('#model-notes li'), n => n.textContent)")
    assert any(n.startswith("Not a classifier: ") for n in notes), notes
    assert driver.execute_script("return ['top-box', 'attr-a-box', 'attr-b-box'].map("
                                 "id => document.getElementById(id).offsetParent)") == [None] * 3
    cells = driver.execute_script("return Array.from(document.querySelectorAll('#outputs-table tbody tr'), "
                                  "r => Array.from(r.cells, c => c.textContent))")
    assert [c[:3] for c in cells] == [["out", "2 x 16 x 16", "float32"]], cells
    assert driver.execute_script("const i = document.querySelector('#segments img'); "
                                 "return i.offsetParent !== null && i.naturalWidth > 0")
    legend = driver.execute_script("return Array.from(document.querySelectorAll('#segments .legend li'), "
                                   "li => li.textContent)")
    assert legend and all(re.fullmatch(r"(red|dark) \d+\.\d%", text) for text in legend), legend
    # a screen reader hears what it returns (it heard "What the network makes of p0.png: " and nothing)
    said, source = driver.execute_script("return ['result-status', 'result-source'].map("
                                         "id => document.getElementById(id).textContent)")
    assert said == f"What the network makes of {source}: out, 2 x 16 x 16 ({', '.join(legend)})", said
    assert broken_images(driver) == [] and low_contrast(driver) == []
    assert not (small := small_targets(driver)), small
    driver.set_window_size(phone, 667)
    try:
        wait(driver, f"innerWidth === {phone}", what="the phone's width")
        assert sideways_scroll(driver) == 0 and unreachable_scrollers(driver) == []
        assert not (small := small_targets(driver)), small
        assert text_cut_by_its_box(driver) == [] and broken_shapes(driver, "#outputs-table td.num") == []
    finally:
        driver.set_window_size(1280, 1000)
