// Seeded random numbers on the CPU, for parameter initialisation, data order and tests. Deterministic across runs and
// platforms (integer arithmetic only), so a model built twice with the same seed has the same weights.

/** Mulberry32: a small seeded generator of uniform numbers in [0, 1). */
export function seededRandom(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/**
 * A user's seed (a job's, a training run's) spread over 32 bits by MurmurHash3's finaliser: a bijection with
 * 0 ↦ 0, so that `subSeed(spreadSeed(s), i)` streams of different seeds never meet for any practical index i.
 * Without it seed 1's stream i is seed 0's stream i ^ 1, since subSeed xors the seed with its first part.
 */
export function spreadSeed(seed: number): number {
  let h = seed >>> 0;
  h = Math.imul(h ^ (h >>> 16), 0x85ebca6b);
  h = Math.imul(h ^ (h >>> 13), 0xc2b2ae35);
  return (h ^ (h >>> 16)) >>> 0;
}

/** A 32-bit seed of (seed, parts…): independent streams per step, sample, purpose (spread a user's seed first). */
export function subSeed(seed: number, ...parts: number[]): number {
  let h = (seed ^ 0x9e3779b9) >>> 0;
  for (const p of parts) h = (Math.imul(h ^ p, 0x85ebca6b) + 0x68e31da4) >>> 0;
  return (h ^ (h >>> 15)) >>> 0;
}

let generator = seededRandom(0);

/** Reseeds the process-wide generator used by parameter initialisation (like torch.manual_seed). */
export function manualSeed(seed: number): void {
  generator = seededRandom(seed);
}

/** `n` numbers uniform in [lo, hi) from the process-wide generator. */
export function uniformArray(n: number, lo: number, hi: number): Float32Array {
  return Float32Array.from({ length: n }, () => lo + generator() * (hi - lo));
}
