// IRNet against ../shared/conformance/irn (jiwoon-ahn/irn, run by its own code): the pixel-pair indexing
// (PathIndex) at radius 5 and 10, compared exactly.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { conformanceDir, testIf } from './helpers.ts';
import { Tensor } from '../src/engine/tensor.ts';
import { loadSafetensors } from '../src/io/safetensors.ts';
import { IrnBranches } from '../src/models/irn/heads.ts';
import { irnLosses, irnLossesFromLogits, pairLabels } from '../src/models/irn/losses.ts';
import { backward } from '../src/engine/autograd.ts';
import { pilResize } from '../src/io/image.ts';
import { clusterCentroids, findCentroids, findCentroidsWithRefinement, makeInsSegLabels, makeSemSegLabels } from '../src/models/irn/centroids.ts';
import { PathIndex, affinityDense, edgeToAffinity, propagateToEdge, searchPaths } from '../src/models/irn/indexing.ts';
import { assertClose } from './helpers.ts';
import { pad, reshape } from '../src/kernels/shape.ts';

const fs = process.getBuiltinModule('node:fs');
const dir = `${conformanceDir}/irn`;
const vectorTest = testIf(fs.existsSync(`${dir}/path_index.safetensors`), `no ${dir}`);

vectorTest('PathIndex at radius 5 and 10 on a 16×20 grid: directions, paths, sources, destinations, path indices', () => {
  const r = loadSafetensors(`${dir}/path_index.safetensors`);
  for (const radius of [5, 10]) {
    const p = `r${radius}.`;
    const idx = new PathIndex(radius, [16, 20]);
    const ints = (k: string) => [...r.readArray(p + k).data];
    assert.equal(idx.directions.flatMap((d) => [d.dy, d.dx]), ints('search_dst'), `${p}search_dst`);
    assert.equal(idx.groups.map((g) => g[0]!.path.length), ints('path_lengths'), `${p}path_lengths`);
    assert.equal(idx.directions.map((d) => d.path.length), ints('path_len_per_dir'), `${p}path_len_per_dir`);
    idx.groups.forEach((g, k) => {
      assert.equal(g.flatMap((d) => d.path.flat()), ints(`paths.${k}`), `${p}paths.${k}`);
      assert.equal([...idx.pathIndices(k)], ints(`path_indices.${k}`), `${p}path_indices.${k}`);
    });
    assert.equal([...idx.srcIndices], ints('src_indices'), `${p}src_indices`);
    assert.equal([...idx.dstIndices], ints('dst_indices'), `${p}dst_indices`);
    assert.ok(!r.has(`${p}paths.${idx.groups.length}`), 'no group left out');
  }
  r.close();
});

