// A fastnst model in the page: its description (from model.json, or read from a dropped .onnx file) and its
// onnxruntime-web sessions (the network, and the painting encoder of an arbitrary-style model).
import { readOnnxHeader } from './onnxmeta.js';

export class ModelError extends Error {}

// Fetch a file with progress: onProgress(loadedBytes, totalBytes or 0). Returns an ArrayBuffer.
export async function fetchBytes(url, onProgress = () => {}, init = {}) {
  let response;
  try {
    response = await fetch(url, init);
  } catch (err) {
    throw new ModelError(`could not fetch ${url} (${err.message}); check the address and that you are online`);
  }
  if (!response.ok) throw new ModelError(`could not fetch ${url}: HTTP ${response.status} ${response.statusText}`);
  const total = Number(response.headers.get('content-length')) || 0;
  if (!response.body) return response.arrayBuffer();
  const reader = response.body.getReader();
  const chunks = [];
  let loaded = 0;
  for (;;) {
    const { done, value } = await reader.read();
    if (done) break;
    chunks.push(value);
    loaded += value.length;
    onProgress(loaded, total);
  }
  const out = new Uint8Array(loaded);
  let at = 0;
  for (const c of chunks) { out.set(c, at); at += c.length; }
  return out.buffer;
}

// The description the page works from, the same fields as fastnst.web.site.describe_model writes.
export function describeOnnx(buffer, fileName) {
  let header;
  try {
    header = readOnnxHeader(buffer);
  } catch (err) {
    throw new ModelError(`${fileName} is not an ONNX model (${err.message}); open a .onnx file exported by fastnst`);
  }
  const raw = header.metadata.fastnst;
  if (!raw) throw new ModelError(`${fileName} is an ONNX model but not fastnst's (it has no fastnst metadata); export one with fastnst export`);
  let info;
  try { info = JSON.parse(raw); } catch { throw new ModelError(`${fileName} has unreadable fastnst metadata`); }
  const names = header.inputs.map((i) => i.name);
  const outputs = header.outputs.map((o) => o.name);
  if (!names.includes('image') || outputs.length !== 1 || outputs[0] !== 'stylized') {
    throw new ModelError(`${fileName} has inputs ${names.join(', ')} and outputs ${outputs.join(', ')}; a fastnst model takes 'image' and returns 'stylized'`);
  }
  const desc = { fastnst_web: 1, architecture: info.architecture || 'unknown', config: info.config || {},
    image_input: 'image', output: 'stylized', min_side: 5, max_side: 1024, models: [], runtime: null };
  const vec = header.inputs.find((i) => i.name === 'style_vector');
  const weights = header.inputs.find((i) => i.name === 'style_weights');
  if (vec) {
    throw new ModelError(`${fileName} is an any-painting model: its painting encoder must come with it; export it with fastnst export --format web`);
  } else if (weights) {
    Object.assign(desc, { kind: 'styles', style_input: 'style_weights', styles: info.styles || [] });
    const s = weights.dims[weights.dims.length - 1];
    if (s !== desc.styles.length) throw new ModelError(`${fileName} takes ${s} style weights but names ${desc.styles.length} styles`);
  } else {
    Object.assign(desc, { kind: 'styles', style_input: null, styles: info.styles || ['style'] });
  }
  return desc;
}

function styleRank(desc) { return desc.style_rank || 1; }

export class Model {
  constructor(ort, desc, session, encoder = null, precision = 'fp32', name = '') {
    Object.assign(this, { ort, desc, session, encoder, precision, name });
    this.busy = Promise.resolve();
  }

  static async create(ort, desc, buffer, sessionOptions, encoderBuffer = null, precision = 'fp32', name = '') {
    let session, encoder = null;
    try {
      session = await ort.InferenceSession.create(new Uint8Array(buffer), sessionOptions);
      if (encoderBuffer) encoder = await ort.InferenceSession.create(new Uint8Array(encoderBuffer), sessionOptions);
    } catch (err) {
      throw new ModelError(`onnxruntime-web could not load the model ${name} (${String(err.message || err).split('\n')[0]})`);
    }
    return new Model(ort, desc, session, encoder, precision, name);
  }

