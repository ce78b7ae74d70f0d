// Matrix products. One batched GEMM kernel, `gemm`, computes act(alpha·op(A)·op(B) + bias) over broadcast batch
// dims, where op() optionally transposes: backward then needs no transposed copies (dA = g·Bᵀ, dB = Aᵀ·g),
// and other ops (linear, attention, convolution) reuse it.
//
// Kernel: register blocking without workgroup memory. Each thread owns an RM × 4·VN block of the output as
// vec4 accumulators and walks K four at a time, loading operands as vec4 along whichever dimension is
// contiguous in memory (scalar loads where that dimension is not a multiple of 4). On lavapipe (and caches
// of real GPUs) the operands stay in cache between neighbouring threads, so workgroup tiles and their
// barriers cost more than they save: measured 5× faster than a 16×16 shared-memory tiling on lavapipe.
// Loads clamp their row/column to the matrix, so the hot loop has no bounds checks; only stores test them.

import { isGradEnabled, noGrad, record } from '../engine/autograd.ts';
import { broadcastShapes, broadcastStrides, expectBroadcastsTo, expectFloat, f32, launch } from '../engine/kernel.ts';
import { type DType, type Shape, Tensor, numel, shapeStr, tidy, f32Bits, u32Constant } from '../engine/tensor.ts';
import { type UnaryDef, type UnaryOp, unary, unaryOps } from './elementwise.ts';
import { sumTo } from './reduce.ts';
import { reshape, transpose } from './shape.ts';

export interface GemmOptions {
  /** Use Aᵀ: `a` is stored [..., K, M] instead of [..., M, K]. */
  transA?: boolean;
  /** Use Bᵀ: `b` is stored [..., N, K] instead of [..., K, N]. */
  transB?: boolean;
  /** Multiplies the product (not the bias). */
  alpha?: number;
  /** Added to the scaled product; broadcastable to the output [..., M, N]. */
  bias?: Tensor;
  /** An elementwise op applied last, fused into the kernel's epilogue when no gradient is recorded. */
  activation?: UnaryOp;
  /** The output's dtype: by default f16 when both operands are f16, else f32 (arithmetic is f32 either way). */
  dtype?: 'f32' | 'f16';
}

interface GemmShapes {
  M: number;
  N: number;
  K: number;
  /** Broadcast batch dims of the output. */
  batch: number[];
}

/** Sizes of alpha·op(A)·op(B), checked, with errors naming `op` and both shapes. */
function gemmShapes(op: string, a: Tensor, b: Tensor, transA: boolean, transB: boolean): GemmShapes {
  if (a.rank < 2 || b.rank < 2) {
    throw new Error(`${op}: operands need at least 2 dimensions here, got ${shapeStr(a.shape)} and ${shapeStr(b.shape)}`);
  }
  const [rowsA, colsA] = a.shape.slice(-2) as [number, number];
  const [rowsB, colsB] = b.shape.slice(-2) as [number, number];
  const [M, Ka] = transA ? [colsA, rowsA] : [rowsA, colsA];
  const [Kb, N] = transB ? [colsB, rowsB] : [rowsB, colsB];
  if (Ka !== Kb) {
    throw new Error(`${op}: inner dimensions differ (${Ka} vs ${Kb}) multiplying ${shapeStr(a.shape)}${transA ? 'ᵀ' : ''} by ${shapeStr(b.shape)}${transB ? 'ᵀ' : ''}`);
  }
  const batch = broadcastShapes(`${op} (batch dims of ${shapeStr(a.shape)} and ${shapeStr(b.shape)})`, a.shape.slice(0, -2), b.shape.slice(0, -2));
  return { M, N, K: Ka, batch };
}

/**
 * Batched GEMM: act(alpha·op(A)·op(B) + bias) with A [..., M, K] and B [..., K, N] (op() transposes per
 * `transA`/`transB`), batch dims broadcast NumPy-style. Differentiable in a, b and bias.
 */
