import { scaledDotProductAttention } from '../../src/kernels/attention.ts';
import { linear, matmul } from '../../src/kernels/matmul.ts';
import { logSoftmax, softmax } from '../../src/kernels/softmax.ts';
import type { OpAdapter } from './registry.ts';

export const matmulOps: Record<string, OpAdapter> = {
  matmul: ({ a, b }) => matmul(a!, b!),
  linear: ({ x, weight, bias }) => linear(x!, weight!, bias),
  softmax: ({ x }, { dim }) => softmax(x!, dim),
  log_softmax: ({ x }, { dim }) => logSoftmax(x!, dim),
  scaled_dot_product_attention: ({ q, k, v, bias }, { scale, causal }) => scaledDotProductAttention(q!, k!, v!, { scale, causal, bias }),
};
