// Harmonizers' per-image time (random weights, eval mode, batch 1): RainNet at 256² (its eight stride-2 levels need
// multiples of 256: a 64² image is harmonized at 256²) with ngf 8 (what ShapeWorld trains) and 64 (official); PCT-Net
// CNN (official widths) and ViT at a 64² and a 256² low resolution applied to a full-resolution image of the same
// size. Median ms (tinybench), first call (compilation), peak tensor memory. JSON in bench/results/harmonize.json.
// Usage: npm run bench:harmonize [-- --quick] [--json PATH]
import { measureCall, writeBenchJson } from './measure.ts';
import { getDevice } from '../src/engine/device.ts';
import { Tensor, tidy } from '../src/engine/tensor.ts';
import { noGrad } from '../src/engine/autograd.ts';
import { manualSeed } from '../src/engine/random-cpu.ts';
import { randn } from '../src/kernels/random.ts';
import { RainNet, harmonize } from '../src/models/rainnet.ts';
import { PCTNet, pctNetConfig } from '../src/models/pct_net.ts';

const argv = process.argv.slice(2);
const quick = argv.includes('--quick');
const jsonPath = argv.includes('--json') ? argv[argv.indexOf('--json') + 1]! : 'bench/results/harmonize.json';
await getDevice();

const image = (S: number) => randn([1, 3, S, S], { seed: S });
const mask = (S: number) => Tensor.fromArray(Float32Array.from({ length: S * S }, (_, p) => (Math.abs((p % S) - S / 2) < S / 5 && Math.abs(Math.floor(p / S) - S / 2) < S / 4 ? 1 : 0)), [1, 1, S, S]);

const cases: { name: string; size: number; run: () => Tensor; dispose: () => void }[] = [];
for (const ngf of [8, 64]) {
  manualSeed(0);
  const net = new RainNet({ inputNc: 3, outputNc: 3, ngf }).eval();
  const [x, m] = [image(256), mask(256)];
  cases.push({ name: `RainNet ngf ${ngf}`, size: 256, run: () => noGrad(() => tidy(() => harmonize(net.forward(x, m), x, m))), dispose: () => [net, x, m].forEach((t) => t.dispose()) });
}
for (const backbone of ['ssam', 'ViT'] as const) {
  for (const S of [64, 256]) {
    manualSeed(0);
    const net = new PCTNet(pctNetConfig(backbone === 'ViT' ? { backbone_type: 'ViT', use_attn: false, input_normalization: { mean: [0, 0, 0], std: [1, 1, 1] } } : {})).eval();
    const [x, m] = [image(S), mask(S)];
    cases.push({ name: `PCT-Net ${backbone === 'ViT' ? 'ViT' : 'CNN'}`, size: S, run: () => noGrad(() => tidy(() => net.forward(x, x, m, m).imagesFullres)), dispose: () => [net, x, m].forEach((t) => t.dispose()) });
  }
}

const rows: Record<string, string | number>[] = [];
for (const c of cases) {
  const once = async () => {
    const y = c.run();
    await y.toArray();
    y.dispose();
  };
  const m = await measureCall(c.name, once, quick ? 2 : 5);
  rows.push({ harmonizer: c.name, size: `${c.size}²`, 'median ms': Math.round(m.medianMs), 'first call ms': Math.round(m.firstMs), 'peak MiB': Number((m.peakBytes / 2 ** 20).toFixed(1)) });
  console.log(rows[rows.length - 1]);
  c.dispose();
}
console.table(rows);
writeBenchJson(jsonPath, rows);
process.exit(0);
