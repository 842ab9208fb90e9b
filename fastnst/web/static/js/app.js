// The page: load model.json, the runtime and the model; stylize a photo (chosen, dropped or ?image=URL) or the
// webcam; show everything that happens on the page. URL contract: index.html?image=URL&style=NAME&strength=S
// (also preserve=1, max=PX, backend=wasm|webgpu, threads=N, precision=int8, painting=URL) stylizes on load into
// <canvas id="result"> and sets body[data-state] to "done" (or "error", with the message on the page).
import { Model, ModelError, describeOnnx, fetchBytes, parseStyle } from './model.js';
import { chooseBackend, loadRuntime } from './runtime.js';
import { compose, drawToImageData, fitSize, fromCHW, resizeImageData, toCHW } from './pixels.js';
import { $, clearError, dropZone, megabytes, note, progress, setState, showError, status } from './ui.js';
import { Webcam } from './webcam.js';
import { buildStyles, initStyles, pickStyle, showWeights } from './styles.js';

const MAX_PIXELS = 40e6;  // larger photos: decoding and the full-size canvases would exhaust a tab's memory
const MAX_FILE_SIDE = 16384;  // the browsers' canvas limit
const params = new URLSearchParams(location.search);
const state = { model: null, rt: null, photo: null, raw: null, style: null, styleLabel: '', painting: null, sidecar: null };
let webcam = null;

function look() { return { strength: Number($('strength').value), preserveColor: $('preserve').checked }; }

// ---- photos ---------------------------------------------------------------------------------------------
// Decode an image; a blob: URL made for it is released when it is no longer shown (``slot``: 'photo' or
// 'painting': the previous one of that slot is released once this one loaded, this one if it fails).
const shown = {};
function loadImage(src, name, slot = null) {
  return new Promise((resolve, reject) => {
    const img = new Image();
    img.crossOrigin = 'anonymous';
    img.onload = () => {
      if (slot) { if (shown[slot]) URL.revokeObjectURL(shown[slot]); shown[slot] = src; }
      resolve(img);
    };
    img.onerror = () => {
      if (slot) URL.revokeObjectURL(src);
      reject(new ModelError(`${name} is not an image this browser can read (or it could not be fetched); choose a JPEG, PNG or WebP photo`));
    };
    img.src = src;
  });
}

function checkSize(img, name) {
  const w = img.naturalWidth, h = img.naturalHeight;
  if (!w || !h) throw new ModelError(`${name} has no pixels; choose another photo`);
  if (w * h > MAX_PIXELS || Math.max(w, h) > MAX_FILE_SIDE) {
    throw new ModelError(`${name} is ${w}×${h} px (${(w * h / 1e6).toFixed(0)} MP): too large for a browser tab (up to ${MAX_PIXELS / 1e6} MP and ${MAX_FILE_SIDE} px a side); resize it first`);
  }
  if (Math.min(w, h) < state.sidecar.min_side) throw new ModelError(`${name} is ${w}×${h} px; both sides need at least ${state.sidecar.min_side} px`);
}

async function setPhoto(file) {
  clearError();
  try {
    if (file.type && !file.type.startsWith('image/')) throw new ModelError(`${file.name} is not an image (${file.type}); choose a JPEG, PNG or WebP photo`);
    const img = await loadImage(URL.createObjectURL(file), file.name, 'photo');
    checkSize(img, file.name);
    usePhoto(img, file.name.replace(/\.[^.]+$/, ''));
    await stylize();
  } catch (err) { showError(err); }
}

function usePhoto(img, name) {
  state.photo = { img, name, width: img.naturalWidth, height: img.naturalHeight };
  $('photo-thumb').src = img.src;
  $('photo-thumb').hidden = false;
  $('run').disabled = !state.model;
}

// ---- styles (the picker and blend sliders: styles.js) -----------------------------------------------
async function setPainting(src, name, slot = null) {
  clearError();
  try {
    const img = await loadImage(src, name, slot);
    checkSize(img, name);
    const enc = state.model.desc.encoder;
    const iw = img.naturalWidth, ih = img.naturalHeight;
    if (Math.min(iw, ih) < 32) throw new ModelError(`${name} is ${iw}×${ih} px, too small to describe a style; give a painting of at least 32 px on each side`);
    let data, W, H;
    if (enc.painting_shape) {  // an encoder of a fixed size: cover it, centred, at the painting's aspect ratio
      [H, W] = enc.painting_shape;
      const k = Math.max(W / iw, H / ih);
      data = drawToImageData(img, W, H, (iw - W / k) / 2, (ih - H / k) / 2, W / k, H / k);
    } else {  // as fastnst.media.painting: the longer side at the encoder's painting size, the aspect kept
      const k = enc.painting_size / Math.max(iw, ih);
      [W, H] = [Math.max(1, Math.round(iw * k)), Math.max(1, Math.round(ih * k))];
      data = drawToImageData(img, W, H);
    }
    status('reading the painting…');
    state.style = await state.model.encode(toCHW(data), W, H);
    state.styleLabel = name.replace(/\.[^.]+$/, '');
    $('painting-thumb').src = img.src;
    $('painting-thumb').hidden = false;
    $('style-chips').querySelectorAll('.chip').forEach((c) => c.setAttribute('aria-checked', 'false'));
    await stylize();
    return true;
  } catch (err) { showError(err); return false; }
}