  get styles() { return this.desc.styles || []; }

  // WebGPU drivers and kernels differ between devices: compare this (GPU) session with a CPU session of the same
  // model on a small image once; returns the CPU model (and releases this one) when they disagree, else null.
  async cpuIfGpuIsWrong(buffer, cpuOptions, style) {
    const side = 24, n = 3 * side * side;
    const x = new Float32Array(n).map((_, i) => 0.5 + 0.4 * Math.sin(i * 0.37));
    const cpu = await Model.create(this.ort, this.desc, buffer, cpuOptions, null, this.precision, this.name);
    const [a, b] = [await this.run(x, side, side, style), await cpu.run(x, side, side, style)];
    let worst = 0;
    for (let i = 0; i < a.length; i++) worst = Math.max(worst, Math.abs(a[i] - b[i]));
    this.gpuCheck = worst;
    if (worst <= 2 / 255) { await cpu.release(); return null; }
    cpu.encoder = this.encoder;  // the painting encoder is small: it stays where it is
    this.encoder = null;
    await this.release();
    return cpu;
  }

  // Serialise runs: one session, one run at a time (webcam frames and photo runs share it).
  run(chw, width, height, style) {
    const job = this.busy.then(() => this._run(chw, width, height, style));
    this.busy = job.catch(() => {});
    return job;
  }

  async _run(chw, width, height, style) {
    const { ort, desc } = this;
    const feeds = { [desc.image_input]: new ort.Tensor('float32', chw, [1, 3, height, width]) };
    if (desc.style_input) {
      const dims = desc.kind === 'arbitrary' && styleRank(desc) === 2 ? [1, style.length] : [style.length];
      feeds[desc.style_input] = new ort.Tensor('float32', style, dims);
    }
    const results = await this.session.run(feeds);
    const out = results[desc.output];
    const data = out.data instanceof Float32Array ? out.data : Float32Array.from(out.data);
    if (out.dispose) out.dispose();
    return data;
  }

  // A painting [3, H, W] in [0, 1] at the encoder's size -> the style vector (Float32Array [D]).
  async encode(chw, width, height) {
    const { ort, desc } = this;
    const enc = desc.encoder;
    const job = this.busy.then(async () => {
      const results = await this.encoder.run({ [enc.input]: new ort.Tensor('float32', chw, [1, 3, height, width]) });
      return Float32Array.from(results[enc.output].data);
    });
    this.busy = job.catch(() => {});
    const v = await job;
    if (v.length !== desc.style_dim) throw new ModelError(`the painting encoder returned ${v.length} values, the model takes ${desc.style_dim}`);
    return v;
  }

  async release() {
    await this.busy;
    for (const s of [this.session, this.encoder]) if (s && s.release) await s.release();
  }
}

// Style weights (Float32Array [S], sum 1) from a URL/CLI style text: NAME, INDEX or a blend a=0.7,b=0.3.
export function parseStyle(text, names) {
  const w = new Float32Array(names.length);
  const index = (key) => {
    const k = key.trim();
    let i = names.indexOf(k);
    if (i < 0 && /^\d+$/.test(k)) i = Number(k);
    if (i < 0 || i >= names.length) throw new ModelError(`the model holds no style '${k}'; its styles are ${names.join(', ')}`);
    return i;
  };
  if (!text.includes('=')) { w[index(text)] = 1; return w; }
  for (const part of text.split(',')) {
    const [k, v] = part.split('=');
    const x = Number(v);
    if (!Number.isFinite(x) || x < 0) throw new ModelError(`style blend '${text}': the weight of '${k}' must be a number >= 0`);
    w[index(k)] += x;
  }
  const sum = w.reduce((a, b) => a + b, 0);
  if (sum <= 0) throw new ModelError('the style weights are all 0; give at least one style a positive weight');
  return w.map((x) => x / sum);
}
