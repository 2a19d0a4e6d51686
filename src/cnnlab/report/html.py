"""RUN_DIR/report.html: one self-contained page of what a training run learnt.

Every image is an inline base64 PNG and the styling is one inline ``<style>`` block, so the file opens offline, can
be mailed or attached to an issue, and needs nothing beside it. The page is a derived file: writing it again
replaces it (atomically, so a reader never sees half a page).
"""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass
from html import escape
from pathlib import Path
from typing import Any

import torch

from cnnlab.errors import CnnlabError
from cnnlab.report import plots
from cnnlab.report.features import first_conv, receptive_fields, run_rows

REQUIRED = ("config.json", "metrics.csv", "result.json")
CHECKPOINTS = ("last.pt", "best.pt")  # last.pt first: result.json's test_acc is the final model's
N_WRONG, N_MAPS = 16, 4


@dataclass
class RunFiles:
    """The parsed files of a run folder."""

    path: Path
    config: dict[str, Any]
    result: dict[str, Any]
    metrics: list[dict[str, float]]
    checkpoint: Path


def read_run(run_dir: str | Path) -> RunFiles:
    """Read a run folder written by ``cnnlab train``; a missing or incomplete one raises a one-line CnnlabError."""
    from cnnlab.io import read_metrics_csv

    path = Path(run_dir)
    if not path.is_dir():
        raise CnnlabError(f"run folder {path} does not exist (expected a folder written by cnnlab train)")
    missing = [name for name in REQUIRED if not (path / name).is_file()]
    checkpoint = next((path / name for name in CHECKPOINTS if (path / name).is_file()), None)
    if checkpoint is None:
        missing.append(" or ".join(CHECKPOINTS))
    if missing:
        raise CnnlabError(f"run folder {path} is incomplete: missing {', '.join(missing)} (a run that is still "
                          "training or was stopped? `cnnlab train --resume` finishes it)")
    parsed = {}
    for name in ("config.json", "result.json"):
        try:
            parsed[name] = json.loads((path / name).read_text())
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
            raise CnnlabError(f"cannot read {path / name}: expected JSON ({str(e).splitlines()[0]})") from None
        if not isinstance(parsed[name], dict):
            raise CnnlabError(f"{path / name} holds a {type(parsed[name]).__name__}, expected a JSON object")
    try:
        metrics = read_metrics_csv(path / "metrics.csv")
    except (OSError, ValueError, TypeError, AttributeError) as e:
        raise CnnlabError(f"cannot read {path / 'metrics.csv'}: expected numeric epoch rows ({e})") from None
    return RunFiles(path, parsed["config.json"], parsed["result.json"], metrics, checkpoint)


CSS = """
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,Helvetica,Arial,sans-serif;color:#1d2433;
background:#f4f5f7;margin:0}
main{max-width:1080px;margin:0 auto;padding:24px 20px 40px}
header h1{font-size:24px;margin:0 0 2px}header p{margin:0;color:#5b6475}
.hero{display:flex;gap:14px;flex-wrap:wrap;margin:18px 0 6px}
.stat{background:#fff;border-radius:10px;padding:12px 18px;box-shadow:0 1px 3px rgba(0,0,0,.08);min-width:150px}
.stat b{display:block;font-size:26px;line-height:1.2}.stat span{color:#5b6475;font-size:12.5px}
section{background:#fff;border-radius:10px;padding:16px 20px;margin:16px 0;box-shadow:0 1px 3px rgba(0,0,0,.08);
overflow-x:auto}
section h2{font-size:17px;margin:0 0 12px}
img{max-width:100%;height:auto;display:block;margin:6px 0}
table{border-collapse:collapse;font-size:13px}
th,td{padding:4px 10px;border-bottom:1px solid #e6e8ec;text-align:left;vertical-align:middle}
th{color:#5b6475;font-weight:600}
td.num,th.num{text-align:right;font-variant-numeric:tabular-nums}
.muted{color:#6b7385;font-size:12.5px}
.pair{display:flex;flex-wrap:wrap;gap:18px;align-items:flex-start}.pair>img{flex:0 1 520px;min-width:300px}
table.metrics th,table.metrics td{padding:3px 7px;font-size:12.5px}
.maps{display:flex;flex-wrap:wrap;gap:10px 26px}.maps img{flex:0 1 auto;max-width:calc(50% - 13px)}
.classes td.bar{width:140px}.classes td.bar span{display:block;height:10px;border-radius:5px;background:#3b78c3}
dl{display:grid;grid-template-columns:max-content 1fr max-content 1fr;gap:4px 14px;margin:0}
dt{color:#5b6475}dd{margin:0}
footer{color:#7b8394;font-size:12px;text-align:center;margin-top:24px}
code{font-size:12.5px}
"""


