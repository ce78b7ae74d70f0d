// Finite-difference gradient checks for matmul, gemm, linear, softmax and attention on shapes of our own,
// plus forward checks against plain CPU loops (tile-unaligned sizes, transposed operands, masks).
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { assertClose, erf, randomArray } from './helpers.ts';
import { assertGradcheck } from '../src/engine/gradcheck.ts';
import { Tensor, numel } from '../src/engine/tensor.ts';
import { profileReport, resetProfile, setProfiling, sync } from '../src/engine/queue.ts';
import { cast } from '../src/kernels/elementwise.ts';
import { attentionProbs, scaledDotProductAttention } from '../src/kernels/attention.ts';
import { gemm, linear, matmul } from '../src/kernels/matmul.ts';
import { logSoftmax, maskedSoftmax, softmax } from '../src/kernels/softmax.ts';

const input = (shape: number[], seed: number) => ({ data: randomArray(numel(shape), seed), shape });
const opts = { samples: 16 };

/** C[b] = A[b]·B[b] on the CPU for A [batch, M, K], B [batch, K, N] (batch 1 of either broadcasts). */
function cpuMatmul(a: Float32Array, b: Float32Array, batch: number, M: number, K: number, N: number, batchA = batch, batchB = batch): Float64Array {
  const out = new Float64Array(batch * M * N);
  for (let z = 0; z < batch; z++) {
    const ao = (batchA === 1 ? 0 : z) * M * K;
    const bo = (batchB === 1 ? 0 : z) * K * N;
    for (let i = 0; i < M; i++) {
      for (let j = 0; j < N; j++) {
        let s = 0;
        for (let k = 0; k < K; k++) s += a[ao + i * K + k]! * b[bo + k * N + j]!;
        out[z * M * N + i * N + j] = s;
      }
    }
  }
  return out;
}

/** The transpose of the last two dims of a [batch, rows, cols] array. */
function cpuTranspose(x: Float32Array, batch: number, rows: number, cols: number): Float32Array {
  const out = new Float32Array(x.length);
  for (let z = 0; z < batch; z++) for (let i = 0; i < rows; i++) for (let j = 0; j < cols; j++) out[z * rows * cols + j * rows + i] = x[z * rows * cols + i * cols + j]!;
  return out;
}

async function checkMatmul(batch: number, M: number, K: number, N: number, batchA = batch, batchB = batch): Promise<void> {
  const ad = randomArray(batchA * M * K, M + K);
  const bd = randomArray(batchB * K * N, K + N);
  const a = Tensor.fromArray(ad, [batchA, M, K]);
  const b = Tensor.fromArray(bd, [batchB, K, N]);
  const y = matmul(a, b);
  assert.equal([...y.shape], [batch, M, N]);
  assertClose(await y.toArray(), cpuMatmul(ad, bd, batch, M, K, N, batchA, batchB), 1e-5, `matmul ${batch}×${M}×${K}×${N}`);
  [a, b, y].forEach((t) => t.dispose());
}

test('matmul forward matches a CPU loop on sizes off the tile grid', async () => {
  await checkMatmul(3, 37, 53, 29);
  await checkMatmul(3, 37, 53, 29, 1, 3);
  await checkMatmul(2, 5, 70, 66, 2, 1);
  await checkMatmul(1, 130, 257, 65);
});

