// diffusers' unet_2d_blocks.py: the UNet's down, mid and up blocks (with and without cross-attention
// transformers) and the VAE's encoder/decoder blocks. Keys: resnets.i, attentions.i, downsamplers.0,
// upsamplers.0.

import { Tensor, tidy } from '../../engine/tensor.ts';
import { concat } from '../../kernels/shape.ts';
import { Module, ModuleList } from '../../nn/module.ts';
import type { AttentionCapture } from '../attention_capture.ts';
import { Attention } from './attention.ts';
import { Downsample2D, ResnetBlock2D, Upsample2D } from './resnet.ts';
import { Transformer2DModel, type Transformer2DOptions } from './transformer_2d.ts';

export interface BlockOptions {
  numLayers: number;
  /** Time-embedding width; absent in the VAE. */
  tembChannels?: number;
  groups: number;
  eps: number;
  /** The cross-attention transformers of Cross* blocks; `depths[i]`: transformer blocks after resnet i. */
  transformer?: Omit<Transformer2DOptions, 'normNumGroups' | 'numLayers'> & { depths: number[] };
}

/** What a down block hands on: its output and the skip connections for the up path. */
export interface DownOutput {
  hidden: Tensor;
  skips: Tensor[];
}

function transformers(n: number, channels: number, o: BlockOptions): ModuleList<Transformer2DModel> | undefined {
  if (!o.transformer) return undefined;
  const { depths, ...t } = o.transformer;
  return new ModuleList(Array.from({ length: n }, (_, i) => new Transformer2DModel(channels, { ...t, numLayers: depths[i]!, normNumGroups: o.groups })));
}

/** DownBlock2D: resnets, then an optional stride-2 downsampler; every output is a skip connection. */
export class DownBlock2D extends Module {
  readonly resnets: ModuleList<ResnetBlock2D>;
  readonly attentions: ModuleList<Transformer2DModel> | undefined;
  readonly downsamplers: ModuleList<Downsample2D> | undefined;

  constructor(inChannels: number, outChannels: number, o: BlockOptions & { addDownsample: boolean; downsamplePadding: number }) {
    super();
    const res = { tembChannels: o.tembChannels, groups: o.groups, eps: o.eps };
    this.resnets = this.module('resnets', new ModuleList(Array.from({ length: o.numLayers }, (_, i) => new ResnetBlock2D(i === 0 ? inChannels : outChannels, outChannels, res))));
    const attn = transformers(o.numLayers, outChannels, o);
    this.attentions = attn && this.module('attentions', attn);
    this.downsamplers = o.addDownsample ? this.module('downsamplers', new ModuleList([new Downsample2D(outChannels, outChannels, o.downsamplePadding)])) : undefined;
  }

  forward(x: Tensor, temb?: Tensor, context?: Tensor, capture?: AttentionCapture): DownOutput {
    return tidy(() => {
      const skips: Tensor[] = [];
      let h = x;
      for (let i = 0; i < this.resnets.length; i++) {
        h = this.resnets.at(i).forward(h, temb);
        if (this.attentions) h = this.attentions.at(i).forward(h, needContext(context), capture);
        skips.push(h);
      }
      if (this.downsamplers) {
        h = this.downsamplers.at(0).forward(h);
        skips.push(h);
      }
      return { hidden: h, skips };
    });
  }
}

/** CrossAttnDownBlock2D: DownBlock2D with a Transformer2DModel after each resnet. */
export class CrossAttnDownBlock2D extends DownBlock2D {}

/** DownEncoderBlock2D (VAE): DownBlock2D without time embedding, with the asymmetric-padding downsampler. */
export class DownEncoderBlock2D extends DownBlock2D {}

function needContext(context: Tensor | undefined): Tensor {
  if (!context) throw new Error('a cross-attention block needs encoder hidden states');
  return context;
}

/**
 * UpBlock2D: each resnet takes the hidden state concatenated with the next skip connection (from the end),
 * then an optional nearest x2 upsampler (to the next skip's size).
 */
export class UpBlock2D extends Module {
  readonly resnets: ModuleList<ResnetBlock2D>;
  readonly attentions: ModuleList<Transformer2DModel> | undefined;
  readonly upsamplers: ModuleList<Upsample2D> | undefined;

  constructor(inChannels: number, prevOutputChannels: number, outChannels: number, o: BlockOptions & { addUpsample: boolean }) {
    super();
    const res = { tembChannels: o.tembChannels, groups: o.groups, eps: o.eps };
    const n = o.numLayers;
    this.resnets = this.module('resnets', new ModuleList(Array.from({ length: n }, (_, i) => {
      const skip = i === n - 1 ? inChannels : outChannels;
      return new ResnetBlock2D((i === 0 ? prevOutputChannels : outChannels) + skip, outChannels, res);
    })));
    const attn = transformers(n, outChannels, o);
    this.attentions = attn && this.module('attentions', attn);
    this.upsamplers = o.addUpsample ? this.module('upsamplers', new ModuleList([new Upsample2D(outChannels, outChannels)])) : undefined;
  }

