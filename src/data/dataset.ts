// ShapeWorld datasets on disk: VOC layout + COCO instances + prompts + a manifest with provenance. Written into
// a temporary folder beside the target and renamed at the end, so a folder at the target path is complete.
import { nodeFs, writeFileAtomic } from '../io/fs.ts';
import { type WorldMode, type Scene, generateScene } from '../world/scene.ts';
import { classes } from '../world/classes.ts';
import { type Split, splitSeed, splits } from '../world/splits.ts';
import { type CocoAnnotation, type CocoFile, maskToRle, vocCategories } from './coco.ts';
import { makeVocFolders, vocFolders, writeVocSample } from './voc.ts';

/** Bumped whenever the renderer's output for a seed changes. */
export const shapeWorldVersion = 1;

export interface WorldDatasetOptions {
  split: Split;
  count: number;
  out: string;
  mode?: WorldMode;
  /** image width and height in pixels */
  size?: number;
  /** index of the first image within the split */
  first?: number;
}

export interface Manifest {
  generator: string;
  version: number;
  split: Split;
  mode: WorldMode;
  size: number;
  count: number;
  /** seeds used: first..last inclusive, image k has seed first + k */
  seeds: { first: number; last: number };
  classes: { id: number; name: string }[];
  created: string;
  /** written last: a dataset without it is incomplete */
  complete: true;
}

const encoder = new TextEncoder();
const writeJson = (path: string, value: unknown) => writeFileAtomic(path, encoder.encode(JSON.stringify(value)));

/** The file name stem of the image with `seed`. */
export const worldImageId = (seed: number) => `sw${String(seed).padStart(7, '0')}`;

/** Checks the options, naming the bad one. */
function checkOptions({ split, count, out, mode = 'scene', size = 64, first = 0 }: WorldDatasetOptions): void {
  if (!(split in splits)) throw new Error(`--split: unknown split '${split}' (expected ${Object.keys(splits).join(', ')})`);
  if (mode !== 'scene' && mode !== 'single') throw new Error(`--mode: unknown mode '${mode}' (expected scene or single)`);
  if (!Number.isInteger(count) || count < 1) throw new Error(`--count: expected a positive integer, got ${count}`);
  if (!Number.isInteger(size) || size < 16 || size > 1024) throw new Error(`--size: expected an integer from 16 to 1024, got ${size}`);
  if (!Number.isInteger(first) || first < 0 || first + count > splits[split].size) {
    throw new Error(`--count: split '${split}' has ${splits[split].size} images; ${first}+${count} exceeds it`);
  }
  if (!out) throw new Error('--out: a directory is required');
}

/** One picture of a dataset being written: its maps, instances and the extra fields of its COCO image entry. */
export interface DatasetSample {
  id: string;
  /** COCO image id (unique in the dataset). */
  imageId: number;
  width: number;
  height: number;
  image: Uint8Array;
  semantic: Uint8Array;
  instance: Uint8Array;
  instances: readonly { id: number; classId: number; bbox: readonly [number, number, number, number]; area: number; extra?: Record<string, unknown> }[];
  /** Extra fields of the COCO image entry (prompt, background, provenance, …). */
  coco?: Record<string, unknown>;
  prompt?: string;
}

/**
 * Writes `samples` as a dataset at `out` (which must not exist yet): VOC layout, COCO instances with RLE masks
 * (annotation id = image id · 256 + instance id), prompts.jsonl when samples have prompts, and `manifest` last
 * with `complete: true`; all in a temporary folder beside `out`, renamed at the end.
 */
export async function writeDataset<M extends object>(out: string, split: string, description: string, samples: AsyncIterable<DatasetSample> | Iterable<DatasetSample>, manifest: (count: number) => M): Promise<M & { complete: true }> {
  const fs = nodeFs(`writing ${out}`);
  if (fs.existsSync(out)) throw new Error(`--out: ${out} already exists; choose a new directory`);
  const parent = out.replace(/\/+$/, '').replace(/\/[^/]*$/, '') || '.';
  if (out.includes('/') && !fs.existsSync(parent)) throw new Error(`--out: parent directory ${parent} does not exist`);
  const tmp = `${out.replace(/\/+$/, '')}.partial-${Date.now()}`;
  makeVocFolders(tmp);
  fs.mkdirSync(`${tmp}/annotations`);
  try {
    const ids: string[] = [];
    const coco: CocoFile = { info: { description, version: String(shapeWorldVersion) }, images: [], annotations: [], categories: vocCategories };
    const prompts: string[] = [];
    for await (const s of samples) {
      ids.push(s.id);
      await writeVocSample(tmp, { id: s.id, width: s.width, height: s.height, image: s.image, semantic: s.semantic, objects: s.instance });
      coco.images.push({ id: s.imageId, file_name: `${vocFolders.images}/${s.id}.png`, width: s.width, height: s.height, ...(s.prompt !== undefined && { prompt: s.prompt }), ...s.coco });
      coco.annotations.push(...instanceAnnotations(s));
      if (s.prompt !== undefined) prompts.push(JSON.stringify({ id: s.id, seed: s.imageId, prompt: s.prompt }));
    }
    fs.mkdirSync(`${tmp}/${vocFolders.sets}`, { recursive: true });
    writeFileAtomic(`${tmp}/${vocFolders.sets}/${split}.txt`, encoder.encode(ids.join('\n') + '\n'));
    writeJson(`${tmp}/annotations/instances_${split}.json`, coco);
    if (prompts.length) writeFileAtomic(`${tmp}/prompts.jsonl`, encoder.encode(prompts.join('\n') + '\n'));
    const m = { ...manifest(ids.length), complete: true as const };
    writeJson(`${tmp}/manifest.json`, m);
    fs.renameSync(tmp, out);
    return m;
  } catch (e) {
    fs.rmSync(tmp, { recursive: true, force: true });
    throw e;
  }
}