// Sizes that take each load path: dims that are multiples of 4 load as vec4, others as scalars.
for (const [batch, M, K, N] of [[2, 19, 35, 40], [2, 16, 36, 44], [1, 68, 12, 9], [3, 4, 7, 130]] as const) {
  test(`gemm forward ${batch}×${M}×${K}×${N}: transposed operands, alpha, broadcast biases, fused activation`, async () => {
    const ad = randomArray(batch * M * K, 1);
    const bd = randomArray(batch * K * N, 2);
    const rowBias = randomArray(M, 3);
    const colBias = randomArray(batch * N, 4);
    const gelu = (x: number) => 0.5 * x * (1 + erf(x / Math.SQRT2));
    const product = cpuMatmul(ad, bd, batch, M, K, N);
    const refRow = product.map((v, i) => 0.5 * v + rowBias[Math.floor(i / N) % M]!);
    const refCol = product.map((v, i) => gelu(0.5 * v + colBias[Math.floor(i / (M * N)) * N + (i % N)]!));
    const stored = { a: Tensor.fromArray(ad, [batch, M, K]), aT: Tensor.fromArray(cpuTranspose(ad, batch, M, K), [batch, K, M]) };
    const storedB = { b: Tensor.fromArray(bd, [batch, K, N]), bT: Tensor.fromArray(cpuTranspose(bd, batch, K, N), [batch, N, K]) };
    const biasM = Tensor.fromArray(rowBias, [M, 1]);
    const biasN = Tensor.fromArray(colBias, [batch, 1, N]);
    for (const transA of [false, true]) {
      for (const transB of [false, true]) {
        const [a, b] = [transA ? stored.aT : stored.a, transB ? storedB.bT : storedB.b];
        const y = gemm(a, b, { transA, transB, alpha: 0.5, bias: biasM });
        assertClose(await y.toArray(), refRow, 1e-5, `gemm transA=${transA} transB=${transB}`);
        const z = gemm(a, b, { transA, transB, alpha: 0.5, bias: biasN, activation: 'gelu_erf' });
        assertClose(await z.toArray(), refCol, 1e-5, `gemm+gelu transA=${transA} transB=${transB}`);
        [y, z].forEach((t) => t.dispose());
      }
    }
    [...Object.values(stored), ...Object.values(storedB), biasM, biasN].forEach((t) => t.dispose());
  });
}

test('gemm with a fused activation records the activation separately for backward', async () => {
  const a = input([3, 5], 21);
  const b = input([5, 4], 22);
  await assertGradcheck('gemm+silu', (x, y) => gemm(x, y, { activation: 'silu' }), [a, b], opts);
});

test('matmul shapes: 1-D operands and errors naming both shapes', () => {
  const v = Tensor.fromArray(randomArray(4, 1), [4]);
  const m = Tensor.fromArray(randomArray(12, 2), [4, 3]);
  const bm = Tensor.fromArray(randomArray(24, 3), [2, 3, 4]);
  assert.equal([...matmul(v, v).shape], []);
  assert.equal([...matmul(v, m).shape], [3]);
  assert.equal([...matmul(bm, v).shape], [2, 3]);
  assert.throws(() => matmul(m, m), /matmul: .*\[4, 3\].*\[4, 3\]/);
  assert.throws(() => linear(bm, m), /linear: .*\[2, 3, 4\].*\[4, 3\]/);
});

test('gradcheck matmul: 2-D, batched with broadcasting, 1-D operands', async () => {
  await assertGradcheck('matmul 2-D', (a, b) => matmul(a, b), [input([5, 7], 1), input([7, 4], 2)], opts);
  await assertGradcheck('matmul broadcast', (a, b) => matmul(a, b), [input([2, 1, 3, 5], 3), input([4, 5, 2], 4)], opts);
  await assertGradcheck('matmul batched · matrix', (a, b) => matmul(a, b), [input([2, 3, 6], 5), input([6, 4], 6)], opts);
  await assertGradcheck('matmul vector · batched', (a, b) => matmul(a, b), [input([6], 7), input([2, 6, 3], 8)], opts);
  await assertGradcheck('matmul dot', (a, b) => matmul(a, b), [input([9], 9), input([9], 10)], opts);
});

test('gradcheck gemm: every transpose combination with alpha and bias', async () => {
  for (const transA of [false, true]) {
    for (const transB of [false, true]) {
      const a = input(transA ? [2, 6, 5] : [2, 5, 6], 11);
      const b = input(transB ? [1, 3, 6] : [1, 6, 3], 12);
      await assertGradcheck(`gemm ${transA}/${transB}`, (x, y, c) => gemm(x, y, { transA, transB, alpha: -0.7, bias: c }), [a, b, input([5, 1], 13)], opts);
    }
  }
});

test('gradcheck linear: with and without bias, 3-D input', async () => {
  await assertGradcheck('linear bias', (x, w, b) => linear(x, w, b), [input([2, 3, 5], 14), input([4, 5], 15), input([4], 16)], opts);
  await assertGradcheck('linear no bias', (x, w) => linear(x, w), [input([3, 5], 17), input([6, 5], 18)], opts);
  await assertGradcheck('linear 1-D', (x, w, b) => linear(x, w, b), [input([5], 19), input([2, 5], 20), input([2], 21)], opts);
});

