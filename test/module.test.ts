// Modules: PyTorch state-dict names for nested modules and lists, loading with missing / unexpected /
// wrong-shape keys, dtype conversion on load, the safetensors round trip, and the conformance VAE header.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { conformanceDir, randomArray } from './helpers.ts';
import { Tensor, f16ToF32, f32ToF16, memoryStats, numel, resetPeakMemory } from '../src/engine/tensor.ts';
import { cast } from '../src/kernels/elementwise.ts';
import { loadSafetensors, saveSafetensors } from '../src/io/safetensors.ts';
import { Module, ModuleList } from '../src/nn/module.ts';
import { Conv2d, GroupNorm, LayerNorm, Linear } from '../src/nn/layers.ts';
import { manualSeed } from '../src/engine/random-cpu.ts';
import { backward } from '../src/engine/autograd.ts';
import { mseLoss } from '../src/kernels/loss.ts';
import { conv2d } from '../src/kernels/conv.ts';
import { SGD } from '../src/optim/sgd.ts';

const fs = process.getBuiltinModule('node:fs');
const os = process.getBuiltinModule('node:os');
const path = process.getBuiltinModule('node:path');

let seed = 1;
const rand = (shape: number[]) => Tensor.fromArray(randomArray(numel(shape), seed++), shape);

class Conv extends Module {
  readonly weight: Tensor;
  readonly bias: Tensor;
  constructor(cin: number, cout: number) {
    super();
    this.weight = this.param('weight', rand([cout, cin, 3, 3]));
    this.bias = this.param('bias', rand([cout]));
  }
}

class Resnet extends Module {
  readonly norm1: Module;
  readonly conv1: Conv;
  constructor(c: number) {
    super();
    this.norm1 = this.module('norm1', new Module());
    this.norm1.param('weight', rand([c]));
    this.norm1.buffer('running_mean', rand([c]));
    this.norm1.buffer('scratch', rand([c]), { persistent: false });
    this.conv1 = this.module('conv1', new Conv(c, c));
  }
}

class DownBlock extends Module {
  readonly resnets: ModuleList<Resnet>;
  constructor(c: number, n: number) {
    super();
    this.resnets = this.module('resnets', new ModuleList(Array.from({ length: n }, () => new Resnet(c))));
  }
}

class Net extends Module {
  readonly conv_in: Conv;
  readonly down_blocks: ModuleList<DownBlock>;
  readonly index: Tensor;
  constructor() {
    super();
    this.conv_in = this.module('conv_in', new Conv(1, 2));
    this.down_blocks = this.module('down_blocks', new ModuleList([new DownBlock(2, 2), new DownBlock(2, 1)]));
    this.index = this.buffer('relative_position_index', Tensor.fromArray(new Int32Array([3, 1, 4, 1]), [2, 2]));
  }
}

const resnetKeys = (p: string) => [`${p}.norm1.weight`, `${p}.norm1.running_mean`, `${p}.conv1.weight`, `${p}.conv1.bias`];
const netKeys = [
  'conv_in.weight', 'conv_in.bias',
  ...resnetKeys('down_blocks.0.resnets.0'), ...resnetKeys('down_blocks.0.resnets.1'), ...resnetKeys('down_blocks.1.resnets.0'),
  'relative_position_index',
];

async function values(record: Record<string, Tensor>): Promise<Record<string, number[]>> {
  const out: Record<string, number[]> = {};
  for (const [k, t] of Object.entries(record)) out[k] = [...await t.toArray()];
  return out;
}

test('state-dict keys follow PyTorch names and order through nested modules and lists', () => {
  const net = new Net();
  // PyTorch order: a module's own parameters, then its buffers, then its children
  const expected = ['relative_position_index', ...netKeys.slice(0, -1)];
  assert.equal(Object.keys(net.stateDict()), expected);
  assert.equal(net.namedParameters().map(([n]) => n), netKeys.filter((k) => !k.includes('running_mean') && !k.includes('index')));
  assert.ok(net.parameters().every((p) => p.requiresGrad));
  assert.equal(net.namedBuffers().map(([n]) => n), [
    'relative_position_index',
    ...['down_blocks.0.resnets.0', 'down_blocks.0.resnets.1', 'down_blocks.1.resnets.0'].flatMap((p) => [`${p}.norm1.running_mean`, `${p}.norm1.scratch`]),
  ]);
  assert.equal(net.namedModules().map(([n]) => n).slice(0, 6), ['', 'conv_in', 'down_blocks', 'down_blocks.0', 'down_blocks.0.resnets', 'down_blocks.0.resnets.0']);
  assert.is(net.down_blocks.at(0).resnets.length, 2);
  assert.is([...net.down_blocks].length, 2);
  assert.throws(() => net.down_blocks.at(2), /index 2 is out of range \(length 2\)/);
  assert.throws(() => net.conv_in.param('weight', Tensor.zeros([1])), /'weight' is already registered/);
  assert.throws(() => net.module('a.b', new Module()), /invalid name 'a\.b'/);
  net.dispose();
});

