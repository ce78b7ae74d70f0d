// Training the zoo's Stable Diffusion parts on ShapeWorld with tiny configs: the VAE loss terms against CPU
// formulas, SD's scaling factor, the text-to-image task resuming bit-exactly (latent draws, timesteps, noise
// and prompt dropping all seeded), and the written diffusers folder loading back (tokenizer, text encoder,
// UNet and VAE give the same outputs as the trained modules).
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { assertClose } from './helpers.ts';
import { Tensor, tidy } from '../src/engine/tensor.ts';
import { backward, noGrad } from '../src/engine/autograd.ts';
import { manualSeed, seededRandom } from '../src/engine/random-cpu.ts';
import { randn } from '../src/kernels/random.ts';
import { mul } from '../src/kernels/elementwise.ts';
import { AutoencoderKL, autoencoderConfig, autoencoderConfigJson } from '../src/models/autoencoder_kl.ts';
import { CLIPTextModel, clipTextConfig } from '../src/models/clip_text_model.ts';
import { CLIPTokenizer } from '../src/models/clip_tokenizer.ts';
import { ConfigReader } from '../src/models/pretrained.ts';
import { DDIMScheduler } from '../src/models/schedulers.ts';
import { StableDiffusionPipeline } from '../src/models/stable_diffusion.ts';
import { UNet2DConditionModel, unetConfig } from '../src/models/unet_2d_condition.ts';
import { saveSafetensors } from '../src/io/safetensors.ts';
import { generateScene } from '../src/world/scene.ts';
import { gaussianKl, imageBatch, latentScalingFactor } from '../src/train/autoencoder.ts';
import { TextToImageModel, encodeLatents, groundingLoss, groundingTargets, saveTextToImagePipeline, sdSchedulerConfig, textToImageTask } from '../src/train/text_to_image.ts';
import { AttentionCapture } from '../src/models/attention_capture.ts';
import { classSpec } from '../src/world/classes.ts';
import { Trainer, checkpointOptions, openCheckpoint } from '../src/train/trainer.ts';

const fs = process.getBuiltinModule('node:fs');
const os = process.getBuiltinModule('node:os');
const path = process.getBuiltinModule('node:path');
const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'freemask-t2i-'));

const S = 32;
const images = Array.from({ length: 6 }, (_, k) => {
  const s = generateScene(k, { mode: k % 2 ? 'scene' : 'single', width: S });
  return { id: `sw${k}`, width: S, height: S, image: s.image, prompt: s.prompt };
});
const vaeJson = {
  in_channels: 3, out_channels: 3, latent_channels: 4, block_out_channels: [8, 16], layers_per_block: 1, norm_num_groups: 4,
  down_block_types: ['DownEncoderBlock2D', 'DownEncoderBlock2D'], up_block_types: ['UpDecoderBlock2D', 'UpDecoderBlock2D'],
};
const unetJson = {
  sample_size: 16, in_channels: 4, out_channels: 4, block_out_channels: [16, 32], layers_per_block: 1, attention_head_dim: 2, cross_attention_dim: 16, norm_num_groups: 8,
  down_block_types: ['CrossAttnDownBlock2D', 'DownBlock2D'], up_block_types: ['UpBlock2D', 'CrossAttnUpBlock2D'],
};
const clipJson = { vocab_size: 49408, hidden_size: 16, intermediate_size: 32, num_hidden_layers: 1, num_attention_heads: 2, max_position_embeddings: 24, hidden_act: 'quick_gelu' };

