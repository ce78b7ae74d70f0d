// Finite-difference gradient checks for convolution, pooling and resampling on shapes and attributes of our
// own (not the conformance ones), plus forward checks against plain CPU loops.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { assertClose, randomArray } from './helpers.ts';
import { backward } from '../src/engine/autograd.ts';
import { assertGradcheck } from '../src/engine/gradcheck.ts';
import { Tensor } from '../src/engine/tensor.ts';
import { conv2d, convTranspose2d } from '../src/kernels/conv.ts';
import { adaptiveAvgPool2d, avgPool2d, maxPool2d } from '../src/kernels/pool.ts';
import { gridSample, interpolate } from '../src/kernels/resample.ts';

const size = (shape: number[]) => shape.reduce((a, b) => a * b, 1);
const input = (shape: number[], seed: number, lo = -1, hi = 1) => ({ data: randomArray(size(shape), seed, lo, hi), shape });
const opts = { samples: 16 };

test('gradcheck conv2d: stride 2, dilation 2, groups 3, 3×2 kernel, padding [2, 1]', async () => {
  const attrs = { stride: 2, dilation: 2, groups: 3, padding: [2, 1] as const };
  await assertGradcheck('conv2d', (x, w, b) => conv2d(x, w, b, attrs), [input([2, 6, 9, 8], 1), input([9, 2, 3, 2], 2), input([9], 3)], opts);
});

test('gradcheck conv2d: [1, 2] stride, no bias, weight gradient over few rows', async () => {
  await assertGradcheck('conv2d', (x, w) => conv2d(x, w, undefined, { stride: [1, 2], padding: [0, 1] }), [input([1, 3, 4, 7], 4), input([2, 3, 3, 3], 5)], opts);
});

test('gradcheck convTranspose2d: groups 2, stride [2, 3], padding [1, 0], outputPadding [1, 2]', async () => {
  const attrs = { stride: [2, 3] as const, padding: [1, 0] as const, outputPadding: [1, 2] as const, groups: 2 };
  await assertGradcheck('convTranspose2d', (x, w, b) => convTranspose2d(x, w, b, attrs), [input([1, 4, 2, 3], 6), input([4, 3, 3, 2], 7), input([6], 8)], opts);
});

test('gradcheck convTranspose2d: dilation 2, outputPadding 1, batch 2', async () => {
  const attrs = { stride: 1, dilation: 2, padding: 1, outputPadding: 1 };
  await assertGradcheck('convTranspose2d', (x, w) => convTranspose2d(x, w, undefined, attrs), [input([2, 3, 5, 4], 9), input([3, 2, 2, 3], 10)], opts);
});

test('gradcheck maxPool2d with padding and non-square windows', async () => {
  await assertGradcheck('maxPool2d', (x) => maxPool2d(x, { kernelSize: [3, 2], stride: [2, 1], padding: 1 }), [input([2, 3, 7, 6], 11, -2, 2)], opts);
  await assertGradcheck('maxPool2d default stride', (x) => maxPool2d(x, { kernelSize: 2 }), [input([1, 2, 5, 7], 12, -2, 2)], opts);
});

test('maxPool2d: padding never wins, ties go to the first maximum', async () => {
  const x = Tensor.fromArray([-5, -3, 2, 2, -4, -6, 2, 1, 0], [1, 1, 3, 3]).requireGrad();
  const y = maxPool2d(x, { kernelSize: 2, stride: 2, padding: 1 });
  assert.equal([...(await y.toArray())], [-5, 2, 2, 1]);
  const g = Tensor.fromArray([1, 2, 3, 4], [1, 1, 2, 2]);
  backward(y, g);
  // window (1, 0) holds 2 at rows 1 and 2: the first one gets the gradient
  assert.equal([...(await x.grad!.toArray())], [1, 0, 2, 3, 0, 0, 0, 4, 0]);
  for (const t of [x, y, g]) t.dispose();
});

test('gradcheck avgPool2d with padding, counting the padding or not', async () => {
  await assertGradcheck('avgPool2d', (x) => avgPool2d(x, { kernelSize: 3, stride: 2, padding: 1 }), [input([2, 2, 6, 7], 13)], opts);
  await assertGradcheck('avgPool2d exclude pad', (x) => avgPool2d(x, { kernelSize: [2, 3], stride: [1, 2], padding: 1, countIncludePad: false }), [input([1, 3, 5, 6], 14)], opts);
});

