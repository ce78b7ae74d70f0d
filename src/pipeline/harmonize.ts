// Harmonization data and measures: ShapeWorld pairs with exact targets, the classical baseline and the
// iHarmony4 metrics. A pair: the object of a single-object scene B rendered under the light of another scene A and
// pasted into B (the input), the same object rendered under B's own light (the target), the object's exact mask.
// Reinhard et al.'s colour transfer (mean and std matched in Lab, from the background to the object) is the
// baseline a learned harmonizer has to beat.

import { seededRandom, subSeed } from '../engine/random-cpu.ts';
import { Tensor, tidy } from '../engine/tensor.ts';
import { interpolate } from '../kernels/resample.ts';
import { type Image, sideBySide, stacked } from '../io/image.ts';
import { nodeFs } from '../io/fs.ts';
import { RainNet, harmonize } from '../models/rainnet.ts';
import { PCTNet } from '../models/pct_net.ts';
import { renderLayers, sampleScene } from '../world/scene.ts';
import { type Split, splitSeed } from '../world/splits.ts';
import { composeLayers, uncertain } from './compose.ts';

export interface HarmonizationPair {
  width: number;
  height: number;
  /** RGB bytes: the object under another scene's light on this scene's background. */
  composite: Uint8Array;
  /** RGB bytes: the scene as rendered, the object under the scene's own light. */
  target: Uint8Array;
  /** width·height of 0/1: the object's pixels (coverage ≥ 0.5). */
  mask: Uint8Array;
}

/** Pair `index` of `split` at `size` pixels: scene B = the split's single-object scene, the light from another seed. */
export function harmonizationPair(split: Split, index: number, size = 64): HarmonizationPair {
  const seed = splitSeed(split, index);
  const spec = sampleScene(seed, { mode: 'single', width: size });
  const other = sampleScene(splitSeed(split, Math.floor(seededRandom(subSeed(seed, 0x4c494748))() * 10_000)), { mode: 'single', width: size });
  const own = renderLayers(spec);
  const foreign = renderLayers({ ...spec, light: other.light });
  const layer = (o: (typeof own.objects)[number]) => ({ classId: o.classId, rgb: o.rgb, alpha: o.alpha });
  const target = composeLayers(size, size, { image: own.background }, own.objects.map(layer));
  const composite = composeLayers(size, size, { image: own.background }, foreign.objects.map(layer));
  return { width: size, height: size, composite: composite.image, target: target.image, mask: target.semantic.map((v) => (v !== 0 && v !== uncertain ? 1 : 0)) };
}

// ---- sRGB ↔ CIE Lab (D65), as colour-transfer papers use it ----

const toLinear = (c: number) => (c <= 0.04045 ? c / 12.92 : ((c + 0.055) / 1.055) ** 2.4);
const fromLinear = (c: number) => (c <= 0.0031308 ? 12.92 * c : 1.055 * c ** (1 / 2.4) - 0.055);
const white = [0.95047, 1, 1.08883];
const f = (t: number) => (t > (6 / 29) ** 3 ? Math.cbrt(t) : t / (3 * (6 / 29) ** 2) + 4 / 29);
const fInv = (t: number) => (t > 6 / 29 ? t ** 3 : 3 * (6 / 29) ** 2 * (t - 4 / 29));

export function rgbToLab(r: number, g: number, b: number): [number, number, number] {
  const [R, G, B] = [r, g, b].map((v) => toLinear(v / 255)) as [number, number, number];
  const x = (0.4124564 * R + 0.3575761 * G + 0.1804375 * B) / white[0]!;
  const y = (0.2126729 * R + 0.7151522 * G + 0.072175 * B) / white[1]!;
  const z = (0.0193339 * R + 0.119192 * G + 0.9503041 * B) / white[2]!;
  return [116 * f(y) - 16, 500 * (f(x) - f(y)), 200 * (f(y) - f(z))];
}

export function labToRgb(L: number, a: number, b: number): [number, number, number] {
  const fy = (L + 16) / 116;
  const [x, y, z] = [fInv(fy + a / 500) * white[0]!, fInv(fy) * white[1]!, fInv(fy - b / 200) * white[2]!];
  const R = 3.2404542 * x - 1.5371385 * y - 0.4985314 * z;
  const G = -0.969266 * x + 1.8760108 * y + 0.041556 * z;
  const B = 0.0556434 * x - 0.2040259 * y + 1.0572252 * z;
  return [R, G, B].map((v) => Math.round(255 * Math.min(1, Math.max(0, fromLinear(v))))) as [number, number, number];
}

/**
 * Reinhard's colour transfer as a harmonizer: in Lab, the object's pixels (mask = 1) are shifted and scaled so that
 * their per-channel mean and std match the background's (mask = 0); the background is unchanged.
 */
