// The active-learning loop: per-class IoU and the keep rules against hand-counted cases; a two-round run on
// ShapeWorld samples whose scores are the previous round's predictions (recomputed here from the saved model),
// resumed between rounds to the same weights as an uninterrupted run, and its bad input.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { assertRejects } from './helpers.ts';
import { sceneSample } from '../src/models/mask2former/data.ts';
import { Mask2FormerForUniversalSegmentation } from '../src/models/mask2former/model.ts';
import { maskIou } from '../src/metrics/maskAp.ts';
import { classIous, curate, keepSample, type SampleScore } from '../src/pipeline/curate.ts';
import { oracleLabels } from '../src/pipeline/evaluate_diffusion.ts';
import { generateScene } from '../src/world/scene.ts';

const fs = process.getBuiltinModule('node:fs');
const os = process.getBuiltinModule('node:os');
const path = process.getBuiltinModule('node:path');
const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'freemask-curate-'));

test('classIous: per class of the generated mask, 255 pixels ignored; the keep rules', () => {
  const W = 7, H = 5;
  const gen = new Uint8Array(W * H), pred = new Uint8Array(W * H);
  for (let p = 0; p < W * H; p++) {
    const x = p % W, y = Math.floor(p / W);
    gen[p] = x < 3 ? 2 : x < 5 ? 9 : 0;
    pred[p] = x < 2 ? 2 : y < 2 ? 9 : 0;
    if (y === 4 && x === 6) gen[p] = 255;
  }
  gen[34] = 255; // an uncertain pixel the prediction calls class 0: not counted anywhere
  const sure = (m: Uint8Array) => Array.from(m).filter((_, p) => gen[p] !== 255);
  const ref = (c: number) => maskIou(sure(gen).map((v) => (v === c ? 1 : 0)), sure(pred).map((v) => (v === c ? 1 : 0)));
  const ious = classIous(gen, pred);
  assert.equal(Object.keys(ious), ['2', '9'], 'classes of the generated mask only');
  assert.ok(Math.abs(ious[2]! - ref(2)) < 1e-12 && Math.abs(ious[9]! - ref(9)) < 1e-12);
  assert.ok(Math.abs(ious[2]! - 10 / 15) < 1e-12, `class 2: ${ious[2]}`);
  assert.equal([keepSample({ 1: 0.6, 2: 0.1 }, 'any', 0.5), keepSample({ 1: 0.6, 2: 0.1 }, 'all', 0.5), keepSample({ 1: 0.6, 2: 0.1 }, 'mean', 0.35), keepSample({}, 'any', 0)], [true, false, true, false]);
});

const config = {
  model_type: 'mask2former', num_labels: 21, feature_size: 32, mask_feature_size: 32, hidden_dim: 32, encoder_feedforward_dim: 32, encoder_layers: 1, decoder_layers: 2,
  num_attention_heads: 2, dim_feedforward: 32, num_queries: 6, train_num_points: 256,
  backbone_config: { model_type: 'swin', embed_dim: 8, depths: [1, 1, 1, 1], num_heads: [1, 1, 1, 1], window_size: 4, drop_path_rate: 0 },
};
// two samples whose mask holds no object: nothing vouches for them, so every round drops them
const samples = Array.from({ length: 5 }, (_, k) => {
  const s = sceneSample(generateScene(40 + k, { width: 64 }), `s${k}`);
  return k % 2 ? { ...s, semantic: new Uint8Array(s.semantic.length) } : s;
});
const val = Array.from({ length: 2 }, (_, k) => sceneSample(generateScene(900 + k, { width: 64 }), `v${k}`));
const options = { samples, val, config, steps: 3, train: { batchSize: 2, lr: 1e-3 }, rule: 'any' as const, threshold: 0, seed: 2 };

