// labtf web app: classify a photo on this device with LiteRT.js and show the class
// activation map (the model's `cam` output) over it. Everything is served from this
// origin and cached by sw.js; the CSP forbids any other host.
import {rgbaToRgb, toSquare} from './preprocess.js';

const $ = (id) => document.getElementById(id);
const HISTORY_MAX = 20;
const VIEW = 448;           // display canvas side (px)
const ALPHA = 0.45;         // overlay opacity, as labtf's Python overlays

// State the page exposes for tests and curious users (window.labtf).
const state = {ready: false, error: null, count: 0, last: null, offlineReady: false,
               violations: [], config: null, loadMs: null};
window.labtf = state;

document.addEventListener('securitypolicyviolation', (e) => {
  state.violations.push(`${e.violatedDirective} ${e.blockedURI}`);
});

function showError(message) {
  state.error = message;
  const box = $('error');
  box.textContent = message;
  box.hidden = false;
}

function clearError() {
  $('error').hidden = true;
}

function setStatus(text) {
  $('status').textContent = text;
}

function unsupported() {
  if (typeof WebAssembly !== 'object') return 'WebAssembly is not available';
  if (typeof createImageBitmap !== 'function') return 'createImageBitmap is missing';
  if (!document.createElement('canvas').getContext) return 'canvas is missing';
  return null;
}

let model = null;
let Tensor = null;

async function loadModel() {
  const t0 = performance.now();
  const resp = await fetch('model.json');
  if (!resp.ok) throw new Error(`model.json: HTTP ${resp.status}`);
  const config = await resp.json();
  state.config = config;
  $('title').textContent = config.name;
  document.title = `labtf: ${config.name}`;
  const litert = await import('./litert/litert.js');
  Tensor = litert.Tensor;
  await litert.loadLiteRt('./litert/');
  model = await litert.loadAndCompile('./model.tflite', {accelerator: 'wasm'});
  const input = model.getInputDetails()[0];
  const size = config.image_size;
  const shape = Array.from(input.shape);
  if (shape.join() !== [1, size, size, 3].join() || input.dtype !== 'float32') {
    throw new Error(`model input is ${input.dtype} [${shape}], expected float32 [1,${size},${size},3]`);
  }
  const names = model.getOutputDetails().map((d) => d.name);
  for (const need of ['probabilities', 'cam']) {
    if (!names.includes(need)) throw new Error(`model has no '${need}' output (has ${names})`);
  }
  state.loadMs = performance.now() - t0;
  return config;
}

/** Run the model on square RGB pixels; returns probabilities, the [0,1] CAM and timing. */
async function infer(pixels, size) {
  const x = new Float32Array(pixels.length);
  for (let i = 0; i < pixels.length; i++) x[i] = pixels[i];
  const input = new Tensor(x, [1, size, size, 3]);
  const t0 = performance.now();
  const out = await model.run({image: input});
  const ms = performance.now() - t0;
  input.delete();
  const probs = Array.from(await out.probabilities.data());
  const camT = out.cam;
  const dims = Array.from(camT.type.layout.dimensions);
  const raw = await camT.data();
  out.probabilities.delete();
  camT.delete();
  const cam = Float32Array.from(raw, (v) => Math.max(v, 0));
  let peak = 0;
  for (const v of cam) peak = Math.max(peak, v);
  for (let i = 0; i < cam.length; i++) cam[i] = peak > 0 ? cam[i] / peak : 0;
  return {probs, cam: Array.from(cam), camShape: dims.slice(-2), ms};
}

/** Decode a File/Blob to RGB (EXIF orientation applied, no colour management, alpha on white). */
async function decode(blob) {
  let bitmap;
  try {
    bitmap = await createImageBitmap(blob, {imageOrientation: 'from-image',
                                            premultiplyAlpha: 'none', colorSpaceConversion: 'none'});
  } catch (e) {
    const name = blob.name || 'the file';
    throw new Error(`${name} is not an image this browser can read; choose a JPEG or PNG photo`);
  }
  const canvas = document.createElement('canvas');
  canvas.width = bitmap.width;
  canvas.height = bitmap.height;
  const ctx = canvas.getContext('2d', {willReadFrequently: true});
  ctx.drawImage(bitmap, 0, 0);
  const w = bitmap.width, h = bitmap.height;
  bitmap.close();
  if (Math.min(w, h) < 8) throw new Error(`${blob.name || 'the image'} is ${w}x${h} px; too small`);
  return {rgb: rgbaToRgb(ctx.getImageData(0, 0, w, h).data), w, h};
}

