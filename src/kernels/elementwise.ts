// Elementwise ops. One kernel template, `map`, evaluates a WGSL expression over broadcast inputs; every
// unary and binary op below is a table entry: its forward expression next to its backward expression.
// Backward expressions see `x` (input), `y` (output), `g` (upstream gradient) and the op's parameters.

import { record } from '../engine/autograd.ts';
import {
  asF32, broadcastShapes, broadcastStrides, expectDType, f32, grid1d, launch, offsetExpr, unravel,
} from '../engine/kernel.ts';
import { type DType, type Shape, Tensor, numel, shapeStr, tidy } from '../engine/tensor.ts';
import { sumTo } from './reduce.ts';

// ---------------------------------------------------------------- the map kernel

/** An input read at `offset + Σ coord[k] * strides[k]` over the output's coordinates (views without copies). */
export interface StridedRead {
  tensor: Tensor;
  strides?: readonly number[];
  offset?: number;
  /** Bind only (as `in_<name>`): the expression indexes it itself. */
  raw?: boolean;
}

export interface MapOptions {
  /** Output shape; defaults to the broadcast of the inputs. */
  shape?: Shape;
  /** Output dtype (default f32); the expression's value is converted to it. */
  dtype?: DType;
  /** WGSL functions the expression calls. */
  helpers?: string;
}

/**
 * Evaluates `expr` (WGSL, over variables named like the keys of `inputs`, plus `i` the flat output index)
 * for every output element, with NumPy broadcasting of the inputs. f16 inputs are read as f32; `raw`
 * inputs are indexed by the expression itself (wrap an f16 one's read in `f32()`).
 */
export function map(name: string, expr: string, inputs: Record<string, Tensor | StridedRead>, opts: MapOptions = {}): Tensor {
  const views = Object.entries(inputs).map(([v, t]): [string, StridedRead] => [v, t instanceof Tensor ? { tensor: t } : t]);
  for (const [, r] of views) expectDType(name, r.tensor, 'f32', 'f16', 'i32', 'u32');
  const outShape = opts.shape ?? views.map(([, r]) => r.tensor.shape).reduce<Shape>((a, b) => broadcastShapes(name, a, b), []);
  const out = Tensor.empty(outShape, opts.dtype ?? 'f32');
  const n = numel(outShape);
  if (n === 0) return out;
  const g = grid1d(n);
  const sameShape = (s: Shape) => s.length === outShape.length && s.every((d, k) => d === outShape[k]);
  const address = (r: StridedRead) => {
    if (!r.strides && !r.offset && sameShape(r.tensor.shape)) return 'i';
    const off = offsetExpr(r.strides ?? broadcastStrides(r.tensor.shape, outShape));
    return r.offset ? `${r.offset}u + ${off}` : off;
  };
  const addresses = views.map(([, r]) => (r.raw ? 'raw' : address(r)));
  const loads = views.flatMap(([v, r], k) => (addresses[k] === 'raw' ? [] : [`let ${v} = ${asF32(r.tensor, `in_${v}[${addresses[k]}]`)};`]));
  launch({
    name,
    key: `${expr}|${opts.helpers ?? ''}|${shapeStr(outShape)}|${addresses.join(';')}`,
    inputs: Object.fromEntries(views.map(([v, r]) => [`in_${v}`, r.tensor])),
    outputs: { out },
    workgroups: g.workgroups,
    wgsl: (bindings) => `${bindings}
${opts.helpers ?? ''}
${g.main}
  ${addresses.some((a) => a !== 'i' && a !== 'raw') ? unravel(outShape, 'i') : ''}
  ${loads.join('\n  ')}
  out[i] = out_t(${expr});
}`,
  });
  return out;
}

// ---------------------------------------------------------------- unary table

const erf = `
// Abramowitz & Stegun 7.1.26 (|error| < 1.5e-7), odd extension.
fn erf_(x: f32) -> f32 {
  let a = abs(x);
  let t = 1.0 / (1.0 + 0.3275911 * a);
  let p = t * (0.254829592 + t * (-0.284496736 + t * (1.421413741 + t * (-1.453152027 + t * 1.061405429))));
  return sign(x) * (1.0 - p * exp(-a * a));
}`;
// tanh through exp overflows to inf/inf past |x| ~ 44 on some drivers; it is ±1 in f32 well before 15.
const safeTanh = `fn tanh_(x: f32) -> f32 { return tanh(clamp(x, -15.0, 15.0)); }`;
const sigmoidFn = `fn sigmoid_(x: f32) -> f32 { return 1.0 / (1.0 + exp(-x)); }`;

