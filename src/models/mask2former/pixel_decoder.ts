// Mask2Former's pixel decoder (transformers' Mask2FormerPixelDecoder): the 3 coarsest backbone maps are
// projected (1×1 conv + GroupNorm), flattened and refined by multi-scale deformable-attention encoder layers;
// an FPN path (lateral 1×1 conv + upsampled coarser output, 3×3 output conv) adds the finer levels, and a
// 1×1 mask projection of the finest gives the per-pixel mask features.

import { Tensor, tidy } from '../../engine/tensor.ts';
import { add, mul, relu } from '../../kernels/elementwise.ts';
import { interpolate } from '../../kernels/resample.ts';
import { indexSelect } from '../../kernels/gather.ts';
import { msDeformAttn } from '../../kernels/ms_deform_attn.ts';
import { softmax } from '../../kernels/softmax.ts';
import { concat, permute, reshape, split } from '../../kernels/shape.ts';
import { Module, ModuleList } from '../../nn/module.ts';
import { Conv2d, GroupNorm, LayerNorm, Linear } from '../../nn/layers.ts';
import type { Mask2FormerConfig } from './config.ts';

/**
 * The sine position embedding of an H×W map (normalize=True, scale 2π, temperature 10000), [2·numPosFeats, H, W]:
 * channels [0, n) encode y, [n, 2n) encode x; even channels sin, odd cos, of pos / 10000^(2⌊k/2⌋/n).
 */
export function sinePositionEmbedding(H: number, W: number, numPosFeats: number): Float32Array {
  const n = numPosFeats;
  const out = new Float32Array(2 * n * H * W);
  const scale = 2 * Math.PI;
  for (let k = 0; k < n; k++) {
    const dimT = 10000 ** ((2 * Math.floor(k / 2)) / n);
    const f = k % 2 === 0 ? Math.sin : Math.cos;
    for (let y = 0; y < H; y++) {
      for (let x = 0; x < W; x++) {
        out[(k * H + y) * W + x] = f((((y + 1) / (H + 1e-6)) * scale) / dimT);
        out[((n + k) * H + y) * W + x] = f((((x + 1) / (W + 1e-6)) * scale) / dimT);
      }
    }
  }
  return out;
}

/** Sequential(Conv2d, GroupNorm[, ReLU]) with the children named '0' and '1', as the reference's nn.Sequential. */
export class ConvNorm extends Module {
  readonly conv: Conv2d;
  readonly norm: GroupNorm;
  readonly withRelu: boolean;
  constructor(inC: number, outC: number, kernel: number, { bias = true, relu: withRelu = false } = {}) {
    super();
    this.conv = this.module('0', new Conv2d(inC, outC, kernel, { bias, padding: (kernel - 1) / 2 }));
    this.norm = this.module('1', new GroupNorm(32, outC));
    this.withRelu = withRelu;
  }

  forward(x: Tensor): Tensor {
    const y = this.norm.forward(this.conv.forward(x));
    return this.withRelu ? relu(y) : y;
  }
}

const numLevels = 3;
const numPoints = 4;

class MultiscaleDeformableAttention extends Module {
  readonly samplingOffsets: Linear;
  readonly attentionWeights: Linear;
  readonly valueProj: Linear;
  readonly outputProj: Linear;
  constructor(readonly dim: number, readonly heads: number) {
    super();
    if (dim % heads) throw new Error(`Mask2Former pixel decoder: feature_size ${dim} must be divisible by num_attention_heads ${heads}`);
    this.samplingOffsets = this.module('sampling_offsets', new Linear(dim, heads * numLevels * numPoints * 2));
    this.attentionWeights = this.module('attention_weights', new Linear(dim, heads * numLevels * numPoints));
    this.valueProj = this.module('value_proj', new Linear(dim, dim));
    this.outputProj = this.module('output_proj', new Linear(dim, dim));
  }

