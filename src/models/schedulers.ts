// Diffusion samplers as diffusers implements them (0.35): DDIM, Euler (discrete) and DPM-Solver++ (2M), read
// from a diffusers `scheduler_config.json`, and classifier-free guidance. The noise schedule and each step's
// coefficients are computed on the CPU in float64; the step itself is one GPU kernel, a linear combination of
// the sample and the model output whose coefficients travel in a small tensor, so every step reuses one pipeline.

import { Tensor, keep, tidy } from '../engine/tensor.ts';
import { clamp, map } from '../kernels/elementwise.ts';
import { slice } from '../kernels/shape.ts';
import { ConfigReader, type JsonConfig, readFirstJson } from './pretrained.ts';

// ---------------------------------------------------------------- GPU helpers

/** Σ c_k · x_k over same-shaped (or broadcasting) tensors, in one kernel. */
export function linearCombination(terms: readonly (readonly [number, Tensor])[]): Tensor {
  const shape = terms[0]?.[1].shape;
  if (!shape) throw new Error('linearCombination: no terms');
  for (const [, t] of terms) {
    if (t.shape.length !== shape.length || t.shape.some((d, k) => d !== shape[k])) {
      throw new Error(`linearCombination: ${t} does not have the shape of ${terms[0]![1]}`);
    }
  }
  const coefficients = Tensor.fromArray(Float32Array.from(terms, ([c]) => c));
  const inputs: Record<string, Tensor | { tensor: Tensor; raw: true }> = { c: { tensor: coefficients, raw: true } };
  terms.forEach(([, t], k) => (inputs[`x${k}`] = t));
  const out = map('scheduler.combine', terms.map((_, k) => `in_c[${k}] * x${k}`).join(' + '), inputs, { shape });
  coefficients.dispose();
  return out;
}

/**
 * Classifier-free guidance on a batched prediction [2B, ...] whose first half is unconditional (diffusers'
 * order, `noise_pred.chunk(2)`): uncond + scale · (cond − uncond), [B, ...].
 */
export function classifierFreeGuidance(noisePred: Tensor, guidanceScale: number): Tensor {
  const n = noisePred.shape[0] ?? 0;
  if (n % 2 !== 0 || n === 0) throw new Error(`classifierFreeGuidance: the prediction's batch (${n}) must be even: [uncond; cond]`);
  return tidy(() => linearCombination([[1 - guidanceScale, slice(noisePred, 0, 0, n / 2)], [guidanceScale, slice(noisePred, 0, n / 2, n)]]));
}

// ---------------------------------------------------------------- configuration

export type BetaSchedule = 'linear' | 'scaled_linear' | 'squaredcos_cap_v2';
export type PredictionType = 'epsilon' | 'v_prediction' | 'sample';
export type TimestepSpacing = 'leading' | 'trailing' | 'linspace';

/** What every scheduler reads from the config (diffusers' names in snake_case in the JSON). */
export interface NoiseScheduleConfig {
  numTrainTimesteps: number;
  betaStart: number;
  betaEnd: number;
  betaSchedule: BetaSchedule;
  trainedBetas: number[] | undefined;
  predictionType: PredictionType;
  timestepSpacing: TimestepSpacing;
  stepsOffset: number;
  rescaleBetasZeroSnr: boolean;
}

/** Keys a saved diffusers scheduler config always has; a file lacking one is not a scheduler config. */
const REQUIRED_IN_FILES = ['num_train_timesteps', 'beta_start', 'beta_end', 'beta_schedule'];

function noiseScheduleConfig(c: ConfigReader, defaultSpacing: TimestepSpacing): NoiseScheduleConfig {
  return {
    numTrainTimesteps: c.int('num_train_timesteps', 1000, 1),
    betaStart: c.number('beta_start', 0.0001),
    betaEnd: c.number('beta_end', 0.02),
    betaSchedule: c.oneOf('beta_schedule', ['linear', 'scaled_linear', 'squaredcos_cap_v2'], 'linear'),
    trainedBetas: c.numbers('trained_betas'),
    predictionType: c.oneOf('prediction_type', ['epsilon', 'v_prediction', 'sample'], 'epsilon'),
    timestepSpacing: c.oneOf('timestep_spacing', ['leading', 'trailing', 'linspace'], defaultSpacing),
    stepsOffset: c.int('steps_offset', 0),
    rescaleBetasZeroSnr: c.bool('rescale_betas_zero_snr', false),
  };
}

