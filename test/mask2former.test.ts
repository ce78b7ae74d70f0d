// Mask2FormerForUniversalSegmentation against ../shared/conformance/mask2former (transformers 4.57.6, tiny
// Swin): every intermediate, the predictions, the Hungarian matchings, each loss term with the recorded
// random draws replayed, and the gradients of the listed parameters. Tolerances are the README's.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { assertClose, assertTensorClose, conformance, conformanceDir } from './helpers.ts';
import { backward } from '../src/engine/autograd.ts';
import type { Tensor } from '../src/engine/tensor.ts';
import { permute } from '../src/kernels/shape.ts';
import { Mask2FormerForUniversalSegmentation, type Mask2FormerOutput } from '../src/models/mask2former/model.ts';

const dir = `${conformanceDir}/mask2former`;
const io = conformance('mask2former');
const model = Mask2FormerForUniversalSegmentation.fromPretrained(dir);
const logitsTol = 1e-3;
const lossTol = 5e-3;
const batch = io.info('pixel_values').shape[0]!;

const maskLabels = Array.from({ length: batch }, (_, b) => io.get(`mask_labels.${b}`));
const classLabels = Array.from({ length: batch }, (_, b) => io.get(`class_labels.${b}`));
const draws = [...io.keys()].filter((k) => k.startsWith('rand.')).sort((a, b) => Number(a.slice(5)) - Number(b.slice(5)));

let outputs: Promise<Mask2FormerOutput> | undefined;
/** One forward (with the loss and its backward) shared by the tests below. */
function run(): Promise<Mask2FormerOutput> {
  outputs ??= (async () => {
    let next = 0;
    const random = async (shape: number[]) => {
      const key = draws[next++];
      if (!key) throw new Error(`the loss drew more than the ${draws.length} recorded random tensors`);
      const t = io.get(key);
      assert.equal([...t.shape], shape, `${key}: the loss drew shape ${JSON.stringify(shape)}, recorded ${JSON.stringify(t.shape)}`);
      const data = await t.toArray();
      t.dispose();
      return data as Float32Array;
    };
    const out = await model.forward(io.get('pixel_values'), { maskLabels, classLabels, random });
    assert.is(next, draws.length, 'every recorded draw is used');
    backward(out.loss!);
    return out;
  })();
  return outputs;
}

const forwardChecks: [string, (o: Mask2FormerOutput) => Tensor][] = [
  ...[0, 1, 2, 3].map((i): [string, (o: Mask2FormerOutput) => Tensor] => [`encoder_hidden_states.${i}`, (o) => o.encoderHiddenStates[i]!]),
  ['encoder_last_hidden_state', (o) => o.encoderHiddenStates[o.encoderHiddenStates.length - 1]!],
  ...[0, 1, 2].map((i): [string, (o: Mask2FormerOutput) => Tensor] => [`pixel_decoder_hidden_states.${i}`, (o) => o.pixelDecoderHiddenStates[i]!]),
  ['pixel_decoder_last_hidden_state', (o) => o.pixelDecoderLastHiddenState],
  // the reference stores decoder states as [queries, batch, hidden]
  ...[0, 1, 2, 3].map((i): [string, (o: Mask2FormerOutput) => Tensor] => [`transformer_decoder_hidden_states.${i}`, (o) => permute(o.transformerDecoderHiddenStates[i]!, [1, 0, 2])]),
  ['transformer_decoder_last_hidden_state', (o) => o.transformerDecoderHiddenStates[o.transformerDecoderHiddenStates.length - 1]!],
  ['class_queries_logits', (o) => o.classQueriesLogits],
  ['masks_queries_logits', (o) => o.masksQueriesLogits],
  ...[0, 1, 2].flatMap((i): [string, (o: Mask2FormerOutput) => Tensor][] => [
    [`auxiliary_logits.${i}.class_queries_logits`, (o) => o.auxiliaryLogits[i]!.classQueriesLogits],
    [`auxiliary_logits.${i}.masks_queries_logits`, (o) => o.auxiliaryLogits[i]!.masksQueriesLogits],
  ]),
];

