// Harmonization data and measures: ShapeWorld pairs (the target is the scene as rendered, the composite differs
// only where the object is), sRGB ↔ Lab, Reinhard's transfer matching the background's Lab statistics, the
// iHarmony4 scores against hand-computed values.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import './helpers.ts';
import { generateScene, renderLayers, sampleScene } from '../src/world/scene.ts';
import { splitSeed } from '../src/world/splits.ts';
import { manualSeed } from '../src/engine/random-cpu.ts';
import { RainNet, harmonize } from '../src/models/rainnet.ts';
import { pctNetTask, rainNetPair, rainNetTask } from '../src/train/harmonizer.ts';
import { PCTNet, pctNetConfig } from '../src/models/pct_net.ts';
import { Trainer } from '../src/train/trainer.ts';
import { harmonizationPair, harmonizationScores, harmonizationTable, labToRgb, rainNetHarmonizer, reinhardHarmonize, rgbToLab } from '../src/pipeline/harmonize.ts';

test('ShapeWorld pairs: target = the scene as rendered, exact mask, the composite differs only where the object covers', () => {
  let changed = 0;
  for (let i = 0; i < 6; i++) {
    const p = harmonizationPair('val', i, 48);
    const scene = generateScene(splitSeed('val', i), { mode: 'single', width: 48 });
    p.target.forEach((v, k) => assert.ok(Math.abs(v - scene.image[k]!) <= 1, `pair ${i}: target byte ${k}`));
    assert.equal([...p.mask], [...scene.semantic].map((v) => (v !== 0 && v !== 255 ? 1 : 0)));
    const coverage = renderLayers(sampleScene(splitSeed('val', i), { mode: 'single', width: 48 })).objects[0]!.alpha;
    for (let q = 0; q < 48 * 48; q++) {
      const diff = [0, 1, 2].some((c) => p.composite[3 * q + c] !== p.target[3 * q + c]);
      if (diff) changed++;
      // only pixels the object covers (also below the mask's 0.5) take the other light
      if (diff) assert.ok(coverage[q]! > 0, `pair ${i}: pixel ${q} changed outside the object`);
    }
  }
  assert.ok(changed > 100, `${changed} object pixels lit differently`);
  assert.equal(harmonizationPair('val', 3, 48).composite, harmonizationPair('val', 3, 48).composite, 'deterministic');
});

test('sRGB ↔ Lab round trip; white and black', () => {
  const w = rgbToLab(255, 255, 255), k = rgbToLab(0, 0, 0);
  assert.ok(Math.abs(w[0] - 100) < 1e-3 && Math.abs(w[1]) < 1e-2 && Math.abs(w[2]) < 1e-2, `white ${w}`);
  assert.ok(Math.abs(k[0]) < 1e-9);
  for (let i = 0; i < 200; i++) {
    const rgb = [(i * 37) % 256, (i * 91) % 256, (i * 53) % 256] as const;
    const back = labToRgb(...rgbToLab(...rgb));
    back.forEach((v, c) => assert.ok(Math.abs(v - rgb[c]!) <= 1, `${rgb} → ${back}`));
  }
});

test('Reinhard: the object takes the background\'s Lab mean and std; the background stays; an empty region is an error', () => {
  const n = 40;
  const rgb = Uint8Array.from({ length: 3 * n }, (_, i) => (i < 60 ? 40 + ((i * 7) % 30) : 150 + ((i * 13) % 60)));
  const mask = Uint8Array.from({ length: n }, (_, p) => (p >= 20 ? 1 : 0));
  const out = reinhardHarmonize(rgb, mask);
  assert.equal([...out.subarray(0, 60)], [...rgb.subarray(0, 60)]);
  const stats = (bytes: Uint8Array, sel: number) => [0, 1, 2].map((c) => {
    const v = [...mask.keys()].filter((p) => mask[p] === sel).map((p) => rgbToLab(bytes[3 * p]!, bytes[3 * p + 1]!, bytes[3 * p + 2]!)[c]!);
    const mean = v.reduce((a, b) => a + b, 0) / v.length;
    return [mean, Math.sqrt(v.reduce((a, b) => a + (b - mean) ** 2, 0) / v.length)];
  });
  const [fg, bg] = [stats(out, 1), stats(rgb, 0)];
  fg.forEach(([m, s], c) => assert.ok(Math.abs(m! - bg[c]![0]!) < 1.5 && Math.abs(s! - bg[c]![1]!) < 1.5, `channel ${c}: ${m}, ${s} vs ${bg[c]}`));
  assert.throws(() => reinhardHarmonize(rgb, new Uint8Array(n)), /the mask has no object pixel/);
  assert.throws(() => reinhardHarmonize(rgb.subarray(0, 10), mask), /10 bytes for a 40-pixel mask/);
});

