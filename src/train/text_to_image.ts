// Training Stable Diffusion's text encoder and UNet together, as diffusers' train_text_to_image.py trains
// the UNet (here the CLIP text model learns too: no pretrained one exists for ShapeWorld's words). Per
// micro-batch: latents drawn from the cached VAE posteriors and scaled by scaling_factor, a timestep
// t ~ U{0..T−1} and noise ε per sample, x_t = √ᾱ_t·z + √(1−ᾱ_t)·ε, the prompt replaced by "" with
// probability dropPrompt (so classifier-free guidance works), and the loss ‖ε − unet(x_t, t, clip(prompt))‖².
// The scheduler's ᾱ are SD's: scaled_linear betas 0.00085…0.012 over 1000 steps.

import { Tensor, tidy } from '../engine/tensor.ts';
import { noGrad } from '../engine/autograd.ts';
import { nodeFs, writeFileAtomic } from '../io/fs.ts';
import { saveSafetensors } from '../io/safetensors.ts';
import { seededRandom, subSeed } from '../engine/random-cpu.ts';
import { add, affine, div, exp, mul } from '../kernels/elementwise.ts';
import { matmul } from '../kernels/matmul.ts';
import { mseLoss } from '../kernels/loss.ts';
import { mean as reduceMean, sum } from '../kernels/reduce.ts';
import { randn } from '../kernels/random.ts';
import { concat, reshape } from '../kernels/shape.ts';
import { AttentionCapture, type GraphMap } from '../models/attention_capture.ts';
import type { AutoencoderKL } from '../models/autoencoder_kl.ts';
import type { CLIPTextModel } from '../models/clip_text_model.ts';
import type { CLIPTokenizer } from '../models/clip_tokenizer.ts';
import type { UNet2DConditionModel } from '../models/unet_2d_condition.ts';
import { Module } from '../nn/module.ts';
import { type RgbImage, imageBatch } from './autoencoder.ts';
import type { Batch, TrainTask } from './trainer.ts';

/** SD's sampler config (diffusers' DDIMScheduler as SD 1.x ships it): scaled_linear betas, 1000 steps, ε-prediction. */
export const sdSchedulerConfig = {
  _class_name: 'DDIMScheduler', _diffusers_version: '0.31.0', num_train_timesteps: 1000, beta_start: 0.00085, beta_end: 0.012,
  beta_schedule: 'scaled_linear', trained_betas: null, clip_sample: false, set_alpha_to_one: false, steps_offset: 1,
  prediction_type: 'epsilon', timestep_spacing: 'leading',
};

/** The two trained models under diffusers' folder names, so a checkpoint names parameters `unet.…`, `text_encoder.…`. */
export class TextToImageModel extends Module {
  constructor(readonly unet: UNet2DConditionModel, readonly textEncoder: CLIPTextModel) {
    super();
    this.module('unet', unet);
    this.module('text_encoder', textEncoder);
  }
}

/** VAE posteriors of a set of images: [N, 2·C, h, w], the mean's C channels then the log-variance's. */
export interface LatentCache {
  moments: Float32Array;
  shape: [number, number, number];
}

/** Encodes `images` once with `vae` (no gradients), `batch` at a time. */
export async function encodeLatents(vae: AutoencoderKL, images: readonly RgbImage[], batch = 16): Promise<LatentCache> {
  let shape: [number, number, number] | undefined;
  let moments: Float32Array | undefined;
  for (let i = 0; i < images.length; i += batch) {
    const indices = Array.from({ length: Math.min(batch, images.length - i) }, (_, k) => i + k);
    const both = noGrad(() => tidy(() => {
      const { mean, logvar } = vae.encode(imageBatch(images, indices));
      return concat([mean, logvar], 1);
    }));
    const [, c2, h, w] = both.shape as [number, number, number, number];
    shape ??= [c2 / 2, h, w];
    moments ??= new Float32Array(images.length * c2 * h * w);
    moments.set(await both.toArray() as Float32Array, i * c2 * h * w);
    both.dispose();
  }
  return { moments: moments!, shape: shape! };
}

