// 2-D convolution and transposed convolution, NCHW, with PyTorch's weight layouts and output sizes.
// Both ops and all their gradients are implicit GEMMs on the product kernel of matmul.ts (no im2col
// buffer: the image is read in place inside the k loop):
//   convGather  C[co][pixel] = Σ over (input channel, kh, kw) of weight · image tap, per (image, group).
//               Direct: taps the input at o·s − p + k·d (conv2d forward, convTranspose2d's input gradient).
//               Transposed: at (o + p − k·d) / s where that is a whole index (convTranspose2d forward,
//               conv2d's input gradient), so the transposed op is a gather too, with no scatter.
//   weightGrad  dw[cs][(cb, kh, kw)] = Σ over (n, oh, ow) of small · big tap, the correlation of the input
//               with the output gradient, for both ops (they differ only in which tensor is `small`);
//               the sum is split into chunks when the weight alone has too few outputs to fill the GPU.

import { isGradEnabled, record } from '../engine/autograd.ts';
import { expectFloat, expectRank } from '../engine/kernel.ts';
import { Tensor, shapeStr, tidy, u32Constant } from '../engine/tensor.ts';
import { type UnaryOp, unary } from './elementwise.ts';
import { productKernel } from './matmul.ts';
import { sum } from './reduce.ts';

/** A size for both spatial axes, or [height, width]. */
export type Pair = number | readonly [number, number];

export interface Conv2dOptions {
  stride?: Pair;
  padding?: Pair;
  dilation?: Pair;
  groups?: number;
  /** An elementwise op applied last, fused into the kernel when no gradient is recorded. */
  activation?: UnaryOp;
}

export interface ConvTranspose2dOptions extends Conv2dOptions {
  /** Extra rows/columns on the bottom/right of the output (each below stride or dilation). */
  outputPadding?: Pair;
}

interface Geometry {
  stride: [number, number];
  padding: [number, number];
  dilation: [number, number];
  groups: number;
}

/** Normalises a Pair, checking its values are integers >= min. */
export function pair(op: string, what: string, v: Pair, min: number): [number, number] {
  const p: [number, number] = typeof v === 'number' ? [v, v] : [v[0], v[1]];
  if (p.some((d) => !Number.isInteger(d) || d < min)) throw new Error(`${op}: ${what} must be integers >= ${min}, got ${JSON.stringify(v)}`);
  return p;
}

function geometry(op: string, { stride = 1, padding = 0, dilation = 1, groups = 1 }: Conv2dOptions): Geometry {
  if (!Number.isInteger(groups) || groups < 1) throw new Error(`${op}: groups must be a positive integer, got ${groups}`);
  return { stride: pair(op, 'stride', stride, 1), padding: pair(op, 'padding', padding, 0), dilation: pair(op, 'dilation', dilation, 1), groups };
}

/** WGSL lines for each of a thread's `cols` columns. */
function perCol(cols: number, f: (c: number) => string): string {
  return Array.from({ length: cols }, (_, c) => f(c)).join('\n      ');
}

/** Checks x, weight (whose dim `weightInDim` holds the input channels, per group for dim 1) and bias. */
function checkOperands(op: string, x: Tensor, weight: Tensor, bias: Tensor | undefined, g: Geometry, weightInDim: 0 | 1, outChannels: number): void {
  expectFloat(op, x);
  expectFloat(op, weight);
  expectRank(op, 'input', x, 4);
  expectRank(op, 'weight', weight, 4);
  const inChannels = x.shape[1]!;
  const weightIn = weightInDim === 1 ? weight.shape[1]! * g.groups : weight.shape[0]!;
  if (inChannels % g.groups !== 0 || outChannels % g.groups !== 0 || weightIn !== inChannels) {
    throw new Error(`${op}: input ${shapeStr(x.shape)} and weight ${shapeStr(weight.shape)} do not match with groups=${g.groups}`);
  }
  if (bias) {
    expectFloat(op, bias);
    if (bias.rank !== 1 || bias.shape[0] !== outChannels) {
      throw new Error(`${op}: bias ${shapeStr(bias.shape)} must have shape [${outChannels}] for weight ${shapeStr(weight.shape)}`);
    }
  }
}

function checkOutputSize(op: string, x: Tensor, weight: Tensor, out: [number, number]): void {
  if (out[0] < 1 || out[1] < 1) {
    throw new Error(`${op}: input ${shapeStr(x.shape)} with weight ${shapeStr(weight.shape)} gives an empty output ${shapeStr(out)}`);
  }
}

