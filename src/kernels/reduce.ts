// Reductions over any set of axes: sum, mean, max, min, argmax, argmin. One template: each output element
// walks the K reduced elements. Small K: one thread per output. Large K: one workgroup per output, threads
// striding over K (about 64 elements each), then a tree in workgroup memory.

import { record } from '../engine/autograd.ts';
import { axis, expectDType, f32, grid1d, launch, stridesOf, workgroupSize } from '../engine/kernel.ts';
import { type Shape, Tensor, numel, shapeStr, f32Bits, u32Constant } from '../engine/tensor.ts';
import { map } from './elementwise.ts';
import { reshape } from './shape.ts';

type ReduceKind = 'sum' | 'max' | 'min' | 'argmax' | 'argmin';

const combine: Record<ReduceKind, { init: string; better?: string }> = {
  sum: { init: '0.0' },
  max: { init: f32(-Infinity), better: '>' },
  min: { init: f32(Infinity), better: '<' },
  argmax: { init: f32(-Infinity), better: '>' },
  argmin: { init: f32(Infinity), better: '<' },
};

function normAxes(op: string, dims: number | readonly number[] | undefined, rank: number): number[] {
  if (dims === undefined) return [...Array(rank).keys()];
  const list = typeof dims === 'number' ? [dims] : dims;
  const out = [...new Set(list.map((d) => axis(op, d, rank)))].sort((a, b) => a - b);
  return out;
}

/** Output shape of reducing `shape` over `axes`, keeping them as 1s or dropping them. */
function reducedShape(shape: Shape, axes: number[], keepdim: boolean): number[] {
  return shape.flatMap((d, k) => (axes.includes(k) ? (keepdim ? [1] : []) : [d]));
}

/**
 * The reduction's index space with neighbouring axes of the same kind (kept or reduced) merged, e.g. a bias
 * gradient's sum over [0, 2, 3] of [B, C, H, W] as reduced [B], kept [C], reduced [H·W]: each axis's size,
 * the divisor that extracts its index from a flat kept/reduced index, and its stride in x.
 */
function mergedAxes(shape: Shape, axes: number[]): { kept: number[][]; reduced: number[][] } {
  const st = stridesOf(shape);
  const runs: { reduce: boolean; size: number; stride: number }[] = [];
  shape.forEach((size, k) => {
    const reduce = axes.includes(k);
    const last = runs[runs.length - 1];
    if (size === 1) return;
    if (last && last.reduce === reduce && last.stride === size * st[k]!) [last.size, last.stride] = [last.size * size, st[k]!];
    else runs.push({ reduce, size, stride: st[k]! });
  });
  const withDivisors = (list: typeof runs) => list.map((r, d) => [r.size, numel(list.slice(d + 1).map((q) => q.size)), r.stride]);
  return { kept: withDivisors(runs.filter((r) => !r.reduce)), reduced: withDivisors(runs.filter((r) => r.reduce)) };
}