export interface TextToImageOptions {
  /** The VAE's scaling_factor (latents · it enter the UNet). */
  scalingFactor: number;
  /** ᾱ_t of the training noise schedule (NoiseScheduler.alphasCumprod). */
  alphasCumprod: Float64Array;
  /** Probability of training on the empty prompt (default 0.1). */
  dropPrompt?: number;
  /**
   * Min-SNR-γ weighting (Hang et al. 2023, diffusers' `--snr_gamma`): each sample's ε loss × min(SNR_t, γ) / SNR_t
   * with SNR_t = ᾱ_t / (1 − ᾱ_t), so the easy low-noise timesteps stop dominating the gradient. Default: none.
   */
  snrGamma?: number;
  /**
   * TokenCompose's token grounding loss (Wang et al., CVPR 2024): for every class an image shows, its prompt
   * tokens' cross-attention (mean over heads) should fall inside the class's pixels, loss (1 − inside / all)²
   * per class and layer, averaged, times `weight`, added to the ε loss. `targets[i]` are sample i's classes; a
   * dropped prompt has none. Attention at the grids `resolutions` (default 16 and 8: where masks are read).
   */
  grounding?: { weight: number; targets: readonly (readonly GroundingTarget[])[]; resolutions?: readonly number[] };
}

/** One class of a training image for the grounding loss: its tokens in the padded prompt ids and its pixels. */
export interface GroundingTarget {
  tokens: readonly number[];
  /** width·height, 1 where the class is */
  mask: Uint8Array;
  width: number;
  height: number;
}

/**
 * The grounding targets of an image from its class map: each class (not 0 or 255) whose word (`words(classId)`:
 * singular and plural) is in the prompt; a class the prompt does not name has no target.
 */
export function groundingTargets(tokenizer: CLIPTokenizer, prompt: string, semantic: Uint8Array, width: number, height: number, words: (classId: number) => readonly string[]): GroundingTarget[] {
  if (semantic.length !== width * height) throw new Error(`groundingTargets: a class map of ${semantic.length} pixels for ${width}×${height}`);
  const present = [...new Set(semantic)].filter((c) => c !== 0 && c !== 255).sort((a, b) => a - b);
  return present.flatMap((c) => {
    const tokens = [...new Set(words(c).flatMap((w) => tokenizer.tokenSpans(prompt, w).flat()))].sort((a, b) => a - b);
    return tokens.length ? [{ tokens, mask: semantic.map((v) => (v === c ? 1 : 0)), width, height }] : [];
  });
}

/** The share of each cell of a `gw`×`gh` grid covered by `mask` (area average; the grid divides the image). */
function coverage(t: GroundingTarget, gw: number, gh: number): Float32Array {
  if (t.width % gw || t.height % gh) throw new Error(`grounding: a ${t.width}×${t.height} mask does not divide into a ${gw}×${gh} attention grid`);
  const [sx, sy] = [t.width / gw, t.height / gh];
  const out = new Float32Array(gw * gh);
  for (let y = 0; y < t.height; y++) for (let x = 0; x < t.width; x++) out[Math.floor(y / sy) * gw + Math.floor(x / sx)]! += t.mask[y * t.width + x]!;
  return out.map((v) => v / (sx * sy));
}

/**
 * TokenCompose's L_token over `maps` (graph-mode cross-attention, [B, heads, h·w, Lk] each): per layer, sample and
 * class target, (1 − Σ_u m(u)·a(u) / Σ_u a(u))² with a = the class tokens' attention (mean over heads, summed
 * over its tokens) and m the class's coverage of cell u; the mean over all of them. Undefined when no sample has a target.
 */