test('gradcheck softmax and log_softmax over several dims, short and long rows', async () => {
  for (const dim of [0, 1, -1]) {
    await assertGradcheck(`softmax dim ${dim}`, (x) => softmax(x, dim), [input([3, 4, 5], 22 + dim)], opts);
    await assertGradcheck(`log_softmax dim ${dim}`, (x) => logSoftmax(x, dim), [input([3, 4, 5], 25 + dim)], opts);
  }
  // rows of 300 share 64 threads each; along dim 0 they are strided. A larger step keeps the float32
  // rounding of the 600-term loss out of the finite differences.
  const long = { ...opts, eps: 1e-2 };
  await assertGradcheck('softmax long rows', (x) => softmax(x, 0), [input([300, 2], 28)], long);
  await assertGradcheck('log_softmax long rows', (x) => logSoftmax(x, -1), [input([2, 300], 29)], long);
});

test('softmax forward: stable for large inputs, sums to one; masked rows', async () => {
  const data = randomArray(3 * 600, 30, -50, 50).map((v, i) => (i === 7 ? 1e4 : v));
  const x = Tensor.fromArray(data, [3, 600]);
  const y = await softmax(x, -1).toArray();
  const ref: number[] = [];
  for (let r = 0; r < 3; r++) {
    const row = [...data.subarray(r * 600, (r + 1) * 600)];
    const mx = Math.max(...row);
    const total = row.reduce((s, v) => s + Math.exp(v - mx), 0);
    ref.push(...row.map((v) => Math.exp(v - mx) / total));
  }
  assertClose(y, ref, 1e-6, 'softmax');
  const keep = Tensor.fromArray(new Int32Array([1, 0, 1, 0, 0, 0]), [3, 1, 2]);
  const z = await maskedSoftmax(Tensor.fromArray([1, 2, 3, 4, 5, 6], [3, 1, 2]), keep, 0).toArray();
  assertClose(z, [Math.exp(1) / (Math.exp(1) + Math.exp(3)), 0, Math.exp(3) / (Math.exp(1) + Math.exp(3)), 0, 0, 0], 1e-6, 'masked softmax');
});

test('gradcheck masked softmax', async () => {
  const keep = Tensor.fromArray(randomArray(4 * 6, 31).map((v) => (v > -0.3 ? 1 : 0)), [4, 1, 6]);
  await assertGradcheck('masked softmax', (x) => maskedSoftmax(x, keep, -1), [input([4, 3, 6], 32)], opts);
  keep.dispose();
});

/** softmax(scale·q·kᵀ + bias) with keep mask on the CPU, for q [B, Lq, D], k [B, Lk, D] and bias/keep [B, Lq, Lk]. */
function cpuProbs(q: Float32Array, k: Float32Array, bias: Float32Array, keep: ArrayLike<number>, B: number, Lq: number, Lk: number, D: number, scale: number): number[] {
  const out: number[] = [];
  for (let b = 0; b < B; b++) {
    for (let i = 0; i < Lq; i++) {
      const s = Array.from({ length: Lk }, (_, j) => {
        let dot = 0;
        for (let d = 0; d < D; d++) dot += q[(b * Lq + i) * D + d]! * k[(b * Lk + j) * D + d]!;
        return dot * scale + bias[(b * Lq + i) * Lk + j]!;
      });
      const kept = s.map((_, j) => keep[(b * Lq + i) * Lk + j] !== 0);
      const mx = Math.max(...s.filter((_, j) => kept[j]));
      const e = s.map((v, j) => (kept[j] ? Math.exp(v - mx) : 0));
      const total = e.reduce((x, y) => x + y, 0);
      out.push(...e.map((v) => (total > 0 ? v / total : 0)));
    }
  }
  return out;
}

