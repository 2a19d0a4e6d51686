"""cnnlab explore's page in headless Chromium: runs, one input, the book's ops and a live run, with no errors.

Screenshots are kept as test artifacts in ``$CNNLAB_ARTIFACTS`` (default: pytest's tmp dir); with
``CNNLAB_EXPLORE_SCREENSHOT=docs/explore-screenshot.png`` the run view is also written there (the README's picture).
"""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

import pytest

import browser_support
import test_explore_api
from a11y_support import broken_shapes, low_contrast, sideways_scroll, small_targets
from browser_support import broken_images, screenshot, wait
from cnnlab.io import write_json, write_metrics_csv
from cnnlab.runs import read_metrics
from test_report import CHROMEDRIVER, CHROMIUM, needs_chromium

explore_root, server = test_explore_api.explore_root, test_explore_api.server  # shared fixtures
artifacts = browser_support.artifacts  # a shared fixture

pytestmark = [pytest.mark.slow, needs_chromium]


@pytest.fixture()
def driver(tmp_path, monkeypatch):
    assert CHROMIUM and CHROMEDRIVER, "CI=true but chromium/chromedriver are missing (see .ci/run)"
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    monkeypatch.setenv("SE_OFFLINE", "true")  # Selenium Manager must never download a browser or driver
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-quic",
                 "--hide-scrollbars", f"--user-data-dir={tmp_path / 'profile'}", "--window-size=1280,1000"):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    d = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    yield d
    d.quit()


def test_the_page_end_to_end(server, explore_root, driver, artifacts):
    live = Path(shutil.copytree(explore_root / "live", explore_root / "live-browser"))
    os.utime(live / "metrics.csv")  # copytree keeps the old mtime: a run unwritten for 10 minutes counts as stopped
    try:
        _drive(server, driver, artifacts, live)
    finally:
        shutil.rmtree(live)
    errors = [e for e in driver.get_log("browser") if e["level"] == "SEVERE"]
    assert errors == [], errors


