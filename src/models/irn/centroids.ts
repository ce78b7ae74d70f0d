// IRNet's instance grouping from the displacement field (reference jiwoon-ahn/irn step/make_ins_seg_labels.py):
// every pixel follows the field to the centroid it points at (find_centroids_with_refinement), the pixels with a
// weak displacement form the centroid regions (4-connected components of |D| < thres), and each pixel joins the
// region its centroid lands in (cluster_centroids). Run on the CPU with IRNet's numpy arithmetic: on a chaotic field
// the positions after hundreds of steps depend on every rounding (float32 positions, float64 increments).

import { noGrad } from '../../engine/autograd.ts';
import { Tensor, tidy } from '../../engine/tensor.ts';
import { mul } from '../../kernels/elementwise.ts';
import { interpolate } from '../../kernels/resample.ts';
import { reshape, slice } from '../../kernels/shape.ts';
import { propagateToEdge } from './indexing.ts';

/** Round half to even (numpy's np.round). */
function roundHalfEven(v: number): number {
  const r = Math.round(v);
  return Math.abs(v % 1) === 0.5 && r % 2 !== 0 ? r - 1 : r;
}

/**
 * The centroid each pixel reaches after `iterations` steps along D [2, H, W] ((dy, dx) in grid pixels; bilinear
 * lookup between the four neighbours): float positions [2, H, W] before rounding, and rounded (half to even).
 */
export function findCentroids(D: ArrayLike<number>, H: number, W: number, iterations: number): { positions: Float32Array; centroids: Int32Array } {
  if (D.length !== 2 * H * W) throw new Error(`findCentroids: the field has ${D.length} values, expected 2×${H}×${W}`);
  const n = H * W;
  const pos = new Float32Array(2 * n);
  for (let p = 0; p < n; p++) [pos[p], pos[n + p]] = [Math.floor(p / W), p % W];
  for (let it = 0; it < iterations; it++) {
    for (let p = 0; p < n; p++) {
      // written out (no closures or arrays in this loop: it runs iterations × pixels times), same arithmetic order
      const cy = pos[p]!, cx = pos[n + p]!;
      const uy = Math.ceil(cy), dy = Math.floor(cy), ux = Math.ceil(cx), dx = Math.floor(cx);
      const yc = cy - dy, xc = cx - dx;
      const a = uy * W + ux, b = dy * W + ux, c = uy * W + dx, d = dy * W + dx;
      const iy = D[a]! * yc * xc + D[b]! * (1 - yc) * xc + D[c]! * yc * (1 - xc) + D[d]! * (1 - yc) * (1 - xc);
      const ix = D[n + a]! * yc * xc + D[n + b]! * (1 - yc) * xc + D[n + c]! * yc * (1 - xc) + D[n + d]! * (1 - yc) * (1 - xc);
      pos[p] = Math.min(H - 1, Math.max(0, Math.fround(cy + iy)));
      pos[n + p] = Math.min(W - 1, Math.max(0, Math.fround(cx + ix)));
    }
  }
  return { positions: pos, centroids: Int32Array.from(pos, roundHalfEven) };
}

/** skimage.measure.label(mask, connectivity=1): 4-connected components numbered 1, 2, … in raster order, 0 outside. */
export function connectedComponents(mask: ArrayLike<number>, H: number, W: number): Int32Array {
  const label = new Int32Array(H * W);
  let next = 0;
  for (let p = 0; p < H * W; p++) {
    if (!mask[p] || label[p]) continue;
    label[p] = ++next;
    const stack = [p];
    while (stack.length) {
      const q = stack.pop()!;
      const [y, x] = [Math.floor(q / W), q % W];
      for (const [ny, nx] of [[y - 1, x], [y + 1, x], [y, x - 1], [y, x + 1]] as const) {
        const r = ny * W + nx;
        if (ny >= 0 && ny < H && nx >= 0 && nx < W && mask[r] && !label[r]) {
          label[r] = next;
          stack.push(r);
        }
      }
    }
  }
  return label;
}

/**
 * cluster_centroids: the weak-displacement regions (|D| < thres, |D| computed in float32), each pixel labelled by
 * the region its centroid lands in (0 when it lands on a strong pixel), labels compressed to 0..K−1 in increasing
 * order. Returns the regions (dp_label) and the compressed group of every pixel.
 */
