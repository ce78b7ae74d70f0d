// The workloads of the side-by-side benchmark (issue 3), shared by every engine's runner, plus the runner
// harness: argument parsing, warm-up, timed runs, median, one JSON row per workload and dtype on stdout.
// Each engine file only says how to build and run a workload; timing and reporting are the same for all.

export type BenchDType = 'f32' | 'f16';
export const engines = ['freemask', 'onnxruntime-web', 'tfjs-webgpu', 'onnxruntime-node'] as const;
export type Engine = (typeof engines)[number];
/** Engines with a training API: only they get the backward workloads (the others get no row there). */
export const trains: Record<Engine, boolean> = { freemask: true, 'onnxruntime-web': false, 'tfjs-webgpu': true, 'onnxruntime-node': false };

/** The workloads and dtypes an engine runs (every one gets a row, timed or error). */
export function plannedRows(engine: Engine, filter: string | undefined): { workload: Workload; dtype: BenchDType }[] {
  return selectWorkloads(filter)
    .filter((w) => !w.backward || trains[engine])
    .flatMap((w) => w.dtypes.map((dtype) => ({ workload: w, dtype })));
}

export type Spec =
  | { kind: 'matmul'; M: number; K: number; N: number }
  /** x [M, K] · weightᵀ ([N, K]) + bias [N], then GELU (erf) */
  | { kind: 'linear_gelu'; M: number; K: number; N: number }
  | { kind: 'conv2d'; cin: number; cout: number; size: number; kernel: number; pad: number; bias: boolean; silu: boolean }
  /** q [1, heads, Lq, dim], k and v [1, heads, Lk, dim] */
  | { kind: 'attention'; heads: number; Lq: number; Lk: number; dim: number }
  | { kind: 'group_norm_silu'; channels: number; size: number; groups: number }
  | { kind: 'layer_norm'; rows: number; cols: number }
  | { kind: 'softmax'; rows: number; cols: number }
  /** x = x + c, `length` times, on `size`-element tensors */
  | { kind: 'chain'; length: number; size: number };

export interface Workload {
  name: string;
  spec: Spec;
  /** Gradients of all inputs given an output gradient (engines with training only). */
  backward?: boolean;
  /** Floating-point operations of one run (forward, or forward + backward), for GFLOP/s. */
  flops: number;
  dtypes: BenchDType[];
}

const fwdDtypes: BenchDType[] = ['f32', 'f16'];
const attnFlops = (h: number, lq: number, lk: number, d: number) => 2 * 2 * h * lq * lk * d;
const convFlops = (cin: number, cout: number, s: number, k: number) => 2 * cin * cout * s * s * k * k;

export const workloads: Workload[] = [
  { name: 'matmul 1024x1024x1024', spec: { kind: 'matmul', M: 1024, K: 1024, N: 1024 }, flops: 2 * 1024 ** 3, dtypes: fwdDtypes },
  { name: 'linear+bias+gelu 4096x320x320', spec: { kind: 'linear_gelu', M: 4096, K: 320, N: 320 }, flops: 2 * 4096 * 320 * 320, dtypes: fwdDtypes },
  {
    name: 'conv3x3 320->320 32x32',
    spec: { kind: 'conv2d', cin: 320, cout: 320, size: 32, kernel: 3, pad: 1, bias: false, silu: false },
    flops: convFlops(320, 320, 32, 3),
    dtypes: fwdDtypes,
  },
  {
    name: 'conv3x3+bias+silu 64->64 64x64',
    spec: { kind: 'conv2d', cin: 64, cout: 64, size: 64, kernel: 3, pad: 1, bias: true, silu: true },
    flops: convFlops(64, 64, 64, 3),
    dtypes: fwdDtypes,
  },
  {
    name: 'stem conv3x3 4->320 64x64',
    spec: { kind: 'conv2d', cin: 4, cout: 320, size: 64, kernel: 3, pad: 1, bias: true, silu: false },
    flops: convFlops(4, 320, 64, 3),
    dtypes: fwdDtypes,
  },
  { name: 'attention self 8h d40 L1024', spec: { kind: 'attention', heads: 8, Lq: 1024, Lk: 1024, dim: 40 }, flops: attnFlops(8, 1024, 1024, 40), dtypes: fwdDtypes },
  { name: 'attention self 8h d40 L4096', spec: { kind: 'attention', heads: 8, Lq: 4096, Lk: 4096, dim: 40 }, flops: attnFlops(8, 4096, 4096, 40), dtypes: fwdDtypes },
  { name: 'attention cross 8h d40 Lq1024 Lk77', spec: { kind: 'attention', heads: 8, Lq: 1024, Lk: 77, dim: 40 }, flops: attnFlops(8, 1024, 77, 40), dtypes: fwdDtypes },
  { name: 'group_norm+silu 32g [1,320,64,64]', spec: { kind: 'group_norm_silu', channels: 320, size: 64, groups: 32 }, flops: 320 * 64 * 64 * 10, dtypes: fwdDtypes },
  { name: 'layer_norm [4096,320]', spec: { kind: 'layer_norm', rows: 4096, cols: 320 }, flops: 4096 * 320 * 8, dtypes: fwdDtypes },
  { name: 'softmax [8x1024,1024]', spec: { kind: 'softmax', rows: 8 * 1024, cols: 1024 }, flops: 8 * 1024 * 1024 * 5, dtypes: fwdDtypes },
  { name: 'backward matmul 1024x1024x1024', spec: { kind: 'matmul', M: 1024, K: 1024, N: 1024 }, backward: true, flops: 3 * 2 * 1024 ** 3, dtypes: ['f32'] },
  {
    name: 'backward conv3x3 320->320 32x32',
    spec: { kind: 'conv2d', cin: 320, cout: 320, size: 32, kernel: 3, pad: 1, bias: false, silu: false },
    backward: true,
    flops: 3 * convFlops(320, 320, 32, 3),
    dtypes: ['f32'],
  },
  {
    name: 'backward attention self 8h d40 L1024',
    spec: { kind: 'attention', heads: 8, Lq: 1024, Lk: 1024, dim: 40 },
    backward: true,
    flops: 3 * attnFlops(8, 1024, 1024, 40),
    dtypes: ['f32'],
  },
  { name: 'dispatch chain 1000 x add [64]', spec: { kind: 'chain', length: 1000, size: 64 }, flops: 1000 * 64, dtypes: ['f32'] },
];