def _drive(server, driver, artifacts: Path, live: Path) -> None:
    click = lambda css: driver.execute_script("document.querySelector(arguments[0]).click()", css)  # noqa: E731
    driver.get(server.url)
    wait(driver, "document.body.dataset.ready", what="the runs table")
    runs = driver.execute_script("return Array.from(document.querySelectorAll('#runs-table tbody tr'))"
                                 ".map(r => r.dataset.run)")
    assert {"lenet", "sweep/rgb", "live-browser", "corrupt-checkpoint"} <= set(runs)
    cards = driver.find_element("id", "runs-errors").text
    assert "broken-json" in cards and "expected JSON" in cards, "a corrupt run shows an error card"

    # Compare: overlay the curves of two runs.
    click("input.compare-box[data-run='lenet']")
    click("input.compare-box[data-run='live-browser']")
    overlay = "document.querySelectorAll('#compare-acc circle.point[data-series$=\"val acc\"]').length"
    wait(driver, f"{overlay} === 4", what="the two runs' validation curves overlaid")
    # the legend's samples are in their curves' colours (a stylesheet rule painted every entry grey)
    fills = "return Array.from(document.querySelectorAll(arguments[0])).map(e => getComputedStyle(e).fill)"
    assert set(driver.execute_script(fills, "#compare-acc text tspan")) == set(
        driver.execute_script(fills, "#compare-acc circle.point")) and len(set(driver.execute_script(
            fills, "#compare-acc circle.point"))) == 2
    screenshot(driver, artifacts / "explore-runs.png")

    # A corrupt checkpoint: an error card in the run view, the page goes on.
    click("a.run-link[data-run='corrupt-checkpoint']")
    wait(driver, "document.querySelector('#run-error .error-card')", what="the corrupt run's error card")
    assert "corrupt" in driver.find_element("id", "run-error").text

    # One run, one input: a test image of the class "sneaker", then its predictions, maps and Grad-CAM.
    click("a.run-link[data-run='lenet']")
    wait(driver, "document.querySelectorAll('#gallery img.thumb').length === 6", what="the gallery")
    wait(driver, "document.querySelectorAll('#mistakes img.thumb').length > 0", what="the mistakes")
    # the captions name the split the pictures are of (the gallery's "split": validation for a run without a test split)
    first = driver.find_element("css selector", "#gallery img.thumb").get_attribute("title")
    assert re.fullmatch(r"test #\d+: \S.*", first), first
    assert " test images (accuracy there " in driver.find_element("id", "mistakes-note").text
    driver.execute_script("const s = document.getElementById('class-select'); s.value = '7';"
                          "s.dispatchEvent(new Event('change'))")
    click("#gallery img.thumb")
    wait(driver, "document.getElementById('result-card').classList.contains('ready')", what="the analysis")
    assert len(driver.find_elements("css selector", "#top-table tr.top")) == 5
    assert len(driver.find_elements("css selector", "#maps img.map")) == 28  # 6 + 6 + 8 + 8 channels
    assert driver.find_element("id", "gradcam-row").text == "features.5"
    wait(driver, "Array.from(document.images).every(i => i.complete)", what="images to load")
    assert broken_images(driver) == []
    assert driver.execute_script("return document.getElementById('gradcam').naturalWidth") == 28
    assert len(driver.find_elements("css selector", "#kernels img")) == 6
    assert "61,706" in driver.find_element("id", "layers-table").text
    shot = artifacts / "explore-run.png"
    screenshot(driver, shot)
    if os.environ.get("CNNLAB_EXPLORE_SCREENSHOT"):
        driver.set_window_size(1280, 1000)
        driver.execute_script("document.getElementById('result-card').scrollIntoView()")
        driver.save_screenshot(os.environ["CNNLAB_EXPLORE_SCREENSHOT"])

    # A drawing on the canvas is classified too.
    driver.execute_script("""
        const c = document.getElementById('draw'), b = c.getBoundingClientRect();
        const ev = (type, x, y) => c.dispatchEvent(new PointerEvent(type, {clientX: b.left + x, clientY: b.top + y}));
        ev('pointerdown', 60, 40); ev('pointermove', 60, 190); ev('pointermove', 160, 190); ev('pointerup', 160, 190);
        document.getElementById('result-card').classList.remove('ready');
        document.getElementById('draw-go').click();""")
    wait(driver, "document.getElementById('result-card').classList.contains('ready')", what="the drawing's analysis")
    assert driver.find_element("id", "result-source").text == "your image"

    # The book's cross-correlation, step by step, to the book's result (d2l 7.2.1).
    click("nav a[data-tab='ops']")
    wait(driver, "document.querySelector('#ops-y-table')", what="the ops view")
    assert driver.find_element("id", "ops-result").text == ""
    for _ in range(4):
        click("#ops-step")
    assert driver.find_element("id", "ops-result").text == "[[19, 25], [37, 43]]"
    assert "step 4 of 4" in driver.find_element("id", "ops-progress").text
    # what a step computed is said (a live region), but not while playing: a sentence every 350 ms would pile up
    said = "return document.getElementById('ops-now').getAttribute('aria-live')"
    assert driver.execute_script(said) == "polite"
    click("#ops-play")
    assert driver.execute_script(said) == "off"
    wait(driver, "state.timer === null", what="the play's end")
    assert driver.execute_script(said) == "polite"
    click("#ops-reset")
    click("#ops-end")
    assert driver.find_element("id", "ops-result").text == "[[19, 25], [37, 43]]"
    click("#ops-y-table td[data-i='1'][data-j='0']")
    field = driver.execute_script("return Array.from(document.querySelectorAll('#ops-x-table td.field'))"
                                  ".map(c => [+c.dataset.i, +c.dataset.j])")
    assert sorted(field) == [[1, 0], [1, 1], [2, 0], [2, 1]], "Y[1, 0]'s receptive field is X[1:3, 0:2]"
    screenshot(driver, artifacts / "explore-ops.png")
    # A large output (the test image's 27 x 27) is one tab stop: the arrow keys move, Enter picks, focus follows.
    from selenium.webdriver.common.keys import Keys

    driver.execute_script("const s = document.getElementById('ops-input'); s.value = 'test';"
                          "s.dispatchEvent(new Event('change'))")
    wait(driver, "document.querySelectorAll('#ops-y-table tr').length === 27", what="the test image's ops")
    click("#ops-end")
    wait(driver, "document.getElementById('ops-result').dataset.complete === 'true'", what="every step")
    stops = "return Array.from(document.querySelectorAll('#ops-y-table td[tabindex=\"0\"]'))" \
            ".map(c => [+c.dataset.i, +c.dataset.j])"
    assert driver.execute_script(stops) == [[26, 26]]  # the newest cell, of 729
    focused = "return [+document.activeElement.dataset.i, +document.activeElement.dataset.j]"
    driver.find_element("css selector", "#ops-y-table td[tabindex='0']").send_keys(Keys.ARROW_LEFT)
    assert driver.execute_script(focused) == [26, 25]
    driver.switch_to.active_element.send_keys(Keys.ARROW_UP, Keys.ENTER)
    assert driver.execute_script(focused) == [25, 25] and driver.execute_script(stops) == [[25, 25]]
    # the focus shows apart from the pick's green outline, and the cell's name says its value as shown
    cell = driver.execute_script("const e = document.activeElement; return [getComputedStyle(e).outlineColor, "
                                 "e.getAttribute('aria-label'), e.textContent]")
    assert cell[0] == "rgb(29, 36, 51)" and cell[1] == f"Y[25, 25] = {cell[2]}: show its receptive field", cell
    assert driver.find_element("css selector", "#ops-y-table td.picked").get_attribute("data-i") == "25"
    assert "Y[25, 25] sees input rows 25…26" in driver.find_element("id", "ops-now").text

    # A run still training: its curves grow as metrics.csv does, and it turns finished with result.json.
    click("nav a[data-tab='runs']")
    click("a.run-link[data-run='live-browser']")
    val = "document.querySelectorAll('#run-acc circle.point[data-series=\"val acc\"]').length"
    wait(driver, f"{val} === 2", what="the live run's two epochs")
    rows = read_metrics(live)
    rows.append({**rows[-1], "epoch": 3.0, "val_acc": 0.9})
    write_metrics_csv(live / "metrics.csv", [{**r, "epoch": int(r["epoch"])} for r in rows])
    wait(driver, f"{val} === 3", timeout=30, what="the curve to grow")
    # the chart's text alternative follows it: a screen reader hears the curve's ends
    label = driver.execute_script("return document.getElementById('run-acc').getAttribute('aria-label')")
    assert label.startswith("accuracy per epoch: ") and "val acc from " in label and "to 0.9 at epoch 3" in label, label
    write_json(live / "result.json", {"model": "lenet-relu", "status": "finished", "test_acc": 0.9})
    wait(driver, "document.getElementById('run-stats').textContent.includes('finished')", timeout=30,
         what="the run to turn finished")
    assert "90.00%test accuracy" in driver.find_element("id", "run-stats").text.replace("\n", "")
    assert broken_images(driver) == []


