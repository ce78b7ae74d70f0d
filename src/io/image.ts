// Images in memory and their conversion to and from tensors. Browser-safe: file formats live in png.ts.
// Conversions run on the CPU (an image is small next to the models that consume it).

import { Tensor, shapeStr } from '../engine/tensor.ts';

/** Interleaved samples, row by row (H×W×C): 8-bit in a Uint8Array, 16-bit in a Uint16Array. */
export interface Image {
  width: number;
  height: number;
  /** 1 gray, 2 gray + alpha, 3 RGB, 4 RGBA. */
  channels: 1 | 2 | 3 | 4;
  data: Uint8Array | Uint16Array;
}

/** The largest sample value of the image's bit depth (255 or 65535). */
export function maxSample(img: Image): number {
  return img.data instanceof Uint16Array ? 65535 : 255;
}

/** Throws unless the image's fields are consistent, naming `what`. */
export function checkImage(img: Image, what: string): void {
  const { width, height, channels, data } = img;
  if (!Number.isInteger(width) || !Number.isInteger(height) || width <= 0 || height <= 0) {
    throw new Error(`${what}: invalid image size ${width}×${height}`);
  }
  if (![1, 2, 3, 4].includes(channels)) throw new Error(`${what}: invalid channel count ${channels} (1, 2, 3 or 4)`);
  if (data.length !== width * height * channels) {
    throw new Error(`${what}: ${data.length} samples do not fill ${width}×${height}×${channels}`);
  }
}

export interface ImageToTensorOptions {
  /** Output channels: 1 (luminance, ITU-R 601 weights as PIL's 'L'), 3 (RGB), 4 (RGBA); default the image's own. */
  channels?: 1 | 2 | 3 | 4;
  /** The values black and white map to; default [0, 1] ([-1, 1] for diffusion VAEs). */
  range?: readonly [number, number];
}

/** An image as a [1, C, H, W] f32 tensor with values in `range`. */
export function imageToTensor(img: Image, { channels = img.channels, range = [0, 1] }: ImageToTensorOptions = {}): Tensor {
  checkImage(img, 'imageToTensor');
  const { width, height, data } = img;
  const src = img.channels;
  const hw = width * height;
  const [lo, hi] = range;
  const scale = (hi - lo) / maxSample(img);
  const out = new Float32Array(channels * hw);
  const color = src >= 3;
  const hasAlpha = src === 2 || src === 4;
  for (let p = 0; p < hw; p++) {
    const at = p * src;
    const r = data[at]!;
    const g = color ? data[at + 1]! : r;
    const b = color ? data[at + 2]! : r;
    const a = hasAlpha ? data[at + src - 1]! : maxSample(img);
    const gray = color ? 0.299 * r + 0.587 * g + 0.114 * b : r;
    const values = channels === 1 ? [gray] : channels === 2 ? [gray, a] : channels === 3 ? [r, g, b] : [r, g, b, a];
    values.forEach((v, c) => (out[c * hw + p] = lo + v * scale));
  }
  return Tensor.fromArray(out, [1, channels, height, width]);
}

export interface TensorToImageOptions {
  /** The values that become black and white (clamped outside); default [0, 1]. */
  range?: readonly [number, number];
  depth?: 8 | 16;
}

/** A [1, C, H, W] or [C, H, W] f32 tensor (C = 1…4) as an image: values clamped to `range` and rounded. */
export async function tensorToImage(t: Tensor, { range = [0, 1], depth = 8 }: TensorToImageOptions = {}): Promise<Image> {
  const [c, height, width] = t.rank === 4 && t.shape[0] === 1 ? t.shape.slice(1) : t.shape;
  if ((t.rank !== 3 && !(t.rank === 4 && t.shape[0] === 1)) || c! < 1 || c! > 4 || t.dtype !== 'f32') {
    throw new Error(`tensorToImage: expected an f32 tensor [1, C, H, W] or [C, H, W] with C = 1…4, got ${t.dtype} ${shapeStr(t.shape)}`);
  }
  const values = await t.toArray();
  const hw = width! * height!;
  const max = depth === 16 ? 65535 : 255;
  const [lo, hi] = range;
  const data = depth === 16 ? new Uint16Array(c! * hw) : new Uint8Array(c! * hw);
  for (let p = 0; p < hw; p++) {
    for (let k = 0; k < c!; k++) {
      const v = (values[k * hw + p]! - lo) / (hi - lo);
      // NaN becomes 0 (black) rather than poisoning the file.
      data[p * c! + k] = Math.round(Math.min(Math.max(v, 0), 1) * max) || 0;
    }
  }
  return { width: width!, height: height!, channels: c as Image['channels'], data };
}

