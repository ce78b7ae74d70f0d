import * as F from './src/index.ts';
import { readBuffer } from './src/engine/queue.ts';
await F.getDevice();
const x = F.Tensor.fromArray(Float32Array.from({ length: 8192 * 1024 }, (_, i) => Math.sin(i)), [8192, 1024]);
const time = async (name: string, f: () => Promise<void>) => {
  await f(); const ts: number[] = [];
  for (let i = 0; i < 7; i++) { const t0 = performance.now(); await f(); ts.push(performance.now() - t0); }
  ts.sort((a, b) => a - b); console.log(name, ts[3]!.toFixed(1));
};
await time('softmax+sync', async () => { const y = F.softmax(x, -1); await F.sync(); y.dispose(); });
await time('softmax+readback', async () => { const y = F.softmax(x, -1); await readBuffer(y.buffer, y.byteLength); y.dispose(); });
await time('copy+readback', async () => { const y = F.mul(x, F.Tensor.fromArray(new Float32Array([1]), [1])); await readBuffer(y.buffer, y.byteLength); y.dispose(); });
await time('readback only', async () => { await readBuffer(x.buffer, x.byteLength); });
