// labtf web app service worker: the app shell, the model and the runtime are kept in a
// cache, so the page opens and classifies with no network after the first visit.
const CACHE = '__CACHE__';
const FILES = __FILES__;

self.addEventListener('install', (event) => {
  event.waitUntil(caches.open(CACHE).then((c) => c.addAll(FILES)).then(() => self.skipWaiting()));
});

self.addEventListener('activate', (event) => {
  event.waitUntil(caches.keys()
    .then((keys) => Promise.all(keys.filter((k) => k.startsWith('labtf-') && k !== CACHE)
      .map((k) => caches.delete(k))))
    .then(() => self.clients.claim()));
});

// The page names the runtime files it loaded (one of two wasm builds) to keep them too.
self.addEventListener('message', (event) => {
  if (event.data && event.data.type === 'keep') {
    event.waitUntil(caches.open(CACHE).then((c) => c.addAll(event.data.urls))
      .then(() => event.source.postMessage({type: 'kept', cache: CACHE}))
      .catch((e) => event.source.postMessage({type: 'keep-failed', error: String(e)})));
  }
});

self.addEventListener('fetch', (event) => {
  const req = event.request;
  if (req.method !== 'GET' || new URL(req.url).origin !== self.location.origin) return;
  event.respondWith(caches.match(req, {ignoreSearch: true}).then((hit) => hit || fetch(req)
    .then((resp) => {
      if (resp.ok) {
        const copy = resp.clone();
        caches.open(CACHE).then((c) => c.put(req, copy));
      }
      return resp;
    })));
});