/**
 * A label map (i32 or u32 tensor [H, W], [1, H, W] or [1, 1, H, W]) as a gray image holding the labels
 * themselves: 8-bit when every label is at most 255, else 16-bit (labels must lie in 0…65535).
 */
export async function maskToImage(labels: Tensor): Promise<Image> {
  const dims = labels.shape.filter((d, k) => !(d === 1 && k < labels.rank - 2));
  if ((labels.dtype !== 'i32' && labels.dtype !== 'u32') || dims.length !== 2 || labels.rank > 4) {
    throw new Error(`maskToImage: expected an i32/u32 label map [H, W] (or [1, H, W], [1, 1, H, W]), got ${labels.dtype} ${shapeStr(labels.shape)}`);
  }
  const values = await labels.toArray();
  let max = 0;
  for (let k = 0; k < values.length; k++) {
    const v = values[k]!;
    if (v < 0 || v > 65535) throw new Error(`maskToImage: label ${v} at index ${k} does not fit in a 16-bit PNG (0…65535)`);
    max = Math.max(max, v);
  }
  const data = max <= 255 ? Uint8Array.from(values) : Uint16Array.from(values);
  return { width: dims[1]!, height: dims[0]!, channels: 1, data };
}

/** The inverse of `maskToImage`: a one-channel image's samples as an i32 label map [H, W]. */
export function imageToLabels(img: Image): Tensor {
  checkImage(img, 'imageToLabels');
  if (img.channels !== 1) throw new Error(`imageToLabels: a label map has one channel, this image has ${img.channels}`);
  return Tensor.fromArray(Int32Array.from(img.data), [img.height, img.width]);
}

/**
 * A map of scores (f32 [H, W], [1, H, W] or [1, 1, H, W], e.g. a cross-attention map) as an RGB heat map:
 * values scaled from [min, max] to [0, 1] (a constant map is all 0) through the "jet" colour map.
 */
export async function heatmapToImage(map: Tensor): Promise<Image> {
  const dims = map.shape.filter((d, k) => !(d === 1 && k < map.rank - 2));
  if (map.dtype !== 'f32' || dims.length !== 2 || map.rank > 4) {
    throw new Error(`heatmapToImage: expected an f32 map [H, W] (or [1, H, W], [1, 1, H, W]), got ${map.dtype} ${shapeStr(map.shape)}`);
  }
  const values = await map.toArray();
  let lo = Infinity;
  let hi = -Infinity;
  for (const v of values) if (Number.isFinite(v)) [lo, hi] = [Math.min(lo, v), Math.max(hi, v)];
  const span = hi > lo ? hi - lo : 1;
  const data = new Uint8Array(values.length * 3);
  const channel = (v: number, centre: number) => Math.round(Math.min(Math.max(1.5 - Math.abs(4 * v - centre), 0), 1) * 255);
  values.forEach((x, p) => {
    const v = Number.isFinite(x) ? (x - lo) / span : 0;
    data.set([channel(v, 3), channel(v, 2), channel(v, 1)], p * 3);
  });
  return { width: dims[1]!, height: dims[0]!, channels: 3, data };
}

/** 8-bit RGB images of one height laid out left to right, `gap` dark pixels apart. */
export function sideBySide(images: readonly Image[], gap = 2): Image {
  const h = images[0]?.height ?? 0;
  images.forEach((img, k) => {
    if (img.channels !== 3 || img.data instanceof Uint16Array || img.height !== h) {
      throw new Error(`sideBySide: image ${k} is ${img.width}×${img.height}×${img.channels}; expected 8-bit RGB images ${h} pixels high`);
    }
  });
  const W = images.reduce((n, img) => n + img.width, 0) + gap * Math.max(0, images.length - 1);
  const data = new Uint8Array(W * h * 3).fill(40);
  let x0 = 0;
  for (const img of images) {
    for (let y = 0; y < h; y++) data.set(img.data.subarray(y * img.width * 3, (y + 1) * img.width * 3), (y * W + x0) * 3);
    x0 += img.width + gap;
  }
  return { width: W, height: h, channels: 3, data };
}

