// PNG files and image ↔ tensor conversions.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import './helpers.ts';
import { Tensor } from '../src/engine/tensor.ts';
import { type Image, heatmapToImage, imageToLabels, imageToTensor, maskToImage, sideBySide, stacked, tensorToImage } from '../src/io/image.ts';
import { barChart, curveAxes, drawText, lossCurve } from '../src/io/plot.ts';
import { decodePng, encodePng, maskToPng, readPng, writePng } from '../src/io/png.ts';

const fs = process.getBuiltinModule('node:fs');
const os = process.getBuiltinModule('node:os');
const path = process.getBuiltinModule('node:path');
const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'freemask-image-'));

/** Awaits `p`, asserting that it rejects with an Error that `check` accepts. */
async function rejects(p: Promise<unknown>, check: RegExp | ((e: Error) => boolean)): Promise<void> {
  const e = await p.then(() => undefined, (err: unknown) => err);
  assert.ok(e instanceof Error, 'expected a rejection with an Error');
  const ok = check instanceof RegExp ? check.test(e.message) : check(e);
  assert.ok(ok, `unexpected error: ${e.message}`);
}

function pattern(width: number, height: number, channels: Image['channels'], sixteen = false): Image {
  const n = width * height * channels;
  const data = sixteen ? Uint16Array.from({ length: n }, (_, i) => (i * 2654435761) % 65536) : Uint8Array.from({ length: n }, (_, i) => (i * 37 + (i >> 3)) % 256);
  return { width, height, channels, data };
}

test('PNG round trip: gray, gray + alpha, RGB, RGBA in 8 bits and gray / RGB in 16 bits, through files', async () => {
  const cases: Image[] = [pattern(5, 3, 1), pattern(4, 4, 2), pattern(7, 2, 3), pattern(3, 5, 4), pattern(6, 3, 1, true), pattern(2, 3, 3, true)];
  for (const img of cases) {
    const file = path.join(dir, `c${img.channels}-${img.data.BYTES_PER_ELEMENT * 8}.png`);
    await writePng(file, img);
    const back = await readPng(file);
    assert.equal({ ...back, data: [...back.data] }, { ...img, data: [...img.data] }, file);
    assert.is(back.data.constructor, img.data.constructor);
  }
  assert.equal(fs.readdirSync(dir).filter((f) => f.endsWith('.tmp')), [], 'no temporary file is left');
});

test('imageToTensor: [1, C, H, W] in [0, 1] or [-1, 1], with channel conversion', async () => {
  const rgba: Image = { width: 2, height: 1, channels: 4, data: new Uint8Array([255, 0, 51, 128, 0, 255, 0, 255]) };
  const t = imageToTensor(rgba, { channels: 3 });
  assert.equal(t.shape, [1, 3, 1, 2]);
  assert.equal([...await t.toArray()], [1, 0, 0, 1, 0.2, 0].map(Math.fround));
  const s = imageToTensor(rgba, { range: [-1, 1] });
  assert.equal(s.shape, [1, 4, 1, 2]);
  const sv = await s.toArray();
  assert.ok(Math.abs(sv[0]! - 1) < 1e-6 && Math.abs(sv[1]! + 1) < 1e-6 && Math.abs(sv[6]! - (128 / 255 * 2 - 1)) < 1e-6);
  const gray = imageToTensor(rgba, { channels: 1 });
  const gv = await gray.toArray();
  assert.ok(Math.abs(gv[0]! - (0.299 + 0.114 * 0.2)) < 1e-6 && Math.abs(gv[1]! - 0.587) < 1e-6, `luminance ${gv}`);
  const g: Image = { width: 1, height: 2, channels: 1, data: new Uint8Array([0, 255]) };
  assert.equal([...await imageToTensor(g, { channels: 3 }).toArray()], [0, 1, 0, 1, 0, 1]);
  const g16: Image = { width: 1, height: 1, channels: 1, data: new Uint16Array([65535]) };
  assert.equal([...await imageToTensor(g16).toArray()], [1]);
  for (const x of [t, s, gray]) x.dispose();
});

