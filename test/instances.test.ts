// Instances from semantic masks: the IRNet branches on a Swin backbone (shapes, save → load, the backbone taken
// frozen from a segmenter folder), training from class maps only (only the branches move; IRNet's mean shift
// centres the field), the three methods (components against a CPU flood fill, every detection inside its class's
// mask), the object map, the folder command (refuses an existing layer, atomic on failure) and bad input.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { existsSync, mkdtempSync, readFileSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { assertRejects } from './helpers.ts';
import { Tensor, tidy } from '../src/engine/tensor.ts';
import { manualSeed } from '../src/engine/random-cpu.ts';
import { noGrad } from '../src/engine/autograd.ts';
import { mean } from '../src/kernels/reduce.ts';
import { saveSafetensors } from '../src/io/safetensors.ts';
import { IrnNet, irnConfigJson, parseIrnConfig } from '../src/models/irn/model.ts';
import { mask2formerConfigJson, parseMask2FormerConfig } from '../src/models/mask2former/config.ts';
import { Mask2FormerForUniversalSegmentation } from '../src/models/mask2former/model.ts';
import { addInstancesToFolder, evaluateInstances, instancesFromSemantic, objectMap, predictedSemantic } from '../src/pipeline/instances.ts';
import { evaluateSegmenter } from '../src/models/mask2former/evaluate.ts';
import { sceneSample } from '../src/models/mask2former/data.ts';
import { fitMeanShift, irnTask } from '../src/train/instances.ts';
import { Trainer } from '../src/train/trainer.ts';
import { writeWorldDataset } from '../src/data/dataset.ts';
import { readVocLabels } from '../src/data/voc.ts';
import { rleToMask } from '../src/data/coco.ts';
import { generateScene } from '../src/world/scene.ts';
import { splitSeed } from '../src/world/splits.ts';

const swin = { model_type: 'swin', embed_dim: 8, depths: [1, 1, 1, 1], num_heads: [1, 1, 1, 1], window_size: 4 };
const dir = mkdtempSync(`${tmpdir()}/instances-`);
const tinyNet = (inputScale = 2) => new IrnNet(parseIrnConfig({ model_type: 'irn', backbone_config: swin, input_scale: inputScale, radius: 3 }));

/** A 24×32 picture: class 1 squares at (2,2) and (2,14) apart, class 2 touching class 1's second square, and a class-1 pair touching each other. */
function synthetic(): { width: number; height: number; image: Uint8Array; semantic: Uint8Array } {
  const [W, H] = [32, 24];
  const semantic = new Uint8Array(W * H);
  const fill = (x0: number, y0: number, w: number, h: number, c: number) => {
    for (let y = y0; y < y0 + h; y++) for (let x = x0; x < x0 + w; x++) semantic[y * W + x] = c;
  };
  fill(2, 2, 6, 6, 1);
  fill(14, 2, 6, 6, 1);
  fill(20, 2, 6, 6, 2);
  fill(2, 14, 5, 5, 1);
  fill(7, 14, 5, 5, 1);
  const image = Uint8Array.from({ length: 3 * W * H }, (_, i) => (semantic[Math.floor(i / 3)]! * 90 + (i % 3) * 20) % 256);
  return { width: W, height: H, image, semantic };
}

test('components: one detection per 4-connected fragment of each class (a CPU flood fill), scored by area, inside the mask', async () => {
  const s = synthetic();
  const d = await instancesFromSemantic(s, 'components');
  // fragments: the two apart squares, the touching pair as one, and class 2's square
  assert.equal(d.map((x) => [x.classId, x.mask.reduce((a, v) => a + v, 0)]), [[1, 50], [1, 36], [1, 36], [2, 36]]);
  for (const x of d) x.mask.forEach((v, p) => v && assert.is(s.semantic[p], x.classId));
  assert.equal(d.map((x) => x.score), [50 / 768, 36 / 768, 36 / 768, 36 / 768]);
  const map = objectMap(s.semantic, d);
  assert.is(map[3 * 32 + 3], 2);
  assert.is(map[15 * 32 + 3], 1);
  assert.is(map[0], 0);
});

