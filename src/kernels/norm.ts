// Normalisation layers: group norm, layer norm and batch norm (training) share one pair of row kernels,
// forward and backward of x; eval-mode batch norm, with constant statistics, is a `map`. Each views x as
// [A, R, B] and normalises every r over its A·B elements (layer and group norm: A = 1, contiguous rows;
// batch norm: A = N, R = channels, B = spatial), and views x as [outer, C, inner] for the affine weight and
// bias (indexed by C). One workgroup per row: threads stride over the row and combine their partial sums
// with a tree in workgroup memory, so a group of 10^5+ elements (SD's group norm) is still one dispatch.
// (A workgroup no larger than a subgroup sums with subgroupAdd instead, where the device has subgroups.)
// Forward: mean, then the centred second moment (two passes, stable), then the output in a third pass.
// Backward of x in one kernel: dx = rstd·(ĝ − mean(ĝ) − x̂·mean(ĝ·x̂)) with ĝ = g·weight.

import { isGradEnabled, record } from '../engine/autograd.ts';
import { subgroupMinSize } from '../engine/device.ts';
import { expectFloat, f32, grid1d, launch } from '../engine/kernel.ts';
import { type Shape, Tensor, numel, shapeStr, tidy } from '../engine/tensor.ts';
import { type UnaryDef, type UnaryOp, map, unary, unaryOps } from './elementwise.ts';
import { sum } from './reduce.ts';
import { reshape } from './shape.ts';

interface NormView {
  op: string;
  /** x as [A, R, B]: statistics for each r over its A·B elements. */
  A: number;
  R: number;
  B: number;
  /** x as [outer, C, inner]: weight and bias index the middle axis. */
  outer: number;
  C: number;
  inner: number;
  eps: number;
}

/** WGSL: flat offset of element `j` (0 ≤ j < A·B) of row `r`. */
function rowElement(v: NormView): string {
  return v.A === 1 ? `r * ${v.B}u + j` : `(j / ${v.B}u) * ${v.R * v.B}u + r * ${v.B}u + j % ${v.B}u`;
}

/** WGSL: the row (statistics index) of flat offset `o`. */
function rowOf(v: NormView, o: string): string {
  return v.A === 1 ? `${o} / ${v.B}u` : `(${o} / ${v.B}u) % ${v.R}u`;
}

/** WGSL: the affine channel of flat offset `o`. */
function channelOf(v: NormView, o: string): string {
  return `(${o} / ${v.inner}u) % ${v.C}u`;
}

/** WGSL: `xhat` scaled by in_w and shifted by in_b at channel `ch`, for whichever of them exist. */
function affine(xhat: string, ch: string, hasWeight: boolean, hasBias: boolean): string {
  return `${xhat}${hasWeight ? ` * f32(in_w[${ch}])` : ''}${hasBias ? ` + f32(in_b[${ch}])` : ''}`;
}

/**
 * Workgroup size for rows of n elements: about 64 elements per thread, a power of two in [8, 256]. Barriers
 * are costly on lavapipe: 8 threads on layer_norm's 320-element rows ran 13× faster than 256.
 */
function groupSizeFor(n: number): number {
  return Math.min(256, Math.max(8, 2 ** Math.ceil(Math.log2(Math.ceil(n / 64)))));
}

/**
 * WGSL prelude of a row kernel over R rows with wg threads each: defines `r` (uniform per workgroup) and
 * `t`, and `workgroupSum(t, v)`, which every thread must call (uniform control flow) and which returns the
 * vec2 total over the workgroup.
 */
function rowKernelPrelude(R: number, wg: number): { workgroups: [number, number]; head: string; subgroups: boolean } {
  const gx = Math.min(R, 65535);
  // a workgroup no larger than a subgroup sums with one subgroup op: no workgroup memory, no barriers
  const subgroups = wg <= subgroupMinSize();
  return {
    workgroups: [gx, Math.ceil(R / gx)],
    subgroups,
    head: `${subgroups ? `fn workgroupSum(t: u32, v: vec2f) -> vec2f { return subgroupAdd(v); }` : `var<workgroup> partial: array<vec2f, ${wg}>;
fn workgroupSum(t: u32, v: vec2f) -> vec2f {
  partial[t] = v;
  workgroupBarrier();
  for (var s = ${wg / 2}u; s > 0u; s >>= 1u) {
    if (t < s) { partial[t] += partial[t + s]; }
    workgroupBarrier();
  }
  let total = partial[0];
  workgroupBarrier();
  return total;
}`}
@compute @workgroup_size(${wg})
fn main(@builtin(workgroup_id) wid: vec3u, @builtin(local_invocation_index) t: u32) {
  let r = wid.x + wid.y * ${gx}u;
  if (r >= ${R}u) { return; }`,
  };
}

