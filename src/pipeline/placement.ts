// Where and how large an object may go, as the Free-Mask / FOPA release searches it: the foreground at 16
// scales s = i/18 (i = 1..16) of the background, sized by the release's aspect rule and centred on a black
// background-sized canvas; FOPA's heat map per scale (one batched forward); locations nearer the border than
// half the object zeroed; every (scale, y, x) ranked, the top 50 kept and one drawn with a seeded generator.

import { noGrad } from '../engine/autograd.ts';
import { tidy } from '../engine/tensor.ts';
import { deviceInfo } from '../engine/device.ts';
import { seededRandom } from '../engine/random-cpu.ts';
import { softmax } from '../kernels/softmax.ts';
import { concat } from '../kernels/shape.ts';
import { type Image, pilResize } from '../io/image.ts';
import { type ObPlaNet, fopaInputs } from '../models/fopa.ts';

/** The release's 16 foreground scales: i / 18 for i = 1..16. */
export const fopaScales: readonly number[] = Array.from({ length: 16 }, (_, k) => (k + 1) / 18);

/** An object cut from its image: RGB pixels and an 8-bit alpha mask of the same size. */
export interface Cutout {
  image: Image;
  /** width·height alpha values 0..255. */
  mask: Uint8Array;
}

/** The release's size of a foreground at `scale` of a background: fit the axis that binds, keep the aspect. */
export function scaledSize(bgW: number, bgH: number, fgW: number, fgH: number, scale: number): [number, number] {
  if (fgH / fgW > bgH / bgW) {
    const h = Math.trunc(bgH * scale);
    return [Math.trunc((h / fgH) * fgW), h];
  }
  const w = Math.trunc(bgW * scale);
  return [w, Math.trunc((w / fgW) * fgH)];
}

/**
 * The foreground at `scale`, centred on a black canvas of the background's size, and its mask likewise (pixels
 * whose alpha is ≤ 127 blacked out first, as libcom does). Resized with Pillow's bilinear filter (the release
 * uses Pillow's default, bicubic; the difference is a pixel's blur at the object's edge).
 */
export function scaledForeground(bgW: number, bgH: number, cut: Cutout, scale: number): { canvas: Image; mask: Image; width: number; height: number; left: number; top: number } {
  const { width: fw, height: fh } = cut.image;
  if (cut.mask.length !== fw * fh) throw new Error(`scaledForeground: the mask has ${cut.mask.length} values for a ${fw}×${fh} foreground`);
  const [w, h] = scaledSize(bgW, bgH, fw, fh, scale);
  if (w < 1 || h < 1) throw new Error(`scaledForeground: the foreground (${fw}×${fh}) at scale ${scale.toFixed(3)} of ${bgW}×${bgH} is smaller than a pixel`);
  const filled = new Uint8Array(fw * fh * 3);
  for (let p = 0; p < fw * fh; p++) if (cut.mask[p]! > 127) for (let c = 0; c < 3; c++) filled[3 * p + c] = cut.image.data[p * cut.image.channels + c]!;
  const fg = pilResize({ width: fw, height: fh, channels: 3, data: filled }, w, h, 'bilinear');
  const alpha = pilResize({ width: fw, height: fh, channels: 1, data: cut.mask }, w, h, 'bilinear');
  const top = Math.trunc((bgH - h) / 2), left = Math.trunc((bgW - w) / 2);
  const canvas = new Uint8Array(bgW * bgH * 3), mask = new Uint8Array(bgW * bgH);
  for (let y = 0; y < h; y++) {
    for (let x = 0; x < w; x++) {
      const [ty, tx] = [top + y, left + x];
      if (ty < 0 || tx < 0 || ty >= bgH || tx >= bgW) continue;
      mask[ty * bgW + tx] = alpha.data[y * w + x]!;
      for (let c = 0; c < 3; c++) canvas[3 * (ty * bgW + tx) + c] = fg.data[3 * (y * w + x) + c]!;
    }
  }
  return { canvas: { width: bgW, height: bgH, channels: 3, data: canvas }, mask: { width: bgW, height: bgH, channels: 1, data: mask }, width: w, height: h, left, top };
}

export interface ScaleHeatmap {
  scale: number;
  /** The object's size at this scale, background pixels. */
  width: number;
  height: number;
  /** size·size plausibility (softmax channel 1) over the resized background, border zeroed. */
  heat: Float32Array;
}

export interface PlacementOptions {
  /** The network's input size (the release: 256). */
  size?: number;
  scales?: readonly number[];
  /** Scales per forward (default: all at once, or as many as the device's largest buffer holds). */
  batch?: number;
}

/**
 * FOPA's heat map of `cut` on `bg` at every scale, each with the border the object would cross zeroed. Scales at
 * which the object would be under a pixel wide or high are skipped (the release would fail resizing to 0).
 */
