"""cnnlab's pages in headless Firefox, the second engine a reader may open them in: the saved explorer page from
file:// (a course page, a mailed file), the served explorer of a runs folder and of one ONNX model, a run's report.

The Chromium tests check these pages in depth; these check, in Gecko, what a reader sees and does there: the answers,
maps and charts, a picture picked with the keyboard, a file uploaded and a drawing classified, a phone's width, no
request from the saved page (its Content-Security-Policy holds), no error. Firefox is driven over Marionette
(:mod:`firefox_support`); screenshots are kept in ``$CNNLAB_ARTIFACTS`` as the Chromium tests' are.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import browser_support
import report_fixtures
import test_explore_api
from a11y_support import low_contrast, sideways_scroll, unreachable_scrollers
from browser_support import broken_images, saved_page_reads_well, screenshot, wait
from cnnlab.io import write_json, write_metrics_csv
from cnnlab.runs import read_metrics
from explore_support import grey_folder, lenet, one_thread, saved_page  # noqa: F401  (fixtures)
from firefox_support import ENTER, FIREFOX, TAB, Firefox, needs_firefox

explore_root, server = test_explore_api.explore_root, test_explore_api.server  # shared fixtures
trained_run, run_copy = report_fixtures.trained_run, report_fixtures.run_copy
artifacts = browser_support.artifacts

pytestmark = [pytest.mark.slow, needs_firefox]

CARD_READY = "document.getElementById('result-card').classList.contains('ready')"


@pytest.fixture()
def firefox(tmp_path):
    assert FIREFOX, "CI=true but firefox is missing (see .ci/run)"
    browser = Firefox(tmp_path)
    yield browser
    browser.quit()


def _click(browser, css: str) -> None:
    browser.execute_script("document.querySelector(arguments[0]).click()", css)


def _shown(browser) -> dict:
    """What the result card shows: its heading's input, the input's picture and the top classes' rows."""
    return browser.execute_script(
        "return {source: document.getElementById('result-source').textContent, "
        "input: document.getElementById('result-input').src, "
        "top: Array.from(document.querySelectorAll('#top-table tbody tr')).map(r => r.textContent)}")


def test_saved_page_from_file_url(saved_page, firefox, artifacts):  # noqa: F811
    firefox.get(saved_page.as_uri())
    wait(firefox, "document.body.dataset.ready === '1'", what="the saved page to render")
    assert firefox.title == "cnnlab explore: lenet.onnx"
    assert firefox.execute_script("return document.querySelectorAll('#maps .maprow').length") == 6
    # the parameter count in words is the layers table's sum, grouped by thousands as in English
    kind = firefox.execute_script("return document.getElementById('model-kind').textContent")
    params = firefox.execute_script("return Array.from(document.querySelectorAll('#layers-table tbody tr'))"
                                    ".map(r => +r.cells[3].textContent.replaceAll(',', ''))")
    assert len(params) > 4 and kind == f"ONNX: 4 classes, {sum(params):,} parameters", kind
    assert firefox.execute_script("return document.getElementById('upload-box').offsetParent") is None
    # Another of the saved inputs, picked from the keyboard: every picture decoded, the answer said
    firefox.execute_script("document.querySelectorAll('#images img')[1].focus()")
    firefox.press(ENTER)
    wait(firefox, "document.getElementById('result-source').textContent.includes('/1.png')", what="input 2")
    assert firefox.execute_script("return document.querySelectorAll('#images img')[1].classList.contains('chosen')")
    saved_page_reads_well(firefox)
    assert firefox.errors() == []
    screenshot(firefox, artifacts / "firefox-static-page.png")
    # Firefox keeps the page's Content-Security-Policy from file:// too: a request is refused, never sent
    tried = firefox.execute_script("return fetch('https://example.com/').then(() => 'sent', (e) => e.name)")
    assert tried == "TypeError"
    assert [e for e in firefox.errors() if "Content-Security-Policy" in e and "example.com" in e], firefox.errors()


