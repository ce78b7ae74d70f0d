// COCO-style mask average precision: greedy matching by score at IoU thresholds 0.50:0.05:0.95, precision
// made monotone and sampled at 101 recall points, averaged over classes with truth (as pycocotools does for
// the "all" area range, no crowd regions).

/** One instance mask: binary, row-major; predictions carry a score. */
export interface MaskInstance {
  imageId: number | string;
  categoryId: number;
  mask: ArrayLike<number>;
  score?: number;
}

export interface MaskApResult {
  /** mean over IoU thresholds .50:.95 and classes */
  ap: number;
  ap50: number;
  ap75: number;
  /** AP over .50:.95 per class id with truth */
  perClass: Map<number, number>;
}

/** The IoU thresholds 0.50, 0.55, …, 0.95. */
export const iouThresholds = Array.from({ length: 10 }, (_, k) => 0.5 + 0.05 * k);
const recallPoints = Array.from({ length: 101 }, (_, k) => k / 100);

/** Intersection over union of two binary masks of the same size. */
export function maskIou(a: ArrayLike<number>, b: ArrayLike<number>): number {
  if (a.length !== b.length) throw new Error(`maskIou: masks of ${a.length} and ${b.length} pixels`);
  let inter = 0, union = 0;
  for (let i = 0; i < a.length; i++) {
    const x = a[i] ? 1 : 0, y = b[i] ? 1 : 0;
    inter += x & y;
    union += x | y;
  }
  return union ? inter / union : 0;
}

/** 101-point interpolated precision of detections (in score order) flagged true/false positive, with `nTruth` truths. */
function interpolatedPrecision(tp: readonly boolean[], nTruth: number): number[] {
  const precision: number[] = [], recall: number[] = [];
  let t = 0, f = 0;
  for (const hit of tp) {
    if (hit) t++;
    else f++;
    precision.push(t / (t + f));
    recall.push(t / nTruth);
  }
  for (let i = precision.length - 1; i > 0; i--) precision[i - 1] = Math.max(precision[i - 1]!, precision[i]!);
  return recallPoints.map((r) => {
    const i = recall.findIndex((v) => v >= r); // searchsorted(side='left')
    return i >= 0 ? precision[i]! : 0;
  });
}

/** Mask AP of predictions against truths (all images of the dataset: an image absent from both counts nothing). */
export function maskAp(preds: readonly MaskInstance[], truths: readonly MaskInstance[], maxDets = 100): MaskApResult {
  const key = (m: MaskInstance) => `${m.categoryId}\u0000${m.imageId}`;
  const group = (xs: readonly MaskInstance[]) => {
    const g = new Map<string, MaskInstance[]>();
    for (const x of xs) g.set(key(x), [...(g.get(key(x)) ?? []), x]);
    return g;
  };
  const predBy = group(preds), truthBy = group(truths);
  const images = [...new Set([...preds, ...truths].map((m) => m.imageId))].sort((a, b) => (a < b ? -1 : a > b ? 1 : 0));
  const categories = [...new Set(truths.map((t) => t.categoryId))].sort((a, b) => a - b);
  const perThreshold = iouThresholds.map(() => [] as number[]); // AP per class at each threshold
  for (const cat of categories) {
    // per image: detections by score (stable), top maxDets, IoUs against the truths
    const perImage = images.map((img) => {
      const gts = truthBy.get(key({ imageId: img, categoryId: cat, mask: [] })) ?? [];
      const dts = [...(predBy.get(key({ imageId: img, categoryId: cat, mask: [] })) ?? [])].sort((a, b) => (b.score ?? 1) - (a.score ?? 1)).slice(0, maxDets);
      return { gts, dts, ious: dts.map((d) => gts.map((g) => maskIou(d.mask, g.mask))) };
    });
    const nTruth = perImage.reduce((s, x) => s + x.gts.length, 0);
    iouThresholds.forEach((thr, ti) => {
      const scored: { score: number; tp: boolean }[] = [];
      for (const { gts, dts, ious } of perImage) {
        const taken = new Array<boolean>(gts.length).fill(false);
        dts.forEach((d, di) => {
          // the best still-unmatched truth with IoU ≥ thr (ties: the later one, as pycocotools)
          let best = Math.min(thr, 1 - 1e-10), m = -1;
          gts.forEach((_, gi) => {
            if (taken[gi] || ious[di]![gi]! < best) return;
            best = ious[di]![gi]!;
            m = gi;
          });
          if (m >= 0) taken[m] = true;
          scored.push({ score: d.score ?? 1, tp: m >= 0 });
        });
      }
      const order = scored.map((s, i) => [s, i] as const).sort((a, b) => b[0].score - a[0].score || a[1] - b[1]);
      const q = interpolatedPrecision(order.map(([s]) => s.tp), nTruth);
      perThreshold[ti]!.push(q.reduce((a, b) => a + b, 0) / q.length);
    });
  }
  const mean = (xs: number[]) => (xs.length ? xs.reduce((a, b) => a + b, 0) / xs.length : NaN);
  const perClass = new Map(categories.map((c, k) => [c, mean(perThreshold.map((t) => t[k]!))]));
  return { ap: mean(perThreshold.flat()), ap50: mean(perThreshold[0]!), ap75: mean(perThreshold[5]!), perClass };
}
