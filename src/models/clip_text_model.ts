// CLIP's text transformer as transformers' CLIPTextModel (SD's text_encoder): token + position embeddings,
// pre-LayerNorm encoder layers with causal self-attention and an MLP, a final LayerNorm, and the pooled output
// at the end token. Module tree and parameter names = CLIPTextModel.state_dict(); config = its config.json.

import { device } from '../engine/device.ts';
import { Tensor, tidy } from '../engine/tensor.ts';
import { add, cast, map } from '../kernels/elementwise.ts';
import { argmax } from '../kernels/reduce.ts';
import { embedding, indexSelect } from '../kernels/gather.ts';
import { permute, reshape } from '../kernels/shape.ts';
import { scaledDotProductAttention } from '../kernels/attention.ts';
import { loadSafetensors } from '../io/safetensors.ts';
import { Module, ModuleList, halfWeights } from '../nn/module.ts';
import { LayerNorm, Linear, skipInit } from '../nn/layers.ts';
import { type ActivationName, ConfigReader, type JsonConfig, activate, findWeights, joinPath, readJson } from './pretrained.ts';

export interface CLIPTextConfig {
  vocabSize: number;
  hiddenSize: number;
  intermediateSize: number;
  numHiddenLayers: number;
  numAttentionHeads: number;
  maxPositionEmbeddings: number;
  hiddenAct: ActivationName;
  layerNormEps: number;
  /** 2 in old configs: the pooled output then takes argmax(input_ids) (CLIP's end token is the largest id). */
  eosTokenId: number;
}

/** The config from a transformers CLIPTextConfig `config.json` object (`source` names it in errors). */
export function clipTextConfig(json: JsonConfig, source = 'config.json'): CLIPTextConfig {
  // A full CLIPConfig keeps the text model's settings under text_config.
  const root = new ConfigReader(json, source);
  const c = root.child('text_config') ?? root;
  // missing keys take transformers' CLIPTextConfig defaults
  const hiddenSize = c.int('hidden_size', 512, 1);
  const numAttentionHeads = c.int('num_attention_heads', 8, 1);
  if (hiddenSize % numAttentionHeads) throw new Error(`${c.source}: hidden_size ${hiddenSize} is not divisible by num_attention_heads ${numAttentionHeads}`);
  return {
    vocabSize: c.int('vocab_size', 49408, 1),
    hiddenSize,
    intermediateSize: c.int('intermediate_size', 2048, 1),
    numHiddenLayers: c.int('num_hidden_layers', 12, 1),
    numAttentionHeads,
    maxPositionEmbeddings: c.int('max_position_embeddings', 77, 1),
    hiddenAct: c.activation('hidden_act', 'quick_gelu'),
    layerNormEps: c.number('layer_norm_eps', 1e-5),
    eosTokenId: c.int('eos_token_id', 49407),
  };
}

export interface CLIPTextOutput {
  lastHiddenState: Tensor;
  /** lastHiddenState at each sequence's end token, [batch, hidden]. */
  pooledOutput: Tensor;
  /** The embeddings, then every layer's output (before the final LayerNorm), when asked for. */
  hiddenStates?: Tensor[];
}

export interface CLIPTextForwardOptions {
  /**
   * Skip the last `clipSkip` layers: 1 gives final_layer_norm(penultimate layer's output), what SD 2.x and
   * diffusers' `clip_skip=1` feed the UNet. 0 (default) = last hidden state.
   */
  clipSkip?: number;
}

class CLIPTextEmbeddings extends Module {
  readonly token_embedding: Module & { weight: Tensor };
  readonly position_embedding: Module & { weight: Tensor };
  constructor(c: CLIPTextConfig, tokenDType: 'f32' | 'f16') {
    super();
    this.token_embedding = this.module('token_embedding', embeddingModule(c.vocabSize, c.hiddenSize, tokenDType));
    this.position_embedding = this.module('position_embedding', embeddingModule(c.maxPositionEmbeddings, c.hiddenSize, 'f32'));
  }
  forward(ids: Tensor): Tensor {
    const [, L] = ids.shape as [number, number];
    return tidy(() => {
      const positions = Tensor.fromArray(Int32Array.from({ length: L }, (_, k) => k), [L]);
      return add(embedding(ids, this.token_embedding.weight), embedding(positions, this.position_embedding.weight));
    });
  }
}