vectorTest('boundary → affinities → the walk: sparse affinities (plain and padded), the dense matrix, transition matrices, walks of 2^3 and 2^8 steps', async () => {
  const r = loadSafetensors(`${dir}/affinity.safetensors`);
  const B = r.get('B');
  const [H, W] = [12, 16];
  assertClose(await edgeToAffinity(B, new PathIndex(5, [H, W])).toArray(), r.readArray('aff_sparse').data, 1e-6, 'aff_sparse');
  const padded = pad(reshape(B, [1, H, W]), [5, 5, 0, 5], 1);
  assertClose(await padded.toArray(), r.readArray('edge_padded').data, 0, 'edge_padded');
  const sparse = await edgeToAffinity(reshape(padded, [1, 1, 17, 26]), new PathIndex(5, [17, 26])).toArray();
  assertClose(sparse, r.readArray('aff_sparse_padded').data, 1e-6, 'aff_sparse_padded');
  const N = H * W;
  const dense = await affinityDense(reshape(B, [1, H, W]), 5);
  assertClose(dense, r.readArray('aff_dense').data, 1e-6, 'aff_dense');
  // our walk against the reference's transition matrices and walks
  const x = r.get('x');
  const K = 6;
  const xs = reshape(x, [K, H, W]);
  const Bgrid = reshape(B, [1, H, W]);
  const start = Float32Array.from(await xs.toArray());
  const b = await B.toArray();
  const weighted = start.map((v, i) => v * (1 - b[i % N]!));
  const times = (T: ArrayLike<number>) => Float64Array.from({ length: K * N }, (_, q) => {
    const [k, j] = [Math.floor(q / N), q % N];
    let acc = 0;
    for (let i = 0; i < N; i++) acc += weighted[k * N + i]! * T[i * N + j]!;
    return acc;
  });
  const rel = (ours: ArrayLike<number>, ref: ArrayLike<number>, what: string) => {
    assertClose(ours, ref, 1e-4, what);
    let [d, m] = [0, 0];
    for (let i = 0; i < ref.length; i++) [d, m] = [Math.max(d, Math.abs(ours[i]! - ref[i]!)), Math.max(m, Math.abs(ref[i]!))];
    assert.ok(d <= 1e-4 * m, `${what}: max difference ${d} of max ${m}`);
  };
  rel(await (await propagateToEdge(xs, Bgrid, 5, 10, 0)).toArray(), times(r.readArray('trans.t0').data), 'one step = x·trans.t0');
  const walk3 = await (await propagateToEdge(xs, Bgrid, 5, 10, 3)).toArray();
  rel(walk3, times(r.readArray('trans.t3').data), '2^3 steps = x·trans.t3');
  rel(walk3, r.readArray('rw.exp3').data, 'rw.exp3');
  rel(await (await propagateToEdge(xs, Bgrid, 5, 10, 8)).toArray(), r.readArray('rw.exp8').data, 'rw.exp8');
  // the sparse walk (grids too large for the dense matrix): the same steps on the padded grid; exact to float32
  // rounding for a few steps, within 1e-3 of the maximum after 256 (its float32 drift, measured 1.3e-4)
  rel(await (await propagateToEdge(xs, Bgrid, 5, 10, 0, { dense: false })).toArray(), times(r.readArray('trans.t0').data), 'sparse: one step');
  rel(await (await propagateToEdge(xs, Bgrid, 5, 10, 3, { dense: false })).toArray(), r.readArray('rw.exp3').data, 'sparse: rw.exp3');
  const sparse8 = await (await propagateToEdge(xs, Bgrid, 5, 10, 8, { dense: false })).toArray();
  const ref8 = r.readArray('rw.exp8').data;
  const max8 = Math.max(...Array.from(ref8, Math.abs));
  assert.ok(sparse8.every((v, i) => Math.abs(v - ref8[i]!) <= 1e-3 * max8), 'sparse: rw.exp8 within 1e-3 of the maximum');
  // the inputs: x = cams split by the group masks (class-major)
  const cams = r.readArray('cams').data, masks = r.readArray('masks').data;
  assertClose(start, Float32Array.from({ length: K * N }, (_, q) => cams[Math.floor(q / (3 * N)) * N + (q % N)]! * masks[(Math.floor(q / N) % 3) * N + (q % N)]!), 0, 'x from cams and masks');
  r.close();
});

vectorTest('centroids by the displacement field (IRNet\'s numpy arithmetic, exactly), regions and clusters', () => {
  const r = loadSafetensors(`${dir}/displacement.safetensors`);
  for (const [name, H, W, K] of [['synthetic', 24, 32, 5], ['random', 20, 24, 3]] as const) {
    const D = r.readArray(`${name}.D`).data;
    for (const it of [1, 10, 100, 300]) {
      const c = findCentroids(D, H, W, it);
      assert.equal([...c.positions], [...r.readArray(`${name}.centroids_float.it${it}`).data], `${name} positions after ${it}`);
      assert.equal([...c.centroids], [...r.readArray(`${name}.centroids.it${it}`).data], `${name} centroids after ${it}`);
    }
    const g = clusterCentroids(findCentroids(D, H, W, 300).centroids, D, H, W, 2.5);
    assert.equal([...g.regions], [...r.readArray(`${name}.dp_label`).data], `${name} dp_label`);
    assert.equal([...g.groups], [...r.readArray(`${name}.cluster_map`).data], `${name} cluster_map`);
    assert.is(g.count, K);
    const oneHot = Array.from({ length: K * H * W }, (_, i) => (g.groups[i % (H * W)] === Math.floor(i / (H * W)) ? 1 : 0));
    assert.equal(oneHot, [...r.readArray(`${name}.instance_map`).data], `${name} instance_map`);
  }
  // the synthetic field's groups are its instances (the background group aside)
  const gt = r.readArray('synthetic.gt_instances').data, cent = r.readArray('synthetic.gt_centroids').data;
  assert.is(cent.length, 8);
  const g = clusterCentroids(findCentroids(r.readArray('synthetic.D').data, 24, 32, 300).centroids, r.readArray('synthetic.D').data, 24, 32);
  for (let k = 1; k <= 4; k++) {
    const ids = new Set([...gt.keys()].filter((p) => gt[p] === k).map((p) => g.groups[p]));
    assert.is(ids.size, 1, `instance ${k} is one group`);
  }
  // half-way positions round to even, as np.round
  assert.equal([...findCentroids(r.readArray('halves.D').data, 5, 7, 1).centroids], [...r.readArray('halves.centroids.it1').data]);
  r.close();
});

