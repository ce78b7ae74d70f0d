// AffinityNet's random walk (Ahn & Kwak, CVPR 2018; reference jiwoon-ahn/psa), on the sparse radius
// neighbourhood: never a dense HW×HW matrix.
//
// Pairs follow psa's get_indices_of_pairs exactly: offsets (0, dx) for dx = 1..r-1, then (dy, dx) for
// dy = 1..r-1, |dx| <= r-1 with dx² + dy² < r²; the "from" pixels are the crop rows 0..H-r, columns
// r-1..W-r, and each pair (from, from + offset) is an edge of a symmetric matrix A with 1 on the diagonal.
// Edge weights are stored as [O, Hc, Wc] (offset, crop row, crop column), psa's order for `aff`.
//
// psa normalises T = A^β so that each column sums to 1 and squares it logt times; cam · T^(2^logt) equals
// 2^logt applications of x ← x · T, which is what runs here, one gather kernel per step:
//   (x · T)[k, j] = (x[k, j] + Σ_{i ~ j} w_ij x[k, i]) / (1 + Σ_{i ~ j} w_ij).

import { record } from '../engine/autograd.ts';
import { expectDType, expectRank, grid1d, launch } from '../engine/kernel.ts';
import { Tensor, shapeStr } from '../engine/tensor.ts';
import { div, pow } from './elementwise.ts';
import { reshape } from './shape.ts';

/** psa's neighbour offsets [dy, dx] for `radius`, in its order (34 for radius 5). */
export function affinityOffsets(radius: number): [number, number][] {
  if (!Number.isInteger(radius) || radius < 2) throw new Error(`affinity: radius must be an integer >= 2, got ${radius}`);
  const out: [number, number][] = [];
  for (let dx = 1; dx < radius; dx++) out.push([0, dx]);
  for (let dy = 1; dy < radius; dy++) {
    for (let dx = -radius + 1; dx < radius; dx++) if (dx * dx + dy * dy < radius * radius) out.push([dy, dx]);
  }
  return out;
}

/** The crop of "from" pixels: rows 0..rows-1, columns x0..x0+cols-1 of an H×W grid. */
export function affinityCrop(radius: number, H: number, W: number): { rows: number; cols: number; x0: number } {
  const rows = H - radius + 1;
  const cols = W - 2 * (radius - 1);
  if (rows < 1 || cols < 1) {
    throw new Error(`affinity: a ${H}×${W} grid is too small for radius ${radius} (needs H >= ${radius} and W >= ${2 * radius - 1})`);
  }
  return { rows, cols, x0: radius - 1 };
}

/** WGSL constant array of the offsets. */
function offsetsWgsl(radius: number): string {
  const o = affinityOffsets(radius);
  return `var<private> OFF: array<vec2i, ${o.length}> = array<vec2i, ${o.length}>(${o.map(([dy, dx]) => `vec2i(${dy}, ${dx})`).join(', ')});`;
}

// ---------------------------------------------------------------- affinities

/** aff[n, o, yc, xc] = exp(−mean_c |f[n, c, from] − f[n, c, from + offset o]|). */
function affinityForward(f: Tensor, radius: number): Tensor {
  const [N, C, H, W] = f.shape as [number, number, number, number];
  const { rows, cols, x0 } = affinityCrop(radius, H, W);
  const O = affinityOffsets(radius).length;
  const aff = Tensor.empty([N, O, rows, cols]);
  const grid = grid1d(aff.size);
  launch({
    name: 'affinity',
    key: `${shapeStr(f.shape)}|${radius}`,
    inputs: { f },
    outputs: { aff },
    workgroups: grid.workgroups,
    wgsl: (bindings) => `${bindings}
${offsetsWgsl(radius)}
${grid.main}
  let xc = i32(i % ${cols}u);
  let yc = i32((i / ${cols}u) % ${rows}u);
  let o = (i / ${rows * cols}u) % ${O}u;
  let n = i / ${O * rows * cols}u;
  let d = OFF[o];
  let src = u32(yc * ${W} + xc + ${x0});
  let dst = u32((yc + d.x) * ${W} + xc + ${x0} + d.y);
  var s = 0.0;
  for (var c = 0u; c < ${C}u; c++) {
    let base = (n * ${C}u + c) * ${H * W}u;
    s += abs(f[base + src] - f[base + dst]);
  }
  aff[i] = exp(-s / ${C}.0);
}`,
  });
  return aff;
}

/**
 * df[n, c, p] = Σ over the pairs holding p of g·aff/C·(±sign(f_from − f_to)): a gather over the offsets
 * (p as "from", then p as "to"), so no two threads write the same element.
 */
