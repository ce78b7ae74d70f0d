// 2-D convolution and transposed convolution, NCHW, with PyTorch's weight layouts and output sizes.
// Two direct kernels cover both ops and all their gradients:
//   convGather  one thread per output element, Σ over the group's input channels × the kernel window.
//               Direct: reads the input at o·s − p + k·d (conv2d forward, convTranspose2d's input gradient).
//               Transposed: reads it at (o + p − k·d) / s where that is a whole index (convTranspose2d
//               forward, conv2d's input gradient), so the transposed op is a gather too, with no scatter.
//   weightGrad  dw[k] = Σ_o small[o] · big[o·s − p + k·d], the correlation of the input with the output
//               gradient, for both ops (they differ only in which tensor is `small`).
// Both are plain loops; an implicit-GEMM tiling would replace their bodies without changing their contracts.

import { record } from '../engine/autograd.ts';
import { expectDType, expectRank, grid1d, launch } from '../engine/kernel.ts';
import { Tensor, shapeStr } from '../engine/tensor.ts';
import { sum } from './reduce.ts';

/** A size for both spatial axes, or [height, width]. */
export type Pair = number | readonly [number, number];

export interface Conv2dOptions {
  stride?: Pair;
  padding?: Pair;
  dilation?: Pair;
  groups?: number;
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

function geometryKey(g: Geometry): string {
  return `${g.stride}|${g.padding}|${g.dilation}|${g.groups}`;
}

/** Checks x, weight (whose dim `weightInDim` holds the input channels, per group for dim 1) and bias. */
function checkOperands(op: string, x: Tensor, weight: Tensor, bias: Tensor | undefined, g: Geometry, weightInDim: 0 | 1, outChannels: number): void {
  expectDType(op, x, 'f32');
  expectDType(op, weight, 'f32');
  expectRank(op, 'input', x, 4);
  expectRank(op, 'weight', weight, 4);
  const inChannels = x.shape[1]!;
  const weightIn = weightInDim === 1 ? weight.shape[1]! * g.groups : weight.shape[0]!;
  if (inChannels % g.groups !== 0 || outChannels % g.groups !== 0 || weightIn !== inChannels) {
    throw new Error(`${op}: input ${shapeStr(x.shape)} and weight ${shapeStr(weight.shape)} do not match with groups=${g.groups}`);
  }
  if (bias) {
    expectDType(op, bias, 'f32');
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
  const y = convGather(x, weight, bias, geo, false, outHW);
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
 */
function convGather(x: Tensor, weight: Tensor, bias: Tensor | undefined, geo: Geometry, transposed: boolean, outHW: [number, number]): Tensor {
  const [N, Cin, H, W] = x.shape as [number, number, number, number];
  const [KH, KW] = [weight.shape[2]!, weight.shape[3]!];
  const Cout = transposed ? weight.shape[1]! * geo.groups : weight.shape[0]!;
  const [Ho, Wo] = outHW;
  const CinG = Cin / geo.groups;
  const CoutG = Cout / geo.groups;
  const out = Tensor.empty([N, Cout, Ho, Wo]);
  const grid = grid1d(out.size);
  const [sh, sw] = geo.stride;
  const [ph, pw] = geo.padding;
  const [dh, dw] = geo.dilation;
  // WGSL: the input row/column `v` read by output `o` at kernel tap `k`, or `continue` when there is none.
  const tap = (v: string, o: string, k: string, s: number, p: number, d: number, size: number) => transposed
    ? `let t${v} = i32(${o}) + ${p} - i32(${k} * ${d}u);
        if (t${v} < 0 || t${v} % ${s} != 0 || t${v} / ${s} >= ${size}) { continue; }
        let ${v} = u32(t${v} / ${s});`
    : `let t${v} = i32(${o} * ${s}u + ${k} * ${d}u) - ${p};
        if (t${v} < 0 || t${v} >= ${size}) { continue; }
        let ${v} = u32(t${v});`;
  const weightBase = transposed ? `((grp * ${CinG}u + c) * ${CoutG}u + co % ${CoutG}u) * ${KH * KW}u` : `(co * ${CinG}u + c) * ${KH * KW}u`;
  launch({
    name: transposed ? 'conv.gatherTransposed' : 'conv.gather',
    key: `${shapeStr(x.shape)}|${shapeStr(weight.shape)}|${outHW}|${geometryKey(geo)}|${bias ? 'bias' : ''}`,
    inputs: bias ? { x, weight, bias } : { x, weight },
    outputs: { out },
    workgroups: grid.workgroups,
    wgsl: (bindings) => `${bindings}
${grid.main}
  let ow = i % ${Wo}u;
  let oh = (i / ${Wo}u) % ${Ho}u;
  let co = (i / ${Ho * Wo}u) % ${Cout}u;
  let n = i / ${Cout * Ho * Wo}u;
  let grp = co / ${CoutG}u;
  var acc = ${bias ? 'bias[co]' : '0.0'};
  for (var c = 0u; c < ${CinG}u; c++) {
    let xBase = (n * ${Cin}u + grp * ${CinG}u + c) * ${H * W}u;
    let wBase = ${weightBase};
    for (var kh = 0u; kh < ${KH}u; kh++) {
      ${tap('ih', 'oh', 'kh', sh, ph, dh, H)}
      for (var kw = 0u; kw < ${KW}u; kw++) {
        ${tap('iw', 'ow', 'kw', sw, pw, dw, W)}
        acc += x[xBase + ih * ${W}u + iw] * weight[wBase + kh * ${KW}u + kw];
      }
    }
  }
  out[i] = acc;
}`,
  });
  return out;
}

/**
 * The weight gradient of both conv ops: dw[cs, cb', kh, kw] = Σ_{n, oh, ow} small[n, cs, oh, ow] ·
 * big[n, grp·Cb/g + cb', oh·s − p + kh·d, ow·s − p + kw·d], where `small` is the tensor on the strided side
 * (conv2d: grad_out, convTranspose2d: the input) and cb' runs over `bigPerGroup` channels. The result is
 * [Cs, Cb/g, kh, kw]: conv2d's [Cout, Cin/g, ...] and convTranspose2d's [Cin, Cout/g, ...] layouts alike.
 * The sum over N·Ho rows is split into chunks when the weight alone is too small to fill the GPU, and the
 * chunks' partial sums are added by `sum`.
 */
function weightGrad(big: Tensor, small: Tensor, geo: Geometry, bigPerGroup: number, kernel: number[]): Tensor {
  const [N, Cb, H, W] = big.shape as [number, number, number, number];
  const [, Cs, Ho, Wo] = small.shape as [number, number, number, number];
  const [KH, KW] = kernel as [number, number];
  const CsG = Cs / geo.groups;
  const weightSize = Cs * bigPerGroup * KH * KW;
  const rows = N * Ho;
  const targetThreads = 1 << 16;
  const chunks = Math.max(1, Math.min(Math.ceil(targetThreads / weightSize), Math.ceil(rows / 4)));
  const rowsPerChunk = Math.ceil(rows / chunks);
  const partial = Tensor.empty([chunks, Cs, bigPerGroup, KH, KW]);
  const grid = grid1d(partial.size);
  const [sh, sw] = geo.stride;
  const [ph, pw] = geo.padding;
  const [dh, dw] = geo.dilation;
  launch({
    name: 'conv.weightGrad',
    key: `${shapeStr(big.shape)}|${shapeStr(small.shape)}|${bigPerGroup}|${kernel}|${geometryKey(geo)}|${chunks}`,
    inputs: { big, small },
    outputs: { partial },
    workgroups: grid.workgroups,
    wgsl: (bindings) => `${bindings}
${grid.main}
  let kw = i % ${KW}u;
  let kh = (i / ${KW}u) % ${KH}u;
  let cb = (i / ${KH * KW}u) % ${bigPerGroup}u;
  let cs = (i / ${bigPerGroup * KH * KW}u) % ${Cs}u;
  let chunk = i / ${weightSize}u;
  let bigChannel = (cs / ${CsG}u) * ${bigPerGroup}u + cb;
  var acc = 0.0;
  for (var r = chunk * ${rowsPerChunk}u; r < min(${rows}u, (chunk + 1u) * ${rowsPerChunk}u); r++) {
    let n = r / ${Ho}u;
    let oh = r % ${Ho}u;
    let ih = i32(oh * ${sh}u + kh * ${dh}u) - ${ph};
    if (ih < 0 || ih >= ${H}) { continue; }
    let smallRow = ((n * ${Cs}u + cs) * ${Ho}u + oh) * ${Wo}u;
    let bigRow = ((n * ${Cb}u + bigChannel) * ${H}u + u32(ih)) * ${W}u;
    for (var ow = 0u; ow < ${Wo}u; ow++) {
      let iw = i32(ow * ${sw}u + kw * ${dw}u) - ${pw};
      if (iw < 0 || iw >= ${W}) { continue; }
      acc += small[smallRow + ow] * big[bigRow + u32(iw)];
    }
  }
  partial[i] = acc;
}`,
  });
  const total = chunks === 1 ? partial.alias(partial.shape.slice(1)) : sum(partial, 0);
  partial.dispose();
  return total;
}
