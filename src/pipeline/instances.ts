// Instances from semantic masks (TFISeg / SISeg, arXiv 2308.00949; its code is unreleased, so IRNet's published
// procedure fills what the paper leaves open). The semantic mask gives the class maps IRNet takes from CAMs: each
// class's share of every grid cell. The displacement field groups pixels by the centroid they point at, the
// class-agnostic boundary walks each class × group map, and every detection is cut to its class's mask, so an
// instance never leaves the semantic mask it came from. Two baselines for the table: connected components of each
// class, and the displacement field without the boundary (each class's pixels split by their centroid group).

import { noGrad } from '../engine/autograd.ts';
import { Tensor } from '../engine/tensor.ts';
import { type Detection, type InstanceOptions, clusterCentroids, findCentroids, labelFragments, makeInsSegLabels } from '../models/irn/centroids.ts';
import type { IrnNet } from '../models/irn/model.ts';
import { type Mask2FormerForUniversalSegmentation, disposeTensors } from '../models/mask2former/model.ts';
import { semanticSegmentation } from '../models/mask2former/postprocess.ts';
import { pixelValues, readVocSample } from '../models/mask2former/data.ts';
import { type MaskApResult, type MaskInstance, maskAp } from '../metrics/maskAp.ts';
import { truthInstances } from '../models/mask2former/evaluate.ts';
import { type VocSample, vocFolders, vocIds, vocPalette } from '../data/voc.ts';
import { type CocoFile, vocCategories } from '../data/coco.ts';
import { instanceAnnotations, objectBoxes } from '../data/dataset.ts';
import { nodeFs, writeFileAtomic } from '../io/fs.ts';
import { writeIndexedPng } from '../io/png.ts';

/** How a semantic mask becomes instances. */
export type InstanceMethod = 'components' | 'displacement' | 'irn';
export const instanceMethods: readonly InstanceMethod[] = ['components', 'displacement', 'irn'];

/** One picture and its semantic mask (class ids, 0 background, 255 uncertain). */
export interface SemanticImage {
  width: number;
  height: number;
  /** RGB bytes */
  image: Uint8Array;
  semantic: Uint8Array;
}

/** Detections of one image: class id (as in the semantic mask), score, image-size mask. */
export type InstanceDetection = Detection;

function checkImage(s: SemanticImage, what: string, numClasses?: number): void {
  const n = s.width * s.height;
  if (s.image.length !== 3 * n) throw new Error(`${what}: the image has ${s.image.length} bytes, expected ${s.width}×${s.height}×3 (RGB)`);
  if (s.semantic.length !== n) throw new Error(`${what}: the semantic mask has ${s.semantic.length} pixels, the image ${s.width}×${s.height}`);
  if (numClasses !== undefined) {
    const bad = s.semantic.find((v) => v !== 255 && v >= numClasses);
    if (bad !== undefined) throw new Error(`${what}: the semantic mask has class ${bad}, outside the class list (0..${numClasses - 1}, 255 uncertain)`);
  }
}

/** The foreground classes present (sorted). */
const presentClasses = (semantic: Uint8Array) => [...new Set(semantic)].filter((c) => c !== 0 && c !== 255).sort((a, b) => a - b);

/** Each 4-connected fragment of each class (of each class × group with `split`), scored by its share of the image. */
function componentsOf(s: SemanticImage, split?: (p: number) => number): Detection[] {
  const n = s.width * s.height;
  const classes = presentClasses(s.semantic);
  // one label per (class, group), in class then group order
  const keyOf = (p: number) => classes.indexOf(s.semantic[p]!) * (n + 1) + (split ? split(p) : 0);
  const keys = [...new Set(Array.from({ length: n }, (_, p) => (classes.includes(s.semantic[p]!) ? keyOf(p) : -1)))].filter((k) => k >= 0).sort((a, b) => a - b);
  const index = new Map(keys.map((k, i) => [k, i + 1]));
  const label = Int32Array.from({ length: n }, (_, p) => (classes.includes(s.semantic[p]!) ? index.get(keyOf(p))! : 0));
  return labelFragments(label, keys.length, [s.height, s.width]).map((f) => ({ classId: classes[Math.floor(keys[f.plane]! / (n + 1))]!, score: f.area / n, mask: f.mask }));
}

