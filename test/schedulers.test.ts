// Schedulers: the DDIM vectors of ../shared/conformance/ddim (diffusers 0.35.2) step by step, and DDIM / Euler /
// DPM-Solver++(2M) against float64 CPU samplers written here from the papers' update rules (Song et al. 2021;
// Karras et al. 2022, Algorithm 2 without churn; Lu et al. 2022, DPM-Solver++(2M), Algorithm 2), on other
// configs: v-prediction, trailing / linspace spacing, linear betas. Timestep lists are derived by hand from
// diffusers' spacing rules (comments show the arithmetic).
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { assertClose, assertTensorClose, conformance, conformanceDir, randomArray } from './helpers.ts';
import { Tensor, memoryStats } from '../src/engine/tensor.ts';
import {
  DDIMScheduler, DPMSolverMultistepScheduler, EulerDiscreteScheduler, type NoiseScheduler, classifierFreeGuidance,
} from '../src/models/schedulers.ts';

const fs = process.getBuiltinModule('node:fs');
const os = process.getBuiltinModule('node:os');
const path = process.getBuiltinModule('node:path');

const io = conformance('ddim');
const DDIM_TOL = 2e-3; // ddim/README.md

/**
 * The conformance DDIM run, with the (guided) noise prediction at step i given by `predict` (here the recorded
 * one; with the UNet, the CFG-combined UNet output on [x, x] and [uncond, cond]). `chained`: each step starts
 * from our own previous latents instead of the reference's. Returns the worst |ours - ref| / (1 + |ref|).
 */
async function ddimConformanceRun(predict: (x: Tensor, t: number, i: number) => Tensor, { chained }: { chained: boolean }): Promise<number> {
  const scheduler = DDIMScheduler.fromPretrained(`${conformanceDir}/ddim`);
  scheduler.setTimesteps(4);
  let x = io.get('init_latents');
  let worst = 0;
  for (const [i, t] of scheduler.timesteps.entries()) {
    const eps = predict(x, t, i);
    const { prevSample, predOriginalSample } = scheduler.stepOutput(eps, t, x);
    for (const [ours, name] of [[predOriginalSample, 'pred_original_sample'], [prevSample, 'latents']] as const) {
      const ref = io.get(`step${i}.${name}`);
      await assertTensorClose(ours, ref, DDIM_TOL, `step ${i} (t ${t}) ${name}`);
      worst = Math.max(worst, relErr(await ours.toArray(), await ref.toArray()));
    }
    x.dispose();
    eps.dispose();
    predOriginalSample.dispose();
    x = chained ? prevSample : io.get(`step${i}.latents`);
  }
  return worst;
}

function relErr(a: ArrayLike<number>, b: ArrayLike<number>): number {
  let w = 0;
  for (let k = 0; k < b.length; k++) w = Math.max(w, Math.abs(a[k]! - b[k]!) / (1 + Math.abs(b[k]!)));
  return w;
}

test('ddim: config, timesteps and alphas_cumprod match diffusers', async () => {
  const s = DDIMScheduler.fromPretrained(`${conformanceDir}/ddim`);
  s.setTimesteps(4);
  assert.equal(s.timesteps, Array.from(await io.get('timesteps').toArray()));
  assert.equal(s.timesteps, [751, 501, 251, 1]);
  assertClose(s.alphasCumprod, await io.get('alphas_cumprod').toArray(), 1e-6, 'alphas_cumprod');
  assert.is(s.finalAlphaCumprod, s.alphasCumprod[0]); // set_alpha_to_one false
  assert.is(s.initNoiseSigma, 1);
});

test('ddim: every step from the recorded guided noise prediction (x0 and latents)', async () => {
  const worst = await ddimConformanceRun((_x, _t, i) => io.get(`step${i}.noise_pred`), { chained: false });
  assert.ok(worst < 1e-5, `worst relative error ${worst}`);
});

test('ddim: the four steps chained from init_latents', async () => {
  const worst = await ddimConformanceRun((_x, _t, i) => io.get(`step${i}.noise_pred`), { chained: true });
  assert.ok(worst < 1e-5, `worst relative error ${worst}`);
});

