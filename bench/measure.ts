// The measurement the model benches share: a first call (pipeline compilation) timed apart, then tinybench's
// median over `iterations` calls and the peak tensor memory above what was live before them; results as JSON.
import { Bench } from 'tinybench';
import { deviceInfo } from '../src/engine/device.ts';
import { memoryStats, resetPeakMemory } from '../src/engine/tensor.ts';
import { nodeFs, writeFileAtomic } from '../src/io/fs.ts';

export async function measureCall(name: string, call: () => Promise<void>, iterations: number): Promise<{ firstMs: number; medianMs: number; peakBytes: number }> {
  const t0 = performance.now();
  await call();
  const firstMs = performance.now() - t0;
  resetPeakMemory();
  const live = memoryStats().liveBytes;
  const bench = new Bench({ iterations, time: 0, warmup: false });
  bench.add(name, call);
  await bench.run();
  const r = bench.tasks[0]!.result as { latency?: { p50?: number; mean: number } } | undefined;
  return { firstMs, medianMs: r?.latency?.p50 ?? r?.latency?.mean ?? NaN, peakBytes: memoryStats().peakBytes - live };
}

/** Writes `{ adapter, date, ...extra, rows }` to `path`, creating its folder. */
export function writeBenchJson(path: string, rows: unknown[], extra: Record<string, unknown> = {}): void {
  nodeFs(`writing ${path}`).mkdirSync(path.replace(/\/[^/]*$/, ''), { recursive: true });
  writeFileAtomic(path, new TextEncoder().encode(JSON.stringify({ adapter: deviceInfo().description, date: new Date().toISOString(), ...extra, rows }, null, 2)));
  console.log(`wrote ${path}`);
}