/** Images one above the other (8-bit RGB, any widths; narrower ones padded on the right), `gap` pixels apart. */
export function stacked(images: readonly Image[], gap = 2): Image {
  images.forEach((img, k) => {
    if (img.channels !== 3 || img.data instanceof Uint16Array) throw new Error(`stacked: image ${k} is ${img.width}×${img.height}×${img.channels}; expected 8-bit RGB`);
  });
  const W = Math.max(0, ...images.map((img) => img.width));
  const H = images.reduce((n, img) => n + img.height, 0) + gap * Math.max(0, images.length - 1);
  const data = new Uint8Array(W * H * 3).fill(40);
  let y0 = 0;
  for (const img of images) {
    for (let y = 0; y < img.height; y++) data.set(img.data.subarray(y * img.width * 3, (y + 1) * img.width * 3), ((y0 + y) * W) * 3);
    y0 += img.height + gap;
  }
  return { width: W, height: H, channels: 3, data };
}

/**
 * Pillow's `Image.resize` of an 8-bit image, bit-exact: BILINEAR (a triangle filter widened by the scale when
 * shrinking, so it antialiases; fixed-point weights with 22 fraction bits; the horizontal pass first, rounded to
 * 8 bits, then the vertical) or NEAREST. Models whose reference preprocesses with PIL (FOPA, transformers'
 * image processors) need exactly these bytes; torch's interpolate differs.
 */
export function pilResize(img: Image, width: number, height: number, filter: 'bilinear' | 'nearest'): Image {
  if (img.data instanceof Uint16Array) throw new Error('pilResize: expected an 8-bit image');
  if (!Number.isInteger(width) || !Number.isInteger(height) || width < 1 || height < 1) throw new Error(`pilResize: invalid size ${width}×${height}`);
  const ch = img.channels;
  if (filter === 'nearest') {
    const data = new Uint8Array(width * height * ch);
    for (let y = 0; y < height; y++) {
      const sy = Math.floor(((y + 0.5) * img.height) / height);
      for (let x = 0; x < width; x++) {
        const sx = Math.floor(((x + 0.5) * img.width) / width);
        for (let c = 0; c < ch; c++) data[(y * width + x) * ch + c] = img.data[(sy * img.width + sx) * ch + c]!;
      }
    }
    return { width, height, channels: ch, data };
  }
  let cur: Image = img;
  if (width !== img.width) cur = resampleAxis(cur, width, 'x');
  if (height !== img.height) cur = resampleAxis(cur, height, 'y');
  return cur === img ? { ...img, data: Uint8Array.from(img.data) } : cur;
}

/** One axis of Pillow's bilinear resampling (ImagingResampleHorizontal/Vertical_8bpc). */
function resampleAxis(img: Image, outSize: number, axis: 'x' | 'y'): Image {
  const inSize = axis === 'x' ? img.width : img.height;
  const scale = inSize / outSize;
  const fs = Math.max(scale, 1);
  const support = fs;
  const precision = 2 ** 22;
  const taps = Array.from({ length: outSize }, (_, i) => {
    const center = (i + 0.5) * scale;
    const xmin = Math.max(Math.trunc(center - support + 0.5), 0);
    const xmax = Math.min(Math.trunc(center + support + 0.5), inSize);
    const w = Array.from({ length: xmax - xmin }, (_, j) => Math.max(0, 1 - Math.abs((j + xmin - center + 0.5) / fs)));
    const total = w.reduce((a, b) => a + b, 0);
    return { xmin, k: w.map((v) => {
      const n = total !== 0 ? v / total : v;
      return Math.trunc(n < 0 ? n * precision - 0.5 : n * precision + 0.5);
    }) };
  });
  const [W, H] = axis === 'x' ? [outSize, img.height] : [img.width, outSize];
  const ch = img.channels;
  const data = new Uint8Array(W * H * ch);
  for (let y = 0; y < H; y++) {
    for (let x = 0; x < W; x++) {
      const t = taps[axis === 'x' ? x : y]!;
      for (let c = 0; c < ch; c++) {
        let acc = precision / 2;
        t.k.forEach((k, j) => {
          const [sx, sy] = axis === 'x' ? [t.xmin + j, y] : [x, t.xmin + j];
          acc += img.data[(sy * img.width + sx) * ch + c]! * k;
        });
        data[(y * W + x) * ch + c] = Math.min(255, Math.max(0, Math.floor(acc / precision)));
      }
    }
  }
  return { width: W, height: H, channels: ch, data };
}