function affinityBackward(g: Tensor, aff: Tensor, f: Tensor, radius: number): Tensor {
  const [N, C, H, W] = f.shape as [number, number, number, number];
  const { rows, cols, x0 } = affinityCrop(radius, H, W);
  const O = affinityOffsets(radius).length;
  const df = Tensor.empty(f.shape);
  const grid = grid1d(df.size);
  launch({
    name: 'affinity.backward',
    key: `${shapeStr(f.shape)}|${radius}`,
    inputs: { g, aff, f },
    outputs: { df },
    workgroups: grid.workgroups,
    wgsl: (bindings) => `${bindings}
${offsetsWgsl(radius)}
fn edge(n: u32, o: u32, yc: i32, xc: i32) -> u32 { return ((n * ${O}u + o) * ${rows}u + u32(yc)) * ${cols}u + u32(xc); }
fn inCrop(yc: i32, xc: i32) -> bool { return yc >= 0 && yc < ${rows} && xc >= 0 && xc < ${cols}; }
${grid.main}
  let x = i32(i % ${W}u);
  let y = i32((i / ${W}u) % ${H}u);
  let n = i / ${C * H * W}u;
  let base = i - u32(y * ${W} + x);
  let fp = f[i];
  var acc = 0.0;
  for (var o = 0u; o < ${O}u; o++) {
    let d = OFF[o];
    if (inCrop(y, x - ${x0})) {
      let e = edge(n, o, y, x - ${x0});
      acc -= g[e] * aff[e] * sign(fp - f[base + u32((y + d.x) * ${W} + x + d.y)]);
    }
    if (inCrop(y - d.x, x - d.y - ${x0})) {
      let e = edge(n, o, y - d.x, x - d.y - ${x0});
      acc += g[e] * aff[e] * sign(f[base + u32((y - d.x) * ${W} + x - d.y)] - fp);
    }
  }
  df[i] = acc / ${C}.0;
}`,
  });
  return df;
}

/**
 * AffinityNet's pixel affinities of features [N, C, H, W] over psa's radius pairs: [N, O, Hc, Wc] with
 * aff = exp(−mean over channels |f_from − f_to|) (the mean, as psa), O = affinityOffsets(radius).length and
 * [Hc, Wc] = affinityCrop(radius, H, W). Differentiable w.r.t. the features.
 */
export function pixelAffinities(features: Tensor, radius: number): Tensor {
  const op = 'pixelAffinities';
  expectDType(op, features, 'f32');
  expectRank(op, 'features', features, 4);
  const aff = affinityForward(features, radius);
  return record(op, aff, [features], (g, [a, f]) => [affinityBackward(g, a!, f!, radius)], [aff, features]);
}

// ---------------------------------------------------------------- one walk step

/**
 * y[k, j] = Σ_i A_ij x[k, i] with A the symmetric edge matrix (1 on the diagonal, w on each pair), divided
 * by the column sum Σ_i A_ij when `normalise`: one thread per (k, j) gathers j's pairs as "from" and as "to".
 */
function stepKernel(x: Tensor, w: Tensor, radius: number, normalise: boolean): Tensor {
  const [K, H, W] = x.shape as [number, number, number];
  const { rows, cols, x0 } = affinityCrop(radius, H, W);
  const O = affinityOffsets(radius).length;
  const y = Tensor.empty(x.shape);
  const grid = grid1d(y.size);
  launch({
    name: normalise ? 'randomWalk.step' : 'randomWalk.spread',
    key: `${shapeStr(x.shape)}|${radius}`,
    inputs: { x, w },
    outputs: { y },
    workgroups: grid.workgroups,
    wgsl: (bindings) => `${bindings}
${offsetsWgsl(radius)}
fn edge(o: u32, yc: i32, xc: i32) -> u32 { return (o * ${rows}u + u32(yc)) * ${cols}u + u32(xc); }
fn inCrop(yc: i32, xc: i32) -> bool { return yc >= 0 && yc < ${rows} && xc >= 0 && xc < ${cols}; }
${grid.main}
  let px = i32(i % ${W}u);
  let py = i32((i / ${W}u) % ${H}u);
  let base = i - u32(py * ${W} + px);
  var acc = x[i];
  var deg = 1.0;
  for (var o = 0u; o < ${O}u; o++) {
    let d = OFF[o];
    if (inCrop(py, px - ${x0})) {
      let a = w[edge(o, py, px - ${x0})];
      acc += a * x[base + u32((py + d.x) * ${W} + px + d.y)];
      deg += a;
    }
    if (inCrop(py - d.x, px - d.y - ${x0})) {
      let a = w[edge(o, py - d.x, px - d.y - ${x0})];
      acc += a * x[base + u32((py - d.x) * ${W} + px - d.y)];
      deg += a;
    }
  }
  y[i] = ${normalise ? 'acc / deg' : 'acc'};
}`,
  });
  return y;
}

