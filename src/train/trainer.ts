// One trainer for every model freemask trains (segmenters, the diffusion zoo, FOPA, harmonizers, instance
// heads): a task supplies the model and the loss of a micro-batch; the trainer does the rest the same way
// for all. AdamW over parameter groups (fused: one dispatch per group), a learning-rate schedule with
// warm-up, global-norm gradient clipping in the update, gradient accumulation, an optional EMA of the
// weights, a loss log, and checkpoints that resume bit-exactly: every random draw of a step (sample order,
// augmentation, noise, dropout) follows from (seed, step, micro-batch), and the checkpoint holds the weights,
// the optimizer state, the EMA and the log. A non-finite loss or gradient stops the run before anything is
// written, naming the step and the samples.

import { backward } from '../engine/autograd.ts';
import { seededRandom, spreadSeed, subSeed } from '../engine/random-cpu.ts';
import { Tensor, keep } from '../engine/tensor.ts';
import { nodeFs } from '../io/fs.ts';
import { type SafetensorsReader, loadSafetensors, saveSafetensors } from '../io/safetensors.ts';
import { affine } from '../kernels/elementwise.ts';
import type { Module } from '../nn/module.ts';
import { AdamW } from '../optim/adamw.ts';
import { ExponentialMovingAverage } from './ema.ts';

export interface TrainerOptions {
  /** Optimizer steps of the whole run (the schedule ends there). */
  steps: number;
  /** Samples per micro-batch (default 8). */
  batchSize?: number;
  /** Micro-batches whose gradients are averaged into one step (default 1). */
  accumulate?: number;
  /** Base learning rate (default 1e-4). */
  lr?: number;
  /** AdamW's decoupled weight decay of groups that decay (default 0.01). */
  weightDecay?: number;
  betas?: [number, number];
  /** After the warm-up: 'constant' (default), 'poly' (detectron2's WarmupPolyLR) or 'cosine' (to 0 at `steps`). */
  schedule?: 'constant' | 'poly' | 'cosine';
  /** Exponent of the poly decay (default 0.9). */
  power?: number;
  /** Linear warm-up steps from warmupFactor·lr to lr (default 0). */
  warmupSteps?: number;
  warmupFactor?: number;
  /** Global gradient-norm clip (torch clip_grad_norm_); 0 disables (default 1). */
  clipNorm?: number;
  /** Decay of an exponential moving average of the weights (diffusers' EMAModel); 0: none (default). */
  emaDecay?: number;
  /** Seed of every random draw (default 0). */
  seed?: number;
}

export type ResolvedTrainerOptions = Required<TrainerOptions>;

export const trainerDefaults: Omit<ResolvedTrainerOptions, 'steps'> = {
  batchSize: 8, accumulate: 1, lr: 1e-4, weightDecay: 0.01, betas: [0.9, 0.999], schedule: 'constant', power: 0.9,
  warmupSteps: 0, warmupFactor: 1, clipNorm: 1, emaDecay: 0, seed: 0,
};

export function resolveTrainerOptions(o: TrainerOptions, defaults: Partial<TrainerOptions> = {}): ResolvedTrainerOptions {
  const r = { ...trainerDefaults, ...defaults, ...o } as ResolvedTrainerOptions;
  const posInt = (k: 'steps' | 'batchSize' | 'accumulate') => {
    if (!Number.isInteger(r[k]) || r[k] < 1) throw new Error(`train: ${k} must be a positive integer, got ${JSON.stringify(r[k])}`);
  };
  posInt('steps');
  posInt('batchSize');
  posInt('accumulate');
  for (const k of ['lr', 'weightDecay', 'warmupFactor', 'power', 'clipNorm', 'emaDecay'] as const) {
    if (!(Number.isFinite(r[k]) && r[k] >= 0)) throw new Error(`train: ${k} must be a finite number ≥ 0, got ${JSON.stringify(r[k])}`);
  }
  if (r.emaDecay >= 1) throw new Error(`train: emaDecay must be below 1, got ${r.emaDecay}`);
  if (!['constant', 'poly', 'cosine'].includes(r.schedule)) throw new Error(`train: schedule must be constant, poly or cosine, got ${JSON.stringify(r.schedule)}`);
  if (!Array.isArray(r.betas) || r.betas.length !== 2 || !r.betas.every((b) => b >= 0 && b < 1)) throw new Error(`train: betas must be two numbers in [0, 1), got ${JSON.stringify(r.betas)}`);
  if (!Number.isInteger(r.warmupSteps) || r.warmupSteps < 0) throw new Error(`train: warmupSteps must be an integer ≥ 0, got ${r.warmupSteps}`);
  if (!Number.isSafeInteger(r.seed) || r.seed < 0) throw new Error(`train: seed must be an integer ≥ 0, got ${r.seed}`);
  return r;
}

