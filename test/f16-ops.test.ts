// f16 tensors through the floating-point ops (storage in f16, arithmetic in f32), against naive float64 CPU
// references computed on the same f16-rounded inputs. The output is rounded to f16 once, so each element may
// differ from the reference by half an f16 ulp (2^-11 relative) plus f32 accumulation error.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { assertClose, erf, randomArray } from './helpers.ts';
import * as F from '../src/index.ts';
import { f16ToF32, f32ToF16 } from '../src/engine/tensor.ts';

const tol = 1.5e-3;

/** Random values rounded to f16, as an f16 tensor and as the float64 values it holds. */
function half(shape: number[], seed: number, lo = -1, hi = 1): { t: F.Tensor; v: Float64Array } {
  const bits = Uint16Array.from(randomArray(shape.reduce((a, b) => a * b, 1), seed, lo, hi), f32ToF16);
  return { t: F.Tensor.fromArray(bits, shape), v: Float64Array.from(bits, f16ToF32) };
}

async function check(t: F.Tensor, ref: ArrayLike<number>, shape: number[], what: string): Promise<void> {
  assert.is(t.dtype, 'f16', `${what}: output dtype`);
  assert.equal([...t.shape], shape, `${what}: shape`);
  assertClose(await t.toArray(), ref, tol, what);
}

const gelu = (x: number) => 0.5 * x * (1 + erf(x / Math.SQRT2));
const silu = (x: number) => x / (1 + Math.exp(-x));

/** C[m][n] = Σ_k A(m, k)·B(k, n) for row-major A [M, K] and B [K, N]. */
function cpuMatmul(a: ArrayLike<number>, b: ArrayLike<number>, M: number, K: number, N: number): Float64Array {
  const c = new Float64Array(M * N);
  for (let m = 0; m < M; m++) for (let k = 0; k < K; k++) for (let n = 0; n < N; n++) c[m * N + n] += a[m * K + k]! * b[k * N + n]!;
  return c;
}

function cpuTranspose(a: ArrayLike<number>, rows: number, cols: number): Float64Array {
  return Float64Array.from({ length: rows * cols }, (_, i) => a[(i % rows) * cols + Math.floor(i / rows)]!);
}

test('f16 support is offered by this device (the rest of this file needs it)', () => {
  assert.ok(F.deviceInfo().features.includes('shader-f16'), 'lavapipe and most GPUs offer shader-f16');
});

for (const [M, K, N] of [[37, 29, 18], [64, 40, 48]] as const) {
  test(`matmul f16 [${M}×${K}]·[${K}×${N}], and gemm with Bᵀ, Aᵀ, bias and fused GELU`, async () => {
    const a = half([M, K], 1);
    const b = half([K, N], 2);
    const ref = cpuMatmul(a.v, b.v, M, K, N);
    await check(F.matmul(a.t, b.t), ref, [M, N], 'matmul');
    const bias = half([N], 3);
    const bt = half([N, K], 4);
    const at = half([K, M], 5);
    const refT = cpuMatmul(cpuTranspose(at.v, K, M), cpuTranspose(bt.v, N, K), M, K, N).map((v, i) => gelu(0.5 * v + bias.v[i % N]!));
    await check(F.gemm(at.t, bt.t, { transA: true, transB: true, alpha: 0.5, bias: bias.t, activation: 'gelu_erf' }), refT, [M, N], 'gemm AᵀBᵀ+bias+gelu');
    // f16 operands with an f32 output
    const mixed = F.gemm(a.t, b.t, { dtype: 'f32' });
    assert.is(mixed.dtype, 'f32');
    assertClose(await mixed.toArray(), ref, 1e-5, 'gemm f16 → f32');
    for (const t of [a.t, b.t, bias.t, bt.t, at.t, mixed]) t.dispose();
  });
}

