// Pascal VOC layout: JPEGImages (PNG here), SegmentationClass and SegmentationObject as palettized PNGs with
// VOC's palette (255 = "ignore"), ImageSets/Segmentation/<split>.txt.
import { nodeFs } from '../io/fs.ts';
import type { Image } from '../io/image.ts';
import { type IndexedImage, readIndexedPng, writeIndexedPng, writePng } from '../io/png.ts';

/** VOC's colour map: entry i spreads the bits of i over R, G, B from the most significant bit down. */
export const vocPalette: Uint8Array = (() => {
  const p = new Uint8Array(768);
  for (let i = 0; i < 256; i++) {
    let c = i, r = 0, g = 0, b = 0;
    for (let j = 0; j < 8; j++) {
      r |= (c & 1) << (7 - j);
      g |= ((c >> 1) & 1) << (7 - j);
      b |= ((c >> 2) & 1) << (7 - j);
      c >>= 3;
    }
    p.set([r, g, b], 3 * i);
  }
  return p;
})();

/** The folders of a VOC-layout dataset. */
/** A label map [H·W] as an RGB image in VOC's colours (255, "ignore" or "uncertain", is VOC's cream). */
export function vocColorImage(labels: ArrayLike<number>, width: number, height: number): Image {
  if (labels.length !== width * height) throw new Error(`vocColorImage: ${labels.length} labels for a ${width}×${height} image`);
  const data = new Uint8Array(width * height * 3);
  for (let p = 0; p < labels.length; p++) data.set(vocPalette.subarray(3 * (labels[p]! & 255), 3 * (labels[p]! & 255) + 3), 3 * p);
  return { width, height, channels: 3, data };
}

export const vocFolders = { images: 'JPEGImages', semantic: 'SegmentationClass', objects: 'SegmentationObject', sets: 'ImageSets/Segmentation' } as const;

/** One image's files in VOC layout: the picture (PNG), its class map and its instance map (palettized). */
export interface VocSample {
  id: string;
  width: number;
  height: number;
  /** RGB, 8 bits */
  image?: Uint8Array;
  /** class index per pixel, 255 ignore */
  semantic: Uint8Array;
  /** instance index per pixel (1..n), 0 background, 255 ignore */
  objects?: Uint8Array;
}

/** Writes a sample's files under `dir` (the folders must exist). */
export async function writeVocSample(dir: string, s: VocSample): Promise<void> {
  const label = (indices: Uint8Array): IndexedImage => ({ width: s.width, height: s.height, indices, palette: vocPalette });
  if (s.image) await writePng(`${dir}/${vocFolders.images}/${s.id}.png`, { width: s.width, height: s.height, channels: 3, data: s.image });
  writeIndexedPng(`${dir}/${vocFolders.semantic}/${s.id}.png`, label(s.semantic));
  if (s.objects) writeIndexedPng(`${dir}/${vocFolders.objects}/${s.id}.png`, label(s.objects));
}

/** The folders a VOC-layout dataset needs under `dir`. */
export function makeVocFolders(dir: string): void {
  const fs = nodeFs(`creating ${dir}`);
  for (const f of Object.values(vocFolders)) fs.mkdirSync(`${dir}/${f}`, { recursive: true });
}

/**
 * The image ids of a VOC-layout folder: the lines of ImageSets/Segmentation/<split>.txt (every split file
 * when none is named), else the files in SegmentationClass.
 */
export function vocIds(dir: string, split?: string): string[] {
  const fs = nodeFs(`reading ${dir}`);
  if (!fs.existsSync(dir)) throw new Error(`${dir}: no such directory`);
  const sets = `${dir}/${vocFolders.sets}`;
  if (fs.existsSync(sets)) {
    const files = split ? [`${split}.txt`] : fs.readdirSync(sets).filter((f) => f.endsWith('.txt')).sort();
    if (files.length) {
      const ids = files.flatMap((f) => new TextDecoder().decode(fs.readFileSync(`${sets}/${f}`)).split('\n').map((l) => l.trim()).filter(Boolean));
      return [...new Set(ids)];
    }
  }
  const sem = `${dir}/${vocFolders.semantic}`;
  if (!fs.existsSync(sem)) throw new Error(`${dir}: not a VOC-layout folder (no ${vocFolders.sets}/*.txt and no ${vocFolders.semantic}/)`);
  return fs.readdirSync(sem).filter((f) => f.endsWith('.png')).map((f) => f.slice(0, -4)).sort();
}

/** Reads an image's class map and, when present, its instance map; errors name the file. */
export function readVocLabels(dir: string, id: string): VocSample {
  const fs = nodeFs(`reading ${dir}`);
  const semPath = `${dir}/${vocFolders.semantic}/${id}.png`;
  if (!fs.existsSync(semPath)) throw new Error(`${semPath}: missing (image '${id}' has no class map)`);
  const sem = readIndexedPng(semPath);
  const objPath = `${dir}/${vocFolders.objects}/${id}.png`;
  let objects: Uint8Array | undefined;
  if (fs.existsSync(objPath)) {
    const obj = readIndexedPng(objPath);
    if (obj.width !== sem.width || obj.height !== sem.height) throw new Error(`${objPath}: ${obj.width}×${obj.height}, but its class map is ${sem.width}×${sem.height}`);
    objects = obj.indices;
  }
  return { id, width: sem.width, height: sem.height, semantic: sem.indices, objects };
}
