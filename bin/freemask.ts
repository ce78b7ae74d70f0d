#!/usr/bin/env -S node --import tsx
// freemask command line. `demo`: acquire the device, run a few kernels (forward and backward), report the
// adapter, results and timings, and write a ShapeWorld contact sheet. `world`: write a ShapeWorld dataset.
// `eval`: metrics of a prediction folder against a truth folder. `train-segmenter` / `eval-segmenter`:
// train a Mask2Former on a VOC-layout folder (checkpoints resumable) and measure it.
import { cpus as osCpus } from 'node:os';
import { parseArgs } from 'node:util';
import { createHash } from 'node:crypto';
import { copyFileSync, existsSync, mkdirSync, readFileSync, readdirSync, statSync, writeFileSync } from 'node:fs';
import { skipInit } from '../src/nn/layers.ts';
import { deviceInfo, getDevice } from '../src/engine/device.ts';
import { backward } from '../src/engine/autograd.ts';
import { memoryStats, Tensor, tidy } from '../src/engine/tensor.ts';
import { sync } from '../src/engine/queue.ts';
import * as F from '../src/index.ts';
import { writeWorldDataset } from '../src/data/dataset.ts';
import { evaluateFolders, formatEvalTable } from '../src/metrics/evaluate.ts';
import { writeWorldContactSheet } from '../src/world/contact.ts';
import type { Split } from '../src/world/splits.ts';
import type { WorldMode } from '../src/world/scene.ts';

const [command = 'demo', ...args] = process.argv.slice(2);
/** The boolean flags given (--resume, --overwrite), set by `flags`. */
const switches = new Set<string>();
/** The words given besides options, for commands that take them (`merge DIR...`). */
const givenPositionals: string[] = [];

/**
 * The command's `--name value` options (util.parseArgs), each described in `options` (help text with its default),
 * and its boolean `switchOptions`. `--config FILE` reads a JSON object of the same options (the command line wins);
 * `--help` prints them and exits. Throws, naming the argument, on an unknown option, a stray word or a missing value.
 */
function flags(options: Record<string, string>, switchOptions: Record<string, string> = {}, positional?: string): Record<string, string> {
  // --config is every command's options file: a command's own config file needs another name
  if ('config' in options) throw new Error(`freemask ${command}: an option named --config would be read as the options file`);
  const described = { ...options, config: 'FILE: a JSON object of these options (the command line wins)' };
  const names = [...Object.keys(described).map((k) => `--${k}`), ...Object.keys(switchOptions).map((k) => `--${k}`)];
  if (args.includes('--help') || args.includes('-h')) {
    const rows = [...Object.entries(described), ...Object.entries(switchOptions)];
    console.log(`freemask ${command}${positional ? ` ${positional}` : ''}${summaries[command] ? `: ${summaries[command]}` : ''}\noptions:\n${rows.map(([k, h]) => `  --${k.padEnd(14)} ${h}`).join('\n')}`);
    process.exit(0);
  }
  let parsed: { values: Record<string, string | boolean | undefined>; positionals: string[] };
  try {
    parsed = parseArgs({
      args, strict: true, allowPositionals: true,
      options: Object.fromEntries([...Object.keys(described).map((k) => [k, { type: 'string' as const }]), ...Object.keys(switchOptions).map((k) => [k, { type: 'boolean' as const }])]),
    }) as typeof parsed;
  } catch (e) {
    const err = e as { code?: string; message: string };
    const name = /'(-[^' ]+)/.exec(err.message)?.[1] ?? '';
    if (err.code === 'ERR_PARSE_ARGS_UNKNOWN_OPTION') throw new Error(`unexpected argument '${name}' (options: ${names.join(' ')})`);
    if (err.code === 'ERR_PARSE_ARGS_INVALID_OPTION_VALUE') throw new Error(`${name.replace(/^(--[^ ]+).*/, '$1')}: missing value`);
    throw e;
  }
  if (parsed.positionals.length && !positional) throw new Error(`unexpected argument '${parsed.positionals[0]}' (options: ${names.join(' ')})`);
  givenPositionals.push(...parsed.positionals);
  const out: Record<string, string> = {};
  const file = parsed.values.config as string | undefined;
  if (file) {
    let json: unknown;
    try {
      json = JSON.parse(readFileSync(file, 'utf8'));
    } catch (e) {
      throw new Error(`--config: cannot read ${file}: ${(e as Error).message}`);
    }
    if (!json || typeof json !== 'object' || Array.isArray(json)) throw new Error(`--config: ${file} must hold a JSON object of options`);
    for (const [k, v] of Object.entries(json)) {
      if (k in switchOptions && typeof v === 'boolean') {
        if (v) switches.add(`--${k}`);
      } else if (k in options && (typeof v === 'string' || typeof v === 'number')) out[k] = String(v);
      else throw new Error(`--config: ${file}: "${k}" is not an option of ${command} taking ${k in switchOptions ? 'true or false' : 'a string or number'} (options: ${names.join(' ')})`);
    }
  }
  for (const [k, v] of Object.entries(parsed.values)) {
    if (k === 'config' || v === undefined) continue;
    if (typeof v === 'boolean') switches.add(`--${k}`);
    else out[k] = v;
  }
  return out;
}

/** An integer flag, or an error naming it. */
function intFlag(f: Record<string, string>, name: string, fallback?: number): number {
  const v = f[name];
  if (v === undefined) {
    if (fallback === undefined) throw new Error(`--${name}: required`);
    return fallback;
  }
  if (!/^\d+$/.test(v)) throw new Error(`--${name}: expected a positive integer, got '${v}'`);
  return Number(v);
}

async function world(): Promise<void> {
  const f = flags({ split: 'S: train, val or test (required)', count: 'N: images (required)', out: 'DIR: a new folder (required)', mode: 'scene or single (default scene)', size: 'N: side in pixels (default 64)', first: 'K: first index in the split (default 0)' }, { quiet: 'no progress on stderr' });
  if (!f.split) throw new Error('--split: required (train, val or test)');
  if (!f.out) throw new Error('--out: required (a directory that does not exist yet)');
  const t0 = performance.now();
  const count = intFlag(f, 'count');
  const show = progress(t0);
  const m = await writeWorldDataset({
    split: f.split as Split, count, out: f.out, mode: (f.mode ?? 'scene') as WorldMode,
    size: intFlag(f, 'size', 64), first: intFlag(f, 'first', 0),
  }, show && ((done) => show(done, count)));
  console.log(`wrote ${m.count} ${m.mode} images of split ${m.split} (seeds ${m.seeds.first}..${m.seeds.last}, ${m.size}×${m.size}) to ${f.out} in ${((performance.now() - t0) / 1000).toFixed(1)} s`);
}

async function evaluate(): Promise<void> {
  const f = flags({ pred: 'DIR: predictions, VOC layout and/or COCO JSON (required)', gt: 'DIR: truth, same layout (required)' });
  if (!f.pred) throw new Error('--pred: required (a folder of predictions)');
  if (!f.gt) throw new Error('--gt: required (a folder of truth)');
  console.log(formatEvalTable(evaluateFolders(f.pred, f.gt)));
}

/** A Mask2Former small enough to train on the CPU-backed device: Swin embed 16, depths [1,1,1,1], hidden 32. */
function defaultSegmenterConfig(numLabels: number): Record<string, unknown> {
  return {
    model_type: 'mask2former',
    backbone_config: { model_type: 'swin', embed_dim: 16, depths: [1, 1, 1, 1], num_heads: [1, 1, 2, 2], window_size: 4, drop_path_rate: 0 },
    feature_size: 32, mask_feature_size: 32, hidden_dim: 32, encoder_feedforward_dim: 64, encoder_layers: 1, decoder_layers: 3,
    num_attention_heads: 2, dim_feedforward: 64, num_queries: 16, num_labels: numLabels, train_num_points: 1024,
  };
}

async function trainSegmenter(): Promise<void> {
  const f = flags({ data: 'DIR[,DIR…]: VOC-layout folders (required)', out: 'DIR: checkpoints and weights (required)', steps: 'N (default 1000)', batch: 'N (default 2)', lr: 'X (default 1e-3)', 'model-config': 'FILE: a Mask2Former config.json (default: the tiny ShapeWorld config)', split: 'S: only this ImageSets split', seed: 'N (default 0)', crop: 'N: augmentation crop (default: the image height)', 'save-minutes': 'M: checkpoint interval (default 5)' }, { resume: 'continue the checkpoint in --out' });
  if (!f.data) throw new Error('--data: required (VOC-layout folders, e.g. written by `freemask world`, comma-separated)');
  if (!f.out) throw new Error('--out: required (the folder for checkpoints)');
  const { Mask2FormerTrainer, readVocSamples, Mask2FormerForUniversalSegmentation, parseMask2FormerConfig } = F;
  await getDevice();
  const samples = (await Promise.all(f.data.split(',').map((dir) => readVocSamples(dir, f.split)))).flat();
  const steps = intFlag(f, 'steps', 1000);
  const lr = f.lr === undefined ? 1e-3 : Number(f.lr);
  if (!(lr > 0)) throw new Error(`--lr: expected a positive number, got '${f.lr}'`);
  let trainer: InstanceType<typeof Mask2FormerTrainer>;
  if (switches.has('--resume')) {
    trainer = await Mask2FormerTrainer.resume(f.out, samples, { steps });
    console.log(`resumed from ${f.out} at step ${trainer.step}`);
  } else {
    if (existsSync(`${f.out}/checkpoint.safetensors`)) throw new Error(`--out: ${f.out} already holds a checkpoint; pass --resume to continue it, or choose a new folder`);
    const file = f['model-config'];
    const json = file ? readJsonFlag(file, 'model-config') : defaultSegmenterConfig(F.vocClassNames.length);
    const config = parseMask2FormerConfig(json, file ?? 'default segmenter config');
    const crop = intFlag(f, 'crop', samples[0]!.height);
    trainer = new Mask2FormerTrainer(new Mask2FormerForUniversalSegmentation(config), samples, {
      steps, batchSize: intFlag(f, 'batch', 2), lr, seed: intFlag(f, 'seed', 0), clipNorm: 0, weightDecay: 0.05, backboneMultiplier: 1,
      augment: { size: [crop, crop], scale: [0.8, 1.25] },
    });
  }
  await F.trainWithCheckpoints(trainer, async () => {
    await trainer.saveCheckpoint(f.out!);
    await F.writePng(`${f.out}/loss.png`, F.lossCurve(trainer.log.loss));
  }, { minutes: numberFlag(f, 'save-minutes', 5) });
  console.log(`saved ${f.out} (config.json, model.safetensors, checkpoint.safetensors, loss.png) at step ${trainer.step}`);
}