/** Learning-rate factor at step t (0-based): linear warm-up, then the schedule. */
export function scheduleFactor(t: number, o: Pick<ResolvedTrainerOptions, 'steps' | 'warmupSteps' | 'warmupFactor' | 'power' | 'schedule'>): number {
  const progress = Math.min(t, o.steps) / o.steps;
  const after = o.schedule === 'poly' ? Math.pow(1 - progress, o.power) : o.schedule === 'cosine' ? 0.5 * (1 + Math.cos(Math.PI * progress)) : 1;
  if (t >= o.warmupSteps) return after;
  const a = t / o.warmupSteps;
  return after * (o.warmupFactor * (1 - a) + a);
}

/** A permutation of 0..n−1 from a seed (Fisher–Yates). */
export function permutation(n: number, seed: number): number[] {
  const rand = seededRandom(seed);
  const p = [...Array(n).keys()];
  for (let i = n - 1; i > 0; i--) {
    const j = Math.floor(rand() * (i + 1));
    [p[i], p[j]] = [p[j]!, p[i]!];
  }
  return p;
}

/** One micro-batch: the samples and a seed for every random draw the loss makes. */
export interface Batch {
  indices: number[];
  step: number;
  micro: number;
  seed: number;
}

/** A parameter group: its parameters by state-dict name, learning-rate factor and weight decay. */
export interface TrainGroup {
  name: string;
  names: string[];
  params: Tensor[];
  lrFactor: number;
  weightDecay: number;
}

/** What a model brings to the trainer. */
export interface TrainTask {
  /** Names the checkpoint format (`freemask-<kind>-train`), so a checkpoint of another model is refused. */
  kind: string;
  model: Module;
  /** Number of training samples (the sample order is a seeded shuffle per epoch). */
  size: number;
  /** The loss of one micro-batch: a scalar with autograd history, in training mode. */
  loss(batch: Batch): Promise<Tensor>;
  /** Parameter groups (default: one group 'all', every parameter decayed). */
  groups?(o: ResolvedTrainerOptions): TrainGroup[];
  /** Names a micro-batch's samples in errors (default: their indices). */
  describe?(batch: Batch): string;
  /** Metadata saved with every checkpoint (e.g. the model's config as JSON). */
  metadata?(): Record<string, string>;
}

export interface StepResult {
  step: number;
  loss: number;
  gradNorm: number;
  lr: number;
}

const formatVersion = 1;

/** Trains a task; `saveCheckpoint` / `restore` survive a kill. */
export class Trainer {
  readonly options: ResolvedTrainerOptions;
  readonly groups: TrainGroup[];
  readonly optimizer: AdamW;
  readonly ema: ExponentialMovingAverage | undefined;
  /** Optimizer steps done. */
  step = 0;
  /** Per step: mean loss and gradient norm (kept in checkpoints, for the loss curve). */
  readonly log: { loss: number[]; gradNorm: number[] } = { loss: [], gradNorm: [] };
  /** Wall-clock seconds spent in `trainStep` over the whole run, across resumes (for model cards). */
  trainingSeconds = 0;

  constructor(readonly task: TrainTask, options: TrainerOptions) {
    if (task.size < 1) throw new Error(`train ${task.kind}: no training samples`);
    this.options = resolveTrainerOptions(options);
    const { lr, weightDecay, betas } = this.options;
    this.groups = task.groups?.(this.options) ?? [{ name: 'all', names: task.model.namedParameters().map(([n]) => n), params: task.model.parameters(), lrFactor: 1, weightDecay }];
    this.optimizer = new AdamW(this.groups.map((g) => ({ params: g.params, lr: lr * g.lrFactor, weightDecay: g.weightDecay })), { lr, weightDecay, betas });
    const named = this.groups.flatMap((g) => g.names.map((n, i) => [n, g.params[i]!] as [string, Tensor]));
    this.ema = this.options.emaDecay > 0 ? new ExponentialMovingAverage(named, this.options.emaDecay, this.optimizer.packed) : undefined;
  }

  /** The base learning rate at the next step. */
  get lr(): number {
    return this.options.lr * scheduleFactor(this.step, this.options);
  }

  /** Samples of micro-batch `micro` of step `step`: consecutive slots of per-epoch seeded shuffles. */
  batchIndices(step: number, micro: number): number[] {
    const { batchSize, accumulate } = this.options;
    const seed = spreadSeed(this.options.seed);
    const n = this.task.size;
    return Array.from({ length: batchSize }, (_, i) => {
      const slot = (step * accumulate + micro) * batchSize + i;
      return permutation(n, subSeed(seed, 0x45504f43, Math.floor(slot / n)))[slot % n]!;
    });
  }

