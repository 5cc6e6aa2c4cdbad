// labtf web app: photo -> square model input, the same pixels as labtf's Python
// (labtf/images.py to_square: crop | pad | squash, with Pillow's BILINEAR resize and
// reducing_gap=3.0). A port of Pillow's integer resampling (libImaging Reduce.c and
// Resample.c: box pre-reduction, then two separable bilinear passes in 22-bit fixed point),
// so the browser and `labtf predict` feed the model identical bytes for an identical decode.

const PRECISION_BITS = 22;
const HALF = 1 << (PRECISION_BITS - 1);

/** Python's round(): halves go to the even neighbour. */
export function pyRound(x) {
  const r = Math.round(x);
  return Math.abs(x % 1) === 0.5 && r % 2 !== 0 ? r - 1 : r;
}

/** Pillow's division_UINT32(n, 8): a float32 reciprocal scaled by 2^24. */
function multiplier(n) {
  return Math.floor(Math.fround(4294967296 / Math.fround(256 * n)));
}

/** Image.reduce((fx, fy)): box means with Pillow's rounding, partial edge blocks included. */
export function reduce(src, w, h, fx, fy) {
  const ow = Math.ceil(w / fx), oh = Math.ceil(h / fy);
  const out = new Uint8Array(ow * oh * 3);
  for (let oy = 0; oy < oh; oy++) {
    const y0 = oy * fy, y1 = Math.min(h, y0 + fy);
    for (let ox = 0; ox < ow; ox++) {
      const x0 = ox * fx, x1 = Math.min(w, x0 + fx);
      const n = (y1 - y0) * (x1 - x0), m = multiplier(n), amend = Math.floor(n / 2);
      let s0 = amend, s1 = amend, s2 = amend;
      for (let y = y0; y < y1; y++) {
        for (let x = x0, i = (y * w + x0) * 3; x < x1; x++, i += 3) {
          s0 += src[i]; s1 += src[i + 1]; s2 += src[i + 2];
        }
      }
      const o = (oy * ow + ox) * 3;
      out[o] = Math.floor(s0 * m / 16777216);
      out[o + 1] = Math.floor(s1 * m / 16777216);
      out[o + 2] = Math.floor(s2 * m / 16777216);
    }
  }
  return {data: out, w: ow, h: oh};
}

function bilinear(x) {
  x = Math.abs(x);
  return x < 1 ? 1 - x : 0;
}

/** precompute_coeffs + normalize_coeffs_8bpc for one axis (box edges are C floats). */
function coefficients(inSize, in0, in1, outSize) {
  in0 = Math.fround(in0);
  in1 = Math.fround(in1);
  const scale = Math.fround(in1 - in0) / outSize;
  const filterscale = scale < 1 ? 1 : scale;
  const support = filterscale;
  const bounds = new Int32Array(outSize * 2);
  const kernels = [];
  for (let xx = 0; xx < outSize; xx++) {
    const center = in0 + (xx + 0.5) * scale;
    const ss = 1 / filterscale;
    let xmin = Math.trunc(center - support + 0.5);
    if (xmin < 0) xmin = 0;
    let xmax = Math.trunc(center + support + 0.5);
    if (xmax > inSize) xmax = inSize;
    xmax -= xmin;
    const k = new Float64Array(xmax);
    let ww = 0;
    for (let x = 0; x < xmax; x++) {
      k[x] = bilinear((x + xmin - center + 0.5) * ss);
      ww += k[x];
    }
    const ki = new Int32Array(xmax);
    for (let x = 0; x < xmax; x++) {
      const v = ww !== 0 ? k[x] / ww : k[x];
      ki[x] = v < 0 ? Math.trunc(-0.5 + v * (1 << PRECISION_BITS))
                    : Math.trunc(0.5 + v * (1 << PRECISION_BITS));
    }
    bounds[xx * 2] = xmin;
    bounds[xx * 2 + 1] = xmax;
    kernels.push(ki);
  }
  return {bounds, kernels};
}

function clip8(ss) {
  const v = ss >> PRECISION_BITS;
  return v < 0 ? 0 : v > 255 ? 255 : v;
}