test('a shared parameter is listed once by parameters() but under both names in stateDict()', () => {
  const m = new Module();
  const a = m.module('a', new Module());
  const b = m.module('b', new Module());
  const w = a.param('weight', Tensor.zeros([2]));
  b.param('weight', w);
  assert.equal(m.namedParameters().map(([n]) => n), ['a.weight']);
  assert.equal(Object.keys(m.stateDict()), ['a.weight', 'b.weight']);
  m.dispose();
});

test('train / eval reach every module; zeroGrad drops gradients; dispose frees everything', () => {
  const before = memoryStats().liveBytes;
  const net = new Net();
  net.eval();
  assert.ok(net.namedModules().every(([, m]) => !m.training));
  net.train();
  assert.ok(net.namedModules().every(([, m]) => m.training));
  for (const p of net.parameters()) p.grad = Tensor.zeros(p.shape);
  net.zeroGrad();
  assert.ok(net.parameters().every((p) => p.grad === undefined));
  net.requireGrad(false);
  assert.ok(net.parameters().every((p) => !p.requiresGrad));
  net.dispose();
  assert.is(memoryStats().liveBytes, before);
});

test('loadStateDict reports missing, unexpected and wrong-shape keys; strict throws one error listing them all', async () => {
  const net = new Net();
  const other = new Net();
  const sd = { ...other.stateDict() };
  delete sd['conv_in.bias'];
  delete sd['down_blocks.1.resnets.0.norm1.running_mean'];
  const wrong = Tensor.zeros([2, 1, 3, 2]);
  sd['conv_in.weight'] = wrong;
  sd['extra.weight'] = Tensor.zeros([1]);
  const original = await values(net.stateDict());
  let message = '';
  try {
    net.loadStateDict(sd);
  } catch (e) {
    message = (e as Error).message;
  }
  assert.match(message, 'Net.loadStateDict(state dict)');
  assert.match(message, 'missing keys (2): conv_in.bias, down_blocks.1.resnets.0.norm1.running_mean');
  assert.match(message, 'unexpected keys (1): extra.weight');
  assert.match(message, 'wrong shape: conv_in.weight expected [2, 1, 3, 3], found [2, 1, 3, 2]');
  assert.equal(await values(net.stateDict()), original, 'a strict failure loads nothing');

  const report = net.loadStateDict(new Map(Object.entries(sd)), { strict: false });
  assert.equal(report.missing, ['conv_in.bias', 'down_blocks.1.resnets.0.norm1.running_mean']);
  assert.equal(report.unexpected, ['extra.weight']);
  assert.equal(report.mismatched, [{ name: 'conv_in.weight', expected: [2, 1, 3, 3], found: [2, 1, 3, 2] }]);
  assert.is(report.loaded.length, netKeys.length - 3);
  const now = await values(net.stateDict());
  const theirs = await values(other.stateDict());
  for (const k of report.loaded) assert.equal(now[k], theirs[k], k);
  assert.equal(now['conv_in.bias'], original['conv_in.bias']);
  assert.equal(now['conv_in.weight'], original['conv_in.weight']);
  for (const t of [wrong, sd['extra.weight']!]) t.dispose();
  net.dispose();
  other.dispose();
});

test('stateDict → saveSafetensors → loadSafetensors → loadStateDict restores identical values, in place', async () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'freemask-module-'));
  const file = path.join(dir, 'net.safetensors');
  const a = new Net();
  await saveSafetensors(file, a.stateDict());
  const b = new Net();
  const weightField = b.conv_in.weight;
  const reader = loadSafetensors(file);
  const report = b.loadStateDict(reader);
  reader.close();
  assert.is(report.loaded.length, netKeys.length);
  assert.equal(await values(b.stateDict()), await values(a.stateDict()));
  assert.is(b.conv_in.weight, weightField, 'fields keep pointing at the loaded tensors');
  assert.is(b.index.dtype, 'i32');

  // A wrong-shape file names the file and both shapes.
  const c = new Net();
  await saveSafetensors(file, { ...a.stateDict(), 'conv_in.bias': Tensor.zeros([3]) });
  const bad = loadSafetensors(file);
  assert.throws(() => c.loadStateDict(bad), (e: Error) => e.message.includes(file) && e.message.includes('conv_in.bias expected [2], found [3]'));
  bad.close();
  fs.rmSync(dir, { recursive: true });
  for (const m of [a, b, c]) m.dispose();
});

