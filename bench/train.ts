// Training-step benchmark (issue 13): the time of ONE optimizer step (forward, loss, backward, AdamW) of each
// model we train, with its arithmetic and memory. Table printed, JSON in bench/results/train.json.
// Usage: npm run bench:train [-- --quick] [--filter NAME] [--profile] [--iterations N] [--shader-cache] [--json PATH]
//        [--results bench/RESULTS.md (writes its "Training step" section: before/after against --baseline)]
//        [--baseline bench/train-baseline.json (the "before" numbers; default that file)]
//        [--report-only --json FILE --results bench/RESULTS.md (the section from an earlier run's JSON)]
//   --quick       2 timed steps per workload instead of 5
//   --filter NAME only workloads whose name contains NAME (unet, vae, mask2former, affinity)
//   --profile     also prints the per-kernel GPU time (timestamp queries) of one more step per workload
//   --shader-cache  keep Mesa's on-disk shader cache (default: disabled, so the first step compiles everything)
//
// Workloads (weights from the seeded CPU generator, inputs from fixed seeds):
//   unet         diffusers UNet2DConditionModel, block_out_channels [64, 128], CrossAttnDownBlock2D ×2 /
//                CrossAttnUpBlock2D ×2 (+ the default UNetMidBlock2DCrossAttn), layers_per_block 1,
//                attention_head_dim 8 (8 heads), cross_attention_dim 64, norm_num_groups 32; latents
//                8×4×16×16, 77 text tokens of width 64, one timestep per element; loss MSE of the prediction
//                against a random noise target; AdamW (lr 1e-4) over every parameter.
//   vae          diffusers AutoencoderKL at "zoo size": 64×64 RGB → 4×16×16 latents, batch 8 (ShapeWorld
//                scenes in [-1, 1]); block_out_channels [32, 64, 64] (3 DownEncoderBlock2D / UpDecoderBlock2D,
//                two ×2 downsamplers: 64 → 16), layers_per_block 1, norm_num_groups 8 (32 and 64 channels
//                both divide by it; 32 groups would leave one channel per group in the first block), the
//                mid block's attention on (diffusers' default), quant/post-quant convs on. Loss: MSE of
//                decode(mean + σ·ε) against the image + 1e-6 · KL(posterior ‖ N(0, 1)) (LDM's kl_weight;
//                KL summed over latent elements, averaged over the batch); AdamW (lr 1e-4).
//   mask2former  the tiny config of test/mask2former-train.test.ts's convergence test (Swin embed 16, depths
//                [1,1,1,1], hidden 32, 8 queries, drop path 0) on its four 32×32 ShapeWorld scenes, batch 4,
//                the test's options, through Mask2FormerTrainer.trainStep (Hungarian matching on the CPU,
//                loss read back, gradient norm, AdamW per parameter group).
//   affinity     AffinityNet with affinityNetFine on 4 ShapeWorld single-object 64×64 images with their true
//                masks, fineRefinement's training (radius 5, band 1, lr 0.2), the step of trainAffinityNet
//                (affinityTrainStep in src/pipeline/refine.ts: psa's loss, backward, AdamW).
//
// Measured per workload: the first step (pipeline compilation included) alone; then one step counting FLOPs
// and peak memory; then tinybench over N more steps (median). Each step ends with sync() (GPU idle).
// FLOP: `productFlops()` (src/kernels/matmul.ts) before/after a step: every product kernel (gemm and so
// linear, matmul, attention's QKᵀ and PV, conv2d / convTranspose2d, and all their gradient products),
// 2·M·N·K each; a convolution counts every weight tap at every output pixel (padding taps included, as
// PyTorch's flop counter), a transposed gather (conv2d's input gradient) those of the direct convolution it
// transposes. Not counted: elementwise ops, norms, softmax, reductions, the optimizer, Mask2Former's
// deformable attention and sampling kernels. "fwd GFLOP" is the network's forward alone on the step's
// inputs with gradients recorded (for the forward/backward split; Mask2Former: the network without its loss).
// The FMA ceiling is bench/fma_ceiling.ts (as the peers bench), measured just before each workload's timed
// steps, so both see the same load. Peak memory: memoryStats() peak during the counted step (tensors: weights,
// optimizer state, inputs, activations, gradients; not the pool's free buffers) and the live bytes before it.
// Machine: adapter, cores and the 1-min load average at each workload's start and end (the table shows their
// mean); on a CPU adapter the bench's own lavapipe threads count in it (≈ the core count while a step runs).
import os from 'node:os';
import { Bench } from 'tinybench';
import { backward } from '../src/engine/autograd.ts';
import { deviceInfo, getDevice } from '../src/engine/device.ts';
import { manualSeed, seededRandom } from '../src/engine/random-cpu.ts';
import { profileReport, resetProfile, setProfiling, sync } from '../src/engine/queue.ts';
import { Tensor, memoryStats, resetPeakMemory, tidy } from '../src/engine/tensor.ts';
import { add, exp, mul, sub } from '../src/kernels/elementwise.ts';
import { mseLoss } from '../src/kernels/loss.ts';
import { productFlops } from '../src/kernels/matmul.ts';
import { pipelineStats } from '../src/engine/kernel.ts';
import { randn } from '../src/kernels/random.ts';
import { sum } from '../src/kernels/reduce.ts';
import { concat } from '../src/kernels/shape.ts';
import { imageToTensor } from '../src/io/image.ts';
import { AffinityNet, affinityNetFine } from '../src/models/affinity_net.ts';
import { AutoencoderKL, autoencoderConfig } from '../src/models/autoencoder_kl.ts';
import { parseMask2FormerConfig } from '../src/models/mask2former/config.ts';
import { pixelValues, sceneSample } from '../src/models/mask2former/data.ts';
import { Mask2FormerForUniversalSegmentation, disposeTensors } from '../src/models/mask2former/model.ts';
import { Mask2FormerTrainer } from '../src/models/mask2former/train.ts';
import { ConfigReader } from '../src/models/pretrained.ts';
import { UNet2DConditionModel, unetConfig } from '../src/models/unet_2d_condition.ts';
import type { Module } from '../src/nn/module.ts';
import { AdamW } from '../src/optim/adamw.ts';
import { type RefineSample, affinityTrainStep, affinityTrainingGrids, fineRefinement } from '../src/pipeline/refine.ts';
import { generateScene } from '../src/world/scene.ts';
import { splitSeed } from '../src/world/splits.ts';
import { fmaCeilingGflops } from './fma_ceiling.ts';
import { gitCommit, writeSection } from './results-md.ts';