/** Renders `count` images of a split and writes them as a dataset at `out` (which must not exist yet). */
export async function writeWorldDataset(options: WorldDatasetOptions, onProgress?: (done: number) => void): Promise<Manifest> {
  checkOptions(options);
  const { split, count, out, mode = 'scene', size = 64, first = 0 } = options;
  function* samples(): Iterable<DatasetSample> {
    for (let k = 0; k < count; k++) {
      const seed = splitSeed(split, first + k);
      const scene = generateScene(seed, { mode, width: size });
      yield {
        id: worldImageId(seed), imageId: seed, width: size, height: size, image: scene.image, semantic: scene.semantic, instance: scene.instance,
        instances: worldInstances(scene), prompt: scene.prompt, coco: { background: scene.spec.background },
      };
      onProgress?.(k + 1);
    }
  }
  return writeDataset(out, split, `ShapeWorld ${split} (${mode})`, samples(), (n) => ({
    generator: 'freemask ShapeWorld', version: shapeWorldVersion, split, mode, size, count: n,
    seeds: { first: splitSeed(split, first), last: splitSeed(split, first + count - 1) },
    classes: classes.map((c) => ({ id: c.id, name: c.name })), created: new Date().toISOString(),
  }));
}

/** Each object id's box ([x, y, width, height], COCO's) and pixel count in an object map (0 background and 255 uncertain are no objects). */
export function objectBoxes(map: ArrayLike<number>, width: number): Map<number, { bbox: [number, number, number, number]; area: number }> {
  const spans = new Map<number, [number, number, number, number, number]>();
  for (let p = 0; p < map.length; p++) {
    const v = map[p]!;
    if (v === 0 || v === 255) continue;
    const [x, y] = [p % width, Math.floor(p / width)];
    const b = spans.get(v);
    if (b) [b[0], b[1], b[2], b[3], b[4]] = [Math.min(b[0], x), Math.min(b[1], y), Math.max(b[2], x + 1), Math.max(b[3], y + 1), b[4] + 1];
    else spans.set(v, [x, y, x + 1, y + 1, 1]);
  }
  return new Map([...spans].map(([id, b]) => [id, { bbox: [b[0], b[1], b[2] - b[0], b[3] - b[1]], area: b[4] }]));
}

/** COCO annotations (compressed RLE) of a sample's instances; ids are image id · 256 + instance id. */
export function instanceAnnotations(s: Pick<DatasetSample, 'imageId' | 'width' | 'height' | 'instance' | 'instances'>): CocoAnnotation[] {
  return s.instances.map((inst) => ({
    id: s.imageId * 256 + inst.id, image_id: s.imageId, category_id: inst.classId,
    segmentation: maskToRle(s.instance.map((v) => (v === inst.id ? 1 : 0)), s.width, s.height),
    area: inst.area, bbox: [...inst.bbox] as [number, number, number, number], iscrowd: 0, ...inst.extra,
  }));
}

/** COCO annotations of a scene's instances (with their depth rank); ids are seed·256 + instance id, unique per split. */
export function sceneAnnotations(scene: Scene, imageId: number): CocoAnnotation[] {
  return instanceAnnotations({ imageId, width: scene.width, height: scene.height, instance: scene.instance, instances: worldInstances(scene) });
}

const worldInstances = (scene: Scene) => scene.instances.map((i) => ({ ...i, extra: { depth_rank: i.depthRank } }));

/** The prompts of a dataset folder written by `writeWorldDataset` (prompts.jsonl), by image id. */
export function readWorldPrompts(dir: string): Map<string, string> {
  const fs = nodeFs(`reading ${dir}`);
  const path = `${dir}/prompts.jsonl`;
  if (!fs.existsSync(path)) throw new Error(`${path}: missing (a text-to-image dataset needs one prompt per image, as \`freemask world\` writes)`);
  const prompts = new Map<string, string>();
  new TextDecoder().decode(fs.readFileSync(path)).split('\n').forEach((line, i) => {
    if (!line.trim()) return;
    let entry: { id?: unknown; prompt?: unknown };
    try {
      entry = JSON.parse(line);
    } catch {
      throw new Error(`${path}:${i + 1}: not JSON`);
    }
    if (typeof entry.id !== 'string' || typeof entry.prompt !== 'string') throw new Error(`${path}:${i + 1}: expected {"id": string, "prompt": string}`);
    prompts.set(entry.id, entry.prompt);
  });
  return prompts;
}
