// FOPA's heat-map network (Niu et al., "Fast Object Placement Assessment"; reference bcmi's
// FOPA-Fast-Object-Placement-Assessment network/ObPlaNet_simple.py, class ObPlaNet_resnet18, with
// backbone/ResNet.py, network/BaseBlocks.py and network/DynamicModules.py). Two ResNet-18-style encoders, one on
// the background (with an all-zero mask channel) and one on the foreground with its mask; a decoder that
// upsamples the background features with skip additions; two dynamic-kernel fusions (simpleDFN) in which the
// foreground's pooled features become per-sample depthwise 3×3 kernels over the background features; a 2-class
// 1×1 classifier. Channel 1 of the softmax is "plausible placement" at each pixel. Module and parameter names
// are the reference's state_dict keys (including its spelling `gernerate_kernel` and the unused `mask_conv`),
// so a released FOPA.pth converted to safetensors loads 1:1. Widths are configurable; the default is ResNet-18's.

import { Tensor, tidy } from '../engine/tensor.ts';
import { add, relu } from '../kernels/elementwise.ts';
import { conv2d } from '../kernels/conv.ts';
import { adaptiveAvgPool2d, maxPool2d } from '../kernels/pool.ts';
import { interpolate } from '../kernels/resample.ts';
import { concat, reshape } from '../kernels/shape.ts';
import { BatchNorm2d, Conv2d, ReLU, Sequential } from '../nn/layers.ts';
import { Module } from '../nn/module.ts';
import { ConfigReader } from './pretrained.ts';
import { fromFolder } from './diffusers/loading.ts';
import { type Image, pilResize } from '../io/image.ts';

export interface ObPlaNetConfig {
  /** Channels of the four ResNet stages (layer1..layer4); [64, 128, 256, 512] officially. */
  widths: [number, number, number, number];
  /** Size of the dynamic kernels (AdaptiveAvgPool2d(ks) and the depthwise convolution): 3 officially. */
  ks: number;
}

export const obPlaNetResnet18: ObPlaNetConfig = { widths: [64, 128, 256, 512], ks: 3 };

/** The config from a config.json like the reference folder's (`ks`; `widths` is ours, ResNet-18's when absent). */
export function obPlaNetConfig(json: Record<string, unknown>, source = 'config.json'): ObPlaNetConfig {
  const c = new ConfigReader(json, source);
  const widths = c.ints('widths', obPlaNetResnet18.widths);
  if (widths.length !== 4 || widths.some((w) => w < 1)) c.fail('widths', 'four positive channel counts (layer1..layer4)');
  return { widths: widths as ObPlaNetConfig['widths'], ks: c.int('ks', 3, 1) };
}

/** MaxPool2d(3, stride 2, padding 1), as ResNet's stem. */
class MaxPool extends Module {
  forward(x: Tensor): Tensor {
    return maxPool2d(x, { kernelSize: 3, stride: 2, padding: 1 });
  }
}

/** torchvision's BasicBlock: conv3x3(stride) → BN → ReLU → conv3x3 → BN, + identity or downsample, → ReLU. */
class BasicBlock extends Module {
  readonly conv1: Conv2d;
  readonly bn1: BatchNorm2d;
  readonly conv2: Conv2d;
  readonly bn2: BatchNorm2d;
  readonly downsample: Sequential | undefined;

  constructor(inC: number, outC: number, stride: number) {
    super();
    this.conv1 = this.module('conv1', new Conv2d(inC, outC, 3, { stride, padding: 1, bias: false }));
    this.bn1 = this.module('bn1', new BatchNorm2d(outC));
    this.conv2 = this.module('conv2', new Conv2d(outC, outC, 3, { padding: 1, bias: false }));
    this.bn2 = this.module('bn2', new BatchNorm2d(outC));
    if (stride !== 1 || inC !== outC) this.downsample = this.module('downsample', new Sequential([new Conv2d(inC, outC, 1, { stride, bias: false }), new BatchNorm2d(outC)]));
  }

  forward(x: Tensor): Tensor {
    return tidy(() => {
      const h = this.bn2.forward(this.conv2.forward(relu(this.bn1.forward(this.conv1.forward(x)))));
      const skip = this.downsample ? this.downsample.forward(x) : x;
      return relu(add(h, skip));
    });
  }
}

