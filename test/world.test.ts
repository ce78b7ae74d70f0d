// ShapeWorld: determinism, exact ground truth (checked by an independent supersampling rasteriser), priors,
// occlusion, touching instances, light, prompts, splits.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { type Primitive, boundsOf } from '../src/world/raster.ts';
import { backgroundKinds, classSpec, classes, vocClassNames } from '../src/world/classes.ts';
import { type Scene, generateScene, ignoreLabel, objectPrimitives, placementPlausibility, renderScene, sampleScene } from '../src/world/scene.ts';
import { splitSeed, splits } from '../src/world/splits.ts';

/** Whether the point (x, y) lies inside a primitive: plain geometry, independent of the renderer's distances. */
function inside(p: Primitive, x: number, y: number): boolean {
  if (p.kind === 'ellipse') {
    const c = Math.cos(p.angle), s = Math.sin(p.angle), dx = x - p.cx, dy = y - p.cy;
    const u = (dx * c + dy * s) / p.rx, v = (dy * c - dx * s) / p.ry;
    return u * u + v * v <= 1;
  }
  if (p.kind === 'capsule') {
    const ex = p.x1 - p.x0, ey = p.y1 - p.y0;
    const t = Math.min(1, Math.max(0, ((x - p.x0) * ex + (y - p.y0) * ey) / (ex * ex + ey * ey || 1)));
    return Math.hypot(x - p.x0 - t * ex, y - p.y0 - t * ey) <= p.r;
  }
  // convex polygon: the point is on the same side of every edge
  const q = p.points, n = q.length / 2;
  let pos = false, neg = false;
  for (let i = 0; i < n; i++) {
    const j = (i + 1) % n;
    const cross = (q[2 * j]! - q[2 * i]!) * (y - q[2 * i + 1]!) - (q[2 * j + 1]! - q[2 * i + 1]!) * (x - q[2 * i]!);
    if (cross > 0) pos = true;
    if (cross < 0) neg = true;
  }
  return !(pos && neg);
}

/** Per object, the fraction of each pixel it covers, from an 8×8 grid of samples. */
function supersampledCoverage(scene: Scene): Float32Array[] {
  const { width: W, height: H } = scene;
  const n = 8;
  return scene.spec.objects.map((o) => {
    const prims = objectPrimitives(o);
    const cov = new Float32Array(W * H);
    // only within the renderer's bounds, for speed (bounds too small would make the picture check fail, not pass)
    const b = prims.map(boundsOf);
    const [bx0, by0] = [Math.max(0, Math.min(...b.map((q) => q[0]))), Math.max(0, Math.min(...b.map((q) => q[1])))];
    const [bx1, by1] = [Math.min(W, Math.max(...b.map((q) => q[2]))), Math.min(H, Math.max(...b.map((q) => q[3])))];
    for (let y = by0; y < by1; y++) {
      for (let x = bx0; x < bx1; x++) {
        let hits = 0;
        for (let sy = 0; sy < n; sy++) for (let sx = 0; sx < n; sx++) if (prims.some((p) => inside(p, x + (sx + 0.5) / n, y + (sy + 0.5) / n))) hits++;
        cov[y * W + x] = hits / (n * n);
      }
    }
    return cov;
  });
}

const equalBytes = (a: Uint8Array, b: Uint8Array) => a.length === b.length && a.every((v, i) => v === b[i]);

test('determinism: the same seed gives the same bytes, another seed other bytes', () => {
  for (const mode of ['scene', 'single'] as const) {
    for (const seed of [0, 17, 123456]) {
      const a = generateScene(seed, { mode }), b = generateScene(seed, { mode });
      assert.ok(equalBytes(a.image, b.image) && equalBytes(a.semantic, b.semantic) && equalBytes(a.instance, b.instance), `${mode} ${seed}`);
      assert.equal(a.instances, b.instances);
      assert.is(a.prompt, b.prompt);
      assert.not.ok(equalBytes(a.image, generateScene(seed + 1, { mode }).image), `${mode} ${seed} vs ${seed + 1}`);
    }
  }
});

