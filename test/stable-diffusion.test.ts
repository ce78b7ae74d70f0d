// StableDiffusionPipeline: loading a diffusers folder (errors name the file, folder or key), and the guided
// DDIM loop against ../shared/conformance/ddim with a UNet stand-in that replays the recorded noise predictions
// (the real UNet2DConditionModel on ../unet plugs into the same test through `unet`).
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { assertRejects, assertClose, assertTensorClose, conformance, conformanceDir, randomArray } from './helpers.ts';
import { Tensor } from '../src/engine/tensor.ts';
import { concat } from '../src/kernels/shape.ts';
import { StableDiffusionPipeline, type UNetLike, type VaeLike } from '../src/models/stable_diffusion.ts';
import { CLIPTokenizer } from '../src/models/clip_tokenizer.ts';
import { CLIPTextModel, clipTextConfig } from '../src/models/clip_text_model.ts';
import { DDIMScheduler, DPMSolverMultistepScheduler, EulerDiscreteScheduler } from '../src/models/schedulers.ts';
import { UNet2DConditionModel } from '../src/models/unet_2d_condition.ts';
import { AutoencoderKL } from '../src/models/autoencoder_kl.ts';
import { generateSingleObject } from '../src/pipeline/single_object.ts';
import type { AttentionRecord, UNetPlace } from '../src/pipeline/attention_mask.ts';

const fs = process.getBuiltinModule('node:fs');
const os = process.getBuiltinModule('node:os');
const path = process.getBuiltinModule('node:path');

const io = conformance('ddim');

/** Stands in for the UNet: checks its inputs against the reference run and returns [ε, ε] with ε the recorded guided prediction. */
class ReplayUNet implements UNetLike {
  calls: { t: number; batch: number }[] = [];
  forward(sample: Tensor, timestep: number, encoderHiddenStates: Tensor): Tensor {
    const i = this.calls.length;
    this.calls.push({ t: timestep, batch: sample.shape[0]! });
    assert.equal([...encoderHiddenStates.shape], [2, 7, 32]);
    const eps = io.get(`step${i}.noise_pred`);
    const out = concat([eps, eps], 0);
    eps.dispose();
    return out;
  }
}

class IdentityVae implements VaeLike {
  decode(latents: Tensor): Tensor {
    return latents.alias();
  }
}

const tinyText = { vocab_size: 49408, hidden_size: 8, intermediate_size: 16, num_hidden_layers: 1, num_attention_heads: 2, max_position_embeddings: 77, hidden_act: 'quick_gelu', eos_token_id: 2 };

async function pipelineWith(unet: UNetLike): Promise<StableDiffusionPipeline> {
  const textEncoder = new CLIPTextModel(clipTextConfig(tinyText));
  let seed = 3;
  for (const t of Object.values(textEncoder.stateDict())) t.copyFrom(Tensor.fromArray(randomArray(t.size, seed++), t.shape));
  return new StableDiffusionPipeline({
    tokenizer: await CLIPTokenizer.fromPretrained(), textEncoder, unet, vae: new IdentityVae(),
    scheduler: DDIMScheduler.fromPretrained(`${conformanceDir}/ddim`), vaeScalingFactor: 0.18215, vaeScaleFactor: 8, latentChannels: 4, sampleSize: 16,
  });
}

test('pipeline: guided DDIM loop reproduces the conformance latents (UNet replaying the recorded predictions)', async () => {
  const unet = new ReplayUNet();
  const pipe = await pipelineWith(unet);
  const seen: number[] = [];
  const cond = io.get('cond');
  const uncond = io.get('uncond');
  const latents = pipe.sample({
    promptEmbeds: cond, negativePromptEmbeds: uncond, latents: io.get('init_latents'), numInferenceSteps: 4, guidanceScale: 7.5,
    onStep: (i, t) => seen.push(t),
  });
  assert.equal(unet.calls, [751, 501, 251, 1].map((t) => ({ t, batch: 2 })));
  assert.equal(seen, [751, 501, 251, 1]);
  await assertTensorClose(latents, io.get('step3.latents'), 2e-3, 'final latents');
  const images = pipe.decodeLatents(latents);
  const l = await latents.toArray();
  assertClose(await images.toArray(), Array.from(l, (v) => Math.min(1, Math.max(0, v / 0.18215 / 2 + 0.5))), 1e-5, 'decoded');
});

