// A dataset as one static page: `index.html` beside the data (opens from disk: no server, no build step), a card
// per image with its picture, class and instance overlays, prompt, classes and provenance, the image before and after
// each stage that changed it (where `generate` recorded them), and, when a curate run is given, its last round's
// verdict and per-class IoUs. Filters (class, kept/dropped, IoU range) run in the page;
// they also read the URL's #hash (class=…&status=…&min=…&max=…) so a link can carry a view.

import { nodeFs, writeFileAtomic } from '../io/fs.ts';
import { decodeIndexedPng, decodePng, encodePng } from '../io/png.ts';
import { parseCoco } from '../data/coco.ts';
import { readWorldPrompts } from '../data/dataset.ts';
import { vocFolders, vocPalette, vocIds } from '../data/voc.ts';
import { vocClassNames } from '../world/classes.ts';
import { readVocSample } from '../models/mask2former/data.ts';
import { type SampleScore } from './curate.ts';

export interface GalleryItem {
  id: string;
  prompt?: string;
  /** class names present in the class map */
  classes: string[];
  instances: number;
  /** objects pasted by the composition stage (generate's provenance) */
  pasted?: number;
  kept?: boolean;
  /** the best class IoU against the curate model (what Free-Mask's 'any' rule reads), and every class's */
  iou?: number;
  ious?: Record<string, number>;
  /** the image through the stages that changed it, in order (pictures beside the page, with what each shows) */
  stages?: { src: string; caption: string }[];
}

/** The picture with its labels blended over it at half strength (uncertain pixels white); labels 0 are left clear. */
function overlay(image: Uint8Array, labels: Uint8Array, width: number, height: number): Uint8Array {
  const out = new Uint8Array(3 * width * height);
  for (let p = 0; p < width * height; p++) {
    const l = labels[p]!;
    for (let c = 0; c < 3; c++) {
      const colour = l === 255 ? 255 : vocPalette[3 * l + c]!;
      out[3 * p + c] = l === 0 ? image[3 * p + c]! : Math.round((image[3 * p + c]! + colour) / 2);
    }
  }
  return out;
}

/** The last round of a curate folder that scored the samples: its scores by sample id. */
function curateScores(dir: string): { round: number; scores: Map<string, SampleScore> } {
  const fs = nodeFs(`reading ${dir}`);
  const rounds = fs.existsSync(dir) ? fs.readdirSync(dir).map((n) => /^round-(\d+)$/.exec(n)?.[1]).filter((r): r is string => r !== undefined).map(Number).sort((a, b) => b - a) : [];
  const round = rounds.find((r) => fs.existsSync(`${dir}/round-${r}/scores.json`));
  if (round === undefined) throw new Error(`--curate: ${dir} has no round-N/scores.json (run freemask curate with --rounds 1 or more)`);
  const scores = JSON.parse(new TextDecoder().decode(fs.readFileSync(`${dir}/round-${round}/scores.json`))) as SampleScore[];
  return { round, scores: new Map(scores.map((s) => [s.id, s])) };
}

