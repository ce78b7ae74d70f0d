// Every form of a config field that the reference implementation (transformers, diffusers) accepts loads here:
// int-or-pair sizes, int-or-list per-block values, null-or-list, defaults for absent keys, activation names,
// unknown keys ignored. Where two forms mean the same model, both build the same parameters and give the same
// outputs; values the reference refuses too still fail naming the file and key.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { assertClose, conformance, conformanceDir, randomArray, randomParameters } from './helpers.ts';
import { Tensor } from '../src/engine/tensor.ts';
import type { Module } from '../src/nn/module.ts';
import { saveSafetensors } from '../src/io/safetensors.ts';
import { ConfigReader, activations } from '../src/models/pretrained.ts';
import { parseMask2FormerConfig } from '../src/models/mask2former/config.ts';
import { Mask2FormerForUniversalSegmentation } from '../src/models/mask2former/model.ts';
import { SwinBackbone } from '../src/models/mask2former/swin.ts';
import { UNet2DConditionModel, unetConfig } from '../src/models/unet_2d_condition.ts';
import { AutoencoderKL, autoencoderConfig } from '../src/models/autoencoder_kl.ts';
import { CLIPTextModel, clipTextConfig } from '../src/models/clip_text_model.ts';
import { DDIMScheduler, DPMSolverMultistepScheduler, EulerDiscreteScheduler, alphasCumprod } from '../src/models/schedulers.ts';

const fs = process.getBuiltinModule('node:fs');
const os = process.getBuiltinModule('node:os');
const path = process.getBuiltinModule('node:path');

function folder(files: Record<string, string>): string {
  const d = fs.mkdtempSync(path.join(os.tmpdir(), 'freemask-config-'));
  for (const [name, text] of Object.entries(files)) fs.writeFileSync(`${d}/${name}`, text);
  return d;
}

/** `b` has exactly `a`'s parameter names and shapes; then `a`'s weights are copied into `b`. */
function sameParameters(a: Module, b: Module, what: string): void {
  const shapes = (m: Module) => Object.fromEntries(Object.entries(m.stateDict()).map(([k, t]) => [k, [...t.shape]]));
  assert.equal(shapes(b), shapes(a), `${what}: same parameters`);
  b.loadStateDict(a.stateDict());
}

// ---------------------------------------------------------------- Swin / Mask2Former

const m2fDir = `${conformanceDir}/mask2former`;
const m2fJson = JSON.parse(fs.readFileSync(`${m2fDir}/config.json`, 'utf8')) as Record<string, unknown> & { backbone_config: Record<string, unknown> };

/** A folder with the shared Mask2Former weights and `json` as its config. */
function m2fFolder(json: unknown): string {
  const d = folder({ 'config.json': JSON.stringify(json) });
  fs.symlinkSync(`${m2fDir}/model.safetensors`, `${d}/model.safetensors`);
  return d;
}

test('Swin: image_size and patch_size as pairs (a non-square copy of the shared folder) load and give the int form outputs', async () => {
  const pair = m2fFolder({ ...m2fJson, backbone_config: { ...m2fJson.backbone_config, image_size: [48, 80], patch_size: [4, 4] } });
  const io = conformance('mask2former');
  const pixels = io.get('pixel_values');
  const square = Mask2FormerForUniversalSegmentation.fromPretrained(m2fDir);
  const nonSquare = Mask2FormerForUniversalSegmentation.fromPretrained(pair);
  assert.equal(nonSquare.config.backbone.imageSize, [48, 80]);
  assert.equal(nonSquare.config.backbone.patchSize, [4, 4]);
  const [a, b] = [square.forward(pixels), nonSquare.forward(pixels)];
  assertClose(await b.classQueriesLogits.toArray(), await a.classQueriesLogits.toArray(), 0, 'class logits');
  assertClose(await b.masksQueriesLogits.toArray(), await a.masksQueriesLogits.toArray(), 0, 'mask logits');
  // and they are transformers' outputs (the int form is checked against them in mask2former.test.ts)
  assertClose(await b.classQueriesLogits.toArray(), await io.get('class_queries_logits').toArray(), 1e-3, 'class logits vs transformers');
  for (const m of [square, nonSquare]) m.dispose();
});

