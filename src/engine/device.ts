// One shared GPUDevice for the whole process. Node gets it from Dawn (the `webgpu` package);
// Deno and browsers from navigator.gpu. Only acquisition differs: everything else is standard WebGPU.

export interface DeviceInfo {
  description: string;
  features: string[];
  limits: { maxBufferSize: number; maxStorageBufferBindingSize: number; maxComputeWorkgroupStorageSize: number };
}

let devicePromise: Promise<GPUDevice> | undefined;
// Dawn's GPU instance and adapter must stay reachable for the device's lifetime: if the garbage collector
// frees them, Dawn tears down the instance under the live device (crashes inside the driver).
let instance: GPU | undefined;
let adapterRef: GPUAdapter | undefined;
let current: GPUDevice | undefined;
let adapterDescription = '';
/** The smallest subgroup the adapter may run (0 without the `subgroups` feature). */
let minSubgroupSize = 0;
/** An asynchronous device error waiting to be thrown at the next synchronisation point. */
let pendingError: Error | undefined;
let lostReason: string | undefined;

type ProcessLike = {
  env: Record<string, string | undefined>;
  getBuiltinModule?: (name: string) => unknown;
  versions?: { node?: string };
};
const proc = (globalThis as { process?: ProcessLike }).process;

async function requestAdapter(): Promise<GPUAdapter> {
  const nav = (globalThis as { navigator?: { gpu?: GPU } }).navigator;
  let gpu: GPU | undefined = nav?.gpu;
  if (!gpu && proc?.versions?.node) {
    // lavapipe reads its thread count when the driver loads; the default is slower than one thread per core.
    const os = proc.getBuiltinModule?.('node:os') as { availableParallelism(): number } | undefined;
    proc.env.LP_NUM_THREADS ??= String(os?.availableParallelism() ?? 2);
    proc.env.XDG_RUNTIME_DIR ??= '/tmp';
    const dawn = await import('webgpu');
    Object.assign(globalThis, dawn.globals);
    gpu = dawn.create([]) as GPU;
  }
  if (!gpu) throw new Error('WebGPU is not available: neither navigator.gpu nor the `webgpu` package could be loaded');
  const found = gpu;
  // only Dawn (Node) prints to the process's own stderr; navigator.gpu (Deno, browsers) is left alone
  const request = () => found.requestAdapter({ powerPreference: 'high-performance' });
  return keepAdapter(found, await (nav?.gpu ? request() : withoutNativeWarnings(request)));
}

type FsLike = {
  openSync(path: string, flags: string): number;
  closeSync(fd: number): void;
  fstatSync(fd: number): unknown;
};

/**
 * Runs `start` with file descriptor 2 on /dev/null. Dawn prints two warnings from native code straight to fd 2
 * whenever it creates an adapter ("maxDynamic…BuffersPerPipelineLayout artificially reduced…"), which tell a user
 * nothing. Node cannot dup2, so the original stderr is reopened through /proc/self/fd (append mode: a redirected
 * file is not overwritten) and takes fd 2 back as the lowest free descriptor. A stderr that cannot be reopened
 * that way (a socket, as Node's child_process gives its children) is left alone, warnings included.
 * FREEMASK_DAWN_LOG=1 keeps them.
 */
async function withoutNativeWarnings<T>(start: () => Promise<T>): Promise<T> {
  const fs = proc?.getBuiltinModule?.('node:fs') as FsLike | undefined;
  if (!fs || proc?.env.FREEMASK_DAWN_LOG === '1') return start();
  let saved: number;
  try {
    // fds 0 and 1 must be open, or closing 2 would not hand 2 back to the next open
    fs.fstatSync(0);
    fs.fstatSync(1);
    saved = fs.openSync('/proc/self/fd/2', 'a');
  } catch {
    return start();
  }
  const reopen = (path: string): void => {
    fs.closeSync(2);
    const fd = fs.openSync(path, 'a');
    if (fd !== 2) fs.closeSync(fd);
  };
  reopen('/dev/null');
  try {
    return await start();
  } finally {
    reopen(`/proc/self/fd/${saved}`);
    fs.closeSync(saved);
  }
}

