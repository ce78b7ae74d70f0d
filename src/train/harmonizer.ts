// Training a harmonizer on ShapeWorld pairs (src/pipeline/harmonize.ts): the composite (the object under another
// scene's light) in, the scene as rendered out, the mask exact. RainNet: the release's generator blended as
// G(x, m)·m + x·(1 − m), trained with the L1 reconstruction term of its paper (its adversarial terms need a
// discriminator pair trained alongside; not done here: stated in the model card). PCT-Net (CNN): its official
// pixel loss, MaskWeightedMSE on the full-resolution output in normalised space, on the low resolution too (the
// paper's ParamSmoothness and contrastive terms left out: stated likewise).

import { Tensor, tidy } from '../engine/tensor.ts';
import { l1Loss } from '../kernels/loss.ts';
import { concat, split } from '../kernels/shape.ts';
import { type RainNet, harmonize } from '../models/rainnet.ts';
import { type PCTNet, maskWeightedMse } from '../models/pct_net.ts';
import { interpolate } from '../kernels/resample.ts';
import { add, affine } from '../kernels/elementwise.ts';
import { harmonizationPair } from '../pipeline/harmonize.ts';
import type { Split } from '../world/splits.ts';
import type { Batch, TrainTask } from './trainer.ts';

/** A pair as RainNet's tensors: composite and target in [−1, 1] [1, 3, S, S], mask {0, 1} [1, 1, S, S]. */
export function rainNetPair(split: Split, index: number, size: number): { comp: Tensor; target: Tensor; mask: Tensor } {
  const p = harmonizationPair(split, index, size);
  const planes = (rgb: Uint8Array) => {
    const out = new Float32Array(3 * size * size);
    for (let q = 0; q < size * size; q++) for (let c = 0; c < 3; c++) out[c * size * size + q] = rgb[3 * q + c]! / 127.5 - 1;
    return Tensor.fromArray(out, [1, 3, size, size]);
  };
  return { comp: planes(p.composite), target: planes(p.target), mask: Tensor.fromArray(Float32Array.from(p.mask), [1, 1, size, size]) };
}

/** The trainer's task: `count` training pairs at `size` (a multiple of 256), L1 between the blended output and the target. */
export function rainNetTask(net: RainNet, { count, size = 256 }: { count: number; size?: number }): TrainTask {
  if (size % 256) throw new Error(`train rainnet: size ${size} is not a multiple of 256`);
  net.requireGrad();
  return {
    kind: 'rainnet',
    model: net,
    size: count,
    metadata: () => ({ count: String(count), size: String(size), config: JSON.stringify(net.config) }),
    loss: async (b: Batch) => tidy(() => {
      const pairs = b.indices.map((i) => rainNetPair('train', i, size));
      const [comp, target, mask] = (['comp', 'target', 'mask'] as const).map((k) => concat(pairs.map((p) => p[k]), 0)) as [Tensor, Tensor, Tensor];
      return l1Loss(harmonize(net.forward(comp, mask), comp, mask), target);
    }),
  };
}

/** PCT-Net's task: pairs at `size` (full resolution) with the low resolution `low`; MaskWeightedMSE at both resolutions. */
export function pctNetTask(net: PCTNet, { count, size = 64, low = 32 }: { count: number; size?: number; low?: number }): TrainTask {
  net.requireGrad();
  const { mean, std } = net.config;
  const normalise = (x: Tensor) => concat(split(x, 1, 1).map((ch, c) => affine(ch, 1 / std[c]!, -mean[c]! / std[c]!)), 1);
  return {
    kind: 'pct-net',
    model: net,
    size: count,
    metadata: () => ({ count: String(count), size: String(size), low: String(low), config: JSON.stringify(net.config) }),
    loss: async (b: Batch) => tidy(() => {
      const pairs = b.indices.map((i) => rainNetPair('train', i, size));
      // rainNetPair gives [−1, 1]: back to [0, 1], then the network's normalisation
      const unit = (t: Tensor) => affine(t, 0.5, 0.5);
      const [comp, target, mask] = (['comp', 'target', 'mask'] as const).map((k) => concat(pairs.map((p) => (k === 'mask' ? p[k] : unit(p[k]))), 0)) as [Tensor, Tensor, Tensor];
      const small = (t: Tensor) => interpolate(t, { size: [low, low], mode: 'bilinear' });
      const [image, imageFull, targetN, targetLow] = [normalise(small(comp)), normalise(comp), normalise(target), normalise(small(target))];
      const maskLow = small(mask);
      const out = net.forward(image, imageFull, maskLow, mask);
      return add(maskWeightedMse(out.imagesFullres, targetN, mask), maskWeightedMse(out.images, targetLow, maskLow, 1000 * (low * low) / (size * size)));
    }),
  };
}
