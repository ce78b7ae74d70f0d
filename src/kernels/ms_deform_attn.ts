// Multi-scale deformable attention (Deformable DETR / Mask2Former pixel decoder): each query samples, per
// head, P points on each of L feature levels with bilinear interpolation (zero padding, align_corners false:
// pixel coordinate = loc · size − 0.5) and sums the samples weighted by its attention weights.
//  - forward: one thread per output element (b, q, head, channel).
//  - sampling-location and attention-weight gradients: one thread per sampling point, summing over channels.
//  - value gradient: a scatter (each point adds into 4 pixels), written as a gather because WGSL has no float
//    atomics: each workgroup owns a 16×16 pixel tile of one level of one (image, head), streams that level's
//    points in chunks, compacts those whose footprint touches the tile (prefix sum in workgroup memory), and
//    each pixel gathers over that short list for all channels. Deterministic (points summed in index order).

import { record } from '../engine/autograd.ts';
import { expectDType, expectRank, grid1d, launch, workgroupCompaction } from '../engine/kernel.ts';
import { Tensor, shapeStr } from '../engine/tensor.ts';

interface DeformSpec {
  B: number;
  /** Σ H_l·W_l (value rows). */
  S: number;
  Q: number;
  heads: number;
  D: number;
  levels: readonly (readonly [number, number])[];
  P: number;
}

function specKey(s: DeformSpec): string {
  return `${s.B},${s.S},${s.Q},${s.heads},${s.D},${s.P}|${s.levels.map((l) => l.join('x')).join(',')}`;
}

function levelStarts(s: DeformSpec): number[] {
  const starts: number[] = [];
  let acc = 0;
  for (const [h, w] of s.levels) {
    starts.push(acc);
    acc += h * w;
  }
  return starts;
}

/**
 * WGSL shared by the kernels (they bind `loc`, and `value` when `sampling`): per-level size tables,
 * `point_pos` (pixel coordinates of a sampling point); with `sampling`, `sample_corners` (the 4 bilinear
 * taps of one channel, 0 outside) and `bilinear`.
 */
function deformWgsl(s: DeformSpec, sampling: boolean): string {
  const L = s.levels.length;
  const list = (xs: number[]) => `array<u32, ${L}>(${xs.map((x) => `${x}u`).join(', ')})`;
  return `
fn level_h(l: u32) -> u32 { var t = ${list(s.levels.map((x) => x[0]))}; return t[l]; }
fn level_w(l: u32) -> u32 { var t = ${list(s.levels.map((x) => x[1]))}; return t[l]; }
fn level_start(l: u32) -> u32 { var t = ${list(levelStarts(s))}; return t[l]; }
// Point (b, q, h, l, p), flattened as in the sampling-locations tensor, in pixel coordinates of level l.
fn point_pos(pt: u32, l: u32) -> vec2f {
  return vec2f(loc[2u * pt] * f32(level_w(l)) - 0.5, loc[2u * pt + 1u] * f32(level_h(l)) - 0.5);
}${sampling ? `
// The values at the 2×2 pixels from floor(pos) (x0y0, x1y0, x0y1, x1y1) of channel d of head h, image b.
fn sample_corners(b: u32, h: u32, d: u32, l: u32, pos: vec2f) -> vec4f {
  let f = vec2i(floor(pos));
  let W = i32(level_w(l));
  let H = i32(level_h(l));
  var v = vec4f(0.0);
  for (var j = 0; j < 4; j++) {
    let q = f + vec2i(j % 2, j / 2);
    if (q.x >= 0 && q.y >= 0 && q.x < W && q.y < H) {
      let row = b * ${s.S}u + level_start(l) + u32(q.y * W + q.x);
      v[j] = value[(row * ${s.heads}u + h) * ${s.D}u + d];
    }
  }
  return v;
}
fn bilinear(pos: vec2f, v: vec4f) -> f32 {
  let t = pos - floor(pos);
  return (1.0 - t.y) * ((1.0 - t.x) * v.x + t.x * v.y) + t.y * ((1.0 - t.x) * v.z + t.x * v.w);
}` : ''}`;
}

/**
 * Multi-scale deformable attention, as transformers' `multi_scale_deformable_attention`:
 * value [B, Σ H_l·W_l, heads, D] (levels concatenated, each row-major), spatialShapes [[H_l, W_l], ...],
 * samplingLocations [B, Q, heads, L, P, 2] ((x, y) in [0, 1] per level; outside reads zeros),
 * attentionWeights [B, Q, heads, L, P]; returns [B, Q, heads·D]. Differentiable in all three tensors.
 */