test('VAE terms: image batches in [−1, 1] (flips), KL against its formula, scaling factor = 1 / std of the latents', async () => {
  const x = imageBatch(images, [0, 1], [false, true]);
  const data = await x.toArray();
  const px = (i: number, c: number, y: number, xx: number) => data[((i * 3 + c) * S + y) * S + xx]!;
  assert.ok(Math.abs(px(0, 1, 3, 5) - (images[0]!.image[3 * (3 * S + 5) + 1]! / 127.5 - 1)) < 1e-6);
  assert.ok(Math.abs(px(1, 2, 7, 0) - (images[1]!.image[3 * (7 * S + S - 1) + 2]! / 127.5 - 1)) < 1e-6, 'the second image is mirrored');
  x.dispose();
  const mean = randn([2, 4, 3, 3], { seed: 1 });
  const logvar = randn([2, 4, 3, 3], { seed: 2 });
  const kl = gaussianKl(mean, logvar);
  const [m, v] = [Float32Array.from(await mean.toArray()), Float32Array.from(await logvar.toArray())];
  const want = 0.5 * m.reduce((a, mu, k) => a + mu * mu + Math.exp(v[k]!) - 1 - v[k]!, 0);
  assert.ok(Math.abs((await kl.item()) - want) < 1e-4 * Math.abs(want));
  for (const t of [mean, logvar, kl]) t.dispose();

  const vae = new AutoencoderKL(autoencoderConfig(new ConfigReader(vaeJson, 'tiny VAE')));
  const factor = await latentScalingFactor(vae, images, 4);
  const latents = noGrad(() => tidy(() => vae.encode(imageBatch(images, images.map((_, k) => k))).mean));
  const z = Float32Array.from(await latents.toArray());
  const mu = z.reduce((a, b) => a + b, 0) / z.length;
  const std = Math.sqrt(z.reduce((a, b) => a + (b - mu) ** 2, 0) / (z.length - 1));
  assert.ok(Math.abs(factor * std - 1) < 1e-4, `scaling factor ${factor} vs 1/std ${1 / std}`);
  latents.dispose();
  vae.dispose();
});

const build = () => new TextToImageModel(new UNet2DConditionModel(unetConfig(new ConfigReader(unetJson, 'tiny UNet'))), new CLIPTextModel(clipTextConfig(clipJson, 'tiny CLIP')));
const options = { steps: 3, batchSize: 3, lr: 1e-3, warmupSteps: 1, emaDecay: 0.9, clipNorm: 1, seed: 11 };

async function setup() {
  const vae = new AutoencoderKL(autoencoderConfig(new ConfigReader({ ...vaeJson, block_out_channels: [8], down_block_types: ['DownEncoderBlock2D'], up_block_types: ['UpDecoderBlock2D'] }, 'tiny VAE')));
  const latents = await encodeLatents(vae, images, 4);
  vae.dispose();
  const tokenizer = await CLIPTokenizer.fromPretrained(undefined, { maxLength: 24 });
  return { latents, tokenizer };
}

test('min-SNR-γ: one sample\'s loss is the plain ε loss × min(SNR_t, γ)/SNR_t of the timestep its batch seed draws', async () => {
  const { latents, tokenizer } = await setup();
  const ac = new DDIMScheduler(sdSchedulerConfig).alphasCumprod;
  manualSeed(3);
  const model = build();
  const prompts = images.map((i) => i.prompt);
  const plain = textToImageTask(model, tokenizer, prompts, latents, { scalingFactor: 0.5, alphasCumprod: ac });
  const weighted = textToImageTask(model, tokenizer, prompts, latents, { scalingFactor: 0.5, alphasCumprod: ac, snrGamma: 5 });
  for (const seed of [1, 2, 3, 4]) {
    const batch = { indices: [seed % images.length], seed, step: 0, micro: 0 };
    const [a, b] = [await (await plain.loss(batch)).item(), await (await weighted.loss(batch)).item()];
    // the task's first draw from seededRandom(seed) is the timestep
    const t = Math.floor(seededRandom(seed)() * ac.length);
    const snr = ac[t]! / (1 - ac[t]!);
    assertClose([b], [(a * Math.min(snr, 5)) / snr], 1e-5 * Math.max(1, a), `seed ${seed}, t ${t}`);
  }
  assert.throws(() => textToImageTask(model, tokenizer, prompts, latents, { scalingFactor: 0.5, alphasCumprod: ac, snrGamma: 0 }), /snrGamma must be positive/);
  model.dispose();
});

