// Batches dispatches into few submits. Every op records into one open command encoder (one compute pass
// for consecutive dispatches); the batch is submitted when data must cross to the CPU, when an upload must
// be ordered after it, or when it grows long. Validation errors are captured per batch and re-thrown at the
// next sync point naming the kernels in that batch.

import { device, reportDeviceError, throwPendingDeviceError } from './device.ts';

const maxDispatchesPerSubmit = 128;

let encoder: GPUCommandEncoder | undefined;
let pass: GPUComputePassEncoder | undefined;
let batchKernels: string[] = [];

// ---- optional per-dispatch timing (timestamp queries), aggregated by kernel name ----
interface ProfileEntry { calls: number; totalMs: number }
const profile = new Map<string, ProfileEntry>();
let profiling = false;
let querySet: GPUQuerySet | undefined;
let queryNames: string[] = [];
const queryCapacity = 512; // timestamps: two per dispatch
const pendingReads: Promise<void>[] = [];

export function setProfiling(on: boolean): void {
  if (on && !device().features.has('timestamp-query')) {
    throw new Error('profiling needs the timestamp-query feature, which this adapter does not offer');
  }
  flush();
  profiling = on;
}

/** Per-kernel GPU time since the last reset, sorted by total time (waits for outstanding timings). */
export async function profileReport(): Promise<{ kernel: string; calls: number; totalMs: number; meanMs: number }[]> {
  flush();
  await Promise.all(pendingReads.splice(0));
  return [...profile.entries()]
    .map(([kernel, e]) => ({ kernel, calls: e.calls, totalMs: e.totalMs, meanMs: e.totalMs / e.calls }))
    .sort((a, b) => b.totalMs - a.totalMs);
}

export function resetProfile(): void {
  profile.clear();
}

function commandEncoder(): GPUCommandEncoder {
  encoder ??= device().createCommandEncoder();
  return encoder;
}

/** Records one compute dispatch into the current batch. */
export function recordDispatch(
  name: string,
  pipeline: GPUComputePipeline,
  bindGroup: GPUBindGroup,
  workgroups: readonly [number, number, number],
): void {
  throwPendingDeviceError();
  if (profiling) {
    if (queryNames.length * 2 >= queryCapacity) flush();
    const d = device();
    querySet ??= d.createQuerySet({ type: 'timestamp', count: queryCapacity });
    const i = queryNames.length;
    queryNames.push(name);
    endPass();
    const p = commandEncoder().beginComputePass({
      timestampWrites: { querySet, beginningOfPassWriteIndex: 2 * i, endOfPassWriteIndex: 2 * i + 1 },
    });
    p.setPipeline(pipeline);
    p.setBindGroup(0, bindGroup);
    p.dispatchWorkgroups(workgroups[0], workgroups[1], workgroups[2]);
    p.end();
  } else {
    pass ??= commandEncoder().beginComputePass();
    pass.setPipeline(pipeline);
    pass.setBindGroup(0, bindGroup);
    pass.dispatchWorkgroups(workgroups[0], workgroups[1], workgroups[2]);
  }
  batchKernels.push(name);
  if (batchKernels.length >= maxDispatchesPerSubmit) flush();
}

function endPass(): void {
  pass?.end();
  pass = undefined;
}

/** Buffers to destroy once the batch that may still use them is submitted. */
let doomed: GPUBuffer[] = [];

/**
 * Destroys `buffer` once the work recorded so far is submitted: a buffer destroyed while an unsubmitted
 * command still names it makes the whole submit fail. Work already submitted completes either way.
 */
export function destroyAfterSubmit(buffer: GPUBuffer): void {
  forgetBindGroups(buffer);
  if (encoder) doomed.push(buffer);
  else buffer.destroy();
}

// ---- bind groups, cached by pipeline and bound buffer ranges ----
// Creating a bind group costs more than recording the dispatch itself (about 15 µs of a tiny op's 20 µs on
// Dawn + lavapipe), and pooled buffers come back in the same order every training step or denoising step,
// so the same (pipeline, buffers) groups recur. A group dies with any buffer it names.

/** A binding: a buffer, or a byte range of one. */
export interface BufferRange {
  buffer: GPUBuffer;
  offset: number;
  size: number | undefined;
}

const bufferIds = new WeakMap<GPUBuffer, number>();
let nextId = 1;
const idOf = (o: GPUBuffer) => {
  let id = bufferIds.get(o);
  if (id === undefined) bufferIds.set(o, (id = nextId++));
  return id;
};
const pipelineIds = new WeakMap<GPUComputePipeline, { id: number; layout: GPUBindGroupLayout }>();
const bindGroups = new Map<string, { group: GPUBindGroup; buffers: number[] }>();
const groupsOfBuffer = new Map<number, Set<string>>();
const maxBindGroups = 8192;

