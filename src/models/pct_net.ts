// PCT-Net (Guerreiro et al., "PCT-Net: Full Resolution Image Harmonization Using Pixel-Wise Color
// Transformations", CVPR 2023; reference rakutentech/PCT-Net-Image-Harmonization iharm/model/pct_functions.py):
// the pixel-wise colour transforms a network predicts at low resolution and applies at full resolution. The
// transforms here; the networks (CNN and ViT backbones) build on them.

import { Tensor, tidy } from '../engine/tensor.ts';
import { add, affine, clamp, mul } from '../kernels/elementwise.ts';
import { concat, reshape, split } from '../kernels/shape.ts';

export type PctTransformType = 'linear' | 'linear_sym' | 'polynomial' | 'identity' | 'mul' | 'add';

/** Parameters per pixel of a transform (PCT's n_params). */
export function pctParamCount(type: PctTransformType, affineTerm: boolean): number {
  const base = { linear: 9, linear_sym: 6, polynomial: 27, identity: 3, mul: 3, add: 3 }[type];
  return base + (affineTerm && (type === 'linear' || type === 'linear_sym') ? 3 : 0);
}

/**
 * The transform alone (PCT.transform): x [B, 3, H, W], p [B, n, H, W] → y [B, 3, H, W], per pixel:
 * linear y_i = Σ_j p[3i + j]·x_j (+ p[9 + i]); linear_sym with M = [[p0, p3, p5], [p3, p1, p4], [p5, p4, p2]] (+ p[6..8]);
 * polynomial y_i = Σ_k p[9i + k]·f_k over the official features [x0, x0, x2, x0·x2, x0·x0, x2·x0, x0², x2², x0²] (its
 * code reads channel 0 twice and never channel 1: reproduced as is); identity y = p; mul y = x·p; add y = x + p.
 */
export function pctTransform(x: Tensor, p: Tensor, type: PctTransformType, affineTerm = false): Tensor {
  const n = pctParamCount(type, affineTerm);
  if (x.rank !== 4 || x.shape[1] !== 3) throw new Error(`pctTransform: x has shape [${x.shape.join(', ')}], expected [B, 3, H, W]`);
  if (p.rank !== 4 || p.shape[1] !== n || p.shape[0] !== x.shape[0] || p.shape[2] !== x.shape[2] || p.shape[3] !== x.shape[3]) {
    throw new Error(`pctTransform: ${type}${affineTerm ? ' (affine)' : ''} needs parameters [${x.shape[0]}, ${n}, ${x.shape[2]}, ${x.shape[3]}], got [${p.shape.join(', ')}]`);
  }
  return tidy(() => {
    if (type === 'identity') return reshape(p, p.shape);
    if (type === 'mul') return mul(x, p);
    if (type === 'add') return add(x, p);
    const xs = split(x, 1, 1);
    const ps = split(p, 1, 1);
    const dot = (weights: Tensor[], features: Tensor[]) => weights.slice(1).reduce((acc, w, k) => add(acc, mul(w, features[k + 1]!)), mul(weights[0]!, features[0]!));
    let rows: Tensor[];
    let bias = 0;
    if (type === 'linear') {
      rows = [0, 1, 2].map((i) => dot(ps.slice(3 * i, 3 * i + 3), xs));
      bias = 9;
    } else if (type === 'linear_sym') {
      const m = [[0, 3, 5], [3, 1, 4], [5, 4, 2]];
      rows = m.map((row) => dot(row.map((k) => ps[k]!), xs));
      bias = 6;
    } else {
      const [x0, , x2] = xs as [Tensor, Tensor, Tensor];
      const f = [x0, x0, x2, mul(x0, x2), mul(x0, x0), mul(x2, x0), mul(x0, x0), mul(x2, x2), mul(x0, x0)];
      rows = [0, 1, 2].map((i) => dot(ps.slice(9 * i, 9 * i + 9), f));
    }
    if (affineTerm) rows = rows.map((r, i) => add(r, ps[bias + i]!));
    return concat(rows, 1);
  });
}

export interface PctOptions {
  type: PctTransformType;
  affine: boolean;
  /** Clamp the transformed image to [0, 1] (default true). */
  clamp?: boolean;
  /** Normalise the result per channel, (y − mean) / std (the CNN variant's ImageNet normalisation); none: as is. */
  normalization?: { mean: readonly number[]; std: readonly number[] };
}

/** PCT(x, p): the transform, clamped to [0, 1], then normalised. */
export function pct(x: Tensor, p: Tensor, o: PctOptions): Tensor {
  return tidy(() => {
    let y = pctTransform(x, p, o.type, o.affine);
    if (o.clamp ?? true) y = clamp(y, 0, 1);
    const norm = o.normalization;
    if (!norm) return y;
    return concat(split(y, 1, 1).map((c, i) => affine(c, 1 / norm.std[i]!, -norm.mean[i]! / norm.std[i]!)), 1);
  });
}
