"""cnnlab's pages in WebKit, Safari's engine: whom a saved page is mailed to very often opens it on an iPhone or a
Mac. The flows are the Firefox tests' (:mod:`page_flows`): the saved explorer page from file://, the served explorer
of a runs folder and of one ONNX model, a run's report; and the saved page in a preview that runs no script, as
iOS Mail shows an attachment. WebKitGTK's MiniBrowser is driven by its WebDriver server (:mod:`webkit_support`); its
window is never narrower than its toolbar (447 px), the width the phone's checks take here.
Screenshots are kept in ``$CNNLAB_ARTIFACTS`` as the Chromium tests' are.
"""

from __future__ import annotations

import pytest

import page_flows
from browser_support import screenshot
from explore_support import grey_folder, lenet, one_thread, rgb_folder, saved_page  # noqa: F401  (fixtures)
from page_flows import artifacts, explore_root, run_copy, server, trained_run  # noqa: F401  (fixtures)
from webkit_support import WebKit, needs_webkit

pytestmark = [pytest.mark.slow, needs_webkit]


@pytest.fixture()
def webkit(tmp_path):
    browser = WebKit(tmp_path / "webkit")
    assert browser.narrowest < 600, f"MiniBrowser's window is {browser.narrowest} px at its narrowest: no phone layout"
    yield browser
    browser.quit()


def test_saved_page_from_file_url(saved_page, webkit, artifacts):  # noqa: F811
    page_flows.saved_page_from_file_url(webkit, saved_page, artifacts, "webkit", webkit.narrowest)


def test_saved_page_in_a_preview_that_runs_no_script_says_to_open_it_in_a_browser(
        saved_page, tmp_path, artifacts):  # noqa: F811
    """A saved page mailed to an iPhone opens in Mail's preview (Quick Look, as Files and a Mac's Finder do), which
    runs no script: the reader saw empty cards, "Input:" with nothing after it and a file chooser that cannot work
    there, and no word why."""
    browser = WebKit(tmp_path / "webkit", javascript=False)
    try:
        browser.get(saved_page.as_uri())
        seen = browser.execute_script("return document.body.innerText")
        assert "This page needs JavaScript" in seen and "Open the file in a web browser" in seen, seen
        assert browser.execute_script("return [document.getElementById('model-page').offsetParent, "
                                      "document.getElementById('upload').offsetParent]") == [None, None]
        screenshot(browser, artifacts / "webkit-static-page-no-script.png")
    finally:
        browser.quit()


def test_saved_page_of_a_segmentation_model(rgb_folder, tmp_path, webkit, artifacts):  # noqa: F811
    page_flows.saved_page_of_a_segmentation_model(webkit, rgb_folder, tmp_path, artifacts, "webkit", webkit.narrowest)


def test_saved_page_of_a_yolo_export(rgb_folder, tmp_path, webkit, artifacts):  # noqa: F811
    page_flows.saved_page_of_a_yolo_export(webkit, rgb_folder, tmp_path, artifacts, "webkit")


def test_served_model_page_answers_an_uploaded_file(lenet, grey_folder, tmp_path, webkit):  # noqa: F811
    page_flows.served_model_page_answers_an_uploaded_file(webkit, lenet, grey_folder, tmp_path)


def test_served_explorer_of_a_runs_folder(server, explore_root, webkit, artifacts, tmp_path):  # noqa: F811
    page_flows.served_explorer_of_a_runs_folder(webkit, server, explore_root, artifacts, tmp_path, "webkit",
                                                webkit.narrowest)


def test_report(run_copy, webkit, artifacts):  # noqa: F811
    page_flows.report_reads_well(webkit, run_copy, artifacts, "webkit", webkit.narrowest)
