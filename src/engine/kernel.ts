// Kernel launching: a kernel is a WGSL template (a TS function) specialised by dtype and attributes, and by
// shape unless it reads its sizes at run time (products, convolutions, reductions and optimizer updates do:
// llvmpipe JIT-compiles every pipeline at its first dispatch). The specialisation key names the pipeline in
// a cache, so each distinct key compiles once. Bindings are
// generated from the tensors passed in (inputs read-only, then outputs read-write), so a template never
// declares them by hand and can't get their order or types wrong.

import { device, reportDeviceError } from './device.ts';
import { bindGroupFor, recordDispatch } from './queue.ts';
import { type DType, type Shape, type Tensor, shapeStr } from './tensor.ts';

export interface KernelCall {
  /** Kernel family and variant, e.g. `unary.relu`; used in pipeline labels, errors and profiles. */
  name: string;
  /** Everything the WGSL depends on besides binding dtypes (shapes, attributes). */
  key: string;
  inputs: Record<string, Tensor>;
  outputs: Record<string, Tensor>;
  workgroups: readonly [number, number?, number?];
  /**
   * Float bindings to declare as arrays of four-element vectors (vec4f, or vec4h for f16): the kernel then
   * reads/writes four elements at a time.
   */
  vec4?: readonly string[];
  /**
   * Bind f16 tensors as packed u32 pairs (two elements per word, `unpack2x16float`), which needs no device
   * feature; for kernels that convert f16 on devices without `shader-f16`. By default an f16 tensor binds as
   * array<f16> and needs `shader-f16`.
   */
  packedHalf?: boolean;
  /** The WGSL calls subgroup built-ins (the caller checked that the device has `subgroups`). */
  subgroups?: boolean;
  /** Builds the WGSL body; `bindings` holds the generated declarations to put at its top. */
  wgsl: (bindings: string) => string;
}

const pipelines = new Map<string, GPUComputePipeline>();
const byCode = new Map<string, GPUComputePipeline>();

/** Distinct compiled pipelines and the specialisation keys that map to them. */
export function pipelineStats(): { pipelines: number; keys: number } {
  return { pipelines: byCode.size, keys: pipelines.size };
}

/**
 * Whether the device computes with f16 in shaders (`shader-f16`), so that f16 tensors can be inputs and
 * outputs of the floating-point ops (storage in f16, arithmetic in f32).
 */
export function hasShaderF16(): boolean {
  return device().features.has('shader-f16');
}

/**
 * The binding declarations, each followed by `alias <name>_t = <element type>;` so that a template stores
 * `out[i] = out_t(v)` whatever the dtype, and reads floats as `f32(x[i])` / `vec4f(x[i])`.
 */
function bindingDecls(call: KernelCall): string {
  let i = 0;
  const lines: string[] = [];
  const type = (name: string, t: Tensor) => {
    if (t.dtype === 'f16' && call.packedHalf) return 'u32';
    if (!call.vec4?.includes(name)) return t.dtype;
    if (t.dtype !== 'f32' && t.dtype !== 'f16') throw new Error(`kernel ${call.name}: binding ${name} is ${t.dtype}; only f32 and f16 bind as vectors`);
    return t.dtype === 'f16' ? 'vec4h' : 'vec4f';
  };
  const declare = (name: string, t: Tensor, access: string) => {
    const ty = type(name, t);
    lines.push(`@group(0) @binding(${i++}) var<storage, ${access}> ${name}: array<${ty}>;`, `alias ${name}_t = ${ty};`);
  };
  for (const [name, t] of Object.entries(call.inputs)) declare(name, t, 'read');
  for (const [name, t] of Object.entries(call.outputs)) declare(name, t, 'read_write');
  return lines.join('\n');
}

