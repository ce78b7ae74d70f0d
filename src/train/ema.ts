// An exponential moving average of a model's parameters, updated after each optimizer step as diffusers'
// EMAModel does: ema ← ema − (1 − d)·(ema − p), at the u-th update (1-based) with t = u − 1 and
// d = 0 when t = 0, else min(decay, (1 + t) / (10 + t)): the warm-up lets the average follow the fast early
// changes. With a fused optimizer the average has the
// optimizer's flat layout, so one dispatch updates every parameter.

import { grid1d, launch, workgroupSize } from '../engine/kernel.ts';
import { Tensor, keep, u32Constant } from '../engine/tensor.ts';

export class ExponentialMovingAverage {
  /** Updates applied so far. */
  updates = 0;
  readonly #names: readonly string[];
  readonly #params: readonly Tensor[];
  readonly #packed: { flat: Tensor; offsets: readonly number[] } | undefined;
  /** The averaged flat buffer (packed) or one tensor per parameter. */
  readonly #flat: Tensor | undefined;
  readonly #each: Tensor[];

  /**
   * `named`: the parameters by state-dict name; `packed`: a fused optimizer's layout of the same parameters
   * (`Optimizer.packed`), to update them all in one dispatch.
   */
  constructor(named: readonly [string, Tensor][], readonly decay: number, packed?: { flat: Tensor; offsets: readonly number[] }) {
    if (!(decay > 0 && decay < 1)) throw new Error(`ExponentialMovingAverage: decay must be in (0, 1), got ${decay}`);
    this.#names = named.map(([n]) => n);
    this.#params = named.map(([, p]) => p);
    this.#packed = packed;
    if (packed) {
      this.#flat = keep(Tensor.empty(packed.flat.shape)).copyFrom(packed.flat);
      this.#each = this.#params.map((p, i) => keep(this.#flat!.view(packed.offsets[i]! * 4, p.shape)));
    } else {
      this.#each = this.#params.map((p) => keep(Tensor.empty(p.shape)).copyFrom(p));
    }
  }

  /** The decay of the next update. */
  get currentDecay(): number {
    const t = this.updates;
    return t === 0 ? 0 : Math.min(this.decay, (1 + t) / (10 + t));
  }

  update(): void {
    const oneMinus = keep(Tensor.fromArray([1 - this.currentDecay]));
    this.updates++;
    try {
      if (this.#flat) lerpInPlace(this.#flat, this.#packed!.flat, oneMinus);
      else this.#each.forEach((e, i) => lerpInPlace(e, this.#params[i]!, oneMinus));
    } finally {
      oneMinus.dispose();
    }
  }

  /** The averaged weights under the parameters' state-dict names (the average's own tensors: do not dispose). */
  stateDict(): Record<string, Tensor> {
    return Object.fromEntries(this.#names.map((n, i) => [n, this.#each[i]!]));
  }

  /** Copies `source`'s tensors (named as in `stateDict`) into the average; throws naming a missing or misshaped one. */
  load(source: (name: string) => Tensor | undefined, label: string): void {
    this.#names.forEach((n, i) => {
      const t = source(n);
      if (!t) throw new Error(`${label}: no EMA weight '${n}'`);
      if (t.shape.join() !== this.#each[i]!.shape.join()) throw new Error(`${label}: EMA weight '${n}' has shape [${t.shape}], the parameter [${this.#each[i]!.shape}]`);
      this.#each[i]!.copyFrom(t);
    });
  }

  dispose(): void {
    for (const t of this.#each) t.dispose();
    this.#flat?.dispose();
  }
}

/** avg ← avg − w·(avg − p), elementwise, w = weight[0]. */
function lerpInPlace(avg: Tensor, p: Tensor, weight: Tensor): void {
  const g = grid1d(avg.size, workgroupSize, 'count[0]');
  launch({
    name: 'ema',
    key: '',
    inputs: { p, weight, count: u32Constant([avg.size]) },
    outputs: { avg },
    workgroups: g.workgroups,
    wgsl: (bindings) => `${bindings}
${g.main}
  avg[i] = avg[i] - weight[0] * (avg[i] - p[i]);
}`,
  });
}