test('classifier-free guidance: uncond + s (cond - uncond) on a [uncond; cond] batch', async () => {
  const u = randomArray(2 * 3 * 4, 1);
  const c = randomArray(2 * 3 * 4, 2);
  const batch = Tensor.fromArray(Float32Array.from([...u, ...c]), [4, 3, 2, 2]);
  const g = classifierFreeGuidance(batch, 7.5);
  assert.equal([...g.shape], [2, 3, 2, 2]);
  assertClose(await g.toArray(), Array.from(u, (v, k) => v + 7.5 * (c[k]! - v)), 1e-6, 'guided');
  assert.throws(() => classifierFreeGuidance(Tensor.zeros([3, 2]), 2), /batch \(3\) must be even/);
});

// ---------------------------------------------------------------- float64 CPU references

interface Schedule { betaSchedule: 'linear' | 'scaled_linear'; betaStart: number; betaEnd: number }

/** ᾱ_t = Π (1 − β_s), β linear in t (or in √β for scaled_linear), float64. */
function cpuAlphasCumprod({ betaSchedule, betaStart, betaEnd }: Schedule, N = 1000): number[] {
  const out: number[] = [];
  let prod = 1;
  for (let t = 0; t < N; t++) {
    const beta = betaSchedule === 'linear'
      ? betaStart + ((betaEnd - betaStart) * t) / (N - 1)
      : (Math.sqrt(betaStart) + ((Math.sqrt(betaEnd) - Math.sqrt(betaStart)) * t) / (N - 1)) ** 2;
    out.push((prod *= 1 - beta));
  }
  return out;
}

/** ᾱ at a fractional timestep through σ = √((1−ᾱ)/ᾱ) interpolated linearly (what the σ-samplers use). */
function sigmaAt(ac: number[], t: number): number {
  const s = (k: number) => Math.sqrt((1 - ac[k]!) / ac[k]!);
  const i = Math.floor(t);
  return i === t ? s(i) : s(i) + (t - i) * (s(i + 1) - s(i));
}

const SD = { betaSchedule: 'scaled_linear', betaStart: 0.00085, betaEnd: 0.012 } as const;
const SHAPE = [1, 4, 3, 5];
const SIZE = 60;

/** Runs `scheduler` over its timesteps with model outputs that are fixed random arrays; returns each step's sample. */
async function gpuRun(s: NoiseScheduler, x0: Float32Array, outputs: Float32Array[]): Promise<{ samples: Float32Array[]; inputs: Float32Array[] }> {
  let x = Tensor.fromArray(x0, SHAPE);
  const samples: Float32Array[] = [];
  const inputs: Float32Array[] = [];
  for (const [i, t] of s.timesteps.entries()) {
    const scaled = s.scaleModelInput(x, t);
    inputs.push((await scaled.toArray()) as Float32Array);
    const m = Tensor.fromArray(outputs[i]!, SHAPE);
    const next = s.step(m, t, x);
    scaled.dispose();
    m.dispose();
    x.dispose();
    x = next;
    samples.push((await x.toArray()) as Float32Array);
  }
  x.dispose();
  return { samples, inputs };
}

function outputsFor(n: number, seed: number): Float32Array[] {
  return Array.from({ length: n }, (_, i) => randomArray(SIZE, seed + i));
}

test('ddim: v_prediction, trailing spacing, clip_sample vs the DDIM update in float64', async () => {
  const s = new DDIMScheduler({
    beta_schedule: 'scaled_linear', beta_start: 0.00085, beta_end: 0.012, prediction_type: 'v_prediction',
    timestep_spacing: 'trailing', clip_sample: true, clip_sample_range: 1.5, set_alpha_to_one: true,
  });
  s.setTimesteps(3);
  assert.equal(s.timesteps, [999, 666, 332]); // round(arange(1000, 0, -333.33)) - 1 = [1000, 667, 333] - 1
  const ac = cpuAlphasCumprod(SD);
  const x0 = randomArray(SIZE, 9, -3, 3);
  const outs = outputsFor(3, 10);
  const { samples } = await gpuRun(s, x0, outs);
  let x = Array.from(x0);
  for (const [i, t] of s.timesteps.entries()) {
    const prev = t - Math.floor(1000 / 3);
    const a = ac[t]!;
    const ap = prev >= 0 ? ac[prev]! : 1;
    const v = outs[i]!;
    const pred = x.map((xv, k) => Math.min(1.5, Math.max(-1.5, Math.sqrt(a) * xv - Math.sqrt(1 - a) * v[k]!)));
    const eps = x.map((xv, k) => Math.sqrt(a) * v[k]! + Math.sqrt(1 - a) * xv);
    x = pred.map((p, k) => Math.sqrt(ap) * p + Math.sqrt(1 - ap) * eps[k]!);
    assertClose(samples[i]!, x, 1e-4, `step ${i}`);
  }
});

