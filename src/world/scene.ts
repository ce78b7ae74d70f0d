// ShapeWorld scenes: a background, a scene light and objects placed by their class priors, rendered with
// exact ground truth. Everything follows from (mode, seed, size): same inputs, same bytes.
import { seededRandom } from '../engine/random-cpu.ts';
import { type BackgroundSpec, horizonRange, paintBackground } from './background.ts';
import { type BackgroundKind, type Box, type ClassSpec, Frame, backgroundKinds, classSpec, classes } from './classes.ts';
import { type Primitive, hash3, rasterize } from './raster.ts';

/** The camera height in metres: a ground object standing g pixels below the horizon is height·g/cameraHeight pixels tall. */
export const cameraHeight = 1.6;
/** The label of pixels that are neither background nor a listed instance (VOC's "void"). */
export const ignoreLabel = 255;

/** The scene light: shades objects and background alike. */
export interface Light {
  /** overall multiplier */
  brightness: number;
  /** per-channel multiplier */
  tint: [number, number, number];
  /** direction the light comes from, radians in image coordinates (0: from the right, π/2: from below) */
  direction: number;
}

export interface ObjectSpec {
  classId: number;
  /** the layout box the class was drawn in, pixels: [x, y, w, h] (before tilt) */
  box: Box;
  facing: 1 | -1;
  tilt: number;
  /** distance from the camera (arbitrary units): larger is drawn first */
  distance: number;
  /** seed of the object's shape variety, colours and texture */
  seed: number;
}

export interface SceneSpec {
  width: number;
  height: number;
  background: BackgroundSpec;
  light: Light;
  /** far to near */
  objects: ObjectSpec[];
  prompt: string;
}

export interface Instance {
  /** 1-based, the value in the instance mask */
  id: number;
  classId: number;
  className: string;
  /** tight box of the visible mask, pixels [x, y, w, h] */
  bbox: [number, number, number, number];
  /** visible pixels */
  area: number;
  /** 0 is the nearest object */
  depthRank: number;
  /** the layout box the object was placed with */
  layoutBox: Box;
  /** index of the object in SceneSpec.objects */
  object: number;
}

export interface Scene {
  spec: SceneSpec;
  width: number;
  height: number;
  /** RGB, 8 bits, row-major */
  image: Uint8Array;
  /** VOC class id per pixel, 0 background, 255 ignore */
  semantic: Uint8Array;
  /** instance id per pixel (Instance.id), 0 background, 255 ignore */
  instance: Uint8Array;
  instances: Instance[];
  prompt: string;
}

/** Instances that end up smaller than this many pixels at 64×64 (scaled with the area) become "ignore". */
const minVisibleAt64 = 12;

/** How an image is drawn; 'scene': several objects by the priors; 'single': one large object for diffusion training. */
export type WorldMode = 'scene' | 'single';

const pickWeighted = <T>(rand: () => number, items: readonly T[], weight: (t: T) => number): T | undefined => {
  const total = items.reduce((s, t) => s + weight(t), 0);
  if (total <= 0) return undefined;
  let u = rand() * total;
  for (const t of items) if ((u -= weight(t)) < 0) return t;
  return items[items.length - 1];
};
const range = (rand: () => number, lo: number, hi: number) => lo + rand() * (hi - lo);

function sampleLight(rand: () => number): Light {
  const warmth = range(rand, -1, 1); // −1 cool morning, +1 warm evening
  return {
    brightness: range(rand, 0.7, 1.15),
    tint: [1 + 0.12 * warmth, 1 + 0.02 * warmth, 1 - 0.14 * warmth],
    direction: range(rand, 0, 2 * Math.PI),
  };
}

/** The pixel height a ground class has when its bottom stands g pixels below the horizon. */
function groundHeight(spec: ClassSpec, g: number): number {
  return ((spec.height as number) * g) / cameraHeight;
}

/**
 * How plausible it is to find an object of class `cls` with layout box `box` (pixels) in an image of the
 * background `bg` of size W×H: the class's affinity to the background kind times a geometric term in [0, 1]
 * from the priors the scenes are drawn with (ground objects stand below the horizon with the height
 * perspective gives them; air objects fly above it within their size range; the aspect suits the class; the
 * box lies in the image). Training and evaluation truth for placement (FOPA).
 */