export function gemm(a: Tensor, b: Tensor, { transA = false, transB = false, alpha = 1, bias, activation, dtype }: GemmOptions = {}): Tensor {
  expectFloat('gemm', a);
  expectFloat('gemm', b);
  const outDType = dtype ?? (a.dtype === 'f16' && b.dtype === 'f16' ? 'f16' : 'f32');
  const shapes = gemmShapes('gemm', a, b, transA, transB);
  if (bias) {
    expectFloat('gemm', bias);
    expectBroadcastsTo('gemm', 'bias', bias, [...shapes.batch, shapes.M, shapes.N]);
  }
  // read now: composite ops dispose their intermediate inputs (and with them requiresGrad) before backward
  const [gradA, gradB, gradBias] = [a.requiresGrad, b.requiresGrad, !!bias?.requiresGrad];
  if (activation && isGradEnabled() && (gradA || gradB || gradBias)) {
    // the activation's backward needs the pre-activation: record the two ops separately
    return tidy(() => unary(activation, gemm(a, b, { transA, transB, alpha, bias, dtype })));
  }
  const y = gemmKernel(a, b, bias, transA, transB, alpha, activation, shapes, outDType);
  return record('gemm', y, [a, b, bias], (g, [as, bs]) => [
    // op(A) gets alpha·g·op(B)ᵀ; stored transposed, A gets its transpose alpha·op(B)·gᵀ (same for B)
    gradA
      ? sumTo(transA ? gemm(bs!, g, { transA: transB, transB: true, alpha }) : gemm(g, bs!, { transB: !transB, alpha }), as!.shape)
      : null,
    gradB
      ? sumTo(transB ? gemm(g, as!, { transA: true, transB: transA, alpha }) : gemm(as!, g, { transA: !transA, alpha }), bs!.shape)
      : null,
    gradBias ? sumTo(g, bias!.shape) : null,
  ], [a, b]);
}

// ---------------------------------------------------------------- the product kernel (GEMM core)

/**
 * One output-stationary product C[z][m][n] = Σ_k A(m, k)·B(k, n), specialised by how the operands are
 * read. GEMM reads them from matrices; convolutions read B from the input image (implicit GEMM) over a
 * loop nest of their own. Rows m of A are read as scalars (lanes of a SIMD row share m, so the load is
 * uniform) or as vec4 of four rows; columns of B as scalars or vec4 of four columns.
 */
export interface ProductSpec {
  name: string;
  /** Everything the WGSL depends on besides M, N, the batch count and the bindings' dtypes. */
  key: string;
  M: number;
  N: number;
  /** Independent products, indexed by `z` in the WGSL. */
  batch: number;
  /**
   * Floating-point operations this product stands for, 2·M·N·K summed over the batch, added to
   * `productFlops()`. A transposed convolution gather counts the direct convolution it transposes: taps that
   * fall between strides are multiplied by zero in the kernel but not counted.
   */
  flops: number;
  inputs: Record<string, Tensor>;
  out: Tensor;
  /**
   * WGSL run once per thread after `z`, `m0`, `n0` and the clamped `ra<i>` rows / `cb<c>` columns exist;
   * `cols` is the number of columns the thread owns (c = 0..cols-1).
   */
  prologue?: (cols: number) => string;
  /** The loop nest over k around `body` (the loads and FMAs of one k), for threads owning `cols` columns. */
  loop: (body: string, cols: number) => string;
  /** A(row, k) for block row i: a scalar WGSL expression (may use `ra<i>`). */
  rowOf?: (i: number) => string;
  /**
   * Four rows of A at once, block rows 4r..4r+3 (a vec4f expression; may use `rv<r>`), used when M % 4 == 0;
   * `input` is then bound as array<vec4f>.
   */
  rowsVec?: { input: string; load: (r: number) => string };
  /** B(k, column) for block column c: a scalar expression (may use `cb<c>`). */
  colOf?: (c: number) => string;
  /** Four columns of B at once, block columns 4j..4j+3 (may use `cv<j>`), used when N % 4 == 0. */
  colsVec?: { input: string; load: (j: number) => string };
  /** WGSL offset of C[z][0][0] in `out`. */
  outBase: string;
  /**
   * Sizes read at run time: M, N and the batch count come from this u32 tensor (`dims[0]`, `dims[1]`,
   * `dims[2]`, further entries the template's own) instead of being compiled into the WGSL, so one pipeline
   * serves every shape with the same blocking: fewer pipelines for the JIT of a first step (llvmpipe compiles
   * a shader at its first dispatch). `key` must then not name the sizes either. Bound as `dims` (`u32Constant`).
   */
  dims?: Tensor;
  /** Multiplies the sum: a number compiled in, or a WGSL f32 expression read at run time. */
  alpha?: number | string;
  /**
   * B's columns are gathered with a bounds test each (convolution taps) rather than loaded as vectors: then
   * taller blocks (16 rows × 8 columns) amortise each gathered column over more rows (measured 1.3–1.7×
   * faster on the UNet's 3×3 convolutions on lavapipe; plain GEMM is slower with them).
   */
  gatheredColumns?: boolean;
  /** A bias term at output (m, n) (WGSL expressions), added after alpha. */
  bias?: (m: string, n: string) => string;
  activation?: UnaryOp;
}

