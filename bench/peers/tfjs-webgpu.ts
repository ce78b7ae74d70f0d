// TensorFlow.js with its WebGPU backend, on the same Dawn adapter as freemask. Inputs are tensors made once
// (uploaded by the warm-up, then resident); each run's outputs are read back with data(). Convolutions use
// TF.js's native NHWC layout; ops TF.js lacks (GELU, SiLU, group/layer norm) are composed from its ops as a
// TF.js user would write them. Backward: tf.grads with a given output gradient.
import { create, globals } from 'webgpu';
import { type BenchDType, Unsupported, type Workload, inputData, inputShapes, meanAbs, outputShape, runEngine } from './workloads.ts';

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
// TF.js does not watch for WebGPU errors: an invalid dispatch (e.g. a buffer over the binding limit) would
// silently leave garbage and look fast. Any such error fails the workload.
let gpuError: string | undefined;
(tf.backend() as unknown as { device: GPUDevice }).device.addEventListener('uncapturederror', (ev) => {
  gpuError ??= (ev as GPUUncapturedErrorEvent).error.message;
});
const checkGpu = () => {
  const e = gpuError;
  gpuError = undefined;
  if (e) throw new Error(`WebGPU error: ${e}`);
};

/** The inputs (gradients are taken for `differentiable` of them), the output's shape and the computation. */
/** Row-major `data` of `shape` with its dims reordered by `perm` (like a transpose), as a new array. */
function permuted(data: Float32Array, shape: number[], perm: number[]): Float32Array {
  const out = new Float32Array(data.length);
  const strides = shape.map((_, i) => shape.slice(i + 1).reduce((a, b) => a * b, 1));
  const outShape = perm.map((p) => shape[p]!);
  const idx = new Array<number>(shape.length).fill(0);
  for (let o = 0; o < out.length; o++) {
    let src = 0;
    for (let d = 0; d < perm.length; d++) src += idx[d]! * strides[perm[d]!]!;
    out[o] = data[src]!;
    for (let d = perm.length - 1; d >= 0 && ++idx[d]! === outShape[d]; d--) idx[d] = 0;
  }
  return out;
}
const NCHWtoNHWC = [0, 2, 3, 1];

function build(w: Workload): { inputs: T[]; differentiable: number; outShape: number[]; dyLayout?: 'nhwc'; fn: (...xs: T[]) => T } {
  const s = w.spec;
  const shapes = inputShapes(s);
  const make = (i: number, shape: number[]) => tf.tensor(inputData(shape, i + 1, shapes[i]!.fanIn), shape);
  // the same values as the other engines, moved to TF.js's layouts: NCHW -> NHWC, OIHW -> HWIO
  const nhwc = (i: number) => {
    const shape = shapes[i]!.shape;
    return tf.tensor(permuted(inputData(shape, i + 1), shape, NCHWtoNHWC), NCHWtoNHWC.map((p) => shape[p]!));
  };
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
        nhwc(0),
        tf.tensor(permuted(inputData(shapes[1]!.shape, 2, shapes[1]!.fanIn), shapes[1]!.shape, [2, 3, 1, 0]), [s.kernel, s.kernel, s.cin, s.cout]), // OIHW -> HWIO
        ...(s.bias ? [make(2, [s.cout])] : []),
      ];
      const o = outputShape(s);
      const pad = s.pad === (s.kernel - 1) / 2 ? 'same' : s.pad;
      return {
        inputs,
        differentiable: 2,
        outShape: [1, o[2]!, o[3]!, s.cout],
        dyLayout: 'nhwc' as const,
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
        inputs: [nhwc(0), make(1, [C]), make(2, [C])],
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
  const { inputs, differentiable, outShape, dyLayout, fn } = build(w);
  const dyData = inputData(outputShape(w.spec), 99);
  const dy = w.backward ? tf.tensor(dyLayout ? permuted(dyData, outputShape(w.spec), NCHWtoNHWC) : dyData, outShape) : undefined;
  const gradInputs = inputs.slice(0, differentiable);
  const grads = tf.grads((...xs: T[]) => fn(...xs, ...inputs.slice(xs.length)));
  return {
    note: `inputs resident on GPU, outputs read back${w.backward ? ' (all input gradients)' : ''}`,
    run: async () => {
      const outs = tf.tidy(() => (dy ? grads(gradInputs, dy) : [fn(...inputs)]));
      for (const o of outs) await o.data();
      tf.dispose(outs);
      checkGpu();
    },
    meanAbs: async () => {
      const outs = tf.tidy(() => (dy ? grads(gradInputs, dy) : [fn(...inputs)]));
      const data = await Promise.all(outs.map((o) => o.data() as Promise<Float32Array>));
      tf.dispose(outs);
      return meanAbs(data);
    },
    dispose: () => tf.dispose([...inputs, ...(dy ? [dy] : [])]),
  };
});
