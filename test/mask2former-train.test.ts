// Mask2Former training: targets from VOC maps, GPU augmentation against a CPU resampler, the schedule and
// parameter groups, resume after a "kill" (identical weights), NaN handling (the last checkpoint is kept),
// checkpoint errors, and a tiny config overfitting four ShapeWorld scenes (mIoU measured by the metrics code).
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { existsSync, mkdtempSync, readFileSync, renameSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { getDevice } from '../src/engine/device.ts';
import { Tensor } from '../src/engine/tensor.ts';
import { noGrad } from '../src/engine/autograd.ts';
import { Generator } from '../src/kernels/random.ts';
import { seededRandom } from '../src/engine/random-cpu.ts';
import { parseMask2FormerConfig } from '../src/models/mask2former/config.ts';
import { Mask2FormerForUniversalSegmentation } from '../src/models/mask2former/model.ts';
import { Mask2FormerTrainer, parameterGroups } from '../src/models/mask2former/train.ts';
import { drawAugment, loadSample, pixelValues, readVocSamples, sampleTargets, sceneSample, type SegmentationSample } from '../src/models/mask2former/data.ts';
import { evaluateSegmenter } from '../src/models/mask2former/evaluate.ts';
import { writeWorldDataset } from '../src/data/dataset.ts';
import { generateScene } from '../src/world/scene.ts';

await getDevice();

const tinyJson = {
  model_type: 'mask2former',
  backbone_config: { model_type: 'swin', embed_dim: 16, depths: [1, 1, 1, 1], num_heads: [1, 1, 2, 2], window_size: 4, drop_path_rate: 0.2 },
  feature_size: 32, mask_feature_size: 32, hidden_dim: 32, encoder_feedforward_dim: 64, encoder_layers: 1, decoder_layers: 2,
  num_attention_heads: 2, dim_feedforward: 64, num_queries: 8, num_labels: 21, train_num_points: 256,
};
const tiny = parseMask2FormerConfig(tinyJson, 'tiny config');
const S = 32;
const scenes: SegmentationSample[] = [0, 1, 2, 3].map((k) => sceneSample(generateScene(1000 + k, { width: S }), `scene${k}`));
const dir = mkdtempSync(`${tmpdir()}/m2f-train-`);

async function weights(m: Mask2FormerForUniversalSegmentation): Promise<Map<string, Float32Array>> {
  const out = new Map<string, Float32Array>();
  for (const [name, p] of m.namedParameters()) out.set(name, Float32Array.from(await p.toArray()));
  return out;
}

test('targets: one mask per instance (class by the class map) plus background; ignore pixels in none; bad class id named', () => {
  // 3×2: background, instance 1 (class 5), instance 2 (class 7), an ignore pixel
  const s = { id: 'x', width: 3, height: 2, semantic: Uint8Array.from([0, 5, 5, 7, 255, 0]), objects: Uint8Array.from([0, 1, 1, 2, 255, 0]) };
  const t = sampleTargets(s, 21);
  assert.equal([...t.classes], [0, 5, 7]);
  assert.equal([...t.masks], [1, 0, 0, 0, 0, 1, /**/ 0, 1, 1, 0, 0, 0, /**/ 0, 0, 0, 1, 0, 0]);
  // without instance map: one mask per class
  const sem = sampleTargets({ ...s, objects: undefined }, 21);
  assert.equal([...sem.classes], [7, 5, 0]);
  assert.throws(() => sampleTargets({ ...s, semantic: Uint8Array.from([0, 30, 5, 7, 255, 0]) }, 21), /image 'x': class id 30 at pixel \(1, 0\) is outside the 21 configured classes/);
});

test('pixel values: ImageNet normalisation, channel-first', () => {
  const s = { id: 'p', width: 1, height: 1, semantic: Uint8Array.from([0]), image: Uint8Array.from([255, 0, 128]) };
  const v = pixelValues(s);
  assert.ok(Math.abs(v[0]! - (1 - 0.485) / 0.229) < 1e-5 && Math.abs(v[1]! - (0 - 0.456) / 0.224) < 1e-5 && Math.abs(v[2]! - (128 / 255 - 0.406) / 0.225) < 1e-5);
});

test('augmentation: image (bilinear) and masks (nearest) resampled alike, against a CPU reference', async () => {
  const s = scenes[0]!;
  const augment = { size: [20, 24] as [number, number], scale: [0.7, 1.6] as [number, number], flip: 0.5 };
  for (const seed of [1, 2, 3, 4]) {
    const d = drawAugment(seededRandom(seed), S, S, augment);
    const b = await loadSample(s, 21, augment, seededRandom(seed));
    const px = await b.pixels.toArray();
    const masks = await b.masks.toArray();
    const classes = await b.classes.toArray();
    const ref = pixelValues(s);
    const t = sampleTargets(s, 21);
    // CPU reference: output pixel (i, j) reads source position ((left + j' + ½)/scale − ½, …), j' mirrored on a flip
    const srcPos = (i: number, j: number) => [(d.left + (d.flip ? 23 - j : j) + 0.5) / d.scale - 0.5, (d.top + i + 0.5) / d.scale - 0.5];
    let maxErr = 0;
    const keptMasks: number[][] = t.classes.length ? [...t.classes].map(() => []) : [];
    for (let i = 0; i < 20; i++) for (let j = 0; j < 24; j++) {
      const [x, y] = srcPos(i, j) as [number, number];
      const x0 = Math.floor(x), y0 = Math.floor(y);
      for (let c = 0; c < 3; c++) {
        let v = 0;
        for (const [yy, wy] of [[y0, 1 - (y - y0)], [y0 + 1, y - y0]] as const) for (const [xx, wx] of [[x0, 1 - (x - x0)], [x0 + 1, x - x0]] as const) {
          if (xx >= 0 && yy >= 0 && xx < S && yy < S) v += wx * wy * ref[c * S * S + yy * S + xx]!;
        }
        maxErr = Math.max(maxErr, Math.abs(v - px[c * 480 + i * 24 + j]!));
      }
      const nx = Math.round(x), ny = Math.round(y);
      t.classes.forEach((_, k) => keptMasks[k]!.push(nx >= 0 && ny >= 0 && nx < S && ny < S ? t.masks[k * S * S + ny * S + nx]! : 0));
    }
    assert.ok(maxErr < 1e-4, `seed ${seed}: image differs from the CPU bilinear reference by ${maxErr}`);
    const expected = keptMasks.map((m, k) => [m, t.classes[k]!] as const).filter(([m]) => m.some((v) => v > 0));
    assert.equal([...classes], expected.map(([, c]) => c), `seed ${seed}: classes of the masks the crop keeps`);
    assert.equal([...masks], expected.flatMap(([m]) => m), `seed ${seed}: nearest-neighbour masks`);
    for (const t of [b.pixels, b.masks, b.classes]) t.dispose();
  }
});

test('parameter groups: backbone at the multiplier; norms, embeddings and position tables without decay', () => {
  const m = new Mask2FormerForUniversalSegmentation(tiny);
  const groups = parameterGroups(m, { weightDecay: 0.05, backboneMultiplier: 0.1 });
  const byName = new Map(groups.flatMap((g) => g.names.map((n) => [n, g] as const)));
  const check = (name: string, lrFactor: number, wd: number) => {
    const g = byName.get(name);
    assert.ok(g, `${name} in a group`);
    assert.equal([g!.lrFactor, g!.weightDecay], [lrFactor, wd], name);
  };
  check('model.pixel_level_module.encoder.embeddings.patch_embeddings.projection.weight', 0.1, 0.05);
  check('model.pixel_level_module.encoder.encoder.layers.0.blocks.0.layernorm_before.weight', 0.1, 0);
  check('model.pixel_level_module.encoder.encoder.layers.0.blocks.0.attention.self.relative_position_bias_table', 0.1, 0);
  check('model.transformer_module.queries_features.weight', 1, 0);
  check('model.transformer_module.decoder.layers.0.cross_attn.in_proj_weight', 1, 0.05);
  check('class_predictor.bias', 1, 0.05);
  assert.is(byName.size, m.namedParameters().length);
  m.dispose();
});

test('Swin drop path: only in training mode with a generator, reproducible from its seed', async () => {
  const m = new Mask2FormerForUniversalSegmentation(parseMask2FormerConfig({ ...tinyJson, backbone_config: { ...tinyJson.backbone_config, drop_path_rate: 0.5 } }));
  const pixels = Tensor.fromArray(Float32Array.from(scenes.flatMap((s) => [...pixelValues(s)])), [4, 3, S, S]);
  const encoder = m.model.pixelLevelModule.encoder;
  const run = async (training: boolean, seed?: number) => {
    m.train(training);
    encoder.random = seed === undefined ? undefined : new Generator(seed);
    const maps = noGrad(() => encoder.forward(pixels));
    const last = await maps[3]!.toArray();
    for (const t of maps) t.dispose();
    return last;
  };
  const plain = await run(false);
  assert.equal(await run(false, 3), plain, 'eval mode: no drop path');
  assert.equal(await run(true), plain, 'training without a generator: no drop path');
  const dropped = await run(true, 3);
  assert.ok(dropped.some((v, i) => v !== plain[i]), 'training with a generator drops branches');
  assert.equal(await run(true, 3), dropped, 'same seed, same drops');
  encoder.random = undefined;
  pixels.dispose();
  m.dispose();
});

// train 3 steps straight, or 1 step + checkpoint + fresh objects + resume + 2 steps: the same weights
// (augmentation, drop path, accumulation of 2 micro-batches and clipping all active)
const trainOptions = { steps: 3, batchSize: 2, accumulate: 2, lr: 1e-3, warmupSteps: 1, warmupFactor: 0.5, clipNorm: 1, seed: 7, augment: { size: [S, S] as [number, number], scale: [0.8, 1.25] as [number, number] } };

test('resume after a kill: train 3 steps = train 1, checkpoint, drop everything, resume, train 2 (bit-identical weights)', async () => {
  const straight = new Mask2FormerTrainer(new Mask2FormerForUniversalSegmentation(tiny), scenes, trainOptions);
  const initial = await weights(straight.model);
  const first = new Mask2FormerForUniversalSegmentation(tiny);
  first.loadStateDict(straight.model.stateDict());
  await straight.train();
  const a = await weights(straight.model);

  const killed = new Mask2FormerTrainer(first, scenes, trainOptions);
  await killed.trainStep();
  await killed.saveCheckpoint(`${dir}/resume`);
  killed.optimizer.dispose();
  killed.model.dispose();
  const resumed = await Mask2FormerTrainer.resume(`${dir}/resume`, scenes);
  assert.is(resumed.step, 1);
  await resumed.train();
  const b = await weights(resumed.model);
  let changed = 0;
  for (const [name, w] of a) {
    assert.equal(b.get(name), w, `${name} after resume`);
    if (w.some((v, i) => v !== initial.get(name)![i])) changed++;
  }
  assert.ok(changed > a.size / 2, `training changed ${changed} of ${a.size} parameters`);
  // the saved model loads with fromPretrained
  const loaded = Mask2FormerForUniversalSegmentation.fromPretrained(`${dir}/resume`);
  assert.is(loaded.config.numQueries, tiny.numQueries);
  loaded.dispose();
  straight.model.dispose();
  resumed.model.dispose();
});

test('a NaN loss stops training naming the step, and the last checkpoint is left as it was', async () => {
  const trainer = new Mask2FormerTrainer(new Mask2FormerForUniversalSegmentation(tiny), scenes, { ...trainOptions, accumulate: 1 });
  await trainer.trainStep();
  await trainer.saveCheckpoint(`${dir}/nan`);
  const before = readFileSync(`${dir}/nan/checkpoint.safetensors`);
  const bias = trainer.model.classPredictor.bias!;
  bias.copyFrom(Tensor.fromArray(new Float32Array(bias.size).fill(NaN), bias.shape));
  try {
    await trainer.train(() => trainer.saveCheckpoint(`${dir}/nan`));
    assert.unreachable('training went on with a NaN loss');
  } catch (e) {
    assert.match((e as Error).message, /training stopped at step 2: the loss is NaN/);
  }
  assert.is(trainer.step, 1);
  assert.ok(readFileSync(`${dir}/nan/checkpoint.safetensors`).equals(before), 'checkpoint unchanged');
  trainer.model.dispose();
});

test('checkpoint problems: missing folder, a model file that is no training checkpoint, a bad option', async () => {
  const message = (p: Promise<unknown>) => p.then(() => '', (e: Error) => e.message);
  assert.match(await message(Mask2FormerTrainer.resume(`${dir}/none`, scenes)), /checkpoint\.safetensors does not exist/);
  renameSync(`${dir}/nan/model.safetensors`, `${dir}/nan/checkpoint.safetensors`);
  assert.match(await message(Mask2FormerTrainer.resume(`${dir}/nan`, scenes)), /nan\/checkpoint\.safetensors is not a Mask2Former training checkpoint/);
  assert.throws(() => new Mask2FormerTrainer(new Mask2FormerForUniversalSegmentation(tiny), scenes, { steps: 0 }), /steps must be a positive integer/);
});

test('VOC folder written by the ShapeWorld writer: loader and evaluation (untrained model: metrics in range)', async () => {
  await writeWorldDataset({ split: 'val', count: 2, out: `${dir}/voc`, size: S });
  const samples = await readVocSamples(`${dir}/voc`);
  assert.is(samples.length, 2);
  const scene = generateScene(Number(samples[0]!.id.slice(2)), { width: S });
  assert.equal(samples[0]!.image, scene.image);
  assert.equal(samples[0]!.objects, scene.instance);
  const m = new Mask2FormerForUniversalSegmentation(tiny);
  const r = await evaluateSegmenter(m, samples);
  assert.ok(r.miou >= 0 && r.miou <= 1 && r.maskAp !== undefined && r.maskAp.ap >= 0 && r.maskAp.ap <= 1);
  m.dispose();
});

test('CLI: train-segmenter / eval-segmenter name a bad or missing argument and exit 1', () => {
  const cp = process.getBuiltinModule('node:child_process');
  const cli = (...args: string[]) => cp.spawnSync(process.execPath, ['--import', 'tsx', 'bin/freemask.ts', ...args], { encoding: 'utf8' });
  const noData = cli('train-segmenter', '--out', `${dir}/cli`);
  assert.is(noData.status, 1);
  assert.match(noData.stderr, /freemask train-segmenter: --data: required/);
  const resume = cli('train-segmenter', '--data', `${dir}/voc`, '--out', `${dir}/cli`, '--resume');
  assert.is(resume.status, 1);
  assert.match(resume.stderr, /resume: .*cli\/checkpoint\.safetensors does not exist/);
  const evalBad = cli('eval-segmenter', '--model', `${dir}/none`, '--data', `${dir}/voc`, '--threshold', '1');
  assert.is(evalBad.status, 1);
  assert.match(evalBad.stderr, /freemask eval-segmenter: .*unexpected argument '--threshold'/);
});

// A tiny config (Swin embed 16, depths [1,1,1,1], hidden 32, 8 queries) overfits four 32×32 scenes.
const convergenceSteps = 150;
test(`convergence: the tiny config overfits 4 ShapeWorld scenes to mIoU ≥ 0.9 within ${convergenceSteps} steps`, async () => {
  const model = new Mask2FormerForUniversalSegmentation(parseMask2FormerConfig({ ...tinyJson, backbone_config: { ...tinyJson.backbone_config, drop_path_rate: 0 } }));
  const trainer = new Mask2FormerTrainer(model, scenes, { steps: convergenceSteps, batchSize: 4, lr: 1e-3, clipNorm: 0, weightDecay: 0, backboneMultiplier: 1, power: 0 });
  await trainer.train();
  const r = await evaluateSegmenter(model, scenes);
  console.log(`  convergence: mIoU ${r.miou.toFixed(4)} after ${convergenceSteps} steps (per class ${r.iou.map((v, c) => (Number.isNaN(v) ? '' : `${c}:${v.toFixed(3)}`)).filter(Boolean).join(' ')}), mask AP ${r.maskAp?.ap.toFixed(3)}`);
  assert.ok(r.miou >= 0.9, `mIoU ${r.miou}`);
  model.dispose();
});

test.after(() => {
  if (existsSync(dir)) rmSync(dir, { recursive: true, force: true });
});

test.run();