export function msDeformAttn(value: Tensor, spatialShapes: readonly (readonly [number, number])[], samplingLocations: Tensor, attentionWeights: Tensor): Tensor {
  const op = 'msDeformAttn';
  expectDType(op, value, 'f32');
  expectDType(op, samplingLocations, 'f32');
  expectDType(op, attentionWeights, 'f32');
  expectRank(op, 'value', value, 4);
  expectRank(op, 'samplingLocations', samplingLocations, 6);
  expectRank(op, 'attentionWeights', attentionWeights, 5);
  const [B, S, heads, D] = value.shape as [number, number, number, number];
  const L = spatialShapes.length;
  if (L === 0 || spatialShapes.some((hw) => hw.length !== 2 || !hw.every((n) => Number.isInteger(n) && n > 0))) {
    throw new Error(`${op}: spatialShapes must be a non-empty list of [H, W] positive integers, got ${JSON.stringify(spatialShapes)}`);
  }
  const total = spatialShapes.reduce((a, [h, w]) => a + h * w, 0);
  if (total !== S) throw new Error(`${op}: value ${shapeStr(value.shape)} has ${S} rows but spatialShapes ${JSON.stringify(spatialShapes)} cover ${total}`);
  const [, Q, , , P] = samplingLocations.shape as number[];
  const want = [B, Q!, heads, L, P!];
  if (samplingLocations.shape.some((d, k) => d !== [...want, 2][k])) {
    throw new Error(`${op}: samplingLocations ${shapeStr(samplingLocations.shape)} must be [${B}, Q, ${heads}, ${L}, P, 2] for value ${shapeStr(value.shape)} and ${L} levels`);
  }
  if (attentionWeights.shape.some((d, k) => d !== want[k])) {
    throw new Error(`${op}: attentionWeights ${shapeStr(attentionWeights.shape)} must be ${shapeStr(want)} (samplingLocations without the last dim)`);
  }
  const s: DeformSpec = { B, S, Q: Q!, heads, D, levels: spatialShapes.map(([h, w]) => [h, w] as const), P: P! };
  const out = deformForward(value, samplingLocations, attentionWeights, s);
  return record(op, out, [value, samplingLocations, attentionWeights], (g, [v, loc, attn]) => {
    const pointGrads = samplingLocations.requiresGrad || attentionWeights.requiresGrad ? deformPointGrads(g, v!, loc!, attn!, s) : undefined;
    return [value.requiresGrad ? deformValueGrad(g, loc!, attn!, s) : null, pointGrads?.dloc, pointGrads?.dattn];
  }, [value, samplingLocations, attentionWeights]);
}

function deformForward(value: Tensor, loc: Tensor, attn: Tensor, s: DeformSpec): Tensor {
  const out = Tensor.empty([s.B, s.Q, s.heads * s.D]);
  const grid = grid1d(out.size);
  const LP = s.levels.length * s.P;
  launch({
    name: 'msDeformAttn',
    key: specKey(s),
    inputs: { value, loc, attn },
    outputs: { out },
    workgroups: grid.workgroups,
    wgsl: (bindings) => `${bindings}
${deformWgsl(s, true)}
${grid.main}
  let d = i % ${s.D}u;
  let bqh = i / ${s.D}u;
  let h = bqh % ${s.heads}u;
  let b = bqh / ${s.heads * s.Q}u;
  var acc = 0.0;
  for (var k = 0u; k < ${LP}u; k++) {
    let l = k / ${s.P}u;
    let pt = bqh * ${LP}u + k;
    let pos = point_pos(pt, l);
    acc += attn[pt] * bilinear(pos, sample_corners(b, h, d, l, pos));
  }
  out[i] = acc;
}`,
  });
  return out;
}

/** Gradients of the sampling locations and attention weights: one thread per point, summing over channels. */
function deformPointGrads(g: Tensor, value: Tensor, loc: Tensor, attn: Tensor, s: DeformSpec): { dloc: Tensor; dattn: Tensor } {
  const dloc = Tensor.empty(loc.shape);
  const dattn = Tensor.empty(attn.shape);
  const grid = grid1d(attn.size);
  const LP = s.levels.length * s.P;
  launch({
    name: 'msDeformAttn.pointGrads',
    key: specKey(s),
    inputs: { g, value, loc, attn },
    outputs: { dloc, dattn },
    workgroups: grid.workgroups,
    wgsl: (bindings) => `${bindings}
${deformWgsl(s, true)}
${grid.main}
  let l = (i / ${s.P}u) % ${s.levels.length}u;
  let bqh = i / ${LP}u;
  let h = bqh % ${s.heads}u;
  let b = bqh / ${s.heads * s.Q}u;
  let pos = point_pos(i, l);
  let t = pos - floor(pos);
  var dw = 0.0;
  var dpos = vec2f(0.0);
  for (var d = 0u; d < ${s.D}u; d++) {
    let up = g[bqh * ${s.D}u + d];
    let v = sample_corners(b, h, d, l, pos);
    dw += up * bilinear(pos, v);
    // d/dx: column difference weighted by the rows; d/dy: row difference weighted by the columns
    dpos += up * vec2f((1.0 - t.y) * (v.y - v.x) + t.y * (v.w - v.z), (1.0 - t.x) * (v.z - v.x) + t.x * (v.w - v.y));
  }
  dattn[i] = dw;
  let a = attn[i];
  dloc[2u * i] = a * dpos.x * f32(level_w(l));
  dloc[2u * i + 1u] = a * dpos.y * f32(level_h(l));
}`,
  });
  return { dloc, dattn };
}

