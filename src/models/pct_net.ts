// PCT-Net (Guerreiro et al., "PCT-Net: Full Resolution Image Harmonization Using Pixel-Wise Color
// Transformations", CVPR 2023; reference rakutentech/PCT-Net-Image-Harmonization: iharm/model/pct_functions.py,
// iharm/model/base/pct_net.py, iharm/model/modeling/unet.py and basic_blocks.py): a network at low resolution
// predicts per-pixel colour-transform parameters and an attention map; both are upsampled (bicubic) and the
// transform is applied to the full-resolution image, blended by the attention. Here the transforms and the CNN
// variant (CNN_pct: a U-Net with spatial-separated attention, SSAM), under the reference's module names.

import { Tensor, tidy } from '../engine/tensor.ts';
import { add, affine, clamp, div, gelu, mul, sigmoid, sub, tanh } from '../kernels/elementwise.ts';
import { scaledDotProductAttention } from '../kernels/attention.ts';
import { linear } from '../kernels/matmul.ts';
import { conv2d } from '../kernels/conv.ts';
import { maxPool2d } from '../kernels/pool.ts';
import { max, mean, sum } from '../kernels/reduce.ts';
import { interpolate } from '../kernels/resample.ts';
import { concat, permute, reshape, split } from '../kernels/shape.ts';
import { BatchNorm2d, Conv2d, ConvTranspose2d, LayerNorm, Linear, ReLU, Sequential, uniformInit } from '../nn/layers.ts';
import { Module, ModuleList } from '../nn/module.ts';
import { ConfigReader } from './pretrained.ts';
import { fromFolder } from './diffusers/loading.ts';

export type PctTransformType = 'linear' | 'linear_sym' | 'polynomial' | 'identity' | 'mul' | 'add';

/** Parameters per pixel of a transform (PCT's n_params). */
export function pctParamCount(type: PctTransformType, affineTerm: boolean): number {
  const base = { linear: 9, linear_sym: 6, polynomial: 27, identity: 3, mul: 3, add: 3 }[type];
  return base + (affineTerm && (type === 'linear' || type === 'linear_sym') ? 3 : 0);
}

/**
 * The transform alone (PCT.transform): x [B, 3, H, W], p [B, n, H, W] → y [B, 3, H, W], per pixel:
 * linear y_i = Σ_j p[3i + j]·x_j (+ p[9 + i]); linear_sym with M = [[p0, p3, p5], [p3, p1, p4], [p5, p4, p2]] (+ p[6..8]);
 * polynomial y_i = Σ_k p[9i + k]·f_k over the official features [x0, x0, x2, x0·x2, x0·x0, x2·x0, x0², x2², x0²] (its
 * code reads channel 0 twice and never channel 1: reproduced as is); identity y = p; mul y = x·p; add y = x + p.
 */
export function pctTransform(x: Tensor, p: Tensor, type: PctTransformType, affineTerm = false): Tensor {
  const n = pctParamCount(type, affineTerm);
  if (x.rank !== 4 || x.shape[1] !== 3) throw new Error(`pctTransform: x has shape [${x.shape.join(', ')}], expected [B, 3, H, W]`);
  if (p.rank !== 4 || p.shape[1] !== n || p.shape[0] !== x.shape[0] || p.shape[2] !== x.shape[2] || p.shape[3] !== x.shape[3]) {
    throw new Error(`pctTransform: ${type}${affineTerm ? ' (affine)' : ''} needs parameters [${x.shape[0]}, ${n}, ${x.shape[2]}, ${x.shape[3]}], got [${p.shape.join(', ')}]`);
  }
  return tidy(() => {
    if (type === 'identity') return reshape(p, p.shape);
    if (type === 'mul') return mul(x, p);
    if (type === 'add') return add(x, p);
    const xs = split(x, 1, 1);
    const ps = split(p, 1, 1);
    const dot = (weights: Tensor[], features: Tensor[]) => weights.slice(1).reduce((acc, w, k) => add(acc, mul(w, features[k + 1]!)), mul(weights[0]!, features[0]!));
    let rows: Tensor[];
    let bias = 0;
    if (type === 'linear') {
      rows = [0, 1, 2].map((i) => dot(ps.slice(3 * i, 3 * i + 3), xs));
      bias = 9;
    } else if (type === 'linear_sym') {
      const m = [[0, 3, 5], [3, 1, 4], [5, 4, 2]];
      rows = m.map((row) => dot(row.map((k) => ps[k]!), xs));
      bias = 6;
    } else {
      const [x0, , x2] = xs as [Tensor, Tensor, Tensor];
      const f = [x0, x0, x2, mul(x0, x2), mul(x0, x0), mul(x2, x0), mul(x0, x0), mul(x2, x2), mul(x0, x0)];
      rows = [0, 1, 2].map((i) => dot(ps.slice(9 * i, 9 * i + 9), f));
    }
    if (affineTerm) rows = rows.map((r, i) => add(r, ps[bias + i]!));
    return concat(rows, 1);
  });
}

