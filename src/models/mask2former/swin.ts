// Swin Transformer backbone as transformers' SwinBackbone is used by Mask2Former (module names as its
// state_dict: embeddings.patch_embeddings.projection, encoder.layers.N.blocks.M.attention.self.query, …,
// hidden_states_norms.stageK). Mask2Former calls the blocks with always_partition: every block uses
// config.window_size and odd blocks shift by window/2, however small the stage map.

import { Tensor, shapeStr, tidy } from '../../engine/tensor.ts';
import { add, compare, mul } from '../../kernels/elementwise.ts';
import { activate } from '../pretrained.ts';
import type { Generator } from '../../kernels/random.ts';
import { indexSelect } from '../../kernels/gather.ts';
import { scaledDotProductAttention } from '../../kernels/attention.ts';
import { concat, expand, pad, permute, reshape, roll, slice, unsqueeze } from '../../kernels/shape.ts';
import { Module, ModuleList } from '../../nn/module.ts';
import { Conv2d, LayerNorm, Linear } from '../../nn/layers.ts';
import type { SwinConfig } from './config.ts';

/** The pair-wise relative position index of a ws×ws window (transformers' relative_position_index). */
export function relativePositionIndex(ws: number): Int32Array {
  const n = ws * ws;
  const out = new Int32Array(n * n);
  for (let i = 0; i < n; i++) {
    for (let j = 0; j < n; j++) {
      const dy = Math.floor(i / ws) - Math.floor(j / ws) + ws - 1;
      const dx = (i % ws) - (j % ws) + ws - 1;
      out[i * n + j] = dy * (2 * ws - 1) + dx;
    }
  }
  return out;
}

/**
 * The additive shifted-window mask [windows, ws², ws²] of a padded Hp×Wp map: −100 between tokens from
 * different regions of the rolled map (regions split at Hp − ws and Hp − shift, likewise for W), 0 within.
 */
export function shiftedWindowMask(Hp: number, Wp: number, ws: number, shift: number): Float32Array {
  const region = (v: number, size: number) => (v < size - ws ? 0 : v < size - shift ? 1 : 2);
  const nx = Wp / ws;
  const windows = (Hp / ws) * nx;
  const n = ws * ws;
  const out = new Float32Array(windows * n * n);
  for (let w = 0; w < windows; w++) {
    const labels: number[] = [];
    for (let t = 0; t < n; t++) {
      const y = Math.floor(w / nx) * ws + Math.floor(t / ws);
      const x = (w % nx) * ws + (t % ws);
      labels.push(region(y, Hp) * 3 + region(x, Wp));
    }
    for (let i = 0; i < n; i++) for (let j = 0; j < n; j++) out[(w * n + i) * n + j] = labels[i] === labels[j] ? 0 : -100;
  }
  return out;
}

class SwinPatchEmbeddings extends Module {
  readonly projection: Conv2d;
  constructor(readonly c: SwinConfig) {
    super();
    this.projection = this.module('projection', new Conv2d(c.numChannels, c.embedDim, c.patchSize, { stride: c.patchSize }));
  }

  /** pixel values [B, C, H, W] (zero-padded right/bottom to patch multiples) → [B, h·w, embed] and (h, w). */
  forward(x: Tensor): { tokens: Tensor; dims: [number, number] } {
    const [ph, pw] = this.c.patchSize;
    const [, , H, W] = x.shape as [number, number, number, number];
    const padded = H % ph || W % pw ? pad(x, [0, (pw - (W % pw)) % pw, 0, (ph - (H % ph)) % ph]) : x;
    const y = this.projection.forward(padded);
    const [B, C, h, w] = y.shape as [number, number, number, number];
    return { tokens: permute(reshape(y, [B, C, h * w]), [0, 2, 1]), dims: [h, w] };
  }
}

class SwinEmbeddings extends Module {
  readonly patchEmbeddings: SwinPatchEmbeddings;
  readonly norm: LayerNorm;
  constructor(c: SwinConfig) {
    super();
    this.patchEmbeddings = this.module('patch_embeddings', new SwinPatchEmbeddings(c));
    this.norm = this.module('norm', new LayerNorm(c.embedDim));
  }

