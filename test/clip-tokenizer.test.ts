// CLIPTokenizer: every case of ../shared/conformance/clip_tokenizer (OpenAI CLIP SimpleTokenizer + ftfy), the
// announced truncation of long prompts, a transformers-format folder built here from the same BPE file, token spans.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { assertRejects, conformanceDir, readJson } from './helpers.ts';
import { CLIPTokenizer, clipPieces, type TruncationInfo } from '../src/models/clip_tokenizer.ts';

const fs = process.getBuiltinModule('node:fs');
const os = process.getBuiltinModule('node:os');
const path = process.getBuiltinModule('node:path');
const zlib = process.getBuiltinModule('node:zlib');

interface Case { text: string; bpe_ids: number[]; tokens: string[]; input_ids_sd1: number[]; after_ftfy?: string }
const ref = await readJson<{ sot: number; eot: number; context_length: number; cases: Case[] }>(`${conformanceDir}/clip_tokenizer/cases.json`);
const quiet = { onTruncate: () => {} };
const shipped = await CLIPTokenizer.fromPretrained(undefined, quiet);

test('clip_tokenizer: special ids and context length of the shipped vocabulary', () => {
  assert.is(shipped.bosTokenId, ref.sot);
  assert.is(shipped.eosTokenId, ref.eot);
  assert.is(shipped.maxLength, ref.context_length);
  assert.is(shipped.padTokenId, ref.eot);
  assert.is(shipped.vocabSize, 49408);
});

for (const [k, c] of ref.cases.entries()) {
  test(`clip_tokenizer case ${k}: ${JSON.stringify(c.text).slice(0, 60)}`, () => {
    assert.equal(shipped.tokenize(c.text), c.tokens, 'tokens');
    assert.equal(shipped.encodeTokens(c.text), c.bpe_ids, 'bpe_ids');
    assert.equal(shipped.encode(c.text), c.input_ids_sd1, 'input_ids_sd1');
    // the clean-up reproduces ftfy's: the text as ftfy left it splits into the same pieces
    if (c.after_ftfy !== undefined) assert.equal(clipPieces(c.text), clipPieces(c.after_ftfy), 'after_ftfy');
  });
}

test('clip_tokenizer: a prompt over 77 tokens is truncated and announced (callback, flag, default warning)', () => {
  const long = Array.from({ length: 40 }, (_, k) => `red cube ${k}`).join(', ');
  const calls: TruncationInfo[] = [];
  const tok = new CLIPTokenizerWith({ onTruncate: (i) => calls.push(i) });
  const ids = tok.t.encode(long);
  assert.is(ids.length, 77);
  assert.is(ids[0], 49406);
  assert.is(ids[76], 49407);
  assert.is(calls.length, 1);
  const all = shipped.encodeTokens(long);
  assert.is(calls[0]!.tokenCount, all.length);
  assert.is(calls[0]!.kept, 75);
  assert.equal(calls[0]!.dropped, shipped.idsToTokens(all.slice(75)));
  assert.equal(ids.slice(1, 76), all.slice(0, 75));
  const info = shipped.encodeWithInfo(long);
  assert.ok(info.truncated);
  assert.not.ok(shipped.encodeWithInfo('a photo of a cat').truncated);
  // the default announces on the console
  const warn = console.warn;
  const warned: string[] = [];
  console.warn = (m: string) => warned.push(m);
  try {
    new CLIPTokenizerWith({}).t.encode(long);
  } finally {
    console.warn = warn;
  }
  assert.is(warned.length, 1);
  assert.match(warned[0]!, new RegExp(`the prompt has ${all.length} tokens, more than the 75 that fit; truncated`));
  // a caller can refuse long prompts
  const strict = new CLIPTokenizerWith({ onTruncate: (i) => { throw new Error(`prompt too long (${i.tokenCount} tokens)`); } });
  assert.throws(() => strict.t.encode(long), /prompt too long/);
  assert.is(strict.t.encode('a photo of a cat').length, 77);
});

/** The shipped vocabulary with other options (sharing the parsed file's vocabulary is not needed: it loads fast). */
class CLIPTokenizerWith {
  readonly t: CLIPTokenizer;
  constructor(options: ConstructorParameters<typeof CLIPTokenizer>[2]) {
    this.t = CLIPTokenizer.fromOpenAI(bpeText, options);
  }
}
const bpeText = zlib.gunzipSync(fs.readFileSync(`${conformanceDir}/clip_tokenizer/bpe_simple_vocab_16e6.txt.gz`)).toString('utf8');

