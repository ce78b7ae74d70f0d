// Free-Mask as one resumable, shardable job: per output image, everything follows from (seed, index) alone:
// (1) a single-object picture and its attention mask from the diffusion model, (4) the mask refined by an
// AffinityNet walk, (2)+(3) further objects of classes the thesaurus fits to the background, each generated the
// same way, cut out and placed by FOPA, (5) the pasted objects harmonized, (7) the generated picture's own objects
// split into instances. Finished images are kept one by one in `<out>.partial`, so a killed run resumes where it
// stopped; a shard (image k belongs to shard k mod N) is a dataset of its own, and `mergeDatasets` joins shards into
// the bytes a single run writes. Timings live in manifest.json alone.

import { manualSeed, seededRandom, spreadSeed, subSeed } from '../engine/random-cpu.ts';
import { nodeFs, writeFileAtomic } from '../io/fs.ts';
import { imageToTensor, tensorToImage } from '../io/image.ts';
import { decodePng, decodeIndexedPng, encodeIndexedPng, encodePng } from '../io/png.ts';
import { AffinityNet, affinityNetFine } from '../models/affinity_net.ts';
import type { ObPlaNet } from '../models/fopa.ts';
import type { IrnNet } from '../models/irn/model.ts';
import type { StableDiffusionPipeline } from '../models/stable_diffusion.ts';
import { type CocoAnnotation, type CocoFile, parseCoco } from '../data/coco.ts';
import { instanceAnnotations, objectBoxes, readWorldPrompts } from '../data/dataset.ts';
import { makeVocFolders, vocFolders, vocPalette, writeVocSample } from '../data/voc.ts';
import { classes as worldClasses, type BackgroundKind } from '../world/classes.ts';
import { scenePrompt } from '../world/scene.ts';
import type { AttentionMaskConfig } from './attention_mask.ts';
import { type Layer, composeLayers, cutOut, harmonizePasted, placeCutout, uncertain } from './compose.ts';
import { ZOO_ATTENTION_PRESET } from './evaluate_diffusion.ts';
import type { Harmonizer } from './harmonize.ts';
import { type InstanceMethod, instancesFromSemantic, objectMap } from './instances.ts';
import { placeObject, randomPlacement } from './placement.ts';
import { defaultBand, fineRefinement, refineMask, trainAffinityNet } from './refine.ts';
import { generateObjects } from './single_object.ts';
import { type BackgroundWeight, type TextEmbedder, type Thesaurus, drawWeighted, lookupClass, shapeWorldThesaurus } from './thesaurus.ts';

/** The stages after stage 1 that can be switched off (the ablation table runs the same job with fewer). */
export type GenerateStage = 'refine' | 'compose' | 'harmonize' | 'instances';
export const generateStages: readonly GenerateStage[] = ['refine', 'compose', 'harmonize', 'instances'];

/** A class the job can draw: its label, the words its prompt uses, the backgrounds it fits (weights sum to 1). */
export interface GenerateClass {
  id: number;
  name: string;
  word: string;
  backgrounds: readonly BackgroundWeight[];
  /** How the thesaurus matched it (name or nearest by embedding, with the score). */
  match?: { thesaurusClass: string; how: 'name' | 'embedding'; score: number };
}

export interface ClassList {
  /** What it was made from: 'shapeworld', 'voc', a file, a comma list. */
  source: string;
  thesaurus: string;
  classes: readonly GenerateClass[];
  /** The prompt of one or more classes on a background; it contains each class's word (its tokens give the mask). */
  prompt: (classes: readonly GenerateClass[], background: string) => string;
}

const normalised = (b: readonly BackgroundWeight[]) => {
  const total = b.reduce((a, x) => a + x.weight, 0);
  return b.map((x) => ({ background: x.background, weight: x.weight / total }));
};

/** ShapeWorld's classes (VOC ids) with the prompts the zoo's Stable Diffusion was trained on ("a photo of a boat on water"). */
export function shapeWorldClassList(): ClassList {
  return {
    source: 'shapeworld', thesaurus: shapeWorldThesaurus.name,
    classes: worldClasses.map((c) => ({ id: c.id, name: c.name, word: c.words[0], backgrounds: normalised(shapeWorldThesaurus.entries.get(c.name)!) })),
    prompt: (cs, background) => scenePrompt(cs.map((c) => ({ classId: c.id })), background as BackgroundKind),
  };
}

/** How VOC's run-together names read in a prompt. */
const vocWords: Record<string, string> = { diningtable: 'dining table', pottedplant: 'potted plant', tvmonitor: 'tv monitor' };