test('grounding: graph-mode maps = the captured ones; L_token against its formula and finite differences; targets from class maps; added to the ε loss', async () => {
  const { latents, tokenizer } = await setup();
  manualSeed(4);
  const model = build().requireGrad();
  // distinct tokens (the embedding tables start at 0, left for loaders) and sharper cross-attention, so that
  // attention moves with the weights
  const emb = model.textEncoder.text_model.embeddings;
  for (const [t, seed] of [[emb.token_embedding.weight, 1], [emb.position_embedding.weight, 2]] as const) t.copyFrom(randn(t.shape, { seed }));
  for (const [name, t] of Object.entries(model.unet.stateDict())) if (/attn2\.to_k\.weight$/.test(name)) t.copyFrom(tidy(() => mul(t, 10)));
  // targets: the classes of 64×64 ShapeWorld pictures (so 32×32 attention averages 2×2 pixels)
  const scenes = [1, 3].map((k) => generateScene(k, { mode: 'scene', width: 64 }));
  const targets = scenes.map((s) => groundingTargets(tokenizer, s.prompt, s.semantic, 64, 64, (c) => classSpec(c).words));
  for (const [i, s] of scenes.entries()) {
    const shown = [...new Set(s.semantic)].filter((c) => c !== 0 && c !== 255);
    assert.is(targets[i]!.length, shown.length, s.prompt);
    for (const [j, c] of shown.sort((a, b) => a - b).entries()) {
      const words = classSpec(c).words;
      assert.equal(targets[i]![j]!.tokens, tokenizer.tokenSpans(s.prompt, s.prompt.includes(words[1]) ? words[1] : words[0]).flat(), `${s.prompt}: ${c}`);
      assert.equal(targets[i]![j]!.mask, s.semantic.map((v) => (v === c ? 1 : 0)));
    }
  }
  const ids = Tensor.fromArray(Int32Array.from(scenes.flatMap((s) => tokenizer.encode(s.prompt))), [2, 24], 'i32');
  const x = randn([2, 4, S, S], { seed: 9 });
  const lossOf = () => tidy(() => {
    const capture = new AttentionCapture({ cross: true, mode: 'graph', resolutions: [S] });
    try {
      model.unet.forward(x, [10, 600], model.textEncoder.forward(ids), { capture });
      return groundingLoss(capture.graphMaps(), targets)!;
    } finally {
      capture.dispose();
    }
  });
  // the maps: the same probabilities as a per-layer capture
  const graph = new AttentionCapture({ cross: true, mode: 'graph', resolutions: [S] });
  const perLayer = new AttentionCapture({ cross: true, mode: 'per-layer', resolutions: [S] });
  const hidden = noGrad(() => model.textEncoder.forward(ids));
  noGrad(() => [model.unet.forward(x, [10, 600], hidden, { capture: graph }), model.unet.forward(x, [10, 600], hidden, { capture: perLayer })]).forEach((t) => t.dispose());
  assert.is(graph.graphMaps().length, 3, 'the cross-attentions at 32×32: one down, two up');
  const cover = (mask: Uint8Array, u: number) => { const [gy, gx] = [Math.floor(u / S), u % S]; return (mask[2 * gy * 64 + 2 * gx]! + mask[2 * gy * 64 + 2 * gx + 1]! + mask[(2 * gy + 1) * 64 + 2 * gx]! + mask[(2 * gy + 1) * 64 + 2 * gx + 1]!) / 4; };
  let naive = 0, n = 0;
  for (const g of graph.graphMaps()) {
    assertClose(await g.probs.toArray(), await perLayer.get(g.name)!.sum.toArray(), 2e-5, g.name);
    const [, H, Lq, Lk] = g.probs.shape as number[];
    const probs = await g.probs.toArray();
    targets.forEach((ts, i) => ts.forEach((t) => {
      let inside = 0, all = 0;
      for (let u = 0; u < Lq!; u++) for (const p of t.tokens) for (let h = 0; h < H!; h++) {
        const a = probs[((i * H! + h) * Lq! + u) * Lk! + p]! / H!;
        all += a;
        inside += a * cover(t.mask, u);
      }
      naive += (1 - inside / all) ** 2;
      n++;
    }));
  }
  graph.dispose();
  perLayer.dispose();
  hidden.dispose();
  const loss = lossOf();
  assertClose([await loss.item()], [naive / n], 1e-5, 'L_token');
  // the gradient of the query/key weight element with the largest gradient against central differences
  backward(loss);
  const keys = Object.entries(model.unet.stateDict()).filter(([name]) => /attn2\.to_[qk]\.weight$/.test(name)).map(([, t]) => t);
  const norms = await Promise.all(keys.map(async (t) => Math.max(...(await t.grad!.toArray()).map(Math.abs))));
  const w = keys[norms.indexOf(Math.max(...norms))]!;
  const grad = Float32Array.from(await w.grad!.toArray());
  const k = grad.reduce((best, g, j) => (Math.abs(g) > Math.abs(grad[best]!) ? j : best), 0);
  const values = Float32Array.from(await w.toArray());
  const at = async (delta: number) => {
    const v = values.slice();
    v[k]! += delta;
    w.copyFrom(Tensor.fromArray(v, w.shape));
    const l = noGrad(lossOf);
    const r = await l.item();
    l.dispose();
    return r;
  };
  const eps = 1e-2;
  const fd = ((await at(eps)) - (await at(-eps))) / (2 * eps);
  await at(0);
  assert.ok(Math.abs(fd - grad[k]!) < 0.03 * Math.abs(grad[k]!), `dL/dw[${k}]: autograd ${grad[k]} vs finite differences ${fd}`);
  // in the task: ε loss + weight · L_token, nothing from a dropped prompt
  const ac = new DDIMScheduler(sdSchedulerConfig).alphasCumprod;
  const prompts = images.map((i) => i.prompt);
  const all = images.map((_, k) => (k < 2 ? targets[k]! : []));
  const task = (weight?: number, dropPrompt = 0) => textToImageTask(model, tokenizer, prompts, latents, { scalingFactor: 0.5, alphasCumprod: ac, dropPrompt, ...(weight && { grounding: { weight, targets: all, resolutions: [S] } }) });
  const batch = { indices: [0, 1], seed: 5, step: 0, micro: 0 };
  const value = async (t: ReturnType<typeof task>) => { const l = await t.loss(batch); const r = await l.item(); l.dispose(); return r; };
  const [plain, one, two, dropped] = [await value(task()), await value(task(1)), await value(task(2)), await value(task(1, 1))];
  assert.ok(one - plain > 1e-3, `grounding adds ${one - plain}`);
  assertClose([two - plain], [2 * (one - plain)], 1e-5, 'linear in the weight');
  assertClose([dropped], [await value(task(undefined, 1))], 1e-6, 'a dropped prompt has no targets');
  assert.throws(() => task(-1), /grounding weight must be positive/);
  model.dispose();
  ids.dispose();
  x.dispose();
});

