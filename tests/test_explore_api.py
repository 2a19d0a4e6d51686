"""cnnlab explore's server over real HTTP on a free loopback port: runs, inputs, ops, bad input and load.

The run folders are made here in seconds: a Fashion-MNIST LeNet trained for a few dozen steps (so predictions and
mistakes mean something), a random RGB model of another dataset with five named classes (so nothing may assume
1 x 28 x 28 or ten classes), a run still training, and broken ones. The browser test imports these fixtures.
"""

from __future__ import annotations

import base64
import http.client
import io
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

import data_support
from a11y_support import contrast, page_parts
from cli_support import run_with_output
from cnnlab.data import CLASSES
from cnnlab.errors import CnnlabError
from cnnlab.explore.imagefolder import ImageSet
from cnnlab.explore.images import MAX_UPLOAD_BYTES, MAX_UPLOAD_PIXELS
from cnnlab.explore.launch import bind
from cnnlab.io import write_json, write_metrics_csv
from cnnlab.models import create_model
from cnnlab.models.init import init_cnn
from cnnlab.runs.checkpoint import save_checkpoint
from data_support import write_classes

home = data_support.home  # a fixture: every cache under tmp_path, no $CNNLAB_DATA
TINY = ["--epochs", "1", "--batch-size", "8", "--limit-train-batches", "2", "--no-report", "--quiet"]

RGB_CLASSES = ("cat", "dog", "ship", "frog", "tree")


