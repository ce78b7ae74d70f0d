// f16 weight storage for inference (`Module.half()`, `fromPretrained(dir, { dtype: 'f16' })`): a model with f16
// weights computes what the f32 model computes with its weights rounded to f16 on the CPU (the reference), on
// the conformance UNet, VAE and CLIP text encoder; same state_dict keys, weight memory halved, F16 files saved,
// f16 and f32 files both load; gradients reach inputs and the f32 parameters, never the frozen f16 weights.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { assertClose, assertTensorClose, conformance, conformanceDir, randomArray } from './helpers.ts';
import { Tensor, bytesPerElement, f16ToF32, f32ToF16, memoryStats } from '../src/engine/tensor.ts';
import { backward } from '../src/engine/autograd.ts';
import { sum } from '../src/kernels/reduce.ts';
import { loadSafetensors, saveSafetensors } from '../src/io/safetensors.ts';
import { Conv2d, Linear } from '../src/nn/layers.ts';
import { Module } from '../src/nn/module.ts';
import { UNet2DConditionModel } from '../src/models/unet_2d_condition.ts';
import { AutoencoderKL } from '../src/models/autoencoder_kl.ts';
import { CLIPTextModel } from '../src/models/clip_text_model.ts';

const fs = process.getBuiltinModule('node:fs');
const os = process.getBuiltinModule('node:os');
const path = process.getBuiltinModule('node:path');

/** Rounds every weight of rank ≥ 2 of an f32 model to the nearest f16 value, on the CPU. */
async function roundWeightsToF16(model: Module): Promise<void> {
  const rounded = new Map<string, Tensor>();
  for (const [name, t] of Object.entries(model.stateDict())) {
    const v = await t.toArray();
    rounded.set(name, Tensor.fromArray(t.rank >= 2 ? v.map((x) => f16ToF32(f32ToF16(x))) : v, t.shape, t.dtype));
  }
  model.loadStateDict(rounded);
  for (const t of rounded.values()) t.dispose();
}

function weightBytes(model: Module): number {
  return Object.values(model.stateDict()).reduce((s, t) => s + t.size * bytesPerElement[t.dtype], 0);
}

/** Same keys; rank ≥ 2 in f16, the rest f32; f16 weights frozen (not parameters). */
function assertHalfLayout(half: Module, full: Module, what: string): void {
  const h = half.stateDict();
  const f = full.stateDict();
  assert.equal(Object.keys(h).sort(), Object.keys(f).sort(), `${what}: state_dict keys`);
  for (const [name, t] of Object.entries(h)) {
    assert.is(t.dtype, f[name]!.rank >= 2 ? 'f16' : 'f32', `${what}: ${name} dtype`);
    assert.equal(t.shape, f[name]!.shape, `${what}: ${name} shape`);
  }
  assert.ok(half.parameters().every((p) => p.dtype === 'f32'), `${what}: only f32 tensors are parameters`);
  const ratio = weightBytes(half) / weightBytes(full);
  assert.ok(ratio > 0.49 && ratio < 0.55, `${what}: weight bytes f16/f32 = ${ratio.toFixed(3)}`);
}

/** A copy of a model folder whose weights file is `record` saved as safetensors. */
async function folderWith(dir: string, record: Record<string, Tensor>, file: string): Promise<string> {
  const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'freemask-f16-'));
  fs.copyFileSync(`${dir}/config.json`, `${tmp}/config.json`);
  await saveSafetensors(`${tmp}/${file}`, record);
  return tmp;
}

test('half: UNet in f16 equals the f32 UNet with f16-rounded weights; memory halved; F16 files save and load', async () => {
  const dir = `${conformanceDir}/unet`;
  const io = conformance('unet');
  const args = [io.get('sample'), io.get('timestep'), io.get('encoder_hidden_states')] as const;
  const before = memoryStats().liveBytes;
  const half = UNet2DConditionModel.fromPretrained(dir, { dtype: 'f16' });
  const halfLive = memoryStats().liveBytes - before;
  const full = UNet2DConditionModel.fromPretrained(dir);
  const fullLive = memoryStats().liveBytes - before - halfLive;
  assertHalfLayout(half, full, 'unet');
  assert.ok(halfLive < 0.56 * fullLive, `unet: live GPU bytes f16 ${halfLive} vs f32 ${fullLive}`);
  const unrounded = await full.forward(...args).toArray();
  await roundWeightsToF16(full);
  const ref = full.forward(...args);
  // the rounding is visible at this tolerance, so the match below says the weights really are f16
  const refValues = await ref.toArray();
  assert.ok(unrounded.some((v, i) => Math.abs(v - refValues[i]!) > 1e-4), 'f16 rounding changes the output');
  await assertTensorClose(half.forward(...args), ref, 1e-5, 'unet f16 vs rounded f32');
  // still the model diffusers ran, to f16 rounding of the weights
  await assertTensorClose(half.forward(...args), io.get('out'), 2e-2, 'unet f16 vs diffusers f32');

  // an f16 model saves F16 tensors under the same keys; that file loads into f16 and into f32 models alike
  const tmp = await folderWith(dir, half.stateDict(), 'diffusion_pytorch_model.fp16.safetensors');
  const reader = loadSafetensors(`${tmp}/diffusion_pytorch_model.fp16.safetensors`);
  for (const name of reader.keys()) assert.is(reader.info(name).dtype, half.stateDict()[name]!.dtype === 'f16' ? 'F16' : 'F32', name);
  reader.close();
  const again = UNet2DConditionModel.fromPretrained(tmp, { dtype: 'f16' });
  await assertTensorClose(again.forward(...args), ref, 1e-5, 'unet f16 from an F16 file');
  const widened = UNet2DConditionModel.fromPretrained(tmp);
  assert.ok(widened.parameters().every((p) => p.dtype === 'f32'));
  await assertTensorClose(widened.forward(...args), ref, 1e-5, 'unet f32 from an F16 file');
  for (const m of [half, full, again, widened]) m.dispose();
  fs.rmSync(tmp, { recursive: true });
});

