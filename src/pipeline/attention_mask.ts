// Stage 1 of Free-Mask: a class mask from the diffusion model's attention, with no segmentation training.
// The class tokens' cross-attention is averaged over chosen resolutions, places (down/mid/up), layers, heads
// and steps, optionally refined by the self-attention matrix raised to τ, normalised per image, upsampled
// to the image and thresholded into foreground / background / uncertain (255, ignored by later stages).
//
// Presets (numbers read from the authors' code):
// - DIFFUMASK_PRESET — weijiawu/DiffuMask, Stable_Diffusion/parallel_generate_VOC_Attention_AnyClass.py:
//   cross-attention of the "up" and "down" blocks, averaged over all 50 steps, layers and heads per
//   resolution; the 16, 32 and 64 maps are each resized to the image, divided by their maximum and averaged;
//   a class's several tokens ('aerop' + 'lane') are averaged. Threshold: aff_prepare.py's adaptive rule
//   (the densest 0.01 bin of the map in [0.45, 0.53) is the cut t; confident foreground above mean(map > t)
//   − 0.04, confident background below mean(map < t) + 0.02; its minimum-area adjustment loops are left out).
// - DATASET_DIFFUSION_PRESET — VinAIResearch/Dataset-Diffusion, gen_data.py defaults: cross-attention at 16
//   averaged over every place, layer, head and all steps, resized to the self-attention resolution 32; the
//   32×32 self-attention matrix to the power τ = 4 times the cross map; min–max normalised; resized to the
//   image; foreground at ≥ 0.6, uncertain in [0.5, 0.6).
// Both resize with bicubic interpolation; the engine has bilinear, which is used here.

import { Tensor, tidy } from '../engine/tensor.ts';
import { noGrad } from '../engine/autograd.ts';
import { add, div, mul } from '../kernels/elementwise.ts';
import { indexSelect } from '../kernels/gather.ts';
import { matmul } from '../kernels/matmul.ts';
import { max, mean, min } from '../kernels/reduce.ts';
import { interpolate } from '../kernels/resample.ts';
import { reshape, slice } from '../kernels/shape.ts';
import type { AttentionCapture } from '../models/attention_capture.ts';
import { ConfigReader, type JsonConfig } from '../models/pretrained.ts';

export type UNetPlace = 'down' | 'mid' | 'up';

/** One captured attention probability tensor of one layer at one step, for one image. */
export interface AttentionRecord {
  kind: 'cross' | 'self';
  place: UNetPlace;
  /** Denoising step index (0 = first). */
  step: number;
  /** Latent grid of the layer. */
  height: number;
  width: number;
  /** cross: [heads, height·width, tokens]; self: [heads, height·width, height·width] (rows = queries). */
  probs: Tensor;
}

/**
 * The records of batch element `batch` from a per-layer AttentionCapture (`mode: 'per-layer'`), each layer's
 * map averaged over the forwards it summed (so `step` is 0 for all: choose steps when capturing). The
 * place comes from the module name (down_blocks / mid_block / up_blocks).
 */
export function recordsFromCapture(capture: AttentionCapture, batch: number): AttentionRecord[] {
  return capture.entries().map(([name, m]) => {
    if (m.sum.rank !== 4) throw new Error(`recordsFromCapture: '${name}' is not a per-layer map (capture with mode 'per-layer')`);
    const place: UNetPlace = name.startsWith('down_blocks') ? 'down' : name.startsWith('mid_block') ? 'mid' : 'up';
    const [B, heads, Lq, Lk] = m.sum.shape as [number, number, number, number];
    if (!Number.isInteger(batch) || batch < 0 || batch >= B) throw new Error(`recordsFromCapture: batch ${batch} is outside 0…${B - 1}`);
    const probs = tidy(() => div(reshape(slice(m.sum, 0, batch, batch + 1), [heads, Lq, Lk]), m.count));
    return { kind: m.kind, place, step: 0, height: m.height, width: m.width, probs };
  });
}

export type ThresholdRule =
  /** Foreground at ≥ value; uncertain in [uncertainFrom, value) when given. */
  | { kind: 'fixed'; value: number; uncertainFrom?: number }
  /** Otsu's cut t on the map's histogram; uncertain within ± band of t. */
  | { kind: 'otsu'; band?: number; bins?: number }
  /** DiffuMask's per-image rule (see the file comment). */
  | { kind: 'adaptive'; search?: [number, number]; fgOffset?: number; bgOffset?: number };

