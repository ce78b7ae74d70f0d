// UNet2DConditionModel against diffusers (../shared/conformance/unet): the noise prediction and every self- and
// cross-attention probability map by module name; then another config (3 blocks, linear projections, per-block
// heads, non-square latents) for shapes, load errors, and one Transformer2DModel against a naive CPU version.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { assertClose, assertTensorClose, conformance, conformanceDir, randomArray } from './helpers.ts';
import { Tensor, memoryStats } from '../src/engine/tensor.ts';
import { manualSeed } from '../src/engine/random-cpu.ts';
import { saveSafetensors } from '../src/io/safetensors.ts';
import { reshape } from '../src/kernels/shape.ts';
import { Linear } from '../src/nn/layers.ts';
import { AttentionCapture } from '../src/models/attention_capture.ts';
import { multiHeadAttention } from '../src/models/diffusers/attention.ts';
import { deviceInfo } from '../src/engine/device.ts';
import { ConfigReader } from '../src/models/pretrained.ts';
import { Transformer2DModel } from '../src/models/diffusers/transformer_2d.ts';
import { Timesteps } from '../src/models/diffusers/embeddings.ts';
import { UNet2DConditionModel, unetConfig } from '../src/models/unet_2d_condition.ts';

const dir = `${conformanceDir}/unet`;

test('unet: noise prediction and every attention map match diffusers', async () => {
  const io = conformance('unet');
  const unet = UNet2DConditionModel.fromPretrained(dir);
  const capture = new AttentionCapture({ cross: true, self: true, mode: 'per-layer' });
  const out = unet.forward(io.get('sample'), io.get('timestep'), io.get('encoder_hidden_states'), { capture });
  await assertTensorClose(out, io.get('out'), 1e-3, 'out');
  const refs = [...io.keys()].filter((k) => k.startsWith('attn_probs.'));
  assert.ok(refs.length >= 8, 'reference attention maps');
  assert.equal(capture.keys().sort(), refs.map((k) => k.slice('attn_probs.'.length)).sort(), 'captured layers');
  for (const key of refs) {
    const ref = io.get(key);
    const m = capture.get(key.slice('attn_probs.'.length))!;
    assert.is(m.count, 1);
    const [B, Hh, Lq, Lk] = m.sum.shape;
    // |ours - ref| <= 1e-4 absolute: a relative tolerance of 1e-4 / (1 + |ref|) is at least as strict
    await assertTensorClose(reshape(m.sum, [B! * Hh!, Lq!, Lk!]), ref, 1e-4 / 2, key);
  }
  capture.dispose();
  // one timestep per batch element: element 0 at the reference's 537 still matches, element 1 at 100 does not
  const mixed = await unet.forward(io.get('sample'), [537, 100], io.get('encoder_hidden_states')).toArray();
  const ref = await io.get('out').toArray();
  const half = ref.length / 2;
  assertClose(mixed.slice(0, half), ref.slice(0, half), 1e-3, 'element 0 at timestep 537');
  assert.ok(mixed.slice(half).some((v, i) => Math.abs(v - ref[half + i]!) > 1e-2), 'element 1 used timestep 100');
  unet.dispose();
});

// ---------------------------------------------------------------- another config, random weights

const fs = process.getBuiltinModule('node:fs');
const os = process.getBuiltinModule('node:os');
const path = process.getBuiltinModule('node:path');

const otherConfig = {
  _class_name: 'UNet2DConditionModel',
  in_channels: 4, out_channels: 3, flip_sin_to_cos: false, freq_shift: 1,
  down_block_types: ['CrossAttnDownBlock2D', 'CrossAttnDownBlock2D', 'DownBlock2D'],
  mid_block_type: 'UNetMidBlock2DCrossAttn',
  up_block_types: ['UpBlock2D', 'CrossAttnUpBlock2D', 'CrossAttnUpBlock2D'],
  block_out_channels: [16, 24, 32], layers_per_block: 1, norm_num_groups: 4, cross_attention_dim: 12,
  attention_head_dim: [2, 3, 4], use_linear_projection: true,
};

