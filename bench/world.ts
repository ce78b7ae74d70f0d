// ShapeWorld throughput: scenes rendered per minute on one core (render + ground truth), and with the files a
// dataset writes (PNG + palettized PNG + RLE). Table printed, JSON in bench/results/world.json.
// Usage: node --import tsx bench/world.ts [--quick] [--json path]
import { Bench } from 'tinybench';
import { generateScene } from '../src/world/scene.ts';
import { encodeIndexedPng, encodePng } from '../src/io/png.ts';
import { vocPalette } from '../src/data/voc.ts';
import { sceneAnnotations } from '../src/data/dataset.ts';

const argv = process.argv.slice(2);
const quick = argv.includes('--quick');
const jsonPath = argv.includes('--json') ? argv[argv.indexOf('--json') + 1]! : 'bench/results/world.json';

const batch = 100; // scenes per task run, distinct seeds each time
let next = 0;
const cases = [
  { name: 'scene 64² render', size: 64, mode: 'scene' as const, files: false },
  { name: 'single 64² render', size: 64, mode: 'single' as const, files: false },
  { name: 'scene 128² render', size: 128, mode: 'scene' as const, files: false },
  { name: 'scene 64² render + encode files', size: 64, mode: 'scene' as const, files: true },
];
const bench = new Bench({ time: quick ? 500 : 3000, warmupIterations: 2 });
for (const c of cases) {
  bench.add(c.name, async () => {
    for (let k = 0; k < batch; k++) {
      const s = generateScene(next++, { mode: c.mode, width: c.size });
      if (c.files) {
        await encodePng({ width: s.width, height: s.height, channels: 3, data: s.image });
        encodeIndexedPng({ width: s.width, height: s.height, indices: s.semantic, palette: vocPalette });
        encodeIndexedPng({ width: s.width, height: s.height, indices: s.instance, palette: vocPalette });
        sceneAnnotations(s, k);
      }
    }
  });
}
await bench.run();
const rows = bench.tasks.map((t) => {
  const r = t.result as { latency?: { mean: number; p50?: number; samplesCount: number } } | undefined;
  const ms = (r?.latency?.p50 ?? r?.latency?.mean ?? NaN) / batch;
  return { task: t.name, 'ms / scene': Number(ms.toFixed(4)), 'scenes / min': Math.round(60000 / ms), samples: r?.latency?.samplesCount ?? 0 };
});
console.table(rows);
const fs = process.getBuiltinModule('node:fs');
fs.mkdirSync(jsonPath.replace(/\/[^/]*$/, ''), { recursive: true });
fs.writeFileSync(jsonPath, JSON.stringify({ date: new Date().toISOString(), node: process.version, quick, results: rows }, null, 2));
console.log(`wrote ${jsonPath}`);
