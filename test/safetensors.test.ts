// safetensors I/O: every dtype round trip and conversions, lazy tensor-by-tensor reading, malformed files
// (each error an Error naming the file and the problem), and a fuzz test over random corruptions.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { randomArray } from './helpers.ts';
import { seededRandom } from '../src/engine/random-cpu.ts';
import { Tensor, bf16ToF32, f16ToF32, f32ToF16 } from '../src/engine/tensor.ts';
import { type RawTensor, encodeSafetensors, loadSafetensors, saveHalfCopy, saveSafetensors } from '../src/io/safetensors.ts';

const fs = process.getBuiltinModule('node:fs');
const os = process.getBuiltinModule('node:os');
const path = process.getBuiltinModule('node:path');
const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'freemask-safetensors-'));
let fileCount = 0;
const tmpFile = (name = 'f') => path.join(dir, `${name}-${fileCount++}.safetensors`);

/** A file from a header (object or raw text) and data bytes; `length` overrides the header length field. */
function rawFile(header: object | string | Uint8Array, data: Uint8Array = new Uint8Array(0), length?: bigint): string {
  const json = header instanceof Uint8Array ? header : new TextEncoder().encode(typeof header === 'string' ? header : JSON.stringify(header));
  const bytes = new Uint8Array(8 + json.length + data.length);
  new DataView(bytes.buffer).setBigUint64(0, length ?? BigInt(json.length), true);
  bytes.set(json, 8);
  bytes.set(data, 8 + json.length);
  const file = tmpFile('raw');
  fs.writeFileSync(file, bytes);
  return file;
}

/** Asserts that `fn` throws a plain Error whose message names `file` and matches `problem`. */
function assertFails(fn: () => unknown, file: string, problem: RegExp): void {
  let err: unknown;
  try {
    fn();
  } catch (e) {
    err = e;
  }
  assert.ok(err, `expected an error for ${file}`);
  assert.is((err as Error).constructor, Error, `a plain Error, not ${(err as Error).constructor.name}: ${(err as Error).message}`);
  const msg = (err as Error).message;
  assert.ok(msg.includes(file), `the message names the file: ${msg}`);
  assert.match(msg, problem);
}

test('round trip of every dtype: engine tensors (F32, F16, I32, U32) and raw arrays (U8, BOOL, I8, I16, U16, I64, F64, BF16)', async () => {
  const f32 = randomArray(12, 1, -100, 100);
  const halfSource = [0.1, -65504, 3, 1e-7, 5, 70000, -0.0];
  const bf16Bits = new Uint16Array([0x3f80, 0xc049, 0x7f7f, 0x0001, 0x8000, 0x4049]);
  const tensors = {
    f32: Tensor.fromArray(f32, [3, 4]),
    f16: Tensor.fromArray(halfSource, [7], 'f16'),
    i32: Tensor.fromArray(new Int32Array([-2147483648, 0, 2147483647]), [3]),
    u32: Tensor.fromArray(new Uint32Array([0, 1, 4294967295, 7]), [2, 2]),
    empty: Tensor.zeros([0, 3]),
  };
  const raw: Record<string, RawTensor> = {
    u8: { dtype: 'U8', shape: [4], data: new Uint8Array([0, 1, 128, 255]) },
    bool: { dtype: 'BOOL', shape: [2, 2], data: new Uint8Array([1, 0, 0, 1]) },
    i8: { dtype: 'I8', shape: [3], data: new Int8Array([-128, 0, 127]) },
    i16: { dtype: 'I16', shape: [2], data: new Int16Array([-32768, 32767]) },
    u16: { dtype: 'U16', shape: [2], data: new Uint16Array([0, 65535]) },
    i64: { dtype: 'I64', shape: [3], data: new BigInt64Array([-5n, 0n, 2147483647n]) },
    f64: { dtype: 'F64', shape: [3], data: new Float64Array([Math.PI, -1e-300, 1e10]) },
    bf16: { dtype: 'BF16', shape: [6], data: bf16Bits },
  };
  const file = tmpFile();
  await saveSafetensors(file, { ...tensors, ...raw }, { format: 'pt', note: 'ünïcode' });
  const half = halfSource.map((v) => f16ToF32(f32ToF16(v)));
  const expected: Record<string, { dtype: string; shape: number[]; values: number[] }> = {
    f32: { dtype: 'f32', shape: [3, 4], values: [...f32] },
    f16: { dtype: 'f16', shape: [7], values: half },
    i32: { dtype: 'i32', shape: [3], values: [-2147483648, 0, 2147483647] },
    u32: { dtype: 'u32', shape: [2, 2], values: [0, 1, 4294967295, 7] },
    empty: { dtype: 'f32', shape: [0, 3], values: [] },
    u8: { dtype: 'i32', shape: [4], values: [0, 1, 128, 255] },
    bool: { dtype: 'i32', shape: [2, 2], values: [1, 0, 0, 1] },
    i8: { dtype: 'i32', shape: [3], values: [-128, 0, 127] },
    i16: { dtype: 'i32', shape: [2], values: [-32768, 32767] },
    u16: { dtype: 'i32', shape: [2], values: [0, 65535] },
    i64: { dtype: 'i32', shape: [3], values: [-5, 0, 2147483647] },
    f64: { dtype: 'f32', shape: [3], values: [Math.PI, -1e-300, 1e10].map(Math.fround) },
    // BF16 is the top half of an f32: the conversion is exact
    bf16: { dtype: 'f32', shape: [6], values: [1, -3.140625, 3.3895313892515355e38, 9.183549615799121e-41, -0, 3.140625] },
  };
  assert.equal([...bf16Bits].map(bf16ToF32), expected.bf16!.values);
  for (const convert of [false, true]) {
    const reader = loadSafetensors(file, { f16ToF32: convert });
    assert.equal([...reader.keys()], Object.keys(expected));
    assert.equal(reader.metadata, { format: 'pt', note: 'ünïcode' });
    assert.is(reader.info('f16').dtype, 'F16');
    assert.is(reader.info('bf16').dtype, 'BF16');
    for (const [name, want] of Object.entries(expected)) {
      const t = reader.get(name);
      const dtype = name === 'f16' && convert ? 'f32' : want.dtype;
      assert.is(t.dtype, dtype, name);
      assert.equal([...t.shape], want.shape, name);
      assert.equal([...await t.toArray()], want.values, `${name} (f16ToF32 ${convert})`);
      t.dispose();
    }
    reader.close();
  }
  // the in-memory form gives the same bytes as the file
  const bytes = await encodeSafetensors({ ...tensors, ...raw }, { format: 'pt', note: 'ünïcode' });
  assert.equal([...bytes], [...fs.readFileSync(file)]);
  const mem = loadSafetensors(bytes);
  assert.equal([...await mem.get('u32').toArray()], expected.u32!.values);
  Object.values(tensors).forEach((t) => t.dispose());
  await encodeSafetensors({ bad: { dtype: 'F32', shape: [3], data: new Float32Array(2) } }).then(
    () => assert.unreachable('a raw array of the wrong size is rejected'),
    (e: Error) => assert.match(e.message, "'bad' (F32 [3]) needs 12 bytes, got 8"),
  );
});

