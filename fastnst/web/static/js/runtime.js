// Load onnxruntime-web as the sidecar says: from the folder's ort/ (offline) or from a CDN, where every file
// is fetched with its Subresource Integrity hash and run from a blob: URL, so a changed file is refused.
// WebGPU where the browser has an adapter, else WebAssembly (SIMD, threads when cross-origin isolated).

async function webgpuAdapter() {
  if (!('gpu' in navigator)) return null;
  try { return await navigator.gpu.requestAdapter(); } catch { return null; }
}

async function blobUrl(url, integrity, type) {
  let response;
  try {
    response = await fetch(url, { integrity, mode: 'cors', credentials: 'omit' });
  } catch (err) {
    throw new Error(`could not fetch ${url} with its integrity hash (${err.message}): offline, blocked, or the file changed`);
  }
  if (!response.ok) throw new Error(`could not fetch ${url}: HTTP ${response.status}`);
  return URL.createObjectURL(new Blob([await response.arrayBuffer()], { type }));
}

// Choose the backend: 'webgpu' or 'wasm' (forced by ?backend=, else WebGPU when there is an adapter).
export async function chooseBackend(runtime, forced) {
  const available = Object.keys(runtime.backends);
  if (forced) {
    if (!available.includes(forced)) throw new Error(`backend '${forced}' is not in this export (it has ${available.join(', ')})`);
    if (forced === 'webgpu' && !(await webgpuAdapter())) throw new Error('this browser has no WebGPU adapter; use backend=wasm');
    return forced;
  }
  if (available.includes('webgpu') && (await webgpuAdapter())) return 'webgpu';
  if (available.includes('wasm')) return 'wasm';
  return available[0];
}

// -> {ort, backend, threads, label, sessionOptions}
export async function loadRuntime(runtime, backend, onStatus = () => {}, wantThreads = 0) {
  const files = runtime.backends[backend];
  const base = new URL(runtime.base, document.baseURI);
  const url = (f) => new URL(f.file, base).href;
  let moduleUrl, paths;
  if (runtime.source === 'cdn') {
    onStatus(`fetching onnxruntime-web ${runtime.version} from ${base.host} (integrity checked)`);
    const [m, loader, binary] = await Promise.all([
      blobUrl(url(files.module), files.module.integrity, 'text/javascript'),
      blobUrl(url(files.loader), files.loader.integrity, 'text/javascript'),
      blobUrl(url(files.binary), files.binary.integrity, 'application/wasm')]);
    moduleUrl = m;
    paths = { mjs: loader, wasm: binary };
  } else {
    moduleUrl = url(files.module);
    paths = { mjs: url(files.loader), wasm: url(files.binary) };
  }
  onStatus(`loading onnxruntime-web ${runtime.version} (${backend})`);
  let ort;
  try {
    ort = await import(moduleUrl);
  } catch (err) {
    throw new Error(`could not load onnxruntime-web from ${runtime.source === 'cdn' ? base.href : 'ort/'} (${err.message})`);
  }
  ort = ort.default && ort.default.InferenceSession ? ort.default : ort;
  const isolated = self.crossOriginIsolated === true;
  // about one thread per physical core (half the logical CPUs: hyper-threads only fight over the SIMD units),
  // at least 2 and at most 8; ?threads=N overrides
  const auto = Math.min(8, Math.max(2, Math.ceil((navigator.hardwareConcurrency || 2) / 2)));
  const threads = isolated ? Math.max(1, Math.min(wantThreads || auto, 16)) : 1;
  ort.env.wasm.numThreads = threads;
  ort.env.wasm.wasmPaths = paths;
  ort.env.logLevel = 'error';
  // WebGPU: 'basic' graph optimisations only. With 'all', onnxruntime-web 1.31.1 fuses the johnson network's last
  // Conv and Sigmoid into a kernel that drops the Sigmoid (found by the Chromium test on a software adapter).
  // logSeverityLevel 3: errors only, no node-placement chatter in the console.
  const sessionOptions = { executionProviders: backend === 'webgpu' ? ['webgpu', 'wasm'] : ['wasm'],
    graphOptimizationLevel: backend === 'webgpu' ? 'basic' : 'all', logSeverityLevel: 3 };
  const label = backend === 'webgpu' ? 'WebGPU'
    : `WebAssembly · SIMD · ${threads} thread${threads > 1 ? 's' : ''}${isolated ? '' : ' (not cross-origin isolated)'}`;
  return { ort, backend, threads, label, sessionOptions };
}