export function groundingLoss(maps: readonly GraphMap[], targets: readonly (readonly GroundingTarget[])[]): Tensor | undefined {
  const K = Math.max(0, ...targets.map((t) => t.length));
  if (K === 0 || maps.length === 0) return undefined;
  const B = targets.length;
  const valid = targets.reduce((n, t) => n + t.length, 0);
  const terms: Tensor[] = [];
  // several layers share a grid: each target's coverage of it is computed once
  const coverages = new Map<string, Float32Array[][]>();
  for (const m of maps) {
    const [mb, , Lq, Lk] = m.probs.shape as [number, number, number, number];
    if (mb !== B) throw new Error(`grounding: attention of ${m.name} has batch ${mb}, the targets ${B}`);
    const grid = `${m.width}x${m.height}`;
    if (!coverages.has(grid)) coverages.set(grid, targets.map((ts) => ts.map((t) => coverage(t, m.width, m.height))));
    const inMask = new Float32Array(B * Lq * Lk);
    const group = new Float32Array(B * Lk * K);
    const used = new Float32Array(B * K);
    targets.forEach((ts, i) => ts.forEach((t, j) => {
      const cover = coverages.get(grid)![i]![j]!;
      used[i * K + j] = 1;
      for (const p of t.tokens) {
        if (p >= Lk) throw new Error(`grounding: token ${p} outside the ${Lk} context tokens`);
        group[(i * Lk + p) * K + j] = 1;
        for (let u = 0; u < Lq; u++) inMask[(i * Lq + u) * Lk + p] = cover[u]!;
      }
    }));
    terms.push(tidy(() => {
      const a = reduceMean(m.probs, 1); // [B, Lq, Lk]
      const G = Tensor.fromArray(group, [B, Lk, K]);
      const inside = matmul(reshape(sum(mul(a, Tensor.fromArray(inMask, [B, Lq, Lk])), 1), [B, 1, Lk]), G);
      const all = matmul(reshape(sum(a, 1), [B, 1, Lk]), G);
      const miss = affine(div(inside, add(all, 1e-6)), -1, 1);
      return sum(mul(mul(miss, miss), Tensor.fromArray(used, [B, 1, K])));
    }));
  }
  return tidy(() => div(terms.reduce((acc, t) => add(acc, t)), valid * maps.length));
}