test('half: VAE in f16 (encode and decode) equals the f32 VAE with f16-rounded weights', async () => {
  const dir = `${conformanceDir}/vae`;
  const io = conformance('vae');
  const half = AutoencoderKL.fromPretrained(dir, { dtype: 'f16' });
  const full = AutoencoderKL.fromPretrained(dir);
  assertHalfLayout(half, full, 'vae');
  await roundWeightsToF16(full);
  const h = half.encode(io.get('image'));
  const f = full.encode(io.get('image'));
  await assertTensorClose(h.mean, f.mean, 1e-5, 'vae mean');
  await assertTensorClose(h.logvar, f.logvar, 1e-5, 'vae logvar');
  await assertTensorClose(half.decode(io.get('latents')), full.decode(io.get('latents')), 1e-5, 'vae decoded');
  await assertTensorClose(half.decode(io.get('latents')), io.get('decoded'), 2e-2, 'vae f16 vs diffusers f32');
  half.dispose();
  full.dispose();
});

test('half: CLIP text encoder in f16 equals the f32 one with f16-rounded weights', async () => {
  const dir = `${conformanceDir}/clip_text`;
  const io = conformance('clip_text');
  const half = CLIPTextModel.fromPretrained(dir, { dtype: 'f16' });
  const full = CLIPTextModel.fromPretrained(dir);
  assertHalfLayout(half, full, 'clip_text');
  await roundWeightsToF16(full);
  await assertTensorClose(half.forward(io.get('input_ids')), full.forward(io.get('input_ids')), 1e-5, 'clip last hidden state');
  half.dispose();
  full.dispose();
});

test('half: Module.half() in place; gradients reach inputs and f32 parameters, not f16 weights', async () => {
  const lin = new Linear(5, 3);
  const conv = new Conv2d(2, 4, 3, { padding: 1 });
  const refLin = new Linear(5, 3);
  const refConv = new Conv2d(2, 4, 3, { padding: 1 });
  refLin.loadStateDict(lin.stateDict());
  refConv.loadStateDict(conv.stateDict());
  await roundWeightsToF16(refLin);
  await roundWeightsToF16(refConv);
  const oldWeight = lin.weight;
  lin.half();
  conv.half();
  assert.is(lin.weight.dtype, 'f16', 'the weight field points at the f16 tensor');
  assert.ok(lin.stateDict().weight === lin.weight && lin.weight !== oldWeight);
  assert.equal(lin.parameters().map((p) => p.dtype), ['f32'], 'only the bias is a parameter');

  const x = Tensor.fromArray(randomArray(2 * 5, 1), [2, 5]);
  const img = Tensor.fromArray(randomArray(2 * 4 * 4, 2), [1, 2, 4, 4]);
  const grads = async (l: Linear, c: Conv2d) => {
    const xi = x.alias();
    xi.requiresGrad = true;
    const ii = img.alias();
    ii.requiresGrad = true;
    backward(sum(l.forward(xi)));
    backward(sum(c.forward(ii)));
    const out = [await xi.grad!.toArray(), await ii.grad!.toArray(), await l.bias!.grad!.toArray(), await c.bias!.grad!.toArray()];
    l.zeroGrad();
    c.zeroGrad();
    return out;
  };
  await assertTensorClose(lin.forward(x), refLin.forward(x), 1e-6, 'linear');
  await assertTensorClose(conv.forward(img), refConv.forward(img), 1e-6, 'conv');
  const [ours, ref] = [await grads(lin, conv), await grads(refLin, refConv)];
  ours.forEach((g, k) => assertClose(g, ref[k]!, 1e-6, `gradient ${k}`));
  assert.is(lin.weight.grad, undefined, 'no gradient for an f16 weight');

  // a weight tied between two modules becomes one f16 tensor
  const root = new Module();
  const tied = Tensor.fromArray(randomArray(6, 3), [2, 3]);
  root.module('a', new Module()).param('w', tied);
  root.module('b', new Module()).param('w', tied);
  const halves = Object.values(root.half().stateDict());
  assert.is(halves.length, 2);
  assert.ok(halves[0] === halves[1] && halves[0]!.dtype === 'f16', 'one shared f16 tensor');
  assertClose(await halves[0]!.toArray(), Array.from(randomArray(6, 3), (x) => f16ToF32(f32ToF16(x))), 0, 'tied weight rounded');
});

test.run();
