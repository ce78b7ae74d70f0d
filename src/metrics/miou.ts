// Semantic segmentation: confusion matrix over classes, per-class IoU and their mean.

/** A confusion matrix, rows = truth, columns = prediction, accumulated over images. */
export class ConfusionMatrix {
  readonly counts: Float64Array;
  /** truth pixels predicted with a label outside 0..numClasses−1 (e.g. 255): misses for their class */
  readonly missed: Float64Array;
  constructor(readonly numClasses: number, readonly ignoreLabel = 255) {
    this.counts = new Float64Array(numClasses * numClasses);
    this.missed = new Float64Array(numClasses);
  }

  /** Adds one image; pixels whose truth is the ignore label (or out of range) are skipped. */
  add(pred: ArrayLike<number>, truth: ArrayLike<number>, what = 'image'): void {
    if (pred.length !== truth.length) throw new Error(`${what}: prediction has ${pred.length} pixels, truth ${truth.length}`);
    const n = this.numClasses;
    for (let i = 0; i < truth.length; i++) {
      const t = truth[i]!;
      if (t === this.ignoreLabel || t >= n) continue;
      const p = pred[i]!;
      if (p < n) this.counts[t * n + p]++;
      else this.missed[t]++;
    }
  }

  /** IoU per class (NaN for a class absent from both truth and prediction) and the mean over the others. */
  result(): { iou: number[]; miou: number; pixelAccuracy: number } {
    const n = this.numClasses;
    const iou: number[] = [];
    let correct = 0, total = 0;
    for (let c = 0; c < n; c++) {
      let row = this.missed[c]!, col = 0;
      for (let k = 0; k < n; k++) {
        row += this.counts[c * n + k]!;
        col += this.counts[k * n + c]!;
      }
      const tp = this.counts[c * n + c]!;
      const union = row + col - tp;
      iou.push(union > 0 ? tp / union : NaN);
      correct += tp;
      total += row;
    }
    const present = iou.filter((v) => !Number.isNaN(v));
    return { iou, miou: present.length ? present.reduce((a, b) => a + b, 0) / present.length : NaN, pixelAccuracy: total ? correct / total : NaN };
  }
}
