// The optimizer base: parameter groups (PyTorch's param_groups), per-parameter state, optional global-norm
// gradient clipping, and a state dict that round-trips through safetensors so training resumes exactly.
//
// Fused (the default): the parameters are moved into one flat buffer (each a view at an aligned offset; the
// module keeps the same tensor objects), their state lives in flat buffers of the same layout, and each step
// copies the gradients into a flat gradient buffer (copy commands, no kernels) and updates every parameter of
// a group in one dispatch, the clipping factor computed in the same kernel from the norm of the flat gradient.
// A step of a 286-parameter UNet is then 3 dispatches instead of 286 updates plus a norm per parameter.
// `fused: false` updates parameter by parameter (PyTorch's for-loop path) with the same kernel, so both give
// the same bits; it needs no flat gradient copy.
//
// Hyperparameters reach the kernel through a small tensor rather than WGSL constants, and the range through a
// u32Constant, so a new learning rate, step or size compiles nothing: one pipeline per update rule.

import { grid1d, launch, workgroupSize } from '../engine/kernel.ts';
import { device } from '../engine/device.ts';
import { Tensor, f32Bits, keep, shapeStr, tidy, u32Constant } from '../engine/tensor.ts';
import { copyEncoder } from '../engine/queue.ts';
import { noGrad } from '../engine/autograd.ts';
import { mul, sqrt } from '../kernels/elementwise.ts';
import { sum } from '../kernels/reduce.ts';
import { concat, reshape } from '../kernels/shape.ts';
import { SafetensorsReader } from '../io/safetensors.ts';

/** One parameter's state: updates applied so far and named state tensors (momentum_buffer, exp_avg…). */
export interface ParamState {
  step: number;
  tensors: Map<string, Tensor>;
}

/**
 * An optimizer's state as safetensors content: `tensors` named `state.<param index>.<name>` (the optimizer's
 * own tensors, not copies: save them, do not dispose them) and `metadata` holding the optimizer kind,
 * hyperparameters of every group and step counts. `saveSafetensors(path, sd.tensors, sd.metadata)` stores it.
 */
export interface OptimizerStateDict {
  tensors: Record<string, Tensor>;
  metadata: Record<string, string>;
}

export interface BaseOptions {
  lr: number;
}

/** A parameter group as passed to the constructor: its parameters and the options it overrides. */
export type ParamGroupSpec<O> = { params: Iterable<Tensor> } & Partial<O>;

export interface ParamGroup<O> {
  readonly params: readonly Tensor[];
  /** This group's hyperparameters, read at every step: change them between steps (e.g. a schedule's lr). */
  readonly options: O;
}

export interface StepOptions {
  /**
   * Scales every gradient by min(1, maxGradNorm / (‖g‖ + 1e-6)) before the update, ‖g‖ the 2-norm of all
   * gradients of all groups together (torch.nn.utils.clip_grad_norm_). Infinity measures without clipping.
   * `step` then returns ‖g‖ as a [1] tensor (not read back; the caller disposes it). When ‖g‖ is not finite,
   * no parameter or state changes (the step counts still advance: stop, or resume from a checkpoint).
   */
  maxGradNorm?: number;
}

/** How an update rule runs at one step: WGSL reading `g` (the clipped gradient) and hp[k], updating `param[k]` and state tensors at k. */
export interface UpdateRule {
  name: string;
  hp: number[];
  state: readonly string[];
  body: string;
}

export interface FusedOption {
  /** Pack parameters and update each group in one dispatch (default true); false updates one parameter at a time. */
  fused?: boolean;
}

interface Slot {
  group: number;
  offset: number;
}

export abstract class Optimizer<O extends BaseOptions = BaseOptions> {
  readonly params: readonly Tensor[];
  readonly groups: readonly ParamGroup<O>[];
  /** The defaults, which groups override. */
  readonly options: O;
  readonly fused: boolean;
  protected readonly state: ParamState[];
  #slots: Slot[] = [];
  #flatSize = 0;
  #flat: Map<string, Tensor> = new Map();