  forward(x: Tensor): { tokens: Tensor; dims: [number, number] } {
    const { tokens, dims } = this.patchEmbeddings.forward(x);
    return { tokens: this.norm.forward(tokens), dims };
  }
}

class SwinSelfAttention extends Module {
  readonly query: Linear;
  readonly key: Linear;
  readonly value: Linear;
  readonly relativePositionBiasTable: Tensor;
  readonly relativePositionIndex: Tensor;
  constructor(dim: number, readonly heads: number, readonly ws: number, qkvBias: boolean) {
    super();
    this.relativePositionBiasTable = this.param('relative_position_bias_table', Tensor.zeros([(2 * ws - 1) ** 2, heads]));
    this.relativePositionIndex = this.buffer('relative_position_index', Tensor.fromArray(relativePositionIndex(ws), [ws * ws, ws * ws], 'i32'));
    this.query = this.module('query', new Linear(dim, dim, { bias: qkvBias }));
    this.key = this.module('key', new Linear(dim, dim, { bias: qkvBias }));
    this.value = this.module('value', new Linear(dim, dim, { bias: qkvBias }));
  }

  /** Windows [Bw, N, C] with an optional additive mask [windows, N, N] (Bw = batch · windows). */
  forward(x: Tensor, mask: Tensor | undefined): Tensor {
    const [Bw, N, C] = x.shape as [number, number, number];
    const heads = (t: Tensor) => permute(reshape(t, [Bw, N, this.heads, C / this.heads]), [0, 2, 1, 3]);
    const table = indexSelect(this.relativePositionBiasTable, 0, reshape(this.relativePositionIndex, [N * N]));
    let bias = permute(reshape(table, [N, N, this.heads]), [2, 0, 1]);
    if (mask) {
      const windows = mask.shape[0]!;
      const perWindow = add(unsqueeze(bias, 0), unsqueeze(mask, 1));
      bias = reshape(expand(unsqueeze(perWindow, 0), [Bw / windows, windows, this.heads, N, N]), [Bw, this.heads, N, N]);
    }
    const out = scaledDotProductAttention(heads(this.query.forward(x)), heads(this.key.forward(x)), heads(this.value.forward(x)), { bias });
    return reshape(permute(out, [0, 2, 1, 3]), [Bw, N, C]);
  }
}

/** A Module holding one Linear named `dense` (SwinSelfOutput, SwinIntermediate, SwinOutput). */
class Dense extends Module {
  readonly dense: Linear;
  constructor(inDim: number, outDim: number) {
    super();
    this.dense = this.module('dense', new Linear(inDim, outDim));
  }
}

class SwinAttention extends Module {
  readonly self: SwinSelfAttention;
  readonly output: Dense;
  constructor(dim: number, heads: number, ws: number, qkvBias: boolean) {
    super();
    this.self = this.module('self', new SwinSelfAttention(dim, heads, ws, qkvBias));
    this.output = this.module('output', new Dense(dim, dim));
  }
}

class SwinLayer extends Module {
  readonly layernormBefore: LayerNorm;
  readonly attention: SwinAttention;
  readonly layernormAfter: LayerNorm;
  readonly intermediate: Dense;
  readonly output: Dense;
  readonly act: SwinConfig['hiddenAct'];
  constructor(dim: number, heads: number, readonly ws: number, readonly shift: number, c: SwinConfig, readonly dropPathRate = 0) {
    super();
    this.act = c.hiddenAct;
    const hidden = Math.floor(c.mlpRatio * dim);
    this.layernormBefore = this.module('layernorm_before', new LayerNorm(dim, { eps: c.layerNormEps }));
    this.attention = this.module('attention', new SwinAttention(dim, heads, ws, c.qkvBias));
    this.layernormAfter = this.module('layernorm_after', new LayerNorm(dim, { eps: c.layerNormEps }));
    this.intermediate = this.module('intermediate', new Dense(dim, hidden));
    this.output = this.module('output', new Dense(hidden, dim));
  }