/** A ResNet stage: two BasicBlocks, the first with `stride`. */
function stage(inC: number, outC: number, stride: number): Sequential {
  return new Sequential([new BasicBlock(inC, outC, stride), new BasicBlock(outC, outC, 1)]);
}

/** BaseBlocks.BasicConv2d as ObPlaNet uses it: conv3x3 (no bias) → BN → ReLU, under `basicconv`. */
class BasicConv2d extends Module {
  readonly basicconv: Sequential;
  constructor(inC: number, outC: number) {
    super();
    this.basicconv = this.module('basicconv', new Sequential([new Conv2d(inC, outC, 3, { padding: 1, bias: false }), new BatchNorm2d(outC), new ReLU()]));
  }
  forward(x: Tensor): Tensor {
    return this.basicconv.forward(x);
  }
}

/**
 * DynamicModules.simpleDFN: kernels = gernerate_kernel(AdaptiveAvgPool2d(ks)(y)) [B, C, ks, ks], one per sample and
 * channel; out = fuse(depthwise cross-correlation of x with them, zero padding ks // 2).
 */
class SimpleDFN extends Module {
  readonly gernerate_kernel: Sequential;
  readonly fuse: Conv2d;
  constructor(channels: number, outChannels: number, readonly ks: number) {
    super();
    this.gernerate_kernel = this.module('gernerate_kernel', new Sequential([new Conv2d(channels, channels, 1)]));
    this.fuse = this.module('fuse', new Conv2d(channels, outChannels, 3, { padding: 1 }));
  }

  forward(x: Tensor, y: Tensor, capture?: (name: string, t: Tensor) => void): Tensor {
    return tidy(() => {
      const [B, C, H, W] = x.shape as [number, number, number, number];
      const pooled = adaptiveAvgPool2d(y, this.ks);
      capture?.('pool', pooled);
      const kernel = this.gernerate_kernel.forward(pooled);
      capture?.('gernerate_kernel', kernel);
      const dynamic = reshape(conv2d(reshape(x, [1, B * C, H, W]), reshape(kernel, [B * C, 1, this.ks, this.ks]), undefined, { padding: Math.floor(this.ks / 2), groups: B * C }), [B, C, H, W]);
      capture?.('dynamic', dynamic);
      return this.fuse.forward(dynamic);
    });
  }
}

export interface ObPlaNetOutput {
  /** [N, 2, H', W'] logits (channel 1: plausible placement); H' = 2·⌈H/2⌉, W' likewise. */
  out: Tensor;
  /** [N, widths[3], H', W']: the classifier's input. */
  fuseOut: Tensor;
}

export interface ObPlaNetForwardOptions {
  /** Receives intermediate outputs under the reference's module names (e.g. `bg_encoder8`, `selfdc_16.pool`); not kept. */
  capture?: (name: string, t: Tensor) => void;
}

/** b + a resized bilinearly to b's size (align_corners false): ObPlaNet's upsample_add. */
function upsampleAdd(a: Tensor, b: Tensor): Tensor {
  return add(b, interpolate(a, { size: [b.shape[2]!, b.shape[3]!], mode: 'bilinear', alignCorners: false }));
}

export class ObPlaNet extends Module {
  readonly config: ObPlaNetConfig;
  readonly bg_encoder1: Sequential;
  readonly bg_encoder2: Sequential;
  readonly bg_encoder4: Sequential;
  readonly bg_encoder8: Sequential;
  readonly bg_encoder16: Sequential;
  readonly fg_encoder1: Sequential;
  readonly fg_encoder2: Sequential;
  readonly fg_encoder4: Sequential;
  readonly fg_encoder8: Sequential;
  readonly fg_encoder16: Sequential;
  readonly fg_encoder32: Sequential;
  readonly fg_trans8: Conv2d;
  readonly fg_trans16: Conv2d;
  readonly upconv16: BasicConv2d;
  readonly upconv8: BasicConv2d;
  readonly upconv4: BasicConv2d;
  readonly upconv2: BasicConv2d;
  readonly upconv1: BasicConv2d;
  readonly selfdc_16: SimpleDFN;
  readonly selfdc_8: SimpleDFN;
  readonly classifier: Conv2d;
  /** In the reference's state_dict (and FOPA.pth), never used by its forward. */
  readonly mask_conv: Conv2d;