/** A number flag, or an error naming it. */
function numberFlag(f: Record<string, string>, name: string, fallback: number): number {
  if (f[name] === undefined) return fallback;
  const v = Number(f[name]);
  if (!(Number.isFinite(v) && v > 0)) throw new Error(`--${name}: expected a positive number, got '${f[name]}'`);
  return v;
}

/** Pictures, prompts and class maps of one or more dataset folders written by `freemask world`, given comma-separated. */
async function readPromptedImages(dirs: string): Promise<(F.RgbImage & { prompt: string; semantic: Uint8Array })[]> {
  const out: (F.RgbImage & { prompt: string; semantic: Uint8Array })[] = [];
  for (const dir of dirs.split(',')) {
    const prompts = F.readWorldPrompts(dir);
    for (const s of await F.readVocSamples(dir)) {
      const prompt = prompts.get(s.id);
      if (prompt === undefined) throw new Error(`${dir}/prompts.jsonl: no prompt for image '${s.id}'`);
      out.push({ id: s.id, width: s.width, height: s.height, image: s.image, prompt, semantic: s.semantic });
    }
  }
  return out;
}

/** Reads the JSON file given to --`flag`, or an error naming the flag and file. */
function readJsonFlag(path: string, flag: string): Record<string, unknown> {
  try {
    return JSON.parse(readFileSync(path, 'utf8')) as Record<string, unknown>;
  } catch (e) {
    throw new Error(`--${flag}: cannot read ${path}: ${(e as Error).message}`);
  }
}

/**
 * A training option kept in a checkpoint's metadata under `key` with the step it started at (`key_from`): the
 * flag's value when given (from the checkpoint's step, or the step saved when the value is unchanged), else the
 * saved one, else none. A resume can so switch a run to it, and every later resume keeps it.
 */
function optionFromStep(f: Record<string, string>, flag: string, key: string, meta: Record<string, string> | undefined): { value: number; from: number } | undefined {
  const saved = meta?.[key];
  if (f[flag] === undefined) return saved === undefined ? undefined : { value: Number(saved), from: Number(meta?.[`${key}_from`] ?? 0) };
  const value = numberFlag(f, flag, NaN);
  return { value, from: String(value) !== saved ? Number(meta?.step ?? 0) : Number(meta?.[`${key}_from`] ?? 0) };
}

async function trainDiffusion(): Promise<void> {
  const f = flags({ stage: 'vae or unet (required)', data: 'DIR[,DIR…]: folders written by `freemask world` (required)', out: 'DIR: the diffusers pipeline folder (required)', steps: 'N (default 1200 for the VAE, 10000 for the UNet)', batch: 'N (default 16)', lr: 'X (default: 5e-4 VAE, 2e-4 UNet)', 'model-config': 'FILE: model config JSON (VAE: diffusers\' AutoencoderKL config; UNet: {"unet": …, "textEncoder": …})', seed: 'N (default 0)', 'save-minutes': 'M: checkpoint interval (default 5)', 'snr-gamma': 'X: min-SNR-γ loss weighting of the UNet (diffusers\' --snr_gamma; with --resume it switches the run to it from that step)', grounding: 'X: weight of the token grounding loss on cross-attention (TokenCompose; the class maps of --data; with --resume it switches the run to it from that step)' }, { resume: 'continue the checkpoint in --out' });
  if (f.stage !== 'vae' && f.stage !== 'unet') throw new Error(`--stage: expected vae or unet, got ${f.stage === undefined ? 'nothing' : `'${f.stage}'`}`);
  if (!f.data) throw new Error('--data: required (dataset folders written by `freemask world`, comma-separated)');
  if (!f.out) throw new Error('--out: required (the folder of the diffusers pipeline being trained)');
  await getDevice();
  const images = await readPromptedImages(f.data);
  if (f.stage === 'unet') return trainTextToImage(f, images);
  const dir = `${f.out}/vae`;
  const checkpoint = `${dir}/checkpoint.safetensors`;
  const steps = intFlag(f, 'steps', 1200);
  let trainer: F.Trainer;
  let vae: F.AutoencoderKL;
  if (switches.has('--resume')) {
    const reader = F.openCheckpoint(checkpoint);
    try {
      const meta = reader.metadata;
      vae = skipInit(() => new F.AutoencoderKL(F.autoencoderConfig(new F.ConfigReader(JSON.parse(meta.config ?? '{}'), `${checkpoint} metadata config`))));
      trainer = new F.Trainer(F.autoencoderTask(vae, images, { klWeight: Number(meta.kl_weight) }), F.checkpointOptions(reader, { steps }));
      trainer.restore(reader);
    } finally {
      reader.close();
    }
    console.log(`resumed ${checkpoint} at step ${trainer.step}`);
  } else {
    if (existsSync(checkpoint)) throw new Error(`--out: ${checkpoint} exists; pass --resume to continue it, or choose a new folder`);
    F.manualSeed(intFlag(f, 'seed', 0));
    vae = new F.AutoencoderKL(F.autoencoderConfig(new F.ConfigReader(f['model-config'] ? readJsonFlag(f['model-config'], 'model-config') : F.zooVaeConfig, f['model-config'] ?? 'the zoo VAE config')));
    trainer = new F.Trainer(F.autoencoderTask(vae, images), {
      steps, batchSize: intFlag(f, 'batch', 16), lr: numberFlag(f, 'lr', 5e-4), seed: intFlag(f, 'seed', 0),
      warmupSteps: 50, warmupFactor: 0.1, schedule: 'cosine', weightDecay: 0.01, clipNorm: 1,
    });
  }
  const params = vae.parameters().reduce((n, p) => n + p.size, 0);
  console.log(`training the VAE (${(params / 1e6).toFixed(3)} M parameters) on ${images.length} images, batch ${trainer.options.batchSize}, steps ${trainer.step}..${steps}`);
  await F.trainWithCheckpoints(trainer, async () => {
    mkdirSync(dir, { recursive: true });
    await trainer.saveCheckpoint(checkpoint);
    await F.writePng(`${dir}/loss.png`, F.lossCurve(trainer.log.loss));
  }, { minutes: numberFlag(f, 'save-minutes', 5) });
  // the finished model as diffusers writes it, with SD's scaling factor measured on the training images
  const scaling = await F.latentScalingFactor(vae, images.slice(0, 512));
  const json = F.autoencoderConfigJson({ ...vae.config, scaling_factor: scaling }, images[0]!.width);
  writeFileSync(`${dir}/config.json`, JSON.stringify(json, null, 2));
  await F.saveSafetensors(`${dir}/diffusion_pytorch_model.safetensors`, vae.stateDict(), { format: 'pt' });
  console.log(`wrote ${dir} (config.json with scaling_factor ${scaling.toFixed(5)}, diffusion_pytorch_model.safetensors, checkpoint.safetensors, loss.png)`);
}

