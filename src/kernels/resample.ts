// Resampling, NCHW: interpolate (nearest, bilinear) and gridSample. Their backward passes are scatters
// (each output adds into the inputs it read), and WGSL has no float atomics, so both are written as gathers:
//  - interpolate: each input pixel sums over the small neighbourhood of outputs that may read it, found by
//    inverting the monotone source-coordinate map with a margin, and re-checked with the forward's own tap
//    function, so rounding can only widen the search, never drop or add a contribution.
//  - gridSample's input gradient: grid points may read anywhere, so each workgroup owns a 16×16 input tile,
//    streams all grid points of its image in chunks, compacts (prefix sum in workgroup memory) those whose
//    footprint touches the tile, and each thread gathers over that short list. Cost: one cheap test per
//    (tile, point) plus the actual taps; results are deterministic (points are summed in index order).

import { record } from '../engine/autograd.ts';
import { expectDType, expectRank, f32, grid1d, launch, workgroupCompaction } from '../engine/kernel.ts';
import { Tensor, shapeStr } from '../engine/tensor.ts';
import { type Pair, pair } from './conv.ts';

// ---------------------------------------------------------------- interpolate

export type InterpolateMode = 'nearest' | 'bilinear' | 'bicubic';

export interface InterpolateOptions {
  /** Output size [Ho, Wo] (or Ho = Wo); give this or scaleFactor. */
  size?: Pair;
  /** Output size ⌊in · scaleFactor⌋; the sampling ratio is then 1/scaleFactor, as PyTorch. */
  scaleFactor?: number | readonly [number, number];
  mode?: InterpolateMode;
  /** bilinear and bicubic: map corner pixel centres onto each other (src = dst·(in − 1)/(out − 1)). */
  alignCorners?: boolean;
}

/** How one axis maps output indices to input taps. */
interface AxisMap {
  inSize: number;
  outSize: number;
  mode: InterpolateMode;
  alignCorners: boolean;
  /** PyTorch's float32 ratio (input units per output unit). */
  scale: number;
}

function axisMap(mode: InterpolateMode, alignCorners: boolean, inSize: number, outSize: number, scaleFactor: number | undefined): AxisMap {
  // Math.fround mirrors PyTorch computing the ratio in float32 (compute_scales_value / area_pixel_compute_scale).
  const scale = mode !== 'nearest' && alignCorners
    ? (outSize > 1 ? Math.fround((inSize - 1) / (outSize - 1)) : 0)
    : Math.fround(scaleFactor !== undefined && scaleFactor > 0 ? 1 / scaleFactor : inSize / outSize);
  return { inSize, outSize, mode, alignCorners, scale };
}

function axisKey(a: AxisMap): string {
  return `${a.inSize},${a.outSize},${a.mode},${a.alignCorners},${a.scale}`;
}

const linearTaps = `
// Output o reads inputs i0 and i1 with weights 1 − l1 and l1 (nearest: i1 = i0, l1 = 0).
struct Taps { i0: u32, i1: u32, l1: f32 }
fn tap_weight(t: Taps, i: u32) -> f32 {
  return select(0.0, 1.0 - t.l1, t.i0 == i) + select(0.0, t.l1, t.i1 == i);
}`;

const cubicTaps = `
// Output o reads inputs i.x..i.w (clamped to the edge) with the cubic-convolution weights w.
struct Taps { i: vec4<u32>, w: vec4f }
fn tap_weight(t: Taps, i: u32) -> f32 {
  return dot(select(vec4f(0.0), t.w, t.i == vec4<u32>(i)), vec4f(1.0));
}`;

const tapsStruct = (mode: InterpolateMode) => (mode === 'bicubic' ? cubicTaps : linearTaps);

