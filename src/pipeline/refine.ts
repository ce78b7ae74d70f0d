// Stage 4 of Free-Mask: a mask refined by AffinityNet's random walk (psa's infer_aff.py on masks instead of
// CAMs): per-class score maps from the mask (a band around its boundaries votes weakly or not at all),
// averaged onto the feature grid, propagated by affinityRandomWalk, upsampled back and arg-maxed in the band.
// An AffinityNet is trained from the masks' confident regions (pixels near a label change are uncertain), so
// the stage needs no ground truth.

import { backward, noGrad } from '../engine/autograd.ts';
import { Tensor, tidy } from '../engine/tensor.ts';
import { argmax } from '../kernels/reduce.ts';
import { avgPool2d } from '../kernels/pool.ts';
import { interpolate } from '../kernels/resample.ts';
import { concat, reshape } from '../kernels/shape.ts';
import { affinityRandomWalk } from '../kernels/random_walk.ts';
import { AffinityNet, affinityLoss, gridLabels } from '../models/affinity_net.ts';
import { AdamW } from '../optim/adamw.ts';
import type { Optimizer } from '../optim/optimizer.ts';
import { ConfusionMatrix } from '../metrics/miou.ts';
import { imageToTensor } from '../io/image.ts';
import { readPng } from '../io/png.ts';
import { makeVocFolders, readVocLabels, vocFolders, vocIds, writeVocSample } from '../data/voc.ts';
import { nodeFs } from '../io/fs.ts';
import { uncertainLabel } from './attention_mask.ts';

export interface WalkOptions {
  radius: number;
  beta: number;
  logt: number;
}

/** psa's inference defaults: radius 5, β 8, logt 8. */
export const psaWalk: WalkOptions = { radius: 5, beta: 8, logt: 8 };

/** Marks as uncertain (255) every pixel with a different label within `band` pixels (Chebyshev). */
export function uncertainBand(mask: ArrayLike<number>, H: number, W: number, band: number): Uint8Array {
  const out = Uint8Array.from(mask);
  if (band <= 0) return out;
  for (let y = 0; y < H; y++) {
    for (let x = 0; x < W; x++) {
      const v = mask[y * W + x]!;
      search: for (let yy = Math.max(0, y - band); yy <= Math.min(H - 1, y + band); yy++) {
        for (let xx = Math.max(0, x - band); xx <= Math.min(W - 1, x + band); xx++) {
          if (mask[yy * W + xx] !== v) {
            out[y * W + x] = uncertainLabel;
            break search;
          }
        }
      }
    }
  }
  return out;
}

/** A training sample: image [1, C, H, W] and its (initial) mask [H·W] of class ids, 255 uncertain. */
export interface RefineSample {
  image: Tensor;
  mask: Uint8Array;
}

export interface TrainOptions {
  steps: number;
  lr?: number;
  /** Pair radius on the feature grid. */
  radius: number;
  /** Pixels within this distance of a label change are left out of the pair labels. */
  band?: number;
  batchSize?: number;
  onStep?: (step: number, loss: number) => void;
}

/** Each sample's confident labels on `net`'s feature grid: pixels within `band` of a label change uncertain (255). */
export function affinityTrainingGrids(net: AffinityNet, samples: readonly RefineSample[], band: number): Uint8Array[] {
  return samples.map(({ image, mask }) => {
    const [, , H, W] = image.shape as [number, number, number, number];
    if (mask.length !== H * W) throw new Error(`trainAffinityNet: a mask of ${mask.length} pixels for a ${H}×${W} image`);
    return gridLabels(uncertainBand(mask, H, W, band), H, W, net.stride);
  });
}

/**
 * One training step of `trainAffinityNet`: psa's loss of the batch `images` (each [1, C, H, W]) against their
 * `grids`, backward, the optimizer's update, gradients dropped. Returns the loss (the caller disposes it).
 */
export function affinityTrainStep(net: AffinityNet, opt: Optimizer, images: readonly Tensor[], grids: readonly ArrayLike<number>[], radius: number): Tensor {
  const loss = tidy(() => affinityLoss(net.forward(concat(images, 0)), grids, radius));
  backward(loss);
  opt.step();
  opt.zeroGrad();
  return loss;
}

