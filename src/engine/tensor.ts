// Tensors, their GPU storage, the buffer pool and disposal scopes.
//
// Layout choice: every tensor is dense and row-major (contiguous) in its own storage. `reshape` is free
// (a new tensor sharing the storage, reference counted); permute, slice, expand and friends materialise
// with one strided-copy kernel. Kernels therefore never handle arbitrary strides, which keeps each WGSL
// template small; the price is a copy where a view would have done, paid only by layout ops.

import { device, reportDeviceError } from './device.ts';
import { type BufferRange, copyEncoder, destroyAfterSubmit, readBuffer, writeBuffer } from './queue.ts';

export type DType = 'f32' | 'f16' | 'i32' | 'u32';
export type Shape = readonly number[];
export type TypedArrayFor<D extends DType> = D extends 'i32' ? Int32Array : D extends 'u32' ? Uint32Array : Float32Array;
export type TensorData = Float32Array | Int32Array | Uint32Array | Uint16Array | number[];

export const bytesPerElement: Record<DType, number> = { f32: 4, f16: 2, i32: 4, u32: 4 };

export function numel(shape: Shape): number {
  let n = 1;
  for (const d of shape) n *= d;
  return n;
}

export function shapeStr(shape: Shape): string {
  return `[${shape.join(', ')}]`;
}

export function checkShape(shape: Shape, what: string): void {
  for (const d of shape) {
    if (!Number.isInteger(d) || d < 0) throw new Error(`${what}: invalid shape ${shapeStr(shape)} (dimensions must be integers >= 0)`);
  }
}

// ---------------------------------------------------------------- buffer pool & memory stats

const usage = () => GPUBufferUsage.STORAGE | GPUBufferUsage.COPY_SRC | GPUBufferUsage.COPY_DST;
const free = new Map<number, GPUBuffer[]>();
const stats = { liveBytes: 0, peakBytes: 0, pooledBytes: 0, allocations: 0, reuses: 0, constantBytes: 0 };
let poolLimitBytes = 2 * 1024 ** 3;

/** Pool size classes: 256 B minimum, then 8 classes per power of two (at most 12.5% slack). */
function sizeClass(bytes: number): number {
  const b = Math.max(256, Math.ceil(bytes / 4) * 4);
  const step = 2 ** Math.max(8, Math.floor(Math.log2(b)) - 3);
  return Math.ceil(b / step) * step;
}

function acquireBuffer(bytes: number, what: () => string): GPUBuffer {
  const size = sizeClass(bytes);
  stats.liveBytes += size;
  stats.peakBytes = Math.max(stats.peakBytes, stats.liveBytes);
  const list = free.get(size);
  const reused = list?.pop();
  if (reused) {
    stats.pooledBytes -= size;
    stats.reuses++;
    return reused;
  }
  const d = device();
  const limit = Math.min(d.limits.maxStorageBufferBindingSize, d.limits.maxBufferSize);
  if (size > limit) {
    stats.liveBytes -= size;
    throw new Error(
      `cannot allocate ${what()}: it needs ${bytes} bytes, more than this device's limit of ${limit} bytes per buffer ` +
        `(maxStorageBufferBindingSize ${d.limits.maxStorageBufferBindingSize}, maxBufferSize ${d.limits.maxBufferSize})`,
    );
  }
  stats.allocations++;
  d.pushErrorScope('out-of-memory');
  const buffer = d.createBuffer({ size, usage: usage() });
  d.popErrorScope().then((err) => {
    if (err) reportDeviceError(new Error(`GPU out of memory allocating ${what()} (${bytes} bytes): ${err.message}`));
  });
  return buffer;
}

function releaseBuffer(buffer: GPUBuffer): void {
  const size = buffer.size;
  stats.liveBytes -= size;
  if (stats.pooledBytes + size > poolLimitBytes) {
    destroyAfterSubmit(buffer);
    return;
  }
  stats.pooledBytes += size;
  let list = free.get(size);
  if (!list) free.set(size, (list = []));
  list.push(buffer);
}

