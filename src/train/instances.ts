// The instance branches trained from semantic masks only (TFISeg / SISeg on IRNet's step/train_irn.py): ShapeWorld
// train scenes, their class maps reduced to the boundary grid (a cell keeps a label only where all its pixels
// agree; else ignored, as IRNet's ir_label leaves uncertain pixels out), pair labels within the radius, IRNet's
// loss (pos/neg affinity and fg/bg displacement halves). The instance maps are never read. The backbone is frozen.

import { seededRandom } from '../engine/random-cpu.ts';
import { noGrad } from '../engine/autograd.ts';
import { Tensor, tidy } from '../engine/tensor.ts';
import { mean } from '../kernels/reduce.ts';
import { slice } from '../kernels/shape.ts';
import { gridLabels } from '../models/affinity_net.ts';
import { PathIndex } from '../models/irn/indexing.ts';
import { irnLossesFromLogits, pairLabels } from '../models/irn/losses.ts';
import { type IrnNet, irnConfigJson } from '../models/irn/model.ts';
import { generateScene } from '../world/scene.ts';
import { splitSeed } from '../world/splits.ts';
import type { Batch, TrainTask } from './trainer.ts';

/** A train-split scene, horizontally flipped when `flip`: its picture and class map. */
function trainScene(index: number, size: number, flip: boolean): { image: Uint8Array; semantic: Uint8Array } {
  const s = generateScene(splitSeed('train', index), { mode: 'scene', width: size });
  if (!flip) return { image: s.image, semantic: s.semantic };
  const image = new Uint8Array(s.image.length), semantic = new Uint8Array(s.semantic.length);
  for (let y = 0; y < size; y++) {
    for (let x = 0; x < size; x++) {
      const [p, q] = [y * size + x, y * size + size - 1 - x];
      semantic[p] = s.semantic[q]!;
      for (let c = 0; c < 3; c++) image[3 * p + c] = s.image[3 * q + c]!;
    }
  }
  return { image, semantic };
}

/** The trainer's task: `count` ShapeWorld train scenes of `size`², flipped half the time. */
export function irnTask(net: IrnNet, { count, size = 64 }: { count: number; size?: number }): TrainTask {
  const stride = net.stride;
  if (size % (4 * stride) !== 0) throw new Error(`irnTask: the image size ${size} must be a multiple of ${4 * stride} (the grid's stride × 4)`);
  const grid = size / stride;
  const index = new PathIndex(net.config.radius, [grid, grid]);
  return {
    kind: 'irn',
    model: net,
    size: count,
    groups: (o) => {
      const named = net.branches.namedParameters();
      return [{ name: 'branches', names: named.map(([n]) => `branches.${n}`), params: named.map(([, p]) => p), lrFactor: 1, weightDecay: o.weightDecay }];
    },
    metadata: () => ({ count: String(count), size: String(size), config: JSON.stringify(irnConfigJson(net.config)) }),
    loss: async (b: Batch) => {
      const rand = seededRandom(b.seed);
      const samples = b.indices.map((i) => trainScene(i, size, rand() < 0.5));
      const labels = samples.flatMap((s) => [...gridLabels(s.semantic, size, size, stride)]);
      const pairs = pairLabels(labels, samples.length, index);
      return tidy(() => {
        const pixels = net.pixels(samples.map((s) => s.image), [size, size]);
        const { edgeLogits, dp } = net.forward(pixels);
        // the grid may be one cell larger than size / stride when the backbone pads: IRNet crops to the label grid
        const crop = (t: Tensor) => slice(slice(t, 2, 0, grid), 3, 0, grid);
        return irnLossesFromLogits(crop(edgeLogits), crop(dp), pairs, index).total;
      });
    },
  };
}

/**
 * IRNet's last training step: the MeanShift's running mean becomes the mean displacement (eval mode, the mean at
 * zero) over `count` train scenes, so that inference subtracts the field's bias.
 */
export async function fitMeanShift(net: IrnNet, { count = 100, size = 64 } = {}): Promise<number[]> {
  const wasTraining = net.training;
  net.eval();
  const running = net.branches.mean_shift.runningMean;
  const zero = Tensor.zeros([2]);
  running.copyFrom(zero);
  zero.dispose();
  const total = [0, 0];
  for (let i = 0; i < count; i++) {
    const { image } = trainScene(i, size, false);
    const m = noGrad(() => tidy(() => mean(net.forward(net.pixels([image], [size, size])).dp, [0, 2, 3])));
    const [dy, dx] = await m.toArray();
    m.dispose();
    total[0] += dy! / count;
    total[1] += dx! / count;
  }
  const fitted = Tensor.fromArray(Float32Array.from(total), [2]);
  running.copyFrom(fitted);
  fitted.dispose();
  net.train(wasTraining);
  return total;
}
