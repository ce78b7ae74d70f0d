// The release's placement search on a small random FOPA: the aspect rule, the centred canvas, one heat map per
// scale with the border zeroed, batched = one scale at a time, the top-50 ranking as boxes, seeded draws, and the
// error when no location is left.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import './helpers.ts';
import { manualSeed } from '../src/engine/random-cpu.ts';
import type { Image } from '../src/io/image.ts';
import { ObPlaNet, obPlaNetConfig } from '../src/models/fopa.ts';
import { type Cutout, fopaScales, placeObject, placementHeatmaps, randomPlacement, samplePlacement, scaledForeground, scaledSize, topPlacements } from '../src/pipeline/placement.ts';

const bg: Image = { width: 48, height: 32, channels: 3, data: Uint8Array.from({ length: 48 * 32 * 3 }, (_, i) => (i * 37) % 256) };
// a 10×20 object: an ellipse mask over a gradient
const cut: Cutout = {
  image: { width: 10, height: 20, channels: 3, data: Uint8Array.from({ length: 600 }, (_, i) => 50 + (i % 150)) },
  mask: Uint8Array.from({ length: 200 }, (_, p) => ((p % 10 - 4.5) / 5) ** 2 + ((Math.floor(p / 10) - 9.5) / 10) ** 2 <= 1 ? 255 : 0),
};

test('the release\'s scales and aspect rule; the foreground centred on a black canvas, unmasked pixels black', () => {
  assert.equal(fopaScales.length, 16);
  assert.ok(Math.abs(fopaScales[7]! - 8 / 18) < 1e-15);
  assert.equal(scaledSize(48, 32, 10, 20, 0.5), [8, 16], 'taller than the background: the height binds');
  assert.equal(scaledSize(48, 32, 30, 10, 0.5), [24, 8], 'wider: the width binds');
  const f = scaledForeground(48, 32, cut, 0.5);
  assert.equal([f.width, f.height, f.left, f.top], [8, 16, 20, 8]);
  assert.is(f.canvas.data[3 * (0 * 48 + 0)], 0, 'outside the object: black');
  assert.ok(f.mask.data[(8 + 8) * 48 + 24]! > 127, 'the centre is inside the mask');
  assert.is(f.mask.data[(8 + 0) * 48 + 20], 0, 'a corner of the box is outside the ellipse');
  assert.throws(() => scaledForeground(48, 32, { ...cut, mask: new Uint8Array(3) }, 0.5), /the mask has 3 values for a 10×20 foreground/);
});

test('heat maps per scale: border zeroed, batched equals one at a time; top 50 ranked; seeded draws; no location → error', async () => {
  manualSeed(3);
  const net = new ObPlaNet(obPlaNetConfig({ widths: [8, 8, 16, 16] })).eval();
  const size = 32;
  const maps = await placementHeatmaps(net, bg, cut, { size });
  assert.equal(maps.map((m) => m.scale), fopaScales.slice(1), 'scale 1/18 (under a pixel wide) is skipped');
  const one = await placementHeatmaps(net, bg, cut, { size, batch: 1 });
  maps.forEach((m, i) => m.heat.forEach((v, p) => assert.ok(Math.abs(v - one[i]!.heat[p]!) < 1e-5, `scale ${i} pixel ${p}: ${v} vs ${one[i]!.heat[p]}`)));
  for (const m of maps) {
    const hb = Math.trunc((m.height / 32) * size / 2), wb = Math.trunc((m.width / 48) * size / 2);
    for (let y = 0; y < size; y++) {
      for (let x = 0; x < size; x++) {
        const inside = y >= hb && y < size - hb && x >= wb && x < size - wb;
        if (!inside) assert.is(m.heat[y * size + x], 0, `scale ${m.scale}: (${x}, ${y}) is in the border`);
        else assert.ok(m.heat[y * size + x]! > 0 && m.heat[y * size + x]! < 1);
      }
    }
  }
  const top = topPlacements(maps, 48, 32);
  assert.is(top.length, 50);
  top.forEach((c, i) => i && assert.ok(c.score <= top[i - 1]!.score, 'best first'));
  const best = top[0]!;
  const m = maps.find((x) => x.scale === best.scale)!;
  assert.is(Math.max(...maps.flatMap((x) => [...x.heat])), best.score);
  assert.equal([best.box[2], best.box[3]], [m.width, m.height]);
  assert.equal(samplePlacement(top, 5), samplePlacement(top, 5));
  assert.ok(new Set([1, 2, 3, 4, 5, 6].map((s) => samplePlacement(top, s)!.box.join())).size > 1, 'seeds draw different placements');
  assert.is(samplePlacement([], 1), undefined);
  const placed = await placeObject(net, bg, cut, 7, { size });
  assert.ok(top.some((c) => c.box.join() === placed.box.join()));
  const error = await placeObject(net, bg, cut, 7, { size, scales: [1], what: 'the boat' }).then(() => '', (e: Error) => e.message);
  assert.match(error, /no location on the 48×32 background can hold the boat at any scale/);
  net.dispose();
});

test('random placement (the control): a usable scale, the box inside the background, seeded, every scale reached', () => {
  const cut: Cutout = { image: { width: 10, height: 20, channels: 3, data: new Uint8Array(600) }, mask: new Uint8Array(200).fill(255) };
  const scales = new Set<number>();
  for (let seed = 0; seed < 400; seed++) {
    const p = randomPlacement(64, 48, cut, seed);
    assert.ok(fopaScales.includes(p.scale));
    const [w, h] = scaledSize(64, 48, 10, 20, p.scale);
    assert.equal([p.box[2], p.box[3]], [w, h]);
    assert.ok(p.box[0] >= 0 && p.box[1] >= 0 && p.box[0] + w <= 64 && p.box[1] + h <= 48, `box ${p.box} inside`);
    assert.ok(Number.isNaN(p.score));
    scales.add(p.scale);
  }
  assert.is(scales.size, fopaScales.filter((s) => scaledSize(64, 48, 10, 20, s).every((d) => d >= 1)).length);
  assert.equal(randomPlacement(64, 48, cut, 7), randomPlacement(64, 48, cut, 7));
  const speck: Cutout = { image: { width: 1, height: 200, channels: 3, data: new Uint8Array(600) }, mask: new Uint8Array(200).fill(255) };
  assert.throws(() => randomPlacement(8, 8, speck, 0), /under a pixel at every scale/);
});

test.run();
