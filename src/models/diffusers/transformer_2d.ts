// diffusers' Transformer2DModel (continuous input) with BasicTransformerBlock and the GEGLU FeedForward
// (attention.py): GroupNorm → proj_in (1x1 conv, or Linear with use_linear_projection) → blocks → proj_out
// → + input.

import { Tensor, tidy } from '../../engine/tensor.ts';
import { add, gelu, mul } from '../../kernels/elementwise.ts';
import { permute, reshape, split } from '../../kernels/shape.ts';
import { Module, ModuleList } from '../../nn/module.ts';
import { Conv2d, GroupNorm, LayerNorm, Linear } from '../../nn/layers.ts';
import type { AttentionCapture } from '../attention_capture.ts';
import { Attention } from './attention.ts';

/** `proj`: Linear to 2·dimOut, split into (x, gate), x · GELU(gate). */
export class GEGLU extends Module {
  readonly proj: Linear;
  constructor(dimIn: number, readonly dimOut: number) {
    super();
    this.proj = this.module('proj', new Linear(dimIn, 2 * dimOut));
  }

  forward(x: Tensor): Tensor {
    return tidy(() => {
      const [h, gate] = split(this.proj.forward(x), this.dimOut, -1) as [Tensor, Tensor];
      return mul(h, gelu(gate));
    });
  }
}

/** `net` = [GEGLU, Dropout, Linear]: keys ff.net.0.proj, ff.net.2. */
export class FeedForward extends Module {
  readonly net: ModuleList;
  readonly geglu: GEGLU;
  readonly out: Linear;
  constructor(dim: number, mult = 4) {
    super();
    const inner = dim * mult;
    this.geglu = new GEGLU(dim, inner);
    this.out = new Linear(inner, dim);
    // index 1 is the (parameterless) dropout
    this.net = this.module('net', new ModuleList([this.geglu, new Module(), this.out]));
  }

  forward(x: Tensor): Tensor {
    return tidy(() => this.out.forward(this.geglu.forward(x)));
  }
}

export interface TransformerOptions {
  heads: number;
  dimHead: number;
  crossAttentionDim: number;
  onlyCrossAttention?: boolean;
}

/** norm1 → attn1 (self) → norm2 → attn2 (cross) → norm3 → ff, each with a residual. */
export class BasicTransformerBlock extends Module {
  readonly norm1: LayerNorm;
  readonly attn1: Attention;
  readonly norm2: LayerNorm;
  readonly attn2: Attention;
  readonly norm3: LayerNorm;
  readonly ff: FeedForward;

  constructor(dim: number, { heads, dimHead, crossAttentionDim, onlyCrossAttention = false }: TransformerOptions) {
    super();
    this.norm1 = this.module('norm1', new LayerNorm(dim));
    this.attn1 = this.module('attn1', new Attention(dim, { heads, dimHead, crossAttentionDim: onlyCrossAttention ? crossAttentionDim : undefined }));
    this.norm2 = this.module('norm2', new LayerNorm(dim));
    this.attn2 = this.module('attn2', new Attention(dim, { heads, dimHead, crossAttentionDim }));
    this.norm3 = this.module('norm3', new LayerNorm(dim));
    this.ff = this.module('ff', new FeedForward(dim));
  }

  /** x [B, H·W, dim], context [B, Lk, crossAttentionDim]. */
  forward(x: Tensor, context: Tensor, spatial: { height: number; width: number }, capture?: AttentionCapture): Tensor {
    return tidy(() => {
      const ctx = capture ? { capture, ...spatial } : undefined;
      const selfContext = this.attn1.isCross ? context : undefined;
      let h = add(this.attn1.forward(this.norm1.forward(x), selfContext, ctx), x);
      h = add(this.attn2.forward(this.norm2.forward(h), context, ctx), h);
      return add(this.ff.forward(this.norm3.forward(h)), h);
    });
  }
}

export interface Transformer2DOptions extends TransformerOptions {
  numLayers: number;
  normNumGroups: number;
  useLinearProjection: boolean;
}

export class Transformer2DModel extends Module {
  readonly norm: GroupNorm;
  readonly projIn: Conv2d | Linear;
  readonly transformerBlocks: ModuleList<BasicTransformerBlock>;
  readonly projOut: Conv2d | Linear;
  readonly useLinearProjection: boolean;

  constructor(readonly inChannels: number, { numLayers, normNumGroups, useLinearProjection, ...block }: Transformer2DOptions) {
    super();
    const inner = block.heads * block.dimHead;
    this.useLinearProjection = useLinearProjection;
    this.norm = this.module('norm', new GroupNorm(normNumGroups, inChannels, { eps: 1e-6 }));
    this.projIn = this.module('proj_in', useLinearProjection ? new Linear(inChannels, inner) : new Conv2d(inChannels, inner, 1));
    this.transformerBlocks = this.module('transformer_blocks', new ModuleList(Array.from({ length: numLayers }, () => new BasicTransformerBlock(inner, block))));
    this.projOut = this.module('proj_out', useLinearProjection ? new Linear(inner, inChannels) : new Conv2d(inner, inChannels, 1));
  }

  /** x [B, C, H, W], context [B, Lk, crossAttentionDim] → [B, C, H, W]. */
  forward(x: Tensor, context: Tensor, capture?: AttentionCapture): Tensor {
    return tidy(() => {
      const [B, , height, width] = x.shape as [number, number, number, number];
      const toTokens = (t: Tensor) => permute(reshape(t, [B, t.shape[1]!, height * width]), [0, 2, 1]);
      const toMap = (t: Tensor) => reshape(permute(t, [0, 2, 1]), [B, t.shape[2]!, height, width]);
      let h = this.norm.forward(x);
      h = this.useLinearProjection ? this.projIn.forward(toTokens(h)) : toTokens(this.projIn.forward(h));
      for (const block of this.transformerBlocks) h = block.forward(h, context, { height, width }, capture);
      h = this.useLinearProjection ? toMap(this.projOut.forward(h)) : this.projOut.forward(toMap(h));
      return add(h, x);
    });
  }
}