// ---- stylizing ------------------------------------------------------------------------------------------
async function stylize() {
  if (!state.photo || !state.model || (webcam && webcam.running)) return;
  const { img, width, height } = state.photo;
  const maxSide = Number($('max-side').value);
  const [w, h] = fitSize(width, height, maxSide);
  setState('working');
  progress(null);
  status(`stylizing at ${w}×${h} on ${state.rt.label}…`);
  try {
    const content = drawToImageData(img, w, h);
    const t0 = performance.now();
    const out = await state.model.run(toCHW(content), w, h, state.style);
    const ms = performance.now() - t0;
    if (w !== width || h !== height) {
      state.raw = { stylized: resizeImageData(fromCHW(out, w, h), width, height), content: drawToImageData(img, width, height) };
      note(`Stylized at ${w}×${h} and scaled up to the photo's ${width}×${height}: the cap is ${maxSide} px ("Stylize at most"); a larger cap keeps more detail but is slower and needs more memory.`);
    } else {
      state.raw = { stylized: out, content };
      note('');
    }
    render();
    document.body.dataset.ms = ms.toFixed(1);
    status(`Done: ${state.styleLabel} in ${ms < 1000 ? `${ms.toFixed(0)} ms` : `${(ms / 1000).toFixed(1)} s`} at ${w}×${h} on ${state.rt.label}.`);
    clearError();
    progress(false);
    setState('done');
  } catch (err) {
    // onnxruntime-web's failures (most often memory: a tab's WebAssembly has at most 4 GB) name no remedy
    showError(err instanceof ModelError ? err : new ModelError(`the network failed at ${w}×${h} (${String(err.message || err).split('\n')[0]}); a smaller size under "Stylize at most" needs less memory`));
  }
}

function render() {
  if (!state.raw) return;
  const image = compose(state.raw.stylized, state.raw.content, look());
  state.composed = image;
  const canvas = $('result');
  canvas.width = image.width;
  canvas.height = image.height;
  canvas.getContext('2d').putImageData(image, 0, 0);
  $('placeholder').hidden = true;
  offerDownload(state.photo ? state.photo.name : 'photo');
}

// The Download button saves what the result canvas shows, as a PNG.
function offerDownload(name) {
  const link = $('download');
  $('result').toBlob((blob) => {
    if (link.href) URL.revokeObjectURL(link.href);
    link.href = URL.createObjectURL(blob);
    link.download = `${name}-${state.styleLabel || 'styled'}.png`.replace(/[^\w.+-]+/g, '_');
    link.setAttribute('aria-disabled', 'false');
  }, 'image/png');
}

// ---- models ---------------------------------------------------------------------------------------------
async function loadModel(sidecar, precision) {
  const entry = sidecar.models.find((m) => m.precision === precision) || sidecar.models[0];
  const onProgress = (loaded, total) => {
    progress(total ? loaded / total : null);
    status(`downloading the model: ${megabytes(loaded)}${total ? ` of ${megabytes(total)}` : ''}`);
  };
  const buffer = await fetchBytes(entry.file, onProgress);
  const encoder = sidecar.kind === 'arbitrary' ? await fetchBytes(sidecar.encoder.file, onProgress) : null;
  status('preparing the network…');
  progress(null);
  state.modelBuffer = buffer;  // for the WebGPU check, then dropped
  return Model.create(state.rt.ort, sidecar, buffer, state.rt.sessionOptions, encoder, entry.precision, entry.file);
}

