// CLIPTextModel: every tensor of ../shared/conformance/clip_text (transformers 4.57.6), another config against
// a naive float64 CPU implementation written here, and load errors.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { assertClose, assertTensorClose, conformance, conformanceDir, erf, randomArray } from './helpers.ts';
import { Tensor, f16ToF32, f32ToF16, numel } from '../src/engine/tensor.ts';
import { embedding } from '../src/kernels/gather.ts';
import { loadSafetensors, saveSafetensors } from '../src/io/safetensors.ts';
import { CLIPTextModel, clipTextConfig } from '../src/models/clip_text_model.ts';

const fs = process.getBuiltinModule('node:fs');
const os = process.getBuiltinModule('node:os');
const path = process.getBuiltinModule('node:path');

const TOL = 1e-4; // clip_text/README.md
const dir = `${conformanceDir}/clip_text`;
const io = conformance('clip_text');

test('clip_text: hidden states per layer, last hidden state, pooled output (transformers vectors)', async () => {
  const model = CLIPTextModel.fromPretrained(dir);
  const ids = io.get('input_ids');
  const out = model.forwardWithOutputs(ids, { outputHiddenStates: true });
  assert.is(out.hiddenStates!.length, 3);
  for (let k = 0; k < 3; k++) await assertTensorClose(out.hiddenStates![k]!, io.get(`hidden_states.${k}`), TOL, `hidden_states.${k}`);
  await assertTensorClose(out.lastHiddenState, io.get('last_hidden_state'), TOL, 'last_hidden_state');
  await assertTensorClose(out.pooledOutput, io.get('pooler_output'), TOL, 'pooler_output');
  // forward() = last hidden state, from a tensor or from plain id arrays
  const rows = Array.from(await ids.toArray());
  const asArrays = [rows.slice(0, 77), rows.slice(77)];
  await assertTensorClose(model.forward(ids), io.get('last_hidden_state'), TOL, 'forward(tensor)');
  await assertTensorClose(model.forward(asArrays), io.get('last_hidden_state'), TOL, 'forward(number[][])');
  model.dispose();
});

test('clip_text: clipSkip 1 = final_layer_norm(hidden_states.1) (SD 2.x penultimate layer)', async () => {
  const model = CLIPTextModel.fromPretrained(dir);
  const ln = model.text_model.final_layer_norm;
  const ref = cpuLayerNorm(await io.get('hidden_states.1').toArray(), await ln.weight!.toArray(), await ln.bias!.toArray(), 32, 1e-5);
  assertClose(await model.forward(io.get('input_ids'), { clipSkip: 1 }).toArray(), ref, TOL, 'clipSkip 1');
  assert.throws(() => model.forward(io.get('input_ids'), { clipSkip: 2 }), /clipSkip must be an integer in \[0, 1\]/);
  model.dispose();
});

test('clip_text: eos_token_id 2 (old configs) pools at argmax(input_ids); old checkpoints\' position_ids are passed over', async () => {
  const json = JSON.parse(fs.readFileSync(`${dir}/config.json`, 'utf8'));
  const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'freemask-clip-'));
  fs.writeFileSync(`${tmp}/config.json`, JSON.stringify({ ...json, eos_token_id: 2 }));
  const weights = loadSafetensors(`${dir}/model.safetensors`);
  const positionIds = new BigInt64Array(77).map((_, k) => BigInt(k));
  await saveSafetensors(`${tmp}/model.safetensors`, {
    ...Object.fromEntries(weights.entries()), 'text_model.embeddings.position_ids': { dtype: 'I64', shape: [1, 77], data: positionIds },
  });
  const model = CLIPTextModel.fromPretrained(tmp);
  assert.is(model.config.eosTokenId, 2);
  await assertTensorClose(model.forwardWithOutputs(io.get('input_ids')).pooledOutput, io.get('pooler_output'), TOL, 'pooler_output (argmax)');
  model.dispose();
});

test('embedding: an f16 table gives its rows as f32 (odd row length, ids of any shape)', async () => {
  const table = randomArray(7 * 5, 77, -2, 2);
  const half = Uint16Array.from(table, f32ToF16);
  const ids = [6, 0, 3, 3, 1, 5];
  const out = embedding(Tensor.fromArray(Int32Array.from(ids), [2, 3]), Tensor.fromArray(half, [7, 5], 'f16'));
  assert.equal([...out.shape], [2, 3, 5]);
  assertClose(await out.toArray(), ids.flatMap((id) => Array.from(half.slice(id * 5, id * 5 + 5), f16ToF32)), 0, 'rows');
});

test('clip_text: an f16 token table (what a vocabulary too large for one f32 buffer uses) equals f32 with the rounded table', async () => {
  const half = CLIPTextModel.fromPretrained(dir, { tokenEmbeddingDType: 'f16' });
  assert.is(half.tokenEmbeddingDType, 'f16');
  assert.ok(half.stateDict()['text_model.embeddings.token_embedding.weight'], 'same state_dict key');
  const full = CLIPTextModel.fromPretrained(dir);
  assert.is(full.tokenEmbeddingDType, 'f32');
  const table = full.text_model.embeddings.token_embedding.weight;
  const rounded = Float32Array.from(await table.toArray(), (v) => f16ToF32(f32ToF16(v)));
  table.copyFrom(Tensor.fromArray(rounded, table.shape));
  const ids = io.get('input_ids');
  assertClose(await half.forward(ids).toArray(), await full.forward(ids).toArray(), 1e-6, 'last hidden state');
  half.dispose();
  full.dispose();
});

