"""cnnlab's pages in headless Firefox, the second engine a reader may open them in: the saved explorer page from
file:// (a course page, a mailed file), the served explorer of a runs folder and of one ONNX model, a run's report.

The Chromium tests check these pages in depth; these check, in Gecko, what a reader sees and does there: the answers,
maps and charts, a picture picked with the keyboard, a file uploaded and a drawing classified, a phone's width, no
request from the saved page (its Content-Security-Policy holds), no error. The flows are :mod:`page_flows`', which the
WebKit tests share; Firefox is driven over Marionette (:mod:`firefox_support`); screenshots are kept in
``$CNNLAB_ARTIFACTS`` as the Chromium tests' are.
"""

from __future__ import annotations

import pytest

import page_flows
from explore_support import grey_folder, lenet, one_thread, rgb_folder, saved_page  # noqa: F401  (fixtures)
from firefox_support import FIREFOX, Firefox, needs_firefox
from page_flows import artifacts, explore_root, run_copy, server, trained_run  # noqa: F401  (fixtures)

pytestmark = [pytest.mark.slow, needs_firefox]


@pytest.fixture()
def firefox(tmp_path):
    assert FIREFOX, "CI=true but firefox is missing (see .ci/run)"
    browser = Firefox(tmp_path)
    yield browser
    browser.quit()


def test_saved_page_from_file_url(saved_page, firefox, artifacts):  # noqa: F811
    page_flows.saved_page_from_file_url(firefox, saved_page, artifacts, "firefox")


def test_saved_page_of_a_segmentation_model(rgb_folder, tmp_path, firefox, artifacts):  # noqa: F811
    page_flows.saved_page_of_a_segmentation_model(firefox, rgb_folder, tmp_path, artifacts, "firefox")


def test_saved_page_of_a_yolo_export(rgb_folder, tmp_path, firefox, artifacts):  # noqa: F811
    page_flows.saved_page_of_a_yolo_export(firefox, rgb_folder, tmp_path, artifacts, "firefox")


def test_served_model_page_answers_an_uploaded_file(lenet, grey_folder, tmp_path, firefox):  # noqa: F811
    """The one-model page's upload handed no renderer to the result card: "render is not a function", and the
    picture chosen before stayed on screen under "What the network makes of your image" (ticking "invert" too)."""
    page_flows.served_model_page_answers_an_uploaded_file(firefox, lenet, grey_folder, tmp_path)


def test_served_explorer_of_a_runs_folder(server, explore_root, firefox, artifacts, tmp_path):  # noqa: F811
    page_flows.served_explorer_of_a_runs_folder(firefox, server, explore_root, artifacts, tmp_path, "firefox")


def test_report(run_copy, firefox, artifacts):  # noqa: F811
    page_flows.report_reads_well(firefox, run_copy, artifacts, "firefox")