  /**
   * Stochastic depth (transformers' SwinDropPath) on a residual branch in training mode: each image's branch
   * is dropped with probability dropPathRate, kept ones scaled by 1/(1 − rate).
   */
  private dropPath(branch: Tensor, random: Generator | undefined): Tensor {
    const p = this.dropPathRate;
    if (!this.training || p === 0 || !random) return branch;
    const keepMask = compare('ge', random.rand([branch.shape[0]!, 1, 1]), p);
    return mul(branch, mul(keepMask, 1 / (1 - p)));
  }

  forward(x: Tensor, [H, W]: [number, number], random?: Generator): Tensor {
    const [B, , C] = x.shape as [number, number, number];
    const ws = this.ws;
    const Hp = Math.ceil(H / ws) * ws;
    const Wp = Math.ceil(W / ws) * ws;
    let h = reshape(this.layernormBefore.forward(x), [B, H, W, C]);
    // padded tokens are zero vectors that take part in attention (not masked), as in the reference
    if (Hp !== H || Wp !== W) h = pad(h, [0, 0, 0, Wp - W, 0, Hp - H]);
    if (this.shift) h = roll(h, [-this.shift, -this.shift], [1, 2]);
    const windows = reshape(permute(reshape(h, [B, Hp / ws, ws, Wp / ws, ws, C]), [0, 1, 3, 2, 4, 5]), [-1, ws * ws, C]);
    const mask = this.shift ? Tensor.fromArray(shiftedWindowMask(Hp, Wp, ws, this.shift), [(Hp / ws) * (Wp / ws), ws * ws, ws * ws]) : undefined;
    const attended = this.attention.output.dense.forward(this.attention.self.forward(windows, mask));
    let back = reshape(permute(reshape(attended, [B, Hp / ws, Wp / ws, ws, ws, C]), [0, 1, 3, 2, 4, 5]), [B, Hp, Wp, C]);
    if (this.shift) back = roll(back, [this.shift, this.shift], [1, 2]);
    if (Hp !== H) back = slice(back, 1, 0, H);
    if (Wp !== W) back = slice(back, 2, 0, W);
    const y = add(x, this.dropPath(reshape(back, [B, H * W, C]), random));
    const mlp = this.output.dense.forward(activate(this.act, this.intermediate.dense.forward(this.layernormAfter.forward(y))));
    return add(y, this.dropPath(mlp, random));
  }
}

class SwinPatchMerging extends Module {
  readonly reduction: Linear;
  readonly norm: LayerNorm;
  constructor(dim: number) {
    super();
    this.reduction = this.module('reduction', new Linear(4 * dim, 2 * dim, { bias: false }));
    this.norm = this.module('norm', new LayerNorm(4 * dim));
  }

  forward(x: Tensor, [H, W]: [number, number]): Tensor {
    const [B, , C] = x.shape as [number, number, number];
    let h = reshape(x, [B, H, W, C]);
    if (H % 2 || W % 2) h = pad(h, [0, 0, 0, W % 2, 0, H % 2]);
    const at = (dy: number, dx: number) => slice(slice(h, 1, dy, undefined, 2), 2, dx, undefined, 2);
    const merged = concat([at(0, 0), at(1, 0), at(0, 1), at(1, 1)], 3);
    return this.reduction.forward(this.norm.forward(reshape(merged, [B, -1, 4 * C])));
  }
}

class SwinStage extends Module {
  readonly blocks: ModuleList<SwinLayer>;
  readonly downsample: SwinPatchMerging | undefined;
  constructor(dim: number, heads: number, c: SwinConfig, downsample: boolean, dropPathRates: number[]) {
    super();
    const ws = c.windowSize;
    this.blocks = this.module('blocks', new ModuleList(dropPathRates.map((rate, i) => new SwinLayer(dim, heads, ws, i % 2 ? Math.floor(ws / 2) : 0, c, rate))));
    this.downsample = downsample ? this.module('downsample', new SwinPatchMerging(dim)) : undefined;
  }
}