export interface PctOptions {
  type: PctTransformType;
  affine: boolean;
  /** Clamp the transformed image to [0, 1] (default true). */
  clamp?: boolean;
  /** Normalise the result per channel, (y − mean) / std (the CNN variant's ImageNet normalisation); none: as is. */
  normalization?: { mean: readonly number[]; std: readonly number[] };
}

/** PCT(x, p): the transform, clamped to [0, 1], then normalised. */
export function pct(x: Tensor, p: Tensor, o: PctOptions): Tensor {
  return tidy(() => {
    let y = pctTransform(x, p, o.type, o.affine);
    if (o.clamp ?? true) y = clamp(y, 0, 1);
    const norm = o.normalization;
    if (!norm) return y;
    return concat(split(y, 1, 1).map((c, i) => affine(c, 1 / norm.std[i]!, -norm.mean[i]! / norm.std[i]!)), 1);
  });
}

// ---------------------------------------------------------------- the CNN variant

export interface PCTNetConfig {
  /** 'ssam' (CNN_pct, the U-Net) or 'ViT' (ViT_pct, libcom's PCTNet: dim 256, 9 layers, 2 heads, patch 4, hard-coded as there). */
  backbone: 'ssam' | 'ViT';
  /** Channels of the first encoder block (doubling per block up to maxChannels). */
  ch: number;
  depth: number;
  maxChannels: number;
  /** Blocks from this index on have BatchNorm (encoder and decoder counted from the top). */
  batchnormFrom: number;
  /** Decoder blocks from this index on apply SSAM. */
  attendFrom: number;
  attentionMidK: number;
  transform: PctTransformType;
  affine: boolean;
  clamp: boolean;
  mean: number[];
  std: number[];
}

/** The keyword arguments of the reference's PCTNet (a config.json like the conformance folder's; CNN backbone 'ssam'). */
export function pctNetConfig(json: Record<string, unknown>, source = 'config.json'): PCTNetConfig {
  const c = new ConfigReader(json, source);
  const backbone = c.oneOf('backbone_type', ['ssam', 'ViT'], 'ssam') as 'ssam' | 'ViT';
  c.expectDefaults({ image_fusion: [true], dim: [3], color_space: ['RGB'] });
  // the ViT blends with the mask (use_attn false), the CNN with its predicted attention
  if (c.bool('use_attn', backbone === 'ssam') !== (backbone === 'ssam')) c.fail('use_attn', `${backbone === 'ssam'} for backbone ${backbone} (the other combination is not an official config)`);
  const norm = c.child('input_normalization');
  return {
    backbone,
    ch: c.int('ch', 32, 1), depth: c.int('depth', 4, 2), maxChannels: c.int('max_channels', 512, 1),
    batchnormFrom: c.int('batchnorm_from', 2, 0), attendFrom: c.int('attend_from', 2, 0), attentionMidK: c.number('attention_mid_k', 0.5),
    transform: c.oneOf('transform_type', ['linear', 'linear_sym', 'polynomial', 'identity', 'mul', 'add'], 'linear') as PctTransformType,
    affine: c.bool('affine', true), clamp: c.bool('clamp', true),
    mean: norm?.numbers('mean') ?? [0.485, 0.456, 0.406], std: norm?.numbers('std') ?? [0.229, 0.224, 0.225],
  };
}

/** ConvBlock: conv 3×3 (pad 1) → [BatchNorm] → ReLU, under `block`. */
class ConvBlock extends Module {
  readonly block: Sequential;
  constructor(inC: number, outC: number, norm: boolean, bias = true) {
    super();
    this.block = this.module('block', new Sequential(norm ? [new Conv2d(inC, outC, 3, { padding: 1, bias }), new BatchNorm2d(outC), new ReLU()] : [new Conv2d(inC, outC, 3, { padding: 1, bias }), new ReLU()]));
  }
  forward(x: Tensor): Tensor {
    return this.block.forward(x);
  }
}

