// COCO instance annotations: run-length encoded masks exactly as pycocotools writes them, and the JSON file
// (images, annotations, categories). Predictions use the same file with a `score` per annotation.
import { vocClassNames } from '../world/classes.ts';

/** COCO RLE: run lengths over the mask in column-major order, starting with a run of zeros. */
export interface Rle {
  /** [height, width] */
  size: [number, number];
  /** run lengths, or their compressed string form */
  counts: number[] | string;
}

/** Run lengths of a binary mask given row-major (H×W, nonzero = inside), read column by column as COCO does. */
export function encodeRle(mask: ArrayLike<number>, width: number, height: number): number[] {
  if (mask.length !== width * height) throw new Error(`encodeRle: ${mask.length} pixels do not fill ${width}×${height}`);
  const counts: number[] = [];
  let value = 0, run = 0;
  for (let x = 0; x < width; x++) {
    for (let y = 0; y < height; y++) {
      const v = mask[y * width + x] ? 1 : 0;
      if (v !== value) {
        counts.push(run);
        value = v;
        run = 0;
      }
      run++;
    }
  }
  counts.push(run);
  return counts;
}

/**
 * The compressed string of run lengths (pycocotools' rleToString): from the third run on, each run is stored
 * as its difference to the run two before; each number is cut into 5-bit groups, least significant first,
 * each group + 48 as a character with bit 0x20 set while more groups follow (sign from bit 0x10 of the last).
 */
export function rleToString(counts: readonly number[]): string {
  let s = '';
  counts.forEach((c, i) => {
    let x = i > 2 ? c - counts[i - 2]! : c;
    for (let more = true; more; ) {
      let ch = x & 0x1f;
      x >>= 5;
      more = ch & 0x10 ? x !== -1 : x !== 0;
      if (more) ch |= 0x20;
      s += String.fromCharCode(ch + 48);
    }
  });
  return s;
}

/** Run lengths from the compressed string (pycocotools' rleFrString). */
export function rleFromString(s: string): number[] {
  const counts: number[] = [];
  let p = 0;
  while (p < s.length) {
    let x = 0, k = 0, more = true;
    while (more) {
      if (p >= s.length) throw new Error(`invalid COCO RLE string: ends inside a number at character ${p}`);
      const c = s.charCodeAt(p) - 48;
      if (c < 0 || c > 63) throw new Error(`invalid COCO RLE string: character '${s[p]}' at ${p}`);
      x |= (c & 0x1f) << (5 * k);
      more = (c & 0x20) !== 0;
      p++;
      k++;
      if (!more && c & 0x10) x |= -1 << (5 * k);
    }
    if (counts.length > 2) x += counts[counts.length - 2]!;
    counts.push(x);
  }
  return counts;
}

/** The compressed RLE of a row-major binary mask. */
export function maskToRle(mask: ArrayLike<number>, width: number, height: number): Rle {
  return { size: [height, width], counts: rleToString(encodeRle(mask, width, height)) };
}

/** The row-major binary mask (0/1) of an RLE in either form; throws when the runs do not fill the size. */
export function rleToMask(rle: Rle, what = 'RLE'): Uint8Array {
  const [height, width] = rle.size;
  const counts = typeof rle.counts === 'string' ? rleFromString(rle.counts) : rle.counts;
  const total = counts.reduce((a, b) => a + b, 0);
  if (total !== width * height || counts.some((c) => c < 0)) throw new Error(`${what}: run lengths sum to ${total}, expected ${height}×${width} = ${width * height}`);
  const mask = new Uint8Array(width * height);
  let at = 0;
  counts.forEach((run, i) => {
    if (i % 2 === 1) for (let k = at; k < at + run; k++) mask[(k % height) * width + Math.floor(k / height)] = 1;
    at += run;
  });
  return mask;
}

export interface CocoImage {
  id: number;
  file_name: string;
  width: number;
  height: number;
  [extra: string]: unknown;
}
export interface CocoAnnotation {
  id: number;
  image_id: number;
  category_id: number;
  segmentation: Rle;
  area: number;
  bbox: [number, number, number, number];
  iscrowd: 0 | 1;
  /** predictions only: confidence */
  score?: number;
  [extra: string]: unknown;
}
export interface CocoFile {
  info?: Record<string, unknown>;
  images: CocoImage[];
  annotations: CocoAnnotation[];
  categories: { id: number; name: string; supercategory?: string }[];
}

/** VOC's 20 object classes as COCO categories, ids as VOC's indices. */
export const vocCategories = vocClassNames.slice(1).map((name, k) => ({ id: k + 1, name, supercategory: 'voc' }));

/**
 * Parses a COCO instances file (or a results list of annotations, which gets images and categories from
 * `images`) and checks what the metrics rely on; errors name `label` (the file) and the annotation.
 */
export function parseCoco(text: string, label: string): CocoFile {
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch (e) {
    throw new Error(`${label}: not JSON: ${(e as Error).message}`);
  }
  const file: CocoFile = Array.isArray(json) ? { images: [], annotations: json as CocoAnnotation[], categories: vocCategories } : (json as CocoFile);
  if (!Array.isArray(file.annotations)) throw new Error(`${label}: no "annotations" list`);
  file.images ??= [];
  file.annotations.forEach((a, k) => {
    const seg = a.segmentation as Rle | unknown[];
    if (Array.isArray(seg)) throw new Error(`${label}: annotation ${k} (id ${a.id}) has a polygon segmentation; only RLE masks are supported`);
    if (!seg || !Array.isArray(seg.size) || seg.counts == null) throw new Error(`${label}: annotation ${k} (id ${a.id}) has no RLE segmentation {size, counts}`);
    if (typeof a.image_id !== 'number' || typeof a.category_id !== 'number') throw new Error(`${label}: annotation ${k} lacks a numeric image_id or category_id`);
  });
  return file;
}