test('tensorToImage clamps and rounds; tensor → image → PNG → image → tensor is exact for 8-bit values', async () => {
  const t = Tensor.fromArray([-0.5, 0.2, 0.50196, 1.7, 0.0019, 0.9981], [1, 3, 1, 2]);
  const img = await tensorToImage(t);
  assert.equal({ ...img, data: [...img.data] }, { width: 2, height: 1, channels: 3, data: [0, 128, 0, 51, 255, 255] });
  const signed = await tensorToImage(Tensor.fromArray([-1, 0, 1], [1, 1, 3]), { range: [-1, 1] });
  assert.equal([...signed.data], [0, 128, 255]);
  const wide = await tensorToImage(Tensor.fromArray([0.5], [1, 1, 1]), { depth: 16 });
  assert.equal([...wide.data], [32768]);
  const img2 = pattern(4, 3, 3);
  const back = await tensorToImage(imageToTensor(await decodePng(await encodePng(img2))));
  assert.equal([...back.data], [...img2.data]);
  await rejects(tensorToImage(Tensor.zeros([2, 3, 4, 4])), /expected an f32 tensor \[1, C, H, W\] or \[C, H, W\] with C = 1…4, got f32 \[2, 3, 4, 4\]/);
  t.dispose();
});

test('label maps: 8-bit PNG when labels fit, 16-bit above 255; read back exactly', async () => {
  const small = Tensor.fromArray(new Int32Array([0, 1, 2, 255, 7, 3]), [1, 2, 3]);
  const big = Tensor.fromArray(new Uint32Array([0, 300, 65535, 2]), [1, 1, 2, 2]);
  const f1 = path.join(dir, 'small.png');
  const f2 = path.join(dir, 'big.png');
  await maskToPng(f1, small);
  await maskToPng(f2, big);
  const i1 = await readPng(f1);
  const i2 = await readPng(f2);
  assert.ok(i1.data instanceof Uint8Array && i2.data instanceof Uint16Array);
  const l1 = imageToLabels(i1);
  const l2 = imageToLabels(i2);
  assert.equal(l1.shape, [2, 3]);
  assert.equal([...await l1.toArray()], [0, 1, 2, 255, 7, 3]);
  assert.equal([...await l2.toArray()], [0, 300, 65535, 2]);
  const bad = Tensor.fromArray(new Int32Array([1, -2]), [1, 2]);
  await rejects(maskToImage(bad), /label -2 at index 1 does not fit/);
  await rejects(maskToImage(Tensor.zeros([2, 2])), /expected an i32\/u32 label map/);
  for (const t of [small, big, l1, l2, bad]) t.dispose();
});

test('errors name the file: not a PNG, a corrupt PNG, a missing file', async () => {
  const text = path.join(dir, 'notes.png');
  fs.writeFileSync(text, 'this is not an image, just some text in a file');
  await rejects(readPng(text), (e: Error) => e.constructor === Error && e.message === `${text}: not a PNG file (no PNG signature)`);
  const bytes = await encodePng(pattern(8, 8, 3));
  const corrupt = path.join(dir, 'corrupt.png');
  const broken = bytes.slice();
  broken.fill(0, 40, 60);
  fs.writeFileSync(corrupt, broken);
  await rejects(readPng(corrupt), (e: Error) => e.message.startsWith(`${corrupt}: invalid PNG file:`));
  const truncated = path.join(dir, 'truncated.png');
  fs.writeFileSync(truncated, bytes.subarray(0, bytes.length - 20));
  await rejects(readPng(truncated), (e: Error) => e.message.startsWith(`${truncated}: invalid PNG file:`));
  const missing = path.join(dir, 'missing.png');
  await rejects(readPng(missing), (e: Error) => e.message.includes(missing));
  await rejects(encodePng({ width: 2, height: 2, channels: 3, data: new Uint8Array(5) }), /5 samples do not fill 2×2×3/);
});

test('cleanup', () => fs.rmSync(dir, { recursive: true }));

test('heatmapToImage: min is dark blue, middle green, max dark red (jet), shape kept; bad input named', async () => {
  const img = await heatmapToImage(Tensor.fromArray([2, 4, 6, 6, 6, 6], [1, 2, 3]));
  assert.is(img.width, 3);
  assert.is(img.height, 2);
  assert.is(img.channels, 3);
  assert.equal([...img.data.slice(0, 9)], [0, 0, 128, 128, 255, 128, 128, 0, 0]);
  await rejects(heatmapToImage(Tensor.fromArray(new Int32Array([1, 2]), [1, 2])), /heatmapToImage: expected an f32 map/);
});

