// interpolate(mode 'bicubic') against a float64 transcription of PyTorch's upsample_bicubic2d (source
// coordinate unclamped, 4 taps clamped to the edge, A = −0.75): forward on up / down / align-corners / same-size
// cases, and the backward against the transposed weights applied to a random gradient.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { assertClose, randomArray } from './helpers.ts';
import { backward } from '../src/engine/autograd.ts';
import { Tensor, tidy } from '../src/engine/tensor.ts';
import { mul } from '../src/kernels/elementwise.ts';
import { sum } from '../src/kernels/reduce.ts';
import { interpolate } from '../src/kernels/resample.ts';

/** Per output index: the 4 (clamped) input indices and their weights along one axis. */
function axisWeights(inSize: number, outSize: number, alignCorners: boolean, scaleFactor?: number): { i: number[]; w: number[] }[] {
  const scale = alignCorners ? (outSize > 1 ? Math.fround((inSize - 1) / (outSize - 1)) : 0) : Math.fround(scaleFactor ? 1 / scaleFactor : inSize / outSize);
  const A = -0.75;
  const c1 = (x: number) => ((A + 2) * x - (A + 3)) * x * x + 1;
  const c2 = (x: number) => ((A * x - 5 * A) * x + 8 * A) * x - 4 * A;
  return Array.from({ length: outSize }, (_, o) => {
    if (inSize === outSize) return { i: [o], w: [1] };
    const src = alignCorners ? scale * o : scale * (o + 0.5) - 0.5;
    const f = Math.floor(src), t = src - f;
    return { i: [-1, 0, 1, 2].map((d) => Math.min(Math.max(f + d, 0), inSize - 1)), w: [c2(t + 1), c1(t), c1(1 - t), c2(2 - t)] };
  });
}

function reference(x: Float32Array, [N, C, H, W]: number[], Ho: number, Wo: number, alignCorners: boolean, scaleFactor?: number) {
  const wh = axisWeights(H!, Ho, alignCorners, scaleFactor), ww = axisWeights(W!, Wo, alignCorners, scaleFactor);
  const out = new Float64Array(N! * C! * Ho * Wo);
  const apply = (g: Float32Array) => {
    const dx = new Float64Array(x.length);
    for (let nc = 0; nc < N! * C!; nc++) {
      for (let oh = 0; oh < Ho; oh++) {
        for (let ow = 0; ow < Wo; ow++) {
          const go = g[(nc * Ho + oh) * Wo + ow]!;
          wh[oh]!.i.forEach((ih, a) => ww[ow]!.i.forEach((iw, b) => (dx[(nc * H! + ih) * W! + iw]! += wh[oh]!.w[a]! * ww[ow]!.w[b]! * go)));
        }
      }
    }
    return dx;
  };
  for (let nc = 0; nc < N! * C!; nc++) {
    for (let oh = 0; oh < Ho; oh++) {
      for (let ow = 0; ow < Wo; ow++) {
        let acc = 0;
        wh[oh]!.i.forEach((ih, a) => ww[ow]!.i.forEach((iw, b) => (acc += wh[oh]!.w[a]! * ww[ow]!.w[b]! * x[(nc * H! + ih) * W! + iw]!)));
        out[(nc * Ho + oh) * Wo + ow] = acc;
      }
    }
  }
  return { out, adjoint: apply };
}

const cases: { what: string; shape: number[]; size?: [number, number]; scaleFactor?: number; alignCorners?: boolean }[] = [
  { what: 'up, non-integer ratio', shape: [2, 3, 7, 5], size: [12, 9] },
  { what: 'down (no antialias)', shape: [1, 2, 10, 8], size: [4, 6] },
  { what: 'align corners', shape: [1, 2, 6, 7], size: [11, 4], alignCorners: true },
  { what: 'scale factor 2', shape: [1, 1, 5, 6], scaleFactor: 2 },
  { what: 'same size (a copy)', shape: [1, 2, 6, 6], size: [6, 6] },
];

for (const c of cases) {
  test(`bicubic ${c.what}: forward and backward against PyTorch's formula`, async () => {
    const xv = randomArray(c.shape.reduce((a, b) => a * b), 3);
    const x = Tensor.fromArray(xv, c.shape).requireGrad();
    const y = interpolate(x, { mode: 'bicubic', size: c.size, scaleFactor: c.scaleFactor, alignCorners: c.alignCorners });
    const [Ho, Wo] = y.shape.slice(2) as [number, number];
    const ref = reference(xv, c.shape, Ho, Wo, c.alignCorners ?? false, c.scaleFactor);
    assertClose(await y.toArray(), ref.out, 1e-5, `${c.what} forward`);
    const g = randomArray(y.size, 4);
    const loss = tidy(() => sum(mul(y, Tensor.fromArray(g, y.shape))));
    backward(loss);
    assertClose(await x.grad!.toArray(), ref.adjoint(g), 1e-5, `${c.what} backward`);
    for (const t of [x, y, loss]) t.dispose();
  });
}

test('bicubic overshoots the input range like PyTorch (no clamping)', async () => {
  const x = Tensor.fromArray([0, 0, 1, 1, 0, 0], [1, 1, 1, 6]);
  const y = await interpolate(x, { mode: 'bicubic', size: [1, 12] }).toArray();
  assert.ok(Math.min(...y) < 0 && Math.max(...y) > 1, `${[...y].map((v) => v.toFixed(3))}`);
  assert.throws(() => interpolate(x, { mode: 'area' as never, size: [1, 2] }), /mode must be 'nearest', 'bilinear' or 'bicubic'/);
  x.dispose();
});

test.run();