/**
 * A class list from names (ids 1, 2, … in the given order): each class's backgrounds from `thesaurus` by its
 * normalised name, else (with `embed`) from the nearest known class, the match recorded; an error names a class
 * that fits nothing. Prompts: "a photo of a {class}, {background}" ("a photo of a cat and a dog, indoor" for several).
 */
export async function classListFromNames(names: readonly string[], thesaurus: Thesaurus, source: string, embed?: TextEmbedder): Promise<ClassList> {
  const clean = names.map((n) => n.trim());
  if (clean.length === 0) throw new Error(`--classes: no class names in '${source}'`);
  if (clean.includes('')) throw new Error(`--classes: '' is not a class name (in '${source}')`);
  if (clean.length > 254) throw new Error(`--classes: ${clean.length} classes; at most 254 fit an 8-bit mask`);
  const dup = clean.find((n, i) => clean.indexOf(n) !== i);
  if (dup) throw new Error(`--classes: '${dup}' is listed twice`);
  const classes: GenerateClass[] = [];
  for (const [i, name] of clean.entries()) {
    const m = await lookupClass(thesaurus, name, embed).catch((e: Error) => {
      throw new Error(`--classes: class '${name}': ${e.message}`);
    });
    const backgrounds = m.backgrounds.filter((b) => b.weight > 0);
    if (backgrounds.length === 0) throw new Error(`--classes: class '${name}' fits no background in thesaurus ${thesaurus.name}`);
    classes.push({ id: i + 1, name, word: vocWords[name] ?? name, backgrounds: normalised(backgrounds), match: { thesaurusClass: m.match, how: m.how, score: m.score } });
  }
  return {
    source, thesaurus: thesaurus.name, classes,
    prompt: (cs, background) => {
      const named = cs.map((c) => `${/^[aeiou]/i.test(c.word) ? 'an' : 'a'} ${c.word}`);
      return `a photo of ${named.length > 1 ? `${named.slice(0, -1).join(', ')} and ${named[named.length - 1]}` : named[0]}, ${background}`;
    },
  };
}

export interface GenerateOptions {
  /** The dataset folder to write (complete when it exists; the work in progress is in `<out>.partial`). */
  out: string;
  count: number;
  seed?: number;
  pipe: StableDiffusionPipeline;
  classes: ClassList;
  /** Stages after stage 1 (default all); 'compose' needs `fopa`, 'harmonize' a `harmonizer`. */
  stages?: readonly GenerateStage[];
  numInferenceSteps?: number;
  guidanceScale?: number;
  /** How attention becomes a mask (default: the zoo's preset). */
  mask?: AttentionMaskConfig;
  /** Share of images that get further objects (default 0.5), and how many, [min, max] (default [1, 2]). */
  multi?: number;
  /** How further objects get in: pasted by the composition stage (default, Free-Mask), or named in the prompt and drawn by the diffusion model itself. */
  multiBy?: 'compose' | 'prompt';
  objects?: [number, number];
  order?: 'paste' | 'ground';
  fopa?: ObPlaNet;
  /** Where pasted objects go: FOPA's search (default), or uniformly at random (the control). */
  placement?: 'fopa' | 'random';
  /** FOPA's input size (default: the picture's). */
  fopaSize?: number;
  harmonizer?: { name: string; run: Harmonizer };
  /** How the generated picture's own objects become instances (default: 'irn' with `irn`, else 'components'). */
  instanceMethod?: InstanceMethod;
  irn?: IrnNet;
  /** This job's part: images k with k mod count = index (default the whole). */
  shard?: { index: number; count: number };
  /** What else identifies the run (model folder hashes, …): a rerun must give the same to resume. */
  identity?: Record<string, unknown>;
  /**
   * A folder of stage-1 results (picture, attention mask, refined mask) shared between runs, keyed by `model` (what
   * identifies the diffusion model, e.g. its folder's hash), the prompt, the seed and the sampling and mask settings:
   * jobs that differ only in later stages (the ablation rows) sample each picture once. It changes no output byte.
   */
  cache?: { dir: string; model: string };
  onImage?: (done: number, total: number, id: string) => void;
}

/** One finished image as the job keeps it: the COCO entries, the prompt and where every part came from. */
interface ImageRecord {
  index: number;
  id: string;
  image: CocoFile['images'][number];
  annotations: CocoAnnotation[];
  prompt: string;
  provenance: Record<string, unknown>;
  seconds: Record<string, number>;
}

/**
 * An image's state before the stages that changed it, written to stages/<id>/<name>.png: `picture` the stage-1
 * picture before composition, `attention` and `refined` its mask before and after refinement (class ids), `composite`
 * the picture before harmonization.
 */
interface StageImages {
  picture?: Uint8Array;
  attention?: Uint8Array;
  refined?: Uint8Array;
  composite?: Uint8Array;
}

