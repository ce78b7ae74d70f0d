// Mask2Former's training loss (transformers' Mask2FormerLoss): per prediction round, a Hungarian matching
// of queries to targets (cost = class_weight·(−p(class)) + mask_weight·sigmoid-BCE + dice_weight·dice on
// random points shared by an image's masks), then cross-entropy on every query's class (no-object for the
// unmatched, down-weighted), and sigmoid-BCE + dice of each matched mask on points chosen by uncertainty
// (oversampled candidates, the most uncertain kept, plus uniform ones). The final prediction and every
// auxiliary one (deep supervision) each get their own round. Random draws come from a pluggable source.

import { noGrad } from '../../engine/autograd.ts';
import { seededRandom } from '../../engine/random-cpu.ts';
import { Tensor, shapeStr, tidy } from '../../engine/tensor.ts';
import { add, affine, div, mul, sigmoid } from '../../kernels/elementwise.ts';
import { indexSelect } from '../../kernels/gather.ts';
import { binaryCrossEntropyWithLogits, crossEntropy } from '../../kernels/loss.ts';
import { sum } from '../../kernels/reduce.ts';
import { gridSample } from '../../kernels/resample.ts';
import { concat, pad, reshape } from '../../kernels/shape.ts';
import type { Mask2FormerConfig } from './config.ts';
import { linearSumAssignment } from './hungarian.ts';

/** Uniform numbers in [0, 1) filling `shape` (row-major), like torch.rand; may be async (replayed draws). */
export type RandomSource = (shape: number[]) => Float32Array | Promise<Float32Array>;

export interface LossOptions {
  /** The random source of point sampling; a seeded CPU generator when omitted. */
  random?: RandomSource;
}

export interface LossPrediction {
  classQueriesLogits: Tensor;
  masksQueriesLogits: Tensor;
}

export interface Mask2FormerLossOutput {
  /** Σ of the terms. */
  total: Tensor;
  /** Weighted terms by transformers' names: loss_cross_entropy, loss_mask, loss_dice, then loss_*_i for auxiliary round i. */
  terms: Record<string, Tensor>;
  /** matchings[round][image] = [query indices ascending, target indices]; round 0 is the final prediction. */
  matchings: [Int32Array, Int32Array][][];
  /** The mask-loss points of each round [matched pairs, points, 2] (x, y in [0, 1]). */
  points: Tensor[];
}

/** Samples maps [N, 1, H, W] at points [N, P, 2] in [0, 1] (bilinear, zeros outside) → [N, P]. */
function samplePoints(maps: Tensor, points: Float32Array, P: number): Tensor {
  const N = maps.shape[0]!;
  return tidy(() => {
    const grid = affine(Tensor.fromArray(points, [N, P, 1, 2]), 2, -1);
    return reshape(gridSample(maps, grid, { alignCorners: false }), [N, P]);
  });
}

/** Rows `indices` of x along dim 0, reshaped to `shape`. */
function rowsOf(x: Tensor, indices: number[], shape: number[]): Tensor {
  return reshape(indexSelect(x, 0, Tensor.fromArray(Int32Array.from(indices), [indices.length], 'i32')), shape);
}

function softplus(x: number): number {
  return Math.max(x, 0) + Math.log1p(Math.exp(-Math.abs(x)));
}

interface Targets {
  /** All images' masks concatenated [ΣT, H, W]. */
  masks: Tensor;
  labels: Int32Array[];
  /** Index of each image's first mask in `masks`. */
  offsets: number[];
}

