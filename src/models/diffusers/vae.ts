// diffusers' vae.py: the AutoencoderKL Encoder (image → 2·latent moments) and Decoder (latent → image).

import { Tensor, tidy } from '../../engine/tensor.ts';
import { silu } from '../../kernels/elementwise.ts';
import { Module, ModuleList } from '../../nn/module.ts';
import { Conv2d, GroupNorm } from '../../nn/layers.ts';
import { DownEncoderBlock2D, UNetMidBlock2D, UpDecoderBlock2D } from './unet_blocks.ts';

export interface VaeCoderOptions {
  blockOutChannels: number[];
  layersPerBlock: number;
  groups: number;
  midBlockAddAttention: boolean;
}

const eps = 1e-6;

/** conv_in → DownEncoderBlock2D… → mid block → GroupNorm → SiLU → conv_out (2·outChannels: mean and logvar). */
export class Encoder extends Module {
  readonly convIn: Conv2d;
  readonly downBlocks: ModuleList<DownEncoderBlock2D>;
  readonly midBlock: UNetMidBlock2D;
  readonly convNormOut: GroupNorm;
  readonly convOut: Conv2d;

  constructor(inChannels: number, outChannels: number, { blockOutChannels: ch, layersPerBlock, groups, midBlockAddAttention }: VaeCoderOptions) {
    super();
    const n = ch.length;
    this.convIn = this.module('conv_in', new Conv2d(inChannels, ch[0]!, 3, { padding: 1 }));
    this.downBlocks = this.module('down_blocks', new ModuleList(ch.map((c, i) => new DownEncoderBlock2D(i === 0 ? ch[0]! : ch[i - 1]!, c, {
      numLayers: layersPerBlock, groups, eps, addDownsample: i < n - 1, downsamplePadding: 0,
    }))));
    this.midBlock = this.module('mid_block', new UNetMidBlock2D(ch[n - 1]!, { groups, eps, addAttention: midBlockAddAttention }));
    this.convNormOut = this.module('conv_norm_out', new GroupNorm(groups, ch[n - 1]!, { eps }));
    this.convOut = this.module('conv_out', new Conv2d(ch[n - 1]!, 2 * outChannels, 3, { padding: 1 }));
  }

  forward(x: Tensor): Tensor {
    return tidy(() => {
      let h = this.convIn.forward(x);
      for (const block of this.downBlocks) h = block.forward(h).hidden;
      h = this.midBlock.forward(h);
      return this.convOut.forward(silu(this.convNormOut.forward(h)));
    });
  }
}

/** conv_in → mid block → UpDecoderBlock2D… (layersPerBlock + 1 resnets) → GroupNorm → SiLU → conv_out. */
export class Decoder extends Module {
  readonly convIn: Conv2d;
  readonly midBlock: UNetMidBlock2D;
  readonly upBlocks: ModuleList<UpDecoderBlock2D>;
  readonly convNormOut: GroupNorm;
  readonly convOut: Conv2d;

  constructor(inChannels: number, outChannels: number, { blockOutChannels: ch, layersPerBlock, groups, midBlockAddAttention }: VaeCoderOptions) {
    super();
    const n = ch.length;
    const rev = [...ch].reverse();
    this.convIn = this.module('conv_in', new Conv2d(inChannels, rev[0]!, 3, { padding: 1 }));
    this.midBlock = this.module('mid_block', new UNetMidBlock2D(rev[0]!, { groups, eps, addAttention: midBlockAddAttention }));
    this.upBlocks = this.module('up_blocks', new ModuleList(rev.map((c, i) => new UpDecoderBlock2D(i === 0 ? rev[0]! : rev[i - 1]!, c, {
      numLayers: layersPerBlock + 1, groups, eps, addUpsample: i < n - 1,
    }))));
    this.convNormOut = this.module('conv_norm_out', new GroupNorm(groups, ch[0]!, { eps }));
    this.convOut = this.module('conv_out', new Conv2d(ch[0]!, outChannels, 3, { padding: 1 }));
  }

  forward(z: Tensor): Tensor {
    return tidy(() => {
      let h = this.midBlock.forward(this.convIn.forward(z));
      for (const block of this.upBlocks) h = block.forward(h);
      return this.convOut.forward(silu(this.convNormOut.forward(h)));
    });
  }
}
