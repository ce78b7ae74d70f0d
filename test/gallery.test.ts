// The gallery page in a real headless Chromium (Debian's package, installed by scripts/setup-chromium.sh when
// missing): it renders one card per image, its filters (class, kept/dropped, IoU range, also from the URL hash)
// show the counts the data implies, and it logs no error.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { testIf } from './helpers.ts';
import { writeWorldDataset } from '../src/data/dataset.ts';
import { readVocLabels } from '../src/data/voc.ts';
import { writeGallery } from '../src/pipeline/gallery.ts';

const fs = process.getBuiltinModule('node:fs');
const os = process.getBuiltinModule('node:os');
const path = process.getBuiltinModule('node:path');
const cp = process.getBuiltinModule('node:child_process');
const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'freemask-gallery-'));
const root = new URL('..', import.meta.url).pathname;

const setup = cp.spawnSync('bash', [`${root}scripts/setup-chromium.sh`], { encoding: 'utf8' });
const chromium = setup.status === 0 ? setup.stdout.trim().split('\n').pop()! : '';

/** The page's <body> attributes after its scripts ran, and Chromium's log. */
function load(url: string): { shown: number; errors: number; log: string } {
  const r = cp.spawnSync(chromium, ['--headless=new', '--no-sandbox', '--disable-gpu', '--enable-logging=stderr', '--v=0', '--dump-dom', url], { encoding: 'utf8', timeout: 60_000 });
  const body = /<body data-shown="(\d+)" data-errors="(\d+)"/.exec(r.stdout);
  assert.ok(body, `no rendered body for ${url}: ${r.stderr.slice(-500)}`);
  return { shown: Number(body![1]), errors: Number(body![2]), log: r.stderr };
}

testIf(!!chromium, `no Chromium: ${setup.stderr.trim()}`)('gallery: cards, overlays and filters render in headless Chromium without errors', async () => {
  const data = `${dir}/data`;
  await writeWorldDataset({ split: 'val', count: 10, out: data });
  const ids = fs.readFileSync(`${data}/ImageSets/Segmentation/val.txt`, 'utf8').trim().split('\n');
  // a curate round's verdicts: every third sample dropped, IoUs spread over [0, 1]
  const scores = ids.map((id, k) => ({ id, ious: { 1: k / 9, 3: (k % 3) / 4 }, kept: k % 3 !== 0 }));
  fs.mkdirSync(`${dir}/curate/round-1`, { recursive: true });
  fs.writeFileSync(`${dir}/curate/round-1/scores.json`, JSON.stringify(scores));
  const r = await writeGallery(data, { curate: `${dir}/curate` });
  assert.is(r.items, 10);
  for (const id of ids) assert.ok(fs.existsSync(`${data}/gallery/${id}-class.png`) && fs.existsSync(`${data}/gallery/${id}-instance.png`), `${id} overlays`);
  const page = `file://${r.path}`;
  const all = load(page);
  assert.is(all.shown, 10);
  assert.is(all.errors, 0);
  assert.not.match(all.log, /Uncaught|CONSOLE.*(error|Error)/, 'no console error');
  assert.is(load(`${page}#status=dropped`).shown, scores.filter((s) => !s.kept).length);
  assert.is(load(`${page}#status=kept&min=0.5&max=1`).shown, scores.filter((s) => s.kept && Math.max(...Object.values(s.ious)) >= 0.5).length);
  const withPerson = ids.filter((id) => readVocLabels(data, id).semantic.includes(15)).length;
  assert.ok(withPerson > 0 && withPerson < 10, `${withPerson} images with a person`);
  assert.is(load(`${page}#class=person`).shown, withPerson);
  // the picture for the README
  const shot = cp.spawnSync(chromium, ['--headless=new', '--no-sandbox', '--disable-gpu', '--window-size=1280,720', `--screenshot=${dir}/gallery.png`, `${page}#status=dropped`], { encoding: 'utf8', timeout: 60_000 });
  assert.is(shot.status, 0, shot.stderr);
  assert.ok(fs.statSync(`${dir}/gallery.png`).size > 10_000);
});

test('gallery: bad input names the folder', async () => {
  await writeWorldDataset({ split: 'val', count: 2, out: `${dir}/small` });
  await writeGallery(`${dir}/small`, { curate: `${dir}/none` }).then(() => assert.unreachable(), (e: Error) => assert.match(e.message, /--curate: .*none has no round-N\/scores.json/));
  fs.mkdirSync(`${dir}/other/round-1`, { recursive: true });
  fs.writeFileSync(`${dir}/other/round-1/scores.json`, JSON.stringify([{ id: 'x', ious: {}, kept: false }]));
  await writeGallery(`${dir}/small`, { curate: `${dir}/other` }).then(() => assert.unreachable(), (e: Error) => assert.match(e.message, /has no sample 'sw1000000'/));
});

test.after(() => fs.rmSync(dir, { recursive: true, force: true }));

test.run();
