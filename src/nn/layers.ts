// Basic layers on the engine's ops, with PyTorch's parameter names, layouts and default initialisation
// (drawn from the seeded CPU generator: `manualSeed` makes a model's initial weights reproducible).

import { type Shape, Tensor, numel, tidy } from '../engine/tensor.ts';
import { hasShaderF16 } from '../engine/kernel.ts';
import { uniformArray } from '../engine/random-cpu.ts';
import { linear } from '../kernels/matmul.ts';
import { cast, leakyRelu, relu, sigmoid, tanh } from '../kernels/elementwise.ts';
import { type Conv2dOptions, type ConvTranspose2dOptions, conv2d, convTranspose2d } from '../kernels/conv.ts';
import { batchNorm, groupNorm, layerNorm } from '../kernels/norm.ts';
import { BuildScope, Module, ModuleList, buildingHalfWeights } from './module.ts';

const skipScope = new BuildScope();

/**
 * Builds a model whose parameters are left uninitialised (GPU memory from the pool): for loaders that
 * overwrite every parameter with a strict `loadStateDict` right after. Drawing SD's 860M random weights on
 * the CPU first would cost minutes.
 */
export function skipInit<T>(build: () => T): T {
  return skipScope.run(build);
}

/** A tensor uniform in [-bound, bound): PyTorch's default for Linear/Conv weights (kaiming_uniform_ with a=√5) and biases. */
export function uniformInit(shape: Shape, bound: number): Tensor {
  // uninitialised weights inside `halfWeights` are made f16 directly: no f32 buffer even for a moment
  if (skipScope.active) return Tensor.empty(shape, buildingHalfWeights() && shape.length >= 2 ? 'f16' : 'f32');
  return Tensor.fromArray(uniformArray(numel(shape), -bound, bound), shape);
}

export function onesInit(shape: Shape): Tensor {
  if (skipScope.active) return Tensor.empty(shape);
  return Tensor.fromArray(new Float32Array(numel(shape)).fill(1), shape);
}

/**
 * `op(weight)` for an f16 weight (`Module.half()`): the ops read f16 directly where the device has shader-f16;
 * elsewhere the weight is converted to f32 for just this op and freed right after, so at most one layer's
 * f32 weight exists at a time (autograd keeps its own reference where it needs one).
 */
function withWeight(weight: Tensor, op: (w: Tensor) => Tensor): Tensor {
  if (weight.dtype !== 'f16' || hasShaderF16()) return op(weight);
  const w = cast(weight, 'f32');
  try {
    return op(w);
  } finally {
    w.dispose();
  }
}

/** y = x Wᵀ + b, weight [out, in]. */
export class Linear extends Module {
  readonly weight: Tensor;
  readonly bias: Tensor | undefined;

  constructor(readonly inFeatures: number, readonly outFeatures: number, { bias = true } = {}) {
    super();
    const bound = 1 / Math.sqrt(inFeatures);
    this.weight = this.param('weight', uniformInit([outFeatures, inFeatures], bound));
    this.bias = bias ? this.param('bias', uniformInit([outFeatures], bound)) : undefined;
  }

  forward(x: Tensor): Tensor {
    return withWeight(this.weight, (w) => linear(x, w, this.bias));
  }
}

/** 2-D convolution over NCHW, weight [out, in / groups, kh, kw]. */
export class Conv2d extends Module {
  readonly weight: Tensor;
  readonly bias: Tensor | undefined;
  readonly options: Conv2dOptions;

  constructor(
    readonly inChannels: number,
    readonly outChannels: number,
    kernelSize: number | [number, number],
    { bias = true, ...options }: Conv2dOptions & { bias?: boolean } = {},
  ) {
    super();
    const groups = options.groups ?? 1;
    if (inChannels % groups || outChannels % groups) {
      throw new Error(`Conv2d: in_channels ${inChannels} and out_channels ${outChannels} must be divisible by groups ${groups}`);
    }
    const [kh, kw] = typeof kernelSize === 'number' ? [kernelSize, kernelSize] : kernelSize;
    const bound = 1 / Math.sqrt((inChannels / groups) * kh * kw);
    this.weight = this.param('weight', uniformInit([outChannels, inChannels / groups, kh, kw], bound));
    this.bias = bias ? this.param('bias', uniformInit([outChannels], bound)) : undefined;
    this.options = options;
  }

  forward(x: Tensor): Tensor {
    return withWeight(this.weight, (w) => conv2d(x, w, this.bias, this.options));
  }
}

/** Group normalisation over NC… with per-channel affine weight and bias (ones and zeros initially). */
export class GroupNorm extends Module {
  readonly eps: number;
  readonly weight: Tensor | undefined;
  readonly bias: Tensor | undefined;

