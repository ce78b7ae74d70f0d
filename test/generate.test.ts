// `freemask generate` / `merge` on a tiny random-weight Stable Diffusion written as a diffusers folder, with the
// shipped FOPA and instance branches: same arguments → same bytes; a real child process killed with SIGKILL at
// random moments and rerun gives the bytes of an uninterrupted run; shards from separate processes merge into a
// single run's bytes; the pasted objects' masks are exact; bad input is refused without touching anything.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { assertRejects } from './helpers.ts';
import { writeTinyStableDiffusion } from './tiny_pipeline.ts';
import { AutoencoderKL } from '../src/models/autoencoder_kl.ts';
import { UNet2DConditionModel } from '../src/models/unet_2d_condition.ts';
import { ObPlaNet } from '../src/models/fopa.ts';
import { StableDiffusionPipeline } from '../src/models/stable_diffusion.ts';
import { readVocLabels } from '../src/data/voc.ts';
import { classListFromNames, generateDataset, mergeDatasets, shapeWorldClassList, shardFromEnvironment } from '../src/pipeline/generate.ts';
import { harmonizerFromName } from '../src/pipeline/harmonize.ts';
import { writeGallery } from '../src/pipeline/gallery.ts';
import { vocThesaurus } from '../src/pipeline/thesaurus.ts';

const fs = process.getBuiltinModule('node:fs');
const os = process.getBuiltinModule('node:os');
const path = process.getBuiltinModule('node:path');
const cp = process.getBuiltinModule('node:child_process');
const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'freemask-generate-'));
const root = new URL('..', import.meta.url).pathname;
const model = `${dir}/sd`;

/** Every file under `a` and `b` byte-equal; manifest.json equal once its timings are dropped. */
function assertSameDataset(a: string, b: string): void {
  const files = (d: string, rel = ''): string[] => fs.readdirSync(`${d}/${rel}`).sort().flatMap((n) => (fs.statSync(`${d}/${rel}${n}`).isDirectory() ? files(d, `${rel}${n}/`) : [`${rel}${n}`]));
  assert.equal(files(a), files(b), 'the same files');
  for (const f of files(a)) {
    if (f === 'manifest.json') {
      const [ma, mb] = [a, b].map((d) => ({ ...JSON.parse(fs.readFileSync(`${d}/${f}`, 'utf8')), timings: undefined }));
      assert.equal(ma, mb, 'manifest.json apart from timings');
    } else assert.ok(Buffer.compare(fs.readFileSync(`${a}/${f}`), fs.readFileSync(`${b}/${f}`)) === 0, `${f} differs between ${a} and ${b}`);
  }
}

const cli = ['--import', 'tsx', `${root}bin/freemask.ts`];
// AffinityNet refinement trains a net per object (seconds each): the library test below covers it
const common = (out: string) => ['generate', '--model', model, '--count', '5', '--steps', '2', '--seed', '3', '--multi', '0.7', '--stages', 'compose,harmonize,instances', '--out', out];

function run(args: string[], env: Record<string, string> = {}): { status: number | null; stderr: string; stdout: string } {
  const r = cp.spawnSync(process.execPath, [...cli, ...args], { cwd: root, encoding: 'utf8', env: { ...process.env, ...env } });
  return { status: r.status, stderr: r.stderr, stdout: r.stdout };
}

test('generate: a dataset from a class list; exact masks for pasted objects; same arguments → same bytes', async () => {
  await writeTinyStableDiffusion(model);
  const r = run([...common(`${dir}/a`), '--quiet']);
  assert.is(r.status, 0, r.stderr);
  const m = JSON.parse(fs.readFileSync(`${dir}/a/manifest.json`, 'utf8'));
  assert.is(m.count, 5);
  assert.is(m.complete, true);
  assert.equal(fs.readFileSync(`${dir}/a/ImageSets/Segmentation/train.txt`, 'utf8').trim().split('\n'), ['gen0000000', 'gen0000001', 'gen0000002', 'gen0000003', 'gen0000004']);
  const coco = JSON.parse(fs.readFileSync(`${dir}/a/annotations/instances_train.json`, 'utf8'));
  assert.is(coco.images.length, 5);
  assert.equal(coco.categories.map((c: { name: string }) => c.name), shapeWorldClassList().classes.map((c) => c.name));
  const pasted = m.images.flatMap((i: { provenance: { pasted: { box?: number[] }[] } }) => i.provenance.pasted.filter((p) => p.box));
  assert.ok(pasted.length >= 1, 'some objects were pasted');
  // each instance's pixels in the object map carry its class in the class map, and its COCO area is its pixel count
  for (const im of coco.images) {
    const id = im.file_name.replace(/^.*\/|\.png$/g, '');
    const { semantic, objects } = readVocLabels(`${dir}/a`, id);
    for (const a of coco.annotations.filter((x: { image_id: number }) => x.image_id === im.id)) {
      const iid = a.id - im.id * 256;
      let n = 0;
      objects!.forEach((v: number, p: number) => {
        if (v !== iid) return;
        n++;
        assert.is(semantic[p], a.category_id, `${id}: instance ${iid}'s pixels are of its class`);
      });
      assert.is(n, a.area, `${id}: instance ${iid}'s area`);
    }
  }
  const again = run([...common(`${dir}/a2`), '--quiet']);
  assert.is(again.status, 0, again.stderr);
  assertSameDataset(`${dir}/a`, `${dir}/a2`);
  // rerunning into the finished folder does nothing and succeeds
  const before = fs.readFileSync(`${dir}/a/manifest.json`);
  assert.is(run([...common(`${dir}/a`), '--quiet']).status, 0);
  assert.ok(Buffer.compare(before, fs.readFileSync(`${dir}/a/manifest.json`)) === 0);
});

