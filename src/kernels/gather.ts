// Indexing by i32 index tensors: index_select, embedding (an index_select of weight rows) and torch.gather.
// Forwards are `map` reads at computed offsets. Their gradients are scatter-adds, and WGSL has no float
// atomics, so each gradient element is computed as a gather instead: it loops over the candidate positions
// along the indexed dim and sums the upstream gradient where the index names it. That is deterministic
// (sums in index order) and costs numel(x)·L for L indices along the dim — fine for our sizes (index lists
// of up to a few thousand); a sort-based segmented sum would be the way to scale past that.
// Indices must be in range (PyTorch raises); an out-of-range one reads a clamped position instead.

import { record } from '../engine/autograd.ts';
import { axis, expectDType, grid1d, launch, stridesOf } from '../engine/kernel.ts';
import { type Shape, Tensor, numel, shapeStr, tidy } from '../engine/tensor.ts';
import { map } from './elementwise.ts';
import { reshape } from './shape.ts';

/** WGSL: coordinate k of flat index i in `shape`. */
function coord(shape: Shape, k: number): string {
  return `((i / ${stridesOf(shape)[k]}u) % ${shape[k]}u)`;
}

/** WGSL: an i32 index value as a row number clamped into [0, n). */
function clamped(index: string, n: number): string {
  return `u32(clamp(${index}, 0i, ${Math.max(n - 1, 0)}i))`;
}

/**
 * Gradient of a gather along `dim` into a tensor of `dstShape`: dst[c] = Σ_j g[c with dim → j] over the j
 * whose index equals c[dim]; the index is read at the same position as g (`perElement`, torch.gather) or at
 * j (index_select). Destinations outside g's extent in the other dims (gather's smaller index) get 0.
 */
function scatterAdd(name: string, g: Tensor, index: Tensor, dim: number, dstShape: Shape, perElement: boolean): Tensor {
  const gStrides = stridesOf(g.shape);
  const others = dstShape.map((_, k) => k).filter((k) => k !== dim);
  const outside = others.filter((k) => g.shape[k]! < dstShape[k]!).map((k) => `${coord(dstShape, k)} >= ${g.shape[k]}u`);
  const base = others.map((k) => `${coord(dstShape, k)} * ${gStrides[k]}u`).join(' + ') || '0u';
  const helpers = `fn scatter_sum(i: u32) -> f32 {
  ${outside.length ? `if (${outside.join(' || ')}) { return 0.0; }` : ''}
  let wanted = i32(${coord(dstShape, dim)});
  let base = ${base};
  var acc = 0.0;
  for (var j = 0u; j < ${g.shape[dim]}u; j++) {
    let o = base + j * ${gStrides[dim]}u;
    if (in_index[${perElement ? 'o' : 'j'}] == wanted) { acc += in_g[o]; }
  }
  return acc;
}`;
  return map(name, 'scatter_sum(i)', { g: { tensor: g, raw: true }, index: { tensor: index, raw: true } }, { shape: dstShape, helpers });
}

/** The entries of x at the positions `index` (1-D i32) along `dim`, torch.index_select. */
export function indexSelect(x: Tensor, dim: number, index: Tensor): Tensor {
  const op = 'index_select';
  expectDType(op, x, 'f32');
  expectDType(op, index, 'i32');
  if (index.rank > 1) throw new Error(`${op}: index must be 1-D, got shape ${shapeStr(index.shape)}`);
  const a = axis(op, dim, x.rank);
  const L = index.size;
  const D = x.shape[a]!;
  const inner = numel(x.shape.slice(a + 1));
  const shape = x.shape.map((d, k) => (k === a ? L : d));
  const src = `(i / ${L * inner}u) * ${D * inner}u + ${clamped(`in_index[(i / ${inner}u) % ${L}u]`, D)} * ${inner}u + i % ${inner}u`;
  const y = map(op, `in_x[${src}]`, { x: { tensor: x, raw: true }, index: { tensor: index, raw: true } }, { shape });
  return record(op, y, [x], (g, [idx]) => [scatterAdd(`${op}.backward`, g, reshape(idx!, [L]), a, x.shape, false)], [index]);
}

/**
 * Rows of `weight` [num, dim] at i32 `ids` of any shape: [...ids.shape, dim], torch.nn.functional.embedding.
 * An f16 weight (a table too large for one f32 buffer, e.g. CLIP's 49408-token vocabulary) gives f32 rows
 * and no gradient.
 */
export function embedding(ids: Tensor, weight: Tensor): Tensor {
  if (weight.rank !== 2) throw new Error(`embedding: weight must be [num_embeddings, dim], got ${shapeStr(weight.shape)}`);
  expectDType('embedding', ids, 'i32');
  if (weight.dtype === 'f16') return embeddingHalf(ids, weight);
  return tidy(() => reshape(indexSelect(weight, 0, reshape(ids, [ids.size])), [...ids.shape, weight.shape[1]!]));
}

/** f16 bound as packed pairs in u32 words (no device feature needed): element e is half (e & 1) of word e / 2. */
function embeddingHalf(ids: Tensor, weight: Tensor): Tensor {
  const [num, dim] = weight.shape as [number, number];
  const out = Tensor.empty([...ids.shape, dim]);
  const g = grid1d(out.size);
  launch({
    name: 'embedding.f16',
    key: `${num}|${dim}|${out.size}`,
    packedHalf: true,
    inputs: { ids, w: weight },
    outputs: { out },
    workgroups: g.workgroups,
    wgsl: (bindings) => `${bindings}
${g.main}
  let e = ${clamped(`ids[i / ${dim}u]`, num)} * ${dim}u + i % ${dim}u;
  let pair = unpack2x16float(w[e / 2u]);
  out[i] = select(pair.x, pair.y, (e & 1u) == 1u);
}`,
  });
  return out;
}

/**
 * torch.gather: out[c] = x[c with dim → index[c]], with out shaped like `index` (same rank as x, no larger
 * than x in the other dims).
 */
export function gather(x: Tensor, dim: number, index: Tensor): Tensor {
  const op = 'gather';
  expectDType(op, x, 'f32');
  expectDType(op, index, 'i32');
  const a = axis(op, dim, x.rank);
  if (index.rank !== x.rank || index.shape.some((d, k) => k !== a && d > x.shape[k]!)) {
    throw new Error(`${op}: index ${shapeStr(index.shape)} must have the rank of input ${shapeStr(x.shape)} and be no larger outside dim ${a}`);
  }
  const xStrides = stridesOf(x.shape);
  const src = x.shape.map((_, k) => `${k === a ? clamped('idx', x.shape[a]!) : coord(index.shape, k)} * ${xStrides[k]}u`).join(' + ') || '0u';
  const y = map(op, `in_x[${src}]`, { idx: index, x: { tensor: x, raw: true } }, { shape: index.shape });
  return record(op, y, [x], (g, [idx]) => [scatterAdd(`${op}.backward`, g, idx!, a, x.shape, true)], [index]);
}
