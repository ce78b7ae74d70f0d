// Composition keeps masks exact: ShapeWorld objects rendered alone and pasted at their scene positions give back
// the scene's class and instance maps exactly and its picture to rounding; ground-plane order, uncertain pixels,
// the visibility rule, the background's own object, cut-outs placed by box, and the errors.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import './helpers.ts';
import { generateScene, renderLayers, sampleScene } from '../src/world/scene.ts';
import { splitSeed } from '../src/world/splits.ts';
import { type Layer, type SingleObject, composeLayers, composeScenes, cutOut, placeCutout } from '../src/pipeline/compose.ts';
import { makeThesaurus, shapeWorldThesaurus } from '../src/pipeline/thesaurus.ts';
import { ObPlaNet, obPlaNetConfig } from '../src/models/fopa.ts';
import { manualSeed } from '../src/engine/random-cpu.ts';
import { vocClassNames } from '../src/world/classes.ts';

test('ShapeWorld objects rendered alone, pasted at the scene\'s positions, reproduce its masks exactly and its picture to rounding', () => {
  let compared = 0;
  for (const [k, size] of [[0, 64], [1, 64], [2, 64], [3, 96], [4, 64], [5, 48], [6, 64], [7, 64]] as const) {
    const spec = sampleScene(splitSeed('val', k), { width: size });
    const scene = generateScene(splitSeed('val', k), { width: size });
    const layers = renderLayers(spec);
    const c = composeLayers(size, size, { image: layers.background }, layers.objects.map((o) => ({ classId: o.classId, rgb: o.rgb, alpha: o.alpha })));
    assert.equal(c.semantic, scene.semantic, `scene ${k}: class map`);
    assert.equal(c.instance, scene.instance, `scene ${k}: instance map`);
    assert.equal(c.instances.map((i) => [i.id, i.classId, i.bbox, i.area]), scene.instances.map((i) => [i.id, i.classId, i.bbox, i.area]), `scene ${k}: instances`);
    let worst = 0;
    c.image.forEach((v, i) => (worst = Math.max(worst, Math.abs(v - scene.image[i]!))));
    assert.ok(worst <= 1, `scene ${k}: picture within rounding (worst ${worst} levels)`);
    compared += spec.objects.length;
  }
  assert.ok(compared >= 10, `${compared} objects compared`);
});

const W = 12, H = 10;
/** A layer of class `cls` filling the rectangle [x0, x1) × [y0, y1) with colour v. */
function rect(cls: number, x0: number, y0: number, x1: number, y1: number, v: number, uncertainRows: number[] = []): Layer {
  const l: Layer = { classId: cls, rgb: new Uint8Array(W * H * 3), alpha: new Float32Array(W * H), uncertain: new Uint8Array(W * H) };
  for (let y = y0; y < y1; y++) {
    for (let x = x0; x < x1; x++) {
      l.alpha[y * W + x] = 1;
      l.rgb.fill(v, 3 * (y * W + x), 3 * (y * W + x) + 3);
      if (uncertainRows.includes(y)) l.uncertain![y * W + x] = 1;
    }
  }
  return l;
}
const bg = { image: new Uint8Array(W * H * 3).fill(10) };

test('paste order vs ground-plane order; ids near to far; uncertain pixels stay 255; hidden objects become 255', () => {
  // a: bottom edge at row 8 (nearer), b: bottom edge at row 5, given a then b
  const a = rect(4, 1, 3, 6, 9, 100), b = rect(7, 3, 1, 9, 6, 200, [1]);
  const pasted = composeLayers(W, H, bg, [a, b]);
  assert.is(pasted.semantic[4 * W + 4], 7, 'paste order: b on top');
  assert.equal(pasted.instances.map((i) => [i.id, i.classId]), [[1, 7], [2, 4]]);
  const ground = composeLayers(W, H, bg, [a, b], { order: 'ground' });
  assert.is(ground.semantic[4 * W + 4], 4, 'ground order: a (lower bottom) in front');
  assert.is(ground.image[3 * (4 * W + 4)], 100);
  assert.equal(ground.instances.map((i) => [i.id, i.classId, i.layer]), [[1, 4, 0], [2, 7, 1]]);
  assert.equal([ground.semantic[1 * W + 7], ground.instance[1 * W + 7]], [255, 255], 'b\'s uncertain row stays 255');
  // an object covered down to fewer than the visible minimum (12 px at 64², scaled: 12·120/4096 → 1 px; here 0 px)
  const hidden = composeLayers(W, H, bg, [rect(3, 2, 2, 4, 4, 50), rect(5, 0, 0, 12, 10, 60)]);
  assert.equal(hidden.instances.map((i) => i.classId), [5]);
  const tiny = composeLayers(64, 64, { image: new Uint8Array(64 * 64 * 3) }, [{ classId: 9, rgb: new Uint8Array(64 * 64 * 3), alpha: Float32Array.from({ length: 4096 }, (_, p) => (p < 11 ? 1 : 0)) }]);
  assert.equal([tiny.instances.length, tiny.semantic[0], tiny.instance[0]], [0, 255, 255], '11 visible pixels at 64²: ignored');
});

test('the background\'s own object is an instance behind every pasted one; its uncertain pixels stay 255', () => {
  const semantic = new Uint8Array(W * H);
  for (let p = 0; p < W * H; p++) semantic[p] = p % W < 4 ? 12 : p % W === 4 ? 255 : 0;
  const c = composeLayers(W, H, { image: bg.image, semantic }, [rect(3, 2, 0, 6, 10, 90)], { order: 'ground' });
  assert.equal(c.instances.map((i) => [i.id, i.classId, i.provenance]), [[1, 3, undefined], [2, 12, { source: 'background' }]]);
  assert.equal([c.semantic[0], c.semantic[3], c.semantic[4], c.semantic[7]], [12, 3, 3, 0]);
  assert.is(composeLayers(W, H, { image: bg.image, semantic }, []).semantic[4], 255);
});

