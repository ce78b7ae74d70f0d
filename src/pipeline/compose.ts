// Free-Mask's composition: objects pasted onto a background with their masks as alpha, the masks kept exact.
// Each layer is an object's colour and coverage over the whole image; pasted in order, a layer owns the pixels it
// covers with coverage ≥ 0.5 (ShapeWorld's rasteriser rule), so the class and instance maps follow from the
// ownership; pixels its mask marks uncertain become 255; an object left with fewer visible pixels than
// ShapeWorld's rule (12 at 64×64, scaled with the area) becomes 255. Instance ids run near to far (1 = in front).
// The release pastes in the given order; 'ground' order puts the object whose bottom is lower in front.

import { seededRandom, spreadSeed, subSeed } from '../engine/random-cpu.ts';
import { parseCoco } from '../data/coco.ts';
import { type DatasetSample, objectBoxes } from '../data/dataset.ts';
import { nodeFs } from '../io/fs.ts';
import { readVocSamples } from '../models/mask2former/data.ts';
import { type Image, pilResize } from '../io/image.ts';
import type { ObPlaNet } from '../models/fopa.ts';
import { vocClassNames } from '../world/classes.ts';
import { type Cutout, placeObject } from './placement.ts';
import { type Thesaurus, classesByBackground, drawWeighted } from './thesaurus.ts';
import type { Harmonizer } from './harmonize.ts';

export const uncertain = 255;

/** One object over the whole W×H image. */
export interface Layer {
  classId: number;
  /** W·H·3 colour of the object where it covers (not premultiplied), 0..255 (floats may exceed it until the composite is rounded). */
  rgb: Uint8Array | Float32Array;
  /** W·H coverage in [0, 1]. */
  alpha: Float32Array;
  /** W·H: non-zero where the object's mask is uncertain (those pixels stay 255 where the object owns them). */
  uncertain?: Uint8Array;
  /** Where the object came from (kept in the instance list). */
  provenance?: Record<string, unknown>;
}

export interface ComposedInstance {
  id: number;
  classId: number;
  /** tight box of the visible pixels, [x, y, w, h] */
  bbox: [number, number, number, number];
  area: number;
  /** index of the layer in the given list (the background's own objects follow them) */
  layer: number;
  provenance?: Record<string, unknown>;
}

export interface Composite {
  width: number;
  height: number;
  image: Uint8Array;
  semantic: Uint8Array;
  instance: Uint8Array;
  instances: ComposedInstance[];
}

export interface ComposeOptions {
  /** 'paste' (default): layers in the given order, later on top; 'ground': the lower bottom edge in front. */
  order?: 'paste' | 'ground';
  /** Fewest visible pixels an object keeps at 64×64 (scaled with the image area); default 12, ShapeWorld's. */
  minVisibleAt64?: number;
}

/** The lowest row a layer owns (coverage ≥ 0.5), −1 when it owns none. */
function bottomRow(l: Layer, W: number): number {
  for (let p = l.alpha.length - 1; p >= 0; p--) if (l.alpha[p]! >= 0.5) return Math.floor(p / W);
  return -1;
}

/**
 * Pastes `layers` onto `background` (W·H·3 values on the 0..255 scale); the picture is clamped and rounded once, at the end. With the background's class map (a generated single-object
 * image and its mask), each class in it is an object too, behind every pasted one whatever the order (its pixels
 * are part of the background picture); its uncertain pixels stay 255 where nothing covers them.
 */