test('generate: killed with SIGKILL at random moments and rerun, the folder is byte-identical to an uninterrupted run', async () => {
  const out = `${dir}/killed`;
  const rand = ((s) => () => ((s = (s * 1103515245 + 12345) >>> 0) / 2 ** 32))(17);
  let kills = 0;
  for (let attempt = 0; attempt < 8 && !fs.existsSync(out); attempt++) {
    const child = cp.spawn(process.execPath, [...cli, ...common(out), '--quiet'], { cwd: root, stdio: 'ignore' });
    const done = new Promise<number | null>((resolve) => child.on('exit', (code) => resolve(code)));
    // a random moment within the run: start-up takes seconds, each image about a second
    const timer = setTimeout(() => child.kill('SIGKILL'), 4000 + rand() * 8000);
    const code = await done;
    clearTimeout(timer);
    if (code === null) kills++;
  }
  if (!fs.existsSync(out)) assert.is(run([...common(out), '--quiet']).status, 0);
  assert.ok(kills >= 1, 'the run was killed at least once');
  assertSameDataset(`${dir}/a`, out);
  assert.not.ok(fs.existsSync(`${out}.partial`), 'no partial folder left');
  // killed while finishing (manifest written, bookkeeping and a write's temporary file still there, not renamed)
  fs.cpSync(`${dir}/a`, `${dir}/fin.partial`, { recursive: true });
  fs.mkdirSync(`${dir}/fin.partial/records`);
  fs.writeFileSync(`${dir}/fin.partial/JPEGImages/gen0000001.png.1-0.tmp`, 'half');
  const r = run([...common(`${dir}/fin`), '--quiet']);
  assert.is(r.status, 0, r.stderr);
  assertSameDataset(`${dir}/a`, `${dir}/fin`);
});

test('generate: shards from separate processes (flag, Slurm, Kubernetes) merge into the single run', async () => {
  const kids = [
    cp.spawn(process.execPath, [...cli, ...common(`${dir}/s0`), '--shard', '0/3', '--quiet'], { cwd: root, stdio: 'ignore' }),
    cp.spawn(process.execPath, [...cli, ...common(`${dir}/s1`), '--quiet'], { cwd: root, stdio: 'ignore', env: { ...process.env, SLURM_ARRAY_TASK_ID: '1', SLURM_ARRAY_TASK_COUNT: '3' } }),
  ];
  const codes = await Promise.all(kids.map((k) => new Promise((resolve) => k.on('exit', resolve))));
  assert.equal(codes, [0, 0]);
  assert.is(run([...common(`${dir}/s2`), '--shard-count', '3', '--quiet'], { JOB_COMPLETION_INDEX: '2' }).status, 0);
  assert.equal(fs.readFileSync(`${dir}/s1/ImageSets/Segmentation/train.txt`, 'utf8'), 'gen0000001\ngen0000004\n');
  const bad = run(['merge', `${dir}/s0`, `${dir}/s2`, '--out', `${dir}/m-bad`]);
  assert.is(bad.status, 1);
  assert.match(bad.stderr, /shard\(s\) 1\/3 missing/);
  assert.not.ok(fs.existsSync(`${dir}/m-bad`));
  const r = run(['merge', `${dir}/s2`, `${dir}/s0`, `${dir}/s1`, '--out', `${dir}/merged`]);
  assert.is(r.status, 0, r.stderr);
  assertSameDataset(`${dir}/a`, `${dir}/merged`);
});

