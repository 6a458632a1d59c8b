// Once loaded, the app works with the server gone: open a file and see its summary.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import path from 'node:path';
import { serve } from './serve.mjs';
import { launch } from './browser.mjs';
import { fixture, repo } from './harness.mjs';

test('the app works offline once loaded', async () => {
  const srv = await serve(path.join(repo, 'www'));
  const browser = await launch();
  try {
    const context = await browser.newContext();
    const p = await context.newPage();
    const errors = [];
    p.on('pageerror', (e) => errors.push(e));
    await p.goto(srv.url);
    await p.evaluate(() => navigator.serviceWorker.ready.then(() => true));
    // And every file of the app is in its cache (on a loaded machine the worker can be
    // active a moment before the precache is visible to this page).
    await p.evaluate(async () => {
      for (let i = 0; i < 200; i++) {
        if (await caches.match('./pkg/inspector_web_bg.wasm') && await caches.match('./worker.js')) return;
        await new Promise((r) => setTimeout(r, 50));
      }
      throw new Error('the app was never cached');
    });
    // The server goes away (a real outage, not an emulated one).
    await new Promise((resolve) => { srv.server.close(resolve); srv.server.closeAllConnections(); });
    await p.reload();
    await p.setInputFiles('#file', fixture('sd1_release.safetensors'));
    assert.match(await p.locator('#architecture').textContent(), /^sd1/);
    assert.deepEqual(errors, []);
  } finally {
    await browser.close();
    srv.server.close();
  }
});
