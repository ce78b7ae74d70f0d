// Reading pretrained folders (Hugging Face layout): JSON configs with errors that name the file and key, and
// the weights file among its usual names (fp16 variants included).

import { nodeFs } from '../io/fs.ts';
import type { Tensor } from '../engine/tensor.ts';
import { type UnaryOp, unary } from '../kernels/elementwise.ts';
import { reshape } from '../kernels/shape.ts';

export type JsonConfig = Record<string, unknown>;

export function joinPath(dir: string, name: string): string {
  return `${dir.replace(/\/+$/, '')}/${name}`;
}

export function fileExists(path: string): boolean {
  const fs = nodeFs(`reading ${path}`);
  let fd: number;
  try {
    fd = fs.openSync(path, 'r');
  } catch {
    return false;
  }
  fs.closeSync(fd);
  return true;
}

/** The parsed JSON object in `path`; errors name the file. */
export function readJson(path: string): JsonConfig {
  if (!fileExists(path)) throw new Error(`${path} is missing`);
  let value: unknown;
  try {
    value = parsePythonJson(new TextDecoder().decode(nodeFs(`reading ${path}`).readFileSync(path)));
  } catch (e) {
    throw new Error(`${path} is not valid JSON: ${(e as Error).message}`);
  }
  if (!value || typeof value !== 'object' || Array.isArray(value)) throw new Error(`${path} must hold a JSON object`);
  return value as JsonConfig;
}

/**
 * JSON as Python's json.dumps writes it: bare Infinity, -Infinity and NaN are allowed (diffusers saves
 * e.g. `"lambda_min_clipped": -Infinity`).
 */
function parsePythonJson(text: string): unknown {
  try {
    return JSON.parse(text);
  } catch (e) {
    const quoted = text.replace(/([:[,]\s*)(-?Infinity|NaN)(?=\s*[,\]}])/g, '$1"py-float:$2"');
    if (quoted === text) throw e;
    const special: Record<string, number> = { 'py-float:Infinity': Infinity, 'py-float:-Infinity': -Infinity, 'py-float:NaN': NaN };
    return JSON.parse(quoted, (_k, v: unknown) => (typeof v === 'string' && v in special ? special[v] : v));
  }
}

/** The first of `names` present in `dir`, read as JSON, with the path it came from. */
export function readFirstJson(dir: string, names: readonly string[]): { path: string; config: JsonConfig } {
  for (const n of names) {
    const path = joinPath(dir, n);
    if (fileExists(path)) return { path, config: readJson(path) };
  }
  throw new Error(`${dir} has no ${names.join(' or ')}`);
}

/**
 * Typed access to config keys, the one reader of every model's config: each getter throws naming the source
 * (file, and the nested key for sub-configs) and the key when the value is missing or of a form the reference
 * implementation would refuse too. Keys no getter asks for are ignored, as transformers and diffusers do.
 */
export class ConfigReader {
  constructor(readonly config: JsonConfig, readonly source: string) {}

  has(key: string): boolean {
    return this.config[key] !== undefined && this.config[key] !== null;
  }

  fail(key: string, expected: string): never {
    const v = this.config[key];
    const got = v === undefined || v === null ? 'it is absent and its default does not fit' : `got ${JSON.stringify(v)}`;
    throw new Error(`${this.source}: "${key}" must be ${expected}, ${got}`);
  }