  /** hs [B, S, C], pos [S, C], reference points [1, S, 1, 1, 1, 2], 1/(W_l, H_l) as [1, 1, 1, L, 1, 2]. */
  forward(hs: Tensor, pos: Tensor, reference: Tensor, inverseSizes: Tensor, shapes: [number, number][]): Tensor {
    const [B, S] = hs.shape as [number, number];
    const q = add(hs, pos);
    const offsets = reshape(this.samplingOffsets.forward(q), [B, S, this.heads, numLevels, numPoints, 2]);
    const locations = add(reference, mul(offsets, inverseSizes));
    const logits = reshape(this.attentionWeights.forward(q), [B, S, this.heads, numLevels * numPoints]);
    const weights = reshape(softmax(logits, -1), [B, S, this.heads, numLevels, numPoints]);
    const value = reshape(this.valueProj.forward(hs), [B, S, this.heads, this.dim / this.heads]);
    return this.outputProj.forward(msDeformAttn(value, shapes, locations, weights));
  }
}

class PixelDecoderEncoderLayer extends Module {
  readonly selfAttn: MultiscaleDeformableAttention;
  readonly selfAttnLayerNorm: LayerNorm;
  readonly fc1: Linear;
  readonly fc2: Linear;
  readonly finalLayerNorm: LayerNorm;
  constructor(c: Mask2FormerConfig) {
    super();
    this.selfAttn = this.module('self_attn', new MultiscaleDeformableAttention(c.featureSize, c.numAttentionHeads));
    this.selfAttnLayerNorm = this.module('self_attn_layer_norm', new LayerNorm(c.featureSize));
    this.fc1 = this.module('fc1', new Linear(c.featureSize, c.encoderFeedforwardDim));
    this.fc2 = this.module('fc2', new Linear(c.encoderFeedforwardDim, c.featureSize));
    this.finalLayerNorm = this.module('final_layer_norm', new LayerNorm(c.featureSize));
  }
}

class PixelDecoderEncoder extends Module {
  readonly layers: ModuleList<PixelDecoderEncoderLayer>;
  constructor(c: Mask2FormerConfig) {
    super();
    this.layers = this.module('layers', new ModuleList(Array.from({ length: c.encoderLayers }, () => new PixelDecoderEncoderLayer(c))));
  }
}

export interface PixelDecoderOutput {
  /** The refined maps, coarsest first ([B, C, H, W] each; the first 3 levels). */
  multiScaleFeatures: Tensor[];
  /** [B, mask_feature_size, H/4, W/4]. */
  maskFeatures: Tensor;
}

export class Mask2FormerPixelDecoder extends Module {
  readonly inputProjections: ModuleList<ConvNorm>;
  readonly encoder: PixelDecoderEncoder;
  readonly levelEmbed: Tensor;
  readonly maskProjection: Conv2d;
  /** FPN lateral and output convs, finest first (adapter_1 / layer_1 belong to backbone level 0). */
  readonly lateral: ConvNorm[] = [];
  readonly output: ConvNorm[] = [];

  constructor(readonly config: Mask2FormerConfig, readonly featureChannels: number[]) {
    super();
    const C = config.featureSize;
    const transformerIn = featureChannels.slice(-numLevels);
    this.inputProjections = this.module('input_projections', new ModuleList(transformerIn.slice().reverse().map((ch) => new ConvNorm(ch, C, 1))));
    this.encoder = this.module('encoder', new PixelDecoderEncoder(config));
    this.levelEmbed = this.param('level_embed', Tensor.zeros([numLevels, C]));
    this.maskProjection = this.module('mask_projection', new Conv2d(C, config.maskFeatureSize, 1));
    const stride = Math.min(...config.featureStrides.slice(-numLevels));
    const fpnLevels = Math.round(Math.log2(stride) - Math.log2(config.commonStride));
    for (let i = 0; i < fpnLevels; i++) {
      this.lateral.push(this.module(`adapter_${i + 1}`, new ConvNorm(featureChannels[i]!, C, 1, { bias: false })));
      this.output.push(this.module(`layer_${i + 1}`, new ConvNorm(C, C, 3, { bias: false, relu: true })));
    }
  }