test('train-diffusion --snr-gamma and --grounding: kept in the checkpoint from the step they started, also when a resume switches a run to them', async () => {
  const root = new URL('..', import.meta.url).pathname;
  const cp = process.getBuiltinModule('node:child_process');
  const cli = (...args: string[]) => {
    const r = cp.spawnSync(process.execPath, ['--import', 'tsx', `${root}bin/freemask.ts`, ...args], { encoding: 'utf8' });
    assert.is(r.status, 0, r.stderr);
  };
  cli('world', '--split', 'train', '--count', '4', '--mode', 'single', '--size', String(S), '--out', `${dir}/cli-data`, '--quiet');
  const vae = new AutoencoderKL(autoencoderConfig(new ConfigReader(vaeJson, 'tiny VAE')));
  fs.writeFileSync(`${dir}/cli-config.json`, JSON.stringify({ unet: unetJson, textEncoder: { architectures: ['CLIPTextModel'], ...clipJson } }));
  for (const run of ['gamma', 'switched']) {
    fs.mkdirSync(`${dir}/${run}/vae`, { recursive: true });
    fs.writeFileSync(`${dir}/${run}/vae/config.json`, JSON.stringify(autoencoderConfigJson({ ...vae.config, scaling_factor: 0.5 }, S)));
    await saveSafetensors(`${dir}/${run}/vae/diffusion_pytorch_model.safetensors`, vae.stateDict(), { format: 'pt' });
  }
  vae.dispose();
  const meta = (run: string) => openCheckpoint(`${dir}/${run}/text_to_image.checkpoint.safetensors`).metadata;
  const train = (run: string, steps: number, ...more: string[]) => cli('train-diffusion', '--stage', 'unet', '--data', `${dir}/cli-data`, '--out', `${dir}/${run}`, '--model-config', `${dir}/cli-config.json`, '--steps', String(steps), '--batch', '2', ...more);
  train('gamma', 1, '--snr-gamma', '5');
  train('gamma', 2, '--resume');
  assert.equal([meta('gamma').snr_gamma, meta('gamma').snr_gamma_from, meta('gamma').step], ['5', '0', '2']);
  train('switched', 2);
  assert.is(meta('switched').snr_gamma, undefined);
  train('switched', 3, '--resume', '--snr-gamma', '3');
  train('switched', 4, '--resume');
  assert.equal([meta('switched').snr_gamma, meta('switched').snr_gamma_from, meta('switched').step], ['3', '2', '4']);
  // the grounding loss the same way
  train('switched', 5, '--resume', '--grounding', '0.1');
  train('switched', 6, '--resume');
  assert.equal([meta('switched').grounding, meta('switched').grounding_from, meta('switched').snr_gamma, meta('switched').step], ['0.1', '4', '3', '6']);
});