/**
 * 2-D convolution (cross-correlation) of x [N, Cin, H, W] with weight [Cout, Cin/groups, kh, kw] and an
 * optional bias [Cout]; output [N, Cout, Ho, Wo] with Ho = ⌊(H + 2p − d(kh − 1) − 1) / s⌋ + 1.
 */
export function conv2d(x: Tensor, weight: Tensor, bias?: Tensor, opts: Conv2dOptions = {}): Tensor {
  const geo = geometry('conv2d', opts);
  checkOperands('conv2d', x, weight, bias, geo, 1, weight.shape[0]!);
  const inHW: [number, number] = [x.shape[2]!, x.shape[3]!];
  const kernel = [weight.shape[2]!, weight.shape[3]!];
  const outHW = inHW.map((n, a) => Math.floor((n + 2 * geo.padding[a]! - geo.dilation[a]! * (kernel[a]! - 1) - 1) / geo.stride[a]!) + 1) as [number, number];
  checkOutputSize('conv2d', x, weight, outHW);
  if (opts.activation && isGradEnabled() && (x.requiresGrad || weight.requiresGrad || !!bias?.requiresGrad)) {
    // the activation's backward needs the pre-activation: record the two ops separately
    return tidy(() => unary(opts.activation!, conv2d(x, weight, bias, { ...opts, activation: undefined })));
  }
  const y = convGather(x, weight, bias, geo, false, outHW, opts.activation);
  return record('conv2d', y, [x, weight, bias], (g, [xs, ws]) => [
    x.requiresGrad ? convGather(g, ws!, undefined, geo, true, inHW) : null,
    weight.requiresGrad ? weightGrad(xs!, g, geo, weight.shape[1]!, kernel) : null,
    bias?.requiresGrad ? sum(g, [0, 2, 3]) : null,
  ], [x, weight]);
}

/**
 * 2-D transposed convolution of x [N, Cin, H, W] with weight [Cin, Cout/groups, kh, kw] and an optional
 * bias [Cout]; output [N, Cout, Ho, Wo] with Ho = (H − 1)s − 2p + d(kh − 1) + outputPadding + 1.
 */
export function convTranspose2d(x: Tensor, weight: Tensor, bias?: Tensor, opts: ConvTranspose2dOptions = {}): Tensor {
  const op = 'convTranspose2d';
  const geo = geometry(op, opts);
  checkOperands(op, x, weight, bias, geo, 0, weight.shape[1]! * geo.groups);
  const outPad = pair(op, 'outputPadding', opts.outputPadding ?? 0, 0);
  if (outPad.some((v, a) => v >= Math.max(geo.stride[a]!, geo.dilation[a]!))) {
    throw new Error(`${op}: outputPadding ${shapeStr(outPad)} must be smaller than stride ${shapeStr(geo.stride)} or dilation ${shapeStr(geo.dilation)}`);
  }
  const inHW: [number, number] = [x.shape[2]!, x.shape[3]!];
  const kernel = [weight.shape[2]!, weight.shape[3]!];
  const outHW = inHW.map((n, a) => (n - 1) * geo.stride[a]! - 2 * geo.padding[a]! + geo.dilation[a]! * (kernel[a]! - 1) + outPad[a]! + 1) as [number, number];
  checkOutputSize(op, x, weight, outHW);
  const y = convGather(x, weight, bias, geo, true, outHW);
  return record(op, y, [x, weight, bias], (g, [xs, ws]) => [
    x.requiresGrad ? convGather(g, ws!, undefined, geo, false, inHW) : null,
    weight.requiresGrad ? weightGrad(g, xs!, geo, weight.shape[1]!, kernel) : null,
    bias?.requiresGrad ? sum(g, [0, 2, 3]) : null,
  ], [x, weight]);
}

/**
 * out[n, co, oh, ow] = bias[co] + Σ x[n, ci, ih, iw] · weight over the input channels of co's group and the
 * kernel window. Direct: ih = oh·s − p + kh·d, weight [Cout, Cin/g, kh, kw]. Transposed: oh = ih·s − p + kh·d
 * (so ih = (oh + p − kh·d) / s when whole), weight [Cin, Cout/g, kh, kw]. Positions outside x read zero.
 * As a product per (image, group): rows co of the group, columns the output pixels, k the (kh, kw, ci).
 */
