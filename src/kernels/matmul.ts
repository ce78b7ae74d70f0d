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
import { broadcastShapes, broadcastStrides, expectBroadcastsTo, expectDType, f32, launch, offsetExpr, unravel } from '../engine/kernel.ts';
import { type Shape, Tensor, numel, shapeStr, tidy } from '../engine/tensor.ts';
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
export function gemm(a: Tensor, b: Tensor, { transA = false, transB = false, alpha = 1, bias, activation }: GemmOptions = {}): Tensor {
  expectDType('gemm', a, 'f32');
  expectDType('gemm', b, 'f32');
  const shapes = gemmShapes('gemm', a, b, transA, transB);
  if (bias) {
    expectDType('gemm', bias, 'f32');
    expectBroadcastsTo('gemm', 'bias', bias, [...shapes.batch, shapes.M, shapes.N]);
  }
  // read now: composite ops dispose their intermediate inputs (and with them requiresGrad) before backward
  const [gradA, gradB, gradBias] = [a.requiresGrad, b.requiresGrad, !!bias?.requiresGrad];
  if (activation && isGradEnabled() && (gradA || gradB || gradBias)) {
    // the activation's backward needs the pre-activation: record the two ops separately
    return tidy(() => unary(activation, gemm(a, b, { transA, transB, alpha, bias })));
  }
  const y = gemmKernel(a, b, bias, transA, transB, alpha, activation, shapes);
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

/** 8 × 8 threads per workgroup, x along N. */
const threadsX = 8;
const threadsY = 8;

/**
 * Rows (RM) and vec4 columns (VN) per thread: the biggest block that neither pads N by more than an eighth
 * nor leaves fewer than 32 workgroups to spread over the GPU's cores, shrinking the column block first.
 */
function blocking(M: number, N: number, batch: number): { RM: number; VN: number } {
  let VN = [4, 2, 1].find((v) => Math.ceil(N / (4 * v)) * 4 * v <= N * 1.125) ?? 1;
  let RM = M >= 8 * threadsY ? 8 : 4;
  const groups = () => Math.ceil(N / (4 * VN * threadsX)) * Math.ceil(M / (RM * threadsY)) * batch;
  while (groups() < 32 && (VN > 1 || RM > 4)) {
    if (VN > 1) VN /= 2;
    else RM = 4;
  }
  return { RM, VN };
}

function gemmKernel(
  a: Tensor, b: Tensor, bias: Tensor | undefined, transA: boolean, transB: boolean, alpha: number,
  activation: UnaryOp | undefined, { M, N, K, batch }: GemmShapes,
): Tensor {
  const outShape = [...batch, M, N];
  const out = Tensor.empty(outShape);
  if (out.size === 0) return out;
  if (transB) {
    // Bᵀ stored [N, K] makes every thread of a row of lanes read a different row of B (a gather per k);
    // one transposed copy, O(N·K) next to the product's O(M·N·K), measured 2–3× faster overall on lavapipe.
    const bT = noGrad(() => transpose(b, -1, -2));
    const y = gemmKernelInto(out, a, bT, bias, transA, alpha, activation, { M, N, K, batch });
    bT.dispose();
    return y;
  }
  return gemmKernelInto(out, a, b, bias, transA, alpha, activation, { M, N, K, batch });
}

function gemmKernelInto(
  out: Tensor, a: Tensor, b: Tensor, bias: Tensor | undefined, transA: boolean, alpha: number,
  activation: UnaryOp | undefined, { M, N, K, batch }: GemmShapes,
): Tensor {
  const outShape = out.shape;
  const batchCount = numel(batch);
  const { RM, VN } = blocking(M, N, batchCount);
  const CW = 4 * VN;
  // vec4 along rows of Aᵀ and columns of B when those are multiples of 4 (so every vec4 is aligned). A's own
  // rows are read one scalar at a time: lanes along N share the row, so the load is uniform (one read).
  const aVec = transA && M % 4 === 0;
  const bVec = N % 4 === 0;
  const range = (n: number) => [...Array(n).keys()];

  const loads = [
    ...(aVec
      ? range(RM / 4).map((r) => `let a${r} = a[(aBase + k * ${M}u + rv${r}) / 4u];`)
      : range(RM).map((i) => `let a${i} = a[aBase + ${transA ? `k * ${M}u + ra${i}` : `ra${i} * ${K}u + k`}];`)),
    ...(bVec
      ? range(VN).map((j) => `let b${j} = b[(bBase + k * ${N}u + cv${j}) / 4u];`)
      : range(CW).map((c) => `let b${c} = b[bBase + k * ${N}u + cb${c}];`)),
  ];
  const A = (i: number) => (aVec ? `a${i >> 2}[${i & 3}]` : `a${i}`);
  const B = (j: number) => (bVec ? `b${j}` : `vec4f(${range(4).map((c) => `b${4 * j + c}`).join(', ')})`);
  const fmas = range(RM).flatMap((i) => range(VN).map((j) => `c${i}_${j} = fma(vec4f(${A(i)}), ${B(j)}, c${i}_${j});`));

  // clamped rows / columns the loads read (out-of-range ones repeat the last and are never stored)
  const indices = [
    ...(aVec ? range(RM / 4).map((r) => `let rv${r} = min(m0 + ${4 * r}u, ${M - 4}u);`) : range(RM).map((i) => `let ra${i} = min(m0 + ${i}u, ${M - 1}u);`)),
    ...(bVec ? range(VN).map((j) => `let cv${j} = min(n0 + ${4 * j}u, ${N - 4}u);`) : range(CW).map((c) => `let cb${c} = min(n0 + ${c}u, ${N - 1}u);`)),
  ];

  const scale = alpha === 1 ? '' : ` * ${f32(alpha)}`;
  const biasStrides = bias ? broadcastStrides(bias.shape, outShape) : [];
  const [sm = 0, sn = 0] = biasStrides.slice(-2);
  const act: UnaryDef | undefined = activation ? unaryOps[activation] : undefined;
  const epilogue = (v: string, n: string) => {
    const e = `${v}${scale}${bias ? ` + bias[biasBase + m * ${sm}u + (${n}) * ${sn}u]` : ''}`;
    return act ? `act(${e})` : e;
  };
  const stores = range(RM).flatMap((i) => range(VN).map((j) => {
    const n = `n0 + ${4 * j}u`;
    const body = bVec
      ? `if (${n} < ${N}u) { out[(oBase + m * ${N}u + ${n}) / 4u] = vec4f(${range(4).map((c) => epilogue(`c${i}_${j}[${c}]`, `${n} + ${c}u`)).join(', ')}); }`
      : range(4).map((c) => `if (${n} + ${c}u < ${N}u) { out[oBase + m * ${N}u + ${n} + ${c}u] = ${epilogue(`c${i}_${j}[${c}]`, `${n} + ${c}u`)}; }`).join('\n      ');
    return `{ let m = m0 + ${i}u; if (m < ${M}u) {
      ${body}
    } }`;
  }));
  const batchOffset = (t: Tensor, matrix: number) => offsetExpr(broadcastStrides(t.shape.slice(0, -2), batch).map((s) => s * matrix), 'z');

  launch({
    name: activation ? `gemm+${activation}` : 'gemm',
    key: `${shapeStr(a.shape)}${transA ? 'T' : ''}|${shapeStr(b.shape)}|${bias ? shapeStr(bias.shape) : '-'}|${alpha}|${RM}x${VN}`,
    inputs: bias ? { a, b, bias } : { a, b },
    outputs: { out },
    // N % 4 == 0 makes the output rows vec4-aligned too
    vec4: [...(aVec ? ['a'] : []), ...(bVec ? ['b', 'out'] : [])],
    workgroups: [Math.ceil(N / (CW * threadsX)), Math.ceil(M / (RM * threadsY)), batchCount],
    wgsl: (bindings) => `${bindings}
${act ? `${act.helpers ?? ''}
fn act(x: f32) -> f32 { return ${act.forward}; }` : ''}
@compute @workgroup_size(${threadsX}, ${threadsY})
fn main(@builtin(global_invocation_id) gid: vec3u) {
  ${unravel(batch, 'gid.z', 'z')}
  let aBase = ${batchOffset(a, M * K)};
  let bBase = ${batchOffset(b, K * N)};
  let oBase = gid.z * ${M * N}u;
  ${bias ? `let biasBase = ${offsetExpr(biasStrides.slice(0, -2), 'z')};` : ''}
  let m0 = gid.y * ${RM}u;
  let n0 = gid.x * ${CW}u;
  ${indices.join('\n  ')}
  ${range(RM).flatMap((i) => range(VN).map((j) => `var c${i}_${j} = vec4f(0.0);`)).join(' ')}
  for (var k = 0u; k < ${K}u; k++) {
    ${loads.join('\n    ')}
    ${fmas.join('\n    ')}
  }
  ${stores.join('\n  ')}
}`,
  });
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

/** x·weightᵀ + bias, like torch.nn.functional.linear: x [..., in], weight [out, in], bias [out]. */
export function linear(x: Tensor, weight: Tensor, bias?: Tensor): Tensor {
  const [outFeatures, inFeatures] = weight.shape as [number, number];
  if (weight.rank !== 2 || x.rank < 1 || x.shape[x.rank - 1] !== inFeatures) {
    throw new Error(`linear: input ${shapeStr(x.shape)} does not match weight ${shapeStr(weight.shape)} (expected [..., in] and [out, in])`);
  }
  if (bias && (bias.rank !== 1 || bias.shape[0] !== outFeatures)) {
    throw new Error(`linear: bias ${shapeStr(bias.shape)} does not match weight ${shapeStr(weight.shape)} (expected [${outFeatures}])`);
  }
  const lead = x.shape.slice(0, -1);
  return tidy(() => reshape(gemm(reshape(x, [numel(lead), inFeatures]), weight, { transB: true, bias }), [...lead, outFeatures]));
}
