// Adam with decoupled weight decay, PyTorch's update rule (torch.optim.AdamW), at step t:
//   p = p·(1 − lr·weight_decay)
//   m = m + (1 − β1)·(g − m);   v = β2·v + (1 − β2)·g²
//   p = p − lr / (1 − β1^t) · m / (√v / √(1 − β2^t) + eps)
// The bias corrections are computed on the CPU in float64, as PyTorch does.

import type { Tensor } from '../engine/tensor.ts';
import { type ParamState, Optimizer, launchUpdate } from './optimizer.ts';

export interface AdamWOptions {
  lr: number;
  betas?: [number, number];
  eps?: number;
  weightDecay?: number;
}

export class AdamW extends Optimizer<Required<AdamWOptions>> {
  protected readonly stateNames = ['exp_avg', 'exp_avg_sq'];

  constructor(params: Iterable<Tensor>, { lr, betas = [0.9, 0.999], eps = 1e-8, weightDecay = 0.01 }: AdamWOptions) {
    super(params, { lr, betas: [betas[0], betas[1]], eps, weightDecay });
  }

  protected update(param: Tensor, grad: Tensor, state: ParamState, hyper: (values: number[]) => Tensor): void {
    const { lr, betas: [beta1, beta2], eps, weightDecay } = this.options;
    const t = state.step;
    const hp = hyper([1 - lr * weightDecay, 1 - beta1, beta2, 1 - beta2, Math.sqrt(1 - beta2 ** t), eps, lr / (1 - beta1 ** t)]);
    const m = this.stateTensor(state, 'exp_avg', param);
    const v = this.stateTensor(state, 'exp_avg_sq', param);
    launchUpdate('adamw', param, grad, hp, { m, v }, `let g = grad[i];
  let mi = m[i] + hp[1] * (g - m[i]);
  let vi = hp[2] * v[i] + hp[3] * g * g;
  m[i] = mi;
  v[i] = vi;
  param[i] = param[i] * hp[0] - hp[6] * mi / (sqrt(vi) / hp[4] + hp[5]);`);
  }
}