/** ᾱ_t for t = 0..N-1 as diffusers computes them (betas → cumulative product), rounded to float32 as it holds them. */
export function alphasCumprod(c: NoiseScheduleConfig): Float64Array {
  const N = c.numTrainTimesteps;
  let betas: Float64Array;
  if (c.trainedBetas) {
    if (c.trainedBetas.length !== N) throw new Error(`trained_betas has ${c.trainedBetas.length} values, num_train_timesteps is ${N}`);
    betas = Float64Array.from(c.trainedBetas);
  } else if (c.betaSchedule === 'linear') {
    betas = linspace(c.betaStart, c.betaEnd, N);
  } else if (c.betaSchedule === 'scaled_linear') {
    betas = linspace(Math.sqrt(c.betaStart), Math.sqrt(c.betaEnd), N).map((b) => b * b);
  } else {
    // GLIDE's cosine schedule, each beta capped at 0.999
    const alphaBar = (t: number) => Math.cos(((t + 0.008) / 1.008) * (Math.PI / 2)) ** 2;
    betas = Float64Array.from({ length: N }, (_, i) => Math.min(1 - alphaBar((i + 1) / N) / alphaBar(i / N), 0.999));
  }
  betas = betas.map(Math.fround);
  if (c.rescaleBetasZeroSnr) betas = rescaleZeroTerminalSnr(betas);
  const out = new Float64Array(N);
  let prod = 1;
  for (let i = 0; i < N; i++) out[i] = prod = Math.fround(prod * Math.fround(1 - betas[i]!));
  return out;
}

/** Shifts and scales √ᾱ so that the last timestep has zero SNR (Lin et al. 2023), as diffusers' rescale_zero_terminal_snr. */
function rescaleZeroTerminalSnr(betas: Float64Array): Float64Array {
  let prod = 1;
  const sqrtBar = betas.map((b) => Math.sqrt((prod *= 1 - b)));
  const a0 = sqrtBar[0]!;
  const aT = sqrtBar[sqrtBar.length - 1]!;
  const bar = sqrtBar.map((s) => ((s - aT) * (a0 / (a0 - aT))) ** 2);
  return bar.map((b, i) => 1 - (i === 0 ? b : b / bar[i - 1]!));
}

/** numpy.linspace(start, stop, n) (float64; the last value is exactly stop). */
function linspace(start: number, stop: number, n: number): Float64Array {
  const step = n > 1 ? (stop - start) / (n - 1) : 0;
  return Float64Array.from({ length: n }, (_, k) => (k === n - 1 && n > 1 ? stop : start + k * step));
}

/** numpy.round: halves to even. */
function roundHalfEven(x: number): number {
  const r = Math.round(x);
  return Math.abs(x % 1) === 0.5 && r % 2 !== 0 ? r - 1 : r;
}

/** numpy.arange(start, 0, -step) for a positive float step. */
function arangeDown(start: number, step: number): number[] {
  return Array.from({ length: Math.ceil(start / step) }, (_, k) => start - k * step);
}

/** The timestep t's index in `timesteps`; as diffusers, the second match when it occurs twice. */
function indexForTimestep(timesteps: readonly number[], t: number, what: string): number {
  const hits = timesteps.flatMap((v, k) => (v === t ? [k] : []));
  if (hits.length === 0) throw new Error(`${what}: timestep ${t} is not one of this schedule's timesteps [${timesteps.join(', ')}]`);
  return hits.length > 1 ? hits[1]! : hits[0]!;
}

/** σ(t) = √((1 − ᾱ_t)/ᾱ_t) at (fractional) timesteps, interpolated linearly as numpy.interp over the training grid. */
function sigmasAt(ac: Float64Array, timesteps: readonly number[]): number[] {
  const sigma = Array.from(ac, (a) => Math.fround(Math.sqrt(Math.fround((1 - a) / a))));
  return timesteps.map((t) => {
    if (t <= 0) return sigma[0]!;
    if (t >= sigma.length - 1) return sigma[sigma.length - 1]!;
    const i = Math.floor(t);
    return sigma[i]! + (t - i) * (sigma[i + 1]! - sigma[i]!);
  });
}