export function composeLayers(width: number, height: number, background: { image: Uint8Array | Float32Array; semantic?: Uint8Array }, pasted: readonly Layer[], { order = 'paste', minVisibleAt64 = 12 }: ComposeOptions = {}): Composite {
  const n = width * height;
  if (background.image.length !== 3 * n) throw new Error(`composeLayers: the background has ${background.image.length} bytes, expected ${width}×${height}×3`);
  if (background.semantic && background.semantic.length !== n) throw new Error(`composeLayers: the background's class map has ${background.semantic.length} values, expected ${width}×${height}`);
  pasted.forEach((l, k) => {
    if (l.rgb.length !== 3 * n || l.alpha.length !== n || (l.uncertain && l.uncertain.length !== n)) throw new Error(`composeLayers: layer ${k} (class ${l.classId}) is not ${width}×${height}`);
    if (!Number.isInteger(l.classId) || l.classId < 1 || l.classId >= uncertain) throw new Error(`composeLayers: layer ${k} has class ${l.classId}; classes are 1..254`);
  });
  const classes = [...new Set(background.semantic ?? [])].filter((c) => c > 0 && c !== uncertain).sort((a, b) => a - b);
  const own = classes.map((c): Layer => ({
    classId: c, rgb: background.image, alpha: Float32Array.from(background.semantic!, (v) => (v === c ? 1 : 0)), provenance: { source: 'background' },
  }));
  const layers = [...pasted, ...own];
  const sequence = pasted.map((_, k) => k);
  if (order === 'ground') {
    const bottom = pasted.map((l) => bottomRow(l, width));
    sequence.sort((a, b) => bottom[a]! - bottom[b]! || a - b);
  }
  sequence.unshift(...own.map((_, j) => pasted.length + j));
  const rgb = Float64Array.from(background.image);
  const owner = new Int32Array(n).fill(-1);
  const unsure = new Uint8Array(n);
  for (const k of sequence) {
    const l = layers[k]!;
    for (let p = 0; p < n; p++) {
      const a = l.alpha[p]!;
      if (a <= 0) continue;
      for (let c = 0; c < 3; c++) rgb[3 * p + c] = rgb[3 * p + c]! * (1 - a) + l.rgb[3 * p + c]! * a;
      if (a >= 0.5) {
        owner[p] = k;
        unsure[p] = l.uncertain?.[p] ? 1 : 0;
      }
    }
  }
  const area = new Int32Array(layers.length);
  for (let p = 0; p < n; p++) if (owner[p]! >= 0 && !unsure[p]) area[owner[p]!]++;
  const minArea = Math.max(1, Math.round((minVisibleAt64 * n) / 4096));
  // near to far: the last pasted is in front
  const kept = [...sequence].reverse().filter((k) => area[k]! >= minArea);
  const idOf = new Int32Array(layers.length).fill(uncertain);
  kept.forEach((k, r) => (idOf[k] = r + 1));
  const semantic = new Uint8Array(n), instance = new Uint8Array(n);
  for (let p = 0; p < n; p++) {
    const k = owner[p]!;
    if (k < 0) {
      semantic[p] = background.semantic?.[p] ?? 0;
      instance[p] = semantic[p] === uncertain ? uncertain : 0;
      continue;
    }
    const id = idOf[k]!;
    if (unsure[p] || id === uncertain) {
      semantic[p] = instance[p] = uncertain;
      continue;
    }
    semantic[p] = layers[k]!.classId;
    instance[p] = id;
  }
  const boxes = objectBoxes(instance, width);
  const image = Uint8Array.from(rgb, (v) => Math.round(Math.min(255, Math.max(0, v))));
  const instances = kept.map((k, r): ComposedInstance => ({ id: r + 1, classId: layers[k]!.classId, ...boxes.get(r + 1)!, layer: k, ...(layers[k]!.provenance && { provenance: layers[k]!.provenance }) }));
  return { width, height, image, semantic, instance, instances };
}

/**
 * A cut-out object as a layer of a W×H image, scaled to `box` (left, top, width, height in pixels; rounded to
 * whole pixels) with Pillow's bilinear filter; its alpha is the cut's mask (0..255), and `labels` (the cut's
 * class map: 255 uncertain) marks the uncertain pixels. Parts outside the image are dropped.
 */
export function placeCutout(cut: Cutout & { labels?: Uint8Array }, classId: number, box: readonly [number, number, number, number], W: number, H: number, provenance?: Record<string, unknown>): Layer {
  const [bx, by, bw, bh] = box.map(Math.round) as [number, number, number, number];
  if (bw < 1 || bh < 1) throw new Error(`placeCutout: the box ${JSON.stringify(box)} is under a pixel`);
  const { width: fw, height: fh } = cut.image;
  if (cut.mask.length !== fw * fh) throw new Error(`placeCutout: the mask has ${cut.mask.length} values for a ${fw}×${fh} object`);
  if (!cut.mask.some((v) => v > 0)) throw new Error(`placeCutout: the object's mask (class ${classId}) is empty`);
  const rgb3: Image = cut.image.channels === 3 ? cut.image : { width: fw, height: fh, channels: 3, data: Uint8Array.from({ length: fw * fh * 3 }, (_, i) => cut.image.data[Math.floor(i / 3) * cut.image.channels + (i % 3)]!) };
  const color = pilResize(rgb3, bw, bh, 'bilinear');
  const alpha = pilResize({ width: fw, height: fh, channels: 1, data: cut.mask }, bw, bh, 'bilinear');
  const labels = cut.labels && pilResize({ width: fw, height: fh, channels: 1, data: cut.labels }, bw, bh, 'nearest');
  const layer: Layer = { classId, rgb: new Uint8Array(W * H * 3), alpha: new Float32Array(W * H), ...(labels && { uncertain: new Uint8Array(W * H) }), ...(provenance && { provenance }) };
  for (let y = 0; y < bh; y++) {
    for (let x = 0; x < bw; x++) {
      const [tx, ty] = [bx + x, by + y];
      if (tx < 0 || ty < 0 || tx >= W || ty >= H) continue;
      const p = ty * W + tx, q = y * bw + x;
      layer.alpha[p] = alpha.data[q]! / 255;
      for (let c = 0; c < 3; c++) layer.rgb[3 * p + c] = color.data[3 * q + c]!;
      if (labels && labels.data[q] === uncertain) layer.uncertain![p] = 1;
    }
  }
  return layer;
}