/** ImagingResample(BILINEAR, box): horizontal pass (rows in use only), then vertical. */
function resample(src, w, h, ow, oh, box) {
  const needH = ow !== w || Math.fround(box[0]) !== 0 || Math.fround(box[2]) !== ow;
  const needV = oh !== h || Math.fround(box[1]) !== 0 || Math.fround(box[3]) !== oh;
  const vert = coefficients(h, box[1], box[3], oh);
  const yFirst = vert.bounds[0];
  const yLast = vert.bounds[oh * 2 - 2] + vert.bounds[oh * 2 - 1];
  let cur = {data: src, w, h};
  if (needH) {
    const hor = coefficients(w, box[0], box[2], ow);
    for (let i = 0; i < oh; i++) vert.bounds[i * 2] -= yFirst;
    const rows = yLast - yFirst;
    const tmp = new Uint8Array(ow * rows * 3);
    for (let yy = 0; yy < rows; yy++) {
      const row = (yy + yFirst) * w;
      for (let xx = 0; xx < ow; xx++) {
        const xmin = hor.bounds[xx * 2], n = hor.bounds[xx * 2 + 1], k = hor.kernels[xx];
        let s0 = HALF, s1 = HALF, s2 = HALF;
        for (let x = 0; x < n; x++) {
          const i = (row + x + xmin) * 3;
          s0 += src[i] * k[x]; s1 += src[i + 1] * k[x]; s2 += src[i + 2] * k[x];
        }
        const o = (yy * ow + xx) * 3;
        tmp[o] = clip8(s0); tmp[o + 1] = clip8(s1); tmp[o + 2] = clip8(s2);
      }
    }
    cur = {data: tmp, w: ow, h: rows};
  }
  if (!needV) return cur.data.slice();
  const out = new Uint8Array(cur.w * oh * 3);
  for (let yy = 0; yy < oh; yy++) {
    const ymin = vert.bounds[yy * 2], n = vert.bounds[yy * 2 + 1], k = vert.kernels[yy];
    for (let xx = 0; xx < cur.w; xx++) {
      let s0 = HALF, s1 = HALF, s2 = HALF;
      for (let y = 0; y < n; y++) {
        const i = ((y + ymin) * cur.w + xx) * 3;
        s0 += cur.data[i] * k[y]; s1 += cur.data[i + 1] * k[y]; s2 += cur.data[i + 2] * k[y];
      }
      const o = (yy * cur.w + xx) * 3;
      out[o] = clip8(s0); out[o + 1] = clip8(s1); out[o + 2] = clip8(s2);
    }
  }
  return out;
}

/** Image.resize((ow, oh), BILINEAR, reducing_gap=3.0) of RGB uint8 (w*h*3). */
export function resize(src, w, h, ow, oh) {
  if (ow === w && oh === h) return src.slice();
  const fx = Math.trunc(w / ow / 3.0) || 1, fy = Math.trunc(h / oh / 3.0) || 1;
  if (fx > 1 || fy > 1) {
    const r = reduce(src, w, h, fx, fy);
    return resample(r.data, r.w, r.h, ow, oh, [0, 0, w / fx, h / fy]);
  }
  return resample(src, w, h, ow, oh, [0, 0, w, h]);
}

function crop(src, w, left, top, size) {
  const out = new Uint8Array(size * size * 3);
  for (let y = 0; y < size; y++) {
    const start = ((y + top) * w + left) * 3;
    out.set(src.subarray(start, start + size * 3), y * size * 3);
  }
  return out;
}

/**
 * labtf.images.to_square: RGB uint8 (w*h*3) -> (size*size*3).
 * @param {string} mode crop | pad | squash
 */
export function toSquare(rgb, w, h, size, mode) {
  if (mode === 'crop') {
    const scale = size / Math.min(h, w);
    const nh = Math.max(size, pyRound(h * scale)), nw = Math.max(size, pyRound(w * scale));
    const img = resize(rgb, w, h, nw, nh);
    return crop(img, nw, Math.floor((nw - size) / 2), Math.floor((nh - size) / 2), size);
  }
  if (mode === 'squash') return resize(rgb, w, h, size, size);
  if (mode === 'pad') {
    const scale = size / Math.max(h, w);
    const nh = Math.max(1, pyRound(h * scale)), nw = Math.max(1, pyRound(w * scale));
    const img = resize(rgb, w, h, nw, nh);
    const out = new Uint8Array(size * size * 3).fill(255);
    const left = Math.floor((size - nw) / 2), top = Math.floor((size - nh) / 2);
    for (let y = 0; y < nh; y++) {
      out.set(img.subarray(y * nw * 3, (y + 1) * nw * 3), ((y + top) * size + left) * 3);
    }
    return out;
  }
  throw new Error(`unknown resize mode '${mode}'; choose one of: crop, pad, squash`);
}

/** RGBA (canvas ImageData, unpremultiplied) -> RGB composited onto white, like Pillow's to_rgb. */
export function rgbaToRgb(rgba) {
  const n = rgba.length / 4, out = new Uint8Array(n * 3);
  for (let i = 0; i < n; i++) {
    const a = rgba[i * 4 + 3];
    for (let c = 0; c < 3; c++) {
      const v = rgba[i * 4 + c];
      out[i * 3 + c] = a === 255 ? v : Math.round((v * a + 255 * (255 - a)) / 255);
    }
  }
  return out;
}