def test_the_page_keeps_what_it_shows_straight(server, explore_root, driver, tmp_path):
    """Things the page once got wrong: a click right after typing a number acted on the old ops data; a ticked run
    deleted since the page loaded broke Compare with an uncaught error; a refused upload left the earlier answer
    on screen under the new heading."""
    click = lambda css: driver.execute_script("document.querySelector(arguments[0]).click()", css)  # noqa: E731
    gone = Path(shutil.copytree(explore_root / "lenet", explore_root / "gone-browser"))
    try:
        driver.get(server.url)
        wait(driver, "document.body.dataset.ready", what="the runs table")
        shutil.rmtree(gone)
        click("input.compare-box[data-run='gone-browser']")
        wait(driver, "document.querySelector('#compare-figures .error-card')", what="the deleted run's error")
        assert "no such run" in driver.find_element("id", "compare-figures").text
        click("input.compare-box[data-run='lenet']")
        points = "document.querySelectorAll('#compare-acc circle.point[data-series$=\"val acc\"]').length"
        wait(driver, f"{points} === 2", what="the remaining run's curve")
        errors = [e["message"] for e in driver.get_log("browser") if e["level"] == "SEVERE"]
        assert all("Failed to load resource" in m for m in errors), errors  # the 404 itself, nothing uncaught
    finally:
        shutil.rmtree(gone, ignore_errors=True)

    click("nav a[data-tab='ops']")
    wait(driver, "document.querySelector('#ops-y-table')", what="the ops view")
    padding = driver.find_element("id", "ops-padding")
    padding.clear()
    padding.send_keys("1")
    driver.find_element("id", "ops-end").click()  # a real click: the field's change fires first, as for a user
    wait(driver, "document.getElementById('ops-result').dataset.complete === 'true'", what="the output")
    assert driver.find_element("id", "ops-progress").text == "step 16 of 16"
    assert low_contrast(driver) == []  # the padding's zeros were grey on grey, 2.5:1

    click("a.run-link[data-run='lenet']")
    wait(driver, "document.querySelector('#gallery img')", what="the test images")
    click("#gallery img")
    wait(driver, "document.getElementById('result-card').classList.contains('ready')", what="the first answer")
    (tmp_path / "not-an-image.png").write_bytes(b"plain text, not a picture")
    driver.find_element("id", "upload").send_keys(str(tmp_path / "not-an-image.png"))
    wait(driver, "document.querySelector('#result-error .error-card')", what="the refusal")
    assert driver.find_element("css selector", "#result-error .error-card").get_attribute("role") == "alert"
    assert driver.execute_script("return document.getElementById('result-body').hidden")
    assert driver.find_element("id", "result-source").text == "this input"


