// Modules: trees of parameters, buffers and child modules. A tensor's dotted path through the tree
// (`down_blocks.0.resnets.1.conv1.weight`) is its PyTorch `state_dict()` key, so checkpoints saved by PyTorch
// load by name. Subclasses declare their state in the constructor, keeping a typed field for each:
//
//   this.conv1 = this.module('conv1', new Conv2d(4, 8, 3));
//   this.weight = this.param('weight', Tensor.zeros([8]));
//   this.blocks = this.module('blocks', new ModuleList([...]));
//
// Loading copies values into the registered tensors in place, so fields and optimizers that hold them stay valid.

import { type DType, type Shape, Tensor, keep, shapeStr } from '../engine/tensor.ts';
import { cast } from '../kernels/elementwise.ts';
import { SafetensorsReader } from '../io/safetensors.ts';

/** Where `loadStateDict` takes tensors from: an open safetensors file, or tensors by name. */
export type StateSource = SafetensorsReader | ReadonlyMap<string, Tensor> | Readonly<Record<string, Tensor>>;

export interface LoadReport {
  loaded: string[];
  /** Keys of this module that the source lacks. */
  missing: string[];
  /** Keys of the source that this module lacks. */
  unexpected: string[];
  /** Keys present in both with different shapes (not loaded). */
  mismatched: { name: string; expected: number[]; found: number[] }[];
}

export interface LoadStateDictOptions {
  /** Throw (before loading anything) when any key is missing, unexpected or of the wrong shape. */
  strict?: boolean;
  /** Source keys to pass over silently (like transformers' _keys_to_ignore_on_load_unexpected). */
  ignore?: (name: string) => boolean;
}

/** A nestable build-time mode: `active` while some `run(build)` is running. */
export class BuildScope {
  #depth = 0;
  run<T>(build: () => T): T {
    this.#depth++;
    try {
      return build();
    } finally {
      this.#depth--;
    }
  }
  get active(): boolean {
    return this.#depth > 0;
  }
}

const halfScope = new BuildScope();

/**
 * Builds a model whose weights (every floating parameter of rank ≥ 2: Linear/Conv/embedding tables) are
 * stored in f16 from the start, as `Module.half()` would leave them, without an f32 copy of the whole model
 * ever existing: each is converted as it is registered. For f16 inference loaders.
 */
export function halfWeights<T>(build: () => T): T {
  return halfScope.run(build);
}

/** Whether weights built now are stored in f16 (inside `halfWeights`). */
export function buildingHalfWeights(): boolean {
  return halfScope.active;
}

/** Whether `half()` stores `t` in f16: floating, rank ≥ 2 (norms, biases and other vectors stay f32). */
function isHalfWeight(t: Tensor): boolean {
  return t.dtype === 'f32' && t.rank >= 2;
}

/** f32 weights already converted, so a tensor shared by two modules (tied weights) becomes one f16 tensor. */
const halved = new WeakMap<Tensor, Tensor>();

/** The f16 copy of `t` (made once; `t` is disposed). */
function toHalf(t: Tensor): Tensor {
  let half = halved.get(t);
  if (!half) {
    half = cast(t, 'f16');
    half.name = t.name;
    halved.set(t, half);
    t.dispose();
  }
  return half;
}

/** The base of every layer and model. */
export class Module {
  /** Training mode (dropout, batch-norm statistics); set by `train()` / `eval()` on the whole tree. */
  training = true;
  readonly #params = new Map<string, Tensor>();
  readonly #buffers = new Map<string, { tensor: Tensor; persistent: boolean }>();
  readonly #children = new Map<string, Module>();

  /**
   * Registers a trainable parameter (f32, requiresGrad set) under `name` and returns it. Inside `halfWeights`,
   * a weight of rank ≥ 2 is stored as an f16 buffer instead (the returned tensor is that f16 one).
   */
  param(name: string, value: Tensor): Tensor {
    if (halfScope.active && value.rank >= 2 && (value.dtype === 'f32' || value.dtype === 'f16')) {
      return this.buffer(name, value.dtype === 'f16' ? value : toHalf(value));
    }
    this.#claim(name);
    value.requiresGrad = true;
    value.name ??= name;
    this.#params.set(name, keep(value));
    return value;
  }

  /**
   * Registers non-trainable state (running statistics, index tables) under `name` and returns it.
   * Non-persistent buffers are left out of `stateDict()`, as in PyTorch.
   */
  buffer(name: string, value: Tensor, { persistent = true } = {}): Tensor {
    this.#claim(name);
    value.name ??= name;
    this.#buffers.set(name, { tensor: keep(value), persistent });
    return value;
  }