/** Karras et al. 2022 Algorithm 2 (no churn) in σ, with the input scaling 1/√(σ²+1) of the VP-trained model. */
function cpuEuler(sigmas: number[], x0: Float32Array, outs: Float32Array[], prediction: 'epsilon' | 'v_prediction') {
  let x = Array.from(x0);
  const samples: number[][] = [];
  const inputs: number[][] = [];
  for (let i = 0; i < sigmas.length - 1; i++) {
    const s = sigmas[i]!;
    inputs.push(x.map((v) => v / Math.sqrt(s * s + 1)));
    const m = outs[i]!;
    // denoised D(x; σ): ε-prediction x − σ ε; v-prediction (v = α ε − σ_vp x0 on the VP sample α x)
    const denoised = x.map((v, k) => (prediction === 'epsilon' ? v - s * m[k]! : v / (s * s + 1) - (s / Math.sqrt(s * s + 1)) * m[k]!));
    x = x.map((v, k) => v + ((v - denoised[k]!) / s) * (sigmas[i + 1]! - s));
    samples.push(x);
  }
  return { samples, inputs };
}

test('euler: epsilon, linspace spacing (SD config) vs Karras Algorithm 2 in float64; input scaling; init sigma', async () => {
  const s = new EulerDiscreteScheduler({ beta_schedule: 'scaled_linear', beta_start: 0.00085, beta_end: 0.012, timestep_spacing: 'linspace' });
  s.setTimesteps(7);
  // linspace(0, 999, 7) = 0, 166.5, 333, …, reversed (float, not rounded)
  assert.equal(s.timesteps, [999, 832.5, 666, 499.5, 333, 166.5, 0]);
  const ac = cpuAlphasCumprod(SD);
  const sigmas = [...s.timesteps.map((t) => sigmaAt(ac, t)), 0];
  assertClose(s.sigmas, sigmas, 1e-5, 'sigmas');
  assert.ok(Math.abs(s.initNoiseSigma - sigmas[0]!) < 1e-4 * sigmas[0]!, 'linspace: init_noise_sigma = σ_max');
  const x0 = randomArray(SIZE, 20, -14, 14);
  const outs = outputsFor(7, 21);
  const gpu = await gpuRun(s, x0, outs);
  const cpu = cpuEuler(sigmas, x0, outs, 'epsilon');
  for (let i = 0; i < 7; i++) {
    assertClose(gpu.inputs[i]!, cpu.inputs[i]!, 1e-4, `scaled input ${i}`);
    assertClose(gpu.samples[i]!, cpu.samples[i]!, 1e-4, `step ${i}`);
  }
});

test('euler: v_prediction, trailing spacing, linear betas; leading spacing init sigma', async () => {
  const lin = { betaSchedule: 'linear', betaStart: 0.0001, betaEnd: 0.02 } as const;
  const s = new EulerDiscreteScheduler({ beta_schedule: 'linear', beta_start: 0.0001, beta_end: 0.02, timestep_spacing: 'trailing', prediction_type: 'v_prediction' });
  s.setTimesteps(4);
  assert.equal(s.timesteps, [999, 749, 499, 249]); // arange(1000, 0, -250) - 1
  const ac = cpuAlphasCumprod(lin);
  const sigmas = [...s.timesteps.map((t) => sigmaAt(ac, t)), 0];
  const x0 = randomArray(SIZE, 30, -5, 5);
  const outs = outputsFor(4, 31);
  const gpu = await gpuRun(s, x0, outs);
  const cpu = cpuEuler(sigmas, x0, outs, 'v_prediction');
  for (let i = 0; i < 4; i++) assertClose(gpu.samples[i]!, cpu.samples[i]!, 1e-4, `step ${i}`);

  const leading = new EulerDiscreteScheduler({ beta_schedule: 'scaled_linear', beta_start: 0.00085, beta_end: 0.012, timestep_spacing: 'leading', steps_offset: 1 });
  const s999 = sigmaAt(cpuAlphasCumprod(SD), 999);
  assert.ok(Math.abs(leading.initNoiseSigma - Math.sqrt(s999 * s999 + 1)) < 1e-4, 'before setTimesteps: from the training σ_max');
  leading.setTimesteps(4);
  assert.equal(leading.timesteps, [751, 501, 251, 1]); // arange(4) * (1000 // 4), reversed, + 1
  const smax = sigmaAt(cpuAlphasCumprod(SD), 751);
  assert.ok(Math.abs(leading.initNoiseSigma - Math.sqrt(smax * smax + 1)) < 1e-4, 'leading: init_noise_sigma = √(σ_max² + 1)');
});

