import * as F from './src/index.ts';
await F.getDevice();
const mk = (shape: number[], s: number) => F.Tensor.fromArray(Float32Array.from({ length: shape.reduce((a, b) => a * b) }, (_, i) => Math.sin(i * 0.37 + s)), shape);
const log = (s: string) => process.stderr.write(`${new Date().toISOString().slice(11, 19)} ${s}\n`);
for (const [Lq, Lk] of [[1024, 1024], [1024, 77]]) {
  const q = mk([1, 8, Lq, 40], 1), k = mk([1, 8, Lk, 40], 2), v = mk([1, 8, Lk, 40], 3);
  const ref = await F.scaledDotProductAttention(q, k, v, { fused: false }).toArray();
  const t0 = performance.now();
  const got = await F.scaledDotProductAttention(q, k, v).toArray();
  log(`first fused call (compile) ${(performance.now() - t0).toFixed(0)} ms`);
  let err = 0; for (let i = 0; i < got.length; i++) err = Math.max(err, Math.abs(got[i]! - ref[i]!));
  const time = async (name: string, fused: boolean) => {
    const ts: number[] = [];
    for (let r = 0; r < 5; r++) { const t0 = performance.now(); const z = F.scaledDotProductAttention(q, k, v, { fused }); await F.sync(); ts.push(performance.now() - t0); z.dispose(); }
    ts.sort((a, b) => a - b); return ts[2]!;
  };
  const [c1, f1, c2, f2] = [await time('c', false), await time('f', true), await time('c', false), await time('f', true)];
  log(`Lq ${Lq} Lk ${Lk}: composed ${c1.toFixed(1)}/${c2.toFixed(1)} ms, fused ${f1.toFixed(1)}/${f2.toFixed(1)} ms, max err ${err.toExponential(1)}`);
}