export function placementPlausibility(bg: Pick<BackgroundSpec, 'kind' | 'horizon'>, cls: number | string, box: Box, W: number, H: number): number {
  const spec = classSpec(cls);
  const [x, y, w, h] = box;
  if (!(w > 0 && h > 0)) return 0;
  const affinity = spec.affinity[bg.kind] ?? 0;
  if (affinity === 0) return 0;
  const gauss = (z: number, s: number) => Math.exp(-(z * z) / (2 * s * s));
  const outside = (v: number, lo: number, hi: number) => (v < lo ? Math.log(lo / v) : v > hi ? Math.log(v / hi) : 0);
  const hy = bg.horizon * H;
  let geometric: number;
  if (spec.support === 'ground') {
    const g = y + h - hy;
    geometric = g <= 0 ? 0 : gauss(Math.log(h / groundHeight(spec, g)), 0.2);
  } else {
    const [lo, hi] = spec.height as [number, number];
    const below = Math.max(0, y + h - hy) / H; // how far the box reaches under the horizon
    geometric = gauss(outside(h / H, lo, hi), 0.2) * gauss(below, 0.03);
  }
  const aspect = gauss(outside(w / h, spec.aspect[0], spec.aspect[1]), 0.15);
  const inside = (Math.max(0, Math.min(x + w, W) - Math.max(x, 0)) * Math.max(0, Math.min(y + h, H) - Math.max(y, 0))) / (w * h);
  return affinity * geometric * aspect * inside;
}

/** A layout box for `spec` on the background by the class prior, or undefined when the class does not fit. */
function sampleBox(rand: () => number, spec: ClassSpec, bg: BackgroundSpec, W: number, H: number): Box | undefined {
  const aspect = range(rand, spec.aspect[0], spec.aspect[1]);
  const hy = bg.horizon * H;
  let h: number, bottom: number;
  if (spec.support === 'ground') {
    // bottom between the horizon and a little below the frame, such that 0.2·H ≤ height and width ≤ 0.9·W
    const perPixel = (spec.height as number) / cameraHeight;
    const gMin = (0.2 * H) / perPixel;
    const gMax = Math.min(H * 1.03 - hy, (0.9 * W) / aspect / perPixel, (0.9 * H) / perPixel);
    if (gMax <= gMin) return undefined;
    const g = range(rand, gMin, gMax);
    h = g * perPixel * range(rand, 0.92, 1.08);
    bottom = hy + g;
  } else {
    const [lo, hi] = spec.height as [number, number];
    h = range(rand, lo, hi) * H;
    if (hy - 0.02 * H < h) return undefined;
    bottom = range(rand, h + 0.02 * H, hy);
  }
  const w = h * aspect;
  const x = range(rand, -0.15 * w, W - 0.85 * w);
  return [x, bottom - h, w, h];
}

/** The distance of an object: ground objects by perspective, air objects by their size. */
function cameraDistance(spec: ClassSpec, box: Box, hy: number, H: number): number {
  if (spec.support === 'ground') return (cameraHeight * H) / Math.max(box[1] + box[3] - hy, 1e-3);
  const [lo, hi] = spec.height as [number, number];
  return (((lo + hi) / 2) * 10 * H) / box[3];
}

/** The prompt of a scene: its objects counted by class, and where they are ("a photo of two boats on water"). */
export function scenePrompt(objects: readonly Pick<ObjectSpec, 'classId'>[], kind: BackgroundKind): string {
  const where: Record<BackgroundKind, string> = { sky: 'in the sky', water: 'on water', grass: 'on grass', road: 'on a road', indoor: 'in a room' };
  const counts = new Map<number, number>();
  for (const o of objects) counts.set(o.classId, (counts.get(o.classId) ?? 0) + 1);
  const numbers = ['', 'a', 'two', 'three', 'four', 'five', 'six', 'seven', 'eight'];
  const parts = [...counts].map(([id, n]) => {
    const [one, many] = classSpec(id).words;
    if (n > 1) return `${numbers[n] ?? n} ${many}`;
    return `${/^[aeiou]/.test(one) ? 'an' : 'a'} ${one}`;
  });
  const list = parts.length > 1 ? `${parts.slice(0, -1).join(', ')} and ${parts[parts.length - 1]}` : parts[0] ?? 'nothing';
  return `a photo of ${list} ${where[kind]}`;
}