/** WGSL `fn taps_<name>(o: u32) -> Taps`, PyTorch's CPU index computation (UpSample.h) for this axis. */
function tapsFn(name: string, a: AxisMap): string {
  const last = a.inSize - 1;
  let body: string;
  if (a.mode === 'bicubic') {
    // PyTorch's upsample_bicubic2d: same size copies; otherwise the source coordinate unclamped, taps
    // ⌊src⌋ − 1 … ⌊src⌋ + 2 clamped to the edge, cubic convolution with A = −0.75
    body = a.outSize === a.inSize ? 'return Taps(vec4<u32>(o), vec4f(0.0, 1.0, 0.0, 0.0));' : `let src = ${a.alignCorners ? `${f32(a.scale)} * f32(o)` : `${f32(a.scale)} * (f32(o) + 0.5) - 0.5`};
  let f = floor(src);
  let t = src - f;
  let A = -0.75;
  let x0 = t + 1.0;
  let x2 = 1.0 - t;
  let x3 = 2.0 - t;
  let w = vec4f(((A * x0 - 5.0 * A) * x0 + 8.0 * A) * x0 - 4.0 * A, ((A + 2.0) * t - (A + 3.0)) * t * t + 1.0,
    ((A + 2.0) * x2 - (A + 3.0)) * x2 * x2 + 1.0, ((A * x3 - 5.0 * A) * x3 + 8.0 * A) * x3 - 4.0 * A);
  let i = clamp(vec4<i32>(i32(f)) + vec4<i32>(-1, 0, 1, 2), vec4<i32>(0), vec4<i32>(${last}));
  return Taps(vec4<u32>(i), w);`;
  } else if (a.outSize === a.inSize) body = 'return Taps(o, o, 0.0);';
  else if (a.mode === 'nearest' && a.outSize === 2 * a.inSize) body = 'return Taps(o >> 1u, o >> 1u, 0.0);';
  else if (a.mode === 'nearest') body = `let i = min(u32(floor(f32(o) * ${f32(a.scale)})), ${last}u);\n  return Taps(i, i, 0.0);`;
  else {
    const src = a.alignCorners ? `${f32(a.scale)} * f32(o)` : `max(${f32(a.scale)} * (f32(o) + 0.5) - 0.5, 0.0)`;
    body = `let src = ${src};
  let i0 = min(u32(floor(src)), ${last}u);
  return Taps(i0, i0 + select(0u, 1u, i0 < ${last}u), clamp(src - f32(i0), 0.0, 1.0));`;
  }
  return `fn taps_${name}(o: u32) -> Taps {\n  ${body}\n}`;
}

/**
 * WGSL i32 bounds [lo, hi] of the outputs that may read input `i`: those whose source coordinate lies in
 * [i − 1, i + 1], widened by 2 for rounding and for PyTorch's special cases (identity, nearest 2×); the last
 * input also takes every output clamped onto it.
 */
function searchRange(a: AxisMap, i: string): { lo: string; hi: string } {
  if (a.scale === 0) return { lo: '0', hi: `${a.outSize - 1}` };
  const offset = a.mode !== 'nearest' && !a.alignCorners ? 0.5 * a.scale - 0.5 : 0;
  const inverse = f32(1 / a.scale);
  const at = (d: number) => `(f32(${i}) + ${f32(d - offset)}) * ${inverse}`;
  // cubic taps reach two inputs either side of the source coordinate, linear ones one
  const reach = a.mode === 'bicubic' ? 2 : 1;
  return {
    lo: `max(i32(floor(${at(-reach)})) - 2, 0)`,
    hi: `select(min(i32(ceil(${at(reach)})) + 2, ${a.outSize - 1}), ${a.outSize - 1}, ${i} == ${a.inSize - 1})`,
  };
}

function outputSize(op: string, x: Tensor, size: Pair | undefined, scaleFactor: InterpolateOptions['scaleFactor']): { out: [number, number]; factors: (number | undefined)[] } {
  if ((size === undefined) === (scaleFactor === undefined)) throw new Error(`${op}: give exactly one of size and scaleFactor`);
  if (size !== undefined) return { out: pair(op, 'size', size, 1), factors: [undefined, undefined] };
  const factors = typeof scaleFactor === 'number' ? [scaleFactor, scaleFactor] : [scaleFactor![0], scaleFactor![1]];
  const out = factors.map((f, a) => Math.floor(x.shape[2 + a]! * f)) as [number, number];
  if (factors.some((f) => !(f > 0)) || out.some((n) => n < 1)) {
    throw new Error(`${op}: scaleFactor ${JSON.stringify(scaleFactor)} gives an empty output for input ${shapeStr(x.shape)}`);
  }
  return { out, factors };
}