function writeFolder(config: object): string {
  const d = fs.mkdtempSync(path.join(os.tmpdir(), 'unet-'));
  fs.writeFileSync(`${d}/config.json`, JSON.stringify(config));
  return d;
}

async function finite(t: Tensor): Promise<boolean> {
  return (await t.toArray()).every((v) => Number.isFinite(v));
}

test('unet: another config (3 blocks, linear projections, per-block heads) runs on non-square latents and round-trips through a folder', async () => {
  manualSeed(3);
  const unet = new UNet2DConditionModel(unetConfig(new ConfigReader(otherConfig, 'other')));
  assert.equal(unet.downBlocks.at(1).attentions!.at(0).transformerBlocks.at(0).attn1.heads, 3);
  assert.ok(unet.downBlocks.at(0).attentions!.at(0).projIn instanceof Linear);
  const d = writeFolder(otherConfig);
  await saveSafetensors(`${d}/diffusion_pytorch_model.safetensors`, unet.stateDict());
  const loaded = UNet2DConditionModel.fromPretrained(d);
  for (const [h, w] of [[8, 12], [10, 14]] as const) {
    const sample = Tensor.fromArray(randomArray(4 * h * w, h), [1, 4, h, w]);
    const ctx = Tensor.fromArray(randomArray(5 * 12, w), [1, 5, 12]);
    const out = unet.forward(sample, 321, ctx);
    assert.equal([...out.shape], [1, 3, h, w]);
    assert.ok(await finite(out), `finite output at ${h}x${w}`);
    await assertTensorClose(loaded.forward(sample, [321], ctx), out, 1e-6, `reloaded model at ${h}x${w}`);
  }
  loaded.dispose();
  unet.dispose();
});

test('unet: load errors name the file and key', async () => {
  manualSeed(4);
  const unet = new UNet2DConditionModel(unetConfig(new ConfigReader(otherConfig, 'other')));
  const state = unet.stateDict();
  const missing = writeFolder(otherConfig);
  const key = 'down_blocks.1.attentions.0.transformer_blocks.0.attn2.to_k.weight';
  await saveSafetensors(`${missing}/model.safetensors`, Object.fromEntries(Object.entries(state).filter(([k]) => k !== key)));
  assert.throws(() => UNet2DConditionModel.fromPretrained(missing), (e: Error) => e.message.includes('missing keys (1)') && e.message.includes(key) && e.message.includes('model.safetensors'));
  const wrong = writeFolder(otherConfig);
  await saveSafetensors(`${wrong}/diffusion_pytorch_model.fp16.safetensors`, { ...state, 'conv_in.weight': Tensor.zeros([16, 4, 1, 1]) });
  assert.throws(() => UNet2DConditionModel.fromPretrained(wrong), (e: Error) => e.message.includes('wrong shape: conv_in.weight expected [16, 4, 3, 3], found [16, 4, 1, 1]'));
  const unknown = writeFolder({ ...otherConfig, down_block_types: ['CrossAttnDownBlock2D', 'AttnDownBlock2D', 'DownBlock2D'] });
  assert.throws(() => UNet2DConditionModel.fromPretrained(unknown), (e: Error) => e.message.includes(`${unknown}/config.json`) && e.message.includes("down_block_types[1] is 'AttnDownBlock2D'"));
  const badHeads = writeFolder({ ...otherConfig, attention_head_dim: [2, 5, 4] });
  assert.throws(() => UNet2DConditionModel.fromPretrained(badHeads), /attention_head_dim/);
  assert.throws(() => UNet2DConditionModel.fromPretrained(writeFolder(otherConfig)), /no weights file/);
  // a missing key takes diffusers' default (4 channel counts), which does not fit these 3 blocks
  const { block_out_channels: _, ...noChannels } = otherConfig;
  const lacking = writeFolder(noChannels);
  assert.throws(() => UNet2DConditionModel.fromPretrained(lacking), (e: Error) => e.message.includes(`${lacking}/config.json: "block_out_channels" must be a list of 3 channel counts`));
  // bad forward inputs
  const ctx = Tensor.zeros([1, 5, 12]);
  assert.throws(() => unet.forward(Tensor.zeros([1, 3, 8, 8]), 1, ctx), /sample \[1, 3, 8, 8\] must be \[batch, 4, height, width\]/);
  assert.throws(() => unet.forward(Tensor.zeros([1, 4, 8, 8]), 1, Tensor.zeros([1, 5, 16])), /encoderHiddenStates \[1, 5, 16\] must be \[1, tokens, 12\]/);
  assert.throws(() => unet.forward(Tensor.zeros([2, 4, 8, 8]), [1, 2, 3], Tensor.zeros([2, 5, 12])), /3 timesteps for a batch of 2/);
  unet.dispose();
});

