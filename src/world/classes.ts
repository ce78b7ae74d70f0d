// ShapeWorld's object classes: named and numbered after Pascal VOC's 21 classes (0 is background), each drawn
// from a few primitives in a box with class-specific shape, colour and texture distributions.
import type { Primitive, Rgb } from './raster.ts';

/** The background kinds of ShapeWorld. */
export const backgroundKinds = ['sky', 'water', 'grass', 'road', 'indoor'] as const;
export type BackgroundKind = (typeof backgroundKinds)[number];

/** Pascal VOC's class names in index order (0 background); ShapeWorld draws a subset with the same ids. */
export const vocClassNames = [
  'background', 'aeroplane', 'bicycle', 'bird', 'boat', 'bottle', 'bus', 'car', 'cat', 'chair', 'cow',
  'diningtable', 'dog', 'horse', 'motorbike', 'person', 'pottedplant', 'sheep', 'sofa', 'train', 'tvmonitor',
] as const;

/** A box in pixels: left, top, width, height. */
export type Box = readonly [number, number, number, number];

/**
 * Maps the unit square of an object's box to pixels: u left → right (mirrored when facing left), v top → bottom,
 * then an in-plane rotation by `angle` around the box centre.
 */
export class Frame {
  private readonly c: number;
  private readonly s: number;
  constructor(readonly box: Box, readonly facing: 1 | -1, readonly angle = 0) {
    this.c = Math.cos(angle);
    this.s = Math.sin(angle);
  }
  point(u: number, v: number): [number, number] {
    const [x, y, w, h] = this.box;
    const dx = (this.facing > 0 ? u - 0.5 : 0.5 - u) * w, dy = (v - 0.5) * h;
    return [x + w / 2 + dx * this.c - dy * this.s, y + h / 2 + dx * this.s + dy * this.c];
  }
  /** A convex polygon through unit-square points [u0, v0, u1, v1, …]. */
  poly(uv: number[], color: Rgb): Primitive {
    const points: number[] = [];
    for (let k = 0; k < uv.length; k += 2) points.push(...this.point(uv[k]!, uv[k + 1]!));
    return { kind: 'polygon', points, color };
  }
  rect(u0: number, v0: number, u1: number, v1: number, color: Rgb): Primitive {
    return this.poly([u0, v0, u1, v0, u1, v1, u0, v1], color);
  }
  /** An ellipse with radii ru·w, rv·h, tilted by `tilt` (radians, mirrored with the frame). */
  ellipse(cu: number, cv: number, ru: number, rv: number, color: Rgb, tilt = 0): Primitive {
    const [cx, cy] = this.point(cu, cv);
    const [, , w, h] = this.box;
    return { kind: 'ellipse', cx, cy, rx: Math.max(ru * w, 0.5), ry: Math.max(rv * h, 0.5), angle: this.facing * tilt + this.angle, color };
  }
  /** A circle of radius r·h. */
  circle(cu: number, cv: number, r: number, color: Rgb): Primitive {
    const [cx, cy] = this.point(cu, cv);
    const rr = Math.max(r * this.box[3], 0.5);
    return { kind: 'ellipse', cx, cy, rx: rr, ry: rr, angle: 0, color };
  }
  /** A capsule (thick segment) of radius r·h, at least half a pixel. */
  capsule(u0: number, v0: number, u1: number, v1: number, r: number, color: Rgb): Primitive {
    const [x0, y0] = this.point(u0, v0), [x1, y1] = this.point(u1, v1);
    return { kind: 'capsule', x0, y0, x1, y1, r: Math.max(r * this.box[3], 0.6), color };
  }
}

/** Where a class stands: on the ground plane, on the water surface (also a ground plane) or in the air. */
export type Support = 'ground' | 'air';

export interface ClassSpec {
  /** Pascal VOC index */
  id: number;
  name: (typeof vocClassNames)[number];
  /** the words used in prompts: singular, plural */
  words: [string, string];
  /** relative frequency of the class on each background kind (absent: never) */
  affinity: Partial<Record<BackgroundKind, number>>;
  support: Support;
  /** ground: the height in metres (its pixel height follows from the horizon); air: [min, max] height as a fraction of the image */
  height: number | [number, number];
  /** box width / height range */
  aspect: [number, number];
  /** the largest in-plane tilt in radians */
  tilt: number;
  /** amplitude of the per-pixel texture noise */
  texture: number;
  draw(f: Frame, rand: () => number): Primitive[];
}