const tile = 16;

/** The value gradient as a tiled gather (see the file comment): one workgroup per (b, head, level tile). */
function deformValueGrad(g: Tensor, loc: Tensor, attn: Tensor, s: DeformSpec): Tensor {
  const dvalue = Tensor.empty([s.B, s.S, s.heads, s.D]);
  const L = s.levels.length;
  const tilesX = s.levels.map(([, w]) => Math.ceil(w / tile));
  const tiles = s.levels.map(([h], l) => tilesX[l]! * Math.ceil(h / tile));
  const firstTile = tiles.map((_, l) => tiles.slice(0, l).reduce((a, b) => a + b, 0));
  const tilesPerHead = tiles.reduce((a, b) => a + b, 0);
  const groups = s.B * s.heads * tilesPerHead;
  const gx = Math.min(groups, 65535);
  const chunk = tile * tile;
  const compaction = workgroupCompaction(chunk);
  const points = s.Q * s.P;
  const list = (xs: number[]) => `array<u32, ${L}>(${xs.map((x) => `${x}u`).join(', ')})`;
  launch({
    name: 'msDeformAttn.valueGrad',
    key: specKey(s),
    inputs: { g, loc, attn },
    outputs: { dvalue },
    workgroups: [gx, Math.ceil(groups / gx)],
    wgsl: (bindings) => `${bindings}
${deformWgsl(s, false)}
${compaction.declarations}
@compute @workgroup_size(${chunk})
fn main(@builtin(workgroup_id) wid: vec3u, @builtin(local_invocation_index) t: u32) {
  let group = wid.x + wid.y * ${gx}u;
  if (group >= ${groups}u) { return; }
  let bh = group / ${tilesPerHead}u;
  let b = bh / ${s.heads}u;
  let h = bh % ${s.heads}u;
  let tileIdx = group % ${tilesPerHead}u;
  var first = ${list(firstTile)};
  var tilesX = ${list(tilesX)};
  var l = 0u;
  for (var k = 1u; k < ${L}u; k++) { if (tileIdx >= first[k]) { l = k; } }
  let lt = tileIdx - first[l];
  let W = i32(level_w(l));
  let H = i32(level_h(l));
  let origin = vec2i(i32(lt % tilesX[l]) * ${tile}, i32(lt / tilesX[l]) * ${tile});
  let pixel = origin + vec2i(i32(t % ${tile}u), i32(t / ${tile}u));
  var acc: array<f32, ${s.D}>;
  for (var start = 0u; start < ${points}u; start += ${chunk}u) {
    // 1. which points (q, p) of this level in the chunk read a pixel of the tile
    let qp = start + t;
    var pos = vec2f(0.0);
    var pt = 0u;
    var hit = 0u;
    if (qp < ${points}u) {
      let q = qp / ${s.P}u;
      pt = (((b * ${s.Q}u + q) * ${s.heads}u + h) * ${L}u + l) * ${s.P}u + qp % ${s.P}u;
      pos = point_pos(pt, l);
      let a = vec2i(floor(pos));
      hit = select(0u, 1u, all(a + 1 >= origin) && all(a <= origin + ${tile - 1}));
    }
    // 2. the hits, compacted into a list in point order
    ${compaction.compact('hit', 'pos', 'pt')}
    // 3. each pixel gathers from the points in the list, in point order
    for (var j = 0u; j < count; j++) {
      let p = listPos[j];
      let f = floor(p);
      let tt = p - f;
      let d = pixel - vec2i(f);
      if (all(d >= vec2i(0)) && all(d <= vec2i(1))) {
        let wx = select(1.0 - tt.x, tt.x, d.x == 1);
        let wy = select(1.0 - tt.y, tt.y, d.y == 1);
        let pj = listPoint[j];
        let w = wx * wy * attn[pj];
        let gRow = (pj / ${L * s.P}u) * ${s.D}u;
        for (var c = 0u; c < ${s.D}u; c++) { acc[c] += w * g[gRow + c]; }
      }
    }
    workgroupBarrier();
  }
  if (pixel.x < W && pixel.y < H) {
    let row = b * ${s.S}u + level_start(l) + u32(pixel.y * W + pixel.x);
    let base = (row * ${s.heads}u + h) * ${s.D}u;
    for (var c = 0u; c < ${s.D}u; c++) { dvalue[base + c] = acc[c]; }
  }
}`,
  });
  return dvalue;
}