/** vocab.json + merges.txt as transformers stores SD's tokenizer, derived here from the OpenAI file per the README. */
function transformersFolder(extra: Record<string, string> = {}): string {
  const bs: number[] = [];
  for (let b = 33; b <= 126; b++) bs.push(b);
  for (let b = 161; b <= 172; b++) bs.push(b);
  for (let b = 174; b <= 255; b++) bs.push(b);
  const chars = bs.map((b) => String.fromCharCode(b));
  for (let b = 0, n = 0; b < 256; b++) if (!bs.includes(b)) chars.push(String.fromCharCode(256 + n++));
  const merges = bpeText.split('\n').slice(1, 49152 - 256 - 2 + 1);
  const vocab = [...chars, ...chars.map((c) => `${c}</w>`), ...merges.map((m) => m.split(' ').join('')), '<|startoftext|>', '<|endoftext|>'];
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'freemask-tokenizer-'));
  fs.writeFileSync(`${dir}/vocab.json`, JSON.stringify(Object.fromEntries(vocab.map((t, i) => [t, i]))));
  fs.writeFileSync(`${dir}/merges.txt`, `#version: 0.2\n${merges.join('\n')}\n`);
  for (const [name, text] of Object.entries(extra)) fs.writeFileSync(`${dir}/${name}`, text);
  return dir;
}

test('clip_tokenizer: a transformers folder (vocab.json + merges.txt) gives the same ids; SD 2.x pads with 0', async () => {
  const sd1 = await CLIPTokenizer.fromPretrained(transformersFolder({
    'special_tokens_map.json': JSON.stringify({ pad_token: '<|endoftext|>' }),
    'tokenizer_config.json': JSON.stringify({ pad_token: { content: '<|endoftext|>' }, model_max_length: 77 }),
  }), quiet);
  for (const c of ref.cases) assert.equal(sd1.encode(c.text), c.input_ids_sd1, c.text);
  const sd2 = await CLIPTokenizer.fromPretrained(transformersFolder({ 'tokenizer_config.json': JSON.stringify({ pad_token: '!' }) }), quiet);
  const c = ref.cases[0]!;
  const n = c.bpe_ids.length + 2;
  assert.equal(sd2.encode(c.text), [...c.input_ids_sd1.slice(0, n), ...Array(77 - n).fill(0)]);
  // an OpenAI file given directly, or a folder holding it
  const gz = await CLIPTokenizer.fromPretrained(`${conformanceDir}/clip_tokenizer/bpe_simple_vocab_16e6.txt.gz`);
  assert.equal(gz.encode(c.text), c.input_ids_sd1);
  const folder = await CLIPTokenizer.fromPretrained(`${conformanceDir}/clip_tokenizer`);
  assert.equal(folder.encode(c.text), c.input_ids_sd1);
});

test('clip_tokenizer: bad folders are named', async () => {
  const noMerges = transformersFolder();
  fs.unlinkSync(`${noMerges}/merges.txt`);
  await assertRejects(CLIPTokenizer.fromPretrained(noMerges), /merges\.txt is missing/);
  const empty = fs.mkdtempSync(path.join(os.tmpdir(), 'freemask-tokenizer-'));
  await assertRejects(CLIPTokenizer.fromPretrained(empty), /has neither vocab\.json \+ merges\.txt nor bpe_simple_vocab_16e6/);
  await assertRejects(CLIPTokenizer.fromPretrained(transformersFolder({ 'tokenizer_config.json': JSON.stringify({ pad_token: '<pad>' }) })), /pad_token "<pad>" is not in vocab\.json/);
  await assertRejects(CLIPTokenizer.fromPretrained(transformersFolder({ 'tokenizer_config.json': '{oops' })), /tokenizer_config\.json is not valid JSON/);
});

test('clip_tokenizer: token spans of class names among the 77 ids', () => {
  const plant = ref.cases.find((c) => c.text === 'potted plant')!.bpe_ids;
  const text = 'a photo of a potted plant next to a potted plant';
  const ids = shipped.encode(text);
  const spans = shipped.tokenSpans(text, 'potted plant');
  assert.is(spans.length, 2);
  for (const s of spans) assert.equal(s.map((p) => ids[p]), plant);
  assert.equal(spans[0], [5, 6]); // after <|startoftext|> a photo of a
  assert.equal(shipped.tokenSpans('a photo of cats', 'cat'), []);
  assert.equal(shipped.tokenSpans('A Photo of a CAT, sitting', 'cat'), [[5]]);
  // an occurrence cut by truncation is not reported
  const long = `${Array(80).fill('red').join(' ')} cat`;
  assert.equal(shipped.tokenSpans(long, 'cat'), []);
  assert.throws(() => shipped.tokenSpans(text, '  '), /has no tokens/);
  assert.is(shipped.decode(ids), text);
});

test.run();