test('an all-background mask has no instance; bad input: a class outside the list, sizes that do not match, a method without its network', async () => {
  const s = synthetic();
  await assertRejects(instancesFromSemantic({ ...s, semantic: Uint8Array.from(s.semantic, (v) => (v === 2 ? 30 : v)) }, 'components', undefined, { numClasses: 21 }), /class 30, outside the class list \(0\.\.20/);
  await assertRejects(instancesFromSemantic({ ...s, semantic: s.semantic.subarray(0, 100) }, 'components'), /semantic mask has 100 pixels, the image 32×24/);
  await assertRejects(instancesFromSemantic({ ...s, image: s.image.subarray(0, 10) }, 'components'), /image has 10 bytes, expected 32×24×3/);
  assert.equal(await instancesFromSemantic({ ...s, semantic: new Uint8Array(768).fill(255, 0, 40) }, 'components'), []);
  await assertRejects(instancesFromSemantic(s, 'irn'), /method 'irn' needs an instance network/);
  assert.throws(() => parseIrnConfig({ model_type: 'irn', backbone_config: swin, input_scale: 3 }, 'cfg.json'), /cfg\.json: "input_scale" must be a positive number dividing 4/);
  assert.throws(() => parseIrnConfig({ model_type: 'irn' }, 'cfg.json'), /cfg\.json: "backbone_config"/);
});

test('IrnNet: branch outputs on the stride-4 grid of the scaled image, save → load gives the same boundary and field', async () => {
  manualSeed(3);
  const net = tinyNet();
  const s = synthetic();
  const pixels = net.pixels([s.image, s.image], [24, 32]);
  assert.equal(pixels.shape, [2, 3, 48, 64]);
  const out = noGrad(() => net.forward(pixels));
  assert.equal(out.edgeLogits.shape, [2, 1, 12, 16]);
  assert.equal(out.dp.shape, [2, 2, 12, 16]);
  const a = net.eval().edgeDisplacement(s.image, [24, 32]);
  assert.equal(a.edge.shape, [1, 12, 16]);
  assert.equal(a.dp.shape, [2, 12, 16]);
  const folder = `${dir}/irn`;
  rmSync(folder, { recursive: true, force: true });
  (await import('node:fs')).mkdirSync(folder);
  writeFileSync(`${folder}/config.json`, JSON.stringify(irnConfigJson(net.config)));
  await saveSafetensors(`${folder}/model.safetensors`, net.stateDict());
  const loaded = IrnNet.fromPretrained(folder);
  const b = loaded.edgeDisplacement(s.image, [24, 32]);
  assert.equal([...await b.edge.toArray()], [...await a.edge.toArray()]);
  assert.equal([...await b.dp.toArray()], [...await a.dp.toArray()]);
  for (const t of [pixels, out.edgeLogits, out.dp, a.edge, a.dp, b.edge, b.dp]) t.dispose();
  net.dispose();
  loaded.dispose();
});

test('fromSegmenter: the backbone is the segmenter\'s Swin, weight for weight', async () => {
  manualSeed(4);
  const config = parseMask2FormerConfig({ model_type: 'mask2former', backbone_config: swin, feature_size: 32, mask_feature_size: 32, hidden_dim: 32, encoder_feedforward_dim: 32, encoder_layers: 1, decoder_layers: 2, num_attention_heads: 2, dim_feedforward: 32, num_queries: 4, num_labels: 21 });
  const m = new Mask2FormerForUniversalSegmentation(config);
  const folder = `${dir}/segmenter`;
  (await import('node:fs')).mkdirSync(folder, { recursive: true });
  writeFileSync(`${folder}/config.json`, JSON.stringify(mask2formerConfigJson(config)));
  await saveSafetensors(`${folder}/model.safetensors`, m.stateDict());
  const net = IrnNet.fromSegmenter(folder, { inputScale: 1 });
  const ours = net.backbone.stateDict();
  for (const [name, t] of Object.entries(m.model.pixelLevelModule.encoder.stateDict())) {
    assert.equal([...await ours[name]!.toArray()], [...await t.toArray()], name);
  }
  assert.is(net.stride, 4);
  m.dispose();
  net.dispose();
});

test('evaluateInstances from a segmenter = from evaluateSegmenter\'s predictions (each the segmenter\'s class map)', async () => {
  const m = Mask2FormerForUniversalSegmentation.fromPretrained(`${dir}/segmenter`);
  const samples = [0, 1].map((k) => sceneSample(generateScene(splitSeed('test', k), { width: 32 }), `t${k}`));
  const r = await evaluateSegmenter(m, samples);
  for (const [k, s] of samples.entries()) assert.equal(r.predictions[k], await predictedSemantic(m, s), `prediction ${s.id}`);
  const methods = ['components', 'displacement'] as const;
  const net = tinyNet(1);
  const direct = await evaluateInstances(samples, net, { methods, segmenter: m });
  const reused = await evaluateInstances(samples, net, { methods, predictions: r.predictions });
  assert.equal([...reused], [...direct]);
  await assertRejects(evaluateInstances(samples, net, { methods, predictions: r.predictions.slice(1) }), /1 predicted class maps for 2 images/);
  // an all-background prediction detects nothing: every truth is missed (AP 0); beside a perfect one, AP lies between
  const background = samples.map((s) => new Uint8Array(s.width * s.height));
  for (const [, ap] of await evaluateInstances(samples, net, { methods, predictions: background })) assert.is(ap.ap, 0);
  const half = (await evaluateInstances(samples, net, { methods: ['components'], predictions: [background[0]!, samples[1]!.semantic] })).get('components')!;
  const perfect = (await evaluateInstances(samples.slice(1), net, { methods: ['components'] })).get('components')!;
  assert.ok(half.ap > 0 && half.ap < perfect.ap, `AP with image 0 unpredicted ${half.ap}, image 1 alone ${perfect.ap}`);
  m.dispose();
  net.dispose();
});

test('training from class maps: the loss falls, only the branches move; the mean shift centres the field', async () => {
  manualSeed(6);
  const net = tinyNet();
  net.branches.requireGrad();
  const backboneBefore = await Promise.all(net.backbone.parameters().map((p) => p.toArray()));
  const t = new Trainer(irnTask(net, { count: 2, size: 32 }), { steps: 10, batchSize: 2, lr: 3e-3, seed: 2 });
  await t.train();
  assert.ok(t.log.loss[9]! < t.log.loss[0]!, `loss ${t.log.loss.map((l) => l.toFixed(3)).join(' ')}`);
  const backboneAfter = await Promise.all(net.backbone.parameters().map((p) => p.toArray()));
  backboneAfter.forEach((a, k) => assert.equal([...a], [...backboneBefore[k]!], `backbone parameter ${k}`));
  const shift = await fitMeanShift(net, { count: 3, size: 32 });
  assert.is(net.training, true, 'fitMeanShift leaves the mode as it was');
  net.eval();
  // in eval mode the field's mean over those scenes is now (about) zero: the running mean was their mean
  let [dy, dx] = [0, 0];
  for (let i = 0; i < 3; i++) {
    const image = generateScene(splitSeed('train', i), { mode: 'scene', width: 32 }).image;
    const m = noGrad(() => tidy(() => mean(net.forward(net.pixels([image], [32, 32])).dp, [0, 2, 3])));
    const [a, b] = await m.toArray();
    m.dispose();
    [dy, dx] = [dy + a! / 3, dx + b! / 3];
  }
  assert.ok(Math.abs(dy) < 1e-4 * (1 + Math.abs(shift[0]!)) && Math.abs(dx) < 1e-4 * (1 + Math.abs(shift[1]!)), `mean after the shift (${dy}, ${dx}), shift ${shift}`);
  t.optimizer.dispose();
  net.dispose();
});

test('irn and displacement: every detection lies in its class\'s mask, scores descend; the object map numbers them in order', async () => {
  manualSeed(7);
  const net = tinyNet().eval();
  const scene = generateScene(splitSeed('val', 2), { mode: 'scene', width: 64 });
  const s = { width: 64, height: 64, image: scene.image, semantic: scene.semantic };
  for (const method of ['irn', 'displacement'] as const) {
    const d = await instancesFromSemantic(s, method, net);
    assert.ok(d.length >= 1, `${method}: no detection`);
    for (const x of d) x.mask.forEach((v, p) => v && assert.is(s.semantic[p], x.classId, `${method}: a detection leaves its class`));
    d.slice(1).forEach((x, k) => assert.ok(x.score <= d[k]!.score, `${method}: scores descend`));
    if (method === 'irn') {
      // the mask says where objects are: every foreground pixel belongs to exactly one detection
      const cover = new Uint8Array(s.semantic.length);
      for (const x of d) x.mask.forEach((v, p) => (cover[p]! += v));
      cover.forEach((n, p) => assert.is(n, s.semantic[p] === 0 || s.semantic[p] === 255 ? 0 : 1, `pixel ${p} in ${n} detections`));
    }
    const map = objectMap(s.semantic, d);
    map.forEach((v, p) => {
      if (s.semantic[p] === 0) assert.is(v, 0);
      else if (v !== 255) assert.ok(d[v - 1]!.mask[p] && d.slice(0, v - 1).every((x) => !x.mask[p]), 'first covering detection');
    });
  }
  net.dispose();
});

test('instances command: refuses an existing layer, replaces it with overwrite, and a failure leaves the folder as it was', async () => {
  const folder = `${dir}/voc`;
  await writeWorldDataset({ split: 'val', count: 3, out: folder, mode: 'scene', size: 32 });
  await assertRejects(addInstancesToFolder(folder, 'components', undefined), /already has an instance layer .*--overwrite/);
  const ids = readdirSync(`${folder}/SegmentationObject`).map((f) => f.slice(0, -4)).sort();
  // a broken picture for the last image: the run fails there, nothing of the old layer is touched
  const before = ids.map((id) => readFileSync(`${folder}/SegmentationObject/${id}.png`));
  const last = `${folder}/JPEGImages/${ids[2]}.png`;
  const good = readFileSync(last);
  writeFileSync(last, good.subarray(0, 20));
  await assertRejects(addInstancesToFolder(folder, 'components', undefined, { overwrite: true }), new RegExp(ids[2]!));
  ids.forEach((id, k) => assert.equal(readFileSync(`${folder}/SegmentationObject/${id}.png`), before[k]));
  assert.ok(existsSync(`${folder}/annotations/instances_val.json`));
  assert.ok(!readdirSync(folder).some((f) => f.startsWith('.instances')), 'no partial layer left');
  writeFileSync(last, good);
  const r = await addInstancesToFolder(folder, 'components', undefined, { overwrite: true });
  assert.ok(!existsSync(`${folder}/annotations/instances_val.json`), 'the old COCO layer is replaced');
  const coco = JSON.parse(readFileSync(`${folder}/annotations/instances.json`, 'utf8'));
  assert.is(coco.annotations.length, r.instances);
  assert.is(coco.images.length, 3);
  // every annotation's RLE is its id's pixels in the object map, and the maps' ids are the components
  for (const a of coco.annotations) {
    const img = coco.images.find((i: { id: number }) => i.id === a.image_id);
    const { objects, semantic } = readVocLabels(folder, img.file_name.slice('JPEGImages/'.length, -4));
    const id = a.id - a.image_id * 256;
    assert.equal([...rleToMask(a.segmentation)], [...objects!].map((v) => (v === id ? 1 : 0)));
    objects!.forEach((v, p) => v === id && assert.is(semantic[p], a.category_id));
    assert.ok(a.score > 0 && a.score <= 1);
  }
});

test('CLI: train-instances (2 steps, resumable), ship (F16 weights + model card), instances with the shipped model, errors named', async () => {
  const cp = await import('node:child_process');
  const cli = (...args: string[]) => cp.spawnSync(process.execPath, ['--import', 'tsx', 'bin/freemask.ts', ...args], { encoding: 'utf8' });
  const run = `${dir}/irn-run`, shipped = `${dir}/irn-shipped`;
  let r = cli('train-instances', '--segmenter', `${dir}/segmenter`, '--out', run, '--steps', '1', '--batch', '1', '--count', '2');
  assert.is(r.status, 0, r.stderr);
  r = cli('train-instances', '--out', run, '--steps', '2', '--resume');
  assert.is(r.status, 0, r.stderr);
  assert.match(r.stdout, /resumed .* at step 1/);
  writeFileSync(`${dir}/card.json`, JSON.stringify({ title: 'Test instance branches', summary: 's', architecture: 'a', data: 'd', evaluation: { 'AP (test)': 0.5 }, reproduce: ['freemask train-instances …'] }));
  r = cli('ship', '--from', run, '--to', shipped, '--card', `${dir}/card.json`);
  assert.is(r.status, 0, r.stderr);
  const readme = readFileSync(`${shipped}/README.md`, 'utf8');
  assert.match(readme, /# Test instance branches/);
  assert.match(readme, /\| training steps \| 2 \|/);
  assert.match(readme, /\| AP \(test\) \| 0\.5000 \|/);
  assert.ok(existsSync(`${shipped}/loss.png`) && !existsSync(`${shipped}/checkpoint.safetensors`));
  const header = readFileSync(`${shipped}/model.safetensors`);
  const json = JSON.parse(header.subarray(8, 8 + Number(header.readBigUInt64LE(0))).toString());
  assert.ok(Object.entries(json).every(([k, v]) => k === '__metadata__' || (v as { dtype: string }).dtype !== 'F32'), 'float weights in F16');
  const folder = `${dir}/voc-cli`;
  await writeWorldDataset({ split: 'val', count: 2, out: folder, mode: 'scene', size: 32 });
  r = cli('instances', '--data', folder, '--model', shipped, '--overwrite');
  assert.is(r.status, 0, r.stderr);
  assert.match(r.stdout, /instances of 2 images .*method irn/);
  assert.match(cli('instances', '--data', folder, '--method', 'irn').stderr, /--model: required by --method irn/);
  assert.match(cli('instances', '--data', folder, '--method', 'watershed').stderr, /--method: expected one of components, displacement, irn, got 'watershed'/);
  assert.match(cli('ship', '--from', run, '--to', shipped, '--card', `${dir}/missing.json`).stderr, /--card: cannot read .*missing\.json/);
  assert.match(cli('train-instances', '--out', `${dir}/new-run`).stderr, /--segmenter: required/);
});

test.after(() => rmSync(dir, { recursive: true, force: true }));

test.run();
