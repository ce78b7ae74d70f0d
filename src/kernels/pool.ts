// 2-D pooling, NCHW: max, average and adaptive average. Each spatial axis is described by its windows
// (where output o's window starts and ends, and which outputs' windows hold input i), so one forward and
// one backward template serve all three. Backward is a gather: each input element sums the gradients of
// the few outputs whose windows hold it, so no two threads write the same element.

import { record } from '../engine/autograd.ts';
import { expectDType, expectRank, grid1d, launch } from '../engine/kernel.ts';
import { Tensor, shapeStr } from '../engine/tensor.ts';
import { type Pair, pair } from './conv.ts';

/** Pooling windows along one axis, as WGSL i32 expressions. */
interface Windows {
  inSize: number;
  outSize: number;
  /** Output o's window is [start(o), end(o)), possibly reaching into the padding. */
  start: (o: string) => string;
  end: (o: string) => string;
  /** The outputs whose windows hold input i are firstOut(i)..lastOut(i) (inclusive, before clamping to the output). */
  firstOut: (i: string) => string;
  lastOut: (i: string) => string;
  key: string;
}

/** Windows of size k every s elements over an input padded by p on both sides. */
function slidingWindows(op: string, inSize: number, k: number, s: number, p: number): Windows {
  if (p > k / 2) throw new Error(`${op}: padding ${p} must be at most half the kernel size ${k}`);
  const outSize = Math.floor((inSize + 2 * p - k) / s) + 1;
  if (outSize < 1) throw new Error(`${op}: kernel ${k} (padding ${p}) is larger than the input size ${inSize}`);
  return {
    inSize,
    outSize,
    start: (o) => `(${o} * ${s} - ${p})`,
    end: (o) => `(${o} * ${s} - ${p} + ${k})`,
    // o·s − p <= i < o·s − p + k  ⇔  (i + p − k + 1)/s <= o <= (i + p)/s
    firstOut: (i) => `((max(${i} + ${p - k + 1}, 0) + ${s - 1}) / ${s})`,
    lastOut: (i) => `((${i} + ${p}) / ${s})`,
    key: `${inSize},${k},${s},${p}`,
  };
}

/** PyTorch's adaptive windows: [⌊o·in/out⌋, ⌈(o + 1)·in/out⌉). */
function adaptiveWindows(inSize: number, outSize: number): Windows {
  return {
    inSize,
    outSize,
    start: (o) => `((${o} * ${inSize}) / ${outSize})`,
    end: (o) => `(((${o} + 1) * ${inSize} + ${outSize - 1}) / ${outSize})`,
    // start(o) <= i  ⇔  o < (i + 1)·out/in;  end(o) > i  ⇔  o >= ⌊i·out/in⌋
    firstOut: (i) => `((${i} * ${outSize}) / ${inSize})`,
    lastOut: (i) => `(((${i} + 1) * ${outSize} + ${inSize - 1}) / ${inSize} - 1)`,
    key: `${inSize},${outSize},adaptive`,
  };
}

type PoolKind = 'max' | 'avg';

interface PoolSpec {
  kind: PoolKind;
  h: Windows;
  w: Windows;
  /** avg: divide by the whole window (padding included) rather than by the elements inside the input. */
  countIncludePad: boolean;
}

function specKey(s: PoolSpec): string {
  return `${s.h.key}|${s.w.key}|${s.countIncludePad}`;
}

/** WGSL: the avg divisor of the window at output (oh, ow). */
function divisor(s: PoolSpec): string {
  const size = (win: Windows, o: string) => s.countIncludePad
    ? `(${win.end(o)} - ${win.start(o)})`
    : `(min(${win.end(o)}, ${win.inSize}) - max(${win.start(o)}, 0))`;
  return `f32(${size(s.h, 'oh')} * ${size(s.w, 'ow')})`;
}

/** Forward: out [N, C, Ho, Wo], and for max the flat h·W + w index of each window's first maximum. */
function poolForward(x: Tensor, s: PoolSpec): { out: Tensor; argmax?: Tensor } {
  const [N, C, H, W] = x.shape as [number, number, number, number];
  const [Ho, Wo] = [s.h.outSize, s.w.outSize];
  const out = Tensor.empty([N, C, Ho, Wo]);
  const argmax = s.kind === 'max' ? Tensor.empty(out.shape, 'i32') : undefined;
  const grid = grid1d(out.size);
  const body = s.kind === 'max'
    ? { init: `var arg = h0 * ${W} + w0;\n  var best = x[base + u32(arg)];`, visit: `if (v > best) { best = v; arg = h * ${W} + w; }`, finish: 'out[i] = best;\n  argmax[i] = arg;' }
    : { init: 'var acc = 0.0;', visit: 'acc += v;', finish: `out[i] = acc / ${divisor(s)};` };
  launch({
    name: `pool.${s.kind}`,
    key: `${shapeStr(x.shape)}|${specKey(s)}`,
    inputs: { x },
    outputs: argmax ? { out, argmax } : { out },
    workgroups: grid.workgroups,
    wgsl: (bindings) => `${bindings}
${grid.main}
  let ow = i32(i % ${Wo}u);
  let oh = i32((i / ${Wo}u) % ${Ho}u);
  let base = (i / ${Ho * Wo}u) * ${H * W}u;
  let h0 = max(${s.h.start('oh')}, 0);
  let h1 = min(${s.h.end('oh')}, ${H});
  let w0 = max(${s.w.start('ow')}, 0);
  let w1 = min(${s.w.end('ow')}, ${W});
  ${body.init}
  for (var h = h0; h < h1; h++) {
    for (var w = w0; w < w1; w++) {
      let v = x[base + u32(h * ${W} + w)];
      ${body.visit}
    }
  }
  ${body.finish}
}`,
  });
  return { out, argmax };
}