def make_run(folder: Path, *, model: str, classes, channels: int, size: int, dataset: str, train=None, test=None,
             epochs: int = 2, steps: int = 0, finished: bool = True) -> Path:
    """Write a run folder as `cnnlab train` leaves it; ``train``/``test`` are (uint8 images, labels) or None."""
    torch.manual_seed(0)
    net = create_model(model, num_classes=len(classes), in_channels=channels)
    net.apply(init_cnn)
    opt = torch.optim.SGD(net.parameters(), lr=0.05, momentum=0.9)  # 0.1 leaves half the channels dead
    g = torch.Generator().manual_seed(0)
    history = []
    for epoch in range(1, epochs + 1):
        start = time.perf_counter()
        for _ in range(steps):
            idx = torch.randint(0, len(train[1]), (128,), generator=g)
            loss = F.cross_entropy(net(train[0][idx].float() / 255), train[1][idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
        with torch.no_grad():
            logits = net.eval()(test[0].float() / 255)
            net.train()
        seconds = time.perf_counter() - start
        history.append({"epoch": epoch, "train_loss": float("nan") if not steps else loss.item(),
                        "train_acc": float("nan"), "val_loss": F.cross_entropy(logits, test[1]).item(),
                        "val_acc": (logits.argmax(1) == test[1]).float().mean().item(), "lr": 0.05,
                        "seconds": seconds, "images_per_s": steps * 128 / max(seconds, 1e-9)})
    net.eval()
    folder.mkdir(parents=True)
    config = {"model": model, "recipe": "book", "epochs": epochs, "dataset": dataset, "tta": False, "seed": 0}
    data = {"name": dataset, "classes": list(classes), "channels": channels, "image_size": size, "mean": None,
            "std": None, "flip": True}
    save_checkpoint({"model_name": model, "num_classes": len(classes), "in_channels": channels, "input_size": size,
                     "normalize": None, "ops": "torch", "config": config, "dataset": data, "model": net.state_dict(),
                     "epoch": epochs, "step": epochs * steps, "history": history,
                     "best_val_acc": max(r["val_acc"] for r in history)}, folder / "last.pt")
    params = sum(p.numel() for p in net.parameters())
    write_json(folder / "config.json", {"config": config, "input_size": size, "params": params,
                                               "world_size": 1, "dataset": data,
                                               "environment": {"date": "2026-12-01T10:00:00"}})
    write_metrics_csv(folder / "metrics.csv", history)
    if finished:
        write_json(folder / "result.json", {
            "model": model, "recipe": "book", "epochs": epochs, "test_acc": history[-1]["val_acc"],
            "best_val_acc": max(r["val_acc"] for r in history), "images_per_s": 1234.0, "wall_s": 1.0,
            "world_size": 1, "device": "cpu", "params": params, "input_size": size, "seed": 0, "dataset": dataset,
            "status": "finished"})
    return folder


@pytest.fixture(scope="session")
def explore_root(tmp_path_factory, data_dir) -> Path:
    """A runs folder: lenet (trained), sweep/rgb (3 x 32 x 32, five classes), live (still training), broken ones."""
    from cnnlab.data import load_fashion_mnist

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        root = tmp_path_factory.mktemp("explore") / "runs"
        fm = load_fashion_mnist()
        fashion = dict(model="lenet-relu", classes=CLASSES, channels=1, size=28, dataset="fashion-mnist",
                       train=(fm.train_images.unsqueeze(1), fm.train_labels),
                       test=(fm.test_images[:500].unsqueeze(1), fm.test_labels[:500]))
        make_run(root / "lenet", steps=40, **fashion)
        g = torch.Generator().manual_seed(1)
        rgb = (torch.randint(0, 256, (40, 3, 32, 32), dtype=torch.uint8, generator=g),
               torch.randint(0, 5, (40,), generator=g))
        make_run(root / "sweep" / "rgb", model="lenet-relu", classes=RGB_CLASSES, channels=3, size=32,
                 dataset="cifar-like-not-on-this-machine", test=rgb)
        live = make_run(root / "live", finished=False, epochs=2, steps=0, **fashion)
        with open(live / "metrics.csv", "a") as f:
            f.write("3,0.5,")  # a row still being written: no newline yet
        (root / "broken-json").mkdir()
        (root / "broken-json" / "config.json").write_text("{not json")
        corrupt = Path(shutil.copytree(root / "lenet", root / "corrupt-checkpoint"))
        (corrupt / "last.pt").write_bytes(b"PK\x03\x04 this is not a checkpoint")
        outside = tmp_path_factory.mktemp("outside")
        shutil.copytree(root / "lenet", outside / "secret-run")
        (root / "escape").symlink_to(outside / "secret-run", target_is_directory=True)
        (root / "lenet" / "leak.json").symlink_to(outside / "secret-run" / "config.json")
    finally:
        torch.set_num_threads(threads)
    return root


@pytest.fixture(scope="session")
def server(explore_root):
    from cnnlab.explore import BackgroundServer

    with BackgroundServer(explore_root) as s:
        yield s


def request(server, method: str, target: str, body: bytes | None = None, headers=None, timeout: float = 60):
    """(status, parsed JSON or bytes) of a raw request: the target is sent exactly as given, never normalised."""
    host, port = server.url.split("//")[1].strip("/").split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=timeout)
    try:
        conn.putrequest(method, target, skip_accept_encoding=True)
        for k, v in (headers or {}).items():
            conn.putheader(k, v)
        if body is not None and "Content-Length" not in (headers or {}) and "Transfer-Encoding" not in (headers or {}):
            conn.putheader("Content-Length", str(len(body)))
        conn.endheaders()
        if body is not None:
            conn.send(body)
        response = conn.getresponse()
        data = response.read()
        kind = response.getheader("content-type", "")
        return response.status, json.loads(data) if "json" in kind and method != "HEAD" else data
    finally:
        conn.close()


def png_bytes(image: Image.Image) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return buf.getvalue()


# ---------------------------------------------------------------------------------------------------- runs


def test_runs_table_lists_every_run_with_status_and_errors(server):
    status, body = request(server, "GET", "/api/runs")
    assert status == 200
    rows = {r["run"]: r for r in body["runs"]}
    assert set(rows) == {"lenet", "sweep/rgb", "live", "broken-json", "corrupt-checkpoint"}, "symlink escape listed"
    assert rows["lenet"]["status"] == "finished" and rows["lenet"]["model"] == "lenet-relu"
    assert rows["lenet"]["test_acc"] > 0.3 and rows["lenet"]["dataset"] == "fashion-mnist"
    assert rows["live"]["status"] == "training" and rows["live"]["epochs"] == 2, "the half-written row is left out"
    assert "config.json: expected JSON" in rows["broken-json"]["error"]
    assert rows["sweep/rgb"]["dataset"] == "cifar-like-not-on-this-machine"


def test_a_folder_the_page_cannot_open_does_not_take_the_table_down(server, explore_root):
    """A name with a backslash, or a config.json linked from another run: listed by the walk, refused by
    resolve_run; the table leaves them out and lists the rest (it answered 404 "no such run" for the whole table)."""
    odd = [explore_root / "back\\slash", explore_root / "linked-config"]
    try:
        for folder in odd:
            folder.mkdir()
        (odd[0] / "config.json").write_bytes((explore_root / "lenet" / "config.json").read_bytes())
        (odd[1] / "config.json").symlink_to(explore_root / "lenet" / "config.json")
        status, body = request(server, "GET", "/api/runs")
        assert status == 200
        names = {r["run"] for r in body["runs"]}
        assert "lenet" in names and not names & {"back\\slash", "linked-config"}
    finally:
        for folder in odd:
            shutil.rmtree(folder)


def test_a_folder_named_in_another_encoding_is_listed_with_a_replacement_character(server, explore_root):
    """A run folder whose name is not UTF-8 (Latin-1 from an old archive): encoding the JSON failed, and the whole
    runs table answered 500. The name is listed with U+FFFD where its byte was, and opens by that name."""
    latin = explore_root / os.fsdecode(b"caf\xe9-run")
    shutil.copytree(explore_root / "lenet", latin)
    try:
        status, body = request(server, "GET", "/api/runs")
        assert status == 200 and "caf\ufffd-run" in {r["run"] for r in body["runs"]}
        status, body = request(server, "GET", "/api/run?run=caf%EF%BF%BD-run")  # the name as listed opens it
        assert status == 200 and body["run"] == "caf\ufffd-run", body
    finally:
        shutil.rmtree(latin)


def test_a_time_budgeted_run_in_training_shows_no_planned_epochs(explore_root, tmp_path):
    """A budget plans its steps by the clock: "epoch 5/10" from its config's epochs was wrong (it ended at 7)."""
    from cnnlab.explore.runs import summarize_run

    budgeted = Path(shutil.copytree(explore_root / "live", tmp_path / "runs" / "budgeted"))
    record = json.loads((budgeted / "config.json").read_text())
    record["config"]["time_budget"] = 40.0
    (budgeted / "config.json").write_text(json.dumps(record))
    assert summarize_run(tmp_path / "runs", "budgeted")["planned_epochs"] is None
    assert summarize_run(explore_root, "live")["planned_epochs"] == record["config"]["epochs"]


def test_one_run_folder_as_the_root(explore_root):
    from cnnlab.explore.runs import find_runs, list_runs

    assert find_runs(explore_root / "lenet") == ["."]
    assert list_runs(explore_root / "lenet")[0]["model"] == "lenet-relu"


@pytest.mark.parametrize("target", [
    "/api/run?run=../lenet", "/api/run?run=..%2Flenet", "/api/run?run=%2e%2e%2f%2e%2e%2fetc", "/api/run?run=/etc",
    "/api/run?run=%2Fetc%2Fpasswd", "/api/run?run=lenet%2F..%2F..", "/api/run?run=escape", "/api/run?run=",
    "/api/run?run=lenet%00", "/api/run?run=sweep", "/api/run?run=..%5Clenet", "/api/metrics?run=escape",
    "/api/analyze?run=escape&index=0", "/api/figure?run=lenet&name=config.json",
    "/api/figure?run=lenet&name=..%2F..%2Fescape%2Fconfig.json", "/api/stream?run=..%2Flenet",
    "/static/../server.py", "/static/%2e%2e/server.py", "/static/..%2f..%2fexplore%2fserver.py",
    "/static/%2e%2e%2f%2e%2e%2f%2e%2e%2fpyproject.toml", "/etc/passwd", "/api/nothing",
])
def test_traversal_and_unknown_names_get_404(server, target):
    status, body = request(server, "GET", target)
    assert status == 404, (target, body)
    assert isinstance(body, dict) and "error" in body and "root" not in str(body)


def test_a_symlinked_file_inside_a_run_is_not_served(explore_root):
    from cnnlab.explore.runs import NotFound, resolve_run, run_file

    run = resolve_run(explore_root, "lenet")
    with pytest.raises(NotFound):
        run_file(run, "leak.json")
    assert run_file(run, "metrics.csv").name == "metrics.csv"


def test_the_static_page_is_served_from_the_package(server):
    status, page = request(server, "GET", "/")
    assert status == 200 and b"cnnlab explore" in page
    assert b"http://" not in page and b"https://" not in page, "no CDN: the page must work offline"
    for name in ("dom.js", "app.js", "style.css"):
        status, text = request(server, "GET", f"/static/{name}")
        assert status == 200 and b"http://" not in text.replace(b"http://www.w3.org/2000/svg", b"")



def test_every_page_names_its_parts_for_a_screen_reader():
    """The runs table's tick column and the top classes' columns had no header cells, so a screen reader read their
    cells without a name; and no status region said the answer, so an upload seemed to do nothing."""
    from cnnlab.explore.page import STATIC, render_page

    pages = {name: (STATIC / name).read_text(encoding="utf-8") for name in ("index.html", "model.html")}
    pages["the saved page"] = render_page({}, "t")
    for name, page in pages.items():
        parts = page_parts(page)
        assert parts.lang == "en" and parts.viewport, name
        assert parts.nameless == [], (name, parts.nameless)
        assert all(all(names) for names in parts.headers.values()), (name, parts.headers)
        assert parts.headers["top-table"][:2] == ["class", "probability"], name
        assert "result-status" in parts.live, name
    index = page_parts(pages["index.html"])
    assert index.headers["runs-table"][0] == "compare" and "ops-now" in index.live  # a step's result is said
    assert "from the keyboard, choose a file" in re.search(r'<canvas id="draw"[^>]*>', pages["index.html"]).group(0)

def test_every_curve_colour_stands_out_from_the_chart():
    """Two of the curves' colours (#c49000, #16a2b8) had 2.8:1 and 3.0:1 against the chart's background, under WCAG
    2.1 AA's 3:1 for a graphical object one needs to tell a run's curve by."""
    from cnnlab.explore.page import STATIC

    palette = re.search(r"const COLORS = \[(.*?)\]", (STATIC / "app.js").read_text())[1]
    colours = re.findall(r'"(#[0-9a-f]{6})"', palette)
    chart = re.search(r"svg\.chart\{[^}]*background:(#[0-9a-f]{6})", (STATIC / "style.css").read_text())[1]
    assert len(colours) == 8 and {c: round(contrast(c, chart), 2) for c in colours if contrast(c, chart) < 3} == {}


def test_a_corrupt_run_is_an_error_and_the_rest_still_works(server):
    status, body = request(server, "GET", "/api/run?run=broken-json")
    assert status == 200 and "expected JSON" in body["error"]
    status, body = request(server, "GET", "/api/run?run=corrupt-checkpoint")
    assert status == 200 and "corrupt" in body["model_error"] and "\n" not in body["model_error"]
    status, body = request(server, "GET", "/api/analyze?run=corrupt-checkpoint&index=0")
    assert status == 400 and "corrupt" in body["error"]
    status, body = request(server, "GET", "/api/analyze?run=broken-json&index=0")
    assert status == 400 and "checkpoint" in body["error"]
    status, body = request(server, "GET", "/api/run?run=lenet")
    assert status == 200 and body["model_info"]["params"] == 61706


# ------------------------------------------------------------------------------------------- one input


def test_the_runs_page_and_the_one_model_page_answer_alike_for_a_run(server, explore_root):
    """One path for every kind: the runs page's answer for a test image is the one-model page's for the same
    checkpoint and image (cnnlab.explore.model.analyze_image of a RunModel), byte for byte."""
    from cnnlab.data import load_fashion_mnist
    from cnnlab.explore.model import analyze_image
    from cnnlab.explore.sources import open_model

    status, r = request(server, "GET", "/api/analyze?run=lenet&index=7")
    assert status == 200
    direct = analyze_image(open_model(explore_root / "lenet" / "last.pt"), load_fashion_mnist().test_images[7][None])
    assert {k: r[k] for k in direct} == json.loads(json.dumps(direct))
    assert r["explanation"]["method"] == "grad-cam"


def test_a_test_image_gets_the_library_s_predictions_maps_and_gradcam(server, explore_root):
    from cnnlab.data import load_fashion_mnist
    from cnnlab.inference import load_trained

    status, r = request(server, "GET", "/api/analyze?run=lenet&index=7")
    assert status == 200
    trained = load_trained(explore_root / "lenet" / "last.pt")
    image = load_fashion_mnist().test_images[7]
    probs = trained.logits(image[None, None]).softmax(1)[0]
    top = probs.topk(5)
    assert [t["index"] for t in r["top"]] == top.indices.tolist()
    assert [t["probability"] for t in r["top"]] == pytest.approx(top.values.tolist(), abs=1e-6)
    assert r["top"][0]["class"] == CLASSES[int(top.indices[0])] and r["label"] == CLASSES[int(
        load_fashion_mnist().test_labels[7])]
    spatial = [row for row in r["rows"] if len(row["shape"]) == 3]
    assert [row["shape"] for row in spatial] == [[6, 28, 28], [6, 14, 14], [16, 10, 10], [16, 5, 5]]
    assert [len(row["maps"]) for row in spatial] == [6, 6, 8, 8]
    assert r["explanation"]["row"] == "features.5" and r["explanation"]["target"] == r["top"][0]["class"]
    for url in (r["input"], r["explanation"]["gradcam"], r["explanation"]["saliency"], spatial[0]["maps"][0]["png"]):
        im = Image.open(io.BytesIO(__import__("base64").b64decode(url.split(",", 1)[1])))
        im.verify()
    status, body = request(server, "GET", "/api/analyze?run=lenet&index=10000")
    assert status == 400 and "0 to 9999" in body["error"]
    status, body = request(server, "GET", "/api/analyze?run=lenet&index=abc")
    assert status == 400 and "integer" in body["error"]
    # A parameter given twice: which was meant? The last one was read, without a word.
    status, body = request(server, "GET", "/api/analyze?run=lenet&index=0&index=1")
    assert status == 400 and body["error"] == "?index= is given 2 times ('0', '1'); expected it once"


def test_gallery_has_every_class_and_confident_mistakes(server):
    status, g = request(server, "GET", "/api/gallery?run=lenet")
    assert status == 200
    assert [c["class"] for c in g["by_class"]] == list(CLASSES)
    assert all(len(c["images"]) == 6 for c in g["by_class"])
    confidences = [m["confidence"] for m in g["mistakes"]]
    assert confidences == sorted(confidences, reverse=True) and len(confidences) == 16
    assert all(m["predicted"] != m["label"] for m in g["mistakes"])


def test_pictures_to_pick_from_are_sent_at_most_twice_their_shown_size():
    """The model page listed its folder's pictures at the model's own side: 200 of 224 px were 20 MB of its answer
    (and of a saved page's 8 MiB), for thumbnails shown 56 px wide. They are shrunk to 112 px, the aspect kept; a
    28-px picture is sent as it is, pixel for pixel."""
    from cnnlab.explore.server import image_list

    def side(url: str) -> tuple[int, int]:
        return Image.open(io.BytesIO(base64.b64decode(url.split(",", 1)[1]))).size

    g = torch.Generator().manual_seed(0)
    photos = torch.randint(0, 256, (3, 3, 224, 160), dtype=torch.uint8, generator=g)
    listed = image_list(ImageSet(photos, ["a.jpg", "b.jpg", "c.jpg"], [None] * 3, (), 3))
    assert [side(im["png"]) for im in listed["images"]] == [(80, 112)] * 3  # (width, height)
    digits = torch.randint(0, 256, (1, 1, 28, 28), dtype=torch.uint8, generator=g)
    (small,) = image_list(ImageSet(digits, ["d.png"], [None], (), 1))["images"]
    decoded = Image.open(io.BytesIO(base64.b64decode(small["png"].split(",", 1)[1])))
    assert torch.equal(torch.from_numpy(np.array(decoded)), digits[0, 0])


def test_a_run_of_many_classes_sends_each_classes_pictures_when_the_page_asks(explore_root, server, monkeypatch):
    # the gallery held every class's pictures: 1,000 classes of 224-px photos were 6,000 PNGs, over a gigabyte of JSON
    from cnnlab.explore import session as session_module

    whole = session_module.Session(explore_root).gallery("lenet")
    monkeypatch.setattr(session_module, "GALLERY_CLASSES", 5, raising=False)  # lenet's 10 classes are many here
    g = session_module.Session(explore_root).gallery("lenet")
    assert g["by_class"] == [{"class": c, "images": [], "later": True} for c in CLASSES]
    assert g["mistakes"] == whole["mistakes"]
    status, three = request(server, "GET", "/api/gallery?run=lenet&class=3")  # what the page asks for class 3
    assert status == 200 and three == whole["by_class"][3] and len(three["images"]) == 6
    status, body = request(server, "GET", "/api/gallery?run=lenet&class=10")
    assert status == 400 and body["error"] == "class must be from 0 to 9, got 10"


def test_an_rgb_run_of_another_dataset_takes_uploads_at_its_own_size(server):
    status, g = request(server, "GET", "/api/gallery?run=sweep%2Frgb")
    assert status == 400 and "cifar-like-not-on-this-machine" in g["error"]  # no test set here: an error card
    photo = Image.new("RGB", (90, 60), (250, 250, 250))
    photo.paste((200, 30, 30), (20, 10, 60, 50))
    status, r = request(server, "POST", "/api/analyze?run=sweep%2Frgb&invert=1", png_bytes(photo))
    assert status == 200, r
    assert sorted(t["class"] for t in r["top"]) == sorted(RGB_CLASSES)
    assert sum(t["probability"] for t in r["top"]) == pytest.approx(1, abs=1e-5)
    assert r["rows"][0]["shape"] == [6, 32, 32]
    status, info = request(server, "GET", "/api/run?run=sweep%2Frgb")
    assert info["model_info"]["channels"] == 3 and info["model_info"]["classes"] == list(RGB_CLASSES)
    assert info["model_info"]["layers"][0]["shape"] == [6, 32, 32]


def test_a_wrong_method_is_answered_in_json_as_every_error_is(server):
    status, body = request(server, "DELETE", "/api/runs")
    assert status == 405 and body["error"] == "DELETE is not allowed here, expected GET, HEAD"
    status, body = request(server, "GET", "/api/nothing-here")
    assert status == 404 and body["error"] == "not found"


def test_a_drawing_is_classified(server):
    canvas = Image.new("L", (224, 224), 0)
    canvas.paste(255, (60, 40, 160, 190))
    status, r = request(server, "POST", "/api/analyze?run=lenet", png_bytes(canvas))
    assert status == 200 and len(r["top"]) == 5 and r["source"] == "your image"


@pytest.mark.parametrize("body, headers, code, match", [
    (b"", {}, 400, "empty"),
    (b"GIF89a but not really", {}, 400, "not an image"),
    (b"%PDF-1.4 a pdf is no image", {}, 400, "not an image"),
    (png_bytes(Image.new("L", (64, 64)))[:60], {}, 400, "truncated or corrupt"),
    (png_bytes(Image.new("1", (20000, 10000))), {}, 400, "expected at most 179 megapixels"),
    (b"x" * 100, {"Content-Length": str(MAX_UPLOAD_BYTES + 1)}, 413, "MiB"),
])
def test_bad_uploads_are_refused_in_one_line(server, body, headers, code, match):
    status, r = request(server, "POST", "/api/analyze?run=lenet", body, headers)
    assert status == code and match in r["error"] and "\n" not in r["error"], r


def test_a_post_is_the_file_alone_and_queries_are_read_strictly(server):
    """A POST that also names a test image (the body won unsaid), a form instead of the file's bytes ("not an
    image"), integers int() reads but no page sends (1_0 as 10, other scripts' digits), and HEAD, which took the
    upload branch (400 where GET gives 200)."""
    png = png_bytes(Image.new("L", (28, 28), 128))
    status, r = request(server, "POST", "/api/analyze?run=lenet&index=0", png)
    assert status == 400 and r["error"].startswith("a POST analyses the image file in its body; ?index= picks")
    form = b"--b\r\nContent-Disposition: form-data; name=file; filename=a.png\r\n\r\n" + png + b"\r\n--b--\r\n"
    status, r = request(server, "POST", "/api/analyze?run=lenet", form,
                        {"Content-Type": "multipart/form-data; boundary=b"})
    assert status == 400 and "expected the image file's bytes as the request body" in r["error"]
    for value in ("1_0", "%D9%A1", "+1"):
        status, r = request(server, "GET", f"/api/analyze?run=lenet&index={value}")
        assert status == 400 and r["error"].startswith("expected an integer ?index=, got"), (value, r)
    status, r = request(server, "GET", "/api/ops?op=corr&input=book&kernel=book&stride=1_0")
    assert status == 400 and r["error"] == "expected an integer ?stride=, got '1_0'"
    assert request(server, "HEAD", "/api/analyze?run=lenet&index=0", timeout=120)[0] == 200


def test_an_invert_that_is_neither_yes_nor_no_is_refused(server, explore_root):
    # ?invert=maybe (or yes) was read as not inverted without a word: the page answered for the picture as it is
    from cnnlab.explore import BackgroundServer, create_model_app
    from cnnlab.explore.sources import open_model

    picture = png_bytes(Image.new("L", (28, 28), 200))
    with BackgroundServer(app=create_model_app(open_model(explore_root / "lenet" / "last.pt"))) as model_server:
        for where, target in ((server, "/api/analyze?run=lenet&"), (model_server, "/api/analyze?")):
            for value in ("maybe", "yes", "2"):
                status, r = request(where, "POST", f"{target}invert={value}", picture)
                assert status == 400 and r["error"] == f"expected ?invert= 1, true or on (or 0, false, off), got " \
                                                       f"{value!r}", r
            answers = {value: request(where, "POST", f"{target}invert={value}", picture)
                       for value in ("1", "true", "ON", "0", "false", "off", "")}
            assert {status for status, _ in answers.values()} == {200}
            assert answers["1"][1]["input"] == answers["true"][1]["input"] == answers["ON"][1]["input"] != \
                answers["0"][1]["input"] == answers["off"][1]["input"] == answers[""][1]["input"]


def test_an_oversized_chunked_upload_is_cut_off(server):
    host, port = server.url.split("//")[1].strip("/").split(":")
    with socket.create_connection((host, int(port)), timeout=30) as s:
        s.sendall(b"POST /api/analyze?run=lenet HTTP/1.1\r\nHost: 127.0.0.1\r\nTransfer-Encoding: chunked\r\n\r\n")
        chunk = b"\x00" * 2**20
        try:
            for _ in range(MAX_UPLOAD_BYTES // 2**20 + 4):
                s.sendall(b"%x\r\n" % len(chunk) + chunk + b"\r\n")
        except (BrokenPipeError, ConnectionResetError):
            pass  # the server answered and closed before reading everything: that is the point
        reply = b""
        while b"MiB" not in reply:
            data = s.recv(4096)
            if not data:
                break
            reply += data
    assert b" 413 " in reply.split(b"\r\n")[0] and b"larger than %d MiB" % (MAX_UPLOAD_BYTES // 2**20) in reply


def test_an_icon_is_refused_without_decoding_the_picture_inside(monkeypatch):
    """Pillow decodes an ICO while opening it, its largest frame whatever the icon's directory says: a 650 KB icon
    holding a 13000 x 13000 PNG took 0.5 GB before the pixel limit was checked."""
    from PIL import IcoImagePlugin

    from cnnlab.explore.images import decode_upload

    inner = png_bytes(Image.new("L", (5000, 4000)))
    icon = (b"\x00\x00\x01\x00\x01\x00" + bytes([1, 1, 0, 0]) + (1).to_bytes(2, "little") + (32).to_bytes(2, "little")
            + len(inner).to_bytes(4, "little") + (22).to_bytes(4, "little") + inner)  # its directory says 1 x 1
    monkeypatch.setattr(IcoImagePlugin.IcoImageFile, "load", lambda self: pytest.fail("the icon was decoded"))
    with pytest.raises(CnnlabError, match=r"^the upload is not an image of a format read here \(expected PNG, JPEG"):
        decode_upload(icon, 1, 28)


def test_the_decoder_refuses_a_bomb_before_decoding():
    from cnnlab.errors import CnnlabError
    from cnnlab.explore.images import decode_upload

    bomb = png_bytes(Image.new("1", (20000, 20000)))  # 400 megapixels in about 50 kB
    assert len(bomb) < 200_000
    with pytest.raises(CnnlabError, match=f"expected at most {MAX_UPLOAD_PIXELS / 1e6:.0f} megapixels"):
        decode_upload(bomb, 1, 28)
    x = decode_upload(png_bytes(Image.new("RGBA", (50, 20), (255, 255, 255, 0))), 3, 32, invert=True)
    assert x.shape == (3, 32, 32) and x.dtype == torch.uint8 and int(x.max()) == 0  # transparent on white, inverted


def camera_photo(path: Path, width: int, height: int) -> Path:
    """A JPEG of a camera's size with structure in it (a gradient, noise), written cheaply."""
    ramp = Image.linear_gradient("L").resize((width, height))
    Image.merge("RGB", [ramp, Image.effect_noise((width, height), 40), ramp.transpose(Image.Transpose.ROTATE_180)]) \
        .save(path, quality=90)
    return path


def test_a_camera_photo_is_taken_and_decoded_in_bounded_memory(server, tmp_path):
    """An ordinary phone photo (24 megapixels) was refused by the page and by --images (8 MiB and 16 megapixels),
    while predict took it; decoded whole, a 61-megapixel camera JPEG is held in several full-size copies to become a
    224 px input (the whole RGB picture alone is 172 MiB). A large
    JPEG that is padded is now decoded at a reduced scale; a folder model's pictures are still decoded whole, as its
    training decoded them."""
    from cnnlab.explore.images import decode_upload
    from cnnlab.picture import centre_crop

    phone = camera_photo(tmp_path / "phone.jpg", 6000, 4000)
    status, r = request(server, "POST", "/api/analyze?run=lenet", phone.read_bytes())
    assert status == 200 and r["source"] == "your image", r
    with Image.open(phone) as im:  # the crop path decodes as a folder run's training did: the whole picture
        assert torch.equal(decode_upload(phone.read_bytes(), 3, 64, crop=True),
                           torch.from_numpy(centre_crop(im, 64, 3).copy()).permute(2, 0, 1))
    camera = camera_photo(tmp_path / "camera.jpg", 9504, 6336)
    assert camera.stat().st_size <= MAX_UPLOAD_BYTES
    measure = ("import resource, sys\nfrom pathlib import Path\nfrom cnnlab.explore.images import decode_upload\n"
               "data = Path(sys.argv[1]).read_bytes()\nbefore = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss\n"
               "x = decode_upload(data, 3, 224)\n"
               "print((resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) // 1024, *x.shape)")
    import cnnlab

    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(Path(cnnlab.__file__).parents[1]),
                                                        os.environ.get("PYTHONPATH", "")])}
    out = subprocess.run([sys.executable, "-c", measure, str(camera)], capture_output=True, text=True, env=env,
                         timeout=300)
    grown, *shape = (int(v) for v in out.stdout.split())
    assert shape == [3, 224, 224] and grown < 100, out  # MiB; the whole RGB picture alone is 172 MiB


