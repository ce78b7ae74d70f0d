// Evaluation of a prediction folder against a truth folder, both in VOC layout (SegmentationClass, optionally
// SegmentationObject) and/or with COCO instances (annotations/*.json): mIoU, boundary F, mask AP.
import { nodeFs } from '../io/fs.ts';
import { type CocoFile, parseCoco, rleToMask } from '../data/coco.ts';
import { readVocLabels, vocFolders, vocIds } from '../data/voc.ts';
import { vocClassNames } from '../world/classes.ts';
import { boundaryF } from './boundary.ts';
import { type MaskInstance, maskAp } from './maskAp.ts';
import { ConfusionMatrix } from './miou.ts';

export interface EvalResult {
  images: number;
  iou: number[];
  miou: number;
  pixelAccuracy: number;
  /** mean boundary F over (image, class) pairs present in truth or prediction */
  boundaryF: number;
  /** per class: mean boundary F */
  boundaryFPerClass: number[];
  /** null when neither folder has instances */
  ap: { ap: number; ap50: number; ap75: number; perClass: Map<number, number> } | null;
}

interface Labels {
  width: number;
  height: number;
  semantic: Uint8Array;
  instances: MaskInstance[] | null;
}

/** The file name without folder and extension: the image id in VOC layout. */
const stem = (fileName: string) => fileName.replace(/^.*\//, '').replace(/\.[^.]*$/, '');

/** A folder's labels per image id: from VOC files, else rasterised from its COCO instances. */
class Folder {
  readonly coco: CocoFile | null;
  private readonly cocoByImage = new Map<string, CocoFile['annotations']>();
  private readonly imageById = new Map<string, CocoFile['images'][number]>();
  readonly hasVoc: boolean;
  constructor(readonly dir: string, readonly arg: string, idOf?: Map<number, string>) {
    const fs = nodeFs(`reading ${dir}`);
    if (!fs.existsSync(dir) || !fs.statSync(dir).isDirectory()) throw new Error(`${arg}: ${dir} is not a directory`);
    this.hasVoc = fs.existsSync(`${dir}/${vocFolders.semantic}`);
    const ann = `${dir}/annotations`;
    const files = fs.existsSync(ann) ? fs.readdirSync(ann).filter((f) => f.endsWith('.json')).sort() : [];
    if (files.length > 1) throw new Error(`${arg}: ${ann} holds ${files.length} JSON files (${files.join(', ')}); expected one`);
    this.coco = files.length ? parseCoco(new TextDecoder().decode(fs.readFileSync(`${ann}/${files[0]}`)), `${ann}/${files[0]}`) : null;
    if (!this.hasVoc && !this.coco) throw new Error(`${arg}: ${dir} has neither ${vocFolders.semantic}/ nor annotations/*.json`);
    if (this.coco) {
      const names = this.idMap();
      for (const im of this.coco.images) this.imageById.set(stem(im.file_name), im);
      for (const a of this.coco.annotations) {
        const id = names.get(a.image_id) ?? idOf?.get(a.image_id) ?? String(a.image_id);
        this.cocoByImage.set(id, [...(this.cocoByImage.get(id) ?? []), a]);
      }
    }
  }

  /** image id → file stem, from the COCO images list */
  idMap(): Map<number, string> {
    return new Map((this.coco?.images ?? []).map((im) => [im.id, stem(im.file_name)]));
  }

  ids(): string[] {
    if (this.hasVoc) return vocIds(this.dir);
    return [...new Set([...this.idMap().values(), ...this.cocoByImage.keys()])].sort();
  }

  labels(id: string, size?: [number, number]): Labels {
    let fromCoco: MaskInstance[] | null = null;
    let width = size?.[0] ?? 0, height = size?.[1] ?? 0;
    if (this.coco) {
      fromCoco = (this.cocoByImage.get(id) ?? []).map((a) => {
        [height, width] = a.segmentation.size;
        return { imageId: id, categoryId: a.category_id, score: a.score, mask: rleToMask(a.segmentation, `${this.arg}: annotation ${a.id}`) };
      });
      const im = this.imageById.get(id);
      if (im) [width, height] = [im.width, im.height];
    }
    if (this.hasVoc) {
      const voc = readVocLabels(this.dir, id);
      const instances = fromCoco ?? (voc.objects ? instancesFromMaps(id, voc.semantic, voc.objects) : null);
      return { width: voc.width, height: voc.height, semantic: voc.semantic, instances };
    }
    if (!width || !height) throw new Error(`${this.arg}: image '${id}' has no size (not in the images list, no annotation)`);
    // semantic map from the instances: the highest-scoring instance covering a pixel gives its class
    const semantic = new Uint8Array(width * height);
    const ordered = [...fromCoco!].sort((a, b) => (a.score ?? 1) - (b.score ?? 1));
    for (const inst of ordered) for (let p = 0; p < semantic.length; p++) if (inst.mask[p]) semantic[p] = inst.categoryId;
    return { width, height, semantic, instances: fromCoco };
  }
}

/** Instances of an instance map (ids 1..254) with the majority class of their pixels in the class map. */
export function instancesFromMaps(imageId: string, semantic: Uint8Array, objects: Uint8Array): MaskInstance[] {
  const votes = new Map<number, Map<number, number>>();
  for (let p = 0; p < objects.length; p++) {
    const o = objects[p]!;
    if (o === 0 || o === 255) continue;
    const v = votes.get(o) ?? new Map<number, number>();
    v.set(semantic[p]!, (v.get(semantic[p]!) ?? 0) + 1);
    votes.set(o, v);
  }
  return [...votes].sort((a, b) => a[0] - b[0]).map(([o, v]) => ({
    imageId, categoryId: [...v].sort((a, b) => b[1] - a[1])[0]![0], mask: objects.map((x) => (x === o ? 1 : 0)),
  }));
}

/** Evaluates predictions in `predDir` against the truth in `gtDir` over the truth's images. */
export function evaluateFolders(predDir: string, gtDir: string, numClasses = vocClassNames.length): EvalResult {
  const gt = new Folder(gtDir, '--gt');
  const pred = new Folder(predDir, '--pred', gt.idMap());
  const ids = gt.ids();
  if (!ids.length) throw new Error(`--gt: ${gtDir} lists no images`);
  const predIds = new Set(pred.ids());
  const missing = ids.filter((id) => !predIds.has(id));
  if (missing.length) throw new Error(`--pred: ${predDir} lacks ${missing.length} of the ${ids.length} truth images (first: '${missing[0]}')`);
  const cm = new ConfusionMatrix(numClasses);
  const bf: number[][] = Array.from({ length: numClasses }, () => []);
  const predInst: MaskInstance[] = [], gtInst: MaskInstance[] = [];
  let instances = true;
  for (const id of ids) {
    const t = gt.labels(id);
    const p = pred.labels(id, [t.width, t.height]);
    if (p.width !== t.width || p.height !== t.height) throw new Error(`--pred: image '${id}' is ${p.width}×${p.height} in ${predDir}, ${t.width}×${t.height} in ${gtDir}`);
    cm.add(p.semantic, t.semantic, id);
    // boundary F per class present; ignore pixels count as outside the class
    const classes = new Set([...t.semantic, ...p.semantic].filter((c) => c !== 0 && c < numClasses));
    for (const c of classes) {
      const valid = (m: Uint8Array) => m.map((v) => (v === c ? 1 : 0));
      bf[c]!.push(boundaryF(valid(p.semantic), valid(t.semantic), t.width, t.height).f);
    }
    if (t.instances && p.instances) {
      gtInst.push(...t.instances);
      predInst.push(...p.instances);
    } else instances = false;
  }
  const mean = (xs: number[]) => (xs.length ? xs.reduce((a, b) => a + b, 0) / xs.length : NaN);
  const { iou, miou, pixelAccuracy } = cm.result();
  return {
    images: ids.length, iou, miou, pixelAccuracy,
    boundaryF: mean(bf.flat()), boundaryFPerClass: bf.map(mean),
    ap: instances ? maskAp(predInst, gtInst) : null,
  };
}

/** The result as a text table: one row per class present, then the means. */
export function formatEvalTable(r: EvalResult): string {
  const pct = (v: number | undefined) => (v === undefined || Number.isNaN(v) ? '     -' : (100 * v).toFixed(1).padStart(6));
  const rows = [`${'class'.padEnd(12)}    IoU  bound.F   mask AP`];
  r.iou.forEach((v, c) => {
    if (Number.isNaN(v) && Number.isNaN(r.boundaryFPerClass[c]!)) return;
    rows.push(`${(vocClassNames[c] ?? String(c)).padEnd(12)} ${pct(v)}   ${pct(r.boundaryFPerClass[c])}    ${pct(r.ap?.perClass.get(c))}`);
  });
  rows.push('', `images ${r.images}`, `mIoU ${pct(r.miou)}   pixel accuracy ${pct(r.pixelAccuracy)}   boundary F ${pct(r.boundaryF)}`);
  rows.push(r.ap ? `mask AP ${pct(r.ap.ap)}   AP50 ${pct(r.ap.ap50)}   AP75 ${pct(r.ap.ap75)}` : 'mask AP: no instances (SegmentationObject or annotations/*.json) in both folders');
  return rows.join('\n');
}