async function checkTargets(config: Mask2FormerConfig, maskLabels: Tensor[], classLabels: Tensor[], batch: number): Promise<Targets> {
  const op = 'Mask2Former loss';
  if (maskLabels.length !== batch || classLabels.length !== batch) {
    throw new Error(`${op}: ${maskLabels.length} maskLabels and ${classLabels.length} classLabels for a batch of ${batch} images`);
  }
  const labels: Int32Array[] = [];
  const offsets: number[] = [];
  let total = 0;
  for (let b = 0; b < batch; b++) {
    const m = maskLabels[b]!;
    const c = classLabels[b]!;
    if (m.rank !== 3 || m.dtype !== 'f32') throw new Error(`${op}: maskLabels[${b}] must be f32 [objects, height, width], got ${m.dtype} ${shapeStr(m.shape)}`);
    if (c.rank !== 1 || c.dtype !== 'i32') throw new Error(`${op}: classLabels[${b}] must be i32 [objects], got ${c.dtype} ${shapeStr(c.shape)}`);
    if (c.shape[0] !== m.shape[0]) throw new Error(`${op}: image ${b} has ${m.shape[0]} masks but ${c.shape[0]} class labels`);
    const ids = (await c.toArray()) as Int32Array;
    const bad = ids.findIndex((id) => id < 0 || id >= config.numLabels);
    if (bad >= 0) throw new Error(`${op}: classLabels[${b}][${bad}] = ${ids[bad]} is outside the ${config.numLabels} configured classes (0..${config.numLabels - 1})`);
    labels.push(ids);
    offsets.push(total);
    total += ids.length;
  }
  // pad every image's masks to the largest size (bottom/right, zeros), as the reference does
  const H = Math.max(...maskLabels.map((m) => m.shape[1]!));
  const W = Math.max(...maskLabels.map((m) => m.shape[2]!));
  const masks = tidy(() => concat(maskLabels.map((m) => (m.shape[1] === H && m.shape[2] === W ? m : pad(m, [0, W - m.shape[2]!, 0, H - m.shape[1]!]))), 0));
  return { masks, labels, offsets };
}

/** Hungarian matching of one image (no gradient): cost matrix [Q, T] on the CPU in float64. */
async function matchImage(config: Mask2FormerConfig, classLogits: Float32Array, masks: () => [Tensor, Tensor], labels: Int32Array, random: RandomSource): Promise<[Int32Array, Int32Array]> {
  const P = config.trainNumPoints;
  // drawn even for an image without targets, as the reference does, so later draws stay aligned
  const draw = await random([1, P, 2]);
  const T = labels.length;
  if (T === 0) return [new Int32Array(0), new Int32Array(0)];
  const [predMasks, targetMasks] = masks();
  const Q = predMasks.shape[0]!;
  const repeat = (n: number) => {
    const out = new Float32Array(n * P * 2);
    for (let k = 0; k < n; k++) out.set(draw.subarray(0, P * 2), k * P * 2);
    return out;
  };
  const [pred, tgt] = await noGrad(async () => {
    const p = samplePoints(predMasks, repeat(Q), P);
    const t = samplePoints(targetMasks, repeat(T), P);
    const out = [(await p.toArray()) as Float32Array, (await t.toArray()) as Float32Array] as const;
    for (const x of [p, t, predMasks, targetMasks]) x.dispose();
    return out;
  });
  const K = config.numLabels + 1;
  // per point: BCE against 1 and against 0, and the sigmoid; the pairwise terms are then plain dot products
  const bcePos = Float64Array.from(pred, (x) => softplus(-x));
  const bceNeg = Float64Array.from(pred, (x) => softplus(x));
  const sig = Float64Array.from(pred, (x) => 1 / (1 + Math.exp(-x)));
  const tgtSum = Array.from({ length: T }, (_, t) => tgt.subarray(t * P, (t + 1) * P).reduce((a, v) => a + v, 0));
  const cost = new Float64Array(Q * T);
  for (let q = 0; q < Q; q++) {
    const row = classLogits.subarray(q * K, (q + 1) * K);
    const mx = Math.max(...row);
    let z = 0;
    for (const v of row) z += Math.exp(v - mx);
    let sumSig = 0;
    let sumNeg = 0;
    for (let p = q * P; p < (q + 1) * P; p++) {
      sumSig += sig[p]!;
      sumNeg += bceNeg[p]!;
    }
    for (let t = 0; t < T; t++) {
      let bce = sumNeg;
      let inter = 0;
      for (let p = 0; p < P; p++) {
        const y = tgt[t * P + p]!;
        bce += (bcePos[q * P + p]! - bceNeg[q * P + p]!) * y;
        inter += sig[q * P + p]! * y;
      }
      const dice = 1 - (2 * inter + 1) / (sumSig + tgtSum[t]! + 1);
      const cls = -Math.exp(row[labels[t]!]! - mx) / z;
      const c = config.maskWeight * (bce / P) + config.classWeight * cls + config.diceWeight * dice;
      cost[q * T + t] = Number.isNaN(c) ? 0 : Math.min(Math.max(c, -1e10), 1e10);
    }
  }
  return linearSumAssignment(cost, Q, T);
}