test('ground truth: a pixel belongs to the nearest object whose primitives contain its centre (exact, by point tests)', () => {
  let objectPixels = 0, edgePixels = 0;
  for (let seed = 0; seed < 10; seed++) {
    for (const mode of ['scene', 'single'] as const) {
      const scene = generateScene(seed, { width: 48, mode });
      const { width: W, height: H, spec } = scene;
      const prims = spec.objects.map(objectPrimitives);
      const idOf = new Map(scene.instances.map((i) => [i.object, i.id]));
      for (let p = 0; p < W * H; p++) {
        const x = (p % W) + 0.5, y = Math.floor(p / W) + 0.5;
        let expected = 0;
        for (let k = spec.objects.length - 1; k >= 0 && expected === 0; k--) {
          if (prims[k]!.some((q) => inside(q, x, y))) expected = idOf.get(k) ?? ignoreLabel;
        }
        assert.is(scene.instance[p], expected, `${mode} seed ${seed} pixel (${x - 0.5}, ${y - 0.5})`);
        const inst = scene.instances.find((i) => i.id === expected);
        assert.is(scene.semantic[p], expected === 0 ? 0 : inst ? inst.classId : ignoreLabel);
        if (expected !== 0) objectPixels++;
      }
      // the picture: far from every object (no 8×8 sample of the pixel or its neighbours covered) it is the
      // background alone; and edge pixels (partly covered) are blends, drawn where the masks change
      const cov = supersampledCoverage(scene);
      const background = renderScene({ ...spec, objects: [] }).image;
      for (let p = 0; p < W * H; p++) {
        const x = p % W, y = Math.floor(p / W);
        let near = false;
        for (let dy = -1; dy <= 1; dy++) {
          for (let dx = -1; dx <= 1; dx++) {
            const q = (y + dy) * W + x + dx;
            if (x + dx >= 0 && x + dx < W && y + dy >= 0 && y + dy < H && cov.some((c) => c[q]! > 0)) near = true;
          }
        }
        if (!near) for (let c = 0; c < 3; c++) assert.is(scene.image[3 * p + c], background[3 * p + c], `${mode} seed ${seed} pixel (${x}, ${y})`);
        else if (cov.some((c) => c[p]! > 0 && c[p]! < 1)) edgePixels++;
      }
    }
  }
  assert.ok(objectPixels > 2000, `${objectPixels} object pixels checked`);
  assert.ok(edgePixels > 300, `${edgePixels} anti-aliased edge pixels`);
});

test('instances: boxes, areas and ids agree with the masks; nearest first; masks use VOC ids', () => {
  for (let seed = 0; seed < 40; seed++) {
    const s = generateScene(seed);
    s.instances.forEach((inst, r) => {
      assert.is(inst.id, r + 1);
      assert.is(inst.depthRank, r);
      assert.is(vocClassNames[inst.classId], inst.className);
      let area = 0, x0 = 99, y0 = 99, x1 = -1, y1 = -1;
      for (let p = 0; p < s.instance.length; p++) {
        if (s.instance[p] !== inst.id) continue;
        area++;
        const x = p % s.width, y = Math.floor(p / s.width);
        [x0, y0, x1, y1] = [Math.min(x0, x), Math.min(y0, y), Math.max(x1, x), Math.max(y1, y)];
        assert.is(s.semantic[p], inst.classId);
      }
      assert.is(inst.area, area);
      assert.equal(inst.bbox, [x0, y0, x1 - x0 + 1, y1 - y0 + 1]);
    });
    if (s.instances.length > 1) {
      const d = s.instances.map((i) => s.spec.objects[i.object]!.distance);
      assert.ok(d.every((v, k) => k === 0 || v >= d[k - 1]!), `seed ${seed}: instances near to far`);
    }
  }
});

test('world: ≥ 10 VOC classes and 5 background kinds all occur; classes stay on their backgrounds', () => {
  assert.ok(classes.length >= 10);
  for (const c of classes) assert.is(vocClassNames[c.id], c.name);
  const seenClasses = new Set<number>(), seenKinds = new Set<string>();
  for (let seed = 0; seed < 300; seed++) {
    const spec = sampleScene(seed);
    seenKinds.add(spec.background.kind);
    for (const o of spec.objects) {
      seenClasses.add(o.classId);
      assert.ok((classSpec(o.classId).affinity[spec.background.kind] ?? 0) > 0, `seed ${seed}: ${classSpec(o.classId).name} on ${spec.background.kind}`);
    }
  }
  assert.equal([...seenKinds].sort(), [...backgroundKinds].sort());
  assert.equal([...seenClasses].sort((a, b) => a - b), classes.map((c) => c.id).sort((a, b) => a - b));
});

test('scenes hold occlusions and touching same-class instances', () => {
  let occluded = 0, touching = 0;
  for (let seed = 0; seed < 100; seed++) {
    const s = generateScene(seed);
    const W = s.width;
    for (let p = 0; p < s.instance.length; p++) {
      const a = s.instance[p]!, b = p % W + 1 < W ? s.instance[p + 1]! : 0, c = s.instance[p + W] ?? 0;
      for (const o of [b, c]) {
        if (a === 0 || o === 0 || a === o || a === ignoreLabel || o === ignoreLabel) continue;
        if (s.instances[a - 1]!.classId === s.instances[o - 1]!.classId) touching++;
      }
    }
    // occluded: an instance has fewer visible pixels than it has when rendered alone
    for (const inst of s.instances) {
      const alone = renderScene({ ...s.spec, objects: [s.spec.objects[inst.object]!] });
      if (alone.instances[0] && alone.instances[0].area > inst.area) occluded++;
    }
  }
  assert.ok(touching > 10, `${touching} touching same-class pixel pairs`);
  assert.ok(occluded > 5, `${occluded} occluded instances`);
});

