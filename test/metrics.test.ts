// Metrics against tiny cases worked out by hand.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { ConfusionMatrix } from '../src/metrics/miou.ts';
import { type MaskInstance, maskAp, maskIou } from '../src/metrics/maskAp.ts';
import { boundaryF, maskBoundary } from '../src/metrics/boundary.ts';
import { maskToRle, parseCoco, rleToMask } from '../src/data/coco.ts';

const fs = process.getBuiltinModule('node:fs');

const close = (a: number, b: number, what: string) => assert.ok(Math.abs(a - b) < 1e-12, `${what}: ${a} vs ${b}`);

test('mIoU: confusion matrix with an ignore label and an out-of-range prediction', () => {
  const cm = new ConfusionMatrix(3);
  // truth 0 0 1 1 255 | pred 0 1 1 1 0 : class 0 TP 1, FN 1; class 1 TP 2, FP 1; the 255 pixel is skipped
  cm.add([0, 1, 1, 1, 0], [0, 0, 1, 1, 255]);
  // second image: truth 2 2, pred 2 255 → class 2 TP 1 and one miss (255 is no class: FN, no FP)
  cm.add([2, 255], [2, 2]);
  const r = cm.result();
  close(r.iou[0]!, 1 / 2, 'IoU 0');
  close(r.iou[1]!, 2 / 3, 'IoU 1');
  close(r.iou[2]!, 1 / 2, 'IoU 2');
  close(r.miou, (1 / 2 + 2 / 3 + 1 / 2) / 3, 'mIoU');
  close(r.pixelAccuracy, 4 / 6, 'pixel accuracy');
  const absent = new ConfusionMatrix(4);
  absent.add([0, 1], [0, 1]);
  assert.ok(Number.isNaN(absent.result().iou[3]!), 'a class in neither is left out');
  close(absent.result().miou, 1, 'mean over present classes');
  assert.throws(() => cm.add([1], [1, 2], 'img7'), /img7: prediction has 1 pixels, truth 2/);
});

/** A 1×20 mask with pixels a..b (inclusive) set. */
const span = (a: number, b: number) => Uint8Array.from({ length: 20 }, (_, i) => (i >= a && i <= b ? 1 : 0));

test('mask AP: worked example with a false positive and a detection good only up to IoU 0.75', () => {
  close(maskIou(span(9, 17), span(10, 16)), 7 / 9, 'IoU');
  const truths: MaskInstance[] = [
    { imageId: 1, categoryId: 3, mask: span(0, 5) },
    { imageId: 1, categoryId: 3, mask: span(10, 16) },
  ];
  const preds: MaskInstance[] = [
    { imageId: 1, categoryId: 3, mask: span(0, 5), score: 0.9 }, // IoU 1 with the first truth
    { imageId: 1, categoryId: 3, mask: span(6, 9), score: 0.8 }, // touches no truth: false positive
    { imageId: 1, categoryId: 3, mask: span(9, 17), score: 0.7 }, // IoU 7/9 ≈ 0.778 with the second
    { imageId: 2, categoryId: 5, mask: span(0, 3), score: 0.95 }, // a class without truth: not counted
  ];
  // thresholds .50–.75: TP, FP, TP → precision 1, 1/2, 2/3 at recall 1/2, 1/2, 1; made monotone 1, 2/3, 2/3:
  // the 51 recall points 0..0.50 read 1, the 50 points 0.51..1 read 2/3 → (51 + 50·2/3)/101 = 253/303.
  // thresholds .80–.95: TP, FP, FP → recall stays 1/2: 51 points read 1, the rest 0 → 51/101.
  const r = maskAp(preds, truths);
  close(r.ap50, 253 / 303, 'AP50');
  close(r.ap75, 253 / 303, 'AP75');
  close(r.ap, (6 * (253 / 303) + 4 * (51 / 101)) / 10, 'AP');
  assert.equal([...r.perClass.keys()], [3]);
  // a higher score on the false positive pushes it first: thresholds .50–.75 give FP, TP, TP → precision
  // 0, 1/2, 2/3 at recall 0, 1/2, 1 → monotone 2/3 everywhere → AP50 = 2/3
  const swapped = preds.map((p, k) => (k === 1 ? { ...p, score: 0.99 } : p));
  close(maskAp(swapped, truths).ap50, 2 / 3, 'AP50 with the false positive first');
  // no prediction at all: 0; the perfect prediction: 1
  close(maskAp([], truths).ap, 0, 'no predictions');
  close(maskAp(truths.map((t) => ({ ...t, score: 1 })), truths).ap, 1, 'perfect');
});

