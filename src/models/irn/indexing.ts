// IRNet's pixel-pair indexing (reference jiwoon-ahn/irn misc/indexing.py, PathIndex): the search directions within a
// radius (a half plane, so every unordered pair appears once), grouped by the length of the straight pixel path
// between the two pixels, and the flat indices of sources, destinations and path pixels on a feature grid. The
// boundary map is read along these paths to give each pair its affinity.

import { Tensor, tidy } from '../../engine/tensor.ts';
import { noGrad } from '../../engine/autograd.ts';
import { affine, div, mul, pow } from '../../kernels/elementwise.ts';
import { matmul } from '../../kernels/matmul.ts';
import { indexSelect } from '../../kernels/gather.ts';
import { affinityOffsets, randomWalkStep } from '../../kernels/random_walk.ts';
import { max, sum } from '../../kernels/reduce.ts';
import { concat, pad, reshape, slice } from '../../kernels/shape.ts';

/** A direction (dy, dx) with its path: pixels relative to the source, destination first, the source last. */
export interface SearchPath {
  dy: number;
  dx: number;
  path: [number, number][];
}

/** The directions within `radius` in IRNet's order, grouped by path length (ascending; generation order inside a group). */
export function searchPaths(radius: number): SearchPath[][] {
  // psa's and IRNet's pairs are generated alike; IRNet then groups them by path length
  const dirs = affinityOffsets(radius);
  const byLength = new Map<number, SearchPath[]>();
  for (const [dy, dx] of dirs) {
    const lengthSq = dy * dy + dx * dx;
    const path: [number, number][] = [];
    for (let y = Math.min(0, dy); y <= Math.max(0, dy); y++) {
      for (let x = Math.min(0, dx); x <= Math.max(0, dx); x++) if ((dy * x - dx * y) ** 2 / lengthSq < 1) path.push([y, x]);
    }
    // farthest first (stable: the scan order breaks ties)
    path.sort((a, b) => Math.abs(b[0]) + Math.abs(b[1]) - (Math.abs(a[0]) + Math.abs(a[1])));
    if (!byLength.has(path.length)) byLength.set(path.length, []);
    byLength.get(path.length)!.push({ dy, dx, path });
  }
  return [...byLength.keys()].sort((a, b) => a - b).map((l) => byLength.get(l)!);
}

/** PathIndex(radius, size): the directions and, on an H×W grid, the sources whose every destination is inside it. */
export class PathIndex {
  readonly radiusFloor: number;
  readonly groups: SearchPath[][];
  /** The directions in channel order (grouped by path length). */
  readonly directions: SearchPath[];
  /** Flat indices of the sources: rows 0..H−1−rf, columns rf..W−1−rf, row-major. */
  readonly srcIndices: Int32Array;
  /** [directions × sources] flat indices of the destinations. */
  readonly dstIndices: Int32Array;

  constructor(readonly radius: number, readonly size: [number, number]) {
    const [H, W] = size;
    const rf = (this.radiusFloor = radius - 1);
    if (H - rf < 1 || W - 2 * rf < 1) throw new Error(`PathIndex: a ${H}×${W} grid has no source pixel at radius ${radius}`);
    this.groups = searchPaths(radius);
    this.directions = this.groups.flat();
    const src: number[] = [];
    for (let y = 0; y < H - rf; y++) for (let x = rf; x < W - rf; x++) src.push(y * W + x);
    this.srcIndices = Int32Array.from(src);
    this.dstIndices = Int32Array.from(this.directions.flatMap((d) => src.map((s) => s + d.dy * W + d.dx)));
  }

  /** [P_g × L_g × S] flat indices of group g's path pixels for every source. */
  pathIndices(g: number): Int32Array {
    const W = this.size[1];
    const group = this.groups[g]!;
    const L = group[0]!.path.length;
    const S = this.srcIndices.length;
    const out = new Int32Array(group.length * L * S);
    group.forEach((d, p) => d.path.forEach(([y, x], l) => {
      for (let s = 0; s < S; s++) out[(p * L + l) * S + s] = this.srcIndices[s]! + y * W + x;
    }));
    return out;
  }
}

/**
 * IRNet's edge_to_affinity: boundary B [1, 1, H, W] (the PathIndex's grid) → [1, O, S] affinities, O directions
 * in PathIndex order, S sources: 1 − max of B over the path's pixels (both ends included). Differentiable w.r.t. B
 * (the gradient goes to the path's first maximal pixel, as max_pool2d's).
 */
export function edgeToAffinity(B: Tensor, index: PathIndex): Tensor {
  const [H, W] = index.size;
  if (B.rank !== 4 || B.shape[0] !== 1 || B.shape[1] !== 1 || B.shape[2] !== H || B.shape[3] !== W) {
    throw new Error(`edgeToAffinity: the boundary map has shape [${B.shape.join(', ')}], expected [1, 1, ${H}, ${W}] (the PathIndex's grid)`);
  }
  return tidy(() => {
    const flat = reshape(B, [H * W]);
    const S = index.srcIndices.length;
    const parts = index.groups.map((g, k) => {
      const L = g[0]!.path.length;
      const along = reshape(indexSelect(flat, 0, Tensor.fromArray(index.pathIndices(k), [g.length * L * S], 'i32')), [g.length, L, S]);
      return max(along, 1);
    });
    return reshape(affine(concat(parts, 0), -1, 1), [1, index.directions.length, S]);
  });
}

