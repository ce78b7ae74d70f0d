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
import { add, exp, mul } from '../kernels/elementwise.ts';
import { mseLoss } from '../kernels/loss.ts';
import { mean as reduceMean } from '../kernels/reduce.ts';
import { randn } from '../kernels/random.ts';
import { concat } from '../kernels/shape.ts';
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
}

/** The trainer's task: `prompts[i]` describes the image whose posterior is `latents` sample i. */
export function textToImageTask(model: TextToImageModel, tokenizer: CLIPTokenizer, prompts: readonly string[], latents: LatentCache, o: TextToImageOptions): TrainTask {
  const { scalingFactor, alphasCumprod: ac, dropPrompt = 0.1, snrGamma } = o;
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
      const text = Int32Array.from(b.indices.flatMap((k) => (rand() < dropPrompt ? empty : ids[k]!)));
      const hidden = model.textEncoder.forward(Tensor.fromArray(text, [B, L], 'i32'));
      const prediction = model.unet.forward(noisy, t, hidden);
      if (snrGamma === undefined) return mseLoss(prediction, noise);
      const weights = Tensor.fromArray(Float32Array.from(t, (ti) => Math.min(ac[ti]! / (1 - ac[ti]!), snrGamma) / (ac[ti]! / (1 - ac[ti]!))), [B]);
      return reduceMean(mul(reduceMean(mseLoss(prediction, noise, { reduction: 'none' }), [1, 2, 3]), weights));
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
