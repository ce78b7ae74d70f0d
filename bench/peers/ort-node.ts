// onnxruntime-node on the CPU: the native reference for this machine. Inputs are CPU tensors made once;
// each run is one session.run whose output lands in CPU memory (nothing to read back).
import * as ort from 'onnxruntime-node';
import { onnxWorkload } from './onnx-graphs.ts';
import { f16ToF32 } from '../../src/engine/tensor.ts';
import { meanAbs, runEngine } from './workloads.ts';

await runEngine('onnxruntime-node', process.argv.slice(2), async (w, dtype) => {
  const { model, feeds, output } = onnxWorkload(w, dtype);
  const session = await ort.InferenceSession.create(model, { executionProviders: ['cpu'], graphOptimizationLevel: 'all' });
  const inputs = Object.fromEntries(feeds.map((f) => [f.name, new ort.Tensor(dtype === 'f16' ? 'float16' : 'float32', f.data, f.dims)]));
  return {
    note: `CPU, ${ort.env.versions?.common ?? ''} default intra-op threads`,
    run: async () => {
      const out = await session.run(inputs);
      out[output]!.dispose();
    },
    meanAbs: async () => {
      const y = (await session.run(inputs))[output]!;
      const data = y.data as Float32Array | Uint16Array;
      return meanAbs([data instanceof Uint16Array ? Float32Array.from(data, f16ToF32) : data]);
    },
    dispose: () => session.release(),
  };
});
