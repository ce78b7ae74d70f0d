// Optimizers against a float64 CPU transcription of PyTorch's update rules (torch.optim.SGD / AdamW, single-
// tensor path), over several steps with changing gradients and learning rates; state save → load → continue
// equals an uninterrupted run.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { assertClose, randomArray } from './helpers.ts';
import { Tensor } from '../src/engine/tensor.ts';
import { loadSafetensors, saveSafetensors } from '../src/io/safetensors.ts';
import { SGD, type SGDOptions } from '../src/optim/sgd.ts';
import { AdamW, type AdamWOptions } from '../src/optim/adamw.ts';
import type { Optimizer } from '../src/optim/optimizer.ts';

const fs = process.getBuiltinModule('node:fs');
const os = process.getBuiltinModule('node:os');
const path = process.getBuiltinModule('node:path');

const shapes = [[5, 3], [7], [2, 3, 4]];
const steps = 5;
const gradAt = (step: number, p: number) => randomArray(shapes[p]!.reduce((a, b) => a * b), 100 * step + p, -2, 2);
const lrAt = (base: number, step: number) => base * (1 - 0.1 * step);

/** PyTorch's SGD in float64. */
function sgdReference(x: Float64Array[], o: Required<SGDOptions>, run: (step: number) => void = () => {}): Float64Array[] {
  const bufs: (Float64Array | undefined)[] = x.map(() => undefined);
  for (let s = 0; s < steps; s++) {
    const lr = lrAt(o.lr, s);
    x.forEach((p, i) => {
      const g = gradAt(s, i);
      for (let k = 0; k < p.length; k++) {
        let d = g[k]! + o.weightDecay * p[k]!;
        if (o.momentum !== 0) {
          const buf = (bufs[i] ??= new Float64Array(p.length));
          buf[k] = s === 0 ? d : o.momentum * buf[k]! + (1 - o.dampening) * d;
          d = o.nesterov ? d + o.momentum * buf[k]! : buf[k]!;
        }
        p[k] = p[k]! - lr * d;
      }
    });
    run(s);
  }
  return x;
}

/** PyTorch's AdamW in float64. */
function adamwReference(x: Float64Array[], o: Required<AdamWOptions>): Float64Array[] {
  const [b1, b2] = o.betas;
  const m = x.map((p) => new Float64Array(p.length));
  const v = x.map((p) => new Float64Array(p.length));
  for (let s = 0; s < steps; s++) {
    const lr = lrAt(o.lr, s);
    const t = s + 1;
    x.forEach((p, i) => {
      const g = gradAt(s, i);
      for (let k = 0; k < p.length; k++) {
        p[k] = p[k]! * (1 - lr * o.weightDecay);
        m[i]![k] = m[i]![k]! + (1 - b1) * (g[k]! - m[i]![k]!);
        v[i]![k] = b2 * v[i]![k]! + (1 - b2) * g[k]! * g[k]!;
        const denom = Math.sqrt(v[i]![k]!) / Math.sqrt(1 - b2 ** t) + o.eps;
        p[k] = p[k]! - (lr / (1 - b1 ** t)) * (m[i]![k]! / denom);
      }
    });
  }
  return x;
}

const initial = () => shapes.map((s, i) => randomArray(s.reduce((a, b) => a * b), 7 + i));
const makeParams = () => initial().map((d, i) => Tensor.fromArray(d, shapes[i]).requireGrad());

/** Runs steps [from, to) of the schedule on `opt`, setting the gradients and learning rate before each. */
function runSteps(opt: Optimizer, params: Tensor[], baseLr: number, from: number, to: number): void {
  for (let s = from; s < to; s++) {
    opt.zeroGrad();
    params.forEach((p, i) => (p.grad = Tensor.fromArray(gradAt(s, i), p.shape)));
    opt.lr = lrAt(baseLr, s);
    opt.step();
  }
}

async function assertParams(params: Tensor[], ref: Float64Array[], what: string): Promise<void> {
  for (let i = 0; i < params.length; i++) assertClose(await params[i]!.toArray(), ref[i]!, 2e-6, `${what} param ${i}`);
}