def test_served_model_page_answers_an_uploaded_file(lenet, grey_folder, tmp_path, firefox):  # noqa: F811
    """The one-model page's upload handed no renderer to the result card: "render is not a function", and the
    picture chosen before stayed on screen under "What the network makes of your image" (ticking "invert" too)."""
    from cnnlab.explore import BackgroundServer, create_model_app
    from cnnlab.explore.sources import open_with_images

    model, images = open_with_images(lenet["onnx"], grey_folder)
    upload = tmp_path / "ring.png"
    ring = np.zeros((28, 28), np.uint8)
    ring[6:22, 6:22], ring[10:18, 10:18] = 255, 0
    buffer = io.BytesIO()
    Image.fromarray(ring).save(buffer, format="PNG")
    upload.write_bytes(buffer.getvalue())
    with BackgroundServer(app=create_model_app(model, images)) as served:
        firefox.get(served.url)
        wait(firefox, "document.body.dataset.ready === '1'", what="the model page to render")
        assert firefox.execute_script("return document.getElementById('attr-a-caption').textContent").startswith(
            "occlusion")
        assert firefox.execute_script("return document.querySelectorAll('#layers-table tbody tr').length") > 4
        last = firefox.execute_script("const all = document.querySelectorAll('#images img'); "
                                      "all[all.length - 1].click(); return all[all.length - 1].alt")
        wait(firefox, f"{CARD_READY} && document.getElementById('result-source').textContent === {last!r}",
             what="the last picture's answer")
        picked = _shown(firefox)
        firefox.send_file("#upload", upload)
        wait(firefox, f"{CARD_READY} && document.getElementById('result-source').textContent === 'your image'",
             timeout=30, what="the upload's answer")
        answered = _shown(firefox)
        assert answered["input"] != picked["input"] and len(answered["top"]) == 4, answered
        assert firefox.execute_script("return document.querySelectorAll('#images img.chosen').length") == 0
        said = firefox.execute_script("return document.getElementById('result-status').textContent")
        assert said.startswith("What the network makes of your image: "), said
        _click(firefox, "#invert")
        wait(firefox, CARD_READY, timeout=30, what="the inverted upload's answer")
        inverted = _shown(firefox)
        assert inverted["source"] == "your image" and inverted["input"] not in (answered["input"], picked["input"])
        assert broken_images(firefox) == [] and firefox.errors() == []


def test_served_explorer_of_a_runs_folder(server, explore_root, firefox, artifacts, tmp_path):
    live = Path(shutil.copytree(explore_root / "live", explore_root / "live-firefox"))
    os.utime(live / "metrics.csv")  # copytree keeps the old mtime: a run unwritten for 10 minutes counts as stopped
    try:
        _drive(server, firefox, artifacts, live, tmp_path)
    finally:
        shutil.rmtree(live)
    assert firefox.errors() == []


