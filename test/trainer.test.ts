// The shared Trainer on a small regression task whose loss draws randomness from the batch seed: schedules
// against their formulas, epoch order, the EMA against a float64 transcription of diffusers' EMAModel, resume
// after a kill (bit-identical weights, EMA, optimizer state and log), the NaN guard, checkpoint refusals.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { assertClose, randomArray } from './helpers.ts';
import { Tensor, tidy } from '../src/engine/tensor.ts';
import { seededRandom } from '../src/engine/random-cpu.ts';
import { add, mul } from '../src/kernels/elementwise.ts';
import { mseLoss } from '../src/kernels/loss.ts';
import { Linear } from '../src/nn/layers.ts';
import { Module } from '../src/nn/module.ts';
import { modelCardMarkdown } from '../src/train/model_card.ts';
import { type Batch, Trainer, type TrainerOptions, checkpointOptions, openCheckpoint, scheduleFactor } from '../src/train/trainer.ts';

const fs = process.getBuiltinModule('node:fs');
const os = process.getBuiltinModule('node:os');
const path = process.getBuiltinModule('node:path');
const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'freemask-trainer-'));

const N = 13, IN = 6, OUT = 3;
const xs = randomArray(N * IN, 1);
const ys = randomArray(N * OUT, 2);

class Net extends Module {
  readonly fc1 = this.module('fc1', new Linear(IN, 8));
  readonly fc2 = this.module('fc2', new Linear(8, OUT));
}

function makeNet(seed: number): Net {
  const net = new Net();
  net.namedParameters().forEach(([, p], i) => p.copyFrom(Tensor.fromArray(randomArray(p.size, seed * 100 + i, -0.5, 0.5), p.shape)));
  return net;
}

/** MSE of fc2(fc1(x) + noise) against y; the noise comes from the batch seed, so resuming must reproduce it. */
function task(net: Net, poison?: { step: number }) {
  return {
    kind: 'regression',
    model: net,
    size: N,
    loss: async (b: Batch) => tidy(() => {
      const x = Tensor.fromArray(Float32Array.from(b.indices.flatMap((k) => [...xs.subarray(k * IN, (k + 1) * IN)])), [b.indices.length, IN]);
      const y = Tensor.fromArray(Float32Array.from(b.indices.flatMap((k) => [...ys.subarray(k * OUT, (k + 1) * OUT)])), [b.indices.length, OUT]);
      const rand = seededRandom(b.seed);
      const noise = Tensor.fromArray(Float32Array.from({ length: b.indices.length * 8 }, () => 0.1 * (rand() - 0.5)), [b.indices.length, 8]);
      const loss = mseLoss(net.fc2.forward(add(net.fc1.forward(x), noise)), y);
      return poison && b.step === poison.step ? mul(loss, Tensor.scalar(NaN)) : loss;
    }),
    metadata: () => ({ net: 'regression' }),
  };
}

const options: TrainerOptions = { steps: 6, batchSize: 4, accumulate: 2, lr: 0.05, warmupSteps: 2, warmupFactor: 0.3, schedule: 'cosine', clipNorm: 0.5, emaDecay: 0.9, seed: 5 };

async function weights(m: Module): Promise<Map<string, Float32Array>> {
  const out = new Map<string, Float32Array>();
  for (const [n, t] of Object.entries(m.stateDict())) out.set(n, (await t.toArray()) as Float32Array);
  return out;
}

