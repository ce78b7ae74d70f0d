// Dataset formats: COCO RLE (against vectors worked out by hand), palettized VOC PNGs, the ShapeWorld dataset
// writer and the folder evaluation on what it writes.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { encodeRle, maskToRle, parseCoco, rleFromString, rleToMask, rleToString, type CocoFile } from '../src/data/coco.ts';
import { readVocLabels, vocIds, vocPalette } from '../src/data/voc.ts';
import { objectBoxes, sceneAnnotations, writeWorldDataset } from '../src/data/dataset.ts';
import { decodeIndexedPng, decodePng, encodeIndexedPng, encodePng } from '../src/io/png.ts';
import { evaluateFolders } from '../src/metrics/evaluate.ts';
import { generateScene } from '../src/world/scene.ts';
import { seededRandom } from '../src/engine/random-cpu.ts';

const fs = process.getBuiltinModule('node:fs');
const os = process.getBuiltinModule('node:os');
const path = process.getBuiltinModule('node:path');
const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'freemask-data-'));

test('COCO RLE: hand-derived vectors of the run lengths and their compressed string', () => {
  // 3×3 mask, rows: 0 1 0 / 0 1 0 / 0 1 1. Column by column: 000 111 001 → runs 3 zeros, 3 ones, 2 zeros, 1 one.
  const mask = [0, 1, 0, 0, 1, 0, 0, 1, 1];
  assert.equal(encodeRle(mask, 3, 3), [3, 3, 2, 1]);
  // 3 → '3' (48 + 3), 3 → '3', 2 → '2'; the 4th run is stored as 1 − 3 = −2: low 5 bits 11110 = 30, and the
  // rest (−1) is the sign extension of bit 0x10, so no more groups: 48 + 30 = 'N'.
  assert.is(rleToString([3, 3, 2, 1]), '332N');
  assert.equal(maskToRle(mask, 3, 3), { size: [3, 3], counts: '332N' });
  // 40 = 0b1_01000: low group 8 with the "more" bit 0x20 → 48 + 40 = 'X', then 1 → '1'.
  assert.is(rleToString([40]), 'X1');
  // [5, 2, 1, 40]: '5', '2', '1', then 40 − 2 = 38 = 0b1_00110 → 6 | 0x20 = 38 → 'V', then '1'.
  assert.is(rleToString([5, 2, 1, 40]), '521V1');
  // [0, 40, 0, 1]: '0', 'X1', '0', then 1 − 40 = −39: low 5 bits of −39 are 11001 = 25, the rest is −2 (not
  // just sign) so 25 | 0x20 = 57 → 'i'; then −2 & 31 = 30 with rest −1 and bit 0x10 set: stop → 'N'.
  assert.is(rleToString([0, 40, 0, 1]), '0X10iN');
  for (const [s, counts] of [['332N', [3, 3, 2, 1]], ['X1', [40]], ['521V1', [5, 2, 1, 40]], ['0X10iN', [0, 40, 0, 1]], ['04', [0, 4]]] as const) {
    assert.equal(rleFromString(s), counts, s);
  }
  assert.equal(rleToMask({ size: [3, 3], counts: '332N' }), Uint8Array.from(mask));
  assert.throws(() => rleFromString('3 3'), /character ' '/);
  assert.throws(() => rleToMask({ size: [3, 3], counts: [3, 3] }), /sum to 6, expected 3×3 = 9/);
});

test('COCO RLE: encode → string → decode is the identity on random masks of odd sizes', () => {
  const rand = seededRandom(3);
  for (let k = 0; k < 40; k++) {
    const w = 1 + Math.floor(rand() * 40), h = 1 + Math.floor(rand() * 40);
    const density = rand();
    // blobs and noise, so runs are both long and short
    const mask = Uint8Array.from({ length: w * h }, (_, p) => (rand() < density * 0.2 ? 1 : Math.sin((p % w) / 5) * Math.cos(Math.floor(p / w) / 7) > density - 0.5 ? 1 : 0));
    const rle = maskToRle(mask, w, h);
    assert.equal(rleToMask(rle), mask, `${w}×${h}`);
    assert.equal(rleToMask({ size: [h, w], counts: rleFromString(rle.counts as string) }), mask);
  }
});

test('VOC palette: the standard colours', () => {
  const colour = (i: number) => [...vocPalette.subarray(3 * i, 3 * i + 3)];
  assert.equal(colour(0), [0, 0, 0]);
  assert.equal(colour(1), [128, 0, 0]); // aeroplane
  assert.equal(colour(2), [0, 128, 0]);
  assert.equal(colour(7), [128, 128, 128]); // car
  assert.equal(colour(15), [192, 128, 128]); // person
  assert.equal(colour(20), [0, 64, 128]); // tvmonitor
  assert.equal(colour(255), [224, 224, 192]); // ignore
});

