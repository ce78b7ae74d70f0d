// Boundary F-score (as in DAVIS / Csurka et al.): how well the outline of a predicted mask matches the truth's,
// within a distance tolerance.

/**
 * The boundary of a binary mask: inside pixels with a 4-neighbour outside the mask. The image border is not
 * a boundary (an object cut by the frame has no outline there).
 */
export function maskBoundary(mask: ArrayLike<number>, width: number, height: number): Uint8Array {
  const b = new Uint8Array(width * height);
  for (let y = 0; y < height; y++) {
    for (let x = 0; x < width; x++) {
      const p = y * width + x;
      if (!mask[p]) continue;
      if ((x > 0 && !mask[p - 1]) || (x + 1 < width && !mask[p + 1]) || (y > 0 && !mask[p - width]) || (y + 1 < height && !mask[p + width])) b[p] = 1;
    }
  }
  return b;
}

/** How many pixels of boundary `a` lie within Euclidean distance `tol` of a pixel of boundary `b`. */
function matched(a: Uint8Array, b: Uint8Array, width: number, height: number, tol: number): number {
  const r = Math.floor(tol);
  let n = 0;
  for (let y = 0; y < height; y++) {
    for (let x = 0; x < width; x++) {
      if (!a[y * width + x]) continue;
      search: for (let dy = -r; dy <= r; dy++) {
        for (let dx = -r; dx <= r; dx++) {
          const xx = x + dx, yy = y + dy;
          if (dx * dx + dy * dy <= tol * tol && xx >= 0 && yy >= 0 && xx < width && yy < height && b[yy * width + xx]) {
            n++;
            break search;
          }
        }
      }
    }
  }
  return n;
}

/** The default tolerance: 0.75 % of the image diagonal (DAVIS), at least one pixel. */
export const boundaryTolerance = (width: number, height: number) => Math.max(1, Math.round(0.0075 * Math.hypot(width, height)));

/**
 * Boundary precision, recall and F of a predicted binary mask against the truth: precision is the share of
 * predicted boundary pixels within `tol` of a true boundary pixel, recall the converse. Both empty: F = 1.
 */
export function boundaryF(pred: ArrayLike<number>, truth: ArrayLike<number>, width: number, height: number, tol = boundaryTolerance(width, height)): { precision: number; recall: number; f: number } {
  const bp = maskBoundary(pred, width, height), bt = maskBoundary(truth, width, height);
  const np = bp.reduce((a, b) => a + b, 0), nt = bt.reduce((a, b) => a + b, 0);
  if (np === 0 && nt === 0) return { precision: 1, recall: 1, f: 1 };
  const precision = np ? matched(bp, bt, width, height, tol) / np : 0;
  const recall = nt ? matched(bt, bp, width, height, tol) / nt : 0;
  return { precision, recall, f: precision + recall > 0 ? (2 * precision * recall) / (precision + recall) : 0 };
}
