// eval-diffusion's measures recomputed naively from what they return: the VAE's PSNR from decoded pixels,
// prompt fidelity and mask IoU from each sample's oracle map and mask, the real-image ceiling from exact masks.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import './helpers.ts';
import { noGrad } from '../src/engine/autograd.ts';
import { manualSeed } from '../src/engine/random-cpu.ts';
import { Tensor } from '../src/engine/tensor.ts';
import { type AutoencoderKL } from '../src/models/autoencoder_kl.ts';
import { Mask2FormerForUniversalSegmentation } from '../src/models/mask2former/model.ts';
import { mask2formerConfigJson, parseMask2FormerConfig } from '../src/models/mask2former/config.ts';
import { saveSafetensors } from '../src/io/safetensors.ts';
import { permute } from '../src/kernels/shape.ts';
import { AutoencoderKL as VAE } from '../src/models/autoencoder_kl.ts';
import { StableDiffusionPipeline } from '../src/models/stable_diffusion.ts';
import { UNet2DConditionModel } from '../src/models/unet_2d_condition.ts';
import { evaluateTextToImage, oracleLabels, oracleOnRealSingles, vaeReconstructionPsnr, worldPromptPairs } from '../src/pipeline/evaluate_diffusion.ts';
import { generateScene } from '../src/world/scene.ts';
import { writeTinyStableDiffusion } from './tiny_pipeline.ts';
import { readPng } from '../src/io/png.ts';

const fs = process.getBuiltinModule('node:fs');
const os = process.getBuiltinModule('node:os');
const path = process.getBuiltinModule('node:path');
const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'freemask-eval-diffusion-'));

manualSeed(3);
const oracle = new Mask2FormerForUniversalSegmentation(parseMask2FormerConfig({
  model_type: 'mask2former', num_labels: 21, feature_size: 32, mask_feature_size: 32, hidden_dim: 32, encoder_feedforward_dim: 32, encoder_layers: 1, decoder_layers: 2,
  num_attention_heads: 2, dim_feedforward: 32, num_queries: 4,
  backbone_config: { model_type: 'swin', embed_dim: 8, depths: [1, 1, 1, 1], num_heads: [1, 1, 1, 1], window_size: 4, drop_path_rate: 0 },
}, 'tiny oracle'));

const largest = (labels: Uint8Array) => {
  const n = new Array<number>(256).fill(0);
  for (const v of labels) if (v !== 0 && v !== 255) n[v]!++;
  const best = Math.max(...n);
  return best === 0 ? 0 : n.indexOf(best);
};
const iou = (a: ArrayLike<boolean>, b: ArrayLike<boolean>) => {
  let inter = 0, union = 0;
  for (let p = 0; p < a.length; p++) { inter += +(a[p]! && b[p]!); union += +(a[p]! || b[p]!); }
  return union ? inter / union : 0; // the metrics' convention for two empty masks
};

test('oracleOnRealSingles: the share of real singles whose largest predicted class is the drawn one, and the IoU with the exact mask', async () => {
  const scenes = Array.from({ length: 4 }, (_, k) => generateScene(70 + k, { mode: 'single', width: 64 }));
  const got = await oracleOnRealSingles(oracle, scenes);
  let fidelity = 0, total = 0;
  for (const s of scenes) {
    const c = s.instances[0]!.classId;
    const labels = await oracleLabels(oracle, { id: 'x', width: 64, height: 64, image: s.image });
    fidelity += +(largest(labels) === c) / scenes.length;
    total += iou(Array.from(s.semantic, (v) => v === c), Array.from(labels, (v) => v === c)) / scenes.length;
  }
  assert.ok(Math.abs(got.fidelity - fidelity) < 1e-12 && Math.abs(got.iou - total) < 1e-12, `${JSON.stringify(got)} vs ${fidelity}, ${total}`);
});

