// What weights/ promises: at most 40 MB in all, float tensors stored as F16, and every model folder with its card
// (README.md with the sections a card must have and the pictures it links to); the zoo's Stable Diffusion loads
// with StableDiffusionPipeline.fromPretrained and draws what its prompts ask for.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { readFileSync, readdirSync, statSync } from 'node:fs';
import { getDevice } from '../src/engine/device.ts';
import { AutoencoderKL } from '../src/models/autoencoder_kl.ts';
import { StableDiffusionPipeline } from '../src/models/stable_diffusion.ts';
import { UNet2DConditionModel } from '../src/models/unet_2d_condition.ts';

const root = new URL('../weights/', import.meta.url).pathname;
const files = (dir: string): string[] => readdirSync(dir).flatMap((n) => (statSync(`${dir}/${n}`).isDirectory() ? files(`${dir}/${n}`) : [`${dir}/${n}`]));

test('weights/: ≤ 40 MB together, float tensors in F16', () => {
  const all = files(root);
  const bytes = all.reduce((n, f) => n + statSync(f).size, 0);
  assert.ok(bytes <= 40e6, `weights/ holds ${(bytes / 1e6).toFixed(1)} MB`);
  for (const f of all.filter((p) => p.endsWith('.safetensors'))) {
    const buf = readFileSync(f);
    const header = JSON.parse(buf.subarray(8, 8 + Number(buf.readBigUInt64LE(0))).toString()) as Record<string, { dtype: string }>;
    const wide = Object.entries(header).filter(([k, v]) => k !== '__metadata__' && (v.dtype === 'F32' || v.dtype === 'F64'));
    assert.is(wide.length, 0, `${f}: ${wide.map(([k, v]) => `${k} ${v.dtype}`).slice(0, 3).join(', ')}`);
  }
});

test('weights/: every model folder has a card with data, training, loss curve, evaluation and the commands that reproduce it', () => {
  const models = readdirSync(root).filter((n) => statSync(`${root}${n}`).isDirectory());
  assert.ok(models.length >= 5, models.join(', '));
  for (const m of models) {
    const card = readFileSync(`${root}${m}/README.md`, 'utf8');
    for (const heading of ['## Data', '## Training', '## Evaluation', '## Reproduce']) assert.ok(card.includes(`\n${heading}`), `${m}: the card lacks ${heading}`);
    assert.match(card, /\| training steps \| \d+ \|/, `${m}: steps`);
    for (const [, picture] of card.matchAll(/!\[[^\]]*\]\(([^)]+)\)/g)) assert.ok(statSync(`${root}${m}/${picture}`).isFile(), `${m}: ${picture} is linked but missing`);
  }
});

test('weights/shapeworld-sd: loads with StableDiffusionPipeline.fromPretrained and draws the prompted ground', async () => {
  await getDevice();
  const pipe = await StableDiffusionPipeline.fromPretrained(`${root}shapeworld-sd`, { unet: UNet2DConditionModel, vae: AutoencoderKL });
  assert.equal([pipe.vaeScaleFactor, ...pipe.sampleSize], [4, 16, 16]);
  const prompts = [...Array(4).fill('a photo of a boat on water'), ...Array(4).fill('a photo of a cow on grass')];
  const { images, latents } = pipe.generate(prompts, { numInferenceSteps: 20, guidanceScale: 5, seed: 1 });
  assert.equal(images.shape, [8, 3, 64, 64]);
  const x = await images.toArray();
  images.dispose();
  latents.dispose();
  // ShapeWorld's near water is dark blue, its near grass green: the bottom quarter's green minus blue, per image
  const greenOverBlue = prompts.map((_, b) => {
    let s = 0;
    for (let y = 48; y < 64; y++) for (let i = 0; i < 64; i++) s += x[((b * 3 + 1) * 64 + y) * 64 + i]! - x[((b * 3 + 2) * 64 + y) * 64 + i]!;
    return s / (16 * 64);
  });
  const mean = (v: number[]) => v.reduce((a, e) => a + e, 0) / v.length;
  const [water, grass] = [mean(greenOverBlue.slice(0, 4)), mean(greenOverBlue.slice(4))];
  assert.ok(water < 0 && grass > water + 0.1, `bottom green − blue: water ${water.toFixed(3)}, grass ${grass.toFixed(3)} (${greenOverBlue.map((v) => v.toFixed(2))})`);
});

test.run();
