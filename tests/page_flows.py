"""What a reader sees and does on each of cnnlab's pages, checked alike in every engine besides Chromium's own
tests: Firefox (:mod:`firefox_support`) and WebKit (:mod:`webkit_support`).

Each flow takes a ``browser`` with the part of Selenium's WebDriver the shared helpers use (``execute_script``,
``get``, ``set_window_size``, ``save_screenshot``, ``title``) and ``send_file``, ``press`` and ``errors`` (the errors
the page raised, as Chromium's SEVERE log entries). ``name`` prefixes the screenshots kept in ``artifacts``; ``phone``
is the narrowest page width the browser's window takes (375 px, a phone's; MiniBrowser's toolbar keeps it wider).
"""

from __future__ import annotations

import io
import json
import os
import shutil
import time
from pathlib import Path

import numpy as np
from PIL import Image
from selenium.webdriver.common.keys import Keys

import browser_support
import report_fixtures
import test_explore_api
import test_explore_boxes
import test_explore_networks
from a11y_support import low_contrast, sideways_scroll, small_targets, text_cut_by_its_box, unreachable_scrollers
from browser_support import broken_images, saved_page_reads_well, screenshot, segmentation_page_reads_well, wait
from cnnlab.io import write_json, write_metrics_csv
from cnnlab.runs import read_metrics

# The fixtures the flows take, for each engine's test file to import with them
explore_root, server = test_explore_api.explore_root, test_explore_api.server
trained_run, run_copy = report_fixtures.trained_run, report_fixtures.run_copy
artifacts = browser_support.artifacts

CARD_READY = "document.getElementById('result-card').classList.contains('ready')"
PHONE = 375


def _click(browser, css: str) -> None:
    browser.execute_script("document.querySelector(arguments[0]).click()", css)


def _shown(browser) -> dict:
    """What the result card shows: its heading's input, the input's picture and the top classes' rows."""
    return browser.execute_script(
        "return {source: document.getElementById('result-source').textContent, "
        "input: document.getElementById('result-input').src, "
        "top: Array.from(document.querySelectorAll('#top-table tbody tr')).map(r => r.textContent)}")


def saved_page_from_file_url(browser, saved_page: Path, artifacts: Path, name: str, phone: int = PHONE) -> None:
    """The saved page opened from file://: its model, maps and layers; another input picked from the keyboard; no
    request leaves it (its Content-Security-Policy refuses one, and says so), no error."""
    browser.get(saved_page.as_uri())
    wait(browser, "document.body.dataset.ready === '1'", what="the saved page to render")
    assert browser.title == "cnnlab explore: lenet.onnx"
    assert browser.execute_script("return document.querySelectorAll('#maps .maprow').length") == 6
    # the parameter count and the MACs of one image in words are the layers table's sums, grouped by thousands as in
    # English
    kind = browser.execute_script("return document.getElementById('model-kind').textContent")
    params, macs = (browser.execute_script("return Array.from(document.querySelectorAll('#layers-table tbody tr'))"
                                           f".map(r => +r.cells[{k}].textContent.replaceAll(',', ''))") for k in (3, 4))
    assert len(params) > 4 and sum(macs) > 0, (params, macs)
    assert kind == f"ONNX: 4 classes, {sum(params):,} parameters, {sum(macs):,} MACs per image", kind
    assert browser.execute_script("return document.getElementById('upload-box').offsetParent") is None
    # with scripts on, the notice for a preview that runs none is not shown
    assert "needs JavaScript" not in browser.execute_script("return document.body.innerText")
    # Another of the saved inputs, picked from the keyboard: every picture decoded, the answer said
    browser.execute_script("document.querySelectorAll('#images img')[1].focus()")
    browser.press(Keys.ENTER)
    wait(browser, "document.getElementById('result-source').textContent.includes('/1.png')", what="input 2")
    assert browser.execute_script("return document.querySelectorAll('#images img')[1].classList.contains('chosen')")
    saved_page_reads_well(browser, phone)
    assert browser.errors() == []
    screenshot(browser, artifacts / f"{name}-static-page.png")
    # the page's Content-Security-Policy holds from file:// too: a request is refused, never sent
    tried = browser.execute_script("return fetch('https://example.com/').then(() => 'sent', (e) => e.name)")
    assert tried == "TypeError"
    # the violation reaches the console after the fetch has failed (Firefox logs it asynchronously): waited for
    deadline = time.monotonic() + 10
    while not (refused := [e for e in browser.errors() if "Content-Security-Policy" in e and "example.com" in e]) \
            and time.monotonic() < deadline:
        time.sleep(0.1)
    assert refused, browser.errors()


