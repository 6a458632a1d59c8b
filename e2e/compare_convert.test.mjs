// Browser tests of the diff view, LDM <-> diffusers conversion, and cancelling a run.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { execFileSync } from 'node:child_process';
import { useApp, download, fixture, ldmkit, python, repo, same, tmp } from './harness.mjs';

const app = useApp();
const tiny = fixture('layouts/sd1_tiny_ldm.safetensors');

// Every file under `dir`, by relative path.
function walk(dir, base = dir) {
  return fs.readdirSync(dir, { withFileTypes: true }).flatMap((e) => {
    const full = path.join(dir, e.name);
    return e.isDirectory() ? walk(full, base) : [path.relative(base, full)];
  }).sort();
}

// Copy a float32 safetensors file with the tensors under each prefix multiplied by a factor.
function scaled(from, to, factors) {
  const bytes = fs.readFileSync(from);
  const n = Number(bytes.readBigUInt64LE(0));
  const table = JSON.parse(bytes.subarray(8, 8 + n).toString());
  for (const [name, info] of Object.entries(table)) {
    const factor = factors.find(([prefix]) => name.startsWith(prefix))?.[1];
    if (!factor || info.dtype !== 'F32') continue;
    const [begin, end] = info.data_offsets;
    for (let at = 8 + n + begin; at < 8 + n + end; at += 4) bytes.writeFloatLE(bytes.readFloatLE(at) * factor, at);
  }
  fs.writeFileSync(to, bytes);
  return to;
}

test('comparing two checkpoints draws the change per component and per UNet block', async () => {
  // B: A with one UNet block doubled (a 100 % change), the UNet's output layer scaled by
  // 1.25 (25 %) and the VAE by 1.01 (1 %); everything else untouched.
  const b = scaled(fixture('sd1_release.safetensors'), path.join(tmp, 'scaled.safetensors'), [
    ['model.diffusion_model.input_blocks.1.', 2], ['model.diffusion_model.out.', 1.25], ['first_stage_model.', 1.01]]);
  const { p, errors } = await app.page();
  await p.setInputFiles('#file', [fixture('sd1_release.safetensors'), b]);
  await p.locator('#architecture').first().waitFor();
  await p.click('#compare');
  await p.locator('#diff').waitFor();
  const cli = JSON.parse(execFileSync(ldmkit, ['diff', '--json', fixture('sd1_release.safetensors'), b], { encoding: 'utf8' }));
  const changed = cli.tensors.filter((t) => t.relative > 0).length;
  assert.match(await p.locator('#diff').textContent(), new RegExp(`${changed} tensors changed, ${cli.identical} identical`));
  const rows = await p.locator('#diff-components .bar-row').count();
  assert.equal(rows, cli.components.length);
  assert.equal(await p.locator('#diff-blocks .column').count(), cli.unet_blocks.length);
  const block = (name) => cli.unet_blocks.find((g) => g.name === name).relative;
  assert.ok(Math.abs(block('input_blocks.1') - 1) < 1e-6 && Math.abs(block('out') - 0.25) < 1e-6);
  const titles = await p.locator('#diff-blocks .column').evaluateAll((cols) => cols.map((c) => c.title));
  assert.ok(titles.includes('input_blocks.1: 100 % (' + cli.unet_blocks.find((g) => g.name === 'input_blocks.1').changed
    + ' of ' + cli.unet_blocks.find((g) => g.name === 'input_blocks.1').tensors + ' tensors changed)'), titles.join('|'));
  assert.match(await p.locator('#diff-components').textContent(), /vae1\.00 %/);
  await p.screenshot({ path: path.join(repo, 'docs/screenshot-diff.png'), fullPage: true });
  assert.deepEqual(errors, []);
});