export interface SchedulerStepOutput {
  /** The sample at the previous (less noisy) timestep. */
  prevSample: Tensor;
  /** The model's estimate of the clean sample x0 at this step. */
  predOriginalSample: Tensor;
}

// ---------------------------------------------------------------- the common part

export abstract class NoiseScheduler {
  readonly config: NoiseScheduleConfig;
  /** The diffusers config object it was made from. */
  readonly json: JsonConfig;
  /** ᾱ_t, t = 0..numTrainTimesteps-1. */
  readonly alphasCumprod: Float64Array;
  /** The sampling timesteps, noisiest first (after `setTimesteps`). */
  timesteps: number[] = [];
  numInferenceSteps = 0;
  protected readonly reader: ConfigReader;

  /**
   * From a diffusers scheduler config object (missing keys take that scheduler's diffusers defaults, whose
   * timestep_spacing is `defaultSpacing`); `source` names it in errors.
   */
  constructor(json: JsonConfig, source: string, defaultSpacing: TimestepSpacing) {
    this.json = json;
    this.reader = new ConfigReader(json, source);
    this.config = noiseScheduleConfig(this.reader, defaultSpacing);
    this.alphasCumprod = alphasCumprod(this.config);
  }

  /** From a diffusers scheduler folder: `scheduler_config.json` or `config.json`. */
  static fromPretrained<S extends NoiseScheduler>(this: new (json: JsonConfig, source: string) => S, dir: string): S {
    const { path, config } = readFirstJson(dir, ['scheduler_config.json', 'config.json']);
    for (const key of REQUIRED_IN_FILES) if (config[key] === undefined) throw new Error(`${path}: missing key "${key}"`);
    return new this(config, path);
  }

  /** Standard deviation of the initial noise (latents = noise · initNoiseSigma). */
  get initNoiseSigma(): number {
    return 1;
  }

  /** The UNet's input at timestep t (a copy; Euler divides by √(σ²+1)). */
  scaleModelInput(sample: Tensor, _t: number): Tensor {
    return sample.alias();
  }

  /** Sets `timesteps` for a run of `numInferenceSteps` steps and resets the sampler's state. */
  setTimesteps(numInferenceSteps: number): void {
    const N = this.config.numTrainTimesteps;
    if (!Number.isInteger(numInferenceSteps) || numInferenceSteps < 1 || numInferenceSteps > N) {
      throw new Error(`${this.constructor.name}.setTimesteps: the number of steps must be an integer in [1, ${N}] (num_train_timesteps), got ${numInferenceSteps}`);
    }
    this.numInferenceSteps = numInferenceSteps;
    this.timesteps = this.computeTimesteps(numInferenceSteps);
  }

  protected abstract computeTimesteps(n: number): number[];

  /** One sampling step from the model output at timestep t: the previous sample and the x0 estimate. */
  abstract stepOutput(modelOutput: Tensor, t: number, sample: Tensor): SchedulerStepOutput;

  /** One sampling step: the sample at the previous timestep. */
  step(modelOutput: Tensor, t: number, sample: Tensor): Tensor {
    const { prevSample, predOriginalSample } = this.stepOutput(modelOutput, t, sample);
    predOriginalSample.dispose();
    return prevSample;
  }

  protected checkStep(modelOutput: Tensor, sample: Tensor): void {
    const op = `${this.constructor.name}.step`;
    if (this.timesteps.length === 0) throw new Error(`${op}: call setTimesteps(n) first`);
    if (modelOutput.shape.length !== sample.shape.length || modelOutput.shape.some((d, k) => d !== sample.shape[k])) {
      throw new Error(`${op}: model output ${modelOutput} and sample ${sample} must have the same shape`);
    }
  }

  /** ε-, v- or x0-prediction → the linear combination giving x0 and the one giving ε, for ᾱ = alpha. */
  protected x0AndEps(alpha: number): { x0: [number, number]; eps: [number, number] } {
    const a = Math.sqrt(alpha);
    const b = Math.sqrt(1 - alpha);
    // coefficients of [sample, modelOutput]
    switch (this.config.predictionType) {
      case 'epsilon': return { x0: [1 / a, -b / a], eps: [0, 1] };
      case 'sample': return { x0: [0, 1], eps: [1 / b, -a / b] };
      case 'v_prediction': return { x0: [a, -b], eps: [b, a] };
    }
  }
}

// ---------------------------------------------------------------- DDIM