/**
 * DPM-Solver++(2M) (Lu et al. 2022, Algorithm 2) in the VP notation α_t = √ᾱ_t, σ_t = √(1−ᾱ_t), λ = log(α/σ):
 * first step first order, then D = (1 + 1/(2r)) x0_i − 1/(2r) x0_{i−1}, r = h_{i−1}/h_i,
 * x_i = (σ_i/σ_{i−1}) x_{i−1} − α_i (e^{−h_i} − 1) D. The last step, to σ = 0, returns the x0 estimate
 * (first order, as diffusers does with a final σ of 0).
 */
function cpuDpmSolver2M(ac: number[], timesteps: number[], x0: Float32Array, outs: Float32Array[], prediction: 'epsilon' | 'v_prediction') {
  let x = Array.from(x0);
  const alpha = (t: number) => Math.sqrt(ac[t]!);
  const sigma = (t: number) => Math.sqrt(1 - ac[t]!);
  const lambda = (t: number) => Math.log(alpha(t) / sigma(t));
  const samples: number[][] = [];
  let prevX0: number[] | undefined;
  for (let i = 0; i < timesteps.length; i++) {
    const t = timesteps[i]!;
    const m = outs[i]!;
    // DPM-Solver works on the VP sample itself (initial noise sigma 1, no input scaling)
    const est = x.map((v, k) => (prediction === 'epsilon' ? (v - sigma(t) * m[k]!) / alpha(t) : alpha(t) * v - sigma(t) * m[k]!));
    if (i === timesteps.length - 1) {
      x = est;
    } else {
      const tn = timesteps[i + 1]!;
      const h = lambda(tn) - lambda(t);
      let D = est;
      if (prevX0) {
        const r = (lambda(t) - lambda(timesteps[i - 1]!)) / h;
        D = est.map((e, k) => (1 + 1 / (2 * r)) * e - (1 / (2 * r)) * prevX0![k]!);
      }
      x = x.map((v, k) => (sigma(tn) / sigma(t)) * v - alpha(tn) * (Math.exp(-h) - 1) * D[k]!);
    }
    prevX0 = est;
    samples.push(x);
  }
  return samples;
}

test('dpm-solver++ 2M: epsilon, linspace spacing (SD config) vs Lu et al. Algorithm 2 in float64', async () => {
  const s = new DPMSolverMultistepScheduler({ beta_schedule: 'scaled_linear', beta_start: 0.00085, beta_end: 0.012, timestep_spacing: 'linspace' });
  s.setTimesteps(4);
  // linspace(0, 999, 5) = [0, 249.75, 499.5, 749.25, 999] rounded half-even, reversed, last dropped
  assert.equal(s.timesteps, [999, 749, 500, 250]);
  assert.is(s.initNoiseSigma, 1);
  const before = memoryStats().liveBytes;
  const x0 = randomArray(SIZE, 40, -3, 3);
  const outs = outputsFor(4, 41);
  const gpu = await gpuRun(s, x0, outs);
  const cpu = cpuDpmSolver2M(cpuAlphasCumprod(SD), s.timesteps, x0, outs, 'epsilon');
  for (let i = 0; i < 4; i++) assertClose(gpu.samples[i]!, cpu[i]!, 1e-4, `step ${i}`);
  assert.is(memoryStats().liveBytes, before, 'the held x0 estimates are freed after the last step');
});

