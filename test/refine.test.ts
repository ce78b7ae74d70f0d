// AffinityNet pair labels and loss, and the refinement stage on ShapeWorld: masks degraded by blur, erosion
// and dilation, refined with an AffinityNet trained here on a few training-split images (bounded steps).
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import './helpers.ts';
import { manualSeed } from '../src/engine/random-cpu.ts';
import { Tensor } from '../src/engine/tensor.ts';
import { generateScene } from '../src/world/scene.ts';
import { splitSeed } from '../src/world/splits.ts';
import { AffinityNet, affinityLoss, affinityNetFine, affinityPairLabels, gridLabels } from '../src/models/affinity_net.ts';
import { defaultBand, fineRefinement, refineFolder, refineMask, refineMaskWithFeatures, trainAffinityNet, uncertainBand } from '../src/pipeline/refine.ts';
import { avgPool2d } from '../src/kernels/pool.ts';
import { makeVocFolders, writeVocSample } from '../src/data/voc.ts';

const S = 64;

test('pair labels: bg–bg, fg–fg and fg–bg by hand on a 2×5 grid, radius 2', () => {
  // radius 2 → offsets (0,1), (1,-1), (1,0), (1,1); from pixels: row 0, columns 1..3
  const grid = [0, 0, 5, 5, 255, 0, 0, 5, 5, 5];
  const { bgPos, fgPos, neg } = affinityPairLabels(grid, 2, 5, 2);
  // pair order: offset-major, then the 3 from pixels (0,1), (0,2), (0,3)
  // (0,1)→(0,2): 0/5 neg; (0,2)→(0,3): 5/5 fg; (0,3)→(0,4): ignore
  // (0,1)→(1,0): 0/0 bg; (0,2)→(1,1): 5/0 neg; (0,3)→(1,2): 5/5 fg
  // (0,1)→(1,1): bg; (0,2)→(1,2): fg; (0,3)→(1,3): fg
  // (0,1)→(1,2): neg; (0,2)→(1,3): fg; (0,3)→(1,4): fg
  assert.equal([...neg], [1, 0, 0, 0, 1, 0, 0, 0, 0, 1, 0, 0]);
  assert.equal([...fgPos], [0, 1, 0, 0, 0, 1, 0, 1, 1, 0, 1, 1]);
  assert.equal([...bgPos], [0, 0, 0, 1, 0, 0, 1, 0, 0, 0, 0, 0]);
});

test('grid labels keep a cell only where all its pixels agree; uncertain band by hand', () => {
  const labels = [1, 1, 0, 0, 1, 1, 0, 1, 2, 2, 0, 0, 2, 2, 0, 0];
  assert.equal([...gridLabels(labels, 4, 4, 2)], [1, 255, 2, 0]);
  assert.equal([...uncertainBand([0, 0, 0, 0, 1, 1], 1, 6, 1)], [0, 0, 0, 255, 255, 1]);
});

test('AffinityNet: PyTorch-style names, stride, loss gradient reaches every parameter', async () => {
  manualSeed(3);
  const net = new AffinityNet({ inChannels: 3, downChannels: [4, 4], stageChannels: [4, 4, 4], projectionChannels: [2, 2, 2], featureChannels: 4 });
  assert.equal(Object.keys(net.stateDict()), [
    'conv1a.weight', 'conv1a.bias', 'b2.weight', 'b2.bias', 'b3.weight', 'b3.bias', 'b4.weight', 'b4.bias', 'b5.weight', 'b5.bias',
    'f8_3.weight', 'f8_4.weight', 'f8_5.weight', 'f9.weight',
  ]);
  const x = Tensor.fromArray(Float32Array.from({ length: 2 * 3 * 24 * 28 }, (_, i) => Math.sin(i * 0.37)), [2, 3, 24, 28]);
  const f = net.forward(x);
  assert.equal([...f.shape], [2, 4, 6, 7]);
  const grid = Array.from({ length: 42 }, (_, i) => (i % 7 < 3 ? 0 : i % 7 === 3 ? 255 : 9));
  const loss = affinityLoss(f, [grid, grid], 2);
  const { backward } = await import('../src/engine/autograd.ts');
  backward(loss);
  // every parameter gets a finite gradient (a tiny random net may have a dead ReLU stage, so not all non-zero)
  for (const [name, p] of net.namedParameters()) assert.ok(p.grad && (await p.grad.toArray()).every(Number.isFinite), `${name} has a gradient`);
  assert.ok((await net.f9.weight.grad!.toArray()).some((v) => v !== 0), 'f9 gradient is non-zero');
});

// ---------------------------------------------------------------- refinement on ShapeWorld