test('I64 values beyond i32 are an error naming the file, the tensor and the value', () => {
  const data = new Uint8Array(new BigInt64Array([1n, 2n ** 40n]).buffer);
  const file = rawFile({ big: { dtype: 'I64', shape: [2], data_offsets: [0, 16] } }, data);
  const reader = loadSafetensors(file);
  assertFails(() => reader.get('big'), file, /tensor 'big' value 1099511627776 at 1 does not fit in i32/);
  reader.close();
});

test('lazy reading: the header is parsed up front, each tensor reads only its own bytes', async () => {
  const a = Tensor.fromArray(randomArray(64, 3), [8, 8]);
  const b = Tensor.fromArray(randomArray(4096, 4), [4096]);
  const file = tmpFile();
  await saveSafetensors(file, { a, b });
  const reader = loadSafetensors(file);
  // cut the file inside b: a still reads, b fails naming the file
  const bEnd = reader.info('b').end;
  fs.truncateSync(file, bEnd - 100);
  const got = reader.get('a');
  assert.equal([...await got.toArray()], [...await a.toArray()]);
  assertFails(() => reader.get('b'), file, /unexpected end of file reading 16384 bytes/);
  reader.close();
  for (const t of [a, b, got]) t.dispose();
});

test('a big header (5000 tensors): opening reads only the length field and the header, one tensor only its bytes', async () => {
  const header: Record<string, unknown> = { __metadata__: { what: 'many small tensors' } };
  const n = 5000;
  const data = new Float32Array(n);
  for (let i = 0; i < n; i++) {
    header[`model.layers.${i}.attention.weight_with_a_long_name`] = { dtype: 'F32', shape: [1], data_offsets: [4 * i, 4 * i + 4] };
    data[i] = i / 2;
  }
  const file = rawFile(header, new Uint8Array(data.buffer));
  const headerLength = Number(new DataView(fs.readFileSync(file).buffer).getBigUint64(0, true));
  // count the bytes the reader takes from the file: it reads through node:fs's readSync (src/io/fs.ts), the
  // same mutable module object as here, wrapped for the duration of this test
  const readSync = fs.readSync;
  let bytesRead = 0;
  fs.readSync = ((...args: Parameters<typeof fs.readSync>) => {
    const got = (readSync as (...a: unknown[]) => number)(...args);
    bytesRead += got;
    return got;
  }) as typeof fs.readSync;
  try {
    const reader = loadSafetensors(file);
    assert.is(reader.size, n);
    assert.is(bytesRead, 8 + headerLength, 'opening reads the length field and the header, nothing of the data');
    const t = reader.get('model.layers.4321.attention.weight_with_a_long_name');
    assert.is(bytesRead, 8 + headerLength + 4, 'one tensor reads its 4 bytes and nothing more');
    assert.equal([...await t.toArray()], [4321 / 2]);
    reader.close();
    t.dispose();
  } finally {
    fs.readSync = readSync;
  }
});

