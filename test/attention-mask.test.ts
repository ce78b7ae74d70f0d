// Attention → mask on synthetic attention maps with known answers: a Gaussian blob gives its disc, Otsu
// against a hand computation, self-attention refinement spreads over the blob's region, multi-token classes.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { randomArray } from './helpers.ts';
import { Tensor } from '../src/engine/tensor.ts';
import {
  attentionMaskConfigFromJson,
  type AttentionRecord, DATASET_DIFFUSION_PRESET, DIFFUMASK_PRESET, adaptiveLevels, attentionMask, otsuThreshold, thresholdStates,
} from '../src/pipeline/attention_mask.ts';

const T = 8; // context tokens

/** Cross-attention probs [heads, r·r, T]: `maps[t]` (a function of the cell centre in [0, 1]²) on token t, noise elsewhere. */
function cross(r: number, heads: number, maps: Record<number, (x: number, y: number) => number>, step: number, place: 'down' | 'up' | 'mid' = 'up', seed = 1): AttentionRecord {
  const noise = randomArray(heads * r * r * T, seed, 0, 0.01);
  const data = new Float32Array(heads * r * r * T);
  for (let h = 0; h < heads; h++) {
    for (let p = 0; p < r * r; p++) {
      const [x, y] = [((p % r) + 0.5) / r, (Math.floor(p / r) + 0.5) / r];
      for (let t = 0; t < T; t++) {
        const i = (h * r * r + p) * T + t;
        data[i] = maps[t] ? (1 + h) * maps[t]!(x, y) : noise[i]!;
      }
    }
  }
  return { kind: 'cross', place, step, height: r, width: r, probs: Tensor.fromArray(data, [heads, r * r, T]) };
}

const blob = (cx: number, cy: number, s: number) => (x: number, y: number) => Math.exp(-((x - cx) ** 2 + (y - cy) ** 2) / (2 * s * s));

function iou(a: ArrayLike<number>, b: ArrayLike<number>, label = 1): number {
  let [i, u] = [0, 0];
  for (let k = 0; k < a.length; k++) {
    const [p, q] = [a[k] === label, b[k] === label];
    if (p && q) i++;
    if (p || q) u++;
  }
  return i / u;
}

const S = 64; // image size

function disc(cx: number, cy: number, radius: number): Uint8Array {
  return Uint8Array.from({ length: S * S }, (_, p) => (Math.hypot(((p % S) + 0.5) / S - cx, (Math.floor(p / S) + 0.5) / S - cy) <= radius ? 1 : 0));
}

test('a Gaussian blob on the class token gives the disc where it is >= half its peak', async () => {
  const s = 0.12;
  const recs = [16, 32].flatMap((r) => [0, 1, 2].map((step) => cross(r, 2, { 3: blob(0.4, 0.55, s) }, step)));
  const cfg = { ...DIFFUMASK_PRESET, crossResolutions: [16, 32], places: ['up' as const], normalise: 'max' as const, threshold: { kind: 'fixed' as const, value: 0.5 } };
  const { mask, heat } = await attentionMask(recs, [{ id: 7, tokens: [3] }], [S, S], cfg);
  const want = disc(0.4, 0.55, s * Math.sqrt(2 * Math.LN2));
  const got = Uint8Array.from(mask, (v) => (v === 7 ? 1 : 0));
  const score = iou(got, want);
  assert.ok(score > 0.93, `IoU with the half-maximum disc ${score.toFixed(3)}`);
  assert.ok(Math.abs(Math.max(...heat[0]!) - 1) < 1e-5, 'max-normalised');
  assert.ok(mask.every((v) => v === 0 || v === 7));
});