export function clusterCentroids(centroids: Int32Array, D: ArrayLike<number>, H: number, W: number, thres = 2.5): { regions: Int32Array; groups: Int32Array; count: number } {
  const n = H * W;
  const weak = Uint8Array.from({ length: n }, (_, p) => (Math.fround(Math.sqrt(Math.fround(Math.fround(D[n + p]! * D[n + p]!) + Math.fround(D[p]! * D[p]!)))) < thres ? 1 : 0));
  const regions = connectedComponents(weak, H, W);
  const raw = Int32Array.from({ length: n }, (_, p) => regions[centroids[p]! * W + centroids[n + p]!]!);
  const present = [...new Set(raw)].sort((a, b) => a - b);
  const rank = new Map(present.map((v, k) => [v, k]));
  return { regions, groups: Int32Array.from(raw, (v) => rank.get(v)!), count: present.length };
}

export interface InstanceOptions {
  beta?: number;
  expTimes?: number;
  radius?: number;
  /** Score of the constant background plane (IRNet's ins_seg_bg_thres / sem_seg_bg_thres: 0.25). */
  bgThreshold?: number;
  /** Displacement magnitude below which pixels form centroid regions (2.5). */
  thres?: number;
  /** Smallest fragment, as a share of the image, that keeps its score (IRNet: 1%). */
  minFragment?: number;
  /** Image pixels per grid cell: the walked maps are upsampled by it (IRNet: 4). */
  stride?: number;
  /**
   * Walk by squaring the dense transition matrix, IRNet's arithmetic (default); false: 2^expTimes sparse steps,
   * within 1e-3 of the maximum and far cheaper (a 32×32 grid: 0.1 instead of 8.6 GFLOP).
   */
  denseWalk?: boolean;
}

export interface Detection {
  /** the class id as given in `keys` */
  classId: number;
  score: number;
  /** image-size 0/1 mask */
  mask: Uint8Array;
}

/** The class-by-group maps walked over the boundary, upsampled by the stride to the image (bilinear), cropped, over their global max. */
async function walkedScores(x: Tensor, edge: Tensor, [Hi, Wi]: [number, number], o: Required<InstanceOptions>): Promise<{ rw: Tensor; up: Float32Array; max: number }> {
  const rw = await propagateToEdge(x, edge, o.radius, o.beta, o.expTimes, { dense: o.denseWalk });
  const [K, h, w] = rw.shape as [number, number, number];
  const upT = noGrad(() => tidy(() => slice(slice(interpolate(reshape(rw, [K, 1, h, w]), { scaleFactor: o.stride, mode: 'bilinear' }), 2, 0, Hi), 3, 0, Wi)));
  const up = Float32Array.from(await upT.toArray());
  upT.dispose();
  let max = -Infinity;
  for (const v of up) max = Math.max(max, v);
  for (let i = 0; i < up.length; i++) up[i] = up[i]! / max;
  return { rw, up, max };
}

/** argmax over [bgThreshold; planes] per pixel (first maximum wins): 0 = background, k ≥ 1 = plane k − 1. */
function argmaxWithBackground(up: Float32Array, K: number, n: number, bg: number): Int32Array {
  return Int32Array.from({ length: n }, (_, p) => {
    let [best, arg] = [bg, 0];
    for (let k = 0; k < K; k++) if (up[k * n + p]! > best) [best, arg] = [up[k * n + p]!, k + 1];
    return arg;
  });
}

/**
 * The 4-connected fragments of each label k = 1..K of a label map [H·W] (one flood fill over the map), label order
 * then raster order, with their area and, given `scores` [K, H·W], IRNet's score: the maximum of plane k − 1 inside,
 * 0 for a fragment under `minFragment` of the image.
 */
export function labelFragments(label: Int32Array, K: number, [H, W]: [number, number], scores?: ArrayLike<number>, minFragment = 0): { plane: number; score: number; area: number; mask: Uint8Array }[] {
  const N = H * W;
  const component = new Int32Array(N);
  const found: { plane: number; pixels: number[]; score: number }[] = [];
  for (let p = 0; p < N; p++) {
    const k = label[p]!;
    if (k < 1 || k > K || component[p]) continue;
    const f = { plane: k - 1, pixels: [p], score: 0 };
    found.push(f);
    component[p] = found.length;
    for (let i = 0; i < f.pixels.length; i++) {
      const q = f.pixels[i]!;
      const [y, x] = [Math.floor(q / W), q % W];
      for (const [ny, nx] of [[y - 1, x], [y + 1, x], [y, x - 1], [y, x + 1]] as const) {
        const r = ny * W + nx;
        if (ny >= 0 && ny < H && nx >= 0 && nx < W && label[r] === k && !component[r]) {
          component[r] = found.length;
          f.pixels.push(r);
        }
      }
    }
    if (scores) for (const q of f.pixels) f.score = Math.max(f.score, scores[(k - 1) * N + q]!);
  }
  // found in raster order of their first pixel: a stable sort by label keeps that order within a label
  return found.sort((a, b) => a.plane - b.plane).map((f) => {
    const mask = new Uint8Array(N);
    for (const q of f.pixels) mask[q] = 1;
    return { plane: f.plane, area: f.pixels.length, score: f.pixels.length < minFragment * N ? 0 : f.score, mask };
  });
}

