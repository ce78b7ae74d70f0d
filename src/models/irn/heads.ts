// IRNet's two branches on a ResNet-50's stage outputs (reference jiwoon-ahn/irn net/resnet50_irn.py, Net and
// EdgeDisplacement): the class-boundary map (fc_edge1..6) and the displacement field (fc_dp1..7), under the reference's
// module names. Inference averages the image and its horizontal flip for the boundary, as EdgeDisplacement does.

import { Tensor, tidy } from '../../engine/tensor.ts';
import { add, affine, sigmoid, sub } from '../../kernels/elementwise.ts';
import { interpolate } from '../../kernels/resample.ts';
import { concat, reshape, slice } from '../../kernels/shape.ts';
import { indexSelect } from '../../kernels/gather.ts';
import { Conv2d, GroupNorm, ReLU, Sequential } from '../../nn/layers.ts';
import { Module } from '../../nn/module.ts';

class Upsample extends Module {
  constructor(readonly factor: number) {
    super();
  }
  forward(x: Tensor): Tensor {
    return interpolate(x, { scaleFactor: this.factor, mode: 'bilinear', alignCorners: false });
  }
}

/** MeanShift: subtracts its running mean in eval mode (the identity in training). */
class MeanShift extends Module {
  readonly runningMean: Tensor;
  constructor(channels: number) {
    super();
    this.runningMean = this.buffer('running_mean', Tensor.zeros([channels]));
  }
  forward(x: Tensor): Tensor {
    if (this.training) return x;
    return sub(x, reshape(this.runningMean, [1, this.runningMean.size, 1, 1]));
  }
}

/** Conv 1×1 (no bias) → GroupNorm → [Upsample] → ReLU. */
const branch = (inC: number, outC: number, groups: number, up = 1) =>
  new Sequential([new Conv2d(inC, outC, 1, { bias: false }), new GroupNorm(groups, outC), ...(up > 1 ? [new Upsample(up)] : []), new ReLU()]);

/** The top-left crop of x to `like`'s height and width. */
const cropTo = (x: Tensor, like: Tensor) => slice(slice(x, 2, 0, like.shape[2]!), 3, 0, like.shape[3]!);

/** The backbone maps the branches read: channels and stride of x1 … x5 (IRNet: ResNet-50's). */
export interface IrnInputs {
  channels: [number, number, number, number, number];
  strides: [number, number, number, number, number];
}

export const resnet50Inputs: IrnInputs = { channels: [64, 256, 512, 1024, 2048], strides: [4, 4, 8, 16, 16] };

export class IrnBranches extends Module {
  readonly fc_edge1: Sequential;
  readonly fc_edge2: Sequential;
  readonly fc_edge3: Sequential;
  readonly fc_edge4: Sequential;
  readonly fc_edge5: Sequential;
  readonly fc_edge6: Conv2d;
  readonly fc_dp1: Sequential;
  readonly fc_dp2: Sequential;
  readonly fc_dp3: Sequential;
  readonly fc_dp4: Sequential;
  readonly fc_dp5: Sequential;
  readonly fc_dp6: Sequential;
  readonly fc_dp7: Sequential;
  readonly mean_shift: MeanShift;

  /**
   * The reference's widths on any backbone: the upsampling factors follow the strides (edges to x1's stride,
   * dp4/dp5 to x3's, dp6 to x1's), which for ResNet-50 are the reference's ×2, ×4, ×4 and ×2, ×2, ×2.
   */
  constructor(readonly inputs: IrnInputs = resnet50Inputs) {
    super();
    const [c1, c2, c3, c4, c5] = inputs.channels;
    const [s1, s2, s3, s4, s5] = inputs.strides;
    if (s2 !== s1 || s3 % s1 || s4 % s3 || s5 % s3) throw new Error(`IrnBranches: strides [${inputs.strides.join(', ')}] must be x1's twice, then multiples of it and of x3's`);
    this.fc_edge1 = this.module('fc_edge1', branch(c1, 32, 4));
    this.fc_edge2 = this.module('fc_edge2', branch(c2, 32, 4));
    this.fc_edge3 = this.module('fc_edge3', branch(c3, 32, 4, s3 / s1));
    this.fc_edge4 = this.module('fc_edge4', branch(c4, 32, 4, s4 / s1));
    this.fc_edge5 = this.module('fc_edge5', branch(c5, 32, 4, s5 / s1));
    this.fc_edge6 = this.module('fc_edge6', new Conv2d(160, 1, 1));
    this.fc_dp1 = this.module('fc_dp1', branch(c1, 64, 8));
    this.fc_dp2 = this.module('fc_dp2', branch(c2, 128, 16));
    this.fc_dp3 = this.module('fc_dp3', branch(c3, 256, 16));
    this.fc_dp4 = this.module('fc_dp4', branch(c4, 256, 16, s4 / s3));
    this.fc_dp5 = this.module('fc_dp5', branch(c5, 256, 16, s5 / s3));
    this.fc_dp6 = this.module('fc_dp6', branch(768, 256, 16, s3 / s1));
    const shift = new MeanShift(2);
    this.fc_dp7 = this.module('fc_dp7', new Sequential([new Conv2d(448, 256, 1, { bias: false }), new GroupNorm(16, 256), new ReLU(), new Conv2d(256, 2, 1, { bias: false }), shift]));
    // the reference registers the same MeanShift as mean_shift and fc_dp7.4: one module under both names
    this.mean_shift = this.module('mean_shift', shift);
  }