/** UNetDoubleConv: two ConvBlocks under `block`. */
class DoubleConv extends Module {
  readonly block: Sequential;
  constructor(inC: number, outC: number, norm: boolean) {
    super();
    this.block = this.module('block', new Sequential([new ConvBlock(inC, outC, norm), new ConvBlock(outC, outC, norm)]));
  }
  forward(x: Tensor): Tensor {
    return this.block.forward(x);
  }
}

class EncoderBlock extends Module {
  readonly convs: DoubleConv;
  constructor(inC: number, outC: number, norm: boolean) {
    super();
    this.convs = this.module('convs', new DoubleConv(inC, outC, norm));
  }
}

/** ChannelAttention: x scaled per channel by sigmoid(MLP(cat[global average, global max])). */
class ChannelAttention extends Module {
  readonly attention_transform: Sequential;
  constructor(channels: number) {
    super();
    const hidden = Math.max(Math.floor(channels / 16), 8);
    this.attention_transform = this.module('attention_transform', new Sequential([new Linear(2 * channels, hidden), new ReLU(), new Linear(hidden, channels)]));
  }
  forward(x: Tensor): Tensor {
    return tidy(() => {
      const [B, C, H, W] = x.shape as [number, number, number, number];
      const flat = reshape(x, [B, C, H * W]);
      const pooled = concat([mean(flat, 2), max(flat, 2)], 1);
      return mul(x, reshape(sigmoid(this.attention_transform.forward(pooled)), [B, C, 1, 1]));
    });
  }
}

/** SpatialSeparatedAttention: the blurred mask splits x into background and foreground paths. */
class SSAM extends Module {
  readonly mask_blurring: { weight: Tensor } & Module;
  readonly background_gate: ChannelAttention;
  readonly foreground_gate: ChannelAttention;
  readonly mix_gate: ChannelAttention;
  readonly learning_block: Sequential;
  constructor(channels: number, midK: number) {
    super();
    const blur = new Module() as Module & { weight: Tensor };
    // the reference's fixed 7×7 Gaussian (sigma 1), stored in its state_dict as mask_blurring.weight
    const g = Array.from({ length: 7 }, (_, i) => Math.exp(-((i - 3) ** 2) / 2));
    const total = g.reduce((a, b) => a + b, 0) ** 2;
    blur.weight = blur.buffer('weight', Tensor.fromArray(Float32Array.from({ length: 49 }, (_, k) => (g[Math.floor(k / 7)]! * g[k % 7]!) / total), [1, 1, 7, 7]));
    this.mask_blurring = this.module('mask_blurring', blur);
    this.background_gate = this.module('background_gate', new ChannelAttention(channels));
    this.foreground_gate = this.module('foreground_gate', new ChannelAttention(channels));
    this.mix_gate = this.module('mix_gate', new ChannelAttention(channels));
    const mid = Math.floor(channels * midK);
    this.learning_block = this.module('learning_block', new Sequential([new ConvBlock(channels, mid, true, false), new ConvBlock(mid, channels, true, false)]));
  }
  forward(x: Tensor, mask: Tensor, capture?: Capture): Tensor {
    return tidy(() => {
      const [h, w] = [x.shape[2]!, x.shape[3]!];
      const resized = mask.shape[2] === h && mask.shape[3] === w ? mask : interpolate(mask, { size: [h, w], mode: 'bilinear', alignCorners: true });
      const m = keep(capture, 'mask_blurring', conv2d(resized, this.mask_blurring.weight, undefined, { padding: 3 }));
      const fore = add(this.learning_block.forward(this.foreground_gate.forward(x)), this.mix_gate.forward(x));
      return add(mul(m, fore), mul(affine(m, -1, 1), this.background_gate.forward(x)));
    });
  }
}

class UpBlock extends Module {
  readonly upconv: Sequential;
  readonly attention: SSAM | undefined;
  readonly convs: DoubleConv;
  constructor(inC: number, outC: number, norm: boolean, attend: boolean, midK: number) {
    super();
    const upsample = new (class extends Module {
      forward(x: Tensor): Tensor {
        return interpolate(x, { scaleFactor: 2, mode: 'bilinear', alignCorners: true });
      }
    })();
    this.upconv = this.module('upconv', new Sequential([upsample, new ConvBlock(inC, outC, false)]));
    if (attend) this.attention = this.module('attention', new SSAM(2 * outC, midK));
    this.convs = this.module('convs', new DoubleConv(2 * outC, outC, norm));
  }
}