# ------------------------------------------------------------------------------------------- the book's ops


def test_the_book_example_cross_correlates_to_the_book_s_result(server):
    status, o = request(server, "GET", "/api/ops?op=corr&input=book&kernel=book")
    assert status == 200
    assert o["output"] == [[19.0, 25.0], [37.0, 43.0]]  # d2l 7.2.1
    assert o["steps"] == [[0, 0, 0, 0], [0, 1, 0, 1], [1, 0, 1, 0], [1, 1, 1, 1]]
    assert o["formula"][0].endswith("= 2")


@pytest.mark.parametrize("op, source, kernel, pool, padding, stride", [
    ("corr", "edges", "edge", 2, 0, 1), ("corr", "edges", "blur", 2, 1, 2), ("corr", "book", "sharpen", 2, 2, 1),
    ("corr", "edges", "book", 2, 3, 3), ("max", "book", None, 2, 0, 1), ("max", "edges", None, 3, 1, 2),
    ("avg", "edges", None, 2, 1, 1), ("avg", "book", None, 3, 1, 2),
])
def test_ops_match_torch(server, op, source, kernel, pool, padding, stride):
    from cnnlab.explore.opsview import INPUTS, KERNELS

    q = f"/api/ops?op={op}&input={source}&kernel={kernel}&pool={pool}&padding={padding}&stride={stride}"
    status, o = request(server, "GET", q)
    assert status == 200, o
    x = INPUTS[source]().double()[None, None]
    if op == "corr":
        expected = F.conv2d(x, KERNELS[kernel].double()[None, None], stride=stride, padding=padding)
    elif op == "max":
        expected = F.max_pool2d(x, pool, stride=stride, padding=padding)
    else:
        expected = F.avg_pool2d(x, pool, stride=stride, padding=padding)
    torch.testing.assert_close(torch.tensor(o["output"], dtype=torch.double), expected[0, 0])
    assert len(o["steps"]) == expected.shape[-1] * expected.shape[-2]
    assert o["formula"][0].endswith(f"= {expected.shape[-2]}") and o["formula"][1].endswith(f"= {expected.shape[-1]}")
    top, left = o["steps"][-1][2:]
    assert top + o["window"][0] <= len(o["input"]) + 2 * padding and left + o["window"][1] <= len(o["input"][0]) + \
        2 * padding, "the last window lies inside the padded input"