def page(title: str, hero: str, sections: list[str], footer: str) -> str:
    """The whole document: inline style, no scripts, no external resources."""
    return (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
            f'<meta name="viewport" content="width=device-width, initial-scale=1">'
            f"<title>{escape(title)}</title><style>{CSS}</style></head>\n<body><main>"
            f"{hero}{''.join(sections)}<footer>{footer}</footer></main></body></html>\n")


def section(title: str, body: str) -> str:
    return f"<section><h2>{escape(title)}</h2>{body}</section>\n"


def _fmt(value: Any, spec: str = "", unit: str = "") -> str:
    if value is None or (isinstance(value, float) and value != value):  # missing or NaN
        return "—"
    return f"{value:{spec}}{unit}" if spec else f"{value}{unit}"


def hero(run: RunFiles, result, name: str, section_id: str, dataset: str = "fashion-mnist") -> str:
    """Title line and the headline numbers."""
    res = run.result
    stats = [
        (_fmt(res.get("test_acc"), ".2%"), "final test accuracy (result.json)"),
        (_fmt(result.accuracy, ".2%"), f"{result.n:,} test images, {run.checkpoint.name}"
         + (", flip-TTA" if result.tta else "")),
        (_fmt(res.get("best_val_acc"), ".2%"),
         "best epoch's " + ("validation" if res.get("val_split") else "test") + " accuracy"),
        (_fmt(res.get("images_per_s"), ",.0f"), "training images / s"),
    ]
    cards = "".join(f'<div class="stat"><b>{escape(v)}</b><span>{escape(k)}</span></div>' for v, k in stats)
    return (f"<header><h1>{escape(name)} <span class=\"muted\">d2l {escape(section_id)}</span></h1>"
            f"<p>cnnlab report of <code>{escape(str(run.path))}</code>, trained on {escape(dataset)}</p></header>"
            f'<div class="hero">{cards}</div>')


def summary_items(run: RunFiles, name: str, params: int, macs: int | None, input_size: int) -> str:
    """The run's facts as a two-column definition list."""
    res, cfg = run.result, run.config.get("config") or {}
    wall = res.get("wall_s")
    items = [
        ("model", name), ("recipe", res.get("recipe", cfg.get("recipe"))),
        ("parameters", _fmt(params, ",")),
        ("MACs / image", _fmt(macs, ",") + (f" ({macs / 1e6:,.1f} M)" if macs else "")),
        ("input", f"{input_size} × {input_size}"), ("epochs", res.get("epochs")),
        ("device", res.get("device")), ("processes", res.get("world_size")),
        ("wall time", _fmt(wall, ".1f", " s") + (f" ({wall / 60:.1f} min)" if wall and wall >= 120 else "")),
        ("images / s", _fmt(res.get("images_per_s"), ",.0f")),
        ("optimizer", f"{cfg.get('optimizer', '—')}, lr {cfg.get('lr', '—')}, momentum {cfg.get('momentum', 0)}"),
        ("batch size", cfg.get("batch_size")), ("schedule", cfg.get("schedule")),
        ("seed", res.get("seed", cfg.get("seed"))),
    ]
    cells = "".join(f"<dt>{escape(k)}</dt><dd>{escape(str(_fmt(v)))}</dd>" for k, v in items)
    return f"<dl>{cells}</dl>"


def _img(fig, alt: str, dpi: int = 100) -> str:
    data = base64.b64encode(plots.figure_png(fig, dpi)).decode("ascii")
    return f'<img alt="{escape(alt)}" src="data:image/png;base64,{data}">'


def _macs(name: str, input_size: int, in_channels: int) -> int | None:
    """Multiply-accumulates per image, counted by FlopCounterMode on the meta device (models.summary)."""
    from cnnlab.models import create_model
    from cnnlab.models.summary import layer_summary

    try:
        with torch.device("meta"):
            model = create_model(name, in_channels=in_channels)
        return sum(row.macs for row in layer_summary(model, (1, in_channels, input_size, input_size)))
    except (CnnlabError, RuntimeError):
        return None


METRIC_HEADERS = {"epoch": "epoch", "train_loss": "train loss", "train_acc": "train acc", "val_loss": "val loss",
                  "val_acc": "val acc", "lr": "lr", "seconds": "s", "images_per_s": "img/s"}


def _resized(fig, width: float = 5.2, height: float = 3.3):
    fig.set_size_inches(width, height)
    return fig