/**
 * Resizes x [N, C, H, W] as torch.nn.functional.interpolate: 'nearest' (PyTorch's legacy nearest,
 * src = ⌊dst · ratio⌋), 'bilinear' (alignCorners false: src = (dst + 0.5) · ratio − 0.5, clamped at 0) or
 * 'bicubic' (the same source coordinate, not clamped; 4×4 taps clamped to the edge; A = −0.75; no clamping of
 * the result, which may overshoot the input's range).
 */
export function interpolate(x: Tensor, { size, scaleFactor, mode = 'nearest', alignCorners }: InterpolateOptions): Tensor {
  const op = 'interpolate';
  expectDType(op, x, 'f32');
  expectRank(op, 'input', x, 4);
  if (mode !== 'nearest' && mode !== 'bilinear' && mode !== 'bicubic') throw new Error(`${op}: mode must be 'nearest', 'bilinear' or 'bicubic', got '${mode}'`);
  if (mode === 'nearest' && alignCorners !== undefined) throw new Error(`${op}: alignCorners can only be set with mode 'bilinear' or 'bicubic'`);
  const { out, factors } = outputSize(op, x, size, scaleFactor);
  const h = axisMap(mode, alignCorners ?? false, x.shape[2]!, out[0], factors[0]);
  const w = axisMap(mode, alignCorners ?? false, x.shape[3]!, out[1], factors[1]);
  const y = interpolateForward(x, h, w);
  return record(op, y, [x], (g) => [interpolateBackward(g, x.shape, h, w)]);
}

function interpolateForward(x: Tensor, h: AxisMap, w: AxisMap): Tensor {
  const [N, C, H, W] = x.shape as [number, number, number, number];
  const [Ho, Wo] = [h.outSize, w.outSize];
  const out = Tensor.empty([N, C, Ho, Wo]);
  const grid = grid1d(out.size);
  // bicubic: each of the four rows interpolated along w, then the rows along h (PyTorch's order)
  const row = (a: number) => `dot(tw.w, vec4f(x[base + th.i[${a}] * ${W}u + tw.i.x], x[base + th.i[${a}] * ${W}u + tw.i.y], x[base + th.i[${a}] * ${W}u + tw.i.z], x[base + th.i[${a}] * ${W}u + tw.i.w]))`;
  const value = h.mode === 'nearest'
    ? 'x[r0 + tw.i0]'
    : h.mode === 'bicubic'
      ? `dot(th.w, vec4f(${[0, 1, 2, 3].map(row).join(', ')}))`
      : '(1.0 - th.l1) * ((1.0 - tw.l1) * x[r0 + tw.i0] + tw.l1 * x[r0 + tw.i1]) + th.l1 * ((1.0 - tw.l1) * x[r1 + tw.i0] + tw.l1 * x[r1 + tw.i1])';
  launch({
    name: `interpolate.${h.mode}`,
    key: `${shapeStr(x.shape)}|${axisKey(h)}|${axisKey(w)}`,
    inputs: { x },
    outputs: { out },
    workgroups: grid.workgroups,
    wgsl: (bindings) => `${bindings}
${tapsStruct(h.mode)}
${tapsFn('h', h)}
${tapsFn('w', w)}
${grid.main}
  let th = taps_h((i / ${Wo}u) % ${Ho}u);
  let tw = taps_w(i % ${Wo}u);
  let base = (i / ${Ho * Wo}u) * ${H * W}u;
  ${h.mode === 'bicubic' ? '' : `let r0 = base + th.i0 * ${W}u;
  let r1 = base + th.i1 * ${W}u;`}
  out[i] = ${value};
}`,
  });
  return out;
}