def test_ops_on_a_test_image_with_a_learned_kernel(server, explore_root):
    from cnnlab.inference import load_trained

    status, o = request(server, "GET", "/api/ops?op=corr&input=test&run=lenet&index=3&kernel=learned&unit=2")
    assert status == 200, o
    w = load_trained(explore_root / "lenet" / "last.pt").model.features[0].weight.detach()[2, 0].double()
    assert torch.tensor(o["kernel"]) == pytest.approx(w, abs=1e-6)
    assert len(o["output"]) == 24  # 28 - 5 + 1


@pytest.mark.parametrize("query, match", [
    ("op=corr&input=book&kernel=book&padding=-1", "padding must be"),
    ("op=corr&input=book&kernel=book&stride=0", "stride must be"),
    ("op=corr&input=book&kernel=book&stride=x", "integer"),
    ("op=max&input=book&pool=2&padding=2", "at most half the kernel"),
    ("op=corr&input=custom&x=1+2%3B3&kernel=book", "rectangle"),
    ("op=corr&input=custom&x=a+b&kernel=book", "numbers"),
    ("op=corr&input=book&kernel=custom&k=1+2+3+4", "at least as large as the (dilated) kernel 1x4"),
    ("op=corr&input=book&kernel=nothing", "expected kernel"),
    ("op=conv3d&input=book", "expected op"),
])
def test_bad_ops_settings_are_one_line(server, query, match):
    status, o = request(server, "GET", "/api/ops?" + query)
    assert status == 400 and match in o["error"], o


