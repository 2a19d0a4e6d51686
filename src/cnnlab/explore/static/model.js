// cnnlab explore, one model of any kind (cnnlab run, ONNX, PyTorch): the same page served or saved as one file.
// Served, it asks this server's API; saved (cnnlab explore --export), everything is in window.CNNLAB_DATA.
"use strict";

const DATA = window.CNNLAB_DATA || null;

const getModel = () => DATA ? Promise.resolve(DATA.model) : api("/api/model");
const getImages = () => DATA ? Promise.resolve(DATA.images) : api("/api/images");
function getAnalysis(index) {
  if (!DATA) return api("/api/analyze?image=" + index);
  const a = DATA.analyses[String(index)];
  return a ? Promise.resolve(a) : Promise.reject(new Error("this saved page holds no analysis of that image"));
}

function showModel(m) {
  $("model-title").textContent = m.name;
  document.title = "cnnlab explore: " + m.name;  // as the saved page's own title names it
  // a network that is no classifier (a detector, a segmentation model) is shown for its layers: the notes say why
  $("model-kind").textContent = `${m.kind}: ${m.classifier ? m.classes.length + " classes" : "not a classifier"}, ` +
    `${Number(m.params).toLocaleString("en")} parameters` +
    (m.macs == null ? "" : `, ${Number(m.macs).toLocaleString("en")} MACs per image`);
  $("model-input").textContent = m.input;
  $("model-notes").replaceChildren(...m.notes.map((n) => el("li", {text: n})));
  $("kernels").replaceChildren(...m.kernels.map((k, i) => el("img", {class: "kernel", src: k.png,
    alt: `kernel ${i}`, title: `kernel ${i}: ${k.shape.join(" x ")}`})));
  if (!m.kernels.length) $("kernels").textContent = "no convolution with a weight to show";
  $("layers-table").querySelector("tbody").replaceChildren(...m.layers.map((r) => el("tr", {},
    el("td", {text: r.name}), el("td", {text: r.op}), el("td", {class: "num", text: r.shape.join(" x ")}),
    el("td", {class: "num", text: Number(r.params).toLocaleString("en")}),
    // unknown where a shape the count needs is (a symbolic dimension): "-", never a guess
    el("td", {class: "num", text: r.macs == null ? "-" : Number(r.macs).toLocaleString("en")}))));
}

function showImages(body) {
  const shown = body.images;
  const skipped = body.skipped || [];
  $("images-note").textContent = !shown.length ? "No image folder: upload a file." :
    `${shown.length} of ${body.found} images` + (body.classes.length ? `, labelled by their folder` : "") +
    (skipped.length ? `; ${skipped.length} unreadable, left out (${skipped.join("; ")})` : "") + ".";
  $("images").replaceChildren(...shown.map((im) => pickable(el("img", {src: im.png, class: "thumb", alt: im.name,
    title: im.name + (im.label ? ` (${im.label})` : ""), "data-index": im.index}), () => choose(im.index))));
}

async function choose(index) {
  uploaded = false;
  for (const img of document.querySelectorAll("#images img.thumb")) {
    img.classList.toggle("chosen", Number(img.dataset.index) === index);
  }
  await showAnswer(getAnalysis(index), show);
}

function show(r) {
  $("result-input").src = r.input;
  $("result-label").textContent = r.label ? "label: " + r.label : "";
  $("top-table").querySelector("tbody").replaceChildren(...r.top.map((t) => el("tr", {},
    el("td", {text: t.class}),
    el("td", {class: "num", text: t.probability === null ? "—" : (100 * t.probability).toFixed(1) + "%"}))));
  $("top-box").hidden = !r.top.length;
  showOutputs(r.outputs || []);
  const e = r.explanation;
  $("attr-a-box").hidden = $("attr-b-box").hidden = !e;
  if (e && e.method === "occlusion") {
    $("attr-a").src = e.occlusion;
    $("attr-a").alt = "occlusion overlay";
    $("attr-a-caption").textContent = `occlusion: where hiding a patch (${e.grid[0]} x ${e.grid[1]} grid) lowers ` +
      `${e.target}` + (e.empty ? " (no patch lowers it)" : "");
    $("attr-b").src = e.map;
    $("attr-b").alt = "probability change per patch";
    $("attr-b-caption").textContent = "the probability drop (red) or rise (blue) per patch";
  } else if (e) {
    $("attr-a").src = e.gradcam;
    $("attr-a").alt = "Grad-CAM overlay";
    $("attr-a-caption").textContent = `Grad-CAM of ${e.target} at ${e.row}` +
      (e.empty ? " (zero everywhere: no channel of that stage speaks for the class)" : "");
    $("attr-b").src = e.saliency;
    $("attr-b").alt = "saliency map";
    $("attr-b-caption").textContent = "saliency |∂score/∂input|";
  }
  $("maps").replaceChildren(...r.rows.filter((row) => row.maps.length).map((row) => el("div", {class: "maprow",
    "data-stage": row.name}, el("div", {class: "label"}, el("b", {text: row.name}), el("br"),
    row.kind + " · " + row.shape.join(" x ")), ...row.maps.map((m) => el("img", {class: "map", src: m.png,
      alt: `${row.name} channel ${m.channel}`, title: `channel ${m.channel}`})))));
}

