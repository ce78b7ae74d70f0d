// AffinityNet (Ahn & Kwak, CVPR 2018; reference jiwoon-ahn/psa network/resnet38_aff.py), small and
// configurable: a conv backbone whose last three stages run at the output stride (the later ones dilated,
// as ResNet-38's conv4/5/6), each projected by a bias-free 1×1 conv + ELU (psa's f8_3, f8_4, f8_5),
// concatenated, and a 1×1 conv + ELU (f9) giving the affinity features. Parameter names follow psa's
// (conv1a, b2…, f8_3, f8_4, f8_5, f9), so a state dict maps 1:1 to this tree.
//
// Training (psa train_aff.py): pixel pairs within the radius labelled from confident masks (bg–bg and
// fg–fg of one class positive, different labels negative, pairs touching an uncertain pixel ignored), and
// the loss bg_pos/4 + fg_pos/4 + neg/2, each term averaged over its own pairs.

import { Tensor, tidy } from '../engine/tensor.ts';
import { add, affine, elu, log, mul, relu } from '../kernels/elementwise.ts';
import { sum } from '../kernels/reduce.ts';
import { avgPool2d } from '../kernels/pool.ts';
import { concat, reshape } from '../kernels/shape.ts';
import { affinityCrop, affinityOffsets, pixelAffinities } from '../kernels/random_walk.ts';
import { Module } from '../nn/module.ts';
import { Conv2d } from '../nn/layers.ts';

export interface AffinityNetConfig {
  inChannels: number;
  /** Output channels of the stride-2 stages (conv1a, b2, …): their count sets the stride, 2^length. */
  downChannels: number[];
  /** Channels of the three stages at the output stride (psa's conv4, conv5, conv6 sources). */
  stageChannels: [number, number, number];
  /** Channels of the f8_3, f8_4, f8_5 projections. */
  projectionChannels: [number, number, number];
  /** Affinity feature channels (f9). */
  featureChannels: number;
  /**
   * Also feed f9 the image average-pooled to the output stride. psa's backbone is ImageNet-pretrained; one
   * trained from scratch on a few images learns colour edges far faster with the colours at hand.
   */
  imageSkip?: boolean;
}

export const affinityNetSmall: AffinityNetConfig = {
  inChannels: 3,
  downChannels: [16, 32, 32],
  stageChannels: [32, 48, 64],
  projectionChannels: [16, 24, 32],
  featureChannels: 32,
};

/**
 * Small and fine, for small images of flat-coloured objects (ShapeWorld at 64², test/refine.test.ts): stride 2
 * (a stride-8 grid is too coarse for thin parts), the image at hand (imageSkip), and two channels per stage.
 * Trained from scratch on a few masks, bigger stages learn those images' objects (shapes, positions) instead
 * of what makes a boundary, and their affinities stop separating object from background on new images; with
 * two channels per stage the net learns a colour-and-texture metric that carries over (`fineRefinement`).
 */
export const affinityNetFine: AffinityNetConfig = {
  inChannels: 3,
  downChannels: [16],
  stageChannels: [2, 2, 2],
  projectionChannels: [2, 2, 2],
  featureChannels: 8,
  imageSkip: true,
};

export class AffinityNet extends Module {
  readonly down: Conv2d[];
  readonly stages: Conv2d[];
  readonly f8_3: Conv2d;
  readonly f8_4: Conv2d;
  readonly f8_5: Conv2d;
  readonly f9: Conv2d;

  constructor(readonly config: AffinityNetConfig = affinityNetSmall) {
    super();
    const { inChannels, downChannels, stageChannels, projectionChannels: p, featureChannels } = config;
    if (downChannels.length < 1) throw new Error('AffinityNet: downChannels needs at least one stage (stride 2)');
    let c = inChannels;
    this.down = downChannels.map((out, k) => {
      const conv = this.module(k === 0 ? 'conv1a' : `b${k + 1}`, new Conv2d(c, out, 3, { stride: 2, padding: 1 }));
      c = out;
      return conv;
    });
    const first = downChannels.length + 1;
    this.stages = stageChannels.map((out, k) => {
      const d = 2 ** k; // dilation keeps the stride while widening the view
      const conv = this.module(`b${first + k}`, new Conv2d(c, out, 3, { padding: d, dilation: d }));
      c = out;
      return conv;
    });
    this.f8_3 = this.module('f8_3', new Conv2d(stageChannels[0], p[0], 1, { bias: false }));
    this.f8_4 = this.module('f8_4', new Conv2d(stageChannels[1], p[1], 1, { bias: false }));
    this.f8_5 = this.module('f8_5', new Conv2d(stageChannels[2], p[2], 1, { bias: false }));
    this.f9 = this.module('f9', new Conv2d(p[0] + p[1] + p[2] + (config.imageSkip ? inChannels : 0), featureChannels, 1, { bias: false }));
  }

  /** The output stride. */
  get stride(): number {
    return 2 ** this.config.downChannels.length;
  }