/** nn.TransformerEncoderLayer (post-norm, GELU, batch_first false in the reference; batch-first here, same math). */
class TransformerEncoderLayer extends Module {
  readonly self_attn: Module & { in_proj_weight: Tensor; in_proj_bias: Tensor; out_proj: Linear };
  readonly linear1: Linear;
  readonly linear2: Linear;
  readonly norm1: LayerNorm;
  readonly norm2: LayerNorm;
  constructor(readonly dim: number, readonly heads: number, ff: number) {
    super();
    const attn = new Module() as TransformerEncoderLayer['self_attn'];
    attn.in_proj_weight = attn.param('in_proj_weight', uniformInit([3 * dim, dim], Math.sqrt(6 / (4 * dim))));
    attn.in_proj_bias = attn.param('in_proj_bias', Tensor.zeros([3 * dim]));
    attn.out_proj = attn.module('out_proj', new Linear(dim, dim));
    this.self_attn = this.module('self_attn', attn);
    this.linear1 = this.module('linear1', new Linear(dim, ff));
    this.linear2 = this.module('linear2', new Linear(ff, dim));
    this.norm1 = this.module('norm1', new LayerNorm(dim));
    this.norm2 = this.module('norm2', new LayerNorm(dim));
  }
  forward(x: Tensor): Tensor {
    return tidy(() => {
      const [B, L, D] = x.shape as [number, number, number];
      const d = D / this.heads;
      const [wq, wk, wv] = split(this.self_attn.in_proj_weight, D, 0);
      const [bq, bk, bv] = split(this.self_attn.in_proj_bias, D, 0);
      const heads = (w: Tensor, b: Tensor) => permute(reshape(linear(x, w!, b), [B, L, this.heads, d]), [0, 2, 1, 3]);
      const o = scaledDotProductAttention(heads(wq!, bq!), heads(wk!, bk!), heads(wv!, bv!));
      const attended = this.self_attn.out_proj.forward(reshape(permute(o, [0, 2, 1, 3]), [B, L, D]));
      const h = this.norm1.forward(add(x, attended));
      return this.norm2.forward(add(h, this.linear2.forward(gelu(this.linear1.forward(h)))));
    });
  }
}

/** ViT_Harmonizer's encoder: 4×4 patches of (RGB, mask) → Linear → 9 encoder layers → ConvTranspose 4/4 → tanh. */
class VitEncoder extends Module {
  readonly patch_to_embedding: Sequential;
  readonly transformer_enc: Module & { layers: ModuleList<TransformerEncoderLayer> };
  readonly dec: Sequential;
  static readonly dim = 256;
  static readonly patch = 4;
  constructor(outChannels: number) {
    super();
    const { dim, patch } = VitEncoder;
    const identity = new (class extends Module {
      forward(x: Tensor): Tensor {
        return x;
      }
    })();
    this.patch_to_embedding = this.module('patch_to_embedding', new Sequential([identity, new Linear(patch * patch * 4, dim)]));
    const enc = new Module() as VitEncoder['transformer_enc'];
    enc.layers = enc.module('layers', new ModuleList(Array.from({ length: 9 }, () => new TransformerEncoderLayer(dim, 2, 512))));
    this.transformer_enc = this.module('transformer_enc', enc);
    this.dec = this.module('dec', new Sequential([new ConvTranspose2d(dim, outChannels, patch, { stride: patch })]));
  }
  forward(x: Tensor, capture?: Capture): Tensor {
    return tidy(() => {
      const [B, C, H, W] = x.shape as [number, number, number, number];
      const p = VitEncoder.patch;
      const [gh, gw] = [H / p, W / p];
      // 'b c (h p1) (w p2) -> b (h w) (p1 p2 c)'
      const patches = reshape(permute(reshape(x, [B, C, gh, p, gw, p]), [0, 2, 4, 3, 5, 1]), [B, gh * gw, p * p * C]);
      let h = keep(capture, 'encoder.patch_to_embedding', this.patch_to_embedding.forward(patches));
      [...this.transformer_enc.layers].forEach((layer, i) => {
        h = layer.forward(h);
        // the reference's layers are sequence-first: [L, B, D]
        if (capture) capture(`encoder.transformer_enc.layers.${i}`, permute(h, [1, 0, 2]));
      });
      const grid = reshape(permute(h, [0, 2, 1]), [B, VitEncoder.dim, gh, gw]);
      return tanh(this.dec.forward(grid));
    });
  }
}

