// Training Mask2Former as its detectron2 recipe does: AdamW with parameter groups (the backbone at a
// learning-rate multiplier; no weight decay on norms, embeddings and position tables), a poly schedule after
// a linear warm-up, full-model gradient-norm clipping, gradient accumulation. Every random draw of a step
// (batch order, augmentation, loss points, drop path) follows from (seed, step), so a checkpoint holding the
// weights, the optimizer state and the step resumes to exactly the run that was never stopped.

import { backward } from '../../engine/autograd.ts';
import { seededRandom } from '../../engine/random-cpu.ts';
import type { Tensor } from '../../engine/tensor.ts';
import { nodeFs, writeFileAtomic } from '../../io/fs.ts';
import { loadSafetensors, saveSafetensors } from '../../io/safetensors.ts';
import { affine } from '../../kernels/elementwise.ts';
import { Generator } from '../../kernels/random.ts';
import { GroupNorm, LayerNorm, skipInit } from '../../nn/layers.ts';
import { AdamW } from '../../optim/adamw.ts';
import { type Mask2FormerConfig, mask2formerConfigJson, parseMask2FormerConfig } from './config.ts';
import { seededUniform } from './loss.ts';
import { type Mask2FormerOutput, Mask2FormerForUniversalSegmentation, disposeTensors } from './model.ts';
import { type AugmentOptions, type BatchImage, type SegmentationSample, loadSample, stackPixels } from './data.ts';

export interface TrainOptions {
  /** Optimizer steps of the whole run (the poly schedule reaches 0 there). */
  steps: number;
  /** Images per micro-batch (default 2). */
  batchSize?: number;
  /** Micro-batches whose gradients are summed (averaged) into one step (default 1). */
  accumulate?: number;
  /** Base learning rate (default 1e-4). */
  lr?: number;
  weightDecay?: number;
  /** Learning-rate factor of the backbone's parameters (default 0.1). */
  backboneMultiplier?: number;
  /** Linear warm-up steps from warmupFactor·lr to lr (default 0). */
  warmupSteps?: number;
  warmupFactor?: number;
  /** Exponent of the poly decay (default 0.9). */
  power?: number;
  /** Full-model gradient-norm clip (default 0.01, as detectron2's Mask2Former configs); 0 disables. */
  clipNorm?: number;
  /** Seed of every random draw (default 0). */
  seed?: number;
  /** Random resize / crop / flip; none when omitted (then all images must share a size or batch be 1). */
  augment?: AugmentOptions;
}

type ResolvedOptions = Required<Omit<TrainOptions, 'augment'>> & { augment?: AugmentOptions };

const defaults = { batchSize: 2, accumulate: 1, lr: 1e-4, weightDecay: 0.05, backboneMultiplier: 0.1, warmupSteps: 0, warmupFactor: 1, power: 0.9, clipNorm: 0.01, seed: 0 };

function resolve(o: TrainOptions): ResolvedOptions {
  const r = { ...defaults, ...o };
  const posInt = (k: keyof typeof r) => {
    if (!Number.isInteger(r[k]) || (r[k] as number) < 1) throw new Error(`train: ${k} must be a positive integer, got ${JSON.stringify(r[k])}`);
  };
  posInt('steps');
  posInt('batchSize');
  posInt('accumulate');
  for (const k of ['lr', 'weightDecay', 'backboneMultiplier', 'warmupFactor', 'power', 'clipNorm'] as const) {
    if (!(Number.isFinite(r[k]) && r[k] >= 0)) throw new Error(`train: ${k} must be a finite number ≥ 0, got ${JSON.stringify(r[k])}`);
  }
  if (!Number.isInteger(r.warmupSteps) || r.warmupSteps < 0) throw new Error(`train: warmupSteps must be an integer ≥ 0, got ${r.warmupSteps}`);
  if (!Number.isSafeInteger(r.seed) || r.seed < 0) throw new Error(`train: seed must be an integer ≥ 0, got ${r.seed}`);
  return r;
}

/** Learning-rate factor at step t (0-based): linear warm-up, then poly decay (detectron2's WarmupPolyLR). */
export function scheduleFactor(t: number, { steps, warmupSteps, warmupFactor, power }: Pick<ResolvedOptions, 'steps' | 'warmupSteps' | 'warmupFactor' | 'power'>): number {
  const poly = Math.pow(1 - Math.min(t, steps) / steps, power);
  if (t >= warmupSteps) return poly;
  const a = t / warmupSteps;
  return poly * (warmupFactor * (1 - a) + a);
}

/** Parameters without weight decay: norm layers, query / level embeddings, Swin's position tables. */
const noDecayName = /(^|\.)(queries_features|queries_embedder|level_embed)\.weight$|relative_position_bias_table$|absolute_pos_embed$/;
const backboneName = /^model\.pixel_level_module\.encoder\./;

export interface ParamGroup {
  name: string;
  lrFactor: number;
  weightDecay: number;
  names: string[];
  params: Tensor[];
}