# --------------------------------------------------------------------------------------------- Grad-CAM


@pytest.mark.parametrize("name, channels, size, layer", [
    ("lenet-relu", 1, 28, "features.5"), ("resnet18", 3, 64, "b5"), ("vgg-small", 1, 32, None),
])
def test_gradcam_and_saliency_match_captum(name, channels, size, layer):
    captum = pytest.importorskip("captum.attr", reason="captum is in the dev extra")
    from cnnlab.explore.gradcam import explain
    from cnnlab.models.summary import stages

    torch.manual_seed(0)
    model = create_model(name, num_classes=7, in_channels=channels).eval()
    x = torch.rand(1, channels, size, size)
    positive = 0
    for target in range(7):
        e = explain(model, x, target=target)
        if layer is not None:
            assert e.row == layer
        module = model.get_submodule(e.row.split("-")[0].rpartition(".")[0] + "." + e.row.split("-")[-1]
                                     if "-" in e.row else e.row)
        assert module in stages(model)
        theirs = captum.LayerGradCam(model, module).attribute(x, target=target, relu_attributions=True)[0, 0]
        torch.testing.assert_close(e.cam, theirs.detach(), rtol=1e-4, atol=1e-6)
        positive += float(e.cam.max()) > 0
        saliency = captum.Saliency(model).attribute(x.clone().requires_grad_(True), target=target, abs=True)[0].amax(0)
        torch.testing.assert_close(e.saliency, saliency, rtol=1e-4, atol=1e-7)
    assert positive >= 2, "maps that are all zero would compare equal too easily"
    assert e.cam_at((size, size)).shape == (size, size) and float(e.cam_at((size, size)).max()) == pytest.approx(1)