/** Writes `before`'s images of image `id` (the folder `stages/<id>`), each atomically. */
async function writeStageImages(dir: string, id: string, width: number, height: number, before: StageImages): Promise<void> {
  const entries = Object.entries(before) as [keyof StageImages, Uint8Array][];
  if (!entries.length) return;
  nodeFs(`writing ${dir}`).mkdirSync(`${dir}/stages/${id}`, { recursive: true });
  for (const [name, data] of entries) {
    const png = name === 'attention' || name === 'refined' ? encodeIndexedPng({ width, height, indices: data, palette: vocPalette }) : await encodePng({ width, height, channels: 3, data });
    writeFileAtomic(`${dir}/stages/${id}/${name}.png`, png);
  }
}

const encoder = new TextEncoder();
const json = (v: unknown) => encoder.encode(`${JSON.stringify(v)}\n`);
const imageIdOf = (index: number) => `gen${String(index).padStart(7, '0')}`;

/** Everything that decides the bytes of the output (a resumed run must match it). */
function settingsOf(o: GenerateOptions): Record<string, unknown> {
  const [W, H] = [o.pipe.sampleSize[1] * o.pipe.vaeScaleFactor, o.pipe.sampleSize[0] * o.pipe.vaeScaleFactor];
  return {
    count: o.count, seed: o.seed ?? 0, size: [W, H], stages: generateStages.filter((s) => (o.stages ?? generateStages).includes(s)),
    classes: { source: o.classes.source, thesaurus: o.classes.thesaurus, list: o.classes.classes },
    numInferenceSteps: o.numInferenceSteps ?? 20, guidanceScale: o.guidanceScale ?? 5, mask: o.mask ?? ZOO_ATTENTION_PRESET,
    multi: o.multi ?? 0.5, multiBy: o.multiBy ?? 'compose', objects: o.objects ?? [1, 2], order: o.order ?? 'paste', placement: o.placement ?? 'fopa', fopaSize: o.fopaSize ?? W,
    harmonizer: o.harmonizer?.name ?? null, instanceMethod: o.instanceMethod ?? (o.irn ? 'irn' : 'components'),
    identity: o.identity ?? {},
  };
}

function checkOptions(o: GenerateOptions, stages: readonly GenerateStage[]): void {
  if (!o.out) throw new Error('--out: a directory is required');
  if (!Number.isInteger(o.count) || o.count < 1) throw new Error(`--count: expected a positive integer, got ${o.count}`);
  const bad = stages.find((s) => !generateStages.includes(s));
  if (bad) throw new Error(`--stages: unknown stage '${bad}' (expected ${generateStages.join(', ')})`);
  const { index, count } = o.shard ?? { index: 0, count: 1 };
  if (!Number.isInteger(count) || count < 1 || !Number.isInteger(index) || index < 0 || index >= count) throw new Error(`--shard: expected K/N with 0 ≤ K < N, got ${index}/${count}`);
  if (count > o.count) throw new Error(`--shard: ${count} shards for ${o.count} images leaves shard(s) empty; use at most ${o.count}`);
  const multi = o.multi ?? 0.5;
  if (!(multi >= 0 && multi <= 1)) throw new Error(`--multi: expected a share from 0 to 1, got ${multi}`);
  const [lo, hi] = o.objects ?? [1, 2];
  if (!(Number.isInteger(lo) && Number.isInteger(hi) && lo >= 1 && hi >= lo)) throw new Error(`--objects: expected N or MIN-MAX with 1 ≤ MIN ≤ MAX, got ${lo}-${hi}`);
  if (o.placement !== undefined && o.placement !== 'fopa' && o.placement !== 'random') throw new Error(`--placement: expected fopa or random, got '${o.placement}'`);
  if (o.multiBy !== undefined && o.multiBy !== 'compose' && o.multiBy !== 'prompt') throw new Error(`--multi-by: expected compose or prompt, got '${o.multiBy}'`);
  if (stages.includes('compose') && (o.multiBy ?? 'compose') === 'compose' && (o.placement ?? 'fopa') === 'fopa' && !o.fopa) throw new Error("--stages: 'compose' needs a FOPA model (--fopa DIR) or --placement random");
  if (stages.includes('harmonize') && !o.harmonizer) throw new Error("--stages: 'harmonize' needs a harmonizer (--harmonizer)");
  const method = o.instanceMethod ?? (o.irn ? 'irn' : 'components');
  if (stages.includes('instances') && method !== 'components' && !o.irn) throw new Error(`--instances: method '${method}' needs an instance model (--irn DIR)`);
}

