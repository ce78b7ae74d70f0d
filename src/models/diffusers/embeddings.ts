// diffusers' embeddings.py: the sinusoidal timestep embedding (Timesteps) and its MLP (TimestepEmbedding).

import { Tensor, tidy } from '../../engine/tensor.ts';
import { map, silu } from '../../kernels/elementwise.ts';
import { reshape } from '../../kernels/shape.ts';
import { Module } from '../../nn/module.ts';
import { Linear } from '../../nn/layers.ts';

/**
 * get_timestep_embedding: column j < half is sin(t·f_j), the rest cos(t·f_j) (swapped with flipSinToCos),
 * f_j = exp(−ln(10000)·j / (half − freqShift)); an odd dim gets a zero last column. No parameters.
 */
export class Timesteps extends Module {
  readonly #freq: Float32Array;
  readonly #isCos: Float32Array;

  constructor(readonly dim: number, readonly flipSinToCos: boolean, readonly freqShift: number) {
    super();
    const half = Math.floor(dim / 2);
    this.#freq = new Float32Array(dim);
    this.#isCos = new Float32Array(dim);
    for (let j = 0; j < 2 * half; j++) {
      const k = j % half;
      this.#freq[j] = Math.exp((-Math.log(10000) * k) / (half - freqShift));
      this.#isCos[j] = (j >= half) !== flipSinToCos ? 1 : 0;
    }
  }

  /** timesteps [N] (f32 or integer) → [N, dim]. */
  forward(timesteps: Tensor): Tensor {
    if (timesteps.rank !== 1) throw new Error(`Timesteps: expected timesteps of shape [batch], got [${timesteps.shape.join(', ')}]`);
    return tidy(() => {
      const t = reshape(timesteps, [timesteps.shape[0]!, 1]);
      const f = Tensor.fromArray(this.#freq, [this.dim]);
      const c = Tensor.fromArray(this.#isCos, [this.dim]);
      return map('timestep_embedding', 'select(sin(f32(t) * f), cos(f32(t) * f), c > 0.5)', { t, f, c });
    });
  }
}

/** linear_1 → SiLU → linear_2. */
export class TimestepEmbedding extends Module {
  readonly linear1: Linear;
  readonly linear2: Linear;
  constructor(inChannels: number, timeEmbedDim: number) {
    super();
    this.linear1 = this.module('linear_1', new Linear(inChannels, timeEmbedDim));
    this.linear2 = this.module('linear_2', new Linear(timeEmbedDim, timeEmbedDim));
  }

  forward(x: Tensor): Tensor {
    return tidy(() => this.linear2.forward(silu(this.linear1.forward(x))));
  }
}
