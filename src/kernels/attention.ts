// Scaled dot-product attention, composed of the GEMM core and the row softmax: scores = scale·q·kᵀ + bias
// (one GEMM, bias in its epilogue), masked softmax, then probs·v, differentiable through those ops. Queries
// go in blocks whose [..., rows, Lk] scores fit `attentionBlockBytes`, so no [Lq × Lk] buffer exists for
// long sequences (4096² f32 per head would not even fit lavapipe's 128 MiB binding limit). `onProbs` hands
// each block's probabilities to the caller as they are made (attention-map capture needs no second Q·Kᵀ);
// `attentionProbs` returns the whole matrix. A fused online-softmax kernel (one thread per query streaming
// the keys) was measured 3× slower than this on lavapipe at 1024 and 77 keys, so there is none.

import { device } from '../engine/device.ts';
import { expectBroadcastsTo, expectDType, expectFloat } from '../engine/kernel.ts';
import { type Shape, Tensor, numel, shapeStr, tidy } from '../engine/tensor.ts';
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
  const budget = Math.min(options.blockBytes ?? attentionBlockBytes, device().limits.maxStorageBufferBindingSize);
  const rows = Math.max(1, Math.floor(budget / ((numel(shape) / Lq) * 4)));
  const block = (start: number, end: number) => tidy(() => {
    const probs = probsOf(rows < Lq ? slice(q, -2, start, end) : q, k, options, start, Lq);
    options.onProbs?.(probs, start);
    return gemm(probs, v, { dtype: q.dtype === 'f16' && v.dtype === 'f16' ? 'f16' : 'f32' });
  });
  if (rows >= Lq) return block(0, Lq);
  return tidy(() => {
    const outs: Tensor[] = [];
    for (let start = 0; start < Lq; start += rows) outs.push(block(start, Math.min(Lq, start + rows)));
    return concat(outs, -2);
  });
}