/** A picture of classes `cs` on `background` from `seed`: bytes, its mask (class ids, 255 uncertain), refined when asked. */
async function singleObject(o: GenerateOptions, cs: readonly GenerateClass[], background: string, seed: number, refine: boolean, seconds: Record<string, number>) {
  let t = performance.now();
  const prompt = o.classes.prompt(cs, background);
  const objects = cs.map((c) => ({ word: c.word, classId: c.id }));
  const sampling = { prompt, seed, numInferenceSteps: o.numInferenceSteps ?? 20, guidanceScale: o.guidanceScale ?? 5, mask: o.mask ?? ZOO_ATTENTION_PRESET };
  const cache = o.cache && stageCache(o.cache);
  const key = cache?.key({ model: o.cache!.model, objects, ...sampling });
  let drawn = key ? await cache!.read(key) : undefined;
  if (!drawn) {
    const g = await generateObjects(o.pipe, objects, sampling);
    try {
      const [H, W] = g.image.shape.slice(2) as [number, number];
      drawn = { width: W, height: H, image: (await tensorToImage(g.image)).data as Uint8Array, mask: g.mask };
    } finally {
      g.image.dispose();
    }
    if (key) await cache!.write(key, drawn);
  }
  seconds.single = (seconds.single ?? 0) + (performance.now() - t) / 1000;
  const { width, height, image } = drawn;
  let mask = drawn.mask;
  if (refine && mask.some((v) => v !== 0 && v !== uncertain)) {
    t = performance.now();
    const refinedKey = key && cache!.key({ refines: key, fineRefinement, defaultBand });
    const cached = refinedKey ? await cache!.read(refinedKey) : undefined;
    if (cached) mask = cached.mask;
    else {
      // psa trains its AffinityNet on the CAMs it refines; here on this picture's own mask (the 8-bit picture the
      // dataset holds), from a seed of its own
      manualSeed(subSeed(seed, 0x52454649));
      const net = new AffinityNet(affinityNetFine);
      const pixels = imageToTensor({ width, height, channels: 3, data: image });
      try {
        await trainAffinityNet(net, [{ image: pixels, mask }], { ...fineRefinement.train, batchSize: 1 });
        mask = await refineMask(net, pixels, mask, fineRefinement.walk, defaultBand);
      } finally {
        net.dispose();
        pixels.dispose();
      }
      if (refinedKey) await cache!.write(refinedKey, { width, height, image, mask });
    }
    seconds.refine = (seconds.refine ?? 0) + (performance.now() - t) / 1000;
  }
  return { prompt, width, height, image, mask, attention: drawn.mask };
}

interface Drawn {
  width: number;
  height: number;
  image: Uint8Array;
  mask: Uint8Array;
}

/** The stage-1 cache in `dir`: `<key>.png` (the picture) and `<key>.mask.png` (its mask), the mask written last. */
function stageCache({ dir }: { dir: string }) {
  const fs = nodeFs(`the stage-1 cache ${dir}`);
  const crypto = (globalThis as { process?: { getBuiltinModule?: (m: string) => unknown } }).process?.getBuiltinModule?.('node:crypto') as { createHash(a: string): { update(s: string): { digest(e: string): string } } };
  fs.mkdirSync(dir, { recursive: true });
  return {
    key: (what: unknown) => crypto.createHash('sha256').update(JSON.stringify(what)).digest('hex').slice(0, 32),
    async read(key: string): Promise<Drawn | undefined> {
      const path = `${dir}/${key}`;
      if (!fs.existsSync(`${path}.mask.png`)) return undefined;
      const picture = await decodePng(fs.readFileSync(`${path}.png`), `${path}.png`);
      const mask = decodeIndexedPng(fs.readFileSync(`${path}.mask.png`), `${path}.mask.png`);
      return { width: picture.width, height: picture.height, image: picture.data as Uint8Array, mask: mask.indices };
    },
    async write(key: string, d: Drawn): Promise<void> {
      const path = `${dir}/${key}`;
      writeFileAtomic(`${path}.png`, await encodePng({ width: d.width, height: d.height, channels: 3, data: d.image }));
      writeFileAtomic(`${path}.mask.png`, encodeIndexedPng({ width: d.width, height: d.height, indices: d.mask, palette: vocPalette }));
    },
  };
}

