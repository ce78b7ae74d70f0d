// Finite-difference gradient checks for elementwise, reduction and layout ops, on shapes and attributes
// of our own (not the conformance ones), plus forward checks against plain CPU formulas.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { assertClose, erf, randomArray } from './helpers.ts';
import { assertGradcheck } from '../src/engine/gradcheck.ts';
import { Tensor } from '../src/engine/tensor.ts';
import * as F from '../src/index.ts';

const input = (shape: number[], seed: number, lo = -2, hi = 2) => ({ data: randomArray(shape.reduce((a, b) => a * b, 1), seed, lo, hi), shape });
const opts = { samples: 16 };

for (const op of Object.keys(F.unaryOps) as F.UnaryOp[]) {
  // log/sqrt/rsqrt need positive inputs; abs and relu need inputs away from their kink at 0
  const positive = op === 'log' || op === 'sqrt' || op === 'rsqrt';
  test(`gradcheck unary ${op}`, async () => {
    const x = positive ? input([3, 7], 11, 0.5, 3) : input([3, 7], 11);
    if (op === 'abs' || op === 'relu' || op === 'elu') x.data = x.data.map((v) => (Math.abs(v) < 0.05 ? v + 0.1 : v));
    await assertGradcheck(op, (t) => F.unary(op, t), [x], opts);
  });
}

test('unary forward matches CPU formulas', async () => {
  const data = randomArray(64, 3, -4, 4);
  const x = Tensor.fromArray(data, [8, 8]);
  const ref: Record<string, (v: number) => number> = {
    gelu_erf: (v) => 0.5 * v * (1 + erf(v / Math.SQRT2)),
    gelu_tanh: (v) => 0.5 * v * (1 + Math.tanh(Math.sqrt(2 / Math.PI) * (v + 0.044715 * v ** 3))),
    silu: (v) => v / (1 + Math.exp(-v)),
    sigmoid: (v) => 1 / (1 + Math.exp(-v)),
    tanh: Math.tanh,
    elu: (v) => (v > 0 ? v : Math.exp(v) - 1),
  };
  for (const [op, f] of Object.entries(ref)) {
    const y = F.unary(op as F.UnaryOp, x);
    assertClose(await y.toArray(), Array.from(data, f), 2e-6, op);
    y.dispose();
  }
  x.dispose();
});

test('gradcheck pow (integer and fractional exponents), clamp, affine', async () => {
  await assertGradcheck('pow 3', (t) => F.pow(t, 3), [input([5, 4], 2)], opts);
  await assertGradcheck('pow -2', (t) => F.pow(t, -2), [input([5, 4], 3, 0.5, 2)], opts);
  await assertGradcheck('pow 1.5', (t) => F.pow(t, 1.5), [input([5, 4], 4, 0.2, 2)], opts);
  await assertGradcheck('clamp', (t) => F.clamp(t, -0.3, 0.9), [input([6, 5], 5)], opts);
  await assertGradcheck('affine', (t) => F.affine(t, -1.5, 0.25), [input([6, 5], 6)], opts);
});

for (const op of Object.keys(F.binaryOps) as F.BinaryOp[]) {
  test(`gradcheck binary ${op} with broadcasting both ways`, async () => {
    const b = input([4, 1, 3], 8, 0.5, 2);
    await assertGradcheck(op, (x, y) => F.binary(op, x, y), [input([2, 1, 5, 3], 7), b], opts);
    await assertGradcheck(`${op} reversed`, (x, y) => F.binary(op, x, y), [input([5, 1], 9, 0.5, 2), input([3, 1, 4], 10, 0.5, 2)], opts);
  });
}

test('gradcheck where with broadcast condition', async () => {
  const cond = Tensor.fromArray(new Int32Array([1, 0, 0, 1, 1]), [5]);
  await assertGradcheck('where', (a, b) => F.where(cond, a, b), [input([3, 5], 12), input([3, 1], 13)], opts);
  cond.dispose();
});

