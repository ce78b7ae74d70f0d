// Turning Mask2Former predictions into segmentations, as transformers' Mask2FormerImageProcessor does:
// semantic = argmax over classes of Σ_q softmax(class)[q, c] · sigmoid(mask)[q]; instances = the top
// (query, class) pairs by class probability × mean foreground mask probability. Differences from the
// processor: mask logits are resized straight to the requested size (it goes through 384×384 first), and
// semantic maps resize the mask logits before combining them with the class probabilities (it resizes the
// combined per-class scores, a map too large for one buffer with many classes).

import { noGrad } from '../../engine/autograd.ts';
import { Tensor, tidy } from '../../engine/tensor.ts';
import { cast, sigmoid } from '../../kernels/elementwise.ts';
import { gemm } from '../../kernels/matmul.ts';
import { argmax } from '../../kernels/reduce.ts';
import { interpolate } from '../../kernels/resample.ts';
import { concat, reshape, slice } from '../../kernels/shape.ts';
import { softmax } from '../../kernels/softmax.ts';

export interface SegmentationLogits {
  /** [B, Q, classes + 1] (no-object last). */
  classQueriesLogits: Tensor;
  /** [B, Q, h, w]. */
  masksQueriesLogits: Tensor;
}

function resized(masks: Tensor, size: [number, number] | undefined): Tensor {
  return size ? interpolate(masks, { size, mode: 'bilinear', alignCorners: false }) : masks;
}

/**
 * Class ids i32 [B, H, W] (mask resolution, or `size`). Image by image, and in blocks of pixels whose
 * [classes, pixels] f32 scores take at most `blockBytes`, so that no [classes, H·W] map has to fit one buffer.
 */
export function semanticSegmentation(logits: SegmentationLogits, size?: [number, number], blockBytes = 64 * 2 ** 20): Tensor {
  return noGrad(() => tidy(() => {
    const [B, Q, K1] = logits.classQueriesLogits.shape as [number, number, number];
    const classProbs = slice(softmax(logits.classQueriesLogits, -1), 2, 0, K1 - 1);
    const block = Math.max(1, Math.floor(blockBytes / 4 / (K1 - 1)));
    const images = Array.from({ length: B }, (_, b) => tidy(() => {
      const masks = resized(slice(logits.masksQueriesLogits, 0, b, b + 1), size);
      const maskProbs = reshape(sigmoid(masks), [Q, -1]);
      const probs = reshape(slice(classProbs, 0, b, b + 1), [Q, K1 - 1]);
      const HW = maskProbs.shape[1]!;
      const labels: Tensor[] = [];
      for (let start = 0; start < HW; start += block) {
        const scores = gemm(probs, slice(maskProbs, 1, start, start + block), { transA: true });
        // class ids are small integers, exact in f32 (concat works on f32)
        labels.push(cast(argmax(scores, 0), 'f32'));
      }
      return concat(labels, 0);
    }));
    const [H, W] = size ?? (logits.masksQueriesLogits.shape.slice(2) as [number, number]);
    return cast(reshape(concat(images, 0), [B, H, W]), 'i32');
  }));
}

export interface InstanceSegment {
  /** Value of this segment's pixels in `segmentation`. */
  id: number;
  labelId: number;
  score: number;
}

export interface InstanceSegmentation {
  /** Segment id per pixel (row-major H×W), −1 where no segment. */
  segmentation: Int32Array;
  height: number;
  width: number;
  segments: InstanceSegment[];
}

export interface InstanceOptions {
  /** Keep segments scoring at least this (class probability × mean mask probability). */
  threshold?: number;
  size?: [number, number];
}

/**
 * Instance segmentation per image: the Q best (query, class) pairs by class probability, each query's mask
 * = logits > 0, score = class probability × mean sigmoid over the mask; segments at or above `threshold`
 * are painted in descending score order, a pixel keeping the best segment that covers it.
 */
export async function instanceSegmentation(logits: SegmentationLogits, { threshold = 0.5, size }: InstanceOptions = {}): Promise<InstanceSegmentation[]> {
  const [B, Q, K1] = logits.classQueriesLogits.shape as [number, number, number];
  const K = K1 - 1;
  const [probsT, masksT] = noGrad(() => tidy(() => [softmax(logits.classQueriesLogits, -1), resized(logits.masksQueriesLogits, size)]));
  const probs = await probsT.toArray();
  const masks = await masksT.toArray();
  const [H, W] = masksT.shape.slice(2) as [number, number];
  probsT.dispose();
  if (masksT !== logits.masksQueriesLogits) masksT.dispose();
  const out: InstanceSegmentation[] = [];
  const HW = H * W;
  for (let b = 0; b < B; b++) {
    const pairs: [number, number, number][] = [];
    for (let q = 0; q < Q; q++) for (let c = 0; c < K; c++) pairs.push([probs[(b * Q + q) * K1 + c]!, q, c]);
    pairs.sort((x, y) => y[0] - x[0]);
    const scored = pairs.slice(0, Q).map(([p, q, c]) => {
      const m = masks.subarray((b * Q + q) * HW, (b * Q + q + 1) * HW);
      let fg = 0;
      let sig = 0;
      for (const v of m) if (v > 0) {
        fg++;
        sig += 1 / (1 + Math.exp(-v));
      }
      return { q, labelId: c, score: p * (sig / (fg + 1e-6)) };
    }).filter((s) => s.score >= threshold).sort((x, y) => y.score - x.score);
    const segmentation = new Int32Array(HW).fill(-1);
    const segments: InstanceSegment[] = [];
    for (const s of scored) {
      const m = masks.subarray((b * Q + s.q) * HW, (b * Q + s.q + 1) * HW);
      const id = segments.length;
      let painted = 0;
      for (let k = 0; k < HW; k++) if (m[k]! > 0 && segmentation[k] === -1) {
        segmentation[k] = id;
        painted++;
      }
      if (painted) segments.push({ id, labelId: s.labelId, score: s.score });
    }
    out.push({ segmentation, height: H, width: W, segments });
  }
  return out;
}