/** Image `index` of the job: every draw from (seed, index); stages switched off skip their work, not their draws. */
async function generateImage(o: GenerateOptions, stages: readonly GenerateStage[], index: number): Promise<{ record: ImageRecord; semantic: Uint8Array; instance: Uint8Array; image: Uint8Array; before: StageImages }> {
  const seed = spreadSeed(o.seed ?? 0);
  const rand = seededRandom(subSeed(seed, index));
  const list = o.classes.classes;
  const main = list[Math.floor(rand() * list.length)]!;
  const { background } = drawWeighted(main.backgrounds, rand);
  // the pasted objects: how many, and their classes among those that fit this background
  const multi = rand() < (o.multi ?? 0.5);
  const [lo, hi] = o.objects ?? [1, 2];
  const m = lo + Math.floor(rand() * (hi - lo + 1));
  const fitting = list.flatMap((c) => c.backgrounds.filter((b) => b.background === background).map((b) => ({ c, weight: b.weight })));
  const total = fitting.reduce((a, f) => a + f.weight, 0);
  const extra = Array.from({ length: m }, () => drawWeighted(fitting.map((f) => ({ ...f, weight: f.weight / total })), rand).c);
  const seconds: Record<string, number> = {};
  const refine = stages.includes('refine');
  // with multiBy 'prompt' the further classes are named in the first picture's prompt instead of pasted
  const byPrompt = (o.multiBy ?? 'compose') === 'prompt' && multi && stages.includes('compose');
  const drawn = byPrompt ? [main, ...extra].filter((c, i, all) => all.indexOf(c) === i) : [main];
  const s0 = await singleObject(o, drawn, background, subSeed(seed, index, 0), refine, seconds);
  const { width: W, height: H } = s0;
  const provenance: Record<string, unknown> = { class: main.name, ...(byPrompt && { prompted: drawn.map((c) => c.name) }), background, prompt: s0.prompt, seed: subSeed(seed, index, 0) };
  const layers: Layer[] = [];
  const pasted: Record<string, unknown>[] = [];
  if (stages.includes('compose') && multi && !byPrompt) {
    for (const [j, c] of extra.entries()) {
      const objectSeed = subSeed(seed, index, j + 1);
      const s = await singleObject(o, [c], background, objectSeed, refine, seconds);
      const t = performance.now();
      const what = { class: c.name, prompt: s.prompt, seed: objectSeed };
      if (!s.mask.some((v) => v === c.id)) {
        pasted.push({ ...what, skipped: 'its attention mask is empty' });
        continue;
      }
      const cut = cutOut({ id: `${imageIdOf(index)}/${j + 1}`, width: W, height: H, image: s.image, semantic: s.mask, classId: c.id, background });
      const bg = { width: W, height: H, channels: 3 as const, data: s0.image };
      const placeSeed = subSeed(seed, index, j + 1, 0x504c4143);
      const where = o.placement === 'random' ? randomPlacement(W, H, cut, placeSeed) : await placeObject(o.fopa!, bg, cut, placeSeed, { size: o.fopaSize ?? W, what: `a ${c.name}` }).catch((e: Error) => e);
      seconds.compose = (seconds.compose ?? 0) + (performance.now() - t) / 1000;
      if (where instanceof Error) {
        if (!/no location/.test(where.message)) throw where;
        pasted.push({ ...what, skipped: 'no placement left' });
        continue;
      }
      const place = { ...what, scale: where.scale, box: where.box.map((v) => Number(v.toFixed(2))), ...(Number.isNaN(where.score) ? { placement: 'random' } : { fopa_score: Number(where.score.toFixed(6)) }) };
      pasted.push(place);
      layers.push(placeCutout(cut, c.id, where.box, W, H, place));
    }
  }
  // what the stages changed, kept so the gallery can show before and after
  const before: StageImages = {};
  if (layers.length) before.picture = s0.image;
  if (refine && s0.attention !== s0.mask) [before.attention, before.refined] = [s0.attention, s0.mask];
  let t = performance.now();
  const c = composeLayers(W, H, { image: s0.image, semantic: s0.mask }, layers, { order: o.order ?? 'paste' });
  seconds.compose = (seconds.compose ?? 0) + (performance.now() - t) / 1000;
  if (stages.includes('harmonize') && layers.length) {
    t = performance.now();
    before.composite = c.image;
    c.image = await harmonizePasted(c, layers, o.harmonizer!.run);
    seconds.harmonize = (performance.now() - t) / 1000;
  }
  let instances = c.instances.map((i) => ({ id: i.id, classId: i.classId, bbox: i.bbox, area: i.area, extra: { provenance: i.provenance ?? {} } }));
  let instance = c.instance;
  const ownPixels = c.instances.filter((i) => i.layer >= layers.length);
  const method = o.instanceMethod ?? (o.irn ? 'irn' : 'components');
  if (stages.includes('instances') && ownPixels.length) {
    // the pasted objects are exact instances already; the generated picture's own class regions may hold several objects
    t = performance.now();
    const own = new Set(ownPixels.map((i) => i.id));
    const semantic = Uint8Array.from(c.semantic, (v, p) => (own.has(c.instance[p]!) ? v : 0));
    const detections = await instancesFromSemantic({ width: W, height: H, image: c.image, semantic }, method, o.irn);
    const split = objectMap(semantic, detections);
    // pasted instances keep their ids (near to far, in front); the picture's own fragments follow
    const front = c.instances.filter((i) => i.layer < layers.length);
    const offset = front.length;
    // ids stop at 254 (8-bit maps, 255 uncertain): fragments beyond it become uncertain, as objectMap does
    instance = Uint8Array.from(c.instance, (v, p) => (own.has(v) ? (split[p] === uncertain || split[p]! + offset >= uncertain ? uncertain : split[p]! + offset) : v));
    const fragments = [...objectBoxes(instance, W)].filter(([id]) => id > offset).sort((a, b) => a[0] - b[0])
      .map(([id, b]) => ({ id, classId: c.semantic[instance.indexOf(id)]!, ...b, extra: { provenance: { source: 'generated', method } } }));
    instances = [...instances.filter((i) => i.id <= offset), ...fragments];
    seconds.instances = (performance.now() - t) / 1000;
  }
  provenance.pasted = pasted;
  provenance.instances = stages.includes('instances') ? method : 'layers';
  provenance.before = Object.keys(before);
  const id = imageIdOf(index);
  const sample = { id, imageId: index, width: W, height: H, instance, instances };
  const prompt = s0.prompt;
  return {
    record: {
      index, id, prompt, provenance, seconds,
      image: { id: index, file_name: `${vocFolders.images}/${id}.png`, width: W, height: H, prompt, background, class: main.name },
      annotations: instanceAnnotations(sample),
    },
    semantic: c.semantic, instance, image: c.image, before,
  };
}