const argv = process.argv.slice(2);
const flag = (name: string) => {
  const i = argv.indexOf(name);
  return i >= 0 ? argv[i + 1] : undefined;
};
const quick = argv.includes('--quick');
const profile = argv.includes('--profile');
const filter = flag('--filter');
const iterations = Number(flag('--iterations') ?? (quick ? 2 : 5));
const jsonPath = flag('--json') ?? 'bench/results/train.json';
const resultsPath = flag('--results');
const baselinePath = flag('--baseline') ?? 'bench/train-baseline.json';
if (!Number.isInteger(iterations) || iterations < 1) throw new Error(`bench/train.ts: --iterations must be a positive integer, got ${flag('--iterations')}`);
// Mesa keeps compiled shaders on disk (~/.cache/mesa_shader_cache_db): with it, a first step compiles only what
// no earlier run compiled (measured: the UNet's first step 90 s cold, 7 s after one run). Off unless asked, so
// the first step always includes every compilation; the environment reaches Mesa as Dawn starts in getDevice.
const shaderCache = argv.includes('--shader-cache') || process.env.MESA_SHADER_CACHE_DISABLE !== undefined;
if (!shaderCache) process.env.MESA_SHADER_CACHE_DISABLE = 'true';

if (argv.includes('--report-only')) {
  // the RESULTS.md section from an earlier run's JSON (--json), without running anything
  const run = JSON.parse(process.getBuiltinModule('node:fs').readFileSync(jsonPath, 'utf8')) as Run & { results: Row[] };
  if (!resultsPath) throw new Error('bench/train.ts: --report-only writes --results PATH');
  writeResults({ ...run, rows: run.results, profiles: run.profiles ?? {} });
  process.exit(0);
}