# ------------------------------------------------------------------------------------ live runs and load


def _sse_events(sock: socket.socket, want: int, timeout: float = 30) -> list[tuple[str, dict]]:
    sock.settimeout(timeout)
    buf, events = b"", []
    while len(events) < want:
        data = sock.recv(65536)
        if not data:
            break
        buf += data
        while b"\n\n" in buf:
            block, buf = buf.split(b"\n\n", 1)
            lines = dict(line.split(": ", 1) for line in block.decode().splitlines() if ": " in line)
            if "event" in lines:
                events.append((lines["event"], json.loads(lines["data"])))
    return events


def _open_stream(server, run: str) -> socket.socket:
    host, port = server.url.split("//")[1].strip("/").split(":")
    s = socket.create_connection((host, int(port)), timeout=30)
    s.sendall(f"GET /api/stream?run={run} HTTP/1.1\r\nHost: 127.0.0.1\r\nAccept: text/event-stream\r\n\r\n".encode())
    return s


def test_stream_follows_a_live_run_and_survives_clients_that_leave(server, explore_root, tmp_path):
    live = Path(shutil.copytree(explore_root / "live", explore_root / "live-stream"))
    os.utime(live / "metrics.csv")  # copytree keeps the old mtime: a run unwritten for 10 minutes counts as stopped
    try:
        for _ in range(6):  # clients that read one event and vanish mid-stream
            s = _open_stream(server, "live-stream")
            assert _sse_events(s, 1)[0][0] == "metrics"
            s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")  # reset
            s.close()
        s = _open_stream(server, "live-stream")
        first = _sse_events(s, 1)
        assert len(first[0][1]["metrics"]) == 2
        rows = list(first[0][1]["metrics"])
        rows.append({**rows[-1], "epoch": 3, "val_acc": 0.5})
        write_metrics_csv(live / "metrics.csv", rows)
        grown = _sse_events(s, 1)
        assert grown[0][0] == "metrics" and [r["epoch"] for r in grown[0][1]["metrics"]] == [1, 2, 3]
        write_json(live / "result.json", {"model": "lenet-relu", "status": "finished", "test_acc": 0.5})
        assert _sse_events(s, 1)[0][0] == "done"
        s.close()
        status, body = request(server, "GET", "/api/runs")
        assert status == 200 and {r["run"]: r for r in body["runs"]}["live-stream"]["status"] == "finished"
    finally:
        shutil.rmtree(live)


def test_a_watched_run_nobody_writes_any_more_ends_its_stream(server, explore_root):
    """Killed or interrupted (a checkpoint, no result.json): once quiet for STALE_S the stream says done, and the
    page shows the run's final status; it stayed "training" for as long as the page was open."""
    from cnnlab.runs.record import LIVE_FILES, STALE_S

    quiet = Path(shutil.copytree(explore_root / "live", explore_root / "live-quiet"))
    try:
        old = time.time() - STALE_S - 60
        for name in LIVE_FILES:
            if (quiet / name).is_file():
                os.utime(quiet / name, (old, old))
        s = _open_stream(server, "live-quiet")
        assert [event for event, _ in _sse_events(s, 2)] == ["metrics", "done"]
        s.close()
    finally:
        shutil.rmtree(quiet)


def test_a_watched_run_that_is_deleted_ends_its_stream_with_a_failure(server, explore_root):
    live = Path(shutil.copytree(explore_root / "live", explore_root / "live-gone"))
    os.utime(live / "metrics.csv")
    try:
        s = _open_stream(server, "live-gone")
        assert _sse_events(s, 1)[0][0] == "metrics"
        shutil.rmtree(live)  # the page used to show empty curves under "training" and poll for hours
        event, data = _sse_events(s, 1)[0]
        assert event == "failure" and data["error"] == "the run folder is gone (deleted or moved)"
        s.close()
    finally:
        shutil.rmtree(live, ignore_errors=True)


def test_a_burst_of_concurrent_requests(server):
    targets = ["/api/runs", "/api/run?run=lenet", "/api/analyze?run=lenet&index=1", "/api/ops?op=max&input=edges",
               "/api/gallery?run=lenet", "/api/metrics?run=live", "/api/run?run=..%2Fx", "/static/app.js"] * 6
    expected = {t: request(server, "GET", t) for t in set(targets)}
    with ThreadPoolExecutor(16) as pool:
        answers = list(pool.map(lambda t: request(server, "GET", t, timeout=120), targets))
    for target, answer in zip(targets, answers, strict=True):
        assert answer == expected[target], target
    assert request(server, "GET", "/api/runs")[0] == 200


def test_loopback_by_default_and_a_warning_otherwise(tmp_path, monkeypatch):
    import cnnlab.explore.launch as launch
    from cnnlab.cli import main

    served = []
    monkeypatch.setattr(launch, "serve", lambda root, host, port, open_browser, **_: served.append((host, port)))
    (tmp_path / "runs").mkdir()
    monkeypatch.chdir(tmp_path)
    assert main(["explore"]) == 0 and served == [("127.0.0.1", 8765)]  # the runs folder, on loopback
    host_warning = launch.host_warning
    for host in ("127.0.0.1", "localhost", "::1", "127.0.0.2"):
        assert host_warning(host) is None
    for host in ("0.0.0.0", "192.0.2.7", "::", "myhost.example"):
        assert "reachable from other machines" in host_warning(host)


def _asked_as(url: str, name: str, target: str) -> tuple[int, dict | None]:
    """(status, error) of a GET to the server at ``url`` whose ``Host`` names ``name``, as a browser sends it."""
    port = int(url.rstrip("/").rsplit(":", 1)[1])
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    try:
        conn.request("GET", target, headers={"Host": f"{name}:{port}"})
        response = conn.getresponse()
        data = response.read()
        return response.status, json.loads(data) if response.status != 200 else None
    finally:
        conn.close()


