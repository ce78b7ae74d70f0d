// `npm run evidence`: Free-Mask's ablation table measured on ShapeWorld. Every row trains the same tiny Mask2Former
// (same config, steps, batch and seed) on N training images: the real ShapeWorld train pictures (oracle), or what
// `freemask generate` makes from the zoo with stages switched on one by one (A–E, H), or what `freemask curate`
// keeps of E after one or two active-learning rounds (F, G). Each model is measured on the ShapeWorld test scenes:
// semantic mIoU and per-class IoU, mask AP of the Mask2Former's own instance output and of instances from its
// semantic prediction by the zoo's IRN (TFISeg's stage), and the ratio of each to the oracle.
// Every step is a CLI command that resumes (generate, curate) or a result file that is kept, so a stopped run goes on
// where it was; rows share stage-1 pictures through generate's --cache. Results: bench/results/ablation.{json,md,png}.
// `--out runs/evidence` keeps a run in git (its .gitignore: times, cache, row results) to carry it between machines.
// Usage: npm run evidence [-- --count N --steps N --seeds 0,1 --rows oracle,A,… --test N --out DIR]
import { execSync, spawnSync } from 'node:child_process';
import { cpus } from 'node:os';
import { parseArgs } from 'node:util';
import { deviceInfo, getDevice } from '../src/engine/device.ts';
import { nodeFs, writeFileAtomic } from '../src/io/fs.ts';
import { writePng } from '../src/io/png.ts';
import { barChart } from '../src/io/plot.ts';
import { sceneSample, type SegmentationSample } from '../src/models/mask2former/data.ts';
import { evaluateSegmenter } from '../src/models/mask2former/evaluate.ts';
import { Mask2FormerForUniversalSegmentation } from '../src/models/mask2former/model.ts';
import { IrnNet } from '../src/models/irn/model.ts';
import { evaluateInstances } from '../src/pipeline/instances.ts';
import { worldImageId } from '../src/data/dataset.ts';
import { generateScene } from '../src/world/scene.ts';
import { splitSeed } from '../src/world/splits.ts';
import { classes as worldClasses, vocClassNames } from '../src/world/classes.ts';

const { values: o } = parseArgs({
  options: {
    out: { type: 'string', default: 'out/evidence' },
    results: { type: 'string', default: 'bench/results' },
    count: { type: 'string', default: '256' },
    steps: { type: 'string', default: '1500' },
    batch: { type: 'string', default: '4' },
    seeds: { type: 'string', default: '0' },
    rows: { type: 'string', default: 'oracle,A,B,C,D,E,F,G,H' },
    test: { type: 'string', default: '500' },
    'sampling-steps': { type: 'string', default: '20' },
    model: { type: 'string' },
    irn: { type: 'string', default: 'weights/shapeworld-irn' },
    help: { type: 'boolean' },
  },
});
if (o.help) {
  console.log('npm run evidence -- [--count N images per row (256)] [--steps N training steps (1500)] [--batch N (4)] [--seeds 0,1,… (0)] [--rows oracle,A,…,H] [--test N test scenes (500)] [--sampling-steps N (20)] [--model DIR (the zoo)] [--irn DIR] [--out DIR (out/evidence)] [--results DIR (bench/results)]');
  process.exit(0);
}
const int = (name: keyof typeof o) => {
  const v = Number(o[name]);
  if (!Number.isInteger(v) || v < 1) throw new Error(`--${name}: expected a positive integer, got '${o[name]}'`);
  return v;
};
const [count, steps, batch, testCount] = [int('count'), int('steps'), int('batch'), int('test')];
const seeds = o.seeds!.split(',').map((s) => {
  if (!/^\d+$/.test(s)) throw new Error(`--seeds: expected a comma list of non-negative integers, got '${o.seeds}'`);
  return Number(s);
});

/** The rows: what each trains on. `generate` rows are made by `freemask generate` with these arguments; F and G are rounds of E's curate run. */
const table = [
  { row: 'oracle', data: 'real ShapeWorld train images with their true masks (half single-object, half scenes)' },
  { row: 'A', data: 'DiffuMask-style: single-object generated images, attention masks', generate: ['--stages', 'instances'] },
  { row: 'B', data: 'A + AffinityNet refinement', generate: ['--stages', 'refine,instances'] },
  { row: 'C', data: 'B + multi-object prompts drawn by the diffusion model itself (no editing)', generate: ['--stages', 'refine,compose,instances', '--multi-by', 'prompt'] },
  { row: 'D', data: 'B + Free-Mask composition (thesaurus + FOPA)', generate: ['--stages', 'refine,compose,instances'] },
  { row: 'E', data: 'D + harmonization', generate: ['--stages', 'refine,compose,harmonize,instances'] },
  { row: 'F', data: 'E + 1 active-learning round', round: 1 },
  { row: 'G', data: 'E + 2 rounds', round: 2 },
  { row: 'H', data: 'E with random placement instead of FOPA (control)', generate: ['--stages', 'refine,compose,harmonize,instances', '--placement', 'random'] },
] as const;
type Row = (typeof table)[number];
const wanted = o.rows!.split(',');
const unknown = wanted.find((r) => !table.some((t) => t.row === r));
if (unknown) throw new Error(`--rows: unknown row '${unknown}' (rows: ${table.map((t) => t.row).join(', ')})`);
const rows = table.filter((t) => wanted.includes(t.row));

