// Loss curves as pictures for model cards: per-step values in light grey, their moving average in dark blue,
// over grid lines at every power of ten (log scale; fainter ones at 2× and 5×) and at every tenth of the steps. No text: the card that
// shows the picture states the axes (`curveAxes`).

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

export function lossCurve(values: readonly number[], { width = 480, height = 240, window }: CurveOptions = {}): Image {
  const data = new Uint8Array(width * height * 3).fill(255);
  const put = (x: number, y: number, [r, g, b]: readonly number[]) => {
    if (x < 0 || y < 0 || x >= width || y >= height) return;
    const o = 3 * (Math.round(y) * width + Math.round(x));
    data[o] = r!;
    data[o + 1] = g!;
    data[o + 2] = b!;
  };
  const { lo, hi } = curveAxes(values);
  const [l0, l1] = [Math.log10(lo), Math.log10(hi)];
  const yOf = (v: number) => (height - 1) * (1 - (Math.log10(Math.max(v, lo)) - l0) / (l1 - l0));
  const n = Math.max(values.length, 2);
  const xOf = (i: number) => ((width - 1) * i) / (n - 1);
  for (let d = l0; d <= l1; d++) {
    for (let x = 0; x < width; x++) {
      put(x, yOf(10 ** d), [200, 200, 200]);
      if (d < l1) for (const m of [2, 5]) put(x, yOf(m * 10 ** d), [235, 235, 235]);
    }
  }
  for (let k = 0; k <= 10; k++) for (let y = 0; y < height; y++) put(((width - 1) * k) / 10, y, [235, 235, 235]);
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
  return { width, height, channels: 3, data };
}
