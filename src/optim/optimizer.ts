// The optimizer base: parameters, per-parameter state, and a state dict that round-trips through safetensors
// so training resumes exactly. Updates run on the GPU, one dispatch per parameter that rewrites the parameter
// and its state in place. Hyperparameters reach the kernels through a small tensor rather than WGSL
// constants, so changing the learning rate (or reaching a new step's bias correction) compiles nothing; the
// element count is read at run time too (a u32Constant), so one pipeline per update rule serves every
// parameter shape (a model has dozens of distinct sizes, each a pipeline to compile on a first step otherwise).

import { grid1d, launch, workgroupSize } from '../engine/kernel.ts';
import { Tensor, keep, shapeStr, u32Constant } from '../engine/tensor.ts';
import { SafetensorsReader } from '../io/safetensors.ts';

/** One parameter's state: updates applied so far and named state tensors (momentum_buffer, exp_avg…). */
export interface ParamState {
  step: number;
  tensors: Map<string, Tensor>;
}

/**
 * An optimizer's state as safetensors content: `tensors` named `state.<param index>.<name>` (the optimizer's
 * own tensors, not copies: save them, do not dispose them) and `metadata` holding the optimizer kind,
 * hyperparameters and step counts. `saveSafetensors(path, sd.tensors, sd.metadata)` stores it.
 */
export interface OptimizerStateDict {
  tensors: Record<string, Tensor>;
  metadata: Record<string, string>;
}

export interface BaseOptions {
  lr: number;
}

export abstract class Optimizer<O extends BaseOptions = BaseOptions> {
  readonly params: readonly Tensor[];
  /** Hyperparameters, read at every step: change them between steps (e.g. `opt.options.lr`, or `opt.lr`). */
  readonly options: O;
  protected readonly state: ParamState[];

  constructor(params: Iterable<Tensor>, options: O) {
    this.params = [...params];
    if (this.params.length === 0) throw new Error(`${this.constructor.name}: no parameters to optimize`);
    if (new Set(this.params).size !== this.params.length) throw new Error(`${this.constructor.name}: a parameter is listed twice`);
    for (const p of this.params) {
      if (p.dtype !== 'f32' || !p.requiresGrad) throw new Error(`${this.constructor.name}: parameters must be f32 tensors with requiresGrad, got ${p}`);
    }
    this.options = { ...options };
    this.state = this.params.map(() => ({ step: 0, tensors: new Map() }));
  }

  get lr(): number {
    return this.options.lr;
  }
  set lr(v: number) {
    this.options.lr = v;
  }

  /** Names of the state tensors this optimizer keeps per parameter (PyTorch's names). */
  protected abstract readonly stateNames: readonly string[];

  /**
   * Records the update of one parameter (its state's step already counts this update); `hyper` uploads a
   * list of numbers as a small f32 tensor, shared by every parameter that asks for the same list this step.
   */
  protected abstract update(param: Tensor, grad: Tensor, state: ParamState, hyper: (values: number[]) => Tensor): void;

  /** Applies one update to every parameter that has a gradient (others are left untouched, as in PyTorch). */
  step(): void {
    const uploaded = new Map<string, Tensor>();
    const hyper = (values: number[]) => {
      const key = values.join(',');
      let t = uploaded.get(key);
      if (!t) uploaded.set(key, (t = keep(Tensor.fromArray(Float32Array.from(values)))));
      return t;
    };
    try {
      this.params.forEach((p, i) => {
        const g = p.grad;
        if (!g) return;
        if (g.dtype !== 'f32' || g.shape.join() !== p.shape.join()) {
          throw new Error(`${this.constructor.name}.step: gradient ${g} does not match parameter ${i} ${p}`);
        }
        const s = this.state[i]!;
        s.step++;
        this.update(p, g, s, hyper);
      });
    } finally {
      for (const t of uploaded.values()) t.dispose();
    }
  }

  /** A state tensor of `param`, created as zeros on first use. */
  protected stateTensor(state: ParamState, name: string, param: Tensor): Tensor {
    let t = state.tensors.get(name);
    if (!t) state.tensors.set(name, (t = keep(Tensor.zeros(param.shape))));
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
    this.dispose();
    this.state.forEach((s, i) => (s.step = (steps as number[])[i]!));
    for (const { index, name, copy } of loaded) this.state[index]!.tensors.set(name, copy);
    Object.assign(this.options, options);
  }

  /** Frees the state tensors (the parameters belong to their module). */
  dispose(): void {
    for (const s of this.state) {
      for (const t of s.tensors.values()) t.dispose();
      s.tensors.clear();
    }
  }
}

function parseJson(text: string | undefined): unknown {
  try {
    return text === undefined ? undefined : JSON.parse(text);
  } catch {
    return undefined;
  }
}

/**
 * Launches an in-place elementwise update over a parameter: `body` (WGSL) reads `grad[i]` and `hp[k]` and
 * rewrites `param[i]` and the `state` tensors (bound read-write under their names) at index i.
 */
export function launchUpdate(name: string, param: Tensor, grad: Tensor, hp: Tensor, state: Record<string, Tensor>, body: string): void {
  const g = grid1d(param.size, workgroupSize, 'count[0]');
  launch({
    name,
    key: body,
    inputs: { grad, hp, count: u32Constant([param.size]) },
    outputs: { param, ...state },
    workgroups: g.workgroups,
    wgsl: (bindings) => `${bindings}
${g.main}
  ${body}
}`,
  });
}