// The first run on WebGPU is compared with the CPU (see Model.cpuIfGpuIsWrong); a device whose results differ
// runs on the CPU, and the badge says why.
async function checkGpu() {
  status('checking WebGPU against the CPU…');
  const style = state.model.desc.kind === 'arbitrary' ? (state.model.desc.saved_styles[0] ? Float32Array.from(state.model.desc.saved_styles[0].vector) : new Float32Array(state.model.desc.style_dim))
    : state.model.desc.style_input ? Float32Array.from(state.model.desc.styles, (_, i) => (i === 0 ? 1 : 0)) : null;
  const cpu = await state.model.cpuIfGpuIsWrong(state.modelBuffer, { ...state.rt.sessionOptions,
    executionProviders: ['wasm'], graphOptimizationLevel: 'all' }, style);
  if (cpu) {
    state.model = cpu;
    state.rt.label = `WebAssembly · ${state.rt.threads} thread${state.rt.threads > 1 ? 's' : ''} (WebGPU gave wrong results on this device)`;
    $('backend').textContent = state.rt.label;
  }
}

function describe(model) {
  const d = model.desc;
  const what = d.kind === 'arbitrary' ? 'any painting' : d.styles.length === 1 ? `style “${d.styles[0]}”` : `${d.styles.length} styles`;
  $('model-name').textContent = `${d.exported_from || model.name} · ${d.architecture} · ${what} · ${model.precision}`;
  $('about').textContent = `fastnst ${d.fastnst_version || ''} · onnxruntime-web ${state.sidecar.runtime.version}`;
}

async function openModelFile(file) {
  clearError();
  try {
    const buffer = await file.arrayBuffer();
    const desc = describeOnnx(buffer, file.name);
    status(`loading ${file.name}…`);
    const model = await Model.create(state.rt.ort, { ...desc, fastnst_version: state.sidecar.fastnst_version }, buffer,
      state.rt.sessionOptions, null, 'fp32', file.name);
    const old = state.model;
    state.model = model;
    if (old) old.release();
    describe(model);
    buildStyles();
    status(`loaded ${file.name}.`);
    setState('ready');
    await stylize();
  } catch (err) { showError(err); }
}

async function toggleWebcam() {
  const button = $('webcam');
  if (webcam && webcam.running) {
    webcam.stop();
    button.setAttribute('aria-pressed', 'false');
    $('fps').textContent = '';
    if (webcam.frames) offerDownload('webcam');  // the last frame
    status('webcam stopped: Download saves its last frame.');
    setState('ready');
    return;
  }
  clearError();
  webcam = webcam || new Webcam({ canvas: $('result'), getModel: () => state.model, getStyle: () => state.style, getLook: look,
    onFps: (fps, w, h) => { $('fps').textContent = `${fps.toFixed(1)} fps`; document.body.dataset.fps = fps.toFixed(2); document.body.dataset.frames = webcam.frames; status(`webcam at ${w}×${h} on ${state.rt.label}`); },
    onError: (err) => { button.setAttribute('aria-pressed', 'false'); showError(err); } });
  try {
    await webcam.start(Number($('webcam-size').value));
    button.setAttribute('aria-pressed', 'true');
    $('placeholder').hidden = true;
    note('');
    setState('webcam');
  } catch (err) { showError(err); }
}

// A hook for the speed measurement (python -m fastnst.web bench): milliseconds of `runs` network runs on a
// random width x height image, after one warm-up run.
window.fastnst = {
  async benchmark(width, height, runs = 5) {
    const chw = new Float32Array(3 * width * height).map(() => Math.random());
    await state.model.run(chw, width, height, state.style);
    const times = [];
    for (let i = 0; i < runs; i++) {
      const t0 = performance.now();
      await state.model.run(chw, width, height, state.style);
      times.push(performance.now() - t0);
    }
    return times;
  },
  state,
};

// ---- start ----------------------------------------------------------------------------------------------
function wire() {
  initStyles(state, () => stylize());
  dropZone($('drop'), $('photo-file'), setPhoto);
  dropZone($('painting-drop'), $('painting-file'), (f) => setPainting(URL.createObjectURL(f), f.name, 'painting'));
  $('open-model').addEventListener('click', () => $('model-file').click());
  $('model-file').addEventListener('change', () => { const f = $('model-file').files[0]; $('model-file').value = ''; if (f) openModelFile(f); });
  $('strength').addEventListener('input', () => { $('strength-value').textContent = `${Math.round($('strength').value * 100)}%`; render(); });
  $('preserve').addEventListener('change', render);
  $('max-side').addEventListener('change', stylize);
  $('run').addEventListener('click', stylize);
  $('webcam').addEventListener('click', toggleWebcam);
  // press and hold the result to compare it with the photo
  const peek = (on) => {
    if (!state.raw || (webcam && webcam.running)) return;
    $('result').getContext('2d').putImageData(on ? state.raw.content : state.composed, 0, 0);
  };
  $('result').addEventListener('pointerdown', () => peek(true));
  for (const e of ['pointerup', 'pointerleave', 'pointercancel']) $('result').addEventListener(e, () => peek(false));
  document.addEventListener('dragover', (e) => e.preventDefault());
  document.addEventListener('drop', (e) => { e.preventDefault(); if (e.dataTransfer.files[0]) setPhoto(e.dataTransfer.files[0]); });
}

