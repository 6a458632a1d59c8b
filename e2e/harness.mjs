// What the browser tests share: paths, a served app and a browser per test file, pages that
// collect uncaught errors, and downloads saved to a temporary folder.
import { before, after } from 'node:test';
import fs from 'node:fs';
import path from 'node:path';
import { serve } from './serve.mjs';
import { launch } from './browser.mjs';

export const repo = path.resolve(import.meta.dirname, '..');
export const fixture = (name) => path.join(repo, 'tests/fixtures', name);
export const ldmkit = process.env.LDMKIT ?? path.join(repo, 'target/release/ldmkit');
// The interop venv's Python (./test exports it); checks that need torch skip without it.
export const python = process.env.LDMKIT_PYTHON;
export const tmp = fs.mkdtempSync(path.join(process.env.TMPDIR ?? '/tmp', 'ldmkit-e2e-'));

// Serve www/ and start Chromium for the tests of one file; `app.page(hash)` opens the app.
export function useApp() {
  const app = {};
  before(async () => {
    app.srv = await serve(path.join(repo, 'www'));
    app.browser = await launch();
  });
  after(async () => {
    await app.browser?.close();
    app.srv?.server.close();
  });
  app.page = async (hash = '') => {
    const p = await app.browser.newPage();
    const errors = [];
    p.on('pageerror', (e) => errors.push(e));
    await p.goto(app.srv.url + hash);
    return { p, errors };
  };
  return app;
}

// Click the download link and save what it gives as `name` under tmp.
export async function download(p, name) {
  const [dl] = await Promise.all([p.waitForEvent('download'), p.click('#download')]);
  const file = path.join(tmp, name);
  await dl.saveAs(file);
  return file;
}

export const same = (a, b) => fs.readFileSync(a).equals(fs.readFileSync(b));
