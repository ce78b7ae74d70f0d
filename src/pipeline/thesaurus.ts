// Free-Mask's class-relation thesaurus: which backgrounds a foreground class fits, with weights, and the
// inverse. The release uses a fixed VOC table matched by exact name; ours is adaptive: names are normalised
// (case, spacing, plurals, VOC spellings and common synonyms), and a class no table knows is matched to the
// nearest known one by the cosine similarity of text embeddings (the pipeline's CLIP), the match and its score
// reported.

import { noGrad } from '../engine/autograd.ts';
import type { CLIPTextModel } from '../models/clip_text_model.ts';
import type { CLIPTokenizer } from '../models/clip_tokenizer.ts';
import { classes as worldClasses } from '../world/classes.ts';

export interface BackgroundWeight {
  background: string;
  weight: number;
}

export interface Thesaurus {
  name: string;
  /** Normalised class name → its backgrounds, weights summing to 1. */
  entries: ReadonlyMap<string, readonly BackgroundWeight[]>;
}

/** Spellings that name the same class, normalised to the VOC / Cityscapes name. */
const synonyms: Record<string, string> = {
  airplane: 'aeroplane', plane: 'aeroplane', aircraft: 'aeroplane',
  bike: 'bicycle',
  ship: 'boat',
  automobile: 'car',
  kitten: 'cat',
  'dining table': 'diningtable', table: 'diningtable',
  puppy: 'dog',
  motorcycle: 'motorbike', 'motor bike': 'motorbike',
  people: 'person', human: 'person', pedestrian: 'person',
  'potted plant': 'pottedplant', plant: 'pottedplant', houseplant: 'pottedplant',
  couch: 'sofa',
  'tv monitor': 'tvmonitor', tv: 'tvmonitor', television: 'tvmonitor', monitor: 'tvmonitor',
  'traffic lights': 'traffic light', 'traffic signs': 'traffic sign',
};

/** Plurals whose singular is not the word without its last "s". */
const irregular: Record<string, string> = { people: 'person', sheep: 'sheep', buses: 'bus', mice: 'mouse', geese: 'goose' };

/** The canonical form of a class name: lower case, single spaces, singular, synonyms resolved. */
export function normaliseClassName(name: string): string {
  let n = name.toLowerCase().replace(/[_\-\s]+/g, ' ').trim();
  if (synonyms[n]) return synonyms[n]!;
  const words = n.split(' ');
  const last = words[words.length - 1]!;
  const singular = irregular[last] ?? (last.length <= 3 || !last.endsWith('s') || last.endsWith('ss') ? last
    : /ies$/.test(last) ? `${last.slice(0, -3)}y` : /(x|z|ch|sh|ss)es$/.test(last) ? last.slice(0, -2) : last.slice(0, -1));
  n = [...words.slice(0, -1), singular].join(' ');
  return synonyms[n] ?? n;
}

/** A thesaurus from class → backgrounds (equal weights) or class → { background: weight }; weights normalised per class. */
export function makeThesaurus(name: string, table: Record<string, readonly string[] | Record<string, number>>): Thesaurus {
  const entries = new Map<string, BackgroundWeight[]>();
  for (const [cls, bgs] of Object.entries(table)) {
    const key = normaliseClassName(cls);
    if (!key) throw new Error(`${name}: an empty class name`);
    if (entries.has(key)) throw new Error(`${name}: class "${cls}" is listed twice (as "${key}")`);
    const pairs: [string, number][] = Array.isArray(bgs) ? bgs.map((b) => [b, 1]) : Object.entries(bgs as Record<string, number>);
    if (pairs.length === 0) throw new Error(`${name}: class "${cls}" has no backgrounds`);
    for (const [b, w] of pairs) {
      if (typeof b !== 'string' || !b.trim()) throw new Error(`${name}: class "${cls}" has an empty background name`);
      if (!(typeof w === 'number' && Number.isFinite(w) && w > 0)) throw new Error(`${name}: class "${cls}", background "${b}": the weight must be a positive number, got ${JSON.stringify(w)}`);
    }
    const total = pairs.reduce((a, [, w]) => a + w, 0);
    entries.set(key, pairs.map(([background, w]) => ({ background: background.trim().toLowerCase(), weight: w / total })));
  }
  if (entries.size === 0) throw new Error(`${name}: no classes`);
  return { name, entries };
}

/** A user's table: JSON of class → [backgrounds] or class → { background: weight }; errors name `source`. */
export function thesaurusFromJson(text: string, source: string): Thesaurus {
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch (e) {
    throw new Error(`${source}: not JSON (${(e as Error).message})`);
  }
  if (!json || typeof json !== 'object' || Array.isArray(json)) throw new Error(`${source}: expected an object of class → backgrounds`);
  for (const [cls, v] of Object.entries(json)) {
    const ok = (Array.isArray(v) && v.every((b) => typeof b === 'string')) || (v && typeof v === 'object' && !Array.isArray(v));
    if (!ok) throw new Error(`${source}: class "${cls}" must map to a list of background names or an object of background → weight, got ${JSON.stringify(v)}`);
  }
  return makeThesaurus(source, json as Record<string, string[] | Record<string, number>>);
}

