// FOPA trained on ShapeWorld, densely: ShapeWorld knows how plausible every placement is
// (`placementPlausibility`: the class's affinity to the background kind, the perspective prior on its size
// and position, its aspect, how much of it stays inside the picture), so every heat-map pixel of every scale gets
// a label, not only a few annotated points as on OPA. A sample: a ShapeWorld background (no objects), an object
// rendered alone and cut out (mostly of a class that can stand there), one of the release's 16 scales; the target at each pixel is 1 where
// the box centred there is plausible (≥ `positive`), 0 where it is not (≤ `negative`), 255 (ignored) between.
// The loss is the release's two-class cross entropy, with class weights balancing the two.

import { seededRandom, subSeed } from '../engine/random-cpu.ts';
import { Tensor, tidy } from '../engine/tensor.ts';
import { type Image, heatmapToImage, sideBySide, stacked } from '../io/image.ts';
import { composeLayers, placeCutout } from '../pipeline/compose.ts';
import { vocColorImage } from '../data/voc.ts';
import { zoomImage } from '../world/contact.ts';
import { crossEntropy } from '../kernels/loss.ts';
import { concat } from '../kernels/shape.ts';
import { type ObPlaNet, fopaInputs } from '../models/fopa.ts';
import { type Cutout, fopaScales, placementHeatmaps, scaledForeground, scaledSize, topPlacements } from '../pipeline/placement.ts';
import { classes } from '../world/classes.ts';
import { placementPlausibility, renderLayers, sampleScene } from '../world/scene.ts';
import { drawWeighted } from '../pipeline/thesaurus.ts';
import type { BackgroundSpec } from '../world/background.ts';
import { type Split, splitSeed } from '../world/splits.ts';
import type { Batch, TrainTask } from './trainer.ts';

export interface PlacementSample {
  background: Image;
  backgroundSpec: Pick<BackgroundSpec, 'kind' | 'horizon'>;
  classId: number;
  cut: Cutout;
  scale: number;
  /** The object's size at that scale, pixels. */
  width: number;
  height: number;
  canvas: Image;
  mask: Image;
  /** size·size plausibility of the box centred at each pixel. */
  plausibility: Float32Array;
  /** size·size: 1 plausible, 0 implausible, 255 ignored. */
  labels: Uint8Array;
}

export interface PlacementLabelOptions {
  size?: number;
  positive?: number;
  negative?: number;
}

const toBytes = (levels: Float32Array) => Uint8Array.from(levels, (v) => Math.round(Math.min(255, Math.max(0, v))));

/** The object of a ShapeWorld single-object scene rendered alone, cropped to its coverage. */
function worldCutout(seed: number, size: number): { classId: number; cut: Cutout } {
  const spec = sampleScene(seed, { mode: 'single', width: size });
  const o = renderLayers(spec).objects[0]!;
  let [x0, y0, x1, y1] = [size, size, 0, 0];
  o.alpha.forEach((a, p) => {
    if (a <= 0) return;
    const x = p % size, y = Math.floor(p / size);
    [x0, y0, x1, y1] = [Math.min(x0, x), Math.min(y0, y), Math.max(x1, x + 1), Math.max(y1, y + 1)];
  });
  const [w, h] = [x1 - x0, y1 - y0];
  const rgb = toBytes(o.rgb);
  const image = new Uint8Array(w * h * 3), mask = new Uint8Array(w * h);
  for (let y = 0; y < h; y++) {
    for (let x = 0; x < w; x++) {
      const p = (y0 + y) * size + x0 + x, q = y * w + x;
      mask[q] = Math.round(255 * o.alpha[p]!);
      for (let c = 0; c < 3; c++) image[3 * q + c] = rgb[3 * p + c]!;
    }
  }
  return { classId: o.classId, cut: { image: { width: w, height: h, channels: 3, data: image }, mask } };
}

