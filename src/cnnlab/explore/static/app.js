// cnnlab explore: the page's own script. Plain DOM and SVG, no libraries, nothing fetched but this server's API.
"use strict";

const COLORS = ["#3b78c3", "#e4572e", "#1d8a43", "#8e44ad", "#a87b00", "#128a9c", "#d6336c", "#555555"];
const state = {runs: [], run: null, detail: null, stream: null, ops: null, step: 0, timer: null, testIndex: 0};

const svgEl = (tag, attrs, ...children) => el(tag, {...attrs, svg: true}, ...children);

function fmtNum(v, digits = 3) {
  if (v === null || v === undefined || Number.isNaN(v)) return "—";
  if (v === -Infinity) return "−∞";
  if (Number.isInteger(v)) return String(v);
  return String(Number(v.toFixed(digits)));
}
const pct = (v) => (v === null || v === undefined) ? "—" : (100 * v).toFixed(2) + "%";
// Test accuracy when the run has finished, else the latest validation accuracy (marked "val"); a run that held out
// nothing (--test-split 0 without --val-split) has neither, and says so.
const accuracyCell = (r) => r.test_acc !== null && r.test_acc !== undefined ? pct(r.test_acc)
  : (r.val_acc !== null && r.val_acc !== undefined ? "val " + pct(r.val_acc)
    : (r.nothing_held_out ? "nothing held out" : "—"));

// ------------------------------------------------------------------------------------------------------ tabs
function showTab(name) {
  for (const tab of ["runs", "run", "ops"]) $("tab-" + tab).hidden = tab !== name;
  for (const a of document.querySelectorAll("nav a")) {
    a.classList.toggle("active", a.dataset.tab === name);
    if (a.dataset.tab === name) a.setAttribute("aria-current", "page"); else a.removeAttribute("aria-current");
  }
  if (name === "ops" && !state.ops) runOps();
  redrawCharts();  // the window may have changed width while this tab was hidden, its charts unmeasured
}
window.addEventListener("hashchange", () => showTab(location.hash.slice(1) || "runs"));

// ------------------------------------------------------------------------------------------------------ charts
// A line chart of several series [{name, color, points: [[x, y], ...]}]; points carry data-x/data-y for tests.
function lineChart(svg, title, series) {
  svg.drawn = [title, series];  // drawn again when its width changes (redrawCharts)
  // Drawn as wide as it is shown, 520 units at most: on a phone's 300 px a 520-unit chart scaled down had 6 px text.
  const W = Math.max(280, Math.min(520, Math.round(svg.getBoundingClientRect().width) || 520));
  // The legend goes under the plot, two entries a line (one on a narrow chart), where it hides no point.
  const perRow = W >= 400 ? 2 : 1;
  const legendRows = Math.ceil(series.filter((s) => s.points.some((p) => Number.isFinite(p[1]))).length / perRow);
  const H = 250, L = 48, R = 12, T = 22, B = 30, LEG = legendRows * 14 + (legendRows ? 6 : 0);
  svg.setAttribute("viewBox", `0 0 ${W} ${H + LEG}`);
  svg.replaceChildren();
  const all = series.flatMap((s) => s.points).filter((p) => Number.isFinite(p[1]));
  svg.append(svgEl("text", {x: L, y: 14, text: title}));
  svg.setAttribute("role", "img");
  svg.setAttribute("aria-label", chartSummary(title, series));
  if (!all.length) { svg.append(svgEl("text", {x: L, y: H / 2, text: "no epochs yet"})); return; }
  const xs = all.map((p) => p[0]), ys = all.map((p) => p[1]);
  let x0 = Math.min(...xs), x1 = Math.max(...xs);
  if (x1 - x0 < 1) { x0 -= 0.5; x1 += 0.5; }
  let y0 = Math.min(...ys), y1 = Math.max(...ys);
  if (y1 - y0 < 1e-9) { y0 -= 0.5; y1 += 0.5; }
  const sx = (x) => L + (x - x0) / (x1 - x0) * (W - L - R), sy = (y) => H - B - (y - y0) / (y1 - y0) * (H - T - B);
  svg.append(svgEl("line", {x1: L, y1: H - B, x2: W - R, y2: H - B, stroke: "#999"}));
  svg.append(svgEl("line", {x1: L, y1: T, x2: L, y2: H - B, stroke: "#999"}));
  for (let i = 0; i <= 4; i++) {
    const y = y0 + (y1 - y0) * i / 4;
    svg.append(svgEl("text", {x: 4, y: sy(y) + 4, text: fmtNum(y, 3)}));
    svg.append(svgEl("line", {x1: L, y1: sy(y), x2: W - R, y2: sy(y), stroke: "#eee"}));
  }
  const every = Math.max(1, Math.ceil((x1 - x0) / 10));
  for (let e = Math.ceil(x0); e <= x1; e += every) svg.append(svgEl("text", {x: sx(e) - 3, y: H - B + 13, text: e}));
  svg.append(svgEl("text", {x: W - R - 34, y: H - 3, text: "epoch"}));
  let k = 0;
  for (const s of series) {
    const pts = s.points.filter((p) => Number.isFinite(p[1]));
    if (!pts.length) continue;
    svg.append(svgEl("polyline", {fill: "none", stroke: s.color, "stroke-width": 2, "stroke-dasharray": s.dash,
      points: pts.map((p) => `${sx(p[0])},${sy(p[1])}`).join(" ")}));
    for (const p of pts) svg.append(svgEl("circle", {cx: sx(p[0]), cy: sy(p[1]), r: 2.5, fill: s.color,
      class: "point", "data-series": s.name, "data-x": p[0], "data-y": p[1]}));
    // the line's sample in its colour, the name in the text's (several of the colours are too light for text)
    svg.append(svgEl("text", {x: L + 8 + (k % perRow) * 230, y: H + 8 + Math.floor(k / perRow) * 14},
      svgEl("tspan", {fill: s.color, "aria-hidden": "true", text: s.dash ? "- - " : "—— "}), s.name));
    k++;
  }
}

