// diffusers' UNet2DConditionModel (SD 1.x / 2.x): config-driven from its config.json, parameters named as its
// state_dict() keys. time_proj → time_embedding; conv_in; down blocks (their outputs kept as skips); mid
// block; up blocks (consuming the skips); conv_norm_out → SiLU → conv_out.

import { type Shape, Tensor, shapeStr, tidy } from '../engine/tensor.ts';
import { affine, cast, silu } from '../kernels/elementwise.ts';
import { expand, reshape } from '../kernels/shape.ts';
import { Module, ModuleList } from '../nn/module.ts';
import { Conv2d, GroupNorm } from '../nn/layers.ts';
import type { AttentionCapture } from './attention_capture.ts';
import { Attention } from './diffusers/attention.ts';
import { TimestepEmbedding, Timesteps } from './diffusers/embeddings.ts';
import { type WeightsOptions, fromFolder } from './diffusers/loading.ts';
import type { ConfigReader } from './pretrained.ts';
import { CrossAttnDownBlock2D, CrossAttnUpBlock2D, DownBlock2D, UNetMidBlock2DCrossAttn, UpBlock2D } from './diffusers/unet_blocks.ts';

/** The config keys this implementation reads (diffusers names and defaults). */
export interface UNet2DConditionConfig {
  in_channels: number;
  out_channels: number;
  center_input_sample: boolean;
  flip_sin_to_cos: boolean;
  freq_shift: number;
  down_block_types: string[];
  mid_block_type: string | null;
  up_block_types: string[];
  block_out_channels: number[];
  layers_per_block: number[];
  /** Transformer depth after each resnet of each down block ([block][layer]). */
  transformer_layers_per_block: number[][];
  /** The same for each up block, in up order ([block][layer], layers_per_block + 1 per block). */
  reverse_transformer_layers_per_block: number[][];
  /** The same for the mid block's one transformer. */
  mid_transformer_layers: number;
  /** The default latent size [height, width] (an int in most configs). */
  sample_size: [number, number];
  downsample_padding: number;
  mid_block_scale_factor: number;
  norm_num_groups: number | null;
  norm_eps: number;
  cross_attention_dim: number[];
  /** Heads per block (diffusers: num_attention_heads, falling back to attention_head_dim, which SD 1.x uses for it). */
  num_attention_heads: number[];
  only_cross_attention: boolean[];
  use_linear_projection: boolean;
  time_embed_dim: number;
  conv_in_kernel: number;
  conv_out_kernel: number;
}

export interface UNetForwardOptions {
  /** Receives the selected attention probabilities of this forward (see AttentionCapture). */
  capture?: AttentionCapture;
}

const downTypes = ['CrossAttnDownBlock2D', 'DownBlock2D'];
const upTypes = ['CrossAttnUpBlock2D', 'UpBlock2D'];

