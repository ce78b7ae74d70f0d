// Evaluating a Mask2Former on labelled samples: semantic maps (post-processing) into a confusion matrix
// (per-class IoU, mIoU) and instance segments against the instance maps (COCO-style mask AP).

import { noGrad } from '../../engine/autograd.ts';
import { Tensor } from '../../engine/tensor.ts';
import { ConfusionMatrix } from '../../metrics/miou.ts';
import { type MaskApResult, type MaskInstance, maskAp } from '../../metrics/maskAp.ts';
import { type SegmentationSample, pixelValues } from './data.ts';
import type { VocSample } from '../../data/voc.ts';
import { type Mask2FormerForUniversalSegmentation, disposeTensors } from './model.ts';
import { instanceSegmentation, semanticSegmentation } from './postprocess.ts';

export interface SegmenterEvaluation {
  /** IoU per class id (NaN: absent from truth and prediction). */
  iou: number[];
  miou: number;
  pixelAccuracy: number;
  /** Mask AP of the instances (classes ≥ 1), when the samples have instance maps. */
  maskAp?: MaskApResult;
  images: number;
  /** The predicted class map of each sample, in order (so later measures need not run the model again). */
  predictions: Uint8Array[];
}

/** The truth instances of a sample: each instance id of its instance map, classed by the class map's majority. */
export function truthInstances(s: VocSample): MaskInstance[] {
  if (!s.objects) return [];
  const byId = new Map<number, { mask: Uint8Array; votes: Map<number, number> }>();
  s.objects.forEach((o, p) => {
    if (o === 0 || o === 255) return;
    let e = byId.get(o);
    if (!e) byId.set(o, (e = { mask: new Uint8Array(s.objects!.length), votes: new Map() }));
    e.mask[p] = 1;
    const c = s.semantic[p]!;
    if (c !== 255) e.votes.set(c, (e.votes.get(c) ?? 0) + 1);
  });
  return [...byId.values()].filter((e) => e.votes.size).map((e) => ({
    imageId: s.id, mask: e.mask, categoryId: [...e.votes].sort((a, b) => b[1] - a[1] || a[0] - b[0])[0]![0],
  }));
}

/** mIoU over every sample (one image at a time, at its own size) and, with instance maps, mask AP. */
export async function evaluateSegmenter(model: Mask2FormerForUniversalSegmentation, samples: readonly SegmentationSample[], { instances = true } = {}): Promise<SegmenterEvaluation> {
  const numLabels = model.config.numLabels;
  const confusion = new ConfusionMatrix(numLabels);
  const preds: MaskInstance[] = [];
  const truths: MaskInstance[] = [];
  const predictions: Uint8Array[] = [];
  const wasTraining = model.training;
  model.eval();
  try {
    for (const s of samples) {
      const size: [number, number] = [s.height, s.width];
      const pixels = Tensor.fromArray(pixelValues(s), [1, 3, s.height, s.width]);
      const out = noGrad(() => model.forward(pixels));
      pixels.dispose();
      const logits = { classQueriesLogits: out.classQueriesLogits, masksQueriesLogits: out.masksQueriesLogits };
      const labels = semanticSegmentation(logits, size);
      predictions.push(Uint8Array.from(await labels.toArray()));
      confusion.add(predictions.at(-1)!, s.semantic, `image '${s.id}'`);
      labels.dispose();
      if (instances && s.objects) {
        truths.push(...truthInstances(s));
        const [inst] = await instanceSegmentation(logits, { threshold: 0, size });
        for (const seg of inst!.segments) {
          if (seg.labelId === 0) continue; // background is stuff, not an instance class
          preds.push({ imageId: s.id, categoryId: seg.labelId, score: seg.score, mask: inst!.segmentation.map((v) => (v === seg.id ? 1 : 0)) });
        }
      }
      disposeTensors(out);
    }
  } finally {
    model.train(wasTraining);
  }
  const r = confusion.result();
  return { ...r, maskAp: truths.length ? maskAp(preds, truths) : undefined, images: samples.length, predictions };
}