test('schedules: warm-up from warmupFactor, then constant, poly or cosine to the last step', () => {
  const o = { steps: 100, warmupSteps: 10, warmupFactor: 0.1, power: 0.9 };
  const close = (a: number, b: number) => assert.ok(Math.abs(a - b) < 1e-12, `${a} vs ${b}`);
  close(scheduleFactor(0, { ...o, schedule: 'poly' }), 0.1);
  close(scheduleFactor(5, { ...o, schedule: 'poly' }), (0.1 * 0.5 + 0.5) * (1 - 5 / 100) ** 0.9);
  close(scheduleFactor(50, { ...o, schedule: 'poly' }), 0.5 ** 0.9);
  assert.is(scheduleFactor(100, { ...o, schedule: 'poly' }), 0);
  close(scheduleFactor(5, { ...o, schedule: 'constant' }), 0.55);
  close(scheduleFactor(50, { ...o, schedule: 'constant' }), 1);
  close(scheduleFactor(25, { ...o, schedule: 'cosine' }), 0.5 * (1 + Math.cos(Math.PI / 4)));
  close(scheduleFactor(100, { ...o, schedule: 'cosine' }), 0);
});

test('sample order: every epoch visits each sample once, in a seeded order', () => {
  const net = makeNet(1);
  const t = new Trainer(task(net), { steps: 10, batchSize: 4, accumulate: 2, seed: 3 });
  const slots = Array.from({ length: 4 }, (_, s) => [0, 1].flatMap((m) => t.batchIndices(s, m))).flat();
  for (let e = 0; e + N <= slots.length; e += N) assert.equal([...slots.slice(e, e + N)].sort((a, b) => a - b), [...Array(N).keys()], `epoch ${e / N}`);
  const other = new Trainer(task(net), { steps: 10, batchSize: 4, accumulate: 2, seed: 4 });
  assert.not.equal(other.batchIndices(0, 0), t.batchIndices(0, 0));
  t.optimizer.dispose();
  other.optimizer.dispose();
  net.dispose();
});

test('EMA follows diffusers\' EMAModel (decay 0 at the first update, then min(decay, (1+t)/(10+t)))', async () => {
  const net = makeNet(2);
  const t = new Trainer(task(net), { ...options, emaDecay: 0.6 });
  const ref = new Map<string, Float64Array>();
  for (let s = 0; s < 5; s++) {
    await t.trainStep();
    const d = s === 0 ? 0 : Math.min(0.6, (1 + s) / (10 + s));
    for (const [n, w] of await weights(net)) {
      const e = ref.get(n) ?? Float64Array.from(w);
      e.forEach((v, k) => (e[k] = v - (1 - d) * (v - w[k]!)));
      ref.set(n, e);
    }
  }
  for (const [n, e] of Object.entries(t.ema!.stateDict())) assertClose(await e.toArray(), ref.get(n)!, 1e-6, `EMA ${n}`);
  t.ema!.dispose();
  t.optimizer.dispose();
  net.dispose();
});

test('resume after a kill: 6 steps straight = 2 steps, checkpoint, fresh objects, restore, 4 steps (same bytes)', async () => {
  const straight = new Trainer(task(makeNet(3)), options);
  await straight.train();
  const killed = new Trainer(task(makeNet(3)), options);
  await killed.trainStep();
  await killed.trainStep();
  await killed.saveCheckpoint(`${dir}/run.safetensors`);
  killed.ema!.dispose();
  killed.optimizer.dispose();
  killed.task.model.dispose();

  const reader = openCheckpoint(`${dir}/run.safetensors`);
  assert.is(reader.metadata.net, 'regression', 'the task\'s metadata is saved');
  const resumed = new Trainer(task(makeNet(9)), checkpointOptions(reader));
  resumed.restore(reader);
  reader.close();
  assert.is(resumed.step, 2);
  await resumed.train();
  const [a, b] = [await weights(straight.task.model), await weights(resumed.task.model)];
  for (const [n, w] of a) assert.equal(new Uint8Array(b.get(n)!.buffer), new Uint8Array(w.buffer), `${n} after resume`);
  for (const [n, e] of Object.entries(straight.ema!.stateDict())) assert.equal(await resumed.ema!.stateDict()[n]!.toArray(), await e.toArray(), `EMA ${n}`);
  assert.equal(resumed.log, straight.log, 'the loss log continues');
  assert.ok(straight.log.loss[5]! < straight.log.loss[0]!, `the loss fell: ${straight.log.loss.map((l) => l.toFixed(4)).join(' ')}`);
  for (const t of [straight, resumed]) {
    t.ema!.dispose();
    t.optimizer.dispose();
    t.task.model.dispose();
  }
});