test('palettized PNG: round trip of indices and palette; pngjs sees the palette colours; gray PNGs read as indices', async () => {
  const rand = seededRandom(9);
  const [w, h] = [13, 7];
  const indices = Uint8Array.from({ length: w * h }, () => (rand() < 0.1 ? 255 : Math.floor(rand() * 21)));
  const bytes = encodeIndexedPng({ width: w, height: h, indices, palette: vocPalette });
  const back = decodeIndexedPng(bytes);
  assert.equal([back.width, back.height], [w, h]);
  assert.equal(back.indices, indices);
  assert.equal(back.palette, vocPalette);
  // an independent decoder (pngjs) expands the palette: every pixel has its index's VOC colour
  const rgb = await decodePng(bytes);
  for (let p = 0; p < w * h; p++) assert.equal([...rgb.data.subarray(rgb.channels * p, rgb.channels * p + 3)], [...vocPalette.subarray(3 * indices[p]!, 3 * indices[p]! + 3)]);
  // an 8-bit gray PNG written by pngjs (with its row filters) reads back as the same values
  const gray = Uint8Array.from({ length: 31 * 9 }, (_, i) => (i * 7) % 256);
  assert.equal(decodeIndexedPng(await encodePng({ width: 31, height: 9, channels: 1, data: gray })).indices, gray);
  assert.throws(() => decodeIndexedPng(new Uint8Array(40), 'x.png'), /x.png: not a PNG/);
  const rgbPng = await encodePng({ width: 2, height: 2, channels: 3, data: new Uint8Array(12) });
  assert.throws(() => decodeIndexedPng(rgbPng, 'rgb.png'), /rgb.png: a label map must be an indexed-colour PNG or 8-bit gray \(found colour type 2/);
});

test('world dataset: VOC + COCO + manifest, complete or absent; same seeds, same bytes', async () => {
  const out = path.join(dir, 'a');
  const manifest = await writeWorldDataset({ split: 'val', count: 6, out, size: 32 });
  assert.equal(manifest.seeds, { first: 1_000_000, last: 1_000_005 });
  assert.ok(manifest.complete);
  const ids = vocIds(out);
  assert.is(ids.length, 6);
  const coco = parseCoco(fs.readFileSync(path.join(out, 'annotations/instances_val.json'), 'utf8'), 'coco') as CocoFile;
  assert.is(coco.images.length, 6);
  for (const [k, id] of ids.entries()) {
    const scene = generateScene(1_000_000 + k, { width: 32 });
    const labels = readVocLabels(out, id);
    assert.equal(labels.semantic, scene.semantic);
    assert.equal(labels.objects, scene.instance);
    const anns = coco.annotations.filter((a) => a.image_id === 1_000_000 + k);
    assert.is(anns.length, scene.instances.length);
    for (const [j, a] of anns.entries()) {
      assert.equal(rleToMask(a.segmentation), scene.instance.map((v) => (v === j + 1 ? 1 : 0)));
      assert.is(a.category_id, scene.instances[j]!.classId);
    }
    assert.ok(JSON.stringify(coco.images[k]).includes(scene.prompt));
  }
  // byte-identical files when written again
  const again = path.join(dir, 'b');
  await writeWorldDataset({ split: 'val', count: 6, out: again, size: 32 });
  for (const sub of ['JPEGImages', 'SegmentationClass', 'SegmentationObject']) {
    for (const f of fs.readdirSync(path.join(out, sub))) assert.ok(fs.readFileSync(path.join(out, sub, f)).equals(fs.readFileSync(path.join(again, sub, f))), `${sub}/${f}`);
  }
  // a failure half-way leaves nothing at the target, nor a temporary folder
  const broken = path.join(dir, 'c');
  const stop = (n: number) => {
    if (n === 3) throw new Error('disk full (simulated)');
  };
  await writeWorldDataset({ split: 'train', count: 5, out: broken }, stop).then(() => assert.unreachable(), (e: Error) => assert.match(e.message, /simulated/));
  assert.not.ok(fs.existsSync(broken));
  assert.equal(fs.readdirSync(dir).sort(), ['a', 'b']);
  // bad options name the argument
  const bad = async (o: Parameters<typeof writeWorldDataset>[0], re: RegExp) => writeWorldDataset(o).then(() => assert.unreachable(), (e: Error) => assert.match(e.message, re));
  await bad({ split: 'dev' as 'val', count: 1, out: path.join(dir, 'x') }, /--split: unknown split 'dev'/);
  await bad({ split: 'val', count: 0, out: path.join(dir, 'x') }, /--count: expected a positive integer/);
  await bad({ split: 'val', count: 10_001, out: path.join(dir, 'x') }, /--count: split 'val' has 10000 images/);
  await bad({ split: 'val', count: 1, out: path.join(dir, 'x'), mode: 'many' as 'scene' }, /--mode: unknown mode 'many'/);
  await bad({ split: 'val', count: 1, out }, /--out: .* already exists/);
  await bad({ split: 'val', count: 1, out: path.join(dir, 'no/such/x') }, /--out: parent directory .* does not exist/);
});

test('evaluate folders: truth against itself is perfect; damaged predictions score lower; mismatches named', async () => {
  const gt = path.join(dir, 'a');
  const perfect = evaluateFolders(gt, gt);
  assert.is(perfect.miou, 1);
  assert.is(perfect.boundaryF, 1);
  assert.is(perfect.ap!.ap, 1);
  // predictions as COCO results only (a list with scores), one instance dropped
  const pred = path.join(dir, 'pred');
  fs.mkdirSync(path.join(pred, 'annotations'), { recursive: true });
  const coco = parseCoco(fs.readFileSync(path.join(gt, 'annotations/instances_val.json'), 'utf8'), 'gt');
  const results = coco.annotations.slice(1).map((a) => ({ image_id: a.image_id, category_id: a.category_id, segmentation: a.segmentation, score: 0.9 }));
  fs.writeFileSync(path.join(pred, 'annotations/results.json'), JSON.stringify(results));
  // image ids are resolved through the truth's image list; AP drops below 1 since one truth is missed
  const r = evaluateFolders(pred, gt);
  assert.ok(r.ap!.ap < 1 && r.ap!.ap > 0.5, `AP ${r.ap!.ap}`);
  assert.ok(r.miou < 1, `mIoU ${r.miou}`);
  assert.throws(() => evaluateFolders(path.join(dir, 'none'), gt), /--pred: .*none is not a directory/);
  assert.throws(() => evaluateFolders(gt, path.join(dir, 'none')), /--gt: .*none is not a directory/);
  // a folder of other images: the missing file is named
  const other = path.join(dir, 'other');
  await writeWorldDataset({ split: 'train', count: 2, out: other, size: 32 });
  assert.throws(() => evaluateFolders(other, gt), /--pred: .*other lacks 6 of the 6 truth images \(first: 'sw1000000'\)/);
  // same names, other size
  const big = path.join(dir, 'big');
  await writeWorldDataset({ split: 'val', count: 6, out: big, size: 48 });
  assert.throws(() => evaluateFolders(big, gt), /image 'sw1000000' is 48×48 in .*big, 32×32 in/);
  assert.ok(sceneAnnotations(generateScene(1), 1).length >= 1);
});

test('CLI: eval prints the table; bad arguments exit 1 naming the argument', () => {
  const cp = process.getBuiltinModule('node:child_process');
  const cli = (...args: string[]) => cp.spawnSync(process.execPath, ['--import', 'tsx', 'bin/freemask.ts', ...args], { encoding: 'utf8' });
  const ok = cli('eval', '--pred', path.join(dir, 'a'), '--gt', path.join(dir, 'a'));
  assert.is(ok.status, 0, ok.stderr);
  assert.match(ok.stdout, /mIoU  100\.0/);
  assert.match(ok.stdout, /mask AP  100\.0   AP50  100\.0   AP75  100\.0/);
  const bad = cli('world', '--split', 'val', '--count', 'many', '--out', path.join(dir, 'z'));
  assert.is(bad.status, 1);
  assert.match(bad.stderr, /freemask world: --count: expected a positive integer, got 'many'/);
  // options by util.parseArgs: unknown ones, stray words and missing values named; --help; --config mirrors the flags
  assert.match(cli('world', '--split', 'val', '--bogus', '3').stderr, /freemask world: unexpected argument '--bogus' \(options: --split --count/);
  assert.match(cli('world', 'val').stderr, /freemask world: unexpected argument 'val'/);
  assert.match(cli('world', '--split', 'val', '--out').stderr, /freemask world: --out: missing value/);
  const help = cli('world', '--help');
  assert.is(help.status, 0);
  assert.match(help.stdout, /freemask world: write a ShapeWorld dataset[^]*--size +N: side in pixels \(default 64\)[^]*--config/);
  assert.match(cli('--help').stdout, /train-instances +train the instance branches/);
  const config = path.join(dir, 'world.json');
  fs.writeFileSync(config, JSON.stringify({ split: 'val', count: 2, size: 32, out: path.join(dir, 'from-config') }));
  const fromConfig = cli('world', '--config', config, '--count', '3');
  assert.is(fromConfig.status, 0, fromConfig.stderr);
  assert.match(fromConfig.stdout, /wrote 3 scene images of split val .*32×32/);
  fs.writeFileSync(config, JSON.stringify({ split: 'val', colour: 'red' }));
  assert.match(cli('world', '--config', config).stderr, /--config: .*world\.json: "colour" is not an option of world/);
});

test('objectBoxes: each id\'s COCO box and pixel count; background and uncertain are no objects', () => {
  // 4 wide: id 1 at (1,0) (2,1); id 2 at (0,2); 255 and 0 elsewhere
  const map = [0, 1, 0, 255, 0, 0, 1, 0, 2, 0, 0, 255];
  assert.equal([...objectBoxes(map, 4)], [[1, { bbox: [1, 0, 2, 2], area: 2 }], [2, { bbox: [0, 2, 1, 1], area: 1 }]]);
});

test.run();
