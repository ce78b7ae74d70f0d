// UNet step benchmark: time of one UNet2DConditionModel forward (tinybench) and peak GPU memory (memoryStats)
// for the tiny conformance config and for SD-1.5-shaped random weights (64x64 latent, batch 2, 77 tokens), with
// weights stored in f32 or f16 (`{ dtype: 'f16' }` / `halfWeights`: compute stays f32).
// Usage: node --import tsx bench/unet.ts [--config tiny|sd15|all] [--dtype f32|f16|both] [--iterations n] [--json bench/results/unet.json]
import { Bench } from 'tinybench';
import { deviceInfo, getDevice } from '../src/engine/device.ts';
import { sync } from '../src/engine/queue.ts';
import { Tensor, memoryStats, resetPeakMemory, tidy } from '../src/engine/tensor.ts';
import { manualSeed } from '../src/engine/random-cpu.ts';
import { randn } from '../src/kernels/random.ts';
import { ConfigReader } from '../src/models/pretrained.ts';
import { UNet2DConditionModel, unetConfig } from '../src/models/unet_2d_condition.ts';
import { halfWeights } from '../src/nn/module.ts';

const argv = (globalThis as { process?: { argv: string[] } }).process?.argv.slice(2) ?? [];
const flag = (name: string) => {
  const i = argv.indexOf(name);
  return i >= 0 ? argv[i + 1] : undefined;
};
const which = flag('--config') ?? 'tiny';
const iterations = Number(flag('--iterations') ?? (which === 'tiny' ? 10 : 1));
const dtypeFlag = flag('--dtype') ?? 'f32';
if (!['f32', 'f16', 'both'].includes(dtypeFlag)) throw new Error(`bench/unet.ts: --dtype must be f32, f16 or both, got ${dtypeFlag}`);
const dtypes = (dtypeFlag === 'both' ? ['f32', 'f16'] : [dtypeFlag]) as ('f32' | 'f16')[];
const jsonPath = flag('--json') ?? `bench/results/unet-${which}${dtypeFlag === 'f32' ? '' : `-${dtypeFlag}`}.json`;

await getDevice();

/** SD 1.5's unet/config.json (runwayml/stable-diffusion-v1-5), the keys that shape the model. */
const sd15 = {
  block_out_channels: [320, 640, 1280, 1280],
  down_block_types: ['CrossAttnDownBlock2D', 'CrossAttnDownBlock2D', 'CrossAttnDownBlock2D', 'DownBlock2D'],
  up_block_types: ['UpBlock2D', 'CrossAttnUpBlock2D', 'CrossAttnUpBlock2D', 'CrossAttnUpBlock2D'],
  layers_per_block: 2, attention_head_dim: 8, cross_attention_dim: 768, norm_num_groups: 32, sample_size: 64,
};

interface Case { name: string; make: (dtype: 'f32' | 'f16') => UNet2DConditionModel; batch: number; size: number; tokens: number }
const cases: Case[] = [
  {
    name: 'tiny (conformance config) 16x16 batch 2',
    make: (dtype) => UNet2DConditionModel.fromPretrained(new URL('../../shared/conformance/unet', import.meta.url).pathname, { dtype }),
    batch: 2, size: 16, tokens: 7,
  },
  {
    name: 'SD-1.5-shaped 64x64 batch 2',
    // f16: each random weight is drawn, then stored as f16 as it is registered (no f32 copy of the model);
    // no gradients, as fromPretrained leaves a model (an inference step, not a recorded training one)
    make: (dtype) => {
      const build = () => new UNet2DConditionModel(unetConfig(new ConfigReader(sd15, '<SD 1.5 shape>')));
      return (dtype === 'f16' ? halfWeights(build) : build()).requireGrad(false);
    },
    batch: 2, size: 64, tokens: 77,
  },
];
const selected = cases
  .filter((_, i) => which === 'all' || (which === 'tiny' ? i === 0 : i === 1))
  .flatMap((c) => dtypes.map((dtype) => ({ ...c, dtype })));

const rows = [];
for (const c of selected) {
  manualSeed(0);
  const t0 = performance.now();
  const unet = c.make(c.dtype);
  await sync();
  const loadMs = performance.now() - t0;
  const weightsBytes = memoryStats().liveBytes;
  console.log(`${c.name} ${c.dtype}: built in ${(loadMs / 1000).toFixed(1)} s, weights ${(weightsBytes / 2 ** 20).toFixed(1)} MiB on the GPU`);
  const cross = unet.config.cross_attention_dim[0]!;
  const sample = randn([c.batch, unet.config.in_channels, c.size, c.size], { seed: 1 });
  const context = randn([c.batch, c.tokens, cross], { seed: 2 });
  resetPeakMemory();
  const bench = new Bench({ iterations, time: 0, warmup: iterations > 1, warmupIterations: 1 });
  bench.add(`${c.name} ${c.dtype}`, async () => {
    const out = tidy(() => unet.forward(sample, 500, context));
    await sync();
    out.dispose();
  });
  await bench.run();
  const r = bench.tasks[0]!.result as { latency?: { mean: number; p50?: number; min: number; samplesCount: number } } | undefined;
  const stats = memoryStats();
  rows.push({
    config: c.name,
    weights: c.dtype,
    'median ms': Number((r?.latency?.p50 ?? r?.latency?.mean ?? NaN).toFixed(1)),
    'min ms': Number((r?.latency?.min ?? NaN).toFixed(1)),
    samples: r?.latency?.samplesCount ?? 0,
    'weights MiB': Number((weightsBytes / 2 ** 20).toFixed(1)),
    'peak GPU MiB': Number((stats.peakBytes / 2 ** 20).toFixed(1)),
    'init/load ms': Number(loadMs.toFixed(0)),
  });
  console.table(rows.slice(-1));
  for (const t of [sample, context] as Tensor[]) t.dispose();
  unet.dispose();
}

const info = deviceInfo();
const fs = (globalThis as { process?: { getBuiltinModule(m: string): { mkdirSync(p: string, o: object): void; writeFileSync(p: string, d: string): void } } }).process!.getBuiltinModule('node:fs');
fs.mkdirSync(jsonPath.replace(/\/[^/]*$/, ''), { recursive: true });
fs.writeFileSync(jsonPath, JSON.stringify({ date: new Date().toISOString(), adapter: info.description, results: rows }, null, 2));
console.log(`wrote ${jsonPath}`);