test('generate: bad input is refused naming it, and an existing folder is left untouched', async () => {
  const cases: [string[], RegExp][] = [
    [['--count', '0'], /--count: expected a positive integer, got 0/],
    [['--shard', '3/3'], /--shard: expected K\/N with 0 ≤ K < N, got 3\/3/],
    [['--classes', 'boat,,'], /--classes: '' is not a class name/],
    [['--classes', 'classes.json'], /--classes: file classes.json does not exist/],
    [['--stages', 'refine,paint'], /--stages: unknown stage 'paint'/],
    [['--model', `${dir}/nothing`], /--model: .*nothing has no model_index.json/],
    [['--mask', 'sharp'], /--mask: 'sharp' is neither zoo, dataset-diffusion, diffumask nor a JSON file/],
  ];
  for (const [args, re] of cases) {
    const r = run(['generate', '--model', model, '--count', '2', '--steps', '2', '--out', `${dir}/bad`, ...args]);
    assert.is(r.status, 1, `${args.join(' ')}: ${r.stderr}`);
    assert.match(r.stderr, re);
    assert.not.ok(fs.existsSync(`${dir}/bad`) || fs.existsSync(`${dir}/bad.partial`), `${args.join(' ')} wrote nothing`);
  }
  // an output folder that holds another dataset (here: a different seed's)
  const before = fs.readFileSync(`${dir}/a/annotations/instances_train.json`);
  const r = run(['generate', '--model', model, '--count', '5', '--steps', '2', '--seed', '4', '--out', `${dir}/a`]);
  assert.is(r.status, 1);
  assert.match(r.stderr, /already exists and holds a generated dataset with other settings/);
  assert.ok(Buffer.compare(before, fs.readFileSync(`${dir}/a/annotations/instances_train.json`)) === 0);
  assert.throws(() => shardFromEnvironment({ JOB_COMPLETION_INDEX: '1' }), /completions/);
  assert.equal(shardFromEnvironment({ SLURM_ARRAY_TASK_ID: '5', SLURM_ARRAY_TASK_COUNT: '4', SLURM_ARRAY_TASK_MIN: '2' }), { index: 3, count: 4 });
  assert.throws(() => mergeDatasets([`${dir}/a`, `${dir}/s0`], `${dir}/m2`), /other settings|shard/);
});