test('cut-outs placed by box: scaled, clipped at the border, labels mark uncertain pixels; errors name the problem', () => {
  const cut = { image: { width: 4, height: 4, channels: 3 as const, data: new Uint8Array(48).fill(200) }, mask: new Uint8Array(16).fill(255), labels: Uint8Array.from({ length: 16 }, (_, p) => (p < 4 ? 255 : 6)) };
  const l = placeCutout(cut, 6, [9.4, 2, 8, 8], W, H, { source: 'boat.png' });
  assert.is(l.alpha[2 * W + 9], 1);
  assert.is(l.alpha[2 * W + 8], 0);
  assert.is(l.uncertain![2 * W + 10], 1, 'the top rows are uncertain');
  assert.is(l.uncertain![6 * W + 10], 0);
  const c = composeLayers(W, H, bg, [l]);
  assert.equal(c.instances[0]!.bbox, [9, 4, 3, 6], 'clipped at the right and bottom edge; uncertain rows excluded');
  assert.equal(c.instances[0]!.provenance, { source: 'boat.png' });
  assert.throws(() => placeCutout({ ...cut, mask: new Uint8Array(16) }, 6, [0, 0, 4, 4], W, H), /the object's mask \(class 6\) is empty/);
  assert.throws(() => placeCutout(cut, 6, [0, 0, 0.2, 4], W, H), /is under a pixel/);
  assert.throws(() => composeLayers(W, H, bg, [{ ...l, classId: 255 }]), /layer 0 has class 255; classes are 1\.\.254/);
  assert.throws(() => composeLayers(W, H, { image: new Uint8Array(5) }, []), /the background has 5 bytes, expected 12×10×3/);
});

test('composed scenes: backgrounds and classes by the thesaurus, objects placed by FOPA, provenance, deterministic; errors', async () => {
  const singles: SingleObject[] = Array.from({ length: 12 }, (_, k) => {
    const sc = generateScene(k, { mode: 'single', width: 32 });
    return { id: `s${k}`, width: 32, height: 32, image: sc.image, semantic: sc.semantic, classId: sc.instances[0]!.classId, background: sc.spec.background.kind };
  });
  const cut = cutOut(singles[0]!);
  assert.ok(cut.image.width < 32 && cut.mask.every((v, i) => (v === 255) === (cut.labels[i] !== 0)), 'cropped to the mask, alpha on object and uncertain pixels');
  manualSeed(2);
  const fopa = new ObPlaNet(obPlaNetConfig({ widths: [8, 8, 16, 16] }));
  const run = async (seed: number) => {
    const out = [];
    for await (const s of composeScenes({ singles, thesaurus: shapeWorldThesaurus, fopa, count: 3, objects: [1, 2], seed, order: 'ground' })) out.push(s);
    return out;
  };
  const a = await run(4);
  assert.equal((await run(4)).map((s) => [...s.image]), a.map((s) => [...s.image]), 'same seed, same pictures');
  for (const s of a) {
    const bg = s.coco!.background as string;
    const pasted = s.instances.filter((i) => (i.extra!.provenance as { source: string }).source !== 'background');
    assert.ok(pasted.length >= 1 || s.instances.length < 2, `${s.id}: objects pasted`);
    for (const i of pasted) assert.ok(shapeWorldThesaurus.entries.get(vocClassNames[i.classId]!)!.some((b) => b.background === bg), `${s.id}: a ${vocClassNames[i.classId]} fits ${bg}`);
    for (const i of s.instances) assert.is(s.instance.filter((v) => v === i.id).length, i.area, `${s.id}: instance ${i.id} area`);
  }
  // a harmonizer recolours only the pasted objects; the masks stay as they are
  const harmonized = [];
  for await (const s of composeScenes({ singles, thesaurus: shapeWorldThesaurus, fopa, count: 3, objects: [1, 2], seed: 4, order: 'ground', harmonizer: (c, m) => Uint8Array.from(c, (v, i) => (m[Math.floor(i / 3)] ? 0 : v)) })) harmonized.push(s);
  harmonized.forEach((h, k) => {
    assert.equal(h.semantic, a[k]!.semantic);
    assert.equal(h.instance, a[k]!.instance);
    const pasted = new Set(a[k]!.instances.filter((i) => (i.extra!.provenance as { source: string }).source !== 'background').map((i) => i.id));
    // an uncertain pixel (255) is recoloured when a pasted object covers it: either way is right here
    h.image.forEach((v, i) => {
      const id = a[k]!.instance[Math.floor(i / 3)]!;
      if (id !== 255) assert.is(v, pasted.has(id) ? 0 : a[k]!.image[i], `${h.id} byte ${i}`);
    });
  });
  const none = composeScenes({ singles, thesaurus: makeThesaurus('empty', { giraffe: ['savanna'] }), fopa, count: 1 });
  assert.match(await none.next().then(() => '', (e: Error) => e.message), /no class with a picture fits background '\w+' of image 's\d+' in thesaurus empty/);
  assert.throws(() => cutOut({ ...singles[0]!, semantic: new Uint8Array(32 * 32) }), /image 's0' has an empty mask/);
  fopa.dispose();
});

test.run();
