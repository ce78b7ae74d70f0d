// FOPA's ObPlaNet against ../shared/conformance/fopa (the official ObPlaNet_resnet18 with seeded weights, eval
// mode): every output and intermediate of the main case, the batch case (per-sample dynamic kernels), and the
// heat map as softmax channel 1 and as ToPILImage bytes; loading refuses a wrong checkpoint by name.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { assertClose, conformance, conformanceDir, testIf } from './helpers.ts';
import { noGrad } from '../src/engine/autograd.ts';
import { Tensor } from '../src/engine/tensor.ts';
import { softmax } from '../src/kernels/softmax.ts';
import { ObPlaNet, fopaInputs, obPlaNetConfig } from '../src/models/fopa.ts';
import type { Image } from '../src/io/image.ts';

const fs = process.getBuiltinModule('node:fs');
const have = fs.existsSync(`${conformanceDir}/fopa/model.safetensors`);
const vectorTest = testIf(have, `no ${conformanceDir}/fopa`);
const tol = 1e-3;

let net: ObPlaNet | undefined;
const model = () => (net ??= ObPlaNet.fromPretrained(`${conformanceDir}/fopa`));

/** softmax channel 1 as float32 and its ToPILImage bytes (trunc(p·255)); checks both against the reference. */
async function checkHeatmap(out: Tensor, ref: ArrayLike<number>, refBytes: ArrayLike<number>, what: string): Promise<void> {
  const [N, , H, W] = out.shape as [number, number, number, number];
  const probs = noGrad(() => softmax(out, 1));
  const p = await probs.toArray();
  probs.dispose();
  const heat = new Float32Array(N * H * W);
  for (let n = 0; n < N; n++) heat.set(p.subarray((2 * n + 1) * H * W, (2 * n + 2) * H * W), n * H * W);
  assertClose(heat, ref, 2e-4, `${what} heatmap`);
  let differ = 0;
  heat.forEach((v, i) => {
    const byte = Math.trunc(Math.fround(v * 255));
    assert.ok(Math.abs(byte - refBytes[i]!) <= 1, `${what} heatmap byte ${i}: ${byte} vs ${refBytes[i]}`);
    if (byte !== refBytes[i]) differ++;
  });
  assert.ok(differ <= 0.01 * heat.length, `${what}: ${differ} heat-map bytes differ`);
}

vectorTest('main case: out, fuse_out, the heat map and every stored intermediate', async () => {
  const io = conformance('fopa');
  const [bg, fg, mask] = ['bg', 'fg', 'mask'].map((k) => io.get(k));
  const captured = new Map<string, Float32Array>();
  const pending: Promise<void>[] = [];
  const { out, fuseOut } = noGrad(() => model().forward(bg!, fg!, mask!, {
    capture: (name, t) => {
      if (io.has(`inter.${name}`)) pending.push(t.toArray().then((a) => void captured.set(name, Float32Array.from(a))));
    },
  }));
  await Promise.all(pending);
  const inter = [...io.keys()].filter((k) => k.startsWith('inter.'));
  assert.ok(inter.length >= 25, `${inter.length} intermediates`);
  for (const k of inter) {
    const name = k.slice('inter.'.length);
    assert.ok(captured.has(name), `intermediate ${name} captured`);
    assertClose(captured.get(name)!, io.readArray(k).data, tol, k);
  }
  assertClose(await out.toArray(), io.readArray('out').data, tol, 'out');
  assertClose(await fuseOut.toArray(), io.readArray('fuse_out').data, tol, 'fuse_out');
  await checkHeatmap(out, io.readArray('heatmap').data, io.readArray('heatmap_u8').data, 'main');
  for (const t of [bg, fg, mask, out, fuseOut]) t!.dispose();
  io.close();
});

