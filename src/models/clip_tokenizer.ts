// CLIP's byte-level BPE tokenizer, as OpenAI CLIP's SimpleTokenizer (what Stable Diffusion's text encoders were
// trained with): text clean-up (a subset of ftfy.fix_text, HTML unescaping, whitespace runs → one space),
// lower-casing, the CLIP split regex, bytes → printable characters (GPT-2's table), then BPE merges by rank
// with `</w>` marking the end of each piece. Ids: `<|startoftext|>` … `<|endoftext|>`, padded to 77.

import { nodeFs, writeFileAtomic } from '../io/fs.ts';
import { fileExists, joinPath, readJson } from './pretrained.ts';

export const CLIP_CONTEXT_LENGTH = 77;

export interface CLIPTokenizerOptions {
  /** Pad id after the end token: SD 1.x pads with `<|endoftext|>` (49407, the default), SD 2.x with 0 ("!"). */
  padTokenId?: number;
  /** Context length (77 for every SD text encoder). */
  maxLength?: number;
  /**
   * Called when a prompt is longer than the context and gets truncated; the default warns on the console.
   * Throw from it to refuse long prompts.
   */
  onTruncate?: (info: TruncationInfo) => void;
}

export interface TruncationInfo {
  text: string;
  /** BPE tokens of the prompt (without start/end). */
  tokenCount: number;
  /** How many of them fit (maxLength - 2). */
  kept: number;
  /** The tokens dropped, as vocabulary strings. */
  dropped: string[];
}

export interface EncodeResult {
  /** maxLength ids: start, the prompt's tokens, end, padding. */
  ids: number[];
  truncated: boolean;
  /** BPE tokens of the whole prompt (without start/end), before truncation. */
  tokenCount: number;
}

const SOT = '<|startoftext|>';
const EOT = '<|endoftext|>';
/** Merges of the OpenAI file that make up the vocabulary: 49152 - 256 (bytes) - 2 (special tokens). */
const OPENAI_MERGES = 49152 - 256 - 2;

export class CLIPTokenizer {
  readonly bosTokenId: number;
  readonly eosTokenId: number;
  readonly padTokenId: number;
  readonly maxLength: number;
  readonly #encoder: ReadonlyMap<string, number>;
  readonly #decoder: string[] = [];
  readonly #ranks: ReadonlyMap<string, number>;
  readonly #cache = new Map<string, string[]>();
  readonly #onTruncate: (info: TruncationInfo) => void;

  /**
   * From a vocabulary (token → id) and merges ("a b" pairs, highest priority first). Use `fromPretrained`,
   * `fromOpenAI` or `fromVocabAndMerges` rather than this directly.
   */
  constructor(vocab: ReadonlyMap<string, number>, merges: readonly string[], options: CLIPTokenizerOptions = {}) {
    this.#encoder = vocab;
    for (const [tok, id] of vocab) this.#decoder[id] = tok;
    this.#ranks = new Map(merges.map((m, r) => [m, r]));
    const special = (tok: string) => {
      const id = vocab.get(tok);
      if (id === undefined) throw new Error(`CLIPTokenizer: the vocabulary has no ${tok} token`);
      return id;
    };
    this.bosTokenId = special(SOT);
    this.eosTokenId = special(EOT);
    this.padTokenId = options.padTokenId ?? this.eosTokenId;
    this.maxLength = options.maxLength ?? CLIP_CONTEXT_LENGTH;
    if (!Number.isInteger(this.maxLength) || this.maxLength < 2) throw new Error(`CLIPTokenizer: maxLength must be an integer >= 2, got ${this.maxLength}`);
    this.#onTruncate = options.onTruncate ?? ((i) => console.warn(truncationMessage(i)));
    this.#cache.set(SOT, [SOT]);
    this.#cache.set(EOT, [EOT]);
  }

  get vocabSize(): number {
    return this.#encoder.size;
  }