test('convert to diffusers downloads a zip of the folder ldmkit convert writes, and back again', async () => {
  const { p, errors } = await app.page();
  await p.setInputFiles('#file', tiny);
  await p.locator('#architecture').waitFor();
  await p.selectOption('#action', 'to-diffusers');
  assert.equal(await p.locator('#format').inputValue(), 'diffusers');
  await p.selectOption('#dtype', 'keep');
  await p.click('#run');
  const zip = await download(p, 'browser-diffusers.zip');
  const unzipped = path.join(tmp, 'browser-diffusers');
  // Python's own zipfile reads the archive (CRCs checked on extraction).
  execFileSync(python ?? 'python3', ['-m', 'zipfile', '-e', zip, unzipped]);
  const folder = path.join(tmp, 'cli-diffusers');
  execFileSync(ldmkit, ['convert', tiny, '--layout', 'diffusers', '-o', folder], { stdio: 'pipe' });
  assert.deepEqual(walk(unzipped), walk(folder));
  for (const f of walk(folder)) assert.ok(same(path.join(unzipped, f), path.join(folder, f)), f);

  // Back: the folder, picked as a folder, to one LDM safetensors file.
  const back = await app.page();
  await back.p.setInputFiles('#folder', folder);
  await back.p.locator('#architecture').first().waitFor();
  await back.p.selectOption('#action', 'to-ldm');
  await back.p.selectOption('#dtype', 'keep');
  await back.p.click('#run');
  const got = await download(back.p, 'browser-ldm.safetensors');
  const want = path.join(tmp, 'cli-ldm.safetensors');
  execFileSync(ldmkit, ['convert', folder, '--layout', 'ldm', '-o', want], { stdio: 'pipe' });
  assert.ok(same(got, want), 'browser output differs from ldmkit convert');
  assert.deepEqual([...errors, ...back.errors], []);
});

// A safetensors file whose header has the given tensors (name -> [dtype, shape, bytes]), its
// data a sparse hole: large files that cost no disk.
function sparseSafetensors(file, tensors) {
  const table = {};
  let at = 0;
  for (const [name, [dtype, shape, bytes]] of Object.entries(tensors)) {
    table[name] = { dtype, shape, data_offsets: [at, at + bytes] };
    at += bytes;
  }
  let header = JSON.stringify(table);
  header += ' '.repeat((8 - (header.length % 8)) % 8);
  const head = Buffer.alloc(8 + header.length);
  head.writeBigUInt64LE(BigInt(header.length));
  head.write(header, 8);
  fs.writeFileSync(file, head);
  fs.truncateSync(file, head.length + at);
  return file;
}

test('a safetensors file past 4 GiB, with a 4 GiB tensor, opens in the browser', async () => {
  // 32-bit sizes (the browser's usize) cannot hold these offsets.
  const n = 2 ** 31;
  const file = sparseSafetensors(path.join(tmp, 'past4gib.safetensors'), {
    'model.diffusion_model.huge': ['F16', [n], 2 * n],
    'model.diffusion_model.after': ['F32', [256], 1024],
  });
  const { p, errors } = await app.page();
  await p.setInputFiles('#file', file);
  await p.locator('#architecture').waitFor();
  assert.equal(await p.locator('#tensor-count').textContent(), '2');
  await p.fill('#filter', 'after');
  await p.locator('#keys tr.key').first().click();
  await p.locator('#stats').waitFor();
  assert.match(await p.locator('#stats').textContent(), /min 0\.0000e0  max 0\.0000e0/);
  assert.deepEqual(errors, []);
});

test('cancel stops a run at once, leaves no download, and the next run works', async () => {
  // A 512 MB float32 safetensors (sparse on disk): casting it takes seconds.
  const n = 128 * 1024 * 1024;
  const big = sparseSafetensors(path.join(tmp, 'big.safetensors'), { 'model.diffusion_model.w': ['F32', [n], n * 4] });
  const { p, errors } = await app.page();
  await p.setInputFiles('#file', big);
  await p.locator('#architecture').waitFor();
  await p.selectOption('#dtype', 'f16');
  // How long the run takes when left alone.
  let t = performance.now();
  await p.click('#run');
  await p.locator('#download').waitFor();
  const full = performance.now() - t;
  // Now cancelled at its start: nothing may arrive, even after the full run's time.
  await p.click('#run');
  await p.locator('#progress').waitFor();
  await p.click('#cancel');
  assert.equal(await p.locator('#error').textContent(), 'cancelled');
  await p.waitForTimeout(full + 1000);
  assert.equal(await p.locator('#download').count(), 0);
  assert.equal(await p.locator('#progress').count(), 0);
  // The engine was replaced; a new run completes.
  await p.selectOption('#dtype', 'keep');
  await p.click('#run');
  const got = await download(p, 'after-cancel.safetensors');
  const report = JSON.parse(execFileSync(ldmkit, ['inspect', '--json', got], { encoding: 'utf8' }));
  assert.deepEqual(report.tensors.map((t) => [t.name, t.dtype, t.shape]), [['model.diffusion_model.w', 'float32', [n]]]);
  assert.deepEqual(errors, []);
});
