// Runs uvu test files in one process (one GPU device) and ends with the line "N passed, N failed".
// Usage: node --import tsx test/run.ts test/a.test.ts … (also runs under Deno).
// A test skipped at run time (testIf in helpers.ts) is printed with its reason after its file's results.
const g = globalThis as {
  UVU_DEFER?: number; UVU_INDEX?: number; UVU_QUEUE?: unknown[][];
  FREEMASK_SKIPPED?: { fileIndex: number; name: string; reason: string }[];
};
g.UVU_DEFER = 1;
await import('uvu');

type Runner = () => Promise<[string, number, number, number]>;
const proc = (globalThis as { process?: { argv: string[]; cwd(): string; exitCode?: number } }).process;
const deno = (globalThis as { Deno?: { args: string[]; cwd(): string; exit(c: number): never } }).Deno;
const files = deno ? deno.args : proc!.argv.slice(2);
const cwd = deno ? deno.cwd() : proc!.cwd();

let index = 0;
for (const file of files) {
  g.UVU_INDEX = index++;
  g.UVU_QUEUE!.push([file]);
  await import(new URL(file, `file://${cwd}/`).href);
}

let passed = 0;
let failed = 0;
let skipped = 0;
const started = performance.now();
for (const [fileIndex, group] of g.UVU_QUEUE!.entries()) {
  const name = group.shift();
  if (name != null) console.log(`\n${name}`);
  for (const run of group as Runner[]) {
    // max counts the tests that ran (uvu's `only` ones when there are any); skips are not among them
    const [errs, ran, skip, max] = await run();
    passed += ran;
    skipped += skip;
    failed += max - ran;
    if (errs.length) console.log(`\n${errs}\n`);
  }
  for (const s of g.FREEMASK_SKIPPED ?? []) {
    if (s.fileIndex === fileIndex) console.log(`skipped: ${files[fileIndex]} › ${s.name}: ${s.reason}`);
  }
}
console.log(`\nduration ${((performance.now() - started) / 1000).toFixed(1)} s`);
console.log(`${passed} passed, ${failed} failed${skipped ? `, ${skipped} skipped` : ''}`);
const code = failed > 0 ? 1 : 0;
if (deno) deno.exit(code);
proc!.exitCode = code;

