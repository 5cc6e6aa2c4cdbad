"""The page ``labtf serve`` shows at ``/``: pick or drop an image, see label,
confidence and the CAM overlay. Self-contained HTML + JS (no CDN); it calls the
same ``:predict`` and ``/metadata`` endpoints as any client."""
from __future__ import annotations

import html
import json

_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>labtf: __TITLE__</title>
<style>
 [hidden]{display:none !important}
 body{font-family:system-ui,sans-serif;margin:2rem auto;max-width:46rem;color:#222;padding:0 1rem}
 #drop{border:2px dashed #888;border-radius:8px;padding:1.5rem;text-align:center;cursor:pointer}
 #drop.over{background:#eef5ff;border-color:#36c}
 #out{display:flex;gap:1.5rem;margin-top:1.5rem;align-items:flex-start;flex-wrap:wrap}
 #out>div{flex:1;min-width:14rem} canvas{border:1px solid #ccc;max-width:100%}
 #label{font-size:1.6rem;font-weight:600} #error{color:#b00020} table{border-collapse:collapse}
 td{padding:.1rem .6rem .1rem 0} .muted{color:#666;font-size:.9rem}
</style></head><body>
<h1>labtf &middot; <span id="model">__TITLE__</span></h1>
<p class="muted" id="status">loading model metadata...</p>
<div id="drop">Drop an image here, or <label><u>choose a file</u>
 <input type="file" id="file" accept="image/*" hidden></label></div>
<p class="muted" id="filename" hidden></p>
<div id="error"></div>
<div id="out" hidden>
 <canvas id="view" width="320" height="320"></canvas>
 <div><div id="label"></div><div>confidence <b id="confidence"></b></div>
 <table id="top"></table><p class="muted">heat map: class activation map of the top class
 (red = most evidence), computed by the model itself.</p></div></div>
<script>
"use strict";
const MODEL = __NAME__, VERSION = __VERSION__;
const base = "/v1/models/" + encodeURIComponent(MODEL) + "/versions/" + VERSION;
let meta = {image_size: 224, resize: "crop", classes: null};
const $ = (id) => document.getElementById(id);
fetch(base + "/metadata").then(r => r.json()).then(m => {
  if (m.labtf) meta = m.labtf;
  $("status").textContent = "model " + MODEL + " v" + VERSION + ": " +
    (meta.classes ? meta.classes.length + " classes, " : "") + meta.image_size + " px, " + meta.resize;
  document.body.dataset.state = "ready";
}).catch(e => { $("status").textContent = "metadata failed: " + e; });

function jet(v) {
  const c = (x) => Math.max(0, Math.min(1, x));
  return [c(1.5 - Math.abs(4 * v - 3)), c(1.5 - Math.abs(4 * v - 2)), c(1.5 - Math.abs(4 * v - 1))]
    .map(x => Math.round(255 * x));
}

function draw(img, cam) {
  const cv = $("view"), ctx = cv.getContext("2d"), S = cv.width;
  const w = img.naturalWidth, h = img.naturalHeight;
  ctx.globalAlpha = 1; ctx.fillStyle = "#fff"; ctx.fillRect(0, 0, S, S);
  if (meta.resize === "squash") ctx.drawImage(img, 0, 0, S, S);
  else if (meta.resize === "pad") {
    const k = S / Math.max(w, h);
    ctx.drawImage(img, (S - w * k) / 2, (S - h * k) / 2, w * k, h * k);
  } else {
    const s = Math.min(w, h);
    ctx.drawImage(img, (w - s) / 2, (h - s) / 2, s, s, 0, 0, S, S);
  }
  const ch = cam.length, cw = cam[0].length;
  const small = document.createElement("canvas"); small.width = cw; small.height = ch;
  const sctx = small.getContext("2d"), data = sctx.createImageData(cw, ch);
  for (let y = 0; y < ch; y++) for (let x = 0; x < cw; x++) {
    const [r, g, b] = jet(cam[y][x]), i = 4 * (y * cw + x);
    data.data[i] = r; data.data[i + 1] = g; data.data[i + 2] = b; data.data[i + 3] = 255;
  }
  sctx.putImageData(data, 0, 0);
  ctx.imageSmoothingEnabled = true; ctx.imageSmoothingQuality = "high";
  ctx.globalAlpha = 0.45; ctx.drawImage(small, 0, 0, S, S); ctx.globalAlpha = 1;
}

function clearResult() {
  $("out").hidden = true;
  $("label").textContent = ""; $("confidence").textContent = ""; $("top").innerHTML = "";
  const cv = $("view"); cv.getContext("2d").clearRect(0, 0, cv.width, cv.height);
}

async function predict(file) {
  $("error").textContent = ""; clearResult(); document.body.dataset.state = "busy";
  $("filename").textContent = file.name + " (" + Math.max(1, Math.round(file.size / 1024)) + " KB)";
  $("filename").hidden = false;
  try {
    const url = await new Promise((ok, bad) => {
      const r = new FileReader(); r.onload = () => ok(r.result); r.onerror = () => bad(r.error);
      r.readAsDataURL(file);
    });
    const b64 = url.slice(url.indexOf(",") + 1);
    const resp = await fetch(base + ":predict", {method: "POST",
      headers: {"Content-Type": "application/json"},
      body: JSON.stringify({instances: [{image_bytes: {b64: b64}}]})});
    const out = await resp.json();
    if (!resp.ok) throw new Error(out.error || ("HTTP " + resp.status));
    const p = out.predictions[0];
    $("label").textContent = p.label;
    $("confidence").textContent = (100 * p.probabilities[p.class_index]).toFixed(1) + "%";
    const order = p.probabilities.map((v, i) => [v, i]).sort((a, b) => b[0] - a[0]).slice(0, 5);
    $("top").innerHTML = "";
    for (const [v, i] of order) {
      const tr = $("top").insertRow(), name = meta.classes ? meta.classes[i] : "#" + i;
      tr.insertCell().textContent = name; tr.insertCell().textContent = (100 * v).toFixed(1) + "%";
    }
    $("out").hidden = false;
    const img = new Image(); img.src = url;
    try { await img.decode(); draw(img, p.cam); }
    catch (e) { $("error").textContent = "the browser cannot show this image: " + e; }
    document.body.dataset.state = "done";
  } catch (e) {
    $("error").textContent = String(e.message || e); document.body.dataset.state = "error";
  }
}

$("file").addEventListener("change", (e) => { if (e.target.files.length) predict(e.target.files[0]); });
const drop = $("drop");
drop.addEventListener("click", (e) => { if (e.target === drop) $("file").click(); });
drop.addEventListener("dragover", (e) => { e.preventDefault(); drop.classList.add("over"); });
drop.addEventListener("dragleave", () => drop.classList.remove("over"));
drop.addEventListener("drop", (e) => {
  e.preventDefault(); drop.classList.remove("over");
  if (e.dataTransfer.files.length) predict(e.dataTransfer.files[0]);
});
</script></body></html>
"""


def page_html(name: str, version: int) -> str:
    """The page for model ``name`` version ``version``."""
    js_name = json.dumps(name).replace("<", "\\u003c")
    return (_PAGE.replace("__TITLE__", html.escape(name)).replace("__NAME__", js_name)
            .replace("__VERSION__", str(int(version))))