function convGather(
  x: Tensor, weight: Tensor, bias: Tensor | undefined, geo: Geometry, transposed: boolean, outHW: [number, number],
  activation?: UnaryOp,
): Tensor {
  const [N, Cin, H, W] = x.shape as [number, number, number, number];
  const [KH, KW] = [weight.shape[2]!, weight.shape[3]!];
  const G = geo.groups;
  const Cout = transposed ? weight.shape[1]! * G : weight.shape[0]!;
  const [Ho, Wo] = outHW;
  const CinG = Cin / G;
  const CoutG = Cout / G;
  const taps = KH * KW;
  // the output takes the input's dtype (an f16 weight with an f32 input gives f32)
  const out = Tensor.empty([N, Cout, Ho, Wo], x.dtype);
  // Every size is read at run time (ProductSpec.dims): one pipeline per blocking serves every layer's shape.
  // WGSL: whether output coordinate `o` (a per-column let) has an input `v` at tap `k` (stride s, padding p,
  // dilation d along an axis of `size`), and that input index
  const tap = (v: string, o: string, k: string, s: string, p: string, d: string, size: string) => transposed
    ? `let t${v} = i32(${o}) + ${p} - i32(${k} * ${d});
      let ok${v} = t${v} >= 0 && t${v} % i32(${s}) == 0 && t${v} / i32(${s}) < i32(${size});
      let ${v} = u32(clamp(t${v} / i32(${s}), 0, i32(${size}) - 1));`
    : `let t${v} = i32(${o} * ${s} + ${k} * ${d}) - ${p};
      let ok${v} = t${v} >= 0 && t${v} < i32(${size});
      let ${v} = u32(clamp(t${v}, 0, i32(${size}) - 1));`;
  const dims = u32Constant([CoutG, Ho * Wo, N * G, G, Cin, H, W, KH, KW, Wo, ...geo.stride, ...geo.padding, ...geo.dilation]);
  productKernel({
    name: transposed ? 'conv.gatherTransposed' : 'conv.gather',
    key: bias ? 'bias' : '',
    M: CoutG,
    N: Ho * Wo,
    batch: N * G,
    dims,
    // a transposed gather counts its direct convolution's taps: one per (input pixel, weight), not per output pixel
    flops: 2 * N * G * CoutG * CinG * taps * (transposed ? H * W : Ho * Wo),
    inputs: bias ? { x, weight, bias } : { x, weight },
    out,
    gatheredColumns: true,
    prologue: (cols) => `let G = dims[3]; let Cin = dims[4]; let H = dims[5]; let W = dims[6]; let KH = dims[7]; let KW = dims[8]; let Wo = dims[9];
  let sh = dims[10]; let sw = dims[11]; let ph = i32(dims[12]); let pw = i32(dims[13]); let dh = dims[14]; let dw = dims[15];
  let CoutG = dims[0]; let CinG = Cin / G; let taps = KH * KW; let HW = H * W;
  let img = z / G;
  let grp = z % G;
  ${perCol(cols, (c) => `let oh${c} = cb${c} / Wo; let ow${c} = cb${c} % Wo;`)}`,
    // taps outside, channels inside: a column's input offset and validity depend on the tap alone, so they
    // are computed once per tap instead of once per (channel, tap)
    loop: (body, cols) => `let xImg = (img * Cin + grp * CinG) * HW;
  for (var kh = 0u; kh < KH; kh++) {
    ${perCol(cols, (c) => tap(`ih${c}`, `oh${c}`, 'kh', 'sh', 'ph', 'dh', 'H'))}
    for (var kw = 0u; kw < KW; kw++) {
      ${perCol(cols, (c) => `${tap(`iw${c}`, `ow${c}`, 'kw', 'sw', 'pw', 'dw', 'W')}
      let ok${c} = okih${c} && okiw${c};
      let xo${c} = xImg + ih${c} * W + iw${c};`)}
      let wTap = kh * KW + kw;
      for (var ci = 0u; ci < CinG; ci++) {
        let xc = ci * HW;
        let wOff = ${transposed ? '(grp * CinG + ci) * CoutG * taps + wTap' : 'ci * taps + wTap'};
        ${body}
      }
    }
  }`,
    rowOf: (i) => `weight[${transposed ? `ra${i} * taps` : `(grp * CoutG + ra${i}) * CinG * taps`} + wOff]`,
    colOf: (c) => `select(0.0, x[xo${c} + xc], ok${c})`,
    outBase: '(img * CoutG * G + grp * CoutG) * dims[1]',
    bias: bias ? (m) => `bias[grp * CoutG + ${m}]` : undefined,
    activation,
  });
  return out;
}