/** Indices of the k largest values, largest first (ties: lower index first); a native sort finds the cut. */
export function topk(values: Float64Array, k: number): number[] {
  if (k <= 0) return [];
  const cut = Float64Array.from(values).sort()[values.length - Math.min(k, values.length)]!;
  const above: number[] = [];
  const atCut: number[] = [];
  values.forEach((v, i) => (v > cut ? above.push(i) : v === cut && atCut.push(i)));
  const chosen = [...above, ...atCut.slice(0, k - above.length)];
  return chosen.sort((a, b) => values[b]! - values[a]! || a - b);
}

/** Uncertainty-based point sampling (no gradient): the most uncertain of the oversampled candidates, then uniform ones. */
async function lossPoints(config: Mask2FormerConfig, predMasks: Tensor, random: RandomSource): Promise<Float32Array> {
  const N = predMasks.shape[0]!;
  const P = config.trainNumPoints;
  const sampled = Math.floor(P * config.oversampleRatio);
  const uncertain = Math.floor(config.importanceSampleRatio * P);
  const candidates = await random([N, sampled, 2]);
  const logits = await noGrad(async () => {
    const t = samplePoints(predMasks, candidates, sampled);
    const v = (await t.toArray()) as Float32Array;
    t.dispose();
    return v;
  });
  const points = new Float32Array(N * P * 2);
  for (let n = 0; n < N; n++) {
    // uncertainty −|logit|
    const order = topk(Float64Array.from(logits.subarray(n * sampled, (n + 1) * sampled), (x) => -Math.abs(x)), uncertain);
    for (let k = 0; k < uncertain; k++) {
      points[(n * P + k) * 2] = candidates[(n * sampled + order[k]!) * 2]!;
      points[(n * P + k) * 2 + 1] = candidates[(n * sampled + order[k]!) * 2 + 1]!;
    }
  }
  if (P > uncertain) {
    const uniform = await random([N, P - uncertain, 2]);
    for (let n = 0; n < N; n++) points.set(uniform.subarray(n * (P - uncertain) * 2, (n + 1) * (P - uncertain) * 2), (n * P + uncertain) * 2);
  }
  return points;
}

interface RoundLoss {
  crossEntropy: Tensor;
  mask: Tensor;
  dice: Tensor;
  matching: [Int32Array, Int32Array][];
  points: Tensor;
}