/** Placement sample `index` of `split`: everything follows from the split's seed of that index. */
export function placementSample(split: Split, index: number, { size = 64, positive = 0.5, negative = 0.1 }: PlacementLabelOptions = {}): PlacementSample {
  const seed = splitSeed(split, index);
  const rand = seededRandom(subSeed(seed, 0x464f5041));
  const spec = sampleScene(seed, { mode: 'single', width: size });
  const background: Image = { width: size, height: size, channels: 3, data: toBytes(renderLayers(spec).background) };
  // the object's class: three times in four one that can stand on this background (by its affinity), else any
  // class (all-implausible samples teach the class term); ShapeWorld's single mode draws class (seed mod n)
  const fitting = classes.map((c, k) => ({ k, weight: c.affinity[spec.background.kind] ?? 0 })).filter((c) => c.weight > 0);
  const total = fitting.reduce((a, c) => a + c.weight, 0);
  const k = rand() < 0.75 && fitting.length ? drawWeighted(fitting.map((c) => ({ ...c, weight: c.weight / total })), rand).k : Math.floor(rand() * classes.length);
  const n = classes.length, start = splitSeed(split, 0);
  const fgIndex = n * Math.floor(rand() * Math.floor(10_000 / n)) + (((k - start) % n) + n) % n;
  const { classId, cut } = worldCutout(splitSeed(split, fgIndex), size);
  const usable = fopaScales.filter((s) => scaledSize(size, size, cut.image.width, cut.image.height, s).every((d) => d >= 1));
  const scale = usable[Math.floor(rand() * usable.length)]!;
  const f = scaledForeground(size, size, cut, scale);
  const plausibility = new Float32Array(size * size);
  const labels = new Uint8Array(size * size);
  for (let y = 0; y < size; y++) {
    for (let x = 0; x < size; x++) {
      const p = placementPlausibility(spec.background, classId, [x - f.width / 2, y - f.height / 2, f.width, f.height], size, size);
      plausibility[y * size + x] = p;
      labels[y * size + x] = p >= positive ? 1 : p <= negative ? 0 : 255;
    }
  }
  return { background, backgroundSpec: spec.background, classId, cut, scale, width: f.width, height: f.height, canvas: f.canvas, mask: f.mask, plausibility, labels };
}

/** The trainer's task: `count` samples of the train split (generated when a batch needs them). */
export function fopaTask(net: ObPlaNet, { count, size = 64, ...labels }: PlacementLabelOptions & { count: number }): TrainTask {
  // class weights balancing plausible and implausible pixels, measured on the first samples
  let [pos, neg] = [0, 0];
  for (let i = 0; i < Math.min(count, 64); i++) {
    for (const v of placementSample('train', i, { size, ...labels }).labels) {
      if (v === 1) pos++;
      else if (v === 0) neg++;
    }
  }
  const weights = [0.5 / Math.max(neg / (pos + neg), 1e-3), 0.5 / Math.max(pos / (pos + neg), 1e-3)];
  return {
    kind: 'fopa',
    model: net,
    size: count,
    metadata: () => ({ count: String(count), size: String(size), labels: JSON.stringify(labels), class_weights: JSON.stringify(weights), config: JSON.stringify(net.config) }),
    loss: async (b: Batch) => tidy(() => {
      const samples = b.indices.map((i) => placementSample('train', i, { size, ...labels }));
      const inputs = samples.map((s) => fopaInputs(s.background, s.canvas, s.mask, size));
      const cat = (k: 'bg' | 'fg' | 'mask') => concat(inputs.map((x) => x[k]), 0);
      const { out } = net.forward(cat('bg'), cat('fg'), cat('mask'));
      const target = Tensor.fromArray(Int32Array.from(samples.flatMap((s) => [...s.labels])), [samples.length, size, size], 'i32');
      return crossEntropy(out, target, { weight: Tensor.fromArray(Float32Array.from(weights)), ignoreIndex: 255 });
    }),
  };
}

export interface PlacementEvaluation {
  /** Pixels labelled plausible / implausible, predicted plausible where the heat map is ≥ 0.5. */
  f1: number;
  balancedAccuracy: number;
  /** Over the samples whose class can stand on their background at all (best > 0): mean plausibility of the heat map's best placement, of a random placement, and of the best there is. */
  top1: number;
  random: number;
  best: number;
  samples: number;
  /** How many samples have a plausible placement (the others' classes do not fit their background). */
  fitting: number;
}