export interface UnaryDef {
  forward: string;
  backward: string;
  helpers?: string;
}

const sqrt2overPi = Math.sqrt(2 / Math.PI);

export const unaryOps = {
  neg: { forward: '-x', backward: '-g' },
  exp: { forward: 'exp(x)', backward: 'g * y' },
  log: { forward: 'log(x)', backward: 'g / x' },
  sqrt: { forward: 'sqrt(x)', backward: 'g * 0.5 / y' },
  rsqrt: { forward: 'inverseSqrt(x)', backward: '-0.5 * g * y * y * y' },
  abs: { forward: 'abs(x)', backward: 'g * sign(x)' },
  relu: { forward: 'max(x, 0.0)', backward: 'select(0.0, g, x > 0.0)' },
  sigmoid: { forward: 'sigmoid_(x)', backward: 'g * y * (1.0 - y)', helpers: sigmoidFn },
  tanh: { forward: 'tanh_(x)', backward: 'g * (1.0 - y * y)', helpers: safeTanh },
  silu: { forward: 'x * sigmoid_(x)', backward: 'g * sigmoid_(x) * (1.0 + x * (1.0 - sigmoid_(x)))', helpers: sigmoidFn },
  gelu_erf: {
    forward: '0.5 * x * (1.0 + erf_(x * 0.7071067811865476))',
    backward: `g * (0.5 * (1.0 + erf_(x * 0.7071067811865476)) + x * exp(-0.5 * x * x) * 0.3989422804014327)`,
    helpers: erf,
  },
  gelu_tanh: {
    forward: `0.5 * x * (1.0 + tanh_(${sqrt2overPi} * (x + 0.044715 * x * x * x)))`,
    backward: `g * gelu_tanh_grad(x)`,
    helpers: `${safeTanh}
fn gelu_tanh_grad(x: f32) -> f32 {
  let t = tanh_(${sqrt2overPi} * (x + 0.044715 * x * x * x));
  return 0.5 * (1.0 + t) + 0.5 * x * (1.0 - t * t) * ${sqrt2overPi} * (1.0 + 3.0 * 0.044715 * x * x);
}`,
  },
  quick_gelu: {
    forward: 'x * sigmoid_(1.702 * x)',
    backward: 'g * (sigmoid_(1.702 * x) + 1.702 * x * sigmoid_(1.702 * x) * (1.0 - sigmoid_(1.702 * x)))',
    helpers: sigmoidFn,
  },
  elu: { forward: 'select(exp(x) - 1.0, x, x > 0.0)', backward: 'select(g * (y + 1.0), g, x > 0.0)' },
} satisfies Record<string, UnaryDef>;

export type UnaryOp = keyof typeof unaryOps;

function unaryWith(op: string, def: UnaryDef, x: Tensor): Tensor {
  expectDType(op, x, 'f32');
  const y = map(op, def.forward, { x }, { helpers: def.helpers });
  return record(op, y, [x], (g, [xs, ys]) => [map(`${op}.backward`, def.backward, { x: xs!, y: ys!, g }, { helpers: def.helpers })], [x, y]);
}

export function unary(op: UnaryOp, x: Tensor): Tensor {
  return unaryWith(op, unaryOps[op], x);
}