/** `train-diffusion --stage unet`: the text encoder and UNet on the VAE's cached latents of the images. */
async function trainTextToImage(f: Record<string, string>, images: (F.RgbImage & { prompt: string; semantic: Uint8Array })[]): Promise<void> {
  const vaeDir = `${f.out}/vae`;
  if (!existsSync(`${vaeDir}/config.json`)) throw new Error(`--out: ${vaeDir}/config.json is missing: train the VAE first (--stage vae)`);
  const checkpoint = `${f.out}/text_to_image.checkpoint.safetensors`;
  const steps = intFlag(f, 'steps', 10000);
  const resume = switches.has('--resume');
  const reader = resume ? F.openCheckpoint(checkpoint) : undefined;
  if (!resume && existsSync(checkpoint)) throw new Error(`--out: ${checkpoint} exists; pass --resume to continue it, or choose a new folder`);
  const vae = F.AutoencoderKL.fromPretrained(vaeDir);
  const scalingFactor = vae.scalingFactor;
  let configs: { unet: Record<string, unknown>; textEncoder: Record<string, unknown> };
  if (reader) configs = { unet: JSON.parse(reader.metadata.unet_config ?? '{}'), textEncoder: JSON.parse(reader.metadata.text_encoder_config ?? '{}') };
  else if (f['model-config']) configs = readJsonFlag(f['model-config'], 'model-config') as typeof configs;
  else {
    // positions for the longest prompt (with start and end tokens), rounded up to a multiple of 8
    const probe = await F.CLIPTokenizer.fromPretrained();
    const longest = Math.max(...images.map((i) => probe.encodeTokens(i.prompt).length)) + 2;
    configs = F.zooTextToImageConfigs(Math.ceil(longest / 8) * 8);
  }
  const tokenizer = await F.CLIPTokenizer.fromPretrained(undefined, { maxLength: Number(configs.textEncoder.max_position_embeddings) });
  const t0 = performance.now();
  const latents = await F.encodeLatents(vae, images);
  vae.dispose();
  console.log(`encoded ${images.length} images to latents ${latents.shape.join('×')} in ${((performance.now() - t0) / 1000).toFixed(0)} s`);
  const build = () => new F.TextToImageModel(
    new F.UNet2DConditionModel(F.unetConfig(new F.ConfigReader(configs.unet, 'UNet config'))),
    new F.CLIPTextModel(F.clipTextConfig(configs.textEncoder, 'text encoder config')),
  );
  let model: InstanceType<typeof F.TextToImageModel>;
  if (reader) model = skipInit(build);
  else {
    F.manualSeed(intFlag(f, 'seed', 0));
    model = build();
    // transformers' CLIP initialisation of the embedding tables (our modules leave them for loaders to fill)
    const emb = model.textEncoder.text_model.embeddings;
    emb.token_embedding.weight.copyFrom(tidy(() => F.mul(F.randn(emb.token_embedding.weight.shape, { seed: 1 }), 0.02)));
    emb.position_embedding.weight.copyFrom(tidy(() => F.mul(F.randn(emb.position_embedding.weight.shape, { seed: 2 }), 0.01)));
  }
  const scheduler = new F.DDIMScheduler(F.sdSchedulerConfig);
  const snrGamma = optionFromStep(f, 'snr-gamma', 'snr_gamma', reader?.metadata);
  const grounding = optionFromStep(f, 'grounding', 'grounding', reader?.metadata);
  const task = { ...F.textToImageTask(model, tokenizer, images.map((i) => i.prompt), latents, {
    scalingFactor, alphasCumprod: scheduler.alphasCumprod, snrGamma: snrGamma?.value,
    grounding: grounding && { weight: grounding.value, targets: images.map((i) => F.groundingTargets(tokenizer, i.prompt, i.semantic, i.width, i.height, (c) => F.classSpec(c).words)) },
  }),
    metadata: () => ({
      unet_config: JSON.stringify(configs.unet), text_encoder_config: JSON.stringify(configs.textEncoder),
      ...(snrGamma && { snr_gamma: String(snrGamma.value), snr_gamma_from: String(snrGamma.from) }),
      ...(grounding && { grounding: String(grounding.value), grounding_from: String(grounding.from) }),
    }) };
  const trainer = new F.Trainer(task, reader ? F.checkpointOptions(reader, { steps }) : {
    steps, batchSize: intFlag(f, 'batch', 16), lr: numberFlag(f, 'lr', 2e-4), seed: intFlag(f, 'seed', 0),
    warmupSteps: 200, warmupFactor: 0.01, schedule: 'constant', weightDecay: 0.01, clipNorm: 1, emaDecay: 0.999,
  });
  if (reader) {
    trainer.restore(reader);
    reader.close();
    console.log(`resumed ${checkpoint} at step ${trainer.step}`);
  }
  const count = (m: F.Module) => (m.parameters().reduce((n, p) => n + p.size, 0) / 1e6).toFixed(3);
  console.log(`training the text encoder (${count(model.textEncoder)} M parameters) and UNet (${count(model.unet)} M) on ${images.length} prompted images, batch ${trainer.options.batchSize}, steps ${trainer.step}..${steps}`);
  await F.trainWithCheckpoints(trainer, async () => {
    await trainer.saveCheckpoint(checkpoint);
    await F.writePng(`${f.out}/text_to_image.loss.png`, F.lossCurve(trainer.log.loss));
  }, { minutes: numberFlag(f, 'save-minutes', 5) });
  await F.saveTextToImagePipeline(f.out, { unetConfig: configs.unet, textEncoderConfig: configs.textEncoder, weights: trainer.ema!.stateDict(), tokenizer });
  console.log(`wrote the pipeline ${f.out} (EMA weights; model_index.json, scheduler, tokenizer, text_encoder, unet, vae)`);
}

/** ShapeWorld validation pictures: `count` single-object and `count` scene images at `size` pixels. */
function worldValidationImages(count: number, size: number): F.RgbImage[] {
  return (['single', 'scene'] as const).flatMap((mode) => Array.from({ length: count }, (_, k) => {
    const seed = F.splitSeed('val', k);
    return { id: `${mode}-${seed}`, width: size, height: size, image: F.generateScene(seed, { mode, width: size }).image };
  }));
}

/** A black panel with lines of text (capitals), for the labels of a contact sheet. */
function textPanel(lines: readonly string[], width: number, height: number): F.Image {
  const panel: F.Image = { width, height, channels: 3, data: new Uint8Array(3 * width * height) };
  lines.forEach((line, k) => F.drawText(panel, line, 4, 4 + 10 * k, [255, 255, 255]));
  return panel;
}

/** One row per sample: its prompt's class and background, then image | heat map | mask | refined | oracle (zoomed 2×), under a header. */
async function evaluationSheet(samples: readonly F.GeneratedSample[]): Promise<F.Image> {
  const [zoom, labelWidth] = [2, 76];
  const rows: F.Image[] = [];
  for (const s of samples) {
    const { width: W, height: H } = s.image;
    const heat = Tensor.fromArray(s.heat, [H, W]);
    const pictures = [{ width: W, height: H, channels: 3 as const, data: s.image.image }, await F.heatmapToImage(heat), F.vocColorImage(s.mask, W, H), F.vocColorImage(s.refined, W, H), F.vocColorImage(s.oracle, W, H)];
    rows.push(F.sideBySide([textPanel([s.pair.className, s.pair.background], labelWidth, zoom * H), ...pictures.map((p) => F.zoomImage(p, zoom))]));
    heat.dispose();
  }
  const width = zoom * (samples[0]?.image.width ?? 64);
  const header = F.sideBySide([textPanel([], labelWidth, 16), ...['image', 'heat map', 'mask', 'refined', 'oracle'].map((t) => textPanel([t], width, 16))]);
  return F.stacked([header, ...rows]);
}

async function evalDiffusion(): Promise<void> {
  const f = flags({ model: 'DIR: a diffusers Stable Diffusion folder (required)', oracle: 'DIR: a Mask2Former folder (required)', samples: 'N per (class, background) pair (default 4)', seed: 'N of the first sample (default 0; compare presets on other seeds than the reported ones)', steps: 'N sampling steps (default 20)', guidance: 'X classifier-free guidance (default 5)', json: 'FILE: results as JSON', sheet: 'PNG: contact sheet of the samples', mask: maskHelp, val: 'N ShapeWorld val images for the VAE PSNR (default 128)', real: 'N real ShapeWorld val singles for the oracle\'s own fidelity and IoU (default 220)' });
  if (!f.model) throw new Error('--model: required (a diffusers Stable Diffusion folder)');
  if (!f.oracle) throw new Error('--oracle: required (a Mask2Former folder trained on ShapeWorld)');
  const preset = maskFlag(f.mask);
  await getDevice();
  const pipe = await F.StableDiffusionPipeline.fromPretrained(f.model, { unet: F.UNet2DConditionModel, vae: F.AutoencoderKL });
  const oracle = F.Mask2FormerForUniversalSegmentation.fromPretrained(f.oracle);
  const size = typeof pipe.sampleSize === 'number' ? pipe.sampleSize : pipe.sampleSize[0];
  const pixels = size * pipe.vaeScaleFactor;
  const psnr = await F.vaeReconstructionPsnr(pipe.vae as F.AutoencoderKL, worldValidationImages(intFlag(f, 'val', 128), pixels));
  console.log(`VAE reconstruction PSNR on ShapeWorld val: ${psnr.toFixed(2)} dB`);
  const real = await F.oracleOnRealSingles(oracle, Array.from({ length: intFlag(f, 'real', 220) }, (_, k) => F.generateScene(F.splitSeed('val', k), { mode: 'single', width: pixels })));
  console.log(`the oracle on real ShapeWorld val singles (the ceiling of both measures): fidelity ${(100 * real.fidelity).toFixed(1)}%, IoU with the exact mask ${real.iou.toFixed(3)}`);
  const t0 = performance.now();
  const r = await F.evaluateTextToImage(pipe, oracle, {
    samplesPerPair: intFlag(f, 'samples', 4), seed: intFlag(f, 'seed', 0), numInferenceSteps: intFlag(f, 'steps', 20), guidanceScale: numberFlag(f, 'guidance', 5), preset,
    onImage: (done, total) => {
      if (done % 20 === 0 || done === total) console.log(`generated ${done}/${total} images, ${((performance.now() - t0) / 1000).toFixed(0)} s`);
    },
  });
  for (const p of r.pairs) console.log(`${p.className.padEnd(12)} ${p.background.padEnd(7)} fidelity ${(100 * p.fidelity).toFixed(0).padStart(3)}%  mask IoU ${p.iouRaw.toFixed(3)} → refined ${p.iouRefined.toFixed(3)}`);
  console.log(`prompt fidelity ${(100 * r.fidelity).toFixed(1)}% (target ≥ 90%), attention-mask IoU ${r.iouRaw.toFixed(3)}, refined ${r.iouRefined.toFixed(3)} (target ≥ 0.7), ${r.pairs.length} pairs`);
  const speed = { 20: await F.samplingSpeed(pipe, 20), 50: await F.samplingSpeed(pipe, 50) };
  console.log(`sampling: ${speed[20].imagesPerMinute.toFixed(1)} images/min at 20 steps, ${speed[50].imagesPerMinute.toFixed(1)} at 50; peak ${(speed[50].peakBytes / 2 ** 20).toFixed(1)} MiB`);
  if (f.json) writeFileSync(f.json, JSON.stringify({ psnr, oracleOnRealSingles: real, fidelity: r.fidelity, iouRaw: r.iouRaw, iouRefined: r.iouRefined, pairs: r.pairs, sampling: speed, preset }, null, 2));
  if (f.sheet) {
    // the first sample of each pair
    await F.writePng(f.sheet, await evaluationSheet(r.pairs.map((p) => r.samples.find((s) => s.pair === p)!)));
    console.log(`wrote ${f.sheet}: one pair per row: image | heat map | attention mask | refined | oracle`);
  }
}

/** A thesaurus by name (voc, shapeworld, cityscapes) or a JSON file. */
function thesaurusFlag(v: string | undefined): F.Thesaurus {
  const named: Record<string, F.Thesaurus> = { voc: F.vocThesaurus, shapeworld: F.shapeWorldThesaurus, cityscapes: F.cityscapesThesaurus };
  if (v === undefined) return F.shapeWorldThesaurus;
  if (named[v]) return named[v]!;
  if (!existsSync(v)) throw new Error(`--thesaurus: '${v}' is neither voc, shapeworld, cityscapes nor a JSON file`);
  return F.thesaurusFromJson(readFileSync(v, 'utf8'), v);
}