/** Trains `net` from the masks' confident regions with psa's balanced affinity loss (AdamW). */
export async function trainAffinityNet(net: AffinityNet, samples: readonly RefineSample[], { steps, lr = 1e-3, radius, band = 2, batchSize = 2, onStep }: TrainOptions): Promise<void> {
  if (samples.length === 0) throw new Error('trainAffinityNet: no samples');
  const grids = affinityTrainingGrids(net, samples, band);
  const opt = new AdamW(net.parameters(), { lr, weightDecay: 1e-4 });
  net.train();
  for (let s = 0; s < steps; s++) {
    const idx = Array.from({ length: Math.min(batchSize, samples.length) }, (_, k) => (s * batchSize + k) % samples.length);
    const loss = affinityTrainStep(net, opt, idx.map((i) => samples[i]!.image), idx.map((i) => grids[i]!), radius);
    if (onStep) onStep(s, await loss.item());
    loss.dispose();
  }
  net.eval();
}

/**
 * Which pixels the walk may change. A hard mask has no uncertain pixels of its own (psa's CAMs are soft near
 * boundaries; a mask is not), so pixels within `band` pixels (Chebyshev) of a label change get one: they vote
 * for their own label with `bandScore` instead of 1 (0: no vote, the walk alone decides them), and only they
 * (and the mask's own 255 pixels) may change; the confident interior and exterior keep their labels.
 */
export interface BandOptions {
  band?: number;
  bandScore?: number;
}

/** A 4 px band voting for its own label at 0.3: measured on ShapeWorld at 64² (test/refine.test.ts). */
export const defaultBand: BandOptions = { band: 4, bandScore: 0.3 };

/**
 * How `affinityNetFine` is trained and walked (measured on ShapeWorld at 64², test/refine.test.ts): a high
 * learning rate for 300 steps (a net trained from scratch in seconds), and β = 24 because its features,
 * briefly trained, separate object from background by a smaller margin than psa's ImageNet-initialised ones.
 */
export const fineRefinement = {
  train: { steps: 300, lr: 0.2, radius: 5, band: 1 },
  walk: { radius: 5, beta: 24, logt: 2 } satisfies WalkOptions,
};

/**
 * The refined mask [H·W] of `image` [1, C, H, W] from `mask` [H·W] (class ids, 255 uncertain): psa's walk
 * of the per-class maps on the net's feature grid, upsampled (bilinear) and arg-maxed, in the band only.
 */
export async function refineMask(net: AffinityNet, image: Tensor, mask: ArrayLike<number>, walk: WalkOptions = psaWalk, options: BandOptions = {}): Promise<Uint8Array> {
  const [, , H, W] = image.shape as [number, number, number, number];
  const s = net.stride;
  if (H % s || W % s) throw new Error(`refineMask: the image ${H}×${W} must be a multiple of the net's stride ${s}`);
  const features = noGrad(() => net.forward(image));
  try {
    return await refineMaskWithFeatures(features, [H, W], mask, walk, options);
  } finally {
    features.dispose();
  }
}

/**
 * refineMask's walk on given affinity features [1, C, H/s, W/s] of an H×W image (`size`), the stride s
 * following from the two: so any source of affinity features (a trained AffinityNet, or a reference) can drive it.
 */