test('Swin: a non-square patch [2, 4] is the patch embedding convolution with that kernel and stride (CPU reference)', async () => {
  const config = parseMask2FormerConfig({ ...m2fJson, backbone_config: { ...m2fJson.backbone_config, patch_size: [2, 4] } }).backbone;
  const swin = new SwinBackbone(config);
  randomParameters(swin, 5, 0.2, 0.8);
  const proj = swin.embeddings.patchEmbeddings.projection;
  assert.equal([...proj.weight.shape], [16, 3, 2, 4]);
  // 9×18 is padded to 10×20 (bottom/right, as transformers' maybe_pad): a 5×5 patch grid
  const [H, W] = [9, 18];
  const x = randomArray(3 * H * W, 11);
  const { tokens, dims } = swin.embeddings.patchEmbeddings.forward(Tensor.fromArray(x, [1, 3, H, W]));
  assert.equal(dims, [5, 5]);
  const [w, bias] = [await proj.weight.toArray(), await proj.bias!.toArray()];
  const expected = new Float64Array(25 * 16);
  for (let py = 0; py < 5; py++) {
    for (let px = 0; px < 5; px++) {
      for (let o = 0; o < 16; o++) {
        let s = bias[o]!;
        for (let c = 0; c < 3; c++) {
          for (let ky = 0; ky < 2; ky++) {
            for (let kx = 0; kx < 4; kx++) {
              const [y, xx] = [py * 2 + ky, px * 4 + kx];
              if (y < H && xx < W) s += w[((o * 3 + c) * 2 + ky) * 4 + kx]! * x[(c * H + y) * W + xx]!;
            }
          }
        }
        expected[(py * 5 + px) * 16 + o] = s;
      }
    }
  }
  assertClose(await tokens.toArray(), expected, 1e-5, 'patch tokens');
  swin.dispose();
});

test('Swin / Mask2Former: out_indices, absent backbone_config and out_features, activation names, unknown keys', () => {
  const b = m2fJson.backbone_config;
  const { out_features: _f, ...byIndex } = b;
  const parse = (backbone: unknown, rest: Record<string, unknown> = {}) => parseMask2FormerConfig({ ...m2fJson, ...rest, backbone_config: backbone }, 'cfg.json');
  assert.equal(parse({ ...byIndex, out_indices: [1, 2, 3, 4] }).backbone.outFeatures, ['stage1', 'stage2', 'stage3', 'stage4']);
  assert.equal(parse({ ...byIndex, out_indices: [-4, -3, -2, -1] }).backbone.outFeatures, ['stage1', 'stage2', 'stage3', 'stage4']);
  // neither: every stage (transformers would keep only the last, which no Mask2Former can use)
  const { out_indices: _i, ...neither } = byIndex;
  assert.equal(parse(neither).backbone.outFeatures, ['stage1', 'stage2', 'stage3', 'stage4']);
  assert.throws(() => parse({ ...byIndex, out_indices: [2, 3, 4] }), /pixel decoder needs 4 backbone stages, out_features has 3/);
  assert.throws(() => parse({ ...byIndex, out_indices: [1, 1, 2, 3] }), /cfg\.json backbone_config: "out_indices" must be stages in increasing order, each once/);
  // no backbone_config: transformers' default Swin (depths 2, 2, 18, 2; window 7; drop path 0.3)
  const { backbone_config: _b, ...noBackbone } = m2fJson;
  const d = parseMask2FormerConfig(noBackbone).backbone;
  assert.equal([d.depths, d.numHeads, d.embedDim, d.windowSize, d.dropPathRate, d.patchSize], [[2, 2, 18, 2], [3, 6, 12, 24], 96, 7, 0.3, [4, 4]]);
  for (const name of Object.keys(activations)) {
    assert.is(parse({ ...b, hidden_act: name }).backbone.hiddenAct, name);
    assert.is(parse(b, { activation_function: name }).activationFunction, name);
  }
  assert.ok(parse({ ...b, some_future_key: [1, 2] }, { another_future_key: { a: 1 } }), 'unknown keys are ignored');
  // values transformers refuses too: the file and key are named
  const bad: [Record<string, unknown>, RegExp][] = [
    [{ image_size: 0 }, /cfg\.json backbone_config: "image_size" must be an integer >= 1 or a pair of them, got 0/],
    [{ image_size: [48] }, /"image_size" must be an integer >= 1 or a pair of them, got \[48\]/],
    [{ patch_size: [4, -2] }, /"patch_size" must be an integer >= 1 or a pair of them, got \[4,-2\]/],
    [{ patch_size: '4' }, /"patch_size" must be an integer >= 1 or a pair of them, got "4"/],
    [{ mlp_ratio: 'four' }, /"mlp_ratio" must be a number/],
    [{ depths: [2, 0, 2, 2] }, /"depths" must be a non-empty list of integers >= 1/],
    [{ hidden_act: 'mish' }, /"hidden_act": "mish" is not implemented here/],
    [{ hidden_act: 'wobbly' }, /"hidden_act" must be an activation name/],
    [{ out_features: ['stage1', 'stage9'] }, /"out_features" must be a list of stem\/stage1/],
    [{ out_features: ['stage4', 'stage3', 'stage2', 'stage1'] }, /"out_features" must be stages in increasing order, each once/],
  ];
  for (const [change, re] of bad) assert.throws(() => parse({ ...b, ...change }), re, JSON.stringify(change));
  assert.throws(() => parse(b, { num_queries: 0 }), /cfg\.json: "num_queries" must be an integer >= 1, got 0/);
  assert.throws(() => parse(b, { use_auxiliary_loss: 'yes' }), /cfg\.json: "use_auxiliary_loss" must be true or false/);
});

