// The large-file test (LDMKIT_LARGE=1, via bench/browser_large.sh): a full-size SD 1.x training
// checkpoint (14.6 GB, generated) through strip and merge in headless Chromium, with a profile
// on disk as a user's browser has. Each download must equal what the CLI writes with the same
// recipe; the browser's peak memory and the time from click to download-ready are recorded in
// bench/results/browser-large.md.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import crypto from 'node:crypto';
import { execFileSync } from 'node:child_process';
import { serve } from './serve.mjs';
import { launchPersistent, sampleMemory, browserMemory } from './browser.mjs';

const large = process.env.LDMKIT_LARGE === '1';
const repo = path.resolve(import.meta.dirname, '..');
const out = path.join(repo, 'bench/out');
const training = process.env.TRAINING ?? path.join(out, 'sd1-training.ckpt');
const base = process.env.BASE ?? path.join(out, 'sd1-release.ckpt');
const ldmkit = process.env.LDMKIT ?? path.join(repo, 'target/release/ldmkit');
const results = [];
let srv, context, profile;

const gb = (b) => (b / 1e9).toFixed(2) + ' GB';
const mib = (b) => Math.round(b / 2 ** 20) + ' MiB';

function sha256(file) {
  const hash = crypto.createHash('sha256');
  const fd = fs.openSync(file, 'r');
  const buf = Buffer.alloc(16 << 20);
  let n;
  while ((n = fs.readSync(fd, buf, 0, buf.length, null)) > 0) hash.update(buf.subarray(0, n));
  fs.closeSync(fd);
  return hash.digest('hex');
}

before(async () => {
  if (!large) return;
  srv = await serve(path.join(repo, 'www'));
  profile = fs.mkdtempSync(path.join(process.env.TMPDIR ?? os.tmpdir(), 'ldmkit-profile-'));
  context = await launchPersistent(profile);
});
after(async () => {
  await context?.close();
  srv?.server.close();
  if (profile) fs.rmSync(profile, { recursive: true, force: true });
  if (results.length) {
    const md = path.join(repo, 'bench/results/browser-large.md');
    const cpu = os.cpus()[0]?.model ?? 'unknown CPU';
    const chromium = execFileSync(process.env.CHROMIUM ?? '/usr/bin/chromium', ['--version'], { encoding: 'utf8' }).trim();
    const lines = [`\n## ${new Date().toISOString().slice(0, 10)}: ${os.cpus().length} × ${cpu}, ${gb(os.totalmem())} RAM, ${chromium}\n`,
      '| job | inputs | open → summary shown | output | click → download ready | download saved | CLI, same recipe | Chromium peak RSS (all processes / largest) | before |',
      '|---|---|---|---|---|---|---|---|---|',
      ...results.map((r) => `| ${r.job} | ${r.inputs} | ${r.summary.toFixed(2)} s | ${gb(r.bytes)} | ${r.ready.toFixed(1)} s | ${r.saved.toFixed(1)} s | ${r.cli.toFixed(1)} s | ${mib(r.peak.sum)} / ${mib(r.peak.largest)} | ${mib(r.idle.sum)} |`)];
    fs.appendFileSync(md, lines.join('\n') + '\n');
  }
});

async function job(name, files, action, cli, alpha) {
  const page = await context.newPage();
  const errors = [];
  page.on('pageerror', (e) => errors.push(e));
  await page.goto(srv.url);
  await page.locator('#engine-ready').waitFor({ state: 'attached' });
  const idle = browserMemory();
  const tOpen = performance.now();
  await page.setInputFiles('#file', files);
  await page.locator('#architecture').first().waitFor();
  const summary = (performance.now() - tOpen) / 1000;
  await page.selectOption('#action', action);
  await page.selectOption('#dtype', 'f16');
  await page.selectOption('#format', 'safetensors');
  if (alpha !== undefined) await page.fill('#alpha', String(alpha));
  const sampler = sampleMemory();
  const t0 = performance.now();
  await page.click('#run');
  await page.locator('#download').waitFor({ timeout: 30 * 60 * 1000 });
  const ready = (performance.now() - t0) / 1000;
  const got = path.join(out, `browser-${name}.safetensors`);
  const t1 = performance.now();
  const [dl] = await Promise.all([page.waitForEvent('download'), page.click('#download')]);
  await dl.saveAs(got);
  const saved = (performance.now() - t1) / 1000;
  const peak = sampler.stop();
  assert.deepEqual(errors, []);
  await page.close();

  const want = path.join(out, `cli-${name}.safetensors`);
  const t2 = performance.now();
  execFileSync(ldmkit, [...cli, '--dtype', 'f16', '-o', want], { stdio: 'pipe' });
  const cliTime = (performance.now() - t2) / 1000;
  const bytes = fs.statSync(got).size;
  assert.equal(bytes, fs.statSync(want).size);
  assert.equal(sha256(got), sha256(want), `${name}: the browser's output differs from the CLI's`);
  const inputs = files.map((f) => `${path.basename(f)} (${gb(fs.statSync(f).size)})`).join(' + ');
  results.push({ job: name, inputs, bytes, summary, ready, saved, cli: cliTime, peak, idle });
  console.log(`${name}: ${gb(bytes)}, ready in ${ready.toFixed(1)} s, saved in ${saved.toFixed(1)} s, ` +
    `CLI ${cliTime.toFixed(1)} s, Chromium peak ${mib(peak.sum)} (largest process ${mib(peak.largest)})`);
  fs.rmSync(got);
  fs.rmSync(want);
}

// LDMKIT_LARGE_JOBS=bake runs only the LoRA bakes (inputs from bench/bake_lora.sh).
const only = process.env.LDMKIT_LARGE_JOBS;
const want = (j) => large && (!only || only.split(',').includes(j));
const sd1 = process.env.SD1 ?? path.join(out, 'sd1-release.safetensors');
const sdxl = process.env.SDXL ?? path.join(out, 'sdxl-base-fp16.safetensors');
// bench/bake_lora.sh's LoRAs: MODEL's name + `.lora-r32-sN.safetensors`.
const loras = (model, n) => Array.from({ length: n }, (_, i) => model.replace(/\.safetensors$/, `.lora-r32-s${i + 1}.safetensors`));

test('bake a rank-32 LoRA into a full-size SD 1.5 release in the browser', { skip: !want('bake') || !fs.existsSync(sd1) }, async () => {
  const [l] = loras(sd1, 1);
  await job('bake-sd1', [sd1, l], 'bake-lora', ['bake-lora', sd1, `${l}:0.8`], 0.8);
});

test('bake three rank-32 LoRAs into a full-size SDXL fp16 checkpoint in the browser', { skip: !want('bake') || !fs.existsSync(sdxl) }, async () => {
  const ls = loras(sdxl, 3);
  await job('bake-sdxl', [sdxl, ...ls], 'bake-lora', ['bake-lora', sdxl, ...ls.map((l) => `${l}:0.8`)], 0.8);
});

test('strip a 14.6 GB training checkpoint to fp16 safetensors in the browser', { skip: !want('strip') }, async () => {
  await job('strip', [training], 'strip', ['strip', training]);
});

test('merge a 14.6 GB training checkpoint with its base to fp16 safetensors in the browser', { skip: !want('merge') }, async () => {
  await job('merge', [training, base], 'merge', ['merge', training, base]);
});