/** The class maps IRNet takes from CAMs: each class's share of every stride × stride cell of the grid. */
function classMaps(s: SemanticImage, classes: readonly number[], stride: number, [h, w]: [number, number]): Tensor {
  const maps = new Float32Array(classes.length * h * w);
  classes.forEach((c, k) => {
    for (let p = 0; p < s.width * s.height; p++) {
      if (s.semantic[p] !== c) continue;
      const y = Math.floor(Math.floor(p / s.width) / stride), x = Math.floor((p % s.width) / stride);
      maps[(k * h + y) * w + x]! += 1 / (stride * stride);
    }
  });
  return Tensor.fromArray(maps, [classes.length, h, w]);
}

/**
 * Instances of one image from its semantic mask, by `method`: 'irn' (displacement field + boundary-aware walk,
 * the network's), 'displacement' (the network's field alone) or 'components' (no network). Detections are cut to
 * their class's mask and come in descending score; an all-background mask has none. The walk takes sparse steps
 * unless `denseWalk` (IRNet's exact arithmetic, ~80× the work).
 */
export async function instancesFromSemantic(s: SemanticImage, method: InstanceMethod, net?: IrnNet, options: InstanceOptions & { numClasses?: number } = {}): Promise<Detection[]> {
  checkImage(s, 'instancesFromSemantic', options.numClasses);
  const classes = presentClasses(s.semantic);
  if (classes.length === 0) return [];
  if (method === 'components') return sortByScore(componentsOf(s));
  if (!net) throw new Error(`instancesFromSemantic: method '${method}' needs an instance network (IrnNet)`);
  const stride = net.stride;
  const { edge, dp } = net.edgeDisplacement(s.image, [s.height, s.width]);
  try {
    const [, h, w] = dp.shape as [number, number, number];
    if (method === 'displacement') {
      const D = await dp.toArray();
      const { groups } = clusterCentroids(findCentroids(D, h, w, 300).centroids, D, h, w, options.thres ?? 2.5);
      const group = (p: number) => groups[Math.min(h - 1, Math.floor(Math.floor(p / s.width) / stride)) * w + Math.min(w - 1, Math.floor((p % s.width) / stride))]!;
      return sortByScore(componentsOf(s, group));
    }
    const cams = classMaps(s, classes, stride, [h, w]);
    const result = await makeInsSegLabels({ cams, keys: classes.map((c) => c - 1), edge, dp, imageSize: [s.height, s.width] }, { denseWalk: false, ...options, stride });
    for (const t of [cams, result.instanceCam, result.rw]) t.dispose();
    // IRNet thresholds its walked maps against a background plane because CAMs do not say where objects end; the
    // semantic mask does, so every pixel of class c joins the group whose walked c-map is strongest there, and each
    // class × group's 4-connected fragments are the instances, scored as IRNet scores them (the walk's maximum
    // inside; under minFragment of the image: 0)
    const N = s.width * s.height;
    const G = result.rwUp.length / (classes.length * N);
    const label = Int32Array.from(s.semantic, (v, p) => {
      const c = classes.indexOf(v);
      if (c < 0) return 0;
      let [best, arg] = [-Infinity, 0];
      for (let g = 0; g < G; g++) if (result.rwUp[(c * G + g) * N + p]! > best) [best, arg] = [result.rwUp[(c * G + g) * N + p]!, c * G + g + 1];
      return arg;
    });
    const out = labelFragments(label, classes.length * G, [s.height, s.width], result.rwUp, options.minFragment ?? 0.01).map(({ plane, score, mask }) => ({ classId: classes[Math.floor(plane / G)]!, score, mask }));
    return sortByScore(out);
  } finally {
    edge.dispose();
    dp.dispose();
  }
}