test('Mask2Former: hidden_act and activation_function reach the model (gelu_new ≡ gelu_pytorch_tanh, swish ≡ silu)', async () => {
  const io = conformance('mask2former');
  const pixels = io.get('pixel_values');
  const logits = async (backboneAct: string, decoderAct: string) => {
    const m = Mask2FormerForUniversalSegmentation.fromPretrained(m2fFolder({ ...m2fJson, activation_function: decoderAct, backbone_config: { ...m2fJson.backbone_config, hidden_act: backboneAct } }));
    const out = await m.forward(pixels).classQueriesLogits.toArray();
    m.dispose();
    return out;
  };
  const base = await logits('gelu', 'relu');
  const tanh = await logits('gelu_new', 'swish');
  assertClose(await logits('gelu_pytorch_tanh', 'silu'), tanh, 0, 'same activations by other names');
  assert.ok(tanh.some((v, i) => Math.abs(v - base[i]!) > 1e-4), 'another activation changes the output');
});

// ---------------------------------------------------------------- diffusers UNet / VAE

const unetJson = {
  in_channels: 4, out_channels: 4, down_block_types: ['CrossAttnDownBlock2D', 'CrossAttnDownBlock2D'], up_block_types: ['CrossAttnUpBlock2D', 'CrossAttnUpBlock2D'],
  block_out_channels: [8, 16], layers_per_block: 1, norm_num_groups: 4, cross_attention_dim: 8, attention_head_dim: 2,
};
const unet = (json: Record<string, unknown>) => new UNet2DConditionModel(unetConfig(new ConfigReader(json, 'unet/config.json')));

/** Transformer blocks of each attention of the UNet, by module path (down_blocks.1.attentions.0: 2, …). */
function depths(m: UNet2DConditionModel): Record<string, number> {
  const out: Record<string, number> = {};
  for (const k of Object.keys(m.stateDict())) {
    const hit = /^(.*attentions\.\d+)\.transformer_blocks\.(\d+)\./.exec(k);
    if (hit) out[hit[1]!] = Math.max(out[hit[1]!] ?? 0, Number(hit[2]) + 1);
  }
  return out;
}

test('UNet: int and per-block list forms of attention_head_dim, num_attention_heads, transformer_layers_per_block, cross_attention_dim, layers_per_block build the same model', async () => {
  const reference = unet(unetJson);
  randomParameters(reference, 30, 0.2, 0.8);
  const sample = Tensor.fromArray(randomArray(2 * 4 * 8 * 8, 1), [2, 4, 8, 8]);
  const context = Tensor.fromArray(randomArray(2 * 5 * 8, 2), [2, 5, 8]);
  const expected = await reference.forward(sample, 10, context).toArray();
  const forms: Record<string, unknown>[] = [
    { attention_head_dim: [2, 2] },
    { attention_head_dim: 5, num_attention_heads: [2, 2] }, // num_attention_heads wins, as diffusers
    { transformer_layers_per_block: 1 },
    { transformer_layers_per_block: [1, 1] },
    { transformer_layers_per_block: [[1], [1]], reverse_transformer_layers_per_block: [[1, 1], [1, 1]] },
    { cross_attention_dim: [8, 8] },
    { layers_per_block: [1, 1] },
    { sample_size: [8, 8], some_future_key: 3, act_fn: 'swish' },
  ];
  for (const form of forms) {
    const m = unet({ ...unetJson, ...form });
    sameParameters(reference, m, JSON.stringify(form));
    assertClose(await m.forward(sample, 10, context).toArray(), expected, 0, JSON.stringify(form));
    m.dispose();
  }
  reference.dispose();
});