test('linear f16 with bias and fused GELU over a [2, 7, 24] input', async () => {
  const x = half([2, 7, 24], 6);
  const w = half([20, 24], 7);
  const bias = half([20], 8);
  const ref = cpuMatmul(x.v, cpuTranspose(w.v, 20, 24), 14, 24, 20).map((v, i) => gelu(v + bias.v[i % 20]!));
  await check(F.linear(x.t, w.t, bias.t, 'gelu_erf'), ref, [2, 7, 20], 'linear+gelu');
});

/** Naive conv2d, NCHW, groups 1. */
function cpuConv(x: Float64Array, w: Float64Array, bias: Float64Array | undefined, [N, C, H, W]: number[], [Co, , KH, KW]: number[], s: number, p: number): { y: Float64Array; shape: number[] } {
  const Ho = Math.floor((H + 2 * p - KH) / s) + 1;
  const Wo = Math.floor((W + 2 * p - KW) / s) + 1;
  const y = new Float64Array(N * Co * Ho * Wo);
  for (let n = 0; n < N; n++) for (let co = 0; co < Co; co++) for (let oh = 0; oh < Ho; oh++) for (let ow = 0; ow < Wo; ow++) {
    let acc = bias ? bias[co]! : 0;
    for (let ci = 0; ci < C; ci++) for (let kh = 0; kh < KH; kh++) for (let kw = 0; kw < KW; kw++) {
      const ih = oh * s - p + kh;
      const iw = ow * s - p + kw;
      if (ih >= 0 && ih < H && iw >= 0 && iw < W) acc += x[((n * C + ci) * H + ih) * W + iw]! * w[((co * C + ci) * KH + kh) * KW + kw]!;
    }
    y[((n * Co + co) * Ho + oh) * Wo + ow] = acc;
  }
  return { y, shape: [N, Co, Ho, Wo] };
}

for (const [xs, ws, stride, padding, act] of [
  [[1, 4, 13, 11], [12, 4, 3, 3], 1, 1, true],
  [[2, 6, 10, 12], [8, 6, 3, 3], 2, 0, false],
] as const) {
  test(`conv2d f16 ${JSON.stringify(xs)} * ${JSON.stringify(ws)} stride ${stride} padding ${padding}${act ? ' + bias + SiLU' : ''}`, async () => {
    const x = half([...xs], 9);
    const w = half([...ws], 10);
    const bias = half([ws[0]], 11);
    const ref = cpuConv(x.v, w.v, bias.v, [...xs], [...ws], stride, padding);
    const y = F.conv2d(x.t, w.t, bias.t, { stride, padding, activation: act ? 'silu' : undefined });
    await check(y, act ? ref.y.map(silu) : ref.y, ref.shape, 'conv2d');
  });
}

/** softmax along the last dim of rows × L values. */
function cpuSoftmax(x: ArrayLike<number>, rows: number, L: number): Float64Array {
  const y = new Float64Array(rows * L);
  for (let r = 0; r < rows; r++) {
    let mx = -Infinity;
    for (let j = 0; j < L; j++) mx = Math.max(mx, x[r * L + j]!);
    let total = 0;
    for (let j = 0; j < L; j++) total += Math.exp(x[r * L + j]! - mx);
    for (let j = 0; j < L; j++) y[r * L + j] = Math.exp(x[r * L + j]! - mx) / total;
  }
  return y;
}

test('softmax f16 over rows of 1000 and of 7', async () => {
  for (const [rows, L] of [[6, 1000], [33, 7]] as const) {
    const x = half([rows, L], 12, -6, 6);
    await check(F.softmax(x.t, -1), cpuSoftmax(x.v, rows, L), [rows, L], `softmax rows of ${L}`);
  }
});

/** Normalises each of `rows` rows of n values, then applies per-element `post`. */
function cpuNormRows(x: ArrayLike<number>, rows: number, n: number, eps: number, post: (v: number, j: number) => number): Float64Array {
  const y = new Float64Array(rows * n);
  for (let r = 0; r < rows; r++) {
    let mu = 0;
    for (let j = 0; j < n; j++) mu += x[r * n + j]!;
    mu /= n;
    let v = 0;
    for (let j = 0; j < n; j++) v += (x[r * n + j]! - mu) ** 2;
    const rs = 1 / Math.sqrt(v / n + eps);
    for (let j = 0; j < n; j++) y[r * n + j] = post((x[r * n + j]! - mu) * rs, j);
  }
  return y;
}

