// A minimal ONNX protobuf writer, so the peer benchmarks build their graphs in the bench itself (no downloaded
// models). Covers what the bench needs: ModelProto, GraphProto, NodeProto, AttributeProto (int, float, ints,
// floats, tensor), TensorProto (raw data), ValueInfoProto with static shapes, OperatorSetIdProto.
// Field numbers follow onnx/onnx.proto.

/** ONNX TensorProto.DataType values used here. */
export const OnnxType = { float: 1, int32: 6, int64: 7, float16: 10 } as const;
export type OnnxElemType = (typeof OnnxType)[keyof typeof OnnxType];

/** Appends protobuf fields; nested messages are encoded to bytes first and written length-delimited. */
class Writer {
  private parts: Uint8Array[] = [];
  private length = 0;

  private push(b: Uint8Array): void {
    this.parts.push(b);
    this.length += b.length;
  }
  private varint(v: bigint | number): void {
    const out: number[] = [];
    let x = BigInt.asUintN(64, BigInt(v));
    while (x >= 0x80n) {
      out.push(Number(x & 0x7fn) | 0x80);
      x >>= 7n;
    }
    out.push(Number(x));
    this.push(Uint8Array.from(out));
  }
  private tag(field: number, wire: 0 | 2 | 5): void {
    this.varint((field << 3) | wire);
  }
  int(field: number, v: number | bigint): this {
    this.tag(field, 0);
    this.varint(v);
    return this;
  }
  float(field: number, v: number): this {
    this.tag(field, 5);
    const b = new Uint8Array(4);
    new DataView(b.buffer).setFloat32(0, v, true);
    this.push(b);
    return this;
  }
  bytes(field: number, b: Uint8Array): this {
    this.tag(field, 2);
    this.varint(b.length);
    this.push(b);
    return this;
  }
  string(field: number, s: string): this {
    return this.bytes(field, new TextEncoder().encode(s));
  }
  message(field: number, m: Writer): this {
    return this.bytes(field, m.finish());
  }
  finish(): Uint8Array {
    const out = new Uint8Array(this.length);
    let at = 0;
    for (const p of this.parts) {
      out.set(p, at);
      at += p.length;
    }
    return out;
  }
}

export interface OnnxTensor {
  name: string;
  type: OnnxElemType;
  dims: readonly number[];
  /** Little-endian element bytes (Float32Array, Uint16Array of f16 bits, BigInt64Array, Int32Array). */
  data: ArrayBufferView;
}

export type OnnxAttribute = number | number[] | { floats: number[] } | { float: number } | { tensor: OnnxTensor };

export interface OnnxNode {
  op: string;
  inputs: string[];
  outputs: string[];
  /** Integer attributes as numbers / number[]; floats as { float } / { floats }. */
  attrs?: Record<string, OnnxAttribute>;
  /** Operator domain, e.g. 'com.microsoft'; the default ONNX domain when omitted. */
  domain?: string;
}

export interface OnnxValueInfo {
  name: string;
  type: OnnxElemType;
  dims: readonly number[];
}

export interface OnnxGraph {
  name: string;
  nodes: OnnxNode[];
  inputs: OnnxValueInfo[];
  outputs: OnnxValueInfo[];
  /** Constant weights, stored in the model (not graph inputs). */
  initializers?: OnnxTensor[];
}

function tensorProto(t: OnnxTensor): Writer {
  const w = new Writer();
  for (const d of t.dims) w.int(1, d);
  w.int(2, t.type).string(8, t.name);
  return w.bytes(9, new Uint8Array(t.data.buffer, t.data.byteOffset, t.data.byteLength));
}

function attributeProto(name: string, a: OnnxAttribute): Writer {
  const w = new Writer().string(1, name);
  // AttributeProto.type (field 20): FLOAT 1, INT 2, TENSOR 4, FLOATS 6, INTS 7
  if (typeof a === 'number') return w.int(3, a).int(20, 2);
  if (Array.isArray(a)) {
    for (const v of a) w.int(8, v);
    return w.int(20, 7);
  }
  if ('float' in a) return w.float(2, a.float).int(20, 1);
  if ('floats' in a) {
    for (const v of a.floats) w.float(7, v);
    return w.int(20, 6);
  }
  return w.message(5, tensorProto(a.tensor)).int(20, 4);
}

function nodeProto(n: OnnxNode, index: number): Writer {
  const w = new Writer();
  for (const i of n.inputs) w.string(1, i);
  for (const o of n.outputs) w.string(2, o);
  w.string(3, `${n.op}_${index}`).string(4, n.op);
  for (const [k, v] of Object.entries(n.attrs ?? {})) w.message(5, attributeProto(k, v));
  if (n.domain) w.string(7, n.domain);
  return w;
}

function valueInfoProto(v: OnnxValueInfo): Writer {
  const shape = new Writer();
  for (const d of v.dims) shape.message(1, new Writer().int(1, d)); // Dimension.dim_value
  const tensorType = new Writer().int(1, v.type).message(2, shape); // TypeProto.Tensor
  return new Writer().string(1, v.name).message(2, new Writer().message(1, tensorType));
}

/**
 * Encodes a ModelProto (IR version 8) importing the default ONNX domain at `opset` and, when a node uses it,
 * com.microsoft at version 1.
 */
export function encodeModel(graph: OnnxGraph, opset = 17): Uint8Array {
  const g = new Writer();
  graph.nodes.forEach((n, i) => g.message(1, nodeProto(n, i)));
  g.string(2, graph.name);
  for (const t of graph.initializers ?? []) g.message(5, tensorProto(t));
  for (const v of graph.inputs) g.message(11, valueInfoProto(v));
  for (const v of graph.outputs) g.message(12, valueInfoProto(v));

  const m = new Writer().int(1, 8).string(2, 'freemask-bench');
  m.message(8, new Writer().string(1, '').int(2, opset));
  if (graph.nodes.some((n) => n.domain === 'com.microsoft')) m.message(8, new Writer().string(1, 'com.microsoft').int(2, 1));
  return m.message(7, g).finish();
}