/** dx[h, w] = Σ over nearby outputs (oh, ow) of tap_weight_h · tap_weight_w · g[oh, ow] (see the file comment). */
function interpolateBackward(g: Tensor, inShape: readonly number[], h: AxisMap, w: AxisMap): Tensor {
  const [, , H, W] = inShape as [number, number, number, number];
  const [Ho, Wo] = [h.outSize, w.outSize];
  const dx = Tensor.empty(inShape);
  const grid = grid1d(dx.size);
  const rh = searchRange(h, 'ih');
  const rw = searchRange(w, 'iw');
  launch({
    name: `interpolate.${h.mode}.backward`,
    key: `${shapeStr(inShape)}|${axisKey(h)}|${axisKey(w)}`,
    inputs: { g },
    outputs: { dx },
    workgroups: grid.workgroups,
    wgsl: (bindings) => `${bindings}
${tapsStruct(h.mode)}
${tapsFn('h', h)}
${tapsFn('w', w)}
${grid.main}
  let iw = i % ${W}u;
  let ih = (i / ${W}u) % ${H}u;
  let base = (i / ${H * W}u) * ${Ho * Wo}u;
  let ow0 = ${rw.lo};
  let ow1 = ${rw.hi};
  var acc = 0.0;
  for (var oh = ${rh.lo}; oh <= ${rh.hi}; oh++) {
    let wh = tap_weight(taps_h(u32(oh)), ih);
    if (wh == 0.0) { continue; }
    var row = 0.0;
    for (var ow = ow0; ow <= ow1; ow++) {
      row += tap_weight(taps_w(u32(ow)), iw) * g[base + u32(oh) * ${Wo}u + u32(ow)];
    }
    acc += wh * row;
  }
  dx[i] = acc;
}`,
  });
  return dx;
}

// ---------------------------------------------------------------- gridSample

export interface GridSampleOptions {
  mode?: 'bilinear' | 'nearest';
  /** Values outside x: zeros, or the nearest border value. */
  paddingMode?: 'zeros' | 'border';
  alignCorners?: boolean;
}

interface SampleSpec {
  N: number;
  C: number;
  H: number;
  W: number;
  /** Grid points per image (Ho · Wo). */
  P: number;
  mode: 'bilinear' | 'nearest';
  paddingMode: 'zeros' | 'border';
  alignCorners: boolean;
}

function sampleKey(s: SampleSpec): string {
  return `${s.N},${s.C},${s.H},${s.W},${s.P}|${s.mode}|${s.paddingMode}|${s.alignCorners}`;
}

/**
 * WGSL shared by the gridSample kernels (they all bind the grid as `grid`): `sample_pos(n, p)` gives the
 * pixel coordinates of grid point p of image n (xy) and their derivatives by the grid values (zw);
 * `corners(pos)` the pixels it reads and their weights.
 */
function samplingWgsl(s: SampleSpec): string {
  const axis = (v: string, size: number) => {
    const [unnormalize, slope] = s.alignCorners
      ? [`(${v} + 1.0) * ${f32((size - 1) / 2)}`, f32((size - 1) / 2)]
      : [`((${v} + 1.0) * ${f32(size)} - 1.0) * 0.5`, f32(size / 2)];
    // border: clip to the image; the clipped coordinate has no gradient (PyTorch's clip_coordinates_set_grad)
    return s.paddingMode === 'border'
      ? `clamp(${unnormalize}, 0.0, ${f32(size - 1)}), select(0.0, ${slope}, ${unnormalize} > 0.0 && ${unnormalize} < ${f32(size - 1)})`
      : `${unnormalize}, ${slope}`;
  };
  const corners = s.mode === 'bilinear'
    ? `let f = floor(pos);
  let t = pos - f;
  return Corners(vec2i(f), vec2f(1.0 - t.x, t.x), vec2f(1.0 - t.y, t.y));`
    : `return Corners(vec2i(round(pos)), vec2f(1.0, 0.0), vec2f(1.0, 0.0));`;
  return `
fn sample_pos(n: u32, p: u32) -> vec4f {
  let gx = grid[(n * ${s.P}u + p) * 2u];
  let gy = grid[(n * ${s.P}u + p) * 2u + 1u];
  let ax = vec2f(${axis('gx', s.W)});
  let ay = vec2f(${axis('gy', s.H)});
  return vec4f(ax.x, ay.x, ax.y, ay.y);
}
// The 2×2 pixels from \`at\` (top-left) with column weights wx and row weights wy (nearest: one pixel).
struct Corners { at: vec2i, wx: vec2f, wy: vec2f }
fn corners(pos: vec2f) -> Corners {
  ${corners}
}
fn inside(q: vec2i) -> bool {
  return q.x >= 0 && q.y >= 0 && q.x < ${s.W} && q.y < ${s.H};
}`;
}

