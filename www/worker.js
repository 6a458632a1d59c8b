// The engine worker: loads the same wasm module as the page and serves requests with
// ldmkit-core. Messages that arrive while the module loads are queued, not lost.
import init, { start_worker } from './pkg/inspector_web.js';

const early = [];
self.onmessage = (e) => early.push(e);
await init();
start_worker();
for (const e of early) self.onmessage(e);