/** What a finished dataset's manifest says. */
export interface GenerateManifest {
  generator: 'freemask generate';
  settings: Record<string, unknown>;
  shard: { index: number; count: number };
  categories: { id: number; name: string }[];
  count: number;
  images: { index: number; id: string; provenance: Record<string, unknown> }[];
  /** Seconds per image and stage: the only part that differs between runs. */
  timings: { id: string; seconds: Record<string, number> }[];
  complete: true;
}

/** Writes the dataset's shared files from its images' records (any order) and renames `tmp` to `out`. */
function finishDataset(tmp: string, out: string, settings: Record<string, unknown>, shard: { index: number; count: number }, records: ImageRecord[]): GenerateManifest {
  const fs = nodeFs(`finishing ${out}`);
  records.sort((a, b) => a.index - b.index);
  const list = (settings.classes as { list: GenerateClass[] }).list;
  const categories = list.map((c) => ({ id: c.id, name: c.name }));
  const coco: CocoFile = {
    info: { description: 'freemask generate', version: '1' }, images: records.map((r) => r.image),
    annotations: records.flatMap((r) => r.annotations), categories: categories.map((c) => ({ ...c, supercategory: 'object' })),
  };
  fs.mkdirSync(`${tmp}/${vocFolders.sets}`, { recursive: true });
  fs.mkdirSync(`${tmp}/annotations`, { recursive: true });
  writeFileAtomic(`${tmp}/${vocFolders.sets}/train.txt`, encoder.encode(records.map((r) => `${r.id}\n`).join('')));
  writeFileAtomic(`${tmp}/annotations/instances_train.json`, encoder.encode(JSON.stringify(coco)));
  writeFileAtomic(`${tmp}/prompts.jsonl`, encoder.encode(records.map((r) => JSON.stringify({ id: r.id, seed: r.index, prompt: r.prompt }) + '\n').join('')));
  const manifest: GenerateManifest = {
    generator: 'freemask generate', settings, shard, categories, count: records.length,
    images: records.map((r) => ({ index: r.index, id: r.id, provenance: r.provenance })),
    timings: records.map((r) => ({ id: r.id, seconds: Object.fromEntries(Object.entries(r.seconds).map(([k, v]) => [k, Number(v.toFixed(3))])) })),
    complete: true,
  };
  // the manifest last: a partial folder that has one is finished and only needs cleaning and renaming
  writeFileAtomic(`${tmp}/manifest.json`, encoder.encode(JSON.stringify(manifest, null, 1) + '\n'));
  moveFinished(tmp, out);
  return manifest;
}

/** Drops the job's bookkeeping (per-image records, settings) from a finished `tmp` and renames it to `out`. */
function moveFinished(tmp: string, out: string): void {
  const fs = nodeFs(`finishing ${out}`);
  fs.rmSync(`${tmp}/records`, { recursive: true, force: true });
  fs.rmSync(`${tmp}/settings.json`, { force: true });
  fs.renameSync(tmp, out);
}

