// Reading a diffusers model folder: config.json (through ConfigReader: errors name the file and key) and the
// weights file (f32 or f16 safetensors, streamed tensor by tensor into the model in the model's dtypes).

import { ConfigReader, findWeights, joinPath, readJson } from '../pretrained.ts';
import { loadSafetensors } from '../../io/safetensors.ts';
import type { Tensor } from '../../engine/tensor.ts';
import { type Module, halfWeights } from '../../nn/module.ts';
import { skipInit } from '../../nn/layers.ts';

export interface WeightsOptions {
  /**
   * Weight storage. 'f16': every Linear/Conv weight (floating parameter of rank ≥ 2) stays f16 on the GPU,
   * half the memory, read by the layers' kernels with f32 arithmetic (`Module.half()`); f32 files are
   * converted on the CPU tensor by tensor. Inference only: those weights are frozen. Default 'f32'.
   */
  dtype?: 'f32' | 'f16';
  /** 'fp16': prefer the folder's `*.fp16.safetensors` file when both exist. */
  variant?: 'fp16';
}

/**
 * A model of a folder (diffusers', or any config.json + model.safetensors): `build` makes it from config.json,
 * then the weights file is streamed into it (the model is freed when that fails); returned in eval mode.
 */
export function fromFolder<M extends Module>(dir: string, build: (config: ConfigReader) => M, { dtype = 'f32', variant }: WeightsOptions = {}): M {
  // the strict load below overwrites every parameter: no random initial values needed (minutes for SD's UNet)
  const file = joinPath(dir, 'config.json');
  const config = new ConfigReader(readJson(file), file);
  const model = skipInit(() => (dtype === 'f16' ? halfWeights(() => build(config)) : build(config)));
  try {
    loadWeights(model, findWeights(dir, ['diffusion_pytorch_model', 'model'], variant));
  } catch (e) {
    model.dispose();
    throw e;
  }
  return model.eval();
}

/** Attention weight names of checkpoints saved before diffusers 0.14 (SD 1.x VAEs), and today's names. */
const legacyAttention: [RegExp, string][] = [[/\.query\./, '.to_q.'], [/\.key\./, '.to_k.'], [/\.value\./, '.to_v.'], [/\.proj_attn\./, '.to_out.0.']];

/** A key the model lacks under a legacy attention name, renamed; every other key as it is (a transformers Swin's own attention is `query`/`key`/`value`). */
function currentName(key: string, wanted: ReadonlySet<string>): string {
  return wanted.has(key) ? key : legacyAttention.reduce((k, [from, to]) => k.replace(from, to), key);
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
  const wanted = new Set(Object.keys(model.stateDict()));
  const reader = loadSafetensors(file, half.size ? { asF16: (name) => half.has(currentName(name, wanted)) } : { f16ToF32: true });
  try {
    if (![...reader.keys()].some((k) => currentName(k, wanted) !== k)) {
      model.loadStateDict(reader);
      return;
    }
    const renamed = new Map<string, Tensor>();
    try {
      for (const key of reader.keys()) renamed.set(currentName(key, wanted), reader.get(key));
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