  constructor(config: ObPlaNetConfig = obPlaNetResnet18) {
    super();
    this.config = config;
    const [w1, w2, w3, w4] = config.widths;
    const stem = () => new Conv2d(4, w1, 7, { stride: 2, padding: 3, bias: false });
    this.bg_encoder1 = this.module('bg_encoder1', new Sequential([stem(), new BatchNorm2d(w1), new ReLU()]));
    this.bg_encoder2 = this.module('bg_encoder2', new Sequential([new MaxPool(), stage(w1, w1, 1)]));
    this.bg_encoder4 = this.module('bg_encoder4', stage(w1, w2, 2));
    this.bg_encoder8 = this.module('bg_encoder8', stage(w2, w3, 2));
    this.bg_encoder16 = this.module('bg_encoder16', stage(w3, w4, 2));
    this.fg_encoder1 = this.module('fg_encoder1', new Sequential([stem()]));
    this.fg_encoder2 = this.module('fg_encoder2', new Sequential([new BatchNorm2d(w1), new ReLU()]));
    this.fg_encoder4 = this.module('fg_encoder4', new Sequential([new MaxPool(), stage(w1, w1, 1)]));
    this.fg_encoder8 = this.module('fg_encoder8', stage(w1, w2, 2));
    this.fg_encoder16 = this.module('fg_encoder16', stage(w2, w3, 2));
    this.fg_encoder32 = this.module('fg_encoder32', stage(w3, w4, 2));
    this.fg_trans8 = this.module('fg_trans8', new Conv2d(w3, w1, 1));
    this.fg_trans16 = this.module('fg_trans16', new Conv2d(w4, w1, 1));
    this.upconv16 = this.module('upconv16', new BasicConv2d(w4, w3));
    this.upconv8 = this.module('upconv8', new BasicConv2d(w3, w2));
    this.upconv4 = this.module('upconv4', new BasicConv2d(w2, w1));
    this.upconv2 = this.module('upconv2', new BasicConv2d(w1, w1));
    this.upconv1 = this.module('upconv1', new BasicConv2d(w1, w1));
    this.selfdc_16 = this.module('selfdc_16', new SimpleDFN(w1, w4, config.ks));
    this.selfdc_8 = this.module('selfdc_8', new SimpleDFN(w1, w4, config.ks));
    this.classifier = this.module('classifier', new Conv2d(w4, 2, 1));
    this.mask_conv = this.module('mask_conv', new Conv2d(1, w1, 7, { stride: 2, padding: 3, bias: false }));
  }

  /**
   * A folder with config.json (`ks`, optional `widths`) and model.safetensors (the reference's state_dict; F16
   * read as f32), in eval mode.
   */
  static fromPretrained(dir: string): ObPlaNet {
    return fromFolder(dir, (config) => new ObPlaNet(obPlaNetConfig(config.config, config.source)));
  }


