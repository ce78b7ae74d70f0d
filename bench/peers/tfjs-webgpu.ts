// TensorFlow.js with its WebGPU backend, on the same Dawn adapter as freemask. Inputs are tensors made once
// (uploaded by the warm-up, then resident); each run's outputs are read back with data(). Convolutions use
// TF.js's native NHWC layout; ops TF.js lacks (GELU, SiLU, group/layer norm) are composed from its ops as a
// TF.js user would write them. Backward: tf.grads with a given output gradient.
import { create, globals } from 'webgpu';
import { type BenchDType, Unsupported, type Workload, inputData, inputShapes, outputShape, runEngine } from './workloads.ts';

Object.assign(globalThis, globals);
Object.defineProperty(globalThis, 'navigator', { value: { gpu: create([]) as GPU }, configurable: true });
// the backend registers itself at import only when navigator.gpu exists, hence the dynamic imports
const tf = await import('@tensorflow/tfjs-core');
await import('@tensorflow/tfjs-backend-webgpu');
await registerGradients();
type T = import('@tensorflow/tfjs-core').Tensor;

/**
 * tf.grads needs the gradient functions that the @tensorflow/tfjs bundle registers from tfjs-core's ESM
 * build; that build's directory imports do not load in Node, so esbuild (tsx's) bundles it first. Its
 * registrations land in tfjs's global registry, shared with the Node build loaded above.
 */
async function registerGradients(): Promise<void> {
  const { build } = await import('esbuild');
  const { createRequire } = await import('node:module');
  const { tmpdir } = await import('node:os');
  const outfile = `${tmpdir()}/freemask-bench-tfjs-gradients.mjs`;
  const entry = createRequire(import.meta.url).resolve('@tensorflow/tfjs-core/dist/register_all_gradients.js');
  await build({ entryPoints: [entry], bundle: true, format: 'esm', platform: 'node', outfile, logLevel: 'error' });
  await import(outfile);
}

// Small ops on small tensors would otherwise run on the CPU backend: measure the GPU path.
tf.env().set('WEBGPU_CPU_FORWARD', false);
if (!(await tf.setBackend('webgpu'))) throw new Error('TF.js WebGPU backend failed to initialise');
await tf.ready();

/** The inputs (gradients are taken for `differentiable` of them), the output's shape and the computation. */
function build(w: Workload): { inputs: T[]; differentiable: number; outShape: number[]; fn: (...xs: T[]) => T } {
  const s = w.spec;
  const shapes = inputShapes(s);
  const make = (i: number, shape: number[]) => tf.tensor(inputData(shape, i + 1, shapes[i]!.fanIn), shape);
  const silu = (h: T) => tf.mul(h, tf.sigmoid(h));
  const common = { inputs: shapes.map((x, i) => make(i, x.shape)), differentiable: shapes.length, outShape: outputShape(s) };
  switch (s.kind) {
    case 'matmul':
      return { ...common, fn: (a, b) => tf.matMul(a as never, b as never) };
    case 'linear_gelu':
      return {
        ...common,
        fn: (x, weight, bias) => {
          const h = tf.fused.matMul({ a: x as never, b: weight as never, transposeB: true, bias });
          return tf.mul(tf.mul(h, 0.5), tf.add(tf.erf(tf.div(h, Math.SQRT2)), 1));
        },
      };
    case 'conv2d': {
      const inputs = [
        make(0, [1, s.size, s.size, s.cin]),
        make(1, [s.kernel, s.kernel, s.cin, s.cout]),
        ...(s.bias ? [make(2, [s.cout])] : []),
      ];
      const o = outputShape(s);
      const pad = s.pad === (s.kernel - 1) / 2 ? 'same' : s.pad;
      return {
        inputs,
        differentiable: 2,
        outShape: [1, o[2]!, o[3]!, s.cout],
        fn: (x, f, b) => {
          const h = tf.fused.conv2d({ x: x as never, filter: f as never, strides: 1, pad, bias: b });
          return s.silu ? silu(h) : h;
        },
      };
    }
    case 'attention': {
      const scale = 1 / Math.sqrt(s.dim);
      return {
        ...common,
        fn: (q, k, v) => tf.matMul(tf.softmax(tf.mul(tf.matMul(q!, k!, false, true), scale)), v!),
      };
    }
    case 'group_norm_silu': {
      const { channels: C, size, groups: G } = s;
      return {
        ...common,
        inputs: [make(0, [1, size, size, C]), make(1, [C]), make(2, [C])],
        fn: (x, gamma, beta) => {
          const xg = tf.reshape(x!, [1, size * size, G, C / G]);
          const { mean, variance } = tf.moments(xg, [1, 3], true);
          const n = tf.reshape(tf.mul(tf.sub(xg, mean), tf.rsqrt(tf.add(variance, 1e-5))), [1, size, size, C]);
          return silu(tf.add(tf.mul(n, gamma!), beta!));
        },
      };
    }
    case 'layer_norm':
      return {
        ...common,
        fn: (x, gamma, beta) => {
          const { mean, variance } = tf.moments(x!, -1, true);
          return tf.add(tf.mul(tf.mul(tf.sub(x!, mean), tf.rsqrt(tf.add(variance, 1e-5))), gamma!), beta!);
        },
      };
    case 'softmax':
      return { ...common, fn: (x) => tf.softmax(x!) };
    case 'chain':
      return {
        ...common,
        fn: (x, c) => {
          let y = x!;
          for (let i = 0; i < s.length; i++) y = tf.add(y, c!);
          return y;
        },
      };
  }
}

await runEngine('tfjs-webgpu', process.argv.slice(2), async (w: Workload, dtype: BenchDType) => {
  if (dtype === 'f16') throw new Unsupported('TF.js has no float16 dtype');
  const { inputs, differentiable, outShape, fn } = build(w);
  const dy = w.backward ? tf.tensor(inputData(outShape, 99), outShape) : undefined;
  const gradInputs = inputs.slice(0, differentiable);
  const grads = tf.grads((...xs: T[]) => fn(...xs, ...inputs.slice(xs.length)));
  return {
    note: `inputs resident on GPU, outputs read back${w.backward ? ' (all input gradients)' : ''}`,
    run: async () => {
      const outs = tf.tidy(() => (dy ? grads(gradInputs, dy) : [fn(...inputs)]));
      for (const o of outs) await o.data();
      tf.dispose(outs);
    },
    dispose: () => tf.dispose([...inputs, ...(dy ? [dy] : [])]),
  };
});
