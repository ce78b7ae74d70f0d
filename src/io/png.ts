// PNG files through pngjs (Node and Deno: pngjs needs Buffer and zlib, so it is imported only when used and
// browsers can leave this file out). Gray, gray + alpha, RGB and RGBA, 8- and 16-bit; palette and low-bit
// files are read as 8-bit RGB(A) / gray.

import type { PNG } from 'pngjs';
import type { Tensor } from '../engine/tensor.ts';
import { nodeFs, writeFileAtomic } from './fs.ts';
import { type Image, checkImage, maskToImage } from './image.ts';

const signature = [0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a];
/** PNG colour types by channel count. */
const colorTypes = { 1: 0, 2: 4, 3: 2, 4: 6 } as const;

/** The bytes as a Node Buffer (what pngjs parses), without copying; Buffer comes from node:buffer for Deno. */
function asBuffer(bytes: Uint8Array): Buffer {
  const proc = (globalThis as { process?: { getBuiltinModule?: (m: string) => unknown } }).process;
  const mod = proc?.getBuiltinModule?.('node:buffer') as { Buffer: typeof Buffer } | undefined;
  if (!mod) throw new Error('PNG decoding needs Node or Deno (pngjs works on node:buffer)');
  return mod.Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength);
}

async function pngjs(): Promise<typeof PNG> {
  const mod = (await import('pngjs')) as { PNG?: typeof PNG; default?: { PNG: typeof PNG } };
  return (mod.PNG ?? mod.default!.PNG);
}

/** Decodes PNG bytes; `label` (the file name) prefixes every error. */
export async function decodePng(bytes: Uint8Array, label = '<buffer>'): Promise<Image> {
  if (bytes.length < 33 || signature.some((b, k) => bytes[k] !== b)) throw new Error(`${label}: not a PNG file (no PNG signature)`);
  // IHDR is the first chunk: its bit depth sits at byte 24. 16-bit samples are kept, not rescaled to 8.
  const sixteen = bytes[24] === 16;
  const PNG = await pngjs();
  let png: ReturnType<typeof PNG.sync.read>;
  try {
    png = PNG.sync.read(asBuffer(bytes), { skipRescale: sixteen });
  } catch (e) {
    throw new Error(`${label}: invalid PNG file: ${(e as Error).message}`);
  }
  const { width, height, color, alpha } = png;
  const channels = ((color ? 3 : 1) + (alpha ? 1 : 0)) as Image['channels'];
  // pngjs always returns RGBA; keep the file's own channels.
  const rgba = sixteen ? (png.data as unknown as Uint16Array) : new Uint8Array(png.data.buffer, png.data.byteOffset, png.data.length);
  const data = sixteen ? new Uint16Array(width * height * channels) : new Uint8Array(width * height * channels);
  const pick = channels === 1 ? [0] : channels === 2 ? [0, 3] : channels === 3 ? [0, 1, 2] : [0, 1, 2, 3];
  for (let p = 0; p < width * height; p++) {
    for (let c = 0; c < channels; c++) data[p * channels + c] = rgba[p * 4 + pick[c]!]!;
  }
  return { width, height, channels, data };
}

/** Encodes an image as PNG (8- or 16-bit after the data's array type). */
export async function encodePng(img: Image): Promise<Uint8Array> {
  checkImage(img, 'encodePng');
  const PNG = await pngjs();
  const sixteen = img.data instanceof Uint16Array;
  const colorType = colorTypes[img.channels];
  // pngjs reads 16-bit input through `data.buffer` from offset 0, so it gets an array of its own.
  const data = sixteen ? new Uint16Array(img.data) : img.data;
  const png = { width: img.width, height: img.height, data } as unknown as PNG;
  const out = PNG.sync.write(png, {
    colorType,
    inputColorType: colorType,
    bitDepth: sixteen ? 16 : 8,
    inputHasAlpha: img.channels === 2 || img.channels === 4,
  });
  return new Uint8Array(out.buffer, out.byteOffset, out.byteLength);
}

/** Reads a PNG file; errors name the file. */
export async function readPng(path: string): Promise<Image> {
  return decodePng(nodeFs(`reading ${path}`).readFileSync(path), path);
}

