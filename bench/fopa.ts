// FOPA's placement search speed: the heat maps of one foreground at the release's 16 scales on one background
// (one batched forward, eval mode, random weights), at 64² and 256², for a narrow config (what ShapeWorld's FOPA
// uses) and the official ResNet-18 widths; median ms (tinybench), first call (compilation) and peak tensor memory.
// No WebGPU peer runs this graph: exporting ObPlaNet's per-sample dynamic kernels (a grouped convolution whose
// weights are computed in the graph) to ONNX is not a supported path of the peers' converters.
// Usage: node --import tsx bench/fopa.ts [--quick] [--skip-official-256] [--json bench/results/fopa.json]
import { measureCall, writeBenchJson } from './measure.ts';
import { getDevice } from '../src/engine/device.ts';
import { manualSeed } from '../src/engine/random-cpu.ts';
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
  const run = async () => void (await placementHeatmaps(net, background, cut, { size: c.size }));
  const m = await measureCall(c.name, run, quick ? 2 : 5);
  rows.push({ config: c.name, size: `${c.size}²`, scales: 16, 'median ms': Math.round(m.medianMs), 'first call ms': Math.round(m.firstMs), 'peak MiB': Number((m.peakBytes / 2 ** 20).toFixed(1)) });
  console.log(rows[rows.length - 1]);
  net.dispose();
}
console.table(rows);
writeBenchJson(jsonPath, rows);
process.exit(0);