// ---------------------------------------------------------------- naive CPU Timesteps and Transformer2DModel

test('Timesteps (sin first, freq_shift 1, odd dim) matches the formula', async () => {
  const [dim, shift] = [7, 1];
  const ts = [0, 3, 999];
  const ours = await new Timesteps(dim, false, shift).forward(Tensor.fromArray(ts, [3])).toArray();
  const half = 3;
  const ref = ts.flatMap((t) => {
    const args = Array.from({ length: half }, (_, j) => t * Math.exp((-Math.log(10000) * j) / (half - shift)));
    return [...args.map(Math.sin), ...args.map(Math.cos), 0];
  });
  assertClose(ours, ref, 1e-4, 'timestep embedding');
});

function erf(x: number): number {
  // Maclaurin series, exact to double precision for the |x| < 6 reached here
  if (Math.abs(x) > 6) return Math.sign(x);
  let term = x;
  let total = x;
  for (let n = 1; n < 200; n++) {
    term *= (-x * x) / n;
    total += term / (2 * n + 1);
  }
  return (2 / Math.sqrt(Math.PI)) * total;
}

/** y [rows, out] = x [rows, in] Wᵀ + b. */
function cpuLinear(x: Float64Array, rows: number, W: Float32Array, b: Float32Array | undefined, out: number): Float64Array {
  const inn = x.length / rows;
  const y = new Float64Array(rows * out);
  for (let r = 0; r < rows; r++) {
    for (let o = 0; o < out; o++) {
      let s = b ? b[o]! : 0;
      for (let i = 0; i < inn; i++) s += x[r * inn + i]! * W[o * inn + i]!;
      y[r * out + o] = s;
    }
  }
  return y;
}

function cpuLayerNorm(x: Float64Array, rows: number, w: Float32Array, b: Float32Array): Float64Array {
  const n = x.length / rows;
  const y = new Float64Array(x.length);
  for (let r = 0; r < rows; r++) {
    let m = 0;
    for (let i = 0; i < n; i++) m += x[r * n + i]! / n;
    let v = 0;
    for (let i = 0; i < n; i++) v += (x[r * n + i]! - m) ** 2 / n;
    for (let i = 0; i < n; i++) y[r * n + i] = ((x[r * n + i]! - m) / Math.sqrt(v + 1e-5)) * w[i]! + b[i]!;
  }
  return y;
}

/** Multi-head softmax(q kᵀ/√d) v for q [Lq, H·d], k/v [Lk, H·d]. */
function cpuAttention(q: Float64Array, k: Float64Array, v: Float64Array, Lq: number, Lk: number, heads: number): Float64Array {
  const D = q.length / Lq;
  const d = D / heads;
  const out = new Float64Array(Lq * D);
  for (let h = 0; h < heads; h++) {
    for (let i = 0; i < Lq; i++) {
      const s = Array.from({ length: Lk }, (_, j) => {
        let dot = 0;
        for (let c = 0; c < d; c++) dot += q[i * D + h * d + c]! * k[j * D + h * d + c]!;
        return dot / Math.sqrt(d);
      });
      const mx = Math.max(...s);
      const e = s.map((x) => Math.exp(x - mx));
      const z = e.reduce((a, b) => a + b);
      for (let c = 0; c < d; c++) out[i * D + h * d + c] = e.reduce((a, p, j) => a + (p / z) * v[j * D + h * d + c]!, 0);
    }
  }
  return out;
}

