// AffinityNet's random walk: the sparse WGSL kernel (affinityRandomWalk, 2^logt gather steps over the radius
// neighbourhood) against a dense transition-matrix baseline on our matmul (psa's way: T = A^β column-normalised,
// squared logt times, then cam · T). Median ms and peak GPU memory per grid; JSON in bench/results/random_walk.json.
// The dense HW×HW matrix is 64 MiB at 64×64 but 1 GiB at 128×128, over lavapipe's 128 MiB binding limit: that
// case is reported as not runnable rather than chunked (a chunked dense walk would still move 1 GiB per squaring).
// The same sparse propagation in onnxruntime-web (WebGPU EP, same Dawn adapter) runs in its own process
// (bench/peers/ort-random-walk.ts: neighbour Gather + Mul + ReduceSum per step, steps unrolled); its output is
// compared with ours (max |Δ|). --no-ort leaves it out.
// Usage: node --import tsx bench/random_walk.ts [--quick] [--logt 2,8] [--no-ort] [--json path]
import { Bench } from 'tinybench';
import { deviceInfo, getDevice } from '../src/engine/device.ts';
import { Tensor, memoryStats, resetPeakMemory, tidy } from '../src/engine/tensor.ts';
import { sync } from '../src/engine/queue.ts';
import { noGrad } from '../src/engine/autograd.ts';
import { affinityCrop, affinityOffsets, affinityRandomWalk, pixelAffinities } from '../src/kernels/random_walk.ts';
import { matmul } from '../src/kernels/matmul.ts';
import { randomWalkInputs, walkConfig } from './random_walk_inputs.ts';

await getDevice();
const argv = process.argv.slice(2);
const quick = argv.includes('--quick');
const jsonPath = argv.includes('--json') ? argv[argv.indexOf('--json') + 1]! : 'bench/results/random_walk.json';
const { C, K, radius, beta } = walkConfig;
// the dense walk's cost grows with logt (one HW³ product per squaring): it runs at the first logt only
const logts = argv.includes('--logt') ? argv[argv.indexOf('--logt') + 1]!.split(',').map(Number) : [2, 8];
const logt = logts[0]!;


/** Dense T (column-normalised A^β) built on the CPU from the kernel's affinities: the baseline's input. */
async function denseTransition(features: Tensor, H: number, W: number): Promise<Float32Array> {
  const aff = await pixelAffinities(features, radius).toArray();
  const n = H * W;
  const T = new Float32Array(n * n);
  for (let i = 0; i < n; i++) T[i * n + i] = 1;
  const { rows, cols, x0 } = affinityCrop(radius, H, W);
  affinityOffsets(radius).forEach(([dy, dx], o) => {
    for (let y = 0; y < rows; y++) for (let x = 0; x < cols; x++) {
      const p = y * W + x + x0;
      const q = (y + dy) * W + x + x0 + dx;
      T[p * n + q] = T[q * n + p] = aff[(o * rows + y) * cols + x]! ** beta;
    }
  });
  for (let j = 0; j < n; j++) {
    let s = 0;
    for (let i = 0; i < n; i++) s += T[i * n + j]!;
    for (let i = 0; i < n; i++) T[i * n + j]! /= s;
  }
  return T;
}

const rows: Record<string, unknown>[] = [];
const ort = !argv.includes('--no-ort');
const ortRows: Record<string, unknown>[] = [];