/** Reads and checks a diffusers UNet2DConditionModel config (errors name the file and key). */
export function unetConfig(cfg: ConfigReader): UNet2DConditionConfig {
  // missing keys take diffusers' defaults (SD 1.x's layout)
  const down = cfg.strings('down_block_types', ['CrossAttnDownBlock2D', 'CrossAttnDownBlock2D', 'CrossAttnDownBlock2D', 'DownBlock2D']);
  const n = down.length;
  down.forEach((t, i) => {
    if (!downTypes.includes(t)) throw new Error(`${cfg.source}: down_block_types[${i}] is '${t}', an unknown block type (supported: ${downTypes.join(', ')})`);
  });
  const up = cfg.strings('up_block_types', ['UpBlock2D', 'CrossAttnUpBlock2D', 'CrossAttnUpBlock2D', 'CrossAttnUpBlock2D']);
  if (up.length !== n) cfg.fail('up_block_types', `a list of ${n} block types (as many as down_block_types)`);
  up.forEach((t, i) => {
    if (!upTypes.includes(t)) throw new Error(`${cfg.source}: up_block_types[${i}] is '${t}', an unknown block type (supported: ${upTypes.join(', ')})`);
  });
  const mid = cfg.config.mid_block_type === undefined ? 'UNetMidBlock2DCrossAttn' : cfg.config.mid_block_type;
  if (mid !== null && mid !== 'UNetMidBlock2DCrossAttn') {
    throw new Error(`${cfg.source}: mid_block_type is ${JSON.stringify(mid)}, an unknown block type (supported: UNetMidBlock2DCrossAttn, null)`);
  }
  const channels = cfg.ints('block_out_channels', [320, 640, 1280, 1280]);
  if (channels.length !== n) cfg.fail('block_out_channels', `a list of ${n} channel counts (one per down block)`);
  cfg.expectDefaults({
    class_embed_type: [], addition_embed_type: [], encoder_hid_dim: [], encoder_hid_dim_type: [], time_cond_proj_dim: [], num_class_embeds: [],
    dual_cross_attention: [false], time_embedding_type: ['positional'], resnet_time_scale_shift: ['default'], attention_type: ['default'],
    act_fn: ['silu', 'swish'], time_embedding_act_fn: [], timestep_post_act: [], cross_attention_norm: [], resnet_skip_time_act: [false],
    resnet_out_scale_factor: [1], class_embeddings_concat: [false],
  });
  // diffusers: num_attention_heads = num_attention_heads or attention_head_dim (SD 1.x configs name the head count so)
  const heads = cfg.has('num_attention_heads') ? cfg.perBlock('num_attention_heads', n) : cfg.perBlock('attention_head_dim', n, 8);
  if (cfg.config.norm_num_groups === null) throw new Error(`${cfg.source}: "norm_num_groups": null (no output norm) is not supported`);
  const groups = cfg.int('norm_num_groups', 32, 1);
  const layers = cfg.perBlock('layers_per_block', n, 2);
  const depths = transformerDepths(cfg, layers);
  const c: UNet2DConditionConfig = {
    in_channels: cfg.int('in_channels', 4, 1),
    out_channels: cfg.int('out_channels', 4, 1),
    center_input_sample: cfg.bool('center_input_sample', false),
    flip_sin_to_cos: cfg.bool('flip_sin_to_cos', true),
    freq_shift: cfg.number('freq_shift', 0),
    down_block_types: down,
    mid_block_type: mid,
    up_block_types: up,
    block_out_channels: channels,
    layers_per_block: layers,
    transformer_layers_per_block: depths.down,
    reverse_transformer_layers_per_block: depths.up,
    mid_transformer_layers: depths.mid,
    sample_size: cfg.intOrPair('sample_size', 64),
    downsample_padding: cfg.int('downsample_padding', 1),
    mid_block_scale_factor: cfg.number('mid_block_scale_factor', 1),
    norm_num_groups: groups,
    norm_eps: cfg.number('norm_eps', 1e-5),
    cross_attention_dim: cfg.perBlock('cross_attention_dim', n, 1280),
    num_attention_heads: heads,
    only_cross_attention: cfg.perBlockBool('only_cross_attention', n, false),
    use_linear_projection: cfg.bool('use_linear_projection', false),
    time_embed_dim: cfg.has('time_embedding_dim') ? cfg.int('time_embedding_dim', undefined, 1) : channels[0]! * 4,
    conv_in_kernel: cfg.int('conv_in_kernel', 3, 1),
    conv_out_kernel: cfg.int('conv_out_kernel', 3, 1),
  };
  channels.forEach((ch, i) => {
    if (ch % heads[i]! !== 0) cfg.fail(cfg.has('num_attention_heads') ? 'num_attention_heads' : 'attention_head_dim', `a head count dividing block_out_channels[${i}] = ${ch} (num_attention_heads, or attention_head_dim in SD 1.x configs)`);
    if (ch % groups !== 0) cfg.fail('norm_num_groups', `a divisor of every block_out_channels entry (${ch})`);
  });
  return c;
}

/**
 * transformer_layers_per_block as diffusers reads it: an int, a list with one int per down block, or (SDXL-style
 * asymmetric UNets) a list of per-layer lists, which then needs reverse_transformer_layers_per_block for the up
 * blocks. Without it the up blocks take the down blocks' depths in reverse; the mid block takes the last's.
 */
function transformerDepths(cfg: ConfigReader, layers: number[]): { down: number[][]; up: number[][]; mid: number } {
  const n = layers.length;
  const key = 'transformer_layers_per_block';
  const v = cfg.config[key] ?? 1;
  const isDepth = (x: unknown) => Number.isInteger(x) && (x as number) >= 1;
  const perLayer = (x: unknown, count: number): number[] | undefined => {
    if (isDepth(x)) return Array<number>(count).fill(x as number);
    if (Array.isArray(x) && x.length === count && x.every(isDepth)) return x as number[];
    return undefined;
  };
  const what = `a positive integer, a list of ${n} of them (one per down block), or a list of ${n} per-layer lists`;
  const blocks = isDepth(v) ? Array<unknown>(n).fill(v) : v;
  if (!Array.isArray(blocks) || blocks.length !== n) cfg.fail(key, what);
  const lists = blocks.map((x, i) => perLayer(x, layers[i]!));
  if (lists.some((l) => !l)) cfg.fail(key, `${what} (block i's list has layers_per_block[i] entries)`);
  const down = lists as number[][];
  const nested = Array.isArray(v) && v.some(Array.isArray);
  const reverse = cfg.config.reverse_transformer_layers_per_block;
  let up: number[][];
  if (reverse === undefined || reverse === null) {
    if (nested) throw new Error(`${cfg.source}: "${key}" lists per-layer depths, which needs "reverse_transformer_layers_per_block" for the up blocks (as diffusers)`);
    up = down.map((d, r) => Array<number>(layers[r]! + 1).fill(d[0]!)).reverse();
  } else {
    const lists = Array.isArray(reverse) && reverse.length === n ? reverse.map((x, i) => perLayer(x, layers[n - 1 - i]! + 1)) : [undefined];
    if (lists.some((l) => !l)) cfg.fail('reverse_transformer_layers_per_block', `a list of ${n} per-layer lists (up block i has layers_per_block + 1 layers)`);
    up = lists as number[][];
  }
  return { down, up, mid: down[n - 1]![0]! };
}