/** Writes `dir`/index.html and its overlays (`dir`/gallery/); returns the page's path and its item count. */
export async function writeGallery(dir: string, { curate }: { curate?: string } = {}): Promise<{ path: string; items: number }> {
  const fs = nodeFs(`writing a gallery of ${dir}`);
  const ids = vocIds(dir);
  if (ids.length === 0) throw new Error(`${dir}: no images listed (ImageSets/Segmentation/*.txt)`);
  const cocoFile = fs.existsSync(`${dir}/annotations`) ? fs.readdirSync(`${dir}/annotations`).find((f) => /^instances_.*\.json$/.test(f)) : undefined;
  const coco = cocoFile ? parseCoco(new TextDecoder().decode(fs.readFileSync(`${dir}/annotations/${cocoFile}`)), `${dir}/annotations/${cocoFile}`) : undefined;
  const names = new Map<number, string>(coco ? coco.categories.map((c) => [c.id, c.name]) : vocClassNames.map((n, i) => [i, n]));
  const prompts = fs.existsSync(`${dir}/prompts.jsonl`) ? readWorldPrompts(dir) : new Map<string, string>();
  const manifest = fs.existsSync(`${dir}/manifest.json`) ? JSON.parse(new TextDecoder().decode(fs.readFileSync(`${dir}/manifest.json`))) as { images?: { id: string; provenance?: { pasted?: { box?: unknown }[]; before?: string[] } }[] } : {};
  const pastedOf = new Map((manifest.images ?? []).map((i) => [i.id, (i.provenance?.pasted ?? []).filter((p) => p.box).length]));
  const beforeOf = new Map((manifest.images ?? []).map((i) => [i.id, i.provenance?.before ?? []]));
  const verdicts = curate ? curateScores(curate) : undefined;
  fs.mkdirSync(`${dir}/gallery`, { recursive: true });
  const items: GalleryItem[] = [];
  for (const id of ids) {
    const s = await readVocSample(dir, id);
    writeFileAtomic(`${dir}/gallery/${id}-class.png`, await encodePng({ width: s.width, height: s.height, channels: 3, data: overlay(s.image, s.semantic, s.width, s.height) }));
    if (s.objects) writeFileAtomic(`${dir}/gallery/${id}-instance.png`, await encodePng({ width: s.width, height: s.height, channels: 3, data: overlay(s.image, s.objects, s.width, s.height) }));
    const present = [...new Set(s.semantic)].filter((v) => v !== 0 && v !== 255).sort((a, b) => a - b);
    const item: GalleryItem = {
      id, classes: present.map((c) => names.get(c) ?? `class ${c}`), instances: s.objects ? new Set(s.objects).size - (s.objects.includes(0) ? 1 : 0) - (s.objects.includes(255) ? 1 : 0) : 0,
      ...(prompts.has(id) && { prompt: prompts.get(id) }), ...(pastedOf.has(id) && { pasted: pastedOf.get(id) }),
    };
    const before = beforeOf.get(id) ?? [];
    if (before.length) item.stages = await stageStrip(dir, id, s.image, before);
    const v = verdicts?.scores.get(id);
    if (verdicts && !v) throw new Error(`--curate: ${curate}/round-${verdicts.round}/scores.json has no sample '${id}' (a curate run of another dataset?)`);
    if (v) {
      item.kept = v.kept;
      item.ious = Object.fromEntries(Object.entries(v.ious).map(([c, x]) => [names.get(Number(c)) ?? `class ${c}`, Number(x.toFixed(3))]));
      item.iou = Object.values(v.ious).length ? Number(Math.max(...Object.values(v.ious)).toFixed(3)) : 0;
    }
    items.push(item);
  }
  const path = `${dir}/index.html`;
  const title = `${dir.replace(/\/+$/, '').replace(/^.*\//, '')}: ${items.length} images`;
  writeFileAtomic(path, new TextEncoder().encode(galleryHtml(title, items, verdicts ? `curate round ${verdicts.round}` : undefined)));
  return { path, items: items.length };
}

/**
 * The pictures of an image through generate's stages (stages/<id>/, see generate.ts): the stage-1 picture with its
 * attention mask and refined mask over it, the composite before harmonization, the final picture.
 */
async function stageStrip(dir: string, id: string, final: Uint8Array, before: readonly string[]): Promise<{ src: string; caption: string }[]> {
  const fs = nodeFs(`reading ${dir}/stages/${id}`);
  const file = (name: string) => `${dir}/stages/${id}/${name}.png`;
  const picture = before.includes('picture') ? (await decodePng(fs.readFileSync(file('picture')), file('picture'))).data as Uint8Array : final;
  const strip: { src: string; caption: string }[] = [];
  if (before.includes('picture')) strip.push({ src: `stages/${id}/picture.png`, caption: 'stage 1' });
  for (const [name, caption] of [['attention', 'attention mask'], ['refined', 'refined mask']] as const) {
    if (!before.includes(name)) continue;
    const m = decodeIndexedPng(fs.readFileSync(file(name)), file(name));
    writeFileAtomic(`${dir}/gallery/${id}-${name}.png`, await encodePng({ width: m.width, height: m.height, channels: 3, data: overlay(picture, m.indices, m.width, m.height) }));
    strip.push({ src: `gallery/${id}-${name}.png`, caption });
  }
  if (before.includes('composite')) strip.push({ src: `stages/${id}/composite.png`, caption: 'pasted' }, { src: `${vocFolders.images}/${id}.png`, caption: 'harmonized' });
  else if (before.includes('picture')) strip.push({ src: `${vocFolders.images}/${id}.png`, caption: 'pasted' });
  return strip;
}

