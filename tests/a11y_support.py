"""What the page tests check for readers who do not use a page as a sighted mouse user does (WCAG 2.1 AA, and 2.2's
target size): parts with names a screen reader can say, read from the HTML; text contrast, width and the size of
what a finger taps, measured in the browser.

Plain standard library and selenium on purpose: CI has neither axe-core nor npm. The checks are those of the
properties the pages once lacked, not a full audit.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from html.parser import HTMLParser

CONTROLS = ("input", "select", "textarea", "button", "canvas")


@dataclass
class PageParts:
    """What a screen reader is told of a page's HTML: its language, viewport, header cells and controls."""

    lang: str | None = None
    viewport: bool = False
    headers: dict[str, list[str]] = field(default_factory=dict)  # table id (or its position) -> its th texts
    nameless: list[str] = field(default_factory=list)  # controls with no accessible name, as tag#id
    live: list[str] = field(default_factory=list)  # ids of the status and alert regions


class _Reader(HTMLParser):
    def __init__(self):
        super().__init__()
        self.parts = PageParts()
        self.tables: list[str] = []
        self.th: list[str] | None = None
        self.labels = 0  # open <label> elements: a control inside one is named by it
        self.label_for: set[str] = set()
        self.unlabelled: list[tuple[str, str]] = []  # (tag#id, id) of controls named only by a <label for>, if any
        self.button: list[str] | None = None  # the text of the open <button>, when its name is its text
        self.button_name = ""

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "html":
            self.parts.lang = a.get("lang")
        elif tag == "meta" and a.get("name") == "viewport":
            self.parts.viewport = "width=device-width" in (a.get("content") or "")
        elif tag == "table":
            self.tables.append(a.get("id") or f"table {len(self.parts.headers) + 1}")
            self.parts.headers[self.tables[-1]] = []
        elif tag == "th":
            self.th = []
        elif tag == "label":
            self.labels += 1
            if a.get("for"):
                self.label_for.add(a["for"])
        if a.get("role") in ("status", "alert") or a.get("aria-live"):
            self.parts.live.append(a.get("id") or tag)
        if tag in CONTROLS and a.get("type") != "hidden":
            name = f"{tag}#{a.get('id', '')}"
            if tag == "button":
                self.button = [] if not a.get("aria-label") else None
                self.button_name = name
            elif tag == "canvas":
                if a.get("role") != "img" or not a.get("aria-label"):
                    self.parts.nameless.append(name)
            elif not (self.labels or a.get("aria-label") or a.get("aria-labelledby") or a.get("title")):
                self.unlabelled.append((name, a.get("id", "")))

    def handle_endtag(self, tag):
        if tag == "th" and self.th is not None:
            self.parts.headers[self.tables[-1]].append("".join(self.th).strip())
            self.th = None
        elif tag == "table" and self.tables:
            self.tables.pop()
        elif tag == "label":
            self.labels -= 1
        elif tag == "button" and self.button is not None:
            if not "".join(self.button).strip():
                self.parts.nameless.append(self.button_name)
            self.button = None

    def handle_data(self, data):
        if self.th is not None:
            self.th.append(data)
        if self.button is not None:
            self.button.append(data)

    def close(self):
        super().close()
        self.parts.nameless += [name for name, ident in self.unlabelled if not ident or ident not in self.label_for]


def page_parts(html: str) -> PageParts:
    """The :class:`PageParts` of an HTML page (its static markup: what its script adds later is not seen)."""
    reader = _Reader()
    reader.feed(html)
    reader.close()
    return reader.parts


def contrast(first: str, second: str) -> float:
    """WCAG 2.1's contrast ratio of two ``#rrggbb`` colours (1 to 21)."""
    def luminance(colour: str) -> float:
        channels = [int(colour.lstrip("#")[k:k + 2], 16) / 255 for k in (0, 2, 4)]
        linear = [c / 12.92 if c <= 0.03928 else ((c + 0.055) / 1.055) ** 2.4 for c in channels]
        return 0.2126 * linear[0] + 0.7152 * linear[1] + 0.0722 * linear[2]

    light, dark = sorted((luminance(first), luminance(second)), reverse=True)
    return (light + 0.05) / (dark + 0.05)


# [text, ratio, needed] of each visible text whose contrast with the first opaque background behind it is below
# WCAG 2.1 AA: 4.5:1, or 3:1 for large text (24 px, or 18.66 px bold). SVG text is measured by its fill; text a
# screen reader skips (aria-hidden: a chart legend's line sample) and visually hidden text are not text to read.
LOW_CONTRAST_JS = """
const rgb = (s) => (s.match(/[\\d.]+/g) || []).map(Number);
const linear = (v) => (v /= 255) <= 0.03928 ? v / 12.92 : ((v + 0.055) / 1.055) ** 2.4;
const lum = (c) => c.slice(0, 3).map(linear).reduce((a, v, i) => a + v * [0.2126, 0.7152, 0.0722][i], 0);
const ratio = (a, b) => { const [x, y] = [lum(a), lum(b)].sort((p, q) => q - p); return (x + 0.05) / (y + 0.05); };
function background(node) {
  for (let n = node; n && n.nodeType === 1; n = n.parentElement) {
    const c = rgb(getComputedStyle(n).backgroundColor);
    if (c.length === 3 || c[3] > 0.99) return c;
  }
  return [255, 255, 255];
}
const low = [];
const walker = document.createTreeWalker(document.body, NodeFilter.SHOW_TEXT);
for (let t = walker.nextNode(); t; t = walker.nextNode()) {
  const e = t.parentElement, cs = getComputedStyle(e), size = parseFloat(cs.fontSize);
  if (!t.textContent.trim() || !e.getClientRects().length || cs.visibility !== "visible" || size === 0 ||
      e.closest("[aria-hidden=true], .sr-only")) continue;
  const needed = size >= 24 || (Number(cs.fontWeight) >= 700 && size >= 18.66) ? 3 : 4.5;
  const r = ratio(rgb(e instanceof SVGElement ? cs.fill : cs.color), background(e));
  if (r < needed) low.push([t.textContent.trim().slice(0, 40), Math.round(r * 100) / 100, needed]);
}
return low;
"""