const maskHelp = 'how attention becomes a mask: zoo, dataset-diffusion, diffumask or FILE.json (AttentionMaskConfig; default zoo)';

/** --mask: how attention becomes a mask, a preset by name (zoo, dataset-diffusion, diffumask) or a JSON file. */
function maskFlag(v: string | undefined): F.AttentionMaskConfig {
  const named: Record<string, F.AttentionMaskConfig> = { zoo: F.ZOO_ATTENTION_PRESET, 'dataset-diffusion': F.DATASET_DIFFUSION_PRESET, diffumask: F.DIFFUMASK_PRESET };
  if (v === undefined) return F.ZOO_ATTENTION_PRESET;
  if (named[v]) return named[v]!;
  if (!existsSync(v)) throw new Error(`--mask: '${v}' is neither ${Object.keys(named).join(', ')} nor a JSON file`);
  return F.attentionMaskConfigFromJson(readJsonFlag(v, 'mask'), `--mask ${v}`);
}

/** --harmonizer: reinhard, rainnet:DIR or pct-net:DIR (none when absent). */
function harmonizerFlag(v: string | undefined): F.Harmonizer | undefined {
  return v === undefined ? undefined : F.harmonizerFromName(v, '--harmonizer');
}

async function compose(): Promise<void> {
  const f = flags({ singles: 'DIR: single-object pictures with masks (required)', fopa: 'DIR: a FOPA folder (required)', out: 'DIR: a new folder (required)', count: 'N images (default 100)', objects: 'N or MIN-MAX pasted objects (default 1-3)', seed: 'N (default 0)', order: 'paste or ground (default paste)', thesaurus: 'voc, shapeworld, cityscapes or FILE.json (default shapeworld)', size: 'N: FOPA input size (default: the model\'s)', harmonizer: 'reinhard or DIR (RainNet / PCT-Net folder); default none' });
  if (!f.singles) throw new Error('--singles: required (a folder of single-object pictures with masks, e.g. `freemask world --mode single`)');
  if (!f.fopa) throw new Error('--fopa: required (a FOPA folder: config.json + model.safetensors)');
  if (!f.out) throw new Error('--out: required (a directory that does not exist yet)');
  const range = /^(\d+)(?:-(\d+))?$/.exec(f.objects ?? '1-3');
  if (!range) throw new Error(`--objects: expected N or MIN-MAX, got '${f.objects}'`);
  const order = f.order ?? 'paste';
  if (order !== 'paste' && order !== 'ground') throw new Error(`--order: expected paste or ground, got '${order}'`);
  await getDevice();
  const singles = await F.readSingleObjects(f.singles);
  const fopa = F.ObPlaNet.fromPretrained(f.fopa);
  const t0 = performance.now();
  const count = intFlag(f, 'count', 100);
  const objects: [number, number] = [Number(range[1]), Number(range[2] ?? range[1])];
  const samples = F.composeScenes({ singles, thesaurus: thesaurusFlag(f.thesaurus), fopa, fopaSize: f.size ? intFlag(f, 'size') : undefined, count, objects, seed: intFlag(f, 'seed', 0), order, harmonizer: harmonizerFlag(f.harmonizer) });
  const m = await F.writeDataset(f.out, 'train', `Free-Mask compositions of ${f.singles}`, samples, (n) => ({
    generator: 'freemask compose', singles: f.singles, fopa: f.fopa, count: n, objects, order, seed: intFlag(f, 'seed', 0), created: new Date().toISOString(),
  }));
  console.log(`wrote ${m.count} composed images (${objects.join('-')} objects each, ${order} order) to ${f.out} in ${((performance.now() - t0) / 1000).toFixed(1)} s`);
}

/** The shipped zoo's folders (weights/…), for defaults. */
const zooPath = (name: string) => new URL(`../weights/${name}`, import.meta.url).pathname;

/** A stable hash of a model folder's configs and weights (file names and bytes), so a rerun can tell it is the same model. */
function folderHash(dir: string): string {
  const h = createHash('sha256');
  const walk = (d: string) => {
    for (const name of readdirSync(d).sort()) {
      const p = `${d}/${name}`;
      if (statSync(p).isDirectory()) walk(p);
      else if (/\.(json|safetensors|txt|gz)$/.test(name) && !/checkpoint/.test(name)) h.update(`${p.slice(dir.length)}\0`).update(readFileSync(p));
    }
  };
  walk(dir);
  return h.digest('hex').slice(0, 16);
}

/** --classes: shapeworld, voc, a JSON/text file of names, or a comma list. */
async function classListFlag(v: string, thesaurus: F.Thesaurus, embed: F.TextEmbedder): Promise<F.ClassList> {
  if (v === 'shapeworld') return F.shapeWorldClassList();
  if (v === 'voc') return F.classListFromNames(F.vocClassNames.slice(1), F.vocThesaurus, 'voc');
  if (existsSync(v)) {
    const text = readFileSync(v, 'utf8');
    let names: string[];
    try {
      names = v.endsWith('.json') ? JSON.parse(text) : text.split('\n').filter((l) => l.trim());
    } catch (e) {
      throw new Error(`--classes: ${v} is not valid JSON (${(e as Error).message})`);
    }
    if (!Array.isArray(names) || names.some((n) => typeof n !== 'string')) throw new Error(`--classes: ${v} must be a JSON array of class names or one name per line`);
    return F.classListFromNames(names, thesaurus, v, embed);
  }
  if (/[/\\]|\.(json|txt)$/.test(v)) throw new Error(`--classes: file ${v} does not exist`);
  return F.classListFromNames(v.split(','), thesaurus, v, embed);
}

/** A model folder flag: the given folder (which must hold `file`) or the zoo's default, with a hint when neither is there. */
function modelFolder(f: Record<string, string>, name: string, zooName: string, file: string): string {
  const dir = f[name] ?? zooPath(zooName);
  if (!existsSync(`${dir}/${file}`)) {
    throw new Error(f[name] ? `--${name}: ${dir} has no ${file}` : `--${name}: the zoo's ${zooName} is not in weights/ yet (bash scripts/train-zoo.sh trains it); pass --${name} DIR`);
  }
  return dir;
}

async function generate(): Promise<void> {
  const f = flags({
    model: 'DIR: a diffusers Stable Diffusion folder (default weights/shapeworld-sd)', classes: 'shapeworld, voc, FILE (JSON list or one per line) or a,b,c (default shapeworld)',
    thesaurus: 'voc, shapeworld, cityscapes or FILE.json for named classes (default voc)', count: 'N images (required)', seed: 'N (default 0)', out: 'DIR: the dataset folder (required)',
    stages: `comma list of ${F.generateStages.join(', ')} (default all)`, steps: 'N sampling steps (default 20)', guidance: 'X classifier-free guidance (default 5)',
    multi: 'X share of images with further objects (default 0.5)', 'multi-by': 'compose (pasted, Free-Mask) or prompt (named in the prompt, drawn by the model; default compose)', objects: 'N or MIN-MAX pasted objects (default 1-2)', order: 'paste or ground (default paste)',
    fopa: 'DIR: FOPA folder (default weights/shapeworld-fopa)', placement: 'fopa or random (the control; default fopa)', harmonizer: 'none, reinhard, rainnet:DIR or pct-net:DIR (default the zoo\'s PCT-Net, weights/shapeworld-pctnet)',
    instances: 'components, displacement or irn (default irn with --irn or the zoo\'s, else components)', irn: 'DIR: instance model (default weights/shapeworld-irn)',
    shard: 'K/N: generate shard K of N (also read from SLURM_ARRAY_TASK_ID/COUNT, or JOB_COMPLETION_INDEX with --shard-count)', 'shard-count': 'N: the Kubernetes Job\'s completions',
    mask: maskHelp,
    cache: 'DIR: stage-1 pictures and masks shared between runs that differ only in later stages (changes no output)',
  }, { quiet: 'no progress on stderr' });
  if (!f.out) throw new Error('--out: required (the dataset folder to write)');
  const count = intFlag(f, 'count');
  const stages = (f.stages ?? F.generateStages.join(',')).split(',').map((s) => s.trim()).filter((s) => s) as F.GenerateStage[];
  const bad = stages.find((s) => !F.generateStages.includes(s));
  if (bad) throw new Error(`--stages: unknown stage '${bad}' (expected ${F.generateStages.join(', ')})`);
  let shard: { index: number; count: number } | undefined;
  if (f.shard) {
    const m = /^(\d+)\/(\d+)$/.exec(f.shard);
    if (!m) throw new Error(`--shard: expected K/N, got '${f.shard}'`);
    shard = { index: Number(m[1]), count: Number(m[2]) };
  } else shard = F.shardFromEnvironment(process.env, f['shard-count'] ? intFlag(f, 'shard-count') : undefined);
  const range = /^(\d+)(?:-(\d+))?$/.exec(f.objects ?? '1-2');
  if (!range) throw new Error(`--objects: expected N or MIN-MAX, got '${f.objects}'`);
  const order = f.order ?? 'paste';
  if (order !== 'paste' && order !== 'ground') throw new Error(`--order: expected paste or ground, got '${order}'`);
  const multi = f.multi === undefined ? 0.5 : Number(f.multi);
  const model = modelFolder(f, 'model', 'shapeworld-sd', 'model_index.json');
  const placement = f.placement ?? 'fopa';
  if (placement !== 'fopa' && placement !== 'random') throw new Error(`--placement: expected fopa or random, got '${placement}'`);
  const multiBy = f['multi-by'] ?? 'compose';
  if (multiBy !== 'compose' && multiBy !== 'prompt') throw new Error(`--multi-by: expected compose or prompt, got '${multiBy}'`);
  const fopaDir = stages.includes('compose') && placement === 'fopa' && multiBy === 'compose' ? modelFolder(f, 'fopa', 'shapeworld-fopa', 'config.json') : undefined;
  const wantsIrn = stages.includes('instances') && (f.instances ?? (f.irn || existsSync(`${zooPath('shapeworld-irn')}/config.json`) ? 'irn' : 'components')) !== 'components';
  const irnDir = wantsIrn ? modelFolder(f, 'irn', 'shapeworld-irn', 'config.json') : undefined;
  // the zoo's PCT-Net beats RainNet, doing nothing and Reinhard on ShapeWorld (its model card); none when it is not there
  const harmonizerName = f.harmonizer ?? (existsSync(`${zooPath('shapeworld-pctnet')}/config.json`) ? `pct-net:${zooPath('shapeworld-pctnet')}` : 'none');
  await getDevice();
  const pipe = await F.StableDiffusionPipeline.fromPretrained(model, { unet: F.UNet2DConditionModel, vae: F.AutoencoderKL });
  const classes = await classListFlag(f.classes ?? 'shapeworld', thesaurusFlag(f.thesaurus ?? 'voc'), F.clipTextEmbedder(pipe.tokenizer, pipe.textEncoder));
  for (const c of classes.classes) if (c.match?.how === 'embedding') console.error(`class '${c.name}': no thesaurus entry; using '${c.match.thesaurusClass}' (CLIP cosine ${c.match.score.toFixed(3)})`);
  const identity: Record<string, unknown> = { model: folderHash(model), ...(fopaDir && { fopa: folderHash(fopaDir) }), ...(irnDir && { irn: folderHash(irnDir) }) };
  const hdir = /^(rainnet|pct-net):(.+)$/.exec(harmonizerName)?.[2];
  if (stages.includes('harmonize') && hdir && existsSync(hdir)) identity.harmonizer = folderHash(hdir);
  const t0 = performance.now();
  const m = await F.generateDataset({
    out: f.out, count, seed: intFlag(f, 'seed', 0), pipe, classes, stages, numInferenceSteps: intFlag(f, 'steps', 20), guidanceScale: numberFlag(f, 'guidance', 5), mask: maskFlag(f.mask),
    multi, objects: [Number(range[1]), Number(range[2] ?? range[1])], order, placement, multiBy, fopa: fopaDir ? F.ObPlaNet.fromPretrained(fopaDir) : undefined,
    harmonizer: stages.includes('harmonize') ? { name: harmonizerName, run: F.harmonizerFromName(harmonizerName, '--harmonizer') } : undefined,
    instanceMethod: (f.instances ?? (irnDir ? 'irn' : 'components')) as F.InstanceMethod, irn: irnDir ? F.IrnNet.fromPretrained(irnDir) : undefined,
    shard, identity, onImage: progress(t0), cache: f.cache ? { dir: f.cache, model: identity.model as string } : undefined,
  });
  console.log(`${f.out}: ${m.count} images${shard ? ` (shard ${shard.index}/${shard.count})` : ''}, ${m.images.reduce((a, i) => a + (i.provenance.pasted as unknown[]).length, 0)} pasted objects, stages ${stages.join(', ') || 'none'} (${((performance.now() - t0) / 1000).toFixed(1)} s)`);
}

