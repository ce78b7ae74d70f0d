// Side-by-side benchmark against the peers (issue 3): runs each engine's runner (bench/peers/<engine>.ts) in
// its own process, one after the other, collects their rows, writes them as a JSON array and generates
// bench/RESULTS.md. A runner that crashes or times out leaves error rows for the workloads it did not reach.
// Usage: npm run bench -- --peers [--json FILE] [--filter a,b] [--engines freemask,tfjs-webgpu] [--runs N]
//        [--warmup N] [--results FILE] [--report-only (RESULTS.md from --json FILE and its .meta.json)] [--timeout-min M (per engine)] [--max-run-s S (a workload whose one run
//        takes longer is reported with that time, not timed further)]
import { spawn } from 'node:child_process';
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { gitCommit, writeHead } from './results-md.ts';
import { availableParallelism, cpus, loadavg } from 'node:os';
import { type Engine, type Row, engines, metaPrefix, plannedRows, rowPrefix } from './peers/workloads.ts';
import { type ResultsMeta, resultsMarkdown } from './peers/results.ts';

const flag = (argv: string[], name: string) => {
  const i = argv.indexOf(name);
  return i >= 0 ? argv[i + 1] : undefined;
};

interface RunnerResult {
  rows: Row[];
  meta: Record<string, unknown>;
}

const runnerFile: Record<Engine, string> = { freemask: 'freemask', 'onnxruntime-web': 'ort-web', 'tfjs-webgpu': 'tfjs-webgpu', 'onnxruntime-node': 'ort-node' };

function runRunner(engine: Engine, args: string[], timeoutMs: number): Promise<RunnerResult> {
  const rows: Row[] = [];
  const meta: Record<string, unknown> = {};
  const env = { ...process.env, LP_NUM_THREADS: process.env.LP_NUM_THREADS ?? String(availableParallelism()), XDG_RUNTIME_DIR: process.env.XDG_RUNTIME_DIR ?? '/tmp' };
  const child = spawn(process.execPath, ['--import', 'tsx', `bench/peers/${runnerFile[engine]}.ts`, ...args], { env, stdio: ['ignore', 'pipe', 'pipe'] });
  let stderrTail = '';
  let out = '';
  child.stdout.on('data', (d: Buffer) => {
    out += d.toString();
    let nl: number;
    while ((nl = out.indexOf('\n')) >= 0) {
      const line = out.slice(0, nl);
      out = out.slice(nl + 1);
      if (line.startsWith(rowPrefix)) {
        const row = JSON.parse(line.slice(rowPrefix.length)) as Row;
        rows.push(row);
        const what = row.median_ms !== null ? `${row.median_ms} ms` : row.error;
        console.log(`  ${engine.padEnd(16)} ${row.dtype} ${row.workload.padEnd(38)} ${what}`);
      } else if (line.startsWith(metaPrefix)) Object.assign(meta, JSON.parse(line.slice(metaPrefix.length)));
    }
  });
  child.stderr.on('data', (d: Buffer) => {
    // Dawn prints two limit warnings per device; everything else is worth seeing
    const text = d.toString().split('\n').filter((l) => l && !l.includes('artificially reduced')).join('\n');
    if (text) {
      process.stderr.write(`[${engine}] ${text}\n`);
      stderrTail = (stderrTail + '\n' + text).slice(-600);
    }
  });
  return new Promise((resolve) => {
    const timer = setTimeout(() => child.kill('SIGKILL'), timeoutMs);
    child.on('close', (code, signal) => {
      clearTimeout(timer);
      if (code !== 0) meta.exit = `runner exited with ${signal ?? `code ${code}`}: ${stderrTail.trim().split('\n').slice(-3).join(' ')}`;
      resolve({ rows, meta });
    });
  });
}

function version(pkg: string): string {
  try {
    return (JSON.parse(readFileSync(`node_modules/${pkg}/package.json`, 'utf8')) as { version: string }).version;
  } catch {
    return 'not installed';
  }
}