export interface AttentionMaskConfig {
  /** Cross-attention grid heights to use (each averaged over its layers, heads, steps). */
  crossResolutions: number[];
  places: UNetPlace[];
  /** Steps [first, end) to average; all when omitted. */
  steps?: [number, number];
  /** Self-attention refinement: the matrix at this grid height, to the power tau, applied to the cross map. */
  selfAttention?: { resolution: number; tau: number };
  /** Per-image normalisation of the final map. */
  normalise: 'minmax' | 'max' | 'none';
  threshold: ThresholdRule;
}

export const DIFFUMASK_PRESET: AttentionMaskConfig = {
  crossResolutions: [16, 32, 64],
  places: ['down', 'up'],
  normalise: 'none',
  threshold: { kind: 'adaptive', search: [0.45, 0.53], fgOffset: -0.04, bgOffset: 0.02 },
};

export const DATASET_DIFFUSION_PRESET: AttentionMaskConfig = {
  crossResolutions: [16],
  places: ['down', 'mid', 'up'],
  selfAttention: { resolution: 32, tau: 4 },
  normalise: 'minmax',
  threshold: { kind: 'fixed', value: 0.6, uncertainFrom: 0.5 },
};

export const uncertainLabel = 255;

function pair(r: ConfigReader, key: string): [number, number] {
  const v = r.numbers(key);
  if (v?.length !== 2) r.fail(key, 'a pair of numbers');
  return [v[0]!, v[1]!];
}

/**
 * An AttentionMaskConfig from JSON (the interface's field names), checked key by key; errors name `source` and
 * the key. Absent keys take DATASET_DIFFUSION_PRESET's values, except that selfAttention is off unless given.
 */
export function attentionMaskConfigFromJson(json: Record<string, unknown>, source: string): AttentionMaskConfig {
  const r = new ConfigReader(json as JsonConfig, source);
  const d = DATASET_DIFFUSION_PRESET;
  const places = r.strings('places', d.places);
  for (const p of places) if (!['down', 'mid', 'up'].includes(p)) throw new Error(`${source}: "places" must list down, mid or up, got ${JSON.stringify(p)}`);
  const steps = r.has('steps') ? pair(r, 'steps') : undefined;
  if (steps && !(steps.every((v) => Number.isInteger(v) && v >= 0) && steps[0] < steps[1])) r.fail('steps', 'a pair [first, end) of step indices');
  const self = r.child('selfAttention');
  const t = r.child('threshold') ?? new ConfigReader({ kind: 'fixed', value: 0.6, uncertainFrom: 0.5 }, `${source} threshold`);
  const kind = t.oneOf('kind', ['fixed', 'otsu', 'adaptive'] as const);
  const threshold: ThresholdRule = kind === 'fixed'
    ? { kind, value: t.number('value'), ...(t.has('uncertainFrom') && { uncertainFrom: t.number('uncertainFrom') }) }
    : kind === 'otsu'
      ? { kind, ...(t.has('band') && { band: t.number('band') }), ...(t.has('bins') && { bins: t.int('bins', undefined, 2) }) }
      : { kind, ...(t.has('search') && { search: pair(t, 'search') }), ...(t.has('fgOffset') && { fgOffset: t.number('fgOffset') }), ...(t.has('bgOffset') && { bgOffset: t.number('bgOffset') }) };
  return {
    crossResolutions: r.ints('crossResolutions', d.crossResolutions),
    places: places as UNetPlace[],
    ...(steps && { steps }),
    ...(self && { selfAttention: { resolution: self.int('resolution', undefined, 1), tau: self.int('tau', undefined, 0) } }),
    normalise: r.oneOf('normalise', ['minmax', 'max', 'none'] as const, d.normalise),
    threshold,
  };
}

function selected(records: readonly AttentionRecord[], kind: 'cross' | 'self', height: number, cfg: AttentionMaskConfig): AttentionRecord[] {
  const [s0, s1] = cfg.steps ?? [0, Infinity];
  const out = records.filter((r) => r.kind === kind && r.height === height && cfg.places.includes(r.place) && r.step >= s0 && r.step < s1);
  if (out.length === 0) {
    throw new Error(`attentionHeatmap: no ${kind}-attention records at grid height ${height} from places ${cfg.places.join('/')} in the chosen steps`);
  }
  const w = out[0]!.width;
  for (const r of out) {
    const want = kind === 'cross' ? [r.height * r.width] : [r.height * r.width, r.height * r.width];
    if (r.width !== w || r.probs.rank !== 3 || r.probs.shape[1] !== want[0] || (kind === 'self' && r.probs.shape[2] !== want[1])) {
      throw new Error(`attentionHeatmap: ${kind} record (${r.place}, step ${r.step}) has probs [${r.probs.shape.join(', ')}] for a ${r.height}×${r.width} grid`);
    }
  }
  return out;
}