/**
 * The weight gradient of both conv ops: dw[cs, cb', kh, kw] = Σ_{n, oh, ow} small[n, cs, oh, ow] ·
 * big[n, grp·Cb/g + cb', oh·s − p + kh·d, ow·s − p + kw·d], where `small` is the tensor on the strided side
 * (conv2d: grad_out, convTranspose2d: the input) and cb' runs over `bigPerGroup` channels. The result is
 * [Cs, Cb/g, kh, kw]: conv2d's [Cout, Cin/g, ...] and convTranspose2d's [Cin, Cout/g, ...] layouts alike.
 * As a product per (group, chunk of the N·Ho rows): rows cs, columns (cb', kh, kw), k the (n, oh, ow).
 */
function weightGrad(big: Tensor, small: Tensor, geo: Geometry, bigPerGroup: number, kernel: number[]): Tensor {
  const [N, Cb, H, W] = big.shape as [number, number, number, number];
  const [, Cs, Ho, Wo] = small.shape as [number, number, number, number];
  const [KH, KW] = kernel as [number, number];
  const G = geo.groups;
  const CsG = Cs / G;
  const columns = bigPerGroup * KH * KW;
  const rows = N * Ho;
  // enough (group, chunk) products for 64 workgroups of up to 64 × 128 outputs, each chunk >= 8 rows
  const perProduct = Math.ceil(CsG / 64) * Math.ceil(columns / 128);
  const chunks = Math.max(1, Math.min(Math.ceil(64 / (perProduct * G)), Math.ceil(rows / 8)));
  const rowsPerChunk = Math.ceil(rows / chunks);
  const partial = Tensor.empty([chunks, Cs, bigPerGroup, KH, KW]);
  // sizes read at run time, as in convGather
  const dims = u32Constant([CsG, columns, G * chunks, chunks, Cs, Cb, H, W, Ho, Wo, KH, KW, bigPerGroup, rows, rowsPerChunk, ...geo.stride, ...geo.padding, ...geo.dilation]);
  productKernel({
    name: 'conv.weightGrad',
    key: '',
    M: CsG,
    N: columns,
    batch: G * chunks,
    dims,
    flops: 2 * G * CsG * columns * rows * Wo,
    inputs: { big, small },
    out: partial,
    gatheredColumns: true,
    prologue: (cols) => `let chunks = dims[3]; let Cs = dims[4]; let Cb = dims[5]; let H = dims[6]; let W = dims[7]; let Ho = dims[8]; let Wo = dims[9];
  let KH = dims[10]; let KW = dims[11]; let bigPerGroup = dims[12]; let rows = dims[13]; let rowsPerChunk = dims[14];
  let sh = dims[15]; let sw = dims[16]; let ph = i32(dims[17]); let pw = i32(dims[18]); let dh = dims[19]; let dw = dims[20];
  let CsG = dims[0];
  let grp = z / chunks;
  let chunk = z % chunks;
  ${perCol(cols, (c) => `let ch${c} = grp * bigPerGroup + cb${c} / (KH * KW); let kh${c} = (cb${c} / KW) % KH; let kw${c} = cb${c} % KW;`)}`,
    loop: (body, cols) => `for (var r = chunk * rowsPerChunk; r < min(rows, (chunk + 1u) * rowsPerChunk); r++) {
    let n = r / Ho;
    let oh = r % Ho;
    let sOff = (n * Cs + grp * CsG) * Ho * Wo + oh * Wo;
    ${perCol(cols, (c) => `let tih${c} = i32(oh * sh + kh${c} * dh) - ph;
      let okh${c} = tih${c} >= 0 && tih${c} < i32(H);
      let br${c} = ((n * Cb + ch${c}) * H + u32(clamp(tih${c}, 0, i32(H) - 1))) * W;`)}
    for (var ow = 0u; ow < Wo; ow++) {
      ${perCol(cols, (c) => `let tiw${c} = i32(ow * sw + kw${c} * dw) - pw;`)}
      ${body}
    }
  }`,
    rowOf: (i) => `small[sOff + ra${i} * Ho * Wo + ow]`,
    colOf: (c) => `select(0.0, big[br${c} + u32(clamp(tiw${c}, 0, i32(W) - 1))], okh${c} && tiw${c} >= 0 && tiw${c} < i32(W))`,
    outBase: '(chunk * Cs + grp * CsG) * dims[1]',
  });
  const total = chunks === 1 ? partial.alias(partial.shape.slice(1)) : sum(partial, 0);
  partial.dispose();
  return total;
}
