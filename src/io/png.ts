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