// ---------------------------------------------------------------- another config vs a naive CPU model

const other = {
  vocab_size: 50, hidden_size: 24, intermediate_size: 40, num_hidden_layers: 2, num_attention_heads: 3,
  max_position_embeddings: 12, hidden_act: 'gelu', layer_norm_eps: 1e-5, eos_token_id: 49,
};

test('clip_text: other config (24 hidden, 3 heads, gelu, batch 1, 9 tokens) matches a naive float64 CPU model, from an fp16 file', async () => {
  const config = clipTextConfig(other);
  const model = new CLIPTextModel(config);
  let seed = 40;
  const weights: Record<string, Float32Array> = {};
  for (const [name, t] of Object.entries(model.stateDict())) {
    const scale = name.includes('norm') && name.endsWith('weight') ? [0.5, 1.5] : [-0.5, 0.5];
    weights[name] = randomArray(numel(t.shape), seed++, scale[0], scale[1]);
  }
  // Written as an fp16 variant: the loader finds it and converts; the CPU model uses the rounded values.
  const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'freemask-clip-'));
  fs.writeFileSync(`${tmp}/config.json`, JSON.stringify(other));
  const record: Record<string, Tensor> = {};
  for (const [name, t] of Object.entries(model.stateDict())) record[name] = Tensor.fromArray(Uint16Array.from(weights[name]!, f32ToF16), t.shape, 'f16');
  await saveSafetensors(`${tmp}/model.fp16.safetensors`, record);
  model.dispose();
  for (const name of Object.keys(weights)) weights[name] = (await record[name]!.toArray()) as Float32Array;
  const loaded = CLIPTextModel.fromPretrained(tmp, { variant: 'fp16' });
  const ids = [0, 7, 23, 49, 3, 3, 49, 11, 2];
  const out = loaded.forwardWithOutputs([ids], { outputHiddenStates: true });
  const ref = cpuClip(weights, other, ids);
  for (let k = 0; k < ref.hidden.length; k++) assertClose(await out.hiddenStates![k]!.toArray(), ref.hidden[k]!, TOL, `hidden_states.${k}`);
  assertClose(await out.lastHiddenState.toArray(), ref.last, TOL, 'last_hidden_state');
  // eos_token_id 49: the first position holding 49 (3), not the last
  assertClose(await out.pooledOutput.toArray(), ref.last.slice(3 * 24, 4 * 24), TOL, 'pooled output');
  loaded.dispose();
});

type Weights = Record<string, Float32Array>;

function cpuLayerNorm(x: ArrayLike<number>, w: ArrayLike<number>, b: ArrayLike<number>, H: number, eps: number): Float64Array {
  const out = new Float64Array(x.length);
  for (let r = 0; r < x.length / H; r++) {
    let m = 0;
    for (let j = 0; j < H; j++) m += x[r * H + j]!;
    m /= H;
    let v = 0;
    for (let j = 0; j < H; j++) v += (x[r * H + j]! - m) ** 2;
    v /= H;
    for (let j = 0; j < H; j++) out[r * H + j] = ((x[r * H + j]! - m) / Math.sqrt(v + eps)) * w[j]! + b[j]!;
  }
  return out;
}

function cpuLinear(x: ArrayLike<number>, w: ArrayLike<number>, b: ArrayLike<number>, inF: number, outF: number): Float64Array {
  const rows = x.length / inF;
  const out = new Float64Array(rows * outF);
  for (let r = 0; r < rows; r++) {
    for (let o = 0; o < outF; o++) {
      let s = b[o]!;
      for (let i = 0; i < inF; i++) s += x[r * inF + i]! * w[o * inF + i]!;
      out[r * outF + o] = s;
    }
  }
  return out;
}

