// Mask2Former on a configuration of our own (random weights): batch 1, a non-square image whose stage maps
// need window padding (window 3), other depths, heads, queries and decoder layers. Gradients of a fixed
// random projection of the predictions against central finite differences, the loss end to end, and the
// errors for bad labels and bad checkpoints.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { randomArray } from './helpers.ts';
import { backward, noGrad } from '../src/engine/autograd.ts';
import { Tensor, memoryStats, tidy } from '../src/engine/tensor.ts';
import { add, mul } from '../src/kernels/elementwise.ts';
import { sum } from '../src/kernels/reduce.ts';
import { parseMask2FormerConfig } from '../src/models/mask2former/config.ts';
import { Mask2FormerForUniversalSegmentation, type Mask2FormerOutput } from '../src/models/mask2former/model.ts';
import { seededUniform } from '../src/models/mask2former/loss.ts';

const config = parseMask2FormerConfig({
  model_type: 'mask2former',
  backbone_config: {
    model_type: 'swin', image_size: 64, patch_size: 4, num_channels: 3, embed_dim: 8, depths: [1, 2, 1, 2], num_heads: [1, 2, 2, 4],
    window_size: 3, mlp_ratio: 2.0, qkv_bias: true, hidden_act: 'gelu', layer_norm_eps: 1e-5, out_features: ['stage1', 'stage2', 'stage3', 'stage4'],
  },
  feature_size: 32, mask_feature_size: 32, hidden_dim: 32, encoder_feedforward_dim: 48, encoder_layers: 2, decoder_layers: 3,
  num_attention_heads: 2, dim_feedforward: 40, num_queries: 5, id2label: { 0: 'a', 1: 'b', 2: 'c' },
  train_num_points: 24, oversample_ratio: 2.0, importance_sample_ratio: 0.5,
}, 'test config');

const model = new Mask2FormerForUniversalSegmentation(config).eval();
// every parameter random (many default to zeros or ones), scaled to keep activations moderate
model.namedParameters().forEach(([, p], k) => {
  const scale = p.rank === 1 ? 0.2 : 0.5 / Math.sqrt(p.shape[p.rank - 1]!);
  p.copyFrom(Tensor.fromArray(randomArray(p.size, 100 + k, -scale, scale), p.shape));
});
// not a multiple of the patch size (padded to 48×64); stage maps 12×16, 6×8, 3×4 (odd: merging pads), 2×2
const [H, W] = [46, 62];
const pixels = Tensor.fromArray(randomArray(3 * H * W, 7), [1, 3, H, W]);
const wClass = randomArray(5 * 4, 8);
const wMask = randomArray(5 * 12 * 16, 9);

/** A fixed random projection of the final class and mask logits (smooth in the weights). */
function projection(o: Mask2FormerOutput): Tensor {
  return tidy(() => add(
    sum(mul(o.classQueriesLogits, Tensor.fromArray(wClass, o.classQueriesLogits.shape))),
    sum(mul(o.masksQueriesLogits, Tensor.fromArray(wMask, o.masksQueriesLogits.shape))),
  ));
}

function disposeOutput(o: Mask2FormerOutput): void {
  const all = [o.classQueriesLogits, o.masksQueriesLogits, ...o.auxiliaryLogits.flatMap((a) => [a.classQueriesLogits, a.masksQueriesLogits]),
    ...o.encoderHiddenStates, ...o.pixelDecoderHiddenStates, o.pixelDecoderLastHiddenState, ...o.transformerDecoderHiddenStates];
  for (const t of new Set(all)) t.dispose();
}

test('mask2former, own config: output shapes (batch 1, 46×62 input, window 3 with padding, 2 decoder layers)', () => {
  const o = noGrad(() => model.forward(pixels));
  assert.equal([...o.classQueriesLogits.shape], [1, 5, 4]);
  assert.equal([...o.masksQueriesLogits.shape], [1, 5, 12, 16]);
  assert.is(o.auxiliaryLogits.length, 2);
  assert.equal(o.encoderHiddenStates.map((t) => [...t.shape]), [[1, 8, 12, 16], [1, 16, 6, 8], [1, 32, 3, 4], [1, 64, 2, 2]]);
  assert.equal(o.pixelDecoderHiddenStates.map((t) => [...t.shape]), [[1, 32, 2, 2], [1, 32, 3, 4], [1, 32, 6, 8]]);
  disposeOutput(o);
});

// parameters spread over the model: patch embedding, a shifted block's relative-position table on a padded
// map, patch merging, deformable attention, FPN, masked cross-attention, queries, class head
const checked: [string, number[]][] = [
  ['model.pixel_level_module.encoder.embeddings.patch_embeddings.projection.weight', [5, 100]],
  ['model.pixel_level_module.encoder.encoder.layers.1.blocks.1.attention.self.relative_position_bias_table', [3, 40]],
  ['model.pixel_level_module.encoder.encoder.layers.0.downsample.reduction.weight', [17]],
  ['model.pixel_level_module.decoder.encoder.layers.1.self_attn.sampling_offsets.bias', [6]],
  ['model.pixel_level_module.decoder.encoder.layers.0.self_attn.value_proj.weight', [70]],
  ['model.pixel_level_module.decoder.adapter_1.0.weight', [33]],
  ['model.transformer_module.decoder.layers.1.cross_attn.in_proj_weight', [1500]],
  ['model.transformer_module.queries_features.weight', [12]],
  ['class_predictor.weight', [9]],
];

