// Shared test utilities: the device, conformance vectors, and element-wise comparison.
import { type Callback, type Test, test as uvuTest } from 'uvu';
import * as assert from 'uvu/assert';
import { getDevice } from '../src/engine/device.ts';
import { Tensor } from '../src/engine/tensor.ts';
import { loadSafetensors, type SafetensorsReader } from '../src/io/safetensors.ts';

await getDevice();

const proc = (globalThis as { process?: { env: Record<string, string | undefined>; cwd(): string } }).process;

/** A test skipped at run time, with why; test/run.ts prints each and counts them in its closing line. */
export type SkippedTest = { fileIndex: number; name: string; reason: string };
const g = globalThis as { UVU_INDEX?: number; FREEMASK_SKIPPED?: SkippedTest[] };

/**
 * `test` (or the suite `t`) when `condition` holds; otherwise a stand-in that registers the test as skipped
 * (uvu's `test.skip`) and records `reason`, so that a test that cannot run on this adapter says so in the
 * output instead of passing without checking. Usage: `testIf(hasFeature, 'no timestamp-query')('name', fn)`.
 */
export function testIf<T>(condition: boolean, reason: string, t: Test<T> = uvuTest as unknown as Test<T>): (name: string, fn: Callback<T>) => void {
  if (condition) return (name, fn) => t(name, fn);
  return (name) => {
    t.skip(name);
    (g.FREEMASK_SKIPPED ??= []).push({ fileIndex: g.UVU_INDEX ?? 0, name, reason });
  };
}

/** ../shared/conformance beside the repository (or FREEMASK_CONFORMANCE). */
export const conformanceDir: string =
  proc?.env.FREEMASK_CONFORMANCE ?? new URL('../../shared/conformance/', import.meta.url).pathname.replace(/\/$/, '');

export function conformance(folder: string): SafetensorsReader {
  return loadSafetensors(`${conformanceDir}/${folder}/io.safetensors`);
}

export async function readJson<T>(path: string): Promise<T> {
  const fs = (globalThis as { process?: { getBuiltinModule(m: string): { readFileSync(p: string, e: string): string } } }).process!.getBuiltinModule('node:fs');
  return JSON.parse(fs.readFileSync(path, 'utf8')) as T;
}

/** Asserts |ours - ref| <= tol * (1 + |ref|) element-wise (the conformance README's rule), naming the worst element. */
export function assertClose(ours: ArrayLike<number>, ref: ArrayLike<number>, tol: number, what: string): void {
  assert.is(ours.length, ref.length, `${what}: ${ours.length} values, reference has ${ref.length}`);
  let worst = -1;
  let worstExcess = 0;
  for (let i = 0; i < ref.length; i++) {
    const d = Math.abs(ours[i]! - ref[i]!);
    const excess = d - tol * (1 + Math.abs(ref[i]!));
    if (!(excess <= 0) && (worst < 0 || excess > worstExcess || Number.isNaN(d))) {
      worst = i;
      worstExcess = excess;
    }
  }
  if (worst >= 0) {
    assert.unreachable(`${what}: element ${worst} is ${ours[worst]} but the reference is ${ref[worst]} (tol ${tol})`);
  }
}

export async function assertTensorClose(t: Tensor, ref: Tensor, tol: number, what: string): Promise<void> {
  assert.equal([...t.shape], [...ref.shape], `${what}: shape ${JSON.stringify(t.shape)} vs reference ${JSON.stringify(ref.shape)}`);
  assertClose(await t.toArray(), await ref.toArray(), tol, what);
}

/** Deterministic test data in [lo, hi). */
export function randomArray(n: number, seed: number, lo = -1, hi = 1): Float32Array {
  let a = seed >>> 0;
  return Float32Array.from({ length: n }, () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = Math.imul(a ^ (a >>> 15), a | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return lo + (((t ^ (t >>> 14)) >>> 0) / 4294967296) * (hi - lo);
  });
}

/** Asserts that `p` rejects with a message matching `re`. */
export async function assertRejects(p: Promise<unknown>, re: RegExp): Promise<void> {
  try {
    await p;
  } catch (e) {
    assert.match((e as Error).message, re);
    return;
  }
  assert.unreachable(`expected an error matching ${re}`);
}

/** erf by its Maclaurin series (|x| < 3) or continued-fraction tail: float64, independent of the kernel's. */
export function erf(x: number): number {
  const ax = Math.abs(x);
  if (ax < 3) {
    let term = ax;
    let s = ax;
    for (let n = 1; n < 60; n++) {
      term *= (-ax * ax) / n;
      s += term / (2 * n + 1);
    }
    return Math.sign(x) * (2 / Math.sqrt(Math.PI)) * s;
  }
  let f = 0;
  for (let n = 60; n >= 1; n--) f = (n / 2) / (ax + f);
  return Math.sign(x) * (1 - Math.exp(-ax * ax) / Math.sqrt(Math.PI) / (ax + f));
}

/**
 * Overwrites every parameter of `m` (many start as zeros or ones) with deterministic uniform values: vectors
 * (biases, norms) within ±`vector`, weights within ±`gain`/√fan-in; parameter k draws from seed + k.
 */
export function randomParameters(m: { namedParameters(): [string, Tensor][] }, seed: number, vector: number, gain: number): void {
  m.namedParameters().forEach(([, p], k) => {
    const scale = p.rank === 1 ? vector : gain / Math.sqrt(p.size / p.shape[0]!);
    p.copyFrom(Tensor.fromArray(randomArray(p.size, seed + k, -scale, scale), p.shape));
  });
}