function imageTensor(rgb: Uint8Array): Tensor {
  return Tensor.fromArray(Float32Array.from({ length: 3 * S * S }, (_, i) => rgb[(i % (S * S)) * 3 + Math.floor(i / (S * S))]! / 255), [1, 3, S, S]);
}

/** Square-window erosion (all) or dilation (any) of class `id`, radius r. */
function morph(m: Uint8Array, id: number, r: number, erode: boolean): Uint8Array {
  return Uint8Array.from(m, (_, i) => {
    const [x, y] = [i % S, Math.floor(i / S)];
    let [any, all] = [false, true];
    for (let dy = -r; dy <= r; dy++) {
      for (let dx = -r; dx <= r; dx++) {
        const f = m[Math.min(S - 1, Math.max(0, y + dy)) * S + Math.min(S - 1, Math.max(0, x + dx))] === id;
        any ||= f;
        all &&= f;
      }
    }
    return (erode ? all : any) ? id : 0;
  });
}

/** Gaussian blur (σ) of the class indicator, thresholded at 0.5. */
function blur(m: Uint8Array, id: number, sigma: number): Uint8Array {
  const r = Math.ceil(2 * sigma);
  const k = Array.from({ length: 2 * r + 1 }, (_, i) => Math.exp(-((i - r) ** 2) / (2 * sigma * sigma)));
  const ks = k.reduce((a, b) => a + b);
  let f = Float32Array.from(m, (v) => (v === id ? 1 : 0));
  for (const horizontal of [true, false]) {
    const src = f;
    f = Float32Array.from(src, (_, i) => {
      const [x, y] = [i % S, Math.floor(i / S)];
      let s = 0;
      for (let j = -r; j <= r; j++) {
        const [xx, yy] = horizontal ? [Math.min(S - 1, Math.max(0, x + j)), y] : [x, Math.min(S - 1, Math.max(0, y + j))];
        s += k[j + r]! * src[yy * S + xx]!;
      }
      return s / ks;
    });
  }
  return Uint8Array.from(f, (v) => (v >= 0.5 ? id : 0));
}

const degradations = {
  blur: (m: Uint8Array, id: number) => blur(m, id, 3),
  erode: (m: Uint8Array, id: number) => morph(m, id, 1, true),
  dilate: (m: Uint8Array, id: number) => morph(m, id, 2, false),
};
type Degradation = keyof typeof degradations;

function sample(seed: number, kind: Degradation) {
  const sc = generateScene(seed, { width: S, mode: 'single' });
  const id = sc.semantic.find((v) => v !== 0 && v !== 255)!;
  const clean = Uint8Array.from(sc.semantic, (v) => (v === 255 ? 0 : v));
  return { rgb: sc.image, image: imageTensor(sc.image), truth: sc.semantic, id, mask: degradations[kind](clean, id) };
}

function iou(pred: Uint8Array, truth: Uint8Array, id: number): number {
  let [i, u] = [0, 0];
  for (let k = 0; k < pred.length; k++) {
    if (truth[k] === 255) continue;
    const [p, q] = [pred[k] === id, truth[k] === id];
    if (p && q) i++;
    if (p || q) u++;
  }
  return i / u;
}

const kinds = Object.keys(degradations) as Degradation[];

let fineNets: Promise<{ net: AffinityNet; untrained: AffinityNet }> | undefined;

/** affinityNetFine trained as fineRefinement says on 6 degraded training-split images, and its initial weights; trained once, shared by the tests below. */
function trainedFine(): Promise<{ net: AffinityNet; untrained: AffinityNet }> {
  fineNets ??= (async () => {
    manualSeed(1);
    const net = new AffinityNet(affinityNetFine);
    const untrained = new AffinityNet(affinityNetFine);
    untrained.loadStateDict(net.stateDict());
    const train = Array.from({ length: 6 }, (_, k) => sample(splitSeed('train', k), kinds[k % 3]!));
    await trainAffinityNet(net, train, { ...fineRefinement.train, batchSize: 2 });
    for (const s of train) s.image.dispose();
    return { net, untrained };
  })();
  return fineNets;
}

