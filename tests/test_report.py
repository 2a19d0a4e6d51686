"""cnnlab.report: receptive fields vs gradients, the figures, and report.html (rendered in headless Chromium)."""

from __future__ import annotations

import base64
import io
import itertools
import json
import os
import re
import shutil
import subprocess
import sys
import warnings
from html import unescape

import matplotlib
import pytest
import torch
from matplotlib import font_manager
from matplotlib.figure import Figure
from PIL import Image
from torch import nn

import report_fixtures
from a11y_support import (
    broken_shapes,
    low_contrast,
    page_parts,
    sideways_scroll,
    text_cut_by_its_box,
    unreachable_scrollers,
)
from cnnlab.cli import main
from cnnlab.data import CLASSES
from cnnlab.errors import CnnlabError
from cnnlab.models import create_model, list_models, model_info
from cnnlab.report import plots, write_report
from cnnlab.report.features import first_conv, receptive_fields, receptive_fields_of, run_rows

trained_run, run_copy = report_fixtures.trained_run, report_fixtures.run_copy  # shared fixtures

# ----------------------------------------------------------------------------------------- receptive fields


def _gradient_extent(model: nn.Module, x: torch.Tensor, row: int) -> int:
    """Side of the input region that the centre unit of ``row`` depends on, measured with autograd."""
    x = x.clone().requires_grad_(True)
    out = run_rows(model, x, grad=True)[row].output
    c = out.shape[-1] // 2
    out[0, :, c, c].sum().backward()
    cols = (x.grad[0].abs().sum(0) > 0).any(0).nonzero().flatten()
    return int(cols.max() - cols.min() + 1)


def test_receptive_fields_of_lenet_by_hand():
    fields = receptive_fields("lenet", 28)
    # conv 5x5 -> 5; avg-pool 2/2 -> 6, jump 2; conv 5x5 -> 6 + 4*2 = 14; pool -> 16, jump 4 (d2l 7.6).
    assert [(f.name, f.r, f.jump) for f in fields[:4]] == [
        ("features.0-1", 5, 1), ("features.2", 6, 2), ("features.3-4", 14, 2), ("features.5", 16, 4)]
    assert [f.kind for f in fields[:2]] == ["Conv2d+Sigmoid", "AvgPool2d"]
    assert fields[-1].r >= 28, "the dense head sees the whole image"


def test_receptive_fields_match_autograd_on_lenet():
    """With positive weights and sigmoid/average pooling nothing cancels, so the gradient support is the field."""
    torch.manual_seed(0)
    model = create_model("lenet").eval()
    with torch.no_grad():
        for p in model.parameters():
            p.uniform_(0.01, 0.1)
    x = torch.rand(1, 1, 64, 64)  # larger than 28 so no field is clipped by the border (features only)
    geometry = receptive_fields_of(model.features, (1, 1, 64, 64))
    for i, f in enumerate(geometry):
        assert _gradient_extent(model.features, x, i) == f.r, f.name