def saved_page_of_a_segmentation_model(browser, folder: Path, tmp_path: Path, artifacts: Path, name: str,
                                       phone: int = PHONE) -> None:
    """The saved page of a network that is no classifier, a segmentation model's, from file://: "not a classifier",
    no top classes, the table of what it returns, the picture of its class per pixel and its legend, said to a screen
    reader, readable on a phone (:func:`browser_support.segmentation_page_reads_well`); no error."""
    browser.get(test_explore_networks.saved_segmentation_page(folder, tmp_path).as_uri())
    wait(browser, "document.body.dataset.ready === '1'", what="the saved page to render")
    segmentation_page_reads_well(browser, phone)
    assert browser.errors() == []
    screenshot(browser, artifacts / f"{name}-static-page-segmentation.png")


def saved_page_of_a_yolo_export(browser, folder: Path, tmp_path: Path, artifacts: Path, name: str) -> None:
    """The saved page of an Ultralytics detector's ONNX export, from file://: its boxes drawn over the input as
    Ultralytics' predict keeps them, how they were kept said under the picture, the metadata's names in the legend
    (:func:`browser_support.yolo_page_reads_well`); no error."""
    browser.get(test_explore_boxes.saved_yolo_page(folder, tmp_path).as_uri())
    wait(browser, "document.body.dataset.ready === '1'", what="the saved page to render")
    browser_support.yolo_page_reads_well(browser)
    assert browser.errors() == []
    screenshot(browser, artifacts / f"{name}-static-page-yolo.png")


def served_model_page_answers_an_uploaded_file(browser, lenet: dict, grey_folder: Path, tmp_path: Path) -> None:
    """The one-model page of an ONNX LeNet: the last picture picked, then a file uploaded and "invert" ticked, each
    answered in the result card in place of the one before."""
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
        browser.get(served.url)
        wait(browser, "document.body.dataset.ready === '1'", what="the model page to render")
        assert browser.execute_script("return document.getElementById('attr-a-caption').textContent").startswith(
            "occlusion")
        assert browser.execute_script("return document.querySelectorAll('#layers-table tbody tr').length") > 4
        assert not (small := small_targets(browser)), small  # the file chooser and "invert" too (24 x 24 px)
        last = browser.execute_script("const all = document.querySelectorAll('#images img'); "
                                      "all[all.length - 1].click(); return all[all.length - 1].alt")
        wait(browser, f"{CARD_READY} && document.getElementById('result-source').textContent === {last!r}",
             what="the last picture's answer")
        picked = _shown(browser)
        browser.send_file("#upload", upload)
        wait(browser, f"{CARD_READY} && document.getElementById('result-source').textContent === 'your image'",
             timeout=30, what="the upload's answer")
        answered = _shown(browser)
        assert answered["input"] != picked["input"] and len(answered["top"]) == 4, answered
        assert browser.execute_script("return document.querySelectorAll('#images img.chosen').length") == 0
        said = browser.execute_script("return document.getElementById('result-status').textContent")
        assert said.startswith("What the network makes of your image: "), said
        _click(browser, "#invert")
        wait(browser, CARD_READY, timeout=30, what="the inverted upload's answer")
        inverted = _shown(browser)
        assert inverted["source"] == "your image" and inverted["input"] not in (answered["input"], picked["input"])
        assert broken_images(browser) == [] and browser.errors() == []


def served_explorer_of_a_runs_folder(browser, server, explore_root: Path, artifacts: Path, tmp_path: Path,
                                     name: str, phone: int = PHONE) -> None:
    """The explorer of a runs folder, driven as a reader does (on a copy of its live run of its own), then no
    error."""
    live = Path(shutil.copytree(explore_root / "live", explore_root / f"live-{name}"))
    os.utime(live / "metrics.csv")  # copytree keeps the old mtime: a run unwritten for 10 minutes counts as stopped
    try:
        _drive(browser, server, artifacts, live, tmp_path, name, phone)
    finally:
        shutil.rmtree(live)
    assert browser.errors() == []