test('mask2former, own config: gradients match central finite differences', async () => {
  const params = new Map(model.namedParameters());
  model.zeroGrad();
  const o = model.forward(pixels);
  backward(projection(o));
  disposeOutput(o);
  const value = async () => {
    const out = noGrad(() => model.forward(pixels));
    const v = await noGrad(() => projection(out)).item();
    disposeOutput(out);
    return v;
  };
  const eps = 3e-3;
  for (const [name, indices] of checked) {
    const p = params.get(name);
    assert.ok(p?.grad, `${name} has a gradient`);
    const grad = await p!.grad!.toArray();
    const base = Float32Array.from(await p!.toArray());
    for (const j of indices) {
      const at = async (delta: number) => {
        const data = base.slice();
        data[j] = base[j]! + delta;
        p!.copyFrom(Tensor.fromArray(data, p!.shape));
        return value();
      };
      const numeric = ((await at(eps)) - (await at(-eps))) / (2 * eps);
      p!.copyFrom(Tensor.fromArray(base, p!.shape));
      const err = Math.abs(grad[j]! - numeric);
      assert.ok(err <= 2e-2 * (1 + Math.abs(numeric)), `${name}[${j}]: analytic ${grad[j]} vs numeric ${numeric}`);
    }
  }
  model.zeroGrad();
});

test('mask2former, own config: the loss runs end to end (matching sizes, finite loss and gradients)', async () => {
  const masks = new Float32Array(2 * H * W);
  for (let y = 0; y < H; y++) for (let x = 0; x < W; x++) masks[y * W + x] = x < 25 ? 1 : 0;
  for (let y = 0; y < H; y++) for (let x = 0; x < W; x++) masks[H * W + y * W + x] = y > 30 ? 1 : 0;
  const maskLabels = [Tensor.fromArray(masks, [2, H, W])];
  const classLabels = [Tensor.fromArray([2, 0], [2], 'i32')];
  model.zeroGrad();
  const live = memoryStats().liveBytes;
  const o = await model.forward(pixels, { maskLabels, classLabels, random: seededUniform(3) });
  const loss = await o.loss!.item();
  assert.ok(Number.isFinite(loss) && loss > 0, `loss ${loss}`);
  assert.is(Object.keys(o.lossDetails!.terms).length, 9);
  assert.is(o.lossDetails!.matchings.length, 3);
  for (const [[queries, targets]] of o.lossDetails!.matchings) {
    assert.is(queries.length, 2);
    assert.equal([...targets].sort(), [0, 1]);
  }
  assert.equal([...o.lossDetails!.points[0]!.shape], [2, 24, 2]);
  backward(o.loss!);
  for (const [name, p] of model.namedParameters()) {
    const g = await p.grad?.toArray();
    assert.ok(g && g.every(Number.isFinite), `${name}: finite gradient`);
  }
  model.zeroGrad();
  disposeOutput(o);
  for (const t of [o.loss!, ...Object.values(o.lossDetails!.terms), ...o.lossDetails!.points]) t.dispose();
  assert.is(memoryStats().liveBytes, live, 'forward, loss and backward leave nothing behind');
});

async function rejects(fn: () => Promise<unknown>, pattern: RegExp): Promise<void> {
  try {
    await fn();
  } catch (e) {
    assert.match((e as Error).message, pattern);
    return;
  }
  assert.unreachable(`expected an error matching ${pattern}`);
}

test('mask2former, own config: an image without objects gets only the no-object cross-entropy', async () => {
  const o = await model.forward(pixels, { maskLabels: [Tensor.zeros([0, H, W])], classLabels: [Tensor.fromArray(new Int32Array(0), [0], 'i32')], random: seededUniform(4) });
  const terms = o.lossDetails!.terms;
  assert.ok((await terms.loss_cross_entropy!.item()) > 0);
  assert.is(await terms.loss_mask!.item(), 0);
  assert.is(await terms.loss_dice_1!.item(), 0);
  assert.equal(o.lossDetails!.matchings.map((r) => r[0]![0].length), [0, 0, 0]);
  disposeOutput(o);
});

test('mask2former: bad labels and checkpoints are named', async () => {
  const masks = Tensor.zeros([1, H, W]);
  await rejects(() => model.forward(pixels, { maskLabels: [masks], classLabels: [Tensor.fromArray([3], [1], 'i32')] }), /classLabels\[0\]\[0\] = 3 is outside the 3 configured classes/);
  await rejects(() => model.forward(pixels, { maskLabels: [masks], classLabels: [Tensor.fromArray([0, 1], [2], 'i32')] }), /image 0 has 1 masks but 2 class labels/);
  await rejects(() => model.forward(pixels, { maskLabels: [masks, masks], classLabels: [Tensor.fromArray([0], [1], 'i32')] }), /2 maskLabels and 1 classLabels for a batch of 1/);
  const state = new Map(Object.entries(model.stateDict()));
  state.delete('model.transformer_module.queries_features.weight');
  state.set('class_predictor.bias', Tensor.zeros([7]));
  const fresh = new Mask2FormerForUniversalSegmentation(config);
  assert.throws(() => fresh.loadStateDict(state), (e: Error) => /missing keys \(1\): model\.transformer_module\.queries_features\.weight/.test(e.message) && /wrong shape: class_predictor\.bias expected \[4\], found \[7\]/.test(e.message));
  assert.throws(() => parseMask2FormerConfig({ model_type: 'mask2former', backbone_config: { model_type: 'resnet' } }), /config\.json backbone_config: model_type must be 'swin'/);
  fresh.dispose();
});

test.run();