/** transformers' CLIPTextModel forward, written from its definition, in float64. */
function cpuClip(W: Weights, c: typeof other, ids: number[]): { hidden: Float64Array[]; last: Float64Array } {
  const H = c.hidden_size;
  const L = ids.length;
  const heads = c.num_attention_heads;
  const D = H / heads;
  const p = 'text_model.';
  let x = new Float64Array(L * H);
  for (let t = 0; t < L; t++) {
    for (let j = 0; j < H; j++) x[t * H + j] = W[`${p}embeddings.token_embedding.weight`]![ids[t]! * H + j]! + W[`${p}embeddings.position_embedding.weight`]![t * H + j]!;
  }
  const hidden = [x];
  for (let l = 0; l < c.num_hidden_layers; l++) {
    const q = (n: string) => W[`${p}encoder.layers.${l}.${n}`]!;
    const h1 = cpuLayerNorm(x, q('layer_norm1.weight'), q('layer_norm1.bias'), H, c.layer_norm_eps);
    const Q = cpuLinear(h1, q('self_attn.q_proj.weight'), q('self_attn.q_proj.bias'), H, H);
    const K = cpuLinear(h1, q('self_attn.k_proj.weight'), q('self_attn.k_proj.bias'), H, H);
    const V = cpuLinear(h1, q('self_attn.v_proj.weight'), q('self_attn.v_proj.bias'), H, H);
    const att = new Float64Array(L * H);
    for (let h = 0; h < heads; h++) {
      for (let i = 0; i < L; i++) {
        const s: number[] = [];
        for (let j = 0; j <= i; j++) {
          let dot = 0;
          for (let d = 0; d < D; d++) dot += Q[i * H + h * D + d]! * K[j * H + h * D + d]!;
          s.push(dot / Math.sqrt(D));
        }
        const mx = Math.max(...s);
        const e = s.map((v) => Math.exp(v - mx));
        const z = e.reduce((a, b) => a + b, 0);
        for (let d = 0; d < D; d++) att[i * H + h * D + d] = e.reduce((a, w, j) => a + (w / z) * V[j * H + h * D + d]!, 0);
      }
    }
    const o = cpuLinear(att, q('self_attn.out_proj.weight'), q('self_attn.out_proj.bias'), H, H);
    const r1 = x.map((v, k) => v + o[k]!);
    const h2 = cpuLayerNorm(r1, q('layer_norm2.weight'), q('layer_norm2.bias'), H, c.layer_norm_eps);
    const f1 = cpuLinear(h2, q('mlp.fc1.weight'), q('mlp.fc1.bias'), H, c.intermediate_size).map((v) => 0.5 * v * (1 + erf(v / Math.SQRT2)));
    const f2 = cpuLinear(f1, q('mlp.fc2.weight'), q('mlp.fc2.bias'), c.intermediate_size, H);
    x = r1.map((v, k) => v + f2[k]!);
    hidden.push(x);
  }
  const last = cpuLayerNorm(x, W[`${p}final_layer_norm.weight`]!, W[`${p}final_layer_norm.bias`]!, H, c.layer_norm_eps);
  return { hidden, last };
}

// ---------------------------------------------------------------- load errors

function folderWith(config: object): string {
  const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'freemask-clip-'));
  fs.writeFileSync(`${tmp}/config.json`, JSON.stringify(config));
  return tmp;
}

test('clip_text: load errors name the file, key and shape', async () => {
  const small = { ...other, num_hidden_layers: 1 };
  const model = new CLIPTextModel(clipTextConfig(small));
  const sd = model.stateDict();
  const missing = folderWith(small);
  const { ['text_model.encoder.layers.0.mlp.fc2.bias']: _dropped, ...rest } = sd;
  await saveSafetensors(`${missing}/model.safetensors`, rest);
  assert.throws(() => CLIPTextModel.fromPretrained(missing), /missing keys \(1\): text_model\.encoder\.layers\.0\.mlp\.fc2\.bias/);

  const wrong = folderWith(small);
  await saveSafetensors(`${wrong}/model.safetensors`, { ...sd, 'text_model.final_layer_norm.weight': Tensor.zeros([23]) });
  assert.throws(() => CLIPTextModel.fromPretrained(wrong), /wrong shape: text_model\.final_layer_norm\.weight expected \[24\], found \[23\]/);

  // a missing key takes transformers' default (hidden_size 512), which these weights do not fit
  const { hidden_size: _h, ...noHidden } = small;
  const noKey = folderWith({ ...noHidden, num_attention_heads: 4 });
  await saveSafetensors(`${noKey}/model.safetensors`, sd);
  assert.throws(() => CLIPTextModel.fromPretrained(noKey), /wrong shape: text_model\.embeddings\.token_embedding\.weight expected \[50, 512\], found \[50, 24\]/);
  assert.throws(() => clipTextConfig({ ...small, hidden_size: 0 }), /"hidden_size" must be an integer >= 1, got 0/);
  assert.throws(() => clipTextConfig({ ...small, hidden_act: 'sine' }), /"hidden_act" must be an activation name/);
  assert.throws(() => clipTextConfig({ ...small, num_attention_heads: 5 }), /hidden_size 24 is not divisible by num_attention_heads 5/);

  const noWeights = folderWith(small);
  fs.writeFileSync(`${noWeights}/pytorch_model.bin`, '');
  assert.throws(() => CLIPTextModel.fromPretrained(noWeights), /no weights file, looked for model\.safetensors, model\.fp16\.safetensors/);
  assert.throws(() => CLIPTextModel.fromPretrained(`${noWeights}/nowhere`), /config\.json is missing/);
  assert.throws(() => model.forward([[1, 2, 50]]), /token id 50 \(row 0, position 2\) is outside the vocabulary \[0, 50\)/);
  assert.throws(() => model.forward([Array(13).fill(1)]), /sequence length 13 is outside \[1, 12\]/);
  model.dispose();
});

test.run();