const sgdCases: [string, Required<SGDOptions>][] = [
  ['plain', { lr: 0.1, momentum: 0, dampening: 0, weightDecay: 0, nesterov: false }],
  ['momentum + dampening + weight decay', { lr: 0.05, momentum: 0.9, dampening: 0.3, weightDecay: 0.01, nesterov: false }],
  ['nesterov + weight decay', { lr: 0.05, momentum: 0.8, dampening: 0, weightDecay: 0.05, nesterov: true }],
];

for (const [name, o] of sgdCases) {
  test(`SGD ${name} matches PyTorch's rule over ${steps} steps`, async () => {
    const params = makeParams();
    const opt = new SGD(params, o);
    runSteps(opt, params, o.lr, 0, steps);
    await assertParams(params, sgdReference(initial().map((d) => Float64Array.from(d)), o), `SGD ${name}`);
    opt.dispose();
    params.forEach((p) => p.dispose());
  });
}

test(`AdamW matches PyTorch's rule over ${steps} steps (default and custom hyperparameters)`, async () => {
  const cases: Required<AdamWOptions>[] = [
    { lr: 1e-2, betas: [0.9, 0.999], eps: 1e-8, weightDecay: 0.01 },
    { lr: 3e-2, betas: [0.8, 0.95], eps: 1e-3, weightDecay: 0.2 },
  ];
  for (const o of cases) {
    const params = makeParams();
    const opt = o.betas[0] === 0.9 ? new AdamW(params, { lr: o.lr }) : new AdamW(params, o);
    runSteps(opt, params, o.lr, 0, steps);
    await assertParams(params, adamwReference(initial().map((d) => Float64Array.from(d)), o), `AdamW ${JSON.stringify(o)}`);
    opt.dispose();
    params.forEach((p) => p.dispose());
  }
});

test('a parameter without gradient is skipped and keeps its own step count', async () => {
  const params = makeParams();
  const before = await params[1]!.toArray();
  const opt = new AdamW(params, { lr: 0.1 });
  params[0]!.grad = Tensor.fromArray(gradAt(0, 0), params[0]!.shape);
  opt.step();
  assert.equal([...await params[1]!.toArray()], [...before]);
  assert.equal(JSON.parse(opt.stateDict().metadata.steps!), [1, 0, 0]);
  assert.equal(Object.keys(opt.stateDict().tensors), ['state.0.exp_avg', 'state.0.exp_avg_sq']);
  opt.dispose();
  params.forEach((p) => p.dispose());
});

test('state saved to safetensors, loaded into a fresh optimizer, continues exactly like an uninterrupted run', async () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'freemask-optim-'));
  const makers: [string, (p: Tensor[]) => Optimizer, number][] = [
    ['SGD', (p) => new SGD(p, { lr: 0.05, momentum: 0.9, weightDecay: 0.01, nesterov: true }), 0.05],
    ['AdamW', (p) => new AdamW(p, { lr: 0.02, betas: [0.85, 0.99], weightDecay: 0.1 }), 0.02],
  ];
  for (const [name, make, lr] of makers) {
    const straight = makeParams();
    const a = make(straight);
    runSteps(a, straight, lr, 0, steps);

    const first = makeParams();
    const b = make(first);
    runSteps(b, first, lr, 0, 2);
    const file = path.join(dir, `${name}.safetensors`);
    const sd = b.stateDict();
    await saveSafetensors(file, { ...sd.tensors, ...Object.fromEntries(first.map((p, i) => [`param.${i}`, p])) }, sd.metadata);
    b.dispose();

    // resume: parameters from the file, a fresh optimizer with another learning rate and its state loaded
    const reader = loadSafetensors(file);
    const resumed = first.map((_, i) => reader.get(`param.${i}`).requireGrad());
    const c = make(resumed);
    c.lr = 123;
    const stateOnly = { tensors: Object.fromEntries([...reader.keys()].filter((k) => k.startsWith('state.')).map((k) => [k, reader.get(k)])), metadata: reader.metadata };
    c.loadStateDict(stateOnly);
    assert.is(c.lr, lr * 0.9, `${name}: the learning rate comes back from the state`);
    Object.values(stateOnly.tensors).forEach((t) => t.dispose());
    reader.close();
    runSteps(c, resumed, lr, 2, steps);
    for (let i = 0; i < straight.length; i++) {
      assert.equal([...await resumed[i]!.toArray()], [...await straight[i]!.toArray()], `${name} param ${i} after resuming`);
    }
    // the reader form of loadStateDict
    const d = make(resumed);
    await saveSafetensors(file, c.stateDict().tensors, c.stateDict().metadata);
    const r2 = loadSafetensors(file);
    d.loadStateDict(r2);
    r2.close();
    assert.equal(d.stateDict().metadata, c.stateDict().metadata);
    d.loadStateDict(d.stateDict()); // loading its own state is harmless
    for (const [k, t] of Object.entries(c.stateDict().tensors)) {
      assert.equal([...await d.stateDict().tensors[k]!.toArray()], [...await t.toArray()], `${name} ${k}`);
    }
    for (const o of [a, c, d]) o.dispose();
    for (const p of [...straight, ...first, ...resumed]) p.dispose();
  }
  fs.rmSync(dir, { recursive: true });
});