const sortByScore = (ds: Detection[]) => ds.map((d, k) => ({ d, k })).sort((a, b) => b.d.score - a.d.score || a.k - b.k).map((e) => e.d);

/**
 * A VOC object map (SegmentationObject) from detections in descending score: each pixel takes the first
 * detection covering it (ids 1, 2, … in that order, at most 254); pixels of a class but of no detection, and
 * uncertain ones, are 255.
 */
export function objectMap(semantic: Uint8Array, detections: readonly Detection[]): Uint8Array {
  if (detections.length > 254) throw new Error(`objectMap: ${detections.length} instances, a VOC object map holds 254`);
  const out = Uint8Array.from(semantic, (v) => (v === 0 ? 0 : 255));
  const taken = new Uint8Array(semantic.length);
  detections.forEach((d, k) => d.mask.forEach((v, p) => {
    if (v && !taken[p]) [taken[p], out[p]] = [1, k + 1];
  }));
  return out;
}

/** The semantic mask a Mask2Former predicts for an image (its class ids). */
export async function predictedSemantic(model: Mask2FormerForUniversalSegmentation, s: Omit<SemanticImage, 'semantic'>): Promise<Uint8Array> {
  const pixels = Tensor.fromArray(pixelValues(s), [1, 3, s.height, s.width]);
  const out = noGrad(() => model.forward(pixels));
  pixels.dispose();
  const labels = semanticSegmentation({ classQueriesLogits: out.classQueriesLogits, masksQueriesLogits: out.masksQueriesLogits }, [s.height, s.width]);
  const values = await labels.toArray();
  labels.dispose();
  disposeTensors(out);
  return Uint8Array.from(values);
}

/**
 * Mask AP of each method against the samples' true instances, from the true semantic masks, or from a segmenter's
 * predictions when one is given (the same prediction feeds every method), or from class maps predicted
 * beforehand (`predictions`, one per sample, e.g. evaluateSegmenter's). An all-background class map gives no detection.
 */
export async function evaluateInstances(samples: readonly (VocSample & { image: Uint8Array })[], net: IrnNet | undefined, { methods = instanceMethods, segmenter, predictions, onImage }: { methods?: readonly InstanceMethod[]; segmenter?: Mask2FormerForUniversalSegmentation; predictions?: readonly Uint8Array[]; onImage?: (done: number) => void } = {}): Promise<Map<InstanceMethod, MaskApResult>> {
  if (segmenter && predictions) throw new Error('evaluateInstances: give a segmenter or its predictions, not both');
  if (predictions && predictions.length !== samples.length) throw new Error(`evaluateInstances: ${predictions.length} predicted class maps for ${samples.length} images`);
  const truths: MaskInstance[] = [];
  const preds = new Map<InstanceMethod, MaskInstance[]>(methods.map((m) => [m, []]));
  for (const [k, s] of samples.entries()) {
    if (!s.objects) throw new Error(`evaluateInstances: image '${s.id}' has no instance map to compare with`);
    truths.push(...truthInstances(s));
    const semantic = segmenter ? await predictedSemantic(segmenter, s) : predictions ? predictions[k]! : s.semantic;
    if (semantic.length !== s.width * s.height) throw new Error(`evaluateInstances: the predicted class map of '${s.id}' has ${semantic.length} pixels, the image ${s.width}×${s.height}`);
    // a class map without foreground predicts no instance: its image's truths count as misses
    for (const m of methods) {
      for (const d of await instancesFromSemantic({ width: s.width, height: s.height, image: s.image, semantic }, m, net)) {
        preds.get(m)!.push({ imageId: s.id, categoryId: d.classId, score: d.score, mask: d.mask });
      }
    }
    onImage?.(k + 1);
  }
  return new Map(methods.map((m) => [m, maskAp(preds.get(m)!, truths)]));
}

