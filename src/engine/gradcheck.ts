// Gradient checking against central finite differences. The loss is L = Σ w ⊙ f(inputs) with fixed random
// weights w; the analytic gradient comes from backward(), the numeric one from evaluating f at x ± eps and
// accumulating L in float64 on the CPU (the GPU evaluates f in float32, hence eps around 1e-3 and a
// tolerance well above float32 rounding).

import { backward, noGrad } from './autograd.ts';
import { seededRandom } from './random-cpu.ts';
import { Tensor, numel, shapeStr } from './tensor.ts';
import { mul } from '../kernels/elementwise.ts';
import { sum } from '../kernels/reduce.ts';

export interface GradInput {
  data: ArrayLike<number>;
  shape: readonly number[];
}

export interface GradcheckOptions {
  eps?: number;
  atol?: number;
  rtol?: number;
  /** Check at most this many elements per input (chosen at random); all when omitted. */
  samples?: number;
  seed?: number;
}

export interface GradcheckResult {
  ok: boolean;
  worst: { input: number; index: number; analytic: number; numeric: number; error: number } | undefined;
  checked: number;
}

/**
 * Checks d(Σ w·f)/d(input) for every differentiable input (GradInput); Tensor arguments are passed through
 * as constants (indices, masks).
 */
export async function gradcheck(
  f: (...args: Tensor[]) => Tensor,
  args: readonly (GradInput | Tensor)[],
  { eps = 1e-3, atol = 1e-3, rtol = 1e-2, samples, seed = 1 }: GradcheckOptions = {},
): Promise<GradcheckResult> {
  const rand = seededRandom(seed);
  const values = args.map((a) => (a instanceof Tensor ? undefined : Float32Array.from(a.data)));
  args.forEach((a, k) => {
    if (!(a instanceof Tensor) && numel(a.shape) !== a.data.length) {
      throw new Error(`gradcheck: input ${k} has ${a.data.length} values for shape ${shapeStr(a.shape)}`);
    }
  });
  const build = (override?: { k: number; data: Float32Array }) =>
    args.map((a, k) => (a instanceof Tensor ? a : Tensor.fromArray(override?.k === k ? override.data : values[k]!, a.shape)));
  const release = (ts: Tensor[]) => ts.forEach((t, k) => !(args[k] instanceof Tensor) && t.dispose());

  // analytic
  const leaves = build();
  leaves.forEach((t, k) => !(args[k] instanceof Tensor) && (t.requiresGrad = true));
  const y = f(...leaves);
  const w = Float64Array.from({ length: y.size }, () => rand() * 2 - 1);
  const wt = Tensor.fromArray(Float32Array.from(w), y.shape);
  const loss = sum(mul(y, wt));
  backward(loss);
  const analytic = await Promise.all(leaves.map(async (t) => (t.grad ? await t.grad.toArray() : undefined)));
  loss.dispose();
  y.dispose();
  wt.dispose();
  release(leaves);

  const lossAt = async (k: number, data: Float32Array): Promise<number> => {
    const ins = build({ k, data });
    const out = noGrad(() => f(...ins));
    const v = await out.toArray();
    out.dispose();
    release(ins);
    let s = 0;
    for (let j = 0; j < v.length; j++) s += w[j]! * v[j]!;
    return s;
  };

  let worst: GradcheckResult['worst'];
  let ok = true;
  let checked = 0;
  for (let k = 0; k < args.length; k++) {
    const base = values[k];
    if (!base) continue;
    const grad = analytic[k];
    let idx = [...base.keys()];
    if (samples !== undefined && idx.length > samples) {
      for (let j = idx.length - 1; j > 0; j--) {
        const r = Math.floor(rand() * (j + 1));
        [idx[j], idx[r]] = [idx[r]!, idx[j]!];
      }
      idx = idx.slice(0, samples);
    }
    for (const j of idx) {
      const plus = base.slice();
      const minus = base.slice();
      plus[j] = base[j]! + eps;
      minus[j] = base[j]! - eps;
      // the step actually taken in float32
      const h = (plus[j]! - minus[j]!) / 2;
      const numeric = ((await lossAt(k, plus)) - (await lossAt(k, minus))) / (2 * h);
      const a = grad ? grad[j]! : 0;
      const error = Math.abs(a - numeric);
      const bad = !(error <= atol + rtol * Math.abs(numeric));
      checked++;
      if (bad) ok = false;
      if (!worst || error > worst.error || (bad && worst.error <= atol + rtol * Math.abs(worst.numeric))) {
        worst = { input: k, index: j, analytic: a, numeric, error };
      }
    }
  }
  return { ok, worst, checked };
}

/** Runs gradcheck and throws a readable error when it fails (for tests). */
export async function assertGradcheck(name: string, f: (...args: Tensor[]) => Tensor, args: readonly (GradInput | Tensor)[], opts?: GradcheckOptions): Promise<void> {
  const r = await gradcheck(f, args, opts);
  if (!r.ok) {
    const w = r.worst!;
    throw new Error(`gradcheck ${name}: input ${w.input}[${w.index}] analytic ${w.analytic} vs numeric ${w.numeric} (|diff| ${w.error.toExponential(2)}; ${r.checked} elements checked)`);
  }
}