export interface MemoryStats {
  /** Bytes held by live tensors (pool size classes, so slightly above the sum of tensor sizes). */
  liveBytes: number;
  peakBytes: number;
  /** Bytes of freed buffers kept for reuse. */
  pooledBytes: number;
  allocations: number;
  reuses: number;
  /** Bytes of the engine's cached kernel parameters (`u32Constant`), kept for good and not in liveBytes. */
  constantBytes: number;
}

export function memoryStats(): MemoryStats {
  return { ...stats };
}

export function resetPeakMemory(): void {
  stats.peakBytes = stats.liveBytes;
}

/** Destroys pooled buffers; with a limit, also caps what the pool may keep from now on. */
export function trimPool(limitBytes?: number): void {
  if (limitBytes !== undefined) poolLimitBytes = limitBytes;
  for (const list of free.values()) for (const b of list) destroyAfterSubmit(b);
  free.clear();
  stats.pooledBytes = 0;
}

/** A pooled buffer, or a byte range of another storage's buffer (`within`, held while this lives). */
class Storage {
  refs = 1;
  constructor(readonly buffer: GPUBuffer, readonly offset = 0, readonly within?: Storage) {}
  retain(): this {
    this.refs++;
    return this;
  }
  release(): void {
    if (--this.refs > 0) return;
    if (this.within) this.within.release();
    else releaseBuffer(this.buffer);
  }
}

// ---------------------------------------------------------------- scopes (tidy)

const scopes: Set<Tensor>[] = [];

/**
 * Runs `fn` and disposes every tensor created inside it except those it returns (found in arrays and
 * plain objects of the result), which move to the enclosing scope. Like tf.tidy; `fn` must be synchronous.
 */
export function tidy<T>(fn: () => T): T {
  const scope = new Set<Tensor>();
  scopes.push(scope);
  let result: T;
  try {
    result = fn();
  } finally {
    scopes.pop();
  }
  if (result instanceof Promise) throw new Error('tidy(fn): fn must be synchronous (it returned a Promise)');
  const kept = new Set<Tensor>();
  collectTensors(result, kept);
  for (const t of scope) if (!kept.has(t)) t.dispose();
  const parent = scopes[scopes.length - 1];
  if (parent) for (const t of kept) if (scope.has(t)) parent.add(t);
  return result;
}

/** Exempts a tensor from the enclosing scopes' disposal. */
export function keep<T extends Tensor>(t: T): T {
  for (const s of scopes) s.delete(t);
  return t;
}

function collectTensors(v: unknown, out: Set<Tensor>): void {
  if (v instanceof Tensor) out.add(v);
  else if (Array.isArray(v)) for (const x of v) collectTensors(x, out);
  else if (v instanceof Map) for (const x of v.values()) collectTensors(x, out);
  else if (v && typeof v === 'object' && Object.getPrototypeOf(v) === Object.prototype) {
    for (const x of Object.values(v)) collectTensors(x, out);
  }
}

// ---------------------------------------------------------------- autograd node (the tape entry)

/**
 * The backward of one op. `inputs[i]` is where the gradient for the op's i-th input goes: the producing
 * node, a leaf tensor that wants a gradient, or null. Nodes are reference counted: their output tensor and
 * every consumer node hold one reference; saved tensors are kept alive until the node is released.
 */
export class GradNode {
  refs = 1;
  released = false;
  constructor(
    readonly op: string,
    public inputs: (GradNode | Tensor | null)[],
    public backward: ((grad: Tensor, saved: Tensor[]) => (Tensor | null)[]) | undefined,
    public saved: Tensor[],
  ) {
    for (const i of inputs) if (i instanceof GradNode) i.refs++;
  }
  release(): void {
    if (--this.refs > 0 || this.released) return;
    this.free();
  }
  /** Drops saved tensors and edges now (after backward, or on last release). */
  free(): void {
    if (this.released) return;
    this.released = true;
    for (const s of this.saved) s.dispose();
    this.saved = [];
    const inputs = this.inputs;
    this.inputs = [];
    this.backward = undefined;
    for (const i of inputs) if (i instanceof GradNode) i.release();
  }
}

