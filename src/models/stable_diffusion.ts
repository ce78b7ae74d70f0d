// Stable Diffusion (1.x / 2.x) text-to-image: a diffusers pipeline folder loaded component by component, the
// prompt encoding, the classifier-free-guided sampling loop and the latent decoding. The UNet and VAE are
// reached through small interfaces, so that any implementation with diffusers' call shapes plugs in.

import { Tensor, keep, tidy } from '../engine/tensor.ts';
import { affine, clamp } from '../kernels/elementwise.ts';
import { concat } from '../kernels/shape.ts';
import { randn } from '../kernels/random.ts';
import { CLIPTokenizer } from './clip_tokenizer.ts';
import { CLIPTextModel } from './clip_text_model.ts';
import {
  DDIMScheduler, DPMSolverMultistepScheduler, EulerDiscreteScheduler, type NoiseScheduler, classifierFreeGuidance,
} from './schedulers.ts';
import { ConfigReader, fileExists, joinPath, readJson } from './pretrained.ts';

/** What the sampling loop needs of a UNet: diffusers' UNet2DConditionModel call. */
export interface UNetLike {
  /** Noise (or v) prediction for `sample` [B, C, h, w] at `timestep`, conditioned on text states [B, L, D]. */
  forward(sample: Tensor, timestep: number, encoderHiddenStates: Tensor, options?: object): Tensor;
}

/** What decoding needs of a VAE: diffusers' AutoencoderKL.decode, latents → image in [-1, 1]. */
export interface VaeLike {
  decode(latents: Tensor): Tensor;
}

/** A model class with `fromPretrained(dir)` (sync or async), e.g. UNet2DConditionModel. */
export interface PretrainedLoader<M> {
  fromPretrained(dir: string, options?: { variant?: 'fp16'; dtype?: 'f32' | 'f16' }): M | Promise<M>;
}

export type SchedulerName = 'DDIMScheduler' | 'EulerDiscreteScheduler' | 'DPMSolverMultistepScheduler';
/** The samplers by diffusers class name (model_index.json's scheduler entry). */
export const SCHEDULERS: Record<SchedulerName, { fromPretrained(dir: string): NoiseScheduler }> = {
  DDIMScheduler, EulerDiscreteScheduler, DPMSolverMultistepScheduler,
};

export interface StableDiffusionComponents {
  tokenizer: CLIPTokenizer;
  textEncoder: CLIPTextModel;
  unet: UNetLike;
  vae: VaeLike;
  scheduler: NoiseScheduler;
  /** vae/config.json `scaling_factor` (0.18215 for SD 1.x/2.x): latents = VAE latent · scalingFactor. */
  vaeScalingFactor: number;
  /** Pixels per latent: 2^(len(vae block_out_channels) − 1) = 8. */
  vaeScaleFactor: number;
  /** unet/config.json `in_channels` (4). */
  latentChannels: number;
  /**
   * unet/config.json `sample_size` (64 for SD 1.5, 96 for SD 2.x 768): the default latent size, an int or
   * [height, width].
   */
  sampleSize: number | readonly [number, number];
}

export interface StableDiffusionLoadOptions {
  /** The UNet class (UNet2DConditionModel). */
  unet?: PretrainedLoader<UNetLike>;
  /** The VAE class (AutoencoderKL). */
  vae?: PretrainedLoader<VaeLike>;
  /** 'fp16': prefer the `*.fp16.safetensors` weights (converted to f32 on load). */
  variant?: 'fp16';
  /**
   * Weight storage of the text encoder, UNet and VAE: 'f16' keeps their Linear/Conv weights in f16 on the GPU
   * (half the memory; compute stays f32; inference only). Default 'f32'.
   */
  dtype?: 'f32' | 'f16';
  /** Sampler to use instead of the one model_index.json names. */
  scheduler?: SchedulerName;
  /** Where notes about the load go (an unsupported scheduler replaced by DDIM); console.warn by default. */
  onWarning?: (message: string) => void;
}