test('pipeline: guided DDIM run with the real UNet2DConditionModel of ../unet reproduces every step of the reference', async () => {
  const model = UNet2DConditionModel.fromPretrained(`${conformanceDir}/unet`);
  const guided: Promise<void>[] = [];
  let step = 0;
  // records each call's guided prediction eps_u + 7.5 (eps_c - eps_u) and compares it with the reference's
  const unet: UNetLike = {
    forward: (sample, timestep, text) => {
      const out = model.forward(sample, timestep, text);
      const i = step++;
      const copy = out.alias();
      guided.push(copy.toArray().then(async (v) => {
        const n = v.length / 2;
        const eps = Float32Array.from({ length: n }, (_, j) => v[j]! + 7.5 * (v[n + j]! - v[j]!));
        const want = io.get(`step${i}.noise_pred`);
        assertClose(eps, await want.toArray(), 2e-3, `step ${i} noise prediction`);
        want.dispose();
        copy.dispose();
      }));
      return out;
    },
  };
  const pipe = await pipelineWith(unet);
  const latents = pipe.sample({
    promptEmbeds: io.get('cond'), negativePromptEmbeds: io.get('uncond'), latents: io.get('init_latents'), numInferenceSteps: 4, guidanceScale: 7.5,
  });
  await Promise.all(guided);
  assert.is(step, 4);
  await assertTensorClose(latents, io.get('step3.latents'), 2e-3, 'final latents');
  latents.dispose();
  model.dispose();
});

/** Bilinear resize of a row-major [h, w] map to [H, W], PyTorch's alignCorners false: src = (dst + ½)·in/out − ½, clamped at 0. */
function bilinearCpu(map: Float64Array, [h, w]: [number, number], [H, W]: [number, number]): Float64Array {
  const axis = (o: number, n: number, N: number): [number, number, number] => {
    const src = Math.max((o + 0.5) * (n / N) - 0.5, 0);
    const i0 = Math.min(Math.floor(src), n - 1);
    return [i0, Math.min(i0 + 1, n - 1), src - i0];
  };
  const out = new Float64Array(H * W);
  for (let y = 0; y < H; y++) {
    const [y0, y1, fy] = axis(y, h, H);
    for (let x = 0; x < W; x++) {
      const [x0, x1, fx] = axis(x, w, W);
      const at = (yy: number, xx: number) => map[yy * w + xx]!;
      out[y * W + x] = (1 - fy) * ((1 - fx) * at(y0, x0) + fx * at(y0, x1)) + fy * ((1 - fx) * at(y1, x0) + fx * at(y1, x1));
    }
  }
  return out;
}

/**
 * The class heat map from attention records by the definitions (attention_mask.ts's file comment), in float64 on
 * the CPU: the tokens' cross-attention at each chosen resolution, averaged over layers (places), heads and
 * tokens, resized to the self-attention grid and divided by its maximum; averaged over resolutions; multiplied
 * τ times by the self-attention matrix (averaged over layers and heads); resized to the image; min–max normalised.
 * Also gives the map's range before the normalisation.
 */
async function heatMapCpu(
  records: readonly AttentionRecord[], tokens: readonly number[], image: [number, number],
  cfg: { crossResolutions: number[]; places: UNetPlace[]; selfAttention: { resolution: number; tau: number } },
): Promise<{ heat: Float64Array; range: number }> {
  const pick = (kind: 'cross' | 'self', height: number) => records.filter((r) => r.kind === kind && r.height === height && cfg.places.includes(r.place));
  /** Mean over records and heads of probs [heads, rows, cols]: [rows · cols]. */
  const meanProbs = async (recs: AttentionRecord[]) => {
    assert.ok(recs.length > 0, 'records to average');
    const [, rows, cols] = recs[0]!.probs.shape as [number, number, number];
    const acc = new Float64Array(rows * cols);
    let maps = 0;
    for (const r of recs) {
      const p = await r.probs.toArray();
      const heads = r.probs.shape[0]!;
      for (let i = 0; i < heads * rows * cols; i++) acc[i % (rows * cols)]! += p[i]!;
      maps += heads;
    }
    return { rows, cols, mean: acc.map((v) => v / maps) };
  };
  const selfRecs = pick('self', cfg.selfAttention.resolution);
  const grid: [number, number] = [selfRecs[0]!.height, selfRecs[0]!.width];
  let heat = new Float64Array(grid[0] * grid[1]);
  for (const res of cfg.crossResolutions) {
    const recs = pick('cross', res);
    const { rows, cols, mean } = await meanProbs(recs);
    const tokenMap = Float64Array.from({ length: rows }, (_, q) => tokens.reduce((a, t) => a + mean[q * cols + t]!, 0) / tokens.length);
    const up = bilinearCpu(tokenMap, [res, recs[0]!.width], grid);
    const top = Math.max(...up);
    up.forEach((v, i) => (heat[i]! += v / (top + 1e-12) / cfg.crossResolutions.length));
  }
  const { mean: A } = await meanProbs(selfRecs);
  const n = grid[0] * grid[1];
  for (let k = 0; k < cfg.selfAttention.tau; k++) {
    const v = heat;
    heat = Float64Array.from({ length: n }, (_, i) => {
      let s = 0;
      for (let j = 0; j < n; j++) s += A[i * n + j]! * v[j]!;
      return s;
    });
  }
  const full = bilinearCpu(heat, grid, image);
  const [lo, hi] = [Math.min(...full), Math.max(...full)];
  return { heat: full.map((v) => (v - lo) / (hi - lo + 1e-12)), range: hi - lo };
}

