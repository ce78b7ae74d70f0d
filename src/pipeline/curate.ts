// Free-Mask's active-learning loop: round 0 trains Mask2Former on every generated sample; each later round
// segments the samples with the previous round's model (frozen), scores each sample's generated mask against the
// prediction class by class, drops the samples that fail the rule, and trains a new model (the same initial
// weights) on what is kept. A round's folder is finished when its round.json exists; a round killed while
// training resumes from its checkpoint, so the loop survives being stopped anywhere.

import { manualSeed } from '../engine/random-cpu.ts';
import { nodeFs, writeFileAtomic } from '../io/fs.ts';
import { type Mask2FormerConfig, parseMask2FormerConfig } from '../models/mask2former/config.ts';
import type { SegmentationSample } from '../models/mask2former/data.ts';
import { evaluateSegmenter } from '../models/mask2former/evaluate.ts';
import { Mask2FormerForUniversalSegmentation } from '../models/mask2former/model.ts';
import { Mask2FormerTrainer, type TrainOptions } from '../models/mask2former/train.ts';
import { trainWithCheckpoints } from '../train/trainer.ts';
import { oracleLabels } from './evaluate_diffusion.ts';

/** Free-Mask's rule keeps a sample when any class reaches the threshold; 'all' asks every class, 'mean' their mean. */
export type KeepRule = 'any' | 'all' | 'mean';
export const keepRules: readonly KeepRule[] = ['any', 'all', 'mean'];

/** Per class of the generated mask (not background, not 255): IoU between its pixels and the prediction's, over pixels the mask is sure of. */
export function classIous(generated: ArrayLike<number>, predicted: ArrayLike<number>): Record<number, number> {
  const inter = new Map<number, number>(), union = new Map<number, number>();
  const classes = new Set<number>();
  for (let p = 0; p < generated.length; p++) if (generated[p] !== 0 && generated[p] !== 255) classes.add(generated[p]!);
  for (let p = 0; p < generated.length; p++) {
    const [g, q] = [generated[p]!, predicted[p]!];
    if (g === 255) continue;
    for (const c of classes) {
      if (g !== c && q !== c) continue;
      union.set(c, (union.get(c) ?? 0) + 1);
      if (g === c && q === c) inter.set(c, (inter.get(c) ?? 0) + 1);
    }
  }
  return Object.fromEntries([...classes].sort((a, b) => a - b).map((c) => [c, (inter.get(c) ?? 0) / union.get(c)!]));
}

/** Whether a sample with these per-class IoUs is kept (a sample without any class is not: nothing vouches for it). */
export function keepSample(ious: Record<number, number>, rule: KeepRule, threshold: number): boolean {
  const v = Object.values(ious);
  if (v.length === 0) return false;
  if (rule === 'any') return v.some((x) => x >= threshold);
  if (rule === 'all') return v.every((x) => x >= threshold);
  return v.reduce((a, x) => a + x, 0) / v.length >= threshold;
}

export interface CurateOptions {
  samples: readonly SegmentationSample[];
  out: string;
  rounds: number;
  /** The segmenter (a transformers Mask2Former config.json object). */
  config: Record<string, unknown>;
  /** Training steps per round. */
  steps: number;
  train?: Omit<TrainOptions, 'steps'>;
  rule?: KeepRule;
  threshold?: number;
  /** Truth samples: each round's model gets its mIoU on them. */
  val?: readonly SegmentationSample[];
  seed?: number;
  saveMinutes?: number;
  log?: (line: string) => void;
}

export interface CurateRound {
  round: number;
  /** Samples the round trained on, and those it dropped (round 0: none). */
  kept: number;
  dropped: number;
  /** mIoU of the round's model on `val`, when given. */
  miou?: number;
}

export interface SampleScore {
  id: string;
  ious: Record<number, number>;
  kept: boolean;
}