vectorTest('make_ins_seg_labels and make_sem_seg_labels end to end: groups, walks, labels, detections', async () => {
  const r = loadSafetensors(`${dir}/instances.safetensors`);
  const [cams, edge] = [r.get('cams'), r.get('edge')];
  const keys = [...r.readArray('keys').data];
  const size = [...r.readArray('image_size').data] as [number, number];
  const dp = r.get('dp');
  const ins = await makeInsSegLabels({ cams, keys, edge, dp, imageSize: size });
  assert.equal([...await findCentroidsWithRefinement(dp)], [...r.readArray('centroids').data], 'findCentroidsWithRefinement');
  assert.equal([...ins.centroids], [...r.readArray('centroids').data], 'centroids');
  assert.equal([...ins.groups], [...r.readArray('cluster_map').data], 'cluster_map');
  const G = 7, n = 24 * 32;
  assert.equal(Array.from({ length: G * n }, (_, i) => (ins.groups[i % n] === Math.floor(i / n) ? 1 : 0)), [...r.readArray('instance_map').data], 'instance_map');
  assertClose(await ins.instanceCam.toArray(), r.readArray('instance_cam').data, 1e-4, 'instance_cam');
  assertClose(await ins.rw.toArray(), r.readArray('rw').data, 1e-4, 'rw');
  assertClose([ins.rwUpMax], r.readArray('rw_up_max').data, 1e-4, 'rw_up_max');
  assertClose(ins.rwUp, r.readArray('rw_up').data, 1e-4, 'rw_up');
  assert.equal([...ins.instanceLabel], [...r.readArray('instance_label').data], 'instance_label');
  const scores = r.readArray('det.score').data, classes = r.readArray('det.class').data, masks = r.readArray('det.mask').data, idMap = r.readArray('det.id_map').data;
  assert.is(ins.detections.length, 6);
  ins.detections.forEach((d, k) => {
    assert.is(d.classId, classes[k], `detection ${k} class`);
    assert.ok(Math.abs(d.score - scores[k]!) <= 1e-4 * (1 + scores[k]!), `detection ${k} score ${d.score} vs ${scores[k]}`);
    assert.equal([...d.mask], [...masks.subarray(k * 96 * 128, (k + 1) * 96 * 128)], `detection ${k} mask`);
  });
  const ours = Int32Array.from({ length: 96 * 128 }, (_, p) => ins.detections.findIndex((d) => d.mask[p]));
  assert.equal([...ours], [...idMap], 'det.id_map');
  const sem = await makeSemSegLabels({ cams, keys, edge, imageSize: size });
  assertClose(await sem.rw.toArray(), r.readArray('sem.rw').data, 1e-4, 'sem.rw');
  assert.equal([...sem.label], [...r.readArray('sem.label').data], 'sem.label');
  // the synthetic truth: 6 instances, the tiny last one scored 0
  assert.is(r.readArray('gt_classes').data.length, 6);
  assert.is(new Set(r.readArray('gt_instances').data).size, 7);
  for (const t of [cams, edge, dp, ins.instanceCam, ins.rw, sem.rw]) t.dispose();
  r.close();
});

vectorTest('the boundary and displacement branches: every module, the logits, EdgeDisplacement\'s flip-averaged boundary and field', async () => {
  const r = loadSafetensors(`${dir}/heads.safetensors`);
  const net = new IrnBranches();
  const weights = loadSafetensors(`${dir}/model.safetensors`);
  net.loadStateDict(weights);
  weights.close();
  net.eval();
  const x = ['x1', 'x2', 'x3', 'x4', 'x5'].map((k) => r.get(k)) as [Tensor, Tensor, Tensor, Tensor, Tensor];
  const captured = new Map<string, Float32Array>();
  const pending: Promise<void>[] = [];
  const out = net.forward(x, (name, t) => pending.push(t.toArray().then((a) => void captured.set(name, Float32Array.from(a)))));
  await Promise.all(pending);
  const inter = [...r.keys()].filter((k) => k.startsWith('inter.'));
  assert.is(inter.length, 14);
  for (const k of inter) assertClose(captured.get(k.slice(6))!, r.readArray(k).data, 1e-4, k);
  assertClose(await out.edgeLogits.toArray(), r.readArray('edge_logits').data, 1e-4, 'edge_logits');
  assertClose(await out.dp.toArray(), r.readArray('dp_out').data, 1e-4, 'dp_out');
  const ed = net.edgeDisplacement(x, [...r.readArray('image_size').data] as [number, number]);
  assertClose(await ed.edge.toArray(), r.readArray('edge').data, 1e-4, 'edge');
  assertClose(await ed.dp.toArray(), r.readArray('dp').data, 1e-4, 'dp');
  net.dispose();
  r.close();
});

