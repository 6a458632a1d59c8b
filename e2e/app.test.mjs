// End-to-end tests of the web app in headless Chromium: what a user does, checked against
// the native CLI (the same recipe must give the same bytes) and the Python libraries.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { execFileSync } from 'node:child_process';
import { useApp, download, fixture, ldmkit, python, repo, same, tmp } from './harness.mjs';

const app = useApp();

test('opening a training checkpoint shows its summary, key tree and a tensor histogram', async () => {
  const { p, errors } = await app.page();
  await p.setInputFiles('#file', fixture('sd1_training.ckpt'));
  await p.locator('#architecture').waitFor();
  assert.equal(await p.locator('#format-value').textContent(), 'torch-zip');
  assert.match(await p.locator('#architecture').textContent(), /^sd1/);
  assert.match(await p.locator('#dtypes').textContent(), /F32|float32/i);
  const components = await p.locator('#components').textContent();
  for (const c of ['unet', 'vae', 'text_encoder', 'ema', 'optimizer']) assert.ok(components.includes(c), c);
  assert.match(components, /^optimizer/, 'largest component first');
  // The tree: top-level prefixes first, expanded on click.
  const top = await p.locator('#keys tr.prefix').allTextContents();
  assert.ok(top.some((t) => t.includes('state_dict')), top.join('|'));
  await p.locator('#keys tr.prefix', { hasText: 'state_dict' }).first().click();
  await p.locator('#keys tr.prefix', { hasText: 'model.diffusion_model' }).first().click();
  assert.ok(await p.locator('#keys tr.prefix', { hasText: 'input_blocks' }).count() > 0);
  await p.screenshot({ path: path.join(repo, 'docs/screenshot-keys.png'), fullPage: true });
  await p.fill('#filter', 'attn2.to_k');
  assert.ok(await p.locator('#keys tr.key').count() > 0);
  await p.locator('#keys tr.key').first().click();
  await p.locator('#stats').waitFor();
  assert.match(await p.locator('#stats').textContent(), /min .* max .* mean/);
  await p.screenshot({ path: path.join(repo, 'docs/screenshot-summary.png'), fullPage: true });
  assert.deepEqual(errors, []);
});

test('strip to fp16 safetensors downloads what ldmkit strip writes, and torch agrees', async () => {
  const { p, errors } = await app.page();
  await p.setInputFiles('#file', fixture('sd1_training.ckpt'));
  await p.locator('#architecture').waitFor();
  await p.selectOption('#action', 'strip');
  await p.selectOption('#dtype', 'f16');
  await p.click('#run');
  const got = await download(p, 'browser.safetensors');
  const want = path.join(tmp, 'cli.safetensors');
  execFileSync(ldmkit, ['strip', fixture('sd1_training.ckpt'), '--dtype', 'f16', '-o', want], { stdio: 'pipe' });
  assert.ok(same(got, want), 'browser output differs from the CLI');
  // The same job done the Python way (torch.load, pop, cast), compared tensor for tensor by
  // safetensors and torch.
  assert.ok(python || !process.env.CI, 'CI runs these tests with LDMKIT_PYTHON set');
  if (python) {
    const seed = path.join(tmp, 'seed.safetensors');
    execFileSync(python, [path.join(repo, 'tests/python/seed.py'), 'strip', fixture('sd1_training.ckpt'), seed, '--dtype', 'f16'], { stdio: 'pipe' });
    execFileSync(python, [path.join(repo, 'tests/python/compare.py'), got, seed], { stdio: 'pipe' });
  }
  // And the CLI reads the download back.
  const report = JSON.parse(execFileSync(ldmkit, ['inspect', '--json', got], { encoding: 'utf8' }));
  assert.equal(report.format, 'safetensors');
  await p.screenshot({ path: path.join(repo, 'docs/screenshot-rewrite.png'), fullPage: true });
  assert.deepEqual(errors, []);
});

test('a recipe link asks for its inputs and gives what ldmkit apply gives', async () => {
  const link = '#recipe=1;inputs,training,base;open,training;strip;fill,base;ema,use;cast,bf16';
  const { p, errors } = await app.page(link);
  assert.match(await p.locator('#linked').textContent(), /training, base/);
  await p.setInputFiles('#file', [fixture('sd1_training.ckpt'), fixture('sd1_release.safetensors')]);
  await p.locator('#architecture').waitFor();
  await p.selectOption('#format', 'ckpt');
  await p.click('#run');
  const got = await download(p, 'browser.ckpt');
  const want = path.join(tmp, 'apply.ckpt');
  execFileSync(ldmkit, ['apply', 'http://127.0.0.1:8787/' + link, fixture('sd1_training.ckpt'),
    fixture('sd1_release.safetensors'), '-o', want], { stdio: 'pipe' });
  assert.ok(same(got, want), 'browser output differs from ldmkit apply');
  assert.deepEqual(errors, []);
});

test('a hostile pickle shows its dangerous globals and is never run', async () => {
  const { p, errors } = await app.page();
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

test('an unreadable file gets a one-line message naming it', async () => {
  const { p, errors } = await app.page();
  const bad = path.join(tmp, 'truncated.safetensors');
  fs.writeFileSync(bad, fs.readFileSync(fixture('sd1_release.safetensors')).subarray(0, 100));
  await p.setInputFiles('#file', bad);
  const message = await p.locator('#file-error').textContent();
  assert.match(message, /^truncated\.safetensors: /);
  assert.ok(!message.includes('\n'));
  assert.deepEqual(errors, []);
});
