// Finite-difference gradient checks for the normalisation, loss and gather ops, on shapes and attributes of
// our own (not the conformance ones), plus forward checks against plain CPU formulas where the conformance
// vectors do not reach (batch norm training, label smoothing, gather).
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { assertClose, randomArray } from './helpers.ts';
import { assertGradcheck } from '../src/engine/gradcheck.ts';
import { Tensor } from '../src/engine/tensor.ts';
import { embedding, gather, indexSelect } from '../src/kernels/gather.ts';
import { binaryCrossEntropyWithLogits, crossEntropy, l1Loss, mseLoss, nllLoss } from '../src/kernels/loss.ts';
import { batchNorm, groupNorm, layerNorm } from '../src/kernels/norm.ts';
import { logSoftmax } from '../src/kernels/softmax.ts';

const size = (shape: number[]) => shape.reduce((a, b) => a * b, 1);
const input = (shape: number[], seed: number, lo = -2, hi = 2) => ({ data: randomArray(size(shape), seed, lo, hi), shape });
const ints = (values: number[], shape = [values.length]) => Tensor.fromArray(new Int32Array(values), shape);
const opts = { samples: 16 };

test('gradcheck group_norm: 3 groups with affine, and without', async () => {
  await assertGradcheck('group_norm affine', (x, w, b) => groupNorm(x, 3, w, b, 1e-4),
    [input([2, 6, 5, 3], 1), input([6], 2, 0.5, 1.5), input([6], 3)], opts);
  await assertGradcheck('group_norm plain', (x) => groupNorm(x, 2, undefined, undefined), [input([3, 4, 7], 4)], opts);
});

test('gradcheck group_norm: groups of 4608 elements (threads striding over long rows)', async () => {
  // Values offset from 0, so the two-pass statistics matter. A larger step: one element moves all 4608
  // outputs of its group a little, and with eps = 1e-3 float32 rounding of those outputs swamps the difference.
  await assertGradcheck('group_norm big', (x, w, b) => groupNorm(x, 3, w, b),
    [input([1, 6, 48, 48], 5, 2, 6), input([6], 6, 0.5, 1.5), input([6], 7)], { samples: 12, eps: 1e-2 });
});

test('group_norm forward: each group has mean 0 and variance 1 before the affine', async () => {
  const x = Tensor.fromArray(randomArray(2 * 6 * 40 * 40, 8, 100, 104), [2, 6, 40, 40]);
  const y = (await groupNorm(x, 3).toArray()) as Float32Array;
  const n = 2 * 40 * 40;
  for (let g = 0; g < 6; g++) {
    const part = y.subarray(g * n, (g + 1) * n);
    const m = part.reduce((a, b) => a + b, 0) / n;
    const v = part.reduce((a, b) => a + (b - m) ** 2, 0) / n;
    assert.ok(Math.abs(m) < 1e-4 && Math.abs(v - 1) < 1e-3, `group ${g}: mean ${m}, variance ${v}`);
  }
});

test('group_norm with a fused SiLU equals silu(group_norm) computed on the CPU; gradcheck records it unfused', async () => {
  const [N, C, S, G] = [2, 6, 10, 3];
  const xd = randomArray(N * C * S, 9, -3, 3);
  const wd = randomArray(C, 10, 0.5, 1.5);
  const bd = randomArray(C, 11);
  const ref = new Float64Array(xd.length);
  const per = (C / G) * S;
  for (let n = 0; n < N; n++) {
    for (let g = 0; g < G; g++) {
      const base = (n * C + g * (C / G)) * S;
      let m = 0;
      for (let j = 0; j < per; j++) m += xd[base + j]!;
      m /= per;
      let v = 0;
      for (let j = 0; j < per; j++) v += (xd[base + j]! - m) ** 2;
      v /= per;
      for (let j = 0; j < per; j++) {
        const c = g * (C / G) + Math.floor(j / S);
        const y = ((xd[base + j]! - m) / Math.sqrt(v + 1e-5)) * wd[c]! + bd[c]!;
        ref[base + j] = y / (1 + Math.exp(-y));
      }
    }
  }
  const [x, w, b] = [Tensor.fromArray(xd, [N, C, S]), Tensor.fromArray(wd, [C]), Tensor.fromArray(bd, [C])];
  const y = groupNorm(x, G, w, b, 1e-5, 'silu');
  assertClose(await y.toArray(), ref, 1e-5, 'group_norm+silu');
  [x, w, b, y].forEach((t) => t.dispose());
  await assertGradcheck('group_norm+silu', (xx, ww, bb) => groupNorm(xx, 2, ww, bb, 1e-4, 'silu'),
    [input([1, 4, 3, 2], 12), input([4], 13, 0.5, 1.5), input([4], 14)], opts);
});