test('avgPool2d countIncludePad false divides corners by the elements inside', async () => {
  const x = Tensor.fromArray([1, 2, 3, 4], [1, 1, 2, 2]);
  const inc = avgPool2d(x, { kernelSize: 2, stride: 1, padding: 1 });
  const exc = avgPool2d(x, { kernelSize: 2, stride: 1, padding: 1, countIncludePad: false });
  assertClose(await inc.toArray(), [0.25, 0.75, 0.5, 1, 2.5, 1.5, 0.75, 1.75, 1], 1e-6, 'include pad');
  assertClose(await exc.toArray(), [1, 1.5, 2, 2, 2.5, 3, 3, 3.5, 4], 1e-6, 'exclude pad');
  for (const t of [x, inc, exc]) t.dispose();
});

test('gradcheck adaptiveAvgPool2d: overlapping windows, down and up', async () => {
  await assertGradcheck('adaptive down', (x) => adaptiveAvgPool2d(x, [4, 3]), [input([2, 2, 7, 5], 15)], opts);
  await assertGradcheck('adaptive up', (x) => adaptiveAvgPool2d(x, [5, 7]), [input([1, 2, 3, 4], 16)], opts);
});

const resizes = [
  { name: 'nearest up', x: [1, 2, 4, 3], o: { size: [7, 5] as const, mode: 'nearest' as const } },
  { name: 'nearest down', x: [2, 1, 9, 7], o: { size: [4, 3] as const, mode: 'nearest' as const } },
  { name: 'nearest scaleFactor 1.5 / 0.6', x: [1, 2, 5, 8], o: { scaleFactor: [1.5, 0.6] as const, mode: 'nearest' as const } },
  { name: 'bilinear up', x: [1, 2, 4, 3], o: { size: [7, 8] as const, mode: 'bilinear' as const, alignCorners: false } },
  { name: 'bilinear down', x: [1, 2, 9, 10], o: { size: [4, 3] as const, mode: 'bilinear' as const, alignCorners: false } },
  { name: 'bilinear up, alignCorners', x: [1, 2, 4, 3], o: { size: [7, 8] as const, mode: 'bilinear' as const, alignCorners: true } },
  { name: 'bilinear down, alignCorners', x: [2, 1, 9, 10], o: { size: [4, 3] as const, mode: 'bilinear' as const, alignCorners: true } },
  { name: 'bilinear scaleFactor [1.7, 0.6]', x: [1, 2, 5, 8], o: { scaleFactor: [1.7, 0.6] as const, mode: 'bilinear' as const } },
  { name: 'bilinear to one pixel, alignCorners', x: [1, 1, 3, 4], o: { size: [1, 2] as const, mode: 'bilinear' as const, alignCorners: true } },
];
for (const r of resizes) {
  test(`gradcheck interpolate ${r.name}`, async () => {
    await assertGradcheck(r.name, (x) => interpolate(x, r.o), [input(r.x, 17)], opts);
  });
}

test('interpolate nearest with scaleFactor samples at ⌊dst / scaleFactor⌋ (not dst · in/out)', async () => {
  const data = randomArray(10, 18);
  const x = Tensor.fromArray(data, [1, 1, 1, 10]);
  const y = interpolate(x, { scaleFactor: [1, 1.15], mode: 'nearest' });
  assert.equal([...y.shape], [1, 1, 1, 11]);
  const ratio = Math.fround(1 / 1.15);
  assertClose(await y.toArray(), Array.from({ length: 11 }, (_, o) => data[Math.floor(Math.fround(o * ratio))]!), 0, 'nearest 1.15');
  assert.is((await y.toArray())[10], data[8], 'output 10 reads input 8 (10 · 10/11 would give 9)');
  x.dispose();
  y.dispose();
});

// grid points partly outside [-1, 1]
const gridInput = (shape: number[], seed: number) => input(shape, seed, -1.3, 1.3);
const samplers = [
  { name: 'bilinear zeros', o: {} },
  { name: 'bilinear zeros alignCorners', o: { alignCorners: true } },
  { name: 'bilinear border', o: { paddingMode: 'border' as const } },
  { name: 'nearest zeros', o: { mode: 'nearest' as const } },
];
for (const s of samplers) {
  test(`gradcheck gridSample ${s.name}`, async () => {
    await assertGradcheck(s.name, (x, grid) => gridSample(x, grid, s.o), [input([2, 3, 5, 6], 19), gridInput([2, 4, 3, 2], 20)], opts);
  });
}

test('gradcheck gridSample input gradient over several tiles and point chunks', async () => {
  await assertGradcheck('gridSample tiles', (x, grid) => gridSample(x, grid), [input([1, 2, 20, 35], 21), gridInput([1, 20, 15, 2], 22)], opts);
});

