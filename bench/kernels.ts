// Kernel benchmark: per-kernel time and GFLOP/s with tinybench, printed as a table and written as JSON.
// Each task runs one op and waits for the GPU (sync), so the time is the op's end-to-end latency.
// Usage: npm run bench [-- --quick] [--json bench/results/kernels.json] [--filter name]
//        npm run bench -- --peers ... (bench/peers.ts)   npm run bench -- --profile (bench/profile.ts)
import { Bench } from 'tinybench';
import { deviceInfo, getDevice } from '../src/engine/device.ts';
import { sync } from '../src/engine/queue.ts';
import { Tensor, tidy } from '../src/engine/tensor.ts';
import * as F from '../src/index.ts';

const argv = (globalThis as { process?: { argv: string[] } }).process?.argv.slice(2) ?? [];
const flag = (name: string) => {
  const i = argv.indexOf(name);
  return i >= 0 ? argv[i + 1] : undefined;
};
if (argv.includes('--peers') || argv.includes('--profile')) {
  // side-by-side comparison with the peers, or the per-kernel profile of a UNet-shaped block stack
  await (argv.includes('--peers') ? import('./peers.ts') : import('./profile.ts')).then((m) => m.main(argv));
  (globalThis as { process?: { exit(code: number): never } }).process?.exit(0);
}
const quick = argv.includes('--quick');
const jsonPath = flag('--json') ?? 'bench/results/kernels.json';
const filter = flag('--filter');

await getDevice();

const rand = (shape: number[]) => {
  const n = shape.reduce((a, b) => a * b, 1);
  let s = 12345;
  const data = Float32Array.from({ length: n }, () => ((s = (s * 1103515245 + 12345) >>> 0) / 2 ** 32) * 2 - 1);
  return Tensor.fromArray(data, shape);
};

interface Case {
  name: string;
  /** floating-point operations of one run (0 when not meaningful) */
  flops: number;
  inputs: Tensor[];
  run: (...inputs: Tensor[]) => Tensor;
}

const s = quick ? 0.5 : 1;
const cases: Case[] = [
  { name: 'add 1M', flops: 2 ** 20, inputs: [rand([1024, 1024]), rand([1024])], run: (a, b) => F.add(a!, b!) },
  { name: 'gelu 1M', flops: 2 ** 20 * 8, inputs: [rand([1024, 1024])], run: (a) => F.gelu(a!) },
  { name: 'sum rows 1M', flops: 2 ** 20, inputs: [rand([1024, 1024])], run: (a) => F.sum(a!, 1) },
  { name: 'softmax 4096x1024', flops: 4096 * s * 1024 * 5, inputs: [rand([4096 * s, 1024])], run: (a) => F.softmax(a!, -1) },
  { name: 'matmul 512³', flops: 2 * 512 ** 3, inputs: [rand([512, 512]), rand([512, 512])], run: (a, b) => F.matmul(a!, b!) },
  { name: 'matmul 1024³', flops: 2 * 1024 ** 3 * s, inputs: [rand([1024 * s, 1024]), rand([1024, 1024])], run: (a, b) => F.matmul(a!, b!) },
  {
    name: 'conv3x3 64→64 @64²',
    flops: 2 * 64 * 64 * 9 * 64 * 64,
    inputs: [rand([1, 64, 64, 64]), rand([64, 64, 3, 3])],
    run: (x, w) => F.conv2d(x!, w!, undefined, { padding: 1 }),
  },
  {
    name: 'group_norm 320@32²',
    flops: 320 * 32 * 32 * 8,
    inputs: [rand([1, 320, 32, 32])],
    run: (x) => F.groupNorm(x!, 32),
  },
  {
    name: 'sdpa 8h 1024x1024 d40',
    flops: 2 * 2 * 8 * 1024 * 1024 * 40,
    inputs: [rand([1, 8, 1024, 40]), rand([1, 8, 1024, 40]), rand([1, 8, 1024, 40])],
    run: (q, k, v) => F.scaledDotProductAttention(q!, k!, v!),
  },
];

const bench = new Bench({ time: quick ? 200 : 1000, iterations: 5, warmupIterations: 2 });
for (const c of cases) {
  if (filter && !c.name.includes(filter)) continue;
  bench.add(c.name, async () => {
    tidy(() => c.run(...c.inputs));
    await sync();
  });
}
await bench.run();

const rows = bench.tasks.map((t) => {
  const c = cases.find((x) => x.name === t.name)!;
  const r = t.result as { latency?: { mean: number; p50?: number; min: number; samplesCount: number } } | undefined;
  const ms = r?.latency?.p50 ?? r?.latency?.mean ?? NaN;
  return {
    kernel: t.name,
    'median ms': Number(ms.toFixed(3)),
    'min ms': Number((r?.latency?.min ?? NaN).toFixed(3)),
    'GFLOP/s': Number((c.flops / (ms * 1e6)).toFixed(2)),
    samples: r?.latency?.samplesCount ?? 0,
  };
});
console.table(rows);

const info = deviceInfo();
const fs = (globalThis as { process?: { getBuiltinModule(m: string): { mkdirSync(p: string, o: object): void; writeFileSync(p: string, d: string): void } } }).process!.getBuiltinModule('node:fs');
fs.mkdirSync(jsonPath.replace(/\/[^/]*$/, ''), { recursive: true });
fs.writeFileSync(jsonPath, JSON.stringify({ date: new Date().toISOString(), adapter: info.description, quick, results: rows }, null, 2));
console.log(`wrote ${jsonPath}`);
for (const c of cases) for (const t of c.inputs) t.dispose();