test('gradcheck layer_norm over two trailing dims, with and without affine', async () => {
  await assertGradcheck('layer_norm affine', (x, w, b) => layerNorm(x, [4, 5], w, b),
    [input([3, 4, 5], 9), input([4, 5], 10, 0.5, 1.5), input([4, 5], 11)], opts);
  await assertGradcheck('layer_norm plain', (x) => layerNorm(x, [9]), [input([2, 3, 9], 12)], opts);
});

test('gradcheck batch_norm eval (running statistics) and training (batch statistics)', async () => {
  const mean = Tensor.fromArray(randomArray(4, 13));
  const variance = Tensor.fromArray(randomArray(4, 14, 0.5, 2));
  await assertGradcheck('batch_norm eval', (x, w, b) => batchNorm(x, mean, variance, w, b),
    [input([3, 4, 2, 3], 15), input([4], 16, 0.5, 1.5), input([4], 17)], opts);
  await assertGradcheck('batch_norm training', (x, w, b) => batchNorm(x, undefined, undefined, w, b, { training: true }),
    [input([3, 4, 5], 18), input([4], 19, 0.5, 1.5), input([4], 20)], opts);
  mean.dispose();
  variance.dispose();
});

test('batch_norm training: batch statistics and running statistics update match PyTorch formulas', async () => {
  const [N, C, S] = [3, 2, 4];
  const data = randomArray(N * C * S, 21, -1, 3);
  const x = Tensor.fromArray(data, [N, C, S]);
  const runningMean = Tensor.fromArray([0.5, -0.5]);
  const runningVar = Tensor.fromArray([1, 2]);
  const y = await batchNorm(x, runningMean, runningVar, undefined, undefined, { training: true, momentum: 0.2, eps: 1e-3 }).toArray();
  const want: number[] = [];
  const rm = [0.5, -0.5];
  const rv = [1, 2];
  const stats = [0, 1].map((c) => {
    const vals = Array.from({ length: N * S }, (_, j) => data[Math.floor(j / S) * C * S + c * S + (j % S)]!);
    const m = vals.reduce((a, b) => a + b, 0) / vals.length;
    const v = vals.reduce((a, b) => a + (b - m) ** 2, 0) / vals.length;
    rm[c] = 0.8 * rm[c]! + 0.2 * m;
    rv[c] = 0.8 * rv[c]! + 0.2 * v * vals.length / (vals.length - 1);
    return { m, v };
  });
  data.forEach((v, i) => {
    const { m, v: variance } = stats[Math.floor(i / S) % C]!;
    want.push((v - m) / Math.sqrt(variance + 1e-3));
  });
  assertClose(y, want, 1e-5, 'batch_norm training output');
  assertClose(await runningMean.toArray(), rm, 1e-6, 'running mean');
  assertClose(await runningVar.toArray(), rv, 1e-5, 'running var');
});

test('gradcheck cross_entropy on [N, C, H, W] with ignore_index and class weights, every reduction', async () => {
  const target = ints([0, 4, 255, 2, 1, 1, 3, 255, 4, 0, 2, 2, 255, 3, 1, 0, 4, 4, 2, 1, 0, 3, 3, 1], [2, 3, 4]);
  const weight = Tensor.fromArray([0.5, 1, 2, 0.3, 1.5]);
  for (const reduction of ['mean', 'sum', 'none'] as const) {
    await assertGradcheck(`cross_entropy ${reduction}`, (x) => crossEntropy(x, target, { weight, ignoreIndex: 255, reduction }),
      [input([2, 5, 3, 4], 22)], opts);
  }
  await assertGradcheck('cross_entropy label smoothing', (x) => crossEntropy(x, target, { weight, ignoreIndex: 255, labelSmoothing: 0.2 }),
    [input([2, 5, 3, 4], 23)], opts);
  target.dispose();
  weight.dispose();
});

test('cross_entropy forward: label smoothing with class weights and the ignore index, against the formula', async () => {
  const [N, C] = [4, 3];
  const data = randomArray(N * C, 24, -3, 3);
  const targets = [2, -100, 0, 1];
  const w = [0.2, 1, 3];
  const eps = 0.1;
  const x = Tensor.fromArray(data, [N, C]);
  const t = ints(targets);
  const weight = Tensor.fromArray(w);
  const got = await crossEntropy(x, t, { weight, labelSmoothing: eps }).item();
  let total = 0;
  let denominator = 0;
  targets.forEach((tt, n) => {
    if (tt === -100) return;
    const row = Array.from(data.subarray(n * C, (n + 1) * C));
    const lse = Math.log(row.reduce((a, v) => a + Math.exp(v), 0));
    total += (1 - eps) * w[tt]! * (lse - row[tt]!) + (eps / C) * row.reduce((a, v, c) => a + w[c]! * (lse - v), 0);
    denominator += w[tt]!;
  });
  assertClose([got], [total / denominator], 1e-5, 'smoothed cross entropy');
});

