// FOPA on ShapeWorld: dense placement labels from the world's plausibility, the training task (two-class cross
// entropy with balanced class weights) lowering its loss and resuming like every trainer, and the metrics.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import './helpers.ts';
import { manualSeed } from '../src/engine/random-cpu.ts';
import { ObPlaNet, obPlaNetConfig } from '../src/models/fopa.ts';
import { placementPlausibility } from '../src/world/scene.ts';
import { evaluatePlacement, fopaTask, placementSample, placementSheet } from '../src/train/fopa.ts';
import { Trainer } from '../src/train/trainer.ts';

test('placement samples: labels from the world\'s plausibility, deterministic, split-specific', () => {
  const a = placementSample('train', 3, { size: 32 });
  assert.equal(placementSample('train', 3, { size: 32 }).labels, a.labels);
  assert.not.equal(placementSample('val', 3, { size: 32 }).background.data, a.background.data);
  const p = 17 * 32 + 12;
  const want = placementPlausibility(a.backgroundSpec, a.classId, [12 - a.width / 2, 17 - a.height / 2, a.width, a.height], 32, 32);
  assert.ok(Math.abs(a.plausibility[p]! - want) < 1e-6);
  a.labels.forEach((l, i) => assert.is(l, a.plausibility[i]! >= 0.5 ? 1 : a.plausibility[i]! <= 0.1 ? 0 : 255));
  let both = 0;
  for (let i = 0; i < 20; i++) {
    const s = placementSample('train', i, { size: 32 });
    if (s.labels.includes(1) && s.labels.includes(0)) both++;
  }
  assert.ok(both >= 3, `${both} of 20 samples have plausible and implausible pixels`);
});

test('the FOPA task trains (loss falls on a fixed batch) and the metrics are in range', async () => {
  manualSeed(5);
  const net = new ObPlaNet(obPlaNetConfig({ widths: [8, 8, 16, 16] }));
  const t = new Trainer(fopaTask(net, { count: 4, size: 32 }), { steps: 8, batchSize: 4, lr: 3e-3, seed: 1 });
  await t.train();
  assert.ok(t.log.loss[7]! < t.log.loss[0]!, `loss ${t.log.loss.map((l) => l.toFixed(3)).join(' ')}`);
  const e = await evaluatePlacement(net, 'val', [0, 1, 2, 3, 4, 5], { size: 32 });
  assert.ok(e.fitting >= 1 && e.samples === 6, `${e.fitting} of 6 samples fit`);
  for (const k of ['f1', 'balancedAccuracy', 'top1', 'random', 'best'] as const) assert.ok(e[k] >= 0 && e[k] <= 1, `${k} ${e[k]}`);
  assert.ok(e.best >= e.top1 && e.best >= e.random, 'no placement beats the best');
  // the sheet: 2 rows of 4 panels, each 32² zoomed ×2, 2-pixel gaps; the first panel is the background itself
  const sheet = await placementSheet(net, 'val', [0, 1], { size: 32 });
  assert.equal([sheet.width, sheet.height], [4 * 64 + 3 * 2, 2 * 64 + 2]);
  const bg = placementSample('val', 0, { size: 32 }).background;
  assert.equal([sheet.data[0], sheet.data[1], sheet.data[2]], [bg.data[0], bg.data[1], bg.data[2]]);
  t.optimizer.dispose();
  net.dispose();
});

test.run();
