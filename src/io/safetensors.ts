// safetensors: 8-byte little-endian header length N, N bytes of JSON {name: {dtype, shape, data_offsets}},
// then the data. Reading is tensor by tensor (a multi-GB checkpoint never sits in RAM twice): the header is
// parsed and validated up front, each tensor's bytes are read only when asked for.

import { readBuffer } from '../engine/queue.ts';
import { nodeFs, writeFileAtomic } from './fs.ts';
import { type DType, Tensor, bf16ToF32, f16ToF32, f32ToF16, numel, shapeStr } from '../engine/tensor.ts';

export type SafetensorsDType = 'F64' | 'F32' | 'F16' | 'BF16' | 'I64' | 'I32' | 'I16' | 'I8' | 'U8' | 'U16' | 'U32' | 'U64' | 'BOOL';

const itemSize: Record<SafetensorsDType, number> = {
  F64: 8, F32: 4, F16: 2, BF16: 2, I64: 8, I32: 4, I16: 2, I8: 1, U8: 1, U16: 2, U32: 4, U64: 8, BOOL: 1,
};

export interface TensorInfo {
  name: string;
  dtype: SafetensorsDType;
  shape: number[];
  /** Absolute byte range in the file. */
  begin: number;
  end: number;
}

/** Random access to the bytes of a safetensors source: a file path (Node/Deno) or an in-memory buffer. */
interface ByteSource {
  size: number;
  read(position: number, length: number): Uint8Array;
  close(): void;
}

function fileSource(path: string): ByteSource {
  const fs = nodeFs(`reading ${path}`);
  const fd = fs.openSync(path, 'r');
  const size = fs.fstatSync(fd).size;
  return {
    size,
    read(position, length) {
      const buf = new Uint8Array(length);
      let done = 0;
      while (done < length) {
        const n = fs.readSync(fd, buf, done, length - done, position + done);
        if (n <= 0) throw new Error(`${path}: unexpected end of file reading ${length} bytes at ${position}`);
        done += n;
      }
      return buf;
    },
    close: () => fs.closeSync(fd),
  };
}

function memorySource(data: ArrayBuffer | Uint8Array): ByteSource {
  const bytes = data instanceof Uint8Array ? data : new Uint8Array(data);
  return { size: bytes.byteLength, read: (p, l) => bytes.subarray(p, p + l), close: () => {} };
}

function parseHeader(src: ByteSource, label: string): { infos: Map<string, TensorInfo>; metadata: Record<string, string> } {
  const fail = (msg: string): never => {
    throw new Error(`${label}: not a valid safetensors file: ${msg}`);
  };
  if (src.size < 8) fail(`file is ${src.size} bytes, too short for the 8-byte header length`);
  const lenBytes = src.read(0, 8);
  const n = Number(new DataView(lenBytes.buffer, lenBytes.byteOffset, 8).getBigUint64(0, true));
  if (n > src.size - 8) fail(`header length ${n} is larger than the ${src.size - 8} bytes after the length field`);
  if (n > 100_000_000) fail(`header length ${n} exceeds the 100 MB limit`);
  let header: unknown;
  try {
    header = JSON.parse(new TextDecoder('utf-8', { fatal: true }).decode(src.read(8, n)));
  } catch (e) {
    fail(`header is not JSON (${(e as Error).message})`);
  }
  if (!header || typeof header !== 'object' || Array.isArray(header)) fail('header JSON is not an object');
  const dataStart = 8 + n;
  const dataSize = src.size - dataStart;
  const infos = new Map<string, TensorInfo>();
  let metadata: Record<string, string> = {};
  for (const [name, v] of Object.entries(header as Record<string, unknown>)) {
    if (name === '__metadata__') {
      if (!v || typeof v !== 'object' || Array.isArray(v)) fail('__metadata__ is not an object');
      for (const [k, text] of Object.entries(v as object)) if (typeof text !== 'string') fail(`__metadata__ value '${k}' is not a string`);
      metadata = v as Record<string, string>;
      continue;
    }
    const e = v as { dtype?: unknown; shape?: unknown; data_offsets?: unknown };
    if (!e || typeof e !== 'object') fail(`entry '${name}' is not an object`);
    if (typeof e.dtype !== 'string' || !Object.hasOwn(itemSize, e.dtype)) fail(`tensor '${name}' has unknown dtype ${JSON.stringify(e.dtype)}`);
    const dtype = e.dtype as SafetensorsDType;
    if (!Array.isArray(e.shape) || !e.shape.every((d) => Number.isSafeInteger(d) && d >= 0)) fail(`tensor '${name}' has invalid shape ${JSON.stringify(e.shape)}`);
    const shape = e.shape as number[];
    const off = e.data_offsets;
    if (!Array.isArray(off) || off.length !== 2 || !off.every((d) => Number.isSafeInteger(d) && d >= 0)) {
      fail(`tensor '${name}' has invalid data_offsets ${JSON.stringify(off)}`);
    }
    const [b, en] = off as [number, number];
    if (b > en || en > dataSize) fail(`tensor '${name}' data_offsets [${b}, ${en}] fall outside the ${dataSize} data bytes`);
    const want = numel(shape) * itemSize[dtype];
    if (en - b !== want) fail(`tensor '${name}' (${dtype} ${shapeStr(shape)}) needs ${want} bytes but data_offsets span ${en - b}`);
    infos.set(name, { name, dtype, shape, begin: dataStart + b, end: dataStart + en });
  }
  const sorted = [...infos.values()].filter((i) => i.end > i.begin).sort((a, b) => a.begin - b.begin);
  for (let k = 1; k < sorted.length; k++) {
    if (sorted[k]!.begin < sorted[k - 1]!.end) fail(`tensors '${sorted[k - 1]!.name}' and '${sorted[k]!.name}' overlap`);
  }
  return { infos, metadata };
}