function viewKey(v: NormView): string {
  return `${v.A},${v.R},${v.B}|${v.outer},${v.C},${v.inner}|${v.eps}`;
}

/**
 * Normalises every row of the view, then applies `activation` if given; also returns the row statistics
 * (mean, 1/std) for the backward.
 */
function normForward(x: Tensor, v: NormView, weight?: Tensor, bias?: Tensor, activation?: UnaryOp): { y: Tensor; mean: Tensor; rstd: Tensor } {
  const act: UnaryDef | undefined = activation ? unaryOps[activation] : undefined;
  const y = Tensor.empty(x.shape, x.dtype);
  const mean = Tensor.empty([v.R]);
  const rstd = Tensor.empty([v.R]);
  const n = v.A * v.B;
  const wg = groupSizeFor(n);
  const k = rowKernelPrelude(v.R, wg);
  const overRow = (body: string) => `for (var j = t; j < ${n}u; j += ${wg}u) {
    let o = ${rowElement(v)};
    ${body}
  }`;
  launch({
    name: `${v.op}.forward`,
    key: `${viewKey(v)}|${!!weight}${!!bias}|${activation ?? ''}`,
    inputs: { in_x: x, ...(weight && { in_w: weight }), ...(bias && { in_b: bias }) },
    outputs: { y, mean, rstd },
    workgroups: k.workgroups,
    subgroups: k.subgroups,
    wgsl: (bindings) => `${bindings}
${act ? `${act.helpers ?? ''}
fn act(x: f32) -> f32 { return ${act.forward}; }` : ''}
${k.head}
  var total = 0.0;
  ${overRow('total += f32(in_x[o]);')}
  let mu = workgroupSum(t, vec2f(total, 0.0)).x / ${f32(n)};
  // Σ(x − mu) corrects mu's rounding error; Σ(x − mu)² gives the variance without cancellation
  var centred = vec2f(0.0);
  ${overRow('let d = f32(in_x[o]) - mu; centred += vec2f(d, d * d);')}
  let moments = workgroupSum(t, centred) / ${f32(n)};
  let m = mu + moments.x;
  let rs = inverseSqrt(max(moments.y - moments.x * moments.x, 0.0) + ${f32(v.eps)});
  ${overRow(`let ch = ${channelOf(v, 'o')};
    let yo = ${affine('(f32(in_x[o]) - m) * rs', 'ch', !!weight, !!bias)};
    y[o] = y_t(${act ? 'act(yo)' : 'yo'});`)}
  if (t == 0u) {
    mean[r] = m;
    rstd[r] = rs;
  }
}`,
  });
  return { y, mean, rstd };
}

/** dx for statistics computed from x: rstd·(ĝ − mean(ĝ) − x̂·mean(ĝ·x̂)) per row, ĝ = g·weight. */
function normBackward(g: Tensor, x: Tensor, mean: Tensor, rstd: Tensor, v: NormView, weight?: Tensor): Tensor {
  const dx = Tensor.empty(x.shape, x.dtype);
  const n = v.A * v.B;
  const wg = groupSizeFor(n);
  const k = rowKernelPrelude(v.R, wg);
  const overRow = (body: string) => `for (var j = t; j < ${n}u; j += ${wg}u) {
    let o = ${rowElement(v)};
    let xhat = (f32(in_x[o]) - m) * rs;
    let ghat = ${affine('f32(in_g[o])', channelOf(v, 'o'), !!weight, false)};
    ${body}
  }`;
  launch({
    name: `${v.op}.backward`,
    key: `${viewKey(v)}|${!!weight}`,
    inputs: { in_g: g, in_x: x, in_mean: mean, in_rstd: rstd, ...(weight && { in_w: weight }) },
    outputs: { dx },
    workgroups: k.workgroups,
    subgroups: k.subgroups,
    wgsl: (bindings) => `${bindings}
${k.head}
  let m = in_mean[r];
  let rs = in_rstd[r];
  var acc = vec2f(0.0);
  ${overRow('acc += vec2f(ghat, ghat * xhat);')}
  let means = workgroupSum(t, acc) / ${f32(n)};
  ${overRow('dx[o] = dx_t(rs * (ghat - means.x - xhat * means.y));')}
}`,
  });
  return dx;
}