export interface SampleOptions {
  /** Text states [B, 77, D] of the prompts (`encodePrompt`). */
  promptEmbeds: Tensor;
  /** Text states of the negative prompts; the empty prompt's when omitted (and guidance is on). */
  negativePromptEmbeds?: Tensor;
  numInferenceSteps?: number;
  /** Classifier-free guidance scale; guidance is off at 1 or below (one UNet pass per step). */
  guidanceScale?: number;
  /** Initial latents [B, C, h, w] (multiplied by the scheduler's initNoiseSigma, as diffusers does); else drawn from `seed`. */
  latents?: Tensor;
  seed?: number;
  /** Image size in pixels (multiples of vaeScaleFactor); sampleSize · vaeScaleFactor by default. */
  height?: number;
  width?: number;
  /** Passed to every unet.forward call (e.g. attention capture). */
  unetOptions?: object;
  /** Called after every step with its index, timestep and the new latents (do not dispose them). */
  onStep?: (index: number, timestep: number, latents: Tensor) => void;
}

export class StableDiffusionPipeline implements StableDiffusionComponents {
  readonly tokenizer: CLIPTokenizer;
  readonly textEncoder: CLIPTextModel;
  readonly unet: UNetLike;
  readonly vae: VaeLike;
  scheduler: NoiseScheduler;
  readonly vaeScalingFactor: number;
  readonly vaeScaleFactor: number;
  readonly latentChannels: number;
  /** The default latent size [height, width]. */
  readonly sampleSize: readonly [number, number];

  constructor(c: StableDiffusionComponents) {
    this.tokenizer = c.tokenizer;
    this.textEncoder = c.textEncoder;
    this.unet = c.unet;
    this.vae = c.vae;
    this.scheduler = c.scheduler;
    this.vaeScalingFactor = c.vaeScalingFactor;
    this.vaeScaleFactor = c.vaeScaleFactor;
    this.latentChannels = c.latentChannels;
    this.sampleSize = typeof c.sampleSize === 'number' ? [c.sampleSize, c.sampleSize] : c.sampleSize;
  }

  /**
   * A diffusers pipeline folder: `model_index.json` and the subfolders `tokenizer`, `text_encoder`, `unet`,
   * `vae`, `scheduler`, each with its config and (fp16 variant) safetensors weights. Errors name the missing
   * file, folder or key.
   */
  static async fromPretrained(dir: string, options: StableDiffusionLoadOptions = {}): Promise<StableDiffusionPipeline> {
    const { unet: unetClass, vae: vaeClass } = options;
    if (!unetClass || !vaeClass) throw new Error('StableDiffusionPipeline.fromPretrained: pass the model classes, { unet: UNet2DConditionModel, vae: AutoencoderKL }');
    const indexPath = joinPath(dir, 'model_index.json');
    if (!fileExists(indexPath)) throw new Error(`${dir}: model_index.json is missing (not a diffusers pipeline folder)`);
    const index = readJson(indexPath);
    const folder = (name: string) => {
      const entry = index[name];
      if (!Array.isArray(entry) || entry.length !== 2 || entry.some((v) => typeof v !== 'string')) {
        throw new Error(`${indexPath}: missing key "${name}" (expected ["library", "ClassName"], got ${JSON.stringify(entry)})`);
      }
      const sub = joinPath(dir, name);
      if (!fileExists(sub)) throw new Error(`${dir}: the ${name} folder is missing (model_index.json lists ${entry[1]})`);
      return { path: sub, className: entry[1] as string };
    };
    const parts = {
      tokenizer: folder('tokenizer'), textEncoder: folder('text_encoder'), unet: folder('unet'), vae: folder('vae'), scheduler: folder('scheduler'),
    };
    const unetConfig = new ConfigReader(readJson(joinPath(parts.unet.path, 'config.json')), joinPath(parts.unet.path, 'config.json'));
    const vaeConfig = new ConfigReader(readJson(joinPath(parts.vae.path, 'config.json')), joinPath(parts.vae.path, 'config.json'));
    const vaeBlocks = vaeConfig.ints('block_out_channels', [64]);

    let schedulerName = options.scheduler ?? parts.scheduler.className;
    if (!(schedulerName in SCHEDULERS)) {
      (options.onWarning ?? console.warn)(`${parts.scheduler.path}: ${schedulerName} is not implemented; sampling with DDIMScheduler from the same config (choose with the 'scheduler' option: ${Object.keys(SCHEDULERS).join(', ')})`);
      schedulerName = 'DDIMScheduler';
    }
    const { variant, dtype } = options;
    const tokenizer = await CLIPTokenizer.fromPretrained(parts.tokenizer.path);
    const textEncoder = CLIPTextModel.fromPretrained(parts.textEncoder.path, { variant, dtype });
    const scheduler = SCHEDULERS[schedulerName as SchedulerName].fromPretrained(parts.scheduler.path);
    const unet = await unetClass.fromPretrained(parts.unet.path, { variant, dtype });
    const vae = await vaeClass.fromPretrained(parts.vae.path, { variant, dtype });
    return new StableDiffusionPipeline({
      tokenizer, textEncoder, unet, vae, scheduler,
      vaeScalingFactor: vaeConfig.number('scaling_factor', 0.18215),
      vaeScaleFactor: 2 ** (vaeBlocks.length - 1),
      latentChannels: unetConfig.int('in_channels', 4, 1),
      sampleSize: unetConfig.intOrPair('sample_size', 64),
    });
  }

