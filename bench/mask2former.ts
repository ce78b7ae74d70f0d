// Mask2Former speed: one training step (forward + Hungarian loss + backward + AdamW) and inference images per
// second, for the tiny config of the convergence test and a Swin-T-shaped config (random weights), with the
// peak tensor memory of a step (memoryStats). Table printed, JSON in bench/results/mask2former.json.
// Usage: node --import tsx bench/mask2former.ts [--quick] [--size N (Swin-T input, default 512)] [--skip-swin-t] [--json path]
import { Bench } from 'tinybench';
import { getDevice, deviceInfo } from '../src/engine/device.ts';
import { noGrad } from '../src/engine/autograd.ts';
import { sync } from '../src/engine/queue.ts';
import { Tensor, memoryStats, resetPeakMemory } from '../src/engine/tensor.ts';
import { parseMask2FormerConfig } from '../src/models/mask2former/config.ts';
import { Mask2FormerForUniversalSegmentation, disposeTensors } from '../src/models/mask2former/model.ts';
import { Mask2FormerTrainer } from '../src/models/mask2former/train.ts';
import { sceneSample } from '../src/models/mask2former/data.ts';
import { generateScene } from '../src/world/scene.ts';

const argv = process.argv.slice(2);
const quick = argv.includes('--quick');
const arg = (name: string, fallback: string) => (argv.includes(name) ? argv[argv.indexOf(name) + 1]! : fallback);
const jsonPath = arg('--json', 'bench/results/mask2former.json');
const swinSize = Number(arg('--size', '512'));

await getDevice();

const swin = (embed: number, depths: number[], heads: number[], window: number) => ({ model_type: 'swin', embed_dim: embed, depths, num_heads: heads, window_size: window, drop_path_rate: 0.3 });
const cases = [
  {
    name: 'tiny (Swin 16 [1,1,1,1], hidden 32, 8 queries)', size: 32, batch: 4,
    json: { model_type: 'mask2former', backbone_config: swin(16, [1, 1, 1, 1], [1, 1, 2, 2], 4), feature_size: 32, mask_feature_size: 32, hidden_dim: 32, encoder_feedforward_dim: 64, encoder_layers: 1, decoder_layers: 2, num_attention_heads: 2, dim_feedforward: 64, num_queries: 8, num_labels: 21, train_num_points: 256 },
  },
  ...(argv.includes('--skip-swin-t') ? [] : [{
    // facebook/mask2former-swin-tiny-*: Swin-T backbone, 6 deformable encoder layers, 10 decoder layers, 100 queries
    name: `Swin-T-shaped (Swin 96 [2,2,6,2], hidden 256, 100 queries)`, size: swinSize, batch: 1,
    json: { model_type: 'mask2former', backbone_config: swin(96, [2, 2, 6, 2], [3, 6, 12, 24], 7), num_labels: 21 },
  }]),
];

const rows: Record<string, string | number>[] = [];
for (const c of cases) {
  const config = parseMask2FormerConfig(c.json, c.name);
  const model = new Mask2FormerForUniversalSegmentation(config);
  const scenes = Array.from({ length: c.batch }, (_, k) => sceneSample(generateScene(500 + k, { width: c.size }), `b${k}`));
  const trainer = new Mask2FormerTrainer(model, scenes, { steps: 1_000_000, batchSize: c.batch, lr: 1e-4, augment: { size: [c.size, c.size] } });
  const big = c.size >= 256;
  // first step: compiles every pipeline (measured apart)
  let t0 = performance.now();
  await trainer.trainStep();
  await sync();
  const firstMs = performance.now() - t0;
  resetPeakMemory();
  const before = memoryStats().liveBytes;
  t0 = performance.now();
  await trainer.trainStep();
  await sync();
  const stepMs = performance.now() - t0;
  const peak = memoryStats().peakBytes - before;

  const pixels = Tensor.fromArray(new Float32Array(c.batch * 3 * c.size * c.size).fill(0.1), [c.batch, 3, c.size, c.size]);
  model.eval();
  const infer = async () => {
    const out = noGrad(() => model.forward(pixels));
    await out.masksQueriesLogits.toArray();
    disposeTensors(out);
  };
  await infer();
  const bench = new Bench({ time: quick || big ? 0 : 3000, iterations: big ? 1 : quick ? 3 : 5, warmupIterations: 0 });
  // a big input: the one timed step above is the measurement (each step takes minutes on a CPU device)
  if (!big) {
    bench.add('step', async () => {
      model.train();
      await trainer.trainStep();
      await sync();
    });
  }
  bench.add('inference', infer);
  await bench.run();
  const lat = (name: string) => {
    const r = bench.tasks.find((t) => t.name === name)?.result as { latency?: { mean: number; p50?: number } } | undefined;
    return r?.latency?.p50 ?? r?.latency?.mean ?? NaN;
  };
  rows.push({
    config: c.name, input: `${c.batch}×3×${c.size}×${c.size}`,
    'first step ms (compiles)': Math.round(firstMs), 'train step ms': Math.round(big ? stepMs : lat('step')),
    'peak step MiB': Number((peak / 2 ** 20).toFixed(1)), 'inference images/s': Number(((1000 * c.batch) / lat('inference')).toFixed(3)),
  });
  console.table(rows.slice(-1));
  pixels.dispose();
  trainer.optimizer.dispose();
  model.dispose();
}
console.table(rows);
const fs = process.getBuiltinModule('node:fs');
fs.mkdirSync(jsonPath.replace(/\/[^/]*$/, ''), { recursive: true });
fs.writeFileSync(jsonPath, JSON.stringify({ date: new Date().toISOString(), node: process.version, adapter: deviceInfo().description, quick, results: rows }, null, 2));
console.log(`wrote ${jsonPath}`);