def _drive(browser, server, artifacts: Path, live: Path, tmp_path: Path, name: str, phone: int) -> None:
    browser.get(server.url)
    wait(browser, "document.body.dataset.ready", what="the runs table")
    runs = browser.execute_script("return Array.from(document.querySelectorAll('#runs-table tbody tr'))"
                                  ".map(r => r.dataset.run)")
    assert {"lenet", "sweep/rgb", live.name, "corrupt-checkpoint"} <= set(runs)
    assert "expected JSON" in browser.execute_script("return document.getElementById('runs-errors').textContent")
    # Compare: two runs' curves overlaid, each legend entry in its curve's colour
    _click(browser, "input.compare-box[data-run='lenet']")
    _click(browser, f"input.compare-box[data-run='{live.name}']")
    wait(browser, "document.querySelectorAll('#compare-acc circle.point[data-series$=\"val acc\"]').length === 4",
         what="the two runs' validation curves overlaid")
    fills = "return Array.from(document.querySelectorAll(arguments[0])).map(e => getComputedStyle(e).fill)"
    legend, points = (set(browser.execute_script(fills, f"#compare-acc {css}")) for css in ("text tspan", "circle"))
    assert legend == points and len(points) == 2, (legend, points)
    screenshot(browser, artifacts / f"{name}-explore-runs.png")

    # A run opened with Enter: the focus goes to its heading; a test picture picked with Enter too
    browser.execute_script("document.querySelector(\"a.run-link[data-run='lenet']\").focus()")
    browser.press(Keys.ENTER)
    assert browser.execute_script("return document.activeElement.id") == "run-title"
    wait(browser, "document.querySelectorAll('#gallery img.thumb').length === 6", what="the gallery")
    wait(browser, "document.querySelectorAll('#mistakes img.thumb').length > 0", what="the mistakes")
    # Tab alone reaches every control of the run's view in the page's order (Firefox makes its own tab stops of a
    # file input and of a box that scrolls: none may come between)
    described = "(e) => `${e.tagName}#${e.id}.${e.className} ${e.title}`"
    controls = browser.execute_script(f"return Array.from(document.querySelectorAll('#tab-run select, #tab-run input, "
                                      f"#tab-run button, #tab-run [tabindex=\"0\"]')).filter(e => e.offsetParent)"
                                      f".map({described})")
    reached = []
    for _ in controls:
        browser.press(Keys.TAB)
        reached.append(browser.execute_script(f"return ({described})(document.activeElement)"))
    assert reached == controls and len(controls) > 20, reached
    browser.execute_script("const s = document.getElementById('class-select'); s.value = '7';"
                           "s.dispatchEvent(new Event('change'))")
    wait(browser, "document.querySelector('#gallery img.thumb').title.endsWith('sneaker')", what="the sneakers")
    browser.execute_script("document.querySelector('#gallery img.thumb').focus()")
    browser.press(Keys.ENTER)
    wait(browser, CARD_READY, what="the picture's analysis")
    assert browser.execute_script("return document.getElementById('result-label').textContent") == (
        "true class: sneaker")
    assert browser.execute_script("return [document.querySelectorAll('#top-table tr.top').length, "
                                  "document.querySelectorAll('#maps img.map').length, "
                                  "document.getElementById('gradcam-row').textContent, "
                                  "document.querySelectorAll('#kernels img').length]") == [5, 28, "features.5", 6]
    assert "61,706" in browser.execute_script("return document.getElementById('layers-table').textContent")
    wait(browser, "Array.from(document.images).every(i => i.complete)", what="the pictures to load")
    assert broken_images(browser) == []
    assert browser.execute_script("return document.getElementById('gradcam').naturalWidth") == 28
    assert low_contrast(browser) == []
    screenshot(browser, artifacts / f"{name}-explore-run.png")

    # A drawing (the canvas's toBlob) is classified; a file that is no picture is refused in an alert
    browser.execute_script("""
        const c = document.getElementById('draw'), b = c.getBoundingClientRect();
        const ev = (type, x, y) => c.dispatchEvent(new PointerEvent(type, {clientX: b.left + x, clientY: b.top + y}));
        ev('pointerdown', 60, 40); ev('pointermove', 60, 190); ev('pointermove', 160, 190); ev('pointerup', 160, 190);
        document.getElementById('draw-go').click();""")
    wait(browser, f"{CARD_READY} && document.getElementById('result-source').textContent === 'your image'",
         what="the drawing's analysis")
    not_a_picture = tmp_path / "not-a-picture.png"
    not_a_picture.write_bytes(b"plain text, not a picture")
    browser.send_file("#upload", not_a_picture)
    wait(browser, "document.querySelector('#result-error .error-card[role=alert]')", what="the refusal")
    assert browser.execute_script("return document.getElementById('result-body').hidden")

    # The book's cross-correlation, step by step, to the book's result (d2l 7.2.1)
    _click(browser, "nav a[data-tab='ops']")
    wait(browser, "document.querySelector('#ops-y-table')", what="the ops view")
    for _ in range(4):
        _click(browser, "#ops-step")
    assert browser.execute_script("return document.getElementById('ops-result').textContent") == (
        "[[19, 25], [37, 43]]")

    # The window narrowed to a phone's while another tab was shown: back on the run, its charts are drawn at the
    # width they are shown at (they kept 520 units, scaled into 299 px: 6 px text)
    browser.set_window_size(phone, 667)
    try:
        wait(browser, f"innerWidth === {phone}", what="the phone's width")
        time.sleep(0.5)  # past the resize handler's pause, so that it has drawn (only) the charts then shown
        _click(browser, "nav a[data-tab='run']")
        chart = browser.execute_script("const s = document.getElementById('run-acc'); "
                                       "return [s.viewBox.baseVal.width, s.getBoundingClientRect().width]")
        assert chart[0] <= chart[1] + 1, chart
        assert sideways_scroll(browser) == 0
    finally:
        browser.set_window_size(1280, 1000)

    # A run still training: its curves grow as metrics.csv does (server-sent events), and it turns finished
    _click(browser, "nav a[data-tab='runs']")
    _click(browser, f"a.run-link[data-run='{live.name}']")
    val = "document.querySelectorAll('#run-acc circle.point[data-series=\"val acc\"]').length"
    wait(browser, f"{val} === 2", what="the live run's two epochs")
    rows = read_metrics(live)
    rows.append({**rows[-1], "epoch": 3.0, "val_acc": 0.9})
    write_metrics_csv(live / "metrics.csv", rows)
    wait(browser, f"{val} === 3", timeout=30, what="the third epoch, streamed")
    write_json(live / "result.json", {"model": "lenet-relu", "status": "finished", "test_acc": 0.9})
    wait(browser, "document.getElementById('run-stats').textContent.includes('finished')", timeout=30,
         what="the run to turn finished")