test('records outside the chosen places or steps are left out', async () => {
  const recs = [cross(16, 1, { 2: blob(0.3, 0.3, 0.1) }, 0, 'up'), cross(16, 1, { 2: blob(0.7, 0.7, 0.1) }, 0, 'mid'), cross(16, 1, { 2: blob(0.7, 0.3, 0.1) }, 5, 'up')];
  const cfg = { ...DIFFUMASK_PRESET, crossResolutions: [16], places: ['up' as const], steps: [0, 3] as [number, number], normalise: 'max' as const, threshold: { kind: 'fixed' as const, value: 0.5 } };
  const { mask } = await attentionMask(recs, [{ id: 1, tokens: [2] }], [S, S], cfg);
  assert.ok(iou(mask, disc(0.3, 0.3, 0.1 * Math.sqrt(2 * Math.LN2))) > 0.9);
  let err = '';
  await attentionMask(recs, [{ id: 1, tokens: [2] }], [S, S], { ...cfg, crossResolutions: [8] }).catch((e: Error) => (err = e.message));
  assert.match(err, /no cross-attention records at grid height 8/);
});

test('multi-token class names combine their tokens', async () => {
  // "potted plant": the pot on token 4, the plant on token 5; each alone covers half
  const recs = [cross(16, 2, { 4: blob(0.5, 0.7, 0.08), 5: blob(0.5, 0.35, 0.08) }, 0)];
  const cfg = { ...DIFFUMASK_PRESET, crossResolutions: [16], places: ['up' as const], normalise: 'max' as const, threshold: { kind: 'fixed' as const, value: 0.25 } };
  const { mask } = await attentionMask(recs, [{ id: 16, tokens: [4, 5] }], [S, S], cfg);
  const at = (x: number, y: number) => mask[Math.floor(y * S) * S + Math.floor(x * S)];
  assert.is(at(0.5, 0.7), 16);
  assert.is(at(0.5, 0.35), 16);
  assert.is(at(0.1, 0.1), 0);
});

test('self-attention refinement: A^tau spreads the cross map over the region attending to itself', async () => {
  // self-attention at 8×8: every query attends uniformly to its own half (left/right) → A·c = the half's mean
  const r = 8;
  const A = new Float32Array(r * r * r * r);
  for (let q = 0; q < r * r; q++) for (let k = 0; k < r * r; k++) if ((q % r < r / 2) === (k % r < r / 2)) A[q * r * r + k] = 1 / (r * r / 2);
  const selfRec: AttentionRecord = { kind: 'self', place: 'up', step: 0, height: r, width: r, probs: Tensor.fromArray(A, [1, r * r, r * r]) };
  const recs = [cross(4, 1, { 1: blob(0.2, 0.5, 0.15) }, 0), selfRec];
  const cfg = { ...DATASET_DIFFUSION_PRESET, crossResolutions: [4], places: ['up' as const], selfAttention: { resolution: r, tau: 2 } };
  const { mask } = await attentionMask(recs, [{ id: 3, tokens: [1] }], [S, S], cfg);
  // the left half is foreground away from the seam (bilinear upsampling blends 8 px around it); the right half background
  for (let y = 0; y < S; y++) {
    for (let x = 0; x < S; x++) {
      if (x < S / 2 - 4) assert.is(mask[y * S + x], 3, `(${x}, ${y})`);
      if (x >= S / 2 + 4) assert.is(mask[y * S + x], 0, `(${x}, ${y})`);
    }
  }
});

test('Otsu threshold against a hand computation', () => {
  // levels 0, 1, 2, 3 with counts 10, 20, 5, 15: between-class variance w0·w1·(mu0 − mu1)² by cut
  // after 0: .2·.8·(0 − 1.875)² = 0.5625; after 1: .6·.4·(0.667 − 2.75)² = 1.0417; after 2: .7·.3·(0.857 − 3)² = 0.9643
  // → the cut is between levels 1 and 2.
  const values = [...Array(10).fill(0), ...Array(20).fill(1), ...Array(5).fill(2), ...Array(15).fill(3)];
  const t = otsuThreshold(values, 4);
  assert.ok(t > 1 && t <= 2, `cut ${t}`);
  const states = thresholdStates(values, { kind: 'otsu', bins: 4 });
  assert.equal([...states], values.map((v) => (v >= 2 ? 1 : 0)));
  // with a band the levels next to the cut become uncertain
  const banded = thresholdStates([0, 1.4, 1.5, 1.6, 3, ...values], { kind: 'otsu', bins: 4, band: 0.2 });
  assert.equal([...banded.subarray(0, 5)], [0, 2, 2, 2, 1]);
});

