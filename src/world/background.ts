// ShapeWorld's backgrounds: five kinds, each a sky or wall above a horizon and a surface below it, with
// gradients and texture noise. Painted as albedo (linear 0..1 RGB); the scene light is applied afterwards.
import type { BackgroundKind } from './classes.ts';
import { type Rgb, fractalNoise, hash3, valueNoise } from './raster.ts';

/** What a background is, enough to repaint it and to judge a placement on it. */
export interface BackgroundSpec {
  kind: BackgroundKind;
  /** the horizon (or the wall/floor line indoors) as a fraction of the image height from the top */
  horizon: number;
  /** seed of its colours and noise */
  seed: number;
}

/** The range of horizons each kind is drawn with (fraction of the image height). */
export const horizonRange: Record<BackgroundKind, [number, number]> = {
  sky: [0.78, 0.92],
  water: [0.3, 0.45],
  grass: [0.28, 0.42],
  road: [0.28, 0.4],
  indoor: [0.3, 0.42],
};

const mix = (a: Rgb, b: Rgb, t: number): [number, number, number] => [a[0] + (b[0] - a[0]) * t, a[1] + (b[1] - a[1]) * t, a[2] + (b[2] - a[2]) * t];

/** Paints the background into `rgb` (W·H·3 floats). */
export function paintBackground(spec: BackgroundSpec, W: number, H: number, rgb: Float32Array): void {
  const { kind, seed } = spec;
  const r = (k: number) => hash3(k, 7, seed); // per-scene colour choices
  const hy = spec.horizon * H;
  const S = Math.max(W, H);
  const skyTop: Rgb = mix([0.22, 0.45, 0.85], [0.4, 0.55, 0.8], r(1));
  const skyLow: Rgb = mix([0.75, 0.85, 0.95], [0.9, 0.88, 0.85], r(2));
  const grassNear: Rgb = mix([0.25, 0.55, 0.15], [0.4, 0.6, 0.2], r(3));
  const grassFar: Rgb = mix([0.45, 0.65, 0.35], [0.5, 0.62, 0.4], r(4));
  const waterFar: Rgb = mix([0.45, 0.65, 0.8], [0.55, 0.7, 0.75], r(5));
  const waterNear: Rgb = mix([0.05, 0.25, 0.45], [0.08, 0.32, 0.4], r(6));
  const wall: Rgb = mix([0.85, 0.8, 0.68], [0.7, 0.78, 0.72], r(7));
  const floor: Rgb = r(8) < 0.5 ? mix([0.55, 0.36, 0.2], [0.42, 0.28, 0.18], r(12)) : r(8) < 0.75 ? [0.72, 0.6, 0.45] : [0.5, 0.52, 0.55]; // dark or light wood, grey
  const asphalt: Rgb = mix([0.32, 0.32, 0.34], [0.42, 0.41, 0.4], r(9));
  const roadHalf = 0.3 + 0.15 * r(10); // half-width of the road at the bottom edge, fraction of W
  const vanish = W * (0.35 + 0.3 * r(11));
  const hillSeed = seed + 101;
  for (let y = 0; y < H; y++) {
    for (let x = 0; x < W; x++) {
      const px = x + 0.5, py = y + 0.5;
      const nx = (px / S) * 8, ny = (py / S) * 8;
      let c: [number, number, number];
      // the skyline is bumpy outdoors (hills, trees), straight indoors and on water
      const bump = kind === 'grass' || kind === 'road' || kind === 'sky' ? (valueNoise(nx * 0.8, 0, hillSeed) - 0.3) * 0.05 * S : 0;
      const above = py < hy - bump;
      if (kind === 'indoor') {
        if (py < hy) {
          // wall with a vertical-stripe wallpaper and a skirting board just above the floor
          const stripe = Math.floor((px / S) * 12 + hash3(1, 2, seed) * 4) % 2 === 0 ? 1 : 0.94;
          c = mix(wall, [wall[0] * 0.8, wall[1] * 0.8, wall[2] * 0.8], py / hy);
          c = [c[0] * stripe, c[1] * stripe, c[2] * stripe];
          if (py > hy - 0.03 * S) c = [0.92, 0.9, 0.86];
        } else {
          // wooden floor boards running towards the viewer, widening with distance below the line
          const depth = (py - hy) / (H - hy + 1);
          const u = (px - W / 2) / (0.2 + depth) / S;
          const board = Math.floor(u * 4 + 100);
          const grain = valueNoise(u * 30, depth * 2, seed + board);
          const t = 0.85 + 0.15 * hash3(board, 3, seed) + 0.08 * (grain - 0.5);
          c = [floor[0] * t, floor[1] * t, floor[2] * t];
          if (Math.abs(u * 4 - Math.round(u * 4)) < 0.03 / (0.2 + depth)) c = [c[0] * 0.6, c[1] * 0.6, c[2] * 0.6];
        }
      } else if (above) {
        c = mix(skyTop, skyLow, Math.min(1, py / Math.max(hy, 1)));
        const cloud = fractalNoise(nx * 0.6, ny * 1.6, seed + 3);
        if (cloud > 0.55) c = mix(c, [0.97, 0.97, 0.98], Math.min(1, (cloud - 0.55) * 5));
        if (kind === 'grass' || kind === 'road') {
          // a tree line on the horizon
          if (py > hy - bump - 0.06 * S * valueNoise(nx * 3, 0, seed + 5)) c = [0.15, 0.32, 0.14];
        }
      } else {
        const depth = (py - hy) / (H - hy + 1); // 0 at the horizon, 1 at the bottom
        if (kind === 'water') {
          // waves: streaks stretched along x, growing towards the viewer
          const wave = valueNoise((px / S) * 6 / (0.3 + depth), (py / S) * 60 / (0.3 + 2 * depth), seed + 11);
          c = mix(waterFar, waterNear, Math.sqrt(depth));
          c = mix(c, [0.85, 0.92, 0.98], Math.max(0, wave - 0.7) * 1.5);
        } else if (kind === 'sky') {
          // distant hills below a high horizon
          c = mix([0.3, 0.45, 0.4], [0.2, 0.35, 0.2], depth);
          c = mix(c, [0.4, 0.5, 0.35], fractalNoise(nx * 2, ny * 2, seed + 13) * 0.4);
        } else {
          // grass with a texture that coarsens towards the viewer
          const n = fractalNoise((px / S) * 30 / (0.2 + depth), (py / S) * 40 / (0.2 + depth), seed + 17);
          c = mix(grassFar, grassNear, depth);
          const t = 0.8 + 0.4 * n;
          c = [c[0] * t, c[1] * t, c[2] * t];
          if (kind === 'road') {
            // the road: a trapezoid from the vanishing point to the bottom edge, with a dashed centre line
            const half = W * roadHalf * depth + 0.01 * W;
            const centre = vanish + (W / 2 - vanish) * depth;
            const off = Math.abs(px - centre);
            if (off < half) {
              const g = 0.92 + 0.16 * valueNoise(px * 0.7, py * 0.7, seed + 19);
              c = [asphalt[0] * g, asphalt[1] * g, asphalt[2] * g];
              const dash = Math.floor(Math.log(0.05 + depth) * 6) % 2 === 0;
              if (off < 0.02 * half + 0.3 && dash) c = [0.95, 0.85, 0.3];
              if (off > half * 0.94) c = [0.85, 0.85, 0.85];
            }
          }
        }
      }
      const i = 3 * (y * W + x);
      rgb[i] = c[0];
      rgb[i + 1] = c[1];
      rgb[i + 2] = c[2];
    }
  }
}