/**
 * DDIM (Song et al. 2021), deterministic (eta 0): x0 = (x − √(1−ᾱ_t) ε)/√ᾱ_t, x_prev = √ᾱ_prev x0 + √(1−ᾱ_prev) ε,
 * with prev = t − N/n. Config: set_alpha_to_one, clip_sample / clip_sample_range, steps_offset, timestep_spacing.
 */
export class DDIMScheduler extends NoiseScheduler {
  readonly finalAlphaCumprod: number;
  readonly clipSample: boolean;
  readonly clipSampleRange: number;

  constructor(json: JsonConfig = {}, source = 'scheduler config') {
    super(json, source, 'leading');
    const c = this.reader;
    c.expectDefaults({ thresholding: [false] });
    this.finalAlphaCumprod = c.bool('set_alpha_to_one', true) ? 1 : this.alphasCumprod[0]!;
    this.clipSample = c.bool('clip_sample', true);
    this.clipSampleRange = c.number('clip_sample_range', 1);
  }

  protected computeTimesteps(n: number): number[] {
    const { numTrainTimesteps: N, timestepSpacing, stepsOffset } = this.config;
    switch (timestepSpacing) {
      case 'linspace': return Array.from(linspace(0, N - 1, n), roundHalfEven).reverse();
      case 'leading': return Array.from({ length: n }, (_, k) => (n - 1 - k) * Math.floor(N / n) + stepsOffset);
      case 'trailing': return arangeDown(N, N / n).map((t) => roundHalfEven(t) - 1);
    }
  }

  stepOutput(modelOutput: Tensor, t: number, sample: Tensor): SchedulerStepOutput {
    this.checkStep(modelOutput, sample);
    const N = this.config.numTrainTimesteps;
    if (!Number.isInteger(t) || t < 0 || t >= N) throw new Error(`DDIMScheduler.step: timestep ${t} must be an integer in [0, ${N})`);
    const prevT = t - Math.floor(N / this.numInferenceSteps);
    const alpha = this.alphasCumprod[t]!;
    const alphaPrev = prevT >= 0 ? this.alphasCumprod[prevT]! : this.finalAlphaCumprod;
    const { x0: cx, eps: ce } = this.x0AndEps(alpha);
    return tidy(() => {
      let x0 = linearCombination([[cx[0], sample], [cx[1], modelOutput]]);
      if (this.clipSample) x0 = clamp(x0, -this.clipSampleRange, this.clipSampleRange);
      const eps = linearCombination([[ce[0], sample], [ce[1], modelOutput]]);
      const prevSample = linearCombination([[Math.sqrt(alphaPrev), x0], [Math.sqrt(1 - alphaPrev), eps]]);
      return { prevSample, predOriginalSample: x0 };
    });
  }
}

// ---------------------------------------------------------------- sigma-based samplers

/** Schedulers over σ_t = √((1−ᾱ_t)/ᾱ_t) with a step counter, as diffusers' Euler and DPM-Solver. */
abstract class SigmaScheduler extends NoiseScheduler {
  /** σ per sampling step, plus the final σ (0 or σ_min). */
  sigmas: number[] = [];
  protected stepIndex: number | undefined;
  readonly finalSigmasType: 'zero' | 'sigma_min';

  constructor(json: JsonConfig, source: string) {
    super(json, source, 'linspace');
    this.finalSigmasType = this.reader.oneOf('final_sigmas_type', ['zero', 'sigma_min'], 'zero');
    this.reader.expectDefaults({ use_karras_sigmas: [false], use_exponential_sigmas: [false], use_beta_sigmas: [false], thresholding: [false] });
  }

  override setTimesteps(numInferenceSteps: number): void {
    super.setTimesteps(numInferenceSteps);
    const ac = this.alphasCumprod;
    const last = this.finalSigmasType === 'zero' ? 0 : Math.sqrt((1 - ac[0]!) / ac[0]!);
    this.sigmas = [...sigmasAt(ac, this.timesteps), last].map(Math.fround);
    this.stepIndex = undefined;
  }

  /** The step index for timestep t: found on the first call, then counted (as diffusers' _step_index). */
  protected currentIndex(t: number): number {
    this.stepIndex ??= indexForTimestep(this.timesteps, t, `${this.constructor.name}`);
    if (this.stepIndex >= this.timesteps.length) throw new Error(`${this.constructor.name}.step: all ${this.timesteps.length} steps are done; call setTimesteps again`);
    return this.stepIndex;
  }
}

