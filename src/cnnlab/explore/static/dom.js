// cnnlab explore: the DOM and API helpers both pages use (index.html with app.js, model.html with model.js,
// and the saved page, which inlines this file before model.js).
"use strict";

function el(tag, attrs = {}, ...children) {
  const node = tag === "svg" || attrs.svg ? document.createElementNS("http://www.w3.org/2000/svg", tag)
    : document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k === "svg" || v === undefined || v === null) continue;
    if (k === "text") node.textContent = v;
    else if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
    else node.setAttribute(k, v);
  }
  for (const c of children) node.append(c);
  return node;
}
const $ = (id) => document.getElementById(id);
// An output's shape for one image as the page writes it: "2 x 16 x 16"; none (a mean over everything) as a number
const shapeText = (shape) => shape.join(" x ") || "one number";
// A legend's entry as the page writes it beside a picture and the status line says it: a class's share of a map's
// pixels as a percentage, a detector's box with its score as the model gives it (a score is no share of anything)
const legendText = (c) => c.score === undefined ? `${c.name} ${(100 * c.share).toFixed(1)}%`
  : `${c.name} ${c.score.toFixed(2)}`;

async function api(path, options) {
  const response = await fetch(path, options);
  let body;
  try { body = await response.json(); } catch (e) { body = {error: `the server answered ${response.status}`}; }
  if (!response.ok) throw new Error(body.error || `the server answered ${response.status}`);
  return body;
}

// A picture or cell the user picks: reachable with Tab and chosen with Enter or Space, as a button is.
function pickable(node, onPick) {
  node.setAttribute("tabindex", "0");
  node.setAttribute("role", "button");
  node.addEventListener("click", onPick);
  node.addEventListener("keydown", (e) => {
    if (e.key === "Enter" || e.key === " ") { e.preventDefault(); onPick(); }
  });
  return node;
}

// The result card of either page: no earlier answer stays under a new input's heading, while waiting or after an
// error; render(r) fills the card's body once the answer has come.
async function showAnswer(pending, render) {
  const card = $("result-card");
  card.hidden = false;
  card.classList.remove("ready");
  errorCard($("result-error"), "");
  $("result-body").hidden = true;
  $("result-source").textContent = "…";
  $("result-status").textContent = "";
  let r;
  try { r = await pending; } catch (e) {
    $("result-source").textContent = "this input";
    errorCard($("result-error"), e.message);
    return;
  }
  $("result-body").hidden = false;
  $("result-source").textContent = r.source;
  render(r);
  // A screen reader hears the answer where the eye sees it appear, in the status region: the top classes, or what a
  // network that is no classifier returns (each output's shape; a segmentation's three largest classes by pixels, a
  // detector's three highest-scoring boxes)
  const share = (name, p) => p === null ? name : `${name} ${(100 * p).toFixed(1)}%`;
  $("result-status").textContent = `What the network makes of ${r.source}: ` + (r.top.length
    ? r.top.map((t) => share(t.class, t.probability)).join(", ")
    : (r.outputs || []).map((o) => `${o.name}, ${shapeText(o.shape)}` + (o.legend || o.detected
      ? ` (${(o.legend || o.detected).slice(0, 3).map(legendText).join(", ")})`
      : "")).join("; "));
  card.classList.add("ready");
}

// role=alert: a screen reader says the error when it appears, wherever the focus is; the same error shown again
// (the runs table's refresh every 15 s while the server is down) stays as it is, said once
function errorCard(container, message) {
  const shown = container.querySelector(".error-card");
  if (message && shown && shown.textContent === message) return;
  container.replaceChildren(message ? el("div", {class: "error-card", role: "alert", text: message}) : "");
}
