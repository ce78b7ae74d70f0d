// Regression guard, run by hand (not a test): compares a new peers-bench JSON with the committed baseline
// and flags every freemask workload that became more than 10% slower, or stopped running. Peer rows are
// shown for context (they move with the machine's load, not with our code). Exit code 1 when any is flagged.
// Usage: npm run bench:compare -- NEW.json [--baseline bench/baseline.json] [--threshold 0.1]
import { readFileSync } from 'node:fs';
import type { Row } from './peers/workloads.ts';

const argv = process.argv.slice(2);
const flag = (name: string) => {
  const i = argv.indexOf(name);
  return i >= 0 ? argv[i + 1] : undefined;
};
const newPath = argv.find((a, i) => !a.startsWith('--') && !argv[i - 1]?.startsWith('--'));
if (!newPath) {
  console.error('usage: npm run bench:compare -- NEW.json [--baseline bench/baseline.json] [--threshold 0.1]');
  process.exit(2);
}
const basePath = flag('--baseline') ?? 'bench/baseline.json';
const threshold = Number(flag('--threshold') ?? 0.1);
const read = (p: string): Row[] => {
  const rows = JSON.parse(readFileSync(p, 'utf8')) as unknown;
  if (!Array.isArray(rows)) throw new Error(`${p}: expected a JSON array of bench rows`);
  return rows as Row[];
};
const base = read(basePath);
const fresh = read(newPath);
const key = (r: Row) => `${r.workload} | ${r.engine} | ${r.dtype}`;
const baseByKey = new Map(base.map((r) => [key(r), r]));

let flagged = 0;
const table: Record<string, string>[] = [];
for (const r of fresh) {
  const b = baseByKey.get(key(r));
  if (!b) continue;
  const ours = r.engine === 'freemask';
  let verdict = '';
  if (b.median_ms !== null && r.median_ms === null) verdict = `now fails: ${r.error}`;
  else if (b.median_ms !== null && r.median_ms !== null) {
    const change = r.median_ms / b.median_ms - 1;
    verdict = `${change >= 0 ? '+' : ''}${(change * 100).toFixed(1)}%`;
    if (change > threshold) verdict += ' SLOWER';
  } else continue;
  const bad = ours && (verdict.startsWith('now fails') || verdict.endsWith('SLOWER'));
  if (bad) flagged++;
  table.push({ workload: r.workload, engine: r.engine, dtype: r.dtype, baseline: String(b.median_ms), new: String(r.median_ms ?? 'error'), change: `${verdict}${bad ? '  <-- regression' : ''}` });
}
console.table(table);
console.log(flagged ? `${flagged} freemask workload(s) more than ${threshold * 100}% slower than ${basePath} (or failing)` : `no freemask regression beyond ${threshold * 100}% against ${basePath}`);
process.exit(flagged ? 1 : 0);