export interface LoadOptions {
  /** Convert F16 tensors to f32 on load (BF16 and F64 always become f32, having no engine dtype). */
  f16ToF32?: boolean;
  /**
   * Tensors to read as f16 whatever their stored float type (converted on the CPU, so an f32 tensor too large
   * for one GPU buffer never needs one).
   */
  asF16?: (name: string) => boolean;
}

/**
 * A safetensors file opened for tensor-by-tensor reading. Map-like: `get(name)` uploads that tensor
 * (a new Tensor each call, owned by the caller), `keys()`, `has()`, `info()`, iteration over [name, Tensor].
 */
export class SafetensorsReader implements Iterable<[string, Tensor]> {
  readonly metadata: Record<string, string>;
  readonly #infos: Map<string, TensorInfo>;
  readonly #src: ByteSource;

  constructor(readonly label: string, src: ByteSource, readonly options: LoadOptions = {}) {
    this.#src = src;
    const { infos, metadata } = parseHeader(src, label);
    this.#infos = infos;
    this.metadata = metadata;
  }

  get size(): number {
    return this.#infos.size;
  }
  has(name: string): boolean {
    return this.#infos.has(name);
  }
  keys(): IterableIterator<string> {
    return this.#infos.keys();
  }
  info(name: string): TensorInfo {
    const i = this.#infos.get(name);
    if (!i) throw new Error(`${this.label}: no tensor named '${name}'`);
    return i;
  }

  /** The tensor's values on the CPU, converted to the engine's dtype. */
  readArray(name: string): { data: Float32Array | Int32Array | Uint32Array | Uint16Array; shape: number[]; dtype: DType } {
    const info = this.info(name);
    const raw = this.#src.read(info.begin, info.end - info.begin);
    const bytes = raw.byteOffset % 8 === 0 ? raw : raw.slice();
    const n = numel(info.shape);
    const dv = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
    const conv = <T extends Float32Array | Int32Array | Uint32Array>(out: T, f: (k: number) => number): T => {
      for (let k = 0; k < n; k++) out[k] = f(k);
      return out;
    };
    const f32 = (f: (k: number) => number) => ({ data: conv(new Float32Array(n), f), shape: info.shape, dtype: 'f32' as const });
    const i32 = (f: (k: number) => number) => {
      const data = conv(new Int32Array(n), (k) => {
        const v = f(k);
        if (v > 2147483647 || v < -2147483648) throw new Error(`${this.label}: tensor '${name}' value ${v} at ${k} does not fit in i32`);
        return v;
      });
      return { data, shape: info.shape, dtype: 'i32' as const };
    };
    switch (info.dtype) {
      case 'F32': return f32((k) => dv.getFloat32(4 * k, true));
      case 'F64': return f32((k) => dv.getFloat64(8 * k, true));
      case 'BF16': return f32((k) => bf16ToF32(dv.getUint16(2 * k, true)));
      case 'F16':
        if (this.options.f16ToF32) return f32((k) => f16ToF32(dv.getUint16(2 * k, true)));
        return { data: Uint16Array.from({ length: n }, (_, k) => dv.getUint16(2 * k, true)), shape: info.shape, dtype: 'f16' };
      case 'I64': return i32((k) => Number(dv.getBigInt64(8 * k, true)));
      case 'U64': return i32((k) => Number(dv.getBigUint64(8 * k, true)));
      case 'I32': return i32((k) => dv.getInt32(4 * k, true));
      case 'I16': return i32((k) => dv.getInt16(2 * k, true));
      case 'I8': return i32((k) => dv.getInt8(k));
      case 'U32': return { data: conv(new Uint32Array(n), (k) => dv.getUint32(4 * k, true)), shape: info.shape, dtype: 'u32' };
      case 'U16': return i32((k) => dv.getUint16(2 * k, true));
      case 'U8': case 'BOOL': return i32((k) => dv.getUint8(k));
    }
  }

  get(name: string): Tensor {
    const { data, shape, dtype } = this.#readForUpload(name);
    const t = Tensor.fromArray(data, shape, dtype);
    t.name = name;
    return t;
  }