test('generateSingleObject: the real UNet and VAE, attention captured per layer, mask thresholded from the class heat map', async () => {
  const textEncoder = new CLIPTextModel(clipTextConfig({ ...tinyText, hidden_size: 32, intermediate_size: 64 }));
  let seed = 40;
  for (const t of Object.values(textEncoder.stateDict())) t.copyFrom(Tensor.fromArray(randomArray(t.size, seed++), t.shape));
  const pipe = new StableDiffusionPipeline({
    tokenizer: await CLIPTokenizer.fromPretrained(), textEncoder, unet: UNet2DConditionModel.fromPretrained(`${conformanceDir}/unet`),
    vae: AutoencoderKL.fromPretrained(`${conformanceDir}/vae`), scheduler: DDIMScheduler.fromPretrained(`${conformanceDir}/ddim`),
    vaeScalingFactor: 0.18215, vaeScaleFactor: 2, latentChannels: 4, sampleSize: 16,
  });
  const preset = { crossResolutions: [8], places: ['down', 'mid', 'up'] as UNetPlace[], selfAttention: { resolution: 16, tau: 2 }, normalise: 'minmax' as const, threshold: { kind: 'fixed' as const, value: 0.6, uncertainFrom: 0.5 } };
  const r = await generateSingleObject(pipe, 'potted plant', { seed: 2, numInferenceSteps: 3, mask: preset, classId: 16, keepRecords: true });
  assert.is(r.prompt, 'a photo of a potted plant');
  assert.equal([...r.image.shape], [1, 3, 32, 32]);
  assert.is(r.heat.length, 32 * 32);
  // min–max normalised: spans [0, 1]; the mask is the preset's rule applied to it, pixel by pixel
  assert.ok(Math.abs(Math.min(...r.heat)) < 1e-6 && Math.abs(Math.max(...r.heat) - 1) < 1e-6, 'heat map normalised to [0, 1]');
  const expected = Uint8Array.from(r.heat, (h) => (h >= 0.6 ? 16 : h >= 0.5 ? 255 : 0));
  assert.equal([...r.mask], [...expected]);
  assert.ok(expected.includes(16) && expected.includes(0), 'both object and background present');
  // the heat map is the preset's maths on the captured probabilities: the same in float64 on the CPU. Before the
  // normalisation the two agree to f32 rounding (4e-7 measured, values ≈ 0.73); min–max then divides by the
  // map's range, only ≈ 1.1e-3 here (two self-attention steps of this random UNet flatten the map), which
  // magnifies that rounding ≈ 900× (4e-4 measured). So the tolerance is 1e-6 in the map's own units: 1e-6 / range.
  const records = r.records!;
  assert.equal(new Set(records.map((x) => `${x.kind}:${x.height}`)), new Set(['cross:16', 'cross:8', 'self:16', 'self:8']), 'cross and self records at both levels');
  const tokens = pipe.tokenizer.tokenSpans(r.prompt, 'potted plant').flat();
  const cpu = await heatMapCpu(records, tokens, [32, 32], preset);
  assertClose(r.heat, cpu.heat, 1e-6 / cpu.range, `heat map against the CPU computation from the captured attention (range ${cpu.range} before normalising)`);
  for (const x of records) x.probs.dispose();
  r.image.dispose();
});