type Capture = (name: string, t: Tensor) => void;
const keep = (capture: Capture | undefined, name: string, t: Tensor) => {
  capture?.(name, t);
  return t;
};

export interface PCTNetOutput {
  /** Low resolution, normalised: PCT(image) blended by the attention (the trainer's low-resolution output). */
  images: Tensor;
  /** [B, n, h, w] transform parameters. */
  params: Tensor;
  /** [B, 1, h, w] in (0, 1). */
  attention: Tensor;
  imagesFullres: Tensor;
  paramsFullres: Tensor;
}

export interface PCTNetForwardOptions {
  capture?: Capture;
  /** Full-resolution bicubic with align_corners (libcom's ViT port uses true; the official code false, the default). */
  alignCorners?: boolean;
}

export class PCTNet extends Module {
  readonly config: PCTNetConfig;
  /** CNN: the U-Net encoder (block0, block1, blocks_connected); ViT: patch embedding, transformer, decoder convolution. */
  readonly encoder: Module & { block0?: EncoderBlock; block1?: EncoderBlock; blocks_connected?: Module };
  /** CNN only. */
  readonly decoder: (Module & { up_blocks: ModuleList<UpBlock>; conv_attention: Conv2d; to_rgb: Conv2d }) | undefined;
  readonly get_params: Conv2d;
  readonly #blocks: EncoderBlock[] = [];

  constructor(config: PCTNetConfig) {
    super();
    this.config = config;
    const n = pctParamCount(config.transform, config.affine);
    if (config.backbone === 'ViT') {
      this.encoder = this.module('encoder', new VitEncoder(n));
      this.decoder = undefined;
      this.get_params = this.module('get_params', new Conv2d(n, n, 1));
      return;
    }
    const widths = Array.from({ length: config.depth }, (_, i) => Math.min(config.ch * 2 ** i, config.maxChannels));
    const encoder = new Module() as PCTNet['encoder'];
    const connected = new Module();
    widths.forEach((w, i) => {
      const block = new EncoderBlock(i === 0 ? 4 : widths[i - 1]!, w, i >= config.batchnormFrom);
      this.#blocks.push(i < 2 ? encoder.module(`block${i}`, block) : connected.module(`block${i}`, block));
    });
    encoder.blocks_connected = encoder.module('blocks_connected', connected);
    this.encoder = this.module('encoder', encoder);
    const decoder = new Module() as NonNullable<PCTNet['decoder']>;
    const ups = new ModuleList<UpBlock>();
    for (let i = 0; i < config.depth - 1; i++) {
      const [inC, outC] = [widths[config.depth - 1 - i]!, widths[config.depth - 2 - i]!];
      ups.push(new UpBlock(inC, outC, true, i >= config.attendFrom, config.attentionMidK));
    }
    decoder.up_blocks = decoder.module('up_blocks', ups);
    decoder.to_rgb = decoder.module('to_rgb', new Conv2d(widths[0]!, 3, 1));
    decoder.conv_attention = decoder.module('conv_attention', new Conv2d(widths[0]!, 1, 1));
    this.decoder = this.module('decoder', decoder);
    this.get_params = this.module('get_params', new Conv2d(widths[0]!, n, 1));
  }

  /** A folder with config.json (CNN or ViT, as its backbone_type says) and model.safetensors (the reference's state_dict; F16 read as f32), in eval mode. */
  static fromPretrained(dir: string): PCTNet {
    return fromFolder(dir, (config) => new PCTNet(pctNetConfig(config.config, config.source)));
  }