/** Mean over records and heads: [HW, last]. */
function averaged(records: AttentionRecord[]): Tensor {
  let acc: Tensor | undefined;
  for (const r of records) {
    const m = mean(r.probs, 0);
    acc = acc ? add(acc, m) : m;
  }
  return div(acc!, records.length);
}

/**
 * The class heat map [H, W] (image size) of the tokens at `tokens` (positions in the prompt's padded ids,
 * as CLIPTokenizer.tokenSpans gives them; several tokens are averaged) under `cfg`.
 */
export function attentionHeatmap(records: readonly AttentionRecord[], tokens: readonly number[], imageSize: [number, number], cfg: AttentionMaskConfig): Tensor {
  if (tokens.length === 0) throw new Error('attentionHeatmap: no token positions for the class');
  return noGrad(() => tidy(() => {
    const target = cfg.selfAttention
      ? (() => {
        const s = selected(records, 'self', cfg.selfAttention.resolution, cfg)[0]!;
        return [s.height, s.width] as [number, number];
      })()
      : imageSize;
    const ids = Tensor.fromArray(Int32Array.from(tokens), [tokens.length]);
    let heat: Tensor | undefined;
    for (const res of cfg.crossResolutions) {
      const recs = selected(records, 'cross', res, cfg);
      const T = recs[0]!.probs.shape[2]!;
      if (tokens.some((t) => t < 0 || t >= T)) throw new Error(`attentionHeatmap: token positions ${tokens.join(', ')} outside the ${T} context tokens`);
      const m = mean(indexSelect(averaged(recs), 1, ids), 1);
      const up = interpolate(reshape(m, [1, 1, res, recs[0]!.width]), { size: target, mode: 'bilinear', alignCorners: false });
      const scaled = div(up, add(max(up), 1e-12));
      heat = heat ? add(heat, scaled) : scaled;
    }
    heat = div(heat!, cfg.crossResolutions.length);
    if (cfg.selfAttention) {
      const [h, w] = target;
      const A = averaged(selected(records, 'self', cfg.selfAttention.resolution, cfg));
      let v = reshape(heat, [h * w, 1]);
      for (let k = 0; k < cfg.selfAttention.tau; k++) v = matmul(A, v);
      heat = interpolate(reshape(v, [1, 1, h, w]), { size: imageSize, mode: 'bilinear', alignCorners: false });
    }
    heat = reshape(heat, imageSize);
    if (cfg.normalise === 'max') heat = div(heat, add(max(heat), 1e-12));
    if (cfg.normalise === 'minmax') {
      const lo = min(heat);
      heat = div(add(heat, mul(lo, -1)), add(add(max(heat), mul(lo, -1)), 1e-12));
    }
    return heat;
  }));
}

/** Otsu's threshold of `values` over `bins` bins spanning their range: the cut maximising the between-class variance (foreground ≥ cut). */
export function otsuThreshold(values: ArrayLike<number>, bins = 256): number {
  let lo = Infinity;
  let hi = -Infinity;
  for (let i = 0; i < values.length; i++) {
    lo = Math.min(lo, values[i]!);
    hi = Math.max(hi, values[i]!);
  }
  if (!(hi > lo)) return hi;
  const width = (hi - lo) / bins;
  const hist = new Float64Array(bins);
  for (let i = 0; i < values.length; i++) hist[Math.min(bins - 1, Math.floor((values[i]! - lo) / width))]!++;
  const n = values.length;
  let total = 0;
  for (let b = 0; b < bins; b++) total += b * hist[b]!;
  let w0 = 0;
  let sum0 = 0;
  let best = -1;
  let cut = 0;
  for (let k = 0; k < bins - 1; k++) {
    w0 += hist[k]!;
    sum0 += k * hist[k]!;
    if (w0 === 0 || w0 === n) continue;
    const mu0 = sum0 / w0;
    const mu1 = (total - sum0) / (n - w0);
    const between = w0 * (n - w0) * (mu0 - mu1) ** 2;
    if (between > best) {
      best = between;
      cut = k;
    }
  }
  return lo + (cut + 1) * width;
}