def test_the_keyboard_reaches_the_pictures_and_the_table_follows_the_folder(server, explore_root, driver):
    """Test images are picked with Enter as with a click (they could not be reached with Tab); the runs table lists
    a run that appears after the page loaded and keeps the ticks (it never refreshed). A run opened with Enter left
    the focus nowhere (on the hidden link), a focused picture showed no ring, and the answer was not announced."""
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.keys import Keys

    click = lambda css: driver.execute_script("document.querySelector(arguments[0]).click()", css)  # noqa: E731
    driver.get(server.url)
    wait(driver, "document.body.dataset.ready", what="the runs table")
    click("input.compare-box[data-run='lenet']")
    late = Path(shutil.copytree(explore_root / "lenet", explore_root / "late-browser"))
    try:
        driver.execute_script("refreshRuns()")  # what the page does every RUNS_REFRESH_MS while the table is shown
        wait(driver, "document.querySelector(\"a.run-link[data-run='late-browser']\")", what="the new run's row")
        assert driver.execute_script("return document.querySelector(\"input.compare-box[data-run='lenet']\").checked")
    finally:
        shutil.rmtree(late)
    driver.set_window_size(375, 667)  # the rest on a phone, from the keyboard
    try:
        # Opened with Enter, the run takes the focus to its heading: the link that had it is hidden now
        driver.find_element("css selector", "a.run-link[data-run='lenet']").send_keys(Keys.ENTER)
        assert driver.execute_script("return [document.activeElement.id, document.activeElement.textContent]") == [
            "run-title", "lenet"]
        assert driver.execute_script("return document.querySelector('nav a[aria-current=page]').dataset.tab") == "run"
        wait(driver, "document.querySelector('#mistakes figure.mistake figcaption')", what="the mistakes' captions")
        # Tab alone reaches every control of the run view, in the page's order
        controls = driver.execute_script("return Array.from(document.querySelectorAll('#tab-run select, "
                                         "#tab-run input, #tab-run button, #tab-run [tabindex=\"0\"]'))"
                                         ".filter(e => e.offsetParent)")
        reached = []
        for _ in controls:  # pressed on the page, not sent to an element: a file input takes sent keys as a path
            ActionChains(driver).send_keys(Keys.TAB).perform()
            reached.append(driver.switch_to.active_element)
        assert reached == controls
        thumb = driver.find_element("css selector", "#gallery img.thumb")
        assert (thumb.get_attribute("tabindex"), thumb.get_attribute("role")) == ("0", "button")
        thumb.send_keys(Keys.ENTER)
        # its focus ring shows outside the picture (the browser's own was lost against the black image)
        ring = driver.execute_script("const s = getComputedStyle(document.activeElement); "
                                     "return [s.outlineStyle, s.outlineOffset]")
        assert ring[0] == "solid" and float(ring[1].removesuffix("px")) > 0, ring
        wait(driver, "document.getElementById('result-card').classList.contains('ready')", what="the answer to Enter")
        assert driver.find_element("id", "result-source").text.startswith("test image")
        # A screen reader hears the answer: the status region names the input and the top classes as the table shows
        said = driver.execute_script("return document.getElementById('result-status').textContent")
        top = driver.execute_script("return Array.from(document.querySelectorAll('#top-table tr.top'))"
                                    ".map(r => r.cells[0].textContent)")
        assert said.startswith("What the network makes of test image #") and len(top) == 5, said
        assert said.index(top[0]) < said.index(top[-1]) and said.count("%") == 5, said
        # an error shown again as it is (the runs table's refresh while the server is down) is not said again
        kept = driver.execute_script("const c = document.getElementById('runs-errors'); errorCard(c, 'down'); "
                                     "const first = c.firstChild; errorCard(c, 'down'); "
                                     "const kept = c.firstChild === first; errorCard(c, ''); return kept")
        assert kept
        # nothing scrolls the page sideways, and a chart is drawn at the width it is shown (520 units scaled to a
        # phone's 300 px made its text 6 px); a layer's shape reads on one line (the table scrolls in its box)
        assert sideways_scroll(driver) == 0 and broken_shapes(driver, "#layers-table td.num") == []
        chart = driver.execute_script("const s = document.getElementById('run-acc'); "
                                      "return [s.viewBox.baseVal.width, s.getBoundingClientRect().width]")
        assert chart[0] <= chart[1] + 1, chart
        # turned or resized, the chart is drawn again at its new width (it kept the phone's, scaled up)
        driver.set_window_size(1280, 1000)
        wait(driver, "document.getElementById('run-acc').viewBox.baseVal.width === 520", timeout=10,
             what="the chart drawn again at the wider window's width")
    finally:
        driver.set_window_size(1280, 1000)