/** Draws a scene description from a seed: background, light, objects by their affinities and priors. */
export function sampleScene(seed: number, { mode = 'scene', width = 64, height = width }: { mode?: WorldMode; width?: number; height?: number } = {}): SceneSpec {
  // the modes draw from different streams, so seed k of one mode is unrelated to seed k of the other
  const rand = seededRandom(mode === 'scene' ? seed : seed ^ 0x5bd1e995);
  const W = width, H = height;
  const light = sampleLight(rand);
  const objects: ObjectSpec[] = [];
  const newObject = (spec: ClassSpec, box: Box, hy: number): ObjectSpec => ({
    classId: spec.id, box, facing: rand() < 0.5 ? 1 : -1, tilt: range(rand, -spec.tilt, spec.tilt),
    distance: cameraDistance(spec, box, hy, H), seed: Math.floor(rand() * 2 ** 31),
  });
  let background: BackgroundSpec;
  if (mode === 'single') {
    // one large object, classes in turn by seed so that every split is balanced
    const spec = classes[seed % classes.length]!;
    const kind = pickWeighted(rand, backgroundKinds, (k) => spec.affinity[k] ?? 0)!;
    const aspect = range(rand, spec.aspect[0], spec.aspect[1]);
    const size = range(rand, 0.5, 0.8);
    const h = aspect > 1 ? (size * W) / aspect : size * H;
    const w = h * aspect;
    const x = (W - w) / 2 + range(rand, -0.08, 0.08) * W;
    const bottom = spec.support === 'ground' ? range(rand, 0.8, 0.95) * H : (H + h) / 2 + range(rand, -0.1, 0) * H;
    // the horizon follows from the object so that the picture keeps the class's prior
    const horizon = spec.support === 'ground'
      ? (bottom - (h * cameraHeight) / (spec.height as number)) / H
      : Math.max(horizonRange[kind][0], bottom / H + 0.03);
    background = { kind, horizon: Math.min(0.95, Math.max(0.08, horizon)), seed: Math.floor(rand() * 2 ** 31) };
    objects.push(newObject(spec, [x, bottom - h, w, h], background.horizon * H));
  } else {
    const kind = backgroundKinds[Math.floor(rand() * backgroundKinds.length)]!;
    const [lo, hi] = horizonRange[kind];
    background = { kind, horizon: range(rand, lo, hi), seed: Math.floor(rand() * 2 ** 31) };
    const hy = background.horizon * H;
    const count = 1 + Math.floor(rand() * rand() * 4.5); // 1 to 4, mostly 1 or 2
    const candidates = classes.filter((c) => (c.affinity[kind] ?? 0) > 0);
    for (let k = 0; k < count; k++) {
      const spec = pickWeighted(rand, candidates, (c) => c.affinity[kind]!)!;
      const box = sampleBox(rand, spec, background, W, H);
      if (!box) continue;
      const obj = newObject(spec, box, hy);
      objects.push(obj);
      if (rand() < 0.3) {
        // a touching twin of the same class beside it, a hair nearer, for instance separation
        const [x, y, w, h] = box;
        const side = x + w / 2 < W / 2 ? 1 : -1; // towards the middle, so that the twin is in the picture
        const twin: Box = [x + side * w * range(rand, 0.7, 0.9), y + 0.01 * H, w, h];
        objects.push({ ...newObject(spec, twin, hy), facing: obj.facing, distance: obj.distance * 0.98 });
      }
    }
  }
  objects.sort((a, b) => b.distance - a.distance);
  return { width: W, height: H, background, light, objects, prompt: scenePrompt(objects, background.kind) };
}

