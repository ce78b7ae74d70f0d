// diffusers' Attention (attention_processor.py, the default AttnProcessor): to_q / to_k / to_v, multi-head
// softmax(QKᵀ/√d)·V, to_out.0; with `group_norm` and a residual for the VAE's mid-block attention over NCHW
// input. The heads go through scaledDotProductAttention, which never holds more than a block of scores.

import { Tensor, shapeStr, tidy } from '../../engine/tensor.ts';
import { scaledDotProductAttention } from '../../kernels/attention.ts';
import { add, mul } from '../../kernels/elementwise.ts';
import { matmul } from '../../kernels/matmul.ts';
import { softmax } from '../../kernels/softmax.ts';
import { permute, reshape, transpose } from '../../kernels/shape.ts';
import { Module, ModuleList } from '../../nn/module.ts';
import { GroupNorm, Linear } from '../../nn/layers.ts';
import type { AttentionKind, CaptureContext, LayerSink } from '../attention_capture.ts';

export interface AttentionOptions {
  /** Width of the keys' source (the text encoder's hidden size); the query dim when absent (self-attention). */
  crossAttentionDim?: number;
  heads: number;
  dimHead: number;
  /** Bias on to_q / to_k / to_v. */
  bias?: boolean;
  /** GroupNorm of the input (`group_norm`), as in the VAE mid block. */
  normNumGroups?: number;
  eps?: number;
  /** Adds the input to the output (VAE mid block). */
  residualConnection?: boolean;
}

export class Attention extends Module {
  /** The module's state_dict prefix in its model (names captured maps); set by the model. */
  path = '';
  readonly heads: number;
  readonly dimHead: number;
  readonly isCross: boolean;
  readonly groupNorm: GroupNorm | undefined;
  readonly toQ: Linear;
  readonly toK: Linear;
  readonly toV: Linear;
  readonly toOut: ModuleList<Linear>;
  readonly residualConnection: boolean;

  constructor(queryDim: number, { crossAttentionDim, heads, dimHead, bias = false, normNumGroups, eps = 1e-5, residualConnection = false }: AttentionOptions) {
    super();
    const inner = heads * dimHead;
    this.heads = heads;
    this.dimHead = dimHead;
    this.isCross = crossAttentionDim !== undefined;
    this.groupNorm = normNumGroups ? this.module('group_norm', new GroupNorm(normNumGroups, queryDim, { eps })) : undefined;
    this.toQ = this.module('to_q', new Linear(queryDim, inner, { bias }));
    this.toK = this.module('to_k', new Linear(crossAttentionDim ?? queryDim, inner, { bias }));
    this.toV = this.module('to_v', new Linear(crossAttentionDim ?? queryDim, inner, { bias }));
    this.toOut = this.module('to_out', new ModuleList([new Linear(inner, queryDim)]));
    this.residualConnection = residualConnection;
  }

  /**
   * x [B, L, C] (or [B, C, H, W], attended over H·W tokens), context [B, Lk, crossAttentionDim] for
   * cross-attention (else x attends to itself). With `capture`, the probabilities go to it when selected.
   */
  forward(x: Tensor, context?: Tensor, capture?: CaptureContext): Tensor {
    return tidy(() => {
      const spatial = x.rank === 4;
      const [B, C] = x.shape as [number, number];
      let h = x;
      if (this.groupNorm) h = this.groupNorm.forward(h);
      if (spatial) h = permute(reshape(h, [B, C, x.shape[2]! * x.shape[3]!]), [0, 2, 1]);
      const ctx = context ?? h;
      const kind: AttentionKind = context ? 'cross' : 'self';
      const sink = capture ? capture.capture.sink(this.path, kind, capture, this.heads) : undefined;
      const [q, k, v] = [this.toQ.forward(h), this.toK.forward(ctx), this.toV.forward(ctx)];
      if (capture?.capture.options.mode === 'graph' && capture.capture.selects(this.path, kind, capture)) {
        capture.capture.addGraph(this.path, kind, capture, attentionProbs(q, k, this.heads));
      }
      const o = multiHeadAttention(q, k, v, this.heads, sink);
      sink?.end();
      let out = this.toOut.at(0).forward(o);
      if (spatial) out = reshape(permute(out, [0, 2, 1]), x.shape);
      return this.residualConnection ? add(out, x) : out;
    });
  }
}

/** [B, L, H·d] → [B, H, L, d]. */
function splitHeads(x: Tensor, heads: number): Tensor {
  const [B, L, D] = x.shape as [number, number, number];
  return permute(reshape(x, [B, L, heads, D / heads]), [0, 2, 1, 3]);
}

/** softmax(q·kᵀ/√d) per head by differentiable ops: q [B, Lq, H·d], k [B, Lk, H·d] → [B, H, Lq, Lk]. */
export function attentionProbs(q: Tensor, k: Tensor, heads: number): Tensor {
  return tidy(() => {
    const d = q.shape[2]! / heads;
    return softmax(mul(matmul(splitHeads(q, heads), transpose(splitHeads(k, heads), 2, 3)), 1 / Math.sqrt(d)), -1);
  });
}

/**
 * softmax(q·kᵀ/√d)·v per head: q [B, Lq, H·d], k and v [B, Lk, H·d] → [B, Lq, H·d], by
 * scaledDotProductAttention (fused where it can, else in query blocks of at most `blockBytes` of scores);
 * with a `sink`, each block's probabilities go to it as they are made.
 */
export function multiHeadAttention(q: Tensor, k: Tensor, v: Tensor, heads: number, sink?: LayerSink, blockBytes?: number): Tensor {
  return tidy(() => {
    const [B, Lq, D] = q.shape as [number, number, number];
    if (D % heads) throw new Error(`attention: width ${D} of q ${shapeStr(q.shape)} does not split into ${heads} heads`);
    const out = scaledDotProductAttention(splitHeads(q, heads), splitHeads(k, heads), splitHeads(v, heads), {
      blockBytes,
      onProbs: sink && ((probs, start) => sink.add(probs, start)),
    });
    return reshape(permute(out, [0, 2, 1, 3]), [B, Lq, D]);
  });
}