// Issue 6: blurred, eroded and dilated masks all get closer to the truth after refinement with an AffinityNet
// trained here (6 training-split images with degraded masks, fineRefinement's 300 steps) and applied to 8
// validation images per degradation. The learning is what does it: the same net untrained makes every mask
// worse. Margins: +0.01 (blur: its boundary is mostly right already; the gain is at corners, 0.020–0.061 over
// the five validation offsets / init seeds tried), +0.05 (erosion and dilation gained 0.075–0.19 there).
// Printed besides: sharp reference affinities (features = the true object indicator), the walk's ceiling.
test('ShapeWorld: blurred, eroded and dilated masks get closer to the truth after refinement with an AffinityNet trained here', async () => {
  const { net, untrained } = await trainedFine();
  const { walk } = fineRefinement;
  const band = defaultBand;
  const scores: Record<string, { before: number; learned: number; untrained: number; reference: number }> = {};
  for (const kind of kinds) {
    const score = { before: 0, learned: 0, untrained: 0, reference: 0 };
    const n = 8;
    for (let k = 0; k < n; k++) {
      const s = sample(splitSeed('val', k), kind);
      score.before += iou(s.mask, s.truth, s.id) / n;
      score.learned += iou(await refineMask(net, s.image, s.mask, walk, band), s.truth, s.id) / n;
      score.untrained += iou(await refineMask(untrained, s.image, s.mask, walk, band), s.truth, s.id) / n;
      const sharp = avgPool2d(Tensor.fromArray(Float32Array.from(s.truth, (v) => (v === s.id ? 4 : 0)), [1, 1, S, S]), { kernelSize: net.stride });
      score.reference += iou(await refineMaskWithFeatures(sharp, [S, S], s.mask, walk, band), s.truth, s.id) / n;
      for (const t of [sharp, s.image]) t.dispose();
    }
    scores[kind] = score;
  }
  const f = (k: string) => {
    const r = scores[k]!;
    return `${k} ${r.before.toFixed(3)} → ${r.learned.toFixed(3)} (untrained net ${r.untrained.toFixed(3)}, reference affinities ${r.reference.toFixed(3)})`;
  };
  console.log(`refinement IoU (before → after): ${kinds.map(f).join(', ')}`);
  const margin: Record<Degradation, number> = { blur: 0.01, erode: 0.05, dilate: 0.05 };
  for (const kind of kinds) {
    assert.ok(scores[kind]!.learned > scores[kind]!.before + margin[kind], `${kind}: IoU ${f(kind)}`);
    assert.ok(scores[kind]!.untrained < scores[kind]!.learned, `${kind}: training is what helps: ${f(kind)}`);
    assert.ok(scores[kind]!.reference > scores[kind]!.before + margin[kind], `${kind} with reference affinities: IoU ${f(kind)}`);
  }
});

// The folder form of the test above, with its trained net: 4 validation images (blurred, eroded, dilated,
// blurred masks) refined from VOC folders, mIoU against the truth. Measured with nets trained as trainedFine
// from init seeds 1–4, on the 4 images from validation offsets 10, 20, 30 and 40: mIoU gains 0.052–0.093
// (seed 1, offset 10, as here: 0.712 → 0.798; eroded masks only: gains 0.057–0.099); the untrained net takes
// this folder to 0.476. Margin +0.03. A net trained on 3 images for 100 or 150 steps was not reliable (seed 1
// gained 0.002–0.045 or made a folder worse), so the test shares the net above rather than training a cheaper one.
test('refineFolder: VOC folders in, refined masks out, before/after mIoU logged against the truth', async () => {
  const fs = process.getBuiltinModule('node:fs');
  const root = fs.mkdtempSync('/tmp/freemask-refine-');
  const [images, masks, out] = [`${root}/images`, `${root}/masks`, `${root}/out`];
  makeVocFolders(images);
  makeVocFolders(masks);
  const n = 4;
  for (let k = 0; k < n; k++) {
    const s = sample(splitSeed('val', 10 + k), kinds[k % 3]!);
    await writeVocSample(images, { id: `sw${k}`, width: S, height: S, image: s.rgb, semantic: s.truth });
    await writeVocSample(masks, { id: `sw${k}`, width: S, height: S, semantic: s.mask });
    s.image.dispose();
  }
  const { net, untrained } = await trainedFine();
  const lines: string[] = [];
  const r = await refineFolder({ images, masks, out, truth: images, net, walk: fineRefinement.walk, log: (l) => lines.push(l) });
  assert.is(r.count, n);
  assert.ok(r.before! > 0 && r.before! < 1 && r.after! > 0);
  // hard masks (no 255 pixels) get a band of their own, where the trained walk moves the boundaries to the truth
  assert.ok(r.after! > r.before! + 0.03, `refined masks are closer to the truth: mIoU ${r.before} → ${r.after}`);
  assert.match(lines[0]!, /refined 4 masks: mIoU \d+\.\d+ → \d+\.\d+/);
  assert.ok(fs.existsSync(`${out}/SegmentationClass/sw3.png`));
  fs.rmSync(root, { recursive: true });
  net.dispose();
  untrained.dispose();
  fineNets = undefined;
});

test.run();