/**
 * nn.Embedding's `weight` [num, dim] (zeros until a checkpoint is loaded); an f16 table is a frozen buffer
 * under the same state_dict key.
 */
function embeddingModule(num: number, dim: number, dtype: 'f32' | 'f16'): Module & { weight: Tensor } {
  const m = new Module() as Module & { weight: Tensor };
  m.weight = dtype === 'f32' ? m.param('weight', Tensor.zeros([num, dim])) : m.buffer('weight', Tensor.zeros([num, dim], 'f16'));
  return m;
}

class CLIPAttention extends Module {
  readonly q_proj: Linear;
  readonly k_proj: Linear;
  readonly v_proj: Linear;
  readonly out_proj: Linear;
  constructor(readonly c: CLIPTextConfig) {
    super();
    const h = c.hiddenSize;
    this.k_proj = this.module('k_proj', new Linear(h, h));
    this.v_proj = this.module('v_proj', new Linear(h, h));
    this.q_proj = this.module('q_proj', new Linear(h, h));
    this.out_proj = this.module('out_proj', new Linear(h, h));
  }
  forward(x: Tensor): Tensor {
    const [B, L, H] = x.shape as [number, number, number];
    const heads = this.c.numAttentionHeads;
    return tidy(() => {
      const split = (t: Tensor) => permute(reshape(t, [B, L, heads, H / heads]), [0, 2, 1, 3]);
      // Causal, and no padding mask: SD passes no attention_mask.
      const o = scaledDotProductAttention(split(this.q_proj.forward(x)), split(this.k_proj.forward(x)), split(this.v_proj.forward(x)), { causal: true });
      return this.out_proj.forward(reshape(permute(o, [0, 2, 1, 3]), [B, L, H]));
    });
  }
}

class CLIPMLP extends Module {
  readonly fc1: Linear;
  readonly fc2: Linear;
  constructor(readonly c: CLIPTextConfig) {
    super();
    this.fc1 = this.module('fc1', new Linear(c.hiddenSize, c.intermediateSize));
    this.fc2 = this.module('fc2', new Linear(c.intermediateSize, c.hiddenSize));
  }
  forward(x: Tensor): Tensor {
    return tidy(() => this.fc2.forward(activate(this.c.hiddenAct, this.fc1.forward(x))));
  }
}

class CLIPEncoderLayer extends Module {
  readonly self_attn: CLIPAttention;
  readonly layer_norm1: LayerNorm;
  readonly mlp: CLIPMLP;
  readonly layer_norm2: LayerNorm;
  constructor(c: CLIPTextConfig) {
    super();
    this.self_attn = this.module('self_attn', new CLIPAttention(c));
    this.layer_norm1 = this.module('layer_norm1', new LayerNorm(c.hiddenSize, { eps: c.layerNormEps }));
    this.mlp = this.module('mlp', new CLIPMLP(c));
    this.layer_norm2 = this.module('layer_norm2', new LayerNorm(c.hiddenSize, { eps: c.layerNormEps }));
  }
  forward(x: Tensor): Tensor {
    return tidy(() => {
      const h = add(x, this.self_attn.forward(this.layer_norm1.forward(x)));
      return add(h, this.mlp.forward(this.layer_norm2.forward(h)));
    });
  }
}

class CLIPEncoder extends Module {
  readonly layers: ModuleList<CLIPEncoderLayer>;
  constructor(c: CLIPTextConfig) {
    super();
    this.layers = this.module('layers', new ModuleList(Array.from({ length: c.numHiddenLayers }, () => new CLIPEncoderLayer(c))));
  }
}