/**
 * Samples x [N, C, H, W] at grid [N, Ho, Wo, 2] points (x, y) in [−1, 1] (−1: the left/top edge, or the
 * first pixel's centre with alignCorners), as torch.nn.functional.grid_sample; output [N, C, Ho, Wo].
 */
export function gridSample(x: Tensor, grid: Tensor, { mode = 'bilinear', paddingMode = 'zeros', alignCorners = false }: GridSampleOptions = {}): Tensor {
  const op = 'gridSample';
  expectDType(op, x, 'f32');
  expectDType(op, grid, 'f32');
  expectRank(op, 'input', x, 4);
  expectRank(op, 'grid', grid, 4);
  const [N, C, H, W] = x.shape as [number, number, number, number];
  if (grid.shape[0] !== N || grid.shape[3] !== 2) {
    throw new Error(`${op}: grid ${shapeStr(grid.shape)} must be [${N}, Ho, Wo, 2] for input ${shapeStr(x.shape)}`);
  }
  if (mode !== 'bilinear' && mode !== 'nearest') throw new Error(`${op}: mode must be 'bilinear' or 'nearest', got '${mode}'`);
  if (paddingMode !== 'zeros' && paddingMode !== 'border') throw new Error(`${op}: paddingMode must be 'zeros' or 'border', got '${paddingMode}'`);
  const s: SampleSpec = { N, C, H, W, P: grid.shape[1]! * grid.shape[2]!, mode, paddingMode, alignCorners };
  const y = sampleForward(x, grid, s, [grid.shape[1]!, grid.shape[2]!]);
  return record(op, y, [x, grid], (g, [xs, gs]) => [
    x.requiresGrad ? sampleInputGrad(g, gs!, s) : null,
    // nearest sampling is piecewise constant in the grid
    grid.requiresGrad ? (mode === 'nearest' ? Tensor.zeros(grid.shape) : sampleGridGrad(g, xs!, gs!, s)) : null,
  ], [x, grid]);
}

function sampleForward(x: Tensor, grid: Tensor, s: SampleSpec, outHW: [number, number]): Tensor {
  const out = Tensor.empty([s.N, s.C, ...outHW]);
  const g = grid1d(out.size);
  launch({
    name: 'gridSample',
    key: sampleKey(s),
    inputs: { x, grid },
    outputs: { out },
    workgroups: g.workgroups,
    wgsl: (bindings) => `${bindings}
${samplingWgsl(s)}
${g.main}
  let p = i % ${s.P}u;
  let nc = i / ${s.P}u;
  let k = corners(sample_pos(nc / ${s.C}u, p).xy);
  let base = nc * ${s.H * s.W}u;
  var acc = 0.0;
  for (var dy = 0; dy < 2; dy++) {
    for (var dx = 0; dx < 2; dx++) {
      let q = k.at + vec2i(dx, dy);
      if (inside(q)) { acc += k.wx[dx] * k.wy[dy] * x[base + u32(q.y * ${s.W} + q.x)]; }
    }
  }
  out[i] = acc;
}`,
  });
  return out;
}