test('fixed rule with an uncertain band, and DiffuMask adaptive levels by hand', () => {
  assert.equal([...thresholdStates([0.1, 0.5, 0.55, 0.6, 0.9], { kind: 'fixed', value: 0.6, uncertainFrom: 0.5 })], [0, 2, 2, 1, 1]);
  // densest 0.01 bin in [0.45, 0.53): (0.47, 0.48) with three values → t = 0.47; mean above 0.47 of
  // {0.475 ×3, 0.9 ×2} = 0.645 → foreground above 0.605; mean below of {0.1 ×4, 0.46} = 0.172 → background up to 0.192
  const v = [0.1, 0.1, 0.1, 0.1, 0.46, 0.475, 0.475, 0.475, 0.9, 0.9];
  const [lo, hi] = adaptiveLevels(v, { kind: 'adaptive' });
  assert.ok(Math.abs(lo - 0.192) < 1e-9 && Math.abs(hi - 0.605) < 1e-9, `${lo} ${hi}`);
  assert.equal([...thresholdStates(v, { kind: 'adaptive' })], [0, 0, 0, 0, 2, 2, 2, 2, 1, 1]);
});

test('two classes: the higher confident heat wins; bad token positions are named', async () => {
  const recs = [cross(16, 1, { 2: blob(0.3, 0.5, 0.1), 6: blob(0.7, 0.5, 0.1) }, 0)];
  const cfg = { ...DIFFUMASK_PRESET, crossResolutions: [16], places: ['up' as const], normalise: 'max' as const, threshold: { kind: 'fixed' as const, value: 0.5, uncertainFrom: 0.3 } };
  const { mask } = await attentionMask(recs, [{ id: 10, tokens: [2] }, { id: 17, tokens: [6] }], [S, S], cfg);
  assert.is(mask[32 * S + Math.floor(0.3 * S)], 10);
  assert.is(mask[32 * S + Math.floor(0.7 * S)], 17);
  assert.is(mask[2 * S + 2], 0);
  assert.ok(mask.includes(255), 'an uncertain ring');
  let err = '';
  await attentionMask(recs, [{ id: 1, tokens: [9] }], [S, S], cfg).catch((e: Error) => (err = e.message));
  assert.match(err, /token positions 9 outside the 8 context tokens/);
});

test('attentionMaskConfigFromJson: the presets round-trip through JSON; bad keys are named', () => {
  for (const preset of [DIFFUMASK_PRESET, DATASET_DIFFUSION_PRESET, { ...DATASET_DIFFUSION_PRESET, steps: [10, 20] as [number, number], threshold: { kind: 'otsu' as const, band: 0.05 } }]) {
    assert.equal(attentionMaskConfigFromJson(JSON.parse(JSON.stringify(preset)), 'x.json'), preset);
  }
  const from = (json: Record<string, unknown>) => () => attentionMaskConfigFromJson(json, 'mask.json');
  const { selfAttention: _, ...withoutSelfAttention } = DATASET_DIFFUSION_PRESET;
  assert.equal(from({})(), withoutSelfAttention, 'absent keys: Dataset Diffusion\'s, self-attention off');
  assert.throws(from({ places: ['down', 'side'] }), /mask\.json: "places" must list down, mid or up, got "side"/);
  assert.throws(from({ steps: [5, 2] }), /mask\.json: "steps" must be a pair \[first, end\) of step indices/);
  assert.throws(from({ threshold: { kind: 'median' } }), /mask\.json threshold: "kind" must be one of "fixed", "otsu", "adaptive"/);
  assert.throws(from({ threshold: { kind: 'fixed' } }), /mask\.json threshold: missing key "value"/);
  assert.throws(from({ selfAttention: { resolution: 16 } }), /mask\.json selfAttention: missing key "tau"/);
  assert.throws(from({ crossResolutions: [] }), /"crossResolutions" must be a non-empty list of integers >= 1/);
});

test.run();
