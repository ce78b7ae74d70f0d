// AffinityNet's random walk: psa's reference vectors (../shared/conformance/affinity), a dense float64 CPU
// reference for other radii / β / grids / class counts, and finite-difference gradients.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { assertClose, assertTensorClose, conformance, conformanceDir, randomArray, readJson } from './helpers.ts';
import { assertGradcheck } from '../src/engine/gradcheck.ts';
import { noGrad } from '../src/engine/autograd.ts';
import { Tensor } from '../src/engine/tensor.ts';
import { affinityOffsets, affinityRandomWalk, pixelAffinities } from '../src/kernels/random_walk.ts';
import { avgPool2d } from '../src/kernels/pool.ts';
import { interpolate } from '../src/kernels/resample.ts';
import { argmax } from '../src/kernels/reduce.ts';
import { reshape } from '../src/kernels/shape.ts';

const io = conformance('affinity');
const cfg = await readJson<{ radius: number; beta: number; alpha: number; logt: number[]; C: number; H: number; W: number; K: number; downsample: number }>(
  `${conformanceDir}/affinity/config.json`,
);
const tol = 1e-4; // the README's rule

/** psa's pairs, written from get_indices_of_pairs' slicing (independently of the library's offsets). */
function psaPairs(radius: number, H: number, W: number): { from: number[]; to: number[][] } {
  const rf = radius - 1;
  const dsts: [number, number][] = [];
  for (let x = 1; x < radius; x++) dsts.push([0, x]);
  for (let y = 1; y < radius; y++) for (let x = -radius + 1; x < radius; x++) if (x * x + y * y < radius * radius) dsts.push([y, x]);
  const ch = H - rf;
  const cw = W - 2 * rf;
  const from: number[] = [];
  for (let y = 0; y < ch; y++) for (let x = rf; x < rf + cw; x++) from.push(y * W + x);
  const to = dsts.map(([dy, dx]) => {
    const t: number[] = [];
    for (let y = dy; y < dy + ch; y++) for (let x = rf + dx; x < rf + dx + cw; x++) t.push(y * W + x);
    return t;
  });
  return { from, to };
}

/** Dense float64 reference: aff, then T = aff_dense^β column-normalised, squared logt times, cam @ T. */
function denseWalk(f: Float32Array, C: number, H: number, W: number, cam: Float32Array, K: number, radius: number, beta: number, logt: number) {
  const n = H * W;
  const { from, to } = psaPairs(radius, H, W);
  let T = new Float64Array(n * n);
  for (let i = 0; i < n; i++) T[i * n + i] = 1;
  const aff: number[] = [];
  for (const block of to) {
    block.forEach((t, e) => {
      const s = from[e]!;
      let d = 0;
      for (let c = 0; c < C; c++) d += Math.abs(f[c * n + s]! - f[c * n + t]!);
      const a = Math.exp(-d / C);
      aff.push(a);
      T[s * n + t] = T[t * n + s] = a ** beta;
    });
  }
  for (let j = 0; j < n; j++) {
    let col = 0;
    for (let i = 0; i < n; i++) col += T[i * n + j]!;
    for (let i = 0; i < n; i++) T[i * n + j]! /= col;
  }
  for (let l = 0; l < logt; l++) {
    const S = new Float64Array(n * n);
    for (let i = 0; i < n; i++) for (let k = 0; k < n; k++) {
      const a = T[i * n + k]!;
      if (a === 0) continue;
      for (let j = 0; j < n; j++) S[i * n + j]! += a * T[k * n + j]!;
    }
    T = S;
  }
  const out = new Float64Array(K * n);
  for (let k = 0; k < K; k++) for (let i = 0; i < n; i++) {
    const c = cam[k * n + i]!;
    if (c === 0) continue;
    for (let j = 0; j < n; j++) out[k * n + j]! += c * T[i * n + j]!;
  }
  return { aff, out };
}

test('conformance: pairs, cam pooling and background row as psa', async () => {
  const { radius, H, W, alpha, downsample } = cfg;
  const { from, to } = psaPairs(radius, H, W);
  assert.equal([...(await io.get('ind_from').toArray())], from);
  assert.equal([...(await io.get('ind_to').toArray())], to.flat());
  assert.is(affinityOffsets(radius).length, to.length);
  const camFull = io.get('cam_full');
  await assertTensorClose(reshape(avgPool2d(reshape(camFull, [1, ...camFull.shape]), { kernelSize: downsample }), camFull.shape.map((d, k) => (k ? d / downsample : d))), io.get('cam'), tol, 'cam');
  // row 0 = (1 − max over the foreground rows)^alpha
  const c = await camFull.toArray();
  const n = camFull.shape[1]! * camFull.shape[2]!;
  const bg = Float32Array.from({ length: n }, (_, i) => (1 - Math.max(...Array.from({ length: cfg.K - 1 }, (_, k) => c[(k + 1) * n + i]!))) ** alpha);
  assertClose(c.subarray(0, n), bg, tol, 'cam_full background');
});