const escapeHtml = (s: string) => s.replace(/[&<>"]/g, (c) => ({ '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;' })[c]!);

function galleryHtml(title: string, items: readonly GalleryItem[], curated?: string): string {
  // JSON inside a script element: '<' escaped so no string can close it
  const data = JSON.stringify(items).replace(/</g, '\\u003c');
  return `<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>${escapeHtml(title)}</title>
<script>window.galleryErrors = 0; addEventListener('error', () => { window.galleryErrors++; document.body && (document.body.dataset.errors = window.galleryErrors); });</script>
<style>
body { font: 13px system-ui, sans-serif; margin: 12px; background: #fafafa; color: #222; }
header { display: flex; gap: 14px; align-items: center; flex-wrap: wrap; margin-bottom: 10px; }
#grid { display: grid; grid-template-columns: repeat(auto-fill, minmax(300px, 1fr)); gap: 10px; }
.card { background: #fff; border: 1px solid #ddd; border-radius: 6px; padding: 6px; }
.card.dropped { border-color: #d33; background: #fff5f5; }
.card img { width: 92px; height: 92px; image-rendering: pixelated; margin-right: 2px; }
.meta { margin-top: 4px; line-height: 1.4; }
.badge { display: inline-block; padding: 0 6px; border-radius: 8px; font-size: 11px; color: #fff; background: #393; }
.badge.dropped { background: #d33; }
.muted { color: #777; }
.stages { display: flex; gap: 2px; margin-top: 4px; }
.stages figure { margin: 0; text-align: center; font-size: 10px; color: #555; }
.stages img { width: 56px; height: 56px; margin: 0; }
</style></head>
<body data-shown="0" data-errors="0">
<header>
  <strong>${escapeHtml(title)}</strong>
  <label>class <select id="class"><option value="">all</option></select></label>
  <label>status <select id="status" ${curated ? '' : 'disabled'}><option value="">all</option><option value="kept">kept</option><option value="dropped">dropped</option></select></label>
  <label>IoU from <input id="min" type="number" min="0" max="1" step="0.05" value="0" style="width:4em"> to <input id="max" type="number" min="0" max="1" step="0.05" value="1" style="width:4em"></label>
  <span id="count"></span>
  <span class="muted">${curated ? `verdicts of ${escapeHtml(curated)}` : 'no curate run given: status and IoU filters idle'}; picture | classes | instances</span>
</header>
<div id="grid"></div>
<script type="application/json" id="data">${data}</script>
<script>
const items = JSON.parse(document.getElementById('data').textContent);
const grid = document.getElementById('grid');
const select = document.getElementById('class');
for (const c of [...new Set(items.flatMap((i) => i.classes))].sort()) select.add(new Option(c, c));
const hash = new URLSearchParams(location.hash.slice(1));
for (const k of ['class', 'status', 'min', 'max']) if (hash.has(k)) document.getElementById(k).value = hash.get(k);
function text(tag, s, cls) { const e = document.createElement(tag); e.textContent = s; if (cls) e.className = cls; return e; }
function card(i) {
  const div = document.createElement('div');
  div.className = 'card' + (i.kept === false ? ' dropped' : '');
  for (const src of ['JPEGImages/' + i.id + '.png', 'gallery/' + i.id + '-class.png', 'gallery/' + i.id + '-instance.png']) {
    const img = document.createElement('img'); img.src = src; img.alt = src; img.loading = 'lazy'; div.append(img);
  }
  const meta = document.createElement('div'); meta.className = 'meta';
  meta.append(text('b', i.id), ' ');
  if (i.kept !== undefined) meta.append(text('span', i.kept ? 'kept' : 'dropped', 'badge' + (i.kept ? '' : ' dropped')));
  if (i.prompt) meta.append(document.createElement('br'), text('span', i.prompt, 'muted'));
  meta.append(document.createElement('br'));
  meta.append(text('span', (i.classes.join(', ') || 'no object') + ' · ' + i.instances + ' instance' + (i.instances === 1 ? '' : 's') + (i.pasted ? ' · ' + i.pasted + ' pasted' : '')));
  if (i.ious) meta.append(document.createElement('br'), text('span', 'IoU ' + Object.entries(i.ious).map(([c, v]) => c + ' ' + v.toFixed(2)).join(', ')));
  div.append(meta);
  if (i.stages) {
    const strip = document.createElement('div'); strip.className = 'stages';
    for (const s of i.stages) {
      const fig = document.createElement('figure'); const img = document.createElement('img');
      img.src = s.src; img.alt = s.caption; img.loading = 'lazy'; fig.append(img, text('figcaption', s.caption)); strip.append(fig);
    }
    div.append(strip);
  }
  return div;
}
function render() {
  const cls = select.value, status = document.getElementById('status').value;
  const lo = Number(document.getElementById('min').value), hi = Number(document.getElementById('max').value);
  const shown = items.filter((i) => (!cls || i.classes.includes(cls)) && (!status || (status === 'kept') === i.kept) && (i.iou === undefined || (i.iou >= lo && i.iou <= hi)));
  grid.replaceChildren(...shown.map(card));
  document.getElementById('count').textContent = shown.length + ' of ' + items.length + ' shown';
  document.body.dataset.shown = shown.length;
}
for (const id of ['class', 'status', 'min', 'max']) document.getElementById(id).addEventListener('input', render);
render();
</script>
</body></html>
`;
}