/** The primitives of an object, in pixels. */
export function objectPrimitives(o: ObjectSpec): Primitive[] {
  return classSpec(o.classId).draw(new Frame(o.box, o.facing, o.tilt), seededRandom(o.seed));
}

/** The background painted and lit by the scene's light gradient (linear RGB, before brightness and tint). */
function litBackground(spec: SceneSpec): Float32Array {
  const { width: W, height: H, light } = spec;
  const rgb = new Float32Array(W * H * 3);
  paintBackground(spec.background, W, H, rgb);
  const lx = Math.cos(light.direction), ly = Math.sin(light.direction);
  const S = Math.max(W, H);
  // the light's gradient across the background
  for (let y = 0; y < H; y++) {
    for (let x = 0; x < W; x++) {
      const k = 1 + 0.25 * (((x + 0.5) / S - 0.5) * lx + ((y + 0.5) / S - 0.5) * ly);
      const i = 3 * (y * W + x);
      rgb[i] *= k;
      rgb[i + 1] *= k;
      rgb[i + 2] *= k;
    }
  }
  return rgb;
}

/** An object rasterised alone: each covered pixel's coverage A and shaded colour (linear RGB, before brightness and tint). */
interface ShadedObject {
  pixels: { p: number; a: number; rgb: [number, number, number] }[];
}

function shadeObject(spec: SceneSpec, o: ObjectSpec): ShadedObject {
  const { width: W, height: H, light } = spec;
  const layer = rasterize(objectPrimitives(o), W, H);
  const pixels: ShadedObject['pixels'] = [];
  if (!layer) return { pixels };
  const lx = Math.cos(light.direction), ly = Math.sin(light.direction);
  const cls = classSpec(o.classId);
  const [bx, by, bw, bh] = o.box;
  const cx = bx + bw / 2, cy = by + bh / 2, radius = Math.max(bw, bh) / 2;
  for (let j = 0; j < layer.height; j++) {
    for (let i = 0; i < layer.width; i++) {
      const li = j * layer.width + i;
      const a = layer.alpha[li]!;
      if (a === 0) continue;
      const x = layer.x0 + i, y = layer.y0 + j;
      // round-object shading: the side facing the light is brighter; texture noise fixed to the object
      const side = ((x + 0.5 - cx) * lx + (y + 0.5 - cy) * ly) / radius;
      const grain = 1 + cls.texture * (2 * hash3(Math.floor(x - bx), Math.floor(y - by), o.seed) - 1);
      const s = (1 + 0.3 * side) * grain;
      // the layer's colour is premultiplied by its coverage: the shaded colour over a = 1 is color · s
      pixels.push({ p: y * W + x, a, rgb: [layer.color[3 * li]! * s, layer.color[3 * li + 1]! * s, layer.color[3 * li + 2]! * s] });
    }
  }
  return { pixels };
}

/** Linear RGB with the scene's brightness and tint on the 0..255 scale, before clamping and rounding. */
function toLevels(spec: SceneSpec, rgb: Float32Array): Float32Array {
  const { light } = spec;
  const out = new Float32Array(rgb.length);
  for (let p = 0; p < rgb.length / 3; p++) for (let c = 0; c < 3; c++) out[3 * p + c] = 255 * (rgb[3 * p + c]! * light.brightness * light.tint[c]!);
  return out;
}

/** Linear RGB with the scene's brightness and tint, clamped and rounded to 8 bits. */
function toBytes(spec: SceneSpec, rgb: Float32Array): Uint8Array {
  const { light } = spec;
  const image = new Uint8Array(rgb.length);
  for (let p = 0; p < rgb.length / 3; p++) {
    for (let c = 0; c < 3; c++) image[3 * p + c] = Math.round(255 * Math.min(1, Math.max(0, rgb[3 * p + c]! * light.brightness * light.tint[c]!)));
  }
  return image;
}