export const neg = (x: Tensor) => unary('neg', x);
export const exp = (x: Tensor) => unary('exp', x);
export const log = (x: Tensor) => unary('log', x);
export const sqrt = (x: Tensor) => unary('sqrt', x);
export const rsqrt = (x: Tensor) => unary('rsqrt', x);
export const abs = (x: Tensor) => unary('abs', x);
export const relu = (x: Tensor) => unary('relu', x);
export const sigmoid = (x: Tensor) => unary('sigmoid', x);
export const tanh = (x: Tensor) => unary('tanh', x);
export const silu = (x: Tensor) => unary('silu', x);
export const gelu = (x: Tensor, approximate: 'none' | 'tanh' = 'none') => unary(approximate === 'tanh' ? 'gelu_tanh' : 'gelu_erf', x);
export const quickGelu = (x: Tensor) => unary('quick_gelu', x);
export const elu = (x: Tensor) => unary('elu', x);
/** LeakyReLU with a slope below 1 on negatives: max(x, slope·x) (gradient 1 or slope, as PyTorch's). */
export function leakyRelu(x: Tensor, negativeSlope = 0.01): Tensor {
  if (!(negativeSlope >= 0 && negativeSlope < 1)) throw new Error(`leakyRelu: negative slope must be in [0, 1), got ${negativeSlope}`);
  return tidy(() => maximum(x, mul(x, negativeSlope)));
}

/** x ** exponent for a constant exponent (integer exponents are exact for negative x, as in PyTorch). */
export function pow(x: Tensor, exponent: number): Tensor {
  const p = f32(exponent);
  const isInt = Number.isInteger(exponent);
  const odd = isInt && Math.abs(exponent) % 2 === 1;
  const forward = isInt ? `select(pow(abs(x), ${p}), ${odd ? '-' : ''}pow(abs(x), ${p}), x < 0.0)` : `pow(x, ${p})`;
  const pm1 = f32(exponent - 1);
  const oddM1 = isInt && Math.abs(exponent - 1) % 2 === 1;
  const dpow = isInt ? `select(pow(abs(x), ${pm1}), ${oddM1 ? '-' : ''}pow(abs(x), ${pm1}), x < 0.0)` : `pow(x, ${pm1})`;
  return unaryWith(`pow`, { forward, backward: exponent === 0 ? '0.0' : `g * ${p} * ${dpow}` }, x);
}

/** Clamps to [min, max]; the gradient passes where min <= x <= max (PyTorch's convention). */
export function clamp(x: Tensor, min = -Infinity, max = Infinity): Tensor {
  return unaryWith('clamp', { forward: `clamp(x, ${f32(min)}, ${f32(max)})`, backward: `select(0.0, g, x >= ${f32(min)} && x <= ${f32(max)})` }, x);
}

/** x * s + t for constants s, t. */
export function affine(x: Tensor, s: number, t = 0): Tensor {
  return unaryWith('affine', { forward: `x * ${f32(s)} + ${f32(t)}`, backward: `g * ${f32(s)}` }, x);
}

// ---------------------------------------------------------------- binary ops with broadcasting

interface BinaryDef {
  forward: string;
  /** Gradients w.r.t. a and b, before summing over broadcast dimensions; 'g' alone needs no kernel. */
  gradA: string;
  gradB: string;
}

export const binaryOps = {
  add: { forward: 'a + b', gradA: 'g', gradB: 'g' },
  sub: { forward: 'a - b', gradA: 'g', gradB: '-g' },
  mul: { forward: 'a * b', gradA: 'g * b', gradB: 'g * a' },
  div: { forward: 'a / b', gradA: 'g / b', gradB: '-g * a / (b * b)' },
  maximum: { forward: 'max(a, b)', gradA: 'select(0.0, g, a >= b)', gradB: 'select(0.0, g, b > a)' },
  minimum: { forward: 'min(a, b)', gradA: 'select(0.0, g, a <= b)', gradB: 'select(0.0, g, b < a)' },
} satisfies Record<string, BinaryDef>;

export type BinaryOp = keyof typeof binaryOps;

export function binary(op: BinaryOp, a: Tensor, b: Tensor): Tensor {
  const def: BinaryDef = binaryOps[op];
  expectDType(op, a, 'f32');
  expectDType(op, b, 'f32');
  const y = map(op, def.forward, { a, b });
  const shape = y.shape;
  const grad = (expr: string, target: Tensor, g: Tensor, as: Tensor, bs: Tensor) => {
    if (!target.requiresGrad) return null;
    const full = expr === 'g' ? g : map(`${op}.backward`, expr, { a: as, b: bs, g }, { shape });
    return sumTo(full, target.shape);
  };
  return record(op, y, [a, b], (g, [as, bs]) => [grad(def.gradA, a, g, as!, bs!), grad(def.gradB, b, g, as!, bs!)], [a, b]);
}