test('generate as a library call: named classes through the VOC thesaurus, stages switched off keep the draws', async () => {
  const pipe = await StableDiffusionPipeline.fromPretrained(model, { unet: UNet2DConditionModel, vae: AutoencoderKL });
  const classes = await classListFromNames(['TV monitors', 'boat'], vocThesaurus, 'test');
  assert.equal(classes.classes.map((c) => [c.id, c.word, c.match?.thesaurusClass]), [[1, 'TV monitors', 'tvmonitor'], [2, 'boat', 'boat']]);
  await assertRejects(classListFromNames(['boat', 'boat'], vocThesaurus, 'test'), /'boat' is listed twice/);
  // a class no table knows: an error naming it without an embedder; with one, the nearest known class and its score
  await assertRejects(classListFromNames(['boat', 'zebra'], vocThesaurus, 'test'), /class 'zebra': thesaurus VOC .*no class "zebra"/);
  const embed = async (names: readonly string[]) => names.map((n) => Float32Array.from([n === 'zebra' || n === 'horse' ? 1 : 0, 1]));
  const zebra = (await classListFromNames(['zebra'], vocThesaurus, 'test', embed)).classes[0]!;
  assert.equal([zebra.match?.thesaurusClass, zebra.match?.how], ['horse', 'embedding']);
  const fopa = ObPlaNet.fromPretrained(`${root}weights/shapeworld-fopa`);
  const base = { count: 2, seed: 1, pipe, classes, numInferenceSteps: 2, multi: 1, fopa, harmonizer: { name: 'reinhard', run: harmonizerFromName('reinhard') } };
  const all = await generateDataset({ ...base, out: `${dir}/lib-all` });
  const none = await generateDataset({ ...base, out: `${dir}/lib-none`, stages: [] });
  // the same classes, backgrounds and prompts with every stage off; nothing pasted
  assert.equal(none.images.map((i) => [i.provenance.class, i.provenance.prompt]), all.images.map((i) => [i.provenance.class, i.provenance.prompt]));
  assert.ok(none.images.every((i) => (i.provenance.pasted as unknown[]).length === 0));
  assert.ok(all.images.some((i) => (i.provenance.pasted as unknown[]).length > 0));
  assert.match(String(all.images[0]!.provenance.prompt), /^a photo of an? (TV monitors|boat), /);
  // the stage-1 cache changes no byte; a second run takes every picture and (refined) mask from it, sampling nothing
  const cache = { dir: `${dir}/cache`, model: 'tiny' };
  await generateDataset({ ...base, out: `${dir}/lib-cached`, cache });
  assertSameDataset(`${dir}/lib-all`, `${dir}/lib-cached`);
  const entries = fs.readdirSync(cache.dir).length;
  assert.ok(entries >= 8, `pictures, masks and refined masks cached (${entries} files)`);
  const noSampling = Object.assign(Object.create(pipe), { sample: () => { throw new Error('sampled despite the cache'); } }) as StableDiffusionPipeline;
  await generateDataset({ ...base, pipe: noSampling, out: `${dir}/lib-cached2`, cache });
  assertSameDataset(`${dir}/lib-all`, `${dir}/lib-cached2`);
  assert.is(fs.readdirSync(cache.dir).length, entries);
  // the pictures before the stages that changed them: kept under stages/<id>/ and shown by the gallery in order
  const befores = all.images.map((i) => i.provenance.before as string[]);
  assert.ok(befores.some((b) => b.includes('attention') && b.includes('refined')), 'a refined mask and its attention mask');
  const harmonized = all.images.find((i) => (i.provenance.before as string[]).includes('composite'));
  assert.ok(harmonized, 'an image with pasted objects, harmonized');
  for (const i of all.images) for (const name of i.provenance.before as string[]) assert.ok(fs.existsSync(`${dir}/lib-all/stages/${i.id}/${name}.png`), `${i.id}: ${name}.png`);
  await writeGallery(`${dir}/lib-all`);
  const items = JSON.parse(/<script type="application\/json" id="data">(.*?)<\/script>/s.exec(fs.readFileSync(`${dir}/lib-all/index.html`, 'utf8'))![1]!);
  const strip = items.find((i: { id: string }) => i.id === harmonized!.id).stages as { src: string; caption: string }[];
  assert.equal(strip.map((x) => x.caption).filter((c) => c !== 'attention mask' && c !== 'refined mask'), ['stage 1', 'pasted', 'harmonized']);
  for (const x of strip) assert.ok(fs.existsSync(`${dir}/lib-all/${x.src}`), x.src);
  // further objects named in the prompt instead: one picture, the classes drawn by the model, nothing pasted
  const indoor = await classListFromNames(['cat', 'TV monitors'], vocThesaurus, 'test');
  const prompted = await generateDataset({ ...base, count: 6, classes: indoor, objects: [2, 2], fopa: undefined, multiBy: 'prompt', stages: ['compose'], out: `${dir}/lib-prompt` });
  assert.ok(prompted.images.every((i) => (i.provenance.pasted as unknown[]).length === 0));
  const named = prompted.images.find((i) => (i.provenance.prompted as string[] | undefined)?.length === 2);
  assert.ok(named, 'an image with two classes in its prompt');
  assert.match(String(named!.provenance.prompt), /^a photo of an? (TV monitors|cat) and an? (TV monitors|cat), indoor$/);
  // the control: random placement needs no FOPA and says so per object
  const random = await generateDataset({ ...base, fopa: undefined, placement: 'random', stages: ['compose'], out: `${dir}/lib-random` });
  const placed = random.images.flatMap((i) => (i.provenance.pasted as { placement?: string; box?: number[] }[]).filter((p) => p.box));
  assert.ok(placed.length > 0 && placed.every((p) => p.placement === 'random' && p.box![0]! >= 0 && p.box![0]! + p.box![2]! <= 64));
  fopa.dispose();
});

test('generate: jobs of neighbouring seeds share no picture (seed 1 was seed 0 with image pairs swapped)', async () => {
  const pipe = await StableDiffusionPipeline.fromPretrained(model, { unet: UNet2DConditionModel, vae: AutoencoderKL });
  const classes = await classListFromNames(['boat', 'cow'], vocThesaurus, 'test');
  const pictures = async (seed: number) => (await generateDataset({ count: 4, seed, pipe, classes, numInferenceSteps: 2, stages: [], out: `${dir}/seed-${seed}` })).images.map((i) => i.provenance.seed as number);
  const [zero, one] = [await pictures(0), await pictures(1)];
  assert.is(new Set([...zero, ...one]).size, 8);
});

test.after(() => fs.rmSync(dir, { recursive: true, force: true }));

test.run();