function pipelineFor(call: KernelCall): GPUComputePipeline {
  const dtypes = [...Object.values(call.inputs), ...Object.values(call.outputs)].map((t) => t.dtype).join(',');
  const cacheKey = `${call.name}|${call.key}|${dtypes}|${call.vec4?.join(',') ?? ''}|${call.subgroups ? 'sg' : ''}`;
  let p = pipelines.get(cacheKey);
  if (p) return p;
  const d = device();
  const halfBindings = [...Object.entries(call.inputs), ...Object.entries(call.outputs)].filter(([, t]) => t.dtype === 'f16' && !call.packedHalf);
  if (halfBindings.length > 0 && !hasShaderF16()) {
    throw new Error(`kernel ${call.name}: f16 ${halfBindings.map(([n, t]) => `${n} ${shapeStr(t.shape)}`).join(', ')} needs the adapter's shader-f16 feature, which this device lacks (cast to f32 first)`);
  }
  // `enable` must precede every declaration, so it goes first whatever the template puts before its bindings
  const enables = [...(halfBindings.length > 0 ? ['enable f16;'] : []), ...(call.subgroups ? ['enable subgroups;'] : [])];
  const code = `${enables.map((e) => `${e}\n`).join('')}${call.wgsl(bindingDecls(call))}`;
  // kernels specialised differently can generate the same WGSL: compile each text once
  const same = byCode.get(code);
  if (same) {
    pipelines.set(cacheKey, same);
    return same;
  }
  d.pushErrorScope('validation');
  const module = d.createShaderModule({ code, label: call.name });
  p = d.createComputePipeline({ layout: 'auto', compute: { module, entryPoint: 'main' }, label: `${call.name} ${call.key}` });
  d.popErrorScope().then((err) => {
    if (err) {
      pipelines.delete(cacheKey);
      byCode.delete(code);
      reportDeviceError(new Error(`kernel ${call.name} (${call.key}) failed to compile: ${err.message}\n${numbered(code)}`));
    }
  });
  pipelines.set(cacheKey, p);
  byCode.set(code, p);
  return p;
}

function numbered(code: string): string {
  return code.split('\n').map((l, i) => `${String(i + 1).padStart(4)}| ${l}`).join('\n');
}

/** Records one dispatch of a specialised kernel. */
export function launch(call: KernelCall): void {
  const tensors = [...Object.values(call.inputs), ...Object.values(call.outputs)];
  const [x, y = 1, z = 1] = call.workgroups;
  if (x === 0 || y === 0 || z === 0) return;
  const max = device().limits.maxComputeWorkgroupsPerDimension;
  if (x > max || y > max || z > max) {
    throw new Error(`kernel ${call.name}: ${x}×${y}×${z} workgroups exceed the device limit of ${max} per dimension`);
  }
  const pipeline = pipelineFor(call);
  recordDispatch(call.name, pipeline, bindGroupFor(pipeline, tensors.map((t) => t.binding)), [x, y, z]);
}

// ---------------------------------------------------------------- WGSL helpers shared by templates

/** A JS number as a WGSL f32 literal. */
export function f32(v: number): string {
  // WGSL constants can't be infinite or NaN; ±Infinity become ±FLT_MAX, which every finite value passes.
  if (Number.isNaN(v)) throw new Error('f32(): NaN has no WGSL literal');
  if (!Number.isFinite(v)) return v > 0 ? '3.4028234663852886e38f' : '-3.4028234663852886e38f';
  const s = String(v);
  return /[.eE]/.test(s) ? `${s}f` : `${s}.0f`;
}

export const workgroupSize = 256;

/**
 * A 1-D launch over `n` threads that may exceed 65535 workgroups: returns the dispatch size and a WGSL
 * prelude that defines `i` (the flat thread index) and returns early past `n`, or past `bound` (a WGSL
 * expression holding n at run time, so that one pipeline serves every n).
 */
export function grid1d(n: number, wg = workgroupSize, bound?: string): { workgroups: [number, number]; main: string } {
  const groups = Math.max(1, Math.ceil(n / wg));
  const max = 65535;
  const x = Math.min(groups, max);
  const y = Math.ceil(groups / x);
  // with a run-time bound nothing in the WGSL depends on n: the row stride comes from num_workgroups
  return {
    workgroups: [x, y],
    main: bound
      ? `@compute @workgroup_size(${wg})
fn main(@builtin(global_invocation_id) gid: vec3u, @builtin(num_workgroups) groups: vec3u) {
  let i = gid.x + gid.y * groups.x * ${wg}u;
  if (i >= ${bound}) { return; }`
      : `@compute @workgroup_size(${wg})
fn main(@builtin(global_invocation_id) gid: vec3u) {
  let i = gid.x + gid.y * ${x * wg}u;
  if (i >= ${n}u) { return; }`,
  };
}

/** Row-major strides of a shape. */
export function stridesOf(shape: Shape): number[] {
  const s = new Array<number>(shape.length);
  let acc = 1;
  for (let d = shape.length - 1; d >= 0; d--) {
    s[d] = acc;
    acc *= shape[d]!;
  }
  return s;
}

/**
 * WGSL that splits flat index `index` over `shape` into coordinates `${prefix}0..` (u32 lets),
 * and the expression of the offset of those coordinates under `strides` (0 strides broadcast).
 */
export function unravel(shape: Shape, index: string, prefix = 'c'): string {
  const st = stridesOf(shape);
  return shape
    .map((d, k) => `let ${prefix}${k} = (${index} / ${st[k]}u) % ${d}u;`)
    .join('\n  ');
}

