// Reading pretrained folders (Hugging Face layout): JSON configs with errors that name the file and key, and
// the weights file among its usual names (fp16 variants included).

import { nodeFs } from '../io/fs.ts';

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

/** Typed access to config keys: each getter throws naming the file and key when the value is missing or wrong. */
export class ConfigReader {
  constructor(readonly config: JsonConfig, readonly source: string) {}

  has(key: string): boolean {
    return this.config[key] !== undefined && this.config[key] !== null;
  }

  #get<T>(key: string, fallback: T | undefined, check: (v: unknown) => boolean, what: string): T {
    const v = this.config[key];
    if (v === undefined || v === null) {
      if (fallback !== undefined) return fallback;
      throw new Error(`${this.source}: missing key "${key}" (${what})`);
    }
    if (!check(v)) throw new Error(`${this.source}: "${key}" must be ${what}, got ${JSON.stringify(v)}`);
    return v as T;
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
  oneOf<T extends string>(key: string, allowed: readonly T[], fallback?: T): T {
    return this.#get(key, fallback, (v) => allowed.includes(v as T), `one of ${allowed.map((a) => JSON.stringify(a)).join(', ')}`);
  }
  numbers(key: string): number[] | undefined {
    if (!this.has(key)) return undefined;
    return this.#get(key, undefined, (v) => Array.isArray(v) && v.every((x) => typeof x === 'number'), 'an array of numbers');
  }
}

/**
 * The weights file of a model folder: `<base>.safetensors`, or its fp16 variant `<base>.fp16.safetensors`
 * (preferred when `variant` is 'fp16'). Errors list what was looked for, and say so when only a pickle exists.
 */
export function findWeights(dir: string, bases: readonly string[], variant?: 'fp16'): string {
  const names = bases.flatMap((b) => (variant === 'fp16' ? [`${b}.fp16.safetensors`, `${b}.safetensors`] : [`${b}.safetensors`, `${b}.fp16.safetensors`]));
  for (const n of names) if (fileExists(joinPath(dir, n))) return joinPath(dir, n);
  const pickles = bases.flatMap((b) => [`${b}.bin`, `${b}.fp16.bin`]).filter((n) => fileExists(joinPath(dir, n)));
  const hint = pickles.length ? ` (found ${pickles.join(', ')}: PyTorch pickles are not read; convert them to safetensors)` : '';
  throw new Error(`${dir}: no weights file, looked for ${names.join(', ')}${hint}`);
}