@pytest.mark.parametrize("width", [1280, 375])
def test_every_control_and_link_is_large_enough_to_touch(server, explore_root, driver, width):
    # The tabs were 19 px tall, the runs' tick boxes 13 x 13, the menus and number fields 19-21 px: under WCAG
    # 2.2's 24 x 24 px (2.5.8), a thumb on a phone or a shaking hand hit the neighbour
    click = lambda css: driver.execute_script("document.querySelector(arguments[0]).click()", css)  # noqa: E731
    driver.set_window_size(width, 900)
    driver.get(server.url)
    wait(driver, "document.body.dataset.ready", what="the runs table")
    assert not (small := small_targets(driver)), small
    click("a.run-link[data-run='lenet']")
    wait(driver, "document.querySelectorAll('#gallery img.thumb').length === 6", what="the gallery")
    click("#gallery img.thumb")
    wait(driver, "document.getElementById('result-card').classList.contains('ready')", what="the analysis")
    assert not (small := small_targets(driver)), small
    click("nav a[data-tab='ops']")
    wait(driver, "document.querySelector('#ops-y-table')", what="the ops view")
    for choice in ("book", "test", "custom"):  # "custom" shows its own field
        driver.execute_script("const s = document.getElementById('ops-input'); s.value = arguments[0]; "
                              "s.dispatchEvent(new Event('change'))", choice)
        assert not (small := small_targets(driver)), (choice, small)