/** A single-object picture (stage 1's output, or ShapeWorld's 'single' mode) that can be a background or a cut-out. */
export interface SingleObject {
  id: string;
  width: number;
  height: number;
  image: Uint8Array;
  /** the object's class where it is, 255 where its mask is uncertain, 0 elsewhere */
  semantic: Uint8Array;
  classId: number;
  /** the background it was generated on, as the thesaurus names backgrounds */
  background: string;
}

/** The object of a single-object picture, cropped to its mask's box: alpha 255 on object and uncertain pixels. */
export function cutOut(s: SingleObject): Cutout & { labels: Uint8Array } {
  const W = s.width;
  let [x0, y0, x1, y1] = [W, s.height, 0, 0];
  s.semantic.forEach((v, p) => {
    if (v !== s.classId && v !== uncertain) return;
    const x = p % W, y = Math.floor(p / W);
    [x0, y0, x1, y1] = [Math.min(x0, x), Math.min(y0, y), Math.max(x1, x + 1), Math.max(y1, y + 1)];
  });
  if (x1 <= x0) throw new Error(`cutOut: image '${s.id}' has an empty mask (no pixel of class ${s.classId})`);
  const [w, h] = [x1 - x0, y1 - y0];
  const image = new Uint8Array(w * h * 3), mask = new Uint8Array(w * h), labels = new Uint8Array(w * h);
  for (let y = 0; y < h; y++) {
    for (let x = 0; x < w; x++) {
      const p = (y0 + y) * W + x0 + x, q = y * w + x;
      const v = s.semantic[p]!;
      labels[q] = v === s.classId || v === uncertain ? v : 0;
      mask[q] = labels[q] ? 255 : 0;
      for (let c = 0; c < 3; c++) image[3 * q + c] = s.image[3 * p + c]!;
    }
  }
  return { image: { width: w, height: h, channels: 3, data: image }, mask, labels };
}

/**
 * The composite's picture with its pasted objects recoloured by `harmonizer`: the mask is the pasted layers'
 * pixels (uncertain ones included), not the background picture's own objects; unchanged when none is visible.
 */
export async function harmonizePasted(c: Composite, pasted: readonly Layer[], harmonizer: Harmonizer): Promise<Uint8Array> {
  const pastedIds = new Set(c.instances.filter((i) => i.layer < pasted.length).map((i) => i.id));
  const mask = Uint8Array.from(c.instance, (v, p) => (pastedIds.has(v) || (v === uncertain && c.semantic[p] === uncertain && pasted.some((l) => l.alpha[p]! >= 0.5)) ? 1 : 0));
  return mask.some((v) => v) ? harmonizer(c.image, mask, c.width, c.height) : c.image;
}

export interface ComposeDatasetOptions {
  singles: readonly SingleObject[];
  thesaurus: Thesaurus;
  fopa: ObPlaNet;
  /** FOPA's input size (default: the pictures' size). */
  fopaSize?: number;
  count: number;
  /** How many objects to paste on each background, [min, max] (default [1, 3]). */
  objects?: [number, number];
  seed?: number;
  order?: 'paste' | 'ground';
  /** Recolours the pasted objects to the scene (RainNet, PCT-Net, Reinhard…); the masks never change. */
  harmonizer?: Harmonizer;
}

/**
 * Free-Mask's editing stage over a set of single-object pictures: per output, a background picture drawn at random;
 * 1..k classes that fit its background (thesaurus weights; classes with no picture are not drawn); for each, a
 * picture of that class cut out by its mask and placed by FOPA's search; composed with exact masks. Every draw
 * follows from (seed, output index). Provenance (source pictures, scale, box, FOPA score) goes with each instance.
 */