await getDevice();

/** One optimizer step on the loss `lossOf` builds (intermediates freed), ending with the GPU idle. */
async function optimizerStep(opt: AdamW, lossOf: () => Tensor): Promise<void> {
  const loss = tidy(lossOf);
  backward(loss);
  opt.step();
  opt.zeroGrad();
  loss.dispose();
  await sync();
}

interface Workload {
  /** What exactly runs (model, input, loss). */
  what: string;
  input: string;
  /** Trainable parameters. */
  params: number;
  /** One training step, ending with the GPU idle. */
  step: () => Promise<void>;
  /** The network's forward on the step's inputs with gradients recorded, freed again (FLOP split only). */
  forward: () => Promise<void>;
  dispose: () => void;
}

const paramCount = (m: Module) => m.parameters().reduce((n, p) => n + p.size, 0);

/** ShapeWorld pictures as [1, 3, S, S] tensors in `range`. */
const worldImage = (seed: number, size: number, mode: 'scene' | 'single', range: [number, number]) => {
  const sc = generateScene(seed, { width: size, mode });
  return { scene: sc, image: imageToTensor({ width: size, height: size, channels: 3, data: sc.image }, { range }) };
};

const makers: { name: string; make: () => Workload }[] = [
  {
    name: 'unet',
    make: () => {
      const json = {
        block_out_channels: [64, 128], down_block_types: ['CrossAttnDownBlock2D', 'CrossAttnDownBlock2D'], up_block_types: ['CrossAttnUpBlock2D', 'CrossAttnUpBlock2D'],
        layers_per_block: 1, attention_head_dim: 8, cross_attention_dim: 64, norm_num_groups: 32, sample_size: 16,
      };
      manualSeed(0);
      const unet = new UNet2DConditionModel(unetConfig(new ConfigReader(json, 'bench UNet'))).requireGrad();
      const [B, tokens] = [8, 77];
      const sample = randn([B, 4, 16, 16], { seed: 1 });
      const target = randn([B, 4, 16, 16], { seed: 2 });
      const text = randn([B, tokens, 64], { seed: 3 });
      const r = seededRandom(4);
      const timesteps = Array.from({ length: B }, () => Math.floor(r() * 1000));
      const opt = new AdamW(unet.parameters(), { lr: 1e-4 });
      return {
        what: 'UNet2DConditionModel [64, 128], CrossAttn down/up ×2 + mid, 1 layer/block, 8 heads, cross 64, 32 groups; MSE to noise; AdamW',
        input: `${B}×4×16×16 + ${B}×${tokens}×64 text`,
        params: paramCount(unet),
        step: () => optimizerStep(opt, () => mseLoss(unet.forward(sample, timesteps, text), target)),
        forward: async () => {
          tidy(() => unet.forward(sample, timesteps, text)).dispose();
          await sync();
        },
        dispose: () => {
          for (const t of [sample, target, text]) t.dispose();
          opt.dispose();
          unet.dispose();
        },
      };
    },
  },
  {
    name: 'vae',
    make: () => {
      const json = {
        in_channels: 3, out_channels: 3, latent_channels: 4, block_out_channels: [32, 64, 64], layers_per_block: 1, norm_num_groups: 8, sample_size: 64,
        down_block_types: ['DownEncoderBlock2D', 'DownEncoderBlock2D', 'DownEncoderBlock2D'], up_block_types: ['UpDecoderBlock2D', 'UpDecoderBlock2D', 'UpDecoderBlock2D'],
      };
      manualSeed(0);
      const vae = new AutoencoderKL(autoencoderConfig(new ConfigReader(json, 'bench VAE'))).requireGrad();
      const B = 8;
      const images = tidy(() => concat(Array.from({ length: B }, (_, k) => worldImage(splitSeed('train', k), 64, 'scene', [-1, 1]).image), 0));
      const opt = new AdamW(vae.parameters(), { lr: 1e-4 });
      const klWeight = 1e-6;
      const reconstruct = () => {
        const posterior = vae.encode(images);
        return { posterior, recon: vae.decode(vae.sample(posterior, { seed: 5 })) };
      };
      return {
        what: 'AutoencoderKL [32, 64, 64], 1 layer/block, 8 groups, mid attention; MSE(recon) + 1e-6·KL; AdamW',
        input: `${B}×3×64×64 → ${B}×4×16×16`,
        params: paramCount(vae),
        step: () => optimizerStep(opt, () => {
          const { posterior: { mean, logvar }, recon } = reconstruct();
          // KL(N(μ, σ²) ‖ N(0, 1)) = ½ Σ (μ² + σ² − 1 − log σ²), per image, averaged over the batch
          const kl = mul(sum(sub(add(mul(mean, mean), exp(logvar)), add(logvar, 1))), 0.5 / B);
          return add(mseLoss(recon, images), mul(kl, klWeight));
        }),
        forward: async () => {
          tidy(() => reconstruct().recon).dispose();
          await sync();
        },
        dispose: () => {
          images.dispose();
          opt.dispose();
          vae.dispose();
        },
      };
    },
  },
  {
    name: 'mask2former',
    make: () => {
      // test/mask2former-train.test.ts: tinyJson with drop_path_rate 0, its scenes and trainer options; out_features
      // named explicitly (all four stages, which the pixel decoder needs) rather than left to the default for an
      // absent key
      const json = {
        model_type: 'mask2former',
        backbone_config: {
          model_type: 'swin', embed_dim: 16, depths: [1, 1, 1, 1], num_heads: [1, 1, 2, 2], window_size: 4, drop_path_rate: 0,
          out_features: ['stage1', 'stage2', 'stage3', 'stage4'],
        },
        feature_size: 32, mask_feature_size: 32, hidden_dim: 32, encoder_feedforward_dim: 64, encoder_layers: 1, decoder_layers: 2,
        num_attention_heads: 2, dim_feedforward: 64, num_queries: 8, num_labels: 21, train_num_points: 256,
      };
      const S = 32;
      manualSeed(0);
      const model = new Mask2FormerForUniversalSegmentation(parseMask2FormerConfig(json, 'bench tiny Mask2Former'));
      const scenes = [0, 1, 2, 3].map((k) => sceneSample(generateScene(1000 + k, { width: S }), `scene${k}`));
      const trainer = new Mask2FormerTrainer(model, scenes, { steps: 1_000_000, batchSize: 4, lr: 1e-3, clipNorm: 0, weightDecay: 0, backboneMultiplier: 1, power: 0 });
      const pixels = Tensor.fromArray(Float32Array.from(scenes.flatMap((s) => [...pixelValues(s)])), [4, 3, S, S]);
      return {
        what: 'Mask2Former tiny (Swin 16 [1,1,1,1], hidden 32, 8 queries) via Mask2FormerTrainer.trainStep',
        input: `4×3×${S}×${S}`,
        params: paramCount(model),
        step: async () => {
          await trainer.trainStep();
          await sync();
        },
        forward: async () => {
          model.train();
          disposeTensors(model.forward(pixels));
          await sync();
        },
        dispose: () => {
          pixels.dispose();
          trainer.optimizer.dispose();
          model.dispose();
        },
      };
    },
  },
  {
    name: 'affinity',
    make: () => {
      const B = 4;
      const { radius, band, lr } = fineRefinement.train;
      manualSeed(1);
      const net = new AffinityNet(affinityNetFine);
      const samples: RefineSample[] = Array.from({ length: B }, (_, k) => {
        const { scene, image } = worldImage(splitSeed('train', k), 64, 'single', [0, 1]);
        return { image, mask: scene.semantic };
      });
      const images = samples.map((s) => s.image);
      const grids = affinityTrainingGrids(net, samples, band);
      // trainAffinityNet's optimizer
      const opt = new AdamW(net.parameters(), { lr, weightDecay: 1e-4 });
      net.train();
      return {
        what: `AffinityNet affinityNetFine, psa loss radius ${radius}, band ${band}; AdamW lr ${lr} (affinityTrainStep)`,
        input: `${B}×3×64×64`,
        params: paramCount(net),
        step: async () => {
          affinityTrainStep(net, opt, images, grids, radius).dispose();
          await sync();
        },
        forward: async () => {
          tidy(() => net.forward(concat(images, 0))).dispose();
          await sync();
        },
        dispose: () => {
          for (const t of images) t.dispose();
          opt.dispose();
          net.dispose();
        },
      };
    },
  },
];