/** Gradients of weight (Σ g·x̂) and bias (Σ g) over everything but the channel axis, where wanted. */
function affineGrads(g: Tensor, x: Tensor, mean: Tensor, rstd: Tensor, v: NormView, weight?: Tensor, bias?: Tensor): [Tensor | null, Tensor | null] {
  const perChannel = (t: Tensor, shape: Shape) => reshape(sum(reshape(t, [v.outer, v.C, v.inner]), [0, 2]), shape);
  const row = rowOf(v, 'i');
  const dw = weight?.requiresGrad
    ? perChannel(map(`${v.op}.weight_grad`, `g * (x - in_m[${row}]) * in_r[${row}]`, { g, x, m: { tensor: mean, raw: true }, r: { tensor: rstd, raw: true } }, { shape: x.shape }), weight.shape)
    : null;
  const db = bias?.requiresGrad ? perChannel(g, bias.shape) : null;
  return [dw, db];
}

/** Runs the shared kernels for a view whose statistics come from x itself, with autograd; `useStats` sees them. */
function normalize(
  x: Tensor, v: NormView, weight?: Tensor, bias?: Tensor, useStats?: (mean: Tensor, rstd: Tensor) => void, activation?: UnaryOp,
): Tensor {
  if (activation && isGradEnabled() && [x, weight, bias].some((t) => t?.requiresGrad)) {
    // the activation's backward needs the normalised values: record the two ops separately
    return tidy(() => unary(activation, normalize(x, v, weight, bias, useStats)));
  }
  const { y, mean, rstd } = normForward(x, v, weight, bias, activation);
  const out = record(v.op, y, [x, weight, bias], (g, [xs, m, r, w]) => [
    x.requiresGrad ? normBackward(g, xs!, m!, r!, v, w) : null,
    ...affineGrads(g, xs!, m!, r!, v, weight, bias),
  ], [x, mean, rstd, ...(weight ? [weight] : [])]);
  useStats?.(mean, rstd);
  mean.dispose();
  rstd.dispose();
  return out;
}

function checkParam(op: string, what: string, t: Tensor | undefined, shape: Shape): void {
  if (!t) return;
  expectFloat(op, t);
  if (shapeStr(t.shape) !== shapeStr(shape)) throw new Error(`${op}: ${what} has shape ${shapeStr(t.shape)}, expected ${shapeStr(shape)}`);
}

/** x as [N, C, spatial…] with its channel count and spatial size, or an error naming `op`. */
function channelsOf(op: string, x: Tensor): { N: number; C: number; S: number } {
  expectFloat(op, x);
  if (x.rank < 2) throw new Error(`${op}: expected input of shape [N, C, …], got ${shapeStr(x.shape)}`);
  return { N: x.shape[0]!, C: x.shape[1]!, S: numel(x.shape.slice(2)) };
}

/**
 * Group normalisation of x [N, C, …] (torch.nn.functional.group_norm): statistics over each group of
 * C / numGroups channels and all spatial positions, then per-channel weight and bias of shape [C], then
 * `activation` if given (fused into the kernel when no gradient is recorded).
 */
export function groupNorm(x: Tensor, numGroups: number, weight?: Tensor, bias?: Tensor, eps = 1e-5, activation?: UnaryOp): Tensor {
  const op = 'group_norm';
  const { N, C, S } = channelsOf(op, x);
  if (!Number.isInteger(numGroups) || numGroups < 1 || C % numGroups !== 0) {
    throw new Error(`${op}: ${C} channels (input ${shapeStr(x.shape)}) do not split into ${numGroups} groups`);
  }
  checkParam(op, 'weight', weight, [C]);
  checkParam(op, 'bias', bias, [C]);
  return normalize(x, { op, A: 1, R: N * numGroups, B: (C / numGroups) * S, outer: N, C, inner: S, eps }, weight, bias, undefined, activation);
}

/**
 * Layer normalisation over the trailing dims `normalizedShape` (torch.nn.functional.layer_norm); weight and
 * bias, when given, have shape `normalizedShape`.
 */