test('pipeline: prompts are tokenized to 77 ids and encoded; guidance off runs one UNet pass per step', async () => {
  const calls: number[] = [];
  const unet: UNetLike = { forward: (sample) => (calls.push(sample.shape[0]!), Tensor.zeros(sample.shape)) };
  const pipe = await pipelineWith(unet);
  const embeds = pipe.encodePrompt(['a photo of a cat', 'a dog']);
  assert.equal([...embeds.shape], [2, 77, 8]);
  const direct = pipe.textEncoder.forward([pipe.tokenizer.encode('a photo of a cat'), pipe.tokenizer.encode('a dog')]);
  assertClose(await embeds.toArray(), await direct.toArray(), 0, 'encodePrompt');
  const latents = pipe.sample({ promptEmbeds: embeds, guidanceScale: 1, numInferenceSteps: 3, seed: 5, height: 32, width: 24 });
  assert.equal([...latents.shape], [2, 4, 4, 3]);
  assert.equal(calls, [2, 2, 2]);
  assert.throws(() => pipe.sample({ promptEmbeds: embeds, numInferenceSteps: 2 }), /give `latents` or a `seed`/);
  assert.throws(() => pipe.sample({ promptEmbeds: embeds, numInferenceSteps: 2, seed: 1, height: 30 }), /multiples of 8/);
  // the default size is sample_size (an int or [height, width]) latents
  const pair = new StableDiffusionPipeline({ ...pipe, sampleSize: [2, 3] });
  const byDefault = pair.sample({ promptEmbeds: embeds, guidanceScale: 1, numInferenceSteps: 1, seed: 5 });
  assert.equal([...byDefault.shape], [2, 4, 2, 3]);
  byDefault.dispose();
  const { images } = pipe.generate(['a cat'], { guidanceScale: 3, numInferenceSteps: 2, seed: 1 });
  assert.equal([...images.shape], [1, 4, 16, 16]);
});

// ---------------------------------------------------------------- loading a diffusers folder

/** A pipeline folder: tiny CLIP text model, the shipped BPE, the conformance DDIM config, stub unet/vae configs. */
async function pipelineFolder(): Promise<string> {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'freemask-sd-'));
  const sub = (name: string) => (fs.mkdirSync(`${dir}/${name}`), `${dir}/${name}`);
  fs.writeFileSync(`${dir}/model_index.json`, JSON.stringify({
    _class_name: 'StableDiffusionPipeline', text_encoder: ['transformers', 'CLIPTextModel'], tokenizer: ['transformers', 'CLIPTokenizer'],
    unet: ['diffusers', 'UNet2DConditionModel'], vae: ['diffusers', 'AutoencoderKL'], scheduler: ['diffusers', 'PNDMScheduler'],
    safety_checker: [null, null], feature_extractor: [null, null],
  }));
  fs.copyFileSync(`${conformanceDir}/clip_tokenizer/bpe_simple_vocab_16e6.txt.gz`, `${sub('tokenizer')}/bpe_simple_vocab_16e6.txt.gz`);
  const te = sub('text_encoder');
  fs.copyFileSync(`${conformanceDir}/clip_text/config.json`, `${te}/config.json`);
  fs.copyFileSync(`${conformanceDir}/clip_text/model.safetensors`, `${te}/model.fp16.safetensors`);
  fs.copyFileSync(`${conformanceDir}/ddim/config.json`, `${sub('scheduler')}/scheduler_config.json`);
  fs.writeFileSync(`${sub('unet')}/config.json`, JSON.stringify({ in_channels: 4, sample_size: [8, 12] }));
  fs.writeFileSync(`${sub('vae')}/config.json`, JSON.stringify({ block_out_channels: [4, 8, 8], scaling_factor: 0.13025 }));
  return dir;
}

const loaders = {
  onWarning: () => {},
  unet: { fromPretrained: (dir: string): UNetLike => (assert.ok(dir.endsWith('/unet')), new ReplayUNet()) },
  vae: { fromPretrained: async (dir: string): Promise<VaeLike> => (assert.ok(dir.endsWith('/vae')), new IdentityVae()) },
};