  /** Registers a child module under `name` and returns it. */
  module<M extends Module>(name: string, child: M): M {
    this.#claim(name);
    this.#children.set(name, child);
    return child;
  }

  #claim(name: string): void {
    if (!name || name.includes('.')) throw new Error(`${this.constructor.name}: invalid name '${name}' (non-empty, without '.')`);
    if (this.#params.has(name) || this.#buffers.has(name) || this.#children.has(name)) {
      throw new Error(`${this.constructor.name}: '${name}' is already registered`);
    }
  }

  /** Direct children with their names. */
  namedChildren(): [string, Module][] {
    return [...this.#children];
  }

  /** Every module of the tree, this one first (named ''), pre-order; a module shared twice is listed once. */
  namedModules(): [string, Module][] {
    const out: [string, Module][] = [];
    const seen = new Set<Module>();
    const visit = (m: Module, name: string) => {
      if (seen.has(m)) return;
      seen.add(m);
      out.push([name, m]);
      for (const [n, c] of m.#children) visit(c, join(name, n));
    };
    visit(this, '');
    return out;
  }

  /** Trainable parameters by dotted name; a tensor shared by two modules is listed once. */
  namedParameters(): [string, Tensor][] {
    const seen = new Set<Tensor>();
    return this.namedModules().flatMap(([prefix, m]) =>
      [...m.#params].filter(([, t]) => !seen.has(t) && seen.add(t)).map(([n, t]): [string, Tensor] => [join(prefix, n), t]),
    );
  }

  parameters(): Tensor[] {
    return this.namedParameters().map(([, t]) => t);
  }

  /** Buffers (persistent or not) by dotted name. */
  namedBuffers(): [string, Tensor][] {
    return this.namedModules().flatMap(([prefix, m]) => [...m.#buffers].map(([n, b]): [string, Tensor] => [join(prefix, n), b.tensor]));
  }

  /**
   * Parameters and persistent buffers by PyTorch `state_dict()` key, in PyTorch's order. The tensors are the
   * module's own (not copies): save or read them, do not dispose them.
   */
  stateDict(): Record<string, Tensor> {
    const out: Record<string, Tensor> = {};
    const visit = (m: Module, prefix: string) => {
      for (const [n, t] of m.#params) out[prefix + n] = t;
      for (const [n, b] of m.#buffers) if (b.persistent) out[prefix + n] = b.tensor;
      for (const [n, c] of m.#children) visit(c, `${prefix}${n}.`);
    };
    visit(this, '');
    return out;
  }

  /**
   * Copies tensors from `source` into this module's parameters and persistent buffers, one at a time (a
   * checkpoint file is never held in memory whole), converting dtypes (an f16 checkpoint into f32 parameters).
   * Strict (the default): throws one error listing every missing, unexpected and wrong-shape key before
   * loading anything. Otherwise loads what matches and returns the report.
   */
  loadStateDict(source: StateSource, { strict = true, ignore }: LoadStateDictOptions = {}): LoadReport {
    const src = stateSource(source);
    const targets = new Map(Object.entries(this.stateDict()));
    const report: LoadReport = { loaded: [], missing: [], unexpected: [], mismatched: [] };
    for (const [name, t] of targets) {
      const found = src.shape(name);
      if (!found) report.missing.push(name);
      else if (!sameShape(found, t.shape)) report.mismatched.push({ name, expected: [...t.shape], found: [...found] });
    }
    for (const name of src.keys()) if (!targets.has(name) && !ignore?.(name)) report.unexpected.push(name);
    if (strict && (report.missing.length || report.unexpected.length || report.mismatched.length)) {
      throw new Error(`${this.constructor.name}.loadStateDict(${src.label}): ${describeProblems(report)}`);
    }
    const skip = new Set([...report.missing, ...report.mismatched.map((m) => m.name)]);
    for (const [name, t] of targets) {
      if (skip.has(name)) continue;
      const value = src.take(name);
      const converted = convert(value, t.dtype);
      t.copyFrom(converted);
      converted.dispose();
      value.dispose();
      report.loaded.push(name);
    }
    return report;
  }

  /**
   * Inference storage in half precision: every f32 parameter of rank ≥ 2 (Linear/Conv weights, embedding
   * tables) becomes an f16 buffer under the same state_dict key, one tensor at a time; norms, biases and other
   * vectors stay f32 parameters. Layers convert an f16 weight to f32 right before their op (compute stays
   * f32), so weights take half the memory. f16 weights are frozen: they leave `parameters()`, so optimizers
   * and gradients never see them (gradients still flow to the inputs and the remaining f32 parameters).
   * Fields that held the old tensor (`this.weight`) are pointed at the f16 one. Returns this.
   */
  half(): this {
    for (const [, m] of this.namedModules()) {
      for (const [name, t] of [...m.#params]) {
        if (!halved.has(t) && !isHalfWeight(t)) continue;
        const half = toHalf(t);
        m.#params.delete(name);
        m.#buffers.set(name, { tensor: keep(half), persistent: true });
        const fields = m as unknown as Record<string, unknown>;
        for (const key of Object.keys(fields)) if (fields[key] === t) fields[key] = half;
      }
    }
    return this;
  }

  /** The state_dict keys whose tensors are stored in f16 (what a loader should read as f16). */
  halfKeys(): Set<string> {
    return new Set(Object.entries(this.stateDict()).filter(([, t]) => t.dtype === 'f16').map(([n]) => n));
  }

  /** Sets training mode on the whole tree; returns this. */
  train(mode = true): this {
    for (const [, m] of this.namedModules()) m.training = mode;
    return this;
  }

  /** Evaluation mode: `train(false)`. */
  eval(): this {
    return this.train(false);
  }

  /** Sets requiresGrad on every parameter (false freezes the module); returns this. */
  requireGrad(flag = true): this {
    for (const p of this.parameters()) p.requiresGrad = flag;
    return this;
  }

  /** Drops every parameter's gradient. */
  zeroGrad(): void {
    for (const p of this.parameters()) {
      p.grad?.dispose();
      p.grad = undefined;
    }
  }

  /** Frees every parameter and buffer of the tree. */
  dispose(): void {
    for (const [, m] of this.namedModules()) {
      for (const t of m.#params.values()) t.dispose();
      for (const b of m.#buffers.values()) b.tensor.dispose();
    }
  }
}

/** A list of modules, registered under their indices ('0', '1', …) as PyTorch's nn.ModuleList. */
export class ModuleList<M extends Module = Module> extends Module implements Iterable<M> {
  readonly #items: M[] = [];

  constructor(items: Iterable<M> = []) {
    super();
    for (const m of items) this.push(m);
  }

  push(m: M): M {
    this.#items.push(this.module(String(this.#items.length), m));
    return m;
  }

  at(index: number): M {
    const m = this.#items[index];
    if (!m) throw new Error(`ModuleList: index ${index} is out of range (length ${this.#items.length})`);
    return m;
  }

  get length(): number {
    return this.#items.length;
  }

  [Symbol.iterator](): Iterator<M> {
    return this.#items[Symbol.iterator]();
  }
}

function join(prefix: string, name: string): string {
  return prefix ? `${prefix}.${name}` : name;
}

function sameShape(a: Shape, b: Shape): boolean {
  return a.length === b.length && a.every((d, k) => d === b[k]);
}

/** A uniform view of a source: key listing, shapes without reading data, and one tensor at a time. */
interface Source {
  label: string;
  keys(): Iterable<string>;
  shape(name: string): Shape | undefined;
  /** The tensor (the caller disposes it). */
  take(name: string): Tensor;
}

function stateSource(source: StateSource): Source {
  if (source instanceof SafetensorsReader) {
    return {
      label: source.label,
      keys: () => source.keys(),
      shape: (n) => (source.has(n) ? source.info(n).shape : undefined),
      take: (n) => source.get(n),
    };
  }
  const map: ReadonlyMap<string, Tensor> = source instanceof Map ? source : new Map(Object.entries(source));
  return { label: 'state dict', keys: () => map.keys(), shape: (n) => map.get(n)?.shape, take: (n) => map.get(n)!.alias() };
}

/** `t` in `dtype` (a new tensor; an alias when already there). f16 ↔ integer goes through f32. */
function convert(t: Tensor, dtype: DType): Tensor {
  if (t.dtype === dtype || t.dtype === 'f32' || dtype === 'f32') return cast(t, dtype);
  const viaF32 = cast(t, 'f32');
  const out = cast(viaF32, dtype);
  viaF32.dispose();
  return out;
}

function describeProblems(r: LoadReport): string {
  const lines: string[] = [];
  if (r.missing.length) lines.push(`missing keys (${r.missing.length}): ${r.missing.join(', ')}`);
  if (r.unexpected.length) lines.push(`unexpected keys (${r.unexpected.length}): ${r.unexpected.join(', ')}`);
  for (const m of r.mismatched) lines.push(`wrong shape: ${m.name} expected ${shapeStr(m.expected)}, found ${shapeStr(m.found)}`);
  return lines.join('\n  ');
}
