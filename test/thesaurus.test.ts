// The class-relation thesaurus: the release's VOC table, ShapeWorld's from the world's affinities, Cityscapes',
// a user's JSON; name normalisation; nearest-class matching by text embeddings (a stub embedder with known
// geometry, and the CLIP text model end to end); the inverse; errors that name the class or the entry.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import './helpers.ts';
import { randn } from '../src/kernels/random.ts';
import { CLIPTextModel, clipTextConfig } from '../src/models/clip_text_model.ts';
import { CLIPTokenizer } from '../src/models/clip_tokenizer.ts';
import { classes } from '../src/world/classes.ts';
import {
  type TextEmbedder, cityscapesThesaurus, classesByBackground, clipTextEmbedder, drawWeighted, lookupClass, normaliseClassName, shapeWorldThesaurus,
  thesaurusFromJson, vocThesaurus,
} from '../src/pipeline/thesaurus.ts';

test('names normalise: case, spacing, plurals, VOC spellings and synonyms', () => {
  const cases: [string, string][] = [
    ['TV Monitor', 'tvmonitor'], ['tvmonitor', 'tvmonitor'], ['television', 'tvmonitor'], ['tv_monitors', 'tvmonitor'],
    ['Boats', 'boat'], ['sheep', 'sheep'], ['buses', 'bus'], ['people', 'person'], ['Potted-Plant', 'pottedplant'],
    ['dining table', 'diningtable'], ['airplanes', 'aeroplane'], ['motorcycle', 'motorbike'], ['grass', 'grass'], ['traffic lights', 'traffic light'], ['ponies', 'pony'], ['boxes', 'box'], ['benches', 'bench'], ['glasses', 'glass'],
  ];
  for (const [raw, want] of cases) assert.is(normaliseClassName(raw), want, raw);
});

test('tables: the release\'s 20 VOC classes with two backgrounds each; ShapeWorld\'s affinities; Cityscapes\' 19 classes', async () => {
  assert.is(vocThesaurus.entries.size, 20);
  for (const [cls, bgs] of vocThesaurus.entries) assert.is(bgs.length, 2, cls);
  assert.equal(vocThesaurus.entries.get('boat'), [{ background: 'water', weight: 0.5 }, { background: 'harbor', weight: 0.5 }]);
  assert.is(shapeWorldThesaurus.entries.size, classes.length);
  for (const c of classes) {
    const bgs = shapeWorldThesaurus.entries.get(c.name)!;
    const total = Object.values(c.affinity).reduce((a, b) => a + b!, 0);
    for (const { background, weight } of bgs) assert.ok(Math.abs(weight - c.affinity[background as keyof typeof c.affinity]! / total) < 1e-12, `${c.name} on ${background}`);
  }
  assert.is(cityscapesThesaurus.entries.size, 19);
  assert.is((await lookupClass(cityscapesThesaurus, 'Motorcycles')).match, 'motorbike');
  const tv = await lookupClass(vocThesaurus, 'Television');
  assert.equal([tv.match, tv.how, tv.score], ['tvmonitor', 'name', 1]);
});

test('an unknown class: an error naming it without an embedder; the nearest known class by cosine with one', async () => {
  const error = await lookupClass(vocThesaurus, 'giraffe').then(() => '', (e: Error) => e.message);
  assert.match(error, /thesaurus VOC \(Free-Mask release\): no class "giraffe" \(normalised "giraffe"\); known: aeroplane, .*pass a text embedder/);
  // a stub with known geometry: "pony" points between horse and cow, nearer horse
  const vectors: Record<string, number[]> = { pony: [0.9, 0.3, 0], horse: [1, 0, 0], cow: [0, 1, 0] };
  const embed: TextEmbedder = async (names) => names.map((n) => Float32Array.from(vectors[n] ?? [0, 0, 1]));
  const m = await lookupClass(vocThesaurus, 'Ponies', embed);
  assert.equal([m.query, m.match, m.how], ['Ponies', 'horse', 'embedding']);
  assert.ok(Math.abs(m.score - 0.9 / Math.sqrt(0.9)) < 1e-6, `score ${m.score}`);
  assert.equal(m.backgrounds.map((b) => b.background), ['grassland', 'field']);
});

test('the CLIP text model as the embedder: deterministic, the match scored in [-1, 1], an exact name still wins', async () => {
  const tokenizer = await CLIPTokenizer.fromPretrained();
  const clip = new CLIPTextModel(clipTextConfig({ vocab_size: 49408, hidden_size: 16, intermediate_size: 32, num_hidden_layers: 1, num_attention_heads: 2, max_position_embeddings: 77 }, 'tiny CLIP'));
  // the embedding tables start at zero (loaders fill them): give the tokens distinct vectors
  const emb = clip.text_model.embeddings.token_embedding.weight;
  emb.copyFrom(randn(emb.shape, { seed: 4 }));
  const embed = clipTextEmbedder(tokenizer, clip);
  const a = await lookupClass(vocThesaurus, 'zebra', embed);
  const b = await lookupClass(vocThesaurus, 'zebra', embed);
  assert.equal([a.match, a.score], [b.match, b.score]);
  assert.ok(a.how === 'embedding' && a.score >= -1 && a.score <= 1 && vocThesaurus.entries.has(a.match));
  assert.is((await lookupClass(vocThesaurus, 'dogs', embed)).how, 'name');
  clip.dispose();
});

test('a user\'s JSON table (lists or weights), the inverse, weighted draws; bad tables named', () => {
  const t = thesaurusFromJson('{"Kayaks": {"river": 3, "lake": 1}, "tent": ["forest"]}', 'my.json');
  assert.equal(t.entries.get('kayak'), [{ background: 'river', weight: 0.75 }, { background: 'lake', weight: 0.25 }]);
  assert.equal(classesByBackground(vocThesaurus).get('indoor')!.map((c) => c.className), ['cat', 'chair', 'diningtable', 'person', 'pottedplant', 'sofa', 'tvmonitor']);
  assert.is(drawWeighted(t.entries.get('kayak')!, () => 0.7).background, 'river');
  assert.is(drawWeighted(t.entries.get('kayak')!, () => 0.8).background, 'lake');
  assert.throws(() => thesaurusFromJson('{"a": ', 'bad.json'), /bad\.json: not JSON/);
  assert.throws(() => thesaurusFromJson('[1]', 'bad.json'), /bad\.json: expected an object of class → backgrounds/);
  assert.throws(() => thesaurusFromJson('{"cat": 3}', 'bad.json'), /bad\.json: class "cat" must map to a list/);
  assert.throws(() => thesaurusFromJson('{"cat": []}', 'bad.json'), /class "cat" has no backgrounds/);
  assert.throws(() => thesaurusFromJson('{"cat": {"sofa": -1}}', 'bad.json'), /class "cat", background "sofa": the weight must be a positive number/);
  assert.throws(() => thesaurusFromJson('{"cat": ["a"], "Cats": ["b"]}', 'bad.json'), /class "Cats" is listed twice \(as "cat"\)/);
});

test.run();
