// Stochastic gradient descent with PyTorch's update rule (torch.optim.SGD):
//   d = g + weight_decay·p
//   buf = d at the first step, then momentum·buf + (1 − dampening)·d
//   d = nesterov ? d + momentum·buf : buf        (when momentum ≠ 0)
//   p = p − lr·d

import type { Tensor } from '../engine/tensor.ts';
import { type ParamState, Optimizer, launchUpdate } from './optimizer.ts';

export interface SGDOptions {
  lr: number;
  momentum?: number;
  dampening?: number;
  weightDecay?: number;
  nesterov?: boolean;
}

export class SGD extends Optimizer<Required<SGDOptions>> {
  protected readonly stateNames = ['momentum_buffer'];

  constructor(params: Iterable<Tensor>, { lr, momentum = 0, dampening = 0, weightDecay = 0, nesterov = false }: SGDOptions) {
    if (nesterov && (momentum <= 0 || dampening !== 0)) throw new Error('SGD: Nesterov momentum requires a momentum and zero dampening');
    super(params, { lr, momentum, dampening, weightDecay, nesterov });
  }

  protected update(param: Tensor, grad: Tensor, state: ParamState, hyper: (values: number[]) => Tensor): void {
    const { lr, momentum, dampening, weightDecay, nesterov } = this.options;
    if (momentum === 0) {
      launchUpdate('sgd', param, grad, hyper([lr, weightDecay]), {}, 'param[i] = param[i] - hp[0] * (grad[i] + hp[1] * param[i]);');
      return;
    }
    const first = !state.tensors.has('momentum_buffer');
    const buf = this.stateTensor(state, 'momentum_buffer', param);
    const hp = hyper([lr, weightDecay, momentum, 1 - dampening, nesterov ? 1 : 0, first ? 1 : 0]);
    launchUpdate('sgd.momentum', param, grad, hp, { buf }, `let d = grad[i] + hp[1] * param[i];
  let b = select(hp[2] * buf[i] + hp[3] * d, d, hp[5] != 0.0);
  buf[i] = b;
  param[i] = param[i] - hp[0] * select(b, d + hp[2] * b, hp[4] != 0.0);`);
  }
}
