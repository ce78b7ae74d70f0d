// Layout ops. Tensors are always contiguous (see engine/tensor.ts): reshape shares storage, every other op
// here is one strided read through the `map` kernel (permute = permuted strides, slice = offset + strides,
// expand = zero strides), so they need no kernels of their own.

import { record } from '../engine/autograd.ts';
import { asF32, axis, f32, stridesOf } from '../engine/kernel.ts';
import { type Shape, Tensor, numel, shapeStr } from '../engine/tensor.ts';
import { map } from './elementwise.ts';
import { sumTo } from './reduce.ts';

/** Same data, new shape (one dimension may be -1). Shares storage. */
export function reshape(x: Tensor, shape: Shape): Tensor {
  const known = shape.filter((d) => d !== -1);
  const holes = shape.length - known.length;
  let target = [...shape];
  if (holes > 1) throw new Error(`reshape: at most one -1 allowed, got ${shapeStr(shape)}`);
  if (holes === 1) {
    const k = numel(known);
    if (k === 0 || x.size % k !== 0) throw new Error(`reshape: cannot infer -1 reshaping ${shapeStr(x.shape)} to ${shapeStr(shape)}`);
    target = shape.map((d) => (d === -1 ? x.size / k : d));
  }
  if (numel(target) !== x.size) throw new Error(`reshape: ${shapeStr(x.shape)} (${x.size} elements) cannot become ${shapeStr(target)}`);
  const y = x.alias(target);
  return record('reshape', y, [x], (g) => [g.alias(x.shape)]);
}

export function flatten(x: Tensor, startDim = 0, endDim = -1): Tensor {
  const s = axis('flatten', startDim, x.rank);
  const e = axis('flatten', endDim, x.rank);
  return reshape(x, [...x.shape.slice(0, s), numel(x.shape.slice(s, e + 1)), ...x.shape.slice(e + 1)]);
}

export function unsqueeze(x: Tensor, dim: number): Tensor {
  const d = axis('unsqueeze', dim, x.rank + 1);
  return reshape(x, [...x.shape.slice(0, d), 1, ...x.shape.slice(d)]);
}

export function squeeze(x: Tensor, dim?: number): Tensor {
  if (dim === undefined) return reshape(x, x.shape.filter((d) => d !== 1));
  const d = axis('squeeze', dim, x.rank);
  return x.shape[d] === 1 ? reshape(x, x.shape.filter((_, k) => k !== d)) : reshape(x, x.shape);
}

/** Reorders dimensions: output dim k is input dim `dims[k]`. */
export function permute(x: Tensor, dims: readonly number[]): Tensor {
  const p = dims.map((d) => axis('permute', d, x.rank));
  if (p.length !== x.rank || new Set(p).size !== x.rank) {
    throw new Error(`permute: dims [${dims.join(', ')}] are not a permutation of ${x.rank} axes (shape ${shapeStr(x.shape)})`);
  }
  const st = stridesOf(x.shape);
  const y = map('permute', 'x', { x: { tensor: x, strides: p.map((d) => st[d]!) } }, { shape: p.map((d) => x.shape[d]!), dtype: x.dtype });
  const inverse = p.map((_, k) => p.indexOf(k));
  return record('permute', y, [x], (g) => [permute(g, inverse)]);
}

export function transpose(x: Tensor, dim0: number, dim1: number): Tensor {
  const dims = [...x.shape.keys()];
  const a = axis('transpose', dim0, x.rank);
  const b = axis('transpose', dim1, x.rank);
  [dims[a], dims[b]] = [dims[b]!, dims[a]!];
  return permute(x, dims);
}

/** Broadcasts to `shape` (materialised). */
export function expand(x: Tensor, shape: Shape): Tensor {
  const y = map('expand', 'x', { x }, { shape, dtype: x.dtype });
  return record('expand', y, [x], (g) => [sumTo(g, x.shape)]);
}

/** Elements start..end (exclusive, negative counts from the end) with `step` along `dim`. */
export function slice(x: Tensor, dim: number, start = 0, end = Number.MAX_SAFE_INTEGER, step = 1): Tensor {
  const a = axis('slice', dim, x.rank);
  const n = x.shape[a]!;
  const norm = (v: number) => Math.min(Math.max(v < 0 ? v + n : v, 0), n);
  const s = norm(start);
  const e = Math.max(norm(end), s);
  if (!Number.isInteger(step) || step < 1) throw new Error(`slice: step must be a positive integer, got ${step}`);
  const len = Math.ceil((e - s) / step);
  const shape = x.shape.map((d, k) => (k === a ? len : d));
  const st = stridesOf(x.shape);
  const y = map('slice', 'x', { x: { tensor: x, strides: st.map((v, k) => (k === a ? v * step : v)), offset: s * st[a]! } }, { shape, dtype: x.dtype });
  return record('slice', y, [x], (g) => [scatterSlice(g, x.shape, a, s, step)]);
}

/** The gradient of a slice: g placed back at its positions, zeros elsewhere. */
function scatterSlice(g: Tensor, shape: Shape, a: number, start: number, step: number): Tensor {
  const rel = `(${coord(shape, a)} - ${start})`;
  const inside = `(${rel} >= 0 && ${rel} % ${step} == 0 && ${rel} / ${step} < ${g.shape[a]})`;
  const src = gatherOffset(shape, g.shape, (k) => (k === a ? `${rel} / ${step}` : coord(shape, k)));
  return map('slice.backward', `select(0.0, in_g[${src}], ${inside})`, { g: { tensor: g, raw: true } }, { shape });
}

/** WGSL: coordinate k (as i32) of flat output index i in `shape`. */
function coord(shape: Shape, k: number): string {
  return `i32((i / ${stridesOf(shape)[k]}u) % ${shape[k]}u)`;
}

