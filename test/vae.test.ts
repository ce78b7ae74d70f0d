// AutoencoderKL against diffusers (../shared/conformance/vae): encoder mean/logvar and decoder output; then
// sampling from a seed, and bad input.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { assertTensorClose, conformance, conformanceDir, readJson } from './helpers.ts';
import { Tensor, numel } from '../src/engine/tensor.ts';
import { AutoencoderKL } from '../src/models/autoencoder_kl.ts';
import { loadSafetensors, saveSafetensors } from '../src/io/safetensors.ts';

const dir = `${conformanceDir}/vae`;

test('vae: encode (mean, logvar) and decode match diffusers', async () => {
  const io = conformance('vae');
  const vae = AutoencoderKL.fromPretrained(dir);
  assert.is(vae.scalingFactor, 0.18215);
  const { mean, logvar } = vae.encode(io.get('image'));
  await assertTensorClose(mean, io.get('mean'), 1e-3, 'mean');
  await assertTensorClose(logvar, io.get('logvar'), 1e-3, 'logvar');
  await assertTensorClose(vae.decode(io.get('latents')), io.get('decoded'), 1e-3, 'decoded');
  vae.dispose();
});

test('vae: sampling from a seed is reproducible and has the posterior mean and std', async () => {
  const io = conformance('vae');
  const vae = AutoencoderKL.fromPretrained(dir);
  const shape = [1, 4, 64, 64];
  const dist = { mean: Tensor.fromArray(new Float32Array(numel(shape)).fill(0.5), shape), logvar: Tensor.fromArray(new Float32Array(numel(shape)).fill(Math.log(4)), shape) };
  const a = Float32Array.from(await vae.sample(dist, { seed: 7 }).toArray());
  assert.equal(await vae.sample(dist, { seed: 7 }).toArray(), a, 'same seed, same draw');
  assert.not.equal(await vae.sample(dist, { seed: 8 }).toArray(), a, 'other seed, other draw');
  const m = a.reduce((s, v) => s + v, 0) / a.length;
  const sd = Math.sqrt(a.reduce((s, v) => s + (v - m) ** 2, 0) / a.length);
  // 16384 draws: the sample mean is within 0.05 of 0.5 and the std within 0.05 of 2 with overwhelming probability
  assert.ok(Math.abs(m - 0.5) < 0.05, `mean ${m}`);
  assert.ok(Math.abs(sd - 2) < 0.05, `std ${sd}`);
  const latents = vae.sample(vae.encode(io.get('image')), { seed: 1 });
  assert.equal([...latents.shape], [1, 4, 16, 16]);
  vae.dispose();
});

test('vae: bad input and configs are named', async () => {
  const fs = process.getBuiltinModule('node:fs');
  const os = process.getBuiltinModule('node:os');
  const path = process.getBuiltinModule('node:path');
  const config = await readJson<Record<string, unknown>>(`${dir}/config.json`);
  const d = fs.mkdtempSync(path.join(os.tmpdir(), 'vae-'));
  fs.writeFileSync(`${d}/config.json`, JSON.stringify({ ...config, up_block_types: ['UpDecoderBlock2D', 'AttnUpDecoderBlock2D'] }));
  assert.throws(() => AutoencoderKL.fromPretrained(d), (e: Error) => e.message.includes(`${d}/config.json`) && e.message.includes("up_block_types[1] is 'AttnUpDecoderBlock2D'"));
  const vae = AutoencoderKL.fromPretrained(dir);
  assert.throws(() => vae.decode(Tensor.zeros([1, 3, 8, 8])), /AutoencoderKL.decode: latents \[1, 3, 8, 8\] must be \[batch, 4, height, width\]/);
  assert.throws(() => vae.encode(Tensor.zeros([1, 4, 8, 8])), /AutoencoderKL.encode: image/);
  vae.dispose();
});

test('vae: a file with legacy attention names (query/key/value/proj_attn) loads as diffusers renames it', async () => {
  const fs = process.getBuiltinModule('node:fs');
  const os = process.getBuiltinModule('node:os');
  const path = process.getBuiltinModule('node:path');
  const io = conformance('vae');
  const d = fs.mkdtempSync(path.join(os.tmpdir(), 'vae-legacy-'));
  fs.copyFileSync(`${dir}/config.json`, `${d}/config.json`);
  const legacy: Record<string, Tensor> = {};
  const names: Record<string, string> = { to_q: 'query', to_k: 'key', to_v: 'value', 'to_out.0': 'proj_attn' };
  for (const [k, t] of loadSafetensors(`${dir}/model.safetensors`)) legacy[k.replace(/\.(to_q|to_k|to_v|to_out\.0)\./, (_, n: string) => `.${names[n]}.`)] = t;
  assert.ok('decoder.mid_block.attentions.0.proj_attn.weight' in legacy);
  await saveSafetensors(`${d}/diffusion_pytorch_model.safetensors`, legacy);
  const vae = AutoencoderKL.fromPretrained(d);
  await assertTensorClose(vae.decode(io.get('latents')), io.get('decoded'), 1e-3, 'decoded from legacy names');
  vae.dispose();
});

test.run();