const fs = nodeFs('evidence');
const out = o.out!;
fs.mkdirSync(out, { recursive: true });
const timesPath = `${out}/times.json`;
const times: Record<string, number> = fs.existsSync(timesPath) ? JSON.parse(new TextDecoder().decode(fs.readFileSync(timesPath))) : {};
const json = (path: string, v: unknown) => writeFileAtomic(path, new TextEncoder().encode(`${JSON.stringify(v, null, 1)}\n`));

/** The times.json entries this table is made of (the file also keeps those of other sizes and step counts). */
const used = new Set<string>();
const addTime = (key: string, seconds: number) => {
  times[key] = (times[key] ?? 0) + seconds;
  json(timesPath, times);
};
// a stop (SIGTERM) ends the running step first; its time so far is recorded before this process exits
process.on('SIGTERM', () => process.exit(143));
/** A `freemask …` command; `key` names what it makes, `done` is the file that says it is made. */
interface Step { key: string; done: string; args: string[] }
/** Runs a step unless it is done; its wall time (summed over resumptions) goes into times.json under its key. */
function step({ key, done, args }: Step): void {
  if (fs.existsSync(done)) return;
  console.log(`\n[evidence] ${key}: freemask ${args.join(' ')}`);
  const t = performance.now();
  const r = spawnSync(process.execPath, ['--import', 'tsx', 'bin/freemask.ts', ...args], { stdio: 'inherit' });
  addTime(key, (performance.now() - t) / 1000);
  if (r.status !== 0) throw new Error(`evidence: step ${key} failed (exit ${r.status ?? r.signal}); rerun to resume it`);
}

const train = (seed: number) => ['--steps', String(steps), '--batch', String(batch), '--seed', String(seed)];
/** A seed's generated data (and models) for these sizes: other sizes get folders of their own. */
const runDir = (seed: number) => `${out}/n${count}-sampling${o['sampling-steps']}-seed${seed}`;
/** The curate folder whose round `round` is this row's model: F and G are rounds 1 and 2 of E's run, which trains the rounds asked for. */
const lastRoundOfE = Math.max(0, ...rows.map((r) => ('round' in r ? r.round : 0)));
const modelOf = (row: Row, seed: number) => {
  const source = 'round' in row ? 'E' : row.row;
  return { dir: `${runDir(seed)}/train-${source}-steps${steps}-batch${batch}`, round: 'round' in row ? row.round : 0, rounds: source === 'E' ? lastRoundOfE : 0 };
};

// the test scenes (never used for a choice) and the IRN that makes TFISeg's instances, built on first use
let testSet: { test: SegmentationSample[]; irn: IrnNet } | undefined;
async function testScenes() {
  if (!testSet) {
    await getDevice();
    const test = Array.from({ length: testCount }, (_, i) => {
      const s = splitSeed('test', i);
      return sceneSample(generateScene(s, { mode: 'scene', width: 64 }), worldImageId(s));
    });
    testSet = { test, irn: IrnNet.fromPretrained(o.irn!) };
  }
  return testSet;
}