test('layer_norm f16 [9, 40] and group_norm f16 + SiLU [2, 12, 5, 7] in 4 groups, with f16 weight and bias', async () => {
  const x = half([9, 40], 13, -3, 5);
  const g = half([40], 14);
  const b = half([40], 15);
  await check(F.layerNorm(x.t, [40], g.t, b.t), cpuNormRows(x.v, 9, 40, 1e-5, (v, j) => v * g.v[j]! + b.v[j]!), [9, 40], 'layer_norm');
  const xg = half([2, 12, 5, 7], 16, -2, 3);
  const gg = half([12], 17);
  const bg = half([12], 18);
  // rows are (image, group): 3 channels × 35 pixels each; the affine channel of flat element i is (i / 35) % 12
  const ref = cpuNormRows(xg.v, 8, 3 * 35, 1e-5, (v) => v).map((v, i) => silu(v * gg.v[Math.floor(i / 35) % 12]! + bg.v[Math.floor(i / 35) % 12]!));
  await check(F.groupNorm(xg.t, 4, gg.t, bg.t, 1e-5, 'silu'), ref, [2, 12, 5, 7], 'group_norm+silu');
});

/** softmax(q·kᵀ/√d)·v per (batch·head), q [BH, Lq, d], k [BH, Lk, d], v [BH, Lk, dv]. */
function cpuAttention(q: Float64Array, k: Float64Array, v: Float64Array, BH: number, Lq: number, Lk: number, d: number, dv: number): Float64Array {
  const out = new Float64Array(BH * Lq * dv);
  for (let h = 0; h < BH; h++) {
    const s = cpuMatmul(q.subarray(h * Lq * d, (h + 1) * Lq * d), cpuTranspose(k.subarray(h * Lk * d, (h + 1) * Lk * d), Lk, d), Lq, d, Lk).map((x) => x / Math.sqrt(d));
    out.set(cpuMatmul(cpuSoftmax(s, Lq, Lk), v.subarray(h * Lk * dv, (h + 1) * Lk * dv), Lq, Lk, dv), h * Lq * dv);
  }
  return out;
}

test('scaled_dot_product_attention f16: self-attention in query blocks and cross-attention over 7 keys', async () => {
  for (const [Lq, Lk, blockBytes] of [[50, 50, 2 * 3 * 50 * 4 * 12], [40, 7, undefined]] as const) {
    const q = half([1, 3, Lq, 8], 19);
    const k = half([1, 3, Lk, 8], 20);
    const v = half([1, 3, Lk, 12], 21);
    const y = F.scaledDotProductAttention(q.t, k.t, v.t, { blockBytes });
    await check(y, cpuAttention(q.v, k.v, v.v, 3, Lq, Lk, 8, 12), [1, 3, Lq, 12], `attention Lq ${Lq} Lk ${Lk}`);
  }
});

test('permute, slice and concat keep f16 exactly', async () => {
  const x = half([3, 5, 4], 22);
  const p = F.permute(x.t, [2, 0, 1]);
  assert.is(p.dtype, 'f16');
  const expected = Float64Array.from({ length: 60 }, (_, i) => {
    const [c, a, b] = [Math.floor(i / 15), Math.floor(i / 5) % 3, i % 5];
    return x.v[(a * 5 + b) * 4 + c]!;
  });
  assertClose(await p.toArray(), expected, 0, 'permute');
  const joined = F.concat([F.slice(x.t, 1, 0, 2), F.slice(x.t, 1, 2, 5)], 1);
  assert.is(joined.dtype, 'f16');
  assertClose(await joined.toArray(), x.v, 0, 'slice + concat');
});

test.run();