/** Threads per workgroup: at most 64 (32 or more unless the output is smaller), x along N, shaped by `layout`. */
const threadsPerGroup = 64;

const pow2Ceil = (n: number) => 2 ** Math.ceil(Math.log2(Math.max(1, n)));

/**
 * The workgroup's shape for blocks of RM rows × CW columns: 8 × 8 when the output is large in both
 * directions; a narrow output (N = 8 in attention with head dim 8) stacks the threads along M instead of
 * leaving 7 in 8 of them computing columns past N (measured 3–4× faster on those products on lavapipe).
 */
function layout(M: number, N: number, RM: number, CW: number): { TX: number; TY: number } {
  const colBlocks = Math.ceil(N / CW);
  const cols = pow2Ceil(colBlocks);
  const rows = pow2Ceil(Math.ceil(M / RM));
  const TY = Math.min(threadsPerGroup / Math.min(8, cols), rows);
  // of the rows of threads that keep a workgroup at 32+ threads (SIMD width on GPUs), the one whose last
  // workgroup leaves the fewest column blocks idle, the wider on ties (36 blocks with TY = 8: 9 groups of 4
  // rather than 5 of 8)
  const most = Math.min(threadsPerGroup / TY, cols);
  const widths = [1, 2, 4, 8, 16, 32, 64].filter((w) => w <= most && w * TY >= Math.min(32, most * TY));
  const idle = (w: number) => Math.ceil(colBlocks / w) * w - colBlocks;
  const TX = widths.reduce((best, w) => (idle(w) <= idle(best) ? w : best), widths[0]!);
  return { TX, TY };
}

/**
 * Rows (RM) and vec4 columns (VN) per thread and the workgroup shape: the biggest block that neither pads N
 * by more than an eighth nor leaves fewer than 32 workgroups (8 for gathered columns) to spread over the GPU's
 * cores, shrinking the column block first.
 */
function blocking(M: number, N: number, batch: number, gathered: boolean): { RM: number; VN: number; TX: number; TY: number } {
  let VN = [4, 2, 1].find((v) => Math.ceil(N / (4 * v)) * 4 * v <= N * 1.125) ?? 1;
  let RM = M >= 64 ? 8 : 4;
  let minGroups = 32;
  if (gathered && M >= 16) [RM, VN, minGroups] = [16, Math.min(VN, 2), 8];
  const groups = () => {
    const { TX, TY } = layout(M, N, RM, 4 * VN);
    return Math.ceil(N / (4 * VN * TX)) * Math.ceil(M / (RM * TY)) * batch;
  };
  while (groups() < minGroups && (VN > 1 || RM > 4)) {
    if (VN > 1) VN /= 2;
    else RM /= 2;
  }
  return { RM, VN, ...layout(M, N, RM, 4 * VN) };
}

