// Browser tests of adapters: a LoRA's summary, block picture and metadata; hashes on demand;
// metadata editing; a bake downloaded byte-identical to `ldmkit bake-lora`; a recipe link
// with a LoRA step, as `ldmkit apply` runs it.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import path from 'node:path';
import { execFileSync } from 'node:child_process';
import { useApp, download, fixture, ldmkit, repo, same, tmp } from './harness.mjs';

const app = useApp();
const lora = fixture('adapters/sd1_kohya_lora.safetensors');
const loha = fixture('adapters/sd1_loha.safetensors');
const tiny = fixture('layouts/sd1_tiny_ldm.safetensors');
const cli = (args) => JSON.parse(execFileSync(ldmkit, args, { encoding: 'utf8' }));

test('a LoRA shows its kind, base, ranks, block picture, training table and ranked tags', async () => {
  const { p, errors } = await app.page();
  await p.setInputFiles('#file', lora);
  await p.locator('#adapter').waitFor();
  const want = cli(['inspect', '--json', lora]).adapter;
  assert.match(await p.locator('#adapter-kind').textContent(), /^LoRA \(kohya names\)/);
  assert.match(await p.locator('#adapter-base').textContent(), /^sd1/);
  assert.equal(await p.locator('#adapter-modules').textContent(), String(want.modules.length));
  assert.equal(await p.locator('#adapter-rank').textContent(), String(want.rank));
  // One column per block, as the CLI counts them.
  assert.equal(await p.locator('#block-picture rect').count(), want.blocks.length);
  const tags = await p.locator('#tags li .tag').allTextContents();
  assert.deepEqual(tags.slice(0, 3), want.training.tags.slice(0, 3).map((t) => t[0]));
  assert.match(await p.locator('#training').textContent(), /learning rate/);
  await p.screenshot({ path: path.join(repo, 'docs/screenshot-lora.png'), fullPage: true });
  assert.deepEqual(errors, []);
});

test('hashes on demand equal ldmkit hash, and a metadata edit keeps AutoV3', async () => {
  const { p, errors } = await app.page();
  await p.setInputFiles('#file', lora);
  await p.locator('#adapter').waitFor();
  await p.click('#hash');
  await p.locator('#hashes').waitFor();
  const [want] = cli(['hash', '--json', lora]);
  assert.equal(await p.locator('#hash-autov2').textContent(), want.autov2);
  assert.equal(await p.locator('#hash-autov3').textContent(), want.autov3);
  assert.equal(await p.locator('#hash-legacy').textContent(), want.legacy);
  assert.equal(await p.locator('#hash-sha256').textContent(), want.sha256);
  // Edit: a title added; the download is what `ldmkit meta --title` writes.
  const meta = JSON.parse(await p.locator('#meta-json').inputValue());
  meta['modelspec.title'] = 'Edited in the browser';
  await p.fill('#meta-json', JSON.stringify(meta));
  await p.click('#meta-save');
  const got = await download(p, 'edited.safetensors');
  const expected = path.join(tmp, 'edited-cli.safetensors');
  execFileSync(ldmkit, ['meta', lora, '--title', 'Edited in the browser', '-o', expected], { stdio: 'pipe' });
  assert.ok(same(got, expected), 'browser metadata edit differs from ldmkit meta');
  const [before, after] = cli(['hash', '--json', lora, got]);
  assert.equal(after.autov3, before.autov3);
  assert.notEqual(after.autov2, before.autov2);
  assert.deepEqual(errors, []);
});

test('baking two LoRAs downloads exactly what ldmkit bake-lora writes', async () => {
  const { p, errors } = await app.page();
  await p.setInputFiles('#file', [tiny, lora, loha]);
  await p.locator('#architecture').first().waitFor();
  await p.selectOption('#action', 'bake-lora');
  await p.selectOption('#dtype', 'keep');
  await p.fill('#alpha', '0.75');
  await p.fill('#blocks', 'MIDD');
  const text = await p.locator('#recipe').textContent();
  assert.match(text, /bake-lora lora1 0\.75 blocks=MIDD\nbake-lora lora2 0\.75 blocks=MIDD/);
  await p.click('#run');
  const got = await download(p, 'baked.safetensors');
  const want = path.join(tmp, 'baked-cli.safetensors');
  execFileSync(ldmkit, ['bake-lora', tiny, `${lora}:0.75:MIDD`, `${loha}:0.75:MIDD`, '-o', want], { stdio: 'pipe' });
  assert.ok(same(got, want), 'browser bake differs from ldmkit bake-lora');
  assert.match(await p.locator('.notes').textContent(), /baked lora1 \(LoRA, \d+ modules\) at 0\.75 \(blocks MIDD\)/);
  assert.deepEqual(errors, []);
});

test('a recipe link with a LoRA step gives what ldmkit apply gives', async () => {
  const link = '#recipe=1;inputs,model,style;open,model;bake-lora,style,0.6;cast,f16';
  const { p, errors } = await app.page(link);
  assert.match(await p.locator('#linked').textContent(), /model, style/);
  await p.setInputFiles('#file', [tiny, loha]);
  await p.locator('#architecture').first().waitFor();
  await p.click('#run');
  const got = await download(p, 'linked.safetensors');
  const want = path.join(tmp, 'linked-cli.safetensors');
  execFileSync(ldmkit, ['apply', 'http://127.0.0.1:8787/' + link, tiny, loha, '-o', want], { stdio: 'pipe' });
  assert.ok(same(got, want), 'browser output differs from ldmkit apply');
  assert.deepEqual(errors, []);
});
