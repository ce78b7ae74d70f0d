// diffusers' resnet.py: ResnetBlock2D (with an optional time embedding), Downsample2D, Upsample2D.
// Parameter names follow diffusers' state_dict keys (norm1, conv1, time_emb_proj, norm2, conv2, conv_shortcut;
// downsamplers.0.conv; upsamplers.0.conv).

import { Tensor, tidy } from '../../engine/tensor.ts';
import { add, mul, silu } from '../../kernels/elementwise.ts';
import { interpolate } from '../../kernels/resample.ts';
import { pad, reshape } from '../../kernels/shape.ts';
import { Module } from '../../nn/module.ts';
import { Conv2d, GroupNorm, Linear } from '../../nn/layers.ts';

export interface ResnetBlock2DOptions {
  /** Channels of the time embedding; absent in the VAE (no time_emb_proj). */
  tembChannels?: number;
  groups: number;
  eps: number;
  outputScaleFactor?: number;
}

/** GroupNorm → SiLU → conv3x3 → (+ Linear(SiLU(temb))) → GroupNorm → SiLU → conv3x3, plus the (1x1-projected) input. */
export class ResnetBlock2D extends Module {
  readonly norm1: GroupNorm;
  readonly conv1: Conv2d;
  readonly timeEmbProj: Linear | undefined;
  readonly norm2: GroupNorm;
  readonly conv2: Conv2d;
  readonly convShortcut: Conv2d | undefined;
  readonly outputScaleFactor: number;

  constructor(readonly inChannels: number, readonly outChannels: number, { tembChannels, groups, eps, outputScaleFactor = 1 }: ResnetBlock2DOptions) {
    super();
    this.norm1 = this.module('norm1', new GroupNorm(groups, inChannels, { eps }));
    this.conv1 = this.module('conv1', new Conv2d(inChannels, outChannels, 3, { padding: 1 }));
    this.timeEmbProj = tembChannels ? this.module('time_emb_proj', new Linear(tembChannels, outChannels)) : undefined;
    this.norm2 = this.module('norm2', new GroupNorm(groups, outChannels, { eps }));
    this.conv2 = this.module('conv2', new Conv2d(outChannels, outChannels, 3, { padding: 1 }));
    this.convShortcut = inChannels !== outChannels ? this.module('conv_shortcut', new Conv2d(inChannels, outChannels, 1)) : undefined;
    this.outputScaleFactor = outputScaleFactor;
  }

  /** x [N, Cin, H, W], temb [N, tembChannels] (when the block has a time projection) → [N, Cout, H, W]. */
  forward(x: Tensor, temb?: Tensor): Tensor {
    return tidy(() => {
      let h = this.conv1.forward(silu(this.norm1.forward(x)));
      if (this.timeEmbProj) {
        if (!temb) throw new Error('ResnetBlock2D: this block has time_emb_proj and needs a time embedding');
        const t = this.timeEmbProj.forward(silu(temb));
        h = add(h, reshape(t, [t.shape[0]!, this.outChannels, 1, 1]));
      }
      h = this.conv2.forward(silu(this.norm2.forward(h)));
      const out = add(this.convShortcut ? this.convShortcut.forward(x) : x, h);
      return this.outputScaleFactor === 1 ? out : mul(out, 1 / this.outputScaleFactor);
    });
  }
}

/** Stride-2 conv3x3 (`conv`). padding 0 means diffusers' asymmetric pad (0, 1, 0, 1) first (the VAE encoder). */
export class Downsample2D extends Module {
  readonly conv: Conv2d;
  constructor(channels: number, outChannels: number, readonly padding: number) {
    super();
    this.conv = this.module('conv', new Conv2d(channels, outChannels, 3, { stride: 2, padding }));
  }

  forward(x: Tensor): Tensor {
    if (this.padding !== 0) return this.conv.forward(x);
    return tidy(() => this.conv.forward(pad(x, [0, 1, 0, 1])));
  }
}

/** Nearest upsampling (x2, or to `size` when the skip connection's size is odd) then conv3x3 (`conv`). */
export class Upsample2D extends Module {
  readonly conv: Conv2d;
  constructor(channels: number, outChannels: number) {
    super();
    this.conv = this.module('conv', new Conv2d(channels, outChannels, 3, { padding: 1 }));
  }

  forward(x: Tensor, size?: readonly [number, number]): Tensor {
    return tidy(() => this.conv.forward(interpolate(x, size ? { size: [size[0], size[1]] } : { scaleFactor: 2 })));
  }
}