// What a screen reader says for a chart: each curve's first and last point, and its extreme when that lies between.
function chartSummary(title, series) {
  const curves = series.map((s) => [s.name, s.points.filter((p) => Number.isFinite(p[1]))])
    .filter(([, pts]) => pts.length).map(([name, pts]) => {
      const first = pts[0], last = pts[pts.length - 1], ys = pts.map((p) => p[1]);
      const best = title === "loss" ? Math.min(...ys) : Math.max(...ys);
      const extreme = best !== first[1] && best !== last[1] ? `, ${title === "loss" ? "lowest" : "highest"} ${
        fmtNum(best, 4)}` : "";
      return pts.length === 1 ? `${name} ${fmtNum(last[1], 4)} at epoch ${last[0]}`
        : `${name} from ${fmtNum(first[1], 4)} at epoch ${first[0]} to ${fmtNum(last[1], 4)} at epoch ${last[0]}${
          extreme}`;
    });
  return `${title} per epoch: ${curves.length ? curves.join("; ") : "no epochs yet"}`;
}

// A phone turned or a window resized changes the width a chart is shown at: each shown chart is drawn again at it
// (once the resizing pauses, and when a hidden tab is shown), or its text would be scaled as it was when the width
// differed.
function redrawCharts() {
  for (const svg of document.querySelectorAll("svg.chart")) {
    if (svg.drawn && svg.getBoundingClientRect().width) lineChart(svg, ...svg.drawn);
  }
}
let redrawTimer = null;
window.addEventListener("resize", () => {
  clearTimeout(redrawTimer);
  redrawTimer = setTimeout(redrawCharts, 150);
});

function curveSeries(rows, key, name, color, dash) {
  return {name, color, dash, points: rows.map((r) => [r.epoch, r[key]]).filter((p) => p[1] !== null)};
}