def _metrics_table(rows: list[dict[str, float]]) -> str:
    """metrics.csv as a table (the last 12 epochs when there are more: the curves show the rest)."""
    keys = [k for k in METRIC_HEADERS if k in rows[0]]
    spec = {"epoch": ".0f", "lr": ".3g", "seconds": ".1f", "images_per_s": ",.0f"}
    body = "".join("<tr>" + "".join(f'<td class="num">{escape(_fmt(r.get(k), spec.get(k, ".4f")))}</td>'
                                    for k in keys) + "</tr>" for r in rows[-12:])
    head = "".join(f'<th class="num">{METRIC_HEADERS[k]}</th>' for k in keys)
    note = f'<p class="muted">last 12 of {len(rows)} epochs</p>' if len(rows) > 12 else ""
    return f'<div><table class="metrics"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>{note}</div>'


def _per_class_table(result) -> str:
    counts = result.confusion.sum(1).tolist()
    body = []
    for i, (name, acc) in enumerate(zip(result.classes, result.per_class, strict=True)):
        body.append(f'<tr><td class="num">{i}</td><td>{escape(name)}</td><td class="num">{acc:.1%}</td>'
                    f'<td class="bar"><span style="width:{acc * 100:.1f}%"></span></td>'
                    f'<td class="num muted">{int(result.confusion[i, i])}/{counts[i]}</td></tr>')
    return ('<table class="classes"><thead><tr><th>#</th><th>class</th><th>accuracy</th><th></th><th>correct</th>'
            f'</tr></thead><tbody>{"".join(body)}</tbody></table>')


def _field_table(name: str, input_size: int, in_channels: int, image_size: int) -> str:
    rows, head = [], []
    for f in receptive_fields(name, input_size, in_channels):
        if len(f.shape) != 3:  # the dense head: every unit sees the whole image
            head.append(f)
            continue
        scaled = f" ({f.r * image_size / input_size:.1f} px of the {image_size}-px image)" \
            if input_size != image_size else ""
        whole = ' <span class="muted">(whole input)</span>' if f.r >= input_size else ""
        rows.append(f"<tr><td><code>{escape(f.name)}</code></td><td>{escape(f.kind)}</td>"
                    f'<td class="num">{" × ".join(map(str, f.shape))}</td>'
                    f'<td class="num">{f.r}{scaled}{whole}</td><td class="num">{f.jump}</td></tr>')
    if head:
        rows.append(f'<tr><td><code>{escape(head[0].name)} … {escape(head[-1].name.split("-")[-1])}</code></td>'
                    '<td>dense head</td><td class="num">vector</td><td class="num">whole image</td><td></td></tr>')
    return ('<table><thead><tr><th>row</th><th>layers</th><th>output (C × H × W)</th>'
            f'<th>receptive field (px of the {input_size}-px input)</th><th>jump</th></tr></thead>'
            f'<tbody>{"".join(rows)}</tbody></table>')


def _mistakes_section(logits: torch.Tensor, images: torch.Tensor, labels: torch.Tensor, classes) -> str:
    """The test images misclassified with the highest predicted-class probability."""
    confidence, pred = logits.softmax(1).max(1)
    wrong = (pred != labels).nonzero().flatten()
    worst = wrong[confidence[wrong].argsort(descending=True)[:N_WRONG]]
    if len(worst) == 0:
        return section("Misclassified test images", "<p>None: every test image is classified correctly.</p>")
    fig = plots.misclassified_figure(images[worst], labels[worst].tolist(), pred[worst].tolist(),
                                     confidence[worst].tolist(), classes)
    return section(f"The {len(worst)} most confidently misclassified test images", _img(fig, "misclassified images")
                   + '<p class="muted">Above each image: the predicted class and its probability; below: the '
                   "truth.</p>")


def _filters(weight: torch.Tensor) -> str:
    return (_img(plots.filters_figure(weight), "first-layer filters", dpi=110)
            + f'<p class="muted">{weight.shape[0]} kernels of {weight.shape[2]}×{weight.shape[3]} (averaged over '
            f"{weight.shape[1]} input channel(s)); red positive, blue negative, each kernel on its own symmetric "
            "scale.</p>")


def _feature_maps_section(model, preprocess, images, labels, classes, device) -> str:
    """Feature maps of the first test images of N_MAPS different classes, one figure per image."""
    picks: list[int] = []
    for i, label in enumerate(labels.tolist()):
        if label not in {int(labels[j]) for j in picks}:
            picks.append(i)
        if len(picks) == N_MAPS:
            break
    with torch.no_grad():
        batch = preprocess(images[picks].to(device).float() / 255)
        rows = [r for r in run_rows(model, batch) if r.output.dim() == 4]
    figures = "".join(
        _img(plots.feature_maps_figure(images[idx], [(f"{r.name}\n{r.kind}", r.output[k]) for r in rows],
                                       title=f"test #{idx}: {classes[int(labels[idx])]}"),
             f"feature maps of test image {idx}")
        for k, idx in enumerate(picks))
    return section("Feature maps", f'<div class="maps">{figures}</div>'
                   '<p class="muted">Each row is one stage of the network (activations and batch norm folded into '
                   "the layer before them); shown are the 8 channels with the largest spatial variance for this "
                   "image, each scaled to its own range.</p>")