test('scene light: shades background and objects alike', () => {
  const spec = sampleScene(5);
  const base = { ...spec, light: { ...spec.light, brightness: 0.5, tint: [1, 1, 1] as [number, number, number] } };
  const dim = renderScene(base), bright = renderScene({ ...base, light: { ...base.light, brightness: 1 } });
  const blue = renderScene({ ...base, light: { ...base.light, tint: [0.6, 0.8, 1.2] as [number, number, number] } });
  let bg = 0, obj = 0;
  for (let p = 0; p < dim.semantic.length; p++) {
    for (let c = 0; c < 3; c++) {
      const v = bright.image[3 * p + c]!;
      if (v < 250) assert.ok(Math.abs(dim.image[3 * p + c]! - v / 2) <= 1, `pixel ${p}: brightness 0.5 gives half`);
    }
    if (dim.image[3 * p]! > 20) assert.ok(blue.image[3 * p]! < dim.image[3 * p]!, 'a blue tint lowers red everywhere');
    if (dim.semantic[p] === 0) bg++;
    else obj++;
  }
  assert.ok(bg > 0 && obj > 0);
  // the light's direction changes an object's shading
  const turned = renderScene({ ...base, light: { ...base.light, direction: base.light.direction + Math.PI } });
  const o = dim.instances[0]!;
  let diff = 0;
  for (let p = 0; p < dim.instance.length; p++) if (dim.instance[p] === o.id) diff += Math.abs(dim.image[3 * p]! - turned.image[3 * p]!);
  assert.ok(diff > o.area, 'turning the light reshades the object');
});

test('single-object mode: one large object of the seed\'s class with a prompt', () => {
  for (let seed = 0; seed < 2 * classes.length; seed++) {
    const s = generateScene(seed, { mode: 'single' });
    const cls = classes[seed % classes.length]!;
    assert.is(s.instances.length, 1, `seed ${seed}`);
    assert.is(s.instances[0]!.classId, cls.id);
    assert.ok(s.instances[0]!.area > 0.04 * s.width * s.height, `seed ${seed}: ${cls.name} covers ${s.instances[0]!.area} px`);
    assert.match(s.prompt, new RegExp(`^a photo of an? ${cls.words[0]} (in the sky|on water|on grass|on a road|in a room)$`));
    assert.ok((cls.affinity[s.spec.background.kind] ?? 0) > 0);
  }
  assert.is(generateScene(3).prompt.startsWith('a photo of '), true);
});

test('placementPlausibility: high where the priors put objects, zero off their backgrounds or under the horizon', () => {
  const values: number[] = [];
  for (let seed = 0; seed < 100; seed++) {
    const spec = sampleScene(seed);
    for (const o of spec.objects) values.push(placementPlausibility(spec.background, o.classId, o.box, spec.width, spec.height));
  }
  values.sort((a, b) => a - b);
  assert.ok(values[Math.floor(values.length / 2)]! > 0.3, `median plausibility of sampled placements ${values[Math.floor(values.length / 2)]}`);
  const road = { kind: 'road' as const, horizon: 0.35 };
  const car: [number, number, number, number] = [10, 30, 40, 18.5]; // bottom 48.5: g = 26.1 px below the horizon → 1.5·26.1/1.6 = 24.5 px tall expected
  const good = placementPlausibility(road, 'car', [10, 24, 48, 24.5], 64, 64);
  assert.ok(good > 0.9, `a car of the expected size on the road: ${good}`);
  assert.ok(placementPlausibility(road, 'car', car, 64, 64) < good, 'a too small car is less plausible');
  assert.is(placementPlausibility({ kind: 'sky', horizon: 0.85 }, 'car', [10, 30, 40, 20], 64, 64), 0);
  assert.is(placementPlausibility(road, 'boat', [10, 30, 40, 20], 64, 64), 0);
  assert.is(placementPlausibility(road, 'car', [10, 0, 40, 20], 64, 64), 0, 'a car floating above the horizon');
  assert.ok(placementPlausibility({ kind: 'sky', horizon: 0.85 }, 'bird', [10, 10, 14, 10], 64, 64) > 0.5);
  assert.ok(placementPlausibility({ kind: 'sky', horizon: 0.5 }, 'bird', [10, 50, 14, 10], 64, 64) < 0.01, 'a bird under the horizon of the sky');
  assert.throws(() => placementPlausibility(road, 'unicorn', car, 64, 64), /no class "unicorn"/);
});

test('splits: fixed disjoint seed ranges; bad split or index named', () => {
  const ranges = Object.values(splits).map((s) => [s.start, s.start + s.size] as const).sort((a, b) => a[0] - b[0]);
  for (let k = 1; k < ranges.length; k++) assert.ok(ranges[k]![0] >= ranges[k - 1]![1]);
  assert.is(splitSeed('train', 5), 5);
  assert.is(splitSeed('test', 0), 2_000_000);
  assert.throws(() => splitSeed('dev', 0), /unknown split 'dev'/);
  assert.throws(() => splitSeed('val', 10_000), /split 'val' has images 0..9999/);
});

test.run();