  /** Consumes `resnets.length` skips from the end of `skips`; `upsampleSize` is the size the upsampler targets. */
  forward(x: Tensor, skips: Tensor[], temb?: Tensor, context?: Tensor, upsampleSize?: readonly [number, number], capture?: AttentionCapture): Tensor {
    return tidy(() => {
      let h = x;
      for (let i = 0; i < this.resnets.length; i++) {
        const skip = skips.pop();
        if (!skip) throw new Error('UpBlock2D: ran out of skip connections (down and up blocks do not match)');
        h = this.resnets.at(i).forward(concat([h, skip], 1), temb);
        if (this.attentions) h = this.attentions.at(i).forward(h, needContext(context), capture);
      }
      return this.upsamplers ? this.upsamplers.at(0).forward(h, upsampleSize) : h;
    });
  }
}

/** CrossAttnUpBlock2D: UpBlock2D with a Transformer2DModel after each resnet. */
export class CrossAttnUpBlock2D extends UpBlock2D {}

/** UNetMidBlock2DCrossAttn: resnet, then (transformer, resnet) per layer. */
export class UNetMidBlock2DCrossAttn extends Module {
  readonly resnets: ModuleList<ResnetBlock2D>;
  readonly attentions: ModuleList<Transformer2DModel>;

  constructor(channels: number, o: BlockOptions & { outputScaleFactor: number; transformer: NonNullable<BlockOptions['transformer']> }) {
    super();
    const res = { tembChannels: o.tembChannels, groups: o.groups, eps: o.eps, outputScaleFactor: o.outputScaleFactor };
    this.resnets = this.module('resnets', new ModuleList(Array.from({ length: o.numLayers + 1 }, () => new ResnetBlock2D(channels, channels, res))));
    this.attentions = this.module('attentions', transformers(o.numLayers, channels, o)!);
  }

  forward(x: Tensor, temb: Tensor, context: Tensor, capture?: AttentionCapture): Tensor {
    return tidy(() => {
      let h = this.resnets.at(0).forward(x, temb);
      for (let i = 0; i < this.attentions.length; i++) {
        h = this.attentions.at(i).forward(h, context, capture);
        h = this.resnets.at(i + 1).forward(h, temb);
      }
      return h;
    });
  }
}

/** UNetMidBlock2D (VAE): resnet, single-head self-attention over H·W with group_norm and residual, resnet. */
export class UNetMidBlock2D extends Module {
  readonly resnets: ModuleList<ResnetBlock2D>;
  readonly attentions: ModuleList<Attention> | undefined;

  constructor(channels: number, o: { groups: number; eps: number; addAttention: boolean; attentionHeadDim?: number }) {
    super();
    const res = { groups: o.groups, eps: o.eps };
    this.resnets = this.module('resnets', new ModuleList([new ResnetBlock2D(channels, channels, res), new ResnetBlock2D(channels, channels, res)]));
    const dimHead = o.attentionHeadDim ?? channels;
    this.attentions = o.addAttention
      ? this.module('attentions', new ModuleList([new Attention(channels, { heads: channels / dimHead, dimHead, bias: true, normNumGroups: o.groups, eps: o.eps, residualConnection: true })]))
      : undefined;
  }

  forward(x: Tensor): Tensor {
    return tidy(() => {
      let h = this.resnets.at(0).forward(x);
      if (this.attentions) h = this.attentions.at(0).forward(h);
      return this.resnets.at(1).forward(h);
    });
  }
}

/** UpDecoderBlock2D (VAE): resnets without skips, then an optional upsampler. */
export class UpDecoderBlock2D extends Module {
  readonly resnets: ModuleList<ResnetBlock2D>;
  readonly upsamplers: ModuleList<Upsample2D> | undefined;

  constructor(inChannels: number, outChannels: number, o: { numLayers: number; groups: number; eps: number; addUpsample: boolean }) {
    super();
    const res = { groups: o.groups, eps: o.eps };
    this.resnets = this.module('resnets', new ModuleList(Array.from({ length: o.numLayers }, (_, i) => new ResnetBlock2D(i === 0 ? inChannels : outChannels, outChannels, res))));
    this.upsamplers = o.addUpsample ? this.module('upsamplers', new ModuleList([new Upsample2D(outChannels, outChannels)])) : undefined;
  }

  forward(x: Tensor): Tensor {
    return tidy(() => {
      let h = x;
      for (const r of this.resnets) h = r.forward(h);
      return this.upsamplers ? this.upsamplers.at(0).forward(h) : h;
    });
  }
}