function jet(v) {
  // matplotlib's 'jet' (piecewise linear), v in [0,1] -> [r,g,b] 0..255
  const c = (x) => Math.max(0, Math.min(1, x));
  return [c(1.5 - Math.abs(4 * v - 3)), c(1.5 - Math.abs(4 * v - 2)), c(1.5 - Math.abs(4 * v - 1))]
    .map((x) => Math.floor(x * 255));
}

/** Bilinear (half-pixel centres) sample of the h x w map at display pixel (x, y). */
function sample(cam, ch, cw, x, y, side) {
  const fy = Math.min(Math.max((y + 0.5) * ch / side - 0.5, 0), ch - 1);
  const fx = Math.min(Math.max((x + 0.5) * cw / side - 0.5, 0), cw - 1);
  const y0 = Math.floor(fy), x0 = Math.floor(fx);
  const y1 = Math.min(y0 + 1, ch - 1), x1 = Math.min(x0 + 1, cw - 1);
  const dy = fy - y0, dx = fx - x0;
  return (cam[y0 * cw + x0] * (1 - dx) + cam[y0 * cw + x1] * dx) * (1 - dy) +
         (cam[y1 * cw + x0] * (1 - dx) + cam[y1 * cw + x1] * dx) * dy;
}

function draw(pixels, size, result, withCam) {
  const small = document.createElement('canvas');
  small.width = small.height = size;
  const img = small.getContext('2d').createImageData(size, size);
  for (let i = 0; i < size * size; i++) {
    img.data.set([pixels[i * 3], pixels[i * 3 + 1], pixels[i * 3 + 2], 255], i * 4);
  }
  small.getContext('2d').putImageData(img, 0, 0);
  const view = $('view');
  const ctx = view.getContext('2d');
  ctx.imageSmoothingQuality = 'high';
  ctx.drawImage(small, 0, 0, VIEW, VIEW);
  if (!withCam) return;
  const frame = ctx.getImageData(0, 0, VIEW, VIEW);
  const [ch, cw] = result.camShape;
  for (let y = 0; y < VIEW; y++) {
    for (let x = 0; x < VIEW; x++) {
      const [r, g, b] = jet(sample(result.cam, ch, cw, x, y, VIEW));
      const o = (y * VIEW + x) * 4;
      frame.data[o] = (1 - ALPHA) * frame.data[o] + ALPHA * r;
      frame.data[o + 1] = (1 - ALPHA) * frame.data[o + 1] + ALPHA * g;
      frame.data[o + 2] = (1 - ALPHA) * frame.data[o + 2] + ALPHA * b;
    }
  }
  ctx.putImageData(frame, 0, 0);
}

function topK(probs, k) {
  return probs.map((p, i) => [state.config.classes[i], p]).sort((a, b) => b[1] - a[1]).slice(0, k);
}

function showTop(top) {
  const list = $('top');
  list.replaceChildren();
  for (const [label, p] of top) {
    const li = document.createElement('li');
    const row = document.createElement('div');
    row.className = 'row';
    const name = document.createElement('span');
    name.className = 'label';
    name.textContent = label;
    const pct = document.createElement('span');
    pct.textContent = `${(100 * p).toFixed(1)}%`;
    row.append(name, pct);
    const bar = document.createElement('div');
    bar.className = 'bar';
    const fill = document.createElement('span');
    fill.style.width = `${Math.max(0, Math.min(100, 100 * p)).toFixed(1)}%`;
    bar.append(fill);
    li.append(row, bar);
    list.append(li);
  }
}

function historyKey() {
  return `labtf-history-${state.config.model_sha256.slice(0, 12)}`;
}

function loadHistory() {
  try {
    return JSON.parse(localStorage.getItem(historyKey()) || '[]');
  } catch (e) {
    return [];
  }
}

function saveHistory(items) {
  try {
    localStorage.setItem(historyKey(), JSON.stringify(items.slice(0, HISTORY_MAX)));
  } catch (e) {
    showError(`could not save the history on this device (${e.name}); results still show`);
  }
}