const defaults: Required<InstanceOptions> = { beta: 10, expTimes: 8, radius: 5, bgThreshold: 0.25, thres: 2.5, minFragment: 0.01, stride: 4, denseWalk: true };

/** IRNet's inputs for one image: class maps, their class ids, the boundary and the field at the grid's stride. */
export interface IrnMaps {
  /** [C, h, w] class score maps */
  cams: Tensor;
  /** the class id of each map (IRNet: 0-based foreground classes; labels are keys + 1) */
  keys: readonly number[];
  /** [1, h, w] boundary in [0, 1] */
  edge: Tensor;
  /** [2, h, w] displacement (dy, dx) in grid pixels */
  dp: Tensor;
  /** the image's [H, W] */
  imageSize: [number, number];
}

/** IRNet's find_centroids_with_refinement: the centroid [2, h, w] each grid pixel of the field dp [2, h, w] reaches. */
export async function findCentroidsWithRefinement(dp: Tensor, iterations = 300): Promise<Int32Array> {
  if (dp.rank !== 3 || dp.shape[0] !== 2) throw new Error(`findCentroidsWithRefinement: dp must be [2, h, w], got [${dp.shape.join(', ')}]`);
  return findCentroids(await dp.toArray(), dp.shape[1]!, dp.shape[2]!, iterations).centroids;
}

/**
 * IRNet's make_ins_seg_labels for one image (cams, edge and dp at the grid's stride, IrnMaps). Groups by
 * centroid, splits every class map by group, walks each over the boundary, upsamples, and labels each pixel by
 * the strongest class × group above the background threshold (instanceLabel: 0 background, k = map k − 1);
 * each label's 4-connected fragments are the detections (a fragment under `minFragment` of the image keeps score 0).
 */
export async function makeInsSegLabels({ cams, keys, edge, dp: field, imageSize }: IrnMaps, options: InstanceOptions = {}) {
  const o = { ...defaults, ...options };
  const [C, h, w] = cams.shape as [number, number, number];
  if (keys.length !== C) throw new Error(`makeInsSegLabels: ${keys.length} class keys for ${C} class maps`);
  if (edge.shape.join() !== [1, h, w].join() || field.shape.join() !== [2, h, w].join()) {
    throw new Error(`makeInsSegLabels: edge must be [1, ${h}, ${w}] and dp [2, ${h}, ${w}] like the class maps, got [${edge.shape.join(', ')}] and [${field.shape.join(', ')}]`);
  }
  const dp = await field.toArray();
  const { centroids } = findCentroids(dp, h, w, 300);
  const { groups, count: G } = clusterCentroids(centroids, dp, h, w, o.thres);
  const n = h * w;
  const instanceMap = Float32Array.from({ length: G * n }, (_, i) => (groups[i % n] === Math.floor(i / n) ? 1 : 0));
  const instanceCam = noGrad(() => tidy(() => reshape(mul(reshape(cams, [C, 1, h, w]), reshape(Tensor.fromArray(instanceMap, [G, h, w]), [1, G, h, w])), [C * G, h, w])));
  const { rw, up, max } = await walkedScores(instanceCam, edge, imageSize, o);
  const [H, W] = imageSize;
  const N = H * W;
  const label = argmaxWithBackground(up, C * G, N, o.bgThreshold);
  const detections: Detection[] = labelFragments(label, C * G, [H, W], up, o.minFragment).map(({ plane, score, mask }) => ({ classId: keys[Math.floor(plane / G)]!, score, mask }));
  return { centroids, groups, instanceCam, rw, rwUp: up, rwUpMax: max, instanceLabel: label, detections };
}

/** IRNet's make_sem_seg_labels: the class maps walked over the boundary; 0 = background, keys[c] + 1 otherwise. */
export async function makeSemSegLabels({ cams, keys, edge, imageSize }: Omit<IrnMaps, 'dp'>, options: InstanceOptions = {}) {
  const o = { ...defaults, ...options };
  const { rw, up } = await walkedScores(cams, edge, imageSize, o);
  const label = argmaxWithBackground(up, cams.shape[0]!, imageSize[0] * imageSize[1], o.bgThreshold);
  return { rw, label: Int32Array.from(label, (v) => (v === 0 ? 0 : keys[v - 1]! + 1)) };
}