const selected = makers.filter((m) => !filter || m.name.includes(filter));
if (selected.length === 0) throw new Error(`bench/train.ts: no workload matches --filter ${filter} (workloads: ${makers.map((m) => m.name).join(', ')})`);

const info = deviceInfo();
const cpus = os.cpus();
const machine = {
  adapter: info.description,
  cores: cpus.length,
  cpu: cpus[0]?.model ?? 'unknown',
  LP_NUM_THREADS: process.env.LP_NUM_THREADS ?? null,
  timestampQuery: info.features.includes('timestamp-query'),
  mesaShaderCacheDisable: process.env.MESA_SHADER_CACHE_DISABLE ?? null,
  loadavg1Start: Number(os.loadavg()[0]!.toFixed(2)),
};
console.log(`${machine.adapter}, ${machine.cores} cores (${machine.cpu}), load average ${machine.loadavg1Start}; ${iterations} timed steps per workload; Mesa shader disk cache ${shaderCache ? 'as the environment has it' : 'disabled'}`);

const MiB = (b: number) => Number((b / 2 ** 20).toFixed(1));
const G = (f: number) => Number((f / 1e9).toFixed(3));
type Row = Record<string, number | string | number[]>;
const rows: Row[] = [];
const profiles: Record<string, { kernel: string; calls: number; 'total ms': number; share: string }[]> = {};

