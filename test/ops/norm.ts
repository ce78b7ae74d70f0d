import { Tensor } from '../../src/engine/tensor.ts';
import { embedding, indexSelect } from '../../src/kernels/gather.ts';
import { binaryCrossEntropyWithLogits, crossEntropy } from '../../src/kernels/loss.ts';
import { batchNorm, groupNorm, layerNorm } from '../../src/kernels/norm.ts';
import { reshape } from '../../src/kernels/shape.ts';
import type { OpAdapter } from './registry.ts';

// The references store PyTorch's 0-d losses as shape [1].
const asStored = (loss: Tensor) => reshape(loss, [1]);

export const normOps: Record<string, OpAdapter> = {
  group_norm: ({ x, weight, bias }, { num_groups, eps }) => groupNorm(x!, num_groups, weight, bias, eps),
  layer_norm: ({ x, weight, bias }, { normalized_shape, eps }) => layerNorm(x!, normalized_shape, weight, bias, eps),
  batch_norm: ({ x, running_mean, running_var, weight, bias }, { eps, training, momentum }) =>
    batchNorm(x!, running_mean, running_var, weight, bias, { eps, training, momentum }),
  cross_entropy: ({ logits, target }, { ignore_index, reduction, weight, label_smoothing }) =>
    asStored(crossEntropy(logits!, target!, {
      ignoreIndex: ignore_index,
      reduction,
      weight: weight && Tensor.fromArray(new Float32Array(weight)),
      labelSmoothing: label_smoothing,
    })),
  binary_cross_entropy_with_logits: ({ logits, target, weight, pos_weight }, { reduction }) =>
    asStored(binaryCrossEntropyWithLogits(logits!, target!, { weight, posWeight: pos_weight, reduction })),
  embedding: ({ ids, weight }) => embedding(ids!, weight!),
  index_select: ({ x, index }, { dim }) => indexSelect(x!, dim, index!),
};