export function reinhardHarmonize(rgb: Uint8Array, mask: Uint8Array): Uint8Array {
  const n = mask.length;
  if (rgb.length !== 3 * n) throw new Error(`reinhardHarmonize: ${rgb.length} bytes for a ${n}-pixel mask (expected RGB)`);
  const lab = Array.from({ length: n }, (_, p) => rgbToLab(rgb[3 * p]!, rgb[3 * p + 1]!, rgb[3 * p + 2]!));
  const stats = (sel: 0 | 1) => {
    const idx = [...mask.keys()].filter((p) => (mask[p] ? 1 : 0) === sel);
    if (idx.length === 0) throw new Error(`reinhardHarmonize: the mask has no ${sel ? 'object' : 'background'} pixel`);
    return [0, 1, 2].map((c) => {
      const mean = idx.reduce((a, p) => a + lab[p]![c]!, 0) / idx.length;
      return { mean, std: Math.sqrt(idx.reduce((a, p) => a + (lab[p]![c]! - mean) ** 2, 0) / idx.length) };
    });
  };
  const fg = stats(1), bg = stats(0);
  const out = Uint8Array.from(rgb);
  for (let p = 0; p < n; p++) {
    if (!mask[p]) continue;
    const l = lab[p]!.map((v, c) => (v - fg[c]!.mean) * (fg[c]!.std > 1e-6 ? bg[c]!.std / fg[c]!.std : 1) + bg[c]!.mean) as [number, number, number];
    out.set(labToRgb(...l), 3 * p);
  }
  return out;
}

export interface HarmonizationScores {
  /** Mean squared error over all pixels and channels, 0..255 scale (iHarmony4's MSE). */
  mse: number;
  /** The same over the object's pixels only (fMSE). */
  fmse: number;
  /** 10·log10(255² / MSE). */
  psnr: number;
}

/** iHarmony4's measures of one result against its target. */
export function harmonizationScores(result: Uint8Array, target: Uint8Array, mask: Uint8Array): HarmonizationScores {
  if (result.length !== target.length || result.length !== 3 * mask.length) throw new Error(`harmonizationScores: ${result.length} and ${target.length} bytes for a ${mask.length}-pixel mask`);
  let [all, fore, nFore] = [0, 0, 0];
  for (let p = 0; p < mask.length; p++) {
    let e = 0;
    for (let c = 0; c < 3; c++) e += (result[3 * p + c]! - target[3 * p + c]!) ** 2;
    all += e;
    if (mask[p]) {
      fore += e;
      nFore++;
    }
  }
  const mse = all / result.length;
  return { mse, fmse: nFore ? fore / (3 * nFore) : 0, psnr: 10 * Math.log10((255 * 255) / Math.max(mse, 1e-10)) };
}

/** A harmonizer: the composite's RGB bytes and its object mask → the harmonized RGB bytes. */
export type Harmonizer = (composite: Uint8Array, mask: Uint8Array, width: number, height: number) => Uint8Array | Promise<Uint8Array>;

/** Mean iHarmony4 scores of each harmonizer over pairs `indices` of `split` (one row per harmonizer). */
export async function harmonizationTable(harmonizers: Record<string, Harmonizer>, split: Split, indices: readonly number[], size = 64): Promise<({ method: string } & HarmonizationScores)[]> {
  const sums = Object.fromEntries(Object.keys(harmonizers).map((k) => [k, { mse: 0, fmse: 0, psnr: 0 }]));
  for (const i of indices) {
    const p = harmonizationPair(split, i, size);
    for (const [name, h] of Object.entries(harmonizers)) {
      const s = harmonizationScores(await h(p.composite, p.mask, p.width, p.height), p.target, p.mask);
      for (const k of ['mse', 'fmse', 'psnr'] as const) sums[name]![k] += s[k] / indices.length;
    }
  }
  return Object.entries(sums).map(([method, s]) => ({ method, ...s }));
}

/** One row per pair of `indices`: the composite, each harmonizer's result (in the map's order), the target. */
export async function harmonizationSheet(harmonizers: Record<string, Harmonizer>, split: Split, indices: readonly number[], size = 64): Promise<Image> {
  const rows: Image[] = [];
  for (const i of indices) {
    const p = harmonizationPair(split, i, size);
    const rgb = (data: Uint8Array): Image => ({ width: p.width, height: p.height, channels: 3, data });
    const outs: Image[] = [];
    for (const h of Object.values(harmonizers)) outs.push(rgb(await h(p.composite, p.mask, p.width, p.height)));
    rows.push(sideBySide([rgb(p.composite), ...outs, rgb(p.target)]));
  }
  return stacked(rows);
}