test('gradcheck nll_loss on log-probabilities, 1-D input', async () => {
  const target = ints([2], []);
  await assertGradcheck('nll_loss 1-D', (x) => nllLoss(logSoftmax(x, 0), target), [input([5], 25)], opts);
  target.dispose();
});

test('gradcheck binary_cross_entropy_with_logits with weight and pos_weight (logits and target)', async () => {
  const weight = Tensor.fromArray(randomArray(3 * 1 * 4, 26, 0.2, 2), [3, 1, 4]);
  const posWeight = Tensor.fromArray([0.5, 2, 3, 1]);
  for (const reduction of ['mean', 'sum', 'none'] as const) {
    await assertGradcheck(`bce ${reduction}`, (x, t) => binaryCrossEntropyWithLogits(x, t, { weight, posWeight, reduction }),
      [input([3, 2, 4], 27, -6, 6), input([3, 2, 4], 28, 0, 1)], opts);
  }
  await assertGradcheck('bce plain', (x, t) => binaryCrossEntropyWithLogits(x, t), [input([5, 3], 29, -4, 4), input([5, 3], 30, 0, 1)], opts);
  weight.dispose();
  posWeight.dispose();
});

test('binary_cross_entropy_with_logits stays finite and exact for large logits', async () => {
  const x = Tensor.fromArray([100, -100, 30, -30, 0]);
  const t = Tensor.fromArray([1, 0, 0, 1, 0.5]);
  const got = await binaryCrossEntropyWithLogits(x, t, { reduction: 'none' }).toArray();
  assertClose(got, [0, 0, 30, 30, Math.log(2)], 1e-6, 'bce large logits');
  // log(1 + e^-20) ≈ 2.06e-9 needs an accurate log1p
  const tiny = await binaryCrossEntropyWithLogits(Tensor.fromArray([20]), Tensor.fromArray([1]), { reduction: 'none' }).item();
  assert.ok(Math.abs(tiny - Math.log1p(Math.exp(-20))) < 1e-12, `bce(20, 1) = ${tiny}`);
});

test('gradcheck mse_loss and l1_loss (broadcast target)', async () => {
  await assertGradcheck('mse', (a, b) => mseLoss(a, b), [input([4, 3], 31), input([3], 32)], opts);
  await assertGradcheck('l1', (a, b) => l1Loss(a, b, { reduction: 'sum' }), [input([4, 3], 33, 0.5, 2), input([4, 3], 34, -2, -0.5)], opts);
});

test('gradcheck index_select with repeated indices along a middle dim', async () => {
  const index = ints([4, 0, 4, 2, 4, 0]);
  await assertGradcheck('index_select', (x) => indexSelect(x, 1, index), [input([3, 5, 2], 35)], opts);
  index.dispose();
});

test('gradcheck embedding with repeated ids', async () => {
  const ids = ints([3, 0, 3, 6, 3, 1, 0, 5], [2, 4]);
  await assertGradcheck('embedding', (w) => embedding(ids, w), [input([7, 4], 36)], opts);
  ids.dispose();
});

test('gather forward against the definition, and gradcheck with repeated indices and a smaller index', async () => {
  const data = randomArray(4 * 6, 37);
  const idx = [5, 0, 5, 2, 1, 1, 1, 3, 0, 5, 4, 5];
  const index = ints(idx, [3, 4]);
  const got = await gather(Tensor.fromArray(data, [4, 6]), 1, index).toArray();
  assertClose(got, idx.map((v, k) => data[Math.floor(k / 4) * 6 + v]!), 0, 'gather dim 1');
  await assertGradcheck('gather dim 1', (x) => gather(x, 1, index), [input([4, 6], 38)], opts);
  const rows = ints([2, 0, 2, 1, 2, 2], [2, 3]);
  await assertGradcheck('gather dim 0', (x) => gather(x, 0, rows), [input([3, 4], 39)], opts);
  index.dispose();
  rows.dispose();
});

test('shape errors name the op and the shapes', () => {
  const x = Tensor.zeros([2, 6, 3]);
  assert.throws(() => groupNorm(x, 4), /group_norm: 6 channels \(input \[2, 6, 3\]\) do not split into 4 groups/);
  assert.throws(() => layerNorm(x, [6]), /layer_norm: normalized shape \[6\] is not the trailing dims of input \[2, 6, 3\]/);
  assert.throws(() => crossEntropy(x, ints([0, 1])), /cross_entropy: input \[2, 6, 3\] needs a target of shape \[2, 3\], got \[2\]/);
  assert.throws(() => indexSelect(x, 0, Tensor.zeros([2])), /index_select: expected a i32 tensor/);
  x.dispose();
});

test.run();