/**
 * Adds an instance layer to a VOC-layout folder from its class maps: SegmentationObject/<id>.png (objectMap) and
 * annotations/instances.json (COCO, RLE masks with scores, boxes). Written beside the folder's files and swapped
 * in at the end, so a killed run leaves the folder as it was; an existing layer (object maps or
 * annotations/instances*.json) is replaced only with `overwrite`. Images without foreground get an empty layer.
 */
export async function addInstancesToFolder(dir: string, method: InstanceMethod, net: IrnNet | undefined, { overwrite = false, split, numClasses = 21, onImage }: { overwrite?: boolean; split?: string; numClasses?: number; onImage?: (done: number, total: number) => void } = {}): Promise<{ images: number; instances: number }> {
  const fs = nodeFs(`writing instances into ${dir}`);
  const ids = vocIds(dir, split);
  if (ids.length === 0) throw new Error(`${dir}: no images listed`);
  const objects = `${dir}/${vocFolders.objects}`;
  const annotations = `${dir}/annotations`;
  const oldCoco = fs.existsSync(annotations) ? fs.readdirSync(annotations).filter((f) => /^instances.*\.json$/.test(f)) : [];
  const hasLayer = (fs.existsSync(objects) && fs.readdirSync(objects).some((f) => f.endsWith('.png'))) || oldCoco.length > 0;
  if (hasLayer && !overwrite) throw new Error(`${dir}: already has an instance layer (${vocFolders.objects}/ or annotations/${oldCoco[0] ?? 'instances*.json'}); pass --overwrite to replace it`);
  const tmp = `${dir}/.instances-partial`;
  fs.rmSync(tmp, { recursive: true, force: true });
  fs.mkdirSync(tmp, { recursive: true });
  const coco: CocoFile = { info: { description: `instances by ${method}` }, images: [], annotations: [], categories: vocCategories };
  try {
    for (const [k, id] of ids.entries()) {
      const s = await readVocSample(dir, id);
      checkImage(s, `${dir}/${vocFolders.semantic}/${id}.png`, numClasses);
      const detections = await instancesFromSemantic(s, method, net);
      const map = objectMap(s.semantic, detections);
      writeIndexedPng(`${tmp}/${id}.png`, { width: s.width, height: s.height, indices: map, palette: vocPalette });
      const imageId = k + 1;
      coco.images.push({ id: imageId, file_name: `${vocFolders.images}/${id}.png`, width: s.width, height: s.height });
      // each detection's box and area in the object map (a detection wholly covered by better ones has none)
      const boxes = objectBoxes(map, s.width);
      const instances = detections.flatMap((d, j) => {
        const b = boxes.get(j + 1);
        return b ? [{ id: j + 1, classId: d.classId, ...b, extra: { score: d.score } }] : [];
      });
      coco.annotations.push(...instanceAnnotations({ imageId, width: s.width, height: s.height, instance: map, instances }));
      onImage?.(k + 1, ids.length);
    }
    writeFileAtomic(`${tmp}/instances.json`, new TextEncoder().encode(JSON.stringify(coco)));
  } catch (e) {
    fs.rmSync(tmp, { recursive: true, force: true });
    throw e;
  }
  // swap the new layer in: the old object maps aside, the new folder renamed, the old one and old files removed
  const old = `${dir}/.instances-old`;
  fs.rmSync(old, { recursive: true, force: true });
  if (fs.existsSync(objects)) fs.renameSync(objects, old);
  fs.mkdirSync(annotations, { recursive: true });
  fs.renameSync(`${tmp}/instances.json`, `${annotations}/instances.json`);
  fs.renameSync(tmp, objects);
  for (const f of oldCoco) if (f !== 'instances.json') fs.rmSync(`${annotations}/${f}`, { force: true });
  fs.rmSync(old, { recursive: true, force: true });
  return { images: ids.length, instances: coco.annotations.length };
}