export function offsetExpr(strides: readonly number[], prefix = 'c'): string {
  const terms = strides.flatMap((s, k) => (s === 0 ? [] : [s === 1 ? `${prefix}${k}` : `${prefix}${k} * ${s}u`]));
  return terms.length ? terms.join(' + ') : '0u';
}

/** Strides that read `shape` broadcast against `outShape` (right-aligned, 0 where broadcast). */
export function broadcastStrides(shape: Shape, outShape: Shape): number[] {
  const st = stridesOf(shape);
  const lead = outShape.length - shape.length;
  return outShape.map((d, k) => {
    const j = k - lead;
    if (j < 0 || shape[j] === 1) return 0;
    return st[j]!;
  });
}

/** The broadcast of two shapes (NumPy rules), naming `op` in the error. */
export function broadcastShapes(op: string, a: Shape, b: Shape): number[] {
  const n = Math.max(a.length, b.length);
  const out: number[] = [];
  for (let k = 0; k < n; k++) {
    const da = a[a.length - n + k] ?? 1;
    const db = b[b.length - n + k] ?? 1;
    if (da !== db && da !== 1 && db !== 1) {
      throw new Error(`${op}: shapes ${shapeStr(a)} and ${shapeStr(b)} do not broadcast (dimension ${k}: ${da} vs ${db})`);
    }
    out.push(da === 1 ? db : da);
  }
  return out;
}

/** Throws unless `t` broadcasts to `shape` without growing it; the error names `op` and `t` (as `what`). */
export function expectBroadcastsTo(op: string, what: string, t: Tensor, shape: Shape): void {
  const lead = shape.length - t.rank;
  if (lead < 0 || t.shape.some((d, k) => d !== 1 && d !== shape[lead + k])) {
    throw new Error(`${op}: ${what} of shape ${shapeStr(t.shape)} does not broadcast to ${shapeStr(shape)}`);
  }
}

/** Normalises a possibly negative axis for a tensor of `rank`, naming `op` in the error. */
export function axis(op: string, dim: number, rank: number): number {
  const a = dim < 0 ? dim + rank : dim;
  if (!Number.isInteger(a) || a < 0 || a >= Math.max(rank, 1)) {
    throw new Error(`${op}: dim ${dim} is out of range for a tensor of rank ${rank}`);
  }
  return a;
}

export function expectDType(op: string, t: Tensor, ...dtypes: DType[]): void {
  if (!dtypes.includes(t.dtype)) {
    throw new Error(`${op}: expected a ${dtypes.join(' or ')} tensor, got ${t.dtype} ${shapeStr(t.shape)}`);
  }
}

/**
 * Checks that `t` is floating: f32, or f16 (stored in f16, computed in f32; the launcher refuses f16 on a
 * device without shader-f16, naming the kernel).
 */
export function expectFloat(op: string, t: Tensor): void {
  expectDType(op, t, 'f32', 'f16');
}

/** WGSL: the value `expr` read from a binding of `t`, as f32 when `t` is f16 (other dtypes unchanged). */
export function asF32(t: Tensor, expr: string): string {
  return t.dtype === 'f16' ? `f32(${expr})` : expr;
}

export function expectRank(op: string, what: string, t: Tensor, rank: number): void {
  if (t.rank !== rank) throw new Error(`${op}: ${what} must have rank ${rank}, got shape ${shapeStr(t.shape)}`);
}

/**
 * WGSL that compacts, per round, the candidates (one per thread `t` of a workgroup of `n`) that hit into a
 * list in candidate order. `declarations` go at module scope (workgroup arrays hits, listPos, listPoint);
 * `compact(hit, pos, point)` (u32 0/1, vec2f, u32 expressions) must be reached by every thread (it has
 * barriers): an inclusive prefix sum of the hit flags gives each hit its slot, and afterwards `count` holds
 * the list's length, listPos[0..count) and listPoint[0..count) the hits' positions and ids.
 */
export function workgroupCompaction(n: number): { declarations: string; compact: (hit: string, pos: string, point: string) => string } {
  return {
    declarations: `var<workgroup> hits: array<u32, ${n}>;
var<workgroup> listPos: array<vec2f, ${n}>;
var<workgroup> listPoint: array<u32, ${n}>;`,
    compact: (hit, pos, point) => `hits[t] = ${hit};
    workgroupBarrier();
    for (var step = 1u; step < ${n}u; step <<= 1u) {
      var below = 0u;
      if (t >= step) { below = hits[t - step]; }
      workgroupBarrier();
      hits[t] += below;
      workgroupBarrier();
    }
    if (${hit} == 1u) {
      listPos[hits[t] - 1u] = ${pos};
      listPoint[hits[t] - 1u] = ${point};
    }
    let count = hits[${n - 1}u];
    workgroupBarrier();`,
  };
}