/** The grid gradient of bilinear sampling: one thread per grid point, summing over channels. */
function sampleGridGrad(g: Tensor, x: Tensor, grid: Tensor, s: SampleSpec): Tensor {
  const dgrid = Tensor.empty(grid.shape);
  const threads = grid1d(s.N * s.P);
  launch({
    name: 'gridSample.gridGrad',
    key: sampleKey(s),
    inputs: { g, x, grid },
    outputs: { dgrid },
    workgroups: threads.workgroups,
    wgsl: (bindings) => `${bindings}
${samplingWgsl(s)}
${threads.main}
  let n = i / ${s.P}u;
  let p = i % ${s.P}u;
  let pos = sample_pos(n, p);
  let k = corners(pos.xy);
  var d = vec2f(0.0);
  for (var c = 0u; c < ${s.C}u; c++) {
    let nc = n * ${s.C}u + c;
    let base = nc * ${s.H * s.W}u;
    var v: array<f32, 4>;
    for (var j = 0; j < 4; j++) {
      let q = k.at + vec2i(j % 2, j / 2);
      if (inside(q)) { v[j] = x[base + u32(q.y * ${s.W} + q.x)]; }
    }
    let up = g[nc * ${s.P}u + p];
    // d/dx: column difference weighted by the rows; d/dy: row difference weighted by the columns
    d += up * vec2f(k.wy.x * (v[1] - v[0]) + k.wy.y * (v[3] - v[2]), k.wx.x * (v[2] - v[0]) + k.wx.y * (v[3] - v[1]));
  }
  dgrid[2u * i] = d.x * pos.z;
  dgrid[2u * i + 1u] = d.y * pos.w;
}`,
  });
  return dgrid;
}

const tile = 16;

/** The input gradient as a tiled gather (see the file comment): one workgroup per (n, c, 16×16 tile). */
function sampleInputGrad(g: Tensor, grid: Tensor, s: SampleSpec): Tensor {
  const dx = Tensor.empty([s.N, s.C, s.H, s.W]);
  const tilesX = Math.ceil(s.W / tile);
  const tiles = tilesX * Math.ceil(s.H / tile);
  const groups = s.N * s.C * tiles;
  const gx = Math.min(groups, 65535);
  const chunk = tile * tile;
  const compaction = workgroupCompaction(chunk);
  launch({
    name: 'gridSample.inputGrad',
    key: sampleKey(s),
    inputs: { g, grid },
    outputs: { dx },
    workgroups: [gx, Math.ceil(groups / gx)],
    wgsl: (bindings) => `${bindings}
${samplingWgsl(s)}
${compaction.declarations}
@compute @workgroup_size(${chunk})
fn main(@builtin(workgroup_id) wid: vec3u, @builtin(local_invocation_index) t: u32) {
  let group = wid.x + wid.y * ${gx}u;
  if (group >= ${groups}u) { return; }
  let nc = group / ${tiles}u;
  let n = nc / ${s.C}u;
  let origin = vec2i(i32((group % ${tiles}u) % ${tilesX}u) * ${tile}, i32((group % ${tiles}u) / ${tilesX}u) * ${tile});
  let pixel = origin + vec2i(i32(t % ${tile}u), i32(t / ${tile}u));
  var acc = 0.0;
  for (var start = 0u; start < ${s.P}u; start += ${chunk}u) {
    // 1. which points of this chunk read a pixel of the tile
    let p = start + t;
    var pos = vec2f(0.0);
    var hit = 0u;
    if (p < ${s.P}u) {
      pos = sample_pos(n, p).xy;
      let a = corners(pos).at;
      hit = select(0u, 1u, all(a + 1 >= origin) && all(a <= origin + ${tile - 1}));
    }
    // 2. the hits, compacted into a list in point order
    ${compaction.compact('hit', 'pos', 'p')}
    // 3. each pixel gathers from the points in the list, in point order
    for (var j = 0u; j < count; j++) {
      let k = corners(listPos[j]);
      let d = pixel - k.at;
      if (all(d >= vec2i(0)) && all(d <= vec2i(1))) {
        acc += k.wx[d.x] * k.wy[d.y] * g[nc * ${s.P}u + listPoint[j]];
      }
    }
    workgroupBarrier();
  }
  if (pixel.x < ${s.W} && pixel.y < ${s.H}) {
    dx[nc * ${s.H * s.W}u + u32(pixel.y * ${s.W} + pixel.x)] = acc;
  }
}`,
  });
  return dx;
}