/** The trainer's task: `prompts[i]` describes the image whose posterior is `latents` sample i. */
export function textToImageTask(model: TextToImageModel, tokenizer: CLIPTokenizer, prompts: readonly string[], latents: LatentCache, o: TextToImageOptions): TrainTask {
  const { scalingFactor, alphasCumprod: ac, dropPrompt = 0.1, snrGamma, grounding } = o;
  if (grounding && !(grounding.weight > 0)) throw new Error(`train text-to-image: the grounding weight must be positive, got ${grounding.weight}`);
  if (grounding && grounding.targets.length !== prompts.length) throw new Error(`train text-to-image: grounding targets for ${grounding.targets.length} images, ${prompts.length} prompts`);
  if (snrGamma !== undefined && !(snrGamma > 0)) throw new Error(`train text-to-image: snrGamma must be positive, got ${snrGamma}`);
  const N = prompts.length;
  if (latents.moments.length !== N * 2 * latents.shape[0] * latents.shape[1] * latents.shape[2]) throw new Error(`train text-to-image: ${N} prompts but latents for ${latents.moments.length / (2 * latents.shape.reduce((a, b) => a * b))} images`);
  if (!(dropPrompt >= 0 && dropPrompt <= 1)) throw new Error(`train text-to-image: dropPrompt must be in [0, 1], got ${dropPrompt}`);
  const L = tokenizer.maxLength;
  const ids = prompts.map((p) => {
    const r = tokenizer.encodeWithInfo(p);
    if (r.truncated) throw new Error(`train text-to-image: "${p}" has ${r.tokenCount} tokens, more than the tokenizer's ${L - 2}: raise model_max_length`);
    return r.ids;
  });
  const empty = tokenizer.encode('');
  const [C, h, w] = latents.shape;
  const per = 2 * C * h * w;
  model.requireGrad();
  return {
    kind: 'text-to-image',
    model,
    size: N,
    describe: (b) => b.indices.map((k) => JSON.stringify(prompts[k])).join(', '),
    loss: async (b: Batch) => tidy(() => {
      const rand = seededRandom(b.seed);
      const B = b.indices.length;
      const moments = new Float32Array(B * per);
      b.indices.forEach((k, i) => moments.set(latents.moments.subarray(k * per, (k + 1) * per), i * per));
      const [mean, logvar] = [0, 1].map((half) => {
        const part = new Float32Array(B * C * h * w);
        for (let i = 0; i < B; i++) part.set(moments.subarray(i * per + half * C * h * w, i * per + (half + 1) * C * h * w), i * C * h * w);
        return Tensor.fromArray(part, [B, C, h, w]);
      }) as [Tensor, Tensor];
      const z = mul(add(mean, mul(exp(mul(logvar, 0.5)), randn([B, C, h, w], { seed: subSeed(b.seed, 1) }))), scalingFactor);
      const t = b.indices.map(() => Math.floor(rand() * ac.length));
      const noise = randn([B, C, h, w], { seed: subSeed(b.seed, 2) });
      const coefficient = (f: (a: number) => number) => Tensor.fromArray(Float32Array.from(t, (ti) => f(ac[ti]!)), [B, 1, 1, 1]);
      const noisy = add(mul(z, coefficient(Math.sqrt)), mul(noise, coefficient((a) => Math.sqrt(1 - a))));
      const dropped = b.indices.map(() => rand() < dropPrompt);
      const text = Int32Array.from(b.indices.flatMap((k, i) => (dropped[i] ? empty : ids[k]!)));
      const hidden = model.textEncoder.forward(Tensor.fromArray(text, [B, L], 'i32'));
      const capture = grounding && new AttentionCapture({ cross: true, mode: 'graph', resolutions: grounding.resolutions ?? [16, 8] });
      try {
        const prediction = model.unet.forward(noisy, t, hidden, { capture });
        let loss: Tensor;
        if (snrGamma === undefined) loss = mseLoss(prediction, noise);
        else {
          const weights = Tensor.fromArray(Float32Array.from(t, (ti) => Math.min(ac[ti]! / (1 - ac[ti]!), snrGamma) / (ac[ti]! / (1 - ac[ti]!))), [B]);
          loss = reduceMean(mul(reduceMean(mseLoss(prediction, noise, { reduction: 'none' }), [1, 2, 3]), weights));
        }
        const ground = capture && groundingLoss(capture.graphMaps(), b.indices.map((k, i) => (dropped[i] ? [] : grounding.targets[k]!)));
        return ground ? add(loss, mul(ground, grounding!.weight)) : loss;
      } finally {
        capture?.dispose();
      }
    }),
  };
}

export interface PipelineParts {
  unetConfig: Record<string, unknown>;
  textEncoderConfig: Record<string, unknown>;
  /** Weights by state-dict name under `unet.` and `text_encoder.` (e.g. the EMA's). */
  weights: Record<string, Tensor>;
  tokenizer: CLIPTokenizer;
  schedulerConfig?: Record<string, unknown>;
}

/**
 * Writes the trained parts of a diffusers Stable Diffusion folder (model_index.json, scheduler/, tokenizer/,
 * text_encoder/, unet/) next to an existing vae/, with diffusers' and transformers' file names and config
 * keys, so StableDiffusionPipeline.fromPretrained (ours and diffusers') reads it.
 */