/** Progress with ETA on stderr when it is a terminal and --quiet is not given: "12/100 gen0000011 (3.2 s/image, ETA 4m41s)". */
function progress(t0: number): ((done: number, total: number, id?: string) => void) | undefined {
  if (switches.has('--quiet') || !process.stderr.isTTY) return undefined;
  let shown = 0;
  return (done, total, id) => {
    // at most ten updates a second
    if (performance.now() - shown < 100 && done < total) return;
    shown = performance.now();
    const per = (performance.now() - t0) / 1000 / done;
    const eta = Math.round(per * (total - done));
    process.stderr.write(`\r${done}/${total}${id ? ` ${id}` : ''} (${per.toFixed(2)} s/image, ETA ${Math.floor(eta / 60)}m${String(eta % 60).padStart(2, '0')}s)${done === total ? '\n' : ''}`);
  };
}

async function merge(): Promise<void> {
  const f = flags({ out: 'DIR: the merged dataset (required)' }, {}, 'SHARD_DIR...');
  if (!f.out) throw new Error('--out: required (a new folder for the merged dataset)');
  const dirs = givenPositionals;
  const m = F.mergeDatasets(dirs, f.out);
  console.log(`merged ${dirs.length} shards into ${f.out}: ${m.count} images`);
}

async function curate(): Promise<void> {
  const f = flags({
    data: 'DIR[,DIR…]: generated datasets (VOC layout; required)', out: 'DIR: rounds, scores and models (required; rerun to resume)', rounds: 'R: filtering rounds after round 0 (default 2)',
    steps: 'N training steps per round (default 500)', batch: 'N (default 4)', lr: 'X (default 1e-3)', rule: 'any (Free-Mask\'s), all or mean (default any)', threshold: 'X: IoU to keep (default 0.5)',
    val: 'DIR: a truth folder; each round\'s model gets its mIoU there', segmenter: 'FILE: a Mask2Former config.json (default: the tiny ShapeWorld config)', seed: 'N (default 0)', 'save-minutes': 'M (default 5)',
  });
  if (!f.data) throw new Error('--data: required (a dataset folder, e.g. written by `freemask generate`)');
  if (!f.out) throw new Error('--out: required (a folder for the rounds)');
  const rule = (f.rule ?? 'any') as F.KeepRule;
  if (!F.keepRules.includes(rule)) throw new Error(`--rule: expected ${F.keepRules.join(', ')}, got '${f.rule}'`);
  const threshold = f.threshold === undefined ? 0.5 : Number(f.threshold);
  await getDevice();
  const dirs = f.data.split(',');
  // with several folders an id names its folder too (the same id may be in two)
  const samples = (await Promise.all(dirs.map(async (dir) => (await F.readVocSamples(dir)).map((s) => (dirs.length > 1 ? { ...s, id: `${dir}/${s.id}` } : s))))).flat();
  const val = f.val ? await F.readVocSamples(f.val) : undefined;
  const labels = Math.max(F.vocClassNames.length, ...dirs.flatMap((dir) => F.readGenerateManifest(dir)?.categories.map((c) => c.id + 1) ?? []));
  let config = defaultSegmenterConfig(labels);
  if (f.segmenter) {
    try {
      config = JSON.parse(readFileSync(f.segmenter, 'utf8')) as Record<string, unknown>;
    } catch (e) {
      throw new Error(`--segmenter: cannot read ${f.segmenter}: ${(e as Error).message}`);
    }
  }
  const crop = samples[0]!.height;
  const rounds = await F.curate({
    samples, val, out: f.out, rounds: intFlag(f, 'rounds', 2), config, steps: intFlag(f, 'steps', 500), rule, threshold, seed: intFlag(f, 'seed', 0),
    train: { batchSize: intFlag(f, 'batch', 4), lr: numberFlag(f, 'lr', 1e-3), clipNorm: 0, weightDecay: 0.05, backboneMultiplier: 1, augment: { size: [crop, crop], scale: [0.8, 1.25] } },
    saveMinutes: numberFlag(f, 'save-minutes', 5), log: (l) => console.error(l),
  });
  for (const r of rounds) console.log(`round ${r.round}: trained on ${r.kept}, dropped ${r.dropped}${r.miou !== undefined ? `, val mIoU ${(100 * r.miou).toFixed(2)}` : ''}`);
  console.log(`${f.out}: kept.json (the final samples), round-*/scores.json (per-sample, per-class IoU), round-${rounds.length - 1}/ (the last model)`);
}

async function gallery(): Promise<void> {
  const f = flags({ curate: 'DIR: a freemask curate folder: its last round\'s kept/dropped and IoUs' }, {}, 'DIR');
  if (givenPositionals.length !== 1) throw new Error(`gallery: expected one dataset folder, got ${givenPositionals.length ? givenPositionals.join(' ') : 'none'} (freemask gallery DIR)`);
  const r = await F.writeGallery(givenPositionals[0]!, { curate: f.curate });
  console.log(`wrote ${r.path}: ${r.items} images (open it in a browser; no server needed)`);
}

async function trainFopa(): Promise<void> {
  const f = flags({ out: 'DIR: the FOPA folder (required)', steps: 'N (default 3000)', batch: 'N (default 8)', lr: 'X (default 1e-3)', size: 'N input size (default 64)', widths: 'W1,W2,W3,W4 (default 16,32,64,128)', count: 'N training samples (default 100000)', seed: 'N (default 0)', 'save-minutes': 'M (default 5)' }, { resume: 'continue the checkpoint in --out' });
  if (!f.out) throw new Error('--out: required (the FOPA folder: checkpoint, config.json, model.safetensors)');
  await getDevice();
  const checkpoint = `${f.out}/checkpoint.safetensors`;
  const reader = switches.has('--resume') ? F.openCheckpoint(checkpoint) : undefined;
  if (!reader && existsSync(checkpoint)) throw new Error(`--out: ${checkpoint} exists; pass --resume to continue it, or choose a new folder`);
  const widths = (f.widths ?? '16,32,64,128').split(',').map(Number);
  const config = reader ? F.obPlaNetConfig(JSON.parse(reader.metadata.config ?? '{}'), `${checkpoint} metadata config`) : F.obPlaNetConfig({ widths, ks: 3 }, '--widths');
  const size = reader ? Number(reader.metadata.size) : intFlag(f, 'size', 64);
  F.manualSeed(intFlag(f, 'seed', 0));
  const net = reader ? skipInit(() => new F.ObPlaNet(config)) : new F.ObPlaNet(config);
  net.requireGrad();
  const steps = intFlag(f, 'steps', 3000);
  const task = F.fopaTask(net, { count: reader ? Number(reader.metadata.count) : intFlag(f, 'count', 100_000), size });
  const trainer = new F.Trainer(task, reader ? F.checkpointOptions(reader, { steps }) : {
    steps, batchSize: intFlag(f, 'batch', 8), lr: numberFlag(f, 'lr', 1e-3), seed: intFlag(f, 'seed', 0), warmupSteps: 100, warmupFactor: 0.1, schedule: 'cosine', weightDecay: 1e-4, clipNorm: 1,
  });
  if (reader) {
    trainer.restore(reader);
    reader.close();
    console.log(`resumed ${checkpoint} at step ${trainer.step}`);
  }
  console.log(`training FOPA (widths ${config.widths.join(', ')}, ${(net.parameters().reduce((n, p) => n + p.size, 0) / 1e6).toFixed(3)} M parameters) on ShapeWorld placements at ${size}², batch ${trainer.options.batchSize}, steps ${trainer.step}..${steps}`);
  await F.trainWithCheckpoints(trainer, async () => {
    mkdirSync(f.out!, { recursive: true });
    await trainer.saveCheckpoint(checkpoint);
    writeFileSync(`${f.out}/config.json`, JSON.stringify({ _class_name: 'ObPlaNet_resnet18', widths: config.widths, ks: config.ks, input_size: size }, null, 2));
    await F.saveSafetensors(`${f.out}/model.safetensors`, net.stateDict());
    await F.writePng(`${f.out}/loss.png`, F.lossCurve(trainer.log.loss));
  }, { minutes: numberFlag(f, 'save-minutes', 5) });
}