test('fused (packed, one dispatch per group) and per-parameter updates give the same bits, with groups and gaps', async () => {
  // three groups with their own options; parameter 1 has no gradient at step 2, so its step count lags
  const makers: [string, (p: Tensor[], fused: boolean) => Optimizer][] = [
    ['AdamW', (p, fused) => new AdamW([{ params: [p[0]!] }, { params: [p[1]!, p[2]!], lr: 0.03, weightDecay: 0 }], { lr: 0.01, weightDecay: 0.1, fused })],
    ['SGD', (p, fused) => new SGD([{ params: [p[0]!, p[1]!], momentum: 0.9 }, { params: [p[2]!], nesterov: true, momentum: 0.5 }], { lr: 0.05, weightDecay: 0.01, fused })],
  ];
  for (const [name, make] of makers) {
    const result: Float32Array[][] = [];
    // (p.toArray() of an f32 tensor is a Float32Array)
    for (const fused of [true, false]) {
      const params = makeParams();
      const opt = make(params, fused);
      for (let s = 0; s < 4; s++) {
        opt.zeroGrad();
        params.forEach((p, i) => (p.grad = s === 2 && i === 1 ? undefined : Tensor.fromArray(gradAt(s, i), p.shape)));
        opt.step(s === 3 ? { maxGradNorm: 0.5 } : {})?.dispose();
      }
      result.push(await Promise.all(params.map((p) => p.toArray() as Promise<Float32Array>)));
      assert.equal(JSON.parse(opt.stateDict().metadata.steps!), [4, 3, 4], `${name}: step counts`);
      if (fused) assert.ok(params.every((p) => p.buffer === params[0]!.buffer), `${name}: packed into one buffer`);
      opt.dispose();
      params.forEach((p) => p.dispose());
    }
    result[0]!.forEach((p, i) => assert.equal(new Uint8Array(p.buffer), new Uint8Array(result[1]![i]!.buffer), `${name} param ${i}: same bytes`));
  }
});

test('parameter groups follow their own options (against PyTorch\'s rule per group)', async () => {
  const params = makeParams();
  const a: Required<AdamWOptions> = { lr: 1e-2, betas: [0.9, 0.999], eps: 1e-8, weightDecay: 0.01 };
  const b: Required<AdamWOptions> = { ...a, lr: 3e-2, weightDecay: 0.3 };
  const opt = new AdamW([{ params: params.slice(0, 2) }, { params: params.slice(2), lr: b.lr, weightDecay: b.weightDecay }], { lr: a.lr });
  for (let s = 0; s < steps; s++) {
    opt.zeroGrad();
    params.forEach((p, i) => (p.grad = Tensor.fromArray(gradAt(s, i), p.shape)));
    opt.groups[0]!.options.lr = lrAt(a.lr, s);
    opt.groups[1]!.options.lr = lrAt(b.lr, s);
    opt.step();
  }
  const refA = adamwReference(initial().map((d) => Float64Array.from(d)), a);
  const refB = adamwReference(initial().map((d) => Float64Array.from(d)), b);
  await assertParams(params, [refA[0]!, refA[1]!, refB[2]!], 'AdamW groups');
  opt.dispose();
  params.forEach((p) => p.dispose());
});