test('attentionProbs forward: bias, causal and mask against a CPU reference', async () => {
  const [B, Lq, Lk, D] = [2, 5, 7, 3];
  const qd = randomArray(B * Lq * D, 33);
  const kd = randomArray(B * Lk * D, 34);
  const biasd = randomArray(Lq * Lk, 35);
  const maskd = Int32Array.from({ length: B * Lk }, (_, i) => (i % 3 === 1 ? 0 : 1));
  const q = Tensor.fromArray(qd, [B, Lq, D]);
  const k = Tensor.fromArray(kd, [B, Lk, D]);
  const bias = Tensor.fromArray(biasd, [Lq, Lk]);
  const mask = Tensor.fromArray(maskd, [B, 1, Lk]);
  const p = attentionProbs(q, k, { scale: 0.8, bias, causal: true, mask });
  const fullBias = Float32Array.from({ length: B * Lq * Lk }, (_, i) => biasd[i % (Lq * Lk)]!);
  const keep = Array.from({ length: B * Lq * Lk }, (_, i) => {
    const [b, r, j] = [Math.floor(i / (Lq * Lk)), Math.floor(i / Lk) % Lq, i % Lk];
    return j <= r && maskd[b * Lk + j] ? 1 : 0;
  });
  assertClose(await p.toArray(), cpuProbs(qd, kd, fullBias, keep, B, Lq, Lk, D, 0.8), 1e-5, 'attention probs');
  [q, k, bias, mask, p].forEach((t) => t.dispose());
});

test('gradcheck scaled dot-product attention: plain, bias, causal, mask, 3-D', async () => {
  const [q, k, v] = [input([1, 2, 4, 3], 36), input([1, 2, 5, 3], 37), input([1, 2, 5, 2], 38)];
  await assertGradcheck('sdpa', (a, b, c) => scaledDotProductAttention(a, b, c), [q, k, v], opts);
  await assertGradcheck('sdpa bias', (a, b, c, d) => scaledDotProductAttention(a, b, c, { bias: d, scale: 0.6 }), [q, k, v, input([2, 4, 5], 39)], opts);
  const [qs, ks, vs] = [input([2, 5, 3], 40), input([2, 5, 3], 41), input([2, 5, 4], 42)];
  await assertGradcheck('sdpa causal 3-D', (a, b, c) => scaledDotProductAttention(a, b, c, { causal: true }), [qs, ks, vs], opts);
  const mask = Tensor.fromArray([1, 1, 0, 1, 0, 0, 1, 1, 1, 1], [2, 1, 5]);
  await assertGradcheck('sdpa mask + bias', (a, b, c, d) => scaledDotProductAttention(a, b, c, { mask, bias: d }), [qs, ks, vs, input([1, 5, 5], 43)], opts);
  mask.dispose();
});

test('sdpa in query blocks equals one block: bias and mask with a query dim, causal, onProbs sees every row', async () => {
  const [B, H, Lq, Lk, D] = [2, 3, 11, 7, 5];
  const q = Tensor.fromArray(randomArray(B * H * Lq * D, 51), [B, H, Lq, D]);
  const k = Tensor.fromArray(randomArray(B * H * Lk * D, 52), [B, H, Lk, D]);
  const v = Tensor.fromArray(randomArray(B * H * Lk * 4, 53), [B, H, Lk, 4]);
  const bias = Tensor.fromArray(randomArray(H * Lq * Lk, 54), [H, Lq, Lk]);
  const mask = Tensor.fromArray(Float32Array.from(randomArray(Lq * Lk, 55), (x) => (x > -0.6 ? 1 : 0)), [Lq, Lk]);
  const whole = scaledDotProductAttention(q, k, v, { bias, mask, causal: true });
  const probs = attentionProbs(q, k, { bias, mask, causal: true });
  const rowBytes = B * H * Lk * 4;
  const seen: number[] = [];
  const refProbs = await probs.toArray();
  const pending: Promise<void>[] = [];
  const blocked = scaledDotProductAttention(q, k, v, {
    bias, mask, causal: true, blockBytes: 3 * rowBytes,
    onProbs: (p, start) => {
      const rows = p.shape[2]!;
      for (let r = 0; r < rows; r++) seen.push(start + r);
      const copy = p.alias();
      pending.push(copy.toArray().then((got) => {
        const want = new Float32Array(got.length);
        for (let bh = 0; bh < B * H; bh++) want.set(refProbs.subarray((bh * Lq + start) * Lk, (bh * Lq + start + rows) * Lk), bh * rows * Lk);
        assertClose(got, want, 1e-6, `probs block at ${start}`);
        copy.dispose();
      }));
    },
  });
  await Promise.all(pending);
  assert.equal(seen, [...Array(Lq).keys()]);
  assertClose(await blocked.toArray(), await whole.toArray(), 1e-6, 'blocked sdpa');
  await assertGradcheck('sdpa in blocks', (a, b, c, d) => scaledDotProductAttention(a, b, c, { bias: d, causal: true, blockBytes: 2 * 2 * Lk * 4 }),
    [input([2, 5, 3], 56), input([2, Lk, 3], 57), input([2, Lk, 3], 58), input([5, Lk], 59)], opts);
  [q, k, v, bias, mask, whole, probs, blocked].forEach((t) => t.dispose());
});

