// Matrix products. One batched GEMM kernel, `gemm`, computes alpha·op(A)·op(B) + bias over broadcast batch
// dims, where op() optionally transposes: backward then needs no transposed copies (dA = g·Bᵀ, dB = Aᵀ·g),
// and other ops (linear, attention, convolution) reuse it.
//
// Kernel: each workgroup of 16×16 threads computes a BM×BN output tile (BM = 16·RM, BN = 16·RN; each thread
// owns RM×RN outputs 16 apart), walking K in steps of BK through tiles of A and B in workgroup memory.

import { record } from '../engine/autograd.ts';
import { broadcastShapes, broadcastStrides, expectBroadcastsTo, expectDType, f32, launch, offsetExpr, unravel } from '../engine/kernel.ts';
import { type Shape, Tensor, numel, shapeStr, tidy } from '../engine/tensor.ts';
import { sumTo } from './reduce.ts';
import { reshape } from './shape.ts';

export interface GemmOptions {
  /** Use Aᵀ: `a` is stored [..., K, M] instead of [..., M, K]. */
  transA?: boolean;
  /** Use Bᵀ: `b` is stored [..., N, K] instead of [..., K, N]. */
  transB?: boolean;
  /** Multiplies the product (not the bias). */
  alpha?: number;
  /** Added to the scaled product; broadcastable to the output [..., M, N]. */
  bias?: Tensor;
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
 * Batched GEMM: alpha·op(A)·op(B) + bias with A [..., M, K] and B [..., K, N] (op() transposes per
 * `transA`/`transB`), batch dims broadcast NumPy-style. Differentiable in a, b and bias.
 */
export function gemm(a: Tensor, b: Tensor, { transA = false, transB = false, alpha = 1, bias }: GemmOptions = {}): Tensor {
  expectDType('gemm', a, 'f32');
  expectDType('gemm', b, 'f32');
  const shapes = gemmShapes('gemm', a, b, transA, transB);
  if (bias) {
    expectDType('gemm', bias, 'f32');
    expectBroadcastsTo('gemm', 'bias', bias, [...shapes.batch, shapes.M, shapes.N]);
  }
  const y = gemmKernel(a, b, bias, transA, transB, alpha, shapes);
  // read now: composite ops dispose their intermediate inputs (and with them requiresGrad) before backward
  const [gradA, gradB, gradBias] = [a.requiresGrad, b.requiresGrad, !!bias?.requiresGrad];
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

const threads = 16; // per tile dimension
const BK = 16;

/** Outputs per thread along a dimension of size n: bigger tiles for bigger matrices. */
function perThread(n: number): number {
  return n >= 64 ? 4 : n >= 32 ? 2 : 1;
}

function gemmKernel(a: Tensor, b: Tensor, bias: Tensor | undefined, transA: boolean, transB: boolean, alpha: number, { M, N, K, batch }: GemmShapes): Tensor {
  const outShape = [...batch, M, N];
  const out = Tensor.empty(outShape);
  if (out.size === 0) return out;
  const RM = perThread(M);
  const RN = perThread(N);
  const BM = threads * RM;
  const BN = threads * RN;
  const batchOffset = (t: Tensor, matrix: number) => offsetExpr(broadcastStrides(t.shape.slice(0, -2), batch).map((s) => s * matrix), 'z');

  // Tile loads: each of the 256 threads loads RM elements of the BK×BM A tile and RN of the BK×BN B tile,
  // consecutive threads walking the contiguous dimension of the stored matrix. Tiles are stored [k][m] and [k][n].
  const loadA = Array.from({ length: RM }, (_, p) => {
    const l = `t + ${p * 256}u`;
    const [mm, kk] = transA ? [`(${l}) % ${BM}u`, `(${l}) / ${BM}u`] : [`(${l}) / ${BK}u`, `(${l}) % ${BK}u`];
    const addr = transA ? `aBase + k * ${M}u + m` : `aBase + m * ${K}u + k`;
    return `{ let mm = ${mm}; let kk = ${kk}; let m = m0 + mm; let k = k0 + kk;
      var v = 0.0; if (m < ${M}u && k < ${K}u) { v = a[${addr}]; }
      tileA[kk * ${BM}u + mm] = v; }`;
  });
  const loadB = Array.from({ length: RN }, (_, p) => {
    const l = `t + ${p * 256}u`;
    const [nn, kk] = transB ? [`(${l}) / ${BK}u`, `(${l}) % ${BK}u`] : [`(${l}) % ${BN}u`, `(${l}) / ${BN}u`];
    const addr = transB ? `bBase + n * ${K}u + k` : `bBase + k * ${N}u + n`;
    return `{ let nn = ${nn}; let kk = ${kk}; let n = n0 + nn; let k = k0 + kk;
      var v = 0.0; if (n < ${N}u && k < ${K}u) { v = b[${addr}]; }
      tileB[kk * ${BN}u + nn] = v; }`;
  });
  const rows = [...Array(RM).keys()];
  const cols = [...Array(RN).keys()];
  const fmas = rows.flatMap((i) => cols.map((j) => `acc[${i * RN + j}] = fma(ra${i}, rb${j}, acc[${i * RN + j}]);`));

  let biasTerm = '';
  if (bias) {
    const st = broadcastStrides(bias.shape, outShape);
    const [sm, sn] = st.slice(-2) as [number, number];
    biasTerm = ` + bias[${offsetExpr(st.slice(0, -2), 'z')} + m * ${sm}u + n * ${sn}u]`;
  }
  const scale = alpha === 1 ? '' : ` * ${f32(alpha)}`;
  const stores = rows.flatMap((i) => cols.map((j) => `{ let m = m0 + lid.y + ${threads * i}u; let n = n0 + lid.x + ${threads * j}u;
    if (m < ${M}u && n < ${N}u) { out[oBase + m * ${N}u + n] = acc[${i * RN + j}]${scale}${biasTerm}; } }`));

  launch({
    name: 'gemm',
    key: `${shapeStr(a.shape)}${transA ? 'T' : ''}|${shapeStr(b.shape)}${transB ? 'T' : ''}|${bias ? shapeStr(bias.shape) : '-'}|${alpha}`,
    inputs: bias ? { a, b, bias } : { a, b },
    outputs: { out },
    workgroups: [Math.ceil(N / BN), Math.ceil(M / BM), numel(batch)],
    wgsl: (bindings) => `${bindings}
var<workgroup> tileA: array<f32, ${BK * BM}>;
var<workgroup> tileB: array<f32, ${BK * BN}>;
@compute @workgroup_size(${threads}, ${threads})
fn main(@builtin(workgroup_id) wid: vec3u, @builtin(local_invocation_id) lid: vec3u, @builtin(local_invocation_index) t: u32) {
  ${unravel(batch, 'wid.z', 'z')}
  let aBase = ${batchOffset(a, M * K)};
  let bBase = ${batchOffset(b, K * N)};
  let oBase = wid.z * ${M * N}u;
  let m0 = wid.y * ${BM}u;
  let n0 = wid.x * ${BN}u;
  var acc: array<f32, ${RM * RN}>;
  for (var k0 = 0u; k0 < ${K}u; k0 += ${BK}u) {
    ${loadA.join('\n    ')}
    ${loadB.join('\n    ')}
    workgroupBarrier();
    for (var kk = 0u; kk < ${BK}u; kk++) {
      ${rows.map((i) => `let ra${i} = tileA[kk * ${BM}u + lid.y + ${threads * i}u];`).join(' ')}
      ${cols.map((j) => `let rb${j} = tileB[kk * ${BN}u + lid.x + ${threads * j}u];`).join(' ')}
      ${fmas.join('\n      ')}
    }
    workgroupBarrier();
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