for (const [key, pick] of forwardChecks) {
  test(`mask2former forward: ${key}`, async () => {
    const o = await run();
    await assertTensorClose(pick(o), io.get(key), logitsTol, key);
  });
}

const rounds = new Set([...io.keys()].filter((k) => k.startsWith('matching.')).map((k) => Number(k.split('.')[1])));
for (const r of [...rounds].sort()) {
  test(`mask2former Hungarian matching round ${r}`, async () => {
    const o = await run();
    for (let b = 0; b < batch; b++) {
      const [queries, targets] = o.lossDetails!.matchings[r]![b]!;
      assert.equal([...queries], [...(await io.get(`matching.${r}.${b}.query`).toArray())], `round ${r} image ${b} queries`);
      assert.equal([...targets], [...(await io.get(`matching.${r}.${b}.target`).toArray())], `round ${r} image ${b} targets`);
    }
  });
}

/** Points of each pair as (x, y) pairs: the importance-sampled ones sorted (their order never matters), then the uniform ones. */
function canonicalPoints(data: ArrayLike<number>, pairs: number, P: number, importance: number): number[] {
  const out: number[] = [];
  for (let n = 0; n < pairs; n++) {
    const pts = Array.from({ length: P }, (_, k) => [data[(n * P + k) * 2]!, data[(n * P + k) * 2 + 1]!] as const);
    const head = pts.slice(0, importance).sort((a, b) => a[0] - b[0] || a[1] - b[1]);
    for (const [x, y] of [...head, ...pts.slice(importance)]) out.push(x, y);
  }
  return out;
}

for (const key of [...io.keys()].filter((k) => k.startsWith('points.'))) {
  test(`mask2former loss points: ${key} (importance-sampled set, then the uniform points)`, async () => {
    const o = await run();
    const r = Number(key.split('.')[1]);
    const ours = o.lossDetails!.points[r]!;
    const ref = io.get(key);
    assert.equal([...ours.shape], [...ref.shape]);
    const [pairs, P] = ref.shape as [number, number];
    const importance = Math.floor(model.config.importanceSampleRatio * model.config.trainNumPoints);
    assertClose(canonicalPoints(await ours.toArray(), pairs, P, importance), canonicalPoints(await ref.toArray(), pairs, P, importance), 1e-6, key);
  });
}

for (const key of [...io.keys()].filter((k) => k.startsWith('loss.'))) {
  test(`mask2former ${key}`, async () => {
    const o = await run();
    const name = key.slice(5);
    const ours = name === 'total' ? o.loss! : o.lossDetails!.terms[name];
    assert.ok(ours, `no loss term '${name}'`);
    assert.equal(io.info(key).shape.reduce((a, b) => a * b, 1), 1);
    await assertTensorClose(ours!.alias([1]), io.get(key), lossTol, key);
  });
}

const params = new Map(model.namedParameters());
for (const key of [...io.keys()].filter((k) => k.startsWith('grad.'))) {
  test(`mask2former ${key}`, async () => {
    await run();
    const p = params.get(key.slice(5));
    assert.ok(p, `no parameter ${key.slice(5)}`);
    assert.ok(p!.grad, `${key.slice(5)} has no gradient`);
    await assertTensorClose(p!.grad!, io.get(key), lossTol, key);
  });
}

test('mask2former: every conformance tensor is checked', () => {
  const checked = new Set([
    ...forwardChecks.map(([k]) => k),
    'pixel_values', ...[...io.keys()].filter((k) => /^(mask_labels|class_labels|rand|matching|points|loss|grad)\./.test(k)),
  ]);
  assert.equal([...io.keys()].filter((k) => !checked.has(k)), []);
});

test.run();
