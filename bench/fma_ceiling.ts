// The adapter's arithmetic ceiling, shared by the peers bench (bench/peers/freemask.ts) and bench/train.ts.
import { launch } from '../src/engine/kernel.ts';
import { sync } from '../src/engine/queue.ts';
import { Tensor } from '../src/engine/tensor.ts';

/**
 * The adapter's arithmetic ceiling: GFLOP/s of a kernel doing nothing but independent vec4 FMAs in registers
 * (16 chains per thread, no memory traffic; an FMA counts 2 FLOP). No WGSL matmul on this adapter can beat
 * it, so it tells how much of a native library's throughput a WebGPU engine could reach at all. Median of 5
 * runs after one warm-up (which compiles the kernel).
 */
export async function fmaCeilingGflops(): Promise<number> {
  const [threads, iters, chains] = [16384, 4096, 16];
  const seed = Tensor.fromArray(new Float32Array([1.0000001, 0.9999999]), [2]);
  const out = Tensor.empty([threads]);
  const chain = [...Array(chains).keys()];
  const run = async () => {
    launch({
      name: 'bench.fma_ceiling', key: `${threads}|${iters}|${chains}`, inputs: { seed }, outputs: { out }, workgroups: [threads / 64],
      wgsl: (bindings) => `${bindings}
@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) gid: vec3u) {
  let m = vec4f(seed[0]);
  let c = vec4f(seed[1]);
  ${chain.map((j) => `var x${j} = vec4f(f32(gid.x + ${j}u));`).join(' ')}
  for (var k = 0u; k < ${iters}u; k++) {
    ${chain.map((j) => `x${j} = fma(x${j}, m, c);`).join(' ')}
  }
  out[gid.x] = ${chain.map((j) => `dot(x${j}, vec4f(1.0))`).join(' + ')};
}`,
    });
    await sync();
  };
  await run();
  const times: number[] = [];
  for (let r = 0; r < 5; r++) {
    const t0 = performance.now();
    await run();
    times.push(performance.now() - t0);
  }
  seed.dispose();
  out.dispose();
  const median = times.sort((x, y) => x - y)[2]!;
  return Number(((threads * iters * chains * 8) / median / 1e6).toFixed(1));
}