// Bind groups have no destroy(): one lives until the garbage collector finalizes it, and V8 does not see what it
// holds. On lavapipe each live group holds a memory mapping (Dawn recycles a finalized group's descriptor memory
// but never returns it), and a process may have 65530 mappings (vm.max_map_count) before the driver crashes.
// Cached groups outlive V8's young generation, so dropped ones wait for a major collection, which V8 may not
// run for tens of thousands of them: the test suite crashed so on a machine with a larger heap. So groups are
// counted from creation to finalization, and a collection is forced when too many are alive.
let liveBindGroups = 0;
let createdSinceCollection = 0;
// at most this many dropped groups wait for a collection (each forced collection costs tens of milliseconds)
const collectEvery = 2048;
const finalizedGroups = new FinalizationRegistry<null>(() => liveBindGroups--);
let collectGarbage: (() => void) | null | undefined;

/** V8's full collection where the runtime lets us have it (Node), else null. */
function garbageCollector(): (() => void) | null {
  const proc = (globalThis as { process?: { getBuiltinModule?: (name: string) => unknown } }).process;
  const v8 = proc?.getBuiltinModule?.('node:v8') as { setFlagsFromString(flags: string): void } | undefined;
  const vm = proc?.getBuiltinModule?.('node:vm') as { runInNewContext(code: string): unknown } | undefined;
  if (!v8 || !vm) return null;
  v8.setFlagsFromString('--expose-gc');
  return vm.runInNewContext('gc') as () => void;
}

function countBindGroup(group: GPUBindGroup): void {
  finalizedGroups.register(group, null);
  liveBindGroups++;
  // finalizers run after the collection, so the live count lags: collect at most once per collectEvery created
  if (++createdSinceCollection < collectEvery || liveBindGroups <= maxBindGroups + collectEvery) return;
  createdSinceCollection = 0;
  collectGarbage ??= garbageCollector();
  collectGarbage?.();
}

/** Bind groups created and not yet finalized (cached ones included). */
export function liveBindGroupCount(): number {
  return liveBindGroups;
}

/** The bind group of `pipeline` over `ranges` (bindings 0, 1, … in order), from the cache when it was made before. */
export function bindGroupFor(pipeline: GPUComputePipeline, ranges: readonly BufferRange[]): GPUBindGroup {
  let p = pipelineIds.get(pipeline);
  if (!p) pipelineIds.set(pipeline, (p = { id: nextId++, layout: pipeline.getBindGroupLayout(0) }));
  let key = String(p.id);
  for (const r of ranges) key += r.size === undefined ? `,${idOf(r.buffer)}` : `,${idOf(r.buffer)}+${r.offset}:${r.size}`;
  const hit = bindGroups.get(key);
  if (hit) {
    // most recently used last, so the eviction below drops the least recently used
    bindGroups.delete(key);
    bindGroups.set(key, hit);
    return hit.group;
  }
  const group = device().createBindGroup({
    layout: p.layout,
    entries: ranges.map((r, i) => ({ binding: i, resource: r.size === undefined ? { buffer: r.buffer } : { buffer: r.buffer, offset: r.offset, size: r.size } })),
  });
  countBindGroup(group);
  const buffers = ranges.map((r) => idOf(r.buffer));
  bindGroups.set(key, { group, buffers });
  for (const b of buffers) {
    let set = groupsOfBuffer.get(b);
    if (!set) groupsOfBuffer.set(b, (set = new Set()));
    set.add(key);
  }
  if (bindGroups.size > maxBindGroups) dropBindGroup(bindGroups.keys().next().value!);
  return group;
}

function dropBindGroup(key: string): void {
  const entry = bindGroups.get(key);
  if (!entry) return;
  bindGroups.delete(key);
  for (const b of entry.buffers) groupsOfBuffer.get(b)?.delete(key);
}

function forgetBindGroups(buffer: GPUBuffer): void {
  const id = bufferIds.get(buffer);
  if (id === undefined) return;
  for (const key of groupsOfBuffer.get(id) ?? []) dropBindGroup(key);
  groupsOfBuffer.delete(id);
}

/** The batch's encoder with no pass open, for copies and clears that must stay ordered with dispatches. */
export function copyEncoder(): GPUCommandEncoder {
  endPass();
  return commandEncoder();
}