/** Kernel names run by `fn` (GPU timestamps), to tell which attention path ran. */
async function kernelsOf(fn: () => Tensor): Promise<{ out: Tensor; kernels: string[] }> {
  resetProfile();
  setProfiling(true);
  const out = fn();
  await sync();
  setProfiling(false);
  return { out, kernels: (await profileReport()).map((r) => r.kernel) };
}

test('fused attention (≥ 1024 queries, inference): float64 CPU reference with partial key tiles, 3-D and 4-D, Dv ≠ D, f16', async () => {
  for (const [batch, Lq, Lk, D, Dv, scale] of [[[2], 1030, 13, 8, 12, 0.7], [[1, 2], 1024, 1024, 12, 4, undefined]] as const) {
    const B = numel(batch);
    const [qd, kd, vd] = [randomArray(B * Lq * D, 61), randomArray(B * Lk * D, 62, -2, 2), randomArray(B * Lk * Dv, 63)];
    const [q, k, v] = [Tensor.fromArray(qd, [...batch, Lq, D]), Tensor.fromArray(kd, [...batch, Lk, D]), Tensor.fromArray(vd, [...batch, Lk, Dv])];
    const probs = cpuProbs(qd, kd, new Float32Array(B * Lq * Lk), new Uint8Array(B * Lq * Lk).fill(1), B, Lq, Lk, D, scale ?? 1 / Math.sqrt(D));
    const ref = new Float64Array(B * Lq * Dv);
    for (let b = 0; b < B; b++) for (let i = 0; i < Lq; i++) for (let j = 0; j < Lk; j++) {
      const p = probs[(b * Lq + i) * Lk + j]!;
      for (let d = 0; d < Dv; d++) ref[(b * Lq + i) * Dv + d] += p * vd[(b * Lk + j) * Dv + d]!;
    }
    const { out, kernels } = await kernelsOf(() => scaledDotProductAttention(q, k, v, { scale }));
    assert.ok(kernels.includes('attention.fused'), `the fused kernel ran (${kernels.join(', ')})`);
    assertClose(await out.toArray(), ref, 1e-5, `fused attention ${JSON.stringify([batch, Lq, Lk])}`);
    // f16 storage: the same kernel reads f16 and rounds its output once
    const half = (t: Tensor) => cast(t, 'f16');
    const { out: out16, kernels: kernels16 } = await kernelsOf(() => scaledDotProductAttention(half(q), half(k), half(v), { scale }));
    assert.ok(kernels16.includes('attention.fused') && out16.dtype === 'f16', 'f16 through the fused kernel');
    assertClose(await out16.toArray(), ref, 2e-2, 'fused attention f16');
    // a recorded gradient takes the composed, differentiable path
    q.requiresGrad = true;
    const { out: composed, kernels: kernelsGrad } = await kernelsOf(() => scaledDotProductAttention(q, k, v, { scale }));
    assert.not.ok(kernelsGrad.includes('attention.fused'), 'composed path when q needs a gradient');
    assertClose(await composed.toArray(), ref, 1e-5, 'composed attention');
    [q, k, v, out, out16, composed].forEach((t) => t.dispose());
  }
});

test('attention errors name the op and shapes', () => {
  const q = Tensor.zeros([1, 2, 4, 3]);
  const k = Tensor.zeros([1, 2, 5, 3]);
  assert.throws(() => attentionProbs(q, k, { bias: Tensor.zeros([3, 4, 5]) }), /attention: bias of shape \[3, 4, 5\] does not broadcast to \[1, 2, 4, 5\]/);
  assert.throws(() => scaledDotProductAttention(q, k, Tensor.zeros([1, 2, 4, 3])), /scaled_dot_product_attention: v \[1, 2, 4, 3\].*k \[1, 2, 5, 3\]/);
});

test.run();
