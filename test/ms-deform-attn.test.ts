// msDeformAttn: the ../shared/conformance/ms_deform_attn vectors (forward and the three gradients), finite
// differences on a configuration of our own, and a plain CPU loop for the forward and the value gradient on
// levels larger than one 16×16 tile with more points than one chunk.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { assertClose, assertTensorClose, conformance, randomArray } from './helpers.ts';
import { backward } from '../src/engine/autograd.ts';
import { assertGradcheck } from '../src/engine/gradcheck.ts';
import { Tensor } from '../src/engine/tensor.ts';
import { msDeformAttn } from '../src/kernels/ms_deform_attn.ts';

test('msDeformAttn conformance: output and grads of value, sampling locations, attention weights', async () => {
  const io = conformance('ms_deform_attn');
  const shapesFlat = await io.get('spatial_shapes').toArray();
  const shapes: [number, number][] = [];
  for (let k = 0; k < shapesFlat.length; k += 2) shapes.push([shapesFlat[k]!, shapesFlat[k + 1]!]);
  // the levels are concatenated in order: each starts where the previous ones end
  const starts = shapes.map((_, l) => shapes.slice(0, l).reduce((a, [h, w]) => a + h * w, 0));
  assert.equal([...(await io.get('level_start_index').toArray())], starts);
  const value = io.get('value').requireGrad();
  const loc = io.get('sampling_locations').requireGrad();
  const attn = io.get('attention_weights').requireGrad();
  const out = msDeformAttn(value, shapes, loc, attn);
  await assertTensorClose(out, io.get('output'), 1e-4, 'output');
  backward(out, io.get('grad_output'));
  await assertTensorClose(value.grad!, io.get('grad.value'), 1e-4, 'grad.value');
  await assertTensorClose(attn.grad!, io.get('grad.attention_weights'), 1e-4, 'grad.attention_weights');
  await assertTensorClose(loc.grad!, io.get('grad.sampling_locations'), 1e-3, 'grad.sampling_locations');
});

interface Config { B: number; Q: number; heads: number; D: number; P: number; levels: [number, number][] }

/** Locations in [-0.25, 1.25] (some outside: zero padding), kept 0.05 pixel away from pixel centres' grid lines. */
function locations(c: Config, seed: number): Float32Array {
  const L = c.levels.length;
  const loc = randomArray(c.B * c.Q * c.heads * L * c.P * 2, seed, -0.25, 1.25);
  for (let i = 0; i < loc.length; i++) {
    const l = Math.floor(i / (2 * c.P)) % L;
    const size = c.levels[l]![i % 2 === 0 ? 1 : 0]!;
    const px = loc[i]! * size - 0.5;
    const frac = px - Math.floor(px);
    if (frac < 0.05 || frac > 0.95) loc[i] = (Math.floor(px) + 0.5 + 0.5) / size;
  }
  return loc;
}

/** Plain loops: the forward output and the value gradient for upstream gradient `g`. */
function cpuReference(c: Config, value: Float32Array, loc: Float32Array, attn: Float32Array, g: Float32Array): { out: Float32Array; dvalue: Float32Array } {
  const S = c.levels.reduce((a, [h, w]) => a + h * w, 0);
  const L = c.levels.length;
  const out = new Float32Array(c.B * c.Q * c.heads * c.D);
  const dvalue = new Float32Array(value.length);
  for (let b = 0; b < c.B; b++) for (let q = 0; q < c.Q; q++) for (let h = 0; h < c.heads; h++) {
    let start = 0;
    for (let l = 0; l < L; l++) {
      const [H, W] = c.levels[l]!;
      for (let p = 0; p < c.P; p++) {
        const pt = (((b * c.Q + q) * c.heads + h) * L + l) * c.P + p;
        const x = loc[2 * pt]! * W - 0.5;
        const y = loc[2 * pt + 1]! * H - 0.5;
        const x0 = Math.floor(x);
        const y0 = Math.floor(y);
        for (const [dx, dy] of [[0, 0], [1, 0], [0, 1], [1, 1]] as const) {
          const xi = x0 + dx;
          const yi = y0 + dy;
          if (xi < 0 || yi < 0 || xi >= W || yi >= H) continue;
          const w = attn[pt]! * (dx ? x - x0 : 1 - (x - x0)) * (dy ? y - y0 : 1 - (y - y0));
          for (let d = 0; d < c.D; d++) {
            const vi = (((b * S + start + yi * W + xi) * c.heads) + h) * c.D + d;
            const oi = ((b * c.Q + q) * c.heads + h) * c.D + d;
            out[oi] += w * value[vi]!;
            dvalue[vi] += w * g[oi]!;
          }
        }
      }
      start += H * W;
    }
  }
  return { out, dvalue };
}

function inputs(c: Config, seed: number) {
  const S = c.levels.reduce((a, [h, w]) => a + h * w, 0);
  const L = c.levels.length;
  return {
    value: { data: randomArray(c.B * S * c.heads * c.D, seed), shape: [c.B, S, c.heads, c.D] },
    loc: { data: locations(c, seed + 1), shape: [c.B, c.Q, c.heads, L, c.P, 2] },
    attn: { data: randomArray(c.B * c.Q * c.heads * L * c.P, seed + 2, 0, 1), shape: [c.B, c.Q, c.heads, L, c.P] },
  };
}

test('gradcheck msDeformAttn: batch 1, non-square levels, 3 heads, 3 points, locations outside [0, 1]', async () => {
  const c: Config = { B: 1, Q: 5, heads: 3, D: 4, P: 3, levels: [[5, 3], [2, 4], [1, 1]] };
  const { value, loc, attn } = inputs(c, 11);
  const f = (v: Tensor, l: Tensor, a: Tensor) => msDeformAttn(v, c.levels, l, a);
  await assertGradcheck('msDeformAttn', f, [value, loc, attn], { samples: 40, eps: 1e-3 });
});

test('msDeformAttn matches plain loops (forward, value gradient) on levels over one tile, points over one chunk', async () => {
  const c: Config = { B: 2, Q: 70, heads: 2, D: 5, P: 4, levels: [[18, 21], [9, 11]] };
  const { value, loc, attn } = inputs(c, 21);
  const g = randomArray(c.B * c.Q * c.heads * c.D, 24);
  const ref = cpuReference(c, value.data, loc.data, attn.data, g);
  const v = Tensor.fromArray(value.data, value.shape).requireGrad();
  const l = Tensor.fromArray(loc.data, loc.shape);
  const a = Tensor.fromArray(attn.data, attn.shape);
  const out = msDeformAttn(v, c.levels, l, a);
  assertClose(await out.toArray(), ref.out, 1e-5, 'forward');
  backward(out, Tensor.fromArray(g, out.shape));
  assertClose(await v.grad!.toArray(), ref.dvalue, 1e-5, 'grad value');
  assert.ok(ref.dvalue.some((x) => x !== 0));
});

test('msDeformAttn: mismatched shapes are named', () => {
  const v = Tensor.zeros([1, 20, 2, 4]);
  const l = Tensor.zeros([1, 3, 2, 2, 1, 2]);
  const a = Tensor.zeros([1, 3, 2, 2, 1]);
  assert.throws(() => msDeformAttn(v, [[4, 4], [2, 1]], l, a), /value \[1, 20, 2, 4\] has 20 rows but spatialShapes/);
  assert.throws(() => msDeformAttn(v, [[4, 4], [2, 2]], l, Tensor.zeros([1, 3, 2, 2, 2])), /attentionWeights/);
});

test.run();
