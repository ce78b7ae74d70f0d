// Dawn (the `webgpu` package) as navigator.gpu for onnxruntime-web's WebGPU execution provider, on the same
// adapter as freemask. Imported for its effect by every onnxruntime-web runner.
import { create, globals } from 'webgpu';

Object.assign(globalThis, globals);
const gpu = create([]) as GPU;
Object.defineProperty(globalThis, 'navigator', { value: { gpu }, configurable: true });

// ORT's wasm memory is a SharedArrayBuffer and Dawn's binding rejects views on one ("Invalid argument"):
// hand Dawn a copy of the bytes instead.
const writeBuffer = GPUQueue.prototype.writeBuffer;
GPUQueue.prototype.writeBuffer = function (buffer, offset, data, dataOffset?, size?) {
  const view = ArrayBuffer.isView(data) ? data : new Uint8Array(data);
  if (!(view.buffer instanceof SharedArrayBuffer)) return writeBuffer.call(this, buffer, offset, data, dataOffset, size);
  const unit = 'BYTES_PER_ELEMENT' in view ? (view.BYTES_PER_ELEMENT as number) : 1;
  const start = view.byteOffset + (dataOffset ?? 0) * unit;
  const length = size !== undefined ? size * unit : view.byteLength - (dataOffset ?? 0) * unit;
  return writeBuffer.call(this, buffer, offset, new Uint8Array(view.buffer, start, length).slice());
};