def test_a_web_page_that_points_its_name_at_loopback_reads_nothing(server, explore_root):
    # Listening on 127.0.0.1 kept other machines out, but any site open in this machine's browser could re-point its
    # own name at 127.0.0.1 (DNS rebinding) and read the runs, their test images and a model's page as its own.
    from cnnlab.explore import BackgroundServer, create_model_app
    from cnnlab.explore.sources import open_model

    with BackgroundServer(app=create_model_app(open_model(explore_root / "lenet" / "last.pt"))) as model_server:
        for url, targets in ((server.url, ["/", "/static/app.js", "/api/runs", "/api/run?run=lenet",
                                           "/api/analyze?run=lenet&index=0", "/api/stream?run=lenet"]),
                             (model_server.url, ["/", "/api/analyze?image=0", "/api/model"])):
            for target in targets:
                status, body = _asked_as(url, "attacker.example", target)
                assert status == 403 and "got one for 'attacker.example:" in body["error"], (target, body)
                assert "open http://127.0.0.1:" in body["error"]
            for name in ("127.0.0.1", "localhost", "[::1]"):  # the page's own requests, however the user typed it
                assert _asked_as(url, name, targets[-1])[0] == 200, (name, targets[-1])
            port = int(url.rstrip("/").rsplit(":", 1)[1])
            with socket.create_connection(("127.0.0.1", port), timeout=60) as s:  # HTTP/1.0 names no host at all
                s.sendall(f"GET {targets[-1]} HTTP/1.0\r\n\r\n".encode())
                assert s.recv(64).startswith(b"HTTP/1.1 200 ")


def test_another_web_site_cannot_make_the_server_run_its_model(server, explore_root):
    # A page of another site open in the browser could POST a picture to the explorer (a "simple" request: no
    # preflight) and have it decoded and run through the model, reading nothing of the answer; the browser names
    # that page's origin in Origin, and only the explorer's own is answered.
    from cnnlab.explore import BackgroundServer, create_model_app
    from cnnlab.explore.sources import open_model

    picture = png_bytes(Image.new("L", (28, 28), 128))
    with BackgroundServer(app=create_model_app(open_model(explore_root / "lenet" / "last.pt"))) as model_server:
        for where, target in ((server, "/api/analyze?run=lenet"), (model_server, "/api/analyze")):
            port = int(where.url.rstrip("/").rsplit(":", 1)[1])
            for origin in ("http://attacker.example", "https://attacker.example", f"http://attacker.example:{port}",
                           f"http://127.0.0.1:{port + 1}", "null", "file://",
                           "not an origin"):
                status, body = request(where, "POST", target, picture, {"Origin": origin})
                assert status == 403 and f"got one from {origin!r}" in body["error"], (target, origin, body)
                assert "\n" not in body["error"]
            # the page's own requests, however the user typed its address, and a tool's (curl sends no Origin)
            for origin in (f"http://127.0.0.1:{port}", f"http://localhost:{port}", f"http://[::1]:{port}", None):
                status, body = request(where, "POST", target, picture, {"Origin": origin} if origin else {})
                assert status == 200 and body["source"] == "your image", (target, origin, body)


def _posted_as(url: str, name: str, target: str, body: bytes, origin: str) -> tuple[int, dict]:
    """(status, JSON) of a POST of ``body`` to the server at ``url`` naming host ``name`` and ``origin``."""
    port = int(url.rstrip("/").rsplit(":", 1)[1])
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    try:
        conn.putrequest("POST", target, skip_host=True, skip_accept_encoding=True)
        for k, v in (("Host", name), ("Origin", origin), ("Content-Length", str(len(body)))):
            conn.putheader(k, v)
        conn.endheaders()
        conn.send(body)
        response = conn.getresponse()
        return response.status, json.loads(response.read())
    finally:
        conn.close()


def test_a_proxy_s_host_name_is_answered_when_allowed(explore_root):
    # Behind a proxy that forwards the user's name for the page (JupyterHub's jupyter-server-proxy, a cloud IDE's
    # port forwarding, a tunnel), every request came in on loopback naming the proxy's host and was refused, as a
    # rebinding page's are, with no way to allow it: --allow-host names it (".domain": every name under it).
    from cnnlab.explore import BackgroundServer, create_app, create_model_app
    from cnnlab.explore.sources import open_model

    picture = png_bytes(Image.new("L", (28, 28), 128))
    allowed = ("Hub.Example.org", ".lab.example")
    with BackgroundServer(app=create_app(explore_root, allowed)) as runs_server, \
            BackgroundServer(app=create_model_app(open_model(explore_root / "lenet" / "last.pt"),
                                                  allow_hosts=allowed)) as model_server:
        for where, target in ((runs_server, "/api/analyze?run=lenet"), (model_server, "/api/analyze")):
            for name in ("hub.example.org", "x.lab.example", "lab.example"):
                assert _asked_as(where.url, name, "/")[0] == 200, name
                # the page through the proxy posts with the proxy's origin, on the proxy's own port
                status, body = _posted_as(where.url, name, target, picture, f"https://{name}")
                assert status == 200 and body["source"] == "your image", (name, body)
            for name in ("attacker.example", "hub.example.org.attacker.example", "xlab.example"):
                status, body = _asked_as(where.url, name, "/")
                assert status == 403 and f"pass --allow-host {name}" in body["error"], (name, body)
                status, body = request(where, "POST", target, picture, {"Origin": f"https://{name}"})
                assert status == 403, (name, body)


@pytest.mark.parametrize("name", ["https://hub.example.org", "hub.example.org:443", "*.example.org", "", "localhost",
                                  "a b"])
def test_an_allowed_host_that_is_no_host_name_is_one_line(name, tmp_path, capsys):
    code, out, err = run_with_output(["explore", str(tmp_path), "--allow-host", name, "--no-browser"], capsys)
    assert code == 2 and out == [] and len(err) == 1, err
    assert err[0] == (f"cnnlab explore: error: --allow-host takes a host name the page is opened by through a proxy "
                      f"(hub.example.org, or .example.org for every name under it), got {name!r}")


def test_cli_errors_are_one_line(tmp_path):
    from cnnlab.cli import main

    assert main(["explore", str(tmp_path / "missing"), "--no-browser"]) == 2


@pytest.mark.parametrize("host", ["999.1.1.1", "192.0.2.7"])  # no address at all; an address of another machine
def test_a_host_that_cannot_be_bound_is_not_called_a_port_problem(host, tmp_path, capsys):
    code, out, err = run_with_output(["explore", str(tmp_path), "--host", host, "--port", "0", "--no-browser"],
                                     capsys)
    assert code == 2 and out == [] and len(err) == 1, err  # no "listening on" warning for a host never listened on
    assert err[0].startswith(f"cnnlab explore: error: cannot listen on {host}:0: --host {host} could not be bound (")
    assert "--port" not in err[0]
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(CnnlabError, match=rf"cannot listen on 127.0.0.1:{port} \(.*\); pass --port 0 for any"):
            bind("127.0.0.1", port)