const pick = <T>(rand: () => number, xs: readonly T[]): T => xs[Math.floor(rand() * xs.length)]!;
/** A colour near `c`: each channel moved by up to ±j. */
const jitter = (rand: () => number, c: Rgb, j = 0.06): Rgb => c.map((v) => Math.min(1, Math.max(0, v + (rand() * 2 - 1) * j))) as unknown as Rgb;
const shade = (c: Rgb, k: number): Rgb => [c[0] * k, c[1] * k, c[2] * k];
const range = (rand: () => number, lo: number, hi: number) => lo + rand() * (hi - lo);

const black: Rgb = [0.06, 0.06, 0.07];
const tyre: Rgb = [0.1, 0.1, 0.11];
const glass: Rgb = [0.55, 0.75, 0.9];
const skins: Rgb[] = [[0.96, 0.8, 0.66], [0.87, 0.66, 0.5], [0.63, 0.45, 0.32], [0.42, 0.28, 0.2]];
const vivid: Rgb[] = [[0.85, 0.1, 0.1], [0.1, 0.3, 0.85], [0.95, 0.95, 0.95], [0.1, 0.1, 0.12], [0.95, 0.75, 0.1], [0.2, 0.6, 0.25], [0.6, 0.6, 0.65]];

export const classes: readonly ClassSpec[] = [
  {
    id: 1, name: 'aeroplane', words: ['aeroplane', 'aeroplanes'], affinity: { sky: 1 }, support: 'air',
    height: [0.18, 0.38], aspect: [1.9, 2.5], tilt: 0.25, texture: 0.04,
    draw(f, rand) {
      const body = jitter(rand, pick(rand, [[0.92, 0.92, 0.95], [0.75, 0.77, 0.8], [0.95, 0.95, 0.9]] as Rgb[]), 0.03);
      const accent = pick(rand, [[0.8, 0.1, 0.1], [0.1, 0.25, 0.7], [0.95, 0.6, 0.1]] as Rgb[]);
      const wing = shade(body, 0.8);
      return [
        f.poly([0.4, 0.5, 0.58, 0.52, 0.36, 0.98, 0.26, 0.98], wing), // far wing below, swept back
        f.poly([0.04, 0.5, 0.12, 0.06, 0.2, 0.06, 0.22, 0.5], accent), // tail fin
        f.poly([0.02, 0.5, 0.14, 0.62, 0.2, 0.62, 0.12, 0.5], wing), // tail plane
        f.ellipse(0.5, 0.52, 0.48, 0.11, body), // fuselage
        f.poly([0.42, 0.5, 0.6, 0.5, 0.38, 0.12, 0.3, 0.12], shade(body, 0.9)), // near wing, above
        f.rect(0.55, 0.46, 0.92, 0.5, [0.2, 0.3, 0.45]), // window strip
      ];
    },
  },
  {
    id: 3, name: 'bird', words: ['bird', 'birds'], affinity: { sky: 0.7, water: 0.35, grass: 0.25 }, support: 'air',
    height: [0.13, 0.24], aspect: [1.2, 1.6], tilt: 0.3, texture: 0.1,
    draw(f, rand) {
      const c = jitter(rand, pick(rand, [[0.12, 0.12, 0.14], [0.45, 0.3, 0.18], [0.2, 0.35, 0.7], [0.8, 0.25, 0.15]] as Rgb[]));
      const beak: Rgb = [0.95, 0.65, 0.1];
      const up = rand() < 0.5; // wings up or down: two poses
      return [
        f.poly([0.0, 0.42, 0.3, 0.55, 0.3, 0.68, 0.02, 0.66], shade(c, 0.85)), // tail
        f.ellipse(0.48, 0.62, 0.3, 0.16, c, -0.1), // body
        f.circle(0.78, 0.45, 0.14, c), // head
        f.poly([0.88, 0.4, 1.0, 0.48, 0.88, 0.52], beak),
        up ? f.poly([0.3, 0.58, 0.62, 0.58, 0.3, 0.0], shade(c, 1.25)) : f.poly([0.35, 0.6, 0.6, 0.6, 0.25, 1.0], shade(c, 1.25)),
        f.circle(0.8, 0.42, 0.035, [0.95, 0.95, 0.95]),
      ];
    },
  },
  {
    id: 4, name: 'boat', words: ['boat', 'boats'], affinity: { water: 1 }, support: 'ground',
    height: 2.0, aspect: [1.1, 1.6], tilt: 0.06, texture: 0.05,
    draw(f, rand) {
      const hull = jitter(rand, pick(rand, [[0.9, 0.9, 0.92], [0.75, 0.12, 0.1], [0.12, 0.2, 0.5], [0.15, 0.15, 0.15]] as Rgb[]));
      const prims = [f.poly([0.0, 0.62, 1.0, 0.62, 0.85, 1.0, 0.12, 1.0], hull), f.rect(0.0, 0.62, 1.0, 0.68, shade(hull, 0.7))];
      if (rand() < 0.55) {
        // sailing boat: mast and a white (or coloured) triangular sail
        const sail = pick(rand, [[0.97, 0.97, 0.95], [0.97, 0.97, 0.95], [0.9, 0.4, 0.2]] as Rgb[]);
        prims.unshift(f.capsule(0.5, 0.02, 0.5, 0.64, 0.02, [0.35, 0.25, 0.15]), f.poly([0.53, 0.04, 0.53, 0.58, 0.92, 0.58], sail), f.poly([0.47, 0.12, 0.47, 0.58, 0.14, 0.58], shade(sail, 0.9)));
      } else {
        // motor boat: cabin with windows
        prims.unshift(f.rect(0.3, 0.3, 0.72, 0.64, [0.93, 0.93, 0.93]), f.rect(0.36, 0.38, 0.66, 0.5, [0.25, 0.35, 0.5]));
      }
      return prims;
    },
  },
  {
    id: 6, name: 'bus', words: ['bus', 'buses'], affinity: { road: 0.8 }, support: 'ground',
    height: 3.2, aspect: [2.1, 2.7], tilt: 0, texture: 0.03,
    draw(f, rand) {
      const c = jitter(rand, pick(rand, [[0.95, 0.75, 0.1], [0.8, 0.12, 0.12], [0.15, 0.35, 0.75], [0.2, 0.6, 0.3]] as Rgb[]), 0.04);
      const prims = [f.rect(0.0, 0.04, 1.0, 0.88, c), f.rect(0.0, 0.72, 1.0, 0.8, shade(c, 0.65))];
      const n = 5;
      for (let k = 0; k < n; k++) prims.push(f.rect(0.06 + (k * 0.8) / n, 0.16, 0.06 + ((k + 0.8) * 0.8) / n, 0.46, glass));
      prims.push(f.rect(0.9, 0.16, 0.98, 0.66, glass)); // door/windscreen
      prims.push(f.circle(0.2, 0.88, 0.12, tyre), f.circle(0.8, 0.88, 0.12, tyre));
      prims.push(f.circle(0.2, 0.88, 0.05, [0.6, 0.6, 0.6]), f.circle(0.8, 0.88, 0.05, [0.6, 0.6, 0.6]));
      return prims;
    },
  },
  {
    id: 7, name: 'car', words: ['car', 'cars'], affinity: { road: 1 }, support: 'ground',
    height: 1.5, aspect: [1.9, 2.4], tilt: 0, texture: 0.03,
    draw(f, rand) {
      const c = jitter(rand, pick(rand, vivid), 0.04);
      return [
        f.poly([0.22, 0.42, 0.32, 0.04, 0.7, 0.04, 0.84, 0.42], c), // cabin
        f.poly([0.28, 0.4, 0.36, 0.12, 0.5, 0.12, 0.5, 0.4], glass),
        f.poly([0.54, 0.4, 0.54, 0.12, 0.67, 0.12, 0.77, 0.4], glass),
        f.poly([0.0, 0.5, 0.06, 0.38, 0.94, 0.38, 1.0, 0.5, 1.0, 0.8, 0.0, 0.8], c), // body
        f.rect(0.92, 0.48, 1.0, 0.56, [1, 0.95, 0.7]), // headlight
        f.circle(0.22, 0.78, 0.2, tyre), f.circle(0.78, 0.78, 0.2, tyre),
        f.circle(0.22, 0.78, 0.08, [0.7, 0.7, 0.72]), f.circle(0.78, 0.78, 0.08, [0.7, 0.7, 0.72]),
      ];
    },
  },
  {
    id: 9, name: 'chair', words: ['chair', 'chairs'], affinity: { indoor: 1 }, support: 'ground',
    height: 1.25, aspect: [0.6, 0.8], tilt: 0, texture: 0.08,
    draw(f, rand) {
      const c = jitter(rand, pick(rand, [[0.85, 0.62, 0.35], [0.85, 0.15, 0.1], [0.15, 0.4, 0.8], [0.92, 0.92, 0.9], [0.12, 0.12, 0.13]] as Rgb[]));
      const leg = shade(c, 0.75);
      return [
        f.capsule(0.12, 0.55, 0.12, 0.98, 0.035, leg), f.capsule(0.88, 0.55, 0.88, 0.98, 0.035, leg),
        f.capsule(0.3, 0.55, 0.3, 0.92, 0.03, shade(c, 0.55)), f.capsule(0.72, 0.55, 0.72, 0.92, 0.03, shade(c, 0.55)),
        f.rect(0.06, 0.0, 0.22, 0.58, c), // backrest post (side view, facing right)
        f.rect(0.06, 0.06, 0.22, 0.3, shade(c, 1.15)),
        f.rect(0.04, 0.5, 0.96, 0.6, shade(c, 1.1)), // seat
      ];
    },
  },
  {
    id: 10, name: 'cow', words: ['cow', 'cows'], affinity: { grass: 1 }, support: 'ground',
    height: 1.5, aspect: [1.4, 1.7], tilt: 0, texture: 0.08,
    draw(f, rand) {
      const spotted = rand() < 0.6;
      const c: Rgb = spotted ? [0.95, 0.95, 0.93] : jitter(rand, pick(rand, [[0.5, 0.3, 0.15], [0.35, 0.2, 0.1], [0.15, 0.13, 0.12]] as Rgb[]));
      const spot: Rgb = [0.08, 0.08, 0.08];
      const leg = shade(c, 0.85);
      const prims = [
        f.capsule(0.14, 0.55, 0.14, 0.97, 0.06, leg), f.capsule(0.3, 0.55, 0.3, 0.97, 0.06, shade(leg, 0.8)),
        f.capsule(0.62, 0.55, 0.62, 0.97, 0.06, leg), f.capsule(0.76, 0.55, 0.76, 0.97, 0.06, shade(leg, 0.8)),
        f.capsule(0.04, 0.3, 0.0, 0.62, 0.025, c), // tail
        f.ellipse(0.45, 0.45, 0.42, 0.22, c), // body
        f.poly([0.78, 0.3, 0.9, 0.12, 1.0, 0.36, 0.95, 0.5, 0.86, 0.5], c), // head
        f.poly([0.9, 0.14, 0.96, 0.02, 0.98, 0.16], [0.9, 0.88, 0.75]), // horn
        f.ellipse(0.95, 0.44, 0.05, 0.07, [0.9, 0.6, 0.6]), // muzzle
      ];
      if (spotted) for (let k = 0; k < 3; k++) prims.push(f.ellipse(range(rand, 0.2, 0.65), range(rand, 0.36, 0.52), range(rand, 0.06, 0.12), range(rand, 0.06, 0.1), spot, rand() * 3));
      return prims;
    },
  },
  {
    id: 15, name: 'person', words: ['person', 'people'], affinity: { road: 0.5, grass: 0.4, indoor: 0.6 }, support: 'ground',
    height: 1.75, aspect: [0.34, 0.44], tilt: 0, texture: 0.05,
    draw(f, rand) {
      const skin = pick(rand, skins);
      const shirt = jitter(rand, pick(rand, vivid), 0.08);
      const pants = jitter(rand, pick(rand, [[0.15, 0.2, 0.4], [0.1, 0.1, 0.1], [0.45, 0.35, 0.25], [0.3, 0.3, 0.32]] as Rgb[]));
      const hair = pick(rand, [[0.1, 0.07, 0.05], [0.35, 0.2, 0.1], [0.85, 0.7, 0.35]] as Rgb[]);
      const stride = range(rand, 0, 0.22);
      const arm = range(rand, 0.05, 0.45);
      return [
        f.capsule(0.5, 0.55, 0.5 - stride, 0.97, 0.05, shade(pants, 0.8)),
        f.capsule(0.5, 0.55, 0.5 + stride, 0.97, 0.05, pants),
        f.capsule(0.5, 0.2, 0.5 - arm, 0.52, 0.04, shade(shirt, 0.8)),
        f.poly([0.25, 0.2, 0.75, 0.2, 0.7, 0.58, 0.3, 0.58], shirt), // torso
        f.capsule(0.5, 0.2, 0.5 + arm, 0.52, 0.04, shirt),
        f.circle(0.5 + 0.5 * arm, 0.53, 0.035, skin), // hand
        f.circle(0.5, 0.1, 0.085, skin), // head
        f.ellipse(0.45, 0.055, 0.3, 0.05, hair, -0.2),
      ];
    },
  },
  {
    id: 16, name: 'pottedplant', words: ['potted plant', 'potted plants'], affinity: { indoor: 0.8, grass: 0.1 }, support: 'ground',
    height: 1.1, aspect: [0.6, 0.9], tilt: 0, texture: 0.12,
    draw(f, rand) {
      const pot = jitter(rand, pick(rand, [[0.75, 0.38, 0.2], [0.85, 0.85, 0.82], [0.25, 0.3, 0.5]] as Rgb[]));
      const leaf = jitter(rand, [0.15, 0.5, 0.15], 0.08);
      const prims: Primitive[] = [];
      const n = 5 + Math.floor(rand() * 3);
      for (let k = 0; k < n; k++) {
        const a = -Math.PI / 2 + ((k / (n - 1)) - 0.5) * 2.4 + (rand() - 0.5) * 0.3;
        const len = range(rand, 0.22, 0.32);
        prims.push(f.ellipse(0.5 + Math.cos(a) * len * 0.9, 0.5 + Math.sin(a) * len, 0.26, 0.07, shade(leaf, range(rand, 0.8, 1.2)), a));
      }
      prims.push(f.poly([0.18, 0.55, 0.82, 0.55, 0.7, 1.0, 0.3, 1.0], pot), f.rect(0.14, 0.55, 0.86, 0.63, shade(pot, 0.8)));
      return prims;
    },
  },
  {
    id: 17, name: 'sheep', words: ['sheep', 'sheep'], affinity: { grass: 0.9 }, support: 'ground',
    height: 1.0, aspect: [1.3, 1.6], tilt: 0, texture: 0.16,
    draw(f, rand) {
      const wool = jitter(rand, [0.93, 0.92, 0.86], 0.04);
      const face: Rgb = rand() < 0.7 ? [0.12, 0.11, 0.1] : [0.85, 0.8, 0.72];
      const leg: Rgb = [0.15, 0.13, 0.12];
      const prims = [
        f.capsule(0.22, 0.6, 0.22, 0.98, 0.05, leg), f.capsule(0.36, 0.6, 0.36, 0.98, 0.05, leg),
        f.capsule(0.6, 0.6, 0.6, 0.98, 0.05, leg), f.capsule(0.72, 0.6, 0.72, 0.98, 0.05, leg),
      ];
      // the fleece: overlapping puffs around an ellipse
      prims.push(f.ellipse(0.45, 0.45, 0.36, 0.26, wool));
      for (let k = 0; k < 7; k++) {
        const a = (k / 7) * 2 * Math.PI;
        prims.push(f.circle(0.45 + Math.cos(a) * 0.3, 0.45 + Math.sin(a) * 0.2, range(rand, 0.13, 0.17), shade(wool, range(rand, 0.9, 1.05))));
      }
      prims.push(f.ellipse(0.86, 0.38, 0.11, 0.15, face, 0.5), f.ellipse(0.8, 0.27, 0.06, 0.03, face, -0.4));
      return prims;
    },
  },
  {
    id: 20, name: 'tvmonitor', words: ['tv monitor', 'tv monitors'], affinity: { indoor: 0.8 }, support: 'ground',
    height: 1.2, aspect: [1.2, 1.5], tilt: 0, texture: 0.02,
    draw(f, rand) {
      const frame = pick(rand, [[0.08, 0.08, 0.09], [0.3, 0.3, 0.32], [0.8, 0.8, 0.82]] as Rgb[]);
      const screen = jitter(rand, pick(rand, [[0.2, 0.45, 0.8], [0.1, 0.15, 0.3], [0.35, 0.65, 0.5]] as Rgb[]), 0.08);
      return [
        f.rect(0.44, 0.7, 0.56, 0.94, shade(frame, 0.8)), // neck
        f.rect(0.26, 0.92, 0.74, 1.0, frame), // foot
        f.rect(0.0, 0.0, 1.0, 0.74, frame),
        f.rect(0.06, 0.07, 0.94, 0.66, screen),
        f.poly([0.06, 0.07, 0.4, 0.07, 0.06, 0.4], shade(screen, 1.35)), // glare
      ];
    },
  },
];

/** The class of a VOC id or name; throws naming the unknown value. */
export function classSpec(key: number | string): ClassSpec {
  const spec = classes.find((c) => c.id === key || c.name === key);
  if (!spec) throw new Error(`ShapeWorld has no class ${JSON.stringify(key)} (classes: ${classes.map((c) => c.name).join(', ')})`);
  return spec;
}
