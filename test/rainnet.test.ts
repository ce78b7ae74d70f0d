// RainNet against ../shared/conformance/rainnet (the official generator at ngf 32, eval mode): the
// preprocessing from the raw composite (Pillow resize), every stored intermediate, the output, the blended result
// and its bytes; the RAIN layer alone on its four cases (empty regions, odd resize ratios); errors.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { assertClose, conformance, conformanceDir, testIf } from './helpers.ts';
import { noGrad } from '../src/engine/autograd.ts';
import { Tensor } from '../src/engine/tensor.ts';
import { loadSafetensors } from '../src/io/safetensors.ts';
import { pilResize } from '../src/io/image.ts';
import { RAIN, RainNet, harmonize, rainNetConfig } from '../src/models/rainnet.ts';

const fs = process.getBuiltinModule('node:fs');
const have = fs.existsSync(`${conformanceDir}/rainnet/model.safetensors`);
const vectorTest = testIf(have, `no ${conformanceDir}/rainnet`);

vectorTest('RainNet: preprocessing, every intermediate, output, harmonized and its bytes', async () => {
  const io = conformance('rainnet');
  // preprocessing: Pillow bilinear to 256², u8 / 255 · 2 − 1; the mask by PIL's nearest
  const raw = io.readArray('source_rgb_u8'), rawMask = io.readArray('source_mask_u8');
  const [h, w] = raw.shape as [number, number];
  const resized = pilResize({ width: w, height: h, channels: 3, data: Uint8Array.from(raw.data) }, 256, 256, 'bilinear');
  const m = pilResize({ width: w, height: h, channels: 1, data: Uint8Array.from(rawMask.data) }, 256, 256, 'nearest');
  const comp = new Float32Array(3 * 256 * 256);
  for (let p = 0; p < 256 * 256; p++) for (let c = 0; c < 3; c++) comp[c * 65536 + p] = Math.fround(Math.fround(resized.data[3 * p + c]! / 255 - 0.5) / 0.5);
  assertClose(comp, io.readArray('comp').data, 1e-6, 'comp from the raw composite');
  assert.equal([...m.data].map((v) => (v ? 1 : 0)), [...io.readArray('mask').data], 'mask from the raw mask');

  const net = RainNet.fromPretrained(`${conformanceDir}/rainnet`);
  assert.is(net.config.ngf, 32);
  const [x, mask] = [io.get('comp'), io.get('mask')];
  const captured = new Map<string, Float32Array>();
  const pending: Promise<void>[] = [];
  const out = noGrad(() => net.forward(x, mask, { capture: (name, t) => {
    if (io.has(`inter.${name}`)) pending.push(t.toArray().then((a) => void captured.set(name, Float32Array.from(a))));
  } }));
  await Promise.all(pending);
  const inter = [...io.keys()].filter((k) => k.startsWith('inter.'));
  assert.is(inter.length, 21);
  for (const k of inter) {
    assert.ok(captured.has(k.slice(6)), `${k} captured`);
    assertClose(captured.get(k.slice(6))!, io.readArray(k).data, 2e-4, k);
  }
  assertClose(await out.toArray(), io.readArray('output').data, 1e-4, 'output');
  const blended = harmonize(out, x, mask);
  const hv = await blended.toArray();
  assertClose(hv, io.readArray('harmonized').data, 1e-4, 'harmonized');
  const bytes = io.readArray('harmonized_rgb_u8').data;
  for (let p = 0; p < 65536; p++) {
    for (let c = 0; c < 3; c++) {
      const ours = Math.trunc(Math.fround(Math.fround((hv[c * 65536 + p]! + 1) / 2) * 255));
      assert.ok(Math.abs(ours - bytes[3 * p + c]!) <= 1, `pixel ${p} channel ${c}: ${ours} vs ${bytes[3 * p + c]}`);
    }
  }
  for (const t of [x, mask, out, blended]) t.dispose();
  net.dispose();
  io.close();
});

vectorTest('RAIN alone: typical, empty regions, odd resize ratio, offset', async () => {
  const r = loadSafetensors(`${conformanceDir}/rainnet/rain.safetensors`);
  for (let i = 0; i < 4; i++) {
    const x = r.get(`case${i}.x`);
    const rain = new RAIN(x.shape[1]!);
    for (const k of ['foreground_gamma', 'foreground_beta', 'background_gamma', 'background_beta'] as const) rain[k].copyFrom(r.get(`case${i}.${k}`));
    const mask = r.get(`case${i}.mask`);
    const out = noGrad(() => rain.forward(x, mask));
    assertClose(await out.toArray(), r.readArray(`case${i}.out`).data, 2e-4, `case ${i}`);
    for (const t of [x, mask, out]) t.dispose();
    rain.dispose();
  }
  r.close();
});

test('config and input checks name the problem', () => {
  assert.equal(rainNetConfig({ ngf: 8 }), { inputNc: 3, outputNc: 3, ngf: 8 });
  assert.throws(() => rainNetConfig({ norm_layer: 'BN' }, 'c.json'), /c\.json/);
  const net = new RainNet({ inputNc: 3, outputNc: 3, ngf: 4 });
  const x = Tensor.zeros([1, 3, 256, 256]);
  assert.throws(() => net.forward(x, Tensor.zeros([1, 1, 128, 256])), /mask has shape \[1, 1, 128, 256\], expected \[1, 1, 256, 256\]/);
  const small = Tensor.zeros([1, 3, 128, 128]);
  assert.throws(() => net.forward(small, Tensor.zeros([1, 1, 128, 128])), /128×128 is not a multiple of 256/);
  assert.throws(() => net.forward(Tensor.zeros([1, 1, 256, 256]), Tensor.zeros([1, 1, 256, 256])), /comp has shape \[1, 1, 256, 256\], expected \[N, 3, H, W\]/);
  assert.throws(() => harmonize(x, x, Tensor.zeros([1, 1, 256, 128])), /harmonize: the mask has shape \[1, 1, 256, 128\], expected \[1, 1, 256, 256\]/);
  assert.throws(() => harmonize(Tensor.zeros([1, 1, 8, 8]), Tensor.zeros([1, 1, 8, 8]), Tensor.zeros([1, 1, 8, 8])), /harmonize: the composite has shape \[1, 1, 8, 8\], expected an RGB batch/);
  net.dispose();
});

test.run();
