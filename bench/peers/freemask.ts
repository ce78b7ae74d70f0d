// freemask, through its public ops (src/index.ts). Inputs are tensors made once (resident on the GPU); each
// run's output (or, for backward, every input gradient) is read back to the CPU as raw bytes, like the peers.
// f16 rows cast the inputs to f16 and run the same ops; an op without an f16 kernel is reported as such.
import * as F from '../../src/index.ts';
import { readBuffer } from '../../src/engine/queue.ts';
import { fmaCeilingGflops } from '../fma_ceiling.ts';
import { type BenchDType, Unsupported, type Workload, inputData, inputShapes, meanAbs, metaPrefix, outputShape, runEngine } from './workloads.ts';

type T = F.Tensor;

// The composite steps that a fused kernel may replace: switching one to a fused call is a one-line change here.
const linearGelu = (x: T, weight: T, bias: T) => F.linear(x, weight, bias, 'gelu_erf');
const conv2dSilu = (x: T, weight: T, bias: T | undefined, padding: number) => F.conv2d(x, weight, bias, { padding, activation: 'silu' });
const groupNormSilu = (x: T, groups: number, gamma: T, beta: T) => F.groupNorm(x, groups, gamma, beta, 1e-5, 'silu');

function computation(w: Workload): (...xs: T[]) => T {
  const s = w.spec;
  switch (s.kind) {
    case 'matmul':
      return (a, b) => F.matmul(a!, b!);
    case 'linear_gelu':
      return (x, weight, bias) => linearGelu(x!, weight!, bias!);
    case 'conv2d':
      return s.silu ? (x, weight, bias) => conv2dSilu(x!, weight!, bias, s.pad) : (x, weight, bias) => F.conv2d(x!, weight!, bias, { padding: s.pad });
    case 'attention':
      return (q, k, v) => F.scaledDotProductAttention(q!, k!, v!);
    case 'group_norm_silu':
      return (x, gamma, beta) => groupNormSilu(x!, s.groups, gamma!, beta!);
    case 'layer_norm':
      return (x, gamma, beta) => F.layerNorm(x!, [s.cols], gamma, beta);
    case 'softmax':
      return (x) => F.softmax(x!, -1);
    case 'chain':
      return (x, c) => {
        let y = x!;
        for (let i = 0; i < s.length; i++) y = F.add(y, c!);
        return y;
      };
  }
}

const readBack = (t: T) => readBuffer(t.buffer, Math.ceil(t.byteLength / 4) * 4);

await F.getDevice();
const info = F.deviceInfo();
process.stdout.write(`${metaPrefix}${JSON.stringify({ adapter: info.description, features: info.features, fmaCeilingGflops: await fmaCeilingGflops() })}\n`);

await runEngine('freemask', process.argv.slice(2), async (w: Workload, dtype: BenchDType) => {
  const fn = computation(w);
  const inputs = inputShapes(w.spec).map((inp, i) => F.Tensor.fromArray(inputData(inp.shape, i + 1, inp.fanIn), inp.shape));
  const owned = [...inputs];
  const dispose = () => owned.forEach((t) => t.dispose());
  let args = inputs;
  if (dtype === 'f16') {
    args = inputs.map((t) => F.cast(t, 'f16'));
    owned.push(...args);
    try {
      F.tidy(() => fn(...args)).dispose();
      await F.sync();
    } catch (e) {
      dispose();
      const msg = e instanceof Error ? e.message : String(e);
      if (/expected a .* tensor, got f16|shader-f16 feature/.test(msg)) throw new Unsupported(`no f16 kernel (${msg})`);
      throw e;
    }
  }
  F.resetPeakMemory();
  const extra = () => ({ peak_bytes: F.memoryStats().peakBytes });
  if (!w.backward) {
    return {
      note: 'inputs resident on GPU, output read back',
      run: async () => {
        const y = F.tidy(() => fn(...args));
        await readBack(y);
        y.dispose();
      },
      meanAbs: async () => {
        const y = F.tidy(() => fn(...args));
        const data = await y.toArray();
        y.dispose();
        return meanAbs([data]);
      },
      dispose,
      extra,
    };
  }
  const dy = F.Tensor.fromArray(inputData(outputShape(w.spec), 99), outputShape(w.spec));
  owned.push(dy);
  const differentiable = w.spec.kind === 'conv2d' ? inputs.slice(0, 2) : inputs;
  for (const t of differentiable) t.requireGrad();
  return {
    note: 'inputs resident on GPU, forward + backward, all input gradients read back',
    run: async () => {
      F.tidy(() => F.backward(fn(...inputs), dy));
      for (const t of differentiable) {
        await readBack(t.grad!);
        t.grad!.dispose();
        t.grad = undefined;
      }
    },
    meanAbs: async () => {
      F.tidy(() => F.backward(fn(...inputs), dy));
      const grads = await Promise.all(differentiable.map((t) => t.grad!.toArray()));
      for (const t of differentiable) {
        t.grad!.dispose();
        t.grad = undefined;
      }
      return meanAbs(grads);
    },
    dispose,
    extra,
  };
});