for (const m of selected) {
  const load0 = os.loadavg()[0]!;
  const w = m.make();
  console.log(`\n${m.name}: ${w.what}; input ${w.input}; ${(w.params / 1e6).toFixed(3)} M parameters (${w.params})`);

  // the first step compiles every pipeline it uses
  const compiled0 = pipelineStats();
  let t0 = performance.now();
  await w.step();
  const firstMs = performance.now() - t0;
  const compiled1 = pipelineStats();

  // one step counting FLOP and memory
  resetPeakMemory();
  const liveBefore = memoryStats().liveBytes;
  let f0 = productFlops();
  t0 = performance.now();
  await w.step();
  const countedMs = performance.now() - t0;
  const flops = productFlops() - f0;
  const peak = memoryStats().peakBytes;

  f0 = productFlops();
  await w.forward();
  const forwardFlops = productFlops() - f0;

  const ceiling = await fmaCeilingGflops();

  const bench = new Bench({ iterations, time: 0, warmup: false, throws: true });
  let steps = 0;
  bench.add(m.name, async () => {
    await w.step();
    steps++;
  });
  f0 = productFlops();
  await bench.run();
  const benchFlops = (productFlops() - f0) / Math.max(steps, 1);
  if (Math.abs(benchFlops - flops) > 1e-6 * flops) console.warn(`${m.name}: FLOP per step varies: ${G(flops)} G counted, ${G(benchFlops)} G mean over the timed steps`);
  const r = bench.tasks[0]!.result as { latency?: { mean: number; p50?: number; min: number; max: number; samplesCount: number } } | undefined;
  const median = r?.latency?.p50 ?? r?.latency?.mean ?? NaN;
  const gflops = flops / median / 1e6;
  const row = {
    workload: m.name,
    'params M': Number((w.params / 1e6).toFixed(3)),
    'median ms': Math.round(median),
    'GFLOP/step': G(flops),
    'fwd share': Number((forwardFlops / flops).toFixed(3)),
    'GFLOP/s': Number(gflops.toFixed(2)),
    'of FMA ceiling': `${((100 * gflops) / ceiling).toFixed(1)}%`,
    'first step ms': Math.round(firstMs),
    'first − median': Math.round(firstMs - median),
    'new pipelines': compiled1.pipelines - compiled0.pipelines,
    'peak MiB': MiB(peak),
    'load 1m': Number(((load0 + os.loadavg()[0]!) / 2).toFixed(2)),
  };
  const load1 = os.loadavg()[0]!;
  rows.push({
    ...row, input: w.input, what: w.what, params: w.params, 'min ms': Math.round(r?.latency?.min ?? NaN), samples: r?.latency?.samplesCount ?? 0,
    'fwd GFLOP': G(forwardFlops), 'ceiling GFLOP/s': ceiling, 'counted step ms': Math.round(countedMs), 'live before MiB': MiB(liveBefore),
    flops, forwardFlops, medianMs: median, firstMs, peakBytes: peak, liveBeforeBytes: liveBefore, loadavg1: [Number(load0.toFixed(2)), Number(load1.toFixed(2))],
  });
  console.log(`  first step ${row['first step ms']} ms (compiles ${compiled1.pipelines - compiled0.pipelines} new pipelines for ${compiled1.keys - compiled0.keys} new kernel specialisations), counted step ${Math.round(countedMs)} ms, median ${row['median ms']} ms over ${r?.latency?.samplesCount ?? 0} (min ${Math.round(r?.latency?.min ?? NaN)})`);
  console.log(`  ${G(flops)} GFLOP per step (forward ${G(forwardFlops)}, ${(100 * forwardFlops / flops).toFixed(1)}%), ${row['GFLOP/s']} GFLOP/s = ${row['of FMA ceiling']} of the FMA ceiling ${ceiling} GFLOP/s`);
  console.log(`  peak ${MiB(peak)} MiB of tensors in a step (${MiB(liveBefore)} MiB live before it: weights, optimizer state, inputs); load average ${load0.toFixed(2)} → ${load1.toFixed(2)}`);

  if (profile) {
    if (!info.features.includes('timestamp-query')) {
      console.log(`${m.name}: no profile (the adapter lacks timestamp-query)`);
    } else {
      setProfiling(true);
      resetProfile();
      t0 = performance.now();
      await w.step();
      const wallMs = performance.now() - t0;
      const report = await profileReport();
      setProfiling(false);
      const gpuMs = report.reduce((a, e) => a + e.totalMs, 0);
      console.log(`${m.name}: profile of one step: wall ${wallMs.toFixed(0)} ms with profiling on, GPU kernel time ${gpuMs.toFixed(0)} ms, ${report.reduce((a, e) => a + e.calls, 0)} dispatches`);
      const table = report.map((e) => ({ kernel: e.kernel, calls: e.calls, 'total ms': Number(e.totalMs.toFixed(2)), 'mean ms': Number(e.meanMs.toFixed(3)), share: `${((100 * e.totalMs) / gpuMs).toFixed(1)}%` }));
      console.table(table);
      profiles[m.name] = table;
    }
  }
  w.dispose();
}