/** Backward: dx[n, c, h, w] = Σ over the outputs whose windows hold (h, w) of their share of g. */
function poolBackward(g: Tensor, inShape: readonly number[], s: PoolSpec, argmax?: Tensor): Tensor {
  const [, , H, W] = inShape as [number, number, number, number];
  const [Ho, Wo] = [s.h.outSize, s.w.outSize];
  const dx = Tensor.empty(inShape);
  const grid = grid1d(dx.size);
  const share = s.kind === 'max' ? `select(0.0, g[o], argmax[o] == ih * ${W} + iw)` : `g[o] / ${divisor(s)}`;
  launch({
    name: `pool.${s.kind}.backward`,
    key: `${shapeStr(inShape)}|${specKey(s)}`,
    inputs: argmax ? { g, argmax } : { g },
    outputs: { dx },
    workgroups: grid.workgroups,
    wgsl: (bindings) => `${bindings}
${grid.main}
  let iw = i32(i % ${W}u);
  let ih = i32((i / ${W}u) % ${H}u);
  let base = (i / ${H * W}u) * ${Ho * Wo}u;
  let oh0 = max(${s.h.firstOut('ih')}, 0);
  let oh1 = min(${s.h.lastOut('ih')}, ${Ho - 1});
  let ow0 = max(${s.w.firstOut('iw')}, 0);
  let ow1 = min(${s.w.lastOut('iw')}, ${Wo - 1});
  var acc = 0.0;
  for (var oh = oh0; oh <= oh1; oh++) {
    for (var ow = ow0; ow <= ow1; ow++) {
      let o = base + u32(oh * ${Wo} + ow);
      acc += ${share};
    }
  }
  dx[i] = acc;
}`,
  });
  return dx;
}

function checkInput(op: string, x: Tensor): void {
  expectDType(op, x, 'f32');
  expectRank(op, 'input', x, 4);
}

export interface Pool2dOptions {
  kernelSize: Pair;
  /** Defaults to the kernel size. */
  stride?: Pair;
  /** Implicit padding on both sides, at most half the kernel. */
  padding?: Pair;
}

function slidingSpec(op: string, x: Tensor, kind: PoolKind, { kernelSize, stride, padding = 0 }: Pool2dOptions, countIncludePad: boolean): PoolSpec {
  checkInput(op, x);
  const k = pair(op, 'kernelSize', kernelSize, 1);
  const s = pair(op, 'stride', stride ?? k, 1);
  const p = pair(op, 'padding', padding, 0);
  return {
    kind,
    h: slidingWindows(op, x.shape[2]!, k[0], s[0], p[0]),
    w: slidingWindows(op, x.shape[3]!, k[1], s[1], p[1]),
    countIncludePad,
  };
}

function pool(op: string, x: Tensor, spec: PoolSpec): Tensor {
  const { out, argmax } = poolForward(x, spec);
  const y = record(op, out, [x], (g, [idx]) => [poolBackward(g, x.shape, spec, idx)], argmax ? [argmax] : []);
  argmax?.dispose();
  return y;
}

/**
 * Max pooling of x [N, C, H, W] (padding never wins: it acts as −∞). The gradient goes to the first
 * maximum of each window in row-major order, as PyTorch.
 */
export function maxPool2d(x: Tensor, opts: Pool2dOptions): Tensor {
  return pool('maxPool2d', x, slidingSpec('maxPool2d', x, 'max', opts, false));
}

export interface AvgPool2dOptions extends Pool2dOptions {
  /** Divide by the whole window, padded zeros included (default), or only by the elements inside the input. */
  countIncludePad?: boolean;
}

/** Average pooling of x [N, C, H, W]. */
export function avgPool2d(x: Tensor, { countIncludePad = true, ...opts }: AvgPool2dOptions): Tensor {
  return pool('avgPool2d', x, slidingSpec('avgPool2d', x, 'avg', opts, countIncludePad));
}

/**
 * Average pooling of x [N, C, H, W] to outputSize [Ho, Wo] (or Ho = Wo) with PyTorch's windows
 * [⌊o·in/out⌋, ⌈(o + 1)·in/out⌉), which may overlap.
 */
export function adaptiveAvgPool2d(x: Tensor, outputSize: Pair): Tensor {
  const op = 'adaptiveAvgPool2d';
  checkInput(op, x);
  const [Ho, Wo] = pair(op, 'outputSize', outputSize, 1);
  return pool(op, x, { kind: 'avg', h: adaptiveWindows(x.shape[2]!, Ho), w: adaptiveWindows(x.shape[3]!, Wo), countIncludePad: true });
}
