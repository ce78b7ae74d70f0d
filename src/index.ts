// freemask: the library entry.
export { getDevice, deviceInfo } from './engine/device.ts';
export {
  Tensor, tidy, keep, memoryStats, resetPeakMemory, trimPool, numel, type DType, type Shape, type MemoryStats,
} from './engine/tensor.ts';
export { backward, noGrad, isGradEnabled, record } from './engine/autograd.ts';
export { flush, sync, setProfiling, profileReport, resetProfile } from './engine/queue.ts';
export { gradcheck } from './engine/gradcheck.ts';
export * from './kernels/elementwise.ts';
export * from './kernels/reduce.ts';
export * from './kernels/shape.ts';
export * from './kernels/matmul.ts';
export * from './kernels/softmax.ts';
export * from './kernels/attention.ts';
export { conv2d, convTranspose2d, type Conv2dOptions, type ConvTranspose2dOptions, type Pair } from './kernels/conv.ts';
export { maxPool2d, avgPool2d, adaptiveAvgPool2d, type Pool2dOptions, type AvgPool2dOptions } from './kernels/pool.ts';
export * from './kernels/norm.ts';
export * from './kernels/loss.ts';
export * from './kernels/gather.ts';
export * from './kernels/random.ts';
export { interpolate, gridSample, type InterpolateOptions, type InterpolateMode, type GridSampleOptions } from './kernels/resample.ts';
export { Module, ModuleList, type LoadReport, type StateSource } from './nn/module.ts';
export { Linear, Conv2d, GroupNorm, LayerNorm, uniformInit, onesInit } from './nn/layers.ts';
export { Optimizer, type OptimizerStateDict } from './optim/optimizer.ts';
export { SGD } from './optim/sgd.ts';
export { AdamW } from './optim/adamw.ts';
export { manualSeed } from './engine/random-cpu.ts';
export { imageToTensor, tensorToImage, maskToImage, imageToLabels, heatmapToImage, type Image } from './io/image.ts';
export { loadSafetensors, saveSafetensors, encodeSafetensors, SafetensorsReader, type RawTensor, type TensorInfo } from './io/safetensors.ts';
export { UNet2DConditionModel, unetConfig, type UNet2DConditionConfig, type UNetForwardOptions } from './models/unet_2d_condition.ts';
export { AutoencoderKL, autoencoderConfig, type AutoencoderKLConfig, type LatentDistribution } from './models/autoencoder_kl.ts';
export { AttentionCapture, type AttentionCaptureOptions, type AttentionKind, type CapturedMap } from './models/attention_capture.ts';
export { DiffusersConfig } from './models/diffusers/loading.ts';