console.log('\nAll workloads (one training step each; median over the timed steps):');
console.table(rows.map((r) => Object.fromEntries(Object.entries(r).slice(0, 11))));
const [date, commit] = [new Date().toISOString(), gitCommit() ?? 'unknown'];
const fs = process.getBuiltinModule('node:fs');
fs.mkdirSync(jsonPath.replace(/\/[^/]*$/, ''), { recursive: true });
fs.writeFileSync(jsonPath, JSON.stringify({
  date, commit, node: process.version, machine: { ...machine, loadavg1End: Number(os.loadavg()[0]!.toFixed(2)) }, quick, iterations, shaderCache,
  flopCounting: 'productFlops() (src/kernels/matmul.ts): 2·M·N·K of every gemm/linear/attention product and convolution incl. gradients, nominal taps; elementwise, norms, softmax, reductions, optimizer and Mask2Former deformable attention not counted',
  results: rows, ...(profile ? { profiles } : {}),
}, null, 2));
console.log(`wrote ${jsonPath}`);

if (resultsPath) writeResults({ date, commit, machine, iterations, shaderCache, rows, profiles });

interface Run {
  date: string;
  commit: string;
  machine: { adapter: string; cores: number };
  iterations: number;
  shaderCache: boolean;
  rows: Row[];
  profiles: typeof profiles;
}