// ---------------------------------------------------------------- Tensor

export class Tensor {
  readonly shape: Shape;
  readonly dtype: DType;
  /** Gradient accumulated by `backward()` for tensors with `requiresGrad`. */
  grad: Tensor | undefined;
  /** The op that produced this tensor, when it was recorded for autograd. */
  node: GradNode | undefined;
  /** A label used in error messages and by modules (parameter name). */
  name: string | undefined;
  #requiresGrad = false;
  #storage: Storage | undefined;

  /** Low-level: wraps storage. Use the factories (`fromArray`, `empty`, `zeros`) or ops instead. */
  constructor(shape: Shape, dtype: DType, storage: Storage) {
    this.shape = Object.freeze([...shape]);
    this.dtype = dtype;
    this.#storage = storage;
    scopes[scopes.length - 1]?.add(this);
  }

  /** An uninitialised tensor from the pool. */
  static empty(shape: Shape, dtype: DType = 'f32'): Tensor {
    checkShape(shape, 'Tensor.empty');
    const bytes = numel(shape) * bytesPerElement[dtype];
    return new Tensor(shape, dtype, new Storage(acquireBuffer(bytes, () => `a ${dtype} tensor of shape ${shapeStr(shape)}`)));
  }

  static zeros(shape: Shape, dtype: DType = 'f32'): Tensor {
    const t = Tensor.empty(shape, dtype);
    copyEncoder().clearBuffer(t.buffer);
    return t;
  }

  /** Uploads `data` (any typed array or number[]) as a tensor of `shape`; dtype defaults from the array type. */
  static fromArray(data: TensorData, shape?: Shape, dtype?: DType): Tensor {
    const dt: DType = dtype ?? (data instanceof Int32Array ? 'i32' : data instanceof Uint32Array ? 'u32' : data instanceof Uint16Array ? 'f16' : 'f32');
    const shp = shape ?? [data.length];
    checkShape(shp, 'Tensor.fromArray');
    if (numel(shp) !== data.length) {
      throw new Error(`Tensor.fromArray: ${data.length} values do not fill shape ${shapeStr(shp)} (${numel(shp)} elements)`);
    }
    const t = Tensor.empty(shp, dt);
    if (data.length > 0) writeBuffer(t.buffer, toTypedArray(data, dt));
    return t;
  }

  static scalar(value: number, dtype: DType = 'f32'): Tensor {
    return Tensor.fromArray([value], [], dtype);
  }

  get size(): number {
    return numel(this.shape);
  }
  get rank(): number {
    return this.shape.length;
  }
  get byteLength(): number {
    return this.size * bytesPerElement[this.dtype];
  }
  get disposed(): boolean {
    return this.#storage === undefined;
  }
  get buffer(): GPUBuffer {
    return this.#live().buffer;
  }
  /** Where this tensor starts in `buffer` (non-zero only for tensors placed inside another's storage). */
  get byteOffset(): number {
    return this.#live().offset;
  }
  /** The buffer range a kernel binds: the whole buffer, or this tensor's bytes of a shared one. */
  get binding(): BufferRange {
    const s = this.#live();
    return { buffer: s.buffer, offset: s.offset, size: s.within ? Math.max(4, Math.ceil(this.byteLength / 4) * 4) : undefined };
  }
  #live(): Storage {
    if (!this.#storage) throw new Error(`tensor${this.name ? ` '${this.name}'` : ''} ${shapeStr(this.shape)} was used after dispose()`);
    return this.#storage;
  }