// A value of an output's range: four significant digits; none (no values, or not finite) as a dash
const figure = (v) => v === null || v === undefined ? "—" : String(Number(v.toPrecision(4)));

// A picture of what the network returns, over the input: its caption, and a legend of a colour and words per item
const overInput = (src, alt, caption, items) => el("figure", {}, el("img", {class: "pixels", src, alt}),
  el("figcaption", {text: caption}), el("ul", {class: "legend"}, ...items.map(([colour, text]) => el("li", {},
    el("span", {class: "swatch", style: `background:${colour}`, "aria-hidden": "true"}), text))));

function showOutputs(outputs) {
  $("outputs-box").hidden = !outputs.length;
  $("outputs-table").querySelector("tbody").replaceChildren(...outputs.map((o) => el("tr", {},
    el("td", {text: o.name}), el("td", {class: "num", text: shapeText(o.shape)}),
    // the least, mean and largest are those of its finite values: how many are not is said beside its type
    el("td", {text: o.dtype + (o.nonfinite ? ` (${o.nonfinite.toLocaleString("en")} NaN or infinite)` : "")}),
    el("td", {class: "num", text: figure(o.min)}),
    el("td", {class: "num", text: figure(o.mean)}), el("td", {class: "num", text: figure(o.max)}))));
  $("segments").replaceChildren(
    // each channel or class that wins a pixel, most pixels first: its colour, name and share of the map
    ...outputs.filter((o) => o.segments).map((o) => overInput(o.segments, `${o.name}: its class at each pixel`,
      o.labels ? `${o.name}: the class it gives each pixel, one colour each, over the input`
        : `${o.name}: which of its ${o.channels} channels is largest at each pixel (a segmentation model's class ` +
          "per pixel), one colour each, over the input",
      o.legend.map((c) => [c.colour, legendText(c)]))),
    // a detector's boxes: its highest-scoring drawn over the input, each named (or numbered) with its score; how
    // they were kept where they were read from a head's raw scores per anchor
    ...outputs.filter((o) => o.boxes).map((o) => overInput(o.boxes, `${o.name}: its ${o.drawn} highest-scoring boxes`,
      `${o.name}: the ${o.drawn} highest-scoring of its ${o.found} ${o.turned ? "turned boxes" : "boxes"}` +
        (o.with ? `, with their ${o.with}` : "") +
        (o.kept ? ` (${o.kept})` : "") + ", over the input",
      o.detected.map((b) => [b.colour, legendText(b)]))));
}

let uploaded = false;  // the answer shown is the upload's: ticking "invert" answers for it again
async function upload() {
  const file = $("upload").files[0];
  if (!file) return;
  uploaded = true;
  for (const img of document.querySelectorAll("#images img.thumb.chosen")) img.classList.remove("chosen");
  await showAnswer(api("/api/analyze?invert=" + ($("invert").checked ? 1 : 0), {method: "POST", body: file}), show);
}

async function start() {
  if (DATA) $("upload-box").hidden = true;  // a saved page has no server to classify a new file
  else {
    $("upload").addEventListener("change", upload);
    $("invert").addEventListener("change", () => { if (uploaded) upload(); });
  }
  try { showModel(await getModel()); } catch (e) { errorCard($("model-error"), e.message); return; }
  const images = await getImages();
  showImages(images);
  const first = DATA ? Object.keys(DATA.analyses)[0] : (images.images.length ? images.images[0].index : null);
  if (first !== undefined && first !== null) await choose(Number(first));
  document.body.dataset.ready = "1";
}
start();