test('curate: round scores are the previous model\'s per-class IoUs; resuming between rounds gives the same weights', async () => {
  const straight = await curate({ ...options, out: `${dir}/a`, rounds: 1 });
  assert.equal(straight.map((r) => [r.round, r.kept, r.dropped]), [[0, 5, 0], [1, 3, 2]]);
  assert.ok(straight.every((r) => r.miou! >= 0 && r.miou! <= 1), 'val mIoU per round');
  const judge = Mask2FormerForUniversalSegmentation.fromPretrained(`${dir}/a/round-0`);
  const scores = JSON.parse(fs.readFileSync(`${dir}/a/round-1/scores.json`, 'utf8')) as SampleScore[];
  for (const s of samples) {
    const got = scores.find((x) => x.id === s.id)!;
    const ious = classIous(s.semantic, await oracleLabels(judge, s));
    assert.equal(got.ious, JSON.parse(JSON.stringify(ious)), `${s.id} IoUs`);
    assert.is(got.kept, keepSample(ious, 'any', 0));
  }
  judge.dispose();
  assert.equal(JSON.parse(fs.readFileSync(`${dir}/a/kept.json`, 'utf8')), scores.filter((s) => s.kept).map((s) => s.id));
  // round 0 alone, then the same folder asked for one more round
  await curate({ ...options, out: `${dir}/b`, rounds: 0 });
  const resumed = await curate({ ...options, out: `${dir}/b`, rounds: 1 });
  assert.equal(resumed, straight);
  for (const f of ['round-0/model.safetensors', 'round-1/model.safetensors', 'round-1/scores.json']) {
    assert.ok(Buffer.compare(fs.readFileSync(`${dir}/a/${f}`), fs.readFileSync(`${dir}/b/${f}`)) === 0, `${f} the same`);
  }
  // a finished loop reruns without training
  const t = fs.statSync(`${dir}/a/round-1/model.safetensors`).mtimeMs;
  assert.equal(await curate({ ...options, out: `${dir}/a`, rounds: 1 }), straight);
  assert.is(fs.statSync(`${dir}/a/round-1/model.safetensors`).mtimeMs, t);
});

test('curate: bad input names the option', async () => {
  await assertRejects(curate({ ...options, out: `${dir}/c`, rounds: -1 }), /--rounds: expected an integer ≥ 0, got -1/);
  await assertRejects(curate({ ...options, out: `${dir}/c`, rounds: 1, rule: 'some' as 'any' }), /--rule: expected any, all, mean, got 'some'/);
  await assertRejects(curate({ ...options, out: `${dir}/c`, rounds: 1, threshold: 1.5 }), /--threshold/);
  await assertRejects(curate({ ...options, out: `${dir}/a`, rounds: 1, threshold: 0.3 }), /holds a curate run with other data or settings/);
  const wide = { ...samples[0]!, id: 'bad', semantic: samples[0]!.semantic.map((v) => (v ? 40 : 0)) };
  await assertRejects(curate({ ...options, samples: [wide], out: `${dir}/d`, rounds: 0 }), /sample 'bad' has a class outside the segmenter's 21 labels/);
});

test('freemask curate: SIGTERM stops it with the checkpoint saved (exit 143) and says a plain rerun goes on; the rerun resumes at that step', async () => {
  const root = new URL('..', import.meta.url).pathname;
  const cp = process.getBuiltinModule('node:child_process');
  const cli = (args: string[]) => cp.spawnSync(process.execPath, ['--import', 'tsx', `${root}bin/freemask.ts`, ...args], { encoding: 'utf8' });
  const world = cli(['world', '--split', 'train', '--count', '3', '--mode', 'scene', '--out', `${dir}/cli-data`]);
  assert.is(world.status, 0, world.stderr);
  fs.writeFileSync(`${dir}/cli-config.json`, JSON.stringify(config));
  const args = ['--import', 'tsx', `${root}bin/freemask.ts`, 'curate', '--data', `${dir}/cli-data`, '--out', `${dir}/cli-run`, '--rounds', '0', '--steps', '100000', '--batch', '2', '--segmenter', `${dir}/cli-config.json`];
  /** Runs the command until its log matches `until`, then sends SIGTERM; its exit code and log. */
  const runUntil = (until: RegExp) => new Promise<{ code: number | null; log: string }>((resolve) => {
    const child = cp.spawn(process.execPath, args);
    let log = '', sent = false;
    child.stdout.on('data', (d: Buffer) => { log += d; });
    child.stderr.on('data', (d: Buffer) => {
      log += d;
      if (!sent && until.test(log)) sent = child.kill('SIGTERM');
    });
    child.on('exit', (code) => resolve({ code, log }));
  });
  const stopped = await runUntil(/round 0: step 10\/100000/);
  assert.is(stopped.code, 143, stopped.log);
  const step = Number(/stopped by SIGTERM at step (\d+), checkpoint saved: rerun the same command to go on/.exec(stopped.log)?.[1]);
  assert.ok(step >= 10 && step < 100000, stopped.log);
  assert.not.ok(fs.existsSync(`${dir}/cli-run/round-0/round.json`), 'no round result from a stopped run');
  const resumed = await runUntil(/round 0: resumed at step \d+/);
  assert.match(resumed.log, new RegExp(`round 0: resumed at step ${step}\\b`));
});

test.after(() => fs.rmSync(dir, { recursive: true, force: true }));

test.run();