async function evalFopa(): Promise<void> {
  const f = flags({ model: 'DIR: a FOPA folder (required)', count: 'N samples (default 200)', split: 'S (default val)', size: 'N (default 64)', json: 'FILE: results as JSON', sheet: 'PNG: background | heat map | composite | mask for the first 8 samples' });
  if (!f.model) throw new Error('--model: required (a FOPA folder)');
  await getDevice();
  const net = F.ObPlaNet.fromPretrained(f.model);
  const split = (f.split ?? 'val') as F.Split;
  const count = intFlag(f, 'count', 200);
  const r = await F.evaluatePlacement(net, split, Array.from({ length: count }, (_, i) => i), { size: intFlag(f, 'size', 64) });
  console.log(`FOPA on ${count} held-out ShapeWorld placements (${split}): F1 ${r.f1.toFixed(3)}, balanced accuracy ${r.balancedAccuracy.toFixed(3)}; on the ${r.fitting} whose class fits the background, plausibility of the top-1 placement ${r.top1.toFixed(3)} vs random ${r.random.toFixed(3)} vs the best ${r.best.toFixed(3)}`);
  if (f.json) writeFileSync(f.json, JSON.stringify(r, null, 2));
  if (f.sheet) {
    await F.writePng(f.sheet, await F.placementSheet(net, split, Array.from({ length: Math.min(count, 8) }, (_, i) => i), { size: intFlag(f, 'size', 64) }));
    console.log(`wrote ${f.sheet}: background | heat map at the chosen scale | composite | mask, one sample per row`);
  }
}

/** Copies a trained folder as it ships: weights (*.safetensors) F16, configs, tokenizer files, pictures and cards; training checkpoints left behind. Returns the bytes written. */
async function halfCopyFolder(from: string, to: string): Promise<number> {
  let bytes = 0;
  const walk = async (src: string, dst: string) => {
    mkdirSync(dst, { recursive: true });
    for (const name of readdirSync(src)) {
      const [a, b] = [`${src}/${name}`, `${dst}/${name}`];
      if (statSync(a).isDirectory()) await walk(a, b);
      else if (/checkpoint\.safetensors$/.test(name)) continue;
      else if (name.endsWith('.safetensors')) await F.saveHalfCopy(a, b);
      else if (/\.(json|txt|png|md)$/.test(name)) copyFileSync(a, b);
      else continue;
      if (!statSync(a).isDirectory()) bytes += statSync(b).size;
    }
  };
  await walk(from, to);
  return bytes;
}

async function exportHalf(): Promise<void> {
  const f = flags({ from: 'DIR: a trained folder (required)', to: 'DIR (required)' });
  if (!f.from || !existsSync(f.from)) throw new Error(`--from: ${f.from ?? '(missing)'} is not a folder`);
  if (!f.to) throw new Error('--to: required');
  console.log(`wrote ${f.to}: ${((await halfCopyFolder(f.from, f.to)) / 2 ** 20).toFixed(2)} MiB (weights in F16)`);
}

/**
 * Ships a finished training run: its folder copied with F16 weights (export-half) and a model card (README.md)
 * from the run's checkpoint (options, steps, wall time, loss curve) and a card file (--card, JSON: title, summary,
 * architecture, data, evaluation, reproduce, optional budget and notes).
 */