interface Measured { miou: number; pixelAccuracy: number; iou: Record<string, number>; ap: number; ap50: number; ap75: number; apIrn: number; ap50Irn: number; kept?: number; dropped?: number }
const measured = new Map<string, Measured[]>();
// Row by row: its data, its model, its test result. A row whose result exists is done: its data and model are no
// longer needed, so a run carried to another machine needs only the results (and the stage-1 cache) to go on.
for (const seed of seeds) {
  const dir = runDir(seed);
  fs.mkdirSync(dir, { recursive: true });
  for (const row of rows) {
    const m = modelOf(row, seed);
    const path = `${m.dir}/round-${m.round}/test-${testCount}.json`;
    used.add(`evaluate ${path}`);
    // the row's steps: every one counts in the table's time, also when an earlier run made it
    const rowSteps: Step[] = [];
    let data: string;
    if (row.row === 'oracle') {
      // the same number of real pictures: half single-object, half scenes, from the train split
      const [single, scene] = [`${out}/real-single-${count}`, `${out}/real-scene-${count}`];
      rowSteps.push({ key: `world ${single}`, done: `${single}/manifest.json`, args: ['world', '--split', 'train', '--count', String(Math.ceil(count / 2)), '--mode', 'single', '--out', single] });
      rowSteps.push({ key: `world ${scene}`, done: `${scene}/manifest.json`, args: ['world', '--split', 'train', '--count', String(Math.floor(count / 2)), '--mode', 'scene', '--out', scene] });
      data = `${single},${scene}`;
    } else {
      const source = 'round' in row ? table.find((t) => t.row === 'E')! : row;
      data = `${dir}/data-${source.row}`;
      rowSteps.push({
        key: `generate ${data}`, done: `${data}/manifest.json`, args: [
          'generate', ...('generate' in source ? source.generate : []), '--count', String(count), '--seed', String(seed), '--steps', o['sampling-steps']!,
          ...(o.model ? ['--model', o.model] : []), '--cache', `${out}/cache`, '--out', data, '--quiet',
        ],
      });
    }
    rowSteps.push({ key: `curate ${m.dir}`, done: `${m.dir}/round-${m.rounds}/round.json`, args: ['curate', '--data', data, '--out', m.dir, '--rounds', String(m.rounds), ...train(seed)] });
    for (const s of rowSteps) used.add(s.key);
    if (!fs.existsSync(path)) {
      for (const s of rowSteps) step(s);

      const t = performance.now();
      const { test, irn } = await testScenes();
      const model = Mask2FormerForUniversalSegmentation.fromPretrained(`${m.dir}/round-${m.round}`);
      const r = await evaluateSegmenter(model, test);
      const tfiseg = (await evaluateInstances(test, irn, { methods: ['irn'], predictions: r.predictions })).get('irn')!;
      model.dispose();
      const present = worldClasses.map((c) => c.id);
      const round = JSON.parse(new TextDecoder().decode(fs.readFileSync(`${m.dir}/round-${m.round}/round.json`))) as { kept: number; dropped: number };
      json(path, {
        miou: r.miou, pixelAccuracy: r.pixelAccuracy, iou: Object.fromEntries([0, ...present].map((c) => [vocClassNames[c], r.iou[c]])),
        ap: r.maskAp!.ap, ap50: r.maskAp!.ap50, ap75: r.maskAp!.ap75, apIrn: tfiseg.ap, ap50Irn: tfiseg.ap50, kept: round.kept, dropped: round.dropped,
      } satisfies Measured);
      addTime(`evaluate ${path}`, (performance.now() - t) / 1000);
      console.log(`[evidence] ${row.row} seed ${seed}: mIoU ${(100 * r.miou).toFixed(2)}, mask AP ${(100 * r.maskAp!.ap).toFixed(2)}, AP (IRN) ${(100 * tfiseg.ap).toFixed(2)}`);
    }
    measured.set(row.row, [...(measured.get(row.row) ?? []), JSON.parse(new TextDecoder().decode(fs.readFileSync(path))) as Measured]);
  }
}

