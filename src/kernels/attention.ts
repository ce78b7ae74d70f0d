// Scaled dot-product attention, two ways to the same result:
// - fused (`flashAttention`): one thread per query row streams the keys with an online softmax (running
//   maximum and sum, accumulator rescaled as the maximum grows), so no score is ever stored. Lanes of a
//   SIMD row hold neighbouring queries and read the same key and value: every k/v load is uniform.
//   Used when nothing needs the probabilities: no gradient is recorded and no `onProbs`.
// - composed: scores = scale·q·kᵀ + bias (one GEMM, bias in its epilogue), masked softmax, then probs·v,
//   differentiable through those ops. Queries go in blocks whose [..., rows, Lk] scores fit
//   `attentionBlockBytes`, so no [Lq × Lk] buffer exists for long sequences (4096² f32 per head would not
//   even fit lavapipe's 128 MiB binding limit). `onProbs` hands each block's probabilities to the caller as
//   they are made (attention-map capture needs no second Q·Kᵀ); `attentionProbs` returns the whole matrix.

import { isGradEnabled } from '../engine/autograd.ts';
import { device } from '../engine/device.ts';
import { broadcastStrides, expectBroadcastsTo, expectDType, f32, launch, offsetExpr, unravel } from '../engine/kernel.ts';
import { type Shape, Tensor, numel, shapeStr, tidy } from '../engine/tensor.ts';
import { map } from './elementwise.ts';
import { gemm } from './matmul.ts';
import { concat, slice } from './shape.ts';
import { maskedSoftmax, softmax } from './softmax.ts';

/** The most bytes of scores one block of queries may take in `scaledDotProductAttention`. */
export const attentionBlockBytes = 32 * 2 ** 20;

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
}

/** Checks q [..., Lq, D] and k [..., Lk, D]; returns the scores' shape [..., Lq, Lk]. */
function scoresShape(op: string, q: Tensor, k: Tensor): Shape {
  expectDType(op, q, 'f32');
  expectDType(op, k, 'f32');
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
  const scores = gemm(q, k, { transB: true, alpha: scale ?? 1 / Math.sqrt(q.shape[q.rank - 1]!), bias: rowsOf(bias) });
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
  expectDType(op, v, 'f32');
  const shape = scoresShape(op, q, k);
  checkExtras(op, shape, options);
  if (v.rank !== k.rank || k.shape.slice(0, -1).some((d, i) => d !== v.shape[i])) {
    throw new Error(`${op}: v ${shapeStr(v.shape)} does not match k ${shapeStr(k.shape)} (expected [..., Lk, dimV] with the batch dims and Lk of k)`);
  }
  const recording = isGradEnabled() && [q, k, v, options.bias].some((t) => t?.requiresGrad);
  if (!recording && !options.onProbs) return flashAttention(q, k, v, options, shape);
  const Lq = shape[shape.length - 2]!;
  const budget = Math.min(options.blockBytes ?? attentionBlockBytes, device().limits.maxStorageBufferBindingSize);
  const rows = Math.max(1, Math.floor(budget / ((numel(shape) / Lq) * 4)));
  const block = (start: number, end: number) => tidy(() => {
    const probs = probsOf(rows < Lq ? slice(q, -2, start, end) : q, k, options, start, Lq);
    options.onProbs?.(probs, start);
    return gemm(probs, v);
  });
  if (rows >= Lq) return block(0, Lq);
  return tidy(() => {
    const outs: Tensor[] = [];
    for (let start = 0; start < Lq; start += rows) outs.push(block(start, Math.min(Lq, start + rows)));
    return concat(outs, -2);
  });
}

/** Keys per step of the online softmax: one rescale of the accumulator per step. */
const keysPerStep = 4;

