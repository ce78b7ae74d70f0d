// ShapeWorld's splits: fixed, disjoint seed ranges. Image k of a split is the scene of seed start + k. The test
// split is for final measurements only: no script trains or tunes on it.

export const splits = {
  train: { start: 0, size: 1_000_000 },
  val: { start: 1_000_000, size: 10_000 },
  test: { start: 2_000_000, size: 10_000 },
} as const;
export type Split = keyof typeof splits;

/** The seed of image `index` of `split`; throws naming the split or index when out of range. */
export function splitSeed(split: string, index: number): number {
  const s = splits[split as Split];
  if (!s) throw new Error(`unknown split '${split}' (expected ${Object.keys(splits).join(', ')})`);
  if (!Number.isInteger(index) || index < 0 || index >= s.size) throw new Error(`split '${split}' has images 0..${s.size - 1}, not ${index}`);
  return s.start + index;
}