/** Writes a PNG file atomically (temporary file, then rename). */
export async function writePng(path: string, img: Image): Promise<void> {
  writeFileAtomic(path, await encodePng(img));
}

/** Writes a label map (i32/u32) as a gray PNG of the labels: 8-bit when they fit, else 16-bit. */
export async function maskToPng(path: string, labels: Tensor): Promise<void> {
  await writePng(path, await maskToImage(labels));
}

// Palettized (indexed-colour) PNG, written and read here because pngjs expands palettes to RGBA: label maps
// such as VOC's SegmentationClass keep their indices in the file and their colours in its palette.

interface Zlib {
  deflateSync(b: Uint8Array, o?: { level?: number }): Uint8Array;
  inflateSync(b: Uint8Array): Uint8Array;
}
function zlib(what: string): Zlib {
  const proc = (globalThis as { process?: { getBuiltinModule?: (m: string) => unknown } }).process;
  const mod = proc?.getBuiltinModule?.('node:zlib') as Zlib | undefined;
  if (!mod) throw new Error(`${what} needs Node or Deno (node:zlib)`);
  return mod;
}

const crcTable = Uint32Array.from({ length: 256 }, (_, n) => {
  let c = n;
  for (let k = 0; k < 8; k++) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1;
  return c >>> 0;
});
function crc32(bytes: Uint8Array): number {
  let c = 0xffffffff;
  for (let i = 0; i < bytes.length; i++) c = crcTable[(c ^ bytes[i]!) & 0xff]! ^ (c >>> 8);
  return (c ^ 0xffffffff) >>> 0;
}

/** An image of palette indices, one byte per pixel, with its palette (RGB triples). */
export interface IndexedImage {
  width: number;
  height: number;
  indices: Uint8Array;
  /** 3 bytes per entry, at most 256 entries */
  palette: Uint8Array;
}

/** Encodes 8-bit palette indices as an indexed-colour PNG (colour type 3). */
export function encodeIndexedPng({ width, height, indices, palette }: IndexedImage): Uint8Array {
  if (indices.length !== width * height) throw new Error(`encodeIndexedPng: ${indices.length} indices do not fill ${width}×${height}`);
  if (palette.length % 3 !== 0 || palette.length === 0 || palette.length > 768) throw new Error(`encodeIndexedPng: palette of ${palette.length} bytes (expected 3 per entry, 1..256 entries)`);
  const raw = new Uint8Array(height * (width + 1)); // each row: filter type 0, then the indices
  for (let y = 0; y < height; y++) raw.set(indices.subarray(y * width, (y + 1) * width), y * (width + 1) + 1);
  const ihdr = new Uint8Array(13);
  const view = new DataView(ihdr.buffer);
  view.setUint32(0, width);
  view.setUint32(4, height);
  ihdr.set([8, 3, 0, 0, 0], 8); // bit depth 8, colour type 3, deflate, adaptive filters, no interlace
  const chunks: [string, Uint8Array][] = [['IHDR', ihdr], ['PLTE', palette], ['IDAT', zlib('encodeIndexedPng').deflateSync(raw, { level: 9 })], ['IEND', new Uint8Array(0)]];
  const out = new Uint8Array(8 + chunks.reduce((s, [, d]) => s + 12 + d.length, 0));
  out.set(signature, 0);
  let at = 8;
  const dv = new DataView(out.buffer);
  for (const [type, data] of chunks) {
    dv.setUint32(at, data.length);
    const body = out.subarray(at + 4, at + 8 + data.length);
    body.set([...type].map((ch) => ch.charCodeAt(0)), 0);
    body.set(data, 4);
    dv.setUint32(at + 8 + data.length, crc32(body));
    at += 12 + data.length;
  }
  return out;
}

/**
 * Decodes an indexed-colour PNG (1, 2, 4 or 8 bits, not interlaced) to its indices and palette; 8-bit gray
 * files are read the same way (the gray value is the index, palette empty), so label maps written either way
 * load alike. `label` (the file name) prefixes every error.
 */