  constructor(readonly numGroups: number, readonly numChannels: number, { eps = 1e-5, affine = true } = {}) {
    super();
    if (numChannels % numGroups) throw new Error(`GroupNorm: num_channels ${numChannels} must be divisible by num_groups ${numGroups}`);
    this.eps = eps;
    this.weight = affine ? this.param('weight', onesInit([numChannels])) : undefined;
    this.bias = affine ? this.param('bias', Tensor.zeros([numChannels])) : undefined;
  }

  forward(x: Tensor): Tensor {
    return groupNorm(x, this.numGroups, this.weight, this.bias, this.eps);
  }
}

/**
 * Batch normalisation over N and the spatial dims of NC… (torch.nn.BatchNorm2d): batch statistics in training
 * mode (updating running_mean / running_var with `momentum`), the running ones in eval mode. num_batches_tracked
 * is kept for checkpoints only (PyTorch reads it only when momentum is None).
 */
export class BatchNorm2d extends Module {
  readonly weight: Tensor;
  readonly bias: Tensor;
  readonly runningMean: Tensor;
  readonly runningVar: Tensor;
  readonly numBatchesTracked: Tensor;

  constructor(readonly numFeatures: number, readonly options: { eps?: number; momentum?: number } = {}) {
    super();
    this.weight = this.param('weight', onesInit([numFeatures]));
    this.bias = this.param('bias', Tensor.zeros([numFeatures]));
    this.runningMean = this.buffer('running_mean', Tensor.zeros([numFeatures]));
    this.runningVar = this.buffer('running_var', onesInit([numFeatures]));
    this.numBatchesTracked = this.buffer('num_batches_tracked', Tensor.zeros([], 'i32'));
  }

  forward(x: Tensor): Tensor {
    return batchNorm(x, this.runningMean, this.runningVar, this.weight, this.bias, { eps: this.options.eps ?? 1e-5, momentum: this.options.momentum ?? 0.1, training: this.training });
  }
}

/** Layer normalisation over the trailing `normalizedShape` dimensions. */
export class LayerNorm extends Module {
  readonly normalizedShape: number[];
  readonly eps: number;
  readonly weight: Tensor | undefined;
  readonly bias: Tensor | undefined;

  constructor(normalizedShape: number | readonly number[], { eps = 1e-5, elementwiseAffine = true, bias = true } = {}) {
    super();
    this.normalizedShape = typeof normalizedShape === 'number' ? [normalizedShape] : [...normalizedShape];
    this.eps = eps;
    this.weight = elementwiseAffine ? this.param('weight', onesInit(this.normalizedShape)) : undefined;
    this.bias = elementwiseAffine && bias ? this.param('bias', Tensor.zeros(this.normalizedShape)) : undefined;
  }

  forward(x: Tensor): Tensor {
    return layerNorm(x, this.normalizedShape, this.weight, this.bias, this.eps);
  }
}

/** A module with a forward of one tensor (what Sequential chains). */
export type Layer = Module & { forward(x: Tensor): Tensor };

/** torch.nn.Sequential: children named 0, 1, … applied in order. */
export class Sequential extends ModuleList<Layer> {
  forward(x: Tensor): Tensor {
    return tidy(() => {
      let h = x;
      for (const m of this) h = m.forward(h);
      return h;
    });
  }
}

/** Parameter-free activations as modules, so that Sequential indices match the reference's. */
export class ReLU extends Module {
  forward(x: Tensor): Tensor {
    return relu(x);
  }
}

export class LeakyReLU extends Module {
  constructor(readonly negativeSlope = 0.01) {
    super();
  }
  forward(x: Tensor): Tensor {
    return leakyRelu(x, this.negativeSlope);
  }
}

export class Sigmoid extends Module {
  forward(x: Tensor): Tensor {
    return sigmoid(x);
  }
}

export class Tanh extends Module {
  forward(x: Tensor): Tensor {
    return tanh(x);
  }
}

/** Transposed 2-D convolution, weight [in, out / groups, kh, kw] (PyTorch's layout). */
export class ConvTranspose2d extends Module {
  readonly weight: Tensor;
  readonly bias: Tensor | undefined;

  constructor(readonly inChannels: number, readonly outChannels: number, kernelSize: number, readonly options: ConvTranspose2dOptions & { bias?: boolean } = {}) {
    super();
    const groups = options.groups ?? 1;
    // PyTorch's fan_in for ConvTranspose weights is computed from dim 1 (out / groups) · k²
    const bound = 1 / Math.sqrt((outChannels / groups) * kernelSize * kernelSize);
    this.weight = this.param('weight', uniformInit([inChannels, outChannels / groups, kernelSize, kernelSize], bound));
    this.bias = options.bias ?? true ? this.param('bias', uniformInit([outChannels], bound)) : undefined;
  }

  forward(x: Tensor): Tensor {
    const { bias: _bias, ...opts } = this.options;
    return withWeight(this.weight, (w) => convTranspose2d(x, w, this.bias, opts));
  }
}