// the table: mean over seeds, the spread (min–max) when there are several, and each row's ratio to the oracle
const mean = (v: number[]) => v.reduce((a, x) => a + x, 0) / v.length;
const summary = (pick: (m: Measured) => number, row: string) => {
  const v = measured.get(row)!.map(pick);
  return { mean: mean(v), min: Math.min(...v), max: Math.max(...v) };
};
/** A row's measure over the oracle's; null when the oracle's is 0. */
const ratio = (v: number, of: number) => (of > 0 ? v / of : null);
const oracle = measured.has('oracle') ? { miou: summary((m) => m.miou, 'oracle').mean, ap: summary((m) => m.ap, 'oracle').mean, apIrn: summary((m) => m.apIrn, 'oracle').mean } : undefined;
const results = rows.map((row) => {
  const miou = summary((m) => m.miou, row.row), ap = summary((m) => m.ap, row.row), apIrn = summary((m) => m.apIrn, row.row);
  const per = measured.get(row.row)!;
  return {
    row: row.row, data: row.data, seeds: per.length, miou: miou.mean, miouRange: [miou.min, miou.max], ap: ap.mean, apRange: [ap.min, ap.max], apIrn: apIrn.mean, apIrnRange: [apIrn.min, apIrn.max],
    ap50: mean(per.map((m) => m.ap50)), pixelAccuracy: mean(per.map((m) => m.pixelAccuracy)),
    // a class absent from truth and prediction has no IoU (null in the JSON)
    iou: Object.fromEntries(Object.keys(per[0]!.iou).map((c) => [c, mean(per.map((m) => m.iou[c]!).filter((v) => v !== null && !Number.isNaN(v)))])),
    trainedOn: mean(per.map((m) => m.kept ?? count)), droppedByCuration: mean(per.map((m) => m.dropped ?? 0)),
    ...(oracle && { miouToOracle: ratio(miou.mean, oracle.miou), apToOracle: ratio(ap.mean, oracle.ap), apIrnToOracle: ratio(apIrn.mean, oracle.apIrn) }),
  };
});
let commit = 'unknown';
try {
  // the run's own folder (committed when a run is carried between machines) is not a change to the code
  const changed = execSync(`git status --porcelain --untracked-files=no -- . ':(exclude)${out}' ':(exclude)${o.results}'`, { encoding: 'utf8' }).trim();
  commit = execSync('git rev-parse --short HEAD', { encoding: 'utf8' }).trim() + (changed ? ' (with local changes)' : '');
} catch { /* not a git checkout */ }
const tableTimes = Object.fromEntries([...used].map((k) => [k, Math.round(times[k] ?? 0)]));
const totalSeconds = Object.values(tableTimes).reduce((a, x) => a + x, 0);
const setup = {
  imagesPerRow: count, trainingSteps: steps, batch, seeds, testScenes: testCount, samplingSteps: Number(o['sampling-steps']),
  segmenter: 'the tiny ShapeWorld Mask2Former (`freemask curate`\'s default config), same initial weights per seed', model: o.model ?? 'weights/shapeworld-sd', irn: o.irn,
};
// the adapter's name (a rerun of finished rows has not opened the device yet)
await getDevice();
const machine = { cpus: `${cpus().length} × ${cpus()[0]?.model ?? 'unknown'}`, adapter: deviceInfo().description };
fs.mkdirSync(o.results!, { recursive: true });
json(`${o.results}/ablation.json`, { rows: results, setup, machine, commit, seconds: totalSeconds, times: tableTimes });

const pct = (v: number) => (100 * v).toFixed(1);
// AP of the generated rows is a fraction of a percent: two decimals
const pct2 = (v: number) => (100 * v).toFixed(2);
const spread = (r: [number, number], format = pct) => (seeds.length > 1 ? ` (${format(r[0])}–${format(r[1])})` : '');
const lines = [
  `| row | training data (${count} images; same tiny Mask2Former, ${steps} steps, batch ${batch}) | mIoU | mask AP (Mask2Former) | mask AP (IRN on its semantics) | mIoU / oracle | AP / oracle |`,
  '|---|---|---|---|---|---|---|',
  ...results.map((r) => `| ${r.row} | ${r.data}${r.droppedByCuration ? ` (kept ${Math.round(r.trainedOn)})` : ''} | ${pct(r.miou)}${spread(r.miouRange as [number, number])} | ${pct2(r.ap)}${spread(r.apRange as [number, number], pct2)} | ${pct2(r.apIrn)}${spread(r.apIrnRange as [number, number], pct2)} | ${r.miouToOracle?.toFixed(2) ?? '–'} | ${r.apToOracle?.toFixed(2) ?? '–'} |`),
  '',
  `| IoU % (test scenes) | ${Object.keys(results[0]!.iou).join(' | ')} |`,
  `|---|${Object.keys(results[0]!.iou).map(() => '---').join('|')}|`,
  ...results.map((r) => `| ${r.row} | ${Object.values(r.iou).map((v) => (v === null || Number.isNaN(v) ? '–' : pct(v))).join(' | ')} |`),
  '',
  `${testCount} ShapeWorld test scenes; seeds ${seeds.join(', ')}${seeds.length > 1 ? ' (mean, min–max in brackets)' : ''}; ${setup.samplingSteps} sampling steps; machine: ${machine.cpus}, ${machine.adapter}; commit ${commit}; ${(totalSeconds / 3600).toFixed(2)} h of steps in all.`,
];
writeFileAtomic(`${o.results}/ablation.md`, new TextEncoder().encode(`${lines.join('\n')}\n`));
// the axis ends at the next tenth above the largest value, not at 100 %; 960 px leave room between the bars' labels
const chartTop = Math.max(0.1, Math.ceil(10 * Math.max(...results.flatMap((r) => [r.miou, r.ap, r.apIrn]))) / 10);
await writePng(`${o.results}/ablation.png`, barChart(results.map((r) => ({ label: r.row.toUpperCase(), values: [r.miou, r.ap, r.apIrn] })), { series: ['MIOU', 'AP', 'AP IRN'], max: chartTop, width: 960 }));
console.log(`\n${lines.join('\n')}\n\nwrote ${o.results}/ablation.json, ablation.md, ablation.png`);