  constructor(params: Iterable<Tensor> | ParamGroupSpec<O>[], options: O & FusedOption) {
    const { fused = true, ...defaults } = options;
    const list = [...params];
    const specs: ParamGroupSpec<O>[] = list.length > 0 && !(list[0] instanceof Tensor) ? (list as ParamGroupSpec<O>[]) : [{ params: list as Tensor[] } as unknown as ParamGroupSpec<O>];
    this.options = { ...(defaults as unknown as O) };
    this.groups = specs.map(({ params: ps, ...overrides }) => ({ params: [...ps], options: { ...this.options, ...(overrides as unknown as Partial<O>) } }));
    this.params = this.groups.flatMap((g) => g.params);
    if (this.params.length === 0) throw new Error(`${this.constructor.name}: no parameters to optimize`);
    if (new Set(this.params).size !== this.params.length) throw new Error(`${this.constructor.name}: a parameter is listed twice`);
    for (const p of this.params) {
      if (p.dtype !== 'f32' || !p.requiresGrad) throw new Error(`${this.constructor.name}: parameters must be f32 tensors with requiresGrad, got ${p}`);
    }
    this.fused = fused;
    this.state = this.params.map(() => ({ step: 0, tensors: new Map() }));
    if (fused) {
      // each parameter starts at an offset kernels can bind (16 B on lavapipe, 256 B in browsers)
      const align = device().limits.minStorageBufferOffsetAlignment / 4;
      let offset = 0;
      this.groups.forEach((g, group) => {
        for (const p of g.params) {
          this.#slots.push({ group, offset });
          offset += Math.ceil(Math.max(p.size, 1) / align) * align;
        }
      });
      this.#flatSize = offset;
      this.#pack();
    }
  }

  /**
   * Fused optimizers: the flat buffer that holds every parameter (after the last step; parameters another
   * optimizer took since then are moved back at the next step) and each parameter's element offset in it.
   */
  get packed(): { flat: Tensor; offsets: readonly number[] } | undefined {
    if (!this.fused) return undefined;
    this.#pack();
    return { flat: this.#flatTensor('param'), offsets: this.#slots.map((s) => s.offset) };
  }

  /** The learning rate of the first group; setting it sets every group's. */
  get lr(): number {
    return this.groups[0]!.options.lr;
  }
  set lr(v: number) {
    for (const g of this.groups) g.options.lr = v;
  }

  /** Names of the state tensors this optimizer keeps per parameter (PyTorch's names). */
  protected abstract readonly stateNames: readonly string[];

  /** The update of a parameter of a group with `options` whose state counts `step` updates (this one included). */
  protected abstract rule(options: O, step: number): UpdateRule;

  /** A flat buffer of the packed layout (zeros when created; padding stays zero). */
  #flatTensor(name: string): Tensor {
    let t = this.#flat.get(name);
    if (!t) this.#flat.set(name, (t = keep(Tensor.zeros([this.#flatSize]))));
    return t;
  }

  #view(name: string, i: number): Tensor {
    return keep(this.#flatTensor(name).view(this.#slots[i]!.offset * 4, this.params[i]!.shape));
  }

  /** Moves every parameter not already there into its slot of the flat parameter buffer. */
  #pack(): void {
    const flat = this.#flatTensor('param');
    this.params.forEach((p, i) => {
      if (p.buffer === flat.buffer && p.byteOffset === flat.byteOffset + this.#slots[i]!.offset * 4) return;
      const slot = this.#view('param', i);
      p.moveInto(slot);
      slot.dispose();
    });
  }