  /**
   * bg, fg [N, 3, H, W] normalised with ImageNet's mean and std; mask [N, 1, H, W] in [0, 1] (the scaled
   * foreground's mask on a background-sized canvas).
   */
  forward(bg: Tensor, fg: Tensor, mask: Tensor, { capture }: ObPlaNetForwardOptions = {}): ObPlaNetOutput {
    const [N, , H, W] = bg.shape as [number, number, number, number];
    for (const [name, t, c] of [['bg', bg, 3], ['fg', fg, 3], ['mask', mask, 1]] as const) {
      if (t.rank !== 4 || t.shape[0] !== N || t.shape[1] !== c || t.shape[2] !== H || t.shape[3] !== W) {
        throw new Error(`ObPlaNet.forward: ${name} has shape [${t.shape.join(', ')}], expected [${N}, ${c}, ${H}, ${W}] (bg, fg [N, 3, H, W], mask [N, 1, H, W])`);
      }
    }
    const keep = (name: string, t: Tensor) => {
      capture?.(name, t);
      return t;
    };
    return tidy(() => {
      const b1 = keep('bg_encoder1', this.bg_encoder1.forward(concat([bg, Tensor.zeros(mask.shape)], 1)));
      const b2 = keep('bg_encoder2', this.bg_encoder2.forward(b1));
      const b4 = keep('bg_encoder4', this.bg_encoder4.forward(b2));
      const b8 = keep('bg_encoder8', this.bg_encoder8.forward(b4));
      const b16 = keep('bg_encoder16', this.bg_encoder16.forward(b8));
      const f1 = keep('fg_encoder1', this.fg_encoder1.forward(concat([fg, mask], 1)));
      const f2 = keep('fg_encoder2', this.fg_encoder2.forward(f1));
      const f4 = keep('fg_encoder4', this.fg_encoder4.forward(f2));
      const f8 = keep('fg_encoder8', this.fg_encoder8.forward(f4));
      const f16 = keep('fg_encoder16', this.fg_encoder16.forward(f8));
      const f32 = keep('fg_encoder32', this.fg_encoder32.forward(f16));
      const t8 = keep('fg_trans8', this.fg_trans8.forward(f16));
      const t16 = keep('fg_trans16', this.fg_trans16.forward(f32));
      const o8 = keep('bg_out_data_8', upsampleAdd(keep('upconv16', this.upconv16.forward(b16)), b8));
      const o4 = keep('bg_out_data_4', upsampleAdd(keep('upconv8', this.upconv8.forward(o8)), b4));
      const o2 = keep('bg_out_data_2', upsampleAdd(keep('upconv4', this.upconv4.forward(o4)), b2));
      const o1 = keep('bg_out_data_1', upsampleAdd(keep('upconv2', this.upconv2.forward(o2)), b1));
      const full = keep('upconv1', this.upconv1.forward(interpolate(o1, { scaleFactor: 2, mode: 'bilinear', alignCorners: true })));
      const s16 = this.selfdc_16.forward(o1, t8, capture && ((n, t) => capture(`selfdc_16.${n}`, t)));
      const s8 = this.selfdc_8.forward(full, t16, capture && ((n, t) => capture(`selfdc_8.${n}`, t)));
      const fuseOut = upsampleAdd(s16, s8);
      return { out: this.classifier.forward(fuseOut), fuseOut };
    });
  }
}

const mean = [0.485, 0.456, 0.406].map(Math.fround);
const std = [0.229, 0.224, 0.225].map(Math.fround);

/** ToTensor + Normalize as torchvision computes them in float32: ((u8 / 255) − mean) / std per channel, [1, 3, H, W]. */
function normalised(img: Image): Tensor {
  const { width: W, height: H } = img;
  const out = new Float32Array(3 * W * H);
  for (let p = 0; p < W * H; p++) {
    for (let c = 0; c < 3; c++) out[c * W * H + p] = Math.fround(Math.fround(Math.fround(img.data[p * img.channels + c]! / 255) - mean[c]!) / std[c]!);
  }
  return Tensor.fromArray(out, [1, 3, H, W]);
}

/**
 * The official preprocessing (FOPA's CPDataset test split, libcom's FOPAHeatMapModel): the background, the scaled
 * foreground on a background-sized canvas (RGB) and its mask (one channel) resized to size×size with Pillow
 * (BILINEAR, NEAREST for the mask), the images normalised, the mask u8 / 255. Returns the resized bytes too.
 */
export function fopaInputs(bg: Image, fg: Image, mask: Image, size = 256): { bg: Tensor; fg: Tensor; mask: Tensor; resized: { bg: Image; fg: Image; mask: Image } } {
  if (bg.channels < 3 || fg.channels < 3 || mask.channels !== 1) throw new Error(`fopaInputs: expected RGB background and foreground and a one-channel mask, got ${bg.channels}, ${fg.channels} and ${mask.channels} channels`);
  if (fg.width !== bg.width || fg.height !== bg.height || mask.width !== bg.width || mask.height !== bg.height) {
    throw new Error(`fopaInputs: the foreground canvas (${fg.width}×${fg.height}) and mask (${mask.width}×${mask.height}) must have the background's size (${bg.width}×${bg.height})`);
  }
  const resized = { bg: pilResize(bg, size, size, 'bilinear'), fg: pilResize(fg, size, size, 'bilinear'), mask: pilResize(mask, size, size, 'nearest') };
  const m = Float32Array.from(resized.mask.data, (v) => Math.fround(v / 255));
  return { bg: normalised(resized.bg), fg: normalised(resized.fg), mask: Tensor.fromArray(m, [1, 1, size, size]), resized };
}
