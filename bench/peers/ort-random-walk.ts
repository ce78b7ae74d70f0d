// psa's sparse random walk as an ONNX graph on onnxruntime-web's WebGPU execution provider (same Dawn adapter
// as freemask), for bench/random_walk.ts, which runs this file in its own process. The graph is the same
// sparse propagation as affinityRandomWalk: per pixel a neighbour list of psa's radius pairs (the O offsets
// as "from" pixel and as "to" pixel: 2·O entries, index tensors built here), so
//   affinities  w[n, j] = exp(−β · mean_c |f[c, j] − f[c, nb(n, j)]|) · valid[n, j]   (Gather, Sub, Abs, ReduceMean)
//   one step    x[k, j] ← (x[k, j] + Σ_n w[n, j] · x[k, nb(n, j)]) / (1 + Σ_n w[n, j])   (Gather, Mul, ReduceSum)
// with the 2^logt steps unrolled (ONNX Loop runs on the CPU in onnxruntime-web). The "to" half of w is a
// Gather of the "from" half, so each affinity is computed once, as in the kernel.
// Usage: node --import tsx bench/peers/ort-random-walk.ts <side> <logt> <runs> <out.f32>
// Prints one JSON line {ms (median), peakMiB, note}; writes the walked cam [K, H, W] to <out.f32>.
import * as ort from 'onnxruntime-web/webgpu';
import './ort-dawn.ts';
import { type OnnxNode, type OnnxTensor, OnnxType, encodeModel } from '../onnx-writer.ts';
import { affinityCrop, affinityOffsets } from '../../src/kernels/random_walk.ts';
import { randomWalkInputs, walkConfig } from '../random_walk_inputs.ts';

// GPU memory: live bytes of Dawn buffers (ORT has no memory query), peak tracked across a run
let [live, peak] = [0, 0];
const sizes = new WeakMap<GPUBuffer, number>();
const createBuffer = GPUDevice.prototype.createBuffer;
GPUDevice.prototype.createBuffer = function (desc) {
  const b = createBuffer.call(this, desc);
  sizes.set(b, desc.size);
  live += desc.size;
  peak = Math.max(peak, live);
  return b;
};
const destroy = GPUBuffer.prototype.destroy;
GPUBuffer.prototype.destroy = function () {
  live -= sizes.get(this) ?? 0;
  sizes.delete(this);
  return destroy.call(this);
};

ort.env.wasm.numThreads = 1;
ort.env.logLevel = 'error';

const [side, logt, runs] = process.argv.slice(2, 5).map(Number) as [number, number, number];
const outPath = process.argv[5]!;
const { C, K, radius, beta } = walkConfig;
const [H, W] = [side, side];
const HW = H * W;

/** Neighbour indices [2·O, HW] (a non-pair points at the pixel itself, weight 0), validity, and the "to" half's source in w. */
function pairs() {
  const offs = affinityOffsets(radius);
  const O = offs.length;
  const { rows, cols, x0 } = affinityCrop(radius, H, W);
  const isFrom = (y: number, x: number) => y >= 0 && y < rows && x >= x0 && x < x0 + cols;
  const nb = new BigInt64Array(2 * O * HW);
  const valid = new Float32Array(O * HW);
  const back = new BigInt64Array(O * HW); // index into the flat "from" weights [O·HW]
  offs.forEach(([dy, dx], o) => {
    for (let y = 0; y < H; y++) {
      for (let x = 0; x < W; x++) {
        const j = y * W + x;
        const from = isFrom(y, x);
        nb[o * HW + j] = BigInt(from ? (y + dy) * W + x + dx : j);
        valid[o * HW + j] = from ? 1 : 0;
        const to = isFrom(y - dy, x - dx);
        nb[(O + o) * HW + j] = BigInt(to ? (y - dy) * W + x - dx : j);
        // column 0 is never a "from" pixel, so its weight is 0: the target of a non-pair
        back[o * HW + j] = BigInt(o * HW + (to ? (y - dy) * W + x - dx : 0));
      }
    }
  });
  return { O, nb, valid, back };
}