def low_contrast(driver) -> list[list]:
    """The page's texts below WCAG AA contrast, as ``[text, ratio, needed]``; [] when every text is readable."""
    return driver.execute_script(LOW_CONTRAST_JS)


def sideways_scroll(driver) -> int:
    """How far the page scrolls sideways at the window's width (0: it fits; a wide table scrolls in its own box)."""
    return driver.execute_script("return document.documentElement.scrollWidth - innerWidth")


def unreachable_scrollers(driver) -> list[str]:
    """Boxes that scroll sideways at the window's width but that the keyboard cannot reach (no tab stop, in it or
    on it), as tag.class; Safari gives such a box no focus of its own, so without one a table's far columns stay
    out of a keyboard user's reach."""
    return driver.execute_script("""
        return Array.from(document.querySelectorAll('body *')).filter((e) => {
          const x = getComputedStyle(e).overflowX;
          return (x === 'auto' || x === 'scroll') && e.scrollWidth > e.clientWidth + 1 && e.tabIndex < 0 &&
            !e.querySelector('a[href], button, input, select, textarea, [tabindex="0"]');
        }).map((e) => e.tagName.toLowerCase() + '.' + e.className)""")


SMALL_TARGETS_JS = """
const rect = (e) => e.getBoundingClientRect();
const out = [];
for (const e of document.querySelectorAll(
    'a[href], button, input, select, textarea, summary, [tabindex]:not([tabindex="-1"])')) {
  if (e.offsetParent === null || e.closest('table.grid')) continue;
  let r = rect(e);
  if (r.width === 0 || r.height === 0) continue;
  // a link in a sentence is as tall as its line (WCAG 2.5.8's inline exception)
  if (e.tagName === 'A' && getComputedStyle(e).display === 'inline' && Array.from(e.parentElement.childNodes)
      .some((n) => n.nodeType === Node.TEXT_NODE && n.textContent.trim())) continue;
  const label = e.closest('label') || (e.id && document.querySelector('label[for="' + e.id + '"]'));
  if (label) {  // a click on its label is a click on the control
    const l = rect(label);
    r = {width: Math.max(r.right, l.right) - Math.min(r.left, l.left),
         height: Math.max(r.bottom, l.bottom) - Math.min(r.top, l.top)};
  }
  if (r.width < 24 - 0.5 || r.height < 24 - 0.5)
    out.push(e.tagName.toLowerCase() + (e.id ? '#' + e.id : e.className ? '.' + e.className : '') +
             ' ' + Math.round(r.width) + 'x' + Math.round(r.height));
}
return out;"""


def small_targets(driver) -> list[str]:
    """The page's shown controls and links smaller than 24 x 24 CSS px (WCAG 2.2's target size, 2.5.8), with the
    label that clicks a control counted as its target, as ``tag#id WxH``; [] when every one is large enough for a
    finger or a shaking hand. A link inside a sentence is exempt (as tall as its line), and so are the book
    operations' grid cells, which are the output map's pixels (the keyboard reaches every one)."""
    return driver.execute_script(SMALL_TARGETS_JS)


def text_cut_by_its_box(driver) -> list[str]:
    """Text outside a table's cells (a caption, a paragraph, a heading) that reaches past the visible part of the box
    it scrolls in, as ``tag: its first words``: a reader on a phone sees the line cut off at the box's edge. A
    table's columns may go on past it (the box scrolls, and Tab reaches it); a sentence should not."""
    return driver.execute_script("""
        const out = [];
        for (const e of document.querySelectorAll('caption, p, h2, h3, figcaption, dt, dd, li')) {
          if (e.offsetParent === null && e.tagName !== 'CAPTION') continue;
          let box = e.parentElement;
          while (box && box !== document.body && !['auto', 'scroll'].includes(getComputedStyle(box).overflowX))
            box = box.parentElement;
          if (!box || box === document.body) continue;
          const r = e.getBoundingClientRect(), b = box.getBoundingClientRect();
          if (r.width && (r.right > b.right + 1 || r.left < b.left - 1))
            out.push(e.tagName.toLowerCase() + ': ' + e.textContent.trim().slice(0, 40));
        }
        return out""")


def broken_shapes(driver, cells: str) -> list[str]:
    """The texts of the table ``cells`` (a CSS selector) that break over lines: a shape ``6 × 28 × 28`` read as
    "6 × 28" over "× 28" in a column squeezed by a phone's width (the table scrolls in its box instead)."""
    return driver.execute_script("""
        return Array.from(document.querySelectorAll(arguments[0])).filter((td) => {
          const range = document.createRange();
          range.selectNodeContents(td);
          return new Set(Array.from(range.getClientRects()).map((r) => Math.round(r.top))).size > 1;
        }).map((td) => td.textContent)""", cells)