def report_reads_well(browser, run: Path, artifacts: Path, name: str, phone: int = PHONE) -> None:
    """A run's report.html: every picture decoded, the test accuracy said, AA contrast; at a phone's width no
    sideways scroll and the run's facts inside their card; no error."""
    from cnnlab.report import write_report

    report = write_report(run, device="cpu")
    browser.set_window_size(1200, 900)
    browser.get(report.as_uri())
    widths = browser.execute_script("return Array.from(document.images).map(i => i.complete ? i.naturalWidth : 0)")
    assert len(widths) >= 6 and all(w > 0 for w in widths), widths
    text = browser.execute_script("return document.body.innerText")
    acc = json.loads((run / "result.json").read_text())["test_acc"]
    assert f"{acc:.2%}" in text and "final test accuracy" in text
    assert low_contrast(browser) == []
    browser.set_window_size(phone, 667)
    assert sideways_scroll(browser) == 0 and unreachable_scrollers(browser) == []
    assert text_cut_by_its_box(browser) == []
    facts = browser.execute_script("const s = document.querySelector('dl').closest('section'); "
                                   "return [s.scrollWidth, s.clientWidth]")
    assert facts[0] <= facts[1], facts
    assert browser.errors() == []
    screenshot(browser, artifacts / f"{name}-report.png")
