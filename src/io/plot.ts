// Charts as pictures, labelled with a 5×7 pixel font. Loss curves for model cards: per-step values in light grey,
// their moving average in dark blue, over grid lines at every power of ten (log scale, each labelled; fainter ones
// at 2× and 5×) and at every tenth of the steps (labelled at 0, half and all). Grouped bar charts (the ablation table).

import type { Image } from './image.ts';

export interface CurveOptions {
  width?: number;
  height?: number;
  /** Steps in the moving average (default: 1/50 of the steps, at least 1). */
  window?: number;
}

/** The value range a curve is drawn over: [lo, hi] in powers of ten around the finite positive values. */
export function curveAxes(values: readonly number[]): { lo: number; hi: number } {
  const finite = values.filter((v) => Number.isFinite(v) && v > 0);
  if (finite.length === 0) return { lo: 1e-3, hi: 1 };
  return { lo: 10 ** Math.floor(Math.log10(Math.min(...finite))), hi: 10 ** Math.ceil(Math.log10(Math.max(...finite)) + 1e-9) };
}

/** A power of ten as the axis writes it: plain from 0.001 to 10000, else 1E±k. */
const decadeLabel = (d: number) => (d >= -3 && d <= 4 ? (10 ** d).toFixed(Math.max(0, -d)) : `1E${d}`);

/** The loss curve of `values` (one per step): a log-scale y axis labelled at each power of ten, steps along x. */
export function lossCurve(values: readonly number[], { width = 480, height = 240, window }: CurveOptions = {}): Image {
  const img: Image = { width, height, channels: 3, data: new Uint8Array(width * height * 3).fill(255) };
  const put = (x: number, y: number, [r, g, b]: readonly number[]) => {
    if (x < 0 || y < 0 || x >= width || y >= height) return;
    const o = 3 * (Math.round(y) * width + Math.round(x));
    img.data[o] = r!;
    img.data[o + 1] = g!;
    img.data[o + 2] = b!;
  };
  const { lo, hi } = curveAxes(values);
  const [l0, l1] = [Math.log10(lo), Math.log10(hi)];
  // the plot's box: the decade labels on its left, the step labels under it, a title above
  const labels = Array.from({ length: l1 - l0 + 1 }, (_, k) => decadeLabel(l0 + k));
  const [left, right, top, bottom] = [6 * Math.max(...labels.map((t) => t.length)) + 4, width - 4, 16, height - 12];
  const yOf = (v: number) => bottom - ((bottom - top) * (Math.log10(Math.max(v, lo)) - l0)) / (l1 - l0);
  const n = Math.max(values.length, 2);
  const xOf = (i: number) => left + ((right - left) * i) / (n - 1);
  for (let d = l0; d <= l1; d++) {
    for (let x = left; x <= right; x++) {
      put(x, yOf(10 ** d), [200, 200, 200]);
      if (d < l1) for (const m of [2, 5]) put(x, yOf(m * 10 ** d), [235, 235, 235]);
    }
    drawText(img, labels[d - l0]!, 1, Math.round(yOf(10 ** d)) - 3, [90, 90, 90]);
  }
  for (let k = 0; k <= 10; k++) for (let y = top; y <= bottom; y++) put(left + ((right - left) * k) / 10, y, [235, 235, 235]);
  drawText(img, 'LOSS', 1, 2, [60, 60, 60]);
  for (const k of [0, 5, 10]) {
    const text = String(Math.round((values.length * k) / 10));
    // the label's left edge at 0, its middle at half, its right edge at the end
    drawText(img, text, Math.round(left + ((right - left - 6 * text.length + 1) * k) / 10), bottom + 3, [90, 90, 90]);
  }
  drawText(img, 'STEP', left + Math.round((right - left) * 0.75) - 11, bottom + 3, [60, 60, 60]);
  const line = (points: [number, number][], color: readonly number[]) => {
    for (let i = 1; i < points.length; i++) {
      const [[x0, y0], [x1, y1]] = [points[i - 1]!, points[i]!];
      const steps = Math.max(1, Math.ceil(Math.max(Math.abs(x1 - x0), Math.abs(y1 - y0))));
      for (let s = 0; s <= steps; s++) put(x0 + ((x1 - x0) * s) / steps, y0 + ((y1 - y0) * s) / steps, color);
    }
  };
  const finite = values.map((v, i) => [i, v] as const).filter(([, v]) => Number.isFinite(v));
  line(finite.map(([i, v]) => [xOf(i), yOf(v)]), [190, 190, 190]);
  const w = window ?? Math.max(1, Math.round(values.length / 50));
  const smooth: [number, number][] = [];
  let acc = 0;
  finite.forEach(([i, v], k) => {
    acc += v;
    if (k >= w) acc -= finite[k - w]![1];
    if (k >= w - 1) smooth.push([xOf(i), yOf(acc / w)]);
  });
  line(smooth, [20, 60, 160]);
  return img;
}