  #get<T>(key: string, fallback: T | undefined, check: (v: unknown) => boolean, what: string): T {
    const v = this.config[key];
    if (v === undefined || v === null) {
      if (fallback !== undefined) return fallback;
      throw new Error(`${this.source}: missing key "${key}" (${what})`);
    }
    if (!check(v)) this.fail(key, what);
    return v as T;
  }

  /** The nested config object under `key` (errors name `source key`), or undefined when absent or null. */
  child(key: string): ConfigReader | undefined {
    if (!this.has(key)) return undefined;
    const v = this.#get<JsonConfig>(key, undefined, (x) => typeof x === 'object' && !Array.isArray(x), 'an object');
    return new ConfigReader(v, `${this.source} ${key}`);
  }

  number(key: string, fallback?: number, { infinite = false } = {}): number {
    return this.#get(key, fallback, (v) => typeof v === 'number' && (infinite ? !Number.isNaN(v) : Number.isFinite(v)), 'a number');
  }
  int(key: string, fallback?: number, min = 0): number {
    return this.#get(key, fallback, (v) => Number.isInteger(v) && (v as number) >= min, `an integer >= ${min}`);
  }
  bool(key: string, fallback?: boolean): boolean {
    return this.#get(key, fallback, (v) => typeof v === 'boolean', 'true or false');
  }
  string(key: string, fallback?: string): string {
    return this.#get(key, fallback, (v) => typeof v === 'string', 'a string');
  }
  oneOf<T extends string>(key: string, allowed: readonly T[], fallback?: T): T {
    return this.#get(key, fallback, (v) => allowed.includes(v as T), `one of ${allowed.map((a) => JSON.stringify(a)).join(', ')}`);
  }
  /** A list of numbers, or undefined when absent or null. */
  numbers(key: string): number[] | undefined {
    if (!this.has(key)) return undefined;
    return this.#get(key, undefined, (v) => Array.isArray(v) && v.every((x) => typeof x === 'number'), 'a list of numbers');
  }
  strings(key: string, fallback?: string[]): string[] {
    return this.#get(key, fallback, (v) => Array.isArray(v) && v.length > 0 && v.every((s) => typeof s === 'string'), 'a non-empty list of strings');
  }
  ints(key: string, fallback?: number[], min = 1): number[] {
    return this.#get(key, fallback, (v) => Array.isArray(v) && v.length > 0 && v.every((s) => Number.isInteger(s) && s >= min), `a non-empty list of integers >= ${min}`);
  }

  /** An integer or a pair of them ([height, width], as transformers and diffusers accept for sizes), as a pair. */
  intOrPair(key: string, fallback?: number | [number, number], min = 1): [number, number] {
    const what = `an integer >= ${min} or a pair of them`;
    const v = this.#get<number | number[]>(key, fallback, (x) => (Array.isArray(x) ? x.length === 2 && x.every((s) => Number.isInteger(s) && s >= min) : Number.isInteger(x) && (x as number) >= min), what);
    return typeof v === 'number' ? [v, v] : [v[0]!, v[1]!];
  }

  /** An integer or a list of `n` of them (one per block), as a list. */
  perBlock(key: string, n: number, fallback?: number): number[] {
    const what = `a positive integer or a list of ${n} of them (one per block)`;
    const v = this.#get<number | number[]>(key, fallback, (x) => (Array.isArray(x) ? x.length === n && x.every((s) => Number.isInteger(s) && s > 0) : Number.isInteger(x) && (x as number) > 0), what);
    return Array.isArray(v) ? v : Array<number>(n).fill(v);
  }

  /** A bool or a list of `n` bools, as a list. */
  perBlockBool(key: string, n: number, fallback: boolean): boolean[] {
    const v = this.#get<boolean | boolean[]>(key, fallback, (x) => (Array.isArray(x) ? x.length === n && x.every((s) => typeof s === 'boolean') : typeof x === 'boolean'), `true/false or a list of ${n} of them`);
    return Array.isArray(v) ? v : Array<boolean>(n).fill(v);
  }

  /** An activation named as transformers' ACT2FN / diffusers' get_activation name it (see `activations`). */
  activation(key: string, fallback: ActivationName): ActivationName {
    const v = this.config[key] ?? fallback;
    if (typeof v === 'string' && Object.hasOwn(activations, v)) return v as ActivationName;
    if (typeof v === 'string' && referenceOnlyActivations.includes(v)) {
      throw new Error(`${this.source}: "${key}": ${JSON.stringify(v)} is not implemented here (supported: ${Object.keys(activations).join(', ')})`);
    }
    this.fail(key, `an activation name (${Object.keys(activations).join(', ')})`);
  }

  /**
   * For options this port does not implement: throws when a key is set to anything but null (the default;
   * absent counts as null) or one of the values listed for it.
   */
  expectDefaults(supported: Record<string, readonly unknown[]>): void {
    for (const [key, values] of Object.entries(supported)) {
      const v = this.config[key] ?? null;
      const allowed = [null, ...values];
      if (!allowed.includes(v)) throw new Error(`${this.source}: "${key}": ${JSON.stringify(v)} is not supported (only ${allowed.map((a) => JSON.stringify(a)).join(', ')})`);
    }
  }
}

/**
 * Activations by the names configs use (transformers' ACT2FN, diffusers' get_activation), as the engine's
 * unary ops; 'linear' is the identity. gelu_new / gelu_fast / gelu_accurate / gelu_pytorch_tanh are all the
 * tanh approximation (the same formula written differently).
 */
export const activations = {
  gelu: 'gelu_erf', gelu_python: 'gelu_erf', gelu_new: 'gelu_tanh', gelu_fast: 'gelu_tanh', gelu_accurate: 'gelu_tanh',
  gelu_pytorch_tanh: 'gelu_tanh', quick_gelu: 'quick_gelu', relu: 'relu', silu: 'silu', swish: 'silu', sigmoid: 'sigmoid',
  tanh: 'tanh', linear: 'linear',
} as const satisfies Record<string, UnaryOp | 'linear'>;
export type ActivationName = keyof typeof activations;

/** ACT2FN names this port does not implement: refused as such, not as unknown. */
const referenceOnlyActivations = ['gelu_10', 'laplace', 'leaky_relu', 'mish', 'relu2', 'relu6', 'prelu', 'xielu'];

/** Applies a named activation (see `activations`). */
export function activate(name: ActivationName, x: Tensor): Tensor {
  const op = activations[name];
  return op === 'linear' ? reshape(x, x.shape) : unary(op, x);
}

/**
 * The weights file of a model folder: `<base>.safetensors`, or its fp16 variant `<base>.fp16.safetensors`
 * (preferred when `variant` is 'fp16'). Errors list what was looked for, and say so when only a pickle exists.
 */
export function findWeights(dir: string, bases: readonly string[], variant?: 'fp16'): string {
  // every base's plain file before any fp16 variant (the variant first when asked for), in the bases' order
  const plain = bases.map((b) => `${b}.safetensors`);
  const half = bases.map((b) => `${b}.fp16.safetensors`);
  const names = variant === 'fp16' ? [...half, ...plain] : [...plain, ...half];
  for (const n of names) if (fileExists(joinPath(dir, n))) return joinPath(dir, n);
  const pickles = bases.flatMap((b) => [`${b}.bin`, `${b}.fp16.bin`]).filter((n) => fileExists(joinPath(dir, n)));
  const hint = pickles.length ? ` (found ${pickles.join(', ')}: PyTorch pickles are not read; convert them to safetensors)` : '';
  throw new Error(`${dir}: no weights file, looked for ${names.join(', ')}${hint}`);
}