test('conformance: aff per pair and aff_dense', async () => {
  const { radius, H, W } = cfg;
  const aff = pixelAffinities(io.get('features'), radius); // [1, O, Hc, Wc] = psa's [O, nFrom]
  const a = await aff.toArray();
  assertClose(a, await io.get('aff').toArray(), tol, 'aff');
  const { from, to } = psaPairs(radius, H, W);
  const n = H * W;
  const dense = new Float32Array(n * n);
  for (let i = 0; i < n; i++) dense[i * n + i] = 1;
  to.forEach((block, o) => block.forEach((t, e) => (dense[from[e]! * n + t] = dense[t * n + from[e]!] = a[o * from.length + e]!)));
  assertClose(dense, await io.get('aff_dense').toArray(), tol, 'aff_dense');
});

for (const logt of cfg.logt) {
  test(`conformance: cam_rw, cam_rw_up and labels at logt ${logt}`, async () => {
    const { radius, beta, downsample } = cfg;
    const rw = affinityRandomWalk(io.get('features'), io.get('cam'), { radius, beta, logt });
    await assertTensorClose(rw, io.get(`cam_rw.logt${logt}`), tol, `cam_rw.logt${logt}`);
    const up = reshape(interpolate(reshape(rw, [1, ...rw.shape]), { scaleFactor: downsample, mode: 'bilinear', alignCorners: false }), io.get(`cam_rw_up.logt${logt}`).shape);
    await assertTensorClose(up, io.get(`cam_rw_up.logt${logt}`), tol, `cam_rw_up.logt${logt}`);
    const labels = await argmax(up, 0).toArray();
    const ref = await io.get(`labels.logt${logt}`).toArray();
    // argmax may flip only where the reference's top two scores tie within the tolerance
    const u = await io.get(`cam_rw_up.logt${logt}`).toArray();
    const n = ref.length;
    let flips = 0;
    for (let i = 0; i < n; i++) {
      if (labels[i] === ref[i]) continue;
      flips++;
      assert.ok(Math.abs(u[labels[i]! * n + i]! - u[ref[i]! * n + i]!) <= 2 * tol * (1 + Math.abs(u[ref[i]! * n + i]!)), `labels.logt${logt}: pixel ${i} is ${labels[i]}, reference ${ref[i]}`);
    }
    assert.ok(flips <= 2, `labels.logt${logt}: ${flips} near-tie flips`);
  });
}

const configs = [
  { C: 5, H: 9, W: 11, K: 2, radius: 3, beta: 2, logt: 3 },
  { C: 3, H: 13, W: 10, K: 4, radius: 4, beta: 5, logt: 1 },
  { C: 8, H: 7, W: 15, K: 1, radius: 2, beta: 8, logt: 5 },
];
for (const [ci, c] of configs.entries()) {
  test(`random walk vs dense float64 reference: ${JSON.stringify(c)}`, async () => {
    const n = c.H * c.W;
    const f = randomArray(c.C * n, 100 + ci, 0, 2);
    const cam = randomArray(c.K * n, 200 + ci, 0, 1);
    const ref = denseWalk(f, c.C, c.H, c.W, cam, c.K, c.radius, c.beta, c.logt);
    const ft = Tensor.fromArray(f, [1, c.C, c.H, c.W]);
    const aff = pixelAffinities(ft, c.radius);
    assertClose(await aff.toArray(), ref.aff, tol, 'aff');
    const rw = affinityRandomWalk(ft, Tensor.fromArray(cam, [c.K, c.H, c.W]), c);
    assert.equal([...rw.shape], [c.K, c.H, c.W]);
    assertClose(await rw.toArray(), ref.out, tol, 'cam_rw');
  });
}

test('pixelAffinities over a batch: each image as alone', async () => {
  const f = randomArray(2 * 3 * 8 * 9, 7, 0, 1);
  const both = await pixelAffinities(Tensor.fromArray(f, [2, 3, 8, 9]), 3).toArray();
  const second = await pixelAffinities(Tensor.fromArray(f.subarray(3 * 72), [1, 3, 8, 9]), 3).toArray();
  assertClose(both.subarray(both.length / 2), second, 1e-6, 'second image');
});

test('gradcheck affinityRandomWalk w.r.t. features and cam', async () => {
  const [C, H, W, K] = [3, 5, 7, 2];
  await assertGradcheck('affinityRandomWalk', (f, cam) => affinityRandomWalk(f, cam, { radius: 3, beta: 2, logt: 1 }), [
    { data: randomArray(C * H * W, 31, 0, 2), shape: [1, C, H, W] },
    { data: randomArray(K * H * W, 32, 0, 1), shape: [K, H, W] },
  ], { samples: 24 });
});

test('gradcheck pixelAffinities (batch 2)', async () => {
  await assertGradcheck('pixelAffinities', (f) => pixelAffinities(f, 2), [{ data: randomArray(2 * 4 * 4 * 5, 33, 0, 2), shape: [2, 4, 4, 5] }], { samples: 24 });
});

test('affinityRandomWalk rejects bad inputs by name', () => {
  const f = Tensor.zeros([1, 2, 6, 6]);
  assert.throws(() => affinityRandomWalk(f, Tensor.zeros([2, 6, 5]), { radius: 2, beta: 1, logt: 1 }), /cam \[2, 6, 5\] must be on the feature grid 6×6/);
  assert.throws(() => affinityRandomWalk(f, Tensor.zeros([2, 6, 6]), { radius: 5, beta: 1, logt: 1 }), /too small for radius 5/);
  assert.throws(() => noGrad(() => affinityRandomWalk(Tensor.zeros([2, 2, 6, 6]), Tensor.zeros([2, 6, 6]), { radius: 2, beta: 1, logt: 1 })), /one image/);
});

test.run();
