// The CPU parts of the Mask2Former loss: linearSumAssignment against brute force (every injection of the
// smaller side) on small random matrices, and the uncertainty top-k against a full sort.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { randomArray } from './helpers.ts';
import { linearSumAssignment } from '../src/models/mask2former/hungarian.ts';
import { topk } from '../src/models/mask2former/loss.ts';

/** The minimum summed cost over all assignments of min(rows, cols) pairs. */
function bruteForce(cost: Float32Array, rows: number, cols: number): number {
  const n = Math.min(rows, cols);
  const at = (i: number, j: number) => (rows <= cols ? cost[i * cols + j]! : cost[j * cols + i]!);
  const m = Math.max(rows, cols);
  let best = Infinity;
  const used = new Array<boolean>(m).fill(false);
  const visit = (i: number, acc: number) => {
    if (i === n) return void (best = Math.min(best, acc));
    for (let j = 0; j < m; j++) {
      if (used[j]) continue;
      used[j] = true;
      visit(i + 1, acc + at(i, j));
      used[j] = false;
    }
  };
  visit(0, 0);
  return best;
}

test('linearSumAssignment is optimal on random matrices (square, wide, tall, with ties)', () => {
  let seed = 1;
  for (const [rows, cols] of [[1, 1], [3, 3], [5, 5], [6, 6], [2, 7], [4, 6], [7, 3], [6, 1], [1, 5]] as const) {
    for (let rep = 0; rep < 8; rep++) {
      const cost = randomArray(rows * cols, seed++, -3, 3);
      // every other matrix rounded to a few values, so ties occur
      if (rep % 2) for (let k = 0; k < cost.length; k++) cost[k] = Math.round(cost[k]!);
      const [r, c] = linearSumAssignment(cost, rows, cols);
      const n = Math.min(rows, cols);
      assert.is(r.length, n);
      assert.ok(r.every((v, k) => k === 0 || v > r[k - 1]!), 'rows ascending');
      assert.is(new Set(c).size, n, 'columns distinct');
      const total = [...r].reduce((acc, i, k) => acc + cost[i * cols + c[k]!]!, 0);
      assert.ok(Math.abs(total - bruteForce(cost, rows, cols)) < 1e-9, `${rows}×${cols} rep ${rep}: cost ${total} vs optimum ${bruteForce(cost, rows, cols)}`);
    }
  }
});

test('linearSumAssignment rejects non-finite costs and wrong sizes', () => {
  assert.throws(() => linearSumAssignment([1, NaN], 1, 2), /cost\[0\]\[1\] is NaN/);
  assert.throws(() => linearSumAssignment([1, 2, 3], 2, 2), /3 costs for a 2×2/);
});

test('topk: the k largest, largest first, ties by lower index (against a full sort)', () => {
  for (const [n, k, seed] of [[50, 7, 1], [300, 192, 2], [10, 10, 3], [5, 0, 4]] as const) {
    // rounded values: many ties, some straddling the cut
    const values = Float64Array.from(randomArray(n, seed, -4, 4), (v) => Math.round(v * 2) / 2);
    const expected = [...values.keys()].sort((a, b) => values[b]! - values[a]! || a - b).slice(0, k);
    assert.equal(topk(values, k), expected, `n ${n} k ${k}`);
  }
});

test.run();
