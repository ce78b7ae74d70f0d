// Reading a diffusers model folder: config.json (checked key by key, errors name the file and key) and the
// weights file (f32 or f16 safetensors, streamed tensor by tensor into the model in the model's dtypes).

import { nodeFs } from '../../io/fs.ts';
import { loadSafetensors } from '../../io/safetensors.ts';
import type { Tensor } from '../../engine/tensor.ts';
import { type Module, halfWeights } from '../../nn/module.ts';
import { skipInit } from '../../nn/layers.ts';

/** A parsed config.json with typed, validated accessors. */
export class DiffusersConfig {
  constructor(readonly file: string, readonly values: Record<string, unknown>) {}

  static read(dir: string): DiffusersConfig {
    const file = `${dir.replace(/\/$/, '')}/config.json`;
    const fs = nodeFs(`reading ${file}`);
    let text: string;
    try {
      text = new TextDecoder().decode(fs.readFileSync(file));
    } catch (e) {
      throw new Error(`${file}: cannot read the model config (${(e as Error).message})`);
    }
    let values: unknown;
    try {
      values = JSON.parse(text);
    } catch (e) {
      throw new Error(`${file}: not valid JSON (${(e as Error).message})`);
    }
    if (!values || typeof values !== 'object' || Array.isArray(values)) throw new Error(`${file}: expected a JSON object`);
    return new DiffusersConfig(file, values as Record<string, unknown>);
  }

  fail(key: string, expected: string): never {
    throw new Error(`${this.file}: '${key}' must be ${expected}, got ${JSON.stringify(this.values[key])}`);
  }

  has(key: string): boolean {
    return this.values[key] !== undefined && this.values[key] !== null;
  }

  number(key: string, fallback?: number): number {
    const v = this.values[key] ?? fallback;
    if (typeof v !== 'number' || !Number.isFinite(v)) this.fail(key, 'a number');
    return v;
  }

  int(key: string, fallback?: number): number {
    const v = this.number(key, fallback);
    if (!Number.isInteger(v) || v < 0) this.fail(key, 'a non-negative integer');
    return v;
  }

  bool(key: string, fallback?: boolean): boolean {
    const v = this.values[key] ?? fallback;
    if (typeof v !== 'boolean') this.fail(key, 'true or false');
    return v;
  }

  string(key: string, fallback?: string): string {
    const v = this.values[key] ?? fallback;
    if (typeof v !== 'string') this.fail(key, 'a string');
    return v;
  }

  strings(key: string): string[] {
    const v = this.values[key];
    if (!Array.isArray(v) || v.length === 0 || v.some((s) => typeof s !== 'string')) this.fail(key, 'a non-empty list of strings');
    return v as string[];
  }

  ints(key: string): number[] {
    const v = this.values[key];
    if (!Array.isArray(v) || v.length === 0 || v.some((s) => !Number.isInteger(s) || s <= 0)) this.fail(key, 'a non-empty list of positive integers');
    return v as number[];
  }

  /** An int or a list of `n` ints (per block), as a list. */
  perBlock(key: string, n: number, fallback?: number): number[] {
    const v = this.values[key] ?? fallback;
    if (Array.isArray(v)) {
      if (v.length !== n || v.some((s) => !Number.isInteger(s) || s <= 0)) this.fail(key, `a positive integer or a list of ${n} of them (one per block)`);
      return v as number[];
    }
    if (!Number.isInteger(v) || (v as number) <= 0) this.fail(key, `a positive integer or a list of ${n} of them (one per block)`);
    return Array<number>(n).fill(v as number);
  }

  /** A bool or a list of `n` bools, as a list. */
  perBlockBool(key: string, n: number, fallback: boolean): boolean[] {
    const v = this.values[key] ?? fallback;
    if (Array.isArray(v)) {
      if (v.length !== n || v.some((s) => typeof s !== 'boolean')) this.fail(key, `true/false or a list of ${n} of them`);
      return v as boolean[];
    }
    if (typeof v !== 'boolean') this.fail(key, `true/false or a list of ${n} of them`);
    return Array<boolean>(n).fill(v);
  }

