// Training Mask2Former as its detectron2 recipe does: AdamW with parameter groups (the backbone at a
// learning-rate multiplier; no weight decay on norms, embeddings and position tables), a poly schedule after
// a linear warm-up, full-model gradient-norm clipping, gradient accumulation. Every random draw of a step
// (batch order, augmentation, loss points, drop path) follows from (seed, step), so a checkpoint holding the
// weights, the optimizer state and the step resumes to exactly the run that was never stopped.

import { Tensor } from '../../engine/tensor.ts';
import { nodeFs, writeFileAtomic } from '../../io/fs.ts';
import { saveSafetensors } from '../../io/safetensors.ts';
import { seededRandom, subSeed } from '../../engine/random-cpu.ts';
import { Generator } from '../../kernels/random.ts';
import { GroupNorm, LayerNorm, skipInit } from '../../nn/layers.ts';
import { type Batch, type ResolvedTrainerOptions, type TrainGroup, Trainer, type TrainerOptions, checkpointOptions, openCheckpoint } from '../../train/trainer.ts';
import { type Mask2FormerConfig, mask2formerConfigJson, parseMask2FormerConfig } from './config.ts';
import { seededUniform } from './loss.ts';
import { Mask2FormerForUniversalSegmentation, disposeTensors } from './model.ts';
import { type AugmentOptions, type BatchImage, type SegmentationSample, loadSample, stackPixels } from './data.ts';

export interface TrainOptions extends Omit<TrainerOptions, 'schedule' | 'emaDecay'> {
  /** Learning-rate factor of the backbone's parameters (default 0.1). */
  backboneMultiplier?: number;
  /** Random resize / crop / flip; none when omitted (then all images must share a size or batch be 1). */
  augment?: AugmentOptions;
}

/** detectron2's Mask2Former recipe: batch 2, lr 1e-4, weight decay 0.05, poly schedule, clip 0.01. */
const recipe = { batchSize: 2, lr: 1e-4, weightDecay: 0.05, schedule: 'poly', power: 0.9, clipNorm: 0.01 } as const;

/** Parameters without weight decay: norm layers, query / level embeddings, Swin's position tables. */
const noDecayName = /(^|\.)(queries_features|queries_embedder|level_embed)\.weight$|relative_position_bias_table$|absolute_pos_embed$/;
const backboneName = /^model\.pixel_level_module\.encoder\./;

/** The AdamW groups of a model: backbone or not × decay or not (empty groups left out). */
export function parameterGroups(model: Mask2FormerForUniversalSegmentation, o: { weightDecay: number; backboneMultiplier: number }): TrainGroup[] {
  const normParams = new Set<Tensor>();
  for (const [, m] of model.namedModules()) if (m instanceof LayerNorm || m instanceof GroupNorm) for (const p of m.parameters()) normParams.add(p);
  const groups = new Map<string, { lrFactor: number; weightDecay: number; entries: [string, Tensor][] }>();
  for (const [name, p] of model.namedParameters()) {
    const backbone = backboneName.test(name);
    const decay = !(normParams.has(p) || noDecayName.test(name));
    const key = `${backbone ? 'backbone' : 'head'}${decay ? '' : '.no_decay'}`;
    const g = groups.get(key) ?? { lrFactor: backbone ? o.backboneMultiplier : 1, weightDecay: decay ? o.weightDecay : 0, entries: [] };
    g.entries.push([name, p]);
    groups.set(key, g);
  }
  return [...groups].sort(([a], [b]) => (a < b ? -1 : 1)).map(([name, g]) => ({
    name, lrFactor: g.lrFactor, weightDecay: g.weightDecay, names: g.entries.map(([n]) => n), params: g.entries.map(([, p]) => p),
  }));
}

/**
 * Trains a Mask2Former on in-memory samples with the shared `Trainer`; `saveCheckpoint` /
 * `Mask2FormerTrainer.resume` survive a kill.
 */
export class Mask2FormerTrainer extends Trainer {
  readonly backboneMultiplier: number;
  readonly augment: AugmentOptions | undefined;

