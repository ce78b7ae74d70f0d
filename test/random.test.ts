// GPU random numbers: Philox against a CPU reference and Random123's known answers, reproducibility from
// (seed, shape, offset), distributions checked from the output (bounds at 5 standard errors for n = 2^18),
// and dropout (keep rate, scale, and a backward that regenerates the forward's mask).
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { assertClose, randomArray } from './helpers.ts';
import { backward } from '../src/engine/autograd.ts';
import { assertGradcheck } from '../src/engine/gradcheck.ts';
import { Tensor } from '../src/engine/tensor.ts';
import { Generator, dropout, rand, randn, randomBits } from '../src/kernels/random.ts';
import { spreadSeed, subSeed } from '../src/engine/random-cpu.ts';

const n = 2 ** 18;

/** Philox-4x32-10 on the CPU (BigInt products), straight from the paper's round function. */
function philox(counter: readonly number[], key: readonly number[]): number[] {
  let c = [...counter];
  let [k0, k1] = key as [number, number];
  const mulhilo = (m: number, v: number) => {
    const p = BigInt(m) * BigInt(v);
    return [Number(p >> 32n), Number(p & 0xffffffffn)] as const;
  };
  for (let r = 0; r < 10; r++) {
    if (r > 0) [k0, k1] = [(k0 + 0x9e3779b9) >>> 0, (k1 + 0xbb67ae85) >>> 0];
    const [hi0, lo0] = mulhilo(0xd2511f53, c[0]!);
    const [hi1, lo1] = mulhilo(0xcd9e8d57, c[2]!);
    c = [(hi1 ^ c[1]! ^ k0) >>> 0, lo1, (hi0 ^ c[3]! ^ k1) >>> 0, lo0];
  }
  return c;
}

test('spreadSeed is MurmurHash3\'s fmix32 (0 ↦ 0); the streams of seeds 0..7 share no sub-seed, where plain seeds do', () => {
  // fmix32 values from the MurmurHash3 reference (h ^= h >> 16; h *= 0x85ebca6b; h ^= h >> 13; h *= 0xc2b2ae35; h ^= h >> 16)
  assert.equal([0, 1, 2, 0xffffffff, 123456789].map(spreadSeed), [0, 0x514e28b7, 0x30f4c306, 0x81f16f39, 0xba60d89a]);
  // subSeed xors the seed with the first part: seed 1's stream 0 is seed 0's stream 1
  assert.is(subSeed(1, 0, 0), subSeed(0, 1, 0));
  const seen = new Set<number>();
  for (let s = 0; s < 8; s++) for (let i = 0; i < 4096; i++) seen.add(subSeed(spreadSeed(s), i, 0));
  assert.is(seen.size, 8 * 4096);
});

test('CPU Philox reproduces the Random123 known-answer vectors', () => {
  assert.equal(philox([0, 0, 0, 0], [0, 0]), [0x6627e8d5, 0xe169c58d, 0xbc57ac4c, 0x9b00dbd8]);
  assert.equal(philox([0xffffffff, 0xffffffff, 0xffffffff, 0xffffffff], [0xffffffff, 0xffffffff]), [0x408f276d, 0x41c83b0e, 0xa20bc7c6, 0x6d5451fd]);
  assert.equal(philox([0x243f6a88, 0x85a308d3, 0x13198a2e, 0x03707344], [0xa4093822, 0x299f31d0]), [0xd16cfe09, 0x94fdcceb, 0x5001e420, 0x24126ea1]);
});

test('GPU bits equal CPU Philox at counter offset + i, across the 2^32 carry and with a seed above 2^32', async () => {
  assert.is(await randomBits([1], { seed: 0 }).item(), 0x6627e8d5);
  const seed = 2 ** 40 + 12345;
  const offset = 2 ** 32 - 3;
  const bits = await randomBits([2, 4], { seed, offset }).toArray();
  const key = [seed % 2 ** 32, Math.floor(seed / 2 ** 32)];
  const want = Array.from({ length: 8 }, (_, i) => {
    const c = offset + i;
    return philox([c % 2 ** 32, Math.floor(c / 2 ** 32), 0, 0], key)[0]!;
  });
  assert.equal([...bits], want);
});

test('reproducible: same (seed, shape, offset) gives identical bits; seed and offset change them', async () => {
  const a = await rand([1000], { seed: 7 }).toArray();
  const b = await rand([1000], { seed: 7 }).toArray();
  const c = await rand([1000], { seed: 8 }).toArray();
  assert.equal([...a], [...b]);
  assert.ok(a.some((v, i) => v !== c[i]), 'another seed gives other numbers');
  // the offset shifts the counter: a draw at offset 300 is the tail of a draw from 0
  const shifted = await rand([700], { seed: 7, offset: 300 }).toArray();
  assert.equal([...shifted], [...a.subarray(300)]);
  const z1 = await randn([5, 7], { seed: 3, offset: 11 }).toArray();
  const z2 = await randn([5, 7], { seed: 3, offset: 11 }).toArray();
  const z3 = await randn([5, 7], { seed: 3, offset: 12 }).toArray();
  assert.equal([...z1], [...z2]);
  assert.ok(z1.some((v, i) => v !== z3[i]), 'another offset gives other numbers');
});

