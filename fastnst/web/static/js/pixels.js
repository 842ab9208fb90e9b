// Pixels in and out of the network, and the post-processing of fastnst.inference.color (preserve colour in
// YIQ, then strength as a blend with the photo), in float like Python, rounded to 8 bits at the end.

// RGB -> YIQ, the matrix of fastnst/inference/color.py; its inverse is computed, as Python does.
const RGB_TO_YIQ = [[0.299, 0.587, 0.114], [0.595716, -0.274453, -0.321263], [0.211456, -0.522591, 0.311135]];
function inverse3(m) {
  const [[a, b, c], [d, e, f], [g, h, i]] = m;
  const A = e * i - f * h, B = -(d * i - f * g), C = d * h - e * g;
  const det = a * A + b * B + c * C;
  return [[A / det, -(b * i - c * h) / det, (b * f - c * e) / det],
    [B / det, (a * i - c * g) / det, -(a * f - c * d) / det],
    [C / det, -(a * h - b * g) / det, (a * e - b * d) / det]];
}
const YIQ_TO_RGB = inverse3(RGB_TO_YIQ);

// A canvas of the given size (OffscreenCanvas where there is one).
export function makeCanvas(width, height) {
  if (typeof OffscreenCanvas !== 'undefined') return new OffscreenCanvas(width, height);
  const c = document.createElement('canvas');
  c.width = width; c.height = height;
  return c;
}

// Draw a source (ImageBitmap, video, canvas) at width x height and return its RGBA ImageData.
export function drawToImageData(source, width, height, sx = 0, sy = 0, sw = null, sh = null) {
  const canvas = makeCanvas(width, height);
  const ctx = canvas.getContext('2d', { willReadFrequently: true });
  ctx.imageSmoothingEnabled = true;
  ctx.imageSmoothingQuality = 'high';
  if (sw === null) ctx.drawImage(source, 0, 0, width, height);
  else ctx.drawImage(source, sx, sy, sw, sh, 0, 0, width, height);
  return ctx.getImageData(0, 0, width, height);
}

// RGBA ImageData -> Float32Array [3, H, W] in [0, 1] (the network's input).
export function toCHW(imageData) {
  const { data, width, height } = imageData;
  const n = width * height;
  const out = new Float32Array(3 * n);
  for (let i = 0, p = 0; i < n; i++, p += 4) {
    out[i] = data[p] / 255;
    out[n + i] = data[p + 1] / 255;
    out[2 * n + i] = data[p + 2] / 255;
  }
  return out;
}

// Compose the result: ``stylized`` is a Float32Array [3, H, W] in [0, 1] or an RGBA ImageData of the same
// size (an upscaled result), ``content`` the photo's RGBA ImageData; options {strength, preserveColor}.
export function compose(stylized, content, { strength = 1, preserveColor = false } = {}) {
  const { width, height } = content;
  const n = width * height;
  const out = new ImageData(width, height);
  const o = out.data, c = content.data;
  const isFloat = stylized instanceof Float32Array;
  const s = isFloat ? stylized : stylized.data;
  const t = Math.min(1, Math.max(0, strength));
  const [y0, y1, y2] = RGB_TO_YIQ[0], [i0, i1, i2] = RGB_TO_YIQ[1], [q0, q1, q2] = RGB_TO_YIQ[2];
  const M = YIQ_TO_RGB;
  for (let i = 0, p = 0; i < n; i++, p += 4) {
    let r, g, b;
    if (isFloat) { r = s[i]; g = s[n + i]; b = s[2 * n + i]; } else { r = s[p] / 255; g = s[p + 1] / 255; b = s[p + 2] / 255; }
    const cr = c[p] / 255, cg = c[p + 1] / 255, cb = c[p + 2] / 255;
    if (preserveColor) {  // the stylized luminance with the photo's chroma
      const Y = y0 * r + y1 * g + y2 * b;
      const I = i0 * cr + i1 * cg + i2 * cb, Q = q0 * cr + q1 * cg + q2 * cb;
      r = M[0][0] * Y + M[0][1] * I + M[0][2] * Q;
      g = M[1][0] * Y + M[1][1] * I + M[1][2] * Q;
      b = M[2][0] * Y + M[2][1] * I + M[2][2] * Q;
    }
    if (t < 1) { r = cr + t * (r - cr); g = cg + t * (g - cg); b = cb + t * (b - cb); }
    o[p] = Math.round(Math.min(1, Math.max(0, r)) * 255);
    o[p + 1] = Math.round(Math.min(1, Math.max(0, g)) * 255);
    o[p + 2] = Math.round(Math.min(1, Math.max(0, b)) * 255);
    o[p + 3] = 255;
  }
  return out;
}

// Float32Array [3, H, W] -> RGBA ImageData (no post-processing).
export function fromCHW(chw, width, height) {
  const fake = new ImageData(width, height);
  return compose(chw, fake, { strength: 1, preserveColor: false });
}

// Scale an ImageData to width x height with the browser's high-quality resampling.
export function resizeImageData(imageData, width, height) {
  const src = makeCanvas(imageData.width, imageData.height);
  src.getContext('2d').putImageData(imageData, 0, 0);
  return drawToImageData(src, width, height);
}

// The size the network runs at: the photo scaled so that its longer side is at most maxSide (never up).
export function fitSize(width, height, maxSide) {
  const longer = Math.max(width, height);
  if (!maxSide || longer <= maxSide) return [width, height];
  const k = maxSide / longer;
  return [Math.max(5, Math.round(width * k)), Math.max(5, Math.round(height * k))];
}