test('Transformer2DModel (linear projections) at 3x5 matches a naive CPU implementation', async () => {
  manualSeed(5);
  const [C, H, W, heads, dimHead, crossDim, Lk, groups] = [8, 3, 5, 2, 3, 6, 4, 2];
  const model = new Transformer2DModel(C, { heads, dimHead, crossAttentionDim: crossDim, numLayers: 1, normNumGroups: groups, useLinearProjection: true });
  // move norms off the identity so they are exercised
  for (const [name, t] of Object.entries(model.stateDict())) if (name.includes('norm')) t.copyFrom(Tensor.fromArray(randomArray(t.size, name.length, 0.5, 1.5), t.shape));
  const p: Record<string, Float32Array> = {};
  for (const [name, t] of Object.entries(model.stateDict())) p[name] = Float32Array.from(await t.toArray());
  const x = randomArray(C * H * W, 11);
  const ctx = randomArray(Lk * crossDim, 12);
  const ours = await model.forward(Tensor.fromArray(x, [1, C, H, W]), Tensor.fromArray(ctx, [1, Lk, crossDim])).toArray();

  const S = H * W;
  const inner = heads * dimHead;
  // GroupNorm (eps 1e-6), to tokens [S, C]
  const tokens = new Float64Array(S * C);
  const per = C / groups;
  for (let g = 0; g < groups; g++) {
    const vals = Array.from({ length: per * S }, (_, k) => x[g * per * S + k]!);
    const m = vals.reduce((a, b) => a + b) / vals.length;
    const v = vals.reduce((a, b) => a + (b - m) ** 2, 0) / vals.length;
    for (let c = g * per; c < (g + 1) * per; c++) {
      for (let s = 0; s < S; s++) tokens[s * C + c] = ((x[c * S + s]! - m) / Math.sqrt(v + 1e-6)) * p['norm.weight']![c]! + p['norm.bias']![c]!;
    }
  }
  let h = cpuLinear(tokens, S, p['proj_in.weight']!, p['proj_in.bias'], inner);
  const b = 'transformer_blocks.0.';
  const ln = (t: Float64Array, n: string) => cpuLayerNorm(t, S, p[`${b}${n}.weight`]!, p[`${b}${n}.bias`]!);
  const attn = (t: Float64Array, src: Float64Array, rows: number, a: string) => {
    const lin = (n: string, z: Float64Array, r: number) => cpuLinear(z, r, p[`${b}${a}.${n}.weight`]!, p[`${b}${a}.${n}.bias`], inner);
    return lin('to_out.0', cpuAttention(lin('to_q', t, S), lin('to_k', src, rows), lin('to_v', src, rows), S, rows, heads), S);
  };
  const addTo = (a: Float64Array, d: Float64Array) => a.map((v, i) => v + d[i]!);
  const n1 = ln(h, 'norm1');
  h = addTo(h, attn(n1, n1, S, 'attn1'));
  h = addTo(h, attn(ln(h, 'norm2'), Float64Array.from(ctx), Lk, 'attn2'));
  const proj = cpuLinear(ln(h, 'norm3'), S, p[`${b}ff.net.0.proj.weight`]!, p[`${b}ff.net.0.proj.bias`], 8 * inner);
  const geglu = new Float64Array(S * 4 * inner);
  for (let s = 0; s < S; s++) {
    for (let j = 0; j < 4 * inner; j++) {
      const gate = proj[s * 8 * inner + 4 * inner + j]!;
      geglu[s * 4 * inner + j] = proj[s * 8 * inner + j]! * 0.5 * gate * (1 + erf(gate / Math.SQRT2));
    }
  }
  h = addTo(h, cpuLinear(geglu, S, p[`${b}ff.net.2.weight`]!, p[`${b}ff.net.2.bias`], inner));
  const outTokens = cpuLinear(h, S, p['proj_out.weight']!, p['proj_out.bias'], C);
  const ref = Float32Array.from({ length: C * S }, (_, k) => outTokens[(k % S) * C + Math.floor(k / S)]! + x[k]!);
  assertClose(ours, ref, 1e-4, 'Transformer2DModel 3x5');
  model.dispose();
});

