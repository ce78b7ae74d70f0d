// Counter-based random numbers on the GPU: Philox-4x32-10 (Salmon et al., "Parallel random numbers: as easy
// as 1, 2, 3", SC'11), keyed by the seed, with the 64-bit counter offset + (flat element index). Every element
// is a pure function of (seed, offset + index), so a draw depends only on (seed, shape, offset), any element
// can be regenerated (dropout's backward recomputes its mask instead of saving it), and a Generator hands out
// consecutive counter ranges. Seed and offset reach the kernel as a small u32 tensor, so a new seed or offset
// reuses the compiled pipeline.

import { record } from '../engine/autograd.ts';
import { expectDType, f32 } from '../engine/kernel.ts';
import { type Shape, Tensor, numel } from '../engine/tensor.ts';
import { map } from './elementwise.ts';
import { reshape } from './shape.ts';

const philox = `
// high 32 bits of the 64-bit product a·b (WGSL has no 64-bit integers): 16-bit halves
fn mulhi(a: u32, b: u32) -> u32 {
  let al = a & 0xffffu; let ah = a >> 16u;
  let bl = b & 0xffffu; let bh = b >> 16u;
  let lh = al * bh; let hl = ah * bl;
  let mid = ((al * bl) >> 16u) + (lh & 0xffffu) + (hl & 0xffffu);
  return ah * bh + (lh >> 16u) + (hl >> 16u) + (mid >> 16u);
}
fn philox4x32_10(counter: vec4u, key: vec2u) -> vec4u {
  var c = counter;
  var k = key;
  for (var r = 0u; r < 10u; r++) {
    if (r > 0u) { k += vec2u(0x9E3779B9u, 0xBB67AE85u); }
    let hi0 = mulhi(0xD2511F53u, c.x);
    let hi1 = mulhi(0xCD9E8D57u, c.z);
    c = vec4u(hi1 ^ c.y ^ k.x, 0xCD9E8D57u * c.z, hi0 ^ c.w ^ k.y, 0xD2511F53u * c.x);
  }
  return c;
}
// Philox output for element i of a draw with p = (seed lo, seed hi, offset lo, offset hi)
fn random_bits(p: vec4u, i: u32) -> vec4u {
  let lo = p.z + i;
  return philox4x32_10(vec4u(lo, p.w + select(0u, 1u, lo < i), 0u, 0u), p.xy);
}
// 24 random bits as a float in [0, 1), every value exactly representable
fn unit_float(bits: u32) -> f32 { return f32(bits >> 8u) * ${f32(2 ** -24)}; }
fn random_uniform(p: vec4u, i: u32) -> f32 { return unit_float(random_bits(p, i).x); }
// Box–Muller on two words; 1 − u lies in (0, 1], so the log is finite
fn random_normal(p: vec4u, i: u32) -> f32 {
  let b = random_bits(p, i);
  return sqrt(-2.0 * log(1.0 - unit_float(b.x))) * cos(${f32(2 * Math.PI)} * unit_float(b.y));
}`;

/** The parameters vector `p` of the WGSL functions, read from the `p` input. */
const params = 'vec4u(in_p[0], in_p[1], in_p[2], in_p[3])';

export interface RandomOptions {
  /** A non-negative integer below 2^53. */
  seed: number;
  /** Counter of the first element (default 0): a draw of n elements uses counters offset … offset + n − 1. */
  offset?: number;
}

function checkCounter(what: string, v: number): void {
  if (!Number.isSafeInteger(v) || v < 0) throw new Error(`random: ${what} must be an integer in [0, 2^53), got ${v}`);
}

/** The seed and offset as a u32 tensor (seed lo, seed hi, offset lo, offset hi). */
function paramsTensor({ seed, offset = 0 }: RandomOptions): Tensor {
  checkCounter('seed', seed);
  checkCounter('offset', offset);
  const split = (v: number) => [v % 2 ** 32, Math.floor(v / 2 ** 32)];
  return Tensor.fromArray(new Uint32Array([...split(seed), ...split(offset)]), [4]);
}

/** A tensor of `shape` filled with `expr` (WGSL over the random functions, `params` and `i`). */
function draw(name: string, expr: string, shape: Shape, opts: RandomOptions, dtype: 'f32' | 'u32' = 'f32'): Tensor {
  const p = paramsTensor(opts);
  const out = map(name, expr, { p: { tensor: p, raw: true } }, { shape, dtype, helpers: philox });
  p.dispose();
  return out;
}

/** Raw u32 random words (the first Philox output word per element). */
export function randomBits(shape: Shape, opts: RandomOptions): Tensor {
  return draw('random_bits', `random_bits(${params}, i).x`, shape, opts, 'u32');
}

/** Uniform samples in [0, 1), like torch.rand. */
export function rand(shape: Shape, opts: RandomOptions): Tensor {
  return draw('rand', `random_uniform(${params}, i)`, shape, opts);
}

/** Standard normal samples, like torch.randn. */
export function randn(shape: Shape, opts: RandomOptions): Tensor {
  return draw('randn', `random_normal(${params}, i)`, shape, opts);
}

export interface DropoutOptions extends RandomOptions {
  /** When false, dropout is the identity. */
  training?: boolean;
}

/**
 * Zeroes each element with probability p and scales the rest by 1/(1 − p), like
 * torch.nn.functional.dropout. Element i is dropped when uniform(seed, offset + i) < p; the backward
 * regenerates the same mask from the seed.
 */
export function dropout(x: Tensor, p: number, { training = true, ...opts }: DropoutOptions): Tensor {
  expectDType('dropout', x, 'f32');
  if (!(p >= 0 && p <= 1)) throw new Error(`dropout: p must be in [0, 1], got ${p}`);
  if (!training || p === 0) return reshape(x, x.shape);
  const keep = `random_uniform(${params}, i) >= ${f32(p)}`;
  const scale = f32(p === 1 ? 0 : 1 / (1 - p));
  const pt = paramsTensor(opts);
  const y = map('dropout', `select(0.0, x * ${scale}, ${keep})`, { x, p: { tensor: pt, raw: true } }, { shape: x.shape, helpers: philox });
  const out = record('dropout', y, [x], (g, [ps]) => [
    map('dropout.backward', `select(0.0, g * ${scale}, ${keep})`, { g, p: { tensor: ps!, raw: true } }, { shape: x.shape, helpers: philox }),
  ], [pt]);
  pt.dispose();
  return out;
}

/**
 * A seed and an advancing counter, like torch.Generator: each draw takes the next numel(shape) counters, so
 * successive calls differ and the whole sequence is reproducible from the seed.
 */
export class Generator {
  /** Counter of the next draw's first element. */
  offset = 0;

  constructor(readonly seed: number) {
    checkCounter('seed', seed);
  }

  #next(shape: Shape): RandomOptions {
    const opts = { seed: this.seed, offset: this.offset };
    this.offset += numel(shape);
    return opts;
  }

  rand(shape: Shape): Tensor {
    return rand(shape, this.#next(shape));
  }

  randn(shape: Shape): Tensor {
    return randn(shape, this.#next(shape));
  }

  /** Dropout with this generator's next counters (none are used when not training). */
  dropout(x: Tensor, p: number, { training = true }: { training?: boolean } = {}): Tensor {
    return dropout(x, p, { training, ...(training ? this.#next(x.shape) : { seed: this.seed }) });
  }
}