type DownBlock = DownBlock2D | CrossAttnDownBlock2D;
type UpBlock = UpBlock2D | CrossAttnUpBlock2D;

export class UNet2DConditionModel extends Module {
  readonly config: UNet2DConditionConfig;
  readonly timeProj: Timesteps;
  readonly timeEmbedding: TimestepEmbedding;
  readonly convIn: Conv2d;
  readonly downBlocks: ModuleList<DownBlock>;
  readonly midBlock: UNetMidBlock2DCrossAttn | undefined;
  readonly upBlocks: ModuleList<UpBlock>;
  readonly convNormOut: GroupNorm;
  readonly convOut: Conv2d;

  /** A model with freshly initialised weights (PyTorch's default init); parameters do not require gradients. */
  constructor(config: UNet2DConditionConfig) {
    super();
    const c = (this.config = config);
    const ch = c.block_out_channels;
    const n = ch.length;
    const groups = c.norm_num_groups!;
    const temb = c.time_embed_dim;
    // diffusers' UNetMidBlock2DCrossAttn takes no only_cross_attention: its transformer always self-attends
    const transformer = (i: number, heads: number, depths: number[], onlyCrossAttention = c.only_cross_attention[i]!) => ({
      heads, dimHead: ch[i]! / heads, depths, crossAttentionDim: c.cross_attention_dim[i]!,
      useLinearProjection: c.use_linear_projection, onlyCrossAttention,
    });
    this.timeProj = this.module('time_proj', new Timesteps(ch[0]!, c.flip_sin_to_cos, c.freq_shift));
    this.timeEmbedding = this.module('time_embedding', new TimestepEmbedding(ch[0]!, temb));
    this.convIn = this.module('conv_in', new Conv2d(c.in_channels, ch[0]!, c.conv_in_kernel, { padding: (c.conv_in_kernel - 1) / 2 }));

    this.downBlocks = this.module('down_blocks', new ModuleList<DownBlock>(c.down_block_types.map((type, i) => {
      const o = {
        numLayers: c.layers_per_block[i]!, tembChannels: temb, groups, eps: c.norm_eps, addDownsample: i < n - 1, downsamplePadding: c.downsample_padding,
        transformer: type === 'CrossAttnDownBlock2D' ? transformer(i, c.num_attention_heads[i]!, c.transformer_layers_per_block[i]!) : undefined,
      };
      return type === 'CrossAttnDownBlock2D' ? new CrossAttnDownBlock2D(i === 0 ? ch[0]! : ch[i - 1]!, ch[i]!, o) : new DownBlock2D(i === 0 ? ch[0]! : ch[i - 1]!, ch[i]!, o);
    })));

    this.midBlock = c.mid_block_type
      ? this.module('mid_block', new UNetMidBlock2DCrossAttn(ch[n - 1]!, {
        numLayers: 1, tembChannels: temb, groups, eps: c.norm_eps, outputScaleFactor: c.mid_block_scale_factor,
        transformer: transformer(n - 1, c.num_attention_heads[n - 1]!, [c.mid_transformer_layers], false),
      }))
      : undefined;

    // The up path mirrors the down path: block i of the up path pairs with down block n-1-i.
    this.upBlocks = this.module('up_blocks', new ModuleList<UpBlock>(c.up_block_types.map((type, i) => {
      const r = n - 1 - i;
      const o = {
        numLayers: c.layers_per_block[r]! + 1, tembChannels: temb, groups, eps: c.norm_eps, addUpsample: i < n - 1,
        transformer: type === 'CrossAttnUpBlock2D' ? transformer(r, c.num_attention_heads[r]!, c.reverse_transformer_layers_per_block[i]!) : undefined,
      };
      const args = [ch[Math.max(r - 1, 0)]!, ch[Math.min(r + 1, n - 1)]!, ch[r]!, o] as const;
      return type === 'CrossAttnUpBlock2D' ? new CrossAttnUpBlock2D(...args) : new UpBlock2D(...args);
    })));

    this.convNormOut = this.module('conv_norm_out', new GroupNorm(groups, ch[0]!, { eps: c.norm_eps }));
    this.convOut = this.module('conv_out', new Conv2d(ch[0]!, c.out_channels, c.conv_out_kernel, { padding: (c.conv_out_kernel - 1) / 2 }));
    for (const [name, m] of this.namedModules()) if (m instanceof Attention) m.path = name;
    this.requireGrad(false);
  }