export async function main(argv: string[]): Promise<void> {
  const jsonPath = flag(argv, '--json') ?? 'bench/results/peers.json';
  const resultsPath = flag(argv, '--results') ?? 'bench/RESULTS.md';
  const metaPath = jsonPath.replace(/(\.json)?$/, '.meta.json');
  if (argv.includes('--report-only')) {
    // regenerate RESULTS.md from an earlier run's rows and setting
    const rows = JSON.parse(readFileSync(jsonPath, 'utf8')) as Row[];
    writeHead(resultsPath, resultsMarkdown(rows, JSON.parse(readFileSync(metaPath, 'utf8')) as ResultsMeta));
    console.log(`wrote ${resultsPath} from ${jsonPath} and ${metaPath}`);
    return;
  }
  const filter = flag(argv, '--filter');
  const chosen = (flag(argv, '--engines')?.split(',') ?? [...engines]) as Engine[];
  for (const e of chosen) if (!engines.includes(e)) throw new Error(`--engines: unknown engine '${e}' (one of ${engines.join(', ')})`);
  const runs = Number(flag(argv, '--runs') ?? 10);
  const warmup = Number(flag(argv, '--warmup') ?? 1);
  if (!(runs >= 1) || !(warmup >= 0)) throw new Error('--runs must be >= 1 and --warmup >= 0');
  const timeoutMs = Number(flag(argv, '--timeout-min') ?? 60) * 60_000;
  const maxRunSeconds = Number(flag(argv, '--max-run-s') ?? 60);
  const childArgs = ['--runs', String(runs), '--warmup', String(warmup), '--max-run-s', String(maxRunSeconds), ...(filter ? ['--filter', filter] : [])];

  const started = new Date();
  const commit = gitCommit();
  const loadBefore = loadavg();
  const rows: Row[] = [];
  let deviceMeta: Record<string, unknown> = {};
  // other jobs on the machine skew ratios: the 1-minute load average as each engine's runner finished
  const engineLoad: Partial<Record<Engine, number>> = {};
  for (const engine of chosen) {
    console.log(`${engine}:`);
    const t0 = Date.now();
    const r = await runRunner(engine, childArgs, timeoutMs);
    if (r.meta.adapter) deviceMeta = r.meta;
    // every planned row is reported: a runner that died leaves errors, never gaps
    for (const { workload, dtype } of plannedRows(engine, filter)) {
      const got = r.rows.find((x) => x.workload === workload.name && x.dtype === dtype);
      rows.push(got ?? { workload: workload.name, engine, dtype, median_ms: null, error: String(r.meta.exit ?? 'runner printed no row for it') });
    }
    engineLoad[engine] = Number(loadavg()[0]!.toFixed(2));
    console.log(`  (${((Date.now() - t0) / 1000).toFixed(0)} s, load average now ${engineLoad[engine]})`);
  }

  mkdirSync(jsonPath.replace(/\/[^/]*$/, ''), { recursive: true });
  writeFileSync(jsonPath, JSON.stringify(rows, null, 1) + '\n');
  console.log(`wrote ${jsonPath}`);
  const meta: ResultsMeta = {
    date: started.toISOString(),
    adapter: String(deviceMeta.adapter ?? 'unknown (the freemask runner did not run)'),
    features: (deviceMeta.features as string[] | undefined) ?? [],
    cpu: `${cpus()[0]?.model ?? 'unknown CPU'}, ${availableParallelism()} cores, LP_NUM_THREADS=${process.env.LP_NUM_THREADS ?? availableParallelism()}`,
    load: `load average ${loadBefore.map((x) => x.toFixed(2)).join(' / ')} (1/5/15 min) at start, ${loadavg().map((x) => x.toFixed(2)).join(' / ')} at end`,
    versions: {
      freemask: (JSON.parse(readFileSync('package.json', 'utf8')) as { version: string }).version,
      'onnxruntime-web': version('onnxruntime-web'),
      '@tensorflow/tfjs-core': version('@tensorflow/tfjs-core'),
      '@tensorflow/tfjs-backend-webgpu': version('@tensorflow/tfjs-backend-webgpu'),
      'onnxruntime-node': version('onnxruntime-node'),
      'webgpu (Dawn)': version('webgpu'),
      node: process.versions.node,
    },
    engineLoad,
    fmaCeilingGflops: deviceMeta.fmaCeilingGflops as number | undefined,
    runs,
    warmup,
    maxRunSeconds,
    command: `npm run bench -- ${argv.join(' ')}`,
    commit,
  };
  writeFileSync(metaPath, JSON.stringify(meta, null, 1) + '\n');
  writeHead(resultsPath, resultsMarkdown(rows, meta));
  console.log(`wrote ${resultsPath}`);
}