export function layerNorm(x: Tensor, normalizedShape: readonly number[], weight?: Tensor, bias?: Tensor, eps = 1e-5): Tensor {
  const op = 'layer_norm';
  expectFloat(op, x);
  const lead = x.rank - normalizedShape.length;
  if (normalizedShape.length === 0 || lead < 0 || normalizedShape.some((d, k) => d !== x.shape[lead + k])) {
    throw new Error(`${op}: normalized shape ${shapeStr(normalizedShape)} is not the trailing dims of input ${shapeStr(x.shape)}`);
  }
  checkParam(op, 'weight', weight, normalizedShape);
  checkParam(op, 'bias', bias, normalizedShape);
  const K = numel(normalizedShape);
  const R = x.size / K;
  return normalize(x, { op, A: 1, R, B: K, outer: R, C: K, inner: 1, eps }, weight, bias);
}

export interface BatchNormOptions {
  eps?: number;
  /** Normalise with the batch statistics and update the running ones (true), or use the running ones (false). */
  training?: boolean;
  /** Weight of the new batch statistics in the running average (PyTorch's default 0.1). */
  momentum?: number;
}

/**
 * Batch normalisation of x [N, C, …] (torch.nn.functional.batch_norm). Eval mode normalises with
 * runningMean / runningVar [C] (no gradients for them). Training mode uses the batch statistics over N and
 * the spatial dims, and, when the running tensors are given, updates them in place:
 * running = (1 − momentum)·running + momentum·batch, with the unbiased batch variance.
 */
export function batchNorm(
  x: Tensor, runningMean: Tensor | undefined, runningVar: Tensor | undefined, weight?: Tensor, bias?: Tensor,
  { eps = 1e-5, training = false, momentum = 0.1 }: BatchNormOptions = {},
): Tensor {
  const op = 'batch_norm';
  const { N, C, S } = channelsOf(op, x);
  for (const [what, t] of [['running_mean', runningMean], ['running_var', runningVar], ['weight', weight], ['bias', bias]] as const) {
    checkParam(op, what, t, [C]);
  }
  const v: NormView = { op, A: N, R: C, B: S, outer: N, C, inner: S, eps };
  if (training) {
    if (N * S < 2) throw new Error(`${op}: training needs more than one value per channel, got input ${shapeStr(x.shape)}`);
    return normalize(x, v, weight, bias, (mean, rstd) => {
      if (runningMean && runningVar) updateRunning(runningMean, runningVar, mean, rstd, momentum, eps, N * S);
    });
  }
  if (!runningMean || !runningVar) throw new Error(`${op}: eval mode (training: false) needs running_mean and running_var`);
  const rstd = map(`${op}.rstd`, `inverseSqrt(v + ${f32(eps)})`, { v: runningVar });
  const raw = (t: Tensor) => ({ tensor: t, raw: true });
  const row = rowOf(v, 'i');
  const y = map(op, affine(`(x - in_m[${row}]) * in_r[${row}]`, row, !!weight, !!bias), {
    x, m: raw(runningMean), r: raw(rstd), ...(weight && { w: raw(weight) }), ...(bias && { b: raw(bias) }),
  }, { shape: x.shape });
  // with constant statistics, dx is just the affine scale
  const out = record(op, y, [x, weight, bias], (g, [xs, m, r, w]) => [
    x.requiresGrad ? map(`${op}.backward`, affine(`g * in_r[${row}]`, row, !!w, false), { g, r: raw(r!), ...(w && { w: raw(w) }) }, { shape: x.shape }) : null,
    ...affineGrads(g, xs!, m!, r!, v, weight, bias),
  ], [x, runningMean, rstd, ...(weight ? [weight] : [])]);
  rstd.dispose();
  return out;
}

/** In place: running ← (1 − momentum)·running + momentum·batch statistic (unbiased variance over n values). */
function updateRunning(runningMean: Tensor, runningVar: Tensor, mean: Tensor, rstd: Tensor, momentum: number, eps: number, n: number): void {
  const g = grid1d(mean.size);
  launch({
    name: 'batch_norm.update_running',
    key: `${mean.size}|${momentum}|${eps}|${n}`,
    inputs: { mean, rstd },
    outputs: { running_mean: runningMean, running_var: runningVar },
    workgroups: g.workgroups,
    wgsl: (bindings) => `${bindings}
${g.main}
  let variance = 1.0 / (rstd[i] * rstd[i]) - ${f32(eps)};
  running_mean[i] = ${f32(1 - momentum)} * running_mean[i] + ${f32(momentum)} * mean[i];
  running_var[i] = ${f32(1 - momentum)} * running_var[i] + ${f32(momentum * n / (n - 1))} * variance;
}`,
  });
}