/** Removes the temporary files of writes a kill interrupted (writeFileAtomic's `*.tmp`), which would otherwise end up in the dataset. */
function removeInterruptedWrites(dir: string): void {
  const fs = nodeFs(`cleaning ${dir}`);
  for (const name of fs.readdirSync(dir)) {
    const p = `${dir}/${name}`;
    if (fs.statSync(p).isDirectory()) removeInterruptedWrites(p);
    else if (name.endsWith('.tmp')) fs.rmSync(p, { force: true });
  }
}

/** The manifest of a finished generate dataset at `dir`, or undefined when `dir` is not one. */
export function readGenerateManifest(dir: string): GenerateManifest | undefined {
  const fs = nodeFs(`reading ${dir}`);
  if (!fs.existsSync(`${dir}/manifest.json`)) return undefined;
  const m = JSON.parse(new TextDecoder().decode(fs.readFileSync(`${dir}/manifest.json`))) as GenerateManifest;
  return m.generator === 'freemask generate' && m.complete === true ? m : undefined;
}

/**
 * Generates the dataset (or this shard of it) into `out`. Resumes `<out>.partial` when it holds the same
 * settings; returns at once when `out` is already this run's finished dataset; refuses any other existing `out`.
 */
export async function generateDataset(o: GenerateOptions): Promise<GenerateManifest> {
  const stages = o.stages ?? generateStages;
  checkOptions(o, stages);
  const fs = nodeFs(`generating ${o.out}`);
  const out = o.out.replace(/\/+$/, '');
  const shard = o.shard ?? { index: 0, count: 1 };
  const settings = settingsOf(o);
  const same = (s: unknown) => JSON.stringify(s) === JSON.stringify(settings);
  if (fs.existsSync(out)) {
    const m = readGenerateManifest(out);
    if (m && same(m.settings) && m.shard.index === shard.index && m.shard.count === shard.count) return m;
    throw new Error(`--out: ${out} already exists and holds ${m ? 'a generated dataset with other settings' : 'something else'}; choose a new directory (nothing there was changed)`);
  }
  const parent = out.includes('/') ? out.replace(/\/[^/]*$/, '') || '/' : '.';
  if (!fs.existsSync(parent)) throw new Error(`--out: parent directory ${parent} does not exist`);
  const tmp = `${out}.partial`;
  const identity = { settings, shard };
  if (fs.existsSync(tmp)) {
    // killed while finishing: the manifest was written, only the cleaning and the rename are left
    const finished = readGenerateManifest(tmp);
    if (finished && same(finished.settings) && finished.shard.index === shard.index && finished.shard.count === shard.count) {
      removeInterruptedWrites(tmp);
      moveFinished(tmp, out);
      return finished;
    }
    const saved = fs.existsSync(`${tmp}/settings.json`) ? new TextDecoder().decode(fs.readFileSync(`${tmp}/settings.json`)) : '';
    if (saved !== JSON.stringify(identity)) throw new Error(`--out: ${tmp} holds an unfinished run with other settings (or is not one); rerun that run's command, or remove ${tmp}`);
    removeInterruptedWrites(tmp);
  } else {
    // a folder a kill left before it became the partial folder holds nothing of value
    fs.rmSync(`${tmp}.new`, { recursive: true, force: true });
    makeVocFolders(`${tmp}.new`);
    fs.mkdirSync(`${tmp}.new/records`);
    writeFileAtomic(`${tmp}.new/settings.json`, encoder.encode(JSON.stringify(identity)));
    fs.renameSync(`${tmp}.new`, tmp);
  }
  const mine = Array.from({ length: o.count }, (_, k) => k).filter((k) => k % shard.count === shard.index);
  const records: ImageRecord[] = [];
  for (const [done, index] of mine.entries()) {
    const path = `${tmp}/records/${imageIdOf(index)}.json`;
    if (fs.existsSync(path)) {
      records.push(JSON.parse(new TextDecoder().decode(fs.readFileSync(path))) as ImageRecord);
    } else {
      const g = await generateImage(o, stages, index);
      await writeVocSample(tmp, { id: g.record.id, width: g.record.image.width, height: g.record.image.height, image: g.image, semantic: g.semantic, objects: g.instance });
      await writeStageImages(tmp, g.record.id, g.record.image.width, g.record.image.height, g.before);
      // the record last: an image without one is redone
      writeFileAtomic(path, json(g.record));
      records.push(g.record);
    }
    o.onImage?.(done + 1, mine.length, imageIdOf(index));
  }
  return finishDataset(tmp, out, settings, shard, records);
}

/**
 * Joins the shards of one generate run (every shard 0..N−1 of the same settings, each finished) into `out`:
 * the same bytes as one machine's run, manifest timings aside.
 */
