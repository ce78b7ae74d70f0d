// Mask2Former training data: samples in VOC form (RGB + class map + instance map, as `freemask world` writes
// them or ShapeWorld renders them in memory), turned into normalised pixel values and per-image mask/class
// targets, with random resize / crop / horizontal flip done on the GPU by one grid sample per batch image.

import { seededRandom } from '../../engine/random-cpu.ts';
import { Tensor, tidy } from '../../engine/tensor.ts';
import { nodeFs } from '../../io/fs.ts';
import { readPng } from '../../io/png.ts';
import { gridSample } from '../../kernels/resample.ts';
import { sum } from '../../kernels/reduce.ts';
import { indexSelect } from '../../kernels/gather.ts';
import { concat, reshape } from '../../kernels/shape.ts';
import { type VocSample, readVocLabels, vocFolders, vocIds } from '../../data/voc.ts';
import type { Scene } from '../../world/scene.ts';

/** The ImageNet statistics of Mask2FormerImageProcessor (image_mean / image_std, on 0..1 values). */
export const imagenetMean = [0.485, 0.456, 0.406] as const;
export const imagenetStd = [0.229, 0.224, 0.225] as const;

/** The label of "ignore" pixels in VOC class and instance maps. */
const ignore = 255;

/** A training / evaluation image: VOC sample with its picture. */
export type SegmentationSample = VocSample & { image: Uint8Array };

/** A ShapeWorld scene as a sample. */
export function sceneSample(scene: Scene, id: string): SegmentationSample {
  return { id, width: scene.width, height: scene.height, image: scene.image, semantic: scene.semantic, objects: scene.instance };
}

/** Reads every image of a VOC-layout folder (one split, or all listed ids); errors name the file. */
export async function readVocSamples(dir: string, split?: string): Promise<SegmentationSample[]> {
  const ids = vocIds(dir, split);
  if (ids.length === 0) throw new Error(`${dir}: no images listed`);
  const samples: SegmentationSample[] = [];
  for (const id of ids) samples.push(await readVocSample(dir, id));
  return samples;
}

/** One image of a VOC-layout folder: its maps and its picture as RGB bytes; errors name the file. */
export async function readVocSample(dir: string, id: string): Promise<SegmentationSample> {
  const labels = readVocLabels(dir, id);
  const path = `${dir}/${vocFolders.images}/${id}.png`;
  if (!nodeFs(`reading ${dir}`).existsSync(path)) throw new Error(`${path}: missing (image '${id}' has a class map but no picture)`);
  const img = await readPng(path);
  if (img.width !== labels.width || img.height !== labels.height) throw new Error(`${path}: ${img.width}×${img.height}, but its class map is ${labels.width}×${labels.height}`);
  if (img.channels < 3 || img.data.length !== img.width * img.height * img.channels) throw new Error(`${path}: expected an 8-bit RGB(A) image`);
  const rgb = new Uint8Array(img.width * img.height * 3);
  for (let p = 0; p < img.width * img.height; p++) for (let c = 0; c < 3; c++) rgb[3 * p + c] = Number(img.data[p * img.channels + c]);
  return { ...labels, image: rgb };
}

/** Normalised pixel values [3, H, W]: (rgb/255 − mean) / std. */
export function pixelValues(s: Pick<SegmentationSample, 'width' | 'height' | 'image'>): Float32Array {
  const hw = s.width * s.height;
  const out = new Float32Array(3 * hw);
  for (let p = 0; p < hw; p++) for (let c = 0; c < 3; c++) out[c * hw + p] = (s.image[3 * p + c]! / 255 - imagenetMean[c]!) / imagenetStd[c]!;
  return out;
}

export interface SampleTargets {
  /** [n, H·W] of 0/1. */
  masks: Float32Array;
  classes: Int32Array;
}

/**
 * The targets of a sample: with an instance map, one mask per instance (its class the class map's majority
 * over it) plus one mask of the background class 0; without, one mask per class present. Ignore (255)
 * pixels are in no mask. A class id ≥ numLabels is an error naming the image.
 */
export function sampleTargets(s: VocSample, numLabels: number): SampleTargets {
  const hw = s.width * s.height;
  const groups = new Map<number, number[]>(); // key → pixel list
  const classOf = new Map<number, Map<number, number>>(); // key → class votes
  for (let p = 0; p < hw; p++) {
    const c = s.semantic[p]!;
    if (c === ignore) continue;
    if (c >= numLabels) throw new Error(`image '${s.id}': class id ${c} at pixel (${p % s.width}, ${Math.floor(p / s.width)}) is outside the ${numLabels} configured classes`);
    const o = s.objects ? s.objects[p]! : 0;
    if (o === ignore) continue;
    // instances keep their own key; class-0 or "no instance" pixels are grouped by class (key −1 − class)
    const key = s.objects && o !== 0 ? o : -1 - c;
    let list = groups.get(key);
    if (!list) groups.set(key, (list = []));
    list.push(p);
    const votes = classOf.get(key) ?? new Map<number, number>();
    votes.set(c, (votes.get(c) ?? 0) + 1);
    classOf.set(key, votes);
  }
  const keys = [...groups.keys()].sort((a, b) => a - b);
  const masks = new Float32Array(keys.length * hw);
  const classes = new Int32Array(keys.length);
  keys.forEach((key, k) => {
    for (const p of groups.get(key)!) masks[k * hw + p] = 1;
    classes[k] = [...classOf.get(key)!].sort((a, b) => b[1] - a[1] || a[0] - b[0])[0]![0];
  });
  return { masks, classes };
}