@pytest.mark.slow
def test_cnnlab_explore_serves_until_interrupted(explore_root):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "cnnlab", "explore", str(explore_root), "--port", "0",
                             "--no-browser"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        line = proc.stdout.readline()
        assert "serving" in line and "http://127.0.0.1:" in line, line + proc.stderr.read()
        url = line.split(" at ")[1].split()[0]

        class _Server:  # what request() needs
            pass

        s = _Server()
        s.url = url
        status, body = request(s, "GET", "/api/runs")
        assert status == 200 and len(body["runs"]) >= 5
    finally:
        proc.send_signal(__import__("signal").SIGINT)
        out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    assert "Traceback" not in err


@pytest.mark.slow
@pytest.mark.parametrize("signal_name", ["SIGINT", "SIGTERM"])
def test_cnnlab_explore_stops_at_once_while_a_page_watches_a_training_run(explore_root, tmp_path, signal_name):
    """A tab on a run that trains holds its event stream open for hours: Ctrl-C (or SIGTERM) waited for it, silently,
    and the server went on serving. The stream ends, and the process exits within seconds, printing no traceback."""
    import signal

    live = Path(shutil.copytree(explore_root / "lenet", tmp_path / "runs" / "training"))
    (live / "result.json").unlink()
    (live / "metrics.csv").touch()  # written a moment ago: the run trains
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "cnnlab", "explore", str(tmp_path / "runs"), "--port", "0",
                             "--no-browser"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        line = proc.stdout.readline()
        assert "serving" in line, line + proc.stderr.read()
        host, port = line.split(" at http://")[1].split("/")[0].split(":")
        watcher = socket.create_connection((host, int(port)), timeout=30)
        watcher.sendall(b"GET /api/stream?run=training HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        seen = b""
        while b"event: metrics" not in seen:  # the page follows the run
            chunk = watcher.recv(65536)
            assert chunk, seen
            seen += chunk
        stopped = time.monotonic()
        proc.send_signal(getattr(signal, signal_name))
        out, err = proc.communicate(timeout=20)
        assert time.monotonic() - stopped < 10
        watcher.close()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == {"SIGINT": 0, "SIGTERM": 143}[signal_name], err
    assert "Traceback" not in err and "Error" not in err, err


def test_thread_safe_model_cache_loads_once(explore_root, monkeypatch):
    from cnnlab.explore import session as session_module

    calls = []
    real = session_module.load_trained

    def counting(path):
        calls.append(path)
        time.sleep(0.2)
        return real(path)

    monkeypatch.setattr(session_module, "load_trained", counting)
    s = session_module.Session(explore_root)
    threads = [threading.Thread(target=s.model, args=("lenet",)) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(calls) == 1


def test_a_watched_training_run_leaves_no_lock_behind_per_checkpoint(explore_root, tmp_path):
    """A page open on a run that trains for hours: each checkpoint it writes (a new modification time) is a new model
    to load, and the session kept a lock for each for good; it keeps none once nothing is being loaded."""
    from cnnlab.explore.session import MAX_MODELS, Session

    run = Path(shutil.copytree(explore_root / "lenet", tmp_path / "runs" / "training"))
    session = Session(tmp_path / "runs")
    written = (run / "last.pt").stat().st_mtime_ns
    for epoch in range(8):  # the run writes last.pt at the end of each epoch
        os.utime(run / "last.pt", ns=(written, written + epoch * 10**9))
        session.model("training")
        session.gallery("training")
        session.test_image("training", epoch)
    assert session._building == {}
    assert len(session._models) == MAX_MODELS


def test_the_session_keeps_the_test_sets_of_as_many_runs_as_models(explore_root, tmp_path, monkeypatch):
    """A runs folder of runs on many datasets (or one folder at many --image-size): every test set the page opened
    was kept for the whole session, where only the last MAX_MODELS models are."""
    from cnnlab.explore import session as session_module

    for k in range(6):
        shutil.copytree(explore_root / "lenet", tmp_path / "runs" / f"run{k}")
    # each run's own dataset settings (its checkpoint's folder stands for them)
    monkeypatch.setattr(session_module, "test_set_key", lambda trained: (str(trained.path.parent),))
    loads = []
    real = session_module.load_test_set
    monkeypatch.setattr(session_module, "load_test_set", lambda trained: loads.append(trained.path) or real(trained))
    session = session_module.Session(tmp_path / "runs")
    for k in [*range(6), 5]:
        session.test_image(f"run{k}", 0)
    assert len(loads) == 6 and len(session._test_sets) == len(session._models) == session_module.MAX_MODELS
    assert sorted(session._test_sets) == [(str(tmp_path / "runs" / f"run{k}"),) for k in range(2, 6)]


# -- a run's test images are read as the run read them ---------------------------------------------------------
def test_a_run_trained_with_data_dir_shows_its_test_images_without_cnnlab_data(tmp_path, home, data_dir, capsys):
    from cnnlab.explore.session import Session

    runs = tmp_path / "runs"
    argv = ["train", "lenet-relu", "--data-dir", str(data_dir), *TINY, "--out", str(runs / "run")]
    assert run_with_output(argv, capsys)[0] == 0
    gallery = Session(runs).gallery("run")  # the run's --data-dir, as cnnlab eval reads it; no download
    assert [c["class"] for c in gallery["by_class"]] == list(CLASSES) and gallery["searched"] == 2000


def test_a_run_trained_with_skip_bad_images_shows_its_test_images(tmp_path, home, capsys):
    from cnnlab.explore.session import Session

    data, runs = tmp_path / "set", tmp_path / "runs"
    write_classes(data, {"a": 6, "b": 6})
    (data / "a" / "broken.png").write_text("<html>404</html>")
    argv = ["train", "lenet-relu", "--dataset", f"folder:{data}", "--skip-bad-images", *TINY, "--out",
            str(runs / "run")]
    assert run_with_output(argv, capsys)[0] == 0
    gallery = Session(runs).gallery("run")
    assert [len(c["images"]) for c in gallery["by_class"]] == [1, 1]  # a stratified sixth of the 12 readable


def test_the_mistakes_are_searched_among_a_sample_of_the_whole_test_split(tmp_path, home, capsys, monkeypatch):
    """A folder's test split is sorted by class: searched among its first images, a model that always answers the
    first class was shown no mistake, at 100% accuracy."""
    from cnnlab.explore import session as session_module
    from cnnlab.inference import Trained

    data, runs = tmp_path / "set", tmp_path / "runs"
    write_classes(data / "train", {"a": 4, "b": 4, "c": 4}, size=(28, 28))
    write_classes(data / "test", {"a": 10, "b": 10, "c": 10}, size=(28, 28), seed=50)
    argv = ["train", "lenet-relu", "--dataset", f"folder:{data}", *TINY, "--out", str(runs / "run")]
    assert run_with_output(argv, capsys)[0] == 0
    monkeypatch.setattr(session_module, "MISTAKE_POOL", 10)
    monkeypatch.setattr(Trained, "logits", lambda self, x: torch.tensor([[9.0, 0.0, 0.0]]).repeat(len(x), 1))
    g = session_module.Session(runs).gallery("run")
    assert {m["label"] for m in g["mistakes"]} == {"b", "c"} and {m["predicted"] for m in g["mistakes"]} == {"a"}
    assert g["accuracy"] == pytest.approx(1 - len(g["mistakes"]) / 10)
    assert (g["searched"], g["of"]) == (10, 30)  # the page says "a sample of 10 of the 30 test images"