test('stacked and sideBySide lay images out with gaps; a loss curve draws its moving average where the value is', () => {
  const img = (w: number, h: number, v: number): Image => ({ width: w, height: h, channels: 3, data: new Uint8Array(w * h * 3).fill(v) });
  const s = stacked([img(3, 2, 10), img(5, 1, 20)], 1);
  assert.equal([s.width, s.height], [5, 4]);
  assert.equal([s.data[0], s.data[3 * (3 * 5)], s.data[3 * (3 * 5 + 4)], s.data[3 * 4]], [10, 20, 20, 40]);
  assert.equal([sideBySide([img(2, 2, 1), img(3, 2, 2)], 1).width], [6]);
  assert.equal(curveAxes([0.3, 0.05, 2]), { lo: 0.01, hi: 10 });
  // a constant 0.1 on the axis [0.1, 1]: the plot's box is x 22..116 (labels '0.1' and '1' left of it), y 16..48
  const c = lossCurve(Array(100).fill(0.1).concat([0.99]), { width: 120, height: 60 });
  const colour = (x: number, y: number) => Array.from(c.data.subarray(3 * (y * 120 + x), 3 * (y * 120 + x) + 3)).join();
  const dark = (x: number, y: number) => colour(x, y) === '20,60,160';
  assert.ok(dark(70, 48), 'the average of 0.1 sits on the bottom of the box');
  assert.ok(!dark(70, 30));
  const labelled = (x0: number, x1: number, y0: number, y1: number) => {
    let n = 0;
    for (let y = y0; y <= y1; y++) for (let x = x0; x <= x1; x++) n += colour(x, y) === '90,90,90' ? 1 : 0;
    return n;
  };
  // '0.1' at the bottom grid line, '1' at the top one, the step counts 0, 50 and 101 under the box
  assert.is(labelled(1, 18, 45, 51), 19 + 4 + 10, "'0.1': the lit pixels of its glyphs");
  assert.is(labelled(1, 6, 13, 19), 10, "'1'");
  assert.ok(labelled(22, 30, 51, 57) > 0 && labelled(60, 75, 51, 57) > 0 && labelled(98, 116, 51, 57) > 0, 'step labels');
});

test('drawText: a minus sign at scale 2 is a 10×2 bar on the glyph\'s middle row; unknown characters are named', () => {
  const img: Image = { width: 12, height: 14, channels: 3, data: new Uint8Array(12 * 14 * 3).fill(255) };
  assert.is(drawText(img, '-', 0, 0, [0, 0, 0], 2), 12);
  const dark = (x: number, y: number) => img.data[3 * (y * 12 + x)] === 0;
  for (let y = 0; y < 14; y++) for (let x = 0; x < 12; x++) assert.is(dark(x, y), x < 10 && (y === 6 || y === 7), `pixel ${x},${y}`);
  assert.throws(() => drawText(img, 'a~', 0, 0, [0, 0, 0]), /no glyph for '~'/);
});

test('barChart: bar heights are proportional to the values over max; each series has its colour', () => {
  const chart = barChart([{ label: 'A', values: [0.5, 1] }, { label: 'B', values: [0, 0.25] }], { series: ['X', 'Y'], max: 1, width: 200, height: 120 });
  const colourAt = (x: number, y: number) => Array.from(chart.data.subarray(3 * (y * 200 + x), 3 * (y * 200 + x) + 3));
  // the plot spans rows 24 (value 1) to 100 (value 0); group A spans x 36..114, bars 31 px wide from x 43
  const height = (x: number) => {
    let n = 0;
    for (let y = 99; y >= 0 && colourAt(x, y).join() === colourAt(x, 99).join(); y--) n++;
    return n;
  };
  assert.equal(colourAt(50, 99), [31, 119, 180]);
  assert.equal(colourAt(80, 99), [255, 127, 14]);
  assert.is(height(50), 38, 'half of 76 rows');
  assert.is(height(80), 76, 'the whole plot');
  assert.is(height(160), 19, 'a quarter (group B, second series)');
});

test.run();