/**
 * Euler's method on the probability-flow ODE in σ (Karras et al. 2022, "Algorithm 2" without churn), as
 * diffusers' EulerDiscreteScheduler: model input scaled by 1/√(σ²+1), x0 from the prediction, x_next = x + (x − x0)/σ · (σ_next − σ).
 */
export class EulerDiscreteScheduler extends SigmaScheduler {
  constructor(json: JsonConfig = {}, source = 'scheduler config') {
    super(json, source);
    this.reader.expectDefaults({ interpolation_type: ['linear'], timestep_type: ['discrete'] });
  }

  override get initNoiseSigma(): number {
    // Before setTimesteps, the training schedule's largest σ (at the last timestep), as diffusers.
    const ac = this.alphasCumprod[this.alphasCumprod.length - 1]!;
    const max = this.sigmas.length ? Math.max(...this.sigmas) : Math.sqrt((1 - ac) / ac);
    return this.config.timestepSpacing === 'leading' ? Math.sqrt(max * max + 1) : max;
  }

  protected computeTimesteps(n: number): number[] {
    const { numTrainTimesteps: N, timestepSpacing, stepsOffset } = this.config;
    switch (timestepSpacing) {
      case 'linspace': return Array.from(linspace(0, N - 1, n), Math.fround).reverse();
      case 'leading': return Array.from({ length: n }, (_, k) => (n - 1 - k) * Math.floor(N / n) + stepsOffset);
      case 'trailing': return arangeDown(N, N / n).map((t) => roundHalfEven(t) - 1);
    }
  }

  override scaleModelInput(sample: Tensor, t: number): Tensor {
    const sigma = this.sigmas[this.currentIndex(t)]!;
    return linearCombination([[1 / Math.sqrt(sigma * sigma + 1), sample]]);
  }

  stepOutput(modelOutput: Tensor, t: number, sample: Tensor): SchedulerStepOutput {
    this.checkStep(modelOutput, sample);
    const i = this.currentIndex(t);
    const sigma = this.sigmas[i]!;
    const dt = this.sigmas[i + 1]! - sigma;
    // x0 = a·x + b·m; x_next = x + (x − x0)/σ · dt = (1 + (1 − a)dt/σ)·x − (b·dt/σ)·m
    const s = Math.sqrt(sigma * sigma + 1);
    const [a, b] = { epsilon: [1, -sigma], v_prediction: [1 / (s * s), -sigma / s], sample: [0, 1] }[this.config.predictionType];
    this.stepIndex = i + 1;
    return {
      predOriginalSample: linearCombination([[a, sample], [b, modelOutput]]),
      prevSample: linearCombination([[1 + ((1 - a) * dt) / sigma, sample], [(-b * dt) / sigma, modelOutput]]),
    };
  }
}

/**
 * DPM-Solver++ multistep (Lu et al. 2022), first or second order ("2M", midpoint or heun), as diffusers'
 * DPMSolverMultistepScheduler with algorithm_type dpmsolver++: the model output becomes an x0 estimate, and
 * each step combines the last two estimates in λ = log(α/σ). Lower orders at the start and (few steps, or a
 * final σ of 0) at the end. It holds the previous x0 estimate on the GPU between steps, until the last step
 * (or `dispose()`).
 */
export class DPMSolverMultistepScheduler extends SigmaScheduler {
  readonly solverOrder: 1 | 2;
  readonly solverType: 'midpoint' | 'heun';
  readonly lowerOrderFinal: boolean;
  readonly eulerAtFinal: boolean;
  readonly lambdaMinClipped: number;
  #outputs: (Tensor | undefined)[] = [];
  #lowerOrderNums = 0;

  constructor(json: JsonConfig = {}, source = 'scheduler config') {
    super(json, source);
    const c = this.reader;
    c.expectDefaults({ algorithm_type: ['dpmsolver++'], use_lu_lambdas: [false], use_flow_sigmas: [false], variance_type: [] });
    const order = c.int('solver_order', 2, 1);
    if (order > 2) throw new Error(`${source}: "solver_order": ${order} is not supported (1 or 2)`);
    this.solverOrder = order as 1 | 2;
    this.solverType = c.oneOf('solver_type', ['midpoint', 'heun'], 'midpoint');
    this.lowerOrderFinal = c.bool('lower_order_final', true);
    this.eulerAtFinal = c.bool('euler_at_final', false);
    this.lambdaMinClipped = c.number('lambda_min_clipped', -Infinity, { infinite: true });
  }

