import type { Tensor } from '../../engine/tensor.ts';
import type { Mask2FormerConfig } from './config.ts';
export interface LossOptions { random?: (shape: number[]) => Float32Array }
export interface Mask2FormerLossOutput { total: Tensor }
export function mask2formerLoss(_c: Mask2FormerConfig, _f: unknown, _a: unknown[], _m: Tensor[], _l: Tensor[], _o: LossOptions): Mask2FormerLossOutput {
  throw new Error('todo');
}