  /** Loads a diffusers `unet` folder: config.json + (diffusion_pytorch_model|model)[.fp16].safetensors;
   * `{ dtype: 'f16' }` keeps the Linear/Conv weights in f16 on the GPU (inference). */
  static fromPretrained(dir: string, options: WeightsOptions = {}): UNet2DConditionModel {
    return fromFolder(dir, (config) => new UNet2DConditionModel(unetConfig(config)), options);
  }

  /**
   * The noise prediction for `sample` [B, in_channels, H, W] at `timestep` (one for all, or one per batch
   * element) conditioned on `encoderHiddenStates` [B, L, cross_attention_dim]; returns [B, out_channels, H, W].
   */
  forward(sample: Tensor, timestep: number | readonly number[] | Tensor, encoderHiddenStates: Tensor, { capture }: UNetForwardOptions = {}): Tensor {
    const c = this.config;
    const [B, C, H, W] = sample.shape;
    if (sample.rank !== 4 || C !== c.in_channels) {
      throw new Error(`UNet2DConditionModel.forward: sample ${shapeStr(sample.shape)} must be [batch, ${c.in_channels}, height, width]`);
    }
    const cross = c.cross_attention_dim[0]!;
    if (encoderHiddenStates.rank !== 3 || encoderHiddenStates.shape[0] !== B || encoderHiddenStates.shape[2] !== cross) {
      throw new Error(`UNet2DConditionModel.forward: encoderHiddenStates ${shapeStr(encoderHiddenStates.shape)} must be [${B}, tokens, ${cross}]`);
    }
    const levels = 2 ** (c.block_out_channels.length - 1);
    if (H! < levels || W! < levels) {
      throw new Error(`UNet2DConditionModel.forward: sample ${H}x${W} is smaller than the ${levels}x downsampling of ${c.block_out_channels.length} blocks`);
    }
    return tidy(() => {
      const t = timestepTensor(timestep, B!);
      const emb = this.timeEmbedding.forward(this.timeProj.forward(t));
      let h = this.convIn.forward(c.center_input_sample ? affine(sample, 2, -1) : sample);
      const skips: Tensor[] = [h];
      for (const block of this.downBlocks) {
        const out = block.forward(h, emb, encoderHiddenStates, capture);
        h = out.hidden;
        skips.push(...out.skips);
      }
      if (this.midBlock) h = this.midBlock.forward(h, emb, encoderHiddenStates, capture);
      for (const block of this.upBlocks) {
        // the upsampler targets the size of the skip the next block takes first (odd sizes round down on the way down)
        const next = skips[skips.length - 1 - block.resnets.length];
        const size = next ? ([next.shape[2]!, next.shape[3]!] as const) : undefined;
        h = block.forward(h, skips, emb, encoderHiddenStates, size, capture);
      }
      return this.convOut.forward(silu(this.convNormOut.forward(h)));
    });
  }
}

/** The timestep(s) as a [batch] tensor (a scalar or one-element input is broadcast). */
function timestepTensor(timestep: number | readonly number[] | Tensor, batch: number): Tensor {
  if (timestep instanceof Tensor) {
    const t = timestep.dtype === 'f32' ? timestep : cast(timestep, 'f32');
    if (timestep.size === batch && timestep.rank <= 1) return reshape(t, [batch]);
    if (timestep.size === 1) return expand(reshape(t, [1]), [batch]);
    throw new Error(`UNet2DConditionModel.forward: timestep ${shapeStr(timestep.shape)} must be a scalar, [1] or [${batch}]`);
  }
  const list = typeof timestep === 'number' ? [timestep] : [...timestep];
  if (list.length !== 1 && list.length !== batch) throw new Error(`UNet2DConditionModel.forward: ${list.length} timesteps for a batch of ${batch}`);
  const shape: Shape = [batch];
  return Tensor.fromArray(Float32Array.from({ length: batch }, (_, i) => list[list.length === 1 ? 0 : i]!), shape);
}