function reduceKernel(kind: ReduceKind, x: Tensor, axes: number[], keepdim: boolean, scale = 1): Tensor {
  const op = kind;
  expectDType(op, x, 'f32');
  const redShape = axes.map((k) => x.shape[k]!);
  const outShape = reducedShape(x.shape, axes, keepdim);
  const isArg = kind === 'argmax' || kind === 'argmin';
  const out = Tensor.empty(outShape, isArg ? 'i32' : 'f32');
  const n = numel(outShape);
  const K = numel(redShape);
  if (n === 0) return out;
  if (K === 0) throw new Error(`${op}: cannot reduce over an empty dimension of shape ${shapeStr(x.shape)}`);
  // The kept axes' sizes and strides and the reduced axes' strides are read at run time; the reduced axes'
  // sizes are compiled in (the inner loop's divisions: run-time divisors there cost 2.4× on the UNet's bias
  // gradients): one pipeline per reduced shape rather than per input shape. dims = n, the scale's bits,
  // (size, divisor, stride) of each kept axis, then each reduced axis's stride.
  const { kept, reduced } = mergedAxes(x.shape, axes);
  const dims = u32Constant([n, f32Bits(scale), ...kept.flat(), ...reduced.map(([, , stride]) => stride)]);
  const field = (d: number, f: number) => `dims[${2 + 3 * d + f}]`;
  const base = kept.length ? kept.map((_, d) => `(i / ${field(d, 1)}) % ${field(d, 0)} * ${field(d, 2)}`).join(' + ') : '0u';
  const inner = reduced.length ? reduced.map(([size, div], r) => `(k / ${div}u) % ${size}u * dims[${2 + 3 * kept.length + r}]`).join(' + ') : '0u';
  const pattern = `${kept.length}|${reduced.map(([size, div]) => `${size}/${div}`).join(',')}`;
  const c = combine[kind];
  // acc/idx update for candidate value v at reduced index k
  const step = c.better
    ? `if (v ${c.better} acc || (v == acc && k < idx)) { acc = v; idx = k; }`
    : 'acc += v;';
  const result = isArg ? 'i32(idx)' : kind === 'sum' && scale !== 1 ? 'acc * bitcast<f32>(dims[1])' : 'acc';
  const walk = (kExpr: string, kStep: string) => `
    for (var k = ${kExpr}; k < ${K}u; k += ${kStep}) {
      let v = x[b + ${inner}];
      ${step}
    }`;
  const small = K <= 64 || n >= 4096;
  if (small) {
    const g = grid1d(n, workgroupSize, 'dims[0]');
    launch({
      name: `reduce.${kind}`,
      key: `${pattern}|${scale !== 1}|small`,
      inputs: { x, dims },
      outputs: { out },
      workgroups: g.workgroups,
      wgsl: (bindings) => `${bindings}
${g.main}
  let b = ${base};
  var acc = ${c.init};
  var idx = 0u;
  ${walk('0u', '1u')}
  out[i] = ${result};
}`,
    });
    return out;
  }
  // about 64 elements per thread: trees over many threads cost more in barriers than they save on lavapipe
  const wg = Math.min(workgroupSize, Math.max(8, 2 ** Math.ceil(Math.log2(Math.ceil(K / 64)))));
  const gx = Math.min(n, 65535);
  const gy = Math.ceil(n / gx);
  const merge = c.better
    ? `let v = sacc[t + s]; let k = sidx[t + s];
        if (v ${c.better} sacc[t] || (v == sacc[t] && k < sidx[t])) { sacc[t] = v; sidx[t] = k; }`
    : 'sacc[t] += sacc[t + s];';
  launch({
    name: `reduce.${kind}`,
    key: `${pattern}|${scale !== 1}|wg${wg}`,
    inputs: { x, dims },
    outputs: { out },
    workgroups: [gx, gy],
    wgsl: (bindings) => `${bindings}
var<workgroup> sacc: array<f32, ${wg}>;
var<workgroup> sidx: array<u32, ${wg}>;
@compute @workgroup_size(${wg})
fn main(@builtin(workgroup_id) wid: vec3u, @builtin(local_invocation_index) t: u32, @builtin(num_workgroups) groups: vec3u) {
  let i = wid.x + wid.y * groups.x;
  let live = i < dims[0];
  let b = ${base};
  var acc = ${c.init};
  var idx = 0u;
  if (live) {${walk('t', `${wg}u`)}
  }
  sacc[t] = acc;
  sidx[t] = idx;
  workgroupBarrier();
  for (var s = ${wg / 2}u; s > 0u; s >>= 1u) {
    if (t < s) {
      ${merge}
    }
    workgroupBarrier();
  }
  if (t == 0u && live) {
    let acc = sacc[0];
    let idx = sidx[0];
    out[i] = ${result};
  }
}`,
  });
  return out;
}

export interface ReduceOptions {
  keepdim?: boolean;
}