/** Renders a scene description with its ground truth (see raster.ts for the anti-aliasing rule). */
export function renderScene(spec: SceneSpec): Scene {
  const { width: W, height: H } = spec;
  const rgb = litBackground(spec);
  const owner = new Uint8Array(W * H);
  spec.objects.forEach((o, k) => {
    for (const { p, a, rgb: c } of shadeObject(spec, o).pixels) {
      for (let ch = 0; ch < 3; ch++) rgb[3 * p + ch] = rgb[3 * p + ch]! * (1 - a) + c[ch]!;
      if (a >= 0.5) owner[p] = k + 1; // drawn far to near: the nearest object with A ≥ 0.5 owns the pixel
    }
  });
  return { ...groundTruth(spec, owner), spec, width: W, height: H, image: toBytes(spec, rgb), prompt: spec.prompt };
}

/**
 * A scene's parts rendered apart: the lit background alone, and each object (far to near) with its coverage; colours
 * on the 0..255 scale before clamping and rounding (a lit object may exceed 255 until it is composited), so that
 * compositing them and rounding gives the scene's picture.
 */
export interface SceneLayers {
  background: Float32Array;
  objects: { classId: number; rgb: Float32Array; alpha: Float32Array }[];
}

export function renderLayers(spec: SceneSpec): SceneLayers {
  const { width: W, height: H } = spec;
  return {
    background: toLevels(spec, litBackground(spec)),
    objects: spec.objects.map((o) => {
      const rgb = new Float32Array(W * H * 3), alpha = new Float32Array(W * H);
      for (const { p, a, rgb: c } of shadeObject(spec, o).pixels) {
        alpha[p] = a;
        // un-premultiplied: the object's own colour where it covers the pixel
        for (let ch = 0; ch < 3; ch++) rgb[3 * p + ch] = c[ch]! / a;
      }
      return { classId: o.classId, rgb: toLevels(spec, rgb), alpha };
    }),
  };
}

/** Masks and instance list from the owner map (object index + 1 per pixel, 0 none). */
function groundTruth(spec: SceneSpec, owner: Uint8Array): Pick<Scene, 'semantic' | 'instance' | 'instances'> {
  const { width: W, height: H } = spec;
  const n = spec.objects.length;
  const area = new Int32Array(n + 1);
  const x0 = new Int32Array(n + 1).fill(W), y0 = new Int32Array(n + 1).fill(H), x1 = new Int32Array(n + 1), y1 = new Int32Array(n + 1);
  for (let y = 0; y < H; y++) {
    for (let x = 0; x < W; x++) {
      const k = owner[y * W + x]!;
      area[k]++;
      x0[k] = Math.min(x0[k]!, x);
      y0[k] = Math.min(y0[k]!, y);
      x1[k] = Math.max(x1[k]!, x + 1);
      y1[k] = Math.max(y1[k]!, y + 1);
    }
  }
  // objects too occluded (or too far off-image) to learn from become "ignore"; the rest are numbered near to far
  const minArea = Math.max(1, Math.round((minVisibleAt64 * W * H) / 4096));
  const kept = spec.objects.map((_, k) => k + 1).filter((k) => area[k]! >= minArea).reverse();
  const idOf = new Uint8Array(n + 1).fill(ignoreLabel);
  idOf[0] = 0;
  kept.forEach((k, r) => (idOf[k] = r + 1));
  const semantic = new Uint8Array(W * H), instance = new Uint8Array(W * H);
  for (let p = 0; p < W * H; p++) {
    const k = owner[p]!;
    instance[p] = idOf[k]!;
    semantic[p] = k === 0 ? 0 : idOf[k] === ignoreLabel ? ignoreLabel : spec.objects[k - 1]!.classId;
  }
  const instances = kept.map((k, r): Instance => {
    const o = spec.objects[k - 1]!;
    return {
      id: r + 1, classId: o.classId, className: classSpec(o.classId).name,
      bbox: [x0[k]!, y0[k]!, x1[k]! - x0[k]!, y1[k]! - y0[k]!], area: area[k]!, depthRank: r, layoutBox: o.box, object: k - 1,
    };
  });
  return { semantic, instance, instances };
}

/** Renders the scene of a seed. */
export function generateScene(seed: number, options: { mode?: WorldMode; width?: number; height?: number } = {}): Scene {
  return renderScene(sampleScene(seed, options));
}
