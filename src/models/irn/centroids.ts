// IRNet's instance grouping from the displacement field (reference jiwoon-ahn/irn step/make_ins_seg_labels.py):
// every pixel follows the field to the centroid it points at (find_centroids_with_refinement), the pixels with a
// weak displacement form the centroid regions (4-connected components of |D| < thres), and each pixel joins the
// region its centroid lands in (cluster_centroids). Run on the CPU with IRNet's numpy arithmetic: on a chaotic field
// the positions after hundreds of steps depend on every rounding (float32 positions, float64 increments).

/** Round half to even (numpy's np.round). */
function roundHalfEven(v: number): number {
  const r = Math.round(v);
  return Math.abs(v % 1) === 0.5 && r % 2 !== 0 ? r - 1 : r;
}

/**
 * The centroid each pixel reaches after `iterations` steps along D [2, H, W] ((dy, dx) in grid pixels; bilinear
 * lookup between the four neighbours): float positions [2, H, W] before rounding, and rounded (half to even).
 */
export function findCentroids(D: ArrayLike<number>, H: number, W: number, iterations: number): { positions: Float32Array; centroids: Int32Array } {
  if (D.length !== 2 * H * W) throw new Error(`findCentroids: the field has ${D.length} values, expected 2×${H}×${W}`);
  const n = H * W;
  const pos = new Float32Array(2 * n);
  for (let p = 0; p < n; p++) [pos[p], pos[n + p]] = [Math.floor(p / W), p % W];
  for (let it = 0; it < iterations; it++) {
    for (let p = 0; p < n; p++) {
      const cy = pos[p]!, cx = pos[n + p]!;
      const [uy, dy, ux, dx] = [Math.ceil(cy), Math.floor(cy), Math.ceil(cx), Math.floor(cx)];
      const yc = cy - dy, xc = cx - dx;
      const at = (c: number, y: number, x: number) => D[c * n + y * W + x]!;
      const inc = (c: number) => at(c, uy, ux) * yc * xc + at(c, dy, ux) * (1 - yc) * xc + at(c, uy, dx) * yc * (1 - xc) + at(c, dy, dx) * (1 - yc) * (1 - xc);
      const [iy, ix] = [inc(0), inc(1)];
      pos[p] = Math.min(H - 1, Math.max(0, Math.fround(cy + iy)));
      pos[n + p] = Math.min(W - 1, Math.max(0, Math.fround(cx + ix)));
    }
  }
  return { positions: pos, centroids: Int32Array.from(pos, roundHalfEven) };
}

/** skimage.measure.label(mask, connectivity=1): 4-connected components numbered 1, 2, … in raster order, 0 outside. */
export function connectedComponents(mask: ArrayLike<number>, H: number, W: number): Int32Array {
  const label = new Int32Array(H * W);
  let next = 0;
  for (let p = 0; p < H * W; p++) {
    if (!mask[p] || label[p]) continue;
    label[p] = ++next;
    const stack = [p];
    while (stack.length) {
      const q = stack.pop()!;
      const [y, x] = [Math.floor(q / W), q % W];
      for (const [ny, nx] of [[y - 1, x], [y + 1, x], [y, x - 1], [y, x + 1]] as const) {
        const r = ny * W + nx;
        if (ny >= 0 && ny < H && nx >= 0 && nx < W && mask[r] && !label[r]) {
          label[r] = next;
          stack.push(r);
        }
      }
    }
  }
  return label;
}

/**
 * cluster_centroids: the weak-displacement regions (|D| < thres, |D| computed in float32), each pixel labelled by
 * the region its centroid lands in (0 when it lands on a strong pixel), labels compressed to 0..K−1 in increasing
 * order. Returns the regions (dp_label) and the compressed group of every pixel.
 */
export function clusterCentroids(centroids: Int32Array, D: ArrayLike<number>, H: number, W: number, thres = 2.5): { regions: Int32Array; groups: Int32Array; count: number } {
  const n = H * W;
  const weak = Uint8Array.from({ length: n }, (_, p) => (Math.fround(Math.sqrt(Math.fround(Math.fround(D[n + p]! * D[n + p]!) + Math.fround(D[p]! * D[p]!)))) < thres ? 1 : 0));
  const regions = connectedComponents(weak, H, W);
  const raw = Int32Array.from({ length: n }, (_, p) => regions[centroids[p]! * W + centroids[n + p]!]!);
  const present = [...new Set(raw)].sort((a, b) => a - b);
  const rank = new Map(present.map((v, k) => [v, k]));
  return { regions, groups: Int32Array.from(raw, (v) => rank.get(v)!), count: present.length };
}