test('gradient clipping by the global norm (torch clip_grad_norm_) in the update; a non-finite norm changes nothing', async () => {
  for (const fused of [true, false]) {
    const params = makeParams();
    const opt = new SGD(params, { lr: 0.1, fused });
    const grads = params.map((p, i) => gradAt(0, i));
    const norm = Math.sqrt(grads.reduce((acc, g) => acc + g.reduce((a, v) => a + v * v, 0), 0));
    params.forEach((p, i) => (p.grad = Tensor.fromArray(grads[i]!, p.shape)));
    const maxNorm = norm / 3;
    const measured = opt.step({ maxGradNorm: maxNorm })!;
    assert.ok(Math.abs((await measured.item()) - norm) < 1e-5 * norm, `${fused}: the returned norm is ‖g‖`);
    measured.dispose();
    const scale = Math.min(1, maxNorm / (norm + 1e-6));
    const ref = initial().map((d, i) => Float64Array.from(d, (v, k) => v - 0.1 * scale * grads[i]![k]!));
    await assertParams(params, ref, `clipped SGD (fused ${fused})`);
    // Infinity measures only: a plain step
    const unclipped = opt.step({ maxGradNorm: Infinity })!;
    assert.ok(Math.abs((await unclipped.item()) - norm) < 1e-5 * norm);
    unclipped.dispose();
    await assertParams(params, ref.map((p, i) => p.map((v, k) => v - 0.1 * grads[i]![k]!)), `measured-only step (fused ${fused})`);
    const before = await Promise.all(params.map((p) => p.toArray()));
    params[1]!.grad!.dispose();
    params[1]!.grad = Tensor.fromArray(new Float32Array(params[1]!.size).fill(Infinity), params[1]!.shape);
    const bad = opt.step({ maxGradNorm: 1 })!;
    assert.ok(!Number.isFinite(await bad.item()));
    bad.dispose();
    for (let i = 0; i < params.length; i++) assert.equal(await params[i]!.toArray(), before[i], `non-finite norm: parameter ${i} unchanged`);
    assert.throws(() => opt.step({ maxGradNorm: 0 }), /maxGradNorm must be > 0/);
    opt.dispose();
    opt.zeroGrad();
    params.forEach((p) => p.dispose());
  }
});

test('loadStateDict rejects state of another optimizer, parameter count or shape, naming the problem', () => {
  const params = makeParams();
  const sgd = new SGD(params, { lr: 0.1, momentum: 0.5 });
  const adam = new AdamW(params, { lr: 0.1 });
  runSteps(sgd, params, 0.1, 0, 1);
  assert.throws(() => adam.loadStateDict(sgd.stateDict()), /AdamW\.loadStateDict\(state dict\): the state is for optimizer "SGD"/);
  const fewer = new SGD(params.slice(1), { lr: 0.1 });
  assert.throws(() => fewer.loadStateDict(sgd.stateDict()), /the state has 3 parameters, this optimizer 2/);
  const swapped = new SGD([params[1]!, params[0]!, params[2]!], { lr: 0.1 });
  assert.throws(() => swapped.loadStateDict(sgd.stateDict()), /'state\.0\.momentum_buffer' has shape \[5, 3\], parameter 0 has \[7\]/);
  const sd = sgd.stateDict();
  assert.throws(() => sgd.loadStateDict({ ...sd, tensors: { ...sd.tensors, 'state.9.momentum_buffer': params[0]! } }), /unexpected key 'state\.9\.momentum_buffer'/);
  assert.throws(() => new SGD([], { lr: 1 }), /no parameters/);
  assert.throws(() => new SGD([Tensor.zeros([2])], { lr: 1 }), /requiresGrad/);
  assert.throws(() => new SGD(params, { lr: 1, nesterov: true }), /Nesterov momentum requires a momentum/);
  for (const o of [sgd, adam, fewer, swapped]) o.dispose();
  sgd.zeroGrad();
  params.forEach((p) => p.dispose());
});

test.run();
