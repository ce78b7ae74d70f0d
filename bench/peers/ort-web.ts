// onnxruntime-web with its WebGPU execution provider, on the same Dawn adapter as freemask. Weights are
// initializers (uploaded once at session creation); activations are GPU buffers made once
// (Tensor.fromGpuBuffer), so inputs are resident on the GPU; each run's output is read back to the CPU.
import * as ort from 'onnxruntime-web/webgpu';
import './ort-dawn.ts';
import { onnxWorkload } from './onnx-graphs.ts';
import { f16ToF32 } from '../../src/engine/tensor.ts';
import { meanAbs, runEngine } from './workloads.ts';

ort.env.wasm.numThreads = 1; // the GPU does the work; keep wasm worker threads off the two cores
ort.env.logLevel = 'error';

await runEngine('onnxruntime-web', process.argv.slice(2), async (w, dtype) => {
  const { model, feeds, output } = onnxWorkload(w, dtype);
  const session = await ort.InferenceSession.create(model, { executionProviders: ['webgpu'], graphOptimizationLevel: 'all' });
  const device = await ort.env.webgpu.device;
  const buffers: GPUBuffer[] = [];
  const inputs = Object.fromEntries(
    feeds.map((f) => {
      const bytes = Math.ceil(f.data.byteLength / 16) * 16;
      const buffer = device.createBuffer({ size: bytes, usage: GPUBufferUsage.STORAGE | GPUBufferUsage.COPY_SRC | GPUBufferUsage.COPY_DST });
      device.queue.writeBuffer(buffer, 0, f.data as Float32Array<ArrayBuffer>);
      buffers.push(buffer);
      return [f.name, ort.Tensor.fromGpuBuffer(buffer, { dataType: dtype === 'f16' ? 'float16' : 'float32', dims: f.dims })];
    }),
  );
  return {
    note: 'inputs resident on GPU, weights as initializers, output read back',
    run: async () => {
      const out = await session.run(inputs);
      const y = out[output]!;
      await y.getData();
      y.dispose();
    },
    meanAbs: async () => {
      const y = (await session.run(inputs))[output]!;
      const data = (await y.getData()) as Float32Array | Uint16Array;
      y.dispose();
      return meanAbs([data instanceof Uint16Array ? Float32Array.from(data, f16ToF32) : data]);
    },
    dispose: async () => {
      await session.release();
      for (const b of buffers) b.destroy();
    },
  };
});
