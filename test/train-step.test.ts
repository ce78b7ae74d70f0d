// One whole training step of a diffusers-shaped UNet (issue 13's workload, shrunk): the loss's gradient with
// respect to every parameter at once against central finite differences along random directions, every
// updated parameter against a float64 CPU AdamW on the read-back gradients, and the same bytes when the step is
// repeated from the same state. The kernels the training step rewrote (products with run-time sizes, conv
// gathers, reductions, the optimizer) are all on this path.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { randomArray, randomParameters } from './helpers.ts';
import { backward, noGrad } from '../src/engine/autograd.ts';
import { Tensor, tidy } from '../src/engine/tensor.ts';
import { mul } from '../src/kernels/elementwise.ts';
import { mseLoss } from '../src/kernels/loss.ts';
import { sum } from '../src/kernels/reduce.ts';
import { ConfigReader } from '../src/models/pretrained.ts';
import { UNet2DConditionModel, unetConfig } from '../src/models/unet_2d_condition.ts';
import { AdamW } from '../src/optim/adamw.ts';

const config = {
  block_out_channels: [16, 32], down_block_types: ['CrossAttnDownBlock2D', 'CrossAttnDownBlock2D'], up_block_types: ['CrossAttnUpBlock2D', 'CrossAttnUpBlock2D'],
  layers_per_block: 1, attention_head_dim: 2, cross_attention_dim: 8, norm_num_groups: 4,
};
const B = 2;
const sample = Tensor.fromArray(randomArray(B * 4 * 8 * 8, 1), [B, 4, 8, 8]);
const text = Tensor.fromArray(randomArray(B * 5 * 8, 2), [B, 5, 8]);
const target = Tensor.fromArray(randomArray(B * 4 * 8 * 8, 3), [B, 4, 8, 8]);
const timesteps = [10, 700];

/** The UNet with seeded random weights (many start as zeros or ones), trainable. */
function model(): UNet2DConditionModel {
  const unet = new UNet2DConditionModel(unetConfig(new ConfigReader(config, 'train-step test'))).requireGrad();
  randomParameters(unet, 100, 0.3, 1.2);
  return unet.train();
}

const lossOf = (unet: UNet2DConditionModel) => tidy(() => mseLoss(unet.forward(sample, timesteps, text), target));
// for the finite differences: a fixed random projection of the prediction, whose gradient reaches the
// parameters at O(1) scale (the MSE's is small near this random init, below f32 differencing noise)
const projection = Tensor.fromArray(randomArray(B * 4 * 8 * 8, 4), [B, 4, 8, 8]);
const projected = (unet: UNet2DConditionModel) => tidy(() => sum(mul(unet.forward(sample, timesteps, text), projection)));

async function values(ts: Tensor[]): Promise<Float32Array[]> {
  return Promise.all(ts.map(async (t) => (await t.toArray()) as Float32Array));
}

test('UNet training step: the gradients of the convolution, linear and 1-D parameters along random directions match central differences', async () => {
  const unet = model();
  const params = unet.parameters();
  const loss = projected(unet);
  backward(loss);
  const grads = await values(params.map((p) => p.grad!));
  const start = await values(params);
  const errors: string[] = [];
  // per kind of parameter (a wrong kernel shows in its own group): L(θ + εd) − L(θ − εd) over 2ε against
  // ∇L·d, d random over the group's parameters (scaled like the values), zero elsewhere
  for (const [kind, rank] of [['conv', 4], ['linear', 2], ['1-D', 1]] as const) {
    const members = params.flatMap((p, k) => (p.rank === rank ? [k] : []));
    assert.ok(members.length > 0, `${kind} parameters exist`);
    for (const seed of [7, 8]) {
      const eps = 1e-2;
      const dirs = new Map(members.map((k) => [k, randomArray(params[k]!.size, seed * 1000 + k).map((r, i) => r * (Math.abs(start[k]![i]!) + 0.05))]));
      const at = async (s: number) => {
        for (const [k, d] of dirs) params[k]!.copyFrom(Tensor.fromArray(start[k]!.map((v, i) => v + s * d[i]!), params[k]!.shape));
        return noGrad(() => projected(unet)).item();
      };
      const numeric = ((await at(eps)) - (await at(-eps))) / (2 * eps);
      for (const k of members) params[k]!.copyFrom(Tensor.fromArray(start[k]!, params[k]!.shape));
      let analytic = 0;
      for (const [k, d] of dirs) grads[k]!.forEach((g, i) => (analytic += g * d[i]!));
      const rel = Math.abs(numeric - analytic) / Math.abs(analytic);
      errors.push(`${kind} ${rel.toExponential(1)}`);
      assert.ok(rel < 2e-3, `${kind}, direction ${seed}: ∇L·d ${analytic.toExponential(5)}, finite difference ${numeric.toExponential(5)} (relative error ${rel.toExponential(2)})`);
    }
  }
  console.log(`UNet step: relative error of ∇L·d against central differences: ${errors.join(', ')}`);
  loss.dispose();
  unet.dispose();
});

test('UNet training step: three AdamW steps update every parameter as a float64 CPU AdamW, and repeated steps give the same bytes', async () => {
  const [lr, [beta1, beta2], eps, wd] = [1e-3, [0.9, 0.999], 1e-8, 0.01];
  const run = async () => {
    const unet = model();
    const params = unet.parameters();
    const opt = new AdamW(params, { lr, betas: [beta1, beta2], eps, weightDecay: wd });
    const steps: { before: Float32Array[]; grads: Float32Array[]; after: Float32Array[] }[] = [];
    for (let t = 0; t < 3; t++) {
      const loss = lossOf(unet);
      backward(loss);
      const before = await values(params);
      const grads = await values(params.map((p) => p.grad!));
      opt.step();
      opt.zeroGrad();
      loss.dispose();
      steps.push({ before, grads, after: await values(params) });
    }
    opt.dispose();
    unet.dispose();
    return steps;
  };
  const first = await run();
  // torch.optim.AdamW in float64 from the GPU's own parameters and gradients at each step
  const m = first[0]!.before.map((p) => new Float64Array(p.length));
  const v = first[0]!.before.map((p) => new Float64Array(p.length));
  let worst = 0;
  first.forEach(({ before, grads, after }, step) => {
    const t = step + 1;
    before.forEach((p, k) => p.forEach((x, i) => {
      const g = grads[k]![i]!;
      m[k]![i] = beta1 * m[k]![i]! + (1 - beta1) * g;
      v[k]![i] = beta2 * v[k]![i]! + (1 - beta2) * g * g;
      const expected = x * (1 - lr * wd) - (lr / (1 - beta1 ** t)) * m[k]![i]! / (Math.sqrt(v[k]![i]!) / Math.sqrt(1 - beta2 ** t) + eps);
      worst = Math.max(worst, Math.abs(after[k]![i]! - expected) / (Math.abs(expected) + 1e-3));
    }));
  });
  assert.ok(worst < 1e-5, `largest relative difference of an updated parameter from CPU AdamW over 3 steps: ${worst.toExponential(2)}`);
  const again = await run();
  again.forEach((s, t) => s.after.forEach((p, k) => assert.equal(new Uint8Array(p.buffer), new Uint8Array(first[t]!.after[k]!.buffer), `step ${t + 1}, parameter ${k}: same bytes`)));
});

test.run();