test('UNet: transformer_layers_per_block per block and per layer (with reverse_transformer_layers_per_block) give diffusers\' module tree', () => {
  assert.equal(depths(unet({ ...unetJson, transformer_layers_per_block: [1, 2] })), {
    'down_blocks.0.attentions.0': 1, 'down_blocks.1.attentions.0': 2, 'mid_block.attentions.0': 2,
    'up_blocks.0.attentions.0': 2, 'up_blocks.0.attentions.1': 2, 'up_blocks.1.attentions.0': 1, 'up_blocks.1.attentions.1': 1,
  });
  const nested = { ...unetJson, layers_per_block: 2, transformer_layers_per_block: [[1, 2], [3, 1]], reverse_transformer_layers_per_block: [[2, 1, 3], [1, 1, 2]] };
  assert.equal(depths(unet(nested)), {
    'down_blocks.0.attentions.0': 1, 'down_blocks.0.attentions.1': 2, 'down_blocks.1.attentions.0': 3, 'down_blocks.1.attentions.1': 1,
    'mid_block.attentions.0': 3,
    'up_blocks.0.attentions.0': 2, 'up_blocks.0.attentions.1': 1, 'up_blocks.0.attentions.2': 3,
    'up_blocks.1.attentions.0': 1, 'up_blocks.1.attentions.1': 1, 'up_blocks.1.attentions.2': 2,
  });
  const { reverse_transformer_layers_per_block: _r, ...noReverse } = nested;
  assert.throws(() => unet(noReverse), /unet\/config\.json: "transformer_layers_per_block" lists per-layer depths, which needs "reverse_transformer_layers_per_block"/);
  assert.throws(() => unet({ ...unetJson, transformer_layers_per_block: 0 }), /"transformer_layers_per_block" must be a positive integer, a list of 2/);
  assert.throws(() => unet({ ...unetJson, transformer_layers_per_block: [1] }), /"transformer_layers_per_block" must be/);
  assert.throws(() => unet({ ...nested, reverse_transformer_layers_per_block: [[1, 1], [1, 1, 1]] }), /"reverse_transformer_layers_per_block" must be a list of 2 per-layer lists/);
  assert.throws(() => unet({ ...unetJson, attention_head_dim: [2, 2, 2] }), /"attention_head_dim" must be a positive integer or a list of 2 of them/);
  assert.throws(() => unet({ ...unetJson, sample_size: [8, 0] }), /"sample_size" must be an integer >= 1 or a pair of them, got \[8,0\]/);
  assert.throws(() => unet({ ...unetJson, act_fn: 'gelu' }), /"act_fn": "gelu" is not supported/);
  assert.equal(unetConfig(new ConfigReader({ ...unetJson, sample_size: [8, 12] }, 'x')).sample_size, [8, 12]);
  assert.equal(unetConfig(new ConfigReader({ ...unetJson, sample_size: 8 }, 'x')).sample_size, [8, 8]);
});

test('UNet / VAE folders: Python JSON (Infinity), defaults for absent keys, sample_size pairs', async () => {
  // diffusers writes float('inf') as a bare Infinity; the UNet ignores keys it does not use
  const withInf = `${JSON.stringify({ ...unetJson, sample_size: [8, 12] }).slice(0, -1)}, "some_clip": Infinity}`;
  const m = unet(unetJson);
  const d = folder({ 'config.json': withInf });
  await saveSafetensors(`${d}/diffusion_pytorch_model.safetensors`, m.stateDict());
  const loaded = UNet2DConditionModel.fromPretrained(d);
  assert.equal(loaded.config.sample_size, [8, 12]);
  // VAE: absent block types take diffusers' defaults, sample_size may be a pair (diffusers uses it for tiling only)
  const vae = autoencoderConfig(new ConfigReader({ block_out_channels: [8], sample_size: [32, 48], norm_num_groups: 4, act_fn: 'swish' }, 'vae/config.json'));
  assert.equal([vae.block_out_channels, vae.layers_per_block, vae.latent_channels], [[8], 1, 4]);
  const built = new AutoencoderKL(vae);
  assert.equal([...built.stateDict()['encoder.conv_in.weight']!.shape], [8, 3, 3, 3]);
  built.dispose();
  assert.throws(() => autoencoderConfig(new ConfigReader({ block_out_channels: [8, 0] }, 'vae/config.json')), /vae\/config\.json: "block_out_channels" must be a non-empty list of integers >= 1/);
  for (const t of [m, loaded]) t.dispose();
});