  /** Text states [B, 77, D] of the prompts (truncation of long prompts is announced by the tokenizer). */
  encodePrompt(prompts: readonly string[], { clipSkip = 0 }: { clipSkip?: number } = {}): Tensor {
    if (prompts.length === 0) throw new Error('encodePrompt: no prompts');
    return this.textEncoder.forward(prompts.map((p) => this.tokenizer.encode(p)), { clipSkip });
  }

  /** The denoising loop (diffusers' StableDiffusionPipeline.__call__ up to the VAE); returns the final latents. */
  sample(o: SampleOptions): Tensor {
    const { promptEmbeds, numInferenceSteps = 50, guidanceScale = 7.5 } = o;
    const B = promptEmbeds.shape[0]!;
    const guided = guidanceScale > 1;
    const s = this.scheduler;
    s.setTimesteps(numInferenceSteps);
    const [text, start] = tidy(() => {
      let text = promptEmbeds;
      if (guided) {
        const negative = o.negativePromptEmbeds ?? this.encodePrompt(Array(B).fill(''));
        if (negative.shape.some((d, k) => d !== promptEmbeds.shape[k])) {
          throw new Error(`sample: negativePromptEmbeds ${negative} and promptEmbeds ${promptEmbeds} must have the same shape`);
        }
        text = concat([negative, promptEmbeds], 0);
      }
      return [text.alias(), affine(o.latents ?? this.#noise(B, o), s.initNoiseSigma)];
    });
    if (start.shape[0] !== B) throw new Error(`sample: latents ${start} and promptEmbeds ${promptEmbeds} have different batch sizes`);
    let latents = start;
    try {
      for (const [i, t] of s.timesteps.entries()) {
        const next = tidy(() => {
          const input = s.scaleModelInput(guided ? concat([latents, latents], 0) : latents, t);
          const prediction = this.unet.forward(input, t, text, o.unetOptions);
          return s.step(guided ? classifierFreeGuidance(prediction, guidanceScale) : prediction, t, latents);
        });
        latents.dispose();
        latents = keep(next);
        o.onStep?.(i, t, latents);
      }
    } catch (e) {
      latents.dispose();
      throw e;
    } finally {
      text.dispose();
    }
    return latents;
  }

  /** Images [B, 3, H, W] in [0, 1] from latents (through vae.decode). */
  decodeLatents(latents: Tensor): Tensor {
    return tidy(() => clamp(affine(this.vae.decode(affine(latents, 1 / this.vaeScalingFactor)), 0.5, 0.5), 0, 1));
  }

  /** Prompts → images [B, 3, H, W] in [0, 1] and the final latents. */
  generate(prompts: readonly string[], options: Omit<SampleOptions, 'promptEmbeds' | 'negativePromptEmbeds'> & { negativePrompts?: readonly string[]; clipSkip?: number } = {}): { images: Tensor; latents: Tensor } {
    const { negativePrompts, clipSkip, ...rest } = options;
    const promptEmbeds = this.encodePrompt(prompts, { clipSkip });
    const negativePromptEmbeds = negativePrompts ? this.encodePrompt(negativePrompts, { clipSkip }) : undefined;
    try {
      const latents = this.sample({ ...rest, promptEmbeds, negativePromptEmbeds });
      return { latents, images: this.decodeLatents(latents) };
    } finally {
      promptEmbeds.dispose();
      negativePromptEmbeds?.dispose();
    }
  }

  #noise(batch: number, o: SampleOptions): Tensor {
    const f = this.vaeScaleFactor;
    const height = o.height ?? this.sampleSize[0] * f;
    const width = o.width ?? this.sampleSize[1] * f;
    if (height % f || width % f) throw new Error(`sample: height ${height} and width ${width} must be multiples of ${f}`);
    if (o.seed === undefined) throw new Error('sample: give `latents` or a `seed` for the initial noise');
    return randn([batch, this.latentChannels, height / f, width / f], { seed: o.seed });
  }
}