// named: the legend names each run (Compare, even with one run ticked; a run's own page needs no name).
function drawRunCharts(accSvg, lossSvg, runs, named = false) {
  const acc = [], loss = [];
  runs.forEach((r, i) => {
    const c = COLORS[i % COLORS.length], tag = named || runs.length > 1 ? r.name + " " : "";
    acc.push(curveSeries(r.metrics, "val_acc", tag + "val acc", c));
    acc.push(curveSeries(r.metrics, "train_acc", tag + "train acc", c, "4 3"));
    loss.push(curveSeries(r.metrics, "train_loss", tag + "train loss", c, "4 3"));
    loss.push(curveSeries(r.metrics, "val_loss", tag + "val loss", c));
  });
  lineChart(accSvg, "accuracy", acc);
  lineChart(lossSvg, "loss", loss);
}

// -------------------------------------------------------------------------------------------------- runs tab
async function loadRuns() {
  const body = await api("/api/runs");
  const ticked = new Set([...document.querySelectorAll(".compare-box:checked")].map((b) => b.dataset.run));
  state.runs = body.runs;
  $("root").textContent = body.root;
  const tbody = $("runs-table").querySelector("tbody");
  tbody.replaceChildren();
  const errors = $("runs-errors");
  errors.replaceChildren();
  for (const r of body.runs) {
    const open = el("a", {href: "#run", class: "run-link", "data-run": r.run, text: r.title,
      onclick: (e) => { e.preventDefault(); openRun(r.run); }});
    if (r.error) {
      errors.append(el("div", {class: "error-card", "data-run": r.run}, el("b", {text: r.title + ": "}), r.error));
      continue;
    }
    const box = el("input", {type: "checkbox", class: "compare-box", "data-run": r.run, onchange: compare,
      "aria-label": "compare " + r.title});
    tbody.append(el("tr", {"data-run": r.run}, el("td", {}, el("label", {class: "tick"}, box)),
      el("td", {}, open), el("td", {text: r.model}),
      el("td", {text: r.dataset}), el("td", {text: r.recipe}), el("td", {class: "num", text: accuracyCell(r)}),
      el("td", {class: "num", text: r.images_per_s ? Math.round(r.images_per_s).toLocaleString("en") : "—"}),
      el("td", {text: (r.date || "").replace("T", " ").slice(0, 16)}),
      el("td", {}, el("span", {class: "badge " + r.status, text: r.status === "training"
        ? `training (epoch ${r.epochs}${r.planned_epochs ? "/" + r.planned_epochs : ""})` : r.status}))));
  }
  if (!body.runs.length) tbody.append(el("tr", {}, el("td", {colspan: 9, text: "No run folders here yet."})));
  for (const box of document.querySelectorAll(".compare-box")) box.checked = ticked.has(box.dataset.run);
  if (ticked.size) compare();  // the ticked runs' curves as they are now (a run gone since is named there)
}

// The table follows the folder while it is looked at: new runs appear, live ones move on (one listing a while).
const RUNS_REFRESH_MS = 15000;
function refreshRuns() {
  const onRuns = (location.hash.slice(1) || "runs") === "runs";
  if (onRuns && document.visibilityState === "visible") loadRuns().catch((e) => errorCard($("runs-errors"), e.message));
}

let compareCalls = 0;
async function compare() {
  const call = ++compareCalls;
  const names = [...document.querySelectorAll(".compare-box:checked")].map((b) => b.dataset.run);
  $("compare").hidden = names.length === 0;
  if (!names.length) return;
  // one run that cannot be read (deleted since the page loaded) is named; the others are still drawn
  const runs = await Promise.all(names.map(async (n) => {
    try { return {name: n, ...(await api("/api/metrics?run=" + encodeURIComponent(n)))}; } catch (e) {
      return {name: n, metrics: [], error: e.message};
    }
  }));
  if (call !== compareCalls) return;  // the ticks changed while these loaded: a newer call draws
  drawRunCharts($("compare-acc"), $("compare-loss"), runs.filter((r) => !r.error), true);
  const figures = $("compare-figures");
  figures.replaceChildren();
  for (const r of runs) {
    const row = state.runs.find((x) => x.run === r.name);
    figures.append(el("figure", {}, r.error ? el("p", {class: "error-card", text: r.error})
      : row && row.figures.includes("curves.png")
        ? el("img", {src: `/api/figure?run=${encodeURIComponent(r.name)}&name=curves.png`, alt: "curves of " + r.name})
        : el("p", {class: "muted", text: "no curves.png yet"}), el("figcaption", {text: r.name})));
  }
}

