// Text-to-image sampling speed of a Stable Diffusion folder (the zoo's by default): one 64×64 image at a time,
// 20 and 50 DDIM steps with classifier-free guidance, median seconds per image (tinybench) and images per minute,
// the first image (compilation) apart, peak tensor memory. JSON in bench/results/sampling.json.
// Usage: npm run bench:sampling [-- --model DIR] [--quick] [--json PATH]
import { Bench } from 'tinybench';
import { deviceInfo, getDevice } from '../src/engine/device.ts';
import { memoryStats, resetPeakMemory, tidy } from '../src/engine/tensor.ts';
import { nodeFs, writeFileAtomic } from '../src/io/fs.ts';
import { AutoencoderKL } from '../src/models/autoencoder_kl.ts';
import { StableDiffusionPipeline } from '../src/models/stable_diffusion.ts';
import { UNet2DConditionModel } from '../src/models/unet_2d_condition.ts';

const argv = process.argv.slice(2);
const flag = (name: string, fallback: string) => (argv.includes(name) ? argv[argv.indexOf(name) + 1]! : fallback);
const model = flag('--model', 'weights/shapeworld-sd');
const jsonPath = flag('--json', 'bench/results/sampling.json');
const quick = argv.includes('--quick');
await getDevice();
if (!nodeFs('reading the model').existsSync(`${model}/model_index.json`)) throw new Error(`--model: ${model}/model_index.json is missing (a Stable Diffusion folder)`);
const pipe = await StableDiffusionPipeline.fromPretrained(model, { unet: UNet2DConditionModel, vae: AutoencoderKL });
const promptEmbeds = pipe.encodePrompt(['a photo of a boat on water']);

const rows: Record<string, string | number>[] = [];
for (const steps of [20, 50]) {
  let seed = 1;
  const image = async () => {
    const img = tidy(() => pipe.decodeLatents(pipe.sample({ promptEmbeds, numInferenceSteps: steps, guidanceScale: 5, seed: seed++, height: 64, width: 64 })));
    await img.toArray();
    img.dispose();
  };
  let t0 = performance.now();
  await image();
  const firstMs = performance.now() - t0;
  resetPeakMemory();
  const live = memoryStats().liveBytes;
  const bench = new Bench({ iterations: quick ? 2 : 5, time: 0, warmup: false });
  bench.add(`${steps} steps`, image);
  t0 = performance.now();
  await bench.run();
  const r = bench.tasks[0]!.result as { latency?: { p50?: number; mean: number } } | undefined;
  const median = r?.latency?.p50 ?? r?.latency?.mean ?? NaN;
  rows.push({ steps, 'median s/image': Number((median / 1000).toFixed(2)), 'images/min': Number((60_000 / median).toFixed(1)), 'first image s': Number((firstMs / 1000).toFixed(1)), 'peak MiB': Number(((memoryStats().peakBytes - live) / 2 ** 20).toFixed(1)) });
}
promptEmbeds.dispose();
console.table(rows);
const fs = nodeFs(`writing ${jsonPath}`);
fs.mkdirSync(jsonPath.replace(/\/[^/]*$/, ''), { recursive: true });
writeFileAtomic(jsonPath, new TextEncoder().encode(JSON.stringify({ adapter: deviceInfo().description, model, date: new Date().toISOString(), rows }, null, 2)));
console.log(`wrote ${jsonPath}`);
process.exit(0);
