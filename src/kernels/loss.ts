// Losses, with PyTorch's semantics. Cross entropy is the negative log-likelihood of log_softmax over the class
// dim (softmax.ts's row kernel serves any class count, and its backward chains); the NLL and binary cross
// entropy are `map` kernels with their backward formulas next to them; MSE and L1 compose existing ops.

import { record } from '../engine/autograd.ts';
import { expectBroadcastsTo, expectDType, f32 } from '../engine/kernel.ts';
import { type Shape, Tensor, numel, shapeStr, tidy } from '../engine/tensor.ts';
import { abs, map, pow, sub } from './elementwise.ts';
import { mean, sum } from './reduce.ts';
import { reshape } from './shape.ts';
import { logSoftmax } from './softmax.ts';

export type Reduction = 'mean' | 'sum' | 'none';

function applyReduction(loss: Tensor, reduction: Reduction): Tensor {
  if (reduction === 'none') return loss;
  if (reduction === 'sum') return sum(loss);
  if (reduction === 'mean') return mean(loss);
  throw new Error(`unknown reduction '${reduction}' (expected 'mean', 'sum' or 'none')`);
}

/** record() saves a list; optional tensors are saved by name so the backward finds them under the same names. */
function savedByName(named: Record<string, Tensor | undefined>): { names: string[]; tensors: Tensor[] } {
  const present = Object.entries(named).filter((e): e is [string, Tensor] => e[1] !== undefined);
  return { names: present.map(([n]) => n), tensors: present.map(([, t]) => t) };
}

function byName(names: string[], saved: Tensor[]): Record<string, Tensor> {
  return Object.fromEntries(names.map((n, k) => [n, saved[k]!]));
}

export interface NllOptions {
  /** Per-class weights [C]. */
  weight?: Tensor;
  /** Targets equal to this contribute nothing (and do not count in the mean). */
  ignoreIndex?: number;
  reduction?: Reduction;
}

export interface CrossEntropyOptions extends NllOptions {
  /** ε: the target distribution is (1 − ε)·one-hot + ε/C. */
  labelSmoothing?: number;
}

/**
 * Negative log-likelihood of log-probabilities [N, C, d…] (or [C]) at i32 class targets [N, d…] (or []),
 * torch.nn.functional.nll_loss. 'mean' divides by the summed weights of the non-ignored targets.
 */
export function nllLoss(logProbs: Tensor, target: Tensor, opts: NllOptions = {}): Tensor {
  return tidy(() => nll('nll_loss', logProbs, target, opts));
}

/**
 * Cross entropy of unnormalised logits [N, C, d…] (class dim 1, or [C]) against i32 class indices [N, d…]
 * (or []), torch.nn.functional.cross_entropy: log_softmax, then the (optionally label-smoothed) NLL.
 */
export function crossEntropy(logits: Tensor, target: Tensor, opts: CrossEntropyOptions = {}): Tensor {
  expectDType('cross_entropy', logits, 'f32');
  return tidy(() => nll('cross_entropy', logSoftmax(logits, logits.rank === 1 ? 0 : 1), target, opts));
}

/**
 * Per position p (class c at (p / S)·C·S + c·S + p % S of the log-probabilities), with smoothing ε:
 * loss = −(1 − ε)·w[t]·lp[t] − (ε/C)·Σ_c w[c]·lp[c], and 0 where t is the ignore index.
 */
function nll(op: string, logProbs: Tensor, target: Tensor, { weight, ignoreIndex = -100, reduction = 'mean', labelSmoothing = 0 }: CrossEntropyOptions): Tensor {
  expectDType(op, logProbs, 'f32');
  expectDType(op, target, 'i32');
  const lpShape: Shape = logProbs.rank === 1 ? [1, ...logProbs.shape] : logProbs.shape;
  const targetShape = logProbs.rank === 1 ? [] : [lpShape[0]!, ...lpShape.slice(2)];
  if (logProbs.rank === 0 || shapeStr(target.shape) !== shapeStr(targetShape)) {
    throw new Error(`${op}: input ${shapeStr(logProbs.shape)} needs a target of shape ${shapeStr(targetShape)}, got ${shapeStr(target.shape)}`);
  }
  const C = lpShape[1]!;
  const S = numel(lpShape.slice(2));
  if (weight) {
    expectDType(op, weight, 'f32');
    if (shapeStr(weight.shape) !== shapeStr([C])) throw new Error(`${op}: weight has shape ${shapeStr(weight.shape)}, expected [${C}] (one per class)`);
  }
  if (!(labelSmoothing >= 0 && labelSmoothing <= 1)) throw new Error(`${op}: labelSmoothing must be in [0, 1], got ${labelSmoothing}`);
  const eps = labelSmoothing;
  const classWeight = (c: string) => (weight ? `in_w[${c}]` : '1.0');
  const ignored = `t == ${ignoreIndex}i`;
  // out-of-range targets (an error in PyTorch) read a clamped class instead of out of bounds
  const cls = `u32(clamp(t, 0i, ${C - 1}i))`;
  const logProbAt = (c: string) => `in_lp[(i / ${S}u) * ${C * S}u + ${c} * ${S}u + i % ${S}u]`;
  const helpers = `fn smoothed(i: u32) -> f32 {
  var s = 0.0;
  for (var c = 0u; c < ${C}u; c++) { s += ${classWeight('c')} * ${logProbAt('c')}; }
  return s;
}`;
  const positions = { t: reshape(target, [target.size]), lp: { tensor: logProbs, raw: true }, ...(weight && { w: { tensor: weight, raw: true } }) };
  const smoothing = eps > 0 ? ` + ${f32(eps / C)} * smoothed(i)` : '';
  const shape = [target.size];
  const perPosition = map(`${op}.forward`, `select(-(${f32(1 - eps)} * ${classWeight(cls)} * ${logProbAt(cls)}${smoothing}), 0.0, ${ignored})`, positions, { shape, helpers });
  let out: Tensor;
  let denominator: Tensor | undefined;
  if (reduction === 'mean') {
    const weights = map(`${op}.weights`, `select(${classWeight(cls)}, 0.0, ${ignored})`, { t: positions.t, ...(weight && { w: positions.w }) }, { shape });
    denominator = sum(weights);
    out = map(`${op}.mean`, 'a / b', { a: sum(perPosition), b: denominator });
  } else {
    out = applyReduction(reshape(perPosition, target.shape), reduction);
  }
  // d loss / d lp[c] = −scale·w[c]·((1 − ε)·[c = t] + ε/C), 0 where ignored; scale is g (per position for 'none')
  const saved = savedByName({ t: target, w: weight, d: denominator });
  return record(op, out, [logProbs], (g, s) => {
    const { t, w, d } = byName(saved.names, s);
    const scale = d ? map(`${op}.scale`, 'g / d', { g, d }) : g;
    const at = reduction === 'none' ? `(i / ${C * S}u) * ${S}u + i % ${S}u` : '0u';
    const grad = `fn nll_grad(i: u32) -> f32 {
  let t = in_t[(i / ${C * S}u) * ${S}u + i % ${S}u];
  if (${ignored}) { return 0.0; }
  let c = (i / ${S}u) % ${C}u;
  return -in_s[${at}] * ${classWeight('c')} * (select(0.0, ${f32(1 - eps)}, c == ${cls}) + ${f32(eps / C)});
}`;
    return [map(`${op}.backward`, 'nll_grad(i)', {
      t: { tensor: t!, raw: true }, s: { tensor: scale, raw: true }, ...(w && { w: { tensor: w, raw: true } }),
    }, { shape: logProbs.shape, helpers: grad })];
  }, saved.tensors);
}

