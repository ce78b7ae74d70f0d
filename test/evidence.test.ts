// `npm run evidence` end to end at toy size (2 images per row, 1 training step, 3 test scenes) on a tiny
// random-weight Stable Diffusion: the real-data row, a generated row and E (every stage) run through the CLI steps,
// are measured on the test scenes, and the table, JSON and chart are written; a rerun does no step again; two seeds
// give each row the mean and the min–max of its seeds.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import './helpers.ts';
import { writeTinyStableDiffusion } from './tiny_pipeline.ts';
import { decodePng } from '../src/io/png.ts';

const fs = process.getBuiltinModule('node:fs');
const os = process.getBuiltinModule('node:os');
const path = process.getBuiltinModule('node:path');
const cp = process.getBuiltinModule('node:child_process');
const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'freemask-evidence-'));
const root = new URL('..', import.meta.url).pathname;

const evidence = (...args: string[]) => cp.spawnSync(process.execPath, ['--import', 'tsx', 'bench/evidence.ts', '--count', '2', '--steps', '1', '--test', '3', '--sampling-steps', '2', '--model', `${dir}/sd`, '--out', `${dir}/work`, '--results', `${dir}/results`, ...args], { cwd: root, encoding: 'utf8' });

test('evidence: rows oracle, A and E at toy size: data, training, measures, table, chart; a rerun redoes no step', async () => {
  await writeTinyStableDiffusion(`${dir}/sd`);
  const r = evidence('--rows', 'oracle,A,E');
  assert.is(r.status, 0, r.stderr + r.stdout);
  const result = JSON.parse(fs.readFileSync(`${dir}/results/ablation.json`, 'utf8'));
  assert.equal(result.rows.map((x: { row: string }) => x.row), ['oracle', 'A', 'E']);
  for (const x of result.rows) {
    for (const k of ['miou', 'ap', 'apIrn', 'pixelAccuracy']) assert.ok(x[k] >= 0 && x[k] <= 1, `${x.row} ${k} = ${x[k]}`);
    assert.is(x.trainedOn, 2);
    assert.is(x.miouToOracle, result.rows[0].miou > 0 ? x.miou / result.rows[0].miou : null);
  }
  assert.equal(Object.keys(result.rows[0].iou).slice(0, 2), ['background', 'aeroplane']);
  assert.equal(result.setup.imagesPerRow, 2);
  // E's data went through every stage: FOPA placed something or said why not, and the harmonizer is recorded
  const manifest = JSON.parse(fs.readFileSync(`${dir}/work/n2-sampling2-seed0/data-E/manifest.json`, 'utf8'));
  assert.equal(manifest.settings.stages, ['refine', 'compose', 'harmonize', 'instances']);
  assert.match(fs.readFileSync(`${dir}/results/ablation.md`, 'utf8'), /^\| row \| training data \(2 images; same tiny Mask2Former, 1 steps, batch 4\)/);
  const chart = await decodePng(fs.readFileSync(`${dir}/results/ablation.png`));
  assert.equal([chart.width, chart.height], [960, 320]);
  const times = JSON.parse(fs.readFileSync(`${dir}/work/times.json`, 'utf8'));
  const again = evidence('--rows', 'oracle,A,E');
  assert.is(again.status, 0, again.stderr);
  assert.not.match(again.stdout, /\[evidence\] (generate|train|real)/, 'no step is run again');
  assert.equal(JSON.parse(fs.readFileSync(`${dir}/work/times.json`, 'utf8')), times);
  const bad = evidence('--rows', 'A,Z');
  assert.is(bad.status, 1);
  assert.match(bad.stderr, /--rows: unknown row 'Z'/);
});

test('evidence: two seeds: each row is the mean of its seeds\' test results, with their min–max', () => {
  const r = evidence('--rows', 'oracle,A', '--seeds', '0,1', '--results', `${dir}/results-seeds`);
  assert.is(r.status, 0, r.stderr + r.stdout);
  const result = JSON.parse(fs.readFileSync(`${dir}/results-seeds/ablation.json`, 'utf8'));
  const md = fs.readFileSync(`${dir}/results-seeds/ablation.md`, 'utf8');
  assert.match(md, /seeds 0, 1 \(mean, min–max in brackets\)/);
  for (const [i, row] of ['oracle', 'A'].entries()) {
    const miou = [0, 1].map((seed) => JSON.parse(fs.readFileSync(`${dir}/work/n2-sampling2-seed${seed}/train-${row}-steps1-batch4/round-0/test-3.json`, 'utf8')).miou as number);
    const x = result.rows[i];
    assert.is(x.seeds, 2);
    assert.ok(Math.abs(x.miou - (miou[0]! + miou[1]!) / 2) < 1e-12, `${row} mean`);
    assert.equal(x.miouRange, [Math.min(...miou), Math.max(...miou)]);
    const pct = (v: number) => (100 * v).toFixed(1);
    assert.ok(md.includes(`| ${pct(x.miou)} (${pct(Math.min(...miou))}–${pct(Math.max(...miou))}) |`), `${row}'s mIoU with its spread in the table`);
  }
});

test.after(() => fs.rmSync(dir, { recursive: true, force: true }));


test.run();