  /** Throws when `key` is set to anything but one of `supported` (absent and null count as the default). */
  expectDefault(key: string, supported: readonly unknown[]): void {
    const v = this.values[key] ?? null;
    if (!supported.includes(v)) this.fail(key, `one of ${supported.map((s) => JSON.stringify(s)).join(', ')} (other values are not supported)`);
  }
}

/** The weights file of a diffusers model folder, in diffusers' order of preference. */
export function findWeights(dir: string): string {
  const base = dir.replace(/\/$/, '');
  const names = ['diffusion_pytorch_model.safetensors', 'model.safetensors', 'diffusion_pytorch_model.fp16.safetensors', 'model.fp16.safetensors'];
  const fs = nodeFs(`reading ${base}`) as unknown as { existsSync(p: string): boolean };
  const found = names.map((n) => `${base}/${n}`).find((p) => fs.existsSync(p));
  if (!found) throw new Error(`${base}: no weights file (looked for ${names.join(', ')})`);
  return found;
}

export interface WeightsOptions {
  /**
   * Weight storage. 'f16': every Linear/Conv weight (floating parameter of rank ≥ 2) stays f16 on the GPU,
   * half the memory, read by the layers' kernels with f32 arithmetic (`Module.half()`); f32 files are
   * converted on the CPU tensor by tensor. Inference only: those weights are frozen. Default 'f32'.
   */
  dtype?: 'f32' | 'f16';
}

/**
 * A model of a diffusers folder: `build` makes it from config.json, then the weights file is streamed into it
 * (the model is freed when that fails); returned in eval mode.
 */
export function fromFolder<M extends Module>(dir: string, build: (config: DiffusersConfig) => M, { dtype = 'f32' }: WeightsOptions = {}): M {
  // the strict load below overwrites every parameter: no random initial values needed (minutes for SD's UNet)
  const config = DiffusersConfig.read(dir);
  const model = skipInit(() => (dtype === 'f16' ? halfWeights(() => build(config)) : build(config)));
  try {
    loadWeights(model, findWeights(dir));
  } catch (e) {
    model.dispose();
    throw e;
  }
  return model.eval();
}

/** Attention weight names of checkpoints saved before diffusers 0.14 (SD 1.x VAEs), and today's names. */
const legacyAttention: [RegExp, string][] = [[/\.query\./, '.to_q.'], [/\.key\./, '.to_k.'], [/\.value\./, '.to_v.'], [/\.proj_attn\./, '.to_out.0.']];

function currentName(key: string): string {
  return legacyAttention.reduce((k, [from, to]) => k.replace(from, to), key);
}

/**
 * Streams `file` into `model` (strict: every key present with the right shape), converted to the dtype of
 * each of the model's tensors (f16 → f32, or f32 → f16 for a `half()` model). Legacy
 * attention names (query/key/value/proj_attn, as in SD 1.x VAE files) are renamed as diffusers does on load;
 * such files are read whole into GPU tensors first.
 */
export function loadWeights(model: Module, file: string): void {
  // tensors stored in f16 by the model (`half()`) are read as f16 (an f32 file converted on the CPU); then
  // F16 tensors stay f16 on upload and the model's f32 ones are cast on the GPU as they load
  const half = model.halfKeys();
  const reader = loadSafetensors(file, half.size ? { asF16: (name) => half.has(currentName(name)) } : { f16ToF32: true });
  try {
    if (![...reader.keys()].some((k) => currentName(k) !== k)) {
      model.loadStateDict(reader);
      return;
    }
    const renamed = new Map<string, Tensor>();
    try {
      for (const key of reader.keys()) renamed.set(currentName(key), reader.get(key));
      model.loadStateDict(renamed);
    } catch (e) {
      throw new Error(`${file} (legacy attention names renamed): ${(e as Error).message}`);
    } finally {
      for (const t of renamed.values()) t.dispose();
    }
  } finally {
    reader.close();
  }
}