const { O, nb, valid, back } = pairs();
const i64 = (name: string, dims: number[], v: number[] | BigInt64Array): OnnxTensor => ({ name, type: OnnxType.int64, dims, data: v instanceof BigInt64Array ? v : BigInt64Array.from(v, BigInt) });
const f32 = (name: string, dims: number[], v: Float32Array): OnnxTensor => ({ name, type: OnnxType.float, dims, data: v });
const initializers: OnnxTensor[] = [
  i64('nb', [2 * O, HW], nb),
  i64('nb_from', [O, HW], nb.subarray(0, O * HW)),
  i64('back', [O, HW], back),
  f32('valid', [O, HW], valid),
  f32('neg_beta', [], Float32Array.of(-beta)),
  f32('one', [], Float32Array.of(1)),
  i64('f_shape', [2], [C, HW]),
  i64('x_shape', [2], [K, HW]),
  i64('flat', [1], [O * HW]),
  i64('y_shape', [3], [K, H, W]),
  i64('axis0', [1], [0]),
  i64('axis1', [1], [1]),
];
const nodes: OnnxNode[] = [
  { op: 'Reshape', inputs: ['features', 'f_shape'], outputs: ['f'] },
  { op: 'Gather', inputs: ['f', 'nb_from'], outputs: ['f_nb'], attrs: { axis: 1 } }, // [C, O, HW]
  { op: 'Unsqueeze', inputs: ['f', 'axis1'], outputs: ['f_u'] }, // [C, 1, HW]
  { op: 'Sub', inputs: ['f_nb', 'f_u'], outputs: ['f_d'] },
  { op: 'Abs', inputs: ['f_d'], outputs: ['f_a'] },
  { op: 'ReduceMean', inputs: ['f_a'], outputs: ['dist'], attrs: { axes: [0], keepdims: 0 } }, // [O, HW]
  { op: 'Mul', inputs: ['dist', 'neg_beta'], outputs: ['log_w'] },
  { op: 'Exp', inputs: ['log_w'], outputs: ['w_all'] },
  { op: 'Mul', inputs: ['w_all', 'valid'], outputs: ['w_from'] },
  { op: 'Reshape', inputs: ['w_from', 'flat'], outputs: ['w_flat'] },
  { op: 'Gather', inputs: ['w_flat', 'back'], outputs: ['w_to'], attrs: { axis: 0 } },
  { op: 'Concat', inputs: ['w_from', 'w_to'], outputs: ['w'], attrs: { axis: 0 } }, // [2·O, HW]
  { op: 'ReduceSum', inputs: ['w', 'axis0'], outputs: ['w_sum'], attrs: { keepdims: 0 } },
  { op: 'Add', inputs: ['w_sum', 'one'], outputs: ['norm'] },
  { op: 'Reshape', inputs: ['cam', 'x_shape'], outputs: ['x0'] },
];
const steps = 2 ** logt;
for (let t = 0; t < steps; t++) {
  const [x, y] = [`x${t}`, t === steps - 1 ? 'x_last' : `x${t + 1}`];
  nodes.push(
    { op: 'Gather', inputs: [x, 'nb'], outputs: [`${x}_nb`], attrs: { axis: 1 } }, // [K, 2·O, HW]
    { op: 'Mul', inputs: [`${x}_nb`, 'w'], outputs: [`${x}_wx`] },
    { op: 'ReduceSum', inputs: [`${x}_wx`, 'axis1'], outputs: [`${x}_s`], attrs: { keepdims: 0 } },
    { op: 'Add', inputs: [`${x}_s`, x], outputs: [`${x}_t`] },
    { op: 'Div', inputs: [`${x}_t`, 'norm'], outputs: [y] },
  );
}
nodes.push({ op: 'Reshape', inputs: ['x_last', 'y_shape'], outputs: ['y'] });
const model = encodeModel({
  name: 'random_walk',
  nodes,
  inputs: [
    { name: 'features', type: OnnxType.float, dims: [1, C, H, W] },
    { name: 'cam', type: OnnxType.float, dims: [K, H, W] },
  ],
  outputs: [{ name: 'y', type: OnnxType.float, dims: [K, H, W] }],
  initializers,
});

const session = await ort.InferenceSession.create(model, { executionProviders: ['webgpu'], graphOptimizationLevel: 'all' });
const device = await ort.env.webgpu.device;
const { features, cam } = randomWalkInputs(side);
const gpuTensor = (data: Float32Array, dims: number[]) => {
  const buffer = device.createBuffer({ size: data.byteLength, usage: GPUBufferUsage.STORAGE | GPUBufferUsage.COPY_SRC | GPUBufferUsage.COPY_DST });
  device.queue.writeBuffer(buffer, 0, data as Float32Array<ArrayBuffer>);
  return ort.Tensor.fromGpuBuffer(buffer, { dataType: 'float32', dims });
};
const feeds = { features: gpuTensor(features, [1, C, H, W]), cam: gpuTensor(cam, [K, H, W]) };
const run = async () => {
  const y = (await session.run(feeds)).y!;
  const data = (await y.getData()) as Float32Array;
  y.dispose();
  return data;
};
// the first run allocates what a run needs (ORT caches buffers after it): its peak above the resident inputs
const base = live;
peak = live;
const first = await run();
const peakMiB = (peak - base) / 2 ** 20;
const times: number[] = [];
for (let r = 0; r < runs; r++) {
  const t0 = performance.now();
  await run();
  times.push(performance.now() - t0);
}
times.sort((a, b) => a - b);
process.getBuiltinModule('node:fs').writeFileSync(outPath, new Uint8Array(first.buffer, first.byteOffset, first.byteLength));
console.log(JSON.stringify({ ms: times[Math.floor(times.length / 2)], peakMiB, nodes: nodes.length, note: `onnxruntime-web ${ort.env.versions?.web ?? ''} WebGPU EP, ${nodes.length} nodes (2^${logt} steps unrolled), output read back; peak = Dawn buffers allocated in the first run` }));
process.exit(0);
