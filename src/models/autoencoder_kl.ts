// diffusers' AutoencoderKL (SD's VAE): encode an image to a diagonal Gaussian over latents (mean, logvar),
// sample it from a seed on the GPU, decode latents to an image. Config-driven from its config.json; parameter
// names are its state_dict() keys. scaling_factor is read from the config but applied by the caller (pipeline).

import { Tensor, shapeStr, tidy } from '../engine/tensor.ts';
import { add, clamp, exp, mul } from '../kernels/elementwise.ts';
import { type RandomOptions, randn } from '../kernels/random.ts';
import { split } from '../kernels/shape.ts';
import { Module } from '../nn/module.ts';
import { Conv2d } from '../nn/layers.ts';
import { type WeightsOptions, fromFolder } from './diffusers/loading.ts';
import type { ConfigReader } from './pretrained.ts';
import { Decoder, Encoder } from './diffusers/vae.ts';

export interface AutoencoderKLConfig {
  in_channels: number;
  out_channels: number;
  block_out_channels: number[];
  layers_per_block: number;
  latent_channels: number;
  norm_num_groups: number;
  scaling_factor: number;
  use_quant_conv: boolean;
  use_post_quant_conv: boolean;
  mid_block_add_attention: boolean;
}

/** The encoder's posterior: mean and log-variance [B, latent_channels, h, w]. */
export interface LatentDistribution {
  mean: Tensor;
  logvar: Tensor;
}

/** Reads and checks a diffusers AutoencoderKL config (errors name the file and key). */
export function autoencoderConfig(cfg: ConfigReader): AutoencoderKLConfig {
  const channels = cfg.ints('block_out_channels', [64]);
  for (const key of ['down_block_types', 'up_block_types'] as const) {
    const want = key === 'down_block_types' ? 'DownEncoderBlock2D' : 'UpDecoderBlock2D';
    const types = cfg.strings(key, [want]);
    if (types.length !== channels.length) cfg.fail(key, `a list of ${channels.length} block types (one per block_out_channels entry)`);
    types.forEach((t, i) => {
      if (t !== want) throw new Error(`${cfg.source}: ${key}[${i}] is '${t}', an unknown block type (supported: ${want})`);
    });
  }
  cfg.expectDefaults({ act_fn: ['silu', 'swish'], shift_factor: [], latents_mean: [], latents_std: [] });
  const groups = cfg.int('norm_num_groups', 32, 1);
  channels.forEach((c) => {
    if (c % groups) cfg.fail('norm_num_groups', `a divisor of every block_out_channels entry (${c})`);
  });
  return {
    in_channels: cfg.int('in_channels', 3, 1),
    out_channels: cfg.int('out_channels', 3, 1),
    block_out_channels: channels,
    layers_per_block: cfg.int('layers_per_block', 1, 1),
    latent_channels: cfg.int('latent_channels', 4, 1),
    norm_num_groups: groups,
    scaling_factor: cfg.number('scaling_factor', 0.18215),
    use_quant_conv: cfg.bool('use_quant_conv', true),
    use_post_quant_conv: cfg.bool('use_post_quant_conv', true),
    mid_block_add_attention: cfg.bool('mid_block_add_attention', true),
  };
}

/** The diffusers config.json of a config (as `AutoencoderKL.from_pretrained` reads it); `sampleSize` is the training image size. */
export function autoencoderConfigJson(c: AutoencoderKLConfig, sampleSize?: number): Record<string, unknown> {
  return {
    _class_name: 'AutoencoderKL',
    _diffusers_version: '0.31.0',
    in_channels: c.in_channels,
    out_channels: c.out_channels,
    down_block_types: c.block_out_channels.map(() => 'DownEncoderBlock2D'),
    up_block_types: c.block_out_channels.map(() => 'UpDecoderBlock2D'),
    block_out_channels: c.block_out_channels,
    layers_per_block: c.layers_per_block,
    act_fn: 'silu',
    latent_channels: c.latent_channels,
    norm_num_groups: c.norm_num_groups,
    ...(sampleSize !== undefined && { sample_size: sampleSize }),
    scaling_factor: c.scaling_factor,
    use_quant_conv: c.use_quant_conv,
    use_post_quant_conv: c.use_post_quant_conv,
    mid_block_add_attention: c.mid_block_add_attention,
  };
}

export class AutoencoderKL extends Module {
  readonly config: AutoencoderKLConfig;
  readonly encoder: Encoder;
  readonly decoder: Decoder;
  readonly quantConv: Conv2d | undefined;
  readonly postQuantConv: Conv2d | undefined;

  /** A model with freshly initialised weights; parameters do not require gradients. */
  constructor(config: AutoencoderKLConfig) {
    super();
    const c = (this.config = config);
    const coder = { blockOutChannels: c.block_out_channels, layersPerBlock: c.layers_per_block, groups: c.norm_num_groups, midBlockAddAttention: c.mid_block_add_attention };
    const z = c.latent_channels;
    this.encoder = this.module('encoder', new Encoder(c.in_channels, z, coder));
    this.decoder = this.module('decoder', new Decoder(z, c.out_channels, coder));
    this.quantConv = c.use_quant_conv ? this.module('quant_conv', new Conv2d(2 * z, 2 * z, 1)) : undefined;
    this.postQuantConv = c.use_post_quant_conv ? this.module('post_quant_conv', new Conv2d(z, z, 1)) : undefined;
    this.requireGrad(false);
  }

  /** The latents' scale used by the pipeline (latents · scaling_factor enter the UNet). */
  get scalingFactor(): number {
    return this.config.scaling_factor;
  }

  /** Loads a diffusers `vae` folder: config.json + (diffusion_pytorch_model|model)[.fp16].safetensors;
   * `{ dtype: 'f16' }` keeps the Linear/Conv weights in f16 on the GPU (inference). */
  static fromPretrained(dir: string, options: WeightsOptions = {}): AutoencoderKL {
    return fromFolder(dir, (config) => new AutoencoderKL(autoencoderConfig(config)), options);
  }

  /** image [B, in_channels, H, W] in [-1, 1] → the posterior; logvar clamped to [-30, 20] as diffusers. */
  encode(image: Tensor): LatentDistribution {
    const c = this.config;
    if (image.rank !== 4 || image.shape[1] !== c.in_channels) {
      throw new Error(`AutoencoderKL.encode: image ${shapeStr(image.shape)} must be [batch, ${c.in_channels}, height, width]`);
    }
    return tidy(() => {
      let moments = this.encoder.forward(image);
      if (this.quantConv) moments = this.quantConv.forward(moments);
      const [mean, logvar] = split(moments, c.latent_channels, 1) as [Tensor, Tensor];
      return { mean, logvar: clamp(logvar, -30, 20) };
    });
  }

  /** A draw mean + exp(logvar / 2)·ε with ε ~ N(0, 1) from the GPU generator at `seed` (and `offset`). */
  sample({ mean, logvar }: LatentDistribution, random: RandomOptions): Tensor {
    return tidy(() => add(mean, mul(exp(mul(logvar, 0.5)), randn(mean.shape, random))));
  }

  /** latents [B, latent_channels, h, w] (unscaled: divide the pipeline's by scaling_factor first) → image. */
  decode(latents: Tensor): Tensor {
    const c = this.config;
    if (latents.rank !== 4 || latents.shape[1] !== c.latent_channels) {
      throw new Error(`AutoencoderKL.decode: latents ${shapeStr(latents.shape)} must be [batch, ${c.latent_channels}, height, width]`);
    }
    return tidy(() => this.decoder.forward(this.postQuantConv ? this.postQuantConv.forward(latents) : latents));
  }
}