export function mergeDatasets(dirs: readonly string[], out: string): GenerateManifest {
  const fs = nodeFs(`merging into ${out}`);
  if (dirs.length === 0) throw new Error('merge: no shard folders given');
  if (fs.existsSync(out)) throw new Error(`--out: ${out} already exists; choose a new directory`);
  const manifests = dirs.map((d) => {
    const m = readGenerateManifest(d);
    if (!m) throw new Error(`merge: ${d} is not a finished generate dataset (no complete manifest.json)`);
    return m;
  });
  const settings = JSON.stringify(manifests[0]!.settings);
  const n = manifests[0]!.shard.count;
  manifests.forEach((m, i) => {
    if (JSON.stringify(m.settings) !== settings) throw new Error(`merge: ${dirs[i]} was generated with other settings than ${dirs[0]}`);
    if (m.shard.count !== n) throw new Error(`merge: ${dirs[i]} is shard ${m.shard.index}/${m.shard.count}, ${dirs[0]} one of ${n}`);
  });
  const seen = manifests.map((m) => m.shard.index);
  const missing = Array.from({ length: n }, (_, k) => k).filter((k) => !seen.includes(k));
  const twice = seen.find((k, i) => seen.indexOf(k) !== i);
  if (twice !== undefined) throw new Error(`merge: shard ${twice}/${n} is given twice`);
  if (missing.length) throw new Error(`merge: shard(s) ${missing.map((k) => `${k}/${n}`).join(', ')} missing`);
  const tmp = `${out.replace(/\/+$/, '')}.partial-merge`;
  fs.rmSync(tmp, { recursive: true, force: true });
  makeVocFolders(tmp);
  const records: ImageRecord[] = [];
  try {
    manifests.forEach((m, i) => {
      const dir = dirs[i]!;
      const coco = parseCoco(new TextDecoder().decode(fs.readFileSync(`${dir}/annotations/instances_train.json`)), `${dir}/annotations/instances_train.json`);
      const prompts = readWorldPrompts(dir);
      const seconds = new Map(m.timings.map((t) => [t.id, t.seconds]));
      for (const e of m.images) {
        for (const folder of [vocFolders.images, vocFolders.semantic, vocFolders.objects]) fs.copyFileSync(`${dir}/${folder}/${e.id}.png`, `${tmp}/${folder}/${e.id}.png`);
        const before = (e.provenance.before as string[] | undefined) ?? [];
        if (before.length) fs.mkdirSync(`${tmp}/stages/${e.id}`, { recursive: true });
        for (const name of before) fs.copyFileSync(`${dir}/stages/${e.id}/${name}.png`, `${tmp}/stages/${e.id}/${name}.png`);
        records.push({
          index: e.index, id: e.id, provenance: e.provenance, prompt: prompts.get(e.id)!, seconds: seconds.get(e.id) ?? {},
          image: coco.images.find((im) => im.id === e.index)!, annotations: coco.annotations.filter((a) => a.image_id === e.index),
        });
      }
    });
    return finishDataset(tmp, out, manifests[0]!.settings, { index: 0, count: 1 }, records);
  } catch (e) {
    fs.rmSync(tmp, { recursive: true, force: true });
    throw e;
  }
}

/** Reads `SLURM_ARRAY_TASK_ID`/`SLURM_ARRAY_TASK_COUNT` or Kubernetes Indexed Jobs' `JOB_COMPLETION_INDEX` (with `completions`). */
export function shardFromEnvironment(env: Record<string, string | undefined>, completions?: number): { index: number; count: number } | undefined {
  const int = (v: string, what: string) => {
    if (!/^\d+$/.test(v)) throw new Error(`${what}: expected a non-negative integer, got '${v}'`);
    return Number(v);
  };
  if (env.SLURM_ARRAY_TASK_ID !== undefined) {
    if (env.SLURM_ARRAY_TASK_COUNT === undefined) throw new Error('SLURM_ARRAY_TASK_ID is set but SLURM_ARRAY_TASK_COUNT is not (submit with --array=0-N)');
    const first = env.SLURM_ARRAY_TASK_MIN !== undefined ? int(env.SLURM_ARRAY_TASK_MIN, 'SLURM_ARRAY_TASK_MIN') : 0;
    return { index: int(env.SLURM_ARRAY_TASK_ID, 'SLURM_ARRAY_TASK_ID') - first, count: int(env.SLURM_ARRAY_TASK_COUNT, 'SLURM_ARRAY_TASK_COUNT') };
  }
  if (env.JOB_COMPLETION_INDEX !== undefined) {
    if (completions === undefined) throw new Error('JOB_COMPLETION_INDEX is set: pass the Job\'s completions as --shard-count N');
    return { index: int(env.JOB_COMPLETION_INDEX, 'JOB_COMPLETION_INDEX'), count: completions };
  }
  return undefined;
}