// --------------------------------------------------------------------------------------------------- run tab
// refresh: the same run again once it finished training, in place (the tab, the result and the gallery stay).
async function openRun(name, refresh = false) {
  state.run = name;
  if (!refresh) {
    location.hash = "run";
    showTab("run");  // now, not at the hashchange event: the heading below takes the focus
    $("run-empty").hidden = true;
    $("run-view").hidden = false;
    $("result-card").hidden = true;
    // the runs table, and the link that opened this, are hidden now: the focus goes to the run's heading
    $("run-title").textContent = name;
    $("run-title").focus();
    state.ops = null;  // the ops tab's test image and learned kernels are this run's now
    for (const id of ["run-error", "model-error", "gallery-error"]) errorCard($(id), "");
  }
  if (state.stream) { state.stream.close(); state.stream = null; }
  let d;
  try { d = await api("/api/run?run=" + encodeURIComponent(name)); } catch (e) {
    if (state.run !== name) return;
    // nothing of the run shown before may stay under this one's name
    $("run-title").textContent = name;
    $("run-stats").replaceChildren();
    drawRunCharts($("run-acc"), $("run-loss"), []);
    $("input-card").hidden = $("model-card").hidden = true;
    errorCard($("run-error"), e.message);
    return;
  }
  if (state.run !== name) return;  // another run was opened while this one loaded
  state.detail = d;
  $("run-title").textContent = d.title;
  if (d.error) {
    errorCard($("run-error"), d.error);
    $("input-card").hidden = $("model-card").hidden = true;
    return;
  }
  const stat = (value, label) => el("div", {class: "stat"}, el("b", {text: value}), el("span", {text: label}));
  // a run that held out no test split (--test-split 0) heads with its validation accuracy, said so; one that held
  // out nothing (no --val-split either) with its training accuracy
  const accuracy = d.nothing_held_out ? stat(pct(d.train_acc), "training accuracy (nothing held out)")
    : d.test_split === 0 ? stat(pct(d.val_acc), "validation accuracy (no test split)")
      : stat(pct(d.test_acc), "test accuracy");
  $("run-stats").replaceChildren(stat(d.model || "—", "model"), stat(d.dataset || "—", "dataset"), accuracy,
    stat(d.images_per_s ? Math.round(d.images_per_s).toLocaleString("en") : "—", "images/s"),
    stat(d.status, "status"));
  drawRunCharts($("run-acc"), $("run-loss"), [{name, metrics: d.metrics}]);
  if (d.status === "training") follow(name);
  const info = d.model_info;
  $("input-card").hidden = $("model-card").hidden = !info;
  if (!info) { errorCard($("run-error"), d.model_error || "this run has no checkpoint yet"); return; }
  showModel(info);
  if (!refresh || !$("gallery").children.length) loadGallery(name, info);  // (opened before its first checkpoint)
}

// Live curves: server-sent events whenever metrics.csv changes (the training loop does nothing extra).
function follow(name) {
  const source = new EventSource("/api/stream?run=" + encodeURIComponent(name));
  state.stream = source;
  source.addEventListener("metrics", (e) => {
    if (state.run !== name) return;
    state.detail.metrics = JSON.parse(e.data).metrics;
    drawRunCharts($("run-acc"), $("run-loss"), [{name, metrics: state.detail.metrics}]);
  });
  source.addEventListener("done", () => { source.close(); if (state.run === name) openRun(name, true); });
  source.addEventListener("failure", (e) => { source.close(); errorCard($("run-error"), JSON.parse(e.data).error); });
}

function showModel(info) {
  $("kernels").replaceChildren(...info.kernels.map((k, i) => el("img", {src: k.png, class: "kernel",
    title: `kernel ${i}: ${k.shape.join("×")}`, alt: `kernel ${i}`})));
  const tbody = $("layers-table").querySelector("tbody");
  tbody.replaceChildren(...info.layers.map((r) => el("tr", {}, el("td", {}, el("code", {text: r.name})),
    el("td", {text: r.type}), el("td", {class: "num", text: r.shape.join(" × ")}),
    el("td", {class: "num", text: r.params.toLocaleString("en")}),
    el("td", {class: "num", text: r.macs.toLocaleString("en")}))));
  tbody.append(el("tr", {}, el("td", {}, el("b", {text: "total"})), el("td"), el("td"),
    el("td", {class: "num", text: info.params.toLocaleString("en")}),
    el("td", {class: "num", text: info.layers.reduce((a, r) => a + r.macs, 0).toLocaleString("en")})));
}

