// Scaled dot-product attention, two ways.
// Fused (inference, no bias/mask/causality, head dims ≤ 48 and divisible by 4, ≥ 1024 queries): one kernel,
// flash-style: each thread owns 8 queries (q and the output accumulators in registers), streams the keys in
// tiles of 4 with an online softmax (running max and sum, the output rescaled once per tile), and never
// writes a score. Keys and values are read by all threads of a SIMD row at once (uniform loads). On lavapipe,
// 8 heads × 1024 queries × 40 dims: ~1.7× faster than the composed path with 1024 keys, ~2× with 77; one
// or two queries per thread were 1.5–3× slower than composed (k/v loads must be shared by many queries).
// Its unrolled code takes lavapipe ~20 s to compile, hence the 1024-query floor and run-time sizes.
// Composed (everything else, and whenever a gradient is recorded): the GEMM core and the row softmax:
// scores = scale·q·kᵀ + bias (one GEMM, bias in its epilogue), masked softmax, then probs·v, differentiable
// through those ops. Queries go in blocks whose [..., rows, Lk] scores fit `attentionBlockBytes`, so no
// [Lq × Lk] buffer exists for long sequences (4096² f32 per head would not even fit lavapipe's 128 MiB
// binding limit). `onProbs` hands each block's probabilities to the caller as they are made (attention-map
// capture needs no second Q·Kᵀ); `attentionProbs` returns the whole matrix.

import { device } from '../engine/device.ts';
import { isGradEnabled } from '../engine/autograd.ts';
import { expectBroadcastsTo, expectDType, expectFloat, f32, launch } from '../engine/kernel.ts';
import { type Shape, Tensor, keep, numel, shapeStr, tidy } from '../engine/tensor.ts';
import { map } from './elementwise.ts';
import { gemm } from './matmul.ts';
import { concat, slice } from './shape.ts';
import { maskedSoftmax, softmax } from './softmax.ts';

/** The most bytes of scores one block of queries may take in `scaledDotProductAttention`. */
export const attentionBlockBytes = 16 * 2 ** 20;

export interface AttentionOptions {
  /** Multiplies q·kᵀ; 1/sqrt(dim) when omitted. */
  scale?: number;
  /** Added to the scaled scores; broadcastable to [batch, heads, Lq, Lk] (e.g. relative-position bias [heads, Lq, Lk]). */
  bias?: Tensor;
  /** Query i attends to keys j <= i only (top-left aligned, as PyTorch's is_causal). */
  causal?: boolean;
  /** Where to attend: non-zero (f32 1 or i32 1) keeps, 0 masks; broadcastable to [batch, heads, Lq, Lk]. */
  mask?: Tensor;
  /**
   * Called by `scaledDotProductAttention` with the probabilities of each block of queries, [..., rows, Lk]
   * for queries start..start+rows, as they are computed; the tensor is freed after the call returns.
   */
  onProbs?: (probs: Tensor, start: number) => void;
  /** The most bytes of scores one block of queries may take (default `attentionBlockBytes`). */
  blockBytes?: number;
  /** `false` forces the composed path where the fused kernel would run (to compare the two). */
  fused?: boolean;
}

/** Checks q [..., Lq, D] and k [..., Lk, D]; returns the scores' shape [..., Lq, Lk]. */
function scoresShape(op: string, q: Tensor, k: Tensor): Shape {
  expectFloat(op, q);
  expectFloat(op, k);
  if ((q.rank !== 3 && q.rank !== 4) || k.rank !== q.rank || q.shape[q.rank - 1] !== k.shape[k.rank - 1]) {
    throw new Error(`${op}: q ${shapeStr(q.shape)} and k ${shapeStr(k.shape)} must both be [batch, heads, seq, dim] or [batch, seq, dim] with the same dim`);
  }
  const batch = q.shape.slice(0, -2);
  if (batch.some((d, i) => d !== k.shape[i])) {
    throw new Error(`${op}: batch dims of q ${shapeStr(q.shape)} and k ${shapeStr(k.shape)} differ`);
  }
  return [...batch, q.shape[q.rank - 2]!, k.shape[k.rank - 2]!];
}

/**
 * f32 keep mask (1 = attend) combining `mask` and causality for queries start..start+Lq, broadcastable to
 * the scores; undefined if none.
 */
function keepMask(mask: Tensor | undefined, causal: boolean, Lq: number, Lk: number, start = 0): Tensor | undefined {
  if (!causal) return mask;
  const lower = map('attention.causal', `select(0.0, 1.0, i % ${Lk}u <= i / ${Lk}u + ${start}u)`, {}, { shape: [Lq, Lk] });
  return mask ? map('attention.keep', 'select(0.0, c, f32(m) != 0.0)', { m: mask, c: lower }) : lower;
}