  /**
   * Low-level: a tensor of `shape` over bytes [byteOffset, …) of this one's storage (no copy), which it keeps
   * alive. `byteOffset` must be a multiple of the device's minStorageBufferOffsetAlignment, so kernels can
   * bind it. For packing many tensors into one buffer (the optimizer's flat parameters and state).
   */
  view(byteOffset: number, shape: Shape, dtype: DType = this.dtype): Tensor {
    checkShape(shape, 'Tensor.view');
    const s = this.#live();
    const align = device().limits.minStorageBufferOffsetAlignment;
    const bytes = numel(shape) * bytesPerElement[dtype];
    if (byteOffset % align !== 0 || byteOffset < 0 || byteOffset + bytes > this.byteLength) {
      throw new Error(`view: bytes [${byteOffset}, ${byteOffset + bytes}) of ${this} must lie inside it and start at a multiple of ${align}`);
    }
    return new Tensor(shape, dtype, new Storage(s.buffer, s.offset + byteOffset, s.retain()));
  }

  /**
   * Low-level: copies this tensor's values into `target` (a view of the same shape and dtype) and makes this
   * tensor use `target`'s storage from now on, so whoever holds this tensor (a module, an optimizer) reads and
   * writes the shared buffer. Aliases made earlier keep the old storage.
   */
  moveInto(target: Tensor): void {
    if (target.dtype !== this.dtype || target.shape.join() !== this.shape.join()) throw new Error(`moveInto: ${target} does not match ${this}`);
    target.copyFrom(this);
    const old = this.#live();
    this.#storage = target.#live().retain();
    old.release();
  }

  /** True for leaves that asked for gradients and for results of recorded ops on them. */
  get requiresGrad(): boolean {
    return this.#requiresGrad || (this.node !== undefined && !this.node.released);
  }
  set requiresGrad(v: boolean) {
    if (v && this.dtype !== 'f32') throw new Error(`only f32 tensors can require gradients (this one is ${this.dtype})`);
    this.#requiresGrad = v;
  }
  /** Sets requiresGrad and returns this, for chaining. */
  requireGrad(v = true): this {
    this.requiresGrad = v;
    return this;
  }