/**
 * FOPA's metrics on held-out ShapeWorld samples of `split`: F1 and balanced accuracy at the sample's own scale,
 * and the release's search (16 scales, border zeroed) judged by the truth: the plausibility of its top-1
 * placement against a random placement (random scale, random centre with the box inside) and the best one.
 */
export async function evaluatePlacement(net: ObPlaNet, split: Split, indices: readonly number[], { size = 64, ...labels }: PlacementLabelOptions = {}): Promise<PlacementEvaluation> {
  let [tp, fp, fn, tn] = [0, 0, 0, 0];
  let [top1, random, best, fitting] = [0, 0, 0, 0];
  for (const i of indices) {
    const s = placementSample(split, i, { size, ...labels });
    const maps = await placementHeatmaps(net, s.background, s.cut, { size });
    const own = maps.find((m) => m.scale === s.scale);
    if (own) {
      own.heat.forEach((h, p) => {
        const l = s.labels[p];
        if (l === 255) return;
        const predicted = h >= 0.5;
        if (l === 1) predicted ? tp++ : fn++;
        else predicted ? fp++ : tn++;
      });
    }
    const judge = (box: readonly number[]) => placementPlausibility(s.backgroundSpec, s.classId, box as [number, number, number, number], size, size);
    let bestHere = 0;
    for (const mm of maps) for (let y = 0; y < size; y++) for (let x = 0; x < size; x++) bestHere = Math.max(bestHere, judge([x - mm.width / 2, y - mm.height / 2, mm.width, mm.height]));
    if (bestHere === 0) continue;
    fitting++;
    best += bestHere;
    const chosen = topPlacements(maps, size, size, 1)[0];
    top1 += chosen ? judge(chosen.box) : 0;
    const rand = seededRandom(subSeed(splitSeed(split, i), 0x52414e44));
    const m = maps[Math.floor(rand() * maps.length)]!;
    const cx = m.width / 2 + rand() * (size - m.width), cy = m.height / 2 + rand() * (size - m.height);
    random += judge([cx - m.width / 2, cy - m.height / 2, m.width, m.height]);
  }
  const n = Math.max(fitting, 1);
  const precision = tp / Math.max(tp + fp, 1), recall = tp / Math.max(tp + fn, 1);
  return {
    f1: precision + recall > 0 ? (2 * precision * recall) / (precision + recall) : 0,
    balancedAccuracy: 0.5 * (tp / Math.max(tp + fn, 1) + tn / Math.max(tn + fp, 1)),
    top1: top1 / n, random: random / n, best: best / n, samples: indices.length, fitting,
  };
}

/**
 * What FOPA does, for a person to look at: one row per held-out sample of `split`: the background | the heat map
 * of the scale the search picked | the composite with the top-1 placement | its class mask (VOC colours), ×2.
 */
export async function placementSheet(net: ObPlaNet, split: Split, indices: readonly number[], { size = 64 }: { size?: number } = {}): Promise<Image> {
  const rows: Image[] = [];
  for (const i of indices) {
    const s = placementSample(split, i, { size });
    const maps = await placementHeatmaps(net, s.background, s.cut, { size });
    const chosen = topPlacements(maps, size, size, 1)[0];
    const heat = Tensor.fromArray(maps.find((m) => m.scale === chosen?.scale)?.heat ?? new Float32Array(size * size), [size, size]);
    const heatImage = await heatmapToImage(heat);
    heat.dispose();
    const c = composeLayers(size, size, { image: s.background.data as Uint8Array }, chosen ? [placeCutout(s.cut, s.classId, chosen.box, size, size)] : []);
    rows.push(sideBySide([s.background, heatImage, { width: size, height: size, channels: 3 as const, data: c.image }, vocColorImage(c.semantic, size, size)].map((p) => zoomImage(p, 2))));
  }
  return stacked(rows);
}
