// IRNet's training signal (reference jiwoon-ahn/irn voc12/dataloader.py GetAffinityLabelFromIndices,
// net/resnet50_irn.py AffinityDisplacementLoss, step/train_irn.py): pixel pairs within the radius labelled from a
// (pseudo) label map as background-positive, foreground-positive or negative; the boundary branch learns pair
// affinities 1 − max(boundary along the path) (−log aff for positives, −log(1 − aff) for negatives), the
// displacement branch learns that pixels of one instance point to the same place (dp[src] − dp[dst] equals the
// pair's offset for foreground pairs, 0 for background pairs).

import { Tensor, tidy } from '../../engine/tensor.ts';
import { abs, add, affine, log, mul, sigmoid, sub } from '../../kernels/elementwise.ts';
import { indexSelect } from '../../kernels/gather.ts';
import { sum } from '../../kernels/reduce.ts';
import { concat, reshape } from '../../kernels/shape.ts';
import { type PathIndex, edgeToAffinity } from './indexing.ts';

export interface PairLabels {
  /** [B, directions, sources] 0/1 */
  bgPos: Float32Array;
  fgPos: Float32Array;
  neg: Float32Array;
}

/** Pair labels of label maps [B, h, w] on the PathIndex's grid (0 background, 1..20 classes, ≥ 21 ignored). */
export function pairLabels(label: ArrayLike<number>, batch: number, index: PathIndex): PairLabels {
  const n = index.size[0] * index.size[1];
  const D = index.directions.length, S = index.srcIndices.length;
  const out = { bgPos: new Float32Array(batch * D * S), fgPos: new Float32Array(batch * D * S), neg: new Float32Array(batch * D * S) };
  for (let b = 0; b < batch; b++) {
    for (let d = 0; d < D; d++) {
      for (let s = 0; s < S; s++) {
        const a = label[b * n + index.srcIndices[s]!]!, c = label[b * n + index.dstIndices[d * S + s]!]!;
        if (a >= 21 || c >= 21) continue;
        const k = (b * D + d) * S + s;
        if (a !== c) out.neg[k] = 1;
        else if (a === 0) out.bgPos[k] = 1;
        else out.fgPos[k] = 1;
      }
    }
  }
  return out;
}

/** Pair affinities [B, D, S] of a boundary map [B, 1, h, w] (in [0, 1]): edgeToAffinity per image. */
export function boundaryAffinities(boundary: Tensor, index: PathIndex): Tensor {
  const [B, , h, w] = boundary.shape as [number, number, number, number];
  return tidy(() => concat(Array.from({ length: B }, (_, b) => edgeToAffinity(reshape(indexSelect(boundary, 0, Tensor.fromArray([b], [1], 'i32')), [1, 1, h, w]), index)), 0));
}

/** dp[src] − dp[dst] for every pair: [B, 2, D, S] (channel 0 = rows). */
export function pairDisplacement(dp: Tensor, index: PathIndex): Tensor {
  const [B, C, h, w] = dp.shape as [number, number, number, number];
  const D = index.directions.length, S = index.srcIndices.length;
  return tidy(() => {
    const flat = reshape(dp, [B, C, h * w]);
    const src = reshape(indexSelect(flat, 2, Tensor.fromArray(index.srcIndices, [S], 'i32')), [B, C, 1, S]);
    const dst = reshape(indexSelect(flat, 2, Tensor.fromArray(index.dstIndices, [D * S], 'i32')), [B, C, D, S]);
    return sub(src, dst);
  });
}

export interface IrnLosses {
  bgPosAff: Tensor;
  fgPosAff: Tensor;
  posAff: Tensor;
  negAff: Tensor;
  dpFg: Tensor;
  dpBg: Tensor;
  total: Tensor;
}

/**
 * train_irn.py's losses from a boundary map in [0, 1] [B, 1, h, w] (sigmoid of the edge logits) and the displacement
 * [B, 2, h, w], with pair labels: each term a masked mean over the batch (+1e-5 in the denominators, as there).
 */
export function irnLosses(boundary: Tensor, dp: Tensor, labels: PairLabels, index: PathIndex): IrnLosses & { aff: Tensor; pairDisp: Tensor; posMap: Tensor; negMap: Tensor; dpFgMap: Tensor; dpBgMap: Tensor } {
  return tidy(() => {
    const [B] = boundary.shape as [number];
    const D = index.directions.length, S = index.srcIndices.length;
    const t = (a: Float32Array) => Tensor.fromArray(a, [B, D, S]);
    const [bgPos, fgPos, neg] = [t(labels.bgPos), t(labels.fgPos), t(labels.neg)];
    const count = (a: Float32Array) => a.reduce((x, y) => x + y, 0);
    const aff = boundaryAffinities(boundary, index);
    const posMap = mul(log(add(aff, 1e-5)), -1);
    const negMap = mul(log(affine(aff, -1, 1 + 1e-5)), -1);
    const masked = (map: Tensor, mask: Tensor, n: number) => mul(sum(mul(map, mask)), 1 / (n + 1e-5));
    const bgPosAff = masked(posMap, bgPos, count(labels.bgPos));
    const fgPosAff = masked(posMap, fgPos, count(labels.fgPos));
    const negAff = masked(negMap, neg, count(labels.neg));
    const pairDisp = pairDisplacement(dp, index);
    const target = Tensor.fromArray(Float32Array.from(index.directions.flatMap((d) => d.dy).concat(index.directions.map((d) => d.dx))), [1, 2, D, 1]);
    const dpFgMap = abs(sub(pairDisp, target));
    const dpBgMap = abs(pairDisp);
    const dpFg = masked(dpFgMap, reshape(fgPos, [B, 1, D, S]), 2 * count(labels.fgPos));
    const dpBg = masked(dpBgMap, reshape(bgPos, [B, 1, D, S]), 2 * count(labels.bgPos));
    const posAff = add(mul(bgPosAff, 0.5), mul(fgPosAff, 0.5));
    const total = add(mul(add(posAff, negAff), 0.5), mul(add(dpFg, dpBg), 0.5));
    return { aff, pairDisp, posMap, negMap, dpFgMap, dpBgMap, bgPosAff, fgPosAff, posAff, negAff, dpFg, dpBg, total };
  });
}

/** The same from the edge branch's logits (the boundary is their sigmoid). */
export function irnLossesFromLogits(edgeLogits: Tensor, dp: Tensor, labels: PairLabels, index: PathIndex) {
  return tidy(() => irnLosses(sigmoid(edgeLogits), dp, labels, index));
}