test('evaluateTextToImage and vaeReconstructionPsnr on a tiny random pipeline: every number recomputed from the samples', async () => {
  await writeTinyStableDiffusion(`${dir}/sd`);
  const pipe = await StableDiffusionPipeline.fromPretrained(`${dir}/sd`, { unet: UNet2DConditionModel, vae: VAE });
  const images = Array.from({ length: 3 }, (_, k) => ({ id: `v${k}`, width: 64, height: 64, image: generateScene(500 + k, { width: 64 }).image }));
  const psnr = await vaeReconstructionPsnr(pipe.vae as AutoencoderKL, images, 2);
  let naive = 0;
  for (const im of images) {
    const x = permute(Tensor.fromArray(Float32Array.from(im.image, (v) => v / 127.5 - 1), [1, 64, 64, 3]), [0, 3, 1, 2]);
    const vae = pipe.vae as AutoencoderKL;
    const y = noGrad(() => vae.decode(vae.encode(x).mean));
    const rec = await permute(y, [0, 2, 3, 1]).toArray();
    let se = 0;
    for (let i = 0; i < rec.length; i++) se += ((rec[i]! + 1) / 2 - im.image[i]! / 255) ** 2;
    naive += 10 * Math.log10(rec.length / se) / images.length;
    x.dispose(); y.dispose();
  }
  assert.ok(Math.abs(psnr - naive) < 1e-3, `PSNR ${psnr} vs ${naive}`);

  const pairs = worldPromptPairs().filter((_, k) => k === 0 || k === 5);
  const r = await evaluateTextToImage(pipe, oracle, { pairs, samplesPerPair: 2, numInferenceSteps: 3, refinement: { train: { steps: 4, lr: 0.2, radius: 5, band: 1 }, walk: { radius: 5, beta: 24, logt: 2 } } });
  assert.is(r.samples.length, 4);
  for (const p of r.pairs) {
    const mine = r.samples.filter((s) => s.pair === p);
    for (const s of mine) assert.equal(s.oracle, await oracleLabels(oracle, s.image), 'the oracle map is the oracle\'s prediction on the returned image');
    const mean = (f: (s: (typeof mine)[number]) => number) => mine.reduce((a, s) => a + f(s), 0) / mine.length;
    const isClass = (m: Uint8Array, v: number) => Array.from(m, (x) => x === v);
    assert.ok(Math.abs(p.fidelity - mean((s) => +(largest(s.oracle) === p.classId))) < 1e-12, 'fidelity');
    assert.ok(Math.abs(p.iouRaw - mean((s) => iou(isClass(s.mask, p.classId), isClass(s.oracle, p.classId)))) < 1e-12, 'raw IoU: the mask\'s pixels of the class (uncertain 255 is background)');
    assert.ok(Math.abs(p.iouRefined - mean((s) => iou(isClass(s.refined, p.classId), isClass(s.oracle, p.classId)))) < 1e-12, 'refined IoU');
    for (const s of mine) assert.ok(s.mask.every((v) => v === 0 || v === 255 || v === p.classId), 'the mask holds the class id, 0 and 255');
  }
  assert.ok(Math.abs(r.fidelity - (r.pairs[0]!.fidelity + r.pairs[1]!.fidelity) / 2) < 1e-12, 'the mean over pairs');
});

test('CLI: eval-diffusion writes its JSON and sheet with the chosen preset and seed; errors name the flag', async () => {
  fs.mkdirSync(`${dir}/oracle`, { recursive: true });
  fs.writeFileSync(`${dir}/oracle/config.json`, JSON.stringify(mask2formerConfigJson(oracle.config)));
  await saveSafetensors(`${dir}/oracle/model.safetensors`, oracle.stateDict());
  const cp = process.getBuiltinModule('node:child_process');
  const cli = (...args: string[]) => cp.spawnSync(process.execPath, ['--import', 'tsx', 'bin/freemask.ts', 'eval-diffusion', ...args], { encoding: 'utf8' });
  const preset = { crossResolutions: [16], places: ['down', 'up'], normalise: 'minmax', threshold: { kind: 'otsu' } };
  fs.writeFileSync(`${dir}/mask.json`, JSON.stringify(preset));
  const r = cli('--model', `${dir}/sd`, '--oracle', `${dir}/oracle`, '--samples', '1', '--steps', '2', '--val', '2', '--real', '2', '--seed', '3', '--mask', `${dir}/mask.json`, '--json', `${dir}/eval.json`, '--sheet', `${dir}/eval.png`);
  assert.is(r.status, 0, r.stderr);
  const json = JSON.parse(fs.readFileSync(`${dir}/eval.json`, 'utf8'));
  assert.equal(json.preset, preset);
  assert.is(json.pairs.length, worldPromptPairs().length);
  assert.ok(json.fidelity >= 0 && json.fidelity <= 1 && json.oracleOnRealSingles.iou >= 0 && json.sampling['20'].imagesPerMinute > 0, JSON.stringify(json).slice(0, 300));
  const png = await readPng(`${dir}/eval.png`);
  const rows = worldPromptPairs().length;
  assert.is(png.height, 16 + rows * (2 + 2 * 64), 'a 16-pixel header, then one row of ×2 pictures per pair, 2-pixel gaps');
  assert.is(png.width, 76 + 5 * (2 + 2 * 64), 'a 76-pixel label column, then image, heat map, mask, refined, oracle');
  assert.match(cli('--model', `${dir}/sd`).stderr, /--oracle: required/);
  assert.match(cli('--model', `${dir}/sd`, '--oracle', `${dir}/oracle`, '--mask', 'none').stderr, /--mask: 'none' is neither zoo, dataset-diffusion, diffumask nor a JSON file/);
});

test.after(() => {
  oracle.dispose();
  fs.rmSync(dir, { recursive: true, force: true });
});
test.run();