// ---------------------------------------------------------------- capture aggregation and chunked attention

test('attention capture: sum mode adds the selected heads, layers and forwards of per-layer mode', async () => {
  manualSeed(6);
  const unet = new UNet2DConditionModel(unetConfig(new ConfigReader(otherConfig, 'other')));
  const sample = Tensor.fromArray(randomArray(4 * 8 * 12, 1), [1, 4, 8, 12]);
  const ctx = Tensor.fromArray(randomArray(5 * 12, 2), [1, 5, 12]);
  const perLayer = new AttentionCapture({ cross: true, self: true, mode: 'per-layer' });
  const summed = new AttentionCapture({ cross: true, self: false, resolutions: [4], heads: [0, 2] });
  for (const t of [100, 700]) {
    unet.forward(sample, t, ctx, { capture: perLayer }).dispose();
    unet.forward(sample, t, ctx, { capture: summed }).dispose();
  }
  // 4x6 level: down_blocks.1 (1 transformer), up_blocks.1 (2 transformers); the mid block is at 2x3
  const layers = perLayer.keys().filter((k) => k.endsWith('attn2') && perLayer.get(k)!.height === 4);
  assert.equal(layers.sort(), ['down_blocks.1.attentions.0.transformer_blocks.0.attn2', 'up_blocks.1.attentions.0.transformer_blocks.0.attn2', 'up_blocks.1.attentions.1.transformer_blocks.0.attn2']);
  assert.equal(summed.keys(), ['cross:4x6']);
  const m = summed.get('cross:4x6')!;
  assert.equal([...m.sum.shape], [1, 24, 5]);
  assert.is(m.count, 2 * 3 * 2);
  const expected = new Float32Array(24 * 5);
  for (const name of layers) {
    const per = perLayer.get(name)!;
    assert.is(per.count, 2);
    const data = await per.sum.toArray();
    for (const h of [0, 2]) for (let k = 0; k < 24 * 5; k++) expected[k] += data[h * 24 * 5 + k]!;
  }
  assertClose(await m.sum.toArray(), expected, 1e-5, 'summed map');
  // each row of a mean map is a probability distribution over the 5 tokens
  const mean = Float32Array.from(await summed.mean('cross:4x6').toArray());
  for (let r = 0; r < 24; r++) assert.ok(Math.abs(mean.slice(r * 5, r * 5 + 5).reduce((a: number, b: number) => a + b, 0) - 1) < 1e-5);
  assertClose(await summed.tokenMap('cross:4x6', 3).toArray(), Float32Array.from({ length: 24 }, (_, r) => mean[r * 5 + 3]!), 1e-6, 'tokenMap');
  assert.equal(summed.tokenMap('cross:4x6', 3).shape, [4, 6]);
  assert.equal(perLayer.get('mid_block.attentions.0.transformer_blocks.0.attn1')!.sum.shape, [1, 4, 6, 6]);
  // memory stays flat over further forwards: the maps are summed in place of the old sums
  const live: number[] = [];
  for (let step = 0; step < 3; step++) {
    unet.forward(sample, 500, ctx, { capture: summed }).dispose();
    live.push(memoryStats().liveBytes);
  }
  assert.is(live[2], live[0], `live bytes over steps: ${live.join(', ')}`);
  assert.is(summed.get('cross:4x6')!.count, 5 * 3 * 2);
  perLayer.dispose();
  summed.dispose();
  unet.dispose();
});

