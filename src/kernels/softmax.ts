// Softmax and log-softmax over any dim, numerically stable (the row maximum is subtracted before exp).
// One row kernel serves forward and backward: a row is the L elements along `dim` (stride `inner`, so any
// dim works without a permute); T threads share a row (T = 1 for short rows, up to 8 for long ones) and
// combine partial maxima / sums with a tree in workgroup memory (or subgroup shuffles, where the adapter has
// subgroups and a row's threads fit one), then write every element of the row.

import { record } from '../engine/autograd.ts';
import { subgroupMinSize } from '../engine/device.ts';
import { asF32, axis, broadcastStrides, expectBroadcastsTo, expectDType, expectFloat, f32, launch, offsetExpr, unravel } from '../engine/kernel.ts';
import { type Shape, Tensor, numel, shapeStr } from '../engine/tensor.ts';

/** A reduction over the row: `value` (WGSL over the inputs and earlier passes) combined into `name`. */
interface RowPass {
  name: string;
  combine: 'max' | 'sum';
  value: string;
}

const groupSize = 256;
const lowest = f32(-Infinity);

/**
 * Runs `passes` over each row along `dim` of `shape`, then writes `result` for every element, in the first
 * input's dtype (f16 inputs are read as f32). Inputs are named by their keys; those not of `shape` are read
 * broadcast.
 */
function rowKernel(name: string, shape: Shape, dim: number, inputs: Record<string, Tensor>, passes: RowPass[], result: string): Tensor {
  const L = shape[dim]!;
  const inner = numel(shape.slice(dim + 1));
  const out = Tensor.empty(shape, Object.values(inputs)[0]!.dtype);
  if (out.size === 0) return out;
  const rows = out.size / L;
  // 8 threads per row at most: on lavapipe a tree over more threads costs more in barriers than it saves
  // (softmax over 1024-element rows: 5× faster than 128 threads per row).
  const T = Math.min(8, 2 ** Math.ceil(Math.log2(Math.ceil(L / 8))));
  const rowsPerGroup = groupSize / T;
  const groups = Math.ceil(rows / rowsPerGroup);
  const gx = Math.min(groups, 65535);
  const same = (t: Tensor) => shapeStr(t.shape) === shapeStr(shape);
  const loads = Object.entries(inputs).map(([v, t]) =>
    `let ${v} = ${asF32(t, `in_${v}[${same(t) ? 'idx' : offsetExpr(broadcastStrides(t.shape, shape))}]`)};`);
  const coords = Object.values(inputs).every(same) ? '' : unravel(shape, 'idx');
  const overRow = (body: string) => `if (live) {
    for (var j = lane; j < ${L}u; j += ${T}u) {
      let idx = base + j * ${inner}u;
      ${coords}
      ${loads.join(' ')}
      ${body}
    }
  }`;
  const combine = (c: RowPass['combine'], x: string, y: string) => (c === 'max' ? `max(${x}, ${y})` : `${x} + ${y}`);
  // a row's T threads are consecutive invocations: within one subgroup when T <= its size, where a
  // butterfly of shuffles combines them with no barrier (on lavapipe, barriers dominate this kernel)
  const shuffles = T > 1 && T <= subgroupMinSize();
  const butterfly = (c: RowPass['combine'], v: string) => [...Array(Math.log2(T)).keys()].map((b) =>
    `${v} = ${combine(c, v, `subgroupShuffleXor(${v}, ${T >> (b + 1)}u)`)};`).join(' ');
  const reductions = passes.map((p) => `var acc_${p.name} = ${p.combine === 'max' ? lowest : '0.0'};
  ${overRow(`acc_${p.name} = ${combine(p.combine, `acc_${p.name}`, p.value)};`)}
  ${shuffles ? `${butterfly(p.combine, `acc_${p.name}`)}
  let ${p.name} = acc_${p.name};` : `partial[t] = acc_${p.name};
  workgroupBarrier();
  for (var s = ${T >> 1}u; s > 0u; s >>= 1u) {
    if (lane < s) { partial[t] = ${combine(p.combine, 'partial[t]', 'partial[t + s]')}; }
    workgroupBarrier();
  }
  let ${p.name} = partial[t - lane];
  workgroupBarrier();`}`);
  launch({
    name,
    key: `${shapeStr(shape)}|${dim}|${Object.values(inputs).map((t) => shapeStr(t.shape)).join(';')}`,
    inputs: Object.fromEntries(Object.entries(inputs).map(([v, t]) => [`in_${v}`, t])),
    outputs: { out },
    workgroups: [gx, Math.ceil(groups / gx)],
    subgroups: shuffles,
    wgsl: (bindings) => `${bindings}
${shuffles ? '' : `var<workgroup> partial: array<f32, ${groupSize}>;`}
@compute @workgroup_size(${groupSize})
fn main(@builtin(workgroup_id) wid: vec3u, @builtin(local_invocation_index) t: u32) {
  let row = (wid.x + wid.y * ${gx}u) * ${rowsPerGroup}u + t / ${T}u;
  let lane = t % ${T}u;
  let live = row < ${rows}u;
  let base = (row / ${inner}u) * ${L * inner}u + row % ${inner}u;
  ${reductions.join('\n  ')}
  ${overRow(`out[idx] = out_t(${result});`)}
}`,
  });
  return out;
}

