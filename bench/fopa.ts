// FOPA's placement search speed: the heat maps of one foreground at the release's 16 scales on one background
// (one batched forward, eval mode, random weights), at 64² and 256², for a narrow config (what ShapeWorld's FOPA
// uses) and the official ResNet-18 widths; median ms (tinybench), first call (compilation) and peak tensor memory.
// No WebGPU peer runs this graph: exporting ObPlaNet's per-sample dynamic kernels (a grouped convolution whose
// weights are computed in the graph) to ONNX is not a supported path of the peers' converters.
// Usage: node --import tsx bench/fopa.ts [--quick] [--skip-official-256] [--json bench/results/fopa.json]
import { Bench } from 'tinybench';
import { deviceInfo, getDevice } from '../src/engine/device.ts';
import { memoryStats, resetPeakMemory } from '../src/engine/tensor.ts';
import { manualSeed } from '../src/engine/random-cpu.ts';
import { nodeFs, writeFileAtomic } from '../src/io/fs.ts';
import { ObPlaNet, obPlaNetConfig } from '../src/models/fopa.ts';
import { type Cutout, placementHeatmaps } from '../src/pipeline/placement.ts';
import { generateScene } from '../src/world/scene.ts';

const argv = process.argv.slice(2);
const quick = argv.includes('--quick');
const jsonPath = argv.includes('--json') ? argv[argv.indexOf('--json') + 1]! : 'bench/results/fopa.json';
await getDevice();

const scene = generateScene(7, { mode: 'single', width: 64 });
const background = { width: 64, height: 64, channels: 3 as const, data: scene.image };
// the scene's object as the foreground (its mask as alpha)
const cut: Cutout = { image: background, mask: scene.semantic.map((v) => (v !== 0 && v !== 255 ? 255 : 0)) };

const cases = [
  { name: 'narrow [16, 32, 64, 128]', widths: [16, 32, 64, 128], size: 64 },
  { name: 'official ResNet-18 widths', widths: [64, 128, 256, 512], size: 64 },
  { name: 'narrow [16, 32, 64, 128]', widths: [16, 32, 64, 128], size: 256 },
  ...(argv.includes('--skip-official-256') ? [] : [{ name: 'official ResNet-18 widths', widths: [64, 128, 256, 512], size: 256 }]),
];
const rows: Record<string, string | number>[] = [];
for (const c of cases) {
  manualSeed(0);
  const net = new ObPlaNet(obPlaNetConfig({ widths: c.widths })).eval();
  const run = () => placementHeatmaps(net, background, cut, { size: c.size });
  let t0 = performance.now();
  await run();
  const firstMs = performance.now() - t0;
  resetPeakMemory();
  const live = memoryStats().liveBytes;
  t0 = performance.now();
  await run();
  const oneMs = performance.now() - t0;
  const peak = memoryStats().peakBytes - live;
  const bench = new Bench({ iterations: quick ? 2 : 5, time: 0, warmup: false });
  bench.add(c.name, run);
  await bench.run();
  const r = bench.tasks[0]!.result as { latency?: { p50?: number; mean: number } } | undefined;
  const median = r?.latency?.p50 ?? r?.latency?.mean ?? oneMs;
  rows.push({ config: c.name, size: `${c.size}²`, scales: 16, 'median ms': Math.round(median), 'first call ms': Math.round(firstMs), 'peak MiB': Number((peak / 2 ** 20).toFixed(1)) });
  console.log(rows[rows.length - 1]);
  net.dispose();
}
console.table(rows);
const fs = nodeFs(`writing ${jsonPath}`);
fs.mkdirSync(jsonPath.replace(/\/[^/]*$/, ''), { recursive: true });
writeFileAtomic(jsonPath, new TextEncoder().encode(JSON.stringify({ adapter: deviceInfo().description, date: new Date().toISOString(), rows }, null, 2)));
console.log(`wrote ${jsonPath}`);
process.exit(0);
