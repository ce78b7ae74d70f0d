// Text-to-image sampling speed of a Stable Diffusion folder (the zoo's by default): one 64×64 image at a time,
// 20 and 50 DDIM steps with classifier-free guidance, median seconds per image (tinybench) and images per minute,
// the first image (compilation) apart, peak tensor memory. JSON in bench/results/sampling.json.
// Usage: npm run bench:sampling [-- --model DIR] [--quick] [--json PATH]
import { measureCall, writeBenchJson } from './measure.ts';
import { getDevice } from '../src/engine/device.ts';
import { tidy } from '../src/engine/tensor.ts';
import { nodeFs } from '../src/io/fs.ts';
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
  const m = await measureCall(`${steps} steps`, image, quick ? 2 : 5);
  rows.push({ steps, 'median s/image': Number((m.medianMs / 1000).toFixed(2)), 'images/min': Number((60_000 / m.medianMs).toFixed(1)), 'first image s': Number((m.firstMs / 1000).toFixed(1)), 'peak MiB': Number((m.peakBytes / 2 ** 20).toFixed(1)) });
}
promptEmbeds.dispose();
console.table(rows);
writeBenchJson(jsonPath, rows, { model });
process.exit(0);