/** Shapes of a workload's inputs, in the order every runner uses: activations first, then weights. */
export function inputShapes(s: Spec): { name: string; shape: number[]; weight: boolean; fanIn?: number }[] {
  switch (s.kind) {
    case 'matmul':
      return [{ name: 'a', shape: [s.M, s.K], weight: false }, { name: 'b', shape: [s.K, s.N], weight: true, fanIn: s.K }];
    case 'linear_gelu':
      return [
        { name: 'x', shape: [s.M, s.K], weight: false },
        { name: 'weight', shape: [s.N, s.K], weight: true, fanIn: s.K },
        { name: 'bias', shape: [s.N], weight: true, fanIn: s.K },
      ];
    case 'conv2d': {
      const fanIn = s.cin * s.kernel * s.kernel;
      return [
        { name: 'x', shape: [1, s.cin, s.size, s.size], weight: false },
        { name: 'weight', shape: [s.cout, s.cin, s.kernel, s.kernel], weight: true, fanIn },
        ...(s.bias ? [{ name: 'bias', shape: [s.cout], weight: true, fanIn }] : []),
      ];
    }
    case 'attention':
      return ['q', 'k', 'v'].map((name, i) => ({ name, shape: [1, s.heads, i === 0 ? s.Lq : s.Lk, s.dim], weight: false }));
    case 'group_norm_silu':
      return [
        { name: 'x', shape: [1, s.channels, s.size, s.size], weight: false },
        { name: 'gamma', shape: [s.channels], weight: true },
        { name: 'beta', shape: [s.channels], weight: true },
      ];
    case 'layer_norm':
      return [
        { name: 'x', shape: [s.rows, s.cols], weight: false },
        { name: 'gamma', shape: [s.cols], weight: true },
        { name: 'beta', shape: [s.cols], weight: true },
      ];
    case 'softmax':
      return [{ name: 'x', shape: [s.rows, s.cols], weight: false }];
    case 'chain':
      return [{ name: 'x', shape: [s.size], weight: false }, { name: 'c', shape: [s.size], weight: true }];
  }
}

export function outputShape(s: Spec): number[] {
  switch (s.kind) {
    case 'matmul':
    case 'linear_gelu':
      return [s.M, s.N];
    case 'conv2d': {
      const o = s.size + 2 * s.pad - s.kernel + 1;
      return [1, s.cout, o, o];
    }
    case 'attention':
      return [1, s.heads, s.Lq, s.dim];
    case 'group_norm_silu':
      return [1, s.channels, s.size, s.size];
    case 'layer_norm':
    case 'softmax':
      return [s.rows, s.cols];
    case 'chain':
      return [s.size];
  }
}

/** Deterministic values in [-1, 1) scaled by 1/sqrt(fanIn) for weights (same data for every engine). */
export function inputData(shape: number[], seed: number, fanIn?: number): Float32Array {
  const n = shape.reduce((a, b) => a * b, 1);
  const scale = fanIn ? 1 / Math.sqrt(fanIn) : 1;
  let s = (seed * 2654435761) >>> 0 || 1;
  const out = new Float32Array(n);
  for (let i = 0; i < n; i++) {
    s = (s * 1103515245 + 12345) >>> 0;
    out[i] = ((s / 2 ** 32) * 2 - 1) * scale;
  }
  return out;
}