/** dw[o, e] = Σ_k u[k, to](x[k, from] − y[k, to]) + u[k, from](x[k, to] − y[k, from]), u = g / column sums. */
function stepWeightGrad(u: Tensor, x: Tensor, y: Tensor, radius: number): Tensor {
  const [K, H, W] = x.shape as [number, number, number];
  const { rows, cols, x0 } = affinityCrop(radius, H, W);
  const O = affinityOffsets(radius).length;
  const dw = Tensor.empty([O, rows, cols]);
  const grid = grid1d(dw.size);
  launch({
    name: 'randomWalk.step.weightGrad',
    key: `${shapeStr(x.shape)}|${radius}`,
    inputs: { u, x, y },
    outputs: { dw },
    workgroups: grid.workgroups,
    wgsl: (bindings) => `${bindings}
${offsetsWgsl(radius)}
${grid.main}
  let xc = i32(i % ${cols}u);
  let yc = i32((i / ${cols}u) % ${rows}u);
  let d = OFF[i / ${rows * cols}u];
  let p = u32(yc * ${W} + xc + ${x0});
  let q = u32((yc + d.x) * ${W} + xc + ${x0} + d.y);
  var acc = 0.0;
  for (var k = 0u; k < ${K}u; k++) {
    let b = k * ${H * W}u;
    acc += u[b + q] * (x[b + p] - y[b + q]) + u[b + p] * (x[b + q] - y[b + p]);
  }
  dw[i] = acc;
}`,
  });
  return dw;
}

/**
 * One random-walk step x [K, H, W] → x · T, T = A column-normalised, A from edge weights w [O, Hc, Wc]
 * (already raised to β). Differentiable w.r.t. x and w.
 */
export function randomWalkStep(x: Tensor, w: Tensor, radius: number): Tensor {
  const op = 'randomWalkStep';
  expectDType(op, x, 'f32');
  expectDType(op, w, 'f32');
  expectRank(op, 'x', x, 3);
  const { rows, cols } = affinityCrop(radius, x.shape[1]!, x.shape[2]!);
  const O = affinityOffsets(radius).length;
  if (w.rank !== 3 || w.shape[0] !== O || w.shape[1] !== rows || w.shape[2] !== cols) {
    throw new Error(`${op}: weights must have shape ${shapeStr([O, rows, cols])} for radius ${radius} on a ${x.shape[1]}×${x.shape[2]} grid, got ${shapeStr(w.shape)}`);
  }
  const y = stepKernel(x, w, radius, true);
  return record(op, y, [x, w], (g, [xs, ws, ys]) => {
    const ones = Tensor.fromArray(new Float32Array(x.shape[1]! * x.shape[2]!).fill(1), [1, x.shape[1]!, x.shape[2]!]);
    const u = div(g, stepKernel(ones, ws!, radius, false));
    return [
      x.requiresGrad ? stepKernel(u, ws!, radius, false) : null,
      w.requiresGrad ? stepWeightGrad(u, xs!, ys!, radius) : null,
    ];
  }, [x, w, y]);
}

// ---------------------------------------------------------------- the walk

export interface RandomWalkOptions {
  /** Neighbourhood radius on the feature grid (psa: 5). */
  radius: number;
  /** Exponent on the affinities (psa: 8). */
  beta: number;
  /** 2^logt walk steps (psa: 8). */
  logt: number;
}

/**
 * psa's random walk: features [1, C, H, W] (AffinityNet's affinity features), cam [K, H, W] (class maps on
 * the same grid) → cam · T^(2^logt) as [K, H, W], T = (A ∘ β) column-normalised as described above.
 * Differentiable w.r.t. the features and the cam.
 */
export function affinityRandomWalk(features: Tensor, cam: Tensor, { radius, beta, logt }: RandomWalkOptions): Tensor {
  const op = 'affinityRandomWalk';
  expectRank(op, 'features', features, 4);
  expectRank(op, 'cam', cam, 3);
  if (features.shape[0] !== 1) throw new Error(`${op}: features must be one image [1, C, H, W], got ${shapeStr(features.shape)}`);
  if (cam.shape[1] !== features.shape[2] || cam.shape[2] !== features.shape[3]) {
    throw new Error(`${op}: cam ${shapeStr(cam.shape)} must be on the feature grid ${features.shape[2]}×${features.shape[3]}`);
  }
  if (!Number.isInteger(logt) || logt < 0 || logt > 16) throw new Error(`${op}: logt must be an integer in 0..16, got ${logt}`);
  if (!(beta > 0)) throw new Error(`${op}: beta must be > 0, got ${beta}`);
  const aff = pixelAffinities(features, radius);
  const w = pow(reshape(aff, aff.shape.slice(1)), beta);
  let x = cam;
  for (let s = 0; s < 2 ** logt; s++) {
    const next = randomWalkStep(x, w, radius);
    if (x !== cam) x.dispose();
    x = next;
  }
  aff.dispose();
  w.dispose();
  return x;
}
