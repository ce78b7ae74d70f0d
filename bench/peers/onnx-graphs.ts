// The ONNX graph of each workload, for the onnxruntime runners (web and node). Activations are graph inputs;
// weights (and the constants of each pattern) are initializers, as in an exported model. The patterns are
// what torch.onnx.export writes at opset 17: GELU as its erf formula, SiLU as x·sigmoid(x), group norm as
// InstanceNormalization over [1, groups, -1], attention as MatMul / Softmax / MatMul.

import { type OnnxGraph, type OnnxNode, type OnnxTensor, OnnxType, encodeModel } from '../onnx-writer.ts';
import { f32ToF16 } from '../../src/engine/tensor.ts';
import { type BenchDType, type Spec, type Workload, inputData, inputShapes, outputShape } from './workloads.ts';

export interface OnnxWorkload {
  model: Uint8Array;
  /** Graph inputs with their data (Float32Array, or Uint16Array of f16 bits). */
  feeds: { name: string; dims: number[]; data: Float32Array | Uint16Array }[];
  output: string;
}

const toF16 = (a: Float32Array) => Uint16Array.from(a, f32ToF16);

export function onnxWorkload(w: Workload, dtype: BenchDType): OnnxWorkload {
  if (w.backward) throw new Error('onnxruntime inference sessions have no backward');
  const type = dtype === 'f16' ? OnnxType.float16 : OnnxType.float;
  const values = (a: Float32Array) => (dtype === 'f16' ? toF16(a) : a);
  const tensor = (name: string, dims: number[], data: Float32Array): OnnxTensor => ({ name, type, dims, data: values(data) });
  const scalar = (name: string, v: number) => tensor(name, [], Float32Array.of(v));
  const int64s = (name: string, v: number[]): OnnxTensor => ({ name, type: OnnxType.int64, dims: [v.length], data: BigInt64Array.from(v, BigInt) });

  const feeds: OnnxWorkload['feeds'] = [];
  const initializers: OnnxTensor[] = [];
  inputShapes(w.spec).forEach((inp, i) => {
    const data = inputData(inp.shape, i + 1, inp.fanIn);
    if (inp.weight) initializers.push(tensor(inp.name, inp.shape, data));
    else feeds.push({ name: inp.name, dims: inp.shape, data: values(data) });
  });
  const nodes = graphNodes(w.spec, initializers, { scalar, int64s, tensor });
  const graph: OnnxGraph = {
    name: w.name,
    nodes,
    inputs: feeds.map((f) => ({ name: f.name, type, dims: f.dims })),
    outputs: [{ name: 'y', type, dims: outputShape(w.spec) }],
    initializers,
  };
  return { model: encodeModel(graph), feeds, output: 'y' };
}

interface Consts {
  scalar(name: string, v: number): OnnxTensor;
  int64s(name: string, v: number[]): OnnxTensor;
  tensor(name: string, dims: number[], data: Float32Array): OnnxTensor;
}

/** Nodes computing 'y' from the inputs named as in inputShapes(); adds the constants it needs. */
function graphNodes(s: Spec, init: OnnxTensor[], c: Consts): OnnxNode[] {
  const silu = (x: string, y: string): OnnxNode[] => [
    { op: 'Sigmoid', inputs: [x], outputs: [`${x}_sig`] },
    { op: 'Mul', inputs: [x, `${x}_sig`], outputs: [y] },
  ];
  switch (s.kind) {
    case 'matmul':
      return [{ op: 'MatMul', inputs: ['a', 'b'], outputs: ['y'] }];
    case 'linear_gelu':
      init.push(c.scalar('sqrt2', Math.SQRT2), c.scalar('one', 1), c.scalar('half', 0.5));
      return [
        { op: 'Gemm', inputs: ['x', 'weight', 'bias'], outputs: ['h'], attrs: { transB: 1 } },
        { op: 'Div', inputs: ['h', 'sqrt2'], outputs: ['h_s'] },
        { op: 'Erf', inputs: ['h_s'], outputs: ['h_e'] },
        { op: 'Add', inputs: ['h_e', 'one'], outputs: ['h_a'] },
        { op: 'Mul', inputs: ['h', 'h_a'], outputs: ['h_m'] },
        { op: 'Mul', inputs: ['h_m', 'half'], outputs: ['y'] },
      ];
    case 'conv2d': {
      const conv: OnnxNode = {
        op: 'Conv',
        inputs: s.bias ? ['x', 'weight', 'bias'] : ['x', 'weight'],
        outputs: [s.silu ? 'h' : 'y'],
        attrs: { kernel_shape: [s.kernel, s.kernel], pads: [s.pad, s.pad, s.pad, s.pad] },
      };
      return s.silu ? [conv, ...silu('h', 'y')] : [conv];
    }
    case 'attention':
      init.push(c.scalar('scale', 1 / Math.sqrt(s.dim)));
      return [
        { op: 'Transpose', inputs: ['k'], outputs: ['kt'], attrs: { perm: [0, 1, 3, 2] } },
        { op: 'MatMul', inputs: ['q', 'kt'], outputs: ['scores'] },
        { op: 'Mul', inputs: ['scores', 'scale'], outputs: ['scaled'] },
        { op: 'Softmax', inputs: ['scaled'], outputs: ['probs'], attrs: { axis: -1 } },
        { op: 'MatMul', inputs: ['probs', 'v'], outputs: ['y'] },
      ];
    case 'group_norm_silu': {
      const G = s.groups;
      init.push(
        c.int64s('grouped_shape', [1, G, -1]),
        c.int64s('x_shape', [1, s.channels, s.size, s.size]),
        c.tensor('in_scale', [G], new Float32Array(G).fill(1)),
        c.tensor('in_bias', [G], new Float32Array(G)),
        c.int64s('affine_shape', [s.channels, 1, 1]),
      );
      return [
        { op: 'Reshape', inputs: ['x', 'grouped_shape'], outputs: ['xg'] },
        { op: 'InstanceNormalization', inputs: ['xg', 'in_scale', 'in_bias'], outputs: ['ng'], attrs: { epsilon: { float: 1e-5 } } },
        { op: 'Reshape', inputs: ['ng', 'x_shape'], outputs: ['n'] },
        { op: 'Reshape', inputs: ['gamma', 'affine_shape'], outputs: ['gamma3'] },
        { op: 'Reshape', inputs: ['beta', 'affine_shape'], outputs: ['beta3'] },
        { op: 'Mul', inputs: ['n', 'gamma3'], outputs: ['ns'] },
        { op: 'Add', inputs: ['ns', 'beta3'], outputs: ['h'] },
        ...silu('h', 'y'),
      ];
    }
    case 'layer_norm':
      return [{ op: 'LayerNormalization', inputs: ['x', 'gamma', 'beta'], outputs: ['y'], attrs: { axis: -1, epsilon: { float: 1e-5 } } }];
    case 'softmax':
      return [{ op: 'Softmax', inputs: ['x'], outputs: ['y'], attrs: { axis: -1 } }];
    case 'chain':
      return Array.from({ length: s.length }, (_, i) => ({
        op: 'Add',
        inputs: [i === 0 ? 'x' : `x${i}`, 'c'],
        outputs: [i === s.length - 1 ? 'y' : `x${i + 1}`],
      }));
  }
}