test('SIGTERM stops train-diffusion after a step with its checkpoint saved and no pipeline written (exit 143); --resume goes on', async () => {
  const root = new URL('..', import.meta.url).pathname;
  const cp = process.getBuiltinModule('node:child_process');
  const run = `${dir}/stopped`;
  fs.cpSync(`${dir}/gamma/vae`, `${run}/vae`, { recursive: true });
  const args = ['--import', 'tsx', `${root}bin/freemask.ts`, 'train-diffusion', '--stage', 'unet', '--data', `${dir}/cli-data`, '--out', run, '--model-config', `${dir}/cli-config.json`, '--batch', '2'];
  const child = cp.spawn(process.execPath, [...args, '--steps', '100000']);
  let stdout = '', stderr = '';
  child.stderr.on('data', (d: Buffer) => { stderr += d; });
  const code = await new Promise<number | null>((resolve) => {
    child.stdout.on('data', (d: Buffer) => {
      stdout += d;
      if (/step 10\/100000/.test(stdout)) child.kill('SIGTERM');
    });
    child.on('exit', (c) => resolve(c));
  });
  assert.is(code, 143, stderr);
  const step = Number(/stopped by SIGTERM at step (\d+), checkpoint saved: run the same command with --resume to go on/.exec(stderr)?.[1]);
  assert.ok(step >= 10 && step < 100000, stderr);
  assert.is(openCheckpoint(`${run}/text_to_image.checkpoint.safetensors`).metadata.step, String(step));
  assert.not.ok(fs.existsSync(`${run}/model_index.json`) || fs.existsSync(`${run}/unet`), 'no pipeline from a stopped run');
  const resumed = cp.spawnSync(process.execPath, [...args, '--steps', String(step + 1), '--resume'], { encoding: 'utf8' });
  assert.is(resumed.status, 0, resumed.stderr);
  assert.match(resumed.stdout, new RegExp(`resumed .* at step ${step}`));
  assert.ok(fs.existsSync(`${run}/model_index.json`) && fs.existsSync(`${run}/unet/config.json`));
});

