// ShapeWorld datasets on disk: VOC layout + COCO instances + prompts + a manifest with provenance. Written into
// a temporary folder beside the target and renamed at the end, so a folder at the target path is complete.
import { nodeFs, writeFileAtomic } from '../io/fs.ts';
import { type WorldMode, type Scene, generateScene } from '../world/scene.ts';
import { classes } from '../world/classes.ts';
import { type Split, splitSeed, splits } from '../world/splits.ts';
import { type CocoAnnotation, type CocoFile, type CocoImage, maskToRle, vocCategories } from './coco.ts';
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

/** Renders `count` images of a split and writes them as a dataset at `out` (which must not exist yet). */
export async function writeWorldDataset(options: WorldDatasetOptions, onProgress?: (done: number) => void): Promise<Manifest> {
  checkOptions(options);
  const { split, count, out, mode = 'scene', size = 64, first = 0 } = options;
  const fs = nodeFs(`writing ${out}`);
  if (fs.existsSync(out)) throw new Error(`--out: ${out} already exists; choose a new directory`);
  const parent = out.replace(/\/+$/, '').replace(/\/[^/]*$/, '') || '.';
  if (out.includes('/') && !fs.existsSync(parent)) throw new Error(`--out: parent directory ${parent} does not exist`);
  const tmp = `${out.replace(/\/+$/, '')}.partial-${Date.now()}`;
  makeVocFolders(tmp);
  fs.mkdirSync(`${tmp}/annotations`);
  try {
    const ids: string[] = [];
    const coco: CocoFile = { info: { description: `ShapeWorld ${split} (${mode})`, version: String(shapeWorldVersion) }, images: [], annotations: [], categories: vocCategories };
    const prompts: string[] = [];
    for (let k = 0; k < count; k++) {
      const seed = splitSeed(split, first + k);
      const scene = generateScene(seed, { mode, width: size });
      const id = worldImageId(seed);
      ids.push(id);
      await writeVocSample(tmp, { id, width: size, height: size, image: scene.image, semantic: scene.semantic, objects: scene.instance });
      const image: CocoImage = { id: seed, file_name: `${vocFolders.images}/${id}.png`, width: size, height: size, prompt: scene.prompt, background: scene.spec.background };
      coco.images.push(image);
      coco.annotations.push(...sceneAnnotations(scene, seed));
      prompts.push(JSON.stringify({ id, seed, prompt: scene.prompt }));
      onProgress?.(k + 1);
    }
    fs.mkdirSync(`${tmp}/${vocFolders.sets}`, { recursive: true });
    writeFileAtomic(`${tmp}/${vocFolders.sets}/${split}.txt`, encoder.encode(ids.join('\n') + '\n'));
    writeJson(`${tmp}/annotations/instances_${split}.json`, coco);
    writeFileAtomic(`${tmp}/prompts.jsonl`, encoder.encode(prompts.join('\n') + '\n'));
    const manifest: Manifest = {
      generator: 'freemask ShapeWorld', version: shapeWorldVersion, split, mode, size, count,
      seeds: { first: splitSeed(split, first), last: splitSeed(split, first + count - 1) },
      classes: classes.map((c) => ({ id: c.id, name: c.name })), created: new Date().toISOString(), complete: true,
    };
    writeJson(`${tmp}/manifest.json`, manifest);
    fs.renameSync(tmp, out);
    return manifest;
  } catch (e) {
    fs.rmSync(tmp, { recursive: true, force: true });
    throw e;
  }
}

/** COCO annotations (compressed RLE) of a scene's instances; ids are seed·256 + instance id, unique per split. */
export function sceneAnnotations(scene: Scene, imageId: number): CocoAnnotation[] {
  const { width: W, height: H } = scene;
  return scene.instances.map((inst) => ({
    id: imageId * 256 + inst.id, image_id: imageId, category_id: inst.classId,
    segmentation: maskToRle(scene.instance.map((v) => (v === inst.id ? 1 : 0)), W, H),
    area: inst.area, bbox: inst.bbox, iscrowd: 0, depth_rank: inst.depthRank,
  }));
}

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