vectorTest('training losses: pair labels, affinities, loss maps, the seven losses, and their gradients', async () => {
  const r = loadSafetensors(`${dir}/losses.safetensors`);
  const index = new PathIndex(10, [24, 32]);
  const full = r.readArray('label_full').data;
  // the label at stride 4: PIL's nearest resize
  const label = new Int32Array(2 * 24 * 32);
  for (let b = 0; b < 2; b++) {
    const small = pilResize({ width: 128, height: 96, channels: 1, data: Uint8Array.from(full.subarray(b * 96 * 128, (b + 1) * 96 * 128)) }, 32, 24, 'nearest');
    label.set(small.data, b * 768);
  }
  assert.equal([...label], [...r.readArray('label').data], 'label');
  const labels = pairLabels(label, 2, index);
  assert.equal([...labels.bgPos], [...r.readArray('bg_pos_label').data], 'bg_pos_label');
  assert.equal([...labels.fgPos], [...r.readArray('fg_pos_label').data], 'fg_pos_label');
  assert.equal([...labels.neg], [...r.readArray('neg_label').data], 'neg_label');
  const target = r.readArray('disp_target').data;
  assert.equal(index.directions.flatMap((d) => d.dy).concat(index.directions.map((d) => d.dx)), [...target], 'disp_target');
  const close = async (t: Tensor, k: string, tol: number) => assertClose(await t.toArray(), r.readArray(k).data, tol, k);
  // from the logits: the values and the gradients w.r.t. edge logits and dp
  const run = async (term: 'total' | 'pos_aff' | 'neg_aff' | 'dp_fg' | 'dp_bg') => {
    const edge = r.get('edge_logits').requireGrad();
    const dp = r.get('dp').requireGrad();
    const l = irnLossesFromLogits(edge, dp, labels, index);
    const key = { total: 'total', pos_aff: 'posAff', neg_aff: 'negAff', dp_fg: 'dpFg', dp_bg: 'dpBg' }[term] as 'total';
    backward(l[key]);
    return { edge, dp, l };
  };
  const all = await run('total');
  await close(all.l.aff, 'aff', 1e-5);
  await close(all.l.posMap, 'pos_aff_loss_map', 1e-5);
  await close(all.l.negMap, 'neg_aff_loss_map', 1e-5);
  await close(all.l.pairDisp, 'pair_disp', 1e-5);
  await close(all.l.dpFgMap, 'dp_fg_loss_map', 1e-5);
  await close(all.l.dpBgMap, 'dp_bg_loss_map', 1e-5);
  for (const [k, t] of [['bg_pos_aff', all.l.bgPosAff], ['fg_pos_aff', all.l.fgPosAff], ['pos_aff', all.l.posAff], ['neg_aff', all.l.negAff], ['dp_fg', all.l.dpFg], ['dp_bg', all.l.dpBg], ['total', all.l.total]] as const) await close(t, `loss.${k}`, 1e-4);
  await close(all.edge.grad!, 'grad.total.edge_logits', 1e-4);
  await close(all.dp.grad!, 'grad.total.dp', 1e-4);
  for (const term of ['pos_aff', 'neg_aff'] as const) await close((await run(term)).edge.grad!, `grad.${term}.edge_logits`, 1e-4);
  for (const term of ['dp_fg', 'dp_bg'] as const) await close((await run(term)).dp.grad!, `grad.${term}.dp`, 1e-4);
  // w.r.t. the boundary map itself
  const boundaryGrad = async (term: 'total' | 'pos_aff' | 'neg_aff') => {
    const boundary = r.get('boundary').requireGrad();
    await close(boundary, 'boundary', 1e-6);
    const l = irnLosses(boundary, r.get('dp'), labels, index);
    backward(l[{ total: 'total', pos_aff: 'posAff', neg_aff: 'negAff' }[term] as 'total']);
    await close(boundary.grad!, `grad.${term}.boundary`, 1e-4);
  };
  for (const term of ['total', 'pos_aff', 'neg_aff'] as const) await boundaryGrad(term);
  r.close();
});

test('every unordered pair once; a radius below 2 or a grid too small is an error', () => {
  const dirs = searchPaths(4).flat().map((d) => `${d.dy},${d.dx}`);
  assert.ok(dirs.every((d) => !dirs.includes(d.split(',').map((v) => -Number(v)).join(','))), 'no direction and its opposite');
  assert.throws(() => searchPaths(1), /radius must be an integer >= 2/);
  assert.throws(() => new PathIndex(10, [8, 10]), /a 8×10 grid has no source pixel at radius 10/);
});

test.run();