function keepAdapter(gpu: GPU, adapter: GPUAdapter | null): GPUAdapter {
  instance = gpu;
  adapterRef = adapter ?? undefined;
  if (!adapter) {
    throw new Error(
      'No WebGPU adapter found. On a machine without a GPU, install Mesa\'s lavapipe (Debian: mesa-vulkan-drivers and ' +
        'libvulkan1 from bookworm-backports), or run `bash scripts/setup.sh`.',
    );
  }
  return adapter;
}

async function createDevice(): Promise<GPUDevice> {
  const adapter = await requestAdapter();
  adapterDescription = adapter.info?.description || adapter.info?.vendor || 'unknown adapter';
  // subgroupMinSize is newer than @webgpu/types' GPUAdapterInfo
  const subgroupMin = (adapter.info as { subgroupMinSize?: number } | undefined)?.subgroupMinSize ?? 0;
  const wanted: GPUFeatureName[] = ['shader-f16', 'timestamp-query', 'subgroups'];
  const requiredFeatures = wanted.filter((f) => adapter.features.has(f));
  const l = adapter.limits;
  const device = await adapter.requestDevice({
    requiredFeatures,
    requiredLimits: {
      maxBufferSize: l.maxBufferSize,
      maxStorageBufferBindingSize: l.maxStorageBufferBindingSize,
      maxComputeWorkgroupStorageSize: l.maxComputeWorkgroupStorageSize,
      maxComputeInvocationsPerWorkgroup: l.maxComputeInvocationsPerWorkgroup,
      maxComputeWorkgroupSizeX: l.maxComputeWorkgroupSizeX,
      maxComputeWorkgroupSizeY: l.maxComputeWorkgroupSizeY,
      maxStorageBuffersPerShaderStage: l.maxStorageBuffersPerShaderStage,
    },
  });
  device.addEventListener('uncapturederror', (ev) => {
    const e = (ev as GPUUncapturedErrorEvent).error;
    pendingError ??= new Error(`WebGPU ${e.constructor.name}: ${e.message}`);
  });
  device.lost.then((info) => {
    lostReason = `${info.reason}: ${info.message}`;
    if (current === device) current = undefined;
  });
  current = device;
  minSubgroupSize = device.features.has('subgroups') ? subgroupMin : 0;
  return device;
}

/** The shared device, created on first call with the adapter's larger limits and `shader-f16` when offered. */
export function getDevice(): Promise<GPUDevice> {
  devicePromise ??= createDevice().catch((e) => {
    devicePromise = undefined;
    throw e;
  });
  return devicePromise;
}

/** The device for synchronous use by ops; throws if `getDevice()` has not resolved or the device was lost. */
export function device(): GPUDevice {
  if (lostReason) throw new Error(`WebGPU device lost (${lostReason})`);
  if (!current) throw new Error('No WebGPU device yet: `await getDevice()` before creating tensors');
  return current;
}

/**
 * The smallest subgroup size the device may use, or 0 when it lacks the `subgroups` feature: kernels may
 * reduce over up to this many consecutive invocations with subgroup shuffles instead of workgroup barriers.
 */
export function subgroupMinSize(): number {
  device();
  return minSubgroupSize;
}

export function deviceInfo(): DeviceInfo {
  const d = device();
  return {
    description: adapterDescription,
    features: [...d.features],
    limits: {
      maxBufferSize: d.limits.maxBufferSize,
      maxStorageBufferBindingSize: d.limits.maxStorageBufferBindingSize,
      maxComputeWorkgroupStorageSize: d.limits.maxComputeWorkgroupStorageSize,
    },
  };
}

/** Records an asynchronous error (from an error scope) so the next sync point throws it. */
export function reportDeviceError(err: Error): void {
  pendingError ??= err;
}

/** Throws the first device error seen since the last check, if any. */
export function throwPendingDeviceError(): void {
  if (lostReason) throw new Error(`WebGPU device lost (${lostReason})`);
  const e = pendingError;
  if (e) {
    pendingError = undefined;
    throw e;
  }
}
