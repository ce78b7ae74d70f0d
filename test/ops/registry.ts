// Maps the conformance `op` names (PyTorch's) to our ops. Each kernel family adds its adapters in its own
// file under test/ops/ and this index merges them.
import type { Tensor } from '../../src/engine/tensor.ts';
import { elementwiseOps } from './elementwise.ts';
import { matmulOps } from './matmul.ts';
import { normOps } from './norm.ts';
import { spatialOps } from './spatial.ts';

/** Runs one op on the case's input tensors (by the case's input names) with the case's `args`. */
export type OpAdapter = (inputs: Record<string, Tensor>, args: Record<string, any>) => Tensor;

export const opAdapters: Record<string, OpAdapter> = {
  ...elementwiseOps,
  ...matmulOps,
  ...spatialOps,
  ...normOps,
};