/** Checks bias and mask against the scores' shape. */
function checkExtras(op: string, shape: Shape, { bias, mask }: AttentionOptions): void {
  if (bias) expectBroadcastsTo(op, 'bias', bias, shape);
  if (mask) {
    expectDType(op, mask, 'f32', 'i32', 'u32');
    expectBroadcastsTo(op, 'mask', mask, shape);
  }
}

/** Probabilities of queries start..start+q.rows against all keys, `Lq` being the full query count. */
function probsOf(q: Tensor, k: Tensor, { scale, bias, causal = false, mask }: AttentionOptions, start: number, Lq: number): Tensor {
  const rows = q.shape[q.rank - 2]!;
  const Lk = k.shape[k.rank - 2]!;
  // a bias or mask with a query dimension contributes its rows of this block
  const rowsOf = (t: Tensor | undefined) =>
    t && rows < Lq && t.rank >= 2 && t.shape[t.rank - 2] === Lq ? slice(t, -2, start, start + rows) : t;
  // scores and probabilities stay f32 for f16 inputs too
  const scores = gemm(q, k, { transB: true, alpha: scale ?? 1 / Math.sqrt(q.shape[q.rank - 1]!), bias: rowsOf(bias), dtype: 'f32' });
  const keep = keepMask(rowsOf(mask), causal, rows, Lk, start);
  return keep ? maskedSoftmax(scores, keep, -1) : softmax(scores, -1);
}

/**
 * The attention probabilities softmax(scale·q·kᵀ + bias) over keys, masked entries 0, shape [..., Lq, Lk].
 * q [batch, heads, Lq, dim] and k [batch, heads, Lk, dim] (or 3-D without heads). Differentiable in q, k, bias.
 */
export function attentionProbs(q: Tensor, k: Tensor, options: AttentionOptions = {}): Tensor {
  const shape = scoresShape('attention', q, k);
  checkExtras('attention', shape, options);
  return tidy(() => probsOf(q, k, options, 0, shape[shape.length - 2]!));
}

/**
 * softmax(scale·q·kᵀ + bias)·v, like torch.nn.functional.scaled_dot_product_attention (with `mask` as a
 * keep mask and additive masks given as `bias`). q [batch, heads, Lq, dim], k [.., Lk, dim], v [.., Lk, dimV]
 * (or 3-D without heads); returns [batch, heads, Lq, dimV]. Differentiable in q, k, v and bias.
 */
export function scaledDotProductAttention(q: Tensor, k: Tensor, v: Tensor, options: AttentionOptions = {}): Tensor {
  const op = 'scaled_dot_product_attention';
  expectFloat(op, v);
  const shape = scoresShape(op, q, k);
  checkExtras(op, shape, options);
  if (v.rank !== k.rank || k.shape.slice(0, -1).some((d, i) => d !== v.shape[i])) {
    throw new Error(`${op}: v ${shapeStr(v.shape)} does not match k ${shapeStr(k.shape)} (expected [..., Lk, dimV] with the batch dims and Lk of k)`);
  }
  const Lq = shape[shape.length - 2]!;
  const dtype = q.dtype === 'f16' && v.dtype === 'f16' ? 'f16' : 'f32';
  if (options.fused !== false && fusable(q, k, v, options)) {
    return fusedAttention(q, k, v, options.scale ?? 1 / Math.sqrt(q.shape[q.rank - 1]!), dtype);
  }
  const budget = Math.min(options.blockBytes ?? attentionBlockBytes, device().limits.maxStorageBufferBindingSize);
  const rows = Math.max(1, Math.floor(budget / ((numel(shape) / Lq) * 4)));
  const block = (start: number, end: number) => tidy(() => {
    const probs = probsOf(rows < Lq ? slice(q, -2, start, end) : q, k, options, start, Lq);
    options.onProbs?.(probs, start);
    return gemm(probs, v, { dtype });
  });
  if (rows >= Lq) return block(0, Lq);
  return tidy(() => {
    const outs: Tensor[] = [];
    for (let start = 0; start < Lq; start += rows) outs.push(block(start, Math.min(Lq, start + rows)));
    return concat(outs, -2);
  });
}

// ---------------------------------------------------------------- the fused kernel

/** Queries per thread, keys per tile and threads per workgroup of the fused kernel (measured on lavapipe). */
const fusedQueries = 8;
const fusedKeys = 4;
const fusedThreads = 32;

/** Whether the fused kernel computes this call (see the header for why these limits). */
function fusable(q: Tensor, k: Tensor, v: Tensor, { bias, mask, causal, onProbs }: AttentionOptions): boolean {
  const [D, Dv, Lq, Lk] = [q.shape[q.rank - 1]!, v.shape[v.rank - 1]!, q.shape[q.rank - 2]!, k.shape[k.rank - 2]!];
  const recording = isGradEnabled() && (q.requiresGrad || k.requiresGrad || v.requiresGrad);
  return !bias && !mask && !causal && !onProbs && !recording && Lq >= 1024 && Lk >= 1 &&
    [D, Dv].every((d) => d % 4 === 0 && d >= 4 && d <= 48);
}