/** A harmonizer's inputs checked: RGB bytes and a mask of the picture's size, or an error naming `what`. */
function checkHarmonizerInput(composite: Uint8Array, mask: Uint8Array, width: number, height: number, what: string): void {
  if (composite.length !== 3 * width * height) throw new Error(`${what}: the composite has ${composite.length} bytes, expected ${width}×${height}×3 (RGB)`);
  if (mask.length !== width * height) throw new Error(`${what}: the mask has ${mask.length} values, expected ${width}×${height}`);
}

/** A harmonizer's output planes [1, 3, H, W] as RGB bytes, mapped back by `toByte(value, channel)`. */
async function planesToBytes(out: Tensor, width: number, height: number, toByte: (v: number, c: number) => number): Promise<Uint8Array> {
  const v = await out.toArray();
  out.dispose();
  const bytes = new Uint8Array(3 * width * height);
  for (let q = 0; q < width * height; q++) for (let c = 0; c < 3; c++) bytes[3 * q + c] = Math.round(Math.min(255, Math.max(0, toByte(v[c * width * height + q]!, c))));
  return bytes;
}

/**
 * A RainNet as a harmonizer: bytes → [−1, 1] → G(x, m)·m + x·(1 − m) → bytes. A picture whose sides are not multiples
 * of 256 (RainNet's eight stride-2 levels) is seen at the next multiples (composite bilinear, mask nearest, as the
 * release resizes to 256) and G comes back to the picture's size before the blend, so pixels outside the mask stay.
 */
export function rainNetHarmonizer(net: RainNet): Harmonizer {
  return (composite, mask, width, height) => {
    checkHarmonizerInput(composite, mask, width, height, 'RainNet harmonizer');
    const out = tidy(() => {
      const comp = Tensor.fromArray(Float32Array.from({ length: 3 * width * height }, (_, i) => composite[3 * (i % (width * height)) + Math.floor(i / (width * height))]! / 127.5 - 1), [1, 3, height, width]);
      const m = Tensor.fromArray(Float32Array.from(mask), [1, 1, height, width]);
      const size: [number, number] = [Math.ceil(height / 256) * 256, Math.ceil(width / 256) * 256];
      if (size[0] === height && size[1] === width) return harmonize(net.forward(comp, m), comp, m);
      const g = net.forward(interpolate(comp, { size, mode: 'bilinear' }), interpolate(m, { size, mode: 'nearest' }));
      return harmonize(interpolate(g, { size: [height, width], mode: 'bilinear' }), comp, m);
    });
    return planesToBytes(out, width, height, (v) => (v + 1) * 127.5);
  };
}

/** A PCT-Net as a harmonizer: bytes → [0, 1], normalised, its `low` resolution by bilinear → the full-resolution output → bytes. */
export function pctNetHarmonizer(net: PCTNet, low: number): Harmonizer {
  return (composite, mask, width, height) => {
    checkHarmonizerInput(composite, mask, width, height, 'PCT-Net harmonizer');
    const { mean, std } = net.config;
    const out = tidy(() => {
      const plane = (i: number) => Math.floor(i / (width * height));
      const full = Tensor.fromArray(Float32Array.from({ length: 3 * width * height }, (_, i) => (composite[3 * (i % (width * height)) + plane(i)]! / 255 - mean[plane(i)]!) / std[plane(i)]!), [1, 3, height, width]);
      const m = Tensor.fromArray(Float32Array.from(mask), [1, 1, height, width]);
      const small = (t: Tensor) => interpolate(t, { size: [low, low], mode: 'bilinear' });
      return net.forward(small(full), full, small(m), m).imagesFullres;
    });
    return planesToBytes(out, width, height, (v, c) => 255 * (v * std[c]! + mean[c]!));
  };
}

/** A harmonizer by name: none, reinhard, rainnet:DIR or pct-net:DIR (PCT-Net's low resolution from its config.json, 256 by default). `what` names the option in errors. */
export function harmonizerFromName(name: string, what = 'harmonizer'): Harmonizer {
  if (name === 'none') return (c) => c;
  if (name === 'reinhard') return (c, m) => reinhardHarmonize(c, m);
  const colon = name.indexOf(':');
  const [kind, dir] = [name.slice(0, colon), name.slice(colon + 1)];
  if (colon > 0 && dir && (kind === 'rainnet' || kind === 'pct-net')) {
    const fs = nodeFs(`${what} ${name}`);
    if (!fs.existsSync(`${dir}/config.json`)) throw new Error(`${what}: ${dir} has no config.json (not a ${kind === 'rainnet' ? 'RainNet' : 'PCT-Net'} folder)`);
    if (kind === 'rainnet') return rainNetHarmonizer(RainNet.fromPretrained(dir));
    const low = Number(JSON.parse(new TextDecoder().decode(fs.readFileSync(`${dir}/config.json`))).low_resolution ?? 256);
    return pctNetHarmonizer(PCTNet.fromPretrained(dir), low);
  }
  throw new Error(`${what}: expected none, reinhard, rainnet:DIR or pct-net:DIR, got '${name}'`);
}