/** DiffuMask's adaptive levels: [background-at-or-below, foreground-above] (see the file comment). */
export function adaptiveLevels(values: ArrayLike<number>, { search = [0.45, 0.53], fgOffset = -0.04, bgOffset = 0.02 }: Extract<ThresholdRule, { kind: 'adaptive' }>): [number, number] {
  const first = Math.round(search[0] * 100);
  const last = Math.round(search[1] * 100);
  const counts = new Array<number>(last - first).fill(0);
  for (let i = 0; i < values.length; i++) {
    const b = Math.floor(values[i]! * 100) - first;
    if (b >= 0 && b < counts.length && values[i]! > (first + b) / 100) counts[b]!++;
  }
  let t = first / 100;
  let most = 0;
  counts.forEach((c, b) => {
    if (c > most) {
      most = c;
      t = (first + b) / 100;
    }
  });
  let [sa, na, sb, nb] = [0, 0, 0, 0];
  for (let i = 0; i < values.length; i++) {
    const v = values[i]!;
    if (v > t) [sa, na] = [sa + v, na + 1];
    else if (v < t) [sb, nb] = [sb + v, nb + 1];
  }
  const fg = na ? sa / na + fgOffset : t;
  const bg = nb ? sb / nb + bgOffset : t;
  return [Math.min(bg, fg), Math.max(bg, fg)];
}

/** Per-pixel state of one heat map under `rule`: 1 foreground, 0 background, 2 uncertain. */
export function thresholdStates(heat: ArrayLike<number>, rule: ThresholdRule): Uint8Array {
  let [bgBelow, fgFrom]: [number, number] = [0, 0];
  if (rule.kind === 'fixed') [bgBelow, fgFrom] = [rule.uncertainFrom ?? rule.value, rule.value];
  else if (rule.kind === 'otsu') {
    const t = otsuThreshold(heat, rule.bins);
    [bgBelow, fgFrom] = [t - (rule.band ?? 0), t + (rule.band ?? 0)];
  } else {
    // adaptive: background at or below the low level, foreground above the high one
    const [lo, hi] = adaptiveLevels(heat, rule);
    [bgBelow, fgFrom] = [lo + Number.EPSILON, hi + Number.EPSILON];
  }
  if (bgBelow > fgFrom) throw new Error(`thresholdStates: the uncertain band starts at ${bgBelow}, above the foreground threshold ${fgFrom}`);
  return Uint8Array.from(heat as ArrayLike<number>, (v) => (v >= fgFrom ? 1 : v < bgBelow ? 0 : 2));
}

export interface ClassTokens {
  /** Label written for the class (VOC index). */
  id: number;
  /** Token positions of the class name in the prompt (several for multi-token names). */
  tokens: number[];
}

export interface AttentionMaskResult {
  /** Per class, its heat map [H, W] in image size. */
  heat: Float32Array[];
  /** Labels [H·W]: 0 background, a class id, or 255 uncertain. */
  mask: Uint8Array;
}

/**
 * Masks of one image from its captured attention: each class's heat map is thresholded by `cfg.threshold`;
 * a pixel takes the class with the highest heat among those confident there, else 255 if any class is
 * uncertain there, else background.
 */
export async function attentionMask(records: readonly AttentionRecord[], classes: readonly ClassTokens[], imageSize: [number, number], cfg: AttentionMaskConfig): Promise<AttentionMaskResult> {
  const heat: Float32Array[] = [];
  for (const c of classes) {
    const t = attentionHeatmap(records, c.tokens, imageSize, cfg);
    heat.push(Float32Array.from(await t.toArray()));
    t.dispose();
  }
  const states = heat.map((h) => thresholdStates(h, cfg.threshold));
  const n = imageSize[0] * imageSize[1];
  const mask = new Uint8Array(n);
  for (let i = 0; i < n; i++) {
    let best = -1;
    let uncertain = false;
    classes.forEach((_, k) => {
      if (states[k]![i] === 1 && (best < 0 || heat[k]![i]! > heat[best]![i]!)) best = k;
      if (states[k]![i] === 2) uncertain = true;
    });
    mask[i] = best >= 0 ? classes[best]!.id : uncertain ? uncertainLabel : 0;
  }
  return { heat, mask };
}