def _drive(server, firefox, artifacts: Path, live: Path, tmp_path: Path) -> None:
    firefox.get(server.url)
    wait(firefox, "document.body.dataset.ready", what="the runs table")
    runs = firefox.execute_script("return Array.from(document.querySelectorAll('#runs-table tbody tr'))"
                                  ".map(r => r.dataset.run)")
    assert {"lenet", "sweep/rgb", "live-firefox", "corrupt-checkpoint"} <= set(runs)
    assert "expected JSON" in firefox.execute_script("return document.getElementById('runs-errors').textContent")
    # Compare: two runs' curves overlaid, each legend entry in its curve's colour
    _click(firefox, "input.compare-box[data-run='lenet']")
    _click(firefox, "input.compare-box[data-run='live-firefox']")
    wait(firefox, "document.querySelectorAll('#compare-acc circle.point[data-series$=\"val acc\"]').length === 4",
         what="the two runs' validation curves overlaid")
    fills = "return Array.from(document.querySelectorAll(arguments[0])).map(e => getComputedStyle(e).fill)"
    legend, points = (set(firefox.execute_script(fills, f"#compare-acc {css}")) for css in ("text tspan", "circle"))
    assert legend == points and len(points) == 2, (legend, points)
    screenshot(firefox, artifacts / "firefox-explore-runs.png")

    # A run opened with Enter: the focus goes to its heading; a test picture picked with Enter too
    firefox.execute_script("document.querySelector(\"a.run-link[data-run='lenet']\").focus()")
    firefox.press(ENTER)
    assert firefox.execute_script("return document.activeElement.id") == "run-title"
    wait(firefox, "document.querySelectorAll('#gallery img.thumb').length === 6", what="the gallery")
    wait(firefox, "document.querySelectorAll('#mistakes img.thumb').length > 0", what="the mistakes")
    # Tab alone reaches every control of the run's view in the page's order (Firefox makes its own tab stops of a
    # file input and of a box that scrolls: none may come between)
    name = "(e) => `${e.tagName}#${e.id}.${e.className} ${e.title}`"
    controls = firefox.execute_script(f"return Array.from(document.querySelectorAll('#tab-run select, #tab-run input, "
                                      f"#tab-run button, #tab-run [tabindex=\"0\"]')).filter(e => e.offsetParent)"
                                      f".map({name})")
    reached = []
    for _ in controls:
        firefox.press(TAB)
        reached.append(firefox.execute_script(f"return ({name})(document.activeElement)"))
    assert reached == controls and len(controls) > 20, reached
    firefox.execute_script("const s = document.getElementById('class-select'); s.value = '7';"
                           "s.dispatchEvent(new Event('change'))")
    wait(firefox, "document.querySelector('#gallery img.thumb').title.endsWith('sneaker')", what="the sneakers")
    firefox.execute_script("document.querySelector('#gallery img.thumb').focus()")
    firefox.press(ENTER)
    wait(firefox, CARD_READY, what="the picture's analysis")
    assert firefox.execute_script("return document.getElementById('result-label').textContent") == (
        "true class: sneaker")
    assert firefox.execute_script("return [document.querySelectorAll('#top-table tr.top').length, "
                                  "document.querySelectorAll('#maps img.map').length, "
                                  "document.getElementById('gradcam-row').textContent, "
                                  "document.querySelectorAll('#kernels img').length]") == [5, 28, "features.5", 6]
    assert "61,706" in firefox.execute_script("return document.getElementById('layers-table').textContent")
    wait(firefox, "Array.from(document.images).every(i => i.complete)", what="the pictures to load")
    assert broken_images(firefox) == []
    assert firefox.execute_script("return document.getElementById('gradcam').naturalWidth") == 28
    assert low_contrast(firefox) == []
    screenshot(firefox, artifacts / "firefox-explore-run.png")

    # A drawing (the canvas's toBlob) is classified; a file that is no picture is refused in an alert
    firefox.execute_script("""
        const c = document.getElementById('draw'), b = c.getBoundingClientRect();
        const ev = (type, x, y) => c.dispatchEvent(new PointerEvent(type, {clientX: b.left + x, clientY: b.top + y}));
        ev('pointerdown', 60, 40); ev('pointermove', 60, 190); ev('pointermove', 160, 190); ev('pointerup', 160, 190);
        document.getElementById('draw-go').click();""")
    wait(firefox, f"{CARD_READY} && document.getElementById('result-source').textContent === 'your image'",
         what="the drawing's analysis")
    not_a_picture = tmp_path / "not-a-picture.png"
    not_a_picture.write_bytes(b"plain text, not a picture")
    firefox.send_file("#upload", not_a_picture)
    wait(firefox, "document.querySelector('#result-error .error-card[role=alert]')", what="the refusal")
    assert firefox.execute_script("return document.getElementById('result-body').hidden")

    # The book's cross-correlation, step by step, to the book's result (d2l 7.2.1)
    _click(firefox, "nav a[data-tab='ops']")
    wait(firefox, "document.querySelector('#ops-y-table')", what="the ops view")
    for _ in range(4):
        _click(firefox, "#ops-step")
    assert firefox.execute_script("return document.getElementById('ops-result').textContent") == (
        "[[19, 25], [37, 43]]")

    # The window narrowed to a phone's while another tab was shown: back on the run, its charts are drawn at the
    # width they are shown at (they kept 520 units, scaled into 299 px: 6 px text)
    firefox.set_window_size(375, 667)
    try:
        wait(firefox, "innerWidth === 375", what="the phone's width")
        time.sleep(0.5)  # past the resize handler's pause, so that it has drawn (only) the charts then shown
        _click(firefox, "nav a[data-tab='run']")
        chart = firefox.execute_script("const s = document.getElementById('run-acc'); "
                                       "return [s.viewBox.baseVal.width, s.getBoundingClientRect().width]")
        assert chart[0] <= chart[1] + 1, chart
        assert sideways_scroll(firefox) == 0
    finally:
        firefox.set_window_size(1280, 1000)

    # A run still training: its curves grow as metrics.csv does (server-sent events), and it turns finished
    _click(firefox, "nav a[data-tab='runs']")
    _click(firefox, "a.run-link[data-run='live-firefox']")
    val = "document.querySelectorAll('#run-acc circle.point[data-series=\"val acc\"]').length"
    wait(firefox, f"{val} === 2", what="the live run's two epochs")
    rows = read_metrics(live)
    rows.append({**rows[-1], "epoch": 3.0, "val_acc": 0.9})
    write_metrics_csv(live / "metrics.csv", rows)
    wait(firefox, f"{val} === 3", timeout=30, what="the third epoch, streamed")
    write_json(live / "result.json", {"model": "lenet-relu", "status": "finished", "test_acc": 0.9})
    wait(firefox, "document.getElementById('run-stats').textContent.includes('finished')", timeout=30,
         what="the run to turn finished")


def test_report(run_copy, firefox, artifacts):
    from cnnlab.report import write_report

    report = write_report(run_copy, device="cpu")
    firefox.set_window_size(1200, 900)
    firefox.get(report.as_uri())
    widths = firefox.execute_script("return Array.from(document.images).map(i => i.complete ? i.naturalWidth : 0)")
    assert len(widths) >= 6 and all(w > 0 for w in widths), widths
    text = firefox.execute_script("return document.body.innerText")
    acc = json.loads((run_copy / "result.json").read_text())["test_acc"]
    assert f"{acc:.2%}" in text and "final test accuracy" in text
    assert low_contrast(firefox) == []
    firefox.set_window_size(375, 667)
    assert sideways_scroll(firefox) == 0 and unreachable_scrollers(firefox) == []
    facts = firefox.execute_script("const s = document.querySelector('dl').closest('section'); "
                                   "return [s.scrollWidth, s.clientWidth]")
    assert facts[0] <= facts[1], facts
    assert firefox.errors() == []
    screenshot(firefox, artifacts / "firefox-report.png")