test('loading from a file goes tensor by tensor: peak extra memory is one tensor, not the checkpoint', async () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'freemask-module-'));
  const file = path.join(dir, 'wide.safetensors');
  const wide = () => {
    const m = new Module();
    for (let i = 0; i < 8; i++) m.param(`w${i}`, Tensor.zeros([128, 128]));
    return m;
  };
  const a = wide();
  await saveSafetensors(file, a.stateDict());
  const b = wide();
  const reader = loadSafetensors(file);
  const live = memoryStats().liveBytes;
  resetPeakMemory();
  b.loadStateDict(reader);
  reader.close();
  const extra = memoryStats().peakBytes - live;
  assert.ok(extra <= 128 * 128 * 4, `peak extra ${extra} bytes for a checkpoint of ${8 * 128 * 128 * 4}`);
  fs.rmSync(dir, { recursive: true });
  a.dispose();
  b.dispose();
});

test('an f16 checkpoint loads into f32 parameters (converted), from a file or from tensors', async () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'freemask-module-'));
  const file = path.join(dir, 'half.safetensors');
  const a = new Net();
  const half = Object.fromEntries(Object.entries(a.stateDict()).map(([k, t]) => [k, t.dtype === 'f32' ? cast(t, 'f16') : t]));
  await saveSafetensors(file, half);
  const expected = await values(a.stateDict());
  for (const k of Object.keys(expected)) if (a.stateDict()[k]!.dtype === 'f32') expected[k] = expected[k]!.map((v) => f16ToF32(f32ToF16(v)));
  const fromFile = new Net();
  const reader = loadSafetensors(file);
  assert.is(reader.info('conv_in.weight').dtype, 'F16');
  fromFile.loadStateDict(reader);
  reader.close();
  assert.equal(await values(fromFile.stateDict()), expected);
  assert.is(fromFile.conv_in.weight.dtype, 'f32');
  const fromTensors = new Net();
  fromTensors.loadStateDict(half);
  assert.equal(await values(fromTensors.stateDict()), expected);
  for (const t of Object.values(half)) if (t.dtype === 'f16') t.dispose();
  fs.rmSync(dir, { recursive: true });
  for (const m of [a, fromFile, fromTensors]) m.dispose();
});

test('the conformance VAE checkpoint: the reader sees every key of its header with its shape', () => {
  const file = `${conformanceDir}/vae/model.safetensors`;
  const bytes = fs.readFileSync(file);
  const n = Number(bytes.readBigUInt64LE(0));
  const header = JSON.parse(bytes.subarray(8, 8 + n).toString('utf8')) as Record<string, { shape: number[]; dtype: string }>;
  delete header.__metadata__;
  const reader = loadSafetensors(file);
  assert.equal([...reader.keys()].sort(), Object.keys(header).sort());
  for (const [k, v] of Object.entries(header)) {
    assert.equal(reader.info(k).shape, v.shape, k);
    assert.is(reader.info(k).dtype, v.dtype, k);
  }
  assert.ok(reader.has('encoder.conv_in.weight') && reader.has('decoder.up_blocks.0.resnets.0.conv1.weight'));
  reader.close();
});

test('layers: PyTorch names, default init bounds, reproducible with manualSeed', async () => {
  manualSeed(5);
  const a = new Conv2d(4, 6, 3, { groups: 2, padding: 1 });
  manualSeed(5);
  const b = new Conv2d(4, 6, 3, { groups: 2, padding: 1 });
  assert.equal(Object.keys(a.stateDict()), ['weight', 'bias']);
  assert.equal(a.weight.shape, [6, 2, 3, 3]);
  const wa = await a.weight.toArray();
  assert.equal([...wa], [...await b.weight.toArray()]);
  const bound = 1 / Math.sqrt(2 * 3 * 3);
  assert.ok(wa.every((v) => Math.abs(v) <= bound) && Math.max(...wa.map(Math.abs)) > 0.8 * bound, 'uniform in ±1/√fan_in');
  const lin = new Linear(5, 3, { bias: false });
  assert.equal(Object.keys(lin.stateDict()), ['weight']);
  assert.equal(lin.weight.shape, [3, 5]);
  const gn = new GroupNorm(2, 4);
  assert.equal([...await gn.weight!.toArray()], [1, 1, 1, 1]);
  assert.equal([...await gn.bias!.toArray()], [0, 0, 0, 0]);
  const ln = new LayerNorm([3, 2], { bias: false });
  assert.equal(Object.keys(ln.stateDict()), ['weight']);
  assert.throws(() => new Conv2d(3, 4, 1, { groups: 2 }), /must be divisible by groups 2/);
  for (const m of [a, b, lin, gn, ln]) m.dispose();
});

