// `freemask generate` speed: seconds per image (median, tinybench) and images per minute at 20 sampling steps, for
// a single-object image (every stage), the same without AffinityNet refinement, and a multi-object image (two
// pasted objects, each generated, placed by FOPA, harmonized by the shipped PCT-Net as `generate` does by default);
// where the time goes per stage (the manifests' timings, averaged). JSON in bench/results/generate.json.
// Usage: npm run bench:generate [-- --model DIR] [--quick] [--json PATH]
import { measureCall, writeBenchJson } from './measure.ts';
import { getDevice } from '../src/engine/device.ts';
import { nodeFs } from '../src/io/fs.ts';
import { AutoencoderKL } from '../src/models/autoencoder_kl.ts';
import { ObPlaNet } from '../src/models/fopa.ts';
import { IrnNet } from '../src/models/irn/model.ts';
import { StableDiffusionPipeline } from '../src/models/stable_diffusion.ts';
import { UNet2DConditionModel } from '../src/models/unet_2d_condition.ts';
import { type GenerateManifest, type GenerateOptions, generateDataset, shapeWorldClassList } from '../src/pipeline/generate.ts';
import { harmonizerFromName } from '../src/pipeline/harmonize.ts';

const argv = process.argv.slice(2);
const flag = (name: string, fallback: string) => (argv.includes(name) ? argv[argv.indexOf(name) + 1]! : fallback);
const quick = argv.includes('--quick');
const jsonPath = flag('--json', 'bench/results/generate.json');
const fs = nodeFs('bench:generate');
await getDevice();

const model = flag('--model', 'weights/shapeworld-sd');
if (!fs.existsSync(`${model}/model_index.json`)) throw new Error(`--model: ${model}/model_index.json is missing (expected a Stable Diffusion folder)`);
const pipe = await StableDiffusionPipeline.fromPretrained(model, { unet: UNet2DConditionModel, vae: AutoencoderKL });
const fopa = ObPlaNet.fromPretrained('weights/shapeworld-fopa');
const irn = IrnNet.fromPretrained('weights/shapeworld-irn');
const pctNet = 'pct-net:weights/shapeworld-pctnet';
const tmp = fs.existsSync('/tmp') ? '/tmp' : '.';
const base = { count: 1, pipe, classes: shapeWorldClassList(), numInferenceSteps: 20, guidanceScale: 5, fopa, irn, harmonizer: { name: pctNet, run: harmonizerFromName(pctNet) } } satisfies Partial<GenerateOptions>;
const cases: { name: string; options: Partial<GenerateOptions> }[] = [
  { name: 'single object, every stage', options: { multi: 0 } },
  { name: 'single object, no refinement', options: { multi: 0, stages: ['compose', 'harmonize', 'instances'] } },
  { name: 'three objects (two pasted), every stage', options: { multi: 1, objects: [2, 2] } },
];
const rows: Record<string, string | number>[] = [];
let run = 0;
for (const c of cases) {
  const manifests: GenerateManifest[] = [];
  const image = async () => {
    const out = `${tmp}/freemask-bench-generate-${process.pid}-${run}`;
    manifests.push(await generateDataset({ ...base, ...c.options, out, seed: run++ }));
    fs.rmSync(out, { recursive: true, force: true });
  };
  const m = await measureCall(c.name, image, quick ? 2 : 4);
  const stages: Record<string, number> = {};
  for (const t of manifests.slice(1).flatMap((x) => x.timings)) for (const [k, v] of Object.entries(t.seconds)) stages[k] = (stages[k] ?? 0) + v / (manifests.length - 1);
  rows.push({
    case: c.name, 'median s/image': Number((m.medianMs / 1000).toFixed(2)), 'images/min': Number((60_000 / m.medianMs).toFixed(1)), 'first image s': Number((m.firstMs / 1000).toFixed(1)),
    ...Object.fromEntries(Object.entries(stages).map(([k, v]) => [`${k} s`, Number(v.toFixed(2))])), 'peak MiB': Number((m.peakBytes / 2 ** 20).toFixed(1)),
  });
  console.log(rows[rows.length - 1]);
}
console.table(rows);
writeBenchJson(jsonPath, rows, { model, steps: 20 });
process.exit(0);