test('a NaN loss stops training naming the step and samples; the checkpoint and weights stay as they were', async () => {
  const t = new Trainer(task(makeNet(4), { step: 1 }), options);
  await t.trainStep();
  await t.saveCheckpoint(`${dir}/nan.safetensors`);
  const before = fs.readFileSync(`${dir}/nan.safetensors`);
  const w = await weights(t.task.model);
  try {
    await t.train(() => t.saveCheckpoint(`${dir}/nan.safetensors`));
    assert.unreachable('training went on with a NaN loss');
  } catch (e) {
    assert.match((e as Error).message, /^training stopped at step 2: the loss is NaN \(micro-batch 0, samples [\d, ]+\); the last checkpoint is left as it was/);
  }
  assert.is(t.step, 1);
  assert.equal(t.log.loss.length, 1);
  assert.ok(fs.readFileSync(`${dir}/nan.safetensors`).equals(before), 'checkpoint unchanged');
  assert.equal(await weights(t.task.model), w, 'weights unchanged');
  t.ema!.dispose();
  t.optimizer.dispose();
  t.task.model.dispose();
});

test('restore refuses a checkpoint of another task, other parameters or a missing file; options are checked', async () => {
  const other = { ...task(makeNet(5)), kind: 'other' };
  const t = new Trainer(other, options);
  const reader = openCheckpoint(`${dir}/run.safetensors`);
  assert.throws(() => t.restore(reader), /run\.safetensors is not a other training checkpoint \(metadata format "freemask-regression-train"\)/);
  const fewer = new Trainer({ ...task(makeNet(5)), groups: (o) => [{ name: 'all', names: ['fc1.weight'], params: [t.task.model.parameters()[0]!], lrFactor: 1, weightDecay: o.weightDecay }] }, { ...options, emaDecay: 0 });
  assert.throws(() => fewer.restore(reader), /parameter groups list other parameters/);
  reader.close();
  assert.throws(() => openCheckpoint(`${dir}/none.safetensors`), /none\.safetensors does not exist/);
  assert.throws(() => new Trainer(task(makeNet(5)), { steps: 0 }), /steps must be a positive integer/);
  assert.throws(() => new Trainer(task(makeNet(5)), { steps: 1, schedule: 'step' as never }), /schedule must be constant, poly or cosine/);
  assert.throws(() => new Trainer(task(makeNet(5)), { steps: 1, emaDecay: 1 }), /emaDecay must be below 1/);
  for (const x of [t, fewer]) {
    x.ema?.dispose();
    x.optimizer.dispose();
  }
});

test('model card: the table, options, loss axes and final loss, evaluation rows and the commands', () => {
  const md = modelCardMarkdown({
    title: 'Tiny', summary: 'A test model.', architecture: 'Linear', parameters: 1234567, data: 'ShapeWorld train 0..99',
    options: { lr: 0.0002, steps: 10 }, steps: 10, seconds: 7200, machine: '2 cores', loss: { values: [1, 0.5, 0.2, 0.1], picture: 'loss.png' },
    evaluation: { 'PSNR (dB)': 31.234567, 'fidelity (target ≥ 90%)': '93%' }, reproduce: ['freemask world …'],
  });
  for (const part of ['# Tiny', '| parameters | 1.235 M |', '| training time | 2.00 h (7200 s) |', '- lr: 0.0002000', 'y: log scale from 0.1 to 1', 'last 5% of the steps: 0.1000', '| PSNR (dB) | 31.23 |', '| fidelity (target ≥ 90%) | 93% |', 'freemask world …']) {
    assert.ok(md.includes(part), `card has ${part}\n${md}`);
  }
});

test.after(() => fs.rmSync(dir, { recursive: true }));
test.run();
