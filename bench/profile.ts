// Per-kernel GPU time (timestamp queries) of a UNet-shaped block stack forward at 32×32×320, built from the
// public ops with random weights until the real UNet lands: a ResNet block (group norm, SiLU, 3×3 conv, twice,
// plus the skip) and a transformer block (self-attention, cross-attention over 77 tokens of width 768,
// GEGLU feed-forward), as in Stable Diffusion's UNet.
// Usage: npm run bench -- --profile [--runs N] [--results bench/RESULTS.md (replaces that file's Profile section)]
import * as F from '../src/index.ts';
import { writeSection } from './results-md.ts';

type T = F.Tensor;
const C = 320;
const size = 32;
const heads = 8;
const contextLen = 77;
const contextDim = 768;

let seed = 1;
const randn = (shape: number[], scale = 1): T => F.mul(F.randn(shape, { seed: seed++ }), scale);
const linearWeights = (out: number, inp: number) => ({ w: randn([out, inp], 1 / Math.sqrt(inp)), b: randn([out], 0.01) });

function weights() {
  const conv = () => ({ w: randn([C, C, 3, 3], 1 / Math.sqrt(C * 9)), b: randn([C], 0.01) });
  const norm = () => ({ g: F.add(randn([C], 0.1), 1), b: randn([C], 0.1) });
  const attn = (kvDim: number) => ({ q: randn([C, C], C ** -0.5), k: randn([C, kvDim], kvDim ** -0.5), v: randn([C, kvDim], kvDim ** -0.5), out: linearWeights(C, C) });
  return {
    resnet: { norm1: norm(), conv1: conv(), norm2: norm(), conv2: conv() },
    transformer: {
      norm: norm(), projIn: linearWeights(C, C), ln1: norm(), attn1: attn(C), ln2: norm(), attn2: attn(contextDim), ln3: norm(),
      ffIn: linearWeights(8 * C, C), ffOut: linearWeights(C, 4 * C), projOut: linearWeights(C, C),
    },
  };
}
type Weights = ReturnType<typeof weights>;

const splitHeads = (x: T, len: number) => F.permute(F.reshape(x, [1, len, heads, C / heads]), [0, 2, 1, 3]);

function attention(x: T, context: T, a: Weights['transformer']['attn1']): T {
  const len = x.shape[1]!;
  const q = splitHeads(F.linear(x, a.q), len);
  const k = splitHeads(F.linear(context, a.k), context.shape[1]!);
  const v = splitHeads(F.linear(context, a.v), context.shape[1]!);
  const o = F.reshape(F.permute(F.scaledDotProductAttention(q, k, v), [0, 2, 1, 3]), [1, len, C]);
  return F.linear(o, a.out.w, a.out.b);
}

function forward(x: T, context: T, w: Weights): T {
  const r = w.resnet;
  let h = F.conv2d(F.silu(F.groupNorm(x, 32, r.norm1.g, r.norm1.b)), r.conv1.w, r.conv1.b, { padding: 1 });
  h = F.conv2d(F.silu(F.groupNorm(h, 32, r.norm2.g, r.norm2.b)), r.conv2.w, r.conv2.b, { padding: 1 });
  const res = F.add(x, h);

  const t = w.transformer;
  const n = F.groupNorm(res, 32, t.norm.g, t.norm.b, 1e-6);
  let s = F.linear(F.reshape(F.permute(n, [0, 2, 3, 1]), [1, size * size, C]), t.projIn.w, t.projIn.b);
  s = F.add(s, attention(F.layerNorm(s, [C], t.ln1.g, t.ln1.b), F.layerNorm(s, [C], t.ln1.g, t.ln1.b), t.attn1));
  s = F.add(s, attention(F.layerNorm(s, [C], t.ln2.g, t.ln2.b), context, t.attn2));
  const [a, gate] = F.split(F.linear(F.layerNorm(s, [C], t.ln3.g, t.ln3.b), t.ffIn.w, t.ffIn.b), 4 * C, -1) as [T, T];
  s = F.add(s, F.linear(F.mul(a, F.gelu(gate)), t.ffOut.w, t.ffOut.b));
  s = F.linear(s, t.projOut.w, t.projOut.b);
  return F.add(F.permute(F.reshape(s, [1, size, size, C]), [0, 3, 1, 2]), res);
}

export async function main(argv: string[]): Promise<void> {
  const i = argv.indexOf('--runs');
  const runs = i >= 0 ? Number(argv[i + 1]) : 3;
  await F.getDevice();
  const w = F.tidy(weights);
  const x = randn([1, C, size, size]);
  const context = randn([1, contextLen, contextDim]);
  F.tidy(() => forward(x, context, w)).dispose(); // warm-up: pipelines compiled outside the profile
  await F.sync();
  F.setProfiling(true);
  F.resetProfile();
  const t0 = performance.now();
  for (let r = 0; r < runs; r++) {
    F.tidy(() => forward(x, context, w)).dispose();
    await F.sync();
  }
  const wallMs = (performance.now() - t0) / runs;
  const report = await F.profileReport();
  F.setProfiling(false);
  const gpuMs = report.reduce((a, e) => a + e.totalMs, 0) / runs;
  const title = `UNet-shaped block stack (ResNet block + transformer block at ${size}x${size}x${C}), ${runs} forward runs`;
  const summary = `wall ${wallMs.toFixed(1)} ms per forward (with profiling on), GPU kernel time ${gpuMs.toFixed(1)} ms`;
  const table = report.map((e) => ({
    kernel: e.kernel,
    'calls/fwd': e.calls / runs,
    'ms/fwd': Number((e.totalMs / runs).toFixed(2)),
    'mean ms': Number(e.meanMs.toFixed(3)),
    share: `${((100 * e.totalMs) / runs / gpuMs).toFixed(1)}%`,
  }));
  console.log(title);
  console.log(summary);
  console.table(table);

  const r = argv.indexOf('--results');
  if (r >= 0) {
    const path = argv[r + 1]!;
    writeSection(path, '## Profile', [
      `\`npm run bench -- --profile\` on ${F.deviceInfo().description}, ${new Date().toISOString()}: ${title}; ${summary}. ` +
        'GPU time per kernel name from timestamp queries (src/engine/queue.ts).', '',
      '| kernel | calls per forward | ms per forward | mean ms per call | share |', '|---|--:|--:|--:|--:|',
      ...table.map((e) => `| ${e.kernel} | ${e['calls/fwd']} | ${e['ms/fwd']} | ${e['mean ms']} | ${e.share} |`),
    ].join('\n'));
    console.log(`wrote the Profile section of ${path}`);
  }
}
