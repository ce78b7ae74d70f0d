// Instances per second from a semantic mask, per method, on ShapeWorld scenes at 64² and 256² (the true class map
// as input): connected components (CPU), the displacement field alone (network + CPU centroid refinement and
// clustering), and IRNet's grouping with the boundary-aware walk (network, CPU centroids, GPU walk); also the
// network's boundary + field alone. Median ms per image (tinybench), first call, peak tensor memory; images/s.
// Weights: a folder from train-instances (--model DIR), else random ones with the zoo's backbone size (Swin embed 16).
// JSON in bench/results/instances.json. Usage: npm run bench:instances [-- --quick] [--model DIR] [--json PATH]
import { measureCall, writeBenchJson } from './measure.ts';
import { getDevice } from '../src/engine/device.ts';
import { manualSeed } from '../src/engine/random-cpu.ts';
import { IrnNet, parseIrnConfig } from '../src/models/irn/model.ts';
import { type InstanceMethod, instanceMethods, instancesFromSemantic } from '../src/pipeline/instances.ts';
import { generateScene } from '../src/world/scene.ts';
import { splitSeed } from '../src/world/splits.ts';

const argv = process.argv.slice(2);
const quick = argv.includes('--quick');
const option = (name: string) => (argv.includes(name) ? argv[argv.indexOf(name) + 1] : undefined);
const jsonPath = option('--json') ?? 'bench/results/instances.json';
await getDevice();
manualSeed(0);
const model = option('--model');
const net = model
  ? IrnNet.fromPretrained(model)
  : new IrnNet(parseIrnConfig({ model_type: 'irn', backbone_config: { model_type: 'swin', embed_dim: 16, depths: [1, 1, 1, 1], num_heads: [1, 1, 2, 2], window_size: 4 }, input_scale: 2 })).eval();

const rows: Record<string, string | number>[] = [];
for (const size of [64, 256]) {
  const scene = generateScene(splitSeed('test', 0), { mode: 'scene', width: size });
  const s = { width: size, height: size, image: scene.image, semantic: scene.semantic };
  const cases: [string, () => Promise<unknown>][] = [
    ...instanceMethods.map((m: InstanceMethod) => [m, () => instancesFromSemantic(s, m, net)] as [string, () => Promise<unknown>]),
    ['network only (boundary + field)', async () => {
      const { edge, dp } = net.edgeDisplacement(s.image, [size, size]);
      await dp.toArray();
      edge.dispose();
      dp.dispose();
    }],
  ];
  for (const [name, call] of cases) {
    const m = await measureCall(`${name} ${size}²`, async () => void (await call()), quick ? 2 : 5);
    rows.push({ method: name, size: `${size}²`, 'median ms': Math.round(m.medianMs), 'images/s': Number((1000 / m.medianMs).toFixed(2)), 'first call ms': Math.round(m.firstMs), 'peak MiB': Number((m.peakBytes / 2 ** 20).toFixed(1)) });
    console.log(rows[rows.length - 1]);
  }
}
console.table(rows);
writeBenchJson(jsonPath, rows, { weights: model ?? 'random (Swin embed 16, input scale 2)' });
process.exit(0);
