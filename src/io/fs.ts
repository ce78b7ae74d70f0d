// The file system, where there is one (Node, Deno): reached through process.getBuiltinModule so that no
// static node: import keeps these sources from loading in a browser.

export type Fs = {
  openSync(p: string, flags: string): number;
  fstatSync(fd: number): { size: number };
  readSync(fd: number, buf: Uint8Array, off: number, len: number, pos: number): number;
  readFileSync(p: string): Uint8Array;
  closeSync(fd: number): void;
  writeSync(fd: number, buf: Uint8Array): number;
  renameSync(a: string, b: string): void;
  copyFileSync(a: string, b: string): void;
  unlinkSync(p: string): void;
  existsSync(p: string): boolean;
  mkdirSync(p: string, o?: { recursive?: boolean }): unknown;
  readdirSync(p: string): string[];
  rmSync(p: string, o?: { recursive?: boolean; force?: boolean }): void;
  statSync(p: string): { isDirectory(): boolean };
};

/** node:fs, or an error saying that `what` needs a file system. */
export function nodeFs(what: string): Fs {
  const proc = (globalThis as { process?: { getBuiltinModule?: (m: string) => unknown } }).process;
  const fs = proc?.getBuiltinModule?.('node:fs') as Fs | undefined;
  if (!fs) throw new Error(`${what} needs a file system (Node or Deno); in a browser use the in-memory variant`);
  return fs;
}

let tmpCounter = 0;

/** Writes `bytes` to a temporary file beside `path`, then renames it over `path`: never a half-written file. */
export function writeFileAtomic(path: string, bytes: Uint8Array): void {
  const fs = nodeFs(`writing ${path}`);
  const tmp = `${path}.${Date.now()}-${tmpCounter++}.tmp`;
  const fd = fs.openSync(tmp, 'w');
  try {
    let done = 0;
    while (done < bytes.byteLength) done += fs.writeSync(fd, bytes.subarray(done));
    fs.closeSync(fd);
  } catch (e) {
    fs.closeSync(fd);
    fs.unlinkSync(tmp);
    throw e;
  }
  fs.renameSync(tmp, path);
}
