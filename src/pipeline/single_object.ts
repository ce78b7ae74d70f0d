// Stage 1 of Free-Mask, end to end: Stable Diffusion samples "a photo of a {class}" while the UNet's
// attention is captured, and the class tokens' maps become the object mask (attention_mask.ts).

import { Tensor } from '../engine/tensor.ts';
import { AttentionCapture } from '../models/attention_capture.ts';
import type { StableDiffusionPipeline } from '../models/stable_diffusion.ts';
import { type AttentionMaskConfig, type AttentionRecord, DATASET_DIFFUSION_PRESET, attentionMask, recordsFromCapture } from './attention_mask.ts';

export interface SingleObjectOptions {
  seed?: number;
  numInferenceSteps?: number;
  guidanceScale?: number;
  height?: number;
  width?: number;
  /** How attention becomes a mask (default: the Dataset Diffusion preset). */
  mask?: AttentionMaskConfig;
  /** The prompt (default "a photo of a {className}"); it must contain className, whose tokens give the mask. */
  prompt?: string;
  /** Label written for the object (default 1). */
  classId?: number;
  /**
   * Return the attention records the heat map was computed from (`records` of the result: every captured
   * layer of the prompt's batch element, averaged over the steps); the caller then disposes their `probs`.
   * Default false: they are freed here.
   */
  keepRecords?: boolean;
}

export interface SingleObjectResult {
  prompt: string;
  /** [1, 3, H, W] in [0, 1]. */
  image: Tensor;
  /** The class heat map [H·W] at image size, before thresholding. */
  heat: Float32Array;
  /** [H·W]: 0 background, `classId`, 255 uncertain. */
  mask: Uint8Array;
  /** With `keepRecords`: the attention records behind `heat` (owned by the caller); otherwise absent. */
  records?: AttentionRecord[];
}

/** One image of `className` with its mask from the attention of the sampling run that made it. */
export async function generateSingleObject(pipe: StableDiffusionPipeline, className: string, o: SingleObjectOptions = {}): Promise<SingleObjectResult> {
  const prompt = o.prompt ?? `a photo of a ${className}`;
  const r = await generateObjects(pipe, [{ word: className, classId: o.classId ?? 1 }], { ...o, prompt });
  return { prompt, image: r.image, heat: r.heat[0]!, mask: r.mask, ...(r.records && { records: r.records }) };
}

/**
 * One image of several classes drawn by the diffusion model itself from one `prompt` that names each (`word`), with
 * their mask from the attention of that run: a pixel takes the class whose heat is highest among those confident
 * there (attentionMask's rule). Each word's tokens give its class's map; an error names a word the prompt lacks.
 */
export async function generateObjects(pipe: StableDiffusionPipeline, objects: readonly { word: string; classId: number }[], o: SingleObjectOptions & { prompt: string }): Promise<Omit<SingleObjectResult, 'heat'> & { heat: Float32Array[] }> {
  const { numInferenceSteps = 50, guidanceScale = 7.5, mask = DATASET_DIFFUSION_PRESET, prompt } = o;
  const classes = objects.map(({ word, classId }) => {
    const tokens = pipe.tokenizer.tokenSpans(prompt, word).flat();
    if (tokens.length === 0) throw new Error(`generateObjects: the prompt "${prompt}" does not contain "${word}"`);
    return { id: classId, tokens };
  });
  const capture = new AttentionCapture({ cross: true, self: !!mask.selfAttention, mode: 'per-layer' });
  const promptEmbeds = pipe.encodePrompt([prompt]);
  let latents: Tensor | undefined;
  let records: AttentionRecord[] = [];
  let handedOver = false;
  try {
    latents = pipe.sample({ promptEmbeds, numInferenceSteps, guidanceScale, seed: o.seed, height: o.height, width: o.width, unetOptions: { capture } });
    const image = pipe.decodeLatents(latents);
    // with guidance the UNet saw [unconditional; conditional]: the prompt's maps are batch element 1
    records = recordsFromCapture(capture, guidanceScale > 1 ? 1 : 0);
    const [H, W] = image.shape.slice(2) as [number, number];
    const result = await attentionMask(records, classes, [H, W], mask).catch((e: Error) => {
      image.dispose();
      throw e;
    });
    handedOver = !!o.keepRecords;
    return { prompt, image, heat: result.heat, mask: result.mask, ...(handedOver ? { records } : {}) };
  } finally {
    if (!handedOver) for (const r of records) r.probs.dispose();
    capture.dispose();
    promptEmbeds.dispose();
    latents?.dispose();
  }
}