async function loadGallery(name, info) {
  const select = $("class-select");
  select.replaceChildren(...info.classes.map((c, i) => el("option", {value: i, text: c})));
  let g;
  try { g = await api("/api/gallery?run=" + encodeURIComponent(name)); } catch (e) {
    if (state.run !== name) return;
    errorCard($("gallery-error"), "Test images: " + e.message + " (uploads and drawings still work)");
    $("gallery").replaceChildren(); $("mistakes").replaceChildren();
    return;
  }
  if (state.run !== name) return;  // a slower gallery of a run left behind must not replace this one's
  if (g.note) {  // a run that held out nothing: no image it never saw to show
    $("gallery").replaceChildren(el("p", {text: g.note + " (uploads and drawings still work)."}));
    $("mistakes-note").textContent = "";
    $("mistakes").replaceChildren();
    return;
  }
  const thumb = (item, title) => pickable(el("img", {src: item.png, alt: title, title, class: "thumb",
    "data-index": item.index}), () => analyzeTest(item.index));
  const showClass = async () => {
    const chosen = Number(select.value);
    const group = g.by_class[chosen] || {images: []};
    if (group.later) {  // a run of many classes: each class's pictures come when it is shown
      try {
        group.images = (await api(`/api/gallery?run=${encodeURIComponent(name)}&class=${chosen}`)).images;
        group.later = false;
      } catch (e) {
        errorCard($("gallery-error"), "Test images: " + e.message + " (uploads and drawings still work)");
        return;
      }
      if (state.run !== name || Number(select.value) !== chosen) return;  // another class or run chosen since
    }
    $("gallery").replaceChildren(...group.images.map((it) => thumb(it, `${g.split} #${it.index}: ${it.label}`)));
  };
  select.onchange = showClass;
  showClass();
  const among = g.searched < g.of ? `a sample of ${g.searched.toLocaleString("en")} of the ` +
    `${g.of.toLocaleString("en")} ${g.split} images` : `the ${g.searched.toLocaleString("en")} ${g.split} images`;
  $("mistakes-note").textContent = `Among ${among} (accuracy there ${pct(g.accuracy)}); under each: the predicted ` +
    `class and its probability.`;
  $("mistakes").replaceChildren(...g.mistakes.map((it) => el("figure", {class: "mistake"},
    thumb(it, `${g.split} #${it.index}: predicted ${it.predicted} (${pct(it.confidence)}), truly ${it.label}`),
    el("figcaption", {text: `${it.predicted} ${pct(it.confidence)}`}))));
}

async function analyzeTest(index) {
  state.testIndex = index;
  state.blob = null;
  state.ops = null;  // the ops tab's "chosen test image" is this one now
  for (const img of document.querySelectorAll(".thumbs img.thumb")) {
    img.classList.toggle("chosen", Number(img.dataset.index) === index);
  }
  await showResult(api(`/api/analyze?run=${encodeURIComponent(state.run)}&index=${index}`));
}

async function analyzeBlob(blob) {
  state.blob = blob;  // ticking "invert" afterwards answers for this input again
  for (const img of document.querySelectorAll(".thumbs img.thumb.chosen")) img.classList.remove("chosen");
  const invert = $("invert").checked ? 1 : 0;
  await showResult(api(`/api/analyze?run=${encodeURIComponent(state.run)}&invert=${invert}`,
    {method: "POST", body: blob, headers: {"Content-Type": "application/octet-stream"}}));
}

async function showResult(pending) {
  const shown = showAnswer(pending, renderAnswer);
  $("result-card").scrollIntoView({block: "nearest"});  // below the fold otherwise: nothing would seem to happen
  await shown;
}