export interface Row {
  workload: string;
  engine: Engine;
  dtype: BenchDType;
  /** Median over the timed runs; null when the workload failed or is not supported. */
  median_ms: number | null;
  min_ms?: number;
  runs?: number;
  gflops?: number;
  /** Mean |value| of the output (backward: of all input gradients), to check that engines agree. */
  mean_abs?: number;
  /** The one run's time when a run exceeded --max-run-s and the workload was not timed further. */
  single_run_ms?: number;
  /** Peak GPU memory of the engine's tensors during one run (freemask only: memoryStats().peakBytes). */
  peak_bytes?: number;
  /** What the timing covers (readback, resident inputs, weights as initializers...). */
  note?: string;
  /** Why there is no time: 'not supported: ...' or the error message. */
  error?: string;
}

/** A prepared workload: `run` does one complete pass, its GPU work finished (e.g. output read back). */
export interface Prepared {
  run: () => Promise<void>;
  dispose?: () => void | Promise<void>;
  note?: string;
  /** Mean |value| of the result, computed once after the timed runs (not timed). */
  meanAbs?: () => Promise<number>;
  /** Called once after the timed runs, for extra row fields (e.g. peak memory). */
  extra?: () => Partial<Row>;
}

/** Thrown by a runner for a dtype or feature the engine does not offer; reported as 'not supported'. */
export class Unsupported extends Error {}

export interface RunnerOptions {
  filter?: string;
  runs: number;
  warmup: number;
  /** A workload whose single run takes longer is not timed further (reported with that one time). */
  maxRunSeconds: number;
}

export function parseRunnerArgs(argv: string[]): RunnerOptions {
  const flag = (name: string) => {
    const i = argv.indexOf(name);
    return i >= 0 ? argv[i + 1] : undefined;
  };
  return { filter: flag('--filter'), runs: Number(flag('--runs') ?? 10), warmup: Number(flag('--warmup') ?? 1), maxRunSeconds: Number(flag('--max-run-s') ?? 60) };
}

export function selectWorkloads(filter: string | undefined): Workload[] {
  return workloads.filter((w) => !filter || filter.split(',').some((f) => w.name.includes(f)));
}

/** Marks rows on stdout; libraries may print their own lines there. */
export const rowPrefix = '@@row ';
/** A runner's facts about the device (adapter description, features), once. */
export const metaPrefix = '@@meta ';

export function meanAbs(arrays: ArrayLike<number>[]): number {
  let sum = 0;
  let n = 0;
  for (const a of arrays) {
    for (let i = 0; i < a.length; i++) sum += Math.abs(a[i]!);
    n += a.length;
  }
  return sum / n;
}

const median = (xs: number[]) => {
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? s[m]! : (s[m - 1]! + s[m]!) / 2;
};

/**
 * Runs every selected workload and dtype with `prepare`, printing one row each. A failure of one workload
 * becomes an error row; the others still run.
 */
export async function runEngine(
  engine: Engine,
  argv: string[],
  prepare: (w: Workload, dtype: BenchDType) => Promise<Prepared>,
): Promise<void> {
  const opts = parseRunnerArgs(argv);
  for (const { workload: w, dtype } of plannedRows(engine, opts.filter)) {
    {
      const row: Row = { workload: w.name, engine, dtype, median_ms: null };
      let prepared: Prepared | undefined;
      try {
        prepared = await prepare(w, dtype);
        const times: number[] = [];
        for (let i = 0; i < opts.warmup + opts.runs; i++) {
          const t0 = performance.now();
          await prepared.run();
          const ms = performance.now() - t0;
          // the first run compiles pipelines (slow on lavapipe under load): the limit applies from the next one
          if (ms > opts.maxRunSeconds * 1000 && (i > 0 || opts.warmup === 0)) {
            row.single_run_ms = Number(ms.toFixed(0));
            throw new Error(`too slow to time: one run took ${(ms / 1000).toFixed(1)} s (over --max-run-s ${opts.maxRunSeconds})`);
          }
          if (i >= opts.warmup) times.push(ms);
        }
        const med = median(times);
        Object.assign(row, {
          median_ms: Number(med.toFixed(3)),
          min_ms: Number(Math.min(...times).toFixed(3)),
          runs: times.length,
          gflops: Number((w.flops / (med * 1e6)).toFixed(3)),
          note: prepared.note,
          ...prepared.extra?.(),
        });
        if (prepared.meanAbs) row.mean_abs = Number((await prepared.meanAbs()).toPrecision(6));
      } catch (e) {
        const msg = e instanceof Error ? e.message : String(e);
        row.error = e instanceof Unsupported ? `not supported: ${msg}` : msg.split('\n').slice(0, 3).join(' ').slice(0, 400);
        if (prepared?.note) row.note = prepared.note;
      }
      try {
        await prepared?.dispose?.();
      } catch {
        // a failed workload may leave nothing to free
      }
      process.stdout.write(`${rowPrefix}${JSON.stringify(row)}\n`);
    }
  }
}