/** Runs (or resumes) the loop; returns each round's counts. Round r's folder: scores.json (r ≥ 1), the model, round.json. */
export async function curate(o: CurateOptions): Promise<CurateRound[]> {
  const { samples, out, rounds, steps, rule = 'any', threshold = 0.5, seed = 0, log = () => {} } = o;
  if (!Number.isInteger(rounds) || rounds < 0) throw new Error(`--rounds: expected an integer ≥ 0, got ${rounds}`);
  if (!Number.isInteger(steps) || steps < 1) throw new Error(`--steps: expected a positive integer, got ${steps}`);
  if (!keepRules.includes(rule)) throw new Error(`--rule: expected ${keepRules.join(', ')}, got '${rule}'`);
  if (!(threshold >= 0 && threshold <= 1)) throw new Error(`--threshold: expected an IoU from 0 to 1, got ${threshold}`);
  if (samples.length === 0) throw new Error('--data: no samples');
  const config: Mask2FormerConfig = parseMask2FormerConfig(o.config, 'curate segmenter config');
  const bad = samples.find((s) => s.semantic.some((v) => v !== 255 && v >= config.numLabels));
  if (bad) throw new Error(`--data: sample '${bad.id}' has a class outside the segmenter's ${config.numLabels} labels`);
  const fs = nodeFs(`curating into ${out}`);
  fs.mkdirSync(out, { recursive: true });
  const settings = JSON.stringify({ ids: samples.map((s) => s.id), config: o.config, steps, train: o.train ?? {}, rule, threshold, seed });
  if (fs.existsSync(`${out}/settings.json`)) {
    if (new TextDecoder().decode(fs.readFileSync(`${out}/settings.json`)) !== settings) throw new Error(`--out: ${out} holds a curate run with other data or settings; choose a new folder`);
  } else writeFileAtomic(`${out}/settings.json`, new TextEncoder().encode(settings));
  const json = (path: string, v: unknown) => writeFileAtomic(path, new TextEncoder().encode(`${JSON.stringify(v, null, 1)}\n`));
  const read = <T>(path: string) => JSON.parse(new TextDecoder().decode(fs.readFileSync(path))) as T;
  const results: CurateRound[] = [];
  let kept: readonly SegmentationSample[] = samples;
  for (let r = 0; r <= rounds; r++) {
    const dir = `${out}/round-${r}`;
    if (fs.existsSync(`${dir}/round.json`)) {
      results.push(read<CurateRound>(`${dir}/round.json`));
      if (r > 0) kept = samples.filter((s) => read<SampleScore[]>(`${dir}/scores.json`).find((x) => x.id === s.id)!.kept);
      continue;
    }
    fs.mkdirSync(dir, { recursive: true });
    if (r > 0) {
      // the previous round's model, frozen, judges every generated sample
      if (!fs.existsSync(`${dir}/scores.json`)) {
        const judge = Mask2FormerForUniversalSegmentation.fromPretrained(`${out}/round-${r - 1}`);
        const scores: SampleScore[] = [];
        try {
          for (const s of samples) {
            const ious = classIous(s.semantic, await oracleLabels(judge, s));
            scores.push({ id: s.id, ious, kept: keepSample(ious, rule, threshold) });
          }
        } finally {
          judge.dispose();
        }
        json(`${dir}/scores.json`, scores);
      }
      const scores = read<SampleScore[]>(`${dir}/scores.json`);
      kept = samples.filter((s) => scores.find((x) => x.id === s.id)!.kept);
      log(`round ${r}: kept ${kept.length} of ${samples.length} (rule ${rule}, IoU ≥ ${threshold})`);
      if (kept.length === 0) throw new Error(`curate: round ${r} keeps no sample (rule ${rule}, IoU ≥ ${threshold}); the previous model agrees with none of the masks — train longer (--steps) or lower --threshold`);
    }
    let trainer: Mask2FormerTrainer;
    if (fs.existsSync(`${dir}/checkpoint.safetensors`)) {
      trainer = await Mask2FormerTrainer.resume(dir, kept, { steps });
      log(`round ${r}: resumed at step ${trainer.step}`);
    } else {
      // every round starts from the same initial weights: rounds differ only in their data
      manualSeed(seed);
      trainer = new Mask2FormerTrainer(new Mask2FormerForUniversalSegmentation(config), kept, { ...o.train, steps, seed });
    }
    try {
      await trainWithCheckpoints(trainer, () => trainer.saveCheckpoint(dir), { minutes: o.saveMinutes ?? 5, log: (l) => log(`round ${r}: ${l}`) });
      const result: CurateRound = { round: r, kept: kept.length, dropped: samples.length - kept.length };
      if (o.val) result.miou = (await evaluateSegmenter(trainer.model, o.val, { instances: false })).miou;
      json(`${dir}/round.json`, result);
      results.push(result);
      log(`round ${r}: trained on ${kept.length} samples${result.miou !== undefined ? `, val mIoU ${(100 * result.miou).toFixed(2)}` : ''}`);
    } finally {
      trainer.optimizer.dispose();
      trainer.model.dispose();
    }
  }
  json(`${out}/kept.json`, kept.map((s) => s.id));
  json(`${out}/rounds.json`, results);
  return results;
}