class _TwoBranch(nn.Module):
    """Inception-like: a 3x3 and a 1x1 -> 5x5 branch concatenated, then a residual block with a strided shortcut."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(1, 2, 3)
        self.a, self.b1, self.b2 = nn.Conv2d(2, 2, 3, padding=1), nn.Conv2d(2, 2, 1), nn.Conv2d(2, 2, 5, padding=2)
        self.c1, self.c2 = nn.Conv2d(4, 4, 3, stride=2, padding=1), nn.Conv2d(4, 4, 3, padding=2, dilation=2)
        self.short = nn.Conv2d(4, 4, 1, stride=2)

    def stages(self):
        return [self.stem, _Lambda(self._inception), _Lambda(self._residual)]

    def _inception(self, x):
        return torch.sigmoid(torch.cat([self.a(x), self.b2(self.b1(x))], 1))

    def _residual(self, x):
        return torch.sigmoid(self.c2(torch.sigmoid(self.c1(x))) + self.short(x))

    def forward(self, x):
        return self._residual(self._inception(self.stem(x)))


class _Lambda(nn.Module):
    def __init__(self, fn):
        super().__init__()
        self.fn = fn

    def forward(self, x):
        return self.fn(x)


def test_receptive_fields_take_the_largest_branch_and_match_autograd():
    torch.manual_seed(0)
    model = _TwoBranch().eval()
    with torch.no_grad():
        for p in model.parameters():
            p.uniform_(0.01, 0.1)
    fields = receptive_fields_of(model, (1, 1, 64, 64))
    # stem 3 -> 3; branches 3 and 1+5 -> 3 + 4 = 7; residual: 3x3/2 -> 9 (jump 2), dilated 3x3 -> 9 + 2*2*2 = 17.
    assert [(f.r, f.jump) for f in fields] == [(3, 1), (7, 1), (17, 2)]
    for i, f in enumerate(fields):
        assert _gradient_extent(model, torch.rand(1, 1, 64, 64), i) == f.r


class _Gate(nn.Module):
    """A squeeze-excitation gate (MobileNet-v3, EfficientNet): a map times a per-channel gate of the pooled map."""

    def __init__(self):
        super().__init__()
        self.squeeze = nn.Conv2d(2, 2, 1)

    def forward(self, x):
        return x * torch.sigmoid(self.squeeze(nn.functional.adaptive_avg_pool2d(x, 1)))


def _gated() -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(1, 2, 3), _Gate(), nn.Conv2d(2, 2, 3))


def _positive(model: nn.Module) -> nn.Module:
    with torch.no_grad():
        for p in model.parameters():
            p.uniform_(0.01, 0.1)
    return model.eval()


def test_a_gate_brings_the_whole_map_but_keeps_the_maps_jump():
    torch.manual_seed(0)
    model = _positive(_gated())
    fields = receptive_fields_of(model, (1, 1, 64, 64))
    # stem 3x3 -> 3; the gate pools the 62 x 62 map: 3 + 61 = 64, the whole input, at the map's jump of 1 (the
    # pooled cell's jump of 62 made every later layer's field explode: 10^20 px within EfficientNet's body); 3x3 -> 66
    assert [(f.r, f.jump) for f in fields] == [(3, 1), (64, 1), (66, 1)]
    for i, f in enumerate(fields):
        assert _gradient_extent(model, torch.rand(1, 1, 64, 64), i) == min(f.r, 64)


def test_channels_last_layers_keep_their_fields():
    # ConvNeXt's blocks permute to channels-last for the layer norm and run Linear layers on rows of positions: each
    # was read as a pooling over the whole map (the stem's 4 x 4 patch had a field of 21,504 px).
    torch.manual_seed(0)
    convnext = _positive(create_model("imagenet-convnext_tiny", num_classes=3, in_channels=1))
    stem_and_stage = nn.Sequential(convnext.features[0], convnext.features[1])
    fields = receptive_fields_of(stem_and_stage, (1, 1, 128, 128))
    assert [(f.r, f.jump) for f in fields] == [(4, 4), (76, 4)]  # 4x4/4; three 7x7 depthwise at jump 4: 4 + 3*6*4
    assert _gradient_extent(stem_and_stage, torch.rand(1, 1, 128, 128), 1) == 76
    fields = receptive_fields("imagenet-convnext_tiny", 224, 3)
    assert [f.r for f in fields] == sorted(f.r for f in fields) and fields[2].r == 80 and fields[2].jump == 8


def test_receptive_fields_of_book_models_by_hand():
    # GoogLeNet b1: 7x7/2 -> 7, jump 2; 3x3/2 max-pool -> 11, jump 4. b2: 1x1, 3x3 -> 19; pool -> 27 (d2l 8.4).
    assert [(f.r, f.jump) for f in receptive_fields("googlenet", 96)[:2]] == [(11, 4), (27, 8)]
    # ResNet-18 b2: four 3x3 convs at jump 4 add 32 to b1's 11 (d2l 8.6).
    assert [(f.r, f.jump) for f in receptive_fields("resnet18", 96)[:2]] == [(11, 4), (43, 4)]
    # VGG block 1: one 3x3 conv then 2x2/2 pooling; block 2 the same at jump 2 (d2l 8.2).
    assert [(f.r, f.jump) for f in receptive_fields("vgg11", 224)[:2]] == [(4, 2), (10, 4)]


@pytest.mark.parametrize("name", list_models())
def test_receptive_fields_grow_for_every_model(name):
    fields = receptive_fields(name, model_info(name).input_size)
    r = [f.r for f in fields]
    assert r == sorted(r) and r[0] >= 1
    assert r[-1] >= model_info(name).input_size, "the output unit of a classifier sees the whole input"


def test_run_rows_last_output_is_the_model_output():
    torch.manual_seed(0)
    model = create_model("lenet-bn").eval()
    x = torch.rand(3, 1, 28, 28)
    rows = run_rows(model, x)
    with torch.no_grad():
        torch.testing.assert_close(rows[-1].output, model(x))
    assert rows[0].name == "features.0-2" and rows[0].kind == "Conv2d+BatchNorm2d+Sigmoid"
    assert first_conv(model) is model.features[0]


# ------------------------------------------------------------------------------------------------- figures


def test_figures_are_plain_figures_and_never_touch_pyplot():
    import matplotlib.pyplot as plt

    before = plt.get_fignums()
    g = torch.Generator().manual_seed(0)
    cm = torch.randint(0, 50, (10, 10), generator=g)
    figs = [
        plots.confusion_figure(cm, CLASSES),
        plots.misclassified_figure(torch.randint(0, 256, (5, 28, 28), dtype=torch.uint8), [0] * 5, [1] * 5,
                                   [0.9, 0.99, 0.9999, 0.5, 0.7], CLASSES),
        plots.filters_figure(torch.randn(6, 1, 5, 5)),
        plots.feature_maps_figure(torch.rand(28, 28), [("a", torch.rand(6, 14, 14)), ("b", torch.rand(16, 5, 5))]),
    ]
    for fig in figs:
        assert isinstance(fig, Figure)
        png = plots.figure_png(fig)
        assert png[:8] == b"\x89PNG\r\n\x1a\n" and Image.open(io.BytesIO(png)).size[0] > 100
    assert plt.get_fignums() == before
    assert matplotlib.get_backend()  # importing cnnlab.report did not need or change a GUI backend
    with pytest.raises(CnnlabError, match="10 x 10"):
        plots.confusion_figure(torch.zeros(3, 3), CLASSES)
    with pytest.raises(CnnlabError, match="out x in x kh x kw"):
        plots.filters_figure(torch.zeros(6, 5, 5))


def _overlap(boxes) -> bool:
    return any(a.overlaps(b) for a, b in itertools.pairwise(boxes))


def _drawn(fig: Figure):
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    FigureCanvasAgg(fig).draw()  # lays the text out, as saving does
    return fig.canvas.get_renderer()


def test_a_confusion_matrix_of_many_classes_is_readable():
    # 100 and 150 classes drew every cell's number and every name in the 6.6 x 5.6 in of ten: a smear
    sizes = {}
    for k in (10, 25, 100, 150, 1000):
        names = [f"class_{i}" for i in range(k)] if k != 10 else CLASSES
        fig = plots.confusion_figure(torch.eye(k, dtype=torch.long) * 90 + 1, names)
        ax = fig.axes[0]
        renderer = _drawn(fig)
        sizes[k] = tuple(fig.get_size_inches())
        assert (len(ax.texts) == k * k) == (k <= 25)  # the cells' numbers while they fit, none beyond
        assert all(t.get_window_extent(renderer).width < 72 * fig.get_size_inches()[0] / k for t in ax.texts)
        for labels in (ax.get_xticklabels(), ax.get_yticklabels()):
            named = [t for t in labels if t.get_text()]
            assert len(named) == k if k <= 150 else 0 < len(named) < k / 2  # every name, or every n-th of 1000
            assert min(t.get_fontsize() for t in named) >= 5
        assert not _overlap([t.get_window_extent(renderer) for t in ax.get_yticklabels() if t.get_text()])
        assert not _overlap(sorted((t.get_window_extent(renderer) for t in ax.get_xticklabels() if t.get_text()),
                                   key=lambda box: box.x0)) or k <= 25  # slanted names lean over one another
    assert sizes[10] == (6.6, 5.6)  # ten classes as before
    assert sizes[10] < sizes[25] < sizes[100] < sizes[150] == sizes[1000]  # grows with the classes, to a cap


def test_long_class_names_beside_a_confusion_matrix_are_shortened_and_leave_the_grid_its_room():
    # a folder's class names of 180 characters were drawn whole: the grid took a third of the picture's width
    long = [f"c{i:04d} " + "a very long class name that goes on and on " * 4 + f"end {i}" for i in range(10)]
    pictures = {}
    for names in (CLASSES, long):
        fig = plots.confusion_figure(torch.eye(10, dtype=torch.long) * 9 + 1, names)
        for labels in (fig.axes[0].get_xticklabels(), fig.axes[0].get_yticklabels()):
            shown = [t.get_text() for t in labels]
            assert all(len(text) <= plots.CONFUSION_NAME_CHARS for text in shown) and len(set(shown)) == 10
        pictures[names is long] = Image.open(io.BytesIO(plots.figure_png(fig))).size
    assert [t.get_text() for t in fig.axes[0].get_yticklabels()][3] == "c0003 a ver…and on end 3"
    assert pictures[True][0] < 1.3 * pictures[False][0] and pictures[True][1] < 1.3 * pictures[False][1]


def test_misclassified_captions_of_long_class_names_do_not_run_into_each_other():
    names = ["aquarium_fish", "sweet_pepper", "a_class_name_from_a_folder_of_150_classes"]
    images = torch.zeros(8, 1, 8, 8, dtype=torch.uint8)
    fig = plots.misclassified_figure(images, [0, 1, 2, 0, 1, 2, 0, 1], [2, 2, 0, 1, 0, 1, 1, 2], [0.5] * 8, names,
                                     cols=4)
    renderer = _drawn(fig)
    for row in (fig.axes[:4], fig.axes[4:]):
        for text in ("title", "xaxis.label"):
            parts = [ax.title if text == "title" else ax.xaxis.label for ax in row]
            assert not _overlap([t.get_window_extent(renderer) for t in parts])
    assert fig.axes[2].title.get_text().startswith("aquarium_fish")
    assert "…" in fig.axes[0].title.get_text()  # the longest name shortened in the middle, its ends kept
    assert fig.axes[0].title.get_text().endswith("classes 50.0%")


# -------------------------------------------------------------------------------------------------- report


def _images(html: str) -> list[bytes]:
    srcs = re.findall(r'<img [^>]*src="([^"]*)"', html)
    assert all(s.startswith("data:image/png;base64,") for s in srcs), "every image must be embedded"
    return [base64.b64decode(s.split(",", 1)[1]) for s in srcs]


@pytest.mark.slow
def test_report_is_one_self_contained_file(run_copy):
    (run_copy / "report.html").write_text("an old report")  # derived file: regenerated, not refused
    out = write_report(run_copy, device="cpu")
    assert out == run_copy / "report.html"
    html = out.read_text(encoding="utf-8")
    assert html.startswith("<!DOCTYPE html>")
    assert not re.search(r'(src|href)="(?!data:)', html), "no external resources"
    assert "<script" not in html and "@import" not in html and "url(" not in html
    pngs = _images(html)
    assert len(pngs) >= 6  # curves, confusion, mistakes, filters, feature maps
    for png in pngs:
        Image.open(io.BytesIO(png)).verify()
    result = json.loads((run_copy / "result.json").read_text())
    assert f"{result['test_acc']:.2%}" in html
    for text in ("Training curves", "confusion matrix", "misclassified", "First-layer filters", "Feature maps",
                 "Receptive fields", "61,706", "MACs", *CLASSES):
        assert text in html, text
    assert sorted(p.name for p in run_copy.iterdir() if p.name.startswith(".")) == [], "temporary file left behind"
    # For a screen reader: the page's language, every table column named (the accuracy bars' had no header), and
    # each misclassified image's prediction and truth in the alt text (they were only drawn in the picture)
    parts = page_parts(html)
    assert parts.lang == "en" and parts.viewport and parts.nameless == []
    assert all(all(names) for names in parts.headers.values()), parts.headers
    count = int(re.search(r"The (\d+) most confidently misclassified", html).group(1))
    alt = unescape(re.search(r'<img alt="(misclassified[^"]*)"', html).group(1))
    said = re.findall(r"(?:: |; )([^;:]+?) (\d+\.\d)%, truly ([^;]+)", alt)
    assert len(said) == count and all(p in CLASSES and t in CLASSES and p != t for p, _, t in said), alt


@pytest.mark.parametrize("damage, match", [
    (lambda run: shutil.rmtree(run), "does not exist"),
    (lambda run: [p.unlink() for p in run.iterdir() if p.is_file()], "is not a run folder: it has none of "
     "config.json, metrics.csv, result.json or a checkpoint"),  # it advised training a run into the folder
    (lambda run: (run / "config.json").unlink(), r"incomplete: missing config.json \(expected config.json, which "
                                                 r"cnnlab train writes first, and metrics.csv beside the result.json"),
    # a finished run that lost its metrics is damaged, not unfinished (it was reported with no curves, unsaid)
    (lambda run: (run / "metrics.csv").unlink(), r"incomplete: missing metrics.csv \(expected config.json"),
    # a checkpoint alone: only config.json is what it lacks (it listed metrics.csv and result.json too)
    (lambda run: [(run / n).unlink() for n in ("config.json", "metrics.csv", "result.json")],
     r"incomplete: missing config.json \("),
    (lambda run: [(run / n).unlink() for n in ("last.pt", "best.pt")], "missing last.pt or best.pt"),
    (lambda run: (run / "config.json").write_text("{not json"), "config.json: expected JSON"),
    (lambda run: (run / "result.json").write_text("[1, 2]"), "expected a JSON object"),
    (lambda run: (run / "metrics.csv").write_text("epoch,val_acc\n1,abc\n"), "metrics.csv"),
    # a run whose loss blew up at its third step: no model (it was called "still in its first epoch")
    (lambda run: [(run / n).unlink() for n in ("last.pt", "best.pt", "metrics.csv")] and (run / "result.json")
     .write_text(json.dumps({"status": "failed", "error": "NonFiniteLoss: loss became non-finite at step 3"})),
     r"failed before its first checkpoint: NonFiniteLoss: loss became non-finite at step 3; there is no model to "
     r"report on"),
])
def test_report_of_a_broken_run_folder_is_one_line(run_copy, damage, match):
    damage(run_copy)
    with pytest.raises(CnnlabError, match=match) as e:
        write_report(run_copy, device="cpu")
    assert "\n" not in str(e.value)


@pytest.mark.parametrize("stopped", [True, False])
def test_a_run_that_has_not_finished_is_reported_from_its_last_checkpoint(run_copy, stopped, capsys):
    # It was refused ("incomplete: missing result.json"): a run stopped by hand, as users stop one that is good
    # enough, or a run still training, had no report until resumed to its end.
    record = json.loads((run_copy / "config.json").read_text())
    epochs = len((run_copy / "metrics.csv").read_text().splitlines()) - 1
    record["config"]["epochs"] = 10
    (run_copy / "config.json").write_text(json.dumps(record))
    (run_copy / "result.json").unlink()
    if stopped:  # what a SIGINT leaves; without it, files written a moment ago say the run is still training
        (run_copy / "interrupted.json").write_text(json.dumps({"epoch": epochs}))
    assert main(["report", str(run_copy)]) == 0
    state = "was stopped" if stopped else "is still training"
    said = (f"this run has not finished: it {state} after {epochs} epochs of 10, so what follows is its last "
            f"checkpoint, last.pt, and it has no final figures yet; `cnnlab train --resume {run_copy}` "
            + ("finishes it" if stopped else "continues it once stopped"))
    out, err = capsys.readouterr()
    assert err == f"cnnlab report: note: {said}\n" and out == f"{run_copy / 'report.html'}\n"
    html = (run_copy / "report.html").read_text(encoding="utf-8")
    assert f'<p class="notice">Note: {said}.</p>' in html.replace("&#39;", "'")
    assert "Training curves" in html and "confusion matrix" in html and "final test accuracy" in html
    assert "<dt>epochs</dt><dd>" + str(epochs) + "</dd>" in html


@pytest.mark.parametrize("planned, said", [(10, "before the first of its 10 epochs ended"),
                                           (1, "before its first epoch ended")])
def test_the_note_on_a_run_stopped_in_its_first_epoch(run_copy, planned, said):
    # It read "it was stopped before its first epoch ended of 2".
    from cnnlab.report import read_run

    record = json.loads((run_copy / "config.json").read_text())
    record["config"]["epochs"] = planned
    (run_copy / "config.json").write_text(json.dumps(record))
    for name in ("result.json", "metrics.csv"):
        (run_copy / name).unlink()
    (run_copy / "interrupted.json").write_text("{}")
    assert read_run(run_copy).unfinished().startswith(f"this run has not finished: it was stopped {said}, so ")


def test_a_hand_edited_run_is_reported_and_compared_not_an_internal_error(run_copy, tmp_path, capsys):
    # A metrics.csv with fewer columns (KeyError: 'val_loss') and a result.json with a figure as a string
    # (ValueError: Unknown format code '%') were internal errors, exit 1.
    from cnnlab.compare import compare

    (run_copy / "metrics.csv").write_text("epoch,train_loss\n1,2.3\n2,1.1\n")
    result = json.loads((run_copy / "result.json").read_text())
    (run_copy / "result.json").write_text(json.dumps({**result, "test_acc": "0.9"}))
    page = write_report(run_copy, device="cpu").read_text()
    assert "0.9" in page and "training curves" in page
    table = compare([str(run_copy)], plot=tmp_path / "compare.png")
    assert "| 0.9 |" in table and (tmp_path / "compare.png").is_file()


def test_a_checkpoint_given_for_the_run_folder_names_its_folder(tmp_path, capsys):
    run = tmp_path / "run"
    run.mkdir()
    (run / "best.pt").write_bytes(b"PK")
    assert main(["report", str(run / "best.pt")]) == 2  # no config.json: not a run folder, so none is suggested
    assert capsys.readouterr().err.strip() == (f"cnnlab report: error: run folder {run / 'best.pt'} is a file "
                                               "(expected a folder written by cnnlab train)")
    (run / "config.json").write_text("{}")  # the first file cnnlab train writes into a run folder
    assert main(["report", str(run / "best.pt")]) == 2
    assert capsys.readouterr().err.strip() == (f"cnnlab report: error: run folder {run / 'best.pt'} is a file; "
                                               f"pass its folder {run} (expected a folder written by cnnlab train)")


# ---------------------------------------------------------------------------------------- headless Chromium

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")
needs_chromium = pytest.mark.skipif(
    not (CHROMIUM and CHROMEDRIVER) and not IN_CI,
    reason="chromium and chromedriver are not installed (apt-get install chromium chromium-driver); under CI=true "
           "this test runs and fails instead")


@pytest.mark.slow
@needs_chromium
def test_report_renders_in_headless_chromium(run_copy, tmp_path, monkeypatch):
    assert CHROMIUM and CHROMEDRIVER, "CI=true but chromium/chromedriver are missing (see .ci/run)"
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    monkeypatch.setenv("SE_OFFLINE", "true")  # Selenium Manager must never download a browser or driver
    report = write_report(run_copy, device="cpu")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-quic",
                 "--hide-scrollbars", f"--user-data-dir={tmp_path / 'profile'}", "--window-size=1200,900"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    try:
        driver.get(report.as_uri())
        widths = driver.execute_script(
            "return Array.from(document.images).map(i => i.complete ? i.naturalWidth : 0)")
        assert len(widths) >= 6 and all(w > 0 for w in widths), widths
        text = driver.find_element("tag name", "body").text
        acc = json.loads((run_copy / "result.json").read_text())["test_acc"]
        assert f"{acc:.2%}" in text and "final test accuracy" in text
        assert low_contrast(driver) == []  # the title's "d2l 7.6" and the footer were too light to read (AA)
        # On a phone: nothing scrolls the page sideways, and the run's facts fit their card (four columns of them
        # overflowed it, the recipe's value cut off)
        driver.set_window_size(375, 667)
        assert sideways_scroll(driver) == 0
        facts = driver.execute_script("const s = document.querySelector('dl').closest('section'); "
                                      "return [s.scrollWidth, s.clientWidth]")
        assert facts[0] <= facts[1], facts
        assert unreachable_scrollers(driver) == []  # a wide table scrolls in a box that Tab reaches
        # the line above the classes' table (its macro-F1) was the table's caption, as wide as the table and cut off
        # at the edge of the box the table scrolls in: "macro-F1 0.0182 (the mean of the classes' F"
        assert text_cut_by_its_box(driver) == []
        assert broken_shapes(driver, "td.shape") == []  # "6 × 2" over "× 2" in the receptive fields
        driver.set_window_size(1200, 900)
        height = driver.execute_script("return document.documentElement.scrollHeight")
        driver.set_window_size(1200, height)
        shot = tmp_path / "report.png"
        assert driver.save_screenshot(str(shot))
    finally:
        driver.quit()
    assert Image.open(shot).size[0] >= 1000


# ------------------------------------------------------------------------------------------ CJK class names

# A font with Chinese glyphs on this machine (.ci/run installs fonts-wqy-microhei)
CJK_FILE = next((p for p in font_manager.findSystemFonts()
                 if any(k in p.lower() for k in ("wqy", "notosanscjk", "sourcehansans"))), None)


def test_a_resumed_run_keeps_no_report_of_the_run_as_it_was(tmp_path, data_dir, capsys):
    """`train --resume RUN --epochs 2 --no-report` left the first epoch's report.html beside a result.json of two:
    "epochs 1" and the old test accuracy, for good."""
    run = tmp_path / "run"
    tiny = ["--limit-train-batches", "2", "--limit-val-batches", "1", "--quiet"]
    assert main(["train", "lenet-relu", "--epochs", "1", "--out", str(run), *tiny]) == 0
    assert (run / "report.html").is_file()
    assert main(["train", "--resume", str(run), "--epochs", "2", "--no-report", "--quiet"]) == 0
    assert json.loads((run / "result.json").read_text())["epochs"] == 2 and not (run / "report.html").exists()
    assert main(["report", str(run)]) == 0 and "<dt>epochs</dt><dd>2</dd>" in (run / "report.html").read_text()


def test_a_dollar_in_a_class_or_run_name_is_drawn_as_written(tmp_path, monkeypatch):
    """matplotlib read a name between dollars as math: "cost $5 to $10" lost its dollars to italics, and "$\\x$ marks"
    failed the figure ("Unknown symbol"), so report.html was not written and `cnnlab compare --plot` was an internal
    error."""
    names = ["cost $5 to $10", r"$\x$ marks"]
    figure = plots.confusion_figure(torch.tensor([[3, 1], [0, 4]]), names)
    assert [t.get_text() for t in figure.axes[0].get_xticklabels()] == names
    assert all(not t.get_parse_math() for t in figure.axes[0].get_xticklabels())
    plots.figure_png(figure)  # drawn: no math parsed
    plots.figure_png(plots.misclassified_figure(torch.zeros(1, 1, 8, 8, dtype=torch.uint8), [0], [1], [0.9], names))


def test_a_class_name_that_is_not_utf8_is_drawn_and_the_report_written(tmp_path, monkeypatch):
    """A folder's class name that is not UTF-8 (Linux allows any bytes; Python holds it with a lone surrogate) failed
    every figure naming it (matplotlib's text refuses the surrogate), so a run on the folder ended without
    report.html ("report.html not written: set_text(): incompatible function arguments") and `cnnlab report` could
    not write one: the name is drawn with U+FFFD for the byte, as the page writes it."""
    monkeypatch.setenv("CNNLAB_CACHE", str(tmp_path / "cache"))
    odd = os.fsdecode(b"f\xf6x")
    figure = plots.confusion_figure(torch.tensor([[3, 1], [0, 4]]), ["cat", odd])
    assert [t.get_text() for t in figure.axes[0].get_xticklabels()] == ["cat", "f\ufffdx"]
    plots.figure_png(figure)
    plots.figure_png(plots.misclassified_figure(torch.zeros(1, 1, 8, 8, dtype=torch.uint8), [0], [1], [0.9],
                                                ["cat", odd]))
    folder = tmp_path / "pets"
    for k, name in enumerate((b"cat", b"f\xf6x")):
        for part in ("train", "test"):
            os.makedirs(os.fsencode(folder / part) + b"/" + name)
            for i in range(4):
                picture = Image.new("RGB", (16, 16), (200 * k, 40 * i, 90))
                picture.save(os.fsdecode(os.fsencode(folder / part) + b"/" + name + f"/{i}.png".encode()))
    out = tmp_path / "run"
    assert main(["train", "lenet-relu", "--dataset", f"folder:{folder}", "--image-size", "16", "--epochs", "1",
                 "--batch-size", "4", "--out", str(out), "--quiet"]) == 0
    assert (out / "report.html").is_file()
    (out / "report.html").unlink()
    assert main(["report", str(out), "--device", "cpu"]) == 0
    assert "f\ufffdx" in (out / "report.html").read_text(encoding="utf-8")


def test_an_emoji_class_name_is_drawn_without_a_warning_and_the_report_says_so_once(tmp_path, monkeypatch, capsys):
    """`cnnlab report` of a run with an emoji in a class name printed four raw matplotlib warnings ("Glyph 129412
    (\\N{UNICORN FACE}) missing from font(s) DejaVu Sans") and drew a box for it: no font on the machine has it. The
    figures draw U+FFFD for it, and one note says which names and why; the page's text keeps the names."""
    monkeypatch.setenv("CNNLAB_CACHE", str(tmp_path / "cache"))
    unicorn = "\N{UNICORN FACE} unicorn"
    assert plots.undrawable(unicorn) == "\N{UNICORN FACE}"  # the oracle: the fonts' own glyph tables
    folder = tmp_path / "pets"
    for k, name in enumerate((unicorn, "dog")):
        for part in ("train", "test"):
            (folder / part / name).mkdir(parents=True)
            for i in range(4):
                Image.new("RGB", (16, 16), (200 * k, 40 * i, 90)).save(folder / part / name / f"{i}.png")
    out = tmp_path / "run"
    assert main(["train", "lenet-relu", "--dataset", f"folder:{folder}", "--image-size", "16", "--epochs", "1",
                 "--batch-size", "4", "--out", str(out), "--quiet", "--no-report"]) == 0
    capsys.readouterr()
    with warnings.catch_warnings(record=True) as warned:
        warnings.simplefilter("always")
        assert main(["report", str(out), "--device", "cpu"]) == 0
    assert [str(w.message) for w in warned if "missing from font" in str(w.message)] == []
    notes = [line for line in capsys.readouterr().err.splitlines() if "note:" in line]
    assert notes == [f"cnnlab: note: the figures draw \N{UNICORN FACE} in the class names {unicorn} as \ufffd: no "
                     "font on this machine has them (the page's text shows every name as written)"]
    page = unescape((out / "report.html").read_text(encoding="utf-8"))
    assert unicorn in page and f"Note on the data: {notes[0].removeprefix('cnnlab: note: ')}." in page
    figure = plots.confusion_figure(torch.tensor([[3, 1], [0, 4]]), [unicorn, "dog"])
    assert [t.get_text() for t in figure.axes[0].get_xticklabels()] == ["\ufffd unicorn", "dog"]


@pytest.mark.skipif(CJK_FILE is None and not IN_CI,
                    reason="no CJK font installed (apt-get install fonts-wqy-microhei); under CI=true this test runs "
                           "and fails instead")
def test_chinese_class_names_are_drawn_with_a_cjk_font_not_as_boxes(monkeypatch):
    assert CJK_FILE, "CI=true but no CJK font is installed (see .ci/run)"
    font_manager.fontManager.addfont(CJK_FILE)  # matplotlib's font cache may be older than the font
    names = ["猫", "狗", "t-shirt"]
    confusion = torch.tensor([[5, 1, 0], [0, 6, 0], [2, 0, 4]])
    images = torch.zeros(2, 1, 8, 8, dtype=torch.uint8)

    def draw():
        plots.figure_png(plots.confusion_figure(confusion, names))
        plots.figure_png(plots.misclassified_figure(images, [0, 1], [1, 2], [0.9, 0.6], names))

    with warnings.catch_warnings():
        warnings.simplefilter("error")  # matplotlib's "Glyph 29483 ... missing from font(s) DejaVu Sans."
        draw()
    monkeypatch.setattr(plots, "CJK_FONTS", ())  # no CJK font: no box and no warning each, but U+FFFD, said once
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        draw()
    assert plots.drawn_name("猫") == "\ufffd" and "猫, 狗" in plots.names_drawn_otherwise(names)


@pytest.mark.skipif(CJK_FILE is None and not IN_CI,
                    reason="no CJK font installed (apt-get install fonts-wqy-microhei); under CI=true this test runs "
                           "and fails instead")
def test_a_confusion_matrix_drawn_beside_a_cjk_font_prints_no_font_warning():
    """The diagonal's numbers are bold; looked up in the CJK fallback too, a font without a bold face (WenQuanYi
    Micro Hei) made matplotlib log "findfont: Failed to find font weight bold" on stderr at every report and
    `make train`. In a fresh process: matplotlib logs each failed lookup once a process."""
    assert CJK_FILE, "CI=true but no CJK font is installed (see .ci/run)"
    code = ("import torch; from matplotlib import font_manager; from cnnlab.report import plots; "
            f"font_manager.fontManager.addfont({CJK_FILE!r}); "
            "plots.figure_png(plots.confusion_figure(torch.tensor([[5, 1], [0, 6]]), ['猫', 'dog']))")
    drawn = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert drawn.returncode == 0 and "findfont" not in drawn.stderr, drawn.stderr


@pytest.mark.parametrize("config, said", [
    ({"pretrained": True, "freeze_epochs": 1, "augment": "trivial", "balance": "loss", "optimizer": "adamw",
      "momentum": 0.0},
     {"weights": "ImageNet (torchvision's) with a new head; only the last layer for 1 epoch, then every layer",
      "augmentation": "trivial", "class balance": "loss", "optimizer": "adamw, lr 0.002"}),
    ({"init_from": "runs/a/best.pt", "freeze": True, "augment": "crop-flip", "mixup": 0.2, "balance": "none",
      "optimizer": "sgd", "momentum": 0.9},
     {"weights": "from runs/a/best.pt; only the last layer trained", "augmentation": "crop-flip, MixUp 0.2",
      "class balance": "none", "optimizer": "sgd, lr 0.002, momentum 0.9"}),
    ({"init": "xavier", "augment": None, "balance": None, "optimizer": "sgd", "momentum": 0.0},
     {"weights": "random (xavier init)", "augmentation": "none", "class balance": "none",
      "optimizer": "sgd, lr 0.002, momentum 0.0"}),
])
def test_the_report_says_how_the_run_began_and_what_it_was_fed(config, said):
    # A practitioner's fine-tune from ImageNet weights with trivial augmentation and a class-weighted loss was
    # reported as any run: the page said neither where its weights came from nor how its images were augmented or
    # its classes balanced, and gave AdamW a "momentum 0.0" it does not have
    from types import SimpleNamespace

    from cnnlab.report.html import _facts

    run = SimpleNamespace(result={}, metrics=[], config={"config": {"lr": 0.002, **config}})
    facts = dict(_facts(run, "imagenet-resnet18", 1000, None, 128))
    assert {k: facts[k] for k in said} == said


@pytest.mark.parametrize("flags, said", [({"freeze": True}, "only the head block ({}) trained"),
                                         ({"freeze_epochs": 1}, "only the head block ({}) for 1 epoch, then every "
                                                                "layer")])
def test_the_report_names_the_fresh_head_block_a_run_trained_as_its_head(flags, said):
    # a run from a VGG body saved without its classifier trains its whole fresh block as the head, which config.json
    # records (test_finetune_fresh_head.py); the page said "only the last layer"
    from types import SimpleNamespace

    from cnnlab.report.html import _facts

    head = ["classifier.0", "classifier.3", "classifier.6"]
    run = SimpleNamespace(result={}, metrics=[], config={"config": {"init_from": "body.pth", **flags}, "head": head})
    assert dict(_facts(run, "imagenet-vgg11", 1000, None, 224))["weights"] == \
        f"from body.pth; {said.format(', '.join(head))}"