class CLIPTextTransformer extends Module {
  readonly embeddings: CLIPTextEmbeddings;
  readonly encoder: CLIPEncoder;
  readonly final_layer_norm: LayerNorm;
  constructor(c: CLIPTextConfig, tokenDType: 'f32' | 'f16') {
    super();
    this.embeddings = this.module('embeddings', new CLIPTextEmbeddings(c, tokenDType));
    this.encoder = this.module('encoder', new CLIPEncoder(c));
    this.final_layer_norm = this.module('final_layer_norm', new LayerNorm(c.hiddenSize, { eps: c.layerNormEps }));
  }
}

export interface CLIPTextModelOptions {
  /**
   * Storage of the token embedding table. Default: f32, or f16 when an f32 table would exceed the device's
   * largest storage buffer (SD 1.x's 49408 × 768 f32 table is 152 MB, over lavapipe's and many browsers' 128 MiB);
   * rows are read back as f32 either way.
   */
  tokenEmbeddingDType?: 'f32' | 'f16';
}

export interface CLIPTextLoadOptions extends CLIPTextModelOptions {
  /** Prefer `model.fp16.safetensors`. */
  variant?: 'fp16';
  /**
   * Weight storage (`fromPretrained` only): 'f16' keeps every Linear weight and embedding table in f16 on the
   * GPU (`Module.half()`, inference only), 'f32' (default) converts f16 files to f32.
   */
  dtype?: 'f32' | 'f16';
}

export class CLIPTextModel extends Module {
  readonly config: CLIPTextConfig;
  readonly text_model: CLIPTextTransformer;

  constructor(config: CLIPTextConfig, { tokenEmbeddingDType }: CLIPTextModelOptions = {}) {
    super();
    this.config = config;
    const f32Bytes = config.vocabSize * config.hiddenSize * 4;
    const dtype = tokenEmbeddingDType ?? (f32Bytes > device().limits.maxStorageBufferBindingSize ? 'f16' : 'f32');
    this.text_model = this.module('text_model', new CLIPTextTransformer(config, dtype));
  }

  /** The token embedding table's storage dtype. */
  get tokenEmbeddingDType(): 'f32' | 'f16' {
    return this.text_model.embeddings.token_embedding.weight.dtype as 'f32' | 'f16';
  }

  /**
   * From a transformers folder (e.g. an SD checkpoint's `text_encoder/`): `config.json` and `model.safetensors`
   * (or `model.fp16.safetensors`; f16 weights are converted to f32 on load unless `dtype: 'f16'`). Every key must match.
   */
  static fromPretrained(dir: string, { variant, dtype = 'f32', ...options }: CLIPTextLoadOptions = {}): CLIPTextModel {
    const configPath = joinPath(dir, 'config.json');
    // every parameter is loaded strictly below, so none needs its random initial values
    const build = () => new CLIPTextModel(clipTextConfig(readJson(configPath), configPath), options);
    const model = skipInit(() => (dtype === 'f16' ? halfWeights(build) : build()));
    // tensors the model stores in f16 (the token table, or every weight with dtype 'f16') are read as f16
    const half = model.halfKeys();
    const reader = loadSafetensors(findWeights(dir, ['model'], variant), { asF16: (name) => half.has(name) });
    try {
      // Checkpoints saved by transformers < 4.31 (SD 1.x's among them) also hold the position_ids buffer.
      model.loadStateDict(reader, { ignore: (name) => name === 'text_model.embeddings.position_ids' });
    } catch (e) {
      model.dispose();
      throw e;
    } finally {
      reader.close();
    }
    return model.eval().requireGrad(false);
  }

  /** The text states SD feeds the UNet, [batch, seq, hidden] (the last hidden state, or an earlier layer's with `clipSkip`). */
  forward(inputIds: Tensor | readonly number[] | readonly (readonly number[])[], { clipSkip = 0 }: CLIPTextForwardOptions = {}): Tensor {
    const L = this.config.numHiddenLayers;
    if (!Number.isInteger(clipSkip) || clipSkip < 0 || clipSkip >= L) throw new Error(`CLIPTextModel.forward: clipSkip must be an integer in [0, ${L - 1}], got ${clipSkip}`);
    return tidy(() => {
      const states = this.#encode(this.#ids(inputIds), L - clipSkip, false);
      return this.text_model.final_layer_norm.forward(states[states.length - 1]!);
    });
  }

