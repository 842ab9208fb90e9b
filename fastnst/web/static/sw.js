// The page's service worker: keeps what the page has loaded so that it works offline afterwards, and adds the
// cross-origin-isolation headers (needed for WebAssembly threads) on static hosts that cannot set them.
// The cache name changes with every export (stamped by fastnst), so a new export replaces the old files.
const CACHE = 'fastnst-__FASTNST_CACHE_VERSION__';
const PAGE = ['./', 'index.html', 'style.css', 'model.json', 'js/app.js', 'js/model.js', 'js/pixels.js', 'js/runtime.js',
  'js/onnxmeta.js', 'js/webcam.js', 'js/ui.js', 'js/styles.js'];

self.addEventListener('install', (event) => {
  event.waitUntil(caches.open(CACHE).then((c) => c.addAll(PAGE)).then(() => self.skipWaiting()));
});

self.addEventListener('activate', (event) => {
  event.waitUntil(caches.keys()
    .then((keys) => Promise.all(keys.filter((k) => k.startsWith('fastnst-') && k !== CACHE).map((k) => caches.delete(k))))
    .then(() => self.clients.claim()));
});

function isolated(response) {
  if (!response || response.status === 0 || response.type === 'opaque') return response;
  const headers = new Headers(response.headers);
  headers.set('Cross-Origin-Opener-Policy', 'same-origin');
  headers.set('Cross-Origin-Embedder-Policy', 'require-corp');
  if (new URL(response.url || self.location.href).origin === self.location.origin) headers.set('Cross-Origin-Resource-Policy', 'same-origin');
  return new Response(response.body, { status: response.status, statusText: response.statusText, headers });
}

// Big files that never change within one export (the runtime, the models) come from the cache first; the small
// page files from the network first, so an edit shows at once, and from the cache when offline.
function cacheFirst(request) { return /\/ort\/|\.onnx$|\.wasm$/.test(new URL(request.url).pathname); }

self.addEventListener('fetch', (event) => {
  const request = event.request;
  if (request.method !== 'GET') return;
  const url = new URL(request.url);
  const sameOrigin = url.origin === self.location.origin;
  if (!sameOrigin && request.mode !== 'cors') return;  // the user's cross-origin images etc.: untouched
  event.respondWith((async () => {
    const cache = await caches.open(CACHE);
    const cached = await cache.match(request, { ignoreSearch: request.mode === 'navigate' });
    if (cached && (cacheFirst(request) || !sameOrigin)) return isolated(cached);
    try {
      const response = await fetch(request);
      if (response.ok && (sameOrigin || response.type === 'cors')) cache.put(request, response.clone());
      return isolated(response);
    } catch (err) {
      if (cached) return isolated(cached);
      throw err;
    }
  })());
});