/** The onnxruntime-web runner in its own process (it patches globals for Dawn); its output checked against ours. */
async function runOrt(side: number, l: number, ours: Float32Array): Promise<Record<string, unknown>> {
  const task = `onnxruntime-web sparse walk ${side}×${side} (2^${l} steps)`;
  const { spawnSync } = process.getBuiltinModule('node:child_process');
  const fs = process.getBuiltinModule('node:fs');
  const out = `${fs.mkdtempSync('/tmp/rw-ort-')}/y.f32`;
  const r = spawnSync(process.execPath, ['--import', 'tsx', 'bench/peers/ort-random-walk.ts', String(side), String(l), String(quick ? 2 : 5), out], { encoding: 'utf8', maxBuffer: 1 << 26 });
  const line = r.stdout.split('\n').find((s) => s.startsWith('{'));
  if (r.status !== 0 || !line) return { task, 'median ms': null, 'peak MiB': null, note: `failed: ${(r.stderr || r.stdout).trim().split('\n').slice(-3).join(' ').slice(0, 400)}` };
  const res = JSON.parse(line) as { ms: number; peakMiB: number; note: string };
  const theirs = new Float32Array(fs.readFileSync(out).buffer.slice(0));
  let maxDiff = 0;
  for (let i = 0; i < ours.length; i++) maxDiff = Math.max(maxDiff, Math.abs(ours[i]! - theirs[i]!));
  return { task, 'median ms': Number(res.ms.toFixed(2)), 'peak MiB': Number(res.peakMiB.toFixed(2)), samples: quick ? 2 : 5, 'max |Δ| vs ours': Number(maxDiff.toExponential(2)), note: res.note };
}
const bench = new Bench({ time: quick ? 300 : 2000, iterations: quick ? 2 : 5, warmupIterations: 1 });
const peaks = new Map<string, number>();
for (const side of [64, 128]) {
  const [H, W] = [side, side];
  const inputs = randomWalkInputs(side);
  const features = Tensor.fromArray(inputs.features, [1, C, H, W]);
  const cam = Tensor.fromArray(inputs.cam, [K, H, W]);
  if (ort) {
    for (const l of logts) {
      const ours = (await noGrad(() => affinityRandomWalk(features, cam, { radius, beta, logt: l })).toArray()) as Float32Array;
      ortRows.push(await runOrt(side, l, ours));
    }
  }
  for (const l of logts) {
    const sparse = `sparse walk ${side}×${side} (2^${l} steps)`;
    bench.add(sparse, async () => {
      resetPeakMemory();
      const base = memoryStats().liveBytes;
      const y = noGrad(() => affinityRandomWalk(features, cam, { radius, beta, logt: l }));
      await sync();
      peaks.set(sparse, memoryStats().peakBytes - base);
      y.dispose();
    });
  }
  const dense = `dense matmul walk ${side}×${side} (${logt} squarings)`;
  const bytes = (H * W) ** 2 * 4;
  const limit = (await getDevice()).limits.maxStorageBufferBindingSize;
  if (bytes > limit) {
    rows.push({ task: dense, 'median ms': null, 'peak MiB': bytes / 2 ** 20, note: `not runnable: the ${H * W}² f32 matrix (${bytes / 2 ** 20} MiB) exceeds this device's ${limit / 2 ** 20} MiB binding limit` });
    continue;
  }
  const T0 = Tensor.fromArray(await denseTransition(features, H, W), [H * W, H * W]);
  bench.add(dense, async () => {
    resetPeakMemory();
    const base = memoryStats().liveBytes;
    const y = noGrad(() => tidy(() => {
      let T = T0;
      for (let l = 0; l < logt; l++) T = matmul(T, T);
      return matmul(cam.alias([K, H * W]), T);
    }));
    await sync();
    peaks.set(dense, memoryStats().peakBytes - base);
    y.dispose();
  });
}
await bench.run();
for (const t of bench.tasks) {
  const r = t.result as { latency?: { mean: number; p50?: number; samplesCount: number } } | undefined;
  rows.push({ task: t.name, 'median ms': Number((r?.latency?.p50 ?? r?.latency?.mean ?? NaN).toFixed(2)), 'peak MiB': Number(((peaks.get(t.name) ?? 0) / 2 ** 20).toFixed(2)), samples: r?.latency?.samplesCount ?? 0 });
}
rows.push(...ortRows);
console.table(rows.map(({ note, ...r }) => r));
for (const r of rows) if (r.note) console.log(`${r.task}: ${r.note}`);
const fs = process.getBuiltinModule('node:fs');
fs.mkdirSync(jsonPath.replace(/\/[^/]*$/, ''), { recursive: true });
fs.writeFileSync(jsonPath, JSON.stringify({ device: deviceInfo(), C, K, radius, beta, logts, rows }, null, 2));
console.log(`wrote ${jsonPath}`);
