// Scaled dot-product attention, composed of the GEMM core and the row softmax: scores = scale·q·kᵀ + bias
// (one GEMM with kᵀ read in place and the bias added in its epilogue), masked softmax, then probs·v. The
// [..., Lq, Lk] probabilities are materialised, and `attentionProbs` hands them out (cross-attention maps).

import { expectBroadcastsTo, expectDType } from '../engine/kernel.ts';
import { type Shape, Tensor, shapeStr, tidy } from '../engine/tensor.ts';
import { map } from './elementwise.ts';
import { gemm } from './matmul.ts';
import { maskedSoftmax, softmax } from './softmax.ts';

export interface AttentionOptions {
  /** Multiplies q·kᵀ; 1/sqrt(dim) when omitted. */
  scale?: number;
  /** Added to the scaled scores; broadcastable to [batch, heads, Lq, Lk] (e.g. relative-position bias [heads, Lq, Lk]). */
  bias?: Tensor;
  /** Query i attends to keys j <= i only (top-left aligned, as PyTorch's is_causal). */
  causal?: boolean;
  /** Where to attend: non-zero (f32 1 or i32 1) keeps, 0 masks; broadcastable to [batch, heads, Lq, Lk]. */
  mask?: Tensor;
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

/** f32 keep mask (1 = attend) combining `mask` and causality, broadcastable to the scores; undefined if none. */
function keepMask(mask: Tensor | undefined, causal: boolean, Lq: number, Lk: number): Tensor | undefined {
  if (!causal) return mask;
  const lower = map('attention.causal', `select(0.0, 1.0, i % ${Lk}u <= i / ${Lk}u)`, {}, { shape: [Lq, Lk] });
  return mask ? map('attention.keep', 'select(0.0, c, f32(m) != 0.0)', { m: mask, c: lower }) : lower;
}

/**
 * The attention probabilities softmax(scale·q·kᵀ + bias) over keys, masked entries 0, shape [..., Lq, Lk].
 * q [batch, heads, Lq, dim] and k [batch, heads, Lk, dim] (or 3-D without heads). Differentiable in q, k, bias.
 */
export function attentionProbs(q: Tensor, k: Tensor, { scale, bias, causal = false, mask }: AttentionOptions = {}): Tensor {
  const op = 'attention';
  const shape = scoresShape(op, q, k);
  if (bias) expectBroadcastsTo(op, 'bias', bias, shape);
  if (mask) {
    expectDType(op, mask, 'f32', 'i32', 'u32');
    expectBroadcastsTo(op, 'mask', mask, shape);
  }
  const [Lq, Lk] = shape.slice(-2) as [number, number];
  return tidy(() => {
    const scores = gemm(q, k, { transB: true, alpha: scale ?? 1 / Math.sqrt(q.shape[q.rank - 1]!), bias });
    const keep = keepMask(mask, causal, Lq, Lk);
    return keep ? maskedSoftmax(scores, keep, -1) : softmax(scores, -1);
  });
}

/**
 * softmax(scale·q·kᵀ + bias)·v, like torch.nn.functional.scaled_dot_product_attention (with `mask` as a
 * keep mask and additive masks given as `bias`). q [batch, heads, Lq, dim], k [.., Lk, dim], v [.., Lk, dimV]
 * (or 3-D without heads); returns [batch, heads, Lq, dimV]. Differentiable in q, k, v and bias.
 */
export function scaledDotProductAttention(q: Tensor, k: Tensor, v: Tensor, options: AttentionOptions = {}): Tensor {
  const op = 'scaled_dot_product_attention';
  expectDType(op, v, 'f32');
  if (v.rank !== k.rank || k.shape.slice(0, -1).some((d, i) => d !== v.shape[i])) {
    throw new Error(`${op}: v ${shapeStr(v.shape)} does not match k ${shapeStr(k.shape)} (expected [..., Lk, dimV] with the batch dims and Lk of k)`);
  }
  return tidy(() => gemm(attentionProbs(q, k, options), v));
}