export interface BceOptions {
  /** Rescales each element's loss; broadcasts to the logits. */
  weight?: Tensor;
  /** Weight of the positive term, broadcast to the logits (typically one per class, on the last dim). */
  posWeight?: Tensor;
  reduction?: Reduction;
}

const softplusHelpers = `
// log(1 + u) accurate for small u (WGSL has no log1p): u·log(v)/(v − 1) with v = 1 + u as rounded.
fn log1p_(u: f32) -> f32 {
  let v = 1.0 + u;
  return select(u * log(v) / (v - 1.0), u, v == 1.0);
}
// log(1 + exp(-x)) without overflow
fn softplus_neg(x: f32) -> f32 { return max(-x, 0.0) + log1p_(exp(-abs(x))); }`;

/**
 * Binary cross entropy of sigmoid(logits) against targets in [0, 1] of the same shape,
 * torch.nn.functional.binary_cross_entropy_with_logits, computed stably as
 * w·((1 − t)·x + (1 + (pos_weight − 1)·t)·log(1 + exp(−x))). Gradients for logits and target.
 */
export function binaryCrossEntropyWithLogits(logits: Tensor, target: Tensor, { weight, posWeight, reduction = 'mean' }: BceOptions = {}): Tensor {
  const op = 'binary_cross_entropy_with_logits';
  expectDType(op, logits, 'f32');
  expectDType(op, target, 'f32');
  if (shapeStr(target.shape) !== shapeStr(logits.shape)) {
    throw new Error(`${op}: target ${shapeStr(target.shape)} must have the shape of the logits ${shapeStr(logits.shape)}`);
  }
  for (const [what, t] of [['weight', weight], ['pos_weight', posWeight]] as const) {
    if (t) {
      expectDType(op, t, 'f32');
      expectBroadcastsTo(op, what, t, logits.shape);
    }
  }
  const scaled = (e: string) => (weight ? `w * (${e})` : `(${e})`);
  const logWeight = posWeight ? '(1.0 + (pw - 1.0) * t)' : '1.0';
  const saved = savedByName({ x: logits, t: target, w: weight, pw: posWeight });
  const opts = { shape: logits.shape, helpers: softplusHelpers };
  return tidy(() => {
    const loss = map(op, scaled(`(1.0 - t) * x + ${logWeight} * softplus_neg(x)`), byName(saved.names, saved.tensors), opts);
    // d/dx = w·((1 − t) − lw·sigmoid(−x)); d/dt = w·(−x + (pos_weight − 1)·log(1 + exp(−x)))
    const elementwise = record(op, loss, [logits, target], (g, s) => {
      const ins = { ...byName(saved.names, s), g };
      return [
        logits.requiresGrad ? map(`${op}.backward`, `g * ${scaled(`(1.0 - t) - ${logWeight} / (1.0 + exp(x))`)}`, ins, opts) : null,
        target.requiresGrad ? map(`${op}.target_backward`, `g * ${scaled(posWeight ? '-x + (pw - 1.0) * softplus_neg(x)' : '-x')}`, ins, opts) : null,
      ];
    }, saved.tensors);
    return applyReduction(elementwise, reduction);
  });
}

/** Mean squared error (input − target)², torch.nn.functional.mse_loss (broadcasting). */
export function mseLoss(input: Tensor, target: Tensor, { reduction = 'mean' }: { reduction?: Reduction } = {}): Tensor {
  return tidy(() => applyReduction(pow(sub(input, target), 2), reduction));
}

/** Mean absolute error |input − target|, torch.nn.functional.l1_loss (broadcasting). */
export function l1Loss(input: Tensor, target: Tensor, { reduction = 'mean' }: { reduction?: Reduction } = {}): Tensor {
  return tidy(() => applyReduction(abs(sub(input, target)), reduction));
}