/**
 * The dense [H·W, H·W] affinity matrix of a boundary map B [1, H, W] (row and column = flat pixel index): for
 * every pair within `radius` (in either direction), 1 − max of B over the path, 1 on the diagonal, 0 elsewhere;
 * pairs reaching out of the grid are cut (IRNet pads B with 1 so that every pixel is a source).
 */
export async function affinityDense(B: Tensor, radius: number): Promise<Float32Array> {
  const [, H, W] = B.shape as [number, number, number];
  const r = radius;
  const [Hp, Wp] = [H + r, W + 2 * r];
  const index = new PathIndex(r, [Hp, Wp]);
  const sparse = noGrad(() => tidy(() => edgeToAffinity(reshape(pad(B, [r, r, 0, r], 1), [1, 1, Hp, Wp]), index)));
  const aff = await sparse.toArray();
  sparse.dispose();
  const N = H * W;
  const dense = new Float32Array(N * N);
  for (let i = 0; i < N; i++) dense[i * N + i] = 1;
  const S = index.srcIndices.length;
  index.directions.forEach((_, d) => index.srcIndices.forEach((src, s) => {
    const dst = index.dstIndices[d * S + s]!;
    const [sy, sx, ty, tx] = [Math.floor(src / Wp), (src % Wp) - r, Math.floor(dst / Wp), (dst % Wp) - r];
    if (sy < H && ty < H && sx >= 0 && sx < W && tx >= 0 && tx < W) dense[(sy * W + sx) * N + ty * W + tx] = dense[(ty * W + tx) * N + sy * W + sx] = aff[d * S + s]!;
  }));
  return dense;
}

/** The largest dense transition matrix propagateToEdge builds (a 64×64 grid: 64 MiB); larger grids walk sparsely. */
const denseBytes = 64 * 2 ** 20;

/**
 * IRNet's propagate_to_edge: class-by-group score maps x [K, H, W] spread over the boundary B [1, H, W]:
 * x ← x·(1 − B), then x · T^(2^expTimes) with T = A^β divided by its column sums, A = affinityDense(B). Up to a
 * 64×64 grid T is squared expTimes times on the GPU, as IRNet computes it (2^8 sequential sparse steps in float32
 * drift by ~1e-4 of the maximum; squaring keeps the float32 error at IRNet's own). A larger grid's matrix would
 * not fit a buffer ((H·W)² values: 1 GiB at 128×128), so there the walk takes its 2^expTimes steps on the sparse
 * pairs (randomWalkStep), on B padded as IRNet pads it: a pair touching the padding has affinity 0. `dense: false`
 * takes the sparse walk at any size.
 */
export async function propagateToEdge(x: Tensor, B: Tensor, radius: number, beta: number, expTimes: number, { dense = true } = {}): Promise<Tensor> {
  const [K, H, W] = x.shape as [number, number, number];
  if (B.rank !== 3 || B.shape[0] !== 1 || B.shape[1] !== H || B.shape[2] !== W) throw new Error(`propagateToEdge: the boundary map has shape [${B.shape.join(', ')}], expected [1, ${H}, ${W}] (the score maps' grid)`);
  if (!Number.isInteger(expTimes) || expTimes < 0 || expTimes > 16) throw new Error(`propagateToEdge: expTimes must be an integer in 0..16, got ${expTimes}`);
  const N = H * W;
  if (!dense || 4 * N * N > denseBytes) return sparseWalk(x, B, radius, beta, expTimes);
  const A0 = await affinityDense(B, radius);
  return noGrad(() => tidy(() => {
    const A = pow(Tensor.fromArray(A0, [N, N]), beta);
    let T = div(A, sum(A, 0, { keepdim: true }));
    for (let k = 0; k < expTimes; k++) T = matmul(T, T);
    return reshape(matmul(reshape(mul(x, affine(B, -1, 1)), [K, N]), T), [K, H, W]);
  }));
}

/** propagateToEdge by 2^expTimes sparse steps on the padded grid (the pairs of psa's walk kernel are IRNet's, reordered). */
function sparseWalk(x: Tensor, B: Tensor, r: number, beta: number, expTimes: number): Tensor {
  const [K, H, W] = x.shape as [number, number, number];
  const [Hp, Wp] = [H + r, W + 2 * r];
  const index = new PathIndex(r, [Hp, Wp]);
  // psa's offsets in its order, as IRNet direction indices
  const order = affinityOffsets(r).map(([dy, dx]) => index.directions.findIndex((d) => d.dy === dy && d.dx === dx));
  const [rows, cols] = [Hp - (r - 1), Wp - 2 * (r - 1)];
  return noGrad(() => {
    const w = tidy(() => {
      const aff = edgeToAffinity(reshape(pad(B, [r, r, 0, r], 1), [1, 1, Hp, Wp]), index);
      return pow(reshape(indexSelect(aff, 1, Tensor.fromArray(Int32Array.from(order), [order.length], 'i32')), [order.length, rows, cols]), beta);
    });
    let v = tidy(() => pad(mul(x, affine(B, -1, 1)), [r, r, 0, r], 0));
    for (let s = 0; s < 2 ** expTimes; s++) {
      const next = randomWalkStep(v, w, r);
      v.dispose();
      v = next;
    }
    w.dispose();
    const out = tidy(() => slice(slice(v, 1, 0, H), 2, r, r + W));
    v.dispose();
    return out;
  });
}
