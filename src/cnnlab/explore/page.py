"""A static explorer page: one self-contained HTML file for a course site (``cnnlab explore SOURCE --export``).

The file is the served model page (``static/model.html``, ``dom.js``, ``model.js``, ``style.css``) with the
stylesheet and scripts inlined and the answers the server would give (model card, thumbnails, each chosen input's
analysis) embedded as JSON; every picture is a ``data:`` PNG. A Content-Security-Policy meta tag
(``default-src 'none'``, images only from ``data:``) makes the browser itself refuse any request the page might try:
it opens from ``file://`` with no server, no CDN and no network.

Size budget (``PAGE_BUDGET``, 8 MiB): the inputs are one image per class subfolder in the folder's order (or the
first images of a flat folder), at most ``MAX_INPUTS``; each input shows every stage with its ``MAPS_PER_ROW``
channels of largest spatial variance. When the page would exceed the budget, fewer channels per stage are shown
(8, 4, 2, then 1), then fewer inputs; a page that is over the budget even with one input and one channel per
stage is refused with its size (``budget=None`` writes it whatever its size).
"""

from __future__ import annotations

import html
import json
from importlib import resources
from pathlib import Path
from typing import Any

from cnnlab.errors import CnnlabError
from cnnlab.explore.model import ExploreModel, analyze_image, model_card
from cnnlab.explore.server import image_list
from cnnlab.io import atomic_write, check_output_file, writable_text

PAGE_BUDGET = 8 * 2**20
MAX_INPUTS = 6
MAP_STEPS = (8, 4, 2, 1)
STATIC = resources.files("cnnlab.explore") / "static"
CSP = ("default-src 'none'; img-src data:; style-src 'unsafe-inline'; script-src 'unsafe-inline'; "
       "connect-src 'none'; form-action 'none'; base-uri 'none'")


def chosen_inputs(images, limit: int = MAX_INPUTS) -> list[int]:
    """Indices of the inputs the page shows: one per class subfolder first, then in the folder's order."""
    picks: list[int] = []
    if images.classes:
        for c in images.classes:
            first = next((i for i, lab in enumerate(images.labels) if lab == c), None)
            if first is not None and len(picks) < limit:
                picks.append(first)
    for i in range(len(images.names)):
        if len(picks) >= limit:
            break
        if i not in picks:
            picks.append(i)
    return sorted(picks)


def render_page(data: dict[str, Any], title: str) -> str:
    """The self-contained HTML of a page's data (the served page's body, stylesheet and script inlined)."""
    template = (STATIC / "model.html").read_text(encoding="utf-8")
    body = template[template.index("<!--BODY-->"):template.index("<!--/BODY-->")]
    css = (STATIC / "style.css").read_text(encoding="utf-8")
    script = "".join((STATIC / name).read_text(encoding="utf-8") for name in ("dom.js", "model.js"))
    # No "<" may reach a script element's text: "</" would end it early, and "<!--" followed by "<script" puts the
    # HTML parser in a state where the closing tag is not seen (a class folder so named broke the page). JSON
    # spells them as \u escapes inside its strings, and outside strings it has none of these characters.
    payload = json.dumps(data, separators=(",", ":"))
    for char in "<>&":
        payload = payload.replace(char, f"\\u{ord(char):04x}")
    return ("<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
            f"<meta http-equiv=\"Content-Security-Policy\" content=\"{CSP}\">\n"
            "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n"
            f"<title>{html.escape(writable_text(title))}</title>\n<link rel=\"icon\" href=\"data:,\">\n"
            f"<style>\n{css}</style>\n"
            f"</head>\n<body>\n{body}\n<script>window.CNNLAB_DATA = {payload};</script>\n"
            f"<script>\n{script}</script>\n</body>\n</html>\n")


def build_page(model: ExploreModel, images, budget: int | None = PAGE_BUDGET,
               inputs: int = MAX_INPUTS) -> tuple[str, dict[str, Any]]:
    """The page's HTML and a summary (``inputs``, ``maps_per_stage``, ``bytes``) within ``budget`` bytes."""
    card = model_card(model)
    listed = image_list(images)
    title = f"cnnlab explore: {model.name}"
    full = {i: {**analyze_image(model, images.fed(i), maps=MAP_STEPS[0], what=images.names[i]),
                "source": images.names[i],
                "label": images.labels[i]} for i in chosen_inputs(images, inputs)}

    def page_of(picks: list[int], maps: int) -> str:
        # A row's maps are in order of spatial variance, so its first ``maps`` are the ones a smaller page keeps.
        analyses = {str(i): {**full[i], "rows": [{**r, "maps": r["maps"][:maps]} for r in full[i]["rows"]]}
                    for i in picks}
        shown = dict(listed, images=[im for im in listed["images"] if im["index"] in picks])
        return render_page({"model": card, "images": shown, "analyses": analyses}, title)

    picks = sorted(full)
    tries = [(picks, maps) for maps in MAP_STEPS] + [(picks[:n], MAP_STEPS[-1]) for n in range(len(picks) - 1, 0, -1)]
    for chosen, maps in tries:
        page = page_of(chosen, maps)
        size = len(page.encode("utf-8"))
        if budget is None or size <= budget:
            return page, {"inputs": chosen, "maps_per_stage": maps, "bytes": size}
    raise CnnlabError(f"the page for {model.name} is {size / 2**20:.1f} MiB with one input and one channel per "
                      f"stage, over the {budget / 2**20:.0f} MiB budget")


def check_export_file(output: str | Path, force: bool = False) -> Path:
    """``output`` as a page may be written there: an ``.html`` (or ``.htm``) name, so never a model or image the
    explorer reads, ``--force`` or not; then :func:`cnnlab.io.check_output_file`."""
    if Path(output).suffix.lower() not in (".html", ".htm"):
        raise CnnlabError(f"--export writes an HTML page: expected a file name ending in .html, got {str(output)!r}")
    return check_output_file(output, force, what="--export ")


def export_page(model: ExploreModel, images, output: str | Path, force: bool = False,
                budget: int | None = PAGE_BUDGET) -> dict[str, Any]:
    """Write the static page to ``output`` (atomically; an existing file only with ``force``).

    Returns:
        ``{"path", "inputs", "maps_per_stage", "bytes"}``.

    Raises:
        CnnlabError: ``output`` does not end in ``.html`` (or ``.htm``), cannot be written
            (:func:`cnnlab.io.check_output_file`), no images were given, or the page cannot fit the budget.
    """
    output = check_export_file(output, force)
    if images is None or not len(images.names):
        raise CnnlabError("--export needs --images FOLDER: the page shows those inputs through every stage")
    page, summary = build_page(model, images, budget)
    # without force, a page another program wrote there while this one was being made is kept, not replaced
    atomic_write(output, lambda tmp: Path(tmp).write_text(page, encoding="utf-8"), overwrite=force)
    return {"path": str(output), **summary}