async function ship(): Promise<void> {
  const f = flags({ from: 'DIR: a finished run (required)', to: 'DIR: the folder under weights/ (required)', card: 'FILE.json: title, summary, architecture, data, evaluation, reproduce (required)', checkpoint: 'FILE (default: FROM/checkpoint.safetensors)' });
  if (!f.from || !existsSync(f.from)) throw new Error(`--from: ${f.from ?? '(missing)'} is not a folder`);
  if (!f.to) throw new Error('--to: required (the folder under weights/)');
  if (!f.card) throw new Error('--card: required (a JSON file: title, summary, architecture, data, evaluation, reproduce)');
  let card: Record<string, unknown>;
  try {
    card = JSON.parse(readFileSync(f.card, 'utf8')) as Record<string, unknown>;
  } catch (e) {
    throw new Error(`--card: cannot read ${f.card}: ${(e as Error).message}`);
  }
  for (const k of ['title', 'summary', 'architecture', 'data', 'evaluation', 'reproduce']) if (card[k] === undefined) throw new Error(`--card: ${f.card} lacks "${k}"`);
  const checkpointPath = f.checkpoint ?? `${f.from}/checkpoint.safetensors`;
  const reader = F.openCheckpoint(checkpointPath);
  const meta = reader.metadata;
  let parameters = 0;
  for (const k of reader.keys()) if (!k.startsWith('optimizer.') && !k.startsWith('ema.')) parameters += reader.info(k).shape.reduce((a, b) => a * b, 1);
  reader.close();
  const log = JSON.parse(meta.log ?? '{"loss":[]}') as { loss: number[] };
  const cpus = osCpus();
  await getDevice();
  const bytes = await halfCopyFolder(f.from, f.to);
  const markdown = F.modelCardMarkdown({
    ...(card as unknown as F.ModelCard),
    parameters: Number(card.parameters ?? parameters),
    options: JSON.parse(meta.options ?? '{}') as Record<string, unknown>,
    steps: Number(meta.step),
    seconds: Number(card.seconds ?? meta.training_seconds ?? NaN),
    machine: String(card.machine ?? `${cpus.length} × ${cpus[0]?.model ?? 'CPU'}, WebGPU on ${deviceInfo().description}`),
    // the run's loss curve beside its checkpoint: loss.png, or text_to_image.loss.png for text_to_image.checkpoint.safetensors
    loss: { values: log.loss, picture: checkpointPath.replace(/^.*\//, '').replace(/checkpoint\.safetensors$/, 'loss.png') },
  });
  writeFileSync(`${f.to}/README.md`, markdown);
  console.log(`shipped ${f.from} → ${f.to}: ${(bytes / 2 ** 20).toFixed(2)} MiB (F16), model card README.md (${meta.step} steps)`);
}

async function trainHarmonizer(): Promise<void> {
  const f = flags({ model: 'rainnet or pct-net (default rainnet)', out: 'DIR (required)', ngf: 'N RainNet width (default 8)', ch: 'N PCT-Net width (default 16)', size: 'N (default 256 RainNet, 64 PCT-Net)', low: 'N PCT-Net low resolution (default 32)', steps: 'N (default 2000)', batch: 'N (default 4)', lr: 'X (default 2e-4 RainNet, 1e-3 PCT-Net)', count: 'N training pairs (default 100000)', seed: 'N (default 0)', 'save-minutes': 'M (default 5)' }, { resume: 'continue the checkpoint in --out' });
  const kind = f.model ?? 'rainnet';
  if (kind !== 'rainnet' && kind !== 'pct-net') throw new Error(`--model: expected rainnet or pct-net, got '${kind}'`);
  if (!f.out) throw new Error('--out: required (the model folder: checkpoint, config.json, model.safetensors)');
  await getDevice();
  const checkpoint = `${f.out}/checkpoint.safetensors`;
  const reader = switches.has('--resume') ? F.openCheckpoint(checkpoint) : undefined;
  if (!reader && existsSync(checkpoint)) throw new Error(`--out: ${checkpoint} exists; pass --resume to continue it, or choose a new folder`);
  const meta = reader?.metadata ?? {};
  const count = reader ? Number(meta.count) : intFlag(f, 'count', 100_000);
  const size = reader ? Number(meta.size) : intFlag(f, 'size', kind === 'rainnet' ? 256 : 64);
  F.manualSeed(intFlag(f, 'seed', 0));
  const build = <M,>(make: () => M) => (reader ? skipInit(make) : make());
  let task: F.TrainTask, configJson: Record<string, unknown>;
  if (kind === 'rainnet') {
    const config = reader ? JSON.parse(meta.config ?? '{}') as F.RainNetConfig : F.rainNetConfig({ ngf: intFlag(f, 'ngf', 8) });
    task = F.rainNetTask(build(() => new F.RainNet(config)), { count, size });
    configJson = { input_nc: config.inputNc, output_nc: config.outputNc, ngf: config.ngf, norm_layer: 'RAIN', use_attention: true, image_size: size };
  } else {
    const config = reader ? JSON.parse(meta.config ?? '{}') as F.PCTNetConfig : F.pctNetConfig({ ch: intFlag(f, 'ch', 16) });
    const low = reader ? Number(meta.low) : intFlag(f, 'low', 32);
    task = F.pctNetTask(build(() => new F.PCTNet(config)), { count, size, low });
    configJson = { _class_name: 'PCTNet', low_resolution: low, backbone_type: 'ssam', depth: config.depth, ch: config.ch, max_channels: config.maxChannels, batchnorm_from: config.batchnormFrom, attend_from: config.attendFrom, attention_mid_k: config.attentionMidK, transform_type: config.transform, affine: config.affine, clamp: config.clamp, input_normalization: { mean: config.mean, std: config.std }, use_attn: true };
  }
  const steps = intFlag(f, 'steps', 2000);
  const trainer = new F.Trainer(task, reader ? F.checkpointOptions(reader, { steps }) : {
    steps, batchSize: intFlag(f, 'batch', 4), lr: numberFlag(f, 'lr', kind === 'rainnet' ? 2e-4 : 1e-3), betas: [0.9, 0.999], seed: intFlag(f, 'seed', 0), schedule: 'constant', weightDecay: 0, clipNorm: 1,
  });
  if (reader) {
    trainer.restore(reader);
    reader.close();
  }
  const net = task.model;
  console.log(`training ${kind} (${(net.parameters().reduce((n, p) => n + p.size, 0) / 1e6).toFixed(3)} M parameters) on ShapeWorld pairs at ${size}², batch ${trainer.options.batchSize}, steps ${trainer.step}..${steps}`);
  await F.trainWithCheckpoints(trainer, async () => {
    mkdirSync(f.out!, { recursive: true });
    await trainer.saveCheckpoint(checkpoint);
    writeFileSync(`${f.out}/config.json`, JSON.stringify(configJson, null, 2));
    await F.saveSafetensors(`${f.out}/model.safetensors`, net.stateDict());
    await F.writePng(`${f.out}/loss.png`, F.lossCurve(trainer.log.loss));
  }, { minutes: numberFlag(f, 'save-minutes', 5) });
}

async function trainInstances(): Promise<void> {
  const f = flags({ segmenter: 'DIR: the Mask2Former whose Swin the branches read, frozen (required unless --resume)', out: 'DIR (required)', steps: 'N (default 2000)', batch: 'N (default 8)', lr: 'X (default 1e-3)', scale: 'X: image scale before the backbone, dividing 4 (default 2)', radius: 'N: pair radius on the grid (default 5)', count: 'N training scenes (default 10000)', seed: 'N (default 0)', 'save-minutes': 'M (default 5)' }, { resume: 'continue the checkpoint in --out' });
  if (!f.out) throw new Error('--out: required (the instance model folder: checkpoint, config.json, model.safetensors)');
  await getDevice();
  const checkpoint = `${f.out}/checkpoint.safetensors`;
  const reader = switches.has('--resume') ? F.openCheckpoint(checkpoint) : undefined;
  if (!reader && existsSync(checkpoint)) throw new Error(`--out: ${checkpoint} exists; pass --resume to continue it, or choose a new folder`);
  let net: F.IrnNet;
  if (reader) {
    net = skipInit(() => new F.IrnNet(F.parseIrnConfig(JSON.parse(reader.metadata.config ?? '{}'), `${checkpoint} metadata config`)));
  } else {
    if (!f.segmenter) throw new Error('--segmenter: required (a Mask2Former folder whose Swin backbone the instance branches read, frozen)');
    F.manualSeed(intFlag(f, 'seed', 0));
    net = F.IrnNet.fromSegmenter(f.segmenter, { inputScale: numberFlag(f, 'scale', 2), radius: intFlag(f, 'radius', 5) });
  }
  net.branches.requireGrad();
  const steps = intFlag(f, 'steps', 2000);
  const task = F.irnTask(net, { count: reader ? Number(reader.metadata.count) : intFlag(f, 'count', 10_000) });
  const trainer = new F.Trainer(task, reader ? F.checkpointOptions(reader, { steps }) : {
    steps, batchSize: intFlag(f, 'batch', 8), lr: numberFlag(f, 'lr', 1e-3), seed: intFlag(f, 'seed', 0), warmupSteps: 50, warmupFactor: 0.1, schedule: 'poly', power: 0.9, weightDecay: 1e-4, clipNorm: 1,
  });
  if (reader) {
    trainer.restore(reader);
    reader.close();
    console.log(`resumed ${checkpoint} at step ${trainer.step}`);
  }
  const trainable = net.branches.parameters().reduce((n, p) => n + p.size, 0);
  console.log(`training the instance branches (${(trainable / 1e6).toFixed(3)} M parameters; frozen Swin backbone) on ShapeWorld train scenes' class maps at ${64 * net.config.inputScale}², batch ${trainer.options.batchSize}, steps ${trainer.step}..${steps}`);
  await F.trainWithCheckpoints(trainer, async () => {
    mkdirSync(f.out!, { recursive: true });
    await trainer.saveCheckpoint(checkpoint);
    // the shipped weights carry IRNet's mean shift (the mean displacement over train scenes); the checkpoint keeps training's
    const running = await net.branches.mean_shift.runningMean.toArray();
    const shift = await F.fitMeanShift(net);
    writeFileSync(`${f.out}/config.json`, JSON.stringify(F.irnConfigJson(net.config), null, 2));
    await F.saveSafetensors(`${f.out}/model.safetensors`, net.stateDict());
    const restored = Tensor.fromArray(Float32Array.from(running), [2]);
    net.branches.mean_shift.runningMean.copyFrom(restored);
    restored.dispose();
    await F.writePng(`${f.out}/loss.png`, F.lossCurve(trainer.log.loss));
    console.log(`  saved (mean shift ${shift.map((v) => v.toFixed(3)).join(', ')})`);
  }, { minutes: numberFlag(f, 'save-minutes', 5) });
}

async function evalInstances(): Promise<void> {
  const f = flags({ model: 'DIR: an instance model folder (required)', segmenter: 'DIR: also from this Mask2Former\'s predicted masks', count: 'N scenes (default 200)', split: 'S (default test)', json: 'FILE: results as JSON' });
  if (!f.model) throw new Error('--model: required (an instance model folder, from train-instances)');
  await getDevice();
  const net = F.IrnNet.fromPretrained(f.model);
  const split = (f.split ?? 'test') as F.Split;
  const count = intFlag(f, 'count', 200);
  const samples = Array.from({ length: count }, (_, i) => {
    const seed = F.splitSeed(split, i);
    return F.sceneSample(F.generateScene(seed, { mode: 'scene', width: 64 }), F.worldImageId(seed));
  });
  const rows: Record<string, unknown>[] = [];
  const sources: [string, F.Mask2FormerForUniversalSegmentation | undefined][] = [['true semantic masks', undefined]];
  if (f.segmenter) sources.push([`${f.segmenter}'s predicted masks`, F.Mask2FormerForUniversalSegmentation.fromPretrained(f.segmenter)]);
  console.log(`instances from semantic masks on ${count} ShapeWorld ${split} scenes (mask AP / AP50 / AP75, COCO-style)`);
  for (const [source, segmenter] of sources) {
    const r = await F.evaluateInstances(samples, net, { segmenter });
    for (const [method, ap] of r) {
      rows.push({ source, method, ap: ap.ap, ap50: ap.ap50, ap75: ap.ap75 });
      console.log(`  ${source.padEnd(40)} ${method.padEnd(13)} AP ${(100 * ap.ap).toFixed(1)}  AP50 ${(100 * ap.ap50).toFixed(1)}  AP75 ${(100 * ap.ap75).toFixed(1)}`);
    }
  }
  if (f.json) writeFileSync(f.json, JSON.stringify({ split, count, rows }, null, 2));
}

/** Adds an instance layer (SegmentationObject + annotations/instances.json) to a VOC-layout folder. */
async function instances(): Promise<void> {
  const f = flags({ data: 'DIR: a VOC-layout folder (required)', model: 'DIR: an instance model folder', method: 'components, displacement or irn (default irn with --model, else components)', split: 'S: only this ImageSets split' }, { overwrite: 'replace an existing instance layer', quiet: 'no progress on stderr' });
  if (!f.data) throw new Error('--data: required (a VOC-layout folder with SegmentationClass maps)');
  const method = (f.method ?? (f.model ? 'irn' : 'components')) as F.InstanceMethod;
  if (!F.instanceMethods.includes(method)) throw new Error(`--method: expected one of ${F.instanceMethods.join(', ')}, got '${method}'`);
  if (method !== 'components' && !f.model) throw new Error(`--model: required by --method ${method} (an instance model folder)`);
  if (f.model && !existsSync(`${f.model}/config.json`)) throw new Error(`--model: ${f.model} has no config.json (not an instance model folder)`);
  await getDevice();
  const net = f.model ? F.IrnNet.fromPretrained(f.model) : undefined;
  const r = await F.addInstancesToFolder(f.data, method, net, { overwrite: switches.has('--overwrite'), split: f.split, onImage: progress(performance.now()) });
  console.log(`wrote ${r.instances} instances of ${r.images} images into ${f.data} (${F.vocFolders.objects}/, annotations/instances.json; method ${method})`);
}

async function evalHarmonization(): Promise<void> {
  const f = flags({ count: 'N pairs (default 200)', size: 'N (default 256 with --rainnet, else 64)', split: 'S (default val)', json: 'FILE: results as JSON', rainnet: 'DIR: a RainNet folder', pctnet: 'DIR: a PCT-Net folder', sheet: 'PNG: composite | each method | target for the first 6 pairs' });
  const count = intFlag(f, 'count', 200);
  const harmonizers: Record<string, F.Harmonizer> = { none: (c) => c, reinhard: (c, m) => F.reinhardHarmonize(c, m) };
  if (f.rainnet) {
    await getDevice();
    harmonizers.rainnet = F.rainNetHarmonizer(F.RainNet.fromPretrained(f.rainnet));
  }
  if (f.pctnet) {
    await getDevice();
    harmonizers['pct-net'] = F.harmonizerFromName(`pct-net:${f.pctnet}`, '--pctnet');
  }
  const size = intFlag(f, 'size', f.rainnet ? 256 : 64);
  const rows = await F.harmonizationTable(harmonizers, (f.split ?? 'val') as F.Split, Array.from({ length: count }, (_, i) => i), size);
  console.log(`harmonization on ${count} held-out ShapeWorld pairs (${f.split ?? 'val'}, ${size}²):`);
  for (const r of rows) console.log(`${r.method.padEnd(10)} MSE ${r.mse.toFixed(2).padStart(8)}  fMSE ${r.fmse.toFixed(2).padStart(8)}  PSNR ${r.psnr.toFixed(2)} dB`);
  if (f.json) writeFileSync(f.json, JSON.stringify(rows, null, 2));
  if (f.sheet) {
    await F.writePng(f.sheet, await F.harmonizationSheet(harmonizers, (f.split ?? 'val') as F.Split, Array.from({ length: Math.min(count, 6) }, (_, i) => i), size));
    console.log(`wrote ${f.sheet}: composite | ${Object.keys(harmonizers).join(' | ')} | target, one pair per row`);
  }
}

async function evalSegmenter(): Promise<void> {
  const f = flags({ model: 'DIR: a Mask2Former folder (required)', data: 'DIR: a VOC-layout folder (required)', split: 'S: only this ImageSets split' });
  if (!f.model) throw new Error('--model: required (a folder with config.json and model.safetensors)');
  if (!f.data) throw new Error('--data: required (a VOC-layout folder)');
  await getDevice();
  const model = F.Mask2FormerForUniversalSegmentation.fromPretrained(f.model);
  const r = await F.evaluateSegmenter(model, await F.readVocSamples(f.data, f.split));
  const names = F.vocClassNames;
  r.iou.forEach((v, c) => {
    if (!Number.isNaN(v)) console.log(`${String(c).padStart(3)} ${(names[c] ?? `class_${c}`).padEnd(14)} IoU ${(100 * v).toFixed(1)}`);
  });
  console.log(`mIoU ${(100 * r.miou).toFixed(2)}  pixel accuracy ${(100 * r.pixelAccuracy).toFixed(2)}  (${r.images} images)`);
  if (r.maskAp) console.log(`mask AP ${(100 * r.maskAp.ap).toFixed(2)}  AP50 ${(100 * r.maskAp.ap50).toFixed(2)}  AP75 ${(100 * r.maskAp.ap75).toFixed(2)}`);
}

async function demo(): Promise<void> {
  flags({});
  const t0 = performance.now();
  await getDevice();
  const info = deviceInfo();
  console.log(`adapter: ${info.description}`);
  console.log(`features: ${info.features.join(', ')}`);
  console.log(`max storage buffer: ${(info.limits.maxStorageBufferBindingSize / 2 ** 20).toFixed(0)} MiB`);

  const x = Tensor.fromArray(Float32Array.from({ length: 2 * 3 * 8 * 8 }, (_, i) => Math.sin(i)), [2, 3, 8, 8]).requireGrad();
  const w = Tensor.fromArray(Float32Array.from({ length: 4 * 3 * 3 * 3 }, (_, i) => Math.cos(i) / 5), [4, 3, 3, 3]).requireGrad();
  const head = Tensor.fromArray(Float32Array.from({ length: 20 }, (_, i) => (i % 7) / 7 - 0.4), [5, 4]);
  const labels = Tensor.fromArray(new Int32Array([1, 3]), [2]);
  const loss = tidy(() => {
    const h = F.silu(F.groupNorm(F.conv2d(x, w, undefined, { padding: 1 }), 2));
    const logits = F.linear(F.reshape(F.adaptiveAvgPool2d(h, [1, 1]), [2, 4]), head);
    return F.crossEntropy(logits, labels);
  });
  backward(loss);
  const [l, gx, gw] = [await loss.item(), Float32Array.from(await x.grad!.toArray()), Float32Array.from(await w.grad!.toArray())];
  await sync();
  console.log(`conv2d → group_norm → silu → pool → linear → cross_entropy: loss ${l.toFixed(6)}`);
  console.log(`backward: |dL/dx|₁ ${gx.reduce((a, b) => a + Math.abs(b), 0).toFixed(6)}, |dL/dw|₁ ${gw.reduce((a, b) => a + Math.abs(b), 0).toFixed(6)}`);
  const m = memoryStats();
  console.log(`memory: live ${m.liveBytes} B, peak ${m.peakBytes} B, pooled ${m.pooledBytes} B`);
  console.log(`done in ${(performance.now() - t0).toFixed(0)} ms`);
  for (const t of [x, w, head, labels, loss]) t.dispose();
  const sheet = 'out/demo/shapeworld-contact.png';
  await writeWorldContactSheet(sheet);
  console.log(`ShapeWorld: 64 validation scenes with their masks in ${sheet}`);
  const zoo = new URL('../weights/shapeworld-sd', import.meta.url).pathname;
  const oracle = new URL('../weights/shapeworld-oracle', import.meta.url).pathname;
  await zooDemo(zoo, oracle, 'out/demo/zoo.png');
}

/**
 * Stage 1 on the embedded zoo: one image per ShapeWorld class (on the background it fits best) sampled with
 * attention capture, its mask, the mask refined by AffinityNet, and the oracle's segmentation; the sheet and the
 * numbers of these images (prompt fidelity, mask IoU against the oracle).
 */
async function zooDemo(zoo: string, oracleDir: string, path: string): Promise<void> {
  const t0 = performance.now();
  const pipe = await F.StableDiffusionPipeline.fromPretrained(zoo, { unet: F.UNet2DConditionModel, vae: F.AutoencoderKL });
  const oracle = F.Mask2FormerForUniversalSegmentation.fromPretrained(oracleDir);
  const pairs = F.worldPromptPairs().filter((p, i, all) => all.findIndex((q) => q.classId === p.classId) === i);
  const r = await F.evaluateTextToImage(pipe, oracle, { pairs, samplesPerPair: 1, numInferenceSteps: 20, seed: 1 });
  mkdirSync(path.replace(/\/[^/]*$/, ''), { recursive: true });
  await F.writePng(path, await evaluationSheet(r.samples));
  console.log(`zoo (${zoo}): ${pairs.length} classes, one image each: prompt fidelity ${(100 * r.fidelity).toFixed(0)}%, attention-mask IoU ${r.iouRaw.toFixed(3)}, refined ${r.iouRefined.toFixed(3)} (against the oracle)`);
  console.log(`one class per row (image | heat map | mask | refined mask | oracle) in ${path} (${((performance.now() - t0) / 1000).toFixed(0)} s)`);
}

const summaries: Record<string, string> = {
  demo: 'the main job on the embedded default: engine smoke run, ShapeWorld sheet, text → image → mask → refined mask',
  world: 'write a ShapeWorld dataset (VOC layout + COCO instances + prompts)',
  eval: 'mIoU, boundary F and mask AP of a prediction folder against a truth folder',
  'train-segmenter': 'train a Mask2Former on VOC-layout folders (resumable)',
  'eval-segmenter': 'per-class IoU, mIoU and mask AP of a Mask2Former folder on a VOC-layout folder',
  'train-diffusion': 'train the zoo\'s Stable Diffusion on ShapeWorld folders: --stage vae, then --stage unet (resumable)',
  'eval-diffusion': 'VAE PSNR, prompt fidelity and attention-mask IoU against an oracle, sampling speed',
  compose: 'compose multi-object scenes from single-object pictures with FOPA placement (exact masks)',
  'train-fopa': 'train FOPA on ShapeWorld placements (resumable)',
  'eval-fopa': 'FOPA\'s F1, balanced accuracy and top-1 plausibility against random on held-out placements',
  'export-half': 'copy a trained folder as it ships (F16 weights, no checkpoints)',
  ship: 'copy a finished run into weights/ with F16 weights and its model card',
  'eval-harmonization': 'fMSE / MSE / PSNR of harmonizers on held-out ShapeWorld pairs',
  'train-harmonizer': 'train RainNet or PCT-Net on ShapeWorld pairs (resumable)',
  'train-instances': 'train the instance branches (IRNet) from class maps on ShapeWorld (resumable)',
  'eval-instances': 'mask AP of instances from semantic masks: components, displacement field, IRNet',
  instances: 'add an instance layer (SegmentationObject + COCO) to a VOC-layout folder',
  generate: 'the whole Free-Mask pipeline: a dataset of images + semantic and instance masks from a class list (resumable, shardable)',
  merge: 'join the shards of one generate run (freemask merge DIR... --out DIR)',
  gallery: 'a static index.html of a dataset folder: pictures, mask overlays, curate verdicts, filters',
  curate: 'the active-learning loop: train Mask2Former, drop samples whose mask disagrees with it, retrain (resumable)',
};

const commands: Record<string, () => Promise<void>> = { demo, world, eval: evaluate, 'train-segmenter': trainSegmenter, 'eval-segmenter': evalSegmenter, 'train-diffusion': trainDiffusion, 'eval-diffusion': evalDiffusion, compose, 'train-fopa': trainFopa, 'eval-fopa': evalFopa, 'export-half': exportHalf, ship, 'eval-harmonization': evalHarmonization, 'train-harmonizer': trainHarmonizer, 'train-instances': trainInstances, 'eval-instances': evalInstances, instances, generate, merge, curate, gallery };
const run = commands[command];
if (!run) {
  if (command === '--help' || command === '-h' || command === 'help') {
    console.log(`freemask COMMAND [options]   (freemask COMMAND --help lists a command's options)\n${Object.keys(commands).map((c) => `  ${c.padEnd(20)} ${summaries[c] ?? ''}`).join('\n')}`);
    process.exit(0);
  }
  console.error(`freemask: unknown command '${command}'. Commands: ${Object.keys(commands).join(', ')}`);
  process.exit(2);
}
try {
  await run();
} catch (e) {
  const stopped = e instanceof F.TrainingStopped ? e : undefined;
  // how to go on: curate resumes on a plain rerun, the train commands with --resume
  const goOn = stopped ? `: ${command === 'curate' ? 'rerun the same command' : 'run the same command with --resume'} to go on` : '';
  console.error(`freemask ${command}: ${(e as Error).message}${goOn}`);
  // the shell's codes for a process ended by the signal (128 + its number)
  process.exit(stopped ? (stopped.signal === 'SIGINT' ? 130 : 143) : 1);
}
process.exit(0);