  #readForUpload(name: string): ReturnType<SafetensorsReader['readArray']> {
    const read = this.readArray(name);
    if (read.dtype !== 'f32' || !this.options.asF16?.(name)) return read;
    return { ...read, data: Uint16Array.from(read.data, f32ToF16), dtype: 'f16' };
  }

  *entries(): IterableIterator<[string, Tensor]> {
    for (const k of this.#infos.keys()) yield [k, this.get(k)];
  }
  [Symbol.iterator](): IterableIterator<[string, Tensor]> {
    return this.entries();
  }

  close(): void {
    this.#src.close();
  }
}

/** Opens a safetensors file (path) or buffer; the header is validated now, tensors are read on `get`. */
export function loadSafetensors(source: string | ArrayBuffer | Uint8Array, options: LoadOptions = {}): SafetensorsReader {
  if (typeof source === 'string') {
    const src = fileSource(source);
    try {
      return new SafetensorsReader(source, src, options);
    } catch (e) {
      src.close();
      throw e;
    }
  }
  return new SafetensorsReader('<buffer>', memorySource(source), options);
}

/** A raw array to store as-is, for dtypes the engine has no tensor type for (U8, BOOL, I64, F64…). */
export interface RawTensor {
  dtype: SafetensorsDType;
  shape: readonly number[];
  data: ArrayBufferView;
}

const engineToSt: Record<DType, SafetensorsDType> = { f32: 'F32', f16: 'F16', i32: 'I32', u32: 'U32' };

/** Serialises tensors (read back from the GPU) and raw arrays into safetensors bytes. */
export async function encodeSafetensors(record: Record<string, Tensor | RawTensor>, metadata?: Record<string, string>): Promise<Uint8Array> {
  const parts: { name: string; dtype: SafetensorsDType; shape: readonly number[]; bytes: Uint8Array }[] = [];
  for (const [name, v] of Object.entries(record)) {
    if (v instanceof Tensor) {
      let bytes: Uint8Array;
      if (v.dtype === 'f16') {
        bytes = new Uint8Array(await readBuffer(v.buffer, v.byteLength, v.byteOffset));
      } else {
        const a = await v.toArray();
        bytes = new Uint8Array(a.buffer, a.byteOffset, a.byteLength);
      }
      parts.push({ name, dtype: engineToSt[v.dtype], shape: v.shape, bytes });
    } else {
      const want = numel(v.shape) * itemSize[v.dtype];
      if (v.data.byteLength !== want) throw new Error(`saveSafetensors: '${name}' (${v.dtype} ${shapeStr(v.shape)}) needs ${want} bytes, got ${v.data.byteLength}`);
      parts.push({ name, dtype: v.dtype, shape: v.shape, bytes: new Uint8Array(v.data.buffer, v.data.byteOffset, v.data.byteLength) });
    }
  }
  const header: Record<string, unknown> = {};
  if (metadata) header.__metadata__ = metadata;
  let offset = 0;
  for (const p of parts) {
    header[p.name] = { dtype: p.dtype, shape: p.shape, data_offsets: [offset, offset + p.bytes.byteLength] };
    offset += p.bytes.byteLength;
  }
  let json = JSON.stringify(header);
  json += ' '.repeat((8 - (json.length % 8)) % 8);
  const headerBytes = new TextEncoder().encode(json);
  const pad = (8 - (headerBytes.byteLength % 8)) % 8;
  const out = new Uint8Array(8 + headerBytes.byteLength + pad + offset);
  new DataView(out.buffer).setBigUint64(0, BigInt(headerBytes.byteLength + pad), true);
  out.set(headerBytes, 8);
  out.fill(0x20, 8 + headerBytes.byteLength, 8 + headerBytes.byteLength + pad);
  let at = 8 + headerBytes.byteLength + pad;
  for (const p of parts) {
    out.set(p.bytes, at);
    at += p.bytes.byteLength;
  }
  return out;
}

/** Writes a safetensors file atomically (temporary file, then rename): no half-written file is left behind. */
export async function saveSafetensors(path: string, record: Record<string, Tensor | RawTensor>, metadata?: Record<string, string>): Promise<void> {
  writeFileAtomic(path, await encodeSafetensors(record, metadata));
}

/**
 * Rewrites a safetensors file with every F32/F64/BF16 tensor stored as F16 (round to nearest even), other dtypes
 * and the metadata unchanged: shipped weights at half the bytes; loaders convert back to f32.
 */
export async function saveHalfCopy(source: string, destination: string): Promise<void> {
  const reader = loadSafetensors(source);
  try {
    const record: Record<string, RawTensor> = {};
    for (const name of reader.keys()) {
      const info = reader.info(name);
      const a = reader.readArray(name);
      if (a.dtype === 'f32') record[name] = { dtype: 'F16', shape: info.shape, data: Uint16Array.from(a.data, f32ToF16) };
      else record[name] = { dtype: info.dtype === 'F16' ? 'F16' : info.dtype === 'U32' ? 'U32' : 'I32', shape: info.shape, data: a.data as ArrayBufferView };
    }
    writeFileAtomic(destination, await encodeSafetensors(record, Object.keys(reader.metadata).length ? reader.metadata : undefined));
  } finally {
    reader.close();
  }
}