test('malformed files: each problem is an Error naming the file and the problem', () => {
  const f32x2 = new Uint8Array(8);
  const cases: [string, string, RegExp][] = [
    ['shorter than the length field', tmpFileWith(new Uint8Array(5)), /file is 5 bytes, too short for the 8-byte header length/],
    ['header length larger than the file', rawFile({}, new Uint8Array(4), 1000n), /header length 1000 is larger than the 6 bytes after the length field/],
    ['header length of 2^64 - 1', rawFile({}, new Uint8Array(0), 2n ** 64n - 1n), /header length 18446744073709552000 is larger than/],
    ['header not JSON', rawFile('{"a": {"dtype": "F32", sha', f32x2), /header is not JSON/],
    ['header not UTF-8', rawFile(new Uint8Array([0x7b, 0x22, 0xff, 0x22, 0x3a, 0x31, 0x7d]), f32x2), /header is not JSON \(.*not valid/],
    ['header JSON an array', rawFile('[1, 2]'), /header JSON is not an object/],
    ['unknown dtype', rawFile({ a: { dtype: 'F8', shape: [2], data_offsets: [0, 2] } }, f32x2), /tensor 'a' has unknown dtype "F8"/],
    ['an inherited name as dtype', rawFile({ a: { dtype: 'toString', shape: [2], data_offsets: [0, 8] } }, f32x2), /tensor 'a' has unknown dtype "toString"/],
    ['negative dimension', rawFile({ a: { dtype: 'F32', shape: [-2], data_offsets: [0, 8] } }, f32x2), /tensor 'a' has invalid shape \[-2\]/],
    ['offsets not integers', rawFile({ a: { dtype: 'F32', shape: [2], data_offsets: [0, 'x'] } }, f32x2), /tensor 'a' has invalid data_offsets \[0,"x"\]/],
    ['offsets outside the file', rawFile({ a: { dtype: 'F32', shape: [4], data_offsets: [0, 16] } }, f32x2), /tensor 'a' data_offsets \[0, 16\] fall outside the 8 data bytes/],
    ['offsets reversed', rawFile({ a: { dtype: 'F32', shape: [0], data_offsets: [8, 0] } }, f32x2), /data_offsets \[8, 0\] fall outside/],
    ['size mismatch', rawFile({ a: { dtype: 'F32', shape: [3], data_offsets: [0, 8] } }, f32x2), /tensor 'a' \(F32 \[3\]\) needs 12 bytes but data_offsets span 8/],
    ['overlapping tensors', rawFile({ a: { dtype: 'F32', shape: [2], data_offsets: [0, 8] }, b: { dtype: 'F32', shape: [1], data_offsets: [4, 8] } }, f32x2), /tensors 'a' and 'b' overlap/],
    ['metadata not an object', rawFile({ __metadata__: 3 }), /__metadata__ is not an object/],
    ['a metadata value not a string', rawFile({ __metadata__: { a: 1 } }), /__metadata__ value 'a' is not a string/],
  ];
  for (const [what, file, problem] of cases) {
    try {
      assertFails(() => loadSafetensors(file), file, problem);
    } catch (e) {
      throw new Error(`${what}: ${(e as Error).message}`);
    }
  }
  // a valid file truncated anywhere in its data
  const good = rawFile({ a: { dtype: 'F32', shape: [2], data_offsets: [0, 8] } }, f32x2);
  const cut = tmpFileWith(fs.readFileSync(good).subarray(0, fs.statSync(good).size - 3));
  assertFails(() => loadSafetensors(cut), cut, /tensor 'a' data_offsets \[0, 8\] fall outside the 5 data bytes/);
  const missing = path.join(dir, 'does-not-exist.safetensors');
  assertFails(() => loadSafetensors(missing), missing, /ENOENT/);
});

function tmpFileWith(bytes: Uint8Array): string {
  const file = tmpFile('bytes');
  fs.writeFileSync(file, bytes);
  return file;
}

test('fuzz: 300 random corruptions either load correctly shaped tensors or throw an Error naming the file', async () => {
  const base = await encodeSafetensors({
    weight: Tensor.fromArray(randomArray(6, 9), [2, 3]),
    half: Tensor.fromArray([1, 2, 3], [3], 'f16'),
    index: { dtype: 'I64', shape: [2, 2], data: new BigInt64Array([0n, 1n, 2n, 3n]) },
    flag: { dtype: 'BOOL', shape: [1], data: new Uint8Array([1]) },
  }, { format: 'pt' });
  const headerLength = Number(new DataView(base.buffer).getBigUint64(0, true));
  const headerText = new TextDecoder().decode(base.subarray(8, 8 + headerLength));
  const rand = seededRandom(2024);
  const int = (n: number) => Math.floor(rand() * n);
  const withHeader = (text: string) => {
    const json = new TextEncoder().encode(text);
    const out = new Uint8Array(8 + json.length + base.length - 8 - headerLength);
    new DataView(out.buffer).setBigUint64(0, BigInt(json.length), true);
    out.set(json, 8);
    out.set(base.subarray(8 + headerLength), 8 + json.length);
    return out;
  };
  const corruptions: ((b: Uint8Array) => Uint8Array)[] = [
    // a bit flip in the header length
    (b) => ((b[int(8)]! ^= 1 << int(8)), b),
    // a random byte in the JSON
    (b) => ((b[8 + int(headerLength)] = int(256)), b),
    // truncation anywhere
    (b) => b.slice(0, int(b.length)),
    // garbage inserted into the header (the length field updated to include it)
    (b) => {
      const at = int(headerText.length);
      const garbage = Array.from({ length: 1 + int(12) }, () => String.fromCharCode(32 + int(95))).join('');
      return withHeader(headerText.slice(0, at) + garbage + headerText.slice(at));
    },
    // a data_offsets number replaced
    (b) => {
      const numbers = [...headerText.matchAll(/\d+/g)].filter((m) => headerText.lastIndexOf('data_offsets', m.index) > headerText.lastIndexOf('}', m.index));
      const m = numbers[int(numbers.length)]!;
      const replacement = [String(int(64)), String(int(2 ** 31)), '-1', '1e400', '0.5', String(2 ** 60)][int(6)]!;
      return withHeader(headerText.slice(0, m.index) + replacement + headerText.slice(m.index! + m[0].length));
    },
    // random bytes in the data (I64 values may then overflow i32)
    (b) => {
      for (let j = 0; j < 4; j++) b[8 + headerLength + int(b.length - 8 - headerLength)] = int(256);
      return b;
    },
    // a shape number replaced
    (b) => withHeader(headerText.replace(/"shape":\[(\d+)/, `"shape":[${int(8)}`)),
  ];
  let loaded = 0;
  let rejected = 0;
  for (let k = 0; k < 300; k++) {
    const kind = k % corruptions.length;
    const file = tmpFileWith(corruptions[kind]!(base.slice()));
    try {
      const reader = loadSafetensors(file, { f16ToF32: k % 2 === 0 });
      try {
        for (const name of reader.keys()) {
          const t = reader.get(name);
          assert.equal([...t.shape], reader.info(name).shape, `${file}: ${name} has the header's shape`);
          t.dispose();
        }
        loaded++;
      } finally {
        reader.close();
      }
    } catch (e) {
      const err = e as Error;
      if (err.constructor !== Error || !err.message.includes(file)) {
        throw new Error(`corruption ${k} (kind ${kind}, ${file}) escaped as ${err.constructor.name}: ${err.message}`);
      }
      rejected++;
    }
    fs.unlinkSync(file);
  }
  assert.ok(loaded > 15 && rejected > 100, `a mix of outcomes: ${loaded} loaded, ${rejected} rejected`);
});

test('half copies: float tensors become F16 (round to nearest even), integers and metadata stay', async () => {
  const values = Float32Array.from([0.1, -2.5, 65504, 1e-8, 3.14159]);
  await saveSafetensors(`${dir}/full.safetensors`, { w: Tensor.fromArray(values, [5]), n: { dtype: 'I64', shape: [], data: new BigInt64Array([7n]) } }, { format: 'pt' });
  await saveHalfCopy(`${dir}/full.safetensors`, `${dir}/half.safetensors`);
  const r = loadSafetensors(`${dir}/half.safetensors`);
  assert.equal([r.info('w').dtype, r.info('n').dtype, r.metadata.format], ['F16', 'I32', 'pt']);
  assert.equal([...r.readArray('w').data], [...values].map(f32ToF16));
  assert.equal([...r.readArray('n').data], [7]);
  r.close();
});

test('cleanup', () => fs.rmSync(dir, { recursive: true }));

test.run();