  /** Affinity features [N, featureChannels, H/stride, W/stride] of images [N, C, H, W]. */
  forward(x: Tensor): Tensor {
    if (x.rank !== 4 || x.shape[1] !== this.config.inChannels) {
      throw new Error(`AffinityNet: input must be [N, ${this.config.inChannels}, H, W], got [${x.shape.join(', ')}]`);
    }
    return tidy(() => {
      let h = x;
      for (const conv of this.down) h = relu(conv.forward(h));
      const outs: Tensor[] = [];
      for (const conv of this.stages) outs.push((h = relu(conv.forward(h))));
      const parts = [elu(this.f8_3.forward(outs[0]!)), elu(this.f8_4.forward(outs[1]!)), elu(this.f8_5.forward(outs[2]!))];
      if (this.config.imageSkip) parts.push(avgPool2d(x, { kernelSize: this.stride }));
      return elu(this.f9.forward(concat(parts, 1)));
    });
  }
}

/**
 * Confident labels on the feature grid from a label map [H·W] at image size (255 = uncertain): a cell keeps
 * a label only where all its stride×stride pixels agree on it (psa labels the stride-8 grid the same way,
 * from its confident fg/bg maps).
 */
export function gridLabels(labels: ArrayLike<number>, H: number, W: number, stride: number, ignore = 255): Uint8Array {
  if (labels.length !== H * W) throw new Error(`gridLabels: ${labels.length} labels for a ${H}×${W} image`);
  const [h, w] = [Math.floor(H / stride), Math.floor(W / stride)];
  const out = new Uint8Array(h * w);
  for (let gy = 0; gy < h; gy++) {
    for (let gx = 0; gx < w; gx++) {
      let v = labels[gy * stride * W + gx * stride]!;
      for (let y = gy * stride; y < (gy + 1) * stride && v !== ignore; y++) {
        for (let x = gx * stride; x < (gx + 1) * stride; x++) if (labels[y * W + x] !== v) v = ignore;
      }
      out[gy * w + gx] = v;
    }
  }
  return out;
}

/** psa's pair labels on an h×w label grid: bg–bg, fg–fg (same class) and different-label masks, [O, Hc, Wc] each. */
export function affinityPairLabels(grid: ArrayLike<number>, h: number, w: number, radius: number, ignore = 255): { bgPos: Float32Array; fgPos: Float32Array; neg: Float32Array } {
  const offs = affinityOffsets(radius);
  const { rows, cols, x0 } = affinityCrop(radius, h, w);
  const n = offs.length * rows * cols;
  const [bgPos, fgPos, neg] = [new Float32Array(n), new Float32Array(n), new Float32Array(n)];
  offs.forEach(([dy, dx], o) => {
    for (let y = 0; y < rows; y++) {
      for (let x = 0; x < cols; x++) {
        const a = grid[y * w + x + x0]!;
        const b = grid[(y + dy) * w + x + x0 + dx]!;
        if (a === ignore || b === ignore) continue;
        const e = (o * rows + y) * cols + x;
        if (a !== b) neg[e] = 1;
        else if (a === 0) bgPos[e] = 1;
        else fgPos[e] = 1;
      }
    }
  });
  return { bgPos, fgPos, neg };
}

/**
 * psa's balanced affinity loss of features [N, C, h, w] against per-image label grids [h·w]:
 * bg_pos/4 + fg_pos/4 + neg/2, each the mean of −log(aff) (positives) or −log(1 − aff) (negatives) over
 * its pairs (+1e-5 as psa, so an empty set contributes 0).
 */
export function affinityLoss(features: Tensor, grids: readonly ArrayLike<number>[], radius: number): Tensor {
  const [N, , h, w] = features.shape as [number, number, number, number];
  if (grids.length !== N) throw new Error(`affinityLoss: ${grids.length} label grids for a batch of ${N}`);
  const labels = grids.map((g) => affinityPairLabels(g, h, w, radius));
  const stack = (k: 'bgPos' | 'fgPos' | 'neg') => {
    const all = new Float32Array(labels.reduce((s, l) => s + l[k].length, 0));
    labels.forEach((l, i) => all.set(l[k], i * l[k].length));
    return { t: Tensor.fromArray(all, [N, all.length / N]), count: all.reduce((s, v) => s + v, 0) };
  };
  return tidy(() => {
    const aff = pixelAffinities(features, radius);
    const flat = reshape(aff, [N, aff.size / N]);
    const [bg, fg, ng] = [stack('bgPos'), stack('fgPos'), stack('neg')];
    const posLog = log(add(flat, 1e-5));
    const negLog = log(affine(flat, -1, 1 + 1e-5));
    const term = (m: { t: Tensor; count: number }, l: Tensor, weight: number) => mul(sum(mul(m.t, l)), -weight / (m.count + 1e-5));
    return add(add(term(bg, posLog, 0.25), term(fg, posLog, 0.25)), term(ng, negLog, 0.5));
  });
}
