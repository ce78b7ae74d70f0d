// IRNet against ../shared/conformance/irn (jiwoon-ahn/irn, run by its own code): the pixel-pair indexing
// (PathIndex) at radius 5 and 10, compared exactly.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { conformanceDir, testIf } from './helpers.ts';
import { loadSafetensors } from '../src/io/safetensors.ts';
import { PathIndex, searchPaths } from '../src/models/irn/indexing.ts';

const fs = process.getBuiltinModule('node:fs');
const dir = `${conformanceDir}/irn`;
const vectorTest = testIf(fs.existsSync(`${dir}/path_index.safetensors`), `no ${dir}`);

vectorTest('PathIndex at radius 5 and 10 on a 16×20 grid: directions, paths, sources, destinations, path indices', () => {
  const r = loadSafetensors(`${dir}/path_index.safetensors`);
  for (const radius of [5, 10]) {
    const p = `r${radius}.`;
    const idx = new PathIndex(radius, [16, 20]);
    const ints = (k: string) => [...r.readArray(p + k).data];
    assert.equal(idx.directions.flatMap((d) => [d.dy, d.dx]), ints('search_dst'), `${p}search_dst`);
    assert.equal(idx.groups.map((g) => g[0]!.path.length), ints('path_lengths'), `${p}path_lengths`);
    assert.equal(idx.directions.map((d) => d.path.length), ints('path_len_per_dir'), `${p}path_len_per_dir`);
    idx.groups.forEach((g, k) => {
      assert.equal(g.flatMap((d) => d.path.flat()), ints(`paths.${k}`), `${p}paths.${k}`);
      assert.equal([...idx.pathIndices(k)], ints(`path_indices.${k}`), `${p}path_indices.${k}`);
    });
    assert.equal([...idx.srcIndices], ints('src_indices'), `${p}src_indices`);
    assert.equal([...idx.dstIndices], ints('dst_indices'), `${p}dst_indices`);
    assert.ok(!r.has(`${p}paths.${idx.groups.length}`), 'no group left out');
  }
  r.close();
});

test('every unordered pair once; a radius below 2 or a grid too small is an error', () => {
  const dirs = searchPaths(4).flat().map((d) => `${d.dy},${d.dx}`);
  assert.ok(dirs.every((d) => !dirs.includes(d.split(',').map((v) => -Number(v)).join(','))), 'no direction and its opposite');
  assert.throws(() => searchPaths(1), /radius must be an integer ≥ 2/);
  assert.throws(() => new PathIndex(10, [8, 10]), /a 8×10 grid has no source pixel at radius 10/);
});

test.run();
