// The random-walk bench's configuration and inputs, shared by bench/random_walk.ts and its onnxruntime-web
// runner (bench/peers/ort-random-walk.ts, a separate process), so both walk the same data.

export const walkConfig = { C: 32, K: 3, radius: 5, beta: 8 } as const;

function rand(n: number, seed: number): Float32Array {
  let s = seed;
  return Float32Array.from({ length: n }, () => ((s = (s * 1103515245 + 12345) >>> 0) / 2 ** 32));
}

/** features [1, C, side, side] and cam [K, side, side], deterministic per side. */
export function randomWalkInputs(side: number): { features: Float32Array; cam: Float32Array } {
  const { C, K } = walkConfig;
  return { features: rand(C * side * side, side), cam: rand(K * side * side, side + 1) };
}