function renderAnswer(r) {
  $("result-input").src = r.input;
  $("result-label").textContent = r.label ? "true class: " + r.label : "";
  $("top-table").querySelector("tbody").replaceChildren(...r.top.map((t) => el("tr", {class: "top"},
    el("td", {text: t.class}), el("td", {class: "num", text: pct(t.probability)}),
    el("td", {class: "bar"}, el("span", {style: `width:${(100 * t.probability).toFixed(1)}%`})))));
  const x = r.explanation;
  for (const id of ["gradcam", "saliency"]) $(id).parentElement.hidden = !x;
  if (x) {
    $("gradcam").src = x.gradcam; $("saliency").src = x.saliency;
    $("gradcam-target").textContent = x.target; $("gradcam-row").textContent = x.row;
    $("gradcam-empty").textContent = x.empty ? " (zero everywhere: no channel there speaks for this class)" : "";
  }
  $("maps").replaceChildren(...r.rows.filter((row) => row.maps.length).map((row) => el("div", {class: "maprow"},
    el("div", {class: "label", text: `${row.name} ${row.kind} ${row.shape.join("×")}`}),
    ...row.maps.map((m) => el("img", {src: m.png, class: "map", title: "channel " + m.channel,
      alt: `${row.name} channel ${m.channel}`})))));
}

function setupDrawing() {
  $("invert").addEventListener("change", () => { if (state.blob) analyzeBlob(state.blob); });
  const canvas = $("draw"), ctx = canvas.getContext("2d");
  const clear = () => { ctx.fillStyle = "#000"; ctx.fillRect(0, 0, canvas.width, canvas.height); };
  clear();
  let drawing = false;
  const at = (e) => { const b = canvas.getBoundingClientRect(); return [e.clientX - b.left, e.clientY - b.top]; };
  canvas.addEventListener("pointerdown", (e) => { drawing = true; ctx.beginPath(); ctx.moveTo(...at(e)); });
  canvas.addEventListener("pointermove", (e) => {
    if (!drawing) return;
    ctx.strokeStyle = "#fff"; ctx.lineWidth = 18; ctx.lineCap = ctx.lineJoin = "round";
    ctx.lineTo(...at(e)); ctx.stroke();
  });
  for (const ev of ["pointerup", "pointerleave"]) canvas.addEventListener(ev, () => { drawing = false; });
  $("draw-clear").onclick = clear;
  $("draw-go").onclick = () => canvas.toBlob((blob) => analyzeBlob(blob), "image/png");
  $("upload").onchange = (e) => { if (e.target.files.length) analyzeBlob(e.target.files[0]); };
}

// --------------------------------------------------------------------------------------------------- ops tab
function opsQuery() {
  const q = new URLSearchParams();
  for (const key of ["op", "input", "kernel", "pool", "padding", "stride", "unit"]) q.set(key, $("ops-" + key).value);
  q.set("x", $("ops-x").value); q.set("k", $("ops-k").value);
  if (state.run) { q.set("run", state.run); q.set("index", state.testIndex); }
  return q;
}

function syncOpsControls() {
  const op = $("ops-op").value;
  $("ops-kernel-label").hidden = $("ops-kernel-box").hidden = op !== "corr";
  $("ops-pool-label").hidden = op === "corr";
  $("ops-x").hidden = $("ops-input").value !== "custom";
  $("ops-k").hidden = op !== "corr" || $("ops-kernel").value !== "custom";
  $("ops-unit-label").hidden = op !== "corr" || $("ops-kernel").value !== "learned";
}

function runOps() {
  state.opsPending = loadOps();  // Step and To the end wait for it: a click right after typing acts on the new data
  return state.opsPending;
}