let productFlopCount = 0;

/**
 * Floating-point operations of every product kernel recorded so far (GEMM, linear, attention's products,
 * convolutions and all their gradients; `ProductSpec.flops`): read it before and after some work.
 */
export function productFlops(): number {
  return productFlopCount;
}

/** Records the product kernel described by `spec`. */
export function productKernel(spec: ProductSpec): void {
  const { M, N, batch, out } = spec;
  if (M === 0 || N === 0 || batch === 0) return;
  productFlopCount += spec.flops;
  const { RM, VN, TX, TY } = blocking(M, N, batch, !!spec.gatheredColumns);
  const CW = 4 * VN;
  const aVec = !!spec.rowsVec && M % 4 === 0;
  const bVec = !!spec.colsVec && N % 4 === 0;
  const range = (n: number) => [...Array(n).keys()];
  // M and N as WGSL: literals, or read from `dims` at run time
  const [Mw, Nw] = spec.dims ? ['dims[0]', 'dims[1]'] : [`${M}u`, `${N}u`];

  // operands may be f16 (arithmetic stays f32): every load converts, a no-op for f32
  const loads = [
    ...(aVec ? range(RM / 4).map((r) => `let a${r} = vec4f(${spec.rowsVec!.load(r)});`) : range(RM).map((i) => `let a${i} = f32(${spec.rowOf!(i)});`)),
    ...(bVec ? range(VN).map((j) => `let b${j} = vec4f(${spec.colsVec!.load(j)});`) : range(CW).map((c) => `let b${c} = f32(${spec.colOf!(c)});`)),
  ];
  const A = (i: number) => (aVec ? `a${i >> 2}[${i & 3}]` : `a${i}`);
  const B = (j: number) => (bVec ? `b${j}` : `vec4f(${range(4).map((c) => `b${4 * j + c}`).join(', ')})`);
  const fmas = range(RM).flatMap((i) => range(VN).map((j) => `c${i}_${j} = fma(vec4f(${A(i)}), ${B(j)}, c${i}_${j});`));

  // clamped rows / columns the loads read (out-of-range ones repeat the last and are never stored)
  const indices = [
    ...range(RM).map((i) => `let ra${i} = min(m0 + ${i}u, ${Mw} - 1u);`),
    ...(aVec ? range(RM / 4).map((r) => `let rv${r} = min(m0 + ${4 * r}u, ${Mw} - 4u);`) : []),
    ...range(CW).map((c) => `let cb${c} = min(n0 + ${c}u, ${Nw} - 1u);`),
    ...(bVec ? range(VN).map((j) => `let cv${j} = min(n0 + ${4 * j}u, ${Nw} - 4u);`) : []),
  ];

  const scale = spec.alpha === undefined || spec.alpha === 1 ? '' : ` * ${typeof spec.alpha === 'string' ? spec.alpha : f32(spec.alpha)}`;
  const act: UnaryDef | undefined = spec.activation ? unaryOps[spec.activation] : undefined;
  const epilogue = (v: string, n: string) => {
    const e = `${v}${scale}${spec.bias ? ` + f32(${spec.bias('m', n)})` : ''}`;
    return act ? `act(${e})` : e;
  };
  // N % 4 == 0 makes the output rows vec4-aligned too
  const outVec = N % 4 === 0;
  const stores = range(RM).flatMap((i) => range(VN).map((j) => {
    const n = `n0 + ${4 * j}u`;
    const body = outVec
      ? `if (${n} < ${Nw}) { out[(oBase + m * ${Nw} + ${n}) / 4u] = out_t(vec4f(${range(4).map((c) => epilogue(`c${i}_${j}[${c}]`, `${n} + ${c}u`)).join(', ')})); }`
      : range(4).map((c) => `if (${n} + ${c}u < ${Nw}) { out[oBase + m * ${Nw} + ${n} + ${c}u] = out_t(${epilogue(`c${i}_${j}[${c}]`, `${n} + ${c}u`)}); }`).join('\n      ');
    return `{ let m = m0 + ${i}u; if (m < ${Mw}) {
      ${body}
    } }`;
  }));

  launch({
    name: spec.activation ? `${spec.name}+${spec.activation}` : spec.name,
    key: `${spec.key}|${spec.dims ? 'dims' : `${M}|${N}|${batch}`}|${spec.alpha ?? 1}|${RM}x${VN}|${TX}x${TY}|${aVec}${bVec}|${outVec}`,
    inputs: spec.dims ? { ...spec.inputs, dims: spec.dims } : spec.inputs,
    outputs: { out },
    vec4: [...(aVec ? [spec.rowsVec!.input] : []), ...(bVec ? [spec.colsVec!.input] : []), ...(outVec ? ['out'] : [])],
    workgroups: [Math.ceil(N / (CW * TX)), Math.ceil(M / (RM * TY)), batch],
    wgsl: (bindings) => `${bindings}
${act ? `${act.helpers ?? ''}
fn act(x: f32) -> f32 { return ${act.forward}; }` : ''}
@compute @workgroup_size(${TX}, ${TY})
fn main(@builtin(global_invocation_id) gid: vec3u) {
  let z = gid.z;
  let m0 = gid.y * ${RM}u;
  let n0 = gid.x * ${CW}u;
  ${indices.join('\n  ')}
  ${spec.prologue?.(CW) ?? ''}
  let oBase = ${spec.outBase};
  ${range(RM).flatMap((i) => range(VN).map((j) => `var c${i}_${j} = vec4f(0.0);`)).join(' ')}
  ${spec.loop(`${loads.join('\n    ')}
    ${fmas.join('\n    ')}`, CW)}
  ${stores.join('\n  ')}
}`,
  });
}