/** The AdamW groups of a model: backbone or not × decay or not (empty groups left out). */
export function parameterGroups(model: Mask2FormerForUniversalSegmentation, o: Pick<ResolvedOptions, 'weightDecay' | 'backboneMultiplier'>): ParamGroup[] {
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

/** A 32-bit seed of (seed, step, micro-batch, purpose). */
function subSeed(seed: number, ...parts: number[]): number {
  let h = (seed ^ 0x9e3779b9) >>> 0;
  for (const p of parts) h = (Math.imul(h ^ p, 0x85ebca6b) + 0x68e31da4) >>> 0;
  return (h ^ (h >>> 15)) >>> 0;
}

/** A permutation of 0..n−1 from a seed (Fisher–Yates). */
function permutation(n: number, seed: number): number[] {
  const rand = seededRandom(seed);
  const p = [...Array(n).keys()];
  for (let i = n - 1; i > 0; i--) {
    const j = Math.floor(rand() * (i + 1));
    [p[i], p[j]] = [p[j]!, p[i]!];
  }
  return p;
}

export interface StepResult {
  step: number;
  loss: number;
  gradNorm: number;
  lr: number;
}

const checkpointFormat = 'freemask-mask2former-train-2';

/** Trains a Mask2Former on in-memory samples; `saveCheckpoint` / `Mask2FormerTrainer.resume` survive a kill. */
export class Mask2FormerTrainer {
  readonly options: ResolvedOptions;
  readonly groups: ParamGroup[];
  /** One AdamW over every group (fused: one dispatch per group, clipping in the same pass). */
  readonly optimizer: AdamW;
  /** Optimizer steps done. */
  step = 0;

  constructor(readonly model: Mask2FormerForUniversalSegmentation, readonly samples: readonly SegmentationSample[], options: TrainOptions) {
    if (samples.length === 0) throw new Error('train: no training samples');
    this.options = resolve(options);
    this.groups = parameterGroups(model, this.options);
    const { lr, weightDecay } = this.options;
    this.optimizer = new AdamW(this.groups.map((g) => ({ params: g.params, lr: lr * g.lrFactor, weightDecay: g.weightDecay })), { lr, weightDecay });
  }

  /** The learning rate of the head (non-backbone) parameters at the next step. */
  get lr(): number {
    return this.options.lr * scheduleFactor(this.step, this.options);
  }

  /** Samples of micro-batch `micro` of step `step`: consecutive slots of per-epoch seeded shuffles. */
  batchIndices(step: number, micro: number): number[] {
    const { batchSize, accumulate, seed } = this.options;
    const n = this.samples.length;
    return Array.from({ length: batchSize }, (_, i) => {
      const slot = (step * accumulate + micro) * batchSize + i;
      return permutation(n, subSeed(seed, 0x45504f43, Math.floor(slot / n)))[slot % n]!;
    });
  }

  /** One optimizer step (accumulating micro-batches); throws, naming the step, on a non-finite loss or gradient. */
  async trainStep(): Promise<StepResult> {
    const { accumulate, seed, augment, clipNorm } = this.options;
    const model = this.model.train();
    const step = this.step;
    let total = 0;
    try {
      for (let micro = 0; micro < accumulate; micro++) {
        const images: BatchImage[] = [];
        const augmentRandom = seededRandom(subSeed(seed, step, micro, 1));
        try {
          for (const k of this.batchIndices(step, micro)) images.push(await loadSample(this.samples[k]!, model.config.numLabels, augment, augmentRandom));
          model.model.pixelLevelModule.encoder.random = new Generator(subSeed(seed, step, micro, 2));
          const pixels = stackPixels(images);
          let out: Mask2FormerOutput | undefined;
          try {
            out = await model.forward(pixels, { maskLabels: images.map((b) => b.masks), classLabels: images.map((b) => b.classes), random: seededUniform(subSeed(seed, step, micro, 3)) }).catch((e: Error) => {
              // e.g. non-finite predictions reaching the matching: say which step, and that nothing was saved
              throw new Error(`training stopped at step ${step + 1}: ${e.message}; the last checkpoint is left as it was`);
            });
            const loss = await out.loss!.item();
            if (!Number.isFinite(loss)) throw new Error(`training stopped at step ${step + 1}: the loss is ${loss} (micro-batch ${micro}, images ${this.batchIndices(step, micro).map((k) => this.samples[k]!.id).join(', ')}); the last checkpoint is left as it was`);
            total += loss / accumulate;
            const scaled = accumulate > 1 ? affine(out.loss!, 1 / accumulate) : out.loss!;
            backward(scaled);
            if (scaled !== out.loss) scaled.dispose();
          } finally {
            if (pixels !== images[0]?.pixels) pixels.dispose();
            disposeTensors(out);
          }
        } finally {
          model.model.pixelLevelModule.encoder.random = undefined;
          for (const b of images) disposeTensors(b);
        }
      }
      const factor = scheduleFactor(step, this.options);
      this.groups.forEach((g, k) => (this.optimizer.groups[k]!.options.lr = this.options.lr * g.lrFactor * factor));
      const norm = this.optimizer.step({ maxGradNorm: clipNorm > 0 ? clipNorm : Infinity })!;
      const gradNorm = await norm.item();
      norm.dispose();
      // a non-finite norm left the weights and optimizer state as they were
      if (!Number.isFinite(gradNorm)) throw new Error(`training stopped at step ${step + 1}: the gradient norm is ${gradNorm}; the last checkpoint is left as it was`);
      this.step++;
      return { step: this.step, loss: total, gradNorm, lr: this.options.lr * factor };
    } finally {
      model.zeroGrad();
    }
  }

  /** Trains until `options.steps`; `onStep` sees each step, and may save checkpoints. */
  async train(onStep?: (r: StepResult) => void | Promise<void>): Promise<void> {
    while (this.step < this.options.steps) {
      const r = await this.trainStep();
      await onStep?.(r);
    }
  }

  /**
   * Writes `dir`/checkpoint.safetensors (the model under its state_dict names, each optimizer group's state
   * under `optimizer.<group>.`, the step, options and seed in the metadata), then config.json and
   * model.safetensors (what fromPretrained and eval read). Each file replaces the old one by a rename.
   */
  async saveCheckpoint(dir: string): Promise<void> {
    const fs = nodeFs(`saving a checkpoint in ${dir}`);
    fs.mkdirSync(dir, { recursive: true });
    const modelState = this.model.stateDict();
    const tensors: Record<string, Tensor> = { ...modelState };
    const sd = this.optimizer.stateDict();
    for (const [k, t] of Object.entries(sd.tensors)) tensors[`optimizer.${k}`] = t;
    const metadata = {
      format: checkpointFormat,
      step: String(this.step),
      options: JSON.stringify(this.options),
      optimizer: JSON.stringify(sd.metadata),
      groups: JSON.stringify(this.groups.map((g) => ({ name: g.name, names: g.names }))),
      config: JSON.stringify(mask2formerConfigJson(this.model.config)),
    };
    await saveSafetensors(`${dir}/checkpoint.safetensors`, tensors, metadata);
    writeFileAtomic(`${dir}/config.json`, new TextEncoder().encode(JSON.stringify(mask2formerConfigJson(this.model.config), null, 2)));
    await saveSafetensors(`${dir}/model.safetensors`, modelState, { format: 'pt' });
  }

  /**
   * A trainer restored from `dir`/checkpoint.safetensors: the model (built without random weights), the
   * optimizer state and the step; `overrides` may change options such as `steps`.
   */
  static async resume(dir: string, samples: readonly SegmentationSample[], overrides: Partial<TrainOptions> = {}): Promise<Mask2FormerTrainer> {
    const path = `${dir}/checkpoint.safetensors`;
    if (!nodeFs(`resuming from ${dir}`).existsSync(path)) throw new Error(`resume: ${path} does not exist (no checkpoint saved in ${dir})`);
    const reader = loadSafetensors(path);
    try {
      const meta = reader.metadata;
      if (meta.format !== checkpointFormat) throw new Error(`resume: ${path} is not a training checkpoint (metadata format ${JSON.stringify(meta.format)}, expected ${checkpointFormat})`);
      const parse = (key: string): unknown => {
        try {
          return JSON.parse(meta[key] ?? '');
        } catch {
          throw new Error(`resume: ${path}: metadata '${key}' is missing or not JSON`);
        }
      };
      const config: Mask2FormerConfig = parseMask2FormerConfig(parse('config') as Record<string, unknown>, `${path} metadata config`);
      const model = skipInit(() => new Mask2FormerForUniversalSegmentation(config));
      model.loadStateDict(reader, { ignore: (name) => name.startsWith('optimizer.') });
      const trainer = new Mask2FormerTrainer(model, samples, { ...(parse('options') as TrainOptions), ...overrides });
      const groups = parse('groups');
      if (JSON.stringify(groups) !== JSON.stringify(trainer.groups.map((g) => ({ name: g.name, names: g.names })))) {
        throw new Error(`resume: ${path}: the checkpoint's parameter groups list other parameters than this model's`);
      }
      const tensors: Record<string, Tensor> = {};
      try {
        for (const k of reader.keys()) if (k.startsWith('optimizer.')) tensors[k.slice('optimizer.'.length)] = reader.get(k);
        trainer.optimizer.loadStateDict({ tensors, metadata: parse('optimizer') as Record<string, string> });
      } finally {
        for (const t of Object.values(tensors)) t.dispose();
      }
      // the schedule sets the learning rates at every step; weight decay follows the trainer's options
      trainer.groups.forEach((g, k) => (trainer.optimizer.groups[k]!.options.weightDecay = g.weightDecay));
      trainer.step = Number(meta.step);
      if (!Number.isSafeInteger(trainer.step) || trainer.step < 0) throw new Error(`resume: ${path}: invalid step ${JSON.stringify(meta.step)}`);
      return trainer;
    } finally {
      reader.close();
    }
  }
}