test('pipeline: fromPretrained reads model_index.json and the five subfolders (fp16 weights, scheduler choice)', async () => {
  const dir = await pipelineFolder();
  const warnings: string[] = [];
  const pipe = await StableDiffusionPipeline.fromPretrained(dir, { ...loaders, variant: 'fp16', onWarning: (m) => warnings.push(m) });
  assert.ok(pipe.scheduler instanceof DDIMScheduler);
  assert.is(warnings.length, 1);
  assert.match(warnings[0]!, /PNDMScheduler is not implemented; sampling with DDIMScheduler/);
  assert.is(pipe.vaeScalingFactor, 0.13025);
  assert.is(pipe.vaeScaleFactor, 4);
  assert.equal(pipe.sampleSize, [8, 12]); // sample_size as a pair [height, width]
  assert.is(pipe.latentChannels, 4);
  assert.is(pipe.textEncoder.config.hiddenSize, 32);
  assert.equal(pipe.tokenizer.encode('a photo of a cat').slice(0, 7), [49406, 320, 1125, 539, 320, 2368, 49407]);
  const euler = await StableDiffusionPipeline.fromPretrained(dir, { ...loaders, scheduler: 'EulerDiscreteScheduler' });
  assert.ok(euler.scheduler instanceof EulerDiscreteScheduler);
  const index = JSON.parse(fs.readFileSync(`${dir}/model_index.json`, 'utf8'));
  fs.writeFileSync(`${dir}/model_index.json`, JSON.stringify({ ...index, scheduler: ['diffusers', 'DPMSolverMultistepScheduler'] }));
  assert.ok((await StableDiffusionPipeline.fromPretrained(dir, loaders)).scheduler instanceof DPMSolverMultistepScheduler);
});

test('pipeline: dtype f16 reaches the text encoder, UNet and VAE loaders', async () => {
  const dir = await pipelineFolder();
  const seen: unknown[] = [];
  const pipe = await StableDiffusionPipeline.fromPretrained(dir, {
    ...loaders,
    dtype: 'f16',
    unet: { fromPretrained: (_dir, options) => (seen.push(options?.dtype), new ReplayUNet()) },
    vae: { fromPretrained: (_dir, options) => (seen.push(options?.dtype), new IdentityVae()) },
  });
  assert.equal(seen, ['f16', 'f16']);
  const weights = pipe.textEncoder.stateDict();
  assert.is(weights['text_model.encoder.layers.0.self_attn.q_proj.weight']!.dtype, 'f16');
  assert.is(weights['text_model.encoder.layers.0.self_attn.q_proj.bias']!.dtype, 'f32');
});

test('pipeline: a missing model_index.json, key, subfolder, config key or weights file is named', async () => {
  const empty = fs.mkdtempSync(path.join(os.tmpdir(), 'freemask-sd-'));
  await assertRejects(StableDiffusionPipeline.fromPretrained(empty), /pass the model classes, \{ unet: UNet2DConditionModel, vae: AutoencoderKL \}/);
  await assertRejects(StableDiffusionPipeline.fromPretrained(empty, loaders), /model_index\.json is missing \(not a diffusers pipeline folder\)/);

  const noKey = await pipelineFolder();
  const index = JSON.parse(fs.readFileSync(`${noKey}/model_index.json`, 'utf8'));
  delete index.unet;
  fs.writeFileSync(`${noKey}/model_index.json`, JSON.stringify(index));
  await assertRejects(StableDiffusionPipeline.fromPretrained(noKey, loaders), /model_index\.json: missing key "unet"/);

  const noVae = await pipelineFolder();
  fs.rmSync(`${noVae}/vae`, { recursive: true });
  await assertRejects(StableDiffusionPipeline.fromPretrained(noVae, loaders), /the vae folder is missing \(model_index\.json lists AutoencoderKL\)/);

  const badInChannels = await pipelineFolder();
  fs.writeFileSync(`${badInChannels}/unet/config.json`, JSON.stringify({ in_channels: 0, sample_size: 8 }));
  await assertRejects(StableDiffusionPipeline.fromPretrained(badInChannels, loaders), /unet\/config\.json: "in_channels" must be an integer >= 1, got 0/);

  const noWeights = await pipelineFolder();
  fs.unlinkSync(`${noWeights}/text_encoder/model.fp16.safetensors`);
  await assertRejects(StableDiffusionPipeline.fromPretrained(noWeights, loaders), /text_encoder: no weights file, looked for model\.safetensors, model\.fp16\.safetensors/);

  const noSchedulerKey = await pipelineFolder();
  fs.writeFileSync(`${noSchedulerKey}/scheduler/scheduler_config.json`, JSON.stringify({ num_train_timesteps: 1000, beta_start: 0.00085, beta_end: 0.012 }));
  await assertRejects(StableDiffusionPipeline.fromPretrained(noSchedulerKey, loaders), /scheduler_config\.json: missing key "beta_schedule"/);
});

test.run();
