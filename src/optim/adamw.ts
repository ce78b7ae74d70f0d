// Adam with decoupled weight decay, PyTorch's update rule (torch.optim.AdamW), at step t:
//   p = p·(1 − lr·weight_decay)
//   m = m + (1 − β1)·(g − m);   v = β2·v + (1 − β2)·g²
//   p = p − lr / (1 − β1^t) · m / (√v / √(1 − β2^t) + eps)
// The bias corrections are computed on the CPU in float64, as PyTorch does.

import type { Tensor } from '../engine/tensor.ts';
import { type FusedOption, Optimizer, type ParamGroupSpec, type UpdateRule } from './optimizer.ts';

export interface AdamWOptions {
  lr: number;
  betas?: [number, number];
  eps?: number;
  weightDecay?: number;
}

export class AdamW extends Optimizer<Required<AdamWOptions>> {
  protected readonly stateNames = ['exp_avg', 'exp_avg_sq'];

  /** `params`: tensors, or groups `{ params, lr?, weightDecay?, … }` overriding the options. */
  constructor(params: Iterable<Tensor> | ParamGroupSpec<AdamWOptions>[], { lr, betas = [0.9, 0.999], eps = 1e-8, weightDecay = 0.01, fused }: AdamWOptions & FusedOption) {
    super(params as Iterable<Tensor> | ParamGroupSpec<Required<AdamWOptions>>[], { lr, betas: [betas[0], betas[1]], eps, weightDecay, fused });
  }

  protected rule({ lr, betas: [beta1, beta2], eps, weightDecay }: Required<AdamWOptions>, t: number): UpdateRule {
    return {
      name: 'adamw',
      hp: [1 - lr * weightDecay, 1 - beta1, beta2, 1 - beta2, Math.sqrt(1 - beta2 ** t), eps, lr / (1 - beta1 ** t)],
      state: ['exp_avg', 'exp_avg_sq'],
      body: `let mk = exp_avg[k] + hp[1] * (g - exp_avg[k]);
  let vk = hp[2] * exp_avg_sq[k] + hp[3] * g * g;
  exp_avg[k] = mk;
  exp_avg_sq[k] = vk;
  param[k] = param[k] * hp[0] - hp[6] * mk / (sqrt(vk) / hp[4] + hp[5]);`,
    };
  }
}