/** a + b; a number operand becomes a constant in the kernel. */
export function add(a: Tensor, b: Tensor | number): Tensor {
  return typeof b === 'number' ? affine(a, 1, b) : binary('add', a, b);
}
export function sub(a: Tensor, b: Tensor | number): Tensor {
  return typeof b === 'number' ? affine(a, 1, -b) : binary('sub', a, b);
}
export function mul(a: Tensor, b: Tensor | number): Tensor {
  return typeof b === 'number' ? affine(a, b) : binary('mul', a, b);
}
export function div(a: Tensor, b: Tensor | number): Tensor {
  return typeof b === 'number' ? affine(a, 1 / b) : binary('div', a, b);
}
export const maximum = (a: Tensor, b: Tensor) => binary('maximum', a, b);
export const minimum = (a: Tensor, b: Tensor) => binary('minimum', a, b);

// ---------------------------------------------------------------- comparisons, where, casts

const comparisons = { eq: '==', ne: '!=', lt: '<', le: '<=', gt: '>', ge: '>=' } as const;
export type Comparison = keyof typeof comparisons;

/** Elementwise comparison; the result is an f32 mask (1 where true, 0 elsewhere), with no gradient. */
export function compare(op: Comparison, a: Tensor, b: Tensor | number): Tensor {
  if (typeof b === 'number') return map(op, `select(0.0, 1.0, f32(a) ${comparisons[op]} ${f32(b)})`, { a });
  return map(op, `select(0.0, 1.0, a ${comparisons[op]} b)`, { a, b });
}

/** cond ? a : b elementwise with broadcasting; `cond` may be any dtype (non-zero is true). */
export function where(cond: Tensor, a: Tensor, b: Tensor): Tensor {
  expectDType('where', a, 'f32');
  expectDType('where', b, 'f32');
  const test = cond.dtype === 'f32' ? 'c != 0.0' : cond.dtype === 'i32' ? 'c != 0i' : 'c != 0u';
  const y = map('where', `select(b, a, ${test})`, { c: cond, a, b });
  const shape = y.shape;
  return record('where', y, [a, b], (g, [cs]) => [
    a.requiresGrad ? sumTo(map('where.backward', `select(0.0, g, ${test})`, { c: cs!, g }, { shape }), a.shape) : null,
    b.requiresGrad ? sumTo(map('where.backward', `select(g, 0.0, ${test})`, { c: cs!, g }, { shape }), b.shape) : null,
  ], [cond]);
}

/** Converts between dtypes (f32 ↔ i32/u32 truncates toward zero; f16 rounds to nearest even). */
export function cast(x: Tensor, dtype: DType): Tensor {
  if (x.dtype === dtype) return x.alias();
  if (x.dtype === 'f16' || dtype === 'f16') return castHalf(x, dtype);
  return map(`cast.${dtype}`, `${dtype}(x)`, { x }, { dtype });
}

/** f16 bound as packed pairs in u32 words (no device feature needed), so each thread converts two elements. */
function castHalf(x: Tensor, dtype: DType): Tensor {
  const out = Tensor.empty(x.shape, dtype);
  const n = x.size;
  const pairs = Math.ceil(n / 2);
  const g = grid1d(pairs);
  const toHalf = x.dtype !== 'f16';
  if (!toHalf && dtype !== 'f32') throw new Error(`cast: f16 converts to f32 only (then to ${dtype}); got f16 → ${dtype}`);
  launch({
    name: toHalf ? 'cast.f16' : 'cast.f16_to_f32',
    key: `${n}`,
    packedHalf: true,
    inputs: { x },
    outputs: { out },
    workgroups: g.workgroups,
    wgsl: (bindings) => toHalf
      ? `${bindings}
${g.main}
  let a = f32(x[2u * i]);
  let b = select(0.0, f32(x[min(2u * i + 1u, ${n - 1}u)]), 2u * i + 1u < ${n}u);
  out[i] = pack2x16float(vec2f(a, b));
}`
      : `${bindings}
${g.main}
  let v = unpack2x16float(x[i]);
  out[2u * i] = v.x;
  if (2u * i + 1u < ${n}u) { out[2u * i + 1u] = v.y; }
}`,
  });
  return out;
}