function registerServiceWorker() {
  if (!('serviceWorker' in navigator) || !isSecureContext || params.has('nosw')) return;
  navigator.serviceWorker.register('sw.js').then((reg) => {
    // A static host without the isolation headers: the service worker adds them; reload once under its control.
    if (!self.crossOriginIsolated && !navigator.serviceWorker.controller && !sessionStorage.getItem('fastnst-reloaded')) {
      const reload = () => { sessionStorage.setItem('fastnst-reloaded', '1'); location.reload(); };
      if (reg.active) reload(); else navigator.serviceWorker.addEventListener('controllerchange', reload, { once: true });
    }
  }).catch(() => {});
}

async function main() {
  wire();
  registerServiceWorker();
  try {
    let response;
    try { response = await fetch('model.json'); } catch { response = null; }
    if (!response || !response.ok) throw new ModelError('model.json is missing: serve a folder written by fastnst export --format web (fastnst web serve DIR)');
    state.sidecar = await response.json();
    const sidecar = state.sidecar;
    const backend = await chooseBackend(sidecar.runtime, params.get('backend'));
    state.rt = await loadRuntime(sidecar.runtime, backend, status, Number(params.get('threads')) || 0);
    $('backend').textContent = state.rt.label;
    $('backend').classList.toggle('fast', backend === 'webgpu' || state.rt.threads > 1);
    const preferred = Math.min(sidecar.max_side || 1024, 1 << 30);
    $('max-side').value = params.get('max') ?? String([...$('max-side').options].some((o) => o.value === String(preferred)) ? preferred : 1024);
    if (params.has('max') && $('max-side').value !== params.get('max')) {
      const o = new Option(`${params.get('max')} px`, params.get('max')); $('max-side').add(o); $('max-side').value = params.get('max');
    }
    state.model = await loadModel(sidecar, params.get('precision') || 'fp32');
    if (backend === 'webgpu') await checkGpu();
    state.modelBuffer = null;
    if (sidecar.models.length > 1) {  // e.g. fp32 and int8: switching reloads the page with ?precision=
      const select = $('precision');
      for (const m of sidecar.models) select.add(new Option(`${m.precision} (${megabytes(m.bytes)})`, m.precision));
      select.value = state.model.precision;
      $('precision-row').hidden = false;
      select.addEventListener('change', () => { params.set('precision', select.value); location.search = params.toString(); });
    }
    describe(state.model);
    buildStyles();
    if (params.has('strength')) {
      const s = Number(params.get('strength'));
      if (!Number.isFinite(s) || s < 0 || s > 1) throw new ModelError(`strength=${params.get('strength')} must be a number between 0 and 1`);
      $('strength').value = s;
      $('strength-value').textContent = `${Math.round(s * 100)}%`;
    }
    if (params.has('preserve')) $('preserve').checked = !['0', 'false', 'no'].includes(params.get('preserve'));
    if (params.has('style')) {
      const text = params.get('style');
      const desc = state.model.desc;
      if (desc.kind === 'arbitrary') {
        const i = desc.saved_styles.findIndex((s) => s.name === text);
        if (i < 0) throw new ModelError(`the model has no saved style '${text}'; its saved styles are ${desc.saved_styles.map((s) => s.name).join(', ') || 'none'}`);
        pickStyle(i);
      } else if (desc.styles.length > 1) {
        state.style = parseStyle(text, desc.styles);
        state.styleLabel = text;
        showWeights(state.style);
      } else if (text !== desc.styles[0] && text !== '0') {
        throw new ModelError(`the model holds no style '${text}'; its style is ${desc.styles[0]}`);
      }
    }
    progress(false);
    setState('ready');
    status('Ready: choose or drop a photo, or start the webcam.');
    if (params.has('painting') && !(await setPainting(params.get('painting'), params.get('painting').split('/').pop()))) return;
    if (params.has('image')) {
      const src = params.get('image');
      const img = await loadImage(src, src);
      checkSize(img, src);
      usePhoto(img, src.split('/').pop().replace(/\.[^.]+$/, '') || 'photo');
      await stylize();
    }
  } catch (err) {
    showError(err);
  }
}

main();