export async function* composeScenes(o: ComposeDatasetOptions): AsyncGenerator<DatasetSample> {
  const { singles, thesaurus, fopa, count, objects: [lo, hi] = [1, 3], seed = 0, order = 'paste' } = o;
  if (singles.length === 0) throw new Error('compose: no single-object pictures');
  if (!(Number.isInteger(lo) && Number.isInteger(hi) && lo >= 1 && hi >= lo)) throw new Error(`compose: objects must be a range min-max with 1 ≤ min ≤ max, got ${lo}-${hi}`);
  const byClass = new Map<number, SingleObject[]>();
  for (const s of singles) byClass.set(s.classId, [...(byClass.get(s.classId) ?? []), s]);
  const fits = classesByBackground(thesaurus);
  const classOf = (name: string) => vocClassNames.indexOf(name as (typeof vocClassNames)[number]);
  const jobSeed = spreadSeed(seed);
  for (let k = 0; k < count; k++) {
    const rand = seededRandom(subSeed(jobSeed, k));
    const bg = singles[Math.floor(rand() * singles.length)]!;
    const candidates = (fits.get(bg.background.toLowerCase()) ?? []).filter((c) => byClass.has(classOf(c.className)));
    if (candidates.length === 0) throw new Error(`compose: no class with a picture fits background '${bg.background}' of image '${bg.id}' in thesaurus ${thesaurus.name}`);
    const m = lo + Math.floor(rand() * (hi - lo + 1));
    const layers: Layer[] = [];
    for (let j = 0; j < m; j++) {
      // the fitting classes' weights for this background, renormalised over those with pictures
      const total = candidates.reduce((a, c) => a + c.weight, 0);
      const { className } = drawWeighted(candidates.map((c) => ({ ...c, weight: c.weight / total })), rand);
      const pool = byClass.get(classOf(className))!;
      const src = pool[Math.floor(rand() * pool.length)]!;
      const cut = cutOut(src);
      const where = await placeObject(fopa, { width: bg.width, height: bg.height, channels: 3, data: bg.image }, cut, subSeed(jobSeed, k, j), { size: o.fopaSize ?? bg.width, what: `a ${className} from '${src.id}'` });
      layers.push(placeCutout(cut, src.classId, where.box, bg.width, bg.height, { source: src.id, scale: where.scale, box: where.box.map((v) => Number(v.toFixed(2))), fopa_score: where.score }));
    }
    const c = composeLayers(bg.width, bg.height, { image: bg.image, semantic: bg.semantic }, layers, { order });
    if (o.harmonizer) c.image = await harmonizePasted(c, layers, o.harmonizer);
    yield {
      id: `cmp${String(k).padStart(7, '0')}`, imageId: k, width: c.width, height: c.height, image: c.image, semantic: c.semantic, instance: c.instance,
      instances: c.instances.map((i) => ({ ...i, extra: { depth_rank: i.id - 1, provenance: i.provenance ?? { source: bg.id } } })),
      coco: { background: bg.background, background_image: bg.id, order },
    };
  }
}

/**
 * The single-object pictures of a dataset folder (VOC layout + annotations/instances_<split>.json whose images
 * carry `background`: a name, or ShapeWorld's { kind }); each picture's class is its most frequent object class.
 */
export async function readSingleObjects(dir: string, split?: string): Promise<SingleObject[]> {
  const fs = nodeFs(`reading ${dir}`);
  const annotations = fs.existsSync(`${dir}/annotations`) ? fs.readdirSync(`${dir}/annotations`).filter((f) => /^instances_.*\.json$/.test(f)) : [];
  const file = split ? `instances_${split}.json` : annotations[0];
  if (!file || !fs.existsSync(`${dir}/annotations/${file}`)) throw new Error(`${dir}/annotations: no COCO instances file${split ? ` for split '${split}'` : ''} (it says which background each picture has)`);
  const coco = parseCoco(new TextDecoder().decode(fs.readFileSync(`${dir}/annotations/${file}`)), `${dir}/annotations/${file}`);
  const backgroundOf = new Map(coco.images.map((im) => {
    const b = im.background as string | { kind?: string } | undefined;
    return [String(im.file_name).replace(/^.*\//, '').replace(/\.png$/, ''), typeof b === 'string' ? b : b?.kind];
  }));
  return (await readVocSamples(dir, split)).map((s) => {
    const counts = new Map<number, number>();
    for (const v of s.semantic) if (v !== 0 && v !== uncertain) counts.set(v, (counts.get(v) ?? 0) + 1);
    const classId = [...counts].sort((a, b) => b[1] - a[1] || a[0] - b[0])[0]?.[0];
    if (classId === undefined) throw new Error(`${dir}: image '${s.id}' has no object pixels`);
    const background = backgroundOf.get(s.id);
    if (!background) throw new Error(`${dir}/annotations/${file}: image '${s.id}' has no background`);
    return { id: s.id, width: s.width, height: s.height, image: s.image, semantic: s.semantic, classId, background };
  });
}