export async function saveTextToImagePipeline(dir: string, { unetConfig, textEncoderConfig, weights, tokenizer, schedulerConfig = sdSchedulerConfig }: PipelineParts): Promise<void> {
  const fs = nodeFs(`saving a pipeline in ${dir}`);
  if (!fs.existsSync(`${dir}/vae/config.json`)) throw new Error(`${dir}/vae/config.json is missing: train the VAE first`);
  const json = (path: string, v: unknown) => writeFileAtomic(path, new TextEncoder().encode(`${JSON.stringify(v, null, 2)}\n`));
  const part = (prefix: string) => Object.fromEntries(Object.entries(weights).filter(([k]) => k.startsWith(prefix)).map(([k, t]) => [k.slice(prefix.length), t]));
  for (const sub of ['scheduler', 'text_encoder', 'unet']) fs.mkdirSync(`${dir}/${sub}`, { recursive: true });
  json(`${dir}/scheduler/scheduler_config.json`, schedulerConfig);
  tokenizer.save(`${dir}/tokenizer`);
  json(`${dir}/text_encoder/config.json`, textEncoderConfig);
  await saveSafetensors(`${dir}/text_encoder/model.safetensors`, part('text_encoder.'), { format: 'pt' });
  json(`${dir}/unet/config.json`, { _class_name: 'UNet2DConditionModel', _diffusers_version: '0.31.0', ...unetConfig });
  await saveSafetensors(`${dir}/unet/diffusion_pytorch_model.safetensors`, part('unet.'), { format: 'pt' });
  json(`${dir}/model_index.json`, {
    _class_name: 'StableDiffusionPipeline', _diffusers_version: '0.31.0', feature_extractor: [null, null], image_encoder: [null, null],
    requires_safety_checker: false, safety_checker: [null, null], scheduler: ['diffusers', String(schedulerConfig._class_name)],
    text_encoder: ['transformers', 'CLIPTextModel'], tokenizer: ['transformers', 'CLIPTokenizer'], unet: ['diffusers', 'UNet2DConditionModel'], vae: ['diffusers', 'AutoencoderKL'],
  });
}

/** The zoo's VAE: 64×64 RGB → 16×16×4 latents, 0.68 M parameters (4.3 s per step of 16 images on 2 cores). */
export const zooVaeConfig = {
  in_channels: 3, out_channels: 3, latent_channels: 4, block_out_channels: [16, 32, 64], layers_per_block: 1, norm_num_groups: 8,
  down_block_types: ['DownEncoderBlock2D', 'DownEncoderBlock2D', 'DownEncoderBlock2D'], up_block_types: ['UpDecoderBlock2D', 'UpDecoderBlock2D', 'UpDecoderBlock2D'],
};

/**
 * The zoo's text encoder and UNet. CLIP: the real 49408-token vocabulary, width 32 (its token table, 1.58 M
 * numbers, is most of the model: ShapeWorld's ~60 words need no more), 3 layers; positions for the longest
 * training prompt. UNet: [32, 64, 64] channels, cross-attention at 16×16 and 8×8 (and the 4×4 mid block),
 * about 1.5 M parameters (1.9 s per step of 16 latents on 2 cores).
 */
export function zooTextToImageConfigs(maxLength: number): { unet: Record<string, unknown>; textEncoder: Record<string, unknown> } {
  return {
    textEncoder: {
      architectures: ['CLIPTextModel'], model_type: 'clip_text_model', vocab_size: 49408, hidden_size: 32, intermediate_size: 128,
      num_hidden_layers: 3, num_attention_heads: 4, max_position_embeddings: maxLength, hidden_act: 'quick_gelu', layer_norm_eps: 1e-5,
      bos_token_id: 49406, eos_token_id: 49407, pad_token_id: 49407, projection_dim: 32, torch_dtype: 'float32',
    },
    unet: {
      sample_size: 16, in_channels: 4, out_channels: 4, block_out_channels: [32, 64, 64], layers_per_block: 1,
      down_block_types: ['CrossAttnDownBlock2D', 'CrossAttnDownBlock2D', 'DownBlock2D'], up_block_types: ['UpBlock2D', 'CrossAttnUpBlock2D', 'CrossAttnUpBlock2D'],
      attention_head_dim: 4, cross_attention_dim: 32, norm_num_groups: 16,
    },
  };
}
