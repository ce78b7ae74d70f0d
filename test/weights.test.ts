// What weights/ promises: at most 40 MB in all, float tensors stored as F16, and every model folder with its card
// (README.md with the sections a card must have and the pictures it links to).
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { readFileSync, readdirSync, statSync } from 'node:fs';

const root = new URL('../weights/', import.meta.url).pathname;
const files = (dir: string): string[] => readdirSync(dir).flatMap((n) => (statSync(`${dir}/${n}`).isDirectory() ? files(`${dir}/${n}`) : [`${dir}/${n}`]));

test('weights/: ≤ 40 MB together, float tensors in F16', () => {
  const all = files(root);
  const bytes = all.reduce((n, f) => n + statSync(f).size, 0);
  assert.ok(bytes <= 40e6, `weights/ holds ${(bytes / 1e6).toFixed(1)} MB`);
  for (const f of all.filter((p) => p.endsWith('.safetensors'))) {
    const buf = readFileSync(f);
    const header = JSON.parse(buf.subarray(8, 8 + Number(buf.readBigUInt64LE(0))).toString()) as Record<string, { dtype: string }>;
    const wide = Object.entries(header).filter(([k, v]) => k !== '__metadata__' && (v.dtype === 'F32' || v.dtype === 'F64'));
    assert.is(wide.length, 0, `${f}: ${wide.map(([k, v]) => `${k} ${v.dtype}`).slice(0, 3).join(', ')}`);
  }
});

test('weights/: every model folder has a card with data, training, loss curve, evaluation and the commands that reproduce it', () => {
  const models = readdirSync(root).filter((n) => statSync(`${root}${n}`).isDirectory());
  assert.ok(models.length >= 5, models.join(', '));
  for (const m of models) {
    const card = readFileSync(`${root}${m}/README.md`, 'utf8');
    for (const heading of ['## Data', '## Training', '## Evaluation', '## Reproduce']) assert.ok(card.includes(`\n${heading}`), `${m}: the card lacks ${heading}`);
    assert.match(card, /\| training steps \| \d+ \|/, `${m}: steps`);
    for (const [, picture] of card.matchAll(/!\[[^\]]*\]\(([^)]+)\)/g)) assert.ok(statSync(`${root}${m}/${picture}`).isFile(), `${m}: ${picture} is linked but missing`);
  }
});

test.run();