test('attention: query blocks of any size give the same result and the same captured maps', async () => {
  const [B, Lq, Lk, heads, d] = [2, 12, 10, 3, 4];
  const q = Tensor.fromArray(randomArray(B * Lq * heads * d, 21), [B, Lq, heads * d]);
  const k = Tensor.fromArray(randomArray(B * Lk * heads * d, 22), [B, Lk, heads * d]);
  const v = Tensor.fromArray(randomArray(B * Lk * heads * d, 23), [B, Lk, heads * d]);
  const rowBytes = B * heads * Lk * 4;
  const whole = await multiHeadAttention(q, k, v, heads, undefined, Lq * rowBytes).toArray();
  const capture = (mode: 'per-layer' | 'sum', blockBytes: number) => {
    const c = new AttentionCapture({ self: true, cross: false, mode, heads: [0, 2] });
    const ctx = { capture: c, height: 3, width: 4 };
    const sink = c.sink('layer', 'self', ctx, heads)!;
    const out = multiHeadAttention(q, k, v, heads, sink, blockBytes);
    sink.end();
    return { c, out };
  };
  for (const mode of ['per-layer', 'sum'] as const) {
    const ref = capture(mode, Lq * rowBytes);
    const key = mode === 'per-layer' ? 'layer' : 'self:3x4';
    for (const rows of [5, 1]) {
      const got = capture(mode, rows * rowBytes);
      assertClose(await got.out.toArray(), whole, 1e-6, `${mode}: output in blocks of ${rows} queries`);
      assert.equal([...got.c.get(key)!.sum.shape], [...ref.c.get(key)!.sum.shape]);
      assertClose(await got.c.get(key)!.sum.toArray(), await ref.c.get(key)!.sum.toArray(), 1e-6, `${mode}: maps captured in blocks of ${rows} queries`);
      got.c.dispose();
    }
    ref.c.dispose();
  }
});

test('attention capture: a map over the storage-binding limit fails naming the layer', () => {
  // the limit is the device's storage-binding limit unless maxMapBytes lowers it: a small map against a small
  // maxMapBytes takes the same path on any adapter (a map over a real GPU's limit would need gigabytes)
  const L = 60; // one head's [L, L] f32 map: 14400 bytes, captured in blocks of 16 queries
  const bytes = L * L * 4;
  assert.ok(bytes <= deviceInfo().limits.maxStorageBufferBindingSize, 'the map fits the device: only maxMapBytes stops it');
  const x = Tensor.fromArray(randomArray(L * 4, 24), [1, L, 4]);
  const capture = (maxMapBytes: number | undefined) => {
    const c = new AttentionCapture({ self: true, cross: false, mode: 'per-layer', maxMapBytes });
    const sink = c.sink('big.attn1', 'self', { capture: c, height: 6, width: 10 }, 1)!;
    multiHeadAttention(x, x, x, 1, sink, 16 * L * 4).dispose();
    return { c, sink };
  };
  const over = capture(bytes - 1);
  assert.throws(() => over.sink.end(), new RegExp(`attention capture of big\\.attn1: its map takes ${bytes} bytes, over the ${bytes - 1}-byte maxMapBytes limit`));
  assert.equal(over.c.keys(), []);
  for (const max of [bytes, undefined]) {
    const fits = capture(max);
    fits.sink.end();
    assert.equal([...fits.c.get('big.attn1')!.sum.shape], [1, 1, L, L], `a map of exactly the limit (maxMapBytes ${max}) is captured`);
    fits.c.dispose();
  }
  assert.throws(() => new AttentionCapture({ maxMapBytes: 0 }), /maxMapBytes must be a positive integer, got 0/);
  x.dispose();
});

test.run();