/**
 * softmax(scale·q·kᵀ)·v in one kernel with an online softmax. Per query: running max m and sum l; per tile
 * of keys: scores s, new max m', then l ← l·e^(m−m') + Σ e^(s−m') and o ← o·e^(m−m') + Σ e^(s−m')·v.
 */
function fusedAttention(q: Tensor, k: Tensor, v: Tensor, scale: number, dtype: 'f32' | 'f16'): Tensor {
  const batch = q.shape.slice(0, -2);
  const [Lq, D] = q.shape.slice(-2) as [number, number];
  const Lk = k.shape[k.rank - 2]!;
  const Dv = v.shape[v.rank - 1]!;
  const out = Tensor.empty([...batch, Lq, Dv], dtype);
  const BH = numel(batch);
  if (out.size === 0) return out;
  const range = (n: number) => [...Array(n).keys()];
  const [queries, keys, dq, dv] = [range(fusedQueries), range(fusedKeys), range(D / 4), range(Dv / 4)];
  launch({
    name: 'attention.fused',
    // sizes and scale are read at run time: lavapipe takes ~30 s to compile this unrolled kernel, so it is
    // specialised by head dims only, not by every sequence length
    key: `${D}|${Dv}`,
    inputs: { q, k, v, dims: fusedDims(Lq, Lk, scale) },
    outputs: { out },
    vec4: ['q', 'k', 'v', 'out'],
    workgroups: [Math.ceil(Lq / (fusedQueries * fusedThreads)), BH],
    wgsl: (bindings) => `${bindings}
@compute @workgroup_size(${fusedThreads})
fn main(@builtin(global_invocation_id) gid: vec3u) {
  let Lq = dims[0];
  let Lk = dims[1];
  let scale = bitcast<f32>(dims[2]);
  let bh = gid.y;
  ${queries.map((r) => `let qr${r} = (bh * Lq + min(gid.x * ${fusedQueries}u + ${r}u, Lq - 1u)) * ${D / 4}u;
  ${dq.map((d) => `let q${r}_${d} = vec4f(q[qr${r} + ${d}u]) * scale;`).join(' ')}
  var m${r} = ${f32(-Infinity)};
  var l${r} = 0.0;
  ${dv.map((d) => `var o${r}_${d} = vec4f(0.0);`).join(' ')}`).join('\n  ')}
  for (var j0 = 0u; j0 < Lk; j0 += ${fusedKeys}u) {
    // a last partial tile reads a clamped key and gives it probability 0
    ${keys.map((t) => `let live${t} = j0 + ${t}u < Lk;
    let kr${t} = (bh * Lk + min(j0 + ${t}u, Lk - 1u)) * ${D / 4}u;
    let vr${t} = (bh * Lk + min(j0 + ${t}u, Lk - 1u)) * ${Dv / 4}u;`).join('\n    ')}
    ${queries.map((r) => `${keys.map((t) => `let s${r}_${t} = select(${f32(-Infinity)}, ${dq.map((d) => `dot(q${r}_${d}, vec4f(k[kr${t} + ${d}u]))`).join(' + ')}, live${t});`).join('\n    ')}
    let mt${r} = max(m${r}, ${keys.map((t) => `s${r}_${t}`).reduce((a, b) => `max(${a}, ${b})`)});
    let c${r} = exp(m${r} - mt${r});
    m${r} = mt${r};
    ${keys.map((t) => `let p${r}_${t} = exp(s${r}_${t} - mt${r});`).join(' ')}
    l${r} = l${r} * c${r} + ${keys.map((t) => `p${r}_${t}`).join(' + ')};
    ${dv.map((d) => `o${r}_${d} = o${r}_${d} * c${r} + ${keys.map((t) => `p${r}_${t} * vec4f(v[vr${t} + ${d}u])`).join(' + ')};`).join('\n    ')}`).join('\n    ')}
  }
  ${queries.map((r) => `if (gid.x * ${fusedQueries}u + ${r}u < Lq) {
    let or${r} = (bh * Lq + gid.x * ${fusedQueries}u + ${r}u) * ${Dv / 4}u;
    ${dv.map((d) => `out[or${r} + ${d}u] = out_t(o${r}_${d} / l${r});`).join(' ')}
  }`).join('\n  ')}
}`,
  });
  return out;
}

/** The fused kernel's run-time parameters [Lq, Lk, bits of scale], uploaded once per distinct value. */
const fusedParams = new Map<string, Tensor>();
function fusedDims(Lq: number, Lk: number, scale: number): Tensor {
  const key = `${Lq}|${Lk}|${scale}`;
  let t = fusedParams.get(key);
  if (!t || t.disposed) {
    const bits = new Uint32Array(new Float32Array([scale]).buffer)[0]!;
    t = keep(Tensor.fromArray(new Uint32Array([Lq, Lk, bits]), [3]));
    fusedParams.set(key, t);
  }
  return t;
}