/** The fused forward (see the header): q [..., Lq, D], k [..., Lk, D], v [..., Lk, Dv] → [..., Lq, Dv]. */
function flashAttention(q: Tensor, k: Tensor, v: Tensor, { scale, bias, causal = false, mask }: AttentionOptions, shape: Shape): Tensor {
  const batchShape = shape.slice(0, -2);
  const [Lq, Lk] = shape.slice(-2) as [number, number];
  const D = q.shape[q.rank - 1]!;
  const Dv = v.shape[v.rank - 1]!;
  const out = Tensor.empty([...batchShape, Lq, Dv]);
  if (out.size === 0) return out;
  const batch = numel(batchShape);
  const range = (n: number) => [...Array(n).keys()];
  // vectors of 4 along the head dimension; a partial last vector is padded with zeros
  const vecs = (dim: number) => Math.ceil(dim / 4);
  const aligned = (dim: number) => dim % 4 === 0;
  const read = (name: string, dim: number, base: string, i: number) => aligned(dim)
    ? `${name}[(${base}) / 4u + ${i}u]`
    : `vec4f(${range(4).map((c) => (4 * i + c < dim ? `${name}[${base} + ${4 * i + c}u]` : '0.0')).join(', ')})`;
  const extra = (t: Tensor | undefined, name: string) => {
    if (!t) return undefined;
    const st = broadcastStrides(t.shape, shape);
    const [sr, sk] = st.slice(-2) as [number, number];
    return { base: `let ${name}Base = ${offsetExpr(st.slice(0, -2), 'z')} + row * ${sr}u;`, at: (key: string) => `${name}[${name}Base + (${key}) * ${sk}u]` };
  };
  const biasAt = extra(bias, 'bias');
  const maskAt = extra(mask, 'mask');
  const keptTest = mask ? (mask.dtype === 'f32' ? (x: string) => `${x} != 0.0` : mask.dtype === 'i32' ? (x: string) => `${x} != 0i` : (x: string) => `${x} != 0u`) : undefined;
  // score and kept flag of key `key` into s<i>, kept<i>
  const score = (i: number, key: string) => `var s${i} = ${range(vecs(D)).map((d) => `dot(qv${d}, ${read('k', D, `kb${i}`, d)})`).join(' + ')};
    ${biasAt ? `s${i} += ${biasAt.at(key)};` : ''}
    let kept${i} = ${[causal ? `${key} <= row` : '', keptTest ? keptTest(maskAt!.at(key)) : ''].filter(Boolean).join(' && ') || 'true'};`;
  const step = (keys: number, first: string) => `{
    ${range(keys).map((i) => `let kb${i} = (kvBase + ${first} + ${i}u) * ${D}u;
    ${score(i, `${first} + ${i}u`)}`).join('\n    ')}
    let mt = max(m, max(${range(keys).map((i) => `select(${f32(-Infinity)}, s${i}, kept${i})`).reduce((x, y) => `max(${x}, ${y})`)}, ${f32(-Infinity)}));
    let corr = exp(m - mt);
    ${range(keys).map((i) => `let p${i} = select(0.0, exp(s${i} - mt), kept${i});`).join(' ')}
    l = l * corr + ${range(keys).map((i) => `p${i}`).join(' + ')};
    ${range(vecs(Dv)).map((e) => `acc${e} = acc${e} * corr + ${range(keys).map((i) => `p${i} * ${read('v', Dv, `(kvBase + ${first} + ${i}u) * ${Dv}u`, e)}`).join(' + ')};`).join('\n    ')}
    m = mt;
  }`;
  const whole = Lk - (Lk % keysPerStep);
  const outIndex = `(z * ${Lq}u + row) * ${Dv}u`;
  const vec4 = [...(aligned(D) ? ['q', 'k'] : []), ...(aligned(Dv) ? ['v', 'out'] : [])];
  const inputs: Record<string, Tensor> = { q, k, v };
  if (bias) inputs.bias = bias;
  if (mask) inputs.mask = mask;
  const groups = Math.ceil(Lq / 64);
  launch({
    name: 'attention.flash',
    key: `${shapeStr(q.shape)}|${shapeStr(k.shape)}|${shapeStr(v.shape)}|${scale}|${causal}|${bias ? shapeStr(bias.shape) : '-'}|${mask ? shapeStr(mask.shape) : '-'}`,
    inputs,
    outputs: { out },
    vec4,
    workgroups: [groups, batch],
    wgsl: (bindings) => `${bindings}
@compute @workgroup_size(64)
fn main(@builtin(workgroup_id) wid: vec3u, @builtin(local_invocation_index) lane: u32) {
  let z = wid.y;
  let row = wid.x * 64u + lane;
  if (row >= ${Lq}u) { return; }
  ${unravel(batchShape, 'z', 'z')}
  ${biasAt?.base ?? ''}
  ${maskAt?.base ?? ''}
  let qb = (z * ${Lq}u + row) * ${D}u;
  let kvBase = z * ${Lk}u;
  ${range(vecs(D)).map((d) => `let qv${d} = ${read('q', D, 'qb', d)} * ${f32(scale ?? 1 / Math.sqrt(D))};`).join('\n  ')}
  ${range(vecs(Dv)).map((e) => `var acc${e} = vec4f(0.0);`).join(' ')}
  var m = ${f32(-Infinity)};
  var l = 0.0;
  for (var j = 0u; j < ${whole}u; j += ${keysPerStep}u) ${step(keysPerStep, 'j')}
  ${whole < Lk ? `for (var j = ${whole}u; j < ${Lk}u; j++) ${step(1, 'j')}` : ''}
  // a row with no key kept has l = 0 and gets zeros, as the masked softmax gives
  let inv = select(0.0, 1.0 / l, l > 0.0);
  ${range(vecs(Dv)).map((e) => aligned(Dv)
    ? `out[${outIndex} / 4u + ${e}u] = acc${e} * inv;`
    : range(4).filter((c) => 4 * e + c < Dv).map((c) => `out[${outIndex} + ${4 * e + c}u] = acc${e}[${c}] * inv;`).join(' ')).join('\n  ')}
}`,
  });
  return out;
}