test('text-to-image training resumes bit-exactly: 3 steps = 1 step, checkpoint, fresh model, restore, 2 steps', async () => {
  const { latents, tokenizer } = await setup();
  assert.equal(latents.shape, [4, 32, 32]);
  const alphasCumprod = new DDIMScheduler(sdSchedulerConfig).alphasCumprod;
  const prompts = images.map((i) => i.prompt);
  // every other batch element drops its prompt, so both kinds of text states are in the run
  const make = (model: TextToImageModel) => textToImageTask(model, tokenizer, prompts, latents, { scalingFactor: 0.5, alphasCumprod, dropPrompt: 0.5 });
  // two models with the same initial weights: one trains straight, the other is killed after a step
  const first = build();
  const again = build();
  again.loadStateDict(first.stateDict());
  const a = new Trainer(make(first), options);
  await a.train();
  const b = new Trainer(make(again), options);
  await b.trainStep();
  await b.saveCheckpoint(`${dir}/t2i.safetensors`);
  b.optimizer.dispose();
  b.ema!.dispose();
  again.dispose();
  const reader = openCheckpoint(`${dir}/t2i.safetensors`);
  const c = new Trainer(make(build()), checkpointOptions(reader));
  c.restore(reader);
  reader.close();
  await c.train();
  const [wa, wc] = [a.task.model.stateDict(), c.task.model.stateDict()];
  for (const [n, t] of Object.entries(wa)) assert.equal(new Uint8Array((await wc[n]!.toArray()).buffer), new Uint8Array((await t.toArray()).buffer), `${n} after resume`);
  assert.equal(c.log, a.log);
  assert.ok(a.log.loss.every((l) => Number.isFinite(l) && l > 0.2 && l < 5), `ε-MSE losses ${a.log.loss}`);
  for (const t of [a, c]) {
    t.optimizer.dispose();
    t.ema!.dispose();
    t.task.model.dispose();
  }
});

test('the written diffusers folder loads with StableDiffusionPipeline.fromPretrained and gives the same outputs', async () => {
  const { tokenizer } = await setup();
  const model = build();
  const vae = new AutoencoderKL(autoencoderConfig(new ConfigReader(vaeJson, 'tiny VAE')));
  fs.mkdirSync(`${dir}/sd/vae`, { recursive: true });
  fs.writeFileSync(`${dir}/sd/vae/config.json`, JSON.stringify(autoencoderConfigJson({ ...vae.config, scaling_factor: 0.7 }, S)));
  await saveSafetensors(`${dir}/sd/vae/diffusion_pytorch_model.safetensors`, vae.stateDict(), { format: 'pt' });
  await saveTextToImagePipeline(`${dir}/sd`, { unetConfig: unetJson, textEncoderConfig: { architectures: ['CLIPTextModel'], ...clipJson }, weights: model.stateDict(), tokenizer });
  const pipe = await StableDiffusionPipeline.fromPretrained(`${dir}/sd`, { unet: UNet2DConditionModel, vae: AutoencoderKL });
  assert.is(pipe.tokenizer.maxLength, 24);
  assert.is(pipe.vaeScalingFactor, 0.7);
  assert.equal(pipe.sampleSize, [16, 16]);
  assert.equal(pipe.tokenizer.encode(images[1]!.prompt), tokenizer.encode(images[1]!.prompt));
  const ids = Tensor.fromArray(Int32Array.from(tokenizer.encode(images[3]!.prompt)), [1, 24], 'i32');
  const text = noGrad(() => model.textEncoder.forward(ids));
  await assertClose(await noGrad(() => pipe.textEncoder.forward(ids)).toArray(), await text.toArray(), 1e-6, 'text encoder');
  const noisy = randn([1, 4, 16, 16], { seed: 3 });
  const ours = noGrad(() => model.unet.forward(noisy, [500], text));
  const loaded = noGrad(() => (pipe.unet as UNet2DConditionModel).forward(noisy, [500], text));
  assertClose(await loaded.toArray(), await ours.toArray(), 1e-6, 'UNet');
  const index = JSON.parse(fs.readFileSync(`${dir}/sd/model_index.json`, 'utf8'));
  assert.equal(index.unet, ['diffusers', 'UNet2DConditionModel']);
  assert.equal(index.scheduler, ['diffusers', 'DDIMScheduler']);
  for (const t of [ids, text, noisy, ours, loaded]) t.dispose();
  model.dispose();
  vae.dispose();
});

test.after(() => fs.rmSync(dir, { recursive: true }));
test.run();