/** A 5×7 pixel font (rows top to bottom, '#' lit) for the labels of charts: digits, capitals and a few signs. */
const glyphs: Record<string, string> = {
  '0': ' ### #   ##  ### # ###  ##   # ### ', '1': '  #   ##    #    #    #    #   ### ', '2': ' ### #   #    #   #   #   #   #####',
  '3': '#####   #   #     #    ##   # ### ', '4': '   #   ##  # # #  # #####   #    # ', '5': '######    ####     #    ##   # ### ',
  '6': '  ##  #   #    #### #   ##   # ### ', '7': '#####    #   #   #   #    #    #   ', '8': ' ### #   ##   # ### #   ##   # ### ',
  '9': ' ### #   ##   # ####    #   #  ##  ', A: ' ### #   ##   #######   ##   ##   #', B: '#### #   ##   ##### #   ##   ##### ',
  C: ' ### #   ##    #    #    #   # ### ', D: '#### #   ##   ##   ##   ##   ##### ', E: '######    #    #### #    #    #####',
  F: '######    #    #### #    #    #    ', G: ' ### #   ##    # ####   ##   # ####', H: '#   ##   ##   #######   ##   ##   #',
  I: ' ###   #    #    #    #    #   ### ', J: '  ###   #    #    #    #  #  #  ## ', K: '#   ##  # # #  ##   # #  #  # #   #',
  L: '#    #    #    #    #    #    #####', M: '#   ### ### # ## # ##   ##   ##   #', N: '#   ##   ###  ## # ##  ###   ##   #',
  O: ' ### #   ##   ##   ##   ##   # ### ', P: '#### #   ##   ##### #    #    #    ', Q: ' ### #   ##   ##   ## # ##  #  ## #',
  R: '#### #   ##   ##### # #  #  # #   #', S: ' #####    #     ###     #    #### ', T: '#####  #    #    #    #    #    #  ',
  U: '#   ##   ##   ##   ##   ##   # ### ', V: '#   ##   ##   ##   ##   # # #   #  ', W: '#   ##   ##   ## # ## # ## # # # # ',
  X: '#   ##   # # #   #   # # #   ##   #', Y: '#   ##   # # #   #    #    #    #  ', Z: '#####    #   #   #   #   #    #####',
  '.': '                          ##   ## ', '%': '##   ##  #   #   #   #   #  ##   ##', '-': '               #####               ',
  '/': '         #   #   #   #   #         ', ' ': '                                   ',
};

type Rgb = readonly [number, number, number];

/** Draws `text` (capitals, digits, . % - /) with its top-left corner at (x, y), each font pixel `scale`² pixels; returns the width drawn. */
export function drawText(img: Image, text: string, x: number, y: number, color: Rgb, scale = 1): number {
  let cx = x;
  for (const ch of text.toUpperCase()) {
    const g = glyphs[ch];
    if (g === undefined) throw new Error(`drawText: no glyph for '${ch}' (capitals, digits and . % - / only)`);
    for (let k = 0; k < 35; k++) {
      if (g[k] !== '#') continue;
      for (let dy = 0; dy < scale; dy++) for (let dx = 0; dx < scale; dx++) {
        const [px, py] = [cx + (k % 5) * scale + dx, y + Math.floor(k / 5) * scale + dy];
        if (px < 0 || py < 0 || px >= img.width || py >= img.height) continue;
        img.data.set(color, 3 * (py * img.width + px));
      }
    }
    cx += 6 * scale;
  }
  return cx - x;
}

export interface BarChartOptions {
  /** The name of each value of a group (legend), in order. */
  series: readonly string[];
  /** The value at the top of the axis (default the largest value). */
  max?: number;
  width?: number;
  height?: number;
}

const seriesColors: readonly Rgb[] = [[31, 119, 180], [255, 127, 14], [44, 160, 44], [214, 39, 40], [148, 103, 189]];

/**
 * Grouped bars: one group per entry (its label under it), one bar per series (legend on top), each bar's value in
 * percent of 1 above it (one decimal below 10 %), grid lines at every tenth of `max` labelled in percent.
 */
export function barChart(groups: readonly { label: string; values: readonly number[] }[], { series, max, width = 720, height = 320 }: BarChartOptions): Image {
  const img: Image = { width, height, channels: 3, data: new Uint8Array(width * height * 3).fill(255) };
  const top = max ?? Math.max(...groups.flatMap((g) => g.values.filter(Number.isFinite)), 1e-9);
  const [left, right, upper, lower] = [36, 8, 24, height - 20];
  const yOf = (v: number) => Math.round(lower - ((lower - upper) * Math.min(Math.max(v, 0), top)) / top);
  const fill = (x0: number, y0: number, x1: number, y1: number, c: Rgb) => {
    for (let y = Math.max(0, y0); y < Math.min(height, y1); y++) for (let x = Math.max(0, x0); x < Math.min(width, x1); x++) img.data.set(c, 3 * (y * width + x));
  };
  for (let k = 0; k <= 10; k++) {
    const y = yOf((top * k) / 10);
    fill(left, y, width - right, y + 1, k === 0 ? [120, 120, 120] : [225, 225, 225]);
    if (k % 2 === 0) drawText(img, String(Math.round((100 * top * k) / 10)), 2, y - 3, [90, 90, 90]);
  }
  let lx = left;
  series.forEach((name, s) => {
    fill(lx, 6, lx + 10, 16, seriesColors[s % seriesColors.length]!);
    lx += 14 + drawText(img, name, lx + 14, 8, [60, 60, 60]) + 16;
  });
  const groupWidth = (width - left - right) / groups.length;
  const barWidth = Math.max(1, Math.floor((groupWidth * 0.8) / series.length));
  groups.forEach((g, i) => {
    const x0 = Math.round(left + i * groupWidth + groupWidth * 0.1);
    g.values.forEach((v, s) => {
      if (!Number.isFinite(v)) return;
      const x = x0 + s * barWidth;
      fill(x, yOf(v), x + barWidth - 1, lower, seriesColors[s % seriesColors.length]!);
      // below 10 % one decimal, so that small values do not all read 0
      const text = 100 * v < 10 ? (100 * v).toFixed(1) : String(Math.round(100 * v));
      drawText(img, text, x + Math.floor((barWidth - 1 - 6 * text.length + 1) / 2), yOf(v) - 9, [60, 60, 60]);
    });
    drawText(img, g.label, Math.round(left + i * groupWidth + (groupWidth - 6 * g.label.length + 1) / 2), lower + 6, [30, 30, 30]);
  });
  return img;
}
