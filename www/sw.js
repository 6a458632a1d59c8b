// Offline support: the app is a handful of static files. Each request goes to the network
// first (so a rebuilt app is picked up at once) and its answer is cached; when the network
// is gone the cached copy answers, so the app keeps working once it has been loaded.
const CACHE = 'ldmkit-v1';
const APP = ['./', './index.html', './style.css', './icon.svg', './worker.js',
  './pkg/inspector_web.js', './pkg/inspector_web_bg.wasm'];

self.addEventListener('install', (e) => {
  e.waitUntil(caches.open(CACHE).then((c) => c.addAll(APP)).then(() => self.skipWaiting()));
});
self.addEventListener('activate', (e) => e.waitUntil(self.clients.claim()));
self.addEventListener('fetch', (e) => {
  if (e.request.method !== 'GET' || new URL(e.request.url).origin !== self.location.origin) return;
  e.respondWith(fetch(e.request).then((res) => {
    if (res.ok) {
      const copy = res.clone();
      caches.open(CACHE).then((c) => c.put(e.request, copy));
    }
    return res;
  }).catch(() => caches.match(e.request, { ignoreSearch: true })
    .then((hit) => hit ?? Response.error())));
});
