// bench/RESULTS.md is written by several benches: the peers run writes the head of the file, the profile
// and the training-step benches each own a section at its end. Each writer replaces only its own part.

import { execSync } from 'node:child_process';
import { existsSync, readFileSync, writeFileSync } from 'node:fs';

/** The headings of the sections that benches other than the peers run own, in the order they appear. */
const ownedSections = ['## Profile', '## Training step'] as const;
export type OwnedSection = (typeof ownedSections)[number];

/** The file split into the peers run's head and each owned section's text (heading included). */
function split(path: string): { head: string; sections: Map<string, string> } {
  const text = existsSync(path) ? readFileSync(path, 'utf8') : '';
  const sections = new Map<string, string>();
  let head = '';
  let current: string | undefined;
  for (const line of text.split('\n')) {
    const owned = ownedSections.find((h) => line.trimEnd() === h);
    if (owned) current = owned;
    if (current) sections.set(current, `${sections.get(current) ?? ''}${line}\n`);
    else head += `${line}\n`;
  }
  return { head: head.trimEnd(), sections };
}

function write(path: string, head: string, sections: Map<string, string>): void {
  const parts = [head, ...ownedSections.flatMap((h) => (sections.has(h) ? [sections.get(h)!.trimEnd()] : []))].filter((p) => p);
  writeFileSync(path, `${parts.join('\n\n')}\n`);
}

/** Replaces (or adds) section `heading` of `path`; `body` is its markdown after the heading line. */
export function writeSection(path: string, heading: OwnedSection, body: string): void {
  const { head, sections } = split(path);
  sections.set(heading, `${heading}\n\n${body.trim()}\n`);
  write(path, head, sections);
}

/** Replaces the peers run's part of `path`, keeping the sections other benches wrote. */
export function writeHead(path: string, markdown: string): void {
  write(path, markdown.trimEnd(), split(path).sections);
}

/** The checked-out commit a run measured, flagged when the work tree differs from it; undefined outside git. */
export function gitCommit(): string | undefined {
  try {
    const dirty = execSync('git status --porcelain --untracked-files=no', { encoding: 'utf8' }).trim() ? ' + uncommitted changes' : '';
    return execSync('git rev-parse --short HEAD', { encoding: 'utf8' }).trim() + dirty;
  } catch {
    return undefined;
  }
}