async function loadOps() {
  syncOpsControls();
  stopPlay();
  errorCard($("ops-error"), "");
  const needsRun = $("ops-input").value === "test" ||
    ($("ops-op").value === "corr" && $("ops-kernel").value === "learned");
  const clear = () => {
    state.ops = null;
    for (const id of ["ops-grid-x", "ops-grid-k", "ops-grid-y"]) $(id).replaceChildren();
    for (const id of ["ops-result", "ops-formula", "ops-now", "ops-progress"]) $(id).textContent = "";
  };
  const blank = (id) => !$(id).hidden && !$(id).value.trim();
  if (blank("ops-x") || blank("ops-k")) {  // just chosen "your numbers": nothing typed yet is no error
    clear();
    $("ops-now").textContent = "Type your numbers: rows separated by ; (0 1 2; 3 4 5), then press Enter.";
    return;
  }
  try {
    if (needsRun && !state.run) throw new Error("open a run first (its test image and first-layer kernels are used)");
    state.ops = await api("/api/ops?" + opsQuery().toString());
  } catch (e) {
    clear();
    errorCard($("ops-error"), e.message);
    return;
  }
  state.step = 0;
  drawOps();
}

function grid(id, rows, cls) {
  const wide = rows.length && rows[0].length > 12;
  const table = el("table", {class: "grid" + (wide ? " small" : ""), id: id + "-table"});
  let lo = Infinity, hi = -Infinity;
  for (const r of rows) for (const v of r) if (Number.isFinite(v)) { lo = Math.min(lo, v); hi = Math.max(hi, v); }
  rows.forEach((r, i) => table.append(el("tr", {}, ...r.map((v, j) => {
    const cell = el("td", {"data-i": i, "data-j": j, text: v === undefined ? "" : fmtNum(v, 2)});
    if (cls) cls(cell, i, j);
    if (wide && Number.isFinite(v) && hi > lo) {
      const g = Math.round(255 * (v - lo) / (hi - lo));
      cell.style.background = `rgb(${g},${g},${g})`;
    }
    return cell;
  }))));
  return table;
}

// The output grid is one tab stop, however many cells it has (a roving tabindex, as in WAI-ARIA's grid pattern):
// Tab reaches the picked or newest cell, the arrow keys move among the computed ones, Enter or Space picks one.
// A pick redraws the grid, so the focus moves on to the new picked cell when the grid held it.
function rovingFocus(table, shown, at, hadFocus, pick) {
  const cell = (i, j) => shown.has(i + "," + j) ? table.querySelector(`td[data-i="${i}"][data-j="${j}"]`) : null;
  const active = at && cell(at[0], at[1]);
  if (!active) return;
  active.tabIndex = 0;
  if (hadFocus) active.focus();
  const moves = {ArrowUp: [-1, 0], ArrowDown: [1, 0], ArrowLeft: [0, -1], ArrowRight: [0, 1]};
  table.addEventListener("keydown", (e) => {
    const td = e.target.closest("td[role=button]");
    if (!td) return;
    const i = +td.dataset.i, j = +td.dataset.j;
    if (e.key === "Enter" || e.key === " ") { e.preventDefault(); pick(i, j); return; }
    if (!(e.key in moves)) return;
    e.preventDefault();
    const next = cell(i + moves[e.key][0], j + moves[e.key][1]);
    if (next) { td.tabIndex = -1; next.tabIndex = 0; next.focus(); }
  });
}