function showHistory() {
  const list = $('history');
  list.replaceChildren();
  for (const item of loadHistory()) {
    const li = document.createElement('li');
    const img = document.createElement('img');
    img.src = item.thumb;
    img.alt = '';
    const what = document.createElement('div');
    what.className = 'what';
    const [label, p] = item.top[0];
    what.textContent = `${label} ${(100 * p).toFixed(0)}% · ${item.name} · ` +
      new Date(item.time).toLocaleString();
    li.append(img, what);
    list.append(li);
  }
}

function remember(name, top) {
  const thumb = document.createElement('canvas');
  thumb.width = thumb.height = 96;
  thumb.getContext('2d').drawImage($('view'), 0, 0, 96, 96);
  const items = loadHistory();
  items.unshift({time: Date.now(), name, top, thumb: thumb.toDataURL('image/jpeg', 0.7)});
  saveHistory(items);
  showHistory();
}

let current = null;

async function classify(file) {
  clearError();
  const config = state.config;
  const size = config.image_size;
  const t0 = performance.now();
  const {rgb, w, h} = await decode(file);
  const pixels = toSquare(rgb, w, h, size, config.resize);
  const prepMs = performance.now() - t0;
  const result = await infer(pixels, size);
  const top = topK(result.probs, config.top_k);
  current = {pixels, size, result};
  $('result').hidden = false;
  draw(pixels, size, result, $('show-cam').checked);
  showTop(top);
  $('timing').textContent = `model ${result.ms.toFixed(0)} ms · photo ${prepMs.toFixed(0)} ms ` +
    `(${w}x${h}) · ${config.quantize === 'int8' ? 'int8' : config.quantize} model on this device`;
  remember(file.name || 'photo', top);
  state.last = {name: file.name, probs: result.probs, cam: result.cam, camShape: result.camShape,
                ms: result.ms, prepMs, top};
  state.count += 1;
}

function onPick(event) {
  const file = event.target.files && event.target.files[0];
  event.target.value = '';
  if (!file) return;
  classify(file).catch((e) => {
    showError(e.message || String(e));
    state.count += 1;
  });
}

async function keepOffline() {
  if (!('serviceWorker' in navigator)) {
    setStatus('Ready. (This browser cannot keep the app for offline use.)');
    return;
  }
  try {
    await navigator.serviceWorker.register('sw.js');
    const reg = await navigator.serviceWorker.ready;
    const used = performance.getEntriesByType('resource').map((e) => e.name)
      .filter((u) => new URL(u).origin === location.origin && /\/litert\//.test(u));
    const reply = await new Promise((resolve) => {
      navigator.serviceWorker.addEventListener('message', (e) => resolve(e.data), {once: true});
      reg.active.postMessage({type: 'keep', urls: used});
    });
    if (reply.type !== 'kept') throw new Error(reply.error);
    state.offlineReady = true;
    setStatus('Ready — works offline on this device.');
  } catch (e) {
    setStatus(`Ready. Offline copy not saved (${e.message || e}); keep a network for the next visit.`);
  }
}

async function main() {
  const missing = unsupported();
  if (missing) {
    showError(`This browser cannot run the model (${missing}). Use a current Chrome, Safari, ` +
              'Firefox or Edge.');
    setStatus('Unsupported browser');
    return;
  }
  try {
    await loadModel();
  } catch (e) {
    showError(`The model could not be loaded: ${e.message || e}. Reload the page; if it keeps ` +
              'failing, export the app again (labtf export RUN --format web).');
    setStatus('Model not loaded');
    return;
  }
  for (const id of ['camera', 'file']) {
    $(id).disabled = false;
    $(id).addEventListener('change', onPick);
  }
  $('show-cam').addEventListener('change', () => {
    if (current) draw(current.pixels, current.size, current.result, $('show-cam').checked);
  });
  $('clear').addEventListener('click', () => {
    saveHistory([]);
    showHistory();
  });
  showHistory();
  const cfg = state.config;
  $('footer').textContent = `${cfg.classes.length} classes · ${cfg.image_size} px ${cfg.resize} · ` +
    `${cfg.quantize} · ${cfg.runtime} · runs on this device; no photo leaves it.`;
  state.ready = true;
  setStatus('Ready.');
  await keepOffline();
}

main();