  /** Last hidden state, pooled output and (with `outputHiddenStates`) every layer's hidden state, as transformers returns them. */
  forwardWithOutputs(inputIds: Tensor | readonly number[] | readonly (readonly number[])[], { outputHiddenStates = false } = {}): CLIPTextOutput {
    return tidy(() => {
      const ids = this.#ids(inputIds);
      const hiddenStates = this.#encode(ids, this.config.numHiddenLayers, outputHiddenStates);
      const lastHiddenState = this.text_model.final_layer_norm.forward(hiddenStates[hiddenStates.length - 1]!);
      const pooledOutput = this.#pool(lastHiddenState, ids);
      return outputHiddenStates ? { lastHiddenState, pooledOutput, hiddenStates } : { lastHiddenState, pooledOutput };
    });
  }

  /** Embeddings then `layers` encoder layers; returns all states when `all`, else just the last. */
  #encode(ids: Tensor, layers: number, all: boolean): Tensor[] {
    let h = this.text_model.embeddings.forward(ids);
    const states = [h];
    for (let k = 0; k < layers; k++) {
      h = this.text_model.encoder.layers.at(k).forward(h);
      if (!all) states.pop()!.dispose();
      states.push(h);
    }
    return states;
  }

  /** i32 [batch, seq] ids, checked against the vocabulary size and the position table. */
  #ids(inputIds: Tensor | readonly number[] | readonly (readonly number[])[]): Tensor {
    const op = 'CLIPTextModel';
    if (inputIds instanceof Tensor) {
      if (inputIds.rank !== 2) throw new Error(`${op}: input_ids must be [batch, seq], got ${inputIds}`);
      this.#checkLength(inputIds.shape[1]!);
      return inputIds.dtype === 'i32' ? inputIds.alias() : cast(inputIds, 'i32');
    }
    const rows = (typeof inputIds[0] === 'number' ? [inputIds] : inputIds) as readonly (readonly number[])[];
    const L = rows[0]?.length ?? 0;
    this.#checkLength(L);
    const flat = new Int32Array(rows.length * L);
    rows.forEach((r, b) => {
      if (r.length !== L) throw new Error(`${op}: input_ids rows have different lengths (${L} and ${r.length})`);
      r.forEach((id, k) => {
        if (!Number.isInteger(id) || id < 0 || id >= this.config.vocabSize) throw new Error(`${op}: token id ${id} (row ${b}, position ${k}) is outside the vocabulary [0, ${this.config.vocabSize})`);
        flat[b * L + k] = id;
      });
    });
    return Tensor.fromArray(flat, [rows.length, L]);
  }

  #checkLength(L: number): void {
    if (L < 1 || L > this.config.maxPositionEmbeddings) {
      throw new Error(`CLIPTextModel: sequence length ${L} is outside [1, ${this.config.maxPositionEmbeddings}] (max_position_embeddings)`);
    }
  }

  /**
   * The state at each row's end token. transformers: with eos_token_id 2 (old configs) the argmax of the ids,
   * else the first position holding eos_token_id.
   */
  #pool(last: Tensor, ids: Tensor): Tensor {
    const [B, L, H] = last.shape as [number, number, number];
    const eos = this.config.eosTokenId;
    // Scores whose first maximum is the wanted position: the id itself, or L - k where ids == eos.
    const score = eos === 2 ? cast(ids, 'f32') : map('clip.eos_first', `select(0.0, f32(${L}u - i % ${L}u), x == ${eos}i)`, { x: ids });
    const pos = argmax(score, 1);
    const rowStart = Tensor.fromArray(Int32Array.from({ length: B }, (_, b) => b * L), [B]);
    const flatIndex = map('clip.pool_index', 'p + s', { p: pos, s: rowStart }, { dtype: 'i32' });
    return indexSelect(reshape(last, [B * L, H]), 0, flatIndex);
  }
}