/** conv2d by definition, in float64. */
function cpuConv2d(x: Float32Array, [N, C, H, W]: number[], w: Float32Array, [O, Cg, KH, KW]: number[], b: Float32Array,
  { stride: [sh, sw], padding: [ph, pw], dilation: [dh, dw], groups }: { stride: number[]; padding: number[]; dilation: number[]; groups: number }) {
  const Ho = Math.floor((H + 2 * ph! - dh! * (KH! - 1) - 1) / sh!) + 1;
  const Wo = Math.floor((W + 2 * pw! - dw! * (KW! - 1) - 1) / sw!) + 1;
  const out = new Float64Array(N! * O! * Ho * Wo);
  const Og = O! / groups;
  for (let n = 0; n < N!; n++) for (let o = 0; o < O!; o++) for (let oh = 0; oh < Ho; oh++) for (let ow = 0; ow < Wo; ow++) {
    let acc = b[o]!;
    for (let c = 0; c < Cg!; c++) for (let kh = 0; kh < KH!; kh++) for (let kw = 0; kw < KW!; kw++) {
      const ih = oh * sh! - ph! + kh * dh!;
      const iw = ow * sw! - pw! + kw * dw!;
      if (ih < 0 || ih >= H! || iw < 0 || iw >= W!) continue;
      const ci = Math.floor(o / Og) * Cg! + c;
      acc += x[((n * C! + ci) * H! + ih) * W! + iw]! * w[((o * Cg! + c) * KH! + kh) * KW! + kw]!;
    }
    out[((n * O! + o) * Ho + oh) * Wo + ow] = acc;
  }
  return { out, shape: [N!, O!, Ho, Wo] };
}

test('conv2d forward matches a CPU loop (batch 2, groups 2, stride [1, 2], padding [1, 0], dilation [2, 1])', async () => {
  const xs = [2, 4, 10, 9];
  const ws = [6, 2, 3, 3];
  const attrs = { stride: [1, 2], padding: [1, 0], dilation: [2, 1], groups: 2 };
  const [xd, wd, bd] = [randomArray(size(xs), 23), randomArray(size(ws), 24), randomArray(6, 25)];
  const ref = cpuConv2d(xd, xs, wd, ws, bd, attrs);
  const [x, w, b] = [Tensor.fromArray(xd, xs), Tensor.fromArray(wd, ws), Tensor.fromArray(bd, [6])];
  const y = conv2d(x, w, b, { stride: [1, 2], padding: [1, 0], dilation: [2, 1], groups: 2 });
  assert.equal([...y.shape], ref.shape);
  assertClose(await y.toArray(), ref.out, 1e-5, 'conv2d');
  for (const t of [x, w, b, y]) t.dispose();
});

test('conv2d with a fused SiLU on a tile-filling size (72 channels, 16×20 pixels) matches a CPU loop', async () => {
  const xs = [1, 24, 16, 20];
  const ws = [72, 24, 3, 3];
  const attrs = { stride: [1, 1], padding: [1, 1], dilation: [1, 1], groups: 1 };
  const [xd, wd, bd] = [randomArray(size(xs), 26), randomArray(size(ws), 27, -0.2, 0.2), randomArray(72, 28)];
  const ref = cpuConv2d(xd, xs, wd, ws, bd, attrs).out.map((v) => v / (1 + Math.exp(-v)));
  const [x, w, b] = [Tensor.fromArray(xd, xs), Tensor.fromArray(wd, ws), Tensor.fromArray(bd, [72])];
  const y = conv2d(x, w, b, { padding: 1, activation: 'silu' });
  assertClose(await y.toArray(), ref, 1e-5, 'conv2d+silu');
  for (const t of [x, w, b, y]) t.dispose();
});

test('gradcheck conv2d with a fused activation (recorded as conv then the activation)', async () => {
  await assertGradcheck('conv2d+gelu', (x, w, b) => conv2d(x, w, b, { padding: 1, activation: 'gelu_erf' }), [input([1, 2, 5, 4], 29), input([3, 2, 3, 3], 30), input([3], 31)], opts);
});

test('shape errors name the op and both shapes', () => {
  const x = Tensor.zeros([1, 4, 5, 5]);
  const w = Tensor.zeros([6, 3, 3, 3]);
  assert.throws(() => conv2d(x, w), /conv2d: input \[1, 4, 5, 5\] and weight \[6, 3, 3, 3\]/);
  assert.throws(() => maxPool2d(x, { kernelSize: 3, padding: 2 }), /maxPool2d: padding 2 must be at most half/);
  assert.throws(() => interpolate(x, { mode: 'bilinear' }), /interpolate: give exactly one of size and scaleFactor/);
  x.dispose();
  w.dispose();
});

test.run();