/** WGSL: the clamped offset into a tensor of `srcShape` at coordinates `at(k)` (i32 expressions). */
function gatherOffset(outShape: Shape, srcShape: Shape, at: (k: number) => string): string {
  const st = stridesOf(srcShape);
  const terms = srcShape.map((d, k) => `u32(clamp(${at(k)}, 0, ${Math.max(d - 1, 0)})) * ${st[k]}u`);
  return terms.join(' + ') || '0u';
}

/** Concatenates along `dim`. */
export function concat(xs: readonly Tensor[], dim: number): Tensor {
  if (xs.length === 0) throw new Error('concat: no tensors given');
  const first = xs[0]!;
  const a = axis('concat', dim, first.rank);
  for (const t of xs) {
    if (t.rank !== first.rank || t.shape.some((d, k) => k !== a && d !== first.shape[k])) {
      throw new Error(`concat: shapes ${xs.map((t) => shapeStr(t.shape)).join(', ')} differ outside dim ${a}`);
    }
  }
  const total = xs.reduce((s, t) => s + t.shape[a]!, 0);
  const shape = first.shape.map((d, k) => (k === a ? total : d));
  let out = Tensor.zeros(shape, first.dtype);
  let start = 0;
  for (const t of xs) {
    const next = placeInto(out, t, a, start);
    out.dispose();
    out = next;
    start += t.shape[a]!;
  }
  const sizes = xs.map((t) => t.shape[a]!);
  return record('concat', out, xs, (g) => split(g, sizes, a));
}

/** Copy of `dst` with `src` written at `start` along `a` (one pass; no autograd, used by concat). */
function placeInto(dst: Tensor, src: Tensor, a: number, start: number): Tensor {
  const rel = `(${coord(dst.shape, a)} - ${start})`;
  const inside = `(${rel} >= 0 && ${rel} < ${src.shape[a]})`;
  const off = gatherOffset(dst.shape, src.shape, (k) => (k === a ? rel : coord(dst.shape, k)));
  return map('concat.place', `select(d, ${asF32(src, `in_s[${off}]`)}, ${inside})`, { d: dst, s: { tensor: src, raw: true } }, { shape: dst.shape, dtype: dst.dtype });
}

/** Splits along `dim` into pieces of the given sizes (or equal pieces of that size). */
export function split(x: Tensor, sizes: number | readonly number[], dim: number): Tensor[] {
  const a = axis('split', dim, x.rank);
  const n = x.shape[a]!;
  const list = typeof sizes === 'number' ? Array.from({ length: Math.ceil(n / sizes) }, (_, k) => Math.min(sizes, n - k * sizes)) : sizes;
  if (list.reduce((s, v) => s + v, 0) !== n) throw new Error(`split: sizes [${list.join(', ')}] do not sum to ${n} (dim ${a} of ${shapeStr(x.shape)})`);
  let start = 0;
  return list.map((len) => {
    const piece = slice(x, a, start, start + len);
    start += len;
    return piece;
  });
}

/** Constant padding, PyTorch order: [left, right] of the last dim, then [top, bottom] of the one before, … */
export function pad(x: Tensor, padding: readonly number[], value = 0): Tensor {
  if (padding.length % 2 !== 0 || padding.length / 2 > x.rank || padding.some((p) => !Number.isInteger(p) || p < 0)) {
    throw new Error(`pad: padding [${padding.join(', ')}] must be non-negative integers, two per padded dim, at most ${2 * x.rank}`);
  }
  const before = x.shape.map(() => 0);
  const after = x.shape.map(() => 0);
  for (let j = 0; j < padding.length / 2; j++) {
    before[x.rank - 1 - j] = padding[2 * j]!;
    after[x.rank - 1 - j] = padding[2 * j + 1]!;
  }
  const shape = x.shape.map((d, k) => d + before[k]! + after[k]!);
  const rel = (k: number) => `(${coord(shape, k)} - ${before[k]})`;
  const inside = x.shape.map((d, k) => `${rel(k)} >= 0 && ${rel(k)} < ${d}`).join(' && ') || 'true';
  const off = gatherOffset(shape, x.shape, rel);
  const y = map('pad', `select(${f32(value)}, ${asF32(x, `in_x[${off}]`)}, ${inside})`, { x: { tensor: x, raw: true } }, { shape, dtype: x.dtype });
  return record('pad', y, [x], (g) => {
    let r = g;
    for (let k = 0; k < x.rank; k++) if (before[k] || after[k]) r = slice(r, k, before[k]!, before[k]! + x.shape[k]!);
    return [r];
  });
}

/** Rolls elements along dims (elements shifted past the end re-enter at the start), like torch.roll. */
export function roll(x: Tensor, shifts: readonly number[], dims: readonly number[]): Tensor {
  if (shifts.length !== dims.length) throw new Error(`roll: ${shifts.length} shifts for ${dims.length} dims`);
  const st = stridesOf(x.shape);
  const shiftOf = x.shape.map(() => 0);
  dims.forEach((d, j) => {
    const a = axis('roll', d, x.rank);
    shiftOf[a] = (((shiftOf[a]! + shifts[j]!) % x.shape[a]!) + x.shape[a]!) % x.shape[a]!;
  });
  const off = x.shape.map((d, k) => `((i / ${st[k]}u + ${d - shiftOf[k]!}u) % ${d}u) * ${st[k]}u`).join(' + ') || '0u';
  const y = map('roll', `in_x[${off}]`, { x: { tensor: x, raw: true } }, { shape: x.shape });
  return record('roll', y, [x], (g) => [roll(g, shiftOf.map((s) => -s), x.shape.map((_, k) => k))]);
}