/** The Free-Mask release's VOC table: each of the 20 classes with two backgrounds. */
export const vocThesaurus: Thesaurus = makeThesaurus('VOC (Free-Mask release)', {
  aeroplane: ['sky', 'runway'], bicycle: ['road', 'park'], bird: ['sky', 'tree branch'], boat: ['water', 'harbor'],
  bottle: ['table', 'kitchen'], bus: ['road', 'city street'], car: ['road', 'parking lot'], cat: ['indoor', 'garden'],
  chair: ['indoor', 'restaurant'], cow: ['grassland', 'farm'], diningtable: ['indoor', 'restaurant'], dog: ['grass', 'park'],
  horse: ['grassland', 'field'], motorbike: ['road', 'city street'], person: ['indoor', 'outdoor'], pottedplant: ['indoor', 'garden'],
  sheep: ['grassland', 'hillside'], sofa: ['indoor', 'living room'], train: ['railway', 'station'], tvmonitor: ['indoor', 'living room'],
});

/** ShapeWorld's: each class with the background kinds it is drawn on, weighted by the world's affinities. */
export const shapeWorldThesaurus: Thesaurus = makeThesaurus('ShapeWorld', Object.fromEntries(worldClasses.map((c) => [c.name, c.affinity as Record<string, number>])));

/**
 * Cityscapes' 19 evaluation classes. Things (person, rider, the vehicles) and small objects (pole, traffic light,
 * traffic sign) have the street scenes they appear in; stuff classes, which fill a scene rather than stand in it,
 * have the scene they belong to, so every class resolves.
 */
export const cityscapesThesaurus: Thesaurus = makeThesaurus('Cityscapes', {
  road: ['city street', 'highway'], sidewalk: ['city street', 'residential street'], building: ['city street', 'downtown'],
  wall: ['city street', 'residential street'], fence: ['residential street', 'road'], pole: ['city street', 'sidewalk'],
  'traffic light': ['intersection', 'city street'], 'traffic sign': ['city street', 'road'], vegetation: ['residential street', 'park'],
  terrain: ['roadside', 'park'], sky: ['city street', 'highway'], person: ['sidewalk', 'crosswalk'], rider: ['road', 'bike lane'],
  car: ['road', 'parking lot'], truck: ['road', 'highway'], bus: ['city street', 'bus stop'], train: ['tram track', 'station'],
  motorbike: ['road', 'city street'], bicycle: ['bike lane', 'sidewalk'],
});

/** Text embeddings of names (e.g. the pipeline's CLIP on "a photo of a {name}"), one vector per name. */
export type TextEmbedder = (names: readonly string[]) => Promise<Float32Array[]>;

export interface ThesaurusMatch {
  /** The class as asked. */
  query: string;
  /** The known class it resolved to. */
  match: string;
  /** 'name' (normalised names equal) or 'embedding' (nearest by cosine similarity). */
  how: 'name' | 'embedding';
  /** Cosine similarity of the embedding match (1 for a name match). */
  score: number;
  backgrounds: readonly BackgroundWeight[];
}

function cosine(a: Float32Array, b: Float32Array): number {
  let [ab, aa, bb] = [0, 0, 0];
  for (let i = 0; i < a.length; i++) {
    ab += a[i]! * b[i]!;
    aa += a[i]! * a[i]!;
    bb += b[i]! * b[i]!;
  }
  return ab / Math.sqrt(aa * bb || 1);
}

/**
 * The backgrounds of `className`: by normalised name, else (with `embed`) the known class nearest in embedding
 * space. Throws naming the class when neither finds one.
 */
export async function lookupClass(t: Thesaurus, className: string, embed?: TextEmbedder): Promise<ThesaurusMatch> {
  const key = normaliseClassName(className);
  const direct = t.entries.get(key);
  if (direct) return { query: className, match: key, how: 'name', score: 1, backgrounds: direct };
  const known = [...t.entries.keys()];
  if (!embed) throw new Error(`thesaurus ${t.name}: no class "${className}" (normalised "${key}"); known: ${known.join(', ')}; pass a text embedder to match it to the nearest one`);
  const [query, ...vectors] = await embed([key, ...known]);
  let best = -1;
  let score = -Infinity;
  vectors.forEach((v, i) => {
    const s = cosine(query!, v);
    if (s > score) [best, score] = [i, s];
  });
  if (best < 0 || !Number.isFinite(score)) throw new Error(`thesaurus ${t.name}: no class matches "${className}" by embedding`);
  return { query: className, match: known[best]!, how: 'embedding', score, backgrounds: t.entries.get(known[best]!)! };
}

/** The inverse: background → the classes that fit it, with the classes' weights for it. */
export function classesByBackground(t: Thesaurus): Map<string, { className: string; weight: number }[]> {
  const out = new Map<string, { className: string; weight: number }[]>();
  for (const [className, bgs] of t.entries) {
    for (const { background, weight } of bgs) {
      if (!out.has(background)) out.set(background, []);
      out.get(background)!.push({ className, weight });
    }
  }
  return out;
}

/** One of `items` drawn by weight (weights summing to 1) with `rand` ∈ [0, 1): a class's background, a background's class. */
export function drawWeighted<T extends { weight: number }>(items: readonly T[], rand: () => number): T {
  let u = rand();
  for (const b of items) if ((u -= b.weight) < 0) return b;
  return items[items.length - 1]!;
}

/** An embedder from a CLIP text model: the pooled output (end-token state) of "a photo of a {name}". */
export function clipTextEmbedder(tokenizer: CLIPTokenizer, textEncoder: CLIPTextModel): TextEmbedder {
  return async (names) => {
    const out = noGrad(() => textEncoder.forwardWithOutputs(names.map((n) => tokenizer.encode(`a photo of a ${n}`))));
    const [B, D] = out.pooledOutput.shape as [number, number];
    const pooled = Float32Array.from(await out.pooledOutput.toArray());
    out.lastHiddenState.dispose();
    out.pooledOutput.dispose();
    return Array.from({ length: B }, (_, i) => pooled.subarray(i * D, (i + 1) * D));
  };
}