test('mask AP: a detection matches at most one truth, a truth at most one detection', () => {
  const truths: MaskInstance[] = [{ imageId: 'a', categoryId: 1, mask: span(0, 9) }];
  // two identical detections of one object: the second is a false positive → precision 1, 1/2 at recall 1, 1
  const preds: MaskInstance[] = [
    { imageId: 'a', categoryId: 1, mask: span(0, 9), score: 0.9 },
    { imageId: 'a', categoryId: 1, mask: span(0, 9), score: 0.8 },
  ];
  close(maskAp(preds, truths).ap, 1, 'the duplicate ranks below the full recall');
  // the duplicate ranked first in another image order makes no difference: still recall 1 at precision 1
  const lowFirst: MaskInstance[] = [{ ...preds[1]!, score: 0.95 }, preds[0]!];
  close(maskAp(lowFirst, truths).ap, 1, 'either duplicate can match');
});

test('boundary F: outlines, a one-pixel shift with and without tolerance, empty masks', () => {
  const square = (x0: number) => Uint8Array.from({ length: 64 }, (_, p) => (p % 8 >= x0 && p % 8 < x0 + 4 && Math.floor(p / 8) >= 2 && Math.floor(p / 8) < 6 ? 1 : 0));
  const b = maskBoundary(square(2), 8, 8);
  assert.is(b.reduce((a, v) => a + v, 0), 12, 'a 4×4 square has 12 outline pixels');
  assert.is(b[3 * 8 + 3], 0, 'inner pixels are not outline');
  const full = new Uint8Array(64).fill(1);
  assert.is(maskBoundary(full, 8, 8).reduce((a, v) => a + v, 0), 0, 'the image border is no outline');
  // shifted right by one: every outline pixel of either is within 1 px of the other's outline
  assert.equal(boundaryF(square(3), square(2), 8, 8, 1), { precision: 1, recall: 1, f: 1 });
  // exact matching only (tolerance 0): of 12 outline pixels, the top and bottom rows share 3 each → 6/12
  assert.equal(boundaryF(square(3), square(2), 8, 8, 0), { precision: 0.5, recall: 0.5, f: 0.5 });
  assert.equal(boundaryF(new Uint8Array(64), new Uint8Array(64), 8, 8), { precision: 1, recall: 1, f: 1 });
  assert.is(boundaryF(new Uint8Array(64), square(2), 8, 8).f, 0);
});

test('mask AP and RLE strings agree with pycocotools on perturbed ShapeWorld predictions (test/fixtures/coco-eval)', () => {
  // truth.json: 12 val scenes at 32×32; results.json: shifted, holed, relabelled, duplicated and false masks
  // with scores; expected.json: what pycocotools 2.0.11 computed from them (see the folder's README.md).
  const dir = 'test/fixtures/coco-eval';
  const read = (f: string) => fs.readFileSync(`${dir}/${f}`, 'utf8');
  const truth = parseCoco(read('truth.json'), 'truth.json');
  const results = parseCoco(read('results.json'), 'results.json');
  const expected = JSON.parse(read('expected.json')) as { ap: number; ap50: number; ap75: number; perClass: Record<string, number>; rle: { mask_rows: number[][]; counts: string }[] };
  const toInstances = (anns: typeof truth.annotations): MaskInstance[] => anns.map((a) => ({ imageId: a.image_id, categoryId: a.category_id, score: a.score, mask: rleToMask(a.segmentation) }));
  const r = maskAp(toInstances(results.annotations), toInstances(truth.annotations));
  close(r.ap, expected.ap, 'AP');
  close(r.ap50, expected.ap50, 'AP50');
  close(r.ap75, expected.ap75, 'AP75');
  assert.equal([...r.perClass.keys()].map(String), Object.keys(expected.perClass));
  for (const [c, v] of r.perClass) close(v, expected.perClass[String(c)]!, `class ${c}`);
  for (const { mask_rows: rows, counts } of expected.rle) {
    assert.is(maskToRle(rows.flat(), rows[0]!.length, rows.length).counts, counts);
  }
});

test.run();