  /** The CNN decoder's features [B, ch, h, w] of the normalised low-resolution image and its mask. */
  #features(image: Tensor, mask: Tensor, capture?: Capture): Tensor {
    return tidy(() => {
      let x = concat([image, mask], 1);
      const skips: Tensor[] = [];
      const names = ['encoder.block0', 'encoder.block1', ...this.#blocks.slice(2).map((_, i) => `encoder.blocks_connected.block${i + 2}`)];
      this.#blocks.forEach((b, i) => {
        const y = keep(capture, names[i]!, b.convs.forward(x));
        skips.push(y);
        x = i < this.#blocks.length - 1 ? maxPool2d(y, { kernelSize: 2, stride: 2 }) : y;
      });
      let o = skips.pop()!;
      [...this.decoder!.up_blocks].forEach((up, i) => {
        let c = concat([skips.pop()!, up.upconv.forward(o)], 1);
        if (up.attention) c = keep(capture, `decoder.up_blocks.${i}.attention`, up.attention.forward(c, mask, capture && ((n, t) => capture(`decoder.up_blocks.${i}.attention.${n}`, t))));
        o = keep(capture, `decoder.up_blocks.${i}`, up.convs.forward(c));
      });
      return keep(capture, 'decoder', o);
    });
  }

  /**
   * The official forward: image and mask at low resolution (image normalised as the config says; CNN: h, w divisible
   * by 2^(depth−1); ViT: square, divisible by 4), imageFullres at any size; PCT on the (normalised) images, blended by
   * the predicted attention (CNN) or the mask (ViT: maskFullres at full resolution).
   */
  forward(image: Tensor, imageFullres: Tensor, mask: Tensor, maskFullres?: Tensor, { capture, alignCorners = false }: PCTNetForwardOptions = {}): PCTNetOutput {
    const [B, , h, w] = image.shape as [number, number, number, number];
    const vit = this.config.backbone === 'ViT';
    const k = vit ? 4 : 2 ** (this.config.depth - 1);
    if (image.rank !== 4 || image.shape[1] !== 3 || h % k || w % k || (vit && h !== w)) {
      throw new Error(`PCTNet.forward: image has shape [${image.shape.join(', ')}], expected [B, 3, h, w] with h and w divisible by ${k}${vit ? ' and h = w' : ''}`);
    }
    if (mask.rank !== 4 || mask.shape[0] !== B || mask.shape[1] !== 1 || mask.shape[2] !== h || mask.shape[3] !== w) throw new Error(`PCTNet.forward: mask has shape [${mask.shape.join(', ')}], expected [${B}, 1, ${h}, ${w}] (the low-resolution image's size)`);
    if (imageFullres.rank !== 4 || imageFullres.shape[0] !== B || imageFullres.shape[1] !== 3) throw new Error(`PCTNet.forward: imageFullres has shape [${imageFullres.shape.join(', ')}], expected [${B}, 3, H, W]`);
    const size: [number, number] = [imageFullres.shape[2]!, imageFullres.shape[3]!];
    if (vit && (!maskFullres || maskFullres.shape.join() !== [B, 1, ...size].join())) throw new Error(`PCTNet.forward: the ViT variant blends with maskFullres [${B}, 1, ${size.join(', ')}], got ${maskFullres ? `[${maskFullres.shape.join(', ')}]` : 'none'}`);
    return tidy(() => {
      let params: Tensor, attention: Tensor;
      if (vit) {
        const encoded = keep(capture, 'encoder_output', (this.encoder as VitEncoder).forward(concat([image, mask], 1), capture));
        params = this.get_params.forward(encoded);
        attention = mask.alias();
      } else {
        const feat = this.#features(image, mask, capture);
        attention = sigmoid(mul(this.decoder!.conv_attention.forward(feat), 3));
        params = this.get_params.forward(feat);
      }
      const o: PctOptions = { type: this.config.transform, affine: this.config.affine, clamp: this.config.clamp, normalization: { mean: this.config.mean, std: this.config.std } };
      const blend = (y: Tensor, x: Tensor, a: Tensor) => add(mul(y, a), mul(x, affine(a, -1, 1)));
      const images = blend(pct(image, params, o), image, attention);
      const paramsFullres = interpolate(params, { size, mode: 'bicubic', alignCorners });
      const attentionFullres = vit ? maskFullres! : interpolate(attention, { size, mode: 'bicubic', alignCorners });
      const imagesFullres = blend(pct(imageFullres, paramsFullres, o), imageFullres, attentionFullres);
      return { images, params, attention, imagesFullres, paramsFullres };
    });
  }
}

/** The official MaskWeightedMSE (min_area 1000): Σ (pred − target)² / (C · max(Σ mask, minArea)) per sample, averaged. */
export function maskWeightedMse(pred: Tensor, target: Tensor, mask: Tensor, minArea = 1000): Tensor {
  return tidy(() => {
    const C = pred.shape[1]!;
    const d = sub(pred, target);
    const perSample = sum(mul(d, d), [1, 2, 3]);
    const denom = mul(clamp(sum(mask, [1, 2, 3]), minArea), C);
    return reshape(mean(div(perSample, denom)), []);
  });
}
