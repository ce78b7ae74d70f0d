// Stochastic gradient descent with PyTorch's update rule (torch.optim.SGD):
//   d = g + weight_decay·p
//   buf = d at the first step, then momentum·buf + (1 − dampening)·d
//   d = nesterov ? d + momentum·buf : buf        (when momentum ≠ 0)
//   p = p − lr·d

import type { Tensor } from '../engine/tensor.ts';
import { type FusedOption, Optimizer, type ParamGroupSpec, type UpdateRule } from './optimizer.ts';

export interface SGDOptions {
  lr: number;
  momentum?: number;
  dampening?: number;
  weightDecay?: number;
  nesterov?: boolean;
}

export class SGD extends Optimizer<Required<SGDOptions>> {
  protected readonly stateNames = ['momentum_buffer'];

  /** `params`: tensors, or groups `{ params, lr?, momentum?, … }` overriding the options. */
  constructor(params: Iterable<Tensor> | ParamGroupSpec<SGDOptions>[], { lr, momentum = 0, dampening = 0, weightDecay = 0, nesterov = false, fused }: SGDOptions & FusedOption) {
    super(params as Iterable<Tensor> | ParamGroupSpec<Required<SGDOptions>>[], { lr, momentum, dampening, weightDecay, nesterov, fused });
    for (const g of this.groups) {
      if (g.options.nesterov && (g.options.momentum <= 0 || g.options.dampening !== 0)) throw new Error('SGD: Nesterov momentum requires a momentum and zero dampening');
    }
  }

  protected rule({ lr, momentum, dampening, weightDecay, nesterov }: Required<SGDOptions>, t: number): UpdateRule {
    if (momentum === 0) return { name: 'sgd', hp: [lr, weightDecay], state: [], body: 'param[k] = param[k] - hp[0] * (g + hp[1] * param[k]);' };
    return {
      name: 'sgd.momentum',
      // the buffer starts as the first step's direction (PyTorch: when the state has none yet)
      hp: [lr, weightDecay, momentum, 1 - dampening, nesterov ? 1 : 0, t === 1 ? 1 : 0],
      state: ['momentum_buffer'],
      body: `let d = g + hp[1] * param[k];
  let b = select(hp[2] * momentum_buffer[k] + hp[3] * d, d, hp[5] != 0.0);
  momentum_buffer[k] = b;
  param[k] = param[k] - hp[0] * select(b, d + hp[2] * b, hp[4] != 0.0);`,
    };
  }
}
