// PCT-Net's pixel-wise colour transforms against ../shared/conformance/pctnet/transforms.* (every official
// transform type, raw / clamped / normalised, and the gradients of param and input), and its bicubic upsampling.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { assertClose, conformanceDir, testIf } from './helpers.ts';
import { backward } from '../src/engine/autograd.ts';
import { Tensor, tidy } from '../src/engine/tensor.ts';
import { loadSafetensors } from '../src/io/safetensors.ts';
import { clamp, mul } from '../src/kernels/elementwise.ts';
import { sum } from '../src/kernels/reduce.ts';
import { interpolate } from '../src/kernels/resample.ts';
import { type PctTransformType, pct, pctTransform } from '../src/models/pct_net.ts';

const fs = process.getBuiltinModule('node:fs');
const dir = `${conformanceDir}/pctnet`;
const have = fs.existsSync(`${dir}/transforms.safetensors`);
const vectorTest = testIf(have, `no ${dir}`);
const tol = 1e-5;

vectorTest('every transform: raw, clamped, normalised, and the gradients of parameters and input', async () => {
  const meta = JSON.parse(fs.readFileSync(`${dir}/transforms.json`, 'utf8')) as { normalisation: { mean: number[]; std: number[] }; cases: { name: string; transform_type: PctTransformType; affine: boolean }[] };
  const r = loadSafetensors(`${dir}/transforms.safetensors`);
  assert.ok(meta.cases.length >= 8);
  for (const c of meta.cases) {
    const x = r.get(`${c.name}.input`).requireGrad();
    const p = r.get(`${c.name}.param`).requireGrad();
    const raw = pctTransform(x, p, c.transform_type, c.affine);
    assertClose(await raw.toArray(), r.readArray(`${c.name}.raw`).data, tol, `${c.name} raw`);
    const clamped = clamp(raw, 0, 1);
    assertClose(await clamped.toArray(), r.readArray(`${c.name}.clamp`).data, tol, `${c.name} clamp`);
    const out = pct(x, p, { type: c.transform_type, affine: c.affine, normalization: meta.normalisation });
    assertClose(await out.toArray(), r.readArray(`${c.name}.out`).data, tol, `${c.name} out`);
    const g = r.get(`${c.name}.grad_out`);
    const loss = tidy(() => sum(mul(out, g)));
    backward(loss);
    assertClose(await p.grad!.toArray(), r.readArray(`${c.name}.grad.param`).data, tol, `${c.name} grad param`);
    // identity ignores its input: no gradient reaches it (the reference's is zeros)
    const gradInput = x.grad ? await x.grad.toArray() : new Float32Array(x.size);
    assertClose(gradInput, r.readArray(`${c.name}.grad.input`).data, tol, `${c.name} grad input`);
    for (const t of [x, p, raw, clamped, out, g, loss]) t.dispose();
  }
  r.close();
});

vectorTest('bicubic upsampling (the full-resolution parameters): align corners false and true, and a downscale', async () => {
  const r = loadSafetensors(`${dir}/transforms.safetensors`);
  const x = r.get('bicubic.input');
  for (const alignCorners of [false, true]) {
    const y = interpolate(x, { mode: 'bicubic', size: [11, 7], alignCorners });
    assertClose(await y.toArray(), r.readArray(`bicubic.align_corners_${alignCorners}`).data, tol, `bicubic align_corners ${alignCorners}`);
    y.dispose();
  }
  const d = r.get('bicubic_down.input');
  const yd = interpolate(d, { mode: 'bicubic', size: [4, 7] });
  assertClose(await yd.toArray(), r.readArray('bicubic_down.align_corners_false').data, tol, 'bicubic down');
  for (const t of [x, d, yd]) t.dispose();
  r.close();
});

test('parameter shapes are checked, naming the transform', () => {
  const x = Tensor.zeros([1, 3, 2, 2]);
  assert.throws(() => pctTransform(x, Tensor.zeros([1, 9, 2, 2]), 'linear', true), /linear \(affine\) needs parameters \[1, 12, 2, 2\], got \[1, 9, 2, 2\]/);
  assert.throws(() => pctTransform(Tensor.zeros([1, 4, 2, 2]), x, 'add'), /x has shape \[1, 4, 2, 2\], expected \[B, 3, H, W\]/);
});

test.run();