  /** A new tensor sharing this one's storage (no copy), with no autograd history. */
  alias(shape: Shape = this.shape): Tensor {
    if (numel(shape) !== this.size) throw new Error(`alias: shape ${shapeStr(shape)} does not match ${shapeStr(this.shape)}`);
    if (!this.#storage) throw new Error('alias of a disposed tensor');
    return new Tensor(shape, this.dtype, this.#storage.retain());
  }

  /**
   * Overwrites this tensor's values with `src`'s (same dtype and element count), in place: every tensor
   * sharing this storage sees them. For loading weights and optimizer state into existing tensors.
   */
  copyFrom(src: Tensor): this {
    if (src.dtype !== this.dtype || src.size !== this.size) {
      throw new Error(`copyFrom: cannot copy ${src} into ${this} (dtype and element count must match)`);
    }
    // Buffers are allocated in 4-byte multiples, so rounding up an odd f16 length stays inside both.
    const bytes = Math.ceil(this.byteLength / 4) * 4;
    if (bytes > 0 && (src.buffer !== this.buffer || src.byteOffset !== this.byteOffset)) {
      copyEncoder().copyBufferToBuffer(src.buffer, src.byteOffset, this.buffer, this.byteOffset, bytes);
    }
    return this;
  }

  /** Reads the values back: Float32Array for f32 and f16 (decoded), Int32Array / Uint32Array otherwise. */
  async toArray(): Promise<TypedArrayFor<this['dtype']>> {
    const raw = await readBuffer(this.buffer, this.byteLength, this.byteOffset);
    switch (this.dtype) {
      case 'f32':
        return new Float32Array(raw) as TypedArrayFor<this['dtype']>;
      case 'i32':
        return new Int32Array(raw) as TypedArrayFor<this['dtype']>;
      case 'u32':
        return new Uint32Array(raw) as TypedArrayFor<this['dtype']>;
      case 'f16':
        return Float32Array.from(new Uint16Array(raw), f16ToF32) as TypedArrayFor<this['dtype']>;
    }
  }

  /** A single value (for scalars and one-element tensors). */
  async item(): Promise<number> {
    if (this.size !== 1) throw new Error(`item(): tensor has shape ${shapeStr(this.shape)}, not one element`);
    return (await this.toArray())[0]!;
  }

  /** Frees the storage (when no alias or autograd node still holds it) and this tensor's graph. */
  dispose(): void {
    if (!this.#storage) return;
    this.#storage.release();
    this.#storage = undefined;
    // Backward closures ask inputs whether they need a gradient; an intermediate disposed by tidy must
    // still answer as it did when the op ran.
    this.#requiresGrad = this.requiresGrad;
    this.node?.release();
    this.node = undefined;
    this.grad?.dispose();
    this.grad = undefined;
    for (const s of scopes) s.delete(this);
  }

  toString(): string {
    return `Tensor(${shapeStr(this.shape)}, ${this.dtype}${this.name ? `, ${this.name}` : ''})`;
  }
}

function toTypedArray(data: TensorData, dtype: DType): ArrayBufferView {
  switch (dtype) {
    case 'f32':
      return data instanceof Float32Array ? data : Float32Array.from(data as ArrayLike<number>);
    case 'i32':
      return data instanceof Int32Array ? data : Int32Array.from(data as ArrayLike<number>);
    case 'u32':
      return data instanceof Uint32Array ? data : Uint32Array.from(data as ArrayLike<number>);
    case 'f16':
      // A Uint16Array is taken as raw half-precision bits; anything else is converted from numbers.
      return data instanceof Uint16Array ? data : Uint16Array.from(data as ArrayLike<number>, f32ToF16);
  }
}

// ---------------------------------------------------------------- half-precision conversion (CPU side)

const f32buf = new Float32Array(1);
const u32buf = new Uint32Array(f32buf.buffer);

/** Kernel parameters read at run time (sizes, strides): one kept u32 tensor per distinct list of values. */
const u32Constants = new Map<string, Tensor>();

/** The bits of `v` as an f32, for passing a float through a u32Constant (`bitcast<f32>` in WGSL). */
export function f32Bits(v: number): number {
  return new Uint32Array(Float32Array.of(v).buffer)[0]!;
}

export function u32Constant(values: readonly number[]): Tensor {
  const key = values.join(',');
  let t = u32Constants.get(key);
  if (!t) {
    u32Constants.set(key, (t = keep(Tensor.fromArray(Uint32Array.from(values), [values.length], 'u32'))));
    // a cache entry like a compiled pipeline, not a tensor anyone holds: counted apart from liveBytes
    stats.liveBytes -= t.buffer.size;
    stats.constantBytes += t.buffer.size;
  }
  return t;
}

export function f16ToF32(h: number): number {
  const s = h & 0x8000 ? -1 : 1;
  const e = (h >> 10) & 0x1f;
  const m = h & 0x3ff;
  if (e === 0) return s * m * 2 ** -24;
  if (e === 31) return m ? NaN : s * Infinity;
  return s * (1 + m / 1024) * 2 ** (e - 15);
}

/** Round-to-nearest-even float32 → float16 bits. */
export function f32ToF16(v: number): number {
  f32buf[0] = v;
  const x = u32buf[0]!;
  const sign = (x >>> 16) & 0x8000;
  const exp = (x >>> 23) & 0xff;
  let mant = x & 0x7fffff;
  if (exp === 0xff) return sign | 0x7c00 | (mant ? 0x200 : 0);
  let e = exp - 127 + 15;
  if (e >= 31) return sign | 0x7c00;
  if (e <= 0) {
    if (e < -10) return sign;
    mant |= 0x800000;
    const shift = 14 - e;
    const half = 1 << (shift - 1);
    let r = mant >> shift;
    const rest = mant & ((1 << shift) - 1);
    if (rest > half || (rest === half && r & 1)) r++;
    return sign | r;
  }
  let r = mant >> 13;
  const rest = mant & 0x1fff;
  if (rest > 0x1000 || (rest === 0x1000 && r & 1)) {
    r++;
    if (r === 0x400) {
      r = 0;
      e++;
      if (e >= 31) return sign | 0x7c00;
    }
  }
  return sign | (e << 10) | r;
}

export function bf16ToF32(b: number): number {
  u32buf[0] = b << 16;
  return f32buf[0]!;
}