test('dpm-solver++ 2M: v_prediction, leading and trailing spacing, linear betas', async () => {
  const lin = { betaSchedule: 'linear', betaStart: 0.0001, betaEnd: 0.02 } as const;
  const s = new DPMSolverMultistepScheduler({ beta_schedule: 'linear', beta_start: 0.0001, beta_end: 0.02, timestep_spacing: 'leading', steps_offset: 1, prediction_type: 'v_prediction' });
  s.setTimesteps(4);
  assert.equal(s.timesteps, [801, 601, 401, 201]); // arange(5) * (1000 // 5), reversed, last dropped, + 1
  const x0 = randomArray(SIZE, 50, -3, 3);
  const outs = outputsFor(4, 51);
  const gpu = await gpuRun(s, x0, outs);
  const cpu = cpuDpmSolver2M(cpuAlphasCumprod(lin), s.timesteps, x0, outs, 'v_prediction');
  for (let i = 0; i < 4; i++) assertClose(gpu.samples[i]!, cpu[i]!, 1e-4, `leading step ${i}`);
  s.dispose();

  const tr = new DPMSolverMultistepScheduler({ beta_schedule: 'scaled_linear', beta_start: 0.00085, beta_end: 0.012, timestep_spacing: 'trailing' });
  tr.setTimesteps(5);
  assert.equal(tr.timesteps, [999, 799, 599, 399, 199]); // arange(1000, 0, -200) - 1
  const outs5 = outputsFor(5, 61);
  const gpu5 = await gpuRun(tr, x0, outs5);
  const cpu5 = cpuDpmSolver2M(cpuAlphasCumprod(SD), tr.timesteps, x0, outs5, 'epsilon');
  for (let i = 0; i < 5; i++) assertClose(gpu5.samples[i]!, cpu5[i]!, 1e-4, `trailing step ${i}`);
  tr.dispose();
});

// ---------------------------------------------------------------- bad input

function schedulerFolder(config: object, name = 'scheduler_config.json'): string {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'freemask-scheduler-'));
  fs.writeFileSync(`${dir}/${name}`, JSON.stringify(config));
  return dir;
}

test('schedulers: bad configs and calls are named', () => {
  const full = JSON.parse(fs.readFileSync(`${conformanceDir}/ddim/config.json`, 'utf8'));
  const { beta_schedule: _b, ...noSchedule } = full;
  const missing = schedulerFolder(noSchedule);
  assert.throws(() => DDIMScheduler.fromPretrained(missing), new RegExp(`${missing}/scheduler_config\\.json: missing key "beta_schedule"`));
  assert.throws(() => DDIMScheduler.fromPretrained(schedulerFolder({ ...full, beta_schedule: 'sigmoid' })), /"beta_schedule" must be one of "linear", "scaled_linear", "squaredcos_cap_v2", got "sigmoid"/);
  assert.throws(() => EulerDiscreteScheduler.fromPretrained(schedulerFolder({ ...full, use_karras_sigmas: true })), /"use_karras_sigmas": true is not supported/);
  assert.throws(() => DPMSolverMultistepScheduler.fromPretrained(schedulerFolder({ ...full, algorithm_type: 'sde-dpmsolver++' })), /"algorithm_type": "sde-dpmsolver\+\+" is not supported/);
  assert.throws(() => DPMSolverMultistepScheduler.fromPretrained(schedulerFolder({ ...full, solver_order: 3 })), /"solver_order": 3 is not supported/);
  assert.throws(() => DDIMScheduler.fromPretrained(fs.mkdtempSync(path.join(os.tmpdir(), 'freemask-scheduler-'))), /has no scheduler_config\.json or config\.json/);
  // config.json is read too; Python's -Infinity is accepted
  const dpmDir = schedulerFolder({ ...full, lambda_min_clipped: 0 }, 'config.json');
  fs.writeFileSync(`${dpmDir}/config.json`, fs.readFileSync(`${dpmDir}/config.json`, 'utf8').replace('"lambda_min_clipped":0', '"lambda_min_clipped": -Infinity'));
  assert.is(DPMSolverMultistepScheduler.fromPretrained(dpmDir).lambdaMinClipped, -Infinity);

  const s = new DDIMScheduler(full);
  const x = Tensor.zeros([1, 4, 2, 2]);
  assert.throws(() => s.step(x, 751, x), /call setTimesteps\(n\) first/);
  assert.throws(() => s.setTimesteps(1001), /must be an integer in \[1, 1000\]/);
  s.setTimesteps(4);
  assert.throws(() => s.step(Tensor.zeros([1, 4, 2, 3]), 751, x), /must have the same shape/);
  assert.throws(() => s.step(x, 1000, x), /timestep 1000 must be an integer in \[0, 1000\)/);
  const e = new EulerDiscreteScheduler(full);
  e.setTimesteps(4);
  assert.throws(() => e.step(x, 500, x), /timestep 500 is not one of this schedule's timesteps \[751, 501, 251, 1\]/);
});

test.run();