  /** One optimizer step (accumulating micro-batches); throws, naming the step, on a non-finite loss or gradient. */
  async trainStep(): Promise<StepResult> {
    const { accumulate, clipNorm } = this.options;
    const seed = spreadSeed(this.options.seed);
    const model = this.task.model.train();
    const step = this.step;
    const stopped = (why: string) => new Error(`training stopped at step ${step + 1}: ${why}; the last checkpoint is left as it was`);
    const t0 = performance.now();
    let total = 0;
    try {
      for (let micro = 0; micro < accumulate; micro++) {
        const batch: Batch = { indices: this.batchIndices(step, micro), step, micro, seed: subSeed(seed, step, micro) };
        const loss = await this.task.loss(batch).catch((e: Error) => {
          throw stopped(e.message);
        });
        try {
          const value = await loss.item();
          if (!Number.isFinite(value)) {
            throw stopped(`the loss is ${value} (micro-batch ${micro}, samples ${this.task.describe?.(batch) ?? batch.indices.join(', ')})`);
          }
          total += value / accumulate;
          const scaled = accumulate > 1 ? affine(loss, 1 / accumulate) : loss;
          backward(scaled);
          if (scaled !== loss) scaled.dispose();
        } finally {
          loss.dispose();
        }
      }
      const factor = scheduleFactor(step, this.options);
      this.groups.forEach((g, k) => (this.optimizer.groups[k]!.options.lr = this.options.lr * g.lrFactor * factor));
      const norm = this.optimizer.step({ maxGradNorm: clipNorm > 0 ? clipNorm : Infinity })!;
      const gradNorm = await norm.item();
      norm.dispose();
      // with a non-finite norm the update left the weights and the optimizer state as they were
      if (!Number.isFinite(gradNorm)) throw stopped(`the gradient norm is ${gradNorm}`);
      this.ema?.update();
      this.step++;
      this.log.loss.push(total);
      this.log.gradNorm.push(gradNorm);
      this.trainingSeconds += (performance.now() - t0) / 1000;
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

  /** The checkpoint's tensors and metadata: model, optimizer state, EMA, log. */
  checkpoint(): { tensors: Record<string, Tensor>; metadata: Record<string, string> } {
    const tensors: Record<string, Tensor> = { ...this.task.model.stateDict() };
    const sd = this.optimizer.stateDict();
    for (const [k, t] of Object.entries(sd.tensors)) tensors[`optimizer.${k}`] = t;
    for (const [k, t] of Object.entries(this.ema?.stateDict() ?? {})) tensors[`ema.${k}`] = t;
    const metadata = {
      ...this.task.metadata?.(),
      format: `freemask-${this.task.kind}-train`,
      version: String(formatVersion),
      step: String(this.step),
      options: JSON.stringify(this.options),
      optimizer: JSON.stringify(sd.metadata),
      groups: JSON.stringify(this.groups.map((g) => ({ name: g.name, names: g.names }))),
      ema_updates: String(this.ema?.updates ?? 0),
      log: JSON.stringify(this.log),
      training_seconds: String(this.trainingSeconds),
    };
    return { tensors, metadata };
  }

  /** Writes `path` (safetensors, replaced by a rename: a kill leaves the old or the new one). */
  async saveCheckpoint(path: string): Promise<void> {
    const { tensors, metadata } = this.checkpoint();
    await saveSafetensors(path, tensors, metadata);
  }

  /**
   * Continues from a checkpoint this task's trainer saved: model weights, optimizer state, EMA, log and step.
   * The trainer must have been built with the checkpoint's options (`checkpointOptions`), overrides aside.
   */
  restore(reader: SafetensorsReader): void {
    const meta = reader.metadata;
    const where = reader.label;
    if (meta.format !== `freemask-${this.task.kind}-train`) throw new Error(`resume: ${where} is not a ${this.task.kind} training checkpoint (metadata format ${JSON.stringify(meta.format)})`);
    if (meta.version !== String(formatVersion)) throw new Error(`resume: ${where} has checkpoint version ${meta.version}, this freemask reads version ${formatVersion}`);
    const parse = (key: string): unknown => {
      try {
        return JSON.parse(meta[key] ?? '');
      } catch {
        throw new Error(`resume: ${where}: metadata '${key}' is missing or not JSON`);
      }
    };
    if (JSON.stringify(parse('groups')) !== JSON.stringify(this.groups.map((g) => ({ name: g.name, names: g.names })))) {
      throw new Error(`resume: ${where}: the checkpoint's parameter groups list other parameters than this model's`);
    }
    const step = Number(meta.step);
    if (!Number.isSafeInteger(step) || step < 0) throw new Error(`resume: ${where}: invalid step ${JSON.stringify(meta.step)}`);
    const log = parse('log') as { loss?: unknown; gradNorm?: unknown };
    if (!Array.isArray(log?.loss) || !Array.isArray(log.gradNorm) || log.loss.length !== step || log.gradNorm.length !== step) {
      throw new Error(`resume: ${where}: metadata 'log' does not hold ${step} steps`);
    }
    this.task.model.loadStateDict(reader, { ignore: (name) => name.startsWith('optimizer.') || name.startsWith('ema.') });
    const tensors: Record<string, Tensor> = {};
    try {
      for (const k of reader.keys()) if (k.startsWith('optimizer.')) tensors[k.slice('optimizer.'.length)] = reader.get(k);
      this.optimizer.loadStateDict({ tensors, metadata: parse('optimizer') as Record<string, string> });
    } finally {
      for (const t of Object.values(tensors)) t.dispose();
    }
    // the schedule sets learning rates at every step; weight decay follows this trainer's groups
    this.groups.forEach((g, k) => (this.optimizer.groups[k]!.options.weightDecay = g.weightDecay));
    if (this.ema) {
      const owned: Tensor[] = [];
      try {
        this.ema.load((n) => (reader.has(`ema.${n}`) ? owned[owned.push(keep(reader.get(`ema.${n}`))) - 1] : undefined), `resume: ${where}`);
      } finally {
        for (const t of owned) t.dispose();
      }
      this.ema.updates = Number(meta.ema_updates);
    }
    this.step = step;
    // checkpoints of runs before the clock was kept have none: their time is not known
    this.trainingSeconds = Number(meta.training_seconds ?? 0);
    this.log.loss.splice(0, Infinity, ...(log.loss as number[]));
    this.log.gradNorm.splice(0, Infinity, ...(log.gradNorm as number[]));
  }
}

/** The options a checkpoint was trained with (to rebuild its trainer), with `overrides` applied. */
export function checkpointOptions(reader: SafetensorsReader, overrides: Partial<TrainerOptions> = {}): TrainerOptions {
  let saved: unknown;
  try {
    saved = JSON.parse(reader.metadata.options ?? '');
  } catch {
    throw new Error(`resume: ${reader.label}: metadata 'options' is missing or not JSON`);
  }
  return { ...(saved as TrainerOptions), ...overrides };
}

/** Opens `path` for `restore`, or says that no checkpoint is there. */
export function openCheckpoint(path: string): SafetensorsReader {
  if (!nodeFs(`resuming from ${path}`).existsSync(path)) throw new Error(`resume: ${path} does not exist (no checkpoint saved there)`);
  return loadSafetensors(path);
}

/** Thrown by trainWithCheckpoints when SIGINT or SIGTERM stopped a run after saving its checkpoint. */
export class TrainingStopped extends Error {
  constructor(readonly step: number, readonly signal: string) {
    super(`stopped by ${signal} at step ${step}, checkpoint saved`);
  }
}

/**
 * Runs `trainer` to its last step, saving every `minutes` of wall time and at the end (a killed run loses at
 * most that much), logging progress every `every` steps. SIGINT or SIGTERM (Ctrl-C, a scheduler's stop) ends the
 * step in flight, saves, and throws TrainingStopped, so nothing downstream is written as if the run were done.
 */
export async function trainWithCheckpoints(trainer: Trainer, save: () => Promise<void>, { minutes = 5, every = 10, log = (line: string) => console.log(line) }: { minutes?: number; every?: number; log?: (line: string) => void } = {}): Promise<void> {
  const { steps } = trainer.options;
  const t0 = performance.now();
  let saved = performance.now();
  let signal: string | undefined;
  const proc = (globalThis as { process?: { on(e: string, f: () => void): void; off(e: string, f: () => void): void } }).process;
  const onSignal = (name: string) => () => {
    if (!signal) log(`${name}: stopping after this step and saving the checkpoint`);
    signal ??= name;
  };
  const handlers = (['SIGINT', 'SIGTERM'] as const).map((name) => [name, onSignal(name)] as const);
  for (const [name, h] of handlers) proc?.on(name, h);
  try {
    await trainer.train(async (r) => {
      if (r.step % every === 0 || r.step === steps) {
        log(`step ${r.step}/${steps}: loss ${r.loss.toFixed(4)}, grad norm ${r.gradNorm.toFixed(3)}, lr ${r.lr.toExponential(2)}, ${((performance.now() - t0) / 1000).toFixed(0)} s`);
      }
      if (signal || performance.now() - saved > minutes * 60_000 || r.step === steps) {
        await save();
        saved = performance.now();
      }
      if (signal && r.step < steps) throw new TrainingStopped(r.step, signal);
    });
  } finally {
    for (const [name, h] of handlers) proc?.off(name, h);
  }
}