function writeResults(run: Run): void {
  writeSection(resultsPath!, '## Training step', trainingSection(run));
  console.log(`wrote the Training step section of ${resultsPath}`);
}

/** The RESULTS.md section: a run next to the baseline's numbers, the targets of issue 13, the profiles. */
function trainingSection({ date, commit, machine, iterations, shaderCache, rows, profiles }: Run): string {
  type Base = { workload: string; medianMs: number; firstMs: number; peakMiB: number };
  const base = JSON.parse(process.getBuiltinModule('node:fs').readFileSync(baselinePath, 'utf8')) as { note: string; commit: string; results: Base[]; profile?: Record<string, string> };
  const before = (w: string) => base.results.find((b) => b.workload === w);
  const speedup = (w: string, ms: number) => (before(w) ? before(w)!.medianMs / ms : NaN);
  const x = (v: number) => (Number.isFinite(v) ? `${v.toFixed(2)}×` : '—');
  const s = (ms: number) => (ms / 1000).toFixed(1);
  const num = (r: Row, k: string) => r[k] as number;
  const name = (r: Row) => r.workload as string;
  const lines = [
    `\`npm run bench:train\` on ${machine.adapter}, ${machine.cores} cores, ${date}, commit ${commit}; Mesa's shader disk cache ${shaderCache ? 'as the environment has it' : 'disabled (first steps compile everything)'}; ${iterations} timed steps per workload (median); the workloads run in this order in one process, so a later one's first step reuses pipelines an earlier one compiled; medians vary by about ±15% between runs on this VM; 1-min load ${rows.map((r) => `${name(r)} ${r['load 1m']}`).join(', ')} (includes the bench's own threads). Before: ${base.note}`,
    '',
    '| workload | before ms | after ms | speedup | GFLOP/step | GFLOP/s | of FMA ceiling | first step before → after (s) | first − median (s) | peak MiB |',
    '|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|',
    ...rows.map((r) => `| ${name(r)} | ${before(name(r))?.medianMs ?? '—'} | ${r['median ms']} | ${x(speedup(name(r), num(r, 'medianMs')))} | ${r['GFLOP/step']} | ${r['GFLOP/s']} | ${r['of FMA ceiling']} | ${before(name(r)) ? s(before(name(r))!.firstMs) : '—'} → ${s(num(r, 'firstMs'))} | ${s(num(r, 'firstMs') - num(r, 'medianMs'))} | ${r['peak MiB']} |`),
    '',
    'Targets of issue 13 (met / not met, from this run):',
    ...rows.flatMap((r) => {
      const w = name(r);
      const goal = w === 'unet' ? 3 : w === 'vae' || w === 'mask2former' ? 2 : undefined;
      const sp = speedup(w, num(r, 'medianMs'));
      const compile = num(r, 'firstMs') - num(r, 'medianMs');
      const step = goal ? [`- ${w} step ≥ ${goal}× faster than before: ${x(sp)} — ${sp >= goal ? 'met' : 'not met'}`] : [];
      const cold = shaderCache ? [] : [`- ${w} first step (cold shader cache) ≤ 20 s more than a step: ${s(compile)} s — ${compile <= 20_000 ? 'met' : 'not met'}`];
      return [...step, ...cold];
    }),
    ...(base.profile ? ['', 'Profile before:', ...Object.entries(base.profile).map(([w, p]) => `- ${w}: ${p}`)] : []),
  ];
  for (const [name, table] of Object.entries(profiles)) {
    lines.push('', `Profile after, ${name} (one step, GPU time per kernel, the 12 slowest):`, '', '| kernel | calls | total ms | share |', '|---|--:|--:|--:|');
    for (const e of table.slice(0, 12)) lines.push(`| ${e.kernel} | ${e.calls} | ${e['total ms']} | ${e.share} |`);
  }
  return lines.join('\n');
}