  /** features: the backbone maps, finest first. */
  forward(features: Tensor[]): PixelDecoderOutput {
    if (features.length !== this.featureChannels.length) {
      throw new Error(`Mask2FormerPixelDecoder: expected ${this.featureChannels.length} backbone maps, got ${features.length}`);
    }
    const C = this.config.featureSize;
    const levels = features.slice().reverse().slice(0, numLevels);
    const shapes = levels.map((x) => [x.shape[2]!, x.shape[3]!] as [number, number]);
    const B = features[0]!.shape[0]!;
    const S = shapes.reduce((a, [h, w]) => a + h * w, 0);
    let hs = tidy(() => concat(levels.map((x, l) => {
      const y = this.inputProjections.at(l).forward(x);
      return permute(reshape(y, [B, C, -1]), [0, 2, 1]);
    }), 1));
    const { pos, reference, inverseSizes } = encoderConstants(shapes, C);
    const levelIds = Tensor.fromArray(Int32Array.from(shapes.flatMap(([h, w], l) => Array<number>(h * w).fill(l))), [S], 'i32');
    const fullPos = add(pos, indexSelect(this.levelEmbed, 0, levelIds));
    for (const layer of this.encoder.layers) {
      const next = tidy(() => {
        const attended = layer.selfAttn.forward(hs, fullPos, reference, inverseSizes, shapes);
        const h1 = layer.selfAttnLayerNorm.forward(add(hs, attended));
        return layer.finalLayerNorm.forward(add(h1, layer.fc2.forward(relu(layer.fc1.forward(h1)))));
      });
      hs.dispose();
      hs = next;
    }
    for (const t of [pos, reference, inverseSizes, levelIds, fullPos]) t.dispose();
    const outputs = split(hs, shapes.map(([h, w]) => h * w), 1).map((x, l) => reshape(permute(x, [0, 2, 1]), [B, C, ...shapes[l]!]));
    hs.dispose();
    for (let i = this.lateral.length - 1; i >= 0; i--) {
      const f = features[i]!;
      const prev = outputs[outputs.length - 1]!;
      outputs.push(tidy(() => {
        const lat = this.lateral[i]!.forward(f);
        const up = interpolate(prev, { size: [lat.shape[2]!, lat.shape[3]!], mode: 'bilinear', alignCorners: false });
        return this.output[i]!.forward(add(lat, up));
      }));
    }
    const maskFeatures = this.maskProjection.forward(outputs[outputs.length - 1]!);
    for (const t of outputs.slice(numLevels)) t.dispose();
    return { multiScaleFeatures: outputs.slice(0, numLevels), maskFeatures };
  }
}

/** Constants of the deformable encoder: sine position embedding [S, C], reference points, 1/(W_l, H_l). */
function encoderConstants(shapes: [number, number][], C: number): { pos: Tensor; reference: Tensor; inverseSizes: Tensor } {
  const S = shapes.reduce((a, [h, w]) => a + h * w, 0);
  const pos = new Float32Array(S * C);
  const ref = new Float32Array(S * 2);
  let row = 0;
  for (const [H, W] of shapes) {
    const emb = sinePositionEmbedding(H, W, C / 2);
    for (let p = 0; p < H * W; p++, row++) {
      for (let c = 0; c < C; c++) pos[row * C + c] = emb[c * H * W + p]!;
      // pixel centres, normalised (valid ratios are 1: no padding masks)
      ref[2 * row] = ((p % W) + 0.5) / W;
      ref[2 * row + 1] = (Math.floor(p / W) + 0.5) / H;
    }
  }
  const inv = Float32Array.from(shapes.flatMap(([h, w]) => [1 / w, 1 / h]));
  return {
    pos: Tensor.fromArray(pos, [S, C]),
    reference: Tensor.fromArray(ref, [1, S, 1, 1, 1, 2]),
    inverseSizes: Tensor.fromArray(inv, [1, 1, 1, shapes.length, 1, 2]),
  };
}