  protected computeTimesteps(n: number): number[] {
    const { numTrainTimesteps: N, timestepSpacing, stepsOffset } = this.config;
    // λ_t clipping (for cosine schedules) shortens the usable range.
    const lambdas = Array.from(this.alphasCumprod, (a) => 0.5 * Math.log(a) - 0.5 * Math.log(1 - a)).reverse();
    const clipped = lambdas.findIndex((l) => l >= this.lambdaMinClipped);
    const last = N - (clipped < 0 ? N : clipped);
    switch (timestepSpacing) {
      case 'linspace': return Array.from(linspace(0, last - 1, n + 1), roundHalfEven).reverse().slice(0, n);
      case 'leading': return Array.from({ length: n }, (_, k) => (n - k) * Math.floor(last / (n + 1)) + stepsOffset);
      case 'trailing': return arangeDown(last, N / n).map((t) => roundHalfEven(t) - 1);
    }
  }

  override setTimesteps(numInferenceSteps: number): void {
    super.setTimesteps(numInferenceSteps);
    this.dispose();
    this.#outputs = Array(this.solverOrder).fill(undefined);
    this.#lowerOrderNums = 0;
  }

  /** Frees the x0 estimates held between steps. */
  dispose(): void {
    for (const t of this.#outputs) t?.dispose();
    this.#outputs = this.#outputs.map(() => undefined);
  }

  stepOutput(modelOutput: Tensor, t: number, sample: Tensor): SchedulerStepOutput {
    this.checkStep(modelOutput, sample);
    const i = this.currentIndex(t);
    const n = this.timesteps.length;
    const lowerOrderFinal = i === n - 1 && (this.eulerAtFinal || (this.lowerOrderFinal && n < 15) || this.finalSigmasType === 'zero');
    const { alpha, sigma } = alphaSigma(this.sigmas[i]!);
    // x0 from the prediction: coefficients of [sample, modelOutput]
    const [a, b] = { epsilon: [1 / alpha, -sigma / alpha], v_prediction: [alpha, -sigma], sample: [0, 1] }[this.config.predictionType];
    const x0 = keep(linearCombination([[a, sample], [b, modelOutput]]));
    this.#outputs.shift()?.dispose();
    this.#outputs.push(x0);
    const next = alphaSigma(this.sigmas[i + 1]!);
    const lambda = (s: { alpha: number; sigma: number }) => Math.log(s.alpha) - Math.log(s.sigma);
    const h = lambda(next) - lambda({ alpha, sigma });
    const em1 = Math.exp(-h) - 1;
    const ratio = next.sigma / sigma;
    let prevSample: Tensor;
    if (this.solverOrder === 1 || this.#lowerOrderNums < 1 || lowerOrderFinal) {
      prevSample = linearCombination([[ratio, sample], [-next.alpha * em1, x0]]);
    } else {
      const m1 = this.#outputs[this.#outputs.length - 2]!;
      const before = alphaSigma(this.sigmas[i - 1]!);
      const r0 = (lambda({ alpha, sigma }) - lambda(before)) / h;
      // D0 = x0, D1 = (x0 − m1)/r0
      const d1 = this.solverType === 'midpoint' ? -0.5 * next.alpha * em1 : next.alpha * (em1 / h + 1);
      prevSample = linearCombination([[ratio, sample], [-next.alpha * em1 + d1 / r0, x0], [-d1 / r0, m1]]);
    }
    if (this.#lowerOrderNums < this.solverOrder) this.#lowerOrderNums++;
    this.stepIndex = i + 1;
    const predOriginalSample = x0.alias();
    if (i === n - 1) this.dispose(); // the run is over: nothing to hold
    return { prevSample, predOriginalSample };
  }
}

/** α_t = 1/√(σ²+1), σ_t = σ·α_t (variance-preserving form of a σ). */
function alphaSigma(s: number): { alpha: number; sigma: number } {
  const alpha = 1 / Math.sqrt(s * s + 1);
  return { alpha, sigma: s * alpha };
}
