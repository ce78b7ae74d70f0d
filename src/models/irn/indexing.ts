// IRNet's pixel-pair indexing (reference jiwoon-ahn/irn misc/indexing.py, PathIndex): the search directions within a
// radius (a half plane, so every unordered pair appears once), grouped by the length of the straight pixel path
// between the two pixels, and the flat indices of sources, destinations and path pixels on a feature grid. The
// boundary map is read along these paths to give each pair its affinity.

/** A direction (dy, dx) with its path: pixels relative to the source, destination first, the source last. */
export interface SearchPath {
  dy: number;
  dx: number;
  path: [number, number][];
}

/** The directions within `radius` in IRNet's order, grouped by path length (ascending; generation order inside a group). */
export function searchPaths(radius: number): SearchPath[][] {
  if (!Number.isInteger(radius) || radius < 2) throw new Error(`searchPaths: radius must be an integer ≥ 2, got ${radius}`);
  const dirs: [number, number][] = [];
  for (let x = 1; x < radius; x++) dirs.push([0, x]);
  for (let y = 1; y < radius; y++) for (let x = -radius + 1; x < radius; x++) if (x * x + y * y < radius * radius) dirs.push([y, x]);
  const byLength = new Map<number, SearchPath[]>();
  for (const [dy, dx] of dirs) {
    const lengthSq = dy * dy + dx * dx;
    const path: [number, number][] = [];
    for (let y = Math.min(0, dy); y <= Math.max(0, dy); y++) {
      for (let x = Math.min(0, dx); x <= Math.max(0, dx); x++) if ((dy * x - dx * y) ** 2 / lengthSq < 1) path.push([y, x]);
    }
    // farthest first (stable: the scan order breaks ties)
    path.sort((a, b) => Math.abs(b[0]) + Math.abs(b[1]) - (Math.abs(a[0]) + Math.abs(a[1])));
    if (!byLength.has(path.length)) byLength.set(path.length, []);
    byLength.get(path.length)!.push({ dy, dx, path });
  }
  return [...byLength.keys()].sort((a, b) => a - b).map((l) => byLength.get(l)!);
}

/** PathIndex(radius, size): the directions and, on an H×W grid, the sources whose every destination is inside it. */
export class PathIndex {
  readonly radiusFloor: number;
  readonly groups: SearchPath[][];
  /** The directions in channel order (grouped by path length). */
  readonly directions: SearchPath[];
  /** Flat indices of the sources: rows 0..H−1−rf, columns rf..W−1−rf, row-major. */
  readonly srcIndices: Int32Array;
  /** [directions × sources] flat indices of the destinations. */
  readonly dstIndices: Int32Array;

  constructor(readonly radius: number, readonly size: [number, number]) {
    const [H, W] = size;
    const rf = (this.radiusFloor = radius - 1);
    if (H - rf < 1 || W - 2 * rf < 1) throw new Error(`PathIndex: a ${H}×${W} grid has no source pixel at radius ${radius}`);
    this.groups = searchPaths(radius);
    this.directions = this.groups.flat();
    const src: number[] = [];
    for (let y = 0; y < H - rf; y++) for (let x = rf; x < W - rf; x++) src.push(y * W + x);
    this.srcIndices = Int32Array.from(src);
    this.dstIndices = Int32Array.from(this.directions.flatMap((d) => src.map((s) => s + d.dy * W + d.dx)));
  }

  /** [P_g × L_g × S] flat indices of group g's path pixels for every source. */
  pathIndices(g: number): Int32Array {
    const W = this.size[1];
    const group = this.groups[g]!;
    const L = group[0]!.path.length;
    const S = this.srcIndices.length;
    const out = new Int32Array(group.length * L * S);
    group.forEach((d, p) => d.path.forEach(([y, x], l) => {
      for (let s = 0; s < S; s++) out[(p * L + l) * S + s] = this.srcIndices[s]! + y * W + x;
    }));
    return out;
  }
}