/** Submits everything recorded so far. */
export function flush(): void {
  if (!encoder) return;
  endPass();
  const d = device();
  let timing: { buffer: GPUBuffer; names: string[]; resolve: GPUBuffer } | undefined;
  if (queryNames.length > 0 && querySet) {
    const n = queryNames.length * 2;
    const resolve = d.createBuffer({ size: n * 8, usage: GPUBufferUsage.QUERY_RESOLVE | GPUBufferUsage.COPY_SRC });
    const read = d.createBuffer({ size: n * 8, usage: GPUBufferUsage.MAP_READ | GPUBufferUsage.COPY_DST });
    encoder.resolveQuerySet(querySet, 0, n, resolve, 0);
    encoder.copyBufferToBuffer(resolve, 0, read, 0, n * 8);
    timing = { buffer: read, names: queryNames, resolve };
    queryNames = [];
  }
  const kernels = batchKernels;
  batchKernels = [];
  d.pushErrorScope('validation');
  d.queue.submit([encoder.finish()]);
  encoder = undefined;
  for (const b of doomed) b.destroy();
  doomed = [];
  d.popErrorScope().then((err) => {
    if (err) reportDeviceError(new Error(`WebGPU validation error in a batch with kernels [${summarize(kernels)}]: ${err.message}`));
  });
  if (timing) {
    timing.resolve.destroy();
    pendingReads.push(readTimings(timing.buffer, timing.names));
  }
}

async function readTimings(buffer: GPUBuffer, names: string[]): Promise<void> {
  await buffer.mapAsync(GPUMapMode.READ);
  const ts = new BigUint64Array(buffer.getMappedRange());
  names.forEach((name, i) => {
    const ms = Number(ts[2 * i + 1] - ts[2 * i]) / 1e6;
    const e = profile.get(name) ?? { calls: 0, totalMs: 0 };
    e.calls++;
    e.totalMs += ms;
    profile.set(name, e);
  });
  buffer.unmap();
  buffer.destroy();
}

function summarize(names: string[]): string {
  const uniq = [...new Set(names)];
  return uniq.length > 8 ? `${uniq.slice(0, 8).join(', ')}, … (${uniq.length} kernels)` : uniq.join(', ');
}

// Mappable staging buffers kept for reuse, by size: a new one costs more than the copy itself (on lavapipe,
// reading back 32 MiB took 52 ms through a fresh staging buffer and 26 ms through a reused one).
const staging = new Map<number, GPUBuffer[]>();
let stagingDevice: GPUDevice | undefined;
let stagingBytes = 0;
const stagingLimit = 128 * 2 ** 20;

function takeStaging(d: GPUDevice, size: number): GPUBuffer {
  if (stagingDevice !== d) {
    // a new device (the old one was lost) cannot use the old buffers
    staging.clear();
    stagingBytes = 0;
    stagingDevice = d;
  }
  const spare = staging.get(size)?.pop();
  if (spare) {
    stagingBytes -= size;
    return spare;
  }
  return d.createBuffer({ size, usage: GPUBufferUsage.MAP_READ | GPUBufferUsage.COPY_DST });
}

function returnStaging(d: GPUDevice, buffer: GPUBuffer): void {
  if (stagingDevice !== d || stagingBytes + buffer.size > stagingLimit) {
    buffer.destroy();
    return;
  }
  buffer.unmap();
  stagingBytes += buffer.size;
  staging.set(buffer.size, [...(staging.get(buffer.size) ?? []), buffer]);
}

/** Copies `byteLength` bytes of `src` from `offset` to the CPU, after everything recorded before it. */
export async function readBuffer(src: GPUBuffer, byteLength: number, offset = 0): Promise<ArrayBuffer> {
  const d = device();
  const copyBytes = Math.ceil(byteLength / 4) * 4;
  const buffer = takeStaging(d, Math.max(copyBytes, 4));
  copyEncoder().copyBufferToBuffer(src, offset, buffer, 0, copyBytes);
  flush();
  let mapped = false;
  try {
    await buffer.mapAsync(GPUMapMode.READ);
    mapped = true;
    throwPendingDeviceError();
    return buffer.getMappedRange().slice(0, byteLength);
  } finally {
    if (mapped) returnStaging(d, buffer);
    else buffer.destroy();
  }
}

/** Writes CPU data into `dst` ordered after all recorded work (the pool may be handing back a buffer in use). */
export function writeBuffer(dst: GPUBuffer, data: ArrayBufferView): void {
  flush();
  const bytes = new Uint8Array(data.buffer, data.byteOffset, data.byteLength);
  const padded = bytes.byteLength % 4 === 0 ? bytes : Uint8Array.from({ length: Math.ceil(bytes.byteLength / 4) * 4 }, (_, i) => bytes[i] ?? 0);
  device().queue.writeBuffer(dst, 0, padded as Uint8Array<ArrayBuffer>);
}

/** Waits until the GPU has finished everything submitted so far; throws any device error seen. */
export async function sync(): Promise<void> {
  flush();
  await device().queue.onSubmittedWorkDone();
  throwPendingDeviceError();
}
