import { conv2d, convTranspose2d } from '../../src/kernels/conv.ts';
import { adaptiveAvgPool2d, avgPool2d, maxPool2d } from '../../src/kernels/pool.ts';
import { gridSample, interpolate } from '../../src/kernels/resample.ts';
import type { OpAdapter } from './registry.ts';

export const spatialOps: Record<string, OpAdapter> = {
  conv2d: ({ x, weight, bias }, { stride, padding, dilation, groups }) => conv2d(x!, weight!, bias, { stride, padding, dilation, groups }),
  conv_transpose2d: ({ x, weight, bias }, { stride, padding, output_padding, dilation, groups }) =>
    convTranspose2d(x!, weight!, bias, { stride, padding, outputPadding: output_padding, dilation, groups }),
  max_pool2d: ({ x }, { kernel_size, stride, padding }) => maxPool2d(x!, { kernelSize: kernel_size, stride, padding }),
  avg_pool2d: ({ x }, { kernel_size, stride, padding, count_include_pad }) =>
    avgPool2d(x!, { kernelSize: kernel_size, stride, padding, countIncludePad: count_include_pad }),
  adaptive_avg_pool2d: ({ x }, { output_size }) => adaptiveAvgPool2d(x!, output_size),
  interpolate: ({ x }, { size, scale_factor, mode, align_corners }) =>
    interpolate(x!, { size, scaleFactor: scale_factor, mode, alignCorners: align_corners }),
  grid_sample: ({ x, grid }, { mode, padding_mode, align_corners }) =>
    gridSample(x!, grid!, { mode, paddingMode: padding_mode, alignCorners: align_corners }),
};