function gemmKernel(
  a: Tensor, b: Tensor, bias: Tensor | undefined, transA: boolean, transB: boolean, alpha: number,
  activation: UnaryOp | undefined, { M, N, K, batch }: GemmShapes, dtype: DType,
): Tensor {
  const outShape = [...batch, M, N];
  const out = Tensor.empty(outShape, dtype);
  if (out.size === 0) return out;
  // Bᵀ stored [N, K] makes every lane of a SIMD row read a different row of B (a gather per k); one
  // transposed copy, O(N·K) next to the product's O(M·N·K), measured 2–3× faster overall on lavapipe.
  const bMatrix = transB ? noGrad(() => transpose(b, -1, -2)) : b;
  // Sizes, batch strides and alpha are read at run time (ProductSpec.dims): one pipeline per batch rank,
  // blocking and operand layout serves every shape. dims: M, N, batch count, K, sm, sn (the bias's strides
  // along M and N), alpha's bits, then per batch dim: its size, the z stride of its index, and A's, B's and
  // the bias's strides.
  const strides = (t: Tensor | undefined, matrix: number) => (t ? broadcastStrides(t.shape.slice(0, -2), batch).map((st) => st * matrix) : batch.map(() => 0));
  const biasStrides = bias ? broadcastStrides(bias.shape, outShape) : [];
  const [sm = 0, sn = 0] = biasStrides.slice(-2);
  const [aStrides, bStrides] = [strides(a, M * K), strides(bMatrix, K * N)];
  const zStrides = batch.map((_, d) => numel(batch.slice(d + 1)));
  const perDim = batch.flatMap((size, d) => [size, zStrides[d]!, aStrides[d]!, bStrides[d]!, biasStrides[d] ?? 0]);
  const dim = (d: number, field: number) => `dims[${7 + 5 * d + field}]`;
  const offsetOf = (field: number) => (batch.length ? batch.map((_, d) => `z${d} * ${dim(d, field)}`).join(' + ') : '0u');
  productKernel({
    name: 'gemm',
    key: `${batch.length}|${transA ? 'T' : ''}|${bias ? 'bias' : '-'}`,
    M, N, batch: numel(batch),
    dims: u32Constant([M, N, numel(batch), K, sm, sn, f32Bits(alpha), ...perDim]),
    flops: 2 * M * N * K * numel(batch),
    inputs: bias ? { a, b: bMatrix, bias } : { a, b: bMatrix },
    out,
    prologue: () => `let M = dims[0]; let N = dims[1]; let K = dims[3];
  ${batch.map((_, d) => `let z${d} = (z / ${dim(d, 1)}) % ${dim(d, 0)};`).join('\n  ')}
  let aBase = ${offsetOf(2)};
  let bBase = ${offsetOf(3)};
  ${bias ? `let biasBase = ${offsetOf(4)};` : ''}`,
    loop: (body) => `for (var k = 0u; k < K; k++) {
    ${body}
  }`,
    rowOf: (i) => `a[aBase + ${transA ? `k * M + ra${i}` : `ra${i} * K + k`}]`,
    rowsVec: transA ? { input: 'a', load: (r) => `a[(aBase + k * M + rv${r}) / 4u]` } : undefined,
    colOf: (c) => `b[bBase + k * N + cb${c}]`,
    colsVec: { input: 'b', load: (j) => `b[(bBase + k * N + cv${j}) / 4u]` },
    outBase: 'z * M * N',
    alpha: alpha === 1 ? 1 : 'bitcast<f32>(dims[6])',
    bias: bias ? (m, n) => `bias[biasBase + ${m} * dims[4] + (${n}) * dims[5]]` : undefined,
    activation,
  });
  if (transB) bMatrix.dispose();
  return out;
}

