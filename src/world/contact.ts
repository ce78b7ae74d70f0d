// A contact sheet: scenes side by side with their instance masks overlaid, for a person to look at.
import { nodeFs } from '../io/fs.ts';
import type { Image } from '../io/image.ts';
import { writePng } from '../io/png.ts';
import { vocPalette } from '../data/voc.ts';
import { type Scene, generateScene } from './scene.ts';
import { splitSeed } from './splits.ts';

/**
 * Lays `scenes` (all the same size) out in a grid of `columns`, each as the picture and, beside it, the picture
 * with its semantic mask blended in the VOC colours, instance outlines in white, ignore pixels in grey.
 */
export function contactSheet(scenes: readonly Scene[], columns = 8, gap = 2): Image {
  const { width: w, height: h } = scenes[0]!;
  const cellW = 2 * w + gap, cellH = h + gap;
  const rows = Math.ceil(scenes.length / columns);
  const W = columns * cellW + gap, H = rows * cellH + gap;
  const data = new Uint8Array(W * H * 3).fill(40);
  scenes.forEach((s, n) => {
    if (s.width !== w || s.height !== h) throw new Error(`contactSheet: scene ${n} is ${s.width}×${s.height}, expected ${w}×${h}`);
    const ox = gap + (n % columns) * cellW, oy = gap + Math.floor(n / columns) * cellH;
    for (let y = 0; y < h; y++) {
      for (let x = 0; x < w; x++) {
        const p = y * w + x;
        const id = s.instance[p]!;
        const edge = id !== 0 && ((x + 1 < w && s.instance[p + 1] !== id) || (y + 1 < h && s.instance[p + w] !== id) || (x > 0 && s.instance[p - 1] !== id) || (y > 0 && s.instance[p - w] !== id));
        for (let c = 0; c < 3; c++) {
          const v = s.image[3 * p + c]!;
          data[3 * ((oy + y) * W + ox + x) + c] = v;
          const label = s.semantic[p]!;
          const over = edge ? 255 : label === 0 ? v * 0.6 : Math.round(0.35 * v + 0.65 * vocPalette[3 * label + c]!);
          data[3 * ((oy + y) * W + ox + w + x) + c] = over;
        }
      }
    }
  });
  return { width: W, height: H, channels: 3, data };
}

/** Scales an image up by an integer factor (nearest neighbour), for looking at small scenes. */
export function zoomImage(img: Image, factor: number): Image {
  const { width: w, height: h, channels: ch } = img;
  const W = w * factor, H = h * factor;
  const data = new Uint8Array(W * H * ch);
  for (let y = 0; y < H; y++) {
    for (let x = 0; x < W; x++) {
      for (let c = 0; c < ch; c++) data[(y * W + x) * ch + c] = img.data[(Math.floor(y / factor) * w + Math.floor(x / factor)) * ch + c]!;
    }
  }
  return { width: W, height: H, channels: ch, data };
}

/** Writes the contact sheet of the first `count` validation scenes at `size` pixels (zoomed ×2 below 96 px). */
export async function writeWorldContactSheet(path: string, { size = 64, count = 64 }: { size?: number; count?: number } = {}): Promise<void> {
  const scenes = Array.from({ length: count }, (_, k) => generateScene(splitSeed('val', k), { width: size }));
  const fs = nodeFs(`writing ${path}`);
  fs.mkdirSync(path.replace(/\/[^/]*$/, '') || '.', { recursive: true });
  await writePng(path, zoomImage(contactSheet(scenes), size < 96 ? 2 : 1));
}