vectorTest('batch case: each sample\'s dynamic kernels act on that sample only', async () => {
  const io = conformance('fopa');
  const [bg, fg, mask] = ['batch.bg', 'batch.fg', 'batch.mask'].map((k) => io.get(k));
  const kernels = new Map<string, Float32Array>();
  const pending: Promise<void>[] = [];
  const { out, fuseOut } = noGrad(() => model().forward(bg!, fg!, mask!, {
    capture: (name, t) => {
      if (name.endsWith('gernerate_kernel')) pending.push(t.toArray().then((a) => void kernels.set(name, Float32Array.from(a))));
    },
  }));
  await Promise.all(pending);
  for (const name of ['selfdc_16.gernerate_kernel', 'selfdc_8.gernerate_kernel']) assertClose(kernels.get(name)!, io.readArray(`batch.inter.${name}`).data, tol, name);
  assertClose(await out.toArray(), io.readArray('batch.out').data, tol, 'batch.out');
  await checkHeatmap(out, io.readArray('batch.heatmap').data, io.readArray('batch.heatmap_u8').data, 'batch');
  for (const t of [bg, fg, mask, out, fuseOut]) t!.dispose();
  io.close();
});

vectorTest('the official pipeline at 256×256: Pillow resizes bit-exact, then out, heat map and the dynamic kernels', async () => {
  const io = conformance('fopa');
  const image = (key: string, channels: 1 | 3): Image => {
    const a = io.readArray(key);
    return { width: a.shape[1]!, height: a.shape[0]!, channels, data: Uint8Array.from(a.data) };
  };
  const inputs = fopaInputs(image('pipeline.raw_bg', 3), image('pipeline.raw_fg', 3), image('pipeline.raw_mask', 1));
  for (const k of ['bg', 'fg', 'mask'] as const) assert.equal([...inputs.resized[k].data], [...io.readArray(`pipeline.resized_${k}`).data], `resized ${k}: Pillow's bytes`);
  const captured = new Map<string, Float32Array>();
  const pending: Promise<void>[] = [];
  const { out, fuseOut } = noGrad(() => model().forward(inputs.bg, inputs.fg, inputs.mask, {
    capture: (name, t) => {
      if (io.has(`pipeline.inter.${name}`)) pending.push(t.toArray().then((a) => void captured.set(name, Float32Array.from(a))));
    },
  }));
  await Promise.all(pending);
  for (const k of [...io.keys()].filter((n) => n.startsWith('pipeline.inter.'))) assertClose(captured.get(k.slice('pipeline.inter.'.length))!, io.readArray(k).data, tol, k);
  assertClose(await out.toArray(), io.readArray('pipeline.out').data, tol, 'pipeline.out');
  await checkHeatmap(out, io.readArray('pipeline.heatmap').data, io.readArray('pipeline.heatmap_u8').data, 'pipeline');
  for (const t of [inputs.bg, inputs.fg, inputs.mask, out, fuseOut]) t.dispose();
  io.close();
});

test('config and shape checks name the problem', () => {
  assert.equal(obPlaNetConfig({ ks: 3 }).widths, [64, 128, 256, 512]);
  assert.equal(obPlaNetConfig({ widths: [8, 16, 32, 64] }).widths, [8, 16, 32, 64]);
  assert.throws(() => obPlaNetConfig({ widths: [8, 16] }, 'c.json'), /c\.json: "widths" must be four positive channel counts/);
  const tiny = new ObPlaNet(obPlaNetConfig({ widths: [8, 8, 16, 16] }));
  const x = Tensor.zeros([1, 3, 32, 32]);
  assert.throws(() => tiny.forward(x, x, Tensor.zeros([1, 1, 32, 16])), /ObPlaNet\.forward: mask has shape \[1, 1, 32, 16\], expected \[1, 1, 32, 32\]/);
  // odd sizes: the output is 2·⌈H/2⌉ × 2·⌈W/2⌉
  const odd = Tensor.zeros([2, 3, 33, 40]);
  const { out, fuseOut } = noGrad(() => tiny.forward(odd, odd, Tensor.zeros([2, 1, 33, 40])));
  assert.equal([out.shape, fuseOut.shape], [[2, 2, 34, 40], [2, 16, 34, 40]]);
  for (const t of [x, odd, out, fuseOut]) t.dispose();
  tiny.dispose();
});

test.after(() => net?.dispose());
test.run();