function drawOps(picked) {
  const o = state.ops;
  const [kh, kw] = o.window, p = o.padding;
  const H = o.input.length + 2 * p, W = o.input[0].length + 2 * p;
  const padValue = o.op === "max" ? -Infinity : 0;
  const padded = Array.from({length: H}, (_, i) => Array.from({length: W}, (_, j) => {
    const a = i - p, b = j - p;
    return a >= 0 && b >= 0 && a < o.input.length && b < o.input[0].length ? o.input[a][b] : padValue;
  }));
  const current = o.steps[Math.min(state.step, o.steps.length) - 1];
  const focus = picked || current;
  $("ops-grid-x").replaceChildren(grid("ops-x", padded, (cell, i, j) => {
    if (i < p || j < p || i >= H - p || j >= W - p) cell.classList.add("pad");
    if (focus && i >= focus[2] && i < focus[2] + kh && j >= focus[3] && j < focus[3] + kw) {
      cell.classList.add(picked ? "field" : "win");
    }
  }));
  if (o.kernel) $("ops-grid-k").replaceChildren(grid("ops-k", o.kernel));
  const shown = new Set(o.steps.slice(0, state.step).map((s) => s[0] + "," + s[1]));
  const out = o.output.map((r, i) => r.map((v, j) => shown.has(i + "," + j) ? v : undefined));
  const pick = (i, j) => drawOps(o.steps.find((s) => s[0] === i && s[1] === j));
  const hadFocus = $("ops-grid-y").contains(document.activeElement);
  const table = grid("ops-y", out, (cell, i, j) => {
    if (current && current[0] === i && current[1] === j && !picked) cell.classList.add("now");
    if (picked && picked[0] === i && picked[1] === j) cell.classList.add("picked");
    if (!shown.has(i + "," + j)) return;
    cell.classList.add("done");
    cell.addEventListener("click", () => pick(i, j));
    cell.tabIndex = -1;  // rovingFocus makes one cell the tab stop
    cell.setAttribute("role", "button");
    cell.setAttribute("aria-label", `Y[${i}, ${j}] = ${cell.textContent}: show its receptive field`);
  });
  $("ops-grid-y").replaceChildren(table);
  rovingFocus(table, shown, picked || current, hadFocus, pick);
  $("ops-formula").textContent = o.formula.join("; ");
  $("ops-progress").textContent = `step ${Math.min(state.step, o.steps.length)} of ${o.steps.length}`;
  const name = {corr: "sum of window ⊙ kernel", max: "maximum of the window", avg: "mean of the window"}[o.op];
  if (picked) {
    const [i, j, top, left] = picked;
    $("ops-now").textContent = `Y[${i}, ${j}] sees input rows ${top - p}…${top - p + kh - 1}` +
      `, columns ${left - p}…${left - p + kw - 1} (padded: green): its receptive field, ${kh}×${kw}.`;
  } else {
    $("ops-now").textContent = current ? `Y[${current[0]}, ${current[1]}] = ${name} = ` +
      fmtNum(o.output[current[0]][current[1]], 4) : "Press Step to slide the window.";
  }
  const complete = state.step >= o.steps.length;
  $("ops-result").textContent = complete ? "[" + o.output.map((r) => "[" + r.map((v) => fmtNum(v, 4)).join(", ") +
    "]").join(", ") + "]" : "";
  $("ops-result").dataset.complete = complete ? "true" : "false";
}

// What a step computes is said as it is shown (#ops-now is a live region), except while playing: a screen reader
// would queue a sentence every 350 ms and lag behind the grid.
function stopPlay() {
  if (state.timer) { clearInterval(state.timer); state.timer = null; }
  $("ops-now").setAttribute("aria-live", "polite");
}
function step(n) {
  if (!state.ops) return;
  state.step = Math.min(state.step + n, state.ops.steps.length);
  drawOps();
  if (state.step >= state.ops.steps.length) stopPlay();
}

function setupOps() {
  for (const id of ["ops-op", "ops-input", "ops-kernel", "ops-pool", "ops-padding", "ops-stride", "ops-unit"]) {
    $(id).addEventListener("change", runOps);
  }
  for (const id of ["ops-x", "ops-k"]) $(id).addEventListener("change", runOps);
  $("ops-step").onclick = async () => { await state.opsPending; stopPlay(); step(1); };
  $("ops-end").onclick = async () => { await state.opsPending; stopPlay(); step(Infinity); };
  $("ops-reset").onclick = async () => { await state.opsPending; stopPlay(); state.step = 0; if (state.ops) drawOps(); };
  $("ops-play").onclick = async () => {
    await state.opsPending;
    stopPlay();
    if (state.ops && state.step >= state.ops.steps.length) state.step = 0;
    const n = state.ops ? Math.max(1, Math.ceil(state.ops.steps.length / 120)) : 1;
    $("ops-now").setAttribute("aria-live", "off");
    state.timer = setInterval(() => step(n), 350 / Math.min(n, 4));
  };
}

// ------------------------------------------------------------------------------------------------------ start
window.addEventListener("DOMContentLoaded", async () => {
  setupDrawing();
  setupOps();
  showTab(location.hash.slice(1) || "runs");
  try { await loadRuns(); } catch (e) { errorCard($("runs-errors"), e.message); }
  setInterval(refreshRuns, RUNS_REFRESH_MS);
  document.body.dataset.ready = "true";
});