export async function placementHeatmaps(net: ObPlaNet, bg: Image, cut: Cutout, { size = 256, scales: all = fopaScales, batch }: PlacementOptions = {}): Promise<ScaleHeatmap[]> {
  const scales = all.filter((s) => scaledSize(bg.width, bg.height, cut.image.width, cut.image.height, s).every((d) => d >= 1));
  // the widest activation is the decoder's [N, widths[3], S, S] at the input's size S (even): 128 MiB a sample for the
  // official widths at 256², which lavapipe's 128 MiB buffer limit allows one at a time
  const { maxStorageBufferBindingSize, maxBufferSize } = deviceInfo().limits;
  const perScale = 4 * net.config.widths[3] * (2 * Math.ceil(size / 2)) ** 2;
  batch ??= Math.max(1, Math.min(scales.length, Math.floor(Math.min(maxStorageBufferBindingSize, maxBufferSize) / perScale)));
  const out: ScaleHeatmap[] = [];
  for (let s0 = 0; s0 < scales.length; s0 += batch) {
    const chunk = scales.slice(s0, s0 + batch);
    const prepared = chunk.map((s) => {
      const f = scaledForeground(bg.width, bg.height, cut, s);
      return { s, f, inputs: fopaInputs(bg, f.canvas, f.mask, size) };
    });
    const heat = noGrad(() => tidy(() => {
      const cat = (k: 'bg' | 'fg' | 'mask') => concat(prepared.map((p) => p.inputs[k]), 0);
      const { out: logits, fuseOut } = net.eval().forward(cat('bg'), cat('fg'), cat('mask'));
      fuseOut.dispose();
      return softmax(logits, 1);
    }));
    const probs = await heat.toArray();
    const [, , Ho, Wo] = heat.shape as [number, number, number, number];
    heat.dispose();
    prepared.forEach(({ s, f, inputs }, i) => {
      for (const t of [inputs.bg, inputs.fg, inputs.mask]) t.dispose();
      const map = new Float32Array(size * size);
      // the network's output is 2·⌈size/2⌉ square: the first size rows and columns are the resized background
      for (let y = 0; y < size; y++) for (let x = 0; x < size; x++) map[y * size + x] = probs[((2 * i + 1) * Ho + y) * Wo + x]!;
      // locations nearer the border than half the object (in the resized frame) cannot hold it
      const hb = Math.trunc((f.height / bg.height) * size / 2), wb = Math.trunc((f.width / bg.width) * size / 2);
      for (let y = 0; y < size; y++) for (let x = 0; x < size; x++) if (y < hb || y >= size - hb || x < wb || x >= size - wb) map[y * size + x] = 0;
      out.push({ scale: s, width: f.width, height: f.height, heat: map });
    });
  }
  return out;
}

export interface Placement {
  scale: number;
  /** The object's box in background pixels: left, top, width, height (centred on the heat-map location). */
  box: [number, number, number, number];
  score: number;
}

/** The `top` best (scale, y, x) over every heat map, best first, as boxes on the background. */
export function topPlacements(maps: readonly ScaleHeatmap[], bgW: number, bgH: number, top = 50): Placement[] {
  const cells: { m: number; p: number; v: number }[] = [];
  maps.forEach((map, m) => map.heat.forEach((v, p) => {
    if (v > 0) cells.push({ m, p, v });
  }));
  // ties keep the release's order (scale, then row-major position): stable sort
  cells.sort((a, b) => b.v - a.v);
  return cells.slice(0, top).map(({ m, p, v }) => {
    const map = maps[m]!;
    const size = Math.round(Math.sqrt(map.heat.length));
    const cx = ((p % size) * bgW) / size, cy = (Math.floor(p / size) * bgH) / size;
    return { scale: map.scale, box: [cx - map.width / 2, cy - map.height / 2, map.width, map.height], score: v };
  });
}

/** One placement drawn uniformly from the candidates with a generator seeded by `seed`; undefined when there are none. */
export function samplePlacement(candidates: readonly Placement[], seed: number): Placement | undefined {
  if (candidates.length === 0) return undefined;
  return candidates[Math.floor(seededRandom(seed)() * candidates.length)];
}

/**
 * The control for FOPA: a scale drawn uniformly from the release's 16 (those at which the object is at least a pixel)
 * and a centre drawn uniformly where the object stays inside the background (the search's border rule); score NaN.
 */
export function randomPlacement(bgW: number, bgH: number, cut: Cutout, seed: number): Placement {
  const rand = seededRandom(seed);
  const usable = fopaScales.filter((s) => scaledSize(bgW, bgH, cut.image.width, cut.image.height, s).every((d) => d >= 1));
  if (usable.length === 0) throw new Error(`randomPlacement: the object (${cut.image.width}×${cut.image.height}) is under a pixel at every scale of ${bgW}×${bgH}`);
  const scale = usable[Math.floor(rand() * usable.length)]!;
  const [w, h] = scaledSize(bgW, bgH, cut.image.width, cut.image.height, scale);
  const cx = w / 2 + rand() * (bgW - w), cy = h / 2 + rand() * (bgH - h);
  return { scale, box: [cx - w / 2, cy - h / 2, w, h], score: NaN };
}

/** A placement of `cut` on `bg`: the release's search end to end; throws, naming the object, when no location is left. */
export async function placeObject(net: ObPlaNet, bg: Image, cut: Cutout, seed: number, options: PlacementOptions & { top?: number; what?: string } = {}): Promise<Placement> {
  const maps = await placementHeatmaps(net, bg, cut, options);
  const chosen = samplePlacement(topPlacements(maps, bg.width, bg.height, options.top ?? 50), seed);
  if (!chosen) throw new Error(`placeObject: no location on the ${bg.width}×${bg.height} background can hold ${options.what ?? 'the object'} at any scale (every heat map is zero once the border is removed)`);
  return chosen;
}