  constructor(readonly model: Mask2FormerForUniversalSegmentation, readonly samples: readonly SegmentationSample[], options: TrainOptions) {
    const { backboneMultiplier = 0.1, augment, ...rest } = options;
    if (!(Number.isFinite(backboneMultiplier) && backboneMultiplier >= 0)) throw new Error(`train: backboneMultiplier must be a finite number ≥ 0, got ${JSON.stringify(backboneMultiplier)}`);
    super({
      kind: 'mask2former',
      model,
      size: samples.length,
      groups: (o: ResolvedTrainerOptions) => parameterGroups(model, { weightDecay: o.weightDecay, backboneMultiplier }),
      loss: (b) => this.#loss(b),
      describe: (b) => b.indices.map((k) => samples[k]!.id).join(', '),
      metadata: () => ({ config: JSON.stringify(mask2formerConfigJson(model.config)), backbone_multiplier: String(backboneMultiplier), augment: JSON.stringify(augment ?? null) }),
    }, { ...recipe, ...rest });
    this.backboneMultiplier = backboneMultiplier;
    this.augment = augment;
  }

  /** Loss of one micro-batch: its samples loaded (augmented), drop path and point sampling seeded. */
  async #loss(b: Batch): Promise<Tensor> {
    const model = this.model;
    const images: BatchImage[] = [];
    const augmentRandom = seededRandom(subSeed(b.seed, 1));
    try {
      for (const k of b.indices) images.push(await loadSample(this.samples[k]!, model.config.numLabels, this.augment, augmentRandom));
      model.model.pixelLevelModule.encoder.random = new Generator(subSeed(b.seed, 2));
      const pixels = stackPixels(images);
      try {
        const out = await model.forward(pixels, { maskLabels: images.map((i) => i.masks), classLabels: images.map((i) => i.classes), random: seededUniform(subSeed(b.seed, 3)) });
        const loss = out.loss!;
        disposeTensors(out, new Set([loss]));
        return loss;
      } finally {
        if (pixels !== images[0]?.pixels) pixels.dispose();
      }
    } finally {
      model.model.pixelLevelModule.encoder.random = undefined;
      for (const i of images) disposeTensors(i);
    }
  }

  /**
   * Writes `dir`/checkpoint.safetensors (the model under its state_dict names, the optimizer state, the step,
   * options and log), then config.json and model.safetensors (what fromPretrained and eval read). Each file
   * replaces the old one by a rename.
   */
  override async saveCheckpoint(dir: string): Promise<void> {
    nodeFs(`saving a checkpoint in ${dir}`).mkdirSync(dir, { recursive: true });
    await super.saveCheckpoint(`${dir}/checkpoint.safetensors`);
    writeFileAtomic(`${dir}/config.json`, new TextEncoder().encode(JSON.stringify(mask2formerConfigJson(this.model.config), null, 2)));
    await saveSafetensors(`${dir}/model.safetensors`, this.model.stateDict(), { format: 'pt' });
  }

  /**
   * A trainer restored from `dir`/checkpoint.safetensors: the model (built without random weights), the
   * optimizer state and the step; `overrides` may change options such as `steps`.
   */
  static async resume(dir: string, samples: readonly SegmentationSample[], overrides: Partial<TrainOptions> = {}): Promise<Mask2FormerTrainer> {
    const reader = openCheckpoint(`${dir}/checkpoint.safetensors`);
    try {
      const meta = reader.metadata;
      if (meta.format !== 'freemask-mask2former-train') throw new Error(`resume: ${reader.label} is not a Mask2Former training checkpoint (metadata format ${JSON.stringify(meta.format)})`);
      let config: Mask2FormerConfig, extra: { backboneMultiplier: number; augment?: AugmentOptions };
      try {
        config = parseMask2FormerConfig(JSON.parse(meta.config ?? ''), `${reader.label} metadata config`);
        extra = { backboneMultiplier: Number(meta.backbone_multiplier), augment: JSON.parse(meta.augment ?? 'null') ?? undefined };
      } catch (e) {
        throw new Error(`resume: ${reader.label}: ${(e as Error).message}`);
      }
      const model = skipInit(() => new Mask2FormerForUniversalSegmentation(config));
      const trainer = new Mask2FormerTrainer(model, samples, { ...checkpointOptions(reader), ...extra, ...overrides });
      trainer.restore(reader);
      return trainer;
    } finally {
      reader.close();
    }
  }
}
