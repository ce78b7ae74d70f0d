#!/usr/bin/env -S node --import tsx
// freemask command line. For now one command, `demo`: acquire the device, run a few kernels (forward and
// backward) and report the adapter, results and timings.
import { deviceInfo, getDevice } from '../src/engine/device.ts';
import { backward } from '../src/engine/autograd.ts';
import { memoryStats, Tensor, tidy } from '../src/engine/tensor.ts';
import { sync } from '../src/engine/queue.ts';
import * as F from '../src/index.ts';

const [command = 'demo'] = process.argv.slice(2);

async function demo(): Promise<void> {
  const t0 = performance.now();
  await getDevice();
  const info = deviceInfo();
  console.log(`adapter: ${info.description}`);
  console.log(`features: ${info.features.join(', ')}`);
  console.log(`max storage buffer: ${(info.limits.maxStorageBufferBindingSize / 2 ** 20).toFixed(0)} MiB`);

  const x = Tensor.fromArray(Float32Array.from({ length: 2 * 3 * 8 * 8 }, (_, i) => Math.sin(i)), [2, 3, 8, 8]).requireGrad();
  const w = Tensor.fromArray(Float32Array.from({ length: 4 * 3 * 3 * 3 }, (_, i) => Math.cos(i) / 5), [4, 3, 3, 3]).requireGrad();
  const head = Tensor.fromArray(Float32Array.from({ length: 20 }, (_, i) => (i % 7) / 7 - 0.4), [5, 4]);
  const labels = Tensor.fromArray(new Int32Array([1, 3]), [2]);
  const loss = tidy(() => {
    const h = F.silu(F.groupNorm(F.conv2d(x, w, undefined, { padding: 1 }), 2));
    const logits = F.linear(F.reshape(F.adaptiveAvgPool2d(h, [1, 1]), [2, 4]), head);
    return F.crossEntropy(logits, labels);
  });
  backward(loss);
  const [l, gx, gw] = [await loss.item(), Float32Array.from(await x.grad!.toArray()), Float32Array.from(await w.grad!.toArray())];
  await sync();
  console.log(`conv2d → group_norm → silu → pool → linear → cross_entropy: loss ${l.toFixed(6)}`);
  console.log(`backward: |dL/dx|₁ ${gx.reduce((a, b) => a + Math.abs(b), 0).toFixed(6)}, |dL/dw|₁ ${gw.reduce((a, b) => a + Math.abs(b), 0).toFixed(6)}`);
  const m = memoryStats();
  console.log(`memory: live ${m.liveBytes} B, peak ${m.peakBytes} B, pooled ${m.pooledBytes} B`);
  console.log(`done in ${(performance.now() - t0).toFixed(0)} ms`);
  for (const t of [x, w, head, labels, loss]) t.dispose();
}

const commands: Record<string, () => Promise<void>> = { demo };
const run = commands[command];
if (!run) {
  console.error(`freemask: unknown command '${command}'. Commands: ${Object.keys(commands).join(', ')}`);
  process.exit(2);
}
await run();
process.exit(0);