// ---------------------------------------------------------------- schedulers

test('schedulers: trained_betas null or a list, every timestep_spacing value, unknown keys ignored', () => {
  const base = { num_train_timesteps: 10, beta_start: 0.001, beta_end: 0.02, beta_schedule: 'linear' };
  const plain = new DDIMScheduler(base);
  assert.equal([...new DDIMScheduler({ ...base, trained_betas: null, some_future_key: 1 }).alphasCumprod], [...plain.alphasCumprod]);
  const betas = Array.from({ length: 10 }, (_, i) => 0.01 + 0.005 * i);
  const trained = new DDIMScheduler({ ...base, trained_betas: betas });
  let prod = 1;
  assertClose(trained.alphasCumprod, betas.map((b) => (prod *= 1 - b)), 1e-6, 'ᾱ from trained_betas');
  assert.equal([...alphasCumprod(trained.config)], [...trained.alphasCumprod]);
  for (const Scheduler of [DDIMScheduler, EulerDiscreteScheduler, DPMSolverMultistepScheduler]) {
    for (const spacing of ['linspace', 'leading', 'trailing']) {
      const s = new Scheduler({ ...base, timestep_spacing: spacing, steps_offset: 1 }, 'scheduler_config.json');
      s.setTimesteps(4);
      assert.is(s.timesteps.length, 4, `${Scheduler.name} ${spacing}`);
    }
    assert.throws(() => new Scheduler({ ...base, timestep_spacing: 'random' }, 'scheduler_config.json'), /scheduler_config\.json: "timestep_spacing" must be one of "leading", "trailing", "linspace", got "random"/);
  }
  assert.throws(() => new DDIMScheduler({ ...base, trained_betas: [0.1, 'x'] }, 's.json'), /s\.json: "trained_betas" must be a list of numbers/);
});

// ---------------------------------------------------------------- CLIP

test('CLIP: projection_dim and other CLIPTextConfig keys, text_config nesting, every activation name', async () => {
  const text = { vocab_size: 40, hidden_size: 8, intermediate_size: 12, num_hidden_layers: 1, num_attention_heads: 2, max_position_embeddings: 6, eos_token_id: 39 };
  const full = { ...text, projection_dim: 16, dropout: 0, attention_dropout: 0, initializer_factor: 1, pad_token_id: 1, bos_token_id: 38, torch_dtype: 'float16' };
  assert.equal(clipTextConfig(full), clipTextConfig(text));
  assert.equal(clipTextConfig({ text_config: text, vision_config: { hidden_size: 3 }, projection_dim: 4 }), clipTextConfig(text));
  assert.throws(() => clipTextConfig({ text_config: { ...text, hidden_size: 'wide' } }, 'clip/config.json'), /clip\/config\.json text_config: "hidden_size" must be an integer >= 1/);
  const ids = [[38, 5, 7, 39, 1, 1]];
  const outputs: Record<string, Float32Array> = {};
  let reference: CLIPTextModel | undefined;
  for (const act of Object.keys(activations)) {
    const m = new CLIPTextModel(clipTextConfig({ ...text, hidden_act: act }));
    if (reference) sameParameters(reference, m, act);
    else randomParameters((reference = m), 60, 0.2, 0.8);
    outputs[act] = (await m.forward(ids).toArray()) as Float32Array;
    if (m !== reference) m.dispose();
  }
  for (const [a, b] of [['gelu_new', 'gelu_pytorch_tanh'], ['gelu_fast', 'gelu_accurate'], ['gelu_new', 'gelu_fast'], ['swish', 'silu'], ['gelu', 'gelu_python']]) {
    assertClose(outputs[a]!, outputs[b]!, 0, `${a} ≡ ${b}`);
  }
  assert.ok(outputs.gelu!.some((v, i) => Math.abs(v - outputs.relu![i]!) > 1e-5), 'relu differs from gelu');
  assert.throws(() => clipTextConfig({ ...text, hidden_act: 'relu6' }), /"hidden_act": "relu6" is not implemented here/);
  reference!.dispose();
});

test.run();