  /** Applies one update to every parameter that has a gradient (others are left untouched, as in PyTorch). */
  step({ maxGradNorm }: StepOptions = {}): Tensor | undefined {
    if (maxGradNorm !== undefined && !(maxGradNorm > 0)) throw new Error(`${this.constructor.name}.step: maxGradNorm must be > 0 (Infinity to measure only), got ${maxGradNorm}`);
    const updated: number[] = [];
    this.params.forEach((p, i) => {
      const g = p.grad;
      if (!g) return;
      if (g.dtype !== 'f32' || g.shape.join() !== p.shape.join()) {
        throw new Error(`${this.constructor.name}.step: gradient ${g} does not match parameter ${i} ${p}`);
      }
      updated.push(i);
    });
    if (updated.length === 0) return maxGradNorm === undefined ? undefined : Tensor.zeros([1]);
    const uploaded = new Map<string, Tensor>();
    const owned: Tensor[] = [];
    try {
      if (this.fused) this.#pack();
      const gradFlat = this.fused ? this.#gatherGrads(updated) : undefined;
      const norm2 = maxGradNorm === undefined ? undefined : noGrad(() => tidy(() => {
        if (gradFlat) return sum(mul(gradFlat, gradFlat));
        return sum(concat(updated.map((i) => reshape(sum(mul(this.params[i]!.grad!, this.params[i]!.grad!)), [1])), 0));
      }));
      if (norm2) owned.push(norm2);
      const norm2Input = norm2 ?? zeroScalar();
      const clip = f32Bits(maxGradNorm ?? 0);
      const hyper = (values: number[]) => {
        const key = values.join(',');
        let t = uploaded.get(key);
        if (!t) uploaded.set(key, (t = keep(Tensor.fromArray(Float32Array.from(values)))));
        return t;
      };
      // runs of consecutive parameters sharing a group and a step count update together
      let run: { first: number; last: number; rule: UpdateRule } | undefined;
      const flushRun = () => {
        if (!run) return;
        const { first, last, rule } = run;
        const hp = hyper(rule.hp);
        if (gradFlat) {
          const start = this.#slots[first]!.offset;
          const end = this.#slots[last]!.offset + this.params[last]!.size;
          const state = Object.fromEntries(rule.state.map((name) => [name, this.#flatTensor(name)]));
          launchUpdate(rule, this.#flatTensor('param'), gradFlat, hp, norm2Input, state, start, end - start, clip);
        } else {
          for (let i = first; i <= last; i++) {
            const p = this.params[i]!;
            const state = Object.fromEntries(rule.state.map((name) => [name, this.stateTensor(this.state[i]!, name, p)]));
            launchUpdate(rule, p, p.grad!, hp, norm2Input, state, 0, p.size, clip);
          }
        }
        run = undefined;
      };
      let previous = -2;
      for (const i of updated) {
        const s = this.state[i]!;
        s.step++;
        const group = this.#groupOf(i);
        const rule = this.rule(this.groups[group]!.options, s.step);
        if (this.fused) for (const name of rule.state) this.stateTensor(s, name, this.params[i]!);
        const joins = run && previous === i - 1 && this.#groupOf(run.first) === group && this.state[run.first]!.step === s.step;
        if (!joins) {
          flushRun();
          run = { first: i, last: i, rule };
        } else run!.last = i;
        previous = i;
      }
      flushRun();
      return norm2 ? keep(noGrad(() => tidy(() => sqrt(norm2)))) : undefined;
    } finally {
      for (const t of uploaded.values()) t.dispose();
      for (const t of owned) t.dispose();
    }
  }

  #groupOf(i: number): number {
    if (this.fused) return this.#slots[i]!.group;
    let n = i;
    for (let g = 0; g < this.groups.length; g++) {
      if (n < this.groups[g]!.params.length) return g;
      n -= this.groups[g]!.params.length;
    }
    throw new Error(`no group holds parameter ${i}`);
  }

  /** Copies the gradients into the flat gradient buffer; the slots of parameters without one are zeroed. */
  #gatherGrads(updated: number[]): Tensor {
    const flat = this.#flatTensor('grad');
    const has = new Set(updated);
    this.params.forEach((p, i) => {
      const offset = flat.byteOffset + this.#slots[i]!.offset * 4;
      if (has.has(i)) {
        const view = keep(flat.view(this.#slots[i]!.offset * 4, p.shape));
        view.copyFrom(p.grad!);
        view.dispose();
      } else copyEncoder().clearBuffer(flat.buffer, offset, Math.ceil(p.byteLength / 4) * 4);
    });
    return flat;
  }

  /** A state tensor of `param` (a view of the flat state when fused), created as zeros on first use. */
  protected stateTensor(state: ParamState, name: string, param: Tensor): Tensor {
    let t = state.tensors.get(name);
    if (!t) state.tensors.set(name, (t = this.fused ? this.#view(name, this.params.indexOf(param)) : keep(Tensor.zeros(param.shape))));
    return t;
  }

  /** Drops every parameter's gradient. */
  zeroGrad(): void {
    for (const p of this.params) {
      p.grad?.dispose();
      p.grad = undefined;
    }
  }

  stateDict(): OptimizerStateDict {
    const tensors: Record<string, Tensor> = {};
    this.state.forEach((s, i) => {
      for (const [name, t] of s.tensors) tensors[`state.${i}.${name}`] = t;
    });
    const metadata = {
      optimizer: this.constructor.name,
      params: String(this.params.length),
      options: JSON.stringify(this.options),
      groups: JSON.stringify(this.groups.map((g) => ({ params: g.params.length, options: g.options }))),
      steps: JSON.stringify(this.state.map((s) => s.step)),
    };
    return { tensors, metadata };
  }

  /**
   * Restores state saved by `stateDict()` (directly, or from a safetensors file opened with `loadSafetensors`):
   * hyperparameters, step counts and state tensors (copied, so the source stays independent). Everything is
   * validated before anything changes; errors name the source and the offending key.
   */
  loadStateDict(source: OptimizerStateDict | SafetensorsReader): void {
    const label = source instanceof SafetensorsReader ? source.label : 'state dict';
    const fail = (msg: string): never => {
      throw new Error(`${this.constructor.name}.loadStateDict(${label}): ${msg}`);
    };
    const meta = source.metadata;
    if (meta.optimizer !== this.constructor.name) fail(`the state is for optimizer ${JSON.stringify(meta.optimizer)}`);
    if (meta.params !== String(this.params.length)) fail(`the state has ${meta.params} parameters, this optimizer ${this.params.length}`);
    const steps = parseJson(meta.steps);
    const options = parseJson(meta.options);
    if (!Array.isArray(steps) || steps.length !== this.params.length || !steps.every((s) => Number.isSafeInteger(s) && s >= 0)) {
      fail(`invalid step counts ${meta.steps}`);
    }
    if (!options || typeof options !== 'object' || Array.isArray(options)) fail(`invalid options ${meta.options}`);
    // states saved before parameter groups existed hold one group: the options
    const groups = meta.groups === undefined ? [{ params: this.params.length, options }] : parseJson(meta.groups);
    if (!Array.isArray(groups) || groups.length !== this.groups.length || groups.some((g, k) => !g || typeof g !== 'object' || g.params !== this.groups[k]!.params.length || !g.options || typeof g.options !== 'object')) {
      fail(`the state's parameter groups ${meta.groups} do not match this optimizer's (${this.groups.map((g) => g.params.length).join(', ')} parameters)`);
    }

    const keys = source instanceof SafetensorsReader ? [...source.keys()] : Object.keys(source.tensors);
    const entries = keys.map((key) => {
      const m = /^state\.(\d+)\.(\w+)$/.exec(key);
      const index = Number(m?.[1]);
      const param = this.params[index];
      if (!m || !param || !this.stateNames.includes(m[2]!)) fail(`unexpected key '${key}'`);
      const info = source instanceof SafetensorsReader ? source.info(key) : source.tensors[key]!;
      if (info.shape.join() !== param!.shape.join()) {
        fail(`'${key}' has shape ${shapeStr(info.shape)}, parameter ${index} has ${shapeStr(param!.shape)}`);
      }
      if (info.dtype !== 'f32' && info.dtype !== 'F32') fail(`'${key}' is ${info.dtype}, optimizer state is f32`);
      return { key, index, name: m![2]! };
    });

    // Copy first, then swap: the source may be this optimizer's own state.
    const loaded = entries.map(({ key, index, name }) => {
      const value = source instanceof SafetensorsReader ? source.get(key) : source.tensors[key]!;
      const copy = keep(Tensor.empty(value.shape, 'f32')).copyFrom(value);
      if (source instanceof SafetensorsReader) value.dispose();
      return { index, name, copy };
    });
    this.#clearState();
    this.state.forEach((s, i) => (s.step = (steps as number[])[i]!));
    for (const { index, name, copy } of loaded) {
      this.stateTensor(this.state[index]!, name, this.params[index]!).copyFrom(copy);
      copy.dispose();
    }
    Object.assign(this.options, options);
    this.groups.forEach((g, k) => Object.assign(g.options, (groups as { options: object }[])[k]!.options));
  }

  #clearState(): void {
    for (const s of this.state) {
      for (const t of s.tensors.values()) t.dispose();
      s.tensors.clear();
    }
    for (const [name, t] of this.#flat) {
      if (name === 'param') continue;
      t.dispose();
      this.#flat.delete(name);
    }
  }

  /** Frees the state (the parameters belong to their module; packed ones keep their flat buffer alive). */
  dispose(): void {
    this.#clearState();
    this.#flat.get('param')?.dispose();
    this.#flat.clear();
  }
}

function parseJson(text: string | undefined): unknown {
  try {
    return text === undefined ? undefined : JSON.parse(text);
  } catch {
    return undefined;
  }
}

let zero: Tensor | undefined;
/** The norm² bound when not clipping (the kernel then ignores it). */
function zeroScalar(): Tensor {
  if (!zero || zero.disposed) zero = keep(Tensor.zeros([1]));
  return zero;
}

/**
 * Launches an update over elements [first, first + count) of `param`, `grad` and the `state` tensors (bound
 * read-write under their names); the rule's body sees k (the element), g (the gradient, clipped when
 * `clip`, the bits of maxGradNorm, is non-zero: scaled by min(1, maxGradNorm / (√norm2 + 1e-6))) and hp.
 * With clipping, a non-finite norm skips the update.
 */
function launchUpdate(rule: UpdateRule, param: Tensor, grad: Tensor, hp: Tensor, norm2: Tensor, state: Record<string, Tensor>, first: number, count: number, clip: number): void {
  const g = grid1d(count, workgroupSize, 'range[1]');
  launch({
    name: rule.name,
    key: rule.body,
    inputs: { grad, hp, norm2, range: u32Constant([first, count, clip]) },
    outputs: { param, ...state },
    workgroups: g.workgroups,
    wgsl: (bindings) => `${bindings}
${g.main}
  let k = range[0] + i;
  let maxNorm = bitcast<f32>(range[2]);
  // a non-finite norm (exponent bits all set) leaves everything as it was; the caller sees the norm
  if (maxNorm > 0.0 && (bitcast<u32>(norm2[0]) & 0x7f800000u) == 0x7f800000u) { return; }
  let g = grad[k] * select(1.0, min(1.0, maxNorm / (sqrt(norm2[0]) + 1e-6)), maxNorm > 0.0);
  ${rule.body}
}`,
  });
}