/** Sum over `dims` (all when omitted). */
export function sum(x: Tensor, dims?: number | readonly number[], { keepdim = false }: ReduceOptions = {}): Tensor {
  const axes = normAxes('sum', dims, x.rank);
  const y = reduceKernel('sum', x, axes, keepdim);
  return record('sum', y, [x], (g) => [expandReduced(g, x.shape, axes)]);
}

/** Mean over `dims` (all when omitted). */
export function mean(x: Tensor, dims?: number | readonly number[], { keepdim = false }: ReduceOptions = {}): Tensor {
  const axes = normAxes('mean', dims, x.rank);
  const K = numel(axes.map((k) => x.shape[k]!));
  const y = reduceKernel('sum', x, axes, keepdim, 1 / K);
  return record('mean', y, [x], (g) => [map('mean.backward', `g * ${f32(1 / K)}`, { g: reshape(g, reducedShape(x.shape, axes, true)) }, { shape: x.shape })]);
}

/** Max over one dim (all elements when omitted); the gradient goes to the first maximal element, as PyTorch's max(dim). */
export function max(x: Tensor, dim?: number, opts: ReduceOptions = {}): Tensor {
  return extremum('max', x, dim, opts);
}

export function min(x: Tensor, dim?: number, opts: ReduceOptions = {}): Tensor {
  return extremum('min', x, dim, opts);
}

function extremum(kind: 'max' | 'min', x: Tensor, dim: number | undefined, { keepdim = false }: ReduceOptions): Tensor {
  if (dim === undefined) return extremum(kind, reshape(x, [x.size]), 0, { keepdim: false });
  const a = axis(kind, dim, x.rank);
  const y = reduceKernel(kind, x, [a], keepdim);
  if (!x.requiresGrad) return y;
  const idx = reduceKernel(kind === 'max' ? 'argmax' : 'argmin', x, [a], true);
  return record(kind, y, [x], (g, [ids]) => {
    const st = stridesOf(x.shape)[a]!;
    return [map(`${kind}.backward`, `select(0.0, g, i32((i / ${st}u) % ${x.shape[a]}u) == idx)`, {
      g: reshape(g, reducedShape(x.shape, [a], true)),
      idx: ids!,
    }, { shape: x.shape })];
  }, [idx]);
}

/** Index of the maximum along `dim` (first on ties), as i32. */
export function argmax(x: Tensor, dim: number, { keepdim = false }: ReduceOptions = {}): Tensor {
  return reduceKernel('argmax', x, [axis('argmax', dim, x.rank)], keepdim);
}

export function argmin(x: Tensor, dim: number, { keepdim = false }: ReduceOptions = {}): Tensor {
  return reduceKernel('argmin', x, [axis('argmin', dim, x.rank)], keepdim);
}

/** Broadcasts a reduced gradient back over the reduced axes. */
function expandReduced(g: Tensor, shape: Shape, axes: number[]): Tensor {
  return map('expand', 'g', { g: reshape(g, reducedShape(shape, axes, true)) }, { shape });
}

/** Sums `x` down to `shape` (the reverse of broadcasting `shape` up to x's shape). */
export function sumTo(x: Tensor, shape: Shape): Tensor {
  if (x.shape.length === shape.length && x.shape.every((d, k) => d === shape[k])) return x;
  const lead = x.rank - shape.length;
  if (lead < 0) throw new Error(`sumTo: cannot reduce ${shapeStr(x.shape)} to the larger rank ${shapeStr(shape)}`);
  const axes = x.shape.flatMap((d, k) => (k < lead || (shape[k - lead] === 1 && d !== 1) ? [k] : []));
  for (let k = 0; k < shape.length; k++) {
    const d = x.shape[k + lead]!;
    if (shape[k] !== 1 && shape[k] !== d) throw new Error(`sumTo: ${shapeStr(x.shape)} does not broadcast from ${shapeStr(shape)}`);
  }
  return reshape(sum(x, axes, { keepdim: true }), shape);
}
