// Exact minimum-cost bipartite assignment on the CPU (the Hungarian method with potentials, O(n²·m)), the
// result scipy.optimize.linear_sum_assignment gives: as many pairs as the smaller side, rows ascending.

/**
 * Solves the assignment for a rows×cols cost matrix (row-major). Returns [rowIndices, colIndices] of
 * min(rows, cols) pairs with the rows ascending, minimising the summed cost.
 */
export function linearSumAssignment(cost: ArrayLike<number>, rows: number, cols: number): [Int32Array, Int32Array] {
  if (cost.length !== rows * cols) throw new Error(`linearSumAssignment: ${cost.length} costs for a ${rows}×${cols} matrix`);
  for (let k = 0; k < cost.length; k++) {
    if (!Number.isFinite(cost[k]!)) throw new Error(`linearSumAssignment: cost[${Math.floor(k / cols)}][${k % cols}] is ${cost[k]} (costs must be finite)`);
  }
  // the method assigns every row of an n×m matrix with n <= m: transpose when there are more rows
  const transposed = rows > cols;
  const n = transposed ? cols : rows;
  const m = transposed ? rows : cols;
  const a = (i: number, j: number) => (transposed ? cost[j * cols + i]! : cost[i * cols + j]!);
  const u = new Float64Array(n + 1);
  const v = new Float64Array(m + 1);
  const match = new Int32Array(m + 1); // match[j] = row (1-based) assigned to column j, 0 if none
  const way = new Int32Array(m + 1);
  for (let i = 1; i <= n; i++) {
    match[0] = i;
    let j0 = 0;
    const minv = new Float64Array(m + 1).fill(Infinity);
    const used = new Uint8Array(m + 1);
    do {
      used[j0] = 1;
      const i0 = match[j0]!;
      let delta = Infinity;
      let j1 = 0;
      for (let j = 1; j <= m; j++) {
        if (used[j]) continue;
        const cur = a(i0 - 1, j - 1) - u[i0]! - v[j]!;
        if (cur < minv[j]!) {
          minv[j] = cur;
          way[j] = j0;
        }
        if (minv[j]! < delta) {
          delta = minv[j]!;
          j1 = j;
        }
      }
      for (let j = 0; j <= m; j++) {
        if (used[j]) {
          u[match[j]!] += delta;
          v[j] -= delta;
        } else {
          minv[j] -= delta;
        }
      }
      j0 = j1;
    } while (match[j0] !== 0);
    do {
      const j1 = way[j0]!;
      match[j0] = match[j1]!;
      j0 = j1;
    } while (j0);
  }
  const pairs: [number, number][] = [];
  for (let j = 1; j <= m; j++) {
    if (match[j]) pairs.push(transposed ? [j - 1, match[j]! - 1] : [match[j]! - 1, j - 1]);
  }
  pairs.sort((p, q) => p[0] - q[0]);
  return [Int32Array.from(pairs, (p) => p[0]), Int32Array.from(pairs, (p) => p[1])];
}