export function decodeIndexedPng(bytes: Uint8Array, label = '<buffer>'): IndexedImage {
  if (bytes.length < 33 || signature.some((b, k) => bytes[k] !== b)) throw new Error(`${label}: not a PNG file (no PNG signature)`);
  const dv = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  let at = 8, width = 0, height = 0, depth = 0, colorType = -1;
  let palette = new Uint8Array(0);
  const idat: Uint8Array[] = [];
  while (at + 12 <= bytes.length) {
    const len = dv.getUint32(at);
    const type = String.fromCharCode(...bytes.subarray(at + 4, at + 8));
    const data = bytes.subarray(at + 8, at + 8 + len);
    if (data.length !== len) throw new Error(`${label}: truncated PNG chunk ${type}`);
    if (type === 'IHDR') {
      [width, height, depth, colorType] = [dv.getUint32(at + 8), dv.getUint32(at + 12), data[8]!, data[9]!];
      if (data[12] !== 0) throw new Error(`${label}: interlaced PNG label maps are not supported`);
    } else if (type === 'PLTE') palette = data.slice();
    else if (type === 'IDAT') idat.push(data);
    else if (type === 'IEND') break;
    at += 12 + len;
  }
  const paletted = colorType === 3 && [1, 2, 4, 8].includes(depth);
  if (!paletted && !(colorType === 0 && depth === 8)) {
    throw new Error(`${label}: a label map must be an indexed-colour PNG or 8-bit gray (found colour type ${colorType}, ${depth} bits)`);
  }
  const joined = new Uint8Array(idat.reduce((s, d) => s + d.length, 0));
  idat.reduce((o, d) => (joined.set(d, o), o + d.length), 0);
  let raw: Uint8Array;
  try {
    raw = zlib('decodeIndexedPng').inflateSync(joined);
  } catch (e) {
    throw new Error(`${label}: corrupt image data: ${(e as Error).message}`);
  }
  const stride = Math.ceil((width * depth) / 8);
  if (raw.length < height * (stride + 1)) throw new Error(`${label}: image data too short for ${width}×${height}`);
  const rows = new Uint8Array(height * stride);
  for (let y = 0; y < height; y++) {
    const filter = raw[y * (stride + 1)]!;
    const src = raw.subarray(y * (stride + 1) + 1, (y + 1) * (stride + 1));
    const row = rows.subarray(y * stride, (y + 1) * stride);
    const up = y > 0 ? rows.subarray((y - 1) * stride, y * stride) : new Uint8Array(stride);
    for (let i = 0; i < stride; i++) {
      const a = i > 0 ? row[i - 1]! : 0, b = up[i]!, c = i > 0 ? up[i - 1]! : 0;
      let pred: number;
      if (filter === 0) pred = 0;
      else if (filter === 1) pred = a;
      else if (filter === 2) pred = b;
      else if (filter === 3) pred = (a + b) >> 1;
      else if (filter === 4) {
        const p = a + b - c, pa = Math.abs(p - a), pb = Math.abs(p - b), pc = Math.abs(p - c);
        pred = pa <= pb && pa <= pc ? a : pb <= pc ? b : c;
      } else throw new Error(`${label}: invalid PNG filter type ${filter} in row ${y}`);
      row[i] = (src[i]! + pred) & 0xff;
    }
  }
  const indices = new Uint8Array(width * height);
  const perByte = 8 / depth, mask = (1 << depth) - 1;
  for (let y = 0; y < height; y++) {
    for (let x = 0; x < width; x++) {
      const byte = rows[y * stride + Math.floor(x / perByte)]!;
      indices[y * width + x] = (byte >> (8 - depth * ((x % perByte) + 1))) & mask;
    }
  }
  return { width, height, indices, palette };
}

/** Writes an indexed-colour PNG atomically. */
export function writeIndexedPng(path: string, img: IndexedImage): void {
  writeFileAtomic(path, encodeIndexedPng(img));
}

/** Reads a label map: indexed-colour or 8-bit gray PNG; errors name the file. */
export function readIndexedPng(path: string): IndexedImage {
  return decodeIndexedPng(nodeFs(`reading ${path}`).readFileSync(path), path);
}