test('Generator: successive draws differ, and the sequence is reproducible from the seed', async () => {
  const g1 = new Generator(42);
  const g2 = new Generator(42);
  const a1 = await g1.rand([3, 5]).toArray();
  const a2 = await g1.rand([3, 5]).toArray();
  assert.ok(a1.some((v, i) => v !== a2[i]), 'the second draw differs from the first');
  assert.equal([...await g2.rand([3, 5]).toArray()], [...a1]);
  assert.equal([...await g2.rand([3, 5]).toArray()], [...a2]);
  assert.is(g1.offset, 30);
  assert.equal([...await g1.randn([4]).toArray()], [...await randn([4], { seed: 42, offset: 30 }).toArray()]);
});

test('rand: uniform on [0, 1) with mean 1/2, variance 1/12 and a flat histogram', async () => {
  const u = (await rand([n], { seed: 2024 }).toArray()) as Float32Array;
  let sum = 0;
  let min = 1;
  let max = 0;
  const bins = new Array<number>(64).fill(0);
  for (const v of u) {
    sum += v;
    min = Math.min(min, v);
    max = Math.max(max, v);
    bins[Math.floor(v * 64)]!++;
  }
  const mean = sum / n;
  const variance = u.reduce((a, v) => a + (v - mean) ** 2, 0) / n;
  assert.ok(min >= 0 && max < 1, `range [${min}, ${max}]`);
  assert.ok(Math.abs(mean - 0.5) < 5 * Math.sqrt(1 / 12 / n), `mean ${mean}`);
  // sd of the sample variance: sqrt((1/80 − 1/144) / n)
  assert.ok(Math.abs(variance - 1 / 12) < 5 * Math.sqrt((1 / 80 - 1 / 144) / n), `variance ${variance}`);
  // χ² with 63 degrees of freedom: mean 63, sd √126
  const expected = n / 64;
  const chi2 = bins.reduce((a, b) => a + (b - expected) ** 2 / expected, 0);
  assert.ok(chi2 < 63 + 5 * Math.sqrt(126), `histogram χ² ${chi2}`);
});

test('randn: standard normal mean, standard deviation, tails and kurtosis', async () => {
  const z = await randn([n], { seed: 99 }).toArray();
  let sum = 0;
  for (const v of z) {
    assert.ok(Number.isFinite(v), `non-finite sample ${v}`);
    sum += v;
  }
  const mean = sum / n;
  let m2 = 0;
  let m4 = 0;
  let within1 = 0;
  for (const v of z) {
    m2 += (v - mean) ** 2;
    m4 += (v - mean) ** 4;
    if (Math.abs(v) < 1) within1++;
  }
  const sd = Math.sqrt(m2 / n);
  const kurtosis = m4 / n / (m2 / n) ** 2;
  const p1 = 0.6826894921370859;
  assert.ok(Math.abs(mean) < 5 / Math.sqrt(n), `mean ${mean}`);
  assert.ok(Math.abs(sd - 1) < 5 / Math.sqrt(2 * n), `sd ${sd}`);
  assert.ok(Math.abs(within1 / n - p1) < 5 * Math.sqrt((p1 * (1 - p1)) / n), `P(|z| < 1) = ${within1 / n}`);
  assert.ok(Math.abs(kurtosis - 3) < 5 * Math.sqrt(24 / n), `kurtosis ${kurtosis}`);
});

test('dropout keeps about 1 − p, scales kept values by 1/(1 − p), and its gradient uses the same mask', async () => {
  const p = 0.3;
  const data = randomArray(n, 5, 0.5, 2);
  const x = Tensor.fromArray(data, [64, n / 64]).requireGrad();
  const y = dropout(x, p, { seed: 77, offset: 5 });
  const out = await y.toArray();
  const scale = Math.fround(1 / (1 - p));
  let kept = 0;
  out.forEach((v, i) => {
    if (v !== 0) {
      kept++;
      assert.is(v, Math.fround(data[i]! * scale));
    }
  });
  assert.ok(Math.abs(kept / n - (1 - p)) < 5 * Math.sqrt((p * (1 - p)) / n), `kept fraction ${kept / n}`);
  backward(y, Tensor.fromArray(new Float32Array(n).fill(1), y.shape));
  const grad = await x.grad!.toArray();
  out.forEach((v, i) => {
    if ((v !== 0) !== (grad[i] !== 0)) assert.unreachable(`element ${i}: output ${v} but gradient ${grad[i]}`);
  });
  assertClose(grad.filter((g) => g !== 0), new Array(kept).fill(scale), 0, 'kept gradients');
});

test('dropout: gradcheck, identity when not training or p = 0, zeros at p = 1', async () => {
  await assertGradcheck('dropout', (t) => dropout(t, 0.4, { seed: 5 }), [{ data: randomArray(40, 6), shape: [5, 8] }], { samples: 16 });
  const x = Tensor.fromArray(randomArray(10, 7));
  const data = [...await x.toArray()];
  assert.equal([...await dropout(x, 0.5, { seed: 1, training: false }).toArray()], data);
  assert.equal([...await dropout(x, 0, { seed: 1 }).toArray()], data);
  assert.equal([...await dropout(x, 1, { seed: 1 }).toArray()], new Array(10).fill(0));
  const g = new Generator(9);
  const a = await g.dropout(x, 0.5).toArray();
  const b = await g.dropout(x, 0.5).toArray();
  assert.ok(a.some((v, i) => v !== b[i]), 'a generator draws a new mask each call');
  assert.throws(() => dropout(x, 1.5, { seed: 1 }), /dropout: p must be in \[0, 1\]/);
  assert.throws(() => rand([2], { seed: -1 }), /seed must be an integer/);
});

test.run();