def build_report(run: RunFiles, data_dir: str | Path | None = None, device: str = "auto", dataset=None,
                 test_logits: torch.Tensor | None = None) -> str:
    """Evaluate the run's checkpoint on the test set and render the page (see :func:`write_report`)."""
    from cnnlab.evaluate import EvalResult
    from cnnlab.inference import check_same_classes, dataset_of, load_trained
    from cnnlab.models import model_info
    from cnnlab.report.curves import curves_figure

    trained = load_trained(run.checkpoint, device)
    meta = trained.meta
    name, size, in_ch = meta.model_name, meta.input_size, meta.channels
    data = dataset if dataset is not None else dataset_of(trained.checkpoint.get("config") or {}, data_dir,
                                                          name=meta.dataset)
    check_same_classes(meta, data.classes, f"dataset {data.name}")
    images, labels, classes = data.test_images, data.test_labels, data.classes
    if test_logits is not None and 0 < len(test_logits) <= len(labels):
        # the training run's own final evaluation (limited to its first images by --limit-val-batches)
        images, labels, logits = images[:len(test_logits)], labels[:len(test_logits)], test_logits
    else:
        logits = trained.logits(images)
    result = EvalResult.from_logits(logits, labels, classes, model=name, checkpoint=str(run.checkpoint),
                                    device=str(trained.device), tta=meta.tta)
    params = trained.num_params()
    info = model_info(name)
    conv = first_conv(trained.model)
    sections = [
        section("Run", summary_items(run, name, params, _macs(name, size, in_ch), size)),
        section("Training curves", '<div class="pair">' + _img(_resized(curves_figure(run.metrics)), "training curves")
                + _metrics_table(run.metrics) + "</div>"
                if run.metrics else '<p class="muted">metrics.csv has no epochs yet.</p>'),
        section("Test set: confusion matrix and per-class accuracy",
                '<div class="pair">' + _img(plots.confusion_figure(result.confusion, classes), "confusion matrix")
                + _per_class_table(result) + "</div>"),
        _mistakes_section(logits, images, labels, classes),
        section("First-layer filters", _filters(conv.weight.detach().cpu()) if conv is not None
                else "<p>The model has no convolution.</p>"),
        _feature_maps_section(trained.model, trained.preprocess, images, labels, classes, trained.device),
        section("Receptive fields", _field_table(name, size, in_ch, meta.image_size) + RF_NOTE),
    ]
    env = run.config.get("environment") or {}
    footer = " · ".join(f"{k} {escape(str(env[k]))}" for k in ("cnnlab", "torch", "torchvision", "python",
                                                                   "platform", "git_commit", "date") if env.get(k))
    return page(f"cnnlab report: {name}", hero(run, result, name, info.section, data.name), sections, footer)


RF_NOTE = ("<p class=\"muted\">Computed from the layer geometry alone, walking every convolution and pooling in "
           "forward order: <code>r += (k − 1)·dilation·jump; jump *= stride</code>, starting from r = jump = 1. "
           "Where branches meet (Inception's concatenation, a residual sum, DenseNet's concatenation) the largest "
           "branch counts; a global pooling or a flatten for a dense layer sees the whole map. r may exceed the "
           "input: the unit then sees all of it (padding fills the rest).</p>")


def write_report(run_dir: str | Path, data_dir: str | Path | None = None, device: str = "auto", dataset=None,
                 test_logits: torch.Tensor | None = None) -> Path:
    """Write ``RUN_DIR/report.html``: summary, curves, confusion matrix, mistakes, filters, feature maps, fields.

    Evaluates the run's ``last.pt`` (``best.pt`` if there is no ``last.pt``) on its dataset's test images with
    the run's own preprocessing and flip-TTA setting, unless the training run hands over the logits of its own
    final test evaluation. An existing report is replaced: it is derived from the run.

    Args:
        run_dir: a run folder written by ``cnnlab train``.
        data_dir: the dataset's folder (default: where the run found it).
        device: where to evaluate: ``auto``, ``cpu``, ``cuda``, ``cuda:N`` or ``mps``.
        dataset: the run's dataset, when the caller has it in memory already (the Trainer does).
        test_logits: the final model's logits on the first ``len(test_logits)`` test images, in order.

    Returns:
        The path of the report.

    Raises:
        CnnlabError: the run folder is missing, incomplete or unreadable (one line naming what is wrong).
    """
    from cnnlab.io import atomic_write

    run = read_run(run_dir)
    text = build_report(run, data_dir=data_dir, device=device, dataset=dataset, test_logits=test_logits)
    out = run.path / "report.html"
    atomic_write(out, lambda tmp: Path(tmp).write_text(text, encoding="utf-8"))
    return out