test('layers compute their ops: Linear against a CPU product, Conv2d, GroupNorm and LayerNorm forward', async () => {
  const lin = new Linear(3, 2);
  const x = Tensor.fromArray(randomArray(12, 40), [4, 3]);
  const [xv, wv, bv] = [await x.toArray(), await lin.weight.toArray(), await lin.bias!.toArray()];
  const y = lin.forward(x);
  const want = Array.from({ length: 8 }, (_, k) => {
    const [r, c] = [Math.floor(k / 2), k % 2];
    return bv[c]! + [0, 1, 2].reduce((acc, j) => acc + xv[r * 3 + j]! * wv[c * 3 + j]!, 0);
  });
  const got = await y.toArray();
  want.forEach((v, k) => assert.ok(Math.abs(got[k]! - v) < 1e-5, `linear ${k}: ${got[k]} vs ${v}`));

  const conv = new Conv2d(2, 4, [3, 1], { stride: [2, 1], padding: [1, 0] });
  const img = Tensor.fromArray(randomArray(2 * 2 * 5 * 3, 41), [2, 2, 5, 3]);
  const direct = conv2d(img, conv.weight, conv.bias, { stride: [2, 1], padding: [1, 0] });
  const out = conv.forward(img);
  assert.equal(out.shape, [2, 4, 3, 3]);
  assert.equal([...await out.toArray()], [...await direct.toArray()]);

  const gn = new GroupNorm(2, 4).forward(Tensor.fromArray(randomArray(32, 42, 0, 10), [1, 4, 2, 4]));
  const gv = Float32Array.from(await gn.toArray());
  const first = gv.slice(0, 16);
  const mean = first.reduce((p, v) => p + v, 0) / 16;
  const variance = first.reduce((p, v) => p + (v - mean) ** 2, 0) / 16;
  assert.ok(Math.abs(mean) < 1e-5 && Math.abs(variance - 1) < 1e-3, `group 0 normalised: mean ${mean}, var ${variance}`);
  const ln = new LayerNorm(6).forward(Tensor.fromArray(randomArray(12, 43, 0, 10), [2, 6]));
  const lv = Float32Array.from(await ln.toArray()).slice(6);
  assert.ok(Math.abs(lv.reduce((p, v) => p + v, 0)) < 1e-5);
  for (const t of [x, y, img, direct, out, gn, ln]) t.dispose();
  lin.dispose();
  conv.dispose();
});

test('a Module, backward and SGD together fit a linear map', async () => {
  manualSeed(11);
  const model = new Linear(2, 1);
  const x = Tensor.fromArray(randomArray(32, 44), [16, 2]);
  const xv = await x.toArray();
  const target = Tensor.fromArray(Float32Array.from({ length: 16 }, (_, r) => 2 * xv[2 * r]! - xv[2 * r + 1]! + 0.5), [16, 1]);
  const opt = new SGD(model.parameters(), { lr: 0.3, momentum: 0.5 });
  const losses: number[] = [];
  for (let step = 0; step < 60; step++) {
    opt.zeroGrad();
    const y = model.forward(x);
    const loss = mseLoss(y, target);
    backward(loss);
    opt.step();
    losses.push(await loss.item());
    loss.dispose();
    y.dispose();
  }
  assert.ok(losses[59]! < 1e-4 * losses[0]!, `loss ${losses[0]} → ${losses[59]}`);
  const [w, b] = [await model.weight.toArray(), await model.bias!.toArray()];
  assert.ok(Math.abs(w[0]! - 2) < 1e-2 && Math.abs(w[1]! + 1) < 1e-2 && Math.abs(b[0]! - 0.5) < 1e-2, `w ${w}, b ${b}`);
  model.zeroGrad();
  model.dispose();
  opt.dispose();
  x.dispose();
  target.dispose();
});

test.run();