class SwinEncoder extends Module {
  readonly layers: ModuleList<SwinStage>;
  constructor(c: SwinConfig) {
    super();
    const n = c.depths.length;
    // drop-path rates rise linearly from 0 to drop_path_rate over all blocks (torch.linspace)
    const total = c.depths.reduce((a, b) => a + b, 0);
    const rates = Array.from({ length: total }, (_, k) => (total > 1 ? (c.dropPathRate * k) / (total - 1) : 0));
    let first = 0;
    this.layers = this.module('layers', new ModuleList(c.depths.map((d, i) => {
      first += d;
      return new SwinStage(c.embedDim * 2 ** i, c.numHeads[i]!, c, i < n - 1, rates.slice(first - d, first));
    })));
  }
}

/** The stage LayerNorms of SwinBackbone, one per output stage (children named 'stage1', …). */
class StageNorms extends Module {
  readonly norms = new Map<string, LayerNorm>();
  constructor(stages: string[], channels: number[]) {
    super();
    stages.forEach((s, i) => this.norms.set(s, this.module(s, new LayerNorm(channels[i]!))));
  }
}

/** transformers' SwinBackbone: returns the normed output map [B, C, H, W] of each stage in out_features. */
export class SwinBackbone extends Module {
  readonly embeddings: SwinEmbeddings;
  readonly encoder: SwinEncoder;
  readonly hiddenStatesNorms: StageNorms;
  /** Channels of each returned map. */
  readonly channels: number[];
  /** The random source of drop path in training mode (none: no drop path). */
  random?: Generator;

  constructor(readonly config: SwinConfig) {
    super();
    this.embeddings = this.module('embeddings', new SwinEmbeddings(config));
    this.encoder = this.module('encoder', new SwinEncoder(config));
    const stageChannels = config.depths.map((_, i) => config.embedDim * 2 ** i);
    this.channels = config.outFeatures.map((s) => stageChannels[Number(s.slice(5)) - 1]!);
    this.hiddenStatesNorms = this.module('hidden_states_norms', new StageNorms(config.outFeatures, this.channels));
  }

  /** The stage maps; with `embeddings`, first the patch embeddings' map [B, C, H/4, W/4] too (IRNet reads one that early). */
  forward(pixelValues: Tensor, { embeddings = false } = {}): Tensor[] {
    if (pixelValues.rank !== 4 || pixelValues.shape[1] !== this.config.numChannels) {
      throw new Error(`SwinBackbone: pixel values must be [batch, ${this.config.numChannels}, height, width], got ${shapeStr(pixelValues.shape)}`);
    }
    let { tokens, dims } = tidy(() => this.embeddings.forward(pixelValues));
    const maps: Tensor[] = [];
    if (embeddings) {
      const [B, , C] = tokens.shape as [number, number, number];
      const t = tokens;
      maps.push(tidy(() => permute(reshape(t, [B, dims[0], dims[1], C]), [0, 3, 1, 2])));
    }
    [...this.encoder.layers].forEach((stage, i) => {
      for (const block of stage.blocks) {
        const next = tidy(() => block.forward(tokens, dims, this.random));
        tokens.dispose();
        tokens = next;
      }
      const norm = this.hiddenStatesNorms.norms.get(`stage${i + 1}`);
      if (norm) {
        const [B, , C] = tokens.shape as [number, number, number];
        const t = tokens;
        maps.push(tidy(() => permute(reshape(norm.forward(t), [B, dims[0], dims[1], C]), [0, 3, 1, 2])));
      }
      if (stage.downsample) {
        const down = stage.downsample;
        const t = tokens;
        const d = dims;
        tokens = tidy(() => down.forward(t, d));
        t.dispose();
        dims = [Math.ceil(dims[0] / 2), Math.ceil(dims[1] / 2)];
      }
    });
    tokens.dispose();
    return maps;
  }
}
