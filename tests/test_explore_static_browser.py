"""The one-model page in headless Chromium: an ONNX mobilenet served, and a saved page opened from file://.

With ``CNNLAB_EXPLORE_ONNX_SCREENSHOT=docs/explore-onnx-screenshot.png`` the served ONNX page is also written
there (the docs' picture).
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

import explore_support
from a11y_support import (
    sideways_scroll,
)
from browser_support import (  # noqa: F401
    artifacts,
    broken_images,
    saved_page_reads_well,
    screenshot,
    segmentation_page_reads_well,
    wait,
    yolo_page_reads_well,
)
from cnnlab.inference import load_trained
from cnnlab.models.summary import layer_summary
from explore_support import CLASSES, _torchvision, grey_folder, lenet, one_thread, rgb_folder  # noqa: F401
from test_explore_boxes import saved_yolo_page, turned_head
from test_explore_browser import driver  # noqa: F401  (a fixture)
from test_explore_networks import importable, saved_page_of, saved_segmentation_page  # noqa: F401  (a fixture)
from test_report import needs_chromium

saved_page = explore_support.saved_page  # a fixture, shared with test_pages_firefox.py

pytestmark = [pytest.mark.slow, needs_chromium]


def _errors(browser) -> list[str]:
    return [e["message"] for e in browser.get_log("browser") if e["level"] == "SEVERE"]


def test_saved_page_from_file_url(saved_page, lenet, driver, artifacts):  # noqa: F811
    driver.get(saved_page.as_uri())
    wait(driver, "document.body.dataset.ready === '1'", what="the saved page to render")
    rows = driver.execute_script("return document.querySelectorAll('#maps .maprow').length")
    assert rows == 6  # LeNet's conv, sigmoid and pool, twice
    assert driver.execute_script("return document.querySelectorAll('#layers-table tbody tr').length") > 4
    # each layer's MACs for one image, and their sum in the model's line: the LeNet's own, as layer_summary counts
    macs = driver.execute_script("return Array.from(document.querySelectorAll('#layers-table tbody tr'))"
                                 ".map(r => +r.cells[4].textContent.replaceAll(',', ''))")
    trained = load_trained(lenet["run"]).model
    assert sum(macs) == sum(r.macs for r in layer_summary(trained, (1, 1, 28, 28))) > 0
    assert driver.find_element("id", "model-kind").text.endswith(f", {sum(macs):,} MACs per image")
    assert driver.find_element("id", "upload-box").is_displayed() is False  # no server to classify a new file
    # Another input from the saved ones, then: every picture decoded, nothing requested from anywhere.
    driver.execute_script("document.querySelectorAll('#images img')[1].click()")
    wait(driver, "document.getElementById('result-source').textContent.includes('/1.png')", what="input 2")
    saved_page_reads_well(driver)
    assert _errors(driver) == []
    screenshot(driver, artifacts / "explore-static-page.png")


def test_served_onnx_model_page(tmp_path, rgb_folder, driver, artifacts):  # noqa: F811
    from cnnlab.explore import BackgroundServer, create_model_app
    from cnnlab.explore.sources import open_with_images

    _torchvision("mobilenet_v3_small", 64, tmp_path)
    model, images = open_with_images(tmp_path / "mobilenet_v3_small.onnx", rgb_folder)
    with BackgroundServer(app=create_model_app(model, images)) as server:
        driver.get(server.url)
        wait(driver, "document.body.dataset.ready === '1'", what="the model page to render")
        assert "ONNX" in driver.find_element("id", "model-kind").text
        assert "layout from the graph" in driver.find_element("id", "model-input").text
        rows = driver.execute_script("return document.querySelectorAll('#maps .maprow').length")
        assert rows > 15  # every stage of mobilenet_v3_small with a spatial map
        assert driver.find_element("id", "attr-a-caption").text.startswith("occlusion")
        # the pictures' text alternatives name the attribution shown (both read "attribution")
        assert [driver.find_element("id", f"attr-{x}").get_attribute("alt") for x in "ab"] == [
            "occlusion overlay", "probability change per patch"]
        assert broken_images(driver) == [] and _errors(driver) == []
        screenshot(driver, artifacts / "explore-onnx-page.png")
        target = os.environ.get("CNNLAB_EXPLORE_ONNX_SCREENSHOT")
        if target:
            screenshot(driver, Path(target))


def test_served_page_names_its_model_and_keeps_long_class_names_inside(lenet, grey_folder, driver):  # noqa: F811
    """The served one-model page was titled "cnnlab explore: a model" where the saved page names the model; and a
    class name of 300 characters without a space widened the page to about 2,300 px, the probabilities off screen."""
    from cnnlab.explore import BackgroundServer, create_model_app
    from cnnlab.explore.model import Options
    from cnnlab.explore.sources import open_with_images

    names = tuple(f"{name}{'x' * 300}" for name in CLASSES)
    model, images = open_with_images(lenet["onnx"], grey_folder, Options(classes=names))
    driver.set_window_size(1280, 1000)
    with BackgroundServer(app=create_model_app(model, images)) as server:
        driver.get(server.url)
        wait(driver, "document.body.dataset.ready === '1'", what="the model page to render")
        assert driver.title == "cnnlab explore: lenet.onnx"
        width = driver.execute_script("return document.documentElement.clientWidth")
        assert driver.execute_script("return document.documentElement.scrollWidth") <= width
        shown = driver.execute_script("return Array.from(document.querySelectorAll('#top-table td.num'))"
                                      ".map(td => [td.getBoundingClientRect().right, td.textContent])")
        assert len(shown) == min(5, len(CLASSES)), shown
        assert all(right <= width and text.endswith("%") for right, text in shown), shown
        assert _errors(driver) == []


def test_a_long_layer_name_without_spaces_wraps_on_a_phone(tmp_path, grey_folder, driver):  # noqa: F811
    """torch's legacy exporter names a node by its module path ("/features/features.4/block/block.0/block.0.2/
    HardSigmoid"): above a stage's maps on a phone that one word ran past the screen, 59 px of sideways scroll for a
    quantized mobilenet_v3_small."""
    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    from cnnlab.explore import BackgroundServer, create_model_app
    from cnnlab.explore.sources import open_with_images

    rng = np.random.default_rng(0)
    weights = [numpy_helper.from_array(rng.standard_normal(shape).astype(np.float32), name)
               for name, shape in (("w", (4, 1, 3, 3)), ("fc", (len(CLASSES), 4)))]
    long = "/features/features.4/block/block.0/block.0.2/HardSigmoid_" + "x" * 20
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"], name=f"{long}/Conv"),
             helper.make_node("Relu", ["c"], ["r"], name=f"{long}/Relu"),
             helper.make_node("GlobalAveragePool", ["r"], ["g"]), helper.make_node("Flatten", ["g"], ["f"]),
             helper.make_node("Gemm", ["f", "fc"], ["y"], transB=1)]
    graph = helper.make_graph(nodes, "long", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 1, 28, 28])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", len(CLASSES)])], weights)
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]), str(tmp_path / "long.onnx"))
    model, images = open_with_images(tmp_path / "long.onnx", grey_folder)
    driver.set_window_size(375, 667)
    try:
        with BackgroundServer(app=create_model_app(model, images)) as server:
            driver.get(server.url)
            wait(driver, "document.body.dataset.ready === '1'", what="the model page to render")
            wait(driver, "innerWidth === 375", what="the phone's width")
            assert long in driver.find_element("id", "maps").text
            assert sideways_scroll(driver) == 0
    finally:
        driver.set_window_size(1280, 1000)


def test_a_saved_page_of_a_segmentation_model_shows_what_it_returns(tmp_path, rgb_folder, driver):  # noqa: F811
    """A network that is no classifier was refused; its saved page shows its layers, maps and what it returns (the
    outputs' table and the channel of largest score at each pixel), with no top classes, readable on a phone."""
    driver.set_window_size(1280, 1000)
    driver.get(saved_segmentation_page(rgb_folder, tmp_path).as_uri())
    wait(driver, "document.body.dataset.ready === '1'", what="the saved page to render")
    segmentation_page_reads_well(driver)
    assert _errors(driver) == []


def test_a_saved_page_of_a_yolo_export_draws_its_boxes_and_says_how_they_were_kept(tmp_path, rgb_folder,  # noqa: F811
                                                                                    driver):  # noqa: F811
    """An Ultralytics detector's ONNX export showed its raw head as a row of figures: its saved page draws the boxes
    kept as Ultralytics' predict keeps them, says so under the picture, and names them by the export's metadata."""
    driver.get(saved_yolo_page(rgb_folder, tmp_path).as_uri())
    wait(driver, "document.body.dataset.ready === '1'", what="the saved page to render")
    yolo_page_reads_well(driver)
    assert _errors(driver) == []


def test_a_saved_page_of_an_obb_export_says_its_boxes_are_turned(tmp_path, rgb_folder, driver):  # noqa: F811
    """An OBB export's boxes are drawn turned, by their corners: the caption under the picture says so, and how they
    were kept (by their probabilistic IoU)."""
    driver.get(saved_yolo_page(rgb_folder, tmp_path, turned_head(), "obb").as_uri())
    wait(driver, "document.body.dataset.ready === '1'", what="the saved page to render")
    caption = driver.execute_script("return document.querySelector('#segments figcaption').textContent")
    assert caption.startswith("output0: the 3 highest-scoring of its 3 turned boxes (confidence above 0.25 and a "
                              "probabilistic IoU below 0.7 with every better turned box of its class"), caption
    assert _errors(driver) == []


def test_a_class_per_pixel_is_described_as_such_to_a_screen_reader(tmp_path, rgb_folder, importable, driver):  # noqa: F811
    """The picture of a map of class numbers (a segmentation model ending in its own ArgMax) was described to a screen
    reader as "its largest channel at each pixel", of a map that has no channels: it says the class at each pixel, as
    a map of scores' picture does."""
    from cnnlab.explore.model import Options

    options = Options(input_size=16, classes=("dark", "red"))
    driver.get(saved_page_of(f"{importable}:labels_per_pixel", rgb_folder, tmp_path, options).as_uri())
    wait(driver, "document.body.dataset.ready === '1'", what="the saved page to render")
    alts = driver.execute_script("return Array.from(document.querySelectorAll('#segments img'), i => i.alt)")
    assert alts == ["output['labels']: its class at each pixel", "output['broken']: its class at each pixel"], alts
    assert _errors(driver) == []


def test_an_output_of_one_number_is_written_alike_in_the_table_and_the_status(  # noqa: F811
        tmp_path, rgb_folder, importable, driver):  # noqa: F811
    """A network returning one number (a mean) had it written "scalar" in the table of what it returns and "one
    number" in the status line a screen reader hears: one helper writes an output's shape for both."""
    from cnnlab.explore.model import Options

    driver.get(saved_page_of(f"{importable}:mean", rgb_folder, tmp_path, Options(input_size=16)).as_uri())
    wait(driver, "document.body.dataset.ready === '1'", what="the saved page to render")
    shapes = driver.execute_script("return Array.from(document.querySelectorAll('#outputs-table tbody tr'), "
                                   "r => r.cells[1].textContent)")
    said = driver.execute_script("return document.getElementById('result-status').textContent")
    assert shapes == ["one number"] and said.endswith(": output, one number"), (shapes, said)
    assert _errors(driver) == []


def test_a_detectors_boxes_are_said_as_their_legend_shows_them(tmp_path, rgb_folder, importable, driver):  # noqa: F811
    """The status line a screen reader hears said a detector's box scores as percentages ("dog 58.3%"), where the
    legend beside its boxes shows the scores as they are ("dog 0.58"): a detector's score is no share of anything."""
    from cnnlab.explore.model import Options

    options = Options(input_size=16, classes=("background", "cat", "dog"))
    driver.get(saved_page_of(f"{importable}:box_detector", rgb_folder, tmp_path, options).as_uri())
    wait(driver, "document.body.dataset.ready === '1'", what="the saved page to render")
    legend = driver.execute_script("return Array.from(document.querySelectorAll('#segments .legend li'), "
                                   "li => li.textContent)")
    said = driver.execute_script("return document.getElementById('result-status').textContent")
    assert len(legend) == 2 and all(re.fullmatch(r"(dog|background) \d\.\d\d", text) for text in legend), legend
    assert f"output[0]['boxes'], 2 x 4 ({', '.join(legend)})" in said, said
    assert _errors(driver) == []