export interface AugmentOptions {
  /** Output size [height, width] (crop); images smaller after scaling are padded (zeros, masks empty). */
  size: [number, number];
  /** Range of the random scale factor applied before the crop (default [0.5, 2]). */
  scale?: [number, number];
  /** Probability of a horizontal flip (default 0.5). */
  flip?: number;
}

/** The geometry of one augmentation: scale, crop offset in the scaled image, flip. */
export interface AugmentDraw {
  scale: number;
  top: number;
  left: number;
  flip: boolean;
}

/** Draws an augmentation for an H×W image from `rand` (uniform [0, 1)). */
export function drawAugment(rand: () => number, H: number, W: number, { size: [h, w], scale = [0.5, 2], flip = 0.5 }: AugmentOptions): AugmentDraw {
  const s = scale[0] + (scale[1] - scale[0]) * rand();
  const top = Math.floor(rand() * (Math.max(0, Math.round(H * s) - h) + 1));
  const left = Math.floor(rand() * (Math.max(0, Math.round(W * s) - w) + 1));
  return { scale: s, top, left, flip: rand() < flip };
}

/** The gridSample grid [1, h, w, 2] of an augmentation: output pixel → source position in [−1, 1]. */
function augmentGrid(d: AugmentDraw, H: number, W: number, [h, w]: [number, number]): Tensor {
  const g = new Float32Array(h * w * 2);
  for (let i = 0; i < h; i++) {
    for (let j = 0; j < w; j++) {
      const x = (d.left + (d.flip ? w - 1 - j : j) + 0.5) / d.scale;
      const y = (d.top + i + 0.5) / d.scale;
      g[2 * (i * w + j)] = (2 * x) / W - 1;
      g[2 * (i * w + j) + 1] = (2 * y) / H - 1;
    }
  }
  return Tensor.fromArray(g, [1, h, w, 2]);
}

/** One image of a training batch on the GPU. */
export interface BatchImage {
  /** [1, 3, H, W] */
  pixels: Tensor;
  /** f32 [n, H, W] */
  masks: Tensor;
  /** i32 [n] */
  classes: Tensor;
}

/**
 * A sample on the GPU, augmented when `augment` is given (image bilinear, masks nearest, same grid); masks
 * left empty by the crop are dropped. `rand` draws the geometry.
 */
export async function loadSample(s: SegmentationSample, numLabels: number, augment?: AugmentOptions, rand?: () => number): Promise<BatchImage> {
  const { masks, classes } = sampleTargets(s, numLabels);
  const H = s.height, W = s.width, n = classes.length;
  const pixels = Tensor.fromArray(pixelValues(s), [1, 3, H, W]);
  const maskT = Tensor.fromArray(masks, [n, H, W]);
  if (!augment) return { pixels, masks: maskT, classes: Tensor.fromArray(classes, [n], 'i32') };
  const d = drawAugment(rand ?? seededRandom(0), H, W, augment);
  const [h, w] = augment.size;
  const [outPixels, outMasks, areas] = tidy(() => {
    const grid = augmentGrid(d, H, W, augment.size);
    const p = gridSample(pixels, grid, { mode: 'bilinear' });
    const m = reshape(gridSample(reshape(maskT, [1, n, H, W]), grid, { mode: 'nearest' }), [n, h, w]);
    return [p, m, sum(m, [1, 2])];
  });
  pixels.dispose();
  maskT.dispose();
  const area = await areas.toArray();
  areas.dispose();
  const kept = [...area.keys()].filter((k) => area[k]! > 0);
  let keptMasks = outMasks;
  if (kept.length < n) {
    if (!kept.length) throw new Error(`image '${s.id}': the augmentation crop left no labelled pixel`);
    keptMasks = tidy(() => indexSelect(outMasks, 0, Tensor.fromArray(Int32Array.from(kept), [kept.length], 'i32')));
    outMasks.dispose();
  }
  return { pixels: outPixels, masks: keptMasks, classes: Tensor.fromArray(Int32Array.from(kept, (k) => classes[k]!), [kept.length], 'i32') };
}

/** Stacks batch images of one size into [B, 3, H, W]. */
export function stackPixels(images: readonly BatchImage[]): Tensor {
  const sizes = new Set(images.map((b) => b.pixels.shape.slice(2).join('×')));
  if (sizes.size > 1) throw new Error(`batch: images of different sizes (${[...sizes].join(', ')}); give an augmentation size to crop them alike, or use batch size 1`);
  return images.length === 1 ? reshape(images[0]!.pixels, images[0]!.pixels.shape) : concat(images.map((b) => b.pixels), 0);
}
