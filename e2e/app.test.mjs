// End-to-end tests of the web app in headless Chromium: what a user does, checked against
// the native CLI (the same recipe must give the same bytes).
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { execFileSync } from 'node:child_process';
import { serve } from './serve.mjs';
import { launch } from './browser.mjs';

const repo = path.resolve(import.meta.dirname, '..');
const fixture = (name) => path.join(repo, 'tests/fixtures', name);
const ldmkit = process.env.LDMKIT ?? path.join(repo, 'target/release/ldmkit');
const tmp = fs.mkdtempSync(path.join(process.env.TMPDIR ?? '/tmp', 'ldmkit-e2e-'));
let srv, browser;

before(async () => {
  srv = await serve(path.join(repo, 'www'));
  browser = await launch();
});
after(async () => {
  await browser?.close();
  srv?.server.close();
});

async function page(hash = '') {
  const p = await browser.newPage();
  const errors = [];
  p.on('pageerror', (e) => errors.push(e));
  await p.goto(srv.url + hash);
  return { p, errors };
}

test('opening a training checkpoint shows its summary and keys', async () => {
  const { p, errors } = await page();
  await p.setInputFiles('#file', fixture('sd1_training.ckpt'));
  await p.locator('#architecture').waitFor();
  assert.equal(await p.locator('#format-value').textContent(), 'torch-zip');
  assert.match(await p.locator('#architecture').textContent(), /^sd1/);
  const components = await p.locator('#components').textContent();
  for (const c of ['unet', 'vae', 'text_encoder', 'ema', 'optimizer']) assert.ok(components.includes(c), c);
  assert.match(components, /^optimizer/, 'largest component first');
  await p.fill('#filter', 'attn2.to_k');
  const rows = await p.locator('#keys tr.key').count();
  assert.ok(rows > 0);
  await p.locator('#keys tr.key').first().click();
  await p.locator('#stats').waitFor();
  assert.match(await p.locator('#stats').textContent(), /min .* max .* mean/);
  await p.screenshot({ path: path.join(repo, 'docs/screenshot-summary.png'), fullPage: true });
  assert.deepEqual(errors, []);
});

test('strip to fp16 safetensors downloads what ldmkit strip writes', async () => {
  const { p, errors } = await page();
  await p.setInputFiles('#file', fixture('sd1_training.ckpt'));
  await p.locator('#architecture').waitFor();
  await p.selectOption('#action', 'strip');
  await p.selectOption('#dtype', 'f16');
  await p.click('#run');
  const [dl] = await Promise.all([p.waitForEvent('download'), p.click('#download')]);
  const got = path.join(tmp, 'browser.safetensors');
  await dl.saveAs(got);
  const want = path.join(tmp, 'cli.safetensors');
  execFileSync(ldmkit, ['strip', fixture('sd1_training.ckpt'), '--dtype', 'f16', '-o', want], { stdio: 'pipe' });
  assert.ok(fs.readFileSync(got).equals(fs.readFileSync(want)), 'browser output differs from the CLI');
  await p.screenshot({ path: path.join(repo, 'docs/screenshot-rewrite.png'), fullPage: true });
  assert.deepEqual(errors, []);
});

test('a recipe link asks for its inputs and gives what ldmkit apply gives', async () => {
  const link = '#recipe=1;inputs,training,base;open,training;strip;fill,base;ema,use;cast,bf16';
  const { p, errors } = await page(link);
  assert.match(await p.locator('#linked').textContent(), /training, base/);
  await p.setInputFiles('#file', [fixture('sd1_training.ckpt'), fixture('sd1_release.safetensors')]);
  await p.locator('#architecture').waitFor();
  await p.selectOption('#format', 'ckpt');
  await p.click('#run');
  const [dl] = await Promise.all([p.waitForEvent('download'), p.click('#download')]);
  const got = path.join(tmp, 'browser.ckpt');
  await dl.saveAs(got);
  const want = path.join(tmp, 'apply.ckpt');
  execFileSync(ldmkit, ['apply', 'http://127.0.0.1:8787/' + link, fixture('sd1_training.ckpt'),
    fixture('sd1_release.safetensors'), '-o', want], { stdio: 'pipe' });
  assert.ok(fs.readFileSync(got).equals(fs.readFileSync(want)), 'browser output differs from ldmkit apply');
  assert.deepEqual(errors, []);
});

test('a hostile pickle shows its dangerous globals and is never run', async () => {
  const { p, errors } = await page();
  const manifest = JSON.parse(fs.readFileSync(fixture('hostile/MANIFEST.json'), 'utf8'));
  const entry = manifest.find((e) => e.container === 'torch-zip' && e.expect === 'report'
    && e.dangerous.some((d) => d.endsWith('.system')));
  assert.ok(entry, 'the hostile corpus has a torch zip with an os.system payload');
  await p.setInputFiles('#file', fixture(path.join('hostile', entry.file)));
  await p.locator('#globals, #file-error').first().waitFor();
  const text = await p.locator('body').textContent();
  assert.match(text, /os\.system|posix\.system/);
  assert.deepEqual(errors, []);
});