/**
 * Matrix product with torch.matmul semantics: 1-D operands are promoted (a to a row, b to a column) and the
 * added dimension removed again; batch dims broadcast.
 */
export function matmul(a: Tensor, b: Tensor): Tensor {
  if (a.rank === 0 || b.rank === 0) {
    throw new Error(`matmul: both operands need at least one dimension, got ${shapeStr(a.shape)} and ${shapeStr(b.shape)}`);
  }
  return tidy(() => {
    const a2 = a.rank === 1 ? reshape(a, [1, a.shape[0]!]) : a;
    const b2 = b.rank === 1 ? reshape(b, [b.shape[0]!, 1]) : b;
    const { M, N, K, batch } = gemmShapes('matmul', a2, b2, false, false);
    const outShape = [...batch, ...(a.rank === 1 ? [] : [M]), ...(b.rank === 1 ? [] : [N])];
    if (b2.rank === 2 && a2.rank > 2) {
      // a shared matrix b: fold a's batch into rows, so one GEMM (and dB needs no batch reduction)
      return reshape(gemm(reshape(a2, [numel(batch) * M, K]), b2), outShape);
    }
    return reshape(gemm(a2, b2), outShape);
  });
}

/**
 * x·weightᵀ + bias, like torch.nn.functional.linear: x [..., in], weight [out, in], bias [out]; then
 * `activation` if given (fused when no gradient is recorded).
 */
export function linear(x: Tensor, weight: Tensor, bias?: Tensor, activation?: UnaryOp): Tensor {
  const [outFeatures, inFeatures] = weight.shape as [number, number];
  if (weight.rank !== 2 || x.rank < 1 || x.shape[x.rank - 1] !== inFeatures) {
    throw new Error(`linear: input ${shapeStr(x.shape)} does not match weight ${shapeStr(weight.shape)} (expected [..., in] and [out, in])`);
  }
  if (bias && (bias.rank !== 1 || bias.shape[0] !== outFeatures)) {
    throw new Error(`linear: bias ${shapeStr(bias.shape)} does not match weight ${shapeStr(weight.shape)} (expected [${outFeatures}])`);
  }
  const lead = x.shape.slice(0, -1);
  return tidy(() => reshape(gemm(reshape(x, [numel(lead), inFeatures]), weight, { transB: true, bias, activation }), [...lead, outFeatures]));
}