  /** Backbone maps x1 … x5 (ResNet-50: stride 4, 64 ch; stride 4, 256; stride 8, 512; stride 16, 1024 / 2048) → edge logits and displacement at x1's stride. */
  forward(x: [Tensor, Tensor, Tensor, Tensor, Tensor], capture?: (name: string, t: Tensor) => void): { edgeLogits: Tensor; dp: Tensor } {
    return tidy(() => {
      const run = (name: string, m: Sequential | Conv2d, input: Tensor) => {
        const y = m.forward(input);
        capture?.(name, y);
        return y;
      };
      const [x1, x2, x3, x4, x5] = x;
      const edge2 = run('fc_edge2', this.fc_edge2, x2);
      const edges = [run('fc_edge1', this.fc_edge1, x1), edge2, ...([['fc_edge3', this.fc_edge3, x3], ['fc_edge4', this.fc_edge4, x4], ['fc_edge5', this.fc_edge5, x5]] as const).map(([n, m, v]) => cropTo(run(n, m, v), edge2))];
      const edgeLogits = run('fc_edge6', this.fc_edge6, concat(edges, 1));
      const dp1 = run('fc_dp1', this.fc_dp1, x1);
      const dp2 = run('fc_dp2', this.fc_dp2, x2);
      const dp3 = run('fc_dp3', this.fc_dp3, x3);
      const dp4 = cropTo(run('fc_dp4', this.fc_dp4, x4), dp3);
      const dp5 = cropTo(run('fc_dp5', this.fc_dp5, x5), dp3);
      const up3 = cropTo(run('fc_dp6', this.fc_dp6, concat([dp3, dp4, dp5], 1)), dp2);
      const features = concat([dp1, dp2, up3], 1);
      const beforeShift = this.fc_dp7.at(3).forward(this.fc_dp7.at(2).forward(this.fc_dp7.at(1).forward(this.fc_dp7.at(0).forward(features))));
      capture?.('fc_dp7.3', beforeShift);
      const dp = this.fc_dp7.at(4).forward(beforeShift);
      capture?.('fc_dp7', dp);
      return { edgeLogits, dp };
    });
  }

  /**
   * EdgeDisplacement: for a batch of (image, its horizontal flip) stage outputs, the boundary map sigmoid of the
   * averaged logits (the flip's flipped back) and the image's displacement, cropped to the image's stride-4 grid.
   */
  edgeDisplacement(x: [Tensor, Tensor, Tensor, Tensor, Tensor], imageSize: [number, number]): { edge: Tensor; dp: Tensor } {
    return tidy(() => {
      const { edgeLogits, dp } = this.forward(x);
      const s = this.inputs.strides[0];
      const [h, w] = [Math.floor((imageSize[0] - 1) / s) + 1, Math.floor((imageSize[1] - 1) / s) + 1];
      const crop = (t: Tensor) => slice(slice(t, 2, 0, h), 3, 0, w);
      const e = crop(edgeLogits);
      const mirrored = indexSelect(slice(e, 0, 1, 2), 3, Tensor.fromArray(Int32Array.from({ length: w }, (_, i) => w - 1 - i), [w], 'i32'));
      const edge = sigmoid(affine(add(slice(e, 0, 0, 1), mirrored), 0.5));
      return { edge: reshape(edge, [1, h, w]), dp: reshape(slice(crop(dp), 0, 0, 1), [2, h, w]) };
    });
  }
}