test('iHarmony4 scores: MSE over every value, fMSE over the object\'s, PSNR', () => {
  const target = new Uint8Array(12).fill(100);
  const result = Uint8Array.from(target);
  result[9] = 110; // pixel 3, red
  const s = harmonizationScores(result, target, Uint8Array.from([0, 0, 0, 1]));
  assert.is(s.mse, 100 / 12);
  assert.is(s.fmse, 100 / 3);
  assert.ok(Math.abs(s.psnr - 10 * Math.log10((255 * 255 * 12) / 100)) < 1e-9);
});

test('the table: one row per harmonizer, the mean of its scores over the pairs', async () => {
  const rows = await harmonizationTable({ none: (c) => c, target: async (c) => c }, 'val', [0, 1, 2], 32);
  const direct = [0, 1, 2].map((i) => {
    const p = harmonizationPair('val', i, 32);
    return harmonizationScores(p.composite, p.target, p.mask);
  });
  assert.ok(Math.abs(rows[0]!.fmse - direct.reduce((a, s) => a + s.fmse, 0) / 3) < 1e-9);
  assert.equal(rows.map((r) => r.method), ['none', 'target']);
});

test('RainNet trains on the pairs (L1 of the blended output falls on a fixed batch); only the object changes', async () => {
  manualSeed(1);
  const net = new RainNet({ inputNc: 3, outputNc: 3, ngf: 4 });
  const t = new Trainer(rainNetTask(net, { count: 2, size: 256 }), { steps: 6, batchSize: 2, lr: 2e-3, seed: 0 });
  await t.train();
  assert.ok(t.log.loss[5]! < t.log.loss[0]!, `L1 ${t.log.loss.map((l) => l.toFixed(4)).join(' ')}`);
  const p = rainNetPair('val', 0, 256);
  const [comp, mask] = [await p.comp.toArray(), await p.mask.toArray()];
  // blended: outside the mask the composite comes back unchanged
  const blended = await harmonize(net.eval().forward(p.comp, p.mask), p.comp, p.mask).toArray();
  blended.forEach((v, i) => {
    if (!mask[i % 65536]) assert.is(v, comp[i]);
  });
  // as a harmonizer at 64² (seen at 256²): only the object's pixels change, and they do change
  const q = harmonizationPair('val', 3, 64);
  const out = await rainNetHarmonizer(net)(q.composite, q.mask, 64, 64);
  let changed = 0;
  out.forEach((v, i) => {
    if (!q.mask[Math.floor(i / 3)]) assert.is(v, q.composite[i], `pixel ${Math.floor(i / 3)} outside the mask`);
    else if (v !== q.composite[i]) changed++;
  });
  assert.ok(changed > 0, 'the object is recoloured');
  assert.throws(() => rainNetHarmonizer(net)(q.composite, q.mask.subarray(0, 100), 64, 64), /RainNet harmonizer: the mask has 100 values, expected 64×64/);
  assert.throws(() => rainNetHarmonizer(net)(q.composite.subarray(0, 4096), q.mask, 64, 64), /the composite has 4096 bytes, expected 64×64×3 \(RGB\)/);
  t.optimizer.dispose();
  net.dispose();
});

test('PCT-Net (a narrow CNN) trains on the pairs: MaskWeightedMSE at both resolutions falls on a fixed batch', async () => {
  manualSeed(2);
  const net = new PCTNet(pctNetConfig({ ch: 8, depth: 3, batchnorm_from: 2, attend_from: 1 }));
  const t = new Trainer(pctNetTask(net, { count: 2, size: 32, low: 16 }), { steps: 8, batchSize: 2, lr: 3e-3, seed: 0 });
  await t.train();
  assert.ok(t.log.loss[7]! < t.log.loss[0]!, `loss ${t.log.loss.map((l) => l.toFixed(4)).join(' ')}`);
  t.optimizer.dispose();
  net.dispose();
});

test.run();