  /**
   * Writes a transformers tokenizer folder: vocab.json, merges.txt, tokenizer_config.json (model_max_length,
   * the special tokens) and special_tokens_map.json, as transformers' CLIPTokenizer.save_pretrained does, so
   * `fromPretrained(dir)` and transformers both read it.
   */
  save(dir: string): void {
    const fs = nodeFs(`saving a tokenizer in ${dir}`);
    fs.mkdirSync(dir, { recursive: true });
    const special = { bos_token: SOT, eos_token: EOT, unk_token: EOT, pad_token: this.#decoder[this.padTokenId]! };
    const json = (v: unknown) => new TextEncoder().encode(`${JSON.stringify(v, null, 2)}\n`);
    writeFileAtomic(joinPath(dir, 'vocab.json'), new TextEncoder().encode(JSON.stringify(Object.fromEntries(this.#encoder))));
    writeFileAtomic(joinPath(dir, 'merges.txt'), new TextEncoder().encode(`#version: 0.2\n${[...this.#ranks.keys()].join('\n')}\n`));
    writeFileAtomic(joinPath(dir, 'special_tokens_map.json'), json(special));
    writeFileAtomic(joinPath(dir, 'tokenizer_config.json'), json({
      tokenizer_class: 'CLIPTokenizer', model_max_length: this.maxLength, do_lower_case: true, errors: 'replace', add_prefix_space: false, ...special,
    }));
  }

  /** From the text of OpenAI's `bpe_simple_vocab_16e6.txt` (header line, then one merge per line). */
  static fromOpenAI(bpeText: string, options: CLIPTokenizerOptions = {}): CLIPTokenizer {
    const lines = bpeText.split('\n');
    const merges = lines.slice(1, OPENAI_MERGES + 1);
    if (merges.length < OPENAI_MERGES) {
      throw new Error(`CLIPTokenizer: the OpenAI BPE file has ${merges.length} merges, expected at least ${OPENAI_MERGES}`);
    }
    const bytes = [...BYTE_TO_UNICODE.values()];
    const tokens = [...bytes, ...bytes.map((b) => `${b}</w>`), ...merges.map((m) => m.replace(' ', '')), SOT, EOT];
    return new CLIPTokenizer(new Map(tokens.map((t, i) => [t, i])), merges, options);
  }

  /**
   * From a transformers tokenizer folder's `vocab.json` (token → id), `merges.txt` ("#version" line, then
   * merges) and optional `tokenizer_config.json` / `special_tokens_map.json` (for the pad token).
   */
  static fromVocabAndMerges(
    vocabJson: Record<string, number>,
    mergesText: string,
    config: { pad_token?: unknown; model_max_length?: number } = {},
    options: CLIPTokenizerOptions = {},
  ): CLIPTokenizer {
    const vocab = new Map(Object.entries(vocabJson));
    const merges = mergesText.split('\n').filter((l, i) => l.length > 0 && !(i === 0 && l.startsWith('#version')));
    const padToken = typeof config.pad_token === 'string' ? config.pad_token : (config.pad_token as { content?: string } | undefined)?.content;
    let padTokenId = options.padTokenId;
    if (padTokenId === undefined && padToken !== undefined) {
      padTokenId = vocab.get(padToken);
      if (padTokenId === undefined) throw new Error(`CLIPTokenizer: pad_token ${JSON.stringify(padToken)} is not in vocab.json`);
    }
    const maxLength = options.maxLength ?? (config.model_max_length && config.model_max_length <= 1e6 ? config.model_max_length : undefined);
    return new CLIPTokenizer(vocab, merges, { ...options, padTokenId, maxLength });
  }

  /**
   * No argument: the vocabulary shipped in `weights/`. A folder: a transformers tokenizer folder (`vocab.json` +
   * `merges.txt`, e.g. an SD checkpoint's `tokenizer/`) or one holding `bpe_simple_vocab_16e6.txt.gz`. A path
   * to a `.txt.gz` / `.txt` file: the OpenAI format.
   */
  static async fromPretrained(path?: string, options: CLIPTokenizerOptions = {}): Promise<CLIPTokenizer> {
    if (path === undefined) {
      const shipped = new URL('../../weights/bpe_simple_vocab_16e6.txt.gz', import.meta.url);
      return CLIPTokenizer.fromOpenAI(await gunzipText(await readShipped(shipped)), options);
    }
    const fs = nodeFs(`CLIPTokenizer.fromPretrained('${path}')`);
    if (/\.txt(\.gz)?$/.test(path)) return CLIPTokenizer.fromOpenAI(await openAIText(fs.readFileSync(path), path), options);
    const file = (name: string) => joinPath(path, name);
    if (fileExists(file('vocab.json')) || fileExists(file('merges.txt'))) {
      for (const f of ['vocab.json', 'merges.txt']) {
        if (!fileExists(file(f))) throw new Error(`CLIPTokenizer.fromPretrained: ${file(f)} is missing (a transformers tokenizer folder needs vocab.json and merges.txt)`);
      }
      const optional = (f: string) => (fileExists(file(f)) ? readJson(file(f)) : {});
      const config = { ...optional('special_tokens_map.json'), ...optional('tokenizer_config.json') };
      const merges = new TextDecoder().decode(fs.readFileSync(file('merges.txt')));
      return CLIPTokenizer.fromVocabAndMerges(readJson(file('vocab.json')) as Record<string, number>, merges, config, options);
    }
    for (const f of ['bpe_simple_vocab_16e6.txt.gz', 'bpe_simple_vocab_16e6.txt']) {
      if (fileExists(file(f))) return CLIPTokenizer.fromOpenAI(await openAIText(fs.readFileSync(file(f)), file(f)), options);
    }
    throw new Error(`CLIPTokenizer.fromPretrained: ${path} has neither vocab.json + merges.txt nor bpe_simple_vocab_16e6.txt(.gz)`);
  }

  /** The BPE tokens of `text` as vocabulary strings (no start/end tokens). */
  tokenize(text: string): string[] {
    const out: string[] = [];
    for (const piece of clipPieces(text)) {
      const cached = this.#cache.get(piece);
      if (cached) {
        out.push(...cached);
        continue;
      }
      const bytes = new TextEncoder().encode(piece);
      const tokens = this.#bpe(Array.from(bytes, (b) => BYTE_TO_UNICODE.get(b)!));
      this.#cache.set(piece, tokens);
      out.push(...tokens);
    }
    return out;
  }

  /** The BPE ids of `text` (no start/end tokens, no length limit): SimpleTokenizer.encode. */
  encodeTokens(text: string): number[] {
    return this.tokenize(text).map((t) => {
      const id = this.#encoder.get(t);
      if (id === undefined) throw new Error(`CLIPTokenizer: token ${JSON.stringify(t)} is not in the vocabulary (merges and vocabulary disagree)`);
      return id;
    });
  }

  /** maxLength ids (start, tokens, end, padding) and whether the prompt was truncated. Does not announce. */
  encodeWithInfo(text: string): EncodeResult {
    const tokens = this.encodeTokens(text);
    const kept = this.maxLength - 2;
    const ids = [this.bosTokenId, ...tokens.slice(0, kept), this.eosTokenId];
    while (ids.length < this.maxLength) ids.push(this.padTokenId);
    return { ids, truncated: tokens.length > kept, tokenCount: tokens.length };
  }

  /** maxLength ids as SD feeds its text encoder; a prompt too long is truncated and announced (`onTruncate`). */
  encode(text: string): number[] {
    const r = this.encodeWithInfo(text);
    if (r.truncated) {
      const kept = this.maxLength - 2;
      this.#onTruncate({ text, tokenCount: r.tokenCount, kept, dropped: this.tokenize(text).slice(kept) });
    }
    return r.ids;
  }

  /** Vocabulary strings of ids (unknown ids as `<id>`). */
  idsToTokens(ids: readonly number[]): string[] {
    return ids.map((id) => this.#decoder[id] ?? `<${id}>`);
  }

  /** Text of ids: bytes joined, `</w>` → space, special tokens dropped. */
  decode(ids: readonly number[]): string {
    const special = new Set([this.bosTokenId, this.eosTokenId, this.padTokenId]);
    const chars = ids.filter((id) => !special.has(id)).map((id) => this.#decoder[id] ?? '').join('');
    const bytes = Uint8Array.from([...chars], (c) => UNICODE_TO_BYTE.get(c) ?? 0x3f);
    return new TextDecoder().decode(bytes).replaceAll('</w>', ' ').trim();
  }

  /**
   * Where `word` (a class name, possibly several tokens like "potted plant") sits in `encode(text)`: for each
   * occurrence, the positions of its tokens among the maxLength ids (after the start token; occurrences cut
   * by truncation are left out). Matches whole pieces: "cat" is not found in "cats".
   */
  tokenSpans(text: string, word: string): number[][] {
    const needle = this.encodeTokens(word);
    if (needle.length === 0) throw new Error(`CLIPTokenizer.tokenSpans: ${JSON.stringify(word)} has no tokens`);
    const ids = this.encodeWithInfo(text).ids;
    const end = ids.indexOf(this.eosTokenId, 1);
    const spans: number[][] = [];
    for (let p = 1; p + needle.length <= end; p++) {
      if (needle.every((id, k) => ids[p + k] === id)) spans.push(needle.map((_, k) => p + k));
    }
    return spans;
  }

  /** Byte-pair merging of one piece (its characters in the byte alphabet), lowest merge rank first. */
  #bpe(chars: string[]): string[] {
    let word = [...chars.slice(0, -1), `${chars[chars.length - 1]}</w>`];
    while (word.length > 1) {
      let best = -1;
      let bestRank = Infinity;
      for (let k = 0; k + 1 < word.length; k++) {
        const r = this.#ranks.get(`${word[k]} ${word[k + 1]}`);
        if (r !== undefined && r < bestRank) {
          bestRank = r;
          best = k;
        }
      }
      if (best < 0) break;
      const first = word[best]!;
      const second = word[best + 1]!;
      // Merge every occurrence of the pair, scanning left to right (as the reference does).
      const merged: string[] = [];
      for (let k = 0; k < word.length; k++) {
        if (word[k] === first && word[k + 1] === second && k + 1 < word.length) {
          merged.push(first + second);
          k++;
        } else merged.push(word[k]!);
      }
      word = merged;
    }
    return word;
  }
}

function truncationMessage(i: TruncationInfo): string {
  return `CLIPTokenizer: the prompt has ${i.tokenCount} tokens, more than the ${i.kept} that fit; truncated, dropping: ${i.dropped.join(' ').replaceAll('</w>', '')}`;
}

// ---------------------------------------------------------------- bytes ↔ printable characters (GPT-2)

function byteToUnicode(): Map<number, string> {
  const printable: number[] = [];
  for (let b = 0x21; b <= 0x7e; b++) printable.push(b);
  for (let b = 0xa1; b <= 0xac; b++) printable.push(b);
  for (let b = 0xae; b <= 0xff; b++) printable.push(b);
  const map = new Map<number, string>(printable.map((b) => [b, String.fromCharCode(b)]));
  let n = 0;
  for (let b = 0; b < 256; b++) if (!map.has(b)) map.set(b, String.fromCharCode(256 + n++));
  return map;
}

/** In the reference's order: printable bytes first, then the others (the first 256 vocabulary entries). */
const BYTE_TO_UNICODE = byteToUnicode();
const UNICODE_TO_BYTE = new Map([...BYTE_TO_UNICODE].map(([b, c]) => [c, b]));

// ---------------------------------------------------------------- text clean-up and splitting

/** Python's str.isspace() set (what the reference's `\s` matches), which differs from JS `\s`. */
const PY_SPACE = '\\t\\n\\x0b\\x0c\\r\\x1c-\\x1f \\x85\\xa0\\u1680\\u2000-\\u200a\\u2028\\u2029\\u202f\\u205f\\u3000';
const SPACE_RUNS = new RegExp(`[${PY_SPACE}]+`, 'gu');
const CLIP_SPLIT = /<\|startoftext\|>|<\|endoftext\|>|'s|'t|'re|'ve|'m|'ll|'d|\p{L}+|\p{N}|[^\s\p{L}\p{N}]+/giu;

/** The pieces the reference BPE-encodes one by one: clean-up, lower-case, split. */
export function clipPieces(text: string): string[] {
  const cleaned = unescapeHtml(unescapeHtml(fixText(text))).trim().replace(SPACE_RUNS, ' ').trim().toLowerCase();
  return cleaned.match(CLIP_SPLIT) ?? [];
}

/** Windows-1252's 0x80–0x9F (undefined slots stay C1 controls, as ftfy's "sloppy" codec). */
const CP1252_HIGH = '€\x81‚ƒ„…†‡ˆ‰Š‹Œ\x8dŽ\x8f\x90‘’“”•–—˜™š›œ\x9džŸ';

function cp1252Byte(c: string): number | undefined {
  const u = c.charCodeAt(0);
  if (c.length !== 1) return undefined;
  if (u < 0x80 || (u >= 0xa0 && u <= 0xff)) return u;
  const k = CP1252_HIGH.indexOf(c);
  return k >= 0 ? 0x80 + k : undefined;
}

const LIGATURES: Record<string, string> = {
  'Ĳ': 'IJ', 'ĳ': 'ij', 'ŉ': 'ʼn', 'Ǆ': 'DŽ', 'ǅ': 'Dž', 'ǆ': 'dž', 'Ǉ': 'LJ', 'ǈ': 'Lj', 'ǉ': 'lj', 'Ǌ': 'NJ', 'ǋ': 'Nj', 'ǌ': 'nj',
  'ﬀ': 'ff', 'ﬁ': 'fi', 'ﬂ': 'fl', 'ﬃ': 'ffi', 'ﬄ': 'ffl', 'ﬅ': 'ſt', 'ﬆ': 'st',
};

/**
 * The part of ftfy.fix_text (default settings) that changes prompts: HTML unescaping when the text has no
 * '<', mojibake repair (UTF-8 read as Windows-1252, e.g. "cafÃ©" → "café"; a simple byte-pattern check,
 * not ftfy's full heuristics), C1 controls as Windows-1252, Latin ligatures, full-width forms, curly quotes,
 * line breaks, control characters, NFC.
 */
function fixText(text: string): string {
  let t = text.includes('<') ? text : unescapeHtml(text);
  t = t.replace(/[\xc2-\xf4€‚ƒ„…†‡ˆ‰Š‹ŒŽ‘’“”•–—˜™š›œžŸ\x80-\xbf]{2,}/g, fixMojibake);
  t = t.replace(/[\x80-\x9f]/g, (c) => CP1252_HIGH[c.charCodeAt(0) - 0x80]!);
  t = t.replace(/[ĲĳŉǄ-ǌﬀ-ﬆ]/g, (c) => LIGATURES[c] ?? c);
  t = t.replace(/[\uff01-\uffef]/g, (c) => c.normalize('NFKC')).replace(/\u3000/g, ' ');
  t = t.replace(/[\u201c-\u201f]/g, '"').replace(/[\u02bc\u2018-\u201b]/g, "'");
  t = t.replace(/\r\n|[\r\u2028\u2029\x85]/g, '\n');
  t = t.replace(/[\x00-\x08\x0b\x0e-\x1f\x7f\u206a-\u206f\ufeff\ufff9-\ufffc]|[\u{1d173}-\u{1d17a}]|[\u{e0000}-\u{e007f}]/gu, '');
  return t.normalize('NFC');
}

/** A run of Windows-1252 characters that spells valid multi-byte UTF-8 is decoded back. */
function fixMojibake(run: string): string {
  const bytes = [...run].map(cp1252Byte);
  if (bytes.some((b) => b === undefined)) return run;
  let out = '';
  let k = 0;
  while (k < bytes.length) {
    const lead = bytes[k]!;
    const len = lead >= 0xf0 ? 4 : lead >= 0xe0 ? 3 : lead >= 0xc2 ? 2 : 1;
    const seq = bytes.slice(k, k + len) as number[];
    if (len > 1 && seq.length === len && seq.slice(1).every((b) => b >= 0x80 && b <= 0xbf)) {
      try {
        out += new TextDecoder('utf-8', { fatal: true }).decode(Uint8Array.from(seq));
        k += len;
        continue;
      } catch {
        // not UTF-8 after all: keep the characters
      }
    }
    out += run[k];
    k++;
  }
  return out;
}

const ENTITIES: Record<string, string> = {
  amp: '&', lt: '<', gt: '>', quot: '"', apos: "'", nbsp: '\xa0', copy: '©', reg: '®', trade: '™', hellip: '…', mdash: '—',
  ndash: '–', lsquo: '‘', rsquo: '’', ldquo: '“', rdquo: '”', laquo: '«', raquo: '»', deg: '°', times: '×', divide: '÷',
  middot: '·', bull: '•', euro: '€', pound: '£', yen: '¥', cent: '¢', sect: '§', para: '¶', shy: '\xad', iexcl: '¡', iquest: '¿',
};
/** Entities Python's html.unescape also accepts without ';'. */
const LEGACY = new Set(['amp', 'lt', 'gt', 'quot', 'nbsp', 'copy', 'reg', 'deg', 'times', 'divide', 'middot', 'pound', 'yen', 'cent', 'sect', 'para', 'shy', 'laquo', 'raquo', 'iexcl', 'iquest']);

/** html.unescape for numeric references and the common named entities. */
function unescapeHtml(text: string): string {
  if (!text.includes('&')) return text;
  return text.replace(/&(#[0-9]+;?|#[xX][0-9a-fA-F]+;?|[A-Za-z][A-Za-z0-9]*;?)/g, (m, body: string) => {
    if (body.startsWith('#')) {
      const hex = body[1] === 'x' || body[1] === 'X';
      const cp = parseInt(body.slice(hex ? 2 : 1).replace(';', ''), hex ? 16 : 10);
      if (cp >= 0x80 && cp <= 0x9f) return CP1252_HIGH[cp - 0x80]!;
      if (cp === 0 || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff)) return '\ufffd';
      return String.fromCodePoint(cp);
    }
    const name = body.replace(/;$/, '');
    const v = ENTITIES[name];
    if (v === undefined || (!body.endsWith(';') && !LEGACY.has(name))) return m;
    return v;
  });
}

// ---------------------------------------------------------------- reading the vocabulary files

async function gunzipText(bytes: Uint8Array): Promise<string> {
  const stream = new Blob([bytes as Uint8Array<ArrayBuffer>]).stream().pipeThrough(new DecompressionStream('gzip'));
  return await new Response(stream).text();
}

async function openAIText(bytes: Uint8Array, path: string): Promise<string> {
  const gz = bytes[0] === 0x1f && bytes[1] === 0x8b;
  if (path.endsWith('.gz') && !gz) throw new Error(`CLIPTokenizer: ${path} is not gzip data`);
  return gz ? gunzipText(bytes) : new TextDecoder().decode(bytes);
}

/** A file of this package: from disk where there is a file system, else fetched (browsers). */
async function readShipped(url: URL): Promise<Uint8Array> {
  const proc = (globalThis as { process?: { getBuiltinModule?: (m: string) => unknown } }).process;
  if (url.protocol === 'file:' && proc?.getBuiltinModule) return nodeFs('reading the shipped vocabulary').readFileSync(decodeURIComponent(url.pathname));
  const res = await fetch(url);
  if (!res.ok) throw new Error(`CLIPTokenizer: cannot fetch the shipped vocabulary ${url.href} (HTTP ${res.status})`);
  return new Uint8Array(await res.arrayBuffer());
}