async function roundLoss(config: Mask2FormerConfig, pred: LossPrediction, targets: Targets, emptyWeight: Tensor, numMasks: number, random: RandomSource): Promise<RoundLoss> {
  const [B, Q, h, w] = pred.masksQueriesLogits.shape as [number, number, number, number];
  const K = config.numLabels + 1;
  const classLogits = (await pred.classQueriesLogits.toArray()) as Float32Array;
  const matching: [Int32Array, Int32Array][] = [];
  const [Ht, Wt] = targets.masks.shape.slice(1) as [number, number];
  for (let b = 0; b < B; b++) {
    const T = targets.labels[b]!.length;
    const range = (first: number, n: number) => Array.from({ length: n }, (_, k) => first + k);
    const masks = () => noGrad(() => tidy((): [Tensor, Tensor] => [
      rowsOf(reshape(pred.masksQueriesLogits, [B * Q, h, w]), range(b * Q, Q), [Q, 1, h, w]),
      rowsOf(targets.masks, range(targets.offsets[b]!, T), [T, 1, Ht, Wt]),
    ]));
    matching.push(await matchImage(config, classLogits.subarray(b * Q * K, (b + 1) * Q * K), masks, targets.labels[b]!, random));
  }
  const src = matching.flatMap(([qs], b) => [...qs].map((q) => b * Q + q));
  const tgt = matching.flatMap(([, ts], b) => [...ts].map((t) => targets.offsets[b]! + t));
  const targetClasses = new Int32Array(B * Q).fill(config.numLabels);
  matching.forEach(([qs, ts], b) => qs.forEach((q, k) => (targetClasses[b * Q + q] = targets.labels[b]![ts[k]!]!)));
  const ce = tidy(() => crossEntropy(reshape(pred.classQueriesLogits, [B * Q, K]), Tensor.fromArray(targetClasses, [B * Q], 'i32'), { weight: emptyWeight }));
  const N = src.length;
  const P = config.trainNumPoints;
  if (N === 0) {
    return { crossEntropy: ce, mask: Tensor.zeros([]), dice: Tensor.zeros([]), matching, points: Tensor.zeros([0, P, 2]) };
  }
  const predMasks = tidy(() => rowsOf(reshape(pred.masksQueriesLogits, [B * Q, h, w]), src, [N, 1, h, w]));
  const points = await lossPoints(config, predMasks, random);
  const { mask, dice } = tidy(() => {
    const targetMasks = rowsOf(targets.masks, tgt, [N, 1, Ht, Wt]);
    const labels = noGrad(() => samplePoints(targetMasks, points, P));
    const logits = samplePoints(predMasks, points, P);
    const bce = affine(binaryCrossEntropyWithLogits(logits, labels, { reduction: 'sum' }), 1 / (P * numMasks));
    const s = sigmoid(logits);
    const numerator = affine(sum(mul(s, labels), -1), 2, 1);
    const denominator = affine(add(sum(s, -1), sum(labels, -1)), 1, 1);
    const diceLoss = affine(sum(affine(div(numerator, denominator), -1, 1)), 1 / numMasks);
    return { mask: bce, dice: diceLoss };
  });
  predMasks.dispose();
  return { crossEntropy: ce, mask, dice, matching, points: Tensor.fromArray(points, [N, P, 2]) };
}

/**
 * The weighted loss terms of the final prediction and of each auxiliary prediction (deep supervision), their
 * sum, the matchings and the sampled points. maskLabels[b] [objects, H, W] (0/1 at the input resolution),
 * classLabels[b] i32 [objects]; emptyWeight [numLabels + 1] the cross-entropy class weights.
 */
export async function mask2formerLoss(
  config: Mask2FormerConfig, final: LossPrediction, auxiliary: LossPrediction[], maskLabels: Tensor[], classLabels: Tensor[],
  emptyWeight: Tensor, { random = defaultRandom }: LossOptions = {},
): Promise<Mask2FormerLossOutput> {
  const targets = await checkTargets(config, maskLabels, classLabels, final.classQueriesLogits.shape[0]!);
  const numMasks = Math.max(targets.labels.reduce((a, l) => a + l.length, 0), 1);
  const terms: Record<string, Tensor> = {};
  const matchings: [Int32Array, Int32Array][][] = [];
  const points: Tensor[] = [];
  const rounds = [final, ...auxiliary];
  for (let r = 0; r < rounds.length; r++) {
    const l = await roundLoss(config, rounds[r]!, targets, emptyWeight, numMasks, random);
    const suffix = r === 0 ? '' : `_${r - 1}`;
    terms[`loss_cross_entropy${suffix}`] = tidy(() => affine(l.crossEntropy, config.classWeight));
    terms[`loss_mask${suffix}`] = tidy(() => affine(l.mask, config.maskWeight));
    terms[`loss_dice${suffix}`] = tidy(() => affine(l.dice, config.diceWeight));
    for (const t of [l.crossEntropy, l.mask, l.dice]) t.dispose();
    matchings.push(l.matching);
    points.push(l.points);
  }
  targets.masks.dispose();
  const total = tidy(() => Object.values(terms).reduce((a, b) => add(a, b)));
  return { total, terms, matchings, points };
}

/** A seeded CPU stand-in for torch.rand. */
export function seededUniform(seed: number): RandomSource {
  const next = seededRandom(seed);
  return (shape) => Float32Array.from({ length: shape.reduce((a, b) => a * b, 1) }, next);
}

const defaultRandom = seededUniform(0);
