// Post-processing: semantic maps against a plain CPU computation on the conformance predictions, and
// instance segmentation on a hand-made prediction whose answer is known.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { conformance } from './helpers.ts';
import { Tensor } from '../src/engine/tensor.ts';
import { instanceSegmentation, semanticSegmentation } from '../src/models/mask2former/postprocess.ts';

test('semanticSegmentation matches Σ_q softmax(class)·sigmoid(mask), argmax over classes (CPU loops)', async () => {
  const io = conformance('mask2former');
  const cls = io.get('class_queries_logits');
  const masks = io.get('masks_queries_logits');
  const [B, Q, K1] = cls.shape as [number, number, number];
  const [, , H, W] = masks.shape as [number, number, number, number];
  const seg = semanticSegmentation({ classQueriesLogits: cls, masksQueriesLogits: masks });
  assert.equal([...seg.shape], [B, H, W]);
  assert.is(seg.dtype, 'i32');
  const ours = await seg.toArray();
  const c = await cls.toArray();
  const m = await masks.toArray();
  let compared = 0;
  for (let b = 0; b < B; b++) {
    const probs = Array.from({ length: Q }, (_, q) => {
      const row = Array.from(c.subarray((b * Q + q) * K1, (b * Q + q + 1) * K1));
      const mx = Math.max(...row);
      const e = row.map((v) => Math.exp(v - mx));
      const z = e.reduce((x, y) => x + y, 0);
      return e.map((v) => v / z);
    });
    for (let p = 0; p < H * W; p++) {
      const score = Array.from({ length: K1 - 1 }, (_, k) => probs.reduce((acc, pr, q) => acc + pr[k]! / (1 + Math.exp(-m[(b * Q + q) * H * W + p]!)), 0));
      const sorted = [...score].sort((x, y) => y - x);
      if (sorted[0]! - sorted[1]! < 1e-5) continue; // a near-tie may go either way in float32
      assert.is(ours[b * H * W + p], score.indexOf(sorted[0]!), `image ${b} pixel ${p}`);
      compared++;
    }
  }
  assert.ok(compared > 0.9 * B * H * W);
  // in blocks of 7 pixels (5 classes × 7 × 4 bytes): the same map
  const blocked = semanticSegmentation({ classQueriesLogits: cls, masksQueriesLogits: masks }, undefined, 140);
  assert.equal([...(await blocked.toArray())], [...ours]);
  const big = semanticSegmentation({ classQueriesLogits: cls, masksQueriesLogits: masks }, [40, 24]);
  assert.equal([...big.shape], [B, 40, 24]);
});

test('instanceSegmentation: best (query, class) pairs, mask score, threshold, best segment per pixel', async () => {
  // 3 queries, 2 classes (+ no-object), 2×4 masks
  const cls = Tensor.fromArray([
    6, 0, 0, // query 0: class 0
    0, 5, 0, // query 1: class 1
    0, 0, 8, // query 2: no object
  ], [1, 3, 3]);
  const masks = Tensor.fromArray([
    4, 4, -4, -4, 4, 4, -4, -4, // query 0: left half
    -4, 4, 4, 4, -4, -4, -4, -4, // query 1: top right three
    4, 4, 4, 4, 4, 4, 4, 4,
  ], [1, 3, 2, 4]);
  const [r] = await instanceSegmentation({ classQueriesLogits: cls, masksQueriesLogits: masks }, { threshold: 0.5 });
  assert.equal(r!.segments.map((s) => s.labelId), [0, 1]);
  const p0 = Math.exp(6) / (Math.exp(6) + 2);
  const sig4 = 1 / (1 + Math.exp(-4));
  assert.ok(Math.abs(r!.segments[0]!.score - p0 * sig4) < 1e-5);
  // query 0 (higher score) keeps pixel 1, which both cover
  assert.equal([...r!.segmentation], [0, 0, 1, 1, 0, 0, -1, -1]);
});

test.run();