export async function refineMaskWithFeatures(features: Tensor, [H, W]: [number, number], mask: ArrayLike<number>, walk: WalkOptions = psaWalk, { band = 0, bandScore = 0 }: BandOptions = {}): Promise<Uint8Array> {
  if (mask.length !== H * W) throw new Error(`refineMask: a mask of ${mask.length} pixels for a ${H}×${W} image`);
  if (features.rank !== 4 || features.shape[0] !== 1) throw new Error(`refineMask: features must be [1, C, h, w], got [${features.shape.join(', ')}]`);
  const s = H / features.shape[2]!;
  if (!Number.isInteger(s) || W / features.shape[3]! !== s) {
    throw new Error(`refineMask: features ${features.shape[2]}×${features.shape[3]} are not an integer stride of the image ${H}×${W}`);
  }
  if (!(bandScore >= 0 && bandScore <= 1)) throw new Error(`refineMask: bandScore must be in [0, 1], got ${bandScore}`);
  const ids = [0, ...[...new Set(Array.from(mask))].filter((v) => v !== 0 && v !== uncertainLabel).sort((a, b) => a - b)];
  if (ids.length === 1) return Uint8Array.from(mask, (v) => (v === uncertainLabel ? 0 : v));
  // pixels near a label change vote for their own class with bandScore; a class thinner than the band keeps its pixels
  const confident = uncertainBand(mask, H, W, band);
  const scores = new Float32Array(ids.length * H * W);
  ids.forEach((id, k) => {
    const voters = confident.includes(id) ? confident : mask;
    for (let i = 0; i < H * W; i++) if (voters[i] === id) scores[k * H * W + i] = 1;
    else if (voters[i] === uncertainLabel && mask[i] === id) scores[k * H * W + i] = bandScore;
  });
  const labels = noGrad(() => tidy(() => {
    const cam = reshape(avgPool2d(Tensor.fromArray(scores, [1, ids.length, H, W]), { kernelSize: s }), [ids.length, H / s, W / s]);
    const rw = affinityRandomWalk(features, cam, walk);
    return argmax(interpolate(reshape(rw, [1, ...rw.shape]), { size: [H, W], mode: 'bilinear', alignCorners: false }), 1);
  }));
  const k = await labels.toArray();
  labels.dispose();
  // confident pixels keep their label; the walk decides the band (with band 0, only the mask's own uncertain pixels)
  return Uint8Array.from(k, (v, i) => (confident[i] === uncertainLabel ? ids[v]! : confident[i]!));
}

export interface RefineFolderOptions {
  /** VOC-layout folder with the images (JPEGImages/<id>.png). */
  images: string;
  /** VOC-layout folder with the initial masks (SegmentationClass/<id>.png). */
  masks: string;
  /** Where the refined masks go (VOC layout). */
  out: string;
  /** Optional VOC-layout folder with ground truth: before/after mIoU are measured and logged. */
  truth?: string;
  net: AffinityNet;
  walk?: WalkOptions;
  /** The band the walk may change (see BandOptions; defaultBand when absent). */
  band?: BandOptions;
  numClasses?: number;
  log?: (line: string) => void;
}

export interface RefineFolderResult {
  count: number;
  /** mIoU of the initial and refined masks against the truth, when given. */
  before?: number;
  after?: number;
}

async function readImage(dir: string, id: string): Promise<Tensor> {
  const path = `${dir}/${vocFolders.images}/${id}.png`;
  if (!nodeFs(`reading ${dir}`).existsSync(path)) throw new Error(`${path}: missing (image '${id}')`);
  return imageToTensor(await readPng(path), { channels: 3 });
}

/** Refines every mask of a folder, one image at a time, logging before/after mIoU when the truth is given. */
export async function refineFolder({ images, masks, out, truth, net, walk = psaWalk, band = defaultBand, numClasses = 21, log = () => {} }: RefineFolderOptions): Promise<RefineFolderResult> {
  const ids = vocIds(masks);
  makeVocFolders(out);
  const [before, after] = [new ConfusionMatrix(numClasses), new ConfusionMatrix(numClasses)];
  for (const id of ids) {
    const m = readVocLabels(masks, id);
    const image = await readImage(images, id);
    const refined = await refineMask(net, image, m.semantic, walk, band);
    image.dispose();
    await writeVocSample(out, { id, width: m.width, height: m.height, semantic: refined });
    if (truth) {
      const t = readVocLabels(truth, id).semantic;
      before.add(m.semantic, t, id);
      after.add(refined, t, id);
    }
  }
  const result: RefineFolderResult = { count: ids.length };
  if (truth) {
    result.before = before.result().miou;
    result.after = after.result().miou;
    log(`refined ${ids.length} masks: mIoU ${(100 * result.before).toFixed(2)} → ${(100 * result.after).toFixed(2)}`);
  } else log(`refined ${ids.length} masks`);
  return result;
}