/** The softmax gradient g·y − y·Σ(g·y) along the row (also right for masked softmax, where y = 0). */
function softmaxBackward(g: Tensor, y: Tensor, dim: number): Tensor {
  return rowKernel('softmax.backward', y.shape, dim, { g, y }, [{ name: 'gy', combine: 'sum', value: 'g * y' }], 'y * (g - gy)');
}

/** The row maximum, then Σ exp(x − max). */
const maxAndTotal: RowPass[] = [
  { name: 'mx', combine: 'max', value: 'x' },
  { name: 'total', combine: 'sum', value: 'exp(x - mx)' },
];

function checked(op: string, x: Tensor, dim: number): number {
  expectFloat(op, x);
  if (x.rank === 0) throw new Error(`${op}: needs at least one dimension, got a scalar`);
  return axis(op, dim, x.rank);
}

/** exp(x) / Σ exp(x) along `dim`, like torch.softmax. */
export function softmax(x: Tensor, dim: number): Tensor {
  const a = checked('softmax', x, dim);
  const y = rowKernel('softmax', x.shape, a, { x }, maxAndTotal, 'exp(x - mx) / total');
  return record('softmax', y, [x], (g, [ys]) => [softmaxBackward(g, ys!, a)], [y]);
}

/** x − log Σ exp(x) along `dim`, like torch.log_softmax. */
export function logSoftmax(x: Tensor, dim: number): Tensor {
  const a = checked('log_softmax', x, dim);
  const y = rowKernel('log_softmax', x.shape, a, { x }, maxAndTotal, 'x - mx - log(total)');
  // d/dx: g − softmax(x)·Σg, with softmax(x) = exp(y)
  return record('log_softmax', y, [x], (g, [ys]) => [
    rowKernel('log_softmax.backward', ys!.shape, a, { g, y: ys! }, [{ name: 'gsum', combine: 'sum', value: 'g' }], 'g - exp(y) * gsum'),
  ], [y]);
}

/**
 * Softmax along `dim` over only the elements where `keep` is non-zero (`keep`: f32, i32 or u32, broadcast
 * to x). Masked elements get probability 0, and so does every element of a row with nothing kept (no NaN).
 */
export function maskedSoftmax(x: Tensor, keep: Tensor, dim: number): Tensor {
  const a = checked('masked_softmax', x, dim);
  expectDType('masked_softmax', keep, 'f32', 'i32', 'u32');
  expectBroadcastsTo('masked_softmax', 'keep', keep, x.shape);
  const kept = 'f32(keep) != 0.0';
  const y = rowKernel('masked_softmax', x.shape, a, { x, keep }, [
    { name: 'mx', combine: 'max', value: `select(${lowest}, x, ${kept})` },
    { name: 'total', combine: 'sum', value: `select(0.0, exp(x - mx), ${kept})` },
  ], `select(0.0, exp(x - mx) / total, ${kept})`);
  return record('masked_softmax', y, [x], (g, [ys]) => [softmaxBackward(g, ys!, a)], [y]);
}