test('gradcheck sum / mean over several axes, max / min over one', async () => {
  await assertGradcheck('sum all', (x) => F.sum(x), [input([3, 4, 5], 14)], opts);
  await assertGradcheck('sum 0,2', (x) => F.sum(x, [0, 2]), [input([3, 4, 5], 15)], opts);
  await assertGradcheck('mean -1 keepdim', (x) => F.mean(x, -1, { keepdim: true }), [input([3, 4, 5], 16)], opts);
  await assertGradcheck('max 1', (x) => F.max(x, 1), [input([3, 4, 5], 17)], opts);
  await assertGradcheck('min 0 keepdim', (x) => F.min(x, 0, { keepdim: true }), [input([3, 4, 5], 18)], opts);
});

test('large reductions (workgroup path) match a float64 CPU sum', async () => {
  const data = randomArray(3 * 70000, 19);
  const x = Tensor.fromArray(data, [3, 70000]);
  const s = F.sum(x, 1);
  const m = F.max(x, 1);
  const a = F.argmax(x, 1);
  const got = await s.toArray();
  const gotMax = await m.toArray();
  const gotArg = await a.toArray();
  for (let r = 0; r < 3; r++) {
    let acc = 0, best = -Infinity, arg = 0;
    for (let k = 0; k < 70000; k++) {
      const v = data[r * 70000 + k]!;
      acc += v;
      if (v > best) { best = v; arg = k; }
    }
    assertClose([got[r]!], [acc], 1e-4, `sum row ${r}`);
    assert.is(gotMax[r], Math.fround(best));
    assert.is(gotArg[r], arg);
  }
  for (const t of [x, s, m, a]) t.dispose();
});

test('gradcheck layout ops: permute, slice with step, concat, split, pad, roll, expand, reshape', async () => {
  await assertGradcheck('permute', (x) => F.permute(x, [2, 0, 1]), [input([2, 3, 4], 20)], opts);
  await assertGradcheck('slice', (x) => F.slice(x, 1, 1, -1, 2), [input([2, 7, 3], 21)], opts);
  await assertGradcheck('concat', (a, b, c) => F.concat([a, b, c], 0), [input([1, 3], 22), input([2, 3], 23), input([3, 3], 24)], opts);
  await assertGradcheck('split', (x) => F.split(x, [2, 3], 1)[1]!, [input([2, 5], 25)], opts);
  await assertGradcheck('pad', (x) => F.pad(x, [2, 0, 1, 3], 0.5), [input([2, 3, 4], 26)], opts);
  await assertGradcheck('roll', (x) => F.roll(x, [3, -1], [0, 2]), [input([4, 2, 5], 27)], opts);
  await assertGradcheck('expand', (x) => F.expand(x, [3, 4, 5]), [input([4, 1], 28)], opts);
  await assertGradcheck('reshape chain', (x) => F.mul(F.reshape(x, [6, -1]), F.reshape(x, [6, 4])), [input([2, 3, 4], 29)], opts);
});

test('layout forward values: slice, pad, roll against index arithmetic', async () => {
  const data = Float32Array.from({ length: 24 }, (_, i) => i);
  const x = Tensor.fromArray(data, [2, 3, 4]);
  assert.equal([...await F.slice(x, 2, 1, 4, 2).toArray()], [1, 3, 5, 7, 9, 11, 13, 15, 17, 19, 21, 23]);
  assert.equal([...await F.roll(x, [1], [2]).toArray()].slice(0, 4), [3, 0, 1, 2]);
  const p = F.pad(F.reshape(x, [24]), [1, 2], -1);
  assert.equal([...await p.toArray()], [-1, ...data, -1, -1]);
  assert.equal([...await F.permute(x, [2, 1, 0]).toArray()].slice(0, 4), [0, 12, 4, 16]);
});

test('shape errors name the op and both shapes', () => {
  const a = Tensor.zeros([2, 3]);
  const b = Tensor.zeros([4, 3]);
  assert.throws(() => F.add(a, b), /add: shapes \[2, 3\] and \[4, 3\] do not broadcast/);
  assert.throws(() => F.reshape(a, [4, 2]), /reshape: \[2, 3\]/);
  assert.throws(() => F.concat([a, Tensor.zeros([2, 4])], 0), /concat: shapes \[2, 3\], \[2, 4\]/);
  assert.throws(() => F.sum(a, 2), /sum: dim 2 is out of range/);
});

test.run();
